"""`photoid export`: the fold ensemble as one model whose predictions equal the mean of the folds', loaded in a
fresh interpreter with plain tf-keras (softmax head) or with only the modules the export names (GeM/ArcFace,
EfficientNet)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from photoid.cli import main
from photoid.runs.config import Config
from photoid.inference.export import export_run
from photoid.models.factory import build_models
from photoid.inference.fold_models import load_fold_models
from photoid.runs.loaded import load_run

LOAD_AND_PREDICT = textwrap.dedent("""
    import sys
    import numpy as np
    for module in {modules!r}:
        __import__(module)
    import tensorflow as tf
    import tf_keras

    images = np.load({images!r})
    keras_model = tf_keras.models.load_model({keras!r})
    np.save({keras_out!r}, keras_model.predict(images, verbose=0))
    if {savedmodel!r}:
        serving = tf.saved_model.load({savedmodel!r}).signatures["serving_default"]
        (output,) = serving(tf.constant(images)).values()
        np.save({saved_out!r}, output.numpy())
    print("photoid modules loaded:", sorted(m for m in sys.modules if m.startswith("photoid")))
""")


def load_in_fresh_python(tmp_path: Path, images: np.ndarray, keras: Path, savedmodel: Path | None,
                         modules: list[str], env: dict) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Predict `images` with the exported files in a new interpreter that imports only `modules` first."""
    np.save(tmp_path / "images.npy", images)
    outs = tmp_path / "keras_out.npy", tmp_path / "saved_out.npy"
    script = LOAD_AND_PREDICT.format(modules=modules, images=str(tmp_path / "images.npy"), keras=str(keras),
                                     keras_out=str(outs[0]), savedmodel=str(savedmodel or ""), saved_out=str(outs[1]))
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return np.load(outs[0]), np.load(outs[1]) if savedmodel else None, done.stdout


def fold_mean(run, folds, images) -> np.ndarray:
    return np.mean([m.predict.predict(images, verbose=0) for m in load_fold_models(run, folds)], axis=0)


@pytest.mark.slow  # loads the export in a fresh Python
def test_softmax_run_exports_to_plain_keras_with_the_ensembles_predictions(trained_run, tmp_path):
    keras_file, savedmodel = tmp_path / "out" / "model.keras", tmp_path / "out" / "savedmodel"
    export_run(trained_run, keras_file, str(savedmodel))
    run = load_run(trained_run)
    classes = (trained_run / "classes.txt").read_text()
    assert (tmp_path / "out" / "model.classes.txt").read_text() == classes == (savedmodel / "classes.txt").read_text()
    description = json.loads((tmp_path / "out" / "model.export.json").read_text())
    assert description["import_before_loading"] == [] and description["folds"] == [0, 1]
    assert description["input"]["shape"] == [run.config.dim, run.config.dim, 3]

    # The run's own test photos, prepared as identify prepares them (TTA 0), and random inputs in [0, 1].
    manifest = json.loads((trained_run / "preds" / "y_pred_test_fold_0_tta_0.json").read_text())
    photos = [run.data_dir / "images" / f"{image_id}.JPG" for image_id in manifest["row_ids"][:6]]
    prepared = np.stack([run.preprocessing.model_input(run.preprocessing.file_bytes(p), 0) for p in photos])
    noise = np.random.default_rng(0).random((3, run.config.dim, run.config.dim, 3), dtype=np.float32)
    images = np.concatenate([prepared, noise])

    expected = fold_mean(run, [0, 1], images)
    batch = np.mean([np.load(trained_run / "preds" / f"y_pred_test_fold_{f}_tta_0.npy") for f in (0, 1)], axis=0)
    np.testing.assert_allclose(expected[:6], batch[:6], atol=1e-5)  # the ensemble of the prediction files

    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}  # nothing of photoid's set-up
    from_keras, from_savedmodel, printed = load_in_fresh_python(tmp_path, images, keras_file, savedmodel, [], env)
    assert "photoid modules loaded: []" in printed
    np.testing.assert_allclose(from_keras, expected, atol=1e-5)
    np.testing.assert_allclose(from_savedmodel, expected, atol=1e-5)


def fake_run(root: Path, n_trained: int, **settings) -> Path:
    """A 2-fold run folder whose first `n_trained` folds hold untrained models (distinct random weights)."""
    run_dir, records = root / "run", root / "data" / "tfrec"
    records.mkdir(parents=True)
    (records / "records.json").write_text(json.dumps({"settings": {"dim_pre": 32, "keep_original": False}}))
    cfg = Config(dim=32, dim_pre=32, n_folds=2, data_dir=str(root / "data"), run_dir=str(run_dir), **settings)
    classes = ["t_id_a", "t_id_b", "t_id_c", "t_id_d", "t_id_e"]
    for fold in range(n_trained):
        fold_dir = run_dir / f"fold_{fold}"
        fold_dir.mkdir(parents=True)
        model = build_models(backbone=cfg.backbone, dim=32, n_classes=len(classes), head=cfg.head,
                             pooling=cfg.pooling, embedding_size=cfg.embedding_size).predict
        model.save_weights(str(fold_dir / "best.weights.h5"))
        (fold_dir / "done.json").write_text(json.dumps({"fold": fold}))
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict()))
    (run_dir / "classes.txt").write_text("\n".join(classes) + "\n")
    (run_dir / "original_ids.txt").write_text("\n".join(classes[:3]) + "\n")
    return run_dir


@pytest.mark.parametrize("settings, n_trained, modules", [
    # Both load the export in a fresh Python (slow).
    pytest.param(dict(backbone="simple-cnn", head="arcface", pooling="gem", embedding_size=8), 2,
                 ["photoid.models.layers"], marks=pytest.mark.slow),
    pytest.param(dict(backbone="efficientnet-b0"), 1, ["efficientnet.tfkeras"], marks=pytest.mark.slow),
], ids=["gem-arcface", "efficientnet"])
def test_custom_layers_load_with_only_the_modules_the_export_names(tmp_path, settings, n_trained, modules):
    run_dir = fake_run(tmp_path, n_trained, **settings)
    keras_file = tmp_path / "model.keras"
    export_run(run_dir, keras_file)  # the SavedModel path is the same for every model (tested above)
    description = json.loads((tmp_path / "model.export.json").read_text())
    assert description["import_before_loading"] == modules
    assert description["environment"] == {"TF_USE_LEGACY_KERAS": "1"}

    images = np.random.default_rng(1).random((4, 32, 32, 3), dtype=np.float32)
    expected = fold_mean(load_run(run_dir), list(range(n_trained)), images)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"} | description["environment"]
    from_keras, _, _ = load_in_fresh_python(tmp_path, images, keras_file, None, modules, env)
    np.testing.assert_allclose(from_keras, expected, atol=1e-5)


def test_export_command_writes_the_chosen_folds_and_refuses_bad_requests(trained_run, tmp_path, capsys):
    out = tmp_path / "model.keras"
    assert main(["export", str(trained_run), "--out", str(out), "--folds", "1"]) == 0
    assert "fold(s) [1]" in capsys.readouterr().out
    import tf_keras

    model = tf_keras.models.load_model(out)
    assert [layer.name for layer in model.layers] == ["image", "fold_1"]
    images = np.random.default_rng(2).random((2, 32, 32, 3), dtype=np.float32)
    np.testing.assert_allclose(model.predict(images, verbose=0), fold_mean(load_run(trained_run), [1], images),
                               atol=1e-5)

    for argv, message in [
        (["export", str(trained_run)], "--out"),
        (["export", str(trained_run), "--out", str(tmp_path / "model.h5")], "must end in .keras"),
        (["export", str(trained_run), "--out", str(out), "--folds", "0,7"], "fold(s) [7] not trained"),
        (["export", str(tmp_path / "nowhere"), "--out", str(out)], "run folder not found"),
    ]:
        assert main(argv) == 2
        assert message in capsys.readouterr().err
