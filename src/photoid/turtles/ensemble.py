"""The original's ensemble: average runs' test predictions, apply the `new_turtle` rule, write a submission.

The rule itself (`photoid.core.labels.top_labels`) is shared with metrics, `identify` and the catalogue; prediction
files are read and checked by the run folder's owner (`photoid.runs.folder.load_run_predictions`).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from photoid.core import fs
from photoid.core.errors import PhotoidError, ProblemList
from photoid.core.io import write_csv
from photoid.core.labels import NEW_TURTLE, top_labels
from photoid.core.tables import read_table
from photoid.runs.folder import RunDir, load_run_predictions
from photoid.turtles.data import PREDICTION_COLUMNS, load_turtles

if TYPE_CHECKING:
    from photoid.runs.config import Config

SUBMISSION_COLUMNS = ["image_id", *PREDICTION_COLUMNS]


# ----------------------------------------------------------------------------- submission

def make_submission(mean_probs: np.ndarray, row_ids: Sequence[str], classes: Sequence[str],
                    original_ids: Sequence[str], sample_submission_ids: Sequence[str]) -> pd.DataFrame:
    """The submission table: `image_id, prediction1..prediction5`, rows in sample_submission order."""
    row_ids = [str(r) for r in row_ids]
    if len(row_ids) != len(mean_probs):
        raise PhotoidError(f"{len(row_ids)} row ids for {len(mean_probs)} rows of predictions")
    index = {rid: i for i, rid in enumerate(row_ids)}
    if len(index) != len(row_ids):
        raise PhotoidError("the predictions list some image ids more than once")
    wanted = [str(s) for s in sample_submission_ids]
    if len(set(wanted)) != len(wanted):
        raise PhotoidError("sample_submission.csv lists some image ids more than once")
    missing = [s for s in wanted if s not in index]
    if missing:
        raise PhotoidError(f"the predictions lack {len(missing)} of the {len(wanted)} images of "
                           f"sample_submission.csv, e.g. {', '.join(missing[:5])}")
    labels, _ = top_labels(np.asarray(mean_probs)[[index[s] for s in wanted]], classes, original_ids, k=5)
    frame = pd.DataFrame(labels, columns=SUBMISSION_COLUMNS[1:])
    frame.insert(0, "image_id", wanted)
    return frame


def write_submission(frame: pd.DataFrame, path: str | Path) -> None:
    """Write the submission CSV atomically: an interrupted run never leaves half a file behind."""
    write_csv(path, frame)


def write_run_submission(cfg: Config, run_dir: Path) -> Path:
    """The run's own submission: the ensemble rule over its test predictions (trained folds, TTA 0..tta_number)."""
    sample = Path(cfg.data_dir) / "sample_submission.csv"
    if not sample.exists():
        raise PhotoidError(f"no {sample}: the submission needs the competition's sample_submission.csv")
    probs, row_ids, classes, original_ids, _ = load_run_predictions([run_dir], split="test",
                                                                    ttas=range(cfg.tta_number + 1))
    # The shared table reader: a damaged sample file is named with its line, not a pandas traceback.
    problems = ProblemList()
    table = read_table(sample, str(sample), problems, ["image_id"])
    problems.raise_if_any(title="invalid sample submission")
    sample_ids = table["image_id"].tolist()
    frame = make_submission(probs, row_ids, classes, original_ids, sample_ids)
    path = RunDir(run_dir).submission_file
    write_submission(frame, path)
    return path


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,1 — got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative integers such as 0,1 — got {text!r}")
    return values


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (runs/<name>)")
    parser.add_argument("--data_dir", required=True, help="competition folder (sample_submission.csv gives the rows)")
    parser.add_argument("--out", required=True, help="submission CSV to write")
    parser.add_argument("--folds", type=_int_list,
                        help="folds to average, e.g. 0,1 (default: each run's trained folds)")
    parser.add_argument("--tta", type=_int_list,
                        help="TTA indices to average, e.g. 0,1 (default: 0..each run's tta_number)")
    parser.add_argument("--allow_partial", action="store_true",
                        help="average runs whose folds are not all trained or predicted (refused by default: the "
                             "original averaged every fold of every run, 30 predictions)")


def check_runs_complete(run_dirs: Sequence[str], allow_partial: bool) -> None:
    """Refuse runs whose folds are not all predicted (unless `allow_partial`, then say which are missing)."""
    incomplete = [f"{d}: fold(s) {missing} of {RunDir(d).config_values()['n_folds']} have no test predictions"
                  for d in run_dirs if (missing := RunDir(d).missing_folds("test"))]
    if incomplete and not allow_partial:
        raise PhotoidError("some runs are not complete: " + "; ".join(incomplete) + ". Train and predict the "
                           "missing folds, choose folds with --folds, or pass --allow_partial to average what there is")
    for line in incomplete:
        print(f"warning: {line}; averaged without them (--allow_partial)")


def run(args: argparse.Namespace) -> int:
    data = load_turtles(args.data_dir, check_images=False)
    if args.folds is None:
        check_runs_complete(args.run_dirs, args.allow_partial)
    probs, row_ids, classes, original_ids, used = load_run_predictions(args.run_dirs, "test", args.folds, args.tta)
    if set(original_ids) != set(data.original_ids):
        raise PhotoidError(f"the runs' original_ids.txt ({len(original_ids)} ids) differs from the turtle ids of "
                           f"{Path(args.data_dir) / 'train.csv'} ({len(data.original_ids)} ids): the runs were "
                           "trained on other data, so their new_turtle mapping does not fit this folder")
    frame = make_submission(probs, row_ids, classes, original_ids, data.sample_submission["image_id"].tolist())
    write_submission(frame, args.out)
    files_per_run = Counter(fs.as_path(u).parent.parent for u in used)
    per_run = ", ".join(f"{fs.as_path(d).name}: {files_per_run[fs.as_path(d)]}" for d in args.run_dirs)
    n_new = int((frame["prediction1"] == NEW_TURTLE).sum())
    print(f"averaged {len(used)} test prediction files from {len(args.run_dirs)} runs ({per_run})")
    print(f"wrote {len(frame)} rows to {args.out} ({n_new} with {NEW_TURTLE} first)")
    return 0
