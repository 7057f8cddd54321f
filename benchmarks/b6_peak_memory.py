"""B6 — peak memory (RSS) of record building and of one training epoch: 8 000 photos vs 1 000.

Nothing should hold the data set in memory unless `cache` is asked for, so the peak should hardly move when the
data set grows eightfold. Each measurement runs in a fresh process (this file, run as a script) so that earlier
work leaves nothing behind: record building is `photoid.records.writer.write_records` for five folds (the rows cycle over
a few hundred generated photos, each row prepared from its file like any other); the epoch is
`photoid.training.fold.train_fold` on fold 0 of those records, validation included, as `photoid train` runs it. The peak
is the process's exact peak RSS (VmHWM); the private memory of the process and its worker processes together
(sampled every 0.1 s) shows that the workers do not grow either.

When the epoch's peak grows, the epoch is measured again with every dataset built uncached, which shows whether
a cache explains the growth.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from _common import Goal, Result, image_paths, synthetic_turtles

GOAL = Goal(1.2, higher_is_better=False)
N_FOLDS = 5
N_CLASSES = 100
MIB = 2**20


@dataclass(frozen=True)
class Settings:
    photos: tuple[int, int]  # (long side in px, number of distinct photos the rows cycle over)
    rows: tuple[int, int]  # small and large data set
    dim_pre: int
    dim: int
    batch_size: int


PRESETS = {
    # dim_pre 256 keeps the run short; what a cache holds grows with dim_pre² (0.75 MiB per photo at 512).
    "full": Settings(photos=(1000, 200), rows=(1000, 8000), dim_pre=256, dim=64, batch_size=32),
    "tiny": Settings(photos=(96, 24), rows=(40, 160), dim_pre=32, dim=32, batch_size=8),
}


# --- the measured work, run in a child process ---------------------------------------------------------------------

def write_fold_records(photos_dir: Path, rows: int, out: Path, dim_pre: int) -> None:
    import pandas as pd

    from photoid.records.writer import RecordsManifest, image_preparer, write_records

    photos = image_paths(photos_dir)
    table = pd.DataFrame({"image_id": [f"ID_{i:07d}" for i in range(rows)], "label": [i % N_CLASSES
                                                                                     for i in range(rows)]})
    paths = [photos[i % len(photos)] for i in range(rows)]
    manifest = RecordsManifest.open(out, {"benchmark": "B6", "rows": rows, "dim_pre": dim_pre})
    per_fold = rows // N_FOLDS
    with image_preparer() as preparer:  # worker processes shared by the five record sets, as `photoid tfrecords`
        for fold in range(N_FOLDS):
            part = slice(fold * per_fold, rows if fold == N_FOLDS - 1 else (fold + 1) * per_fold)
            write_records(table[part], paths[part], out / f"fold.{fold}.tfrecord", string_columns=("image_id",),
                          int_columns=("label",), dim_pre=dim_pre, layout="compact", manifest=manifest,
                          preparer=preparer)


@contextlib.contextmanager
def recorded_datasets(force_uncached: bool) -> Iterator[list[dict]]:
    """Yield a list that receives `{"training", "cache"}` for every `build_dataset` call made inside.

    With `force_uncached` each of those datasets is built with `cache=False`, whatever the caller asked for.
    `train_fold` looks `build_dataset` up when it runs, so swapping the module attribute reaches its calls.
    """
    from photoid.records import reader as pipeline

    original, calls = pipeline.build_dataset, []

    def recording(*args, **kwargs):
        calls.append({"training": bool(kwargs.get("training")), "cache": bool(kwargs.get("cache", False))})
        return original(*args, **({**kwargs, "cache": False} if force_uncached else kwargs))

    pipeline.build_dataset = recording
    try:
        yield calls
    finally:
        pipeline.build_dataset = original


def train_one_epoch(records: Path, run_dir: Path, settings: Settings, uncached: bool) -> list[dict]:
    """One epoch of `train_fold` on fold 0; returns how each dataset it built was asked to cache."""
    import photoid  # noqa: F401
    import tensorflow as tf

    from photoid.runs.config import Config
    from photoid.training.fold import train_fold

    cfg = Config(backbone="simple-cnn", dim=settings.dim, dim_pre=settings.dim_pre, batch_size=settings.batch_size,
                 lr=1e-3, n_epochs=1, n_folds=N_FOLDS, data_tfrec_dir=str(records), run_dir=str(run_dir),
                 verbose=0)
    with recorded_datasets(force_uncached=uncached) as calls:
        train_fold(cfg, 0, run_dir, tf.distribute.get_strategy(), N_CLASSES)
    return calls


def child_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("task", choices=("records", "epoch"))
    parser.add_argument("--photos", type=Path)
    parser.add_argument("--rows", type=int)
    parser.add_argument("--records", type=Path)
    parser.add_argument("--run_dir", type=Path)
    parser.add_argument("--preset", choices=tuple(PRESETS))
    parser.add_argument("--uncached", action="store_true")
    args = parser.parse_args(argv)
    settings = PRESETS[args.preset]
    datasets: list[dict] = []
    if args.task == "records":
        write_fold_records(args.photos, args.rows, args.records, settings.dim_pre)
    else:
        datasets = train_one_epoch(args.records, args.run_dir, settings, args.uncached)
    print(json.dumps({"self_mib": peak_rss_mib(), "datasets": datasets}))


def peak_rss_mib() -> float:
    """This process's peak RSS since it started its program (VmHWM).

    Not `ru_maxrss`: Linux carries that over from the process that forked this one, so a child of a large process
    would report its parent's peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --- the measurement, in this process -------------------------------------------------------------------------------

def _private_bytes(pid: int) -> int:
    """Memory only this process uses (USS: its private pages), from /proc; 0 when it cannot be read.

    Data a process holds is private to it. Shared pages are left out on purpose: a worker that has just been
    forked, and not yet replaced by a fresh interpreter, shares all of its parent's pages, and libraries are
    shared with every other program using them, which would make a sum depend on what else runs.
    """
    private = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    private += int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0
    return private


def _descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children", encoding="ascii") as f:
                    children = [int(c) for c in f.read().split()]
            except OSError:
                continue
            found += children
            stack += children
    return found


def measure_child(args: list[str]) -> dict[str, float]:
    """Run this file as a child with `args`: its own exact peak RSS and the peak private memory of it and its
    worker processes together (sampled), in MiB."""
    process = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "TQDM_DISABLE": "1"})
    peak = 0
    while process.poll() is None:
        peak = max(peak, sum(_private_bytes(p) for p in [process.pid, *_descendants(process.pid)]))
        time.sleep(0.1)
    out = process.stdout.read()
    if process.returncode != 0:
        raise RuntimeError(f"the B6 child `{' '.join(args)}` failed with exit code {process.returncode}")
    reported = json.loads(out.strip().splitlines()[-1])
    return {"tree_private_mib": peak / MIB, **reported}


def measure_rows(rows: int, photos_dir: Path, scratch: Path, preset: str) -> dict[str, dict]:
    records, run_dir = scratch / f"records-{rows}", scratch / f"run-{rows}"
    common = ["--records", str(records), "--preset", preset]
    figures = {"records": measure_child(["records", "--photos", str(photos_dir), "--rows", str(rows), *common])}
    figures["epoch"] = measure_child(["epoch", "--run_dir", str(run_dir), *common])
    return figures


def _describe(figures: dict[str, float]) -> str:
    return (f"peak RSS {figures['self_mib']:.0f} MiB; private memory of the process and its workers together "
            f"{figures['tree_private_mib']:.0f} MiB at its peak (sampled every 0.1 s)")


def run(preset: str, cache_dir: Path) -> list[Result]:
    settings = PRESETS[preset]
    small, large = settings.rows
    photos_dir = synthetic_turtles(cache_dir, *settings.photos)
    with tempfile.TemporaryDirectory(prefix="b6-", dir=cache_dir) as scratch:
        by_rows = {rows: measure_rows(rows, photos_dir, Path(scratch), preset) for rows in (small, large)}
        results = []
        for task, what in (("records", "record building"), ("epoch", "one training epoch")):
            low, high = by_rows[small][task], by_rows[large][task]
            details = [f"{rows:,} photos: {_describe(by_rows[rows][task])}" for rows in (small, large)]
            details.append(f"growth of the private memory with workers: "
                           f"{high['tree_private_mib'] / max(low['tree_private_mib'], 1e-9):.2f}×")
            results.append(Result(
                id=f"B6-{task}", what=f"peak memory of {what}, {large:,} vs {small:,} photos",
                ours=high["self_mib"], baseline=low["self_mib"], unit="MiB", ratio=high["self_mib"] / low["self_mib"],
                goal=GOAL, ours_label=f"{large:,} photos", baseline_label=f"{small:,} photos", details=details))
        epoch = results[1]
        if not epoch.met:
            uncached = {rows: measure_child(["epoch", "--run_dir", str(Path(scratch) / f"uncached-{rows}"),
                                             "--records", str(Path(scratch) / f"records-{rows}"), "--preset", preset,
                                             "--uncached"])
                        for rows in (small, large)}
            cached = [("training" if d["training"] else "validation") for d in by_rows[large]["epoch"]["datasets"]
                      if d["cache"]]
            epoch.notes.append(
                f"Why the peak grows: the same epoch with every dataset uncached peaks at "
                f"{uncached[small]['self_mib']:.0f} MiB ({small:,} photos) and {uncached[large]['self_mib']:.0f} MiB "
                f"({large:,}): {uncached[large]['self_mib'] / uncached[small]['self_mib']:.2f}×. "
                + (f"`train_fold` asks `build_dataset` to cache its {' and '.join(cached)} dataset (cache=True) "
                   f"whatever `cfg.cache` says; a cached dataset keeps every decoded image at dim_pre "
                   f"({settings.dim_pre}² × 3 bytes = {settings.dim_pre ** 2 * 3 / MIB:.2f} MiB each) in memory."
                   if cached else "`train_fold` asked for no cache."))
    notes = [f"rows cycle over {len(image_paths(photos_dir))} photos of {settings.photos[0]} px; records at dim_pre "
             f"{settings.dim_pre}; the epoch trains simple-cnn at dim {settings.dim}, batch {settings.batch_size}, "
             f"on folds 1-4 and validates on fold 0."]
    for result in results:
        result.notes[:0] = notes
    return results


if __name__ == "__main__":
    child_main(sys.argv[1:])
