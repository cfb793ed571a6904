"""What is measured at every checkpoint of a fine-tune: loss and accuracy on every domain, the parent SAE's drift
and fit, the case-study features; and, at a few checkpoints, a full SAE matched to the parent's (notebook 08)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from ..core import intervals
from ..core.artifacts import cached_step, read_json, write_json_atomic
from ..core.config import Config
from ..core.registry import DOMAINS, REGISTRY
from ..core.runtime import require_finite
from ..data import DATA_CODE, corpora_fingerprints, eval_blocks, sae_train_blocks, tokenizer_hash
from ..matching import classify, controls
from ..matching.pairs import (
    _vocab_size, activation_sample_dir, correlate_samples, load_activation_sample, match_saes, min_support,
    sample_blocks, sample_domains,
)
from ..models.build import load_hf, to_hooked
from ..models.evaluate import BLOCK_SUMS, evaluate_lm, metric_intervals
from ..saes import encode_with, l1_coefficient, train_sae
from ..saes.encode import ENCODE_CODE
from ..saes.store import sae_seed
from ..saes.train import _quiet_sae_lens
from ..core.runtime import default_device
from .drift import drift_dir, load_drift
from .trajectory import Checkpoint, checkpoints

MATCH_METHOD = "position"  # the controls' headline method (token mode matches chance pairs; see notebook 05)


def eval_dir(cfg: Config, weights: Path, weights_key: str) -> Path:
    """Loss and accuracy of the model in ``weights`` on the first ``cfg.dynamics.eval_blocks`` validation blocks of
    every domain (cached): ``metrics.json`` (with intervals over blocks) and ``block_sums.npz``."""
    n = cfg.dynamics.eval_blocks
    inputs = {"weights": weights_key, "eval_blocks": n, "eval_tokens": cfg.data.eval_tokens,
              "tokenizer": tokenizer_hash(cfg), "corpora": corpora_fingerprints(cfg, DOMAINS, "validation")}

    def build(out: Path) -> dict[str, Any]:
        model = load_hf(weights)
        metrics, sums = {}, {}
        for domain in DOMAINS:
            blocks = eval_blocks(cfg, domain)
            if len(blocks) < n:
                raise ValueError(f"dynamics.eval_blocks is {n} but {domain} has {len(blocks)} validation blocks of "
                                 f"{cfg.data.block_size} tokens (data.eval_tokens): lower dynamics.eval_blocks")
            result = evaluate_lm(model, blocks[:n], cfg.pretrain.eval_batch_size, desc=f"{weights_key} on {domain}")
            require_finite({domain: {k: result[k] for k in ("loss", "accuracy")}}, f"{weights_key}'s metrics",
                           "The checkpoint is broken; nothing was cached.")
            metrics[domain] = {"loss": result["loss"], "accuracy": result["accuracy"], **metric_intervals(result)}
            sums.update({f"{domain}_{s}": result[f"block_{s}"] for s in BLOCK_SUMS})
        np.savez(out / "block_sums.npz", **sums)
        write_json_atomic(out / "metrics.json", metrics)
        return {}

    code = [*DATA_CODE, "paper_lib.models.build", "paper_lib.models.evaluate", "paper_lib.core.intervals"]
    return cached_step(cfg.profile, "dynamics-eval", inputs, build, code=code)


def block_sums(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    """``{domain: {"loss", "correct", "tokens"}}`` of an ``eval_dir`` folder."""
    with np.load(folder / "block_sums.npz") as stored:
        return {d: {s: stored[f"{d}_{s}"] for s in BLOCK_SUMS} for d in DOMAINS}


def _pair(ckpt: Checkpoint) -> tuple[str, tuple[str, ...]]:
    parent = REGISTRY.spec(ckpt.model).parents[0]
    return parent, REGISTRY.pair_domains(parent, ckpt.model)


def checkpoint_drift(cfg: Config, ckpt: Checkpoint) -> Path:
    """The parent SAE's drift from the parent to this checkpoint, on the pair's matching sample (cached)."""
    parent, _ = _pair(ckpt)
    return drift_dir(cfg, parent, sample_domains(cfg, parent, ckpt.model), ckpt.path, ckpt.key)


def trajectory_table(cfg: Config, names: tuple[str, ...] | list[str]) -> pd.DataFrame:
    """One row per fine-tune and checkpoint: fraction, step, tokens; loss and accuracy on every domain (each with
    its interval); the parent SAE's survival share, mean drift, explained variance and reconstruction score on
    the checkpoint (with intervals where there is one)."""
    rows = []
    for name in names:
        for ckpt in tqdm(checkpoints(cfg, name), desc=f"trajectory of {name}", leave=False):
            metrics = read_json(eval_dir(cfg, ckpt.path, ckpt.key) / "metrics.json")
            _, summary = load_drift(checkpoint_drift(cfg, ckpt))
            row: dict[str, Any] = {"model": name, "fraction": ckpt.fraction, "step": ckpt.step, "tokens": ckpt.tokens}
            for domain, values in metrics.items():
                for metric in ("loss", "accuracy"):
                    row[f"{domain}_{metric}"] = values[metric]
                    row[f"{domain}_{metric}_interval"] = values[f"{metric}_interval"]
            share = summary["survival_share"]
            row.update({
                "survival_share": share["value"] if share else None, "survival_share_interval": share,
                "mean_drift": summary["mean_r"], "live_parent_features": summary["live"],
                "silent_parent_features": summary["silent"],
                "parent_sae_explained_variance": summary["explained_variance"],
                "parent_sae_explained_variance_interval": summary["explained_variance_interval"],
                "parent_sae_reconstruction_score": summary["reconstruction_score"],
            })
            rows.append(row)
    return pd.DataFrame(rows)


def feature_drift_table(cfg: Config, names: tuple[str, ...] | list[str], features: dict[str, int]) -> pd.DataFrame:
    """The drift of named parent features (``{label: feature id}``, e.g. the case studies') at every checkpoint,
    with whether each survives; a feature the parent does not fire on the sample has no row."""
    rows = []
    for name in names:
        for ckpt in checkpoints(cfg, name):
            drift, _ = load_drift(checkpoint_drift(cfg, ckpt))
            for label, feature in features.items():
                if not drift["live"][feature]:
                    continue
                r = float(drift["r"][feature])
                rows.append({"model": name, "fraction": ckpt.fraction, "feature_name": label, "feature": int(feature),
                             "drift": None if np.isnan(r) else r, "silent": bool(drift["silent"][feature]),
                             "survives": bool(not np.isnan(r) and r >= cfg.matching.threshold)})
    return pd.DataFrame(rows)


def first_below(table: pd.DataFrame, threshold: float) -> dict[tuple[str, str], float | None]:
    """``{(model, feature_name): the first fraction where the drift falls below threshold, or None}``."""
    found = {}
    for (model, label), group in table.sort_values("fraction").groupby(["model", "feature_name"], sort=False):
        below = group[~group["survives"]]
        found[(model, label)] = float(below["fraction"].iloc[0]) if len(below) else None
    return found


def length_verdict(table: pd.DataFrame, name: str, criterion: float) -> dict[str, Any]:
    """The fine-tune-length criterion on a fine-tune's trajectory: the relative improvement of its own domain's
    validation loss over each doubling of tokens (snapshot fractions that are doublings of each other), and the
    first length at which one doubling improved it by less than ``criterion``."""
    domain = REGISTRY.spec(name).domains[0]
    rows = table[(table["model"] == name) & (table["fraction"] > 0)].sort_values("fraction")
    loss = dict(zip(rows["fraction"], rows[f"{domain}_loss"]))
    doublings = []
    for fraction, value in loss.items():
        half = fraction / 2
        match = next((f for f in loss if np.isclose(f, half)), None)
        if match is not None:
            gain = (loss[match] - value) / loss[match]
            doublings.append({"from": match, "to": fraction, "relative_improvement": float(gain)})
    enough = next((d["to"] for d in doublings if d["relative_improvement"] < criterion), None)
    return {"model": name, "domain": domain, "criterion": criterion, "doublings": doublings,
            "first_fraction_meeting_criterion": enough,
            "profile_length_meets_criterion": bool(doublings) and doublings[-1]["to"] == 1.0
            and doublings[-1]["relative_improvement"] < criterion}


# -- a full SAE at a snapshot, matched to the parent's --------------------------------------------------------------

def snapshot_sae_dir(cfg: Config, ckpt: Checkpoint) -> Path:
    """An SAE on a snapshot, trained exactly as the fine-tune's own SAE (same data mixture, sparsity and seed)."""
    name = ckpt.model
    inputs = {"weights": ckpt.key, "sae": {k: v for k, v in cfg.sae.model_dump().items() if k not in ("eval_blocks",)},
              "l1_coefficient": l1_coefficient(cfg, name), "domains": list(REGISTRY.sae_domains(name)),
              "tokenizer": tokenizer_hash(cfg), "corpora": corpora_fingerprints(cfg, REGISTRY.sae_domains(name), "train"),
              "seed": sae_seed(cfg, name)}

    def build(out: Path) -> dict[str, Any]:
        model = to_hooked(load_hf(ckpt.path))
        return train_sae(cfg, name, model, sae_train_blocks(cfg, name), out, l1_coefficient(cfg, name),
                         sae_seed(cfg, name))

    code = [*DATA_CODE, *ENCODE_CODE, "paper_lib.saes.train"]
    return cached_step(cfg.profile, f"sae-{name}-snapshot", inputs, build, code=code)


def snapshot_match_dir(cfg: Config, ckpt: Checkpoint) -> Path:
    """The parent's SAE matched to the snapshot's SAE on the pair's sample with the controls' method (position-mode
    Pearson r, many-to-many, ``cfg.matching.threshold``), cached: ``match.npz`` (per parent feature, its best r)."""
    parent, _ = _pair(ckpt)
    domains = sample_domains(cfg, parent, ckpt.model)
    sae_folder = snapshot_sae_dir(cfg, ckpt)
    inputs = {"parent_sample": activation_sample_dir(cfg, parent, domains).name, "sae": sae_folder.name,
              "weights": ckpt.key, "threshold": cfg.matching.threshold, "min_support": min_support(cfg, MATCH_METHOD)}

    def build(out: Path) -> dict[str, Any]:
        from sae_lens import SAE

        x, tokens = load_activation_sample(cfg, parent, domains)
        with _quiet_sae_lens():
            sae = SAE.load_from_disk(sae_folder / "sae", device=default_device(), dtype="float32").eval()
        model = to_hooked(load_hf(ckpt.path)).to(sae.device, print_details=False)
        blocks = sample_blocks(cfg, domains)
        pieces = [sp.csr_matrix(encode_with(model, sae, blocks[s : s + 64], 64).reshape(-1, sae.cfg.d_sae).numpy())
                  for s in range(0, len(blocks), 64)]
        y = sp.vstack(pieces).tocsr()
        corr, _ = correlate_samples(x, y, tokens, MATCH_METHOD, _vocab_size(cfg, tokens), min_support(cfg, MATCH_METHOD),
                                    desc=f"{parent} -> {ckpt.key}")
        dead_p = np.bincount(x.indices, minlength=x.shape[1]) == 0
        dead_c = np.bincount(y.indices, minlength=y.shape[1]) == 0
        result = classify(corr, dead_p, dead_c, cfg.matching.threshold, parent, ckpt.model, MATCH_METHOD, x.shape[0])
        np.savez(out / "match.npz", best_corr_for_parent=result.best_corr_for_parent, dead_parent=dead_p,
                 dead_child=dead_c)
        return result.counts()

    code = ["paper_lib.matching.correlate", "paper_lib.matching.classify", "paper_lib.matching.kernels", *ENCODE_CODE]
    return cached_step(cfg.profile, f"matching-{parent}-{ckpt.model}-snapshot", inputs, build, code=code)


def drift_agreement(cfg: Config, names: tuple[str, ...] | list[str]) -> pd.DataFrame:
    """Drift survival against SAE matching, per fine-tune and checkpoint that has an SAE (the snapshots of
    ``cfg.dynamics.sae_fractions`` and the fine-tune itself): over the parent features live on the sample, the
    share that survive by drift, the share with a partner at r >= threshold in the checkpoint's SAE, the share on
    which the two verdicts agree, and Cohen's kappa; each share with its interval over those features. Beside them
    the parent-side seed ceiling: the share of the parent's features that its other-seed SAE matches on the same
    sample (what SAE matching finds for a model that did not change at all)."""
    threshold = cfg.matching.threshold
    rows = []
    for name in names:
        parent = REGISTRY.spec(name).parents[0]
        domains = sample_domains(cfg, parent, name)
        ceiling = match_saes(cfg, parent, parent, MATCH_METHOD, domains, controls.other_seeding(cfg.sae.init),
                             cfg.sae.init)["many"]
        ceiling_flags = controls.persisting_flags(ceiling)[~ceiling.dead_child]
        for ckpt in checkpoints(cfg, name):
            if ckpt.fraction == 1.0:
                real = match_saes(cfg, parent, name, MATCH_METHOD, domains)["many"]
                best, dead = real.best_corr_for_parent, real.dead_parent
            elif ckpt.fraction in cfg.dynamics.sae_fractions:
                with np.load(snapshot_match_dir(cfg, ckpt) / "match.npz") as stored:
                    best, dead = stored["best_corr_for_parent"], stored["dead_parent"]
            else:
                continue
            drift, _ = load_drift(checkpoint_drift(cfg, ckpt))
            live = drift["live"] & ~dead  # both saw the parent's stored sample: live for one is live for the other
            by_drift = np.nan_to_num(drift["r"][live], nan=-np.inf) >= threshold
            by_match = np.nan_to_num(best[live], nan=-np.inf) >= threshold
            rows.append({
                "model": name, "fraction": ckpt.fraction, "live_parent_features": int(live.sum()),
                "drift_survival_interval": intervals.share_interval(by_drift, unit="live parent features"),
                "matching_survival_interval": intervals.share_interval(by_match, unit="live parent features"),
                "agreement_interval": intervals.share_interval(by_drift == by_match, unit="live parent features"),
                "both": int((by_drift & by_match).sum()), "drift_only": int((by_drift & ~by_match).sum()),
                "matching_only": int((~by_drift & by_match).sum()), "neither": int((~by_drift & ~by_match).sum()),
                "kappa": cohen_kappa(by_drift, by_match),
                "parent_seed_ceiling_interval": intervals.share_interval(ceiling_flags, unit="live parent features"),
            })
    table = pd.DataFrame(rows)
    for column in [c for c in table.columns if c.endswith("_interval")]:
        table[column.removesuffix("_interval")] = [r["value"] if r else None for r in table[column]]
    return table


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float | None:
    """Cohen's kappa of two boolean verdicts on the same units (None when chance agreement is total)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    observed = float((a == b).mean())
    expected = float(a.mean() * b.mean() + (1 - a.mean()) * (1 - b.mean()))
    return None if np.isclose(expected, 1.0) else (observed - expected) / (1 - expected)
