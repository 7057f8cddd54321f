"""Out-of-fold and test predictions per fold and TTA, each with a manifest that says what produced it.

`RUN/preds/y_pred_{split}_fold_{f}_tta_{t}.npy` (float32, rows × classes) and `.json` beside it: recipe, split,
fold, TTA, class count and hash, the row ids in order, the data and the resolved configuration. Validation rows
follow fold f's rows in `folds.csv`; test rows follow the test records (the order of `test.csv`).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import tensorflow as tf

from photoid.core.errors import PhotoidError
from photoid.inference.fold_models import FoldStack, predict_records, read_record_ids
from photoid.runs.folder import RunDir


def predict_files(model, files: list[str], cfg, tta: int) -> tuple[np.ndarray, list[str]]:
    """Predict every record in `files` with TTA transform `tta`; returns (probabilities, row ids)."""
    probs = predict_records(model, files, dim=cfg.dim, dim_pre=cfg.dim_pre, batch_size=cfg.batch_size, tta=tta,
                            image_inverted=cfg.image_inverted)
    return probs, read_record_ids(files)


def predict_validation(cfg, fold: int, run_dir: Path, model, weights_sha256: str, classes: list[str],
                       expected_val_ids: list[str]) -> None:
    """Out-of-fold predictions of fold `fold`'s model (weights loaded) for every TTA transform."""
    from photoid.records.reader import fold_files

    for tta in range(cfg.tta_number + 1):
        probs, ids = predict_files(model, fold_files(cfg.records_dir, [fold]), cfg, tta)
        if ids != expected_val_ids:
            raise PhotoidError(f"fold {fold}: the records' rows differ from folds.csv; rebuild the records")
        RunDir(run_dir).save_prediction("val", fold, tta, probs, ids, cfg, classes, weights_sha256)
    print(f"fold {fold}: out-of-fold predictions for {cfg.tta_number + 1} TTA transform(s) written")


# Share of the device's memory that a group of fold models' weights may take when the test set is predicted; the
# rest is for activations, the input pipeline and TensorFlow itself.
WEIGHTS_SHARE_OF_MEMORY = 0.25
ASSUMED_GPU_MEMORY = 16 * 2**30  # when a GPU does not say: the smallest card the 512 px recipes were run on


def device_memory_bytes() -> int:
    """Memory of the device the models run on: the first GPU's total (nvidia-smi), else the RAM available now."""
    if tf.config.list_physical_devices("GPU"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", "0"],
                                 capture_output=True, text=True, timeout=20, check=True).stdout
            return int(out.split()[0]) * 2**20
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return ASSUMED_GPU_MEMORY
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def folds_at_once(n_params: int, n_folds: int, memory: int | None = None) -> int:
    """How many fold models (float32 weights, `n_params` each) to predict with at once within the memory budget."""
    budget = WEIGHTS_SHARE_OF_MEMORY * (device_memory_bytes() if memory is None else memory)
    return max(1, min(n_folds, int(budget // (4 * n_params))))


def predict_test(cfg, folds: list[int], run_dir: Path, models: list, classes: list[str],
                 weights_sha256s: list[str]) -> None:
    """Test predictions of every fold model (weights loaded; `models[i]` is fold `folds[i]`, loaded from the file
    whose sha256 is `weights_sha256s[i]`) for every TTA transform.

    Each TTA pass reads and decodes the test records once and feeds every batch to all the folds' models; the files
    written are the same per-fold files as fold-by-fold prediction writes.
    """
    from photoid.records.reader import test_files

    files = test_files(cfg.records_dir)
    stack = FoldStack(models)
    for tta in range(cfg.tta_number + 1):
        probs, ids = predict_files(stack, files, cfg, tta)  # [photos, folds, classes]
        for i, fold in enumerate(folds):
            RunDir(run_dir).save_prediction("test", fold, tta, np.ascontiguousarray(probs[:, i]), ids, cfg, classes,
                                            weights_sha256s[i])
    print(f"test predictions of fold(s) {folds} for {cfg.tta_number + 1} TTA transform(s) written to "
          f"{RunDir(run_dir).preds_dir}")
