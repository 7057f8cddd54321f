"""Tasks (`photoid.tasks`): one pipeline on a Turtle Recall, a Where's Whale-do and a generic folder, the generic
folder's own rules and errors, `photoid records`, and no branch on the task's name outside the registry."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import REPO
from photoid.catalog.calibrate import calibrate
from photoid.catalog.build import build_catalog
from photoid.catalog.store import update_manifest
from photoid.cli import main
from photoid.core.errors import PhotoidError, ValidationError
from photoid.core.labels import NEW_INDIVIDUAL, NEW_TURTLE
from photoid.tasks import TASKS, detect_task, get_task
from photoid.generic.data import load_generic

# task -> (its data folder fixture, its trained run fixture)
PIPELINES = {"turtles": ("turtle_dir", "trained_run"), "whales": ("beluga_dir", "whale_run"),
             "generic": ("generic_dir", "generic_run")}


# The turtles' pipeline reuses the session's catalogue; the others train their own runs and build and calibrate a
# catalogue with local features here: end to end, seconds each.
@pytest.mark.parametrize("name", [name if name == "turtles" else pytest.param(name, marks=pytest.mark.slow)
                                  for name in PIPELINES])
def test_the_same_pipeline_runs_on_every_task(name, request, tmp_path, capsys):
    """records -> 2 folds x 1 epoch -> CV scores -> catalogue -> calibration -> identify --catalog -> serve."""
    from starlette.testclient import TestClient

    from photoid.catalog.identify import identify_paths_with_catalog
    from photoid.catalog.build import read_catalog
    from photoid.serve.app import create_app
    from photoid.serve.identifier import Identifier

    data_dir, run_dir = (request.getfixturevalue(f) for f in PIPELINES[name])
    task = get_task(name)
    assert detect_task(data_dir) is task
    assert json.loads((run_dir / "config.json").read_text())["task"] == name
    folds = task.read_folds(data_dir / "tfrec" / "folds.csv")
    scores = json.loads((run_dir / "cv_scores.json").read_text())
    assert scores["all"]["n"] == len(folds) and 0.0 <= scores["all"]["map5"] <= 1.0

    photos = task.labelled_photos(data_dir)
    if name == "turtles":   # the session's turtle catalogue (tests/test_catalog.py checks its building in detail)
        shutil.copytree(request.getfixturevalue("serve_catalog").path, tmp_path / "catalog")
        catalog = read_catalog(tmp_path / "catalog")
    else:
        catalog = build_catalog([str(run_dir)], data_dir, tmp_path / "catalog")
        catalog = update_manifest(catalog, calibration=calibrate(catalog, repeats=1))
    assert catalog.table["image_id"].tolist() == photos["image_id"].tolist()
    assert catalog.table["individual_id"].tolist() == photos["individual_id"].tolist()
    individuals = set(photos["individual_id"])

    queries = [p for p in photos["path"] if p.lower().endswith((".jpg", ".jpeg"))][:3]
    capsys.readouterr()  # what the fixtures' training printed
    assert main(["identify", *queries, "--catalog", str(catalog.path), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert len(results) == 3
    for result in results:
        labels = [c["label"] for c in result["candidates"]]
        assert labels and set(labels) <= individuals | {task.new_label}
        assert [c["probability"] for c in result["candidates"]] == sorted(
            (c["probability"] for c in result["candidates"]), reverse=True)

    identifier = Identifier(catalog.path, batch_size=4)
    assert identifier.new_label == task.new_label
    answer = TestClient(create_app(identifier)).post(
        "/identify", params={"format": "json"},
        files=[("photos", (Path(queries[0]).name, Path(queries[0]).read_bytes(), "image/jpeg"))]).json()
    served = [c["label"] for c in answer["results"][0]["candidates"]]
    assert served == [c["label"] for c in results[0]["candidates"]]
    # Above every possible similarity, every photo is new: named with the task's own label.
    new = next(identify_paths_with_catalog(catalog, queries[:1], embedder=identifier.embedder, blend_weight=0.0,
                                           threshold=2.0))
    assert new.labels[0] == task.new_label == (NEW_TURTLE if name == "turtles" else NEW_INDIVIDUAL)


@pytest.mark.parametrize("name, folder, records, options", [("turtles", "turtle_dir", "turtle_records", []),
                                                            ("whales", "beluga_dir", "whale_records", ["--mirror_right"])])
def test_photoid_records_writes_what_the_task_command_writes(name, folder, records, options, request, tmp_path,
                                                             capsys):
    data_dir, built = request.getfixturevalue(folder), request.getfixturevalue(records)
    out = tmp_path / "records"
    assert main(["records", "--data_dir", str(data_dir), "--out", str(out), "--n_folds", "2", "--dim_pre", "32",
                 "--workers", "1", *options]) == 0
    assert f"task: {name} (found from the folder)" in capsys.readouterr().out
    assert (out / "folds.csv").read_bytes() == (built / "folds.csv").read_bytes()
    ours, theirs = (json.loads((d / "records.json").read_text()) for d in (out, built))
    assert ours["settings"] == theirs["settings"]
    assert {k: v["sha256"] for k, v in ours["shards"].items()} == {k: v["sha256"] for k, v in theirs["shards"].items()}


def test_photoid_records_refuses_options_the_task_does_not_take(generic_dir, tmp_path, capsys):
    assert main(["records", "--data_dir", str(generic_dir), "--out", str(tmp_path / "r"), "--views", "top"]) == 2
    assert "is a generic folder, whose records take no --views" in capsys.readouterr().err
    # The exact layout is the Turtle Recall reader's, JPEGs only: refused before anything is written.
    assert main(["records", "--data_dir", str(generic_dir), "--out", str(tmp_path / "r"), "--layout", "exact"]) == 2
    assert "is not a JPEG: the exact layout reads JPEGs only" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    with pytest.raises(PhotoidError, match="not a folder photoid knows"):
        detect_task(tmp_path)


def test_generic_records_folds_and_labels(generic_dir, generic_records):
    data = load_generic(generic_dir)
    settings = json.loads((generic_records / "records.json").read_text())["settings"]
    assert settings["dataset"] == "generic" and settings["grouped"] and settings["layout"] == "compact"
    folds = get_task("generic").read_folds(generic_records / "folds.csv")
    train = data.train
    assert sorted(folds["image_id"]) == sorted(train["image_id"]) and data.classes == sorted(set(train["identity"]))
    assert (np.array(data.classes)[folds["label"]] == folds["identity"]).all()
    # The encounters have values: the whales' rule, no encounter on both sides of a split, rows in file order.
    assert (folds.groupby("encounter")["fold"].nunique() == 1).all()
    assert folds["image_id"].tolist() == train["image_id"].tolist()
    assert set(data.test["identity"]) - set(data.classes), "the synthetic test split holds unseen individuals"
    assert (data.table["path"].str.endswith(".png")).any(), "and photos other than JPEGs"


def test_generic_folds_without_encounters_are_the_turtle_recall_rule(generic_dir):
    """StratifiedKFold(shuffle, seed 33) over the train rows in file order, then the rows shuffled with seed 34."""
    from sklearn.model_selection import StratifiedKFold

    from photoid.generic.data import generic_folds

    data = load_generic(generic_dir, check_images=False)
    data = type(data)(data.root, data.table.assign(encounter=""), data.classes)
    folds = generic_folds(data, n_folds=2).set_index("image_id")
    train = data.train
    labels = pd.Index(data.classes).get_indexer(train["identity"])
    for fold, (_, valid) in enumerate(StratifiedKFold(2, shuffle=True, random_state=33).split(train, labels)):
        assert set(folds.index[folds["fold"] == fold]) == set(train["image_id"].iloc[valid])
    assert folds.index.tolist() == train["image_id"].sample(frac=1.0, random_state=34).tolist()


def test_generic_test_predictions_are_scored_open_set(generic_dir, generic_run):
    test = load_generic(generic_dir, check_images=False).test
    named = test[test["identity"] != ""]
    train_ids = set(load_generic(generic_dir, check_images=False).classes)
    scores = json.loads((generic_run / "test_scores.json").read_text())
    assert scores["n"] == len(named) and scores["n_new"] == int((~named["identity"].isin(train_ids)).sum()) > 0
    assert 0.0 <= scores["map5"] <= 1.0


def test_generic_reference_photos_of_any_format_are_drawn(generic_dir):
    from photoid.inference.gallery import _thumbnail, reference_photos

    train = load_generic(generic_dir, check_images=False).train
    references = reference_photos(generic_dir)
    assert references == {i: (generic_dir / p).resolve() for i, p in
                          train.drop_duplicates("identity")[["identity", "path"]].itertuples(index=False)}
    png = next(p for p in references.values() if p.suffix == ".png")
    assert _thumbnail(png) is not None


def test_generic_export_names_the_new_individual_label(generic_run, tmp_path):
    assert main(["export", str(generic_run), "--out", str(tmp_path / "model.keras")]) == 0
    described = json.loads((tmp_path / "model.export.json").read_text())
    assert described["new_label"] == NEW_INDIVIDUAL


def write_generic(root: Path, text: str, images: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "metadata.csv").write_text(text, encoding="utf-8")
    for path, kind in images.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        if kind == "text":
            (root / path).write_text("not a photo")
        else:
            Image.new("RGB", (8, 8), (90, 60, 30)).save(root / path, kind)
    return root


def test_bad_generic_metadata_lists_every_problem_with_its_line(tmp_path):
    text = ("image_id,path,identity,viewpoint,date,encounter,split\n"
            "a1,photos/a1.jpg,ann,top,2022-01-03,e1,train\n"      # line 2: fine
            "a1,photos/a2.jpg,ann,,,,\n"                           # 3: duplicate image_id
            "a/3,photos/a3.jpg,ann,,,,\n"                          # 4: unsafe id
            "a4,../a4.jpg,ann,,,,\n"                               # 5: escapes the folder
            "a5,photos/a5.gif,ann,,,,\n"                           # 6: not a photo extension
            "a6,photos/a6.png,,,,,train\n"                         # 7: train row without identity
            "a7,photos/a7.jpg,bob,,31/12/2022,,\n"                 # 8: date not ISO
            "a8,photos/a8.jpg,new_individual,,,,\n"                # 9: reserved label
            "a9,photos/a9.jpg,bob,,,e1,\n"                         # 10: encounter e1 holds ann and bob
            "a10,photos/missing.jpg,bob,,,,\n"                     # 11: photo missing
            "a11,photos/a11.png,bob,,,,validation\n"               # 12: unknown split
            "a12,photos/a12.webp,,,,,test\n"                       # 13: fine: unknown individual in test
            "a13,photos/a13.jpg,cy,,,,\n")                         # 14: not a photo
    root = write_generic(tmp_path / "d", text, {
        "photos/a1.jpg": "JPEG", "photos/a2.jpg": "JPEG", "photos/a3.jpg": "JPEG", "photos/a6.png": "PNG",
        "photos/a7.jpg": "JPEG", "photos/a8.jpg": "JPEG", "photos/a9.jpg": "JPEG", "photos/a11.png": "PNG",
        "photos/a12.webp": "WEBP", "photos/a13.jpg": "text"})
    with pytest.raises(ValidationError) as err:
        load_generic(root)
    lines = str(err.value).splitlines()
    file = str(root / "metadata.csv")
    expected = [(3, "duplicate image_id 'a1' (first on line 2)"), (4, "image_id 'a/3' contains a path separator"),
                (5, "path '../a4.jpg' contains '..'"), (6, "does not end in a photo extension"),
                (7, "identity '' is empty (train rows need one)"), (8, "date '31/12/2022' is not a YYYY-MM-DD"),
                (9, "identity 'new_individual' is reserved"), (2, "encounter 'e1' holds several identities"),
                (11, "image photos/missing.jpg: file is missing"), (12, "split 'validation' is not train, test"),
                (14, "image photos/a13.jpg: is not a photo")]
    for line, reason in expected:
        assert any(f"{file} line {line}: " in text and reason in text for text in lines), (line, reason, lines)
    assert not any(f"line {n}:" in text for text in lines for n in (13,)), lines
    assert len(lines) == 1 + len(expected)


def test_generic_header_and_formats(tmp_path):
    root = write_generic(tmp_path / "d", "image_id,identity,path\nx,ann,x.jpg\n", {"x.jpg": "JPEG"})
    with pytest.raises(ValidationError, match="line 1: the header is image_id,identity,path"):
        load_generic(root)
    root = write_generic(tmp_path / "e", "image_id,path,identity,split,date\nx,X.JPEG,ann,,\ny,sub/Y.TIF,bob,,\n",
                         {"X.JPEG": "JPEG", "sub/Y.TIF": "TIFF"})
    with pytest.raises(ValidationError, match="in this order"):
        load_generic(root)
    (root / "metadata.csv").write_text("image_id,path,identity,date,split\nx,X.JPEG,ann,,\ny,sub/Y.TIF,bob,,\n")
    data = load_generic(root)   # any letter case, TIFF too; absent columns read as empty, split as train
    assert data.classes == ["ann", "bob"] and data.table["split"].tolist() == ["train", "train"]
    assert data.table["viewpoint"].tolist() == ["", ""] and detect_task(root).name == "generic"


SOURCES = REPO / "src" / "photoid"
# A comparison with a task's name: `task == "whales"`, `cfg.task != 'turtles'`, `"generic" == task`, `in ("whales", ...)`.
TASK_BRANCH = re.compile(r"""(task\s*[!=]=|[!=]=\s*\S*task\b|\btask\s+(not\s+)?in\s*[(\[{]|["'](turtles|whales|generic)["']\s*[!=]=|[!=]=\s*["'](turtles|whales|generic)["'])""")


def test_nothing_outside_the_task_registry_branches_on_the_task():
    found = [f"{path.relative_to(SOURCES)}:{n}: {line.strip()}"
             for path in sorted(SOURCES.rglob("*.py")) if "tasks" not in path.relative_to(SOURCES).parts
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
             if TASK_BRANCH.search(line)]
    assert found == []
    assert TASK_BRANCH.search('if cfg.task == "whales":') and TASK_BRANCH.search("x = 'turtles' != name")
    assert set(TASKS) == {"turtles", "whales", "generic"}
    from photoid.runs.config import TASK_NAMES  # the configuration's list of task names, below the registry

    assert list(TASKS) == list(TASK_NAMES)


def test_a_folder_without_test_photos_trains_with_the_default_job(tmp_path, capsys):
    # The default job names test and subm; records of a generic folder without split=test rows have no test set.
    from photoid.runs.config import Config
    from photoid.core.io import write_json
    from photoid.records.reader import open_records
    from photoid.training.kfold import _without_missing_test_set

    write_json(tmp_path / "records.json", {"settings": {"dataset": "generic", "has_test": False}, "shards": {}})
    cfg = _without_missing_test_set(Config(data_tfrec_dir=str(tmp_path), task="generic"), open_records(str(tmp_path)))
    assert cfg.job == "train_val_score" and "holds no test photos" in capsys.readouterr().out
    with pytest.raises(PhotoidError, match="needs test photos"):
        _without_missing_test_set(Config(data_tfrec_dir=str(tmp_path), task="generic", job="test"),
                                  open_records(str(tmp_path)))
    write_json(tmp_path / "records.json", {"settings": {"dataset": "generic", "has_test": True}, "shards": {}})
    assert _without_missing_test_set(Config(data_tfrec_dir=str(tmp_path), task="generic"),
                                     open_records(str(tmp_path))).job == Config.job


def test_a_catalogue_of_runs_trained_on_some_views_holds_only_those_views(whale_run, beluga_dir, tmp_path):
    from photoid.core import io as pio
    from photoid.catalog.build import build_catalog

    top_run = tmp_path / "top-run"  # the session's whale run, as if its recipe had trained on top photos only
    shutil.copytree(whale_run, top_run)
    config = pio.read_json(top_run / "config.json")
    pio.write_json(top_run / "config.json", {**config, "views": "top"})
    catalog = build_catalog([str(top_run)], beluga_dir, tmp_path / "catalog", folds=[0])
    assert len(catalog.table) and set(catalog.table["viewpoint"]) == {"top"}
