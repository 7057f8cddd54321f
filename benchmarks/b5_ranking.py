"""B5 — ranking 1000 queries against 100 000 database embeddings (512-d), top 20.

Ours: `photoid.whales.ranking.rank_scenario` with its default backend "auto": the faster, on this machine, of
its numpy search (blocks of queries against the database in one matrix product, `argpartition`, the query's own
image removed) and faiss' exact index, raced on the first 64 queries of the first search of each size. Baseline: the organisers' way — for each query,
`sklearn.metrics.pairwise.cosine_similarity` against the whole database and a full sort. Reference: faiss' exact
inner-product index (`IndexFlatIP`) on the normalised embeddings, the fastest exact search at hand; ours should
stay within 1.2× of it at every size. The catalogue's search is measured alongside (`b5_catalogue`).

The baseline is timed on a subset of the queries (every query costs the same there) and scaled to all of them;
its top 20 must equal ours for those queries, which checks that both answer the same question.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

import b5_catalogue
from _common import Goal, Result, interleaved_medians, seconds

GOAL_VS_BASELINE = Goal(20.0)
GOAL_VS_FAISS = Goal(1.2, higher_is_better=False)


@dataclass(frozen=True)
class Settings:
    database_sizes: tuple[int, ...]  # the first is the headline
    queries: int
    width: int
    top_k: int
    baseline_queries: int
    rounds: int


PRESETS = {
    "full": Settings(database_sizes=(100_000, 10_000), queries=1000, width=512, top_k=20, baseline_queries=20,
                     rounds=3),
    "tiny": Settings(database_sizes=(2000, 500), queries=50, width=64, top_k=20, baseline_queries=10, rounds=1),
}


@dataclass
class Scenario:
    query_ids: list[str]
    query_image_ids: list[str]  # half of them are database images, which must never be returned for themselves
    queries: np.ndarray
    database_ids: list[str]
    database: np.ndarray


def make_scenario(n_database: int, n_queries: int, width: int, seed: int = 0) -> Scenario:
    rng = np.random.default_rng(seed)
    database = rng.standard_normal((n_database, width), dtype=np.float32)
    database_ids = [f"db_{i:06d}" for i in range(n_database)]
    in_database = n_queries // 2
    queries = np.concatenate([database[:in_database] + 0.1 * rng.standard_normal((in_database, width),
                                                                                  dtype=np.float32),
                              rng.standard_normal((n_queries - in_database, width), dtype=np.float32)])
    query_image_ids = database_ids[:in_database] + [f"new_{i:06d}" for i in range(n_queries - in_database)]
    return Scenario([f"q_{i:05d}" for i in range(n_queries)], query_image_ids, queries, database_ids, database)


def rank_ours(s: Scenario, top_k: int, backend: str = "auto"):
    from photoid.whales.ranking import rank_scenario

    return rank_scenario(s.query_ids, s.query_image_ids, s.queries, s.database_ids, s.database, top_k=top_k,
                         backend=backend)


def rank_per_query(s: Scenario, n_queries: int, top_k: int) -> list[list[str]]:
    """The organisers' baseline: cosine similarity of one query to the whole database, full sort, own image out."""
    from sklearn.metrics.pairwise import cosine_similarity

    database_ids = np.asarray(s.database_ids)
    ranked = []
    for i in range(n_queries):
        similarities = cosine_similarity(s.queries[i:i + 1], s.database)[0]
        order = database_ids[np.argsort(-similarities, kind="stable")]
        ranked.append([image_id for image_id in order[:top_k + 1] if image_id != s.query_image_ids[i]][:top_k])
    return ranked


def faiss_flat_inner_product(s: Scenario, top_k: int):
    """Exact search with faiss on unit-length embeddings, one extra neighbour to drop a query's own image."""
    import faiss

    from photoid.core.retrieval import normalize_rows

    index = faiss.IndexFlatIP(s.database.shape[1])
    index.add(normalize_rows(s.database))
    return index.search(normalize_rows(s.queries), top_k + 1)


def _check_same_answers(s: Scenario, settings: Settings) -> None:
    ours = rank_ours(s, settings.top_k)
    ours_top = ours.groupby("query_id", sort=False)["database_image_id"].apply(list)
    baseline = rank_per_query(s, settings.baseline_queries, settings.top_k)
    for query_id, expected in zip(s.query_ids[:settings.baseline_queries], baseline):
        if ours_top[query_id] != expected:
            raise RuntimeError(f"rank_scenario and the per-query baseline disagree on query {query_id}")


def measure_size(n_database: int, settings: Settings) -> dict[str, float]:
    s = make_scenario(n_database, settings.queries, settings.width)
    _check_same_answers(s, settings)
    measures = {
        "ours": lambda: seconds(lambda: rank_ours(s, settings.top_k)),
        "baseline": lambda: seconds(lambda: rank_per_query(s, settings.baseline_queries, settings.top_k))
        * settings.queries / settings.baseline_queries,
    }
    try:
        import faiss  # noqa: F401
    except ImportError:
        pass
    else:
        measures["faiss"] = lambda: seconds(lambda: faiss_flat_inner_product(s, settings.top_k))
        measures["ours_faiss_backend"] = lambda: seconds(lambda: rank_ours(s, settings.top_k, backend="faiss"))
        measures["ours_numpy_backend"] = lambda: seconds(lambda: rank_ours(s, settings.top_k, backend="numpy"))
    return interleaved_medians(settings.rounds, measures)


def run(preset: str, cache_dir: Path) -> list[Result]:
    settings = PRESETS[preset]
    by_size = {n: measure_size(n, settings) for n in settings.database_sizes}
    head_size = settings.database_sizes[0]
    head = by_size[head_size]
    what = f"ranking {settings.queries} queries vs {head_size:,} embeddings ({settings.width}-d), top {settings.top_k}"
    details = []
    for n, f in by_size.items():
        line = (f"{n:,} database embeddings: ours {f['ours']:.3f} s, per-query baseline {f['baseline']:.2f} s "
                f"({f['baseline'] / f['ours']:.1f}×)")
        if "faiss" in f:
            line += (f", faiss IndexFlatIP {f['faiss']:.3f} s (ours / faiss {f['ours'] / f['faiss']:.2f}), "
                     f"rank_scenario(backend='faiss') {f['ours_faiss_backend']:.3f} s, "
                f"rank_scenario(backend='numpy') {f['ours_numpy_backend']:.3f} s")
        details.append(line)
    notes = [f"median of {settings.rounds} alternating rounds; the baseline ran {settings.baseline_queries} queries "
             f"per round, scaled to {settings.queries}; half the queries are database images (removed from their "
             "own results). Times include normalising the embeddings."]
    rows = [Result(
        id="B5", what=what, ours=head["ours"], baseline=head["baseline"], unit="s",
        ratio=head["baseline"] / head["ours"], goal=GOAL_VS_BASELINE, ours_label="rank_scenario",
        baseline_label="cosine_similarity + full sort per query", details=details, notes=notes)]
    if "faiss" in head:
        for n, f in by_size.items():
            rows.append(Result(
                id="B5-faiss" if n == head_size else f"B5-faiss-{n // 1000}k",
                what=f"ranking {settings.queries} queries vs {n:,} embeddings ({settings.width}-d), top "
                     f"{settings.top_k}, vs faiss", ours=f["ours"], baseline=f["faiss"], unit="s",
                ratio=f["ours"] / f["faiss"], goal=GOAL_VS_FAISS, ours_label="rank_scenario (auto)",
                baseline_label="faiss IndexFlatIP", notes=["ratio = our time / faiss' time: lower is better."]))
    else:
        notes.append("faiss is not installed (`pip install 'photoid[faiss]'`): the comparison with it is skipped.")
    return rows + b5_catalogue.run(preset)
