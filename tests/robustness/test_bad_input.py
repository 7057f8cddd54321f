"""Bad input is refused through the commands users run, before any work, naming file, line and problem.

Each case breaks one thing in an otherwise valid folder, runs `photoid tfrecords` or `photoid train` as the script
does (`photoid.cli.main`), and checks the exit code (2), the message and that nothing was written: no records
folder, no run folder, the data folder unchanged.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Callable

import pytest
from PIL import Image

from robustness_support import (EXTRA_IDS, N_LABELLED, TRAIN_IDS, edit_lines, files_under, jpeg_bytes,
                                jpeg_declaring_size, run_photoid, write_turtle_folder)

TFRECORDS = ("--n_folds", "2", "--dim_pre", "16", "--workers", "1")


def set_cell(name: str, line: int, column: int, value: str) -> Callable[[Path], None]:
    """Set one cell of a CSV (line 1 is the header)."""
    def edit(folder: Path) -> None:
        def change(lines: list[str]) -> None:
            cells = lines[line - 1].split(",")
            cells[column] = value
            lines[line - 1] = ",".join(cells)
        edit_lines(folder / name, change)
    return edit


def write_image(image_id: str, data: bytes) -> Callable[[Path], None]:
    return lambda folder: (folder / "images" / f"{image_id}.JPG").write_bytes(data)


def write_file(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_bytes(data)


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), (10, 200, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def latin1_train(folder: Path) -> None:
    text = (folder / "train.csv").read_text(encoding="utf-8").replace("t_id_B", "t_id_Bé", 1)
    (folder / "train.csv").write_bytes(text.encode("latin-1"))


def drop_train_column(folder: Path) -> None:
    edit_lines(folder / "train.csv", lambda lines: [line.rsplit(",", 1)[0] for line in lines])


# id, how the folder is broken, (file, CSV line or None, what the message says)
CSV_CASES = [
    ("missing column", drop_train_column, ("train.csv", 1, "missing column 'turtle_id'")),
    ("renamed column", set_cell("test.csv", 1, 1, "view"),
     ("test.csv", 1, "missing column 'image_location' (columns found: 'image_id', 'view')")),
    ("empty file", write_file("extra_images.csv", b""), ("extra_images.csv", None, "file is empty")),
    ("header only", write_file("test.csv", b"image_id,image_location\n"),
     ("test.csv", None, "has a header but no rows")),
    ("row longer than the header", set_cell("train.csv", 2, 2, "t_id_A,surplus"),
     ("train.csv", 2, "malformed CSV: the row has more fields than the header")),
    ("duplicate image_id", set_cell("train.csv", 5, 0, TRAIN_IDS[0]),
     ("train.csv", 5, f"duplicate image_id '{TRAIN_IDS[0]}' (first on line 2)")),
    ("blank image_id", set_cell("extra_images.csv", 3, 0, ""), ("extra_images.csv", 3, "image_id '' is empty")),
    ("blank turtle_id", set_cell("extra_images.csv", 4, 1, ""), ("extra_images.csv", 4, "turtle_id '' is empty")),
    ("id with a slash", set_cell("train.csv", 4, 0, "photos/ID_X"), ("train.csv", 4, "contains a path separator")),
    ("id with ..", set_cell("train.csv", 4, 0, "..ID_X"), ("train.csv", 4, "contains '..'")),
    ("absolute POSIX path", set_cell("train.csv", 4, 0, "/etc/passwd"), ("train.csv", 4, "path separator")),
    ("absolute Windows path", set_cell("test.csv", 2, 0, "C:ID_X"), ("test.csv", 2, "is an absolute path")),
    ("missing image", lambda folder: (folder / "images" / f"{TRAIN_IDS[3]}.JPG").unlink(),
     ("train.csv", 5, f"images/{TRAIN_IDS[3]}.JPG: file is missing")),
    ("zero-byte image", write_image(EXTRA_IDS[1], b""), ("extra_images.csv", 3, "file is empty (0 bytes)")),
    ("truncated JPEG", write_image(TRAIN_IDS[0], jpeg_bytes(64, 48)[:-600]),
     ("train.csv", 2, "JPEG is truncated")),
    ("PNG named .JPG", write_image(TRAIN_IDS[1], png_bytes()), ("train.csv", 3, "is not a JPEG: it is a PNG file")),
    ("bytes that are no image", write_image(TRAIN_IDS[2], b"this is a text file\n" * 4),
     ("train.csv", 4, "is not a JPEG: it is unknown data starting with bytes 74 68 69 73")),
    ("decompression bomb", write_image(TRAIN_IDS[5], jpeg_declaring_size(60000, 60000)),
     ("train.csv", 7, "image is 60000 x 60000 = 3,600,000,000 pixels, above the limit")),
    ("latin-1 CSV", latin1_train, ("train.csv", 3, "encoding is not UTF-8 (byte 0xe9")),
    ("UTF-16 CSV", lambda folder: (folder / "test.csv").write_bytes(
        (folder / "test.csv").read_text(encoding="utf-8").encode("utf-16")),
     ("test.csv", 1, "encoding is not UTF-8 (byte 0xff")),
    ("test id that is labelled", set_cell("test.csv", 3, 0, TRAIN_IDS[4]),
     ("test.csv", 3, f"test image_id '{TRAIN_IDS[4]}' is also a labelled image (train.csv line 6)")),
    ("sample submission disagrees with test.csv", set_cell("sample_submission.csv", 4, 0, "ID_OTHER"),
     ("sample_submission.csv", 4, "image_id 'ID_OTHER' is not in test.csv")),
]


@pytest.fixture
def folder(tmp_path) -> Path:
    return write_turtle_folder(tmp_path / "data")


def assert_refused(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert err.startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in:\n{err}"


def assert_problem(err: str, file: str, line: int | None, reason: str) -> None:
    """One listed problem is at `file` and `line` (header = line 1) and says `reason`."""
    where = f"  - {file} line {line}: " if line is not None else f"  - {file}: "
    assert any(text.startswith(where) and reason in text for text in err.splitlines()), \
        f"no problem at {where.strip()} saying {reason!r} in:\n{err}"


@pytest.mark.parametrize("break_folder, expected", [case[1:] for case in CSV_CASES], ids=[c[0] for c in CSV_CASES])
def test_tfrecords_refuses_bad_data_before_writing_anything(folder, capsys, break_folder, expected):
    break_folder(folder)
    data_before = files_under(folder)
    code, _, err = run_photoid(capsys, "tfrecords", "--data_dir", folder, *TFRECORDS)
    assert_refused(code, err, f"invalid Turtle Recall data in {folder}")
    assert_problem(err, *expected)
    assert not (folder / "tfrec").exists()  # the default place for the records
    assert files_under(folder) == data_before


def test_sample_submission_that_disagrees_names_both_sides(folder, tmp_path, capsys):
    set_cell("sample_submission.csv", 4, 0, "ID_OTHER")(folder)
    code, _, err = run_photoid(capsys, "tfrecords", "--data_dir", folder, "--out_dir", tmp_path / "tfrec", *TFRECORDS)
    assert_refused(code, err, "sample_submission.csv line 4: image_id 'ID_OTHER' is not in test.csv",
                   "test.csv line 4: image_id 'ID_TE0002' is missing from sample_submission.csv")


def test_every_problem_of_every_file_is_listed_at_once(folder, tmp_path, capsys):
    set_cell("train.csv", 3, 1, "sideways")(folder)
    set_cell("train.csv", 6, 0, TRAIN_IDS[0])(folder)
    set_cell("extra_images.csv", 2, 1, "new_turtle")(folder)
    (folder / "images" / f"{EXTRA_IDS[5]}.JPG").unlink()
    set_cell("test.csv", 2, 1, "")(folder)
    code, _, err = run_photoid(capsys, "tfrecords", "--data_dir", folder, "--out_dir", tmp_path / "tfrec", *TFRECORDS)
    assert_refused(code, err, ": 5 problems\n",
                   "train.csv line 3: image_location 'sideways' is not one of top, left, right",
                   f"train.csv line 6: duplicate image_id '{TRAIN_IDS[0]}' (first on line 2)",
                   "extra_images.csv line 2: turtle_id 'new_turtle' is reserved",
                   f"extra_images.csv line 7: image images/{EXTRA_IDS[5]}.JPG: file is missing",
                   "test.csv line 2: image_location '' is not one of")
    # Listed file by file, in line order.
    assert err.index("train.csv line 3") < err.index("train.csv line 6") < err.index("extra_images.csv line 2")
    assert not (tmp_path / "tfrec").exists()


def test_a_long_list_of_problems_is_cut_at_the_limit(folder, tmp_path, capsys):
    rows = ["ID_DUP,top,t_id_A"] * 61
    edit_lines(folder / "train.csv", lambda lines: lines + rows)
    (folder / "images" / "ID_DUP.JPG").write_bytes(jpeg_bytes())
    code, _, err = run_photoid(capsys, "tfrecords", "--data_dir", folder, "--out_dir", tmp_path / "tfrec", *TFRECORDS)
    assert_refused(code, err, ": 60 problems\n", "train.csv line 15: duplicate image_id 'ID_DUP' (first on line 14)",
                   "  ... and 10 more")
    assert err.count("duplicate image_id") == 50


def test_a_byte_order_mark_and_windows_line_ends_are_accepted(folder, tmp_path, capsys):
    for name in ("train.csv", "test.csv"):
        text = (folder / name).read_text(encoding="utf-8")
        (folder / name).write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    out = tmp_path / "tfrec"
    code, stdout, err = run_photoid(capsys, "tfrecords", "--data_dir", folder, "--out_dir", out, *TFRECORDS)
    assert code == 0, err
    assert "test: 3 images" in stdout
    assert {"folds.csv", "records.json", "fold.0.tfrecord-00000-of-00001"} <= set(files_under(out))


@pytest.mark.parametrize("n_folds, message", [
    ("0", "--n_folds must be at least 1, got 0"),
    ("1", "--n_folds must be at least 2, got 1"),
    (str(N_LABELLED + 1), f"n_folds={N_LABELLED + 1} is more than the {N_LABELLED} labelled images"),
    # t_id_A has the most images (6): 7 stratified folds cannot all be filled from any one turtle.
    ("7", f"cannot split {N_LABELLED} images into 7 stratified folds"),
])
def test_tfrecords_refuses_fold_counts_it_cannot_split(folder, tmp_path, capsys, n_folds, message):
    out = tmp_path / "tfrec"
    code, _, err = run_photoid(capsys, "tfrecords", "--data_dir", folder, "--out_dir", out, "--n_folds", n_folds,
                               "--dim_pre", "16", "--workers", "1")
    assert_refused(code, err, message)
    assert not out.exists()


def test_missing_data_folder(tmp_path, capsys):
    code, _, err = run_photoid(capsys, "tfrecords", "--data_dir", tmp_path / "nowhere", "--out_dir", tmp_path / "t")
    assert_refused(code, err, f"data folder {tmp_path / 'nowhere'} does not exist")
    assert not (tmp_path / "t").exists()


# --- photoid train ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    """Two folds of the small folder, two shards per record set."""
    from photoid.turtles.records import build_turtle_records

    root = tmp_path_factory.mktemp("bad_input_records")
    data = write_turtle_folder(root / "data")
    build_turtle_records(data, root / "tfrec", n_folds=2, dim_pre=16, shards=2, workers=1)
    return root / "tfrec"


def train(capsys, records: Path, run_dir: Path, *extra: str) -> tuple[int, str]:
    code, _, err = run_photoid(capsys, "train", "--model", "cpu-demo", "--data_dir", records.parent / "data",
                               "--data_tfrec_dir", records, "--run_dir", run_dir, "--n_folds", "2", "--dim", "16",
                               "--dim_pre", "16", "--batch_size", "8", "--n_epochs", "1", "--verbose", "0", *extra)
    return code, err


RECIPE_CASES = [
    ("unknown key", 'backbone = "simple-cnn"\nlearning_rate = 0.1\n', "unknown key 'learning_rate'"),
    ("wrong type", 'dim = "64"\n', "key 'dim' must be an integer, got '64'"),
    ("bool for a number", "lr = true\n", "key 'lr' must be a number, got True"),
    ("table for a string", "[backbone]\nname = 'x'\n", "key 'backbone' must be a string"),
    ("not TOML", "dim = = 3\n", "not valid TOML"),
    ("not UTF-8", "backbone = 'caf\xe9'\n", "not UTF-8 text"),
    ("nan", "lr = nan\n", "lr must be a finite number, got nan"),
    ("too large", f"lr = 1{'0' * 400}\n", "key 'lr' is too large for a number"),
]


@pytest.mark.parametrize("text, message", [c[1:] for c in RECIPE_CASES], ids=[c[0] for c in RECIPE_CASES])
def test_train_refuses_a_bad_recipe_before_writing_anything(records, tmp_path, capsys, text, message):
    recipe = tmp_path / "broken.toml"
    recipe.write_bytes(text.encode("latin-1"))
    run_dir = tmp_path / "run"
    code, _, err = run_photoid(capsys, "train", "--model", recipe, "--data_dir", records.parent / "data",
                               "--data_tfrec_dir", records, "--run_dir", run_dir)
    assert_refused(code, err, message)
    assert str(recipe) in err or "invalid configuration" in err
    assert not run_dir.exists()


def test_train_lists_every_recipe_problem_at_once(records, tmp_path, capsys):
    recipe = tmp_path / "broken.toml"
    recipe.write_text('dim = "64"\nlearning_rate = 0.1\nbatch_size = 1.5\n', encoding="utf-8")
    code, _, err = run_photoid(capsys, "train", "--model", recipe, "--data_tfrec_dir", records,
                               "--run_dir", tmp_path / "run")
    assert_refused(code, err, "invalid recipe: 3 problems", "key 'dim'", "unknown key 'learning_rate'",
                   "key 'batch_size' must be an integer, got 1.5")


def test_a_wrong_type_on_the_command_line_is_a_usage_error(records, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train(capsys, records, tmp_path / "run", "--dim", "large")
    assert exit_info.value.code == 2
    assert "argument --dim: expected an integer, got 'large'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def move_fold(records: Path, tmp_path: Path, old: int, new: int) -> Path:
    """A copy of the records whose folds.csv calls fold `old` fold `new`."""
    copy = tmp_path / "tfrec"
    shutil.copytree(records, copy)
    def renumber(lines: list[str]) -> None:
        for i, line in enumerate(lines[1:], start=1):
            cells = line.split(",")
            if cells[3] == str(old):  # image_id, turtle_id, label, fold, ...
                cells[3] = str(new)
                lines[i] = ",".join(cells)
    edit_lines(copy / "folds.csv", renumber)
    return copy


@pytest.mark.parametrize("options, message", [
    (("--n_folds", "1"), "n_folds must be at least 2, got 1"),
    (("--n_folds", "3"), "--n_folds 3 but the records in"),
    (("--lr", "inf"), "lr must be a finite number, got inf"),
    (("--initial_fold", "2"), "folds: need 0 <= initial_fold (2) < final_fold (2) <= n_folds (2)"),
    (("--job", "train_predict"), "job 'train_predict': use words"),
])
def test_train_refuses_bad_options_before_writing_anything(records, tmp_path, capsys, options, message):
    code, err = train(capsys, records, tmp_path / "run", *options)
    assert_refused(code, err, message)
    assert not (tmp_path / "run").exists()


def test_train_refuses_folds_csv_with_an_empty_fold(records, tmp_path, capsys):
    copy = move_fold(records, tmp_path, old=1, new=2)
    code, err = train(capsys, copy, tmp_path / "run", "--n_folds", "3")
    assert_refused(code, err, "invalid fold file", f"{copy / 'folds.csv'}: fold(s) 1 have no rows")
    assert not (tmp_path / "run").exists()


def test_train_refuses_missing_records(tmp_path, capsys):
    code, err = train(capsys, tmp_path / "no_records", tmp_path / "run")
    assert_refused(code, err, f"no {tmp_path / 'no_records' / 'folds.csv'}: build the records first")
    assert not (tmp_path / "run").exists()


def test_train_refuses_records_with_a_missing_shard(records, tmp_path, capsys):
    """What an interrupted `photoid tfrecords` leaves: fold 1 with one of its two shards."""
    copy = tmp_path / "tfrec"
    shutil.copytree(records, copy)
    (copy / "fold.1.tfrecord-00001-of-00002").unlink()
    code, err = train(capsys, copy, tmp_path / "run")
    assert_refused(code, err, f"incomplete records in {copy}: fold.1.tfrecord has shards 1 of 2")
    assert not (tmp_path / "run").exists()
