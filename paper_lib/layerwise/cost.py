"""What notebook 09 costs: the build seconds of every step it adds, beside notebook 01's, in the benchmark file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..core.artifacts import is_complete, manifest, run_dir
from ..core.config import Config
from ..matching import controls
from ..models import model_dir
from .family import names


def downstream_folders(root: Path, seeds: set[str]) -> set[Path]:
    """Finished step folders of ``root`` made from ``seeds`` (folder names) or from anything made from them: the
    seeds and every folder whose manifest's inputs name one of them, followed to a fixed point."""
    folders = {p.name: p for p in root.iterdir() if p.is_dir() and is_complete(p)}  # a broken copy is no step
    inputs = {name: json.dumps(manifest(path)["inputs"]) for name, path in folders.items()}
    found = {s for s in seeds if s in folders}
    grew = True
    while grew:
        new = {n for n, text in inputs.items() if n not in found and any(s in text for s in found)}
        found |= new
        grew = bool(new)
    return {folders[n] for n in found}


# Steps made from the deeper family by later notebooks (notebook 10's stitching reuses its base and Lua fine-tune):
# theirs, so notebook 09's cost is the same whether or not they have run.
LATER_STEPS = ("stitch-",)


def layerwise_folders(cfg: Config) -> set[Path]:
    """The step folders notebook 09 builds: the deeper family's models and everything made from them, except the
    later notebooks' steps (``LATER_STEPS``)."""
    found = downstream_folders(run_dir(cfg.profile), {model_dir(cfg, n).name for n in names()})
    return {p for p in found if not p.name.startswith(LATER_STEPS)}


def layerwise_cost(cfg: Config) -> dict[str, Any]:
    """Seconds of notebook 09's steps (models and SAEs included) beside notebook 01's, written to the benchmark file
    as ``layerwise`` (``controls.section_cost``). A folder of an older code version still in the run folder counts
    too: compare on a run folder made by one run."""
    return controls.section_cost(cfg, layerwise_folders(cfg), "layerwise", "layerwise")
