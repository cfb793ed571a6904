"""Model merging with mergekit: SLERP and linear interpolation of two checkpoints, on disk and in memory.

Conventions follow the paper's mergekit configuration: ``base_model`` is the merge's first parent (Lua for
LuaStories) and ``t`` is the interpolation factor, so t = 0 is the base, t = 1 the other parent, and LuaStories
sits at t = 0.58. SLERP is per tensor (every weight matrix is one vector); where the two tensors are nearly
parallel (|cos| > 0.9995) mergekit falls back to linear interpolation, and so do we, because we call mergekit's
own kernel.

Two code paths, tested to agree bit for bit (tests/test_merging.py):

* ``run_mergekit`` runs mergekit's ``run_merge`` on a YAML-equivalent ``MergeConfiguration`` (the paper's
  tool). The merged model's artifact (``merged_dir``) is built this way, so its folder also holds the
  ``mergekit_config.yml`` that produced it.
* ``merge_state_dicts`` calls mergekit's SLERP kernel (``mergekit.merge_methods.slerp.slerp``) on in-memory
  state dicts. The sweep (``models.sweep``) uses it: run_merge writes every merge to disk and re-reads both
  checkpoints, which for a 21-point sweep costs more than merging in memory into one model object.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from ..core.artifacts import cached_step
from ..core.config import Config
from ..core.registry import ModelSpec

METHODS = ("slerp", "linear")
# mergekit's SLERP falls back to linear interpolation when |cos(angle)| between two tensors exceeds this
# (the default of mergekit.merge_methods.slerp.slerp; the slerp merge method does not expose it).
DOT_THRESHOLD = 0.9995
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


class MergeError(ValueError):
    """Inputs that cannot be merged (mismatched checkpoints, a bad t or method)."""


def _check_t(t: float) -> float:
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0.0 <= float(t) <= 1.0:
        raise MergeError(f"the interpolation factor t must be a number in [0, 1] (0 = the base model, 1 = the other); got {t!r}")
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


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of an HF safetensors checkpoint folder, as stored (no dtype change)."""
    from safetensors.torch import load_file

    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise MergeError(f"no .safetensors files in {path}")
    state = {}
    for file in files:
        state.update(load_file(file))
    return state


def merged_dir(cfg: Config, spec: ModelSpec, base: Path, other: Path) -> Path:
    """A merge model (LuaStories): mergekit's merge of ``base`` (t = 0) and ``other`` (t = 1) at ``cfg.merge.t``.

    A cached step folder laid out like the trained models (``model/`` with safetensors, config and tokenizer,
    plus the manifest), written in ``cfg.merge.dtype`` as mergekit does. ``models.load_lm`` reads it back as
    float32, so analyses run in float32 on the float16-rounded weights.
    """
    import importlib.metadata

    t = _check_t(cfg.merge.t)
    method = _check_method(cfg.merge.method)
    _dtype(cfg.merge.dtype)
    inputs = {"base": base.name, "other": other.name, "method": method, "t": t, "dtype": cfg.merge.dtype}

    def build(out: Path) -> dict[str, Any]:
        started = time.time()
        run_mergekit(base / "model", other / "model", out / "model", t, method, cfg.merge.dtype)
        geometry = tensor_geometry(load_state_dict(base / "model"), load_state_dict(other / "model"))
        return {
            "merge_seconds": round(time.time() - started, 3),
            "mergekit_version": importlib.metadata.version("mergekit"),
            "tensors": len(geometry),
            "tensors_linear_fallback": int(geometry["linear_fallback"].sum()),
            "min_cosine": float(geometry["cosine"].min()),
        }

    return cached_step(cfg.profile, f"model-{spec.name}", inputs, build)


def checkpoint_geometry(base: Path, other: Path):
    """``tensor_geometry`` of two model folders' checkpoints (how far apart SLERP has to travel)."""
    return tensor_geometry(load_state_dict(base / "model"), load_state_dict(other / "model"))
