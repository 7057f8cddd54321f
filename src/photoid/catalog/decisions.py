"""The decision log: what people decided about photos and individuals, kept in the catalogue it changed.

A decision is one of
- `confirm` (an identified photo is added to a catalogue individual), `new` (added under a new id), `skip`
  (nothing added: the reviewer passes on the photo, which stays open for others);
- `move` (a catalogue photo goes to another individual), `merge` (every photo of one individual goes to another),
  `split` (some photos of an individual go to a new one) — the quality-control changes;
- `undo` (an earlier decision reverted: a photo it added is removed, photos it moved go back).

Each is one row of a CSV file in the catalogue folder — time, who decided (`reviewer`), the survey it came from,
the photo's sha256, its image id and file name, the decision, the individual (and the previous one), the
threshold and what was shown (the candidates with their scores) — and the catalogue's manifest names that file
with its sha256 (`decision_log`). The row and the catalogue change it records are committed together by one
`catalog_transaction`: the log file of the next state is written under a new name, then the manifest that names
it (and the new data files) replaces the old one. Killed at any moment, the catalogue and its log stay in step;
people deciding at once all keep their decisions, each applied on top of the others'; a photo is added once
(its image id is its content hash), so the second of two reviewers confirming the same photo is told who did.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from photoid.catalog.build import RESERVED_IDS, VIEWPOINT_COLUMN, Catalog, catalog_transaction, read_catalog
from photoid.core import io as pio
from photoid.core.errors import PhotoidError
from photoid.core.tables import text_problem

LOG_KEY = "decision_log"  # manifest entry: {"name", "sha256", "rows"}
LOG_PATTERN = "decisions-*.csv"
# Logs written before reviewers, surveys and quality control read the later columns as "".
COLUMNS = ["decision_id", "time", "photo_sha256", "image_id", "file_name", "decision", "individual_id",
           "undoes", "threshold", "candidates", "reviewer", "survey", "previous_id", "image_ids"]
ADDING = ("confirm", "new")
DECISIONS = (*ADDING, "skip")
REASSIGNING = ("move", "merge", "split")  # photos change individual; undone by moving them back
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
    try:
        raw = (catalog.path / entry["name"]).read_bytes()
    except FileNotFoundError:
        # The log is read when asked, not with the generation: a writer that committed since removed it. Its
        # generation's log holds these decisions and the newer ones (decisions are only ever appended).
        current = read_catalog(catalog.path)
        if current.manifest.get(LOG_KEY) == entry:
            raise PhotoidError(f"{catalog.path / entry['name']}: the decision log the manifest names is missing")
        return read_log(current)
    if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
        raise PhotoidError(f"{catalog.path / entry['name']}: its content differs from what the manifest recorded "
                           "(sha256); the decision log was changed outside photoid")
    log = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False)
    return log.reindex(columns=COLUMNS, fill_value="")


def active_decisions(log: pd.DataFrame) -> pd.DataFrame:
    """Decisions that are not undos and have not been undone, in order."""
    undone = set(log.loc[log["decision"] == "undo", "undoes"])
    return log[(log["decision"] != "undo") & ~log["decision_id"].isin(undone)]


# ----------------------------------------------------------------------------- identified photos

def decide(catalog_dir: str | Path, photo: Photo, decision: str, individual_id: str = "",
           embedding: np.ndarray | None = None, models: list[dict] | None = None, *, reviewer: str = "",
           survey: str = "") -> tuple[Catalog, dict]:
    """Record one decision about `photo`; `confirm` and `new` add it (its `embedding`) to `individual_id`.

    `models` are the signatures of the models that made `embedding`; a catalogue rebuilt by others meanwhile is
    refused. `reviewer` and `survey` are recorded with it. Returns the committed catalogue and the log row.
    """
    if decision not in DECISIONS:
        raise PhotoidError(f"unknown decision {decision!r}; choose from {', '.join(DECISIONS)}")
    if decision in ADDING:
        check_individual_id(individual_id)
        if embedding is None:
            raise PhotoidError("a photo is added with its embedding")
    with catalog_transaction(catalog_dir, f"to record a decision ({decision}) about {photo.file_name}") as tx:
        current = _current(tx, models)
        log = read_log(current)
        table, added = current.table, None
        if decision in ADDING:
            if (table["image_id"] == photo.image_id).any():
                owner = table.loc[table["image_id"] == photo.image_id, "individual_id"].iloc[0]
                raise PhotoidError(f"{photo.file_name} is already in the catalogue (as {owner}"
                                   f"{_decided_by(log, photo.sha256)})")
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
                   list(zip(photo.labels, photo.scores)), reviewer=reviewer, survey=survey)
        committed = _commit(tx, log, row, partial(tx.append, *added) if added else None)
    return committed, row


def check_individual_id(individual_id: str) -> None:
    """Refuse an id that cannot name an individual (empty, unprintable, or reserved for new ones)."""
    reason = text_problem(individual_id)
    if reason or individual_id in RESERVED_IDS:
        raise PhotoidError(f"individual id {individual_id!r} "
                           + (reason or "is reserved for individuals not in the catalogue"))


def _decided_by(log: pd.DataFrame, sha256: str) -> str:
    rows = active_decisions(log)
    rows = rows[(rows["photo_sha256"] == sha256) & rows["decision"].isin(ADDING)]
    if rows.empty:
        return ""
    row = rows.iloc[-1]
    return f", decision {row['decision_id']}" + (f" by {row['reviewer']}" if row["reviewer"] else "")


# ----------------------------------------------------------------------------- quality control

def move_photos(catalog_dir: str | Path, image_ids: Sequence[str], individual_id: str, *, decision: str = "move",
                reviewer: str = "", shown: Sequence[tuple[str, float]] = (), expected_from: str | None = None
                ) -> tuple[Catalog, dict]:
    """Give catalogue photos (`image_ids`, all of one individual) another individual, in one logged transaction.

    `decision` names the change: `move` (to any individual, known or new), `merge` (every photo of one
    individual into another, known one) or `split` (some of its photos to a new individual). `expected_from`,
    when given, is the individual the reviewer saw them under (refused if they have moved meanwhile); `shown`
    are the scores the page showed, kept in the log. Undone by `undo`, which moves them back.
    """
    if decision not in REASSIGNING:
        raise PhotoidError(f"unknown change {decision!r}; choose from {', '.join(REASSIGNING)}")
    check_individual_id(individual_id)
    image_ids = list(dict.fromkeys(image_ids))
    if not image_ids:
        raise PhotoidError("no photo chosen")
    with catalog_transaction(catalog_dir, f"to {decision} {len(image_ids)} photo(s) to {individual_id}") as tx:
        current = _current(tx, None)
        table = current.table.copy()
        rows = table.index[table["image_id"].isin(image_ids)]
        missing = sorted(set(image_ids) - set(table.loc[rows, "image_id"]))
        if missing:
            raise PhotoidError(f"not in the catalogue: {', '.join(missing[:5])}")
        owners = set(table.loc[rows, "individual_id"])
        if len(owners) != 1:
            raise PhotoidError(f"the photos belong to {len(owners)} individuals ({', '.join(sorted(owners))}); "
                               "choose photos of one individual")
        previous = owners.pop()
        if expected_from is not None and previous != expected_from:
            raise PhotoidError(f"the photos are no longer {expected_from}'s (now {previous}'s): reload the page")
        if previous == individual_id:
            raise PhotoidError(f"the photos already belong to {individual_id}")
        known = bool((table["individual_id"] == individual_id).any())
        remaining = int((table["individual_id"] == previous).sum()) - len(rows)
        if decision == "merge" and (not known or remaining):
            raise PhotoidError(f"a merge moves every photo of {previous} into an individual of the catalogue"
                               + ("" if known else f"; {individual_id!r} is not in it (rename by a move instead)"))
        if decision == "split" and (known or not remaining):
            raise PhotoidError(f"a split moves some of {previous}'s photos to a new individual"
                               + (f"; {individual_id!r} is already in the catalogue" if known else
                                  "; keep at least one photo (or merge)"))
        table.loc[rows, "individual_id"] = individual_id
        log = read_log(current)
        first = table.loc[rows[0]]
        row = _row(log, "", first["image_id"] if len(rows) == 1 else "", "", decision, individual_id, "", "",
                   list(shown), reviewer=reviewer, previous_id=previous,
                   image_ids=json.dumps(table.loc[rows, "image_id"].tolist()))
        committed = _commit(tx, log, row, partial(tx.relabel, table))
    return committed, row


def merge_individuals(catalog_dir: str | Path, source: str, target: str, *, reviewer: str = "",
                      shown: Sequence[tuple[str, float]] = ()) -> tuple[Catalog, dict]:
    """Every photo of `source` becomes `target`'s (the two were found to be one animal); undone by `undo`."""
    from photoid.catalog.store import read_catalog

    table = read_catalog(catalog_dir).table
    image_ids = table.loc[table["individual_id"] == source, "image_id"].tolist()
    if not image_ids:
        raise PhotoidError(f"no individual {source!r} in the catalogue")
    return move_photos(catalog_dir, image_ids, target, decision="merge", reviewer=reviewer, shown=shown,
                       expected_from=source)


# ----------------------------------------------------------------------------- undo

def undo(catalog_dir: str | Path, decision_id: str | None = None, *, reviewer: str = "",
         latest_of: str | None = None) -> tuple[Catalog, dict]:
    """Revert one decision: `decision_id`, else the latest one still in effect (of reviewer `latest_of` when
    given). `reviewer` is who undoes it, recorded in the log.

    A photo it added is removed; photos it moved go back to their previous individual (refused, naming the later
    decision, when they have been changed since). The log keeps both rows.
    """
    with catalog_transaction(catalog_dir, "to undo a decision") as tx:
        current = _current(tx, None)
        log = read_log(current)
        active = active_decisions(log)
        if decision_id is None:
            mine = active if latest_of is None else active[active["reviewer"] == latest_of]
            if mine.empty:
                raise PhotoidError("there is no decision to undo" + (f" by {latest_of}" if latest_of else ""))
            target = mine.iloc[-1]
        elif decision_id in set(active["decision_id"]):
            target = active[active["decision_id"] == decision_id].iloc[0]
        else:
            raise PhotoidError(f"decision {decision_id!r} is not in effect (unknown, an undo, or already undone)")
        change = None  # the data change the undo makes, in the commit that logs it
        if target["decision"] in ADDING:
            keep = (current.table["image_id"] != target["image_id"]).to_numpy()
            change = partial(tx.remove, keep)
        elif target["decision"] in REASSIGNING:
            table = _moved_back(current.table, target, active)
            change = partial(tx.relabel, table)
        row = _row(log, target["photo_sha256"], target["image_id"], target["file_name"], "undo",
                   target["individual_id"], target["decision_id"], target["threshold"], [],
                   reviewer=reviewer, survey=target["survey"], previous_id=target["previous_id"],
                   image_ids=target["image_ids"])
        committed = _commit(tx, log, row, change)
    return committed, row


def _moved_back(table: pd.DataFrame, target: pd.Series, active: pd.DataFrame) -> pd.DataFrame:
    """The table with the photos a move, merge or split changed given back to their previous individual."""
    image_ids = json.loads(target["image_ids"] or "[]")
    rows = table.index[table["image_id"].isin(image_ids)]
    changed = table.loc[rows, "individual_id"] != target["individual_id"]
    if len(rows) != len(image_ids) or changed.any():
        later = active[(active["decision_id"].astype(int) > int(target["decision_id"]))
                       & active["image_ids"].map(lambda ids: bool(set(json.loads(ids or "[]")) & set(image_ids))
                                                 if ids else False)]
        detail = f"; undo decision {later['decision_id'].iloc[-1]} first" if len(later) else ""
        raise PhotoidError(f"decision {target['decision_id']}'s photos have changed since ({target['decision']} to "
                           f"{target['individual_id']}){detail}")
    table = table.copy()
    table.loc[rows, "individual_id"] = target["previous_id"]
    return table


# ----------------------------------------------------------------------------- commit

def _current(tx, models: list[dict] | None) -> Catalog:
    current = tx.catalog
    if current is None:
        raise PhotoidError(f"{tx.path} no longer holds a catalogue")
    if models is not None:
        from photoid.inference.embedder import check_same_models  # loads TensorFlow: only when models are checked

        check_same_models(current.models, models, f"catalogue {tx.path}")  # not rebuilt by other models meanwhile
    return current


def _row(log: pd.DataFrame, sha256: str, image_id: str, file_name: str, decision: str, individual_id: str,
         undoes: str, threshold, candidates: list, *, reviewer: str = "", survey: str = "", previous_id: str = "",
         image_ids: str = "") -> dict:
    return {"decision_id": str(len(log) + 1), "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "photo_sha256": sha256, "image_id": image_id, "file_name": file_name, "decision": decision,
            "individual_id": individual_id, "undoes": undoes, "threshold": str(threshold),
            "candidates": json.dumps([[str(label), round(float(score), 6)] for label, score in candidates]),
            "reviewer": reviewer, "survey": survey, "previous_id": previous_id, "image_ids": image_ids}


def _commit(tx, log: pd.DataFrame, row: dict, change_data=None) -> Catalog:
    """Write the log with `row` under a new name, then commit the manifest naming it: in the commit of
    `change_data(decision_log=entry)` (a transaction's append, remove or relabel, which rewrite only the parts of the
    catalogue they touch), or alone when the decision changes no photo."""
    log = pd.concat([log, pd.DataFrame([row], columns=COLUMNS)], ignore_index=True)
    name = f"decisions-{len(log):06d}.csv"  # one more row every time, so never the name in use
    path = tx.path / name
    try:
        pio.write_csv(path, log[COLUMNS])
        entry = {"name": name, "sha256": pio.file_sha256(path), "rows": int(len(log))}
        change = change_data or tx.commit_manifest
        committed = change(**{LOG_KEY: entry})
    except BaseException:
        path.unlink(missing_ok=True)  # not committed: the manifest still names the previous log
        raise
    for old in tx.path.glob(LOG_PATTERN):  # earlier logs, and leftovers of writers killed before their commit
        if old.name != name:
            old.unlink(missing_ok=True)
    return committed
