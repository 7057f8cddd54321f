"""`photoid export`: a run's fold ensemble as one self-contained model file."""

from __future__ import annotations

import argparse

from photoid.inference.export import export_run
from photoid.runs.config import parse_folds


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="trained run folder")
    parser.add_argument("--out", help="the .keras file to write (its class list goes beside it)")
    parser.add_argument("--savedmodel", metavar="DIR", help="also (or instead) write a TensorFlow SavedModel folder")
    parser.add_argument("--folds", type=parse_folds, help="folds to include, e.g. 0,1 (default: every trained fold)")
    parser.add_argument("--records_dir", help="records folder the run was trained from (default: from config.json)")


def run(args: argparse.Namespace) -> int:
    _, folds = export_run(args.run_dir, args.out, args.savedmodel, args.folds, args.records_dir)
    for target in (args.out, args.savedmodel):
        if target:
            print(f"exported the mean of fold(s) {folds} of {args.run_dir} to {target}")
    return 0
