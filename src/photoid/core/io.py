"""Atomic output: every file is written under a temporary name in its folder, then renamed.

An interrupted run therefore leaves either the previous file or the complete new one, never half a submission,
checkpoint or prediction file. Paths may be URLs (gs://..., `photoid.core.fs`): the file is then written to a local
temporary file, copied beside its target under a temporary name and renamed onto it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from photoid.core import fs
from photoid.core.errors import PhotoidError


def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> "AtomicPath":
    """A context manager: a temporary path beside `path`, renamed onto `path` only if the block succeeds.

    `suffix` keeps an extension that a writer needs to see (e.g. ".h5", ".keras", ".npy"). The temporary file is
    ".NAME.RANDOM.tmpSUFFIX" in `path`'s folder (the same file system, so the rename is atomic). A URL's file is
    written to a local temporary file, then copied beside its target and renamed.
    """
    if fs.is_remote(path):
        return _atomic_remote_path(fs.as_path(path), suffix)
    return AtomicPath(path, suffix)


class AtomicPath:
    """`atomic_path`'s context manager; however it ends (an error, Ctrl-C), no temporary file is left behind.

    Ctrl-C raises KeyboardInterrupt wherever Python next checks for signals: on entering a Python function, on a
    loop's backward jump, just after a call returns. A generator-based context manager had such checks between
    creating the temporary file and arming the code that removes it (inside `tempfile.mkstemp`, before its
    `try`), and an interrupted `photoid tfrecords` once left a shard's temporary file so. Here the name is
    recorded before the file is created, and all that follows is inside the block that removes it. The checks
    that no block can cover (on entering `__exit__` or the removal) leave `tmp` set, and `__del__` removes it.
    """

    tmp: str | None = None  # the temporary file, while it may exist

    def __init__(self, path: str | os.PathLike, suffix: str | None = None):
        self.path = Path(path)
        self.suffix = self.path.suffix if suffix is None else suffix

    def __enter__(self) -> str:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            while True:
                # Named before it exists: interrupted just after the open, the file is still known and removed.
                self.tmp = str(self.path.parent / f".{self.path.name}.{secrets.token_hex(6)}.tmp{self.suffix}")
                try:
                    # 0o666 less the umask: the permissions any new file gets, kept by the rename.
                    os.close(os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
                    return self.tmp
                except FileExistsError:  # another writer's name (one chance in 2**48): not ours to remove
                    self.tmp = None
        except BaseException:
            self._remove_temporary()
            raise

    def __exit__(self, exc_type, exc, traceback) -> bool:
        try:
            if exc_type is None:
                os.replace(self.tmp, self.path)
        finally:
            self._remove_temporary()  # (after the rename, only forgets its name)
        return False

    def __del__(self) -> None:
        self._remove_temporary()

    def _remove_temporary(self) -> None:
        if self.tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.tmp)
            self.tmp = None


@contextlib.contextmanager
def _atomic_remote_path(path, suffix: str | None) -> Iterator[str]:
    """A remote file: written locally, copied beside `path` under a temporary name, then renamed onto it."""
    suffix = path.suffix if suffix is None else suffix
    fs.makedirs(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}")
    os.close(fd)
    staged = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{suffix}")
    try:
        yield tmp
        fs.copy(tmp, staged)
        fs.replace(staged, path)
    finally:
        os.remove(tmp)
        with contextlib.suppress(Exception):   # only left behind by a failed copy or rename
            fs.remove(staged, missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_csv(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame without its index."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, np.asarray(array), allow_pickle=False)


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """Load an array; pickled object arrays are refused (a prediction file never needs code to load).

    A damaged or pickled file is a PhotoidError naming it, so commands report it in one line.
    """
    try:
        if fs.is_remote(path):
            with fs.open_file(path, "rb") as f:
                return np.load(io.BytesIO(f.read()), allow_pickle=False)
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as err:
        raise PhotoidError(f"{path} cannot be read as a numeric array file (.npy): {err}") from None


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with fs.open_file(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: str | os.PathLike):
    """Read a JSON file; a damaged one is a PhotoidError naming it."""
    try:
        with fs.open_file(path, "r") as f:
            return json.load(f)
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise PhotoidError(f"{path} is not a valid JSON file: {err}") from None
