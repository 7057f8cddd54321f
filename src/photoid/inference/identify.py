"""`photoid identify`: which individual is in each photo, by the trained runs' fold ensemble.

Each photo goes through its run's own preprocessing (the records' preparation, then the reader's chain with each
TTA transform), every chosen fold model of every chosen run predicts it, and the probabilities are averaged over
runs, folds and TTA transforms as the ensemble averages prediction files. The candidates are the ensemble's
labels: `photoid.ensemble.top_labels` maps every id outside the original ones to `new_turtle`.

Models are loaded once per call; photos are read and predicted in batches, so memory stays bounded for any number
of photos. A photo that cannot be read is named on stderr and skipped, and the exit code (1) says so.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from photoid.labels import NEW_TURTLE, top_labels
from photoid.results import Identification
from photoid.errors import PhotoidError
from photoid.config import parse_folds
from photoid.tasks import get_task
from photoid.whales.data import VIEWPOINTS

# TensorFlow (through photoid.runs) is imported where models are loaded, not here: `photoid identify --help`
# and a usage error answer at once instead of after its three-second start-up.
if TYPE_CHECKING:
    from photoid.inference import Member
    from photoid.runs import RunInfo

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
        from photoid.inference import Predictor

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
    from photoid.inference import Member, load_fold_models
    from photoid.runs import check_same_labels

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
    from photoid.config import resolve_config
    from photoid.data import load_turtles
    from photoid.inference import Member, build_fold_model
    from photoid.runs import Preprocessing

    data = load_turtles(data_dir, check_images=False)
    cfg = resolve_config(argparse.Namespace(model=recipe, weights=str(weights), dim=dim, dim_pre=dim_pre,
                                            data_dir=str(data_dir)))
    if cfg.head != "softmax":
        raise PhotoidError(f"recipe {recipe}: only softmax recipes name individuals from a weight file alone")
    model = build_fold_model(cfg, len(data.classes), weights)
    preprocessing = Preprocessing(dim=cfg.dim, dim_pre=cfg.dim_pre, records_dim_pre=cfg.dim_pre, layout="original")
    member = Member(model, preprocessing, _ttas(tta, cfg.tta_number))
    return Ensemble([member], data.classes, data.original_ids, Path(data_dir))


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

def candidate_rows(result: Identification) -> list[dict]:
    return [{"image": result.path, "rank": rank, "label": label, "probability": score}
            for rank, (label, score) in enumerate(zip(result.labels, result.scores), start=1)]


def format_table(result: Identification) -> str:
    lines = [result.path, "  rank  label                        probability"]
    lines += [f"  {row['rank']:>4}  {row['label']:<28} {row['probability']:>11.4f}" for row in candidate_rows(result)]
    return "\n".join(lines)


class Output:
    """Writes results to stdout as they come: a table per photo, CSV rows, or one JSON document at the end."""

    def __init__(self, kind: str, stream=None):
        self.kind, self.stream = kind, stream or sys.stdout
        self.collected: list[dict] = []
        self.csv = csv.DictWriter(self.stream, fieldnames=["image", "rank", "label", "probability"], lineterminator="\n")
        if kind == "csv":
            self.csv.writeheader()

    def add(self, result: Identification) -> None:
        if self.kind == "json":
            self.collected.append({"image": result.path, "candidates": [
                {k: v for k, v in row.items() if k != "image"} for row in candidate_rows(result)]})
        elif self.kind == "csv":
            for row in candidate_rows(result):
                self.csv.writerow({**row, "probability": f"{row['probability']:.6g}"})
        else:
            print(format_table(result) + "\n", file=self.stream)
        self.stream.flush()

    def close(self, failed: list[Identification]) -> None:
        if self.kind == "json":
            document = {"results": self.collected,
                        "failed": [{"image": r.path, "reason": r.error} for r in failed]}
            json.dump(document, self.stream, indent=2)
            self.stream.write("\n")


# ----------------------------------------------------------------------------- command

def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="photos (JPEG) to identify")
    parser.add_argument("--run", dest="runs", action="append", metavar="RUN_DIR",
                        help="trained run folder (repeat to average several runs)")
    parser.add_argument("--folds", type=parse_folds, help="folds to use, e.g. 0,1 (default: every trained fold)")
    parser.add_argument("--top", type=int, default=5, help="candidates per photo")
    parser.add_argument("--tta", type=int, help="average TTA transforms 0..N (default: the run's tta_number)")
    parser.add_argument("--batch_size", type=int, default=DEFAULT_BATCH, help="photos read and predicted at once")
    parser.add_argument("--records_dir", help="records folder the run was trained from (default: from config.json)")
    parser.add_argument("--viewpoint", choices=VIEWPOINTS,
                        help="the viewpoint of every photo given: right views are mirrored, as whale records store "
                             "them (default: unknown, not mirrored; refused for runs whose records never mirror)")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    form.add_argument("--csv", action="store_true", help="print CSV rows (image, rank, label, probability)")
    parser.add_argument("--gallery", metavar="PNG", help="also draw each photo beside its candidates into this PNG")
    parser.add_argument("--data_dir", help="competition folder: the labels for --weights, reference photos for "
                                           "--gallery (default: the run's data_dir)")
    weights = parser.add_argument_group("a published weight file instead of a run")
    weights.add_argument("--weights", help="whole-model .h5 weight file (e.g. the original's ef1b7-fold0.h5)")
    weights.add_argument("--model", help="recipe the weight file was trained with (e.g. ef1b7)")
    weights.add_argument("--dim", type=int, help="override the recipe's image size")
    weights.add_argument("--dim_pre", type=int, help="override the recipe's pre-augmentation size")
    catalog = parser.add_argument_group("against a catalogue of known individuals (photoid catalog build)")
    catalog.add_argument("--catalog", help="catalogue folder: rank its individuals by similarity, blended with the "
                                           "runs' probabilities; new below the threshold (runs: the catalogue's)")
    catalog.add_argument("--blend_weight", type=float, help="weight of the probabilities (default: calibrated)")
    catalog.add_argument("--threshold", type=float, help="normalised score at or below which a photo is new "
                                                         "(default: calibrated)")
    catalog.add_argument("--faiss_above", type=int,
                         help="deprecated and ignored: the catalogue's search is chosen by its measured cost")


def _build_ensemble(args: argparse.Namespace) -> Ensemble:
    if args.weights:
        if args.runs:
            raise PhotoidError("give either --run folders or --weights with --model, not both")
        if not args.model or not args.data_dir:
            raise PhotoidError("--weights needs --model RECIPE and --data_dir (its train.csv and extra_images.csv "
                               "give the class order)")
        if args.folds:
            raise PhotoidError("--folds applies to run folders; a weight file is one model")
        if args.viewpoint is not None:
            raise PhotoidError("--viewpoint applies to runs trained on whale records (right views mirrored); a "
                               "Turtle Recall weight file's records keep every view as it is")
        return ensemble_from_weights(args.weights, args.model, args.data_dir, dim=args.dim, dim_pre=args.dim_pre,
                                     tta=args.tta)
    if not args.runs:
        raise PhotoidError("give at least one --run RUN_DIR (or --weights FILE --model RECIPE --data_dir D)")
    for option in ("model", "dim", "dim_pre"):
        if getattr(args, option) is not None:
            raise PhotoidError(f"--{option} applies to --weights only; a run folder holds its own settings")
    from photoid.runs import check_viewpoint_applies, load_run

    runs = [load_run(run_dir, args.records_dir) for run_dir in args.runs]
    # Before the models load: a viewpoint that would change nothing is a mistake to say at once.
    check_viewpoint_applies(args.viewpoint, [run.preprocessing for run in runs],
                            ", ".join(str(run.run_dir) for run in runs) + (" was" if len(runs) == 1 else " were"))
    return ensemble_from_runs(runs, args.folds, args.tta)


def run(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise PhotoidError(f"--top must be at least 1, got {args.top}")
    if args.catalog:
        results, data_dir, subtitle = _catalog_results(args)
    else:
        ensemble = _build_ensemble(args)
        print(f"identifying {len(args.images)} photo(s) with {len(ensemble.members)} model(s), "
              f"{ensemble.n_predictions} prediction(s) averaged per photo", file=sys.stderr)
        results = identify_paths(ensemble, args.images, args.top, args.batch_size, _viewpoints(args))
        data_dir, subtitle = ensemble.data_dir, f"mean of {ensemble.n_predictions} prediction(s) per photo"
    data_dir = Path(args.data_dir) if args.data_dir else data_dir
    output = Output("json" if args.json else "csv" if args.csv else "table")
    identified, failed = [], []
    for result in results:
        if result.error is not None:
            print(f"error: {result.path}: {result.error}; skipped", file=sys.stderr)
            failed.append(result)
            continue
        output.add(result)
        if args.gallery:
            identified.append(Identification(result.path, labels=result.labels, scores=result.scores))
    output.close(failed)
    if args.gallery:
        _write_gallery(args.gallery, identified, data_dir, subtitle)
    if failed:
        print(f"{len(failed)} of {len(args.images)} photo(s) could not be read: "
              f"{', '.join(r.path for r in failed)}", file=sys.stderr)
        return 1
    return 0


def _viewpoints(args: argparse.Namespace) -> list[str] | None:
    """--viewpoint, one per photo (None: not given)."""
    return None if args.viewpoint is None else [args.viewpoint] * len(args.images)


def _catalog_results(args: argparse.Namespace) -> tuple[Iterator[Identification], Path | None, str]:
    """`--catalog`: the catalogue's own models embed the photos and give the probabilities to blend."""
    from photoid.catalog import identify_paths_with_catalog, read_catalog

    for option in ("weights", "folds", "tta", "model", "dim", "dim_pre"):
        if getattr(args, option) is not None:
            raise PhotoidError(f"--{option} does not apply with --catalog: the catalogue's own models are used")
    if args.faiss_above is not None:
        print("--faiss_above is deprecated and ignored: the catalogue is searched the faster exact way for its size",
              file=sys.stderr)
    data_dir = read_catalog(args.catalog).manifest.get("data_dir")
    print(f"identifying {len(args.images)} photo(s) against catalogue {args.catalog}", file=sys.stderr)
    results = identify_paths_with_catalog(args.catalog, args.images, run_dirs=args.runs, records_dir=args.records_dir,
                                          top=args.top, batch_size=args.batch_size, blend_weight=args.blend_weight,
                                          threshold=args.threshold, viewpoints=_viewpoints(args))
    return results, Path(data_dir) if data_dir else None, "scores: similarity to the catalogue, blended"


def _write_gallery(path: str, results: list[Identification], data_dir: Path | None, subtitle: str) -> None:
    from photoid.gallery import MAX_ROWS, draw_gallery, reference_photos

    references = reference_photos(data_dir) if data_dir else {}
    if not references:
        print("note: no training data folder found (pass --data_dir): candidates are drawn without a "
              "reference photo", file=sys.stderr)
    if len(results) > MAX_ROWS:
        print(f"note: the gallery shows the first {MAX_ROWS} of {len(results)} photos", file=sys.stderr)
    rows = [(r.path, list(zip(r.labels, r.scores))) for r in results[:MAX_ROWS]]
    if not rows:
        print("no gallery written: no photo could be identified", file=sys.stderr)
        return
    draw_gallery(rows, references, path, subtitle=subtitle)
    print(f"gallery written to {path}", file=sys.stderr)

