"""folds.csv: the fold of every labelled image, in the order the records follow; written and read for every task.

Each task decides its columns (`photoid.turtles.folds.FOLD_COLUMNS`, the whale and generic ones) and how rows are
split; this module writes the table atomically and reads it back with every problem listed at once.
"""

from __future__ import annotations

import os

import pandas as pd

from photoid.core.errors import PhotoidError, ProblemList
from photoid.core.io import write_csv
from photoid.core.tables import read_table, require_columns


def write_fold_table(frame: pd.DataFrame, path: str | os.PathLike, columns: list[str]) -> None:
    """Write the fold table as CSV, atomically, in its row order (the order records follow)."""
    missing = [c for c in columns if c not in frame]
    if missing:
        raise PhotoidError(f"fold table lacks column(s) {', '.join(missing)}")
    write_csv(path, frame[columns])


def read_fold_table(path: str | os.PathLike, columns: list[str], identity: str) -> pd.DataFrame:
    """Read a fold table written by `write_fold_table`, in file order; ValidationError lists every problem.

    Checked: the columns, integer labels and folds, folds numbered 0..k-1 with none empty, unique image ids,
    and one label per individual and one individual per label (`identity`: the task's identity column).
    """
    name = str(path)
    problems = ProblemList()
    frame = read_table(path, name, problems)
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
