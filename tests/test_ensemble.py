"""The new_turtle rule, loading runs' predictions, submissions and the `ensemble` command."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from photoid.cli import main
from photoid.turtles.ensemble import make_submission, top_labels
from photoid.core.labels import classes_sha256
from photoid.runs.folder import RunDir, load_run_predictions, weights_sha256
from photoid.core.errors import PhotoidError

NT = "new_turtle"
ORIGINALS = [f"o{i}" for i in range(7)]
OTHERS = [f"n{i}" for i in range(4)]
CLASSES = sorted(ORIGINALS + OTHERS)


def probs_from_ranking(ranking, classes=CLASSES):
    """One row of probabilities in which the ids of `ranking` come first, in that order."""
    row = np.zeros(len(classes))
    for place, class_id in enumerate(ranking):
        row[classes.index(class_id)] = (len(classes) - place) / 100
    unranked = [i for i, c in enumerate(classes) if c not in ranking]
    row[unranked] = np.linspace(0.001, 0.0001, len(unranked))
    return row / row.sum()


def original_rule(probs, classes, original_ids):
    """The original ensemble.py's loop written out literally (the reference top_labels must equal)."""
    ranked = np.asarray(classes)[np.argsort(probs, axis=1)[:, ::-1]]
    mapped = np.array([[c if c in original_ids else NT for c in row] for row in ranked])
    rows = []
    for row in mapped:
        candidates = [x for x in row[row != NT] if x not in row[:5]][:4]
        kept = []
        for label in row[:5]:
            if label not in kept:
                kept.append(label)
        for _ in range(5 - len(kept)):
            kept.append(candidates.pop(0))
        rows.append(kept)
    return np.array(rows)


@pytest.mark.parametrize("ranking, expected", [
    # no non-original id in the top 5
    (["o3", "o1", "o0", "o5", "o2", "n0"], ["o3", "o1", "o0", "o5", "o2"]),
    # one, at place 2
    (["o3", "n2", "o1", "o0", "o5", "o2"], ["o3", NT, "o1", "o0", "o5"]),
    # several: new_turtle once at the best one's place, freed places take the next originals in rank order
    (["o3", "n2", "o1", "n0", "n1", "o0", "n3", "o5", "o2"], ["o3", NT, "o1", "o0", "o5"]),
    # the best id of all is not an original
    (["n1", "n0", "o2", "o6", "n3", "o4", "o1"], [NT, "o2", "o6", "o4", "o1"]),
    # a non-original at place 5 only
    (["o6", "o5", "o4", "o3", "n3", "o0"], ["o6", "o5", "o4", "o3", NT]),
    # a non-original at place 6 stays out
    (["o6", "o5", "o4", "o3", "o2", "n3", "o0"], ["o6", "o5", "o4", "o3", "o2"]),
])
def test_top_labels_hand_made(ranking, expected):
    probs = probs_from_ranking(ranking)[None, :]
    labels, scores = top_labels(probs, CLASSES, ORIGINALS)
    assert labels.tolist() == [expected]
    assert labels.tolist() == original_rule(probs, CLASSES, ORIGINALS).tolist()
    # each label's score is the probability of the class at its rank (new_turtle: the best non-original)
    best_other = max(probs[0, CLASSES.index(c)] for c in OTHERS)
    expected_scores = [best_other if label == NT else probs[0, CLASSES.index(label)] for label in expected]
    np.testing.assert_array_equal(scores[0], expected_scores)


def test_top_labels_breaks_ties_as_the_original():
    rng = np.random.default_rng(3)
    probs = np.round(rng.random((40, len(CLASSES))), 1)  # many equal values within each row
    labels, scores = top_labels(probs, CLASSES, ORIGINALS)
    np.testing.assert_array_equal(labels, original_rule(probs, CLASSES, ORIGINALS))
    assert (np.diff(scores, axis=1) <= 0).all()
    # one row alone gives what it gives within a batch (single-image identify uses the same function)
    for i in range(len(probs)):
        alone, alone_scores = top_labels(probs[i:i + 1], CLASSES, ORIGINALS)
        np.testing.assert_array_equal(alone[0], labels[i])
        np.testing.assert_array_equal(alone_scores[0], scores[i])


@pytest.mark.parametrize("seed", range(5))
def test_top_labels_equals_the_original_loop_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n_classes, n_rows = 300, 50
    classes = sorted(f"t_id_{i:05d}" for i in rng.choice(100000, n_classes, replace=False))
    original_ids = sorted(rng.choice(classes, 20, replace=False))
    probs = rng.random((n_rows, n_classes)).astype(np.float32)
    # lift the original ids by a random amount per row so every case occurs: new_turtle first, later, absent
    lift = rng.uniform(0.0, 1.0, size=(n_rows, 1))
    probs[:, np.isin(classes, original_ids)] += lift * rng.random((n_rows, 20)).astype(np.float32)
    probs /= probs.sum(axis=1, keepdims=True)
    labels, _ = top_labels(probs, classes, original_ids)
    np.testing.assert_array_equal(labels, original_rule(probs, classes, original_ids))
    places = [list(row).index(NT) if NT in row else 5 for row in labels]
    assert {0, 5} <= set(places) and any(0 < p < 5 for p in places)


def test_top_labels_with_fewer_original_ids_than_places():
    probs = probs_from_ranking(["n0", "o1", "n1", "o0"], ["o0", "o1", "n0", "n1", "n2"])[None, :]
    labels, scores = top_labels(probs, ["o0", "o1", "n0", "n1", "n2"], ["o0", "o1"])
    assert labels.tolist() == [[NT, "o1", "o0", "", ""]]
    assert np.isnan(scores[0, 3:]).all() and not np.isnan(scores[0, :3]).any()


def test_top_labels_with_k_above_the_number_of_classes():
    probs = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    labels, _ = top_labels(probs, ["a", "b", "c"], ["a", "b", "c"], k=5)
    assert labels.tolist() == [["b", "c", "a", "", ""], ["a", "c", "b", "", ""]]
    labels, _ = top_labels(probs, ["a", "b", "c"], ["a"], k=5)
    assert labels.tolist() == [[NT, "a", "", "", ""], ["a", NT, "", "", ""]]


def test_top_labels_refuses_inconsistent_ids():
    probs = np.full((1, 3), 1 / 3)
    with pytest.raises(ValueError, match="not among the classes"):
        top_labels(probs, ["a", "b", "c"], ["a", "z"])
    with pytest.raises(ValueError, match="do not match 4 classes"):
        top_labels(probs, ["a", "b", "c", "d"], ["a"])


# ----------------------------------------------------------------------------- run predictions

def write_run(run_dir, classes, original_ids, predictions, split="test"):
    """A run folder as training leaves it: classes, original ids, config and manifest-backed predictions."""
    (run_dir / "preds").mkdir(parents=True)
    (run_dir / "classes.txt").write_text("\n".join(classes) + "\n", encoding="utf-8")
    (run_dir / "original_ids.txt").write_text("\n".join(original_ids) + "\n", encoding="utf-8")
    (run_dir / "config.json").write_text("{}", encoding="utf-8")
    for (fold, tta), (probs, row_ids) in predictions.items():
        stem = run_dir / "preds" / f"y_pred_{split}_fold_{fold}_tta_{tta}"
        np.save(f"{stem}.npy", probs)
        manifest = {"recipe": "tiny", "split": split, "fold": fold, "tta": tta, "n_classes": len(classes),
                    "classes_sha256": classes_sha256(classes), "row_ids": row_ids, "data_dir": "data"}
        stem.with_suffix(".json").write_text(json.dumps(manifest), encoding="utf-8")


ROW_IDS = ["ID_C", "ID_A", "ID_B"]


def random_predictions(rng, folds=(0, 1), ttas=(0,), row_ids=ROW_IDS, n_classes=len(CLASSES)):
    return {(f, t): (rng.random((len(row_ids), n_classes)).astype(np.float32), list(row_ids))
            for f in folds for t in ttas}


def test_load_averages_every_file_in_the_original_order(tmp_path):
    rng = np.random.default_rng(0)
    runs = {"run-a": random_predictions(rng, ttas=(0, 1)), "run-b": random_predictions(rng, ttas=(0, 1))}
    for name, preds in runs.items():
        write_run(tmp_path / name, CLASSES, ORIGINALS, preds)
    mean, row_ids, classes, original_ids, used = load_run_predictions([tmp_path / "run-a", tmp_path / "run-b"])
    order = [(name, f, t) for name in runs for t in (0, 1) for f in (0, 1)]  # runs, then TTAs, then folds
    expected = np.mean([runs[name][f, t][0] for name, f, t in order], axis=0)
    np.testing.assert_array_equal(mean, expected)
    assert used == [str(tmp_path / name / "preds" / f"y_pred_test_fold_{f}_tta_{t}.npy") for name, f, t in order]
    assert (row_ids, classes, original_ids) == (ROW_IDS, CLASSES, ORIGINALS)
    assert RunDir(tmp_path / "run-a").classes() == CLASSES

    mean, *_, used = load_run_predictions([tmp_path / "run-b"], folds=[1], ttas=[0])
    np.testing.assert_array_equal(mean, runs["run-b"][1, 0][0])
    assert len(used) == 1


def test_load_stacks_validation_folds(tmp_path):
    rng = np.random.default_rng(1)
    preds = {(0, 0): (rng.random((2, len(CLASSES))), ["ID_A", "ID_B"]),
             (1, 0): (rng.random((1, len(CLASSES))), ["ID_C"])}
    write_run(tmp_path / "run", CLASSES, ORIGINALS, preds, split="val")
    mean, row_ids, *_ = load_run_predictions([tmp_path / "run"], split="val")
    assert row_ids == ["ID_A", "ID_B", "ID_C"]
    np.testing.assert_array_equal(mean, np.vstack([preds[0, 0][0], preds[1, 0][0]]))


def _refusal(tmp_path, match, **kwargs):
    with pytest.raises(PhotoidError, match=match):
        load_run_predictions(sorted(p for p in tmp_path.iterdir() if p.is_dir()), **kwargs)


def test_load_refuses_runs_with_other_classes(tmp_path):
    rng = np.random.default_rng(2)
    write_run(tmp_path / "run-a", CLASSES, ORIGINALS, random_predictions(rng))
    other = CLASSES[:-1] + ["o9"]
    write_run(tmp_path / "run-b", other, ORIGINALS, random_predictions(rng))
    _refusal(tmp_path, r"run-b/classes.txt differs .*'o9'")


def test_load_refuses_predictions_of_other_rows(tmp_path):
    rng = np.random.default_rng(3)
    write_run(tmp_path / "run-a", CLASSES, ORIGINALS, random_predictions(rng))
    write_run(tmp_path / "run-b", CLASSES, ORIGINALS, random_predictions(rng, row_ids=["ID_A", "ID_B", "ID_C"]))
    _refusal(tmp_path, r"run-b/preds/y_pred_test_fold_0_tta_0.npy: its rows")


def test_load_refuses_a_missing_manifest(tmp_path):
    write_run(tmp_path / "run", CLASSES, ORIGINALS, random_predictions(np.random.default_rng(4)))
    (tmp_path / "run" / "preds" / "y_pred_test_fold_1_tta_0.json").unlink()
    _refusal(tmp_path, r"fold_1_tta_0.npy: its manifest .* is missing")


def test_load_refuses_a_shape_that_contradicts_the_manifest(tmp_path):
    write_run(tmp_path / "run", CLASSES, ORIGINALS, random_predictions(np.random.default_rng(5)))
    np.save(tmp_path / "run" / "preds" / "y_pred_test_fold_0_tta_0.npy", np.zeros((3, len(CLASSES) - 1)))
    _refusal(tmp_path, r"fold_0_tta_0.npy: shape \(3, 10\)")


def test_load_refuses_a_manifest_of_another_label_order(tmp_path):
    write_run(tmp_path / "run", CLASSES, ORIGINALS, random_predictions(np.random.default_rng(6)))
    path = tmp_path / "run" / "preds" / "y_pred_test_fold_0_tta_0.json"
    manifest = json.loads(path.read_text())
    manifest["classes_sha256"] = classes_sha256(CLASSES[::-1])
    path.write_text(json.dumps(manifest))
    _refusal(tmp_path, "classes_sha256")


def test_load_refuses_an_empty_or_incomplete_selection(tmp_path):
    write_run(tmp_path / "run", CLASSES, ORIGINALS, random_predictions(np.random.default_rng(7)))
    _refusal(tmp_path, "no val predictions", split="val")
    _refusal(tmp_path, "missing 1 of the expected prediction files .*fold_2_tta_0", folds=[0, 2])
    with pytest.raises(PhotoidError, match="no run directories"):
        load_run_predictions([])


# ----------------------------------------------------------------------------- submission

def test_submission_follows_sample_submission_order():
    row_ids = ["ID_A", "ID_B", "ID_C"]
    probs = np.stack([probs_from_ranking(["o0", "o1", "o2", "o3", "o4"]),
                      probs_from_ranking(["n0", "o5", "o6", "o1", "o2"]),
                      probs_from_ranking(["o6", "o5", "n1", "n2", "o4", "o3"])])
    frame = make_submission(probs, row_ids, CLASSES, ORIGINALS, ["ID_C", "ID_A", "ID_B"])
    assert list(frame.columns) == ["image_id"] + [f"prediction{i}" for i in range(1, 6)]
    assert frame.values.tolist() == [
        ["ID_C", "o6", "o5", NT, "o4", "o3"],
        ["ID_A", "o0", "o1", "o2", "o3", "o4"],
        ["ID_B", NT, "o5", "o6", "o1", "o2"],
    ]
    with pytest.raises(PhotoidError, match="lack 1 of the 4 images .*ID_D"):
        make_submission(probs, row_ids, CLASSES, ORIGINALS, ["ID_C", "ID_A", "ID_B", "ID_D"])


def write_data_dir(data_dir, original_ids, test_ids):
    """The four CSVs of a Turtle Recall folder (no images: the ensemble does not read them)."""
    data_dir.mkdir()
    pd.DataFrame({"image_id": [f"ID_T{i}" for i in range(len(original_ids))], "image_location": "top",
                  "turtle_id": original_ids}).to_csv(data_dir / "train.csv", index=False)
    pd.DataFrame({"image_id": [f"ID_E{i}" for i in range(len(OTHERS))],
                  "turtle_id": OTHERS}).to_csv(data_dir / "extra_images.csv", index=False)
    pd.DataFrame({"image_id": test_ids, "image_location": "Left"}).to_csv(data_dir / "test.csv", index=False)
    sample = pd.DataFrame({"image_id": test_ids})
    for i in range(1, 6):
        sample[f"prediction{i}"] = "t_id_x"
    sample.to_csv(data_dir / "sample_submission.csv", index=False)


def test_ensemble_command_writes_the_submission(tmp_path, capsys):
    rng = np.random.default_rng(8)
    runs = [tmp_path / "run-a", tmp_path / "run-b"]
    for run in runs:
        write_run(run, CLASSES, ORIGINALS, random_predictions(rng, ttas=(0, 1)))
    write_data_dir(tmp_path / "data", ORIGINALS, ["ID_B", "ID_C", "ID_A"])
    out = tmp_path / "sub" / "submission.csv"
    code = main(["ensemble", *map(str, runs), "--data_dir", str(tmp_path / "data"), "--out", str(out),
                 "--tta", "0"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "averaged 4 test prediction files from 2 runs (run-a: 2, run-b: 2)" in printed
    assert "wrote 3 rows" in printed

    mean, row_ids, *_ = load_run_predictions(runs, ttas=[0])
    expected = make_submission(mean, row_ids, CLASSES, ORIGINALS, ["ID_B", "ID_C", "ID_A"])
    written = pd.read_csv(out, dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(written, expected)


def test_ensemble_command_refuses_runs_of_other_data(tmp_path, capsys):
    write_run(tmp_path / "run", CLASSES, ORIGINALS, random_predictions(np.random.default_rng(9)))
    write_data_dir(tmp_path / "data", ORIGINALS[:-1], ROW_IDS)
    code = main(["ensemble", str(tmp_path / "run"), "--data_dir", str(tmp_path / "data"),
                 "--out", str(tmp_path / "s.csv")])
    assert code == 2
    assert "original_ids.txt (7 ids) differs from the turtle ids of" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()


# ----------------------------------------------------------------------------- only the expected files count

def test_only_the_configured_ttas_of_the_trained_folds_count(tmp_path):
    rng = np.random.default_rng(20)
    preds = random_predictions(rng, folds=(0, 1, 2), ttas=(0, 1))  # fold 2 and TTA 1: an earlier configuration's
    write_run(tmp_path / "run", CLASSES, ORIGINALS, preds)
    (tmp_path / "run" / "config.json").write_text(json.dumps({"tta_number": 0}), encoding="utf-8")
    for fold in (0, 1):
        (tmp_path / "run" / f"fold_{fold}").mkdir()
        (tmp_path / "run" / f"fold_{fold}" / "done.json").write_text("{}", encoding="utf-8")
    mean, *_, used = load_run_predictions([tmp_path / "run"])
    assert [Path(u).name for u in used] == ["y_pred_test_fold_0_tta_0.npy", "y_pred_test_fold_1_tta_0.npy"]
    np.testing.assert_array_equal(mean, np.mean([preds[0, 0][0], preds[1, 0][0]], axis=0))
    # A trained fold without its predictions: refused, naming the missing file.
    (tmp_path / "run" / "fold_3").mkdir()
    (tmp_path / "run" / "fold_3" / "done.json").write_text("{}", encoding="utf-8")
    _refusal(tmp_path, r"missing 1 of the expected .*y_pred_test_fold_3_tta_0\.npy")


def test_predictions_of_replaced_weights_are_refused_and_removed(tmp_path):
    write_run(tmp_path / "run", CLASSES, ORIGINALS, random_predictions(np.random.default_rng(21)))
    fold_dir = tmp_path / "run" / "fold_0"
    fold_dir.mkdir()
    (fold_dir / "best.weights.h5").write_bytes(b"weights trained first")
    manifest_path = tmp_path / "run" / "preds" / "y_pred_test_fold_0_tta_0.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "weights_sha256": weights_sha256(fold_dir / "best.weights.h5")}))
    load_run_predictions([tmp_path / "run"])  # the weights that made it: accepted
    (fold_dir / "best.weights.h5").write_bytes(b"weights trained again")
    _refusal(tmp_path, r"y_pred_test_fold_0_tta_0.npy: stale")
    RunDir(tmp_path / "run").remove_fold_predictions(0)
    assert sorted(p.name for p in (tmp_path / "run" / "preds").iterdir()) == [
        "y_pred_test_fold_1_tta_0.json", "y_pred_test_fold_1_tta_0.npy"]
