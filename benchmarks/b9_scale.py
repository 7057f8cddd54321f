"""B9 — catalogues of a million photos: identification against 10k-1M photos, the page's latency, streamed builds.

Search rows (B9-search-SIZE): one photo and a batch of photos identified against SIZE catalogue photos by the
catalogue's prepared index (`photoid.catalog.index`: exact over float32, the default; exact over float16 storage;
an approximate faiss IVF index), the model call excluded (it is timed on its own in B9-serve). The search
catalogues hold synthetic 512-d embeddings (photos scattered around their individual's centre, 5 photos per
individual on average) written through the catalogue's own transactions as a streamed build writes them; the
models recorded in them are a real tiny run's, so `photoid serve` loads them. Goal: one photo against 1M photos
in at most 150 ms on 2 cores (the baseline column is that budget); the figures say how close the exact search
comes to the machine's memory bandwidth, measured here. Details: the batch, float16's effect on scores, the
approximate index's recall, the build (layout) and load times, the memory, and the search as it was before the
prepared index (normalising and laying out the catalogue on every call).

B9-serve: `photoid serve` (its own process, 127.0.0.1) answering one photo per request against 1k-1M catalogue
photos; goal: p95 at 100k at most 1.5× p95 at 1k.

B9-build: `photoid catalog build` over a folder of real photo files (small JPEGs this benchmark writes), in
chunks, killed half-way and resumed; goal: bounded memory, the peak RSS of the large build at most 1.2× the small
one's. Catalogues and folders are cached under benchmarks/.cache (`--cache_dir`); remove them when done.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import photoid  # noqa: F401  (selects tf-keras before TensorFlow is imported)

from _common import Goal, Result
from b7_serve import _post  # one photo per request, as B7 sends it

SEARCH_BUDGET_S = 0.150
SERVE_GOAL = Goal(1.5, higher_is_better=False)
MEMORY_GOAL = Goal(1.2, higher_is_better=False)
THRESHOLD = 0.5  # any: the search's cost does not depend on it
BATCH_CALL = 64  # photos per call in a batch, as `photoid identify --catalog` passes them (its --batch_size)


@dataclass(frozen=True)
class Settings:
    sizes: tuple[int, ...]  # catalogue photos of the search rows
    serve_sizes: tuple[int, ...]
    width: int  # embedding dimensions (the tiny run's embedding_size)
    photos_per_individual: int
    single_queries: int
    batch: int
    serve_requests: int
    build_files: tuple[int, int]  # photo files of the small and the large streamed build
    photo_px: int
    chunk: int
    nlist: int | None  # IVF lists (None: about √photos)
    nprobe: int


PRESETS = {
    "full": Settings(sizes=(10_000, 100_000, 1_000_000), serve_sizes=(1_000, 10_000, 100_000, 1_000_000),
                     width=512, photos_per_individual=5, single_queries=40, batch=1000, serve_requests=60,
                     build_files=(10_000, 100_000), photo_px=32, chunk=10_000, nlist=None, nprobe=32),
    "tiny": Settings(sizes=(600, 2_000), serve_sizes=(300, 600), width=32, photos_per_individual=5,
                     single_queries=3, batch=20, serve_requests=4, build_files=(40, 160), photo_px=16, chunk=50,
                     nlist=8, nprobe=4),
}


# ----------------------------------------------------------------------------- inputs

def tiny_run(cache_dir: Path, width: int) -> tuple[Path, Path]:
    """(its small generic data folder, a cpu-demo run on it: fold 0 only, 1 epoch at 32 px, a `width`-d embedding).
    Its size, not its skill, matters here. Cached."""
    from photoid.runs.config import add_config_arguments
    from photoid.synth.generic import generate_generic
    from photoid.training.kfold import resolve_run_config, run_config

    data = cache_dir / "b9-generic-small"
    run_dir = cache_dir / f"b9-run-{width}"
    if not (data / "synth.json").is_file():
        generate_generic(data, seed=9, n_individuals=8, encounters_per_individual=3, n_unknown=2, size=48,
                         workers=1, force=True)
    if not (run_dir / "fold_0" / "best.weights.h5").is_file():
        from photoid.cli import main

        records = data / "tfrec"
        if not (records / "records.json").is_file():
            assert main(["records", "--data_dir", str(data), "--n_folds", "2", "--dim_pre", "32", "--workers",
                         "1"]) == 0
        parser = argparse.ArgumentParser()
        add_config_arguments(parser)
        args = parser.parse_args(["--model", "cpu-demo", "--data_dir", str(data), "--data_tfrec_dir", str(records),
                                  "--run_dir", str(run_dir), "--n_folds", "2", "--final_fold", "1", "--n_epochs",
                                  "1", "--dim", "32", "--dim_pre", "32", "--embedding_size", str(width),
                                  "--job", "train", "--verbose", "0", "--force", "true"])
        run_config(resolve_run_config(args))  # the task is found from the records
    return data, run_dir


def run_manifest(cache_dir: Path, data: Path, run_dir: Path) -> dict:
    """The manifest entries a catalogue of this run records (its models), from a real build of the small folder."""
    from photoid.catalog.build import build_catalog
    from photoid.catalog.store import read_catalog

    small = cache_dir / f"b9-catalog-of-{run_dir.name}"
    if not (small / "manifest.json").is_file():
        build_catalog([str(run_dir)], data, small, force=True, local=False)
    manifest = read_catalog(small).manifest
    return {key: manifest[key] for key in ("created", "data_dir", "embedding_views", "models", "runs")}


def synthetic_catalogue(cache_dir: Path, base: dict, n: int, s: Settings, storage: str = "float32") -> Path:
    """A catalogue of `n` synthetic photos, written chunk by chunk through the catalogue's transactions (a part per
    chunk, as a streamed build commits them). The same photos for either storage. Cached."""
    from photoid.catalog.store import PART_ROWS, catalog_transaction

    path = cache_dir / f"b9-catalog-{n}-{s.width}-{storage}"
    if (path / "manifest.json").is_file():
        return path
    shutil.rmtree(path, ignore_errors=True)
    rng = np.random.default_rng(n)
    n_individuals = max(1, n // s.photos_per_individual)
    centres = rng.standard_normal((n_individuals, s.width), dtype=np.float32)
    manifest = {**base, "calibration": None, **({"storage": storage} if storage != "float32" else {})}
    committed = None
    for start in range(0, n, PART_ROWS):
        rows = min(PART_ROWS, n - start)
        codes = rng.integers(0, n_individuals, rows)
        vectors = centres[codes] + rng.standard_normal((rows, s.width), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        table = pd.DataFrame({"individual_id": [f"ind{c:07d}" for c in codes],
                              "image_id": [f"img{start + i:08d}" for i in range(rows)], "source": "synthetic",
                              "path": [f"/synthetic/img{start + i:08d}.jpg" for i in range(rows)]})
        with catalog_transaction(path) as tx:
            committed = (tx.commit_parts(manifest, [(table, vectors)]) if start == 0
                         else tx.append(table, vectors, new_part=True))
    del committed
    return path


def approximate_catalogue(path: Path, s: Settings) -> Path:
    """The catalogue at `path` with a stored IVF index, as `photoid catalog build --index ivf` leaves one (its
    data files linked, not copied). Cached."""
    from photoid.catalog import approximate
    from photoid.catalog.store import catalog_transaction

    linked = path.with_name(path.name + "-ivf")
    if (linked / "manifest.json").is_file():
        return linked
    shutil.rmtree(linked, ignore_errors=True)
    shutil.copytree(path, linked, copy_function=os.link, ignore=shutil.ignore_patterns(".*"))
    with catalog_transaction(linked) as tx:
        catalog = tx.catalog
        settings = approximate.settings_for("ivf", len(catalog.table), nlist=s.nlist, nprobe=s.nprobe)
        tx.commit_manifest(index=approximate.build_stored_index(catalog, catalog.manifest["generation"], settings, []))
    return linked


def queries(n: int, s: Settings, count: int, seed: int = 1) -> np.ndarray:
    """New photos of the catalogue's individuals (same centres as `synthetic_catalogue` draws)."""
    rng = np.random.default_rng(n)
    centres = rng.standard_normal((max(1, n // s.photos_per_individual), s.width), dtype=np.float32)
    draw = np.random.default_rng(seed)
    picked = centres[draw.integers(0, len(centres), count)]
    vectors = picked + draw.standard_normal((count, s.width), dtype=np.float32)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


# ----------------------------------------------------------------------------- the machine

def memory_bandwidth(gib: float = 1.0, rounds: int = 5) -> dict[str, float]:
    """GB/s this machine reads and copies with every core: two threads (numpy releases the lock) each reading (a
    maximum) or copying half of a `gib` GiB float32 array; best of `rounds`, as a bandwidth is a ceiling."""
    data = np.random.default_rng(0).standard_normal(int(gib * 2**30 / 4), dtype=np.float32)
    target = np.empty_like(data)
    halves = np.array_split(np.arange(len(data)), os.cpu_count() or 1)
    bounds = [(h[0], h[-1] + 1) for h in halves]

    def timed(work) -> float:
        threads = [threading.Thread(target=work, args=b) for b in bounds]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - started

    read = min(timed(lambda a, b: data[a:b].max()) for _ in range(rounds))
    copy = min(timed(lambda a, b: np.copyto(target[a:b], data[a:b])) for _ in range(rounds))
    return {"read_gbs": data.nbytes / read / 1e9, "copy_gbs": 2 * data.nbytes / copy / 1e9}


# ----------------------------------------------------------------------------- search rows

def _identify(index, q: np.ndarray):
    """What `identify_with_catalog` does after the model: scores, then the top 5 with "new" at the threshold."""
    return index.ranker()(index.scores(q), THRESHOLD, 5)


def _one_by_one(index, q: np.ndarray) -> list[float]:
    times = []
    for row in q:
        started = time.perf_counter()
        _identify(index, row[None, :])
        times.append(time.perf_counter() - started)
    return times


def _batch(index, q: np.ndarray) -> float:
    started = time.perf_counter()
    for begin in range(0, len(q), BATCH_CALL):
        _identify(index, q[begin:begin + BATCH_CALL])
    return time.perf_counter() - started


def _fresh_read(path: Path):
    """The catalogue as a new process reads it: nothing reused, every file checked."""
    import photoid.catalog.store as store

    store._recent.clear()
    store._verified.clear()
    gc.collect()
    started = time.perf_counter()
    catalog = store.read_catalog(path)
    read = time.perf_counter() - started
    started = time.perf_counter()
    index = catalog.index()
    return catalog, index, read, time.perf_counter() - started


def measure_size(n: int, s: Settings, cache_dir: Path, base: dict) -> dict:
    from photoid.catalog import approximate
    from photoid.catalog.identify import identify_with_catalog
    from photoid.catalog.index import CatalogIndex

    f = {"n": n}
    path32 = synthetic_catalogue(cache_dir, base, n, s)
    path16 = synthetic_catalogue(cache_dir, base, n, s, "float16")
    single, batch = queries(n, s, s.single_queries), queries(n, s, s.batch, seed=2)
    catalog, index, f["read_s"], f["index_s"] = _fresh_read(path32)
    f["index_mb"] = index.nbytes() / 1e6
    f["table_mb"] = catalog.table.memory_usage(deep=True).sum() / 1e6
    f["individuals"] = len(index.names)
    f["parts"] = len(catalog.parts)
    _one_by_one(index, single[:2])  # warm: pages in, first calls
    times = _one_by_one(index, single)
    f["one_s"], f["one_p95_s"] = statistics.median(times), float(np.percentile(times, 95))
    f["batch_s"] = _batch(index, batch)
    f["laid_gb"] = sum(a.nbytes for a in index._laid) / 1e9
    # As before the prepared index: normalising and laying the catalogue out on every call.
    old_rounds = 1 if n >= 1_000_000 else 3
    f["old_one_s"] = statistics.median(
        _timed(lambda: identify_with_catalog(single[:1], catalog, threshold=THRESHOLD, backend="numpy"))
        for _ in range(old_rounds))
    catalog._embeddings = None  # the joined copy the old way made (2 GB at a million photos)
    gc.collect()
    scores32 = index.scores(single)
    # float16 storage: the same photos, half the bytes.
    catalog16, index16, f["read16_s"], f["index16_s"] = _fresh_read(path16)
    _one_by_one(index16, single[:2])
    times = _one_by_one(index16, single)
    f["one16_s"] = statistics.median(times)
    scores16 = index16.scores(single)
    finite = np.isfinite(scores32)
    f["f16_max_diff"] = float(np.abs(scores32 - scores16)[finite].max())
    top32, top16 = (np.argsort(-x, axis=1, kind="stable")[:, :5] for x in (scores32, scores16))
    f["f16_top5_changed"] = float((top32 != top16).any(axis=1).mean())
    f["f16_top1_changed"] = float((top32[:, 0] != top16[:, 0]).mean())
    f["index16_mb"] = index16.nbytes() / 1e6
    del catalog16, index16, scores16
    gc.collect()
    # The approximate index, built in memory (a build stores it), its recall measured as a build measures it.
    settings = approximate.settings_for("ivf", n, nlist=s.nlist, nprobe=s.nprobe)
    started = time.perf_counter()
    searchers, _ = approximate.build_searchers(catalog, settings)
    f["ivf_build_s"] = time.perf_counter() - started
    entry = {**settings, "factory": approximate._factory(settings, "float32")}
    entry["description"] = approximate.describe(entry)
    ivf = CatalogIndex.fresh_over(catalog, entry, searchers, [(p.name, p.rows) for p in catalog.parts])
    _one_by_one(ivf, single[:2])
    f["ivf_one_s"] = statistics.median(_one_by_one(ivf, single))
    f["ivf_batch_s"] = _batch(ivf, batch)
    started = time.perf_counter()
    f["ivf_recall"] = approximate.measure_recall(catalog, ivf)
    f["recall_s"] = time.perf_counter() - started
    f["ivf_factory"], f["nprobe"] = entry["factory"], settings["nprobe"]
    del ivf, searchers, index, catalog
    gc.collect()
    return f


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


# ----------------------------------------------------------------------------- serve rows

def _status_kib(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f)
                if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}


def serve_latency(catalog: Path, photos: list[str], requests: int) -> dict:
    """`photoid serve --threshold` on `catalog`: seconds to listen, per-request latencies, its memory."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-c", "import sys; from photoid.cli import main; sys.exit(main())",
                               "serve", "--catalog", str(catalog), "--port", str(port), "--threshold",
                               str(THRESHOLD)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        address = None
        for line in server.stdout:
            if line.startswith("photoid serve: "):
                address = line.removeprefix("photoid serve: ").strip()
                break
        if address is None:
            raise RuntimeError(f"photoid serve exited with code {server.wait()} before it listened")
        deadline = time.monotonic() + 60
        while True:  # the address is printed just before the server binds its port
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("photoid serve did not listen on its port") from None
                time.sleep(0.02)
        ready = time.perf_counter() - started
        for path in photos[:3]:
            _post(address, path)  # warm-up: first model calls and pages
        latencies = [_post(address, photos[i % len(photos)]) for i in range(requests)]
        memory = _status_kib(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return {"ready_s": ready, "p50": float(np.percentile(latencies, 50)), "p95": float(np.percentile(latencies, 95)),
            "memory": memory}


def model_call_s(run_dir: Path, photos: list[str], rounds: int) -> float:
    """The model call alone for one photo (embedding and probabilities), in-process, median."""
    from photoid.inference.embedder import Embedder
    from photoid.runs.loaded import load_run

    embedder = Embedder([(load_run(run_dir), 0)])
    for path in photos[:3]:  # warm-up: the first calls trace the model
        list(embedder.batches([path], 1, probabilities=True))
    times = [_timed(lambda p=p: list(embedder.batches([p], 1, probabilities=True)))
             for p in (photos * rounds)[:rounds]]
    return statistics.median(times)


# ----------------------------------------------------------------------------- streamed build rows

def photo_folder(cache_dir: Path, n: int, px: int, individuals: int) -> Path:
    """A generic folder of `n` small JPEG files (noise; their content does not matter here), in folders of 10,000.
    Cached."""
    from PIL import Image

    from photoid.core.io import write_csv

    root = cache_dir / f"b9-files-{n}-{px}px"
    if (root / "metadata.csv").is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(n)
    rows = []
    for i in range(n):
        relative = f"photos/{i // 10_000:03d}/p{i:07d}.jpg"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (px, px, 3), dtype=np.uint8)).save(root / relative, quality=85)
        rows.append((f"p{i:07d}", relative, f"ind{i % individuals:06d}"))
    write_csv(root / "metadata.csv", pd.DataFrame(rows, columns=["image_id", "path", "identity"]))
    return root


def timed_build(run_dir: Path, data: Path, out: Path, chunk: int, kill_at: float | None = None,
                workers: int = 1) -> dict:
    """`photoid catalog build` in its own process; with `kill_at`, killed (-9) once that share of its chunks is
    committed, then resumed by `workers` processes at once, which share the chunks left. Seconds and the peak RSS
    (VmHWM, sampled) of each process, the chunks committed before the kill."""
    import json

    argv = [sys.executable, "-m", "photoid.cli", "catalog", "build", "--run", str(run_dir), "--data_dir",
            str(data), "--out", str(out), "--chunk", str(chunk), "--no-local"]  # the embeddings' build (local: B10)
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    figures: dict = {"runs": []}
    started = time.perf_counter()
    process = _start(argv, out, 0)
    while kill_at is not None and process.poll() is None:
        try:
            build = json.loads((out / "manifest.json").read_text()).get("build")
        except (OSError, ValueError):
            build = None
        if build and len(build["done"]) >= kill_at * build["chunks"]:
            process.peak_kib = max(process.peak_kib, _status_kib(process.pid).get("VmHWM", 0))
            process.send_signal(signal.SIGKILL)
            figures["killed_after"], figures["chunks"] = len(build["done"]), build["chunks"]
            break
        _sample_peak(process)
        time.sleep(0.05)
    phases = [[process]]
    if "killed_after" in figures:
        _finish(process, figures, started, killed=True)
        started = time.perf_counter()
        phases = [[_start(argv, out, 1 + i) for i in range(workers)]]
    while any(p.poll() is None for p in phases[0]):
        for process in phases[0]:
            _sample_peak(process)
        time.sleep(0.1)
    for process in phases[0]:
        _finish(process, figures, started)
    return figures


def _sample_peak(process: subprocess.Popen) -> None:
    """The process's own peak RSS so far (VmHWM: wait4's figure would include what the benchmark's own process held
    when it started the child)."""
    try:
        process.peak_kib = max(process.peak_kib, _status_kib(process.pid).get("VmHWM", 0))
    except (OSError, ValueError):
        pass  # it has just ended


def _start(argv: list[str], out: Path, number: int) -> subprocess.Popen:
    """The build in its own process, its output in a log file beside the catalogue (a pipe left unread would
    stop it once full)."""
    log = out.parent / f"{out.name}-{number}.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
    process.log, process.peak_kib = log, 0
    return process


def _finish(process: subprocess.Popen, figures: dict, started: float, killed: bool = False) -> None:
    process.wait()
    error = process.log.read_text(errors="replace")
    process.log.unlink(missing_ok=True)
    if process.returncode != 0 and not killed:
        raise RuntimeError(f"photoid catalog build failed ({process.returncode}): {error[-2000:]}")
    figures["runs"].append({"seconds": time.perf_counter() - started, "peak_mib": process.peak_kib / 1024})


# ----------------------------------------------------------------------------- the rows

def run(preset: str, cache_dir: Path) -> list[Result]:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return []
    from photoid.catalog.store import read_catalog

    s = PRESETS[preset]
    cache_dir = Path(cache_dir)
    data, run_dir = tiny_run(cache_dir, s.width)
    base = run_manifest(cache_dir, data, run_dir)
    bandwidth = memory_bandwidth(1.0 if preset == "full" else 0.05, rounds=5 if preset == "full" else 1)
    rows = []
    for n in s.sizes:
        f = measure_size(n, s, cache_dir, base)
        recall = f["ivf_recall"]
        gbs = f["laid_gb"] / f["one_s"]
        label = str(n) if n < 1000 else f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}M"
        met = f["one_s"] <= SEARCH_BUDGET_S
        print(f"B9-search-{label}: one photo against {n:,} photos in {1000 * f['one_s']:.0f} ms (exact, float32): "
              f"goal of {1000 * SEARCH_BUDGET_S:.0f} ms {'met' if met else 'not met'}", flush=True)
        rows.append(Result(
            f"B9-search-{label}", f"identify one photo against {n:,} catalogue photos of {f['individuals']:,} "
            f"individuals ({s.width}-d, synthetic), model call excluded", 1000 * f["one_s"], 1000 * SEARCH_BUDGET_S,
            "ms",
            f["one_s"] / SEARCH_BUDGET_S, Goal(1.0, higher_is_better=False), "exact search, float32",
            f"budget {1000 * SEARCH_BUDGET_S:.0f} ms",
            details=[
                f"one photo: exact float32 {1000 * f['one_s']:.1f} ms (p95 {1000 * f['one_p95_s']:.1f} ms), exact "
                f"over float16 storage {1000 * f['one16_s']:.1f} ms, approximate {f['ivf_factory']} (nprobe "
                f"{f['nprobe']}) {1000 * f['ivf_one_s']:.2f} ms; as before the prepared index (normalising and "
                f"laying the catalogue out on every call) {1000 * f['old_one_s']:.0f} ms",
                f"a batch of {s.batch:,} photos ({BATCH_CALL} per call, as identify passes them): exact "
                f"{f['batch_s']:.2f} s ({1000 * f['batch_s'] / s.batch:.2f} ms per photo), approximate "
                f"{f['ivf_batch_s']:.2f} s ({1000 * f['ivf_batch_s'] / s.batch:.3f} ms per photo)",
                f"memory bandwidth: the exact search reads its {f['laid_gb']:.2f} GB of laid-out float32 rows at "
                f"{gbs:.1f} GB/s per photo, {100 * gbs / bandwidth['read_gbs']:.0f}% of the {bandwidth['read_gbs']:.1f}"
                f" GB/s this machine reads with every core ({bandwidth['copy_gbs']:.1f} GB/s copying, read + "
                "written)",
                f"float16 storage against float32, {s.single_queries} photos: scores differ by at most "
                f"{f['f16_max_diff']:.2g}; the top 5 individuals changed (in order) for "
                f"{100 * f['f16_top5_changed']:.1f}% of the photos, the best one for "
                f"{100 * f['f16_top1_changed']:.1f}%; its laid-out rows hold {f['index16_mb']:.0f} MB (float32: "
                f"{f['index_mb']:.0f} MB)",
                (f"approximate {f['ivf_factory']}: built in {f['ivf_build_s']:.1f} s; recall@5 "
                 f"{recall['recall_at_5']:.3f}, recall@1 {recall['recall_at_1']:.3f} against the exact search over "
                 f"{recall['queries']} catalogue photos, each left out of its own search (measured in "
                 f"{f['recall_s']:.1f} s)") if recall else "approximate: recall not measured",
                f"load, as a new process: reading the catalogue (manifest, {f['parts']} table part(s), the "
                f"embeddings mapped) {f['read_s']:.2f} s, then the prepared index (checking each embeddings file's "
                f"sha256 on first use and laying the rows out) {f['index_s']:.2f} s; float16: {f['read16_s']:.2f} s + "
                f"{f['index16_s']:.2f} s",
                f"memory: laid-out rows {f['index_mb']:.0f} MB, the table {f['table_mb']:.0f} MB; the embeddings "
                "files are memory-mapped (the operating system's page cache, not the process's own memory)",
            ],
            notes=["median over single photos timed one by one, after two warm-up searches; the model call is "
                   "timed in B9-serve's details; the catalogue's embeddings are synthetic (photos around their "
                   "individual's centre, written through the catalogue's transactions in parts of 10,000), its "
                   "models a real tiny run's. ratio = our time / the 150 ms budget: at most 1 meets the goal."]))
    photos = sorted(str(p) for p in (data / "photos").rglob("*.jpg"))
    model_s = model_call_s(run_dir, photos, 10 if preset == "full" else 2)
    gc.collect()
    served = {}
    for n in s.serve_sizes:
        path = synthetic_catalogue(cache_dir, base, n, s)
        served[n] = serve_latency(path, photos, s.serve_requests)
    small, large = s.serve_sizes[0], s.serve_sizes[-2] if len(s.serve_sizes) > 2 else s.serve_sizes[-1]
    approximate_served = serve_latency(approximate_catalogue(synthetic_catalogue(cache_dir, base, large, s), s),
                                       photos, s.serve_requests)
    ratio = served[large]["p95"] / served[small]["p95"]
    print(f"B9-serve: p95 {1000 * served[large]['p95']:.1f} ms against {large:,} photos, "
          f"{1000 * served[small]['p95']:.1f} ms against {small:,}: {ratio:.2f}×, goal of ≤ 1.5× "
          f"{'met' if SERVE_GOAL.met(ratio) else 'not met'}", flush=True)
    rows.append(Result(
        "B9-serve", f"photoid serve, one photo per request: p95 against {large:,} vs {small:,} catalogue photos",
        1000 * served[large]["p95"], 1000 * served[small]["p95"], "ms", ratio, SERVE_GOAL, f"{large:,} photos",
        f"{small:,} photos",
        details=[f"{n:,} photos: p50 {1000 * v['p50']:.1f} ms, p95 {1000 * v['p95']:.1f} ms; listening "
                 f"{v['ready_s']:.1f} s after start (TensorFlow, the model, the catalogue and its index); memory "
                 f"RSS {v['memory']['VmRSS'] / 1024:.0f} MiB, of which its own {v['memory']['RssAnon'] / 1024:.0f} "
                 f"MiB and mapped files (libraries, the embeddings) {v['memory']['RssFile'] / 1024:.0f} MiB (peak "
                 f"{v['memory']['VmHWM'] / 1024:.0f} MiB)" for n, v in served.items()]
        + [f"{large:,} photos with a stored approximate IVF index (`--index ivf`, nprobe {s.nprobe}; the answers "
           f"say so): p50 {1000 * approximate_served['p50']:.1f} ms, p95 {1000 * approximate_served['p95']:.1f} ms, "
           f"{approximate_served['p95'] / served[small]['p95']:.2f}× the p95 at {small:,}",
           f"the model call alone (cpu-demo at 32 px, one fold, {s.width}-d embedding; one photo, in-process): "
           f"{1000 * model_s:.1f} ms"],
        notes=[f"{s.serve_requests} requests of one photo each, one after another, POST /identify?format=json "
               "(upload, store, identify, answer) to `photoid serve --threshold` in its own process on 127.0.0.1, "
               "after 3 warm-up requests; the catalogues are B9-search's synthetic ones"]))
    small_n, large_n = s.build_files
    individuals = max(2, small_n // 5)
    builds = {}
    for n in s.build_files:
        folder = photo_folder(cache_dir, n, s.photo_px, max(individuals, n // 5))
        builds[n] = timed_build(run_dir, folder, cache_dir / f"b9-built-{n}", s.chunk,
                                kill_at=0.5 if n == large_n else None, workers=2)
        built = read_catalog(cache_dir / f"b9-built-{n}")
        if len(built.table) != n or built.building:
            raise RuntimeError(f"the streamed build of {n} photos holds {len(built.table)}")
        shutil.rmtree(cache_dir / f"b9-built-{n}", ignore_errors=True)
    big, little = builds[large_n], builds[small_n]
    peak_big = max(r["peak_mib"] for r in big["runs"])
    peak_little = max(r["peak_mib"] for r in little["runs"])
    seconds_big = big["runs"][0]["seconds"] + max(r["seconds"] for r in big["runs"][1:])
    rate = large_n / seconds_big
    mem_ratio = peak_big / peak_little
    print(f"B9-build: peak RSS {peak_big:.0f} MiB for {large_n:,} photo files, {peak_little:.0f} MiB for "
          f"{small_n:,}: {mem_ratio:.2f}×, goal of ≤ 1.2× {'met' if MEMORY_GOAL.met(mem_ratio) else 'not met'}",
          flush=True)
    rows.append(Result(
        "B9-build", f"photoid catalog build over {large_n:,} vs {small_n:,} photo files ({s.photo_px} px JPEGs), "
        f"in chunks of {s.chunk:,}, killed half-way and resumed: peak memory", peak_big, peak_little, "MiB",
        mem_ratio, MEMORY_GOAL, f"{large_n:,} files", f"{small_n:,} files",
        details=[f"{large_n:,} files: one process killed (-9) after {big.get('killed_after')} of "
                 f"{big.get('chunks')} chunks at {big['runs'][0]['seconds']:.0f} s (peak "
                 f"{big['runs'][0]['peak_mib']:.0f} MiB); then {len(big['runs']) - 1} processes started at once "
                 "resumed it, sharing the chunks left, and finished in "
                 f"{max(r['seconds'] for r in big['runs'][1:]):.0f} s (peaks "
                 f"{', '.join(str(round(r['peak_mib'])) for r in big['runs'][1:])} MiB): {rate:.0f} photos/s over "
                 "both phases, start-ups included",
                 f"{small_n:,} files in one run: {little['runs'][0]['seconds']:.0f} s "
                 f"({small_n / little['runs'][0]['seconds']:.0f} photos/s), peak {peak_little:.0f} MiB",
                 f"at that rate 1,000,000 files would take about {1_000_000 / rate / 3600:.1f} h on this machine "
                 "(extrapolated, not run: the listing of 1,000,000 photos, about 300 bytes each in memory, is the "
                 "only part of the memory that grows with the folder)"],
        notes=["each build is `photoid catalog build --chunk --no-local` (embeddings only) in its own process (its "
               "peak RSS: VmHWM, read every "
               "0.1 s until it ends, so a peak in its last 0.1 s can be missed); the "
               f"photos are {s.photo_px} px noise JPEGs in a generic folder written by this benchmark, embedded by "
               "the tiny cpu-demo run (one fold, 32 px)"]))
    return rows
