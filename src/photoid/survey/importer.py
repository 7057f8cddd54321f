"""Survey import: a folder of photos, a CSV whose columns the user maps, or photos uploaded through the page.

    photoid survey import --catalog C --name NAME --folder DIR
    photoid survey import --catalog C --name NAME --csv FILE --columns path=COL,date=COL,station=COL,...

Every photo is checked as photoid checks every photo (`photoid.core.images.check_photo_file`: the file's bytes,
header and stream, no pixel decoded), one at a time: a corrupt, truncated or unreadable file becomes a row with
status `refused` and its reason, and the import goes on. Photos with the same bytes (sha256) as one already in
this survey or another survey of the catalogue are rows with status `duplicate`, naming the first. Bad metadata
(a date that is no date, an unknown viewpoint, a mapped column the CSV lacks) refuses the CSV before anything is
written, every problem listed with its line.

Only what the user gave is read: the folder or CSV named on the command line (a CSV's relative paths from its
own folder), or the bytes uploaded to the page. An uploaded CSV's paths are never opened: they are matched to
the names of the photos uploaded with it. Uploaded photos are kept in the catalogue folder under their sha256
(`CATALOG/photos/`), as the page keeps every upload; photos imported from disk stay where they are.
Importing into an existing survey adds to it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable

import pandas as pd

from photoid.catalog.store import catalog_transaction
from photoid.core import io as pio
from photoid.core.errors import PhotoidError, ProblemList
from photoid.core.images import JPEG_MAGIC, PHOTO_SUFFIXES, check_photo_file
from photoid.core.tables import read_table, text_problem
from photoid.records.folder import VIEWPOINTS
from photoid.survey.store import (
    DUPLICATE,
    INFO_FILE,
    METADATA,
    OK,
    PHOTO_COLUMNS,
    REFUSED,
    Survey,
    list_surveys,
    now,
    survey_dir,
    write_photos,
)

PHOTOS_DIR = "photos"  # uploads, under the catalogue folder (as `photoid serve` keeps single uploads)
SOURCE_CSV = "source.csv"  # a copy of the imported CSV, kept with the survey
MAX_PIXELS = 100_000_000
EXIF_DATES = ((0x8769, 36867), (0x8769, 36868), (None, 306))  # DateTimeOriginal, DateTimeDigitized, DateTime


@dataclass
class Entry:
    """One photo to import: where it is (or its uploaded bytes), the name shown and its metadata."""

    file_name: str
    path: Path | None = None
    data: bytes | None = None
    metadata: dict = field(default_factory=dict)


@dataclass
class ImportReport:
    survey: str
    path: Path
    added: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (file name, of what)
    unmatched_rows: int = 0  # rows of an uploaded CSV whose photo has not been uploaded

    def summary(self) -> str:
        lines = [f"survey {self.survey}: {self.added} photo(s) added ({self.path})"]
        if self.refused:
            lines.append(f"{len(self.refused)} refused (photoid cannot read them):")
            lines += [f"  - {name}: {reason}" for name, reason in self.refused]
        if self.duplicates:
            lines.append(f"{len(self.duplicates)} duplicate(s) (same bytes as a photo already imported):")
            lines += [f"  - {name}: {of}" for name, of in self.duplicates]
        return "\n".join(lines)

    def as_json(self) -> dict:
        return {"survey": self.survey, "added": self.added, "unmatched_rows": self.unmatched_rows,
                "refused": [{"file_name": n, "reason": r} for n, r in self.refused],
                "duplicates": [{"file_name": n, "of": o} for n, o in self.duplicates]}


# ----------------------------------------------------------------------------- the three sources

def import_folder(catalog_dir: str | Path, name: str, folder: str | Path, *, progress: bool = False
                  ) -> ImportReport:
    """Every photo file (`PHOTO_SUFFIXES`) under `folder`, recursively: station = its sub-folder, date = EXIF."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PhotoidError(f"{folder}: not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise PhotoidError(f"{folder} holds no photo ({', '.join(PHOTO_SUFFIXES)})")
    entries = [Entry(p.relative_to(folder).as_posix(), p, metadata={
        "station": p.parent.relative_to(folder).as_posix() if p.parent != folder else "", "survey": name})
        for p in files]
    return add_entries(catalog_dir, name, entries, {"kind": "folder", "folder": str(folder.resolve())},
                       progress=progress)


def parse_columns(text: str) -> dict[str, str]:
    """`path=COL,date=COL,...` → {field: column}; `path` is required, fields are `path` and METADATA."""
    mapping = {}
    for part in (p for p in text.split(",") if p.strip()):
        key, sep, column = part.partition("=")
        key, column = key.strip(), column.strip()
        if not sep or not column:
            raise PhotoidError(f"--columns {part!r}: write FIELD=COLUMN, e.g. path=file,date=timestamp")
        if key not in ("path", *METADATA):
            raise PhotoidError(f"--columns: unknown field {key!r}; the fields are path, {', '.join(METADATA)}")
        mapping[key] = column
    if "path" not in mapping:
        raise PhotoidError("--columns must map path=COLUMN (the column holding each photo's file)")
    return mapping


def import_csv(catalog_dir: str | Path, name: str, csv_path: str | Path, columns: dict[str, str], *,
               progress: bool = False) -> ImportReport:
    """The photos a CSV lists, with the metadata of its mapped columns; relative paths from the CSV's folder."""
    csv_path = Path(csv_path)
    rows = read_mapped_csv(csv_path, str(csv_path), columns)
    entries = []
    for line, row in rows.iterrows():
        given = Path(row["path"])
        path = given if given.is_absolute() else csv_path.parent / given
        entries.append(Entry(row["path"], path, metadata={k: row[k] for k in METADATA if k in row}))
    return add_entries(catalog_dir, name, entries, {"kind": "csv", "csv": str(csv_path.resolve()),
                                                    "columns": columns}, progress=progress,
                       source_csv=csv_path.read_bytes())


def import_uploads(catalog_dir: str | Path, name: str, files: Iterable[tuple[str, bytes]], *,
                   defaults: dict | None = None) -> ImportReport:
    """Uploaded photos (name, bytes) added to survey `name` (`create_survey` first): matched by name (the path
    the browser gave, or its file name where that is unique) to the rows of the survey's uploaded CSV if it has
    one, else given `defaults` (station, survey, date, viewpoint of the whole upload)."""
    catalog_dir = Path(catalog_dir)
    survey = Survey(catalog_dir, name)
    by_name, listed = _uploaded_rows(survey)
    defaults = _checked_defaults(defaults or {})
    entries = [Entry(file_name, data=data, metadata=dict(defaults) if by_name is None else
                     by_name.get(file_name) or by_name.get(PurePosixPath(file_name).name) or {})
               for file_name, data in files]
    report = add_entries(catalog_dir, name, entries, None)
    if by_name is not None:
        uploaded = set(Survey(catalog_dir, name).photos()["file_name"])
        uploaded |= {PurePosixPath(n).name for n in uploaded}
        report.unmatched_rows = sum(1 for p in listed if p not in uploaded and PurePosixPath(p).name not in uploaded)
    return report


def create_survey(catalog_dir: str | Path, name: str, *, csv_bytes: bytes | None = None,
                  columns: dict[str, str] | None = None) -> Survey:
    """A survey to upload photos into (`import_uploads`), with the uploaded CSV whose rows describe them
    (checked first: a CSV with problems is refused, every problem listed). An existing survey is kept; a CSV
    given again replaces its CSV."""
    catalog_dir = Path(catalog_dir)
    path = survey_dir(catalog_dir, name)
    if csv_bytes is not None and not (columns or {}).get("path"):
        raise PhotoidError("map the CSV's columns (at least path=COLUMN)")
    with catalog_transaction(catalog_dir, f"to create survey {name}"):
        exists = (path / INFO_FILE).is_file()
        if exists and csv_bytes is None:
            return Survey(catalog_dir, name)
        path.mkdir(parents=True, exist_ok=True)
        source = {"kind": "upload"}
        if csv_bytes is not None:
            with pio.atomic_path(path / SOURCE_CSV) as tmp:  # renamed into place only if it passes the checks
                Path(tmp).write_bytes(csv_bytes)
                read_mapped_csv(Path(tmp), "the uploaded CSV", columns, paths_on_disk=False)
            source["columns"] = columns
        survey = Survey(catalog_dir, name) if exists else None
        table = survey.photos() if survey else pd.DataFrame(columns=PHOTO_COLUMNS)
        info = survey.info() if survey else {"name": name, "created": now()}
        write_photos(path, table, {**info, "source": source, "updated": now()})
    return Survey(catalog_dir, name)


# ----------------------------------------------------------------------------- CSV

def read_mapped_csv(path: Path, shown: str, columns: dict[str, str], *, paths_on_disk: bool = True
                    ) -> pd.DataFrame:
    """The CSV's rows as {field: value} over `columns`' fields, checked; every problem at once."""
    problems = ProblemList()
    frame = read_table(path, shown, problems, columns=list(dict.fromkeys(columns.values())))
    problems.raise_if_any(title=f"{shown} cannot be imported")
    rows = pd.DataFrame({key: frame[column] for key, column in columns.items()}, index=frame.index)
    for line, row in rows.iterrows():
        reason = text_problem(row["path"])
        if reason:
            problems.add(shown, line, f"path {row['path']!r} {reason}")
        if row.get("date", ""):
            date = normalised_date(row["date"])
            if date is None:
                problems.add(shown, line, f"date {row['date']!r} is not a date (write YYYY-MM-DD, optionally with "
                                          "a time HH:MM:SS)")
            else:
                rows.loc[line, "date"] = date
        if row.get("viewpoint", "") not in ("", *VIEWPOINTS):
            problems.add(shown, line, f"viewpoint {row['viewpoint']!r} is not one of {', '.join(VIEWPOINTS)} "
                                      "(or empty: unknown)")
    if not paths_on_disk:
        seen: dict[str, int] = {}
        for line, value in rows["path"].items():
            if value in seen:
                problems.add(shown, line, f"path {value!r} is listed twice (first on line {seen[value]})")
            seen.setdefault(value, line)
    problems.raise_if_any(title=f"{shown} cannot be imported")
    return rows


def normalised_date(value: str) -> str | None:
    """`value` as `YYYY-MM-DD` or `YYYY-MM-DD HH:MM:SS` (ISO 8601, or EXIF's `YYYY:MM:DD HH:MM:SS`), or None."""
    text = value.strip()
    if len(text) >= 10 and text[4] == ":" and text[7] == ":":  # EXIF writes the date with colons
        text = f"{text[:4]}-{text[5:7]}-{text[8:]}"
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError):
        return None
    if stamp is pd.NaT or not (1800 <= stamp.year <= 2200):
        return None
    has_time = len(text) > 10
    return stamp.strftime("%Y-%m-%d %H:%M:%S" if has_time else "%Y-%m-%d")


def _uploaded_rows(survey: Survey) -> tuple[dict[str, dict] | None, list[str]]:
    """The survey's uploaded CSV rows by their path (and by the path's file name where that is unique), and the
    paths it lists; (None, []) without an uploaded CSV."""
    columns = (survey.info().get("source") or {}).get("columns")
    if not columns or not (survey.path / SOURCE_CSV).is_file():
        return None, []
    rows = read_mapped_csv(survey.path / SOURCE_CSV, "the uploaded CSV", columns, paths_on_disk=False)
    by_name: dict[str, dict] = {}
    names = rows["path"].map(lambda p: PurePosixPath(p.replace("\\", "/")).name)
    unique = names.map(names.value_counts()) == 1
    for (_, row), name, alone in zip(rows.iterrows(), names, unique):
        metadata = {k: row[k] for k in METADATA if k in row}
        by_name[row["path"].replace("\\", "/")] = metadata
        if alone:
            by_name.setdefault(name, metadata)
    return by_name, [p.replace("\\", "/") for p in rows["path"]]


def _checked_defaults(defaults: dict) -> dict:
    out = {}
    for key, value in defaults.items():
        value = str(value or "").strip()
        if key not in METADATA or not value:
            continue
        if key == "date":
            date = normalised_date(value)
            if date is None:
                raise PhotoidError(f"date {value!r} is not a date (write YYYY-MM-DD)")
            value = date
        if key == "viewpoint" and value not in VIEWPOINTS:
            raise PhotoidError(f"viewpoint {value!r} is not one of {', '.join(VIEWPOINTS)}")
        out[key] = value[:200]
    return out


# ----------------------------------------------------------------------------- checking and adding

def add_entries(catalog_dir: str | Path, name: str, entries: list[Entry], source: dict | None, *,
                progress: bool = False, source_csv: bytes | None = None) -> ImportReport:
    """Check every entry (slow work, outside the lock), then add the rows to the survey in one locked write."""
    catalog_dir = Path(catalog_dir)
    path = survey_dir(catalog_dir, name)
    checked = []
    iterator = entries
    if progress:
        from tqdm import tqdm

        iterator = tqdm(entries, desc=f"checking {len(entries)} photos", unit="photo")
    for entry in iterator:
        checked.append((entry, *_check(catalog_dir, entry)))
    report = ImportReport(name, path)
    with catalog_transaction(catalog_dir, f"to import {len(entries)} photo(s) into survey {name}"):
        exists = (path / INFO_FILE).is_file()
        survey = Survey(catalog_dir, name) if exists else None
        table = survey.photos() if survey else pd.DataFrame(columns=PHOTO_COLUMNS)
        info = survey.info() if survey else {"name": name, "created": now()}
        first = _first_of_each_sha(catalog_dir, name, table)
        rows = []
        for n, (entry, sha, stored, reason) in enumerate(checked, start=len(table)):
            photo_id = f"p{n + 1:06d}"
            status = REFUSED if reason else OK
            if not reason and sha in first:
                status, reason = DUPLICATE, f"same bytes as {first[sha]}"
                report.duplicates.append((entry.file_name, first[sha]))
            elif reason:
                report.refused.append((entry.file_name, reason))
            else:
                first[sha] = f"{entry.file_name} ({photo_id})"
                report.added += 1
            rows.append({"photo_id": photo_id, "sha256": sha, "file_name": entry.file_name[:300],
                         "path": str(stored) if stored else "", **{k: "" for k in METADATA},
                         **{k: str(v) for k, v in entry.metadata.items() if k in METADATA},
                         "status": status, "reason": reason or ""})
        table = pd.concat([table, pd.DataFrame(rows, columns=PHOTO_COLUMNS)], ignore_index=True)
        path.mkdir(parents=True, exist_ok=True)
        if source_csv is not None:
            with pio.atomic_path(path / SOURCE_CSV) as tmp:
                Path(tmp).write_bytes(source_csv)
        counts = table["status"].value_counts().to_dict()
        write_photos(path, table, {**info, "source": source or info.get("source", {}), "updated": now(),
                                   "photos": int(len(table)), **{f"n_{k}": int(v) for k, v in counts.items()}})
    return report


def _first_of_each_sha(catalog_dir: Path, name: str, table: pd.DataFrame) -> dict[str, str]:
    """sha256 → the first photo with those bytes, in this survey and in the catalogue's other surveys."""
    first: dict[str, str] = {}
    for other in list_surveys(catalog_dir):
        if other == name:
            continue
        photos = Survey(catalog_dir, other).photos()
        for row in photos[photos["status"] == OK].itertuples():
            first.setdefault(row.sha256, f"{row.file_name} ({row.photo_id}) of survey {other}")
    for row in table[table["status"] == OK].itertuples():
        first[row.sha256] = f"{row.file_name} ({row.photo_id})"
    return first


def _check(catalog_dir: Path, entry: Entry) -> tuple[str, Path | None, str | None]:
    """(sha256, where the photo is kept, why it is refused or None); never raises for one bad file."""
    try:
        if entry.data is not None:
            return _store_upload(catalog_dir, entry.file_name, entry.data)
        path = Path(entry.path)
        reason = check_photo_file(path, MAX_PIXELS)
        if reason:
            return "", None, reason
        sha = pio.file_sha256(path)
        if "date" not in entry.metadata or not entry.metadata.get("date"):
            entry.metadata = {**entry.metadata, "date": _exif_date(path)}
        return sha, path.resolve(), None
    except Exception as err:  # noqa: BLE001  (an unreadable file is listed with its reason; the import goes on)
        return "", None, f"cannot be read ({type(err).__name__}: {err})"


def _store_upload(catalog_dir: Path, file_name: str, data: bytes) -> tuple[str, Path | None, str | None]:
    sha = hashlib.sha256(data).hexdigest()
    suffix = ".jpg" if data.startswith(JPEG_MAGIC) else PurePosixPath(file_name).suffix.lower()
    if suffix not in PHOTO_SUFFIXES:
        suffix = ".bin"  # refused below: not a photo format photoid reads
    target = catalog_dir / PHOTOS_DIR / f"{sha}{suffix if suffix != '.jpeg' else '.jpg'}"
    if target.is_file():
        return sha, target, None
    target.parent.mkdir(exist_ok=True)
    try:
        with pio.atomic_path(target) as tmp:
            Path(tmp).write_bytes(data)
            # Checked under the temporary name: a refused upload never becomes a stored photo.
            reason = check_photo_file(tmp, MAX_PIXELS)
            if reason:
                raise _Refused(reason)
    except _Refused as refused:
        return sha, None, str(refused)
    return sha, target, None


class _Refused(Exception):
    pass


def _exif_date(path: Path) -> str:
    """The date the camera wrote (EXIF), normalised; "" when there is none."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            exif = image.getexif()
            for ifd, tag in EXIF_DATES:
                value = (exif.get_ifd(ifd) if ifd else exif).get(tag)
                if value:
                    return normalised_date(str(value)) or ""
    except Exception:  # noqa: BLE001  (a date is optional; the photo itself was checked)
        return ""
    return ""
