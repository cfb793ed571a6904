"""Other ways to match features and the controls they need: decoder cosine, one-to-one assignment, nulls, curves."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scipy.optimize import linear_sum_assignment

from .correlate import _as_csr


def _as_matrix(weights, name: str) -> np.ndarray:
    """A 2-D float64 numpy array from numpy or torch."""
    if isinstance(weights, torch.Tensor):
        weights = weights.detach().cpu().double().numpy()
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n_features, d_model], got shape {weights.shape}")
    return weights


def decoder_cosine(W_dec_parent_FD, W_dec_child_GD) -> np.ndarray:
    """Cosine similarity of every parent decoder direction with every child one, ``[F, G]`` float64.

    Data-free matching as in SAE Match (Balagansky et al. 2025) and Feature Flow (Laptev et al. 2025): rows
    are features (``W_dec`` as ``[n_features, d_model]``; transpose a ``[d_model, n_features]`` one first),
    each normalised to unit length. A zero row has no direction: its cosines are NaN.
    """
    parent_FD = _as_matrix(W_dec_parent_FD, "W_dec_parent_FD")
    child_GD = _as_matrix(W_dec_child_GD, "W_dec_child_GD")
    if parent_FD.shape[1] != child_GD.shape[1]:
        raise ValueError(
            f"decoders live in different spaces: d = {parent_FD.shape[1]} vs {child_GD.shape[1]} "
            "(both must be [n_features, d_model]; a transposed W_dec gives this error)"
        )
    norm_F = np.linalg.norm(parent_FD, axis=1)
    norm_G = np.linalg.norm(child_GD, axis=1)
    unit_FD = np.divide(parent_FD, norm_F[:, None], out=np.zeros_like(parent_FD), where=norm_F[:, None] > 0)
    unit_GD = np.divide(child_GD, norm_G[:, None], out=np.zeros_like(child_GD), where=norm_G[:, None] > 0)
    cos_FG = np.clip(unit_FD @ unit_GD.T, -1.0, 1.0)
    cos_FG[norm_F == 0] = np.nan
    cos_FG[:, norm_G == 0] = np.nan
    return cos_FG


def one_to_one(
    score_FG: np.ndarray, alive_parent: np.ndarray | None = None, alive_child: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The one-to-one matching of live features that maximises the summed score (Hungarian assignment).

    ``scipy.optimize.linear_sum_assignment`` on the live rows and columns of ``score_FG`` (correlation or
    decoder cosine); NaN scores count as lower than every defined one, so they are used only when nothing
    else is left, and such assignments are dropped from the result. Returns ``(rows, cols, scores)`` as
    feature ids of the full matrix, sorted by row; ``min(live parents, live children)`` pairs at most.
    Cost: a float64 copy of the live block and roughly cubic time (minutes at 16,384 x 16,384).
    """
    score_FG = np.asarray(score_FG)
    n_parent, n_child = score_FG.shape
    alive_parent = np.ones(n_parent, bool) if alive_parent is None else np.asarray(alive_parent, bool)
    alive_child = np.ones(n_child, bool) if alive_child is None else np.asarray(alive_child, bool)
    if alive_parent.shape != (n_parent,) or alive_child.shape != (n_child,):
        raise ValueError(f"masks {alive_parent.shape}, {alive_child.shape} do not match scores {score_FG.shape}")
    live_rows, live_cols = np.flatnonzero(alive_parent), np.flatnonzero(alive_child)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    if len(live_rows) == 0 or len(live_cols) == 0:
        return empty
    block = score_FG[np.ix_(live_rows, live_cols)].astype(np.float64)
    undefined = np.isnan(block)
    if undefined.all():
        return empty
    lowest = block[~undefined].min()
    block[undefined] = lowest - 1.0  # below every defined score, and finite (scipy refuses NaN)
    r, c = linear_sum_assignment(block, maximize=True)
    keep = ~undefined[r, c]
    rows, cols = live_rows[r[keep]], live_cols[c[keep]]
    return rows.astype(np.int64), cols.astype(np.int64), score_FG[rows, cols].astype(np.float64)


def permute_positions(acts, seed: int) -> sp.csr_matrix:
    """Activations ``[n_positions, n_features]`` with their rows (positions) shuffled: a permutation null.

    Correlating a parent with a child whose positions were shuffled keeps every feature's frequency and
    value distribution but breaks any link between them, so whatever still "matches" is chance. The order
    is ``numpy.random.default_rng(seed).permutation(n_positions)``: the same seed gives the same null. For
    token mode, pair the shuffled child with the parent's (unshuffled) token ids.
    """
    matrix = sp.csr_matrix(acts) if sp.issparse(acts) else _as_csr(acts, "acts")  # sparse keeps its dtype
    order = np.random.default_rng(seed).permutation(matrix.shape[0])
    return matrix[order]


def threshold_curve(
    best_corr_for_child: np.ndarray, alive_child: np.ndarray, thresholds: Sequence[float]
) -> pd.DataFrame:
    """Share of live child features whose best score is >= each threshold (NaN best = no match).

    On a real parent -> child pair this is persistence against the threshold; on a permutation null
    (``permute_positions``) it is the false-match rate. Columns: ``threshold``, ``matched``, ``live``, ``share``.
    """
    best = np.asarray(best_corr_for_child, dtype=np.float64)
    alive = np.asarray(alive_child, bool)
    if best.shape != alive.shape:
        raise ValueError(f"best_corr_for_child {best.shape} and alive_child {alive.shape} differ in shape")
    live_best = best[alive]
    rows = []
    for threshold in thresholds:
        matched = int((live_best >= threshold).sum())  # NaN compares False: no partner, no match
        rows.append({"threshold": float(threshold), "matched": matched, "live": len(live_best),
                     "share": matched / len(live_best) if len(live_best) else np.nan})
    return pd.DataFrame(rows)


def choose_min_support(
    corr_FG: np.ndarray,
    support_FG: np.ndarray,
    dead_parent: np.ndarray,
    dead_child: np.ndarray,
    threshold: float = 0.8,
    target: float = 0.01,
    grid: Sequence[int] = (0, 1, 2, 3, 5, 8, 13, 21),
) -> tuple[int | None, pd.DataFrame]:
    """The smallest support guard in ``grid`` whose false-match rate is at most ``target``, and the table.

    Meant to be run on a permutation null (the child's positions shuffled with ``permute_positions``), where
    every match is false: the false-match rate of a guard is the share of live child features with some live
    parent at r >= ``threshold`` and support >= guard. ``corr_FG`` should carry no guard stricter than the
    smallest in ``grid`` (position mode: ``finalize(min_support=0)``; token mode's least guard is 2), and
    ``support_FG`` is ``CorrelationAccumulator.support()``. Returns ``(guard, table)``, guard None if no
    guard in the grid reaches the target; table columns ``min_support``, ``false_matches``, ``live``,
    ``false_match_rate``.
    """
    corr_FG, support_FG = np.asarray(corr_FG), np.asarray(support_FG)
    alive_parent, alive_child = ~np.asarray(dead_parent, bool), ~np.asarray(dead_child, bool)
    if corr_FG.shape != support_FG.shape or corr_FG.shape != (len(alive_parent), len(alive_child)):
        raise ValueError(f"corr {corr_FG.shape}, support {support_FG.shape} and masks "
                         f"({len(alive_parent)}, {len(alive_child)}) do not agree")
    rows, cols = np.nonzero(corr_FG >= threshold)  # one pass over the matrix; a null has few such pairs
    live = alive_parent[rows] & alive_child[cols]
    rows, cols = rows[live], cols[live]
    pair_support = support_FG[rows, cols]
    n_live = int(alive_child.sum())
    table = []
    for guard in sorted(int(g) for g in grid):
        false_matches = len(np.unique(cols[pair_support >= guard]))
        table.append({"min_support": guard, "false_matches": false_matches, "live": n_live,
                      "false_match_rate": false_matches / n_live if n_live else np.nan})
    table = pd.DataFrame(table)
    passing = table.loc[table["false_match_rate"] <= target, "min_support"]
    return (int(passing.iloc[0]) if len(passing) else None), table
