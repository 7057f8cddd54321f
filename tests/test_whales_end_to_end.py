"""Where's Whale-do end to end on a tiny synthetic set: records, ArcFace training through run.py, rank, score.

The synthetic generator's scenarios name every image of its folder, so the evaluation scenarios here are those it
draws for a whole-whale subset of the same photos (same seed, `max_images`), as `scripts/demo_whales.sh` does:
the records then keep those whales out of training.
"""

from __future__ import annotations

import io
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import TINY_DIM
from photoid.core.errors import PhotoidError, ValidationError

@pytest.fixture(scope="session")
def ranking(beluga_dir, whale_run, tmp_path_factory):
    """`photoid rank` on the tiny run: the submission and what the command printed."""
    import contextlib

    from photoid.cli import main

    out = tmp_path_factory.mktemp("ranking") / "submission.csv"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["rank", "--run", str(whale_run), "--data_dir", str(beluga_dir), "--out", str(out),
                     "--lateral_from_top"]) == 0   # one family for every route
    return pd.read_csv(out, dtype={"query_id": str, "database_image_id": str}), printed.getvalue()


def read_records(files):
    import tensorflow as tf

    from photoid.records.reader import feature_spec
    from photoid.whales.records import WHALE_INT_COLUMNS, WHALE_STRING_COLUMNS

    spec = feature_spec(WHALE_STRING_COLUMNS, WHALE_INT_COLUMNS)
    rows = []
    for record in tf.data.TFRecordDataset(files).map(lambda r: tf.io.parse_single_example(r, spec)):
        rows.append({k: v.numpy().decode() if v.dtype == tf.string and k != "image" else v.numpy()
                     for k, v in record.items()})
    return rows


def scenario_images(beluga_dir) -> set[str]:
    from photoid.whales.data import load_belugas
    from photoid.whales.records import scenario_image_ids

    return scenario_image_ids(load_belugas(beluga_dir, check_images=False))


# --- records --------------------------------------------------------------------------------------------------

def test_records_hold_the_training_folds_and_every_scenario_image_in_test(beluga_dir, whale_records):
    from photoid.records.reader import fold_files, test_files
    from photoid.whales.records import read_whale_folds

    metadata = pd.read_csv(beluga_dir / "metadata.csv", dtype=str).set_index("image_id")
    folds = read_whale_folds(whale_records / "folds.csv")
    evaluated = scenario_images(beluga_dir)
    # The scenario images and every other photo of their encounters stay out of training.
    held_out_encounters = set(metadata.loc[sorted(evaluated), "encounter_id"])
    assert not evaluated & set(folds["image_id"])
    assert not held_out_encounters & set(folds["encounter_id"])
    assert folds.groupby("encounter_id")["fold"].nunique().max() == 1   # grouped by encounter
    # Labels index every whale of the metadata (the winner's label space), held-out whales included.
    classes = sorted(metadata["whale_id"].unique())
    assert folds["label"].tolist() == [classes.index(w) for w in folds["whale_id"]]

    for fold in (0, 1):
        records = read_records(fold_files(whale_records, [fold]))
        expected = folds[folds["fold"] == fold]
        assert [r["image_id"] for r in records] == expected["image_id"].tolist()
        assert [int(r["label"]) for r in records] == expected["label"].tolist()
        for record in records:
            row = metadata.loc[record["image_id"]]
            assert (record["whale_id"], record["viewpoint"], record["encounter_id"]) == \
                   (row["whale_id"], row["viewpoint"], row["encounter_id"])
    test = read_records(test_files(whale_records))
    assert {r["image_id"] for r in test} == evaluated
    for record in test:   # every labelled scenario photo has its whale's label
        whale = metadata.loc[record["image_id"], "whale_id"]
        assert record["whale_id"] == whale
        assert int(record["label"]) == classes.index(whale)


def test_right_views_are_stored_mirrored(beluga_dir, whale_records):
    from photoid.records.reader import fold_files, test_files
    from photoid.records.writer import prepare_image_bytes

    records = read_records(fold_files(whale_records, [0, 1]) + test_files(whale_records))
    for viewpoint in ("right", "left", "top"):
        record = next((r for r in records if r["viewpoint"] == viewpoint), None)
        if record is None:
            continue
        path = beluga_dir / "images" / f"{record['image_id']}.jpg"
        stored = np.asarray(Image.open(io.BytesIO(record["image"])), dtype=np.float32)
        # Records turn wide photos upright by default (rotate_wide), the mirror being applied before turning.
        plain = np.asarray(Image.open(io.BytesIO(prepare_image_bytes(path, TINY_DIM, "compact", rotate_wide=True))),
                           dtype=np.float32)
        mirrored = record["image"] == prepare_image_bytes(path, TINY_DIM, "compact", mirror=True, rotate_wide=True)
        assert mirrored == (viewpoint == "right")
        # Pixels, not only bytes: the stored photo is (up to JPEG rounding) the plain one flipped, or the plain one;
        # a left-right mirror of a photo turned upright afterwards is an up-down flip of the upright photo.
        with Image.open(path) as original:
            wide = original.width > original.height
        flipped = plain[::-1] if wide else plain[:, ::-1]
        reference = flipped if viewpoint == "right" else plain
        other = plain if viewpoint == "right" else flipped
        assert np.abs(stored - reference).mean() < 3.0 < np.abs(stored - other).mean()


def test_by_default_right_views_are_stored_as_they_are_as_the_winner_did(beluga_dir, tmp_path):
    from photoid.core.io import read_json
    from photoid.records.reader import fold_files
    from photoid.records.writer import prepare_image_bytes
    from photoid.whales.records import build_whale_records

    build_whale_records(beluga_dir, tmp_path, n_folds=2, dim_pre=TINY_DIM, workers=1)
    assert read_json(tmp_path / "records.json")["settings"]["mirror_right"] is False
    right = [r for r in read_records(fold_files(tmp_path, [0, 1])) if r["viewpoint"] == "right"]
    assert right
    for record in right:
        path = beluga_dir / "images" / f"{record['image_id']}.jpg"
        assert record["image"] == prepare_image_bytes(path, TINY_DIM, "compact", rotate_wide=True)


def test_keep_original_with_mirror_re_encodes_at_the_photos_size(beluga_dir):
    from photoid.records.writer import prepare_image_bytes

    path = next((beluga_dir / "images").glob("*.jpg"))
    original = np.asarray(Image.open(path), dtype=np.float32)
    mirrored = np.asarray(Image.open(io.BytesIO(prepare_image_bytes(path, 0, "original", mirror=True))),
                          dtype=np.float32)
    assert mirrored.shape == original.shape
    assert np.abs(mirrored - original[:, ::-1]).mean() < 3.0


def test_options_train_on_scenarios_and_ungrouped_folds(beluga_dir, tmp_path):
    from sklearn.model_selection import StratifiedKFold

    from photoid.whales.records import build_whale_records, read_whale_folds

    out = tmp_path / "rec"
    summary = build_whale_records(beluga_dir, out, n_folds=2, dim_pre=16, grouped=False, train_on_scenarios=True,
                                  workers=1)
    folds = read_whale_folds(out / "folds.csv")
    metadata = pd.read_csv(beluga_dir / "metadata.csv", dtype=str)
    assert folds["image_id"].tolist() == metadata["image_id"].tolist()   # every labelled image trains
    assert summary["test_rows"] == len(scenario_images(beluga_dir))
    labels = pd.Index(sorted(metadata["whale_id"].unique())).get_indexer(metadata["whale_id"])
    expected = np.zeros(len(labels), dtype=int)
    for fold, (_, valid) in enumerate(StratifiedKFold(2, shuffle=True, random_state=42).split(labels, labels)):
        expected[valid] = fold
    assert folds["fold"].tolist() == expected.tolist()


def test_invalid_folders_write_nothing(beluga_dir, tmp_path):
    from photoid.whales.records import build_whale_records

    broken = tmp_path / "broken"
    shutil.copytree(beluga_dir, broken, ignore=shutil.ignore_patterns("tfrec"))
    metadata = pd.read_csv(broken / "metadata.csv", dtype=str)
    metadata.loc[2, "viewpoint"] = "under"
    metadata.to_csv(broken / "metadata.csv", index=False)
    with pytest.raises(ValidationError, match="line 4: unknown viewpoint 'under'"):
        build_whale_records(broken, n_folds=2, dim_pre=16, workers=1)
    assert not (broken / "tfrec").exists()

    everything = tmp_path / "everything"   # scenarios naming every photo leave nothing to train on
    shutil.copytree(beluga_dir, everything, ignore=shutil.ignore_patterns("tfrec"))
    pd.DataFrame({"database_image_id": metadata["image_id"]}).to_csv(everything / "databases" / "scenario01.csv",
                                                                     index=False)
    with pytest.raises(PhotoidError, match="nothing is left to train on"):
        build_whale_records(everything, n_folds=2, dim_pre=16, workers=1)
    assert not (everything / "tfrec").exists()


def test_fold_files_with_wrong_labels_are_refused(tmp_path):
    from photoid.whales.records import read_whale_folds

    path = tmp_path / "folds.csv"
    path.write_text("image_id,whale_id,label,fold,viewpoint,encounter_id\n"
                    "a,whale1,0,0,top,e1\nb,whale0,1,1,top,e2\nc,whale0,x,1,top,e2\n")
    with pytest.raises(ValidationError, match="line 4: label 'x'"):
        read_whale_folds(path)
    path.write_text("image_id,whale_id,label,fold,viewpoint,encounter_id\na,whale1,0,0,top,e1\nb,whale0,1,1,top,e2\n")
    with pytest.raises(ValidationError, match="sorted order"):
        read_whale_folds(path)


# --- training -------------------------------------------------------------------------------------------------

def test_arcface_training_through_run_py_keeps_checkpoints(whale_run, whale_records, beluga_dir):
    from photoid.core import io as pio

    folds = pd.read_csv(whale_records / "folds.csv", dtype=str)
    config = pio.read_json(whale_run / "config.json")
    assert (config["task"], config["head"], config["pooling"]) == ("whales", "arcface", "gem")
    # The label space: every whale of the metadata (the winner's), the held-out scenario whales included.
    metadata = pd.read_csv(beluga_dir / "metadata.csv", dtype=str)
    assert (whale_run / "classes.txt").read_text().split() == sorted(metadata["whale_id"].unique())
    assert set(folds["whale_id"]) < set(metadata["whale_id"])
    for fold in (0, 1):
        assert (whale_run / f"fold_{fold}" / "best.weights.h5").stat().st_size > 0
        assert pio.read_json(whale_run / f"fold_{fold}" / "done.json")["epochs_run"] == 1
    scores = pio.read_json(whale_run / "cv_scores.json")
    assert scores["all"]["n"] == len(folds) and 0 <= scores["all"]["acc"] <= scores["all"]["acc5"] <= 1
    assert not list((whale_run / "preds").glob("y_pred_test_*"))   # the recipe's job leaves test out


def test_flip_tta_embedding_is_the_mean_of_both_normalised_embeddings(whale_run, whale_records):
    import dataclasses

    from photoid.models.factory import build_models_from_config, load_weights_file
    from photoid.records.reader import build_dataset
    from photoid.records.reader import test_files
    from photoid.runs.loaded import load_run
    from photoid.whales.embed import embed_files

    run = load_run(whale_run)
    cfg = dataclasses.replace(run.config, weights="none")
    models = build_models_from_config(cfg, len(run.classes))
    load_weights_file(models.predict, whale_run / "fold_0" / "best.weights.h5")
    files = test_files(whale_records)
    images = np.concatenate([x.numpy() for x, _ in build_dataset(files, dim=cfg.dim, dim_pre=cfg.dim_pre,
                                                                 batch_size=8, training=False)])

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    plain = unit(models.embed.predict(images, verbose=0))
    flipped = unit(models.embed.predict(images[:, :, ::-1], verbose=0))
    expected = unit((plain + flipped) / 2)
    got = embed_files(models.embed, files, dim=cfg.dim, dim_pre=cfg.dim_pre, batch_size=8, flip=True)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(embed_files(models.embed, files, dim=cfg.dim, dim_pre=cfg.dim_pre, batch_size=8,
                                           flip=False), plain, atol=1e-5)
    # The winner's join: the raw mean of the image's and its mirror's embeddings.
    raw = (models.embed.predict(images, verbose=0) + models.embed.predict(images[:, :, ::-1], verbose=0)) / 2
    np.testing.assert_allclose(embed_files(models.embed, files, dim=cfg.dim, dim_pre=cfg.dim_pre, batch_size=8,
                                           flip=True, normalize=False), raw, rtol=1e-4, atol=1e-5)


# --- ranking and scoring --------------------------------------------------------------------------------------

def test_rank_writes_a_valid_submission_and_reports_its_map(ranking, beluga_dir):
    from photoid.whales.data import load_belugas

    submission, printed = ranking
    data = load_belugas(beluga_dir, check_images=False)
    assert list(submission.columns) == ["query_id", "database_image_id", "score"]
    assert submission["score"].between(0, 1).all()
    expected_queries = [qid for _, q, _ in data.scenarios for qid in q["query_id"]]
    assert pd.unique(submission["query_id"]).tolist() == expected_queries
    for scenario_id, queries, database in data.scenarios:
        for query_id, image_id in zip(queries["query_id"], queries["query_image_id"]):
            rows = submission[submission["query_id"] == query_id]
            candidates = set(database["database_image_id"]) - {image_id}
            assert len(rows) == min(20, len(candidates))
            assert set(rows["database_image_id"]) <= candidates and rows["database_image_id"].is_unique
            assert (np.diff(rows["score"].to_numpy()) <= 0).all()
    assert "mAP" in printed and "random ranking of the same candidates" in printed


def test_score_ranking_reads_the_rank_output(ranking, beluga_dir, tmp_path, capsys):
    import json

    from photoid.cli import main

    submission, _ = ranking
    path = tmp_path / "submission.csv"
    submission.to_csv(path, index=False)
    assert main(["score-ranking", "--submission", str(path), "--truth", str(beluga_dir / "example_labels.csv"),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_missing"] == 0 and result["n_over_limit"] == 0 and result["n_duplicate_rows"] == 0
    assert 0 <= result["map"] <= 1 and result["map"] == result["map_strict"]


def test_joined_embeddings_give_the_mean_cosine():
    from photoid.core.retrieval import join_embeddings

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 8)), rng.normal(size=(5, 3))   # two models, different widths

    def cosines(x):
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        return x @ x.T

    joined = join_embeddings([a, b])
    np.testing.assert_allclose(np.linalg.norm(joined, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(joined @ joined.T, (cosines(a) + cosines(b)) / 2, atol=1e-6)


def test_lateral_queries_are_ranked_with_the_lateral_embeddings():
    from photoid.whales.rank import rank_by_view

    ids = ["t1", "t2", "l1", "l2", "l3"]
    viewpoint = {"t1": "top", "t2": "top", "l1": "left", "l2": "right", "l3": "left"}
    # Top embeddings pair l1 with l3; lateral embeddings pair l1 with l2 (and t1 with t2 in both).
    top = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0]], dtype=np.float32)
    lateral = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    queries = pd.DataFrame({"query_id": ["s-l1", "s-t1"], "query_image_id": ["l1", "t1"]})
    scenarios = [("s", queries, pd.DataFrame({"database_image_id": ids}))]
    ranked = rank_by_view(scenarios, ids, viewpoint, top, lateral, top_k=1)
    assert ranked.values.tolist() == [["s-l1", "l2", 1.0], ["s-t1", "t2", 1.0]]   # the files' query order


def test_random_ranking_draws_from_the_same_candidates():
    from photoid.whales.rank import random_ranking

    queries = pd.DataFrame({"query_id": ["q1", "q2"], "query_image_id": ["a", "z"]})
    database = pd.DataFrame({"database_image_id": list("abcdefg")})
    ranked = random_ranking([("s", queries, database)], top_k=4, seed=1)
    q1 = ranked[ranked["query_id"] == "q1"]
    assert len(q1) == 4 and "a" not in set(q1["database_image_id"]) and q1["database_image_id"].is_unique
    assert len(ranked[ranked["query_id"] == "q2"]) == 4
    assert ranked["score"].between(0, 1).all()
    assert (np.diff(q1["score"].to_numpy()) <= 0).all()


def test_embeddings_written_by_embed_rank_exactly_as_the_runs_themselves(ranking, beluga_dir, whale_run, tmp_path):
    """`photoid embed` then `photoid rank --top FILE` gives the submission `photoid rank --run` gave."""
    from photoid.cli import main
    from photoid.whales.embed import load_embeddings

    out = tmp_path / "top.npz"
    assert main(["embed", "--run", str(whale_run), "--data_dir", str(beluga_dir), "--out", str(out)]) == 0
    ids, embeddings = load_embeddings(out)
    assert embeddings.dtype == np.float32 and embeddings.shape[0] == len(ids) == len(set(ids))
    assert embeddings.shape[1] == 2 * 128   # two folds of the demo recipe's 128-d embedding, concatenated raw
    assert set(ids) >= scenario_images(beluga_dir)
    submission = tmp_path / "from_embeddings.csv"
    assert main(["rank", "--data_dir", str(beluga_dir), "--top", str(out), "--out", str(submission),
                 "--lateral_from_top"]) == 0
    expected, _ = ranking
    got = pd.read_csv(submission, dtype={"query_id": str, "database_image_id": str})
    assert got[["query_id", "database_image_id"]].values.tolist() == \
        expected[["query_id", "database_image_id"]].values.tolist()
    np.testing.assert_allclose(got["score"], expected["score"], rtol=1e-5, atol=1e-6)


def test_rank_local_reranks_each_querys_shortlist_by_the_fused_score(ranking, beluga_dir, whale_run, tmp_path,
                                                                     capsys):
    from photoid.cli import main
    from photoid.whales.data import load_belugas
    from photoid.whales.routing import route_of_queries

    winner, _ = ranking
    out = tmp_path / "fused.csv"
    assert main(["rank", "--run", str(whale_run), "--data_dir", str(beluga_dir), "--out", str(out), "--local",
                 "--lateral_from_top"]) == 0
    printed = capsys.readouterr().out
    assert "local matching: calibrated on" in printed and "pseudo-query mAP by local weight: 0.0:" in printed
    assert "without local matching (winner routing):" in printed and "fused with local matching (written):" in printed
    fused = pd.read_csv(out, dtype={"query_id": str, "database_image_id": str})
    assert pd.unique(fused["query_id"]).tolist() == pd.unique(winner["query_id"]).tolist()
    data = load_belugas(beluga_dir, check_images=False)
    viewpoint_of = dict(zip(data.metadata["image_id"], data.metadata["viewpoint"]))
    routes = route_of_queries(data.scenarios, viewpoint_of)
    for query_id, rows in fused.groupby("query_id", sort=False):
        before = winner[winner["query_id"] == query_id]
        # The same shortlist, re-ordered: scores are fused probabilities, non-increasing.
        assert sorted(rows["database_image_id"]) == sorted(before["database_image_id"])
        assert rows["score"].between(0, 1).all() and (np.diff(rows["score"].to_numpy()) <= 0).all()
        if routes[query_id] in ("top_to_lateral", "lateral_to_top"):  # no comparable view: the winner's order
            assert rows["database_image_id"].tolist() == before["database_image_id"].tolist()
