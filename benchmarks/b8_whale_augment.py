"""B8 — the Where's Whale-do winner's augmentation in the tf.data graph: training images/s at dim_pre 512.

Ours: `augment = "whaledo"` (flip, OneOf(Sharpen, ToGray, CLAHE), ShiftScaleRotate, ColorJitter; see
`photoid.whales.augment`). Baseline: the same pipeline with the horizontal flip alone (`augment = "original"`,
aug_number 1, the whale recipes' setting before the winner's chain). Both map uint8 images held in memory through
`photoid.records.reader.augmentation` and `finish_image` on every core, batched, so the figure is the augmentation's own
cost; its inverse is the cost per photo. Steady state: alternating windows on fresh iterators, median window.
Where the time goes: each transform alone on one photo, in processor time (all threads), weighted by how often
the chain draws it.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass

import numpy as np

from _common import Goal, Result, interleaved_medians

GOAL = Goal(0.5)  # the winner's chain may cost at most half the flip-only pipeline's rate


@dataclass(frozen=True)
class Settings:
    dim_pre: int
    n_images: int
    batch_size: int
    warmup_batches: int
    window_batches: int
    windows: int


PRESETS = {
    "full": Settings(dim_pre=512, n_images=64, batch_size=12, warmup_batches=3, window_batches=10, windows=3),
    "tiny": Settings(dim_pre=32, n_images=8, batch_size=4, warmup_batches=1, window_batches=2, windows=1),
}


def dataset(images: np.ndarray, augment: str, settings: Settings):
    import tensorflow as tf

    from photoid.records.reader import AUTOTUNE, augmentation, finish_image

    augment_one = augmentation(augment, 1, 0.5, "first")

    def transform(position, image):
        seed = tf.stack([tf.constant(1, tf.int64), position])
        return finish_image(augment_one(image, seed), settings.dim_pre)

    ds = tf.data.Dataset.from_tensor_slices(images).repeat().enumerate()
    return ds.map(transform, num_parallel_calls=AUTOTUNE).batch(settings.batch_size).prefetch(AUTOTUNE)


# How often the chain applies each transform (photoid.whales.augment): flip 0.5; one of three, p 0.5; SSR and
# ColorJitter, p 0.5 each.
SHARES = {"flip": 0.5, "sharpen": 0.5 / 3, "to_gray": 0.5 / 3, "clahe": 0.5 / 3, "shift_scale_rotate": 0.5,
          "color_jitter": 0.5}


def transform_costs(image: np.ndarray, repeats: int) -> dict[str, float]:
    """Milliseconds of processor time per call of each transform on one photo (compiled graph, median of 5)."""
    import statistics

    import tensorflow as tf

    from photoid.whales import augment as a

    transforms = {
        "flip": tf.image.flip_left_right,
        "sharpen": lambda x: a.sharpen(x, 0.35, 0.75),
        "to_gray": a.to_gray,
        "clahe": a.clahe,
        "shift_scale_rotate": lambda x: a.shift_scale_rotate(x, 2.0, 1.1, 0.1, -0.1),
        "color_jitter": lambda x: a.color_jitter(x, 1.05, 0.95, 1.05, 0.1, [2, 0, 3, 1]),
    }
    x = tf.constant(image)
    costs = {}
    for name, fn in transforms.items():
        f = tf.function(fn)
        f(x)
        samples = []
        for _ in range(5):
            started = time.process_time()
            for _ in range(repeats):
                f(x).numpy()
            samples.append((time.process_time() - started) / repeats * 1000)
        costs[name] = statistics.median(samples)
    return costs


def run(preset: str, cache_dir) -> list[Result]:
    settings = PRESETS[preset]
    rng = np.random.default_rng(0)
    side = settings.dim_pre
    ramp = np.linspace(60, 200, side)[None, :, None]
    images = np.clip(ramp + rng.normal(0, 20, (settings.n_images, side, side, 3)), 0, 255).astype(np.uint8)
    datasets = {"whaledo": dataset(images, "whaledo", settings), "flip": dataset(images, "original", settings)}

    def window_rate(ds) -> float:
        batches = iter(ds)
        for _ in range(settings.warmup_batches):
            next(batches)
        started = time.perf_counter()
        for _ in range(settings.window_batches):
            next(batches)
        rate = settings.window_batches * settings.batch_size / (time.perf_counter() - started)
        del batches
        gc.collect()
        return rate

    rates = interleaved_medians(settings.windows, {k: (lambda d=d: window_rate(d)) for k, d in datasets.items()})
    ours, baseline = rates["whaledo"], rates["flip"]
    costs = transform_costs(images[0], settings.window_batches)
    per_photo = {name: cost * SHARES[name] for name, cost in costs.items()}
    return [Result(
        id="B8", what=f"whale training augmentation at dim_pre {side} (images in memory)",
        ours=ours, baseline=baseline, unit="images/s", ratio=ours / baseline, goal=GOAL,
        ours_label="the winner's chain", baseline_label="horizontal flip only",
        details=[f"cost per photo: {1000 / ours:.1f} ms (winner's chain) vs {1000 / baseline:.1f} ms (flip), "
                 "wall-clock on every core",
                 "each transform alone, ms of processor time per call (per photo, as often as the chain draws it): "
                 + ", ".join(f"{name} {costs[name]:.2f} ({per_photo[name]:.2f})" for name in costs)
                 + f"; in all {sum(per_photo.values()):.1f} ms per photo"],
        notes=["A training step of B5 at 512 px, batch 12, needs 12 images per step: the chain keeps the model fed "
               "while the rate here exceeds 12 / (seconds per step); no GPU step was measured on this machine."])]
