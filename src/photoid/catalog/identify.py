"""Identification against a catalogue: embed photos with its models, score every individual, blend, say when new."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from photoid.catalog.openset import blend_scores, catalogue_scores, rank_with_new
from photoid.catalog.store import (
    Catalog,
    read_catalog,
)
from photoid.core.errors import PhotoidError
from photoid.core.labels import NEW_INDIVIDUAL
from photoid.core.results import Identification
from photoid.tasks import get_task

DEFAULT_BATCH = 64


def check_viewpoint(embedder, viewpoint: str | None, catalog: Catalog | None = None) -> None:
    """Refuse a viewpoint for a catalogue whose models' records never mirrored right views (it would change
    nothing); a catalogue with local features takes one (only comparable views are matched locally)."""
    from photoid.catalog.local import has_local_features

    if catalog is not None and has_local_features(catalog):
        return
    from photoid.runs.loaded import check_viewpoint_applies

    check_viewpoint_applies(viewpoint, [m.preprocessing for m in embedder.predictor.members],
                            "the catalogue's models were")


def load_catalog_embedder(catalog: Catalog, run_dirs: Sequence[str] | None = None, records_dir: str | None = None):
    """The catalogue's own fold models (an `Embedder`), from its recorded run folders or `run_dirs` in their place.

    `run_dirs` (runs moved elsewhere, or the runs a classifier ensemble uses) must hold the very models the
    catalogue was made with, in the same order; anything else is refused with the difference named.
    """
    from photoid.catalog.zeroshot import ZeroShotEmbedder, is_zero_shot

    if is_zero_shot(catalog):
        if run_dirs:
            raise PhotoidError(f"catalogue {catalog.path} was built without a trained model (zero-shot); --run "
                               "does not apply to it")
        return ZeroShotEmbedder(catalog)
    from photoid.inference.embedder import Embedder, check_same_models
    from photoid.runs.loaded import load_run

    catalog.check_complete()
    runs = {old: load_run(new, records_dir) for old, new in zip(catalog.run_dirs(), catalog.run_dirs(run_dirs))}
    embedder = Embedder([(runs[m["run_dir"]], m["fold"]) for m in catalog.models])
    check_same_models(catalog.models, embedder.signatures(), f"catalogue {catalog.path}")
    if embedder.dim != catalog.dim:
        raise PhotoidError(f"catalogue {catalog.path} holds {catalog.dim}-dimensional embeddings but its models "
                           f"give {embedder.dim}")
    return embedder


def operating_point(catalog: Catalog, with_probabilities: bool, blend_weight: float | None = None,
                    threshold: float | None = None) -> tuple[float, float]:
    """(blend weight, threshold): the given ones, else the catalogue's calibrated ones for that weight.

    Without classifier probabilities the weight is 0 and the threshold the one calibrated for similarity alone.
    """
    calibration = catalog.calibration or {}
    if blend_weight is None:
        blend_weight = float(calibration.get("blend_weight", 0.0)) if with_probabilities else 0.0
    if blend_weight > 0 and not with_probabilities:
        raise PhotoidError(f"a blend weight of {blend_weight} needs the classifier's probabilities")
    if threshold is None:
        by_weight = {float(p["blend_weight"]): float(p["threshold"]) for p in calibration.get("by_weight", [])}
        if not calibration:
            raise PhotoidError(f"catalogue {catalog.path} is not calibrated: run photoid calibrate, or give a "
                               "threshold for new individuals (--threshold)")
        if float(blend_weight) not in by_weight:
            raise PhotoidError(f"catalogue {catalog.path} has no threshold calibrated for blend weight "
                               f"{blend_weight} (calibrated: {sorted(by_weight)}); give --threshold")
        threshold = by_weight[float(blend_weight)]
    return float(blend_weight), float(threshold)


def verdict_threshold(catalog: Catalog, blend_weight: float | None = None, threshold: float | None = None,
                      local: bool | None = None) -> float:
    """The threshold a photo's verdict is drawn with: `threshold` if given, else the fused score's when the
    catalogue's calibrated fusion ranks (`identify_paths_with_catalog`), else the global one's."""
    from photoid.catalog.fusion import active_fusion
    from photoid.catalog.zeroshot import is_zero_shot

    fusion = active_fusion(catalog, local)
    if fusion is not None:
        return fusion.threshold if threshold is None else float(threshold)
    return operating_point(catalog, not is_zero_shot(catalog), blend_weight, threshold)[1]


def identify_with_catalog(embeddings: np.ndarray, catalog: Catalog, classifier_probs: np.ndarray | None = None,
                          classes: Sequence[str] | None = None, *, top: int = 5, blend_weight: float | None = None,
                          threshold: float | None = None, nameable: Sequence[str] | None = None,
                          new_label: str = NEW_INDIVIDUAL, backend: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """The `top` labels per photo and their scores, by catalogue similarity (blended with the classifier).

    `embeddings` come from the catalogue's own models (`load_catalog_embedder`). Each individual scores its best
    cosine in each model's space, averaged over the models (`openset.catalogue_scores`); with `classifier_probs`
    (photos × `classes`) the score is (1 − w)·that + w·probability; `new_label` is inserted where the best score
    does not exceed the threshold. Weight and threshold default to the catalogue's calibration. `nameable`
    limits the individuals named (others read `new_label`; Turtle Recall's 101 labels: the original ids).
    `backend` "auto" searches the catalogue's prepared index (`Catalog.index()`: exact, or the approximate index
    it was built with, `search_description` says which); the others search its embeddings afresh
    (`openset.individual_similarities`). Returns labels (photos, top) and scores, "" and NaN past the candidates.
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape[1] != catalog.dim:
        raise PhotoidError(f"embeddings of shape {embeddings.shape} cannot be compared with catalogue "
                           f"{catalog.path}, whose embeddings have {catalog.dim} dimensions: they come from other "
                           "models; embed the photos with the catalogue's runs")
    weight, threshold = operating_point(catalog, classifier_probs is not None, blend_weight, threshold)
    scores = global_scores(embeddings, catalog, classifier_probs, classes, weight, backend=backend)
    if backend == "auto":
        return catalog.index().ranker(nameable, new_label)(scores, threshold, top)
    return rank_with_new(scores, catalog.individuals()[0], threshold, k=top, nameable=nameable, new_label=new_label)


def global_scores(embeddings: np.ndarray, catalog: Catalog, classifier_probs: np.ndarray | None,
                  classes: Sequence[str] | None, blend_weight: float, backend: str = "auto") -> np.ndarray:
    """Each photo's score for each catalogue individual (queries, individuals in `Catalog.individuals`' sorted
    order): its similarity, blended with the classifier's probabilities at `blend_weight` (the score
    `identify_with_catalog` ranks by). `backend` "auto" searches the catalogue's prepared index."""
    if backend == "auto":  # the catalogue's prepared index (`photoid.catalog.index`), exact unless built otherwise
        index = catalog.index()
        scores = index.scores(embeddings)
        if classifier_probs is not None and blend_weight > 0:
            probs, has_probability = align_probabilities(classifier_probs, classes, index.names,
                                                         index.probability_columns(classes or []))
            scores = blend_scores(scores, probs, has_probability, blend_weight)
        return scores
    names, codes = catalog.individuals()
    scores = catalogue_scores(embeddings, catalog.embeddings, codes, len(names), catalog.blocks(), backend=backend)
    if classifier_probs is not None and blend_weight > 0:
        probs, has_probability = align_probabilities(classifier_probs, classes, names)
        scores = blend_scores(scores, probs, has_probability, blend_weight)
    return scores


def search_description(catalog: Catalog) -> str | None:
    """None for the exact search; for an approximate index, which one and its recall measured at build (results
    and the page show it beside the verdict, whose threshold was calibrated on exact scores)."""
    entry = catalog.manifest.get("index") or {}
    return None if entry.get("kind", "exact") == "exact" else entry.get("description")


def align_probabilities(probs: np.ndarray, classes: Sequence[str] | None, names: Sequence[str],
                        columns: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Classifier probabilities re-ordered to the catalogue's individuals, and which individuals it knows.
    `columns`: each individual's column in `classes` (-1: unknown), when already known."""
    if classes is None or np.shape(probs)[1] != len(classes):
        raise PhotoidError("classifier probabilities need their classes, one per column")
    if columns is None:
        column = {c: i for i, c in enumerate(classes)}
        columns = np.array([column.get(n, -1) for n in names], dtype=np.int64)
    index = columns
    known = index >= 0
    aligned = np.zeros((len(probs), len(names)), dtype=np.float32)
    aligned[:, known] = np.asarray(probs)[:, index[known]]
    return aligned, known


def identify_paths_with_catalog(catalog_dir: str | Path | Catalog, paths: Sequence[str], *,
                                run_dirs: Sequence[str] | None = None, records_dir: str | None = None,
                                top: int = 5, batch_size: int = DEFAULT_BATCH, blend_weight: float | None = None,
                                threshold: float | None = None, embedder=None,
                                viewpoints: Sequence[str | None] | None = None, local: bool | None = None,
                                shortlist: int | None = None, explain: bool = False) -> Iterator:
    """`photoid identify --catalog`: photos → `photoid.core.results.Identification`, in order, batch by batch.

    The catalogue's models embed each photo and give the classifier's probabilities; every catalogue individual
    can be named (only the runs' original ids if the catalogue was calibrated for them), and a photo scoring no
    individual above the threshold is `new_turtle` (Turtle Recall runs) or `new_individual`. `run_dirs`, when
    given, must be the catalogue's runs (else a clear error). A long-lived caller (`photoid serve`) passes the
    catalogue it holds and its `load_catalog_embedder`, so the models are loaded once. `viewpoints` (one per
    photo, None: unknown) mirror right views for models whose records mirrored them; refused for other models
    unless the catalogue has local features (then only comparable views are matched).

    Local matching (`photoid.catalog.fusion`): `local` None fuses global and local scores where the catalogue's
    calibration gave local matching a weight; True requires the fusion, False ranks by the global score alone.
    `shortlist` overrides the calibrated number of individuals matched locally; `threshold` then applies to the
    fused score. `explain` keeps each top candidate's best local match (`Identification.evidence`) even where the
    ranking is global. A photo with too few keypoints gets local scores of 0 and a note, never an error.
    """
    from photoid.catalog.fusion import identify_fused, local_setup, query_features
    from photoid.catalog.zeroshot import catalogue_task, is_zero_shot

    catalog = catalog_dir if isinstance(catalog_dir, Catalog) else read_catalog(catalog_dir)
    catalog.check_complete()
    embedder = embedder or load_catalog_embedder(catalog, run_dirs, records_dir)
    search = search_description(catalog)
    new_label = get_task(catalogue_task(catalog, embedder)).new_label
    label_space = (catalog.calibration or {}).get("label_space", "catalog")
    nameable = embedder.members[0][0].original_ids if label_space == "original" else None
    with_probabilities = not is_zero_shot(catalog)
    fusion, scorer, settings = local_setup(catalog, local, explain)
    weight, global_threshold = operating_point(catalog, with_probabilities, blend_weight,
                                               threshold if fusion is None else -np.inf)
    check_viewpoint(embedder, next((v for v in viewpoints or () if v), None), catalog)
    view_of = dict(zip(paths, viewpoints)) if viewpoints is not None else {}
    ranker = catalog.index().ranker(nameable, new_label)
    for batch, readable, embeddings, probs, errors in embedder.batches(paths, batch_size, probabilities=True,
                                                                       viewpoints=viewpoints):
        results = {path: Identification(path, error=reason) for path, reason in errors.items()}
        if readable:
            scores = global_scores(embeddings, catalog, probs, embedder.classes, weight)
            views = [view_of.get(path) or None for path in readable]
            queries = query_features(readable, views, settings, embedder) if scorer is not None else None
            evidence = notes = None
            if fusion is not None:
                fused = identify_fused(scores, queries, views, fusion, scorer, top=top, shortlist_size=shortlist,
                                       threshold=threshold, nameable=nameable, new_label=new_label)
                labels, top_scores, evidence, notes = fused.labels, fused.scores, fused.evidence, fused.notes
            else:
                labels, top_scores = ranker(scores, global_threshold, top)
                if scorer is not None:  # explanations of a global ranking: the top candidates matched locally
                    evidence, notes = scorer.explain(queries, views, labels)
            for i, path in enumerate(readable):
                kept = [(str(label), float(score)) for label, score in zip(labels[i], top_scores[i]) if label != ""]
                results[path] = Identification(path, None if probs is None else probs[i],
                                               [label for label, _ in kept], [score for _, score in kept],
                                               search=search, notes=notes[i] if notes else [],
                                               evidence=evidence[i] if evidence else None)
        yield from (results[path] for path in batch)
