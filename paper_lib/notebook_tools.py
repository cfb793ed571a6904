"""Writing and cleaning the project's notebooks.

Notebooks are committed without outputs; ``strip`` removes outputs and execution counts, ``write_notebook``
builds a notebook from (kind, source) cells with the first code cell tagged ``parameters`` for papermill.

    python -m paper_lib.notebook_tools strip notebooks/*.ipynb
    python -m paper_lib.notebook_tools check notebooks/*.ipynb   # exit 1 if any carries outputs
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

# The kernel `make setup` installs into .venv; the pipeline falls back to python3 where it is not installed.
KERNELSPEC = {"name": "feature-tracking", "display_name": "feature-tracking", "language": "python"}


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


def has_outputs(path: Path) -> bool:
    """True if any code cell of the notebook carries outputs or an execution count."""
    nb = nbformat.read(str(path), as_version=4)
    return any(c.cell_type == "code" and (c.outputs or c.execution_count) for c in nb.cells)


def strip(path: Path) -> bool:
    """Remove outputs and execution counts in place; returns True if the file changed."""
    nb = nbformat.read(str(path), as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count):
            cell.outputs, cell.execution_count = [], None
            changed = True
    if changed:
        Path(path).write_text(nbformat.writes(nb) + "\n", encoding="utf-8")
    return changed


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("strip", "check"):
        print(__doc__)
        return 2
    paths = [Path(p) for p in argv[1:]]
    if argv[0] == "strip":
        for path in paths:
            if strip(path):
                print(f"stripped {path}")
        return 0
    dirty = [p for p in paths if has_outputs(p)]
    for path in dirty:
        print(f"{path} carries outputs: run `make clean-notebooks`")
    return 1 if dirty else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
