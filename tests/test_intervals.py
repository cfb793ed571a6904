"""Confidence intervals (``paper_lib.core.intervals``): coverage on simulated data, and the records' rules."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from paper_lib.core import intervals as iv

# ---------------------------------------------------------------- coverage on simulated data
#
# Each case draws REPLICATES data sets with a known true value, makes the helper's 95% interval on each and counts
# how often it covers the truth. The count is binomial, so the empirical coverage of an honest 95% method lies
# within 3 standard errors, sqrt(0.95 * 0.05 / R), of 0.95 with probability 99.7%: a wider miss is a method that
# under- (or over-) covers, not bad luck. The percentile bootstrap under-covers at small n (its spread is the
# plug-in one, without the t correction, and skewness shifts it): with 2,000 replicates, a mean of 100 normal values
# is covered 94.8% of the time, of 100 exponential values only 92.7%, of 200 exponential values 94.5%. The sample
# sizes below are chosen so that this bias stays well inside the tolerance, hence 200 for the skewed mean (the
# tolerance is never widened to make a case pass). Fewer resamples than the default keep the file fast; they add a
# little noise to each interval's ends, not a bias in coverage.

NOMINAL = 0.95
REPLICATES = 300  # 3 SE = 0.038
RESAMPLES = 999


def _check_coverage(name: str, hits: int, replicates: int) -> float:
    coverage = hits / replicates
    tolerance = 3 * math.sqrt(NOMINAL * (1 - NOMINAL) / replicates)
    print(f"coverage {name}: {coverage:.3f} over {replicates} replicates (95% nominal, tolerance +-{tolerance:.3f})")
    assert abs(coverage - NOMINAL) <= tolerance, (
        f"{name}: the 95% interval covered the true value in {coverage:.1%} of {replicates} simulated data sets; "
        f"an honest method lands within {tolerance:.3f} of 0.95"
    )
    return coverage


def _coverage(name: str, make, truth: float, seed: int, replicates: int = REPLICATES) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(replicates):
        record = make(rng)
        hits += record["low"] <= truth <= record["high"]
    return _check_coverage(name, hits, replicates)


@pytest.mark.parametrize(
    "name, draw, truth",
    [
        ("mean, normal, n=100", lambda g: g.normal(1.0, 2.0, 100), 1.0),
        ("mean, exponential (skewed), n=200", lambda g: g.exponential(1.0, 200), 1.0),
    ],
)
def test_mean_interval_covers_at_the_nominal_rate(name, draw, truth):
    _coverage(name, lambda g: iv.mean_interval(draw(g), n_resamples=RESAMPLES), truth, seed=1)


@pytest.mark.parametrize("p", [0.3, 0.01])
def test_share_interval_covers_at_the_nominal_rate(p):
    # p = 0.01 with n = 500 gives about 5 true flags and, 0.7% of the time, none (the Wilson branch).
    _coverage(f"share, Bernoulli p={p}, n=500", lambda g: iv.share_interval(g.random(500) < p, n_resamples=RESAMPLES),
              p, seed=2)


def test_ratio_interval_covers_at_the_nominal_rate():
    # 100 blocks of 10 to 200 tokens, each with its own rate (Beta(3, 7), mean 0.3): tokens within a block are
    # not independent, so only a resampling of whole blocks covers; the pooled ratio estimates E[p] = 0.3.
    def make(g):
        tokens = g.integers(10, 201, 100)
        correct = g.binomial(tokens, g.beta(3, 7, 100))
        return iv.ratio_interval(correct, tokens, n_resamples=RESAMPLES)

    _coverage("ratio, 100 blocks of 10-200 tokens", make, 0.3, seed=3)


def test_difference_interval_covers_at_the_nominal_rate():
    def make(g):
        return iv.difference_interval(g.normal(1.5, 1.0, 100), g.exponential(1.0, 120), n_resamples=RESAMPLES)

    _coverage("difference of means, n=100 and 120", make, 0.5, seed=4)


def _pearson(x, y):
    x = x.ravel() - x.mean()
    y = y.ravel() - y.mean()
    return float(x @ y / math.sqrt((x @ x) * (y @ y)))


def test_paired_bootstrap_over_blocks_covers_at_the_nominal_rate():
    # Two [blocks, positions] arrays sharing a block effect and a position effect: the pooled Pearson r tends to
    # (1 + 1) / (1 + 1 + 1) = 2/3. Positions of a block are correlated, so the blocks must be resampled whole and
    # both arrays together (a bootstrap over single positions covers about 0.88 here). A statistic called once per
    # resample is slow, hence fewer replicates and resamples (3 SE = 0.046).
    def make(g, blocks=100, context=8):
        shared = g.normal(0, 1, (blocks, 1)) + g.normal(0, 1, (blocks, context))
        x = shared + g.normal(0, 1, (blocks, context))
        y = shared + g.normal(0, 1, (blocks, context))
        return iv.bootstrap((x, y), _pearson, unit="blocks", paired=True, n_resamples=499)

    _coverage("paired Pearson r over 100 blocks of 8 positions", make, 2 / 3, seed=5, replicates=200)


# ---------------------------------------------------------------- the records' rules


def test_invalid_input_raises_a_clear_error():
    with pytest.raises(ValueError, match="NaN"):
        iv.mean_interval([1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match="infinite"):
        iv.bootstrap(np.array([1.0, np.inf]), lambda x: x.mean(), unit="blocks")
    with pytest.raises(ValueError, match="no features"):
        iv.mean_interval([])
    with pytest.raises(ValueError, match="no blocks"):
        iv.share_interval([], unit="blocks")
    with pytest.raises(ValueError, match="no features"):
        iv.difference_interval([1.0, 2.0], [])
    with pytest.raises(ValueError, match="3 numerators against 2"):
        iv.ratio_interval([1, 2, 3], [4, 5])
    with pytest.raises(ValueError, match="positive denominators"):
        iv.ratio_interval([1, 2], [0, 0])
    with pytest.raises(ValueError, match="one-dimensional"):
        iv.bootstrap((np.ones((4, 3)), np.ones((4, 3))), lambda x, y, axis=-1: x.mean(axis), unit="blocks",
                     vectorized=True)
    with pytest.raises(ValueError, match="finite"):
        iv.interval(np.nan, 0, 1, "m", 3)


def test_an_interval_always_contains_its_value():
    rng = np.random.default_rng(6)
    for _ in range(20):
        data = rng.exponential(1.0, int(rng.integers(2, 30)))
        for record in (iv.mean_interval(data, n_resamples=199), iv.share_interval(data > 1, n_resamples=199),
                       iv.ratio_interval(data, data + 1, n_resamples=199)):
            assert record["low"] <= record["value"] <= record["high"]
    # Every resample has fewer distinct values than the data: the whole bootstrap distribution lies below the
    # value, and the interval is stretched to reach it.
    data = np.arange(50.0)
    record = iv.bootstrap(data, lambda x: len(np.unique(x)), unit="features", n_resamples=199)
    assert record["value"] == 50 and record["high"] == 50 and record["low"] < 40


def test_records_are_json_ready_and_name_their_method():
    record = iv.mean_interval(np.arange(10.0), unit="blocks", n_resamples=199)
    assert set(record) == {"value", "low", "high", "confidence", "method", "n"}
    assert all(type(record[k]) is float for k in ("value", "low", "high")) and record["n"] == 10
    assert record["method"] == "bootstrap over 10 blocks (percentile, 199 resamples)"
    assert record["confidence"] == NOMINAL
    single = iv.mean_interval([3.0])
    assert single["low"] == single["high"] == single["value"] == 3.0 and "no interval" in single["method"]


def test_a_share_whose_flags_all_agree_gets_a_wilson_interval():
    none = iv.share_interval(np.zeros(40, bool))
    low, high = iv.wilson_interval(0, 40)
    assert none["value"] == 0 and none["low"] == 0 and none["high"] == pytest.approx(high) and high > 0.05
    assert "Wilson" in none["method"] and "all false" in none["method"]
    every = iv.share_interval(np.ones(40, bool))
    assert every["high"] == 1 and every["low"] < 0.95 and "all true" in every["method"]
    # Wilson's interval by its formula: centre (p + z^2/2n) / (1 + z^2/n) for 3 of 20
    z = 1.959964
    centre = (3 / 20 + z * z / 40) / (1 + z * z / 20)
    low, high = iv.wilson_interval(3, 20)
    assert (low + high) / 2 == pytest.approx(centre, abs=1e-6)


def test_a_statistic_undefined_on_some_resamples_is_reported():
    # One nonzero value among 30: a resample misses it with probability (29/30)^30 = 36%, and 1 / sum is undefined.
    data = np.zeros(30)
    data[7] = 2.0

    def inverse_sum(x):
        return 1.0 / x.sum() if x.sum() else float("nan")

    record = iv.bootstrap(data, inverse_sum, unit="blocks", n_resamples=2000)
    share = float(re.search(r"undefined on ([0-9.]+)% of resamples", record["method"]).group(1)) / 100
    assert share == pytest.approx((29 / 30) ** 30, abs=0.04)
    assert math.isfinite(record["low"]) and math.isfinite(record["high"]) and record["value"] == 0.5
    with pytest.raises(ValueError, match="undefined"):
        iv.bootstrap(np.zeros(5), inverse_sum, unit="blocks", n_resamples=50)


def test_the_statistic_sees_whole_blocks_of_paired_arrays():
    # [blocks, positions] arrays: every resample is a choice of whole blocks, the same ones in both arrays.
    x = np.repeat(np.arange(12.0)[:, None], 5, axis=1)  # block b holds the value b at every position
    seen = []

    def statistic(a, b):
        seen.append((a.shape, b.shape))
        assert np.all(a == a[:, :1]) and np.array_equal(a, b)  # whole blocks, resampled together
        return float(a.mean())

    record = iv.bootstrap((x, x.copy()), statistic, unit="blocks", paired=True, n_resamples=99)
    assert set(seen) == {((12, 5), (12, 5))} and len(seen) == 100  # the point value and 99 resamples
    assert record["n"] == 12 and record["low"] < record["value"] < record["high"]
    with pytest.raises(ValueError):
        iv.bootstrap((x, x[:6]), statistic, unit="blocks", paired=True, n_resamples=99)
    # Unpaired: each array resampled on its own, of its own length.
    record = iv.bootstrap((x, x[:6]), lambda a, b: float(a.mean() - b.mean()), unit="blocks", paired=False,
                          n_resamples=99)
    assert "12 + 6 blocks" in record["method"]


def test_intervals_are_deterministic():
    data = np.random.default_rng(7).normal(size=80)
    assert iv.mean_interval(data) == iv.mean_interval(data.copy())
    pairs = (data.reshape(20, 4), data[::-1].reshape(20, 4))
    assert iv.bootstrap(pairs, _pearson, unit="blocks", n_resamples=200) == iv.bootstrap(
        pairs, _pearson, unit="blocks", n_resamples=200)
    assert iv.mean_interval(data, seed=1) != iv.mean_interval(data)


def test_position_sign_and_formatted():
    record = iv.interval(0.5, 0.4, 0.6, "m", 30)
    assert [iv.position(r, record) for r in (0.3, 0.4, 0.55, 0.6, 0.7)] == ["below", "inside", "inside", "inside",
                                                                              "above"]
    assert iv.sign(record) == 1 and iv.sign(iv.interval(-0.5, -0.6, -0.4, "m", 30)) == -1
    assert iv.sign(iv.interval(0.1, -0.1, 0.3, "m", 30)) == 0 and iv.sign(record, zero=0.45) == 0
    assert iv.formatted(record) == "0.500 [0.400, 0.600]"
    assert iv.formatted(record, lambda x: f"{x:.0%}") == "50% [40%, 60%]"
    assert iv.formatted(None) == "n/a" and iv.formatted(0.25) == "0.250"
    assert iv.formatted(iv.mean_interval([2.0])) == "2.000"  # one unit: no interval to show
    assert iv.is_interval(record) and not iv.is_interval({"value": 1})


def test_seed_range_and_features_needed():
    spread = iv.seed_range([0.2, 0.5, 0.3])
    assert spread["value"] == pytest.approx(1 / 3) and (spread["low"], spread["high"]) == (0.2, 0.5)
    assert spread["confidence"] is None and spread["n"] == 3 and "range over 3 SAE seeds" in spread["method"]
    n = iv.features_needed(1.0, 1.0, 0.2)

    def half_width(k):
        return 1.959964 * math.sqrt(2 / k)

    assert half_width(n) < 0.2 <= half_width(n - 1)
    assert iv.features_needed(1.0, 1.0, 0.0) is None
