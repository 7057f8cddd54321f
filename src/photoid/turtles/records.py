"""`photoid tfrecords`: a Turtle Recall folder -> folds.csv (the original's split) and its TFRecords.

One record set per fold (`fold.K.tfrecord-*`, rows in fold K's order in folds.csv) and the test set
(`test.tfrecord-*`, label -1), written by the shared resumable writer (`photoid.records.writer`).
"""

from __future__ import annotations

import argparse
import os
import time

from photoid.records.folder import FOLDS_CSV
from photoid.records.writer import (
    DEFAULT_LAYOUT,
    RecordsManifest,
    add_layout_arguments,
    check_record_options,
    chosen_layout,
    image_preparer,
    write_records,
)

TURTLE_STRING_COLUMNS = ("image_id", "label_id", "image_location")
TURTLE_INT_COLUMNS = ("label",)


def build_turtle_records(data_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, n_folds: int = 5,
                         dim_pre: int = 512, layout: str = DEFAULT_LAYOUT, shards: int = 1,
                         workers: int | None = None, seed: int = 33, force: bool = False) -> dict:
    """Validate a Turtle Recall folder, then write folds.csv, one record set per fold and the test records.

    Nothing is written when validation fails. `out_dir` defaults to DATA_DIR/tfrec. Returns a summary.
    """
    from photoid.turtles.data import load_turtles
    from photoid.turtles.folds import make_folds, write_folds

    started = time.perf_counter()
    data = load_turtles(data_dir, check_images=True)
    folds = make_folds(data.labeled, n_folds=n_folds, seed=seed)
    out_dir = os.path.join(str(data_dir), "tfrec") if out_dir is None else str(out_dir)
    settings = {"dataset": "turtle-recall", "n_folds": n_folds, "seed": seed, "dim_pre": dim_pre,
                "layout": layout, "shards": shards}
    manifest = RecordsManifest.open(out_dir, settings, force=force)
    write_folds(folds, os.path.join(out_dir, FOLDS_CSV))

    results = {}
    # Workers start once, for all record sets. Kept originals are only read, which needs no workers.
    with image_preparer(1 if layout == "original" else workers, threads=layout == "exact") as preparer:
        common = dict(string_columns=TURTLE_STRING_COLUMNS, int_columns=TURTLE_INT_COLUMNS, dim_pre=dim_pre,
                      layout=layout, manifest=manifest, shards=shards, preparer=preparer)
        for fold in range(n_folds):
            rows = folds[folds["fold"] == fold].assign(label_id=lambda f: f["turtle_id"])
            paths = [data.image_path(image_id) for image_id in rows["image_id"]]
            results[f"fold.{fold}"] = write_records(rows, paths, os.path.join(out_dir, f"fold.{fold}.tfrecord"),
                                                    **common)
        test = data.test.assign(label_id="", label=-1)
        paths = [data.image_path(image_id) for image_id in test["image_id"]]
        results["test"] = write_records(test, paths, os.path.join(out_dir, "test.tfrecord"), **common)

    seconds = time.perf_counter() - started
    written = sum(r["images_written"] for r in results.values())
    return {
        "out_dir": out_dir,
        "folds_csv": os.path.join(out_dir, FOLDS_CSV),
        "fold_rows": [results[f"fold.{k}"]["rows"] for k in range(n_folds)],
        "test_rows": results["test"]["rows"],
        "shards_written": sum(r["written"] for r in results.values()),
        "shards_kept": sum(r["kept"] for r in results.values()),
        "images_written": written,
        "seconds": round(seconds, 2),
    }


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data_dir", default="data", help="Turtle Recall folder with the CSV files and images/")
    parser.add_argument("--out_dir", default=None, help="where the records go (default: DATA_DIR/tfrec)")
    parser.add_argument("--n_folds", type=int, default=5, help="number of cross-validation folds")
    parser.add_argument("--seed", type=int, default=33, help="StratifiedKFold random_state (the original's 33)")
    parser.add_argument("--dim_pre", type=int, default=512,
                        help="stored images are resized to DIM_PRE x DIM_PRE (ignored by --layout original)")
    add_layout_arguments(parser)
    parser.add_argument("--shards", type=int, default=1, help="files per fold and for the test set")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes (threads for the exact layout) preparing images (default: all CPU cores)")
    parser.add_argument("--force", action="store_true",
                        help="replace records in OUT_DIR written with other settings")


def run(args: argparse.Namespace) -> int:
    check_record_options(args)
    summary = build_turtle_records(args.data_dir, args.out_dir, n_folds=args.n_folds, dim_pre=args.dim_pre,
                                   layout=chosen_layout(args), shards=args.shards, workers=args.workers,
                                   seed=args.seed, force=args.force)
    rate = summary["images_written"] / summary["seconds"] if summary["seconds"] else 0.0
    print(f"folds: {summary['fold_rows']} images, test: {summary['test_rows']} images")
    print(f"shards written: {summary['shards_written']}, kept from an earlier run: {summary['shards_kept']}; "
          f"{summary['images_written']} images in {summary['seconds']:.1f} s ({rate:.1f} images/s)")
    print(f"records and {FOLDS_CSV}: {summary['out_dir']}")
    return 0
