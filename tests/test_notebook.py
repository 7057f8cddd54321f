"""notebook/notebook.ipynb runs top to bottom in a real Jupyter kernel; a cell that raises fails the test."""

from __future__ import annotations


import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO

NOTEBOOK = REPO / "notebook" / "notebook.ipynb"


def execute() -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # Executed in the notebook's own folder, as a researcher opening it would; errors raise CellExecutionError.
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    return notebook


def outputs_of(notebook: nbformat.NotebookNode) -> list[dict]:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def test_committed_notebook_has_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert sum(cell.cell_type == "markdown" for cell in notebook.cells) >= len(code) - 1  # each step explained


@pytest.mark.slow  # a Jupyter kernel in a fresh process
def test_notebook_identifies_test_photos_with_the_sessions_run(trained_run, tmp_path, monkeypatch):
    monkeypatch.setenv("PHOTOID_RUN", str(trained_run))
    monkeypatch.setenv("PHOTOID_NOTEBOOK_WORKDIR", str(tmp_path))
    notebook = execute()
    outputs = outputs_of(notebook)
    text = "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    assert str(trained_run) in text and "candidate" in text and "truth" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the gallery, shown inline
    assert (tmp_path / "gallery.png").stat().st_size > 0
    assert not (tmp_path / "runs").exists()  # the given run was used: nothing was trained


@pytest.mark.slow
def test_notebook_trains_a_tiny_run_when_there_is_none(tmp_path, monkeypatch):
    monkeypatch.delenv("PHOTOID_RUN", raising=False)
    monkeypatch.setenv("PHOTOID_DEMO_DIR", str(tmp_path / "no-demo"))
    monkeypatch.setenv("PHOTOID_NOTEBOOK_WORKDIR", str(tmp_path / "work"))
    notebook = execute()
    assert sorted(p.name for p in (tmp_path / "work" / "runs" / "tiny").glob("fold_*/best.weights.h5")) == [
        "best.weights.h5", "best.weights.h5"]
    assert any("image/png" in o.get("data", {}) for o in outputs_of(notebook))
