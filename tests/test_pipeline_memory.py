"""The pipeline's per-notebook peak memory: a child process that holds a known amount is measured within bounds,
and the per-step table is read from the step folders a notebook built."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from paper_lib.core.artifacts import read_json, write_json_atomic
from paper_lib.pipeline import STEP_TABLE, PeakMemory, finished_steps, record_steps, step_rows

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")

HOLD = """
import sys, time
block = bytearray({mib} * 1024 * 1024)
for i in range(0, len(block), 4096):  # touch every page, so all of it is resident
    block[i] = 1
print("ready", flush=True)
time.sleep({seconds})
"""


def _hold(mib: int, seconds: float) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLD.format(mib=mib, seconds=seconds)], stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout.readline().strip() == "ready"
    return child


def test_peak_memory_of_a_child_that_holds_a_known_amount():
    with PeakMemory(interval=0.05) as memory:
        child = _hold(mib=300, seconds=0.6)
        child.wait()
    usage = memory.result()
    assert usage["memory_polls"] >= 3
    # 300 MiB of touched pages plus the interpreter (~10-30 MiB); an allocator may over-commit a little
    assert 300 <= usage["peak_hwm_mib"] < 400
    assert 300 <= usage["peak_rss_mib"] < 400


def test_peak_memory_counts_children_of_children_and_only_descendants():
    nested = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {HOLD.format(mib=120, seconds=0.6)!r}])"
    with PeakMemory(interval=0.05) as memory:
        subprocess.run([sys.executable, "-c", nested], check=True, capture_output=True)
    usage = memory.result()
    # the grandchild's 120 MiB plus two interpreters; this test process's own memory (torch etc.) is not counted
    assert 120 <= usage["peak_hwm_mib"] < 200
    assert 120 <= usage["peak_rss_mib"] < 260


def test_no_children_no_memory():
    with PeakMemory(interval=0.05) as memory:
        time.sleep(0.2)
    assert memory.result()["peak_rss_mib"] == 0.0


def test_step_table_rows_come_from_the_manifests(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPER_RUNS_DIR", str(tmp_path))
    run = tmp_path / "tiny"
    old = run / "tokenizer-aaa"
    old.mkdir(parents=True)
    write_json_atomic(old / "manifest.json", {"step": "tokenizer", "seconds": 3.0, "meta": {}})
    before = finished_steps(run)
    new = run / "model-bbb"
    new.mkdir()
    write_json_atomic(new / "manifest.json", {"step": "model", "seconds": 12.5, "meta": {"tokens_per_second": 400.0}})
    (run / "sae-ccc.partial").mkdir()  # unfinished: no manifest, no row
    rows = step_rows(run, finished_steps(run) - before, "01_training", {"peak_rss_mib": 900.0, "peak_hwm_mib": 880.0})
    assert rows == [{"folder": "model-bbb", "step": "model", "notebook": "01_training", "seconds": 12.5,
                     "tokens_per_second": 400.0, "notebook_peak_rss_mib": 900.0, "notebook_peak_hwm_mib": 880.0}]
    record_steps("tiny", rows)
    record_steps("tiny", [{**rows[0], "seconds": 13.0}])  # the same folder built again replaces its row
    table = read_json(run / "benchmarks.json")[STEP_TABLE]
    assert [row["seconds"] for row in table["rows"]] == [13.0]


def test_a_re_execution_from_the_cache_keeps_the_wall_time_of_the_last_building_run(tmp_path, monkeypatch):
    """Section costs are read beside notebook 01's cold time: a later execution that built no step (every step
    cached) records its own wall time but keeps the building one, which the cost reference reads."""
    from paper_lib.core.artifacts import record_benchmark
    from paper_lib.core.config import load_config
    from paper_lib.matching.controls import notebook_01_reference
    from paper_lib.pipeline import _building_wall

    monkeypatch.setenv("PAPER_RUNS_DIR", str(tmp_path))
    (tmp_path / "smoke").mkdir()
    name = "notebook_01_training"
    built = {"wall_seconds": 950.0, **_building_wall("smoke", name, 950.0, True)}
    record_benchmark("smoke", name, built)
    warm = {"wall_seconds": 11.0, **_building_wall("smoke", name, 11.0, False)}
    assert warm["building_wall_seconds"] == 950.0
    record_benchmark("smoke", name, warm)
    assert notebook_01_reference(load_config("smoke"))[1] == 950.0
    assert _building_wall("smoke", "notebook_02_finetuning", 5.0, False) == {}  # never built: nothing to keep


def test_notebook_01_reference_counts_the_steps_notebook_01_built(tmp_path, monkeypatch):
    """Later notebooks build further folders of notebook 01's step names (token data cut to other lengths): the
    reference counts only the folders the step table says notebook 01 built, and falls back to the names only
    where the run has no step table."""
    from paper_lib.core.config import load_config
    from paper_lib.matching.controls import notebook_01_reference

    monkeypatch.setenv("PAPER_RUNS_DIR", str(tmp_path))
    run = tmp_path / "smoke"
    for folder, step, seconds in [("tokenizer-aaa", "tokenizer", 3.0), ("model-babypython-bbb", "model-babypython", 900.0),
                                  ("tokens-babylm-train-ccc", "tokens-babylm-train", 4.0),
                                  ("tokens-babylm-train-ddd", "tokens-babylm-train", 7.0)]:
        (run / folder).mkdir(parents=True)
        write_json_atomic(run / folder / "manifest.json", {"step": step, "seconds": seconds, "meta": {}})
    assert notebook_01_reference(load_config("smoke")) == (914.0, None)  # no table: every folder of those names
    rows = [{"folder": f, "notebook": "01_training", "seconds": s}
            for f, s in [("tokenizer-aaa", 3.0), ("model-babypython-bbb", 900.0), ("tokens-babylm-train-ccc", 4.0)]]
    record_steps("smoke", rows + [{"folder": "tokens-babylm-train-ddd", "notebook": "05_feature_matching",
                                   "seconds": 7.0}])
    assert notebook_01_reference(load_config("smoke"))[0] == 907.0


def test_a_re_check_of_a_finished_run_keeps_its_cold_wall_time(tmp_path, monkeypatch):
    """``make paper`` on a finished run (every notebook up to date) records its own seconds as ``wall_seconds`` but
    keeps the wall time of the run that built the steps, which the cost table's total reads."""
    from paper_lib.core.artifacts import record_benchmark
    from paper_lib.pipeline import _building_wall

    monkeypatch.setenv("PAPER_RUNS_DIR", str(tmp_path))
    (tmp_path / "smoke").mkdir()
    cold = {"wall_seconds": 6921.0, **_building_wall("smoke", "make_paper", 6921.0, True)}
    record_benchmark("smoke", "make_paper", cold)
    again = {"wall_seconds": 9.1, **_building_wall("smoke", "make_paper", 9.1, False)}
    assert again == {"wall_seconds": 9.1, "building_wall_seconds": 6921.0}
