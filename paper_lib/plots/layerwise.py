"""Notebook 09's figures: representation similarity against depth, per-layer feature persistence against depth
(raw, with each layer's seed ceiling and permutation floor, and as a fraction of the ceiling), and one concept's
feature token by token at every layer. Every band is the saved 95% interval."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from .dynamics import DOMAIN_COLORS
from .highlight import highlight_axes, line_count
from .intervals import interval_bounds, plot_band

CHILD_STYLES = ("-", "--", ":", "-.")
CHILD_COLORS = ("#55a868", "#c44e52", "#8172b3", "#937860")


def _depth_ticks(ax, depths) -> None:
    depths = sorted(set(int(d) for d in depths))
    ax.set_xticks(depths)
    ax.set_xticklabels(["embed" if d == 0 else str(d) for d in depths])


def similarity_figure(table: pd.DataFrame, labels: Mapping[str, str]):
    """Mean token cosine (left) and linear CKA (right) between the base and each fine-tune against depth (0: the
    token embedding, d: after layer d): one line per fine-tune (line style) and validation domain (colour)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.0), sharey=False)
    children = list(dict.fromkeys(table["child"]))
    for ax, measure, title in ((axes[0], "cosine", "mean token cosine"), (axes[1], "cka", "linear CKA")):
        for style, child in zip(CHILD_STYLES, children):
            for domain in dict.fromkeys(table["domain"]):
                rows = table[(table["child"] == child) & (table["domain"] == domain)].sort_values("depth")
                low, high = interval_bounds(rows[f"{measure}_interval"])
                plot_band(ax, rows["depth"], rows[measure], low, high, color=DOMAIN_COLORS.get(domain, "grey"), ls=style,
                          label=f"{labels.get(child, child)} · {domain}")
        _depth_ticks(ax, table["depth"])
        ax.set(xlabel="depth (layers applied)", ylabel=f"{title} with the base", title=title)
    axes[1].legend(fontsize=6.5, ncol=2, loc="lower left")
    fig.tight_layout()
    return fig


def persistence_figure(table: pd.DataFrame, labels: Mapping[str, str], threshold: float):
    """Left: the share of the base's live SAE features that a fine-tune's SAE at the same layer matches (r ≥
    threshold), the base's seed ceiling at that layer on the same sample (dash-dot) and the permutation floor
    (dotted), and the share
    matched at the same or the next layer (dashed). Right: the same-layer share as a fraction of the ceiling."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.0))
    left, right = axes
    children = list(dict.fromkeys(table["child"]))
    for color, child in zip(CHILD_COLORS, children):
        rows = table[table["child"] == child].sort_values("depth")
        label = labels.get(child, child)
        low, high = interval_bounds(rows["survival_interval"])
        plot_band(left, rows["depth"], rows["survival"], low, high, color=color, label=f"{label}: same layer")
        low, high = interval_bounds(rows["ceiling_interval"])
        plot_band(left, rows["depth"], rows["ceiling"], low, high, color=color, ls="-.", alpha=0.1,
                  label=f"{label}: base seed ceiling (its sample)")
        left.plot(rows["depth"], rows["floor_permuted"], color=color, ls=":", lw=1,
                  label=f"{label}: permutation floor")
        if "survival_same_or_next" in rows:
            nxt = rows.dropna(subset=["survival_same_or_next"])
            left.plot(nxt["depth"], nxt["survival_same_or_next"], color=color, ls="--", lw=1.2,
                      label=f"{label}: same or next layer")
        low, high = interval_bounds(rows["fraction_of_ceiling_interval"])
        plot_band(right, rows["depth"], rows["fraction_of_ceiling"], low, high, color=color, label=label)
    for ax in axes:
        _depth_ticks(ax, table["depth"])
        ax.set(xlabel="layer (SAE on the residual stream after it)")
    left.set(ylabel=f"share of the base's live features matched (r ≥ {threshold})", ylim=(0, 1.02),
             title="persistence per layer")
    right.set(ylabel="persistence / seed ceiling", title="as a fraction of the ceiling")
    right.axhline(1.0, color="grey", lw=0.8)
    left.legend(fontsize=6.5, loc="lower left")
    right.legend(fontsize=7)
    fig.tight_layout()
    return fig


def views_figure(views: Mapping[str, Any], labels: Mapping[str, str], width: int = 44):
    """One row per layer, one column per model: the base's feature for the concept at that layer and its best
    match in each fine-tune, shading the snippet's tokens (each panel scaled by its own maximum, shown in its
    title; a fine-tune with no defined match is left blank)."""
    import matplotlib.pyplot as plt

    rows = views["layers"]
    models = list(dict.fromkeys(m for row in rows for m in [*row["acts"], *row["matches"]]))
    n_lines = max(line_count(row["tokens"], width) for row in rows)
    fig, axes = plt.subplots(len(rows), len(models), figsize=(width * 0.085 * len(models) + 0.3,
                                                               len(rows) * (n_lines * 0.16 + 0.45)), squeeze=False)
    for r, row in enumerate(rows):
        for c, model in enumerate(models):
            ax = axes[r][c]
            acts = row["acts"].get(model)
            if model in row["matches"]:
                match = row["matches"][model]
                r_text = f"r = {match['r']:.2f}" if match["r"] is not None else "no match"
                what = f"#{match['feature']} ({r_text})"
            else:
                what = f"#{row['feature']} ({row['score_name']} {row['score']:.2f})"
            if acts is None:
                ax.set_axis_off()
                ax.set_title(f"layer {row['depth']} · {labels.get(model, model)}: no match", fontsize=8, loc="left")
                continue
            vmax = float(np.max(np.asarray(acts), initial=0.0))
            highlight_axes(ax, row["tokens"], acts, vmax=vmax if vmax > 0 else None, width=width)
            ax.set_ylim(n_lines, 0)
            ax.set_title(f"layer {row['depth']} · {labels.get(model, model)} {what} · max {vmax:.2f}", fontsize=7.5,
                         loc="left")
    fig.tight_layout()
    return fig
