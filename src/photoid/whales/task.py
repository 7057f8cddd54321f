"""Where's Whale-do: metadata.csv (image_id, path, viewpoint, whale_id, encounter_id, ...) and query scenarios.

Reading and validation are `photoid.whales.data`'s, folds and records `photoid.whales.records`' (encounter-grouped
folds, or the winner's StratifiedKFold; wide photos stood upright; right views mirrored with --mirror_right). Every
whale of the records' label space can be named (by default every whale of metadata.csv, the winner's classes);
any other is `new_individual`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from photoid.core.errors import PhotoidError
from photoid.core.labels import NEW_INDIVIDUAL
from photoid.tasks.base import csv_header, label_space


class WhalesTask:
    name = "whales"
    identity_column = "whale_id"
    new_label = NEW_INDIVIDUAL
    records_dataset = "wheres-whale-do"  # records.json's "dataset"
    records_command = "whale-records"
    leaderboard_labels = False
    submits = False
    takes_image_inverted = False
    ranks_scenarios = True
    record_options = {"n_folds": 5, "seed": 42, "dim_pre": 512, "layout": None, "keep_original": False,
                      "grouped": True, "train_on_scenarios": False, "mirror_right": False, "shards": 1,
                      "workers": None, "force": False, "views": "", "rotate_wide": True, "pair_lateral": False,
                      "label_space": "metadata"}

    def detect(self, data_dir: Path) -> bool:
        header = csv_header(data_dir / "metadata.csv")
        return {"image_id", "path", "viewpoint"} <= set(header) and "identity" not in header

    def build_records(self, data_dir, out_dir, **options) -> dict:
        from photoid.whales.records import build_whale_records

        layout = options.pop("layout", None)
        if layout == "exact":
            raise PhotoidError("whale records store photos compact (default) or original (--keep_original); the "
                               "exact layout is the Turtle Recall reader's")
        options["keep_original"] = bool(options.get("keep_original")) or layout == "original"
        return build_whale_records(data_dir, out_dir, **options)

    def read_folds(self, path):
        from photoid.whales.records import read_whale_folds

        return read_whale_folds(path)

    def label_space(self, folds, records_dir=None) -> tuple[list[str], list[str]]:
        """The records' label space: records.json's classes (every whale of the metadata, the winner's) where it
        lists them (`read_whale_folds` checked the labels against them), else the fold table's whales."""
        from photoid.records.folder import RecordsDir

        listed = RecordsDir(records_dir).classes() if records_dir is not None else None
        classes = label_space(folds, self.identity_column) if listed is None else listed
        return classes, classes

    def check_training(self, cfg, folds):
        """Recipes that name views or train on pairs need records built for them; with encounter-grouped folds
        a recipe may checkpoint by another monitor (`monitor_grouped`)."""
        from photoid.records.reader import open_records

        if cfg.views:
            check_record_views(cfg, folds)
        if cfg.paired and not open_records(cfg.records_dir).pair_lateral():
            raise PhotoidError(f"recipe {cfg.model} trains on (top, lateral) pairs, but the records in "
                               f"{cfg.records_dir} hold none: build them with photoid whale-records --pair_lateral "
                               "--out_dir DIR, and pass --data_tfrec_dir DIR")
        if cfg.monitor_grouped and records_grouped(cfg.records_dir):
            print(f"folds grouped by encounter: checkpoint by {cfg.monitor_grouped!r} instead of {cfg.monitor!r}")
            cfg = dataclasses.replace(cfg, monitor=cfg.monitor_grouped)
        return cfg

    def score_test(self, cfg, run_dir: Path) -> dict | None:
        return None  # the scenarios are scored with photoid rank and score-ranking

    def labelled_photos(self, data_dir: str | os.PathLike, check_images: bool = True):
        import pandas as pd

        from photoid.whales.data import load_belugas

        data = load_belugas(data_dir, check_images=check_images)
        if not data.has_labels:
            raise PhotoidError(f"{data.root / 'metadata.csv'} has no whale_id column: these photos are unlabelled")
        meta = data.metadata
        return pd.DataFrame({"individual_id": meta["whale_id"], "image_id": meta["image_id"], "source": "metadata",
                             "path": [str(data.image_path(i).resolve()) for i in meta["image_id"]],
                             "viewpoint": meta["viewpoint"]})


def check_record_views(cfg, folds) -> None:
    """A recipe that names its views (the winner's top models: top photos only) trains only on records built for
    them, whose folds were split over those rows alone: filtering rows out of other records would keep another
    split."""
    from photoid.runs.config import view_list

    extra = sorted(set(folds["viewpoint"]) - set(view_list(cfg.views)))
    if extra:
        raise PhotoidError(f"recipe {cfg.model} trains on views {cfg.views!r}, but the records in {cfg.records_dir} "
                           f"also hold {', '.join(extra)} photos: build records for it with photoid whale-records "
                           f"--views {cfg.views} --out_dir DIR, and pass --data_tfrec_dir DIR")


def records_grouped(records_dir: str) -> bool:
    """Whether whale records' folds are grouped by encounter (their records.json says; older records were)."""
    from photoid.records.reader import open_records

    return open_records(records_dir).grouped()


TASK = WhalesTask()
