"""The one CSV reader and the row checks every data folder's tables share (Turtle Recall, Where's Whale-do, generic).

A table is read as text only (an id "NA" stays "NA", "007" stays "007"), with its CSV line numbers as index
(header = line 1), so every problem names its file and line. Problems are collected in a `ProblemList` and
raised all at once by the caller, so a user fixes a folder in one pass. Nothing here knows a task: the task
readers (`photoid.turtles.data`, `photoid.whales.data`, `photoid.generic.data`) say which columns and rules apply.
"""

from __future__ import annotations

import datetime
import io
import re
import unicodedata
import warnings
from pathlib import Path, PurePosixPath, PureWindowsPath

import pandas as pd

from photoid.core import fs
from photoid.core.errors import ProblemList

_DRIVE = re.compile(r"^[A-Za-z]:")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def read_table(path: str | Path, name: str | None, problems: ProblemList, columns: tuple[str, ...] | list[str] = (),
               allow_no_rows: bool = False) -> pd.DataFrame | None:
    """A CSV as strings indexed by CSV line number (header = 1); None after adding a problem.

    `name` is how problems name the file (default: the path). A UTF-8 byte-order mark is accepted; other encodings
    are refused with the line of the first bad byte. Lines whose every field is empty are dropped. Line numbers
    assume one line per row, which holds for ids (they may not contain line breaks). `columns` are required
    (others are allowed). A header without rows is a problem unless `allow_no_rows`.
    """
    path = fs.as_path(path)   # folds.csv may sit in a gs:// records folder
    name = str(path) if name is None else name
    if not path.is_file():
        problems.add(name, None, "file is missing" if not path.exists() else "is not a file")
        return None
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        problems.add(name, line, f"the file's encoding is not UTF-8 (byte 0x{raw[err.start]:02x} cannot be "
                                 "decoded); save it as UTF-8")
        return None
    try:
        # index_col=False: a first row with one field too many would otherwise silently become the index
        # (pandas then drops that column's values); instead pandas warns, and the warning is made an error here.
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skip_blank_lines=False,
                                index_col=False)
    except pd.errors.EmptyDataError:
        problems.add(name, None, "file is empty")
        return None
    except pd.errors.ParserError as err:
        line = re.search(r"line (\d+)", str(err))
        problems.add(name, int(line.group(1)) if line else None, f"malformed CSV: {str(err).strip()}")
        return None
    except pd.errors.ParserWarning:
        problems.add(name, 2, "malformed CSV: the row has more fields than the header")
        return None
    frame.index = frame.index + 2
    frame = frame[(frame != "").any(axis=1)] if len(frame.columns) else frame
    if not require_columns(frame, name, list(columns), problems):
        return None
    if frame.empty and not allow_no_rows:
        problems.add(name, None, "has a header but no rows")
        return None
    return frame


def read_csv_strict(path: str | Path, **kwargs) -> pd.DataFrame:
    """`pandas.read_csv` that refuses rows with more fields than the header (for tables of numbers, e.g. scores,
    parsed as pandas parses them): by default pandas would quietly turn the first column into the index and
    shift every value one column to the left."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        try:
            if fs.is_remote(path):   # a gs:// submission, read through TensorFlow's file system
                return pd.read_csv(io.BytesIO(fs.as_path(path).read_bytes()), index_col=False, **kwargs)
            return pd.read_csv(path, index_col=False, **kwargs)
        except pd.errors.ParserWarning:
            raise pd.errors.ParserError("some rows have more fields than the header has columns") from None


def require_columns(frame: pd.DataFrame, name: str, columns: list[str], problems: ProblemList) -> bool:
    """Add a problem (line 1) for each required column missing from `frame`; columns beyond those are allowed."""
    found = ", ".join(repr(c) for c in frame.columns)
    missing = [c for c in columns if c not in frame.columns]
    for column in missing:
        problems.add(name, 1, f"missing column {column!r} (columns found: {found})")
    return not missing


def text_problem(value: str) -> str | None:
    """Why `value` cannot be an id (of an image, individual, encounter...), or None."""
    if value == "":
        return "is empty"
    if value != value.strip():
        return "has leading or trailing whitespace"
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        return "contains a control character"
    return None


def image_id_problem(value: str) -> str | None:
    """Why `value` cannot be an id that may name a file, or None: ids must be plain file names, never paths."""
    reason = text_problem(value)
    if reason:
        return reason
    if "/" in value or "\\" in value:
        return "contains a path separator ('/' or '\\'); it must be a plain file name"
    if ".." in value:
        return "contains '..'; it must be a plain file name"
    if value == ".":
        return "is a relative folder name; it must be a plain file name"
    if PureWindowsPath(value).drive:
        return "is an absolute path; it must be a plain file name"
    return None


def is_iso_date(value: str) -> bool:
    """Whether `value` is a real date written YYYY-MM-DD (four-digit year, two-digit month and day)."""
    if not _ISO_DATE.fullmatch(value):
        return False
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def relative_path_problem(value: str) -> str | None:
    """Why `value` is not a relative path inside the data folder, or None."""
    if value.strip() == "":
        return "is empty"
    posix = value.replace("\\", "/")
    if posix.startswith("/") or _DRIVE.match(posix):
        return "is an absolute path; paths must be relative to the data folder"
    if ".." in PurePosixPath(posix).parts:
        return "contains '..'; paths must stay inside the data folder"
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        return "contains a control character"
    return None


def check_ids(frame: pd.DataFrame, name: str, column: str, problems: ProblemList, *, file_safe: bool = True,
              unique: bool = False, allow_empty: bool = False) -> None:
    """A problem for every bad id of `column` (file_safe: it may name a file) and, with `unique`, every repeat."""
    check = image_id_problem if file_safe else text_problem
    for line, value in frame[column].items():
        if allow_empty and value == "":
            continue
        reason = check(value)
        if reason:
            problems.add(name, line, f"{column} {value!r} {reason}")
    if unique:
        check_unique(frame[column], name, column, problems)


def check_unique(values: pd.Series, name: str, column: str, problems: ProblemList) -> None:
    """Every repeat of a value (`values` indexed by line) is a problem naming both lines."""
    first: dict[str, int] = {}
    for line, value in values.items():
        if value in first:
            problems.add(name, line, f"duplicate {column} {value!r} (first on line {first[value]})")
        else:
            first[value] = line


def check_known(values: pd.Series, known: set[str], name: str, column: str, where: str,
                problems: ProblemList) -> None:
    """A problem for every value (indexed by line) that `known` lacks; `where` names what should hold it."""
    for line, value in values.items():
        if value not in known:
            problems.add(name, line, f"{column} {value!r} is not in {where}")
