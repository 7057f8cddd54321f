"""The paired reader: two photos of one individual per example, from a fold's records and their partners.

A task that writes `pair.K.tfrecord` beside `fold.K.tfrecord`, row for row (Where's Whale-do's lateral model:
`photoid whale-records --pair_lateral`, pairs drawn by `photoid.whales.pairs`), trains on both views at once with
`paired = true`.
"""

from __future__ import annotations

import secrets
from typing import Sequence

from photoid.core import fs
from photoid.core.errors import PhotoidError


def pair_files(fold_files: Sequence[str]) -> list[str]:
    """The lateral partners' shards of the given `fold.K` shards, in the same order."""
    paired = []
    for path in fold_files:
        folder, name = str(path).rsplit("/", 1) if "/" in str(path) else ("", str(path))
        if not name.startswith("fold."):
            raise PhotoidError(f"{path}: not a fold record shard")
        paired.append(f"{folder}/pair.{name[len('fold.'):]}" if folder else f"pair.{name[len('fold.'):]}")
    missing = [p for p in paired if not fs.exists(p)]
    if missing:
        raise PhotoidError(f"{missing[0]} is missing: a paired recipe needs records written by photoid "
                           "whale-records --pair_lateral")
    return paired


def build_paired_dataset(files: Sequence[str], *, dim: int, dim_pre: int, batch_size: int, training: bool,
                         aug_number: int = 1, aug_percentage: float = 0.5, aug_draw: str = "original",
                         buffer_size: int = 256, cache: bool = False, seed: int | None = None,
                         augment: str = "original", skip: int = 0):
    """Batches of ((top, lateral, label), (label, label)) from the fold shards `files` and their partners.

    The two record sets are read in step (files in order, never interleaved, so row k of one is row k of the
    other); training then shuffles the pairs and augments each photo with its own seeded draw. `skip` (training)
    starts the stream after that many pairs, with the draws they would have had there: a resumed fold continues
    the stream of the run that was killed (the skipped pairs are still read and decoded).
    """
    import tensorflow as tf

    from photoid.records.folder import IMAGE_FEATURE
    from photoid.records.reader import (
        AUTOTUNE,
        augmentation,
        batch_after_map,
        decode_image,
        feature_spec,
        finish_image,
    )

    spec = feature_spec(string_columns=(), int_columns=("label",))
    base_seed = seed if seed is not None else secrets.randbits(31)

    def parse(serialized):
        example = tf.io.parse_single_example(serialized, spec)
        return decode_image(example[IMAGE_FEATURE], dim_pre), tf.cast(example["label"], tf.int32)

    tops = tf.data.TFRecordDataset(list(files)).map(parse, num_parallel_calls=AUTOTUNE)
    laterals = tf.data.TFRecordDataset(pair_files(files)).map(parse, num_parallel_calls=AUTOTUNE)

    def join(top, lateral):
        # A partner written for another row would be a silent mislabelling: refuse it.
        check = tf.debugging.assert_equal(top[1], lateral[1], message="paired records out of step: rebuild them")
        with tf.control_dependencies([check]):
            return top[0], lateral[0], tf.identity(top[1])

    ds = tf.data.Dataset.zip((tops, laterals)).map(join, num_parallel_calls=AUTOTUNE)
    if cache:
        ds = ds.cache()
    if training:
        ds = ds.repeat()
        if buffer_size:
            ds = ds.shuffle(buffer_size, seed=base_seed, reshuffle_each_iteration=True)
        ds = ds.skip(skip)

    augment_one = augmentation(augment, aug_number, aug_percentage, aug_draw) if training else None

    def finish(position, element):
        top, lateral, label = element
        if training:
            base = tf.constant(base_seed, tf.int64)
            top = augment_one(top, tf.stack([base, 2 * position]))
            lateral = augment_one(lateral, tf.stack([base, 2 * position + 1]))
        return (finish_image(top, dim), finish_image(lateral, dim), label), (label, label)

    ds = ds.enumerate(start=skip if training else 0).map(finish, num_parallel_calls=AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    return batch_after_map(ds, batch_size, drop_remainder=False, every_batch_full=training).with_options(
        options).prefetch(AUTOTUNE)
