"""photoid's Python API: the entry points a notebook needs, each returning plain data.

    import photoid

    photoid.build_records("data", n_folds=3, dim_pre=64)          # folds.csv + TFRecords (the task is found)
    run = photoid.train("cpu-demo", "data", n_folds=3, dim=48)    # -> RunInfo: config, classes, trained folds
    photoid.identify(["photo.jpg"], runs=[run.run_dir])           # -> DataFrame: photo, rank, individual_id, score
    catalog = photoid.build_catalog([run.run_dir], "data", "catalog")          # -> Catalog
    photoid.calibrate(catalog)                                    # -> dict, stored in the catalogue's manifest
    photoid.identify(["photo.jpg"], catalog="catalog")            # ranked against the catalogue, new below threshold

Every command is a thin layer of options and printing over these functions (`photoid.commands`), so a notebook and
the command line give the same numbers. They are importable from `photoid` itself (`photoid.train`, ...); importing
`photoid` loads nothing heavy, and TensorFlow only when a function needs a model.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import pandas as pd

from photoid.catalog.build import add_photos, build_catalog, summary
from photoid.catalog.identify import DEFAULT_BATCH
from photoid.catalog.store import Catalog, catalog_transaction, read_catalog
from photoid.core.errors import PhotoidError
from photoid.core.results import Identification
from photoid.tasks import detect_task, get_task

if TYPE_CHECKING:
    from photoid.runs.loaded import RunInfo

__all__ = ["build_records", "train", "open_run", "identify", "identifications", "fold_ensemble", "build_catalog",
           "open_catalog", "add_photos", "catalog_summary", "calibrate", "evaluate", "RunInfo", "Catalog",
           "Identification"]

def build_records(data_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, task: str | None = None,
                  **options) -> dict:
    """Validate a data folder and write its folds.csv and TFRecords (`photoid records`); nothing is written when the
    folder has a problem (every problem is listed at once). The task is found from the folder's files unless `task`
    names it; `options` are the task's record options (`n_folds`, `seed`, `dim_pre`, `layout`, `shards`,
    `workers`, `force`; whale folders also `grouped`, `views`, ...). Returns a summary: the records folder
    (`out_dir`), images per fold, test images, shards written and kept, seconds."""
    chosen = get_task(task) if task else detect_task(data_dir)
    given = check_record_options(chosen, data_dir, options)
    return {"task": chosen.name, **chosen.build_records(data_dir, None if out is None else str(out), **given)}


def check_record_options(task, data_dir: str | os.PathLike, options: dict) -> dict:
    """The record options given (None: not given), refused before any work when the task takes no such option or
    a size is out of range."""
    given = {name: value for name, value in options.items() if value is not None}
    refused = sorted(set(given) - set(task.record_options))
    if refused:
        raise PhotoidError(f"{data_dir} is a {task.name} folder, whose records take no "
                           f"{', '.join('--' + name for name in refused)}")
    for name in ("n_folds", "dim_pre", "shards", "workers"):
        if name in given and given[name] < 1:
            raise PhotoidError(f"--{name} must be at least 1, got {given[name]}")
    if given.get("n_folds", 2) < 2:
        raise PhotoidError(f"--n_folds must be at least 2, got {given['n_folds']}")
    return given


def train(recipe: str, data_dir: str | os.PathLike | None = None, **options) -> RunInfo:
    """Train, predict, score and submit a recipe k-fold (`photoid train`), then return the run loaded back.

    `options` are the configuration's fields (`run_dir`, `n_folds`, `n_epochs`, `dim`, `batch_size`, `lr`, ...;
    `photoid train --help` lists them): built-in defaults <- the recipe (`models/RECIPE.toml`) <- these. The run
    folder defaults to `runs/RECIPE`."""
    from photoid.training.kfold import resolve_run_config, run_config

    settings = {"model": recipe, **({"data_dir": str(data_dir)} if data_dir is not None else {}), **options}
    cfg = resolve_run_config(argparse.Namespace(**{k: str(v) if isinstance(v, Path) else v
                                                   for k, v in settings.items()}))
    status = run_config(cfg)
    if status != 0:
        raise PhotoidError(f"training {recipe} ended with status {status}")
    return open_run(cfg.run_dir)


def open_run(run_dir: str | os.PathLike, records_dir: str | None = None) -> RunInfo:
    """A trained run folder: its configuration, labels, trained folds and how it prepares a photo. `records_dir`
    replaces the records folder its config.json names (a run moved to another machine)."""
    from photoid.runs.loaded import load_run

    return load_run(run_dir, records_dir)


def open_catalog(path: str | os.PathLike) -> Catalog:
    """A catalogue folder's current generation: its table (one row per photo), embeddings, models and calibration."""
    return read_catalog(path)


def catalog_summary(catalog: str | os.PathLike | Catalog) -> dict:
    """Photos, individuals, sources, runs and calibration of a catalogue (`photoid catalog list --json`)."""
    return summary(catalog if isinstance(catalog, Catalog) else read_catalog(catalog))


def identifications(photos: Sequence[str | os.PathLike], *, runs: Sequence[str | os.PathLike | RunInfo] | None = None,
                    catalog: str | os.PathLike | Catalog | None = None, weights: str | os.PathLike | None = None,
                    recipe: str | None = None, data_dir: str | os.PathLike | None = None,
                    folds: Sequence[int] | None = None, tta: int | None = None, top: int = 5,
                    viewpoint: str | None = None, blend_weight: float | None = None, threshold: float | None = None,
                    records_dir: str | None = None, dim: int | None = None, dim_pre: int | None = None,
                    batch_size: int = DEFAULT_BATCH, ensemble=None) -> Iterator[Identification]:
    """Each photo's result, in the given order, batch by batch (`photoid identify`): a photo that cannot be read
    gets its reason (`error`) instead of candidates, and the others go on.

    Three ways to identify: trained `runs` (their fold ensemble: probabilities averaged over runs, folds and TTA;
    ids outside the nameable ones read the task's new label), a `catalog` (photos ranked against its individuals,
    blended with its runs' probabilities, new below the calibrated `threshold`), or a whole-model `weights` file
    with its `recipe` and `data_dir` (e.g. the Turtle Recall original's published `ef1b7-fold0.h5`). `viewpoint`
    applies to every photo: right views are mirrored for runs whose records mirrored them. `ensemble`: the fold
    models `fold_ensemble` already loaded, for a caller that identifies several times."""
    if top < 1:
        raise PhotoidError(f"--top must be at least 1, got {top}")
    photos = [str(p) for p in photos]
    viewpoints = None if viewpoint is None else [viewpoint] * len(photos)
    if catalog is not None:
        from photoid.catalog.identify import identify_paths_with_catalog

        for option, value in (("weights", weights), ("folds", folds), ("tta", tta), ("model", recipe), ("dim", dim),
                              ("dim_pre", dim_pre)):
            if value is not None:
                raise PhotoidError(f"--{option} does not apply with --catalog: the catalogue's own models are used")
        return identify_paths_with_catalog(catalog, photos, run_dirs=_run_dirs(runs), records_dir=records_dir,
                                           top=top, batch_size=batch_size, blend_weight=blend_weight,
                                           threshold=threshold, viewpoints=viewpoints)
    from photoid.inference.identify import identify_paths

    if ensemble is None:
        ensemble = fold_ensemble(runs=runs, weights=weights, recipe=recipe, data_dir=data_dir, folds=folds, tta=tta,
                                 viewpoint=viewpoint, records_dir=records_dir, dim=dim, dim_pre=dim_pre)
    return identify_paths(ensemble, photos, top, batch_size, viewpoints)


def fold_ensemble(*, runs=None, weights=None, recipe=None, data_dir=None, folds=None, tta=None, viewpoint=None,
                  records_dir=None, dim=None, dim_pre=None):
    """The fold models that `identifications` averages, loaded once (`photoid.inference.identify.Ensemble`): the
    runs' trained folds, or one model from a whole-model weight file."""
    from photoid.inference.identify import ensemble_from_runs, ensemble_from_weights
    from photoid.runs.loaded import RunInfo, check_viewpoint_applies, load_run

    if weights:
        if runs:
            raise PhotoidError("give either --run folders or --weights with --model, not both")
        if not recipe or not data_dir:
            raise PhotoidError("--weights needs --model RECIPE and --data_dir (its train.csv and extra_images.csv "
                               "give the class order)")
        if folds:
            raise PhotoidError("--folds applies to run folders; a weight file is one model")
        if viewpoint is not None:
            raise PhotoidError("--viewpoint applies to runs trained on whale records (right views mirrored); a "
                               "Turtle Recall weight file's records keep every view as it is")
        return ensemble_from_weights(weights, recipe, data_dir, dim=dim, dim_pre=dim_pre, tta=tta)
    if not runs:
        raise PhotoidError("give at least one --run RUN_DIR (or --weights FILE --model RECIPE --data_dir D)")
    for option, value in (("model", recipe), ("dim", dim), ("dim_pre", dim_pre)):
        if value is not None:
            raise PhotoidError(f"--{option} applies to --weights only; a run folder holds its own settings")
    loaded = [run if isinstance(run, RunInfo) else load_run(run, records_dir) for run in runs]
    # Before the models load: a viewpoint that would change nothing is a mistake to say at once.
    check_viewpoint_applies(viewpoint, [run.preprocessing for run in loaded],
                            ", ".join(str(run.run_dir) for run in loaded) + (" was" if len(loaded) == 1 else " were"))
    return ensemble_from_runs(loaded, folds, tta)


def identify(photos: Sequence[str | os.PathLike], **options) -> pd.DataFrame:
    """`identifications` as one table: a row per candidate (`photo`, `rank` from 1, `individual_id`, `score`: the
    ensemble's probability, or the catalogue's blended score) and a row per unreadable photo (`rank` 0, its
    reason in `error`, empty otherwise). Options as `identifications`."""
    rows = []
    for result in identifications(photos, **options):
        if result.error is not None:
            rows.append({"photo": result.path, "rank": 0, "individual_id": "", "score": float("nan"),
                         "error": result.error})
            continue
        rows += [{"photo": result.path, "rank": rank, "individual_id": label, "score": score, "error": ""}
                 for rank, (label, score) in enumerate(zip(result.labels, result.scores), start=1)]
    return pd.DataFrame(rows, columns=["photo", "rank", "individual_id", "score", "error"])


def calibrate(catalog: str | os.PathLike | Catalog, runs: Sequence[str | os.PathLike] | None = None, *,
              save: bool = True, **options) -> dict:
    """Choose the catalogue's new-individual threshold and blend weight out of fold (`photoid calibrate`) and, with
    `save`, store them in its manifest (photos added meanwhile are kept). `options`: `new_fraction`, `repeats`,
    `seed`, `use_probabilities`, `label_space`, `records_dir` (`photoid calibrate --help`). Returns the
    calibration: the chosen values and the out-of-fold metrics."""
    from photoid.catalog.calibrate import calibrate as choose

    catalog = catalog if isinstance(catalog, Catalog) else read_catalog(catalog)
    calibration = choose(catalog, _run_dirs(runs), **options)
    if save:
        with catalog_transaction(catalog.path, waiting_message="to record the calibration") as tx:
            tx.commit_manifest(calibration=calibration)
    return calibration


def evaluate(catalog: str | os.PathLike | Catalog, data_dir: str | os.PathLike | None = None, *,
             runs: Sequence[str | os.PathLike] | None = None, out: str | os.PathLike | None = None,
             records_dir: str | None = None) -> pd.DataFrame:
    """Score a calibrated catalogue on a test set with its truth (`photoid calibrate --evaluate`; Turtle Recall's
    test_labels.csv over the leaderboard's 101 labels): the classifier's rule, the catalogue without and with its
    threshold, and the blend, one row each (`method`, `map5`, `acc1`, `acc1_known`, `acc1_new`). `out` also
    writes the result as JSON."""
    from photoid.catalog.calibrate import evaluate as score

    catalog = catalog if isinstance(catalog, Catalog) else read_catalog(catalog)
    result = score(catalog, _run_dirs(runs), str(data_dir or catalog.manifest["data_dir"]),
                   out=None if out is None else str(out), records_dir=records_dir)
    return pd.DataFrame(result["rows"]).assign(n_test=result["n_test"])


def _run_dirs(runs) -> list[str] | None:
    if not runs:
        return None
    return [str(getattr(run, "run_dir", run)) for run in runs]


def __getattr__(name: str):
    if name == "RunInfo":  # the type open_run returns; its module loads TensorFlow, so it is imported when asked for
        from photoid.runs.loaded import RunInfo

        return RunInfo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

