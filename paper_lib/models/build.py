"""Building a model: a fresh HF ``MistralForCausalLM`` of the profile's shape, loading a checkpoint, and the
conversion to a TransformerLens ``HookedTransformer`` used by every analysis (no hub access anywhere)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..core.config import Config
from ..core.runtime import default_device


def build_model(cfg: Config, vocab_size: int, architecture: dict | None = None):
    """A freshly initialised ``MistralForCausalLM`` of the profile's shape (seeded by ``cfg.seed``).

    ``architecture`` overrides fields of ``cfg.model`` (a registry entry's, e.g. more layers).
    """
    from transformers import MistralConfig, MistralForCausalLM, set_seed

    m = {**cfg.model.model_dump(), **(architecture or {})}
    config = MistralConfig(
        vocab_size=vocab_size,
        hidden_size=m["hidden_size"],
        intermediate_size=m["intermediate_size"],
        num_hidden_layers=m["num_hidden_layers"],
        num_attention_heads=m["num_attention_heads"],
        num_key_value_heads=m["num_key_value_heads"],
        max_position_embeddings=cfg.data.block_size,
        rms_norm_eps=m["rms_norm_eps"],
        rope_theta=m["rope_theta"],
        sliding_window=None,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    set_seed(cfg.seed)
    return MistralForCausalLM(config).float()


def load_hf(path: Path):
    """The HF checkpoint in a model step folder (``<path>/model``): float32, eval mode, on the default device."""
    from transformers import MistralForCausalLM

    try:
        model = MistralForCausalLM.from_pretrained(path / "model", dtype=torch.float32)
    except Exception as err:
        raise RuntimeError(
            f"cannot load the model checkpoint in {path / 'model'} ({err}). The folder is corrupt: delete "
            f"{path} and rerun to rebuild it."
        ) from err
    return model.to(default_device()).eval()


def hooked_config(hf_config):
    """TransformerLens config equivalent to an HF Mistral config, built without touching the hub."""
    from transformer_lens import HookedTransformerConfig

    d_head = hf_config.hidden_size // hf_config.num_attention_heads
    return HookedTransformerConfig(
        n_layers=hf_config.num_hidden_layers,
        d_model=hf_config.hidden_size,
        d_head=d_head,
        n_heads=hf_config.num_attention_heads,
        n_key_value_heads=hf_config.num_key_value_heads,
        d_mlp=hf_config.intermediate_size,
        d_vocab=hf_config.vocab_size,
        n_ctx=hf_config.max_position_embeddings,
        act_fn="silu",
        gated_mlp=True,
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=d_head,
        rotary_base=int(hf_config.rope_theta) if hasattr(hf_config, "rope_theta") else 10000,
        eps=hf_config.rms_norm_eps,
        original_architecture="MistralForCausalLM",
        default_prepend_bos=False,
    )


def to_hooked(hf_model):
    """Convert an HF Mistral model to a TransformerLens ``HookedTransformer`` (same logits, no hub access)."""
    from transformer_lens import HookedTransformer
    from transformer_lens.pretrained.weight_conversions import convert_mistral_weights

    tl_cfg = hooked_config(hf_model.config)
    model = HookedTransformer(tl_cfg)
    state_dict = convert_mistral_weights(hf_model, tl_cfg)
    model.load_and_process_state_dict(
        state_dict, fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False
    )
    return model.eval()
