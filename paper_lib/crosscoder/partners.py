"""Each crosscoder latent's best-correlated SAE feature on both sides, cached: the step notebook 11's comparison with
correlation matching (``compare``) reads. Kept apart from the tables built on it, so editing a table does not
rebuild the step (each step's cache key covers the source of the module that defines it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..core.artifacts import cached_step
from ..core.config import Config
from ..core.registry import REGISTRY
from ..matching.pairs import _vocab_size, activation_sample_dir, correlate_samples, load_activation_sample
from .store import SAMPLE_CODES, crosscoder_dir


def best_partners(cfg: Config, parent: str, child: str) -> dict[str, np.ndarray]:
    """Per latent, its best-correlated feature of the parent's and of the child's SAE and that r (position mode
    with notebook 05's support guard; -1 and NaN where no r is defined), and per SAE feature its best latent
    (cached: two all-pairs correlations per pair)."""
    path = crosscoder_dir(cfg, parent, child)
    domains = REGISTRY.pair_domains(parent, child)
    samples = {side: activation_sample_dir(cfg, name, domains) for side, name in (("parent", parent), ("child", child))}

    def build(out: Path) -> dict:
        latents = sp.load_npz(path / SAMPLE_CODES).tocsr()
        found: dict[str, np.ndarray] = {}
        for side, name in (("parent", parent), ("child", child)):
            features, tokens = load_activation_sample(cfg, name, domains)
            if features.shape[0] != latents.shape[0]:
                raise ValueError(f"the crosscoder's sample has {latents.shape[0]} positions, {name}'s "
                                 f"{features.shape[0]}")
            corr, _ = correlate_samples(latents, features, tokens, "position", _vocab_size(cfg, tokens),
                                        cfg.matching.min_coactive, desc=f"crosscoder latents -> {name} SAE")
            filled = np.where(np.isfinite(corr), corr, -np.inf)
            best, best_r = filled.argmax(axis=1), filled.max(axis=1)
            found[f"{side}_feature"] = np.where(np.isfinite(best_r), best, -1)
            found[f"{side}_r"] = np.where(np.isfinite(best_r), best_r, np.nan)
            best_latent, best_latent_r = filled.argmax(axis=0), filled.max(axis=0)
            found[f"{side}_best_latent"] = np.where(np.isfinite(best_latent_r), best_latent, -1)
            found[f"{side}_best_latent_r"] = np.where(np.isfinite(best_latent_r), best_latent_r, np.nan)
        np.savez(out / "partners.npz", **found)
        return {"n_positions": int(latents.shape[0])}

    inputs = {"crosscoder": path.name, **{side: folder.name for side, folder in samples.items()},
              "min_support": cfg.matching.min_coactive}
    code = ["paper_lib.matching.correlate", "paper_lib.matching.kernels", "paper_lib.matching.pairs"]
    done = cached_step(cfg.profile, f"crosscoder-partners-{parent}-{child}", inputs, build, code=code)
    with np.load(done / "partners.npz") as found:
        return {key: found[key] for key in found.files}
