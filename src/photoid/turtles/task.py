"""Turtle Recall: train.csv, extra_images.csv, test.csv, sample_submission.csv and images/<image_id>.JPG.

Reading and validation are `photoid.turtles.data`'s, folds `photoid.turtles.folds.make_folds` (the original's split, exactly),
records `photoid.turtles.records.build_turtle_records`. Labels are train then extra ids in sorted order; predictions may
name only train.csv's ids, every other one reads `new_turtle` (the leaderboard's 101 labels).
"""

from __future__ import annotations

import os
from pathlib import Path

from photoid.core.labels import NEW_TURTLE
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

        from photoid.records.writer import chosen_layout
        from photoid.turtles.records import build_turtle_records

        layout = chosen_layout(argparse.Namespace(keep_original=options.pop("keep_original", False),
                                                  layout=options.pop("layout", None)))
        return build_turtle_records(data_dir, out_dir, layout=layout, **options)

    def read_folds(self, path):
        from photoid.turtles.folds import read_folds

        return read_folds(path)

    def label_space(self, folds, records_dir=None) -> tuple[list[str], list[str]]:
        classes = label_space(folds, self.identity_column)
        if "source" in folds.columns:
            return classes, sorted(folds.loc[folds["source"] == "train", self.identity_column].astype(str).unique())
        return classes, classes

    def check_training(self, cfg, folds):
        return cfg

    def score_test(self, cfg, run_dir: Path) -> dict | None:
        return None  # the submission is scored with photoid score and test_labels.csv

    def write_run_submission(self, cfg, run_dir: Path) -> Path:
        from photoid.turtles.ensemble import write_run_submission

        return write_run_submission(cfg, run_dir)

    def folder_label_space(self, data_dir: str | os.PathLike) -> tuple[list[str], list[str]]:
        from photoid.turtles.data import load_turtles

        data = load_turtles(data_dir, check_images=False)
        return data.classes, data.original_ids

    def leaderboard_truth(self, data_dir: str | os.PathLike):
        from photoid.turtles.data import load_test_labels, load_turtles
        from photoid.turtles.scoring import truth_labels_101

        data = load_turtles(data_dir, check_images=False)
        truth = load_test_labels(data_dir)
        labels = (truth["label_101"] if "label_101" in truth.columns
                  else truth_labels_101(truth, data.original_ids)).to_numpy(dtype=str)
        image_ids = truth["image_id"].tolist()
        return image_ids, labels, [data.image_path(i) for i in image_ids]

    def labelled_photos(self, data_dir: str | os.PathLike, check_images: bool = True):
        import pandas as pd

        from photoid.turtles.data import load_turtles

        data = load_turtles(data_dir, check_images=check_images)
        labeled = data.labeled
        return pd.DataFrame({"individual_id": labeled["turtle_id"], "image_id": labeled["image_id"],
                             "source": labeled["source"],
                             "path": [str(Path(data.image_path(i)).resolve()) for i in labeled["image_id"]]})


TASK = TurtlesTask()
