"""The records folder, read: its manifest's settings, its shard files, and their completeness.

    folds.csv                        the fold of every labelled image
    fold.K.tfrecord-SSSSS-of-NNNNN   rows of fold K, in the order of fold K's rows in folds.csv
    test.tfrecord-SSSSS-of-NNNNN     test rows
    records.json                     settings, and every shard's row count, sha256 and input fingerprint

`photoid.records.writer.RecordsManifest` writes the folder; every reader asks a `RecordsDir`. Light on purpose (no
TensorFlow for a local folder): a remote one (gs://..., what a TPU reads) goes through TensorFlow's file system
(`photoid.core.fs`), a local one through the standard library.
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Iterable

from photoid.core import fs
from photoid.core.errors import PhotoidError

IMAGE_FEATURE = "image"  # the feature holding a record's photo (photoid.records.reader.feature_spec)
MANIFEST_NAME = "records.json"
FOLDS_CSV = "folds.csv"
SHARD_PATTERN = re.compile(r".+\.tfrecord-\d{5}-of-\d{5}$")
_SHARD_NAME = re.compile(r"^(.+)-(\d{5})-of-(\d{5})$")
MIRRORED_VIEWPOINT = "right"  # the viewpoint whale records store mirrored (`mirror_right`), as if seen from the left
# The viewpoints a photo may be given when it is identified or added to a catalogue: a right view is mirrored for runs
# whose records mirrored right views (the Where's Whale-do metadata's viewpoints).
VIEWPOINTS = ("top", "left", "right")
LAYOUTS = ("exact", "compact", "original")  # how a record stores its photo (photoid.records.writer.LAYOUT_CONTENTS); the
# first is the default


def shard_name(prefix: str, shard: int, shards: int) -> str:
    return f"{prefix}-{shard:05d}-of-{shards:05d}"


def records_layout(settings: dict) -> str:
    """The layout a records.json's settings name (folders written before layouts existed say keep_original)."""
    layout = settings.get("layout")
    if layout is None:
        return "original" if settings.get("keep_original") else "compact"
    if layout not in LAYOUTS:
        raise PhotoidError(f"unknown records layout {layout!r}; known layouts: {', '.join(LAYOUTS)}")
    return layout


class Files:
    """The file operations a RecordsDir needs, local or remote (`photoid.core.fs`)."""

    glob = staticmethod(fs.glob)
    exists = staticmethod(fs.exists)

    @staticmethod
    def read_text(path: str) -> str:
        with fs.open_file(path, "r") as f:
            return f.read()


is_remote = fs.is_remote


class RecordsDir:
    """One records folder, local or remote (`files`: another file system with `Files`' operations)."""

    def __init__(self, path: str | os.PathLike, files=None):
        self.path = str(path).rstrip("/") or "/"
        self.files = files or Files()
        self._manifest: dict | None = None

    def __repr__(self) -> str:
        return f"RecordsDir({self.path!r})"

    def join(self, name: str) -> str:
        return f"{self.path}/{name}"

    @property
    def manifest_path(self) -> str:
        return self.join(MANIFEST_NAME)

    @property
    def folds_csv(self) -> str:
        return self.join(FOLDS_CSV)

    # ------------------------------------------------------------------ manifest
    def has_manifest(self) -> bool:
        return self.files.exists(self.manifest_path)

    def manifest(self) -> dict:
        """records.json ({} where the folder has none), read once."""
        if self._manifest is None:
            if not self.has_manifest():
                self._manifest = {}
            else:
                try:
                    value = json.loads(self.files.read_text(self.manifest_path))
                except (UnicodeDecodeError, json.JSONDecodeError) as err:
                    raise PhotoidError(f"{self.manifest_path}: not a JSON file ({err})") from None
                if not isinstance(value, dict):
                    raise PhotoidError(f"{self.manifest_path}: expected a JSON object")
                self._manifest = value
        return self._manifest

    def settings(self) -> dict:
        settings = self.manifest().get("settings", {})
        return settings if isinstance(settings, dict) else {}

    def setting(self, name: str, default):
        """One setting of records.json (`default` when the file or the setting is absent)."""
        return self.settings().get(name, default)

    def grouped(self) -> bool:
        """Whether whale records' folds are grouped by encounter (their records.json says; older records were)."""
        return bool(self.setting("grouped", True))

    def pair_lateral(self) -> bool:
        return bool(self.setting("pair_lateral", False))

    def photo_settings(self) -> tuple[int, str, bool]:
        """(dim_pre, layout, rotate_wide): how the records store each photo. The folder must have its records.json."""
        if not self.has_manifest():
            raise PhotoidError(f"{self.manifest_path} not found; pass the records folder the run was trained from")
        settings = self.settings()
        if not isinstance(settings.get("dim_pre"), int) or not isinstance(settings.get("layout", ""), str):
            raise PhotoidError(f"{self.manifest_path}: its settings lack dim_pre (an integer) or have a layout that "
                               "is not a name")
        try:
            return settings["dim_pre"], records_layout(settings), bool(settings.get("rotate_wide", False))
        except PhotoidError as err:
            raise PhotoidError(f"{self.manifest_path}: {err}") from None

    def mirror_right(self) -> bool | None:
        """Whether the records store right views mirrored: records.json's `mirror_right` (whale records say);
        None where they do not say (records of other tasks, which never mirror)."""
        value = self.setting("mirror_right", None)
        return None if value is None else bool(value)

    def classes(self) -> list[str] | None:
        """The label space records.json lists (None where it lists none: the labels index the folds' individuals)."""
        classes = self.manifest().get("classes")
        if classes is None:
            return None
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes) or classes != sorted(
                set(classes)):
            raise PhotoidError(f"{self.manifest_path}: its classes must be distinct ids in sorted order")
        return classes

    def listed_rows(self, name: str) -> int | None:
        """The row count records.json lists for shard `name` (None: not listed)."""
        entry = self.manifest().get("shards", {}).get(name)
        return None if entry is None else int(entry["rows"])

    def check_same_mirroring(self, other: "RecordsDir", run_dir) -> None:
        """Refuse records (`other`) whose right views or wide photos are stored otherwise than in these, the run's
        training records (when both folders say): a model that only saw mirrored right views, or upright lateral
        photos, would be shown others."""
        if not self.has_manifest() or not other.has_manifest():
            return
        trained, given = self.settings(), other.settings()
        for name, default in (("mirror_right", None), ("rotate_wide", False)):
            if trained.get(name, default) != given.get(name, default):
                raise PhotoidError(f"{run_dir} was trained on records with {name}={trained.get(name, default)} "
                                   f"({self.path}), but the records of {other.path} have "
                                   f"{name}={given.get(name, default)}; rebuild them with the same setting")

    # ------------------------------------------------------------------ shards
    def shard_files(self, prefix: str) -> list[str]:
        """The shards of record set `prefix` (`fold.K` or `test`) in order; none is an error."""
        folder = self.path if is_remote(self.path) else glob.escape(self.path)
        pattern = f"{folder}/{prefix}.tfrecord-*-of-*"
        files = sorted(self.files.glob(pattern))
        if not files:
            raise PhotoidError(f"no {prefix}.tfrecord-* files in {self.path}; write them with `photoid records` "
                               "(or `photoid tfrecords` / `photoid whale-records`)")
        return files

    def fold_files(self, folds: Iterable[int]) -> list[str]:
        """The record shards of the given folds, fold by fold, each fold's shards in order."""
        return [path for fold in folds for path in self.shard_files(f"fold.{int(fold)}")]

    def test_files(self) -> list[str]:
        return self.shard_files("test")

    def check_complete(self, files: Iterable[str]) -> None:
        """Refuse record sets among `files` that lack shards.

        A `photoid tfrecords` run that was stopped leaves only finished shards under their final names, so a fold
        can be present with some of its shards: reading it as it is would train or predict on part of the fold.
        """
        shards: dict[str, set[tuple[int, int]]] = {}  # record set -> (shard, of) pairs found
        for path in files:
            match = _SHARD_NAME.match(os.path.basename(str(path)))
            if match:
                shards.setdefault(match.group(1), set()).add((int(match.group(2)), int(match.group(3))))
        incomplete = []
        for prefix, found in shards.items():
            totals = {total for _, total in found}
            expected = {(shard, total) for total in totals for shard in range(total)}
            if len(totals) > 1 or found != expected:
                names = ", ".join(f"{shard + 1} of {total}" for shard, total in sorted(found))
                incomplete.append(f"{prefix} has shards {names}")
        if incomplete:
            raise PhotoidError(f"incomplete records in {self.path}: {'; '.join(incomplete)}. An interrupted "
                               "build resumes where it stopped when its command runs again")
