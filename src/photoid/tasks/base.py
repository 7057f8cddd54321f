"""What a task is (`Task`) and the helpers its implementations share; the registry is `photoid.tasks`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from photoid.core.errors import PhotoidError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from photoid.runs.config import Config


class Task(Protocol):
    """What every task defines (`photoid/turtles/task.py`, `photoid/whales/task.py`, `photoid/generic/task.py`)."""

    name: str
    identity_column: str  # the individual's column in folds.csv and in the records
    new_label: str  # the label for an individual outside the label space (identify, catalogue, export, serve)
    records_dataset: str  # the "dataset" its records' records.json names
    records_command: str  # the `photoid` command that builds its records (named in messages)
    leaderboard_labels: bool  # CV scores add Turtle Recall's MAP@5 over train.csv's ids + new_turtle
    submits: bool  # the `subm` job writes a competition submission
    takes_image_inverted: bool  # the Turtle Recall original's `image_inverted` option applies
    ranks_scenarios: bool  # `photoid embed` / `rank` apply (query scenarios of a Where's Whale-do folder)
    record_options: dict[str, Any]  # `photoid records` options it takes, with their defaults

    def detect(self, data_dir: Path) -> bool:
        """Whether `data_dir` is laid out as this task's folder (its files only; nothing is validated)."""

    def build_records(self, data_dir: str | os.PathLike, out_dir: str | None, **options) -> dict:
        """Validate the folder and write folds.csv and the records (nothing is written when it is invalid)."""

    def read_folds(self, path: str | os.PathLike) -> pd.DataFrame:
        """A folds.csv its records builder wrote, validated."""

    def label_space(self, folds: pd.DataFrame, records_dir: str | None = None) -> tuple[list[str], list[str]]:
        """(classes in label order, the ids a prediction may name; others read `new_label`). `records_dir`: the
        records the folds belong to, whose records.json may list a wider label space (`RecordsDir.classes`)."""

    def check_training(self, cfg: Config, folds: pd.DataFrame) -> Config:
        """Refuse records that cannot train this recipe; the configuration to train with."""

    def score_test(self, cfg: Config, run_dir: Path) -> dict | None:
        """Scores of the run's test predictions where the folder holds their truth (None: scored elsewhere)."""

    def write_run_submission(self, cfg: Config, run_dir: Path) -> Path:
        """The run's own competition submission from its test predictions (tasks whose `submits` is true)."""

    def folder_label_space(self, data_dir: str | os.PathLike) -> tuple[list[str], list[str]]:
        """(classes in label order, the nameable ids) of a data folder read without records (a whole-model
        weights file, such as the original's published one, names these classes)."""

    def leaderboard_truth(self, data_dir: str | os.PathLike) -> tuple[list[str], np.ndarray, list[str]]:
        """(test image ids, their true labels over the leaderboard's labels, their photos) for tasks whose
        `leaderboard_labels` is true (`photoid calibrate --evaluate`)."""

    def labelled_photos(self, data_dir: str | os.PathLike, check_images: bool = True) -> pd.DataFrame:
        """Every labelled photo: `individual_id, image_id, source, path` (absolute)[, `viewpoint` where the folder
        has one], in the folder's order (catalogues hold them; the first of each individual is its reference photo
        in galleries)."""


def label_space(folds: pd.DataFrame, column: str) -> list[str]:
    """The classes of a fold table in label order, refusing labels that are not the sorted order of the ids."""
    if column not in folds.columns:
        raise PhotoidError(f"folds.csv has no {column} column: the records were built for another task")
    pairs = folds[[column, "label"]].drop_duplicates().sort_values("label")
    classes = pairs[column].astype(str).tolist()
    if pairs["label"].tolist() != list(range(len(classes))) or classes != sorted(classes):
        raise PhotoidError("folds.csv: labels are not the sorted order of the ids; rebuild the records")
    return classes


def first_photo_of_each(photos: pd.DataFrame) -> dict[str, Path]:
    """The first listed photo of every individual of a `labelled_photos` table (reference photos)."""
    references: dict[str, Path] = {}
    for individual, path in zip(photos["individual_id"], photos["path"]):
        references.setdefault(individual, Path(path))
    return references


def csv_header(path: Path) -> list[str]:
    """The column names on a CSV's first line ([] when it cannot be read): enough to recognise a layout."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            line = f.readline()
    except OSError:
        return []
    return [name.strip().strip('"') for name in line.strip().split(",")]
