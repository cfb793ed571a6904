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


def released_token_reference(x: np.ndarray, y: np.ndarray, tokens: np.ndarray, min_support: int = 2) -> np.ndarray:
    """The released method, written from its description: the released evaluate.py logs only the nonzero
    activations (it iterates ``encoding[i].nonzero()``), so its table is long (position, token, feature, value)
    with no zeros; ``pandas.pivot_table`` gives per token string means over the positions where each feature
    fired (NaN where it never fired on a token); ``scipy.stats.pearsonr`` per pair over the token strings
    where both columns are defined. NaN with fewer than ``min_support`` such token strings or a constant side."""
    frames = []
    for name, acts in (("p", x), ("c", y)):
        position, feature = np.nonzero(acts)
        frames.append(pd.DataFrame({"position": position, "token": tokens[position],
                                    "feature": [f"{name}{f}" for f in feature], "value": acts[position, feature]}))
    table = pd.concat(frames).pivot_table(index="token", columns="feature", values="value", aggfunc="mean")
    out = np.full((x.shape[1], y.shape[1]), np.nan)
    for i in range(x.shape[1]):
        if f"p{i}" not in table:  # never fired: no column at all
            continue
        a = table[f"p{i}"].to_numpy()
        for j in range(y.shape[1]):
            if f"c{j}" not in table:
                continue
            b = table[f"c{j}"].to_numpy()
            both = ~np.isnan(a) & ~np.isnan(b)
            if both.sum() < min_support:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # constant input: pearsonr warns and returns NaN
                out[i, j] = stats.pearsonr(a[both], b[both]).statistic
    return out


def fired(acts: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """[vocab, F] bool: the feature fired at least once on the token string."""
    return pd.DataFrame(acts != 0).groupby(tokens).any().to_numpy()


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


@pytest.mark.parametrize("min_support", [2, 4])
def test_token_mode_equals_released_method_pair_for_pair(min_support, seed):
    rng = np.random.default_rng(2)
    n, vocab = 900, 37
    tokens = rng.integers(0, vocab, n)  # each token string repeats ~24 times
    x = sae_like(n, 25, 0.05, rng, dead=(4,))
    y = sae_like(n, 20, 0.05, rng)
    y[:, 2] = x[:, 1] * (1 + 0.05 * rng.random(n))  # a feature that persists
    y[:, 3] = np.where(tokens % 5 == 0, 1.5, 0.0)  # constant wherever it fires: pearsonr gives NaN
    y[:, 4] = np.where((tokens % 3 == 0) & (rng.random(n) < 0.3), 1.0 + tokens, 0.0)  # fires on few occurrences
    ref = released_token_reference(x, y, tokens, min_support)
    got = pairwise_correlations(x, y, mode="token", token_ids=tokens, min_support=min_support)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    assert np.isfinite(ref).sum() > 300  # the comparison covers many defined pairs
    assert np.nanmax(np.abs(got - ref)) < 1e-6
    assert got[1, 2] > 0.9
    assert np.isnan(got[:, 3]).all() and np.isnan(got[4]).all()


def test_token_means_are_over_firing_positions_like_the_released_pivot(seed):
    # Token 0 occurs 4 times; feature 0 fires on 2 of them (2 and 4): the released mean is 3, not 6 / 4 = 1.5.
    # Feature 1 fires +1 and -1 on token 1: its mean there is a defined 0 (a stored zero), as in the pivot.
    tokens = np.array([0, 0, 0, 0, 1, 1, 2])
    x = np.array([[2, 0], [0, 0], [4, 0], [0, 0], [0, 1], [0, -1], [5, 0]], dtype=float)
    acc = CorrelationAccumulator(2, 1, "token", vocab_size=4)
    acc.update(x, np.ones((7, 1)), tokens)
    means, _ = acc.token_means()
    assert means[0, 0] == 3.0 and means[2, 0] == 5.0
    assert means.getrow(1).indices.tolist() == [1] and means[1, 1] == 0.0  # a stored (defined) zero
    assert means.getrow(3).nnz == 0  # token 3 never occurs: no mean at all

    rng = np.random.default_rng(12)
    tokens = rng.integers(0, 23, 800)
    x = sae_like(800, 15, 0.05, rng, dead=(2,))
    acc = CorrelationAccumulator(15, 15, "token", vocab_size=23)
    acc.update(x, x, tokens)
    position, feature = np.nonzero(x)
    long = pd.DataFrame({"token": tokens[position], "feature": feature, "value": x[position, feature]})
    pivot = long.pivot_table(index="token", columns="feature", values="value", aggfunc="mean")
    pivot = pivot.reindex(index=range(23), columns=range(15)).to_numpy()
    means, _ = acc.token_means()
    dense = np.full((23, 15), np.nan)
    coo = means.tocoo()
    dense[coo.row, coo.col] = coo.data
    np.testing.assert_allclose(dense, pivot, rtol=1e-12, equal_nan=True)


def test_token_mode_min_support_drops_pairs_with_few_common_tokens(seed):
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, 30, 500)
    x, y = sae_like(500, 12, 0.02, rng), sae_like(500, 10, 0.02, rng)
    acc = CorrelationAccumulator(12, 10, "token", vocab_size=30)
    acc.update(x, y, tokens)
    common = fired(x, tokens).T.astype(int) @ fired(y, tokens).astype(int)
    support = acc.support()
    assert support.dtype == np.int32
    np.testing.assert_array_equal(support, common)  # shared token strings where both fired
    loose = acc.finalize(np.float64)
    strict = acc.finalize(np.float64, min_support=6)  # the override: no second pass over the data
    np.testing.assert_array_equal(strict, pairwise_correlations(x, y, "token", tokens, min_support=6))
    assert np.isnan(strict[common < 6]).all()
    np.testing.assert_array_equal(strict[common >= 6], loose[common >= 6])
    assert (np.isfinite(loose) & (common < 6)).any()  # the setting changed something


def test_position_guard_drops_pairs_that_are_rarely_co_active(seed):
    # Two features that each fire once, at the same position: r = 1 exactly, from one shared event.
    x, y = np.zeros((50, 2)), np.zeros((50, 2))
    x[7, 0] = y[7, 0] = 1.0
    x[::3, 1] = 1.0 + np.arange(17)
    y[::3, 1] = 2.0 + np.arange(17)  # co-active 17 times
    no_guard = pairwise_correlations(x, y, "position")
    assert no_guard[0, 0] == pytest.approx(1.0) and no_guard[1, 1] > 0.9
    guarded = pairwise_correlations(x, y, "position", min_support=2)
    assert np.isnan(guarded[0, 0]) and guarded[1, 1] == no_guard[1, 1]
    assert np.isnan(guarded[0, 1]) and no_guard[0, 1] < 0  # never co-active: exact negative r, NaN if guarded

    rng = np.random.default_rng(13)
    x, y = sae_like(700, 30, 0.05, rng), sae_like(700, 20, 0.05, rng)
    acc = CorrelationAccumulator(30, 20, "position", track_support=True)
    for start in range(0, 700, 100):
        acc.update(x[start:start + 100], y[start:start + 100])
    coactive = (x != 0).T.astype(int) @ (y != 0).astype(int)
    np.testing.assert_array_equal(acc.support(), coactive)
    plain = acc.finalize(np.float64)
    np.testing.assert_allclose(plain, pairwise_correlations(x, y, "position"), atol=1e-12)  # tracking alone: no change
    for guard in (1, 3, 5):
        swept = acc.finalize(np.float64, min_support=guard)
        np.testing.assert_array_equal(np.isnan(swept), (coactive < guard) | np.isnan(plain))
        np.testing.assert_array_equal(swept[coactive >= guard], plain[coactive >= guard])
    untracked = CorrelationAccumulator(30, 20, "position")
    untracked.update(x, y)
    with pytest.raises(ValueError, match="track_support"):
        untracked.support()
    with pytest.raises(ValueError, match="track_support"):
        untracked.finalize(min_support=2)


@pytest.mark.parametrize("mode", ["position", "token"])
def test_streaming_chunks_equal_one_shot_and_accept_torch_and_sparse(mode, seed):
    rng = np.random.default_rng(4)
    n = 700
    tokens = rng.integers(0, 50, n)
    x, y = sae_like(n, 33, 0.06, rng), sae_like(n, 21, 0.06, rng)
    whole = pairwise_correlations(x, y, mode, tokens)
    acc = CorrelationAccumulator(33, 21, mode, vocab_size=50, track_support=True)
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
    one_shot = CorrelationAccumulator(33, 21, mode, vocab_size=50, track_support=True)
    one_shot.update(x, y, tokens)
    np.testing.assert_array_equal(acc.support(), one_shot.support())


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
    assert acc.n_positions == 0  # a rejected chunk leaves the accumulator as it was
    with pytest.raises(ValueError, match="no data"):
        CorrelationAccumulator(4, 4, "position").finalize()
    with pytest.raises(ValueError, match="token mode: min_support must be >= 2"):
        CorrelationAccumulator(4, 4, "token", vocab_size=5, min_support=1)
    with pytest.raises(ValueError, match="position mode: min_support must be >= 0"):
        CorrelationAccumulator(4, 4, "position", min_support=-1)
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
