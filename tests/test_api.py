"""The Python API (`photoid.*`): the same numbers as the library paths the commands use, as plain data."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import photoid
from photoid.core.errors import PhotoidError


def _test_photos(turtle_dir, n=3):
    ids = pd.read_csv(turtle_dir / "test.csv", dtype=str)["image_id"].head(n)
    return [str(turtle_dir / "images" / f"{i}.JPG") for i in ids]


def test_importing_photoid_and_opening_a_catalogue_load_no_tensorflow(serve_catalog):
    code = ("import sys, photoid\n"
            f"catalog = photoid.open_catalog({str(serve_catalog.path)!r})\n"
            "info = photoid.catalog_summary(catalog)\n"
            "assert info['images'] == len(catalog.table), info\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow loaded'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_identify_with_runs_is_a_table_of_the_ensembles_candidates(trained_run, turtle_dir):
    from photoid.inference.identify import ensemble_from_runs, identify_paths
    from photoid.runs.loaded import load_run

    photos = _test_photos(turtle_dir)
    table = photoid.identify(photos, runs=[trained_run], top=3)
    expected = list(identify_paths(ensemble_from_runs([load_run(trained_run)]), photos, top=3))
    assert list(table.columns) == ["photo", "rank", "individual_id", "score", "error"]
    assert table["photo"].tolist() == [p for p in photos for _ in range(3)]
    assert table["rank"].tolist() == [1, 2, 3] * len(photos)
    assert table["individual_id"].tolist() == [label for r in expected for label in r.labels]
    np.testing.assert_allclose(table["score"], [s for r in expected for s in r.scores], rtol=0, atol=1e-6)
    assert (table["error"] == "").all()


def test_an_unreadable_photo_is_a_row_with_its_reason_and_the_others_go_on(trained_run, turtle_dir, tmp_path):
    broken = tmp_path / "broken.JPG"
    broken.write_bytes(b"not a jpeg")
    photos = [_test_photos(turtle_dir, 1)[0], str(broken)]
    table = photoid.identify(photos, runs=[photoid.open_run(trained_run)], top=2)
    bad = table[table["photo"] == str(broken)]
    assert bad["rank"].tolist() == [0] and bad["individual_id"].tolist() == [""] and bad["score"].isna().all()
    assert "JPEG" in bad["error"].iloc[0]
    assert table[table["photo"] == photos[0]]["rank"].tolist() == [1, 2]


def test_identify_with_a_catalogue_gives_the_catalogues_results(serve_catalog, turtle_dir):
    from photoid.catalog.identify import identify_paths_with_catalog

    photos = _test_photos(turtle_dir)
    table = photoid.identify(photos, catalog=serve_catalog.path, top=4)
    expected = list(identify_paths_with_catalog(serve_catalog.path, photos, top=4))
    assert table["individual_id"].tolist() == [label for r in expected for label in r.labels]
    np.testing.assert_allclose(table["score"], [s for r in expected for s in r.scores], rtol=0, atol=1e-6)


def test_options_that_do_not_apply_are_refused_before_any_work(serve_catalog, trained_run, turtle_dir):
    photos = _test_photos(turtle_dir, 1)
    with pytest.raises(PhotoidError, match="--folds does not apply with --catalog"):
        photoid.identify(photos, catalog=serve_catalog.path, folds=[0])
    with pytest.raises(PhotoidError, match="--top must be at least 1"):
        photoid.identify(photos, runs=[trained_run], top=0)
    with pytest.raises(PhotoidError, match="give at least one --run"):
        photoid.identify(photos)
    with pytest.raises(PhotoidError, match="whose records take no --views"):
        photoid.build_records(turtle_dir, turtle_dir / "never", views="top")
    assert not (turtle_dir / "never").exists()


def test_open_run_gives_the_runs_plain_description(trained_run):
    run = photoid.open_run(trained_run)
    assert isinstance(run, photoid.RunInfo)
    assert run.folds == [0, 1] and run.config.model == "cpu-demo" and run.run_dir == trained_run
    assert run.classes == sorted(run.classes) and set(run.original_ids) <= set(run.classes)


def test_calibrate_stores_what_it_returns_in_the_catalogue(serve_catalog, tmp_path):
    copy = tmp_path / "catalog"
    shutil.copytree(serve_catalog.path, copy)
    calibration = photoid.calibrate(copy, repeats=1, seed=3)
    assert photoid.open_catalog(copy).calibration == calibration
    assert 0.0 <= calibration["metrics"]["map5"] <= 1.0 and calibration["repeats"] == 1
    unsaved = photoid.calibrate(copy, repeats=1, seed=4, save=False)
    assert unsaved["seed"] == 4 and photoid.open_catalog(copy).calibration == calibration  # not stored
