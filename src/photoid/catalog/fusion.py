"""Fusion of a catalogue's global score with local matching: shortlist, local scores, calibration, fused ranking.

1. Shortlist: a query's `shortlist` best individuals by the global score (the catalogue's similarity, blended with
   the classifier as calibrated; for a zero-shot catalogue, the VLAD cosine). Only their photos are matched, so a
   query costs O(shortlist), not O(catalogue). Where viewpoints are known (the catalogue's viewpoint column, the
   query's given one), only comparable views are matched: a left side never against a right side (`comparable`).
2. Local score of an individual: the most verified inliers with any of its photos (`photoid.local.matching`); the
   photo that gave it is the one an explanation draws. A photo without enough keypoints scores 0, with a note.
3. Fused score: each score mapped to P(same individual) by its calibration (`photoid.local.calibration`), then
   the weighted mean. An individual outside the shortlist keeps a local score of 0 (calibrated like any other 0):
   with strictly increasing calibrations it stays below every shortlisted individual it does not beat globally. A
   shortlisted individual none of whose photos could be compared (no comparable viewpoint, or no features) has no
   local score: its fused score is its global probability alone, neither raised nor lowered by a comparison that
   did not happen. (The query's own lack of keypoints is a local score of 0: the photo gave nothing to match.)
4. "New" comes first when the best fused score does not exceed the fused threshold (`openset.rank_with_new`).

`calibrate_fusion` fits all of it on the catalogue's own out-of-fold pairs (`photoid.catalog.calibrate`'s trials:
each query scored by a model that never trained on it, a share of individuals held out as new), cross-fitted: the
calibrations applied to a query's pairs were fitted on other individuals' queries, so the weights and the threshold
are chosen on honest probabilities. The final calibrations are then fitted on every pair.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from photoid.catalog.openset import best_threshold, open_set_metrics, rank_with_new, top_candidates
from photoid.catalog.store import VIEWPOINT_COLUMN, Catalog
from photoid.core import threads
from photoid.core.errors import PhotoidError
from photoid.core.threads import available_cores, one_blas_thread
from photoid.local.calibration import KINDS, Calibrator, cross_fit, fit_calibrator, fuse_global_local
from photoid.local.features import FeatureSet, Features, Settings, empty_features, photo_features, rootsift
from photoid.local.matching import DEFAULT_METHOD, RATIO, THRESHOLD_PX, PairMatch, match_many, match_pair

# Individuals matched locally per query. B10 (docs/local-matching.md): fused MAP@5 rose from B=10 to B=20 on two sets
# of three (turtles 0.838 -> 0.939, generic 0.835 -> 0.903) and stayed flat on the third, while a query against
# 10,000 photos cost 0.025 s at B=10 and 0.029 s at B=20; at the cap of 400 keypoints a pair costs 0.77 ms, so B=20
# with 5 photos per individual adds 0.08 s, within the 0.5 s budget.
DEFAULT_SHORTLIST = 20
LOCAL_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # tried by calibration
MAX_QUERIES = 1000  # out-of-fold queries whose shortlists are matched for calibration, at most (seeded sample)
NO_FEATURES_NOTE = "{image} has no local features in the catalogue (added without them): local score 0"


def comparable(a: str | None, b: str | None) -> bool:
    """Whether two viewpoints may show the same side: equal, or either unknown."""
    return not a or not b or a == b


@dataclass
class LocalEvidence:
    """Why one candidate scored locally: its best photo and the verified matches with it."""

    image_id: str
    path: str
    viewpoint: str
    match: PairMatch
    query_points: np.ndarray  # float32 (inliers, 2): where each verified match is in the prepared query photo
    candidate_points: np.ndarray  # float32 (inliers, 2): and in the prepared candidate photo


class LocalScorer:
    """Local scores of query photos against the photos of chosen catalogue individuals."""

    def __init__(self, catalog: Catalog, features: FeatureSet, **match_options):
        self.table = catalog.table
        self.names, codes = catalog.individuals()
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(self.names) + 1))
        self.rows_of = [order[bounds[i]:bounds[i + 1]] for i in range(len(self.names))]
        self.image_ids = self.table["image_id"].to_numpy(dtype=str)
        self.views = (self.table[VIEWPOINT_COLUMN].to_numpy(dtype=str) if VIEWPOINT_COLUMN in self.table.columns
                      else np.full(len(self.table), "", dtype=str))
        self.features = features
        self.match_options = match_options
        self._root: dict[int, np.ndarray] = {}

    def photo(self, row: int) -> Features | None:
        return self.features.get(self.image_ids[row])

    def _candidate(self, row: int) -> tuple[Features | None, np.ndarray | None]:
        features = self.photo(row)
        if features is None or not features.usable:
            return features, None
        root = self._root.get(row)
        if root is None:  # read once: another thread may clear the cache meanwhile
            if len(self._root) > 50_000:
                self._root.clear()
            root = self._root[row] = rootsift(features.descriptors)
        return features, root

    def score(self, query: Features, view: str | None, individuals: Sequence[int], exclude_row: int = -1,
              cache: dict | None = None, query_key=None, keep_evidence: bool = True
              ) -> tuple[np.ndarray, dict[int, LocalEvidence], list[str]]:
        """Each individual's local score (most inliers over its comparable photos; NaN when none could be
        compared), its best photo's evidence, and notes (photos without features). `cache` keyed by
        (query_key, row) saves pairs scored before."""
        with one_blas_thread():
            return self._score(query, view, individuals, exclude_row, cache, query_key, keep_evidence)

    def score_many(self, queries: Sequence[Features], views: Sequence[str | None],
                   shortlists: Sequence[Sequence[int]], exclude_rows: Sequence[int] | None = None,
                   cache: dict | None = None, query_keys: Sequence | None = None, keep_evidence: bool = True
                   ) -> list[tuple[np.ndarray, dict[int, LocalEvidence], list[str]]]:
        """`score` of each query against its own shortlist, in order, the queries shared among the cores' threads.
        The products and the fits release Python's lock, which pays where photos have many keypoints; with few,
        the Python work between them, which holds the lock, is most of a pair's time. A pair scores the same in any
        thread: OpenCV's random generator is the thread's own, seeded before every fit."""
        n = len(queries)
        exclude_rows = [-1] * n if exclude_rows is None else exclude_rows
        query_keys = [None] * n if query_keys is None else query_keys

        def one(i: int):
            return self._score(queries[i], views[i], shortlists[i], exclude_rows[i], cache, query_keys[i],
                               keep_evidence)

        with one_blas_thread():
            if n < 2 or available_cores() == 1:
                return [one(i) for i in range(n)]
            return list(threads.pool().map(one, range(n)))

    def _score(self, query, view, individuals, exclude_row, cache, query_key, keep_evidence):
        scores = np.zeros(len(individuals), dtype=np.float32)
        evidence: dict[int, LocalEvidence] = {}
        notes: list[str] = []
        if not query.usable:
            return scores, evidence, [query.note or "the photo has too few keypoints: local score 0"]
        query_root = rootsift(query.descriptors)
        # Each individual's comparable photos: an inlier count known from `cache`, or a pair to match. The query is
        # matched with all of them at once (`match_many`), then each individual keeps its best photo.
        compared: list[list[tuple[int, int | None, int | None]]] = []  # per individual: (row, inliers, pair)
        pairs: list[tuple[Features, np.ndarray]] = []
        for code in individuals:
            mine = []
            for row in self.rows_of[code]:
                if row == exclude_row or not comparable(view, self.views[row]):
                    continue
                cached = cache.get((query_key, row)) if cache is not None else None
                if cached is not None and not keep_evidence:
                    mine.append((row, cached, None))
                    continue
                candidate, root = self._candidate(row)
                if candidate is None or not candidate.usable:  # nothing to compare with: no evidence
                    if candidate is None:
                        notes.append(NO_FEATURES_NOTE.format(image=self.image_ids[row]))
                    continue
                mine.append((row, None, len(pairs)))
                pairs.append((candidate, root))
            compared.append(mine)
        matches = match_many(query, [candidate for candidate, _ in pairs], query_root=query_root,
                             candidate_roots=[root for _, root in pairs], **self.match_options)
        for k, (code, mine) in enumerate(zip(individuals, compared)):
            best, best_match, best_row, best_candidate = -1, None, -1, None
            for row, inliers, pair in mine:
                match = candidate = None
                if pair is not None:
                    match, candidate = matches[pair], pairs[pair][0]
                    inliers = match.inliers
                    if cache is not None:
                        cache[(query_key, row)] = inliers
                if inliers > best:
                    best, best_match, best_row, best_candidate = inliers, match, row, candidate
            scores[k] = best if best >= 0 else np.nan  # -1: no comparable photo with features
            if keep_evidence and best_match is not None:
                evidence[int(code)] = LocalEvidence(
                    self.image_ids[best_row], str(self.table["path"].iloc[best_row]), self.views[best_row], best_match,
                    query.xy[best_match.query_index], best_candidate.xy[best_match.candidate_index])
        return scores, evidence, notes

    def score_photo(self, query: Features, row: int) -> LocalEvidence | None:
        """The verified matches of the query with one catalogue photo (whatever its viewpoint: it was chosen),
        or None when that photo has no features."""
        candidate, root = self._candidate(row)
        if candidate is None:
            return None
        with one_blas_thread():
            match = match_pair(query, candidate, candidate_root=root, **self.match_options)
        return LocalEvidence(self.image_ids[row], str(self.table["path"].iloc[row]), self.views[row], match,
                             query.xy[match.query_index], candidate.xy[match.candidate_index])

    def explain(self, queries: list[Features], views: Sequence[str | None], labels: np.ndarray
                ) -> tuple[list[dict[str, LocalEvidence]], list[list[str]]]:
        """Each query's best local match with each individual among its ranked `labels` (others skipped)."""
        code = {name: i for i, name in enumerate(self.names)}
        evidence, notes = [], []
        for query, view, row in zip(queries, views, labels):
            wanted = [code[str(label)] for label in row if str(label) in code]
            _, found, found_notes = self.score(query, view, wanted)
            evidence.append({self.names[c]: e for c, e in found.items()})
            notes.append(sorted(set(found_notes)))
        return evidence, notes

def shortlist(scores: np.ndarray, size: int) -> np.ndarray:
    """The codes of the `size` best individuals with a finite score, best first."""
    finite = np.flatnonzero(np.isfinite(scores))
    size = min(size, len(finite))
    if size <= 0:
        return np.zeros(0, np.int64)
    best = finite[np.argpartition(-scores[finite], size - 1)[:size]]
    return best[np.argsort(-scores[best], kind="stable")]


@dataclass
class Fusion:
    """A catalogue's calibrated fusion (`calibration["fusion"]` in its manifest)."""

    calibrators: dict[str, Calibrator]
    weights: dict[str, float]
    threshold: float
    shortlist: int = DEFAULT_SHORTLIST

    @property
    def uses_local(self) -> bool:
        return self.weights.get("local", 0.0) > 0

    @staticmethod
    def from_calibration(calibration: dict | None) -> "Fusion | None":
        entry = (calibration or {}).get("fusion")
        if not entry:
            return None
        return Fusion({name: Calibrator.from_json(c) for name, c in entry["calibrators"].items()},
                      {k: float(v) for k, v in entry["weights"].items()}, float(entry["threshold"]),
                      int(entry.get("shortlist", DEFAULT_SHORTLIST)))

    def fuse(self, global_scores: np.ndarray, local_scores: np.ndarray) -> np.ndarray:
        """Fused scores (queries, individuals): -inf where the global score is -inf (no candidate); the global
        probability alone where the local score is NaN (`fuse_global_local`)."""
        available = np.isfinite(global_scores)
        local = np.asarray(local_scores, dtype=np.float64)
        p_local = np.where(np.isnan(local), np.nan, self.calibrators["local"](np.nan_to_num(local, nan=0.0)))
        fused = fuse_global_local(self.calibrators["global"](np.where(available, global_scores, 0.0)), p_local,
                                  self.weights.get("local", 0.0))
        return np.where(available, fused, -np.inf)


@dataclass
class FusedResult:
    labels: np.ndarray
    scores: np.ndarray
    evidence: list[dict[str, LocalEvidence]] = field(default_factory=list)  # per query: label -> evidence
    notes: list[list[str]] = field(default_factory=list)


def active_fusion(catalog: Catalog, local: bool | None) -> Fusion | None:
    """The fusion to rank with, or None for the global score alone. `local`: None as calibrated (where it gave
    local matching a weight), True required (an error says what is missing), False never."""
    from photoid.catalog.local import has_local_features, require_local_features

    fusion = Fusion.from_calibration(catalog.calibration)
    if local:
        require_local_features(catalog, "fusion with local matching")
        if fusion is None:
            raise PhotoidError(f"catalogue {catalog.path} has no calibrated fusion of global and local scores: run "
                               "photoid calibrate (it fits the fusion when the catalogue has local features)")
    use = (fusion is not None and local is not False and has_local_features(catalog)
           and (fusion.uses_local or bool(local)))
    return fusion if use else None


def local_setup(catalog: Catalog, local: bool | None, explain: bool = False
                ) -> tuple[Fusion | None, LocalScorer | None, Settings | None]:
    """(`active_fusion`; the scorer, when local matching runs at all; the extraction settings of queries)."""
    from photoid.catalog.local import local_settings, read_local_features, require_local_features

    fusion = active_fusion(catalog, local)
    if explain:
        require_local_features(catalog, "--explain")
    if fusion is None and not explain:
        return None, None, None
    return fusion, LocalScorer(catalog, read_local_features(catalog)), local_settings(catalog)


def query_features(paths: Sequence[str], views: Sequence[str | None], settings: Settings, embedder=None
                   ) -> list[Features]:
    """The local features of query photos (those a zero-shot embedder just extracted are reused); a photo whose
    features cannot be extracted gets none, and a note: its local scores are 0."""
    known = getattr(embedder, "last_features", {})
    out = []
    for path, view in zip(paths, views):
        if path in known:
            out.append(known[path])
            continue
        try:
            out.append(photo_features(path, settings, view))
        except PhotoidError as err:
            out.append(empty_features(f"no local features: {str(err).removeprefix(f'{path}: ')}"))
    return out

def identify_fused(global_scores: np.ndarray, queries: list[Features], views: Sequence[str | None],
                   fusion: Fusion, scorer: LocalScorer, *, top: int = 5, shortlist_size: int | None = None,
                   threshold: float | None = None, nameable=None, new_label: str = "new_individual") -> FusedResult:
    """Rank every query's individuals by the fused score; evidence and notes per query."""
    size = fusion.shortlist if shortlist_size is None else shortlist_size
    if size < 1:
        raise PhotoidError(f"the shortlist must hold at least 1 individual, got {size}")
    local = np.zeros(global_scores.shape, dtype=np.float32)  # outside the shortlist: 0
    evidence, notes = [], []
    shortlists = [shortlist(row, size) for row in global_scores]
    for i, (scores, found, query_notes) in enumerate(scorer.score_many(queries, views, shortlists)):
        local[i, shortlists[i]] = scores
        evidence.append({scorer.names[code]: e for code, e in found.items()})
        notes.append(sorted(set(query_notes)))
    fused = fusion.fuse(global_scores, local)
    labels, scores = rank_with_new(fused, scorer.names, fusion.threshold if threshold is None else threshold,
                                   k=top, nameable=nameable, new_label=new_label)
    return FusedResult(labels, scores, evidence, notes)


# ----------------------------------------------------------------------------- calibration


def calibrate_fusion(catalog: Catalog, features: FeatureSet, trials: list, has_probability, nameable,
                     blend_weight: float, *, shortlist_size: int = DEFAULT_SHORTLIST, seed: int = 0,
                     max_queries: int = MAX_QUERIES, kinds: Sequence[str] = KINDS,
                     weights: Sequence[float] = LOCAL_WEIGHTS, global_map5: float | None = None) -> dict:
    """Calibrations, weights and threshold of the fused score, from out-of-fold `trials` with their query rows
    (`calibrate.simulated_trials(..., with_rows=True)`); returns the manifest's `calibration["fusion"]` entry.

    `global_map5`: the out-of-fold MAP@5 of the global score with its own threshold; a fusion that does not beat it
    gets local weight 0 (identification then ranks by the global score alone, as calibrated)."""
    from photoid.catalog.openset import blend_scores

    started = time.time()
    scorer = LocalScorer(catalog, features)
    names, codes = catalog.individuals()
    picked = [(t, q) for t, (_, _, truth, _) in enumerate(trials) for q in range(len(truth))]
    rng = np.random.default_rng(seed)
    if len(picked) > max_queries:
        picked = [picked[i] for i in np.sort(rng.choice(len(picked), max_queries, replace=False))]
    blended = {}
    rows_global, truth, query_codes, query_rows, shortlists = [], [], [], [], []
    for t, q in picked:
        scores, probs, trial_truth, rows = trials[t]
        if t not in blended:
            blended = {t: blend_scores(scores, probs, has_probability, blend_weight)}
        rows_global.append(blended[t][q])
        truth.append(trial_truth[q])
        query_rows.append(int(rows[q]))
        query_codes.append(codes[int(rows[q])])
        shortlists.append(shortlist(blended[t][q], shortlist_size))
    # The same photo is a query in several trials: `cache` saves scoring its pairs again.
    query_features = [scorer.photo(row) for row in query_rows]  # each read once from the stored features
    with_features = [n for n, features in enumerate(query_features) if features is not None]
    scored = dict(zip(with_features, scorer.score_many(
        [query_features[n] for n in with_features], [scorer.views[query_rows[n]] for n in with_features],
        [shortlists[n] for n in with_features], exclude_rows=[query_rows[n] for n in with_features], cache={},
        query_keys=[query_rows[n] for n in with_features], keep_evidence=False)))
    pair_query, pair_code, pair_global, pair_local = [], [], [], []
    notes = set()
    for n, short in enumerate(shortlists):
        if n in scored:
            local, _, found_notes = scored[n]
        else:
            local = np.zeros(len(short), np.float32)
            found_notes = [NO_FEATURES_NOTE.format(image=scorer.image_ids[query_rows[n]])]
        notes.update(found_notes)
        pair_query += [n] * len(short)
        pair_code += short.tolist()
        pair_global += rows_global[n][short].tolist()
        pair_local += local.tolist()
    if not pair_query:
        raise PhotoidError("no out-of-fold query has a candidate to match locally")
    global_rows = np.asarray(rows_global, dtype=np.float32)
    truth = np.asarray(truth, dtype=np.int64)
    pair_query, pair_code = np.asarray(pair_query), np.asarray(pair_code)
    values = {"global": np.asarray(pair_global, np.float64), "local": np.asarray(pair_local, np.float64)}
    same = truth[pair_query] == pair_code
    # Cross-fitting: folds of query individuals, so no query's pairs calibrate the curves applied to it. The local
    # curve is fitted on the pairs actually compared (a pair without a comparable photo has no local score).
    groups = np.asarray(query_codes)[pair_query]
    compared = ~np.isnan(values["local"])
    if compared.sum() < 2 or same[compared].all() or not same[compared].any():
        raise PhotoidError(f"too few pairs could be compared locally ({int(compared.sum())} of {len(same)}: no "
                           "comparable viewpoints, or photos without keypoints) to calibrate the fusion")
    fits = {"global": cross_fit(values["global"], same, groups, kinds=kinds, seed=seed),
            "local": cross_fit(values["local"][compared], same[compared], groups[compared], log_count=True,
                               kinds=kinds, seed=seed)}
    # Out-of-fold probabilities of every individual of every picked query (local 0 outside its shortlist, NaN for
    # a shortlisted one that could not be compared).
    local_rows = np.zeros_like(global_rows)
    local_rows[pair_query, pair_code] = values["local"]
    available = np.isfinite(global_rows)
    p_global = fits["global"].probabilities(np.where(available, global_rows, 0.0), query_codes)
    p_local = np.where(np.isnan(local_rows), np.nan,
                       fits["local"].probabilities(np.nan_to_num(local_rows, nan=0.0), query_codes))
    points = {}
    for w in weights:
        fused = np.where(available, fuse_global_local(p_global, p_local, w), -np.inf)
        c = top_candidates(fused, truth, nameable=nameable)
        points[float(w)] = (best_threshold(c, w), c)
    best_w = max(points, key=lambda w: (round(points[w][0].map5, 12), -w))
    kept_global = global_map5 is not None and points[best_w][0].map5 <= global_map5 + 1e-12
    if kept_global:
        best_w = 0.0
    final = {"global": fit_calibrator(values["global"], same, fits["global"].kind),
             "local": fit_calibrator(values["local"][compared], same[compared], fits["local"].kind, True)}
    point, candidates = points[best_w]

    def summary(w):
        p, c = points[w]
        return {"local_weight": w, "threshold": p.threshold, "metrics": open_set_metrics(c, p.threshold)}

    return {
        "weights": {"global": round(1.0 - best_w, 6), "local": best_w},
        "threshold": point.threshold, "shortlist": int(shortlist_size),
        "calibrators": {name: c.to_json() for name, c in final.items()},
        "calibration_kinds": {name: fit.kind for name, fit in fits.items()},
        "log_loss_out_of_fold": {name: fit.losses for name, fit in fits.items()},
        "metrics": open_set_metrics(candidates, point.threshold),
        "global_only": summary(0.0), "local_only": summary(1.0) if 1.0 in points else None,
        "by_weight": [{"local_weight": w, "threshold": p.threshold, "map5": p.map5} for w, (p, _) in points.items()],
        "queries": int(len(picked)), "pairs": int(len(same)), "same_pairs": int(same.sum()),
        "pairs_compared": int(compared.sum()),
        "matching": {"method": DEFAULT_METHOD, "ratio": RATIO, "threshold_px": THRESHOLD_PX},
        "blend_weight": float(blend_weight), "notes": sorted(notes)[:20],
        "global_score_kept": bool(kept_global),  # no fusion beat the global score alone out of fold
        "seconds": round(time.time() - started, 1),
    }
