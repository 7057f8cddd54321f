"""The original's ensemble: average runs' test predictions, apply the `new_turtle` rule, write a submission.

The rule itself (`photoid.labels.top_labels`) is shared with metrics, `identify` and the catalogue.
"""

from __future__ import annotations

import argparse
import functools
import re
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from photoid.data import PREDICTION_COLUMNS, load_turtles
from photoid.errors import PhotoidError
from photoid.io import file_sha256, load_npy, read_json, write_csv
from photoid.labels import NEW_TURTLE, classes_sha256, top_labels

SUBMISSION_COLUMNS = ["image_id", *PREDICTION_COLUMNS]
MANIFEST_KEYS = ("recipe", "split", "fold", "tta", "n_classes", "classes_sha256", "row_ids", "data_dir")
BEST_WEIGHTS = "best.weights.h5"  # a fold's weights in a run folder (photoid.train writes it)
_PRED_NAME = re.compile(r"^y_pred_(val|test)_fold_(\d+)_tta_(\d+)\.npy$")


# ----------------------------------------------------------------------------- run predictions

def _read_id_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise PhotoidError(f"{path}: file not found (every run directory holds classes.txt and original_ids.txt)")
    lines = path.read_text(encoding="utf-8").splitlines()
    problems = [f"line {i}: empty" for i, line in enumerate(lines, 1) if not line.strip()]
    if not lines:
        problems.append("no ids")
    if len(set(lines)) != len(lines):
        problems.append("repeated ids")
    if problems:
        raise PhotoidError(f"{path}: " + "; ".join(problems[:5]))
    return lines


def read_run_classes(run_dir: str | Path) -> list[str]:
    """The run's label order: class i of every prediction file is line i of classes.txt."""
    return _read_id_lines(Path(run_dir) / "classes.txt")


def read_run_original_ids(run_dir: str | Path) -> list[str]:
    """The ids the leaderboard knows by name (train.csv's); all others are `new_turtle`."""
    return _read_id_lines(Path(run_dir) / "original_ids.txt")


def _first_difference(a: list[str], b: list[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b), 1):
        if x != y:
            return f"line {i}: {x!r} vs {y!r}"
    return f"{len(a)} vs {len(b)} lines"


def remove_fold_predictions(run_dir: Path, fold: int) -> None:
    """Delete fold `fold`'s prediction files (validation and test, every TTA) and their manifests."""
    for path in (Path(run_dir) / "preds").glob(f"y_pred_*_fold_{fold}_tta_*"):
        if _PRED_NAME.match(path.with_suffix(".npy").name):
            path.unlink()


def _expected_folds_and_ttas(run_dir: Path, found: set[tuple[int, int]], folds: Sequence[int] | None,
                             ttas: Sequence[int] | None) -> tuple[list[int], list[int]]:
    """The folds and TTAs whose predictions count: the given ones, else the run's own (as the original read them).

    Folds: those that finished training (fold_K/done.json), or, in a run that trained none (predictions of a given
    weights file), those with predictions. TTAs: 0..tta_number of the run's config.json, else those found.
    """
    if folds is None:
        trained = sorted(int(d.name[5:]) for d in run_dir.glob("fold_*")
                         if d.name[5:].isdigit() and (d / "done.json").exists())
        folds = trained or sorted({f for f, _ in found})
    if ttas is None:
        config = read_json(run_dir / "config.json") if (run_dir / "config.json").is_file() else {}
        tta_number = config.get("tta_number") if isinstance(config, dict) else None
        ttas = range(tta_number + 1) if isinstance(tta_number, int) else sorted({t for _, t in found})
    return sorted(set(folds)), sorted(set(ttas))


def expected_prediction_files(run_dir: Path, split: str, folds: Sequence[int] | None = None,
                              ttas: Sequence[int] | None = None) -> list[tuple[int, int, Path]]:
    """The run's expected prediction files as (fold, tta, path), TTA-major as the original looped over them.

    Exactly the chosen folds x TTAs (see `_expected_folds_and_ttas`): other files in preds/ (an earlier
    configuration's extra TTAs or folds) are not read, and a missing one is an error naming it.
    """
    found = {}
    for path in sorted((run_dir / "preds").glob(f"y_pred_{split}_fold_*_tta_*.npy")):
        match = _PRED_NAME.match(path.name)
        if match:
            found[int(match.group(2)), int(match.group(3))] = path
    if not found:
        raise PhotoidError(f"{run_dir}: no {split} predictions in {run_dir / 'preds'}")
    chosen_folds, chosen_ttas = _expected_folds_and_ttas(run_dir, set(found), folds, ttas)
    missing = [(f, t) for t in chosen_ttas for f in chosen_folds if (f, t) not in found]
    if missing:
        names = ", ".join(f"y_pred_{split}_fold_{f}_tta_{t}.npy" for f, t in missing[:5])
        raise PhotoidError(f"{run_dir}: missing {len(missing)} of the expected prediction files ({names}); "
                           f"folds {chosen_folds}, TTAs {chosen_ttas} are expected. Predict them again "
                           "(--job val or test) or choose folds and TTAs")
    return [(f, t, found[f, t]) for t in chosen_ttas for f in chosen_folds]


def load_prediction(path: Path, split: str, fold: int, tta: int, classes: list[str]) -> tuple[np.ndarray, list]:
    """One prediction file and its row ids, refused unless its manifest vouches for it."""
    probs = load_npy(path)  # first: a file that is no numeric array is refused as such
    manifest_path = path.with_suffix(".json")
    if not manifest_path.is_file():
        raise PhotoidError(f"{path}: its manifest {manifest_path.name} is missing, so its rows and classes "
                           "cannot be checked")
    manifest = read_json(manifest_path)
    absent = [key for key in MANIFEST_KEYS if key not in manifest]
    if absent:
        raise PhotoidError(f"{manifest_path}: missing keys {absent}")
    expected = {"split": split, "fold": fold, "tta": tta, "n_classes": len(classes),
                "classes_sha256": classes_sha256(classes)}
    wrong = [f"{key} is {manifest[key]!r}, expected {value!r}" for key, value in expected.items()
             if manifest[key] != value]
    if wrong:
        raise PhotoidError(f"{manifest_path}: does not match {path.parent.parent / 'classes.txt'} and the file "
                           "name: " + "; ".join(wrong))
    weights = path.parent.parent / f"fold_{fold}" / BEST_WEIGHTS
    recorded = manifest.get("weights_sha256")
    if recorded is not None and weights.is_file() and recorded != weights_sha256(weights):
        raise PhotoidError(f"{path}: stale: it was predicted by other weights than the fold's {weights} (retrained "
                           "since). Predict again (--job val or test)")
    row_ids = manifest["row_ids"]
    if not isinstance(row_ids, list) or len(set(map(str, row_ids))) != len(row_ids):
        raise PhotoidError(f"{manifest_path}: row_ids must be a list of distinct image ids")
    if probs.shape != (len(row_ids), len(classes)):
        raise PhotoidError(f"{path}: shape {probs.shape}, but its manifest lists {len(row_ids)} rows and the run "
                           f"has {len(classes)} classes")
    if not np.isfinite(probs).all():
        raise PhotoidError(f"{path}: holds NaN or infinite values")
    return probs, [str(r) for r in row_ids]


@functools.lru_cache(maxsize=64)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def weights_sha256(path: Path) -> str:
    """sha256 of a weights file, computed once per file version (every TTA's predictions check the same file)."""
    stat = path.stat()
    return _cached_sha256(str(path), stat.st_size, stat.st_mtime_ns)


def load_run_predictions(run_dirs: Sequence[str | Path], split: str = "test", folds: Sequence[int] | None = None,
                         ttas: Sequence[int] | None = None):
    """Average the chosen prediction files of runs that share one label order.

    `folds`/`ttas` None means the run's own: its trained folds and TTA 0..tta_number (see
    `expected_prediction_files`). Test predictions must all list the same rows in the same
    order and are averaged (arithmetic mean, files in run, TTA, fold order as the original summed them).
    Validation predictions cover each fold's own images: they are averaged per fold and the folds stacked.
    Returns (mean_probs, row_ids, classes, original_ids, used files).
    """
    if split not in ("val", "test"):
        raise PhotoidError(f"split must be 'val' or 'test', got {split!r}")
    if not run_dirs:
        raise PhotoidError("no run directories given")
    runs = [Path(d) for d in run_dirs]
    for run in runs:
        if not run.is_dir():
            raise PhotoidError(f"{run}: run directory not found")
    classes, original_ids = read_run_classes(runs[0]), read_run_original_ids(runs[0])
    unknown = sorted(set(original_ids) - set(classes))
    if unknown:
        raise PhotoidError(f"{runs[0] / 'original_ids.txt'}: {len(unknown)} ids are not in classes.txt, "
                           f"e.g. {unknown[0]!r}")
    by_fold: dict[int, list[tuple[np.ndarray, list, Path]]] = {}
    used: list[str] = []
    for run in runs:
        for name, theirs, ours in (("classes.txt", read_run_classes(run), classes),
                                   ("original_ids.txt", read_run_original_ids(run), original_ids)):
            if theirs != ours:
                raise PhotoidError(f"{run / name} differs from {runs[0] / name} ({_first_difference(theirs, ours)}); "
                                   "only runs trained on the same labels can be averaged")
        for fold, tta, path in expected_prediction_files(run, split, folds, ttas):
            probs, row_ids = load_prediction(path, split, fold, tta, classes)
            group = by_fold.setdefault(fold if split == "val" else 0, [])
            if group and row_ids != group[0][1]:
                raise PhotoidError(f"{path}: its rows (image ids in its manifest) differ from those of "
                                   f"{group[0][2]}; predictions of different images cannot be averaged")
            group.append((probs, row_ids, path))
            used.append(str(path))
    means = [np.mean(np.stack([p for p, _, _ in by_fold[f]]), axis=0) for f in sorted(by_fold)]
    row_ids = [r for f in sorted(by_fold) for r in by_fold[f][0][1]]
    if len(set(row_ids)) != len(row_ids):
        raise PhotoidError("validation predictions of different folds share image ids; the runs' folds disagree")
    return np.concatenate(means), row_ids, classes, original_ids, used


# ----------------------------------------------------------------------------- submission

def make_submission(mean_probs: np.ndarray, row_ids: Sequence[str], classes: Sequence[str],
                    original_ids: Sequence[str], sample_submission_ids: Sequence[str]) -> pd.DataFrame:
    """The submission table: `image_id, prediction1..prediction5`, rows in sample_submission order."""
    row_ids = [str(r) for r in row_ids]
    if len(row_ids) != len(mean_probs):
        raise PhotoidError(f"{len(row_ids)} row ids for {len(mean_probs)} rows of predictions")
    index = {rid: i for i, rid in enumerate(row_ids)}
    if len(index) != len(row_ids):
        raise PhotoidError("the predictions list some image ids more than once")
    wanted = [str(s) for s in sample_submission_ids]
    if len(set(wanted)) != len(wanted):
        raise PhotoidError("sample_submission.csv lists some image ids more than once")
    missing = [s for s in wanted if s not in index]
    if missing:
        raise PhotoidError(f"the predictions lack {len(missing)} of the {len(wanted)} images of "
                           f"sample_submission.csv, e.g. {', '.join(missing[:5])}")
    labels, _ = top_labels(np.asarray(mean_probs)[[index[s] for s in wanted]], classes, original_ids, k=5)
    frame = pd.DataFrame(labels, columns=SUBMISSION_COLUMNS[1:])
    frame.insert(0, "image_id", wanted)
    return frame


def write_submission(frame: pd.DataFrame, path: str | Path) -> None:
    """Write the submission CSV atomically: an interrupted run never leaves half a file behind."""
    write_csv(path, frame)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,1 — got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative integers such as 0,1 — got {text!r}")
    return values


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (runs/<name>)")
    parser.add_argument("--data_dir", required=True, help="competition folder (sample_submission.csv gives the rows)")
    parser.add_argument("--out", required=True, help="submission CSV to write")
    parser.add_argument("--folds", type=_int_list, help="folds to average, e.g. 0,1 (default: all found)")
    parser.add_argument("--tta", type=_int_list, help="TTA indices to average, e.g. 0,1 (default: all found)")


def run(args: argparse.Namespace) -> int:
    data = load_turtles(args.data_dir, check_images=False)
    probs, row_ids, classes, original_ids, used = load_run_predictions(args.run_dirs, "test", args.folds, args.tta)
    if set(original_ids) != set(data.original_ids):
        raise PhotoidError(f"the runs' original_ids.txt ({len(original_ids)} ids) differs from the turtle ids of "
                           f"{Path(args.data_dir) / 'train.csv'} ({len(data.original_ids)} ids): the runs were "
                           "trained on other data, so their new_turtle mapping does not fit this folder")
    frame = make_submission(probs, row_ids, classes, original_ids, data.sample_submission["image_id"].tolist())
    write_submission(frame, args.out)
    files_per_run = Counter(Path(u).parent.parent for u in used)
    per_run = ", ".join(f"{Path(d).name}: {files_per_run[Path(d)]}" for d in args.run_dirs)
    n_new = int((frame["prediction1"] == NEW_TURTLE).sum())
    print(f"averaged {len(used)} test prediction files from {len(args.run_dirs)} runs ({per_run})")
    print(f"wrote {len(frame)} rows to {args.out} ({n_new} with {NEW_TURTLE} first)")
    return 0
