"""The catalogue's prepared search: what every identification needs of a catalogue generation, made once.

Searching a catalogue (`openset.catalogue_scores`) normalises every photo's embedding per model, lays the photos out
by individual (`openset.GroupLayout`) and only then multiplies; made on every call, that preparation cost more than
the search itself for one photo against 100,000. A `CatalogIndex` holds it for one generation:

- the individuals (sorted, as `Catalog.individuals` gives them) and each photo's individual,
- per model block, the photos' unit rows laid out by individual (float32, or float16 where the catalogue stores
  float16), searched exactly by `openset.best_per_individual`: the same products and the same maximum, so the
  same scores as `catalogue_scores`;
- or, where the catalogue holds a stored approximate index (`photoid catalog build --index ivf|hnsw`,
  `photoid.catalog.approximate`), that faiss index instead of the laid rows.

It is built once per generation (`Catalog.index()`), at load: the exact one is never stored (laying out a million
photos takes seconds, storing it would double the catalogue on disk). A later generation of the same catalogue
carries it over by its changes alone (`for_catalog` with the previous index): photos of new parts go to a small
`delta` searched by one dense product and merged by maximum, photos of parts that left are marked dead; only when
the delta passes REBUILD_FRACTION of the photos (or REBUILD_MIN_ROWS) is the layout made afresh. `photoid serve`
keeps its catalogue's index in memory this way across decisions and `photoid catalog add`s made elsewhere.
Scores of a carried-over index equal a fresh one's (tests/test_catalog_index.py): a maximum does not depend on
where a photo's row sits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from photoid.catalog.openset import GroupLayout, Ranker, _product, best_per_individual, combine_models
from photoid.core.labels import NEW_INDIVIDUAL
from photoid.core.retrieval import normalize_rows

REBUILD_FRACTION = 0.1  # a delta (or dead rows) above this share of the photos makes the layout afresh
REBUILD_MIN_ROWS = 20_000  # ... or above this many rows: a dense product over 20,000 rows costs about 2 ms


@dataclass
class Delta:
    """Photos added since the layout was made: unit rows per block, sorted by slot, and where each slot starts."""

    parts: dict  # part key -> (unit rows per block, slots)
    rows: list[np.ndarray] = field(default_factory=list)  # per block, rows sorted by slot
    slots: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # distinct slots, in order
    starts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # first row of each slot

    @staticmethod
    def of(parts: dict, n_blocks: int, dtype) -> "Delta":
        if not parts:
            return Delta({})
        slots = np.concatenate([s for _, s in parts.values()])
        order = np.argsort(slots, kind="stable")
        rows = [np.concatenate([r[b] for r, _ in parts.values()])[order] for b in range(n_blocks)]
        distinct, starts = np.unique(slots[order], return_index=True)
        return Delta(parts, [r.astype(dtype, copy=False) for r in rows], distinct, starts)

    @property
    def n_rows(self) -> int:
        return sum(len(s) for _, s in self.parts.values())


class CatalogIndex:
    """The prepared search over one catalogue generation; `scores` answers as `openset.catalogue_scores` does."""

    def __init__(self, *, blocks, names, slot_of, slot_names, main_keys, main_slots, layout, laid, approximate,
                 dead, delta, storage, description, stored_files=None):
        self.blocks = blocks  # (offset, dim) per model
        self.names = names  # the individuals with a photo, sorted: the columns of `scores`
        self._slot_of = slot_of  # individual -> slot (stable for the index's life; new ones are appended)
        self._slot_names = slot_names
        self.main_keys = main_keys  # the parts laid out (or in the approximate index), in row order, with rows
        self._main_slots = main_slots  # slot of each main row
        self._layout = layout  # GroupLayout of the main rows (exact), or None
        self._laid = laid  # per block, the main rows laid out (exact), or None
        self._approximate = approximate  # per block, an `approximate.Searcher` (approximate), or None
        self._dead = dead  # main rows removed since (sorted)
        self._delta = delta
        self.storage = storage
        self.description = description  # "exact", or the approximate index and its measured recall
        self._stored_files = stored_files  # the manifest's entry for the stored approximate index it loaded
        self._column_slot = np.array([slot_of[n] for n in names], dtype=np.int64)
        self._rankers: dict = {}
        self._columns: dict = {}
        n_slots = len(slot_names)
        self._main_alive = np.bincount(np.delete(main_slots, dead), minlength=n_slots)

    @property
    def approximate(self) -> bool:
        return self._approximate is not None

    @property
    def n_main(self) -> int:
        return len(self._main_slots)

    @property
    def n_delta(self) -> int:
        return self._delta.n_rows

    @property
    def n_dead(self) -> int:
        return len(self._dead)

    def nbytes(self) -> int:
        """Memory held by the laid rows and the delta (the approximate indexes' memory is faiss')."""
        arrays = (self._laid or []) + self._delta.rows
        return int(sum(a.nbytes for a in arrays))

    # ------------------------------------------------------------------ building

    @staticmethod
    def for_catalog(catalog, previous: "CatalogIndex | None" = None) -> "CatalogIndex":
        """The index of `catalog`: carried over from `previous` (an earlier generation's) by the parts that changed,
        or made afresh when there is none, when it was made for other models or another stored index, or when the
        changes pass the rebuild limits."""
        if previous is not None and previous.blocks == catalog.blocks() and previous.storage == catalog.storage:
            stored = (catalog.manifest.get("index") or {}).get("files")
            if stored == previous._stored_files:
                carried = previous._carried_to(catalog)
                if carried is not None:
                    return carried
        return CatalogIndex.fresh(catalog)

    @staticmethod
    def fresh(catalog) -> "CatalogIndex":
        """Lay out every photo of `catalog` (or load its stored approximate index)."""
        from photoid.catalog import approximate

        entry = catalog.manifest.get("index") or {}
        if entry.get("kind", "exact") != "exact":
            searchers, covered = approximate.load_searchers(catalog, entry)
            return CatalogIndex.fresh_over(catalog, entry, searchers, covered)
        codes, names = _individual_codes(catalog.table)
        layout = GroupLayout.of(codes, len(names))
        laid = [_laid_rows(catalog.parts, offset, dim, layout.order, catalog.storage)
                for offset, dim in catalog.blocks()]
        return CatalogIndex(blocks=catalog.blocks(), names=names, slot_of={n: i for i, n in enumerate(names)},
                            slot_names=list(names), main_keys=[(p.key, p.rows) for p in catalog.parts],
                            main_slots=codes, layout=layout, laid=laid, approximate=None,
                            dead=np.zeros(0, np.int64), delta=Delta({}), storage=catalog.storage,
                            description="exact")

    @staticmethod
    def fresh_over(catalog, entry: dict, searchers: list, covered: list[tuple[str, int]]) -> "CatalogIndex":
        """An index over approximate `searchers` covering the parts `covered` ((name, rows), in their row order);
        the catalogue's other parts are searched exactly beside them, covered parts that left are dead."""
        _, names = _individual_codes(catalog.table)
        return CatalogIndex._over_stored(catalog, entry, searchers, covered, names,
                                         {n: i for i, n in enumerate(names)}, catalog.blocks(), catalog.storage)

    @staticmethod
    def _over_stored(catalog, entry, searchers, covered, names, slot_of, blocks, storage) -> "CatalogIndex":
        """An index over a stored approximate index covering the parts `covered` (name -> rows), in its order; the
        catalogue's other parts are the delta, covered parts that left are dead."""
        by_name = {p.name: p for p in catalog.parts}
        main_keys, main_slots, dead, start = [], [], [], 0
        for name, rows in covered:
            part = by_name.get(name)
            if part is None:
                dead.append(np.arange(start, start + rows))
                main_slots.append(np.full(rows, -1, np.int64))
                main_keys.append(((name, "", ""), rows))
            else:
                main_slots.append(pd.Index(names).get_indexer(part.table["individual_id"]).astype(np.int64))
                main_keys.append((part.key, rows))
            start += rows
        main_slots = np.concatenate(main_slots) if main_slots else np.zeros(0, np.int64)
        dead = np.concatenate(dead) if dead else np.zeros(0, np.int64)
        main_slots[dead] = 0  # dead rows never score; any slot keeps the arrays whole
        covered_names = {name for name, _ in covered}
        delta_parts = {p.key: _delta_part(p, blocks, [slot_of[i] for i in p.table["individual_id"]], storage)
                       for p in catalog.parts if p.name not in covered_names}
        return CatalogIndex(blocks=blocks, names=names, slot_of=slot_of, slot_names=list(names), main_keys=main_keys,
                            main_slots=main_slots, layout=None, laid=None, approximate=searchers, dead=dead,
                            delta=Delta.of(delta_parts, len(blocks), _dtype(storage)), storage=storage,
                            description=entry["description"], stored_files=entry.get("files"))

    def _carried_to(self, catalog) -> "CatalogIndex | None":
        """This index moved to a later generation of its catalogue by the parts that changed; None when the changes
        pass the rebuild limits (or the main rows are not where they were)."""
        current = {p.key: p for p in catalog.parts}
        dead = [self._dead]
        start = 0
        for key, rows in self.main_keys:
            if key not in current:
                dead.append(np.arange(start, start + rows))
            start += rows
        dead = np.unique(np.concatenate(dead))
        main = {key for key, _ in self.main_keys}
        slot_of, slot_names = dict(self._slot_of), list(self._slot_names)
        delta_parts = {}
        for key, part in current.items():
            if key in main:
                continue
            if key in self._delta.parts:
                delta_parts[key] = self._delta.parts[key]
                continue
            slots = []
            for individual in part.table["individual_id"]:
                if individual not in slot_of:
                    slot_of[individual] = len(slot_names)
                    slot_names.append(individual)
                slots.append(slot_of[individual])
            delta_parts[key] = _delta_part(part, self.blocks, slots, self.storage)
        n_delta = sum(len(s) for _, s in delta_parts.values())
        limit = max(REBUILD_MIN_ROWS, REBUILD_FRACTION * len(catalog.table))
        if n_delta > limit or len(dead) > limit:
            return None
        delta = Delta.of(delta_parts, len(self.blocks), _dtype(self.storage))
        alive = np.bincount(np.delete(self._main_slots, dead), minlength=len(slot_names))
        if len(delta.slots):
            alive[delta.slots] += 1
        alive_slots = np.flatnonzero(alive > 0)
        names = self.names
        if not np.array_equal(np.sort(self._column_slot), alive_slots):  # an individual came or went
            names = sorted(slot_names[s] for s in alive_slots)
        return CatalogIndex(blocks=self.blocks, names=names, slot_of=slot_of, slot_names=slot_names,
                            main_keys=self.main_keys, main_slots=self._main_slots, layout=self._layout,
                            laid=self._laid, approximate=self._approximate, dead=dead, delta=delta,
                            storage=self.storage, description=self.description, stored_files=self._stored_files)

    # ------------------------------------------------------------------ what identification needs of it

    def ranker(self, nameable=None, new_label: str = NEW_INDIVIDUAL) -> Ranker:
        """`openset.Ranker` over this index's individuals (made once per nameable list and label)."""
        key = (None if nameable is None else tuple(nameable), new_label)
        if key not in self._rankers:
            self._rankers[key] = Ranker(self.names, nameable, new_label)
        return self._rankers[key]

    def probability_columns(self, classes) -> np.ndarray:
        """Each individual's column in a classifier's `classes` (-1: the classifier does not know it), made once
        per class list (`identify.align_probabilities` maps them the same way)."""
        key = tuple(classes)
        if key not in self._columns:
            column = {c: i for i, c in enumerate(classes)}
            self._columns = {key: np.array([column.get(n, -1) for n in self.names], dtype=np.int64)}
        return self._columns[key]

    # ------------------------------------------------------------------ search

    def scores(self, queries: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
        """float32 (queries, len(names)): each individual's score for each query photo, as
        `openset.catalogue_scores` gives it (the models' best clipped cosines averaged on one model's scale; -inf
        for an individual without a photo). `exclude[j]`: a main row query j is not compared with (its own photo;
        -1: none)."""
        queries = np.asarray(queries, dtype=np.float32)
        own = np.full(len(queries), -1, np.int64) if exclude is None else np.asarray(exclude, np.int64)
        return combine_models(self._block_scores(b, queries[:, offset:offset + dim], own)
                              for b, (offset, dim) in enumerate(self.blocks))

    def _block_scores(self, b: int, queries: np.ndarray, own: np.ndarray) -> np.ndarray:
        q = normalize_rows(queries)
        n_slots = len(self._slot_names)
        if self._approximate is None:
            laid_own = np.where(own >= 0, self._layout.laid_row[np.maximum(own, 0)], -1)
            dead = self._layout.laid_row[self._dead] if len(self._dead) else None
            out = best_per_individual(self._laid[b], q, self._layout.groups, n_slots, laid_own, dead=dead)
        else:
            out = self._approximate[b].best_per_slot(q, self._main_slots, self._main_alive, n_slots, own, self._dead)
        delta = self._delta
        if len(delta.slots):
            sims = _product(delta.rows[b], q)
            best = np.maximum.reduceat(sims, delta.starts, axis=0)
            np.clip(best, 0.0, 1.0, out=best)
            out[delta.slots] = np.maximum(out[delta.slots], best)
        return np.ascontiguousarray(out[self._column_slot].T)


def _individual_codes(table: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Each row's individual as a code into the sorted individuals (`Catalog.individuals`, by hashing)."""
    codes, uniques = pd.factorize(table["individual_id"], sort=True)
    return codes.astype(np.int64), [str(n) for n in uniques]


def _dtype(storage: str):
    return np.float16 if storage == "float16" else np.float32


def _laid_rows(parts, offset: int, dim: int, order: np.ndarray, storage: str) -> np.ndarray:
    """One model's unit rows of every part, in the layout's `order` (`normalize_rows(take=order)` over the parts
    joined, without joining them: each part's rows are normalised and written to their laid places)."""
    columns = slice(offset, offset + dim)
    if len(parts) == 1 and storage == "float32":
        return normalize_rows(parts[0].embeddings[:, columns], take=order)
    out = np.empty((len(order), dim), dtype=_dtype(storage))
    laid_row = np.empty_like(order)
    laid_row[order] = np.arange(len(order))
    start = 0
    for part in parts:
        out[laid_row[start:start + part.rows]] = normalize_rows(part.embeddings[:, columns])
        start += part.rows
    return out


def _delta_part(part, blocks, slots, storage: str):
    rows = [normalize_rows(part.embeddings[:, offset:offset + dim]).astype(_dtype(storage), copy=False)
            for offset, dim in blocks]
    return rows, np.asarray(slots, dtype=np.int64)


def float16_effect(embeddings: np.ndarray, individual_ids, blocks, n_queries: int = 500, k: int = 5,
                   seed: int = 0) -> dict:
    """What float16 storage does to the scores: `n_queries` of the photos searched against all of them (each left
    out of its own search) with the float32 rows and with the rows as float16 storage searches them (stored in
    float16, normalised, laid out in float16). Returns the largest and the mean |score difference| over every
    individual's score, and the share of queries whose top `k` individuals (in order) or best one changed."""
    from photoid.catalog.openset import catalogue_scores

    embeddings = np.asarray(embeddings, dtype=np.float32)
    codes, uniques = pd.factorize(pd.Series(individual_ids), sort=True)
    rows = np.sort(np.random.default_rng(seed).choice(len(embeddings), min(n_queries, len(embeddings)),
                                                      replace=False))
    rounded = np.empty_like(embeddings)
    for offset, dim in blocks:  # what the index lays out: the stored float16 rows, normalised, in float16
        columns = slice(offset, offset + dim)
        stored = embeddings[:, columns].astype(np.float16)
        rounded[:, columns] = normalize_rows(stored).astype(np.float16)
    exact = catalogue_scores(embeddings[rows], embeddings, codes, len(uniques), blocks, exclude=rows,
                             backend="numpy")
    half = catalogue_scores(embeddings[rows], rounded, codes, len(uniques), blocks, exclude=rows, backend="numpy")
    finite = np.isfinite(exact)
    difference = np.abs(exact[finite] - half[finite])
    top_exact = np.argsort(-exact, axis=1, kind="stable")[:, :k]
    top_half = np.argsort(-half, axis=1, kind="stable")[:, :k]
    return {"queries": int(len(rows)), "gallery": int(len(embeddings)),
            "max_abs_score_difference": float(difference.max(initial=0.0)),
            "mean_abs_score_difference": float(difference.mean()) if difference.size else 0.0,
            f"top{k}_changed": float((top_exact != top_half).any(axis=1).mean()),
            "top1_changed": float((top_exact[:, 0] != top_half[:, 0]).mean())}
