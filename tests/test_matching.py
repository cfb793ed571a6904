"""Feature matching: the fast correlation engine against slow references, and the classification logic."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from scipy import stats

from paper_lib import matching, plots
from paper_lib.core.config import load_config
from paper_lib.matching import (
    CorrelationAccumulator,
    categorise_token,
    classify,
    pairwise_correlations,
)


def sae_like(n: int, n_features: int, density: float, rng: np.random.Generator, dead: tuple[int, ...] = ()):
    """Sparse nonnegative activations with heavy-tailed feature frequencies (like SAE features)."""
    freq = density * rng.pareto(1.5, n_features) / 2 + density / 10
    active = rng.random((n, n_features)) < np.minimum(freq, 0.9)
    acts = np.where(active, rng.exponential(1.0, (n, n_features)), 0.0)
    acts[:, list(dead)] = 0.0
    return acts


# ---------------------------------------------------------------------------------- slow references


def position_reference(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r per pair with numpy in float64 (NaN where a side is constant)."""
    out = np.full((x.shape[1], y.shape[1]), np.nan)
    for i in range(x.shape[1]):
        for j in range(y.shape[1]):
            if x[:, i].std() > 0 and y[:, j].std() > 0:
                out[i, j] = np.corrcoef(x[:, i], y[:, j])[0, 1]
    return out


def released_token_reference(x: np.ndarray, y: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """The released method: pandas pivot of per token string means, then scipy pearsonr per pair over the
    token strings where both features have a nonzero mean (NaN where pearsonr is undefined)."""
    rows = []
    for name, acts in (("p", x), ("c", y)):
        for f in range(acts.shape[1]):
            rows.append(pd.DataFrame({"token": tokens, "feature": f"{name}{f}", "act": acts[:, f]}))
    long = pd.concat(rows)
    table = long.pivot_table(index="token", columns="feature", values="act", aggfunc="mean")
    out = np.full((x.shape[1], y.shape[1]), np.nan)
    for i in range(x.shape[1]):
        a = table[f"p{i}"].to_numpy()
        for j in range(y.shape[1]):
            b = table[f"c{j}"].to_numpy()
            both = (a != 0) & (b != 0)
            if both.sum() < 2:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # constant input: pearsonr warns and returns NaN
                out[i, j] = stats.pearsonr(a[both], b[both]).statistic
    return out


# ------------------------------------------------------------------------------------------- engine


def test_position_mode_equals_float64_reference(seed):
    rng = np.random.default_rng(1)
    x = sae_like(600, 40, 0.08, rng, dead=(3,))
    y = sae_like(600, 30, 0.08, rng, dead=(7,))
    y[:, 5] = 2.0 * x[:, 0] + 0.1 * x[:, 1]  # a strongly correlated pair
    ref = position_reference(x, y)
    got = pairwise_correlations(x, y, mode="position")
    assert got.dtype == np.float64 and got.shape == (40, 30)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    assert np.isnan(got[3]).all() and np.isnan(got[:, 7]).all()  # dead features have no r
    assert np.nanmax(np.abs(got - ref)) < 1e-6
    assert got[0, 5] > 0.99


def test_token_mode_equals_released_method_pair_for_pair(seed):
    rng = np.random.default_rng(2)
    n, vocab = 900, 37
    tokens = rng.integers(0, vocab, n)
    x = sae_like(n, 25, 0.05, rng, dead=(4,))
    y = sae_like(n, 20, 0.05, rng)
    y[:, 2] = x[:, 1] * (1 + 0.05 * rng.random(n))  # a feature that persists
    y[:, 3] = np.where(tokens % 5 == 0, 1.5, 0.0)  # constant per token string: pearsonr gives NaN
    ref = released_token_reference(x, y, tokens)
    got = pairwise_correlations(x, y, mode="token", token_ids=tokens)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    assert np.isfinite(ref).sum() > 300  # the comparison covers many defined pairs
    assert np.nanmax(np.abs(got - ref)) < 1e-6
    assert got[1, 2] > 0.9
    assert np.isnan(got[:, 3]).all()


def test_token_mode_min_support_drops_pairs_with_few_common_tokens(seed):
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, 30, 500)
    x, y = sae_like(500, 12, 0.02, rng), sae_like(500, 10, 0.02, rng)
    loose = pairwise_correlations(x, y, "token", tokens, min_support=2)
    strict = pairwise_correlations(x, y, "token", tokens, min_support=6)
    means_x = pd.DataFrame(x).groupby(tokens).mean().to_numpy() != 0
    means_y = pd.DataFrame(y).groupby(tokens).mean().to_numpy() != 0
    common = means_x.T.astype(int) @ means_y.astype(int)
    assert np.isnan(strict[common < 6]).all()
    np.testing.assert_array_equal(strict[common >= 6], loose[common >= 6])
    assert (np.isfinite(loose) & (common < 6)).any()  # the setting changed something


@pytest.mark.parametrize("mode", ["position", "token"])
def test_streaming_chunks_equal_one_shot_and_accept_torch_and_sparse(mode, seed):
    rng = np.random.default_rng(4)
    n = 700
    tokens = rng.integers(0, 50, n)
    x, y = sae_like(n, 33, 0.06, rng), sae_like(n, 21, 0.06, rng)
    whole = pairwise_correlations(x, y, mode, tokens)
    acc = CorrelationAccumulator(33, 21, mode, vocab_size=50)
    for start in range(0, n, 128):  # mixed input types: numpy, scipy sparse, torch dense
        s = slice(start, start + 128)
        kinds = [x[s], sp.csr_matrix(y[s])] if start % 256 else [torch.from_numpy(x[s]).float(), y[s]]
        acc.update(*kinds, tokens[s])
    streamed = acc.finalize(dtype=np.float64)
    np.testing.assert_array_equal(np.isnan(streamed), np.isnan(whole))
    assert np.nanmax(np.abs(streamed - whole)) < 1e-6  # torch chunks were rounded to float32
    assert acc.n_positions == n
    single = acc.finalize()  # default float32 output
    assert single.dtype == np.float32 and np.nanmax(np.abs(single - streamed)) < 1e-6


def test_three_d_blocks_are_flattened(seed):
    rng = np.random.default_rng(5)
    x, y = sae_like(240, 8, 0.1, rng), sae_like(240, 6, 0.1, rng)
    flat = pairwise_correlations(x, y, "position")
    blocks = pairwise_correlations(x.reshape(10, 24, 8), torch.from_numpy(y.reshape(10, 24, 6)), "position")
    np.testing.assert_allclose(blocks, flat, atol=1e-12, equal_nan=True)


def test_bad_input_is_rejected_with_a_clear_message():
    x = np.zeros((10, 4))
    with pytest.raises(ValueError, match="token_ids"):
        pairwise_correlations(x, x, mode="token")
    with pytest.raises(ValueError, match="mode must be one of"):
        pairwise_correlations(x, x, mode="pearson")
    with pytest.raises(ValueError, match="different positions"):
        pairwise_correlations(x, np.zeros((9, 4)), mode="position")
    acc = CorrelationAccumulator(4, 4, "token", vocab_size=5)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 5\)"):
        acc.update(x, x, np.arange(10))
    with pytest.raises(ValueError, match="no data"):
        CorrelationAccumulator(4, 4, "position").finalize()
    with pytest.raises(ValueError, match="unknown model"):
        matching.match_pair(None, "babypython", "gpt2")


# ------------------------------------------------------------------------------------ classification


def constructed_models(rng: np.random.Generator, n: int = 3000):
    """Parent features 0..4 and child features 0..5 with a known matching:

    parent 0 -> child 0 (persists), parent 1 -> children 1 and 2 (one-to-many), parents 2 and 3 -> child 3
    (many-to-one), parent 4 disappears, parent 5 dead; child 4 emerges, child 5 dead.
    """
    x = sae_like(n, 6, 0.1, rng, dead=(5,))
    x[:, 3] = x[:, 2] * (1 + 0.05 * rng.random(n))
    y = np.zeros((n, 6))
    y[:, 0] = 1.5 * x[:, 0] + 0.01 * rng.random(n) * (x[:, 0] > 0)
    y[:, 1] = x[:, 1]
    y[:, 2] = 0.5 * x[:, 1] * (1 + 0.05 * rng.random(n))
    y[:, 3] = x[:, 2]
    y[:, 4] = sae_like(n, 1, 0.1, rng)[:, 0]
    tokens = np.arange(n) % 211  # many token strings, each with a few positions
    return x, y, tokens


@pytest.mark.parametrize("mode", ["position", "token"])
def test_classification_on_constructed_activations(mode, seed):
    x, y, tokens = constructed_models(np.random.default_rng(6))
    corr = pairwise_correlations(x, y, mode, tokens)
    dead_parent, dead_child = ~(x != 0).any(0), ~(y != 0).any(0)
    result = classify(corr, dead_parent, dead_child, threshold=0.8, parent="p", child="c", mode=mode)
    np.testing.assert_array_equal(result.dead_parent, [0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(result.dead_child, [0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(result.persisting, [0, 1, 2, 3])
    np.testing.assert_array_equal(result.emerging, [4])
    np.testing.assert_array_equal(result.disappearing, [4])
    np.testing.assert_array_equal(result.persisting_parent, [0, 1, 2, 3])
    expected_pairs = {(0, 0), (1, 1), (1, 2), (2, 3), (3, 3)}
    assert set(zip(result.pairs.parent_feature, result.pairs.child_feature)) == expected_pairs
    assert (result.pairs["corr"] >= 0.8).all()
    np.testing.assert_array_equal(result.best_child_for_parent[:4], [0, 1, 3, 3])
    assert result.best_child_for_parent[5] == -1 and np.isnan(result.best_corr_for_parent[5])
    assert result.best_parent_for_child[0] == 0 and result.best_parent_for_child[1] == 1
    assert result.best_parent_for_child[5] == -1 and np.isnan(result.best_corr_for_child[5])
    counts = result.counts()
    assert counts["persisting"] == 4 and counts["emerging"] == 1 and counts["disappearing"] == 1
    assert counts["one_to_many_parents"] == 1 and counts["many_to_one_children"] == 1
    assert counts["dead_parent"] == 1 and counts["dead_child"] == 1
    assert counts["persisting_share"] == pytest.approx(4 / 5)  # shares exclude dead features
    assert counts["emerging_share"] == pytest.approx(1 / 5)
    assert counts["disappearing_share"] == pytest.approx(1 / 5)
    assert counts["parent_persisting_share"] == pytest.approx(4 / 5)


def test_threshold_is_respected(seed):
    corr = np.array([[0.81, 0.2], [0.79, np.nan]])
    result = classify(corr, np.zeros(2, bool), np.zeros(2, bool), threshold=0.8)
    assert list(result.persisting) == [0] and list(result.emerging) == [1]
    assert list(result.disappearing) == [1]
    lower = classify(corr, np.zeros(2, bool), np.zeros(2, bool), threshold=0.1)
    assert len(lower.pairs) == 3 and list(lower.emerging) == []


# --------------------------------------------------------------------------------------------- tokens


@pytest.mark.parametrize(
    "token, category",
    [
        (",", "punctuation/whitespace/formatting"),
        ("\n", "punctuation/whitespace/formatting"),
        ("    ", "punctuation/whitespace/formatting"),
        ("):", "punctuation/whitespace/formatting"),
        ("Ċ", "punctuation/whitespace/formatting"),
        ("</s>", "punctuation/whitespace/formatting"),
        (" the", "other"),
        ("def", "other"),
        ("42", "other"),
        ("_x", "other"),
        ("é", "other"),
    ],
)
def test_categorise_token(token, category):
    assert categorise_token(token) == category


def test_flow_figure_draws_one_band_per_pair(seed):
    import matplotlib

    matplotlib.use("Agg")
    rows = []
    for parent, child, persisting in [("babypython", "lua", 30), ("babypython", "tinystories", 10),
                                      ("lua", "luastories", 50), ("tinystories", "luastories", 5)]:
        rows.append({"parent": parent, "child": child, "n_parent": 100, "n_child": 100, "dead_parent": 4,
                     "dead_child": 2, "persisting": persisting, "persisting_share": persisting / 98,
                     "parent_persisting_share": persisting / 96, "parent_persisting_any_share": 0.5})
    ax = plots.plot_feature_flow(pd.DataFrame(rows))
    assert len(ax.collections) == 4  # one fill_between band per pair
    heights = sorted(p.get_height() for p in ax.patches)
    assert heights[0] / heights[-1] == pytest.approx(96 / 98)  # bars sized by live features (96 or 98)
    texts = " ".join(t.get_text() for t in ax.texts)
    assert "30 (30.6% of child)" in texts and "96 live features" in texts
    assert "50.0% persist" in texts


def test_parent_share_counts_features_persisting_into_any_child(smoke_cfg, monkeypatch):
    # Parent features 0 and 1 persist into Lua, 1 and 2 into TinyStories: 3 of 4 live parent features persist.
    corr_lua = np.array([[0.9, 0.0], [0.0, 0.95], [0.1, 0.1], [0.0, 0.0]])
    corr_tiny = np.array([[0.0, 0.1], [0.85, 0.0], [0.0, 0.99], [0.2, 0.0]])
    dead = np.zeros(4, bool)
    results = {
        ("babypython", "lua"): classify(corr_lua, dead, np.zeros(2, bool), 0.8, "babypython", "lua"),
        ("babypython", "tinystories"): classify(corr_tiny, dead, np.zeros(2, bool), 0.8, "babypython", "tinystories"),
    }
    monkeypatch.setattr(matching.pairs, "match_pair", lambda cfg, parent, child, mode, threshold: results[(parent, child)])
    cfg = load_config("smoke", {"matching.pairs": [["babypython", "lua"], ["babypython", "tinystories"]]})
    summary = matching.match_all(cfg, "position")
    assert list(summary["parent_persisting_share"]) == [0.5, 0.5]
    assert list(summary["parent_persisting_any_share"]) == [0.75, 0.75]
