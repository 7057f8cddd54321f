"""photoid.local: features of a prepared photo, pair scores, calibration, the VLAD descriptor and the drawing."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from photoid.core.errors import PhotoidError
from photoid.local.calibration import Calibrator, fit_calibrator, fuse
from photoid.local.drawing import render_matches, strength_colour
from photoid.local.features import (
    MIN_KEYPOINTS,
    FeatureSet,
    Settings,
    extract,
    photo_features,
    prepared_grey,
)
from photoid.local.matching import match_many, match_pair, tentative_matches, tentative_matches_many
from photoid.local.vocabulary import learn_vocabulary


def spots(seed: int, width: int = 320, height: int = 240) -> np.ndarray:
    """A grey photo of random blobs and bars (textured enough for SIFT), uint8 (height, width)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.full((height, width), 90.0)
    for _ in range(200):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(2, 9)
        image += rng.uniform(-90, 90) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
    return np.clip(image, 0, 255).astype(np.uint8)


def warp(image: np.ndarray, angle: float, scale: float) -> np.ndarray:
    import cv2

    h, w = image.shape
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    return cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REFLECT)


@pytest.fixture(scope="module")
def pair():
    base = spots(1)
    return extract(base), extract(warp(base, 25, 0.85)), extract(spots(2))


def test_a_photo_is_prepared_as_the_run_prepares_it(tmp_path):
    from photoid.records.writer import prepare_image_bytes

    rng = np.random.default_rng(0)
    wide = (rng.random((60, 100, 3)) * 255).astype(np.uint8)
    wide[:, :20] = 255  # an asymmetric mark, so a wrong turn or mirror cannot pass
    path = tmp_path / "wide.png"
    Image.fromarray(wide).save(path)
    for mirror in (False, True):
        settings = Settings(working_size=100, rotate_wide=True, mirror_right=True)
        ours = prepared_grey(path, settings, "right" if mirror else "left")
        records = np.asarray(Image.open(io.BytesIO(prepare_image_bytes(path, 100, "compact", mirror=mirror,
                                                                       rotate_wide=True))).convert("L"))
        assert ours.shape == (100, 60)  # turned upright, the aspect kept (the records squash it to 100 x 100)
        squashed = np.asarray(Image.fromarray(ours).resize((100, 100), Image.Resampling.BILINEAR), dtype=float)
        assert np.abs(squashed - records).mean() < 12
    # A tall photo is never turned; the working size only ever shrinks a photo.
    assert prepared_grey(path, Settings(working_size=512), None).shape == (60, 100)
    assert prepared_grey(path, Settings(working_size=50), None).shape == (30, 50)


def test_features_are_capped_compact_and_a_blank_or_tiny_photo_gets_a_note(tmp_path):
    features = extract(spots(3, 480, 360), Settings(max_keypoints=50))
    assert MIN_KEYPOINTS <= len(features) <= 50 and features.descriptors.dtype == np.uint8 and features.note is None
    for image, reason in ((np.full((200, 200), 128, np.uint8), "blank"), (spots(4, 12, 10), "too small")):
        empty = extract(image)
        assert len(empty) == 0 and not empty.usable and reason in empty.note
    Image.new("RGB", (300, 200), (255, 255, 255)).save(tmp_path / "white.jpg")
    assert "blank" in photo_features(tmp_path / "white.jpg").note
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a photo")
    with pytest.raises(PhotoidError, match="broken.jpg: cannot be read as an image"):
        photo_features(tmp_path / "broken.jpg")
    packed = FeatureSet.pack(["a", "b"], [features, extract(np.full((50, 50), 7, np.uint8))])
    assert packed.xy.dtype == np.float16 and packed.descriptors.dtype == np.uint8
    assert packed.bytes_per_photo == pytest.approx((len(features) * 132 + 3 * 8 + 2 * 8) / 2)
    back = packed.get("a")
    assert np.array_equal(back.descriptors, features.descriptors)
    assert np.abs(back.xy - features.xy).max() <= 0.25  # float16 at a few hundred pixels
    assert packed.get("b").note and packed.get("c") is None
    joined = FeatureSet.join(packed, FeatureSet.pack(["c"], [features]))
    assert list(joined.image_ids) == ["a", "b", "c"] and list(joined.select(["c", "a", "x"]).image_ids) == ["c", "a"]


def test_a_pair_scores_its_verified_inliers_the_same_every_time(pair):
    base, turned, other = pair
    for method in ("homography", "affine"):
        same = match_pair(base, turned, method=method)
        again = match_pair(base, turned, method=method)
        different = match_pair(base, other, method=method)
        assert same.inliers >= 20 and different.inliers < same.inliers / 3
        assert same.inliers == len(same.query_index) == len(same.candidate_index) == len(same.strength)
        assert np.array_equal(same.query_index, again.query_index) and np.array_equal(same.strength, again.strength)
        assert same.tentative >= same.inliers and np.all((same.strength > 0) & (same.strength <= 1))
        # The inliers are mutual nearest neighbours: each query keypoint and each candidate keypoint at most once.
        assert len(set(same.query_index)) == len(set(same.candidate_index)) == same.inliers
    blank = extract(np.full((100, 100), 0, np.uint8))
    match = match_pair(blank, base)
    assert match.inliers == 0 and "blank" in match.note


def mutual_ratio_matches(query: np.ndarray, candidate: np.ndarray, ratio: float = 0.8) -> tuple[list, list]:
    """The ratio test and the mutual check written out row by row: (query rows, candidate rows) that pass."""
    similarity = query @ candidate.T
    kept = ([], [])
    for i, row in enumerate(similarity):
        first, second = np.argsort(-row, kind="stable")[:2]  # ties: the first column, as argmax
        d1, d2 = np.sqrt(max(0.0, 2 - 2 * float(row[first]))), np.sqrt(max(0.0, 2 - 2 * float(row[second])))
        if d2 > 0 and d1 / d2 < ratio and np.argmax(similarity[:, first]) == i:
            kept[0].append(i)
            kept[1].append(int(first))
    return kept


def test_a_query_matched_with_many_candidates_at_once_gets_each_pairs_own_matches(pair, monkeypatch):
    from photoid.local import matching
    from photoid.local.features import rootsift

    base, turned, other = pair
    photos = [turned, other, extract(warp(spots(1), -10, 1.1)), extract(spots(5)), base]
    roots = [rootsift(p.descriptors) for p in photos]
    query = rootsift(base.descriptors)
    candidates = [roots[0], roots[1][:1], roots[2], np.zeros((0, 128), np.float32), roots[3], roots[4], roots[1]]
    alone = [tentative_matches(query, c) for c in candidates]
    for at_once in (matching.SIMILARITIES_AT_ONCE, 1, len(query) * 300):  # one block, one pair each, a few
        monkeypatch.setattr(matching, "SIMILARITIES_AT_ONCE", at_once)
        together = tentative_matches_many(query, candidates)
        for candidate, mine, reference in zip(candidates, together, alone):
            for got, expected in zip(mine, reference):
                assert np.array_equal(got, expected) and got.dtype == expected.dtype
            if len(candidate) >= 2:
                assert (mine[0].tolist(), mine[1].tolist()) == mutual_ratio_matches(query, candidate)
            else:
                assert len(mine[0]) == 0  # one keypoint has no second nearest
    assert len(together[0][0]) >= 20 and len(together[5][0]) == len(query)  # itself: every keypoint
    many = match_many(base, photos)
    for photo, match in zip(photos, many):
        one = match_pair(base, photo)
        assert np.array_equal(match.query_index, one.query_index) and np.array_equal(match.strength, one.strength)
        assert match.tentative == one.tentative


def test_calibration_is_strictly_increasing_even_beyond_its_pairs_and_survives_json():
    rng = np.random.default_rng(0)
    same = rng.random(2000) < 0.3
    scores = np.where(same, rng.normal(30, 10, 2000), rng.normal(8, 5, 2000)).round()
    grid = np.linspace(-50, 200, 4001)
    for kind in ("isotonic", "logistic"):
        calibrator = fit_calibrator(scores, same, kind, log_count=True)
        p = calibrator(grid)
        assert np.all(np.diff(p) > 0) and p.min() > 0 and p.max() < 1
        assert calibrator(5.0) < 0.3 < calibrator(40.0)
        restored = Calibrator.from_json(calibrator.to_json())
        assert np.array_equal(restored(grid), p)
    # A plain isotonic fit ties scores on one step; the calibrated curve keeps them ordered.
    from sklearn.isotonic import IsotonicRegression

    steps = IsotonicRegression(out_of_bounds="clip").fit(scores, same).predict(grid)
    assert len(np.unique(steps)) < len(grid) / 10
    constant = fit_calibrator(np.ones(10), np.array([True, False] * 5))
    assert constant(0.0) < constant(1.0) < constant(2.0)
    assert fuse({"a": np.array([0.2]), "b": np.array([0.8])}, {"a": 1.0, "b": 3.0}) == pytest.approx([0.65])
    assert fuse({"a": np.array([0.2]), "b": np.array([0.8])}, {"a": 1.0, "b": 0.0}) == pytest.approx([0.2])


def test_vlad_rows_are_unit_and_find_the_same_photo_first():
    photos = [extract(spots(seed)) for seed in range(8)]
    turned = [extract(warp(spots(seed), 15, 0.9)) for seed in range(8)]
    vocabulary = learn_vocabulary(photos + turned, clusters=16, pca_dim=8)
    # 16 photos are too few to learn 8 directions that fit new photos (10 per direction): the VLADs stay whole.
    assert vocabulary.dim == vocabulary.words.size
    assert learn_vocabulary(photos + turned, clusters=16, pca_dim=1).dim == 1
    described = vocabulary.describe(photos)
    assert described.shape == (8, vocabulary.dim) and np.allclose(np.linalg.norm(described, axis=1), 1, atol=1e-5)
    queries = vocabulary.describe(turned)
    assert (np.argmax(queries @ described.T, axis=1) == np.arange(8)).mean() >= 0.75
    restored = type(vocabulary).from_bytes(vocabulary.to_bytes())
    assert np.array_equal(restored.describe(photos), described)
    assert not vocabulary.describe([extract(np.zeros((64, 64), np.uint8))]).any()  # no keypoints: a zero row


def test_the_drawing_shows_exactly_the_counted_inliers(pair):
    base, turned, _ = pair
    match = match_pair(base, turned)
    query, candidate = np.zeros((240, 320), np.uint8), np.zeros((240, 320), np.uint8)
    canvas, segments = render_matches(query, candidate, base.xy[match.query_index],
                                      turned.xy[match.candidate_index], match.strength)
    assert len(segments) == match.inliers
    pixels = np.asarray(canvas)
    scale = 360 / 240
    order = np.argsort(match.strength, kind="stable")
    for segment, k in zip(segments, order):
        qx, qy = base.xy[match.query_index[k]]
        cx, cy = turned.xy[match.candidate_index[k]]
        assert segment == pytest.approx((qx * scale, 34 + qy * scale, 320 * scale + 12 + cx * scale,
                                         34 + cy * scale), abs=1e-3)
    # Every coloured pixel of the photos' area lies on a drawn match (on black photos nothing else is coloured).
    photos = pixels[34:]
    coloured = np.argwhere(photos.max(axis=2) - photos.min(axis=2) > 60)
    assert len(coloured) > 0
    lines = np.array([[s[0], s[1] - 34, s[2], s[3] - 34] for s in segments])
    a, b, p = lines[:, None, :2], lines[:, None, 2:], coloured[None, :, ::-1].astype(float)
    t = np.clip(((p - a) * (b - a)).sum(-1) / np.maximum(((b - a) ** 2).sum(-1), 1e-9), 0, 1)
    distance = np.linalg.norm(a + t[..., None] * (b - a) - p, axis=-1).min(axis=0)
    assert distance.max() < 5
    assert strength_colour(0.0) == (255, 0, 0) and strength_colour(1.0)[1] > strength_colour(1.0)[0]
