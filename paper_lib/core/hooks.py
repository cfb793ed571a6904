"""TransformerLens hook names by layer: ``blocks.{layer}.{hook}``, parsed and sized in one place.

Hooks are always written literally (``blocks.0.mlp.hook_post``) in configs, artifacts and prose; this module
only reads them: which layer a hook is in (to stop the forward pass right after it), and how wide it is.
"""

from __future__ import annotations

import re

DEFAULT_HOOK = "blocks.0.mlp.hook_post"  # the paper's: the gated MLP's post-activation of the only layer
_HOOK = re.compile(r"^blocks\.(?P<layer>\d+)\.(?P<point>[A-Za-z_][\w.]*)$")
# Width of each hook point, as a TransformerLens config attribute.
_WIDTH = {
    "mlp.hook_post": "d_mlp",
    "mlp.hook_pre": "d_mlp",
    "mlp.hook_pre_linear": "d_mlp",
    "hook_resid_pre": "d_model",
    "hook_resid_mid": "d_model",
    "hook_resid_post": "d_model",
    "hook_mlp_out": "d_model",
    "hook_attn_out": "d_model",
}


class HookError(ValueError):
    """A hook name that is not ``blocks.{layer}.{point}`` with a known point, or a layer the model lacks."""


def hook_name(layer: int, point: str = "mlp.hook_post") -> str:
    """``blocks.{layer}.{point}``, checked."""
    name = f"blocks.{int(layer)}.{point}"
    parse_hook(name)
    return name


def parse_hook(name: str) -> tuple[int, str]:
    """``(layer, point)`` of a hook name such as ``blocks.0.mlp.hook_post``."""
    match = _HOOK.match(str(name))
    if not match or match["point"] not in _WIDTH:
        raise HookError(
            f"hook '{name}' is not blocks.<layer>.<point> with a point among {', '.join(sorted(_WIDTH))} "
            "(e.g. blocks.0.mlp.hook_post)"
        )
    return int(match["layer"]), match["point"]


def hook_layer(name: str) -> int:
    """The layer a hook is in."""
    return parse_hook(name)[0]


def hook_width(name: str, tl_cfg) -> int:
    """The hook's activation width on a model with TransformerLens config ``tl_cfg`` (checks the layer exists)."""
    layer, point = parse_hook(name)
    if layer >= tl_cfg.n_layers:
        raise HookError(f"hook '{name}' is in layer {layer}, but the model has {tl_cfg.n_layers} layer(s)")
    return int(getattr(tl_cfg, _WIDTH[point]))


def stop_layer(name: str) -> int:
    """``stop_at_layer`` for a forward pass that needs this hook and nothing after its layer."""
    return hook_layer(name) + 1


def is_mlp_post(name: str) -> bool:
    """True for ``blocks.{l}.mlp.hook_post``, whose directions reach the residual stream through ``W_out``."""
    return parse_hook(name)[1] == "mlp.hook_post"
