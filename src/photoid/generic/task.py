"""The generic folder as a task: what `photoid.tasks` needs to read, split, record and score it (`photoid.generic.data`
reads and checks the folder)."""

from __future__ import annotations

import os
from pathlib import Path

from photoid.core.errors import PhotoidError
from photoid.core.labels import NEW_INDIVIDUAL
from photoid.generic.data import (
    DEFAULT_LAYOUT,
    DEFAULT_SEED,
    FOLD_COLUMNS,
    METADATA_FILE,
    REQUIRED_COLUMNS,
    build_generic_records,
    load_generic,
)
from photoid.tasks.base import csv_header, label_space


class GenericTask:
    name = "generic"
    identity_column = "identity"
    new_label = NEW_INDIVIDUAL
    records_dataset = "generic"  # records.json's "dataset"
    records_command = "records"
    leaderboard_labels = False
    submits = False
    takes_image_inverted = False
    ranks_scenarios = False
    record_options = {"n_folds": 5, "seed": DEFAULT_SEED, "dim_pre": 512, "layout": DEFAULT_LAYOUT,
                      "keep_original": False, "shards": 1, "workers": None, "force": False}

    def detect(self, data_dir: Path) -> bool:
        return list(REQUIRED_COLUMNS) == csv_header(data_dir / METADATA_FILE)[:3]

    def build_records(self, data_dir, out_dir, **options) -> dict:
        if options.pop("keep_original", False):
            if options.get("layout", "original") != "original":
                raise PhotoidError(f"--keep_original stores the original files, which --layout {options['layout']} "
                                   "does not: give one of them")
            options["layout"] = "original"
        return build_generic_records(data_dir, out_dir, **options)

    def read_folds(self, path):
        from photoid.records.folds import read_fold_table

        return read_fold_table(path, FOLD_COLUMNS, self.identity_column)

    def label_space(self, folds, records_dir=None) -> tuple[list[str], list[str]]:
        classes = label_space(folds, self.identity_column)
        return classes, classes

    def check_training(self, cfg, folds):
        if cfg.paired or cfg.views:
            wanted = "(top, lateral) pairs" if cfg.paired else f"views {cfg.views!r}"
            raise PhotoidError(f"recipe {cfg.model} trains on {wanted}, which only Where's Whale-do records select "
                               "(photoid whale-records); generic records hold every train photo: use another recipe, "
                               "or --paired false --views ''")
        return cfg

    def score_test(self, cfg, run_dir: Path) -> dict | None:
        """The test rows that name their individual, scored open-set from the run's test predictions: an identity
        outside the train rows is truly `new_individual`, which the classifier's labels (every class nameable)
        never say, so those rows score 0 here; `photoid calibrate` + `identify --catalog` can name them new."""
        import numpy as np

        from photoid.core.labels import top_labels
        from photoid.core.metrics import map_at_k_from_labels
        from photoid.runs.folder import load_run_predictions

        if not (Path(cfg.data_dir) / METADATA_FILE).is_file():
            return None
        test = load_generic(cfg.data_dir, check_images=False).test
        truth_of = {i: identity for i, identity in zip(test["image_id"], test["identity"]) if identity}
        if not truth_of:
            return None
        probs, row_ids, classes, original_ids, _ = load_run_predictions([run_dir], "test",
                                                                        ttas=range(cfg.tta_number + 1))
        rows = [i for i, image_id in enumerate(row_ids) if image_id in truth_of]
        truth = np.array([truth_of[row_ids[i]] if truth_of[row_ids[i]] in classes else NEW_INDIVIDUAL for i in rows])
        labels, _ = top_labels(probs[rows], classes, original_ids, k=5, new_label=NEW_INDIVIDUAL)
        return {"n": len(rows), "n_new": int((truth == NEW_INDIVIDUAL).sum()),
                "map5": map_at_k_from_labels(truth, labels), "acc1": float(np.mean(labels[:, 0] == truth))}

    def labelled_photos(self, data_dir: str | os.PathLike, check_images: bool = True):
        import pandas as pd

        data = load_generic(data_dir, check_images=check_images)
        train = data.train
        return pd.DataFrame({"individual_id": train["identity"], "image_id": train["image_id"], "source": "train",
                             "path": [str(data.image_path(i).resolve()) for i in train["image_id"]],
                             "viewpoint": train["viewpoint"]})


TASK = GenericTask()
