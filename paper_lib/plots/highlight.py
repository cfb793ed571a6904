"""Token highlights: text with each token's background shaded by a feature's activation, as HTML and as figures.

Used by the case studies (Figures 3 and 4) and by any later section that shows a feature on text.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


HIGHLIGHT_RGB = (220, 60, 20)  # the shading colour (an orange red); intensity = activation / max


def shade(acts, vmax: float | None = None) -> np.ndarray:
    """Opacity in [0, 1] per activation: activation / vmax, clipped (vmax defaults to the largest activation).
    Monotone non-decreasing in the activation; zero and negative activations are transparent."""
    acts = np.asarray(acts, dtype=np.float64)
    vmax = float(np.max(acts, initial=0.0)) if vmax is None else float(vmax)
    if vmax <= 0:
        return np.zeros_like(acts)
    return np.clip(acts / vmax, 0.0, 1.0)


def html_token(token: str) -> str:
    """A token as HTML text: escaped, a newline shown as ↵ and breaking the line, a tab as →."""
    text = html.escape(token, quote=True)
    return text.replace("\t", "\u2192").replace("\r", "").replace("\n", "\u21b5<br>")


def highlight_html(tokens: Sequence[str], acts, vmax: float | None = None, title: str | None = None) -> str:
    """Text as HTML with each token's background shaded by its activation (hover shows the value).

    Tokens are HTML-escaped; whitespace is kept (``white-space: pre-wrap``) and newlines show as ↵.
    """
    acts = np.asarray(acts, dtype=np.float64)
    if len(tokens) != acts.size:
        raise ValueError(f"{len(tokens)} tokens but {acts.size} activations")
    alpha = shade(acts, vmax)
    r, g, b = HIGHLIGHT_RGB
    spans = "".join(
        f'<span title="{html.escape(repr(t))}: {a:.3f}" style="background-color: rgba({r},{g},{b},{al:.3f}); '
        f'border-right: 1px solid #eee">{html_token(t)}</span>'
        for t, a, al in zip(tokens, acts, alpha)
    )
    head = f'<div style="font-weight: bold; margin-top: 6px">{html.escape(title)}</div>' if title else ""
    return (
        f'{head}<div style="font-family: monospace; white-space: pre-wrap; line-height: 1.5; '
        f'border: 1px solid #ddd; padding: 4px">{spans}</div>'
    )


def highlight_comparison_html(
    tokens: Sequence[str], acts_by_model: Mapping[str, Any], correlations=None
) -> str:
    """Several models' activations on the same text, stacked, each shaded by its own maximum, followed by
    the pairwise activation-pattern correlations (a table with columns a, b, corr) when given."""
    parts = [
        highlight_html(tokens, acts, title=f"{name} (max {np.max(np.asarray(acts), initial=0.0):.2f})")
        for name, acts in acts_by_model.items()
    ]
    if correlations is not None and len(correlations):
        notes = ", ".join(f"r({html.escape(str(r.a))}, {html.escape(str(r.b))}) = {r.corr:.2f}" for r in correlations.itertuples())
        parts.append(f'<div style="margin-top: 6px">Pearson correlation of activations: {notes}</div>')
    return "\n".join(parts)


def _layout(tokens: Sequence[str], width: int) -> list[tuple[int, int, str]]:
    """(line, column, visible text) of every token in a monospace grid ``width`` characters wide."""
    placed = []
    line, col = 0, 0
    for token in tokens:
        text = token.replace("\t", "\u2192").replace("\r", "")
        pieces = text.split("\n")
        # A newline token shows as ↵ at the end of its line; the text after it starts the next line.
        shown = pieces[0] + ("\u21b5" if len(pieces) > 1 else "")
        if col + len(shown) > width and col > 0:
            line, col = line + 1, 0
        placed.append((line, col, shown))
        col += len(shown)
        for rest in pieces[1:]:
            line, col = line + 1, 0
            if rest:
                placed.append((line, col, rest))
                col += len(rest)
    return placed


def line_count(tokens: Sequence[str], width: int) -> int:
    """How many lines ``highlight_axes`` draws ``tokens`` on at ``width`` characters (to size a figure first)."""
    return len({line for line, _, _ in _layout(tokens, width)})


def _placed_per_token(tokens: Sequence[str], width: int) -> list[list[tuple[int, int, str]]]:
    placed, out = _layout(tokens, width), []
    index = 0
    for token in tokens:
        n = 1 + sum(1 for rest in token.replace("\r", "").split("\n")[1:] if rest)
        out.append(placed[index : index + n])
        index += n
    return out


def highlight_axes(ax, tokens: Sequence[str], acts, vmax: float | None = None, width: int = 60, cmap: str = "Oranges"):
    """Draw text on ``ax`` with each token's background shaded by its activation (a monospace grid, one cell
    per character, token boundaries as thin white gaps, newlines as ↵). Returns the number of lines."""
    import matplotlib as mpl
    from matplotlib.patches import Rectangle

    acts = np.asarray(acts, dtype=np.float64)
    if len(tokens) != acts.size:
        raise ValueError(f"{len(tokens)} tokens but {acts.size} activations")
    colours = mpl.colormaps[cmap]
    alpha = shade(acts, vmax)
    n_lines = 1
    for pieces, a in zip(_placed_per_token(tokens, width), alpha):
        for line, col, text in pieces:
            n_lines = max(n_lines, line + 1)
            if not text:
                continue
            face = colours(0.08 + 0.85 * a) if a > 0 else (1, 1, 1, 1)
            ax.add_patch(Rectangle((col + 0.04, line + 0.06), len(text) - 0.08, 0.88, facecolor=face, edgecolor="none"))
            for i, ch in enumerate(text):
                if ch != " ":
                    ax.text(col + i + 0.5, line + 0.5, ch, ha="center", va="center", family="monospace", fontsize=8,
                            color="white" if a > 0.75 else "black")
    ax.set_xlim(0, width)
    ax.set_ylim(n_lines, 0)
    ax.set_axis_off()
    return n_lines


def highlight_figure(
    snippets: Mapping[str, Sequence[str]],
    acts: Mapping[str, Mapping[str, Any]],
    titles: Mapping[str, str] | None = None,
    note: str | None = None,
    width: int = 48,
):
    """A static figure of token highlights: one row per model, one column per snippet, on the same text.

    ``snippets``: ``{snippet: token strings}``; ``acts``: ``{model: {snippet: activations}}``; ``titles``:
    optional row titles per model (e.g. with the feature id); ``note``: text under the figure (e.g. the
    pairwise correlations). Each model's shading is scaled by its own maximum over all snippets, shown in
    its title, so a weak but well-placed match stays visible. Returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt

    models, names = list(acts), list(snippets)
    missing = [(m, s) for m in models for s in names if s not in acts[m]]
    if missing:
        raise ValueError(f"no activations for (model, snippet) {missing}")
    lines = {s: line_count(snippets[s], width) for s in names}
    height_rows = [max(lines.values()) * 0.16 + 0.35] * len(models)
    fig, axes = plt.subplots(
        len(models), len(names), figsize=(width * 0.085 * len(names) + 0.3, sum(height_rows) + (0.5 if note else 0.1)),
        squeeze=False,
    )
    for r, model in enumerate(models):
        vmax = max(float(np.max(np.asarray(acts[model][s]), initial=0.0)) for s in names)
        for c, snippet in enumerate(names):
            ax = axes[r][c]
            highlight_axes(ax, snippets[snippet], acts[model][snippet], vmax=vmax if vmax > 0 else None, width=width)
            ax.set_ylim(max(lines.values()), 0)
            label = (titles or {}).get(model, model)
            ax.set_title(f"{label} · {snippet} (max {vmax:.2f})", fontsize=8, loc="left")
    if note:
        fig.text(0.01, 0.0, note, fontsize=8, va="top", ha="left", wrap=True)
    fig.tight_layout()
    return fig
