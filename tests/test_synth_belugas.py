"""The synthetic Where's Whale-do generator: formats, scenarios and truth, determinism, real-metadata mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import REAL_BELUGAS
from photoid.cli import main
from photoid.core.errors import PhotoidError, ValidationError
from photoid.synth.belugas import generate_belugas
from photoid.whales.data import METADATA_COLUMNS, load_belugas, load_truth

REAL_METADATA = REAL_BELUGAS / "metadata.csv"
needs_real_metadata = pytest.mark.skipif(not REAL_METADATA.exists(), reason="real metadata.csv not available")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("belugas") / "data"
    generate_belugas(out, seed=3, n_whales=16, images_per_whale=6, size=48, workers=1)
    return out


def read(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(folder / name, dtype=str, keep_default_na=False)


def test_files_follow_the_competition_formats(synthetic):
    metadata = read(synthetic, "metadata.csv")
    assert list(metadata.columns) == list(METADATA_COLUMNS)
    assert set(metadata["viewpoint"]) == {"top", "left", "right"}
    assert metadata["image_id"].str.fullmatch(r"train\d{4}").all()
    assert (metadata["path"] == "images/" + metadata["image_id"] + ".jpg").all()
    assert (metadata["encounter_id"].str.rsplit("-", n=1).str[0] == metadata["whale_id"]).all()
    assert pd.to_datetime(metadata["timestamp"], format="%Y-%m-%d %H:%M:%S").dt.strftime("%Y-%m-%d").eq(
        metadata["date"]).all()
    # An encounter is one whale seen from one viewpoint (as in the real data).
    assert (metadata.groupby("encounter_id")["viewpoint"].nunique() == 1).all()
    for row in metadata.itertuples():
        with Image.open(synthetic / row.path) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            assert image.size == (int(row.width), int(row.height))
            assert max(image.size) == 48
            # Top crops are tall, side views wide.
            assert (image.height > image.width) == (row.viewpoint == "top")
    scenarios = read(synthetic, "query_scenarios.csv")
    assert list(scenarios.columns) == ["scenario_id", "queries_path", "database_path"]
    for scenario in scenarios.itertuples():
        assert list(read(synthetic, scenario.queries_path).columns) == ["query_id", "query_image_id"]
        assert list(read(synthetic, scenario.database_path).columns) == ["database_image_id"]
    assert list(read(synthetic, "example_labels.csv").columns) == ["query_id", "database_image_id"]
    data = load_belugas(synthetic)   # the loader finds nothing to complain about
    assert len(data.metadata) == len(metadata) and len(data.scenarios) == len(scenarios)


def test_scenarios_and_truth_agree_with_the_whale_ids(synthetic):
    data = load_belugas(synthetic, check_images=False)
    meta = data.metadata.set_index("image_id")
    truth = load_truth(synthetic / "example_labels.csv")
    assert [s.scenario_id for s in data.scenarios] == ["scenario01", "scenario02", "scenario03", "scenario04"]
    for scenario_id, queries, database in data.scenarios:
        assert (queries["query_id"] == scenario_id + "-" + queries["query_image_id"]).all()
        db = set(database["database_image_id"])
        for query_id, image_id in zip(queries["query_id"], queries["query_image_id"]):
            whale = meta.at[image_id, "whale_id"]
            expected = {d for d in db if meta.at[d, "whale_id"] == whale and d != image_id}
            got = set(truth.loc[truth["query_id"] == query_id, "database_image_id"])
            assert got == expected and got          # every query has a true match, never itself
        views_q = set(meta.loc[queries["query_image_id"], "viewpoint"])
        views_d = set(meta.loc[list(db), "viewpoint"])
        years_q = meta.loc[queries["query_image_id"], "date"].str[:4]
        years_d = meta.loc[list(db), "date"].str[:4]
        if scenario_id == "scenario01":     # top views; the queries sit in the database too (as scenario01)
            assert views_q == views_d == {"top"} and set(queries["query_image_id"]) <= db
        if scenario_id == "scenario02":     # a later year against earlier years (as scenario02)
            assert views_q == {"top"} and years_q.min() > years_d.max()
            assert not set(queries["query_image_id"]) & db
        if scenario_id == "scenario03":
            assert views_q <= {"left", "right"} and views_d <= {"left", "right"}
        if scenario_id == "scenario04":
            assert db == set(meta.index)
    assert set(truth["query_id"]) == {q for s in data.scenarios for q in s.queries["query_id"]}


def test_individuals_are_recognisable_across_encounters(synthetic):
    """Nearest neighbour on raw, brightness-normalised pixels, never within the same encounter, finds the same
    whale far more often than chance: the marks carry identity across days and light."""
    meta = read(synthetic, "metadata.csv")
    top = meta[meta["viewpoint"] == "top"].reset_index(drop=True)
    pixels = []
    for path in top["path"]:
        a = np.asarray(Image.open(synthetic / path).convert("L").resize((16, 48), Image.BILINEAR), np.float64)
        pixels.append(((a - a.mean()) / (a.std() + 1e-6)).ravel())
    x = np.array(pixels)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sims = x @ x.T
    encounter, whale = top["encounter_id"].to_numpy(), top["whale_id"].to_numpy()
    sims[encounter[:, None] == encounter[None, :]] = -np.inf
    has_other_encounter = (whale[:, None] == whale[None, :]).sum(1) > (encounter[:, None] == encounter[None, :]).sum(1)
    hits = whale[sims.argmax(axis=1)] == whale
    chance = 1 / top["whale_id"].nunique()
    assert has_other_encounter.sum() >= 10
    assert hits[has_other_encounter].mean() > 4 * chance


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files_whatever_the_workers(tmp_path):
    generate_belugas(tmp_path / "a", seed=5, n_whales=5, images_per_whale=4, size=32, workers=1)
    generate_belugas(tmp_path / "b", seed=5, n_whales=5, images_per_whale=4, size=32, workers=2)
    generate_belugas(tmp_path / "c", seed=6, n_whales=5, images_per_whale=4, size=32, workers=1)
    a, b, c = file_bytes(tmp_path / "a"), file_bytes(tmp_path / "b"), file_bytes(tmp_path / "c")
    assert a == b
    assert a["metadata.csv"] != c["metadata.csv"]
    assert not any(name.startswith(".") for name in a)     # no staging leftovers


@needs_real_metadata
def test_real_metadata_rows_are_drawn_exactly(tmp_path):
    real = pd.read_csv(REAL_METADATA, dtype=str, keep_default_na=False).iloc[:60]
    # The slice keeps whole whales only partly: the rows, not the whales, must come back unchanged.
    real.to_csv(tmp_path / "metadata.csv", index=False)
    generate_belugas(tmp_path / "out", seed=0, size=64, metadata=tmp_path / "metadata.csv", workers=1)
    got = read(tmp_path / "out", "metadata.csv")
    same = ["image_id", "path", "viewpoint", "date", "timestamp", "whale_id", "encounter_id"]
    pd.testing.assert_frame_equal(got[same], real[same])
    h, w = got["height"].astype(int), got["width"].astype(int)
    assert (np.maximum(h, w) == 64).all()
    real_ratio = real["height"].astype(int) / real["width"].astype(int)
    # Aspect ratios survive scaling to 64 px up to rounding (short sides of 8 px or less are floored at 8).
    assert ((h / w - real_ratio).abs() / real_ratio)[np.minimum(h, w) > 8].max() < 0.1
    for row in got.itertuples():
        with Image.open(tmp_path / "out" / row.path) as image:
            assert image.size == (int(row.width), int(row.height))
    load_belugas(tmp_path / "out")


@needs_real_metadata
def test_max_images_keeps_whole_whales_and_unchanged_images(tmp_path):
    real = pd.read_csv(REAL_METADATA, dtype=str, keep_default_na=False).iloc[:200]
    real.to_csv(tmp_path / "metadata.csv", index=False)
    generate_belugas(tmp_path / "all", seed=1, size=40, metadata=tmp_path / "metadata.csv", workers=1)
    generate_belugas(tmp_path / "some", seed=1, size=40, metadata=tmp_path / "metadata.csv", max_images=50,
                     workers=1)
    some = read(tmp_path / "some", "metadata.csv")
    assert 0 < len(some) <= 50
    counts = real["whale_id"].value_counts()
    assert some["whale_id"].value_counts().to_dict() == counts[some["whale_id"].unique()].to_dict()  # whole whales
    for path in some["path"]:     # an image depends on its ids and the seed only, not on the subset
        assert (tmp_path / "some" / path).read_bytes() == (tmp_path / "all" / path).read_bytes()


def test_bad_settings_and_bad_metadata_leave_nothing_behind(tmp_path):
    with pytest.raises(PhotoidError, match="n_whales"):
        generate_belugas(tmp_path / "x", n_whales=1, size=32)
    bad = tmp_path / "metadata.csv"
    bad.write_text(",".join(METADATA_COLUMNS) + "\n"
                   "a,images/a.jpg,10,30,top,2019-08-01,2019-08-01 10:00:00,w1,w1-000\n"
                   "b,/etc/b.jpg,10,30,sideways,2019-08-01,2019-08-01 10:00:00,w1,w1-000\n")
    with pytest.raises(ValidationError) as err:
        generate_belugas(tmp_path / "out", metadata=bad, size=32)
    assert "line 3" in str(err.value) and "absolute" in str(err.value) and "viewpoint" in str(err.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "x").exists()


def test_cli_writes_a_data_set_and_refuses_to_overwrite(tmp_path, capsys):
    args = ["synth", "belugas", "--out", str(tmp_path / "cli"), "--n-whales", "4", "--images-per-whale", "3",
            "--size", "32", "--workers", "1"]
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out
    assert (tmp_path / "cli" / "example_labels.csv").exists()
    assert main(args) == 2                                  # not empty: refused without --force
    assert main(args + ["--force", "--seed", "9"]) == 0
