"""A Turtle Recall folder as a generic folder, so the same photos give the same folds and labels either way.

The folder is read and validated by `photoid.turtles.data.load_turtles`. Train rows are its labelled table in its order
(train.csv then extra_images.csv, the order the original's split is made on), so the generic folder's folds, made
on the train rows in file order with the same splitter and seed, put every photo in the fold that `photoid
tfrecords` gives it; identities are the turtle ids, whose sorted order is the label order of both. Viewpoints are
the image locations lower-cased; extra images have none and get "top", as the original (and load_turtles) set.
Test rows are test.csv's photos, split=test with no identity.
"""

from __future__ import annotations

import os

import pandas as pd

from photoid.turtles.data import EXTRA_CSV, TEST_CSV, TRAIN_CSV, load_turtles


def turtle_recall_rows(data_dir: str | os.PathLike) -> pd.DataFrame:
    """The rows of a generic folder (photoid.importers.generic.ROW_COLUMNS) for a Turtle Recall folder."""
    data = load_turtles(data_dir)
    labeled, test = data.labeled, data.test
    # Row numbers within each source file (load_turtles drops blank lines, so they count rows, not lines).
    labeled_origin = [f"{TRAIN_CSV if source == 'train' else EXTRA_CSV} row {i + 1}"
                      for source, i in zip(labeled["source"], labeled.groupby("source").cumcount())]
    train_rows = pd.DataFrame({
        "image_id": labeled["image_id"], "identity": labeled["turtle_id"],
        "viewpoint": labeled["image_location"], "split": "train", "origin": labeled_origin,
    })
    test_rows = pd.DataFrame({
        "image_id": test["image_id"], "identity": "", "viewpoint": test["image_location"], "split": "test",
        "origin": [f"{TEST_CSV} row {i + 1}" for i in range(len(test))],
    })
    rows = pd.concat([train_rows, test_rows], ignore_index=True)
    return rows.assign(date="", encounter="", source=[data.image_path(i) for i in rows["image_id"]])
