"""The paper's shapes run end to end on CPU (the ``paper_shapes`` profile: tiny token counts, the paper's model,
vocabulary, SAE width and context, and matching on the released sample size), and the benchmark file holds each
notebook's peak memory and the per-step table. Slow (about an hour and a half on 2 cores): ``make test-all`` runs it.

``PAPER_SHAPES_RUNS_DIR=<folder>`` runs the pipeline in that runs folder instead of a temporary one: a run made
there with the same code (``python -m paper_lib.pipeline --profile paper_shapes``) is up to date, so the tests check
it without running it again, and an interrupted one is finished."""

import json
import os

import numpy as np
import pytest

from paper_lib import pipeline
from paper_lib.core.artifacts import read_json, run_dir
from paper_lib.core.config import load_config

PROFILE = "paper_shapes"


@pytest.fixture(scope="module")
def paper_shapes_run(tmp_path_factory, data_dir):
    """The whole pipeline on the profile, in its own run and figure folders (the committed figures are untouched)."""
    runs = os.environ.get("PAPER_SHAPES_RUNS_DIR") or tmp_path_factory.mktemp("paper_shapes_runs")
    figures = tmp_path_factory.mktemp("paper_shapes_figures")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PAPER_RUNS_DIR", str(runs))
        patch.setenv("PAPER_FIGURES_DIR", str(figures))
        assert pipeline.main(["--profile", PROFILE]) == 0
        yield run_dir(PROFILE)


def _manifests(run, prefix: str) -> list[dict]:
    return [read_json(path) for path in sorted(run.glob(f"{prefix}*/manifest.json"))]


@pytest.mark.slow
def test_every_notebook_completed(paper_shapes_run):
    executed = paper_shapes_run / "notebooks"
    for notebook in pipeline.notebooks():
        assert (executed / notebook.name).is_file() and (executed / f"{notebook.stem}.stamp.json").is_file()
        assert not (executed / f"{notebook.stem}.failed.ipynb").exists()


@pytest.mark.slow
def test_the_shapes_are_the_papers(paper_shapes_run):
    cfg = load_config(PROFILE)
    assert (cfg.model.hidden_size, cfg.model.intermediate_size, cfg.model.num_attention_heads) == (512, 1024, 16)
    tokenizer = json.loads(next(paper_shapes_run.glob("tokenizer-*/tokenizer.json")).read_text())  # not its .lock
    assert len(tokenizer["model"]["vocab"]) == 32000  # the BPE really reached 32,000 tokens
    sae = next(m for m in _manifests(paper_shapes_run, "sae-babypython-") if m["step"] == "sae-babypython")
    saved = json.loads((paper_shapes_run / f"{sae['step']}-{sae['hash']}" / "sae" / "cfg.json").read_text())
    assert (saved["d_in"], saved["d_sae"]) == (1024, 16384)


@pytest.mark.slow
def test_matching_ran_16384_by_16384_on_the_released_sample(paper_shapes_run):
    samples = [m["meta"] for m in _manifests(paper_shapes_run, "matching-acts-babypython-")]
    assert samples and all(meta["d_sae"] == 16384 and meta["n_positions"] == 24000 for meta in samples)
    match = next(m for m in _manifests(paper_shapes_run, "matching-babypython-lua-position-")
                 if m["step"] == "matching-babypython-lua-position")
    assert match["meta"]["n_positions"] == 24000
    arrays = np.load(paper_shapes_run / f"{match['step']}-{match['hash']}" / "many.npz")
    assert arrays["best_child_for_parent"].shape == (16384,) and arrays["best_parent_for_child"].shape == (16384,)


@pytest.mark.slow
def test_the_benchmark_file_holds_memory_and_the_step_table(paper_shapes_run):
    bench = read_json(paper_shapes_run / "benchmarks.json")
    for notebook in pipeline.notebooks():
        record = bench[f"notebook_{notebook.stem}"]
        assert record["wall_seconds"] > 0 and record["peak_rss_mib"] > 100 and record["peak_hwm_mib"] > 100
    rows = bench[pipeline.STEP_TABLE]["rows"]
    steps = {row["step"] for row in rows}
    assert {"tokenizer", "model-babypython"} <= steps and any(s.startswith("sae-") for s in steps)
    assert all(row["seconds"] is not None and row["notebook_peak_rss_mib"] for row in rows)
    assert any(row["tokens_per_second"] for row in rows if row["step"] == "model-babypython")
