"""Training of one fold: the original's optimiser and callbacks, with a best checkpoint that cannot go stale.

Per fold, `RUN/fold_K/` holds `best.weights.h5` (the best epoch by the monitor, written atomically),
`best.json` (which epoch, which value), `history.csv` (one row per epoch), `curve.png` and, once finished,
`done.json`. A killed fold resumes from its last finished epoch exactly: `BackupAndRestore` keeps the weights and
the optimiser, `ResumeState` the callbacks' counters (learning-rate plateau, early stopping, best value, the loss
guard's reference), and the training stream continues where that epoch left it. A finished fold is not trained
again unless asked (`--force`).
"""

from __future__ import annotations

import io
import math
import time
import warnings

import numpy as np
import tensorflow as tf
import tf_keras

from photoid.core import fs
from photoid.core import io as pio
from photoid.core.errors import PhotoidError
from photoid.runs.folder import (
    BACKUP_DIR,
    BEST_INFO,
    BEST_WEIGHTS,
    CURVE,
    DONE,
    FOLD_CONFIG,
    HISTORY,
    RunDir,
)

RESUME_STATE = "callbacks.json"  # in BACKUP_DIR: the callbacks' counters after each epoch (ResumeState)


def monitor_mode(monitor: str) -> str:
    """As Keras' `mode='auto'`: accuracies are maximised, losses minimised."""
    return "max" if "acc" in monitor else "min"


class BestCheckpoint(tf_keras.callbacks.Callback):
    """Keep the best epoch's weights in one fixed file per fold, written to a temporary name then renamed.

    The best value so far is stored beside the weights, so a resumed fold keeps comparing against it.
    """

    def __init__(self, fold_dir: fs.AnyPath, monitor: str, weights_model: tf_keras.Model | None = None,
                 loss_guard: "LossGuard | None" = None):
        super().__init__()
        self.fold_dir, self.monitor, self.mode = fs.as_path(fold_dir), monitor, monitor_mode(monitor)
        self.weights_model, self.loss_guard = weights_model, loss_guard
        self.best_path, self.info_path = self.fold_dir / BEST_WEIGHTS, self.fold_dir / BEST_INFO
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
        if self.loss_guard is not None and self.loss_guard.where is not None:  # the loss diverged in this epoch
            return
        better = value > self.best if self.mode == "max" or self.monitor == "last" else value < self.best
        if better:
            self.best = float(value)
            with pio.atomic_path(self.best_path, suffix=".weights.h5") as tmp:
                (self.weights_model or self.model).save_weights(tmp)
            pio.write_json(self.info_path, {"epoch": epoch + 1, "monitor": self.monitor, "value": self.best})


class LossGuard(tf_keras.callbacks.Callback):
    """Stop at the first non-finite loss, or at a loss above `divergence_factor` times the fold's first one.

    Keras logs the epoch's running mean loss after each batch; a fold whose mean grows that far beyond its start
    has diverged even while it stays finite (an absurd learning rate drives a batch-normalised model to ~1e25).
    The reference is the loss after the fold's first batch, kept across a resume (`ResumeState`).
    """

    def __init__(self, divergence_factor: float = 0.0):
        super().__init__()
        self.divergence_factor = divergence_factor
        self.where: str | None = None
        self.diverged: float | None = None  # the loss that crossed the limit
        self.start_loss: float | None = None
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        if not np.isfinite(loss):
            self.where = f"epoch {self.epoch + 1}, batch {batch + 1}"
            self.model.stop_training = True
        elif self.start_loss is None:
            self.start_loss = float(loss)
        elif self.divergence_factor > 0 and loss > self.divergence_factor * abs(self.start_loss):
            self.where, self.diverged = f"epoch {self.epoch + 1}, batch {batch + 1}", float(loss)
            self.model.stop_training = True


class ResumeState(tf_keras.callbacks.Callback):
    """Persists, after every epoch, the counters of the fold's callbacks, so a resumed fold continues exactly.

    `fields` maps a name to (callback, attribute names). The file (`backup/callbacks.json`) keeps every epoch's
    values and is written atomically before `BackupAndRestore` saves the weights of that epoch; a fold resumed at
    epoch e therefore always finds the values after epoch e - 1, even when killed between the two writes. It also
    keeps each epoch's logs: a run killed after saving an epoch's weights but before logging it gets its history
    row from there (`align_history`).
    """

    def __init__(self, path: fs.AnyPath, fields: dict[str, tuple[object, tuple[str, ...]]], restore_lr: bool = True):
        super().__init__()
        self.path, self.fields = fs.as_path(path), fields
        # A per-epoch schedule sets each epoch's rate itself; only a plateau schedule's rate is state to restore.
        self.restore_lr = restore_lr
        self.states = pio.read_json(self.path) if self.path.exists() else {}
        self.restored_epoch: int | None = None

    def on_epoch_begin(self, epoch, logs=None):
        # Here, not in on_train_begin: the callbacks reset their counters there, and BackupAndRestore only then
        # tells fit() at which epoch it goes on.
        if self.restored_epoch is not None or epoch == 0:
            return
        self.restored_epoch = epoch
        state = self.states.get(str(epoch - 1))
        if state is None:  # a backup written before photoid kept this file
            warnings.warn(f"{self.path} holds no state for epoch {epoch}, where the fold resumes: its learning-rate "
                          "and early-stopping counters start again (--force retrains the fold from the start)")
            return
        for name, (callback, attributes) in self.fields.items():
            for attribute in attributes:
                setattr(callback, attribute, state[name][attribute])
        if self.restore_lr:
            tf_keras.backend.set_value(self.model.optimizer.learning_rate, state["lr"])

    def on_epoch_end(self, epoch, logs=None):
        self.states[str(epoch)] = {
            "lr": float(tf_keras.backend.get_value(self.model.optimizer.learning_rate)),
            "logs": {key: _plain(value) for key, value in (logs or {}).items()},  # the epoch's history row
            **{name: {a: _plain(getattr(callback, a)) for a in attributes}
               for name, (callback, attributes) in self.fields.items()}}
        pio.write_json(self.path, self.states)


def _plain(value):
    """A callback's counter as JSON keeps it (numpy scalars become Python numbers; inf stays inf)."""
    return value.item() if isinstance(value, np.generic) else value


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


def make_callbacks(cfg, fold_dir: fs.AnyPath, weights_model, loss_guard: LossGuard) -> list:
    best = BestCheckpoint(fold_dir, cfg.monitor, weights_model, loss_guard)
    callbacks = [loss_guard, best]
    fields = {"loss_guard": (loss_guard, ("start_loss",)), "best_checkpoint": (best, ("best",))}
    if cfg.lr_schedule == "plateau":
        plateau = tf_keras.callbacks.ReduceLROnPlateau(
            monitor=cfg.monitor, factor=0.5, patience=cfg.patience_lr, min_delta=1e-4, min_lr=1e-8, verbose=1,
            mode="auto")
        callbacks.append(plateau)
        fields["plateau"] = (plateau, ("wait", "best", "cooldown_counter"))
    else:
        callbacks.append(tf_keras.callbacks.LearningRateScheduler(learning_rate_schedule(cfg)))
    if cfg.monitor != "last":
        early = tf_keras.callbacks.EarlyStopping(monitor=cfg.monitor, patience=cfg.patience_stop, min_delta=1e-4,
                                                 mode="auto", verbose=1)
        callbacks.append(early)
        fields["early_stopping"] = (early, ("wait", "best", "best_epoch"))
    # In this order: an epoch's counters are saved once every callback has updated them, then its weights (see
    # ResumeState), then its history row, after the learning-rate callbacks so that the row includes its `lr`.
    callbacks += [ResumeState(fold_dir / BACKUP_DIR / RESUME_STATE, fields, restore_lr=cfg.lr_schedule == "plateau"),
                  tf_keras.callbacks.BackupAndRestore(str(fold_dir / BACKUP_DIR)),
                  tf_keras.callbacks.CSVLogger(str(fold_dir / HISTORY), append=True)]
    return callbacks


def resumed_epoch(fold_dir: fs.AnyPath) -> int:
    """The epoch a fold goes on from: one past the last one `BackupAndRestore` saved (0 for a fresh fold)."""
    latest = tf.train.latest_checkpoint(str(fold_dir / BACKUP_DIR / "chief"))
    if latest is None:
        return 0
    return int(tf.train.load_checkpoint(latest).get_tensor("ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE")) + 1


def align_history(fold_dir: fs.AnyPath, start_epoch: int) -> None:
    """history.csv of a resumed fold: rows of epochs before `start_epoch` only, each of them present.

    A run killed between saving an epoch's weights and logging it lacks that row (taken from ResumeState's file);
    one killed between logging an epoch and saving its weights has a row for an epoch that runs again (dropped).
    """
    import csv

    path = fold_dir / HISTORY
    rows = list(csv.DictReader(io.StringIO(path.read_text()))) if path.exists() else []
    kept = [row for row in rows if int(row["epoch"]) < start_epoch]
    states_path = fold_dir / BACKUP_DIR / RESUME_STATE
    states = pio.read_json(states_path) if states_path.exists() else {}
    missing = [{"epoch": epoch, **states[str(epoch)]["logs"]} for epoch in range(len(kept), start_epoch)
               if str(epoch) in states]
    if len(kept) == len(rows) and not missing:
        return
    out = io.StringIO()
    columns = list(rows[0]) if rows else ["epoch", *sorted(set(missing[0]) - {"epoch"})]  # as CSVLogger writes
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(kept + missing)
    pio.write_text(path, out.getvalue())


def initial_models(cfg, n_classes: int):
    """The models a fold starts training from: the recipe's backbone with its named pretrained set, or with every
    weight from a `--weights` file (any of `backbones.WEIGHTS_SUFFIXES`; none is ignored)."""
    from photoid.inference.fold_models import build_models_with_weights
    from photoid.models.backbones import is_weights_file
    from photoid.models.factory import build_models_from_config

    if is_weights_file(cfg.weights):
        return build_models_with_weights(cfg, n_classes, cfg.weights)
    return build_models_from_config(cfg, n_classes)


def train_fold(cfg, fold: int, run_dir: fs.AnyPath, strategy, n_classes: int) -> dict:
    """Train fold `fold` (validate on it, train on the others) and return the summary written to done.json."""
    from photoid.models.factory import compile_for_training
    from photoid.records.reader import count_records, fold_files

    run = RunDir(run_dir)
    fold_dir = run.fold_dir(fold)
    if cfg.force and fold_dir.exists():
        fs.rmtree(fold_dir)
    # Whatever this fold predicted before was predicted by weights that training is about to replace.
    run.remove_fold_predictions(fold)
    fold_dir.mkdir(parents=True, exist_ok=True)
    if not run.fold_file(fold, FOLD_CONFIG).exists():  # what this fold trains with; a resumed fold keeps the first
        pio.write_json(run.fold_file(fold, FOLD_CONFIG), cfg.to_dict())
    train_folds = [f for f in range(cfg.n_folds) if f != fold]
    train_files = fold_files(cfg.records_dir, train_folds)
    val_files = fold_files(cfg.records_dir, [fold])
    n_train = count_records(train_files)
    if n_train == 0 or count_records(val_files) == 0:
        raise PhotoidError(f"fold {fold}: no training or validation images in {cfg.records_dir}")

    arcface = cfg.head == "arcface"
    if cfg.n_examples_total:  # the original's way to set an epoch: the training share of n_examples_total
        n_train = cfg.n_examples_total - cfg.n_examples_total // cfg.n_folds
    steps = cfg.steps_per_epoch or max(1, n_train // cfg.batch_size)
    start_epoch = resumed_epoch(fold_dir)
    align_history(fold_dir, start_epoch)
    common = dict(dim=cfg.dim, dim_pre=cfg.dim_pre, batch_size=cfg.batch_size, seed=cfg.seed + fold)
    skip = start_epoch * steps * cfg.batch_size  # a resumed fold sees the images the killed one would have next
    if cfg.paired:
        from photoid.records.pairs import build_paired_dataset

        train_ds = build_paired_dataset(train_files, training=True, aug_number=cfg.aug_number,
                                        aug_percentage=cfg.aug_percentage, aug_draw=cfg.aug_draw,
                                        buffer_size=cfg.buffer_size, cache=cfg.cache, augment=cfg.augment,
                                        skip=skip, **common)
        val_ds = build_paired_dataset(val_files, training=False, cache=cfg.cache, **common)
    else:
        train_ds, val_ds = _single_datasets(cfg, train_files, val_files, arcface, common, skip=skip)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # Each worker reads every file and keeps its share of the records: a fold has fewer files than there are
        # workers as often as not, which sharding by file refuses.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        train_ds, val_ds = train_ds.with_options(options), val_ds.with_options(options)

    with strategy.scope():
        models = initial_models(cfg, n_classes)
        trained = models.train
        if cfg.paired:
            from photoid.models.factory import paired_train_model

            trained = paired_train_model(models.train)
        compile_for_training(trained, cfg.lr, cfg.optimizer)

    loss_guard = LossGuard(cfg.divergence_factor)
    started = time.time()
    trained.fit(
        train_ds,
        steps_per_epoch=steps,
        epochs=cfg.n_epochs,
        validation_data=val_ds,
        callbacks=make_callbacks(cfg, fold_dir, models.predict, loss_guard),
        verbose=cfg.verbose,
    )
    # BackupAndRestore deletes its checkpoint when fit() ends but leaves the folder: an empty `backup` would read
    # as an unfinished fold.
    fs.rmtree(fold_dir / BACKUP_DIR, missing_ok=True)
    history = _read_history(fold_dir / HISTORY)
    curve_metric = "val_acc" if cfg.monitor == "last" else cfg.monitor
    plot_history(history, curve_metric, fold_dir / CURVE, title=f"{cfg.model} fold {fold}")
    best_file = fold_dir / BEST_INFO
    if loss_guard.where is not None:
        nan = loss_guard.diverged is None
        kept = (f"the best checkpoint so far is kept in {fold_dir / BEST_WEIGHTS}" if best_file.exists() else
                f"no epoch ended {'with a finite loss' if nan else 'before it diverged'}, so there is no checkpoint")
        what = ("the loss became NaN" if nan else
                f"the loss diverged to {loss_guard.diverged:.3g}, above {cfg.divergence_factor:g} times its start "
                f"{loss_guard.start_loss:.3g} (--divergence_factor)")
        raise PhotoidError(f"fold {fold}: {what} at {loss_guard.where}; training stopped; {kept}. Try a lower --lr.")
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
    pio.write_json(fold_dir / DONE, summary)
    return summary


def _single_datasets(cfg, train_files, val_files, arcface: bool, common: dict, skip: int = 0):
    """One photo per example: (image, label), or ((image, label), label) for ArcFace's margin."""
    from photoid.records.reader import build_dataset

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
        skip=skip,
        **common,
    )
    val_ds = build_dataset(val_files, training=False, cache=cfg.cache, **common)
    if arcface:  # the margin needs the label as a model input
        train_ds = train_ds.map(lambda x, y: ((x, y), y))
        val_ds = val_ds.map(lambda x, y: ((x, y), y))
    return train_ds, val_ds


def _read_history(path: fs.AnyPath) -> dict[str, list[float]]:
    import pandas as pd

    if not path.exists():
        return {}
    frame = pd.read_csv(io.StringIO(path.read_text()))
    return {column: frame[column].tolist() for column in frame.columns}


def plot_history(history: dict, monitor: str, path: fs.AnyPath, title: str) -> None:
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
