"""A catalogue's files and the transactions that change them (`photoid.catalog.build` is the catalogue itself).

A catalogue folder holds plain files, no pickle:

    manifest.json              the models that made it (`photoid.inference.embedder.signature`), its data files with their
                               sha256, and the calibration (`photoid calibrate`)
    embeddings-GGGGG.npy       float32 (photos, dim): one L2-normalised row per photo (`photoid.inference.embedder`)
    images-GGGGG.csv           individual_id, image_id, source, path — row i describes embedding row i
    .photoid.lock              the writers' lock (never deleted); while held it names its holder

Column block m of the embeddings is fold model m's own normalised embedding (scaled); the manifest's `models`
list gives each block's `offset` and `dim`. Identification scores individuals in each model's space and averages
(`openset.catalogue_scores`); calibration compares photos in the space of the one fold model that never trained
on them.

Every change is a transaction (`catalog_transaction`): an exclusive lock on the folder, the current generation read
again under it, then the new generation committed as a whole: its data files are written under the next generation
number, the manifest (the pointer to them) is replaced atomically, then older files are removed. Any writer (a
command, a web page) changes a catalogue this way and nothing else:

    with catalog_transaction(path, waiting_message="to add 3 photos of t_id_X") as tx:
        current = tx.catalog                      # this generation, read under the lock (None: no catalogue yet)
        ...                                       # slow work (embedding photos) is best done before the lock
        tx.commit(current.manifest, table, embeddings)   # or tx.commit_manifest(calibration=...)

Two writers therefore never lose each other's changes: the second waits, re-reads the first's generation and adds to
it; a writer that waits longer than `WAIT_NOTE_S` prints whom it waits for (pid, command, since when). The lock is an
`fcntl.flock` on `.photoid.lock`, which the kernel releases when its holder dies, even by `kill -9`, so a dead
process never blocks a catalogue; it also excludes threads of one process that open their own transaction. Killed
at any moment, a writer leaves the old generation or the new one (the manifest names complete files only);
leftovers of an uncommitted generation are removed by the next writer. Readers take no lock: `read_catalog` reads
the manifest and the files it names, and reads again if a writer replaced them meanwhile.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from photoid.catalog.openset import individual_codes
from photoid.core import io as pio
from photoid.core.errors import PhotoidError

MANIFEST = "manifest.json"
LOCK = ".photoid.lock"
DATA_PATTERNS = ("embeddings-*.npy", "images-*.csv")
WAIT_NOTE_S = 2.0  # a writer waiting this long for the lock says whom it waits for (then every WAIT_REPEAT_S)
WAIT_REPEAT_S = 30.0
READ_ATTEMPTS = 5  # a reader racing writers re-reads the manifest this many times before giving up
FORMAT = "photoid-catalog"
FORMAT_VERSION = 1
TABLE_COLUMNS = ["individual_id", "image_id", "source", "path"]
VIEWPOINT_COLUMN = "viewpoint"  # kept after TABLE_COLUMNS where the photos' viewpoints are known ("": unknown)


def table_columns(table: pd.DataFrame) -> list[str]:
    """The columns a catalogue table keeps: TABLE_COLUMNS, then the viewpoint where it has one."""
    return TABLE_COLUMNS + ([VIEWPOINT_COLUMN] if VIEWPOINT_COLUMN in table.columns else [])


@dataclass
class Catalog:
    """One generation of a catalogue folder, as `read_catalog` (`photoid.open_catalog`) returns it: plain data.

    Attributes:
        path: the catalogue folder.
        manifest: `manifest.json`: the models that made it, its data files, its calibration, ...
        table: one row per photo, row i describing embedding row i: `individual_id`, `image_id`, `source`
            (`train`, `extra`, `metadata`, `added`, `served`), `path`, and `viewpoint` where the photos'
            viewpoints are known.
        embeddings: float32 (photos, dim), rows of unit length; column block m is fold model m's embedding.
    """

    path: Path
    manifest: dict
    table: pd.DataFrame  # TABLE_COLUMNS (and VIEWPOINT_COLUMN), one row per embedding row
    embeddings: np.ndarray  # float32 (images, dim), rows of unit length

    @property
    def models(self) -> list[dict]:
        """The fold models that embed its photos, in column order: run, fold, weights' sha256, `offset`, `dim`."""
        return self.manifest["models"]

    @property
    def dim(self) -> int:
        """The width of an embedding row (the models' widths added up)."""
        return int(self.manifest["dim"])

    @property
    def calibration(self) -> dict | None:
        """What `photoid calibrate` chose (threshold, blend weight, out-of-fold metrics); None before it ran."""
        return self.manifest.get("calibration")

    def run_dirs(self, given: Sequence[str] | None = None) -> list[str]:
        """The run folders recorded for its models, in order; or `given` in their place, one per recorded run."""
        recorded = list(dict.fromkeys(m["run_dir"] for m in self.models))
        if given and len(given) != len(recorded):
            raise PhotoidError(f"catalogue {self.path} was made by {len(recorded)} run(s) ({', '.join(recorded)}); "
                               f"{len(given)} were given ({', '.join(map(str, given))})")
        return [str(d) for d in given] if given else recorded

    def blocks(self, fold: int | None = None) -> list[tuple[int, int]]:
        """(offset, dim) of each model's columns in the embeddings; only fold `fold`'s models when given. A
        catalogue without models (zero-shot: `photoid.catalog.zeroshot`) has one block, its whole width."""
        if not self.models:
            return [(0, self.dim)]
        return [(m["offset"], m["dim"]) for m in self.models if fold is None or m["fold"] == fold]

    def individuals(self) -> tuple[list[str], np.ndarray]:
        """(sorted distinct individual ids, each row's code into them)."""
        return individual_codes(self.table["individual_id"])


# ----------------------------------------------------------------------------- files

def read_catalog(path: str | Path) -> Catalog:
    """Open a catalogue folder, refusing one whose files do not match its manifest.

    Takes no lock: a writer that commits while this reads only makes it read the new generation instead.
    """
    path = Path(path)
    for _ in range(READ_ATTEMPTS):
        manifest = _read_manifest(path)
        try:
            return _read_generation(path, manifest)
        except FileNotFoundError as missing:
            if _read_manifest(path) != manifest:
                continue  # a writer committed a newer generation and removed these files: read that one
            raise PhotoidError(f"{path}: {Path(missing.filename).name}, listed in {MANIFEST}, is missing") from None
    raise PhotoidError(f"{path}: the catalogue changed {READ_ATTEMPTS} times while it was read; try again")


def _read_manifest(path: Path) -> dict:
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise PhotoidError(f"{path}: not a catalogue (no {MANIFEST}); make one with photoid catalog build")
    manifest = pio.read_json(manifest_path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PhotoidError(f"{manifest_path}: not a photoid catalogue manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise PhotoidError(f"{manifest_path}: catalogue format version {manifest.get('version')}, this photoid "
                           f"reads version {FORMAT_VERSION}; rebuild it with photoid catalog build")
    return manifest


def _read_generation(path: Path, manifest: dict) -> Catalog:
    """The data files `manifest` names, each read once into memory, so that its checksum and its content agree."""
    raw = {}
    for key in ("embeddings", "table"):
        entry = manifest["files"][key]
        raw[key] = (path / entry["name"]).read_bytes()
        if hashlib.sha256(raw[key]).hexdigest() != entry["sha256"]:
            raise PhotoidError(f"{path / entry['name']}: its content differs from what {MANIFEST} recorded (sha256); "
                               "the catalogue was changed outside photoid: rebuild it")
    try:
        embeddings = np.load(io.BytesIO(raw["embeddings"]), allow_pickle=False)
    except (ValueError, EOFError) as err:
        raise PhotoidError(f"{path / manifest['files']['embeddings']['name']} cannot be read as a numeric array "
                           f"file (.npy): {err}") from None
    table = pd.read_csv(io.BytesIO(raw["table"]), dtype=str, keep_default_na=False)
    if list(table.columns) != table_columns(table) or embeddings.shape != (len(table), manifest["dim"]):
        raise PhotoidError(f"{path}: {len(table)} table rows with columns {list(table.columns)} for embeddings of "
                           f"shape {embeddings.shape}; expected {TABLE_COLUMNS} and (rows, {manifest['dim']})")
    return Catalog(path, manifest, table, embeddings.astype(np.float32, copy=False))


# ----------------------------------------------------------------------------- transactions

class Transaction:
    """One change to a catalogue, made while its lock is held (`catalog_transaction`).

    `catalog` is the current generation, read under the lock (None while the folder holds no catalogue). One
    `commit` (or `commit_manifest`) writes the next generation; the transaction's work is lost only if the block
    raises or the process dies before the manifest is replaced.
    """

    def __init__(self, path: Path, manifest: dict | None):
        self.path = path
        self.manifest = manifest  # the current manifest, None while the folder holds no catalogue
        self._catalog: Catalog | None = None
        self.committed: Catalog | None = None

    @property
    def catalog(self) -> Catalog | None:
        """The current generation with its data (read on first use: `build --force` replaces it unread)."""
        if self._catalog is None and self.manifest is not None:
            self._catalog = read_catalog(self.path)
        return self._catalog

    def commit(self, manifest: dict, table: pd.DataFrame, embeddings: np.ndarray) -> Catalog:
        """Write the data files of the next generation, replace the manifest (the commit), drop older files."""
        generation = int((self.manifest or {}).get("generation", 0)) + 1
        names = {"embeddings": f"embeddings-{generation:05d}.npy", "table": f"images-{generation:05d}.csv"}
        embeddings = np.asarray(embeddings, dtype=np.float32)
        try:
            pio.save_npy(self.path / names["embeddings"], embeddings)
            pio.write_csv(self.path / names["table"], table[table_columns(table)])
            manifest = {
                **manifest, "format": FORMAT, "version": FORMAT_VERSION, "generation": generation,
                "updated": _now(), "n_images": int(len(table)),
                "n_individuals": int(table["individual_id"].nunique()), "dim": int(embeddings.shape[1]),
                "files": {key: {"name": name, "sha256": pio.file_sha256(self.path / name)}
                          for key, name in names.items()},
            }
            pio.write_json(self.path / MANIFEST, manifest)
        except BaseException:
            # Not committed: the manifest still names the previous files, so the new ones are dropped.
            for name in names.values():
                (self.path / name).unlink(missing_ok=True)
            raise
        _remove_unlisted(self.path, set(names.values()))
        self.manifest = manifest
        self._catalog = self.committed = Catalog(self.path, manifest,
                                                 table[table_columns(table)].reset_index(drop=True), embeddings)
        return self.committed

    def commit_manifest(self, **changes) -> Catalog:
        """Replace manifest entries (e.g. the calibration) of the current generation; its data files stay."""
        if self.catalog is None:
            raise PhotoidError(f"{self.path}: not a catalogue (no {MANIFEST}); make one with photoid catalog build")
        current = self.catalog
        manifest = {**current.manifest, **changes, "updated": _now()}
        pio.write_json(self.path / MANIFEST, manifest)
        self.manifest = manifest
        self._catalog = self.committed = Catalog(self.path, manifest, current.table, current.embeddings)
        return self.committed


@contextlib.contextmanager
def catalog_transaction(path: str | Path, waiting_message: str | None = None) -> Iterator[Transaction]:
    """Hold the catalogue's exclusive lock for one change; yields a `Transaction` on its current generation.

    `waiting_message` says what this writer is about to do; it follows the note printed on stderr while the lock
    is held by another process. The folder is created if needed (a catalogue being built).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(path / LOCK, waiting_message):
        # Leftovers of a writer killed before its commit: files no manifest names, and temporary files.
        manifest = _read_manifest(path) if (path / MANIFEST).is_file() else None
        _remove_unlisted(path, {e["name"] for e in manifest["files"].values()} if manifest else set())
        yield Transaction(path, manifest)


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path, waiting_message: str | None) -> Iterator[None]:
    try:
        fd, writable = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666), True
    except PermissionError:  # a lock file another user created: flock works on a read-only descriptor too
        try:
            fd, writable = os.open(lock_path, os.O_RDONLY), False
        except OSError as err:
            raise PhotoidError(f"{lock_path}: the catalogue's lock file cannot be opened ({err.strerror}); "
                               "changing this catalogue needs write access to its folder") from None
    try:
        started, next_note = time.monotonic(), WAIT_NOTE_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - started
                if waited >= next_note:
                    print(f"waiting {waited:.0f}s for catalogue {lock_path.parent}, locked by {_holder(lock_path)}"
                          + (f"; then {waiting_message}" if waiting_message else ""), file=sys.stderr, flush=True)
                    next_note += WAIT_REPEAT_S
                time.sleep(0.05)
        if writable:
            holder = {"pid": os.getpid(), "command": " ".join(["photoid", *sys.argv[1:]])[:300], "since": _now()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
        try:
            yield
        finally:
            if writable:
                os.ftruncate(fd, 0)  # the file names its holder only while the lock is held
    finally:
        os.close(fd)  # releases the lock


def _holder(lock_path: Path) -> str:
    try:
        holder = json.loads(lock_path.read_text(encoding="utf-8"))
        return f"pid {holder['pid']} ({holder['command']}, since {holder['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _remove_unlisted(path: Path, keep: set[str]) -> None:
    """Data files of other generations and temporary files; only ever called by the lock's holder."""
    for pattern in (*DATA_PATTERNS, ".*.tmp*"):
        for old in path.glob(pattern):
            if old.name not in keep and old.name != LOCK:
                old.unlink(missing_ok=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def update_manifest(catalog: Catalog | str | Path, **changes) -> Catalog:
    """Replace manifest entries (e.g. the calibration) in one transaction; the data files stay as they are."""
    with catalog_transaction(getattr(catalog, "path", catalog)) as tx:
        return tx.commit_manifest(**changes)
