"""A synthetic generic folder (`photoid.generic.data`): any species' photos as a researcher would hold them.

Layout written:
- `metadata.csv` (`image_id,path,identity,viewpoint,date,encounter,split`): every known individual's photos in
  encounters (a day's sighting: one date, 2-3 photos), one encounter of each held out as `test`; individuals
  never in train appear in `test` only (some with their identity, as a later survey would name them, some with it
  empty: unknown);
- `photos/<identity>/<image_id>.<ext>`: photos of the same drawn animals as `photoid synth turtles`
  (`photoid.synth.markings`), every fourth one a PNG, the others JPEGs, so readers meet more than one format;
- `synth.json`: the settings and counts.

Every random choice comes from a stream derived from the seed (plan, individual, image), so the same seed gives
byte-identical files whatever the number of worker processes.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd

from photoid.core.io import write_csv, write_json
from photoid.synth import (
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
from photoid.synth.turtles import template_side

PLAN_STREAM, INDIVIDUAL_STREAM, IMAGE_STREAM = 0, 1, 2
PNG_EVERY = 4  # every fourth photo is written as PNG


def plan_generic(seed: int, n_individuals: int, encounters_per_individual: int, n_unknown: int) -> pd.DataFrame:
    """The metadata rows (and `individual`: which drawn animal), in file order: train rows, then test rows."""
    rng = derive_rng(seed, PLAN_STREAM)
    names = random_codes(rng, n_individuals + n_unknown, prefix="ind_", alphabet=UPPER_DIGITS, length=5)
    rows = []
    for individual, name in enumerate(names):
        known = individual < n_individuals
        for encounter in range(encounters_per_individual if known else 1):
            date = pd.Timestamp("2021-05-01") + pd.Timedelta(days=int(rng.integers(0, 700)))
            split = "test" if not known or encounter == encounters_per_individual - 1 else "train"
            for _ in range(int(rng.integers(2, 4))):
                rows.append({"individual": individual, "identity": name, "viewpoint": str(rng.choice(VIEWS)),
                             "date": date.strftime("%Y-%m-%d"), "encounter": f"{name}_e{encounter}", "split": split})
    frame = pd.DataFrame(rows)
    # Train rows in a shuffled order (folds follow file order), then the test rows.
    train = frame[frame["split"] == "train"].sample(frac=1.0, random_state=int(rng.integers(2**31)))
    frame = pd.concat([train, frame[frame["split"] == "test"]], ignore_index=True)
    frame["image_id"] = random_codes(rng, len(frame), prefix="img_", alphabet=UPPER_DIGITS, length=8)
    frame["path"] = [f"photos/{name}/{image_id}.{'png' if i % PNG_EVERY == PNG_EVERY - 1 else 'jpg'}"
                     for i, (name, image_id) in enumerate(zip(frame["identity"], frame["image_id"]))]
    unknown = (frame["individual"] >= n_individuals).to_numpy()
    # Half the unseen individuals' photos carry no identity at all: nobody has named them yet.
    frame.loc[unknown & (frame.index.to_numpy() % 2 == 0), "identity"] = ""
    frame.loc[unknown, "encounter"] = ""
    return frame


@functools.lru_cache(maxsize=4)
def _template(seed: int, individual: int, side: int):
    return render_individual(draw_individual(derive_rng(seed, INDIVIDUAL_STREAM, individual)), side)


def _draw_and_save(job: tuple[str, int, int, int, int, str]) -> None:
    path, seed, size, index, individual, view = job
    rng = derive_rng(seed, IMAGE_STREAM, index)
    image = photograph(_template(seed, individual, template_side(size)), view, rng, size)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if path.endswith(".png"):
        image.save(path, "PNG")
    else:
        image.save(path, "JPEG", quality=int(rng.integers(90, 96)))


def generate_generic(out_dir: str | Path, *, seed: int = 0, n_individuals: int = 8, encounters_per_individual: int = 3,
                     n_unknown: int = 2, size: int = 64, workers: int | None = None, force: bool = False,
                     progress: bool = False) -> dict:
    """Write a synthetic generic folder to `out_dir`; return its summary counts."""
    seed = check_seed(seed)
    problems = []
    if n_individuals < 2:
        problems.append(f"n_individuals must be at least 2, got {n_individuals}")
    if encounters_per_individual < 3:
        problems.append(f"encounters_per_individual must be at least 3 (two to train on, one for test), got "
                        f"{encounters_per_individual}")
    if n_unknown < 0:
        problems.append(f"n_unknown must be 0 or more, got {n_unknown}")
    if size < 32:
        problems.append(f"size (long side in px) must be at least 32, got {size}")
    refuse_invalid_settings(problems)
    workers = resolve_workers(workers)
    plan = plan_generic(seed, n_individuals, encounters_per_individual, n_unknown)
    is_test = plan["split"] == "test"
    summary = {"generator": "photoid synth generic", "seed": seed, "size": size, "n_individuals": n_individuals,
               "n_unknown_individuals": n_unknown, "n_images": len(plan), "n_train_images": int((~is_test).sum()),
               "n_test_images": int(is_test.sum()),
               "n_test_unknown_images": int((is_test & ~plan["identity"].isin(plan.loc[~is_test, "identity"])).sum()),
               "n_png": int(plan["path"].str.endswith(".png").sum())}
    with staged_output_dir(out_dir, force=force) as staging:
        jobs = [(str(staging / p), seed, size, i, int(ind), view)
                for i, (p, ind, view) in enumerate(zip(plan["path"], plan["individual"], plan["viewpoint"]))]
        map_in_order(_draw_and_save, jobs, workers, progress="images" if progress else None)
        write_csv(staging / "metadata.csv",
                  plan[["image_id", "path", "identity", "viewpoint", "date", "encounter", "split"]])
        write_json(staging / "synth.json", summary)
    return summary
