"""What notebook 08 costs: the build seconds of every step it adds, beside notebook 01's, in the benchmark file."""

from __future__ import annotations

from typing import Any

from ..core.artifacts import manifest, record_benchmark, run_dir
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
    """Seconds of notebook 08's steps (from their manifests: the time each took when it was built) beside notebook
    01's steps and its last wall time, written to the benchmark file as ``feature_dynamics``. Compare on a run
    folder made by one run: a step built by an earlier run counts with that run's time."""
    folders = dynamics_folders(cfg)
    by_kind: dict[str, float] = {}
    for folder in folders:
        kind = folder.name.rsplit("-", 1)[0].split("-")[0]
        by_kind[kind] = by_kind.get(kind, 0.0) + manifest(folder)["seconds"]
    seconds = sum(by_kind.values())
    base_seconds, notebook = controls.notebook_01_reference(cfg)
    values = {
        "dynamics_seconds": round(seconds, 1),
        "dynamics_steps": len(folders),
        "seconds_by_kind": {k: round(v, 1) for k, v in sorted(by_kind.items())},
        "notebook_01_steps_seconds": round(base_seconds, 1),
        "notebook_01_wall_seconds": notebook,
        "ratio_to_notebook_01_steps": round(seconds / base_seconds, 3) if base_seconds else None,
    }
    record_benchmark(cfg.profile, "feature_dynamics", values)
    return values
