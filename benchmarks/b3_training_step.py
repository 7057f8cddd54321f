"""B3 — training step throughput: the real record pipeline vs the same batches from memory, same small model.

Ours: `build_dataset(training=True)` over pre-resized records feeding `fit`, as `photoid.training.fold` does. Baseline: the
first batches of that same pipeline, held in memory and replayed, so the model does identical work and only the
input differs. A ratio near 1 means the pipeline keeps up with the model; below 1, steps wait for input (or, on a
CPU-only machine, decoding takes processor time from the model).

Rounds alternate the two ways; each is one `fit` call of two epochs of `steps` steps, of which the second is
timed (the first traces and fills the shuffle buffer); the figure is the median over rounds. On a machine with a GPU the `accelerator` settings
apply: a bigger model, image and batch, and more steps, so the GPU has real work.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import photoid  # noqa: F401  (selects tf-keras before TensorFlow is imported)
import tf_keras

from _common import Goal, Result, accelerators, interleaved_medians, pool_workers, synthetic_turtles, turtle_records

GOAL = Goal(0.9)
N_CLASSES = 2265  # the Turtle Recall head


@dataclass(frozen=True)
class Settings:
    photos: tuple[int, int]  # (long side in px, number of photos)
    backbone: str
    dim: int
    dim_pre: int
    batch_size: int
    steps: int  # per epoch
    rounds: int  # each round: one `fit` from memory, one from records


PRESETS = {
    "full": Settings(photos=(1500, 300), backbone="simple-cnn", dim=256, dim_pre=512, batch_size=16, steps=5,
                     rounds=3),
    "accelerator": Settings(photos=(1500, 300), backbone="efficientnet-b0", dim=512, dim_pre=512, batch_size=64,
                            steps=20, rounds=3),
    "tiny": Settings(photos=(96, 24), backbone="simple-cnn", dim=32, dim_pre=32, batch_size=8, steps=2, rounds=1),
}


class EpochTimer(tf_keras.callbacks.Callback):
    """Wall-clock seconds of every epoch of a `fit` call."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._started)


def images_per_second(model, dataset, settings: Settings) -> float:
    """Images/s of the second of two epochs of `steps` steps: the first traces and fills the shuffle buffer."""
    timer = EpochTimer()
    model.fit(dataset, steps_per_epoch=settings.steps, epochs=2, callbacks=[timer], verbose=0)
    return settings.steps * settings.batch_size / timer.seconds[-1]


def pipeline_alone(dataset, settings: Settings) -> float:
    """Images/s the record pipeline delivers with no model to feed, after one warm-up batch."""
    batches = iter(dataset)
    next(batches)
    started = time.perf_counter()
    for _ in range(settings.steps):
        next(batches)
    return settings.steps * settings.batch_size / (time.perf_counter() - started)


def batches_in_memory(dataset, steps: int):
    """The first `steps` batches of `dataset`, materialised, replayed forever."""
    import numpy as np
    import tensorflow as tf

    batches = list(dataset.take(steps).as_numpy_iterator())
    images = np.stack([b[0] for b in batches])
    labels = np.stack([b[1] for b in batches])
    return tf.data.Dataset.from_tensor_slices((images, labels)).repeat().prefetch(tf.data.AUTOTUNE)


def run(preset: str, cache_dir: Path) -> list[Result]:
    from photoid.models.factory import build_models, compile_for_training
    from photoid.records.reader import build_dataset
    from photoid.records.reader import fold_files

    devices = accelerators()
    if preset == "full" and devices:
        preset = "accelerator"
    settings = PRESETS[preset]
    side, n_photos = settings.photos
    data_dir = synthetic_turtles(cache_dir, side, n_photos)
    records = turtle_records(cache_dir, data_dir, settings.dim_pre, layout="compact",
                             workers=pool_workers(n_photos))

    def pipeline():
        return build_dataset(fold_files(records, range(5)), dim=settings.dim, dim_pre=settings.dim_pre,
                             batch_size=settings.batch_size, training=True, seed=0, drop_remainder=True)

    model = build_models(backbone=settings.backbone, dim=settings.dim, n_classes=N_CLASSES).train
    compile_for_training(model, lr=1e-4)
    in_memory = batches_in_memory(pipeline(), settings.steps)
    rates = interleaved_medians(settings.rounds, {"memory": lambda: images_per_second(model, in_memory, settings),
                                                  "records": lambda: images_per_second(model, pipeline(), settings),
                                                  "pipeline": lambda: pipeline_alone(pipeline(), settings)})
    from_memory, from_records = rates["memory"], rates["records"]
    device = ", ".join(devices) or "CPU only"
    notes = [
        f"{settings.backbone} at dim {settings.dim} from records at dim_pre {settings.dim_pre}, batch "
        f"{settings.batch_size}, {N_CLASSES}-way softmax; median of {settings.rounds} alternating rounds, each "
        f"timing the second epoch of {settings.steps} steps of one `fit`; device: {device}.",
    ]
    details = [f"the record pipeline alone delivers {rates['pipeline']:.0f} images/s "
               f"({1000 / rates['pipeline']:.1f} ms of the machine per image)"]
    if not devices:
        # Sharing the cores, each image costs the model's time plus the pipeline's: r = 1 / (1/memory + 1/pipeline).
        expected = rates["pipeline"] / (rates["pipeline"] + from_memory)
        details.append(f"on a CPU-only machine the pipeline and the model share the cores, so the expected ratio is "
                       f"pipeline / (pipeline + model) = {expected:.2f}; the model needs "
                       f"{1000 / from_memory:.0f} ms of the machine per image")
        notes.append("`--only B3` on a GPU machine measures whether the pipeline keeps the GPU fed, which is what "
                     "the goal is about.")
    return [Result(
        id="B3", what=f"training steps, {settings.backbone} at dim {settings.dim} ({device})",
        ours=from_records, baseline=from_memory, unit="images/s", ratio=from_records / from_memory, goal=GOAL,
        ours_label="record pipeline", baseline_label="same batches from memory", details=details, notes=notes)]
