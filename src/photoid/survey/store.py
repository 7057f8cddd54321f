"""A survey's folder inside its catalogue (see `photoid.survey`): its files, read with caching, written atomically.

Every file is written under a temporary name and renamed (`photoid.core.io`), so a kill leaves the old file or
the new one. The photo table and the favourites are changed while the catalogue's lock is held
(`catalog_transaction`), so two imports, two reviewers or a page and a command never overwrite each other; the
batch job's result files are written by the one job that holds the survey's job lock (`photoid.survey.job`).
Readers take no lock: a `Survey` re-reads a file when it was replaced, and the result files it has not seen yet.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from photoid.catalog.store import catalog_transaction
from photoid.core import io as pio
from photoid.core.errors import PhotoidError

SURVEYS_DIR = "surveys"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
FORMAT, FORMAT_VERSION = "photoid-survey", 1
PHOTO_COLUMNS = ["photo_id", "sha256", "file_name", "path", "date", "station", "survey", "viewpoint",
                 "individual", "comment", "status", "reason"]
METADATA = ("date", "station", "survey", "viewpoint", "individual", "comment")  # what a CSV may map
OK, REFUSED, DUPLICATE = "ok", "refused", "duplicate"
RESULTS_DIR, CHUNK_PATTERN = "results", "chunk-*.npz"
JOB_FILE, FAVOURITES_FILE, INFO_FILE, PHOTOS_FILE = "job.json", "favourites.json", "survey.json", "photos.csv"


def check_name(name: str) -> str:
    """A survey name is a plain folder name: letters, digits, '.', '_' and '-', starting with a letter or digit."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise PhotoidError(f"survey name {str(name)[:80]!r}: use 1-64 letters, digits, '.', '_' or '-', starting "
                           "with a letter or digit")
    return name


def survey_dir(catalog_dir: str | Path, name: str) -> Path:
    return Path(catalog_dir) / SURVEYS_DIR / check_name(name)


def list_surveys(catalog_dir: str | Path) -> list[str]:
    """Names of the catalogue's surveys, sorted."""
    root = Path(catalog_dir) / SURVEYS_DIR
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if NAME.fullmatch(p.name) and (p / INFO_FILE).is_file())


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Results:
    """The batch job's answers, one row per photo of the survey's table (`done` says which have one)."""

    done: np.ndarray  # bool (photos,)
    embeddings: np.ndarray  # float32 (photos, dim); zeros where not done or unreadable
    probabilities: np.ndarray  # float32 (photos, classes)
    labels: np.ndarray  # str (photos, top): the candidates when identified ("" beyond them)
    scores: np.ndarray  # float32 (photos, top): their scores (NaN beyond them)
    errors: np.ndarray  # str (photos,): why the models could not read the photo ("" when they could)

    @property
    def identified(self) -> np.ndarray:
        return self.done & (self.errors == "")


class Survey:
    """One survey of a catalogue, read lazily and re-read when its files change (safe to share between threads
    for reading: each read returns whole objects)."""

    def __init__(self, catalog_dir: str | Path, name: str):
        self.catalog_dir = Path(catalog_dir)
        self.name = check_name(name)
        self.path = survey_dir(catalog_dir, name)
        if not (self.path / INFO_FILE).is_file():
            raise PhotoidError(f"no survey {name!r} in catalogue {catalog_dir}; import it with photoid survey "
                               "import")
        self._cache: dict[str, tuple] = {}
        self._chunks: dict[str, dict] = {}
        self._results: tuple[frozenset, int, Results] | None = None

    # ------------------------------------------------------------------ reading

    def _cached(self, file_name: str, read):
        path = self.path / file_name
        try:
            stat = path.stat()
            key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            key = None
        held = self._cache.get(file_name)
        if held is None or held[0] != key:
            held = (key, read(path) if key is not None else None)
            self._cache[file_name] = held
        return held[1]

    def info(self) -> dict:
        return self._cached(INFO_FILE, pio.read_json)

    def photos(self) -> pd.DataFrame:
        """The photo table (PHOTO_COLUMNS), in import order; row i is photo i of `results`."""
        table = self._cached(PHOTOS_FILE, lambda p: pd.read_csv(p, dtype=str, keep_default_na=False))
        return table if table is not None else pd.DataFrame(columns=PHOTO_COLUMNS)

    def favourites(self) -> frozenset[str]:
        marked = self._cached(FAVOURITES_FILE, pio.read_json)
        return frozenset(marked or ())

    def job(self) -> dict | None:
        """The batch job's last recorded progress (None before the first job)."""
        return self._cached(JOB_FILE, pio.read_json)

    def results(self) -> Results:
        """Every answer written so far; only result files not seen before are read."""
        n = len(self.photos())
        folder = self.path / RESULTS_DIR
        names = frozenset(p.name for p in os.scandir(folder) if p.name.startswith("chunk-")
                          and p.name.endswith(".npz")) if folder.is_dir() else frozenset()
        held = self._results
        if held is not None and held[0] == names and held[1] == n:
            return held[2]
        new = sorted(names - set(self._chunks))
        for name in new:
            with np.load(folder / name, allow_pickle=False) as data:
                self._chunks[name] = {key: data[key] for key in data.files}
        added = sorted(names - held[0]) if held is not None else []
        if added and held[1] == n and held[0] <= names and _fits(held[2], self._chunks[added[0]]):
            # Only new answers (a running job's latest batches): the arrays held so far, copied (readers may
            # hold them), and filled in; a survey of thousands of photos is not joined again batch after batch.
            results = _join([self._chunks[name] for name in added], n, start=held[2])
        else:
            results = _join([self._chunks[name] for name in sorted(names)], n)
        self._results = (names, n, results)
        return results

    def photo(self, photo_id: str) -> pd.Series:
        """One row of the photo table by its id (never a path from a request)."""
        table = self.photos()
        rows = table.index[table["photo_id"] == photo_id]
        if not len(rows):
            raise PhotoidError(f"no photo {photo_id[:40]!r} in survey {self.name}")
        return table.loc[rows[0]]

    def row_of(self, photo_id: str) -> int:
        table = self.photos()
        rows = np.flatnonzero(table["photo_id"].to_numpy() == photo_id)
        if not len(rows):
            raise PhotoidError(f"no photo {photo_id[:40]!r} in survey {self.name}")
        return int(rows[0])

    # ------------------------------------------------------------------ writing

    def set_favourite(self, photo_id: str, favourite: bool) -> frozenset[str]:
        """Mark or unmark a photo as a favourite (under the catalogue's lock, so no reviewer's mark is lost)."""
        self.photo(photo_id)
        with catalog_transaction(self.catalog_dir, f"to mark a favourite in survey {self.name}"):
            marked = set(pio.read_json(self.path / FAVOURITES_FILE) or ()) if (
                self.path / FAVOURITES_FILE).is_file() else set()
            marked = (marked | {photo_id}) if favourite else (marked - {photo_id})
            pio.write_json(self.path / FAVOURITES_FILE, sorted(marked))
        return frozenset(marked)


def _fits(results: Results, chunk: dict) -> bool:
    """Whether `chunk`'s arrays have the widths of `results` (the same models, the same number of candidates)."""
    return (results.embeddings.shape[1] == chunk["embeddings"].shape[1]
            and results.probabilities.shape[1] == chunk["probabilities"].shape[1]
            and results.labels.shape[1] >= chunk["labels"].shape[1]) if results.done.any() else False


def _join(chunks: list[dict], n: int, start: Results | None = None) -> Results:
    """The answers of `chunks` in one `Results` of `n` photos, on a copy of `start`'s when given."""
    if start is not None:
        results = Results(*(np.array(getattr(start, f)) for f in ("done", "embeddings", "probabilities", "labels",
                                                                    "scores", "errors")))
    else:
        dim = next((c["embeddings"].shape[1] for c in chunks), 0)
        classes = next((c["probabilities"].shape[1] for c in chunks), 0)
        top = max((c["labels"].shape[1] for c in chunks), default=0)
        results = Results(np.zeros(n, bool), np.zeros((n, dim), np.float32), np.zeros((n, classes), np.float32),
                          np.full((n, top), "", dtype=object), np.full((n, top), np.nan, np.float32),
                          np.full(n, "", dtype=object))
    for chunk in chunks:
        rows = chunk["rows"]
        keep = rows < n
        rows = rows[keep]
        results.done[rows] = True
        results.embeddings[rows] = chunk["embeddings"][keep]
        results.probabilities[rows] = chunk["probabilities"][keep]
        width = chunk["labels"].shape[1]
        results.labels[rows, :width] = chunk["labels"][keep]
        results.scores[rows, :width] = chunk["scores"][keep]
        results.errors[rows] = chunk["errors"][keep]
    return results


def write_chunk(survey_path: Path, number: int, rows: np.ndarray, embeddings: np.ndarray,
                probabilities: np.ndarray, labels: np.ndarray, scores: np.ndarray, errors: list[str]) -> Path:
    """One batch of answers, written atomically (a kill leaves it whole or absent)."""
    path = survey_path / RESULTS_DIR / f"chunk-{number:06d}.npz"
    with pio.atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, rows=np.asarray(rows, np.int64), embeddings=np.asarray(embeddings, np.float32),
                 probabilities=np.asarray(probabilities, np.float32), labels=np.asarray(labels, dtype=str),
                 scores=np.asarray(scores, np.float32), errors=np.asarray(errors, dtype=str))
    return path


def write_photos(survey_path: Path, table: pd.DataFrame, info: dict) -> None:
    """The photo table, then the description naming it (the caller holds the catalogue's lock)."""
    pio.write_csv(survey_path / PHOTOS_FILE, table[PHOTO_COLUMNS])
    pio.write_json(survey_path / INFO_FILE, {"format": FORMAT, "version": FORMAT_VERSION, **info})
