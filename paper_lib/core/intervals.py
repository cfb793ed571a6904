"""Uncertainty for every reported number: confidence intervals as small JSON-ready dicts.

An interval is ``{"value", "low", "high", "confidence", "method", "n"}``: the point value as reported, the
interval's ends, its nominal coverage, one sentence naming how it was made (the resampled unit, how many, the
bootstrap method), and the number of units it rests on. Figures, notebooks and ``figures/RESULTS.md`` read them
as they are.

The bootstrap is scipy's (``scipy.stats.bootstrap``, percentile method: it needs no jackknife, so it also works
for statistics such as a crossing point that are undefined on some resamples). Written here: only the parts
scipy has no function for, namely a Wilson score interval for a share whose units all agree (every resample of
all-zero flags is zero, so a bootstrap would claim certainty), the range over seeds, the sample size a
difference needs, and the comparison rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 2000
SEED = 0  # resampling seed: intervals are deterministic for the same data

Interval = dict[str, Any]


def interval(value, low, high, method: str, n: int, confidence: float = CONFIDENCE) -> Interval:
    """The interval record; ``low``/``high`` are clipped so that the interval contains ``value``."""
    value, low, high = float(value), float(low), float(high)
    if not all(math.isfinite(x) for x in (value, low, high)):
        raise ValueError(f"an interval needs finite numbers; got value {value}, low {low}, high {high} ({method}).")
    return {"value": value, "low": min(low, value), "high": max(high, value), "confidence": confidence,
            "method": method, "n": int(n)}


def _z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2))


def _check(values: np.ndarray, what: str) -> np.ndarray:
    if values.ndim == 0 or len(values) == 0:
        raise ValueError(f"no {what} to make an interval from.")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"the {what} hold NaN or infinite values; an interval over them would mean nothing.")
    return values


def bootstrap(
    data: Sequence[np.ndarray] | np.ndarray,
    statistic: Callable[..., float],
    *,
    unit: str,
    paired: bool = True,
    vectorized: bool = False,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> Interval:
    """A percentile-bootstrap interval for ``statistic(*data)``.

    ``data`` is one array or a sequence of arrays whose first axis is the resampled unit (features, blocks).
    ``paired``: the arrays share their units (resampled together, e.g. the same blocks at every sweep point);
    otherwise each is resampled on its own (two groups of features). ``statistic`` may return NaN on a resample
    (e.g. no crossing); such resamples are dropped and their share is named in the method.
    ``vectorized``: ``statistic(*arrays, axis=-1)`` works on a batch of resamples at once (fast; it must then be
    defined on every resample).
    """
    import warnings

    from scipy.stats import bootstrap as scipy_bootstrap

    arrays = [np.asarray(data)] if isinstance(data, np.ndarray) else [np.asarray(a) for a in data]
    for a in arrays:
        _check(a, unit)
    if vectorized and any(a.ndim > 1 for a in arrays):
        raise ValueError(f"a vectorized statistic takes one value per {unit} (one-dimensional arrays); give arrays "
                         "of several values per unit with vectorized=False.")
    if paired and len({len(a) for a in arrays}) > 1:
        raise ValueError(f"paired arrays must hold the same {unit}; got {', '.join(str(len(a)) for a in arrays)}.")
    value = float(statistic(*arrays, axis=-1) if vectorized else statistic(*arrays))
    n = len(arrays[0]) if paired else min(len(a) for a in arrays)
    sizes = " + ".join(f"{len(a):,}" for a in arrays) if not paired and len(arrays) > 1 else f"{n:,}"
    if n < 2:
        return interval(value, value, value, f"a single {unit[:-1] if unit.endswith('s') else unit}: no interval", n,
                        confidence)
    # scipy would apply a non-vectorized statistic to one-dimensional slices of each array, so it resamples the
    # units' indices instead, and the statistic sees the arrays whole, resampled along their first axis (an array
    # of blocks x positions stays one)
    kept: list[float] = []
    indices = [np.arange(n)] if paired else [np.arange(len(a)) for a in arrays]

    def stat(*resampled_indices):
        if paired:
            resampled = [a[np.asarray(resampled_indices[0], dtype=np.intp)] for a in arrays]
        else:
            resampled = [a[np.asarray(i, dtype=np.intp)] for a, i in zip(arrays, resampled_indices)]
        v = float(statistic(*resampled))
        kept.append(v)
        return v

    with warnings.catch_warnings():  # scipy warns of a degenerate distribution; handled below
        warnings.simplefilter("ignore")
        res = scipy_bootstrap(
            tuple(arrays) if vectorized else tuple(indices), statistic if vectorized else stat,
            n_resamples=n_resamples, confidence_level=confidence, method="percentile", paired=paired,
            vectorized=vectorized, rng=np.random.default_rng(seed),
        )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    undefined = sum(1 for v in kept if not math.isfinite(v))
    method = f"bootstrap over {sizes} {unit} (percentile, {n_resamples:,} resamples)"
    if undefined:
        finite = np.array([v for v in kept if math.isfinite(v)])
        if len(finite) < 2:
            raise ValueError(f"the statistic is undefined on {undefined:,} of {len(kept):,} resamples of the {unit}.")
        alpha = (1 - confidence) / 2
        low, high = (float(x) for x in np.quantile(finite, [alpha, 1 - alpha]))
        method += f"; undefined on {undefined / len(kept):.1%} of resamples, which are left out"
    if not (math.isfinite(low) and math.isfinite(high)):  # scipy returns NaN when every resample is equal
        low = high = value
    return interval(value, low, high, method, n, confidence)


def around(record: Interval, reported: float, what: str, cause: str = "", rtol: float = 1e-3) -> Interval:
    """``record`` put around the number reported beside it (e.g. SAELens's own L0, or a correlation from the
    matching), after checking that the interval's own statistic agrees with that number to ``rtol``: an interval
    recomputed from other data would not be an interval for it. ``cause`` says what a disagreement means."""
    if not np.isclose(record["value"], reported, rtol=rtol, atol=1e-6):
        raise ValueError(f"{what}: the interval's statistic gives {record['value']:.6g} where {reported:.6g} is "
                         f"reported{'; ' + cause if cause else ''}, so the interval would not be about the reported "
                         "number.")
    return interval(reported, record["low"], record["high"], record["method"], record["n"], record["confidence"])


def mean_interval(values, *, unit: str = "features", **kwargs) -> Interval:
    """The mean of ``values`` (one per unit) with a bootstrap interval over the units."""
    values = _check(np.asarray(values, dtype=np.float64).ravel(), unit)
    return bootstrap(values, _mean, unit=unit, vectorized=True, **kwargs)


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def ratio_interval(numerators, denominators, *, unit: str = "blocks", **kwargs) -> Interval:
    """``sum(numerators) / sum(denominators)`` with the units resampled together (e.g. correct predictions over
    tokens per block: the accuracy over all tokens, with blocks as the unit that is resampled)."""
    num = _check(np.asarray(numerators, dtype=np.float64).ravel(), unit)
    den = _check(np.asarray(denominators, dtype=np.float64).ravel(), unit)
    if len(num) != len(den) or np.any(den < 0) or den.sum() <= 0:
        raise ValueError(f"ratio over {unit}: {len(num)} numerators against {len(den)} positive denominators.")
    return bootstrap((num, den), lambda a, b, axis=-1: a.sum(axis) / b.sum(axis), unit=unit, vectorized=True,
                     **kwargs)


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson's score interval for a binomial share (exact enough at any n, and informative at 0 or n)."""
    if n <= 0:
        raise ValueError("a share needs at least one unit.")
    z = _z(confidence)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def share_interval(flags, *, unit: str = "features", **kwargs) -> Interval:
    """The share of true ``flags`` (one per unit), with a bootstrap interval over the units.

    When every flag agrees (a share of 0 or 1) every resample agrees too, and a bootstrap would report no
    uncertainty; Wilson's score interval is used instead and named in the method.
    """
    flags = _check(np.asarray(flags, dtype=bool).ravel(), unit)
    n, k = len(flags), int(flags.sum())
    if k in (0, n):
        confidence = kwargs.get("confidence", CONFIDENCE)
        low, high = wilson_interval(k, n, confidence)
        return interval(k / n, low, high, f"Wilson score interval over {n:,} {unit} (all {'true' if k else 'false'})",
                        n, confidence)
    return bootstrap(flags.astype(np.float64), _mean, unit=unit, vectorized=True, **kwargs)


def difference_interval(a, b, *, unit: str = "features", **kwargs) -> Interval:
    """``mean(a) - mean(b)`` for two independent groups, each resampled on its own."""
    a = _check(np.asarray(a, dtype=np.float64).ravel(), unit)
    b = _check(np.asarray(b, dtype=np.float64).ravel(), unit)
    return bootstrap((a, b), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis), unit=unit, paired=False,
                     vectorized=True, **kwargs)


def seed_range(values, *, unit: str = "SAE seeds", value: float | None = None) -> Interval:
    """The spread of one number over seeds: the range (lowest to highest) of ``values``, around ``value``
    (default: their mean). With two or three seeds a range is all that can honestly be said; it is not a
    confidence interval, and its ``confidence`` is ``None``."""
    values = _check(np.asarray(values, dtype=np.float64).ravel(), unit)
    point = float(values.mean()) if value is None else float(value)
    record = interval(point, values.min(), values.max(), f"range over {len(values)} {unit}", len(values))
    record["confidence"] = None
    return record


def features_needed(sd_a: float, sd_b: float, difference: float, confidence: float = CONFIDENCE) -> int | None:
    """Units per group for a difference of means to have an interval narrower than ``difference`` on each side
    (half-width ``z * sqrt(sd_a^2/n + sd_b^2/n) < |difference|``, the normal approximation); ``None`` when the
    difference is zero."""
    if not difference or not math.isfinite(difference):
        return None
    return max(2, math.ceil((_z(confidence) ** 2) * (sd_a**2 + sd_b**2) / difference**2))


# ---------------------------------------------------------------- reading intervals


def is_interval(record) -> bool:
    return isinstance(record, dict) and {"value", "low", "high", "method"} <= set(record)


def position(reference: float, record: Interval) -> str:
    """Where ``reference`` lies against the interval: ``"below"``, ``"inside"`` or ``"above"``."""
    if reference < record["low"]:
        return "below"
    if reference > record["high"]:
        return "above"
    return "inside"


def sign(record: Interval, zero: float = 0.0) -> int:
    """+1 when the whole interval lies above ``zero``, -1 when below, 0 when it contains it (cannot tell)."""
    return {"below": 1, "above": -1, "inside": 0}[position(zero, record)]


def formatted(record: Interval | None, fmt: Callable[[float], str] = lambda x: f"{x:.3f}") -> str:
    """``'0.412 [0.388, 0.437]'``; a bare value when the record has no interval."""
    if record is None:
        return "n/a"
    if not is_interval(record):
        return fmt(record)
    if record["low"] == record["high"] == record["value"] and record.get("n", 0) < 2:
        return fmt(record["value"])
    return f"{fmt(record['value'])} [{fmt(record['low'])}, {fmt(record['high'])}]"
