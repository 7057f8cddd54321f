"""Fuzzing: mutated competition CSVs and recipe files either load correctly or raise PhotoidError, nothing else.

Hypothesis starts from the valid small folder and damages one or two of its CSVs (columns dropped, renamed or
repeated; rows duplicated, deleted or made of garbage; cells emptied or filled with any unicode; other encodings;
random bytes spliced in or the file cut short) and writes recipe files with any keys and values of any TOML type.
The images stay valid, so a folder that loads is checked against them too.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from photoid.runs.config import SETTABLE, Config, resolve_config
from photoid.turtles.data import EXTRA_CSV, SAMPLE_SUBMISSION_CSV, TEST_CSV, TRAIN_CSV, load_turtles
from photoid.core.tables import image_id_problem
from photoid.core.errors import PhotoidError
from robustness_support import write_turtle_folder

CSV_NAMES = (TRAIN_CSV, EXTRA_CSV, TEST_CSV, SAMPLE_SUBMISSION_CSV)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Text that hits CSV syntax (quotes, separators, line breaks), path tricks and any unicode.
CELL = st.one_of(
    st.sampled_from(["", " ", '"', ",", "\n", "\r\n", "..", "/", "\\", "C:", "new_turtle", "top", "NA", "nan",
                     "ID_TR0000", "ID_TE0000", "t_id_A", "\x00", "\ufeff"]),
    st.text(max_size=12),
)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return write_turtle_folder(tmp_path_factory.mktemp("fuzz") / "base")


def read_rows(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))


@st.composite
def mutated_table(draw, rows: list[list[str]]) -> list[list[str]]:
    """Apply 1-4 random edits to a table (header first)."""
    rows = [list(row) for row in rows]
    for _ in range(draw(st.integers(1, 4))):
        width = max(1, len(rows[0]) if rows else 1)
        column = draw(st.integers(0, width - 1))
        row = draw(st.integers(0, max(0, len(rows) - 1)))
        edit = draw(st.sampled_from(["drop column", "rename column", "duplicate column", "garbage row",
                                     "duplicate row", "delete row", "set cell", "empty cell", "swap columns"]))
        if not rows:
            rows.append([draw(CELL)])
        elif edit == "drop column":
            rows = [r[:column] + r[column + 1:] for r in rows]
        elif edit == "rename column":
            rows[0][column:column + 1] = [draw(CELL)]
        elif edit == "duplicate column":
            rows = [r[:column + 1] + r[column:column + 1] + r[column + 1:] for r in rows]
        elif edit == "garbage row":
            rows.insert(draw(st.integers(1, len(rows))), draw(st.lists(CELL, max_size=8)))
        elif edit == "duplicate row":
            rows.insert(draw(st.integers(1, len(rows))), list(rows[row]))
        elif edit == "delete row":
            del rows[row]
        elif edit in ("set cell", "empty cell") and column < len(rows[row]):
            rows[row][column] = draw(CELL) if edit == "set cell" else ""
        elif edit == "swap columns":
            rows = [r[1:2] + r[:1] + r[2:] for r in rows]
    return rows


@st.composite
def mutated_file(draw, rows: list[list[str]]) -> bytes:
    """A mutated table written as CSV (quoted properly or joined naively), encoded, maybe spliced or cut."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    table = draw(mutated_table(rows))
    if draw(st.booleans()):
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator=draw(st.sampled_from(["\n", "\r\n"]))).writerows(table)
        text = buffer.getvalue()
    else:
        text = "".join(",".join(row) + "\n" for row in table)
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    data = text.encode(encoding, errors="replace")
    if draw(st.integers(0, 4)) == 0:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=20)) + data[at:]
    if draw(st.integers(0, 5)) == 0:
        data = data[:draw(st.integers(0, len(data)))]
    return data


def assert_consistent(data, folder: Path) -> None:
    """What a loaded folder promises: unique plain-file ids with images, sorted classes, labels that index them."""
    labeled = data.labeled
    assert labeled["image_id"].is_unique
    assert all(image_id_problem(i) is None for i in labeled["image_id"])
    assert all((folder / "images" / f"{i}.JPG").is_file() for i in [*labeled["image_id"], *data.test["image_id"]])
    assert data.classes == sorted(set(labeled["turtle_id"]))
    assert [data.classes[label] for label in labeled["label"]] == list(labeled["turtle_id"])
    assert set(data.test["image_id"]) == set(data.sample_submission["image_id"])
    assert not set(data.test["image_id"]) & set(labeled["image_id"])
    assert set(labeled["image_location"]) <= {"top", "left", "right"}


@FUZZ
@given(st.data())
def test_mutated_csvs_load_or_raise_a_photoid_error(base, data):
    targets = data.draw(st.lists(st.sampled_from(CSV_NAMES), min_size=1, max_size=2, unique=True))
    with tempfile.TemporaryDirectory(dir=base.parent) as tmp:
        folder = Path(tmp)
        (folder / "images").symlink_to(base / "images")
        for name in CSV_NAMES:
            original = (base / name).read_bytes()
            content = data.draw(mutated_file(read_rows(base / name)), label=name) if name in targets else original
            (folder / name).write_bytes(content)
        try:
            loaded = load_turtles(folder, check_images=True)
        except PhotoidError as err:
            event(f"refused: {type(err).__name__}")
            return
        event("loaded")
        assert_consistent(loaded, folder)


# --- recipes -------------------------------------------------------------------------------------------------------

def toml_string(text: str) -> str:
    """A TOML basic string: every character TOML does not allow as it is gets a \\u escape."""
    def escape(ch: str) -> str:
        if ch in '"\\' or ord(ch) < 0x20 or ord(ch) == 0x7F:
            return f"\\u{ord(ch):04x}"
        return ch
    return '"' + "".join(escape(ch) for ch in text) + '"'


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return value.isoformat()  # dates and times


FIELD_NAMES = [f.name for f in SETTABLE]
SCALARS = st.one_of(
    st.booleans(), st.integers(), st.integers(-2**63, 2**63 - 1), st.just(10**400), st.floats(),
    st.text(max_size=20), st.sampled_from(["avg", "gem", "softmax", "arcface", "val_loss", "simple-cnn", ""]),
    st.dates(), st.datetimes(),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)), max_leaves=6)
KEYS = st.one_of(st.sampled_from(FIELD_NAMES), st.text(min_size=1, max_size=15))


@FUZZ
@given(recipe=st.one_of(st.dictionaries(KEYS, VALUES, max_size=6).map(
    lambda d: "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in d.items()).encode("utf-8")),
    st.binary(max_size=200)))
def test_any_recipe_file_loads_or_raises_a_photoid_error(tmp_path_factory, recipe):
    path = tmp_path_factory.mktemp("recipe") / "fuzzed.toml"
    path.write_bytes(recipe)
    try:
        cfg = resolve_config(argparse.Namespace(model=str(path)))
    except PhotoidError as err:
        event(f"refused: {str(err).splitlines()[0][:40]}")
        return
    event("loaded")
    defaults = Config()
    for field in SETTABLE:
        value, default = getattr(cfg, field.name), getattr(defaults, field.name)
        assert type(value) is type(default), (field.name, value)
        assert not isinstance(value, float) or math.isfinite(value), (field.name, value)
