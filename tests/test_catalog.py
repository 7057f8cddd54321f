"""The catalogue on the session's tiny run: build/add/list, identification with a new individual, calibration,
evaluation, plain files only, and refusal of embeddings from other models."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from photoid.core import io as pio
from photoid.catalog.build import add_photos, build_catalog, load_catalog_embedder, read_catalog
from photoid.catalog.identify import identify_paths_with_catalog, identify_with_catalog, operating_point
from photoid.catalog.store import update_manifest
from photoid.catalog.calibrate import calibrate
from photoid.cli import main
from photoid.turtles.data import load_turtles
from photoid.core.io import file_sha256
from photoid.core.labels import classes_sha256
from photoid.runs.folder import RunDir
from photoid.core.errors import PhotoidError
from photoid.core.metrics import NEW_TURTLE
from photoid.catalog.openset import BLEND_WEIGHTS


@pytest.fixture(scope="module")
def built(trained_run, turtle_dir, tmp_path_factory):
    return build_catalog([str(trained_run)], turtle_dir, tmp_path_factory.mktemp("catalog") / "cat")


@pytest.fixture(scope="module")
def calibrated(built, tmp_path_factory):
    path = tmp_path_factory.mktemp("calibrated") / "cat"
    shutil.copytree(built.path, path)
    catalog = read_catalog(path)
    return update_manifest(catalog, calibration=calibrate(catalog, repeats=2))


def fresh_copy(catalog, tmp_path):
    shutil.copytree(catalog.path, tmp_path / "cat")
    return read_catalog(tmp_path / "cat")


def unseen_turtle_photos(turtle_dir, known_ids) -> tuple[str, list[str]]:
    """The test photos of one turtle that the catalogue does not know."""
    truth = pd.read_csv(turtle_dir / "test_labels.csv", dtype=str)
    unseen = truth[~truth["turtle_id"].isin(known_ids)]
    turtle = unseen["turtle_id"].value_counts().index[0]
    ids = unseen.loc[unseen["turtle_id"] == turtle, "image_id"]
    return turtle, [str(turtle_dir / "images" / f"{i}.JPG") for i in ids]


def test_build_embeds_every_labelled_photo_into_plain_files(built, trained_run, turtle_dir):
    data = load_turtles(turtle_dir, check_images=False)
    assert sorted(p.name for p in built.path.iterdir()) == [".photoid.lock", "embeddings-00001.npy", "images-00001.csv",
                                                             "local-00001.npy", "local-00001.npz", "manifest.json"]
    # The local features (no pickle either): one entry per photo, keyed by image id, in the same commit.
    with np.load(built.path / "local-00001.npz", allow_pickle=False) as index:
        assert index["image_ids"].tolist() == data.labeled["image_id"].tolist() and index["xy"].dtype == np.float16
    assert np.load(built.path / "local-00001.npy", allow_pickle=False).dtype == np.uint8
    assert built.manifest["local_features"]["photos"] == len(data.labeled)
    assert built.table["image_id"].tolist() == data.labeled["image_id"].tolist()
    assert built.table["individual_id"].tolist() == data.labeled["turtle_id"].tolist()
    assert set(built.table["source"]) == {"train", "extra"}
    # No pickle anywhere: the array loads without it, the rest is JSON and CSV text.
    array = np.load(built.path / "embeddings-00001.npy", allow_pickle=False)
    assert array.dtype == np.float32 and array.shape == (len(data.labeled), built.dim)
    json.loads((built.path / "manifest.json").read_text(encoding="utf-8"))
    pd.read_csv(built.path / "images-00001.csv", dtype=str)
    # One unit vector per photo; each fold model's block is that model's unit vector scaled by 1/sqrt(2).
    np.testing.assert_allclose(np.linalg.norm(array, axis=1), 1.0, atol=1e-5)
    models = built.models
    assert [m["fold"] for m in models] == [0, 1] and sum(m["dim"] for m in models) == built.dim
    for m in models:
        block = array[:, m["offset"]:m["offset"] + m["dim"]]
        np.testing.assert_allclose(np.linalg.norm(block, axis=1), 2 ** -0.5, atol=1e-5)
        assert m["weights_sha256"] == file_sha256(trained_run / f"fold_{m['fold']}" / "best.weights.h5")
        assert m["classes_sha256"] == classes_sha256(RunDir(trained_run).classes())
        assert len(m["config_sha256"]) == 64
    assert built.manifest["runs"][0]["folds"] == [0, 1] and built.manifest["calibration"] is None


def test_embedder_probabilities_equal_the_runs_batch_predictions(built, trained_run, turtle_dir):
    manifest = json.loads((trained_run / "preds" / "y_pred_test_fold_0_tta_0.json").read_text())
    paths = [str(turtle_dir / "images" / f"{i}.JPG") for i in manifest["row_ids"]]
    batch = np.mean([np.load(trained_run / "preds" / f"y_pred_test_fold_{f}_tta_{t}.npy") for f in (0, 1)
                     for t in (0, 1)], axis=0)
    embedder = load_catalog_embedder(built)
    (_, readable, embeddings, probs, errors), = embedder.batches(paths, batch_size=len(paths), probabilities=True)
    assert readable == paths and not errors
    np.testing.assert_allclose(probs, batch, atol=1e-5)
    # A catalogue photo embedded again gives its catalogue row.
    again = embedder.embed_all(built.table["path"][:3].tolist())
    np.testing.assert_allclose(again, built.embeddings[:3], atol=1e-5)


def test_list_summarises_individuals_sources_and_runs(built, turtle_dir, capsys):
    data = load_turtles(turtle_dir, check_images=False)
    assert main(["catalog", "list", "--catalog", str(built.path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["images"] == len(data.labeled) and info["individuals"] == len(data.classes)
    assert info["sources"]["train"]["images"] == len(data.train)
    assert info["sources"]["extra"]["individuals"] == data.extra["turtle_id"].nunique()
    assert info["runs"][0]["folds"] == [0, 1] and info["calibration"] is None
    assert main(["catalog", "list", "--catalog", str(built.path)]) == 0
    assert "calibration: none" in capsys.readouterr().out


def test_calibration_is_out_of_fold_and_becomes_the_default(calibrated, built):
    c = calibrated.calibration
    assert c["folds"] == [0, 1] and c["label_space"] == "catalog"
    assert [p["blend_weight"] for p in c["by_weight"]] == list(BLEND_WEIGHTS)
    assert c["blend_weight"] in BLEND_WEIGHTS
    best = max(p["map5"] for p in c["by_weight"])
    assert c["metrics"]["map5"] == pytest.approx(best)
    # Every labelled photo is a query once per draw; about a fifth of the individuals play new ones.
    assert c["metrics"]["n_queries"] == 2 * len(built.table)
    assert 0 < c["metrics"]["n_new"] < c["metrics"]["n_queries"] / 2
    for key in ("auc_known_vs_new", "known_accuracy", "new_accuracy", "balanced_accuracy"):
        assert 0.0 <= c["metrics"][key] <= 1.0
    assert operating_point(calibrated, True) == (c["blend_weight"], c["threshold"])
    assert operating_point(calibrated, False) == (0.0, c["similarity_only"]["threshold"])
    with pytest.raises(PhotoidError, match="not calibrated"):
        operating_point(built, True)


def test_a_new_individual_is_found_at_rank_1_right_after_it_is_added(calibrated, turtle_dir, tmp_path, capsys):
    catalog = fresh_copy(calibrated, tmp_path)
    turtle, photos = unseen_turtle_photos(turtle_dir, set(catalog.table["individual_id"]))
    assert main(["catalog", "add", *photos, "--id", turtle, "--catalog", str(catalog.path)]) == 0
    assert f"new individual {turtle}" in capsys.readouterr().out
    grown = read_catalog(catalog.path)
    assert len(grown.table) == len(catalog.table) + len(photos)
    assert (grown.table["source"] == "added").sum() == len(photos)
    assert sorted(p.name for p in grown.path.iterdir()) == [".photoid.lock", "embeddings-00002.npy", "images-00002.csv",
                                                            "local-00002.npy", "local-00002.npz", "manifest.json"]
    assert grown.manifest["local_features"]["photos"] == len(grown.table)  # committed with the embeddings
    assert grown.calibration == catalog.calibration
    # `photoid identify --catalog` names it first for each of its photos (the retired size switch is ignored).
    assert main(["identify", *photos, "--catalog", str(grown.path), "--csv", "--faiss_above", "10"]) == 0
    captured = capsys.readouterr()
    assert "--faiss_above is deprecated and ignored" in captured.err
    rows = pd.read_csv(io.StringIO(captured.out), dtype={"label": str})
    first = rows[rows["rank"] == 1]
    assert first["image"].tolist() == photos and set(first["label"]) == {turtle}
    assert rows.groupby("image").size().tolist() == [5] * len(photos)
    with pytest.raises(PhotoidError, match="already in the catalogue"):
        add_photos(grown.path, photos[:1], turtle)
    with pytest.raises(PhotoidError, match="reserved"):
        add_photos(grown.path, photos[:1], NEW_TURTLE)


def test_a_failed_update_leaves_the_previous_catalogue(calibrated, turtle_dir, tmp_path, monkeypatch):
    catalog = fresh_copy(calibrated, tmp_path)
    _, photos = unseen_turtle_photos(turtle_dir, set(catalog.table["individual_id"]))
    files = sorted(p.name for p in catalog.path.iterdir())

    def interrupted(*_, **__):
        raise KeyboardInterrupt

    monkeypatch.setattr(pio, "write_json", interrupted)
    with pytest.raises(KeyboardInterrupt):
        add_photos(catalog.path, photos, "t_somebody")
    assert sorted(p.name for p in catalog.path.iterdir()) == files
    assert len(read_catalog(catalog.path).table) == len(catalog.table)


def test_embeddings_of_other_models_or_sizes_are_refused(calibrated, trained_run, tmp_path):
    with pytest.raises(PhotoidError, match=f"{calibrated.dim} dimensions"):
        identify_with_catalog(np.ones((2, calibrated.dim + 3), np.float32), calibrated)
    # A run whose fold 1 now holds other weights (as after retraining) made no part of this catalogue.
    other = tmp_path / "other_run"
    shutil.copytree(trained_run, other)
    shutil.copyfile(other / "fold_0" / "best.weights.h5", other / "fold_1" / "best.weights.h5")
    with pytest.raises(PhotoidError, match="fold 1.*weights_sha256"):
        load_catalog_embedder(calibrated, [str(other)])
    with pytest.raises(PhotoidError, match="made by 1 run"):
        load_catalog_embedder(calibrated, [str(trained_run), str(other)])
    results = identify_paths_with_catalog(calibrated.path, ["unused.JPG"], run_dirs=[str(other)])
    with pytest.raises(PhotoidError, match="weights_sha256"):
        next(results)
    # The same run moved elsewhere is accepted.
    moved = tmp_path / "moved_run"
    shutil.copytree(trained_run, moved)
    assert load_catalog_embedder(calibrated, [str(moved)]).dim == calibrated.dim


def test_evaluation_table_compares_the_classifier_rule_the_catalogue_and_the_blend(calibrated, turtle_dir,
                                                                                  tmp_path, capsys):
    catalog = fresh_copy(calibrated, tmp_path)
    out = tmp_path / "evaluation.json"
    assert main(["calibrate", "--catalog", str(catalog.path), "--label_space", "original", "--repeats", "1",
                 "--evaluate", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    truth = pd.read_csv(turtle_dir / "test_labels.csv", dtype=str)
    assert result["n_test"] == len(truth) and result["n_new_turtle"] == (truth["label_101"] == NEW_TURTLE).sum()
    # (d): the calibrated fusion with local matching, the catalogue having local features.
    assert [r["method"][:3] for r in result["rows"]] == ["(a)", "cat", "(b)", "(c)", "(d)"]
    for row in result["rows"]:
        assert 0.0 <= row["map5"] <= 1.0 and row["acc1"] <= row["map5"] + 1e-9
        assert f"| {row['method']} | {row['map5']:.4f} |" in printed
    assert read_catalog(catalog.path).calibration["label_space"] == "original"
