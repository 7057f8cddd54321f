"""A synthetic Where's Whale-do data set, in the competition's exact files and formats.

Layout written:
- `metadata.csv` (`image_id,path,height,width,viewpoint,date,timestamp,whale_id,encounter_id`) and
  `images/<image_id>.jpg`: belugas seen from above (`top`: a pale spindle with flukes on dark water, head up,
  tall crop) or from the side (`left`/`right`: a wide crop of the flank at the surface, head to the left for a
  left view and to the right for a right view, so a mirrored right view looks like a left view of the other
  flank);
- `query_scenarios.csv` with `queries/<scenario>.csv` (`query_id,query_image_id`, query ids written
  `<scenario_id>-<image_id>` as the organisers do) and `databases/<scenario>.csv` (`database_image_id`);
- `example_labels.csv` (`query_id,database_image_id`): every database image of the query's whale, never the query
  image itself (the organisers' name for the truth of their example scenarios);
- `synth.json`: the settings and counts.

Scenarios: `top` (top queries against every top image, the queries included, as in the real scenario01),
`top-across-years` (top queries of the latest year against the top images of earlier years, as in the real
scenario02), `lateral` (side views against side views) and `mixed` (any view against every image). A scenario
without a query that has a match is left out; every query has at least one true match in its database.

Each whale is a body with marks (dark scars and spots, a few pale scars) placed on its skin by position along
the body and angle around it, so a mark on the back shows in top views and at the upper edge of side views,
a flank mark in that flank's side views. Some marks appear only from a later year on, as new scars do. An
encounter (one whale, one day) fixes the water, light, depth, haze and blur of its photos; each photo adds a
small change of pose, crop and exposure.

With `metadata` (the real `metadata.csv`) the images are drawn for exactly its rows: ids, paths, viewpoints,
whales, encounters, dates and aspect ratios, scaled so the long side is `size`. Random streams are derived from
the seed and the ids (whale, encounter, image), so an image does not change when a subset is drawn, and the same
seed gives byte-identical files whatever the number of worker processes.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from photoid.core.errors import PhotoidError
from photoid.core.io import write_csv, write_json
from photoid.synth import (
    check_seed,
    derive_rng,
    map_in_order,
    refuse_invalid_settings,
    resolve_workers,
    staged_output_dir,
)
from photoid.whales.data import METADATA_COLUMNS, read_metadata

LAYOUT_STREAM, SUBSET_STREAM, SCENARIO_STREAM, WHALE_STREAM, ENCOUNTER_STREAM, IMAGE_STREAM = range(6)
TRUTH_FILE = "example_labels.csv"
YEARS = (2017, 2018, 2019)
MIN_SIDE = 8  # shortest image side in px: side views are about five times wider than tall
LATERAL_WHALE_SHARE = 0.4  # whales that also have side-view encounters (every whale is seen from above)
QUERY_SHARE = 0.3  # of the eligible images of a scenario, the share drawn as queries
JPEG_QUALITY = 90
TOP_ASPECT, SIDE_ASPECT = 1 / 2.9, 0.21  # typical short side / long side of the real crops (median)


# --- plan: which images, scenarios and truth -------------------------------------------------------------

def plan_metadata(seed: int, n_whales: int, images_per_whale: int, size: int,
                  lateral_share: float = LATERAL_WHALE_SHARE) -> pd.DataFrame:
    """Rows of a made-up `metadata.csv`: whales with 1 to 3 encounters (one viewpoint and day each); a share
    `lateral_share` of the whales also has side-view encounters."""
    rng = derive_rng(seed, LAYOUT_STREAM)
    rows = []
    for w in range(n_whales):
        whale_id = f"whale{w:03d}"
        n_images = int(rng.integers(max(1, images_per_whale // 2), images_per_whale + images_per_whale // 2 + 1))
        lateral = rng.random() < lateral_share
        n_encounters = int(rng.integers(2 if lateral and n_images > 1 else 1, min(3, n_images) + 1))
        counts = 1 + rng.multinomial(n_images - n_encounters, np.full(n_encounters, 1 / n_encounters))
        starts = sorted(pd.Timestamp(int(rng.choice(YEARS)), 8, int(rng.integers(1, 32)))
                        + pd.Timedelta(seconds=int(rng.integers(8 * 3600, 23 * 3600))) for _ in counts)
        views = ["top"] + [str(rng.choice(["top", "left", "right"], p=[0.2, 0.4, 0.4])) if lateral else "top"
                           for _ in counts[1:]]
        for k, (count, start, view) in enumerate(zip(counts, starts, views)):
            moments = start + pd.to_timedelta(np.cumsum(rng.integers(5, 90, count)), unit="s")
            for moment in moments:
                short = max(MIN_SIDE, round(size * (TOP_ASPECT if view == "top" else SIDE_ASPECT)
                                            * rng.uniform(0.8, 1.2)))
                height, width = (size, short) if view == "top" else (short, size)
                rows.append((height, width, view, moment.strftime("%Y-%m-%d"), moment.strftime("%Y-%m-%d %H:%M:%S"),
                             whale_id, f"{whale_id}-{k:03d}"))
    rows = [rows[i] for i in rng.permutation(len(rows))]
    digits = max(4, len(str(len(rows) - 1)))
    ids = [f"train{i:0{digits}d}" for i in range(len(rows))]
    frame = pd.DataFrame(rows, columns=["height", "width", "viewpoint", "date", "timestamp", "whale_id",
                                        "encounter_id"])
    frame.insert(0, "path", [f"images/{i}.jpg" for i in ids])
    frame.insert(0, "image_id", ids)
    return frame[list(METADATA_COLUMNS)]


def metadata_like(path: str | Path, size: int) -> pd.DataFrame:
    """The rows of a real `metadata.csv`, image sizes scaled to a long side of `size` px."""
    frame = read_metadata(path, required=METADATA_COLUMNS)[list(METADATA_COLUMNS)].copy()
    scale = size / np.maximum(frame["height"], frame["width"])
    frame["height"] = np.maximum(MIN_SIDE, np.rint(frame["height"] * scale)).astype(np.int64)
    frame["width"] = np.maximum(MIN_SIDE, np.rint(frame["width"] * scale)).astype(np.int64)
    return frame.reset_index(drop=True)


def whole_whale_subset(frame: pd.DataFrame, max_images: int, seed: int) -> pd.DataFrame:
    """At most `max_images` rows made of whole whales, taken in a seeded order; the file's row order is kept."""
    counts = frame["whale_id"].value_counts().sort_index()
    chosen, total = set(), 0
    for whale in counts.index[derive_rng(seed, SUBSET_STREAM).permutation(len(counts))]:
        if total + counts[whale] <= max_images:
            chosen.add(whale)
            total += counts[whale]
    return frame[frame["whale_id"].isin(chosen)].reset_index(drop=True)


def plan_scenarios(metadata: pd.DataFrame, seed: int) -> tuple[list[tuple[str, pd.DataFrame, pd.DataFrame]],
                                                               pd.DataFrame]:
    """The scenarios (id, queries, database) and the truth of all of them."""
    rng = derive_rng(seed, SCENARIO_STREAM)
    year = metadata["date"].str[:4]
    top = metadata["viewpoint"] == "top"
    everything = pd.Series(True, index=metadata.index)
    definitions = [(top, top), (top & (year == year.max()), top & (year < year.max())), (~top, ~top),
                   (everything, everything)]
    scenarios, truths = [], []
    for query_pool, database_pool in definitions:
        database = metadata[database_pool]
        pool = metadata[query_pool]
        matches = pool["whale_id"].map(database["whale_id"].value_counts()).fillna(0) \
            - pool["image_id"].isin(database["image_id"]).astype(int)
        eligible = pool[matches > 0]
        if eligible.empty:
            continue
        n_queries = max(1, round(QUERY_SHARE * len(eligible)))
        chosen = eligible.iloc[np.sort(rng.choice(len(eligible), size=n_queries, replace=False))]
        scenario_id = f"scenario{len(scenarios) + 1:02d}"
        queries = pd.DataFrame({"query_id": scenario_id + "-" + chosen["image_id"],
                                "query_image_id": chosen["image_id"]})
        pairs = queries.assign(whale_id=chosen["whale_id"].to_numpy()).merge(
            database[["image_id", "whale_id"]], on="whale_id")
        pairs = pairs[pairs["image_id"] != pairs["query_image_id"]]
        truths.append(pairs.rename(columns={"image_id": "database_image_id"})[["query_id", "database_image_id"]])
        scenarios.append((scenario_id, queries.reset_index(drop=True),
                          pd.DataFrame({"database_image_id": database["image_id"].to_numpy()})))
    truth = pd.concat(truths, ignore_index=True) if truths else pd.DataFrame(columns=["query_id", "database_image_id"])
    return scenarios, truth


# --- appearance: whales, encounters, photos ---------------------------------------------------------------

def _id_key(text: str) -> tuple[int, int]:
    """Two 32-bit numbers from an id, so each whale, encounter or image has its own random stream."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:8], "little")


@dataclass(frozen=True)
class Whale:
    tone: float  # skin brightness (young belugas are greyer)
    tint: np.ndarray  # per-channel skin colour
    girth: float  # body width / body length
    # One row per mark: position along the body (0 head .. 1 tail), angle around it, length and width (body
    # lengths), orientation on the skin, brightness change (negative = dark) and the year it appears (0 = always).
    marks: np.ndarray


def draw_whale(seed: int, whale_id: str) -> Whale:
    """An individual: body proportions, skin tone and its marks. Angles around the body: 0 is the back's
    midline, negative the left flank, positive the right flank, ±π the belly."""
    rng = derive_rng(seed, WHALE_STREAM, *_id_key(whale_id))
    tone = rng.uniform(0.45, 0.62) if rng.random() < 0.2 else rng.uniform(0.62, 0.95)
    groups = [np.clip(rng.normal(0.0, 0.35, rng.integers(5, 9)), -0.8, 0.8),       # on the back
              -rng.uniform(0.9, 2.2, rng.integers(3, 6)),                            # left flank
              rng.uniform(0.9, 2.2, rng.integers(3, 6))]                             # right flank
    phi = np.concatenate(groups)
    n = len(phi)
    dark = rng.random(n) < 0.75
    marks = np.column_stack([
        rng.uniform(0.12, 0.85, n), phi, rng.uniform(0.03, 0.09, n), rng.uniform(0.02, 0.045, n),
        rng.uniform(0.0, math.pi, n),
        np.where(dark, -rng.uniform(0.35, 0.7, n), rng.uniform(0.15, 0.3, n)),
        np.where(rng.random(n) < 0.15, rng.choice(YEARS[1:], n), 0)])
    # Blowhole and eyes: every beluga has them; they show which end is the head.
    species = np.array([[0.10, 0.0, 0.012, 0.02, 0.0, -0.45, 0], [0.07, -1.75, 0.012, 0.012, 0.0, -0.6, 0],
                        [0.07, 1.75, 0.012, 0.012, 0.0, -0.6, 0]])
    return Whale(tone=float(tone), tint=1.0 + rng.uniform(-0.05, 0.05, 3), girth=float(rng.uniform(0.23, 0.31)),
                 marks=np.vstack([marks, species]))


@dataclass(frozen=True)
class Conditions:
    water: np.ndarray  # RGB of the water
    gain: float
    cast: np.ndarray  # per-channel colour cast of the light
    depth: float  # how much water veils the body in top views
    waterline: float  # side views: body height (-1 belly .. 1 back) below which the body is under water
    heading: float  # body axis angle in radians
    fill: float  # body length / image long side
    drop: float  # side views: body centre below the image centre, in long-side units
    ripple: float
    glare: float
    noise: float
    blur: float


def draw_encounter(seed: int, encounter_id: str) -> Conditions:
    rng = derive_rng(seed, ENCOUNTER_STREAM, *_id_key(encounter_id))
    return Conditions(
        water=np.array([rng.uniform(0.02, 0.10), rng.uniform(0.10, 0.24), rng.uniform(0.13, 0.30)]),
        gain=rng.uniform(0.75, 1.15), cast=1.0 + rng.uniform(-0.06, 0.06, 3), depth=rng.uniform(0.0, 0.35),
        waterline=rng.uniform(-0.6, 0.2), heading=rng.normal(0.0, 0.06), fill=rng.uniform(0.84, 0.96),
        drop=rng.uniform(0.01, 0.025), ripple=rng.uniform(0.04, 0.2),
        glare=rng.uniform(0.15, 0.35) if rng.random() < 0.3 else 0.0, noise=rng.uniform(0.008, 0.03),
        blur=rng.uniform(0.0, 0.8))


def _smoothstep(a: float, b: float, x: np.ndarray) -> np.ndarray:
    x = np.clip((x - a) / (b - a), 0.0, 1.0)
    return x * x * (3 - 2 * x)


def body_profile(t: np.ndarray, fluke_span: float) -> np.ndarray:
    """Half-width along the body (t: 0 head .. 1 fluke tips), as a share of the widest point: a rounded melon,
    a taper to the tail stock, and flukes (wide seen from above, edge-on seen from the side)."""
    head = np.clip(t / 0.16, 0.0, 1.0)
    body = np.sqrt(head * (2.0 - head)) * (1.0 - 0.78 * _smoothstep(0.35, 0.9, t))
    flukes = fluke_span * np.exp(-((t - 0.94) / 0.035) ** 2)
    return np.where((t >= 0) & (t <= 1), np.maximum(body, flukes), 0.0)


def mark_field(whale: Whale, t: np.ndarray, phi: np.ndarray, year: int) -> np.ndarray:
    """Relative brightness change of the skin at body coordinates (t, phi): a sum of oriented elliptical marks,
    measured on the skin (along the body in body lengths, around it as arc length)."""
    marks = whale.marks[whale.marks[:, 6] <= year]
    along = t[:, None] - marks[:, 0]
    around = (np.angle(np.exp(1j * (phi[:, None] - marks[:, 1])))) * whale.girth / 2
    cos, sin = np.cos(marks[:, 4]), np.sin(marks[:, 4])
    a = (cos * along + sin * around) / marks[:, 2]
    b = (-sin * along + cos * around) / marks[:, 3]
    return (marks[:, 5] * np.exp(-0.5 * (a * a + b * b))).sum(axis=1)


@dataclass(frozen=True)
class Photo:
    path: str
    seed: int
    image_id: str
    whale_id: str
    encounter_id: str
    viewpoint: str
    year: int
    height: int
    width: int


def render(photo: Photo) -> np.ndarray:
    """The photo as an (height, width, 3) uint8 array."""
    whale, cond = draw_whale(photo.seed, photo.whale_id), draw_encounter(photo.seed, photo.encounter_id)
    rng = derive_rng(photo.seed, IMAGE_STREAM, *_id_key(photo.image_id))
    top = photo.viewpoint == "top"
    h, w = photo.height, photo.width
    long_side = h if top else w
    x, y = np.meshgrid((np.arange(w) + 0.5 - w / 2) / long_side, (np.arange(h) + 0.5 - h / 2) / long_side)
    angle = cond.heading + rng.normal(0.0, 0.03)
    length = cond.fill * rng.uniform(0.96, 1.02)
    cx, cy = rng.normal(0.0, 0.015, 2) + (0.0, 0.0 if top else cond.drop)
    u = math.cos(angle) * (x - cx) + math.sin(angle) * (y - cy)
    v = -math.sin(angle) * (x - cx) + math.cos(angle) * (y - cy)
    # A crop narrower or wider than usual holds a body seen thinner or fatter (a turned or bent whale), so the
    # body's width follows the crop's aspect ratio around the whale's own girth.
    fit = np.clip(min(h, w) / long_side / (TOP_ASPECT if top else SIDE_ASPECT), 0.6, 1.5)
    if top:
        t, offset, half_scale, flukes = v / length + 0.5, u, fit, 1.3
    else:
        t, offset, half_scale, flukes = (u if photo.viewpoint == "left" else -u) / length + 0.5, v, 0.8 * fit, 0.25
    half = length * whale.girth / 2 * half_scale * body_profile(t, flukes)
    alpha = np.clip((half - np.abs(offset)) * long_side + 0.5, 0.0, 1.0)

    image = _water(cond, rng, x, y)

    on_body = alpha > 0
    r = np.clip(offset[on_body] / np.maximum(half[on_body], 1e-9), -1.0, 1.0)
    if top:
        phi = np.arcsin(r)   # image left is the whale's left flank (head up, seen from above)
        light = 0.5 + 0.5 * np.cos(phi)
        veil = cond.depth * (0.5 + 0.5 * (1.0 - np.cos(phi)))
    else:
        height = -r          # 1 on the back (top edge), -1 on the belly
        phi = np.arccos(height) * (-1.0 if photo.viewpoint == "left" else 1.0)
        light = 0.55 + 0.15 * (height + 1.0) + 0.15 * np.sqrt(1.0 - height ** 2)
        veil = 0.6 * np.clip((cond.waterline - height) * 2.5, 0.0, 1.0)
    shade = np.clip(light * (1.0 + mark_field(whale, t[on_body], phi, photo.year)), 0.05, 1.25)
    skin = whale.tone * whale.tint * shade[:, None]
    skin = skin * (1.0 - veil[:, None]) + image[on_body] * veil[:, None]
    a = alpha[on_body][:, None]
    image[on_body] = image[on_body] * (1.0 - a) + skin * a
    return _expose(image, cond, rng, x, y)


def _water(cond: Conditions, rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The encounter's water colour under a few ripples of random direction and wavelength."""
    ripples = sum(np.sin(k[0] * x + k[1] * y + phase) for k, phase in
                  zip(rng.normal(0.0, 40.0, (3, 2)), rng.uniform(0, 2 * math.pi, 3))) / 3
    return cond.water * (1.0 + cond.ripple * ripples)[..., None]


def _expose(image: np.ndarray, cond: Conditions, rng: np.random.Generator, x: np.ndarray,
            y: np.ndarray) -> np.ndarray:
    """The camera: the encounter's light and colour cast, a glare spot on some days, sensor noise and blur."""
    image = image * cond.gain * cond.cast * rng.normal(1.0, 0.03)
    if cond.glare:
        gx, gy = rng.uniform(x.min(), x.max()), rng.uniform(y.min(), y.max())
        image = image + cond.glare * np.exp(-((x - gx) ** 2 + (y - gy) ** 2) / (2 * 0.05 ** 2))[..., None]
    image = image + rng.normal(0.0, cond.noise, image.shape)
    pixels = Image.fromarray(np.rint(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8))
    radius = cond.blur * max(image.shape[:2]) / 96
    if radius >= 0.2:
        pixels = pixels.filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(pixels)


def _render_and_save(photo: Photo) -> None:
    Image.fromarray(render(photo)).save(photo.path, "JPEG", quality=JPEG_QUALITY)


# --- writing ------------------------------------------------------------------------------------------------

def generate_belugas(out_dir: str | Path, *, seed: int = 0, n_whales: int = 40, images_per_whale: int = 8,
                     size: int = 128, metadata: str | Path | None = None, max_images: int | None = None,
                     workers: int | None = None, force: bool = False, progress: bool = False,
                     lateral_share: float = LATERAL_WHALE_SHARE) -> dict:
    """Write a synthetic Where's Whale-do data set to `out_dir`; return its summary counts.

    Without `metadata`, `n_whales` whales get about `images_per_whale` images each (from half to one and a half
    times as many), `lateral_share` of them with side views too (the real set: 280 of 788 whales). With `metadata`
    (a real `metadata.csv`) its rows are drawn, `n_whales`, `images_per_whale` and `lateral_share` unused. `max_images` keeps at most that many images: whole whales, in a seeded order.
    `size` is the long side of every image in px. `workers` processes draw the images (default every core); the
    output does not depend on it.
    """
    seed = check_seed(seed)
    _check_settings(n_whales, images_per_whale, size, max_images)
    if not 0.0 <= lateral_share <= 1.0:
        refuse_invalid_settings([f"lateral_share must be in [0, 1], got {lateral_share}"])
    workers = resolve_workers(workers)
    rows = metadata_like(metadata, size) if metadata is not None else \
        plan_metadata(seed, n_whales, images_per_whale, size, lateral_share)
    if max_images is not None:
        rows = whole_whale_subset(rows, max_images, seed)
    if rows.empty:
        raise PhotoidError(f"no whale fits in max_images={max_images}")
    scenarios, truth = plan_scenarios(rows, seed)
    summary = _summary(rows, scenarios, truth, seed, size, metadata)
    if metadata is None and lateral_share != LATERAL_WHALE_SHARE:   # only then: default sets keep their synth.json
        summary["lateral_share"] = lateral_share
    with staged_output_dir(out_dir, force=force) as staging:
        for folder in {str(Path(p).parent) for p in rows["path"]} | {"queries", "databases"}:
            (staging / folder).mkdir(parents=True, exist_ok=True)
        photos = [Photo(str(staging / r.path), seed, r.image_id, r.whale_id, r.encounter_id, r.viewpoint,
                        int(r.date[:4]), int(r.height), int(r.width)) for r in rows.itertuples(index=False)]
        map_in_order(_render_and_save, photos, workers, progress="images" if progress else None)
        write_csv(staging / "metadata.csv", rows)
        write_csv(staging / "query_scenarios.csv", pd.DataFrame(
            [(sid, f"queries/{sid}.csv", f"databases/{sid}.csv") for sid, _, _ in scenarios],
            columns=["scenario_id", "queries_path", "database_path"]))
        for scenario_id, queries, database in scenarios:
            write_csv(staging / "queries" / f"{scenario_id}.csv", queries)
            write_csv(staging / "databases" / f"{scenario_id}.csv", database)
        write_csv(staging / TRUTH_FILE, truth)
        write_json(staging / "synth.json", summary)
    return summary


def _check_settings(n_whales: int, images_per_whale: int, size: int, max_images: int | None) -> None:
    problems = []
    if n_whales < 2:
        problems.append(f"n_whales must be at least 2, got {n_whales}")
    if images_per_whale < 1:
        problems.append(f"images_per_whale must be at least 1, got {images_per_whale}")
    if size < 32:
        problems.append(f"size (long side in px) must be at least 32, got {size}")
    if max_images is not None and max_images < 1:
        problems.append(f"max_images must be at least 1, got {max_images}")
    refuse_invalid_settings(problems)


def _summary(rows: pd.DataFrame, scenarios, truth: pd.DataFrame, seed: int, size: int, metadata) -> dict:
    return {
        "generator": "photoid synth belugas", "seed": seed, "size": size,
        "metadata": None if metadata is None else str(metadata),
        "n_images": len(rows), "n_whales": int(rows["whale_id"].nunique()),
        "n_encounters": int(rows["encounter_id"].nunique()),
        "viewpoints": {k: int(v) for k, v in rows["viewpoint"].value_counts().sort_index().items()},
        "scenarios": {sid: {"queries": len(q), "database": len(d)} for sid, q, d in scenarios},
        "n_true_pairs": len(truth),
    }


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder to create (must be empty or absent unless --force)")
    parser.add_argument("--metadata", help="a real metadata.csv: draw images for exactly its rows")
    parser.add_argument("--seed", type=int, default=0, help="master seed; the same seed gives byte-identical files")
    parser.add_argument("--n-whales", type=int, default=40, help="whales to make up without --metadata (default 40)")
    parser.add_argument("--images-per-whale", type=int, default=8,
                        help="mean images per whale without --metadata (default 8)")
    parser.add_argument("--size", type=int, default=128, help="long side of every image in px (default 128)")
    parser.add_argument("--lateral-share", type=float, default=LATERAL_WHALE_SHARE,
                        help=f"share of whales with side views too, without --metadata (default {LATERAL_WHALE_SHARE}; "
                             "the real set: 280 of 788)")
    parser.add_argument("--max-images", type=int, default=None,
                        help="keep at most this many images: whole whales, in a seeded order (for speed)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes drawing images (default every core); the output does not depend on it")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out folder")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    summary = generate_belugas(args.out, seed=args.seed, n_whales=args.n_whales,
                               images_per_whale=args.images_per_whale, size=args.size, metadata=args.metadata,
                               max_images=args.max_images, workers=args.workers, force=args.force, progress=True,
                               lateral_share=args.lateral_share)
    seconds = time.perf_counter() - start
    views = ", ".join(f"{k} {v}" for k, v in summary["viewpoints"].items())
    scenarios = ", ".join(f"{k} ({v['queries']} queries, {v['database']} in the database)"
                          for k, v in summary["scenarios"].items())
    print(f"wrote {summary['n_images']} images of {summary['size']} px to {args.out} in {seconds:.1f} s: "
          f"{summary['n_whales']} whales, {summary['n_encounters']} encounters ({views}); scenarios {scenarios}; "
          f"truth in {TRUTH_FILE}")
    return 0
