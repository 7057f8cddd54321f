"""TFRecord writing: contents, layout, resumable and byte-identical reruns, the `tfrecords` command."""

import io
import os
import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

import photoid  # noqa: F401
import tensorflow as tf

from photoid import cli

from photoid.records import reader as pipeline
from photoid.core.errors import PhotoidError, ValidationError
from photoid.turtles.folds import read_folds
from photoid.core.io import read_json
from photoid.records.reader import feature_spec, fold_files
from photoid.records.writer import MANIFEST_NAME, RecordsManifest, prepare_image_bytes, write_records
from photoid.turtles.records import TURTLE_INT_COLUMNS, TURTLE_STRING_COLUMNS, build_turtle_records

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"dim_pre": 24, "layout": "compact"}


def make_jpeg(path: Path, width: int, height: int, seed: int, mode: str = "RGB") -> Path:
    """Noise with a few filled shapes, so resizing and re-encoding have real content to change."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        draw.ellipse([x0, y0, x0 + width // 3, y0 + height // 3], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.convert(mode).save(path, format="JPEG", quality=90)
    return path


def make_rows(folder: Path, n: int, first_seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    rows = pd.DataFrame({
        "image_id": [f"ID_{i:08d}" for i in range(n)],
        "label_id": [f"t_id_{i % 3}" for i in range(n)],
        "image_location": ["top", "left", "right"] * (n // 3) + ["top"] * (n % 3),
        "label": [i % 3 for i in range(n)],
    })
    paths = [str(make_jpeg(folder / f"ID_{i:08d}.JPG", 40 + i, 30, seed=first_seed + i)) for i in range(n)]
    return rows, paths


def read_records(files: list[str]) -> list[dict]:
    spec = feature_spec(TURTLE_STRING_COLUMNS, TURTLE_INT_COLUMNS)
    out = []
    for example in tf.data.TFRecordDataset(files).map(lambda s: tf.io.parse_single_example(s, spec)):
        out.append({k: (v.numpy().decode() if k not in ("image", "label") else v.numpy())
                    for k, v in example.items()})
    return out


def write(rows, paths, out_dir, prefix="fold.0.tfrecord", settings=SETTINGS, force=False, **kwargs):
    manifest = RecordsManifest.open(out_dir, settings, force=force)
    options = dict(string_columns=TURTLE_STRING_COLUMNS, int_columns=TURTLE_INT_COLUMNS, workers=1, **settings)
    options.update(kwargs)
    return write_records(rows, paths, os.path.join(out_dir, prefix), manifest=manifest, **options)


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != MANIFEST_NAME}


# --- prepare_image_bytes ---------------------------------------------------------------------------------------

def test_prepared_image_is_a_square_jpeg_of_the_photo(tmp_path):
    # A smooth picture (gradient and a disc) so that the JPEG round trip is nearly lossless.
    x = np.linspace(0, 255, 90, dtype=np.float32)
    picture = Image.fromarray(np.stack([np.tile(x, (60, 1)), np.full((60, 90), 90.0),
                                        np.tile(x[::-1], (60, 1))], axis=-1).astype(np.uint8))
    ImageDraw.Draw(picture).ellipse([10, 10, 40, 40], fill=(250, 240, 20))
    path = tmp_path / "a.JPG"
    picture.save(path, format="JPEG", quality=95)
    prepared = prepare_image_bytes(path, 32, layout="compact")
    assert prepared == prepare_image_bytes(path, 32, layout="compact")  # deterministic
    decoded = np.asarray(Image.open(io.BytesIO(prepared))).astype(int)
    assert decoded.shape == (32, 32, 3)
    # The same picture, squeezed to a square: close to Pillow's resize of the source, far from its mirror image.
    expected = np.asarray(Image.open(path).resize((32, 32), Image.Resampling.BILINEAR)).astype(int)
    assert np.abs(decoded - expected).mean() < 3
    assert np.abs(decoded - expected[:, ::-1]).mean() > 30


def test_large_photo_is_shrunk_while_decoding_and_grey_becomes_rgb(tmp_path):
    big = make_jpeg(tmp_path / "big.JPG", 1500, 1000, seed=2, mode="L")
    decoded = np.asarray(Image.open(io.BytesIO(prepare_image_bytes(big, 64, layout="compact"))))
    assert decoded.shape == (64, 64, 3)
    assert (decoded[..., 0] == decoded[..., 1]).mean() > 0.9  # still grey, stored as RGB


def test_keep_original_stores_the_file_bytes(tmp_path):
    path = make_jpeg(tmp_path / "a.JPG", 50, 40, seed=3)
    assert prepare_image_bytes(path, 16, layout="original") == path.read_bytes()
    png = tmp_path / "b.JPG"
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    with pytest.raises(PhotoidError, match="not a JPEG"):
        prepare_image_bytes(png, 16, layout="original")
    (tmp_path / "c.JPG").write_bytes(b"not an image")
    with pytest.raises(PhotoidError, match="cannot be read"):
        prepare_image_bytes(tmp_path / "c.JPG", 16, layout="compact")


# --- write_records ---------------------------------------------------------------------------------------------

def test_records_hold_the_rows_and_prepared_images_in_order(tmp_path):
    rows, paths = make_rows(tmp_path / "images", 7)
    out = tmp_path / "rec"
    result = write(rows, paths, out)
    assert result["files"] == [str(out / "fold.0.tfrecord-00000-of-00001")]
    records = read_records(result["files"])
    assert [r["image_id"] for r in records] == list(rows["image_id"])
    assert [r["label_id"] for r in records] == list(rows["label_id"])
    assert [r["image_location"] for r in records] == list(rows["image_location"])
    assert [int(r["label"]) for r in records] == list(rows["label"])
    for record, path in zip(records, paths):
        assert record["image"] == prepare_image_bytes(path, 24, layout="compact")
        assert np.asarray(Image.open(io.BytesIO(record["image"]))).shape == (24, 24, 3)


def test_keep_original_records_hold_the_source_files(tmp_path):
    rows, paths = make_rows(tmp_path / "images", 4)
    result = write(rows, paths, tmp_path / "rec", settings={"dim_pre": 24, "layout": "original"})
    assert [r["image"] for r in read_records(result["files"])] == [Path(p).read_bytes() for p in paths]


def test_shards_are_contiguous_and_named_like_the_originals(tmp_path):
    rows, paths = make_rows(tmp_path / "images", 10)
    out = tmp_path / "rec"
    result = write(rows, paths, out, shards=3)
    names = [os.path.basename(f) for f in result["files"]]
    assert names == [f"fold.0.tfrecord-0000{i}-of-00003" for i in range(3)]
    per_shard = [[r["image_id"] for r in read_records([f])] for f in result["files"]]
    assert [len(ids) for ids in per_shard] == [3, 3, 4]  # the last shard takes the remainder
    assert sum(per_shard, []) == list(rows["image_id"])
    assert fold_files(out, [0]) == result["files"]
    manifest = RecordsManifest.open(out, SETTINGS)
    assert [manifest.shards[n]["rows"] for n in names] == [3, 3, 4]


def test_two_workers_write_the_same_bytes_as_one(tmp_path):
    rows, paths = make_rows(tmp_path / "images", 6)
    write(rows, paths, tmp_path / "one", workers=1)
    write(rows, paths, tmp_path / "two", workers=2)
    assert file_bytes(tmp_path / "one") == file_bytes(tmp_path / "two")


def test_rerun_keeps_complete_shards_and_rewrites_missing_or_damaged_ones(tmp_path):
    rows, paths = make_rows(tmp_path / "images", 9)
    out = tmp_path / "rec"
    first = write(rows, paths, out, shards=3)
    before = file_bytes(out)
    again = write(rows, paths, out, shards=3)
    assert (again["written"], again["kept"], again["images_written"]) == (0, 3, 0)
    assert file_bytes(out) == before

    os.remove(first["files"][1])
    with open(first["files"][2], "ab") as f:
        f.write(b"x")
    repaired = write(rows, paths, out, shards=3)
    assert (repaired["written"], repaired["kept"], repaired["images_written"]) == (2, 1, 6)
    assert file_bytes(out) == before


def test_changed_inputs_rewrite_only_their_shard(tmp_path):
    rows, paths = make_rows(tmp_path / "images", 6)
    out = tmp_path / "rec"
    write(rows, paths, out, shards=2)
    rows.loc[4, "label"] = 2
    result = write(rows, paths, out, shards=2)
    assert (result["written"], result["kept"]) == (1, 1)
    assert [int(r["label"]) for r in read_records(result["files"])] == list(rows["label"])


def test_interrupted_run_leaves_only_complete_shards_and_resumes(tmp_path):
    rows, paths = make_rows(tmp_path / "images", 6)
    out = tmp_path / "rec"
    broken = Path(paths[4])
    good = broken.read_bytes()
    broken.write_bytes(b"garbage")
    with pytest.raises(PhotoidError, match="cannot be read"):
        write(rows, paths, out, shards=2)
    assert sorted(os.listdir(out)) == ["fold.0.tfrecord-00000-of-00002", MANIFEST_NAME]  # no partial shard
    broken.write_bytes(good)
    result = write(rows, paths, out, shards=2)
    assert (result["written"], result["kept"]) == (1, 1)
    assert [r["image_id"] for r in read_records(result["files"])] == list(rows["image_id"])


def test_leftover_temporary_shard_is_never_taken_as_complete(tmp_path):
    rows, paths = make_rows(tmp_path / "images", 4)
    out = tmp_path / "rec"
    out.mkdir()
    leftover = out / ".fold.0.tfrecord-00000-of-00001.k3j2x.tmp"  # what a killed writer leaves
    leftover.write_bytes(b"half a shard")
    with pytest.raises(PhotoidError, match="no fold.0.tfrecord"):
        fold_files(out, [0])
    result = write(rows, paths, out)
    assert result["written"] == 1 and not leftover.exists()
    assert len(read_records(fold_files(out, [0]))) == 4


def test_other_settings_are_refused_unless_forced(tmp_path):
    rows, paths = make_rows(tmp_path / "images", 4)
    out = tmp_path / "rec"
    write(rows, paths, out, shards=2)
    other = {"dim_pre": 16, "layout": "compact"}
    with pytest.raises(PhotoidError, match="--force"):
        RecordsManifest.open(out, other)
    result = write(rows, paths, out, settings=other, force=True)
    assert sorted(os.listdir(out)) == ["fold.0.tfrecord-00000-of-00001", MANIFEST_NAME]  # old shards gone
    assert np.asarray(Image.open(io.BytesIO(read_records(result["files"])[0]["image"]))).shape == (16, 16, 3)


def test_records_not_described_by_a_manifest_are_refused(tmp_path):
    out = tmp_path / "rec"
    out.mkdir()
    (out / "fold.0.tfrecord-00000-of-00001").write_bytes(b"")  # e.g. written by the original script
    with pytest.raises(PhotoidError, match="without a records.json"):
        RecordsManifest.open(out, SETTINGS)
    os.remove(out / "fold.0.tfrecord-00000-of-00001")
    RecordsManifest.open(out, SETTINGS)
    RecordsManifest.open(out, {"dim_pre": 16, "layout": "original"})  # no records left to mix up: allowed


def test_bad_rows_are_refused(tmp_path):
    rows, paths = make_rows(tmp_path / "images", 3)
    with pytest.raises(ValueError, match="lack the record columns"):
        write(rows.drop(columns="label_id"), paths, tmp_path / "rec")
    with pytest.raises(ValueError, match="3 rows but 2 image paths"):
        write(rows, paths[:2], tmp_path / "rec")
    with pytest.raises(ValueError, match="label must be an integer"):
        write(rows.assign(label=0.5), paths, tmp_path / "rec")
    with pytest.raises(ValueError, match="end in '.tfrecord'"):
        write(rows, paths, tmp_path / "rec", prefix="fold.0")


# --- the Turtle Recall command -----------------------------------------------------------------------------------

def make_turtle_folder(root: Path) -> Path:
    """A tiny competition folder: 4 turtles in train.csv (one also in extra), 2 more in extra, 3 test images."""
    train = pd.DataFrame({"image_id": [f"ID_TR{i:04d}" for i in range(12)],
                          "image_location": ["Top", "left", "RIGHT"] * 4,
                          "turtle_id": [f"t_id_{'ABCD'[i % 4]}" for i in range(12)]})
    extra = pd.DataFrame({"image_id": [f"ID_EX{i:04d}" for i in range(8)],
                          "turtle_id": [f"t_id_{'AEF'[i % 3]}" for i in range(8)]})
    test = pd.DataFrame({"image_id": [f"ID_TE{i:04d}" for i in range(3)], "image_location": ["top", "left", "top"]})
    sample = test[["image_id"]].assign(**{f"prediction{k}": "t_id_A" for k in range(1, 6)})
    root.mkdir(parents=True)
    for name, frame in (("train.csv", train), ("extra_images.csv", extra), ("test.csv", test),
                        ("sample_submission.csv", sample)):
        frame.to_csv(root / name, index=False)
    for i, image_id in enumerate([*train.image_id, *extra.image_id, *test.image_id]):
        make_jpeg(root / "images" / f"{image_id}.JPG", 48, 36, seed=100 + i)
    return root


@pytest.fixture(scope="module")
def turtle_folder(tmp_path_factory) -> Path:
    return make_turtle_folder(tmp_path_factory.mktemp("turtles") / "data")


def test_build_writes_folds_csv_fold_records_and_test_records(turtle_folder, tmp_path):
    out = tmp_path / "tfrec"
    summary = build_turtle_records(turtle_folder, out, n_folds=3, dim_pre=20, workers=1)
    folds = read_folds(out / "folds.csv")
    assert len(folds) == 20
    assert summary["fold_rows"] == [int((folds["fold"] == k).sum()) for k in range(3)]
    assert summary["test_rows"] == 3 and summary["shards_written"] == 4
    for fold in range(3):
        expected = folds[folds["fold"] == fold]
        written = read_records(fold_files(out, [fold]))
        assert [r["image_id"] for r in written] == list(expected["image_id"])
        assert [r["label_id"] for r in written] == list(expected["turtle_id"])
        assert [int(r["label"]) for r in written] == list(expected["label"])
        assert [r["image_location"] for r in written] == list(expected["image_location"])
    test = read_records(pipeline.test_files(out))
    assert [r["image_id"] for r in test] == ["ID_TE0000", "ID_TE0001", "ID_TE0002"]
    assert {(r["label_id"], int(r["label"])) for r in test} == {("", -1)}
    assert test[1]["image"] == prepare_image_bytes(turtle_folder / "images" / "ID_TE0001.JPG", 20)  # exact layout
    assert read_json(out / "records.json")["settings"]["layout"] == "exact"


def test_build_rerun_is_byte_identical_and_writes_nothing(turtle_folder, tmp_path):
    out = tmp_path / "tfrec"
    build_turtle_records(turtle_folder, out, n_folds=2, dim_pre=20, workers=1)
    before = file_bytes(out)
    summary = build_turtle_records(turtle_folder, out, n_folds=2, dim_pre=20, workers=1)
    assert (summary["shards_written"], summary["shards_kept"], summary["images_written"]) == (0, 3, 0)
    assert file_bytes(out) == before


def test_invalid_folder_writes_nothing(tmp_path):
    folder = make_turtle_folder(tmp_path / "data")
    os.remove(folder / "images" / "ID_TR0003.JPG")
    with pytest.raises(ValidationError, match="ID_TR0003"):
        build_turtle_records(folder, n_folds=2, dim_pre=20, workers=1)
    assert not (folder / "tfrec").exists()


def test_command_and_root_script(turtle_folder, tmp_path, monkeypatch, capsys):
    out = tmp_path / "tfrec"
    argv = ["--data_dir", str(turtle_folder), "--out_dir", str(out), "--n_folds", "2", "--dim_pre", "20",
            "--workers", "1", "--shards", "2"]
    assert cli.main(["tfrecords", *argv]) == 0
    assert "shards written: 6" in capsys.readouterr().out
    assert len(fold_files(out, [0, 1])) == 4 and (out / "folds.csv").is_file()
    # The original's entry point takes the same options; other settings need --force.
    monkeypatch.setattr(sys, "argv", ["create_tfrecords.py", *argv[:-2], "--shards", "1"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / "create_tfrecords.py"), run_name="__main__")
    assert exit_info.value.code == 2 and "--force" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["create_tfrecords.py", *argv[:-2], "--shards", "1", "--force"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / "create_tfrecords.py"), run_name="__main__")
    assert exit_info.value.code == 0
    assert [os.path.basename(f) for f in fold_files(out, [0, 1])] == [
        "fold.0.tfrecord-00000-of-00001", "fold.1.tfrecord-00000-of-00001"]


@pytest.mark.slow  # Python and its workers in fresh processes
def test_workers_that_cannot_start_give_an_error_not_a_hang(tmp_path):
    """Spawned workers re-import the calling script; from stdin they cannot, and the writer must say so."""
    import subprocess

    make_jpeg(tmp_path / "a.JPG", 40, 30, seed=1)
    make_jpeg(tmp_path / "b.JPG", 40, 30, seed=2)
    script = f"""
import pandas as pd
from photoid.core.errors import PhotoidError
from photoid.records.writer import RecordsManifest, write_records
rows = pd.DataFrame({{"image_id": ["a", "b"], "label": [0, 1]}})
manifest = RecordsManifest.open({str(tmp_path / 'rec')!r}, {{"dim_pre": 16}})
try:
    write_records(rows, [{str(tmp_path / 'a.JPG')!r}, {str(tmp_path / 'b.JPG')!r}],
                  {str(tmp_path / 'rec' / 'x.tfrecord')!r},
                  string_columns=["image_id"], int_columns=["label"], dim_pre=16, layout="compact",
                  manifest=manifest, workers=2)
except PhotoidError as err:
    print("PhotoidError:", err)
"""
    done = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert "PhotoidError: image worker processes stopped" in done.stdout, done.stderr[-2000:]
    assert "__main__" in done.stdout
    assert os.listdir(tmp_path / "rec") == [MANIFEST_NAME]  # no shard, no temporary file
