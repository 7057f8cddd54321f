"""The run folder: every path, manifest and check of a trained run, in one place.

    RUN/classes.txt, original_ids.txt       the label order, and the ids a submission may name
    RUN/config.json, preprocessing.json     what the folds were trained with (written by the call creating the run)
    RUN/log.jsonl                           one line per call
    RUN/fold_K/                             best.weights.h5, best.json, done.json, config.json, history.csv,
                                            curve.png, backup/ (while training)
    RUN/preds/y_pred_{val,test}_fold_K_tta_T.npy + .json    predictions and the manifest vouching for them
    RUN/cv_scores.json, submission.csv

Every other module asks a `RunDir` for these names, and reads predictions only through `RunDir.predictions` (or
`load_run_predictions` over several runs), which refuses missing, stale or mislabelled files by name.
Light on purpose: no TensorFlow here. The folder may be a URL (gs://..., `photoid.core.fs`): its paths are then
`RemotePath`s, read and written through TensorFlow's file system.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import time
from typing import Iterator, Sequence

import numpy as np

from photoid.core import fs
from photoid.core import io as pio
from photoid.core.errors import PhotoidError
from photoid.core.labels import classes_sha256

# A fold's files (in RUN/fold_K/): the callbacks of photoid.training.fold write them there.
BEST_WEIGHTS = "best.weights.h5"
BEST_INFO = "best.json"  # which epoch the best weights are, and their monitored value
DONE = "done.json"  # written last: the fold finished training
HISTORY = "history.csv"
CURVE = "curve.png"
FOLD_CONFIG = "config.json"  # what the fold trains with (a resumed fold keeps the first)
BACKUP_DIR = "backup"  # BackupAndRestore's state while a fold trains; resumes a killed fold
FOLD_FILES = (BEST_WEIGHTS, BEST_INFO, DONE, HISTORY, CURVE, FOLD_CONFIG, BACKUP_DIR)
PREDICTION_KEYS = ("recipe", "split", "fold", "tta", "n_classes", "classes_sha256", "row_ids", "data_dir")
# What a model's input depends on besides the photo: the run's settings, and how its records stored photos.
INPUT_SETTINGS = ("dim", "dim_pre", "image_inverted")
IMAGE_JOBS = {"train", "skip", "val", "test"}  # the jobs that read images (score and subm read predictions)
_PRED_NAME = re.compile(r"^y_pred_(val|test)_fold_(\d+)_tta_(\d+)\.npy$")


@functools.lru_cache(maxsize=64)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    return pio.file_sha256(path)


def weights_sha256(path: str | os.PathLike) -> str:
    """sha256 of a weights file, computed once per file version (every TTA's predictions check the same file).

    A file system that keeps no modification time (ram://) cannot tell versions of one size apart: no cache there."""
    stat = fs.as_path(path).stat()
    if not stat.st_mtime_ns:
        return pio.file_sha256(path)
    return _cached_sha256(str(path), stat.st_size, stat.st_mtime_ns)


def _read_id_lines(path) -> list[str]:
    if not path.is_file():
        raise PhotoidError(f"{path}: file not found (every run directory holds classes.txt and original_ids.txt)")
    lines = path.read_text(encoding="utf-8").splitlines()
    problems = [f"line {i}: empty" for i, line in enumerate(lines, 1) if not line.strip()]
    if not lines:
        problems.append("no ids")
    if len(set(lines)) != len(lines):
        problems.append("repeated ids")
    if problems:
        raise PhotoidError(f"{path}: " + "; ".join(problems[:5]))
    return lines


def _first_difference(a: list[str], b: list[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b), 1):
        if x != y:
            return f"line {i}: {x!r} vs {y!r}"
    return f"{len(a)} vs {len(b)} lines"


class RunDir:
    """One run folder (it need not exist yet)."""

    def __init__(self, path: str | os.PathLike):
        self.path = fs.as_path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ------------------------------------------------------------------ names
    @property
    def classes_file(self) -> fs.AnyPath:
        return self.path / "classes.txt"

    @property
    def original_ids_file(self) -> fs.AnyPath:
        return self.path / "original_ids.txt"

    @property
    def config_file(self) -> fs.AnyPath:
        return self.path / "config.json"

    @property
    def preprocessing_file(self) -> fs.AnyPath:
        return self.path / "preprocessing.json"

    @property
    def log_file(self) -> fs.AnyPath:
        return self.path / "log.jsonl"

    @property
    def preds_dir(self) -> fs.AnyPath:
        return self.path / "preds"

    @property
    def cv_scores_file(self) -> fs.AnyPath:
        return self.path / "cv_scores.json"

    @property
    def test_scores_file(self) -> fs.AnyPath:
        return self.path / "test_scores.json"

    @property
    def submission_file(self) -> fs.AnyPath:
        return self.path / "submission.csv"

    def fold_dir(self, fold: int) -> fs.AnyPath:
        return self.path / f"fold_{fold}"

    def best_weights(self, fold: int) -> fs.AnyPath:
        return self.fold_dir(fold) / BEST_WEIGHTS

    def fold_file(self, fold: int, name: str) -> fs.AnyPath:
        """One of a fold's FOLD_FILES."""
        if name not in FOLD_FILES:
            raise ValueError(f"no fold file {name!r}; a fold holds {FOLD_FILES}")
        return self.fold_dir(fold) / name

    def pred_path(self, split: str, fold: int, tta: int) -> fs.AnyPath:
        return self.preds_dir / f"y_pred_{split}_fold_{fold}_tta_{tta}.npy"

    # ------------------------------------------------------------------ labels and settings
    def classes(self) -> list[str]:
        """The run's label order: class i of every prediction file is line i of classes.txt."""
        return _read_id_lines(self.classes_file)

    def original_ids(self) -> list[str]:
        """The ids the leaderboard knows by name (train.csv's); all others are the new label."""
        return _read_id_lines(self.original_ids_file)

    def config_values(self) -> dict:
        """config.json as written ({} where there is none or it is not an object): for reading single settings."""
        values = pio.read_json(self.config_file) if self.config_file.is_file() else {}
        return values if isinstance(values, dict) else {}

    def config(self):
        """The resolved configuration saved in the run folder (a `Config`); unknown keys and bad values are refused."""
        from photoid.runs.config import SETTABLE, Config, validate_config

        path = self.config_file
        if not path.is_file():
            raise PhotoidError(f"{path}: file not found; a run folder holds the config.json its training wrote")
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise PhotoidError(f"{path}: not a JSON file ({err})") from None
        if not isinstance(values, dict):
            raise PhotoidError(f"{path}: expected a JSON object of settings")
        unknown = sorted(set(values) - {f.name for f in SETTABLE})
        if unknown:
            raise PhotoidError(f"{path}: unknown settings {unknown}; it was written by another version of photoid")
        try:
            cfg = Config(**values)
        except TypeError as err:
            raise PhotoidError(f"{path}: {err}") from None
        validate_config(cfg)
        return cfg

    def trained_preprocessing(self) -> dict | None:
        """preprocessing.json where it says how the training records stored photos (`layout`), else None."""
        if self.preprocessing_file.is_file():
            settings = pio.read_json(self.preprocessing_file)
            if isinstance(settings, dict) and "layout" in settings:
                return settings
        return None

    # ------------------------------------------------------------------ folds
    def fold_is_done(self, fold: int) -> bool:
        return self.fold_file(fold, DONE).exists() and self.best_weights(fold).exists()

    def trained_folds(self) -> list[int]:
        """Folds whose training finished (`done.json` and `best.weights.h5` present), in order."""
        folds = []
        for fold_dir in self.path.glob("fold_*"):
            suffix = fold_dir.name.removeprefix("fold_")
            if suffix.isdigit() and self.fold_is_done(int(suffix)):
                folds.append(int(suffix))
        return sorted(folds)

    def weights_sha256(self, fold: int) -> str:
        return weights_sha256(self.best_weights(fold))

    # ------------------------------------------------------------------ writing
    def prepare(self, cfg, classes: list[str], original_ids: list[str], records: tuple[int, str, bool] | None,
                mirror_right: bool | None = None) -> None:
        """Create or reopen the run folder: labels, the training configuration, and one log line for this call.

        `config.json` and `preprocessing.json` say what the folds were trained with: written by the call that
        creates the run (or retrains it with --force), never by later calls. A later call preparing images otherwise
        than training did is refused: its predictions would not be what the models learnt from. `records` is the
        records' (dim_pre, layout, rotate_wide), None where they do not say; `mirror_right` whether they stored
        right views mirrored (None: they do not say, as the records of tasks that never mirror).
        """
        self.path.mkdir(parents=True, exist_ok=True)
        text = "\n".join(classes) + "\n"
        if self.classes_file.exists() and self.classes_file.read_text(encoding="utf-8") != text and not cfg.force:
            raise PhotoidError(f"{self.path} was trained on other classes; choose another --run_dir or pass --force")
        inputs = {name: getattr(cfg, name) for name in INPUT_SETTINGS}
        if records is not None:
            inputs.update(records_dim_pre=records[0], layout=records[1])
            if records[2]:  # only when set, so runs of records without it keep their preprocessing.json
                inputs.update(rotate_wide=True)
            if mirror_right is not None:  # whale records: single photos of right views are mirrored like them
                inputs.update(mirror_right=mirror_right)
        rewrite = not self.config_file.exists() or (cfg.force and bool(cfg.jobs & {"train", "skip"}))
        if not rewrite and self.preprocessing_file.exists() and cfg.jobs & IMAGE_JOBS:
            _check_same_inputs(pio.read_json(self.preprocessing_file), inputs, self.preprocessing_file)
        pio.write_text(self.classes_file, text)
        pio.write_text(self.original_ids_file, "\n".join(original_ids) + "\n")
        if rewrite:
            pio.write_json(self.config_file, cfg.to_dict())
            pio.write_json(self.preprocessing_file, inputs)
        self._append_log(cfg)

    def _append_log(self, cfg) -> None:
        """One JSON line per call: when, the command line, the job and folds, and settings unlike the trained ones."""
        trained = pio.read_json(self.config_file)
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv, "job": cfg.job,
                 "folds": cfg.folds_to_run,
                 "differs_from_config_json": {k: v for k, v in cfg.to_dict().items() if trained.get(k) != v}}
        # One write of one line in append mode: calls running at the same time cannot interleave their lines.
        with fs.open_file(self.log_file, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def save_prediction(self, split: str, fold: int, tta: int, probs: np.ndarray, row_ids: list[str], cfg,
                        classes: list[str], weights_sha256: str) -> fs.AnyPath:
        """One prediction file and the manifest that vouches for it (rows, classes, the weights that made it)."""
        path = self.pred_path(split, fold, tta)
        manifest = {
            "recipe": cfg.model,
            "split": split,
            "fold": fold,
            "tta": tta,
            "n_classes": len(classes),
            "classes_sha256": classes_sha256(classes),
            "row_ids": list(row_ids),
            "data_dir": fs.absolute(cfg.data_dir),
            "records_dir": cfg.records_dir,
            "config": cfg.to_dict(),
            # Which weights predicted it: scoring and ensembling refuse it once the fold has other weights.
            "weights_sha256": weights_sha256,
        }
        pio.save_npy(path, probs)
        pio.write_json(path.with_suffix(".json"), manifest)
        return path

    def remove_fold_predictions(self, fold: int) -> None:
        """Delete fold `fold`'s prediction files (validation and test, every TTA) and their manifests."""
        for path in self.preds_dir.glob(f"y_pred_*_fold_{fold}_tta_*"):
            if _PRED_NAME.match(path.with_suffix(".npy").name):
                path.unlink()

    # ------------------------------------------------------------------ reading predictions
    def prediction_files(self, split: str, folds: Sequence[int] | None = None,
                         ttas: Sequence[int] | None = None) -> list[tuple[int, int, fs.AnyPath]]:
        """The run's expected prediction files as (fold, tta, path), TTA-major as the original looped over them.

        Exactly the chosen folds x TTAs: None means the run's own, as the original read them: folds that finished
        training (or, in a run that trained none, e.g. predictions of a given weights file, those with predictions)
        and TTA 0..tta_number of config.json (else those found). Other files in preds/ (an earlier
        configuration's extra TTAs or folds) are not read, and a missing one is an error naming it.
        """
        found = {}
        for path in sorted(self.preds_dir.glob(f"y_pred_{split}_fold_*_tta_*.npy")):
            match = _PRED_NAME.match(path.name)
            if match:
                found[int(match.group(2)), int(match.group(3))] = path
        if not found:
            raise PhotoidError(f"{self.path}: no {split} predictions in {self.preds_dir}")
        if folds is None:
            folds = self.done_folds() or sorted({f for f, _ in found})
        if ttas is None:
            tta_number = self.config_values().get("tta_number")
            ttas = range(tta_number + 1) if isinstance(tta_number, int) else sorted({t for _, t in found})
        chosen_folds, chosen_ttas = sorted(set(folds)), sorted(set(ttas))
        missing = [(f, t) for t in chosen_ttas for f in chosen_folds if (f, t) not in found]
        if missing:
            names = ", ".join(f"y_pred_{split}_fold_{f}_tta_{t}.npy" for f, t in missing[:5])
            raise PhotoidError(f"{self.path}: missing {len(missing)} of the expected prediction files ({names}); "
                               f"folds {chosen_folds}, TTAs {chosen_ttas} are expected. Predict them again "
                               "(--job val or test) or choose folds and TTAs")
        return [(f, t, found[f, t]) for t in chosen_ttas for f in chosen_folds]

    def missing_folds(self, split: str) -> list[int]:
        """Folds of the run's `n_folds` (config.json) that its default choice of prediction files lacks: a run whose
        folds are not all trained (or predicted) averages fewer predictions than the recipe makes."""
        n_folds = self.config_values().get("n_folds")
        if not isinstance(n_folds, int):
            return []
        used = {fold for fold, _, _ in self.prediction_files(split)}
        return sorted(set(range(n_folds)) - used)

    def done_folds(self) -> list[int]:
        """Folds with done.json (their weights need not be here: predictions alone can be averaged)."""
        return sorted(int(d.name[5:]) for d in self.path.glob("fold_*")
                      if d.name[5:].isdigit() and (d / DONE).exists())

    def load_prediction(self, path, split: str, fold: int, tta: int, classes: list[str]
                        ) -> tuple[np.ndarray, list[str]]:
        """One prediction file and its row ids, refused unless its manifest vouches for it."""
        probs = pio.load_npy(path)  # first: a file that is no numeric array is refused as such
        manifest_path = path.with_suffix(".json")
        if not manifest_path.is_file():
            raise PhotoidError(f"{path}: its manifest {manifest_path.name} is missing, so its rows and classes "
                               "cannot be checked")
        manifest = pio.read_json(manifest_path)
        absent = [key for key in PREDICTION_KEYS if key not in manifest]
        if absent:
            raise PhotoidError(f"{manifest_path}: missing keys {absent}")
        expected = {"split": split, "fold": fold, "tta": tta, "n_classes": len(classes),
                    "classes_sha256": classes_sha256(classes)}
        wrong = [f"{key} is {manifest[key]!r}, expected {value!r}" for key, value in expected.items()
                 if manifest[key] != value]
        if wrong:
            raise PhotoidError(f"{manifest_path}: does not match {self.classes_file} and the file name: "
                               + "; ".join(wrong))
        weights = self.best_weights(fold)
        recorded = manifest.get("weights_sha256")
        if recorded is not None and weights.is_file() and recorded != weights_sha256(weights):
            raise PhotoidError(f"{path}: stale: it was predicted by other weights than the fold's {weights} "
                               "(retrained since). Predict again (--job val or test)")
        row_ids = manifest["row_ids"]
        if not isinstance(row_ids, list) or len(set(map(str, row_ids))) != len(row_ids):
            raise PhotoidError(f"{manifest_path}: row_ids must be a list of distinct image ids")
        if probs.shape != (len(row_ids), len(classes)):
            raise PhotoidError(f"{path}: shape {probs.shape}, but its manifest lists {len(row_ids)} rows and the "
                               f"run has {len(classes)} classes")
        if not np.isfinite(probs).all():
            raise PhotoidError(f"{path}: holds NaN or infinite values")
        return probs, [str(r) for r in row_ids]

    def predictions(self, split: str, classes: list[str], folds: Sequence[int] | None = None,
                    ttas: Sequence[int] | None = None) -> Iterator[tuple[int, int, fs.AnyPath, np.ndarray, list[str]]]:
        """Every expected prediction file, checked: (fold, tta, path, probabilities, row ids), TTA-major.

        Missing files are refused before any is read; each file is read when its turn comes."""
        for fold, tta, path in self.prediction_files(split, folds, ttas):
            yield (fold, tta, path, *self.load_prediction(path, split, fold, tta, classes))


def _check_same_inputs(trained: dict, now: dict, path) -> None:
    def kind(settings: dict) -> tuple:
        # The exact and original layouts give the model the same pixels; compact ones depend on their size.
        # Wide whale photos turned upright or not change every input of them.
        layout = settings.get("layout")
        pixels = ("photo",) if layout in ("exact", "original") else (layout, settings.get("records_dim_pre"))
        return (*pixels, bool(settings.get("rotate_wide", False)))

    differ = [f"{name} {trained[name]!r} in training, {now[name]!r} now" for name in INPUT_SETTINGS
              if name in trained and trained[name] != now[name]]
    if "layout" in trained and "layout" in now and kind(trained) != kind(now):
        differ.append(f"records {trained['layout']} at {trained['records_dim_pre']} px (rotate_wide "
                      f"{trained.get('rotate_wide', False)}) in training, {now['layout']} at {now['records_dim_pre']} "
                      f"px (rotate_wide {now.get('rotate_wide', False)}) now")
    if differ:
        raise PhotoidError(f"this call would prepare images otherwise than training did ({'; '.join(differ)}; see "
                           f"{path}): its predictions would not be the trained models'. Use the training values "
                           "(or retrain with --force)")


def check_same_labels(runs: Sequence[RunDir]) -> tuple[list[str], list[str]]:
    """The shared (classes, original ids) of runs that can be averaged class by class; others are refused."""
    first = runs[0]
    classes, original_ids = first.classes(), first.original_ids()
    for run in runs[1:]:
        for name, theirs, ours in (("classes.txt", run.classes(), classes),
                                   ("original_ids.txt", run.original_ids(), original_ids)):
            if theirs != ours:
                raise PhotoidError(f"{run.path / name} differs from {first.path / name} "
                                   f"({_first_difference(theirs, ours)}); only runs trained on the same labels can "
                                   "be averaged")
    return classes, original_ids


def load_run_predictions(run_dirs: Sequence[str | os.PathLike], split: str = "test",
                         folds: Sequence[int] | None = None, ttas: Sequence[int] | None = None):
    """Average the chosen prediction files of runs that share one label order.

    `folds`/`ttas` None means the run's own: its trained folds and TTA 0..tta_number (see
    `RunDir.prediction_files`). Test predictions must all list the same rows in the same
    order and are averaged (arithmetic mean, files in run, TTA, fold order as the original summed them).
    Validation predictions cover each fold's own images: they are averaged per fold and the folds stacked.
    Returns (mean_probs, row_ids, classes, original_ids, used files).
    """
    if split not in ("val", "test"):
        raise PhotoidError(f"split must be 'val' or 'test', got {split!r}")
    if not run_dirs:
        raise PhotoidError("no run directories given")
    runs = [RunDir(d) for d in run_dirs]
    for run in runs:
        if not run.path.is_dir():
            raise PhotoidError(f"{run.path}: run directory not found")
    classes, original_ids = runs[0].classes(), runs[0].original_ids()
    unknown = sorted(set(original_ids) - set(classes))
    if unknown:
        raise PhotoidError(f"{runs[0].original_ids_file}: {len(unknown)} ids are not in classes.txt, "
                           f"e.g. {unknown[0]!r}")
    check_same_labels(runs)
    by_fold: dict[int, list[tuple[np.ndarray, list, fs.AnyPath]]] = {}
    used: list[str] = []
    for run in runs:
        for fold, _, path, probs, row_ids in run.predictions(split, classes, folds, ttas):
            group = by_fold.setdefault(fold if split == "val" else 0, [])
            if group and row_ids != group[0][1]:
                raise PhotoidError(f"{path}: its rows (image ids in its manifest) differ from those of "
                                   f"{group[0][2]}; predictions of different images cannot be averaged")
            group.append((probs, row_ids, path))
            used.append(str(path))
    means = [np.mean(np.stack([p for p, _, _ in by_fold[f]]), axis=0) for f in sorted(by_fold)]
    row_ids = [r for f in sorted(by_fold) for r in by_fold[f][0][1]]
    if len(set(row_ids)) != len(row_ids):
        raise PhotoidError("validation predictions of different folds share image ids; the runs' folds disagree")
    return np.concatenate(means), row_ids, classes, original_ids, used
