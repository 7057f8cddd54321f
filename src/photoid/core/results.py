"""One photo's identification result, shared by `identify`, the catalogue and `photoid serve`.

Light (numpy only): the catalogue produces results and `identify` prints them, and neither needs the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Identification:
    """One photo's result: the mean probabilities and its top candidates, or why it could not be read."""

    path: str
    probabilities: np.ndarray | None = None
    labels: list[str] | None = None
    scores: list[float] | None = None
    error: str | None = None
    search: str | None = None  # None: the exact search; else the approximate index that gave the scores
