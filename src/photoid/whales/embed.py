"""`photoid embed`: trained ArcFace runs → one embedding per scenario image, in a file `photoid rank` can read.

Each fold model of each run embeds every test record (the scenario images written by `photoid whale-records`).
With flip TTA an image's embedding is the mean of its own and its horizontal mirror's. Fold models are trained
apart, so their embedding spaces are unrelated; they are joined in one of two ways:

- `concat` (the winner's `score_4887_final/main.py`): the raw TTA mean of each fold, folds concatenated as they
  are, one cosine over the concatenation. Each fold then weighs by its embeddings' norm.
- `mean_cosine` (photoid's option): each fold's vectors L2-normalised (image and mirror normalised before their
  mean) and scaled by 1/√n before concatenating, so the cosine of two joined vectors is exactly the mean of the
  fold models' cosines, whatever their norms or widths.

Several runs given together form one family and are joined the same way as folds.

The file (`.npz`) holds `image_id` (str, one per image) and `embedding` (float32, images × width).
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from photoid.core import fs
from photoid.core.errors import PhotoidError
from photoid.core.io import atomic_path
from photoid.core.retrieval import JOINS, join_embeddings, normalize_rows
from photoid.runs.config import parse_folds
from photoid.tasks import get_task


def embed_files(model, files: list[str], *, dim: int, dim_pre: int, batch_size: int, flip: bool,
                normalize: bool = True) -> np.ndarray:
    """Embeddings of every record in `files`, in reading order; with `flip` the mean of the image's and its
    horizontal mirror's. `normalize`: each embedding L2-normalised, before and after the mean (otherwise raw,
    as the winner's)."""
    from photoid.inference.fold_models import predict_records
    from photoid.records.transforms import TRANSFORM_NAMES

    def embed(tta: int) -> np.ndarray:
        out = predict_records(model, files, dim=dim, dim_pre=dim_pre, batch_size=batch_size, tta=tta)
        return normalize_rows(out) if normalize else out

    embeddings = embed(0)
    if flip:
        mirrored = embed(TRANSFORM_NAMES.index("flip_left_right"))
        embeddings = normalize_rows(embeddings + mirrored) if normalize else (embeddings + mirrored) / 2
    return embeddings


def run_embeddings(run_dir: str | Path, files: list[str], records_dir: str, *, folds: list[int] | None,
                   batch_size: int, flip: bool, join: str = "concat") -> tuple[list[np.ndarray], dict]:
    """The fold embeddings of one run for `files` (raw for `join="concat"`, normalised otherwise), and what
    produced them (folds, sizes)."""
    import tf_keras

    from photoid.inference.fold_models import load_fold_models
    from photoid.records.reader import open_records
    from photoid.runs.loaded import choose_folds, load_run
    
    # The reader resizes whatever the records store, so the run's own records need not be on this machine.
    run = load_run(run_dir, records_dir=records_dir)
    cfg = run.config
    if not get_task(cfg.task).ranks_scenarios:
        raise PhotoidError(f"{run.run_dir} was trained for task {cfg.task!r}; rank and embed need a whales run")
    # Right views or wide photos stored otherwise than in the run's training records (when those can be found here)
    # would show the model photos it never saw.
    open_records(cfg.records_dir).check_same_mirroring(open_records(records_dir), run.run_dir)
    chosen = choose_folds(run, folds)
    parts = []
    for fold in chosen:
        tf_keras.backend.clear_session()  # one fold model in memory at a time
        model = load_fold_models(run, [fold])[0]
        parts.append(embed_files(model.embed, files, dim=cfg.dim, dim_pre=cfg.dim_pre, batch_size=batch_size,
                                 flip=flip, normalize=join != "concat"))
    info = {"run": str(run.run_dir), "recipe": cfg.model, "folds": chosen, "size": int(parts[0].shape[1])}
    return parts, info


def family_embeddings(runs: Sequence[str | Path], files: list[str], records_dir: str, *, folds, batch_size: int,
                      flip: bool, join: str) -> tuple[np.ndarray, list[dict]]:
    """One family's embeddings: every fold of every run in `runs`, joined by `join`."""
    parts, infos = [], []
    for run_dir in runs:
        run_parts, info = run_embeddings(run_dir, files, records_dir, folds=folds, batch_size=batch_size,
                                         flip=flip, join=join)
        parts += run_parts
        infos.append(info)
    return join_embeddings(parts, join), infos


def save_embeddings(path: str | Path, image_ids: Sequence[str], embeddings: np.ndarray) -> None:
    """Write `image_id` and `embedding` to an .npz file, atomically."""
    ids = np.asarray(list(image_ids), dtype=str)
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, image_id=ids, embedding=np.asarray(embeddings, dtype=np.float32))


def load_embeddings(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Read an embeddings file written by `photoid embed` (or anything with the same two arrays), checked."""
    path = fs.as_path(path)
    try:
        if not path.is_file():
            raise FileNotFoundError(str(path))
        with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as data:
            missing = {"image_id", "embedding"} - set(data.files)
            if missing:
                raise PhotoidError(f"{path}: no array(s) {', '.join(sorted(missing))}; an embeddings file holds "
                                   "image_id (str) and embedding (images × width)")
            ids, embeddings = data["image_id"], data["embedding"]
    except FileNotFoundError:
        raise PhotoidError(f"{path}: file not found") from None
    except (OSError, ValueError) as err:   # not an npz, or object arrays that would need pickle
        raise PhotoidError(f"{path}: not a readable .npz embeddings file ({err})") from None
    if ids.ndim != 1 or ids.dtype.kind not in "US":
        raise PhotoidError(f"{path}: image_id must be a 1-D array of strings, got {ids.dtype} {ids.shape}")
    if embeddings.ndim != 2 or embeddings.dtype.kind != "f" or len(embeddings) != len(ids):
        raise PhotoidError(f"{path}: embedding must be a float array of {len(ids)} rows (one per image_id), got "
                           f"{embeddings.dtype} {embeddings.shape}")
    bad = np.flatnonzero(~np.isfinite(embeddings).all(axis=1))
    if len(bad):
        raise PhotoidError(f"{path}: row {bad[0]} (image {ids[bad[0]]}) holds NaN or infinite values")
    ids = [str(i) for i in ids]
    if len(set(ids)) != len(ids):
        raise PhotoidError(f"{path}: image_id holds duplicates")
    return ids, embeddings.astype(np.float32)


def records_and_ids(records_dir: str) -> tuple[list[str], list[str]]:
    """The test record files of `records_dir` and the image id of each record, in reading order."""
    from photoid.inference.fold_models import read_record_ids
    from photoid.records.reader import test_files

    files = test_files(records_dir)
    return files, read_record_ids(files)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", nargs="+", required=True, metavar="RUN_DIR",
                        help="trained run folders of one family (their folds are joined)")
    parser.add_argument("--data_dir", required=True, help="Where's Whale-do folder whose test records to embed")
    parser.add_argument("--records_dir", default=None, help="its records (default: DATA_DIR/tfrec)")
    parser.add_argument("--out", required=True, help=".npz file to write (image_id, embedding; a gs:// URL too)")
    parser.add_argument("--folds", type=parse_folds, default=None, help="folds to use, e.g. 0,1 (default: all trained)")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                        help="flip TTA: mean of the image's and its mirror's embeddings (--no-flip: image only)")
    parser.add_argument("--join", choices=JOINS, default="concat",
                        help="folds joined raw and concatenated (concat, the winner's) or as the mean of their "
                             "cosines (mean_cosine)")
    parser.add_argument("--batch_size", type=int, default=64, help="images per prediction batch")


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.batch_size < 1:
        raise PhotoidError(f"--batch_size must be at least 1, got {args.batch_size}")
    records_dir = args.records_dir or fs.join(args.data_dir, "tfrec")
    files, image_ids = records_and_ids(records_dir)
    embeddings, infos = family_embeddings(args.run, files, records_dir, folds=args.folds,
                                          batch_size=args.batch_size, flip=args.flip, join=args.join)
    save_embeddings(args.out, image_ids, embeddings)
    for info in infos:
        print(f"run {info['run']} ({info['recipe']}): folds {info['folds']}, embeddings of {info['size']} per fold")
    print(f"{len(image_ids)} images × {embeddings.shape[1]} ({args.join}) written to {args.out} in "
          f"{time.perf_counter() - started:.1f} s")
    return 0
