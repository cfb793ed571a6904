"""Notebook 10's figures: the CKA grid the layer pair is read from; next-token loss through the stitch; the large
model's SAE trained from the carried SAE and from scratch against FLOPs; probes and steering carried across.
Every error bar is the saved 95% interval."""

from __future__ import annotations

from typing import Any

import numpy as np


ROUTES = ("large", "small_to_large", "large_round_trip", "small", "large_to_small", "small_round_trip")
ROUTE_LABELS = {"large": "large", "small_to_large": "small → large", "large_round_trip": "large → small → large",
                "small": "small", "large_to_small": "large → small", "small_round_trip": "small → large → small"}
ARM_COLORS = {"scratch": "#4c72b0", "transfer": "#dd8452"}


def pairing_figure(pairing: dict[str, Any], labels: dict[str, str]):
    """Linear CKA between every depth of the small model (rows) and the large one (columns); the pair used boxed."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    grid = np.asarray(pairing["cka"])
    names = lambda n: ["embed", *[f"L{k}" for k in range(n - 1)]]  # noqa: E731
    fig, ax = plt.subplots(figsize=(1.2 * grid.shape[1] + 2.5, 0.9 * grid.shape[0] + 1.6))
    sns.heatmap(grid, annot=True, fmt=".2f", cmap="viridis", vmin=0, vmax=1, ax=ax,
                xticklabels=names(grid.shape[1]), yticklabels=names(grid.shape[0]), cbar_kws={"label": "linear CKA"})
    i, j = pairing["small_layer"] + 1, pairing["large_layer"] + 1
    ax.add_patch(plt.Rectangle((j, i), 1, 1, fill=False, ec="red", lw=2.5))
    ax.set(xlabel=f"{labels[pairing['large']]} (residual stream after)",
           ylabel=f"{labels[pairing['small']]} (residual stream after)", title="which layers correspond")
    fig.tight_layout()
    return fig


def transfer_figure(losses: dict[str, Any], flops: dict[str, Any]):
    """Left: next-token loss of each route on each domain. Right: held-out explained variance of the large model's
    SAE against training FLOPs, from the carried SAE (shifted right by the stitch's FLOPs) and from scratch."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.2))
    ax = axes[0]
    domains = list(losses)
    width = 0.8 / len(ROUTES)
    for k, route in enumerate(ROUTES):
        x = np.arange(len(domains)) + (k - (len(ROUTES) - 1) / 2) * width
        values = [losses[d][route]["loss"] for d in domains]
        low = [losses[d][route]["interval"]["low"] for d in domains]
        high = [losses[d][route]["interval"]["high"] for d in domains]
        ax.bar(x, values, width, label=ROUTE_LABELS[route], color=plt.cm.tab10(k))
        ax.errorbar(x, values, yerr=[np.subtract(values, low), np.subtract(high, values)], fmt="none", ecolor="black",
                    lw=0.8)
    ax.set_xticks(np.arange(len(domains)))
    ax.set_xticklabels(domains)
    lows = [losses[d][r]["interval"]["low"] for d in domains for r in ROUTES]
    ax.set_ylim(min(lows) * 0.97, None)
    ax.set(ylabel="next-token loss (nats)", title="loss through the stitch")
    ax.legend(fontsize=7, ncol=2)

    ax = axes[1]
    per_step = flops["flops"]["sae_step"]
    for arm, runs in flops["runs"].items():
        shift = flops["flops"]["stitch"] if arm == "transfer" else 0
        for k, curve in enumerate(runs):
            steps = np.array([row["step"] for row in curve])
            ax.plot(shift + steps * per_step, [row["explained_variance"] for row in curve], color=ARM_COLORS[arm],
                    alpha=0.8, lw=1.2, label=f"{arm}" if k == 0 else None)
    ax.axhline(flops["target_explained_variance"], color="black", ls=":", lw=1, label="target")
    ax.set(xlabel="training FLOPs (transfer: stitch included)", ylabel="held-out explained variance",
           title="the large model's SAE: carried start vs scratch")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def probes_figure(probes: dict[str, Any]):
    """Left: balanced accuracy of each probe (small model native, large model native, small model's carried down),
    chance dotted. Right: the shift in the large model's probability on the target domain's tokens from each
    steering vector (native, carried up, random), with the small model's own beside it."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.0))
    ax = axes[0]
    rows = probes["probes"]
    arms = (("small_native", "small, own probe"), ("large_native", "large, own probe"),
            ("large_transferred", "large, small's probe carried down"))
    for k, (key, label) in enumerate(arms):
        x = np.arange(len(rows)) + (k - 1) * 0.27
        ax.bar(x, [r[key] for r in rows], 0.27, label=label, color=plt.cm.tab10(k))
    for n, r in enumerate(rows):
        ax.hlines(r["chance"], n - 0.45, n + 0.45, color="black", ls=":", lw=1)
    ax.set_xticks(np.arange(len(rows)))
    ax.set_xticklabels([r["task"] for r in rows])
    ax.set(ylabel="balanced accuracy (held out)", ylim=(0, 1.05), title="probes")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)

    ax = axes[1]
    steer = probes["steering"]
    arms = (("large_native", "large, own vector"), ("large_transferred", "large, small's vector carried up"),
            ("large_random", "large, random vector"), ("small_native", "small, own vector"))
    for k, (key, label) in enumerate(arms):
        x = np.arange(len(steer)) + (k - 1.5) * 0.2
        values = [r[key] for r in steer]
        low = [r[f"{key}_interval"]["low"] for r in steer]
        high = [r[f"{key}_interval"]["high"] for r in steer]
        ax.bar(x, values, 0.2, label=label, color=plt.cm.tab10(k + 3))
        ax.errorbar(x, values, yerr=[np.subtract(values, low), np.subtract(high, values)], fmt="none", ecolor="black",
                    lw=0.8)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(np.arange(len(steer)))
    ax.set_xticklabels([f"{r['source']} → {r['target']}" for r in steer])
    ax.set(ylabel="shift in probability on the target's tokens", title="steering")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    fig.tight_layout()
    return fig

