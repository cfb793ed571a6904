"""Notebook 11's figures: each pair's relative decoder norms, with Minder et al.'s class bands shaded, and the latents
where the crosscoder and correlation matching disagree, drawn by the case studies' token renderer."""

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


def disagreement_figure(examples: list[Mapping], labels: Mapping[str, str], parent: str, child: str,
                        width: int = 60):
    """``compare.disagreement_examples`` on text: per example three rows of token highlights (``highlight_axes``,
    the case studies' renderer) on the same block: the crosscoder latent, its best partner in the parent's SAE and
    in the child's, each shaded by its own maximum (in its title, with the partner's r)."""
    import matplotlib.pyplot as plt

    from .highlight import highlight_axes, line_count

    if not examples:
        fig, ax = plt.subplots(figsize=(6, 0.8))
        ax.text(0.0, 0.5, "no latent where the crosscoder and correlation matching disagree", va="center")
        ax.set_axis_off()
        return fig
    lines = [line_count(e["tokens"], width) for e in examples]
    heights = [h * 0.17 + 0.4 for h in lines for _ in range(3)]
    fig, axes = plt.subplots(len(heights), 1, figsize=(width * 0.09, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    names = {"parent": labels.get(parent, parent), "child": labels.get(child, child)}
    for i, example in enumerate(examples):
        cls, verdict = example["class"].replace("_", "-"), example["verdict"]
        titles = {"latent": f"latent {example['latent']} ({cls}, relative norm {example['relative_norm']:.2f}; "
                            f"correlation matching: {verdict})"}
        for side in ("parent", "child"):
            feature = example[f"{side}_best"]
            titles[side] = (f"{names[side]} SAE #{feature} (r = {example[f'{side}_r']:.2f})" if feature >= 0
                            else f"{names[side]} SAE: no correlated feature")
        for j, key in enumerate(("latent", "parent", "child")):
            ax = axes[3 * i + j][0]
            acts = np.asarray(example["acts"][key], dtype=np.float64)
            highlight_axes(ax, example["tokens"], acts, width=width)
            ax.set_ylim(lines[i], 0)
            ax.set_title(f"{titles[key]} · max {np.max(acts, initial=0.0):.2f}", fontsize=8, loc="left")
    fig.tight_layout()
    return fig
