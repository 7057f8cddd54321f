"""Local features in the catalogue, through the commands a user runs: a zero-shot catalogue of a fresh synthetic
species, fused identification, explanations, bad photos, catalogues without local features, `catalog add`."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from photoid.catalog.local import LOCAL_KEY, read_local_features
from photoid.catalog.store import read_catalog
from photoid.cli import main
from photoid.local.features import photo_features
from photoid.local.matching import match_pair


@pytest.fixture(scope="module")
def species(tmp_path_factory) -> Path:
    """A species no model was trained on: 6 individuals x 3 encounters (the last one test) and 1 unseen, 256 px."""
    out = tmp_path_factory.mktemp("species") / "data"
    assert main(["synth", "generic", "--out", str(out), "--seed", "11", "--n-individuals", "6", "--n-unknown", "1",
                 "--size", "256", "--workers", "1"]) == 0
    return out


@pytest.fixture(scope="module")
def zero_shot(species, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("zero-shot") / "catalog"
    assert main(["catalog", "build", "--data_dir", str(species), "--out", str(out)]) == 0
    assert main(["calibrate", "--catalog", str(out), "--repeats", "2"]) == 0
    return out


def test_photos(species, known: bool | None = True) -> pd.DataFrame:
    meta = pd.read_csv(species / "metadata.csv", dtype=str, keep_default_na=False)
    trained = set(meta.loc[meta["split"] == "train", "identity"])
    test = meta[meta["split"] == "test"]
    if known is None:
        return test
    return test[test["identity"].isin(trained) == known]


test_photos.__test__ = False  # a helper


def folder_digest(path: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir()) if p.is_file()}


def test_a_zero_shot_catalogue_names_individuals_of_a_species_never_trained_on(zero_shot, species, capsys):
    catalog = read_catalog(zero_shot)
    assert catalog.models == [] and catalog.manifest["zero_shot"]["task"] == "generic"
    local = catalog.manifest[LOCAL_KEY]
    assert local["photos"] == len(catalog.table) and local["settings"]["extractor"] == "rootsift"
    assert all((zero_shot / local[key]["name"]).is_file() for key in ("index", "descriptors"))
    fusion = catalog.calibration["fusion"]
    assert fusion["weights"]["global"] + fusion["weights"]["local"] == pytest.approx(1.0)
    assert len(fusion["by_weight"]) == 11 and fusion["pairs"] > 0
    # Out of fold, the chosen fusion is at least as good as either score alone (both are among its candidates),
    # and it gives local matching a weight only where that beats the global score with its own threshold.
    assert fusion["metrics"]["map5"] >= max(fusion["global_only"]["metrics"]["map5"],
                                            fusion["local_only"]["metrics"]["map5"]) - 1e-12 or \
        fusion["global_score_kept"]
    if fusion["weights"]["local"] > 0:
        assert fusion["metrics"]["map5"] > catalog.calibration["metrics"]["map5"]
    assert main(["catalog", "list", "--catalog", str(zero_shot)]) == 0
    listed = capsys.readouterr().out
    assert "no trained model (zero-shot" in listed and "local features: rootsift" in listed and "fusion:" in listed
    queries = test_photos(species)
    assert main(["identify", *[str(species / p) for p in queries["path"]], "--catalog", str(zero_shot),
                 "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    top1 = np.mean([r["candidates"][0]["label"] == truth for r, truth in zip(results, queries["identity"])])
    assert top1 >= 0.6  # chance: 1/6


def test_explanations_draw_exactly_the_inliers_the_score_counted(zero_shot, species, tmp_path, capsys):
    query = test_photos(species).iloc[0]
    path = species / query["path"]
    assert main(["identify", str(path), "--catalog", str(zero_shot), "--explain", str(tmp_path / "why"),
                 "--no-local", "--top", "3"]) == 0
    assert "picture(s) in" in capsys.readouterr().err
    records = sorted((tmp_path / "why").glob("*.json"))
    assert records and len(list((tmp_path / "why").glob("*.png"))) == len(records)
    catalog = read_catalog(zero_shot)
    stored = read_local_features(catalog)
    query_features = photo_features(path, settings_of(catalog))
    for record_path in records:
        record = json.loads(record_path.read_text())
        candidate = stored.get(record["candidate_image_id"])
        again = match_pair(query_features, candidate)
        assert record["inliers"] == again.inliers == len(record["matches"]) == len(record["segments_drawn"])
        assert [m["query_keypoint"] for m in record["matches"]] == again.query_index.tolist()
        assert [m["candidate_keypoint"] for m in record["matches"]] == again.candidate_index.tolist()
        for m in record["matches"]:
            assert m["candidate_xy"] == pytest.approx(candidate.xy[m["candidate_keypoint"]].tolist(), abs=0.01)
        with Image.open(record_path.with_suffix(".png")) as picture:
            assert picture.format == "PNG" and picture.height > 300


def settings_of(catalog):
    from photoid.catalog.local import local_settings

    return local_settings(catalog)


def test_a_photo_without_keypoints_scores_0_locally_with_a_note_and_the_batch_goes_on(zero_shot, species, tmp_path,
                                                                                       capsys):
    Image.new("RGB", (300, 200), (255, 255, 255)).save(tmp_path / "overexposed.jpg")
    Image.fromarray((np.random.default_rng(0).random((12, 12, 3)) * 255).astype(np.uint8)).save(tmp_path / "tiny.png")
    good = species / test_photos(species).iloc[0]["path"]
    paths = [tmp_path / "overexposed.jpg", good, tmp_path / "tiny.png"]
    assert main(["identify", *map(str, paths), "--catalog", str(zero_shot), "--json", "--local"]) == 0
    captured = capsys.readouterr()
    results = json.loads(captured.out)["results"]
    assert len(results) == 3 and all(r["candidates"] for r in results)
    assert "overexposed.jpg: the photo is blank" in captured.err and "tiny.png: the photo is 12 x 12 px" in captured.err


def test_catalogue_add_extracts_the_new_photos_features_in_the_same_commit(zero_shot, species, tmp_path, capsys):
    catalog_dir = tmp_path / "catalog"
    shutil.copytree(zero_shot, catalog_dir)
    before = read_catalog(catalog_dir)
    unseen = test_photos(species, known=False)
    paths = [str(species / p) for p in unseen["path"][:2]]
    assert main(["catalog", "add", *paths, "--id", "newcomer", "--catalog", str(catalog_dir)]) == 0
    assert "added 2 photo(s) of new individual newcomer" in capsys.readouterr().out
    after = read_catalog(catalog_dir)
    entry = after.manifest[LOCAL_KEY]
    assert after.manifest["generation"] == before.manifest["generation"] + 1
    assert entry["index"]["name"].endswith(f"{after.manifest['generation']:05d}.npz")
    assert entry["photos"] == len(after.table) == len(before.table) + 2
    assert sorted(p.name for p in catalog_dir.glob("local-*")) == sorted(
        [entry["index"]["name"], entry["descriptors"]["name"]])  # the previous generation's files are gone
    features = read_local_features(after)
    for path, image_id in zip(paths, after.table["image_id"].tail(2)):
        assert np.array_equal(features.get(image_id).descriptors, photo_features(path).descriptors)
    # The VLAD embedding of an added photo is the one identification computes for it.
    assert main(["identify", paths[0], "--catalog", str(catalog_dir), "--json", "--no-local"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["candidates"][0]["label"] == "newcomer"


def test_a_catalogue_without_local_features_says_how_to_add_them_and_changes_nothing(trained_run, turtle_dir,
                                                                                      tmp_path, capsys):
    from photoid.catalog.build import build_catalog

    catalog_dir = tmp_path / "catalog"
    built = build_catalog([str(trained_run)], turtle_dir, catalog_dir, local=False, chunk_rows=50)  # in parts
    assert len(built.parts) > 1
    assert main(["calibrate", "--catalog", str(catalog_dir), "--repeats", "1"]) == 0
    calibration = read_catalog(catalog_dir).calibration
    assert "fusion" not in calibration
    capsys.readouterr()
    before = folder_digest(catalog_dir)
    photo = str(next((turtle_dir / "images").glob("*.JPG")))
    assert main(["identify", photo, "--catalog", str(catalog_dir)]) == 0  # as before: the global score alone
    assert "rank  label" in capsys.readouterr().out
    for argv in (["identify", photo, "--catalog", str(catalog_dir), "--explain", str(tmp_path / "why")],
                 ["identify", photo, "--catalog", str(catalog_dir), "--local"],
                 ["calibrate", "--catalog", str(catalog_dir), "--local"]):
        assert main(argv) == 2  # a PhotoidError
        message = capsys.readouterr().err
        assert "has no local features" in message and f"photoid catalog build --local --out {catalog_dir}" in message
        assert folder_digest(catalog_dir) == before and not (tmp_path / "why").exists()
    # The command it names adds them, keeping the photos, the embeddings (their files too) and the calibration.
    assert main(["catalog", "build", "--local", "--out", str(catalog_dir)]) == 0
    catalog = read_catalog(catalog_dir)
    assert catalog.manifest[LOCAL_KEY]["photos"] == len(catalog.table)
    assert [p.name for p in catalog.parts] == [p.name for p in built.parts]
    assert np.array_equal(catalog.embeddings, built.embeddings) and catalog.table.equals(built.table)
    assert catalog.calibration == calibration
    assert main(["identify", photo, "--catalog", str(catalog_dir), "--explain", str(tmp_path / "why")]) == 0


def test_the_fusion_of_a_trained_catalogue_is_calibrated_out_of_fold(serve_catalog):
    fusion = serve_catalog.calibration["fusion"]
    assert fusion["blend_weight"] == serve_catalog.calibration["blend_weight"]
    assert set(fusion["calibration_kinds"].values()) <= {"isotonic", "logistic"}
    assert fusion["queries"] == serve_catalog.calibration["metrics"]["n_queries"]
    from photoid.local.calibration import Calibrator

    for entry in fusion["calibrators"].values():
        curve = Calibrator.from_json(entry)(np.linspace(-1, 100, 500))
        assert np.all(np.diff(curve) > 0)


def test_queries_scored_in_threads_score_as_one_by_one_and_blas_gets_its_threads_back(zero_shot, monkeypatch):
    from threadpoolctl import threadpool_info

    from photoid.catalog import fusion
    from photoid.catalog.fusion import LocalScorer

    catalog = read_catalog(zero_shot)
    scorer = LocalScorer(catalog, read_local_features(catalog))
    rows = range(len(catalog.table))
    queries = [scorer.photo(row) for row in rows]
    views = [scorer.views[row] for row in rows]
    everyone = [np.arange(len(scorer.names))] * len(queries)
    one_by_one = [scorer.score(q, v, s, exclude_row=r) for q, v, s, r in zip(queries, views, everyone, rows)]
    blas_before = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    monkeypatch.setattr(fusion, "available_cores", lambda: 2)  # threads also on a machine with one core
    in_threads = scorer.score_many(queries, views, everyone, exclude_rows=list(rows), cache={},
                                   query_keys=list(rows))
    assert [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"] == blas_before
    assert len(in_threads) == len(one_by_one) and any(np.nanmax(s) > 0 for s, _, _ in one_by_one)
    for (expected, evidence, notes), (scores, found, found_notes) in zip(one_by_one, in_threads):
        np.testing.assert_array_equal(scores, expected)
        assert notes == found_notes and evidence.keys() == found.keys()
        for code, e in evidence.items():
            np.testing.assert_array_equal(found[code].match.query_index, e.match.query_index)
            np.testing.assert_array_equal(found[code].match.candidate_index, e.match.candidate_index)


def test_the_page_serves_a_zero_shot_catalogue_and_draws_why_a_candidate_matches(zero_shot, species, tmp_path):
    from starlette.testclient import TestClient

    from photoid.serve.app import create_app
    from photoid.serve.identifier import Identifier

    catalog_dir = tmp_path / "catalog"
    shutil.copytree(zero_shot, catalog_dir)
    identifier = Identifier(catalog_dir, batch_size=4)
    client = TestClient(create_app(identifier), raise_server_exceptions=False)
    path = species / next(p for p in test_photos(species)["path"] if p.endswith(".jpg"))  # the page takes JPEGs
    answer = client.post("/identify", params={"format": "json"},
                         files=[("photos", (path.name, path.read_bytes(), "image/jpeg"))]).json()
    result = answer["results"][0]
    from photoid.catalog.identify import verdict_threshold

    assert answer["threshold"] == verdict_threshold(read_catalog(catalog_dir))
    label = next(c["label"] for c in result["candidates"] if c["label"] != "new_individual")
    page = client.get(f"/review/{answer['review']}").text
    assert f'href="/explain/{result["sha256"]}/{label}"' in page
    picture = client.get(f"/explain/{result['sha256']}/{label}")
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    assert Image.open(__import__("io").BytesIO(picture.content)).height > 300
    # The match view's hook: the same photo against one catalogue photo, by its image id.
    from photoid.serve.match import explain_url

    image_id = read_catalog(catalog_dir).table["image_id"].iloc[0]
    address = explain_url(read_catalog(catalog_dir), result["sha256"], image_id)
    assert address == f"/explain/{result['sha256']}/{image_id}.png"
    one = client.get(address)
    assert one.status_code == 200 and one.headers["content-type"] == "image/png"
    assert client.get(f"/explain/{result['sha256']}/nobody").status_code == 400
    assert client.get(f"/explain/{'0' * 64}/{label}").status_code == 400
    # Confirming adds the photo with its VLAD embedding (no model): the catalogue grows by one.
    before = len(read_catalog(catalog_dir).table)
    assert client.post("/decide", data={"review": answer["review"], "photo": result["sha256"], "decision": "confirm",
                                        "individual_id": label}, follow_redirects=False).status_code == 303
    assert len(read_catalog(catalog_dir).table) == before + 1
