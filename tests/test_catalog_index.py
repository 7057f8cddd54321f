"""The catalogue's prepared index and its parts: the same scores as the search it replaces, carried over by additions
and removals to the scores a fresh index gives, float16 storage and its measured error, memory-mapped files
checked on first use, and the opt-in approximate index with its recall. Synthetic embeddings (no model) except the
last tests, which build, identify and serve with the session's tiny run."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest

import photoid.catalog.store as store
from photoid.catalog import approximate
from photoid.catalog.index import CatalogIndex, float16_effect
from photoid.catalog.openset import catalogue_scores
from photoid.catalog.store import catalog_transaction, read_catalog
from photoid.core.errors import PhotoidError
from robustness.robustness_support import file_bytes


def synthetic_rows(n_photos: int, n_individuals: int, dims=(16, 12), seed: int = 0, first: int = 0,
                   individual_prefix: str = "ind"):
    """(table, embeddings): photos around their individual's centre, one unit block per model scaled 1/sqrt(m)."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, n_individuals, n_photos)
    blocks = []
    for dim in dims:
        centres = rng.standard_normal((n_individuals, dim)).astype(np.float32)
        block = centres[codes] + 0.7 * rng.standard_normal((n_photos, dim)).astype(np.float32)
        blocks.append(block / np.linalg.norm(block, axis=1, keepdims=True) / np.sqrt(len(dims)))
    table = pd.DataFrame({"individual_id": [f"{individual_prefix}{c:04d}" for c in codes],
                          "image_id": [f"img{first + i:06d}" for i in range(n_photos)], "source": "synthetic",
                          "path": "photo.jpg"})
    return table, np.concatenate(blocks, axis=1).astype(np.float32)


def synthetic_manifest(dims=(16, 12), **entries) -> dict:
    offsets = np.cumsum([0, *dims])
    return {"models": [{"run": "r", "run_dir": "r", "fold": b, "offset": int(o), "dim": int(d)}
                       for b, (o, d) in enumerate(zip(offsets, dims))], "calibration": None, **entries}


def make_catalog(path, table, embeddings, dims=(16, 12), **entries):
    with catalog_transaction(path) as tx:
        return tx.commit(synthetic_manifest(dims, **entries), table, embeddings)


def exact_scores(catalog, queries):
    names, codes = catalog.individuals()
    return names, catalogue_scores(queries, catalog.embeddings, codes, len(names), catalog.blocks(),
                                   backend="numpy")


def test_the_prepared_index_gives_the_scores_of_the_search_it_replaces(tmp_path):
    table, embeddings = synthetic_rows(400, 70)
    catalog = make_catalog(tmp_path / "cat", table, embeddings)
    _, queries = synthetic_rows(25, 70, seed=1)
    names, expected = exact_scores(catalog, queries)
    index = catalog.index()
    assert index.names == names and index.description == "exact" and not index.approximate
    np.testing.assert_array_equal(index.scores(queries), expected)
    assert catalog.index() is index  # made once per generation
    # Leaving a photo out of its own search, as calibration does.
    own = np.arange(10)
    left_out = catalogue_scores(embeddings[:10], catalog.embeddings, catalog.individuals()[1], len(names),
                                catalog.blocks(), exclude=own, backend="numpy")
    np.testing.assert_array_equal(index.scores(embeddings[:10], exclude=own), left_out)


def test_parts_rewrite_only_what_changed_and_old_catalogues_still_load(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "PART_ROWS", 50)
    path = tmp_path / "cat"
    table, embeddings = synthetic_rows(50, 10)
    first = make_catalog(path, table, embeddings)
    assert first.manifest["version"] == 1 and "parts" not in first.manifest  # one part: as it always was
    with catalog_transaction(path) as tx:
        rows, vectors = synthetic_rows(3, 10, seed=2, first=50)
        grown = tx.append(rows, vectors)  # the first part is full: a new one
    assert grown.manifest["version"] == 2 and len(grown.parts) == 2
    assert grown.manifest["files"]["embeddings"] == first.manifest["files"]["embeddings"]
    with catalog_transaction(path) as tx:
        more = tx.append(*synthetic_rows(2, 10, seed=3, first=53))  # the last part is small: rewritten with them
    assert [p.rows for p in more.parts] == [50, 5] and more.parts[0].name == first.parts[0].name
    keep = np.ones(55, bool)
    keep[[51, 54]] = False
    with catalog_transaction(path) as tx:
        fewer = tx.remove(keep)
    assert [p.rows for p in fewer.parts] == [50, 3] and fewer.parts[0].name == first.parts[0].name
    again = read_catalog(path)
    assert again.table["image_id"].tolist() == [f"img{i:06d}" for i in range(55) if keep[i]]
    expected = np.concatenate([embeddings, vectors, synthetic_rows(2, 10, seed=3, first=53)[1]])[keep]
    np.testing.assert_array_equal(again.embeddings, expected)
    listed = store.listed_files(again.manifest)
    assert sorted(p.name for p in path.iterdir() if p.suffix in (".npy", ".csv")) == sorted(listed)
    # An old catalogue (version 1, read into memory by older photoid) loads as it is.
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "cat", old)
    manifest = json.loads((old / "manifest.json").read_text())
    assert manifest["version"] == 2  # older photoid refuses a catalogue in parts instead of reading half of it


def test_an_index_carried_over_by_additions_and_removals_equals_a_fresh_one(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "PART_ROWS", 60)
    path = tmp_path / "cat"
    table, embeddings = synthetic_rows(200, 40)
    held = make_catalog(path, table, embeddings)
    index = held.index()
    laid = index._laid
    _, queries = synthetic_rows(30, 40, seed=9)
    steps = [
        ("append", synthetic_rows(70, 40, seed=4, first=200)),  # known individuals; a new part, then a small one
        ("append", synthetic_rows(5, 3, seed=5, first=270, individual_prefix="new")),  # new individuals
        ("remove", lambda t: ~t["image_id"].isin(["img000003", "img000150", "img000272"]).to_numpy()),
        ("remove", lambda t: (t["individual_id"] != t["individual_id"].iloc[0]).to_numpy()),  # one gone for good
        ("append", synthetic_rows(1, 1, seed=6, first=400, individual_prefix="solo")),  # as a decision adds it
    ]
    for kind, change in steps:
        with catalog_transaction(path) as tx:
            if kind == "append":
                tx.append(*change)
            else:
                tx.remove(change(tx.catalog.table))
        held = read_catalog(path, previous=held)  # as `photoid serve` follows its catalogue
        carried = held.index()
        fresh = CatalogIndex.fresh(read_catalog(path))
        assert carried._laid is laid  # carried over, not laid out again
        assert carried.names == fresh.names == held.individuals()[0]
        np.testing.assert_array_equal(carried.scores(queries), fresh.scores(queries))
        assert carried.scores(queries).argmax(axis=1).tolist() == fresh.scores(queries).argmax(axis=1).tolist()
    assert carried.n_delta > 0 and carried.n_dead > 0
    gone = table["individual_id"].iloc[0]
    assert gone not in carried.names and "solo0000" in carried.names


def test_a_delta_past_the_limit_lays_the_catalogue_out_afresh(tmp_path, monkeypatch):
    import photoid.catalog.index as index_module

    monkeypatch.setattr(store, "PART_ROWS", 20)
    monkeypatch.setattr(index_module, "REBUILD_MIN_ROWS", 10)
    path = tmp_path / "cat"
    held = make_catalog(path, *synthetic_rows(100, 20))
    first = held.index()
    with catalog_transaction(path) as tx:
        tx.append(*synthetic_rows(30, 20, seed=2, first=100), new_part=True)
    held = read_catalog(path, previous=held)
    assert held.index()._laid is not first._laid and held.index().n_delta == 0


def test_float16_storage_halves_the_embeddings_and_its_score_error_is_measured(tmp_path):
    table, embeddings = synthetic_rows(300, 50)
    half = make_catalog(tmp_path / "half", table, embeddings, storage="float16")
    full = make_catalog(tmp_path / "full", table, embeddings)
    assert half.manifest["version"] == 2 and read_catalog(half.path).parts[0].embeddings.dtype == np.float16
    assert (half.path / half.manifest["files"]["embeddings"]["name"]).stat().st_size < 0.6 * (
        full.path / full.manifest["files"]["embeddings"]["name"]).stat().st_size
    _, queries = synthetic_rows(40, 50, seed=3)
    index = read_catalog(half.path).index()
    assert index._laid[0].dtype == np.float16
    difference = np.abs(index.scores(queries) - full.index().scores(queries))
    assert 0 < difference.max() < 2e-3
    effect = float16_effect(embeddings, table["individual_id"], half.blocks(), n_queries=100)
    assert 0 < effect["max_abs_score_difference"] < 2e-3 and effect["queries"] == 100
    assert 0 <= effect["top1_changed"] <= effect["top5_changed"] <= 1


def test_embeddings_are_memory_mapped_and_a_damaged_file_is_refused_when_first_used(tmp_path):
    table, embeddings = synthetic_rows(120, 20)
    path = make_catalog(tmp_path / "cat", table, embeddings).path
    store._verified.clear()
    catalog = read_catalog(path)
    part = catalog.parts[0]
    assert isinstance(part._unchecked.mapped, store.mmap.mmap)  # the array reads the mapped file
    assert not part._embeddings.flags.writeable and not part._embeddings.flags.owndata
    np.testing.assert_array_equal(catalog.embeddings, embeddings)  # checked on first use, then the same bytes
    assert part._unchecked is None and str(path / part.name) in store._verified
    name = catalog.manifest["files"]["embeddings"]["name"]
    del catalog, part  # another process, or this one later: nothing of the first reading is reused
    data = bytearray((path / name).read_bytes())
    data[-3] ^= 0xFF
    (path / name).write_bytes(bytes(data))
    store._verified.clear()
    with pytest.raises(PhotoidError, match=f"{name}: its content differs"):
        read_catalog(path).index()


def test_an_approximate_index_is_stored_without_pickle_measures_its_recall_and_follows_additions(tmp_path,
                                                                                                  monkeypatch):
    monkeypatch.setattr(store, "PART_ROWS", 200)
    table, embeddings = synthetic_rows(600, 60, dims=(16,))
    settings = approximate.settings_for("ivf", 600, nlist=8, nprobe=4)
    built = make_catalog(tmp_path / "cat", table, embeddings, dims=(16,), index=settings)
    entry = built.manifest["index"]
    assert entry["factory"] == "IVF8,Flat" and set(entry["recall"]) == {"recall_at_5", "recall_at_1", "queries"}
    assert 0.5 <= entry["recall"]["recall_at_5"] <= 1.0 and entry["recall"]["queries"] == 500
    stored = built.path / entry["files"]["block-0"]["name"]
    assert np.load(stored, allow_pickle=False).dtype == np.uint8
    catalog = read_catalog(built.path)
    index = catalog.index()
    assert index.approximate and index.description.startswith("approximate (IVF8,Flat, nprobe 4, recall@5")
    _, queries = synthetic_rows(20, 60, dims=(16,), seed=8)
    names, exact = exact_scores(catalog, queries)
    found = index.scores(queries)
    assert index.names == names
    # Retrieved individuals score exactly; the others score 0 (never more than their exact score).
    assert (found <= exact + 1e-6).all() and (found.argmax(axis=1) == exact.argmax(axis=1)).mean() >= 0.8
    # A photo added later is searched exactly beside the stored index, which is not rebuilt for it.
    with catalog_transaction(built.path) as tx:
        grown = tx.append(*synthetic_rows(1, 1, dims=(16,), seed=4, first=600, individual_prefix="solo"))
    assert grown.manifest["index"]["files"] == entry["files"]
    again = read_catalog(built.path, previous=catalog).index()
    assert again.n_delta == 1 and "solo0000" in again.names
    assert again.scores(grown.parts[-1].embeddings[-1:].astype(np.float32))[0, again.names.index("solo0000")] == \
        pytest.approx(1.0, abs=1e-5)
    # Past the rebuild limit, the writer of that generation rebuilds it.
    import photoid.catalog.index as index_module

    monkeypatch.setattr(index_module, "REBUILD_MIN_ROWS", 50)
    with catalog_transaction(built.path) as tx:
        rebuilt = tx.append(*synthetic_rows(80, 60, dims=(16,), seed=5, first=601), new_part=True)
    assert rebuilt.manifest["index"]["files"] != entry["files"] and rebuilt.manifest["index"]["rows"] == 681
    assert sorted(p.name for p in built.path.glob("index-*.npy")) == [
        rebuilt.manifest["index"]["files"]["block-0"]["name"]]


# ----------------------------------------------------------------------------- with the session's tiny run

@pytest.fixture(scope="module")
def chunked(trained_run, turtle_dir, tmp_path_factory):
    from photoid.catalog.build import build_catalog

    return build_catalog([str(trained_run)], turtle_dir, tmp_path_factory.mktemp("chunked") / "cat", chunk_rows=40)


def test_a_build_in_chunks_equals_one_built_whole_and_an_interrupted_one_resumes(chunked, serve_catalog, trained_run,
                                                                                turtle_dir, tmp_path, monkeypatch):
    from photoid.catalog import stream
    from photoid.catalog.build import build_catalog

    whole = read_catalog(serve_catalog.path)
    assert len(chunked.parts) == -(-len(whole.table) // 40) > 1 and chunked.building is None
    assert chunked.table["image_id"].tolist() == whole.table["image_id"].tolist()
    np.testing.assert_allclose(chunked.embeddings, whole.embeddings, atol=1e-6)
    assert not list(chunked.path.glob(stream.CLAIM_PATTERN))
    # Stopped by a photo that cannot be read in the third chunk: the two chunks before it are kept.
    real_embed, calls = stream._embed, []

    def failing(embedder, rows, viewpoints, batch_size, chunk, bar):
        calls.append(chunk)
        if chunk == 2:
            raise PhotoidError("photos that cannot be read (chunk 2)")
        return real_embed(embedder, rows, viewpoints, batch_size, chunk, bar)

    monkeypatch.setattr(stream, "_embed", failing)
    out = tmp_path / "cat"
    with pytest.raises(PhotoidError, match="chunk 2"):
        build_catalog([str(trained_run)], turtle_dir, out, chunk_rows=40)
    partial = read_catalog(out)
    assert partial.building["done"] == [0, 1] and len(partial.table) == 80
    with pytest.raises(PhotoidError, match="still being built"):
        partial.check_complete()
    monkeypatch.setattr(stream, "_embed", real_embed)
    notes = []
    resumed = build_catalog([str(trained_run)], turtle_dir, out, chunk_rows=40, note=notes.append)
    assert "2 of 4 chunks" in notes[0] and resumed.building is None
    assert resumed.table.equals(chunked.table)
    np.testing.assert_allclose(resumed.embeddings, chunked.embeddings, atol=1e-6)
    with pytest.raises(PhotoidError, match="already holds a catalogue"):
        build_catalog([str(trained_run)], turtle_dir, out, chunk_rows=40)
    with pytest.raises(PhotoidError, match="another build in progress"):
        (out / "manifest.json").write_text(json.dumps({**partial.manifest, "build": {**partial.building,
                                                                                       "chunk_rows": 7}}))
        build_catalog([str(trained_run)], turtle_dir, out, chunk_rows=40)


@pytest.mark.parametrize("other_folds", [None, [0]], ids=["the same build", "another build"])
def test_a_process_slow_to_start_returns_the_build_the_others_finished_and_refuses_any_other(
        other_folds, trained_run, turtle_dir, tmp_path, monkeypatch, capsys):
    """Processes started together share one build; one slow to start may find it finished by the others before it
    looks. It returns that catalogue, writing nothing, where it is this very build; another build finished there
    meanwhile is refused as before, and so is a finished catalogue the command finds when it starts."""
    from photoid.catalog import stream
    from photoid.catalog.build import build_catalog
    from photoid.cli import main

    out = tmp_path / "cat"
    argv = ["catalog", "build", "--run", str(trained_run), "--data_dir", str(turtle_dir), "--out", str(out),
            "--chunk", "40", "--no-local"]
    real_listing, finished = stream.listing_sha256, {}

    def finished_by_a_quicker_process(table, models):  # once this process knows its photos and models
        monkeypatch.setattr(stream, "listing_sha256", real_listing)
        build_catalog([str(trained_run)], turtle_dir, out, folds=other_folds, chunk_rows=40, local=False)
        finished.update(file_bytes(out))
        return real_listing(table, models)

    monkeypatch.setattr(stream, "listing_sha256", finished_by_a_quicker_process)
    code = main(argv)
    captured = capsys.readouterr()
    assert file_bytes(out) == finished  # nothing written by the late process
    if other_folds is None:
        assert code == 0, captured.err
        assert "was finished by the other processes building it: no chunk was left for this one" in captured.out
        assert read_catalog(out).building is None
    else:
        assert code == 2 and "already holds a catalogue; --force replaces it" in captured.err
    # Started once the catalogue is finished: refused, as before.
    assert main(argv) == 2 and "already holds a catalogue; --force replaces it" in capsys.readouterr().err


def test_each_chunk_commits_its_local_features_so_a_chunked_catalogue_has_every_photos(chunked, serve_catalog):
    from photoid.catalog.local import read_local_features

    whole, features = read_catalog(serve_catalog.path), read_local_features(chunked)
    assert sorted(features.image_ids) == sorted(chunked.table["image_id"])
    reference = read_local_features(whole)
    for image_id in chunked.table["image_id"][::17]:  # the same features as the catalogue built in one piece
        np.testing.assert_array_equal(features.get(image_id).descriptors, reference.get(image_id).descriptors)


def test_relabelling_rewrites_only_the_part_that_holds_the_photos_and_the_index_follows(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "PART_ROWS", 40)
    path = tmp_path / "cat"
    table, embeddings = synthetic_rows(40, 8)
    held = make_catalog(path, table, embeddings)
    for seed, first in ((2, 40), (3, 80)):
        with catalog_transaction(path) as tx:
            tx.append(*synthetic_rows(40, 8, seed=seed, first=first), new_part=True)
    held = read_catalog(path, previous=held)
    held.index()
    before = [p.name for p in held.parts]
    relabelled = held.table.copy()
    relabelled.loc[[45, 46], "individual_id"] = "moved"
    with catalog_transaction(path) as tx:
        after = tx.relabel(relabelled)
    assert [p.name for p in after.parts][0::2] == before[0::2] and after.parts[1].name != before[1]
    np.testing.assert_array_equal(after.embeddings, held.embeddings)
    assert after.table["individual_id"].tolist() == relabelled["individual_id"].tolist()
    followed = read_catalog(path, previous=held).index()
    _, queries = synthetic_rows(20, 8, seed=9)
    fresh = CatalogIndex.fresh(read_catalog(path))
    assert followed.names == fresh.names and "moved" in fresh.names
    np.testing.assert_array_equal(followed.scores(queries), fresh.scores(queries))
    with catalog_transaction(path) as tx, pytest.raises(ValueError, match="rows in their order"):
        tx.relabel(relabelled.iloc[::-1])
    # One viewpoint's photos searched alone: a catalogue in memory with its own index, nothing written.
    files = sorted(p.name for p in path.iterdir())
    sub = after.subset(np.arange(len(after.table)) % 2 == 0)
    np.testing.assert_array_equal(sub.embeddings, after.embeddings[::2])
    names, scores = exact_scores(sub, queries)
    assert sub.index().names == names
    np.testing.assert_allclose(sub.index().scores(queries), scores, rtol=1e-5, atol=1e-6)
    assert sorted(p.name for p in path.iterdir()) == files


def test_the_command_builds_float16_with_an_approximate_index_and_identify_says_so(trained_run, turtle_dir, tmp_path,
                                                                                  capsys):
    from photoid.cli import main

    out = tmp_path / "cat"
    assert main(["catalog", "build", "--run", str(trained_run), "--data_dir", str(turtle_dir), "--out", str(out),
                 "--storage", "float16", "--index", "ivf", "--nlist", "4", "--nprobe", "2", "--chunk", "50"]) == 0
    printed = capsys.readouterr().out
    assert "float16 storage: against float32" in printed and "scores differ by at most" in printed
    assert "approximate index IVF4,SQfp16 built" in printed and "recall@5" in printed
    catalog = read_catalog(out)
    assert catalog.storage == "float16" and len(catalog.parts) == 3 and catalog.manifest["index"]["recall"]
    photos = [str(p) for p in sorted((turtle_dir / "images").glob("*.JPG"))[:2]]
    assert main(["identify", *photos, "--catalog", str(out), "--threshold", "0.5", "--csv"]) == 0
    rows = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(rows.columns) == ["image", "rank", "label", "probability", "search"]
    assert rows["search"].str.startswith("approximate (IVF4,SQfp16").all()
    assert main(["identify", photos[0], "--catalog", str(out), "--threshold", "0.5"]) == 0
    assert "  search: approximate (IVF4,SQfp16, nprobe 2, recall@5" in capsys.readouterr().out
    assert main(["catalog", "list", "--catalog", str(out)]) == 0
    assert "search: approximate" in capsys.readouterr().out


class SlowEmbedder:
    """Stands for the models: a photo's embedding is a fixed function of its path, each batch takes a moment."""

    dim = 8

    def batches(self, paths, batch_size, viewpoints=None):
        import time

        for start in range(0, len(paths), batch_size):
            batch = paths[start:start + batch_size]
            time.sleep(0.02)
            seeds = [int(p.rsplit("-", 1)[1]) for p in batch]
            vectors = np.stack([np.random.default_rng(s).standard_normal(self.dim) for s in seeds]).astype(np.float32)
            yield batch, batch, vectors / np.linalg.norm(vectors, axis=1, keepdims=True), None, {}


def test_processes_building_one_catalogue_share_its_chunks(tmp_path):
    """Two builders of one catalogue at once (threads here; processes claim chunks the same way, by flock) each
    embed chunks the other has not claimed, and together make the catalogue one builder makes."""
    import threading

    from photoid.catalog.stream import build_in_chunks

    table = pd.DataFrame({"individual_id": [f"ind{i % 7}" for i in range(60)],
                          "image_id": [f"img{i:03d}" for i in range(60)], "source": "synthetic",
                          "path": [f"photo-{i}" for i in range(60)]})
    manifest = synthetic_manifest(dims=(8,))
    manifest["models"] = [{**manifest["models"][0], "weights_sha256": "w"}]
    shared, notes, errors = tmp_path / "shared", [], []

    def builder():
        try:
            build_in_chunks(SlowEmbedder(), table, None, shared, dict(manifest), batch_size=2, force=False,
                            chunk_rows=4, progress=False, note=notes.append)
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=builder) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    alone = build_in_chunks(SlowEmbedder(), table, None, tmp_path / "alone", dict(manifest), batch_size=2,
                            force=False, chunk_rows=4, progress=False, note=lambda line: None)
    together = read_catalog(shared)
    assert together.building is None and together.table.equals(alone.table)
    np.testing.assert_array_equal(together.embeddings, alone.embeddings)
    embedded = sorted(int(n.split()[3]) for n in notes if n.startswith("this process embedded"))
    assert sum(embedded) == 15 and embedded[0] > 0  # 15 chunks, each embedded once, by both builders


@pytest.mark.parametrize("nameable_share", [1.0, 0.5])
def test_ranking_only_the_candidates_of_many_individuals_gives_what_ranking_all_gives(monkeypatch, nameable_share):
    from photoid.catalog import openset

    rng = np.random.default_rng(3)
    names = [f"ind{i:05d}" for i in range(3000)]
    scores = rng.random((40, 3000)).astype(np.float32)
    scores[:5, :2990] = 0.0  # photos like nothing: "new" first, then nothing else in the top 5
    scores[5:8] *= 0.2  # best scores below the threshold
    scores[8, 100:] = -np.inf  # few candidates left
    nameable = None if nameable_share == 1.0 else names[::2]
    ranker = openset.Ranker(names, nameable)
    candidates = ranker(scores, 0.3, 5)
    monkeypatch.setattr(openset, "RANK_ALL_UP_TO", 10**6)
    everything = ranker(scores, 0.3, 5)
    np.testing.assert_array_equal(candidates[0].astype(str), everything[0].astype(str))
    np.testing.assert_array_equal(candidates[1], everything[1])


def test_an_hnsw_index_is_stored_and_searched_the_same_way(tmp_path):
    table, embeddings = synthetic_rows(400, 40, dims=(16,))
    settings = approximate.settings_for("hnsw", 400, ef_search=300)
    built = make_catalog(tmp_path / "cat", table, embeddings, dims=(16,), index=settings)
    entry = built.manifest["index"]
    assert entry["factory"] == "HNSW32,Flat" and entry["recall"]["recall_at_1"] >= 0.9
    index = read_catalog(built.path).index()
    assert index.approximate and "ef_search 300" in index.description
    names, exact = exact_scores(built, embeddings[:10])
    found = index.scores(embeddings[:10])
    assert index.names == names and (found.argmax(axis=1) == exact.argmax(axis=1)).all()
    with pytest.raises(PhotoidError, match="at least 256"):
        approximate.settings_for("hnsw", 400, ef_search=100)


def test_a_zero_shot_build_refuses_the_options_of_catalogues_of_trained_runs(tmp_path, capsys):
    from photoid.cli import main

    for option in (["--storage", "float16"], ["--index", "ivf"], ["--chunk", "10"]):
        assert main(["catalog", "build", "--data_dir", str(tmp_path), "--out", str(tmp_path / "c"), *option]) == 2
        assert "apply to catalogues of trained runs (--run)" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
