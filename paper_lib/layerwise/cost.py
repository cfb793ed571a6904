"""What notebook 09 costs: the build seconds of every step it adds, beside notebook 01's, in the benchmark file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..core.artifacts import manifest, record_benchmark, run_dir
from ..core.config import Config
from ..matching import controls
from ..models import model_dir
from .family import names


def downstream_folders(root: Path, seeds: set[str]) -> set[Path]:
    """Finished step folders of ``root`` made from ``seeds`` (folder names) or from anything made from them: the
    seeds and every folder whose manifest's inputs name one of them, followed to a fixed point."""
    folders = {p.name: p for p in root.iterdir() if p.is_dir() and (p / "manifest.json").is_file()}
    inputs = {name: json.dumps(manifest(path)["inputs"]) for name, path in folders.items()}
    found = {s for s in seeds if s in folders}
    grew = True
    while grew:
        new = {n for n, text in inputs.items() if n not in found and any(s in text for s in found)}
        found |= new
        grew = bool(new)
    return {folders[n] for n in found}


def layerwise_folders(cfg: Config) -> set[Path]:
    """The step folders notebook 09 builds: the deeper family's models and everything made from them."""
    return downstream_folders(run_dir(cfg.profile), {model_dir(cfg, n).name for n in names()})


def layerwise_cost(cfg: Config) -> dict[str, Any]:
    """Seconds of notebook 09's steps (from their manifests: the time each took when it was built) beside notebook
    01's steps and its last wall time, written to the benchmark file as ``layerwise``. Compare on a run folder made
    by one run: a step built by an earlier run (or an older code version still in the folder) counts too."""
    folders = layerwise_folders(cfg)
    by_kind: dict[str, float] = {}
    for folder in folders:
        kind = folder.name.rsplit("-", 1)[0].split("-")[0]
        by_kind[kind] = by_kind.get(kind, 0.0) + manifest(folder)["seconds"]
    seconds = sum(by_kind.values())
    base_seconds, notebook = controls.notebook_01_reference(cfg)
    values = {
        "layerwise_seconds": round(seconds, 1),
        "layerwise_steps": len(folders),
        "seconds_by_kind": {k: round(v, 1) for k, v in sorted(by_kind.items())},
        "notebook_01_steps_seconds": round(base_seconds, 1),
        "notebook_01_wall_seconds": notebook,
        "ratio_to_notebook_01_steps": round(seconds / base_seconds, 3) if base_seconds else None,
    }
    record_benchmark(cfg.profile, "layerwise", values)
    return values
