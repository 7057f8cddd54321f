"""GPU figures of the Turtle Recall recipes (`make bench-gpu`): training and prediction images/s, peak GPU memory.

For each recipe (default `ef1b7` and `ef2l` at 512 px, weights `none`: nothing is downloaded) with mixed precision
off and on: images/s of training steps (`fit` on a repeated in-memory batch of random images, so the model alone
is timed; B1 and B3 measure the input pipeline), images/s of `predict`, and the device's peak memory. From the
training rate, the time the full 6 × 5 ensemble would take at that rate: `EPOCH_IMAGES` images per epoch (the
original's 10243 // batch steps) times `--epochs_per_fold`, for 30 folds, beside the original's 100 TPU-hours.

Writes its rows to the "On a GPU" section of `benchmarks/results.md` (replacing an earlier one). It refuses to run
without a GPU unless given `--allow_cpu` (the tests run it that way at a tiny size, to keep it working).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
EPOCH_IMAGES = 10_243  # the original's training images per epoch (n_examples_total - n_examples_total // 5)
ORIGINAL_TPU_HOURS = 100  # the original's 6 x 5 training on a TPUv3-8
SECTION = "## On a GPU (`make bench-gpu`)"


@dataclass(frozen=True)
class Measure:
    recipe: str
    mixed_precision: bool
    batch_size: int
    train_rate: float  # images/s
    predict_rate: float  # images/s
    peak_gib: float | None  # None where the device does not say (CPU)


def measure(recipe: str, dim: int, mixed: bool, batch_size: int | None, steps: int) -> Measure:
    import numpy as np
    import tensorflow as tf
    import tf_keras

    from photoid.runs.config import Config, read_recipe, find_recipe
    from photoid.models.factory import build_models_from_config, compile_for_training

    cfg = Config(**{**read_recipe(find_recipe(recipe)), "weights": "none", "dim": dim, "dim_pre": dim})
    batch = batch_size or cfg.batch_size
    tf_keras.backend.clear_session()
    tf_keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    gpu = bool(tf.config.list_physical_devices("GPU"))
    try:
        if gpu:
            tf.config.experimental.reset_memory_stats("GPU:0")
        models = build_models_from_config(cfg, n_classes=2265)
        compile_for_training(models.train, cfg.lr)
        rng = np.random.default_rng(0)
        images = rng.random((batch, dim, dim, 3), dtype=np.float32)
        labels = rng.integers(0, 2265, size=batch)
        data = tf.data.Dataset.from_tensors((images, labels)).repeat()
        models.train.fit(data, steps_per_epoch=2, epochs=1, verbose=0)  # build, trace and warm up
        started = time.perf_counter()
        models.train.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
        train_rate = steps * batch / (time.perf_counter() - started)
        many = np.concatenate([images] * steps)
        models.predict.predict(images, batch_size=batch, verbose=0)
        started = time.perf_counter()
        models.predict.predict(many, batch_size=batch, verbose=0)
        predict_rate = len(many) / (time.perf_counter() - started)
        peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30 if gpu else None
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")
    return Measure(recipe, mixed, batch, train_rate, predict_rate, peak)


def rows(measures: list[Measure], dim: int, epochs_per_fold: int) -> list[str]:
    lines = ["| recipe | dim | mixed precision | batch | training images/s | prediction images/s | peak GPU memory | "
             f"6 × 5 folds at {epochs_per_fold} epochs |",
             "|---|---|---|---|---|---|---|---|"]
    for m in measures:
        hours = 30 * epochs_per_fold * EPOCH_IMAGES / m.train_rate / 3600
        peak = f"{m.peak_gib:.1f} GiB" if m.peak_gib is not None else "n/a (CPU)"
        lines.append(f"| {m.recipe} | {dim} | {'on' if m.mixed_precision else 'off'} | {m.batch_size} | "
                     f"{m.train_rate:.1f} | {m.predict_rate:.1f} | {peak} | {hours:.0f} h "
                     f"(original: {ORIGINAL_TPU_HOURS} TPU-hours) |")
    return lines


def write_section(results: Path, text: str) -> None:
    """Put `text` as the GPU section of `results`, replacing an earlier one (atomically)."""
    sys.path.insert(0, str(BENCH_DIR))
    from _report import replace_section

    replace_section(results, SECTION, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", default="ef1b7,ef2l")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=None, help="default: each recipe's own")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps (and prediction batches)")
    parser.add_argument("--epochs_per_fold", type=int, default=20,
                        help="epochs a fold trains before early stopping, for the full ensemble's time")
    parser.add_argument("--out", default=str(BENCH_DIR / "results.md"))
    parser.add_argument("--allow_cpu", action="store_true", help="run without a GPU (to check the script)")
    args = parser.parse_args(argv)

    import photoid  # noqa: F401  (selects tf-keras before TensorFlow is imported)
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and not args.allow_cpu:
        print("no GPU is visible to TensorFlow: run `make bench-gpu` on a machine with one", file=sys.stderr)
        return 2
    measures = [measure(recipe, args.dim, mixed, args.batch_size, args.steps)
                for recipe in args.recipes.split(",") for mixed in (False, True)]
    device = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else "CPU"
    text = "\n".join([SECTION, "", f"Device: {device}; weights none; random images from memory (the model alone; "
                      f"B1 and B3 measure the input pipeline); {args.steps} timed steps after 2 untimed ones. "
                      f"The last column is what all 30 folds of the ensemble would take at that recipe's "
                      f"training rate: 30 × {args.epochs_per_fold} epochs × {EPOCH_IMAGES:,} images.", "", *rows(measures, args.dim, args.epochs_per_fold), ""])
    print(text)
    write_section(Path(args.out), text)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
