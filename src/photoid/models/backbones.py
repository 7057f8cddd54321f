"""Backbone registry: a name → a feature extractor without its classification top.

Each entry knows its family, the pretrained sets it accepts and which library builds it. Every backbone takes
the pixels the model gives it (kecam EfficientNets are built with their own preprocessing off, as in the Turtle
Recall original); `photoid.models.factory` scales them first, to [0, 1] or to ImageNet mean/std (`input_norm`).

Pretrained weights come from the internet, which is often out of reach (field stations, clusters, these CI
machines). kecam *prints* an error and continues with random weights when a download fails; here a named set
that did not load is an error, never random weights in silence.
"""

from __future__ import annotations

import contextlib
import io
import sys
from dataclasses import dataclass
from typing import Callable

import tf_keras

from photoid.core.errors import PhotoidError


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    library: str  # efficientnet | kecam | photoid
    builder: str  # attribute path of the constructor inside its library
    pretrained: tuple[str, ...]  # named weight sets it accepts
    head_init: str = "glorot"  # the softmax head's initialisation, see `head_initializers`


def _efn(n: int) -> BackboneSpec:
    return BackboneSpec(f"efficientnet-b{n}", "efficientnet", f"EfficientNetB{n}", ("imagenet", "noisy-student"))


def _kecam_v1(v: str) -> BackboneSpec:
    return BackboneSpec(f"efficientnet-v1-{v.lower()}", "kecam", f"efficientnet.EfficientNetV1{v}", ("noisy_student", "imagenet"))


def _kecam_v2(v: str) -> BackboneSpec:
    return BackboneSpec(
        f"efficientnet-v2-{v.lower()}", "kecam", f"efficientnet.EfficientNetV2{v}", ("imagenet", "imagenet21k", "imagenet21k-ft1k")
    )


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in [
        *(_efn(n) for n in range(8)),
        *(_kecam_v1(v) for v in ["B0", "B1", "B2", "B3", "B4", "B5", "B6", "B7", "L2"]),
        *(_kecam_v2(v) for v in ["B0", "B1", "B2", "B3", "S", "M", "L", "XL"]),
        # The original built BEiT with kecam's own head, whose initialisation photoid's Dense repeats.
        BackboneSpec("beit-base-patch16", "kecam", "beit.BeitBasePatch16", ("imagenet21k-ft1k",), "kecam-beit"),
        BackboneSpec("beit-large-patch16", "kecam", "beit.BeitLargePatch16", ("imagenet21k-ft1k",), "kecam-beit"),
        BackboneSpec("simple-cnn", "photoid", "simple_cnn", ()),
    ]
}


def head_initializers(name: str) -> dict:
    """Keyword arguments for the softmax head's Dense on backbone `name`.

    glorot: Keras' Dense defaults (glorot_uniform kernel, zero bias), as the original's EfficientNet heads.
    kecam-beit: kecam 1.2.9's BEiT head (`HeadInitializer`: TruncatedNormal(stddev 0.02) x 0.001 on kernel and
    bias), which the original trained its BEiT run from: the first softmax is almost uniform. A truncated normal
    scaled by 0.001 is the truncated normal of stddev 2e-5, written so that the saved model needs no kecam class.
    """
    if BACKBONES[name].head_init == "glorot":
        return {}
    stddev = 0.02 * 0.001
    return {"kernel_initializer": tf_keras.initializers.TruncatedNormal(stddev=stddev),
            "bias_initializer": tf_keras.initializers.TruncatedNormal(stddev=stddev)}


WEIGHTS_SUFFIXES = (".h5", ".hdf5", ".weights.h5", ".keras")  # what --weights takes as a file; all load


def is_weights_file(weights: str) -> bool:
    return weights.lower().endswith(WEIGHTS_SUFFIXES)


def build_backbone(name: str, input_shape: tuple[int, int, int], weights: str = "none",
                   drop_connect_rate: float = -1.0) -> tf_keras.Model:
    """Build a registered backbone without top. `weights`: none, or a named set that must load.
    `drop_connect_rate` >= 0 sets a kecam EfficientNet's stochastic depth (-1 keeps the library's default)."""
    spec = BACKBONES.get(name)
    if spec is None:
        raise PhotoidError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    named = None if weights.lower() in {"", "none"} or is_weights_file(weights) else weights
    if named is not None and named not in spec.pretrained:
        accepted = ", ".join(spec.pretrained) or "none (no pretrained sets)"
        raise PhotoidError(f"backbone {name} has no pretrained weights {named!r}; accepted: {accepted}, or a local file")
    if drop_connect_rate >= 0 and not spec.builder.startswith("efficientnet."):
        raise PhotoidError(f"backbone {name} has no drop_connect_rate to set (only kecam EfficientNets have one)")
    if spec.library == "photoid":
        return simple_cnn(input_shape)
    if spec.library == "efficientnet":
        return _build_efficientnet(spec, input_shape, named)
    extra = {"drop_connect_rate": drop_connect_rate} if drop_connect_rate >= 0 else {}
    return _build_kecam(spec, input_shape, named, **extra)


def _build_efficientnet(spec: BackboneSpec, input_shape, named: str | None) -> tf_keras.Model:
    import efficientnet.tfkeras as efn

    constructor: Callable = getattr(efn, spec.builder)
    try:
        return constructor(input_shape=input_shape, weights=named, include_top=False)
    except Exception as err:  # the efficientnet package raises a bare Exception when a download fails
        if named is None:
            raise
        raise PhotoidError(_weights_unavailable(spec.name, named, err)) from None


def _build_kecam(spec: BackboneSpec, input_shape, named: str | None, **options) -> tf_keras.Model:
    import keras_cv_attention_models as kecam

    module_name, attr = spec.builder.split(".")
    constructor = getattr(getattr(kecam, module_name), attr)
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        model = constructor(input_shape=input_shape, num_classes=0, pretrained=named, **options)
    printed = captured.getvalue()
    sys.stdout.write("".join(line + "\n" for line in printed.splitlines() if "[Error]" not in line))
    if named is not None and "[Error]" in printed:
        detail = next(line for line in printed.splitlines() if "[Error]" in line)
        raise PhotoidError(_weights_unavailable(spec.name, named, detail))
    return model


def _weights_unavailable(name: str, named: str, detail) -> str:
    return (
        f"pretrained weights {named!r} for {name} could not be loaded ({detail}). "
        "This machine may have no internet access: download the file elsewhere and pass its path with "
        "--weights FILE, or train from scratch with --weights none."
    )


def simple_cnn(input_shape: tuple[int, int, int]) -> tf_keras.Model:
    """A small conv net (4 stages, 0.4M parameters) for CPU demos and tests, where EfficientNets are slow.

    Conv-BN-ReLU pairs, each stage halving the resolution; the output is a feature map like any backbone's.
    """
    layers = tf_keras.layers
    inputs = layers.Input(input_shape)
    x = inputs
    for stage, width in enumerate([32, 64, 128, 256]):
        for block in range(2):
            stride = 2 if block == 0 else 1
            x = layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False, name=f"stage{stage}_conv{block}")(x)
            # momentum 0.9: the moving statistics must settle within the few hundred steps of a CPU run
            x = layers.BatchNormalization(momentum=0.9, name=f"stage{stage}_bn{block}")(x)
            x = layers.ReLU(name=f"stage{stage}_relu{block}")(x)
    return tf_keras.Model(inputs, x, name="simple-cnn")
