"""`photoid catalog`: a catalogue of known individuals — one embedding per photo — that grows without retraining.

Its files, and the transactions through which every command (and any other writer, such as a web page) changes
them, are `photoid.catalog.store`'s:

    with catalog_transaction(path, waiting_message="to add 3 photos of t_id_X") as tx:
        current = tx.catalog                      # this generation, read under the lock (None: no catalogue yet)
        tx.append(rows, embeddings)               # or tx.remove(keep), tx.commit(...), tx.commit_manifest(...)

Column block m of the embeddings is fold model m's own normalised embedding (scaled); the manifest's `models`
list gives each block's `offset` and `dim`. Identification scores individuals in each model's space and averages
(`openset.catalogue_scores`); calibration compares photos in the space of the one fold model that never trained
on them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import pandas as pd

from photoid.catalog.identify import DEFAULT_BATCH, check_viewpoint, load_catalog_embedder, search_description
from photoid.catalog.store import (
    MANIFEST,
    PART_ROWS,
    STORAGES,
    VIEWPOINT_COLUMN,
    Catalog,
    _now,
    catalog_transaction,
    read_catalog,
)
from photoid.catalog.stream import build_in_chunks, holds_finished_catalogue
from photoid.core.errors import PhotoidError, ProblemList
from photoid.core.labels import NEW_INDIVIDUAL, NEW_TURTLE
from photoid.runs.config import view_list
from photoid.tasks import get_task

RESERVED_IDS = (NEW_INDIVIDUAL, NEW_TURTLE)


# ----------------------------------------------------------------------------- build, add, list

def _runs_summary(signatures: list[dict], runs_by_dir: dict) -> list[dict]:
    summary: dict[str, dict] = {}
    for sig in signatures:
        run = runs_by_dir[sig["run_dir"]]
        entry = summary.setdefault(sig["run_dir"], {
            "run": sig["run"], "run_dir": sig["run_dir"], "recipe": run.config.model,
            "config_sha256": sig["config_sha256"], "classes_sha256": sig["classes_sha256"],
            "image_size": run.config.dim, "embedding_size": sig["dim"], "folds": []})
        entry["folds"].append(sig["fold"])
    return list(summary.values())


def build_catalog(run_dirs: Sequence[str], data_dir: str | Path, out: str | Path, *, folds: list[int] | None = None,
                  records_dir: str | None = None, batch_size: int = DEFAULT_BATCH, force: bool = False,
                  storage: str = "float32", index: str = "exact", nlist: int | None = None,
                  nprobe: int | None = None, ef_search: int | None = None, chunk_rows: int = PART_ROWS,
                  progress: bool = False, note=None, local: bool = True, joined: bool | None = None) -> Catalog:
    """A catalogue of every labelled photo of a data folder of the runs' task (`Task.labelled_photos`: Turtle
    Recall's train.csv then extra_images.csv; a whale folder's labelled metadata rows; a generic folder's train
    rows). Whale and generic folders say each photo's viewpoint: right views are embedded mirrored where the runs'
    records mirrored them, as the models saw them in training.

    The photos are embedded `chunk_rows` at a time, each chunk committed as it is done, so a killed build resumes
    where it stopped and several processes can share one (`photoid.catalog.stream`). `storage` "float16" halves
    the embeddings' memory and disk (its effect on scores is measured on the first chunk and kept in the
    manifest); `index` "ivf" or "hnsw" adds an approximate search index, whose recall against the exact search is
    measured when it is built (`photoid.catalog.approximate`).

    `local`: also every photo's local features (`photoid.catalog.local`), prepared as the runs prepare photos and
    committed with each chunk's embeddings. Returns the catalogue as this process
    leaves it: complete, unless other processes are still embedding chunks of it.

    `joined`: whether `out` held no finished catalogue when the build was asked for (None: as `out` is now; the
    command looks as it starts). Where it did not, a finished catalogue found later is refused unless it is this
    very build, finished by other processes sharing it while this one was starting."""
    from photoid.catalog.approximate import KINDS, settings_for
    from photoid.catalog.local import settings_for_runs
    from photoid.inference.embedder import Embedder
    from photoid.inference.fold_models import EMBEDDING_VIEWS
    from photoid.runs.loaded import choose_folds, load_run

    if storage not in STORAGES:
        raise PhotoidError(f"unknown storage {storage!r}; choose from {', '.join(STORAGES)}")
    if index not in KINDS:
        raise PhotoidError(f"unknown index {index!r}; choose from {', '.join(KINDS)}")
    if chunk_rows < 1:
        raise PhotoidError(f"the chunk size must be at least 1 photo, got {chunk_rows}")
    out = Path(out)
    if joined is None:
        joined = not holds_finished_catalogue(out)
    _check_build_target(out, force, joined)  # before the slow work, and again when each chunk is committed
    runs = [load_run(d, records_dir) for d in run_dirs]
    # Photos are read chunk by chunk: one that cannot be read stops the build at its chunk, naming it.
    table = get_task(runs[0].config.task).labelled_photos(data_dir, check_images=False)
    views = {view for run in runs for view in view_list(run.config.views)}
    if views and all(run.config.views for run in runs) and VIEWPOINT_COLUMN in table.columns:
        # Runs trained on some views only (the winner's top models) embed only photos of those views.
        table = table[table[VIEWPOINT_COLUMN].isin(views)].reset_index(drop=True)
        if table.empty:
            raise PhotoidError(f"{data_dir} has no labelled photo of the views the runs were trained on "
                               f"({', '.join(sorted(views))})")
    embedder = Embedder([(run, fold) for run in runs for fold in choose_folds(run, folds)])
    viewpoints = table[VIEWPOINT_COLUMN].tolist() if VIEWPOINT_COLUMN in table.columns else None
    signatures = embedder.signatures()
    manifest = {
        "created": _now(),
        "data_dir": str(Path(data_dir).resolve()), "embedding_views": list(EMBEDDING_VIEWS),
        "models": signatures, "runs": _runs_summary(signatures, {str(r.run_dir.resolve()): r for r in runs}),
        "calibration": None,
    }
    if storage != "float32":
        manifest["storage"] = storage
    if index != "exact":
        manifest["index"] = settings_for(index, len(table), nlist=nlist, nprobe=nprobe, ef_search=ef_search)
    return build_in_chunks(embedder, table, viewpoints, out, manifest, batch_size=batch_size, force=force,
                           chunk_rows=chunk_rows, progress=progress, note=note or (lambda line: None),
                           local_settings=settings_for_runs(runs) if local else None, joined=joined)


def _check_build_target(out: Path, force: bool, joined: bool = False) -> None:
    """Refuses a folder holding a finished catalogue (unless `force`, or `joined`: then whether it is this build's
    is decided once the photos and models are known) or anything else but a catalogue."""
    if (out / MANIFEST).is_file():
        # A build in progress is resumed; a finished one, where `joined`, is judged once its listing is known.
        if not force and not joined and holds_finished_catalogue(out):
            raise PhotoidError(f"{out} already holds a catalogue; --force replaces it (photos added to it are lost)")
    elif out.exists() and (not out.is_dir() or any(not p.name.startswith(".") for p in out.iterdir())):
        raise PhotoidError(f"{out} exists and is not a catalogue folder; choose a new or empty folder")


def add_photos(catalog_dir: str | Path, paths: Sequence[str], individual_id: str, *,
               run_dirs: Sequence[str] | None = None, records_dir: str | None = None,
               batch_size: int = DEFAULT_BATCH, viewpoint: str | None = None) -> tuple[Catalog, bool]:
    """Add photos of one individual, known or new; returns (the updated catalogue, whether it was known).

    `viewpoint` (of every photo; None: unknown) mirrors right views for models whose records mirrored them; it is
    kept in the table's viewpoint column.

    A photo's image id is its file name without the extension; it must be new to the catalogue. The photos are
    embedded first, then added to the catalogue's generation current at that moment (`catalog_transaction`),
    so adds running at the same time all keep their photos.
    """
    from photoid.core.tables import text_problem

    reason = text_problem(individual_id)
    if reason or individual_id in RESERVED_IDS:
        raise PhotoidError(f"--id {individual_id!r} " + (reason or "is reserved for individuals not in the catalogue"))
    if not paths:
        raise PhotoidError("no photos given")
    catalog = read_catalog(catalog_dir)
    image_ids = [Path(p).stem for p in paths]
    _check_new_image_ids(catalog, paths, image_ids)  # before the slow work, and again under the lock
    from photoid.catalog.local import (
        LOCAL_KEY,
        append_with_local,
        has_local_features,
        local_settings,
        read_local_features,
        table_features,
    )
    from photoid.local.features import FeatureSet

    embedder = load_catalog_embedder(catalog, run_dirs, records_dir)
    check_viewpoint(embedder, viewpoint, catalog)
    added = pd.DataFrame({"individual_id": individual_id, "image_id": image_ids, "source": "added",
                          "path": [str(Path(p).resolve()) for p in paths]})
    if viewpoint is not None:
        added[VIEWPOINT_COLUMN] = viewpoint
    views = None if viewpoint is None else [viewpoint] * len(paths)
    # The photos' local features, where the catalogue keeps them (a zero-shot catalogue's embeddings come from them).
    features = table_features(added, local_settings(catalog)) if has_local_features(catalog) else None
    if features is not None and not catalog.models:
        embeddings = embedder.describe([features.get(i) for i in image_ids])
    else:
        embeddings = embedder.embed_all(paths, batch_size, views)
    with catalog_transaction(catalog.path, f"to add {len(paths)} photo(s) of {individual_id}") as tx:
        current = tx.catalog
        if current is None or current.models != catalog.models or \
                (current.manifest.get(LOCAL_KEY) or {}).get("settings") != \
                (catalog.manifest.get(LOCAL_KEY) or {}).get("settings"):
            raise PhotoidError(f"{catalog.path} was rebuilt while the photos were embedded; nothing was added, add "
                               "them again")
        current.check_complete()
        _check_new_image_ids(current, paths, image_ids)
        known = bool((current.table["individual_id"] == individual_id).any())
        if features is None:
            updated = tx.append(added, embeddings)
        else:
            joined = FeatureSet.join(read_local_features(current), features)
            updated = append_with_local(tx, added, embeddings, joined, local_settings(current))
    return updated, known


def add_local_features(catalog_dir: str | Path) -> tuple[Catalog, int]:
    """Extract the local features a catalogue lacks (built without them, or photos added by a writer that does not
    extract them) and commit them; its photos, embeddings and decisions stay. Returns (catalogue, photos added)."""
    from photoid.catalog.local import (
        LOCAL_KEY,
        local_settings,
        read_local_features,
        settings_for_runs,
        table_features,
        write_local_then_commit,
    )
    from photoid.local.features import FeatureSet
    from photoid.runs.loaded import load_run

    catalog = read_catalog(catalog_dir)
    if catalog.manifest.get(LOCAL_KEY):
        settings, have = local_settings(catalog), read_local_features(catalog)
    else:
        settings = settings_for_runs([load_run(d) for d in catalog.run_dirs()])
        have = FeatureSet.pack([], [])
    missing = catalog.table[~catalog.table["image_id"].isin(set(have.image_ids))]
    started = time.time()
    features = table_features(missing, settings)
    seconds = time.time() - started
    with catalog_transaction(catalog.path, f"to add the local features of {len(missing)} photo(s)") as tx:
        current = tx.catalog
        if current is None or current.models != catalog.models:
            raise PhotoidError(f"{catalog.path} was rebuilt meanwhile; nothing was added, run this again")
        before = read_local_features(current) if current.manifest.get(LOCAL_KEY) else FeatureSet.pack([], [])
        joined = FeatureSet.join(before, features).select(current.table["image_id"])
        # The catalogue's parts stay as they are (files included): only the local-feature files are new.
        updated = write_local_then_commit(tx, current.manifest, joined, settings,
                                          lambda manifest: tx.commit_parts(manifest, list(current.parts), current),
                                          seconds)
    return updated, len(missing)


def _check_new_image_ids(catalog: Catalog, paths: Sequence[str], image_ids: Sequence[str]) -> None:
    problems, seen = ProblemList(), set(catalog.table["image_id"])
    for path, image_id in zip(paths, image_ids):
        if image_id in seen:
            problems.add(str(path), None, f"image id {image_id!r} (the file name) is already in the catalogue")
        seen.add(image_id)
    problems.raise_if_any(title="photos that cannot be added")


def summary(catalog: Catalog) -> dict:
    """Individuals, photos and their sources, the runs that made it and its calibration."""
    table = catalog.table
    by_source = {source: {"images": int(len(rows)), "individuals": int(rows["individual_id"].nunique())}
                 for source, rows in table.groupby("source", sort=True)}
    per_individual = table.groupby("individual_id").size()
    return {"catalog": str(catalog.path), "images": int(len(table)), "individuals": int(len(per_individual)),
            "single_photo_individuals": int((per_individual == 1).sum()), "dim": catalog.dim,
            "sources": by_source, "runs": catalog.manifest.get("runs", []), "updated": catalog.manifest["updated"],
            "calibration": catalog.calibration, "storage": catalog.storage, "parts": len(catalog.parts),
            "search": search_description(catalog) or "exact", "float16_effect": catalog.manifest.get("float16_effect"),
            "building": catalog.building, "local_features": catalog.manifest.get("local_features"),
            "zero_shot": catalog.manifest.get("zero_shot")}
