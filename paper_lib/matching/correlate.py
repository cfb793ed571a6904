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
            kernels._gram_add_kernel(
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
            kernels._position_corr_kernel(out_FG, self._sxy_FG, float(n), mx, my, inv_x, inv_y)
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
            kernels._masked_corr_kernel(block, tiles, start, *x_args, *y_args, self.min_support, CONSTANT_RTOL)
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
