"""What each step of the reader costs for one photo: each step compiled alone and timed one photo at a time.

The reader does, per photo: decode (the original photo, or a record already at `dim_pre`), one augmentation draw,
resize to `dim` and scale. Only the decode differs between record layouts. Timed alone, each step also carries a
call's overhead and runs on one photo, so these figures rank the steps; they do not add up to the pipeline's rate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import photoid  # noqa: F401  (selects tf-keras before TensorFlow is imported)
import tensorflow as tf

from photoid.records.transforms import TRANSFORM_NAMES, apply_transform
from photoid.turtles.augment import augment_draw_range
from photoid.records.reader import decode_image, finish_image

# The reader's defaults: 9 transforms, each drawn with probability 1/18, identity otherwise.
AUG_NUMBER, AUG_PERCENTAGE = 9, 0.5


@dataclass(frozen=True)
class StageCosts:
    """Milliseconds per photo of each step."""

    decode_original: float
    decode_scaled: float
    decode_resized: float
    transforms: dict[str, float]
    augment_mean: float  # over the original's draw probabilities
    finish: float
    finish_crop: float  # a 45-degree crop's resize to dim and scale, as the reader does it (float pixels)
    finish_crop_uint8: float  # the same from uint8 pixels, as the original's code did: the same values, slower
    kernel_rotations: dict[str, float]  # the same rotations the tfa way: the projective kernel on the whole image
    same_pixels_as_kernel: bool  # whether the reader's rotations give exactly the kernel's pixels


def _ms_per_call(fn, inputs: list, repeats: int) -> float:
    fn(inputs[0])  # trace and warm up
    started = time.perf_counter()
    for _ in range(repeats):
        for x in inputs:
            fn(x)
    return 1000 * (time.perf_counter() - started) / (repeats * len(inputs))


def stage_costs(original_bytes: list[bytes], resized_bytes: list[bytes], dim: int, dim_pre: int,
                scaled_decoder, repeats: int = 2) -> StageCosts:
    """Time each step on the given photos (`original_bytes`: the photos' files; `resized_bytes`: their records)."""
    originals = [tf.constant(b) for b in original_bytes]
    resized = [tf.constant(b) for b in resized_bytes]

    def compiled(fn):
        return tf.function(fn, autograph=False)

    decode = compiled(lambda data: decode_image(data, dim_pre))
    decode_scaled = compiled(lambda data: scaled_decoder(data, dim_pre))
    images = [decode(data) for data in resized]
    crops = [apply_transform(image, TRANSFORM_NAMES.index("rotate_45_crop")) for image in images]
    transforms = {name: _ms_per_call(compiled(lambda image, t=t: apply_transform(image, t)), images, repeats)
                  for t, name in enumerate(TRANSFORM_NAMES)}
    # Draws 0..AUG_NUMBER-1 apply transforms 1..AUG_NUMBER; the other draws leave the photo as it is.
    draws = augment_draw_range(AUG_NUMBER, AUG_PERCENTAGE)
    costs = list(transforms.values())
    augment_mean = (costs[0] * (draws - AUG_NUMBER) + sum(costs[1:AUG_NUMBER + 1])) / draws
    # Traced for images of unknown size, `apply_transform` rotates as tfa.image.rotate did: the projective kernel
    # over the whole image, then the crop if any.
    unknown_size = [tf.TensorSpec([None, None, 3], tf.uint8)]
    kernel_ways = {name: tf.function(lambda image, t=t: apply_transform(image, t), input_signature=unknown_size,
                                     autograph=False)
                   for t, name in enumerate(TRANSFORM_NAMES) if name.startswith("rotate")}
    same = all(bool(tf.reduce_all(way(image) == apply_transform(image, TRANSFORM_NAMES.index(name))))
               for image in images for name, way in kernel_ways.items())
    return StageCosts(
        decode_original=_ms_per_call(decode, originals, repeats),
        decode_scaled=_ms_per_call(decode_scaled, originals, repeats),
        decode_resized=_ms_per_call(decode, resized, repeats),
        transforms=transforms,
        augment_mean=augment_mean,
        finish=_ms_per_call(compiled(lambda image: finish_image(image, dim)), images, repeats),
        finish_crop=_ms_per_call(compiled(lambda image: finish_image(image, dim)), crops, repeats),
        finish_crop_uint8=_ms_per_call(compiled(lambda image: tf.image.resize(image, [dim, dim]) / 255.0), crops,
                                       repeats),
        kernel_rotations={name: _ms_per_call(way, images, repeats) for name, way in kernel_ways.items()},
        same_pixels_as_kernel=same,
    )


def describe(costs: StageCosts) -> str:
    def span(values) -> str:
        return f"{min(values):.1f}-{max(values):.1f} ms"

    ours = {name: ms for name, ms in costs.transforms.items() if name.startswith("rotate")}
    quarter = [ms for name, ms in ours.items() if not name.endswith("crop")]
    diagonal = [ms for name, ms in ours.items() if name.endswith("crop")]
    kernel = list(costs.kernel_rotations.values())
    return (f"Each step alone, per photo: decoding the original {costs.decode_original:.1f} ms (DCT-scaled "
            f"{costs.decode_scaled:.1f} ms), an exact-layout record {costs.decode_resized:.1f} ms; augmentation "
            f"{costs.augment_mean:.1f} ms on average over the draws (a quarter turn {span(quarter)}, a 45-degree "
            f"turn and crop {span(diagonal)}, a flip {costs.transforms['flip_left_right']:.1f} ms; 7 of every 18 "
            f"draws rotate), resize to dim and scale {costs.finish:.1f} ms ({costs.finish_crop:.1f} ms after a "
            f"45-degree crop, which needs a real resize; {costs.finish_crop_uint8:.1f} ms resizing the crop's uint8 "
            f"pixels instead of float ones, for the same values). The same rotations the tfa way (the "
            f"projective kernel over the whole image) take {span(kernel)}; the reader's give "
            + ("exactly the same pixels." if costs.same_pixels_as_kernel else "OTHER PIXELS (a defect)."))
