"""Figure 2's flow of persisting features (Sankey-style, matplotlib only), laid out from the model registry."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.registry import REGISTRY


def plot_feature_flow(
    summary: pd.DataFrame, ax=None, labels: dict[str, str] | None = None, layout=None,
    ceilings: dict[tuple[str, str], float] | None = None,
    share_intervals: dict[tuple[str, str], dict] | None = None,
):
    """Sankey-style flow of persisting features (Figure 2) from a ``match_all`` summary, matplotlib only.

    Each model is a bar; each parent -> child band is as thick as the number of matched (persisting) child
    features; bars are annotated with each model's live feature count and the share of its live features
    that persist into at least one child (``parent_persisting_any_share``). ``layout`` (``{model: (x, y)}``)
    defaults to ``REGISTRY.flow_layout`` of the models in the summary; ``labels`` to the registry's labels.
    ``ceilings`` (``{(parent, child): share}``): each band's share is annotated beside its seed ceiling. A model
    matched on several samples (one per pair) is drawn with the most features live on any of them.
    ``share_intervals`` (``{(parent, child): interval}``, ``core.intervals`` records): each share's 95% interval
    is printed beside it.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 5))
    labels = labels or REGISTRY.labels
    summary = summary.rename(columns={"parent_inactive_on_sample": "dead_parent", "child_inactive_on_sample": "dead_child"})
    live: dict[str, int] = {}
    for _, row in summary.iterrows():
        for side in ("parent", "child"):
            count = row[f"n_{side}"] - row[f"dead_{side}"]
            live[row[side]] = max(live.get(row[side], 0), count)
    layout = layout or REGISTRY.flow_layout([n for n in REGISTRY.names if n in live])
    scale = 0.30 / max(live.values())  # a bar's height is its live feature count
    bar_w = 0.06
    outgoing_offset = {name: 0.0 for name in live}
    incoming_offset = {name: 0.0 for name in live}
    colours = plt.get_cmap("tab10")
    for k, (_, row) in enumerate(summary.iterrows()):
        p, c = row["parent"], row["child"]
        if p not in layout or c not in layout:
            continue
        (xp, yp), (xc, yc) = layout[p], layout[c]
        thick = row["persisting"] * scale
        y0_top = yp + live[p] * scale / 2 - outgoing_offset[p]
        y1_top = yc + live[c] * scale / 2 - incoming_offset[c]
        outgoing_offset[p] += thick
        incoming_offset[c] += thick
        xs = np.linspace(xp + bar_w / 2, xc - bar_w / 2, 100)
        s = (1 - np.cos(np.pi * (xs - xs[0]) / (xs[-1] - xs[0]))) / 2  # smooth S-shaped band
        top = y0_top + (y1_top - y0_top) * s
        ax.fill_between(xs, top - thick, top, color=colours(k), alpha=0.5, lw=0)
        note = f"{int(row['persisting'])} ({row['persisting_share']:.1%}"
        interval = (share_intervals or {}).get((p, c))
        if interval:
            note += f" [{interval['low']:.1%}, {interval['high']:.1%}]"
        note += " of child"
        ceiling = (ceilings or {}).get((p, c))
        note += f"; ceiling {ceiling:.1%})" if ceiling is not None and np.isfinite(ceiling) else ")"
        ax.text(xs[50], top[50] + 0.015, note, ha="center", va="bottom", fontsize=8, color=colours(k))
    parent_share = summary.groupby("parent")["parent_persisting_any_share"].first()
    for name, (x, y) in layout.items():
        if name not in live:
            continue
        h = live[name] * scale
        ax.add_patch(Rectangle((x - bar_w / 2, y - h / 2), bar_w, h, color="0.3"))
        note = f"{labels.get(name, name)}\n{int(live[name])} live features"
        if name in parent_share:
            note += f"\n{parent_share[name]:.1%} persist"
        ax.text(x, y - h / 2 - 0.02, note, ha="center", va="top", fontsize=9)
    ax.set_xlim(-0.3, 2.3)
    ax.set_ylim(-0.15, 1.1)
    ax.axis("off")
    return ax
