"""A survey photo's candidates: `photoid identify --catalog`'s scores, with a calibrated probability and a distance.

The batch job stores each photo's embedding and classifier probabilities; the candidates are computed from them
against the catalogue as it is now, with `photoid.catalog.identify.identify_with_catalog` (the command's own
function), so an individual named a minute ago from another photo of the survey is already a candidate, and the
number of candidates, the threshold and the viewpoint of the catalogue photos compared can be changed without
running a model. For each candidate the match view shows:

- score: the blended score the candidates are ranked by, and that the threshold for "new" applies to;
- probability: P(this candidate is the photo's individual), from the logistic fit of `photoid calibrate` on
  held-out photos (`calibrate.probability_model`); for the "new" row, P(the individual is new) given the best
  known score. Absent for a catalogue calibrated before the fit existed, or an operating point not calibrated;
- distance: 1 − the cosine similarity between the photo and the candidate's closest catalogue photo (each fold
  model's cosine, averaged), as MatchyPatchy shows its cosine distance; each of the candidate's photos has its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from photoid.catalog.build import VIEWPOINT_COLUMN, Catalog
from photoid.catalog.calibrate import calibrated_probability
from photoid.catalog.identify import identify_with_catalog, operating_point
from photoid.core.errors import PhotoidError
from photoid.core.retrieval import normalize_rows

MAX_TOP = 50


@dataclass
class Candidate:
    label: str
    score: float
    new: bool
    probability: float | None = None
    distance: float | None = None
    photos: list[tuple[str, float]] = field(default_factory=list)  # (image id, distance), closest first
    explain: list[str | None] = field(default_factory=list)  # per photo: its local-match picture's address


class Scorer:
    """How photos are scored against a catalogue: the models' classes, the individuals that can be named, the
    label for new ones and the operating point (the catalogue's calibration unless `blend_weight`/`threshold`)."""

    def __init__(self, classes: Sequence[str] | None, new_label: str, *, original_ids: Sequence[str] | None = None,
                 mirrors_right: bool = False, top: int = 5, blend_weight: float | None = None,
                 threshold: float | None = None):
        self.classes, self.new_label, self.original_ids = classes, new_label, original_ids
        self.mirrors_right, self.top = mirrors_right, top
        self.blend_weight, self.threshold = blend_weight, threshold
        self._views: dict = {}

    @classmethod
    def from_embedder(cls, embedder, **options) -> "Scorer":
        """The scorer of a catalogue's loaded models (`catalog.identify.load_catalog_embedder`), as `identify`."""
        from photoid.tasks import get_task

        if not embedder.members:  # a zero-shot catalogue's (photoid.catalog.zeroshot): no classifier, no runs
            return cls(None, get_task(embedder.task).new_label, mirrors_right=embedder.mirrors_right, **options)
        first_run = embedder.members[0][0]
        return cls(embedder.classes, get_task(first_run.config.task).new_label, original_ids=first_run.original_ids,
                   mirrors_right=embedder.mirrors_right, **options)

    def operating_point(self, catalog: Catalog, threshold: float | None = None) -> tuple[float, float]:
        return operating_point(catalog, True, self.blend_weight, self.threshold if threshold is None else threshold)

    def nameable(self, catalog: Catalog) -> Sequence[str] | None:
        label_space = (catalog.calibration or {}).get("label_space", "catalog")
        return self.original_ids if label_space == "original" else None

    def candidates(self, catalog: Catalog, embeddings: np.ndarray, probabilities: np.ndarray | None, *,
                   top: int | None = None, threshold: float | None = None) -> tuple[np.ndarray, np.ndarray, float]:
        """(labels, scores) per photo as `photoid identify --catalog` gives them, and the threshold used."""
        weight, threshold = self.operating_point(catalog, threshold)
        if len(embeddings) == 0:
            k = top or self.top
            return np.zeros((0, k), dtype=str), np.zeros((0, k), np.float32), threshold
        probabilities = probabilities if self.classes is not None and probabilities is not None and \
            probabilities.shape[1] == len(self.classes) else None
        labels, scores = identify_with_catalog(embeddings, catalog, probabilities, self.classes if probabilities
                                               is not None else None, top=top or self.top, blend_weight=weight,
                                               threshold=threshold, nameable=self.nameable(catalog),
                                               new_label=self.new_label)
        return labels, scores, threshold

    def match(self, catalog: Catalog, embedding: np.ndarray, probabilities: np.ndarray | None, *,
              top: int | None = None, threshold: float | None = None, viewpoint: str | None = None,
              photos_per_candidate: int = 12) -> tuple[list[Candidate], float]:
        """One photo's candidates with probability, distance and the candidate's photos (closest first), against
        the catalogue photos of `viewpoint` only when given. Returns (candidates, threshold)."""
        top = min(max(int(top or self.top), 1), MAX_TOP)
        view = self._view(catalog, viewpoint)
        if view is None:
            return [], self.operating_point(catalog, threshold)[1]
        sub, rows_of, blocks = view
        labels, scores, used = self.candidates(sub, embedding[None, :], None if probabilities is None
                                               else probabilities[None, :], top=top, threshold=threshold)
        weight = self.operating_point(catalog, threshold)[0]
        named = [(str(l), float(s)) for l, s in zip(labels[0], scores[0]) if l and l != self.new_label]
        p_match = calibrated_probability(catalog.calibration, [s for _, s in named], "match", weight)
        best = named[0][1] if named else None
        p_new = (calibrated_probability(catalog.calibration, [best], "new", weight) if best is not None else None)
        result, i = [], 0
        for label, score in zip(labels[0], scores[0]):
            if not label:
                continue
            if label == self.new_label:
                result.append(Candidate(str(label), float(score), True,
                                        None if p_new is None else float(p_new[0])))
                continue
            rows = rows_of.get(str(label), np.zeros(0, np.int64))
            distances = 1.0 - _block_cosines(blocks, embedding, rows)
            order = np.argsort(distances, kind="stable")[:photos_per_candidate]
            image_ids = sub.table["image_id"].to_numpy()[rows[order]]
            result.append(Candidate(str(label), float(score), False,
                                    None if p_match is None else float(p_match[i]),
                                    float(distances[order[0]]) if len(order) else None,
                                    [(str(a), round(float(d), 6)) for a, d in zip(image_ids, distances[order])]))
            i += 1
        return result, used

    def _view(self, catalog: Catalog, viewpoint: str | None):
        """(catalogue restricted to `viewpoint`, rows of each individual, normalised model blocks), cached per
        catalogue generation; None when no catalogue photo has that viewpoint."""
        manifest = catalog.manifest  # a generation is named by its catalogue, creation and number
        key = (str(catalog.path), manifest.get("created"), manifest.get("generation"), viewpoint)
        if key not in self._views:
            if len(self._views) > 8:
                self._views.clear()
            sub = catalog
            if viewpoint:
                if VIEWPOINT_COLUMN not in catalog.table.columns:
                    self._views[key] = None
                    return None
                keep = (catalog.table[VIEWPOINT_COLUMN] == viewpoint).to_numpy()
                if not keep.any():
                    self._views[key] = None
                    return None
                sub = catalog.subset(keep)
            names, codes = sub.individuals()
            order = np.argsort(codes, kind="stable")
            bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
            rows_of = {name: order[bounds[i]:bounds[i + 1]] for i, name in enumerate(names)}
            blocks = [(offset, dim, normalize_rows(sub.embeddings[:, offset:offset + dim]))
                      for offset, dim in sub.blocks()]
            self._views[key] = (sub, rows_of, blocks)
        return self._views[key]


def _block_cosines(blocks, embedding: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The cosine of catalogue photos `rows` with `embedding`, per model block, averaged over the models."""
    if not blocks:
        raise PhotoidError("the catalogue names no model blocks")
    total = np.zeros(len(rows), np.float32)
    for offset, dim, unit in blocks:
        q = normalize_rows(np.asarray(embedding, np.float32)[None, offset:offset + dim])[0]
        total += unit[rows] @ q
    return total / len(blocks)
