"""The package's layout: old import paths keep working and name the new place; nothing outside the registry names a
competition's folder."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from conftest import REPO


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-W", "always::DeprecationWarning", "-c", code], capture_output=True,
                          text=True, timeout=120, cwd=REPO)


@pytest.mark.parametrize("old, name, new", [
    ("photoid.identify", "identify_paths", "photoid.inference.identify"),
    ("photoid.identify", "configure_parser", "photoid.commands.identify"),
    ("photoid.catalog", "build_catalog", "photoid.catalog.build"),
    ("photoid.catalog", "identify_paths_with_catalog", "photoid.catalog.identify"),
    ("photoid.catalog", "read_catalog", "photoid.catalog.store"),
    ("photoid.runs", "load_run", "photoid.runs.loaded"),
    ("photoid.records", "build_turtle_records", "photoid.turtles.records"),
    ("photoid.data", "load_turtles", "photoid.turtles.data"),
])
def test_an_old_import_path_gives_the_same_object_and_names_the_new_place(old, name, new):
    result = _python(f"from {old} import {name} as a\nfrom {new} import {name} as b\nassert a is b, (a, b)")
    assert result.returncode == 0, result.stderr
    assert f"{old}.{name} is now {new}.{name}" in result.stderr


def test_a_name_an_old_module_never_had_says_where_its_contents_went():
    result = _python("import photoid.identify\nphotoid.identify.no_such_name")
    assert result.returncode != 0
    assert "photoid.inference.identify" in result.stderr and "photoid.commands.identify" in result.stderr


def test_every_module_of_the_old_layout_still_imports():
    from photoid._moved import MOVED

    for old in MOVED:
        assert importlib.import_module(old).__name__ == old


def test_the_api_functions_named_like_old_modules_still_work_after_an_old_import(trained_run, turtle_dir):
    import pandas as pd

    import photoid
    import photoid.identify  # noqa: F401  (the old module's name is now the package's attribute)

    photo = str(turtle_dir / "images" / f"{pd.read_csv(turtle_dir / 'test.csv', dtype=str)['image_id'][0]}.JPG")
    table = photoid.identify([photo], runs=[trained_run], top=2)
    assert table["rank"].tolist() == [1, 2]
    assert photoid.identify.identify_paths is importlib.import_module("photoid.inference.identify").identify_paths
