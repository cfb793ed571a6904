"""The models notebook 10 stitches, the text it reads, their residual streams, and each SAE's configuration.

The small model is the registry's ``stitching`` family (``babypython_small``, reshaped by
``stitching.architecture``); the large one is notebook 09's deeper base (``babypython_deep``), reused. Both are
BabyPython: the same data, tokenizer and training code. Every map, probe and SAE reads the residual stream after
a layer (``blocks.<l>.hook_resid_post``), where the deeper family's per-layer SAEs read.
"""

from __future__ import annotations

import numpy as np
import torch

from ..core.config import Config, SAEConfig
from ..core.hooks import hook_name
from ..core.registry import REGISTRY
from ..data import domain_blocks, eval_blocks
from ..layerwise import family as layerwise
from ..layerwise.similarity import special_ids  # the document separators' ids
from ..models.store import architecture
from ..saes.encode import hook_activations

FAMILY = "stitching"
HOOK_POINT = "hook_resid_post"


def small() -> str:
    """The small model (A in the paper)."""
    return REGISTRY.family(FAMILY)[0]


def large() -> str:
    """The large model (B): the deeper family's base."""
    return layerwise.base()


def n_layers(cfg: Config, name: str) -> int:
    return int({**cfg.model.model_dump(), **architecture(cfg, name)}["num_hidden_layers"])


def width(cfg: Config, name: str) -> int:
    return int({**cfg.model.model_dump(), **architecture(cfg, name)}["hidden_size"])


def resid_hook(cfg: Config, name: str, layer: int) -> str:
    """The residual stream after ``layer`` of ``name``, checked against the model's depth."""
    if not 0 <= int(layer) < n_layers(cfg, name):
        raise ValueError(f"layer {layer} is outside {name}'s {n_layers(cfg, name)} layers (0-{n_layers(cfg, name) - 1})")
    return hook_name(int(layer), HOOK_POINT)


def domains(first: str, second: str) -> tuple[str, ...]:
    """The text two models are compared on: both models' data (``registry.pair_domains``)."""
    return REGISTRY.pair_domains(first, second)


def train_blocks(cfg: Config, domain: str, n_blocks: int) -> torch.Tensor:
    """The first ``n_blocks`` training blocks of a domain (of ``data.block_size`` tokens)."""
    blocks = domain_blocks(cfg, domain, "train", n_blocks * cfg.data.block_size)
    return _enough(blocks, n_blocks, f"{domain} training", "lower the stitching block counts")


def validation_blocks(cfg: Config, domain: str, n_blocks: int | None = None) -> torch.Tensor:
    """The first ``n_blocks`` (default ``stitching.eval_blocks``) validation blocks of a domain."""
    return _enough(eval_blocks(cfg, domain), n_blocks or cfg.stitching.eval_blocks, f"{domain} validation",
                   "lower the stitching block counts or raise data.eval_tokens")


def _enough(blocks: torch.Tensor, n_blocks: int, what: str, fix: str) -> torch.Tensor:
    if len(blocks) < n_blocks:
        raise ValueError(f"only {len(blocks)} {what} blocks, {n_blocks} asked for: {fix}")
    return blocks[:n_blocks]


def keep_mask(cfg: Config, blocks: torch.Tensor) -> torch.Tensor:
    """Positions that are not special tokens (document separators): the paper masks those out of the maps."""
    return torch.from_numpy(~np.isin(blocks.numpy(), special_ids(cfg)))


def token_activations(model, blocks: torch.Tensor, hook: str, keep: torch.Tensor | None = None) -> torch.Tensor:
    """``hook`` at every kept position of ``blocks``: ``[n_kept, width]`` (float32)."""
    acts = hook_activations(model, blocks, hook)
    return acts[keep] if keep is not None else acts.reshape(-1, acts.shape[-1])


def sae_config(cfg: Config, name: str, layer: int, d_sae: int | None = None) -> Config:
    """The profile with ``sae`` set for one layer of ``name``, as notebook 09 sets it for the deeper family:
    ``layerwise.sae`` over ``sae``, the layer's residual hook, and ``layerwise.l1_per_rms`` times the model's RMS
    norm there. ``d_sae`` (a multiple of the width) sets the dictionary size instead of the expansion factor."""
    if name in layerwise.names():
        return layerwise.layer_config(cfg, layer)
    hook = resid_hook(cfg, name, layer)
    l1 = float(f"{cfg.layerwise.l1_per_rms * layerwise.activation_scale(cfg, name)[layer]:.6g}")
    overrides = dict(cfg.layerwise.sae)
    if d_sae is not None:
        if d_sae % width(cfg, name):
            raise ValueError(f"a dictionary of {d_sae} features is not a multiple of {name}'s width {width(cfg, name)}")
        overrides["expansion_factor"] = d_sae // width(cfg, name)
    sae = SAEConfig(**{**cfg.sae.model_dump(), **overrides, "hook_name": hook, "l1_coefficient": {"default": l1}})
    return cfg.model_copy(update={"sae": sae})


def large_d_sae(cfg: Config) -> int:
    """The large model's per-layer dictionary size (notebook 09's): the small model's SAE gets as many features, so
    the transferred SAE and the large model's own are the same size."""
    return width(cfg, large()) * int({**cfg.sae.model_dump(), **cfg.layerwise.sae}["expansion_factor"])
