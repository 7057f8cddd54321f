"""The generic folder, for any species: `metadata.csv` (`image_id,path,identity[,viewpoint,date,encounter,split]`).

    image_id   unique, safe id (a plain file name: no path separator, no '..', no control character)
    path       the photo, relative to the folder, forward slashes, inside it; .jpg .jpeg .png .bmp .tif .tiff .webp
    identity   the individual; required for train rows, may be empty for test rows (an unknown individual)
    viewpoint  free text (top, left, ...) or empty         date  YYYY-MM-DD or empty
    encounter  photos of one sighting (same individual, same day) or empty
    split      train or test (empty: train)

Folds split the train rows in file order: stratified by identity with the Turtle Recall rule
(`photoid.turtles.folds.make_folds`: StratifiedKFold(shuffle, seed) then the row shuffle with seed 34), or, when any train
row names an encounter, grouped by encounter with the Where's Whale-do rule (`make_whale_folds`: no encounter on
both sides of a split; a row without an encounter is a group of its own). Labels are the sorted identities of the
train rows, every one nameable; anything else is `new_individual`. Test rows become the `test` records, labelled
with their identity's class (-1: empty, or an individual outside train).

Photos are stored compact by default (decoded by Pillow, so any of the formats above); the exact and original
layouts read JPEGs only, and are refused before anything is written when the folder holds other formats.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from photoid.core.errors import PhotoidError, ProblemList
from photoid.core.labels import NEW_INDIVIDUAL, NEW_TURTLE

METADATA_FILE = "metadata.csv"
REQUIRED_COLUMNS = ("image_id", "path", "identity")
OPTIONAL_COLUMNS = ("viewpoint", "date", "encounter", "split")
SPLITS = ("train", "test")
FOLD_COLUMNS = ["image_id", "identity", "label", "fold", "viewpoint", "encounter"]
STRING_COLUMNS = ("image_id", "identity", "viewpoint", "encounter")
INT_COLUMNS = ("label",)
DEFAULT_SEED = 33  # the Turtle Recall rule's StratifiedKFold random_state
DEFAULT_LAYOUT = "compact"  # any photo format; exact and original read JPEGs only

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True, eq=False)
class GenericData:
    """A validated generic folder. `table` holds every row in file order with all optional columns ("" where
    absent, split "train" where empty) and a fresh index; `classes` are the sorted identities of the train rows."""

    root: Path
    table: pd.DataFrame
    classes: list[str]

    @property
    def train(self):
        return self.table[self.table["split"] == "train"].reset_index(drop=True)

    @property
    def test(self):
        return self.table[self.table["split"] == "test"].reset_index(drop=True)

    @cached_property
    def _paths(self) -> dict[str, str]:
        return dict(zip(self.table["image_id"], self.table["path"]))

    def image_path(self, image_id: str) -> Path:
        return self.root / self._paths[image_id]


def load_generic(data_dir: str | os.PathLike, check_images: bool = True,
                 metadata: str | os.PathLike | None = None) -> GenericData:
    """Read and validate a generic folder; ValidationError lists every problem (file, line, reason) at once.
    `metadata` reads the table from another file of the folder (an importer checks its table before naming it)."""
    from photoid.core.images import PHOTO_SUFFIXES, check_photo_file
    from photoid.core.tables import (
        check_ids,
        check_unique,
        is_iso_date,
        read_table,
        relative_path_problem,
        text_problem,
    )

    root = Path(data_dir)
    if not root.is_dir():
        raise PhotoidError(f"data folder {root} does not exist or is not a folder")
    path = root / METADATA_FILE if metadata is None else Path(metadata)
    file = str(path)
    problems = ProblemList()
    frame = read_table(path, file, problems, REQUIRED_COLUMNS)
    if frame is None:
        problems.raise_if_any(title=f"invalid generic folder {root}")
    expected = [*REQUIRED_COLUMNS, *(c for c in OPTIONAL_COLUMNS if c in frame.columns)]
    unknown = [c for c in frame.columns if c not in expected]
    if unknown or list(frame.columns) != expected:
        problems.add(file, 1, f"the header is {','.join(frame.columns)}; a generic metadata.csv has "
                              f"{','.join(REQUIRED_COLUMNS)} then any of {','.join(OPTIONAL_COLUMNS)}, in this order"
                              + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    for column in OPTIONAL_COLUMNS:
        if column not in frame.columns:
            frame[column] = ""
    frame.loc[frame["split"] == "", "split"] = "train"
    for line, value in frame["split"].items():
        if value not in SPLITS:
            problems.add(file, line, f"split {value!r} is not train, test or empty")
    is_test = frame["split"] == "test"

    check_ids(frame, file, "image_id", problems, unique=True)
    usable_paths = []  # (line, path) of the well-formed paths: only their files are checked
    for line, value in frame["path"].items():
        reason = relative_path_problem(value)
        if reason is None and "\\" in value:
            reason = "contains '\\'; paths use forward slashes"
        if reason is None and Path(value).suffix.lower() not in PHOTO_SUFFIXES:
            reason = f"does not end in a photo extension ({' '.join(PHOTO_SUFFIXES)}, any letter case)"
        if reason:
            problems.add(file, line, f"path {value!r} {reason}")
        else:
            usable_paths.append((line, value))
    check_unique(frame["path"], file, "path", problems)
    for line, value in frame["identity"].items():
        if value == "" and is_test[line]:
            continue  # an unknown individual
        reason = text_problem(value)
        if reason is None and value in (NEW_INDIVIDUAL, NEW_TURTLE):
            reason = "is reserved for individuals outside the catalogue"
        if reason:
            problems.add(file, line, f"identity {value!r} {reason}" + (" (train rows need one)" if value == "" else ""))
    for column in ("viewpoint", "encounter"):
        check_ids(frame, file, column, problems, file_safe=False, allow_empty=True)
    for line, value in frame["date"].items():
        if value and not is_iso_date(value):
            problems.add(file, line, f"date {value!r} is not a YYYY-MM-DD date (or empty)")
    named = frame[(frame["encounter"] != "") & ~is_test]
    identities = named.groupby("encounter")["identity"].nunique()
    for encounter in identities.index[identities > 1]:
        lines = named.index[named["encounter"] == encounter].tolist()
        problems.add(file, lines[0], f"encounter {encounter!r} holds several identities (lines "
                                     f"{', '.join(map(str, lines[:10]))}); an encounter is one individual")
    if not (~is_test).any():
        problems.add(file, None, "has no train rows (split train or empty): there is nothing to learn from")
    if check_images:
        for line, value in usable_paths:
            reason = check_photo_file(root / value)
            if reason:
                problems.add(file, line, f"image {value}: {reason}")
    problems.items.sort(key=lambda p: p.line or 0)  # line by line, the way a user goes through them
    problems.raise_if_any(title=f"invalid generic folder {root}")
    table = frame[[*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS]].reset_index(drop=True)
    classes = sorted(table.loc[table["split"] == "train", "identity"].unique())
    return GenericData(root=root, table=table, classes=classes)


def generic_folds(data: GenericData, n_folds: int, seed: int = DEFAULT_SEED):
    """folds.csv's rows: the train rows with their label and validation fold (rules in the module's docstring)."""
    import numpy as np
    import pandas as pd

    from photoid.turtles.folds import make_folds
    from photoid.whales.data import make_whale_folds

    train = data.train.assign(label=lambda f: pd.Index(data.classes).get_indexer(f["identity"]))
    if (train["encounter"] != "").any():
        # A row without an encounter is its own group; "\0" cannot start an encounter (control characters are refused).
        groups = train["encounter"].where(train["encounter"] != "", "\0" + train["image_id"])
        folds = make_whale_folds(train.assign(group=groups), n_folds, seed=seed, identity="identity", group="group")
        sizes = np.bincount(folds, minlength=n_folds)
        if (sizes == 0).any():
            raise PhotoidError(f"fold(s) {', '.join(map(str, np.flatnonzero(sizes == 0)))} would be empty: use "
                               "fewer folds")
        return train.assign(fold=folds)[FOLD_COLUMNS]
    return make_folds(train, n_folds=n_folds, seed=seed, columns=FOLD_COLUMNS)


def build_generic_records(data_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, n_folds: int = 5,
                          dim_pre: int = 512, layout: str = DEFAULT_LAYOUT, shards: int = 1,
                          workers: int | None = None, seed: int = DEFAULT_SEED, force: bool = False) -> dict:
    """Validate a generic folder, then write folds.csv, one record set per fold and the test records (if any).

    Nothing is written when validation or the fold split fails. `out_dir` defaults to DATA_DIR/tfrec.
    """
    from photoid.core.images import JPEG_MAGIC
    from photoid.records.folds import write_fold_table
    from photoid.records.folder import FOLDS_CSV
    from photoid.records.writer import RecordsManifest, image_preparer, write_records

    started = time.perf_counter()
    data = load_generic(data_dir, check_images=True)
    folds = generic_folds(data, n_folds, seed)
    if layout != "compact":
        for image_id in data.table["image_id"]:
            with open(data.image_path(image_id), "rb") as f:
                if f.read(3) != JPEG_MAGIC:
                    raise PhotoidError(f"{data.image_path(image_id)} is not a JPEG: the {layout} layout reads JPEGs "
                                       "only; use --layout compact (the default for generic folders)")
    out_dir = os.path.join(str(data_dir), "tfrec") if out_dir is None else str(out_dir)
    settings = {"dataset": "generic", "n_folds": n_folds, "seed": seed, "dim_pre": dim_pre, "layout": layout,
                "shards": shards, "grouped": bool((data.train["encounter"] != "").any()),
                "has_test": not data.test.empty}
    manifest = RecordsManifest.open(out_dir, settings, force=force)
    write_fold_table(folds, os.path.join(out_dir, FOLDS_CSV), FOLD_COLUMNS)
    parts = {f"fold.{k}": folds[folds["fold"] == k] for k in range(n_folds)}
    test = data.test
    if not test.empty:
        classes = {c: i for i, c in enumerate(data.classes)}
        parts["test"] = test.assign(label=[classes.get(i, -1) for i in test["identity"]])
    results = {}
    with image_preparer(1 if layout == "original" else workers, threads=layout == "exact") as preparer:
        for name, rows in parts.items():
            results[name] = write_records(
                rows, [data.image_path(i) for i in rows["image_id"]], os.path.join(out_dir, f"{name}.tfrecord"),
                string_columns=STRING_COLUMNS, int_columns=INT_COLUMNS, dim_pre=dim_pre, layout=layout,
                manifest=manifest, shards=shards, preparer=preparer)
    return {
        "out_dir": out_dir,
        "n_classes": len(data.classes),
        "fold_rows": [results[f"fold.{k}"]["rows"] for k in range(n_folds)],
        "test_rows": results["test"]["rows"] if "test" in results else 0,
        "shards_written": sum(r["written"] for r in results.values()),
        "shards_kept": sum(r["kept"] for r in results.values()),
        "images_written": sum(r["images_written"] for r in results.values()),
        "seconds": round(time.perf_counter() - started, 2),
    }
