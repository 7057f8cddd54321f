"""The decision log: what a person decided about each identified photo, kept in the catalogue it changed.

A decision is `confirm` (the photo is added to a catalogue individual), `new` (added under a new id), `skip`
(nothing added) or `undo` (an earlier decision reverted: a photo it added is removed). Each is one row of a CSV
file in the catalogue folder — time, the photo's sha256, its image id and file name, the decision, the individual,
the threshold and the candidates with the scores that were shown — and the catalogue's manifest names that file
with its sha256 (`decision_log`). The row and the catalogue change it records are committed together by one
`catalog_transaction`: the log file of the next state is written under a new name, then the manifest that names
it (and the new data files) replaces the old one. Killed at any moment, the catalogue and its log stay in step;
two people deciding at once both keep their decisions, the second applied on top of the first.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from photoid.catalog.build import (
    RESERVED_IDS,
    VIEWPOINT_COLUMN,
    Catalog,
    catalog_transaction,
)
from photoid.core import io as pio
from photoid.core.errors import PhotoidError
from photoid.core.tables import text_problem
from photoid.inference.embedder import check_same_models

LOG_KEY = "decision_log"  # manifest entry: {"name", "sha256", "rows"}
LOG_PATTERN = "decisions-*.csv"
COLUMNS = ["decision_id", "time", "photo_sha256", "image_id", "file_name", "decision", "individual_id",
           "undoes", "threshold", "candidates"]
ADDING = ("confirm", "new")
DECISIONS = (*ADDING, "skip")
SOURCE = "served"  # the catalogue table's `source` of photos added from the page


@dataclass(frozen=True)
class Photo:
    """An identified photo waiting for a decision: its stored file and what the page showed for it."""

    sha256: str
    path: Path  # the stored copy the catalogue will point to
    file_name: str  # the name it was uploaded under (shown, never used as a path)
    labels: Sequence[str]
    scores: Sequence[float]
    threshold: float
    viewpoint: str | None = None  # as the uploader said (None: unknown); kept in the catalogue's table

    @property
    def image_id(self) -> str:
        return image_id_for(self.sha256)


def image_id_for(sha256: str) -> str:
    """A served photo's image id in the catalogue: its content hash, so one photo cannot be added twice."""
    return f"photo-{sha256[:16]}"


def read_log(catalog: Catalog) -> pd.DataFrame:
    """The catalogue's decisions in order (COLUMNS; empty when none was made)."""
    entry = catalog.manifest.get(LOG_KEY)
    if not entry:
        return pd.DataFrame(columns=COLUMNS)
    raw = (catalog.path / entry["name"]).read_bytes()
    if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
        raise PhotoidError(f"{catalog.path / entry['name']}: its content differs from what the manifest recorded "
                           "(sha256); the decision log was changed outside photoid")
    return pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False)


def active_decisions(log: pd.DataFrame) -> pd.DataFrame:
    """Decisions that are not undos and have not been undone, in order."""
    undone = set(log.loc[log["decision"] == "undo", "undoes"])
    return log[(log["decision"] != "undo") & ~log["decision_id"].isin(undone)]


def decide(catalog_dir: str | Path, photo: Photo, decision: str, individual_id: str = "",
           embedding: np.ndarray | None = None, models: list[dict] | None = None) -> tuple[Catalog, dict]:
    """Record one decision about `photo`; `confirm` and `new` add it (its `embedding`) to `individual_id`.

    `models` are the signatures of the models that made `embedding`; a catalogue rebuilt by others meanwhile is
    refused. Returns the committed catalogue and the log row.
    """
    if decision not in DECISIONS:
        raise PhotoidError(f"unknown decision {decision!r}; choose from {', '.join(DECISIONS)}")
    if decision in ADDING:
        reason = text_problem(individual_id)
        if reason or individual_id in RESERVED_IDS:
            raise PhotoidError(f"individual id {individual_id!r} "
                               + (reason or "is reserved for individuals not in the catalogue"))
        if embedding is None:
            raise PhotoidError("a photo is added with its embedding")
    with catalog_transaction(catalog_dir, f"to record a decision ({decision}) about {photo.file_name}") as tx:
        current = _current(tx, models)
        log = read_log(current)
        table, added = current.table, None
        if decision in ADDING:
            if (table["image_id"] == photo.image_id).any():
                owner = table.loc[table["image_id"] == photo.image_id, "individual_id"].iloc[0]
                raise PhotoidError(f"{photo.file_name} is already in the catalogue (as {owner})")
            known = bool((table["individual_id"] == individual_id).any())
            if decision == "confirm" and not known:
                raise PhotoidError(f"{individual_id!r} is not in the catalogue; name it as a new individual")
            if decision == "new" and known:
                raise PhotoidError(f"{individual_id!r} is already in the catalogue; confirm it instead")
            rows = pd.DataFrame({"individual_id": [individual_id], "image_id": [photo.image_id],
                                 "source": [SOURCE], "path": [str(photo.path.resolve())]})
            if photo.viewpoint is not None:
                rows[VIEWPOINT_COLUMN] = photo.viewpoint
            added = (rows, np.asarray(embedding, np.float32).reshape(1, -1))
        row = _row(log, photo.sha256, photo.image_id, photo.file_name, decision,
                   individual_id if decision in ADDING else "", "", photo.threshold,
                   list(zip(photo.labels, photo.scores)))
        committed = _commit(tx, log, row, lambda **log_entry: tx.append(*added, **log_entry) if added else None)
    return committed, row


def undo(catalog_dir: str | Path, decision_id: str | None = None) -> tuple[Catalog, dict]:
    """Revert one decision (default: the latest one still in effect); a photo it added is removed."""
    with catalog_transaction(catalog_dir, "to undo a decision") as tx:
        current = _current(tx, None)
        log = read_log(current)
        active = active_decisions(log)
        if decision_id is None:
            if active.empty:
                raise PhotoidError("there is no decision to undo")
            target = active.iloc[-1]
        elif decision_id in set(active["decision_id"]):
            target = active[active["decision_id"] == decision_id].iloc[0]
        else:
            raise PhotoidError(f"decision {decision_id!r} is not in effect (unknown, an undo, or already undone)")
        keep = (current.table["image_id"] != target["image_id"]).to_numpy()
        row = _row(log, target["photo_sha256"], target["image_id"], target["file_name"], "undo",
                   target["individual_id"], target["decision_id"], target["threshold"], [])
        committed = _commit(tx, log, row, lambda **log_entry: tx.remove(keep, **log_entry)
                            if target["decision"] in ADDING else None)
    return committed, row


def _current(tx, models: list[dict] | None) -> Catalog:
    current = tx.catalog
    if current is None:
        raise PhotoidError(f"{tx.path} no longer holds a catalogue")
    if models is not None:
        check_same_models(current.models, models, f"catalogue {tx.path}")  # not rebuilt by other models meanwhile
    return current


def _row(log: pd.DataFrame, sha256: str, image_id: str, file_name: str, decision: str, individual_id: str,
         undoes: str, threshold, candidates: list) -> dict:
    return {"decision_id": str(len(log) + 1), "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "photo_sha256": sha256, "image_id": image_id, "file_name": file_name, "decision": decision,
            "individual_id": individual_id, "undoes": undoes, "threshold": str(threshold),
            "candidates": json.dumps([[str(label), round(float(score), 6)] for label, score in candidates])}


def _commit(tx, log: pd.DataFrame, row: dict, change_data) -> Catalog:
    """Write the log with `row` under a new name, then commit the manifest naming it: with the data change
    `change_data(decision_log=entry)` makes (adding or removing a photo; None: none) or alone."""
    log = pd.concat([log, pd.DataFrame([row], columns=COLUMNS)], ignore_index=True)
    name = f"decisions-{len(log):06d}.csv"  # one more row every time, so never the name in use
    path = tx.path / name
    try:
        pio.write_csv(path, log[COLUMNS])
        entry = {"name": name, "sha256": pio.file_sha256(path), "rows": int(len(log))}
        committed = change_data(**{LOG_KEY: entry}) or tx.commit_manifest(**{LOG_KEY: entry})
    except BaseException:
        path.unlink(missing_ok=True)  # not committed: the manifest still names the previous log
        raise
    for old in tx.path.glob(LOG_PATTERN):  # earlier logs, and leftovers of writers killed before their commit
        if old.name != name:
            old.unlink(missing_ok=True)
    return committed
