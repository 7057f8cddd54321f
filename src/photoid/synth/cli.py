"""`photoid synth turtles|belugas|generic`: write a synthetic data set in a competition's exact format, or a
generic folder (`photoid.generic.data`).

Each data set's module is imported only when its sub-command runs: its parser is configured on first use.
"""

from __future__ import annotations

import argparse
import importlib
import time
from typing import Callable


class _ParserConfiguredOnUse(argparse.ArgumentParser):
    """A sub-command parser that adds its arguments (importing their module) the first time it parses."""

    def __init__(self, *args, configure: Callable[[argparse.ArgumentParser], None] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._configure = configure

    def parse_known_args(self, args=None, namespace=None):
        if self._configure is not None:
            configure, self._configure = self._configure, None
            configure(self)
        return super().parse_known_args(args, namespace)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    datasets = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True,
                                     parser_class=_ParserConfiguredOnUse)
    datasets.add_parser("turtles", configure=_configure_turtles, prog=f"{parser.prog} turtles",
                        help="Turtle Recall (Zindi 2022): train/extra/test CSVs, images, test_labels.csv",
                        description="Write a synthetic Turtle Recall data set; the same seed gives identical files.")
    datasets.add_parser("belugas", configure=_configure_belugas, prog=f"{parser.prog} belugas",
                        help="Where's Whale-do (DrivenData 2022): metadata, query scenarios, images, truth",
                        description="Write a synthetic Where's Whale-do data set.")
    datasets.add_parser("generic", configure=_configure_generic, prog=f"{parser.prog} generic",
                        help="photoid's generic folder: metadata.csv (identity, viewpoint, date, encounter, split), "
                             "photos in sub-folders",
                        description="Write a synthetic generic folder; the same seed gives identical files.")


def run(args: argparse.Namespace) -> int:
    return int(args.run_dataset(args) or 0)


def _configure_belugas(parser: argparse.ArgumentParser) -> None:
    module = importlib.import_module("photoid.synth.belugas")
    module.configure_parser(parser)
    parser.set_defaults(run_dataset=module.run)


def _configure_generic(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder to create (must be empty or absent unless --force)")
    parser.add_argument("--seed", type=int, default=0, help="master seed; the same seed gives byte-identical files")
    parser.add_argument("--n-individuals", type=int, default=8, help="individuals with train photos (default 8)")
    parser.add_argument("--encounters", type=int, default=3,
                        help="encounters per individual, 2-3 photos each; the last is the test split (default 3)")
    parser.add_argument("--n-unknown", type=int, default=2,
                        help="individuals seen only in the test split (default 2)")
    parser.add_argument("--size", type=int, default=64, help="long side of every photo in px (default 64)")
    parser.add_argument("--workers", type=int, default=None, help="processes drawing photos (default every core)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    parser.set_defaults(run_dataset=_run_generic)


def _run_generic(args: argparse.Namespace) -> int:
    from photoid.synth.generic import generate_generic

    summary = generate_generic(args.out, seed=args.seed, n_individuals=args.n_individuals,
                               encounters_per_individual=args.encounters, n_unknown=args.n_unknown, size=args.size,
                               workers=args.workers, force=args.force, progress=True)
    print(f"wrote {summary['n_images']} photos ({summary['n_png']} PNG) to {args.out}: train "
          f"{summary['n_train_images']} of {summary['n_individuals']} individuals, test {summary['n_test_images']} "
          f"({summary['n_test_unknown_images']} of individuals not in train)")
    return 0


def _configure_turtles(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder to create (must be empty or absent unless --force)")
    parser.add_argument("--seed", type=int, default=0, help="master seed; the same seed gives byte-identical files")
    parser.add_argument("--n-original", type=int, default=100, help="turtles in train.csv (default 100)")
    parser.add_argument("--n-extra", type=int, default=100,
                        help="turtles seen only in extra_images.csv (default 100)")
    parser.add_argument("--n-overlap", type=int, default=None,
                        help="train.csv turtles that also have extra images (default 66%% of --n-original)")
    parser.add_argument("--images-per-turtle", type=int, default=10,
                        help="mean images per turtle in train / extra (default 10)")
    parser.add_argument("--n-test", type=int, default=None,
                        help="test images (default a quarter of the expected train images; a fifth show new turtles)")
    parser.add_argument("--size", type=int, default=128,
                        help="long side of every image in px; photos are 4:3, 3:2 or square (default 128)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes drawing images (default every core); the output does not depend on it")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    parser.set_defaults(run_dataset=_run_turtles)


def _run_turtles(args: argparse.Namespace) -> int:
    from photoid.synth.turtles import generate_turtles

    start = time.perf_counter()
    summary = generate_turtles(args.out, seed=args.seed, n_original=args.n_original, n_extra=args.n_extra,
                               n_overlap=args.n_overlap, images_per_turtle=args.images_per_turtle,
                               n_test=args.n_test, size=args.size, workers=args.workers, force=args.force,
                               progress=True)
    seconds = time.perf_counter() - start
    print(f"wrote {summary['n_images']} images of {summary['size']} px to {args.out} in {seconds:.1f} s "
          f"({summary['n_images'] / seconds:.1f} images/s): train {summary['n_train_images']} "
          f"({summary['n_original']} turtles), extra {summary['n_extra_images']} ({summary['n_extra_only']} "
          f"extra-only turtles, {summary['n_overlap']} also in train, {summary['n_single_image_ids']} ids with one "
          f"image), test {summary['n_test_images']} ({summary['n_test_new_images']} of {summary['n_new']} new "
          f"turtles); hidden truth in test_labels.csv")
    return 0
