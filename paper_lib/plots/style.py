"""Saving figures and the numbers behind them, and the project's plot style (every notebook uses these).

Every figure is saved in the run folder (``runs/<profile>/figures/``). Runs of the ``cpu`` and ``paper``
profiles also write it to the project's ``figures/`` folder, next to a JSON file with its numbers, so the
committed figures are exactly what ``make paper`` produced; ``smoke`` runs (the tests) never touch it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

from ..core.artifacts import figures_dir, run_dir, write_json_atomic
from ..core.config import Config

PUBLISHED_PROFILES = ("cpu", "paper")  # profiles whose figures land in figures/
STAGING_ENV = "PAPER_FIGURES_STAGING"
FIGURE_FORMATS = ("pdf", "png")


def setup_style() -> None:
    """The shared look of every figure (seaborn's paper context on a white grid)."""
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", font_scale=1.2)
    matplotlib.rcParams.update({"figure.dpi": 110, "savefig.dpi": 200, "savefig.bbox": "tight"})


def final_dirs(profile: str) -> dict[str, Path]:
    """Where a profile's figures end up: ``run`` (its run folder) and, for published profiles, ``published``."""
    dirs = {"run": run_dir(profile) / "figures"}
    if profile in PUBLISHED_PROFILES:
        dirs["published"] = figures_dir()
    return dirs


def output_dirs(cfg: Config) -> list[Path]:
    """Folders a figure or result is written to for this profile: ``final_dirs``, or under ``make paper`` their
    staging twins (``$PAPER_FIGURES_STAGING``/run and /published), which the pipeline moves into place only when
    the whole notebook succeeded, so a failed run changes no figure.
    """
    staging = os.environ.get(STAGING_ENV)
    dirs = [Path(staging) / name if staging else path for name, path in final_dirs(cfg.profile).items()]
    for path in dirs:
        path.mkdir(parents=True, exist_ok=True)
    return dirs


def _to_jsonable(obj: Any) -> Any:
    """DataFrames (at any depth) as lists of records, Series as dicts, numpy scalars and arrays as Python."""
    import numpy as np

    if hasattr(obj, "to_dict") and hasattr(obj, "columns"):
        return [_to_jsonable(r) for r in obj.to_dict(orient="records")]
    if hasattr(obj, "to_dict") and hasattr(obj, "index"):
        return _to_jsonable(obj.to_dict())
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and obj != obj:  # NaN is not JSON
        return None
    return obj


def save_results(obj: Any, cfg: Config, name: str) -> list[Path]:
    """Write the numbers behind a figure or table as ``<name>.json`` (DataFrames as lists of records)."""
    payload = {"profile": cfg.profile, "data": _to_jsonable(obj)}
    paths = []
    for folder in output_dirs(cfg):
        path = folder / f"{name}.json"
        write_json_atomic(path, payload)
        paths.append(path)
    return paths


def save_figure(fig, cfg: Config, name: str) -> list[Path]:
    """Save a matplotlib figure as ``<name>.pdf`` and ``<name>.png`` (written atomically)."""
    import os
    import tempfile

    paths = []
    for folder in output_dirs(cfg):
        for fmt in FIGURE_FORMATS:
            path = folder / f"{name}.{fmt}"
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=f".{fmt}")
            os.close(fd)
            # No creation date in the PDF: an unchanged figure stays byte-identical, so diffs show real changes.
            fig.savefig(tmp, format=fmt, metadata={"CreationDate": None} if fmt == "pdf" else None)
            os.replace(tmp, path)
            paths.append(path)
    return paths
