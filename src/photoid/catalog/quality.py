"""Quality control of one individual: how well each of its photos matches its other photos, and the outliers.

Each photo of the individual is scored as a query against the rest of the catalogue, itself left out
(`openset.catalogue_scores` with `exclude`: the scores identification gives, on the scale the calibrated
threshold applies to). Its similarity to its own individual is its best score among the individual's other
photos; a photo is flagged as an outlier — a likely wrong assignment — when another individual scores higher
than its own, or when its own score is at or below the threshold for "new" (it would not have been recognised
as this individual). The page lists the photos from the least to the most similar, so the doubtful ones come
first, each with the individual it resembles most, ready to be moved there. Pure numpy; no file access.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from photoid.catalog.openset import catalogue_scores
from photoid.catalog.store import Catalog


@dataclass
class PhotoQuality:
    image_id: str
    row: int  # its row in the catalogue table
    own: float  # best score among the individual's other photos (-inf: its only photo)
    best_other: str  # the other individual scoring highest ("" when none)
    best_other_score: float
    outlier: bool


def individual_quality(catalog: Catalog, individual: str, threshold: float | None = None) -> list[PhotoQuality]:
    """The individual's photos from the least to the most similar to its other photos, outliers flagged."""
    table = catalog.table
    rows = np.flatnonzero(table["individual_id"].to_numpy() == individual)
    if not len(rows):
        return []
    names, codes = catalog.individuals()
    scores = catalogue_scores(catalog.embeddings[rows], catalog.embeddings, codes, len(names), catalog.blocks(),
                              exclude=rows, backend="numpy")
    own_code = names.index(individual)
    own = scores[:, own_code].copy()
    others = scores.copy()
    others[:, own_code] = -np.inf
    best = others.argmax(axis=1)
    best_score = others[np.arange(len(rows)), best]
    result = []
    for i, row in enumerate(rows):
        has_other = np.isfinite(best_score[i])
        alone = not np.isfinite(own[i])
        outlier = not alone and ((has_other and best_score[i] > own[i])
                                 or (threshold is not None and own[i] <= threshold))
        result.append(PhotoQuality(str(table["image_id"].iloc[row]), int(row), float(own[i]),
                                   names[best[i]] if has_other else "", float(best_score[i]), bool(outlier)))
    return sorted(result, key=lambda q: (q.own, q.row))
