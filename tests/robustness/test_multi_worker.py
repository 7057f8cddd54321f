"""`MultiWorkerMirroredStrategy` run for real: two `photoid train` workers on this machine (127.0.0.1 ports only),
joined by `TF_CONFIG`, train fold 0 of the session's tiny records together and write the same weights."""

from __future__ import annotations

import json
import socket

import h5py
import numpy as np
import pytest

from robustness_support import reaped, start_photoid

TIME_LIMIT_S = 240  # both workers together; a worker that waits for its peer forever is killed here


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def weights(path) -> dict[str, np.ndarray]:
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset)
                     else None)
    return arrays


@pytest.mark.slow
def test_two_workers_train_one_fold_and_agree_on_its_weights(turtle_dir, turtle_records, tmp_path, monkeypatch):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    workers = []
    for index in range(2):
        # Each worker writes its own run folder (as on machines without a shared disk); worker 0 is the chief.
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        workers.append(start_photoid(
            "train", "--model", "cpu-demo", "--data_dir", turtle_dir, "--run_dir", tmp_path / f"worker{index}",
            "--n_folds", "2", "--final_fold", "1", "--n_epochs", "1", "--steps_per_epoch", "2", "--dim", "32",
            "--dim_pre", "32", "--batch_size", "8", "--verbose", "2", "--job", "train", "--seed", "3",
            log_dir=tmp_path, name=f"worker{index}"))
    with reaped(*(process for process, _, _ in workers)):
        codes = [process.wait(timeout=TIME_LIMIT_S) for process, _, _ in workers]
    assert codes == [0, 0], [err.read_text()[-3000:] for _, _, err in workers]
    for _, out, _ in workers:
        # CollectiveAllReduceStrategy is the class behind tf.distribute.MultiWorkerMirroredStrategy.
        assert "strategy: CollectiveAllReduceStrategy with 2 replica(s)" in out.read_text()
    first, second = (weights(tmp_path / f"worker{i}" / "fold_0" / "best.weights.h5") for i in range(2))
    assert first.keys() == second.keys() and len(first) > 0
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    # One training, seen twice: the same history on both workers.
    histories = [(tmp_path / f"worker{i}" / "fold_0" / "history.csv").read_text() for i in range(2)]
    assert histories[0] == histories[1] and len(histories[0].splitlines()) == 2
