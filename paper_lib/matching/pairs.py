"""Matches between registry models' SAEs on the shared sample: cached activations, ``match_pair``, the tables."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from ..core.artifacts import cached_step, manifest
from ..core.config import Config
from ..core.registry import REGISTRY
from ..data import (
    DATA_CODE, MATCHING_DOMAINS, corpora_fingerprints, get_tokenizer, matching_blocks, mixture_blocks, tokenizer_hash,
)
from ..saes import encode_with, load_sae, model_and_sae, sae_dir
from ..saes.encode import ENCODE_CODE
from . import resume
from .classify import ASSIGNMENTS, MatchResult, classify
from .correlate import MODES, CorrelationAccumulator
from .methods import choose_min_support, decoder_cosine, permute_positions

METHODS = ("position", "token", "decoder")  # notebook 05's table of methods; the first two are correlation MODES
# Guards the permutation null is swept over: token mode needs far larger ones (with 2 or 3 shared token strings,
# chance pairs reach r >= 0.8 easily).
GUARD_GRID = {"position": (0, 1, 2, 3, 5, 8, 13, 21), "token": (2, 3, 5, 8, 13, 21, 34, 55, 89, 144)}
# "Dead" in a match means never active on that pair's sample, which is not dead in general: tables say so.
INACTIVE_COLUMNS = {"dead_parent": "parent_inactive_on_sample", "dead_child": "child_inactive_on_sample"}


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


SAMPLE_DOMAINS = {"babypython": MATCHING_DOMAINS}  # cfg.matching.sample -> fixed domains ("pair": per pair)


def sample_domains(cfg: Config, parent: str, child: str, sample: str | None = None) -> tuple[str, ...]:
    """The domains a pair is matched on: ``cfg.matching.sample`` ("pair": both models' data, canonical order)."""
    sample = cfg.matching.sample if sample is None else sample
    if sample == "pair":
        return REGISTRY.pair_domains(parent, child)
    if sample not in SAMPLE_DOMAINS:
        raise ValueError(f"sample must be 'pair' or one of {sorted(SAMPLE_DOMAINS)}, got {sample!r}")
    return SAMPLE_DOMAINS[sample]


def sample_blocks(cfg: Config, domains: tuple[str, ...]) -> torch.Tensor:
    """``cfg.matching.n_blocks`` validation blocks of ``cfg.matching.context_size`` tokens, evenly by tokens over
    ``domains`` (the released code's sample when ``domains`` is BabyLM + Python)."""
    if tuple(domains) == MATCHING_DOMAINS:
        return matching_blocks(cfg)  # the same blocks as before pair samples existed
    m = cfg.matching
    spare = len(domains)  # one spare block per domain, so flooring per domain still leaves n_blocks blocks
    blocks = mixture_blocks(cfg, tuple(domains), "validation", (m.n_blocks + spare) * m.context_size, m.context_size)
    if len(blocks) < m.n_blocks:
        raise ValueError(
            f"only {len(blocks)} validation blocks of {m.context_size} tokens are available on {'+'.join(domains)}, "
            f"matching.n_blocks asks for {m.n_blocks}: lower matching.n_blocks"
        )
    return blocks[: m.n_blocks]


def _sample_inputs(cfg: Config, name: str, domains: tuple[str, ...], seeding: str | None) -> dict[str, Any]:
    m = cfg.matching
    return {
        "sae": sae_dir(cfg, name, seeding).name,
        "tokenizer": tokenizer_hash(cfg),
        "domains": list(domains),
        "corpora": corpora_fingerprints(cfg, domains, "validation"),
        "n_blocks": m.n_blocks,
        "context_size": m.context_size,
        "seed": cfg.seed,
    }


def _seeding_tag(cfg: Config, seeding: str | None) -> str:
    return "" if (cfg.sae.init if seeding is None else seeding) == "independent" else "-shared"


def activation_sample_dir(
    cfg: Config, name: str, domains: tuple[str, ...] | None = None, seeding: str | None = None, batch_blocks: int = 64
) -> Path:
    """Cached folder with one SAE's activations on a matching sample, stored sparse (CSR).

    ``domains``: the sample's text (default: the released BabyPython sample); ``seeding``: which of the model's
    SAEs (``saes.sae_seed``). Encodes the sample chunk by chunk at the SAE's own hook (``saes.encode_with``) and
    keeps only the nonzero activations.
    """
    domains = MATCHING_DOMAINS if domains is None else tuple(domains)

    def build(out: Path) -> dict:
        blocks = sample_blocks(cfg, domains)
        model, sae = model_and_sae(cfg, name, seeding)
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
            "inactive_features": int((np.bincount(acts.indices, minlength=acts.shape[1]) == 0).sum()),
        }

    code = [*DATA_CODE, *ENCODE_CODE]
    step = f"matching-acts-{name}{_seeding_tag(cfg, seeding)}"
    return cached_step(cfg.profile, step, _sample_inputs(cfg, name, domains, seeding), build, code=code)


def load_activation_sample(
    cfg: Config, name: str, domains: tuple[str, ...] | None = None, seeding: str | None = None
) -> tuple[sp.csr_matrix, np.ndarray]:
    """One SAE's activations on a matching sample ``[n_positions, d_sae]`` (CSR) and the token ids."""
    path = activation_sample_dir(cfg, name, domains, seeding)
    return sp.load_npz(path / "acts.npz").tocsr(), np.load(path / "tokens.npy")


def correlate_samples(
    parent_acts: sp.csr_matrix, child_acts: sp.csr_matrix, tokens: np.ndarray, mode: str, vocab_size: int,
    min_support: int = 2, chunk_positions: int = 65536, desc: str = "correlating", track_support: bool = False,
    checkpoint: Path | None = None,
) -> tuple[np.ndarray, CorrelationAccumulator]:
    """Stream two stored samples through a ``CorrelationAccumulator``; returns (corr ``[F, G]``, accumulator).

    ``checkpoint``: a file in the step's unfinished folder where the statistics are kept now and then, so an
    interrupted pass resumes from them (``matching.resume``); it is removed once the pass is done.
    """
    n = parent_acts.shape[0]
    what = {"shapes": [parent_acts.shape, child_acts.shape], "nnz": [parent_acts.nnz, child_acts.nnz], "mode": mode,
            "vocab_size": vocab_size, "min_support": min_support, "chunk": chunk_positions, "support": track_support}
    acc, first = resume.load(checkpoint, what) if checkpoint else (None, 0)
    if acc is None:
        acc = CorrelationAccumulator(
            parent_acts.shape[1], child_acts.shape[1], mode, vocab_size=vocab_size, min_support=min_support,
            track_support=track_support,
        )
    saved, wait = time.time(), resume.SAVE_SECONDS
    for start in tqdm(range(first, n, chunk_positions), desc=desc, leave=False):
        stop = min(start + chunk_positions, n)
        acc.update(parent_acts[start:stop], child_acts[start:stop], tokens[start:stop])
        if checkpoint and stop < n and time.time() - saved >= wait:
            wait = resume.next_save_after(resume.save(checkpoint, acc, stop, what))
            saved = time.time()
    corr = acc.finalize()
    if checkpoint:
        resume.clear(checkpoint)
    return corr, acc


def _vocab_size(cfg: Config, tokens: np.ndarray) -> int:
    return max(len(get_tokenizer(cfg)), int(tokens.max()) + 1)


def min_support(cfg: Config, method: str) -> int:
    """The support guard of a method: co-active positions (position), shared token strings (token), none (decoder)."""
    return {"position": cfg.matching.min_coactive, "token": cfg.matching.min_token_support}.get(method, 0)


def default_assignments(cfg: Config, method: str) -> tuple[str, ...]:
    """The assignments a match computes unless its caller names them: both with ``matching.compare_methods`` (the
    one-to-one variants are part of notebook 05's comparison) and for the decoder method (read one-to-one), else
    many-to-many only. A 16,384 x 16,384 ``linear_sum_assignment`` takes minutes on 2 cores, so it runs only where
    it is read."""
    return ASSIGNMENTS if cfg.matching.compare_methods or method == "decoder" else ("many",)


_ARRAYS = ("best_child_for_parent", "best_corr_for_parent", "best_parent_for_child", "best_corr_for_child",
           "dead_parent", "dead_child")


def match_saes(
    cfg: Config, parent: str, child: str, method: str, domains: tuple[str, ...],
    parent_seeding: str | None = None, child_seeding: str | None = None, permute: bool = False,
    threshold: float | None = None, assignments: tuple[str, ...] | None = None,
) -> dict[str, MatchResult]:
    """Match two SAEs (any two registry models, or one model's two seedings) on one sample (cached).

    ``method``: ``position`` or ``token`` (Pearson r of activations) or ``decoder`` (cosine of decoder
    directions: data-free, but features inactive on the sample are left out as in the other methods).
    ``permute``: the child's positions are shuffled first (the permutation null). Returns ``{"many": ...,
    "one": ...}``: every pair >= threshold (one-to-many kept) and the one-to-one assignment's pairs >= threshold,
    for the ``assignments`` asked for (default: ``default_assignments``; part of the cache key).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if permute and method == "decoder":
        raise ValueError("the permutation null shuffles positions; the decoder method reads no positions")
    threshold = cfg.matching.threshold if threshold is None else float(threshold)
    assignments = default_assignments(cfg, method) if assignments is None else tuple(assignments)
    if not assignments or any(a not in ASSIGNMENTS for a in assignments):
        raise ValueError(f"assignments must be some of {ASSIGNMENTS}, got {assignments!r}")
    assignments = tuple(a for a in ASSIGNMENTS if a in assignments)  # one order, so one cache key
    domains = tuple(domains)
    parent_dir = activation_sample_dir(cfg, parent, domains, parent_seeding)
    child_dir = activation_sample_dir(cfg, child, domains, child_seeding)
    guard = min_support(cfg, method)
    inputs = {"parent": parent_dir.name, "child": child_dir.name, "method": method, "threshold": threshold,
              "min_support": guard, "permute": permute, "seed": cfg.seed, "assignments": list(assignments)}

    def build(out: Path) -> dict:
        x, tokens = load_activation_sample(cfg, parent, domains, parent_seeding)
        y, _ = load_activation_sample(cfg, child, domains, child_seeding)
        if permute:
            y = permute_positions(y, cfg.seed)
        n_positions = x.shape[0]
        dead_p = np.bincount(x.indices, minlength=x.shape[1]) == 0
        dead_c = np.bincount(y.indices, minlength=y.shape[1]) == 0
        meta: dict[str, Any] = {"n_positions": n_positions}
        if method == "decoder":
            score = decoder_cosine(_decoder(cfg, parent, parent_seeding), _decoder(cfg, child, child_seeding))
        else:
            score, acc = correlate_samples(
                x, y, tokens, method, _vocab_size(cfg, tokens), guard, desc=f"{parent} -> {child} ({method})",
                track_support=permute, checkpoint=out / "correlation-state.pkl",
            )
            if permute:  # the false-match rate each guard would give on this null
                # the least guard's matrix: the one just computed when the configured guard is that least one
                lowest = _lowest_guard(method)
                unguarded = score if guard == lowest else acc.finalize(min_support=lowest)
                chosen, table = choose_min_support(unguarded, acc.support(), dead_p, dead_c, threshold,
                                                   grid=GUARD_GRID[method])
                table.to_csv(out / "guard.csv", index=False)
                meta["recommended_min_support"] = chosen
                del unguarded
        for assignment in assignments:
            result = classify(score, dead_p, dead_c, threshold, parent, child, method, n_positions,
                              assignment=assignment)
            np.savez(out / f"{assignment}.npz", **{k: getattr(result, k) for k in _ARRAYS})
            result.pairs.to_csv(out / f"{assignment}_pairs.csv", index=False)
            meta[assignment] = result.counts()
        return meta

    code = ["paper_lib.matching.correlate", "paper_lib.matching.classify", "paper_lib.matching.kernels",
            "paper_lib.matching.methods", "paper_lib.matching.resume"]
    tag = f"{_seeding_tag(cfg, parent_seeding)}{_seeding_tag(cfg, child_seeding)}{'-permuted' if permute else ''}"
    path = cached_step(cfg.profile, f"matching-{parent}-{child}-{method}{tag}", inputs, build, code=code)
    return {a: _load_result(path, a, parent, child, method, threshold) for a in assignments}


def _lowest_guard(method: str) -> int:
    return 2 if method == "token" else 0


def _decoder(cfg: Config, name: str, seeding: str | None) -> np.ndarray:
    return load_sae(cfg, name, seeding).W_dec.detach().cpu().double().numpy()


def _load_result(path: Path, assignment: str, parent: str, child: str, method: str, threshold: float) -> MatchResult:
    arrays = np.load(path / f"{assignment}.npz")
    pairs = pd.read_csv(path / f"{assignment}_pairs.csv", dtype={"parent_feature": np.int64, "child_feature": np.int64})
    return MatchResult(
        parent=parent, child=child, mode=method, threshold=threshold, pairs=pairs,
        n_positions=manifest(path)["meta"]["n_positions"], assignment=assignment, extra={"folder": path.name},
        **{k: arrays[k] for k in arrays.files},
    )


def match_pair(
    cfg: Config, parent: str, child: str, mode: str = "token", threshold: float | None = None
) -> MatchResult:
    """Match a parent's SAE features to a child's (cached): the SAEs ``cfg.sae.init`` picks, on the pair's sample
    (``cfg.matching.sample``), many-to-many. Any two different models may be paired."""
    _check_pair(parent, child, mode)
    return match_saes(cfg, parent, child, mode, sample_domains(cfg, parent, child), threshold=threshold)["many"]


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
        # Pairs are matched on their own samples: a parent feature counts as live if active on any of them.
        live = len(set().union(*(np.flatnonzero(~r.dead_parent).tolist() for r in same_parent)))
        row["parent_persisting_any_share"] = len(into_any) / live if live else float("nan")
    return pd.DataFrame(rows).rename(columns=INACTIVE_COLUMNS)


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

