"""The last differences from the Turtle Recall original's own code, closed: the shuffle buffer turned off with
`--buffer_size None`, partial runs refused by the ensemble, a batch size other than the recipe's and its learning
rate, and TF 2.8's Adam arithmetic."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import TINY_DIM, tiny_args


def test_buffer_size_none_turns_the_shuffle_buffer_off(turtle_dir, turtle_records, tmp_path):
    from photoid.core.errors import PhotoidError
    from photoid.inference.fold_models import read_record_ids
    from photoid.records.reader import build_dataset, fold_files
    from photoid.runs.config import resolve_config

    cfg = resolve_config(tiny_args(turtle_dir, tmp_path, buffer_size="None"))
    assert cfg.buffer_size == 0   # the original: `--buffer_size None`, no ds.shuffle (it reached shuffle(-1) here)
    with pytest.raises(PhotoidError, match="buffer_size must be 0 or more"):
        resolve_config(tiny_args(turtle_dir, tmp_path, buffer_size=-2))

    # Without the buffer a one-file training stream comes in record order, epoch after epoch.
    files = fold_files(turtle_records, [0])
    order = read_record_ids(files)
    ds = build_dataset(files, dim=TINY_DIM, dim_pre=TINY_DIM, batch_size=len(order), training=True, aug_number=0,
                       buffer_size=cfg.buffer_size, seed=1, with_ids=True)
    for (_, _, ids), _ in zip(ds, range(2)):
        assert [i.decode() for i in ids.numpy()] == order
    shuffled = build_dataset(files, dim=TINY_DIM, dim_pre=TINY_DIM, batch_size=len(order), training=True,
                             aug_number=0, buffer_size=256, seed=1, with_ids=True)
    assert [i.decode() for i in next(iter(shuffled))[2].numpy()] != order


def _partial_copy(trained_run, tmp_path):
    """The tiny run with fold 1 no longer finished (its predictions stay, as after a run stopped part-way)."""
    run = tmp_path / "partial"
    shutil.copytree(trained_run, run)
    (run / "fold_1" / "done.json").unlink()
    return run


def test_the_ensemble_refuses_a_run_with_missing_folds_unless_allow_partial(trained_run, turtle_dir, tmp_path,
                                                                          capsys):
    from photoid.cli import main

    run = _partial_copy(trained_run, tmp_path)
    out = tmp_path / "submission.csv"
    assert main(["ensemble", str(run), "--data_dir", str(turtle_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "fold(s) [1] of 2 have no test predictions" in err and "--allow_partial" in err
    assert not out.exists()
    assert main(["ensemble", str(run), "--data_dir", str(turtle_dir), "--out", str(out), "--allow_partial"]) == 0
    printed = capsys.readouterr().out
    assert "warning:" in printed and "fold(s) [1] of 2" in printed and "averaged 2 test prediction files" in printed   # fold 0, TTA 0 and 1
    # Folds chosen by name are the user's choice: no refusal.
    assert main(["ensemble", str(run), "--data_dir", str(turtle_dir), "--out", str(out), "--folds", "0"]) == 0
    # A complete run is averaged as before.
    assert main(["ensemble", str(trained_run), "--data_dir", str(turtle_dir), "--out", str(out)]) == 0


def test_a_batch_size_other_than_the_recipes_says_what_it_does_to_the_learning_rate(turtle_dir, tmp_path):
    from photoid.core.errors import PhotoidError
    from photoid.runs.config import batch_size_note, resolve_config

    def cfg(**overrides):
        args = tiny_args(turtle_dir, tmp_path, **overrides)
        args.batch_size = overrides.get("batch_size")   # tiny_args sets 16; here only what the test gives
        return resolve_config(args)

    assert batch_size_note(cfg(model="ef1b7")) is None
    kept = cfg(model="ef1b7", batch_size=16)   # run_training.sh's one-GPU example: the TPU's 64 → 16
    assert kept.lr == 5e-4
    assert batch_size_note(kept) == ("batch size 16, not the recipe's 64: the learning rate stays the recipe's "
                                     "0.0005 (set for batch 64); --scale_lr true scales it linearly to 0.000125")
    scaled = cfg(model="ef1b7", batch_size=16, scale_lr="true")
    assert scaled.lr == pytest.approx(1.25e-4)
    assert batch_size_note(scaled) == ("batch size 16, not the recipe's 64: learning rate 0.000125, the recipe's "
                                       "0.0005 scaled linearly (--scale_lr)")
    assert "learning rate 0.0003 as given" in batch_size_note(cfg(model="ef1b7", batch_size=16, lr=3e-4))
    with pytest.raises(PhotoidError, match="--scale_lr scales the recipe's learning rate"):
        cfg(model="ef1b7", batch_size=16, scale_lr="true", lr=1e-4)


def _apply_adam_kernel(var, grads, lr, beta1=0.9, beta2=0.999, epsilon=1e-7):
    """TensorFlow's ResourceApplyAdam (training_ops.cc), which TF 2.8's tf.keras.optimizers.Adam ran, in float32."""
    f32 = np.float32
    var, m, v = var.astype(f32), np.zeros_like(var, f32), np.zeros_like(var, f32)
    for step, g in enumerate(grads, 1):
        beta1_power, beta2_power = f32(beta1) ** f32(step), f32(beta2) ** f32(step)
        alpha = f32(lr) * np.sqrt(f32(1) - beta2_power) / (f32(1) - beta1_power)
        m = m + (g - m) * (f32(1) - f32(beta1))
        v = v + (g * g - v) * (f32(1) - f32(beta2))
        var = var - (m * alpha) / (np.sqrt(v) + f32(epsilon))
    return var


def test_adam_by_default_is_tf_2_8s_kernel():
    import tensorflow as tf
    import tf_keras

    from photoid.models.factory import compile_for_training, make_optimizer

    model = tf_keras.Sequential([tf_keras.layers.Dense(3, input_shape=(4,))])
    compile_for_training(model, 1e-3)
    assert type(model.optimizer) is tf_keras.optimizers.legacy.Adam   # TF 2.8's tf.keras.optimizers.Adam
    rng = np.random.default_rng(0)
    start = rng.normal(size=(64,)).astype(np.float32)
    grads = [rng.normal(size=(64,)).astype(np.float32) * scale for scale in (1.0, 1e-3, 10.0, 0.5, 1e-6)]
    expected = _apply_adam_kernel(start, grads, 1e-3)
    for name in ("adam", "adam_keras"):
        var = tf.Variable(start)
        optimizer = make_optimizer(name, 1e-3)
        for g in grads:
            optimizer.apply_gradients([(tf.constant(g), var)])
        # The same rule: both within float32 rounding of the kernel's arithmetic (the newer one by other operations).
        np.testing.assert_allclose(var.numpy(), expected, rtol=2e-6, atol=1e-8, err_msg=name)
