"""B7 — `photoid serve` under load: one photo per request over HTTP on 127.0.0.1, vs `identify` in-process.

Baseline: `photoid identify --catalog`'s function (`catalog.identify_paths_with_catalog`) called in-process for
one photo at a time, with the models already loaded — what a script would do. Ours: the real server
(`photoid serve` in its own process, bound to 127.0.0.1 only) answering `POST /identify?format=json` with one
photo.

Rows: B7a, one client: the served latency per photo over the in-process time per photo (goal at most 1.5×).
B7b, 8 clients uploading at once: served photos per second over the in-process rate; the server batches what is
queued into one model call, so it should not fall below the model working alone (goal at least 1×); p50/p95
latency of the uploads, and of a browse page loaded meanwhile, are in the details. The load is bounded: each
client sends a fixed number of requests and waits for each answer. Building the data, records, the tiny run and
its catalogue is not timed (cached).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import photoid  # noqa: F401  (selects tf-keras before TensorFlow is imported)

from _common import Goal, Result, synthetic_turtles, turtle_records

CLIENTS = 8
BROWSE_PAUSE_S = 0.25  # a person looking at each page a moment


@dataclass(frozen=True)
class Settings:
    photos: tuple[int, int]  # synthetic data: (long side in px, number of photos)
    dim: int
    requests_per_client: int
    single_requests: int


PRESETS = {
    "full": Settings(photos=(512, 300), dim=64, requests_per_client=12, single_requests=40),
    "tiny": Settings(photos=(48, 60), dim=32, requests_per_client=2, single_requests=3),
}


def calibrated_catalog(cache_dir: Path, settings: Settings) -> tuple[Path, Path]:
    """(data folder, catalogue) of a 2-fold, 1-epoch cpu-demo run at `dim`: the models' size, not their skill,
    sets the latency. Cached; the catalogue is copied afresh by each run (the load test may not change it)."""
    from photoid.catalog.calibrate import calibrate
    from photoid.catalog.build import build_catalog, read_catalog
    from photoid.catalog.store import update_manifest
    from photoid.runs.config import add_config_arguments, resolve_config
    from photoid.training.kfold import run_config

    data = synthetic_turtles(cache_dir, *settings.photos)
    records = turtle_records(cache_dir, data, dim_pre=settings.dim, layout="compact")
    run_dir = Path(cache_dir) / f"serve-run-{data.name}-{settings.dim}"
    catalog = Path(cache_dir) / f"serve-catalog-{data.name}-{settings.dim}"
    if not (catalog / "manifest.json").is_file() or read_catalog(catalog).calibration is None:
        parser = argparse.ArgumentParser()
        add_config_arguments(parser)
        args = parser.parse_args(["--model", "cpu-demo", "--data_dir", str(data), "--data_tfrec_dir", str(records),
                                  "--run_dir", str(run_dir), "--n_folds", "5", "--final_fold", "2", "--n_epochs", "1",
                                  "--dim", str(settings.dim), "--dim_pre", str(settings.dim), "--job", "train_val",
                                  "--verbose", "0", "--force", "true"])
        run_config(resolve_config(args))
        built = build_catalog([str(run_dir)], data, catalog, force=True)
        update_manifest(built, calibration=calibrate(built, repeats=1))
    return data, catalog


def _multipart(path: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"photos\"; filename=\"{Path(path).name}\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + Path(path).read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _post(address: str, path: str) -> float:
    body, content_type = _multipart(path)
    request = urllib.request.Request(f"{address}identify?format=json", data=body, method="POST",
                                     headers={"Content-Type": content_type})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as response:
        answer = json.load(response)
    elapsed = time.perf_counter() - started
    if answer["results"][0]["error"]:
        raise RuntimeError(f"{path}: {answer['results'][0]['error']}")
    return elapsed


def _get(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=300) as response:
        response.read()
    return time.perf_counter() - started


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def start_server(catalog_dir: Path) -> tuple[subprocess.Popen, str]:
    """`photoid serve` as a user starts it, in its own process; returns it with its address once it answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-c", "import sys; from photoid.cli import main; sys.exit(main())",
                               "serve", "--catalog", str(catalog_dir), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in server.stdout:  # printed once the models are loaded
        if line.startswith("photoid serve: "):
            return server, line.removeprefix("photoid serve: ").strip()
    server.wait()
    raise RuntimeError(f"photoid serve exited with code {server.returncode} before it listened")


def run(preset: str, cache_dir: Path) -> list[Result]:
    from photoid.catalog.identify import identify_paths_with_catalog
    from photoid.catalog.build import load_catalog_embedder, read_catalog

    settings = PRESETS[preset]
    data, cached = calibrated_catalog(Path(cache_dir), settings)
    catalog_dir = Path(cache_dir) / "serve-catalog-under-test"
    shutil.rmtree(catalog_dir, ignore_errors=True)
    shutil.copytree(cached, catalog_dir)
    photos = sorted(str(p) for p in (data / "images").glob("*.JPG"))
    catalog = read_catalog(catalog_dir)
    embedder = load_catalog_embedder(catalog)
    server, address = start_server(catalog_dir)
    try:
        def in_process(path: str) -> float:
            started = time.perf_counter()
            list(identify_paths_with_catalog(catalog, [path], embedder=embedder))
            return time.perf_counter() - started

        in_process(photos[0]), _post(address, photos[0])  # warm-up: traces and first requests are not timed
        # Interleaved, so load from other programs hits both alike.
        direct, served = [], []
        for path in photos[1:1 + settings.single_requests]:
            direct.append(in_process(path))
            served.append(_post(address, path))
        per_photo, latency = statistics.median(direct), statistics.median(served)

        n = CLIENTS * settings.requests_per_client
        load = photos[:n] if len(photos) >= n else (photos * (n // len(photos) + 1))[:n]
        page_times: list[float] = []
        done = threading.Event()

        def browse() -> None:  # a person browsing while the others upload
            while not done.wait(BROWSE_PAUSE_S):
                page_times.append(_get(f"{address}individuals"))

        browser = threading.Thread(target=browse)
        started = time.perf_counter()
        browser.start()
        with ThreadPoolExecutor(CLIENTS) as pool:
            loaded = list(pool.map(lambda p: _post(address, p), load))
        wall = time.perf_counter() - started
        done.set()
        browser.join()
        page_times = page_times or [_get(f"{address}individuals")]
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(catalog_dir, ignore_errors=True)

    model = f"cpu-demo, 2 folds at {settings.dim} px"
    size = f"{len(catalog.table)} catalogue photos"
    single = Result(
        "B7a", f"one photo per request, one client ({model}, {size})", latency, per_photo, "s/photo",
        latency / per_photo, Goal(1.5, higher_is_better=False), "served over HTTP", "identify in-process",
        details=[f"served p95 {_percentile(served, 95):.4f} s, in-process p95 {_percentile(direct, 95):.4f} s "
                 f"over {len(served)} photos"],
        notes=["median latency of POST /identify?format=json (upload, store, identify, answer) over the in-process "
               "call of the same function per photo, interleaved; the server is `photoid serve` in its own process "
               "on 127.0.0.1, the clients are threads of the benchmark's process"])
    rate, direct_rate = n / wall, 1.0 / per_photo
    concurrent = Result(
        "B7b", f"{CLIENTS} clients uploading one photo per request at once ({model})", rate, direct_rate,
        "photos/s", rate / direct_rate, Goal(1.0), f"served, {CLIENTS} clients", "identify in-process, one at a time",
        details=[f"upload latency p50 {_percentile(loaded, 50):.3f} s, p95 {_percentile(loaded, 95):.3f} s "
                 f"({n} requests, {settings.requests_per_client} per client)",
                 f"browse page (/individuals) meanwhile: p50 {_percentile(page_times, 50) * 1000:.0f} ms, "
                 f"p95 {_percentile(page_times, 95) * 1000:.0f} ms over {len(page_times)} loads"],
        notes=["model calls run in one worker thread that batches every queued photo; each client waits for its "
               "answer before sending the next photo (a bounded load)"])
    return [single, concurrent]
