"""B2 — record building: images/s of `photoid tfrecords` on all cores vs one worker.

Both ways run the project's `photoid.records.writer.build_turtle_records` (validation, folds, five fold record sets and
the test set, photos resized to `dim_pre` 512 in the compact layout, which worker processes prepare; the exact
layout's threads are not measured here) into a fresh folder each time, so no shard is kept from an earlier run;
only `workers` differs. The headline set has about 2000 photos, as a real catalogue has thousands: starting
the worker processes (a few tenths of a second) then weighs as little as it does in real use. Rounds alternate the
two, and each figure is the median over rounds. The processor time per photo (this process and its worker
processes together) shows what parallel writing costs in overhead.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _common import (Goal, OtherLoad, Result, image_paths, interleaved_medians, own_cpu_seconds, synthetic_turtles,
                     usable_cores)

GOAL = Goal(1.7)


@dataclass(frozen=True)
class Settings:
    photos: tuple[tuple[int, int], ...]  # (long side in px, number of photos); the first is the headline
    dim_pre: int
    rounds: int


PRESETS = {
    "full": Settings(photos=((1500, 2000), (3000, 400)), dim_pre=512, rounds=3),
    "tiny": Settings(photos=((96, 24), (160, 24)), dim_pre=32, rounds=1),
}


def build_once(data_dir: Path, scratch: Path, dim_pre: int, workers: int | None, seen: dict[str, list]) -> float:
    """Write the records of `data_dir` into a new folder; return images/s.

    Appends to `seen["cpu"]` the processor seconds per photo, and to `seen["others"]` the share of the machine
    that other programs took meanwhile.
    """
    from photoid.turtles.records import build_turtle_records

    out = Path(tempfile.mkdtemp(prefix="records-", dir=scratch))
    try:
        with OtherLoad() as others:
            cpu_before, started = own_cpu_seconds(), time.perf_counter()
            summary = build_turtle_records(data_dir, out, dim_pre=dim_pre, layout="compact", workers=workers)
            elapsed = time.perf_counter() - started
        seen["cpu"].append((own_cpu_seconds() - cpu_before) / summary["images_written"])
        if others.share is not None:
            seen["others"].append(others.share + others.steal)
        return summary["images_written"] / elapsed
    finally:
        shutil.rmtree(out, ignore_errors=True)


def preparation_rates(data_dir: Path, dim_pre: int, rounds: int, n_photos: int) -> dict[str, float]:
    """Images/s of the photo preparation alone (`image_preparer`: read, decode, resize, encode; nothing written) on
    all cores and on one: how far the photo work itself scales on this machine, whatever the writing costs."""
    from photoid.records.writer import image_preparer

    jobs = [(path, dim_pre, "compact", False) for path in image_paths(data_dir)[:n_photos]]

    def rate(workers: int) -> float:
        started = time.perf_counter()
        with image_preparer(workers) as prepare:
            for _ in prepare(jobs):
                pass
        return len(jobs) / (time.perf_counter() - started)

    return interleaved_medians(rounds, {"all": lambda: rate(usable_cores()), "one": lambda: rate(1)})


def measure_size(cache_dir: Path, long_side: int, n_photos: int, settings: Settings,
                 profile: bool = False) -> dict[str, float]:
    data_dir = synthetic_turtles(cache_dir, long_side, n_photos)
    seen: dict[str, dict[str, list]] = {way: {"cpu": [], "others": []} for way in ("all", "one")}
    with tempfile.TemporaryDirectory(prefix="b2-", dir=cache_dir) as scratch:
        rates = interleaved_medians(settings.rounds, {
            "all": lambda: build_once(data_dir, Path(scratch), settings.dim_pre, None, seen["all"]),
            "one": lambda: build_once(data_dir, Path(scratch), settings.dim_pre, 1, seen["one"]),
        })
    others = seen["all"]["others"]
    return {**rates, "photos": len(image_paths(data_dir)), "cpu_all_ms": 1000 * min(seen["all"]["cpu"]),
            "cpu_one_ms": 1000 * min(seen["one"]["cpu"]),
            "others_all": statistics.median(others) if others else None,
            "preparation": preparation_rates(data_dir, settings.dim_pre, settings.rounds, 600) if profile else None}


def run(preset: str, cache_dir: Path) -> list[Result]:
    settings = PRESETS[preset]
    cores = usable_cores()
    by_size = {side: measure_size(cache_dir, side, n, settings, profile=i == 0)
               for i, (side, n) in enumerate(settings.photos)}
    head_side = settings.photos[0][0]
    head = by_size[head_side]
    details = [
        f"photos of {side} px ({f['photos']} photos): {cores} workers {f['all']:.1f} images/s, one worker "
        f"{f['one']:.1f} images/s ({f['all'] / f['one']:.2f}×); processor time per photo {f['cpu_all_ms']:.0f} ms "
        f"with {cores} workers vs {f['cpu_one_ms']:.0f} ms with one"
        for side, f in by_size.items()
    ]
    if head["preparation"]:
        prep = head["preparation"]
        details.append(
            f"photos of {head_side} px, the preparation alone (worker processes reading, resizing and encoding "
            f"{min(600, head['photos'])} photos; nothing written): {cores} workers {prep['all']:.1f} images/s, one "
            f"{prep['one']:.1f} images/s ({prep['all'] / prep['one']:.2f}×), for comparison with the whole build "
            f"(a smaller set: starting the workers weighs more)")
    notes = [f"`build_turtle_records` with dim_pre {settings.dim_pre} into a fresh folder each round; median of "
             f"{settings.rounds} alternating rounds; the goal assumes the {cores} cores are free for this run."]
    if head["others_all"] is not None:
        free = cores * (1 - head["others_all"])
        notes.append(
            f"While the {cores} workers ran, other programs and the hypervisor (steal time) took "
            f"{100 * head['others_all']:.0f}% of the machine's processor time, leaving about {free:.1f} of its "
            f"{cores} cores: that is about the most {cores} workers could gain over one here. Processor time per "
            f"photo shows what parallel writing itself costs.")
    return [Result(
        id="B2", what=f"record building, photos of {head_side} px",
        ours=head["all"], baseline=head["one"], unit="images/s", ratio=head["all"] / head["one"], goal=GOAL,
        ours_label=f"{cores} workers", baseline_label="one worker", details=details, notes=notes)]
