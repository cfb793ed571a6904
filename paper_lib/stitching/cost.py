"""What notebook 10 costs: the build seconds of every step it adds, beside notebook 01's, in the benchmark file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.artifacts import run_dir
from ..core.config import Config
from ..layerwise.cost import downstream_folders
from ..matching import controls
from ..models import model_dir
from .family import small


def stitching_folders(cfg: Config) -> set[Path]:
    """The step folders notebook 10 builds: the small model and everything made from it, and every ``stitch-``
    step (the maps between the deeper base and its fine-tune included). The deeper family's models and SAEs are
    notebook 09's, reused, and not counted."""
    root = run_dir(cfg.profile)
    stitched = {p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("stitch-")}
    return downstream_folders(root, {model_dir(cfg, small()).name, *stitched})


def stitching_cost(cfg: Config) -> dict[str, Any]:
    """Seconds of notebook 10's steps beside notebook 01's, written to the benchmark file as ``stitching``
    (``controls.section_cost``). Compare on a run folder made by one run."""
    return controls.section_cost(cfg, stitching_folders(cfg), "stitching", "stitching")
