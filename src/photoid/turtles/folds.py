"""The Turtle Recall original's k-fold split of the labelled images, reproduced exactly, and its fold table.

The split decides which images each fold's model never saw, so out-of-fold scores are only comparable with the
original's (and the original's published weights only valid as fold models) if every image lands in the same
fold. That needs the same rows in the same order, the same labels, the same splitter and the same seeds.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from photoid.core.errors import PhotoidError
from photoid.records.folds import read_fold_table, write_fold_table

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
    """Write the Turtle Recall fold table (`photoid.records.folds.write_fold_table`)."""
    write_fold_table(frame, path, columns)


def read_folds(path: str | os.PathLike, columns: list[str] = FOLD_COLUMNS, identity: str = "turtle_id"
               ) -> pd.DataFrame:
    """Read and check a Turtle Recall fold table (`photoid.records.folds.read_fold_table`)."""
    return read_fold_table(path, columns, identity)
