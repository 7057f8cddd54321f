"""The original solution's k-fold split of the labelled images, reproduced exactly, and its CSV file.

The split decides which images each fold's model never saw, so out-of-fold scores are only comparable with the
original's (and the original's published weights only valid as fold models) if every image lands in the same
fold. That needs the same rows in the same order, the same labels, the same splitter and the same seeds.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from photoid.tables import read_table, require_columns
from photoid.errors import PhotoidError, ProblemList
from photoid.io import write_csv

FOLD_COLUMNS = ["image_id", "turtle_id", "label", "fold", "image_location", "source"]
# The original's seeds: 33 for the split, 34 for the row order of its records.
DEFAULT_FOLD_SEED = 33
RECORD_ORDER_SEED = 34


def make_folds(labeled: pd.DataFrame, n_folds: int = 5, seed: int = DEFAULT_FOLD_SEED,
               columns: list[str] = FOLD_COLUMNS) -> pd.DataFrame:
    """Assign every labelled image a validation fold, as the original's `create_cv_split` did.

    `labeled` is `TurtleData.labeled`: train rows then extra rows with a fresh index, which is the order the
    original handed to the splitter (StratifiedKFold's result depends on row order, not just on labels).

    1. `StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(rows, label)`: stratified on the label
       so each turtle's images spread over the folds; fold f is the f-th validation part.
    2. The whole frame is then shuffled with `sample(frac=1.0, random_state=34)`, as the original did before
       writing records. The returned rows keep that order: a fold's records, and its out-of-fold predictions,
       follow the order of that fold's rows here, so predictions line up with `label` row for row.

    Turtles with fewer images than folds are allowed (the real data has many): they are simply absent from
    some validation folds. sklearn warns once per split about them; that warning is replaced by one summary.

    `columns` are the fold table's (another task's labelled rows keep their own, e.g. `identity`).
    """
    missing = [c for c in columns if c != "fold" and c not in labeled]
    if missing:
        raise PhotoidError(f"labelled table lacks column(s) {', '.join(missing)}")
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise PhotoidError(f"n_folds must be an integer of at least 2, got {n_folds!r}")
    if n_folds > len(labeled):
        raise PhotoidError(f"n_folds={n_folds} is more than the {len(labeled)} labelled images: "
                           "every fold needs at least one image")
    rows = labeled.reset_index(drop=True)
    labels = rows["label"].to_numpy()
    images_per_id = rows["label"].value_counts()
    sparse_ids = int((images_per_id < n_folds).sum())

    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold = np.full(len(rows), -1, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        try:
            for fold_id, (_, validation_rows) in enumerate(splitter.split(rows, labels)):
                fold[validation_rows] = fold_id
        except ValueError as err:
            raise PhotoidError(f"cannot split {len(rows)} images into {n_folds} stratified folds: {err}") from err
    if sparse_ids:
        warnings.warn(f"{sparse_ids} of {len(images_per_id)} ids have fewer images than the {n_folds} folds; "
                      "they are absent from some validation folds (allowed, as in the original)",
                      UserWarning, stacklevel=2)
    sizes = np.bincount(fold, minlength=n_folds)
    if (sizes == 0).any():
        raise PhotoidError(f"fold(s) {', '.join(map(str, np.flatnonzero(sizes == 0)))} would be empty; "
                           "use fewer folds or more images")

    rows = rows.assign(fold=fold)[columns]
    return rows.sample(frac=1.0, random_state=RECORD_ORDER_SEED).reset_index(drop=True)


def write_folds(frame: pd.DataFrame, path: str | os.PathLike, columns: list[str] = FOLD_COLUMNS) -> None:
    """Write the fold table as CSV, atomically, in its row order (the order records follow)."""
    missing = [c for c in columns if c not in frame]
    if missing:
        raise PhotoidError(f"fold table lacks column(s) {', '.join(missing)}")
    write_csv(path, frame[columns])


def read_folds(path: str | os.PathLike, columns: list[str] = FOLD_COLUMNS, identity: str = "turtle_id"
               ) -> pd.DataFrame:
    """Read a fold table written by `write_folds`, in file order; ValidationError lists every problem.

    Checked: the columns, integer labels and folds, folds numbered 0..k-1 with none empty, unique image ids,
    and one label per turtle id and one turtle id per label (`identity`: another task's identity column).
    """
    name = str(path)
    problems = ProblemList()
    frame = read_table(Path(path), name, problems)
    if frame is not None and require_columns(frame, name, columns, problems):
        _check_fold_rows(frame, name, problems, identity)
    problems.raise_if_any(title="invalid fold file")
    frame = frame.reset_index(drop=True)
    frame["label"] = frame["label"].astype("int64")
    frame["fold"] = frame["fold"].astype("int64")
    return frame[columns]


def _check_fold_rows(frame: pd.DataFrame, name: str, problems: ProblemList, identity: str) -> None:
    for column in ("label", "fold"):
        for line, value in frame[column].items():
            if not (value.isascii() and value.isdigit()):
                problems.add(name, line, f"{column} {value!r} is not a non-negative integer")
    if len(problems):
        return
    folds = frame["fold"].astype(int)
    n_folds = int(folds.max()) + 1
    empty = sorted(set(range(n_folds)) - set(folds))
    if empty:
        problems.add(name, None, f"fold(s) {', '.join(map(str, empty))} have no rows (folds must be 0..{n_folds - 1})")
    first_line: dict[str, int] = {}
    for line, value in frame["image_id"].items():
        if value in first_line:
            problems.add(name, line, f"duplicate image_id {value!r} (first on line {first_line[value]})")
        first_line.setdefault(value, line)
    for key, other in ((identity, "label"), ("label", identity)):
        counts = frame.groupby(key)[other].nunique()
        for value in counts.index[counts > 1]:
            problems.add(name, None, f"{key} {value!r} has several {other}s: "
                                     f"{', '.join(sorted(frame.loc[frame[key] == value, other].unique()))}")
