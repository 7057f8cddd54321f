"""Approximate search, only where asked for (`photoid catalog build --index ivf|hnsw`): a faiss index per model block.

The exact search reads every photo's row for every query (`photoid.catalog.index`): about 0.15 s for one photo
against a million 512-d photos on 2 cores, bound by the memory's bandwidth. An approximate index reads a small
part: IVF (faiss `IVF<nlist>,Flat`: the photos grouped around `nlist` centres found by k-means, a query reading
the `nprobe` nearest groups) or HNSW (`HNSW32,Flat`: a graph walked from an entry point, `ef_search` candidates
kept). With float16 storage the rows are stored as faiss' SQfp16 codes. A query retrieves its NEIGHBOURS most
similar photos per model; each individual among them scores its best photo, as the exact search would score it
(clipped into [0, 1]); an individual not among them scores 0, which the exact search gives only to individuals
nothing in the catalogue resembles. So the best candidates are the exact ones whenever the index finds their
photos, and how often it does is measured when the index is built: recall@5 (the share of the exact search's top 5
individuals among the approximate top 5) and recall@1 over RECALL_QUERIES catalogue photos, each left out of its
own search, printed by `photoid catalog build` and kept in the manifest. Identification results then say that
the search was approximate (`describe`), and that the threshold was calibrated on exact scores.

Stored with the catalogue: each block's index serialised by faiss itself to bytes (`faiss.serialize_index`),
saved as a uint8 .npy file `index-GGGGG-B.npy` listed in the manifest's `index` entry with its sha256, and
restored by `faiss.deserialize_index`: no pickle. The entry lists the parts it covers; photos added later are
searched exactly beside it (`index.Delta`) until they pass the rebuild limits, when the next writer rebuilds it
(`maintain_stored_index`).
"""

from __future__ import annotations

import math
import time

import numpy as np

from photoid.catalog.openset import combine_models
from photoid.core import io as pio
from photoid.core.errors import PhotoidError
from photoid.core.retrieval import normalize_rows

KINDS = ("exact", "ivf", "hnsw")
NEIGHBOURS = 256  # photos retrieved per query and model
RECALL_QUERIES = 500  # catalogue photos whose search is compared with the exact one when an index is built
RECALL_K = 5
DEFAULT_NPROBE = 32
DEFAULT_EF_SEARCH = 512  # at least NEIGHBOURS: HNSW returns at most ef_search photos
HNSW_M = 32
TRAIN_PER_LIST = 64  # k-means training photos per IVF list (faiss asks for at least 39)
QUERY_CHUNK = 100  # queries scored at once when recall is measured (bounded memory at a million photos)


def settings_for(kind: str, n_rows: int, *, nlist: int | None = None, nprobe: int | None = None,
                 ef_search: int | None = None) -> dict:
    """The manifest's description of an approximate index of `kind` over `n_rows` photos (the faiss factory and
    its search parameters); defaults: nlist ≈ √photos, nprobe DEFAULT_NPROBE, ef_search DEFAULT_EF_SEARCH."""
    if kind not in KINDS or kind == "exact":
        raise PhotoidError(f"unknown approximate index {kind!r}; choose from {', '.join(KINDS[1:])}")
    if kind == "ivf":
        nlist = nlist or max(1, min(65536, round(math.sqrt(max(n_rows, 1)))))
        nprobe = nprobe or DEFAULT_NPROBE
        if nlist < 1 or nprobe < 1:
            raise PhotoidError("--nlist and --nprobe must be at least 1")
        return {"kind": "ivf", "nlist": int(nlist), "nprobe": int(min(nprobe, nlist)), "neighbours": NEIGHBOURS}
    ef_search = ef_search or DEFAULT_EF_SEARCH
    if ef_search < NEIGHBOURS:
        raise PhotoidError(f"--ef_search must be at least {NEIGHBOURS} (the photos retrieved per query)")
    return {"kind": "hnsw", "m": HNSW_M, "ef_search": int(ef_search), "neighbours": NEIGHBOURS}


def _factory(settings: dict, storage: str) -> str:
    codes = "SQfp16" if storage == "float16" else "Flat"
    return f"IVF{settings['nlist']},{codes}" if settings["kind"] == "ivf" else f"HNSW{settings['m']},{codes}"


def describe(entry: dict) -> str:
    """One line for identification results: which approximate index, and its recall measured at build."""
    recall = entry.get("recall") or {}
    measured = (f", recall@{RECALL_K} {recall['recall_at_5']:.3f} and recall@1 {recall['recall_at_1']:.3f} against "
                f"the exact search" if recall else "")
    knob = f"nprobe {entry['nprobe']}" if entry["kind"] == "ivf" else f"ef_search {entry['ef_search']}"
    return f"approximate ({entry['factory']}, {knob}{measured}; the threshold was calibrated on exact scores)"


def _faiss():
    try:
        import faiss
    except ImportError as err:
        raise PhotoidError("an approximate catalogue index needs the faiss package: pip install faiss-cpu") from err
    return faiss


class Searcher:
    """One block's faiss index; `best_per_slot` answers as `openset.best_per_individual` does, approximately."""

    def __init__(self, index, settings: dict):
        faiss = _faiss()
        self.index = index
        self.neighbours = int(settings["neighbours"])
        if settings["kind"] == "ivf":
            faiss.extract_index_ivf(index).nprobe = int(settings["nprobe"])
        else:
            faiss.downcast_index(index).hnsw.efSearch = int(settings["ef_search"])

    def best_per_slot(self, q, main_slots, main_alive, n_slots, own, dead) -> np.ndarray:
        """float32 (slots, queries): each slot's best clipped cosine among the photos retrieved for each query,
        0 for a slot with photos none of which was retrieved, -inf for a slot without photos here."""
        k = min(self.neighbours + 1, self.index.ntotal)  # one more: room for the query's own photo
        out = np.where(main_alive > 0, 0.0, -np.inf).astype(np.float32)[:, None].repeat(len(q), axis=1)
        if k == 0 or len(q) == 0:
            return out
        scores, ids = self.index.search(np.ascontiguousarray(q, dtype=np.float32), k)
        keep = (ids >= 0) & (ids != own[:, None])
        if len(dead):
            keep &= ~np.isin(ids, dead)
        query = np.broadcast_to(np.arange(len(q))[:, None], ids.shape)
        np.maximum.at(out, (main_slots[ids[keep]], query[keep]), np.clip(scores[keep], 0.0, 1.0))
        return out


def unit_rows(parts, offset: int, dim: int):
    """Each part's rows of one model block, normalised (float32), part by part."""
    for part in parts:
        yield normalize_rows(part.embeddings[:, offset:offset + dim])


def build_searchers(catalog, settings: dict) -> tuple[list, list[np.ndarray]]:
    """Train and fill one faiss index per model block over every photo of `catalog`; returns the searchers and each
    block's serialised bytes."""
    faiss = _faiss()
    n_rows = len(catalog.table)
    searchers, serialised = [], []
    rng = np.random.default_rng(0)
    for offset, dim in catalog.blocks():
        index = faiss.index_factory(dim, _factory(settings, catalog.storage), faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            n_train = min(n_rows, TRAIN_PER_LIST * settings.get("nlist", 1))
            rows = np.sort(rng.choice(n_rows, n_train, replace=False))
            index.train(_rows_at(catalog.parts, offset, dim, rows))
        for unit in unit_rows(catalog.parts, offset, dim):
            index.add(unit)
        searchers.append(Searcher(index, settings))
        serialised.append(faiss.serialize_index(index))
    return searchers, serialised


def _rows_at(parts, offset: int, dim: int, rows: np.ndarray) -> np.ndarray:
    """Unit rows of one block at the sorted catalogue `rows`, gathered part by part."""
    out, start = [], 0
    for part in parts:
        inside = rows[(rows >= start) & (rows < start + part.rows)] - start
        if len(inside):
            out.append(normalize_rows(part.embeddings[inside, offset:offset + dim]))
        start += part.rows
    return np.concatenate(out) if out else np.zeros((0, dim), np.float32)


def build_stored_index(catalog, generation: int, settings: dict, written: list[str]) -> dict:
    """Build the approximate index of `catalog`, write its files (their names appended to `written`, so that a
    failed commit removes them) and measure its recall; returns the manifest's `index` entry."""
    from photoid.catalog.index import CatalogIndex

    started = time.perf_counter()
    searchers, serialised = build_searchers(catalog, settings)
    seconds = time.perf_counter() - started
    files = {}
    for b, data in enumerate(serialised):
        name = f"index-{generation:05d}-{b}.npy"
        written.append(name)
        pio.save_npy(catalog.path / name, np.asarray(data, dtype=np.uint8))
        files[f"block-{b}"] = {"name": name, "sha256": pio.file_sha256(catalog.path / name)}
    covered = [(p.name, p.rows) for p in catalog.parts]
    entry = {**settings, "factory": _factory(settings, catalog.storage), "storage": catalog.storage,
             "covers": [[name, rows] for name, rows in covered], "rows": int(len(catalog.table)), "files": files,
             "seconds_to_build": round(seconds, 1)}
    entry["description"] = describe(entry)
    approximate = CatalogIndex.fresh_over(catalog, entry, searchers, covered)
    entry["recall"] = measure_recall(catalog, approximate)
    entry["description"] = describe(entry)
    return entry


def load_searchers(catalog, entry: dict) -> tuple[list, list[tuple[str, int]]]:
    """The stored index's searchers (checked against their sha256) and the parts it covers (name, rows)."""
    faiss = _faiss()
    searchers = []
    for b in range(len(catalog.blocks())):
        file = entry["files"][f"block-{b}"]
        path = catalog.path / file["name"]
        if pio.file_sha256(path) != file["sha256"]:
            raise PhotoidError(f"{path}: its content differs from what the manifest recorded (sha256); rebuild the "
                               "catalogue's index with photoid catalog build")
        data = pio.load_npy(path)
        if data.dtype != np.uint8 or data.ndim != 1:
            raise PhotoidError(f"{path}: not a serialised faiss index (uint8 bytes)")
        searchers.append(Searcher(faiss.deserialize_index(data), entry))
    return searchers, [(name, int(rows)) for name, rows in entry["covers"]]


def maintain_stored_index(catalog, generation: int, written: list[str]) -> dict:
    """The manifest of a generation being committed, its stored approximate index rebuilt when the photos it does
    not cover (added since) or the photos it covers that left pass the rebuild limits of `photoid.catalog.index`."""
    from photoid.catalog.index import REBUILD_FRACTION, REBUILD_MIN_ROWS

    manifest = catalog.manifest
    entry = manifest["index"]
    if entry.get("kind", "exact") == "exact":
        return manifest
    names = {p.name for p in catalog.parts}
    covered = {name: rows for name, rows in entry.get("covers", [])}
    uncovered = sum(p.rows for p in catalog.parts if p.name not in covered)
    gone = sum(rows for name, rows in covered.items() if name not in names)
    limit = max(REBUILD_MIN_ROWS, REBUILD_FRACTION * len(catalog.table))
    if entry.get("files") and uncovered <= limit and gone <= limit:
        return manifest
    settings = {key: entry[key] for key in ("kind", "nlist", "nprobe", "m", "ef_search", "neighbours") if key in entry}
    return {**manifest, "index": build_stored_index(catalog, generation, settings, written)}


def exact_scores_by_parts(catalog, slots: np.ndarray, n_slots: int, queries: np.ndarray,
                          own: np.ndarray) -> np.ndarray:
    """The exact `catalogue_scores` of `queries` (slot columns), computed part by part without laying the
    catalogue out (bounded memory): each part's products, then each slot's maximum within the part (reduceat)."""
    per_model = []
    for offset, dim in catalog.blocks():
        q = normalize_rows(queries[:, offset:offset + dim])
        out = np.full((n_slots, len(q)), -np.inf, dtype=np.float32)
        start = 0
        for part in catalog.parts:
            part_slots = slots[start:start + part.rows]
            order = np.argsort(part_slots, kind="stable")
            sims = normalize_rows(part.embeddings[order, offset:offset + dim]) @ q.T
            mine = np.flatnonzero((own >= start) & (own < start + part.rows))
            sims[_positions(order, own[mine] - start), mine] = -np.inf
            distinct, first = np.unique(part_slots[order], return_index=True)
            if len(distinct):
                best = np.maximum.reduceat(sims, first, axis=0)
                np.clip(best, 0.0, 1.0, out=best, where=best > -np.inf)
                out[distinct] = np.maximum(out[distinct], best)
            start += part.rows
        per_model.append(out.T)
    return combine_models(per_model)


def _positions(order: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Where each of `rows` went in `order` (a permutation)."""
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return inverse[rows]


def measure_recall(catalog, approximate, n_queries: int = RECALL_QUERIES, k: int = RECALL_K) -> dict:
    """recall@k and recall@1 of `approximate` (a `CatalogIndex` over `catalog`'s photos) against the exact search,
    over up to `n_queries` catalogue photos, each left out of its own search."""
    n_rows = len(catalog.table)
    if n_rows < 2:
        return {}
    rows = np.sort(np.random.default_rng(1).choice(n_rows, min(n_queries, n_rows), replace=False))
    slots = approximate._main_slots
    n_slots = len(approximate.names)
    hits_k = hits_1 = counted = 0
    for begin in range(0, len(rows), QUERY_CHUNK):
        chunk = rows[begin:begin + QUERY_CHUNK]
        queries = _full_rows_at(catalog.parts, chunk)
        exact = exact_scores_by_parts(catalog, slots, n_slots, queries, chunk)
        found = approximate.scores(queries, exclude=chunk)
        for e, a in zip(exact, found):
            top_e = [i for i in np.argsort(-e, kind="stable")[:k] if np.isfinite(e[i])]
            if not top_e:
                continue
            top_a = set(np.argsort(-a, kind="stable")[:k].tolist())
            hits_k += len(set(top_e) & top_a) / len(top_e)
            hits_1 += int(np.argmax(a) == top_e[0])
            counted += 1
    if not counted:
        return {}
    return {"recall_at_5": round(hits_k / counted, 4), "recall_at_1": round(hits_1 / counted, 4),
            "queries": int(counted)}


def _full_rows_at(parts, rows: np.ndarray) -> np.ndarray:
    out, start = [], 0
    for part in parts:
        inside = rows[(rows >= start) & (rows < start + part.rows)] - start
        if len(inside):
            out.append(np.asarray(part.embeddings[inside], dtype=np.float32))
        start += part.rows
    return np.concatenate(out)
