"""Labels every layer shares: the "new individual" labels, the `new_turtle` rule and label-order fingerprints.

A light module (numpy only), so metrics, the ensemble, the catalogue and the inference code can all depend on it
without depending on each other.

The Turtle Recall leaderboard knows 101 labels: the 100 turtles of train.csv and `new_turtle`. The models rank all
2265 train+extra ids, so every id outside the original ones stands for "a turtle the leaderboard calls new".
`top_labels` turns a ranking into the submitted labels exactly as the original solution did.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

NEW_TURTLE = "new_turtle"  # Turtle Recall's label for an individual outside train.csv
NEW_INDIVIDUAL = "new_individual"  # every other task's label for an individual the catalogue does not hold
_ROWS_PER_CHUNK = 1024  # bounds the (rows, classes) index arrays to a few MB whatever the number of images


def top_labels(probs: np.ndarray, classes: Sequence[str], original_ids: Sequence[str], k: int = 5,
               new_label: str = NEW_TURTLE) -> tuple[np.ndarray, np.ndarray]:
    """The k labels to submit per row and their probabilities, by the original's `new_turtle` rule.

    All classes are ranked with `np.argsort(probs, axis=1)[:, ::-1]` (the original's ranking, ties included);
    every id outside `original_ids` reads `new_label`; the unique labels of the top k are kept in order, so
    `new_label` stands once, at the rank of the best non-original id, and not at all if none is in the top k;
    freed places take the next most probable original ids. A label's score is the probability of the class at
    its rank. Rows with fewer than k possible labels (few original ids, few classes) end with "" and NaN.
    Returns labels (n, k) of str and scores (n, k) of float.
    """
    probs = np.asarray(probs)
    classes = np.asarray(classes, dtype=str)
    if probs.ndim != 2 or probs.shape[1] != len(classes):
        raise ValueError(f"probabilities of shape {probs.shape} do not match {len(classes)} classes "
                         "(expected a 2-D array: images x classes)")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if len(classes) == 0:
        raise ValueError("no classes to rank")
    if len(np.unique(classes)) != len(classes):
        raise ValueError("class ids must be unique")
    originals = np.unique(np.asarray(original_ids, dtype=str))
    unknown = np.setdiff1d(originals, classes)
    if unknown.size:
        raise ValueError(f"{unknown.size} original ids are not among the classes, e.g. {unknown[0]!r}")
    if new_label in originals:
        raise ValueError(f"{new_label!r} cannot be both an original id and the label for new individuals")

    is_original = np.isin(classes, originals)
    table = np.append(classes, [new_label, ""])  # codes: class index, then new_label, then padding
    codes = np.empty((len(probs), k), dtype=np.int64)
    scores = np.empty((len(probs), k), dtype=np.float64)
    for start in range(0, len(probs), _ROWS_PER_CHUNK):
        rows = slice(start, start + _ROWS_PER_CHUNK)
        codes[rows], scores[rows] = _top_label_codes(probs[rows], is_original, k)
    return table[codes], scores


def _top_label_codes(probs: np.ndarray, is_original: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`top_labels` for one chunk of rows, as codes into (classes, new_label, "").

    Everything ranked above the best non-original id is original, so that id's rank is also the place of
    `new_label` in the output; the other places hold the original ids in rank order.
    """
    n, n_classes = probs.shape
    order = np.argsort(probs, axis=1)[:, ::-1]
    rank_of = np.empty_like(order)
    np.put_along_axis(rank_of, order, np.broadcast_to(np.arange(n_classes), order.shape), axis=1)

    original_cols, other_cols = np.flatnonzero(is_original), np.flatnonzero(~is_original)
    original_ranks = np.sort(rank_of[:, original_cols], axis=1)[:, :k]  # best originals, in rank order
    n_kept = original_ranks.shape[1]
    if n_kept == 0:
        original_ranks = np.zeros((n, 1), dtype=order.dtype)  # never read: no place is filled from it
    new_place = rank_of[:, other_cols].min(axis=1) if other_cols.size else np.full(n, k)
    new_place = np.minimum(new_place, k)[:, None]  # k: no non-original id in the top k

    place = np.arange(k)[None, :]
    is_new = place == new_place
    slot = place - (place > new_place)  # the slot-th best original fills this place
    is_filled = ~is_new & (slot < n_kept)
    original_rank = np.take_along_axis(original_ranks, np.minimum(slot, original_ranks.shape[1] - 1), axis=1)
    rank = np.where(is_new, np.minimum(new_place, n_classes - 1), original_rank)
    row = np.arange(n)[:, None]
    cls = order[row, rank]
    codes = np.where(is_new, n_classes, np.where(is_filled, cls, n_classes + 1))
    scores = np.where(is_new | is_filled, probs[row, cls], np.nan)
    return codes, scores


def classes_sha256(classes: Sequence[str]) -> str:
    """Fingerprint of a label order: sha256 of the ids joined with newlines (UTF-8)."""
    return hashlib.sha256("\n".join(classes).encode("utf-8")).hexdigest()
