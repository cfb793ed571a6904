"""What is measured at every checkpoint of a fine-tune: loss and accuracy on every domain, the parent SAE's drift
and fit, the case-study features; and, at a few checkpoints, a full SAE matched to the parent's (notebook 08)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..core import intervals
from ..core.artifacts import read_json
from ..core.config import Config
from ..core.registry import DOMAINS, REGISTRY
from ..matching import controls
from ..matching.pairs import match_saes, sample_domains
from ..models.evaluate import BLOCK_SUMS, EVAL_UNIT
from .drift import drift_dir, load_drift
from .steps import MATCH_METHOD, eval_dir, snapshot_match_dir
from .trajectory import Checkpoint, checkpoints


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
                rows.append({"model": name, "fraction": ckpt.fraction, "step": ckpt.step, "feature_name": label,
                             "feature": int(feature),
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


def doubling_improvement(block_loss_a, block_loss_b, tokens_a: int, tokens_b: int) -> intervals.Interval:
    """The relative improvement of a validation loss from a checkpoint at ``tokens_a`` to one at ``tokens_b``, per
    doubling of tokens: ``(L_a - L_b) / L_a / log2(tokens_b / tokens_a)``, from the per-block summed losses of the
    same validation blocks (equal tokens per block), with a 95% interval paired over those blocks."""
    doublings = float(np.log2(tokens_b / tokens_a))
    if not doublings > 0:
        raise ValueError(f"the second checkpoint must have seen more tokens than the first ({tokens_a}, {tokens_b})")
    return intervals.bootstrap(
        (np.asarray(block_loss_a, dtype=np.float64), np.asarray(block_loss_b, dtype=np.float64)),
        lambda la, lb, axis=-1: (la.sum(axis) - lb.sum(axis)) / la.sum(axis) / doublings,
        unit=EVAL_UNIT, paired=True, vectorized=True,
    )


def criterion_met(record: intervals.Interval | None, criterion: float) -> bool | None:
    """True when the whole interval lies under ``criterion``, False when it lies at or over it, None when it
    straddles it (or there is no interval): cannot tell."""
    if record is None:
        return None
    return True if record["high"] < criterion else False if record["low"] >= criterion else None


def length_verdict(cfg: Config, name: str) -> dict[str, Any]:
    """The fine-tune-length criterion (``cfg.dynamics.length_criterion``) on one fine-tune's checkpoints.

    Between consecutive snapshots (and from the last one to the end), the relative improvement of the fine-tune's
    own domain's validation loss per doubling of tokens: ``(L_a - L_b) / L_a / log2(T_b / T_a)``, so a step that is
    not an exact doubling (the snapshots land on whole steps) is scaled to one. Each with a 95% interval paired over
    the validation blocks (both checkpoints saw the same blocks). The fine-tune is long enough when its last
    doubling improved the loss by less than the criterion: ``meets`` is True when the whole interval is under it,
    False when the whole interval is at or over it, None when it straddles the criterion (cannot tell). The curve is
    read along one run whose learning rate decays to zero at its end, so the last step also contains the annealing.
    """
    criterion = cfg.dynamics.length_criterion
    domain = REGISTRY.spec(name).domains[0]
    points = [c for c in checkpoints(cfg, name) if c.tokens > 0]
    sums = [block_sums(eval_dir(cfg, c.path, c.key))[domain] for c in points]
    steps = []
    for (a, sa), (b, sb) in zip(zip(points, sums), zip(points[1:], sums[1:])):
        if not np.array_equal(sa["tokens"], sb["tokens"]):
            raise ValueError(f"{name}'s checkpoints were evaluated on different blocks; rebuild their evaluations")
        record = doubling_improvement(sa["loss"], sb["loss"], a.tokens, b.tokens)
        steps.append({"from_fraction": a.fraction, "to_fraction": b.fraction, "from_tokens": a.tokens,
                      "to_tokens": b.tokens, "doublings": float(np.log2(b.tokens / a.tokens)),
                      "improvement_per_doubling": record["value"], "improvement_per_doubling_interval": record})
    meets = criterion_met(steps[-1]["improvement_per_doubling_interval"] if steps else None, criterion)
    first = next((s["to_fraction"] for s in steps if s["improvement_per_doubling"] < criterion), None)
    return {"model": name, "domain": domain, "criterion": criterion, "steps": steps,
            "first_fraction_under_criterion": first, "profile_length_meets_criterion": meets}


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
            if ckpt.nominal == 1.0:
                real = match_saes(cfg, parent, name, MATCH_METHOD, domains)["many"]
                best, dead = real.best_corr_for_parent, real.dead_parent
            elif ckpt.nominal in cfg.dynamics.sae_fractions:
                with np.load(snapshot_match_dir(cfg, ckpt) / "match.npz") as stored:
                    best, dead = stored["best_corr_for_parent"], stored["dead_parent"]
            else:
                continue
            drift, _ = load_drift(checkpoint_drift(cfg, ckpt))
            live = drift["live"] & ~dead  # both saw the parent's stored sample: live for one is live for the other
            by_drift = np.nan_to_num(drift["r"][live], nan=-np.inf) >= threshold
            by_match = np.nan_to_num(best[live], nan=-np.inf) >= threshold
            rows.append({
                "model": name, "fraction": ckpt.fraction, "step": ckpt.step, "live_parent_features": int(live.sum()),
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
