"""The reproduction scripts, each run once as a researcher runs it, on tiny synthetic data (environment variables
shrink the folds, epochs, sizes and backbones): run_training.sh and run_inference.sh (Turtle Recall, the original's
own calls) and reproduce_whales.sh (Where's Whale-do, the winner's system)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pandas as pd
import pytest

from conftest import REPO, TINY_DIM

TINY_TRAINING = f"--n_folds 2 --n_epochs 1 --dim {TINY_DIM} --dim_pre {TINY_DIM} --verbose 0"


def run_script(name: str, env: dict, cli_env: dict) -> str:
    done = subprocess.run(["bash", str(REPO / name)], env={**cli_env, **env}, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_run_training_builds_the_records_and_trains_with_the_originals_job(turtle_dir, tmp_path, cli_env):
    """Records, then the recipe with the original's default job (train, predict, score, its own submission), on a
    MirroredStrategy over two logical CPUs, with a batch size other than the recipe's."""
    records, runs = tmp_path / "tfrec", tmp_path / "runs"
    out = run_script("run_training.sh", {
        "RECIPES": "cpu-demo", "DATA_DIR": str(turtle_dir), "TFREC_DIR": str(records), "RUNS_DIR": str(runs),
        "RECORD_ARGS": f"--n_folds 2 --dim_pre {TINY_DIM} --workers 1", "BATCH_SIZE": "16",
        "EXTRA_ARGS": TINY_TRAINING + " --strategy mirrored --cpu_devices 2"}, cli_env)
    assert json.loads((records / "records.json").read_text())["settings"]["n_folds"] == 2
    assert "MirroredStrategy with 2 replica(s)" in out
    assert "batch size 16, not the recipe's 32: the learning rate stays the recipe's 0.002" in out
    run = runs / "cpu-demo"
    assert sorted(p.parent.name for p in run.glob("fold_*/done.json")) == ["fold_0", "fold_1"]
    assert json.loads((run / "cv_scores.json").read_text())["folds_scored"] == [0, 1]
    assert len(list((run / "preds").glob("y_pred_test_fold_*_tta_0.npy"))) == 2
    submission = pd.read_csv(run / "submission.csv", dtype=str)   # the original's per-run submission (s-<run>.csv)
    assert submission["image_id"].tolist() == pd.read_csv(turtle_dir / "sample_submission.csv", dtype=str)[
        "image_id"].tolist()


@pytest.mark.slow
def test_run_inference_predicts_each_run_writes_its_submission_and_the_ensembles(trained_run, turtle_dir,
                                                                              turtle_records, tmp_path, cli_env):
    runs = tmp_path / "runs"
    shutil.copytree(trained_run, runs / "cpu-demo")
    (runs / "cpu-demo" / "submission.csv").unlink()
    out = run_script("run_inference.sh", {
        "RECIPES": "cpu-demo", "DATA_DIR": str(turtle_dir), "TFREC_DIR": str(turtle_records), "RUNS_DIR": str(runs),
        "OUT": str(tmp_path / "submission.csv"), "EXTRA_ARGS": TINY_TRAINING}, cli_env)
    assert "submission written to" in out and (runs / "cpu-demo" / "submission.csv").is_file()   # as --job test did
    assert "averaged 4 test prediction files from 1 runs (cpu-demo: 4)" in out   # 2 folds × TTA 0, 1
    submission = pd.read_csv(tmp_path / "submission.csv", dtype=str)
    assert submission["image_id"].tolist() == pd.read_csv(turtle_dir / "sample_submission.csv", dtype=str)[
        "image_id"].tolist()
    assert "MAP@5" in out   # scored: the folder holds the hidden truth


@pytest.mark.slow
def test_reproduce_whales_runs_the_winners_system_end_to_end(tmp_path, cli_env):
    from photoid.synth.belugas import generate_belugas

    data = tmp_path / "data"
    generate_belugas(data, seed=2, n_whales=8, images_per_whale=8, size=32, workers=1)   # 11 (top, lateral) pairs
    runs = tmp_path / "runs"
    tiny = (f"{TINY_TRAINING} --batch_size 4 --backbone simple-cnn --weights none --drop_connect_rate -1 "
            "--embedding_size 16")
    out = run_script("reproduce_whales.sh", {
        "DATA_DIR": str(data), "TFREC_DIR": str(tmp_path / "tfrec"), "RUNS_DIR": str(runs),
        "RECORD_ARGS": f"--n_folds 2 --dim_pre {TINY_DIM} --workers 1", "EXTRA_ARGS": tiny,
        "TOP2_FOLDS": "1", "LATERAL_FOLDS": "0"}, cli_env)
    whales = sorted(pd.read_csv(data / "metadata.csv", dtype=str)["whale_id"].unique())
    for records in ("top", "pairs"):
        manifest = json.loads((tmp_path / "tfrec" / records / "records.json").read_text())
        assert manifest["classes"] == whales   # the winner's label space: every whale of the metadata
        assert manifest["settings"]["train_on_scenarios"] and not manifest["settings"]["grouped"]
    trained = {run: sorted(int(p.parent.name[5:]) for p in (runs / run).glob("fold_*/done.json"))
               for run in ("whale-top", "whale-top-v2", "whale-lateral")}
    assert trained == {"whale-top": [0, 1], "whale-top-v2": [1], "whale-lateral": [0]}
    assert sorted(p.name for p in (runs / "embeddings").iterdir()) == ["lateral.npz", "top.npz", "top2.npz"]
    submission = pd.read_csv(runs / "submission.csv", dtype=str)
    truth = pd.read_csv(data / "example_labels.csv", dtype=str)
    assert set(submission["query_id"]) == set(truth["query_id"])
    assert "routing winner" in out and "against" in out and "mAP" in out
