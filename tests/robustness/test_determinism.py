"""Determinism: the same inputs and seed give the same bytes.

Folds and records never depend on chance beyond their seed (nor on the number of worker processes). Training on
CPU with `--seed` and `--deterministic true` (TensorFlow op determinism) gives byte-identical predictions,
history, checkpoint weights and submission; another seed gives other predictions, so the comparison can fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from photoid.core.io import load_npy
from robustness_support import (file_bytes, reaped, run_photoid, start_photoid, temporary_files,
                                write_turtle_folder)


def test_folds_and_records_are_identical_whatever_the_workers(tmp_path, capsys):
    data = write_turtle_folder(tmp_path / "data")
    outputs = []
    for workers, seed in (("1", "33"), ("2", "33"), ("1", "34")):
        out = tmp_path / f"tfrec_{workers}_{seed}"
        code, _, err = run_photoid(capsys, "tfrecords", "--data_dir", data, "--out_dir", out, "--n_folds", "2",
                                   "--dim_pre", "16", "--shards", "2", "--workers", workers, "--seed", seed)
        assert code == 0, err
        outputs.append(file_bytes(out))
    one_worker, two_workers, other_seed = outputs
    assert len(one_worker) == 2 * 3 + 2  # two shards for each fold and the test set, folds.csv, records.json
    assert one_worker == two_workers
    assert other_seed["folds.csv"] != one_worker["folds.csv"]
    assert other_seed["test.tfrecord-00000-of-00002"] == one_worker["test.tfrecord-00000-of-00002"]


def weights_of(path: Path) -> list[np.ndarray]:
    import h5py

    arrays: list[np.ndarray] = []
    with h5py.File(path, "r") as f:
        f["layers"].visititems(lambda name, item: arrays.append(item[()]) if isinstance(item, h5py.Dataset) else None)
    return arrays


def manifest_without_run_dir(path: Path) -> dict:
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["config"].pop("run_dir")
    return manifest


@pytest.mark.slow  # trains three runs, in fresh processes
def test_seeded_deterministic_training_gives_identical_outputs(turtle_dir, turtle_records, tmp_path):
    def start(name: str, seed: str):
        argv = ["train", "--model", "cpu-demo", "--data_dir", turtle_dir, "--run_dir", tmp_path / name,
                "--n_folds", "2", "--final_fold", "1", "--n_epochs", "2", "--steps_per_epoch", "5", "--dim", "32",
                "--dim_pre", "32", "--batch_size", "8", "--buffer_size", "32", "--verbose", "0", "--tta_number", "1",
                "--seed", seed, "--deterministic", "true"]
        return start_photoid(*argv, log_dir=tmp_path, name=name)

    # Three processes at once: each holds its own TensorFlow, and op determinism is process-wide.
    runs = {name: start(name, seed) for name, seed in (("first", "7"), ("second", "7"), ("other_seed", "8"))}
    with reaped(*(process for process, _, _ in runs.values())):
        for process, _, err in runs.values():
            assert process.wait(timeout=900) == 0, err.read_text()
    first, second, other = (tmp_path / name for name in runs)

    predictions = sorted(p.name for p in (first / "preds").glob("*.npy"))
    assert predictions == ["y_pred_test_fold_0_tta_0.npy", "y_pred_test_fold_0_tta_1.npy",
                           "y_pred_val_fold_0_tta_0.npy", "y_pred_val_fold_0_tta_1.npy"]
    for name in predictions:
        assert (first / "preds" / name).read_bytes() == (second / "preds" / name).read_bytes(), name
        manifest = Path(name).with_suffix(".json")
        assert manifest_without_run_dir(first / "preds" / manifest) == manifest_without_run_dir(
            second / "preds" / manifest)
    for name in ("fold_0/history.csv", "fold_0/best.json", "submission.csv", "cv_scores.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    for a, b in zip(weights_of(first / "fold_0/best.weights.h5"), weights_of(second / "fold_0/best.weights.h5")):
        assert np.array_equal(a, b)

    # The seed decides: another one gives other weights and predictions.
    assert not np.array_equal(load_npy(first / "preds" / predictions[0]), load_npy(other / "preds" / predictions[0]))
    for run in runs:
        assert temporary_files(tmp_path / run) == []
    assert file_bytes(first / "fold_0").keys() == file_bytes(second / "fold_0").keys()
