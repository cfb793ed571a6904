"""Streaming Pearson correlation of every parent feature with every child feature, in position or token mode."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from . import kernels
from .kernels import _require_numba

MODES = ("token", "position")
CONSTANT_RTOL = 1e-10  # token mode: a side whose spread is below this fraction of its mean counts as constant


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


def _check_support(mode: str, min_support: int | None) -> int:
    """The support guard for ``mode`` (None: 2 token strings in token mode, no guard in position mode)."""
    if min_support is None:
        return 2 if mode == "token" else 0
    min_support = int(min_support)
    if mode == "token" and min_support < 2:
        raise ValueError(f"token mode: min_support must be >= 2 (Pearson r needs two points), got {min_support}")
    if min_support < 0:
        raise ValueError(f"position mode: min_support must be >= 0 (0 = no guard), got {min_support}")
    return min_support


def _kernel_args(matrix: sp.spmatrix, with_values: bool = True) -> tuple:
    """(indptr, indices[, data]) of a compressed matrix as the kernels take them."""
    args = (matrix.indptr.astype(np.int64), matrix.indices.astype(np.int64))
    return (*args, matrix.data) if with_values else args


def _indicator(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Same sparsity, every stored entry 1 (int32): where each feature fired."""
    return sp.csr_matrix((np.ones(matrix.nnz, np.int32), matrix.indices, matrix.indptr), shape=matrix.shape)


def _firing_means(sums: sp.csr_matrix, fires: sp.csr_matrix) -> sp.csr_matrix:
    """sums / fires on the structure of ``fires`` (explicit zeros kept: a mean of 0 over firings is defined)."""
    fires, sums = fires.tocsr(), sums.tocsr()
    fires.sort_indices()
    sums.sort_indices()
    n_cols = np.int64(fires.shape[1])
    keys_f = np.repeat(np.arange(fires.shape[0], dtype=np.int64), np.diff(fires.indptr)) * n_cols + fires.indices
    keys_s = np.repeat(np.arange(sums.shape[0], dtype=np.int64), np.diff(sums.indptr)) * n_cols + sums.indices
    values = np.zeros(fires.nnz)
    values[np.searchsorted(keys_f, keys_s)] = sums.data  # a nonzero sum needs a firing, so keys_s is in keys_f
    return sp.csr_matrix((values / fires.data, fires.indices.copy(), fires.indptr.copy()), shape=fires.shape)


class CorrelationAccumulator:
    """Streams activation chunks of a parent and a child SAE and finalises all pairwise Pearson r.

    ``mode="position"`` keeps float64 sums, sums of squares and the dense cross-product matrix
    ``[n_parent, n_child]`` (8 bytes a pair: 2 GiB at 16,384 x 16,384), plus an int32 count of co-active
    positions per pair (another 1 GiB) when ``min_support > 0`` or ``track_support=True``.
    ``mode="token"`` keeps per token string activation sums and firing counts (sparse ``[vocab, n_features]``),
    so needs ``vocab_size``. ``min_support`` (None: 2 in token mode, 0 in position mode) is the fewest shared
    token strings (token mode, >= 2) or co-active positions (position mode, 0 = no guard) a pair needs for a
    defined r. Feed chunks with ``update``; ``finalize`` returns the correlation matrix (see the package
    docstring for how undefined pairs are filled) and ``support`` the per-pair counts the guard reads.
    """

    def __init__(
        self,
        n_parent: int,
        n_child: int,
        mode: str = "token",
        vocab_size: int | None = None,
        min_support: int | None = None,
        seed: int = 0,
        track_support: bool = False,
    ):
        _require_numba()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "token" and vocab_size is None:
            raise ValueError("token mode needs vocab_size (the number of distinct token ids, e.g. len(tokenizer))")
        self.n_parent, self.n_child, self.mode = n_parent, n_child, mode
        self.vocab_size, self.min_support = vocab_size, _check_support(mode, min_support)
        self.n_positions = 0
        self.parent_active = np.zeros(n_parent, np.int64)  # positions where each feature is nonzero
        self.child_active = np.zeros(n_child, np.int64)
        # A fixed shuffle of parent rows balances the threads (feature ids can be sorted by frequency).
        self._rows = np.random.default_rng(seed).permutation(n_parent).astype(np.int64)
        # Token mode can always count shared token strings at the end; position mode must count while streaming.
        self.track_support = mode == "token" or bool(track_support) or self.min_support > 0
        if mode == "position":
            self._sx, self._sxx = np.zeros(n_parent), np.zeros(n_parent)
            self._sy, self._syy = np.zeros(n_child), np.zeros(n_child)
            self._sxy_FG = np.zeros((n_parent, n_child))
            self._coactive_FG = np.zeros((n_parent, n_child), np.int32) if self.track_support else None
        else:
            self._parent_sums = sp.csr_matrix((vocab_size, n_parent))
            self._child_sums = sp.csr_matrix((vocab_size, n_child))
            self._parent_fires = sp.csr_matrix((vocab_size, n_parent), dtype=np.int32)
            self._child_fires = sp.csr_matrix((vocab_size, n_child), dtype=np.int32)

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
        if self.mode == "token":
            tokens = self._check_tokens(token_ids, x.shape[0])
        self.n_positions += x.shape[0]
        self.parent_active += np.bincount(x.indices, minlength=self.n_parent)
        self.child_active += np.bincount(y.indices, minlength=self.n_child)
        if self.mode == "position":
            self._sx += np.asarray(x.sum(axis=0)).ravel()
            self._sxx += np.asarray(x.multiply(x).sum(axis=0)).ravel()
            self._sy += np.asarray(y.sum(axis=0)).ravel()
            self._syy += np.asarray(y.multiply(y).sum(axis=0)).ravel()
            x_args, y_args = _kernel_args(x.tocsc()), _kernel_args(y)
            if self._coactive_FG is None:
                kernels._gram_add_kernel(self._sxy_FG, self._rows, *x_args, *y_args)
            else:
                kernels._gram_count_add_kernel(self._sxy_FG, self._coactive_FG, self._rows, *x_args, *y_args)
            return
        # One-hot [vocab, n] @ acts [n, F]: per token string sums and firing counts, sparse. Only nonzero
        # activations count (the released code logs only those), so a mean is over the positions that fired.
        n = len(tokens)
        onehot = sp.csr_matrix((np.ones(n, np.int32), (tokens, np.arange(n))), shape=(self.vocab_size, n))
        self._parent_sums = self._parent_sums + onehot @ x
        self._child_sums = self._child_sums + onehot @ y
        self._parent_fires = self._parent_fires + onehot @ _indicator(x)
        self._child_fires = self._child_fires + onehot @ _indicator(y)

    def _check_tokens(self, token_ids, n: int) -> np.ndarray:
        if token_ids is None:
            raise ValueError("token mode needs the token ids of the chunk's positions (token_ids)")
        tokens = np.asarray(token_ids.cpu() if isinstance(token_ids, torch.Tensor) else token_ids).reshape(-1)
        if len(tokens) != n:
            raise ValueError(f"{len(tokens)} token ids for {n} positions")
        if len(tokens) and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}); got {tokens.min()}..{tokens.max()}")
        return tokens.astype(np.int64)

    @property
    def dead_parent(self) -> np.ndarray:
        """Parent features never active on the data seen so far."""
        return self.parent_active == 0

    @property
    def dead_child(self) -> np.ndarray:
        """Child features never active on the data seen so far."""
        return self.child_active == 0

    def token_means(self) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """The released statistic: per token string mean activation over the positions where each feature fired.

        ``[vocab, n_parent]``, ``[vocab, n_child]`` CSR; a stored entry (possibly an explicit 0) is a defined
        mean, a missing one means the feature never fired on that token string (NaN in a pandas pivot).
        """
        if self.mode != "token":
            raise ValueError("token_means is defined for token mode only")
        return _firing_means(self._parent_sums, self._parent_fires), _firing_means(self._child_sums, self._child_fires)

    def support(self) -> np.ndarray:
        """Per pair support, int32 ``[n_parent, n_child]``: shared token strings (token mode, both fired on
        them) or co-active positions (position mode; needs ``min_support > 0`` or ``track_support=True``)."""
        if self.mode == "position":
            if self._coactive_FG is None:
                raise ValueError("position mode counts co-active positions only with min_support > 0 or "
                                 "track_support=True; build the accumulator with one of them")
            view = self._coactive_FG.view()
            view.flags.writeable = False  # the accumulator's own counts; a copy would cost 4 bytes a pair
            return view
        count_FG = np.zeros((self.n_parent, self.n_child), np.int32)
        x_args = _kernel_args(self._parent_fires.tocsc(), with_values=False)
        y_args = _kernel_args(self._child_fires, with_values=False)
        kernels._cooccur_count_kernel(count_FG, self._rows, *x_args, *y_args)
        return count_FG

    def finalize(self, dtype=np.float32, min_support: int | None = None) -> np.ndarray:
        """All pairwise Pearson r, ``[n_parent, n_child]`` (NaN where undefined; see the package docstring).

        ``min_support`` overrides the accumulator's guard for this call only, so a caller can sweep it
        without reading the data again (position mode: a guard > 0 needs the co-active counts tracked).
        """
        if self.n_positions == 0:
            raise ValueError("no data: call update() with at least one chunk before finalize()")
        guard = self.min_support if min_support is None else _check_support(self.mode, min_support)
        out_FG = np.full((self.n_parent, self.n_child), np.nan, dtype=dtype)
        if self.mode == "position":
            if guard > 0 and self._coactive_FG is None:
                raise ValueError(f"a position-mode guard of {guard} needs co-active counts: build the "
                                 "accumulator with min_support > 0 or track_support=True")
            n = self.n_positions
            mx, my = self._sx / n, self._sy / n
            # Float64 sums of squares centred at the end; the activations are sparse and nonnegative, so the
            # second moment is not swamped by the squared mean (no catastrophic cancellation).
            sdx = np.sqrt(np.maximum(self._sxx / n - mx * mx, 0.0))
            sdy = np.sqrt(np.maximum(self._syy / n - my * my, 0.0))
            inv_x = np.divide(1.0, sdx, out=np.zeros_like(sdx), where=sdx > 0)
            inv_y = np.divide(1.0, sdy, out=np.zeros_like(sdy), where=sdy > 0)
            counts = self._coactive_FG if self._coactive_FG is not None else np.zeros((1, 1), np.int32)
            kernels._position_corr_kernel(out_FG, self._sxy_FG, float(n), mx, my, inv_x, inv_y, counts, guard)
            return out_FG
        mean_x, mean_y = self.token_means()
        x_args, y_args = _kernel_args(mean_x.tocsc()), _kernel_args(mean_y)
        # The kernel writes float64 rows; a float32 output is filled block by block through a scratch block.
        block_rows = self.n_parent if dtype == np.float64 else min(self.n_parent, 4096)
        scratch = None if dtype == np.float64 else np.empty((block_rows, self.n_child))
        for start in range(0, self.n_parent, block_rows):
            stop = min(start + block_rows, self.n_parent)
            block = out_FG[start:stop] if scratch is None else scratch[: stop - start]
            block.fill(np.nan)
            tiles = np.unique(np.r_[np.arange(start, stop, 64), stop]).astype(np.int64)
            kernels._masked_corr_kernel(block, tiles, start, *x_args, *y_args, guard, CONSTANT_RTOL)
            if scratch is not None:
                out_FG[start:stop] = block
        return out_FG


def pairwise_correlations(
    parent_acts, child_acts, mode: str = "token", token_ids=None, min_support: int | None = None, dtype=np.float64
) -> np.ndarray:
    """Pearson r of every parent feature with every child feature, for in-memory activations.

    ``parent_acts`` ``[n, F]`` and ``child_acts`` ``[n, G]`` (numpy, scipy.sparse or torch; 3-D
    ``[blocks, ctx, F]`` is flattened) at the same n positions; ``token_ids`` ``[n]`` for token mode.
    ``min_support`` as in ``CorrelationAccumulator`` (None: 2 token strings, or no guard in position mode).
    Returns ``[F, G]``; NaN where r is undefined (see the package docstring).
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
