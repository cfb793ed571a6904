"""What the feature browser shows, read from finished steps: every live SAE feature of each family model on one
shared sample of all four domains (its top contexts, activation histogram and top tokens), its best partner in every
pair notebook 05 matches (both ways, with r and the child's seed ceiling), and notebook 07's explanation and score
where there is one.

The sample is the same text for every model (``matching.n_blocks`` validation blocks of ``matching.context_size``
tokens, evenly over the four domains), so a feature walked from BabyPython into LuaStories shows on the same
contexts. Only that sample's encoding is new work (a cached step per model); everything else is read.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ..core.config import Config
from ..core.registry import REGISTRY

BROWSER_DOMAINS = ("babylm", "python", "lua", "tinystories")
MODE = "position"  # the statistic notebook 05 reads against its seed ceiling and null floor
HISTOGRAM_BINS = 16
SPARK = "\u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588"  # ▁ ... █


def sparkline(counts: np.ndarray) -> str:
    """One bar character per bin, heights on a log scale of the counts (an empty bin is a space)."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.size == 0 or counts.max() <= 0:
        return ""
    levels = np.log1p(counts) / np.log1p(counts.max()) * (len(SPARK) - 1)
    return "".join(SPARK[int(round(v))] if c > 0 else " " for v, c in zip(levels, counts))


def feature_stats(acts: sp.spmatrix, tokens: np.ndarray, context: int, k: int = 5,
                  bins: int = HISTOGRAM_BINS, n_top_tokens: int = 5) -> list[dict[str, Any]]:
    """Per live feature (one that fires on the sample), from its activations ``acts`` ``[positions, features]`` on
    blocks of ``context`` consecutive positions with token ids ``tokens``:

    - ``frequency`` (share of positions it fires on), ``max`` and ``mean`` (over the positions it fires on);
    - ``contexts``: the ``k`` blocks holding its largest activations, largest first, each as ``block``, token ids
      and the feature's activation at every position;
    - ``histogram``: counts of its non-zero activations in ``bins`` equal bins from 0 to its max;
    - ``top_tokens``: the token ids carrying most of its activation mass, with that share.
    """
    csc = sp.csc_matrix(acts)
    n_positions = csc.shape[0]
    if tokens.shape[0] != n_positions or n_positions % context:
        raise ValueError(f"{n_positions} positions, {tokens.shape[0]} tokens and blocks of {context}: they must agree")
    blocks = tokens.reshape(-1, context)
    out = []
    for feature in range(csc.shape[1]):
        start, end = csc.indptr[feature], csc.indptr[feature + 1]
        rows, values = csc.indices[start:end], csc.data[start:end].astype(np.float64)
        keep = values > 0
        rows, values = rows[keep], values[keep]
        if rows.size == 0:
            continue
        order = np.lexsort((rows, -values))  # largest first, ties by position: deterministic
        chosen: list[int] = []
        for block in rows[order] // context:
            if block not in chosen:
                chosen.append(int(block))
                if len(chosen) == k:
                    break
        dense = {}
        for block in chosen:
            mask = rows // context == block
            line = np.zeros(context)
            line[rows[mask] % context] = values[mask]
            dense[block] = line
        mass = np.bincount(tokens[rows], weights=values)
        top = np.argsort(-mass, kind="stable")[:n_top_tokens]
        counts, _ = np.histogram(values, bins=bins, range=(0.0, float(values.max())))
        out.append({
            "id": feature, "n_active": int(rows.size), "frequency": rows.size / n_positions,
            "max": float(values.max()), "mean": float(values.mean()),
            "contexts": [{"block": b, "tokens": blocks[b].tolist(), "acts": dense[b].tolist()} for b in chosen],
            "histogram": counts.tolist(),
            "top_tokens": [(int(t), float(mass[t] / mass.sum())) for t in top if mass[t] > 0],
        })
    return out


def match_links(cfg: Config, pairs: list[tuple[str, str]]) -> tuple[dict[str, dict[int, list[dict[str, Any]]]],
                                                                    list[dict[str, Any]]]:
    """Per model and feature, its best partner in every pair it belongs to (``matching.match_pair``, ``MODE``):
    ``{"role": "child" | "parent", "other", "feature" (-1: none), "r", "verdict"}``, the verdict read from the
    match's own classes (a child feature "persisting" or "emerging", a parent feature "kept" or "disappearing");
    and each pair's ``MatchResult.counts()``, notebook 05's numbers."""
    from ..matching.pairs import match_pair

    links: dict[str, dict[int, list[dict[str, Any]]]] = {}
    counts = []
    for parent, child in pairs:
        result = match_pair(cfg, parent, child, MODE)
        counts.append(result.counts())
        sides = (
            (child, parent, "child", result.best_parent_for_child, result.best_corr_for_child,
             {"persisting": result.persisting, "emerging": result.emerging}),
            (parent, child, "parent", result.best_child_for_parent, result.best_corr_for_parent,
             {"kept": result.persisting_parent, "disappearing": result.disappearing}),
        )
        for name, other, role, best, corr, classes in sides:
            verdicts = np.full(len(best), "inactive on the pair's sample", dtype=object)
            for verdict, features in classes.items():
                verdicts[features] = verdict
            for feature in range(len(best)):
                r = float(corr[feature])
                links.setdefault(name, {}).setdefault(feature, []).append(
                    {"role": role, "other": other, "feature": int(best[feature]), "r": r if np.isfinite(r) else None,
                     "verdict": str(verdicts[feature])})
    return links, counts


def ceilings(cfg: Config) -> dict[str, float]:
    """Each model's seed ceiling in ``MODE`` (many-to-many): the share of its SAE's features that its other-seed
    SAE matches (``matching.controls.model_ceilings``)."""
    from ..matching.controls import model_ceilings

    table = model_ceilings(cfg)
    table = table[(table["method"] == MODE) & (table["assignment"] == "many")]
    return {row.model: float(row.ceiling_share) for row in table.itertuples()}


def explanations(cfg: Config) -> dict[str, dict[int, dict[str, Any]]]:
    """Notebook 07's explanations and scores per model and feature (``autointerp.run.score_features``)."""
    from ..autointerp.run import score_features

    found: dict[str, dict[int, dict[str, Any]]] = {}
    for row in score_features(cfg).to_dict("records"):
        score = row.get("score")
        found.setdefault(row["sae"], {})[int(row["feature"])] = {
            "explanation": row.get("explanation") or "",
            "score": float(score) if score is not None and np.isfinite(score) else None}
    return found


def browser_models(cfg: Config) -> list[str]:
    """The models the site has a page for: those of the matched pairs, in registry order."""
    from ..matching.pairs import matching_pairs

    pairs = matching_pairs(cfg)
    return [n for n in REGISTRY.names if any(n in pair for pair in pairs)]


def site_data(cfg: Config, k: int = 5) -> dict[str, Any]:
    """Everything the site renders: per model of the matched pairs its features (``feature_stats`` with each
    feature's ``links`` and ``autointerp``), its ceiling, each pair's match counts, and the run's settings."""
    from ..data.vocab import token_strings
    from ..matching.pairs import load_activation_sample, matching_pairs

    pairs = matching_pairs(cfg)
    (links, counts), ceiling, explained = match_links(cfg, pairs), ceilings(cfg), explanations(cfg)
    models = {}
    for name in browser_models(cfg):
        acts, tokens = load_activation_sample(cfg, name, BROWSER_DOMAINS)
        features = feature_stats(acts, tokens, cfg.matching.context_size, k=k)
        for feature in features:
            feature["links"] = links.get(name, {}).get(feature["id"], [])
            feature["autointerp"] = explained.get(name, {}).get(feature["id"])
        models[name] = {"name": name, "label": REGISTRY.label(name), "d_sae": int(acts.shape[1]),
                        "n_positions": int(acts.shape[0]), "ceiling": ceiling.get(name), "features": features}
    return {"profile": cfg.profile, "threshold": cfg.matching.threshold, "mode": MODE, "domains": BROWSER_DOMAINS,
            "context": cfg.matching.context_size, "pairs": pairs, "pair_counts": counts, "models": models, "vocab": token_strings(cfg)}
