"""Turtle Recall: train.csv, extra_images.csv, test.csv, sample_submission.csv and images/<image_id>.JPG.

Reading and validation are `photoid.data`'s, folds `photoid.folds.make_folds` (the original's split, exactly),
records `photoid.records.build_turtle_records`. Labels are train then extra ids in sorted order; predictions may
name only train.csv's ids, every other one reads `new_turtle` (the leaderboard's 101 labels).
"""

from __future__ import annotations

import os
from pathlib import Path

from photoid.labels import NEW_TURTLE
from photoid.tasks.base import csv_header, label_space


class TurtlesTask:
    name = "turtles"
    identity_column = "turtle_id"
    new_label = NEW_TURTLE
    records_dataset = "turtle-recall"  # records.json's "dataset"
    records_command = "tfrecords"
    leaderboard_labels = True
    submits = True
    takes_image_inverted = True
    ranks_scenarios = False
    record_options = {"n_folds": 5, "seed": 33, "dim_pre": 512, "layout": None, "keep_original": False, "shards": 1,
                      "workers": None, "force": False}

    def detect(self, data_dir: Path) -> bool:
        return "turtle_id" in csv_header(data_dir / "train.csv") and (data_dir / "images").is_dir()

    def build_records(self, data_dir, out_dir, **options) -> dict:
        import argparse

        from photoid.records import build_turtle_records, chosen_layout

        layout = chosen_layout(argparse.Namespace(keep_original=options.pop("keep_original", False),
                                                  layout=options.pop("layout", None)))
        return build_turtle_records(data_dir, out_dir, layout=layout, **options)

    def read_folds(self, path):
        from photoid.folds import read_folds

        return read_folds(path)

    def label_space(self, folds) -> tuple[list[str], list[str]]:
        classes = label_space(folds, self.identity_column)
        if "source" in folds.columns:
            return classes, sorted(folds.loc[folds["source"] == "train", self.identity_column].astype(str).unique())
        return classes, classes

    def check_training(self, cfg, folds):
        return cfg

    def score_test(self, cfg, run_dir: Path) -> dict | None:
        return None  # the submission is scored with photoid score and test_labels.csv

    def labelled_photos(self, data_dir: str | os.PathLike, check_images: bool = True):
        import pandas as pd

        from photoid.data import load_turtles

        data = load_turtles(data_dir, check_images=check_images)
        labeled = data.labeled
        return pd.DataFrame({"individual_id": labeled["turtle_id"], "image_id": labeled["image_id"],
                             "source": labeled["source"],
                             "path": [str(Path(data.image_path(i)).resolve()) for i in labeled["image_id"]]})


TURTLES = TurtlesTask()
