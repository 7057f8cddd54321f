"""One photo's identification result, shared by `identify`, the catalogue and `photoid serve`.

Light (numpy only): the catalogue produces results and `identify` prints them, and neither needs the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Identification:
    """One photo's result: the mean probabilities and its top candidates, or why it could not be read.

    Attributes:
        path: the photo, as given.
        probabilities: the mean class probabilities over the models and TTA transforms (one per class of the
            runs, in their label order); None when the photo could not be read.
        labels: the candidates, best first: individual ids, or the task's new label (`new_turtle`,
            `new_individual`) where the rule or the catalogue's threshold puts it.
        scores: one per label: the ensemble's probability, or the catalogue's (blended) similarity score.
        error: why the photo could not be read (then there are no candidates); None otherwise.
    """

    path: str
    probabilities: np.ndarray | None = None
    labels: list[str] | None = None
    scores: list[float] | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)  # e.g. why its local score is 0 (too few keypoints)
    evidence: dict | None = None  # label -> `photoid.catalog.fusion.LocalEvidence` (local matching ran)
    search: str | None = None  # None: the exact search; else the approximate index that gave the scores
