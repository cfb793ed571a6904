"""What notebook 11 costs: the build seconds of every crosscoder step, beside notebook 01's, in the benchmark file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.artifacts import run_dir
from ..core.config import Config
from ..layerwise.cost import downstream_folders
from ..matching import controls
from .store import crosscoder_dir

STEP_PREFIX = "crosscoder-"


def crosscoder_pairs(cfg: Config) -> list[tuple[str, str]]:
    """The pairs notebook 11 trains a crosscoder for: ``crosscoder.pairs`` and the control (a model with itself)."""
    pairs = [tuple(pair) for pair in cfg.crosscoder.pairs]
    return pairs + ([(cfg.crosscoder.control, cfg.crosscoder.control)] if cfg.crosscoder.control else [])


def crosscoder_folders(cfg: Config) -> set[Path]:
    """The step folders notebook 11 builds: every pair's crosscoder and the crosscoder steps made from them (the
    latents' partner features); the SAEs and matches it reads are notebook 04's and 05's."""
    seeds = {crosscoder_dir(cfg, parent, child).name for parent, child in crosscoder_pairs(cfg)}
    return {p for p in downstream_folders(run_dir(cfg.profile), seeds) if p.name.startswith(STEP_PREFIX)}


def crosscoder_cost(cfg: Config) -> dict[str, Any]:
    """Seconds of notebook 11's steps beside notebook 01's, written to the benchmark file as ``crosscoder``
    (``controls.section_cost``). Compare on a run folder made by one run."""
    return controls.section_cost(cfg, crosscoder_folders(cfg), "crosscoder", "crosscoder")
