"""Records, runs, predictions and submissions on a file system that is not the local disk.

The original trained on a TPU reading its records from Cloud Storage (`--data_tfrec_dir gs://bucket/dir`). No bucket
can be reached here, so TensorFlow's in-memory file system (`ram://`) stands in for it: it is reached through the same
`tf.io.gfile` calls as gs:// (globs, renames, appends included), and a path that code treated as local (a
`pathlib.Path` of a URL, `open`, `os.makedirs`) fails on it. ram:// lives in one process: these tests run the commands
in-process (`photoid.cli.main`), each with its own bucket name.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import numpy as np
import pandas as pd
import pytest

from conftest import TINY_DIM


def bucket() -> str:
    return f"ram://bucket-{uuid.uuid4().hex[:8]}"


def test_a_url_keeps_its_two_slashes_through_path_operations():
    from photoid.core.fs import RemotePath, as_path, join

    path = as_path("gs://bucket/dir")
    assert isinstance(path, RemotePath)
    assert str(path / "folds.csv") == "gs://bucket/dir/folds.csv"   # pathlib.Path gives gs:/bucket/dir/folds.csv
    assert str((path / "fold_0" / "best.weights.h5").parent.parent) == "gs://bucket/dir"
    assert (path / "preds" / "y.npy").with_suffix(".json").name == "y.json"
    assert join("gs://bucket/dir/", "tfrec", "records.json") == "gs://bucket/dir/tfrec/records.json"
    assert join("runs", "a") == "runs/a"


def test_local_folders_are_read_without_loading_tensorflow(tmp_path):
    # The light modules (photoid --help, the record workers) must not pay for TensorFlow on local paths.
    code = f"""
import sys
from photoid.core import fs, io as pio
from photoid.records.folder import RecordsDir
from photoid.runs.folder import RunDir
pio.write_json({str(tmp_path / 'r' / 'records.json')!r}, {{"settings": {{"dim_pre": 32}}}})
pio.save_npy({str(tmp_path / 'a.npy')!r}, [1.0, 2.0])
assert RecordsDir({str(tmp_path / 'r')!r}).setting("dim_pre", 0) == 32
assert list(pio.load_npy({str(tmp_path / 'a.npy')!r})) == [1.0, 2.0]
assert RunDir({str(tmp_path / 'run')!r}).done_folds() == [] and fs.glob({str(tmp_path / '*.npy')!r})
print("tensorflow" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_atomic_files_on_a_remote_file_system_replace_or_keep_the_old_one():
    from photoid.core import fs
    from photoid.core import io as pio

    root = bucket()
    pio.write_json(f"{root}/a/b.json", {"x": 1})
    pio.write_json(f"{root}/a/b.json", {"x": 2})
    assert pio.read_json(f"{root}/a/b.json") == {"x": 2}
    with pytest.raises(RuntimeError):
        with pio.atomic_path(f"{root}/a/b.json") as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("killed")
    assert pio.read_json(f"{root}/a/b.json") == {"x": 2}
    assert fs.listdir(f"{root}/a") == ["b.json"]   # no staged file left behind
    pio.save_npy(f"{root}/p.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    assert pio.load_npy(f"{root}/p.npy").tolist() == [[0, 1, 2], [3, 4, 5]]
    assert pio.file_sha256(f"{root}/p.npy") == pio.file_sha256(fs.as_path(f"{root}/p.npy"))
    with fs.open_file(f"{root}/log.jsonl", "a") as f:
        f.write("1\n")
    with fs.open_file(f"{root}/log.jsonl", "a") as f:
        f.write("2\n")
    assert fs.as_path(f"{root}/log.jsonl").read_text() == "1\n2\n"
    assert [p.name for p in fs.as_path(root).glob("*.npy")] == ["p.npy"]
    fs.rmtree(f"{root}/a")
    assert not fs.exists(f"{root}/a/b.json")


@pytest.mark.slow
def test_records_training_predictions_and_ensemble_on_a_remote_file_system(turtle_dir, turtle_records, tmp_path,
                                                                          capsys):
    """records → 2 folds × 1 epoch → predictions → per-run submission → ensemble, every output on ram://."""
    from photoid.cli import main
    from photoid.core import fs
    from photoid.core import io as pio
    from photoid.runs.folder import RunDir

    root = bucket()
    records, run = f"{root}/tfrec", f"{root}/runs/cpu-demo"
    assert main(["tfrecords", "--data_dir", str(turtle_dir), "--out_dir", records, "--n_folds", "2", "--dim_pre",
                 str(TINY_DIM), "--workers", "1"]) == 0
    # The same records as on the local disk (the session's, built with the same settings), byte for byte.
    local = json.loads((turtle_records / "records.json").read_text())
    remote = pio.read_json(f"{records}/records.json")
    assert {k: v["sha256"] for k, v in remote["shards"].items()} == {k: v["sha256"] for k, v in local["shards"].items()}
    assert fs.as_path(f"{records}/folds.csv").read_bytes() == (turtle_records / "folds.csv").read_bytes()

    train = ["train", "--model", "cpu-demo", "--data_dir", str(turtle_dir), "--data_tfrec_dir", records,
             "--run_dir", run, "--n_folds", "2", "--n_epochs", "1", "--dim", str(TINY_DIM), "--dim_pre",
             str(TINY_DIM), "--batch_size", "16", "--verbose", "0"]
    assert main(train) == 0
    folder = RunDir(run)
    assert folder.trained_folds() == [0, 1]
    for fold in (0, 1):
        assert (folder.fold_dir(fold) / "history.csv").read_text().startswith("epoch,")
        assert (folder.fold_dir(fold) / "curve.png").read_bytes().startswith(b"\x89PNG")
        assert not (folder.fold_dir(fold) / "backup").exists()
    assert len(list(folder.predictions("val", folder.classes()))) == 2
    assert pio.read_json(f"{run}/cv_scores.json")["folds_scored"] == [0, 1]
    own = pd.read_csv(fs.open_file(f"{run}/submission.csv"), dtype=str)
    sample = pd.read_csv(turtle_dir / "sample_submission.csv", dtype=str)
    assert own["image_id"].tolist() == sample["image_id"].tolist()

    assert main(train) == 0   # a second call finds the finished folds on the remote file system
    assert capsys.readouterr().out.count("already trained") == 2
    assert len(fs.as_path(f"{run}/log.jsonl").read_text().splitlines()) == 2

    assert main(["ensemble", run, "--data_dir", str(turtle_dir), "--out", f"{root}/submission.csv"]) == 0
    ensembled = pd.read_csv(fs.open_file(f"{root}/submission.csv"), dtype=str)
    pd.testing.assert_frame_equal(ensembled, own)   # one run: the ensemble rule over the same files


def test_a_tpu_with_remote_records_passes_the_records_checks_and_fails_at_the_tpu(turtle_dir, turtle_records,
                                                                               capsys):
    """`--tpu_ip_or_name` with records on a remote file system: every records check passes (no `folds.csv` looked for on
    the local disk) and the TPU resolver, which has no TPU here, is what fails, with its reason."""
    from photoid.cli import main
    from photoid.core import fs

    root = bucket()
    for name in fs.listdir(turtle_records):
        fs.copy(turtle_records / name, f"{root}/tfrec/{name}")
    code = main(["train", "--model", "cpu-demo", "--data_dir", str(turtle_dir), "--data_tfrec_dir", f"{root}/tfrec",
                 "--run_dir", f"{root}/runs/tpu", "--n_folds", "2", "--dim", str(TINY_DIM), "--dim_pre", str(TINY_DIM),
                 "--tpu_ip_or_name", "no-such-tpu"])
    out, err = capsys.readouterr()
    assert code == 2
    assert f"run {root}/runs/tpu: recipe cpu-demo" in out   # the records were read and the run folder prepared
    assert "error: TPU 'no-such-tpu' was asked for but cannot be used" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_whale_records_training_ranking_and_score_on_a_remote_file_system(tmp_path, capsys):
    """reproduce_whales.sh's steps with every output on ram://: records (top photos; lateral pairs), a top and a
    paired lateral run (1 fold × 1 epoch), the ranking with its embeddings saved, the score; then the ranking again
    from the saved embeddings."""
    from photoid.cli import main
    from photoid.core import fs
    from photoid.synth.belugas import generate_belugas

    data = tmp_path / "data"
    generate_belugas(data, seed=2, n_whales=8, images_per_whale=8, size=32, workers=1)
    root = bucket()
    for name, option in (("top", ["--views", "top"]), ("pairs", ["--pair_lateral"])):
        assert main(["whale-records", "--data_dir", str(data), "--out_dir", f"{root}/tfrec/{name}",
                     "--train_on_scenarios", "--no-grouped", "--n_folds", "2", "--dim_pre", str(TINY_DIM),
                     "--workers", "1", *option]) == 0
    assert fs.exists(f"{root}/tfrec/pairs/pair.0.tfrecord-00000-of-00001")
    tiny = ["--data_dir", str(data), "--n_folds", "2", "--final_fold", "1", "--n_epochs", "1", "--dim", str(TINY_DIM),
            "--dim_pre", str(TINY_DIM), "--batch_size", "4", "--backbone", "simple-cnn", "--weights", "none",
            "--drop_connect_rate", "-1", "--embedding_size", "16", "--verbose", "0"]
    for recipe, records in (("whale-top", "top"), ("whale-lateral", "pairs")):
        assert main(["train", "--model", recipe, "--data_tfrec_dir", f"{root}/tfrec/{records}", "--run_dir",
                     f"{root}/runs/{recipe}", *tiny]) == 0
    first = f"{root}/submission.csv"
    assert main(["rank", "--data_dir", str(data), "--records_dir", f"{root}/tfrec/top", "--run_top",
                 f"{root}/runs/whale-top", "--run_lateral", f"{root}/runs/whale-lateral", "--save_embeddings",
                 f"{root}/embeddings", "--out", first]) == 0
    assert main(["score-ranking", "--submission", first, "--truth", str(data / "example_labels.csv")]) == 0
    assert "mAP (official" in capsys.readouterr().out
    again = f"{root}/again.csv"
    assert main(["rank", "--data_dir", str(data), "--top", f"{root}/embeddings/top.npz", "--lateral",
                 f"{root}/embeddings/lateral.npz", "--out", again]) == 0
    read = [pd.read_csv(fs.open_file(path), dtype={"query_id": str, "database_image_id": str}) for path in (first, again)]
    assert read[0][["query_id", "database_image_id"]].values.tolist() == \
        read[1][["query_id", "database_image_id"]].values.tolist()
    np.testing.assert_allclose(read[0]["score"], read[1]["score"], rtol=1e-5, atol=1e-6)
