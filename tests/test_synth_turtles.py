"""The synthetic Turtle Recall generator: exact competition format, realistic structure, determinism, CLI."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from photoid.cli import main
from photoid.core.errors import PhotoidError
from photoid.synth import turtles
from photoid.synth.turtles import NEW_TURTLE, generate_turtles

TINY = dict(n_original=12, n_extra=8, images_per_turtle=6, size=48)  # the size the shared test fixture uses
IMAGE_ID = re.compile(r"^ID_[A-Z0-9]{8}$")
TURTLE_ID = re.compile(r"^t_id_[A-Za-z0-9]{8}$")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "turtles"
    summary = generate_turtles(out, seed=3, workers=1, **TINY)
    return out, summary


def read(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(folder / name, dtype=str, keep_default_na=False)


def all_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_files_and_exact_headers(dataset):
    out, _ = dataset
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["images", "train.csv", "extra_images.csv", "test.csv", "sample_submission.csv", "test_labels.csv",
         "synth.json"])
    first_lines = {name: (out / name).read_text().splitlines()[0] for name in
                   ["train.csv", "extra_images.csv", "test.csv", "sample_submission.csv", "test_labels.csv"]}
    assert first_lines == {
        "train.csv": "image_id,image_location,turtle_id",
        "extra_images.csv": "image_id,turtle_id",
        "test.csv": "image_id,image_location",
        "sample_submission.csv": "image_id,prediction1,prediction2,prediction3,prediction4,prediction5",
        "test_labels.csv": "image_id,turtle_id,label_101",
    }


def test_ids_have_the_competition_style_and_are_unique(dataset):
    out, summary = dataset
    train, extra, test = read(out, "train.csv"), read(out, "extra_images.csv"), read(out, "test.csv")
    image_ids = pd.concat([train.image_id, extra.image_id, test.image_id])
    assert image_ids.map(IMAGE_ID.match).all()
    assert image_ids.is_unique
    assert len(image_ids) == summary["n_images"]
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(f"{i}.JPG" for i in image_ids)
    turtle_ids = pd.concat([train.turtle_id, extra.turtle_id, read(out, "test_labels.csv").turtle_id]).unique()
    assert all(TURTLE_ID.match(t) for t in turtle_ids)
    suffixes = "".join(t[5:] for t in turtle_ids)
    assert re.search("[a-z]", suffixes) and re.search("[A-Z]", suffixes)  # mixed case like t_id_4ZfTUmwL


def test_locations_are_three_views_written_in_mixed_case(dataset):
    out, _ = dataset
    locations = pd.concat([read(out, "train.csv").image_location, read(out, "test.csv").image_location])
    assert set(locations.str.lower()) == {"top", "left", "right"}
    assert (locations != locations.str.lower()).any() and (locations == locations.str.lower()).any()
    assert len(set(locations)) > 3  # the same view spelled in several ways


def test_identity_structure_overlap_single_images_and_new_turtles(dataset):
    out, summary = dataset
    train, extra, labels = read(out, "train.csv"), read(out, "extra_images.csv"), read(out, "test_labels.csv")
    original, in_extra = set(train.turtle_id), set(extra.turtle_id)
    assert len(original) == TINY["n_original"]
    # As in the real data (66 of 100 original ids also in extra_images.csv) by default.
    assert len(original & in_extra) == round(0.66 * TINY["n_original"]) == summary["n_overlap"]
    assert len(in_extra - original) == TINY["n_extra"]
    counts = pd.concat([train.turtle_id, extra.turtle_id]).value_counts()
    assert (counts == 1).sum() >= 1 and (counts == 1).sum() == summary["n_single_image_ids"]
    known = original | in_extra
    is_new = ~labels.turtle_id.isin(known)
    assert is_new.any() and (~is_new).any()
    assert labels.loc[is_new, "label_101"].eq(NEW_TURTLE).all()
    assert labels.loc[is_new, "turtle_id"].nunique() == summary["n_new"]
    # Test turtles are either original ones (scored by their id) or new ones; never extra-only turtles.
    assert labels.loc[~is_new, "turtle_id"].isin(original).all()
    assert (labels.loc[~is_new, "label_101"] == labels.loc[~is_new, "turtle_id"]).all()


def test_test_sample_submission_and_labels_share_image_order(dataset):
    out, _ = dataset
    test, sample, labels = read(out, "test.csv"), read(out, "sample_submission.csv"), read(out, "test_labels.csv")
    assert list(test.image_id) == list(sample.image_id) == list(labels.image_id)
    predictions = sample.drop(columns="image_id")
    valid = set(read(out, "train.csv").turtle_id) | {NEW_TURTLE}
    assert predictions.isin(valid).all().all()
    assert (predictions.nunique(axis=1) == 5).all()  # five distinct labels, as a valid MAP@5 row


def test_rows_are_shuffled_not_grouped_by_turtle(dataset):
    out, _ = dataset
    for name in ["train.csv", "extra_images.csv"]:
        ids = read(out, name).turtle_id
        same_as_previous = int((ids.values[1:] == ids.values[:-1]).sum())
        grouped = len(ids) - ids.nunique()  # what a file grouped by turtle would have
        assert same_as_previous < grouped / 3, name


def test_images_are_jpegs_at_the_stated_long_side(dataset):
    out, _ = dataset
    shapes = set()
    for path in sorted((out / "images").iterdir()):
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            image.load()
            shapes.add(image.size)
    size = TINY["size"]
    assert all(max(s) == size and min(s) in {size, round(size * 3 / 4), round(size * 2 / 3)} for s in shapes)
    assert any(w > h for w, h in shapes) and any(w < h for w, h in shapes)  # landscape and portrait photos


def test_photos_of_one_turtle_differ_by_nuisance(dataset):
    out, _ = dataset
    train = read(out, "train.csv")
    turtle = train.turtle_id.value_counts().index[0]
    paths = [out / "images" / f"{i}.JPG" for i in train.image_id[train.turtle_id == turtle]]
    arrays = [np.asarray(Image.open(p).convert("RGB").resize((32, 32)), dtype=np.float32) for p in paths]
    for a, b in zip(arrays, arrays[1:]):
        assert np.abs(a - b).mean() > 5.0


def test_same_seed_gives_identical_bytes_with_any_worker_count(dataset, tmp_path):
    out, summary = dataset
    again = generate_turtles(tmp_path / "again", seed=3, workers=2, **TINY)
    assert again == summary
    first, second = all_files(out), all_files(tmp_path / "again")
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []


def test_different_seeds_give_different_data(dataset, tmp_path):
    out, _ = dataset
    generate_turtles(tmp_path / "other", seed=4, workers=1, **TINY)
    first, second = all_files(out), all_files(tmp_path / "other")
    for name in ["train.csv", "test.csv", "test_labels.csv"]:
        assert first[name] != second[name]
    assert not set(read(out, "train.csv").turtle_id) & set(read(tmp_path / "other", "train.csv").turtle_id)


SMALL = dict(n_original=4, n_extra=2, images_per_turtle=2, n_test=3, size=32, workers=1)


def test_existing_output_is_replaced_only_with_force(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    with pytest.raises(PhotoidError, match="not empty"):
        generate_turtles(out, **SMALL)
    assert (out / "keep.txt").read_text() == "user file"
    generate_turtles(out, force=True, **SMALL)
    assert not (out / "keep.txt").exists() and (out / "train.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no staging or old folders left behind


def test_interrupted_run_leaves_no_half_data_set(tmp_path, monkeypatch):
    calls = []

    def fail_on_third_image(job):
        calls.append(job)
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(turtles, "_draw_and_save", fail_on_third_image)
    with pytest.raises(KeyboardInterrupt):
        generate_turtles(tmp_path / "data", **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_invalid_settings_are_listed_together(tmp_path):
    with pytest.raises(PhotoidError) as err:
        generate_turtles(tmp_path / "x", n_original=2, n_extra=-1, images_per_turtle=1, size=16, workers=1)
    message = str(err.value)
    for setting in ["n_original", "n_extra", "images_per_turtle", "size"]:
        assert setting in message
    assert not (tmp_path / "x").exists()


def test_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["synth", "turtles", "--out", str(out), "--seed", "5", "--n-original", "5", "--n-extra", "3",
            "--images-per-turtle", "3", "--n-test", "6", "--size", "40", "--workers", "1"]
    assert main(args) == 0
    assert "hidden truth in test_labels.csv" in capsys.readouterr().out
    train, test = read(out, "train.csv"), read(out, "test.csv")
    assert train.turtle_id.nunique() == 5 and len(test) == 6
    with Image.open(out / "images" / f"{test.image_id[0]}.JPG") as image:
        assert max(image.size) == 40
    assert main(args) == 2  # refuses to overwrite without --force
    assert "not empty" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0
