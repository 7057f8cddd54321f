"""The survey pages of `photoid serve` without a browser (Starlette's test client, and a real server for eight
reviewers at once): import through the page, the batch job, the queue and the match view, decisions with their
reviewer, a restart that loses nothing, reviewer tokens, and the guard on every new address."""

from __future__ import annotations

import io
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request

import pandas as pd
import pytest
from starlette.testclient import TestClient

from photoid.catalog import decisions
from photoid.catalog.build import read_catalog
from photoid.core.errors import PhotoidError
from photoid.serve.app import Limits, create_app
from photoid.serve.identifier import Identifier
from photoid.serve.reviewers import read_reviewer_tokens
from photoid.survey.store import Survey


@pytest.fixture(scope="module")
def identifier(serve_catalog, tmp_path_factory):
    path = tmp_path_factory.mktemp("served-surveys") / "catalog"
    shutil.copytree(serve_catalog.path, path)
    return Identifier(path, batch_size=8)


def photo_files(turtle_dir, start: int, n: int) -> list:
    ids = pd.read_csv(turtle_dir / "test.csv", dtype=str)["image_id"].iloc[start:start + n]
    return [turtle_dir / "images" / f"{i}.JPG" for i in ids]


def reviewer_client(identifier, name: str | None = "ann", **options) -> TestClient:
    client = TestClient(create_app(identifier, **options), raise_server_exceptions=False)
    if name:
        client.cookies.set("photoid_reviewer", name)
    return client


def wait_for_job(client, name: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(f"/surveys/{name}/job").json()
        if status["state"] not in ("running", "not started") or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def upload_survey(client, name: str, photos: list, csv_text: str | None = None, columns: dict | None = None,
                  extra: list | None = None):
    files = [("photos", (f"cam/{p.name}", p.read_bytes(), "image/jpeg")) for p in photos] + (extra or [])
    if csv_text is not None:
        files.append(("csv", ("survey.csv", csv_text.encode(), "text/csv")))
    data = {"name": name, **{f"column_{k}": v for k, v in (columns or {}).items()}}
    return client.post("/surveys/import", params={"format": "json"}, data=data, files=files)


def test_a_survey_imported_in_the_page_is_identified_reviewed_and_survives_a_restart(identifier, turtle_dir,
                                                                                    tmp_path):
    client = reviewer_client(identifier)
    photos = photo_files(turtle_dir, 0, 4)
    secret = tmp_path / "elsewhere.jpg"  # a photo on the server's disk that the CSV names but nobody uploaded
    shutil.copy(photos[0], secret)
    csv_text = "file,site,when\n" + "".join(f"cam/{p.name},{'A' if i < 2 else 'B'},2024-07-0{i + 1}\n"
                                             for i, p in enumerate(photos)) + f"{secret},Z,2024-07-09\n"
    broken = ("photos", ("cam/broken.jpg", photos[1].read_bytes()[:200], "image/jpeg"))
    copy = ("photos", ("cam/copy.jpg", photos[2].read_bytes(), "image/jpeg"))
    report = upload_survey(client, "page", photos, csv_text, {"path": "file", "station": "site", "date": "when"},
                           extra=[broken, copy]).json()
    assert report["added"] == 4 and report["unmatched_rows"] == 1
    assert [r["file_name"] for r in report["refused"]] == ["cam/broken.jpg"]
    assert report["duplicates"] == [{"file_name": "cam/copy.jpg", "of": f"cam/{photos[2].name} (p000003)"}]
    survey = Survey(identifier.path, "page")
    table = survey.photos()
    assert str(secret) not in set(table["path"]) and "Z" not in set(table["station"])  # never read from disk
    assert table.loc[table["status"] == "ok", "station"].tolist() == ["A", "A", "B", "B"]
    assert all(p.startswith(str(identifier.path / "photos")) for p in table.loc[table["status"] == "ok", "path"])

    assert client.post("/surveys/page/identify", follow_redirects=False).status_code == 303
    status = wait_for_job(client, "page")
    assert (status["state"], status["done"], status["total"]) == ("done", 4, 4)
    queue = client.get("/surveys/page", params={"station": "B", "sort": "confidence"}).text
    assert queue.count('class="queue-row') == 2 and "cam/broken.jpg" in queue  # refused files are listed

    nxt = client.get("/surveys/page/next", params={"station": "B"}, follow_redirects=False)
    assert nxt.status_code == 303 and nxt.headers["location"].startswith("/surveys/page/photos/p00000")
    photo_url = nxt.headers["location"].split("?")[0]
    view = client.get(photo_url, params={"station": "B"}).text
    assert view.count('<tr class="candidate') == identifier.top
    recomputed = client.get(photo_url, params={"top": 3, "threshold": 2}).text
    rows = recomputed.split('<tr class="candidate')[1:]
    assert len(rows) == 3 and rows[0].startswith(' new"')  # above every score: a new individual first
    best = client.get(photo_url).text.split('data-new="0"')[0].rsplit('data-label="', 1)[1].split('"')[0]
    decided = client.post(f"{photo_url}/decide", data={"decision": "confirm", "individual_id": best, "top": "",
                                                      "threshold": "", "view": ""}, follow_redirects=False)
    assert decided.status_code == 303
    log = decisions.read_log(read_catalog(identifier.path))
    row = log.iloc[-1]
    assert (row["decision"], row["individual_id"], row["reviewer"], row["survey"]) == ("confirm", best, "ann", "page")
    assert len(pd.read_json(io.StringIO(row["candidates"]))) == identifier.top
    assert client.post(f"{photo_url}/favourite", follow_redirects=False).status_code == 303
    # A single upload of the same minute, to check it too survives.
    single = client.post("/identify", params={"format": "json"},
                         files=[("photos", ("one.jpg", photos[3].read_bytes(), "image/jpeg"))]).json()

    # The server restarts: a new page on the catalogue folder, with the models' memory of results gone.
    identifier.results.clear()
    again = reviewer_client(identifier)
    queue = again.get("/surveys/page").text
    assert "confirmed: " + best in queue and "★" in queue and "4 identified" in queue
    assert again.get(f"/review/{single['review']}").status_code == 200
    kept = again.post("/decide", data={"review": single["review"], "photo": single["results"][0]["sha256"],
                                       "decision": "skip"}, follow_redirects=False)
    assert kept.status_code == 303 and kept.headers["location"].startswith(f"/review/{single['review']}")
    csv = pd.read_csv(io.StringIO(again.get("/surveys/page/sightings.csv").text), dtype=str, keep_default_na=False)
    assert csv.loc[csv["state"] == "confirmed", "decided_by"].tolist() == ["ann"]
    assert pd.read_csv(io.StringIO(again.get("/surveys/page/decisions.csv").text))["decision"].tolist() == ["confirm"]
    # M pressed again: the photo's decision is undone; U undoes ann's last one.
    assert again.post(f"{photo_url}/undo", follow_redirects=False).status_code == 303
    assert decisions.read_log(read_catalog(identifier.path))["decision"].iloc[-1] == "undo"
    assert again.post("/surveys/page/undo", follow_redirects=False).status_code == 303
    log = decisions.read_log(read_catalog(identifier.path))
    skip = log.loc[log["decision"] == "skip", "decision_id"].iloc[-1]
    assert log["undoes"].iloc[-1] == skip and log["reviewer"].iloc[-1] == "ann"  # ann's last: the skip above


def test_the_batch_job_started_in_the_page_stops_and_resumes(identifier, turtle_dir):
    client = reviewer_client(identifier)
    upload_survey(client, "resumed", photo_files(turtle_dir, 4, 6))
    site = client.app.state.site
    site.jobs.batch_size = 2
    stop_after_first = identifier.features

    def slow(paths, viewpoints):
        site.jobs.stop("resumed")  # asked to stop while the first batch is in flight
        return stop_after_first(paths, viewpoints)

    site.jobs.features = slow
    client.post("/surveys/resumed/identify")
    site.jobs.wait("resumed", 60)
    status = client.get("/surveys/resumed/job").json()
    assert (status["state"], status["done"], status["total"]) == ("stopped", 2, 6)
    assert "Resume identification" in client.get("/surveys/resumed").text
    site.jobs.features = identifier.features
    client.post("/surveys/resumed/identify")
    assert wait_for_job(client, "resumed")["done"] == 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_eight_reviewers_at_once_over_http_get_their_own_photos_and_lose_nothing(identifier, turtle_dir):
    import uvicorn

    client = reviewer_client(identifier)
    upload_survey(client, "team", photo_files(turtle_dir, 10, 10))
    client.post("/surveys/team/identify")
    assert wait_for_job(client, "team")["done"] == 10
    before = read_catalog(identifier.path)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(identifier), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    address = f"http://127.0.0.1:{port}"

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)

    def call(url, reviewer, data=None):
        request = urllib.request.Request(address + url, data=data, headers={"Cookie": f"photoid_reviewer={reviewer}"})
        try:
            return opener.open(request, timeout=120)
        except urllib.error.HTTPError as err:  # the 303s
            return err

    handed, errors = {}, []
    ready = threading.Barrier(8)

    def reviewer(i):
        try:
            name = f"r{i}"
            answer = call("/surveys/team/next", name)
            photo = answer.headers["location"].split("/photos/")[1]
            handed[name] = photo
            ready.wait(30)  # every reviewer holds a photo: now all decide at once
            body = {0: "decision=skip", 1: f"decision=new&individual_id=team-new-{i}"}.get(i % 3, "")
            if not body:
                page = call(f"/surveys/team/photos/{photo}", name).read().decode()
                label = page.split('data-new="0"')[0].rsplit('data-label="', 1)[1].split('"')[0]
                body = f"decision=confirm&individual_id={label}"
            decided = call(f"/surveys/team/photos/{photo}/decide", name, data=body.encode())
            assert decided.status == 303, decided.read()[:500]
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=reviewer, args=(i,)) for i in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
    finally:
        server.should_exit = True
        thread.join(30)
    assert errors == []
    assert len(set(handed.values())) == 8  # never the same photo to two reviewers
    after = read_catalog(identifier.path)
    log = decisions.read_log(after)
    team = log[log["survey"] == "team"]
    assert sorted(team["reviewer"]) == [f"r{i}" for i in range(8)]
    photos = Survey(identifier.path, "team").photos().set_index("photo_id")
    assert sorted(team["photo_sha256"]) == sorted(photos.loc[list(handed.values()), "sha256"])
    adds = int(team["decision"].isin(decisions.ADDING).sum())
    assert adds == 8 - sum(1 for i in range(8) if i % 3 == 0) and len(after.table) == len(before.table) + adds


def test_each_reviewer_token_names_its_reviewer(identifier, turtle_dir, tmp_path):
    path = tmp_path / "reviewers.txt"
    path.write_text("# name token\nAnn Lee  ann-0123456789abcdef\nbob bob-0123456789abcdef\n")
    tokens = read_reviewer_tokens(path)
    assert tokens == {"ann-0123456789abcdef": "Ann Lee", "bob-0123456789abcdef": "bob"}
    (tmp_path / "bad.txt").write_text("ann short\nbob\n")
    with pytest.raises(PhotoidError) as bad:
        read_reviewer_tokens(tmp_path / "bad.txt")
    assert "bad.txt line 1: ann's token is shorter than 16" in str(bad.value) and "line 2" in str(bad.value)
    client = reviewer_client(identifier, None, token="team-secret-0123456789", reviewer_tokens=tokens)
    assert client.get("/surveys").status_code == 401
    entered = client.get("/surveys", params={"token": "bob-0123456789abcdef"}, follow_redirects=False)
    assert entered.status_code == 303
    assert '<span id="reviewer">bob</span>' in client.get("/surveys").text  # named by the token, not a link
    assert client.post("/reviewer", data={"name": "mallory"}).status_code == 400
    client.cookies.set("photoid_reviewer", "mallory")  # a forged name cookie changes nothing
    upload_survey(client, "tokens", photo_files(turtle_dir, 20, 2))
    client.post("/surveys/tokens/identify")
    wait_for_job(client, "tokens")
    photo = client.get("/surveys/tokens/next", follow_redirects=False).headers["location"].split("?")[0]
    client.post(f"{photo}/decide", data={"decision": "skip"})
    assert decisions.read_log(read_catalog(identifier.path))["reviewer"].iloc[-1] == "bob"
    # The team's token lets one in without naming anybody: the page asks a name.
    team = reviewer_client(identifier, None, token="team-secret-0123456789", reviewer_tokens=tokens)
    team.get("/", params={"token": "team-secret-0123456789"})
    asked = team.get("/surveys/tokens/next", follow_redirects=False)
    assert asked.status_code == 303 and asked.headers["location"].startswith("/reviewer?next=%2Fsurveys%2Ftokens")


def test_the_survey_pages_keep_the_guard(identifier, turtle_dir):
    client = reviewer_client(identifier, limits=Limits(max_files=2, max_photo_mb=0.05, max_request_mb=0.2))
    photos = photo_files(turtle_dir, 0, 3)
    refused = client.post("/surveys/import", data={"name": "x"}, headers={"origin": "http://evil.example"})
    assert refused.status_code == 403
    assert upload_survey(client, "toomany", photos).status_code == 400
    assert client.post("/surveys/import", content=b"x" * 100, headers={
        "content-type": "multipart/form-data; boundary=x", "content-length": str(50 * 2**20)}).status_code == 413
    assert upload_survey(client, "../../etc", photos[:1]).status_code == 400
    upload_survey(client, "guarded", photos[:2])
    for url in ("/surveys/..%2F..%2Fetc/photos/p000001/image", "/surveys/guarded/photos/..%2F..%2Fmanifest.json/image",
                "/surveys/guarded/photos/p999999/image", "/surveys/nope", "/surveys/guarded/photos/%2Fetc%2Fpasswd"):
        answer = client.get(url)
        assert answer.status_code == 404, url
        assert "root:" not in answer.text and "Traceback" not in answer.text
    assert client.get("/surveys/guarded/photos/p000001/image").content[:3] == b"\xff\xd8\xff"
    # The name page never sends anyone to another site.
    form = client.get("/reviewer", params={"next": "//evil.example/x"}).text
    assert 'name="next" value="/"' in form
    saved = client.post("/reviewer", data={"name": "cy", "next": "https://evil.example/"}, follow_redirects=False)
    assert saved.headers["location"] == "/" and "photoid_reviewer=cy" in saved.headers["set-cookie"]
    assert client.post("/reviewer", data={"name": " "}).status_code == 400
    # Deciding needs a name; the match view of a refused photo says why.
    nameless = reviewer_client(identifier, None)
    assert nameless.post("/surveys/guarded/photos/p000001/decide", data={"decision": "skip"}).status_code == 403


def test_photoid_serve_takes_a_reviewers_file(identifier, tmp_path, monkeypatch, capsys):
    import uvicorn

    from photoid.cli import main

    started = {}
    monkeypatch.setattr("photoid.serve.identifier.Identifier", lambda *args, **kwargs: identifier)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: started.update(app=app, **kwargs))
    monkeypatch.delenv("PHOTOID_SERVE_TOKEN", raising=False)
    path = tmp_path / "team.txt"
    path.write_text("ann ann-0123456789abcdef\nbo bo-0123456789abcdef\n")
    assert main(["serve", "--catalog", str(identifier.path), "--host", "0.0.0.0", "--reviewers", str(path),
                 "--claim_seconds", "30"]) == 0
    printed = capsys.readouterr().out
    assert "photoid serve: http://127.0.0.1:8000/\n" in printed  # no shared token generated
    assert "2 reviewers: each opens http://127.0.0.1:8000/?token=THEIR_TOKEN" in printed
    client = TestClient(started["app"])
    assert client.get("/surveys").status_code == 401
    client.get("/surveys", params={"token": "bo-0123456789abcdef"})
    assert '<span id="reviewer">bo</span>' in client.get("/surveys").text
    assert started["app"].state.site.claims.seconds == 30
    (tmp_path / "empty.txt").write_text("# nobody yet\n")
    assert main(["serve", "--catalog", str(identifier.path), "--reviewers", str(tmp_path / "empty.txt")]) == 2
    assert "lists no reviewer" in capsys.readouterr().err
