"""`photoid records`: one command that builds the records of any task's folder, the task found from its files.

`photoid tfrecords` and `photoid whale-records` stay as they are; this command calls the same builders through the
task (`photoid.tasks`), so its records are theirs byte for byte.
"""

from __future__ import annotations

import argparse

from photoid.api import build_records, check_record_options
from photoid.tasks import TASKS, detect_task, get_task


def configure_parser(parser: argparse.ArgumentParser) -> None:
    from photoid.records.writer import LAYOUTS

    parser.description = ("Validate a data folder of any task (Turtle Recall, Where's Whale-do or generic) and write "
                          "its folds.csv and TFRecords; the task is found from the folder's files unless --task "
                          "names it. Options a task does not take are refused.")
    parser.add_argument("--data_dir", default="data", help="the data folder")
    parser.add_argument("--task", choices=sorted(TASKS), default=None, help="the folder's task (default: detected)")
    parser.add_argument("--out", "--out_dir", dest="out_dir", default=None,
                        help="where the records go (default: DATA_DIR/tfrec)")
    parser.add_argument("--n_folds", type=int, default=None, help="cross-validation folds (default 5)")
    parser.add_argument("--seed", type=int, default=None,
                        help="random_state of the fold split (default: the task's: turtles and generic 33, whales 42)")
    parser.add_argument("--dim_pre", type=int, default=None, help="stored images are DIM_PRE x DIM_PRE (default 512)")
    parser.add_argument("--layout", choices=LAYOUTS, default=None,
                        help="how records store photos (default: the task's: turtles exact, whales and generic "
                             "compact; see photoid tfrecords --help)")
    parser.add_argument("--keep_original", action="store_true", default=None, help="the same as --layout original")
    parser.add_argument("--shards", type=int, default=None, help="files per fold and for the test set")
    parser.add_argument("--workers", type=int, default=None, help="processes preparing images (default: all cores)")
    parser.add_argument("--force", action="store_true", default=None,
                        help="replace records in OUT_DIR written with other settings")
    whales = parser.add_argument_group("Where's Whale-do folders (see photoid whale-records --help)")
    for name in ("grouped", "mirror_right", "rotate_wide"):
        whales.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None)
    for name in ("train_on_scenarios", "pair_lateral"):
        whales.add_argument(f"--{name}", action="store_true", default=None)
    whales.add_argument("--views", default=None)
    whales.add_argument("--label_space", choices=("metadata", "training"), default=None)


def run(args: argparse.Namespace) -> int:
    task = get_task(args.task) if args.task else detect_task(args.data_dir)
    given = {name: value for name, value in vars(args).items() if name not in ("data_dir", "task", "out_dir")}
    check_record_options(task, args.data_dir, given)
    print(f"task: {task.name}{'' if args.task else ' (found from the folder)'}")
    summary = build_records(args.data_dir, args.out_dir, task=task.name, **given)
    print(f"folds: {summary['fold_rows']} images, test: {summary['test_rows']} images")
    print(f"shards written: {summary['shards_written']}, kept from an earlier run: {summary['shards_kept']}; "
          f"{summary['images_written']} images in {summary['seconds']:.1f} s")
    print(f"records and folds.csv: {summary['out_dir']}")
    return 0
