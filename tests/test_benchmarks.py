"""The benchmarks still run: each one at a tiny size, the runner's page, and the pieces they measure with."""

import importlib
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import _common  # noqa: E402
import _report  # noqa: E402
import run_all  # noqa: E402

# The tiny data sets have turtles with fewer photos than folds, which the fold maker points out.
pytestmark = pytest.mark.filterwarnings("ignore:.*fewer images than the.*:UserWarning")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bench-cache")


# B3, B4, B6, B7, B8, B9 and B10 build and train or run models (B6 in four fresh processes, B7 and B9 servers, B10
# three tiny runs), B1 times the input pipeline in repeated passes: seconds each.
SLOW_BENCHMARKS = ("B1", "B3", "B4", "B6", "B7", "B8", "B9", "B10")


@pytest.mark.parametrize("bench_id", [pytest.param(b, marks=pytest.mark.slow) if b in SLOW_BENCHMARKS else b
                                      for b in run_all.BENCHMARKS])
def test_each_benchmark_runs_at_a_tiny_size_and_reports_consistent_rows(bench_id, cache_dir):
    module = importlib.import_module(run_all.BENCHMARKS[bench_id])
    rows = module.run("tiny", cache_dir)
    assert rows and all(row.id.startswith(bench_id) for row in rows)
    for row in rows:
        assert row.ours > 0 and row.baseline > 0 and math.isfinite(row.ratio)
        # The ratio is ours/baseline (rates, memory) or baseline/ours (times), never anything else.
        assert any(math.isclose(row.ratio, r, rel_tol=1e-9) for r in (row.ours / row.baseline,
                                                                      row.baseline / row.ours))
        assert row.met == row.goal.met(row.ratio)
        assert row.notes, "every row says what was measured"


def test_goals_read_in_both_directions():
    faster, flat = _common.Goal(4.0), _common.Goal(1.2, higher_is_better=False)
    assert faster.met(4.0) and not faster.met(3.99)
    assert flat.met(1.2) and not flat.met(1.21)
    assert (str(faster), str(flat)) == ("≥ 4×", "≤ 1.2×")


def test_interleaved_medians_alternate_the_measures_and_take_each_median():
    calls = []
    values = {"a": iter([3.0, 1.0, 2.0]), "b": iter([10.0, 30.0, 20.0])}
    medians = _common.interleaved_medians(3, {name: (lambda name=name: calls.append(name) or next(values[name]))
                                              for name in values})
    assert medians == {"a": 2.0, "b": 20.0}
    assert calls == ["a", "b"] * 3
    with pytest.raises(ValueError):
        _common.interleaved_medians(0, {})


def test_the_runner_writes_a_page_with_the_machine_the_command_and_the_table(tmp_path, cache_dir):
    out = tmp_path / "results.md"
    assert run_all.main(["--only", "B5", "--size", "tiny", "--out", str(out), "--cache_dir", str(cache_dir)]) == 0
    page = out.read_text()
    for expected in ("## Machine and run", "- cpu: ", "- cores: ", "- command: run_all.py --only B5",
                     "tensorflow 2.", "| id | what | ours | baseline | ratio | goal | met |", "| B5 | ranking 50"):
        assert expected in page
    assert "### B5 — " in page and "500 database embeddings" in page


def test_only_a_full_run_of_everything_writes_the_results_page_by_default():
    assert run_all.parse_args([]).out == str(_common.BENCH_DIR / "results.md")
    assert run_all.parse_args(["--only", "b3"]).selected == ["B3"]
    assert run_all.parse_args(["--only", "B3"]).out is None
    assert run_all.parse_args(["--size", "tiny"]).out is None
    with pytest.raises(SystemExit):
        run_all.parse_args(["--only", "B99"])


def test_a_failing_benchmark_is_reported_without_hiding_the_others(monkeypatch, capsys):
    b5 = importlib.import_module("b5_ranking")

    def broken(preset, cache_dir):
        raise RuntimeError("deliberately broken")

    monkeypatch.setattr(b5, "run", broken)
    results, failures = run_all.run_benchmarks(["B5"], "tiny", _common.CACHE_DIR)
    assert results == [] and failures == {"B5": "RuntimeError: deliberately broken"}
    assert "did not finish" in _report.failures_section(failures)


def test_dct_scaled_decoding_stays_at_least_dim_pre_and_close_to_the_full_decode(tmp_path):
    import tensorflow as tf
    from PIL import Image

    from photoid.records.reader import decode_image

    b1 = importlib.import_module("b1_input_pipeline")
    y, x = np.mgrid[0:600, 0:900]
    smooth = np.stack([x * 255 // 900, y * 255 // 600, (x + y) * 255 // 1500], axis=-1).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "photo.jpg", quality=95)
    data = tf.io.read_file(str(tmp_path / "photo.jpg"))
    for dim_pre in (64, 128, 300):  # ratios 8, 4 and 2 keep the short side (600 px) at least dim_pre
        scaled, full = b1.decode_with_dct_scaling(data, dim_pre), decode_image(data, dim_pre)
        assert scaled.shape == full.shape == (dim_pre, dim_pre, 3) and scaled.dtype == tf.uint8
        assert np.abs(scaled.numpy().astype(int) - full.numpy().astype(int)).mean() < 2.0


def test_the_per_query_baseline_and_rank_scenario_agree():
    b5 = importlib.import_module("b5_ranking")
    scenario = b5.make_scenario(n_database=300, n_queries=20, width=16)
    ours = b5.rank_ours(scenario, top_k=5).groupby("query_id", sort=False)["database_image_id"].apply(list)
    baseline = b5.rank_per_query(scenario, n_queries=20, top_k=5)
    assert [ours[q] for q in scenario.query_ids] == baseline
    for query_image, ranked in zip(scenario.query_image_ids, baseline):
        assert query_image not in ranked


def test_a_child_reports_its_own_peak_not_the_larger_one_of_the_process_that_started_it():
    import resource

    import tensorflow  # noqa: F401  (makes this process large: hundreds of MiB)

    b6 = importlib.import_module("b6_peak_memory")
    parent_peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = subprocess.run([sys.executable, "-c", "import b6_peak_memory as b; print(b.peak_rss_mib())"],
                         cwd=REPO / "benchmarks", capture_output=True, text=True, check=True).stdout
    assert parent_peak_mib > 300 and 0 < float(out) < 100
    assert b6.peak_rss_mib() >= parent_peak_mib * 0.5


def test_memory_sampling_finds_child_processes_and_their_private_memory():
    b6 = importlib.import_module("b6_peak_memory")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        deadline = time.time() + 5
        while child.pid not in b6._descendants(os.getpid()) and time.time() < deadline:
            time.sleep(0.05)
        assert child.pid in b6._descendants(os.getpid())
        assert b6._private_bytes(os.getpid()) > 1 << 20
    finally:
        child.kill()
        child.wait()


@pytest.mark.slow  # trains
def test_gpu_benchmark_runs_and_replaces_its_section(tmp_path):
    import gpu_models

    results = tmp_path / "results.md"
    results.write_text("# Benchmarks\n\n| B1 | ... |\n\n## On a GPU (`make bench-gpu`)\n\nold rows\n\n"
                       "## Later\n\nkept\n")
    assert gpu_models.main(["--recipes", "cpu-demo", "--dim", "32", "--batch_size", "4", "--steps", "2",
                            "--allow_cpu", "--out", str(results)]) == 0
    page = results.read_text()
    assert "old rows" not in page and page.count("## On a GPU") == 1 and "## Later\n\nkept" in page
    rows = [line for line in page.splitlines() if line.startswith("| cpu-demo | 32 |")]
    assert [row.split(" | ")[2] for row in rows] == ["off", "on"]
    assert all(float(row.split(" | ")[4]) > 0 and float(row.split(" | ")[5]) > 0 for row in rows)


def test_a_partial_run_replaces_its_own_section_of_the_results_page(tmp_path, cache_dir):
    page = tmp_path / "results.md"
    page.write_text("# Benchmarks\n\n## Results\n\n| B1 | ... |\n\n## How each cost grows\n\nkept\n")
    for _ in range(2):
        assert run_all.main(["--only", "B5", "--size", "tiny", "--section", "--out", str(page), "--cache_dir",
                             str(cache_dir)]) == 0
    text = page.read_text()
    assert text.count("## Run alone: B5") == 1 and text.startswith("# Benchmarks\n\n## Results\n\n| B1 | ... |")
    assert "## How each cost grows\n\nkept" in text and "| B5 | ranking 50" in text and "### B5 — " in text
    with pytest.raises(SystemExit):
        run_all.parse_args(["--section"])
