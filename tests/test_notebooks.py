"""Every numbered notebook runs headlessly with papermill on the smoke profile, and none is committed with outputs."""

import os

import pytest

from paper_lib import notebook_tools, pipeline

NOTEBOOKS = pipeline.notebooks()


def test_notebooks_exist_in_order():
    numbers = [nb.name[:2] for nb in NOTEBOOKS]
    assert numbers[:2] == ["01", "02"] and numbers == sorted(numbers)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(notebook):
    assert not notebook_tools.has_outputs(notebook), f"strip {notebook.name}: make clean-notebooks"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_runs_on_smoke(notebook, smoke_cfg, tmp_path):
    import nbformat

    record = pipeline.run_notebook(notebook, "smoke", tmp_path, force=True)
    executed = nbformat.read(str(tmp_path / notebook.name), as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code"]
    # the Colab setup comes first (a no-op here), then the parameters papermill injects its values after
    assert [c.metadata.get("tags") for c in code[:2]] == [["colab-setup"], ["parameters"]]
    assert all(c.execution_count for c in code), "every code cell ran"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors and record["seconds"] > 0
    # smoke runs write their figures to the run folder, never to the project's figures/
    run_figures = os.path.join(os.environ["PAPER_RUNS_DIR"], "smoke", "figures")
    assert any(name.startswith(notebook.name[:2]) for name in os.listdir(run_figures))


def test_pipeline_skips_unchanged_notebooks(smoke_cfg, tmp_path):
    first = pipeline.run_notebook(NOTEBOOKS[0], "smoke", tmp_path)
    second = pipeline.run_notebook(NOTEBOOKS[0], "smoke", tmp_path)
    assert not first["skipped"] and second["skipped"]


def test_pipeline_stamp_follows_the_corpora_contents(tmp_path, monkeypatch):
    """Replacing a corpus file in place (same folder, same name) makes every notebook out of date."""
    corpus = tmp_path / "data" / "lua"
    corpus.mkdir(parents=True)
    (corpus / "train.jsonl.gz").write_bytes(b"first")
    monkeypatch.setenv("PAPER_DATA_DIR", str(tmp_path / "data"))
    before = pipeline._inputs_digest(NOTEBOOKS[0], "smoke")
    assert pipeline._inputs_digest(NOTEBOOKS[0], "smoke") == before
    (corpus / "train.jsonl.gz").write_bytes(b"second, longer")
    assert pipeline._inputs_digest(NOTEBOOKS[0], "smoke") != before
