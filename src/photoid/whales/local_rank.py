"""`photoid rank --local`: each query's shortlist re-ranked by the winner's score fused with local matching.

The winner's routed ranking (`photoid.whales.routing`) stays the shortlist: each query's best `shortlist` database
images. Each is matched locally with the query (`photoid.local`: RootSIFT, verified geometrically; only
comparable views: a left side never against a right side), and the pair's fused score is the weighted mean of the
two calibrated probabilities; a pair that cannot be compared (other views: the cross-view routes) keeps its
calibrated global score alone, so those routes keep the winner's order; images beyond the shortlist keep a local
score of 0, so they stay below.

Calibration on the training photos (the metadata's photos outside every scenario, which the runs trained on), out
of fold: for each fold f, the photos of fold f, which fold f's models never trained on, are pseudo-queries ranked by
the same route (top photos: the `top` route with the top families; lateral photos: the `mixed` route, lateral family
blended with `top2`) against every training photo of their view, in the space of the fold-f models only; photos a
family never trained on (a top-only family and a lateral photo) count as out of fold for it. The pairs of each
pseudo-query's shortlist (its whale or not) fit both calibrations, cross-fitted by whale; the local weight is the one
of the highest mAP (the organisers' metric) over the pseudo-queries. As for the catalogue's threshold, the scores
are on one fold model's scale, where the deployed ranking joins every fold (`photoid.catalog.calibrate`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from photoid.core.errors import PhotoidError
from photoid.core.threads import one_blas_thread
from photoid.local.calibration import Calibrator, cross_fit, fit_calibrator, fuse_global_local
from photoid.local.features import Features, Settings, empty_features, photo_features, rootsift
from photoid.local.matching import match_many
from photoid.whales.routing import LATERAL_VIEWPOINTS, Families, route_scores
from photoid.whales.scoring import score_ranking

DEFAULT_SHORTLIST = 20  # database images matched locally per query: the whole submitted list
LOCAL_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
MAX_PSEUDO_QUERIES = 2000  # training photos used as pseudo-queries, at most (seeded sample)
GROUPS = (("top", "top", ("top", "top2")), ("lateral", "mixed", ("lateral", "top2")))  # (view, route, families)


def comparable(a: str, b: str) -> bool:
    """Two whale photos show the same side: both top, or the same lateral side."""
    return a == b


@dataclass
class WhaleFusion:
    calibrators: dict[str, Calibrator]
    weights: dict[str, float]
    shortlist: int
    record: dict

    def fuse(self, global_scores: np.ndarray, local_scores: np.ndarray) -> np.ndarray:
        """`fuse_global_local` of the calibrated scores (a NaN local score: not compared, the global alone)."""
        local = np.asarray(local_scores, dtype=np.float64)
        p_local = np.where(np.isnan(local), np.nan, self.calibrators["local"](np.nan_to_num(local, nan=0.0)))
        return fuse_global_local(self.calibrators["global"](global_scores), p_local, self.weights["local"])


class WhalePhotos:
    """Local features of whale photos by image id, extracted once; a photo that cannot be read gets none."""

    def __init__(self, data, settings: Settings):
        self.data, self.settings, self.known = data, settings, {}
        self.views = dict(zip(data.metadata["image_id"], data.metadata["viewpoint"]))
        self._root: dict[str, np.ndarray] = {}

    def get(self, image_id: str) -> Features:
        if image_id not in self.known:
            path = self.data.image_path(image_id)
            try:
                self.known[image_id] = photo_features(path, self.settings, self.views.get(image_id))
            except PhotoidError as err:
                self.known[image_id] = empty_features(str(err))
        return self.known[image_id]

    def root(self, image_id: str) -> np.ndarray:
        if image_id not in self._root:
            self._root[image_id] = rootsift(self.get(image_id).descriptors)
        return self._root[image_id]

    def inliers_many(self, query: str, candidates: Sequence[str]) -> np.ndarray:
        """Verified inliers of the query with each candidate, matched with all of them at once (`match_many`): 0
        when the query has too few keypoints, NaN for a pair that cannot be compared (other viewpoints, or a
        candidate without keypoints)."""
        out = np.full(len(candidates), np.nan)
        view = self.views.get(query, "")
        compared = [k for k, c in enumerate(candidates) if comparable(view, self.views.get(c, ""))]
        if not compared:
            return out
        q = self.get(query)
        if not q.usable:
            out[compared] = 0.0
            return out
        usable = [k for k in compared if self.get(candidates[k]).usable]
        with one_blas_thread():
            matches = match_many(q, [self.get(candidates[k]) for k in usable], query_root=self.root(query),
                                 candidate_roots=[self.root(candidates[k]) for k in usable])
        out[usable] = [match.inliers for match in matches]
        return out


def feature_settings(run_dirs) -> Settings:
    """Photos prepared as the runs' records prepared them (wide photos turned, right views mirrored)."""
    from photoid.runs.loaded import load_run

    runs = [load_run(d) for d in run_dirs]
    return Settings(rotate_wide=any(r.preprocessing.rotate_wide for r in runs),
                    mirror_right=any(r.preprocessing.mirror_right for r in runs))


def rerank(submission: pd.DataFrame, scenarios, fusion: WhaleFusion, features: WhalePhotos,
           shortlist: int | None = None) -> pd.DataFrame:
    """The submission with each query's rows re-ordered by the fused score (which becomes the `score`)."""
    size = fusion.shortlist if shortlist is None else shortlist
    image_of = {qid: img for _, q, _ in scenarios for qid, img in zip(q["query_id"], q["query_image_id"])}
    parts = []
    for query_id, rows in submission.groupby("query_id", sort=False):
        rows = rows.sort_values("score", ascending=False, kind="stable")
        local = np.zeros(len(rows))  # beyond the shortlist: 0
        shortlisted = rows["database_image_id"].iloc[:size].tolist()
        local[:len(shortlisted)] = features.inliers_many(image_of[query_id], shortlisted)
        fused = fusion.fuse(rows["score"].to_numpy(dtype=np.float64), local)
        order = np.argsort(-fused, kind="stable")
        candidates = rows["database_image_id"].to_numpy()[order]
        parts.append(pd.DataFrame({"query_id": query_id, "database_image_id": candidates,
                                   "score": np.clip(fused[order], 0.0, 1.0).astype(np.float32)}))
    return pd.concat(parts, ignore_index=True) if parts else submission.iloc[:0]


# ----------------------------------------------------------------------------- calibration on the training photos


def _training_embeddings(sources: dict, records_dir: str, args) -> tuple[list[str], dict, dict]:
    """Every training photo's embedding by each fold model of each family given as runs: ({family: [per fold]}),
    and each family's validation fold of each photo it trained on."""
    from photoid.inference.fold_models import read_record_ids
    from photoid.records.folder import RecordsDir
    from photoid.runs.loaded import load_run
    from photoid.tasks import get_task
    from photoid.core.retrieval import join_embeddings
    from photoid.whales.embed import run_embeddings

    records = RecordsDir(records_dir)
    folds_table = get_task("whales").read_folds(records.folds_csv)
    files = records.fold_files(sorted(folds_table["fold"].unique()))
    ids = read_record_ids(files)
    blocks, fold_of = {}, {}
    for family, (kind, runs) in sources.items():
        if kind != "runs":
            raise PhotoidError(f"--local calibrates on the training photos with the runs' fold models; the {family} "
                               "family was given as an embeddings file: give its runs (--run_" + family + ")")
        per_run = []
        for run_dir in runs:
            parts, _ = run_embeddings(run_dir, files, records_dir, folds=args.folds, batch_size=args.batch_size,
                                      flip=args.flip, join=args.join)
            per_run.append(parts)
        n = min(len(p) for p in per_run)
        blocks[family] = [join_embeddings([p[f] for p in per_run], args.join) for f in range(n)]
        run = load_run(runs[0])
        own = Path(run.config.records_dir)
        if not (own / "folds.csv").is_file():
            raise PhotoidError(f"{own}/folds.csv (the records run {run.run_dir} trained on) is not found from here; "
                               "run photoid rank --local where the runs were trained")
        table = get_task("whales").read_folds(own / "folds.csv")
        fold_of[family] = dict(zip(table["image_id"], table["fold"].astype(int)))
    return ids, blocks, fold_of


def calibrate_on_training(data, scenarios, sources: dict, records_dir: str, features: WhalePhotos, args, *,
                          shortlist: int = DEFAULT_SHORTLIST, seed: int = 0) -> WhaleFusion:
    """Fit the fusion on out-of-fold pseudo-queries among the training photos (see the module's docstring)."""
    started = time.time()
    in_scenarios = {i for _, q, d in scenarios for i in (*q["query_image_id"], *d["database_image_id"])}
    meta = data.metadata
    whale_of = dict(zip(meta["image_id"], meta["whale_id"]))
    view_of = dict(zip(meta["image_id"], meta["viewpoint"]))
    ids, blocks, fold_of = _training_embeddings(sources, records_dir, args)
    ids_array = np.asarray(ids, dtype=object)
    training = np.array([i not in in_scenarios for i in ids])
    n_folds = min(len(b) for b in blocks.values())
    pseudo = []  # per pseudo-query: (query id, candidate ids, global scores, local inliers, same whale)
    rng = np.random.default_rng(seed)
    for view, route, names in GROUPS:
        lateral = view == "lateral"
        in_view = training & np.array([(view_of[i] in LATERAL_VIEWPOINTS) == lateral for i in ids])
        names = [n for n in names if n in blocks] or ["top"]
        primary = "lateral" if lateral and "lateral" in blocks else "top"
        for f in range(n_folds):
            families = Families(ids, top=blocks["top"][f], lateral=blocks[primary][f],
                                top2=blocks["top2"][f] if "top2" in blocks else None)
            out_of_fold = np.array([all(fold_of[n].get(i, f) == f for n in names if n in fold_of) for i in ids])
            queries = np.flatnonzero(in_view & out_of_fold & np.array([fold_of[primary].get(i) == f for i in ids]))
            database = np.flatnonzero(in_view)
            if len(queries) == 0 or len(database) < 2:
                continue
            scores = route_scores(route, families, queries, database)
            scores[database[None, :] == queries[:, None]] = -np.inf
            for q, row in zip(queries, scores):
                order = np.argsort(-row, kind="stable")[:shortlist]
                order = order[np.isfinite(row[order])]
                query_id, candidates = ids[q], ids_array[database[order]]
                same = np.array([whale_of[c] == whale_of[query_id] for c in candidates])
                pseudo.append((query_id, candidates, row[order], same))
    if not pseudo:
        raise PhotoidError("no training photo outside the scenarios can be a pseudo-query: --local has nothing to "
                           "calibrate on (the scenarios name every photo?)")
    if len(pseudo) > MAX_PSEUDO_QUERIES:
        pseudo = [pseudo[i] for i in np.sort(rng.choice(len(pseudo), MAX_PSEUDO_QUERIES, replace=False))]
    pseudo = [(q, c, s, features.inliers_many(q, c), same) for q, c, s, same in pseudo]
    whale_code = {w: i for i, w in enumerate(sorted(set(whale_of.values())))}
    groups = np.concatenate([[whale_code[whale_of[q]]] * len(c) for q, c, *_ in pseudo]).astype(np.int64)
    values = {"global": np.concatenate([s for _, _, s, _, _ in pseudo]),
              "local": np.concatenate([l for _, _, _, l, _ in pseudo])}
    same = np.concatenate([t for *_, t in pseudo])
    compared = ~np.isnan(values["local"])  # the local curve is fitted on the pairs actually compared
    if compared.sum() < 2 or same[compared].all() or not same[compared].any():
        raise PhotoidError(f"too few training pairs could be compared locally ({int(compared.sum())} of "
                           f"{len(same)}) to calibrate --local")
    fits = {"global": cross_fit(values["global"], same, groups, seed=seed),
            "local": cross_fit(values["local"][compared], same[compared], groups[compared], log_count=True,
                               seed=seed)}
    p_global = fits["global"].probabilities(values["global"], groups)
    p_local = np.where(compared, fits["local"].probabilities(np.nan_to_num(values["local"], nan=0.0), groups),
                       np.nan)
    truth = pd.DataFrame([(q, c) for q, *_ in pseudo for c, w in whale_of.items()
                          if w == whale_of[q] and c != q and c not in in_scenarios
                          and (view_of[c] in LATERAL_VIEWPOINTS) == (view_of[q] in LATERAL_VIEWPOINTS)],
                         columns=["query_id", "database_image_id"])
    bounds = np.cumsum([0, *[len(c) for _, c, *_ in pseudo]])
    by_weight = {}
    for w in LOCAL_WEIGHTS:
        fused = fuse_global_local(p_global, p_local, w)
        frames = []
        for k, (q, c, *_) in enumerate(pseudo):
            part = fused[bounds[k]:bounds[k + 1]]
            order = np.argsort(-part, kind="stable")
            frames.append(pd.DataFrame({"query_id": q, "database_image_id": c[order],
                                        "score": np.clip(part[order], 0, 1)}))
        by_weight[w] = score_ranking(pd.concat(frames, ignore_index=True), truth)["map"]
    best = max(by_weight, key=lambda w: (round(by_weight[w], 12), -w))
    final = {"global": fit_calibrator(values["global"], same, fits["global"].kind),
             "local": fit_calibrator(values["local"][compared], same[compared], fits["local"].kind, True)}
    record = {"pseudo_queries": len(pseudo), "pairs": int(len(same)), "same_pairs": int(same.sum()),
              "pairs_compared": int(compared.sum()),
              "weights": {"global": round(1 - best, 6), "local": best}, "shortlist": shortlist,
              "map_by_local_weight": {str(w): round(m, 6) for w, m in by_weight.items()},
              "calibration_kinds": {name: fit.kind for name, fit in fits.items()},
              "log_loss_out_of_fold": {name: fit.losses for name, fit in fits.items()},
              "calibrators": {name: c.to_json() for name, c in final.items()},
              "seconds": round(time.time() - started, 1)}
    return WhaleFusion(final, record["weights"], shortlist, record)
