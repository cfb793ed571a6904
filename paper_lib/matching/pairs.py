"""Matches between registry models' SAEs on the shared sample: cached activations, ``match_pair``, the tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from ..core.artifacts import cached_step, manifest
from ..core.config import Config
from ..core.registry import REGISTRY
from ..data import DATA_CODE, MATCHING_DOMAINS, corpora_fingerprints, get_tokenizer, matching_blocks, tokenizer_hash
from ..saes import encode_with, model_and_sae, sae_dir
from ..saes.encode import ENCODE_CODE
from .classify import MatchResult, classify
from .correlate import MODES, CorrelationAccumulator


def matching_pairs(cfg: Config) -> list[tuple[str, str]]:
    """The (parent, child) pairs to match: ``cfg.matching.pairs``, or every parent -> child edge of the registry."""
    if cfg.matching.pairs is None:
        return REGISTRY.edges()
    return [(parent, child) for parent, child in cfg.matching.pairs]


def _check_pair(parent: str, child: str, mode: str) -> None:
    for name in (parent, child):
        REGISTRY.spec(name)
    if parent == child:
        raise ValueError(f"parent and child are both '{parent}'; name two different models")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _sample_inputs(cfg: Config, name: str) -> dict[str, Any]:
    m = cfg.matching
    return {
        "sae": sae_dir(cfg, name).name,
        "tokenizer": tokenizer_hash(cfg),
        "corpora": corpora_fingerprints(cfg, MATCHING_DOMAINS, "validation"),
        "n_blocks": m.n_blocks,
        "context_size": m.context_size,
        "seed": cfg.seed,
    }


def activation_sample_dir(cfg: Config, name: str, batch_blocks: int = 64) -> Path:
    """Cached folder with one model's SAE activations on the shared sample, stored sparse (CSR).

    Encodes the sample chunk by chunk at the SAE's own hook (``saes.encode_with``) and keeps only the nonzero
    activations.
    """

    def build(out: Path) -> dict:
        blocks = matching_blocks(cfg)
        model, sae = model_and_sae(cfg, name)
        pieces = []
        for start in tqdm(range(0, len(blocks), batch_blocks), desc=f"SAE activations ({name})", leave=False):
            feats = encode_with(model, sae, blocks[start : start + batch_blocks], batch_blocks)
            pieces.append(sp.csr_matrix(feats.reshape(-1, feats.shape[-1]).numpy()))
        acts = sp.vstack(pieces).tocsr().astype(np.float32)
        sp.save_npz(out / "acts.npz", acts)
        np.save(out / "tokens.npy", blocks.reshape(-1).numpy().astype(np.int64))
        return {
            "n_positions": acts.shape[0],
            "d_sae": acts.shape[1],
            "nnz": int(acts.nnz),
            "mean_l0": acts.nnz / max(acts.shape[0], 1),
            "dead_features": int((np.bincount(acts.indices, minlength=acts.shape[1]) == 0).sum()),
        }

    code = [*DATA_CODE, *ENCODE_CODE]
    return cached_step(cfg.profile, f"matching-acts-{name}", _sample_inputs(cfg, name), build, code=code)


def load_activation_sample(cfg: Config, name: str) -> tuple[sp.csr_matrix, np.ndarray]:
    """One model's SAE activations on the shared sample ``[n_positions, d_sae]`` (CSR) and the token ids."""
    path = activation_sample_dir(cfg, name)
    return sp.load_npz(path / "acts.npz").tocsr(), np.load(path / "tokens.npy")


def correlate_samples(
    parent_acts: sp.csr_matrix, child_acts: sp.csr_matrix, tokens: np.ndarray, mode: str, vocab_size: int,
    min_support: int = 2, chunk_positions: int = 65536, desc: str = "correlating",
) -> tuple[np.ndarray, CorrelationAccumulator]:
    """Stream two stored samples through a ``CorrelationAccumulator``; returns (corr ``[F, G]``, accumulator)."""
    acc = CorrelationAccumulator(
        parent_acts.shape[1], child_acts.shape[1], mode, vocab_size=vocab_size, min_support=min_support
    )
    n = parent_acts.shape[0]
    for start in tqdm(range(0, n, chunk_positions), desc=desc, leave=False):
        stop = min(start + chunk_positions, n)
        acc.update(parent_acts[start:stop], child_acts[start:stop], tokens[start:stop])
    return acc.finalize(), acc


def _vocab_size(cfg: Config, tokens: np.ndarray) -> int:
    return max(len(get_tokenizer(cfg)), int(tokens.max()) + 1)


def match_pair(
    cfg: Config, parent: str, child: str, mode: str = "token", threshold: float | None = None
) -> MatchResult:
    """Match one parent's SAE features to one child's (cached). Any two different models may be paired."""
    _check_pair(parent, child, mode)
    threshold = cfg.matching.threshold if threshold is None else float(threshold)
    parent_dir, child_dir = activation_sample_dir(cfg, parent), activation_sample_dir(cfg, child)
    inputs = {
        "parent": parent_dir.name,
        "child": child_dir.name,
        "mode": mode,
        "threshold": threshold,
        "min_token_support": cfg.matching.min_token_support,
    }

    def build(out: Path) -> dict:
        x, tokens = load_activation_sample(cfg, parent)
        y, _ = load_activation_sample(cfg, child)
        corr, acc = correlate_samples(
            x, y, tokens, mode, _vocab_size(cfg, tokens), cfg.matching.min_token_support,
            desc=f"{parent} -> {child} ({mode})",
        )
        result = classify(corr, acc.dead_parent, acc.dead_child, threshold, parent, child, mode, acc.n_positions)
        del corr
        np.savez(
            out / "match.npz",
            **{k: getattr(result, k) for k in (
                "best_child_for_parent", "best_corr_for_parent", "best_parent_for_child",
                "best_corr_for_child", "dead_parent", "dead_child")},
        )
        result.pairs.to_csv(out / "pairs.csv", index=False)
        return {"n_positions": acc.n_positions, **result.counts()}

    code = ["paper_lib.matching.correlate", "paper_lib.matching.classify", "paper_lib.matching.kernels"]
    path = cached_step(cfg.profile, f"matching-{parent}-{child}-{mode}", inputs, build, code=code)
    arrays = np.load(path / "match.npz")
    pairs = pd.read_csv(path / "pairs.csv", dtype={"parent_feature": np.int64, "child_feature": np.int64})
    return MatchResult(
        parent=parent, child=child, mode=mode, threshold=threshold, pairs=pairs,
        n_positions=manifest(path)["meta"]["n_positions"], extra={"folder": path.name},
        **{k: arrays[k] for k in arrays.files},
    )


def match_all(cfg: Config, mode: str = "token", threshold: float | None = None) -> pd.DataFrame:
    """One row per pair in ``cfg.matching.pairs``: counts and shares of persisting/emerging/disappearing.

    ``parent_persisting_any_share`` is the share of the parent's live features that persist into at least one
    of its children (the union over every pair with that parent, e.g. BabyPython into Lua or TinyStories).
    """
    results = [match_pair(cfg, parent, child, mode, threshold) for parent, child in matching_pairs(cfg)]
    rows = [result.counts() for result in results]
    for row in rows:
        same_parent = [r for r in results if r.parent == row["parent"]]
        into_any = set().union(*(r.persisting_parent.tolist() for r in same_parent))
        live = int((~same_parent[0].dead_parent).sum())
        row["parent_persisting_any_share"] = len(into_any) / live if live else float("nan")
    return pd.DataFrame(rows)


def best_match_table(cfg: Config, mode: str = "token") -> pd.DataFrame:
    """Long table of every live child feature's best parent correlation, per pair (for the histogram)."""
    frames = []
    for parent, child in matching_pairs(cfg):
        result = match_pair(cfg, parent, child, mode)
        alive = ~result.dead_child
        frames.append(
            pd.DataFrame(
                {
                    "pair": f"{parent} -> {child}",
                    "child_feature": np.flatnonzero(alive),
                    "best_corr": result.best_corr_for_child[alive],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def best_match_histogram(cfg: Config, mode: str = "token", bin_width: float = 0.05) -> pd.DataFrame:
    """Histogram of live child features' best parent correlation per pair (NaN: no defined r, counted apart)."""
    edges = np.round(np.arange(-1.0, 1.0 + bin_width / 2, bin_width), 6)
    rows = []
    for pair, group in best_match_table(cfg, mode).groupby("pair", sort=False):
        values = group["best_corr"].to_numpy()
        counts, _ = np.histogram(values[np.isfinite(values)], bins=edges)
        rows += [
            {"pair": pair, "mode": mode, "bin_left": lo, "bin_right": hi, "count": int(c)}
            for lo, hi, c in zip(edges[:-1], edges[1:], counts)
        ]
        rows.append({"pair": pair, "mode": mode, "bin_left": np.nan, "bin_right": np.nan,
                     "count": int((~np.isfinite(values)).sum())})
    return pd.DataFrame(rows)

