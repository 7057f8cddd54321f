"""The original's k-fold split: same folds and same row order as its `create_cv_split`, and the fold file."""

from __future__ import annotations

import string
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import LabelEncoder

import photoid.turtles.folds
from photoid.turtles.data import load_turtles
from photoid.core.errors import PhotoidError, ValidationError
from photoid.turtles.folds import FOLD_COLUMNS, make_folds, read_folds, write_folds


def random_name(rng: np.random.Generator, prefix: str, letters: str) -> str:
    return prefix + "".join(rng.choice(list(letters), 8))


def write_csvs(root: Path, images_per_turtle: list[int], seed: int = 0) -> Path:
    """train.csv and extra_images.csv (no images: folds need none) with shuffled rows, mixed-case turtle ids
    (so sorted order differs from appearance order), and turtles present in both files."""
    rng = np.random.default_rng(seed)
    rows = []
    for count in images_per_turtle:
        turtle = random_name(rng, "t_id_", string.ascii_letters)
        rows += [(random_name(rng, "ID_", string.ascii_uppercase + string.digits), turtle) for _ in range(count)]
    rows = [rows[i] for i in rng.permutation(len(rows))]
    in_train = rng.random(len(rows)) < 0.5
    root.mkdir(parents=True)
    train = pd.DataFrame([(i, rng.choice(["Top", "left", "RIGHT"]), t) for (i, t), keep in zip(rows, in_train)
                          if keep], columns=["image_id", "image_location", "turtle_id"])
    extra = pd.DataFrame([r for r, keep in zip(rows, in_train) if not keep], columns=["image_id", "turtle_id"])
    train.to_csv(root / "train.csv", index=False)
    extra.to_csv(root / "extra_images.csv", index=False)
    (root / "test.csv").write_text("image_id,image_location\nID_TEST,top\n")
    (root / "sample_submission.csv").write_text("image_id,prediction1,prediction2,prediction3,prediction4,"
                                                "prediction5\nID_TEST,a,b,c,d,e\n")
    return root


# Several turtles with fewer images than 5 folds, as in the real data; 150 images in all.
COUNTS = [1, 1, 2, 3, 4, 5, 6, 7, 9, 11, 13, 17, 20, 23, 28]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_csvs(tmp_path_factory.mktemp("folds") / "data", COUNTS)


def quiet_folds(labeled: pd.DataFrame, **kwargs) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_folds(labeled, **kwargs)


def original_create_cv_split(data_dir: Path, n_splits: int) -> pd.DataFrame:
    """The original's procedure step by step, on the raw CSVs, as its lib/vecxoz_utils.py describes it."""
    train = pd.read_csv(data_dir / "train.csv")
    extra = pd.read_csv(data_dir / "extra_images.csv")
    extra["image_location"] = "top"
    frame = pd.concat([train, extra], ignore_index=True)
    frame["image_location"] = frame["image_location"].str.lower()
    frame["label"] = LabelEncoder().fit_transform(frame["turtle_id"])
    frame["fold_id"] = 0
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=33)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fold_id, (_, validation) in enumerate(splitter.split(frame, frame["label"].values)):
            frame.loc[frame.index.isin(validation), "fold_id"] = fold_id
    return frame.sample(frac=1.0, random_state=34)


def test_folds_reproduce_the_original_rows_order_and_folds(folder):
    folds = quiet_folds(load_turtles(folder, check_images=False).labeled)
    original = original_create_cv_split(folder, 5)
    assert list(folds.columns) == FOLD_COLUMNS
    assert folds["image_id"].tolist() == original["image_id"].tolist()
    assert folds["fold"].tolist() == original["fold_id"].tolist()
    assert folds["label"].tolist() == original["label"].tolist()
    assert folds["turtle_id"].tolist() == original["turtle_id"].tolist()
    assert folds["image_location"].tolist() == original["image_location"].tolist()


def test_folds_equal_a_direct_stratified_kfold_on_the_labels(folder):
    labeled = load_turtles(folder, check_images=False).labeled
    for n_folds, seed in [(5, 33), (3, 7)]:
        expected = {}
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for fold, (_, rows) in enumerate(splitter.split(np.zeros(len(labeled)), labeled["label"])):
                expected.update({labeled["image_id"][r]: fold for r in rows})
        folds = quiet_folds(labeled, n_folds=n_folds, seed=seed)
        assert dict(zip(folds["image_id"], folds["fold"])) == expected
        assert sorted(folds["fold"].unique()) == list(range(n_folds))


def test_every_turtle_with_enough_images_is_in_every_fold(folder):
    folds = quiet_folds(load_turtles(folder, check_images=False).labeled)
    per_fold = folds.groupby("turtle_id")["fold"].value_counts().unstack(fill_value=0)
    big = per_fold[per_fold.sum(axis=1) >= 5]
    assert len(big) == sum(c >= 5 for c in COUNTS)
    assert (big > 0).all().all()
    # Stratified: a turtle's images are spread as evenly as possible.
    assert ((big.max(axis=1) - big.min(axis=1)) <= 1).all()


def test_one_summary_warning_for_sparse_turtles(folder):
    labeled = load_turtles(folder, check_images=False).labeled
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_folds(labeled, n_folds=5)
    assert len(caught) == 1
    sparse = sum(c < 5 for c in COUNTS)
    assert f"{sparse} of {len(COUNTS)} ids have fewer images than the 5 folds" in str(caught[0].message)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_folds(labeled, n_folds=2)
    assert [str(w.message) for w in caught] == [f"2 of {len(COUNTS)} ids have fewer images than the 2 folds; "
                                                "they are absent from some validation folds (allowed, as in "
                                                "the original)"]


def test_enough_images_everywhere_means_no_warning(tmp_path):
    labeled = load_turtles(write_csvs(tmp_path / "d", [6, 7, 8]), check_images=False).labeled
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_folds(labeled)
    assert caught == []


@pytest.mark.parametrize("n_folds", [1, 0, -3, 151, 2.0, True])
def test_impossible_fold_counts_are_refused(folder, n_folds):
    labeled = load_turtles(folder, check_images=False).labeled
    with pytest.raises(PhotoidError, match="n_folds"):
        make_folds(labeled, n_folds=n_folds)


def test_turtles_all_smaller_than_the_fold_count_are_refused(tmp_path):
    labeled = load_turtles(write_csvs(tmp_path / "d", [2, 2, 3]), check_images=False).labeled
    with pytest.raises(PhotoidError, match="cannot split 7 images into 5 stratified folds"):
        quiet_folds(labeled)


def test_an_empty_fold_is_refused(folder, monkeypatch):
    class SplitterLeavingFoldOneEmpty:
        def __init__(self, n_splits, shuffle, random_state):
            self.n_splits = n_splits

        def split(self, rows, labels):
            everything = np.arange(len(rows))
            yield everything[:0], everything
            for _ in range(self.n_splits - 1):
                yield everything, everything[:0]

    monkeypatch.setattr(photoid.turtles.folds, "StratifiedKFold", SplitterLeavingFoldOneEmpty)
    with pytest.raises(PhotoidError, match=r"fold\(s\) 1, 2 would be empty"):
        quiet_folds(load_turtles(folder, check_images=False).labeled, n_folds=3)


def test_write_read_round_trip_keeps_rows_and_types(folder, tmp_path):
    folds = quiet_folds(load_turtles(folder, check_images=False).labeled)
    write_folds(folds, tmp_path / "out" / "folds.csv")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["folds.csv"]
    again = read_folds(tmp_path / "out" / "folds.csv")
    pd.testing.assert_frame_equal(again, folds)


def test_read_folds_lists_every_problem(tmp_path):
    path = tmp_path / "folds.csv"
    path.write_text("image_id,turtle_id,label,fold,image_location,source\n"
                    "ID_1,t_a,0,0,top,train\n"
                    "ID_2,t_a,1,2,top,train\n"
                    "ID_1,t_b,2,0,top,extra\n")
    with pytest.raises(ValidationError) as info:
        read_folds(path)
    text = str(info.value)
    assert "fold(s) 1 have no rows" in text
    assert f"{path} line 4: duplicate image_id 'ID_1' (first on line 2)" in text
    assert "turtle_id 't_a' has several labels: 0, 1" in text
    path.write_text("image_id,turtle_id,label,fold,image_location,source\nID_1,t_a,0,x,top,train\n")
    with pytest.raises(ValidationError, match=r"line 2: fold 'x' is not a non-negative integer"):
        read_folds(path)
    path.write_text("image_id,turtle_id,label,image_location\nID_1,t_a,0,top\n")
    with pytest.raises(ValidationError, match=r"line 1: missing column 'fold'"):
        read_folds(path)
    with pytest.raises(ValidationError, match="file is missing"):
        read_folds(tmp_path / "absent.csv")
