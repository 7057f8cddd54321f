"""`photoid identify` on the session's tiny trained run: same probabilities as the batch predictions, the
new_turtle rule, unreadable photos, output formats, the gallery, and runs that cannot be averaged."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from photoid.cli import main
from photoid.inference.gallery import HEADER_PX, IMAGE_PX, ROW_HEIGHT_PX, TILE_WIDTH_PX, TITLE_PX
from photoid.inference.identify import ensemble_from_runs, identify_paths, predict_paths
from photoid.core.metrics import NEW_TURTLE
from photoid.runs.loaded import load_run


@pytest.fixture(scope="module")
def run_info(trained_run):
    return load_run(trained_run)


@pytest.fixture(scope="module")
def test_photos(trained_run, turtle_dir) -> list[str]:
    """The test photos in the order of the run's test prediction files."""
    manifest = json.loads((trained_run / "preds" / "y_pred_test_fold_0_tta_0.json").read_text())
    return [str(turtle_dir / "images" / f"{image_id}.JPG") for image_id in manifest["row_ids"]]


def batch_predictions(run_dir, folds, ttas) -> np.ndarray:
    files = [run_dir / "preds" / f"y_pred_test_fold_{f}_tta_{t}.npy" for f in folds for t in ttas]
    return np.mean([np.load(f, allow_pickle=False) for f in files], axis=0)


def test_probabilities_equal_the_runs_batch_predictions(run_info, trained_run, test_photos):
    # The whole ensemble (both folds, TTA 0 and 1 as the run predicted), in batches smaller than the photo count.
    ensemble = ensemble_from_runs([run_info])
    assert ensemble.n_predictions == 4
    probs = np.stack([p for _, p, _ in predict_paths(ensemble, test_photos, batch_size=5)])
    np.testing.assert_allclose(probs, batch_predictions(trained_run, [0, 1], [0, 1]), atol=1e-5, rtol=0)
    # One fold and TTA 0 alone: the identity transform, compared file to photo.
    ensemble = ensemble_from_runs([run_info], folds=[1], tta=0)
    probs = np.stack([p for _, p, _ in predict_paths(ensemble, test_photos)])
    np.testing.assert_allclose(probs, batch_predictions(trained_run, [1], [0]), atol=1e-5, rtol=0)


def test_candidates_follow_the_probabilities_and_the_new_turtle_rule(run_info, test_photos):
    ensemble = ensemble_from_runs([run_info])
    originals = set(run_info.original_ids)
    results = list(identify_paths(ensemble, test_photos, top=5))
    assert [r.path for r in results] == test_photos
    for result in results:
        probs = result.probabilities
        assert probs.shape == (len(run_info.classes),)
        np.testing.assert_allclose(probs.sum(), 1.0, atol=1e-5)
        # The rule, walked by hand: rank all ids, rename the non-original ones, keep the first 5 distinct labels.
        expected = []
        for index in np.argsort(probs)[::-1]:
            label = run_info.classes[index] if run_info.classes[index] in originals else NEW_TURTLE
            if label not in expected:
                expected.append(label)
        assert result.labels == expected[:5]
        assert result.scores == sorted(result.scores, reverse=True)
        for label, score in zip(result.labels, result.scores):
            if label == NEW_TURTLE:  # the best of the ids a submission cannot name
                others = [i for i, c in enumerate(run_info.classes) if c not in originals]
                assert score == pytest.approx(probs[others].max())
            else:
                assert score == pytest.approx(probs[run_info.classes.index(label)])
    # 8 of the 20 ids are extra-only: an untrained model ranks one of them in the top 5 for most photos.
    assert any(NEW_TURTLE in r.labels for r in results)


def test_models_are_loaded_once_per_call_and_photos_streamed_in_batches(trained_run, test_photos, capsys,
                                                                        monkeypatch):
    loads = []
    from photoid.inference import fold_models as inference

    original = inference.build_fold_model
    monkeypatch.setattr(inference, "build_fold_model",
                        lambda *args, **kwargs: loads.append(kwargs["fold"]) or original(*args, **kwargs))
    assert main(["identify", *test_photos, "--run", str(trained_run), "--batch_size", "4", "--csv"]) == 0
    assert sorted(loads) == [0, 1]
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert table["image"].unique().tolist() == test_photos


def test_unreadable_photos_are_named_and_skipped_with_exit_code_1(trained_run, test_photos, tmp_path, capsys):
    not_a_photo = tmp_path / "notes.JPG"
    not_a_photo.write_text("field notes, not a photo")
    missing = tmp_path / "missing.JPG"
    good = test_photos[:2]
    code = main(["identify", good[0], str(not_a_photo), str(missing), good[1], "--run", str(trained_run), "--json"])
    captured = capsys.readouterr()
    assert code == 1
    assert str(not_a_photo) in captured.err and "not a JPEG" in captured.err
    assert str(missing) in captured.err and "missing" in captured.err
    document = json.loads(captured.out)
    assert [r["image"] for r in document["results"]] == good
    assert {f["image"] for f in document["failed"]} == {str(not_a_photo), str(missing)}


def test_json_and_csv_outputs_agree_and_parse(trained_run, test_photos, capsys):
    photos = test_photos[:3]
    assert main(["identify", *photos, "--run", str(trained_run), "--top", "3", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert main(["identify", *photos, "--run", str(trained_run), "--top", "3", "--csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out), dtype={"label": str})
    assert list(table.columns) == ["image", "rank", "label", "probability"]
    assert len(document["results"]) == 3 and document["failed"] == []
    for result in document["results"]:
        rows = table[table["image"] == result["image"]]
        assert rows["rank"].tolist() == [1, 2, 3] == [c["rank"] for c in result["candidates"]]
        assert rows["label"].tolist() == [c["label"] for c in result["candidates"]]
        np.testing.assert_allclose(rows["probability"], [c["probability"] for c in result["candidates"]], rtol=1e-5)
    assert main(["identify", photos[0], "--run", str(trained_run), "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    ranked = [line.split() for line in lines if line.strip()[:1].isdigit()]
    assert lines[0] == photos[0] and [r[:2] for r in ranked] == [["1", document["results"][0]["candidates"][0]["label"]],
                                                                   ["2", document["results"][0]["candidates"][1]["label"]]]


def test_gallery_has_one_row_per_photo_and_a_column_per_candidate(trained_run, test_photos, tmp_path, capsys):
    out = tmp_path / "gallery.png"
    photos = test_photos[:2]
    assert main(["identify", *photos, "--run", str(trained_run), "--top", "5", "--json", "--gallery", str(out)]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    with Image.open(out) as image:
        # 1 photo column + 5 candidates of 220 px; a 60 px title, then 275 px per row.
        assert image.size == ((1 + 5) * TILE_WIDTH_PX, HEADER_PX + 2 * ROW_HEIGHT_PX) == (1320, 610)
        pixels = np.asarray(image.convert("RGB"))
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    for row, result in enumerate(results):
        for column, candidate in enumerate(result["candidates"], start=1):
            # A pixel just inside the tile's top-left corner: the grey placeholder for new_turtle, else a photo.
            y = HEADER_PX + row * ROW_HEIGHT_PX + TITLE_PX + 8
            x = column * TILE_WIDTH_PX + (TILE_WIDTH_PX - IMAGE_PX) // 2 + 8
            is_grey = bool(np.all(np.abs(pixels[y, x].astype(int) - 209) <= 2))
            assert is_grey == (candidate["label"] == NEW_TURTLE), (row, column, candidate)


def test_runs_with_different_class_lists_are_refused(trained_run, test_photos, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(trained_run, other)
    classes = (other / "classes.txt").read_text().splitlines()
    (other / "classes.txt").write_text("\n".join([classes[1], classes[0], *classes[2:]]) + "\n")
    code = main(["identify", test_photos[0], "--run", str(trained_run), "--run", str(other)])
    assert code == 2
    assert "classes.txt differs" in capsys.readouterr().err


def test_two_runs_average_all_their_models(run_info, test_photos, tmp_path, trained_run):
    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    both = ensemble_from_runs([run_info, load_run(copy)], folds=[0])
    single = ensemble_from_runs([run_info], folds=[0])
    assert len(both.members) == 2 and both.n_predictions == 2 * single.n_predictions
    (_, doubled, _), = predict_paths(both, test_photos[:1])
    (_, alone, _), = predict_paths(single, test_photos[:1])
    np.testing.assert_allclose(doubled, alone, atol=1e-6)  # the mean of a model with itself is that model
