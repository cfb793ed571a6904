"""An SAE of one model carried to another through the stitch maps (the stitching paper's Eq. 6), and how well it
describes the other model without any training, beside that model's own SAE.

The paper writes the transfer for an SAE ``f(x) = relu(x W_e + b_e)``, ``x_hat = f W_d + b_d``:
``W_e' = P_down W_e``, ``b_e' = b_down W_e + b_e``, ``W_d' = W_d P_up``, ``b_d' = b_d P_up + b_up``. SAELens's SAEs
subtract the decoder bias from the input first (``relu((x - b_d) W_e + b_e)``), so the exact equivalent here is
``b_e' = b_e + (b_down - b_d) W_e + b_d' P_down W_e``, with ``W_e'``, ``W_d'`` and ``b_d'`` as in the paper: the
transferred SAE encodes ``x_B`` exactly as the original encodes ``down(x_B)``, and decodes to ``up`` of the
original's reconstruction. With identity maps it is the original SAE.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core.config import Config
from ..matching.correlate import pairwise_correlations
from ..matching.pairs import min_support
from ..saes.encode import encode_with, hook_activations
from ..saes.evaluate import evaluate_sae
from ..saes.train import _quiet_sae_lens
from .maps import StitchMaps, explained_variance

EVAL_KEYS = ("l0", "explained_variance", "reconstruction_score", "dead_fraction")


@torch.no_grad()
def transfer_sae(sae, maps: StitchMaps, hook: str):
    """The SAELens ``SAE`` on the large model's residual stream (at ``hook``) that ``sae`` (on the small model's,
    ``maps.up``'s input side) becomes through the maps."""
    from sae_lens import SAE

    cfg = sae.cfg.to_dict()
    if cfg.get("architecture") != "standard" or not cfg.get("apply_b_dec_to_input") or \
            cfg.get("normalize_activations", "none") != "none":
        raise ValueError(f"transfer_sae carries a standard SAELens SAE that subtracts its decoder bias and does not "
                         f"normalise its input; this one is {cfg.get('architecture')} with apply_b_dec_to_input="
                         f"{cfg.get('apply_b_dec_to_input')}, normalize_activations={cfg.get('normalize_activations')}")
    W_e, b_e, W_d, b_d = (getattr(sae, k).detach().float().cpu() for k in ("W_enc", "b_enc", "W_dec", "b_dec"))
    if W_e.shape[0] != maps.d_small:
        raise ValueError(f"the SAE reads width {W_e.shape[0]}, the maps' small side is {maps.d_small}")
    P_up, b_up, P_down, b_down = (p.detach().float().cpu() for p in (maps.P_up, maps.b_up, maps.P_down, maps.b_down))
    W_e_new = P_down @ W_e
    b_d_new = b_d @ P_up + b_up
    b_e_new = b_e + (b_down - b_d) @ W_e + b_d_new @ W_e_new
    cfg.update(d_in=maps.d_large, device="cpu", metadata={**cfg.get("metadata", {}), "hook_name": hook})
    with _quiet_sae_lens():
        new = SAE.from_dict(cfg)
    new.load_state_dict({"W_enc": W_e_new, "b_enc": b_e_new, "W_dec": W_d @ P_up, "b_dec": b_d_new})
    new.cfg.metadata.hook_name = hook
    return new.eval()


def sae_eval(sae, model, blocks: torch.Tensor) -> dict[str, Any]:
    """The diagnostics notebook 04 reports (SAELens's evals), without the per-feature frequencies."""
    stats = evaluate_sae(sae, model, blocks)
    return {k: stats[k] for k in (*EVAL_KEYS, "explained_variance_interval") if k in stats}


@torch.no_grad()
def round_trip_variance(model, hook: str, maps: StitchMaps, blocks: torch.Tensor) -> float:
    """Variance of the large model's activations that ``up(down(x))`` explains: what a perfect SAE of the small model
    (one that reconstructs ``down(x)`` exactly) would give once carried through the maps. A reference, not a bound:
    the best reconstruction inside the image of ``P_up`` is the projection onto it, which may do better."""
    x = hook_activations(model, blocks, hook).reshape(-1, maps.d_large)
    return explained_variance(maps.up(maps.down(x)), x)


def native_matches(cfg: Config, model, transferred, native, blocks: torch.Tensor) -> dict[str, Any]:
    """How many of the transferred SAE's live features some feature of the large model's own SAE matches (best
    Pearson r over positions at or above ``matching.threshold``, the project's position method and guard)."""
    x = encode_with(model, transferred, blocks).reshape(-1, transferred.cfg.d_sae).numpy()
    y = encode_with(model, native, blocks).reshape(-1, native.cfg.d_sae).numpy()
    r = pairwise_correlations(x, y, mode="position", min_support=min_support(cfg, "position"))
    best = np.nan_to_num(r, nan=-1.0).max(axis=1)
    alive = (x > 0).any(axis=0)
    matched = alive & (best >= cfg.matching.threshold)
    return {"live": int(alive.sum()), "matched": int(matched.sum()),
            "matched_share": float(matched.sum() / max(alive.sum(), 1)),
            "best_r_median": float(np.median(best[alive])) if alive.any() else None,
            "threshold": cfg.matching.threshold, "n_positions": int(x.shape[0])}
