"""Configuration of model stitching (notebook 10): the small model's shape, the stitch maps, and the experiments.

Kept apart from ``config`` (which holds every other section) for length; ``Config`` checks that the small model's
``architecture`` is a valid ``model`` section and that ``small_layer`` is one of its layers.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from .schema import Fraction, Positive, PositiveFloat, NonNegative, Section


def _paper_small() -> dict[str, Any]:
    # Half the paper model's width, two layers: the deeper family's base (the paper's width, 4 layers) is then
    # twice as wide and deeper, as the stitching paper's pairs are.
    return {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 2, "num_attention_heads": 8,
            "num_key_value_heads": 4}


class StitchingConfig(Section):
    """Affine maps between the residual streams of a small model and the deeper family's base (Chen et al. 2025)."""

    # Overrides of `model` for the small model (registry `babypython_small`).
    architecture: dict[str, Any] = Field(default_factory=_paper_small)
    # The small model's layer whose residual stream (after it) is mapped; the large model's layer is the one whose
    # residual stream has the highest linear CKA with it (the paper fixes A's layer and picks B's by SVCCA).
    small_layer: NonNegative = 0
    pairing_blocks: Positive = 32  # validation blocks per domain (of data.block_size tokens) for the CKA grid
    # The maps: trained on this many training blocks of the small model's domains (half each), the paper's
    # optimiser (Adam, gradient clipping 1.0, cosine decay, 2 epochs) and round-trip weight alpha = 1.
    map_blocks: Positive = 1024
    map_epochs: Positive = 2
    map_lr: PositiveFloat = 1.0e-4
    map_batch_tokens: Positive = 4096
    round_trip_weight: float = Field(default=1.0, ge=0)
    eval_blocks: Positive = 64  # validation blocks per domain for the maps, stitched losses, SAEs, probes and steering
    # The FLOPs comparison: the large model's SAE trained from the transferred SAE and from scratch, `sae_seeds`
    # seeds each. Its target explained variance is `target_fraction` of the lowest final held-out value among the
    # scratch seeds, so every baseline run reaches it inside its budget.
    sae_seeds: Positive = 3
    target_fraction: Fraction = 0.95
    eval_every: Positive = 10  # SAE steps between held-out evaluations along training
    probe_blocks: Positive = 64  # training blocks per domain for the probes (tested on `eval_blocks` validation ones)
    steering_tokens: Positive = 100  # each domain's characteristic tokens (by log-odds) the steering effect is read on
