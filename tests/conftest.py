"""Shared, session-scoped test data: tiny synthetic Turtle Recall, Where's Whale-do and generic folders, their records
and one tiny trained run of each, and a calibrated catalogue.

Building and training models costs seconds each; the tests share these instead of training again. Each is built
once per test run, by the first process that needs it (`make test` runs pytest-xdist workers), and read by all:
so no test may write into one. `shared_folders_stay_unchanged` checks that after every test.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import photoid  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)

REPO = Path(__file__).resolve().parents[1]
TINY_DIM = 32
# The real Where's Whale-do metadata and scenarios (no images), kept in the `shared/` folder beside the checkout.
REAL_BELUGAS = REPO.parent / "shared" / "data" / "belugas"


@pytest.fixture(scope="session")
def shared_root(tmp_path_factory, request) -> Path:
    """This test run's folder of shared data: one for all of pytest-xdist's workers (their temporary folders have
    one parent); a pytest started inside a test (its environment names a worker too) gets its own."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if hasattr(request.config, "workerinput") else base) / "shared-session-data"
    root.mkdir(exist_ok=True)
    return root


def built_once(root: Path, name: str, build: Callable[[Path], object]) -> Path:
    """The folder `name` of this test run's shared data, after `build(folder)` has filled it.

    The first process of the run to ask builds it while holding a lock on it; the others (pytest-xdist's workers)
    wait for that, then read the same folder. A build that failed is started again.
    """
    folder, done = root / name, root / f"{name}.built"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also when this process dies
        if not done.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


# The session fixtures whose folders tests share, chain by chain, the last first: asking for one builds those before
# it. A data folder holds its records' folder, which the records fixture writes and is checked as its own.
SHARED_CHAINS = (("serve_catalog", "trained_run", "turtle_records", "turtle_dir"),
                 ("whale_run", "whale_records", "beluga_dir"),
                 ("generic_run", "generic_records", "generic_dir"))
RECORDS_INSIDE = {"turtle_dir": "tfrec", "beluga_dir": "tfrec", "generic_dir": "tfrec"}


def _listing(folder: Path, skip: str | None) -> dict:
    files = {}
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if skip is None or relative.parts[0] != skip:
            stat = path.lstat()
            files[str(relative)] = (stat.st_size, stat.st_mtime_ns)
    return files


@pytest.fixture(scope="session", autouse=True)
def shared_data_built_side_by_side(request):
    """Under pytest-xdist, worker k builds the k-th chain of shared data the collected tests need before its first
    test, so that the workers build them at the same time instead of one waiting for the lock of another's."""
    workerinput = getattr(request.config, "workerinput", None)
    count = workerinput["workercount"] if workerinput else 1
    if count < 2:
        return
    needed = set().union(*(item.fixturenames for item in request.session.items))
    wanted = [next(name for name in chain if name in needed) for chain in SHARED_CHAINS
              if needed.intersection(chain)]
    for name in wanted[int(workerinput["workerid"].removeprefix("gw")) % count::count]:
        request.getfixturevalue(name)


@pytest.fixture(autouse=True)
def shared_folders_stay_unchanged(request):
    """Fail a test that wrote into a shared session folder: other processes read it at the same time."""
    watched = {}
    for name in (name for chain in SHARED_CHAINS for name in chain if name in request.fixturenames):
        value = request.getfixturevalue(name)
        watched[name] = (Path(getattr(value, "path", value)), RECORDS_INSIDE.get(name))  # serve_catalog: a Catalog
    before = {name: _listing(folder, skip) for name, (folder, skip) in watched.items()}
    yield
    for name, (folder, skip) in watched.items():
        after = _listing(folder, skip)
        changed = sorted(set(before[name]) ^ set(after)
                         | {f for f in after if before[name].get(f, after[f]) != after[f]})
        assert not changed, (f"the test wrote into the shared folder of the session fixture {name} ({folder}): "
                             f"{', '.join(changed[:5])}; work on a copy in tmp_path instead")


@pytest.fixture(scope="session")
def turtle_dir(shared_root) -> Path:
    """12 original + 8 extra-only turtles (some shared), 6 images each, 48 px — with new turtles in test."""
    from photoid.synth.turtles import generate_turtles

    return built_once(shared_root, "turtles", lambda folder: generate_turtles(
        folder / "data", seed=7, n_original=12, n_extra=8, images_per_turtle=6, n_test=24, size=48, workers=1)) / "data"


@pytest.fixture(scope="session")
def turtle_records(turtle_dir, shared_root) -> Path:
    from photoid.turtles.records import build_turtle_records

    out = turtle_dir / "tfrec"
    built_once(shared_root, "turtle-records",
               lambda _: build_turtle_records(turtle_dir, out, n_folds=2, dim_pre=TINY_DIM, workers=1))
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
def trained_run(turtle_dir, turtle_records, shared_root) -> Path:
    """One tiny run: 2 folds × 1 epoch, predictions for TTA 0 and 1, CV scores and its own submission."""
    from photoid.runs.config import resolve_config
    from photoid.training.kfold import run_config

    def train(folder: Path):
        assert run_config(resolve_config(tiny_args(turtle_dir, folder / "tiny"))) == 0

    return built_once(shared_root, "runs", train) / "tiny"


@pytest.fixture(scope="session")
def serve_catalog(trained_run, turtle_dir, shared_root):
    """A calibrated catalogue of the tiny run (tests that change it work on their own copy)."""
    from photoid.catalog.calibrate import calibrate
    from photoid.catalog.build import build_catalog
    from photoid.catalog.store import read_catalog, update_manifest

    def build(folder: Path):
        catalog = build_catalog([str(trained_run)], turtle_dir, folder / "catalog")
        update_manifest(catalog, calibration=calibrate(catalog, repeats=1))

    return read_catalog(built_once(shared_root, "serve", build) / "catalog")


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
def beluga_dir(shared_root):
    """12 whales x ~6 photos at 48 px; scenarios drawn for about 20 of the photos (whole whales)."""
    import pandas as pd

    from photoid.synth.belugas import generate_belugas

    def build(root: Path):
        generate_belugas(root / "data", **BELUGA_SYNTH)
        generate_belugas(root / "subset", max_images=20, **BELUGA_SYNTH)
        for name in ("queries", "databases"):
            shutil.rmtree(root / "data" / name)
            shutil.copytree(root / "subset" / name, root / "data" / name)
        for name in ("query_scenarios.csv", "example_labels.csv"):
            shutil.copy(root / "subset" / name, root / "data" / name)
        metadata = pd.read_csv(root / "data" / "metadata.csv", dtype=str)
        assert (metadata["viewpoint"] == "right").any(), "the tiny set needs a right view to test mirroring"

    return built_once(shared_root, "belugas", build) / "data"


@pytest.fixture(scope="session")
def whale_records(beluga_dir, shared_root):
    from photoid.whales.records import build_whale_records

    # Right views mirrored (the option, not the default): the single-photo paths are tested preparing them alike.
    built_once(shared_root, "whale-records", lambda _: build_whale_records(
        beluga_dir, n_folds=2, dim_pre=TINY_DIM, workers=1, mirror_right=True))
    return beluga_dir / "tfrec"


@pytest.fixture(scope="session")
def whale_run(beluga_dir, whale_records, shared_root):
    """The whale-cpu-demo recipe, 2 folds x 1 epoch at 32 px, through run.py."""
    import argparse

    from photoid.runs.config import add_config_arguments, resolve_config
    from photoid.training.kfold import run_config

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    def train(folder: Path):
        args = parser.parse_args(["--model", "whale-cpu-demo", "--data_dir", str(beluga_dir), "--run_dir",
                                  str(folder / "tiny"), "--n_folds", "2", "--n_epochs", "1", "--dim", str(TINY_DIM),
                                  "--dim_pre", str(TINY_DIM), "--batch_size", "16", "--verbose", "0"])
        assert run_config(resolve_config(args)) == 0

    return built_once(shared_root, "whale-runs", train) / "tiny"


# --- a generic folder (photoid.generic.data), its records and one run ---

@pytest.fixture(scope="session")
def generic_dir(shared_root) -> Path:
    """6 known individuals x 3 encounters (the last one test) and 2 unseen ones, 48 px, JPEGs and PNGs."""
    from photoid.synth.generic import generate_generic

    return built_once(shared_root, "generic", lambda folder: generate_generic(
        folder / "data", seed=3, n_individuals=6, encounters_per_individual=3, n_unknown=2, size=48,
        workers=1)) / "data"


@pytest.fixture(scope="session")
def generic_records(generic_dir, shared_root) -> Path:
    """Built through `photoid records`, the task found from the folder's files."""
    from photoid.cli import main

    def build(_):
        assert main(["records", "--data_dir", str(generic_dir), "--n_folds", "2", "--dim_pre", str(TINY_DIM),
                     "--workers", "1"]) == 0

    built_once(shared_root, "generic-records", build)
    return generic_dir / "tfrec"


@pytest.fixture(scope="session")
def generic_run(generic_dir, generic_records, shared_root) -> Path:
    """The whale-cpu-demo recipe (ArcFace head, embeddings) on the generic folder: its task comes from the records."""
    from photoid.training.kfold import resolve_run_config, run_config

    def train(folder: Path):
        args = tiny_args(generic_dir, folder / "arcface", model="whale-cpu-demo", job="train_val_test_score")
        assert run_config(resolve_run_config(args)) == 0

    return built_once(shared_root, "generic-runs", train) / "arcface"
