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

B7c and B7d, a survey reviewed while its batch job runs: the catalogue grown to 10,000 photos (the run's own
photos, then copies of their embeddings with noise under new individuals, 5 photos each), a survey of 2,000
photos imported (the data's photos, each copy made distinct by bytes after the end of its JPEG stream), and the
server's batch job identifying it; meanwhile one reviewer loads the queue page (`/surveys/NAME?sort=confidence`,
100 of the 2,000 rows shown) and the match view of a photo already identified (`/surveys/NAME/photos/ID`, the
candidates recomputed against the 10,000 photos), one after the other with a short pause. The figure is the p95
latency of each page over the 200 ms budget (goal at most 1×); the idle p95 (after the job) and the
job's rate are in the details.
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
    catalog_photos: int  # B7c/d: the catalogue grown to this many photos
    survey_photos: int  # B7c/d: photos of the survey identified meanwhile


PRESETS = {
    "full": Settings(photos=(512, 300), dim=64, requests_per_client=12, single_requests=40, catalog_photos=10_000,
                     survey_photos=2_000),
    "tiny": Settings(photos=(48, 60), dim=32, requests_per_client=2, single_requests=3, catalog_photos=500,
                     survey_photos=240),
}
PAGE_BUDGET_S = 0.200  # the budget of the queue page and the match view, p95, while the job runs
REVIEW_PAUSE_S = 0.05  # between a reviewer's page loads
NEW_PER_INDIVIDUAL = 5


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
    calibration = read_catalog(catalog).calibration if (catalog / "manifest.json").is_file() else None
    if not calibration or "probability" not in calibration:  # calibrated before probabilities were fitted
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
    for line in server.stdout:  # printed once the models are loaded, just before it listens
        if line.startswith("photoid serve: "):
            address = line.removeprefix("photoid serve: ").strip()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and server.poll() is None:
                try:
                    urllib.request.urlopen(f"{address}static/style.css", timeout=5).read()
                    return server, address
                except OSError:
                    time.sleep(0.1)
            break
    server.wait()
    raise RuntimeError(f"photoid serve exited with code {server.returncode} before it listened")


def grown_catalog(cached: Path, out: Path, n_photos: int) -> Path:
    """A copy of `cached` grown to `n_photos`: copies of its embeddings with noise (each model block normalised
    again), NEW_PER_INDIVIDUAL per new individual, pointing at its photo files. Its calibration is kept."""
    from photoid.catalog.build import read_catalog
    from photoid.catalog.store import catalog_transaction
    from photoid.core.retrieval import normalize_rows

    import pandas as pd

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(cached, out)
    base = read_catalog(out)
    extra = max(0, n_photos - len(base.table))
    rng = np.random.default_rng(0)
    source = rng.integers(0, len(base.table), extra)
    embeddings = base.embeddings[source] + rng.normal(0, 0.05, (extra, base.dim)).astype(np.float32)
    for offset, dim in base.blocks():
        scale = np.linalg.norm(base.embeddings[0, offset:offset + dim])
        embeddings[:, offset:offset + dim] = normalize_rows(embeddings[:, offset:offset + dim]) * scale
    added = pd.DataFrame({"individual_id": [f"grown-{i // NEW_PER_INDIVIDUAL:05d}" for i in range(extra)],
                          "image_id": [f"grown-{i:06d}" for i in range(extra)], "source": "benchmark",
                          "path": base.table["path"].to_numpy()[source]})
    with catalog_transaction(out) as tx:
        tx.commit(tx.catalog.manifest, pd.concat([tx.catalog.table, added], ignore_index=True),
                  np.concatenate([tx.catalog.embeddings, embeddings]))
    return out


def survey_folder(cache_dir: Path, data: Path, n_photos: int) -> Path:
    """`n_photos` distinct JPEGs: the data's photos, each copy made unique by bytes after its end of stream
    (which photoid and TensorFlow ignore). Cached."""
    folder = Path(cache_dir) / f"survey-{data.name}-{n_photos}"
    if (folder / "done").is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "photos").mkdir(parents=True)
    photos = sorted((data / "images").glob("*.JPG"))
    for i in range(n_photos):
        original = photos[i % len(photos)]
        (folder / "photos" / f"{i:05d}-{original.name}").write_bytes(original.read_bytes() + i.to_bytes(4, "big"))
    (folder / "done").write_text("ok")
    return folder


def review_while_identifying(preset: str, cache_dir: Path, data: Path, cached: Path) -> list[Result]:
    """B7c and B7d (see the module's docstring)."""
    from photoid.survey.importer import import_folder

    settings = PRESETS[preset]
    catalog_dir = grown_catalog(cached, Path(cache_dir) / "serve-catalog-survey-under-test", settings.catalog_photos)
    folder = survey_folder(cache_dir, data, settings.survey_photos)
    started = time.perf_counter()
    report = import_folder(catalog_dir, "season", folder / "photos")
    import_s = time.perf_counter() - started
    server, address = start_server(catalog_dir)
    cookie = {"Cookie": "photoid_reviewer=bench"}

    def timed(url: str) -> float:
        request = urllib.request.Request(address.rstrip("/") + url, headers=cookie)
        begin = time.perf_counter()
        with urllib.request.urlopen(request, timeout=300) as response:
            response.read()
        return time.perf_counter() - begin

    def job() -> dict:
        with urllib.request.urlopen(f"{address}surveys/season/job", timeout=60) as response:
            return json.load(response)

    try:
        urllib.request.urlopen(urllib.request.Request(f"{address}surveys/season/identify", data=b"", method="POST"),
                               timeout=60)
        while job()["done"] < 1:
            time.sleep(0.05)
        queue_busy, match_busy, done_during = [], [], []
        job_started = time.perf_counter()
        while (status := job())["state"] == "running":
            photo = f"p{1 + (len(match_busy) * 37) % max(status['done'], 1):06d}"
            queue_busy.append(timed("/surveys/season?sort=confidence"))
            match_busy.append(timed(f"/surveys/season/photos/{photo}"))
            done_during.append(status["done"])
            time.sleep(REVIEW_PAUSE_S)
        job_s = time.perf_counter() - job_started
        final = job()
        if final["state"] != "done":
            raise RuntimeError(f"the survey's batch job ended {final['state']}: {final.get('error')}")
        queue_idle = [timed("/surveys/season?sort=confidence") for _ in range(20)]
        match_idle = [timed(f"/surveys/season/photos/p{1 + i * 53 % final['total']:06d}") for i in range(20)]
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(catalog_dir, ignore_errors=True)
    if not queue_busy:
        raise RuntimeError("the job finished before a page was loaded: nothing measured; use more photos")
    what = (f"{settings.catalog_photos:,}-photo catalogue, {report.added:,}-photo survey being identified "
            f"(cpu-demo, 2 folds at {settings.dim} px)")
    common = [f"the batch job identified {final['total']:,} photos in {job_s:.0f} s ({final['total'] / job_s:.0f} "
              f"photos/s) while {len(queue_busy)} queue pages and as many match views were loaded; the import of "
              f"the {report.added:,} photos took {import_s:.1f} s (every photo checked and hashed)"]
    rows = []
    for row_id, page, busy, idle in (("B7c", "the review queue (100 of the rows shown, by confidence)", queue_busy,
                                      queue_idle),
                                     ("B7d", "the match view (candidates recomputed)", match_busy, match_idle)):
        p95 = _percentile(busy, 95)
        rows.append(Result(
            row_id, f"{page} while the batch job runs ({what})", p95 * 1000, PAGE_BUDGET_S * 1000, "ms",
            p95 / PAGE_BUDGET_S, Goal(1.0, higher_is_better=False), "p95 latency", "the page budget",
            details=[f"p50 {_percentile(busy, 50) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max "
                     f"{max(busy) * 1000:.0f} ms over {len(busy)} loads during the job; idle after it: p50 "
                     f"{_percentile(idle, 50) * 1000:.0f} ms, p95 {_percentile(idle, 95) * 1000:.0f} ms over "
                     f"{len(idle)} loads", *common],
            notes=["`photoid serve` in its own process on 127.0.0.1; GET over HTTP from the benchmark's process, "
                   "one reviewer, one page after the other; the job's model calls run in the server's worker thread "
                   "on the same 2 cores"]))
    return rows


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
    return [single, concurrent, *review_while_identifying(preset, cache_dir, data, cached)]
