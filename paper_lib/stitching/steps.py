"""What notebook 10's cached steps share (the layer pair, the models, each step's inputs), and its two quick steps:
the loss through the stitch and the SAE carried across. The longer steps live with their code (``flops``,
``probes``, ``finetune``), so that a change to one rebuilds that step only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.artifacts import cached_step, read_json, write_json_atomic
from ..core.config import Config
from ..data import DATA_CODE, corpora_fingerprints, sae_validation_blocks
from ..layerwise import family as layerwise
from ..matching.controls import other_seeding
from ..models import load_hooked_lm, model_dir
from ..saes import load_sae, sae_dir
from ..saes.encode import ENCODE_CODE
from .family import HOOK_POINT, domains, large, large_d_sae, resid_hook, sae_config, small, validation_blocks
from .forward import stitched_losses
from .pairing import pairing
from .store import load_maps, maps_dir
from .transfer import native_matches, round_trip_variance, sae_eval, transfer_sae

CODE = (*DATA_CODE, *ENCODE_CODE, "paper_lib.stitching.family", "paper_lib.stitching.maps", "paper_lib.models.build")


def pair(cfg: Config) -> tuple[int, int]:
    """The small model's layer and the large model's layer read from the CKA grid."""
    record = pairing(cfg)
    return record["small_layer"], record["large_layer"]


def small_sae_config(cfg: Config) -> Config:
    """The small model's SAE at its stitched layer, as large as the large model's per-layer SAEs."""
    return sae_config(cfg, small(), pair(cfg)[0], d_sae=large_d_sae(cfg))


def stitch_setup(cfg: Config) -> dict[str, Any]:
    if cfg.layerwise.hook_point != HOOK_POINT:
        raise ValueError(f"stitching maps the residual stream ({HOOK_POINT}), and reuses the deeper family's per-layer "
                         f"SAEs, which read layerwise.hook_point = {cfg.layerwise.hook_point!r}: set it to {HOOK_POINT!r}")
    i, j = pair(cfg)
    return {"layers": {"small": i, "large": j},
            "hooks": {"small": resid_hook(cfg, small(), i), "large": resid_hook(cfg, large(), j)},
            "maps": maps_dir(cfg, small(), large(), i, j).name}


def step_inputs(cfg: Config, **extra) -> dict[str, Any]:
    setup = stitch_setup(cfg)
    return {"small": model_dir(cfg, small()).name, "large": model_dir(cfg, large()).name, "maps": setup["maps"],
            "hooks": setup["hooks"], "eval_blocks": cfg.stitching.eval_blocks, "eval_tokens": cfg.data.eval_tokens,
            "corpora": corpora_fingerprints(cfg, domains(small(), large()), "validation"), **extra}


def load_models(cfg: Config) -> dict[str, Any]:
    return {"small": load_hooked_lm(cfg, small()), "large": load_hooked_lm(cfg, large())}


def run_step(cfg: Config, name: str, inputs: dict, build, filename: str, code=()) -> dict[str, Any]:
    path = cached_step(cfg.profile, name, inputs, build, code=[*CODE, *code])
    return read_json(path / filename)


def losses(cfg: Config) -> dict[str, Any]:
    """Cached step ``stitch-losses``: every route's next-token loss on each domain's validation blocks."""
    setup = stitch_setup(cfg)

    def build(out: Path) -> dict:
        models, maps = load_models(cfg), load_maps(cfg, small(), large(), *setup["layers"].values())
        rows = {d: stitched_losses(models, setup["layers"], setup["hooks"], maps, validation_blocks(cfg, d))
                for d in domains(small(), large())}
        write_json_atomic(out / "losses.json", rows)
        return {"domains": list(rows)}

    return run_step(cfg, "stitch-losses", step_inputs(cfg), build, "losses.json", ["paper_lib.stitching.forward"])


def transfer(cfg: Config) -> dict[str, Any]:
    """Cached step ``stitch-transfer``: the small model's SAE on the small model, carried to the large one with no
    training, and the large model's own SAE (two seeds); the maps' round trip as the bound on any carried SAE; how
    many carried features the large model's own SAE matches, beside how many its second seed matches."""
    setup = stitch_setup(cfg)
    small_cfg = small_sae_config(cfg)
    large_cfg = layerwise.layer_config(cfg, setup["layers"]["large"])
    seeding = other_seeding(cfg.sae.init)
    inputs = step_inputs(cfg, small_sae=sae_dir(small_cfg, small()).name, large_sae=sae_dir(large_cfg, large()).name,
                     large_other=sae_dir(large_cfg, large(), seeding).name, matching=cfg.matching.model_dump())

    def build(out: Path) -> dict:
        models, maps = load_models(cfg), load_maps(cfg, small(), large(), *setup["layers"].values())
        saes = {"small": load_sae(small_cfg, small()), "large": load_sae(large_cfg, large()),
                "large_other": load_sae(large_cfg, large(), seeding)}
        carried = transfer_sae(saes["small"], maps, setup["hooks"]["large"])
        blocks = {"small": sae_validation_blocks(small_cfg, small()), "large": sae_validation_blocks(large_cfg, large())}
        sample = blocks["large"][: cfg.matching.n_blocks]
        record = {
            "small_on_small": sae_eval(saes["small"], models["small"], blocks["small"]),
            "transferred_on_large": sae_eval(carried, models["large"], blocks["large"]),
            "large_on_large": sae_eval(saes["large"], models["large"], blocks["large"]),
            "round_trip_explained_variance": round_trip_variance(models["large"], setup["hooks"]["large"], maps, blocks["large"]),
            "matches": native_matches(cfg, models["large"], carried, saes["large"], sample),
            "matches_ceiling": native_matches(cfg, models["large"], saes["large_other"], saes["large"], sample),
            "d_sae": {"small": saes["small"].cfg.d_sae, "large": saes["large"].cfg.d_sae},
        }
        write_json_atomic(out / "transfer.json", record)
        return {"explained_variance": record["transferred_on_large"]["explained_variance"]}

    return run_step(cfg, "stitch-transfer", inputs, build, "transfer.json",
                 ["paper_lib.stitching.transfer", "paper_lib.saes.evaluate", "paper_lib.matching.correlate"])
