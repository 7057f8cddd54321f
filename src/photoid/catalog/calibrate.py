"""`photoid calibrate`: choose the new-individual threshold and the classifier blend weight on out-of-fold data.

Out-of-fold, and why it must be: a model scores the photos it trained on as more similar to their individual than
it will ever score a new photo, so a threshold chosen on them is far too high. Fold f's model never trained on
the photos of fold f (its validation photos), so each catalogue photo of fold f becomes a query scored by that
model alone (with several runs, by each run's fold-f model) against every other catalogue photo in the same
model's space: query and catalogue must come from one model, as cosines between different models' features mean
nothing. The catalogue side holds fold f's other photos (unseen by the model, like the query) and the other
folds' photos (trained on, as every catalogue photo is once deployed). Deployed, all folds score a photo and
their scores are averaged on the scale of one model's best score (`openset.catalogue_scores`), so the threshold
found here applies there. The classifier side uses the run's out-of-fold predictions
(`preds/y_pred_val_fold_f_*`), made by the same fold model. A query's own photo is never its own match.

"New" queries are simulated by holding out a random `new_fraction` of the individuals: their photos leave the
catalogue side and their names leave the candidates (their probabilities too; the classifier's remaining
probabilities are renormalised, as a truly new individual's probability mass falls on known ones). Individuals
whose only photo is the query are new for that query as well. This is repeated `repeats` times with different
held-out individuals. Then every blend weight of `openset.BLEND_WEIGHTS` and every threshold are tried, and the
pair of highest MAP@5 over known ids + new wins (Happywhale's 1st place searched its threshold the same way).

Known limits: a held-out individual was still among the fold model's training classes (only retraining could
hide it), so simulated new individuals look a little more new than truly new ones; and the deployed average of
all folds ranks individuals better than one fold model, so the blend weight chosen here (one model on each side)
can overrate the classifier. The chosen values and the metrics (AUC of
new-vs-known, accuracy on known and on new queries) are written into the catalogue's manifest and become the
defaults of `photoid identify --catalog`.

`--evaluate` then scores a Turtle Recall test set whose truth is known (`test_labels.csv`, 101 labels), in one
table: (a) the original rule on the classifier's test predictions (`ensemble.top_labels`), (b) the catalogue's
k-NN with the calibrated threshold, (c) the calibrated blend of both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Sequence

import numpy as np

from photoid.catalog.build import Catalog, load_catalog_embedder
from photoid.catalog.fusion import DEFAULT_SHORTLIST
from photoid.catalog.identify import align_probabilities
from photoid.catalog.openset import (
    OperatingPoint,
    TopCandidates,
    blend_scores,
    candidates_at,
    catalogue_scores,
    open_set_metrics,
    rank_with_new,
    search_operating_point,
)
from photoid.core.errors import PhotoidError
from photoid.core.io import write_json
from photoid.core.labels import NEW_TURTLE, top_labels
from photoid.core.metrics import map_at_k_from_labels

DEFAULT_NEW_FRACTION = 0.2
DEFAULT_REPEATS = 3
DEFAULT_SEED = 0
LABEL_SPACES = ("catalog", "original")


@dataclass
class FoldQueries:
    """Fold f's out-of-fold view of the catalogue: fold f's model(s) and the photos they never trained on."""

    fold: int
    blocks: list[tuple[int, int]]  # the catalogue columns of fold f's model(s), one per run
    rows: np.ndarray  # catalogue rows of fold f's validation photos (the queries)
    probabilities: np.ndarray | None  # (queries, individuals) out-of-fold, aligned with the catalogue's individuals


def fold_queries(catalog: Catalog, run_dirs: list[str], use_probabilities: bool = True) -> list[FoldQueries]:
    """Per fold present for every run: the fold's catalogue space, its query rows and their OOF probabilities.

    A fold's queries are the photos of the runs' out-of-fold prediction files for that fold, which name exactly
    the photos fold f's model never trained on.
    """
    from photoid.runs.folder import load_run_predictions

    names, _ = catalog.individuals()
    row_of = {image_id: i for i, image_id in enumerate(catalog.table["image_id"])}
    folds = sorted(set.intersection(*({m["fold"] for m in catalog.models if m["run_dir"] == r}
                                      for r in catalog.run_dirs())))
    result = []
    for fold in folds:
        try:
            probs, row_ids, classes, _, _ = load_run_predictions(run_dirs, "val", folds=[fold])
        except PhotoidError as err:
            raise PhotoidError(f"calibration needs the runs' out-of-fold predictions, which say which photos each "
                               f"fold model never trained on (train with a job including 'val'): {err}") from None
        in_catalog = [i for i, image_id in enumerate(row_ids) if image_id in row_of]
        rows = np.array([row_of[row_ids[i]] for i in in_catalog], dtype=np.int64)
        aligned = align_probabilities(probs[in_catalog], classes, names)[0] if use_probabilities else None
        result.append(FoldQueries(fold, catalog.blocks(fold), rows, aligned))
    if not result or not sum(len(f.rows) for f in result):
        raise PhotoidError(f"no catalogue photo is among the runs' out-of-fold predictions ({', '.join(run_dirs)}); "
                           "the catalogue must hold the photos the runs were trained on")
    return result


def simulated_trials(catalog: Catalog, folds: list[FoldQueries], new_fraction: float, repeats: int, seed: int,
                     nameable: np.ndarray | None = None, with_rows: bool = False) -> list[tuple]:
    """(scores, probabilities, truth) per repeat and fold, with `new_fraction` of the individuals held out
    (`with_rows`: and the queries' catalogue rows, which local matching needs).

    Queries are photos of nameable individuals (default: all), so that `new_fraction` is the share of new ones
    among them; the other individuals stay in the catalogue, where a match to them reads "new".
    """
    if not 0.0 <= new_fraction < 1.0 or repeats < 1:
        raise PhotoidError(f"need 0 <= new_fraction < 1 and repeats >= 1, got {new_fraction} and {repeats}")
    names, codes = catalog.individuals()
    if nameable is not None:
        keep = [nameable[codes[f.rows]] for f in folds]
        folds = [FoldQueries(f.fold, f.blocks, f.rows[k], None if f.probabilities is None else f.probabilities[k])
                 for f, k in zip(folds, keep)]
    queried = np.unique(codes[np.concatenate([f.rows for f in folds])])
    if queried.size == 0:
        raise PhotoidError("no out-of-fold photo of a nameable individual to calibrate with")
    rng = np.random.default_rng(seed)
    trials = []
    for _ in range(repeats):
        held_out = rng.choice(queried, size=int(round(new_fraction * len(queried))), replace=False)
        gallery = np.flatnonzero(~np.isin(codes, held_out))
        position = np.full(len(codes), -1, dtype=np.int64)
        position[gallery] = np.arange(len(gallery))
        gallery_embeddings, gallery_codes = catalog.embeddings[gallery], codes[gallery]  # the same for every fold
        for f in folds:
            scores = catalogue_scores(catalog.embeddings[f.rows], gallery_embeddings, gallery_codes,
                                      len(names), f.blocks, exclude=position[f.rows], backend="numpy")
            trials.append((scores, f.probabilities, codes[f.rows], f.rows) if with_rows
                          else (scores, f.probabilities, codes[f.rows]))
    return trials


def calibrate(catalog: Catalog, run_dirs: Sequence[str] | None = None, *, new_fraction: float = DEFAULT_NEW_FRACTION,
              repeats: int = DEFAULT_REPEATS, seed: int = DEFAULT_SEED, use_probabilities: bool = True,
              label_space: str = "catalog", records_dir: str | None = None, local: bool | None = None,
              shortlist: int = DEFAULT_SHORTLIST) -> dict:
    """Choose (blend weight, threshold) on out-of-fold data; returns the calibration record (not yet saved).

    `label_space` "catalog": every catalogue individual can be named (what `identify --catalog` does);
    "original": only the runs' original ids, every other individual is new (Turtle Recall's 101 labels).
    `run_dirs` stand in for the catalogue's recorded runs (moved elsewhere); they must hold the same models.

    A catalogue with local features also gets its fusion of global and local scores (`fusion.calibrate_fusion`,
    recorded as `fusion`; `local` False skips it, True requires it), matching each query's `shortlist` best
    individuals. A zero-shot catalogue (no models) is calibrated on every photo as a query against the others.
    """
    from photoid.catalog.zeroshot import is_zero_shot

    if label_space not in LABEL_SPACES:
        raise PhotoidError(f"label space must be one of {LABEL_SPACES}, got {label_space!r}")
    if local:
        from photoid.catalog.local import require_local_features

        require_local_features(catalog, "calibrating the fusion (--local)")
    if is_zero_shot(catalog):
        if label_space != "catalog" or run_dirs:
            raise PhotoidError(f"catalogue {catalog.path} has no trained model (zero-shot): --run and label space "
                               "'original' do not apply to it")
        rows = np.arange(len(catalog.table))
        folds = [FoldQueries(0, catalog.blocks(), rows, None)]
        record = _calibration_record(catalog, folds, None, None, new_fraction, repeats, seed, label_space, [],
                                     local, shortlist)
        record["probabilities"] = None
        return record
    from photoid.inference.embedder import check_same_models
    from photoid.inference.fold_models import signature
    from photoid.runs.loaded import load_run
    run_dirs = catalog.run_dirs(run_dirs)
    runs = {recorded: load_run(given, records_dir) for recorded, given in zip(catalog.run_dirs(), run_dirs)}
    check_same_models(catalog.models, [signature(runs[m["run_dir"]], m["fold"]) for m in catalog.models],
                      f"catalogue {catalog.path}")
    names, _ = catalog.individuals()
    first_run = next(iter(runs.values()))
    has_probability = np.isin(names, first_run.classes) if use_probabilities else None
    nameable = np.isin(names, first_run.original_ids) if label_space == "original" else None
    folds = fold_queries(catalog, run_dirs, use_probabilities)
    record = _calibration_record(catalog, folds, has_probability, nameable, new_fraction, repeats, seed, label_space,
                                 run_dirs, local, shortlist)
    record["probabilities"] = "out-of-fold predictions" if use_probabilities else None
    return record


def _calibration_record(catalog: Catalog, folds: list[FoldQueries], has_probability, nameable, new_fraction: float,
                        repeats: int, seed: int, label_space: str, run_dirs: list[str], local: bool | None,
                        shortlist: int) -> dict:
    from photoid.catalog.local import has_local_features, read_local_features

    trials = simulated_trials(catalog, folds, new_fraction, repeats, seed, nameable, with_rows=True)
    plain = [trial[:3] for trial in trials]
    points = search_operating_point(plain, has_probability, nameable)
    # The best MAP@5; on a tie the smaller weight (fewer assumptions about the classifier).
    chosen: OperatingPoint = max(points.values(), key=lambda p: (round(p.map5, 12), -p.blend_weight))
    similarity_only = points[0.0]
    chosen_candidates = candidates_at(plain, has_probability, chosen.blend_weight, nameable)
    record = {
        "calibrated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "blend_weight": chosen.blend_weight, "threshold": chosen.threshold,
        "metrics": open_set_metrics(chosen_candidates, chosen.threshold),
        "probability": probability_model(chosen_candidates, chosen.blend_weight),
        "similarity_only": {"threshold": similarity_only.threshold, "metrics": open_set_metrics(
            candidates_at(plain, has_probability, 0.0, nameable), similarity_only.threshold)},
        "by_weight": [asdict(p) for p in points.values()],
        "label_space": label_space,
        "new_fraction": new_fraction, "repeats": repeats, "seed": seed, "folds": [f.fold for f in folds],
        "run_dirs": run_dirs,
    }
    if local is not False and has_local_features(catalog):
        from photoid.catalog.fusion import calibrate_fusion

        record["fusion"] = calibrate_fusion(catalog, read_local_features(catalog), trials, has_probability, nameable,
                                            chosen.blend_weight, shortlist_size=shortlist, seed=seed,
                                            global_map5=record["metrics"]["map5"])
    return record




def probability_model(c: TopCandidates, blend_weight: float) -> dict | None:
    """Logistic fits turning a score into calibrated probabilities, on the held-out queries' candidates.

    `match`: P(a candidate is the photo's individual | its score), fitted on every candidate shown (the top k
    of each query, labelled by whether it is the truth). `new`: P(the photo's individual is new | its best
    score). Both hold only at `blend_weight` (scores at another weight are spread differently). A higher score
    never makes a match less likely (nor a new individual more likely): where the held-out scores say otherwise
    (models that barely learnt), the fit is the base rate alone. None when the held-out queries give only one
    outcome (nothing to fit).
    """
    from sklearn.linear_model import LogisticRegression

    def fit(x: np.ndarray, y: np.ndarray, rising: bool) -> dict | None:
        if len(np.unique(y)) < 2:
            return None
        model = LogisticRegression(C=1e4).fit(x.reshape(-1, 1), y)
        slope, intercept = float(model.coef_[0, 0]), float(model.intercept_[0])
        if (slope < 0) if rising else (slope > 0):
            rate = float(np.mean(y))
            slope, intercept = 0.0, float(np.log(rate / (1 - rate)))
        return {"slope": slope, "intercept": intercept, "n": int(len(y))}

    k = c.scores.shape[1]
    shown = np.isfinite(c.scores)
    is_truth = c.truth_rank[:, None] == np.arange(1, k + 1)[None, :]
    best = np.isfinite(c.scores[:, 0])
    match = fit(c.scores[shown], is_truth[shown], rising=True)
    new = fit(c.scores[best, 0], c.is_new[best], rising=False)
    if match is None or new is None:
        return None
    return {"blend_weight": float(blend_weight), "match": match, "new": new,
            "method": "logistic regression on the held-out queries' scores"}


def calibrated_probability(calibration: dict | None, scores, kind: str = "match",
                           blend_weight: float | None = None) -> np.ndarray | None:
    """`probability_model`'s P(match) or P(new) for `scores`; None without a fit for that blend weight."""
    model = (calibration or {}).get("probability")
    if not model or model.get(kind) is None or (blend_weight is not None
                                               and float(blend_weight) != model["blend_weight"]):
        return None
    fit = model[kind]
    z = fit["slope"] * np.asarray(scores, dtype=np.float64) + fit["intercept"]
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


# ----------------------------------------------------------------------------- test-set evaluation

def evaluate(catalog: Catalog, run_dirs: Sequence[str] | None, data_dir: str, out: str | None = None,
             records_dir: str | None = None) -> dict:
    """MAP@5 over the 101 labels of a test set: the classifier's rule vs the catalogue vs the blend."""
    from photoid.runs.folder import RunDir, load_run_predictions
    from photoid.tasks import get_task

    calibration = catalog.calibration
    if not calibration:
        raise PhotoidError(f"catalogue {catalog.path} is not calibrated; evaluation uses its calibrated values")
    run_dirs = catalog.run_dirs(run_dirs)
    task = get_task(RunDir(run_dirs[0]).config().task)
    if not task.leaderboard_labels:
        raise PhotoidError(f"--evaluate scores a Turtle Recall test set (test_labels.csv, 101 labels); the catalogue's "
                           f"runs are {task.name} runs (a generic run scores its test split in test_scores.json)")
    test_ids, truth, test_paths = task.leaderboard_truth(data_dir)
    probs, row_ids, classes, original_ids, _ = load_run_predictions(run_dirs, "test")
    index = {image_id: i for i, image_id in enumerate(row_ids)}
    missing = [i for i in test_ids if i not in index]
    if missing:
        raise PhotoidError(f"the runs' test predictions lack {len(missing)} test photos, e.g. {missing[0]}")
    probs = probs[[index[i] for i in test_ids]]

    embedder = load_catalog_embedder(catalog, run_dirs, records_dir)
    embeddings = embedder.embed_all(test_paths)
    names, codes = catalog.individuals()
    scores = catalogue_scores(embeddings, catalog.embeddings, codes, len(names), catalog.blocks())
    aligned, has_probability = align_probabilities(probs, classes, names)
    weight, threshold = calibration["blend_weight"], calibration["threshold"]
    threshold_sim = calibration["similarity_only"]["threshold"]

    def with_new(scores, t):
        return rank_with_new(scores, names, t, nameable=original_ids, new_label=NEW_TURTLE)[0]

    methods = {
        "(a) classifier + new_turtle rule (original)": top_labels(probs, classes, original_ids, k=5)[0],
        "catalogue k-NN, no threshold": with_new(scores, -1.0),
        f"(b) catalogue k-NN, threshold {threshold_sim:.3f}": with_new(scores, threshold_sim),
        f"(c) blend w={weight}, threshold {threshold:.3f}": with_new(
            blend_scores(scores, aligned, has_probability, weight), threshold),
    }
    fused = _fused_labels(catalog, test_paths, blend_scores(scores, aligned, has_probability, weight), original_ids)
    if fused is not None:
        methods[fused[0]] = fused[1]
    is_new = truth == NEW_TURTLE
    rows = [{"method": name, "map5": map_at_k_from_labels(truth, labels, k=5),
             "acc1": float(np.mean(labels[:, 0] == truth)),
             "acc1_known": float(np.mean(labels[~is_new, 0] == truth[~is_new])) if (~is_new).any() else float("nan"),
             "acc1_new": float(np.mean(labels[is_new, 0] == NEW_TURTLE)) if is_new.any() else float("nan")}
            for name, labels in methods.items()]
    result = {"data_dir": str(data_dir), "n_test": len(truth), "n_new_turtle": int(is_new.sum()),
              "catalog": str(catalog.path), "runs": run_dirs, "rows": rows}
    if out:
        write_json(out, result)
    return result


def _fused_labels(catalog: Catalog, paths: Sequence[str], global_scores: np.ndarray, nameable) -> tuple | None:
    """(method name, labels) of the calibrated fusion with local matching, where the catalogue has one."""
    from photoid.catalog.fusion import Fusion, LocalScorer, identify_fused, query_features
    from photoid.catalog.local import has_local_features, local_settings, read_local_features

    fusion = Fusion.from_calibration(catalog.calibration)
    if fusion is None or not has_local_features(catalog):
        return None
    scorer = LocalScorer(catalog, read_local_features(catalog))
    views = [None] * len(paths)
    result = identify_fused(global_scores, query_features(paths, views, local_settings(catalog)), views, fusion,
                            scorer, nameable=nameable, new_label=NEW_TURTLE)
    return (f"(d) fused, local weight {fusion.weights['local']}, threshold {fusion.threshold:.3f}", result.labels)
