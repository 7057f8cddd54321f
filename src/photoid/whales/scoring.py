"""The Where's Whale-do metric, computed as the organisers' scorer computes it, and `photoid score-ranking`.

Per query, the submitted rows are taken in score order and scored by average precision against the truth
(sklearn's definition: rows with equal scores are pooled, so their order does not matter); that precision is
multiplied by (true matches submitted) / min(true matches in the truth, 20). A query with no true match submitted
scores 0. The official mean skips a query that the submission leaves out entirely, and one that the truth does
not know; `map_strict` counts a left-out query as 0. Like the organisers' scorer, nothing caps the rows per
query or removes repeated rows (a repeated true match counts each time); both are reported so they can be
fixed. Scores must lie in [0, 1], and the columns must be `query_id, database_image_id, score`.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from photoid.core.errors import PhotoidError, ProblemList
from photoid.core import fs
from photoid.core.tables import read_csv_strict, relative_path_problem
from photoid.whales.data import SCENARIOS_FILE, load_truth, read_csv_checked

PREDICTION_LIMIT = 20
QUERY, DATABASE, SCORE = "query_id", "database_image_id", "score"


def check_submission(frame: pd.DataFrame, file: str = "submission") -> pd.DataFrame:
    """The submission with numeric scores, or ValidationError: the organisers' rules (a `query_id` column, the
    other columns exactly `database_image_id, score` in that order, every score a number in [0, 1])."""
    problems = ProblemList()
    others = [c for c in frame.columns if c != QUERY]
    if list(frame.columns).count(QUERY) != 1 or others != [DATABASE, SCORE]:
        got = ", ".join(map(str, frame.columns))
        problems.add(file, 1, f"columns must be {QUERY}, {DATABASE}, {SCORE}; got {got}")
        problems.raise_if_any(title="invalid submission")
    scores = pd.to_numeric(frame[SCORE], errors="coerce")
    bad = ~scores.between(0.0, 1.0)
    for i in np.flatnonzero(bad.to_numpy())[:50]:
        problems.add(file, int(i) + 2, f"score {str(frame[SCORE].iat[i])!r} is not a number in [0, 1]")
    if bad.sum() > 50:
        problems.add(file, None, f"... {int(bad.sum()) - 50} more scores outside [0, 1]")
    problems.raise_if_any(title="invalid submission")
    return pd.DataFrame({QUERY: frame[QUERY].astype(str), DATABASE: frame[DATABASE].astype(str),
                         SCORE: scores.astype(np.float64)})


def read_submission(path: str | Path) -> pd.DataFrame:
    """Read and check a submission file (ids as text, scores parsed by pandas as the organisers' scorer does)."""
    path = fs.as_path(path)
    try:
        if not path.exists():
            raise FileNotFoundError(str(path))
        frame = read_csv_strict(path, dtype={QUERY: str, DATABASE: str}, keep_default_na=False)
    except FileNotFoundError:
        raise PhotoidError(f"{path}: file is missing") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise PhotoidError(f"{path}: cannot be read as CSV ({err})") from None
    return check_submission(frame, str(path))


def per_query_scores(submission: pd.DataFrame, truth: pd.DataFrame, limit: int = PREDICTION_LIMIT) -> pd.DataFrame:
    """One row per query of the submission or the truth, indexed by `query_id`:
    `n_rows`, `n_true_submitted`, `n_true`, `average_precision`, `top1` (the best-scored row, first in file
    order among equal scores, is a true match) and `score` (NaN where the official mean skips the query)."""
    merged = submission[[QUERY, DATABASE, SCORE]].merge(
        truth[[QUERY, DATABASE]].assign(hit=1.0), how="left", on=[QUERY, DATABASE])
    merged["hit"] = merged["hit"].fillna(0.0)
    grouped = merged.groupby(QUERY, sort=False)
    best_row = grouped[SCORE].idxmax()     # the first row with the query's highest score
    table = pd.DataFrame({
        "n_rows": grouped.size(),
        "n_true_submitted": grouped["hit"].sum().astype(np.int64),
        "average_precision": _average_precisions(merged),
        "top1": pd.Series(merged.loc[best_row.to_numpy(), "hit"].to_numpy() > 0, index=best_row.index),
    })
    n_true = truth.groupby(QUERY).size()
    table = table.join(n_true.rename("n_true"), how="outer")
    table["n_rows"] = table["n_rows"].fillna(0).astype(np.int64)
    table["n_true_submitted"] = table["n_true_submitted"].fillna(0).astype(np.int64)
    table["top1"] = table["top1"].astype("boolean").fillna(False).astype(bool)
    # The organisers' order of operations: AP × true submitted ÷ min(true, limit); NaN when either side lacks it.
    table["score"] = table["average_precision"] * table["n_true_submitted"] / table["n_true"].clip(upper=limit)
    return table[["n_rows", "n_true_submitted", "n_true", "average_precision", "top1", "score"]]


def _average_precisions(merged: pd.DataFrame) -> pd.Series:
    """sklearn's average precision per query, vectorised: rows sorted by score, equal scores pooled into one
    step of the precision-recall curve; AP = Σ over steps (true rows in step / all true) × precision so far.
    A query without a true row gets 0, as in the organisers' scorer."""
    rows = merged.sort_values([QUERY, SCORE], ascending=[True, False], kind="mergesort")
    query, score, hit = rows[QUERY].to_numpy(), rows[SCORE].to_numpy(), rows["hit"].to_numpy()
    new_step = np.ones(len(rows), dtype=bool)
    new_step[1:] = (query[1:] != query[:-1]) | (score[1:] != score[:-1])
    steps = pd.DataFrame({"query": query, "hit": hit, "step": np.cumsum(new_step)}).groupby("step", sort=False).agg(
        query=("query", "first"), hits=("hit", "sum"), size=("hit", "size"))
    by_query = steps.groupby("query", sort=False)
    precision = by_query["hits"].cumsum() / by_query["size"].cumsum()
    total = by_query["hits"].sum()
    ap = (steps["hits"] * precision).groupby(steps["query"], sort=False).sum() / total
    return ap.where(total > 0, 0.0)


def score_ranking(submission: pd.DataFrame, truth: pd.DataFrame,
                  query_viewpoints: Mapping[str, str] | None = None) -> dict:
    """`map` (official), `map_strict` (a query missing from the submission scores 0), `top1` (over the truth's
    queries, missing ones counting as misses), counts, and per-viewpoint figures when `query_viewpoints` maps
    query ids to the viewpoint of their image."""
    submission = check_submission(submission)
    table = per_query_scores(submission, truth[[QUERY, DATABASE]].astype(str))
    result = _summary(table)
    result["n_over_limit"] = int((table["n_rows"] > PREDICTION_LIMIT).sum())
    result["n_duplicate_rows"] = int(submission.duplicated([QUERY, DATABASE]).sum())
    if query_viewpoints is not None:
        viewpoint = table.index.map(lambda q: query_viewpoints.get(q, "unknown"))
        result["by_viewpoint"] = {v: _summary(table[viewpoint == v]) for v in sorted(set(viewpoint))}
    return result


def _summary(table: pd.DataFrame) -> dict:
    in_truth = table["n_true"].notna()
    missing = in_truth & (table["n_rows"] == 0)
    return {
        "map": _mean(table["score"].dropna()),
        "map_strict": _mean(table.loc[in_truth, "score"].fillna(0.0)),
        "top1": _mean(table.loc[in_truth, "top1"].astype(float)),
        "n_queries": int(in_truth.sum()),
        "n_scored": int(table["score"].notna().sum()),
        "n_missing": int(missing.sum()),
        "n_unknown": int((~in_truth).sum()),
    }


def _mean(values: pd.Series) -> float:
    return float(values.mean()) if len(values) else math.nan


def query_viewpoints(metadata_path: str | Path, query_ids) -> dict[str, str]:
    """Viewpoint of each query's image. The query → image mapping comes from the scenario files beside the
    metadata when there are any, otherwise from the competition's query ids `<scenario_id>-<image_id>`."""
    metadata_path = Path(metadata_path)
    problems = ProblemList()
    metadata = read_csv_checked(metadata_path, ("image_id", "viewpoint"), problems)
    problems.raise_if_any(title="invalid metadata")
    viewpoint_of = dict(zip(metadata["image_id"], metadata["viewpoint"].str.strip().str.lower()))
    image_of = _query_images(metadata_path.parent)
    result = {}
    for query_id in query_ids:
        image = image_of.get(query_id) or _image_in_query_id(query_id, viewpoint_of)
        if image in viewpoint_of:
            result[query_id] = viewpoint_of[image]
    return result


def _query_images(folder: Path) -> dict[str, str]:
    if not (folder / SCENARIOS_FILE).exists():
        return {}
    problems = ProblemList()
    index = read_csv_checked(folder / SCENARIOS_FILE, ("queries_path",), problems)
    image_of: dict[str, str] = {}
    for line, relative in ([] if index is None else index["queries_path"].items()):
        reason = relative_path_problem(relative)
        if reason:
            problems.add(str(folder / SCENARIOS_FILE), line, f"queries_path {relative!r} {reason}")
            continue
        queries = read_csv_checked(folder / relative, ("query_id", "query_image_id"), problems)
        if queries is not None:
            image_of.update(zip(queries["query_id"], queries["query_image_id"]))
    problems.raise_if_any(title="invalid query scenarios")
    return image_of


def _image_in_query_id(query_id: str, known: Mapping[str, str]) -> str | None:
    parts = query_id.split("-")
    for start in range(1, len(parts)):
        candidate = "-".join(parts[start:])
        if candidate in known:
            return candidate
    return query_id if query_id in known else None


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--submission", required=True,
                        help="submission CSV: query_id,database_image_id,score")
    parser.add_argument("--truth", required=True, type=Path, help="ground truth CSV: query_id,database_image_id")
    parser.add_argument("--metadata", type=Path, help="metadata.csv, for scores per viewpoint of the query image")
    parser.add_argument("--json", action="store_true", help="print one JSON object (first key: map)")


def run(args: argparse.Namespace) -> int:
    submission = read_submission(args.submission)
    truth = load_truth(args.truth)
    viewpoints = None
    if args.metadata is not None:
        viewpoints = query_viewpoints(args.metadata, pd.unique(pd.concat([submission[QUERY], truth[QUERY]])))
    result = score_ranking(submission, truth, viewpoints)
    if args.json:
        print(json.dumps(_json_safe(result)))
    else:
        print(_report(result))
    return 0


def _json_safe(value):
    """NaN (no query to average) becomes null, which JSON can carry."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return None if isinstance(value, float) and math.isnan(value) else value


def _report(result: dict) -> str:
    lines = [
        f"mAP (official; queries left out are skipped): {result['map']:.4f}",
        f"mAP (strict; queries left out score 0):       {result['map_strict']:.4f}",
        f"top-1 accuracy:                               {result['top1']:.4f}",
        f"queries: {result['n_queries']} in the truth, {result['n_scored']} scored, {result['n_missing']} left "
        f"out of the submission, {result['n_unknown']} not in the truth",
    ]
    if result["n_over_limit"] or result["n_duplicate_rows"]:
        lines.append(f"warning: {result['n_over_limit']} queries have more than {PREDICTION_LIMIT} rows and "
                     f"{result['n_duplicate_rows']} rows repeat a (query, database image) pair; the organisers' "
                     "scorer counts them all, the competition forbids them")
    for viewpoint, part in result.get("by_viewpoint", {}).items():
        lines.append(f"  {viewpoint:<8} mAP {part['map']:.4f}  strict {part['map_strict']:.4f}  "
                     f"top-1 {part['top1']:.4f}  ({part['n_queries']} queries)")
    return "\n".join(lines)
