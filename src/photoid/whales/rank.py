"""`photoid rank`: trained ArcFace runs → embeddings of the scenario images → a Where's Whale-do submission.

Each fold model of each run embeds every test record (the scenario images written by `photoid whale-records`).
With flip TTA (the winner's) an image's embedding is the mean of its own and its horizontal mirror's L2-normalised
embeddings, normalised again. Fold models are trained apart, so their embedding spaces are unrelated: averaging
their vectors would add coordinates that mean different things. They are joined as the winner joined them, by
concatenating the normalised embeddings (each scaled by 1/√n); the cosine of two joined vectors is then exactly
the mean of the n models' cosines. Runs are joined the same way, whatever their embedding sizes, each run weighing
as much as any other whatever its number of folds (the winner's 0.75/0.25 blend of two backbones is not offered).
On the demo's synthetic belugas, a plain mean of the fold embeddings scored within 0.003 mAP of the concatenation;
only the concatenation is right for any models.

Top and lateral views may use their own runs (`--run_top`, `--run_lateral`): a query seen from the left or right
is ranked with the lateral runs' embeddings of itself and its whole database, a top query with the top runs'.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from photoid.config import parse_folds
from photoid.errors import PhotoidError
from photoid.io import write_csv
from photoid.whales.ranking import BACKENDS, SUBMISSION_COLUMNS, normalize_rows, rank_scenarios

TRUTH_FILE = "example_labels.csv"  # the organisers' name for the true matches of their example scenarios
LATERAL_VIEWPOINTS = ("left", "right")
RANDOM_DRAWS = 10  # random rankings averaged for the chance-level reference


def join_embeddings(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Unit rows whose dot products are the mean of the parts' cosine similarities: each part normalised,
    scaled by 1/√n, and concatenated. Parts may differ in width, never in rows."""
    if not parts:
        raise ValueError("no embeddings to join")
    if len({len(p) for p in parts}) != 1:
        raise ValueError(f"embeddings of different images cannot be joined: rows {[len(p) for p in parts]}")
    scale = np.float32(1.0 / math.sqrt(len(parts)))
    return np.concatenate([normalize_rows(p) * scale for p in parts], axis=1)


def embed_files(model, files: list[str], *, dim: int, dim_pre: int, batch_size: int, flip: bool) -> np.ndarray:
    """L2-normalised embeddings of every record in `files`, in reading order; with `flip` the normalised mean of
    the image's and its horizontal mirror's normalised embeddings."""
    from photoid.augment import TRANSFORM_NAMES
    from photoid.pipeline import build_dataset

    def embed(tta: int) -> np.ndarray:
        ds = build_dataset(files, dim=dim, dim_pre=dim_pre, batch_size=batch_size, training=False, tta=tta)
        return normalize_rows(model.predict(ds.map(lambda image, label: image), verbose=0))

    embeddings = embed(0)
    if flip:
        embeddings = normalize_rows(embeddings + embed(TRANSFORM_NAMES.index("flip_left_right")))
    return embeddings


def run_embeddings(run_dir: str | Path, files: list[str], records_dir: str, *, folds: list[int] | None,
                   batch_size: int, flip: bool) -> tuple[np.ndarray, dict]:
    """The joined fold embeddings of one run for `files`, and what produced them (folds, sizes)."""
    import tf_keras

    from photoid.model import build_models_from_config, load_weights_file
    from photoid.runs import choose_folds, load_run
    from photoid.train import BEST_WEIGHTS

    # The reader resizes whatever the records store, so the run's own records need not be on this machine.
    run = load_run(run_dir, records_dir=records_dir)
    cfg = run.config
    if cfg.task != "whales":
        raise PhotoidError(f"{run.run_dir} was trained for task {cfg.task!r}; rank needs a whales run")
    _check_same_mirroring(Path(cfg.records_dir), Path(records_dir), run.run_dir)
    chosen = choose_folds(run, folds)
    parts = []
    for fold in chosen:
        tf_keras.backend.clear_session()
        # Every weight comes from the fold's file, so no pretrained set is fetched.
        models = build_models_from_config(dataclasses.replace(cfg, weights="none"), len(run.classes))
        load_weights_file(models.predict, run.run_dir / f"fold_{fold}" / BEST_WEIGHTS, len(run.classes))
        parts.append(embed_files(models.embed, files, dim=cfg.dim, dim_pre=cfg.dim_pre, batch_size=batch_size,
                                 flip=flip))
    info = {"run": str(run.run_dir), "recipe": cfg.model, "folds": chosen, "size": int(parts[0].shape[1])}
    return join_embeddings(parts), info


def _check_same_mirroring(trained_on: Path, ranked: Path, run_dir: Path) -> None:
    """Refuse test records whose right views are stored otherwise than in the run's training records (when
    those can be found here): a model that only saw mirrored right views would be shown unmirrored ones."""
    from photoid.io import read_json
    from photoid.records import MANIFEST_NAME

    if not (trained_on / MANIFEST_NAME).is_file() or not (ranked / MANIFEST_NAME).is_file():
        return
    trained = read_json(trained_on / MANIFEST_NAME).get("settings", {}).get("mirror_right")
    given = read_json(ranked / MANIFEST_NAME).get("settings", {}).get("mirror_right")
    if trained != given:
        raise PhotoidError(f"{run_dir} was trained on records with mirror_right={trained} ({trained_on}), but the "
                           f"records of {ranked} have mirror_right={given}; rebuild them with the same setting")


def random_ranking(scenarios: Iterable, top_k: int, seed: int) -> pd.DataFrame:
    """A ranking by chance over the same candidates: for each query, `top_k` of its database images (its own
    image excluded) in random order, with decreasing random scores in [0, 1)."""
    rng = np.random.default_rng(seed)
    frames = []
    for _, queries, database in scenarios:
        db = database["database_image_id"].to_numpy(dtype=object)
        for query_id, image_id in zip(queries["query_id"], queries["query_image_id"]):
            candidates = db[db != image_id]
            chosen = candidates[rng.permutation(len(candidates))[:top_k]]
            scores = np.sort(rng.random(len(chosen)))[::-1]
            frames.append(pd.DataFrame({"query_id": query_id, "database_image_id": chosen, "score": scores}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SUBMISSION_COLUMNS)


def rank_by_view(scenarios: list, image_ids: list[str], viewpoint_of: dict[str, str],
                 embeddings_top: np.ndarray, embeddings_lateral: np.ndarray, **options) -> pd.DataFrame:
    """One submission: top queries ranked with `embeddings_top`, lateral queries with `embeddings_lateral`
    (rows of both aligned with `image_ids`), queries in their scenario files' order."""
    parts = []
    for lateral, embeddings in ((False, embeddings_top), (True, embeddings_lateral)):
        chosen = [(sid, q[q["query_image_id"].map(viewpoint_of).isin(LATERAL_VIEWPOINTS) == lateral], db)
                  for sid, q, db in scenarios]
        parts.append(rank_scenarios([s for s in chosen if len(s[1])], image_ids, embeddings, **options))
    order = {qid: i for i, qid in enumerate(qid for _, q, _ in scenarios for qid in q["query_id"])}
    ranked = pd.concat(parts, ignore_index=True)
    position = ranked["query_id"].map(order)
    return ranked.iloc[np.argsort(position.to_numpy(), kind="stable")].reset_index(drop=True)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", nargs="+", default=[], metavar="RUN_DIR", help="trained run folders (every view)")
    parser.add_argument("--run_top", nargs="+", default=None, metavar="RUN_DIR",
                        help="runs for top-view queries (default: --run)")
    parser.add_argument("--run_lateral", nargs="+", default=None, metavar="RUN_DIR",
                        help="runs for left/right-view queries (default: --run)")
    parser.add_argument("--data_dir", required=True, help="Where's Whale-do folder with metadata and query scenarios")
    parser.add_argument("--records_dir", default=None, help="its records (default: DATA_DIR/tfrec)")
    parser.add_argument("--out", required=True, type=Path, help="submission CSV to write")
    parser.add_argument("--folds", type=parse_folds, default=None, help="folds to use, e.g. 0,1 (default: all trained)")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                        help="flip TTA: mean of the image's and its mirror's embeddings (--no-flip: image only)")
    parser.add_argument("--query_expansion", action="store_true", help="the winner's query expansion")
    parser.add_argument("--backend", choices=BACKENDS, default="numpy", help="similarity search")
    parser.add_argument("--top_k", type=int, default=20, help="database images per query (the competition: 20)")
    parser.add_argument("--batch_size", type=int, default=64, help="images per prediction batch")


def run(args: argparse.Namespace) -> int:
    from photoid.predict import read_record_ids
    from photoid.records import test_files
    from photoid.whales.data import load_belugas

    started = time.perf_counter()
    top_runs, lateral_runs = args.run_top or args.run, args.run_lateral or args.run
    if not top_runs or not lateral_runs:
        raise PhotoidError("name the runs to rank with: --run for every view, or both --run_top and --run_lateral")
    if args.top_k < 1 or args.batch_size < 1:
        raise PhotoidError(f"--top_k and --batch_size must be at least 1, got {args.top_k} and {args.batch_size}")
    data = load_belugas(args.data_dir, check_images=False)
    if not data.scenarios:
        raise PhotoidError(f"{args.data_dir} has no query scenarios (query_scenarios.csv) to rank")
    records_dir = args.records_dir or str(Path(args.data_dir) / "tfrec")
    files = test_files(records_dir)
    image_ids = read_record_ids(files)
    needed = {i for _, q, d in data.scenarios for i in (*q["query_image_id"], *d["database_image_id"])}
    missing = sorted(needed - set(image_ids))
    if missing:
        raise PhotoidError(f"{len(missing)} scenario images are not in the test records of {records_dir} (e.g. "
                           f"{', '.join(missing[:5])}); rebuild them with photoid whale-records")

    embeddings, infos = {}, []
    for runs in dict.fromkeys([tuple(top_runs), tuple(lateral_runs)]):   # once when both views share the runs
        parts = [run_embeddings(run_dir, files, records_dir, folds=args.folds, batch_size=args.batch_size,
                                flip=args.flip) for run_dir in runs]
        embeddings[runs] = join_embeddings([part for part, _ in parts])
        infos += [info for _, info in parts]
    viewpoint_of = dict(zip(data.metadata["image_id"], data.metadata["viewpoint"]))
    options = dict(top_k=args.top_k, query_expansion=args.query_expansion, backend=args.backend)
    submission = rank_by_view(data.scenarios, image_ids, viewpoint_of, embeddings[tuple(top_runs)],
                              embeddings[tuple(lateral_runs)], **options)
    write_csv(args.out, submission)

    n_queries = sum(len(q) for _, q, _ in data.scenarios)
    for info in infos:
        print(f"run {info['run']} ({info['recipe']}): folds {info['folds']}, embeddings of {info['size']} per fold")
    print(f"ranked {n_queries} queries in {len(data.scenarios)} scenarios ({len(image_ids)} images, flip TTA "
          f"{'on' if args.flip else 'off'}, query expansion {'on' if args.query_expansion else 'off'}): "
          f"{len(submission)} rows written to {args.out} in {time.perf_counter() - started:.1f} s")
    truth_path = Path(args.data_dir) / TRUTH_FILE
    if truth_path.exists():
        print(evaluation_report(submission, truth_path, data.scenarios, viewpoint_of, args.top_k))
    return 0


def evaluation_report(submission: pd.DataFrame, truth_path: Path, scenarios: list, viewpoint_of: dict[str, str],
                      top_k: int) -> str:
    """mAP of the submission against the truth, and of random rankings of the same candidates."""
    from photoid.whales.data import load_truth
    from photoid.whales.scoring import score_ranking

    truth = load_truth(truth_path)
    query_view = {qid: viewpoint_of[img] for _, q, _ in scenarios
                  for qid, img in zip(q["query_id"], q["query_image_id"])}
    result = score_ranking(submission, truth, query_view)
    chance = [score_ranking(random_ranking(scenarios, top_k, seed), truth) for seed in range(RANDOM_DRAWS)]
    lines = [f"against {truth_path}: mAP {result['map']:.4f} (official), {result['map_strict']:.4f} (strict), "
             f"top-1 {result['top1']:.4f}, {result['n_queries']} queries",
             f"random ranking of the same candidates (mean of {RANDOM_DRAWS}): mAP "
             f"{np.mean([c['map'] for c in chance]):.4f} (official), "
             f"{np.mean([c['map_strict'] for c in chance]):.4f} (strict)"]
    for view, part in result["by_viewpoint"].items():
        lines.append(f"  {view:<6} mAP {part['map']:.4f}  top-1 {part['top1']:.4f}  ({part['n_queries']} queries)")
    return "\n".join(lines)
