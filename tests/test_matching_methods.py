"""Matching methods and controls: decoder cosine, one-to-one assignment, the permutation null, guard choice."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from paper_lib.matching import (
    CorrelationAccumulator,
    choose_min_support,
    classify,
    decoder_cosine,
    one_to_one,
    pairwise_correlations,
    permute_positions,
    threshold_curve,
)


def sparse_acts(n: int, n_features: int, density: float, rng: np.random.Generator) -> np.ndarray:
    """Independent sparse nonnegative activations, each feature firing at ``density`` of positions."""
    return np.where(rng.random((n, n_features)) < density, rng.exponential(1.0, (n, n_features)), 0.0)


def rare_and_common(n: int, n_rare: int, n_common: int, rng: np.random.Generator) -> np.ndarray:
    """``n_rare`` features that fire exactly once (at a random position) beside ``n_common`` frequent ones."""
    rare = np.zeros((n, n_rare))
    rare[rng.integers(0, n, n_rare), np.arange(n_rare)] = rng.exponential(1.0, n_rare) + 0.1
    return np.hstack([rare, sparse_acts(n, n_common, 0.05, rng)])


# --------------------------------------------------------------------------------------- decoder cosine


def test_decoder_cosine_known_values_and_zero_rows():
    parent_FD = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    child_GD = torch.tensor([[3.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, -5.0, 0.0], [0.0, 0.0, 0.0]])
    cos_FG = decoder_cosine(parent_FD, child_GD)
    assert cos_FG.shape == (3, 4)
    np.testing.assert_allclose(cos_FG[:2, :3], [[1.0, 2**-0.5, 0.0], [0.0, 2**-0.5, -1.0]], atol=1e-12)
    assert np.isnan(cos_FG[2]).all() and np.isnan(cos_FG[:, 3]).all()  # a zero row has no direction
    with pytest.raises(ValueError, match="different spaces"):
        decoder_cosine(parent_FD, child_GD.T)  # a transposed [d, G] decoder


# ------------------------------------------------------------------------------------ one-to-one assignment


def test_one_to_one_maximises_total_and_handles_nan_and_dead():
    score_FG = np.array([[0.9, 0.85], [0.95, 0.1]])
    rows, cols, scores = one_to_one(score_FG)
    assert list(zip(rows, cols)) == [(0, 1), (1, 0)]  # 0.85 + 0.95 beats 0.9 + 0.1
    np.testing.assert_allclose(scores, [0.85, 0.95])
    # NaN is below every defined score: parent 1's only defined partner is child 2.
    score_FG = np.array([[0.5, 0.4, 0.3], [np.nan, np.nan, 0.1]])
    rows, cols, _ = one_to_one(score_FG)
    assert list(zip(rows, cols)) == [(0, 0), (1, 2)]
    # Dead features take no part; an assignment that could only use a NaN score is dropped.
    rows, cols, _ = one_to_one(score_FG, np.array([True, True]), np.array([True, True, False]))
    assert list(zip(rows, cols)) == [(0, 0)]
    rows, cols, scores = one_to_one(score_FG, np.array([False, False]), np.ones(3, bool))
    assert len(rows) == len(cols) == len(scores) == 0


def test_classify_one_reports_assigned_partners():
    corr = np.array([[0.9, 0.85], [0.95, 0.1], [0.2, 0.3]])
    many = classify(corr, np.zeros(3, bool), np.zeros(2, bool), 0.9)
    assert set(zip(many.pairs.parent_feature, many.pairs.child_feature)) == {(0, 0), (1, 0)}
    one = classify(corr, np.zeros(3, bool), np.zeros(2, bool), 0.9, assignment="one")
    assert one.assignment == "one" and one.counts()["assignment"] == "one"
    # Parent 0's best child (0, r = 0.9) is assigned to parent 1, so parent 0 gets child 1 at 0.85 < 0.9.
    assert set(zip(one.pairs.parent_feature, one.pairs.child_feature)) == {(1, 0)}
    np.testing.assert_array_equal(one.best_child_for_parent, [1, 0, -1])
    np.testing.assert_allclose(one.best_corr_for_parent, [0.85, 0.95, np.nan])
    np.testing.assert_array_equal(one.best_parent_for_child, [1, 0])
    assert list(one.disappearing) == [0, 2] and list(one.emerging) == [1]
    with pytest.raises(ValueError, match="assignment must be one of"):
        classify(corr, np.zeros(3, bool), np.zeros(2, bool), 0.9, assignment="greedy")


@pytest.mark.parametrize("method", ["position", "token", "decoder"])
def test_sae_against_itself_with_permuted_ids_is_recovered_exactly(method, seed):
    rng = np.random.default_rng(21)
    n, n_features, d_model = 3000, 40, 16
    x = sparse_acts(n, n_features, 0.04, rng)
    x[:, 9] = 0.0  # a dead feature
    tokens = rng.integers(0, 60, n)
    W_dec_FD = rng.normal(size=(n_features, d_model))
    perm = rng.permutation(n_features)  # child feature j is parent feature perm[j]
    y, W_child_GD = x[:, perm], W_dec_FD[perm]
    dead_parent, dead_child = ~(x != 0).any(0), ~(y != 0).any(0)
    if method == "decoder":
        score = decoder_cosine(W_dec_FD, W_child_GD)
    else:
        score = pairwise_correlations(x, y, method, tokens)
    live = ~dead_child
    rows, cols, scores = one_to_one(score, ~dead_parent, live)
    np.testing.assert_array_equal(rows[np.argsort(cols)], perm[live])
    np.testing.assert_allclose(scores, 1.0, atol=1e-9)
    result = classify(score, dead_parent, dead_child, 0.8, mode=method, assignment="one")
    counts = result.counts()
    assert counts["persisting_share"] == 1.0 and counts["parent_persisting_share"] == 1.0
    assert counts["dead_child"] == 1 and result.best_parent_for_child[dead_child][0] == -1
    np.testing.assert_array_equal(result.best_parent_for_child[live], perm[live])
    np.testing.assert_allclose(result.best_corr_for_child[live], 1.0, atol=1e-9)  # r = 1 on the matched diagonal
    np.testing.assert_allclose(score[perm[live], np.flatnonzero(live)], 1.0, atol=1e-9)


# --------------------------------------------------------------------------- permutation null and curves


def test_permute_positions_is_a_deterministic_row_shuffle():
    rng = np.random.default_rng(22)
    acts = sp.csr_matrix(sparse_acts(200, 7, 0.1, rng).astype(np.float32))
    shuffled = permute_positions(acts, seed=5)
    order = np.random.default_rng(5).permutation(200)
    assert shuffled.dtype == np.float32  # a stored sample keeps its dtype
    np.testing.assert_array_equal(shuffled.toarray(), acts.toarray()[order])
    np.testing.assert_array_equal(permute_positions(acts, seed=5).toarray(), shuffled.toarray())
    assert not np.array_equal(permute_positions(acts, seed=6).toarray(), shuffled.toarray())
    np.testing.assert_array_equal(permute_positions(acts.toarray(), seed=5).toarray(), shuffled.toarray())


def test_threshold_curve_counts_live_children_with_nan_as_unmatched():
    best = np.array([0.95, 0.85, 0.5, np.nan, 0.99])
    alive = np.array([True, True, True, True, False])
    curve = threshold_curve(best, alive, [0.5, 0.8, 0.9, 1.0])
    assert list(curve["matched"]) == [3, 2, 1, 0] and (curve["live"] == 4).all()
    np.testing.assert_allclose(curve["share"], [0.75, 0.5, 0.25, 0.0])


def test_permutation_null_needs_a_support_guard_and_choose_min_support_finds_it(seed):
    # Independent parent and child, each with 400 features that fire exactly once in 2,000 positions: on the
    # null, ~80 rare pairs land on the same position and get r = 1 from that one event.
    rng = np.random.default_rng(23)
    n = 2000
    x = rare_and_common(n, 400, 100, rng)
    y = permute_positions(rare_and_common(n, 400, 100, rng), seed=7)
    acc = CorrelationAccumulator(500, 500, "position", track_support=True)
    acc.update(x, y)
    unguarded = acc.finalize(np.float64, min_support=0)
    alive_child = ~acc.dead_child

    def false_match_rate(corr: np.ndarray) -> float:
        best = classify(corr, acc.dead_parent, acc.dead_child, 0.8).best_corr_for_child
        return float(threshold_curve(best, alive_child, [0.8])["share"].iloc[0])

    assert false_match_rate(unguarded) > 0.05  # rare features give false matches with no guard
    assert false_match_rate(acc.finalize(np.float64, min_support=3)) < 0.01
    chosen, table = choose_min_support(unguarded, acc.support(), acc.dead_parent, acc.dead_child, 0.8, 0.01)
    rates = table.set_index("min_support")["false_match_rate"]
    assert list(table["min_support"]) == [0, 1, 2, 3, 5, 8, 13, 21]
    assert rates[0] > 0.05 and rates[3] < 0.01 and rates.is_monotonic_decreasing
    assert chosen is not None and 1 < chosen <= 3 and rates[chosen] <= 0.01
    assert rates[0] == pytest.approx(false_match_rate(unguarded))  # the table agrees with classify
    none, _ = choose_min_support(unguarded, acc.support(), acc.dead_parent, acc.dead_child, 0.8, 0.01, grid=(0, 1))
    assert none is None  # no guard in the grid reaches the target
