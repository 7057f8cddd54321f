"""Loading and validating a Turtle Recall folder, and the cheap image-file checks behind it.

Every folder here is written by hand in tmp_path with 8x8 JPEGs, so each test states exactly what is broken.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.preprocessing import LabelEncoder

from photoid.turtles.data import load_test_labels, load_turtles
from photoid.core.errors import PhotoidError, ValidationError
from photoid.core.images import check_image_file, image_size

# Appearance order differs from sorted order ("t_Mid" sorts first: upper case before lower case), and
# "t_alpha" is in both train.csv and extra_images.csv.
TRAIN = ("image_id,image_location,turtle_id\n"
         "ID_B1,Top,t_zeta\n"
         "ID_A2,left,t_alpha\n"
         "ID_C3,RIGHT,t_Mid\n"
         "ID_D4,top,t_zeta\n")
EXTRA = ("image_id,turtle_id\n"
         "ID_E5,t_beta\n"
         "ID_F6,t_alpha\n"
         "ID_G7,t_beta\n")
TEST = ("image_id,image_location\n"
        "ID_T1,Top\n"
        "ID_T2,left\n")
SAMPLE = ("image_id,prediction1,prediction2,prediction3,prediction4,prediction5\n"
          "ID_T2,t_alpha,t_beta,t_Mid,t_zeta,new_turtle\n"
          "ID_T1,t_alpha,t_beta,t_Mid,t_zeta,new_turtle\n")


def jpeg_bytes(size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (120, 80, 40)).save(buffer, "JPEG")
    return buffer.getvalue()


def make_folder(root: Path, **csv_text: str) -> Path:
    """A valid folder; keyword arguments (train, extra, test, sample) replace a CSV's text."""
    texts = {"train": TRAIN, "extra": EXTRA, "test": TEST, "sample": SAMPLE, **csv_text}
    names = {"train": "train.csv", "extra": "extra_images.csv", "test": "test.csv",
             "sample": "sample_submission.csv"}
    root.mkdir(parents=True, exist_ok=True)
    for key, name in names.items():
        (root / name).write_text(texts[key], encoding="utf-8")
    (root / "images").mkdir(exist_ok=True)
    for image_id in ["ID_B1", "ID_A2", "ID_C3", "ID_D4", "ID_E5", "ID_F6", "ID_G7", "ID_T1", "ID_T2"]:
        (root / "images" / f"{image_id}.JPG").write_bytes(jpeg_bytes())
    return root


def problems_of(data_dir: Path, **kwargs) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        load_turtles(data_dir, **kwargs)
    return info.value


def assert_problem(error: ValidationError, file: str, line: int | None, fragment: str) -> None:
    """The error lists a problem at this file and line whose reason contains `fragment`, and says so in text."""
    matches = [p for p in error.problems if p.file == file and p.line == line and fragment in p.reason]
    assert matches, f"no problem ({file}, {line}, {fragment!r}) in:\n{error}"
    assert str(matches[0]) in str(error)
    where = file if line is None else f"{file} line {line}"
    assert f"{where}: " in str(error)


# ---- a valid folder -------------------------------------------------------------------------------------------

def test_valid_folder_loads_with_sorted_classes_and_original_order(tmp_path):
    data = load_turtles(make_folder(tmp_path / "d"))
    assert data.classes == ["t_Mid", "t_alpha", "t_beta", "t_zeta"]
    assert data.original_ids == ["t_Mid", "t_alpha", "t_zeta"]
    labeled = data.labeled
    assert list(labeled.columns) == ["image_id", "image_location", "turtle_id", "label", "source"]
    assert labeled["image_id"].tolist() == ["ID_B1", "ID_A2", "ID_C3", "ID_D4", "ID_E5", "ID_F6", "ID_G7"]
    assert labeled["image_location"].tolist() == ["top", "left", "right", "top", "top", "top", "top"]
    assert labeled["source"].tolist() == ["train"] * 4 + ["extra"] * 3
    assert labeled["label"].tolist() == [3, 1, 0, 3, 2, 1, 2]
    assert labeled.index.tolist() == list(range(7))
    # The same labels as sklearn's LabelEncoder over train then extra, as in the original.
    encoder = LabelEncoder().fit(labeled["turtle_id"])
    assert list(encoder.classes_) == data.classes
    np.testing.assert_array_equal(encoder.transform(labeled["turtle_id"]), labeled["label"])
    assert data.test["image_location"].tolist() == ["top", "left"]
    assert data.sample_submission["image_id"].tolist() == ["ID_T2", "ID_T1"]
    assert data.image_path("ID_B1") == str(tmp_path / "d" / "images" / "ID_B1.JPG")


def test_loading_writes_nothing(tmp_path):
    folder = make_folder(tmp_path / "d")
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    load_turtles(folder)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before


def test_ids_that_look_like_numbers_or_na_stay_strings(tmp_path):
    folder = make_folder(tmp_path / "d", extra="image_id,turtle_id\nID_E5,NA\nID_F6,007\nID_G7,1e3\n")
    data = load_turtles(folder)
    assert data.extra["turtle_id"].tolist() == ["NA", "007", "1e3"]
    assert {"NA", "007", "1e3"} <= set(data.classes)


def test_extra_columns_bom_and_blank_lines_are_accepted(tmp_path):
    folder = make_folder(tmp_path / "d", train="image_id,image_location,turtle_id,notes\n"
                                               "ID_B1,Top,t_zeta,x\n\nID_A2,left,t_alpha,\n"
                                               "ID_C3,RIGHT,t_Mid,y\nID_D4,top,t_zeta,z\n")
    (folder / "test.csv").write_bytes("\ufeff".encode("utf-8") + TEST.encode("utf-8"))
    data = load_turtles(folder)
    assert data.test["image_id"].tolist() == ["ID_T1", "ID_T2"]
    assert data.train["image_id"].tolist() == ["ID_B1", "ID_A2", "ID_C3", "ID_D4"]
    assert data.train["notes"].tolist() == ["x", "", "y", "z"]


# ---- file-level problems --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["train.csv", "extra_images.csv", "test.csv", "sample_submission.csv"])
def test_missing_file_is_named(tmp_path, name):
    folder = make_folder(tmp_path / "d")
    (folder / name).unlink()
    assert_problem(problems_of(folder), name, None, "file is missing")


def test_missing_data_folder_is_a_clear_error(tmp_path):
    with pytest.raises(PhotoidError, match="does not exist"):
        load_turtles(tmp_path / "nowhere")


def test_missing_column_names_it_and_the_columns_found(tmp_path):
    folder = make_folder(tmp_path / "d", train="image_id,image_location\nID_B1,top\n")
    assert_problem(problems_of(folder), "train.csv", 1,
                   "missing column 'turtle_id' (columns found: 'image_id', 'image_location')")


def test_empty_and_header_only_files(tmp_path):
    folder = make_folder(tmp_path / "d", extra="", test="image_id,image_location\n\n")
    error = problems_of(folder)
    assert_problem(error, "extra_images.csv", None, "file is empty")
    assert_problem(error, "test.csv", None, "header but no rows")


def test_latin1_file_is_refused_with_its_name_and_line(tmp_path):
    folder = make_folder(tmp_path / "d")
    (folder / "extra_images.csv").write_bytes("image_id,turtle_id\nID_E5,t_beta\nID_F6,t_caf\u00e9\n"
                                              .encode("latin-1"))
    assert_problem(problems_of(folder), "extra_images.csv", 3, "encoding is not UTF-8")


def test_malformed_csv_is_a_problem_not_a_traceback(tmp_path):
    folder = make_folder(tmp_path / "d", extra="image_id,turtle_id\nID_E5,t_beta\nID_F6,t_alpha,surplus\n")
    assert_problem(problems_of(folder), "extra_images.csv", 3, "malformed CSV")


# ---- row-level problems ---------------------------------------------------------------------------------------

def test_duplicate_within_a_file_names_both_lines_counting_blank_lines(tmp_path):
    folder = make_folder(tmp_path / "d", train=TRAIN.replace("ID_D4,top", "\nID_A2,top"))
    assert_problem(problems_of(folder), "train.csv", 6, "duplicate image_id 'ID_A2' (first on line 3)")


def test_duplicate_across_train_and_extra_names_both_files(tmp_path):
    folder = make_folder(tmp_path / "d", extra="image_id,turtle_id\nID_E5,t_beta\nID_A2,t_alpha\nID_G7,t_beta\n")
    assert_problem(problems_of(folder), "extra_images.csv", 3, "'ID_A2' is also in train.csv line 3")


@pytest.mark.parametrize("bad_id, reason", [
    ("ID/B1", "path separator"),
    ("ID\\B1", "path separator"),
    ("/etc/passwd", "path separator"),
    ("C:ID_B1", "absolute path"),
    ("..", "'..'"),
    (" ID_B1", "whitespace"),
    ("ID_B1 ", "whitespace"),
    ("ID\x07B1", "control character"),
    ("", "is empty"),
])
def test_malformed_image_ids_are_refused(tmp_path, bad_id, reason):
    folder = make_folder(tmp_path / "d", train=TRAIN.replace("ID_C3,", f"{bad_id},"))
    assert_problem(problems_of(folder), "train.csv", 4, reason)


def test_blank_and_reserved_turtle_ids_are_refused(tmp_path):
    folder = make_folder(tmp_path / "d", extra="image_id,turtle_id\nID_E5,\nID_F6,new_turtle\nID_G7,t_beta \n")
    error = problems_of(folder)
    assert_problem(error, "extra_images.csv", 2, "turtle_id '' is empty")
    assert_problem(error, "extra_images.csv", 3, "reserved")
    assert_problem(error, "extra_images.csv", 4, "whitespace")


def test_unknown_location_is_refused_any_case_accepted(tmp_path):
    folder = make_folder(tmp_path / "d", test="image_id,image_location\nID_T1,LeFt\nID_T2,front\n")
    error = problems_of(folder)
    assert_problem(error, "test.csv", 3, "image_location 'front' is not one of top, left, right")
    assert not [p for p in error.problems if p.line == 2]


def test_test_id_that_is_labelled_is_refused(tmp_path):
    folder = make_folder(tmp_path / "d", test="image_id,image_location\nID_T1,top\nID_E5,top\n",
                         sample=SAMPLE.replace("ID_T2", "ID_E5"))
    assert_problem(problems_of(folder), "test.csv", 3, "also a labelled image (extra_images.csv line 2)")


def test_sample_submission_must_hold_the_test_ids(tmp_path):
    row = ",t_alpha,t_beta,t_Mid,t_zeta,new_turtle\n"
    sample = SAMPLE.splitlines(keepends=True)
    folder = make_folder(tmp_path / "d", sample=sample[0] + "ID_T1" + row + "ID_X9" + row + "ID_T1" + row)
    error = problems_of(folder)
    assert_problem(error, "sample_submission.csv", 3, "'ID_X9' is not in test.csv")
    assert_problem(error, "sample_submission.csv", 4, "duplicate image_id 'ID_T1' (first on line 2)")
    assert_problem(error, "test.csv", 3, "'ID_T2' is missing from sample_submission.csv")


# ---- image files ----------------------------------------------------------------------------------------------

def test_broken_images_are_named_with_their_csv_line(tmp_path):
    folder = make_folder(tmp_path / "d")
    images = folder / "images"
    (images / "ID_A2.JPG").unlink()
    (images / "ID_C3.JPG").write_bytes(b"")
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    (images / "ID_E5.JPG").write_bytes(png.getvalue())
    (images / "ID_T2.JPG").write_bytes(jpeg_bytes()[:-2])
    (images / "ID_G7.JPG").rename(images / "ID_G7.jpg")
    error = problems_of(folder)
    assert_problem(error, "train.csv", 3, "image images/ID_A2.JPG: file is missing")
    assert_problem(error, "train.csv", 4, "file is empty")
    assert_problem(error, "extra_images.csv", 2, "not a JPEG: it is a PNG file")
    assert_problem(error, "extra_images.csv", 4, "found ID_G7.jpg")
    assert_problem(error, "test.csv", 3, "truncated")
    assert len(error.problems) == 5


def test_image_pixel_limit_and_skipping_image_checks(tmp_path):
    folder = make_folder(tmp_path / "d")
    error = problems_of(folder, max_pixels=63)
    assert len(error.problems) == 9 and all("above the limit of 63" in p.reason for p in error.problems)
    (folder / "images" / "ID_B1.JPG").unlink()
    assert load_turtles(folder, check_images=False).labeled.shape[0] == 7


def test_missing_image_folder_is_one_problem(tmp_path):
    folder = make_folder(tmp_path / "d")
    for path in (folder / "images").iterdir():
        path.unlink()
    (folder / "images").rmdir()
    error = problems_of(folder)
    assert [str(p) for p in error.problems] == ["images/: image folder is missing"]


def test_several_problems_in_several_files_are_listed_in_one_error(tmp_path):
    folder = make_folder(tmp_path / "d", train=TRAIN.replace("RIGHT", "up"),
                         extra="image_id,turtle_id\nID_E5,t_beta\nID_E5,t_beta\nID_G7,\n")
    (folder / "test.csv").unlink()
    error = problems_of(folder)
    assert_problem(error, "train.csv", 4, "image_location 'up'")
    assert_problem(error, "extra_images.csv", 3, "duplicate image_id 'ID_E5'")
    assert_problem(error, "extra_images.csv", 4, "turtle_id '' is empty")
    assert_problem(error, "test.csv", None, "file is missing")
    assert str(error).startswith(f"invalid Turtle Recall data in {folder}: 4 problems")


# ---- test labels ----------------------------------------------------------------------------------------------

def test_test_labels_load_and_are_validated(tmp_path):
    folder = make_folder(tmp_path / "d")
    (folder / "test_labels.csv").write_text("image_id,turtle_id,Usage\nID_T1,t_alpha,Public\nID_T2,new_turtle,"
                                            "Private\n", encoding="utf-8")
    labels = load_test_labels(folder)
    assert labels[["image_id", "turtle_id"]].values.tolist() == [["ID_T1", "t_alpha"], ["ID_T2", "new_turtle"]]
    (folder / "test_labels.csv").write_text("image_id,turtle_id\nID_T1,t_alpha\nID_T1,\n../x,t_beta\n")
    with pytest.raises(ValidationError) as info:
        load_test_labels(folder)
    assert_problem(info.value, "test_labels.csv", 3, "duplicate image_id 'ID_T1'")
    assert_problem(info.value, "test_labels.csv", 3, "turtle_id '' is empty")
    assert_problem(info.value, "test_labels.csv", 4, "path separator")


# ---- images.py on its own -------------------------------------------------------------------------------------

def test_check_image_file_accepts_a_jpeg_with_trailing_padding(tmp_path):
    path = tmp_path / "a.JPG"
    path.write_bytes(jpeg_bytes((8, 6)))
    assert check_image_file(path) is None
    assert image_size(path) == (8, 6)
    path.write_bytes(jpeg_bytes() + b"\x00" * 3000 + b"\xff" * 7)
    assert check_image_file(path) is None


def test_check_image_file_refuses_bombs_zero_sizes_and_damaged_headers(tmp_path):
    data = jpeg_bytes()
    frame_header = data.find(b"\xff\xc0")  # start of frame: length(2) precision(1) height(2) width(2)
    huge = bytearray(data)
    huge[frame_header + 5:frame_header + 9] = (60000).to_bytes(2, "big") * 2
    (tmp_path / "huge.JPG").write_bytes(bytes(huge))
    assert "60000 x 60000 = 3,600,000,000 pixels" in check_image_file(tmp_path / "huge.JPG")
    zero = bytearray(data)
    zero[frame_header + 5:frame_header + 7] = b"\x00\x00"
    (tmp_path / "zero.JPG").write_bytes(bytes(zero))
    assert "header cannot be read" in check_image_file(tmp_path / "zero.JPG")
    (tmp_path / "junk.JPG").write_bytes(b"\xff\xd8\xff" + b"\x00" * 40)
    assert "header cannot be read" in check_image_file(tmp_path / "junk.JPG")
    (tmp_path / "text.JPG").write_bytes(b"<html>not found</html>")
    assert check_image_file(tmp_path / "text.JPG") == "is not a JPEG: it is a HTML/XML text file"
    assert check_image_file(tmp_path) == "is not a file"
    with pytest.raises(PhotoidError, match="header cannot be read"):
        image_size(tmp_path / "junk.JPG")
