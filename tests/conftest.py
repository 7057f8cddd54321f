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
    from photoid.records import build_turtle_records

    out = turtle_dir / "tfrec"
    build_turtle_records(turtle_dir, out, n_folds=2, dim_pre=TINY_DIM, workers=1)
    return out


def tiny_args(turtle_dir: Path, run_dir: Path, **overrides) -> argparse.Namespace:
    """run.py options for a 2-fold, 1-epoch run of the small CNN at 32 px."""
    from photoid.config import add_config_arguments

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
    from photoid.config import resolve_config
    from photoid.run import run_config

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    assert run_config(resolve_config(tiny_args(turtle_dir, run_dir))) == 0
    return run_dir


@pytest.fixture(scope="session")
def cli_env() -> dict:
    """Environment for running the project's scripts in a subprocess with this interpreter."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHON"] = sys.executable
    return env
