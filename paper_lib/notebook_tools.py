"""Writing and cleaning the project's notebooks.

Notebooks are committed without outputs; ``strip`` removes them with nbstripout, ``write_notebook``
builds a notebook from (kind, source) cells with a code cell tagged ``parameters`` for papermill, and ``colab``
writes every notebook's first cell (the Colab setup, generated from pyproject.toml by ``paper_lib.colab``) and the
README's Colab section, so the repository URL is edited in one place.

    python -m paper_lib.notebook_tools strip notebooks/*.ipynb
    python -m paper_lib.notebook_tools check notebooks/*.ipynb   # exit 1 if any carries outputs
    python -m paper_lib.notebook_tools colab                     # after editing [project.urls] Repository
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat

# The kernel `make setup` installs into .venv; the pipeline falls back to python3 where it is not installed.
KERNELSPEC = {"name": "feature-tracking", "display_name": "feature-tracking", "language": "python"}
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def write_notebook(cells: list[tuple[str, str]], path: Path) -> None:
    """Write a notebook of ``("md" | "code" | "parameters", source)`` cells, outputs empty."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.metadata["language_info"] = {"name": "python"}
    for index, (kind, source) in enumerate(cells):
        source = source.strip("\n")
        if kind == "md":
            cell = nbformat.v4.new_markdown_cell(source)
        else:
            cell = nbformat.v4.new_code_cell(source)
            if kind == "parameters":
                cell.metadata["tags"] = ["parameters"]
        cell["id"] = f"cell-{index:02d}"  # stable ids keep rebuilt notebooks diff-free
        nb.cells.append(cell)
    Path(path).write_text(nbformat.writes(nb) + "\n", encoding="utf-8")


def _nbstripout(paths: list[Path], verify: bool) -> subprocess.CompletedProcess:
    """nbstripout on ``paths``, keeping the cells' stable ids (its default renumbers them)."""
    command = [sys.executable, "-m", "nbstripout", "--keep-id", *(["--verify"] if verify else []), *map(str, paths)]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def has_outputs(path: Path) -> bool:
    """True if nbstripout would change the notebook (outputs, execution counts or volatile metadata)."""
    result = _nbstripout([Path(path)], verify=True)
    if result.returncode not in (0, 1):
        raise RuntimeError(f"nbstripout --verify failed on {path}: {result.stderr.strip()}")
    return result.returncode == 1


def strip(paths: list[Path]) -> None:
    """Strip outputs, execution counts and volatile metadata in place with nbstripout (which replaced a
    hand-written loop over the cells)."""
    result = _nbstripout([Path(p) for p in paths], verify=False)
    if result.returncode:
        raise RuntimeError(f"nbstripout failed: {result.stderr.strip()}")


def set_first_cell(path: Path, source: str, tag: str, cell_id: str) -> bool:
    """Make the code cell tagged ``tag`` the notebook's first cell, with ``source``: replaced where it is, inserted
    before the first cell where it is absent. Other cells and their ids are left as they are, and the file is
    written only when it changes (it feeds the pipeline's stamp). Returns True if the file changed."""
    nb = nbformat.read(str(path), as_version=4)
    tagged = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    cell = tagged[0] if tagged else nbformat.v4.new_code_cell()
    before = nbformat.writes(nb)
    nb.cells = [cell] + [c for c in nb.cells if all(c is not t for t in tagged)]  # by identity: cells may be equal
    cell.source, cell["id"] = source, cell_id
    cell.metadata["tags"] = [tag, *(t for t in cell.metadata.get("tags", []) if t != tag)]
    cell.outputs, cell.execution_count = [], None
    if nbformat.writes(nb) == before:
        return False
    nbformat.validate(nb)
    Path(path).write_text(nbformat.writes(nb) + "\n", encoding="utf-8")
    return True


def write_colab(root: Path = PROJECT_ROOT) -> list[Path]:
    """Write the Colab setup cell into every numbered notebook and the Colab section into the README, from the
    repository URL in pyproject.toml; returns the files that changed."""
    from . import colab

    notebooks = sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    repository = colab.repository_url(root / "pyproject.toml")
    source = colab.setup_cell_source(repository)
    changed = [nb for nb in notebooks if set_first_cell(nb, source, colab.TAG, colab.CELL_ID)]
    readme = root / "README.md"
    text = readme.read_text(encoding="utf-8")
    updated = colab.readme_with_section(text, colab.readme_section([nb.name for nb in notebooks], repository))
    if updated != text:
        readme.write_text(updated, encoding="utf-8")
        changed.append(readme)
    return changed


def main(argv: list[str]) -> int:
    if argv == ["colab"]:
        for path in write_colab():
            print(f"wrote {path.relative_to(PROJECT_ROOT)}")
        return 0
    if len(argv) < 2 or argv[0] not in ("strip", "check"):
        print(__doc__)
        return 2
    paths = [Path(p) for p in argv[1:]]
    if argv[0] == "strip":
        strip(paths)
        return 0
    dirty = [p for p in paths if has_outputs(p)]
    for path in dirty:
        print(f"{path} carries outputs: run `make clean-notebooks`")
    return 1 if dirty else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
