"""Notebook hygiene and views: stripping through nbstripout (stable cell ids kept), headless progress bars as text,
and the circuitsvis token views of notebooks 06 and 09."""

from __future__ import annotations

import json
import subprocess
import sys

import nbformat
import numpy as np
import pytest

from paper_lib import notebook_tools
from paper_lib.plots import interactive


def _notebook_with_output(path):
    notebook_tools.write_notebook([("md", "# title"), ("parameters", 'profile = "smoke"'), ("code", "print(1)")], path)
    nb = nbformat.read(str(path), as_version=4)
    cell = nb.cells[2]
    cell.execution_count = 3
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    cell.metadata["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00"}  # papermill's timing metadata
    nbformat.write(nb, str(path))
    return [c["id"] for c in nb.cells]


def test_strip_removes_outputs_and_keeps_cell_ids(tmp_path):
    path = tmp_path / "nb.ipynb"
    ids = _notebook_with_output(path)
    assert notebook_tools.has_outputs(path)
    assert notebook_tools.main(["check", str(path)]) == 1
    notebook_tools.strip([path])
    nb = nbformat.read(str(path), as_version=4)
    assert [c["id"] for c in nb.cells] == ids  # the stable ids the pipeline's stamp depends on
    assert nb.cells[2].outputs == [] and nb.cells[2].execution_count is None
    assert "execution" not in nb.cells[2].metadata
    assert nb.cells[1].metadata["tags"] == ["parameters"]  # papermill's tag survives
    assert not notebook_tools.has_outputs(path) and notebook_tools.main(["check", str(path)]) == 0


def test_strip_reports_a_broken_notebook(tmp_path):
    path = tmp_path / "broken.ipynb"
    path.write_text("{ not json", encoding="utf-8")
    with pytest.raises(RuntimeError, match="nbstripout"):
        notebook_tools.strip([path])


@pytest.mark.parametrize("mode, expected", [("text", "tqdm.std"), ("", "tqdm.")])
def test_headless_progress_bars_are_text(mode, expected):
    """make paper's kernels (PAPER_PROGRESS=text) draw tqdm as text for papermill's log, even with ipywidgets."""
    code = "import paper_lib; from paper_lib.data import blocks; print(blocks.tqdm.__module__)"
    env = {"PAPER_PROGRESS": mode, "PATH": "/usr/bin:/bin"}
    module = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert module.stdout.strip().startswith(expected)


def test_colored_tokens_view_carries_tokens_labels_and_values():
    tokens = [" x", " =", " 1", "\n"]
    view = interactive.colored_tokens(tokens, {"BabyPython #3": [0.0, 2.5, 0.0, 0.0], "Lua #7": [0, 1.0, 0.5, 0]})
    html = view._repr_html_() if hasattr(view, "_repr_html_") else str(view)
    assert "ColoredTokensMulti" in html and "BabyPython #3" in html and "Lua #7" in html and "2.5" in html
    with pytest.raises(ValueError, match="3 tokens"):
        interactive.colored_tokens(tokens[:3], {"a": [1.0, 2.0]})


def test_layer_views_group_series_by_text():
    row = {"tokens": ["a", "b"], "feature": 4, "matches": {"lua": {"feature": 9, "r": 0.9}},
           "acts": {"babypython": np.array([0.0, 1.0]), "lua": np.array([0.5, 0.0])}}
    views = {"layers": [{**row, "depth": 0}, {**row, "depth": 1}]}
    (view,) = interactive.layer_views(views, {"babypython": "BabyPython", "lua": "Lua"})
    html = str(view._repr_html_() if hasattr(view, "_repr_html_") else view)
    for label in ["layer 0 · BabyPython #4", "layer 1 · Lua #9"]:
        assert json.dumps(label) in html  # the view's props are JSON
