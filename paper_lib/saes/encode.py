"""The one encode path: a model's activations at an SAE's own hook, and the SAE's features on token blocks.

Every consumer (SAE training's initialisation, diagnostics, matching samples, case studies, autointerp) reads
activations through ``hook_activations`` and features through ``encode_with`` (or the cfg-level
``saes.encode_blocks`` / ``saes.encode_chunks`` built on it), at the hook the SAE was trained on
(``sae.cfg.metadata.hook_name``), so an SAE on any layer and hook of any model works everywhere.
"""

from __future__ import annotations

import torch

from ..core.hooks import DEFAULT_HOOK, hook_width, stop_layer

# What a step that encodes text with a model and an SAE depends on beyond its upstream folders.
ENCODE_CODE = ("paper_lib.saes.encode", "paper_lib.core.hooks", "paper_lib.models.build")


@torch.no_grad()
def hook_activations(model, blocks: torch.Tensor, hook: str = DEFAULT_HOOK, batch_size: int = 64) -> torch.Tensor:
    """``hook`` of a HookedTransformer on token blocks: ``[n_blocks, ctx, width]`` (float32, on the CPU).

    Stops the forward pass after the hook's layer (no later blocks, no unembedding), batching internally.
    """
    hook_width(hook, model.cfg)  # a clear error for a hook the model does not have
    device = next(model.parameters()).device
    outs = []
    for start in range(0, len(blocks), batch_size):
        batch = blocks[start : start + batch_size].to(device)
        _, cache = model.run_with_cache(batch, names_filter=[hook], stop_at_layer=stop_layer(hook), prepend_bos=False)
        outs.append(cache[hook].float().cpu())
    return torch.cat(outs)


def sae_hook(sae) -> str:
    """The hook an SAE reads (its SAELens metadata), the paper's hook for a hand-built SAE without one."""
    return getattr(sae.cfg.metadata, "hook_name", None) or DEFAULT_HOOK


@torch.no_grad()
def encode_with(model, sae, blocks: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """SAE features of token blocks at the SAE's own hook: ``[n_blocks, ctx, d_sae]`` (float32, on the CPU)."""
    model = model.to(sae.device, print_details=False)
    hook = sae_hook(sae)
    outs = []
    for start in range(0, len(blocks), batch_size):
        acts = hook_activations(model, blocks[start : start + batch_size], hook, batch_size)
        outs.append(sae.encode(acts.to(sae.device)).float().cpu())
    return torch.cat(outs)

