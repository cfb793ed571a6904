"""Trained stitch maps between any two registry models that share the tokenizer, at any pair of layers (cached)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..core.artifacts import cached_step, read_json, write_json_atomic
from ..core.config import Config
from ..data import DATA_CODE, corpora_fingerprints
from ..models import load_hooked_lm, model_dir
from ..saes.encode import ENCODE_CODE
from .family import domains, keep_mask, resid_hook, token_activations, train_blocks, validation_blocks, width
from .maps import StitchMaps, fit_maps

MAPS_FILE = "maps.pt"


def paired_activations(cfg: Config, first: str, second: str, hooks: tuple[str, str], blocks: torch.Tensor,
                       models: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Both models' residual streams at the same non-special positions of ``blocks``."""
    models = models or {who: load_hooked_lm(cfg, who) for who in (first, second)}
    keep = keep_mask(cfg, blocks)
    return (token_activations(models[first], blocks, hooks[0], keep),
            token_activations(models[second], blocks, hooks[1], keep))


def map_blocks(cfg: Config, first: str, second: str, split: str) -> torch.Tensor:
    """The maps' text: ``stitching.map_blocks`` training blocks (split evenly over the pair's domains), or
    ``stitching.eval_blocks`` validation blocks of each domain for ``split="validation"``."""
    text = domains(first, second)
    if split == "train":
        per = max(1, cfg.stitching.map_blocks // len(text))
        return torch.cat([train_blocks(cfg, d, per) for d in text])
    return torch.cat([validation_blocks(cfg, d) for d in text])


def maps_dir(cfg: Config, first: str, second: str, first_layer: int, second_layer: int) -> Path:
    """Cached step ``stitch-maps-<first>-<second>``: ``up`` maps ``first``'s residual stream after ``first_layer``
    to ``second``'s after ``second_layer``, ``down`` back. Records held-out variance explained each way."""
    hooks = (resid_hook(cfg, first, first_layer), resid_hook(cfg, second, second_layer))
    s = cfg.stitching
    text = domains(first, second)
    inputs = {"first": model_dir(cfg, first).name, "second": model_dir(cfg, second).name, "hooks": list(hooks),
              "map_blocks": s.map_blocks, "eval_blocks": s.eval_blocks, "epochs": s.map_epochs, "lr": s.map_lr,
              "batch_tokens": s.map_batch_tokens, "alpha": s.round_trip_weight, "seed": cfg.seed,
              "block_size": cfg.data.block_size, "eval_tokens": cfg.data.eval_tokens,
              "corpora": {split: corpora_fingerprints(cfg, text, split) for split in ("train", "validation")}}

    def build(out: Path) -> dict:
        models = {who: load_hooked_lm(cfg, who) for who in (first, second)}
        train = paired_activations(cfg, first, second, hooks, map_blocks(cfg, first, second, "train"), models)
        held = paired_activations(cfg, first, second, hooks, map_blocks(cfg, first, second, "validation"), models)
        maps, record = fit_maps(*train, *held, epochs=s.map_epochs, lr=s.map_lr, batch_tokens=s.map_batch_tokens,
                                alpha=s.round_trip_weight, seed=cfg.seed)
        torch.save(maps.state_dict(), out / MAPS_FILE)
        write_json_atomic(out / "maps.json", {"first": first, "second": second, "hooks": list(hooks),
                                              "domains": list(text), **record})
        return {"explained_variance_up": record["trained"]["explained_variance_up"],
                "explained_variance_down": record["trained"]["explained_variance_down"]}

    code = [*DATA_CODE, *ENCODE_CODE, "paper_lib.stitching.maps", "paper_lib.stitching.family"]
    return cached_step(cfg.profile, f"stitch-maps-{first}-{second}", inputs, build, code=code)


def load_maps(cfg: Config, first: str, second: str, first_layer: int, second_layer: int) -> StitchMaps:
    """The trained maps of ``maps_dir`` (trained on first use)."""
    path = maps_dir(cfg, first, second, first_layer, second_layer) / MAPS_FILE
    maps = StitchMaps(width(cfg, first), width(cfg, second))
    try:
        maps.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as err:
        raise RuntimeError(f"cannot load the stitch maps in {path} ({err}). The folder is corrupt: delete "
                           f"{path.parent} and rerun.") from err
    return maps.eval()


def maps_record(cfg: Config, first: str, second: str, first_layer: int, second_layer: int) -> dict[str, Any]:
    return read_json(maps_dir(cfg, first, second, first_layer, second_layer) / "maps.json")
