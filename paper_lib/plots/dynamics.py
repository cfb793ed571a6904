"""Notebook 08's figures: learning, forgetting and feature survival along each fine-tune; accuracy and both parents'
feature survival along each merge method's path. Every band is the saved 95% interval."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.ticker import NullFormatter

from ..core.registry import DOMAINS
from .intervals import interval_bounds, plot_band, plot_interval_span

DOMAIN_COLORS = {"babylm": "#4c72b0", "python": "#dd8452", "lua": "#55a868", "tinystories": "#c44e52"}
METHOD_COLORS = {"linear": "#4c72b0", "slerp": "#c44e52", "task_arithmetic": "#55a868", "ties": "#8172b3"}


def _x(rows: pd.DataFrame) -> np.ndarray:
    """Tokens seen, with the parent (0 tokens) drawn half a doubling left of the first snapshot on the log axis."""
    tokens = rows["tokens"].to_numpy(dtype=np.float64)
    positive = tokens[tokens > 0]
    return np.where(tokens > 0, tokens, positive.min() / 2 if len(positive) else 1.0)


def trajectory_figure(table: pd.DataFrame, labels: Mapping[str, str], threshold: float):
    """One column per fine-tune: validation loss on every domain (top), and the parent SAE's survival share and
    explained variance on the checkpoint (bottom), against the tokens of fine-tuning (log scale)."""
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(table["model"]))
    fig, axes = plt.subplots(2, len(names), figsize=(5.2 * len(names), 6.4), sharex="col", squeeze=False)
    for column, name in enumerate(names):
        rows = table[table["model"] == name].sort_values("fraction")
        x = _x(rows)
        top, bottom = axes[0, column], axes[1, column]
        for domain in DOMAINS:
            low, high = interval_bounds(rows[f"{domain}_loss_interval"])
            plot_band(top, x, rows[f"{domain}_loss"], low, high, color=DOMAIN_COLORS[domain], label=domain)
        top.set(xscale="log", ylabel="validation loss", title=f"{labels[name]}: learning and forgetting")
        low, high = interval_bounds(rows["survival_share_interval"])
        plot_band(bottom, x, rows["survival_share"], low, high, color="black",
                  label=f"parent features with drift r ≥ {threshold}")
        low, high = interval_bounds(rows["parent_sae_explained_variance_interval"])
        plot_band(bottom, x, rows["parent_sae_explained_variance"], low, high, color="#937860", ls="--",
                  label="parent SAE: variance explained")
        bottom.set(xscale="log", ylim=(0, 1.02), xlabel="fine-tuning tokens (the parent at the left edge)",
                   ylabel="share")
        for ax in (top, bottom):  # decades only: the minor ticks' labels collide on a short log axis
            ax.xaxis.set_minor_formatter(NullFormatter())
        top.legend(fontsize=7, loc="best", framealpha=0.9)
        bottom.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def methods_figure(path: pd.DataFrame, summary: pd.DataFrame, labels: Mapping[str, str], parents: tuple[str, str],
                   domains: tuple[str, str]):
    """One column per merge method: accuracy on both parents' domains (top) and both parents' feature survival
    (bottom) along the mixing parameter, the accuracy crossing (and its interval) marked in both."""
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(path["method"]))
    fig, axes = plt.subplots(2, len(methods), figsize=(3.6 * len(methods), 5.6), sharex=True, sharey="row",
                             squeeze=False)
    colors = (DOMAIN_COLORS.get(domains[0], "#55a868"), DOMAIN_COLORS.get(domains[1], "#c44e52"))
    for column, method in enumerate(methods):
        rows = path[path["method"] == method].sort_values("t")
        top, bottom = axes[0, column], axes[1, column]
        for domain, color in zip(domains, colors):
            measured = rows.dropna(subset=[f"{domain}_accuracy"])  # SLERP's extra points carry drift only
            plot_band(top, measured["t"], measured[f"{domain}_accuracy"], color=color, label=f"accuracy on {domain}")
        for parent, color in zip(parents, colors):
            low, high = interval_bounds(rows[f"{parent}_survival_interval"])
            plot_band(bottom, rows["t"], rows[f"{parent}_survival"], low, high, color=color,
                      label=f"{labels[parent]} SAE features surviving")
        crossing = summary.set_index("method").loc[method, "crossing_t_interval"]
        for ax in (top, bottom):
            plot_interval_span(ax, crossing)
            if crossing:
                ax.axvline(crossing["value"], color="black", lw=0.8, ls=":")
        top.set(title=method.replace("_", " "), ylabel="accuracy" if column == 0 else None)
        bottom.set(xlabel=f"t (0: {labels[parents[0]]}, 1: {labels[parents[1]]})",
                   ylabel="share surviving" if column == 0 else None, ylim=(0, 1.02))
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].legend(fontsize=7, loc="center left")
    fig.tight_layout()
    return fig
