"""`photoid catalog`: a catalogue of known individuals — one embedding per photo — that grows without retraining.

Its files, and the transactions through which every command (and any other writer, such as a web page) changes
them, are `photoid.catalog_store`'s:

    with catalog_transaction(path, waiting_message="to add 3 photos of t_id_X") as tx:
        current = tx.catalog                      # this generation, read under the lock (None: no catalogue yet)
        tx.commit(current.manifest, table, embeddings)   # or tx.commit_manifest(calibration=...)

Column block m of the embeddings is fold model m's own normalised embedding (scaled); the manifest's `models`
list gives each block's `offset` and `dim`. Identification scores individuals in each model's space and averages
(`openset.catalogue_scores`); calibration compares photos in the space of the one fold model that never trained
on them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from photoid.catalog_store import MANIFEST, VIEWPOINT_COLUMN, Catalog, _now, catalog_transaction, read_catalog
from photoid.config import parse_folds, view_list
from photoid.errors import PhotoidError, ProblemList
from photoid.labels import NEW_INDIVIDUAL, NEW_TURTLE
from photoid.results import Identification
from photoid.tasks import get_task
from photoid.openset import blend_scores, catalogue_scores, rank_with_new
from photoid.whales.data import VIEWPOINTS

RESERVED_IDS = (NEW_INDIVIDUAL, NEW_TURTLE)
DEFAULT_BATCH = 64


# ----------------------------------------------------------------------------- models

def load_catalog_embedder(catalog: Catalog, run_dirs: Sequence[str] | None = None, records_dir: str | None = None):
    """The catalogue's own fold models (an `Embedder`), from its recorded run folders or `run_dirs` in their place.

    `run_dirs` (runs moved elsewhere, or the runs a classifier ensemble uses) must hold the very models the
    catalogue was made with, in the same order; anything else is refused with the difference named.
    """
    from photoid.embedder import Embedder, check_same_models
    from photoid.runs import load_run

    runs = {old: load_run(new, records_dir) for old, new in zip(catalog.run_dirs(), catalog.run_dirs(run_dirs))}
    embedder = Embedder([(runs[m["run_dir"]], m["fold"]) for m in catalog.models])
    check_same_models(catalog.models, embedder.signatures(), f"catalogue {catalog.path}")
    if embedder.dim != catalog.dim:
        raise PhotoidError(f"catalogue {catalog.path} holds {catalog.dim}-dimensional embeddings but its models "
                           f"give {embedder.dim}")
    return embedder


# ----------------------------------------------------------------------------- identification

def operating_point(catalog: Catalog, with_probabilities: bool, blend_weight: float | None = None,
                    threshold: float | None = None) -> tuple[float, float]:
    """(blend weight, threshold): the given ones, else the catalogue's calibrated ones for that weight.

    Without classifier probabilities the weight is 0 and the threshold the one calibrated for similarity alone.
    """
    calibration = catalog.calibration or {}
    if blend_weight is None:
        blend_weight = float(calibration.get("blend_weight", 0.0)) if with_probabilities else 0.0
    if blend_weight > 0 and not with_probabilities:
        raise PhotoidError(f"a blend weight of {blend_weight} needs the classifier's probabilities")
    if threshold is None:
        by_weight = {float(p["blend_weight"]): float(p["threshold"]) for p in calibration.get("by_weight", [])}
        if not calibration:
            raise PhotoidError(f"catalogue {catalog.path} is not calibrated: run photoid calibrate, or give a "
                               "threshold for new individuals (--threshold)")
        if float(blend_weight) not in by_weight:
            raise PhotoidError(f"catalogue {catalog.path} has no threshold calibrated for blend weight "
                               f"{blend_weight} (calibrated: {sorted(by_weight)}); give --threshold")
        threshold = by_weight[float(blend_weight)]
    return float(blend_weight), float(threshold)


def identify_with_catalog(embeddings: np.ndarray, catalog: Catalog, classifier_probs: np.ndarray | None = None,
                          classes: Sequence[str] | None = None, *, top: int = 5, blend_weight: float | None = None,
                          threshold: float | None = None, nameable: Sequence[str] | None = None,
                          new_label: str = NEW_INDIVIDUAL, backend: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """The `top` labels per photo and their scores, by catalogue similarity (blended with the classifier).

    `embeddings` come from the catalogue's own models (`load_catalog_embedder`). Each individual scores its best
    cosine in each model's space, averaged over the models (`openset.catalogue_scores`); with `classifier_probs`
    (photos × `classes`) the score is (1 − w)·that + w·probability; `new_label` is inserted where the best score
    does not exceed the threshold. Weight and threshold default to the catalogue's calibration. `nameable`
    limits the individuals named (others read `new_label`; Turtle Recall's 101 labels: the original ids).
    Returns labels (photos, top) and scores, "" and NaN past the candidates.
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape[1] != catalog.dim:
        raise PhotoidError(f"embeddings of shape {embeddings.shape} cannot be compared with catalogue "
                           f"{catalog.path}, whose embeddings have {catalog.dim} dimensions: they come from other "
                           "models; embed the photos with the catalogue's runs")
    with_probabilities = classifier_probs is not None
    weight, threshold = operating_point(catalog, with_probabilities, blend_weight, threshold)
    names, codes = catalog.individuals()
    scores = catalogue_scores(embeddings, catalog.embeddings, codes, len(names), catalog.blocks(), backend=backend)
    if with_probabilities and weight > 0:
        probs, has_probability = align_probabilities(classifier_probs, classes, names)
        scores = blend_scores(scores, probs, has_probability, weight)
    return rank_with_new(scores, names, threshold, k=top, nameable=nameable, new_label=new_label)


def align_probabilities(probs: np.ndarray, classes: Sequence[str] | None, names: Sequence[str]
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Classifier probabilities re-ordered to the catalogue's individuals, and which individuals it knows."""
    if classes is None or np.shape(probs)[1] != len(classes):
        raise PhotoidError("classifier probabilities need their classes, one per column")
    column = {c: i for i, c in enumerate(classes)}
    index = np.array([column.get(n, -1) for n in names], dtype=np.int64)
    known = index >= 0
    aligned = np.zeros((len(probs), len(names)), dtype=np.float32)
    aligned[:, known] = np.asarray(probs)[:, index[known]]
    return aligned, known


def identify_paths_with_catalog(catalog_dir: str | Path | Catalog, paths: Sequence[str], *,
                                run_dirs: Sequence[str] | None = None, records_dir: str | None = None,
                                top: int = 5, batch_size: int = DEFAULT_BATCH, blend_weight: float | None = None,
                                threshold: float | None = None, embedder=None,
                                viewpoints: Sequence[str | None] | None = None) -> Iterator:
    """`photoid identify --catalog`: photos → `photoid.results.Identification`, in order, batch by batch.

    The catalogue's models embed each photo and give the classifier's probabilities; every catalogue individual
    can be named (only the runs' original ids if the catalogue was calibrated for them), and a photo scoring no
    individual above the threshold is `new_turtle` (Turtle Recall runs) or `new_individual`. `run_dirs`, when
    given, must be the catalogue's runs (else a clear error). A long-lived caller (`photoid serve`) passes the
    catalogue it holds and its `load_catalog_embedder`, so the models are loaded once. `viewpoints` (one per
    photo, None: unknown) mirror right views for models whose records mirrored them; refused for other models.
    """
    catalog = catalog_dir if isinstance(catalog_dir, Catalog) else read_catalog(catalog_dir)
    embedder = embedder or load_catalog_embedder(catalog, run_dirs, records_dir)
    first_run = embedder.members[0][0]
    new_label = get_task(first_run.config.task).new_label
    label_space = (catalog.calibration or {}).get("label_space", "catalog")
    nameable = first_run.original_ids if label_space == "original" else None
    operating_point(catalog, True, blend_weight, threshold)  # fail before any photo is read
    check_viewpoint(embedder, next((v for v in viewpoints or () if v), None))
    for batch, readable, embeddings, probs, errors in embedder.batches(paths, batch_size, probabilities=True,
                                                                       viewpoints=viewpoints):
        results = {path: Identification(path, error=reason) for path, reason in errors.items()}
        if readable:
            labels, scores = identify_with_catalog(embeddings, catalog, probs, embedder.classes, top=top,
                                                   blend_weight=blend_weight, threshold=threshold,
                                                   nameable=nameable, new_label=new_label)
            for i, path in enumerate(readable):
                kept = [(str(label), float(score)) for label, score in zip(labels[i], scores[i]) if label != ""]
                results[path] = Identification(path, probs[i], [label for label, _ in kept],
                                               [score for _, score in kept])
        yield from (results[path] for path in batch)


# ----------------------------------------------------------------------------- build, add, list

def _runs_summary(signatures: list[dict], runs_by_dir: dict) -> list[dict]:
    summary: dict[str, dict] = {}
    for sig in signatures:
        run = runs_by_dir[sig["run_dir"]]
        entry = summary.setdefault(sig["run_dir"], {
            "run": sig["run"], "run_dir": sig["run_dir"], "recipe": run.config.model,
            "config_sha256": sig["config_sha256"], "classes_sha256": sig["classes_sha256"],
            "image_size": run.config.dim, "embedding_size": sig["dim"], "folds": []})
        entry["folds"].append(sig["fold"])
    return list(summary.values())


def build_catalog(run_dirs: Sequence[str], data_dir: str | Path, out: str | Path, *, folds: list[int] | None = None,
                  records_dir: str | None = None, batch_size: int = DEFAULT_BATCH, force: bool = False) -> Catalog:
    """A catalogue of every labelled photo of a data folder of the runs' task (`Task.labelled_photos`: Turtle
    Recall's train.csv then extra_images.csv; a whale folder's labelled metadata rows; a generic folder's train
    rows). Whale and generic folders say each photo's viewpoint: right views are embedded mirrored where the runs'
    records mirrored them, as the models saw them in training."""
    from photoid.embedder import Embedder
    from photoid.inference import EMBEDDING_VIEWS
    from photoid.runs import choose_folds, load_run

    out = Path(out)
    _check_build_target(out, force)  # before the slow work, and again under the lock
    runs = [load_run(d, records_dir) for d in run_dirs]
    table = get_task(runs[0].config.task).labelled_photos(data_dir)
    views = {view for run in runs for view in view_list(run.config.views)}
    if views and all(run.config.views for run in runs) and VIEWPOINT_COLUMN in table.columns:
        # Runs trained on some views only (the winner's top models) embed only photos of those views.
        table = table[table[VIEWPOINT_COLUMN].isin(views)].reset_index(drop=True)
        if table.empty:
            raise PhotoidError(f"{data_dir} has no labelled photo of the views the runs were trained on "
                               f"({', '.join(sorted(views))})")
    embedder = Embedder([(run, fold) for run in runs for fold in choose_folds(run, folds)])
    started = time.time()
    viewpoints = table[VIEWPOINT_COLUMN].tolist() if VIEWPOINT_COLUMN in table.columns else None
    embeddings = embedder.embed_all(table["path"].tolist(), batch_size, viewpoints)
    signatures = embedder.signatures()
    manifest = {
        "created": _now(),
        "data_dir": str(Path(data_dir).resolve()), "embedding_views": list(EMBEDDING_VIEWS),
        "models": signatures, "runs": _runs_summary(signatures, {str(r.run_dir.resolve()): r for r in runs}),
        "seconds_to_build": round(time.time() - started, 1), "calibration": None,
    }
    with catalog_transaction(out, waiting_message=f"to build a catalogue of {len(table)} photos") as tx:
        _check_build_target(out, force)
        return tx.commit(manifest, table, embeddings)


def _check_build_target(out: Path, force: bool) -> None:
    if (out / MANIFEST).is_file():
        if not force:
            raise PhotoidError(f"{out} already holds a catalogue; --force replaces it (photos added to it are lost)")
    elif out.exists() and (not out.is_dir() or any(not p.name.startswith(".") for p in out.iterdir())):
        raise PhotoidError(f"{out} exists and is not a catalogue folder; choose a new or empty folder")


def add_photos(catalog_dir: str | Path, paths: Sequence[str], individual_id: str, *,
               run_dirs: Sequence[str] | None = None, records_dir: str | None = None,
               batch_size: int = DEFAULT_BATCH, viewpoint: str | None = None) -> tuple[Catalog, bool]:
    """Add photos of one individual, known or new; returns (the updated catalogue, whether it was known).

    `viewpoint` (of every photo; None: unknown) mirrors right views for models whose records mirrored them; it is
    kept in the table's viewpoint column.

    A photo's image id is its file name without the extension; it must be new to the catalogue. The photos are
    embedded first, then added to the catalogue's generation current at that moment (`catalog_transaction`),
    so adds running at the same time all keep their photos.
    """
    from photoid.tables import text_problem

    reason = text_problem(individual_id)
    if reason or individual_id in RESERVED_IDS:
        raise PhotoidError(f"--id {individual_id!r} " + (reason or "is reserved for individuals not in the catalogue"))
    if not paths:
        raise PhotoidError("no photos given")
    catalog = read_catalog(catalog_dir)
    image_ids = [Path(p).stem for p in paths]
    _check_new_image_ids(catalog, paths, image_ids)  # before the slow work, and again under the lock
    embedder = load_catalog_embedder(catalog, run_dirs, records_dir)
    check_viewpoint(embedder, viewpoint)
    embeddings = embedder.embed_all(paths, batch_size, None if viewpoint is None else [viewpoint] * len(paths))
    added = pd.DataFrame({"individual_id": individual_id, "image_id": image_ids, "source": "added",
                          "path": [str(Path(p).resolve()) for p in paths]})
    if viewpoint is not None:
        added[VIEWPOINT_COLUMN] = viewpoint
    with catalog_transaction(catalog.path, f"to add {len(paths)} photo(s) of {individual_id}") as tx:
        current = tx.catalog
        if current is None or current.models != catalog.models:
            raise PhotoidError(f"{catalog.path} was rebuilt while the photos were embedded; nothing was added, add "
                               "them again")
        _check_new_image_ids(current, paths, image_ids)
        known = bool((current.table["individual_id"] == individual_id).any())
        table = with_viewpoints(pd.concat([current.table, added], ignore_index=True))
        updated = tx.commit(current.manifest, table, np.concatenate([current.embeddings, embeddings]))
    return updated, known


def check_viewpoint(embedder, viewpoint: str | None) -> None:
    """Refuse a viewpoint for a catalogue whose models' records never mirrored right views (it would change
    nothing)."""
    from photoid.runs import check_viewpoint_applies

    check_viewpoint_applies(viewpoint, [m.preprocessing for m in embedder.predictor.members],
                            "the catalogue's models were")


def with_viewpoints(table: pd.DataFrame) -> pd.DataFrame:
    """A table joined from rows with and without viewpoints: the unknown ones read "" (as in the table file)."""
    if VIEWPOINT_COLUMN in table.columns:
        table[VIEWPOINT_COLUMN] = table[VIEWPOINT_COLUMN].fillna("")
    return table


def _check_new_image_ids(catalog: Catalog, paths: Sequence[str], image_ids: Sequence[str]) -> None:
    problems, seen = ProblemList(), set(catalog.table["image_id"])
    for path, image_id in zip(paths, image_ids):
        if image_id in seen:
            problems.add(str(path), None, f"image id {image_id!r} (the file name) is already in the catalogue")
        seen.add(image_id)
    problems.raise_if_any(title="photos that cannot be added")


def summary(catalog: Catalog) -> dict:
    """Individuals, photos and their sources, the runs that made it and its calibration."""
    table = catalog.table
    by_source = {source: {"images": int(len(rows)), "individuals": int(rows["individual_id"].nunique())}
                 for source, rows in table.groupby("source", sort=True)}
    per_individual = table.groupby("individual_id").size()
    return {"catalog": str(catalog.path), "images": int(len(table)), "individuals": int(len(per_individual)),
            "single_photo_individuals": int((per_individual == 1).sum()), "dim": catalog.dim,
            "sources": by_source, "runs": catalog.manifest.get("runs", []), "updated": catalog.manifest["updated"],
            "calibration": catalog.calibration}


def format_summary(info: dict) -> str:
    lines = [f"catalogue {info['catalog']} (updated {info['updated']})",
             f"  {info['images']} photos of {info['individuals']} individuals "
             f"({info['single_photo_individuals']} with a single photo); embeddings of {info['dim']} dimensions"]
    lines += [f"  source {name}: {s['images']} photos, {s['individuals']} individuals"
              for name, s in info["sources"].items()]
    lines += [f"  run {r['run']} ({r['recipe']}, {r['image_size']} px): folds {r['folds']}, "
              f"{r['embedding_size']} dimensions per fold, {r['run_dir']}" for r in info["runs"]]
    c = info["calibration"]
    lines.append("  calibration: none (photoid calibrate chooses the new-individual threshold)" if not c else
                 f"  calibration: threshold {c['threshold']:.4f}, blend weight {c['blend_weight']}, out-of-fold "
                 f"MAP@5 {c['metrics']['map5']:.4f} ({c['calibrated']})")
    return "\n".join(lines)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = actions.add_parser("build", help="embed every labelled photo of a data folder with trained runs")
    build.add_argument("--run", dest="runs", nargs="+", action="extend", required=True, metavar="RUN_DIR",
                       help="trained run folder(s); their fold models make the embeddings")
    build.add_argument("--data_dir", required=True,
                       help="the runs' data folder (Turtle Recall, Where's Whale-do or generic): its labelled photos")
    build.add_argument("--out", required=True, help="catalogue folder to write")
    build.add_argument("--folds", type=parse_folds, help="folds to use, e.g. 0,1 (default: every trained fold)")
    build.add_argument("--force", action="store_true", help="replace an existing catalogue")
    add = actions.add_parser("add", help="add photos of a known or a new individual, without retraining")
    add.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG photos of that individual")
    add.add_argument("--id", dest="individual_id", required=True, help="the individual's id")
    add.add_argument("--catalog", required=True, help="catalogue folder")
    add.add_argument("--run", dest="runs", nargs="+", action="extend", metavar="RUN_DIR",
                     help="where the catalogue's runs are now, if they moved (default: as recorded)")
    add.add_argument("--viewpoint", choices=VIEWPOINTS,
                     help="the viewpoint of every photo given: right views are mirrored, as whale records store "
                          "them (default: unknown, not mirrored; refused for models whose records never mirror)")
    show = actions.add_parser("list", help="summarise a catalogue")
    show.add_argument("--catalog", required=True, help="catalogue folder")
    show.add_argument("--json", action="store_true", help="print the summary as JSON")
    for sub in (build, add):
        sub.add_argument("--records_dir", help="records folder the runs were trained from (default: config.json's)")
        sub.add_argument("--batch_size", type=int, default=DEFAULT_BATCH, help="photos embedded at once")


def run(args: argparse.Namespace) -> int:
    started = time.time()
    if args.action == "build":
        catalog = build_catalog(args.runs, args.data_dir, args.out, folds=args.folds, records_dir=args.records_dir,
                                batch_size=args.batch_size, force=args.force)
        print(f"catalogue {catalog.path}: {len(catalog.table)} photos of {catalog.table['individual_id'].nunique()} "
              f"individuals from {len(catalog.models)} model(s) in {time.time() - started:.0f}s")
    elif args.action == "add":
        catalog, known = add_photos(args.catalog, args.images, args.individual_id, run_dirs=args.runs,
                                    records_dir=args.records_dir, batch_size=args.batch_size,
                                    viewpoint=args.viewpoint)
        count = int((catalog.table["individual_id"] == args.individual_id).sum())
        print(f"added {len(args.images)} photo(s) of {'known' if known else 'new'} individual {args.individual_id} "
              f"(now {count} photo(s)) to {catalog.path} in {time.time() - started:.1f}s")
    else:
        info = summary(read_catalog(args.catalog))
        print(json.dumps(info, indent=2) if args.json else format_summary(info))
    return 0
