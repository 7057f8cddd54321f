"""A survey reviewed in a real browser (headless Chromium through Selenium), against `photoid serve` started as a
user starts it: import through the page, the batch job's progress, the queue's filters in the address, the match
view's tools and every key, and quality control. One server and one browser for the whole module (the machine is
small); the pages' screenshots go to $PHOTOID_SCREENSHOTS when set (docs/review.md shows them)."""

from __future__ import annotations

import os
import shutil
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from photoid.catalog import decisions
from photoid.catalog.build import read_catalog
from photoid.survey.importer import import_folder
from test_serve import CHROMEDRIVER, CHROMIUM, serving
from test_survey import copy_with_viewpoints

pytestmark = pytest.mark.slow

WINDOW = (1280, 1000)


@pytest.fixture(scope="module")
def server(serve_catalog, tmp_path_factory):
    """`photoid serve` on a copy of the catalogue whose photos have viewpoints (top and left); yields (address,
    catalogue path)."""
    if not (CHROMIUM and CHROMEDRIVER):
        message = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    path = copy_with_viewpoints(serve_catalog.path, tmp_path_factory.mktemp("browser-review") / "catalog")
    with serving(path) as address:
        yield address.rstrip("/"), path


@pytest.fixture(scope="module")
def browser(server):
    from selenium import webdriver
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    address, _ = server
    try:
        # The reviewer's name is asked once, then kept by the browser.
        driver.get(f"{address}/surveys/anything/next")
        assert "/reviewer?next=" in driver.current_url
        driver.find_element(By.ID, "reviewer-name").send_keys("ann")
        driver.find_element(By.ID, "reviewer-save").click()
        # The form's answer sets the name's cookie: a page asked for before it arrives is asked without the name.
        wait(driver, lambda d: "/reviewer" not in d.current_url)
        driver.get(f"{address}/surveys")
        assert driver.find_element(By.ID, "reviewer").text == "ann"
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("PHOTOID_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_photos(turtle_dir, start: int, n: int) -> list[Path]:
    ids = pd.read_csv(turtle_dir / "test.csv", dtype=str)["image_id"].iloc[start:start + n]
    return [turtle_dir / "images" / f"{i}.JPG" for i in ids]


test_photos.__test__ = False


def wait(browser, condition, timeout: float = 60):
    """`condition` polled until true; an element that a page's reload made stale counts as not yet."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
                         ).until(condition)


def loaded(browser, element_id: str) -> bool:
    return browser.execute_script(f"const i = document.getElementById('{element_id}'); "
                                  "return i.complete && i.naturalWidth > 0;")


@pytest.fixture(scope="module")
def keys_survey(server, turtle_dir, tmp_path_factory):
    """A survey of 8 photos imported with `photoid survey import`'s function and identified by the server's job."""
    address, path = server
    folder = tmp_path_factory.mktemp("keys-photos")
    for photo in test_photos(turtle_dir, 10, 8):
        shutil.copy(photo, folder / photo.name)
    import_folder(path, "keys", folder)
    request = urllib.request.Request(f"{address}/surveys/keys/identify", data=b"", method="POST")
    urllib.request.urlopen(request, timeout=60)
    deadline = time.monotonic() + 120
    while "8 of 8 photos identified (done)" not in urllib.request.urlopen(f"{address}/surveys/keys").read().decode():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    return "keys"


def test_a_survey_is_imported_identified_and_filtered_in_the_browser(server, browser, turtle_dir, tmp_path, shots):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    address, path = server
    photos = test_photos(turtle_dir, 0, 6)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photos[0].read_bytes()[:300])
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(photos[1].read_bytes())
    sheet = tmp_path / "season.csv"
    pd.DataFrame({"file": [p.name for p in photos], "site": ["north", "north", "south", "south", "north", "south"],
                  "when": [f"2025-04-0{i + 1}" for i in range(6)],
                  "view": ["top", "left", "top", "left", "top", "left"]}).to_csv(sheet, index=False)
    browser.get(f"{address}/surveys")
    browser.find_element(By.ID, "survey-name").send_keys("field-2025")
    browser.find_element(By.ID, "survey-photos").send_keys("\n".join(str(p) for p in [*photos, broken, copy]))
    browser.find_element(By.ID, "survey-csv").send_keys(str(sheet))
    for field, column in (("path", "file"), ("station", "site"), ("date", "when"), ("viewpoint", "view")):
        browser.find_element(By.ID, f"column-{field}").send_keys(column)
    browser.find_element(By.ID, "import-button").click()
    opened = wait(browser, lambda b: b.find_elements(By.ID, "open-survey"))
    status = browser.find_element(By.ID, "import-status").text
    assert status == "6 photos added, 1 refused, 1 duplicates", status
    report = browser.find_element(By.ID, "import-report").text
    assert "refused: broken.jpg: JPEG is truncated or damaged" in report and "duplicate: copy.jpg" in report
    opened[0].click()
    browser.find_element(By.ID, "identify-survey").click()
    # The progress bar follows the job; the page reloads with the answers when it is done. The script sets the
    # state and calls reload() in one go: once the state reads done, that reload is under way, and a refresh of
    # our own waits until the page it leads to (rendered by the server, the job done) has loaded.
    wait(browser, lambda b: b.find_element(By.ID, "job").get_attribute("data-state") not in ("running",
                                                                                               "not started"))
    browser.refresh()
    assert browser.find_element(By.ID, "job-text").text == "6 of 6 photos identified (done)"
    bar = browser.find_element(By.ID, "job-progress")
    assert bar.get_attribute("value") == bar.get_attribute("max") == "6"
    assert len(browser.find_elements(By.CSS_SELECTOR, "tr.problem")) == 2  # the refused and the duplicate
    # Filters go into the address: a refresh, or the link sent to a colleague, keeps them.
    Select(browser.find_element(By.ID, "f-station")).select_by_visible_text("north")
    browser.find_element(By.ID, "f-undecided").click()
    Select(browser.find_element(By.ID, "f-sort")).select_by_value("confidence")
    browser.find_element(By.ID, "apply-filters").click()
    wait(browser, lambda b: "station=north" in b.current_url)
    assert "undecided=1" in browser.current_url and "sort=confidence" in browser.current_url
    rows = [r.get_attribute("data-photo") for r in browser.find_elements(By.CSS_SELECTOR, "tr.queue-row")]
    assert len(rows) == 3
    confidences = [float(c.text) for c in browser.find_elements(By.CSS_SELECTOR, "tr.queue-row td.confidence")]
    assert confidences == sorted(confidences, reverse=True)
    browser.refresh()
    assert [r.get_attribute("data-photo") for r in browser.find_elements(By.CSS_SELECTOR, "tr.queue-row")] == rows
    assert browser.find_element(By.ID, "f-undecided").is_selected()
    assert Select(browser.find_element(By.ID, "f-station")).first_selected_option.text == "north"
    browser.get(browser.current_url.replace("station=north", "station=south").replace("undecided=1&", ""))
    assert len(browser.find_elements(By.CSS_SELECTOR, "tr.queue-row")) == 3
    browser.get(f"{address}/surveys/field-2025?date_from=2025-04-02&date_to=2025-04-04&viewpoint=left")
    assert [r.text.split()[0] for r in browser.find_elements(By.CSS_SELECTOR, "tr.queue-row td:nth-child(3)")] == [
        "2025-04-02", "2025-04-04"]
    browser.get(f"{address}/surveys/field-2025?sort=confidence")
    browser.save_screenshot(str(shots / "queue.png"))


def test_the_match_view_its_tools_and_every_key(server, browser, keys_survey, shots):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    address, path = server
    body = lambda: browser.find_element(By.TAG_NAME, "body")  # noqa: E731

    def press(key):
        body().send_keys(key)

    def reloaded(action, timeout=30):
        marker = browser.find_element(By.ID, "match")
        action()
        wait(browser, lambda b: not _alive(marker), timeout)
        wait(browser, lambda b: b.find_elements(By.ID, "match"), timeout)

    def viewer(side):
        element = browser.find_element(By.ID, f"{side}-viewer")
        return {k: float(element.get_attribute(f"data-{k}")) for k in ("scale", "x", "y")}

    def candidates():
        return browser.find_elements(By.CSS_SELECTOR, "tr.candidate")

    browser.get(f"{address}/surveys/{keys_survey}/next")
    wait(browser, lambda b: "/photos/" in b.current_url and loaded(b, "query-image") and loaded(b, "candidate-image"))
    first_url = browser.current_url
    rows = candidates()
    assert len(rows) == 5
    for row in rows:
        cells = row.find_elements(By.TAG_NAME, "td")
        assert float(cells[2].text) > 0 and cells[3].text.endswith("%")
        assert cells[4].text == "—" if "new" in row.get_attribute("class") else float(cells[4].text) >= 0
    # The catalogue keeps local features: "Explain the match" loads the picture of the verified matches between the
    # survey photo and the candidate photo shown (the page's /explain route), and hides it again.
    explain = browser.find_element(By.ID, "explain")
    assert explain.is_displayed() and explain.get_attribute("data-url").endswith(".png")
    explain.click()
    wait(browser, lambda b: loaded(b, "explain-image") and b.find_element(By.ID, "explain-image").is_displayed())
    explain.click()
    assert not browser.find_element(By.ID, "explain-image").is_displayed()

    # Wheel zoom, drag pan: the two sides together, then apart.
    query_viewer = browser.find_element(By.ID, "query-viewer")
    browser.execute_script("arguments[0].dispatchEvent(new WheelEvent('wheel', {deltaY: -100, clientX: "
                           "arguments[0].getBoundingClientRect().left + 50, clientY: "
                           "arguments[0].getBoundingClientRect().top + 50, bubbles: true, cancelable: true}))",
                           query_viewer)
    assert viewer("query")["scale"] == viewer("candidate")["scale"] == 1.25
    before = viewer("query")
    ActionChains(browser).click_and_hold(query_viewer).move_by_offset(40, 25).release().perform()
    moved = viewer("query")
    assert (moved["x"] - before["x"], moved["y"] - before["y"]) == (40, 25) and viewer("candidate") == moved
    press("l")  # apart
    browser.execute_script("arguments[0].dispatchEvent(new WheelEvent('wheel', {deltaY: 100, clientX: 10, "
                           "clientY: 10, bubbles: true, cancelable: true}))",
                           browser.find_element(By.ID, "candidate-viewer"))
    assert viewer("candidate")["scale"] == 1.0 and viewer("query")["scale"] == 1.25
    # Brightness and contrast, then R resets everything.
    browser.execute_script("for (const [id, v] of [['query-brightness', 150], ['candidate-contrast', 60]]) {"
                           "const e = document.getElementById(id); e.value = v;"
                           "e.dispatchEvent(new Event('input', {bubbles: true})); }")
    assert "brightness(150%)" in browser.find_element(By.ID, "query-image").get_attribute("style")
    assert "contrast(60%)" in browser.find_element(By.ID, "candidate-image").get_attribute("style")
    browser.save_screenshot(str(shots / "match.png"))
    press("r")
    assert viewer("query") == viewer("candidate") == {"scale": 1.0, "x": 0.0, "y": 0.0}
    assert "brightness(100%)" in browser.find_element(By.ID, "query-image").get_attribute("style")
    # The originals at full size.
    original = browser.find_element(By.ID, "query-original").get_attribute("href")
    assert urllib.request.urlopen(original).read()[:3] == b"\xff\xd8\xff"
    assert "/photo/" in browser.find_element(By.ID, "candidate-original").get_attribute("href")

    # ← → choose a candidate; [ ] and the buttons step through its photos.
    selected = browser.find_element(By.ID, "match").get_attribute("data-selected")
    index = next(i for i, r in enumerate(candidates()) if "selected" in r.get_attribute("class"))
    press(Keys.ARROW_RIGHT)
    assert "selected" in candidates()[index + 1].get_attribute("class")
    assert browser.find_element(By.ID, "match").get_attribute("data-selected") != selected
    press(Keys.ARROW_LEFT)
    assert browser.find_element(By.ID, "match").get_attribute("data-selected") == selected
    counter = browser.find_element(By.ID, "photo-counter")
    total = int(counter.text.split("/")[1])
    assert total >= 2 and counter.text.strip() == f"1 / {total}"
    shown = browser.find_element(By.ID, "candidate-image").get_attribute("data-image-id")
    browser.find_element(By.ID, "photo-next").click()
    assert counter.text.strip() == f"2 / {total}"
    assert browser.find_element(By.ID, "candidate-image").get_attribute("data-image-id") != shown
    press("]")
    press("[")
    press("[")
    assert counter.text.strip() == f"1 / {total}"

    # ? shows the keys.
    press("?")
    assert browser.find_element(By.ID, "help").is_displayed()
    press("?")
    assert not browser.find_element(By.ID, "help").is_displayed()

    # The number of candidates and the threshold, recomputed.
    top, threshold = browser.find_element(By.ID, "top"), browser.find_element(By.ID, "threshold")
    top.clear()
    top.send_keys("3")
    threshold.clear()
    threshold.send_keys("2")
    reloaded(lambda: browser.find_element(By.ID, "recompute").click())
    assert "top=3" in browser.current_url and "threshold=2" in browser.current_url
    assert len(candidates()) == 3 and "new" in candidates()[0].get_attribute("class")
    browser.get(first_url)

    # V: the catalogue photos compared, one viewpoint after another.
    views = dict(zip(read_catalog(path).table["image_id"], read_catalog(path).table["viewpoint"]))
    for expected in ("top", "left", "right", ""):
        reloaded(lambda: press("v"))
        url = browser.current_url
        assert (f"view={expected}" in url) if expected else "view=" not in url, (expected, url)
        if expected == "right":
            assert browser.find_elements(By.ID, "no-candidates")
        elif expected:
            photos = {i for r in candidates() for i, _ in eval_json(r.get_attribute("data-photos"))}
            assert photos and {views[i] for i in photos} == {expected}
    browser.get(first_url)

    # F marks a favourite, and unmarks it.
    reloaded(lambda: press("f"))
    assert "★" in browser.find_element(By.ID, "favourite-mark").text
    reloaded(lambda: press("f"))
    assert browser.find_element(By.ID, "favourite-mark").text == ""

    # M confirms the selected candidate; M again undoes it. Space does the same; U undoes my last decision.
    label = browser.find_element(By.ID, "match").get_attribute("data-selected")
    reloaded(lambda: press("m"))
    assert f"Confirmed: {label} by ann" in browser.find_element(By.ID, "decided").text
    reloaded(lambda: press("m"))
    assert not browser.find_elements(By.ID, "decided")
    reloaded(lambda: press(Keys.SPACE))
    assert browser.find_element(By.ID, "decided").text.startswith("Confirmed")
    reloaded(lambda: press("u"))
    assert not browser.find_elements(By.ID, "decided")
    # N names a new individual: type its id, Enter.
    press("n")
    name_box = browser.switch_to.active_element
    assert name_box.get_attribute("id") == "new-id"
    name_box.send_keys("keys-new-1")
    reloaded(lambda: name_box.send_keys(Keys.ENTER))
    assert "New individual: keys-new-1 by ann" in browser.find_element(By.ID, "decided").text
    reloaded(lambda: press("u"))
    assert not browser.find_elements(By.ID, "decided")

    # ↓ and ↑ move through the queue's photos.
    next_url = browser.find_element(By.ID, "match").get_attribute("data-next")
    reloaded(lambda: press(Keys.ARROW_DOWN))
    assert browser.current_url.endswith(next_url)
    reloaded(lambda: press(Keys.ARROW_UP))
    assert browser.current_url.split("?")[0] == first_url.split("?")[0]
    # S skips: the next photo for ann is another one.
    reloaded(lambda: press("s"))
    assert "/photos/" in browser.current_url and browser.current_url.split("?")[0] != first_url.split("?")[0]

    log = decisions.read_log(read_catalog(path))
    mine = log[log["survey"] == keys_survey]
    assert mine["decision"].tolist() == ["confirm", "undo", "confirm", "undo", "new", "undo", "skip"]
    assert set(mine["reviewer"]) == {"ann"}
    assert decisions.active_decisions(mine)["decision"].tolist() == ["skip"]  # only the skip stands


def eval_json(text: str):
    import json

    return json.loads(text)


def _alive(element) -> bool:
    """Whether `element` still belongs to the page shown (False once the browser has left that page)."""
    from selenium.common.exceptions import WebDriverException

    try:
        element.is_enabled()
        return True
    except WebDriverException:  # stale, or the page is being replaced at this instant
        return False


def test_quality_control_moves_splits_and_merges_with_undo_in_the_browser(server, browser, shots):
    from selenium.webdriver.common.by import By

    address, path = server
    table = read_catalog(path).table
    counts = table["individual_id"].value_counts()
    a, b = counts.index[0], counts.index[1]

    def figures():
        return browser.find_elements(By.TAG_NAME, "figure")

    browser.get(f"{address}/individuals/{a}")
    assert len(figures()) == counts[a]
    owns = [float(e.text) for e in browser.find_elements(By.CSS_SELECTOR, "figcaption .own")]
    assert owns == sorted(owns)  # the least similar first
    browser.save_screenshot(str(shots / "qc.png"))
    # Move the first (least similar) photo to b, then undo.
    moved = figures()[0].find_element(By.TAG_NAME, "figcaption").get_attribute("data-image")
    target = figures()[0].find_element(By.CSS_SELECTOR, "input.move-to")
    target.clear()
    target.send_keys(b)
    figures()[0].find_element(By.CSS_SELECTOR, "button.move-button").click()
    wait(browser, lambda b_: "?done=" in b_.current_url)
    assert len(figures()) == counts[a] - 1 and f"move from {a} to {b} by ann" in browser.find_element(
        By.ID, "recent").text
    assert read_catalog(path).table.set_index("image_id").loc[moved, "individual_id"] == b
    browser.find_element(By.ID, "undo-recent").click()
    wait(browser, lambda b_: "?done=" not in b_.current_url and len(figures()) == counts[a])
    # Split two photos into a new individual, then undo.
    for box in browser.find_elements(By.CSS_SELECTOR, "input.split-choice")[:2]:
        box.click()
    browser.find_element(By.ID, "split-id").send_keys("qc-split")
    browser.find_element(By.ID, "split-button").click()
    wait(browser, lambda b_: "?done=" in b_.current_url)
    assert len(figures()) == counts[a] - 2
    assert int((read_catalog(path).table["individual_id"] == "qc-split").sum()) == 2
    browser.find_element(By.ID, "undo-recent").click()
    wait(browser, lambda b_: "?done=" not in b_.current_url and len(figures()) == counts[a])
    # Merge a into b: b's page holds both; undo gives a back.
    browser.find_element(By.ID, "merge-into").send_keys(b)
    browser.find_element(By.ID, "merge-button").click()
    wait(browser, lambda b_: f"/individuals/{b}?done=" in b_.current_url)
    assert len(figures()) == counts[a] + counts[b]
    browser.find_element(By.ID, "undo-recent").click()
    wait(browser, lambda b_: b_.current_url.endswith(f"/individuals/{a}") and len(figures()) == counts[a])
    log = decisions.read_log(read_catalog(path))
    quality = log[log["decision"].isin(["move", "split", "merge"])]
    assert quality["decision"].tolist() == ["move", "split", "merge"] and set(quality["reviewer"]) == {"ann"}
    assert read_catalog(path).table["individual_id"].value_counts().to_dict() == counts.to_dict()
