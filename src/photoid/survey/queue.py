"""The review queue: a survey's photos with their state, filtered and ordered, and short claims for reviewers.

A photo's state comes from the catalogue's decision log (the decisions still in effect about its sha256):
`confirmed` or `new` (added to the catalogue: its individual is the one it belongs to now, after any move or
merge), or `undecided`; a `skip` leaves it undecided (someone else may know the animal) and is remembered per
reviewer, so the reviewer who skipped it is not handed it again. Photos not yet identified by the batch job, or
that the models could not read, are listed but not handed out.

Filters (`Filters`, the page's query parameters, so a refresh or a shared link keeps them): survey, station,
date range, viewpoint, undecided only, new-individual verdicts only, favourites; order: import order, confidence
(the best known individual's score when identified, high or low first), date or file name.

Claims: `/next` hands a reviewer the first undecided photo nobody else holds and claims it for `seconds`; while
the reviewer stays on it the claim is renewed, and it expires on its own if they leave, so two reviewers are never
handed the same photo at the same moment and a closed tab blocks nothing for long.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, fields, replace
from typing import Iterable, Mapping
from urllib.parse import urlencode

import numpy as np
import pandas as pd

from photoid.catalog.decisions import ADDING, active_decisions
from photoid.core.tables import is_iso_date
from photoid.records.folder import VIEWPOINTS
from photoid.survey.store import OK, Results

SORTS = {"import": "import order", "confidence": "confidence, highest first",
         "confidence_low": "confidence, lowest first", "date": "date", "file": "file name"}
PAGE_SIZE = 100
DEFAULT_CLAIM_S = 120.0


@dataclass(frozen=True)
class Filters:
    survey: str = ""
    station: str = ""
    date_from: str = ""
    date_to: str = ""
    viewpoint: str = ""
    undecided: bool = False
    new: bool = False
    favourites: bool = False
    sort: str = "import"

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> "Filters":
        """From a request's query parameters; an unusable value is dropped (the page shows what applies)."""
        text = {f.name: str(params.get(f.name, "") or "").strip()[:200] for f in fields(cls)}
        return cls(survey=text["survey"], station=text["station"],
                   date_from=text["date_from"] if is_iso_date(text["date_from"]) else "",
                   date_to=text["date_to"] if is_iso_date(text["date_to"]) else "",
                   viewpoint=text["viewpoint"] if text["viewpoint"] in VIEWPOINTS else "",
                   undecided=text["undecided"] in ("1", "on", "true"), new=text["new"] in ("1", "on", "true"),
                   favourites=text["favourites"] in ("1", "on", "true"),
                   sort=text["sort"] if text["sort"] in SORTS else "import")

    def query(self, **changes) -> str:
        """This filter as query parameters (defaults left out), with `changes`; "" when nothing is set."""
        chosen = replace(self, **changes)
        pairs = [(f.name, "1" if value is True else value) for f in fields(self)
                 if (value := getattr(chosen, f.name)) not in ("", False) and not (f.name == "sort" and
                                                                               value == "import")]
        return urlencode(pairs)


@dataclass
class Row:
    """One photo of the queue."""

    index: int  # its row in the survey's photo table (and results)
    photo_id: str
    sha256: str
    file_name: str
    date: str
    station: str
    survey: str
    viewpoint: str
    field_individual: str  # the individual the survey's own metadata named, if any
    identified: bool
    error: str
    verdict: str  # the first candidate when identified (the new label, or an individual)
    confidence: float  # the best known individual's score when identified (NaN: none)
    favourite: bool
    state: str = "undecided"  # undecided | confirmed | new
    individual: str = ""  # its individual in the catalogue now, when decided
    decided_by: str = ""
    decision_id: str = ""
    skipped_by: set[str] = field(default_factory=set)


def build_rows(photos: pd.DataFrame, results: Results, log: pd.DataFrame, owners: Mapping[str, str],
               favourites: Iterable[str], new_label: str) -> list[Row]:
    """Every readable photo of the survey with its state; `owners` maps catalogue image ids to individuals."""
    from photoid.catalog.decisions import image_id_for

    active = active_decisions(log)
    adding = {row["photo_sha256"]: row for row in active[active["decision"].isin(ADDING)].to_dict("records")}
    skipped: dict[str, set[str]] = {}
    for row in active[active["decision"] == "skip"].itertuples():
        skipped.setdefault(row.photo_sha256, set()).add(row.reviewer)
    favourites = set(favourites)
    rows = []
    ok = (photos["status"] == OK).to_numpy()
    named = results.labels != new_label
    records = photos.to_dict("records")
    for i in np.flatnonzero(ok):
        p = records[i]
        done = bool(i < len(results.done) and results.done[i])
        error = str(results.errors[i]) if done else ""
        identified = done and not error
        verdict, confidence = "", float("nan")
        if identified:
            verdict = str(results.labels[i, 0])
            known = np.flatnonzero(named[i] & (results.labels[i] != ""))
            confidence = float(results.scores[i, known[0]]) if len(known) else float("nan")
        row = Row(int(i), p["photo_id"], p["sha256"], p["file_name"], p["date"], p["station"], p["survey"],
                  p["viewpoint"], p["individual"], identified, error, verdict, confidence, p["photo_id"] in favourites)
        decision = adding.get(p["sha256"])
        if decision is not None:
            row.state = "confirmed" if decision["decision"] == "confirm" else "new"
            row.individual = owners.get(image_id_for(p["sha256"]), decision["individual_id"])
            row.decided_by, row.decision_id = decision["reviewer"], decision["decision_id"]
        row.skipped_by = skipped.get(p["sha256"], set())
        rows.append(row)
    return rows


def select(rows: list[Row], filters: Filters, new_label: str) -> list[Row]:
    """The rows that pass `filters`, in its order."""
    f = filters
    kept = [r for r in rows
            if (not f.survey or r.survey == f.survey) and (not f.station or r.station == f.station)
            and (not f.date_from or (r.date and r.date[:10] >= f.date_from))
            and (not f.date_to or (r.date and r.date[:10] <= f.date_to))
            and (not f.viewpoint or r.viewpoint == f.viewpoint)
            and (not f.undecided or r.state == "undecided") and (not f.new or r.verdict == new_label)
            and (not f.favourites or r.favourite)]
    return order(kept, f.sort)


def order(rows: list[Row], sort: str) -> list[Row]:
    def confidence(r: Row) -> float:
        return r.confidence if r.confidence == r.confidence else -np.inf  # NaN (not identified) last

    if sort == "confidence":
        return sorted(rows, key=lambda r: (-confidence(r), r.index))
    if sort == "confidence_low":
        return sorted(rows, key=lambda r: (not r.identified, confidence(r), r.index))
    if sort == "date":
        return sorted(rows, key=lambda r: (r.date == "", r.date, r.index))
    if sort == "file":
        return sorted(rows, key=lambda r: (r.file_name, r.index))
    return rows


def neighbours(rows: list[Row], selected: list[Row], photo_id: str, sort: str) -> tuple[Row | None, Row | None]:
    """The selected photos before and after `photo_id` in the queue's order, even when the photo itself no longer
    passes the filters (just decided, under "undecided only")."""
    ordered = order(rows, sort)
    position = {r.photo_id: i for i, r in enumerate(ordered)}
    here = position.get(photo_id)
    if here is None:
        return None, None
    before = [r for r in selected if position[r.photo_id] < here]
    after = [r for r in selected if position[r.photo_id] > here]
    return (before[-1] if before else None), (after[0] if after else None)


class Claims:
    """Which reviewer holds which photo, until when (in memory: a claim is worth seconds, not a restart)."""

    def __init__(self, seconds: float = DEFAULT_CLAIM_S, clock=time.monotonic):
        self.seconds, self._clock = seconds, clock
        self._held: dict[tuple[str, str], tuple[str, float]] = {}  # (survey, photo id) -> (reviewer, until)
        self._lock = threading.Lock()

    def holder(self, survey: str, photo_id: str) -> str | None:
        with self._lock:
            held = self._held.get((survey, photo_id))
            return held[0] if held and held[1] > self._clock() else None

    def claim(self, survey: str, photo_id: str, reviewer: str) -> bool:
        """Claim (or renew) `photo_id` for `reviewer`, releasing their other claims; False when another holds it."""
        with self._lock:
            return self._claim(survey, photo_id, reviewer)

    def _claim(self, survey: str, photo_id: str, reviewer: str) -> bool:
        now = self._clock()
        held = self._held.get((survey, photo_id))
        if held and held[0] != reviewer and held[1] > now:
            return False
        for key, (who, until) in list(self._held.items()):
            if who == reviewer or until <= now:
                del self._held[key]
        self._held[(survey, photo_id)] = (reviewer, now + self.seconds)
        return True

    def release(self, survey: str, photo_id: str, reviewer: str) -> None:
        with self._lock:
            if self._held.get((survey, photo_id), ("",))[0] == reviewer:
                del self._held[(survey, photo_id)]

    def next_for(self, survey: str, rows: list[Row], reviewer: str) -> Row | None:
        """The photo to hand `reviewer` (claimed for them): the one they hold if still open, else the first open
        one nobody else holds and they did not skip."""
        with self._lock:
            now = self._clock()
            open_rows = [r for r in rows if r.identified and r.state == "undecided"]
            for row in open_rows:
                held = self._held.get((survey, row.photo_id))
                if held and held[0] == reviewer and held[1] > now:
                    self._claim(survey, row.photo_id, reviewer)
                    return row
            for row in open_rows:
                held = self._held.get((survey, row.photo_id))
                if reviewer in row.skipped_by or (held and held[0] != reviewer and held[1] > now):
                    continue
                self._claim(survey, row.photo_id, reviewer)
                return row
            return None
