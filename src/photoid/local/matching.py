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

import numpy as np

from photoid.core.threads import one_blas_thread
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
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    if len(query) < 1 or len(candidate) < 2:
        return empty
    similarity = query @ candidate.T
    rows = np.arange(len(query))
    nearest = similarity.argmax(axis=1)
    mutual = similarity.argmax(axis=0)[nearest] == rows
    s1 = similarity[rows, nearest]
    # The second nearest is the best of the rest. (Where two are equally near, the ratio is 1: no match, whichever
    # of them is called nearest.) Two maxima instead of a partition of each row: B10's pair of photos at the cap of
    # 400 keypoints took 0.74 ms instead of 1.44, the same matches.
    similarity[rows, nearest] = -np.inf
    s2 = similarity.max(axis=1)
    d1, d2 = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * s1)), np.sqrt(np.maximum(0.0, 2.0 - 2.0 * s2))
    ratios = np.divide(d1, d2, out=np.ones_like(d1), where=d2 > 0)
    keep = (ratios < ratio) & mutual
    return rows[keep].astype(np.int64), nearest[keep].astype(np.int64), ratios[keep].astype(np.float32)


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
    for features, who in ((query, "the query"), (candidate, "the catalogue photo")):
        if not features.usable:
            return PairMatch(note=features.note or f"{who} has too few keypoints: local score 0")
    q = rootsift(query.descriptors) if query_root is None else query_root
    c = rootsift(candidate.descriptors) if candidate_root is None else candidate_root
    qi, ci, ratios = tentative_matches(q, c, ratio)
    inlier = verify(query.xy[qi], candidate.xy[ci], method, threshold, seed)
    return PairMatch(qi[inlier], ci[inlier], (1.0 - ratios[inlier]).astype(np.float32), tentative=len(qi))


def match_many(query: Features, candidates: list[Features], **options) -> list[PairMatch]:
    """`match_pair` of one query with each candidate (the query's RootSIFT made once)."""
    root = rootsift(query.descriptors) if query.usable else None
    with one_blas_thread():
        return [match_pair(query, c, query_root=root, **options) for c in candidates]
