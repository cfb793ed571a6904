"""The merge path and merge methods compared: accuracy and feature survival of both parents along each method's
mixing parameter (notebook 08). The points themselves (mergekit, evaluation, drift) are ``merge_points``' cached
steps; this module reads them into curves, crossings and the methods table."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..core import intervals
from ..core.artifacts import read_json
from ..core.config import Config
from ..core.registry import REGISTRY
from ..models.sweep import crossing_interval, crossing_point, sweep_points
from .drift import DRIFT_UNIT, load_drift, surviving
from .merge_points import merge_parents, merge_point_dir


def path_points(cfg: Config, method: str) -> list[float]:
    """The mixing parameters a method is measured at: ``cfg.dynamics.merge_points``, and for SLERP also every t
    of Figure 5's sweep, so its survival curves sit beside the accuracy curves."""
    points = set(round(float(t), 6) for t in cfg.dynamics.merge_points)
    if method == "slerp":
        points |= set(sweep_points(cfg))
    return sorted(points)


def merge_path(cfg: Config, method: str, model: str = "luastories") -> dict[str, Any]:
    """Every point of one method's path: ``t`` [n_t] and per parent ``{parent}_survives`` [live features, n_t]
    (bool); ``eval_t`` [n_e] (the evaluated points) with per domain ``{domain}_correct`` / ``{domain}_loss``
    [blocks, n_e] and ``{domain}_tokens``; ``rows``, one per point (accuracy and loss where evaluated)."""
    first, second, _ = merge_parents(model)
    points = path_points(cfg, method)
    rows, sums, eval_t, survives = [], [], [], {p: [] for p in (first, second)}
    for t in tqdm(points, desc=f"{method} path", leave=False):
        folder = merge_point_dir(cfg, method, t, model)
        row: dict[str, Any] = {"method": method, "t": t}
        for domain, values in read_json(folder / "metrics.json").items():
            row.update({f"{domain}_{k}": v for k, v in values.items()})
        if (folder / "block_sums.npz").is_file():
            with np.load(folder / "block_sums.npz") as stored:
                sums.append({k: stored[k] for k in stored.files})
            eval_t.append(t)
        for parent in (first, second):
            drift, summary = load_drift(folder, prefix=f"{parent}_")
            row[f"{parent}_survival"] = summary["survival_share"]["value"] if summary["survival_share"] else None
            row[f"{parent}_survival_interval"] = summary["survival_share"]
            row[f"{parent}_mean_drift"] = summary["mean_r"]
            survives[parent].append(surviving(drift, cfg.matching.threshold))
        rows.append(row)
    path: dict[str, Any] = {"t": np.asarray(points), "eval_t": np.asarray(eval_t), "rows": rows}
    path.update({f"{p}_survives": np.stack(flags, axis=1) for p, flags in survives.items()})
    for key in sums[0] if sums else ():
        path[key] = sums[0][key] if key.endswith("_tokens") else np.stack([s[key] for s in sums], axis=1)
    return path


def half_survival_interval(t, survives_FT) -> intervals.Interval | None:
    """Where a survival curve (the share of features surviving at each ``t``) crosses one half, interpolated, with a
    95% bootstrap over features (each resampled feature keeps its verdict at every t). None when it never does."""
    t = np.asarray(t, dtype=np.float64)

    def crossing(flags) -> float:
        found = crossing_point(t, flags.mean(0), np.full(len(t), 0.5))
        return math.nan if found is None else found

    if math.isnan(crossing(survives_FT)):
        return None
    return intervals.bootstrap(survives_FT.astype(np.float64), crossing, unit=DRIFT_UNIT)


def at_t(t, values, target: float) -> float:
    """``values`` (sampled at ``t``) linearly interpolated at ``target``."""
    return float(np.interp(target, np.asarray(t, dtype=np.float64), np.asarray(values, dtype=np.float64)))


def survival_at_interval(t, survives_FT, target: float) -> intervals.Interval:
    """The share of features surviving at ``target`` (interpolated between the two nearest points of ``t``), with a
    95% bootstrap over features."""
    t = np.asarray(t, dtype=np.float64)
    return intervals.bootstrap(survives_FT.astype(np.float64), lambda f: at_t(t, f.mean(0), target), unit=DRIFT_UNIT)


def _restricted(path: dict[str, Any], keep: list[float]) -> dict[str, Any]:
    """A path at the points of ``keep`` only, survival and accuracy on the same grid (every method is compared on
    the same points)."""
    at = {name: np.isin(np.round(path[name], 6), np.round(keep, 6)) for name in ("t", "eval_t")}
    if not np.array_equal(np.round(path["t"][at["t"]], 6), np.round(path["eval_t"][at["eval_t"]], 6)):
        raise ValueError(f"the points {keep} are not all evaluated on this path ({list(path['eval_t'])})")
    restricted = {}
    for key, value in path.items():
        if key in ("rows",) or key.endswith("_tokens"):
            restricted[key] = value
        elif key.endswith("_survives") or key == "t":
            restricted[key] = value[..., at["t"]]
        else:
            restricted[key] = value[..., at["eval_t"]]
    return restricted


def methods_table(cfg: Config, model: str = "luastories") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every method's path (long table: one row per method and t) and one row per method read at its
    accuracy-crossing point, on the points every method shares (``cfg.dynamics.merge_points``): the crossing t
    (interval over validation blocks), the accuracy there (each method crosses at its own accuracy), and each
    parent's feature survival there (interval over that parent's live features, with the crossing taken at its
    point estimate and the curve interpolated linearly between grid points), with the weaker parent's share. The
    t where half of each parent's features survive is read on each method's full path (SLERP's includes Figure 5's
    sweep points)."""
    first, second, _ = merge_parents(model)
    da, db = REGISTRY.spec(first).domains[0], REGISTRY.spec(second).domains[0]
    rows, summary = [], []
    for method in cfg.dynamics.methods:
        full = merge_path(cfg, method, model)
        rows += full["rows"]
        path = _restricted(full, list(cfg.dynamics.merge_points))
        t = path["t"]
        crossing = crossing_interval(t, (path[f"{da}_correct"], path[f"{da}_tokens"]),
                                     (path[f"{db}_correct"], path[f"{db}_tokens"]))
        entry: dict[str, Any] = {"method": method, "grid": [float(x) for x in t],
                                 "crossing_t": crossing["value"] if crossing else None, "crossing_t_interval": crossing}
        if crossing:
            c = crossing["value"]
            accuracy = {d: path[f"{d}_correct"].sum(0) / path[f"{d}_tokens"].sum() for d in (da, db)}
            entry["accuracy_at_crossing"] = at_t(t, accuracy[da], c)
            for parent in (first, second):
                record = survival_at_interval(t, path[f"{parent}_survives"], c)
                entry[f"{parent}_survival_at_crossing"] = record["value"]
                entry[f"{parent}_survival_at_crossing_interval"] = record
            entry["weaker_parent_survival_at_crossing"] = min(entry[f"{p}_survival_at_crossing"] for p in (first, second))
        for parent in (first, second):
            record = half_survival_interval(full["t"], full[f"{parent}_survives"])
            entry[f"{parent}_half_survival_t"] = record["value"] if record else None
            entry[f"{parent}_half_survival_t_interval"] = record
        summary.append(entry)
    return pd.DataFrame(rows), pd.DataFrame(summary)
