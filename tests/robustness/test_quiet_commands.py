"""Commands print what researchers need: no TensorFlow C++ start-up lines or CUDA errors unless `--verbose` asks,
and `photoid identify --help` answers without starting TensorFlow."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from photoid.core.quiet import TF_LOG_LINE
from robustness_support import PHOTOID, subprocess_env

HELP_IMPORTS = """
import sys
from photoid import cli
try:
    cli.main(["identify", "--help"])
except SystemExit:
    pass
print("tensorflow imported" if "tensorflow" in sys.modules else "tensorflow not imported")
"""


def tensorflow_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if TF_LOG_LINE.match(line)]


def test_identify_help_does_not_start_tensorflow():
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", HELP_IMPORTS], capture_output=True, text=True,
                          env=subprocess_env(), timeout=120)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "usage: photoid identify" in done.stdout and "--catalog" in done.stdout
    assert done.stdout.strip().endswith("tensorflow not imported"), f"{done.stdout} ({seconds:.2f} s)"


@pytest.mark.slow  # photoid in fresh processes
def test_identify_prints_no_tensorflow_start_up_lines_unless_verbose(trained_run, turtle_dir):
    photo = turtle_dir / "images" / f"{pd.read_csv(turtle_dir / 'test.csv')['image_id'][0]}.JPG"
    argv = ["identify", str(photo), "--run", str(trained_run), "--csv"]
    # Both at once: each process starts TensorFlow on its own (about 3 s of one core).
    with ThreadPoolExecutor(2) as pool:
        quiet, verbose = pool.map(lambda a: subprocess.run([*PHOTOID, *a], capture_output=True, text=True,
                                                           env=subprocess_env(), timeout=300),
                                  [argv, ["--verbose", *argv]])
    assert quiet.returncode == 0, quiet.stderr
    assert tensorflow_lines(quiet.stderr) == [] and "cuda" not in quiet.stderr.lower(), quiet.stderr
    assert "identifying 1 photo(s)" in quiet.stderr
    # The same lines are there to see on request; the filter is what hid them.
    assert verbose.returncode == 0, verbose.stderr
    assert tensorflow_lines(verbose.stderr), verbose.stderr
    assert verbose.stdout == quiet.stdout
