"""`photoid import`: generic folders written from a Turtle Recall folder and from wildlife-datasets layouts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from photoid.cli import main
from photoid.turtles.data import load_turtles
from photoid.core.errors import PhotoidError
from photoid.turtles.folds import make_folds, read_folds
from photoid.importers import generic

TINY = 32


@pytest.fixture
def wildlife():
    """The package, or a skip (a failure in CI); the environment variables its opencv sets on import are undone."""
    saved = dict(os.environ)
    try:
        import wildlife_datasets.datasets  # noqa: F401
    except ImportError:
        message = "needs the wildlife-datasets package (pip install 'photoid[wildlife]')"
        if os.environ.get("CI"):
            pytest.fail(message)  # the test extra installs it: a skip in CI would hide a broken importer
        pytest.skip(message)
    yield
    os.environ.clear()
    os.environ.update(saved)


def read_metadata(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "metadata.csv", dtype=str, keep_default_na=False)


def assert_photos_written(folder: Path, table: pd.DataFrame, sources: dict[str, Path]) -> None:
    """Every row's photo is under images/, opens, and has its source's bytes."""
    for image_id, path in zip(table["image_id"], table["path"]):
        assert path.startswith("images/") and Path(path).stem == image_id
        with Image.open(folder / path) as image:
            image.load()
        assert (folder / path).read_bytes() == sources[image_id].read_bytes()


def save_photo(path: Path, rng: np.random.Generator) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (TINY, TINY + 8, 3), dtype=np.uint8)).save(path)
    return path


# --- Turtle Recall ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def imported_turtles(turtle_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("imported") / "turtles"
    assert main(["import", "turtle-recall", "--data_dir", str(turtle_dir), "--out", str(out)]) == 0
    return out


def test_a_turtle_recall_folder_imports_with_the_folds_and_labels_of_photoid_tfrecords(
        imported_turtles, turtle_dir, turtle_records):
    table = read_metadata(imported_turtles)
    assert list(table.columns) == ["image_id", "path", "identity", "viewpoint", "split"]
    train = table[table["split"] == "train"]
    # The generic rule: the train rows in file order, labels = sorted identities, the Turtle Recall splitter.
    classes = sorted(train["identity"].unique())
    labeled = pd.DataFrame({"image_id": train["image_id"], "turtle_id": train["identity"],
                            "label": train["identity"].map(classes.index), "image_location": train["viewpoint"],
                            "source": "generic"})
    tfrecords_folds = read_folds(turtle_records / "folds.csv")
    n_folds = int(tfrecords_folds["fold"].max()) + 1
    generic_folds = make_folds(labeled, n_folds=n_folds)
    columns = ["image_id", "turtle_id", "label", "fold"]
    pd.testing.assert_frame_equal(generic_folds[columns], tfrecords_folds[columns], check_dtype=False)
    # The generic task's own reader and folds give the same.
    from photoid.generic.data import generic_folds as task_folds, load_generic

    by_task = task_folds(load_generic(imported_turtles), n_folds).rename(columns={"identity": "turtle_id"})
    pd.testing.assert_frame_equal(by_task[columns].reset_index(drop=True),
                                  tfrecords_folds[columns].reset_index(drop=True), check_dtype=False)

    data = load_turtles(turtle_dir)
    test = table[table["split"] == "test"]
    assert test["image_id"].tolist() == data.test["image_id"].tolist() and (test["identity"] == "").all()
    assert test["viewpoint"].tolist() == data.test["image_location"].tolist()
    assert train["viewpoint"].tolist() == data.labeled["image_location"].tolist()
    assert set(train["viewpoint"]) <= {"top", "left", "right"}
    assert_photos_written(imported_turtles, table, {i: Path(data.image_path(i)) for i in table["image_id"]})


def test_an_existing_folder_is_refused_and_force_replaces_its_metadata(imported_turtles, turtle_dir, capsys):
    argv = ["import", "turtle-recall", "--data_dir", str(turtle_dir), "--out", str(imported_turtles)]
    before = (imported_turtles / "metadata.csv").read_bytes()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "--force" in err
    assert main([*argv, "--force"]) == 0
    assert "already there" in capsys.readouterr().out
    assert (imported_turtles / "metadata.csv").read_bytes() == before


def test_an_import_stopped_part_way_leaves_no_metadata(turtle_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "metadata.csv").write_text("image_id,path,identity\n")  # an earlier import's
    calls = []

    def full_disk(source, dest, link=True):
        calls.append(dest)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return "copied"

    monkeypatch.setattr(generic, "place_image", full_disk)
    from photoid.importers.turtle_recall import turtle_recall_rows

    with pytest.raises(PhotoidError, match=r"cannot write .*No space left.*metadata.csv not written"):
        generic.write_generic_folder(turtle_recall_rows(turtle_dir), out, force=True)
    assert not (out / "metadata.csv").exists()


def test_every_bad_row_is_named_at_once_before_anything_is_written(tmp_path):
    rng = np.random.default_rng(0)
    photo = save_photo(tmp_path / "src" / "a.png", rng)
    (tmp_path / "src" / "notes.txt").write_text("not a photo")
    (tmp_path / "src" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    good = {"image_id": "a", "identity": "whale1", "viewpoint": "top", "date": "2021-05-02", "encounter": "",
            "split": "train", "source": str(photo), "origin": "row 1"}
    rows = pd.DataFrame([
        good,
        {**good, "image_id": "b", "identity": "", "origin": "row 2"},
        {**good, "image_id": "a", "origin": "row 3"},
        {**good, "image_id": "c/d", "origin": "row 4"},
        {**good, "image_id": "e", "date": "2021-02-30", "origin": "row 5"},
        {**good, "image_id": "f", "source": str(tmp_path / "src" / "notes.txt"), "origin": "row 6"},
        {**good, "image_id": "g", "source": str(tmp_path / "src" / "gone.png"), "origin": "row 7"},
        {**good, "image_id": "h", "source": str(tmp_path / "src" / "broken.jpg"), "origin": "row 8"},
        {**good, "image_id": "i", "split": "val", "origin": "row 9"},
        {**good, "image_id": "j", "identity": "", "split": "test", "origin": "row 10"},
    ])
    with pytest.raises(PhotoidError) as err:
        generic.write_generic_folder(rows, tmp_path / "out")
    message = str(err.value)
    assert "8 problems" in message and "row 1:" not in message and "row 10:" not in message
    for expected in ("row 2: identity '' is empty (a train row needs", "row 3: duplicate image_id 'a' (first: row 1)",
                     "row 4: image_id 'c/d' may hold only", "row 5: date '2021-02-30' is not a date",
                     "row 6: photo", "extension '.txt'", "row 7: photo", "gone.png: file is missing",
                     "row 8: photo", "truncated", "row 9: split 'val'"):
        assert expected in message
    assert not (tmp_path / "out").exists()

    with pytest.warns(UserWarning, match=r"1 row\(s\) take a photo that an earlier row takes too"):
        written = generic.write_generic_folder(rows.iloc[[0, 9]], tmp_path / "out", link=False)
    assert written["copied"] == 2 and written["test"] == 1
    table = read_metadata(tmp_path / "out")
    assert list(table.columns) == ["image_id", "path", "identity", "viewpoint", "date", "split"]
    assert table["path"].tolist() == ["images/a.png", "images/j.png"] and table["date"].tolist() == ["2021-05-02"] * 2


# --- wildlife-datasets -----------------------------------------------------------------------------------------

def test_photoid_help_and_the_command_parser_do_not_import_wildlife_datasets(cli_env):
    check = ("import sys\nfrom photoid.cli import main\ntry:\n    main(['import', 'wildlife-datasets', '--help'])\n"
             "except SystemExit:\n    pass\n"
             "print(sorted(m for m in ('photoid.importers', 'wildlife_datasets', 'tensorflow') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", check], env=cli_env, capture_output=True, text=True, check=True)
    assert "--dataset DATASET" in done.stdout
    assert done.stdout.splitlines()[-1] == "['photoid.importers']"


def test_without_the_package_the_command_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wildlife_datasets", None)
    monkeypatch.setitem(sys.modules, "wildlife_datasets.datasets", None)
    assert main(["import", "wildlife-datasets", "--root", str(tmp_path), "--dataset", "BelugaIDv2",
                 "--out", str(tmp_path / "out")]) == 2
    assert "pip install 'photoid[wildlife]'" in capsys.readouterr().err


def test_zindi_turtle_recall_imports_through_wildlife_datasets(wildlife, turtle_dir, imported_turtles, tmp_path):
    """ZindiTurtleRecall reads train.csv, test.csv, extra_images.csv and images/<id>.JPG: a Turtle Recall folder."""
    out = tmp_path / "out"
    assert main(["import", "wildlife-datasets", "--root", str(turtle_dir), "--dataset", "ZindiTurtleRecall",
                 "--out", str(out)]) == 0
    table = read_metadata(out)
    assert list(table.columns) == ["image_id", "path", "identity", "viewpoint", "split"]
    assert table["image_id"].tolist() == sorted(table["image_id"])  # the package's order, which decides the folds
    # The same photos, identities and test rows as the Turtle Recall importer; extra images have no viewpoint here
    # (the package has none for them), where the Turtle Recall importer sets the original's "top".
    direct = read_metadata(imported_turtles).set_index("image_id").loc[table["image_id"]]
    assert table["identity"].tolist() == direct["identity"].tolist()
    assert table["split"].tolist() == direct["split"].tolist()
    data = load_turtles(turtle_dir)
    extra = table["image_id"].isin(data.extra["image_id"])
    assert (table.loc[extra, "viewpoint"] == "").all()
    assert table.loc[~extra, "viewpoint"].tolist() == direct.loc[~extra.to_numpy(), "viewpoint"].tolist()
    assert_photos_written(out, table, {i: Path(data.image_path(i)) for i in table["image_id"]})


def make_beluga_id_v2(root: Path) -> dict[str, Path]:
    """A tiny BelugaIDv2 download: LILA's COCO export for the train part, the competition's private test files.

    Laid out as BelugaIDv2.create_catalogue reads it: beluga/beluga.coco/{annotations/instances_train2022.json,
    images/train2022/}, beluga-id-test/{private_train_metadata.csv, private_test_metadata.csv,
    code-execution/images/}. Returns the source photo of each catalogue image_id.
    """
    rng = np.random.default_rng(5)
    coco = root / "beluga" / "beluga.coco"
    width, height = TINY + 8, TINY
    dates = ["2017-08-07 20:38:36", "2017-08-07 20:39:01", "2019-08-05 16:49:13", "NA", "2019-08-06 09:00:00"]
    images = []
    for k, date in enumerate(dates):
        save_photo(coco / "images" / "train2022" / f"{k:012d}.jpg", rng)
        images.append({"id": k + 1, "file_name": f"{k:012d}.jpg", "date_captured": date, "width": width,
                       "height": height})
    whole = [0, 0, width, 0, width, height, 0, height]  # most photos are one whale, cropped already
    # (name, viewpoint, photo, box polygon): the last photo holds two whales, left half and right half.
    animals = [("whale007", "top", 0, whole), ("whale007", "top", 1, whole), ("whale012", "left", 2, whole),
               ("____", "top", 3, whole), ("whale012", "right", 4, [0, 0, 20, 0, 20, height, 0, height]),
               ("whale031", "top", 4, [20, 0, width, 0, width, height, 20, height])]
    annotations, sources = [], {}
    for i, (name, viewpoint, photo, polygon) in enumerate(animals):
        annotations.append({"id": i + 1, "image_id": photo + 1, "category_id": 1, "name": name,
                            "segmentation": [polygon], "viewpoint": viewpoint})
        sources[str(i)] = coco / "images" / "train2022" / f"{photo:012d}.jpg"
    names = [name for name, *_ in animals]
    (coco / "annotations").mkdir(parents=True)
    (coco / "annotations" / "instances_train2022.json").write_text(json.dumps({
        "images": images, "annotations": annotations,
        "categories": [{"id": 1, "name": "beluga_whale", "supercategory": "animal"}]}))

    test_dir = root / "beluga-id-test"
    test_dir.mkdir()
    # One row per train annotation: BelugaIDv2 numbers the test images after them. A test image's identity is the
    # whale_id its original_whale_id maps to here, or unknown.
    pd.DataFrame({"original_whale_id": names, "whale_id": names}).to_csv(
        test_dir / "private_train_metadata.csv", index=False)
    test_rows = [("query0001.jpg", "whale012", "2020-08-01 10:00:00", "top"),
                 ("query0002.jpg", "whale999", "2020-08-02 10:00:00", "left")]
    pd.DataFrame({"path": [f"images/{f}" for f, *_ in test_rows], "original_whale_id": [w for _, w, *_ in test_rows],
                  "timestamp": [t for _, _, t, _ in test_rows], "viewpoint": [v for *_, v in test_rows]}).to_csv(
        test_dir / "private_test_metadata.csv", index=False)
    for k, (file_name, *_) in enumerate(test_rows):
        sources[str(len(names) + k)] = save_photo(test_dir / "code-execution" / "images" / file_name, rng)
    return sources


@pytest.fixture(scope="module")
def beluga_root(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("belugaidv2")
    return root, make_beluga_id_v2(root)


def test_beluga_id_v2_imports_through_wildlife_datasets(wildlife, beluga_root, tmp_path, capsys):
    root, sources = beluga_root
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match=r"1 row\(s\) take a photo that an earlier row takes too"):
        assert main(["import", "wildlife-datasets", "--root", str(root), "--dataset", "BelugaIDv2",
                     "--out", str(out)]) == 0
    assert "8 photos (6 train, 2 test, 3 identities)" in capsys.readouterr().out
    table = read_metadata(out)
    assert list(table.columns) == ["image_id", "path", "identity", "viewpoint", "date", "split"]
    assert table["image_id"].tolist() == [str(i) for i in range(8)]
    assert table["identity"].tolist() == ["whale007", "whale007", "whale012", "", "whale012", "whale031",
                                          "whale012", ""]
    assert table["split"].tolist() == ["train"] * 3 + ["test"] + ["train"] * 3 + ["test"]
    assert table["viewpoint"].tolist() == ["top", "top", "left", "top", "right", "top", "up", "left"]
    assert table["date"].tolist() == ["2017-08-07", "2017-08-07", "2019-08-05", "", "2019-08-06", "2019-08-06",
                                      "2020-08-01", "2020-08-02"]
    assert_photos_written(out, table, sources)

    # The data set's own test split, kept on request: its known whale stays named, as a test row.
    with pytest.warns(UserWarning, match="take a photo that an earlier row takes too"):
        assert main(["import", "wildlife-datasets", "--root", str(root), "--dataset", "belugaidv2", "--out",
                     str(tmp_path / "kept"), "--original_split"]) == 0
    kept = read_metadata(tmp_path / "kept")
    assert kept["split"].tolist()[6:] == ["test", "test"] and kept["identity"].tolist()[6] == "whale012"


def test_crop_cuts_a_photo_of_two_whales_into_one_photo_each(wildlife, beluga_root, tmp_path, capsys):
    root, sources = beluga_root
    out = tmp_path / "out"
    assert main(["import", "wildlife-datasets", "--root", str(root), "--dataset", "BelugaIDv2", "--out", str(out),
                 "--crop"]) == 0
    assert "(8 cut to their box)" in capsys.readouterr().out
    table = read_metadata(out)
    assert table["path"].tolist() == [f"images/{i}.png" for i in range(8)]
    with Image.open(sources["4"]) as photo:
        whole = np.asarray(photo.convert("RGB"), dtype=float)
    for image_id, (left, right) in (("0", (0, TINY + 8)), ("4", (0, 20)), ("5", (20, TINY + 8))):
        with Image.open(out / f"images/{image_id}.png") as crop:
            assert crop.size == (right - left, TINY)
            pixels = np.asarray(crop.convert("RGB"), dtype=float)
        if image_id != "0":  # the two whales of photo 4: each its own half (OpenCV and Pillow decode alike)
            assert np.abs(pixels - whole[:, left:right]).mean() < 2


def test_catalogue_dates_become_days_and_a_date_without_a_day_is_refused():
    from photoid.importers.wildlife import _date_text

    assert _date_text("2017-08-07 20:38:36") == "2017-08-07" and _date_text(pd.Timestamp("2020-01-31")) == "2020-01-31"
    assert _date_text(float("nan")) == "" and _date_text(None) == ""
    # Kept as they are, so that the writer names the row: pandas would make "2019" the 1st of January.
    assert _date_text("2019") == "2019" and _date_text("last spring") == "last spring"
    from photoid.core.tables import is_iso_date

    assert not is_iso_date("2019") and is_iso_date("2017-08-07")


def test_wildlife_datasets_errors_name_the_data_set_file_and_row(wildlife, beluga_root, tmp_path, capsys):
    root, _ = beluga_root
    base = ["import", "wildlife-datasets", "--out", str(tmp_path / "out")]

    assert main([*base, "--root", str(root), "--dataset", "Belugas"]) == 2
    err = capsys.readouterr().err
    assert "unknown data set 'Belugas'" in err and "BelugaIDv2" in err and "ZindiTurtleRecall" in err

    assert main([*base, "--root", str(tmp_path / "nowhere"), "--dataset", "BelugaIDv2"]) == 2
    assert "nowhere does not exist" in capsys.readouterr().err

    assert main([*base, "--root", str(tmp_path), "--dataset", "BelugaIDv2"]) == 2
    err = capsys.readouterr().err
    assert "instances_train2022.json is missing" in err and "Traceback" not in err

    broken = tmp_path / "broken"
    sources = make_beluga_id_v2(broken)
    os.remove(sources["2"])
    assert main([*base, "--root", str(broken), "--dataset", "BelugaIDv2"]) == 2
    err = capsys.readouterr().err
    assert "BelugaIDv2 catalogue row 2 (beluga/beluga.coco/images/train2022/000000000002.jpg): photo" in err
    assert "file is missing" in err and not (tmp_path / "out" / "metadata.csv").exists()


def test_rows_the_generic_reader_refuses_are_not_imported(tmp_path):
    # Rows each fine alone, refused together by the generic task's reader: an encounter of two individuals.
    photo = save_photo(tmp_path / "src" / "a.png", np.random.default_rng(1))
    row = {"image_id": "a", "identity": "whale1", "viewpoint": "top", "date": "", "encounter": "e1",
           "split": "train", "source": str(photo), "origin": "row 1"}
    rows = pd.DataFrame([row, {**row, "image_id": "b", "identity": "whale2", "origin": "row 2"}])
    with pytest.raises(PhotoidError, match="encounter 'e1'"):
        generic.write_generic_folder(rows, tmp_path / "out")
    assert not (tmp_path / "out" / "metadata.csv").exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["images"]  # no table under any name
