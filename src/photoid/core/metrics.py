"""Classification metrics of Turtle Recall: accuracy, top-k accuracy and MAP@5.

MAP@5 follows the competition's scorer: a row scores 1/rank of the first correct label among its first k
predictions and 0 without one; a label repeated later in the row counts once (and so changes nothing), and
the score is never divided by the number of true labels (each image has exactly one).

Rankings built from probabilities break ties exactly as the original solution did, so scores computed here
match its published figures on the same predictions: MAP@5 ranks with `np.argsort(probs)[:, ::-1]` (numpy's
default sort), top-k accuracy with the stable sort reversed that scikit-learn's `top_k_accuracy_score` uses,
and accuracy with `np.argmax` (the first of tied maxima), as `accuracy_score(y_true, argmax)` did.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from photoid.core.labels import NEW_TURTLE, top_labels


def apk(actual, predicted: Sequence, k: int = 5) -> float:
    """Average precision at k for one image with one true label: 1/rank of its first hit in the top k."""
    for rank, label in enumerate(list(predicted)[:k], start=1):
        if label == actual:
            return 1.0 / rank
    return 0.0


def mapk(actual: Sequence, predicted: Sequence[Sequence], k: int = 5) -> float:
    """Mean of `apk` over images; `actual[i]` is scored against `predicted[i]`."""
    if len(actual) != len(predicted):
        raise ValueError(f"mapk: {len(actual)} true labels but {len(predicted)} prediction rows")
    if len(actual) == 0:
        raise ValueError("mapk: no rows to score")
    return float(np.mean([apk(a, p, k) for a, p in zip(actual, predicted)]))


def map_at_k_from_labels(truth: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """MAP@k of ranked label rows (n, m) against one true label per row; same result as `mapk`, vectorised.

    Only the first hit of a row counts, so a label repeated in a row cannot score twice.
    """
    truth = np.asarray(truth)
    labels = np.asarray(labels)
    if labels.ndim != 2 or truth.shape != (labels.shape[0],):
        raise ValueError(f"map_at_k_from_labels: labels of shape {labels.shape} do not match {truth.shape[0]} "
                         "true labels")
    if len(truth) == 0:
        raise ValueError("map_at_k_from_labels: no rows to score")
    hits = labels[:, :k] == truth[:, None]
    first_hit = np.argmax(hits, axis=1)
    scores = np.where(hits.any(axis=1), 1.0 / (first_hit + 1.0), 0.0)
    return float(scores.mean())


def _check_probs(y_true: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true)
    probs = np.asarray(probs)
    if probs.ndim != 2:
        raise ValueError(f"probabilities must be a 2-D array (images, classes), got shape {probs.shape}")
    if y_true.shape != (probs.shape[0],):
        raise ValueError(f"{y_true.size} true labels for {probs.shape[0]} rows of probabilities")
    if probs.shape[0] == 0:
        raise ValueError("no rows to score")
    if not np.issubdtype(y_true.dtype, np.integer):
        raise ValueError(f"true labels must be integer class indices, got dtype {y_true.dtype}")
    if y_true.min() < 0 or y_true.max() >= probs.shape[1]:
        raise ValueError(f"true labels must lie in [0, {probs.shape[1]}), found {y_true.min()}..{y_true.max()}")
    return y_true, probs


def map_at_k_from_probs(y_true: np.ndarray, probs: np.ndarray, k: int = 5) -> float:
    """MAP@k of class indices `y_true` (n,) against probabilities (n, classes), ranked as the original ranks."""
    y_true, probs = _check_probs(y_true, probs)
    ranked = np.argsort(probs, axis=1)[:, ::-1][:, :k]
    return map_at_k_from_labels(y_true, ranked, k)


def accuracy(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Share of rows whose most probable class (the first of tied maxima) is the true one."""
    y_true, probs = _check_probs(y_true, probs)
    return float(np.mean(np.argmax(probs, axis=1) == y_true))


def top_k_accuracy(y_true: np.ndarray, probs: np.ndarray, k: int = 5) -> float:
    """Share of rows whose true class is among the k most probable (ties as scikit-learn breaks them)."""
    y_true, probs = _check_probs(y_true, probs)
    ranked = np.argsort(probs, axis=1, kind="mergesort")[:, ::-1][:, :k]
    return float(np.mean((ranked == y_true[:, None]).any(axis=1)))


def classification_scores(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str],
                          original_ids: Sequence[str]) -> dict[str, float]:
    """Scores of class probabilities: over all classes (acc, acc5, map5) and over the 101 leaderboard labels.

    `y_true` holds class indices into `classes`. For `map5_101` a true id outside `original_ids` becomes
    `new_turtle` and the predictions are the submission's five labels (see `photoid.core.labels.top_labels`).
    """

    y_true, probs = _check_probs(y_true, probs)
    classes = np.asarray(classes, dtype=str)
    if probs.shape[1] != len(classes):
        raise ValueError(f"{probs.shape[1]} probability columns for {len(classes)} classes")
    true_ids = classes[y_true]
    truth_101 = np.where(np.isin(true_ids, np.asarray(original_ids, dtype=str)), true_ids, NEW_TURTLE)
    labels_101, _ = top_labels(probs, classes, original_ids, k=5)
    return {
        "acc": accuracy(y_true, probs),
        "acc5": top_k_accuracy(y_true, probs, k=5),
        "map5": map_at_k_from_probs(y_true, probs, k=5),
        "map5_101": map_at_k_from_labels(truth_101, labels_101, k=5),
    }
