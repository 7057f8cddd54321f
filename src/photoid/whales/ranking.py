"""Rank each query image against its scenario's database by cosine similarity (Where's Whale-do).

For one scenario the similarities of a block of queries to every database image come from one matrix product of
L2-normalised embeddings; the query's own image is removed from its candidates; the best `top_k` are found with
`np.argpartition` and only those are sorted. Scores are clipped into [0, 1], as the competition requires.

Query expansion follows the winner: with s the query's similarities and s2, s3 those of its two nearest database
images to every database image (each clipped into [0, 1]), the final score is 0.4·s⁷ + 0.4·s2⁷ + 0.2·s3⁷, so a
database image also ranks high when it resembles the query's best matches.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from photoid.core.retrieval import normalize_rows, raced_search, search_inner_product

SUBMISSION_COLUMNS = ["query_id", "database_image_id", "score"]
# The winner's query-expansion blend: weights of the query's own similarities and of its first and second
# nearest database images' similarities, and the power that sharpens them before blending.
EXPANSION_WEIGHTS = (0.4, 0.4, 0.2)
EXPANSION_POWER = 7
BACKENDS = ("auto", "numpy", "faiss")
# "auto": the backend that searched fastest on this machine, raced on the first search of each size class
# (queries × database rounded to a power of 4; see `_search_auto`) and remembered for the process. faiss' exact IndexFlatIP
# ranged from 1.17× (Intel) to 3.3× (AMD EPYC) faster than the numpy search at 1000 × 100,000 × 512, and is slower
# on the small databases of the competition's scenarios, so no fixed size switch is right everywhere.
_FASTER: dict[int, str] = {}  # size class -> the faster exact search here (raced_search)


def rank_scenario(query_ids: Sequence[str], query_image_ids: Sequence[str], query_emb: np.ndarray,
                  db_image_ids: Sequence[str], db_emb: np.ndarray, *, top_k: int = 20,
                  query_expansion: bool = False, backend: str = "auto", chunk_size: int = 1024) -> pd.DataFrame:
    """The best `top_k` database images of each query, as rows `query_id, database_image_id, score`.

    Rows come query by query in the given order, best score first; a query whose image is in the database never
    gets it back; a database of fewer than `top_k` other images gives fewer rows. `chunk_size` queries are
    compared at a time, bounding memory at `chunk_size × len(database)` similarities.
    `backend="faiss"` searches an exact inner-product index (faiss' IndexFlatIP) and returns the same rows (up to
    the order of equal scores); "auto" takes whichever of the two is faster here (see RACE_QUERIES); query expansion
    needs every similarity of the chosen neighbours and is computed with numpy only.
    """
    query_ids, query_image_ids, db_ids = (np.asarray(v, dtype=object) for v in
                                          (query_ids, query_image_ids, db_image_ids))
    q = normalize_rows(query_emb)
    d = normalize_rows(db_emb)
    _check_inputs(query_ids, query_image_ids, q, db_ids, d, top_k, backend, query_expansion, chunk_size)
    # Column of each query's own image in the database, or -1 when the database does not hold it.
    own = pd.Index(db_ids).get_indexer(query_image_ids)
    if backend == "auto":
        columns, scores = _search_auto(q, d, own, top_k, query_expansion, chunk_size)
    elif backend == "faiss":
        columns, scores = search_inner_product(q, d, own, top_k)
    else:
        columns, scores = _search_numpy(q, d, own, top_k, query_expansion, chunk_size)
    keep = np.isfinite(scores)
    rows_per_query = keep.sum(axis=1)
    return pd.DataFrame({
        "query_id": np.repeat(query_ids, rows_per_query),
        "database_image_id": db_ids[columns[keep]],
        "score": scores[keep].astype(np.float32),
    }, columns=SUBMISSION_COLUMNS)


def rank_scenarios(scenarios: Iterable, image_ids: Sequence[str], embeddings: np.ndarray,
                   **options) -> pd.DataFrame:
    """One submission for several scenarios: `scenarios` yields `(scenario_id, queries, database)` with the
    competition's query and database frames; `embeddings[i]` belongs to `image_ids[i]`. Options go to
    `rank_scenario`."""
    row_of = pd.Index(np.asarray(image_ids, dtype=object))
    if not row_of.is_unique:
        raise ValueError("image_ids holds duplicates: each image needs exactly one embedding")
    embeddings = np.asarray(embeddings)
    frames = []
    for scenario_id, queries, database in scenarios:
        q_rows = row_of.get_indexer(queries["query_image_id"])
        d_rows = row_of.get_indexer(database["database_image_id"])
        missing = sorted(set(queries["query_image_id"][q_rows < 0]) | set(database["database_image_id"][d_rows < 0]))
        if missing:
            raise ValueError(f"scenario {scenario_id}: no embedding for {len(missing)} image(s), "
                             f"e.g. {', '.join(missing[:5])}")
        frames.append(rank_scenario(queries["query_id"], queries["query_image_id"], embeddings[q_rows],
                                    database["database_image_id"], embeddings[d_rows], **options))
    if not frames:
        return pd.DataFrame(columns=SUBMISSION_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def _check_inputs(query_ids, query_image_ids, q, db_ids, d, top_k, backend, query_expansion, chunk_size) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown ranking backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "faiss" and query_expansion:
        raise ValueError("query expansion needs every similarity of the chosen neighbours: use backend='numpy'")
    if top_k < 1 or chunk_size < 1:
        raise ValueError(f"top_k and chunk_size must be at least 1, got {top_k} and {chunk_size}")
    if q.ndim != 2 or d.ndim != 2 or q.shape[1] != d.shape[1]:
        raise ValueError(f"query and database embeddings must be 2-D with the same width, got {q.shape} "
                         f"and {d.shape}")
    if not len(query_ids) == len(query_image_ids) == len(q):
        raise ValueError(f"{len(query_ids)} query ids, {len(query_image_ids)} query image ids and {len(q)} "
                         "query embeddings: one of each per query")
    if len(db_ids) != len(d):
        raise ValueError(f"{len(db_ids)} database image ids but {len(d)} database embeddings")
    if not pd.Index(db_ids).is_unique:
        raise ValueError("the database lists an image more than once")
    if not (np.isfinite(q).all() and np.isfinite(d).all()):
        raise ValueError("embeddings contain NaN or infinite values")


def _search_numpy(q, d, own, top_k, query_expansion, chunk_size):
    """Top-k columns and scores per query; slots beyond a query's candidates hold score -inf."""
    k = min(top_k, len(d))
    columns = np.zeros((len(q), k), dtype=np.int64)
    scores = np.full((len(q), k), -np.inf, dtype=np.float32)
    if k == 0:
        return columns, scores
    for start in range(0, len(q), chunk_size):
        block = slice(start, start + chunk_size)
        sims = np.clip(q[block] @ d.T, 0.0, 1.0)
        has_own = own[block] >= 0
        if query_expansion:
            sims = _expand(sims, d, own[block], has_own)
        # The own image is set below every real score (all >= 0), so it is never chosen.
        sims[np.flatnonzero(has_own), own[block][has_own]] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        columns[block] = np.take_along_axis(top, order, axis=1)
        scores[block] = np.take_along_axis(top_scores, order, axis=1)
    return columns, scores


def _expand(sims: np.ndarray, d: np.ndarray, own: np.ndarray, has_own: np.ndarray) -> np.ndarray:
    """The winner's query expansion for a block of queries (`sims` already clipped into [0, 1])."""
    rows = np.flatnonzero(has_own)
    candidates = sims.copy()
    candidates[rows, own[has_own]] = -np.inf
    n_neighbours = min(2, candidates.shape[1])
    nearest = np.argpartition(-candidates, n_neighbours - 1, axis=1)[:, :n_neighbours]
    nearest_scores = np.take_along_axis(candidates, nearest, axis=1)
    nearest = np.take_along_axis(nearest, np.argsort(-nearest_scores, axis=1, kind="stable"), axis=1)
    # With a single candidate (a database of one other image) its similarities stand in for the second one too.
    first, second = nearest[:, 0], nearest[:, min(1, n_neighbours - 1)]
    s2 = np.clip(d[first] @ d.T, 0.0, 1.0)
    s3 = np.clip(d[second] @ d.T, 0.0, 1.0)
    w1, w2, w3 = EXPANSION_WEIGHTS
    return (w1 * sims ** EXPANSION_POWER + w2 * s2 ** EXPANSION_POWER + w3 * s3 ** EXPANSION_POWER).astype(np.float32)


def _search_auto(q, d, own, top_k, query_expansion, chunk_size):
    """The faster of numpy and faiss for this size on this machine (`raced_search`).

    faiss answers the first search of a size class, timed whole because its cost per query falls with the batch
    (it switches to BLAS products: here 64 queries × 100,000 took 0.46 s, 1000 took 0.36 s); numpy is timed on its
    first RACE_QUERIES, its blocked products costing the same per query at any count. Both are exact.
    """
    if query_expansion or len(q) == 0:
        return _search_numpy(q, d, own, top_k, query_expansion, chunk_size)
    try:
        import faiss  # noqa: F401
    except ImportError:
        return _search_numpy(q, d, own, top_k, False, chunk_size)
    searches = {"numpy": lambda rows: _search_numpy(q[rows], d, own[rows], top_k, False, chunk_size),
                "faiss": lambda rows: search_inner_product(q[rows], d, own[rows], top_k)}
    return raced_search(_FASTER, len(q), len(d), searches, answer="faiss")
