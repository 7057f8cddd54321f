"""B1 — training input pipeline: images/s at `dim` 512 (decode, augment, batch, all cores).

Ours: `photoid tfrecords` records of the default, exact layout (each photo decoded and resized to `dim_pre` by the
original's own steps once, when the records are written, and stored as that uint8 image) read by
`photoid.records.reader.build_dataset(training=True)`; the model inputs are bit for bit the baseline's. Baseline: the
original solution's layout — records holding each photo's original JPEG bytes, decoded in full and resized to
`dim_pre` on every epoch — read by the same `build_dataset`, so the only difference is what the records hold. The
compact layout (resized by Pillow, re-encoded as JPEG) is measured too. Another figure tries libjpeg's DCT scaling
(`decode_jpeg(ratio=…)`) on the original-byte records: the largest ratio (1, 2, 4, 8) that still leaves both sides
at least `dim_pre`, so no photo is upsampled after a scaled decode.

Throughput is measured in steady state: alternating windows of consecutive batches, each on a fresh iterator after
untimed warm-up batches, so only the timed pipeline runs (see `interleaved_rates`); the figure is the median window.
"""

from __future__ import annotations

import contextlib
import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from _common import Goal, Result, image_paths, interleaved_medians, pool_workers, synthetic_turtles, turtle_records

GOAL = Goal(4.0)
LAYOUTS = ("exact", "compact", "original")
REAL_PHOTOS = 12_803 + 490  # Turtle Recall's train + extra and test photos
DIM_PRE = 512  # the original's dim_pre; records and the baseline's resize both use it


@dataclass(frozen=True)
class Settings:
    photos: tuple[tuple[int, int], ...]  # (long side in px, number of photos); the first is the headline
    dim: int
    dim_pre: int
    batch_size: int
    warmup_batches: int
    window_batches: int
    windows: int


PRESETS = {
    "full": Settings(photos=((1500, 300), (3000, 80)), dim=512, dim_pre=DIM_PRE, batch_size=32, warmup_batches=3,
                     window_batches=8, windows=3),
    "tiny": Settings(photos=((96, 24),), dim=32, dim_pre=32, batch_size=8, warmup_batches=1, window_batches=2,
                     windows=1),
}


def interleaved_rates(datasets: dict, settings: Settings) -> dict[str, float]:
    """Median images/s of each dataset; every round times one window of consecutive batches of each in turn.

    Each window runs on a fresh iterator, deleted right after it: a live iterator keeps preparing batches in the
    background (up to its buffers), which would take cores from the dataset being timed. The untimed
    `warmup_batches` first wait for the shuffle buffer to fill and the autotuned stages to settle.
    """
    def window_rate(dataset) -> float:
        batches = iter(dataset)
        for _ in range(settings.warmup_batches):
            next(batches)
        started, images = time.perf_counter(), 0
        for _ in range(settings.window_batches):
            images += int(next(batches)[0].shape[0])
        rate = images / (time.perf_counter() - started)
        del batches
        gc.collect()  # the iterator's threads stop when it is destroyed, before the next window starts
        return rate

    return interleaved_medians(settings.windows, {name: lambda d=dataset: window_rate(d)
                                                  for name, dataset in datasets.items()})


def decode_with_dct_scaling(jpeg_bytes, dim_pre: int):
    """`pipeline.decode_image`, with libjpeg scaling the DCT down by the largest ratio keeping both sides >= dim_pre."""
    import tensorflow as tf

    shape = tf.io.extract_jpeg_shape(jpeg_bytes)
    short_side = tf.minimum(shape[0], shape[1])
    ratios = (1, 2, 4, 8)
    index = tf.reduce_sum(tf.cast(short_side >= dim_pre * tf.constant(ratios[1:]), tf.int32))
    branches = [lambda r=r: tf.io.decode_jpeg(jpeg_bytes, channels=3, dct_method="INTEGER_ACCURATE", ratio=r)
                for r in ratios]
    image = tf.image.resize(tf.switch_case(index, branches), [dim_pre, dim_pre], method="bilinear")
    return tf.cast(tf.reshape(image, [dim_pre, dim_pre, 3]), tf.uint8)


@contextlib.contextmanager
def dct_scaled_decoding() -> Iterator[None]:
    """Datasets built inside use `decode_with_dct_scaling` in place of the reader's own decoder.

    `build_dataset` looks the decoder up when it traces its map function, so swapping the module attribute while
    the dataset is built changes exactly that step and nothing else.
    """
    from photoid.records import reader as pipeline

    original = pipeline.decode_image
    pipeline.decode_image = decode_with_dct_scaling
    try:
        yield
    finally:
        pipeline.decode_image = original


def _training_dataset(records_dir: Path, settings: Settings, aug_number: int = 9):
    from photoid.records.reader import build_dataset
    from photoid.records.reader import fold_files

    return build_dataset(fold_files(records_dir, range(5)), dim=settings.dim, dim_pre=settings.dim_pre,
                         batch_size=settings.batch_size, training=True, seed=0, aug_number=aug_number)


def _without_map_and_batch_fusion(dataset):
    """The same dataset with tf.data's map_and_batch fusion switched off: each float image is copied into its batch
    after the map, as a parallel batch would (which tf.data never fuses)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_optimization.map_and_batch_fusion = False
    return dataset.with_options(options)


def _mib_per_photo(records_dir: Path) -> float:
    files = list(Path(records_dir).glob("*.tfrecord-*"))
    from photoid.records.reader import count_records

    return sum(f.stat().st_size for f in files) / count_records([str(f) for f in files]) / 2**20


def measure_size(cache_dir: Path, long_side: int, n_photos: int, settings: Settings, profile: bool) -> dict:
    """Rates of each layout for photos of `long_side` px; with `profile`, also without augmentation, the cost of
    each step alone (which show where the time goes) and how far the compact layout's inputs are from the
    original's."""
    data_dir = synthetic_turtles(cache_dir, long_side, n_photos)
    workers = pool_workers(n_photos)
    records = {layout: turtle_records(cache_dir, data_dir, settings.dim_pre, layout=layout, workers=workers)
               for layout in LAYOUTS}
    datasets = {"ours": _training_dataset(records["exact"], settings),
                "compact": _training_dataset(records["compact"], settings),
                "baseline": _training_dataset(records["original"], settings)}
    with dct_scaled_decoding():
        datasets["dct_scaled"] = _training_dataset(records["original"], settings)
    if profile:
        datasets["ours_no_aug"] = _training_dataset(records["exact"], settings, aug_number=0)
        datasets["baseline_no_aug"] = _training_dataset(records["original"], settings, aug_number=0)
        datasets["ours_unfused"] = _without_map_and_batch_fusion(_training_dataset(records["exact"], settings))
    figures: dict = interleaved_rates(datasets, settings)
    figures["mib"] = {layout: _mib_per_photo(folder) for layout, folder in records.items()}
    if profile:
        figures["profile"] = profile_steps(data_dir, settings)
        figures["compact_error"] = compact_error(data_dir, settings)
    return figures


def compact_error(data_dir: Path, settings: Settings, n_photos: int = 16) -> dict:
    """How far the compact layout's model inputs (TTA 0, at dim) are from the original's, in 1/255 steps."""
    import numpy as np

    from photoid.records.reader import preprocess_image_bytes
    from photoid.records.writer import prepare_image_bytes

    errors = []
    for path in image_paths(data_dir)[:n_photos]:
        exact = preprocess_image_bytes(Path(path).read_bytes(), settings.dim, settings.dim_pre).numpy()
        compact = preprocess_image_bytes(prepare_image_bytes(path, settings.dim_pre, "compact"), settings.dim,
                                         settings.dim_pre).numpy()
        errors.append(np.abs(compact - exact).ravel() * 255)
    errors = np.concatenate(errors)
    return {"mean": float(errors.mean()), "p99": float(np.percentile(errors, 99)), "max": float(errors.max()),
            "photos": min(n_photos, len(image_paths(data_dir)))}


def profile_steps(data_dir: Path, settings: Settings, n_photos: int = 8) -> str:
    """What each step of the reader costs per photo, for the notes (see `_pipeline_profile`)."""
    from photoid.records.writer import prepare_image_bytes

    import _pipeline_profile

    paths = image_paths(data_dir)[:n_photos]
    costs = _pipeline_profile.stage_costs([Path(p).read_bytes() for p in paths],
                                          [prepare_image_bytes(p, settings.dim_pre, "exact") for p in paths],
                                          settings.dim, settings.dim_pre, decode_with_dct_scaling)
    return _pipeline_profile.describe(costs)


def run(preset: str, cache_dir: Path) -> list[Result]:
    settings = PRESETS[preset]
    by_size = {side: measure_size(cache_dir, side, n, settings, profile=i == 0)
               for i, (side, n) in enumerate(settings.photos)}
    head_side = settings.photos[0][0]
    head = by_size[head_side]
    details = []
    for side, f in by_size.items():
        mib = f["mib"]
        details.append(
            f"photos of {side} px (long side): exact layout {f['ours']:.1f} images/s, compact layout "
            f"{f['compact']:.1f} images/s, original bytes {f['baseline']:.1f} images/s "
            f"({f['ours'] / f['baseline']:.2f}× exact, {f['compact'] / f['baseline']:.2f}× compact), original bytes "
            f"with DCT-scaled decoding {f['dct_scaled']:.1f} images/s ({f['ours'] / f['dct_scaled']:.2f}×); records "
            f"hold {mib['exact']:.3f} MiB (exact), {mib['compact']:.3f} MiB (compact), {mib['original']:.3f} MiB "
            f"(original) per photo; for the real set's {REAL_PHOTOS:,} photos (12,803 train + extra, 490 test) "
            f"that is {mib['exact'] * REAL_PHOTOS / 1024:.1f} GiB exact (the same for any photo: one uint8 "
            f"{settings.dim_pre}² image each), {mib['compact'] * REAL_PHOTOS / 1024:.2f} GiB compact and "
            f"{mib['original'] * REAL_PHOTOS / 1024:.1f} GiB original (these two scale with these synthetic photos' "
            f"JPEG sizes)")
        if "profile" not in f:
            continue
        augment_ms = 1000 * (1 / f["ours"] - 1 / f["ours_no_aug"])
        err = f["compact_error"]
        details.append(
            f"photos of {side} px, where the time goes: without augmentation exact {f['ours_no_aug']:.1f} "
            f"images/s and original bytes {f['baseline_no_aug']:.1f} images/s "
            f"({f['ours_no_aug'] / f['baseline_no_aug']:.2f}×, the layout's own gain); augmentation adds "
            f"{augment_ms:.1f} ms of pipeline time per photo to both layouts, against "
            f"{1000 / f['ours']:.1f} ms in all for exact records. The reader's last map and the batch are fused "
            f"(each float image written straight into its batch): with that fusion switched off, "
            f"exact records give {f['ours_unfused']:.1f} images/s (the fusion: {f['ours'] / f['ours_unfused']:.2f}×). "
            f"{f['profile']}")
        details.append(
            f"photos of {side} px: the exact layout's model inputs equal the original bytes' bit for bit "
            f"(tests/test_pipeline.py); the compact layout's differ by {err['mean']:.2f}/255 on average, "
            f"{err['p99']:.0f}/255 at the 99th percentile and {err['max']:.0f}/255 at most (TTA 0 at dim "
            f"{settings.dim}, {err['photos']} photos)")
    notes = [
        f"dim {settings.dim}, dim_pre {settings.dim_pre}, batch {settings.batch_size}, training=True (shuffle buffer "
        f"256, the original's augmentation); median of {settings.windows} alternating windows of "
        f"{settings.window_batches} batches, each on a fresh iterator after {settings.warmup_batches} untimed batches.",
        "DCT-scaled decoding never goes below dim_pre on either side, so it only shrinks photos whose short side is "
        "at least twice dim_pre: it leaves a 1500×1000 photo at full size for dim_pre 512 and halves a 1500×1500 "
        "one. libjpeg still reads every coefficient of a scaled photo, so it saves only the inverse transform's "
        "share of the time (see the profile lines).",
    ]
    ratio = head["ours"] / head["baseline"]
    if not GOAL.met(ratio) and "profile" in head:
        notes.append(
            f"Why the goal is missed at {head_side} px: decoding is only part of each photo's cost. Without "
            f"augmentation the layout alone gives {head['ours_no_aug'] / head['baseline_no_aug']:.2f}×; the "
            f"augmentation, the conversion to float and the batching, the same work in both layouts, dilute that "
            f"(see the profile). Larger photos widen the gap (see the other sizes). Tried: DCT-scaled decoding of "
            f"the original bytes (figures above); rotations that skip the projective kernel (quarter turns by "
            f"`rot90`, 45-degree turns gathering only the pixels the crop keeps; same pixels, see the profile); no "
            f"resize when an image is already at dim; the final resize from float pixels (kept: same values, faster, "
            f"see the profile); one fused map from serialized record to augmented image, shuffling serialized "
            f"records instead of decoded ones (no gain beyond the run-to-run spread of about 10%, so not kept); "
            f"batching uint8 images and converting whole batches to float (cheaper per photo alone, but the "
            f"45-degree crops need their own float resize, and carrying them beside the uint8 batch, ragged or "
            f"padded, cost more processor time than it saved, so not kept). A one-pass uint8-to-float conversion "
            f"(tf.quantization.dequantize) multiplies by 1/255, which differs from the original's division in the "
            f"last bit for 126 of the 256 values, so it cannot be used.")
    return [Result(
        id="B1", what=f"training input pipeline at dim {settings.dim}, photos of {head_side} px",
        ours=head["ours"], baseline=head["baseline"], unit="images/s", ratio=ratio,
        goal=GOAL, ours_label="exact-layout records", baseline_label="original JPEG bytes, full decode",
        details=details, notes=notes)]
