"""MAP@5, accuracy and top-k accuracy against hand-computed values, the original's loop and scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, top_k_accuracy_score

from photoid.core.metrics import (accuracy, apk, classification_scores, map_at_k_from_labels, map_at_k_from_probs,
                             mapk, top_k_accuracy)


def original_apk(actual, predicted, k=5):
    """The competition's scorer written out as the original solution's loop (counts hits, skips repeats)."""
    predicted = list(predicted)[:k]
    score, hits = 0.0, 0.0
    for i, p in enumerate(predicted):
        if p == actual and p not in predicted[:i]:
            hits += 1.0
            score += hits / (i + 1.0)
    return score


@pytest.mark.parametrize("predicted, expected", [
    (["a", "b", "c", "d", "e"], 1.0),
    (["b", "c", "a", "d", "e"], 1 / 3),
    (["b", "c", "d", "e", "f", "a"], 0.0),  # sixth place lies outside the top 5
    (["b", "c", "d", "e", "f"], 0.0),
    (["a", "b", "a", "a", "c"], 1.0),  # a repeated hit counts once, never 1 + 2/3 + 3/4
    (["b", "a", "a", "c", "d"], 0.5),
    (["b", "a"], 0.5),  # fewer than k predictions
    ([], 0.0),
])
def test_apk_hand_computed(predicted, expected):
    assert apk("a", predicted) == pytest.approx(expected)
    assert original_apk("a", predicted) == pytest.approx(expected)


def test_apk_respects_k():
    assert apk("a", ["b", "c", "a"], k=2) == 0.0
    assert apk("a", ["b", "c", "a"], k=3) == pytest.approx(1 / 3)


def test_mapk_is_the_mean_over_images():
    actual = ["a", "b", "c"]
    predicted = [["a", "x"], ["x", "y", "b"], ["x", "y", "z", "w", "v"]]
    assert mapk(actual, predicted) == pytest.approx((1 + 1 / 3 + 0) / 3)


def test_mapk_refuses_mismatched_or_empty_input():
    with pytest.raises(ValueError, match="2 true labels but 1"):
        mapk(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="no rows"):
        mapk([], [])


def test_map_from_labels_counts_a_repeated_hit_once():
    truth = np.array(["a", "b"])
    labels = np.array([["x", "a", "a", "a", "a"], ["b", "b", "y", "z", "w"]])
    assert map_at_k_from_labels(truth, labels) == pytest.approx((0.5 + 1.0) / 2)


def _tied_probs(rng, n, n_classes):
    """Random probabilities rounded to few values, so many classes tie within a row."""
    probs = np.round(rng.random((n, n_classes)), 1).astype(np.float32)
    return probs / probs.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_map_equals_the_original_loop_with_ties(seed):
    rng = np.random.default_rng(seed)
    probs = _tied_probs(rng, 200, 40)
    y_true = rng.integers(0, 40, size=200)
    ranked = np.argsort(probs, axis=1)[:, ::-1][:, :5]
    expected = np.mean([original_apk(t, row) for t, row in zip(y_true, ranked)])
    assert 0 < expected < 1
    assert map_at_k_from_probs(y_true, probs) == pytest.approx(expected, rel=1e-12)
    assert mapk(y_true, ranked) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_accuracies_equal_scikit_learn_with_ties(seed):
    rng = np.random.default_rng(seed)
    probs = _tied_probs(rng, 300, 30)
    y_true = rng.integers(0, 30, size=300)
    labels = np.arange(30)
    assert accuracy(y_true, probs) == accuracy_score(y_true, np.argmax(probs, axis=1))
    for k in (1, 3, 5):
        assert top_k_accuracy(y_true, probs, k=k) == pytest.approx(
            top_k_accuracy_score(y_true, probs, k=k, labels=labels), rel=1e-12)


def test_top_k_accuracy_hand_computed():
    probs = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1], [0.7, 0.1, 0.1, 0.1]])
    y_true = np.array([1, 3, 0])  # ranks 3, 4 and 1
    assert accuracy(y_true, probs) == pytest.approx(1 / 3)
    assert top_k_accuracy(y_true, probs, k=2) == pytest.approx(1 / 3)
    assert top_k_accuracy(y_true, probs, k=3) == pytest.approx(2 / 3)
    assert top_k_accuracy(y_true, probs, k=4) == pytest.approx(1.0)


def test_metrics_refuse_bad_labels():
    probs = np.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        accuracy(np.array([0, 3]), probs)
    with pytest.raises(ValueError, match="2 true labels for 3 rows|3 rows"):
        map_at_k_from_probs(np.array([0, 1]), np.full((3, 3), 1 / 3))


def test_classification_scores_over_all_classes_and_101_labels():
    classes = ["o0", "o1", "o2", "o3", "o4", "n0", "n1", "n2"]
    originals = ["o0", "o1", "o2", "o3", "o4"]
    probs = np.array([
        # truth n1 (new_turtle on the leaderboard): ranked n0, n1, o0, ... -> 1/2 over all ids; the five labels
        # read new_turtle, o0, ... -> 1 over 101 labels
        [0.05, 0.04, 0.03, 0.02, 0.01, 0.50, 0.30, 0.05],
        # truth o1, ranked first everywhere
        [0.10, 0.60, 0.10, 0.05, 0.05, 0.04, 0.03, 0.03],
    ])
    scores = classification_scores(np.array([6, 1]), probs, classes, originals)
    assert scores == pytest.approx({"acc": 0.5, "acc5": 1.0, "map5": 0.75, "map5_101": 1.0})
