"""Reading and validating a Where's Whale-do folder; encounter-grouped folds."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REAL_BELUGAS
from photoid.core.errors import PhotoidError, ValidationError
from photoid.synth.belugas import generate_belugas
from photoid.whales.data import load_belugas, load_truth, make_whale_folds

REAL_DIR = REAL_BELUGAS
needs_real_data = pytest.mark.skipif(not (REAL_DIR / "metadata.csv").exists(), reason="real metadata not available")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whales") / "data"
    generate_belugas(out, seed=11, n_whales=10, images_per_whale=5, size=32, workers=1)
    return out


def copy_of(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    return target


def test_load_a_valid_folder(folder):
    data = load_belugas(folder)
    metadata = pd.read_csv(folder / "metadata.csv")
    assert data.metadata["image_id"].tolist() == metadata["image_id"].tolist()
    assert data.metadata["height"].dtype == np.int64
    assert data.classes == sorted(metadata["whale_id"].unique())
    assert data.has_labels
    labels = data.labels()
    assert [data.classes[i] for i in labels] == metadata["whale_id"].tolist()
    first = metadata.iloc[0]
    assert data.image_path(first["image_id"]) == folder / first["path"]
    with pytest.raises(KeyError):
        data.image_path("nope")
    scenario_id, queries, database = data.scenarios[0]
    assert scenario_id == "scenario01"
    assert list(queries.columns) == ["query_id", "query_image_id"]
    assert list(database.columns) == ["database_image_id"]


def test_every_problem_is_listed_with_file_and_line(folder, tmp_path):
    root = copy_of(folder, tmp_path)
    meta = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    ids = meta["image_id"].tolist()
    meta.loc[1, "image_id"] = ids[0]                      # line 3: duplicate id
    meta.loc[2, "image_id"] = "a/b"                       # line 4: path separator in an id
    meta.loc[3, "path"] = "/abs/x.jpg"                    # line 5: absolute path
    meta.loc[4, "path"] = "images/../../x.jpg"            # line 6: escapes the folder
    meta.loc[5, "viewpoint"] = "underneath"               # line 7
    meta.loc[6, "height"] = "-3"                          # line 8
    meta.loc[7, "date"] = "yesterday"                     # line 9
    other_whale = meta.index[meta["whale_id"] != meta.loc[8, "whale_id"]][0]
    meta.loc[8, "encounter_id"] = meta.loc[other_whale, "encounter_id"]   # one encounter, two whales
    meta.to_csv(root / "metadata.csv", index=False)
    (root / meta.loc[10, "path"]).unlink()                # line 12: image missing
    (root / meta.loc[11, "path"]).write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 40)   # line 13: not a JPEG
    queries = pd.read_csv(root / "queries" / "scenario01.csv")
    queries.loc[0, "query_image_id"] = "ghost"            # line 2 of the queries file
    queries.to_csv(root / "queries" / "scenario01.csv", index=False)
    other = pd.read_csv(root / "queries" / "scenario02.csv")
    other.loc[0, "query_id"] = queries.loc[1, "query_id"]  # a query id used twice across scenarios
    other.to_csv(root / "queries" / "scenario02.csv", index=False)
    database = pd.read_csv(root / "databases" / "scenario01.csv")
    database = pd.concat([database, database.iloc[:1], pd.DataFrame({"database_image_id": ["phantom"]})])
    database.to_csv(root / "databases" / "scenario01.csv", index=False)

    with pytest.raises(ValidationError) as err:
        load_belugas(root)
    text = str(err.value)
    meta_file, q_file = root / "metadata.csv", root / "queries" / "scenario01.csv"
    db_file = root / "databases" / "scenario01.csv"
    expected = [
        (f"{meta_file} line 3", "(first on line 2)"),
        (f"{meta_file} line 4", "path separator"),
        (f"{meta_file} line 5", "absolute path"),
        (f"{meta_file} line 6", "'..'"),
        (f"{meta_file} line 7", "unknown viewpoint 'underneath'"),
        (f"{meta_file} line 8", "height '-3' is not a positive integer"),
        (f"{meta_file} line 9", "date 'yesterday'"),
        (f"{meta_file} line 12", "file is missing"),
        (f"{meta_file} line 13", "not a JPEG"),
        (f"{q_file} line 2", "query_image_id 'ghost' is not in metadata.csv"),
        (f"{root / 'queries' / 'scenario02.csv'} line 2", "query ids must be unique across scenarios"),
        (f"{db_file} line {len(database)}", "(first on line 2)"),
        (f"{db_file} line {len(database) + 1}", "'phantom' is not in metadata.csv"),
        ("encounter", "holds several whales"),
    ]
    for where, reason in expected:
        assert any(where in line and reason in line for line in text.splitlines()), (where, reason, text)


def test_missing_files_and_columns(tmp_path):
    with pytest.raises(PhotoidError, match="not a folder"):
        load_belugas(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValidationError, match="metadata.csv: file is missing"):
        load_belugas(tmp_path / "empty")
    (tmp_path / "nocol").mkdir()
    (tmp_path / "nocol" / "metadata.csv").write_text("image_id,viewpoint\nx,top\n")
    with pytest.raises(ValidationError, match=r"line 1: missing column 'path'"):
        load_belugas(tmp_path / "nocol")
    (tmp_path / "truth.csv").write_text("query_id,image\nq,x\n")
    with pytest.raises(ValidationError, match="database_image_id"):
        load_truth(tmp_path / "truth.csv")


def test_unlabelled_test_time_metadata_loads_but_cannot_make_folds(folder, tmp_path):
    root = copy_of(folder, tmp_path)
    meta = pd.read_csv(root / "metadata.csv").drop(columns=["whale_id", "encounter_id"])
    meta.to_csv(root / "metadata.csv", index=False)
    data = load_belugas(root)
    assert not data.has_labels and data.classes == []
    with pytest.raises(PhotoidError, match="whale_id"):
        make_whale_folds(data.metadata, 2)
    with pytest.raises(PhotoidError, match="unlabelled"):
        data.labels()


def test_grouped_folds_never_split_an_encounter(folder):
    metadata = load_belugas(folder, check_images=False).metadata
    folds = make_whale_folds(metadata, n_folds=3, seed=42, grouped=True)
    assert folds.shape == (len(metadata),) and set(folds) == {0, 1, 2}
    per_encounter = pd.Series(folds).groupby(metadata["encounter_id"].to_numpy()).nunique()
    assert (per_encounter == 1).all()
    assert np.array_equal(folds, make_whale_folds(metadata, n_folds=3, seed=42, grouped=True))
    with pytest.raises(PhotoidError, match="n_folds"):
        make_whale_folds(metadata, n_folds=1)


@pytest.mark.filterwarnings("ignore:The least populated class")
def test_ungrouped_folds_are_stratified_kfold_on_the_rows_given(folder):
    """The winner's split is this call on its top rows (tests/test_whales_winner.py checks it on the real rows)."""
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import LabelEncoder

    metadata = load_belugas(folder, check_images=False).metadata
    folds = make_whale_folds(metadata, n_folds=5, grouped=False)
    labels = LabelEncoder().fit_transform(metadata["whale_id"])
    for fold, (_, valid) in enumerate(StratifiedKFold(5, shuffle=True, random_state=42).split(metadata, labels)):
        assert set(np.flatnonzero(folds == fold)) == set(valid)


@needs_real_data
def test_the_real_metadata_and_example_scenarios_validate():
    data = load_belugas(REAL_DIR, check_images=False)
    assert len(data.metadata) == 5902 and len(data.classes) == 788
    assert [s.scenario_id for s in data.scenarios] == ["scenario01", "scenario02"]
    scenario01 = data.scenarios[0]
    # In the real data a query image may also sit in its scenario's database.
    assert set(scenario01.queries["query_image_id"]) <= set(scenario01.database["database_image_id"])
    truth = load_truth(REAL_DIR / "example_labels.csv")
    assert set(truth["query_id"]) == {q for s in data.scenarios for q in s.queries["query_id"]}
    folds = make_whale_folds(data.metadata, n_folds=5)
    assert (pd.Series(folds).groupby(data.metadata["encounter_id"].to_numpy()).nunique() == 1).all()
    assert np.bincount(folds).min() > 0.15 * len(folds)
