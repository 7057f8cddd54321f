"""The Where's Whale-do winner's training augmentation, in the tf.data graph, every draw keyed by a seed.

The winner's albumentations chain (`train_top/augs.py`), applied here to the reader's uint8 `dim_pre` image:

1. HorizontalFlip, p 0.5;
2. OneOf(Sharpen, ToGray, CLAHE), p 0.5, each of the three equally likely; CLAHE's clip limit drawn from U(1, 4) at
   each call (albumentations' `CLAHE(clip_limit=4.0)` means the range (1, 4));
3. ShiftScaleRotate(shift 0.25, scale 0.2, rotate 4°), p 0.5;
4. ColorJitter(brightness 0.1, contrast 0.1, saturation 0.1, hue 0.2), p 0.5, the four in random order;

and for the EfficientNetV2 family first a white triangle in the top-left corner, overall probability 0.25
(`augment = "whaledo_triangle"`).

The transforms follow albumentations' definitions, computed with TensorFlow ops rather than OpenCV, so pixels are
not identical to the winner's: Sharpen's kernel (1-α)·I + α·[[-1,-1,-1],[-1,8+λ,-1],[-1,-1,-1]], α in [0.2, 0.5],
λ in [0.5, 1] is the same, with reflected borders; ToGray uses the same luma weights; CLAHE is OpenCV's (8x8
tiles, the integer clip limit max(⌊clip·tile area/256⌋, 1), the clipped counts given back as OpenCV gives them, its
tile coordinates and padding, bilinear blend of the tiles' mappings: on a grey photo within one level of OpenCV's
own, tested), but runs on the luma and adds its change to each channel, where albumentations equalises the L of
CIELAB; ShiftScaleRotate samples bilinearly with reflected borders (OpenCV's default reflects without repeating the
edge pixel, TensorFlow's repeats it).

Cost (benchmark B8): ShiftScaleRotate's projective-transform kernel dominates; CLAHE counts its tile histograms
with one bincount and fetches each pixel's four tile mappings with one gather; rounding and casts, and ColorJitter
as a whole, are compiled by XLA (`_compiled`, `color_jitter`).
"""

from __future__ import annotations

import math

import tensorflow as tf

AUGMENTS = ("whaledo", "whaledo_triangle")
LUMA = (0.299, 0.587, 0.114)  # OpenCV's RGB → gray weights
CLAHE_CLIP, CLAHE_GRID = 4.0, 8
CLAHE_CLIP_RANGE = (1.0, CLAHE_CLIP)  # albumentations: to_tuple(clip_limit, 1), one uniform draw per call
SHIFT, SCALE, ROTATE_DEG = 0.25, 0.2, 4.0
JITTER = (0.1, 0.1, 0.1, 0.2)  # brightness, contrast, saturation, hue
TRIANGLE_W, TRIANGLE_H = 0.3, 0.25


def _uniform(seed, low=0.0, high=1.0, shape=()):
    return tf.random.stateless_uniform(shape, seed=seed, minval=low, maxval=high)


def _compiled(fn):
    """`fn` compiled by XLA into one pass over the image instead of one pass per operation. Used for rounding,
    clipping and casts, which XLA computes bit for bit as TensorFlow's kernels do. Not for a product followed by a sum (XLA fuses it into one
    rounding, so a few pixels would move by one level) nor a division by a constant (XLA multiplies by the
    reciprocal); only `color_jitter` accepts that, for its gain."""
    return tf.function(fn, jit_compile=True, autograph=False)


@_compiled
def _to_uint8(x: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8)


def _gray(x: tf.Tensor) -> tf.Tensor:
    """float HxWx3 → float HxW luma."""
    return tf.tensordot(x, tf.constant(LUMA, x.dtype), axes=[[2], [0]])


def to_gray(image: tf.Tensor) -> tf.Tensor:
    """uint8 RGB → uint8 gray repeated on three channels."""
    gray = _to_uint8(_gray(tf.cast(image, tf.float32)))
    return tf.stack([gray] * 3, axis=-1)  # rounded once, then copied: a third of the float work


def sharpen(image: tf.Tensor, alpha, lightness) -> tf.Tensor:
    """albumentations' Sharpen with the given α and λ: a 3x3 kernel blending identity and a Laplacian sharpener."""
    alpha, lightness = tf.cast(alpha, tf.float32), tf.cast(lightness, tf.float32)
    identity = tf.constant([[0, 0, 0], [0, 1, 0], [0, 0, 0]], tf.float32)
    effect = tf.constant([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], tf.float32) + lightness * identity
    kernel = (1 - alpha) * identity + alpha * effect
    x = tf.pad(tf.cast(image, tf.float32)[None], [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")
    filters = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    return _to_uint8(tf.nn.depthwise_conv2d(x, filters, strides=[1, 1, 1, 1], padding="VALID")[0])


def clahe(image: tf.Tensor, clip_limit: float = CLAHE_CLIP, grid: int = CLAHE_GRID) -> tf.Tensor:
    """Contrast-limited adaptive histogram equalisation of the luma (see the module notes)."""
    x = tf.cast(image, tf.float32)
    luma = _gray(x)
    value = tf.cast(tf.clip_by_value(tf.round(luma), 0, 255), tf.int32)
    height, width = tf.shape(value)[0], tf.shape(value)[1]
    # OpenCV pads an image that is not whole tiles in both directions with BORDER_REFLECT_101 (TensorFlow's REFLECT),
    # by grid − (size mod grid) in each direction: a whole extra tile's worth where that side already divides.
    aligned = tf.logical_and(height % grid == 0, width % grid == 0)
    pad_h = tf.where(aligned, 0, grid - height % grid)
    pad_w = tf.where(aligned, 0, grid - width % grid)
    tile_h, tile_w = (height + pad_h) // grid, (width + pad_w) // grid
    padded = tf.pad(value, [[0, pad_h], [0, pad_w]], mode="REFLECT")
    # Histogram of every tile: one segment per (tile, grey level).
    tiles = tf.transpose(tf.reshape(padded, [grid, tile_h, grid, tile_w]), [0, 2, 1, 3])
    tile_index = tf.range(grid * grid)[:, None]
    segments = tf.reshape(tile_index * 256 + tf.reshape(tiles, [grid * grid, -1]), [-1])
    # One bincount over every (tile, grey level) pair; the same counts as a segment sum, 4× faster here.
    n_bins = grid * grid * 256
    hist = tf.reshape(tf.math.bincount(segments, minlength=n_bins, maxlength=n_bins, dtype=tf.float32),
                      [grid * grid, 256])
    area = tf.cast(tile_h * tile_w, tf.float32)
    # OpenCV's limit is an integer count: static_cast<int>(clipLimit * tileSizeTotal / histSize), at least 1.
    clip = tf.maximum(tf.floor(tf.cast(clip_limit, tf.float32) * area / 256.0), 1.0)
    # The clipped counts go back as OpenCV returns them: clipped // 256 to every level, then one more to each of
    # the levels 0, s, 2s, ... (s = max(256 // residual, 1)) until the residual is used up.
    clipped = tf.reduce_sum(tf.nn.relu(hist - clip), axis=1, keepdims=True)
    batch = tf.floor(clipped / 256.0)
    residual = clipped - batch * 256.0
    step = tf.maximum(tf.floor(256.0 / tf.maximum(residual, 1.0)), 1.0)
    level = tf.range(256, dtype=tf.float32)[None, :]
    extra = tf.cast((tf.math.floormod(level, step) == 0) & (tf.floor(level / step) < residual), tf.float32)
    hist = tf.minimum(hist, clip) + batch + extra
    lut = tf.clip_by_value(tf.round(tf.cumsum(hist, axis=1) * (255.0 / area)), 0, 255)
    return _clahe_map(x, luma, value, lut, tile_h, tile_w, grid)


def _clahe_map(x, luma, value, lut, tile_h, tile_w, grid):
    """CLAHE's second half: each pixel's luma mapped through the tiles' `lut` (grid², 256), added to x."""
    height, width = tf.shape(value)[0], tf.shape(value)[1]
    # Each pixel blends the mappings of the four nearest tile centres. Pixels between the same four centres (a
    # cell; the border cells repeat the edge tiles) share their four tiles, so each cell's four mappings are laid
    # side by side and one gather per pixel fetches all four, where four gathers fetched one each.
    # OpenCV's coordinates in tiles: y · (1 / tile height) − 0.5 (tile centres at half a tile, less half a pixel).
    ty = tf.cast(tf.range(height), tf.float32) * (1.0 / tf.cast(tile_h, tf.float32)) - 0.5
    tx = tf.cast(tf.range(width), tf.float32) * (1.0 / tf.cast(tile_w, tf.float32)) - 0.5
    fy, fx = tf.floor(ty), tf.floor(tx)  # -1 .. grid - 1: the cell's row and column
    wy, wx = (ty - fy)[:, None], (tx - fx)[None, :]
    cells = tf.gather(lut, _cell_tiles(grid))  # (cells, 4, 256)
    cells = tf.reshape(tf.transpose(cells, [0, 2, 1]), [-1, 4])  # (cell · 256 + level, 4)
    cell = (tf.cast(fy, tf.int32)[:, None] + 1) * (grid + 1) + tf.cast(fx, tf.int32)[None, :] + 1
    m = tf.gather(cells, cell * 256 + value)  # (height, width, 4): tiles (y0, x0), (y0, x1), (y1, x0), (y1, x1)
    out = (m[..., 0] * (1 - wx) + m[..., 1] * wx) * (1 - wy) + (m[..., 2] * (1 - wx) + m[..., 3] * wx) * wy
    return _to_uint8(x + (out - luma)[..., None])


def _cell_tiles(grid: int) -> list[list[int]]:
    """For each cell between tile centres (rows and columns -1 .. grid - 1), its four tiles (y0, x0), (y0, x1),
    (y1, x0), (y1, x1), the edge tiles standing in beyond the outer centres."""
    def pair(f):
        return max(f, 0), min(f + 1, grid - 1)

    return [[y * grid + x for y in pair(fy) for x in pair(fx)]
            for fy in range(-1, grid) for fx in range(-1, grid)]


def shift_scale_rotate(image: tf.Tensor, angle_deg, scale, dx, dy) -> tf.Tensor:
    """Rotate by `angle_deg` (counter-clockwise, as OpenCV) and scale about the centre, then shift by (dx, dy)
    times the width and height; bilinear, reflected borders."""
    height, width = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    angle = tf.cast(angle_deg, tf.float32) * (math.pi / 180.0)
    scale = tf.cast(scale, tf.float32)
    cx, cy = width / 2.0, height / 2.0   # OpenCV's getRotationMatrix2D centre, as albumentations passes it
    # Forward map (OpenCV): out = A·in + b with A = s·[[cos, sin], [-sin, cos]].
    cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
    bx = (1 - tf.cos(angle) * scale) * cx - sin * cy + tf.cast(dx, tf.float32) * width
    by = sin * cx + (1 - tf.cos(angle) * scale) * cy + tf.cast(dy, tf.float32) * height
    # ImageProjectiveTransformV3 wants the inverse: in = A⁻¹·(out - b).
    det = cos * cos + sin * sin
    ia, ib, ic, id_ = cos / det, -sin / det, sin / det, cos / det
    transform = tf.stack([ia, ib, -(ia * bx + ib * by), ic, id_, -(ic * bx + id_ * by), 0.0, 0.0])
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(image, tf.float32)[None], transforms=transform[None],
        output_shape=tf.shape(image)[:2], fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")[0]
    return _to_uint8(out)


def color_jitter(image: tf.Tensor, brightness, contrast, saturation, hue, order) -> tf.Tensor:
    """torchvision's ColorJitter (albumentations follows it) with the given factors, applied in `order` (a
    permutation of 0..3: brightness, contrast, saturation, hue).

    Compiled by XLA as a whole, for about 2.5× less processor time at 512 px: XLA rounds a few floats of the
    luma, the mean and the hue differently from TensorFlow's kernels, which moves about 6 values in a million by
    one level (at 512 px, 40 photos; tests/test_whales_winner.py bounds it)."""
    factors = [tf.cast(f, tf.float32) for f in (brightness, contrast, saturation, hue)]
    return _color_jitter(tf.convert_to_tensor(image), *factors, tf.convert_to_tensor(order, tf.int32))


@tf.function(jit_compile=True, autograph=False)
def _color_jitter(image, brightness, contrast, saturation, hue, order):
    x = tf.cast(image, tf.float32) / 255.0
    steps = [
        lambda x: tf.clip_by_value(x * brightness, 0, 1),
        lambda x: _blend_towards(x, tf.reduce_mean(_gray(x)), contrast),
        lambda x: _blend_towards(x, _gray(x)[..., None], saturation),
        lambda x: tf.image.adjust_hue(x, hue),
    ]
    for position in range(4):
        x = tf.switch_case(order[position], [lambda s=s: s(x) for s in steps])
    return tf.cast(tf.clip_by_value(tf.round(x * 255.0), 0, 255), tf.uint8)


def _blend_towards(x, gray, factor):
    """(x − gray)·factor + gray, clipped into [0, 1]: contrast (gray the mean luma) or saturation (the luma),
    with the luma computed once."""
    return tf.clip_by_value((x - gray) * factor + gray, 0, 1)


def triangle(image: tf.Tensor) -> tf.Tensor:
    """The winner's white top-left triangle: row i < 25 % of the height is white over its first
    30 % of the width less i·(30 % width / 25 % height) pixels."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    limit_w = tf.cast(tf.cast(width, tf.float32) * TRIANGLE_W, tf.int32)
    limit_h = tf.cast(tf.cast(height, tf.float32) * TRIANGLE_H, tf.int32)
    step = tf.cast(limit_w, tf.float32) / tf.cast(tf.maximum(limit_h, 1), tf.float32)
    rows = tf.range(height)[:, None]
    ends = limit_w - tf.cast(step * tf.cast(rows, tf.float32), tf.int32)
    white = (rows < limit_h) & (tf.range(width)[None, :] < ends)
    return tf.where(white[..., None], tf.constant(255, image.dtype), image)


def whaledo_draws(seed: tf.Tensor, triangle_first: bool = False) -> dict[str, tf.Tensor]:
    """Every random choice of the winner's chain for one image, from the stateless `seed` (shape [2]): whether each
    transform applies, and its parameters (albumentations' ranges)."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 16)
    b, c, s, h = JITTER
    return {
        # Triangle(p=0.5) drew again inside with 1 - p: overall 0.25 (only the EfficientNetV2 family's chain).
        "triangle": _uniform(seeds[0]) < 0.25 if triangle_first else tf.constant(False),
        "flip": _uniform(seeds[1]) < 0.5,
        "one_of": _uniform(seeds[2]) < 0.5,
        "which": tf.cast(tf.floor(_uniform(seeds[3], 0, 3)), tf.int32),   # 0 Sharpen, 1 ToGray, 2 CLAHE
        "sharpen_alpha": _uniform(seeds[4], 0.2, 0.5),
        "sharpen_lightness": _uniform(seeds[5], 0.5, 1.0),
        "clahe_clip": _uniform(tf.random.experimental.stateless_fold_in(seeds[3], 1), *CLAHE_CLIP_RANGE),
        "shift_scale_rotate": _uniform(seeds[6]) < 0.5,
        "angle": _uniform(seeds[7], -ROTATE_DEG, ROTATE_DEG),
        "scale": 1 + _uniform(seeds[8], -SCALE, SCALE),
        "dx": _uniform(seeds[9], -SHIFT, SHIFT),
        "dy": _uniform(seeds[10], -SHIFT, SHIFT),
        "jitter": _uniform(seeds[11]) < 0.5,
        "order": tf.argsort(_uniform(seeds[12], shape=(4,))),
        "brightness": _uniform(seeds[13], 1 - b, 1 + b),
        "contrast": _uniform(seeds[14], 1 - c, 1 + c),
        "saturation": _uniform(seeds[15], 1 - s, 1 + s),
        "hue": _uniform(tf.random.experimental.stateless_fold_in(seeds[15], 1), -h, h),
    }


def apply_whaledo(image: tf.Tensor, d: dict[str, tf.Tensor]) -> tf.Tensor:
    """The winner's chain on one uint8 image with the choices `d` of `whaledo_draws`."""
    image = tf.convert_to_tensor(image)
    image = tf.cond(d["triangle"], lambda: triangle(image), lambda: image)
    image = tf.cond(d["flip"], lambda: tf.image.flip_left_right(image), lambda: image)
    one_of = [lambda: sharpen(image, d["sharpen_alpha"], d["sharpen_lightness"]),
              lambda: to_gray(image), lambda: clahe(image, d["clahe_clip"])]
    image = tf.cond(d["one_of"], lambda: tf.switch_case(d["which"], one_of), lambda: image)
    image = tf.cond(d["shift_scale_rotate"], lambda: shift_scale_rotate(
        image, d["angle"], d["scale"], d["dx"], d["dy"]), lambda: image)
    image = tf.cond(d["jitter"], lambda: color_jitter(
        image, d["brightness"], d["contrast"], d["saturation"], d["hue"], d["order"]), lambda: image)
    return image


def whaledo_augment(image: tf.Tensor, seed: tf.Tensor, triangle_first: bool = False) -> tf.Tensor:
    """The winner's chain on one uint8 image; every draw comes from the stateless `seed` (shape [2])."""
    return apply_whaledo(image, whaledo_draws(seed, triangle_first))


def _augment(name: str):
    def augment(image: tf.Tensor, seed: tf.Tensor, *, aug_number: int, aug_percentage: float, aug_draw: str):
        return whaledo_augment(image, seed, triangle_first=name == "whaledo_triangle")

    return augment


# The augmentations a recipe names (`augment = "whaledo"`), as the registry (photoid.tasks) hands them to the reader.
AUGMENTATIONS = {name: _augment(name) for name in AUGMENTS}
