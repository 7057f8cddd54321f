"""Safe loading: no file photoid reads can run code, and a weight file must fit the model it is loaded into.

The package is read as source (every call checked, not just grepped), then damaged, pickled and mismatched
files are fed to the loaders and to the commands.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from photoid.core import io as pio
from photoid.core.errors import PhotoidError
from robustness_support import run_photoid

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "photoid"
SOURCES = sorted(PACKAGE.rglob("*.py"))
# Modules whose loaders can execute code stored in a file.
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
UNSAFE_CALLS = {"read_pickle", "to_pickle", "eval", "exec"}


def calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            yield name, {k.arg: k.value for k in node.keywords}, node


def is_false(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


def test_the_package_is_read_as_source():
    assert len(SOURCES) > 20 and PACKAGE / "core" / "io.py" in SOURCES


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(PACKAGE)) for p in SOURCES])
def test_no_loader_that_runs_code(path):
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert not {alias.name.split(".")[0] for alias in node.names} & UNSAFE_MODULES, ast.unparse(node)
        if isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] not in UNSAFE_MODULES, ast.unparse(node)
    for name, keywords, node in calls(tree):
        where = f"{path.name}:{node.lineno}: {ast.unparse(node)[:120]}"
        assert name not in UNSAFE_CALLS, where
        assert not (isinstance(keywords.get("allow_pickle"), ast.Constant) and keywords["allow_pickle"].value), where
        if name in ("load", "save") and ast.unparse(node.func) in ("np.load", "numpy.load", "np.save", "numpy.save"):
            assert is_false(keywords.get("allow_pickle")), f"{where}: pass allow_pickle=False"
        if name == "load_model":
            assert not is_false(keywords.get("safe_mode")), f"{where}: .keras files load in safe mode"
        if name == "load" and ast.unparse(node.func) in ("yaml.load",):
            raise AssertionError(f"{where}: use yaml.safe_load")


def test_a_pickled_array_is_refused(tmp_path):
    path = tmp_path / "y_pred.npy"
    np.save(path, np.array([{"code": "runs on load"}], dtype=object), allow_pickle=True)
    with pytest.raises(PhotoidError, match=r"y_pred\.npy cannot be read as a numeric array file.*allow_pickle=False"):
        pio.load_npy(path)


def test_scoring_a_run_with_a_pickled_prediction_file_is_a_clear_error(turtle_dir, turtle_records, tmp_path,
                                                                         capsys):
    run_dir = tmp_path / "run"
    preds = run_dir / "preds" / "y_pred_val_fold_0_tta_0.npy"
    preds.parent.mkdir(parents=True)
    np.save(preds, np.array([object()], dtype=object), allow_pickle=True)
    code, _, err = run_photoid(capsys, "train", "--model", "cpu-demo", "--data_dir", turtle_dir, "--run_dir", run_dir,
                               "--n_folds", "2", "--job", "score")
    assert code == 2 and "Traceback" not in err
    assert f"error: {preds} cannot be read as a numeric array file" in err


# --- weight files ----------------------------------------------------------------------------------------------------

N_CLASSES = 5


def build(**overrides):
    from photoid.models.factory import build_models

    options = dict(backbone="simple-cnn", dim=32, n_classes=N_CLASSES)
    return build_models(**{**options, **overrides}).predict


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """The same small model saved in both Keras layouts, and its predictions on fixed images."""
    folder = tmp_path_factory.mktemp("weights")
    model = build()
    paths = {}
    for layout in ("new", "legacy"):
        paths[layout] = folder / ("model.weights.h5" if layout == "new" else "model.h5")
        model.save_weights(str(paths[layout]))
    images = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    np.save(folder / "images.npy", images)
    np.save(folder / "expected.npy", model.predict(images, verbose=0))
    return {**paths, "images": folder / "images.npy", "expected": folder / "expected.npy"}


@pytest.mark.parametrize("layout", ["new", "legacy"])
def test_a_matching_weight_file_loads_every_weight(saved, layout):
    from photoid.models.factory import load_weights_file

    model = build()
    load_weights_file(model, saved[layout], N_CLASSES)
    images = np.load(saved["images"], allow_pickle=False)
    np.testing.assert_array_equal(model.predict(images, verbose=0), np.load(saved["expected"], allow_pickle=False))


MISMATCHES = [
    ("more classes", dict(n_classes=N_CLASSES + 2), "Shape mismatch"),
    ("another backbone", dict(backbone="efficientnet-b0"), ""),
    ("GeM instead of average pooling", dict(pooling="gem"), ""),
    ("an embedding layer", dict(embedding_size=8), ""),
    ("an ArcFace head", dict(head="arcface"), ""),
]


@pytest.mark.parametrize("layout", ["new", "legacy"])
@pytest.mark.parametrize("overrides, detail", [m[1:] for m in MISMATCHES], ids=[m[0] for m in MISMATCHES])
def test_a_weight_file_of_another_model_is_refused(saved, layout, overrides, detail):
    from photoid.models.factory import load_weights_file

    model = build(**overrides)
    with pytest.raises(PhotoidError, match="does not fit this recipe's model|holds .* weight arrays but") as info:
        load_weights_file(model, saved[layout], N_CLASSES)
    assert str(saved[layout]) in str(info.value) and detail in str(info.value)


def test_a_model_with_fewer_weights_than_the_file_is_refused(tmp_path):
    """Keras matches `.weights.h5` entries by position and skips those the model has no place for."""
    from photoid.models.factory import load_weights_file

    path = tmp_path / "gem.weights.h5"
    build(pooling="gem").save_weights(str(path))
    with pytest.raises(PhotoidError, match=r"holds 43 weight arrays but this recipe's model \(model with 5 classes\) "
                                           r"has 42: it was saved from another architecture"):
        load_weights_file(build(), path, N_CLASSES)


@pytest.mark.parametrize("content, name, message", [
    (b"not an HDF5 file at all", "random.h5", "does not fit this recipe's model"),
    (None, "truncated.weights.h5", "does not fit this recipe's model"),
    (b"\x80\x04K\x01.", "model.pkl", "expected one of .h5, .hdf5, .weights.h5, .keras"),
])
def test_damaged_or_foreign_weight_files_are_refused(saved, tmp_path, content, name, message):
    from photoid.models.factory import load_weights_file

    path = tmp_path / name
    path.write_bytes(content if content is not None else saved["new"].read_bytes()[:5000])
    with pytest.raises(PhotoidError, match=message):
        load_weights_file(build(), path, N_CLASSES)


def test_a_missing_weight_file_is_named(tmp_path):
    from photoid.models.factory import load_weights_file

    with pytest.raises(PhotoidError, match=f"weights file {tmp_path / 'nowhere.h5'} does not exist"):
        load_weights_file(build(), tmp_path / "nowhere.h5", N_CLASSES)


def test_predicting_with_a_weight_file_for_other_classes_is_refused(turtle_dir, turtle_records, tmp_path, capsys):
    weights = tmp_path / "seven_classes.weights.h5"
    build(n_classes=7).save_weights(str(weights))
    run_dir = tmp_path / "run"
    code, _, err = run_photoid(capsys, "train", "--model", "cpu-demo", "--data_dir", turtle_dir, "--run_dir", run_dir,
                               "--n_folds", "2", "--final_fold", "1", "--dim", "32", "--dim_pre", "32",
                               "--job", "val", "--weights", weights, "--verbose", "0")
    assert code == 2 and "Traceback" not in err
    assert f"error: weights file {weights} does not fit this recipe's model" in err
    assert not (run_dir / "preds").exists()
