"""The tf.data reader: shapes, order, labels and ids, TTA, augmentation, seeds, record counts."""

import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import photoid  # noqa: F401
import tensorflow as tf

from photoid.records.transforms import apply_transform
from photoid.core.errors import PhotoidError
from photoid.records.reader import build_dataset, count_records, decode_image, finish_image, preprocess_image_bytes
from photoid.records.writer import MANIFEST_NAME, RecordsManifest, prepare_image_bytes, write_records
from photoid.turtles.records import TURTLE_INT_COLUMNS, TURTLE_STRING_COLUMNS

DIM_PRE = 24
N_IMAGES = 10


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> dict:
    """10 noise photos of different sizes in 2 shards; images never look the same after any transform."""
    root = tmp_path_factory.mktemp("pipeline")
    rng = np.random.default_rng(3)
    paths = []
    for i in range(N_IMAGES):
        path = root / "images" / f"ID_{i:04d}.JPG"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(30 + i, 40, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(str(path))
    rows = pd.DataFrame({"image_id": [f"ID_{i:04d}" for i in range(N_IMAGES)],
                         "label_id": [f"t_id_{i}" for i in range(N_IMAGES)],
                         "image_location": ["top"] * N_IMAGES, "label": list(range(N_IMAGES))})
    out = root / "tfrec"
    manifest = RecordsManifest.open(out, {"dim_pre": DIM_PRE, "layout": "compact"})
    result = write_records(rows, paths, out / "fold.0.tfrecord", string_columns=TURTLE_STRING_COLUMNS,
                           int_columns=TURTLE_INT_COLUMNS, dim_pre=DIM_PRE, layout="compact", manifest=manifest,
                           shards=2, workers=1)
    return {"files": result["files"], "paths": paths, "dir": out}


def reference(path: str, dim: int, tta: int = 0) -> np.ndarray:
    """The model input for one photo computed from its prepared bytes alone."""
    return preprocess_image_bytes(prepare_image_bytes(path, DIM_PRE, "compact"), dim, DIM_PRE, tta).numpy()


def collect(ds) -> tuple[np.ndarray, ...]:
    parts = list(ds.as_numpy_iterator())
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(len(parts[0])))


def test_prediction_batches_keep_record_order_with_labels_and_ids(records):
    ds = build_dataset(records["files"], dim=16, dim_pre=DIM_PRE, batch_size=4, training=False, with_ids=True)
    batches = list(ds.as_numpy_iterator())
    assert [len(b[0]) for b in batches] == [4, 4, 2]  # no repeat, remainder kept
    images, labels, ids = collect(ds)
    assert images.shape == (N_IMAGES, 16, 16, 3) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.max() > 0.5
    assert labels.dtype == np.int32 and list(labels) == list(range(N_IMAGES))
    assert [i.decode() for i in ids] == [f"ID_{i:04d}" for i in range(N_IMAGES)]
    for i in (0, 7):
        np.testing.assert_array_equal(images[i], reference(records["paths"][i], 16))


def test_reader_follows_the_originals_steps(records):
    jpeg = prepare_image_bytes(records["paths"][2], DIM_PRE, "compact")
    decoded = decode_image(jpeg, DIM_PRE).numpy()
    expected = tf.cast(tf.image.resize(tf.io.decode_jpeg(jpeg, channels=3, dct_method="INTEGER_ACCURATE"),
                                       [DIM_PRE, DIM_PRE]), tf.uint8).numpy()
    assert decoded.dtype == np.uint8 and np.array_equal(decoded, expected)
    finished = finish_image(decoded, 12).numpy()
    np.testing.assert_allclose(finished, tf.image.resize(decoded, [12, 12]).numpy() / 255.0, atol=1e-7)
    # At dim == dim_pre the resize is skipped; the original resized anyway, and got exactly these values. (Both in a
    # graph: there TensorFlow divides by a constant through its reciprocal, which eager division does not.)
    def graph(fn):
        return tf.function(fn, input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])

    unchanged = graph(lambda image: finish_image(image, DIM_PRE))(decoded).numpy()
    resized = graph(lambda image: tf.image.resize(image, [DIM_PRE, DIM_PRE]) / 255.0)(decoded).numpy()
    assert np.array_equal(unchanged, resized)


@pytest.mark.parametrize("tta, dim", [(0, 384), (6, 512), (6, 384), (3, 384)])
def test_resizing_gives_the_originals_values_bit_for_bit(tta, dim):
    # The reader converts to float before resizing (the kernel's vectorised float path); the original's `norm`
    # resized the uint8 image, then converted. Both run in tf.data maps, as here, on noise using all 256 values.
    pixels = np.random.default_rng(5).integers(0, 256, size=(512, 512, 3), dtype=np.uint8)
    image = apply_transform(tf.constant(pixels), tta)

    def originals_norm(x):
        x = tf.reshape(tf.image.resize(x, [dim, dim]), [dim, dim, 3])
        return tf.cast(x, tf.float32) / 255.0

    ours, originals = (next(iter(tf.data.Dataset.from_tensors(image).map(fn))).numpy()
                       for fn in (lambda x: finish_image(x, dim), originals_norm))
    assert ours.shape == (dim, dim, 3) and np.array_equal(ours, originals)


@pytest.mark.parametrize("tta, numpy_transform", [
    (1, lambda a: a[:, ::-1]), (2, lambda a: a[::-1]), (3, lambda a: np.rot90(a, 1)),
    (4, lambda a: a[::-1, ::-1]), (5, lambda a: np.rot90(a, 3)),
])
def test_tta_index_applies_that_transform(records, tta, numpy_transform):
    # dim == dim_pre: the final resize changes nothing, so the transform is visible pixel for pixel.
    plain, _ = collect(build_dataset(records["files"], dim=DIM_PRE, dim_pre=DIM_PRE, batch_size=4, training=False))
    turned, _ = collect(build_dataset(records["files"], dim=DIM_PRE, dim_pre=DIM_PRE, batch_size=4,
                                      training=False, tta=tta))
    for a, b in zip(plain, turned):
        np.testing.assert_array_equal(b, numpy_transform(a))


def test_diagonal_tta_is_the_single_image_function(records):
    images, _ = collect(build_dataset(records["files"], dim=16, dim_pre=DIM_PRE, batch_size=4, training=False,
                                      tta=7))
    for i in (0, 9):
        np.testing.assert_array_equal(images[i], reference(records["paths"][i], 16, tta=7))
    assert not np.array_equal(images[0], reference(records["paths"][0], 16, tta=0))


def test_training_repeats_shuffles_and_augments(records):
    ds = build_dataset(records["files"], dim=DIM_PRE, dim_pre=DIM_PRE, batch_size=4, training=True,
                       aug_percentage=1.0, seed=1, drop_remainder=True, with_ids=True, buffer_size=8)
    assert ds.element_spec[0].shape.as_list() == [4, DIM_PRE, DIM_PRE, 3]
    images, labels, ids = collect(ds.take(10))  # 40 images from 10 records: repeated
    assert images.shape == (40, DIM_PRE, DIM_PRE, 3) and 0 <= images.min() and images.max() <= 1
    assert sorted(set(labels)) == list(range(N_IMAGES))
    assert [int(i.decode()[3:]) for i in ids] == list(labels)
    assert list(labels[:N_IMAGES]) != list(range(N_IMAGES))  # shuffled
    plain = {i: reference(p, DIM_PRE) for i, p in enumerate(records["paths"])}
    # aug_percentage 1.0: every image gets one of the nine transforms, so none is seen unchanged.
    assert not any(np.array_equal(image, plain[label]) for image, label in zip(images, labels))


def test_training_without_augmentation_shows_images_unchanged(records):
    ds = build_dataset(records["files"], dim=DIM_PRE, dim_pre=DIM_PRE, batch_size=5, training=True, aug_number=0,
                       repeat=False, seed=2)
    images, labels = collect(ds)
    assert sorted(labels) == list(range(N_IMAGES))  # repeat=False: one pass
    for image, label in zip(images, labels):
        np.testing.assert_array_equal(image, reference(records["paths"][label], DIM_PRE))


def test_default_augmentation_leaves_about_half_unchanged(records):
    ds = build_dataset(records["files"], dim=DIM_PRE, dim_pre=DIM_PRE, batch_size=50, training=True, seed=4)
    images, labels = collect(ds.take(8))
    plain = {i: reference(p, DIM_PRE) for i, p in enumerate(records["paths"])}
    unchanged = np.mean([np.array_equal(image, plain[label]) for image, label in zip(images, labels)])
    assert 0.4 < unchanged < 0.6  # 400 draws, probability 1/2


def test_seed_gives_identical_batches(records):
    def first_batches(seed):
        ds = build_dataset(records["files"], dim=16, dim_pre=DIM_PRE, batch_size=4, training=True, seed=seed,
                           buffer_size=10)
        return collect(ds.take(6))

    a, b, c = first_batches(9), first_batches(9), first_batches(10)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def dataset_ops(ds) -> set[str]:
    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(tf.raw_ops.DatasetToGraphV2(input_dataset=ds._variant_tensor).numpy())
    return {node.op for node in graph.node}


@pytest.mark.parametrize("training, repeat, fused", [(True, None, True), (False, True, True), (False, None, False)])
def test_streams_of_full_batches_fuse_the_last_map_and_the_batch(records, training, repeat, fused):
    # tf.data fuses a map followed by a plain batch (each image written straight into its batch, B1's largest
    # saving); it never fuses a parallel batch, which a stream ending in a partial batch keeps (under a
    # distribution strategy a plain one can leave a replica an empty batch: test_train's mirrored-strategy test).
    kwargs = dict(dim=16, dim_pre=DIM_PRE, batch_size=4, training=training, repeat=repeat, seed=3, buffer_size=10)
    ds = build_dataset(records["files"], **kwargs)
    ops = dataset_ops(ds)
    assert ("BatchDatasetV2" in ops, "ParallelBatchDataset" in ops) == (fused, not fused)
    options = tf.data.Options()
    options.experimental_optimization.map_and_batch_fusion = False
    unfused = build_dataset(records["files"], **kwargs).with_options(options)
    for a, b in zip(collect(ds.take(5)), collect(unfused.take(5))):
        assert np.array_equal(a, b)


def test_cache_gives_the_same_images(records):
    kwargs = dict(dim=16, dim_pre=DIM_PRE, batch_size=4, training=False, repeat=True)
    cached = build_dataset(records["files"], cache=True, **kwargs).take(5)
    plain = build_dataset(records["files"], **kwargs).take(5)
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(cached.as_numpy_iterator(), plain.as_numpy_iterator()))


def test_count_records_reads_the_manifest_or_counts(records, tmp_path):
    assert count_records(records["files"]) == N_IMAGES
    assert count_records(records["files"][1:]) == N_IMAGES - N_IMAGES // 2
    copy = tmp_path / os.path.basename(records["files"][0])  # no records.json beside it: counted by reading
    copy.write_bytes(open(records["files"][0], "rb").read())
    assert not (tmp_path / MANIFEST_NAME).exists()
    assert count_records([str(copy)]) == N_IMAGES // 2


def test_bad_arguments_are_refused(records):
    with pytest.raises(PhotoidError, match="non-empty list"):
        build_dataset([], dim=16, dim_pre=DIM_PRE, batch_size=4, training=False)
    with pytest.raises(ValueError, match="tta"):
        build_dataset(records["files"], dim=16, dim_pre=DIM_PRE, batch_size=4, training=False, tta=10)
    with pytest.raises(ValueError, match="tta applies to prediction"):
        build_dataset(records["files"], dim=16, dim_pre=DIM_PRE, batch_size=4, training=True, tta=1)
    with pytest.raises(ValueError, match="batch_size"):
        build_dataset(records["files"], dim=16, dim_pre=DIM_PRE, batch_size=0, training=False)


def test_single_image_function_equals_transform_chain(records):
    jpeg = prepare_image_bytes(records["paths"][5], DIM_PRE, "compact")
    chained = finish_image(apply_transform(decode_image(jpeg, DIM_PRE), 3), 20).numpy()
    np.testing.assert_array_equal(preprocess_image_bytes(jpeg, 20, DIM_PRE, tta=3).numpy(), chained)


# --- the exact layout: the original's inputs without its per-read decode -----------------------------------------
EXACT_DIM_PRE = 512


@pytest.fixture(scope="module")
def exact_and_original(tmp_path_factory) -> dict:
    """Three photos (two larger than dim_pre, one smaller) as records of each layout."""
    root = tmp_path_factory.mktemp("exact")
    rng = np.random.default_rng(11)
    paths = []
    for i, (height, width) in enumerate([(525, 700), (640, 560), (200, 300)]):
        # Smooth gradients plus noise: JPEG keeps fine detail, and an aliased downscale shows in every pixel.
        y, x = np.mgrid[0:height, 0:width]
        base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
        pixels = np.clip(base + rng.normal(0, 25, size=base.shape), 0, 255).astype(np.uint8)
        path = root / f"ID_{i:04d}.JPG"
        Image.fromarray(pixels).save(path, quality=92)
        paths.append(str(path))
    rows = pd.DataFrame({"image_id": [f"ID_{i:04d}" for i in range(3)], "label_id": ["a", "b", "c"],
                         "image_location": ["top"] * 3, "label": [0, 1, 2]})
    files = {}
    for layout in ("exact", "original", "compact"):
        out = root / layout
        manifest = RecordsManifest.open(out, {"dim_pre": EXACT_DIM_PRE, "layout": layout})
        files[layout] = write_records(rows, paths, out / "fold.0.tfrecord", string_columns=TURTLE_STRING_COLUMNS,
                                      int_columns=TURTLE_INT_COLUMNS, dim_pre=EXACT_DIM_PRE, layout=layout,
                                      manifest=manifest, workers=1)["files"]
    return files


@pytest.mark.parametrize("dim", [512, 384])
def test_default_layout_gives_the_originals_inputs_bit_for_bit(exact_and_original, dim):
    for tta in range(10):
        kwargs = dict(dim=dim, dim_pre=EXACT_DIM_PRE, batch_size=3, training=False, tta=tta)
        exact, _ = collect(build_dataset(exact_and_original["exact"], **kwargs))
        original, _ = collect(build_dataset(exact_and_original["original"], **kwargs))
        assert exact.shape == (3, dim, dim, 3)
        assert np.array_equal(exact, original), f"tta {tta} at dim {dim}"
    # Training batches too: the same records in the same order get the same seeded draws.
    kwargs = dict(dim=dim, dim_pre=EXACT_DIM_PRE, batch_size=3, training=True, seed=5, aug_percentage=1.0)
    exact, _ = collect(build_dataset(exact_and_original["exact"], **kwargs).take(2))
    original, _ = collect(build_dataset(exact_and_original["original"], **kwargs).take(2))
    assert np.array_equal(exact, original)


def test_exact_records_hold_the_uint8_image_and_compact_ones_differ(exact_and_original):
    record = next(iter(tf.data.TFRecordDataset(exact_and_original["exact"])))
    image = tf.io.parse_single_example(record, {"image": tf.io.FixedLenFeature([], tf.string)})["image"]
    stored = tf.io.parse_tensor(image, tf.uint8)
    assert stored.shape == (EXACT_DIM_PRE, EXACT_DIM_PRE, 3)
    assert np.array_equal(stored.numpy(), decode_image(image, EXACT_DIM_PRE).numpy())
    # The opt-in compact layout (Pillow's antialiased resize, JPEG again) does not give the original's pixels.
    kwargs = dict(dim=EXACT_DIM_PRE, dim_pre=EXACT_DIM_PRE, batch_size=3, training=False)
    compact, _ = collect(build_dataset(exact_and_original["compact"], **kwargs))
    original, _ = collect(build_dataset(exact_and_original["original"], **kwargs))
    assert np.abs(compact - original).max() > 5 / 255


def test_image_inverted_gives_one_minus_the_image_everywhere(records):
    kwargs = dict(dim=16, dim_pre=DIM_PRE, batch_size=4, training=False, tta=2)
    plain, _ = collect(build_dataset(records["files"], **kwargs))
    inverted, _ = collect(build_dataset(records["files"], image_inverted=True, **kwargs))
    np.testing.assert_allclose(inverted, 1.0 - plain, atol=1e-6)
    single = preprocess_image_bytes(prepare_image_bytes(records["paths"][3], DIM_PRE, "compact"), 16, DIM_PRE, 2,
                                    inverted=True)
    np.testing.assert_allclose(single.numpy(), inverted[3], atol=1e-6)


@pytest.mark.parametrize("tta, inverted", [(0, False), (6, True)])
def test_a_single_photos_model_input_equals_the_readers_bit_for_bit(tta, inverted):
    # identify, the catalogue and serve prepare one photo in a compiled function; the reader maps over records in
    # tf.data. A compiled division by the constant 255 would become a multiplication (a float step off on a third
    # of the values), so the scale is an argument there.
    import io

    from photoid.runs.loaded import Preprocessing

    pixels = (np.random.default_rng(0).random((70, 50, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    jpeg = buffer.getvalue()
    reader = tf.data.Dataset.from_tensors(tf.constant(jpeg)).map(
        lambda data: preprocess_image_bytes(data, 48, 64, tta, inverted))
    expected = next(iter(reader)).numpy()
    got = Preprocessing(48, 64, 64, "exact", inverted=inverted).model_input(jpeg, tta)
    assert np.array_equal(got, expected)
