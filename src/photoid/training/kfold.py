"""`photoid train` / `run.py`: one entry point for every recipe — train, predict, score, submit, k-fold.

The original kept a near-identical 600-line run.py per model; here the recipe file holds what differs and
every hyperparameter can be overridden on the command line with the original's name.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from photoid.core import fs
from photoid.core import io as pio
from photoid.core.errors import PhotoidError
from photoid.records.folder import FOLDS_CSV, RecordsDir
from photoid.runs.config import Config, batch_size_note, resolve_config
from photoid.runs.folder import IMAGE_JOBS, RunDir
from photoid.tasks import all_tasks


def resolve_run_config(args: argparse.Namespace) -> Config:
    """`resolve_config`, with the task taken from the data unless --task names it: the records' records.json,
    else the data folder's files (so a recipe written for one species, e.g. whale-cpu-demo's ArcFace, trains any)."""
    cfg = resolve_config(args)
    if getattr(args, "task", None) is None:
        cfg = dataclasses.replace(cfg, task=task_of_data(cfg.records_dir, cfg.data_dir) or cfg.task)
    return cfg


def task_of_data(records_dir: str, data_dir: str) -> str | None:
    """The task of a run's data when it says: its records' records.json (local or remote), else its data folder's
    files; None when neither exists."""
    records = RecordsDir(records_dir)
    if records.has_manifest():
        try:
            dataset = records.setting("dataset", None)
        except PhotoidError:  # a damaged records.json: the run's own checks name it
            dataset = None
        return next((task.name for task in all_tasks() if task.records_dataset == dataset), None)
    root = Path(data_dir)
    if not fs.is_remote(data_dir) and root.is_dir():
        return next((task.name for task in all_tasks() if task.detect(root)), None)
    return None


def check_records_layout(cfg: Config, records) -> tuple[int, str, bool] | None:
    """The records' (dim_pre, layout, rotate_wide), refusing a dim_pre the layout cannot give exactly (None: no records.json).
    `records`: the run's RecordsDir."""
    from photoid.records.writer import check_layout_size

    # A remote folder must have its records.json (photo_settings says so); a local one may predate it.
    if fs.is_remote(cfg.records_dir) or records.has_manifest():
        records_dim_pre, layout, rotate_wide = records.photo_settings()
        check_layout_size(layout, records_dim_pre, cfg.dim_pre, cfg.records_dir)
        return records_dim_pre, layout, rotate_wide
    return None


def check_records_complete(cfg: Config, records) -> None:
    """Refuse, before the run folder is touched, record sets the jobs need that are missing or lack shards."""
    files: list[str] = []
    if cfg.jobs & {"train", "skip"}:  # a fold trains on every other fold
        files += records.fold_files(range(cfg.n_folds))
    elif "val" in cfg.jobs:
        files += records.fold_files(cfg.folds_to_run)
    if "test" in cfg.jobs:
        files += records.test_files()
    records.check_complete(files)


def _without_missing_test_set(cfg: Config, records) -> Config:
    """A folder without test photos (a generic folder without split=test rows) has no test records: its jobs that
    need them are dropped, with a note, rather than refused. `records`: the run's RecordsDir."""
    if not cfg.jobs & {"test", "subm"} or records.setting("has_test", True):
        return cfg
    kept = "_".join(word for word in cfg.job.split("_") if word not in ("test", "subm"))
    if not kept:
        raise PhotoidError(f"job {cfg.job!r} needs test photos, but {cfg.records_dir} holds none (its folder has no "
                           "split=test rows)")
    print(f"note: {cfg.records_dir} holds no test photos (its folder has no split=test rows): job {cfg.job!r} runs "
          f"as {kept!r}")
    return dataclasses.replace(cfg, job=kept)


def set_determinism(cfg: Config, fold: int = 0) -> None:
    """Seed Python, NumPy and TensorFlow with seed + fold: each fold of a run starts from its own random head (the
    original, unseeded, drew one per fold), and a rerun of a fold starts from the same one."""
    import tensorflow as tf
    import tf_keras

    tf_keras.utils.set_random_seed(cfg.seed + fold)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()


def run_config(cfg: Config) -> int:
    from photoid.records.reader import open_records
    from photoid.tasks import get_task

    started = time.time()
    task = get_task(cfg.task)
    if cfg.image_inverted and not task.takes_image_inverted:
        raise PhotoidError(f"image_inverted is the Turtle Recall original's option; {cfg.task} runs do not take it")
    folds_path = fs.as_path(cfg.records_dir) / FOLDS_CSV
    if not folds_path.exists():
        raise PhotoidError(f"no {folds_path}: build the records first (photoid {task.records_command} --data_dir {cfg.data_dir})")
    folds = task.read_folds(folds_path)
    n_folds_in_records = int(folds["fold"].max()) + 1
    if n_folds_in_records != cfg.n_folds:
        raise PhotoidError(f"--n_folds {cfg.n_folds} but the records in {cfg.records_dir} have {n_folds_in_records} folds")
    cfg = task.check_training(cfg, folds)
    records = open_records(cfg.records_dir)  # read once for the checks below
    cfg = _without_missing_test_set(cfg, records)
    classes, original_ids = task.label_space(folds, cfg.records_dir)
    if cfg.n_classes and cfg.n_classes != len(classes):
        raise PhotoidError(f"--n_classes {cfg.n_classes}, but {folds_path} has {len(classes)} classes: the class count "
                           "comes from the records (leave --n_classes out)")
    check_records_complete(cfg, records)
    stored = check_records_layout(cfg, records) if cfg.jobs & IMAGE_JOBS else None
    run_dir = fs.as_path(cfg.output_dir)
    mirror_right = records.mirror_right() if stored is not None else None
    RunDir(run_dir).prepare(cfg, classes, original_ids, stored, mirror_right)
    print(f"run {run_dir}: recipe {cfg.model}, backbone {cfg.backbone} at {cfg.dim}px, {len(classes)} classes, folds {cfg.folds_to_run}")
    note = batch_size_note(cfg) if cfg.jobs & {"train", "skip"} else None
    if note:
        print(note)

    jobs = cfg.jobs
    if jobs & {"train", "skip", "val", "test"}:
        _train_and_predict(cfg, run_dir, folds, classes)
    if "test" in jobs:
        test_scores = task.score_test(cfg, run_dir)
        if test_scores is not None:
            pio.write_json(RunDir(run_dir).test_scores_file, test_scores)
            print(f"test: MAP@5 {test_scores['map5']:.4f}, acc@1 {test_scores['acc1']:.4f} over {test_scores['n']} "
                  f"photos, {test_scores['n_new']} of individuals outside train ({RunDir(run_dir).test_scores_file})")
    if jobs & {"val", "score"}:
        scores = score_run(run_dir, folds, classes, original_ids, cfg.tta_number)
        print(format_scores(scores, leaderboard_labels=task.leaderboard_labels))
    # As the original: a job that predicts the test set also writes the run's own submission (its `--job test`).
    if jobs & {"test", "subm"} and task.submits:
        path = task.write_run_submission(cfg, run_dir)
        print(f"submission written to {path}")
    print(f"done in {time.time() - started:.0f}s; outputs in {run_dir}")
    return 0


@contextlib.contextmanager
def model_session(cfg: Config, fold: int = 0) -> Iterator[None]:
    """A fresh Keras session for fold `fold`'s models (or the test ensemble's): its seed, the run's precision."""
    import tf_keras

    tf_keras.backend.clear_session()
    set_determinism(cfg, fold)
    if cfg.mixed_precision:
        tf_keras.mixed_precision.set_global_policy(cfg.mixed_precision)
    try:
        yield
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")


def _train_and_predict(cfg: Config, run_dir: fs.AnyPath, folds: pd.DataFrame, classes: list[str]) -> None:
    """Train each chosen fold and predict its out-of-fold rows; then predict the test set with all of them at once."""
    from photoid.inference.fold_models import build_fold_model, fold_weights
    from photoid.models.backbones import is_weights_file
    from photoid.training.fold import train_fold
    from photoid.training.predictions import (
        folds_at_once,
        predict_test,
        predict_validation,
    )
    from photoid.training.strategy import choose_strategy

    strategy = choose_strategy(cfg.strategy, cfg.tpu_ip_or_name, cfg.cpu_devices)
    print(f"strategy: {type(strategy).__name__} with {strategy.num_replicas_in_sync} replica(s)")
    # Without training, a --weights file (e.g. the original's published fold-0 B7) predicts as it is.
    given = cfg.weights if not cfg.jobs & {"train", "skip"} and is_weights_file(cfg.weights) else None

    def fold_model(fold: int):
        # Built under the run's strategy; every weight comes from the fold's file.
        model = build_fold_model(cfg, len(classes), fold_weights(run_dir, fold, given), strategy=strategy)
        return model.predict, model.weights_sha256

    for fold in cfg.folds_to_run:
        with model_session(cfg, fold):
            if cfg.trains(fold):
                if RunDir(run_dir).fold_is_done(fold) and not cfg.force:
                    print(f"fold {fold}: already trained ({RunDir(run_dir).fold_file(fold, 'done.json')}); "
                          "skipping (--force retrains)")
                else:
                    summary = train_fold(cfg, fold, run_dir, strategy, len(classes))
                    print(f"fold {fold}: best {summary['monitor']} {summary['value']:.4f} at epoch {summary['epoch']}")
            elif "skip" in cfg.jobs:
                print(f"fold {fold}: training skipped (job 'skip': the first fold keeps the weights it has)")
            if "val" in cfg.jobs:
                expected = folds.loc[folds["fold"] == fold, "image_id"].astype(str).tolist()
                predict_validation(cfg, fold, run_dir, *fold_model(fold), classes, expected)
    if "test" in cfg.jobs:
        # By groups of folds whose weights fit the memory budget: the original loaded one fold at a time, and five
        # EfficientNet-L2 or BEiT-L folds at once do not fit a 16 GB GPU.
        to_predict, group = list(cfg.folds_to_run), cfg.predict_folds_at_once
        while to_predict:
            with model_session(cfg):
                loaded = [fold_model(to_predict[0])]
                if not group:
                    group = folds_at_once(loaded[0][0].count_params(), len(to_predict))
                    print(f"test prediction: {group} fold model(s) at a time (--predict_folds_at_once)")
                loaded += [fold_model(fold) for fold in to_predict[1:group]]
                models, shas = zip(*loaded)
                predict_test(cfg, to_predict[:group], run_dir, list(models), classes, list(shas))
            to_predict = to_predict[group:]


def score_run(run_dir: fs.AnyPath, folds: pd.DataFrame, classes: list[str], original_ids: list[str],
              tta_number: int | None = None) -> dict:
    """CV scores, per fold and over all, from exactly the run's expected out-of-fold predictions.

    As the original: TTA 0..tta_number (this call's; None: the run's) of every fold that finished training,
    averaged per fold. A missing file, or
    one predicted by weights the fold no longer has, is an error naming it (`RunDir.predictions`).
    """
    from photoid.core.metrics import classification_scores

    by_fold: dict[int, list[np.ndarray]] = {}
    ttas = None if tta_number is None else range(tta_number + 1)
    for fold, tta, path, probs, row_ids in RunDir(run_dir).predictions("val", classes, ttas=ttas):
        expected = folds.loc[folds["fold"] == fold, "image_id"].astype(str).tolist()
        if row_ids != expected:
            raise PhotoidError(f"{path}: its rows are not fold {fold}'s images in folds.csv; predict it again")
        by_fold.setdefault(fold, []).append(probs)
    per_fold, all_true, all_probs = {}, [], []
    for fold, preds in sorted(by_fold.items()):
        probs = np.mean(preds, axis=0)
        y_true = folds.loc[folds["fold"] == fold, "label"].to_numpy()
        per_fold[int(fold)] = {**classification_scores(y_true, probs, classes, original_ids), "n": len(y_true),
                               "n_tta": len(preds)}
        all_true.append(y_true)
        all_probs.append(probs)
    overall = classification_scores(np.concatenate(all_true), np.concatenate(all_probs), classes, original_ids)
    scores = {"folds": per_fold, "all": {**overall, "n": int(sum(len(t) for t in all_true))}, "folds_scored": sorted(per_fold)}
    pio.write_json(RunDir(run_dir).cv_scores_file, scores)
    return scores


def format_scores(scores: dict, leaderboard_labels: bool = True) -> str:
    """The CV table; `leaderboard_labels` adds Turtle Recall's MAP@5 over original ids + new_turtle."""
    lines = ["fold      n    acc   acc5   MAP@5" + ("  MAP@5(101)" if leaderboard_labels else "")]
    rows = [(str(f), s) for f, s in scores["folds"].items()] + [("all", scores["all"])]
    for name, s in rows:
        line = f"{name:>4} {s['n']:6d} {s['acc']:.4f} {s['acc5']:.4f} {s['map5']:.4f}"
        lines.append(line + (f"  {s['map5_101']:.4f}" if leaderboard_labels else ""))
    return "\n".join(lines)
