"""What every benchmark shares: results and goals, timing, cached synthetic inputs, the machine's description.

Benchmarks compare the project's own code path ("ours") with an honest reimplementation of the original's way
("baseline") on the same inputs, interleaving the two so that load from other programs hits both alike, and
report the median of several runs. Generating the synthetic photos and writing records are not timed (unless
writing records is what is measured); both are cached under `benchmarks/.cache/`, so a rerun starts measuring
at once.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
CACHE_DIR = BENCH_DIR / ".cache"


@dataclass(frozen=True)
class Goal:
    """A bound on a benchmark's ratio: at least `bound` when higher is better, at most `bound` otherwise."""

    bound: float
    higher_is_better: bool = True

    def met(self, ratio: float) -> bool:
        return ratio >= self.bound if self.higher_is_better else ratio <= self.bound

    def __str__(self) -> str:
        return f"{'≥' if self.higher_is_better else '≤'} {self.bound:g}×"


@dataclass
class Result:
    """One row of the results table, with the growth figures and notes that explain it."""

    id: str
    what: str
    ours: float
    baseline: float
    unit: str  # of `ours` and `baseline`, e.g. "images/s", "s", "MiB"
    ratio: float  # as the goal reads it, e.g. ours/baseline for rates, baseline/ours for times
    goal: Goal
    ours_label: str = "ours"
    baseline_label: str = "baseline"
    details: list[str] = field(default_factory=list)  # growth figures and extra measurements, one line each
    notes: list[str] = field(default_factory=list)  # what was measured and how; why a goal is missed

    @property
    def met(self) -> bool:
        return self.goal.met(self.ratio)


def median_of(runs: int, measure: Callable[[], float]) -> float:
    """Median of `runs` calls of `measure` (each returns one figure, e.g. seconds or images/s)."""
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    return statistics.median(measure() for _ in range(runs))


def interleaved_medians(runs: int, measures: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Median per name of `runs` rounds, each round calling every measure once, in turn.

    Interleaving makes a burst of load from other programs fall on all the compared ways, not on one of them.
    """
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    figures: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(runs):
        for name, measure in measures.items():
            figures[name].append(measure())
    return {name: statistics.median(values) for name, values in figures.items()}


def seconds(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call of `fn`."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def pool_workers(n_photos: int) -> int | None:
    """Processes for generating or writing `n_photos`: every core, except for a few dozen photos, where starting
    a pool costs more than it saves."""
    return 1 if n_photos < 64 else None


def synthetic_turtles(cache_dir: Path, long_side: int, n_images: int, seed: int = 0) -> Path:
    """A synthetic Turtle Recall folder of about `n_images` photos whose long side is `long_side` px, cached.

    The generator writes a folder completely or not at all, so an existing folder with its `synth.json` is reused.
    """
    from photoid.synth.turtles import generate_turtles

    out = Path(cache_dir) / f"turtles-{long_side}px-{n_images}-seed{seed}"
    if not (out / "synth.json").exists():
        # About 20 photos per original turtle with these settings (train, extra, overlap and test together).
        n_original = max(4, round(n_images / 20))
        print(f"generating about {n_images} synthetic photos of {long_side} px in {out} (once; cached)", flush=True)
        generate_turtles(out, seed=seed, n_original=n_original, n_extra=n_original, images_per_turtle=8,
                         size=long_side, workers=pool_workers(n_images), force=True)
    return out


def turtle_records(cache_dir: Path, data_dir: Path, dim_pre: int, layout: str,
                   workers: int | None = None) -> Path:
    """The records of `data_dir` as `photoid tfrecords` writes them (5 folds and test), cached.

    The writer keeps shards whose inputs have not changed, so a rerun finds them complete and writes nothing.
    """
    from photoid.turtles.records import build_turtle_records

    out = Path(cache_dir) / f"records-{Path(data_dir).name}-{layout}{dim_pre}"
    build_turtle_records(data_dir, out, dim_pre=dim_pre, layout=layout, workers=workers)
    return out


def image_paths(data_dir: Path) -> list[str]:
    return sorted(str(p) for p in (Path(data_dir) / "images").glob("*.JPG"))


class OtherLoad:
    """How much of the machine's processor time others took while a benchmark ran (Linux; else None).

    From /proc/stat: the machine's busy time, less this process's own and that of its finished child processes
    (getrusage), is what other programs used (`share`); the time the hypervisor ran something else on this virtual
    machine's processors ("steal") is `steal`. Both slowed the benchmark down.
    """

    def __enter__(self) -> "OtherLoad":
        self.share: float | None = None
        self.steal: float | None = None
        self._start = (time.perf_counter(), *_busy_and_steal_seconds(), own_cpu_seconds())
        return self

    def __exit__(self, *exc) -> None:
        end = (time.perf_counter(), *_busy_and_steal_seconds(), own_cpu_seconds())
        wall, busy, steal, own = (e - s for e, s in zip(end, self._start))
        capacity = wall * (os.cpu_count() or 1)
        if self._start[1] >= 0 and busy >= 0 and capacity > 0:
            self.share = max(0.0, busy - own) / capacity
            self.steal = max(0.0, steal) / capacity


def _busy_and_steal_seconds() -> tuple[float, float]:
    """Processor time all programs of this machine spent busy since boot, and the time stolen by the hypervisor
    (-1, -1 where /proc/stat is missing)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return -1.0, -1.0
    # user nice system idle iowait irq softirq steal ...: idle and iowait are not busy; steal is not this machine's.
    fields += [0] * (8 - len(fields))
    tick = os.sysconf("SC_CLK_TCK")
    busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6]
    return busy / tick, fields[7] / tick


def own_cpu_seconds() -> float:
    """Processor time of this process and of its finished (joined) child processes."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def accelerators() -> list[str]:
    """Names of the GPUs TensorFlow sees (empty on a CPU-only machine)."""
    import photoid  # noqa: F401
    import tensorflow as tf

    names = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        names.append(details.get("device_name", gpu.name))
    return names


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("photoid", "tensorflow", "tf-keras", "numpy", "pillow", "scikit-learn", "faiss-cpu"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> dict[str, str]:
    """What the figures depend on: processor, cores, memory, accelerators, load, versions, interpreter."""
    memory = memory_gib()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu_model(),
        "cores": f"{usable_cores()} usable ({os.cpu_count()} in the machine)",
        "memory": f"{memory:.1f} GiB" if memory else "unknown",
        "accelerators": ", ".join(accelerators()) or "none (CPU only)",
        "load average at the start (1, 5, 15 min)": " ".join(f"{x:.2f}" for x in load) if load else "unknown",
        "os": platform.platform(),
        "executable": sys.executable,
    }
