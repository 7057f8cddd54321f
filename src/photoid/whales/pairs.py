"""The winner's lateral model trains on pairs: a top photo and a lateral photo of the same whale.

Each top photo of a whale that has lateral photos is paired with one of them drawn at random (2489 pairs on the
real metadata). `photoid whale-records --pair_lateral` writes the top photos as `fold.K.tfrecord` (split into folds
over these rows, as the winner split them) and their lateral partners, row for row, as `pair.K.tfrecord`. A run
with `paired = true` reads both in step (`photoid.records.pairs`): each training step puts the batch's top photos and
its lateral photos through the same network in two forward passes (`photoid.models.factory.paired_train_model`), so
BatchNorm normalises each view with its own batch statistics, and the loss is CE(top) + CE(lateral), as the
winner's `train_literal/train.py`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

LATERAL_VIEWPOINTS = ("left", "right")


def pair_lateral_rows(training: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(top rows, their lateral partners), aligned row for row, in metadata order: every top photo of a whale
    with at least one lateral photo among `training`, each with one of those drawn at random (seeded)."""
    rng = np.random.default_rng(seed)
    lateral = training[training["viewpoint"].isin(LATERAL_VIEWPOINTS)]
    by_whale = {whale: rows for whale, rows in lateral.groupby("whale_id", sort=False)}
    tops = training[(training["viewpoint"] == "top") & training["whale_id"].isin(by_whale)]
    partners = [by_whale[whale].iloc[rng.integers(len(by_whale[whale]))] for whale in tops["whale_id"]]
    return tops, pd.DataFrame(partners, columns=training.columns)


def __getattr__(name: str):  # the paired reader and model that were here: photoid.records.pairs, photoid.models.factory
    from photoid._moved import forward_attribute

    return forward_attribute(__name__, name)
