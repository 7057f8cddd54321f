"""`photoid identify`: which individual is in each photo, by the trained runs' fold ensemble.

Each photo goes through its run's own preprocessing (the records' preparation, then the reader's chain with each
TTA transform), every chosen fold model of every chosen run predicts it, and the probabilities are averaged over
runs, folds and TTA transforms as the ensemble averages prediction files. The candidates are the ensemble's
labels: `photoid.turtles.ensemble.top_labels` maps every id outside the original ones to `new_turtle`.

Models are loaded once per call; photos are read and predicted in batches, so memory stays bounded for any number
of photos. A photo that cannot be read is named on stderr and skipped, and the exit code (1) says so.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from photoid.core.errors import PhotoidError
from photoid.core.labels import NEW_TURTLE, top_labels
from photoid.core.results import Identification
from photoid.tasks import get_task

# TensorFlow (through photoid.runs.loaded) is imported where models are loaded, not here: `photoid identify --help`
# and a usage error answer at once instead of after its three-second start-up.
if TYPE_CHECKING:
    from photoid.inference.fold_models import Member
    from photoid.runs.loaded import RunInfo

DEFAULT_BATCH = 64
MAX_TTA = 9


@dataclass
class Ensemble:
    members: list[Member]
    classes: list[str]
    original_ids: list[str]
    data_dir: Path | None  # where reference photos of the individuals are (the task's labelled photos)
    new_label: str = NEW_TURTLE  # what an id outside original_ids reads (the runs' task's new label)

    @property
    def n_predictions(self) -> int:
        """How many predictions are averaged per photo (models × their TTA transforms)."""
        return sum(len(m.ttas) for m in self.members)

    def predictor(self):
        from photoid.inference.fold_models import Predictor

        return Predictor(self.members)


def _ttas(tta: int | None, default: int) -> tuple[int, ...]:
    n = default if tta is None else tta
    if not 0 <= n <= MAX_TTA:
        raise PhotoidError(f"--tta must be in 0..{MAX_TTA} (TTA transforms 0..N), got {n}")
    return tuple(range(n + 1))


def ensemble_from_runs(runs: Sequence[RunInfo], folds: Sequence[int] | None = None,
                       tta: int | None = None) -> Ensemble:
    """Load every chosen fold model of runs trained on the same labels.

    `folds` None takes each run's finished folds; `tta` None each run's own `tta_number` (as its prediction files).
    """
    from photoid.inference.fold_models import Member, load_fold_models
    from photoid.runs.loaded import check_same_labels

    if not runs:
        raise PhotoidError("no run folders given")
    check_same_labels(list(runs))
    members = []
    for run in runs:
        ttas = _ttas(tta, run.config.tta_number)
        members += [Member(model, run.preprocessing, ttas) for model in load_fold_models(run, folds)]
    return Ensemble(members, runs[0].classes, runs[0].original_ids, runs[0].data_dir,
                    get_task(runs[0].config.task).new_label)


def ensemble_from_weights(weights: str | Path, recipe: str, data_dir: str | Path, *, dim: int | None = None,
                          dim_pre: int | None = None, tta: int | None = None) -> Ensemble:
    """One model from a whole-model weight file, e.g. the original solution's published `ef1b7-fold0.h5`.

    The classes are the sorted ids of `data_dir`'s train.csv + extra_images.csv (the original's label order) and
    the original ids those of train.csv. Photos are prepared as the original's records held them: the JPEG file
    as it is, decoded and resized to the recipe's `dim_pre`.
    """
    from photoid.inference.fold_models import Member, build_fold_model
    from photoid.runs.config import resolve_config
    from photoid.runs.loaded import Preprocessing
    from photoid.tasks import detect_task

    task = detect_task(data_dir)
    classes, original_ids = task.folder_label_space(data_dir)
    cfg = resolve_config(argparse.Namespace(model=recipe, weights=str(weights), dim=dim, dim_pre=dim_pre,
                                            data_dir=str(data_dir)))
    if cfg.head != "softmax":
        raise PhotoidError(f"recipe {recipe}: only softmax recipes name individuals from a weight file alone")
    model = build_fold_model(cfg, len(classes), weights)
    preprocessing = Preprocessing(dim=cfg.dim, dim_pre=cfg.dim_pre, records_dim_pre=cfg.dim_pre, layout="original")
    member = Member(model, preprocessing, _ttas(tta, cfg.tta_number))
    return Ensemble([member], classes, original_ids, Path(data_dir), task.new_label)


def predict_paths(ensemble: Ensemble, paths: Sequence[str], batch_size: int = DEFAULT_BATCH,
                  viewpoints: Sequence[str | None] | None = None
                  ) -> Iterator[tuple[str, np.ndarray | None, str | None]]:
    """(path, mean probabilities or None, error or None) per photo, in the given order, batch by batch.

    `viewpoints` (one per photo, None: unknown): right views are mirrored for runs whose records mirrored them."""
    for batch in ensemble.predictor().over_photos(paths, batch_size, viewpoints=viewpoints):
        rows = {p: batch.probabilities[i] for i, p in enumerate(batch.readable)}
        for path in batch.paths:
            yield path, rows.get(path), batch.errors.get(path)


def identify_paths(ensemble: Ensemble, paths: Sequence[str], top: int = 5, batch_size: int = DEFAULT_BATCH,
                   viewpoints: Sequence[str | None] | None = None) -> Iterator[Identification]:
    """Each photo's top candidates by the `new_turtle` rule of the ensemble, in the given order."""
    for path, probs, error in predict_paths(ensemble, paths, batch_size, viewpoints):
        if probs is None:
            yield Identification(path, error=error)
            continue
        labels, scores = top_labels(probs[None, :], ensemble.classes, ensemble.original_ids, k=top,
                                    new_label=ensemble.new_label)
        # Fewer possible labels than `top` leaves padding ("" and NaN) at the end: not a candidate.
        kept = [(str(label), float(score)) for label, score in zip(labels[0], scores[0]) if label != ""]
        yield Identification(path, probs, [label for label, _ in kept], [score for _, score in kept])


# ----------------------------------------------------------------------------- output







# ----------------------------------------------------------------------------- command












