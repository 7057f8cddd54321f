"""k-fold training on the tiny synthetic set: outputs, manifests, resume, precision, strategies, scripts."""

import json

import numpy as np
import pandas as pd
import pytest

from conftest import TINY_DIM, tiny_args
from photoid.core import io as pio
from photoid.runs.config import resolve_config
from photoid.core.labels import classes_sha256
from photoid.training.kfold import run_config


def test_each_fold_keeps_its_best_checkpoint_history_and_curve(trained_run):
    for fold in (0, 1):
        fold_dir = trained_run / f"fold_{fold}"
        assert (fold_dir / "best.weights.h5").stat().st_size > 0
        best, done = pio.read_json(fold_dir / "best.json"), pio.read_json(fold_dir / "done.json")
        assert best["monitor"] == "val_acc" and done["epoch"] == best["epoch"] == 1
        history = pd.read_csv(fold_dir / "history.csv")
        assert {"loss", "acc", "val_loss", "val_acc", "lr"} <= set(history.columns) and len(history) == 1
        assert (fold_dir / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((trained_run / "config.json").read_text())["dim"] == TINY_DIM


def test_predictions_are_aligned_with_folds_and_test_and_carry_manifests(trained_run, turtle_records, turtle_dir):
    folds = pd.read_csv(turtle_records / "folds.csv", dtype={"image_id": str})
    test_ids = pd.read_csv(turtle_dir / "test.csv", dtype=str)["image_id"].tolist()
    classes = (trained_run / "classes.txt").read_text().split()
    assert classes == sorted(folds["turtle_id"].unique())
    for fold in (0, 1):
        for tta in (0, 1):
            for split, ids in [("val", folds.loc[folds.fold == fold, "image_id"].tolist()), ("test", test_ids)]:
                path = trained_run / "preds" / f"y_pred_{split}_fold_{fold}_tta_{tta}.npy"
                probs = np.load(path, allow_pickle=False)
                manifest = json.loads(path.with_suffix(".json").read_text())
                assert probs.shape == (len(ids), len(classes)) and probs.dtype == np.float32
                np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
                assert manifest["row_ids"] == ids
                assert (manifest["fold"], manifest["tta"], manifest["split"]) == (fold, tta, split)
                assert manifest["classes_sha256"] == classes_sha256(classes) and manifest["recipe"] == "cpu-demo"


def test_cv_scores_and_the_runs_own_submission(trained_run, turtle_dir):
    scores = json.loads((trained_run / "cv_scores.json").read_text())
    assert scores["folds_scored"] == [0, 1]
    assert scores["all"]["n"] == sum(s["n"] for s in scores["folds"].values())
    for s in scores["folds"].values():
        assert 0 <= s["acc"] <= s["acc5"] <= 1 and s["acc"] <= s["map5"] <= s["acc5"]
    submission = pd.read_csv(trained_run / "submission.csv", dtype=str)
    sample = pd.read_csv(turtle_dir / "sample_submission.csv", dtype=str)
    assert list(submission.columns) == list(sample.columns)
    assert submission["image_id"].tolist() == sample["image_id"].tolist()
    originals = set((trained_run / "original_ids.txt").read_text().split()) | {"new_turtle"}
    labels = submission.iloc[:, 1:].to_numpy()
    assert set(labels.ravel()) <= originals
    assert all(len(set(row)) == 5 for row in labels)  # new_turtle at most once per row


def test_a_finished_fold_is_not_trained_again(trained_run, turtle_dir, tmp_path, capsys):
    import shutil

    run_dir = shutil.copytree(trained_run, tmp_path / "run")  # the session's run is shared: its copy is written
    before = (run_dir / "fold_0" / "done.json").stat().st_mtime_ns
    cfg = resolve_config(tiny_args(turtle_dir, run_dir, job="train", final_fold=1))
    assert run_config(cfg) == 0
    assert "fold 0: already trained" in capsys.readouterr().out
    assert (run_dir / "fold_0" / "done.json").stat().st_mtime_ns == before


def test_mixed_precision_keeps_a_float32_head():
    import tf_keras

    from photoid.models.factory import build_models

    tf_keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        models = build_models(backbone="simple-cnn", dim=32, n_classes=7)
        assert models.predict.get_layer("dense").compute_dtype == "float32"
        assert models.predict.get_layer("simple-cnn").layers[1].compute_dtype == "float16"
        out = models.predict(np.zeros((2, 32, 32, 3), np.float32))
        assert out.dtype == "float32"
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")


def test_each_fold_starts_from_its_own_seeded_head():
    from photoid.runs.config import Config
    from photoid.models.factory import build_models
    from photoid.training.kfold import model_session

    def first_head(fold: int) -> np.ndarray:
        with model_session(Config(seed=33), fold):
            return build_models(backbone="simple-cnn", dim=32, n_classes=5).predict.get_layer("dense").get_weights()[0]

    fold0, fold1, fold0_again = first_head(0), first_head(1), first_head(0)
    assert np.array_equal(fold0, fold0_again) and not np.array_equal(fold0, fold1)


@pytest.mark.slow  # builds an 86M-parameter BEiT (about 10 s on 2 cores)
def test_beit_head_starts_as_kecams_and_other_heads_as_a_keras_dense():
    from photoid.models.backbones import BACKBONES
    from photoid.models.factory import build_models

    assert BACKBONES["beit-large-patch16"].head_init == BACKBONES["beit-base-patch16"].head_init == "kecam-beit"
    kernel, bias = build_models(backbone="beit-base-patch16", dim=32, n_classes=2265).predict.get_layer(
        "dense").get_weights()
    # kecam 1.2.9: TruncatedNormal(0.02) x 0.001 on both; a normal cut at 2 sigma has 0.88 sigma of spread.
    assert kernel.shape == (768, 2265) and 1.70e-5 < kernel.std() < 1.82e-5 and np.abs(kernel).max() <= 4e-5
    assert 1.55e-5 < bias.std() < 1.95e-5 and np.abs(bias).max() <= 4e-5 and abs(bias.mean()) < 2e-6
    kernel, bias = build_models(backbone="simple-cnn", dim=32, n_classes=2265).predict.get_layer(
        "dense").get_weights()
    glorot_std = np.sqrt(2 / (256 + 2265))  # glorot_uniform: limit sqrt(6 / (fan_in + fan_out))
    assert abs(kernel.std() / glorot_std - 1) < 0.01 and not bias.any()


@pytest.mark.parametrize("suffix", [".h5", ".hdf5", ".weights.h5", ".keras"])
def test_every_weights_file_suffix_loads_for_training_and_prediction(tmp_path, suffix):
    from photoid.runs.config import Config
    from photoid.core.errors import PhotoidError
    from photoid.models.factory import build_models, load_weights_file
    from photoid.inference.fold_models import build_predict_model
    from photoid.training.fold import initial_models

    saved = build_models(backbone="simple-cnn", dim=32, n_classes=5).predict
    path = tmp_path / f"trained{suffix}"
    saved.save(path) if suffix == ".keras" else saved.save_weights(path)
    cfg = Config(backbone="simple-cnn", dim=32, dim_pre=32, weights=str(path))
    def same_as_saved(model) -> bool:
        return all(np.array_equal(a, b) for a, b in zip(model.get_weights(), saved.get_weights(), strict=True))

    assert same_as_saved(initial_models(cfg, 5).predict)  # training starts from the file
    predicting = build_predict_model(cfg, 5)
    assert not same_as_saved(predicting)
    load_weights_file(predicting, path, 5)  # as prediction with --weights does (inference.build_fold_model)
    assert same_as_saved(predicting)
    with pytest.raises(PhotoidError, match="does not fit"):
        load_weights_file(build_models(backbone="simple-cnn", dim=32, n_classes=6).predict, path, 6)


def test_later_calls_keep_the_training_config_log_themselves_and_must_prepare_images_alike(trained_run, turtle_dir,
                                                                                            tmp_path):
    import shutil

    from photoid.core.errors import PhotoidError
    from photoid.runs.loaded import load_run

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    config, preprocessing = (run_dir / "config.json").read_bytes(), pio.read_json(run_dir / "preprocessing.json")
    assert preprocessing == {"dim": TINY_DIM, "dim_pre": TINY_DIM, "image_inverted": False,
                             "records_dim_pre": TINY_DIM, "layout": "exact"}
    assert pio.read_json(run_dir / "fold_0" / "config.json")["lr"] == pio.read_json(run_dir / "config.json")["lr"]
    lines = len((run_dir / "log.jsonl").read_text().splitlines())
    assert run_config(resolve_config(tiny_args(turtle_dir, run_dir, job="val", batch_size=4))) == 0
    assert (run_dir / "config.json").read_bytes() == config  # not rewritten by a later call
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert len(log) == lines + 1 and log[-1]["job"] == "val"
    assert log[-1]["differs_from_config_json"] == {"job": "val", "batch_size": 4, "run_dir": str(run_dir)}
    with pytest.raises(PhotoidError, match="otherwise than training did .*dim 32 in training, 24 now"):
        run_config(resolve_config(tiny_args(turtle_dir, run_dir, job="test", dim=24)))
    # identify and export read how training prepared photos from the run, even without its records.
    assert load_run(run_dir, records_dir=str(tmp_path / "no-records")).preprocessing.layout == "exact"


def test_test_prediction_fold_by_fold_equals_all_folds_at_once(trained_run, turtle_dir, tmp_path):
    import shutil

    from photoid.training.predictions import folds_at_once

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    assert run_config(resolve_config(tiny_args(turtle_dir, run_dir, job="test", predict_folds_at_once=1))) == 0
    for fold in (0, 1):
        for tta in (0, 1):
            name = f"preds/y_pred_test_fold_{fold}_tta_{tta}.npy"  # trained_run predicted both folds at once
            np.testing.assert_allclose(np.load(run_dir / name), np.load(trained_run / name), atol=1e-6)
    # The default group: weights of float32 parameters within a quarter of the memory.
    assert folds_at_once(480_000_000, 5, memory=16 * 2**30) == 2  # EfficientNet-L2 on a 16 GB GPU
    assert folds_at_once(304_000_000, 5, memory=16 * 2**30) == 3  # BEiT-L
    assert folds_at_once(1_000_000, 5, memory=16 * 2**30) == 5 and folds_at_once(10**10, 5, memory=2**30) == 1


def test_a_class_count_other_than_the_records_is_refused(turtle_dir, turtle_records, tmp_path):
    from photoid.core.errors import PhotoidError

    with pytest.raises(PhotoidError, match="--n_classes 7, but .*folds.csv has"):
        run_config(resolve_config(tiny_args(turtle_dir, tmp_path / "run", n_classes=7)))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # builds an EfficientNetV2
def test_named_weights_that_cannot_load_are_an_error_not_random_weights():
    from photoid.models.backbones import build_backbone
    from photoid.core.errors import PhotoidError

    with pytest.raises(PhotoidError, match="could not be loaded.*--weights FILE"):
        build_backbone("efficientnet-v2-b0", (32, 32, 3), "imagenet")
    with pytest.raises(PhotoidError, match="has no pretrained weights 'imagenet'"):
        build_backbone("simple-cnn", (32, 32, 3), "imagenet")


def test_a_weights_file_predicts_as_it_is_without_training(trained_run, turtle_dir, tmp_path):
    """`run.py --job test --weights FILE`: how the original's published fold weights are used."""
    weights = trained_run / "fold_0" / "best.weights.h5"
    cfg = resolve_config(tiny_args(turtle_dir, tmp_path / "given", job="test", final_fold=1, tta_number=0, weights=weights))
    assert run_config(cfg) == 0
    ours = np.load(tmp_path / "given" / "preds" / "y_pred_test_fold_0_tta_0.npy")
    np.testing.assert_allclose(ours, np.load(trained_run / "preds" / "y_pred_test_fold_0_tta_0.npy"), atol=1e-6)
    assert not (tmp_path / "given" / "fold_0" / "best.weights.h5").exists()


def test_test_set_predicted_once_for_all_folds_equals_fold_by_fold(trained_run, turtle_records):
    """The run decodes the test records once per TTA for every fold (`FoldStack`); each fold's file must hold what
    that fold's model alone predicts."""
    from photoid.inference.fold_models import build_fold_model, fold_weights
    from photoid.training.predictions import FoldStack, predict_files
    from photoid.records.reader import test_files
    from photoid.runs.folder import RunDir

    cfg = RunDir(trained_run).config()
    classes = (trained_run / "classes.txt").read_text().split()
    models = [build_fold_model(cfg, len(classes), fold_weights(trained_run, fold)).predict for fold in (0, 1)]
    files = test_files(str(turtle_records))
    stacked, ids = predict_files(FoldStack(models), files, cfg, tta=1)
    assert stacked.shape == (len(ids), 2, len(classes))
    for fold, model in enumerate(models):
        alone, _ = predict_files(model, files, cfg, tta=1)
        np.testing.assert_allclose(stacked[:, fold], alone, atol=1e-6)
        saved = np.load(trained_run / "preds" / f"y_pred_test_fold_{fold}_tta_1.npy")
        np.testing.assert_allclose(saved, alone, atol=1e-6)
    assert not np.allclose(stacked[:, 0], stacked[:, 1])  # two different folds, not one model twice
