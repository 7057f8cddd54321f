"""Models: backbone → pooling → (embedding) → head, built from the resolved configuration.

The softmax model is a `Sequential` named `model` whose layers are named as the original solution's
(`efficientnet-b7` → `global_average_pooling2d` → `dense`), so the original's published weight file loads as it
is. The ArcFace model takes `[image, label]` in training (the margin needs the label) and gives class
probabilities from `scale · cos` without the margin at inference. Every model also yields an embedding model:
the image → the L2-normalisable vector that retrieval and the catalogue use.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf
import tf_keras

from photoid.core.errors import PhotoidError
from photoid.models.backbones import (
    WEIGHTS_SUFFIXES,
    build_backbone,
    head_initializers,
    is_weights_file,
)

layers = tf_keras.layers
KERAS_ARCHIVE_WEIGHTS = "model.weights.h5"  # where a .keras archive keeps the weights


@dataclass
class Models:
    train: tf_keras.Model  # what fit() trains (ArcFace: inputs [image, label])
    predict: tf_keras.Model  # image → class probabilities
    embed: tf_keras.Model  # image → embedding (pooled features or the embedding layer)


def build_models(
    *,
    backbone: str,
    dim: int,
    n_classes: int,
    weights: str = "none",
    pooling: str = "avg",
    head: str = "softmax",
    embedding_size: int = 0,
    dropout: float = 0.0,
    arcface_scale: float = 30.0,
    arcface_margin: float = 0.5,
    arcface_margin_std: float = 0.0,
    arcface_sub_centers: int = 1,
    arcface_init_std: float = 0.01,
    neck_kind: str = "dense_bn",
    drop_connect_rate: float = -1.0,
    input_norm: str = "unit",
) -> Models:
    features = build_backbone(backbone, (dim, dim, 3), weights, drop_connect_rate=drop_connect_rate)
    # Pixels arrive in [0, 1]; the scaling is part of the model, so every path that embeds a photo shares it.
    scale = [input_scaling(input_norm)] if input_norm != "unit" else []
    neck = []
    if len(features.output_shape) == 4:  # transformers (BEiT) already pool their tokens
        if pooling == "gem":
            from photoid.models.layers import GeMPooling2D

            neck.append(GeMPooling2D(name="gem_pooling2d"))
        else:
            neck.append(layers.GlobalAveragePooling2D(name="global_average_pooling2d"))
    if dropout > 0:
        neck.append(layers.Dropout(dropout, name="dropout"))
    neck += embedding_layers(neck_kind, embedding_size, pooled_width=features.output_shape[-1])

    if head == "softmax":
        # float32 head: under mixed precision the softmax must not run in float16.
        model = tf_keras.Sequential(
            [*scale, features, *neck, layers.Dense(n_classes, activation="softmax", dtype="float32", name="dense",
                                                    **head_initializers(backbone))],
            name="model",
        )
        model.build((None, dim, dim, 3))
        # The head's input is the embedding. (A backbone without neck, BEiT, has no output in this graph of its own:
        # its `.output` belongs to its inner graph, which Keras refuses to connect to the Sequential's input.)
        embed = tf_keras.Model(model.inputs, model.get_layer("dense").input, name="embedding_model")
        return Models(train=model, predict=model, embed=embed)

    from photoid.models.layers import ArcFace

    image = layers.Input((dim, dim, 3), name="image")
    label = layers.Input((), dtype="int32", name="label")
    x = image
    for layer in [*scale, features, *neck]:
        x = layer(x)
    arcface = ArcFace(
        n_classes,
        scale=arcface_scale,
        margin=arcface_margin,
        margin_std=arcface_margin_std,
        sub_centers=arcface_sub_centers,
        # The winner's ElasticArcFace: nn.init.normal_(kernel, std=0.01); Keras' own default would be Glorot uniform.
        kernel_initializer=(tf_keras.initializers.RandomNormal(0.0, arcface_init_std) if arcface_init_std > 0
                            else "glorot_uniform"),
        name="arcface",
    )
    softmax = layers.Activation("softmax", dtype="float32", name="probabilities")
    train = tf_keras.Model([image, label], softmax(arcface([x, label])), name="model")
    predict = tf_keras.Model(image, softmax(arcface(x)), name="model_predict")
    embed = tf_keras.Model(image, x, name="embedding_model")
    return Models(train=train, predict=predict, embed=embed)


def build_models_from_config(cfg, n_classes: int) -> Models:
    return build_models(
        backbone=cfg.backbone,
        dim=cfg.dim,
        n_classes=n_classes,
        weights=cfg.weights,
        pooling=cfg.pooling,
        head=cfg.head,
        embedding_size=cfg.embedding_size,
        dropout=cfg.dropout,
        arcface_scale=cfg.arcface_scale,
        arcface_margin=cfg.arcface_margin,
        arcface_margin_std=cfg.arcface_margin_std,
        arcface_sub_centers=cfg.arcface_sub_centers,
        arcface_init_std=cfg.arcface_init_std,
        neck_kind=cfg.neck,
        drop_connect_rate=cfg.drop_connect_rate,
        input_norm=cfg.input_norm,
    )


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NECK_COPIES = 3  # the winner's B5 neck concatenates its pooled vector 3 times before BatchNorm


def input_scaling(input_norm: str) -> tf_keras.layers.Layer:
    """[0, 1] pixels → ImageNet mean/std, as albumentations' default `Normalize()` (the winner's), or → [-1, 1]
    (`tf`: what kecam's EfficientNetV2 S/M/L weights were trained on)."""
    if input_norm == "tf":
        return layers.Rescaling(scale=2.0, offset=-1.0, name="input_norm")
    if input_norm != "imagenet":
        raise PhotoidError(f"unknown input_norm {input_norm!r}")
    mean, std = tf.constant(IMAGENET_MEAN), tf.constant(IMAGENET_STD)
    return layers.Rescaling(scale=(1 / std).numpy().tolist(), offset=(-mean / std).numpy().tolist(), name="input_norm")


def embedding_layers(neck_kind: str, embedding_size: int, pooled_width: int) -> list:
    """The layers between pooling and head.

    dense_bn (photoid): Dense(embedding_size) → BatchNorm, the BN output being the embedding.
    bn_dense (the winner's B5): the pooled vector concatenated NECK_COPIES times → BatchNorm → Dense with bias,
    the Dense output being the embedding; BatchNorm with torch's momentum (0.1 → Keras 0.9) and epsilon (1e-5),
    the Dense initialised as torch's Linear (uniform ±1/√fan_in).
    bn (the winner's EfficientNetV2): BatchNorm on the pooled vector is the embedding (embedding_size unused).
    """
    if neck_kind == "bn":
        return [layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="embedding")]
    if embedding_size <= 0:
        return []
    if neck_kind == "dense_bn":
        return [layers.Dense(embedding_size, name="embedding_dense"), layers.BatchNormalization(name="embedding")]
    if neck_kind != "bn_dense":
        raise PhotoidError(f"unknown neck {neck_kind!r}")
    from photoid.models.layers import RepeatFeatures

    bound = 1 / (pooled_width * NECK_COPIES) ** 0.5
    return [
        RepeatFeatures(NECK_COPIES, name="neck_copies"),
        layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="neck_bn"),
        layers.Dense(embedding_size, name="embedding",
                     kernel_initializer=tf_keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform"),
                     bias_initializer=tf_keras.initializers.RandomUniform(-bound, bound)),
    ]


OPTIMIZERS = ("adam", "adam_keras")


def make_optimizer(name: str, lr: float) -> tf_keras.optimizers.Optimizer:
    """Adam by the configuration's `optimizer` name.

    `adam` is `tf_keras.optimizers.legacy.Adam`, the optimizer the originals' TF 2.8 `tf.keras.optimizers.Adam` was:
    every variable is updated by TensorFlow's fused `ResourceApplyAdam` kernel (α = lr·√(1−β₂ᵗ)/(1−β₁ᵗ),
    m += (g−m)(1−β₁), v += (g²−v)(1−β₂), var −= α·m/(√v+ε)), so a step rounds as it rounded for the original.
    `adam_keras` is Keras' newer Adam (Keras ≥ 2.11): the same rule computed by separate TensorFlow operations, and
    compiled by XLA on a GPU, which rounds differently.
    """
    if name == "adam":
        return tf_keras.optimizers.legacy.Adam(lr)
    if name == "adam_keras":
        return tf_keras.optimizers.Adam(lr)
    raise PhotoidError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")


def compile_for_training(model: tf_keras.Model, lr: float, optimizer: str = "adam") -> None:
    """Adam (`make_optimizer`) + sparse categorical cross-entropy + accuracy, as the original (metric named `acc` →
    `val_acc`)."""
    model.compile(
        optimizer=make_optimizer(optimizer, lr),
        loss="sparse_categorical_crossentropy",
        metrics=["acc", tf_keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="acc5")],
    )


def load_weights_file(model: tf_keras.Model, path: str | Path, n_classes: int | None = None) -> None:
    """Load a whole-model weight file, refusing one made for another architecture or class count.

    Keras matches `.h5` weights layer by layer in order and checks every shape, so a file of a different
    architecture fails instead of loading half the layers.
    """
    path = str(path)
    if not tf.io.gfile.exists(path):
        raise PhotoidError(f"weights file {path} does not exist")
    if not is_weights_file(path):
        raise PhotoidError(f"weights file {path}: expected one of {', '.join(WEIGHTS_SUFFIXES)}")
    classes = f" with {n_classes} classes" if n_classes else ""
    try:
        model.load_weights(path)
        saved = _saved_weight_arrays(path)
    except (ValueError, OSError, KeyError, zipfile.BadZipFile) as err:
        raise PhotoidError(
            f"weights file {path} does not fit this recipe's model ({model.name}{classes}): {str(err).splitlines()[0][:300]}"
        ) from None
    if saved is not None and saved != len(model.weights):
        raise PhotoidError(
            f"weights file {path} holds {saved} weight arrays but this recipe's model ({model.name}{classes}) has "
            f"{len(model.weights)}: it was saved from another architecture (pooling, neck or head)"
        )


def _saved_weight_arrays(path: str) -> int | None:
    """How many layer weight arrays a weights file holds (a remote one is read from a local copy: h5py opens files).

    Keras refuses a file that lacks weights for one of the model's layers, but the `.weights.h5` layout matches
    layers by position and ignores entries the model has no place for (e.g. a GeM exponent loaded into a model
    with average pooling). Counting every array catches that. `.weights.h5` files keep the layers' arrays under
    `layers/` (the optimizer's elsewhere); legacy `.h5` files at the top or under `model_weights/` (whole models).
    A `.keras` file is a zip archive holding a `model.weights.h5`.
    """
    import h5py

    from photoid.core import fs

    if fs.is_remote(path):
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            local = f"{folder}/{fs.as_path(path).name}"
            fs.copy(path, local)
            return _saved_weight_arrays(local)

    def count(f) -> int:
        group = f["layers"] if "layers" in f else f["model_weights"] if "model_weights" in f else f
        arrays: list[str] = []
        group.visititems(lambda name, item: arrays.append(name) if isinstance(item, h5py.Dataset) else None)
        return len(arrays)

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive, archive.open(KERAS_ARCHIVE_WEIGHTS) as member, \
                h5py.File(member, "r") as f:
            return count(f)
    with h5py.File(path, "r") as f:
        return count(f)


def paired_train_model(train_model):
    """(top, lateral, label) → the class probabilities of each photo, both through `train_model` (shared weights;
    two calls, so BatchNorm in training uses each view's own batch statistics)."""
    import tf_keras

    image_shape = train_model.inputs[0].shape[1:]
    top = tf_keras.layers.Input(image_shape, name="top")
    lateral = tf_keras.layers.Input(image_shape, name="lateral")
    label = tf_keras.layers.Input((), dtype="int32", name="label")
    return tf_keras.Model([top, lateral, label], [train_model([top, label]), train_model([lateral, label])],
                          name="paired_model")
