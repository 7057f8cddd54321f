"""Open-set scoring: per-individual similarity, score normalisation, blending, "new" insertion, threshold search."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from photoid.core.metrics import mapk
from photoid.catalog.openset import (NEW_INDIVIDUAL, TopCandidates, best_threshold, blend_scores, catalogue_scores,
                             individual_codes, individual_similarities, map5_by_threshold, open_set_metrics,
                             rank_with_new, search_operating_point, top_candidates)

needs_faiss = pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="faiss is not installed")


def gallery_and_queries(seed: int = 0, n_gallery: int = 300, n_individuals: int = 40, dim: int = 12):
    """Photos near their individual's centre, in one half-space so that cosines are positive and distinct."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_individuals, dim)) + 2.0
    codes = rng.integers(0, n_individuals - 3, n_gallery)  # the last 3 individuals have no photo
    gallery = centres[codes] + rng.normal(scale=0.7, size=(n_gallery, dim))
    queries = centres[rng.integers(0, n_individuals, 25)] + rng.normal(scale=0.7, size=(25, dim))
    return queries.astype(np.float32), gallery.astype(np.float32), codes, n_individuals


def brute_force(queries, gallery, codes, n_individuals, exclude):
    """Per query and individual: the best clipped cosine over its photos, the excluded photo left out."""
    out = np.full((len(queries), n_individuals), -np.inf)
    for q, e in enumerate(queries):
        for g, f in enumerate(gallery):
            if g == exclude[q]:
                continue
            cos = float(e @ f / (np.linalg.norm(e) * np.linalg.norm(f)))
            out[q, codes[g]] = max(out[q, codes[g]], min(max(cos, 0.0), 1.0))
    return out


def test_individual_similarities_match_brute_force_with_own_photos_left_out():
    queries, gallery, codes, n = gallery_and_queries()
    exclude = np.full(len(queries), -1)
    exclude[[0, 3, 7]] = [5, 0, 299]
    # Individual 37 gets a single photo; leaving it out leaves query 9 without that individual.
    codes[42] = 37
    exclude[9] = 42
    got = individual_similarities(queries, gallery, codes, n, exclude=exclude, backend="numpy", chunk_size=4)
    expected = brute_force(queries, gallery, codes, n, exclude)
    assert np.array_equal(np.isinf(got), np.isinf(expected))
    assert np.isinf(got[:, 38:]).all() and np.isinf(got[9, 37]) and np.isfinite(got[0, 37])
    np.testing.assert_allclose(got[np.isfinite(got)], expected[np.isfinite(expected)], atol=1e-5)


def clustered_search_case(seed: int, centre_offset: float):
    """Clustered photos with own photos excluded and individuals of one photo, one of them excluded."""
    queries, gallery, codes, n = gallery_and_queries(seed=seed, n_gallery=400, n_individuals=60)
    queries, gallery = queries - 2.0 + centre_offset, gallery - 2.0 + centre_offset
    codes[[10, 11, 12]] = [57, 58, 59]  # three individuals with a single photo
    exclude = np.full(len(queries), -1)
    exclude[:20] = np.arange(20)  # as if query q were also gallery photo q...
    queries[:20] = gallery[:20] + 0.01
    exclude[[1, 2]] = [10, 11]  # ...or the only photo of its individual
    queries[[1, 2]] = gallery[[10, 11]] + 0.01
    return queries, gallery, codes, n, exclude


def same_scores_and_order(got, expected):
    assert np.array_equal(np.isinf(got), np.isinf(expected))
    np.testing.assert_allclose(got[np.isfinite(got)], expected[np.isfinite(expected)], atol=1e-6)
    order = lambda s: np.argsort(-s, axis=1, kind="stable")[:, :10]  # noqa: E731
    assert np.array_equal(order(got), order(expected))


@needs_faiss
@pytest.mark.parametrize("centre_offset", [2.0, 0.0])  # all cosines positive / many at or below the clip
def test_exact_faiss_search_equals_numpy_and_the_approximate_one_keeps_the_best(monkeypatch, centre_offset):
    import photoid.catalog.openset as openset

    queries, gallery, codes, n, exclude = clustered_search_case(1, centre_offset)
    dense = individual_similarities(queries, gallery, codes, n, exclude=exclude, backend="numpy")
    assert np.isinf(dense[1, 57]) and np.isinf(dense[2, 58]) and np.isfinite(dense[0, 59])
    completed = []
    product = openset._dense_similarities
    monkeypatch.setattr(openset, "_dense_similarities", lambda q, *a, **k: completed.append(len(q)) or product(q, *a, **k))
    for neighbours in (400, 150, 12):
        completed.clear()
        exact = individual_similarities(queries, gallery, codes, n, exclude=exclude, backend="faiss",
                                        neighbours=neighbours)
        same_scores_and_order(exact, dense)
        redone = sum(completed)
        if neighbours == 400:  # every photo retrieved: faiss' answer alone
            assert redone == 0
        elif centre_offset == 0.0 and neighbours == 150:  # last retrieved scores 0: unretrieved ones are 0 too
            assert redone < len(queries)
        elif neighbours == 12:  # 12 photos cannot cover 59 individuals: every query completed by the product
            assert redone == len(queries)
    # The opt-in approximate retrieval: the same best individuals, 0 for individuals it did not retrieve.
    few = individual_similarities(queries, gallery, codes, n, exclude=exclude, backend="faiss_approximate",
                                  neighbours=60)
    top = lambda s: np.argsort(-s, axis=1, kind="stable")[:, :5]  # noqa: E731
    assert np.array_equal(top(few), top(dense))
    assert np.array_equal(np.isinf(few), np.isinf(dense))
    retrieved = np.isclose(few, dense, atol=1e-6) | np.isinf(dense)
    assert (retrieved | (few == 0)).all() and not retrieved.all()


@needs_faiss
def test_auto_search_races_once_per_size_and_returns_numpys_scores(monkeypatch):
    import photoid.catalog.openset as openset

    queries, gallery, codes, n, exclude = clustered_search_case(2, 0.0)
    dense = individual_similarities(queries, gallery, codes, n, exclude=exclude, backend="numpy")
    monkeypatch.setattr(openset, "_FASTER", {})
    first = individual_similarities(queries, gallery, codes, n, exclude=exclude, backend="auto", neighbours=20)
    same_scores_and_order(first, dense)
    assert list(openset._FASTER.values()) in (["numpy"], ["faiss"])  # one size class raced, its winner kept
    for winner in ("numpy", "faiss"):  # whichever won, later searches of the class give the same scores
        openset._FASTER.update(dict.fromkeys(openset._FASTER, winner))
        same_scores_and_order(individual_similarities(queries, gallery, codes, n, exclude=exclude,
                                                      backend="auto", neighbours=20), dense)


def test_models_are_scored_in_their_own_spaces_and_averaged_on_one_models_scale():
    queries, gallery, codes, n = gallery_and_queries(seed=4)
    rng = np.random.default_rng(5)
    # A second "model": other features of the same photos, in columns 12..19.
    q2, g2 = rng.normal(size=(len(queries), 8)) + 1.0, rng.normal(size=(len(gallery), 8)) + 1.0
    q = np.concatenate([queries, q2], axis=1).astype(np.float32)
    g = np.concatenate([gallery, g2], axis=1).astype(np.float32)
    first = individual_similarities(queries, gallery, codes, n)
    second = individual_similarities(q2, g2, codes, n)
    both = catalogue_scores(q, g, codes, n, [(0, 12), (12, 8)])
    one = catalogue_scores(q, g, codes, n, [(0, 12)])
    np.testing.assert_allclose(one, first, atol=1e-6)  # one model: its own scores, no shift
    mean = (first + second) / 2
    finite = np.isfinite(mean)
    assert np.array_equal(np.isfinite(both), finite)
    # The best score is the mean of each model's best; every score moves by the same amount per query.
    np.testing.assert_allclose(both.max(axis=1), (first.max(axis=1) + second.max(axis=1)) / 2, atol=1e-6)
    for row in range(len(q)):
        shift = both[row, finite[row]] - mean[row, finite[row]]
        assert np.ptp(shift) < 1e-6 and shift.min() >= -1e-6


def test_blend_renormalises_probabilities_over_candidates_and_spares_unlearned_individuals():
    sims = np.array([[0.8, 0.6, -np.inf, 0.7]], dtype=np.float32)
    probs = np.array([[0.2, 0.3, 0.5, 0.0]])
    known = np.array([True, True, True, False])  # individual 3 was added after training
    blended = blend_scores(sims, probs, known, 0.5)
    # Individual 2 is no candidate: its 0.5 is spread over 0 and 1 (0.4 and 0.6).
    np.testing.assert_allclose(blended[0, [0, 1, 3]], [0.5 * 0.8 + 0.5 * 0.4, 0.5 * 0.6 + 0.5 * 0.6, 0.7], atol=1e-6)
    assert np.isneginf(blended[0, 2])
    only_probs = blend_scores(sims, probs, known, 1.0)
    assert np.isfinite(only_probs[0, [0, 1, 3]]).all() and np.isneginf(only_probs[0, 2])
    assert blend_scores(sims, probs, known, 0.0) is sims


def test_new_is_inserted_where_the_threshold_falls_and_unnamed_individuals_read_new():
    names = ["a", "b", "c", "d"]
    scores = np.array([[0.9, 0.5, 0.7, 0.1],    # best above the threshold: new third
                       [0.3, 0.2, 0.1, 0.0]])   # best below: new first
    labels, top = rank_with_new(scores, names, 0.6, k=4)
    assert labels.tolist() == [["a", "c", NEW_INDIVIDUAL, "b"], [NEW_INDIVIDUAL, "a", "b", "c"]]
    np.testing.assert_allclose(top[0], [0.9, 0.7, 0.6, 0.5])
    # Turtle Recall's rule: only "a" and "b" can be named; "c" at 0.7 makes new rank 2 in row 0.
    labels, _ = rank_with_new(scores, names, 0.6, k=3, nameable=["a", "b"], new_label="new_turtle")
    assert labels.tolist() == [["a", "new_turtle", "b"], ["new_turtle", "a", "b"]]
    # Fewer candidates than places: padding after them.
    labels, top = rank_with_new(np.array([[0.4, -np.inf]]), ["a", "b"], 0.2, k=4)
    assert labels.tolist() == [["a", NEW_INDIVIDUAL, "", ""]] and np.isnan(top[0, 2:]).all()
    with pytest.raises(ValueError, match="no individual may be called"):
        rank_with_new(scores, [*names[:3], NEW_INDIVIDUAL], 0.6)


def hand_made_scores():
    """Six queries over five individuals: four known (truth = code) and two new (-1)."""
    scores = np.array([
        [0.95, 0.40, 0.30, 0.20, 0.10],  # truth 0, confident
        [0.30, 0.85, 0.80, 0.20, 0.10],  # truth 1, close call
        [0.70, 0.20, 0.75, 0.10, 0.05],  # truth 0, ranked second
        [0.20, 0.10, 0.30, 0.65, 0.60],  # truth 3, low score
        [0.50, 0.45, 0.40, 0.35, 0.30],  # new
        [0.62, 0.20, 0.10, 0.55, 0.15],  # new, but a fairly high best score
    ], dtype=np.float32)
    return scores, np.array([0, 1, 0, 3, -1, -1])


@pytest.mark.parametrize("nameable", [None, np.array([True, True, False, True, True])])
def test_vectorised_map5_equals_ranking_the_labels_and_scoring_them(nameable):
    scores, truth = hand_made_scores()
    names = list("abcde")
    named = None if nameable is None else [n for n, keep in zip(names, nameable) if keep]
    truth_labels = [names[t] if t >= 0 and (named is None or names[t] in named) else NEW_INDIVIDUAL for t in truth]
    c = top_candidates(scores, truth, nameable=nameable)
    thresholds = np.array([0.0, 0.5, 0.58, 0.6, 0.63, 0.68, 0.72, 0.9, 1.0])
    fast = map5_by_threshold(c, thresholds)
    for t, value in zip(thresholds, fast):
        labels, _ = rank_with_new(scores, names, float(t), nameable=named)
        assert value == pytest.approx(mapk(truth_labels, labels.tolist(), k=5)), t


def test_threshold_search_separates_known_from_new():
    scores, truth = hand_made_scores()
    c = top_candidates(scores, truth)
    point = best_threshold(c)
    # New first for both new queries (best <= 0.62) while known queries with best >= 0.65 keep rank 1:
    # the threshold belongs in [0.62, 0.65) and then MAP@5 = (1 + 1 + 1/2 + 1 + 1 + 1) / 6.
    assert 0.62 <= point.threshold < 0.65
    assert point.map5 == pytest.approx(5.5 / 6)
    metrics = open_set_metrics(c, point.threshold)
    assert metrics["new_accuracy"] == 1.0 and metrics["known_accuracy"] == 0.75
    assert metrics["auc_known_vs_new"] == 1.0 and metrics["n_new"] == 2


def test_operating_point_search_weighs_the_classifier_by_what_it_knows():
    rng = np.random.default_rng(3)
    n, m = 300, 12
    truth = rng.integers(0, m, n)
    truth[:60] = -1  # new individuals
    informative = rng.uniform(0.0, 0.5, size=(n, m))
    rows = np.flatnonzero(truth >= 0)
    informative[rows, truth[rows]] += 0.6
    noise = rng.uniform(0.0, 1.0, size=(n, m))
    probs_good = np.exp(8 * informative) / np.exp(8 * informative).sum(axis=1, keepdims=True)
    probs_noise = noise / noise.sum(axis=1, keepdims=True)
    known = np.ones(m, bool)
    # Uninformative similarities, informative classifier: the blend leans on the classifier.
    points = search_operating_point([(noise, probs_good, truth)], known)
    chosen = max(points.values(), key=lambda p: (p.map5, -p.blend_weight))
    assert chosen.blend_weight >= 0.5 and chosen.map5 > points[0.0].map5 + 0.2
    # Informative similarities, a classifier that guesses: weight 0 is as good as any.
    points = search_operating_point([(informative, probs_noise, truth)], known)
    chosen = max(points.values(), key=lambda p: (p.map5, -p.blend_weight))
    assert chosen.blend_weight <= 0.1
    assert list(search_operating_point([(informative, None, truth)], None)) == [0.0]


def test_top_candidates_of_concatenated_trials_line_up():
    scores, truth = hand_made_scores()
    one = top_candidates(scores, truth)
    both = TopCandidates.concatenate([one, top_candidates(scores[:2], truth[:2])])
    assert both.scores.shape == (8, 5) and both.truth_rank.tolist() == [1, 1, 2, 1, 0, 0, 1, 1]


def test_individual_codes_are_sorted_ids():
    names, codes = individual_codes(["t2", "t1", "t2", "t3"])
    assert names == ["t1", "t2", "t3"] and codes.tolist() == [1, 0, 1, 2]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_are_normalised_block_by_block_as_a_whole_array_pass_would(monkeypatch, dtype):
    import photoid.core.retrieval as retrieval

    monkeypatch.setattr(retrieval, "NORMALIZE_BLOCK_ROWS", 7)  # several blocks and a partial last one
    x = np.random.default_rng(4).standard_normal((30, 9)).astype(dtype) * 5
    x[[3, 20]] = 0
    whole = x.astype(np.float32) / np.maximum(np.linalg.norm(x.astype(np.float32), axis=1, keepdims=True),
                                              np.float32(1e-12))
    got = retrieval.normalize_rows(x)
    assert got.dtype == np.float32 and np.array_equal(got, whole)
    assert not got[[3, 20]].any()
    take = np.array([29, 0, 3, 3, 14, 8, 21, 7, 6, 1])
    assert np.array_equal(retrieval.normalize_rows(x, take=take), whole[take])
    with pytest.raises(ValueError, match="2-D"):
        retrieval.normalize_rows(x[0])
