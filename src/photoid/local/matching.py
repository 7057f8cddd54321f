"""One pair of photos scored by local features: how many matches a single geometric model explains.

1. Tentative matches: each query descriptor's two nearest catalogue-photo descriptors (RootSIFT, Euclidean); kept
   when the nearest is clearly nearer than the second (Lowe's ratio test, `RATIO`) and the match is mutual (the
   query descriptor is in turn the nearest to its match among the query's).
2. Verification: a partial affine transform (rotation, uniform scale, shift: `cv2.estimateAffinePartial2D`,
   RANSAC), an inlier being a match it maps within `THRESHOLD_PX` pixels of the working size; `method="homography"`
   fits a homography by OpenCV's USAC with MAGSAC++ scoring (`cv2.USAC_MAGSAC`) instead. On the synthetic turtles,
   belugas and generic photos the partial affine transform named the right individual as often or more often
   (acc@1 0.938 against 0.906 on turtles, 0.810 against 0.792 on belugas, equal on the generic set;
   `docs/local-matching.md`): its 4 degrees of freedom leave a wrong pair fewer chance inliers than a homography's 8.
3. Score: the number of verified inliers (0 below `MIN_MATCHES` tentative matches or without a model).

OpenCV's random generator is seeded (`cv2.setRNGSeed`) before every fit, so a pair scores the same every time.
The inliers returned are exactly the matches counted (`PairMatch.inliers == len(PairMatch.query_index)`), which is
what the explanation draws.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from photoid.local.features import Features, rootsift

RATIO = 0.8  # Lowe's ratio test (the nearest at most this fraction of the second nearest's distance)
METHODS = ("homography", "affine")
DEFAULT_METHOD = "affine"
THRESHOLD_PX = 5.0  # a verified match lands within this many pixels (at the working size) of where the model maps it
MIN_MATCHES = 4  # tentative matches needed to fit a model (a homography needs 4)
MAX_ITERS = 2000
CONFIDENCE = 0.999
SEED = 0


@dataclass
class PairMatch:
    """The verified matches of a (query, candidate) pair: the score is `inliers`, their count."""

    query_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # query keypoints (inliers)
    candidate_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # their matches
    strength: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # 1 - distance ratio, in (0, 1]
    tentative: int = 0  # mutual ratio-test matches before verification
    note: str | None = None  # why the pair could not be scored (a photo without enough keypoints)

    @property
    def inliers(self) -> int:
        return int(len(self.query_index))


def tentative_matches(query: np.ndarray, candidate: np.ndarray, ratio: float = RATIO
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mutual nearest neighbours passing the ratio test between two sets of RootSIFT rows (unit length).

    Returns (query indices, candidate indices, distance ratios), in query order.
    """
    return tentative_matches_many(query, [candidate], ratio)[0]


SIMILARITIES_AT_ONCE = 1 << 22  # query rows x candidate rows compared in one block (16 MB of float32)


def tentative_matches_many(query: np.ndarray, candidates: Sequence[np.ndarray], ratio: float = RATIO
                           ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """`tentative_matches` of one query with each candidate, the candidates side by side: each pair's product is
    its own (the numbers of the pair alone), and the rest runs once over a block of candidates, where one call per
    pair spent most of its time in Python between small array operations."""
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    out = [empty] * len(candidates)
    if len(query) < 1:
        return out
    block, width = [], 0
    for j in (j for j, candidate in enumerate(candidates) if len(candidate) >= 2):
        if block and (width + len(candidates[j])) * len(query) > SIMILARITIES_AT_ONCE:
            _side_by_side(query, candidates, block, ratio, out)
            block, width = [], 0
        block.append(j)
        width += len(candidates[j])
    if block:
        _side_by_side(query, candidates, block, ratio, out)
    return out


def _side_by_side(query: np.ndarray, candidates: Sequence[np.ndarray], block: list[int], ratio: float,
                  out: list) -> None:
    """`tentative_matches_many` of the candidates numbered `block`, written into `out`."""
    products = [query @ candidates[j].T for j in block]
    rows = np.arange(len(query))[:, None]
    # Per pair (query row, candidate): the best similarity and its first column, as argmax gives it. A pair alone
    # (one candidate) takes argmax itself, as fast as before.
    if len(block) == 1:
        similarity, starts = products[0], np.zeros(1, np.intp)
        nearest = similarity.argmax(axis=1)[:, None]
        s1 = np.take_along_axis(similarity, nearest, axis=1)
    else:
        widths = np.array([product.shape[1] for product in products])
        starts = np.concatenate([[0], np.cumsum(widths)[:-1]])
        similarity = np.concatenate(products, axis=1)  # query rows x every candidate's rows, candidate by candidate
        s1 = np.maximum.reduceat(similarity, starts, axis=1)
        at_best = similarity == np.repeat(s1, widths, axis=1)
        columns = np.arange(similarity.shape[1])
        nearest = np.minimum.reduceat(np.where(at_best, columns, len(columns)), starts, axis=1)
    mutual = similarity.argmax(axis=0)[nearest] == rows  # the candidate row's nearest query row is this one
    # The second nearest is the best of the rest. (Where two are equally near, the ratio is 1: no match, whichever
    # of them is called nearest.) Two maxima instead of a partition of each row: B10's pair of photos at the cap of
    # 400 keypoints took 0.74 ms instead of 1.44, the same matches.
    similarity[rows, nearest] = -np.inf
    s2 = similarity.max(axis=1, keepdims=True) if len(block) == 1 else np.maximum.reduceat(similarity, starts, axis=1)
    d1, d2 = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * s1)), np.sqrt(np.maximum(0.0, 2.0 - 2.0 * s2))
    ratios = np.divide(d1, d2, out=np.ones_like(d1), where=d2 > 0)
    keep = (ratios < ratio) & mutual
    for k, j in enumerate(block):
        kept = keep[:, k]
        out[j] = (np.flatnonzero(kept).astype(np.int64), (nearest[kept, k] - starts[k]).astype(np.int64),
                  ratios[kept, k].astype(np.float32))


def verify(query_xy: np.ndarray, candidate_xy: np.ndarray, method: str = DEFAULT_METHOD,
           threshold: float = THRESHOLD_PX, seed: int = SEED) -> np.ndarray:
    """Which of the matched points (row i of both) one geometric model explains: bool (matches,). OpenCV's random
    generator is seeded first: the same points give the same inliers every time."""
    import cv2

    n = len(query_xy)
    if n < MIN_MATCHES:
        return np.zeros(n, bool)
    src = np.ascontiguousarray(query_xy, dtype=np.float32).reshape(-1, 1, 2)
    dst = np.ascontiguousarray(candidate_xy, dtype=np.float32).reshape(-1, 1, 2)
    cv2.setRNGSeed(int(seed))
    if method == "homography":
        model, mask = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, float(threshold), maxIters=MAX_ITERS,
                                         confidence=CONFIDENCE)
    elif method == "affine":
        model, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=float(threshold),
                                                  maxIters=MAX_ITERS, confidence=CONFIDENCE)
    else:
        raise ValueError(f"unknown verification {method!r}; choose from {', '.join(METHODS)}")
    if model is None or mask is None:
        return np.zeros(n, bool)
    return mask.reshape(-1).astype(bool)


def match_pair(query: Features, candidate: Features, *, ratio: float = RATIO, method: str = DEFAULT_METHOD,
               threshold: float = THRESHOLD_PX, seed: int = SEED, query_root: np.ndarray | None = None,
               candidate_root: np.ndarray | None = None) -> PairMatch:
    """The verified matches of one pair (`query_root`/`candidate_root`: their RootSIFT rows, if already made)."""
    return match_many(query, [candidate], ratio=ratio, method=method, threshold=threshold, seed=seed,
                      query_root=query_root, candidate_roots=[candidate_root])[0]


def match_many(query: Features, candidates: Sequence[Features], *, ratio: float = RATIO,
               method: str = DEFAULT_METHOD, threshold: float = THRESHOLD_PX, seed: int = SEED,
               query_root: np.ndarray | None = None, candidate_roots: Sequence[np.ndarray | None] | None = None
               ) -> list[PairMatch]:
    """`match_pair` of one query with each candidate: their tentative matches found side by side
    (`tentative_matches_many`, the same as pair by pair), then each pair verified on its own."""
    if not query.usable:
        return [PairMatch(note=query.note or "the query has too few keypoints: local score 0") for _ in candidates]
    q = rootsift(query.descriptors) if query_root is None else query_root
    roots = [None] * len(candidates) if candidate_roots is None else candidate_roots
    out: list[PairMatch | None] = [None] * len(candidates)
    usable = []
    for j, candidate in enumerate(candidates):
        if candidate.usable:
            usable.append(j)
        else:
            out[j] = PairMatch(note=candidate.note or "the catalogue photo has too few keypoints: local score 0")
    found = tentative_matches_many(q, [rootsift(candidates[j].descriptors) if roots[j] is None else roots[j]
                                       for j in usable], ratio)
    for j, (qi, ci, ratios) in zip(usable, found):
        inlier = verify(query.xy[qi], candidates[j].xy[ci], method, threshold, seed)
        out[j] = PairMatch(qi[inlier], ci[inlier], (1.0 - ratios[inlier]).astype(np.float32), tentative=len(qi))
    return out
