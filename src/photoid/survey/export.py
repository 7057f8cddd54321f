"""A survey's results as CSV: the sightings table and the survey's part of the decision log.

    photoid survey export --catalog C --name NAME --out sightings.csv [--decisions decisions.csv]

Sightings: one row per readable photo of the survey — photo id, file name, individual (its individual in the
catalogue now, after any move, merge or split; "" while undecided), state (confirmed, new, undecided), date,
station, survey, viewpoint, decided by, when, score (for a confirmed photo the score shown for the individual
chosen; for a new one the best known individual's score, which was too low), the decision's id, the photo's
sha256, and the survey's own metadata (the individual it named, comment). The decision log: every decision about
the survey's photos, undos included, with all of the log's columns.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from photoid.catalog.build import Catalog
from photoid.catalog.decisions import read_log
from photoid.core import io as pio
from photoid.survey.queue import build_rows
from photoid.survey.store import Survey

SIGHTING_COLUMNS = ["photo_id", "file_name", "individual_id", "state", "date", "station", "survey", "viewpoint",
                    "decided_by", "decided_at", "score", "decision_id", "sha256", "field_individual", "comment"]


def sightings(catalog: Catalog, survey: Survey, new_label: str) -> pd.DataFrame:
    """The sightings table of `survey` (SIGHTING_COLUMNS), in import order."""
    log = read_log(catalog)
    owners = dict(zip(catalog.table["image_id"], catalog.table["individual_id"]))
    photos = survey.photos()
    rows = build_rows(photos, survey.results(), log, owners, survey.favourites(), new_label)
    by_id = log.set_index("decision_id") if len(log) else None
    out = []
    for row in rows:
        decision = by_id.loc[row.decision_id] if row.decision_id and by_id is not None else None
        out.append({"photo_id": row.photo_id, "file_name": row.file_name, "individual_id": row.individual,
                    "state": row.state, "date": row.date, "station": row.station, "survey": row.survey,
                    "viewpoint": row.viewpoint, "decided_by": row.decided_by,
                    "decided_at": "" if decision is None else decision["time"],
                    "score": "" if decision is None else _score_shown(decision, new_label),
                    "decision_id": row.decision_id, "sha256": row.sha256,
                    "field_individual": row.field_individual, "comment": photos.iloc[row.index]["comment"]})
    return pd.DataFrame(out, columns=SIGHTING_COLUMNS)


def survey_decisions(catalog: Catalog, name: str) -> pd.DataFrame:
    """Every decision about the survey's photos (the undos of them included), in order."""
    log = read_log(catalog)
    ours = log["survey"] == name
    undone = set(log.loc[ours, "decision_id"])
    return log[ours | ((log["decision"] == "undo") & log["undoes"].isin(undone))].reset_index(drop=True)


def _score_shown(decision, new_label: str) -> str:
    shown = json.loads(decision["candidates"] or "[]")
    if decision["decision"] == "confirm":
        chosen = [score for label, score in shown if label == decision["individual_id"]]
    else:
        chosen = [score for label, score in shown if label != new_label][:1]
    return f"{chosen[0]:.6f}" if chosen else ""


def export_survey(catalog: Catalog, survey: Survey, new_label: str, out: str | Path,
                  decisions_out: str | Path | None = None) -> tuple[int, int]:
    """Write the sightings table (and the survey's decisions) as CSV, atomically; returns their row counts."""
    table = sightings(catalog, survey, new_label)
    pio.write_csv(out, table)
    n_decisions = 0
    if decisions_out is not None:
        decisions = survey_decisions(catalog, survey.name)
        pio.write_csv(decisions_out, decisions)
        n_decisions = len(decisions)
    return len(table), n_decisions
