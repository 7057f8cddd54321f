"""Right views of whales, on their own: whale records store them mirrored, so `identify --viewpoint right`,
`catalog build` (the folder's viewpoint column), `catalog add --viewpoint right` and the served page's viewpoint
prepare a single photo exactly as the run's record of it, and the models see what they were trained on.

The record-based outputs come from the run's own reader over its records (`inference.predict_records`), fold 0.
"""

from __future__ import annotations

import csv
import io
import shutil

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def from_records(whale_run, whale_records, beluga_dir):
    """Fold 0's outputs for every record, by image id: probabilities (TTA 0) and the catalogue's embedding (the
    normalised sum over the photo and its flip); with each photo's file and viewpoint."""
    from photoid.inference.fold_models import EMBEDDING_VIEWS, load_fold_models, predict_records, read_record_ids
    from photoid.records.reader import open_records
    from photoid.runs.loaded import load_run

    run = load_run(whale_run)
    model = load_fold_models(run, [0])[0]
    records = open_records(str(whale_records))
    files = records.fold_files([0, 1]) + records.test_files()
    size = dict(dim=run.config.dim, dim_pre=run.config.dim_pre, batch_size=16)
    probs = predict_records(model.predict, files, tta=0, **size)
    summed = sum(predict_records(model.embed, files, tta=view, **size) for view in EMBEDDING_VIEWS)
    embeddings = summed / np.linalg.norm(summed, axis=1, keepdims=True)
    ids = read_record_ids(files)
    metadata = pd.read_csv(beluga_dir / "metadata.csv", dtype=str).set_index("image_id")
    rights = [i for i in dict.fromkeys(ids) if metadata.loc[i, "viewpoint"] == "right"]
    assert rights, "the tiny set's records hold no right view"
    row = {image_id: k for k, image_id in enumerate(ids)}
    return {"run": run, "probs": {i: probs[row[i]] for i in row}, "embeddings": {i: embeddings[row[i]] for i in row},
            "path": {i: str(beluga_dir / metadata.loc[i, "path"]) for i in row}, "rights": rights,
            "viewpoint": metadata["viewpoint"].to_dict()}


def test_a_right_view_identified_alone_gets_its_records_probabilities(from_records, whale_run, capsys):
    from photoid.cli import main
    from photoid.inference.identify import ensemble_from_runs, predict_paths

    from photoid.core import io as pio

    run, rights = from_records["run"], from_records["rights"]
    assert pio.read_json(whale_run / "preprocessing.json")["mirror_right"] is True   # the records' setting
    assert run.preprocessing.mirror_right
    paths = [from_records["path"][i] for i in rights]
    expected = np.stack([from_records["probs"][i] for i in rights])
    ensemble = ensemble_from_runs([run], [0], tta=0)
    mirrored = np.stack([p for _, p, _ in predict_paths(ensemble, paths, viewpoints=["right"] * len(paths))])
    np.testing.assert_allclose(mirrored, expected, atol=1e-5)
    unknown = np.stack([p for _, p, _ in predict_paths(ensemble, paths)])
    assert np.abs(unknown - expected).max() > 1e-3   # not mirrored: not what the model saw in training

    capsys.readouterr()
    assert main(["identify", paths[0], "--run", str(whale_run), "--folds", "0", "--tta", "0", "--top", "3",
                 "--viewpoint", "right", "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    classes = run.classes
    np.testing.assert_allclose([float(r["probability"]) for r in rows],
                               [expected[0][classes.index(r["label"])] for r in rows], rtol=1e-5, atol=1e-6)


def test_turtle_models_refuse_a_viewpoint_and_their_page_asks_none(trained_run, turtle_dir, serve_catalog, capsys):
    """Turtle Recall records never mirror: a viewpoint would change nothing, and whoever gives one expects it to.
    `identify` refuses it before loading models; the page of a turtle catalogue neither asks nor takes one."""
    from starlette.testclient import TestClient

    from photoid.cli import main
    from photoid.runs.loaded import load_run
    from photoid.serve.app import create_app
    from photoid.serve.identifier import Identifier

    assert not load_run(trained_run).preprocessing.mirror_right
    photo = next((turtle_dir / "images").glob("*.JPG"))
    assert main(["identify", str(photo), "--run", str(trained_run), "--viewpoint", "right"]) != 0
    assert "only whale records mirror right views" in capsys.readouterr().err
    client = TestClient(create_app(Identifier(serve_catalog.path, batch_size=4)))
    assert 'name="photos"' in client.get("/").text and 'name="viewpoint"' not in client.get("/").text
    refused = client.post("/identify", data={"viewpoint": "right"},
                          files=[("photos", (photo.name, photo.read_bytes(), "image/jpeg"))])
    assert refused.status_code == 400 and "changes nothing" in refused.text


def test_catalog_build_add_and_serve_mirror_right_views_as_the_records(from_records, whale_run, beluga_dir,
                                                                       tmp_path):
    from starlette.testclient import TestClient

    from photoid.catalog.build import build_catalog, read_catalog
    from photoid.catalog.identify import identify_paths_with_catalog
    from photoid.cli import main
    from photoid.serve.app import create_app
    from photoid.serve.identifier import Identifier

    catalog = build_catalog([str(whale_run)], beluga_dir, tmp_path / "catalog", folds=[0])
    table = catalog.table
    assert table["viewpoint"].tolist() == [from_records["viewpoint"][i] for i in table["image_id"]]
    in_records = [k for k, i in enumerate(table["image_id"]) if i in from_records["embeddings"]]
    right_rows = [k for k in in_records if table["viewpoint"][k] == "right"]
    assert right_rows
    expected = np.stack([from_records["embeddings"][table["image_id"][k]] for k in in_records])
    np.testing.assert_allclose(catalog.embeddings[in_records], expected, atol=1e-5)

    # `catalog add --viewpoint right`: a right view added on its own is embedded as its record.
    image_id = table["image_id"][right_rows[0]]
    copy = tmp_path / "added_right.jpg"
    shutil.copy(from_records["path"][image_id], copy)
    assert main(["catalog", "add", str(copy), "--id", "w_added", "--catalog", str(catalog.path),
                 "--viewpoint", "right"]) == 0
    added = read_catalog(catalog.path)
    assert added.table.iloc[-1][["image_id", "viewpoint"]].tolist() == ["added_right", "right"]
    np.testing.assert_allclose(added.embeddings[-1], from_records["embeddings"][image_id], atol=1e-5)

    # The page asks the viewpoint, identifies with it and adds the photo with it.
    identifier = Identifier(catalog.path, batch_size=4, threshold=0.5)
    client = TestClient(create_app(identifier))
    assert 'name="viewpoint"' in client.get("/").text
    photo = from_records["path"][table["image_id"][right_rows[-1]]]
    data = open(photo, "rb").read()
    answer = client.post("/identify", params={"format": "json"}, data={"viewpoint": "right"},
                         files=[("photos", ("upload.jpg", data, "image/jpeg"))]).json()
    result = answer["results"][0]
    assert result["viewpoint"] == "right"
    direct = next(identify_paths_with_catalog(identifier.catalog, [photo], embedder=identifier.embedder,
                                              threshold=0.5, viewpoints=["right"]))
    assert [c["label"] for c in result["candidates"]] == direct.labels
    np.testing.assert_allclose([c["score"] for c in result["candidates"]], direct.scores, atol=1e-6)
    assert client.post("/decide", data={"review": answer["review"], "photo": result["sha256"], "decision": "new",
                                        "individual_id": "w_served"}, follow_redirects=False).status_code == 303
    served = read_catalog(catalog.path)
    assert served.table.iloc[-1][["individual_id", "viewpoint"]].tolist() == ["w_served", "right"]
    np.testing.assert_allclose(served.embeddings[-1],
                               from_records["embeddings"][table["image_id"][right_rows[-1]]], atol=1e-5)
    assert client.post("/identify", data={"viewpoint": "back"},
                       files=[("photos", ("x.jpg", data, "image/jpeg"))]).status_code == 400


def test_records_and_older_runs_say_whether_right_views_are_mirrored(whale_run, tmp_path):
    """records.json's mirror_right (other tasks' records say nothing); a run whose preprocessing.json predates the
    setting asks its records, else its task's records' default."""
    import json

    from photoid.records.folder import RecordsDir

    def mirror_right(settings):
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        folder.mkdir()
        (folder / "records.json").write_text(json.dumps({"settings": settings}))
        return RecordsDir(folder).mirror_right()

    assert mirror_right({"dataset": "wheres-whale-do", "mirror_right": False}) is False
    assert mirror_right({"dataset": "wheres-whale-do", "mirror_right": True}) is True
    assert mirror_right({"dataset": "turtle-recall"}) is None

    from photoid.core import io as pio
    from photoid.runs.loaded import load_run

    older = tmp_path / "older-run"
    shutil.copytree(whale_run, older)
    settings = pio.read_json(older / "preprocessing.json")
    del settings["mirror_right"]
    pio.write_json(older / "preprocessing.json", settings)
    assert load_run(older).preprocessing.mirror_right   # its records.json says so
    unreadable = tmp_path / "no-records"
    unreadable.mkdir()
    assert not load_run(older, records_dir=str(unreadable)).preprocessing.mirror_right   # records that do not say
    (unreadable / "records.json").write_text(json.dumps({"settings": {"mirror_right": True}}))
    assert load_run(older, records_dir=str(unreadable)).preprocessing.mirror_right
