"""Persisting, emerging and disappearing features from a correlation matrix (``MatchResult``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from . import kernels
from .kernels import _require_numba
from .methods import one_to_one

ASSIGNMENTS = ("many", "one")


@dataclass
class MatchResult:
    """Matches between a parent's and a child's SAE features (feature indices are SAE feature ids).

    ``assignment="many"`` (the paper's): ``best_*`` arrays give each feature's best-scoring partner (-1 and
    NaN where none is defined) and ``pairs`` lists every pair with score >= threshold (one-to-many kept).
    ``assignment="one"``: features are paired one-to-one by Hungarian assignment (``methods.one_to_one``);
    ``best_*`` give each feature's assigned partner and its score (-1 and NaN when unassigned, which the
    side with more live features always has), and ``pairs`` keeps the assigned pairs with score >= threshold.
    The score is the correlation r, or whatever matrix was classified (e.g. a decoder cosine); the pairs'
    column is named ``corr`` either way. Dead features are never active on the sample: they are excluded
    from persisting/emerging/disappearing and from the shares.
    """

    parent: str
    child: str
    mode: str
    threshold: float
    best_child_for_parent: np.ndarray
    best_corr_for_parent: np.ndarray
    best_parent_for_child: np.ndarray
    best_corr_for_child: np.ndarray
    pairs: pd.DataFrame
    dead_parent: np.ndarray
    dead_child: np.ndarray
    n_positions: int = 0
    assignment: str = "many"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def persisting(self) -> np.ndarray:
        """Child features matched by some parent feature (r >= threshold)."""
        return np.unique(self.pairs["child_feature"].to_numpy()).astype(np.int64)

    @property
    def persisting_parent(self) -> np.ndarray:
        """Parent features matched by some child feature (the parent's features that persist)."""
        return np.unique(self.pairs["parent_feature"].to_numpy()).astype(np.int64)

    @property
    def emerging(self) -> np.ndarray:
        """Live child features with no parent match."""
        alive = ~self.dead_child
        alive[self.persisting] = False
        return np.flatnonzero(alive)

    @property
    def disappearing(self) -> np.ndarray:
        """Live parent features with no child match."""
        alive = ~self.dead_parent
        alive[self.persisting_parent] = False
        return np.flatnonzero(alive)

    def counts(self) -> dict[str, Any]:
        """Counts and shares (shares of live features only) for one summary row."""
        n_parent_alive = int((~self.dead_parent).sum())
        n_child_alive = int((~self.dead_child).sum())
        per_parent = self.pairs.groupby("parent_feature").size()
        per_child = self.pairs.groupby("child_feature").size()
        persisting, emerging, disappearing = len(self.persisting), len(self.emerging), len(self.disappearing)
        persisting_parent = len(self.persisting_parent)

        def share(a: int, b: int) -> float | None:
            return a / b if b else None  # undefined (no live feature): None, which tables show as NaN

        return {
            "parent": self.parent,
            "child": self.child,
            "mode": self.mode,
            "threshold": self.threshold,
            "assignment": self.assignment,
            "n_parent": len(self.dead_parent),
            "n_child": len(self.dead_child),
            "dead_parent": int(self.dead_parent.sum()),
            "dead_child": int(self.dead_child.sum()),
            "persisting": persisting,
            "emerging": emerging,
            "disappearing": disappearing,
            "persisting_parent": persisting_parent,
            "matched_pairs": len(self.pairs),
            "one_to_many_parents": int((per_parent > 1).sum()),
            "many_to_one_children": int((per_child > 1).sum()),
            "persisting_share": share(persisting, n_child_alive),
            "emerging_share": share(emerging, n_child_alive),
            "disappearing_share": share(disappearing, n_parent_alive),
            "parent_persisting_share": share(persisting_parent, n_parent_alive),
        }


def _best_and_pairs(
    corr_FG: np.ndarray, alive_parent: np.ndarray, alive_child: np.ndarray, threshold: float
) -> dict[str, Any]:
    """Row/column best matches and the pairs >= threshold among live features (NaN = no partner)."""
    corr_FG = np.ascontiguousarray(corr_FG)
    best_col, best_row_val, col_val, col_arg, hits = kernels._reduce_kernel(
        corr_FG, alive_parent, alive_child, float(threshold), 256
    )
    top_tile = col_val.argmax(axis=0) if len(col_val) else np.zeros(corr_FG.shape[1], np.int64)
    columns = np.arange(corr_FG.shape[1])
    best_col_val = col_val[top_tile, columns] if len(col_val) else np.full(len(columns), -np.inf)
    best_row = col_arg[top_tile, columns] if len(col_val) else np.full(len(columns), -1)
    offsets = np.r_[0, np.cumsum(hits)].astype(np.int64)
    rows = np.empty(offsets[-1], np.int64)
    cols = np.empty(offsets[-1], np.int64)
    vals = np.empty(offsets[-1], np.float64)
    kernels._pairs_kernel(corr_FG, alive_parent, alive_child, float(threshold), offsets, rows, cols, vals)
    return {
        "best_child_for_parent": best_col,
        "best_corr_for_parent": np.where(np.isfinite(best_row_val), best_row_val, np.nan),
        "best_parent_for_child": np.where(np.isfinite(best_col_val), best_row, -1).astype(np.int64),
        "best_corr_for_child": np.where(np.isfinite(best_col_val), best_col_val, np.nan),
        "pairs": pd.DataFrame({"parent_feature": rows, "child_feature": cols, "corr": vals}),
    }


def _assigned_pairs(
    score_FG: np.ndarray, alive_parent: np.ndarray, alive_child: np.ndarray, threshold: float
) -> dict[str, Any]:
    """Each live feature's one-to-one partner and score, and the assigned pairs >= threshold."""
    rows, cols, scores = one_to_one(score_FG, alive_parent, alive_child)
    n_parent, n_child = score_FG.shape
    best_col, best_col_score = np.full(n_parent, -1, np.int64), np.full(n_parent, np.nan)
    best_row, best_row_score = np.full(n_child, -1, np.int64), np.full(n_child, np.nan)
    best_col[rows], best_col_score[rows] = cols, scores
    best_row[cols], best_row_score[cols] = rows, scores
    keep = scores >= threshold
    return {
        "best_child_for_parent": best_col,
        "best_corr_for_parent": best_col_score,
        "best_parent_for_child": best_row,
        "best_corr_for_child": best_row_score,
        "pairs": pd.DataFrame({"parent_feature": rows[keep], "child_feature": cols[keep], "corr": scores[keep]}),
    }


def classify(
    corr_FG: np.ndarray,
    dead_parent: np.ndarray,
    dead_child: np.ndarray,
    threshold: float = 0.8,
    parent: str = "parent",
    child: str = "child",
    mode: str = "token",
    n_positions: int = 0,
    assignment: str = "many",
) -> MatchResult:
    """A ``MatchResult`` from a correlation (or other score) matrix and the dead-feature masks.

    Dead rows and columns are ignored. ``assignment``: ``"many"`` keeps every pair >= threshold, ``"one"``
    only the pairs of a one-to-one assignment (see ``MatchResult``).
    """
    _require_numba()
    if assignment not in ASSIGNMENTS:
        raise ValueError(f"assignment must be one of {ASSIGNMENTS}, got {assignment!r}")
    corr_FG = np.asarray(corr_FG)
    if corr_FG.dtype not in (np.float32, np.float64):
        corr_FG = corr_FG.astype(np.float64)
    dead_parent, dead_child = np.asarray(dead_parent, bool), np.asarray(dead_child, bool)
    if corr_FG.shape != (len(dead_parent), len(dead_child)):
        raise ValueError(f"corr shape {corr_FG.shape} does not match masks {len(dead_parent)}, {len(dead_child)}")
    if assignment == "many":
        found = _best_and_pairs(corr_FG, ~dead_parent, ~dead_child, threshold)
    else:
        found = _assigned_pairs(corr_FG, ~dead_parent, ~dead_child, threshold)
    return MatchResult(
        parent=parent, child=child, mode=mode, threshold=float(threshold), dead_parent=dead_parent,
        dead_child=dead_child, n_positions=n_positions, assignment=assignment, **found,
    )
