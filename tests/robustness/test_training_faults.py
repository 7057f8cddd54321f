"""Training that survives its faults: a diverging loss stops the fold and keeps its best checkpoint, and a fold
killed after some epochs and resumed follows the uninterrupted run's learning rates, early stopping and best epoch.
Fold 0 of the session's tiny records, through `photoid train`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from photoid.core import io as pio
from robustness_support import kill, reaped, run_photoid, start_photoid, wait_until


pytestmark = pytest.mark.slow  # every test trains


def train_argv(turtle_dir: Path, run_dir: Path, *extra: str) -> list:
    """Fold 0, a few batches per epoch; the plateau and early-stopping patiences are short so both act."""
    return ["train", "--model", "cpu-demo", "--data_dir", turtle_dir, "--run_dir", run_dir, "--n_folds", "2",
            "--final_fold", "1", "--n_epochs", "10", "--steps_per_epoch", "3", "--dim", "32", "--dim_pre", "32",
            "--batch_size", "8", "--buffer_size", "32", "--verbose", "2", "--job", "train", "--patience_lr", "1",
            "--patience_stop", "3", "--seed", "7", "--deterministic", "true", *extra]


def history(fold_dir: Path) -> pd.DataFrame:
    path = fold_dir / "history.csv"
    return pd.read_csv(path) if path.exists() and path.read_text().strip() else pd.DataFrame({"epoch": []})


def test_an_absurd_learning_rate_stops_the_fold_with_a_clear_message(turtle_dir, turtle_records, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, _, err = run_photoid(capsys, *train_argv(turtle_dir, run_dir, "--lr", "1e12"))
    assert code == 2 and "Traceback" not in err
    # The loss stays finite (about 1e26 here): only the divergence guard stops it.
    assert err.startswith("error: fold 0: the loss diverged to "), err
    assert "above 1000 times its start" in err and "(--divergence_factor) at epoch 1, batch 2" in err
    assert "no epoch ended before it diverged, so there is no checkpoint. Try a lower --lr." in err
    assert not (run_dir / "fold_0" / "best.weights.h5").exists() and not (run_dir / "fold_0" / "done.json").exists()
    # The threshold is an option: 0 turns the guard off, and the same run trains to its end.
    code, _, err = run_photoid(capsys, *train_argv(turtle_dir, tmp_path / "unguarded", "--lr", "1e12",
                                                   "--divergence_factor", "0", "--n_epochs", "1"))
    assert code == 0, err
    assert history(tmp_path / "unguarded" / "fold_0")["loss"][0] > 1e12


def test_divergence_after_good_epochs_keeps_the_best_checkpoint(turtle_dir, turtle_records, tmp_path, capsys,
                                                               monkeypatch):
    import tf_keras

    from photoid.training import fold as train

    make_callbacks = train.make_callbacks

    def learning_rate_explodes_at_epoch_3(cfg, fold_dir, weights_model, loss_guard):
        def explode(epoch, logs=None):
            if epoch == 2:
                weights_model.optimizer.learning_rate.assign(1e12)
        return [tf_keras.callbacks.LambdaCallback(on_epoch_begin=explode),
                *make_callbacks(cfg, fold_dir, weights_model, loss_guard)]

    monkeypatch.setattr(train, "make_callbacks", learning_rate_explodes_at_epoch_3)
    run_dir = tmp_path / "run"
    fold_dir = run_dir / "fold_0"
    code, _, err = run_photoid(capsys, *train_argv(turtle_dir, run_dir, "--patience_lr", "100"))
    assert code == 2 and err.startswith("error: fold 0: the loss diverged to "), err
    assert "at epoch 3, batch" in err and f"the best checkpoint so far is kept in {fold_dir / 'best.weights.h5'}" in err
    best = pio.read_json(fold_dir / "best.json")
    assert best["epoch"] in (1, 2)
    assert history(fold_dir)["loss"][:2].max() < 10


def test_a_killed_fold_resumes_exactly_as_if_never_stopped(turtle_dir, turtle_records, tmp_path, capsys):
    whole = tmp_path / "whole"
    code, _, err = run_photoid(capsys, *train_argv(turtle_dir, whole))
    assert code == 0, err
    expected = history(whole / "fold_0")
    # The plateau halves the rate and early stopping ends the fold before its 10 epochs: both counters matter.
    assert expected["lr"].nunique() > 1 and len(expected) < 10

    resumed = tmp_path / "resumed"
    process, _, err_path = start_photoid(*train_argv(turtle_dir, resumed), log_dir=tmp_path, name="train")
    with reaped(process):
        wait_until(lambda: len(history(resumed / "fold_0")) >= 3, process, timeout=300,
                   what="three finished epochs", interval=0.02)
        kill(process)
    killed_at = len(history(resumed / "fold_0"))
    assert 3 <= killed_at < len(expected), err_path.read_text()
    code, stdout, err = run_photoid(capsys, *train_argv(turtle_dir, resumed))
    assert code == 0, err
    assert "Epoch 1/" not in stdout  # it went on, it did not start again
    got = history(resumed / "fold_0")
    assert got["epoch"].tolist() == expected["epoch"].tolist()
    assert got["lr"].tolist() == expected["lr"].tolist()
    np.testing.assert_allclose(got["loss"], expected["loss"], rtol=1e-5)
    np.testing.assert_allclose(got["val_acc"], expected["val_acc"], rtol=1e-5)
    assert pio.read_json(resumed / "fold_0" / "best.json") == pio.read_json(whole / "fold_0" / "best.json")
    assert pio.read_json(resumed / "fold_0" / "done.json")["epochs_run"] == len(expected)


@pytest.mark.parametrize("factor", ["1", "0.5", "-3"])
def test_a_divergence_factor_that_would_stop_every_fold_is_refused(turtle_dir, tmp_path, capsys, factor):
    code, _, err = run_photoid(capsys, *train_argv(turtle_dir, tmp_path / "run", "--divergence_factor", factor))
    assert code == 2 and "divergence_factor must be above 1 (or 0: no divergence guard)" in err
    assert not (tmp_path / "run").exists()


def test_history_of_a_resumed_fold_has_each_finished_epoch_once(tmp_path):
    from photoid.training.fold import BACKUP_DIR, RESUME_STATE, align_history

    logs = [{"loss": 3.0 - e, "lr": 0.002, "val_acc": 0.1 * e} for e in range(3)]
    (tmp_path / BACKUP_DIR).mkdir()
    pio.write_json(tmp_path / BACKUP_DIR / RESUME_STATE, {str(e): {"logs": row} for e, row in enumerate(logs)})
    pd.DataFrame([{"epoch": e, **row} for e, row in enumerate(logs[:2])]).to_csv(tmp_path / "history.csv",
                                                                                index=False)
    # Killed after saving epoch 2's weights, before logging it: its row comes from the saved state.
    align_history(tmp_path, 3)
    assert history(tmp_path).to_dict("records") == [{"epoch": e, **row} for e, row in enumerate(logs)]
    # Killed after logging epoch 2, before saving its weights: epoch 2 runs again, its old row goes.
    align_history(tmp_path, 2)
    assert history(tmp_path)["epoch"].tolist() == [0, 1]
