"""Feature matching across parent -> child models (the paper's Figure 2).

Every model's SAE features are recorded on one shared token sample (``cfg.matching.n_blocks`` BabyPython
validation blocks of ``cfg.matching.context_size`` tokens: BabyLM and Python, evenly by tokens), and every
parent feature is correlated with every child feature. Two exact Pearson modes:

* ``token`` (the released code's method): per feature, the mean activation per token string (token id) over
  the sample; a pair is correlated over the token strings where *both* features fire (nonzero mean). Pairs
  with fewer than ``cfg.matching.min_token_support`` such token strings, or where one side is constant on
  them (a relative spread below 1e-10), have r = NaN, as ``scipy.stats.pearsonr`` would give NaN (or refuse).
* ``position``: the activations at every token position of the sample. Every pair of live features has a
  defined r (pairs that are never co-active get their exact, slightly negative r); a dead feature (never
  active, zero variance) has r = NaN with everything.

A child feature *persists* if some live parent feature correlates with it at r >= threshold, else it
*emerges*; a live parent feature with no such child *disappears*. One-to-many matches are kept (``pairs``).
Dead features (never active on the sample) are reported apart and excluded from every share.

Scale: 16,384 x 16,384 pairs. The pair sums are never looped over in Python: activations are streamed in
chunks as sparse matrices, and a parallel numba kernel accumulates the sparse cross-product X^T Y straight
into a dense float64 matrix (Gustavson's row-by-row scheme with a dense output row). We use it rather than
``scipy.sparse`` matmul because scipy builds a sparse product in two passes and then has to be scattered
into the dense accumulator: at 1M positions x ~45 active features that measured ~8x slower here (and
``torch.sparse.mm`` slower still), which would miss the 60 s target. Token mode reduces the sample to per
token string means first (sparse, vocab x features) and computes the masked, centred sums row by row.
"""

from __future__ import annotations

import string
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from .artifacts import cached_step, manifest
from .config import MODEL_NAMES, Config

MODES = ("token", "position")
STEP_VERSION = 1
SAMPLE_DOMAINS = ("babylm", "python")  # BabyPython validation data
CONSTANT_RTOL = 1e-10  # token mode: a side whose spread is below this fraction of its mean counts as constant

try:  # numba is a declared dependency; the import is guarded only to give a clear error if it is missing
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover
    numba = None


# ------------------------------------------------------------------------------------------------ kernels


def _require_numba() -> None:
    if numba is None:  # pragma: no cover
        raise ImportError("paper_lib.matching needs numba: `pip install numba` (it is in pyproject.toml)")


if numba is not None:

    @njit(parallel=True, cache=True, nogil=True)
    def _gram_add_kernel(out_FG, rows, x_indptr, x_pos, x_val, y_indptr, y_feat, y_val):  # pragma: no cover
        """out[i, j] += sum_p x[p, i] * y[p, j]; x as CSC (per feature), y as CSR (per position)."""
        for k in prange(rows.shape[0]):
            i = rows[k]  # each thread owns whole output rows, so no two threads write one entry
            for a in range(x_indptr[i], x_indptr[i + 1]):
                p = x_pos[a]
                v = np.float64(x_val[a])
                for b in range(y_indptr[p], y_indptr[p + 1]):
                    out_FG[i, y_feat[b]] += v * np.float64(y_val[b])

    @njit(parallel=True, cache=True, nogil=True)
    def _masked_corr_kernel(
        out_FG, tiles, row_offset, x_indptr, x_tok, x_val, y_indptr, y_feat, y_val, min_support, rtol
    ):  # pragma: no cover
        """Pearson r of every pair over the rows (token strings) where both have a nonzero value.

        Parent features ``tiles[0]..tiles[-1]`` (processed tile by tile in parallel) fill rows
        ``i - row_offset`` of ``out_FG``; entries without a defined r are left as they are (NaN).

        Two passes per parent feature: means over the common support, then centred sums, so near-constant
        sides are not lost to cancellation. Only child features sharing a row with the parent are visited.
        """
        n_child = out_FG.shape[1]
        for t in prange(tiles.shape[0] - 1):
            count = np.zeros(n_child, np.int64)
            sx = np.zeros(n_child)
            sy = np.zeros(n_child)
            cxx = np.zeros(n_child)
            cyy = np.zeros(n_child)
            cxy = np.zeros(n_child)
            touched = np.empty(n_child, np.int64)
            for i in range(tiles[t], tiles[t + 1]):
                n_touched = 0
                for a in range(x_indptr[i], x_indptr[i + 1]):
                    v = x_tok[a]
                    xv = x_val[a]
                    for b in range(y_indptr[v], y_indptr[v + 1]):
                        j = y_feat[b]
                        if count[j] == 0:
                            touched[n_touched] = j
                            n_touched += 1
                        count[j] += 1
                        sx[j] += xv
                        sy[j] += y_val[b]
                for m in range(n_touched):  # sums -> means
                    j = touched[m]
                    sx[j] /= count[j]
                    sy[j] /= count[j]
                for a in range(x_indptr[i], x_indptr[i + 1]):
                    v = x_tok[a]
                    xv = x_val[a]
                    for b in range(y_indptr[v], y_indptr[v + 1]):
                        j = y_feat[b]
                        dx = xv - sx[j]
                        dy = y_val[b] - sy[j]
                        cxx[j] += dx * dx
                        cyy[j] += dy * dy
                        cxy[j] += dx * dy
                for m in range(n_touched):
                    j = touched[m]
                    n = count[j]
                    small_x = n * (rtol * sx[j]) ** 2
                    small_y = n * (rtol * sy[j]) ** 2
                    if n >= min_support and cxx[j] > small_x and cyy[j] > small_y:
                        r = cxy[j] / np.sqrt(cxx[j] * cyy[j])
                        out_FG[i - row_offset, j] = min(1.0, max(-1.0, r))
                    count[j] = 0
                    sx[j] = 0.0
                    sy[j] = 0.0
                    cxx[j] = 0.0
                    cyy[j] = 0.0
                    cxy[j] = 0.0


    @njit(parallel=True, cache=True, nogil=True)
    def _position_corr_kernel(out_FG, sxy_FG, n, mx, my, inv_x, inv_y):  # pragma: no cover
        """r = (sxy / n - mx my) / (sd_x sd_y), clipped to [-1, 1]; NaN where a side has no variance."""
        for i in prange(out_FG.shape[0]):
            for j in range(out_FG.shape[1]):
                if inv_x[i] > 0 and inv_y[j] > 0:
                    r = (sxy_FG[i, j] / n - mx[i] * my[j]) * inv_x[i] * inv_y[j]
                    out_FG[i, j] = min(1.0, max(-1.0, r))
                else:
                    out_FG[i, j] = np.nan

    @njit(parallel=True, cache=True, nogil=True)
    def _reduce_kernel(corr_FG, alive_parent, alive_child, threshold, tile):  # pragma: no cover
        """Row and column best matches and per-row counts of r >= threshold, skipping NaN and dead features."""
        n_parent, n_child = corr_FG.shape
        best_col = np.full(n_parent, -1, np.int64)
        best_row_val = np.full(n_parent, -np.inf)
        n_tiles = (n_parent + tile - 1) // tile
        col_val = np.full((n_tiles, n_child), -np.inf)
        col_arg = np.full((n_tiles, n_child), -1, np.int64)
        hits = np.zeros(n_parent, np.int64)
        for t in prange(n_tiles):
            for i in range(t * tile, min((t + 1) * tile, n_parent)):
                if not alive_parent[i]:
                    continue
                for j in range(n_child):
                    r = corr_FG[i, j]
                    if not alive_child[j] or np.isnan(r):
                        continue
                    if r > best_row_val[i]:
                        best_row_val[i] = r
                        best_col[i] = j
                    if r > col_val[t, j]:
                        col_val[t, j] = r
                        col_arg[t, j] = i
                    if r >= threshold:
                        hits[i] += 1
        return best_col, best_row_val, col_val, col_arg, hits

    @njit(parallel=True, cache=True, nogil=True)
    def _pairs_kernel(corr_FG, alive_parent, alive_child, threshold, offsets, rows, cols, vals):  # pragma: no cover
        """Write every (i, j, r) with r >= threshold; ``offsets`` from the per-row counts."""
        for i in prange(corr_FG.shape[0]):
            if not alive_parent[i]:
                continue
            k = offsets[i]
            for j in range(corr_FG.shape[1]):
                r = corr_FG[i, j]
                if alive_child[j] and r >= threshold:
                    rows[k] = i
                    cols[k] = j
                    vals[k] = r
                    k += 1


# ------------------------------------------------------------------------------------------ correlations


def _as_csr(acts, name: str) -> sp.csr_matrix:
    """Activations ``[n_positions, n_features]`` (or ``[n_blocks, ctx, n_features]``) as float64 CSR."""
    if isinstance(acts, torch.Tensor):
        acts = acts.detach().cpu()
        if acts.is_sparse or acts.layout != torch.strided:
            acts = acts.to_dense()
        acts = acts.double().numpy()
    if sp.issparse(acts):
        matrix = sp.csr_matrix(acts, dtype=np.float64)
    else:
        acts = np.asarray(acts, dtype=np.float64)
        if acts.ndim == 3:
            acts = acts.reshape(-1, acts.shape[-1])
        if acts.ndim != 2:
            raise ValueError(f"{name} must be [n_positions, n_features] (or [n_blocks, ctx, n_features]), got {acts.shape}")
        matrix = sp.csr_matrix(acts)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    return matrix


class CorrelationAccumulator:
    """Streams activation chunks of a parent and a child SAE and finalises all pairwise Pearson r.

    ``mode="position"`` keeps float64 sums, sums of squares and the dense cross-product matrix
    ``[n_parent, n_child]`` (8 bytes a pair: 2 GiB at 16,384 x 16,384); ``mode="token"`` keeps per token
    string activation sums (sparse ``[vocab, n_features]``) and token counts, so needs ``vocab_size``.
    Feed chunks with ``update``; ``finalize`` returns the correlation matrix (see the module docstring for
    how undefined pairs are filled). Memory beyond that: the current chunk and, at the end, the output.
    """

    def __init__(
        self,
        n_parent: int,
        n_child: int,
        mode: str = "token",
        vocab_size: int | None = None,
        min_support: int = 2,
        seed: int = 0,
    ):
        _require_numba()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "token" and vocab_size is None:
            raise ValueError("token mode needs vocab_size (the number of distinct token ids, e.g. len(tokenizer))")
        if min_support < 2:
            raise ValueError(f"min_support must be >= 2 (Pearson r needs two points), got {min_support}")
        self.n_parent, self.n_child, self.mode = n_parent, n_child, mode
        self.vocab_size, self.min_support = vocab_size, min_support
        self.n_positions = 0
        self.parent_active = np.zeros(n_parent, np.int64)  # positions where each feature is nonzero
        self.child_active = np.zeros(n_child, np.int64)
        if mode == "position":
            self._sx, self._sxx = np.zeros(n_parent), np.zeros(n_parent)
            self._sy, self._syy = np.zeros(n_child), np.zeros(n_child)
            self._sxy_FG = np.zeros((n_parent, n_child))
            # A fixed shuffle of parent rows balances the threads (feature ids can be sorted by frequency).
            self._rows = np.random.default_rng(seed).permutation(n_parent).astype(np.int64)
        else:
            self._token_counts = np.zeros(vocab_size, np.int64)
            self._parent_sums = sp.csr_matrix((vocab_size, n_parent))
            self._child_sums = sp.csr_matrix((vocab_size, n_child))

    def update(self, parent_acts, child_acts, token_ids=None) -> None:
        """Add one chunk: activations ``[n, n_parent]`` and ``[n, n_child]`` at the same n positions."""
        x = _as_csr(parent_acts, "parent_acts")
        y = _as_csr(child_acts, "child_acts")
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"parent and child chunks cover different positions: {x.shape[0]} vs {y.shape[0]}")
        if x.shape[1] != self.n_parent or y.shape[1] != self.n_child:
            raise ValueError(
                f"feature counts {x.shape[1]}, {y.shape[1]} do not match the accumulator's "
                f"{self.n_parent}, {self.n_child}"
            )
        self.n_positions += x.shape[0]
        self.parent_active += np.bincount(x.indices, minlength=self.n_parent)
        self.child_active += np.bincount(y.indices, minlength=self.n_child)
        if self.mode == "position":
            self._sx += np.asarray(x.sum(axis=0)).ravel()
            self._sxx += np.asarray(x.multiply(x).sum(axis=0)).ravel()
            self._sy += np.asarray(y.sum(axis=0)).ravel()
            self._syy += np.asarray(y.multiply(y).sum(axis=0)).ravel()
            xc = x.tocsc()
            _gram_add_kernel(
                self._sxy_FG, self._rows, xc.indptr.astype(np.int64), xc.indices.astype(np.int64), xc.data,
                y.indptr.astype(np.int64), y.indices.astype(np.int64), y.data,
            )
            return
        if token_ids is None:
            raise ValueError("token mode needs the token ids of the chunk's positions (token_ids)")
        tokens = np.asarray(token_ids.cpu() if isinstance(token_ids, torch.Tensor) else token_ids).reshape(-1)
        if len(tokens) != x.shape[0]:
            raise ValueError(f"{len(tokens)} token ids for {x.shape[0]} positions")
        if len(tokens) and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}); got {tokens.min()}..{tokens.max()}")
        self._token_counts += np.bincount(tokens, minlength=self.vocab_size)
        # One-hot [vocab, n] @ acts [n, F]: per token string sums, sparse.
        onehot = sp.csr_matrix(
            (np.ones(len(tokens)), (tokens, np.arange(len(tokens)))), shape=(self.vocab_size, len(tokens))
        )
        self._parent_sums = self._parent_sums + onehot @ x
        self._child_sums = self._child_sums + onehot @ y

    @property
    def dead_parent(self) -> np.ndarray:
        """Parent features never active on the data seen so far."""
        return self.parent_active == 0

    @property
    def dead_child(self) -> np.ndarray:
        """Child features never active on the data seen so far."""
        return self.child_active == 0

    def token_means(self) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """Per token string mean activations ``[vocab, n_parent]``, ``[vocab, n_child]`` (token mode)."""
        if self.mode != "token":
            raise ValueError("token_means is defined for token mode only")
        inv = sp.diags(1.0 / np.maximum(self._token_counts, 1))
        return (inv @ self._parent_sums).tocsr(), (inv @ self._child_sums).tocsr()

    def finalize(self, dtype=np.float32) -> np.ndarray:
        """All pairwise Pearson r, ``[n_parent, n_child]`` (NaN where undefined; see the module docstring)."""
        if self.n_positions == 0:
            raise ValueError("no data: call update() with at least one chunk before finalize()")
        out_FG = np.full((self.n_parent, self.n_child), np.nan, dtype=dtype)
        if self.mode == "position":
            n = self.n_positions
            mx, my = self._sx / n, self._sy / n
            # Float64 sums of squares centred at the end; the activations are sparse and nonnegative, so the
            # second moment is not swamped by the squared mean (no catastrophic cancellation).
            sdx = np.sqrt(np.maximum(self._sxx / n - mx * mx, 0.0))
            sdy = np.sqrt(np.maximum(self._syy / n - my * my, 0.0))
            inv_x = np.divide(1.0, sdx, out=np.zeros_like(sdx), where=sdx > 0)
            inv_y = np.divide(1.0, sdy, out=np.zeros_like(sdy), where=sdy > 0)
            _position_corr_kernel(out_FG, self._sxy_FG, float(n), mx, my, inv_x, inv_y)
            return out_FG
        mean_x, mean_y = self.token_means()
        mean_x.eliminate_zeros()
        mean_y.eliminate_zeros()
        xc = mean_x.tocsc()
        xc.sort_indices()
        y_args = (mean_y.indptr.astype(np.int64), mean_y.indices.astype(np.int64), mean_y.data)
        x_args = (xc.indptr.astype(np.int64), xc.indices.astype(np.int64), xc.data)
        # The kernel writes float64 rows; a float32 output is filled block by block through a scratch block.
        block_rows = self.n_parent if dtype == np.float64 else min(self.n_parent, 4096)
        scratch = None if dtype == np.float64 else np.empty((block_rows, self.n_child))
        for start in range(0, self.n_parent, block_rows):
            stop = min(start + block_rows, self.n_parent)
            block = out_FG[start:stop] if scratch is None else scratch[: stop - start]
            block.fill(np.nan)
            tiles = np.unique(np.r_[np.arange(start, stop, 64), stop]).astype(np.int64)
            _masked_corr_kernel(block, tiles, start, *x_args, *y_args, self.min_support, CONSTANT_RTOL)
            if scratch is not None:
                out_FG[start:stop] = block
        return out_FG


def pairwise_correlations(
    parent_acts, child_acts, mode: str = "token", token_ids=None, min_support: int = 2, dtype=np.float64
) -> np.ndarray:
    """Pearson r of every parent feature with every child feature, for in-memory activations.

    ``parent_acts`` ``[n, F]`` and ``child_acts`` ``[n, G]`` (numpy, scipy.sparse or torch; 3-D
    ``[blocks, ctx, F]`` is flattened) at the same n positions; ``token_ids`` ``[n]`` for token mode.
    Returns ``[F, G]``; NaN where r is undefined (see the module docstring).
    """
    x = _as_csr(parent_acts, "parent_acts")
    y = _as_csr(child_acts, "child_acts")
    vocab = None
    if mode == "token":
        if token_ids is None:
            raise ValueError("token mode needs token_ids (the token id at each position)")
        tokens = np.asarray(token_ids.cpu() if isinstance(token_ids, torch.Tensor) else token_ids).reshape(-1)
        vocab = int(tokens.max()) + 1 if len(tokens) else 1
        token_ids = tokens
    acc = CorrelationAccumulator(x.shape[1], y.shape[1], mode, vocab_size=vocab, min_support=min_support)
    acc.update(x, y, token_ids)
    return acc.finalize(dtype=dtype)


# ------------------------------------------------------------------------------------------ classification


@dataclass
class MatchResult:
    """Matches between a parent's and a child's SAE features (feature indices are SAE feature ids).

    ``best_*`` arrays give each feature's best-correlated partner (-1 and NaN where none is defined);
    ``pairs`` lists every pair with r >= threshold (one-to-many kept). Dead features are never active on
    the sample: they are excluded from persisting/emerging/disappearing and from the shares.
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

        def share(a: int, b: int) -> float:
            return a / b if b else float("nan")

        return {
            "parent": self.parent,
            "child": self.child,
            "mode": self.mode,
            "threshold": self.threshold,
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
    best_col, best_row_val, col_val, col_arg, hits = _reduce_kernel(
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
    _pairs_kernel(corr_FG, alive_parent, alive_child, float(threshold), offsets, rows, cols, vals)
    return {
        "best_child_for_parent": best_col,
        "best_corr_for_parent": np.where(np.isfinite(best_row_val), best_row_val, np.nan),
        "best_parent_for_child": np.where(np.isfinite(best_col_val), best_row, -1).astype(np.int64),
        "best_corr_for_child": np.where(np.isfinite(best_col_val), best_col_val, np.nan),
        "pairs": pd.DataFrame({"parent_feature": rows, "child_feature": cols, "corr": vals}),
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
) -> MatchResult:
    """A ``MatchResult`` from a correlation matrix and the dead-feature masks (dead rows/columns ignored)."""
    _require_numba()
    corr_FG = np.asarray(corr_FG)
    if corr_FG.dtype not in (np.float32, np.float64):
        corr_FG = corr_FG.astype(np.float64)
    dead_parent, dead_child = np.asarray(dead_parent, bool), np.asarray(dead_child, bool)
    if corr_FG.shape != (len(dead_parent), len(dead_child)):
        raise ValueError(f"corr shape {corr_FG.shape} does not match masks {len(dead_parent)}, {len(dead_child)}")
    found = _best_and_pairs(corr_FG, ~dead_parent, ~dead_child, threshold)
    return MatchResult(
        parent=parent, child=child, mode=mode, threshold=float(threshold), dead_parent=dead_parent,
        dead_child=dead_child, n_positions=n_positions, **found,
    )


# ----------------------------------------------------------------------------------- activation samples


def _check_pair(parent: str, child: str, mode: str) -> None:
    for name in (parent, child):
        if name not in MODEL_NAMES:
            raise ValueError(f"unknown model '{name}'; models are {', '.join(MODEL_NAMES)}")
    if parent == child:
        raise ValueError(f"parent and child are both '{parent}'; name two different models")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def sample_blocks(cfg: Config) -> torch.Tensor:
    """The shared token sample: ``[n_blocks, context_size]`` BabyPython validation blocks (BabyLM + Python)."""
    from .data import mixture_blocks

    m = cfg.matching
    # One spare block per domain so flooring per domain still leaves n_blocks blocks.
    blocks = mixture_blocks(cfg, SAMPLE_DOMAINS, "validation", (m.n_blocks + 2) * m.context_size, m.context_size)
    if len(blocks) < m.n_blocks:
        raise ValueError(
            f"only {len(blocks)} validation blocks of {m.context_size} tokens are available, "
            f"matching.n_blocks asks for {m.n_blocks}: lower matching.n_blocks"
        )
    return blocks[: m.n_blocks]


def _sample_inputs(cfg: Config, name: str) -> dict[str, Any]:
    from .data import corpus_fingerprint, tokenizer_hash
    from .saes import sae_dir

    m = cfg.matching
    return {
        "sae": sae_dir(cfg, name).name,
        "tokenizer": tokenizer_hash(cfg),
        "corpora": [corpus_fingerprint(cfg, d, "validation") for d in SAMPLE_DOMAINS],
        "n_blocks": m.n_blocks,
        "context_size": m.context_size,
        "seed": cfg.seed,
    }


def activation_sample_dir(cfg: Config, name: str, batch_blocks: int = 64) -> Path:
    """Cached folder with one model's SAE activations on the shared sample, stored sparse (CSR).

    Runs the HookedTransformer with ``run_with_cache(names_filter="blocks.0.mlp.hook_post")`` chunk by
    chunk, encodes with the model's SAE and keeps only the nonzero activations.
    """
    from .saes import hook_activations, load_sae
    from .training import load_hooked_lm

    def build(out: Path) -> dict:
        blocks = sample_blocks(cfg)
        model, sae = load_hooked_lm(cfg, name), load_sae(cfg, name)
        model = model.to(sae.device, print_details=False)
        pieces = []
        for start in tqdm(range(0, len(blocks), batch_blocks), desc=f"SAE activations ({name})", leave=False):
            hooked = hook_activations(model, blocks[start : start + batch_blocks], batch_blocks)
            with torch.no_grad():
                feats = sae.encode(hooked.to(sae.device)).float().cpu()
            pieces.append(sp.csr_matrix(feats.reshape(-1, feats.shape[-1]).numpy()))
        acts = sp.vstack(pieces).tocsr().astype(np.float32)
        sp.save_npz(out / "acts.npz", acts)
        np.save(out / "tokens.npy", blocks.reshape(-1).numpy().astype(np.int64))
        return {
            "n_positions": acts.shape[0],
            "d_sae": acts.shape[1],
            "nnz": int(acts.nnz),
            "mean_l0": acts.nnz / max(acts.shape[0], 1),
            "dead_features": int((np.bincount(acts.indices, minlength=acts.shape[1]) == 0).sum()),
        }

    return cached_step(cfg.profile, f"matching-acts-{name}", _sample_inputs(cfg, name), build, STEP_VERSION)


def load_activation_sample(cfg: Config, name: str) -> tuple[sp.csr_matrix, np.ndarray]:
    """One model's SAE activations on the shared sample ``[n_positions, d_sae]`` (CSR) and the token ids."""
    path = activation_sample_dir(cfg, name)
    return sp.load_npz(path / "acts.npz").tocsr(), np.load(path / "tokens.npy")


# ---------------------------------------------------------------------------------------------- matching


def correlate_samples(
    parent_acts: sp.csr_matrix, child_acts: sp.csr_matrix, tokens: np.ndarray, mode: str, vocab_size: int,
    min_support: int = 2, chunk_positions: int = 65536, desc: str = "correlating",
) -> tuple[np.ndarray, CorrelationAccumulator]:
    """Stream two stored samples through a ``CorrelationAccumulator``; returns (corr ``[F, G]``, accumulator)."""
    acc = CorrelationAccumulator(
        parent_acts.shape[1], child_acts.shape[1], mode, vocab_size=vocab_size, min_support=min_support
    )
    n = parent_acts.shape[0]
    for start in tqdm(range(0, n, chunk_positions), desc=desc, leave=False):
        stop = min(start + chunk_positions, n)
        acc.update(parent_acts[start:stop], child_acts[start:stop], tokens[start:stop])
    return acc.finalize(), acc


def _vocab_size(cfg: Config, tokens: np.ndarray) -> int:
    from .data import get_tokenizer

    return max(len(get_tokenizer(cfg)), int(tokens.max()) + 1)


def match_pair(
    cfg: Config, parent: str, child: str, mode: str = "token", threshold: float | None = None
) -> MatchResult:
    """Match one parent's SAE features to one child's (cached). Any two different models may be paired."""
    _check_pair(parent, child, mode)
    threshold = cfg.matching.threshold if threshold is None else float(threshold)
    parent_dir, child_dir = activation_sample_dir(cfg, parent), activation_sample_dir(cfg, child)
    inputs = {
        "parent": parent_dir.name,
        "child": child_dir.name,
        "mode": mode,
        "threshold": threshold,
        "min_token_support": cfg.matching.min_token_support,
    }

    def build(out: Path) -> dict:
        x, tokens = load_activation_sample(cfg, parent)
        y, _ = load_activation_sample(cfg, child)
        corr, acc = correlate_samples(
            x, y, tokens, mode, _vocab_size(cfg, tokens), cfg.matching.min_token_support,
            desc=f"{parent} -> {child} ({mode})",
        )
        result = classify(corr, acc.dead_parent, acc.dead_child, threshold, parent, child, mode, acc.n_positions)
        del corr
        np.savez(
            out / "match.npz",
            **{k: getattr(result, k) for k in (
                "best_child_for_parent", "best_corr_for_parent", "best_parent_for_child",
                "best_corr_for_child", "dead_parent", "dead_child")},
        )
        result.pairs.to_csv(out / "pairs.csv", index=False)
        return {"n_positions": acc.n_positions, **result.counts()}

    path = cached_step(cfg.profile, f"matching-{parent}-{child}-{mode}", inputs, build, STEP_VERSION)
    arrays = np.load(path / "match.npz")
    pairs = pd.read_csv(path / "pairs.csv", dtype={"parent_feature": np.int64, "child_feature": np.int64})
    return MatchResult(
        parent=parent, child=child, mode=mode, threshold=threshold, pairs=pairs,
        n_positions=manifest(path)["meta"]["n_positions"], **{k: arrays[k] for k in arrays.files},
    )


def match_all(cfg: Config, mode: str = "token", threshold: float | None = None) -> pd.DataFrame:
    """One row per pair in ``cfg.matching.pairs``: counts and shares of persisting/emerging/disappearing.

    ``parent_persisting_any_share`` is the share of the parent's live features that persist into at least one
    of its children (the union over every pair with that parent, e.g. BabyPython into Lua or TinyStories).
    """
    results = [match_pair(cfg, parent, child, mode, threshold) for parent, child in cfg.matching.pairs]
    rows = [result.counts() for result in results]
    for row in rows:
        same_parent = [r for r in results if r.parent == row["parent"]]
        into_any = set().union(*(r.persisting_parent.tolist() for r in same_parent))
        live = int((~same_parent[0].dead_parent).sum())
        row["parent_persisting_any_share"] = len(into_any) / live if live else float("nan")
    return pd.DataFrame(rows)


def best_match_table(cfg: Config, mode: str = "token") -> pd.DataFrame:
    """Long table of every live child feature's best parent correlation, per pair (for the histogram)."""
    frames = []
    for parent, child in cfg.matching.pairs:
        result = match_pair(cfg, parent, child, mode)
        alive = ~result.dead_child
        frames.append(
            pd.DataFrame(
                {
                    "pair": f"{parent} -> {child}",
                    "child_feature": np.flatnonzero(alive),
                    "best_corr": result.best_corr_for_child[alive],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def best_match_histogram(cfg: Config, mode: str = "token", bin_width: float = 0.05) -> pd.DataFrame:
    """Histogram of live child features' best parent correlation per pair (NaN: no defined r, counted apart)."""
    edges = np.round(np.arange(-1.0, 1.0 + bin_width / 2, bin_width), 6)
    rows = []
    for pair, group in best_match_table(cfg, mode).groupby("pair", sort=False):
        values = group["best_corr"].to_numpy()
        counts, _ = np.histogram(values[np.isfinite(values)], bins=edges)
        rows += [
            {"pair": pair, "mode": mode, "bin_left": lo, "bin_right": hi, "count": int(c)}
            for lo, hi, c in zip(edges[:-1], edges[1:], counts)
        ]
        rows.append({"pair": pair, "mode": mode, "bin_left": np.nan, "bin_right": np.nan,
                     "count": int((~np.isfinite(values)).sum())})
    return pd.DataFrame(rows)


def persisting_examples(cfg: Config, mode: str = "token", n_features: int = 3, k: int = 5) -> pd.DataFrame:
    """Per pair, the best-matched persisting child features with their top tokens and categories."""
    rows = []
    for parent, child in cfg.matching.pairs:
        result = match_pair(cfg, parent, child, mode)
        persisting = result.persisting
        order = np.argsort(-result.best_corr_for_child[persisting], kind="stable")[:n_features]
        for feature in persisting[order]:
            tokens = top_tokens(cfg, child, int(feature), k)
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


# ------------------------------------------------------------------------------------------------ tokens


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


def _token_mean_matrix(cfg: Config, name: str) -> tuple[sp.csr_matrix, np.ndarray]:
    """Per token id mean activations ``[vocab, d_sae]`` on the shared sample, and token counts."""
    acts, tokens = load_activation_sample(cfg, name)
    vocab = _vocab_size(cfg, tokens)
    counts = np.bincount(tokens, minlength=vocab)
    onehot = sp.csr_matrix((np.ones(len(tokens)), (tokens, np.arange(len(tokens)))), shape=(vocab, len(tokens)))
    sums = (onehot @ acts.astype(np.float64)).tocsr()
    return (sp.diags(1.0 / np.maximum(counts, 1)) @ sums).tocsr(), counts


def _token_text(tokenizer, token_id: int) -> str:
    return tokenizer.decode([int(token_id)])


def top_tokens(cfg: Config, name: str, feature: int, k: int = 10) -> pd.DataFrame:
    """The k token strings with the highest mean activation of one feature on the shared sample."""
    from .data import get_tokenizer

    means, counts = _token_mean_matrix(cfg, name)
    if not 0 <= feature < means.shape[1]:
        raise ValueError(f"feature {feature} out of range: the {name} SAE has {means.shape[1]} features")
    column = means[:, feature].toarray().ravel()
    order = [t for t in np.argsort(-column, kind="stable")[:k] if column[t] > 0]
    tokenizer = get_tokenizer(cfg)
    texts = [_token_text(tokenizer, t) for t in order]
    return pd.DataFrame(
        {
            "token_id": np.asarray(order, dtype=np.int64),
            "token": texts,
            "mean_activation": column[order],
            "count": counts[order],
            "category": [categorise_token(t) for t in texts],
        }
    )


def top_token_categories(cfg: Config, name: str) -> pd.DataFrame:
    """Each feature's top token string (highest mean activation) and its category, for one model."""
    from .data import get_tokenizer

    means, _ = _token_mean_matrix(cfg, name)
    csc = means.tocsc()
    top = np.full(means.shape[1], -1, np.int64)
    lengths = np.diff(csc.indptr)
    nonempty = np.flatnonzero(lengths)
    if len(nonempty):
        # argmax per column of a sparse matrix without a Python loop over features.
        top[nonempty] = np.asarray(csc[:, nonempty].argmax(axis=0)).ravel()
    tokenizer = get_tokenizer(cfg)
    texts = {t: _token_text(tokenizer, t) for t in np.unique(top[top >= 0])}
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
    for parent, child in cfg.matching.pairs:
        result = match_pair(cfg, parent, child, mode)
        categories = top_token_categories(cfg, child).set_index("feature")["category"]
        for group, features in (("persisting", result.persisting), ("emerging", result.emerging)):
            cats = categories.iloc[features]
            rows.append(
                {
                    "pair": f"{parent} -> {child}",
                    "group": group,
                    "n_features": len(features),
                    "formatting_share": float((cats == "punctuation/whitespace/formatting").mean())
                    if len(features) else float("nan"),
                }
            )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------- figures


FLOW_LAYOUT = {"babypython": (0.0, 0.5), "lua": (1.0, 0.78), "tinystories": (1.0, 0.22), "luastories": (2.0, 0.5)}


def plot_feature_flow(summary: pd.DataFrame, ax=None, labels: dict[str, str] | None = None):
    """Sankey-style flow of persisting features (Figure 2) from a ``match_all`` summary, matplotlib only.

    Each model is a bar; each parent -> child band is as thick as the number of matched (persisting) child
    features; bars are annotated with each model's live feature count and the share of its live features
    that persist into at least one child (``parent_persisting_any_share``).
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 5))
    labels = labels or {}
    live = {}
    for _, row in summary.iterrows():
        live[row["parent"]] = row["n_parent"] - row["dead_parent"]
        live[row["child"]] = row["n_child"] - row["dead_child"]
    scale = 0.30 / max(live.values())  # a bar's height is its live feature count
    bar_w = 0.06
    outgoing_offset = {name: 0.0 for name in live}
    incoming_offset = {name: 0.0 for name in live}
    colours = plt.get_cmap("tab10")
    for k, (_, row) in enumerate(summary.iterrows()):
        p, c = row["parent"], row["child"]
        if p not in FLOW_LAYOUT or c not in FLOW_LAYOUT:
            continue
        (xp, yp), (xc, yc) = FLOW_LAYOUT[p], FLOW_LAYOUT[c]
        thick = row["persisting"] * scale
        y0_top = yp + live[p] * scale / 2 - outgoing_offset[p]
        y1_top = yc + live[c] * scale / 2 - incoming_offset[c]
        outgoing_offset[p] += thick
        incoming_offset[c] += thick
        xs = np.linspace(xp + bar_w / 2, xc - bar_w / 2, 100)
        s = (1 - np.cos(np.pi * (xs - xs[0]) / (xs[-1] - xs[0]))) / 2  # smooth S-shaped band
        top = y0_top + (y1_top - y0_top) * s
        ax.fill_between(xs, top - thick, top, color=colours(k), alpha=0.5, lw=0)
        ax.text(xs[50], top[50] + 0.015, f"{int(row['persisting'])} ({row['persisting_share']:.1%} of child)",
                ha="center", va="bottom", fontsize=8, color=colours(k))
    parent_share = summary.groupby("parent")["parent_persisting_any_share"].first()
    for name, (x, y) in FLOW_LAYOUT.items():
        if name not in live:
            continue
        h = live[name] * scale
        ax.add_patch(Rectangle((x - bar_w / 2, y - h / 2), bar_w, h, color="0.3"))
        note = f"{labels.get(name, name)}\n{int(live[name])} live features"
        if name in parent_share:
            note += f"\n{parent_share[name]:.1%} persist"
        ax.text(x, y - h / 2 - 0.02, note, ha="center", va="top", fontsize=9)
    ax.set_xlim(-0.3, 2.3)
    ax.set_ylim(-0.15, 1.1)
    ax.axis("off")
    return ax
