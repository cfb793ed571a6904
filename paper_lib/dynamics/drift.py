"""Drift: how far one SAE's features still describe another model, feature by feature, without a new SAE.

A reference SAE (the parent's) is applied to two models at the same token positions: its own model and another
(a checkpoint of a fine-tune, or a merge). A feature's *drift* is the Pearson r, over positions, between its
activations on the two. It is exactly 1 for every live feature when the two models are the same, and a feature
*survives* at r >= ``cfg.matching.threshold``. Features the reference never fires on the sample are left out
(``live`` is False); a live feature that never fires on the other model (``silent``) has no r (NaN) and does not
survive. The share of live features that survive, along a trajectory, is the survival curve.

Cheap beside matching two SAEs: no SAE is trained for the other model, so drift cannot see a feature that moved
to a new direction; notebook 08 checks it against real SAE matching where both exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from ..core import intervals
from ..core.artifacts import cached_step, read_json, write_json_atomic
from ..core.config import Config
from ..core.runtime import NonFiniteError
from ..data import DATA_CODE, tokenizer_hash
from ..matching.pairs import activation_sample_dir, load_activation_sample, sample_blocks
from ..models.build import load_hf, to_hooked
from ..saes import encode_with, evaluate_sae, load_sae, sae_dir
from ..saes.encode import ENCODE_CODE

DRIFT_UNIT = "live reference features"
CHUNK_BLOCKS = 64  # the chunking of matching.pairs.activation_sample_dir, so the reference model gives r = 1 exactly


class DriftAccumulator:
    """Per-feature Pearson r between two activation matrices ``[positions, features]`` fed chunk by chunk
    (float64 sums, so millions of positions cost ``6 x features`` numbers of memory)."""

    def __init__(self, n_features: int):
        self.n = 0
        self.sums = np.zeros((5, n_features), dtype=np.float64)  # x, y, x^2, y^2, xy

    def update(self, reference, other) -> None:
        x = reference.toarray() if sp.issparse(reference) else np.asarray(reference)
        y = other.toarray() if sp.issparse(other) else np.asarray(other)
        if x.shape != y.shape or x.ndim != 2 or x.shape[1] != self.sums.shape[1]:
            raise ValueError(f"drift needs two [positions, {self.sums.shape[1]}] chunks of one shape; got "
                             f"{x.shape} and {y.shape}")
        x, y = x.astype(np.float64), y.astype(np.float64)
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise NonFiniteError("activations hold NaN or inf: the model or SAE is broken; nothing was cached")
        self.n += len(x)
        self.sums += np.stack([x.sum(0), y.sum(0), (x * x).sum(0), (y * y).sum(0), (x * y).sum(0)])

    def finalize(self) -> dict[str, np.ndarray]:
        """``r`` (NaN where undefined), ``live`` (the reference fires somewhere), ``silent`` (live, but the other
        model never moves it: constant, so r is undefined)."""
        n = self.n
        sx, sy, sxx, syy, sxy = self.sums
        var_x = n * sxx - sx * sx
        var_y = n * syy - sy * sy
        live = var_x > 0
        silent = live & ~(var_y > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (n * sxy - sx * sy) / np.sqrt(var_x * var_y)
        r = np.where(live & ~silent, np.clip(r, -1.0, 1.0), np.nan)
        return {"r": r, "live": live, "silent": silent}


def feature_drift(reference, other, chunk_positions: int = 65536) -> dict[str, np.ndarray]:
    """``DriftAccumulator`` over two whole matrices (dense or sparse, ``[positions, features]``)."""
    acc = DriftAccumulator(reference.shape[1])
    for start in range(0, reference.shape[0], chunk_positions):
        acc.update(reference[start : start + chunk_positions], other[start : start + chunk_positions])
    return acc.finalize()


def surviving(drift: dict[str, np.ndarray], threshold: float) -> np.ndarray:
    """Per live feature (in feature order): True where r >= threshold (a silent feature does not survive)."""
    r = drift["r"][drift["live"]]
    return np.nan_to_num(r, nan=-np.inf) >= threshold


def survival_interval(drift: dict[str, np.ndarray], threshold: float) -> intervals.Interval | None:
    """The share of live features that survive, with its 95% interval over those features (None: none live)."""
    flags = surviving(drift, threshold)
    return intervals.share_interval(flags, unit=DRIFT_UNIT) if len(flags) else None


def compute_drift(cfg: Config, reference: str, domains: tuple[str, ...], model, evaluate: bool = True
                  ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The drift of ``reference``'s SAE from its own model to ``model`` (a HookedTransformer) on the matching sample
    of ``domains``: per-feature arrays (r, live, silent) and a summary (survival share with its interval, mean r;
    with ``evaluate`` the reference SAE's diagnostics on ``model``: explained variance, L0, reconstruction score)."""
    domains = tuple(domains)
    x, tokens = load_activation_sample(cfg, reference, domains)
    blocks = sample_blocks(cfg, domains)
    if not np.array_equal(blocks.reshape(-1).numpy(), tokens):
        raise ValueError(f"the stored activation sample of {reference} is not the sample of {'+'.join(domains)}; "
                         f"delete {activation_sample_dir(cfg, reference, domains)} and rerun")
    sae = load_sae(cfg, reference)
    model = model.to(sae.device, print_details=False)
    acc = DriftAccumulator(x.shape[1])
    width = blocks.shape[1]
    for start in tqdm(range(0, len(blocks), CHUNK_BLOCKS), desc=f"drift of {reference}'s features", leave=False):
        feats = encode_with(model, sae, blocks[start : start + CHUNK_BLOCKS], CHUNK_BLOCKS)
        y = feats.reshape(-1, feats.shape[-1]).numpy()
        acc.update(x[start * width : start * width + len(y)], y)
    drift = acc.finalize()
    summary: dict[str, Any] = {
        "positions": int(acc.n),
        "live": int(drift["live"].sum()),
        "silent": int(drift["silent"].sum()),
        "mean_r": float(np.nanmean(drift["r"])) if np.isfinite(drift["r"]).any() else None,
        "survival_share": survival_interval(drift, cfg.matching.threshold),
    }
    if evaluate:
        diagnostics = evaluate_sae(sae, model, blocks)
        summary.update({k: diagnostics[k] for k in ("explained_variance", "explained_variance_interval", "l0",
                                                     "reconstruction_score", "ce_loss_clean")})
    return drift, summary


# What a step that computes drift depends on beyond its upstream folders.
DRIFT_CODE = (*DATA_CODE, *ENCODE_CODE, "paper_lib.saes.evaluate", "paper_lib.core.intervals",
              "paper_lib.dynamics.drift")


def save_drift(folder: Path, drift: dict[str, np.ndarray], summary: dict[str, Any], prefix: str = "") -> None:
    np.savez(folder / f"{prefix}drift.npz", **drift)
    write_json_atomic(folder / f"{prefix}summary.json", summary)


def drift_dir(cfg: Config, reference: str, domains: tuple[str, ...], weights: Path, weights_key: str,
              evaluate: bool = True) -> Path:
    """Cached ``compute_drift`` to the model in ``weights`` (a folder holding ``model/``): ``drift.npz`` and
    ``summary.json``. ``weights_key`` names the weights in the cache key (a step folder's name, plus a sub-folder
    for a snapshot)."""
    domains = tuple(domains)
    inputs = {"sae": sae_dir(cfg, reference).name, "sample": activation_sample_dir(cfg, reference, domains).name,
              "weights": weights_key, "threshold": cfg.matching.threshold, "evaluate": evaluate,
              "tokenizer": tokenizer_hash(cfg)}

    def build(out: Path) -> dict[str, Any]:
        drift, summary = compute_drift(cfg, reference, domains, to_hooked(load_hf(weights)), evaluate)
        save_drift(out, drift, summary)
        return {"positions": summary["positions"]}

    return cached_step(cfg.profile, f"drift-{reference}", inputs, build, code=DRIFT_CODE)


def load_drift(folder: Path, prefix: str = "") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The per-feature arrays and the summary saved by ``save_drift`` (a ``drift_dir`` folder's by default)."""
    with np.load(folder / f"{prefix}drift.npz") as stored:
        arrays = {k: stored[k] for k in stored.files}
    return arrays, read_json(folder / f"{prefix}summary.json")

