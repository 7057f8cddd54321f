"""Training of one fold: the original's optimiser and callbacks, with a best checkpoint that cannot go stale.

Per fold, `RUN/fold_K/` holds `best.weights.h5` (the best epoch by the monitor, written atomically),
`best.json` (which epoch, which value), `history.csv` (one row per epoch), `curve.png` and, once finished,
`done.json`. A killed fold resumes from its last finished epoch (`BackupAndRestore`); a finished fold is not
trained again unless asked (`--force`).
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import numpy as np

import photoid  # noqa: F401
import tensorflow as tf
import tf_keras

from photoid import io as pio
from photoid.ensemble import BEST_WEIGHTS, remove_fold_predictions
from photoid.errors import PhotoidError

BACKUP_DIR = "backup"  # BackupAndRestore's state while a fold trains; resumes a killed fold


def monitor_mode(monitor: str) -> str:
    """As Keras' `mode='auto'`: accuracies are maximised, losses minimised."""
    return "max" if "acc" in monitor else "min"


class BestCheckpoint(tf_keras.callbacks.Callback):
    """Keep the best epoch's weights in one fixed file per fold, written to a temporary name then renamed.

    The best value so far is stored beside the weights, so a resumed fold keeps comparing against it.
    """

    def __init__(self, fold_dir: Path, monitor: str, weights_model: tf_keras.Model | None = None):
        super().__init__()
        self.fold_dir, self.monitor, self.mode = Path(fold_dir), monitor, monitor_mode(monitor)
        self.weights_model = weights_model
        self.best_path, self.info_path = self.fold_dir / BEST_WEIGHTS, self.fold_dir / "best.json"
        self.best = -math.inf if self.mode == "max" or monitor == "last" else math.inf
        if self.info_path.exists() and self.best_path.exists():
            self.best = pio.read_json(self.info_path)["value"]

    def on_epoch_end(self, epoch, logs=None):
        # monitor "last": every finished epoch replaces the checkpoint (its value is the epoch number).
        value = epoch + 1 if self.monitor == "last" else (logs or {}).get(self.monitor)
        if value is None:
            raise PhotoidError(f"monitor {self.monitor!r} is not among the logged metrics {sorted(logs or {})}")
        # An epoch whose training loss became NaN ends with broken weights whose validation accuracy can still
        # be a number (argmax of NaN rows): such weights must never replace the best checkpoint.
        if not np.isfinite(value) or not np.isfinite((logs or {}).get("loss", 0.0)):
            return
        better = value > self.best if self.mode == "max" or self.monitor == "last" else value < self.best
        if better:
            self.best = float(value)
            with pio.atomic_path(self.best_path, suffix=".weights.h5") as tmp:
                (self.weights_model or self.model).save_weights(tmp)
            pio.write_json(self.info_path, {"epoch": epoch + 1, "monitor": self.monitor, "value": self.best})


class StopOnNaN(tf_keras.callbacks.Callback):
    """Stop at the first non-finite loss and remember where, so the fold ends with a clear message."""

    def __init__(self):
        super().__init__()
        self.where: str | None = None
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            self.where = f"epoch {self.epoch + 1}, batch {batch + 1}"
            self.model.stop_training = True


def warmup_decay(lr: float, warmup_epochs: int, decay: float):
    """photoid's simplification of the Where's Whale-do schedule: linear ramp from lr/100 to lr, then ×decay per
    epoch with a floor of lr/100 (`whaledo` is the winner's own)."""

    def schedule(epoch: int, _current=None) -> float:
        if epoch < warmup_epochs:
            start = lr / 100
            return start + (lr - start) * epoch / max(1, warmup_epochs)
        return max(lr * decay ** (epoch - warmup_epochs), lr / 100)

    return schedule


def whaledo(lr_max: float, lr_start: float, lr_min: float, ramp_steps: int, decay: float):
    """The Where's Whale-do winner's learning rate per epoch, as its WhaleScheduler actually ran.

    Its formula of the step t: a linear ramp from lr_start to lr_max over `ramp_steps` steps, then
    (lr_max - lr_min)·decay^(t - ramp_steps) + lr_min (an additive floor). The scheduler's `get_lr` advances its
    own step counter on top of the one torch's `step()` advances, so epoch k ≥ 1 ran the formula at t = 2k
    (epoch 0 at lr_start): the ramp peaks near epoch 7 and the decay is 0.8² per epoch.
    """

    def formula(t: int) -> float:
        if t < ramp_steps:
            return (lr_max - lr_start) / ramp_steps * t + lr_start
        return (lr_max - lr_min) * decay ** (t - ramp_steps) + lr_min

    def schedule(epoch: int, _current=None) -> float:
        return lr_start if epoch == 0 else formula(2 * epoch)

    return schedule


def learning_rate_schedule(cfg):
    """The per-epoch schedule of a recipe's `lr_schedule` (not `plateau`, which follows the monitor)."""
    if cfg.lr_schedule == "whaledo":
        return whaledo(cfg.lr, cfg.lr_start, cfg.lr_min, cfg.lr_ramp_steps, cfg.lr_decay)
    return warmup_decay(cfg.lr, cfg.warmup_epochs, cfg.lr_decay)


def make_callbacks(cfg, fold_dir: Path, weights_model, nan_guard: StopOnNaN) -> list:
    callbacks = [
        nan_guard,
        BestCheckpoint(fold_dir, cfg.monitor, weights_model),
        tf_keras.callbacks.BackupAndRestore(str(fold_dir / BACKUP_DIR)),
    ]
    if cfg.lr_schedule == "plateau":
        callbacks.append(
            tf_keras.callbacks.ReduceLROnPlateau(
                monitor=cfg.monitor, factor=0.5, patience=cfg.patience_lr, min_delta=1e-4, min_lr=1e-8, verbose=1, mode="auto"
            )
        )
    else:
        callbacks.append(tf_keras.callbacks.LearningRateScheduler(learning_rate_schedule(cfg)))
    # After the learning-rate callbacks, so the logged row includes the epoch's `lr`.
    callbacks.append(tf_keras.callbacks.CSVLogger(str(fold_dir / "history.csv"), append=True))
    if cfg.monitor != "last":
        callbacks.append(tf_keras.callbacks.EarlyStopping(
            monitor=cfg.monitor, patience=cfg.patience_stop, min_delta=1e-4, mode="auto", verbose=1))
    return callbacks


def fold_is_done(fold_dir: Path) -> bool:
    return (fold_dir / "done.json").exists() and (fold_dir / BEST_WEIGHTS).exists()


def initial_models(cfg, n_classes: int):
    """The models a fold starts training from: the recipe's backbone with its named pretrained set, or with every
    weight from a `--weights` file (any of `backbones.WEIGHTS_SUFFIXES`; none is ignored)."""
    from photoid.backbones import is_weights_file
    from photoid.model import build_models_from_config, load_weights_file

    models = build_models_from_config(cfg, n_classes)
    if is_weights_file(cfg.weights):
        load_weights_file(models.predict, cfg.weights, n_classes)
    return models


def train_fold(cfg, fold: int, run_dir: Path, strategy, n_classes: int) -> dict:
    """Train fold `fold` (validate on it, train on the others) and return the summary written to done.json."""
    from photoid.model import compile_for_training
    from photoid.pipeline import count_records
    from photoid.records import fold_files

    fold_dir = run_dir / f"fold_{fold}"
    if cfg.force and fold_dir.exists():
        shutil.rmtree(fold_dir)
    # Whatever this fold predicted before was predicted by weights that training is about to replace.
    remove_fold_predictions(run_dir, fold)
    fold_dir.mkdir(parents=True, exist_ok=True)
    if not (fold_dir / "config.json").exists():  # what this fold trains with; a resumed fold keeps the first
        pio.write_json(fold_dir / "config.json", cfg.to_dict())
    train_folds = [f for f in range(cfg.n_folds) if f != fold]
    train_files = fold_files(cfg.records_dir, train_folds)
    val_files = fold_files(cfg.records_dir, [fold])
    n_train = count_records(train_files)
    if n_train == 0 or count_records(val_files) == 0:
        raise PhotoidError(f"fold {fold}: no training or validation images in {cfg.records_dir}")

    arcface = cfg.head == "arcface"
    common = dict(dim=cfg.dim, dim_pre=cfg.dim_pre, batch_size=cfg.batch_size, seed=cfg.seed + fold)
    if cfg.paired:
        from photoid.whales.pairs import build_paired_dataset

        train_ds = build_paired_dataset(train_files, training=True, aug_number=cfg.aug_number,
                                        aug_percentage=cfg.aug_percentage, buffer_size=cfg.buffer_size,
                                        cache=cfg.cache, augment=cfg.augment, **common)
        val_ds = build_paired_dataset(val_files, training=False, cache=cfg.cache, **common)
    else:
        train_ds, val_ds = _single_datasets(cfg, train_files, val_files, arcface, common)

    with strategy.scope():
        models = initial_models(cfg, n_classes)
        trained = models.train
        if cfg.paired:
            from photoid.whales.pairs import paired_train_model

            trained = paired_train_model(models.train)
        compile_for_training(trained, cfg.lr)

    nan_guard = StopOnNaN()
    if cfg.n_examples_total:  # the original's way to set an epoch: the training share of n_examples_total
        n_train = cfg.n_examples_total - cfg.n_examples_total // cfg.n_folds
    steps = cfg.steps_per_epoch or max(1, n_train // cfg.batch_size)
    started = time.time()
    trained.fit(
        train_ds,
        steps_per_epoch=steps,
        epochs=cfg.n_epochs,
        validation_data=val_ds,
        callbacks=make_callbacks(cfg, fold_dir, models.predict, nan_guard),
        verbose=cfg.verbose,
    )
    # BackupAndRestore deletes its checkpoint when fit() ends but leaves the folder: an empty `backup` would read
    # as an unfinished fold.
    shutil.rmtree(fold_dir / BACKUP_DIR, ignore_errors=True)
    history = _read_history(fold_dir / "history.csv")
    curve_metric = "val_acc" if cfg.monitor == "last" else cfg.monitor
    plot_history(history, curve_metric, fold_dir / "curve.png", title=f"{cfg.model} fold {fold}")
    best_file = fold_dir / "best.json"
    if nan_guard.where is not None:
        kept = f"the best checkpoint so far is kept in {fold_dir / BEST_WEIGHTS}" if best_file.exists() else "no epoch ended with a finite loss, so there is no checkpoint"
        raise PhotoidError(f"fold {fold}: the loss became NaN at {nan_guard.where}; training stopped; {kept}. Try a lower --lr.")
    if not best_file.exists():
        raise PhotoidError(f"fold {fold}: no epoch produced a finite {cfg.monitor}; nothing to keep")
    summary = {
        **pio.read_json(best_file),
        "fold": fold,
        "epochs_run": len(history.get("epoch", [])),
        "seconds": round(time.time() - started, 1),
        "n_train": n_train,
        "steps_per_epoch": steps,
    }
    pio.write_json(fold_dir / "done.json", summary)
    return summary


def _single_datasets(cfg, train_files, val_files, arcface: bool, common: dict):
    """One photo per example: (image, label), or ((image, label), label) for ArcFace's margin."""
    from photoid.pipeline import build_dataset

    common = dict(common, image_inverted=cfg.image_inverted)
    train_ds = build_dataset(
        train_files,
        training=True,
        aug_number=cfg.aug_number,
        aug_percentage=cfg.aug_percentage,
        aug_draw=cfg.aug_draw,
        buffer_size=cfg.buffer_size,
        cache=cfg.cache,
        augment=cfg.augment,
        **common,
    )
    val_ds = build_dataset(val_files, training=False, cache=cfg.cache, **common)
    if arcface:  # the margin needs the label as a model input
        train_ds = train_ds.map(lambda x, y: ((x, y), y))
        val_ds = val_ds.map(lambda x, y: ((x, y), y))
    return train_ds, val_ds


def _read_history(path: Path) -> dict[str, list[float]]:
    import pandas as pd

    if not path.exists():
        return {}
    frame = pd.read_csv(path)
    return {column: frame[column].tolist() for column in frame.columns}


def plot_history(history: dict, monitor: str, path: Path, title: str) -> None:
    """Loss and the monitored metric per epoch, training and validation side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    epochs = [e + 1 for e in history["epoch"]]
    metric = monitor.removeprefix("val_")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, name in zip(axes, ["loss", metric]):
        for prefix, style in [("", "-"), ("val_", "--")]:
            if prefix + name in history:
                ax.plot(epochs, history[prefix + name], style, marker="o", label=prefix + name)
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with pio.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
