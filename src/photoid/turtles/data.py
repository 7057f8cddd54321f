"""Load and validate a Turtle Recall folder: the four competition CSVs and `images/<image_id>.JPG`.

Every problem in the folder is collected and reported at once (file, CSV line, reason), so a user fixes a
broken download in one pass. Labels follow the original solution exactly: train rows then extra rows, turtle
ids encoded in sorted order (what sklearn's `LabelEncoder` does), so label *i* names the same turtle as in the
original code and its published weights. Loading never writes anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from photoid.core.errors import PhotoidError, ProblemList
from photoid.core.images import DEFAULT_MAX_PIXELS, check_image_file

# The submission's label for a turtle outside train.csv: a known turtle under that name would be ambiguous.
from photoid.core.labels import NEW_TURTLE
from photoid.core.tables import check_ids, check_unique, image_id_problem, read_table

TRAIN_CSV = "train.csv"
EXTRA_CSV = "extra_images.csv"
TEST_CSV = "test.csv"
SAMPLE_SUBMISSION_CSV = "sample_submission.csv"
TEST_LABELS_CSV = "test_labels.csv"
IMAGES_DIR = "images"
IMAGE_SUFFIX = ".JPG"
IMAGE_LOCATIONS = ("top", "left", "right")
# extra_images.csv has no location column; the original set every extra image to "top".
EXTRA_IMAGE_LOCATION = "top"
PREDICTION_COLUMNS = [f"prediction{rank}" for rank in range(1, 6)]
LABELED_COLUMNS = ["image_id", "image_location", "turtle_id", "label", "source"]


@dataclass(frozen=True, eq=False)
class TurtleData:
    """A validated Turtle Recall folder. Frames hold strings and a fresh index; blank CSV lines are dropped.

    `labeled` is train then extra (the original's concatenation order, which the folds depend on), with
    lower-cased locations, `label` indexing `classes` and `source` saying which file each row came from.
    """

    data_dir: Path
    train: pd.DataFrame
    extra: pd.DataFrame
    test: pd.DataFrame
    sample_submission: pd.DataFrame
    labeled: pd.DataFrame
    classes: list[str]
    original_ids: list[str]

    def image_path(self, image_id: str) -> str:
        return str(self.data_dir / IMAGES_DIR / f"{image_id}{IMAGE_SUFFIX}")


def _valid_locations(frame: pd.DataFrame, name: str, problems: ProblemList) -> None:
    for line, value in frame["image_location"].items():
        if value.lower() not in IMAGE_LOCATIONS:
            problems.add(name, line, f"image_location {value!r} is not one of {', '.join(IMAGE_LOCATIONS)} "
                                     "(any letter case)")


def _read_checked(data_dir: Path, name: str, columns: list[str], problems: ProblemList) -> pd.DataFrame | None:
    """Read one CSV and check what concerns it alone: columns, ids, locations, repeats."""
    frame = read_table(data_dir / name, name, problems, columns)
    if frame is None:
        return None
    check_ids(frame, name, "image_id", problems)
    if "turtle_id" in columns:
        check_ids(frame, name, "turtle_id", problems, file_safe=False)
        if name != TEST_LABELS_CSV:
            for line in frame.index[frame["turtle_id"] == NEW_TURTLE]:
                problems.add(name, line, f"turtle_id {NEW_TURTLE!r} is reserved for unknown turtles in submissions")
    if "image_location" in columns:
        _valid_locations(frame, name, problems)
    check_unique(frame["image_id"], name, "image_id", problems)
    return frame


def _check_across_files(frames: dict[str, pd.DataFrame | None], problems: ProblemList) -> None:
    """Ids shared between files: train/extra overlap, test ids that are labelled, submission vs test."""
    train, extra = frames[TRAIN_CSV], frames[EXTRA_CSV]
    test, sample = frames[TEST_CSV], frames[SAMPLE_SUBMISSION_CSV]
    labeled_lines: dict[str, str] = {}
    for name, frame in ((TRAIN_CSV, train), (EXTRA_CSV, extra)):
        if frame is None:
            continue
        for line, value in frame["image_id"].drop_duplicates().items():
            if value in labeled_lines:
                problems.add(name, line, f"image_id {value!r} is also in {labeled_lines[value]}")
            else:
                labeled_lines[value] = f"{name} line {line}"
    if test is not None:
        for line, value in test["image_id"].drop_duplicates().items():
            if value in labeled_lines:
                problems.add(TEST_CSV, line, f"test image_id {value!r} is also a labelled image "
                                             f"({labeled_lines[value]})")
    if test is None or sample is None:
        return
    test_ids, sample_ids = set(test["image_id"]), set(sample["image_id"])
    for line, value in sample["image_id"].drop_duplicates().items():
        if value not in test_ids:
            problems.add(SAMPLE_SUBMISSION_CSV, line, f"image_id {value!r} is not in {TEST_CSV}")
    for line, value in test["image_id"].drop_duplicates().items():
        if value not in sample_ids:
            problems.add(TEST_CSV, line, f"image_id {value!r} is missing from {SAMPLE_SUBMISSION_CSV}")


def _check_images(data_dir: Path, frames: dict[str, pd.DataFrame | None], problems: ProblemList,
                  max_pixels: int) -> None:
    """Check `images/<id>.JPG` of every well-formed id once; a missing folder is one problem, not thousands."""
    images = data_dir / IMAGES_DIR
    if not images.is_dir():
        problems.add(f"{IMAGES_DIR}/", None, "image folder is missing")
        return
    seen: set[str] = set()
    for name, frame in frames.items():
        if frame is None or name == SAMPLE_SUBMISSION_CSV:
            continue
        for line, image_id in frame["image_id"].items():
            if image_id in seen or image_id_problem(image_id):
                continue
            seen.add(image_id)
            path = images / f"{image_id}{IMAGE_SUFFIX}"
            reason = check_image_file(path, max_pixels=max_pixels)
            if reason == "file is missing" and (images / f"{image_id}.jpg").is_file():
                reason += f" (found {image_id}.jpg: image files must end in {IMAGE_SUFFIX}, upper case)"
            if reason:
                problems.add(name, line, f"image {IMAGES_DIR}/{path.name}: {reason}")


def _data_dir(data_dir: str | os.PathLike) -> Path:
    path = Path(data_dir)
    if not path.is_dir():
        raise PhotoidError(f"data folder {path} does not exist or is not a folder")
    return path


def _fresh(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.reset_index(drop=True)


def load_turtles(data_dir: str | os.PathLike, check_images: bool = True,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> TurtleData:
    """Read and validate a Turtle Recall folder; ValidationError lists every problem found."""
    data_dir = _data_dir(data_dir)
    problems = ProblemList()
    columns = {
        TRAIN_CSV: ["image_id", "image_location", "turtle_id"],
        EXTRA_CSV: ["image_id", "turtle_id"],
        TEST_CSV: ["image_id", "image_location"],
        SAMPLE_SUBMISSION_CSV: ["image_id", *PREDICTION_COLUMNS],
    }
    frames = {name: _read_checked(data_dir, name, cols, problems) for name, cols in columns.items()}
    _check_across_files(frames, problems)
    if check_images:
        _check_images(data_dir, frames, problems, max_pixels)
    # Listed file by file, line by line, the way a user goes through them to fix them.
    file_order = {name: i for i, name in enumerate(columns)}
    problems.items.sort(key=lambda p: (file_order.get(p.file, len(file_order)), p.line or 0))
    problems.raise_if_any(title=f"invalid Turtle Recall data in {data_dir}")

    train, extra, test = (_fresh(frames[name]) for name in (TRAIN_CSV, EXTRA_CSV, TEST_CSV))
    train["image_location"] = train["image_location"].str.lower()
    test["image_location"] = test["image_location"].str.lower()
    labeled = pd.concat([
        train[["image_id", "image_location", "turtle_id"]].assign(source="train"),
        extra[["image_id", "turtle_id"]].assign(image_location=EXTRA_IMAGE_LOCATION, source="extra"),
    ], ignore_index=True)
    classes = sorted(labeled["turtle_id"].unique())
    labeled["label"] = labeled["turtle_id"].map({turtle: i for i, turtle in enumerate(classes)}).astype("int64")
    return TurtleData(
        data_dir=data_dir, train=train, extra=extra, test=test,
        sample_submission=_fresh(frames[SAMPLE_SUBMISSION_CSV]),
        labeled=labeled[LABELED_COLUMNS], classes=classes,
        original_ids=sorted(train["turtle_id"].unique()),
    )


def load_test_labels(data_dir: str | os.PathLike) -> pd.DataFrame:
    """Read and validate `test_labels.csv` (`image_id,turtle_id`; more columns allowed), e.g. to score."""
    data_dir = _data_dir(data_dir)
    problems = ProblemList()
    frame = _read_checked(data_dir, TEST_LABELS_CSV, ["image_id", "turtle_id"], problems)
    problems.raise_if_any(title=f"invalid test labels in {data_dir}")
    return _fresh(frame)
