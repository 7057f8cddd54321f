"""Synthetic data sets in the competitions' exact formats, for demos, tests and benchmarks.

The real competition data cannot be downloaded everywhere, so the generators write folders that the rest of
photoid reads exactly as it reads the real ones, plus the hidden truth of their test sets so that runs can be
scored. The helpers here are shared by the generators: seeded random streams, competition-style ids, a process
pool that keeps results independent of worker scheduling, and an output folder that appears complete or not at
all. The generators are `turtles` (Turtle Recall), `belugas` (Where's Whale-do) and `generic` (a generic folder);
`markings` draws an individual's markings and each photo's nuisance; `cli` is `photoid synth`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from photoid.core.errors import PhotoidError

UPPER_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
MIXED_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

T = TypeVar("T")
R = TypeVar("R")


def derive_rng(seed: int, *stream: int) -> np.random.Generator:
    """A generator for one named stream of one seed (e.g. `(IMAGE_STREAM, image_index)`).

    Streams are derived with `SeedSequence(seed, spawn_key=stream)`, so each image or individual gets the same
    random numbers whatever else is generated, in whatever order and in whichever worker process.
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=tuple(int(s) for s in stream)))


def random_codes(rng: np.random.Generator, n: int, *, prefix: str, alphabet: str, length: int) -> list[str]:
    """`n` distinct ids such as `ID_6NEDKOYZ` (prefix + `length` characters drawn from `alphabet`)."""
    letters = np.array(list(alphabet))
    codes: list[str] = []
    seen: set[str] = set()
    while len(codes) < n:
        code = prefix + "".join(rng.choice(letters, size=length))
        if code not in seen:
            seen.add(code)
            codes.append(code)
    return codes


def check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise PhotoidError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def refuse_invalid_settings(problems: list[str]) -> None:
    """Refuse a generator's settings with every problem found, one per line (nothing when there is none)."""
    if problems:
        raise PhotoidError("invalid synthetic data settings:\n" + "\n".join(f"  - {p}" for p in problems))


def resolve_workers(workers: int | None) -> int:
    """`None` means every core; anything below 1 is refused rather than silently changed."""
    if workers is None:
        return max(1, os.cpu_count() or 1)
    if workers < 1:
        raise PhotoidError(f"workers must be at least 1, got {workers}")
    return int(workers)


def map_in_order(fn: Callable[[T], R], tasks: Sequence[T], workers: int, *, chunksize: int = 8,
                 progress: str | None = None) -> list[R]:
    """`[fn(t) for t in tasks]`, spread over `workers` processes; results come back in task order.

    Determinism never depends on the pool: every task carries everything it needs (its own seed included).
    Processes are spawned, not forked, so a caller that has already started TensorFlow's threads is safe.
    `progress` is a label for a progress bar on stderr (none when `None`).
    """
    results: Iterable[R]
    if workers == 1 or len(tasks) <= 1:
        results = map(fn, tasks)
        return list(_with_progress(results, len(tasks), progress))
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(workers, len(tasks))) as pool:
        results = pool.imap(fn, tasks, chunksize=chunksize)
        return list(_with_progress(results, len(tasks), progress))


def _with_progress(items: Iterable[R], total: int, label: str | None) -> Iterable[R]:
    if label is None:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc=label, unit="img")


@contextlib.contextmanager
def staged_output_dir(out_dir: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield an empty folder beside `out_dir`; it becomes `out_dir` only if the block finishes.

    An interrupted or failed run removes its staging folder, so `out_dir` holds either the previous content or a
    complete new data set. An existing non-empty `out_dir` is replaced only with `force`.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PhotoidError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise PhotoidError(f"{out} is not empty; choose another folder or pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = None
    if out.exists():
        # Move the old folder aside first, so the new one lands with a single rename.
        previous = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, previous / out.name)
    os.replace(staging, out)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
