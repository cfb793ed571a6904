"""Notebook 11's figure: each pair's relative decoder norms, with Minder et al.'s class bands shaded."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

BAND_COLORS = {"parent_only": "#4c72b0", "shared": "#55a868", "child_only": "#c44e52"}


def relative_norm_figure(histogram: pd.DataFrame, bands: Mapping[str, tuple[float, float]],
                         labels: Mapping[str, str]):
    """One panel per pair: live latents by relative decoder norm (0: the parent's only, 1: the child's only).

    ``histogram``: long table with ``parent``, ``child``, ``bin_left``, ``bin_right``, ``count``."""
    import matplotlib.pyplot as plt

    pairs = list(dict.fromkeys(zip(histogram["parent"], histogram["child"])))
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 3.2), squeeze=False, sharey=True)
    for ax, (parent, child) in zip(axes[0], pairs):
        part = histogram[(histogram["parent"] == parent) & (histogram["child"] == child)]
        for name, (low, high) in bands.items():
            ax.axvspan(low, high, color=BAND_COLORS[name], alpha=0.12, lw=0, label=name.replace("_", "-"))
        widths = (part["bin_right"] - part["bin_left"]).to_numpy()
        ax.bar(part["bin_left"], part["count"], width=widths, align="edge", color="0.3")
        ax.set_yscale("symlog", linthresh=1)
        ax.set_xlim(0, 1)
        ax.set_title(f"{labels.get(parent, parent)} → {labels.get(child, child)}")
        ax.set_xlabel("relative decoder norm (child)")
    axes[0][0].set_ylabel("live latents")
    axes[0][-1].legend(loc="upper right", fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def norm_histogram(relative: np.ndarray, live: np.ndarray, parent: str, child: str, bins: int = 40) -> pd.DataFrame:
    """The figure's rows for one pair: live latents counted in ``bins`` equal bins of [0, 1]."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts, _ = np.histogram(np.asarray(relative)[np.asarray(live, bool)], bins=edges)
    return pd.DataFrame({"parent": parent, "child": child, "bin_left": edges[:-1], "bin_right": edges[1:],
                         "count": counts})
