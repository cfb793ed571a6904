"""Next-token loss through the stitch: one model runs up to a layer, the map carries its residual stream, the other
model finishes the forward pass (TransformerLens ``start_at_layer``), beside each model's own loss."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..core import intervals
from .maps import StitchMaps

BATCH = 16


@torch.no_grad()
def residual(model, blocks: torch.Tensor, hook: str, layer: int) -> torch.Tensor:
    """The residual stream at ``hook`` (after ``layer``), the forward pass stopped there."""
    _, cache = model.run_with_cache(blocks, names_filter=[hook], stop_at_layer=layer + 1, prepend_bos=False)
    return cache[hook]


@torch.no_grad()
def finish(model, resid: torch.Tensor, blocks: torch.Tensor, layer: int) -> torch.Tensor:
    """Per-token next-token loss ``[batch, ctx - 1]`` of ``model`` run on from the residual stream after ``layer``."""
    return model(resid, start_at_layer=layer + 1, tokens=blocks, return_type="loss", loss_per_token=True)


def routes(maps: StitchMaps) -> dict[str, tuple[str, Callable[[torch.Tensor], torch.Tensor], str]]:
    """Each route: (where it starts, what the map does to the residual stream, which model finishes)."""
    return {
        "small": ("small", lambda h: h, "small"),
        "large": ("large", lambda h: h, "large"),
        "small_to_large": ("small", maps.up, "large"),
        "large_to_small": ("large", maps.down, "small"),
        "small_round_trip": ("small", lambda h: maps.down(maps.up(h)), "small"),
        "large_round_trip": ("large", lambda h: maps.up(maps.down(h)), "large"),
    }


@torch.no_grad()
def stitched_losses(models: dict, layers: dict, hooks: dict, maps: StitchMaps, blocks: torch.Tensor) -> dict:
    """Mean next-token loss of every route on ``blocks`` with its interval over blocks. ``models``, ``layers`` and
    ``hooks`` are keyed ``small`` and ``large``."""
    sums = {name: [] for name in routes(maps)}
    for start in range(0, len(blocks), BATCH):
        batch = blocks[start : start + BATCH]
        resid = {who: residual(models[who], batch, hooks[who], layers[who]) for who in ("small", "large")}
        for name, (source, carry, target) in routes(maps).items():
            loss = finish(models[target], carry(resid[source]), batch, layers[target])
            sums[name].append(loss.double().sum(-1).cpu().numpy())
    n = np.full(len(blocks), blocks.shape[1] - 1, dtype=np.float64)
    out = {}
    for name, parts in sums.items():
        interval = intervals.ratio_interval(np.concatenate(parts), n, unit="blocks")
        if not np.isfinite(interval["value"]):
            raise FloatingPointError(f"the {name} route's loss is not finite: the stitch maps are broken; delete "
                                     "their folder and rerun")
        out[name] = {"loss": interval["value"], "interval": interval}
    return out
