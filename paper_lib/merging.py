"""Model merging: the LuaStories SLERP merge of the Lua and TinyStories fine-tunes, and the t sweep (Figure 5).

Conventions follow the paper's mergekit configuration: ``base_model`` is Lua and ``t`` is the interpolation
factor, so t = 0 is Lua, t = 1 is TinyStories and LuaStories sits at t = 0.58. SLERP is per tensor (every
weight matrix is one vector); where the two tensors are nearly parallel (|cos| > 0.9995) mergekit falls back
to linear interpolation, and so do we, because we call mergekit's own kernel.

Two code paths, tested to agree bit for bit (tests/test_merging.py):

* ``run_mergekit`` runs mergekit's ``run_merge`` on a YAML-equivalent ``MergeConfiguration`` (the paper's
  tool). The LuaStories artifact (``merged_model_dir``) is built this way, so its folder also holds the
  ``mergekit_config.yml`` that produced it.
* ``merge_state_dicts`` calls mergekit's SLERP kernel (``mergekit.merge_methods.slerp.slerp``) on in-memory
  state dicts. The sweep uses it: run_merge writes every merge to disk and re-reads both checkpoints, which
  for a 21-point sweep costs more than merging in memory and loading the weights into one model object.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .artifacts import cached_step, manifest, read_json, record_benchmark, write_json_atomic
from .config import Config
from .data import corpus_fingerprint, eval_blocks, tokenizer_hash

MERGE_VERSION = 1
SWEEP_VERSION = 1
METHODS = ("slerp", "linear")
# mergekit's SLERP falls back to linear interpolation when |cos(angle)| between two tensors exceeds this
# (the default of mergekit.merge_methods.slerp.slerp; the slerp merge method does not expose it).
DOT_THRESHOLD = 0.9995
# The sweep merges and evaluates in float32, so that t = 0 and t = 1 are exactly the two fine-tunes and the
# curve shows the interpolation alone. The saved LuaStories model is written in cfg.merge.dtype (float16 in
# the paper), which rounds every weight to 11 significant bits (relative error up to ~5e-4); the notebook
# compares that model with the float32 sweep point at the same t to show what the rounding costs.
SWEEP_DTYPE = torch.float32
SWEEP_DOMAINS = ("lua", "tinystories")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")

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


class MergeError(ValueError):
    """Inputs that cannot be merged (mismatched checkpoints, a bad t or method)."""


# ------------------------------------------------------------------------------------------- tensor math


def _check_t(t: float) -> float:
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0.0 <= float(t) <= 1.0:
        raise MergeError(f"the interpolation factor t must be a number in [0, 1] (0 = Lua, 1 = TinyStories); got {t!r}")
    return float(t)


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise MergeError(f"unknown merge method {method!r}; set merge.method to one of {', '.join(METHODS)}")
    return method


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise MergeError(f"merge dtype {dtype!r} is not a torch floating-point dtype (e.g. float16, bfloat16, float32)")
    return value


def slerp_tensor(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """mergekit's SLERP of two whole tensors (v0 at t = 0), with its linear fallback for parallel tensors.

    mergekit batches tensors along a leading axis and interpolates each batch entry as one flattened vector;
    a single tensor is a batch of one. The arithmetic runs in float32 (float64 for float64 inputs) and the
    result has the inputs' dtype, as in a mergekit run with ``dtype`` set to that type.
    """
    from mergekit.merge_methods.slerp import slerp

    if v0.shape != v1.shape:
        raise MergeError(f"cannot interpolate tensors of shapes {tuple(v0.shape)} and {tuple(v1.shape)}")
    t_1 = torch.tensor([t], dtype=torch.float64 if v0.dtype == torch.float64 else torch.float32)
    return slerp(t_1, v0.unsqueeze(0), v1.unsqueeze(0), dot_threshold=DOT_THRESHOLD)[0]


def linear_tensor(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """Linear interpolation ``(1 - t) v0 + t v1``, computed exactly as mergekit's ``linear`` method does.

    mergekit's linear method takes per-model weights (here 1 - t and t), accumulates in float32 and divides
    by the sum of the weights (normalize: true); repeating its arithmetic keeps both paths identical.
    """
    if v0.shape != v1.shape:
        raise MergeError(f"cannot interpolate tensors of shapes {tuple(v0.shape)} and {tuple(v1.shape)}")
    dtype = torch.float64 if v0.dtype == torch.float64 else torch.float32
    weights = torch.tensor([1.0 - t, t], dtype=dtype)
    result = torch.zeros_like(v0, dtype=dtype)
    for tensor, weight in zip((v0, v1), weights):
        result.addcmul_(tensor, weight)  # the same fused op as mergekit's, for identical rounding
    return result.div_(weights.sum()).to(v0.dtype)


def merge_state_dicts(
    base_sd: dict[str, torch.Tensor],
    other_sd: dict[str, torch.Tensor],
    t: float,
    method: str = "slerp",
    dtype: str | torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """Merge two state dicts tensor by tensor: ``base_sd`` at t = 0, ``other_sd`` at t = 1.

    Inputs are first cast to ``dtype`` (mergekit's ``dtype:`` option does the same when it loads the
    checkpoints); results are in ``dtype``. Equal to mergekit's ``run_merge`` of the same checkpoints.
    """
    t = _check_t(t)
    method = _check_method(method)
    dtype = _dtype(dtype)
    if set(base_sd) != set(other_sd):
        missing = sorted(set(base_sd) ^ set(other_sd))
        raise MergeError(
            f"the checkpoints have different tensors ({missing[:5]}...): they are not the same architecture"
        )
    interpolate = slerp_tensor if method == "slerp" else linear_tensor
    merged = {}
    for name, v0 in base_sd.items():
        v1 = other_sd[name]
        if v0.shape != v1.shape:
            raise MergeError(f"tensor {name} has shape {tuple(v0.shape)} in one model, {tuple(v1.shape)} in the other")
        merged[name] = interpolate(t, v0.to(dtype), v1.to(dtype))
    return merged


def tensor_geometry(base_sd: dict[str, torch.Tensor], other_sd: dict[str, torch.Tensor]):
    """Per tensor: size, norms, cosine and angle between the two models, and whether SLERP falls back to linear.

    Fine-tunes of one parent are often so close that most tensors are parallel to within mergekit's
    threshold; then SLERP *is* linear interpolation for them.
    """
    import pandas as pd

    rows = []
    for name, v0 in base_sd.items():
        a = v0.double().flatten()
        b = other_sd[name].double().flatten()
        norm_a, norm_b = float(a.norm()), float(b.norm())
        cosine = float(a @ b / max(norm_a * norm_b, 1e-300))
        rows.append(
            {
                "tensor": name,
                "numel": a.numel(),
                "norm_base": norm_a,
                "norm_other": norm_b,
                "cosine": cosine,
                "angle_deg": math.degrees(math.acos(max(-1.0, min(1.0, cosine)))),
                "linear_fallback": abs(cosine) > DOT_THRESHOLD,
            }
        )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ mergekit runs


def mergekit_config(base_path: Path, other_path: Path, t: float, method: str = "slerp", dtype: str = "float16") -> dict:
    """The mergekit YAML configuration (as a dict) of a two-model merge, base at t = 0.

    For ``slerp`` this is the paper's LuaStories config: ``base_model`` Lua, ``t``, ``dtype``. For ``linear``
    the two models get weights 1 - t and t.
    """
    t = _check_t(t)
    _check_method(method)
    _dtype(dtype)
    base, other = str(Path(base_path).resolve()), str(Path(other_path).resolve())
    if method == "slerp":
        return {
            "merge_method": "slerp",
            "base_model": base,
            "models": [{"model": base}, {"model": other}],
            "parameters": {"t": t},
            "dtype": dtype,
        }
    return {
        "merge_method": "linear",
        "models": [{"model": base, "parameters": {"weight": 1.0 - t}}, {"model": other, "parameters": {"weight": t}}],
        "dtype": dtype,
    }


def run_mergekit(
    base_path: Path, other_path: Path, out_path: Path, t: float, method: str = "slerp", dtype: str = "float16"
) -> Path:
    """Merge two local HF checkpoints with mergekit's ``run_merge`` into ``out_path`` (weights, config, tokenizer).

    Only local paths are used, so nothing touches the hub; the tokenizer is copied from the base model by
    mergekit, and checked here because mergekit only logs a failed copy.
    """
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    for path in (base_path, other_path):
        if not (Path(path) / "config.json").is_file():
            raise MergeError(f"{path} is not an HF checkpoint folder (no config.json); pass the models' model/ folders")
    config = MergeConfiguration.model_validate(mergekit_config(base_path, other_path, t, method, dtype))
    out_path = Path(out_path)
    out_path.mkdir(parents=True, exist_ok=True)
    run_merge(config, str(out_path), MergeOptions(copy_tokenizer=True, quiet=True, random_seed=0))
    if (Path(base_path) / "tokenizer.json").is_file():
        missing = [f for f in TOKENIZER_FILES if not (out_path / f).is_file()]
        if missing:
            raise MergeError(f"mergekit did not copy the tokenizer ({missing} missing in {out_path}); see its log")
    return out_path


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of an HF safetensors checkpoint folder, as stored (no dtype change)."""
    from safetensors.torch import load_file

    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise MergeError(f"no .safetensors files in {path}")
    state = {}
    for file in files:
        state.update(load_file(file))
    return state


# ----------------------------------------------------------------------------------------- the artifact


def _parents(cfg: Config) -> tuple[Path, Path]:
    from .training import model_dir

    return model_dir(cfg, "lua"), model_dir(cfg, "tinystories")


def merged_model_dir(cfg: Config) -> Path:
    """The LuaStories model: mergekit's merge of Lua (base, t = 0) and TinyStories (t = 1) at ``cfg.merge.t``.

    A cached step folder laid out like the trained models (``model/`` with safetensors, config and tokenizer,
    plus the manifest), written in ``cfg.merge.dtype`` as mergekit does. ``training.load_lm`` reads it back
    as float32, so analyses run in float32 on the float16-rounded weights.
    """
    import importlib.metadata

    t = _check_t(cfg.merge.t)
    method = _check_method(cfg.merge.method)
    _dtype(cfg.merge.dtype)
    lua, tinystories = _parents(cfg)
    inputs = {"lua": lua.name, "tinystories": tinystories.name, "method": method, "t": t, "dtype": cfg.merge.dtype}

    def build(out: Path) -> dict[str, Any]:
        started = time.time()
        run_mergekit(lua / "model", tinystories / "model", out / "model", t, method, cfg.merge.dtype)
        geometry = tensor_geometry(_load_state_dict(lua / "model"), _load_state_dict(tinystories / "model"))
        return {
            "merge_seconds": round(time.time() - started, 3),
            "mergekit_version": importlib.metadata.version("mergekit"),
            "tensors": len(geometry),
            "tensors_linear_fallback": int(geometry["linear_fallback"].sum()),
            "min_cosine": float(geometry["cosine"].min()),
        }

    return cached_step(cfg.profile, "model-luastories", inputs, build, MERGE_VERSION)


def merge_geometry(cfg: Config):
    """``tensor_geometry`` of the Lua and TinyStories fine-tunes (how far apart SLERP has to travel)."""
    lua, tinystories = _parents(cfg)
    return tensor_geometry(_load_state_dict(lua / "model"), _load_state_dict(tinystories / "model"))


# ------------------------------------------------------------------------------------------------ sweep


def sweep_points(cfg: Config) -> list[float]:
    """t from 0 to 1 in steps of ``cfg.merge.sweep_stride``, plus the chosen ``cfg.merge.t``."""
    stride = cfg.merge.sweep_stride
    if not 0.0 < stride <= 1.0:
        raise MergeError(f"merge.sweep_stride must be in (0, 1]; got {stride}")
    n = int(math.floor(1.0 / stride + 1e-9))
    points = {round(i * stride, 6) for i in range(n + 1)} | {1.0, round(_check_t(cfg.merge.t), 6)}
    return sorted(points)


def slerp_sweep(cfg: Config, method: str | None = None):
    """Accuracy and loss on the Lua and TinyStories validation sets of the merge at every sweep t (cached).

    Validation blocks are tokenised once; each merge is computed in memory (float32, see SWEEP_DTYPE) and
    loaded into one model object, so a point costs one merge plus two evaluations. Returns a table with
    columns t, method, {lua,tinystories}_{accuracy,loss}; ``table.attrs["benchmark"]`` holds the sweep's
    wall time (also recorded in the profile's benchmarks.json).
    """
    import pandas as pd

    from .training import evaluate_lm, load_lm

    method = _check_method(method or cfg.merge.method)
    points = sweep_points(cfg)
    lua, tinystories = _parents(cfg)
    inputs = {
        "lua": lua.name,
        "tinystories": tinystories.name,
        "method": method,
        "points": points,
        "dtype": str(SWEEP_DTYPE),
        "eval_tokens": cfg.data.eval_tokens,
        "batch_size": cfg.pretrain.eval_batch_size,
        "tokenizer": tokenizer_hash(cfg),
        "corpora": {d: corpus_fingerprint(cfg, d, "validation") for d in SWEEP_DOMAINS},
    }

    def build(out: Path) -> dict[str, Any]:
        started = time.time()
        blocks = {d: eval_blocks(cfg, d) for d in SWEEP_DOMAINS}
        model = load_lm(cfg, "lua")
        base_sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
        other_sd = {k: v.detach().clone() for k, v in load_lm(cfg, "tinystories").state_dict().items()}
        rows, merge_seconds = [], 0.0
        for t in tqdm(points, desc=f"{method} sweep"):
            tick = time.time()
            model.load_state_dict(merge_state_dicts(base_sd, other_sd, t, method, SWEEP_DTYPE), strict=True)
            merge_seconds += time.time() - tick
            row = {"t": t, "method": method}
            for domain, data in blocks.items():
                metrics = evaluate_lm(model, data, cfg.pretrain.eval_batch_size, desc=f"t={t:.2f} on {domain}")
                row[f"{domain}_accuracy"] = metrics["accuracy"]
                row[f"{domain}_loss"] = metrics["loss"]
            rows.append(row)
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

    done = cached_step(cfg.profile, f"sweep-{method}", inputs, build, SWEEP_VERSION)
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
