"""The merge sweep of Figure 5: accuracy of the merged model at every t, beside the paper's own numbers.

Every point's accuracy and loss carries a 95% interval over validation blocks (as ``model_metrics``), and the
sweep's summary carries intervals for what the figure is read for: where the two accuracy curves cross, and how
much each domain's accuracy changes from t = 0 to t = 1. Both resample the validation blocks, the same blocks at
every t (a block that is hard for one merge is hard for its neighbours too, so the curves move together).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core import intervals
from ..core.artifacts import cached_step, manifest, read_json, record_benchmark, write_json_atomic
from ..core.config import Config
from ..core.registry import REGISTRY
from ..core.runtime import require_finite
from ..data import DATA_CODE, corpora_fingerprints, eval_blocks, tokenizer_hash
from .evaluate import BLOCK_SUMS_FILE, EVAL_UNIT, evaluate_lm, metric_intervals
from .merge import MergeError, _check_method, _check_t, merge_state_dicts
from .store import load_lm, model_dir

# The sweep merges and evaluates in float32, so that t = 0 and t = 1 are exactly the two fine-tunes and the
# curve shows the interpolation alone. The saved LuaStories model is written in cfg.merge.dtype (float16 in
# the paper), which rounds every weight to 11 significant bits (relative error up to ~5e-4); the notebook
# compares that model with the float32 sweep point at the same t to show what the rounding costs.
SWEEP_DTYPE = torch.float32

# The paper's own sweep (PAPER.md, "SLERP accuracy sweep"; Horn & Elliott 2024, Figure 5). The authors ran it
# with TinyStories-ft at t = 0 and Lua-ft at t = 1, i.e. the *opposite* direction to the LuaStories merge
# (base_model Lua, t = 0.58). ``paper_sweep_table`` converts it to our convention: t_ours = 1 - t_paper.
PAPER_SWEEP = {
    "t_paper": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9, 1.0],
    "tinystories_accuracy": [
        0.5196, 0.5114, 0.4942, 0.4703, 0.4422, 0.4108, 0.3927, 0.3753, 0.3427, 0.3110, 0.2793, 0.2467,
    ],
    "lua_accuracy": [0.1761, 0.2071, 0.2367, 0.2708, 0.3103, 0.3549, 0.3770, 0.3984, 0.4361, 0.4668, 0.4861, 0.4941],
}


def sweep_points(cfg: Config) -> list[float]:
    """t from 0 to 1 in steps of ``cfg.merge.sweep_stride``, plus the chosen ``cfg.merge.t``."""
    stride = cfg.merge.sweep_stride
    if not 0.0 < stride <= 1.0:
        raise MergeError(f"merge.sweep_stride must be in (0, 1]; got {stride}")
    n = int(math.floor(1.0 / stride + 1e-9))
    points = {round(i * stride, 6) for i in range(n + 1)} | {1.0, round(_check_t(cfg.merge.t), 6)}
    return sorted(points)


def _sweep_step(cfg: Config, method: str | None, model: str) -> Path:
    """The finished folder of one sweep: ``sweep.json`` (the table's rows), ``summary.json`` (``sweep_intervals``)
    and ``block_sums.npz`` (``t`` [n_t]; per domain ``{domain}_loss`` and ``{domain}_correct`` [n_blocks, n_t],
    ``{domain}_tokens`` [n_blocks])."""
    method = _check_method(method or cfg.merge.method)
    points = sweep_points(cfg)
    base_name, other_name = REGISTRY.spec(model).parents
    domains = tuple(d for parent in (base_name, other_name) for d in REGISTRY.spec(parent).domains)
    base, other = model_dir(cfg, base_name), model_dir(cfg, other_name)
    inputs = {
        "base": base.name,
        "other": other.name,
        "method": method,
        "points": points,
        "dtype": str(SWEEP_DTYPE),
        "eval_tokens": cfg.data.eval_tokens,
        "batch_size": cfg.pretrain.eval_batch_size,
        "tokenizer": tokenizer_hash(cfg),
        "corpora": corpora_fingerprints(cfg, domains, "validation"),
    }

    def build(out: Path) -> dict[str, Any]:
        started = time.time()
        blocks = {d: eval_blocks(cfg, d) for d in domains}
        merged = load_lm(cfg, base_name)
        base_sd = {k: v.detach().clone() for k, v in merged.state_dict().items()}
        other_sd = {k: v.detach().clone() for k, v in load_lm(cfg, other_name).state_dict().items()}
        rows, merge_seconds = [], 0.0
        results: dict[str, list[dict[str, Any]]] = {d: [] for d in domains}  # per domain, one result per t
        for t in tqdm(points, desc=f"{method} sweep"):
            tick = time.time()
            merged.load_state_dict(merge_state_dicts(base_sd, other_sd, t, method, SWEEP_DTYPE), strict=True)
            merge_seconds += time.time() - tick
            row = {"t": t, "method": method}
            for domain, data in blocks.items():
                metrics = evaluate_lm(merged, data, cfg.pretrain.eval_batch_size, desc=f"t={t:.2f} on {domain}")
                row[f"{domain}_accuracy"] = metrics["accuracy"]
                row[f"{domain}_loss"] = metrics["loss"]
                results[domain].append(metrics)
            rows.append(row)
        require_finite(rows, f"{method} sweep of {model}", "A merged model is broken; nothing was cached.")
        sums = {"t": np.asarray(points, dtype=np.float64)}
        for domain, per_t in results.items():
            for row, metrics in zip(rows, per_t):
                row.update({f"{domain}_{k}": v for k, v in metric_intervals(metrics).items()})
            sums[f"{domain}_loss"] = np.stack([m["block_loss"] for m in per_t], axis=1)
            sums[f"{domain}_correct"] = np.stack([m["block_correct"] for m in per_t], axis=1)
            sums[f"{domain}_tokens"] = per_t[0]["block_tokens"]  # the same blocks at every t
        np.savez(out / BLOCK_SUMS_FILE, **sums)
        write_json_atomic(out / "summary.json", _summary(sums, domains))
        write_json_atomic(out / "sweep.json", rows)
        seconds = time.time() - started
        stats = {
            "method": method,
            "points": len(points),
            "eval_tokens_per_point": int(sum(b.numel() for b in blocks.values())),
            "seconds": round(seconds, 2),
            "seconds_per_point": round(seconds / len(points), 2),
            "merge_seconds_total": round(merge_seconds, 3),
            "threads": torch.get_num_threads(),
        }
        record_benchmark(cfg.profile, f"{method}_sweep", stats)
        return stats

    code = [*DATA_CODE, "paper_lib.models.build", "paper_lib.models.merge", "paper_lib.models.evaluate",
            "paper_lib.core.intervals"]
    return cached_step(cfg.profile, f"sweep-{model}-{method}", inputs, build, code=code)


def slerp_sweep(cfg: Config, method: str | None = None, model: str = "luastories"):
    """Accuracy and loss of a merge model at every sweep t, on its two parents' fine-tuning domains (cached).

    Validation blocks are tokenised once; each merge is computed in memory (float32, see SWEEP_DTYPE) and
    loaded into one model object, so a point costs one merge plus two evaluations. Returns a table with
    columns t, method, {domain}_{accuracy,loss} (for LuaStories: lua and tinystories) and their 95% intervals
    over validation blocks, {domain}_{accuracy,loss}_interval (``core.intervals`` records);
    ``table.attrs["benchmark"]`` holds the sweep's wall time (also recorded in the profile's benchmarks.json).
    """
    import pandas as pd

    done = _sweep_step(cfg, method, model)
    table = pd.DataFrame(read_json(done / "sweep.json"))
    table.attrs["benchmark"] = manifest(done)["meta"]  # wall time of the run that built the cache
    return table


def sweep_intervals(cfg: Config, method: str | None = None, model: str = "luastories") -> dict[str, Any]:
    """The sweep's summary with its uncertainty, for the same (cached) sweep as ``slerp_sweep``.

    For a merge of parents fine-tuned on domains a and b (LuaStories: lua, tinystories): ``crossing_t`` and
    ``crossing_t_interval`` (where a's accuracy curve crosses b's; both None when the curves do not cross), and
    per domain ``{domain}_change`` and ``{domain}_change_interval`` (accuracy at t = 1 minus accuracy at t = 0).
    """
    return read_json(_sweep_step(cfg, method, model) / "summary.json")


def sweep_block_sums(cfg: Config, method: str | None = None, model: str = "luastories") -> dict[str, np.ndarray]:
    """The per-block sums behind ``slerp_sweep``: ``t`` [n_t]; ``{domain}_loss``, ``{domain}_correct``
    [n_blocks, n_t] (column i is t[i]); ``{domain}_tokens`` [n_blocks]."""
    with np.load(_sweep_step(cfg, method, model) / BLOCK_SUMS_FILE) as stored:
        return {key: stored[key] for key in stored.files}


def _summary(sums: dict[str, np.ndarray], domains: tuple[str, ...]) -> dict[str, Any]:
    t = sums["t"]
    summary: dict[str, Any] = {}
    if len(domains) == 2:  # a crossing needs exactly two curves
        first, second = ((sums[f"{d}_correct"], sums[f"{d}_tokens"]) for d in domains)
        record = crossing_interval(t, first, second)
        summary["crossing_t"] = None if record is None else record["value"]
        summary["crossing_t_interval"] = record
    for domain in domains:
        record = change_interval(t, sums[f"{domain}_correct"], sums[f"{domain}_tokens"])
        summary[f"{domain}_change"] = record["value"]
        summary[f"{domain}_change_interval"] = record
    return summary


def _with_tokens(correct_BT, tokens_B) -> np.ndarray:
    """[n_blocks, n_t + 1]: each block's correct predictions at every t, then its token count, so that a
    bootstrap that resamples rows keeps a block's counts and its size together."""
    correct_BT = np.asarray(correct_BT, dtype=np.float64)
    tokens_B = np.asarray(tokens_B, dtype=np.float64)
    if correct_BT.ndim != 2 or tokens_B.shape != (correct_BT.shape[0],):
        raise ValueError(f"per-block counts must be [n_blocks, n_t] with tokens [n_blocks]; got {correct_BT.shape} "
                         f"and {tokens_B.shape}")
    return np.column_stack([correct_BT, tokens_B])


def _accuracy_curve(counts) -> np.ndarray:
    """Accuracy at every t of resampled ``_with_tokens`` rows: correct predictions over tokens, all blocks."""
    return counts[:, :-1].sum(0) / counts[:, -1].sum()


def crossing_interval(t, first, second) -> intervals.Interval | None:
    """Where two accuracy curves cross (``crossing_point``), with a 95% bootstrap interval over validation blocks.

    ``first`` and ``second`` are ``(correct_BT, tokens_B)`` per domain: correct argmax predictions of every block
    (rows) at every ``t`` (columns), and each block's number of predicted tokens. Each domain's blocks are
    resampled on their own (the two domains have different blocks), but a resampled block keeps its counts at
    every t, so each resample is a whole pair of curves. Resamples whose curves do not cross are left out (the
    method says how many). None when the curves themselves do not cross.
    """
    t = np.asarray(t, dtype=np.float64)
    a, b = _with_tokens(*first), _with_tokens(*second)
    if a.shape[1] != len(t) + 1 or b.shape[1] != len(t) + 1:
        raise ValueError(f"per-block counts have {a.shape[1] - 1} and {b.shape[1] - 1} columns for {len(t)} values of t")

    def crossing(a, b) -> float:
        found = crossing_point(t, _accuracy_curve(a), _accuracy_curve(b))
        return math.nan if found is None else found

    if math.isnan(crossing(a, b)):
        return None
    return intervals.bootstrap((a, b), crossing, unit=EVAL_UNIT, paired=False)


def change_interval(t, correct_BT, tokens_B) -> intervals.Interval:
    """Accuracy at the largest t minus accuracy at the smallest (t = 1 minus t = 0 in a sweep), with a 95%
    bootstrap interval over validation blocks, paired: a resampled block counts at both ends."""
    t = np.asarray(t, dtype=np.float64)
    counts = _with_tokens(correct_BT, tokens_B)
    if counts.shape[1] != len(t) + 1:
        raise ValueError(f"per-block counts have {counts.shape[1] - 1} columns for {len(t)} values of t")
    start, end = int(np.argmin(t)), int(np.argmax(t))
    return intervals.bootstrap(
        (counts[:, start], counts[:, end], counts[:, -1]),
        lambda c0, c1, n, axis=-1: c1.sum(axis) / n.sum(axis) - c0.sum(axis) / n.sum(axis),
        unit=EVAL_UNIT, paired=True, vectorized=True,
    )


def paper_sweep_table():
    """The paper's sweep (PAPER_SWEEP) converted to our direction: column ``t`` = 1 - t_paper (t = 0 is Lua)."""
    import pandas as pd

    table = pd.DataFrame(PAPER_SWEEP)
    table.insert(0, "t", (1.0 - table["t_paper"]).round(6))
    return table.sort_values("t").reset_index(drop=True)


def crossing_point(t, a, b) -> float | None:
    """The first t where curves ``a`` and ``b`` (sampled at ``t``) cross, linearly interpolated; None if never."""
    points = sorted(zip(t, a, b))
    for (t0, a0, b0), (t1, a1, b1) in zip(points, points[1:]):
        d0, d1 = a0 - b0, a1 - b1
        if d0 == 0:
            return float(t0)
        if d0 * d1 < 0:
            return float(t0 + (t1 - t0) * d0 / (d0 - d1))
    last_t, last_a, last_b = points[-1]
    return float(last_t) if last_a == last_b else None


def sweep_summary(table, domains: tuple[str, str] = ("lua", "tinystories"),
                  uncertainty: dict[str, Any] | None = None) -> dict[str, Any]:
    """One summary row of a sweep table (``slerp_sweep``'s or ``paper_sweep_table``'s), what Figure 5 is read for.

    ``domains`` (a, b): t = 0 is a's fine-tune, t = 1 b's. The row: ``crossing_t`` (``crossing_point``, None when
    the curves do not cross); ``{a}_falls`` / ``{a}_worst_rise`` and ``{b}_rises`` / ``{b}_worst_fall``
    (``monotonicity``); ``{d}_change`` (accuracy at the largest t minus at the smallest). Each of
    ``crossing_t_interval`` and ``{d}_change_interval`` is taken from ``uncertainty`` (``sweep_intervals``) and is
    None without it: the paper's table has no per-block numbers to make an interval from.
    """
    a, b = domains
    uncertainty = uncertainty or {}
    t = table["t"]
    row: dict[str, Any] = {"crossing_t": crossing_point(t, table[f"{a}_accuracy"], table[f"{b}_accuracy"])}
    falls = monotonicity(t, table[f"{a}_accuracy"], increasing=False)
    rises = monotonicity(t, table[f"{b}_accuracy"], increasing=True)
    row.update({f"{a}_falls": falls["monotonic"], f"{a}_worst_rise": falls["worst_step"],
                f"{b}_rises": rises["monotonic"], f"{b}_worst_fall": rises["worst_step"]})
    row["crossing_t_interval"] = uncertainty.get("crossing_t_interval")
    ordered = table.sort_values("t")
    for domain in domains:
        row[f"{domain}_change"] = float(ordered[f"{domain}_accuracy"].iloc[-1] - ordered[f"{domain}_accuracy"].iloc[0])
        row[f"{domain}_change_interval"] = uncertainty.get(f"{domain}_change_interval")
    return row


def monotonicity(t, values, increasing: bool, tolerance: float = 0.005) -> dict[str, Any]:
    """Whether ``values`` move in one direction along ``t``, allowing steps against it of up to ``tolerance``.

    Returns ``{"monotonic": bool, "worst_step": float}``, where worst_step is the largest step against the
    expected direction (0 if none).
    """
    ordered = [v for _, v in sorted(zip(t, values))]
    steps = [b - a for a, b in zip(ordered, ordered[1:])]
    against = [-s if increasing else s for s in steps]
    worst = max([0.0, *against])
    return {"monotonic": worst <= tolerance, "worst_step": float(worst)}
