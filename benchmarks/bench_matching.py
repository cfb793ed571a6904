"""Benchmark: all 16,384 x 16,384 feature pairs over 1,000,000 token positions (target: < 60 s, position mode).

Synthetic SAE-like activations: per position a Poisson(L0) number of active features drawn from a
heavy-tailed (Zipf-like) frequency distribution, exponential nonnegative values. The child SAE shares part
of the parent's features (permuted ids, rescaled, with dropped and extra activations), so real matches exist.
Data generation is not timed; the timed part is streaming every chunk through ``CorrelationAccumulator``,
``finalize`` and ``classify`` (best matches, pairs >= threshold). Writes the numbers with
``record_benchmark`` (profile "benchmark" by default) and prints them.

    python benchmarks/bench_matching.py                       # paper scale, both modes
    python benchmarks/bench_matching.py --positions 100000 --modes position
    python benchmarks/bench_matching.py --features 4096 --positions 200000 --modes position --track-support
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np
import scipy.sparse as sp

from paper_lib.core.artifacts import record_benchmark
from paper_lib.matching import CorrelationAccumulator, classify


def synthetic_chunks(n_positions, n_features, l0, chunk, vocab, seed=0):
    """Yield (parent CSR, child CSR, token ids) chunks of SAE-like activations."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(n_features)
    p = 1.0 / (ranks + 20.0) ** 1.1  # heavy-tailed feature frequencies
    p /= p.sum()
    parent_ids = rng.permutation(n_features)  # frequency rank -> feature id
    child_perm = rng.permutation(n_features)  # parent feature -> child feature it "becomes"
    token_p = 1.0 / (np.arange(vocab) + 5.0)  # Zipfian token frequencies
    token_p /= token_p.sum()
    for start in range(0, n_positions, chunk):
        n = min(chunk, n_positions - start)
        k = rng.poisson(l0, n)
        indptr = np.r_[0, np.cumsum(k)]
        idx = parent_ids[rng.choice(n_features, size=indptr[-1], p=p)]
        vals = rng.exponential(1.0, indptr[-1]).astype(np.float32)
        parent = sp.csr_matrix((vals, idx, indptr), shape=(n, n_features))
        parent.sum_duplicates()
        # Child: 70% of the parent's activations carried over (permuted ids, noisy scale) + fresh ones.
        coo = parent.tocoo()
        keep = rng.random(coo.nnz) < 0.7
        extra_n = int(coo.nnz * 0.3)
        rows = np.r_[coo.row[keep], rng.integers(0, n, extra_n)]
        cols = np.r_[child_perm[coo.col[keep]], parent_ids[rng.choice(n_features, size=extra_n, p=p)]]
        cvals = np.r_[coo.data[keep] * rng.uniform(0.8, 1.2, keep.sum()), rng.exponential(1.0, extra_n)]
        child = sp.csr_matrix((cvals.astype(np.float32), (rows, cols)), shape=(n, n_features))
        child.sum_duplicates()
        tokens = rng.choice(vocab, size=n, p=token_p)
        yield parent, child, tokens


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel on a tiny case, so timings exclude compilation."""
    for mode in ("position", "token"):
        for parent, child, tokens in synthetic_chunks(500, 64, 5, 500, 50, seed=1):
            acc = CorrelationAccumulator(64, 64, mode, vocab_size=50)
            acc.update(parent, child, tokens)
            classify(acc.finalize(), acc.dead_parent, acc.dead_child, 0.8)


def run(mode, n_positions, n_features, l0, chunk, vocab, threshold=0.8, min_support=None, track_support=False):
    acc = CorrelationAccumulator(
        n_features, n_features, mode, vocab_size=vocab, min_support=min_support, track_support=track_support
    )
    update_s, update_cpu, nnz = 0.0, 0.0, 0
    for parent, child, tokens in synthetic_chunks(n_positions, n_features, l0, chunk, vocab):
        nnz += parent.nnz
        t0, c0 = time.perf_counter(), time.process_time()
        acc.update(parent, child, tokens)
        update_s += time.perf_counter() - t0
        update_cpu += time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    corr = acc.finalize()
    finalize_s, finalize_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    result = classify(corr, acc.dead_parent, acc.dead_child, threshold, mode=mode)
    classify_s, classify_cpu = time.perf_counter() - t0, time.process_time() - c0
    counts = result.counts()
    return {
        "mode": mode,
        "min_support": acc.min_support,
        "track_support": acc.track_support,
        "n_positions": n_positions,
        "n_features": n_features,
        "mean_l0": nnz / n_positions,
        "update_s": round(update_s, 2),
        "finalize_s": round(finalize_s, 2),
        "classify_s": round(classify_s, 2),
        "total_s": round(update_s + finalize_s + classify_s, 2),
        # CPU seconds summed over threads: on a machine shared with other jobs the wall time overstates the
        # cost; total_cpu_s / 2 is what 2 idle cores would need at best.
        "total_cpu_s": round(update_cpu + finalize_cpu + classify_cpu, 2),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "matched_pairs": counts["matched_pairs"],
        "persisting": counts["persisting"],
        "dead_child": counts["dead_child"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--positions", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=16_384)
    parser.add_argument("--l0", type=float, default=45.0, help="mean active features per position")
    parser.add_argument("--chunk", type=int, default=65_536, help="positions per streamed chunk")
    parser.add_argument("--vocab", type=int, default=32_000, help="token ids (token mode)")
    parser.add_argument("--modes", nargs="+", default=["position", "token"], choices=["position", "token"])
    parser.add_argument("--min-support", type=int, default=None, help="support guard (default: the mode's)")
    parser.add_argument("--track-support", action="store_true", help="count co-active positions (position mode)")
    parser.add_argument("--profile", default="benchmark", help="runs/<profile>/benchmarks.json gets the numbers")
    args = parser.parse_args()
    warm_up()
    for mode in args.modes:
        numbers = run(mode, args.positions, args.features, args.l0, args.chunk, args.vocab,
                      min_support=args.min_support, track_support=args.track_support)
        numbers["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
        numbers["target_s"] = 60 if mode == "position" else None
        support = "_support" if numbers["track_support"] and mode == "position" else ""
        name = f"matching_{mode}{support}_{args.features}x{args.features}_{args.positions}"
        path = record_benchmark(args.profile, name, numbers)
        print(f"{name}: {json.dumps(numbers)} -> {path}", flush=True)


if __name__ == "__main__":
    main()
