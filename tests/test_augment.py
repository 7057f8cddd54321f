"""The original's ten transforms, rebuilt without tensorflow-addons, and its augmentation draw."""

import math

import numpy as np
import pytest

import photoid  # noqa: F401
import tensorflow as tf

from photoid.records.transforms import N_TRANSFORMS, TRANSFORM_NAMES, apply_transform, diagonal_source_map, rotate_ccw, rotation_transform
from photoid.turtles.augment import augment_draw_range, draw_transform_index, random_augment


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """Odd-sized noise, so the rotation centre is a pixel and every transform visibly moves pixels."""
    return np.random.default_rng(7).integers(1, 256, size=(33, 33, 3), dtype=np.uint8)


def transform(image: np.ndarray, index: int) -> np.ndarray:
    return apply_transform(tf.constant(image), index).numpy()


def tfa_rotate_reference(image: np.ndarray, angle: float) -> np.ndarray:
    """tfa.image.rotate written out in numpy: each output pixel (x, y) takes the input pixel nearest to
    (cos*x - sin*y + x_offset, sin*x + cos*y + y_offset), rounding half away from zero, 0 outside the image."""
    h, w = image.shape[:2]
    cos, sin = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    x_offset = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / np.float32(2)
    y_offset = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / np.float32(2)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    x_in, y_in = cos * x - sin * y + x_offset, sin * x + cos * y + y_offset
    x_in, y_in = (np.sign(v) * np.floor(np.abs(v) + 0.5) for v in (x_in, y_in))
    inside = (x_in >= 0) & (x_in <= w - 1) & (y_in >= 0) & (y_in <= h - 1)
    out = np.zeros_like(image)
    out[inside] = image[y_in[inside].astype(int), x_in[inside].astype(int)]
    return out


def test_transform_list_is_the_originals():
    assert N_TRANSFORMS == 10
    assert TRANSFORM_NAMES[0] == "identity"


def test_flips_undo_themselves_and_flip_the_right_axis(image):
    assert np.array_equal(transform(image, 0), image)
    assert np.array_equal(transform(image, 1), image[:, ::-1])
    assert np.array_equal(transform(transform(image, 1), 1), image)
    assert np.array_equal(transform(image, 2), image[::-1])
    assert np.array_equal(transform(transform(image, 2), 2), image)


def test_right_angle_rotations_are_counter_clockwise(image):
    # np.rot90 with k > 0 turns counter-clockwise, as tfa.image.rotate does for positive angles.
    assert np.array_equal(transform(image, 3), np.rot90(image, 1))
    assert np.array_equal(transform(image, 4), image[::-1, ::-1])
    assert np.array_equal(transform(image, 5), np.rot90(image, 3))
    turned = image
    for _ in range(4):
        turned = transform(turned, 3)
    assert np.array_equal(turned, image)
    # The top-right corner moves to the top-left: counter-clockwise, not clockwise.
    assert np.array_equal(transform(image, 3)[0, 0], image[0, -1])


def test_rotation_matches_tensorflow_addons_formula(image):
    for angle in (math.pi / 4, 3 * math.pi / 4, 0.3):
        assert np.array_equal(rotate_ccw(tf.constant(image), angle).numpy(), tfa_rotate_reference(image, angle))


def test_rotation_transform_has_tfa_layout():
    t = rotation_transform(math.pi / 2, 4, 6).numpy()  # height 4, width 6
    # cos, -sin, x_offset, sin, cos, y_offset, 0, 0 with tfa's offsets: ((5) - (0 - 3)) / 2 and (3 - (5 + 0)) / 2
    np.testing.assert_allclose(t, [0, -1, 4, 1, 0, -1, 0, 0], atol=1e-6)


@pytest.mark.parametrize("index", [6, 7, 8, 9])
def test_diagonal_rotations_keep_the_centre_and_crop_to_70_percent(image, index):
    out = transform(image, index)
    start = int((33 - 33 * 0.7) / 2)  # tf.image.central_crop's arithmetic
    assert out.shape == (33 - 2 * start, 33 - 2 * start, 3) == (25, 25, 3)
    centre = out.shape[0] // 2
    assert np.array_equal(out[centre, centre], image[16, 16])
    angle = math.pi / 4 * (2 * (index - 6) + 1)
    assert np.array_equal(out, tfa_rotate_reference(image, angle)[start:start + 25, start:start + 25])


def test_diagonal_rotation_leaves_black_corners_before_the_crop(image):
    rotated = rotate_ccw(tf.constant(image), math.pi / 4).numpy()
    assert (rotated[0, 0] == 0).all() and (rotated[-1, -1] == 0).all()
    assert (image > 0).all()


def test_graph_index_selects_the_same_transform(image):
    select = tf.function(lambda img, i: apply_transform(img, i))
    for index in range(N_TRANSFORMS):
        assert np.array_equal(select(tf.constant(image), tf.constant(index)).numpy(), transform(image, index))


def test_out_of_range_index_is_refused(image):
    with pytest.raises(ValueError, match="0..9"):
        apply_transform(tf.constant(image), 10)
    with pytest.raises(tf.errors.InvalidArgumentError, match="above 9"):
        tf.function(lambda img, i: apply_transform(img, i))(tf.constant(image), tf.constant(10))


def draws(aug_number: int, aug_percentage: float, n: int, base_seed: int = 5, aug_draw: str = "original"
          ) -> np.ndarray:
    positions = tf.data.Dataset.range(n)
    drawn = positions.map(lambda i: draw_transform_index(aug_number, aug_percentage, aug_draw=aug_draw,
                                                         seed=tf.stack([tf.constant(base_seed, tf.int64), i])))
    return np.concatenate(list(drawn.batch(1000).as_numpy_iterator())).astype(np.int64)


def test_draws_are_half_identity_and_spread_over_the_nine_transforms():
    assert augment_draw_range(9, 0.5) == 18
    ids = draws(9, 0.5, 9000)
    counts = np.bincount(ids, minlength=N_TRANSFORMS)
    assert counts.sum() == 9000 and ids.max() <= 9
    assert abs(counts[0] / 9000 - 0.5) < 0.02
    # each transform 1/18 = 500 expected; 5 standard deviations is about 110
    assert (np.abs(counts[1:] - 500) < 110).all(), counts


def test_fewer_transforms_change_the_draw_range_as_the_original_did():
    # Draw range round(3 / 0.75) = 4, and ids 0..3 are transforms 1..4 (the original's code): never identity.
    counts = np.bincount(draws(3, 0.75, 4000), minlength=N_TRANSFORMS)
    assert counts[0] == 0 and counts[5:].sum() == 0
    assert (np.abs(counts[1:5] / 4000 - 0.25) < 0.03).all(), counts
    assert set(draws(1, 0.5, 400)) == {1, 2}  # aug_number 1: always a flip, left-right or up-down
    assert (draws(9, 1.0, 500) > 0).all()  # percentage 1: always augmented


def test_first_draw_applies_only_the_first_transforms():
    ids = draws(3, 0.75, 4000, aug_draw="first")  # range 4: transforms 1..3 and identity, a quarter each
    counts = np.bincount(ids, minlength=N_TRANSFORMS)
    assert counts[4:].sum() == 0
    assert (np.abs(counts[:4] / 4000 - 0.25) < 0.03).all(), counts
    flips = draws(1, 0.5, 2000, aug_draw="first")  # the whale recipes: a left-right flip half the time
    assert set(flips) == {0, 1} and abs(flips.mean() - 0.5) < 0.05


def test_seeded_draws_repeat_and_differ_between_seeds():
    assert np.array_equal(draws(9, 0.5, 200, base_seed=1), draws(9, 0.5, 200, base_seed=1))
    assert not np.array_equal(draws(9, 0.5, 200, base_seed=1), draws(9, 0.5, 200, base_seed=2))


def test_random_augment_applies_the_drawn_transform(image):
    seed = tf.constant([3, 11], tf.int64)
    index = int(draw_transform_index(9, 1.0, seed=seed))
    assert np.array_equal(random_augment(tf.constant(image), 9, 1.0, seed=seed).numpy(), transform(image, index))
    assert np.array_equal(random_augment(tf.constant(image), 0, 0.5).numpy(), image)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="aug_number"):
        augment_draw_range(10, 0.5)
    with pytest.raises(ValueError, match="aug_percentage"):
        augment_draw_range(9, 0.0)


def kernel_transform(image: np.ndarray, index: int) -> np.ndarray:
    """Transform `index` the way tfa did it: the rotation kernel on the whole image, then the crop."""
    eighths = {3: 2, 4: 4, 5: 6, 6: 1, 7: 3, 8: 5, 9: 7}[index]
    rotated = rotate_ccw(tf.constant(image), math.pi / 4 * eighths)
    return (tf.image.central_crop(rotated, 0.7) if index >= 6 else rotated).numpy()


@pytest.mark.parametrize("side", [33, 64, 255, 512])
def test_fast_rotations_give_the_kernels_pixels_on_square_images(side):
    # Even sides put sample positions on half pixels, where a re-derived formula rounds differently from the kernel
    # (tried: hundreds of pixels differ at 512); the reader's routes must not.
    image = np.random.default_rng(side).integers(1, 256, size=(side, side, 3), dtype=np.uint8)
    for index in range(3, N_TRANSFORMS):
        assert np.array_equal(transform(image, index), kernel_transform(image, index)), TRANSFORM_NAMES[index]


def test_rotations_of_unknown_or_oblong_shapes_use_the_kernel():
    image = np.random.default_rng(3).integers(1, 256, size=(20, 30, 3), dtype=np.uint8)
    for index in range(3, N_TRANSFORMS):
        # tfa kept the canvas: a quarter turn of a 20 x 30 image stays 20 x 30, with black bars.
        assert np.array_equal(transform(image, index), kernel_transform(image, index)), TRANSFORM_NAMES[index]
    assert transform(image, 3).shape == (20, 30, 3)
    square = np.random.default_rng(4).integers(1, 256, size=(40, 40, 3), dtype=np.uint8)
    unknown = tf.function(lambda img, i: apply_transform(img, i),
                          input_signature=[tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([], tf.int32)])
    for index in range(N_TRANSFORMS):
        assert np.array_equal(unknown(tf.constant(square), tf.constant(index)).numpy(), transform(square, index))


def test_diagonal_source_map_marks_the_fill_and_is_built_inside_tf_data():
    source = diagonal_source_map(33, 1)
    assert source.shape == (25, 25) and source.min() >= 0 and source.max() <= 33 * 33
    assert source[12, 12] == 16 * 33 + 16 + 1  # the centre pixel samples itself
    image = np.random.default_rng(5).integers(1, 256, size=(48, 48, 3), dtype=np.uint8)
    ds = tf.data.Dataset.from_tensors(tf.constant(image)).map(lambda img: apply_transform(img, tf.constant(8)))
    assert np.array_equal(next(iter(ds)).numpy(), kernel_transform(image, 8))
