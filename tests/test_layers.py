"""GeM pooling and ArcFace: values against numpy references, gradients, and save/reload round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest

import photoid  # noqa: F401  (selects tf-keras before TensorFlow is imported)
import tensorflow as tf
import tf_keras

from photoid.models.layers import ArcFace, GeMPooling2D


def numpy_arcface(x, w, labels, scale, margin):
    """ArcFace written from its definition with arccos: s·cos(θ + m) on the true class while θ + m < π,
    s·(cos θ − m·sin m) past it, s·cos θ on every other class."""
    cos = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=0, keepdims=True))
    logits = cos.copy()
    for i, label in enumerate(labels):
        theta = math.acos(cos[i, label])
        if theta + margin < math.pi:
            logits[i, label] = math.cos(theta + margin)
        else:
            logits[i, label] = cos[i, label] - margin * math.sin(margin)
    return scale * logits


def built_arcface(w: np.ndarray, **kwargs) -> ArcFace:
    layer = ArcFace(n_classes=w.shape[1], **kwargs)
    layer.build((None, w.shape[0]))
    layer.kernel.assign(w)
    return layer


def test_arcface_applies_the_margin_to_the_true_class_only():
    x = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [-1.0, 0.1, 0.0]], np.float32)
    w = np.array([[1.0, 0.0, -1.0, 0.5], [0.0, 1.0, 0.0, 0.5], [0.0, 0.0, 0.05, 0.7]], np.float32)
    labels = np.array([0, 1, 0])   # the third sample sits almost opposite its class: θ + m > π
    layer = built_arcface(w, scale=30.0, margin=0.5)
    logits = layer([tf.constant(x), tf.constant(labels)], training=False).numpy()
    expected = numpy_arcface(x.astype(np.float64), w.astype(np.float64), labels, 30.0, 0.5)
    np.testing.assert_allclose(logits, expected, atol=2e-4)
    # Every other class keeps the plain scaled cosine.
    plain = layer(tf.constant(x)).numpy()
    mask = np.ones_like(plain, bool)
    mask[np.arange(3), labels] = False
    np.testing.assert_allclose(logits[mask], plain[mask], atol=1e-5)
    assert logits[0, 0] == pytest.approx(30 * math.cos(0.5), abs=1e-4)      # θ = 0 → cos(m)
    assert logits[2, 0] < plain[2, 0]                                        # the fallback still penalises


def test_arcface_without_labels_returns_scaled_cosine_and_float32_under_mixed_precision():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 6)).astype(np.float32)
    w = rng.normal(size=(6, 4)).astype(np.float32)
    layer = built_arcface(w, scale=16.0, margin=0.4)
    cos = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=0, keepdims=True))
    np.testing.assert_allclose(layer(tf.constant(x)).numpy(), 16.0 * cos, atol=1e-4)
    tf_keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = ArcFace(n_classes=4)
        out = mixed(tf.constant(x, tf.float16))
        assert out.dtype == tf.float32 and mixed.kernel.dtype == tf.float32
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")


def test_arcface_sub_centers_take_the_closest_centre_of_each_class():
    x = np.array([[1.0, 0.0]], np.float32)
    # Class 0 has centres at 90° and 0°, class 1 at 180° and 45°: the closest ones are 0° and 45°.
    w = np.array([[0.0, 1.0, -1.0, 1.0], [1.0, 0.0, 0.0, 1.0]], np.float32)
    layer = ArcFace(n_classes=2, scale=1.0, margin=0.3, sub_centers=2)
    layer.build((None, 2))
    layer.kernel.assign(w)
    np.testing.assert_allclose(layer(tf.constant(x)).numpy(), [[1.0, math.cos(math.pi / 4)]], atol=1e-5)


def test_arcface_random_margin_only_in_training():
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(64, 8)).astype(np.float32))
    labels = tf.constant(rng.integers(0, 3, 64))
    layer = ArcFace(n_classes=3, margin=0.5, margin_std=0.05, seed=3)
    fixed = ArcFace.from_config(layer.get_config() | {"margin_std": 0.0})
    layer.build((None, 8))
    fixed.build((None, 8))
    fixed.set_weights(layer.get_weights())
    np.testing.assert_allclose(layer([x, labels], training=False), fixed([x, labels], training=False), atol=1e-6)
    trained = layer([x, labels], training=True).numpy()
    reference = fixed([x, labels], training=False).numpy()
    diff = np.abs(trained - reference)
    true_class = np.zeros_like(diff, bool)
    true_class[np.arange(64), labels.numpy()] = True
    assert diff[~true_class].max() < 1e-5
    assert (diff[true_class] > 1e-4).mean() > 0.9       # every sample drew its own margin


def test_arcface_gradient_reaches_embeddings_and_centres():
    rng = np.random.default_rng(2)
    x = tf.Variable(rng.normal(size=(4, 5)).astype(np.float32))
    labels = tf.constant([0, 1, 2, 1])
    layer = ArcFace(n_classes=3, margin_std=0.0125)
    with tf.GradientTape() as tape:
        logits = layer([x, labels], training=True)
        loss = tf.reduce_mean(tf_keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
    grad_x, grad_w = tape.gradient(loss, [x, layer.kernel])
    for grad in (grad_x, grad_w):
        assert grad is not None and np.isfinite(grad.numpy()).all() and np.abs(grad.numpy()).max() > 0


def test_arcface_gradient_is_finite_on_a_class_centre():
    centre = np.array([[1.0, 2.0, 2.0]], np.float32)
    x = tf.Variable(centre)
    layer = built_arcface(centre.T.copy(), margin=0.5)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer([x, tf.constant([0])], training=True))
    assert np.isfinite(tape.gradient(loss, x).numpy()).all()


def test_gem_p1_is_average_pooling_and_large_p_approaches_max():
    rng = np.random.default_rng(3)
    x = rng.uniform(0.1, 2.0, size=(2, 5, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(GeMPooling2D(p=1.0)(x).numpy(), x.mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(GeMPooling2D(p=60.0)(x).numpy(), x.max(axis=(1, 2)), rtol=0.05)
    p3 = GeMPooling2D(p=3.0)(x).numpy()
    np.testing.assert_allclose(p3, np.cbrt((x ** 3).mean(axis=(1, 2))), rtol=1e-5)
    # Negative activations are floored at eps instead of producing NaN.
    assert np.isfinite(GeMPooling2D()(-x).numpy()).all()


def test_gem_p_is_learned_only_when_trainable():
    trainable = GeMPooling2D(trainable_p=True)
    frozen = GeMPooling2D(trainable_p=False)
    trainable.build((None, 2, 2, 1))
    frozen.build((None, 2, 2, 1))
    assert len(trainable.trainable_weights) == 1 and len(frozen.trainable_weights) == 0


def tiny_model(seed: int = 0) -> tf_keras.Model:
    tf_keras.utils.set_random_seed(seed)
    image = tf_keras.Input((6, 6, 3), name="image")
    label = tf_keras.Input((), dtype="int32", name="label")
    features = tf_keras.layers.Conv2D(4, 3, activation="relu")(image)
    embedding = tf_keras.layers.Dense(8)(GeMPooling2D(p=2.5)(features))
    logits = ArcFace(n_classes=5, margin=0.4, margin_std=0.01, sub_centers=2)([embedding, label])
    return tf_keras.Model([image, label], logits)


def test_save_and_reload_give_identical_outputs(tmp_path):
    model = tiny_model()
    rng = np.random.default_rng(4)
    images = rng.uniform(size=(3, 6, 6, 3)).astype(np.float32)
    labels = np.array([0, 4, 2], np.int32)
    expected = model([images, labels], training=False).numpy()

    model.save(tmp_path / "model.keras")
    reloaded = tf_keras.models.load_model(tmp_path / "model.keras")   # no custom_objects: registered
    np.testing.assert_array_equal(reloaded([images, labels], training=False).numpy(), expected)
    arc = [layer for layer in reloaded.layers if isinstance(layer, ArcFace)][0]
    assert arc.get_config()["sub_centers"] == 2 and arc.get_config()["margin_std"] == 0.01

    model.save_weights(tmp_path / "weights.h5")
    fresh = tiny_model(seed=99)
    assert not np.array_equal(fresh([images, labels], training=False).numpy(), expected)
    fresh.load_weights(tmp_path / "weights.h5")
    np.testing.assert_array_equal(fresh([images, labels], training=False).numpy(), expected)
