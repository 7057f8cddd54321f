"""Surveys without a browser: import (folder, mapped CSV), the resumable batch job and its kill, the queue's filters
and claims, quality control's logged transactions, export, and the candidates' numbers against `identify`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from photoid.catalog import decisions
from photoid.catalog.build import read_catalog
from photoid.catalog.calibrate import calibrated_probability, probability_model
from photoid.catalog.identify import load_catalog_embedder
from photoid.catalog.openset import TopCandidates, catalogue_scores
from photoid.catalog.quality import individual_quality
from photoid.catalog.store import catalog_transaction
from photoid.cli import main
from photoid.core.errors import PhotoidError
from photoid.survey.importer import import_csv, import_folder, parse_columns
from photoid.survey.job import embedder_features, identify_survey, job_status
from photoid.survey.matching import Scorer
from photoid.survey.queue import Claims, Filters, build_rows, select
from photoid.survey.store import Survey


def copy_with_viewpoints(source, path):
    """A copy of a catalogue whose photos are top and left views, alternately (the match view filters by them)."""
    shutil.copytree(source, path)
    with catalog_transaction(path) as tx:
        table = tx.catalog.table.copy()
        table["viewpoint"] = np.where(np.arange(len(table)) % 2, "left", "top")
        tx.commit(tx.catalog.manifest, table, tx.catalog.embeddings)
    return path


@pytest.fixture(scope="module")
def catalog_copy(serve_catalog, tmp_path_factory):
    """A copy of the session's calibrated catalogue whose photos have viewpoints."""
    return copy_with_viewpoints(serve_catalog.path, tmp_path_factory.mktemp("survey") / "catalog")


@pytest.fixture
def own_catalog(catalog_copy, tmp_path):
    """A test's own copy of the catalogue, without the surveys of other tests (whose photos would be duplicates)."""
    path = tmp_path / "own-catalog"
    shutil.copytree(catalog_copy, path, ignore=shutil.ignore_patterns("surveys"))
    return path


@pytest.fixture(scope="module")
def embedder(catalog_copy):
    return load_catalog_embedder(read_catalog(catalog_copy))


@pytest.fixture(scope="module")
def scorer(embedder):
    return Scorer.from_embedder(embedder)


def test_images(turtle_dir) -> pd.DataFrame:
    return pd.read_csv(turtle_dir / "test.csv", dtype=str)


test_images.__test__ = False


def survey_folder(turtle_dir, root, n: int = 8):
    """n test photos in two station folders, plus a truncated JPEG, a text file, an empty file, a FIFO (which
    would block a reader forever) and a byte-identical copy."""
    ids = test_images(turtle_dir)["image_id"].head(n)
    for i, image_id in enumerate(ids):
        (root / f"station{i % 2 + 1}").mkdir(parents=True, exist_ok=True)
        shutil.copy(turtle_dir / "images" / f"{image_id}.JPG", root / f"station{i % 2 + 1}" / f"{image_id}.JPG")
    broken = root / "broken"
    broken.mkdir()
    whole = (turtle_dir / "images" / f"{ids.iloc[0]}.JPG").read_bytes()
    (broken / "truncated.jpg").write_bytes(whole[:len(whole) // 2])
    (broken / "notes.jpg").write_text("not a photo")
    (broken / "empty.jpg").write_bytes(b"")
    os.mkfifo(broken / "pipe.jpg")
    shutil.copy(turtle_dir / "images" / f"{ids.iloc[0]}.JPG", broken / "copy.JPG")
    return list(ids)


def test_a_folder_import_lists_every_unreadable_photo_and_duplicate_and_never_stalls(own_catalog, turtle_dir,
                                                                                    tmp_path, capsys):
    ids = survey_folder(turtle_dir, tmp_path / "season")
    started = time.monotonic()
    assert main(["survey", "import", "--catalog", str(own_catalog), "--name", "folder-test", "--folder",
                 str(tmp_path / "season")]) == 0
    assert time.monotonic() - started < 30  # the FIFO was not read
    printed = capsys.readouterr().out
    assert "survey folder-test: 8 photo(s) added" in printed and "4 refused" in printed
    assert "broken/truncated.jpg: JPEG is truncated or damaged" in printed
    assert "broken/notes.jpg: is not a photo" in printed and "broken/empty.jpg: file is empty" in printed
    assert "broken/pipe.jpg: is not a file" in printed
    assert f"station1/{ids[0]}.JPG: broken/copy.JPG (p" in printed  # the first in name order is kept
    survey = Survey(own_catalog, "folder-test")
    photos = survey.photos().set_index("file_name")
    assert photos.loc[f"station2/{ids[1]}.JPG", "station"] == "station2"
    assert photos["status"].value_counts().to_dict() == {"ok": 8, "refused": 4, "duplicate": 1}
    assert photos.loc["broken/copy.JPG", "sha256"] == photos.loc[f"station1/{ids[0]}.JPG", "sha256"]
    # Imported again (into another survey of the catalogue): every photo is recognised by its bytes.
    report = import_folder(own_catalog, "again", tmp_path / "season" / "station1")
    assert report.added == 0 and len(report.duplicates) == 4
    assert all("of survey folder-test" in of for _, of in report.duplicates)
    with pytest.raises(PhotoidError, match="survey name"):
        import_folder(own_catalog, "../escape", tmp_path / "season")


def test_a_csv_import_maps_its_columns_and_refuses_bad_metadata_line_by_line(own_catalog, turtle_dir, tmp_path):
    table = test_images(turtle_dir).head(6)
    rows = pd.DataFrame({"file": [f"../data-link/{i}.JPG" for i in table["image_id"]],
                         "when": ["2024-05-0%d 10:00:00" % (i + 1) for i in range(6)],
                         "site": ["A", "A", "B", "B", "C", "C"], "view": table["image_location"].str.lower(),
                         "known": ["", "t1", "", "", "", ""], "note": ["", "", "scar", "", "", ""]})
    (tmp_path / "data-link").symlink_to(turtle_dir / "images")
    (tmp_path / "sheets").mkdir()
    rows.to_csv(tmp_path / "sheets" / "survey.csv", index=False)
    columns = parse_columns("path=file,date=when,station=site,viewpoint=view,individual=known,comment=note")
    report = import_csv(own_catalog, "csv-test", tmp_path / "sheets" / "survey.csv", columns)
    assert report.added == 6 and not report.refused
    photos = Survey(own_catalog, "csv-test").photos()
    assert photos["station"].tolist() == rows["site"].tolist() and photos["date"].iloc[2] == "2024-05-03 10:00:00"
    assert photos["viewpoint"].tolist() == rows["view"].tolist() and photos["comment"].iloc[2] == "scar"
    assert photos["individual"].iloc[1] == "t1"
    bad = rows.copy()
    bad.loc[1, "when"], bad.loc[3, "view"] = "yesterday", "sideways"
    bad.to_csv(tmp_path / "sheets" / "bad.csv", index=False)
    with pytest.raises(PhotoidError) as refused:
        import_csv(own_catalog, "csv-bad", tmp_path / "sheets" / "bad.csv", columns)
    message = str(refused.value)
    assert "bad.csv line 3: date 'yesterday' is not a date" in message
    assert "bad.csv line 5: viewpoint 'sideways' is not one of top, left, right" in message
    assert not (own_catalog / "surveys" / "csv-bad").exists()  # nothing written
    with pytest.raises(PhotoidError, match="missing column 'nope'"):
        import_csv(own_catalog, "csv-bad", tmp_path / "sheets" / "survey.csv", parse_columns("path=nope"))
    with pytest.raises(PhotoidError, match="unknown field 'place'"):
        parse_columns("path=file,place=site")


def test_the_batch_job_resumes_where_it_stopped_with_the_answers_of_a_whole_run(own_catalog, turtle_dir, tmp_path,
                                                                                 embedder, scorer):
    survey_folder(turtle_dir, tmp_path / "season", n=10)
    import_folder(own_catalog, "resume", tmp_path / "season")
    features = embedder_features(embedder, 4)
    calls = []

    def failing(paths, viewpoints):  # the machine dies during the third batch
        calls.append(paths)
        if len(calls) == 3:
            raise RuntimeError("power cut")
        return features(paths, viewpoints)

    with pytest.raises(RuntimeError, match="power cut"):
        identify_survey(own_catalog, "resume", failing, scorer, batch_size=3)
    survey = Survey(own_catalog, "resume")
    status = job_status(survey)
    assert (status["state"], status["done"], status["total"]) == ("failed", 6, 10)
    assert "power cut" in status["error"]
    seen = []
    finished = identify_survey(own_catalog, "resume", lambda p, v: seen.append(p) or features(p, v), scorer,
                               batch_size=3, progress=lambda done, total: None)
    assert finished["state"] == "done" and finished["done"] == 10
    assert sum(len(p) for p in seen) == 4  # only the photos without an answer were sent again
    results = survey.results()
    ok = (survey.photos()["status"] == "ok").to_numpy()
    # The same answers as identifying every photo at once with `photoid identify --catalog`'s function.
    paths = survey.photos().loc[ok, "path"].tolist()
    answers = features(paths, None)
    expected = np.stack([a[0] for a in answers])
    assert np.allclose(results.embeddings[ok], expected, atol=1e-5)
    labels, scores, _ = scorer.candidates(read_catalog(own_catalog), expected, np.stack([a[1] for a in answers]))
    assert (results.labels[ok] == labels).all() and np.allclose(results.scores[ok], scores, atol=1e-5)
    # One job per survey at a time: a second one is refused while the first holds the lock.
    from photoid.survey.job import job_lock

    with job_lock(survey.path), pytest.raises(PhotoidError, match="being identified already"):
        identify_survey(own_catalog, "resume", features, scorer)


@pytest.mark.slow
def test_a_killed_batch_job_keeps_its_finished_batches_and_resumes(own_catalog, turtle_dir, tmp_path, cli_env):
    """`photoid survey identify` killed with SIGKILL mid-way, then run again: nothing half-written, nothing redone."""
    folder = tmp_path / "season"
    folder.mkdir()
    source = sorted((turtle_dir / "images").glob("*.JPG"))[:60]
    for image in source:
        shutil.copy(image, folder / image.name)
    import_folder(own_catalog, "killed", folder)
    survey = Survey(own_catalog, "killed")
    command = [sys.executable, "-c", "import sys; from photoid.cli import main; sys.exit(main())", "survey",
               "identify", "--catalog", str(own_catalog), "--name", "killed", "--batch_size", "1"]
    job = subprocess.Popen(command, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while (survey.job() or {}).get("done", 0) < 3:
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()
        time.sleep(0.01)
    job.send_signal(signal.SIGKILL)
    job.wait()
    status = job_status(survey)
    assert status["state"] == "interrupted" and 3 <= status["done"] < 60
    killed_at = survey.results().done.sum()
    resumed = subprocess.run(command, env=cli_env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"60 of 60 photos identified ({killed_at} were identified before)" in resumed.stdout
    assert "identifying survey killed" in resumed.stderr  # tqdm's bar
    results = survey.results()
    assert results.done.all() and (results.errors == "").all()
    chunks = sorted((survey.path / "results").glob("chunk-*.npz"))
    rows = np.concatenate([np.load(c)["rows"] for c in chunks])
    assert sorted(rows) == list(range(60))  # every photo answered exactly once
    assert not list((survey.path / "results").glob(".*"))


def decide_some(catalog_path, survey, reviewer, scorer, picks):
    """Decisions as the page makes them: {row index: (decision, individual)}."""
    results = survey.results()
    photos = survey.photos()
    for index, (decision, individual) in picks.items():
        labels, scores, threshold = scorer.candidates(read_catalog(catalog_path), results.embeddings[[index]],
                                                      results.probabilities[[index]])
        photo = decisions.Photo(photos["sha256"].iloc[index], Path(photos["path"].iloc[index]),
                                photos["file_name"].iloc[index], list(labels[0]), list(scores[0]), threshold)
        if individual is None:  # the best known candidate shown
            individual = next(label for label in labels[0] if label and label != scorer.new_label)
        decisions.decide(catalog_path, photo, decision, individual,
                         results.embeddings[index] if decision != "skip" else None,
                         reviewer=reviewer, survey=survey.name)


@pytest.fixture(scope="module")
def queue_survey(catalog_copy, turtle_dir, tmp_path_factory, embedder, scorer):
    """8 test photos imported from a CSV (dates, stations A/B, top and left views), identified, 3 decided by ann
    (confirm, new, skip) and one favourite."""
    table = test_images(turtle_dir).head(8)
    sheet = tmp_path_factory.mktemp("queue") / "q.csv"
    pd.DataFrame({"file": [str(turtle_dir / "images" / f"{i}.JPG") for i in table["image_id"]],
                  "date": [f"2024-06-{d:02d}" for d in range(1, 9)], "station": list("AABBAABB"),
                  "view": ["top", "left"] * 4}).to_csv(sheet, index=False)
    import_csv(catalog_copy, "queue", sheet, parse_columns("path=file,date=date,station=station,viewpoint=view"))
    identify_survey(catalog_copy, "queue", embedder_features(embedder), scorer)
    survey = Survey(catalog_copy, "queue")
    decide_some(catalog_copy, survey, "ann", scorer, {0: ("confirm", None), 1: ("new", "queue-new-1"),
                                                      2: ("skip", "")})
    survey.set_favourite("p000004", True)
    log = decisions.read_log(read_catalog(catalog_copy))
    return survey, log["individual_id"].iloc[0]


def test_the_queue_filters_orders_and_hands_each_reviewer_their_own_photo(catalog_copy, queue_survey, scorer):
    survey, known = queue_survey

    def rows():
        catalog = read_catalog(catalog_copy)
        return build_rows(survey.photos(), survey.results(), decisions.read_log(catalog),
                          dict(zip(catalog.table["image_id"], catalog.table["individual_id"])), survey.favourites(),
                          scorer.new_label)

    def ids(**query):
        return [r.photo_id for r in select(rows(), Filters.from_query(query), scorer.new_label)]

    everything = rows()
    assert [r.state for r in everything[:3]] == ["confirmed", "new", "undecided"]
    assert everything[0].individual == known and everything[0].decided_by == "ann"
    assert everything[2].skipped_by == {"ann"}
    assert ids(station="A") == ["p000001", "p000002", "p000005", "p000006"]
    assert ids(date_from="2024-06-03", date_to="2024-06-05") == ["p000003", "p000004", "p000005"]
    assert ids(viewpoint="left", undecided="1") == ["p000004", "p000006", "p000008"]
    assert ids(favourites="1") == ["p000004"]
    new_verdicts = [r.photo_id for r in everything if r.verdict == scorer.new_label]
    assert ids(new="1") == new_verdicts
    by_confidence = ids(sort="confidence")
    confidences = {r.photo_id: r.confidence for r in everything}
    assert [confidences[i] for i in by_confidence] == sorted(confidences.values(), reverse=True)
    assert ids(sort="confidence_low") == by_confidence[::-1]
    # Filters live in the URL: an unusable value is dropped, the rest round-trips.
    filters = Filters.from_query({"station": "A", "date_from": "June", "undecided": "1", "sort": "drop table"})
    assert filters.query() == "station=A&undecided=1"
    assert Filters.from_query(dict(pair.split("=") for pair in filters.query().split("&"))) == filters

    # Claims: two reviewers are never handed the same photo; a claim expires; a skipper is not handed it again.
    now = [0.0]
    claims = Claims(seconds=60, clock=lambda: now[0])
    open_rows = select(rows(), Filters(), scorer.new_label)
    first, second = claims.next_for("queue", open_rows, "bob"), claims.next_for("queue", open_rows, "cy")
    assert first.photo_id != second.photo_id and first.state == second.state == "undecided"
    assert claims.next_for("queue", open_rows, "bob").photo_id == first.photo_id  # still bob's
    assert claims.next_for("queue", open_rows, "ann").photo_id not in (first.photo_id, second.photo_id, "p000003")
    assert claims.holder("queue", first.photo_id) == "bob" and not claims.claim("queue", first.photo_id, "cy")
    now[0] = 61.0  # bob walked away
    assert claims.holder("queue", first.photo_id) is None and claims.claim("queue", first.photo_id, "cy")


def test_quality_control_moves_merges_and_splits_as_logged_undoable_transactions(own_catalog):
    path = own_catalog
    before = read_catalog(path)
    names = before.table["individual_id"].value_counts()
    a, b, c = names.index[:3]
    quality = individual_quality(before, a, threshold=0.5)
    assert len(quality) == names[a] and [q.own for q in quality] == sorted(q.own for q in quality)
    # A photo relabelled as an individual it resembles less than any of that individual's own photos do is
    # flagged first, with the one it resembles most. (The tiny model's photos are all alike, cosines 0.9995 and
    # more: the pair is chosen by that margin, the widest one, rather than hoped for.)
    names_sorted, codes = before.individuals()
    every = np.arange(len(before.table))
    scores = catalogue_scores(before.embeddings, before.embeddings, codes, len(names_sorted), before.blocks(),
                              exclude=every, backend="numpy")
    own = scores[every, codes]
    worst_own = np.array([own[codes == k].min() for k in range(len(names_sorted))])
    margin = np.where(np.isfinite(scores), worst_own[None, :] - scores, -np.inf)
    margin[every, codes] = -np.inf  # a photo's own individual is no place to plant it
    planted, target = np.unravel_index(int(np.argmax(margin)), margin.shape)
    assert margin[planted, target] > 0
    planted, least = int(planted), names_sorted[int(target)]
    wrong = before.table.copy()
    wrong.loc[planted, "individual_id"] = least
    mislabelled = individual_quality(type(before)(path, before.manifest, wrong, before.parts), least)
    flagged = {q.image_id: q for q in mislabelled}[wrong.loc[planted, "image_id"]]
    assert flagged.outlier and flagged.best_other_score > flagged.own and flagged is mislabelled[0]

    photo = before.table.loc[before.table["individual_id"] == a, "image_id"].iloc[0]
    _, moved = decisions.move_photos(path, [photo], b, reviewer="ann", shown=[(a, 0.9), (b, 0.95)],
                                     expected_from=a)
    assert read_catalog(path).table.set_index("image_id").loc[photo, "individual_id"] == b
    assert (moved["decision"], moved["previous_id"], moved["reviewer"]) == ("move", a, "ann")
    assert json.loads(moved["candidates"]) == [[a, 0.9], [b, 0.95]]
    with pytest.raises(PhotoidError, match="no longer"):
        decisions.move_photos(path, [photo], a, expected_from=a)  # the page was stale
    _, merged = decisions.merge_individuals(path, b, c, reviewer="bo")
    assert b not in set(read_catalog(path).table["individual_id"])
    # The move cannot be undone while the merge that followed it holds its photo; undoing the merge first works.
    with pytest.raises(PhotoidError, match=f"undo decision {merged['decision_id']} first"):
        decisions.undo(path, moved["decision_id"])
    decisions.undo(path, merged["decision_id"], reviewer="bo")
    decisions.undo(path, latest_of="ann", reviewer="ann")
    assert read_catalog(path).table.equals(before.table)
    part = before.table.loc[before.table["individual_id"] == a, "image_id"].tolist()[:2]
    _, split = decisions.move_photos(path, part, "a-split", decision="split", reviewer="cy")
    assert sorted(read_catalog(path).table.loc[lambda t: t["individual_id"] == "a-split", "image_id"]) == sorted(part)
    with pytest.raises(PhotoidError, match="a split moves some"):
        decisions.move_photos(path, part, b, decision="split")  # b exists: that is a move
    with pytest.raises(PhotoidError, match="a merge moves every photo"):
        decisions.move_photos(path, part, "nobody", decision="merge")
    decisions.undo(path, split["decision_id"])
    after = read_catalog(path)
    assert after.table.equals(before.table) and np.array_equal(after.embeddings, before.embeddings)
    log = decisions.read_log(after)
    assert log["decision"].tolist()[-6:] == ["move", "merge", "undo", "undo", "split", "undo"]
    assert log["reviewer"].tolist()[-6:-2] == ["ann", "bo", "bo", "ann"]


def test_export_writes_the_sightings_and_the_surveys_decisions(catalog_copy, queue_survey, tmp_path, capsys):
    survey, _ = queue_survey
    out, log_out = tmp_path / "sightings.csv", tmp_path / "decisions.csv"
    assert main(["survey", "export", "--catalog", str(catalog_copy), "--name", "queue", "--out", str(out),
                 "--decisions", str(log_out)]) == 0
    assert "wrote 8 sightings" in capsys.readouterr().out
    sightings = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert sightings.columns.tolist()[:11] == ["photo_id", "file_name", "individual_id", "state", "date", "station",
                                               "survey", "viewpoint", "decided_by", "decided_at", "score"]
    assert sightings["state"].tolist()[:3] == ["confirmed", "new", "undecided"]
    assert sightings["individual_id"].iloc[1] == "queue-new-1" and sightings["decided_by"].iloc[0] == "ann"
    log = pd.read_csv(log_out, dtype=str, keep_default_na=False)
    assert log["decision"].tolist() == ["confirm", "new", "skip"] and set(log["survey"]) == {"queue"}
    shown = json.loads(log["candidates"].iloc[0])
    assert float(sightings["score"].iloc[0]) == pytest.approx(dict(shown)[sightings["individual_id"].iloc[0]])
    assert len(sightings) == int((survey.photos()["status"] == "ok").sum())


def test_the_match_views_numbers_are_identify_catalogs(catalog_copy, turtle_dir, scorer, embedder, capsys):
    catalog = read_catalog(catalog_copy)
    photo = turtle_dir / "images" / f"{test_images(turtle_dir)['image_id'].iloc[0]}.JPG"
    embedding, probabilities, _ = embedder_features(embedder)([str(photo)], None)[0]
    candidates, threshold = scorer.match(catalog, embedding, probabilities, top=7)
    # The match view ranks by the catalogue's global score (a survey's batch job keeps embeddings, not local
    # features): `identify --no-local`, where the catalogue's calibration would also fuse local matching.
    assert main(["identify", str(photo), "--catalog", str(catalog_copy), "--json", "--top", "7", "--no-local"]) == 0
    expected = json.loads(capsys.readouterr().out)["results"][0]["candidates"]
    assert [(c.label, round(c.score, 6)) for c in candidates] == [(c["label"], round(c["probability"], 6))
                                                                  for c in expected]
    assert threshold == pytest.approx(catalog.calibration["threshold"])
    known = [c for c in candidates if not c.new]
    assert all(0 <= c.probability <= 1 and c.distance == pytest.approx(c.photos[0][1], abs=1e-6) for c in known)
    # The best-scoring individual is the most probable; its closest photo is at its reported distance.
    assert max(known, key=lambda c: c.score).probability == max(c.probability for c in known)
    rows = catalog.table.index[catalog.table["individual_id"] == known[0].label]
    cosines = [np.mean([np.dot(catalog.embeddings[r, o:o + d] / np.linalg.norm(catalog.embeddings[r, o:o + d]),
                               embedding[o:o + d] / np.linalg.norm(embedding[o:o + d])) for o, d in catalog.blocks()])
               for r in rows]
    assert known[0].distance == pytest.approx(1 - max(cosines), abs=1e-5)
    # Fewer candidates and another threshold, recomputed: a threshold above every score makes the photo new.
    fewer, _ = scorer.match(catalog, embedding, probabilities, top=2, threshold=2.0)
    assert len(fewer) == 2 and fewer[0].new and 0 <= fewer[0].probability <= 1
    # Only the catalogue's left views: every candidate photo is a left view.
    left, _ = scorer.match(catalog, embedding, probabilities, viewpoint="left")
    views = dict(zip(catalog.table["image_id"], catalog.table["viewpoint"]))
    assert left and {views[i] for c in left for i, _ in c.photos} == {"left"}
    assert scorer.match(catalog, embedding, probabilities, viewpoint="right")[0] == []


def test_calibration_fits_probabilities_that_rise_with_the_score(serve_catalog):
    calibration = serve_catalog.calibration
    model = calibration["probability"]
    assert model["blend_weight"] == calibration["blend_weight"] and model["match"]["n"] > 0
    scores = np.linspace(0, 1, 11)
    p_match = calibrated_probability(calibration, scores, "match", calibration["blend_weight"])
    p_new = calibrated_probability(calibration, scores, "new", calibration["blend_weight"])
    assert (np.diff(p_match) >= 0).all() and (np.diff(p_new) <= 0).all()
    assert ((0 <= p_match) & (p_match <= 1)).all()
    # At another blend weight the fit does not hold: no probability rather than a wrong one.
    assert calibrated_probability(calibration, scores, "match", calibration["blend_weight"] + 0.5) is None
    # On scores that tell the truth apart, the fit rises with the score and matches the observed frequencies.
    rng = np.random.default_rng(0)
    n = 4000
    truth_score = rng.uniform(0.3, 1.0, n)
    others = np.sort(rng.uniform(0.0, 0.8, (n, 5)), axis=1)[:, ::-1]
    is_new = rng.random(n) < 0.3
    top = np.where(is_new[:, None], others, np.sort(np.column_stack([truth_score, others[:, :4]]), axis=1)[:, ::-1])
    rank = np.where(is_new, 0, 1 + (top > truth_score[:, None]).sum(axis=1))
    fitted = probability_model(TopCandidates(top.astype(np.float32), rank, np.where(is_new, -np.inf, truth_score),
                                             is_new, np.full(n, -np.inf)), 0.0)
    assert fitted["match"]["slope"] > 0 and fitted["new"]["slope"] < 0
    predicted = calibrated_probability({"probability": fitted}, top, "match", 0.0)
    is_truth = rank[:, None] == np.arange(1, 6)[None, :]
    assert abs(predicted.mean() - is_truth.mean()) < 0.01  # as often right as it says, on average
    high = top > 0.8  # only true individuals score above 0.8 here
    assert predicted[high].mean() > 2 * predicted[~high].mean()


def test_people_deciding_at_once_on_one_photo_add_it_once_and_name_who_did(catalog_copy, queue_survey, tmp_path,
                                                                          scorer):
    path = tmp_path / "race"
    shutil.copytree(catalog_copy, path)
    survey = Survey(path, "queue")
    index = 3
    known = read_catalog(path).table["individual_id"].iloc[0]
    outcomes = []

    def reviewer(name):
        try:
            decide_some(path, survey, name, scorer, {index: ("confirm", known)})
            outcomes.append(("ok", name))
        except PhotoidError as err:
            outcomes.append(("refused", str(err)))

    threads = [threading.Thread(target=reviewer, args=(f"r{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(o[0] for o in outcomes) == ["ok"] + ["refused"] * 7
    winner = next(name for kind, name in outcomes if kind == "ok")
    assert all(f"by {winner}" in message for kind, message in outcomes if kind == "refused")
    assert int((read_catalog(path).table["image_id"] == decisions.image_id_for(
        survey.photos()["sha256"].iloc[index])).sum()) == 1
