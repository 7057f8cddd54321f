"""The Turtle Recall original's training augmentation: one of the reader's nine transforms drawn per image.

The original drew `aug_id` uniformly in [0, round(aug_number / aug_percentage)) = [0, 18) with its defaults: ids 0..8
apply transforms 1..9 of `photoid.records.transforms.TRANSFORM_NAMES` (1/18 each) and ids 9..17 leave the image as
it is. The transforms themselves, shared with every task's TTA, are `photoid.records.transforms`'.
"""

from __future__ import annotations

import tensorflow as tf

from photoid.records.transforms import N_TRANSFORMS, apply_transform


def augment_draw_range(aug_number: int, aug_percentage: float) -> int:
    """Upper bound (exclusive) of the original's augmentation draw: round(aug_number / aug_percentage).

    With the defaults 9 and 0.5 the draw is in [0, 18): ids 0..8 apply transforms 1..9 (1/18 each) and ids 9..17
    leave the image unchanged, so half the images are seen as they are.
    """
    if not 0 <= aug_number < N_TRANSFORMS:
        raise ValueError(f"aug_number must be in 0..{N_TRANSFORMS - 1}, got {aug_number}")
    if not 0 < aug_percentage <= 1:
        raise ValueError(f"aug_percentage must be in (0, 1], got {aug_percentage}")
    return round(aug_number / aug_percentage)


AUG_DRAWS = ("original", "first")  # how a drawn id maps to a transform, see `draw_transform_index`


def draw_transform_index(aug_number: int, aug_percentage: float, seed: tf.Tensor | None = None,
                         aug_draw: str = "original") -> tf.Tensor:
    """Draw which transform one training image gets (0 = identity), as an int32 scalar tensor.

    The id is drawn in [0, round(aug_number / aug_percentage)). `original`: ids 0..8 apply transforms 1..9 whatever
    `aug_number` is, as the original's code did (so aug_number 1 at 0.5 draws 0 or 1: always a flip, left-right or
    up-down). `first`: ids below `aug_number` apply transforms 1..aug_number, so aug_number 1 at 0.5 flips left to
    right half the time (Where's Whale-do's winner).

    `seed` is a stateless seed (int tensor of shape [2]); with it the draw is a pure function of the seed, which is
    how the reader makes augmentation reproducible. Without it the draw uses TensorFlow's global random state.
    """
    if aug_draw not in AUG_DRAWS:
        raise ValueError(f"aug_draw must be one of {AUG_DRAWS}, got {aug_draw!r}")
    maxval = augment_draw_range(aug_number, aug_percentage)
    if aug_number == 0:
        return tf.constant(0, tf.int32)
    if seed is None:
        aug_id = tf.random.uniform([], minval=0, maxval=maxval, dtype=tf.int32)
    else:
        aug_id = tf.random.stateless_uniform([], seed=seed, minval=0, maxval=maxval, dtype=tf.int32)
    applied = N_TRANSFORMS - 1 if aug_draw == "original" else aug_number
    return tf.where(aug_id < applied, aug_id + 1, 0)


def random_augment(image: tf.Tensor, aug_number: int = 9, aug_percentage: float = 0.5,
                   seed: tf.Tensor | None = None, aug_draw: str = "original") -> tf.Tensor:
    """The original's training augmentation: one transform drawn by `draw_transform_index`, applied to `image`.

    `aug_number` = 0 returns the image untouched.
    """
    if aug_number == 0:
        augment_draw_range(aug_number, aug_percentage)  # still refuse a nonsensical percentage
        return image
    return apply_transform(image, draw_transform_index(aug_number, aug_percentage, seed, aug_draw))


def _augment(image: tf.Tensor, seed: tf.Tensor, *, aug_number: int, aug_percentage: float, aug_draw: str) -> tf.Tensor:
    return random_augment(image, aug_number, aug_percentage, seed=seed, aug_draw=aug_draw)


# The augmentation a recipe names (`augment = "original"`), as the registry (photoid.tasks) hands it to the reader.
AUGMENTATIONS = {"original": _augment}
