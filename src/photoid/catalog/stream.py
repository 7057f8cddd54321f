"""A catalogue built in chunks: bounded memory, a commit per chunk, resumed after a kill, shared by processes.

`photoid catalog build` embeds a data folder's labelled photos CHUNK at a time (PART_ROWS photos, the catalogue's
part size). Each chunk is committed as one part of the catalogue by its own transaction, with the build's progress
in the manifest (`build`: the photos in all, the chunk size, the chunks done, a hash of the photo listing and the
models). Memory holds the photo listing and one chunk's embeddings, never the whole catalogue's. Killed at any
moment, the build keeps every chunk it committed; the same command run again finds the progress, checks that the
folder lists the same photos and the same models embed them, and goes on with the chunks left. The commit of the
last chunk also puts the parts in the listing's order, builds the approximate index if one was asked for, and
removes the progress: until then identification refuses the catalogue (`Catalog.check_complete`).

Several processes share the work: the same command started in several processes on one machine (or on machines
sharing the folder over a file system with working `flock`) takes chunks as they come. A process claims a chunk
by an exclusive `flock` on `.build-chunk-NNNNNN.lock` before embedding it, and skips chunks another live process
holds; the kernel drops a dead process's claims, so a killed worker's chunk is taken by the next process that
reaches it. A process that finds no chunk left to claim returns, saying how many are still being embedded; one
that started while the folder held no finished catalogue and finds this very build finished by the others by the
time it is ready (a process slow to start) returns it as well, instead of refusing it as a catalogue already there.
TensorFlow's multi-worker strategy is not used: embedding needs no exchange between workers, and independent
processes survive each other's deaths (each can be given a GPU with CUDA_VISIBLE_DEVICES).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from photoid.catalog.store import MANIFEST, PART_ROWS, _now, catalog_transaction, read_catalog
from photoid.core import io as pio
from photoid.core.errors import PhotoidError, ProblemList

CLAIM_PATTERN = ".build-chunk-*.lock"
FLOAT16_SAMPLE = 500  # photos of the first chunk whose scores float16 storage's effect is measured on


@contextlib.contextmanager
def claimed(folder: Path, chunk: int) -> Iterator[bool]:
    """Whether this process holds the chunk's claim (an exclusive flock, dropped by the kernel if it dies)."""
    fd = os.open(folder / f".build-chunk-{chunk:06d}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def listing_sha256(table: pd.DataFrame, models: list[dict]) -> str:
    """What a resumed build must find unchanged: the photos listed (ids, individuals, paths) and the models."""
    digest = hashlib.sha256()
    for column in ("image_id", "individual_id", "path"):
        digest.update("\n".join(table[column]).encode())
    digest.update(repr([(m["fold"], m["weights_sha256"]) for m in models]).encode())
    return digest.hexdigest()


def build_in_chunks(embedder, table: pd.DataFrame, viewpoints: list | None, out: Path, manifest: dict, *,
                    batch_size: int, force: bool, chunk_rows: int = PART_ROWS, progress: bool = True,
                    note=print, local_settings=None, joined: bool = False):
    """Embed `table`'s photos into the catalogue `out`, chunk by chunk (see the module's docstring); returns the
    catalogue as this process leaves it (complete, or still being built by other processes).

    `local_settings` (`photoid.local.features.Settings`): each chunk's local features are extracted too and
    committed in the chunk's transaction (the catalogue's local-feature files hold every chunk's so far).
    `joined`: the folder held no finished catalogue when this build began (`holds_finished_catalogue`), so a
    finished one found now is this build's when it lists the same photos and models."""
    from photoid.catalog.index import float16_effect

    out.mkdir(parents=True, exist_ok=True)
    n_chunks = max(1, -(-len(table) // chunk_rows))
    listing = listing_sha256(table, manifest["models"])
    build = {"total": int(len(table)), "chunk_rows": int(chunk_rows), "chunks": n_chunks, "listing_sha256": listing,
             "storage": manifest.get("storage", "float32"), "index": manifest.get("index"),
             "local": None if local_settings is None else local_settings.to_json(), "done": []}
    state = _progress(out, build, force, joined)
    if state is not None and len(state["done"]) == n_chunks:
        if state.get("finished_by_others"):
            note(f"{out} was finished by the other processes building it: no chunk was left for this one")
        return read_catalog(out)
    fresh = force  # the first commit of a forced build replaces whatever the folder held
    done = set() if fresh or state is None else set(state["done"])
    if done:
        note(f"resuming the build of {out}: {len(done)} of {n_chunks} chunks of {chunk_rows} photos already "
             "embedded")
    bar = _bar(len(table), sum(_chunk_size(c, chunk_rows, len(table)) for c in done), out, progress)
    latest = None  # the last catalogue this process committed: a re-read reuses its parts
    embedded = 0
    try:
        for chunk in range(n_chunks):
            if chunk in done:
                continue
            with claimed(out, chunk) as mine:
                if not mine:
                    continue
                if not fresh:
                    now = pio.read_json(out / MANIFEST).get("build") if (out / MANIFEST).is_file() else None
                    if (out / MANIFEST).is_file() and now is None:
                        break  # another process finished the build
                    if now is not None and chunk in now["done"]:
                        bar.update(_chunk_size(chunk, chunk_rows, len(table)))
                        continue
                rows = slice(chunk * chunk_rows, (chunk + 1) * chunk_rows)
                started = time.perf_counter()
                embeddings = _embed(embedder, table[rows], viewpoints[rows] if viewpoints else None, batch_size,
                                    chunk, bar)
                features = None
                if local_settings is not None:
                    from photoid.catalog.local import table_features

                    features = table_features(table[rows], local_settings)
                seconds = time.perf_counter() - started
                effect = None
                if chunk == 0 and build["storage"] == "float16":
                    effect = float16_effect(embeddings, table["individual_id"][rows].to_numpy(),
                                            [(m["offset"], m["dim"]) for m in manifest["models"]], FLOAT16_SAMPLE)
                committed = _commit_chunk(out, manifest, build, chunk, table[rows], embeddings, seconds, effect,
                                          fresh, features, local_settings)
                latest = committed or latest
                embedded += committed is not None
                fresh = False
    finally:
        bar.close()
    catalog = read_catalog(out)
    note(f"this process embedded {embedded} of the {n_chunks} chunks")
    if catalog.building:
        left = catalog.building["chunks"] - len(catalog.building["done"])
        note(f"{left} chunk(s) of {out} are still being embedded by other processes; run the command again (or "
             "wait for them) to finish")
    del latest
    return catalog


def _chunk_size(chunk: int, chunk_rows: int, total: int) -> int:
    return max(0, min(chunk_rows, total - chunk * chunk_rows))


def _bar(total: int, initial: int, out: Path, shown: bool):
    from tqdm import tqdm

    # Not shown: disabled; shown: as TQDM_DISABLE and the other TQDM_* variables say (tqdm reads them).
    return tqdm(total=total, initial=initial, unit="photo", desc=f"embedding into {out.name}", file=sys.stderr,
                smoothing=0.05, **({} if shown else {"disable": True}))


def holds_finished_catalogue(out: Path) -> bool:
    """Whether `out` holds a catalogue whose build is over (not a build in progress, not nothing)."""
    return (out / MANIFEST).is_file() and "build" not in pio.read_json(out / MANIFEST)


def _progress(out: Path, build: dict, force: bool, joined: bool = False) -> dict | None:
    """The folder's build progress when it holds this very build (None: none yet); refuses a folder holding a
    finished catalogue or another build, unless `force`, or unless `joined` and the finished catalogue is this
    build's (all its chunks done, marked `finished_by_others`)."""
    if force or not (out / MANIFEST).is_file():
        return None
    manifest = pio.read_json(out / MANIFEST)
    state = manifest.get("build")
    if state is None:
        if joined and _is_this_build(out, manifest, build):
            return {**build, "done": list(range(build["chunks"])), "finished_by_others": True}
        raise PhotoidError(f"{out} already holds a catalogue; --force replaces it (photos added to it are lost)")
    same = {key: state.get(key) for key in ("total", "chunk_rows", "listing_sha256", "storage", "index", "local")}
    wanted = {key: build[key] for key in same}
    if same != wanted:
        differ = ", ".join(key for key in same if same[key] != wanted[key])
        raise PhotoidError(f"{out} holds another build in progress (it differs in {differ}: other photos, models "
                           "or options); --force starts this one over")
    return state


def _is_this_build(out: Path, manifest: dict, build: dict) -> bool:
    """Whether the finished catalogue in `out` holds what `build` would have: the same photos in the same order,
    the same models, storage, kind of index and local features (nothing added or relabelled since)."""
    from photoid.catalog.local import LOCAL_KEY

    index = manifest.get("index") or {}
    return (manifest.get("storage", "float32") == build["storage"]
            and index.get("kind") == (build["index"] or {}).get("kind")
            and bool(manifest.get(LOCAL_KEY)) == (build["local"] is not None)
            and listing_sha256(read_catalog(out).table, manifest["models"]) == build["listing_sha256"])


def _embed(embedder, rows: pd.DataFrame, viewpoints, batch_size: int, chunk: int, bar) -> np.ndarray:
    parts, problems = [], ProblemList()
    for _, _, embeddings, _, errors in embedder.batches(rows["path"].tolist(), batch_size, viewpoints=viewpoints):
        parts.append(embeddings)
        for path, reason in errors.items():
            problems.add(path, None, reason)
        bar.update(len(embeddings) + len(errors))
    problems.raise_if_any(title=f"photos that cannot be read (chunk {chunk}; the chunks committed before it are "
                                "kept: replace or repair these photos and run the same command again to resume)")
    return np.concatenate(parts) if parts else np.zeros((0, embedder.dim), np.float32)


def _commit_chunk(out: Path, manifest: dict, build: dict, chunk: int, rows: pd.DataFrame, embeddings: np.ndarray,
                  seconds: float, effect: dict | None, fresh: bool, features=None, local_settings=None):
    """Commit one chunk as a part (the last one also finishes the build) in its own transaction, with its local
    `features` when given; None when another process committed it first."""
    with catalog_transaction(out, waiting_message=f"to commit chunk {chunk} of the build") as tx:
        current = None if fresh else tx.catalog
        state = dict(current.building) if current is not None and current.building else {**build, "done": []}
        if current is not None and not current.building:
            raise PhotoidError(f"{out} was finished or replaced while chunk {chunk} was embedded")
        if current is not None and state["listing_sha256"] != build["listing_sha256"]:
            raise PhotoidError(f"{out} holds another build now (started by another process with --force)")
        if chunk in state["done"]:
            return None  # another process committed it meanwhile
        items: list = list(current.parts) if current is not None else []
        items.append((rows.reset_index(drop=True), embeddings))
        state["done"] = [*state["done"], chunk]
        state["seconds"] = round(float(state.get("seconds", 0.0)) + seconds, 1)
        if effect is not None:
            state["float16_effect"] = effect
        next_manifest = {**manifest, "build": state, "updated": _now()}
        if len(state["done"]) == state["chunks"]:
            # Finished: the parts in the listing's order, the progress gone, the index built by the commit.
            order = np.argsort(state["done"], kind="stable")
            items = [items[i] for i in order]
            next_manifest.pop("build")
            next_manifest["seconds_to_build"] = state["seconds"]
            if "float16_effect" in state:
                next_manifest["float16_effect"] = state["float16_effect"]
            for claim in out.glob(CLAIM_PATTERN):
                claim.unlink(missing_ok=True)
        if features is None:
            return tx.commit_parts(next_manifest, items)
        from photoid.catalog.local import LOCAL_KEY, read_local_features, write_local_then_commit
        from photoid.local.features import FeatureSet

        if current is not None and current.manifest.get(LOCAL_KEY):
            features = FeatureSet.join(read_local_features(current), features)
        return write_local_then_commit(tx, next_manifest, features, local_settings,
                                      lambda with_local: tx.commit_parts(with_local, items))

