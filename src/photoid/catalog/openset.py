"""Open-set identification: score each known individual for a photo, blend in a classifier, say when it is new.

1. Similarity: a photo is compared with every catalogue photo by cosine (one matrix product per block of photos),
   clipped into [0, 1] as the Where's Whale-do ranking clips it; an individual scores its best photo's similarity
   (1-NN per individual). Two exact searches give the same scores: numpy's blocked product and faiss' nearest
   images completed by the product where they leave an individual's best unknown; "auto" takes whichever is
   faster on this machine for the size at hand (`_search_auto`), so the machine changes the speed, never the result.
2. Models (`catalogue_scores`): each fold model scores the individuals in its own embedding space; the scores
   are averaged, on the scale of one model's best score, so that a threshold chosen out of fold (one fold model
   per photo) holds for the deployed catalogue (all folds).
3. Blend: (1 − w)·score + w·probability, the classifier's probabilities restricted to the candidates and
   renormalised; an individual the classifier never learned (added to the catalogue later) keeps its score.
4. New: "new" is a candidate of its own scored at the threshold; it ranks above every individual scoring at or
   below it, so it comes first exactly when the best score does not exceed the threshold (Happywhale's 1st place
   inserted `new_individual` the same way). Individuals outside the nameable ones (Turtle Recall's 101 labels)
   are reported as new too.

The threshold and the blend weight are chosen by `search_operating_point`, which maximises MAP@5 over held-out
queries whose truth is an individual or new (`photoid.catalog.calibrate`). Pure numpy (faiss optional); no file access.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from photoid.core.labels import NEW_INDIVIDUAL, top_labels
from photoid.core.retrieval import normalize_rows, raced_search, search_inner_product
from photoid.core.threads import available_cores, one_blas_thread

TOP_K = 5
# Blend weights tried by calibration: similarities spread over a narrow band while probabilities span [0, 1], so
# small weights already matter and are tried densely.
BLEND_WEIGHTS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
THRESHOLD_GRID_SIZE = 512  # candidate thresholds: quantiles of the scores that can change the outcome
BACKENDS = ("auto", "numpy", "faiss", "faiss_approximate")
BLOCK_ELEMENTS = 1 << 25  # similarities computed at once by the numpy search (128 MB of float32)
NEIGHBOURS = 1000  # faiss: catalogue images retrieved per photo before taking each individual's best
# "auto": the exact search that was faster on this machine, raced on the first search of each size class (queries ×
# gallery rounded to a power of 4) and remembered for the process. No fixed size switch is right everywhere: at 490
# queries × 100,000 × 512 numpy's search took 0.46 s and faiss' 1,000 nearest alone 0.45 s on a 2-core Intel
# machine, while faiss' exact index was 3.3× faster than numpy's product on an AMD EPYC (B5's ranking).
_FASTER: dict[int, str] = {}  # size class -> the faster exact search here (raced_search)


def individual_codes(individual_ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(sorted distinct individual ids, code of each image's individual into that list)."""
    names, codes = np.unique(np.asarray(individual_ids, dtype=str), return_inverse=True)
    return names.tolist(), codes.astype(np.int64)


def individual_similarities(queries: np.ndarray, gallery: np.ndarray, codes: np.ndarray, n_individuals: int, *,
                            exclude: np.ndarray | None = None, backend: str = "auto",
                            neighbours: int = NEIGHBOURS, chunk_size: int = 1024) -> np.ndarray:
    """Each query's best cosine similarity (clipped into [0, 1]) to each individual's gallery images.

    `codes[i]` is the individual of gallery image i. `exclude[q]` is a gallery index query q must not be compared
    with (its own image), or -1. Returns float32 (queries, n_individuals): -inf for an individual without a
    gallery image left for that query. Backends:
    - numpy: one matrix product per block of `chunk_size` queries, then a per-individual maximum over the gallery
      grouped by individual.
    - faiss: faiss' exact inner-product index retrieves the `neighbours` most similar images of each query, which
      give the retrieved individuals their best score; an individual not retrieved scores at most the last
      retrieved image, so a query whose last retrieved score is above 0 (the clip) and that misses an individual is
      scored by the numpy product instead. The same scores as numpy (up to float rounding of the products).
    - auto: whichever of the two was faster here for this size (RACE_QUERIES); the same scores either way.
    - faiss_approximate (opt-in): the retrieval alone; individuals not retrieved score 0. Its best individuals
      are numpy's, the others' scores are not.
    """
    # The gallery stays as given: each search normalises it where it reads it (the numpy one in its own order).
    q, g = normalize_rows(queries), np.asarray(gallery)
    codes = np.asarray(codes, dtype=np.int64)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"queries {q.shape} and gallery {g.shape} must be 2-D with the same width")
    if codes.shape != (len(g),) or (len(codes) and not 0 <= codes.min() <= codes.max() < n_individuals):
        raise ValueError(f"codes must give each of the {len(g)} gallery images an individual in [0, {n_individuals})")
    exclude = np.full(len(q), -1, np.int64) if exclude is None else np.asarray(exclude, dtype=np.int64)
    if exclude.shape != (len(q),) or exclude.max(initial=-1) >= len(g):
        raise ValueError("exclude must hold one gallery index (or -1) per query")
    if backend not in BACKENDS:
        raise ValueError(f"unknown search backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if neighbours < 1:
        raise ValueError(f"neighbours must be at least 1, got {neighbours}")
    if backend == "auto":
        return _search_auto(q, g, codes, n_individuals, exclude, neighbours, chunk_size)
    if backend in ("faiss", "faiss_approximate"):
        return _faiss_similarities(q, g, codes, n_individuals, exclude, neighbours, chunk_size,
                                   exact=backend == "faiss")
    return _dense_similarities(q, g, codes, n_individuals, exclude, chunk_size)


def _dense_similarities(q, g, codes, n_individuals, exclude, chunk_size, unit_gallery: bool = False) -> np.ndarray:
    """`individual_similarities` by numpy: `q` unit rows, `g` the gallery as given (normalised here), or already
    normalised with `unit_gallery` (then only reordered: the same values)."""
    if len(g) == 0 or len(q) == 0:
        return np.full((len(q), n_individuals), -np.inf, dtype=np.float32)
    layout = GroupLayout.of(codes, n_individuals)
    g_laid = g[layout.order] if unit_gallery else normalize_rows(g, take=layout.order)
    own = np.where(exclude >= 0, layout.laid_row[np.maximum(exclude, 0)], -1)
    return np.ascontiguousarray(best_per_individual(g_laid, q, layout.groups, n_individuals, own, chunk_size).T)


@dataclass
class GroupLayout:
    """A gallery laid out for `best_per_individual`: in groups of individuals with the same number of images, and
    within a group slot by slot (every individual's first image, then every second one, ...), so a group's
    per-individual best is an elementwise maximum of `count` contiguous slices: 10× faster than a maximum per
    individual (reduceat) at 100,000 photos, which made the search slower than faiss' retrieval."""

    order: np.ndarray  # the gallery row at each laid row
    laid_row: np.ndarray  # the laid row of each gallery row
    groups: list[tuple[int, int, np.ndarray]]  # (first laid row, images per individual, the group's individuals)

    @staticmethod
    def of(codes: np.ndarray, n_individuals: int) -> "GroupLayout":
        counts = np.bincount(codes, minlength=n_individuals)
        by_individual = np.argsort(codes, kind="stable")
        first = np.searchsorted(codes[by_individual], codes[by_individual])  # each image's individual's first row
        slot = np.empty_like(codes)
        slot[by_individual] = np.arange(len(codes)) - first
        order = np.lexsort((codes, slot, counts[codes]))
        laid_row = np.empty_like(order)
        laid_row[order] = np.arange(len(order))
        groups, start = [], 0
        for count in np.unique(counts[counts > 0]):
            members = np.flatnonzero(counts == count)
            groups.append((start, int(count), members))
            start += int(count) * len(members)
        return GroupLayout(order, laid_row, groups)


def best_per_individual(g_laid: np.ndarray, q: np.ndarray, groups, n_individuals: int, own: np.ndarray,
                        chunk_size: int = 1024, dead: np.ndarray | None = None) -> np.ndarray:
    """Each individual's best clipped cosine over its laid gallery rows (`GroupLayout`): float32 (individuals,
    queries), -inf for an individual with no row left. `own[j]`: the laid row query j must not be compared with
    (or -1); `dead`: laid rows no query is compared with (photos removed since the layout was made). `g_laid` may
    be float16 (stored so): its rows are turned into float32 block by block for the product."""
    # Products are gallery × queries and scores individuals × queries (transposed by the caller): a group's slots
    # and its individuals' scores are then whole rows, so the maximum reads contiguous slabs and each individual's
    # scores are written as one row, where a column-wise write cost as much as the maximum itself.
    out = np.full((n_individuals, len(q)), -np.inf, dtype=np.float32)
    dead = np.zeros(0, np.int64) if dead is None else np.sort(np.asarray(dead, dtype=np.int64))
    for start, count, members in groups:
        end = start + count * len(members)
        rows = g_laid[start:end]
        gone = dead[np.searchsorted(dead, start):np.searchsorted(dead, end)] - start
        # Group by group, each with as many queries as BLOCK_ELEMENTS similarities allow (at most `chunk_size`):
        # a batch of queries reads each gallery row once, where blocks of queries over the whole gallery read it
        # once per block (32 queries at a million photos).
        n_block = max(1, min(chunk_size, BLOCK_ELEMENTS // max(1, end - start)))
        for begin in range(0, len(q), n_block):
            block = slice(begin, begin + n_block)
            sims = _product(rows, q[block])
            mine = np.flatnonzero((own[block] >= start) & (own[block] < end))
            sims[own[block][mine] - start, mine] = -np.inf
            if len(gone):
                sims[gone] = -np.inf
            best = sims.reshape(count, len(members), -1).max(axis=0)
            # Clipped after the maximum, once per individual rather than per image: clipping is monotone, so the
            # result is the same; -inf (an individual whose only image is excluded) stays -inf.
            np.clip(best, 0.0, 1.0, out=best, where=best > -np.inf)
            out[members, block] = best
    return out


FLOAT16_ROWS = 1024  # float16 gallery rows turned into float32 at a time (2 MB at 512 dimensions: in a core's cache)
SPLIT_ROWS = 4096  # galleries of at least this many rows are split between the cores


def _product(g_laid: np.ndarray, q: np.ndarray) -> np.ndarray:
    """g_laid @ q.T in float32 (gallery rows × queries): each core multiplies its share of the gallery's rows with a
    single-threaded BLAS product (a float16 gallery turned into float32 block by block in the core's cache).

    Why not the BLAS library's own threads: for one photo the product is bound by the memory's bandwidth, which
    one core nearly fills, and when the machine is busy the library's threads, started and synchronised on every
    call, cost more than the product (one photo against 10,000 × 512: 5.6 ms with them, 0.8 ms without, median on
    2 loaded cores; against a million, 160 ms and 138 ms)."""
    sims = np.empty((len(g_laid), len(q)), dtype=np.float32)
    q_t = np.ascontiguousarray(q.T, dtype=np.float32)

    def share(span: tuple[int, int]) -> None:
        if g_laid.dtype == np.float32:
            np.matmul(g_laid[span[0]:span[1]], q_t, out=sims[span[0]:span[1]])
            return
        buffer = np.empty((FLOAT16_ROWS, g_laid.shape[1]), dtype=np.float32)
        for begin in range(span[0], span[1], FLOAT16_ROWS):
            end = min(begin + FLOAT16_ROWS, span[1])
            np.copyto(buffer[:end - begin], g_laid[begin:end])
            np.matmul(buffer[:end - begin], q_t, out=sims[begin:end])

    cores = available_cores() if len(g_laid) >= SPLIT_ROWS else 1
    bounds = np.linspace(0, len(g_laid), cores + 1).astype(int)
    with one_blas_thread():
        if cores == 1:
            share((0, len(g_laid)))
        else:
            list(_pool().map(share, zip(bounds[:-1], bounds[1:])))
    return sims


@functools.lru_cache(maxsize=1)
def _pool():
    """The search's own threads, apart from `threads.pool()`'s: a search never waits behind other work."""
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(available_cores(), thread_name_prefix="photoid-search")


def _faiss_similarities(q, g, codes, n_individuals, exclude, neighbours, chunk_size, exact) -> np.ndarray:
    """`individual_similarities` by faiss: `q` unit rows, `g` the gallery as given (normalised here)."""
    counts = np.bincount(codes, minlength=n_individuals)
    out = np.where(counts > 0, 0.0, -np.inf).astype(np.float32)[None, :].repeat(len(q), axis=0)
    # An individual whose only image is the excluded one has nothing left to compare with.
    rows = np.flatnonzero(exclude >= 0)
    alone = counts[codes[exclude[rows]]] == 1
    out[rows[alone], codes[exclude[rows[alone]]]] = -np.inf
    if len(g) == 0 or len(q) == 0:
        return out
    unit = normalize_rows(g)
    columns, scores = search_inner_product(q, unit, exclude, neighbours)
    found = np.isfinite(scores)
    row_index = np.broadcast_to(np.arange(len(q))[:, None], columns.shape)
    np.maximum.at(out, (row_index[found], codes[columns[found]]), scores[found])
    if exact:
        # A retrieved individual's best image was retrieved. Every other image scores at most the last retrieved
        # one (-inf: the search returned every image), so where that is 0 the unretrieved individuals' 0 is exact;
        # otherwise a query missing an individual is scored by the dense product.
        seen = np.zeros(out.shape, bool)
        seen[row_index[found], codes[columns[found]]] = True
        candidates = np.isfinite(out).sum(axis=1)
        redo = np.flatnonzero((seen.sum(axis=1) < candidates) & (scores[:, -1] > 0))
        if len(redo):
            out[redo] = _dense_similarities(q[redo], unit, codes, n_individuals, exclude[redo], chunk_size,
                                            unit_gallery=True)
    return out


def _search_auto(q, g, codes, n_individuals, exclude, neighbours, chunk_size) -> np.ndarray:
    """The faster exact search for this size on this machine (both give the same scores; `raced_search`).

    numpy answers the first search of a size class and faiss is timed on its first RACE_QUERIES: faiss' time per
    query is lower on large batches than on a few queries (it switches to BLAS products), so this errs towards
    numpy, whose cost per query is the same at any count.
    """
    try:
        import faiss  # noqa: F401
    except ImportError:
        return _dense_similarities(q, g, codes, n_individuals, exclude, chunk_size)
    searches = {
        "numpy": lambda rows: _dense_similarities(q[rows], g, codes, n_individuals, exclude[rows], chunk_size),
        "faiss": lambda rows: _faiss_similarities(q[rows], g, codes, n_individuals, exclude[rows], neighbours,
                                                  chunk_size, exact=True),
    }
    return raced_search(_FASTER, len(q), len(g), searches, answer="numpy")


def catalogue_scores(queries: np.ndarray, gallery: np.ndarray, codes: np.ndarray, n_individuals: int,
                     blocks: Sequence[tuple[int, int]], *, exclude: np.ndarray | None = None, **search) -> np.ndarray:
    """Each query's score for each individual, from the models whose embeddings fill the column `blocks`.

    Each model (block `(offset, dim)`) scores an individual by its best cosine (`individual_similarities`); an
    individual's score is the mean over models, shifted per query so that the best equals the mean of the models'
    own best scores. Why: the threshold for "new" is chosen out of fold, where each photo can be scored only by
    the one fold model that never trained on it, so it is a threshold on one model's best score. Averaging models'
    scores first and taking the best afterwards gives lower values (the maximum of a less noisy average), so a
    threshold on it would misfire; the mean of the models' own best scores keeps one model's scale, and with one
    model the shift is zero. The shift is the same for every individual of a query, so the ranking is the mean's.
    `search` options go to `individual_similarities`. Returns float32 (queries, n_individuals), -inf as there.
    """
    if not blocks:
        raise ValueError("no model blocks given")
    return combine_models(individual_similarities(queries[:, offset:offset + dim], gallery[:, offset:offset + dim],
                                                  codes, n_individuals, exclude=exclude, **search)
                          for offset, dim in blocks)


def combine_models(per_model) -> np.ndarray:
    """The models' individual scores (each (queries, individuals)) averaged, shifted per query so that the best
    equals the mean of the models' own best scores (`catalogue_scores` says why)."""
    total = best = None
    n_models = 0
    for scores in per_model:
        total = scores.copy() if total is None else total + scores
        model_best = scores.max(axis=1, initial=-np.inf)
        best = model_best if best is None else best + model_best
        n_models += 1
    mean, best = total / n_models, best / n_models
    shift = np.where(np.isfinite(best), best - mean.max(axis=1, initial=-np.inf), 0.0)
    return (mean + shift[:, None]).astype(np.float32)


def blend_scores(similarities: np.ndarray, probabilities: np.ndarray | None, has_probability: np.ndarray | None,
                 weight: float) -> np.ndarray:
    """(1 − weight) · similarity + weight · probability per individual; -inf (no candidate) stays -inf.

    `probabilities` (queries, individuals) are the classifier's, aligned with the individuals; `has_probability`
    says which individuals the classifier knows. They are restricted to the candidates of each query (finite
    similarity) and renormalised, so holding individuals out (calibration) or leaving some out of the catalogue
    does not leave probability mass on names that cannot be given. Individuals unknown to the classifier keep
    their similarity.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the blend weight must be in [0, 1], got {weight}")
    if probabilities is None or weight == 0.0:
        return similarities
    if probabilities.shape != similarities.shape or has_probability is None:
        raise ValueError(f"probabilities {probabilities.shape} must match similarities {similarities.shape}")
    available = np.isfinite(similarities)
    p = np.where(available & has_probability[None, :], probabilities, 0.0)
    total = p.sum(axis=1, keepdims=True)
    p = np.divide(p, total, out=np.zeros_like(p), where=total > 0)
    s = np.where(available, similarities, 0.0)
    blended = np.where(has_probability[None, :], (1.0 - weight) * s + weight * p, s)
    return np.where(available, blended, -np.inf).astype(np.float32)


def rank_with_new(scores: np.ndarray, names: Sequence[str], threshold: float, *, k: int = TOP_K,
                  nameable: Sequence[str] | None = None, new_label: str = NEW_INDIVIDUAL
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The k labels per photo and their scores, with `new_label` scored at `threshold`.

    Individuals outside `nameable` (default: all) are reported as `new_label` too, at their own rank, the way
    Turtle Recall's 101-label format names every turtle outside train.csv `new_turtle` (`ensemble.top_labels`
    applies that rule here, with the threshold as one more "new" candidate). Places beyond the candidates hold
    "" and NaN. (`Ranker` is the same, its checks of `names` made once for many calls.)
    """
    return Ranker(names, nameable, new_label)(scores, threshold, k)


class Ranker:
    """`rank_with_new` for one list of individuals: the names checked once, then each call ranks scores.

    Up to RANK_ALL_UP_TO individuals, every one is ranked by `top_labels` (the classifier's rule, argsort's order
    among ties included). Beyond, only the candidates the top k can hold are ranked: each row's k best nameable
    individuals (argpartition) and "new" at the higher of the threshold and the best individual that is not
    nameable; "new" comes before individuals it ties with. The same labels and scores, without sorting every
    individual of a large catalogue (20,000 individuals: 0.39 s a photo ranking all, under 1 ms the candidates, on
    a loaded 2-core machine), except that ties at the k-th place are broken by catalogue order.
    """

    def __init__(self, names: Sequence[str], nameable: Sequence[str] | None = None,
                 new_label: str = NEW_INDIVIDUAL):
        self.names = [str(n) for n in names]
        if new_label in set(self.names):
            raise ValueError(f"{new_label!r} is the label for new individuals; no individual may be called that")
        known = set(self.names)
        self.nameable = self.names if nameable is None else [n for n in nameable if n in known]
        self.all_nameable = nameable is None or len(self.nameable) == len(self.names)
        chosen = set(self.nameable)
        self.is_nameable = np.fromiter((n in chosen for n in self.names), dtype=bool, count=len(self.names))
        self.labels = np.asarray([*self.names, new_label, ""], dtype=object)
        self.new_label = new_label

    def __call__(self, scores: np.ndarray, threshold: float, k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
        if scores.shape[1] <= RANK_ALL_UP_TO:
            table = np.concatenate([scores, np.full((len(scores), 1), threshold, dtype=np.float64)], axis=1)
            labels, top = top_labels(table, [*self.names, self.new_label], self.nameable, k=k,
                                     new_label=self.new_label)
        else:
            labels, top = self._candidates(scores, threshold, k)
        missing = ~np.isfinite(top)
        return np.where(missing, "", labels), np.where(missing, np.nan, top)

    def _candidates(self, scores: np.ndarray, threshold: float, k: int) -> tuple[np.ndarray, np.ndarray]:
        n_rows, n = scores.shape
        named = scores if self.all_nameable else np.where(self.is_nameable[None, :], scores, -np.inf)
        new_score = np.full(n_rows, threshold, dtype=np.float64)
        if not self.all_nameable:
            others = np.where(self.is_nameable[None, :], -np.inf, scores).max(axis=1)
            new_score = np.maximum(new_score, others)
        kk = min(k, n)
        best = np.argpartition(-named, kk - 1, axis=1)[:, :kk]
        best_scores = np.take_along_axis(named, best, axis=1)
        order = np.argsort(-best_scores, axis=1, kind="stable")
        best, best_scores = np.take_along_axis(best, order, axis=1), np.take_along_axis(best_scores, order, axis=1)
        labels = np.full((n_rows, k), len(self.labels) - 1, dtype=np.int64)  # "" beyond the candidates
        top = np.full((n_rows, k), np.nan, dtype=np.float64)
        for row in range(n_rows):
            place = int((best_scores[row] > new_score[row]).sum())  # "new" before the individuals it ties with
            codes = [*best[row, :place], n, *best[row, place:]][:k]
            values = [*best_scores[row, :place], new_score[row], *best_scores[row, place:]][:k]
            labels[row, :len(codes)], top[row, :len(values)] = codes, values
        return self.labels[labels], top


RANK_ALL_UP_TO = 256  # individuals ranked whole by `top_labels`; more: only the candidates (`Ranker`)


# ----------------------------------------------------------------------------- calibration


@dataclass
class TopCandidates:
    """What MAP@5 needs of each query: its best nameable scores and where its true individual stands."""

    scores: np.ndarray  # (queries, k) best nameable scores, best first; -inf beyond the candidates
    truth_rank: np.ndarray  # (queries,) 1..k among nameable individuals, or 0 when new or ranked below k
    truth_score: np.ndarray  # (queries,) the true individual's score (-inf when new)
    is_new: np.ndarray  # (queries,) the truth is new: no catalogue photo left for it, or not nameable
    new_floor: np.ndarray  # (queries,) best score of an individual that is not nameable (-inf: none)

    @staticmethod
    def concatenate(parts: Sequence["TopCandidates"]) -> "TopCandidates":
        return TopCandidates(*(np.concatenate([getattr(p, f) for p in parts])
                               for f in ("scores", "truth_rank", "truth_score", "is_new", "new_floor")))


def top_candidates(scores: np.ndarray, truth: np.ndarray, k: int = TOP_K,
                   nameable: np.ndarray | None = None) -> TopCandidates:
    """Best k nameable scores per query (argpartition, then a sort of k) and the rank of the true individual.

    `truth` holds each query's individual code, -1 for a new one; a truth without a finite score (no photo of it
    left in the gallery) or outside `nameable` (a boolean mask over individuals; default all) is new as well.
    An individual outside `nameable` is reported as new, so new stands at least as high as the best of them
    (`new_floor`). Ties are counted in the truth's favour.
    """
    n, n_individuals = scores.shape
    nameable = np.ones(n_individuals, bool) if nameable is None else np.asarray(nameable, bool)
    named = np.where(nameable[None, :], scores, -np.inf)
    new_floor = np.where(nameable[None, :], -np.inf, scores).max(axis=1, initial=-np.inf)
    kk = min(k, n_individuals)
    top = np.full((n, k), -np.inf, dtype=np.float32)
    if kk:
        top[:, :kk] = -np.sort(np.partition(-named, kk - 1, axis=1)[:, :kk], axis=1)
    truth = np.asarray(truth, dtype=np.int64)
    truth_score = np.where(truth >= 0, named[np.arange(n), np.maximum(truth, 0)], -np.inf)
    is_new = ~np.isfinite(truth_score)
    rank = 1 + (named > truth_score[:, None]).sum(axis=1)
    truth_rank = np.where(~is_new & (rank <= k), rank, 0)
    return TopCandidates(top, truth_rank, truth_score.astype(np.float32), is_new, new_floor.astype(np.float32))


def map5_by_threshold(c: TopCandidates, thresholds: np.ndarray) -> np.ndarray:
    """MAP@k with "new" scored at each threshold (or the query's `new_floor` if higher): (thresholds,).

    A known truth at rank r moves to r + 1 when its score does not exceed new's (new comes before it); a new truth
    sits at 1 + the number of candidates scoring above new's score.
    """
    k = c.scores.shape[1]
    new_score = np.maximum(np.asarray(thresholds, dtype=np.float32)[:, None], c.new_floor[None, :])
    known_place = c.truth_rank[None, :] + (c.truth_score[None, :] <= new_score)
    known_ap = np.where((c.truth_rank[None, :] > 0) & (known_place <= k), 1.0 / np.maximum(known_place, 1), 0.0)
    new_place = 1 + (c.scores[None, :, :] > new_score[:, :, None]).sum(axis=2)
    new_ap = np.where(new_place <= k, 1.0 / new_place, 0.0)
    return np.where(c.is_new[None, :], new_ap, known_ap).mean(axis=1)


def threshold_grid(c: TopCandidates, size: int = THRESHOLD_GRID_SIZE) -> np.ndarray:
    """Candidate thresholds: midpoints between (quantiles of) the scores, one below all and one above all."""
    values = c.scores[np.isfinite(c.scores)]
    if values.size == 0:
        return np.array([0.0], dtype=np.float32)
    values = np.unique(np.quantile(values, np.linspace(0.0, 1.0, size)) if values.size > size else values)
    margin = max(1e-6, 1e-3 * float(values[-1] - values[0]))
    mids = (values[1:] + values[:-1]) / 2
    return np.concatenate([[values[0] - margin], mids, [values[-1] + margin]]).astype(np.float32)


@dataclass
class OperatingPoint:
    blend_weight: float
    threshold: float
    map5: float


def best_threshold(c: TopCandidates, blend_weight: float = 0.0) -> OperatingPoint:
    """The threshold of highest MAP@5; among equally good ones the median, away from the plateau's edges."""
    grid = threshold_grid(c)
    scores = map5_by_threshold(c, grid)
    best = np.flatnonzero(scores >= scores.max() - 1e-12)
    return OperatingPoint(float(blend_weight), float(grid[best[len(best) // 2]]), float(scores.max()))


def search_operating_point(trials: Sequence[tuple[np.ndarray, np.ndarray | None, np.ndarray]],
                           has_probability: np.ndarray | None, nameable: np.ndarray | None = None,
                           weights: Sequence[float] = BLEND_WEIGHTS) -> dict[float, OperatingPoint]:
    """Best threshold for each blend weight over all `trials`, each (normalised scores, probabilities, truth).

    Without probabilities only weight 0 is tried. Returns {weight: OperatingPoint}.
    """
    with_probabilities = has_probability is not None and all(p is not None for _, p, _ in trials)
    return {float(w): best_threshold(candidates_at(trials, has_probability, w, nameable), w)
            for w in (weights if with_probabilities else (0.0,))}


def candidates_at(trials, has_probability: np.ndarray | None, weight: float,
                  nameable: np.ndarray | None = None) -> TopCandidates:
    """Every trial's `top_candidates` at one blend weight, stacked."""
    return TopCandidates.concatenate([top_candidates(blend_scores(s, p, has_probability, weight), truth,
                                                     nameable=nameable) for s, p, truth in trials])


def open_set_metrics(c: TopCandidates, threshold: float) -> dict[str, float]:
    """MAP@5, AUC of known-vs-new, accuracy@1 on known and on new queries, and their mean (balanced accuracy).

    The AUC ranks queries by their best nameable score, or lowest of all where an individual that is not
    nameable beats it: the statistic the threshold cuts, so the AUC is the rule's quality over all thresholds.
    """
    from sklearn.metrics import roc_auc_score

    best = np.where(c.scores[:, 0] > c.new_floor, c.scores[:, 0], -np.inf)
    new_score = np.maximum(threshold, c.new_floor)
    known = ~c.is_new
    known_right = (c.truth_rank == 1) & (c.truth_score > new_score)
    new_right = ~(best > threshold)
    both = bool(known.any() and c.is_new.any())
    known_acc = float(known_right[known].mean()) if known.any() else float("nan")
    new_acc = float(new_right[c.is_new].mean()) if c.is_new.any() else float("nan")
    finite = best[np.isfinite(best)]
    statistic = np.where(np.isfinite(best), best, (finite.min() - 1.0) if finite.size else 0.0)
    return {
        "map5": float(map5_by_threshold(c, np.array([threshold]))[0]),
        "auc_known_vs_new": float(roc_auc_score(known, statistic)) if both else float("nan"),
        "known_accuracy": known_acc,
        "new_accuracy": new_acc,
        "balanced_accuracy": (known_acc + new_acc) / 2 if both else float("nan"),
        "n_queries": int(len(best)),
        "n_new": int(c.is_new.sum()),
    }
