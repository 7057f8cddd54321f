"""Keras layers of the Where's Whale-do winner's embedding head: GeM pooling, the neck's repeated vector and an
ArcFace classifier.

All follow the Keras layer contract (every init argument stored and returned by `get_config`, extra keyword
arguments passed to `Layer`) and are registered under the package name "photoid", so a model saved in the
`.keras` format reloads without `custom_objects`.
"""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras

# Floor under sin²θ = 1 - cos²θ before the square root. Where an embedding sits exactly on its class centre
# (sin θ = 0) the floor is taken, so no gradient flows through sqrt at 0 (whose derivative is infinite); the logit
# it changes moves by at most scale·sin(m)·1e-6.
_SIN2_FLOOR = 1e-12


@tf_keras.utils.register_keras_serializable(package="photoid")
class GeMPooling2D(tf_keras.layers.Layer):
    """Generalized-mean pooling over height and width: `(mean(max(x, eps) ** p)) ** (1 / p)` per channel.

    p = 1 is average pooling and p → ∞ approaches max pooling; with `trainable_p` the network learns where in
    between to sit (the winner started at p = 3). The arithmetic runs in float32 even under mixed precision,
    because `x ** p` of small float16 activations underflows.

    Args:
        p: initial exponent (> 0).
        eps: floor applied to activations before the power, so that negative or zero inputs stay defined.
        trainable_p: learn `p` with the rest of the network (True) or keep it fixed.
        **kwargs: passed to `tf_keras.layers.Layer` (name, dtype, ...).

    Input shape: `(batch, height, width, channels)`. Output shape: `(batch, channels)`.

    Example:
        >>> features = tf_keras.Input((16, 16, 32))
        >>> pooled = GeMPooling2D(p=3.0)(features)   # shape (None, 32)
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6, trainable_p: bool = True, **kwargs):
        super().__init__(**kwargs)
        if p <= 0:
            raise ValueError(f"GeMPooling2D p must be positive, got {p}")
        if eps <= 0:
            raise ValueError(f"GeMPooling2D eps must be positive, got {eps}")
        self.p = float(p)
        self.eps = float(eps)
        self.trainable_p = bool(trainable_p)
        self.input_spec = tf_keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        self.p_weight = self.add_weight(
            name="p", shape=(), dtype="float32", trainable=self.trainable_p,
            initializer=tf_keras.initializers.Constant(self.p))
        super().build(input_shape)

    def call(self, inputs):
        x = tf.cast(inputs, tf.float32)
        p = tf.cast(self.p_weight, tf.float32)
        pooled = tf.reduce_mean(tf.pow(tf.maximum(x, self.eps), p), axis=[1, 2])
        return tf.cast(tf.pow(pooled, 1.0 / p), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        return tf.TensorShape([input_shape[0], input_shape[3]])

    def get_config(self):
        config = super().get_config()
        config.update({"p": self.p, "eps": self.eps, "trainable_p": self.trainable_p})
        return config


@tf_keras.utils.register_keras_serializable(package="photoid")
class ArcFace(tf_keras.layers.Layer):
    """Additive angular margin logits (ArcFace), optionally with an ElasticFace-Arc random margin and sub-centres.

    Embeddings and class centres are L2-normalised, so a logit is `scale * cos θ` between an embedding and a
    centre. For the true class of each sample (labels given) θ is widened by the margin m: the logit becomes
    `scale * cos(θ + m)`. Beyond θ + m = π that cosine would rise again and reward a worse angle, so there
    the standard monotonic fallback `cos θ - m * sin m` is used instead (with `easy_margin`, the margin is applied
    only where cos θ > 0 and the plain cosine is kept elsewhere). sin θ is computed as sqrt(1 - cos²θ) with a
    tiny floor, so its gradient stays finite for an embedding lying exactly on its class centre.

    With `margin_std > 0` and `training=True`, each sample draws its own margin from N(margin, margin_std) —
    the ElasticFace-Arc loss of the Where's Whale-do winner. Outside training the margin is fixed at `margin`,
    so validation losses are deterministic. Without labels (inference) the layer returns `scale * cos θ`.

    With `sub_centers = k > 1` each class has k centres and the cosine to a class is the largest of its k.

    The layer computes in float32 (its dtype defaults to "float32" whatever the global mixed-precision policy),
    so its logits feed a float32 softmax cross-entropy.

    Args:
        n_classes: number of classes (individuals).
        scale: the logit scale s (30 for the winner).
        margin: the additive angular margin m in radians (0.5 for the winner).
        margin_std: standard deviation of the per-sample margin during training (0.0125 for the winner);
            0 gives plain ArcFace.
        sub_centers: centres per class (1 = plain ArcFace).
        easy_margin: apply the margin only where cos θ > 0 instead of the monotonic fallback.
        kernel_initializer: initializer of the class centres, shape `(embedding_dim, n_classes * sub_centers)`.
        seed: seed of the random margins (None: drawn from TensorFlow's global seed).
        **kwargs: passed to `tf_keras.layers.Layer`.

    Call arguments:
        inputs: `[embeddings, labels]` (labels: integer class indices, shape `(batch,)` or `(batch, 1)`)
            or `embeddings` alone.
        training: Python bool; the random margin is drawn only when True.

    Example:
        >>> embeddings = tf_keras.Input((128,))
        >>> labels = tf_keras.Input((), dtype="int32")
        >>> logits = ArcFace(n_classes=788, margin_std=0.0125)([embeddings, labels])
        >>> model = tf_keras.Model([embeddings, labels], logits)
    """

    def __init__(self, n_classes: int, scale: float = 30.0, margin: float = 0.5, margin_std: float = 0.0,
                 sub_centers: int = 1, easy_margin: bool = False, kernel_initializer="glorot_uniform",
                 seed: int | None = None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if int(n_classes) < 1:
            raise ValueError(f"ArcFace n_classes must be at least 1, got {n_classes}")
        if int(sub_centers) < 1:
            raise ValueError(f"ArcFace sub_centers must be at least 1, got {sub_centers}")
        if scale <= 0:
            raise ValueError(f"ArcFace scale must be positive, got {scale}")
        if not 0 <= margin < math.pi / 2:
            raise ValueError(f"ArcFace margin must be in [0, pi/2) radians, got {margin}")
        if margin_std < 0:
            raise ValueError(f"ArcFace margin_std must be non-negative, got {margin_std}")
        self.n_classes = int(n_classes)
        self.scale = float(scale)
        self.margin = float(margin)
        self.margin_std = float(margin_std)
        self.sub_centers = int(sub_centers)
        self.easy_margin = bool(easy_margin)
        self.kernel_initializer = tf_keras.initializers.get(kernel_initializer)
        self.seed = seed

    def build(self, input_shape):
        dim = _embedding_shape(input_shape)[-1]
        if dim is None:
            raise ValueError("ArcFace needs a known embedding size (last axis of its input)")
        self.kernel = self.add_weight(
            name="centers", shape=(int(dim), self.n_classes * self.sub_centers),
            initializer=self.kernel_initializer, dtype="float32", trainable=True)
        super().build(input_shape)

    def cosine(self, embeddings):
        """Cosine between each (normalised) embedding and its closest sub-centre of every class."""
        x = tf.math.l2_normalize(tf.cast(embeddings, tf.float32), axis=1)
        w = tf.math.l2_normalize(tf.cast(self.kernel, tf.float32), axis=0)
        cos = tf.matmul(x, w)
        if self.sub_centers > 1:
            cos = tf.reduce_max(tf.reshape(cos, (-1, self.n_classes, self.sub_centers)), axis=2)
        # Rounding can leave a cosine of normalised vectors a hair outside [-1, 1].
        return tf.clip_by_value(cos, -1.0, 1.0)

    def call(self, inputs, training=None):
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 2:
                raise ValueError(f"ArcFace takes [embeddings, labels] or embeddings, got {len(inputs)} inputs")
            embeddings, labels = inputs
        else:
            embeddings, labels = inputs, None
        cos = self.cosine(embeddings)
        if labels is None:
            return self.scale * cos
        labels = tf.reshape(tf.cast(labels, tf.int32), (-1,))
        margin = self._margins(tf.shape(labels)[0], bool(training))[:, None]
        sin = tf.sqrt(tf.maximum(1.0 - tf.square(cos), _SIN2_FLOOR))
        with_margin = cos * tf.cos(margin) - sin * tf.sin(margin)   # cos(θ + m)
        if self.easy_margin:
            with_margin = tf.where(cos > 0.0, with_margin, cos)
        else:
            # θ + m < π  <=>  cos θ > cos(π - m); past it, keep the logit decreasing in θ.
            with_margin = tf.where(cos > tf.cos(math.pi - margin), with_margin, cos - tf.sin(margin) * margin)
        is_true_class = tf.one_hot(labels, self.n_classes, on_value=True, off_value=False, dtype=tf.bool)
        return self.scale * tf.where(is_true_class, with_margin, cos)

    def _margins(self, batch_size, training: bool):
        """One margin per sample: random around `margin` while training with `margin_std`, fixed otherwise."""
        if training and self.margin_std > 0:
            return tf.random.normal((batch_size,), self.margin, self.margin_std, dtype=tf.float32, seed=self.seed)
        return tf.fill((batch_size,), tf.constant(self.margin, tf.float32))

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([_embedding_shape(input_shape)[0], self.n_classes])

    def get_config(self):
        config = super().get_config()
        config.update({
            "n_classes": self.n_classes,
            "scale": self.scale,
            "margin": self.margin,
            "margin_std": self.margin_std,
            "sub_centers": self.sub_centers,
            "easy_margin": self.easy_margin,
            "kernel_initializer": tf_keras.initializers.serialize(self.kernel_initializer),
            "seed": self.seed,
        })
        return config


@tf_keras.utils.register_keras_serializable(package="photoid")
class RepeatFeatures(tf_keras.layers.Layer):
    """The last axis concatenated `copies` times: the winner's B5 neck feeds 3 copies of its pooled vector to
    BatchNorm, so each copy gets its own scale and shift before the Dense layer sums them."""

    def __init__(self, copies: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.copies = int(copies)

    def call(self, inputs):
        return tf.concat([inputs] * self.copies, axis=-1)

    def compute_output_shape(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        width = input_shape[-1]
        return input_shape[:-1].concatenate([None if width is None else width * self.copies])

    def get_config(self):
        config = super().get_config()
        config.update({"copies": self.copies})
        return config


def _embedding_shape(input_shape) -> tf.TensorShape:
    """The embeddings' shape, whether the layer was given `[embeddings, labels]` or the embeddings alone."""
    if isinstance(input_shape, (list, tuple)) and input_shape and \
            isinstance(input_shape[0], (list, tuple, tf.TensorShape)):
        return tf.TensorShape(input_shape[0])
    return tf.TensorShape(input_shape)
