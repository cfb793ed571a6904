"""Configuration of crosscoder model diffing (``paper_lib.crosscoder``).

Kept apart from ``config`` for length; ``Config`` holds it as ``crosscoder``.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from .schema import NonNegativeFloat, Positive, PositiveFloat, Section, invalid, model_pairs


class CrosscoderConfig(Section):
    """One BatchTopK crosscoder per [parent, child] pair, over both models' activations at ``sae.hook_name``."""

    # The pairs of the method comparison: both fine-tunes against their base, and the merge against one parent.
    pairs: list[list[str]] = Field(
        default_factory=lambda: [["babypython", "lua"], ["babypython", "tinystories"], ["lua", "luastories"]])
    # The control: this model against itself (the same activations twice), whose latents should all be shared; its
    # exclusive share is how often the class bands call a latent exclusive with nothing to tell the models apart.
    control: str | None = "babypython"
    # Latents per activation width; None: the per-model SAEs' (sae.expansion_factor), so the two methods compare
    # dictionaries of one size.
    expansion_factor: Positive | None = None
    # Latents active per token on average (BatchTopK's k): near the per-model SAEs' L0 (tens of features).
    k: Positive = 32
    # Trained on both models' data (the pair's domains, evenly by tokens), sae.context_size-token blocks.
    training_tokens: Positive = 50_000_000
    batch_tokens: Positive = 4096
    lr: PositiveFloat = 1e-4
    aux_alpha: NonNegativeFloat = 1 / 32  # weight of the auxiliary loss that revives dead latents (Gao et al.)
    dead_after_tokens: Positive = 10_000_000  # a latent that has not fired for this many tokens counts as dead
    buffer_blocks: Positive = 512  # blocks whose activations are shuffled together before batching

    @field_validator("pairs")
    @classmethod
    def _pairs_are_models(cls, pairs: list[list[str]]) -> list[list[str]]:
        return model_pairs(pairs)

    @field_validator("control")
    @classmethod
    def _control_is_a_model(cls, control: str | None) -> str | None:
        from .registry import REGISTRY

        if control is not None and control not in REGISTRY:
            raise invalid(f"'{control}' is not a model of {', '.join(REGISTRY.names)} (or null: no control)")
        return control
