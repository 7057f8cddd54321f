"""The ten image transforms of the reader: test-time augmentation (TTA) for every task, without tensorflow-addons.

They are the Turtle Recall original's: identity, horizontal flip, vertical flip, rotation by 90, 180 or 270 degrees,
or rotation by 45, 135, 225 or 315 degrees followed by a central crop keeping 70% of the side. TTA index t applies
entry t of `TRANSFORM_NAMES` (the Where's Whale-do flip TTA is entry 1); the original's training augmentation, which
draws one of them per image, is `photoid.turtles.augment`.
Rotations were `tfa.image.rotate` (counter-clockwise, nearest neighbour, constant fill 0). tensorflow-addons no
longer imports on current TensorFlow, so `rotate_ccw` rebuilds it from the same kernel it called,
`ImageProjectiveTransformV3`, with the same matrix computed the same way in float32: the pixels are identical.

That kernel works out a sample position per output pixel (about 9 ms for a 512 px image on one core), so on square
images of a size known while tracing (the reader's `dim_pre` images always are) the rotations take cheaper routes to
the very same pixels: quarter turns are `tf.image.rot90`, and the 45-degree family gathers only the pixels the
crop keeps, through a map of source pixels that the kernel itself computes once per size and angle
(`diagonal_source_map`), so ties in rounding fall exactly as tfa's do. Tests hold both routes to the kernel's
output.

All transforms take and return uint8 HxWx3 images (the original augmented uint8 images at `dim_pre`). The 45-degree
family returns a smaller image (the crop); the reader resizes to `dim` afterwards.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import tensorflow as tf

# Entry t of this list is TTA index t and training augmentation id t - 1 (identity has no augmentation id).
TRANSFORM_NAMES: tuple[str, ...] = (
    "identity", "flip_left_right", "flip_up_down", "rotate_90", "rotate_180", "rotate_270",
    "rotate_45_crop", "rotate_135_crop", "rotate_225_crop", "rotate_315_crop",
)
N_TRANSFORMS = len(TRANSFORM_NAMES)
# The original's tf.image.central_crop fraction after a 45-degree-family rotation: it cuts away most of the
# black corners the rotation leaves.
CROP_FRACTION = 0.7


def rotation_transform(angle: float, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """The 8-number projective transform that rotates an image counter-clockwise by `angle` radians about its centre.

    It maps each *output* pixel (x, y) to the input pixel it samples, as `ImageProjectiveTransformV3` expects; the
    formula and float32 arithmetic are those of tensorflow-addons' `angles_to_projective_transforms`, so the
    rounding of sample positions, and therefore the chosen pixels, match the original exactly.
    """
    angle = tf.constant(angle, dtype=tf.float32)
    height = tf.cast(height, tf.float32)
    width = tf.cast(width, tf.float32)
    cos, sin = tf.math.cos(angle), tf.math.sin(angle)
    x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2.0
    y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2.0
    zero = tf.zeros([], tf.float32)
    return tf.stack([cos, -sin, x_offset, sin, cos, y_offset, zero, zero])


def rotate_ccw(image: tf.Tensor, angle: float) -> tf.Tensor:
    """Rotate an HxWxC image counter-clockwise by `angle` radians, keeping its size (tfa.image.rotate's defaults).

    Nearest-neighbour sampling; pixels that come from outside the image are 0.
    """
    shape = tf.shape(image)
    transform = rotation_transform(angle, shape[0], shape[1])
    rotated = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[tf.newaxis],
        transforms=transform[tf.newaxis],
        output_shape=shape[:2],
        fill_value=tf.constant(0.0, tf.float32),
        interpolation="NEAREST",
        fill_mode="CONSTANT",
    )
    return tf.ensure_shape(rotated[0], image.shape)


def _static_square_side(image: tf.Tensor) -> int | None:
    """The side of `image` if the graph knows it is square, else None."""
    height, width = image.shape[0], image.shape[1]
    return height if height is not None and height == width else None


def _quarter_turn(image: tf.Tensor, turns: int) -> tf.Tensor:
    """Rotate counter-clockwise by `turns` x 90 degrees, as `rotate_ccw` would.

    On a square image tfa's sample positions are whole pixels (the cosine's float32 error is far below half a
    pixel), so `tf.image.rot90` gives the same pixels about 4x faster. A non-square image keeps tfa's behaviour:
    the same canvas, with black bars where the turned image does not reach.
    """
    if _static_square_side(image) is not None:
        return tf.image.rot90(image, turns)
    return rotate_ccw(image, _QUARTER * 2 * turns)


def _crop_box(side: int) -> tuple[int, int]:
    """(offset, size) of tf.image.central_crop(image, CROP_FRACTION) on a side of `side` pixels."""
    offset = int((side - side * CROP_FRACTION) / 2)
    return offset, side - 2 * offset


@functools.lru_cache(maxsize=32)
def diagonal_source_map(side: int, eighths: int) -> np.ndarray:
    """For a `side` x `side` image rotated by `eighths` x 45 degrees and centrally cropped: the flat index + 1 of the
    source pixel of each output pixel, or 0 where the rotation brings in the black fill.

    The map comes from the rotation kernel itself, applied to an image whose pixels hold their own index + 1, so
    the sample positions, and their rounding, are exactly the kernel's. It is computed eagerly once per size and
    angle, also while tf.data traces a map function.
    """
    if side * side >= np.iinfo(np.int32).max:
        raise ValueError(f"image side {side} is too large for an int32 pixel map")
    with tf.init_scope(), tf.device("/CPU:0"):
        indices = tf.reshape(tf.range(1, side * side + 1, dtype=tf.int32), [side, side, 1])
        rotated = rotate_ccw(indices, _QUARTER * eighths)
        offset, size = _crop_box(side)
        return rotated[offset:offset + size, offset:offset + size, 0].numpy()


def _rotate_and_crop(image: tf.Tensor, eighths: int) -> tf.Tensor:
    """Rotate counter-clockwise by `eighths` x 45 degrees, then central crop to CROP_FRACTION (the original's way)."""
    side = _static_square_side(image)
    if side is None:
        return tf.image.central_crop(rotate_ccw(image, _QUARTER * eighths), CROP_FRACTION)
    channels = image.shape[2] if image.shape.rank == 3 and image.shape[2] is not None else tf.shape(image)[2]
    # Row 0 is the black fill; row i + 1 is source pixel i.
    pixels = tf.concat([tf.zeros([1, channels], image.dtype), tf.reshape(image, [side * side, channels])], axis=0)
    return tf.gather(pixels, diagonal_source_map(side, eighths))


_QUARTER = math.pi / 4
# Same order as TRANSFORM_NAMES.
_TRANSFORMS = (
    lambda image: image,
    tf.image.flip_left_right,
    tf.image.flip_up_down,
    lambda image: _quarter_turn(image, 1),
    lambda image: _quarter_turn(image, 2),
    lambda image: _quarter_turn(image, 3),
    lambda image: _rotate_and_crop(image, 1),
    lambda image: _rotate_and_crop(image, 3),
    lambda image: _rotate_and_crop(image, 5),
    lambda image: _rotate_and_crop(image, 7),
)


def apply_transform(image: tf.Tensor, index: int | tf.Tensor) -> tf.Tensor:
    """Apply transform `index` (0..9, see TRANSFORM_NAMES) to a uint8 HxWx3 image.

    A Python int picks the transform while tracing; an int32 tensor (e.g. a random draw inside tf.data) selects it
    in the graph with `tf.switch_case`. The result's height and width are then unknown to the graph, because the
    45-degree family crops.
    """
    if isinstance(index, int):
        if not 0 <= index < N_TRANSFORMS:
            raise ValueError(f"transform index must be in 0..{N_TRANSFORMS - 1}, got {index}")
        return _TRANSFORMS[index](image)
    index = tf.convert_to_tensor(index, dtype=tf.int32)
    # switch_case runs its last branch for an out-of-range index; refuse instead of silently cropping.
    checks = [
        tf.debugging.assert_greater_equal(index, 0, message="transform index below 0"),
        tf.debugging.assert_less(index, N_TRANSFORMS, message=f"transform index above {N_TRANSFORMS - 1}"),
    ]
    with tf.control_dependencies(checks):
        index = tf.identity(index)
    return tf.switch_case(index, [lambda fn=fn: fn(image) for fn in _TRANSFORMS])
