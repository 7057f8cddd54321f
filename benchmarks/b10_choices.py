"""B10's choices: which extractor, geometric model, working size and keypoint cap name individuals best.

Local matching alone, every pair, no training (the audit's baseline script, with photoid's pieces): each query is
matched with every catalogue photo of a comparable viewpoint, an individual scores its best photo's verified
inliers, and acc@1 counts the queries whose best individual is theirs. Three synthetic sets as `photoid synth`
writes them: turtles (512 px, 40 turtles; train.csv the catalogue, the test photos of known turtles the queries),
the generic folder (384 px, 12 individuals; train rows the catalogue, test rows of known individuals the queries)
and belugas (256 px, 40 whales, wide photos turned; every photo a query against all the others).

Compared: RootSIFT (`photoid.local.features`) and plain SIFT (L2 on the raw descriptors) and OpenCV's ORB (400
features, Hamming distance, the same mutual ratio test); partial affine (RANSAC) and homography (USAC/MAGSAC)
verification; working sizes 384 / 512 / 768 px; caps of 200 / 400 / 800 keypoints.

    python benchmarks/b10_choices.py [--cache_dir DIR]      # prints one table (about 20 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE_DIR  # noqa: E402


def sets(cache: Path) -> dict:
    """{name: (catalogue items, query items or None for leave-one-out, rotate_wide)}; items: (path, id, view)."""
    from photoid.synth.belugas import generate_belugas
    from photoid.synth.generic import generate_generic
    from photoid.synth.turtles import generate_turtles

    turtles, generic, belugas = cache / "choices-turtles", cache / "choices-generic", cache / "choices-belugas"
    if not (turtles / "synth.json").exists():
        generate_turtles(turtles, seed=1, n_original=40, n_extra=0, n_overlap=0, images_per_turtle=8, size=512,
                         force=True)
    if not (generic / "synth.json").exists():
        generate_generic(generic, seed=2, n_individuals=12, size=384, force=True)
    if not (belugas / "synth.json").exists():
        generate_belugas(belugas, seed=3, n_whales=40, size=256, force=True)
    train, test = pd.read_csv(turtles / "train.csv"), pd.read_csv(turtles / "test_labels.csv")
    found = {"turtles": ([(str(turtles / "images" / f"{i}.JPG"), t, None) for i, t in
                          zip(train["image_id"], train["turtle_id"])],
                         [(str(turtles / "images" / f"{i}.JPG"), t, None) for i, t in
                          zip(test["image_id"], test["turtle_id"]) if t in set(train["turtle_id"])], False)}
    meta = pd.read_csv(generic / "metadata.csv", keep_default_na=False)
    known = set(meta.loc[meta["split"] != "test", "identity"])
    rows = lambda m: [(str(generic / p), i, v) for p, i, v in zip(m["path"], m["identity"], m["viewpoint"])]  # noqa
    found["generic"] = (rows(meta[meta["split"] != "test"]),
                        rows(meta[(meta["split"] == "test") & meta["identity"].isin(known)]), False)
    meta = pd.read_csv(belugas / "metadata.csv")
    found["belugas"] = ([(str(belugas / p), w, v) for p, w, v in zip(meta["path"], meta["whale_id"],
                                                                     meta["viewpoint"])], None, True)
    return found


def sift_scorer(root: bool, method: str):
    from photoid.local.features import rootsift
    from photoid.local.matching import tentative_matches, verify

    def describe(d):
        if root:
            return rootsift(d)
        d = d.astype(np.float32)
        return d / (np.linalg.norm(d, axis=1, keepdims=True) + 1e-9)

    def score(q, c):
        if not (q.usable and c.usable):
            return 0
        qi, ci, _ = tentative_matches(describe(q.descriptors), describe(c.descriptors))
        return int(verify(q.xy[qi], c.xy[ci], method).sum())
    return score


def orb_features(items, settings):
    import cv2

    from photoid.local.features import prepared_grey

    orb, out = cv2.ORB_create(nfeatures=400), []
    for path, _, view in items:
        keypoints, d = orb.detectAndCompute(prepared_grey(path, settings, view), None)
        out.append((np.array([k.pt for k in keypoints], np.float32).reshape(-1, 2),
                    d if d is not None else np.zeros((0, 32), np.uint8)))
    return out


def orb_scorer(method: str):
    import cv2

    from photoid.local.matching import verify

    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)

    def score(q, c):
        (qxy, qd), (cxy, cd) = q, c
        if len(qd) < 8 or len(cd) < 2:
            return 0
        back = {m[0].queryIdx: m[0].trainIdx for m in matcher.knnMatch(cd, qd, k=1) if m}
        pairs = [(m[0].queryIdx, m[0].trainIdx) for m in matcher.knnMatch(qd, cd, k=2)
                 if len(m) == 2 and m[0].distance < 0.8 * m[1].distance and back.get(m[0].trainIdx) == m[0].queryIdx]
        if len(pairs) < 4:
            return 0
        qi, ci = map(list, zip(*pairs))
        return int(verify(qxy[qi], cxy[ci], method).sum())
    return score


def accuracy(catalogue, queries, cat_features, query_features, score) -> float:
    """acc@1 of the best individual by best-photo inliers; comparable views only; leave-one-out without queries."""
    loo = queries is None
    if loo:
        queries, query_features = catalogue, cat_features
    ids = np.array([c[1] for c in catalogue])
    views = np.array([str(c[2]) for c in catalogue])
    right = total = 0
    for k, (item, features) in enumerate(zip(queries, query_features)):
        mask = np.ones(len(catalogue), bool)
        if loo:
            mask[k] = False
        if item[2]:
            mask &= views == str(item[2])
        if loo and not (ids[mask] == item[1]).any():
            continue
        best: dict = {}
        for i in np.flatnonzero(mask):
            best[ids[i]] = max(best.get(ids[i], -1), score(features, cat_features[i]))
        right += max(best, key=best.get) == item[1]
        total += 1
    return right / max(total, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache_dir", default=str(CACHE_DIR))
    args = parser.parse_args(argv)
    import photoid  # noqa: F401
    from photoid.local.features import Settings, photo_features

    print("| set | extractor | verification | working size | keypoint cap | keypoints per photo | acc@1 | "
          "extraction ms per photo |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (catalogue, queries, wide) in sets(Path(args.cache_dir)).items():
        configs = [("rootsift", m, 512, 400) for m in ("affine", "homography")] + \
                  [("rootsift", "affine", ws, cap) for ws, cap in ((384, 400), (768, 400), (512, 200), (512, 800))]
        configs += [("sift", "affine", 512, 400), ("orb", "affine", 512, 400), ("orb", "homography", 512, 400)]
        cache: dict = {}
        for extractor, method, size, cap in configs:
            settings = Settings(working_size=size, max_keypoints=cap, rotate_wide=wide)
            key = ("orb" if extractor == "orb" else "sift", size, cap)
            if key not in cache:
                started = time.perf_counter()
                extract = (lambda items: orb_features(items, settings)) if extractor == "orb" else \
                    (lambda items: [photo_features(p, settings, v) for p, _, v in items])
                features = (extract(catalogue), extract(queries) if queries else None)
                per_photo = (time.perf_counter() - started) / (len(catalogue) + len(queries or ()))
                cache[key] = (features, per_photo)
            (cat_features, query_features), per_photo = cache[key]
            score = orb_scorer(method) if extractor == "orb" else sift_scorer(extractor == "rootsift", method)
            acc = accuracy(catalogue, queries, cat_features, query_features, score)
            count = np.mean([len(f[0]) if extractor == "orb" else len(f) for f in cat_features])
            print(f"| {name} | {extractor} | {method} | {size} | {cap} | {count:.0f} | {acc:.3f} | "
                  f"{1000 * per_photo:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
