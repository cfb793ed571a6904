"""Numba kernels behind feature matching: sparse cross-products and masked correlations of all feature pairs.

Scale: 16,384 x 16,384 pairs. The pair sums are never looped over in Python: activations are streamed in
chunks as sparse matrices, and a parallel numba kernel accumulates the sparse cross-product X^T Y straight
into a dense float64 matrix (Gustavson's row-by-row scheme with a dense output row). We use it rather than
``scipy.sparse`` matmul because scipy builds a sparse product in two passes and then has to be scattered
into the dense accumulator: at 1M positions x ~45 active features that measured ~8x slower here (and
``torch.sparse.mm`` slower still), which would miss the 60 s target. When a support guard is asked for,
a second variant also counts co-active positions per pair (int32) in the same pass. Token mode reduces the
sample to per token string means over firing positions first (sparse, vocab x features) and computes the
masked, centred sums row by row.
"""

from __future__ import annotations

import numpy as np

try:  # numba is a declared dependency; the import is guarded only to give a clear error if it is missing
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover
    numba = None


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
    def _gram_count_add_kernel(
        out_FG, count_FG, rows, x_indptr, x_pos, x_val, y_indptr, y_feat, y_val
    ):  # pragma: no cover
        """``_gram_add_kernel`` that also counts co-active positions: count[i, j] += #{p: x[p, i] y[p, j] != 0}."""
        for k in prange(rows.shape[0]):
            i = rows[k]
            for a in range(x_indptr[i], x_indptr[i + 1]):
                p = x_pos[a]
                v = np.float64(x_val[a])
                for b in range(y_indptr[p], y_indptr[p + 1]):
                    j = y_feat[b]
                    out_FG[i, j] += v * np.float64(y_val[b])
                    count_FG[i, j] += 1

    @njit(parallel=True, cache=True, nogil=True)
    def _cooccur_count_kernel(count_FG, rows, x_indptr, x_pos, y_indptr, y_feat):  # pragma: no cover
        """count[i, j] = #{rows where both x[:, i] and y[:, j] have an entry}; x as CSC, y as CSR."""
        for k in prange(rows.shape[0]):
            i = rows[k]
            for a in range(x_indptr[i], x_indptr[i + 1]):
                p = x_pos[a]
                for b in range(y_indptr[p], y_indptr[p + 1]):
                    count_FG[i, y_feat[b]] += 1

    @njit(parallel=True, cache=True, nogil=True)
    def _masked_corr_kernel(
        out_FG, tiles, row_offset, x_indptr, x_tok, x_val, y_indptr, y_feat, y_val, min_support, rtol
    ):  # pragma: no cover
        """Pearson r of every pair over the rows (token strings) where both have an entry (fired there).

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
    def _position_corr_kernel(out_FG, sxy_FG, n, mx, my, inv_x, inv_y, count_FG, min_support):  # pragma: no cover
        """r = (sxy / n - mx my) / (sd_x sd_y), clipped to [-1, 1]; NaN where a side has no variance or,
        when ``min_support > 0``, where the pair is co-active at fewer than ``min_support`` positions."""
        for i in prange(out_FG.shape[0]):
            for j in range(out_FG.shape[1]):
                if inv_x[i] > 0 and inv_y[j] > 0 and (min_support == 0 or count_FG[i, j] >= min_support):
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
