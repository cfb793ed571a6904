"""Each registry model's SAE: its cache key, its folder (trained on first use), loading it, and encoding text with it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.artifacts import cached_step, manifest
from ..core.config import Config
from ..core.registry import REGISTRY
from ..core.runtime import default_device
from ..data import DATA_CODE, corpora_fingerprints, sae_train_blocks, tokenizer_hash
from ..models import load_hooked_lm, model_dir
from .encode import ENCODE_CODE, encode_with
from .train import _quiet_sae_lens, train_sae

ENCODE_CHUNK_BLOCKS = 64  # blocks encoded at a time: bounds memory at chunk x context x d_sae floats


def l1_coefficient(cfg: Config, name: str) -> float:
    """The sparsity coefficient of one model's SAE: ``cfg.sae.l1_coefficient[name]``, else its ``default``."""
    REGISTRY.spec(name)
    coefficients = cfg.sae.l1_coefficient
    if name in coefficients:
        return coefficients[name]
    if "default" in coefficients:
        return coefficients["default"]
    raise ValueError(
        f"sae.l1_coefficient has no value for '{name}' and no 'default'; add one under sae.l1_coefficient in the profile."
    )


def _sae_inputs(cfg: Config, name: str, model_path: Path) -> dict[str, Any]:
    import sae_lens

    sae_cfg = {k: v for k, v in cfg.sae.model_dump().items() if k not in ("l1_coefficient", "eval_blocks")}
    domains = REGISTRY.sae_domains(name)
    return {
        "model": model_path.name,
        "sae": sae_cfg,
        "l1_coefficient": l1_coefficient(cfg, name),
        "domains": list(domains),
        "tokenizer": tokenizer_hash(cfg),
        "corpora": corpora_fingerprints(cfg, domains, "train"),
        "seed": cfg.seed,
        "sae_lens": sae_lens.__version__,
    }


def sae_dir(cfg: Config, name: str) -> Path:
    """The finished folder of one model's SAE (``sae/`` in SAELens's format), trained on first use."""
    model_path = model_dir(cfg, name)

    def build(out: Path) -> dict:
        model = load_hooked_lm(cfg, name)
        return train_sae(cfg, name, model, sae_train_blocks(cfg, name), out, l1_coefficient(cfg, name))

    code = [*DATA_CODE, *ENCODE_CODE, "paper_lib.saes.train"]
    return cached_step(cfg.profile, f"sae-{name}", _sae_inputs(cfg, name, model_path), build, code=code)


def load_sae(cfg: Config, name: str):
    """One model's trained SAELens ``SAE`` (float32, eval mode), trained on first use."""
    from sae_lens import SAE

    path = sae_dir(cfg, name) / "sae"
    try:
        with _quiet_sae_lens():
            sae = SAE.load_from_disk(path, device=default_device(), dtype="float32")
    except Exception as err:
        raise RuntimeError(
            f"cannot load the SAE in {path} ({err}). The folder is corrupt: delete {path.parent} and rerun."
        ) from err
    return sae.eval()


def training_stats(cfg: Config, name: str) -> dict[str, Any]:
    """How one SAE was trained: tokens, steps, seconds, tokens/s, sizes (from its manifest)."""
    return manifest(sae_dir(cfg, name))["meta"]


def model_and_sae(cfg: Config, name: str):
    """A registry model as a HookedTransformer on its SAE's device, and the SAE."""
    sae = load_sae(cfg, name)
    return load_hooked_lm(cfg, name).to(sae.device, print_details=False), sae


def encode_blocks(cfg: Config, name: str, blocks: torch.Tensor, batch_size: int = 64, model=None, sae=None):
    """Dense SAE feature activations of a registry model's SAE on token blocks: ``[n_blocks, ctx, d_sae]``.

    ``model`` and ``sae`` may be passed to avoid reloading them.
    """
    sae = load_sae(cfg, name) if sae is None else sae
    model = load_hooked_lm(cfg, name) if model is None else model
    return encode_with(model, sae, blocks, batch_size)


def encode_chunks(
    cfg: Config, name: str, blocks: torch.Tensor, chunk_blocks: int = ENCODE_CHUNK_BLOCKS, model=None, sae=None
) -> Iterator[np.ndarray]:
    """SAE activations ``[chunk, ctx, d_sae]`` (float32 numpy) of ``blocks``, a chunk at a time, model and SAE
    loaded once: for sweeps over more text than fits in memory densely."""
    sae = load_sae(cfg, name) if sae is None else sae
    model = (load_hooked_lm(cfg, name) if model is None else model).to(sae.device, print_details=False)
    for start in tqdm(range(0, len(blocks), chunk_blocks), desc=f"encoding {name}", leave=False):
        yield encode_with(model, sae, blocks[start : start + chunk_blocks]).numpy()
