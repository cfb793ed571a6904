"""What notebook 08 costs: the build seconds of every step it adds, beside notebook 01's, in the benchmark file."""

from __future__ import annotations

from typing import Any

from ..core.artifacts import run_dir
from ..core.config import Config
from ..core.registry import REGISTRY
from ..matching import controls
from ..matching.pairs import match_saes, sample_domains
from .measures import checkpoint_drift
from .merge_points import merge_point_dir
from .merges import path_points
from .steps import MATCH_METHOD, eval_dir, snapshot_match_dir, snapshot_sae_dir
from .trajectory import checkpoints, fine_tunes, trajectory_dir


def dynamics_folders(cfg: Config, merge_model: str = "luastories") -> set:
    """The step folders notebook 08 builds beyond the earlier notebooks' (all cached, so this is cheap)."""
    folders = set()
    for name in fine_tunes():
        folders.add(trajectory_dir(cfg, name))
        parent = REGISTRY.spec(name).parents[0]
        found = match_saes(cfg, parent, parent, MATCH_METHOD, sample_domains(cfg, parent, name),
                           controls.other_seeding(cfg.sae.init), cfg.sae.init)["many"]
        folders.add(run_dir(cfg.profile) / found.extra["folder"])
        for ckpt in checkpoints(cfg, name):
            folders |= {eval_dir(cfg, ckpt.path, ckpt.key), checkpoint_drift(cfg, ckpt)}
            if ckpt.nominal in cfg.dynamics.sae_fractions:
                folders |= {snapshot_sae_dir(cfg, ckpt), snapshot_match_dir(cfg, ckpt)}
    for method in cfg.dynamics.methods:
        folders |= {merge_point_dir(cfg, method, t, merge_model) for t in path_points(cfg, method)}
    return folders


def dynamics_cost(cfg: Config) -> dict[str, Any]:
    """Seconds of notebook 08's steps beside notebook 01's, written to the benchmark file as ``feature_dynamics``
    (``controls.section_cost``)."""
    return controls.section_cost(cfg, dynamics_folders(cfg), "dynamics", "feature_dynamics")
