"""B4 — test-set prediction of a 5-fold ensemble: batched, photos decoded once for all folds, vs one call per photo.

Ours: what `photoid train --job test` does — the test records read and decoded once
(`photoid.records.reader.build_dataset(training=False)`), each batch going through all five fold models in one Keras
`predict` (`photoid.inference.fold_models.FoldStack`). Fold-by-fold prediction (`predict_files` per fold model, decoding the test
set again for every fold) is measured too, and its probabilities must equal ours, which checks that both compute
the same thing. Baseline: the original
notebook's loop — for every fold, for every test photo, read and decode the original JPEG, resize it to `dim`,
scale it, and call `model(image)` on a batch of one.

The baseline runs on a subset of the test photos (every photo costs the same there); rates are photos per second
for all five folds. Writing the test records is not timed: `photoid tfrecords` writes them with the training
records, before any model exists.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import photoid  # noqa: F401  (selects tf-keras before TensorFlow is imported)
import tensorflow as tf

from _common import Goal, Result, interleaved_medians, pool_workers, synthetic_turtles, turtle_records

GOAL = Goal(5.0)
N_CLASSES = 2265  # the Turtle Recall head


@dataclass(frozen=True)
class Settings:
    photos: tuple[int, int]  # (long side in px, number of photos); the test set is about a tenth of them
    backbone: str
    dim: int
    dim_pre: int
    folds: int
    batch_size: int
    baseline_photos: int  # test photos the baseline predicts per round
    rounds: int


PRESETS = {
    "full": Settings(photos=(1500, 300), backbone="efficientnet-b0", dim=256, dim_pre=512, folds=5, batch_size=16,
                     baseline_photos=4, rounds=3),
    "tiny": Settings(photos=(96, 24), backbone="simple-cnn", dim=32, dim_pre=32, folds=2, batch_size=8,
                     baseline_photos=2, rounds=1),
}


def predict_all_folds(stack, files: list[str], settings: Settings) -> np.ndarray:
    """Probabilities [folds, photos, classes] from a `FoldStack`: the records are decoded once, each batch feeds
    every fold's model (as `photoid.training.predictions.predict_test`, which builds one stack for all its TTA passes)."""
    from photoid.training.predictions import predict_files

    return np.moveaxis(predict_files(stack, files, _config(settings), tta=0)[0], 1, 0)


def _config(settings: Settings):
    from photoid.runs.config import Config

    return Config(dim=settings.dim, dim_pre=settings.dim_pre, batch_size=settings.batch_size)


def predict_fold_by_fold(models: list, files: list[str], settings: Settings) -> np.ndarray:
    """`predict_files` per fold, each reading and decoding the test records again."""
    from photoid.training.predictions import predict_files

    return np.stack([predict_files(model, files, _config(settings), tta=0)[0] for model in models])


def notebook_image(path: str, dim: int) -> tf.Tensor:
    """The original notebook's input for one photo: decode the JPEG file, resize to dim, scale, add a batch axis."""
    image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3, dct_method="INTEGER_ACCURATE")
    image = tf.reshape(tf.image.resize(image, [dim, dim]), [dim, dim, 3])
    return image[tf.newaxis] / 255.0


def predict_one_by_one(models: list, paths: list[str], dim: int) -> np.ndarray:
    """The original notebook's loop, once per fold: every photo decoded and predicted alone."""
    return np.stack([np.concatenate([model(notebook_image(p, dim)).numpy() for p in paths]) for model in models])


def _rate(predict, n_photos: int) -> float:
    started = time.perf_counter()
    predict()
    return n_photos / (time.perf_counter() - started)


def run(preset: str, cache_dir: Path) -> list[Result]:
    import pandas as pd

    from photoid.models.factory import build_models
    from photoid.records.reader import test_files

    settings = PRESETS[preset]
    side, n_photos = settings.photos
    data_dir = synthetic_turtles(cache_dir, side, n_photos)
    files = test_files(turtle_records(cache_dir, data_dir, settings.dim_pre, layout="compact",
                                      workers=pool_workers(n_photos)))
    test_ids = pd.read_csv(data_dir / "test.csv", dtype=str)["image_id"].tolist()
    paths = [str(data_dir / "images" / f"{image_id}.JPG") for image_id in test_ids]
    subset = paths[:settings.baseline_photos]
    models = [build_models(backbone=settings.backbone, dim=settings.dim, n_classes=N_CLASSES).predict
              for _ in range(settings.folds)]

    from photoid.inference.fold_models import FoldStack

    stack = FoldStack(models)
    ours, by_fold = predict_all_folds(stack, files, settings), predict_fold_by_fold(models, files, settings)
    if not np.allclose(ours, by_fold, atol=1e-5):
        raise RuntimeError("predicting all folds at once gave other probabilities than predict_files fold by fold")
    predict_one_by_one(models, subset[:1], settings.dim)  # first eager calls set up kernels: not timed
    rates = interleaved_medians(settings.rounds, {
        "ours": lambda: _rate(lambda: predict_all_folds(stack, files, settings), len(paths)),
        "by_fold": lambda: _rate(lambda: predict_fold_by_fold(models, files, settings), len(paths)),
        "baseline": lambda: _rate(lambda: predict_one_by_one(models, subset, settings.dim), len(subset)),
    })
    details = [
        f"fold by fold instead (`predict_files` per fold model, decoding the records once per fold): "
        f"{rates['by_fold']:.2f} photos/s ({rates['by_fold'] / rates['baseline']:.2f}× the baseline); decoding once "
        f"for all folds is {rates['ours'] / rates['by_fold']:.2f}× that",
    ]
    notes = [
        f"{settings.folds} folds of {settings.backbone} at dim {settings.dim} (records at dim_pre {settings.dim_pre}), "
        f"{N_CLASSES}-way softmax, batch {settings.batch_size}; {len(paths)} test photos of {side} px (the baseline: "
        f"{len(subset)} of them per round); median of {settings.rounds} alternating rounds.",
    ]
    return [Result(
        id="B4", what=f"{settings.folds}-fold test prediction, {settings.backbone} at dim {settings.dim}",
        ours=rates["ours"], baseline=rates["baseline"], unit="photos/s", ratio=rates["ours"] / rates["baseline"],
        goal=GOAL, ours_label="batched, decoded once", baseline_label="model(image) per photo per fold",
        details=details, notes=notes)]
