"""Write a generic folder (`metadata.csv` and `images/`) from the rows an importer read.

The folder any species can use: `metadata.csv` with `image_id,path,identity` and, when an importer has them,
`viewpoint,date,encounter,split` in that order; the photos under `images/<image_id><ext>`. Folds are made on the
train rows in file order, so an importer decides them by the order of its rows, which is kept here.

Every row is checked before anything is written and every problem reported at once (where the row came from and
why). Photos are hard-linked when the source is on the same file system (no second copy of a large data set),
else copied, each under a temporary name then renamed; `metadata.csv` is written last, also atomically, so an
import that stops part-way never leaves a folder that looks complete.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from PIL import Image

from photoid.core.errors import PhotoidError, ProblemList, ValidationError
from photoid.core.images import PHOTO_SUFFIXES as IMAGE_EXTENSIONS
from photoid.core.images import check_photo_file
from photoid.core.io import atomic_path, write_csv
from photoid.core.tables import is_iso_date, text_problem
from photoid.generic.data import METADATA_FILE as METADATA_CSV
from photoid.generic.data import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, load_generic

IMAGES_DIR = "images"
SPLITS = ("train", "test")
# What an importer hands over: the generic columns but `path`, the photo it came from, and where the row was read
# (named in error messages).
ROW_COLUMNS = ["image_id", "identity", "viewpoint", "date", "encounter", "split", "source", "origin"]
_SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")  # no leading dot: no hidden file, no "." or ".."


def safe_image_id(value: str) -> str:
    """`value` with every character other than letters, digits, `_`, `-` and `.` (and a leading `.`) made `_`."""
    return re.sub(r"^\.|[^A-Za-z0-9_.-]", "_", value)


def write_generic_folder(rows: pd.DataFrame, out: str | os.PathLike, force: bool = False, link: bool = True,
                         render: Callable[[int], Image.Image] | None = None) -> dict:
    """Check `rows` (ROW_COLUMNS, strings, "" for none), then write `out`: the photos, then `metadata.csv`.

    An existing non-empty `out` is refused unless `force`; then its `metadata.csv` is removed before any photo is
    written (photos of the same name are replaced, other files are left alone). With `render`, row i's photo is
    `render(i)` saved as PNG (lossless) instead of the source file. Returns counts for a summary.
    """
    missing = [c for c in ROW_COLUMNS if c not in rows]
    if missing:
        raise PhotoidError(f"import rows lack column(s) {', '.join(missing)}")
    rows = rows[ROW_COLUMNS].fillna("").astype(str).reset_index(drop=True)
    rows["split"] = rows["split"].replace("", "train")
    suffixes = [Path(source).suffix for source in rows["source"]]
    _check_rows(rows, suffixes)
    shared = int(rows["source"].duplicated().sum())
    if shared and render is None:
        warnings.warn(f"{shared} row(s) take a photo that an earlier row takes too (several animals in one photo?); "
                      "each of those rows gets the whole photo", UserWarning, stacklevel=2)

    out = Path(out)
    _prepare_out(out, force)
    images = out / IMAGES_DIR
    images.mkdir(parents=True, exist_ok=True)
    paths, placed = [], {"linked": 0, "copied": 0, "already there": 0, "cut to their box": 0}  # how photos got there
    for i, (row, suffix) in enumerate(zip(rows.itertuples(index=False), suffixes)):
        name = f"{row.image_id}{suffix if render is None else '.png'}"
        try:
            if render is None:
                placed[place_image(Path(row.source), images / name, link)] += 1
            else:
                with atomic_path(images / name) as tmp:
                    render(i).save(tmp, format="PNG")
                placed["cut to their box"] += 1
        except OSError as err:
            raise PhotoidError(f"cannot write {images / name} (from {row.source}): {err}; nothing was imported "
                               f"({METADATA_CSV} not written)") from None
        paths.append(f"{IMAGES_DIR}/{name}")

    table = rows.assign(path=paths)
    # An optional column is written only when it says something: an importer without dates writes no date column.
    # Likewise a split column only when some row is a test row.
    optional = [c for c in OPTIONAL_COLUMNS if (table[c] != "").any()]
    if (table["split"] == "train").all():
        optional.remove("split")
    # The table is checked by the generic task's own reader under a temporary name, then named metadata.csv: what
    # an import writes is always a folder `photoid records` takes (e.g. no encounter holding two individuals).
    checking = out / f".{METADATA_CSV}.checking"
    try:
        write_csv(checking, table[[*REQUIRED_COLUMNS, *optional]])
        try:
            load_generic(out, check_images=False, metadata=checking)
        except ValidationError as err:
            raise PhotoidError(f"cannot import: the rows make a folder the generic reader refuses ({METADATA_CSV} "
                               f"not written):\n{err}") from None
        os.replace(checking, out / METADATA_CSV)
    except OSError as err:
        raise PhotoidError(f"cannot write {out / METADATA_CSV}: {err}; the photos are in {images}, but without "
                           f"{METADATA_CSV} the folder is not an import: run the command again") from None
    finally:
        checking.unlink(missing_ok=True)
    return {"images": len(table), "train": int((table["split"] == "train").sum()),
            "test": int((table["split"] == "test").sum()),
            "identities": int(table.loc[table["identity"] != "", "identity"].nunique()),
            "columns": [*REQUIRED_COLUMNS, *optional], **placed}


def _check_rows(rows: pd.DataFrame, suffixes: list[str]) -> None:
    problems = ProblemList()
    first: dict[str, str] = {}
    for row, suffix in zip(rows.itertuples(index=False), suffixes):
        where = row.origin
        if not _SAFE_ID.fullmatch(row.image_id):
            problems.add(where, None, f"image_id {row.image_id!r} may hold only letters, digits, '_', '-' and '.' "
                                      "(not first)")
        elif row.image_id in first:
            problems.add(where, None, f"duplicate image_id {row.image_id!r} (first: {first[row.image_id]})")
        first.setdefault(row.image_id, where)
        if row.split not in SPLITS:
            problems.add(where, None, f"split {row.split!r} is not one of {', '.join(SPLITS)}")
        reason = text_problem(row.identity)
        if reason and (row.identity or row.split == "train"):
            problems.add(where, None, f"identity {row.identity!r} {reason}"
                                      + (" (a train row needs its individual's name)" if not row.identity else ""))
        for column in ("viewpoint", "encounter"):
            value = getattr(row, column)
            if value and text_problem(value):
                problems.add(where, None, f"{column} {value!r} {text_problem(value)}")
        if row.date and not is_iso_date(row.date):
            problems.add(where, None, f"date {row.date!r} is not a date written YYYY-MM-DD")
        if suffix.lower() not in IMAGE_EXTENSIONS:
            problems.add(where, None, f"photo {row.source}: extension {suffix or '(none)'!r} is not one of "
                                      f"{' '.join(IMAGE_EXTENSIONS)} (any letter case)")
        else:
            reason = check_photo_file(row.source)
            if reason:
                problems.add(where, None, f"photo {row.source}: {reason}")
    problems.raise_if_any(title="cannot import")


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise PhotoidError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise PhotoidError(f"--out {out} is not empty; choose a new folder, or give --force to import into it "
                               f"(its {METADATA_CSV} and photos of the same names are replaced)")
        # Removed first: until the new one is written the folder must not look like a finished import.
        with contextlib.suppress(FileNotFoundError):
            os.remove(out / METADATA_CSV)
    out.mkdir(parents=True, exist_ok=True)


def place_image(source: Path, dest: Path, link: bool = True) -> str:
    """Put `source` at `dest` atomically: a hard link when allowed (same file system), else a copy.

    Returns "linked", "copied" or "already there" (dest is already that very file, e.g. a repeated import).
    """
    if dest.exists() and os.path.samefile(source, dest):
        return "already there"
    if link:
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
        try:
            os.link(source, tmp)
        except OSError:
            pass  # another file system, or a file system without hard links: copy instead
        else:
            try:
                os.replace(tmp, dest)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(tmp)
                raise
            return "linked"
    with atomic_path(dest) as tmp:
        shutil.copyfile(source, tmp)
    return "copied"
