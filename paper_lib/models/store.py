"""Where each model of the registry comes from: its finished folder, trained, fine-tuned or merged on first use."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ..core.artifacts import manifest, read_json, record_benchmark
from ..core.config import Config
from ..core.registry import REGISTRY
from .build import load_hf, to_hooked
from .init import initial_dir
from .merge import merged_dir
from .train import finetuned_dir, pretrained_dir


def architecture(cfg: Config, name: str) -> dict:
    """``cfg.model`` overrides of a registry model: its root's registry entry, then the profile's reshaping of its
    family (``layerwise.architecture`` for the deeper family, ``stitching.architecture`` for the small model)."""
    family = REGISTRY.spec(name).family
    profiled = {"layerwise": cfg.layerwise.architecture, "stitching": cfg.stitching.architecture}.get(family, {})
    return {**REGISTRY.architecture(name), **profiled}


def model_dir(cfg: Config, name: str) -> Path:
    """The finished artifact folder of a registry model, made by its recipe (parents first) on first use."""
    spec = REGISTRY.spec(name)
    if spec.recipe == "pretrain":
        path = pretrained_dir(cfg, replace(spec, architecture=architecture(cfg, name)))
    elif spec.recipe == "init":
        path = initial_dir(cfg, replace(spec, architecture=architecture(cfg, name)))
    elif spec.recipe == "finetune":
        path = finetuned_dir(cfg, spec, model_dir(cfg, spec.parents[0]))
    else:
        path = merged_dir(cfg, spec, *(model_dir(cfg, p) for p in spec.parents))
    stats = manifest(path)["meta"]
    if "tokens_per_second" in stats:
        record_benchmark(cfg.profile, f"train_{name}", stats)
    return path


def load_lm(cfg: Config, name: str):
    """The HF ``MistralForCausalLM`` of a model (float32, eval mode, on the GPU if there is one)."""
    return load_hf(model_dir(cfg, name))


def load_hooked_lm(cfg: Config, name: str):
    """A model as a TransformerLens ``HookedTransformer``, for every analysis after training."""
    return to_hooked(load_lm(cfg, name))


def training_history(cfg: Config, name: str):
    """The Trainer's log of a trained model as a table (step, loss, eval_loss, learning_rate, ...)."""
    import pandas as pd

    return pd.DataFrame(read_json(model_dir(cfg, name) / "history.json"))


def training_stats(cfg: Config, name: str) -> dict[str, Any]:
    """How a model was made: tokens, steps, wall time and throughput, or the merge's statistics (its manifest)."""
    return manifest(model_dir(cfg, name))["meta"]


def merge_geometry(cfg: Config, name: str = "luastories"):
    """Per-tensor geometry between a merge model's two parents (see ``models.merge.tensor_geometry``)."""
    from .merge import checkpoint_geometry

    spec = REGISTRY.spec(name)
    if spec.recipe != "merge":
        raise ValueError(f"model '{name}' is a {spec.recipe}, not a merge: name a merge model (e.g. luastories)")
    return checkpoint_geometry(*(model_dir(cfg, p) for p in spec.parents))
