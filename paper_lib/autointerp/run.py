"""Figure 6 wired to the SAEs: which features are explained (Lua's, and LuaStories' persisting Lua features), on
which text, cached with every upstream artifact and corpus in its key."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core import intervals
from ..core.artifacts import cached_step, manifest, read_json, write_json_atomic
from ..data import AUTOINTERP_DOMAIN, DATA_CODE, autointerp_blocks, corpus_fingerprint, token_strings, tokenizer_hash
from ..matching import match_pair
from ..matching.controls import other_seeding
from ..saes import encode_chunks, sae_dir
from ..saes.encode import ENCODE_CODE
from .backends import make_backend
from .protocol import HOLDOUT_FRACTION, AutointerpError, Backend, interpret_features, summarise_scores

GROUPS = ("lua", "luastories_persisting")  # Figure 6's two histograms
GROUP_LABELS = {"lua": "Lua features", "luastories_persisting": "Persisting Lua features in LuaStories"}


def max_activations(cfg, model_name: str, blocks) -> np.ndarray:
    """Each SAE feature's largest activation on ``blocks``: ``[d_sae]`` (0 for features dead on this text)."""
    return np.max(np.stack([chunk.max(axis=(0, 1)) for chunk in encode_chunks(cfg, model_name, blocks)]), axis=0)


def feature_activations(cfg, model_name: str, blocks, features: Sequence[int]) -> np.ndarray:
    """Activations of the chosen SAE features on ``blocks``: ``[n_features, n_blocks, context]``."""
    features = np.asarray(features, dtype=np.int64)
    chunks = [chunk[:, :, features] for chunk in encode_chunks(cfg, model_name, blocks)]
    return np.concatenate(chunks).transpose(2, 0, 1)


def _sample(features: np.ndarray, n: int, rng: np.random.Generator) -> list[int]:
    return sorted(int(f) for f in rng.permutation(features)[:n])


def _step_inputs(cfg, backend: Backend) -> dict[str, Any]:
    """What decides the scores: the SAEs and the match (content-addressed folders covering the models, their
    data and configs), the text, the protocol's settings and the backend."""
    match = match_pair(cfg, "lua", "luastories", mode=cfg.autointerp.matching_mode)
    return {
        "saes": {name: sae_dir(cfg, name).name for name in ("lua", "luastories")},
        "match": match.extra["folder"],  # content-addressed: the SAEs' samples, mode, threshold, support, code
        "autointerp": cfg.autointerp.model_dump(),
        "context_size": cfg.sae.context_size,
        "tokenizer": tokenizer_hash(cfg),
        "corpus": corpus_fingerprint(cfg, AUTOINTERP_DOMAIN, "validation"),
        "seed": cfg.seed,
        "backend": backend.name,
        "endpoint": getattr(backend, "endpoint", backend.name),
        "model": backend.model,
    }


def score_features(cfg, backend: Backend | None = None) -> "pd.DataFrame":  # noqa: F821
    """Figure 6's scores: one row per feature, for two groups of ``cfg.autointerp.n_features`` features each.

    ``lua``: a seeded sample of the Lua SAE's features that fire on the Lua text. ``luastories_persisting``:
    a sample of LuaStories' persisting Lua features (``matching.match_pair(cfg, "lua", "luastories",
    cfg.autointerp.matching_mode).persisting``) that fire on it, with their Lua parent and correlation.
    Both are explained and simulated on Lua validation text. Cached as a step; LLM replies are cached too.
    """
    import pandas as pd

    backend = backend or make_backend(cfg)
    ai_cfg = cfg.autointerp

    def build(out_dir: Path) -> dict[str, Any]:
        blocks = autointerp_blocks(cfg)
        vocab = token_strings(cfg)
        tokens_BT = [[vocab[int(i)] for i in block] for block in blocks]
        n_search = int(round(len(blocks) * (1 - HOLDOUT_FRACTION)))
        match = match_pair(cfg, "lua", "luastories", mode=ai_cfg.matching_mode)
        persisting = np.asarray(sorted(int(f) for f in match.persisting), dtype=np.int64)
        rng = np.random.default_rng(cfg.seed)
        groups = {
            "lua": ("lua", np.flatnonzero(max_activations(cfg, "lua", blocks[:n_search]) > 0)),
            "luastories_persisting": (
                "luastories",
                persisting[max_activations(cfg, "luastories", blocks[:n_search])[persisting] > 0]
                if persisting.size
                else persisting,
            ),
        }
        rows = []
        for group, (model_name, candidates) in groups.items():
            features = _sample(candidates, ai_cfg.n_features, rng)
            if not features:
                continue
            acts_FBT = feature_activations(cfg, model_name, blocks, features)
            results = interpret_features(
                features, tokens_BT, acts_FBT, backend, ai_cfg.n_examples, ai_cfg.n_holdout_blocks, cfg.seed
            )
            for result in results:
                row = {"group": group, "sae": model_name, **result.to_dict()}
                if group == "luastories_persisting":
                    row["lua_parent"] = int(np.asarray(match.best_parent_for_child)[result.feature])
                    row["parent_corr"] = float(np.asarray(match.best_corr_for_child)[result.feature])
                rows.append(row)
        errors = [r["error"] for r in rows if r["error"]]
        if rows and not any(np.isfinite(r["score"]) for r in rows):  # nothing to show: a failure, not a figure
            raise AutointerpError(
                f"no feature could be scored ({len(errors)} of {len(rows)} failed; first error: "
                f"{errors[0] if errors else 'none'}); nothing was cached."
            )
        write_json_atomic(out_dir / "scores.json", rows)  # NaN scores round-trip through Python's json
        return {
            "n_blocks": len(blocks),
            "n_candidates": {g: int(len(c)) for g, (_, c) in groups.items()},
            "backend": backend.name,
            "model": backend.model,
        }

    code = [*DATA_CODE, *ENCODE_CODE, "paper_lib.data.vocab", "paper_lib.core.runtime", "paper_lib.autointerp.protocol",
            "paper_lib.autointerp.backends", "paper_lib.autointerp.clients"]
    path = cached_step(cfg.profile, "autointerp", _step_inputs(cfg, backend), build, code=code)
    table = pd.DataFrame(read_json(path / "scores.json"))
    table.attrs["step_seconds"] = manifest(path)["seconds"]  # what scoring these features cost when it was built
    return table


def score_summary(table) -> "pd.DataFrame":  # noqa: F821
    """Mean and median score per group (with counts, backend and model), from ``score_features``'s table."""
    import pandas as pd

    rows = []
    for group in GROUPS:
        part = table[table["group"] == group] if len(table) else table
        rows.append(
            {
                "group": group,
                "label": GROUP_LABELS[group],
                **summarise_scores(part["score"].to_numpy(dtype=float) if len(part) else []),
                "mean_interval": _mean_interval(part),
                "backend": ", ".join(sorted(set(part["backend"]))) if len(part) else "",
                "model": ", ".join(sorted(set(part["model"]))) if len(part) else "",
            }
        )
    return pd.DataFrame(rows)


def _scored(table, group: str) -> np.ndarray:
    if not len(table):
        return np.array([])
    values = table.loc[table["group"] == group, "score"].to_numpy(dtype=float)
    return values[np.isfinite(values)]


def _mean_interval(part) -> dict[str, Any] | None:
    values = part["score"].to_numpy(dtype=float) if len(part) else np.array([])
    values = values[np.isfinite(values)]
    return intervals.mean_interval(values, unit="scored features") if len(values) else None


def score_comparison(table) -> dict[str, Any]:
    """Figure 6's comparison with its uncertainty: the mean score of LuaStories' persisting Lua features minus
    that of Lua features, with a bootstrap interval (each group's features resampled on its own).

    ``direction``: +1 when the whole interval is above 0 (persisting features are explained better), -1 below,
    0 when it contains 0 (this many features cannot tell). ``features_needed``: features per group for the
    interval to be narrower than the measured difference on each side (normal approximation from the two
    groups' spreads), and ``seconds_needed`` what scoring that many would cost at this run's rate (the scoring
    step's seconds per feature, both groups).
    """
    lua, kept = _scored(table, "lua"), _scored(table, "luastories_persisting")
    result: dict[str, Any] = {"n_scored": {"lua": int(len(lua)), "luastories_persisting": int(len(kept))},
                              "difference": None, "direction": None, "features_needed": None,
                              "seconds_per_feature": None, "seconds_needed": None}
    if len(lua) < 2 or len(kept) < 2:
        return result
    difference = intervals.difference_interval(kept, lua, unit="scored features")
    needed = intervals.features_needed(float(np.std(kept, ddof=1)), float(np.std(lua, ddof=1)), difference["value"])
    seconds = table.attrs.get("step_seconds")
    per_feature = seconds / len(table) if seconds and len(table) else None
    result.update({
        "difference": difference,
        "direction": intervals.sign(difference),
        "sd": {"lua": float(np.std(lua, ddof=1)), "luastories_persisting": float(np.std(kept, ddof=1))},
        "features_needed": needed,
        "seconds_per_feature": per_feature,
        "seconds_needed": None if needed is None or per_feature is None else 2 * needed * per_feature,
    })
    return result


def other_seed_comparison(cfg, backend: Backend | None = None) -> dict[str, Any]:
    """``score_comparison`` repeated on the other seeding's SAEs (``sae.init``; the second SAE seed of every
    model, from the matching controls), so a reader sees whether Figure 6's direction survives a change of SAE
    seed. The persisting group comes from matching those SAEs."""
    other = other_seeding(cfg.sae.init)
    other_cfg = cfg.model_copy(update={"sae": cfg.sae.model_copy(update={"init": other})})
    table = score_features(other_cfg, backend)
    return {"seeding": other, "summary": score_summary(table).to_dict("records"), **score_comparison(table)}
