"""Run the benchmarks (`make bench`), print the results table and write `benchmarks/results.md`.

    python benchmarks/run_all.py                    # every benchmark at full size, writes benchmarks/results.md
    python benchmarks/run_all.py --only B3          # one benchmark (e.g. on a GPU machine), prints its row
    python benchmarks/run_all.py --size tiny --out /tmp/r.md   # seconds per benchmark: checks that they still run
    python benchmarks/run_all.py --only B9 --section           # a benchmark too long for the full run, its own
                                                               # section of benchmarks/results.md

A partial run (`--only`) or a tiny one writes a file only when `--out` names one, so it never replaces the full
run's page; with `--section` it writes its page as a section of `--out` (default: benchmarks/results.md),
replacing the section an earlier run of the same benchmarks wrote. Each benchmark is a module `bN_*.py` with `PRESETS` and `run(preset, cache_dir) -> list[Result]`.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import shlex
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import photoid  # noqa: E402,F401  (selects tf-keras before anything imports TensorFlow)

import _common  # noqa: E402
import _report  # noqa: E402

BENCHMARKS = {
    "B1": "b1_input_pipeline",
    "B2": "b2_record_building",
    "B3": "b3_training_step",
    "B4": "b4_ensemble_prediction",
    "B5": "b5_ranking",
    "B6": "b6_peak_memory",
    "B7": "b7_serve",
    "B8": "b8_whale_augment",
    "B9": "b9_scale",
    "B10": "b10_local_matching",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated benchmark ids to run, e.g. B3 or B1,B5")
    parser.add_argument("--size", choices=("full", "tiny"), default="full",
                        help="full: realistic sizes (~15-20 min on 2 cores); tiny: a smoke test in seconds")
    parser.add_argument("--out", default=None,
                        help="results page to write (default: benchmarks/results.md for a full run of every "
                             "benchmark; nothing for a partial or tiny run)")
    parser.add_argument("--section", action="store_true",
                        help="with --only: write the results as their own section of --out (default: "
                             "benchmarks/results.md), replacing an earlier section of the same benchmarks")
    parser.add_argument("--cache_dir", default=str(_common.CACHE_DIR),
                        help="where generated photos and records are kept between runs")
    args = parser.parse_args(argv)
    selected = [s.strip().upper() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in selected if s not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark id(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    args.selected = selected or list(BENCHMARKS)
    if args.section and not selected:
        parser.error("--section writes a partial run (--only) into a results page")
    if args.out is None and ((not selected and args.size == "full") or args.section):
        args.out = str(_common.BENCH_DIR / "results.md")
    return args


def _release_memory() -> None:
    """Drop models and graphs a benchmark left behind, so the next one starts from the same state."""
    if "tf_keras" in sys.modules:
        sys.modules["tf_keras"].backend.clear_session()
    gc.collect()


def run_benchmarks(selected: list[str], size: str, cache_dir: Path) -> tuple[list, dict[str, str]]:
    import importlib

    results, failures = [], {}
    for bench_id in selected:
        module = importlib.import_module(BENCHMARKS[bench_id])
        print(f"--- {bench_id} ({module.__doc__.strip().splitlines()[0]})", flush=True)
        started = time.perf_counter()
        try:
            with _common.OtherLoad() as other:
                rows = module.run(size, cache_dir)
        except Exception as err:  # one broken benchmark must not hide the others' results
            traceback.print_exc()
            failures[bench_id] = f"{type(err).__name__}: {err}"
            continue
        finally:
            _release_memory()
        others = "" if other.share is None else (
            f"; other programs used {100 * other.share:.0f}% of the machine's processor time meanwhile, and the "
            f"hypervisor withheld {100 * other.steal:.0f}% (steal time)")
        for row in rows:
            row.notes.append(f"this benchmark took {time.perf_counter() - started:.0f} s of wall time in all{others}.")
        results += rows
        print(_report.table(rows), flush=True)
    return results, failures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Progress bars of the record writer and generator would bury the table; the setting is undone on return, so a
    # caller in the same process (the tests) keeps its bars.
    had_setting = "TQDM_DISABLE" in os.environ
    os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        return _run(args, argv)
    finally:
        if not had_setting:
            os.environ.pop("TQDM_DISABLE", None)


def _run(args, argv: list[str] | None) -> int:
    cache_dir = Path(args.cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    machine = _common.machine()
    started_at, started = datetime.datetime.now().astimezone(), time.perf_counter()
    results, failures = run_benchmarks(args.selected, args.size, cache_dir)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None

    header = {
        "date": started_at.strftime("%Y-%m-%d %H:%M %Z"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]) if argv is None else
        shlex.join(["run_all.py", *argv]),
        "size": args.size,
        **machine,
        "load average at the end": " ".join(f"{x:.2f}" for x in load) if load else "unknown",
        "total wall time": f"{time.perf_counter() - started:.0f} s",
        "commit": _common.git_commit(),
    }
    print()
    print(_report.table(results))
    print(_report.failures_section(failures), end="")
    if args.out:
        from photoid.core.io import write_text

        if args.section:
            text = _report.section(args.selected, results, failures, header, _common.versions())
            _report.replace_section(Path(args.out), text.splitlines()[0], text)
        else:
            write_text(args.out, _report.markdown(results, failures, header, _common.versions()))
        print(f"results written to {args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
