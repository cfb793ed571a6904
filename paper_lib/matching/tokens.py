"""What matched features respond to: each feature's top token strings on the shared sample and their category."""

from __future__ import annotations

import unicodedata

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..core import intervals
from ..core.config import Config
from ..data import token_strings
from .pairs import _vocab_size, load_activation_sample, match_pair, matching_pairs, sample_domains


_FORMATTING_MARKS = {"Ġ", "Ċ", "ĉ", "▁"}  # byte-level BPE / sentencepiece renderings of space, newline, tab


def categorise_token(token_string: str) -> str:
    """``"punctuation/whitespace/formatting"`` if the token has no letter or digit, else ``"other"``.

    Special tokens (``<...>``) and byte-level BPE markers for spaces/newlines count as formatting.
    """
    text = token_string
    if text.startswith("<") and text.endswith(">") and len(text) > 2:
        return "punctuation/whitespace/formatting"
    for mark in _FORMATTING_MARKS:
        text = text.replace(mark, " ")
    for char in text:
        if char.isalnum() or unicodedata.category(char)[0] in "LN":
            return "other"
    return "punctuation/whitespace/formatting"


def _token_mean_matrix(cfg: Config, name: str, domains: tuple[str, ...] | None = None) -> tuple[sp.csr_matrix, np.ndarray]:
    """Per token id mean activations ``[vocab, d_sae]`` over every occurrence of the token on a matching sample
    (a ranking of what a feature responds to, not the matching statistic), and token counts."""
    acts, tokens = load_activation_sample(cfg, name, domains)
    vocab = _vocab_size(cfg, tokens)
    counts = np.bincount(tokens, minlength=vocab)
    onehot = sp.csr_matrix((np.ones(len(tokens)), (tokens, np.arange(len(tokens)))), shape=(vocab, len(tokens)))
    sums = (onehot @ acts.astype(np.float64)).tocsr()
    return (sp.diags(1.0 / np.maximum(counts, 1)) @ sums).tocsr(), counts


def top_tokens(cfg: Config, name: str, feature: int, k: int = 10, domains: tuple[str, ...] | None = None) -> pd.DataFrame:
    """The k token strings with the highest mean activation of one feature on a matching sample (``domains``;
    default the released BabyPython sample)."""
    means, counts = _token_mean_matrix(cfg, name, domains)
    if not 0 <= feature < means.shape[1]:
        raise ValueError(f"feature {feature} out of range: the {name} SAE has {means.shape[1]} features")
    column = means[:, feature].toarray().ravel()
    order = [t for t in np.argsort(-column, kind="stable")[:k] if column[t] > 0]
    vocab = token_strings(cfg)
    texts = [vocab[int(t)] for t in order]
    return pd.DataFrame(
        {
            "token_id": np.asarray(order, dtype=np.int64),
            "token": texts,
            "mean_activation": column[order],
            "count": counts[order],
            "category": [categorise_token(t) for t in texts],
        }
    )


def top_token_categories(cfg: Config, name: str, domains: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Each feature's top token string (highest mean activation on a matching sample) and its category."""
    means, _ = _token_mean_matrix(cfg, name, domains)
    csc = means.tocsc()
    top = np.full(means.shape[1], -1, np.int64)
    lengths = np.diff(csc.indptr)
    nonempty = np.flatnonzero(lengths)
    if len(nonempty):
        # argmax per column of a sparse matrix without a Python loop over features.
        top[nonempty] = np.asarray(csc[:, nonempty].argmax(axis=0)).ravel()
    vocab = token_strings(cfg)
    texts = {t: vocab[int(t)] for t in np.unique(top[top >= 0])}
    return pd.DataFrame(
        {
            "feature": np.arange(means.shape[1]),
            "top_token_id": top,
            "top_token": [texts.get(t, "") for t in top],
            "category": [categorise_token(texts[t]) if t >= 0 else "dead" for t in top],
        }
    )


def persisting_token_table(cfg: Config, mode: str = "token") -> pd.DataFrame:
    """Per pair: share of persisting vs emerging child features whose top token is punctuation/formatting."""
    rows = []
    for parent, child in matching_pairs(cfg):
        result = match_pair(cfg, parent, child, mode)
        categories = top_token_categories(cfg, child, sample_domains(cfg, parent, child)).set_index("feature")["category"]
        flags = {group: (categories.iloc[features] == "punctuation/whitespace/formatting").to_numpy()
                 for group, features in (("persisting", result.persisting), ("emerging", result.emerging))}
        for group, group_flags in flags.items():
            row = {
                "pair": f"{parent} -> {child}",
                "group": group,
                "n_features": len(group_flags),
                "formatting_share": float(group_flags.mean()) if len(group_flags) else float("nan"),
                # bootstrap over the group's features (Wilson's interval when all agree)
                "formatting_share_interval": intervals.share_interval(group_flags, unit=f"{group} features")
                if len(group_flags) else None,
                "difference_from_emerging_interval": None,
            }
            if group == "persisting" and len(flags["persisting"]) > 1 and len(flags["emerging"]) > 1:
                row["difference_from_emerging_interval"] = intervals.difference_interval(
                    flags["persisting"], flags["emerging"], unit="persisting + emerging features")
            rows.append(row)
    return pd.DataFrame(rows)


def persisting_examples(cfg: Config, mode: str = "token", n_features: int = 3, k: int = 5) -> pd.DataFrame:
    """Per pair, the best-matched persisting child features with their top tokens and categories."""
    rows = []
    for parent, child in matching_pairs(cfg):
        result = match_pair(cfg, parent, child, mode)
        persisting = result.persisting
        order = np.argsort(-result.best_corr_for_child[persisting], kind="stable")[:n_features]
        for feature in persisting[order]:
            tokens = top_tokens(cfg, child, int(feature), k, sample_domains(cfg, parent, child))
            rows.append(
                {
                    "pair": f"{parent} -> {child}",
                    "child_feature": int(feature),
                    "parent_feature": int(result.best_parent_for_child[feature]),
                    "corr": float(result.best_corr_for_child[feature]),
                    "top_tokens": " | ".join(repr(t) for t in tokens["token"]),
                    "formatting_share_of_top_tokens": float(
                        (tokens["category"] == "punctuation/whitespace/formatting").mean()
                    ) if len(tokens) else float("nan"),
                }
            )
    return pd.DataFrame(rows)
