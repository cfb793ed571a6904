"""The merge path and merge methods compared: accuracy and feature survival of both parents along each method's
mixing parameter (notebook 08).

Every merge is made by mergekit's ``run_merge`` (written in float32, so t = 0 is the first parent exactly) into the
step's folder, measured, and deleted; only the numbers are kept. One mixing parameter ``t`` runs from the merge's
first parent (Lua, t = 0) to its second (TinyStories, t = 1) for every method:

* ``linear``: weights 1 - t and t (mergekit's ``linear``, normalised);
* ``slerp``: mergekit's ``slerp`` with ``base_model`` the first parent, the paper's method;
* ``task_arithmetic`` and ``ties``: task vectors from the family's root (BabyPython, mergekit's ``base_model``),
  weighted ``min(1, 2(1 - t))`` and ``min(1, 2t)``. The path passes through each method's usual merge at t = 0.5
  (both task vectors at full weight: base + tau_Lua + tau_TinyStories for task arithmetic, TIES's trimmed,
  sign-elected mean) and reaches one fine-tune at each end (TIES trims its task vector there too). Weights of
  1 - t and t would make task arithmetic the linear merge again.

At each point: loss and accuracy on both parents' domains (``cfg.dynamics.eval_blocks`` validation blocks each, per
block for intervals) and the drift of both parents' SAEs (``dynamics.drift``) on the merge's matching sample.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..core import intervals
from ..core.artifacts import cached_step, read_json, write_json_atomic
from ..core.config import Config
from ..core.registry import REGISTRY
from ..core.runtime import require_finite
from ..data import corpora_fingerprints, eval_blocks, tokenizer_hash
from ..matching.pairs import activation_sample_dir, sample_domains
from ..models import model_dir
from ..models.build import load_hf, to_hooked
from ..models.evaluate import evaluate_lm
from ..models.merge import MergeError
from ..models.sweep import crossing_interval, crossing_point, sweep_points
from ..saes import sae_dir
from .drift import DRIFT_CODE, DRIFT_UNIT, compute_drift, load_drift, save_drift

METHODS = ("linear", "slerp", "task_arithmetic", "ties")
TASK_VECTOR_METHODS = ("task_arithmetic", "ties")


def task_weights(t: float) -> tuple[float, float]:
    """The task-vector weights of the two fine-tunes at mixing parameter ``t`` (see the module docstring)."""
    return min(1.0, 2.0 * (1.0 - t)), min(1.0, 2.0 * t)


def method_config(method: str, first: Path, second: Path, root: Path, t: float, density: float = 0.5,
                  dtype: str = "float32") -> dict[str, Any]:
    """mergekit's configuration (as a dict) of one point: ``first`` at t = 0, ``second`` at t = 1, ``root`` the
    base of the task vectors. Paths are HF checkpoint folders."""
    if method not in METHODS:
        raise MergeError(f"unknown merge method {method!r}; dynamics.methods takes {', '.join(METHODS)}")
    if not 0.0 <= t <= 1.0:
        raise MergeError(f"the mixing parameter t must lie in [0, 1]; got {t}")
    first, second, root = (str(Path(p).resolve()) for p in (first, second, root))
    if method == "slerp":
        return {"merge_method": "slerp", "base_model": first, "models": [{"model": first}, {"model": second}],
                "parameters": {"t": t}, "dtype": dtype}
    if method == "linear":
        return {"merge_method": "linear", "dtype": dtype,
                "models": [{"model": first, "parameters": {"weight": 1.0 - t}},
                           {"model": second, "parameters": {"weight": t}}]}
    w_first, w_second = task_weights(t)
    extra = {"density": density} if method == "ties" else {}
    return {"merge_method": method, "base_model": root, "dtype": dtype,
            "models": [{"model": root}, {"model": first, "parameters": {"weight": w_first, **extra}},
                       {"model": second, "parameters": {"weight": w_second, **extra}}]}


def run_merge(config: dict[str, Any], out: Path) -> Path:
    """mergekit's ``run_merge`` of ``config`` into ``out`` (local paths only; the tokenizer is copied)."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge as mergekit_run

    out.mkdir(parents=True, exist_ok=True)
    mergekit_run(MergeConfiguration.model_validate(config), str(out),
                 MergeOptions(copy_tokenizer=True, quiet=True, random_seed=0))
    if not (out / "config.json").is_file():
        raise MergeError(f"mergekit wrote no checkpoint into {out}; see its log")
    return out


def path_points(cfg: Config, method: str) -> list[float]:
    """The mixing parameters a method is measured at: ``cfg.dynamics.merge_points``, and for SLERP also every t
    of Figure 5's sweep, so its survival curves sit beside the accuracy curves."""
    points = set(round(float(t), 6) for t in cfg.dynamics.merge_points)
    if method == "slerp":
        points |= set(sweep_points(cfg))
    return sorted(points)


def _parents(model: str) -> tuple[str, str, str]:
    spec = REGISTRY.spec(model)
    if spec.recipe != "merge":
        raise MergeError(f"model '{model}' is a {spec.recipe}, not a merge: name a merge model (e.g. luastories)")
    first, second = spec.parents
    return first, second, REGISTRY.root(first)


def merge_point_dir(cfg: Config, method: str, t: float, model: str = "luastories") -> Path:
    """One point of a merge path (cached): ``metrics.json`` and ``block_sums.npz`` on both parents' domains, and
    ``<parent>_drift.npz`` / ``<parent>_summary.json`` for each parent's SAE."""
    first, second, root = _parents(model)
    folders = {name: model_dir(cfg, name) for name in (first, second, root)}
    domains = REGISTRY.data_domains(model)
    n = cfg.dynamics.eval_blocks
    samples = {p: sample_domains(cfg, p, model) for p in (first, second)}
    config = method_config(method, folders[first] / "model", folders[second] / "model", folders[root] / "model", t,
                           cfg.dynamics.ties_density)
    inputs = {
        "method": method, "t": float(t), "models": {k: v.name for k, v in folders.items()},
        "config": {k: v for k, v in config.items() if k not in ("models", "base_model")},
        "weights": [m.get("parameters") for m in config["models"]],
        "eval_blocks": n, "tokenizer": tokenizer_hash(cfg), "corpora": corpora_fingerprints(cfg, domains, "validation"),
        "saes": {p: sae_dir(cfg, p).name for p in (first, second)},
        "samples": {p: activation_sample_dir(cfg, p, samples[p]).name for p in (first, second)},
        "threshold": cfg.matching.threshold,
    }
    if method in ("linear", "slerp"):
        inputs["models"].pop(root)

    def build(out: Path) -> dict[str, Any]:
        merged = run_merge(config, out / "merged" / "model")
        hf = load_hf(out / "merged")
        metrics, sums = {}, {}
        for domain in domains:
            result = evaluate_lm(hf, eval_blocks(cfg, domain)[:n], cfg.pretrain.eval_batch_size,
                                 desc=f"{method} t={t:.2f} on {domain}")
            metrics[domain] = {"loss": result["loss"], "accuracy": result["accuracy"]}
            sums.update({f"{domain}_correct": result["block_correct"], f"{domain}_loss": result["block_loss"],
                         f"{domain}_tokens": result["block_tokens"]})
        require_finite(metrics, f"the {method} merge at t = {t}", "The merge is broken; nothing was cached.")
        hooked = to_hooked(hf)
        for parent in (first, second):
            drift, summary = compute_drift(cfg, parent, samples[parent], hooked, evaluate=False)
            save_drift(out, drift, summary, prefix=f"{parent}_")
        np.savez(out / "block_sums.npz", **sums)
        write_json_atomic(out / "metrics.json", metrics)
        shutil.rmtree(merged.parent)  # ~4 bytes a weight: the numbers are what is kept
        return {}

    return cached_step(cfg.profile, f"merge-point-{model}-{method}", inputs, build,
                       code=[*DRIFT_CODE, "paper_lib.models.evaluate", "paper_lib.models.build"])


def merge_path(cfg: Config, method: str, model: str = "luastories") -> dict[str, Any]:
    """Every point of one method's path: ``t``; per domain ``{domain}_correct`` / ``{domain}_loss`` [blocks, n_t]
    and ``{domain}_tokens``; per parent ``{parent}_survives`` [live features, n_t] (bool) and the table rows."""
    first, second, _ = _parents(model)
    points = path_points(cfg, method)
    rows, per_t = [], []
    for t in tqdm(points, desc=f"{method} path", leave=False):
        folder = merge_point_dir(cfg, method, t, model)
        with np.load(folder / "block_sums.npz") as stored:
            per_t.append({k: stored[k] for k in stored.files})
        metrics = read_json(folder / "metrics.json")
        row: dict[str, Any] = {"method": method, "t": t}
        for domain, values in metrics.items():
            row.update({f"{domain}_{k}": v for k, v in values.items()})
        for parent in (first, second):
            drift, summary = load_drift(folder, prefix=f"{parent}_")
            row[f"{parent}_survival"] = summary["survival_share"]["value"] if summary["survival_share"] else None
            row[f"{parent}_survival_interval"] = summary["survival_share"]
            row[f"{parent}_mean_drift"] = summary["mean_r"]
            per_t[-1][f"{parent}_r"] = drift["r"][drift["live"]]
        rows.append(row)
    path: dict[str, Any] = {"t": np.asarray(points), "rows": rows}
    for key in per_t[0]:
        if key.endswith("_tokens"):
            path[key] = per_t[0][key]
        elif key.endswith("_r"):
            r_FT = np.stack([p[key] for p in per_t], axis=1)
            path[key.removesuffix("_r") + "_survives"] = np.nan_to_num(r_FT, nan=-np.inf) >= cfg.matching.threshold
        else:
            path[key] = np.stack([p[key] for p in per_t], axis=1)
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


def methods_table(cfg: Config, model: str = "luastories") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every method's path (long table: one row per method and t) and one row per method read at its
    accuracy-crossing point: the crossing t (interval over validation blocks), the accuracy there, and each
    parent's feature survival there (interval over that parent's live features), with the smaller of the two."""
    first, second, _ = _parents(model)
    da, db = REGISTRY.spec(first).domains[0], REGISTRY.spec(second).domains[0]
    rows, summary = [], []
    for method in cfg.dynamics.methods:
        path = merge_path(cfg, method, model)
        rows += path["rows"]
        t = path["t"]
        crossing = crossing_interval(t, (path[f"{da}_correct"], path[f"{da}_tokens"]),
                                     (path[f"{db}_correct"], path[f"{db}_tokens"]))
        entry: dict[str, Any] = {"method": method, "crossing_t": crossing["value"] if crossing else None,
                                 "crossing_t_interval": crossing}
        if crossing:
            c = crossing["value"]
            accuracy = {d: path[f"{d}_correct"].sum(0) / path[f"{d}_tokens"].sum() for d in (da, db)}
            entry["accuracy_at_crossing"] = at_t(t, accuracy[da], c)
            for parent in (first, second):
                record = survival_at_interval(t, path[f"{parent}_survives"], c)
                entry[f"{parent}_survival_at_crossing"] = record["value"]
                entry[f"{parent}_survival_at_crossing_interval"] = record
            entry["both_parents_survival_at_crossing"] = min(entry[f"{p}_survival_at_crossing"] for p in (first, second))
        for parent in (first, second):
            record = half_survival_interval(t, path[f"{parent}_survives"])
            entry[f"{parent}_half_survival_t"] = record["value"] if record else None
            entry[f"{parent}_half_survival_t_interval"] = record
        summary.append(entry)
    return pd.DataFrame(rows), pd.DataFrame(summary)
