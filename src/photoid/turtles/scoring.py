"""Score a Turtle Recall submission as the leaderboard did: MAP@5 over 101 labels, and accuracy@1.

The hidden truth is `test_labels.csv` (`image_id,turtle_id`, optionally `label_101`). The leaderboard knows
the 100 turtles of train.csv by name and every other turtle as `new_turtle`; without a `label_101` column
that mapping is made here from train.csv.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from photoid.core.errors import PhotoidError, ProblemList
from photoid.core.metrics import map_at_k_from_labels
from photoid.core.tables import read_table, require_columns
from photoid.turtles.data import (
    NEW_TURTLE,
    PREDICTION_COLUMNS,
    TEST_LABELS_CSV,
    TRAIN_CSV,
    load_test_labels,
)
from photoid.turtles.ensemble import SUBMISSION_COLUMNS


def truth_labels_101(test_labels: pd.DataFrame, original_ids) -> pd.Series:
    """Each test image's leaderboard label: its turtle id if train.csv knows it, else `new_turtle`."""
    known = set(original_ids)
    return test_labels["turtle_id"].where(test_labels["turtle_id"].isin(known), NEW_TURTLE)


def _check_submission(submission: pd.DataFrame, truth_ids: set[str], source: str) -> None:
    """Refuse a submission whose columns or image ids do not match the truth; the index holds CSV lines."""
    problems = ProblemList()
    if require_columns(submission, source, SUBMISSION_COLUMNS, problems):
        for column in submission.columns:
            if column not in SUBMISSION_COLUMNS:
                problems.add(source, 1, f"unexpected column {column!r} (a submission has exactly "
                                        f"{', '.join(SUBMISSION_COLUMNS)})")
        first_line: dict[str, int] = {}
        for line, image_id in submission["image_id"].items():
            if image_id in first_line:
                problems.add(source, line, f"duplicate image_id {image_id!r} (first on line {first_line[image_id]})")
                continue
            first_line[image_id] = line
            if image_id not in truth_ids:
                problems.add(source, line, f"image_id {image_id!r} is not a test image")
        for image_id in sorted(truth_ids - set(first_line)):
            problems.add(source, None, f"test image {image_id!r} has no row")
    problems.raise_if_any(title=f"invalid submission {source}")


def _score(submission: pd.DataFrame, truth: pd.DataFrame, source: str) -> dict:
    truth_column = "label_101" if "label_101" in truth.columns else "turtle_id"
    _check_submission(submission, set(truth["image_id"]), source)
    predictions = submission.set_index("image_id").loc[truth["image_id"], PREDICTION_COLUMNS].to_numpy(dtype=str)
    labels = truth[truth_column].to_numpy(dtype=str)
    return {
        "map5": map_at_k_from_labels(labels, predictions, k=5),
        "acc1": float(np.mean(predictions[:, 0] == labels)),
        "n": int(len(labels)),
    }


def score_submission(submission_df: pd.DataFrame, truth_df: pd.DataFrame, source: str = "submission") -> dict:
    """MAP@5 and accuracy@1 of a submission table against the truth, as {"map5", "acc1", "n"}.

    `truth_df` has `image_id` and the label to match: `label_101` if present, else `turtle_id` as given (map it
    with `truth_labels_101` first to score over the leaderboard's 101 labels). Rows are reported by CSV line,
    counting the header as line 1. Predictions are compared verbatim.
    """
    if truth_df.empty or "image_id" not in truth_df.columns or not {"label_101", "turtle_id"} & set(truth_df):
        raise PhotoidError("the truth table needs at least one row and the columns image_id and label_101 "
                           "(or turtle_id)")
    submission = submission_df.astype(str).reset_index(drop=True)
    submission.index = submission.index + 2
    return _score(submission, truth_df, source)


def _load_truth(data_dir: Path) -> pd.DataFrame:
    truth = load_test_labels(data_dir)
    if "label_101" in truth.columns:
        return truth
    problems = ProblemList()
    train = read_table(data_dir / TRAIN_CSV, TRAIN_CSV, problems)
    if train is not None:
        require_columns(train, TRAIN_CSV, ["turtle_id"], problems)
    problems.raise_if_any(title=f"{TEST_LABELS_CSV} has no label_101 column, and train.csv, which says which "
                                "turtles are known, cannot be read")
    return truth.assign(label_101=truth_labels_101(truth, train["turtle_id"]))


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data_dir", required=True, help=f"folder holding {TEST_LABELS_CSV} (and {TRAIN_CSV})")
    parser.add_argument("--submission", required=True, help="submission CSV: image_id,prediction1..prediction5")
    parser.add_argument("--json", action="store_true", help='print only {"map5": ..., "acc1": ..., "n": ...}')


def run(args: argparse.Namespace) -> int:
    truth = _load_truth(Path(args.data_dir))
    problems = ProblemList()
    submission = read_table(args.submission, args.submission, problems)   # a local path or a URL
    problems.raise_if_any(title="cannot read the submission")
    scores = _score(submission, truth, args.submission)
    if args.json:
        print(json.dumps({"map5": scores["map5"], "acc1": scores["acc1"], "n": scores["n"]}))
    else:
        n_new = int((truth["label_101"] == NEW_TURTLE).sum())
        print(f"MAP@5 {scores['map5']:.4f}   accuracy@1 {scores['acc1']:.4f}   over {scores['n']} test images "
              f"({n_new} of them {NEW_TURTLE})")
    return 0
