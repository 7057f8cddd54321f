"""Scores mapped to P(same individual), and fused: how a global similarity and a count of inliers are combined.

A raw score means nothing on its own scale (a cosine of 0.6, 25 inliers), so each is calibrated on labelled pairs
(query photo, candidate individual, same or not) into the probability that the pair is the same individual, as
WildFusion calibrates each of its matchers (`wildlife_tools/similarity/calibration.py`); the fused score is the
weighted mean of the calibrated probabilities.

Two calibrations (`KINDS`):
- `isotonic`: scikit-learn's isotonic regression, a step function. Its flat steps would tie candidates that the
  raw scores ordered, so each step becomes one knot (the middle of its scores, its probability) and the knots are
  joined by a monotone cubic (PCHIP): strictly increasing between the first and last knot. Beyond them the curve
  keeps rising by at most `TAIL` (v / (1 + |v|)), so even scores past every calibration pair keep their order.
- `logistic`: a logistic regression on the score (log(1 + inliers) for counts), strictly increasing when the
  score says anything at all (past a logit of ±30, where floating point cannot tell the values apart, it rises
  by a bounded tail as the isotonic curve does).
Both stay strictly inside (0, 1). Which fits better is measured out of fold by `photoid calibrate` (log-loss).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

KINDS = ("isotonic", "logistic")
DEFAULT_KIND = "isotonic"
TAIL = 1e-4  # how far the curve may still rise (or fall) beyond its first and last knots
FLOOR = 1e-4  # probabilities are kept within [FLOOR, 1 - FLOOR] at the knots


@dataclass
class Calibrator:
    """A strictly increasing map from a raw score to P(same individual); JSON-serialisable (`to_json`)."""

    kind: str
    x: list[float] = field(default_factory=list)  # isotonic: knots' scores, increasing
    y: list[float] = field(default_factory=list)  # isotonic: knots' probabilities, increasing
    coef: float = 0.0  # logistic: on `transform(score)`
    intercept: float = 0.0
    log_count: bool = False  # the score is a count: calibrated on log(1 + score)
    pairs: int = 0
    positives: int = 0

    def __call__(self, scores) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)
        if self.kind == "logistic":
            t = self._transform(s)
            z = self.coef * t + self.intercept
            # Past |z| = 30 the logistic is 1 or 0 to float precision: the rest of the rise is the bounded tail (and
            # all of it, for a score that said nothing: coef 0).
            inside = np.clip(z, -30.0, 30.0)
            p = FLOOR + (1 - 2 * FLOOR) / (1.0 + np.exp(-inside))
            return p + FLOOR / 2 * _bounded(z - inside if self.coef > 0 else t)
        x, y = np.asarray(self.x, dtype=np.float64), np.asarray(self.y, dtype=np.float64)
        span = float(x[-1] - x[0]) if len(x) > 1 else max(abs(float(x[0])), 1.0)
        inside = np.clip(s, x[0], x[-1])
        if len(x) == 1:
            base = np.full_like(s, y[0])
        else:
            from scipy.interpolate import PchipInterpolator

            base = PchipInterpolator(x, y, extrapolate=False)(inside)
        return base + TAIL * _bounded((s - inside) / span)

    def _transform(self, s: np.ndarray) -> np.ndarray:
        return _log_count(s) if self.log_count else s

    def to_json(self) -> dict:
        entry = {"kind": self.kind, "pairs": self.pairs, "positives": self.positives, "log_count": self.log_count}
        if self.kind == "isotonic":
            entry.update(x=[float(v) for v in self.x], y=[float(v) for v in self.y])
        else:
            entry.update(coef=float(self.coef), intercept=float(self.intercept))
        return entry

    @staticmethod
    def from_json(entry: dict) -> "Calibrator":
        return Calibrator(kind=entry["kind"], x=list(entry.get("x", [])), y=list(entry.get("y", [])),
                          coef=float(entry.get("coef", 0.0)), intercept=float(entry.get("intercept", 0.0)),
                          log_count=bool(entry.get("log_count", False)), pairs=int(entry.get("pairs", 0)),
                          positives=int(entry.get("positives", 0)))


def fit_calibrator(scores, same, kind: str = DEFAULT_KIND, log_count: bool = False) -> Calibrator:
    """Fit P(same | score) on labelled pairs (`same`: bool per pair). Scores must be finite."""
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(same, dtype=bool)
    if s.shape != t.shape or s.ndim != 1:
        raise ValueError(f"scores {s.shape} and labels {t.shape} must be 1-D of one length")
    if kind not in KINDS:
        raise ValueError(f"unknown calibration {kind!r}; choose from {', '.join(KINDS)}")
    if len(s) == 0:
        raise ValueError("no pairs to calibrate on")
    counts = dict(pairs=int(len(s)), positives=int(t.sum()), log_count=log_count)
    prior = float(np.clip(t.mean(), FLOOR, 1 - FLOOR))
    if kind == "logistic":
        x = _log_count(s) if log_count else s
        if t.all() or not t.any() or np.ptp(x) == 0:
            return Calibrator("logistic", coef=0.0, intercept=float(np.log(prior / (1 - prior))), **counts)
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=1e4, max_iter=1000).fit(x[:, None], t)
        return Calibrator("logistic", coef=max(float(model.coef_[0, 0]), 1e-6),
                          intercept=float(model.intercept_[0]), **counts)
    from sklearn.isotonic import IsotonicRegression

    fitted = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(s, t)
    level = np.clip(fitted.predict(s), FLOOR, 1 - FLOOR)
    knots_x, knots_y = [], []
    for value in np.unique(level):  # one knot per step: the middle of the scores on it
        on_step = s[level == value]
        knots_x.append(float((on_step.min() + on_step.max()) / 2))
        knots_y.append(float(value))
    order = np.argsort(knots_x)
    x_sorted, y_sorted = np.asarray(knots_x)[order], np.asarray(knots_y)[order]
    keep = np.r_[True, np.diff(x_sorted) > 0]  # (steps are ordered, so their middles are distinct)
    return Calibrator("isotonic", x=x_sorted[keep].tolist(), y=y_sorted[keep].tolist(), **counts)


def _bounded(v: np.ndarray) -> np.ndarray:
    """v / (1 + |v|): strictly increasing, within (-1, 1), and (unlike tanh) still increasing in floating point far
    from 0; ±inf map to ±1."""
    v = np.asarray(v, dtype=np.float64)
    return np.where(np.isfinite(v), v / (1.0 + np.abs(np.where(np.isfinite(v), v, 0.0))), np.sign(v))


def _log_count(s: np.ndarray) -> np.ndarray:
    """log(1 + count), extended to negative values as its mirror image, so the map stays strictly increasing."""
    return np.sign(s) * np.log1p(np.abs(s))


def log_loss(calibrator: Calibrator, scores, same) -> float:
    """Mean negative log-likelihood of the labels under the calibrated probabilities (lower is better)."""
    p = np.clip(calibrator(scores), 1e-6, 1 - 1e-6)
    t = np.asarray(same, dtype=bool)
    return float(-np.mean(np.where(t, np.log(p), np.log(1 - p)))) if len(t) else float("nan")


TIE_BREAK = 1e-6  # times the global probability, added to every fused score: equal ones keep the global order


def fuse_global_local(p_global: np.ndarray, p_local: np.ndarray, local_weight: float) -> np.ndarray:
    """(1 − w)·P_global + w·P_local, where a local probability is NaN (no comparable photo was compared: no
    evidence either way) the global probability alone; plus `TIE_BREAK`·P_global, so that equal fused scores (local
    weight 1 and no inliers) keep the global order."""
    p_global = np.asarray(p_global, dtype=np.float64)
    missing = np.isnan(p_local)
    fused = fuse({"global": p_global, "local": np.where(missing, 0.0, p_local)},
                 {"global": 1.0 - local_weight, "local": local_weight})
    return np.where(missing, p_global, fused) + TIE_BREAK * p_global


def fuse(probabilities: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """The weighted mean of calibrated probabilities (arrays of one shape); a zero weight leaves a score out."""
    total = sum(float(weights.get(name, 0.0)) for name in probabilities)
    if total <= 0:
        raise ValueError(f"fusion weights {weights} give no score any weight")
    fused = sum(float(weights.get(name, 0.0)) * np.asarray(p, dtype=np.float64)
                for name, p in probabilities.items() if weights.get(name, 0.0))
    return (fused / total).astype(np.float64)


@dataclass
class CrossFit:
    """Out-of-fold calibration of one score: the kind chosen, each fold's calibrator and the log-losses measured."""

    kind: str
    calibrators: list[Calibrator]  # one per fold: fitted on the other folds' pairs
    fold_of_group: dict[int, int]
    losses: dict[str, float]  # out-of-fold log-loss of each kind tried

    def fold_of(self, groups) -> np.ndarray:
        keys = np.array(sorted(self.fold_of_group))
        folds = np.array([self.fold_of_group[k] for k in keys])
        return folds[np.searchsorted(keys, np.asarray(groups))]

    def probabilities(self, scores: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """Each row of `scores` calibrated by the calibrator of its group's fold (never fitted on that group);
        `groups` has one entry per row (first axis)."""
        scores, fold = np.asarray(scores, dtype=np.float64), self.fold_of(groups)
        out = np.empty(scores.shape)
        for f, calibrator in enumerate(self.calibrators):
            out[fold == f] = calibrator(scores[fold == f])
        return out


def cross_fit(scores, same, groups, *, log_count: bool = False, kinds=KINDS, folds: int = 5,
              seed: int = 0) -> CrossFit:
    """Calibrate `scores` (pairs labelled `same`) out of fold: the pairs' `groups` (e.g. the query's individual)
    are split into `folds`, each fold's pairs calibrated by a curve fitted on the others; the kind of lower
    out-of-fold log-loss is kept (on a tie, `DEFAULT_KIND`)."""
    scores, same, groups = np.asarray(scores, np.float64), np.asarray(same, bool), np.asarray(groups)
    distinct = np.unique(groups)
    n_folds = int(max(1, min(folds, len(distinct))))
    order = np.random.default_rng(seed).permutation(len(distinct))
    fold_of_group = {int(g): int(i % n_folds) for i, g in zip(order, distinct)}
    fold = CrossFit("", [], fold_of_group, {}).fold_of(groups)
    fits, losses = {}, {}
    for kind in kinds:
        fits[kind] = [fit_calibrator(scores[fold != f], same[fold != f], kind, log_count) if (fold != f).any()
                      else fit_calibrator(scores, same, kind, log_count) for f in range(n_folds)]
        # The pairs' mean log-loss, each fold's pairs under the curve fitted without them.
        losses[kind] = float(sum(log_loss(fits[kind][f], scores[fold == f], same[fold == f]) * (fold == f).sum()
                                 for f in range(n_folds) if (fold == f).any()) / max(len(scores), 1))
    kind = min(kinds, key=lambda k: (round(losses[k], 9), k != DEFAULT_KIND))
    return CrossFit(kind, fits[kind], fold_of_group, losses)
