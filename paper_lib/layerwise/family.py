"""The deeper family of notebook 09 and the configuration of its per-layer SAEs.

The family (``registry.LAYERWISE_FAMILY``: BabyPython with more layers and its Lua and TinyStories fine-tunes) is
made by the same code as the one-layer family (``models.model_dir``); the profile reshapes it through
``layerwise.architecture``. Each layer gets SAEs of its own: ``layer_config`` is the profile with ``sae``
pointed at that layer's hook, so every SAE, activation sample, diagnostic and match of the one-layer sections
works on it unchanged (and is cached apart, since the hook is part of every SAE's key).
"""

from __future__ import annotations

from pathlib import Path

from ..core.artifacts import cached_step, read_json, write_json_atomic
from ..core.config import Config, SAEConfig
from ..core.hooks import hook_name
from ..core.registry import REGISTRY
from ..data import DATA_CODE, sae_train_blocks
from ..models import load_hooked_lm, model_dir
from ..models.store import architecture
from ..saes.encode import ENCODE_CODE, hook_activations

FAMILY = "layerwise"
SCALE_BLOCKS = 64  # training blocks (of sae.context_size tokens) the activation scale of each layer is read on


def names() -> tuple[str, ...]:
    """The deeper family in registry order: its base first, then the fine-tunes."""
    return REGISTRY.family(FAMILY)


def base() -> str:
    """The deeper family's pretrained model."""
    return names()[0]


def fine_tunes() -> tuple[str, ...]:
    """The deeper family's fine-tunes of its base."""
    return tuple(n for n in names() if REGISTRY.spec(n).recipe == "finetune")


def n_layers(cfg: Config) -> int:
    """Layers of the deeper family under this profile."""
    return int({**cfg.model.model_dump(), **architecture(cfg, base())}["num_hidden_layers"])


def layers(cfg: Config) -> list[int]:
    return list(range(n_layers(cfg)))


def layer_hook(cfg: Config, layer: int) -> str:
    """The hook a layer's SAE reads (``layerwise.hook_point`` of that layer), checked against the family's depth."""
    if not 0 <= int(layer) < n_layers(cfg):
        raise ValueError(f"layer {layer} is outside the deeper family's {n_layers(cfg)} layers (0-{n_layers(cfg) - 1})")
    return hook_name(layer, cfg.layerwise.hook_point)


def activation_scale(cfg: Config, name: str | None = None) -> list[float]:
    """RMS norm of a model's activations (default: the deeper base) at each of its layers' ``layerwise.hook_point``
    (on ``SCALE_BLOCKS`` SAE training blocks): the scale each layer's sparsity coefficient is set by (cached step
    ``layerwise-scale``, or ``layerwise-scale-<name>`` for another model)."""
    step = "layerwise-scale" if name is None else f"layerwise-scale-{name}"
    name = base() if name is None else name
    depth = int({**cfg.model.model_dump(), **architecture(cfg, name)}["num_hidden_layers"])
    inputs = {"model": model_dir(cfg, name).name,
              "hooks": [hook_name(layer, cfg.layerwise.hook_point) for layer in range(depth)],
              "context_size": cfg.sae.context_size, "training_tokens": cfg.sae.training_tokens,
              "n_blocks": SCALE_BLOCKS, "seed": cfg.seed}

    def build(out: Path) -> dict:
        model = load_hooked_lm(cfg, name)
        blocks = sae_train_blocks(cfg, name)[:SCALE_BLOCKS]
        scale = []
        for hook in inputs["hooks"]:
            acts = hook_activations(model, blocks, hook)
            scale.append(float(acts.reshape(-1, acts.shape[-1]).double().pow(2).sum(-1).mean().sqrt()))
        write_json_atomic(out / "scale.json", {"hooks": inputs["hooks"], "rms_norm": scale})
        return {"rms_norm": scale}

    path = cached_step(cfg.profile, step, inputs, build, code=[*DATA_CODE, *ENCODE_CODE])
    return read_json(path / "scale.json")["rms_norm"]


def layer_config(cfg: Config, layer: int) -> Config:
    """The profile with its SAE section set for one layer of the deeper family: ``layerwise.sae`` over ``sae``, the
    layer's hook, and a sparsity coefficient of ``layerwise.l1_per_rms`` times the layer's activation scale."""
    hook = layer_hook(cfg, layer)
    l1 = float(f"{cfg.layerwise.l1_per_rms * activation_scale(cfg)[layer]:.6g}")  # 6 significant digits
    sae = SAEConfig(**{**cfg.sae.model_dump(), **cfg.layerwise.sae, "hook_name": hook,
                       "l1_coefficient": {"default": l1}})
    return cfg.model_copy(update={"sae": sae})


