"""`photoid whale-records`: a Where's Whale-do folder → folds.csv and TFRecords, honest about what is evaluated.

The images that the query scenarios name (queries and databases) are the evaluation set: they go to
`test.tfrecord-*`, and by default neither they nor any other photo of their encounters is trained on, so the mAP
of `photoid rank` measures photos the models never saw (`train_on_scenarios` keeps them in, as the winner trained on
everything it had). The other labelled images are split into folds, grouped by encounter by default (no encounter
on both sides of a split) or with the winner's StratifiedKFold(5, shuffle, 42).

Records (`pipeline.feature_spec(WHALE_STRING_COLUMNS, WHALE_INT_COLUMNS)`): `image_id`, `image`, `whale_id`, `label`,
`viewpoint`, `encounter_id`. `label` indexes the label space: by default (`label_space = "metadata"`) the sorted whale
ids of the whole metadata.csv, as the winner's 788 classes (its lateral model trained on the 280 whales that have
pairs, the other 508 classes being extra negatives), listed as `classes` in records.json; with `"training"` the
sorted whale ids of the training images only (-1 for a whale outside the label space, or an unlabelled folder). Right views are stored as they are, as the winner stored them; with
`mirror_right` they are stored mirrored, so every lateral photo looks like a left view (the stored `viewpoint` stays
`right`). Photos wider than tall (in the real data every lateral photo, and no top
photo) are turned 90° clockwise to stand tall, as the winner turned them for every model in training and at
inference; the horizontal flip of training and TTA then flips a lateral photo's upright image, i.e. the whale
upside down, as it did for the winner (`--no-rotate_wide` keeps them as they are).

A folder without labels (the test-time layout) gets test records only; labels without scenarios, folds only.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd

from photoid.core.errors import PhotoidError, ProblemList
from photoid.core.io import write_csv
from photoid.records.folder import FOLDS_CSV, MIRRORED_VIEWPOINT
from photoid.records.writer import (
    RecordsManifest,
    check_record_options,
    image_preparer,
    write_records,
)
from photoid.whales.data import BelugaData, load_belugas, make_whale_folds

WHALE_STRING_COLUMNS = ("image_id", "whale_id", "viewpoint", "encounter_id")
WHALE_INT_COLUMNS = ("label",)
WHALE_FOLD_COLUMNS = ["image_id", "whale_id", "label", "fold", "viewpoint", "encounter_id"]
DEFAULT_SEED = 42  # the winner's StratifiedKFold random_state
LABEL_SPACES = ("metadata", "training")  # every whale of metadata.csv (the winner's) | the training images' whales


def scenario_image_ids(data: BelugaData) -> set[str]:
    """Every image a query scenario names, as query or as database image."""
    ids: set[str] = set()
    for scenario in data.scenarios:
        ids.update(scenario.queries["query_image_id"])
        ids.update(scenario.database["database_image_id"])
    return ids


def split_training_and_evaluation(data: BelugaData, train_on_scenarios: bool,
                                  views: str = "") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, evaluation rows) of the metadata, each in metadata order.

    Evaluation rows are the scenario images. Training rows are the labelled images, less (unless
    `train_on_scenarios`) every image that shares an encounter with an evaluation image: photos of one encounter
    are near-duplicates, and training on one of them would flatter the evaluation as much as training on it.
    `views` (comma-separated viewpoints, "" = all) keeps only the training photos of those viewpoints.
    """
    from photoid.runs.config import view_list

    unknown = sorted(set(view_list(views)) - {"top", "left", "right"})
    if unknown:
        raise PhotoidError(f"views: unknown viewpoint(s) {', '.join(unknown)}; use top, left, right")
    metadata = data.metadata
    evaluated = metadata["image_id"].isin(scenario_image_ids(data))
    if not data.has_labels:
        return metadata.iloc[:0], metadata[evaluated]
    held_out = evaluated.copy()
    if not train_on_scenarios and "encounter_id" in metadata.columns:
        held_out |= metadata["encounter_id"].isin(metadata.loc[evaluated, "encounter_id"])
    training = metadata if train_on_scenarios else metadata[~held_out]
    if views:
        training = training[training["viewpoint"].isin(view_list(views))]
    return training, metadata[evaluated]


def whale_classes(data: BelugaData, training: pd.DataFrame, label_space: str) -> list[str]:
    """The sorted whale ids the labels index: every whale of the metadata, or those of the training rows."""
    if label_space not in LABEL_SPACES:
        raise PhotoidError(f"label_space must be one of {', '.join(LABEL_SPACES)}, got {label_space!r}")
    whales = data.metadata["whale_id"] if label_space == "metadata" else training["whale_id"]
    return sorted({str(w) for w in whales if str(w)})


def whale_folds_table(training: pd.DataFrame, n_folds: int, seed: int, grouped: bool,
                      classes: list[str] | None = None) -> pd.DataFrame:
    """folds.csv's rows: the training images with their label (index in `classes`, default the sorted whale ids
    of `training`) and validation fold."""
    classes = sorted(training["whale_id"].unique()) if classes is None else classes
    folds = make_whale_folds(training, n_folds, seed=seed, grouped=grouped)
    sizes = np.bincount(folds, minlength=n_folds)
    if (sizes == 0).any():
        raise PhotoidError(f"fold(s) {', '.join(map(str, np.flatnonzero(sizes == 0)))} would be empty: use fewer "
                           f"folds than the {len(training)} training images allow")
    table = training.assign(label=pd.Index(classes).get_indexer(training["whale_id"]), fold=folds)
    return table[WHALE_FOLD_COLUMNS].reset_index(drop=True)


def evaluation_table(evaluation: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """The test records' rows: empty strings for missing labels, -1 for whales outside the training classes."""
    table = evaluation.reset_index(drop=True).copy()
    for column in ("whale_id", "encounter_id"):
        if column not in table.columns:
            table[column] = ""
    table["label"] = pd.Index(classes).get_indexer(table["whale_id"]) if classes else -1
    return table


def build_whale_records(data_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, n_folds: int = 5,
                        dim_pre: int = 512, grouped: bool = True, train_on_scenarios: bool = False,
                        mirror_right: bool = False, keep_original: bool = False, shards: int = 1,
                        workers: int | None = None, seed: int = DEFAULT_SEED, force: bool = False,
                        views: str = "", rotate_wide: bool = True, pair_lateral: bool = False,
                        label_space: str = "metadata") -> dict:
    """Validate a Where's Whale-do folder, then write folds.csv, one record set per fold and the test records.

    Nothing is written when validation or the fold split fails. `out_dir` defaults to DATA_DIR/tfrec. `views`
    (comma-separated viewpoints, "" = all) keeps only those training photos, and the folds are split over them
    alone (the winner split its top models' top rows); the test records keep every scenario image. `label_space`:
    the whales the labels index (`LABEL_SPACES`). Returns a summary of what was written.
    """
    started = time.perf_counter()
    data = load_belugas(data_dir, check_images=True)
    training, evaluation = split_training_and_evaluation(data, train_on_scenarios, views)
    if views and data.has_labels and training.empty:
        raise PhotoidError(f"no training photo of {data_dir} has viewpoint {views}")
    partners = None
    if pair_lateral:   # the winner's lateral model: its folds split the paired top rows
        from photoid.whales.pairs import pair_lateral_rows

        if views:
            raise PhotoidError("--pair_lateral chooses its own rows (top photos and their lateral partners): "
                               "leave out --views")
        training, partners = pair_lateral_rows(training, seed)
        if data.has_labels and training.empty:
            raise PhotoidError(f"no whale of {data_dir} has both top and lateral training photos to pair")
    if data.has_labels and training.empty:
        raise PhotoidError(
            f"every labelled image of {data_dir} is a query-scenario image or shares an encounter with one, so "
            "nothing is left to train on. Use scenarios that name part of the images, or pass --train_on_scenarios "
            "(the mAP of the scenarios is then measured on trained photos, and flattered)")
    if training.empty and evaluation.empty:
        raise PhotoidError(f"{data_dir} has neither labels to train on nor query scenarios to rank")
    classes = whale_classes(data, training, label_space) if not training.empty else []
    folds = whale_folds_table(training, n_folds, seed, grouped, classes) if not training.empty else None

    out_dir = os.path.join(str(data_dir), "tfrec") if out_dir is None else str(out_dir)
    settings = {"dataset": "wheres-whale-do", "n_folds": n_folds, "seed": seed, "grouped": grouped,
                "train_on_scenarios": train_on_scenarios, "mirror_right": mirror_right, "dim_pre": dim_pre,
                "keep_original": keep_original, "shards": shards}
    if views:   # only when set, so records written before this setting existed still match
        settings["views"] = views
    if rotate_wide:
        settings["rotate_wide"] = True
    if pair_lateral:
        settings["pair_lateral"] = True
    wide = label_space == "metadata" and folds is not None
    if wide:   # only then, so records written before label spaces existed (the training whales) still match
        settings["label_space"] = label_space
    manifest = RecordsManifest.open(out_dir, settings, force=force, classes=classes if wide else None)
    if folds is not None:
        write_csv(os.path.join(out_dir, FOLDS_CSV), folds)

    parts = {f"fold.{k}": folds[folds["fold"] == k] for k in range(n_folds)} if folds is not None else {}
    if partners is not None and folds is not None:
        # Each partner shard holds the lateral photos of its fold shard's rows, in the same order and labels.
        partner_rows = partners.reset_index(drop=True).assign(label=folds["label"].to_numpy(), fold=folds["fold"].to_numpy())
        parts.update({f"pair.{k}": partner_rows[partner_rows["fold"] == k] for k in range(n_folds)})
    if not evaluation.empty:
        parts["test"] = evaluation_table(evaluation, classes)
    results = {}
    # Kept originals that need no mirroring or rotation are only read; re-encoding is what worker processes are for.
    with image_preparer(1 if keep_original and not mirror_right and not rotate_wide else workers) as preparer:
        for name, rows in parts.items():
            mirror = (rows["viewpoint"] == MIRRORED_VIEWPOINT).to_numpy() if mirror_right else None
            results[name] = write_records(
                rows, [data.image_path(i) for i in rows["image_id"]], os.path.join(out_dir, f"{name}.tfrecord"),
                string_columns=WHALE_STRING_COLUMNS, int_columns=WHALE_INT_COLUMNS, dim_pre=dim_pre,
                layout="original" if keep_original else "compact", manifest=manifest, shards=shards,
                preparer=preparer, mirror=mirror, rotate_wide=rotate_wide)
    used = set(training["image_id"]) | set(evaluation["image_id"])
    if partners is not None:
        used |= set(partners["image_id"])
    return {
        "out_dir": out_dir,
        "n_classes": len(classes),
        "n_trained_classes": int(training["whale_id"].nunique()) if folds is not None else 0,
        "fold_rows": [results[f"fold.{k}"]["rows"] for k in range(n_folds)] if folds is not None else [],
        "test_rows": results["test"]["rows"] if "test" in results else 0,
        "left_out": len(data.metadata) - len(used) if data.has_labels else 0,
        "mirrored": sum(int((rows["viewpoint"] == MIRRORED_VIEWPOINT).sum()) for rows in parts.values())
        if mirror_right else 0,
        "shards_written": sum(r["written"] for r in results.values()),
        "shards_kept": sum(r["kept"] for r in results.values()),
        "images_written": sum(r["images_written"] for r in results.values()),
        "seconds": round(time.perf_counter() - started, 2),
    }


def read_whale_folds(path: str | os.PathLike) -> pd.DataFrame:
    """Read a folds.csv written by `build_whale_records` with the one fold-table reader (`photoid.records.folds.read_fold_table`:
    columns, integer labels and folds numbered 0..k-1 with none empty, unique image ids, one label per whale),
    and check that the labels index the label space: records.json's classes beside it, else the sorted whale ids."""
    from photoid.core import fs
    from photoid.records.folder import RecordsDir
    from photoid.records.folds import read_fold_table

    frame = read_fold_table(path, WHALE_FOLD_COLUMNS, "whale_id")
    listed = RecordsDir(fs.as_path(path).parent).classes()   # the label space records.json lists, if any
    classes = sorted(frame["whale_id"].unique()) if listed is None else listed
    if not (frame["label"].to_numpy() == pd.Index(classes).get_indexer(frame["whale_id"])).all():
        problems = ProblemList()
        what = "the sorted order of the whale ids" if listed is None else "positions in records.json's classes"
        problems.add(str(path), None, f"labels are not {what}; rebuild the records")
        problems.raise_if_any(title="invalid fold file")
    return frame


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data_dir", default="data", help="Where's Whale-do folder: metadata.csv, images, scenarios")
    parser.add_argument("--out_dir", default=None, help="where the records go (default: DATA_DIR/tfrec)")
    parser.add_argument("--n_folds", type=int, default=5, help="number of cross-validation folds")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="random_state of the fold split (the winner's 42)")
    parser.add_argument("--dim_pre", type=int, default=512,
                        help="stored images are resized to DIM_PRE x DIM_PRE (ignored with --keep_original)")
    parser.add_argument("--grouped", action=argparse.BooleanOptionalAction, default=True,
                        help="folds grouped by encounter (--no-grouped: the winner's StratifiedKFold on the whale)")
    parser.add_argument("--train_on_scenarios", action="store_true",
                        help="also train on the scenario images and their encounters (their mAP is then flattered)")
    parser.add_argument("--mirror_right", action=argparse.BooleanOptionalAction, default=False,
                        help="store right views mirrored, so every lateral photo looks like a left view (the winner "
                             "never mirrored; with wide photos turned upright a mirrored right view is the upright "
                             "photo flipped top to bottom, which the training flip does not undo)")
    parser.add_argument("--keep_original", action="store_true",
                        help="store each photo's JPEG file as it is (mirrored photos are re-encoded at their size)")
    parser.add_argument("--shards", type=int, default=1, help="files per fold and for the test set")
    parser.add_argument("--workers", type=int, default=None, help="processes preparing images (default: all cores)")
    parser.add_argument("--rotate_wide", action=argparse.BooleanOptionalAction, default=True,
                        help="turn photos wider than tall 90° clockwise, as the winner did for every model")
    parser.add_argument("--pair_lateral", action="store_true",
                        help="the winner's lateral model: top photos paired with a random lateral photo of the same "
                             "whale (folds split over the pairs; fold.K and pair.K records)")
    parser.add_argument("--views", default="",
                        help="train only on these viewpoints, folds split over them alone (e.g. top; default: all)")
    parser.add_argument("--label_space", choices=LABEL_SPACES, default="metadata",
                        help="the classes: every whale of metadata.csv (default, the winner's 788: whales without "
                             "training photos are extra negatives) or only the training photos' whales")
    parser.add_argument("--force", action="store_true", help="replace records in OUT_DIR written with other settings")


def run(args: argparse.Namespace) -> int:
    check_record_options(args)
    summary = build_whale_records(args.data_dir, args.out_dir, n_folds=args.n_folds, dim_pre=args.dim_pre,
                                  grouped=args.grouped, train_on_scenarios=args.train_on_scenarios,
                                  mirror_right=args.mirror_right, keep_original=args.keep_original,
                                  shards=args.shards, workers=args.workers, seed=args.seed, force=args.force,
                                  views=args.views, rotate_wide=args.rotate_wide, pair_lateral=args.pair_lateral,
                                  label_space=args.label_space)
    split = ("grouped by encounter" if args.grouped else "StratifiedKFold") + (f", views {args.views}" if args.views else "")
    if summary["fold_rows"]:
        print(f"folds ({split}): {summary['fold_rows']} images of {summary['n_trained_classes']} whales; label space "
              f"{summary['n_classes']} whales ({args.label_space}); test (the scenario images): {summary['test_rows']} "
              "images")
    else:   # a folder without labels (the test-time layout)
        print(f"no labels, no folds; test (the scenario images): {summary['test_rows']} images")
    if summary["left_out"]:
        why = "sharing an encounter with a scenario image" + (
            f", or of other views than {args.views}" if args.views else
            ", or not in a (top, lateral) pair" if args.pair_lateral else "")
        print(f"left out of training: {summary['left_out']} images {why}")
    print(f"right views stored mirrored: {summary['mirrored']}")
    print(f"shards written: {summary['shards_written']}, kept from an earlier run: {summary['shards_kept']}; "
          f"{summary['images_written']} images in {summary['seconds']:.1f} s")
    print(f"records and {FOLDS_CSV}: {summary['out_dir']}")
    return 0
