"""photoid as an installed package: the wheel holds every module and the recipes, and they load from it."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO


@pytest.mark.slow  # builds a wheel, loads it in a fresh Python
def test_the_wheel_carries_every_module_and_the_recipes_which_load_from_any_folder(tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside pyproject.toml
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(REPO / "models", source / "models")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("photoid-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(REPO / "src")) for p in (REPO / "src" / "photoid").rglob("*.py")}
    recipes = {f"photoid/recipes/{p.name}" for p in (REPO / "models").glob("*.toml")}
    assert modules - names == set() and recipes - names == set() and len(recipes) >= 10

    installed = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(installed)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    check = ("import sys; from photoid.runs.config import RECIPES_DIR, find_recipe, read_recipe; "
             "names = sorted(p.stem for p in RECIPES_DIR.glob('*.toml')); "
             "[read_recipe(find_recipe(n)) for n in names]; print(RECIPES_DIR, len(names))")
    out = subprocess.run([sys.executable, "-c", check], cwd=elsewhere, env={"PYTHONPATH": str(installed)},
                         check=True, capture_output=True, text=True).stdout.split()
    assert Path(out[0]) == installed / "photoid" / "recipes" and int(out[1]) == len(recipes)
    listed = subprocess.run([sys.executable, "-c", "from photoid.cli import main; main(['recipes'])"], cwd=elsewhere,
                            env={"PYTHONPATH": str(installed)}, check=True, capture_output=True, text=True).stdout
    assert "ef1b7            efficientnet-b7        imagenet           512 px" in listed
    assert len(listed.splitlines()) == len(recipes) + 1
