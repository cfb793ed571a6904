"""Drawing 95% intervals (``core.intervals`` records): error bars on bar charts, shaded bands around curves, and
a shaded span on an axis for an interval of a position (where two curves cross).

The figures read intervals from the same tables that are saved beside them, either as ``{metric}_low`` /
``{metric}_high`` columns or as interval records; a number without an interval (the paper's own, say) is drawn
without one rather than with a made-up width.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..core.intervals import is_interval


def interval_bounds(records: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` arrays of a sequence of interval records; NaN where a record is missing (None, NaN)."""
    low = [r["low"] if is_interval(r) else np.nan for r in records]
    high = [r["high"] if is_interval(r) else np.nan for r in records]
    return np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)


def plot_interval_bars(
    table: pd.DataFrame,
    value: str,
    x: str,
    hue: str,
    ax=None,
    order: Sequence | None = None,
    hue_order: Sequence | None = None,
    colors: dict | None = None,
    annotate: str | None = "{:.3f}",
):
    """Grouped bars of ``table[value]`` (one group per ``x``, one bar per ``hue``) with error bars from the
    ``{value}_low`` and ``{value}_high`` columns (the 95% interval), each bar annotated with its value."""
    import matplotlib.pyplot as plt

    missing = [c for c in (value, f"{value}_low", f"{value}_high", x, hue) if c not in table]
    if missing:
        raise KeyError(f"plot_interval_bars needs the columns {', '.join(missing)}; model_table writes them")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    order = list(order if order is not None else dict.fromkeys(table[x]))
    hue_order = list(hue_order if hue_order is not None else dict.fromkeys(table[hue]))
    width = 0.8 / len(hue_order)
    positions = np.arange(len(order))
    for i, level in enumerate(hue_order):
        rows = table[table[hue] == level].set_index(x).reindex(order)
        centre = rows[value].to_numpy(dtype=np.float64)
        below = centre - rows[f"{value}_low"].to_numpy(dtype=np.float64)
        above = rows[f"{value}_high"].to_numpy(dtype=np.float64) - centre
        where = positions - 0.4 + width * (i + 0.5)
        ax.bar(where, centre, width, yerr=np.vstack([below, above]), capsize=3, label=str(level),
               color=(colors or {}).get(level), error_kw={"elinewidth": 1, "ecolor": "black"})
        if annotate:  # above the error bar, where the label cannot hide it
            for x_at, v, top in zip(where, centre, centre + above):
                if np.isfinite(v):
                    ax.annotate(annotate.format(v), (x_at, top if np.isfinite(top) else v), xytext=(0, 2),
                                textcoords="offset points", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(positions, [str(o) for o in order])
    ax.set(xlabel=x, ylabel=value)
    tops = table[f"{value}_high"].to_numpy(dtype=np.float64)
    if np.isfinite(tops).any():  # headroom for the labels and a legend above the tallest bar
        ax.set_ylim(top=max(ax.get_ylim()[1], 1.2 * np.nanmax(tops)))
    return ax


def plot_band(ax, t, value, low=None, high=None, color=None, label: str | None = None, alpha: float = 0.2,
              **line_kwargs):
    """A curve of ``value`` along ``t`` with its interval shaded where ``low``/``high`` are known (finite)."""
    t = np.asarray(t, dtype=np.float64)
    (line,) = ax.plot(t, value, color=color, label=label, **{"marker": "o", "ms": 3, **line_kwargs})
    if low is not None and high is not None:
        low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        known = np.isfinite(low) & np.isfinite(high)
        if known.any():
            ax.fill_between(t, low, high, where=known, color=line.get_color(), alpha=alpha, lw=0)
    return line


def plot_interval_span(ax, record, color: str = "black", alpha: float = 0.12, label: str | None = None):
    """A shaded vertical span from ``record["low"]`` to ``record["high"]`` (an interval of a position on the x
    axis, such as where two curves cross); nothing when there is no interval (None)."""
    if not is_interval(record):
        return None
    return ax.axvspan(record["low"], record["high"], color=color, alpha=alpha, lw=0, label=label)
