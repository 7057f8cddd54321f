"""Catalogue transactions: parallel `photoid catalog add` calls all keep their photos, a writer killed at any moment
leaves the old or the new generation, a lock held by a dead process does not block, and a long wait says whom it
waits for. All on one catalogue of the session's tiny run; adding photos trains nothing.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from photoid.catalog.store import LOCK, catalog_transaction, read_catalog
from photoid.core.quiet import TF_LOG_LINE
from robustness_support import kill, reaped, start_photoid, subprocess_env, temporary_files, wait_until

# Every test starts `photoid` or Python in fresh processes (each `photoid catalog add` starts TensorFlow).
pytestmark = pytest.mark.slow

N_PARALLEL = 8
N_KILLS = 20


@pytest.fixture(scope="module")
def catalogue(trained_run, turtle_dir, tmp_path_factory) -> Path:
    from photoid.catalog.build import build_catalog

    return build_catalog([str(trained_run)], turtle_dir, tmp_path_factory.mktemp("tx") / "cat").path


def copy_of(catalogue: Path, tmp_path: Path) -> Path:
    shutil.copytree(catalogue, tmp_path / "cat")
    return tmp_path / "cat"


def new_photos(turtle_dir: Path, n: int) -> list[Path]:
    """`n` photos of the test set: none of them is in the catalogue (its image ids are new)."""
    ids = pd.read_csv(turtle_dir / "test.csv", dtype=str)["image_id"][:n]
    return [turtle_dir / "images" / f"{i}.JPG" for i in ids]


def test_parallel_adds_all_keep_their_photos_and_readers_never_see_a_mix(catalogue, turtle_dir, tmp_path):
    path = copy_of(catalogue, tmp_path)
    before = read_catalog(path)
    photos = new_photos(turtle_dir, N_PARALLEL)
    reads, stop = [], threading.Event()

    def reader():  # a reader (identify, the web page) loading the catalogue all along
        while not stop.is_set():
            catalog = read_catalog(path)  # raises on a half-written generation
            reads.append((catalog.manifest["generation"], len(catalog.table)))
            time.sleep(0.02)

    watcher = threading.Thread(target=reader, daemon=True)
    watcher.start()
    processes = [start_photoid("catalog", "add", photo, "--id", f"t_parallel_{i % 3}", "--catalog", path,
                               log_dir=tmp_path, name=f"add{i}") for i, photo in enumerate(photos)]
    with reaped(*(p for p, _, _ in processes)):
        codes = [p.wait(timeout=300) for p, _, _ in processes]
    stop.set()
    watcher.join()
    assert codes == [0] * N_PARALLEL, [err.read_text() for _, _, err in processes]
    assert all("added 1 photo(s)" in out.read_text() for _, out, _ in processes)
    # Nothing but photoid's own lines: no TensorFlow start-up chatter (photoid.core.quiet).
    assert not any(TF_LOG_LINE.match(line) for _, _, err in processes for line in err.read_text().splitlines())
    after = read_catalog(path)
    assert len(after.table) == len(before.table) + N_PARALLEL
    assert sorted(after.table["image_id"][len(before.table):]) == sorted(p.stem for p in photos)
    assert after.table["image_id"][:len(before.table)].tolist() == before.table["image_id"].tolist()
    assert after.manifest["generation"] == before.manifest["generation"] + N_PARALLEL
    np.testing.assert_array_equal(after.embeddings[:len(before.table)], before.embeddings)
    # Every generation a reader saw was whole: generation g holds exactly g - 1 added photos.
    assert reads and all(rows == len(before.table) + generation - before.manifest["generation"]
                         for generation, rows in reads)
    last = 1 + N_PARALLEL  # one generation per add; the local features of every photo are rewritten with it
    assert sorted(p.name for p in path.iterdir()) == [LOCK, f"embeddings-{last:05d}.npy", f"images-{last:05d}.csv",
                                                      f"local-{last:05d}.npy", f"local-{last:05d}.npz",
                                                      "manifest.json"]


# A writer that does nothing but commit additions, so that kills land inside commits: one row per generation.
COMMIT_LOOP = textwrap.dedent("""
    import sys
    import numpy as np, pandas as pd
    from photoid.catalog.store import catalog_transaction
    print("ready", flush=True)
    while True:
        with catalog_transaction(sys.argv[1]) as tx:
            current = tx.catalog
            row = pd.DataFrame({"individual_id": ["t_loop"], "image_id": [f"loop_{len(current.table)}"],
                                "source": ["added"], "path": ["loop.JPG"]})
            tx.commit(current.manifest, pd.concat([current.table, row], ignore_index=True),
                      np.concatenate([current.embeddings, current.embeddings[:1]]))
""")


def test_kill_9_at_random_moments_leaves_the_old_or_the_new_generation(catalogue, turtle_dir, tmp_path):
    path = copy_of(catalogue, tmp_path)
    base = read_catalog(path)
    base_rows, base_generation = len(base.table), base.manifest["generation"]
    rng = random.Random(14)
    # `photoid catalog add` itself, killed at moments spread over its run (start-up, embedding, commit).
    photo = new_photos(turtle_dir, 1)[0]
    started = time.monotonic()
    process, out, err = start_photoid("catalog", "add", photo, "--id", "t_killed", "--catalog", path,
                                      log_dir=tmp_path, name="timed")
    assert process.wait(timeout=300) == 0, err.read_text()
    duration = time.monotonic() - started
    shutil.rmtree(path)
    shutil.copytree(catalogue, path)
    process, _, _ = start_photoid("catalog", "add", photo, "--id", "t_killed", "--catalog", path,
                                  log_dir=tmp_path, name="killed")
    with reaped(process):
        time.sleep(duration * rng.uniform(0.5, 1.0))
        kill(process)
    assert len(read_catalog(path).table) in (base_rows, base_rows + 1)
    shutil.rmtree(path)
    shutil.copytree(catalogue, path)
    # Commits killed many times over: each time the catalogue loads, whole, at its last committed generation.
    seen = set()
    for attempt in range(N_KILLS):
        loop = subprocess.Popen([sys.executable, "-c", COMMIT_LOOP, str(path)], stdout=subprocess.PIPE,
                                env=subprocess_env())
        with reaped(loop):
            assert loop.stdout.readline() == b"ready\n"
            time.sleep(rng.uniform(0.0, 0.3))
            kill(loop)
        catalog = read_catalog(path)
        generation = catalog.manifest["generation"]
        assert len(catalog.table) == base_rows + generation - base_generation
        assert catalog.table["image_id"].tolist()[base_rows:] == [f"loop_{base_rows + i}"
                                                                    for i in range(generation - base_generation)]
        seen.add(generation)
    assert len(seen) > N_KILLS // 2  # the kills landed at many different points of the loop
    # What killed writers left behind (temporary files, an uncommitted generation) goes with the next commit.
    with catalog_transaction(path) as tx:
        tx.commit_manifest()
    assert not temporary_files(path)
    local = read_catalog(path).manifest["local_features"]  # not rewritten by these commits: named as they were
    assert sorted(p.name for p in path.iterdir() if p.suffix in (".npy", ".npz", ".csv")) == [
        f"embeddings-{generation:05d}.npy", f"images-{generation:05d}.csv", local["descriptors"]["name"],
        local["index"]["name"]]


HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from photoid.catalog.store import catalog_transaction
    with catalog_transaction(sys.argv[1]):
        print("holding", flush=True)
        time.sleep(600)
""")


def test_a_waiting_add_says_whom_it_waits_for_and_a_dead_holder_does_not_block(catalogue, turtle_dir, tmp_path):
    path = copy_of(catalogue, tmp_path)
    rows = len(read_catalog(path).table)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], stdout=subprocess.PIPE,
                              env=subprocess_env())
    photo = new_photos(turtle_dir, 1)[0]
    with reaped(holder):
        assert holder.stdout.readline() == b"holding\n"
        add, out, err = start_photoid("catalog", "add", photo, "--id", "t_waiting", "--catalog", path,
                                      log_dir=tmp_path, name="waiting")
        with reaped(add):
            wait_until(lambda: "waiting" in err.read_text(), add, timeout=120, what="the waiting message")
            assert f"locked by pid {holder.pid}" in err.read_text()
            assert "then to add 1 photo(s) of t_waiting" in err.read_text()
            assert add.poll() is None  # still waiting
            kill(holder)  # dies holding the lock: the kernel releases it
            assert add.wait(timeout=120) == 0, err.read_text()
    assert "added 1 photo(s)" in out.read_text()
    assert len(read_catalog(path).table) == rows + 1
    # A lock file still naming a process that died (as `kill -9` leaves it) is no lock at all.
    (path / LOCK).write_text(f'{{"pid": {holder.pid}, "command": "photoid catalog add", "since": "then"}}')
    started = time.monotonic()
    with catalog_transaction(path) as tx:
        assert len(tx.catalog.table) == rows + 1
    assert time.monotonic() - started < 1.0


def _build_progress(path: Path) -> list[int]:
    """The chunks a build in progress has committed (every chunk once it finished)."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return []
    return manifest["build"]["done"] if "build" in manifest else list(range(10**6))


def test_a_build_killed_mid_way_resumes_at_the_chunk_it_reached(catalogue, trained_run, turtle_dir, tmp_path):
    """`photoid catalog build --chunk 2` killed with -9 after a few commits keeps them; run again, it embeds only
    the chunks left and gives the catalogue an uninterrupted build gives."""
    out = tmp_path / "built"
    argv = ("catalog", "build", "--run", trained_run, "--data_dir", turtle_dir, "--out", out, "--chunk", "2")
    process, _, err = start_photoid(*argv, log_dir=tmp_path, name="killed")
    with reaped(process):
        wait_until(lambda: len(_build_progress(out)) >= 3, process, timeout=300, what="three chunks committed")
        kill(process)
    partial = read_catalog(out)
    done = partial.building["done"]
    assert 3 <= len(done) < partial.building["chunks"] and len(partial.table) == 2 * len(done)
    process, out_log, err = start_photoid(*argv, log_dir=tmp_path, name="resumed")
    with reaped(process):
        assert process.wait(timeout=300) == 0, err.read_text()
    printed = out_log.read_text()
    assert f"resuming the build of {out}: {len(done)} of {partial.building['chunks']} chunks" in printed
    finished, whole = read_catalog(out), read_catalog(catalogue)
    assert finished.building is None and finished.table.equals(whole.table)
    np.testing.assert_allclose(finished.embeddings, whole.embeddings, atol=1e-6)
    assert not list(out.glob(".build-chunk-*.lock")) and not temporary_files(out)
