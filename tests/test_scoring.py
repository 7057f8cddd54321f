"""The `score` command and `score_submission` on hand-made truth and submissions."""

import json

import pandas as pd
import pytest

from photoid.cli import main
from photoid.core.errors import ValidationError
from photoid.turtles.scoring import score_submission

PREDICTIONS = [f"prediction{i}" for i in range(1, 6)]
NT = "new_turtle"


def write_truth(data_dir, with_label_101=False):
    """Four test images: two of known turtles (t_a, t_b), two of turtles train.csv has never seen."""
    data_dir.mkdir()
    pd.DataFrame({"image_id": ["ID_K1", "ID_K2"], "image_location": "top",
                  "turtle_id": ["t_a", "t_b"]}).to_csv(data_dir / "train.csv", index=False)
    truth = pd.DataFrame({"image_id": ["ID_1", "ID_2", "ID_3", "ID_4"],
                          "turtle_id": ["t_a", "t_b", "t_new1", "t_new2"]})
    if with_label_101:
        truth["label_101"] = ["t_a", "t_b", NT, NT]
    truth.to_csv(data_dir / "test_labels.csv", index=False)


def submission(rows):
    return pd.DataFrame(rows, columns=["image_id", *PREDICTIONS])


# ID_1: hit first (1); ID_2: hit third (1/3); ID_3: new_turtle second (1/2); ID_4: names the unseen turtle's
# own id, which the leaderboard calls new_turtle, so it misses (0). Rows in another order than the truth.
ROWS = [
    ["ID_3", "t_b", NT, "t_a", "t_c", "t_d"],
    ["ID_1", "t_a", "t_b", NT, "t_c", "t_d"],
    ["ID_4", "t_new2", "t_a", "t_b", "t_c", "t_d"],
    ["ID_2", "t_a", NT, "t_b", "t_b", "t_c"],
]
EXPECTED = {"map5": (1 + 1 / 3 + 1 / 2 + 0) / 4, "acc1": 1 / 4, "n": 4}


@pytest.mark.parametrize("with_label_101", [False, True])
def test_score_command_prints_json(tmp_path, capsys, with_label_101):
    write_truth(tmp_path / "data", with_label_101)
    submission(ROWS).to_csv(tmp_path / "sub.csv", index=False)
    code = main(["score", "--data_dir", str(tmp_path / "data"), "--submission", str(tmp_path / "sub.csv"),
                 "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed) == ["map5", "acc1", "n"]
    assert printed == pytest.approx(EXPECTED)


def test_score_command_prints_a_summary(tmp_path, capsys):
    write_truth(tmp_path / "data")
    submission(ROWS).to_csv(tmp_path / "sub.csv", index=False)
    assert main(["score", "--data_dir", str(tmp_path / "data"), "--submission", str(tmp_path / "sub.csv")]) == 0
    assert "MAP@5 0.4583   accuracy@1 0.2500   over 4 test images (2 of them new_turtle)" in capsys.readouterr().out


def test_score_command_lists_every_problem_with_its_line(tmp_path, capsys):
    write_truth(tmp_path / "data")
    rows = [ROWS[0], ROWS[1], ROWS[1], ["ID_9", "t_a", "t_a", "t_a", "t_a", "t_a"]]
    submission(rows).to_csv(tmp_path / "sub.csv", index=False)
    code = main(["score", "--data_dir", str(tmp_path / "data"), "--submission", str(tmp_path / "sub.csv")])
    assert code == 2
    err = capsys.readouterr().err
    assert "sub.csv line 4: duplicate image_id 'ID_1' (first on line 3)" in err
    assert "sub.csv line 5: image_id 'ID_9' is not a test image" in err
    assert "test image 'ID_2' has no row" in err and "test image 'ID_4' has no row" in err


def test_score_submission_refuses_wrong_columns():
    truth = pd.DataFrame({"image_id": ["ID_1"], "label_101": ["t_a"]})
    frame = submission([["ID_1", "t_a", "t_b", "t_c", "t_d", "t_e"]])
    with pytest.raises(ValidationError, match="missing column 'prediction5'"):
        score_submission(frame.drop(columns="prediction5"), truth)
    with pytest.raises(ValidationError, match="unexpected column 'Unnamed: 0'"):
        score_submission(frame.assign(**{"Unnamed: 0": "0"}), truth)


def test_score_submission_uses_label_101_when_given():
    truth = pd.DataFrame({"image_id": ["ID_1", "ID_2"], "turtle_id": ["t_x", "t_a"], "label_101": [NT, "t_a"]})
    frame = submission([["ID_2", "t_b", "t_a", NT, "t_c", "t_d"], ["ID_1", NT, "t_a", "t_b", "t_c", "t_d"]])
    assert score_submission(frame, truth) == pytest.approx({"map5": (1 + 0.5) / 2, "acc1": 0.5, "n": 2})
    assert score_submission(frame, truth.drop(columns="label_101")) == pytest.approx(
        {"map5": 0.5 / 2, "acc1": 0.0, "n": 2})
