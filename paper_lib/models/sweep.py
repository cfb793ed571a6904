"""The merge sweep of Figure 5: accuracy of the merged model at every t, beside the paper's own numbers."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..core.artifacts import cached_step, manifest, read_json, record_benchmark, write_json_atomic
from ..core.config import Config
from ..core.registry import REGISTRY
from ..core.runtime import require_finite
from ..data import DATA_CODE, corpora_fingerprints, eval_blocks, tokenizer_hash
from .evaluate import evaluate_lm
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


def slerp_sweep(cfg: Config, method: str | None = None, model: str = "luastories"):
    """Accuracy and loss of a merge model at every sweep t, on its two parents' fine-tuning domains (cached).

    Validation blocks are tokenised once; each merge is computed in memory (float32, see SWEEP_DTYPE) and
    loaded into one model object, so a point costs one merge plus two evaluations. Returns a table with
    columns t, method, {domain}_{accuracy,loss} (for LuaStories: lua and tinystories);
    ``table.attrs["benchmark"]`` holds the sweep's wall time (also recorded in the profile's benchmarks.json).
    """
    import pandas as pd

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
        for t in tqdm(points, desc=f"{method} sweep"):
            tick = time.time()
            merged.load_state_dict(merge_state_dicts(base_sd, other_sd, t, method, SWEEP_DTYPE), strict=True)
            merge_seconds += time.time() - tick
            row = {"t": t, "method": method}
            for domain, data in blocks.items():
                metrics = evaluate_lm(merged, data, cfg.pretrain.eval_batch_size, desc=f"t={t:.2f} on {domain}")
                row[f"{domain}_accuracy"] = metrics["accuracy"]
                row[f"{domain}_loss"] = metrics["loss"]
            rows.append(row)
        require_finite(rows, f"{method} sweep of {model}", "A merged model is broken; nothing was cached.")
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

    code = [*DATA_CODE, "paper_lib.models.build", "paper_lib.models.merge", "paper_lib.models.evaluate"]
    done = cached_step(cfg.profile, f"sweep-{model}-{method}", inputs, build, code=code)
    table = pd.DataFrame(read_json(done / "sweep.json"))
    table.attrs["benchmark"] = manifest(done)["meta"]  # wall time of the run that built the cache
    return table


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
