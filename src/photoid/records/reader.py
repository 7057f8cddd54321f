"""The one tf.data reader of TFRecords, for training, validation, prediction and single images.

Per image, as in the original: decode the JPEG (`INTEGER_ACCURATE` DCT) -> bilinear resize to `dim_pre` x `dim_pre`
(aspect not kept) -> cast to uint8 -> training augmentation or one TTA transform -> resize to `dim` x `dim` ->
float32 / 255. Records of the exact layout hold the result of the first three steps, computed once when they were
written, so their reader starts at the augmentation. `preprocess_image_bytes` is that chain for one image; the
reader runs the same functions, so a photo identified alone gets exactly the tensor it would get from the records.

Order: without training, records come file by file in the given order, each file's records in written order, so
predictions line up with folds.csv. With training, files are shuffled and read in parallel, and records go through
a shuffle buffer; with `seed` set, the shuffles and every augmentation draw are fixed (stateless random ops keyed
by the seed and the element's position), so two runs give identical batches.
"""

from __future__ import annotations

import functools
import os
import secrets
from typing import Sequence

import tensorflow as tf

from photoid.core.errors import PhotoidError
from photoid.records.folder import IMAGE_FEATURE, RecordsDir
from photoid.records.transforms import N_TRANSFORMS, apply_transform
from photoid.tasks import get_augmentation

AUTOTUNE = tf.data.AUTOTUNE
JPEG_START = b"\xff\xd8"


def feature_spec(string_columns: Sequence[str], int_columns: Sequence[str]) -> dict:
    """The tf.train.Example features of a record: the JPEG `image` plus the named string and int64 columns.

    The writer serialises exactly these features and readers parse with this spec (or a subset of it).
    """
    spec = {IMAGE_FEATURE: tf.io.FixedLenFeature([], tf.string)}
    spec.update({name: tf.io.FixedLenFeature([], tf.string) for name in string_columns})
    spec.update({name: tf.io.FixedLenFeature([], tf.int64) for name in int_columns})
    return spec


def decode_and_resize(jpeg_bytes: tf.Tensor, dim_pre: int) -> tf.Tensor:
    """JPEG bytes -> uint8 dim_pre x dim_pre x 3, as the original: accurate integer DCT, bilinear resize, truncation."""
    image = tf.io.decode_jpeg(jpeg_bytes, channels=3, dct_method="INTEGER_ACCURATE")
    image = tf.image.resize(image, [dim_pre, dim_pre], method="bilinear")
    # A float -> uint8 cast truncates; the original's models were trained on exactly these values.
    return tf.cast(tf.reshape(image, [dim_pre, dim_pre, 3]), tf.uint8)


@functools.lru_cache(maxsize=None)
def compiled_decode_and_resize(dim_pre: int):
    """`decode_and_resize` traced once per size (records of the exact layout call it once per photo)."""
    return tf.function(lambda jpeg_bytes: decode_and_resize(jpeg_bytes, dim_pre))


def decode_image(data: tf.Tensor, dim_pre: int) -> tf.Tensor:
    """A record's image bytes -> the uint8 dim_pre x dim_pre x 3 image the original's reader made before augmenting.

    JPEG bytes (the original and compact layouts) go through `decode_and_resize`. Anything else is the exact
    layout's serialised tensor, already that image: a JPEG starts with FF D8 and a serialised tensor with its
    dtype field (byte 08), so the first bytes tell them apart.
    """
    data = tf.convert_to_tensor(data, tf.string)
    is_jpeg = tf.equal(tf.strings.substr(data, 0, 2), JPEG_START)
    image = tf.cond(is_jpeg, lambda: decode_and_resize(data, dim_pre), lambda: tf.io.parse_tensor(data, tf.uint8))
    return tf.reshape(image, [dim_pre, dim_pre, 3])


def finish_image(image: tf.Tensor, dim: int, inverted: bool = False, scale: float | tf.Tensor = 255.0) -> tf.Tensor:
    """uint8 image of any size (the 45-degree transforms crop) -> float32 dim x dim x 3 in [0, 1].

    `inverted` gives (255 - x) / 255, as the original's `image_inverted`. `scale` is 255; a compiled caller
    passes it as a tensor argument (see `photoid.runs.loaded`), because a tf.function's graph optimiser turns a division by
    a constant into a multiplication by its reciprocal, which rounds a third of the values one float step
    differently from tf.data's map (the original's reader).

    An image already dim x dim skips the resize: bilinear resizing to the same size samples every pixel at its own
    centre, so it would return the same values at the cost of a resize (graphs after a drawn transform cannot
    know the size while tracing, so the check runs per image).
    """
    shape = tf.shape(image)
    # Cast first: the resize kernel converts each uint8 pixel to float before interpolating, so it computes the
    # very same values from float pixels, but loads them with vector instructions (half the time of a 512 px
    # resize; the 45-degree transforms and every dim other than dim_pre need one).
    image = tf.cast(image, tf.float32)
    image = tf.cond(tf.logical_and(shape[0] == dim, shape[1] == dim),
                    lambda: image,
                    lambda: tf.image.resize(image, [dim, dim], method="bilinear"))
    image = tf.reshape(image, [dim, dim, 3])
    return (255.0 - image if inverted else image) / scale


def preprocess_image_bytes(data: bytes | tf.Tensor, dim: int, dim_pre: int, tta: int = 0,
                           inverted: bool = False, scale: float | tf.Tensor = 255.0) -> tf.Tensor:
    """One photo's model input: decode, resize to dim_pre, TTA transform `tta` (0 = none), resize to dim, scale.

    Give it the bytes of `photoid.records.writer.prepare_image_bytes` to get what the records hold for that photo.
    """
    return finish_image(apply_transform(decode_image(data, dim_pre), tta), dim, inverted, scale)


def _check_arguments(files: Sequence[str], dim: int, dim_pre: int, batch_size: int, training: bool,
                     aug_number: int, aug_percentage: float, tta: int) -> None:
    if isinstance(files, (str, bytes)) or not files:
        raise PhotoidError("build_dataset needs a non-empty list of TFRecord files")
    for name, value in (("dim", dim), ("dim_pre", dim_pre), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if not 0 <= tta < N_TRANSFORMS:
        raise ValueError(f"tta must be in 0..{N_TRANSFORMS - 1}, got {tta}")
    if training and tta:
        raise ValueError("tta applies to prediction; training draws its own augmentation (aug_number)")


def build_dataset(files: Sequence[str], *, dim: int, dim_pre: int, batch_size: int, training: bool,
                  aug_number: int = 9, aug_percentage: float = 0.5, aug_draw: str = "original", tta: int = 0,
                  image_inverted: bool = False, buffer_size: int = 256,
                  cache: bool = False, repeat: bool | None = None, seed: int | None = None,
                  drop_remainder: bool = False, with_ids: bool = False, label_key: str = "label",
                  augment: str = "original", skip: int = 0) -> tf.data.Dataset:
    """Batches of (image, label) or, with `with_ids`, (image, label, image_id) from TFRecord `files`.

    Images are float32 [batch, dim, dim, 3] in [0, 1], labels int32 (`label_key` feature; -1 for test records),
    ids strings. `training` shuffles (buffer of `buffer_size` records) and applies the original's augmentation
    (`aug_number`, `aug_percentage`, `aug_draw`); otherwise TTA transform `tta` is applied to every image.
    `image_inverted` gives 1 - image (the original's option). `repeat` defaults to
    `training`. `cache` keeps the decoded uint8 `dim_pre` images in memory after the first pass (augmentation
    still varies per epoch). `augment`: original (the Turtle Recall transforms, `aug_number`) or a Where's Whale-do
    chain of `photoid.whales.augment` (whaledo, whaledo_triangle). `skip` (training) starts the stream after that
    many images, with the augmentation they would have had there, without decoding the skipped ones (unless
    `cache`): a resumed fold continues the stream of the run that was killed.
    """
    _check_arguments(files, dim, dim_pre, batch_size, training, aug_number, aug_percentage, tta)
    repeat = training if repeat is None else repeat
    spec = feature_spec(string_columns=("image_id",) if with_ids else (), int_columns=(label_key,))
    # Without a seed, training still uses the stateless path, keyed by a fresh random seed.
    base_seed = seed if seed is not None else secrets.randbits(31)

    file_names = tf.data.Dataset.from_tensor_slices(list(files))
    if training:
        file_names = file_names.shuffle(len(files), seed=base_seed, reshuffle_each_iteration=True)
    records = tf.data.TFRecordDataset(file_names, num_parallel_reads=AUTOTUNE if training else None)

    def decode(serialized):
        example = tf.io.parse_single_example(serialized, spec)
        image = decode_image(example[IMAGE_FEATURE], dim_pre)
        label = tf.cast(example[label_key], tf.int32)
        return (image, label, example["image_id"]) if with_ids else (image, label)

    # Skipping the first images of a resumed stream needs no decoding: the shuffles' order depends only on their
    # seeds, so shuffling the records themselves and decoding after the skip gives the very same stream.
    decode_late = bool(skip) and training and not cache
    ds = records if decode_late else records.map(decode, num_parallel_calls=AUTOTUNE)
    if cache:
        ds = ds.cache()
    if repeat:
        ds = ds.repeat()
    if training and buffer_size:
        ds = ds.shuffle(buffer_size, seed=base_seed, reshuffle_each_iteration=True)
    if training:
        ds = ds.skip(skip)
    if decode_late:
        ds = ds.map(decode, num_parallel_calls=AUTOTUNE)

    if training:
        augment_one = augmentation(augment, aug_number, aug_percentage, aug_draw)

        # Element i of the (repeated, shuffled) stream gets its own stateless seed (base_seed, i).
        def transform(position, element):
            image, *rest = element
            seed_pair = tf.stack([tf.constant(base_seed, tf.int64), position])
            image = augment_one(image, seed_pair)
            return (finish_image(image, dim, image_inverted), *rest)

        ds = ds.enumerate(start=skip).map(transform, num_parallel_calls=AUTOTUNE)
    else:
        def transform(image, *rest):
            return (finish_image(apply_transform(image, tta), dim, image_inverted), *rest)

        ds = ds.map(transform, num_parallel_calls=AUTOTUNE)

    ds = batch_after_map(ds, batch_size, drop_remainder, every_batch_full=repeat or drop_remainder)
    options = tf.data.Options()
    # Unordered parallel maps are faster; they are allowed only where no one can tell (training without a seed).
    options.deterministic = not training or seed is not None
    return ds.with_options(options).prefetch(AUTOTUNE)


def batch_after_map(ds: tf.data.Dataset, batch_size: int, drop_remainder: bool,
                    every_batch_full: bool) -> tf.data.Dataset:
    """Batches of the images a parallel map just made.

    Where every batch is full (a repeated stream, or the remainder dropped), a plain batch: tf.data then fuses it
    with the map (map_and_batch_fusion) and each image is written straight into its batch, where a parallel batch
    (never fused) copies every float image once more: the fused training pipeline is 1.16× as fast at dim 512
    (benchmarks/results.md, B1). A stream that ends in a partial batch keeps the parallel batch: a distribution
    strategy splits a plain batch's last partial one by rewriting the batch, which can leave a replica an empty
    batch (6 and 0 of 6 images over 2 replicas, where a parallel batch gives 3 and 3), and TensorFlow's CPU
    convolution fails on an empty batch.
    """
    if every_batch_full:
        return ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE)


def augmentation(augment: str, aug_number: int, aug_percentage: float, aug_draw: str = "original"):
    """The training augmentation a recipe names, as `fn(image, seed)` on one uint8 image (every draw keyed by the
    stateless `seed`). The registry (`photoid.tasks`) knows which task's module defines it: `original` is Turtle
    Recall's, `whaledo` and `whaledo_triangle` Where's Whale-do's. Resolved here, before a tf.data map traces the
    function that calls it (a module lookup inside the trace is not graph code)."""
    augment_fn = get_augmentation(augment)

    def augment_one(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        return augment_fn(image, seed, aug_number=aug_number, aug_percentage=aug_percentage, aug_draw=aug_draw)

    return augment_one


def open_records(path: str | os.PathLike) -> RecordsDir:
    """A records folder, local or remote (read through TensorFlow's file system, `photoid.core.fs`)."""
    return RecordsDir(path)


def fold_files(records_dir: str | os.PathLike, folds) -> list[str]:
    """The record shards of the given folds, fold by fold, each fold's shards in order (local or gs:// paths)."""
    return open_records(records_dir).fold_files(folds)


def test_files(records_dir: str | os.PathLike) -> list[str]:
    """The test record shards in order (local or gs:// paths)."""
    return open_records(records_dir).test_files()


def count_records(files: Sequence[str]) -> int:
    """Number of records in `files`: from records.json beside them when it lists them all, else by reading."""
    total, unlisted = 0, []
    folders: dict[str, RecordsDir] = {}
    for path in files:
        folder, name = os.path.split(str(path))
        if folder not in folders:
            folders[folder] = open_records(folder or ".")
        rows = folders[folder].listed_rows(name)
        if rows is None:
            unlisted.append(str(path))
        else:
            total += rows
    if unlisted:
        total += int(tf.data.TFRecordDataset(unlisted).reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))
    return total
