"""A synthetic Turtle Recall data set, in the competition's exact files and formats.

Layout written (all ids unique; rows of every table shuffled, not grouped by turtle):
- `train.csv` (`image_id,image_location,turtle_id`): the "original" turtles, several images each;
- `extra_images.csv` (`image_id,turtle_id`): turtles seen only here, some with a single image, plus more
  images of a share of the original turtles (66 of 100 in the real data, the default share here);
- `test.csv` (`image_id,image_location`): images of original turtles and of new turtles, never in train or
  extra; `sample_submission.csv` (`image_id,prediction1..prediction5`), same image ids in the same order,
  every row holding the same placeholder labels;
- `images/<image_id>.JPG`; `test_labels.csv` (`image_id,turtle_id,label_101`), the hidden truth in
  `test.csv` order: `turtle_id` is the true individual (a new turtle has its own id, so open-set methods can be
  scored too) and `label_101` is what the competition's 101-label score expects: the id if it is one of
  `train.csv`'s ids, else `new_turtle`; `synth.json`, the settings and counts.

Every random choice comes from a stream derived from the seed: one for the plan (ids, counts, views, row
order), one per individual (its markings), one per image (its nuisance and JPEG quality). The same seed
therefore gives byte-identical files whatever the number of worker processes.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from photoid.core.io import write_csv, write_json
from photoid.core.labels import NEW_TURTLE
from photoid.synth import (
    MIXED_DIGITS,
    UPPER_DIGITS,
    check_seed,
    derive_rng,
    map_in_order,
    random_codes,
    refuse_invalid_settings,
    resolve_workers,
    staged_output_dir,
)
from photoid.synth.markings import VIEWS, draw_individual, photograph, render_individual

PLAN_STREAM, INDIVIDUAL_STREAM, IMAGE_STREAM, ROW_ORDER_STREAM = 0, 1, 2, 3
VIEW_WEIGHTS = (0.4, 0.3, 0.3)  # top, left, right
SPELLINGS = (str.lower, str.capitalize, str.upper)  # how `image_location` is written: top, Top, TOP
SPELLING_WEIGHTS = (0.6, 0.25, 0.15)
OVERLAP_SHARE = 0.66  # share of original turtles that also have extra images (66 of 100 in the real data)
SINGLE_IMAGE_SHARE = 0.15  # share of extra-only turtles with one image (at least one such turtle)
NEW_TEST_SHARE = 0.2  # share of test images showing turtles never seen in train or extra
TEST_SHARE = 0.25  # default test images per original training image
MIN_ORIGINAL = 4  # five distinct labels per submission row need at least 4 original ids besides new_turtle


@dataclass(frozen=True)
class Photo:
    """One image to draw: `index` is its place in the plan, and seeds its random stream."""

    index: int
    image_id: str
    individual: int
    view: str
    split: str  # "train", "extra" or "test"
    location: str  # `image_location` as written in the CSV (train and test only)


@dataclass(frozen=True)
class TurtlePlan:
    turtle_ids: list[str]  # originals first, then extra-only turtles, then new turtles
    n_original: int
    n_extra: int
    overlap: list[int]  # original turtles that also have extra images
    photos: list[Photo]  # grouped by individual, so each worker renders one individual's markings once


def _spread(rng: np.random.Generator, mean: float, n: int, low: float, high: float, minimum: int) -> np.ndarray:
    return np.maximum(minimum, np.rint(mean * rng.uniform(low, high, n))).astype(int)


def plan_turtles(*, seed: int, n_original: int, n_extra: int, n_overlap: int, images_per_turtle: int,
                 n_test: int, new_share: float = NEW_TEST_SHARE) -> TurtlePlan:
    """Decide every id, image count, view and split; nothing is drawn or written."""
    rng = derive_rng(seed, PLAN_STREAM)
    n_test_new = max(1, round(new_share * n_test))
    n_new = math.ceil(n_test_new / 2)  # new turtles show up in one or two test images each
    turtle_ids = random_codes(rng, n_original + n_extra + n_new, prefix="t_id_", alphabet=MIXED_DIGITS, length=8)
    overlap = sorted(int(i) for i in rng.choice(n_original, size=n_overlap, replace=False))
    per_split: dict[int, list[tuple[str, int]]] = {i: [] for i in range(len(turtle_ids))}
    for turtle, count in enumerate(_spread(rng, images_per_turtle, n_original, 0.6, 1.4, 2)):
        per_split[turtle].append(("train", int(count)))
    for turtle, count in zip(overlap, _spread(rng, images_per_turtle, n_overlap, 0.2, 0.8, 1)):
        per_split[turtle].append(("extra", int(count)))
    extra_counts = _spread(rng, images_per_turtle, n_extra, 0.6, 1.4, 2)
    n_single = max(1, round(SINGLE_IMAGE_SHARE * n_extra)) if n_extra else 0
    extra_counts[rng.choice(n_extra, size=n_single, replace=False)] = 1
    for turtle, count in enumerate(extra_counts, start=n_original):
        per_split[turtle].append(("extra", int(count)))
    test_turtles = np.concatenate([np.resize(rng.permutation(n_original), n_test - n_test_new),
                                   n_original + n_extra + np.arange(n_test_new) % n_new])
    for turtle, count in zip(*np.unique(test_turtles, return_counts=True)):
        per_split[int(turtle)].append(("test", int(count)))

    slots = [(turtle, split) for turtle, splits in per_split.items() for split, count in splits for _ in range(count)]
    image_ids = random_codes(rng, len(slots), prefix="ID_", alphabet=UPPER_DIGITS, length=8)
    views = rng.choice(len(VIEWS), size=len(slots), p=VIEW_WEIGHTS)
    spellings = rng.choice(len(SPELLINGS), size=len(slots), p=SPELLING_WEIGHTS)
    photos = [Photo(index, image_ids[index], turtle, VIEWS[views[index]], split,
                    SPELLINGS[spellings[index]](VIEWS[views[index]]))
              for index, (turtle, split) in enumerate(slots)]
    return TurtlePlan(turtle_ids, n_original, n_extra, overlap, photos)


def tables(plan: TurtlePlan, seed: int) -> dict[str, pd.DataFrame]:
    """The CSV files of the data set, by file name, rows shuffled."""
    rng = derive_rng(seed, ROW_ORDER_STREAM)
    ids, originals = plan.turtle_ids, set(plan.turtle_ids[:plan.n_original])

    def shuffled(split: str) -> list[Photo]:
        chosen = [p for p in plan.photos if p.split == split]
        return [chosen[i] for i in rng.permutation(len(chosen))]

    train, extra, test = shuffled("train"), shuffled("extra"), shuffled("test")
    placeholder = sorted(originals)[:MIN_ORIGINAL] + [NEW_TURTLE]
    return {
        "train.csv": pd.DataFrame({"image_id": [p.image_id for p in train],
                                   "image_location": [p.location for p in train],
                                   "turtle_id": [ids[p.individual] for p in train]}),
        "extra_images.csv": pd.DataFrame({"image_id": [p.image_id for p in extra],
                                          "turtle_id": [ids[p.individual] for p in extra]}),
        "test.csv": pd.DataFrame({"image_id": [p.image_id for p in test],
                                  "image_location": [p.location for p in test]}),
        "sample_submission.csv": pd.DataFrame({"image_id": [p.image_id for p in test],
                                               **{f"prediction{k + 1}": placeholder[k] for k in range(5)}}),
        "test_labels.csv": pd.DataFrame({"image_id": [p.image_id for p in test],
                                         "turtle_id": [ids[p.individual] for p in test],
                                         "label_101": [ids[p.individual] if ids[p.individual] in originals
                                                       else NEW_TURTLE for p in test]}),
    }


def template_side(size: int) -> int:
    """Side of an individual's rendered template: about the head's size in a photo, capped for speed."""
    return int(min(1024, max(64, round(0.8 * size))))


@functools.lru_cache(maxsize=4)
def _template(seed: int, individual: int, side: int) -> Image.Image:
    return render_individual(draw_individual(derive_rng(seed, INDIVIDUAL_STREAM, individual)), side)


def _draw_and_save(job: tuple[str, int, int, int, str, int, str]) -> None:
    """Worker: draw one photo from its own random stream and write it as a JPEG (quality 90-95)."""
    folder, seed, size, index, image_id, individual, view = job
    rng = derive_rng(seed, IMAGE_STREAM, index)
    image = photograph(_template(seed, individual, template_side(size)), view, rng, size)
    image.save(Path(folder) / f"{image_id}.JPG", "JPEG", quality=int(rng.integers(90, 96)))


def _check(n_original: int, n_extra: int, n_overlap: int, images_per_turtle: int, n_test: int, size: int) -> None:
    problems = []
    if n_original < MIN_ORIGINAL:
        problems.append(f"n_original must be at least {MIN_ORIGINAL} (a submission row needs five distinct "
                        f"labels), got {n_original}")
    if n_extra < 0:
        problems.append(f"n_extra must be 0 or more, got {n_extra}")
    if not 0 <= n_overlap <= n_original:
        problems.append(f"n_overlap must be between 0 and n_original ({n_original}), got {n_overlap}")
    if images_per_turtle < 2:
        problems.append(f"images_per_turtle must be at least 2, got {images_per_turtle}")
    if n_test < 2:
        problems.append(f"n_test must be at least 2 (original and new turtles), got {n_test}")
    if size < 32:
        problems.append(f"size (long side in px) must be at least 32, got {size}")
    refuse_invalid_settings(problems)


def generate_turtles(out_dir: str | Path, *, seed: int = 0, n_original: int = 100, n_extra: int = 100,
                     n_overlap: int | None = None, images_per_turtle: int = 10, n_test: int | None = None,
                     size: int = 128, workers: int | None = None, force: bool = False,
                     progress: bool = False) -> dict:
    """Write a synthetic Turtle Recall data set to `out_dir`; return its summary counts.

    `n_extra` counts turtles seen only in `extra_images.csv`; `n_overlap` (default 66% of `n_original`) original
    turtles also get extra images. `n_test` defaults to a quarter of the expected training images, a fifth of
    them showing new turtles. `size` is the long side of every image in px. `workers` processes draw the images
    (default: every core); the output does not depend on it.
    """
    seed = check_seed(seed)
    n_overlap = round(OVERLAP_SHARE * n_original) if n_overlap is None else n_overlap
    n_test = max(4, round(TEST_SHARE * n_original * images_per_turtle)) if n_test is None else n_test
    _check(n_original, n_extra, n_overlap, images_per_turtle, n_test, size)
    workers = resolve_workers(workers)
    plan = plan_turtles(seed=seed, n_original=n_original, n_extra=n_extra, n_overlap=n_overlap,
                        images_per_turtle=images_per_turtle, n_test=n_test)
    files = tables(plan, seed)
    summary = _summary(plan, files, seed, size)
    with staged_output_dir(out_dir, force=force) as staging:
        images = staging / "images"
        images.mkdir()
        jobs = [(str(images), seed, size, p.index, p.image_id, p.individual, p.view) for p in plan.photos]
        map_in_order(_draw_and_save, jobs, workers, progress="images" if progress else None)
        for name, frame in files.items():
            write_csv(staging / name, frame)
        write_json(staging / "synth.json", summary)
    return summary


def _summary(plan: TurtlePlan, files: dict[str, pd.DataFrame], seed: int, size: int) -> dict:
    known = pd.concat([files["train.csv"], files["extra_images.csv"]])["turtle_id"].value_counts()
    labels = files["test_labels.csv"]
    return {
        "generator": "photoid synth turtles", "seed": seed, "size": size,
        "n_original": plan.n_original, "n_extra_only": plan.n_extra, "n_overlap": len(plan.overlap),
        "n_new": len(plan.turtle_ids) - plan.n_original - plan.n_extra,
        "n_ids": int(known.size), "n_single_image_ids": int((known == 1).sum()),
        "n_train_images": len(files["train.csv"]), "n_extra_images": len(files["extra_images.csv"]),
        "n_test_images": len(labels), "n_test_new_images": int((labels["label_101"] == NEW_TURTLE).sum()),
        "n_images": len(plan.photos),
    }
