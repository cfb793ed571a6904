"""Each registry model's SAE: its cache key, its folder (trained on first use), loading it, and encoding text with it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.artifacts import cached_step, manifest, stable_hash
from ..core.config import Config
from ..core.registry import REGISTRY
from ..core.runtime import default_device
from ..data import DATA_CODE, corpora_fingerprints, sae_train_blocks, tokenizer_hash
from ..models import load_hooked_lm, model_dir
from .encode import ENCODE_CODE, encode_with
from .train import _quiet_sae_lens, train_sae

ENCODE_CHUNK_BLOCKS = 64  # blocks encoded at a time: bounds memory at chunk x context x d_sae floats


SEEDINGS = ("independent", "shared")
# Settings that do not change a trained SAE: keyed elsewhere (the coefficient, the seed), used after training
# (eval_blocks), or how often a run saves a checkpoint to resume from (training is the same either way: a test).
_NOT_IN_KEY = ("l1_coefficient", "eval_blocks", "init", "n_checkpoints")


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


def _seeding(cfg: Config, seeding: str | None) -> str:
    seeding = cfg.sae.init if seeding is None else seeding
    if seeding not in SEEDINGS:
        raise ValueError(f"seeding must be one of {SEEDINGS}, got {seeding!r}")
    return seeding


def sae_seed(cfg: Config, name: str, seeding: str | None = None) -> int:
    """The seed an SAE is initialised and trained with.

    ``shared`` (the released protocol): ``cfg.seed`` for every model. ``independent``: derived from ``cfg.seed``
    and the model's name, and never equal to ``cfg.seed``, so the two seedings of one model are two seeds (the
    pair that gives the seed ceiling). ``None``: ``cfg.sae.init``.
    """
    if _seeding(cfg, seeding) == "shared":
        return cfg.seed
    seed = int(stable_hash({"seed": cfg.seed, "sae": name}, 8), 16) % 2**31
    return seed if seed != cfg.seed else seed + 1


def _sae_inputs(cfg: Config, name: str, model_path: Path, seeding: str) -> dict[str, Any]:
    import sae_lens

    sae_cfg = {k: v for k, v in cfg.sae.model_dump().items() if k not in _NOT_IN_KEY}
    domains = REGISTRY.sae_domains(name)
    inputs = {
        "model": model_path.name,
        "sae": sae_cfg,
        "l1_coefficient": None if REGISTRY.spec(name).control else l1_coefficient(cfg, name),
        "domains": list(domains),
        "tokenizer": tokenizer_hash(cfg),
        "corpora": corpora_fingerprints(cfg, domains, "train"),
        "seed": sae_seed(cfg, name, seeding),
        "sae_lens": sae_lens.__version__,
    }
    if REGISTRY.spec(name).control:
        reference = REGISTRY.names[0]
        inputs["l1_coefficient"] = {"scale_matched_to": reference, "reference_l1": l1_coefficient(cfg, reference),
                                    "reference_model": model_dir(cfg, reference).name}
    return inputs


def _scale_matched_l1(cfg: Config, name: str, model, blocks: torch.Tensor) -> tuple[float, dict[str, float]]:
    """A control model's L1 coefficient: the reference model's, times the ratio of their RMS activation norms.

    An untrained model's activations are several times smaller than a trained one's; with the same coefficient
    the L1 term would outweigh the (quadratic) reconstruction term and leave almost every feature dead. Scaling
    activations by c is the same problem as keeping them and scaling the coefficient by c, so the coefficient is
    matched to the activation scale (measured on the first 64 training blocks of each model).
    """
    from .encode import hook_activations

    reference = REGISTRY.names[0]
    sample = blocks[:64]
    rms = {}
    for who, lm in ((name, model), (reference, load_hooked_lm(cfg, reference))):
        acts = hook_activations(lm.to(default_device(), print_details=False), sample, cfg.sae.hook_name)
        rms[who] = float(acts.reshape(-1, acts.shape[-1]).pow(2).sum(-1).mean().sqrt())
    return l1_coefficient(cfg, reference) * rms[name] / rms[reference], rms


def sae_dir(cfg: Config, name: str, seeding: str | None = None) -> Path:
    """The finished folder of one model's SAE (``sae/`` in SAELens's format), trained on first use.

    ``seeding``: ``"independent"`` or ``"shared"`` (see ``sae_seed``); ``None`` is ``cfg.sae.init``.
    """
    seeding = _seeding(cfg, seeding)
    model_path = model_dir(cfg, name)

    def build(out: Path) -> dict:
        model = load_hooked_lm(cfg, name)
        blocks = sae_train_blocks(cfg, name)
        extra = {}
        if REGISTRY.spec(name).control:
            l1, rms = _scale_matched_l1(cfg, name, model, blocks)
            extra = {"rms_activation_norm": rms}
        else:
            l1 = l1_coefficient(cfg, name)
        stats = train_sae(cfg, name, model, blocks, out, l1, sae_seed(cfg, name, seeding))
        return {**stats, "seeding": seeding, "seed": sae_seed(cfg, name, seeding), **extra}

    code = [*DATA_CODE, *ENCODE_CODE, "paper_lib.saes.train", "paper_lib.saes.checkpoints"]
    step = f"sae-{name}" if seeding == "independent" else f"sae-{name}-{seeding}"
    return cached_step(cfg.profile, step, _sae_inputs(cfg, name, model_path, seeding), build, code=code)


def load_sae(cfg: Config, name: str, seeding: str | None = None):
    """One model's trained SAELens ``SAE`` (float32, eval mode), trained on first use."""
    from sae_lens import SAE

    path = sae_dir(cfg, name, seeding) / "sae"
    try:
        with _quiet_sae_lens():
            sae = SAE.load_from_disk(path, device=default_device(), dtype="float32")
    except Exception as err:
        raise RuntimeError(
            f"cannot load the SAE in {path} ({err}). The folder is corrupt: delete {path.parent} and rerun."
        ) from err
    return sae.eval()


def training_stats(cfg: Config, name: str, seeding: str | None = None) -> dict[str, Any]:
    """How one SAE was trained: tokens, steps, seconds, tokens/s, sizes, seed (from its manifest)."""
    return manifest(sae_dir(cfg, name, seeding))["meta"]


def model_and_sae(cfg: Config, name: str, seeding: str | None = None):
    """A registry model as a HookedTransformer on its SAE's device, and the SAE."""
    sae = load_sae(cfg, name, seeding)
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
