"""Interruption: killed or Ctrl-C'd commands leave only complete files and resume; numerical faults stop cleanly.

Record building and training run as real `photoid` subprocesses that are killed (SIGKILL, nothing can clean up)
or interrupted (SIGINT, as Ctrl-C) part-way, then run again. Writers that fail midway are simulated in process.
"""

from __future__ import annotations

import functools
import json
import subprocess
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from photoid.core import io as pio
from photoid.core.errors import PhotoidError
from robustness_support import (file_bytes, files_under, kill, reaped, run_photoid, spawn, start_photoid,
                                subprocess_env, temporary_files, wait_until)

RECORDS = ("--n_folds", "2", "--shards", "4", "--dim_pre", "256", "--workers", "1")
N_SHARDS = 3 * 4  # two folds and the test set, four shards each


@pytest.fixture(scope="module")
def synthetic_turtles(tmp_path_factory) -> Path:
    """About 230 photos at 256 px: enough that building their records takes a few seconds."""
    from photoid import cli

    out = tmp_path_factory.mktemp("interruption") / "data"
    assert cli.main(["synth", "turtles", "--out", str(out), "--seed", "5", "--n-original", "10", "--n-extra", "10",
                     "--images-per-turtle", "10", "--size", "256", "--workers", "1"]) == 0
    return out


def listed_shards(out: Path) -> dict:
    try:
        return json.loads((out / "records.json").read_text(encoding="utf-8"))["shards"]
    except (FileNotFoundError, ValueError, KeyError):
        return {}


@pytest.mark.slow  # photoid in fresh processes
def test_killed_record_build_resumes_to_the_same_bytes(synthetic_turtles, tmp_path, capsys):
    reference = tmp_path / "reference"
    code, _, err = run_photoid(capsys, "tfrecords", "--data_dir", synthetic_turtles, "--out_dir", reference, *RECORDS)
    assert code == 0, err
    expected = file_bytes(reference)

    out = tmp_path / "interrupted"
    process, _, err_path = start_photoid("tfrecords", "--data_dir", synthetic_turtles, "--out_dir", out, *RECORDS,
                                         log_dir=tmp_path, name="tfrecords")
    # Kill it while a shard is being written, once a few shards are finished.
    wait_until(lambda: len(listed_shards(out)) >= 2 and temporary_files(out), process, timeout=300,
               what="two finished shards and one being written")
    assert kill(process) == -signal.SIGKILL, err_path.read_text()
    finished = listed_shards(out)
    assert 2 <= len(finished) < N_SHARDS

    # Whatever carries a shard's final name is complete: a reader globbing the folder never sees half a shard.
    shards = [name for name in files_under(out) if ".tfrecord-" in name and not name.startswith(".")]
    assert set(finished) <= set(shards)
    for name in shards:
        assert (out / name).read_bytes() == expected[name], f"{name} is not complete"

    code, stdout, err = run_photoid(capsys, "tfrecords", "--data_dir", synthetic_turtles, "--out_dir", out, *RECORDS)
    assert code == 0, err
    kept = int(stdout.split("kept from an earlier run: ")[1].split(";")[0])
    assert kept >= len(finished)  # resumed: the finished shards were not written again
    assert file_bytes(out) == expected
    assert temporary_files(out) == []


@pytest.mark.slow  # photoid in a fresh process
def test_ctrl_c_during_record_building_is_one_line(synthetic_turtles, tmp_path):
    out = tmp_path / "tfrec"
    process, _, err_path = start_photoid("tfrecords", "--data_dir", synthetic_turtles, "--out_dir", out, *RECORDS,
                                         log_dir=tmp_path, name="tfrecords")
    wait_until(lambda: len(listed_shards(out)) >= 1, process, timeout=300, what="the first finished shard")
    code = kill(process, signal.SIGINT)
    assert code == 130, err_path.read_text()[-4000:]
    assert_one_line_interruption(err_path.read_text())
    assert temporary_files(out) == []  # the shard being written was dropped, not left half-written


def assert_one_line_interruption(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "KeyboardInterrupt" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted: stopped by the user"), stderr


# --- training --------------------------------------------------------------------------------------------------------

N_EPOCHS = 4
STEPS = 10


def train_argv(turtle_dir: Path, run_dir: Path, *extra: str) -> list:
    """Fold 0 of the shared tiny records, STEPS batches per epoch drawn from the repeated training set."""
    return ["train", "--model", "cpu-demo", "--data_dir", turtle_dir, "--run_dir", run_dir, "--n_folds", "2",
            "--final_fold", "1", "--n_epochs", str(N_EPOCHS), "--steps_per_epoch", str(STEPS), "--dim", "32",
            "--dim_pre", "32", "--batch_size", "8", "--buffer_size", "32", "--verbose", "2", "--job", "train_val",
            "--patience_stop", "100", "--patience_lr", "100", "--tta_number", "0", *extra]


def history_epochs(fold_dir: Path) -> list[int]:
    path = fold_dir / "history.csv"
    if not path.exists() or not path.read_text().strip():
        return []
    return pd.read_csv(path)["epoch"].astype(int).tolist()


@pytest.mark.slow  # trains, in fresh processes
def test_killed_training_resumes_from_its_last_finished_epoch(turtle_dir, turtle_records, tmp_path, capsys):
    run_dir = tmp_path / "run"
    fold_dir = run_dir / "fold_0"
    process, _, err_path = start_photoid(*train_argv(turtle_dir, run_dir), log_dir=tmp_path, name="train")
    wait_until(lambda: len(history_epochs(fold_dir)) >= 1, process, timeout=300, what="the first finished epoch",
               interval=0.05)
    assert kill(process) == -signal.SIGKILL, err_path.read_text()
    before = history_epochs(fold_dir)
    assert 1 <= len(before) < N_EPOCHS and before == list(range(len(before)))
    assert (fold_dir / "backup").is_dir() and not (fold_dir / "done.json").exists()

    code, stdout, err = run_photoid(capsys, *train_argv(turtle_dir, run_dir))
    assert code == 0, err
    epochs = history_epochs(fold_dir)
    resumed = epochs[len(before):]
    # Continued, not restarted: no epoch twice, the first resumed epoch after the last one logged, all epochs run.
    assert resumed and resumed[0] > before[-1], epochs
    assert epochs == sorted(set(epochs)) and epochs[-1] == N_EPOCHS - 1, epochs
    assert f"Epoch {N_EPOCHS}/{N_EPOCHS}" in stdout and "Epoch 1/" not in stdout
    # A finished fold keeps no backup; it has its summary, best weights and predictions.
    assert not (fold_dir / "backup").exists()
    done = pio.read_json(fold_dir / "done.json")
    assert done["epochs_run"] == len(epochs) and done["steps_per_epoch"] == STEPS
    assert (fold_dir / "best.weights.h5").is_file() and (run_dir / "preds" / "y_pred_val_fold_0_tta_0.npy").is_file()
    assert temporary_files(run_dir) == []


@pytest.mark.slow  # trains, in a fresh process
def test_ctrl_c_during_training_is_one_line(turtle_dir, turtle_records, tmp_path):
    run_dir = tmp_path / "run"
    process, out_path, err_path = start_photoid(*train_argv(turtle_dir, run_dir), log_dir=tmp_path, name="train")
    wait_until(lambda: "Epoch 1/" in out_path.read_text(), process, timeout=300, what="training to start",
               interval=0.05)
    code = kill(process, signal.SIGINT)
    assert code == 130, err_path.read_text()[-4000:]
    assert_one_line_interruption(err_path.read_text())
    assert temporary_files(run_dir) == []


# --- numerical faults ------------------------------------------------------------------------------------------------
# An absurd learning rate is not enough to get a NaN here: with --lr 1e12 the loss of this model climbs to ~1e25 and
# stays finite (batch normalisation bounds the activations). The fault is therefore injected: at the start of one
# epoch the head's kernel becomes NaN, as an overflow in a real run would leave it.

def poison_head_at(monkeypatch, epoch_to_poison: int) -> None:
    import tensorflow as tf
    import tf_keras

    from photoid.training import fold as train

    make_callbacks = train.make_callbacks

    def with_poison(cfg, fold_dir, weights_model, nan_guard):
        def poison(epoch, logs=None):
            if epoch == epoch_to_poison:
                kernel = weights_model.get_layer("dense").kernel
                kernel.assign(tf.fill(kernel.shape, float("nan")))
        return [tf_keras.callbacks.LambdaCallback(on_epoch_begin=poison),
                *make_callbacks(cfg, fold_dir, weights_model, nan_guard)]

    monkeypatch.setattr(train, "make_callbacks", with_poison)


@pytest.mark.slow  # trains
def test_nan_in_the_first_epoch_stops_the_fold_without_a_checkpoint(turtle_dir, turtle_records, tmp_path, capsys,
                                                                    monkeypatch):
    poison_head_at(monkeypatch, 0)
    run_dir = tmp_path / "run"
    code, _, err = run_photoid(capsys, *train_argv(turtle_dir, run_dir, "--job", "train"))
    assert code == 2
    assert "Traceback" not in err
    assert err.startswith("error: fold 0: the loss became NaN at epoch 1, batch 1; training stopped; "), err
    assert "no epoch ended with a finite loss, so there is no checkpoint. Try a lower --lr." in err
    # The NaN weights were not kept as the "best" checkpoint, whatever the validation accuracy of NaN rows said.
    assert not (run_dir / "fold_0" / "best.weights.h5").exists()
    assert not (run_dir / "fold_0" / "done.json").exists()


@pytest.mark.slow  # trains
def test_nan_after_good_epochs_keeps_the_best_checkpoint_so_far(turtle_dir, turtle_records, tmp_path, capsys,
                                                                monkeypatch):
    poison_head_at(monkeypatch, 2)
    run_dir = tmp_path / "run"
    fold_dir = run_dir / "fold_0"
    code, _, err = run_photoid(capsys, *train_argv(turtle_dir, run_dir, "--job", "train"))
    assert code == 2
    assert err.startswith("error: fold 0: the loss became NaN at epoch 3, batch 1; training stopped; "), err
    assert f"the best checkpoint so far is kept in {fold_dir / 'best.weights.h5'}" in err
    best = pio.read_json(fold_dir / "best.json")
    assert best["epoch"] in (1, 2) and np.isfinite(best["value"])
    history = pd.read_csv(fold_dir / "history.csv")
    assert list(history["epoch"]) == [0, 1, 2]
    assert np.isfinite(history["loss"][:2]).all() and not np.isfinite(history["loss"][2])

    from photoid.models.factory import build_models, load_weights_file

    n_classes = len((run_dir / "classes.txt").read_text(encoding="utf-8").split())
    model = build_models(backbone="simple-cnn", dim=32, n_classes=n_classes).predict
    load_weights_file(model, fold_dir / "best.weights.h5", n_classes)
    assert all(np.isfinite(w).all() for w in model.get_weights())


# --- atomic writes ---------------------------------------------------------------------------------------------------

class HalfWrittenError(OSError):
    """Stands for a full disk or a crash in the middle of writing a file."""


def test_a_submission_that_fails_midway_leaves_the_old_one(tmp_path, monkeypatch):
    from photoid.turtles.ensemble import write_submission

    path = tmp_path / "submission.csv"
    path.write_text("image_id,prediction1\nID_OLD,t_id_A\n", encoding="utf-8")

    def half_to_csv(frame, target, **kwargs):
        Path(target).write_text("image_id,predic", encoding="utf-8")
        raise HalfWrittenError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_to_csv)
    with pytest.raises(HalfWrittenError):
        write_submission(pd.DataFrame({"image_id": ["ID_NEW"], "prediction1": ["t_id_B"]}), path)
    assert path.read_text(encoding="utf-8") == "image_id,prediction1\nID_OLD,t_id_A\n"
    assert temporary_files(tmp_path) == []


@pytest.mark.parametrize("interruption", [HalfWrittenError("disk full"), KeyboardInterrupt()],
                         ids=["error", "ctrl-c"])
def test_predictions_and_reports_that_fail_midway_leave_the_old_files(tmp_path, monkeypatch, interruption):
    predictions, report = tmp_path / "preds" / "y_pred_test_fold_0_tta_0.npy", tmp_path / "cv_scores.json"
    pio.save_npy(predictions, np.eye(3, dtype=np.float32))
    pio.write_json(report, {"map5": 0.5})

    def half_save(target, array, allow_pickle=False):
        with open(target, "wb") as f:
            f.write(b"\x93NUMPY\x01\x00")
        raise interruption

    real_open = open

    def half_open(target, mode="r", **kwargs):
        f = real_open(target, mode, **kwargs)
        if "w" in mode:
            f.write('{"map5": 0.')
            f.close()
            raise interruption
        return f

    monkeypatch.setattr(np, "save", half_save)
    monkeypatch.setattr(pio, "open", half_open, raising=False)
    with pytest.raises(type(interruption)):
        pio.save_npy(predictions, np.zeros((3, 3), dtype=np.float32))
    with pytest.raises(type(interruption)):
        pio.write_json(report, {"map5": 0.9})
    monkeypatch.undo()
    assert np.array_equal(pio.load_npy(predictions), np.eye(3, dtype=np.float32))
    assert pio.read_json(report) == {"map5": 0.5}
    assert temporary_files(tmp_path) == []


def test_a_checkpoint_that_fails_midway_leaves_the_best_one(tmp_path, monkeypatch):
    from photoid.models.factory import build_models
    from photoid.training.fold import BestCheckpoint

    model = build_models(backbone="simple-cnn", dim=16, n_classes=3).predict
    checkpoint = BestCheckpoint(tmp_path, "val_loss", model)
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"loss": 1.0, "val_loss": 1.0})
    saved = (tmp_path / "best.weights.h5").read_bytes()

    def half_save_weights(target, *args, **kwargs):
        Path(target).write_bytes(saved[:100])
        raise HalfWrittenError("disk full")

    monkeypatch.setattr(model, "save_weights", half_save_weights)
    with pytest.raises(HalfWrittenError):
        checkpoint.on_epoch_end(1, {"loss": 0.5, "val_loss": 0.5})
    monkeypatch.undo()
    assert (tmp_path / "best.weights.h5").read_bytes() == saved
    assert pio.read_json(tmp_path / "best.json") == {"epoch": 1, "monitor": "val_loss", "value": 1.0}
    assert temporary_files(tmp_path) == []
    # An epoch whose loss became NaN never replaces it either, whatever its monitor says.
    checkpoint.on_epoch_end(2, {"loss": float("nan"), "val_loss": 0.1})
    assert pio.read_json(tmp_path / "best.json")["epoch"] == 1


# Where CPython runs a pending signal's handler, so where a Ctrl-C's KeyboardInterrupt is raised: on entering a
# function (RESUME), on a loop's backward jump, and just after a call returns.
CHECKS_SIGNALS_AT = {"RESUME", "JUMP_BACKWARD"}
CHECKS_SIGNALS_AFTER = {"CALL", "CALL_KW", "CALL_FUNCTION_EX"}


@functools.lru_cache(maxsize=None)
def signal_checks(code) -> frozenset[int]:
    """Offsets of the instructions of `code` before which a pending signal's handler may run."""
    import dis

    instructions = list(dis.get_instructions(code))
    return frozenset(now.offset for before, now in zip([None, *instructions], instructions)
                     if now.opname in CHECKS_SIGNALS_AT or (before and before.opname in CHECKS_SIGNALS_AFTER))


def ctrl_c_at_signal_check(n: int):
    """A trace function raising KeyboardInterrupt at the n-th signal check run in `photoid.core.io`: a Ctrl-C that
    arrives just then. (A trace function that raises is unset, so the cleanup runs untraced.) Finalisers are left
    out: Python reports an exception raised in one and carries on."""
    checks = 0

    def per_instruction(frame, event, arg):
        nonlocal checks
        if event in ("call", "opcode") and frame.f_lasti in signal_checks(frame.f_code):
            checks += 1
            if checks == n:
                raise KeyboardInterrupt
        return per_instruction

    def per_call(frame, event, arg):
        in_finaliser = any(f.f_code.co_name == "__del__" for f in (frame, frame.f_back) if f is not None)
        if frame.f_code.co_filename != pio.__file__ or in_finaliser:
            return None
        frame.f_trace_opcodes = True
        return per_instruction(frame, event, arg)  # the call event is the frame's RESUME

    return per_call


def test_ctrl_c_at_any_signal_check_of_an_atomic_write_leaves_no_temporary_file(tmp_path):
    # `photoid tfrecords` interrupted just as it began its next shard once left that shard's temporary file: the
    # Ctrl-C landed after the file was created and before the code that removes it was armed.
    target = tmp_path / "report.json"
    interrupted = 0
    while True:
        pio.write_text(target, "old")
        sys.settrace(ctrl_c_at_signal_check(interrupted + 1))
        try:
            pio.write_text(target, "new")
        except KeyboardInterrupt:
            interrupted += 1
        else:
            break
        finally:
            sys.settrace(None)
        assert temporary_files(tmp_path) == [], f"Ctrl-C at signal check {interrupted}"
        assert target.read_text(encoding="utf-8") in ("old", "new"), f"Ctrl-C at signal check {interrupted}"
    assert interrupted > 10  # the write was interrupted at each of its checks (the tracing did work)
    assert target.read_text(encoding="utf-8") == "new" and temporary_files(tmp_path) == []


def test_damaged_prediction_and_report_files_are_named_not_tracebacks(tmp_path):
    predictions, report = tmp_path / "y.npy", tmp_path / "r.json"
    pio.save_npy(predictions, np.ones((4, 2), dtype=np.float32))
    predictions.write_bytes(predictions.read_bytes()[:-8])
    report.write_text('{"map5": 0.', encoding="utf-8")
    with pytest.raises(PhotoidError, match=r"y\.npy cannot be read as a numeric array file"):
        pio.load_npy(predictions)
    with pytest.raises(PhotoidError, match=r"r\.json is not a valid JSON file"):
        pio.read_json(report)


# --- Ctrl-C that TensorFlow swallows ---------------------------------------------------------------------------------
# Seen while a training step is traced: the KeyboardInterrupt comes out as a RuntimeError, or is swallowed and the
# tracer loops forever. These commands do the same, deterministically.
MISHANDLING_COMMAND = """
import sys, time
from photoid import cli
cli.INTERRUPT_GRACE_S = float(sys.argv[1])

def command():
    print("running", flush=True)
    while True:
        try:
            time.sleep(0.05)
        except KeyboardInterrupt:
            if sys.argv[2] == "converts":
                raise RuntimeError("pybind11::error_already_set: REPLACED BY KeyboardInterrupt")

sys.exit(cli.run_guarded(command))
"""


@pytest.mark.parametrize("grace, presses, mishandling", [(1.0, 1, "swallows"), (600.0, 2, "swallows"),
                                                         (600.0, 1, "converts")],
                         ids=["swallowed-until-the-grace-runs-out", "swallowed-then-second-ctrl-c", "converted"])
def test_ctrl_c_ends_a_command_that_mishandles_it(tmp_path, grace, presses, mishandling):
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "wb") as out_file, open(err, "wb") as err_file:
        process = spawn([sys.executable, "-c", MISHANDLING_COMMAND, grace, mishandling], stdout=out_file,
                        stderr=err_file)
    with reaped(process):
        wait_until(lambda: "running" in out.read_text(), process, timeout=120, what="the command to start")
        started = time.monotonic()
        for _ in range(presses):
            process.send_signal(signal.SIGINT)
            time.sleep(0.3)
        assert process.wait(timeout=30) == 130
        assert time.monotonic() - started < 15
    assert err.read_text().strip() == "interrupted: stopped by the user; finished outputs are complete, nothing " \
                                      "half-written was kept"


@pytest.mark.slow  # in a fresh Python process
def test_ctrl_c_inside_a_trace_is_held_until_the_trace_is_over():
    # A KeyboardInterrupt raised while TensorFlow traced the first training batch once crashed the process with a
    # segmentation fault (about 1 run in 40 on a loaded machine). Here the Ctrl-C lands inside a trace every time.
    import tensorflow as tf

    from photoid.cli import run_guarded

    events = []

    @tf.function
    def traced(x):
        signal.raise_signal(signal.SIGINT)  # the handler runs here, inside the trace
        events.append(("traced to the end", tf.inside_function()))
        return x + 1

    def command():
        traced(tf.constant(1.0))
        events.append(("called", tf.inside_function()))
        try:
            time.sleep(5)  # the held Ctrl-C is raised within RETRY_S
        except KeyboardInterrupt:
            events.append(("interrupted", tf.inside_function()))
            raise

    # Python's own Ctrl-C handling, whatever this pytest inherited (under nohup, SIGINT is ignored).
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert run_guarded(command) == 130
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert events == [("traced to the end", True), ("called", False), ("interrupted", False)]


def test_an_error_without_ctrl_c_is_not_taken_for_one():
    from photoid.cli import run_guarded

    def broken():
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        run_guarded(broken)


# --- however the suite was started -----------------------------------------------------------------------------------
# `make test &` from a script, or under nohup, starts pytest with SIGINT and SIGQUIT ignored, its stdin closed or on
# /dev/null, perhaps from another folder, with a strict umask, the C locale and no HOME. The children of the Ctrl-C
# tests must still get a Ctrl-C, so they are run here from such a pytest.
HOSTILE_START = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGQUIT, signal.SIG_IGN)
os.umask(0o077)
os.close(0)
os.execv(sys.executable, [sys.executable, "-m", "pytest", *sys.argv[1:]])
"""


@pytest.mark.slow  # pytest and photoid in fresh processes
def test_ctrl_c_tests_pass_when_pytest_starts_with_sigint_ignored(tmp_path):
    env = {key: value for key, value in subprocess_env().items() if key not in ("HOME", "LANG", "LANGUAGE")}
    env["LC_ALL"] = "C"
    selected = "mishandles or ctrl_c_during_record_building"
    done = subprocess.run([sys.executable, "-c", HOSTILE_START, "-q", "-p", "no:cacheprovider",
                           "--basetemp", str(tmp_path / "basetemp"), "-k", selected, __file__],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "4 passed" in done.stdout, done.stdout[-4000:]
