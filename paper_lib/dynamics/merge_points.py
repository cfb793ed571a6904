"""One point of a merge path, cached: a mergekit merge at mixing parameter ``t``, measured and deleted.

Every merge is made by mergekit's ``run_merge`` (written in float32, so t = 0 is the first parent exactly) into the
step's folder, measured, and deleted; only the numbers are kept. One mixing parameter ``t`` runs from the merge's
first parent (Lua, t = 0) to its second (TinyStories, t = 1) for every method:

* ``linear``: weights 1 - t and t (mergekit's ``linear``, normalised);
* ``slerp``: mergekit's ``slerp`` with ``base_model`` the first parent, the paper's method;
* ``task_arithmetic`` and ``ties``: task vectors from the family's root (BabyPython, mergekit's ``base_model``),
  weighted ``min(1, 2(1 - t))`` and ``min(1, 2t)``. The path passes through each method's usual merge at t = 0.5
  (both task vectors at full weight) and reaches one fine-tune at each end (TIES trims its task vector there too).
  Weights of 1 - t and t would make task arithmetic the linear merge again. TIES runs with ``normalize: false``
  (the trimmed, sign-elected task vectors are summed, weighted): with mergekit's default disjoint mean a weight only
  sets a task vector's share of the sign vote, and an entry kept from one model alone enters at full size however
  small its weight, so the path would jump away from each fine-tune at its first step.

At each point: the drift of both parents' SAEs (``dynamics.drift``) on the merge's matching sample, and at the points
of ``cfg.dynamics.merge_points`` (where the methods are compared) loss and accuracy on both parents' domains
(``cfg.dynamics.eval_blocks`` validation blocks each, per block for intervals). SLERP's extra points, Figure 5's
sweep, have their accuracy in notebook 03 already.
"""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..core.artifacts import cached_step, write_json_atomic
from ..core.config import Config
from ..core.registry import REGISTRY
from ..core.runtime import require_finite
from ..data import corpora_fingerprints, tokenizer_hash
from ..matching.pairs import activation_sample_dir, sample_domains
from ..models import model_dir
from ..models.build import load_hf, to_hooked
from ..models.evaluate import evaluate_lm
from ..models.merge import MergeError
from ..saes import sae_dir
from .drift import DRIFT_CODE, compute_drift, save_drift
from .steps import first_blocks

METHODS = ("linear", "slerp", "task_arithmetic", "ties")


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
    config = {"merge_method": method, "base_model": root, "dtype": dtype,
              "models": [{"model": root}, {"model": first, "parameters": {"weight": w_first, **extra}},
                         {"model": second, "parameters": {"weight": w_second, **extra}}]}
    if method == "ties":
        config["parameters"] = {"normalize": False}
    return config


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


def merge_parents(model: str) -> tuple[str, str, str]:
    """A merge model's two parents (t = 0, t = 1) and the root their task vectors start from."""
    spec = REGISTRY.spec(model)
    if spec.recipe != "merge":
        raise MergeError(f"model '{model}' is a {spec.recipe}, not a merge: name a merge model (e.g. luastories)")
    first, second = spec.parents
    return first, second, REGISTRY.root(first)


def evaluated(cfg: Config, t: float) -> bool:
    """Whether a merge point gets loss and accuracy (a point of ``cfg.dynamics.merge_points``), or drift only."""
    return any(abs(float(t) - float(p)) < 1e-9 for p in cfg.dynamics.merge_points)


def merge_point_dir(cfg: Config, method: str, t: float, model: str = "luastories") -> Path:
    """One point of a merge path (cached): ``<parent>_drift.npz`` / ``<parent>_summary.json`` for each parent's SAE
    and, where ``evaluated``, ``metrics.json`` and ``block_sums.npz`` on both parents' domains."""
    first, second, root = merge_parents(model)
    folders = {name: model_dir(cfg, name) for name in (first, second, root)}
    domains = REGISTRY.data_domains(model)
    n = cfg.dynamics.eval_blocks
    samples = {p: sample_domains(cfg, p, model) for p in (first, second)}
    config = method_config(method, folders[first] / "model", folders[second] / "model", folders[root] / "model", t,
                           cfg.dynamics.ties_density)
    inputs = {
        "method": method, "t": float(t), "models": {k: v.name for k, v in folders.items()},
        "config": {k: v for k, v in config.items() if k not in ("models", "base_model")},
        "weights": [m.get("parameters") for m in config["models"]], "mergekit": importlib.metadata.version("mergekit"),
        "eval_blocks": n, "tokenizer": tokenizer_hash(cfg), "corpora": corpora_fingerprints(cfg, domains, "validation"),
        "saes": {p: sae_dir(cfg, p).name for p in (first, second)},
        "samples": {p: activation_sample_dir(cfg, p, samples[p]).name for p in (first, second)},
        "threshold": cfg.matching.threshold, "evaluate": evaluated(cfg, t),
    }
    if method in ("linear", "slerp"):
        inputs["models"].pop(root)

    def build(out: Path) -> dict[str, Any]:
        merged = run_merge(config, out / "merged" / "model")
        hf = load_hf(out / "merged")
        metrics, sums = {}, {}
        for domain in domains if evaluated(cfg, t) else ():
            result = evaluate_lm(hf, first_blocks(cfg, domain, n), cfg.pretrain.eval_batch_size,
                                 desc=f"{method} t={t:.2f} on {domain}")
            metrics[domain] = {"loss": result["loss"], "accuracy": result["accuracy"]}
            sums.update({f"{domain}_correct": result["block_correct"], f"{domain}_loss": result["block_loss"],
                         f"{domain}_tokens": result["block_tokens"]})
        require_finite(metrics, f"the {method} merge at t = {t}", "The merge is broken; nothing was cached.")
        hooked = to_hooked(hf)
        for parent in (first, second):
            drift, summary = compute_drift(cfg, parent, samples[parent], hooked, evaluate=False)
            save_drift(out, drift, summary, prefix=f"{parent}_")
        if sums:
            np.savez(out / "block_sums.npz", **sums)
        write_json_atomic(out / "metrics.json", metrics)
        shutil.rmtree(merged.parent)  # ~4 bytes a weight: the numbers are what is kept
        return {}

    return cached_step(cfg.profile, f"merge-point-{model}-{method}", inputs, build,
                       code=[*DRIFT_CODE, "paper_lib.models.evaluate", "paper_lib.models.build",
                             "paper_lib.dynamics.steps"])
