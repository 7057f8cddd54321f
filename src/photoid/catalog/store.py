"""A catalogue's files and the transactions that change them (`photoid.catalog.build` is the catalogue itself).

A catalogue folder holds plain files, no pickle:

    manifest.json              the models that made it (`photoid.inference.embedder.signature`), its data files
                               with their sha256, and the calibration (`photoid calibrate`)
    embeddings-GGGGG.npy       float32 (photos, dim): one L2-normalised row per photo (`photoid.inference.embedder`)
    images-GGGGG.csv           individual_id, image_id, source, path — row i describes embedding row i
    .photoid.lock              the writers' lock (never deleted); while held it names its holder

Large catalogues are stored in parts: the manifest's `files` name the first pair of data files and its `parts`
list the further pairs, in row order, each with its row count. A part holds at least PART_ROWS rows except the
last, so a change rewrites only the parts it touches: adding photos rewrites the last part while it is small and
starts a new one once it is full, removing a photo rewrites the part that held it. A catalogue of fewer than
PART_ROWS photos is one pair of files, as it always was. Optional entries: `storage` "float16" (every part's
embeddings stored as float16, half the memory and disk, scores changed by the rounding: measured by
`photoid.catalog.index`), `index` (a stored approximate index, `photoid.catalog.approximate`) and `build` (a
streamed build in progress, `photoid.catalog.stream`); local features and the fusion's files are
`photoid.catalog.local`'s, committed in the same transactions. Catalogues with parts or float16 storage are written as
format version 2, which older photoid versions refuse rather than read in part; others stay version 1.

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
        tx.commit(current.manifest, table, embeddings)   # or tx.append(rows, embeddings), tx.remove(keep),
                                                         # tx.relabel(table), tx.commit_manifest(calibration=...)

Two writers therefore never lose each other's changes: the second waits, re-reads the first's generation and adds to
it; a writer that waits longer than `WAIT_NOTE_S` prints whom it waits for (pid, command, since when). The lock is an
`fcntl.flock` on `.photoid.lock`, which the kernel releases when its holder dies, even by `kill -9`, so a dead
process never blocks a catalogue; it also excludes threads of one process that open their own transaction. Killed
at any moment, a writer leaves the old generation or the new one (the manifest names complete files only);
leftovers of an uncommitted generation are removed by the next writer. Readers take no lock: `read_catalog` reads
the manifest and the files it names, and reads again if a writer replaced them meanwhile.

Reading maps the embeddings into memory (the operating system pages them in as they are used) and checks each
file against its sha256 the first time its rows are used; a file's name is never reused for other content, so a
process checks each file once. Tables are read and checked at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import mmap
import os
import sys
import time
import weakref
from collections import OrderedDict
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
DATA_PATTERNS = ("embeddings-*.npy", "images-*.csv", "index-*.npy")
WAIT_NOTE_S = 2.0  # a writer waiting this long for the lock says whom it waits for (then every WAIT_REPEAT_S)
WAIT_REPEAT_S = 30.0
READ_ATTEMPTS = 5  # a reader racing writers re-reads the manifest this many times before giving up
FORMAT = "photoid-catalog"
FORMAT_VERSION = 1  # written for catalogues of one part in float32, which every photoid reads
PARTS_FORMAT_VERSION = 2  # written for catalogues with parts or float16 storage
READ_VERSIONS = (FORMAT_VERSION, PARTS_FORMAT_VERSION)
TABLE_COLUMNS = ["individual_id", "image_id", "source", "path"]
VIEWPOINT_COLUMN = "viewpoint"  # kept after TABLE_COLUMNS where the photos' viewpoints are known ("": unknown)
# A part of at least this many rows is full; later rows start a new one. Adding a photo rewrites at most this many
# rows (20 MB at 512 dimensions in float32, about 0.1 s), and a million photos are about 100 parts.
PART_ROWS = 10_000
STORAGES = {"float32": np.float32, "float16": np.float16}
_VERIFIED_MAX = 4096  # files remembered as checked by this process
_verified: OrderedDict[str, tuple] = OrderedDict()  # path -> (sha256, inode, size, mtime) of a checked file
_recent: dict[str, weakref.ref] = {}  # folder -> the catalogue read last, whose unchanged parts a re-read reuses


def table_columns(table: pd.DataFrame) -> list[str]:
    """The columns a catalogue table keeps: TABLE_COLUMNS, then the viewpoint where it has one."""
    return TABLE_COLUMNS + ([VIEWPOINT_COLUMN] if VIEWPOINT_COLUMN in table.columns else [])


def with_viewpoints(table: pd.DataFrame) -> pd.DataFrame:
    """A table joined from rows with and without viewpoints: the unknown ones read "" (as in the table file)."""
    if VIEWPOINT_COLUMN in table.columns:
        table[VIEWPOINT_COLUMN] = table[VIEWPOINT_COLUMN].fillna("")
    return table


def part_entries(manifest: dict) -> list[dict]:
    """Every part of a generation in row order: {"embeddings": {name, sha256}, "table": {name, sha256}, "rows"}."""
    parts = manifest.get("parts", [])
    first = {"embeddings": manifest["files"]["embeddings"], "table": manifest["files"]["table"],
             "rows": int(manifest["n_images"]) - sum(int(p["rows"]) for p in parts)}
    return [first, *parts]


def listed_files(manifest: dict) -> set[str]:
    """Every data file a manifest names: its files, its parts' and its stored index's."""
    names = {entry["name"] for entry in manifest["files"].values() if isinstance(entry, dict) and "name" in entry}
    names |= {part[kind]["name"] for part in manifest.get("parts", []) for kind in ("embeddings", "table")}
    names |= {entry["name"] for entry in (manifest.get("index") or {}).get("files", {}).values()}
    return names


class Part:
    """One pair of data files: its table rows and its embeddings, memory-mapped and checked against their sha256
    the first time they are used (`embeddings`)."""

    def __init__(self, entry: dict, table: pd.DataFrame, embeddings: np.ndarray, mapped: "MappedFile | None" = None):
        self.entry = entry
        self.table = table
        self._embeddings = embeddings
        self._unchecked = mapped  # the mapped file still to check (None: checked, or written by this process)

    @property
    def name(self) -> str:
        return self.entry["embeddings"]["name"]

    @property
    def key(self) -> tuple[str, str, str]:
        return _entry_key(self.entry)

    @property
    def rows(self) -> int:
        return len(self._embeddings)

    @property
    def shape(self) -> tuple[int, int]:
        return self._embeddings.shape

    @property
    def embeddings(self) -> np.ndarray:
        """(rows, dim) as stored (float32 or float16), read-only; checked against the manifest on first use."""
        if self._unchecked is not None:
            self._unchecked.check(self.entry["embeddings"]["sha256"])
            self._unchecked = None
        return self._embeddings


class Catalog:
    """One generation of a catalogue folder, as `read_catalog` (`photoid.open_catalog`) returns it.

    Attributes:
        path: the catalogue folder.
        manifest: `manifest.json`: the models that made it, its data files and parts, its calibration, ...
        table: one row per photo, row i describing embedding row i: `individual_id`, `image_id`, `source`
            (`train`, `extra`, `metadata`, `added`, `served`), `path`, and `viewpoint` where the photos'
            viewpoints are known.
        parts: its `Part`s in row order (pairs of data files; a catalogue grows by parts, see `Transaction`).
        embeddings: (property) float32 (photos, dim), rows of unit length; column block m is fold model m's
            embedding.
    """

    def __init__(self, path: Path, manifest: dict, table: pd.DataFrame, parts: list[Part],
                 previous: "Catalog | None" = None):
        self.path = path
        self.manifest = manifest
        self.table = table  # TABLE_COLUMNS (and VIEWPOINT_COLUMN), one row per embedding row
        self.parts = parts
        self._embeddings: np.ndarray | None = None
        self._index = None
        # The generation this one was read or committed after: its prepared index is carried over, not rebuilt.
        self._previous_index = (previous._index or previous._previous_index) if previous is not None else None

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

    @property
    def storage(self) -> str:
        """How the embeddings are stored: "float32", or "float16" (half the memory, scores rounded)."""
        return self.manifest.get("storage", "float32")

    @property
    def building(self) -> dict | None:
        """The progress of a streamed build still under way (`photoid.catalog.stream`), or None."""
        return self.manifest.get("build")

    @property
    def embeddings(self) -> np.ndarray:
        """float32 (images, dim), rows of unit length: the one part's memory-mapped array as it is, else every
        part's rows joined in memory (once)."""
        if self._embeddings is None:
            arrays = [p.embeddings for p in self.parts]
            if len(arrays) == 1 and arrays[0].dtype == np.float32:
                self._embeddings = arrays[0]
            else:
                self._embeddings = (np.concatenate(arrays).astype(np.float32, copy=False) if arrays
                                    else np.zeros((0, self.dim), np.float32))
        return self._embeddings

    def index(self):
        """The prepared search over this generation (`photoid.catalog.index.CatalogIndex`): built on first use,
        or carried over from the generation before by its changes alone."""
        if self._index is None:
            from photoid.catalog.index import CatalogIndex

            self._index = CatalogIndex.for_catalog(self, self._previous_index)
            self._previous_index = None
        return self._index

    def subset(self, keep: np.ndarray) -> "Catalog":
        """The photos where `keep` (one boolean per row) is true, as a catalogue held in memory only (nothing is
        written): a part of the catalogue to search on its own, such as one viewpoint's photos. Its prepared index is
        its own."""
        keep = np.asarray(keep, dtype=bool)
        table = self.table[keep].reset_index(drop=True)
        unwritten = {"name": "(subset)", "sha256": ""}  # no file: the rows are held in memory, already checked
        entry = {"embeddings": unwritten, "table": unwritten, "rows": len(table)}
        return Catalog(self.path, self.manifest, table, [Part(entry, table, self.embeddings[keep])])

    def check_complete(self) -> None:
        """Refuse a catalogue whose streamed build has not finished (it lacks photos)."""
        build = self.building
        if build:
            raise PhotoidError(f"catalogue {self.path} is still being built ({len(self.table)} of {build['total']} "
                               "photos embedded); run the same photoid catalog build command again to finish it")

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

def read_catalog(path: str | Path, previous: Catalog | None = None) -> Catalog:
    """Open a catalogue folder, refusing one whose files do not match its manifest.

    Takes no lock: a writer that commits while this reads only makes it read the new generation instead. Parts
    unchanged since `previous` (an earlier generation held by the caller; default: the one this process read or
    committed last, while it is still in use) are taken from it, and so is its prepared index, carried over.
    """
    path = Path(path)
    for _ in range(READ_ATTEMPTS):
        manifest = _read_manifest(path)
        try:
            return _read_generation(path, manifest, previous)
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
    if manifest.get("version") not in READ_VERSIONS:
        raise PhotoidError(f"{manifest_path}: catalogue format version {manifest.get('version')}, this photoid "
                           f"reads versions {', '.join(map(str, READ_VERSIONS))}; rebuild it with photoid catalog "
                           "build")
    if manifest.get("storage", "float32") not in STORAGES:
        raise PhotoidError(f"{manifest_path}: unknown embedding storage {manifest['storage']!r}")
    return manifest


def _read_generation(path: Path, manifest: dict, previous: Catalog | None) -> Catalog:
    if previous is None:
        recent = _recent.get(str(path.resolve()))
        previous = recent() if recent is not None else None
    reusable = {p.key: p for p in previous.parts} if previous is not None else {}
    parts = [reusable.get(_entry_key(entry)) or _read_part(path, entry, manifest) for entry in part_entries(manifest)]
    tables = [p.table for p in parts]
    table = tables[0] if len(tables) == 1 else with_viewpoints(pd.concat(tables, ignore_index=True))
    if len(parts) > 1:
        start = 0
        for part in parts:  # views of the joined table: each row is held once
            part.table, start = table.iloc[start:start + part.rows], start + part.rows
    catalog = Catalog(path, manifest, table, parts, previous)
    _recent[str(path.resolve())] = weakref.ref(catalog)
    return catalog


def _entry_key(entry: dict) -> tuple[str, str, str]:
    return entry["embeddings"]["name"], entry["embeddings"]["sha256"], entry["table"]["sha256"]


def _read_part(path: Path, entry: dict, manifest: dict) -> Part:
    """A part's table, read and checked now, and its embeddings, mapped now (so that a writer removing the file
    cannot take it away) and checked when first used."""
    table_path = path / entry["table"]["name"]
    raw = table_path.read_bytes()
    if hashlib.sha256(raw).hexdigest() != entry["table"]["sha256"]:
        raise PhotoidError(f"{table_path}: its content differs from what {MANIFEST} recorded (sha256); "
                           "the catalogue was changed outside photoid: rebuild it")
    table = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False)
    embeddings_path = path / entry["embeddings"]["name"]
    embeddings, mapped = _map_npy(embeddings_path)
    dim = int(manifest["dim"])
    if list(table.columns) != table_columns(table) or embeddings.shape != (len(table), dim) or (
            len(table) != int(entry["rows"])):
        raise PhotoidError(f"{path}: {len(table)} table rows with columns {list(table.columns)} for embeddings of "
                           f"shape {embeddings.shape} in {embeddings_path.name}; expected {TABLE_COLUMNS} and "
                           f"({entry['rows']}, {dim})")
    expected = STORAGES[manifest.get("storage", "float32")]
    if embeddings.dtype != expected:
        raise PhotoidError(f"{embeddings_path}: embeddings of type {embeddings.dtype}; the manifest says "
                           f"{np.dtype(expected).name}")
    checked = _verified.get(str(embeddings_path)) == (entry["embeddings"]["sha256"], *mapped.identity)
    return Part(entry, table, embeddings, None if checked else mapped)


@dataclass
class MappedFile:
    """A data file mapped into memory: the bytes the arrays over it read, checked as they are."""

    path: Path
    mapped: mmap.mmap
    identity: tuple  # (inode, size, mtime) of the file mapped, taken while it was open

    def check(self, sha256: str) -> None:
        """Compare the mapped bytes with the manifest's sha256, once per file and process (the file itself may
        have been removed since by a writer: the mapping keeps its content)."""
        if hashlib.sha256(self.mapped).hexdigest() != sha256:
            raise PhotoidError(f"{self.path}: its content differs from what {MANIFEST} recorded (sha256); "
                               "the catalogue was changed outside photoid: rebuild it")
        _verified[str(self.path)] = (sha256, *self.identity)
        while len(_verified) > _VERIFIED_MAX:
            _verified.popitem(last=False)


def _map_npy(path: Path) -> tuple[np.ndarray, MappedFile]:
    """A .npy file's array as a read-only view of the whole file mapped into memory, and that mapping."""
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
        except (ValueError, EOFError) as err:
            raise PhotoidError(f"{path} cannot be read as a numeric array file (.npy): {err}") from None
        offset = f.tell()
        if fortran or len(shape) != 2 or dtype not in (np.float32, np.float16):
            raise PhotoidError(f"{path}: expected a 2-D float32 or float16 array, found {dtype} of shape {shape}")
        st = os.fstat(f.fileno())
        if st.st_size < offset + int(np.prod(shape)) * dtype.itemsize:
            raise PhotoidError(f"{path} is shorter than its header says (a damaged file)")
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    identity = (st.st_ino, st.st_size, st.st_mtime_ns)
    return np.ndarray(shape, dtype=dtype, buffer=mapped, offset=offset), MappedFile(path, mapped, identity)


# ----------------------------------------------------------------------------- transactions

class Transaction:
    """One change to a catalogue, made while its lock is held (`catalog_transaction`).

    `catalog` is the current generation, read under the lock (None while the folder holds no catalogue). One
    `commit`, `append`, `remove` or `commit_manifest` writes the next generation; the transaction's work is lost
    only if the block raises or the process dies before the manifest is replaced.
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
        """Write the whole catalogue as the next generation (one pair of data files), replace the manifest (the
        commit), drop older files."""
        manifest = {key: value for key, value in manifest.items() if key != "parts"}
        return self.commit_parts(manifest, [(table.reset_index(drop=True), embeddings)])

    def append(self, table: pd.DataFrame, embeddings: np.ndarray, *, new_part: bool = False, **changes) -> Catalog:
        """Add rows after the current ones; `changes` replace manifest entries in the same commit.

        The rows join the last part while it holds fewer than PART_ROWS rows (it is rewritten with them), else
        they start a new part; `new_part` always starts one (a streamed build's chunk). Other parts stay as they
        are, files included.
        """
        current = self._current()
        items: list = list(current.parts)
        last = items[-1]
        if not new_part and last.rows < PART_ROWS:
            items[-1] = (with_viewpoints(pd.concat([last.table, table], ignore_index=True)),
                         np.concatenate([last.embeddings, np.asarray(embeddings, last.embeddings.dtype)]))
        else:
            items.append((table.reset_index(drop=True), embeddings))
        return self.commit_parts({**current.manifest, **changes}, items, current)

    def remove(self, keep: np.ndarray, **changes) -> Catalog:
        """Keep only the rows where `keep` (one boolean per row) is true; only the parts that lose rows are
        rewritten. `changes` replace manifest entries in the same commit."""
        current = self._current()
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (len(current.table),):
            raise ValueError(f"keep needs one boolean per catalogue row ({len(current.table)}), got {keep.shape}")
        items, start = [], 0
        for part in current.parts:
            kept = keep[start:start + part.rows]
            start += part.rows
            if kept.all():
                items.append(part)
            elif kept.any():
                items.append((part.table[kept].reset_index(drop=True), part.embeddings[kept]))
        if not items:  # the last photo left: the catalogue is one empty pair of files
            part = current.parts[0]
            items.append((part.table.iloc[:0].reset_index(drop=True), part.embeddings[:0]))
        return self.commit_parts({**current.manifest, **changes}, items, current)

    def relabel(self, table: pd.DataFrame, **changes) -> Catalog:
        """Give photos other individuals: `table` is the current table (same rows, same order) with some
        `individual_id`s changed. Only the parts holding a changed row are rewritten (their embeddings as they are);
        `changes` replace manifest entries in the same commit."""
        current = self._current()
        if len(table) != len(current.table) or \
                not np.array_equal(table["image_id"].to_numpy(), current.table["image_id"].to_numpy()):
            raise ValueError("relabel needs the current table's rows in their order")
        items, start = [], 0
        for part in current.parts:
            rows = table.iloc[start:start + part.rows]
            start += part.rows
            if np.array_equal(rows["individual_id"].to_numpy(), part.table["individual_id"].to_numpy()):
                items.append(part)
            else:
                items.append((rows.reset_index(drop=True), part.embeddings))
        return self.commit_parts({**current.manifest, **changes}, items, current)

    def commit_manifest(self, **changes) -> Catalog:
        """Replace manifest entries (e.g. the calibration) of the current generation; its data files stay."""
        current = self._current()
        manifest = {**current.manifest, **changes, "updated": _now()}
        pio.write_json(self.path / MANIFEST, manifest)
        _remove_unlisted(self.path, listed_files(manifest))
        self.manifest = manifest
        self._catalog = self.committed = Catalog(self.path, manifest, current.table, current.parts, current)
        return self.committed

    def _current(self) -> Catalog:
        if self.catalog is None:
            raise PhotoidError(f"{self.path}: not a catalogue (no {MANIFEST}); make one with photoid catalog build")
        return self.catalog

    def commit_parts(self, manifest: dict, items: list, previous: Catalog | None = None) -> Catalog:
        """Write the next generation from `items` in row order, each a kept `Part` (its files stay) or a new
        (table, embeddings) pair (written as a part of its own); `manifest` holds its other entries."""
        previous = previous if previous is not None else self._catalog
        generation = int((self.manifest or {}).get("generation", 0)) + 1
        storage = manifest.get("storage", "float32")
        written: list[str] = []
        try:
            parts = []
            for item in items:
                if isinstance(item, Part):
                    parts.append(item)
                    continue
                table, embeddings = item
                suffix = f"-{len(written) // 2}" if written else ""
                names = {"embeddings": f"embeddings-{generation:05d}{suffix}.npy",
                         "table": f"images-{generation:05d}{suffix}.csv"}
                embeddings = np.asarray(embeddings, dtype=STORAGES[storage])
                if embeddings.ndim != 2 or len(embeddings) != len(table):
                    raise ValueError(f"{len(table)} table rows for embeddings of shape {embeddings.shape}")
                written += names.values()
                pio.save_npy(self.path / names["embeddings"], embeddings)
                table = table[table_columns(table)]
                pio.write_csv(self.path / names["table"], table)
                entry = {key: {"name": name, "sha256": pio.file_sha256(self.path / name)}
                         for key, name in names.items()}
                parts.append(Part({**entry, "rows": len(table)}, table, embeddings))
            tables = [p.table for p in parts]
            table = tables[0] if len(tables) == 1 else with_viewpoints(pd.concat(tables, ignore_index=True))
            entries = [p.entry for p in parts]
            dim = int(parts[0].shape[1])
            manifest = {
                **manifest, "format": FORMAT, "generation": generation,
                "version": PARTS_FORMAT_VERSION if len(parts) > 1 or storage != "float32" else FORMAT_VERSION,
                "updated": _now(), "n_images": int(len(table)),
                "n_individuals": int(table["individual_id"].nunique()), "dim": dim,
                "files": {**manifest.get("files", {}),
                          "embeddings": entries[0]["embeddings"], "table": entries[0]["table"]},
            }
            if len(entries) > 1:
                manifest["parts"] = [{**e, "rows": int(e["rows"])} for e in entries[1:]]
            else:
                manifest.pop("parts", None)
            committed = Catalog(self.path, manifest, table, parts, previous)
            if manifest.get("index") and not manifest.get("build"):
                from photoid.catalog.approximate import maintain_stored_index

                manifest = committed.manifest = maintain_stored_index(committed, generation, written)
            pio.write_json(self.path / MANIFEST, manifest)
        except BaseException:
            # Not committed: the manifest still names the previous files, so the new ones are dropped.
            for name in written:
                (self.path / name).unlink(missing_ok=True)
            raise
        _remove_unlisted(self.path, listed_files(manifest))
        if len(parts) > 1:
            start = 0
            for part in parts:
                part.table, start = table.iloc[start:start + part.rows], start + part.rows
        self.manifest = manifest
        self._catalog = self.committed = committed
        _recent[str(self.path.resolve())] = weakref.ref(committed)
        return committed


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
        _remove_unlisted(path, listed_files(manifest) if manifest else set())
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
