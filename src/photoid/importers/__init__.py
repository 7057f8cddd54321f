"""`photoid import`: write a generic folder (`metadata.csv`, `images/`) from data a researcher already has.

    photoid import wildlife-datasets --root DIR --dataset NAME --out D   a data set in wildlife-datasets' layout
    photoid import turtle-recall --data_dir TR --out D                   a Turtle Recall folder

Each source has its own module that reads it into rows; photoid.importers.generic checks them and writes the
folder.
"""

from __future__ import annotations

import argparse


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sources = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    wildlife = sources.add_parser(
        "wildlife-datasets", help="a data set downloaded with the wildlife-datasets package, read through it",
        description="Read a data set already downloaded in the layout of the wildlife-datasets package, through "
                    "that package, and write it as a generic folder. Photos of unknown individuals become test "
                    "rows with no identity.")
    wildlife.add_argument("--root", required=True, help="the folder the data set was downloaded and extracted to")
    wildlife.add_argument("--dataset", required=True,
                          help="the package's class name of the data set, e.g. BelugaIDv2, ZindiTurtleRecall "
                               "(a wrong name lists them all)")
    wildlife.add_argument("--original_split", action="store_true",
                          help="rows the data set marks as its own test split become test rows (keeping their "
                               "identity) instead of train rows")
    wildlife.add_argument("--crop", action="store_true",
                          help="cut each photo to its row's box (the package's bbox loading) and write it as PNG: "
                               "for data sets with several animals in one photo")
    turtles = sources.add_parser(
        "turtle-recall", help="a Turtle Recall folder (train.csv, extra_images.csv, test.csv, images/)",
        description="Write a Turtle Recall folder as a generic folder whose folds and labels are those of "
                    "`photoid tfrecords` on the same photos.")
    turtles.add_argument("--data_dir", required=True, help="the Turtle Recall folder")
    for sub in (wildlife, turtles):
        sub.add_argument("--out", required=True, help="the generic folder to write (new or empty)")
        sub.add_argument("--force", action="store_true",
                         help="import into a non-empty --out: its metadata.csv and photos of the same names are "
                              "replaced, other files are left alone")
        sub.add_argument("--copy", action="store_true",
                         help="always copy the photos (by default they are hard-linked where the file system "
                              "allows, which takes no space)")


def run(args: argparse.Namespace) -> int:
    from photoid.importers.generic import METADATA_CSV, write_generic_folder

    render = None
    if args.source == "wildlife-datasets":
        from photoid.importers.wildlife import (
            crop_renderer,
            load_dataset,
            wildlife_rows,
        )

        dataset = load_dataset(args.root, args.dataset)
        rows = wildlife_rows(dataset, original_split=args.original_split)
        render = crop_renderer(dataset) if args.crop else None
    else:
        from photoid.importers.turtle_recall import turtle_recall_rows

        rows = turtle_recall_rows(args.data_dir)
    if rows.attrs.get("renamed_ids"):
        print(f"{rows.attrs['renamed_ids']} image ids held characters other than letters, digits, '_', '-', '.': "
              "those were replaced by '_'")
    summary = write_generic_folder(rows, args.out, force=args.force, link=not args.copy, render=render)
    placed = ", ".join(f"{summary[way]} {way}" for way in ("linked", "copied", "already there", "cut to their box")
                       if summary[way])
    print(f"imported {summary['images']} photos ({summary['train']} train, {summary['test']} test, "
          f"{summary['identities']} identities) into {args.out}: {METADATA_CSV} "
          f"({','.join(summary['columns'])}) and images/ ({placed})")
    return 0
