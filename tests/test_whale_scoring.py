"""The Where's Whale-do metric: hand-computed cases, the organisers' scorer on random data, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from photoid.cli import main
from photoid.core.errors import ValidationError
from photoid.whales.scoring import read_submission, score_ranking


def organisers_map(submission: pd.DataFrame, truth: pd.DataFrame, limit: int = 20) -> float:
    """The organisers' computation step by step (boem-belugas-runtime, scoring/score_submission.py): both
    frames indexed by query_id, a left merge flags true rows, sklearn's AP per query group (0 without a true
    row), rescaled by true rows submitted / min(true rows, limit), aligned on query ids, NaN-skipping mean."""
    predicted = submission.set_index("query_id")
    actual = truth.set_index("query_id")
    merged = predicted.merge(actual.assign(actual=1.0), how="left", on=["query_id", "database_image_id"])
    merged = merged.fillna({"actual": 0.0})
    aps = merged.groupby("query_id").apply(
        lambda g: average_precision_score(g["actual"].values, g["score"].values) if g["actual"].sum() else 0.0)
    n_submitted = merged["actual"].groupby("query_id").sum().astype("int64")
    n_true = actual.groupby("query_id").size().clip(upper=limit)
    return aps.multiply(n_submitted).divide(n_true).mean()


def frame(rows, columns=("query_id", "database_image_id", "score")) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(columns))


def truth_frame(pairs) -> pd.DataFrame:
    return frame(pairs, ("query_id", "database_image_id"))


def test_perfect_ranking_scores_one():
    truth = truth_frame([("q1", "a"), ("q1", "b"), ("q2", "c")])
    submission = frame([("q1", "a", 0.9), ("q1", "b", 0.8), ("q1", "x", 0.1), ("q2", "c", 1.0), ("q2", "y", 0.5)])
    result = score_ranking(submission, truth)
    assert result["map"] == 1.0 and result["map_strict"] == 1.0 and result["top1"] == 1.0


def test_single_true_match_at_rank_two_of_twenty():
    truth = truth_frame([("q", "hit")])
    rows = [("q", f"miss{i}", 1.0 - i / 40) for i in range(20)]
    rows[1] = ("q", "hit", rows[1][2])
    result = score_ranking(frame(rows), truth)
    # AP = precision at the only true row = 1/2; it was submitted and the truth has one match: × 1/1.
    assert result["map"] == pytest.approx(0.5)
    assert result["top1"] == 0.0


def test_rescaled_when_only_some_true_matches_are_submitted():
    truth = truth_frame([("q", t) for t in "abcd"])
    submission = frame([("q", "a", 0.9), ("q", "x", 0.8), ("q", "b", 0.7)])
    # Submitted rows: a (P=1), x, b (P=2/3) → AP over submitted = (1 + 2/3) / 2; × 2 submitted / 4 true.
    assert score_ranking(submission, truth)["map"] == pytest.approx((1 + 2 / 3) / 2 * 2 / 4)


def test_more_than_twenty_true_matches_divide_by_twenty():
    truth = truth_frame([("q", f"t{i}") for i in range(30)])
    submission = frame([("q", f"t{i}", 1.0 - i / 100) for i in range(20)])
    # Twenty true rows submitted out of min(30, 20) = 20: a perfect score, not 20/30.
    assert score_ranking(submission, truth)["map"] == pytest.approx(1.0)
    half = frame([("q", f"t{i}" if i % 2 == 0 else f"x{i}", 1.0 - i / 100) for i in range(20)])
    precisions = [(k + 1) / (2 * k + 1) for k in range(10)]
    assert score_ranking(half, truth)["map"] == pytest.approx(np.mean(precisions) * 10 / 20)


def test_query_with_no_true_match_submitted_scores_zero():
    truth = truth_frame([("q1", "a"), ("q2", "b")])
    submission = frame([("q1", "a", 0.9), ("q2", "x", 0.9), ("q2", "y", 0.3)])
    assert score_ranking(submission, truth)["map"] == pytest.approx(0.5)


def test_missing_query_is_skipped_officially_and_zero_strictly():
    truth = truth_frame([("q1", "a"), ("q2", "b"), ("q3", "c")])
    submission = frame([("q1", "a", 0.9), ("q2", "z", 0.4), ("q2", "b", 0.2), ("extra", "a", 0.5)])
    result = score_ranking(submission, truth)
    assert result["map"] == pytest.approx((1.0 + 0.5) / 2)          # q3 left out, "extra" unknown: skipped
    assert result["map_strict"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert result["top1"] == pytest.approx(1 / 3)
    assert (result["n_queries"], result["n_scored"], result["n_missing"], result["n_unknown"]) == (3, 2, 1, 1)
    assert result["map"] == pytest.approx(organisers_map(submission, truth))


def test_tied_scores_are_pooled():
    truth = truth_frame([("q", "t")])
    # The true row shares its score with two false rows: one step of the curve with precision 1/3,
    # whichever order the rows come in.
    for order in ([("q", "t", 0.5), ("q", "f1", 0.5), ("q", "f2", 0.5)],
                  [("q", "f1", 0.5), ("q", "f2", 0.5), ("q", "t", 0.5)]):
        assert score_ranking(frame(order), truth)["map"] == pytest.approx(1 / 3)


def test_repeated_rows_and_long_lists_are_counted_as_the_organisers_do():
    truth = truth_frame([("q", "a"), ("q", "b")])
    rows = [("q", "a", 0.9), ("q", "a", 0.8)] + [("q", f"x{i}", 0.5 - i / 100) for i in range(25)]
    submission = frame(rows)
    result = score_ranking(submission, truth)
    assert result["map"] == pytest.approx(organisers_map(submission, truth))
    assert result["map"] == pytest.approx(1.0)                    # AP 1, two "true" rows of min(2, 20)
    assert result["n_over_limit"] == 1 and result["n_duplicate_rows"] == 1


@pytest.mark.parametrize("seed", range(6))
def test_equals_the_organisers_scorer_on_random_data(seed):
    rng = np.random.default_rng(seed)
    images = [f"img{i}" for i in range(60)]
    truth_rows, sub_rows = [], []
    for q in range(40):
        qid = f"s-q{q}"
        matches = rng.choice(images, size=rng.integers(1, 30), replace=False)
        truth_rows += [(qid, m) for m in matches]
        if rng.random() < 0.15:
            continue                                              # left out of the submission
        candidates = rng.choice(images, size=rng.integers(1, 25), replace=False)
        # Coarse scores give many ties, as clipped similarities do.
        scores = np.round(rng.random(len(candidates)), 1 if rng.random() < 0.5 else 6)
        sub_rows += [(qid, c, s) for c, s in zip(candidates, scores)]
    sub_rows += [("unknown-query", "img0", 0.5)]
    submission, truth = frame(sub_rows), truth_frame(truth_rows)
    submission = submission.sample(frac=1.0, random_state=seed).reset_index(drop=True)   # row order is free
    expected = organisers_map(submission, truth)
    assert score_ranking(submission, truth)["map"] == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_submission_validation_names_file_and_line(tmp_path):
    path = tmp_path / "sub.csv"
    path.write_text("query_id,database_image_id,score\nq,a,0.5\nq,b,1.5\nq,c,\nq,d,nan\n")
    with pytest.raises(ValidationError) as err:
        read_submission(path)
    message = str(err.value)
    assert f"{path} line 3" in message and f"{path} line 4" in message and f"{path} line 5" in message
    assert f"{path} line 2" not in message
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("query_id,score,database_image_id\nq,0.5,a\n")
    with pytest.raises(ValidationError, match="columns must be"):
        read_submission(wrong)


def test_cli_prints_json_with_map_first(tmp_path, capsys):
    (tmp_path / "truth.csv").write_text("query_id,database_image_id\ns1-i1,i2\ns1-i3,i4\n")
    (tmp_path / "sub.csv").write_text("query_id,database_image_id,score\ns1-i1,i2,0.9\ns1-i3,i1,0.8\n"
                                      "s1-i3,i4,0.7\n")
    (tmp_path / "metadata.csv").write_text("image_id,path,viewpoint\ni1,images/i1.jpg,top\n"
                                           "i2,images/i2.jpg,top\ni3,images/i3.jpg,left\ni4,images/i4.jpg,top\n")
    code = main(["score-ranking", "--submission", str(tmp_path / "sub.csv"), "--truth", str(tmp_path / "truth.csv"),
                 "--metadata", str(tmp_path / "metadata.csv"), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result)[0] == "map"
    assert result["map"] == pytest.approx((1.0 + 0.5) / 2)
    assert result["by_viewpoint"]["top"]["map"] == pytest.approx(1.0)
    assert result["by_viewpoint"]["left"]["map"] == pytest.approx(0.5)
    code = main(["score-ranking", "--submission", str(tmp_path / "sub.csv"), "--truth", str(tmp_path / "truth.csv")])
    assert code == 0 and "mAP (official" in capsys.readouterr().out


def test_ranking_with_identity_embeddings_scores_one_on_generated_scenarios(tmp_path):
    """Synthetic folder → rank with embeddings that encode the whale exactly → the organisers' mAP is 1; with
    embeddings that ignore the whale it is far lower."""
    from photoid.synth.belugas import generate_belugas
    from photoid.whales.data import load_belugas, load_truth
    from photoid.whales.ranking import rank_scenarios

    generate_belugas(tmp_path / "data", seed=2, n_whales=12, images_per_whale=5, size=32, workers=1)
    data = load_belugas(tmp_path / "data", check_images=False)
    truth = load_truth(tmp_path / "data" / "example_labels.csv")
    one_hot = np.eye(len(data.classes), dtype=np.float32)[data.labels()]
    perfect = rank_scenarios(data.scenarios, data.metadata["image_id"], one_hot, top_k=20)
    assert perfect.groupby("query_id").size().max() <= 20
    assert score_ranking(perfect, truth)["map"] == pytest.approx(1.0)
    noise = np.random.default_rng(0).normal(size=one_hot.shape).astype(np.float32)
    blind = rank_scenarios(data.scenarios, data.metadata["image_id"], noise, top_k=20)
    assert score_ranking(blind, truth)["map"] < 0.4
