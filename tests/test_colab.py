"""The Colab setup cell: generated from pyproject.toml into every notebook and the README, inert outside Colab,
and on Colab a clone, an editable install without torch, and the runs on Drive only when Drive is mounted."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import types

import nbformat
import pytest

from paper_lib import colab, notebook_tools

# the pipeline's run order, read without importing the pipeline (and the package behind it), to stay fast
NOTEBOOKS = sorted((notebook_tools.PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
REFRESH = f"run `{colab.REFRESH_COMMAND}`"


def _run_cell(source: str) -> str:
    """Execute a cell's source as a kernel would, in a namespace of its own; returns what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(source, "colab-setup", "exec"), {"__name__": "__main__"})
    return printed.getvalue()


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_every_notebook_starts_with_the_generated_cell(notebook):
    first = nbformat.read(str(notebook), as_version=4).cells[0]
    assert first.cell_type == "code" and first.metadata.get("tags") == [colab.TAG], f"{notebook.name}: {REFRESH}"
    assert first.source == colab.setup_cell_source(), f"{notebook.name} has a stale Colab cell: {REFRESH}"
    assert first["id"] == colab.CELL_ID


def test_readme_section_is_the_generated_one():
    readme = (notebook_tools.PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert len(NOTEBOOKS) >= 10
    expected = colab.readme_section([nb.name for nb in NOTEBOOKS])
    assert expected in readme, f"README's Colab section is stale: {REFRESH}"
    assert readme.count(colab.README_START) == 1
    assert readme.index("## Two commands") < readme.index(colab.README_START) < readme.index("## Profiles")


def test_urls_come_from_pyproject(tmp_path):
    assert colab.repository_url() == "https://github.com/feature-tracking/feature-tracking"
    assert colab.colab_url("01_training.ipynb") == ("https://colab.research.google.com/github/feature-tracking/"
                                                     "feature-tracking/blob/main/notebooks/01_training.ipynb")
    fork = tmp_path / "pyproject.toml"
    fork.write_text('[project]\nname = "x"\n[project.urls]\nRepository = "https://github.com/someone/fork.git"\n')
    url = colab.repository_url(fork)
    assert url == "https://github.com/someone/fork"
    assert f'REPOSITORY = "{url}"' in colab.setup_cell_source(url)
    assert "github/someone/fork/blob/main/notebooks/02_finetuning.ipynb" in colab.readme_section(
        ["02_finetuning.ipynb"], url)
    fork.write_text('[project]\nname = "x"\n')
    with pytest.raises(colab.ColabError, match="no Repository"):
        colab.repository_url(fork)
    with pytest.raises(colab.ColabError, match="not https://github.com"):
        colab.setup_cell_source("https://gitlab.com/someone/fork")


def test_generator_inserts_then_replaces_keeping_ids(tmp_path):
    path = tmp_path / "01_x.ipynb"
    notebook_tools.write_notebook([("md", "# title"), ("parameters", 'profile = "smoke"')], path)
    assert notebook_tools.set_first_cell(path, "print(1)", colab.TAG, colab.CELL_ID)
    assert notebook_tools.set_first_cell(path, "print(2)", colab.TAG, colab.CELL_ID)
    assert not notebook_tools.set_first_cell(path, "print(2)", colab.TAG, colab.CELL_ID)  # unchanged, not rewritten
    cells = nbformat.read(str(path), as_version=4).cells
    assert [c["id"] for c in cells] == [colab.CELL_ID, "cell-00", "cell-01"]
    assert cells[0].source == "print(2)" and cells[2].metadata["tags"] == ["parameters"]
    section = colab.readme_section(["01_x.ipynb"])
    readme = colab.readme_with_section("# t\n\n## Two commands\n\ntext\n\n## Profiles\n", section)
    assert readme == f"# t\n\n## Two commands\n\ntext\n\n{section}\n\n## Profiles\n"
    assert colab.readme_with_section(readme, section) == readme


def test_cell_does_nothing_outside_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    env, cwd, path = dict(os.environ), os.getcwd(), list(sys.path)
    assert _run_cell(colab.setup_cell_source()) == ""
    assert dict(os.environ) == env and os.getcwd() == cwd and sys.path == path


@pytest.mark.parametrize("drive_mounted", [True, False], ids=["drive", "no-drive"])
def test_cell_on_colab_clones_installs_and_keeps_runs_on_drive(drive_mounted, tmp_path, monkeypatch):
    project, drive = tmp_path / "feature-tracking", tmp_path / "MyDrive"
    if drive_mounted:
        drive.mkdir()
    commands, folders = [], []
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    def run(command, **kwargs):
        commands.append((command, kwargs))
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(os, "chdir", folders.append)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for var in ("PAPER_RUNS_DIR", "PAPER_FIGURES_DIR"):
        monkeypatch.setenv(var, "unset")  # recorded, so whatever the cell sets is undone after the test
        monkeypatch.delenv(var)

    printed = _run_cell(colab.setup_cell_source(project_dir=str(project), drive_dir=str(drive)))

    assert [c for c, _ in commands] == [
        ["git", "clone", "--depth", "1", colab.repository_url(), str(project)],
        [sys.executable, "-m", "pip", "install", "--quiet", "-c", str(tmp_path / "pip-constraints.txt"), "-e",
         str(project)],
    ]
    assert commands[0][1].get("check"), "a failed clone stops the cell"
    assert commands[1][1].get("capture_output"), "pip's output is kept, to be shown if it fails"
    assert not any("torch" in part for command, _ in commands for part in command), "torch is never installed"
    import torch

    assert (tmp_path / "pip-constraints.txt").read_text() == f"torch=={torch.__version__}\n"  # Colab's is pinned
    assert sys.path[0] == str(project) and folders == [str(project / "notebooks")]
    if drive_mounted:
        assert os.environ["PAPER_RUNS_DIR"] == str(drive / "feature-tracking" / "runs")
        assert os.environ["PAPER_FIGURES_DIR"] == str(drive / "feature-tracking" / "figures")
        assert "runs and figures are kept on Drive" in printed
    else:
        assert "PAPER_RUNS_DIR" not in os.environ and "PAPER_FIGURES_DIR" not in os.environ
        assert sum("drive.mount" in line for line in printed.splitlines()) == 1
    assert "cloned" in printed and "installed paper_lib" in printed


def test_cell_on_colab_reuses_an_existing_clone(tmp_path, monkeypatch):
    """A second run in the same session (or after a restart) installs again but does not clone again."""
    project = tmp_path / "feature-tracking"
    project.mkdir()
    commands = []
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: commands.append(command) or
                        subprocess.CompletedProcess(command, 0, "", ""))
    monkeypatch.setattr(os, "chdir", lambda folder: None)
    monkeypatch.setattr(sys, "path", [str(project)])
    _run_cell(colab.setup_cell_source(project_dir=str(project), drive_dir=str(tmp_path / "no-drive")))
    assert [c[:4] for c in commands] == [[sys.executable, "-m", "pip", "install"]]
    assert sys.path == [str(project)], "the path is added once"


def test_cell_on_colab_shows_pips_output_when_the_install_fails(tmp_path, monkeypatch):
    project = tmp_path / "feature-tracking"
    project.mkdir()
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: subprocess.CompletedProcess(
        command, 1, "", "ERROR: Cannot install paper_lib because these package versions have conflicting dependencies"))
    monkeypatch.setattr(os, "chdir", lambda folder: pytest.fail("a failed install must stop the cell"))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(RuntimeError, match="pip could not install"):
        exec(compile(colab.setup_cell_source(project_dir=str(project), drive_dir=str(tmp_path)), "cell", "exec"),
             {"__name__": "__main__"})
    assert "conflicting dependencies" in printed.getvalue()
