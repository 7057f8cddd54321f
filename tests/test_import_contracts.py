"""The package's layer order (pyproject.toml's [tool.importlinter] contracts), checked with import-linter."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=300)


def test_the_layer_contracts_hold():
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def _lint_with_a_late_import(tmp_path: Path, module: str, imported: str) -> subprocess.CompletedProcess:
    """lint-imports on a copy of the package where `module` (a path under src/photoid) imports `imported` inside a
    function."""
    shutil.copytree(REPO / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / "src" / "photoid" / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n\ndef _late():\n    import {imported}  # noqa\n",
                    encoding="utf-8")
    return _lint(tmp_path)


def test_a_light_module_importing_tensorflow_breaks_the_contract(tmp_path):
    # A light module reaching TensorFlow inside a function: the contract must see it.
    result = _lint_with_a_late_import(tmp_path, "core/labels.py", "tensorflow")
    assert result.returncode != 0
    assert "photoid.core.labels -> tensorflow" in result.stdout


def test_shared_machinery_importing_a_competition_breaks_the_layers(tmp_path):
    # The catalogue reaching into Turtle Recall's folder directly (not through the registry): the layers contract
    # must name that import.
    result = _lint_with_a_late_import(tmp_path, "catalog/store.py", "photoid.turtles.data")
    assert result.returncode != 0
    assert "photoid.catalog.store -> photoid.turtles.data" in result.stdout
