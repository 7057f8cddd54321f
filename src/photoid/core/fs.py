"""Paths on the local disk or on a remote file system (gs://..., or TensorFlow's ram:// in the tests), one API.

The Turtle Recall original trained on a TPU, and a TPU reads its records from Cloud Storage: records, folds.csv,
records.json, run folders, predictions and weights may therefore all be URLs (`scheme://...`). A local path is
handled by the standard library and never loads TensorFlow (the light modules rely on that); a URL goes through
TensorFlow's file system (`tf.io.gfile`), the one that knows gs://, imported on first use. pyproject.toml allows
that one import in its light-modules contract for this reason.

`as_path(p)` is a `pathlib.Path` for a local path and a `RemotePath` for a URL, with the subset of Path's methods
the run and records folders use (`/`, `name`, `parent`, `suffix`, `with_suffix`, `with_name`, `exists`, `is_file`,
`is_dir`, `mkdir`, `glob`, `iterdir`, `read_text`, `read_bytes`, `unlink`, `stat`, `resolve`), so code written
against Path works on both. `pathlib.Path("gs://b/x")` would collapse the `//` into `gs:/b/x`, a local path: never
build a Path from a string that may be a URL.
"""

from __future__ import annotations

import builtins
import glob as _glob
import os
import shutil
from pathlib import Path, PurePosixPath
from typing import IO, NamedTuple


def is_remote(path: str | os.PathLike | "RemotePath") -> bool:
    """Whether `path` is a URL (`scheme://...`) rather than a local path."""
    return isinstance(path, RemotePath) or "://" in str(path)


def _gfile():
    import tensorflow as tf  # photoid's package import has already chosen tf-keras

    return tf.io.gfile


class RemoteStat(NamedTuple):
    st_size: int
    st_mtime_ns: int  # 0 where the file system keeps no time (ram://)


class RemotePath:
    """A URL handled like a `pathlib.Path` (see the module notes); every operation goes through `tf.io.gfile`."""

    __slots__ = ("_scheme", "_inner")

    def __init__(self, url: str | "RemotePath"):
        scheme, sep, rest = str(url).partition("://")
        if not sep or not scheme:
            raise ValueError(f"not a URL: {url!r}")
        self._scheme = scheme
        self._inner = PurePosixPath(rest.rstrip("/") or "/")

    # --------------------------------------------------------------- pure path operations
    def __str__(self) -> str:
        inner = str(self._inner)
        return f"{self._scheme}://{'' if inner == '/' else inner}"

    def __repr__(self) -> str:
        return f"RemotePath({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RemotePath) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __lt__(self, other) -> bool:
        return str(self) < str(other)

    def __truediv__(self, name: str | os.PathLike) -> "RemotePath":
        return RemotePath(f"{self._scheme}://{self._inner / str(name)}")

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def stem(self) -> str:
        return self._inner.stem

    @property
    def suffix(self) -> str:
        return self._inner.suffix

    @property
    def parent(self) -> "RemotePath":
        return RemotePath(f"{self._scheme}://{self._inner.parent}")

    def with_suffix(self, suffix: str) -> "RemotePath":
        return RemotePath(f"{self._scheme}://{self._inner.with_suffix(suffix)}")

    def with_name(self, name: str) -> "RemotePath":
        return RemotePath(f"{self._scheme}://{self._inner.with_name(name)}")

    def is_absolute(self) -> bool:
        return True

    def resolve(self) -> "RemotePath":
        return self

    # --------------------------------------------------------------- the file system
    def exists(self) -> bool:
        return _gfile().exists(str(self))

    def is_dir(self) -> bool:
        return _gfile().isdir(str(self))

    def is_file(self) -> bool:
        return self.exists() and not self.is_dir()

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        if self.exists() and not exist_ok:
            raise FileExistsError(str(self))
        _gfile().makedirs(str(self)) if parents else _gfile().mkdir(str(self))

    def glob(self, pattern: str) -> list["RemotePath"]:
        return [RemotePath(p) for p in sorted(_gfile().glob(f"{self}/{pattern}"))]

    def iterdir(self) -> list["RemotePath"]:
        return [self / name.rstrip("/") for name in sorted(_gfile().listdir(str(self)))]

    def read_bytes(self) -> bytes:
        with _gfile().GFile(str(self), "rb") as f:
            return f.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def unlink(self, missing_ok: bool = False) -> None:
        if missing_ok and not self.exists():
            return
        _gfile().remove(str(self))

    def stat(self) -> RemoteStat:
        info = _gfile().stat(str(self))
        return RemoteStat(int(info.length), int(info.mtime_nsec))


def as_path(path: str | os.PathLike | RemotePath) -> Path | RemotePath:
    """A `Path` for a local path, a `RemotePath` for a URL."""
    if isinstance(path, (Path, RemotePath)):
        return path
    return RemotePath(str(path)) if is_remote(path) else Path(path)


def join(path: str | os.PathLike | RemotePath, *names: str) -> str:
    """`path` joined with `names`, as a string (a URL stays a URL)."""
    joined = as_path(path)
    for name in names:
        joined = joined / name
    return str(joined)


def open_file(path: str | os.PathLike | RemotePath, mode: str = "r") -> IO:
    """A file object, text (UTF-8) or binary by `mode`, on the local disk or through TensorFlow's file system."""
    if is_remote(path):
        return _gfile().GFile(str(path), mode)
    return builtins.open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"}))


def exists(path) -> bool:
    return as_path(path).exists()


def makedirs(path) -> None:
    """Create the folder and its parents (nothing to do where it exists)."""
    if is_remote(path):
        _gfile().makedirs(str(path))
    else:
        os.makedirs(path, exist_ok=True)


def listdir(path) -> list[str]:
    """The names in a folder (without a trailing slash)."""
    if is_remote(path):
        return sorted(name.rstrip("/") for name in _gfile().listdir(str(path)))
    return sorted(os.listdir(path))


def glob(pattern: str) -> list[str]:
    """The paths matching `pattern` (`*`, `?`, `[...]`), sorted; a local pattern's folder part is not escaped."""
    if is_remote(pattern):
        return sorted(_gfile().glob(pattern))
    return sorted(_glob.glob(pattern))


def remove(path, missing_ok: bool = False) -> None:
    if missing_ok and not exists(path):
        return
    if is_remote(path):
        _gfile().remove(str(path))
    else:
        os.remove(path)


def rmtree(path, missing_ok: bool = True) -> None:
    """Delete a folder and everything in it."""
    if not exists(path):
        if missing_ok:
            return
        raise FileNotFoundError(str(path))
    if is_remote(path):
        _gfile().rmtree(str(path))
    else:
        shutil.rmtree(path)


def replace(source, target) -> None:
    """Rename `source` onto `target` (both on one file system), replacing it."""
    if is_remote(source) != is_remote(target):
        raise ValueError(f"cannot rename {source} onto {target}: they are on different file systems")
    if is_remote(source):
        _gfile().rename(str(source), str(target), overwrite=True)
    else:
        os.replace(source, target)


def copy(source, target) -> None:
    """Copy a file, local or remote on either side, replacing `target`."""
    if is_remote(source) or is_remote(target):
        _gfile().copy(str(source), str(target), overwrite=True)
    else:
        shutil.copyfile(source, target)


def absolute(path) -> str:
    """`path` made absolute (a URL is already), as a string."""
    return str(path) if is_remote(path) else str(Path(path).resolve())


AnyPath = Path | RemotePath  # what `as_path` returns
