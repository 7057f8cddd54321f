"""Read and validate a Where's Whale-do folder; make encounter-grouped folds.

The folder holds `metadata.csv` (`image_id,path,height,width,viewpoint,date,timestamp,whale_id,encounter_id`),
the images under the relative paths it names and, optionally, `query_scenarios.csv` naming each scenario's
queries file (`query_id,query_image_id`) and database file (`database_image_id`). Test-time folders may lack the
label columns `whale_id` and `encounter_id`; training needs them.

Every problem is collected and raised at once (file, CSV line with the header as line 1, reason), so one run
shows everything to fix.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from photoid.core.errors import PhotoidError, ProblemList
from photoid.core.images import check_image_file
from photoid.core.tables import (
    check_ids,
    check_known,
    check_unique,
    read_table,
    relative_path_problem,
)
from photoid.records.folder import VIEWPOINTS

METADATA_FILE = "metadata.csv"
SCENARIOS_FILE = "query_scenarios.csv"
METADATA_COLUMNS = ("image_id", "path", "height", "width", "viewpoint", "date", "timestamp", "whale_id",
                    "encounter_id")
# Ranking needs only these; the others are checked when present (test-time metadata has no labels).
REQUIRED_COLUMNS = ("image_id", "path", "viewpoint")
LABEL_COLUMNS = ("whale_id", "encounter_id")
SCENARIO_COLUMNS = ("scenario_id", "queries_path", "database_path")
QUERY_COLUMNS = ("query_id", "query_image_id")
DATABASE_COLUMNS = ("database_image_id",)
TRUTH_COLUMNS = ("query_id", "database_image_id")


class Scenario(NamedTuple):
    """One evaluation scenario: its queries (`query_id, query_image_id`) and database (`database_image_id`)."""

    scenario_id: str
    queries: pd.DataFrame
    database: pd.DataFrame


@dataclass
class BelugaData:
    """A validated Where's Whale-do folder. `classes` are the sorted whale ids (label i = `classes[i]`, as
    sklearn's LabelEncoder numbers them); empty when the metadata has no `whale_id` column."""

    root: Path
    metadata: pd.DataFrame
    scenarios: list[Scenario] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)

    @property
    def has_labels(self) -> bool:
        return "whale_id" in self.metadata.columns

    @cached_property
    def _relative_paths(self) -> dict[str, str]:
        return dict(zip(self.metadata["image_id"], self.metadata["path"]))

    def image_path(self, image_id: str) -> Path:
        try:
            return self.root / self._relative_paths[image_id]
        except KeyError:
            raise KeyError(f"no image {image_id!r} in {self.root / METADATA_FILE}") from None

    def labels(self) -> np.ndarray:
        """The class index of every metadata row."""
        if not self.has_labels:
            raise PhotoidError(f"{self.root / METADATA_FILE} has no whale_id column: these images are unlabelled")
        return pd.Index(self.classes).get_indexer(self.metadata["whale_id"])


def load_belugas(data_dir: str | Path, check_images: bool = True) -> BelugaData:
    """Read `metadata.csv` and the scenarios of `data_dir`; ValidationError listing every problem found."""
    root = Path(data_dir)
    problems = ProblemList()
    if not root.is_dir():
        raise PhotoidError(f"{root} is not a folder")
    metadata = _read_metadata(root / METADATA_FILE, problems)
    scenarios: list[Scenario] = []
    if metadata is not None:
        if check_images:
            _check_images(root, metadata, problems)
        if (root / SCENARIOS_FILE).exists():
            scenarios = _read_scenarios(root, set(metadata["image_id"]), problems)
    problems.raise_if_any(title=f"invalid Where's Whale-do folder {root}")
    metadata = metadata.reset_index(drop=True)
    classes = sorted(metadata["whale_id"].unique()) if "whale_id" in metadata.columns else []
    return BelugaData(root=root, metadata=metadata, scenarios=scenarios, classes=classes)


def load_truth(path: str | Path) -> pd.DataFrame:
    """The true matches `query_id, database_image_id` (every database image of the query's whale)."""
    problems = ProblemList()
    frame = read_csv_checked(Path(path), TRUTH_COLUMNS, problems)
    if frame is not None:
        # Only emptiness is refused: these ids are compared, never used as file names.
        for column in TRUTH_COLUMNS:
            for line, value in frame[column][frame[column] == ""].items():
                problems.add(str(path), line, f"{column} is empty")
    problems.raise_if_any(title="invalid ground truth")
    return frame[list(TRUTH_COLUMNS)].reset_index(drop=True)


def make_whale_folds(metadata: pd.DataFrame, n_folds: int, seed: int = 42, grouped: bool = True,
                     identity: str = "whale_id", group: str = "encounter_id") -> np.ndarray:
    """The validation fold (0..n_folds-1) of every metadata row, stratified on the whale.

    grouped: StratifiedGroupKFold with the encounter as group, so no encounter (same whale, same day, same light)
    is on both sides of a split: an honest estimate for new encounters. Otherwise the winner's
    StratifiedKFold(n_folds, shuffle=True, random_state=seed), where one encounter's near-duplicate photos may
    sit in training and validation at once. `identity` and `group` name those columns (another task's table).
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if identity not in metadata.columns:
        raise PhotoidError(f"folds need labels, and the metadata has no {identity} column")
    if grouped and group not in metadata.columns:
        raise PhotoidError(f"encounter-grouped folds need the metadata's {group} column")
    n_groups = metadata[group].nunique() if grouped else len(metadata)
    if not 2 <= n_folds <= n_groups:
        unit = "encounters" if grouped else "images"
        raise PhotoidError(f"n_folds must be between 2 and the number of {unit} ({n_groups}), got {n_folds}")
    y = pd.Index(sorted(metadata[identity].unique())).get_indexer(metadata[identity])
    folds = np.full(len(metadata), -1, dtype=np.int64)
    with warnings.catch_warnings():
        # Whales with fewer images than folds are expected (median 3 images per whale); sklearn warns about them.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        if grouped:
            splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
            splits = splitter.split(np.zeros(len(y)), y, groups=metadata[group].to_numpy())
        else:
            splits = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)
        try:
            for fold, (_, valid) in enumerate(splits):
                folds[valid] = fold
        except ValueError as err:   # e.g. more folds than any whale has images
            raise PhotoidError(f"cannot make {n_folds} folds of these {len(metadata)} images: {err}") from None
    return folds


def read_csv_checked(path: Path, columns: tuple[str, ...], problems: ProblemList) -> pd.DataFrame | None:
    """A table of the folder read as text and indexed by CSV line (`photoid.core.tables.read_table`), or None with the
    reason recorded; a header without rows is allowed (e.g. an empty database)."""
    return read_table(path, str(path), problems, columns, allow_no_rows=True)


def read_metadata(path: str | Path, required: tuple[str, ...] = REQUIRED_COLUMNS) -> pd.DataFrame:
    """`metadata.csv` alone, validated (ids, paths, viewpoints, sizes, dates, labels); images are not read."""
    problems = ProblemList()
    frame = _read_metadata(Path(path), problems, required)
    problems.raise_if_any(title=f"invalid metadata {path}")
    return frame.reset_index(drop=True)


def _read_metadata(path: Path, problems: ProblemList,
                   required: tuple[str, ...] = REQUIRED_COLUMNS) -> pd.DataFrame | None:
    frame = read_csv_checked(path, required, problems)
    if frame is None:
        return None
    file = str(path)
    check_ids(frame, file, "image_id", problems, unique=True)
    for line, value in frame["path"].items():
        reason = relative_path_problem(value)
        if reason:
            problems.add(file, line, f"path {value!r} {reason}")
    check_unique(frame["path"], file, "path", problems)
    viewpoints = frame["viewpoint"].str.strip().str.lower()   # "Top" and " top" are read as "top"
    for line, value in frame["viewpoint"][~viewpoints.isin(VIEWPOINTS)].items():
        problems.add(file, line, f"unknown viewpoint {value!r}; expected one of {', '.join(VIEWPOINTS)}")
    frame["viewpoint"] = viewpoints
    for column in ("height", "width"):
        if column in frame.columns:
            numbers = pd.to_numeric(frame[column], errors="coerce")
            valid = numbers.notna() & (numbers > 0) & (numbers == numbers.round())
            for line, value in frame[column][~valid].items():
                problems.add(file, line, f"{column} {value!r} is not a positive integer")
            if valid.all():
                frame[column] = numbers.astype(np.int64)
    for column, fmt in (("date", "%Y-%m-%d"), ("timestamp", "%Y-%m-%d %H:%M:%S")):
        if column in frame.columns:
            parsed = pd.to_datetime(frame[column], format=fmt, errors="coerce")
            for line, value in frame[column][parsed.isna()].items():
                problems.add(file, line, f"{column} {value!r} is not a {fmt.replace('%', '')} value")
    for column in LABEL_COLUMNS:
        if column in frame.columns:
            check_ids(frame, file, column, problems, unique=False)
    if set(LABEL_COLUMNS) <= set(frame.columns):
        whales_per_encounter = frame.groupby("encounter_id")["whale_id"].nunique()
        for encounter in whales_per_encounter.index[whales_per_encounter > 1]:
            lines = [line for line, value in frame["encounter_id"].items() if value == encounter]
            problems.add(file, lines[0], f"encounter {encounter!r} holds several whales (lines "
                                         f"{', '.join(map(str, lines[:10]))}); an encounter is one whale")
    return frame


def _check_images(root: Path, metadata: pd.DataFrame, problems: ProblemList) -> None:
    file = str(root / METADATA_FILE)
    for line, value in metadata["path"].items():
        if relative_path_problem(value) is None:
            reason = check_image_file(root / value)
            if reason:
                problems.add(file, line, f"image {value}: {reason}")


def _read_scenarios(root: Path, image_ids: set[str], problems: ProblemList) -> list[Scenario]:
    index_file = root / SCENARIOS_FILE
    index = read_csv_checked(index_file, SCENARIO_COLUMNS, problems)
    if index is None:
        return []
    check_ids(index, str(index_file), "scenario_id", problems, unique=True)
    scenarios: list[Scenario] = []
    query_lines: dict[str, str] = {}
    for line, row in zip(index.index, index.itertuples(index=False)):
        frames = []
        for column, columns in (("queries_path", QUERY_COLUMNS), ("database_path", DATABASE_COLUMNS)):
            relative = getattr(row, column)
            reason = relative_path_problem(relative)
            if reason:
                problems.add(str(index_file), line, f"{column} {relative!r} {reason}")
                frames.append(None)
                continue
            frames.append(read_csv_checked(root / relative, columns, problems))
        queries, database = frames
        if queries is not None:
            file = str(root / row.queries_path)
            check_ids(queries, file, "query_id", problems, unique=True)
            for line_q, value in queries["query_id"].items():
                if value in query_lines:
                    problems.add(file, line_q, f"query_id {value!r} is also used in {query_lines[value]}: "
                                               "query ids must be unique across scenarios")
                query_lines[value] = f"{file} line {line_q}"
            check_known(queries["query_image_id"], image_ids, file, "query_image_id", METADATA_FILE, problems)
        if database is not None:
            file = str(root / row.database_path)
            check_unique(database["database_image_id"], file, "database_image_id", problems)
            check_known(database["database_image_id"], image_ids, file, "database_image_id", METADATA_FILE, problems)
        if queries is not None and database is not None:
            scenarios.append(Scenario(row.scenario_id, queries[list(QUERY_COLUMNS)].reset_index(drop=True),
                                      database[list(DATABASE_COLUMNS)].reset_index(drop=True)))
    return scenarios
