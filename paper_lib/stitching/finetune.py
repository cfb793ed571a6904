"""Beyond the paper: the same maps between the deeper base and its own fine-tune (same size), and whether an affine
map carries the base's SAE to the fine-tune better than using it unchanged (the paper's persistence question)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.artifacts import read_json, write_json_atomic
from ..core.config import Config
from ..data import sae_validation_blocks
from ..layerwise import family as layerwise
from ..models import load_hooked_lm
from ..saes import load_sae, sae_dir
from .family import resid_hook
from .steps import pair, run_step
from .store import load_maps, maps_dir
from .transfer import round_trip_variance, sae_eval, transfer_sae


def fine_tune(cfg: Config, child: str = "lua_deep") -> dict[str, Any]:
    """Cached step ``stitch-finetune-<child>``: maps between the deeper base and its fine-tune at the stitched large
    layer (same width), and the base's SAE on the fine-tune used unchanged, carried through the maps, and the
    fine-tune's own SAE, each on the fine-tune's text and on the base's."""
    parent = layerwise.base()
    layer = pair(cfg)[1]
    lc = layerwise.layer_config(cfg, layer)
    hook = resid_hook(cfg, parent, layer)
    inputs = {"maps": maps_dir(cfg, parent, child, layer, layer).name, "parent_sae": sae_dir(lc, parent).name,
              "child_sae": sae_dir(lc, child).name, "sae_eval_blocks": lc.sae.eval_blocks, "hook": hook}

    def build(out: Path) -> dict:
        maps = load_maps(cfg, parent, child, layer, layer)
        model = load_hooked_lm(cfg, child)
        base_sae, own = load_sae(lc, parent), load_sae(lc, child)
        carried = transfer_sae(base_sae, maps, hook)
        rows = {}
        for who in (child, parent):  # each model's SAE validation text (its own data)
            blocks = sae_validation_blocks(lc, who)
            rows[who] = {"unchanged": sae_eval(base_sae, model, blocks), "carried": sae_eval(carried, model, blocks),
                         "own": sae_eval(own, model, blocks),
                         "round_trip_explained_variance": round_trip_variance(model, hook, maps, blocks)}
        record = {"parent": parent, "child": child, "layer": layer, "text": rows,
                  "maps": read_json(maps_dir(cfg, parent, child, layer, layer) / "maps.json")["trained"]}
        write_json_atomic(out / "finetune.json", record)
        return {"layer": layer}

    return run_step(cfg, f"stitch-finetune-{child}", inputs, build, "finetune.json",
                 ["paper_lib.stitching.transfer", "paper_lib.saes.evaluate"])
