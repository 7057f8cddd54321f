"""Shared, session-scoped test data: one tiny synthetic Turtle Recall set, its records and one tiny trained run.

Building and training models costs seconds each; the tests share these instead of training again.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pytest

import photoid  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)

REPO = Path(__file__).resolve().parents[1]
TINY_DIM = 32
# The real Where's Whale-do metadata and scenarios (no images), kept in the `shared/` folder beside the checkout.
REAL_BELUGAS = REPO.parent / "shared" / "data" / "belugas"


@pytest.fixture(scope="session")
def turtle_dir(tmp_path_factory) -> Path:
    """12 original + 8 extra-only turtles (some shared), 6 images each, 48 px — with new turtles in test."""
    from photoid.synth.turtles import generate_turtles

    out = tmp_path_factory.mktemp("turtles") / "data"
    generate_turtles(out, seed=7, n_original=12, n_extra=8, images_per_turtle=6, n_test=24, size=48, workers=1)
    return out


@pytest.fixture(scope="session")
def turtle_records(turtle_dir) -> Path:
    from photoid.turtles.records import build_turtle_records

    out = turtle_dir / "tfrec"
    build_turtle_records(turtle_dir, out, n_folds=2, dim_pre=TINY_DIM, workers=1)
    return out


def tiny_args(turtle_dir: Path, run_dir: Path, **overrides) -> argparse.Namespace:
    """run.py options for a 2-fold, 1-epoch run of the small CNN at 32 px."""
    from photoid.runs.config import add_config_arguments

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    argv = ["--model", "cpu-demo", "--data_dir", str(turtle_dir), "--run_dir", str(run_dir), "--n_folds", "2",
            "--n_epochs", "1", "--dim", str(TINY_DIM), "--dim_pre", str(TINY_DIM), "--batch_size", "16",
            "--verbose", "0", "--tta_number", "1"]
    for key, value in overrides.items():
        argv += [f"--{key}", str(value)]
    return parser.parse_args(argv)


@pytest.fixture(scope="session")
def trained_run(turtle_dir, turtle_records, tmp_path_factory) -> Path:
    """One tiny run: 2 folds × 1 epoch, predictions for TTA 0 and 1, CV scores and its own submission."""
    from photoid.runs.config import resolve_config
    from photoid.training.kfold import run_config

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    assert run_config(resolve_config(tiny_args(turtle_dir, run_dir))) == 0
    return run_dir


@pytest.fixture(scope="session")
def serve_catalog(trained_run, turtle_dir, tmp_path_factory):
    """A calibrated catalogue of the tiny run (tests that change it work on their own copy)."""
    from photoid.catalog.calibrate import calibrate
    from photoid.catalog.build import build_catalog
    from photoid.catalog.store import update_manifest

    catalog = build_catalog([str(trained_run)], turtle_dir, tmp_path_factory.mktemp("serve") / "catalog")
    return update_manifest(catalog, calibration=calibrate(catalog, repeats=1))


@pytest.fixture(scope="session")
def cli_env() -> dict:
    """Environment for running the project's scripts in a subprocess with this interpreter."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHON"] = sys.executable
    return env


# --- Where's Whale-do: a tiny synthetic folder, its records and one ArcFace run (shared by the whale tests) ---

BELUGA_SYNTH = dict(seed=5, n_whales=12, images_per_whale=6, size=48, workers=1)


@pytest.fixture(scope="session")
def beluga_dir(tmp_path_factory):
    """12 whales x ~6 photos at 48 px; scenarios drawn for about 20 of the photos (whole whales)."""
    import shutil

    import pandas as pd

    from photoid.synth.belugas import generate_belugas

    root = tmp_path_factory.mktemp("belugas")
    generate_belugas(root / "data", **BELUGA_SYNTH)
    generate_belugas(root / "subset", max_images=20, **BELUGA_SYNTH)
    for name in ("queries", "databases"):
        shutil.rmtree(root / "data" / name)
        shutil.copytree(root / "subset" / name, root / "data" / name)
    for name in ("query_scenarios.csv", "example_labels.csv"):
        shutil.copy(root / "subset" / name, root / "data" / name)
    metadata = pd.read_csv(root / "data" / "metadata.csv", dtype=str)
    assert (metadata["viewpoint"] == "right").any(), "the tiny set needs a right view to test mirroring"
    return root / "data"


@pytest.fixture(scope="session")
def whale_records(beluga_dir):
    from photoid.whales.records import build_whale_records

    # Right views mirrored (the option, not the default): the single-photo paths are tested preparing them alike.
    build_whale_records(beluga_dir, n_folds=2, dim_pre=TINY_DIM, workers=1, mirror_right=True)
    return beluga_dir / "tfrec"


@pytest.fixture(scope="session")
def whale_run(beluga_dir, whale_records, tmp_path_factory):
    """The whale-cpu-demo recipe, 2 folds x 1 epoch at 32 px, through run.py."""
    import argparse

    from photoid.runs.config import add_config_arguments, resolve_config
    from photoid.training.kfold import run_config

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    run_dir = tmp_path_factory.mktemp("whale-runs") / "tiny"
    args = parser.parse_args(["--model", "whale-cpu-demo", "--data_dir", str(beluga_dir), "--run_dir", str(run_dir),
                              "--n_folds", "2", "--n_epochs", "1", "--dim", str(TINY_DIM), "--dim_pre",
                              str(TINY_DIM), "--batch_size", "16", "--verbose", "0"])
    assert run_config(resolve_config(args)) == 0
    return run_dir


# --- a generic folder (photoid.generic.data), its records and one run ---

@pytest.fixture(scope="session")
def generic_dir(tmp_path_factory) -> Path:
    """6 known individuals x 3 encounters (the last one test) and 2 unseen ones, 48 px, JPEGs and PNGs."""
    from photoid.synth.generic import generate_generic

    out = tmp_path_factory.mktemp("generic") / "data"
    generate_generic(out, seed=3, n_individuals=6, encounters_per_individual=3, n_unknown=2, size=48, workers=1)
    return out


@pytest.fixture(scope="session")
def generic_records(generic_dir) -> Path:
    """Built through `photoid records`, the task found from the folder's files."""
    from photoid.cli import main

    out = generic_dir / "tfrec"
    assert main(["records", "--data_dir", str(generic_dir), "--n_folds", "2", "--dim_pre", str(TINY_DIM),
                 "--workers", "1"]) == 0
    return out


@pytest.fixture(scope="session")
def generic_run(generic_dir, generic_records, tmp_path_factory) -> Path:
    """The whale-cpu-demo recipe (ArcFace head, embeddings) on the generic folder: its task comes from the records."""
    from photoid.training.kfold import resolve_run_config, run_config

    run_dir = tmp_path_factory.mktemp("generic-runs") / "arcface"
    args = tiny_args(generic_dir, run_dir, model="whale-cpu-demo", job="train_val_test_score")
    assert run_config(resolve_run_config(args)) == 0
    return run_dir
