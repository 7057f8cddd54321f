"""The folder owners and the inference module as units: RunDir, RecordsDir, load_fold_models and the Predictor."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from photoid.core.errors import PhotoidError
from photoid.core.io import write_json
from photoid.core.labels import classes_sha256
from photoid.records.folder import RecordsDir, shard_name
from photoid.runs.folder import RunDir

CLASSES = ["t_a", "t_b", "t_c"]


def test_light_owners_do_not_import_tensorflow():
    code = "import sys, photoid.runs.folder, photoid.records.folder; print('tensorflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def _fake_run(tmp_path, tta_number: int = 0) -> RunDir:
    """A run folder with one trained fold and its validation prediction (TTA 0), made by hand."""
    run = RunDir(tmp_path / "run")
    run.fold_dir(0).mkdir(parents=True)
    run.classes_file.write_text("\n".join(CLASSES) + "\n")
    run.original_ids_file.write_text("t_a\n")
    write_json(run.config_file, {"tta_number": tta_number})
    run.best_weights(0).write_bytes(b"weights of fold 0")
    write_json(run.fold_file(0, "done.json"), {})
    path = run.pred_path("val", 0, 0)
    path.parent.mkdir()
    np.save(path, np.full((2, 3), 1 / 3, np.float32))
    write_json(path.with_suffix(".json"), {
        "recipe": "r", "split": "val", "fold": 0, "tta": 0, "n_classes": 3, "classes_sha256": classes_sha256(CLASSES),
        "row_ids": ["x", "y"], "data_dir": "d", "weights_sha256": run.weights_sha256(0)})
    return run


def test_run_dir_reads_its_checked_predictions_and_refuses_stale_or_missing_ones(tmp_path):
    run = _fake_run(tmp_path)
    assert run.trained_folds() == [0] and run.classes() == CLASSES
    [(fold, tta, path, probs, ids)] = run.predictions("val", CLASSES)
    assert (fold, tta, ids, probs.shape) == (0, 0, ["x", "y"], (2, 3))

    run.best_weights(0).write_bytes(b"fold 0 retrained since")  # other weights than those that predicted
    with pytest.raises(PhotoidError, match=r"y_pred_val_fold_0_tta_0\.npy: stale"):
        list(run.predictions("val", CLASSES))

    write_json(run.config_file, {"tta_number": 1})  # TTA 1 is expected now, and was never predicted
    with pytest.raises(PhotoidError, match=r"missing 1 of the expected prediction files \(y_pred_val_fold_0_tta_1"):
        list(run.predictions("val", CLASSES))
    with pytest.raises(PhotoidError, match="classes_sha256"):
        list(run.predictions("val", ["t_a", "t_c", "t_b"], ttas=[0]))


def test_run_dir_refuses_to_reopen_a_run_with_other_inputs(tmp_path):
    from photoid.runs.config import Config

    run = RunDir(tmp_path / "run")
    cfg = Config(dim=32, dim_pre=32, run_dir=str(run.path))
    run.prepare(cfg, CLASSES, CLASSES, (32, "exact", False))
    assert json.loads(run.preprocessing_file.read_text())["layout"] == "exact"
    with pytest.raises(PhotoidError, match="otherwise than training did"):
        run.prepare(Config(dim=48, dim_pre=32, run_dir=str(run.path), job="val"), CLASSES, CLASSES,
                    (32, "exact", False))
    assert len(run.log_file.read_text().splitlines()) == 1


def test_records_dir_settings_shards_and_completeness(tmp_path):
    records = RecordsDir(tmp_path)
    assert records.settings() == {} and records.grouped()  # records older than the setting were grouped
    for name in (shard_name("fold.0.tfrecord", 0, 2), shard_name("fold.0.tfrecord", 1, 2),
                 shard_name("fold.1.tfrecord", 1, 2), shard_name("test.tfrecord", 0, 1)):
        (tmp_path / name).write_bytes(b"")
    write_json(tmp_path / "records.json", {"settings": {"dim_pre": 64, "layout": "compact", "grouped": False},
                                           "shards": {"test.tfrecord-00000-of-00001": {"rows": 7}}})
    records = RecordsDir(tmp_path)
    assert records.photo_settings() == (64, "compact", False) and not records.grouped()
    assert records.listed_rows("test.tfrecord-00000-of-00001") == 7
    assert records.listed_rows("fold.0.tfrecord-00000-of-00002") is None
    assert [p.rsplit("/", 1)[1] for p in records.fold_files([0])] == [
        "fold.0.tfrecord-00000-of-00002", "fold.0.tfrecord-00001-of-00002"]
    records.check_complete(records.fold_files([0]) + records.test_files())
    with pytest.raises(PhotoidError, match=r"fold\.1\.tfrecord has shards 2 of 2"):
        records.check_complete(records.fold_files([0, 1]))
    with pytest.raises(PhotoidError, match=r"no fold\.2\.tfrecord-\* files"):
        records.fold_files([2])
    write_json(tmp_path / "records.json", {"settings": {"layout": "compact"}})
    with pytest.raises(PhotoidError, match="lack dim_pre"):
        RecordsDir(tmp_path).photo_settings()
    # A remote folder keeps its URL (read through TensorFlow's file system when asked; tests/test_remote_files.py).
    assert RecordsDir("gs://bucket/records/").join("records.json") == "gs://bucket/records/records.json"


@pytest.fixture(scope="module")
def run_info(trained_run):
    from photoid.runs.loaded import load_run

    return load_run(trained_run)


def test_fold_models_carry_their_weights_and_refuse_untrained_folds(run_info, trained_run):
    from photoid.inference.fold_models import load_fold_models

    with pytest.raises(PhotoidError, match=r"fold\(s\) \[5\] not trained"):
        load_fold_models(run_info, [5])
    [model] = load_fold_models(run_info, [1])
    assert model.fold == 1 and model.weights_sha256 == RunDir(trained_run).weights_sha256(1)
    assert model.signature()["weights_sha256"] == model.weights_sha256


def test_predictor_over_photo_files_equals_over_records(run_info, turtle_dir, turtle_records):
    """The two sources of one fold model's outputs: photo files prepared as the records were, and the records."""
    from photoid.inference.fold_models import EMBEDDING_VIEWS, Member, Predictor, load_fold_models, predict_records, \
        read_record_ids
    from photoid.records.reader import test_files
    from photoid.core.retrieval import normalize_rows

    [model] = load_fold_models(run_info, [0])
    files = test_files(str(turtle_records))
    ids = read_record_ids(files)
    photos = [str(turtle_dir / "images" / f"{image_id}.JPG") for image_id in ids]
    cfg = run_info.config
    batches = list(Predictor([Member(model, run_info.preprocessing, (0, 1))]).over_photos(
        photos, batch_size=7, embeddings=True))
    assert [p for b in batches for p in b.readable] == photos and not any(b.errors for b in batches)
    probs = np.concatenate([b.probabilities for b in batches])
    embeddings = np.concatenate([b.embeddings for b in batches])

    def from_records(keras_model, tta):
        return predict_records(keras_model, files, dim=cfg.dim, dim_pre=cfg.dim_pre, batch_size=16, tta=tta)

    expected_probs = np.mean([from_records(model.predict, tta) for tta in (0, 1)], axis=0)
    np.testing.assert_allclose(probs, expected_probs, atol=1e-5, rtol=0)
    expected_embeddings = normalize_rows(sum(from_records(model.embed, view) for view in EMBEDDING_VIEWS))
    np.testing.assert_allclose(embeddings, expected_embeddings, atol=1e-5, rtol=0)
