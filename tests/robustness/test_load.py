"""Load: 20 000 photos into records and 1 000 photos identified in one call, in bounded memory.

Slow (minutes on 2 cores): marked `slow`. The photos are tiny (32 px) so the test measures the code's bookkeeping,
not image decoding. Each command runs as a subprocess whose peak resident memory is read from the kernel
(`wait4`, by a small process that starts it: the largest of the command's process and its worker processes).
Memory is bounded when the peak for ten times the photos is about the same: the difference between a run on a
tenth of the data and the full run is what is asserted, with an absolute ceiling as well. The measurements are
printed (run with `-s` to see them).
"""

from __future__ import annotations

import csv
import io
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from robustness_support import PHOTOID, spawn

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
# An idle Python process with TensorFlow imported holds about 620 MiB here; a tiny model and tf.data add some more.
PEAK_CEILING_MIB = 1536
# Ten times the photos may cost this much more memory at most: per-row tables (ids, labels, folds) and nothing that
# grows with the photos themselves.
GROWTH_LIMIT_MIB = 256


# Starts the command given after the file name, waits for it and writes its peak (wait4's ru_maxrss) to the file.
# A child's ru_maxrss counts the memory of the process it was forked from (kept across exec), and a pytest worker
# can hold 2 GiB by then: started from this small process, the command's figure is its own.
PEAK_OF_CHILD = """
import os, subprocess, sys
process = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(process.pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(argv: list, log: Path) -> tuple[float, float, str]:
    """Run `photoid ARGV`; returns (seconds, peak resident MiB, stdout). Fails on a non-zero exit."""
    log.parent.mkdir(parents=True, exist_ok=True)
    peak = log.with_suffix(".peak")
    started = time.perf_counter()
    with open(log.with_suffix(".out"), "wb") as out, open(log.with_suffix(".err"), "wb") as err:
        process = spawn([sys.executable, "-c", PEAK_OF_CHILD, peak, *PHOTOID, *argv], stdout=out, stderr=err)
        process.wait()
    seconds = time.perf_counter() - started
    assert process.returncode == 0, log.with_suffix(".err").read_text()[-3000:]
    # ru_maxrss is in KiB on Linux.
    return seconds, int(peak.read_text()) * 1024 / MiB, log.with_suffix(".out").read_text()


def synthesize(out: Path, n_turtles: int, log: Path) -> float:
    seconds, _, _ = run_measured(["synth", "turtles", "--out", out, "--seed", "11", "--n-original", n_turtles,
                                  "--n-extra", n_turtles, "--images-per-turtle", "10", "--size", "32",
                                  "--workers", "2"], log)
    return seconds


def labelled_images(folder: Path) -> int:
    return sum(len(f.read_text().splitlines()) - 1 for f in (folder / "train.csv", folder / "extra_images.csv"))


def test_records_for_20000_photos_in_bounded_memory(tmp_path):
    def synthesize_and_build(name: str, n_turtles: int) -> tuple[int, float, float]:
        data = tmp_path / name
        synth_seconds = synthesize(data, n_turtles, tmp_path / "logs" / f"synth_{name}")
        seconds, peak, stdout = run_measured(["tfrecords", "--data_dir", data, "--dim_pre", "32", "--workers", "2",
                                              "--shards", "4"], tmp_path / "logs" / f"records_{name}")
        assert "shards written: 24" in stdout
        print(f"\n{name}: {labelled_images(data)} labelled photos synthesised in {synth_seconds:.0f} s; records in "
              f"{seconds:.0f} s, peak memory {peak:.0f} MiB")
        return labelled_images(data), seconds, peak

    # Both sizes at once: each peak is its own processes' (wait4), whatever runs beside them.
    with ThreadPoolExecutor(2) as pool:
        (small, _, small_peak), (large, _, large_peak) = pool.map(synthesize_and_build, ("small", "large"),
                                                                  (100, 1000))
    assert large >= 20000 and small * 9 < large
    assert large_peak < PEAK_CEILING_MIB
    assert large_peak - small_peak < GROWTH_LIMIT_MIB


def test_identifying_1000_photos_in_one_call_in_bounded_memory(trained_run, tmp_path):
    data = tmp_path / "photos"
    synthesize(data, 50, tmp_path / "logs" / "synth")
    photos = sorted(str(p) for p in (data / "images").glob("*.JPG"))[:1000]
    assert len(photos) == 1000
    def identify(count: int) -> float:
        seconds, peak, stdout = run_measured(["identify", *photos[:count], "--run", trained_run, "--csv"],
                                             tmp_path / "logs" / f"identify_{count}")
        rows = list(csv.DictReader(io.StringIO(stdout)))
        assert [row["image"] for row in rows[::5]] == photos[:count]  # five candidates per photo, in order
        assert {row["rank"] for row in rows} == {"1", "2", "3", "4", "5"}
        print(f"\nidentify {count} photos: {seconds:.0f} s, peak memory {peak:.0f} MiB")
        return peak

    with ThreadPoolExecutor(2) as pool:  # at once: each peak is its own process's (wait4)
        peaks = dict(zip((100, 1000), pool.map(identify, (100, 1000))))
    assert peaks[1000] < PEAK_CEILING_MIB
    assert peaks[1000] - peaks[100] < GROWTH_LIMIT_MIB
