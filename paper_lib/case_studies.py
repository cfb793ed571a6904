"""Case studies (Figures 3 and 4): study single SAE features and follow them across the four models.

Tools for any feature of any of the four SAEs on ``blocks.0.mlp.hook_post``:

- ``top_contexts``: its top-activating token windows, the max-activating token marked.
- ``activation_histogram``: the distribution of its non-zero activations.
- ``logit_effects``: the tokens whose logits its decoder direction raises and lowers (see there for the
  approximation of the final RMSNorm).
- ``feature_matches``: its best match in every other model, with the correlation (``paper_lib.matching``).
- ``highlight_html`` / ``highlight_figure``: text with each token's background shaded by the activation,
  several models on the same text, with the pairwise activation-pattern correlations.

Finding the paper's two features without hand-picked ids: every token of the Python validation text is
labelled by a rule-based labeller over the token strings and their context (``assignment_spans``,
``exception_spans``); every BabyPython feature is scored against the binary label (``score_features``:
Pearson correlation, plus precision/recall/F1 of "the feature fires"), and the best-scoring feature is the
case study (``find_feature``). The core works on plain arrays and on a HookedTransformer with an SAE
object, so it is testable without trained artifacts; the ``cfg``-level functions wire it to the real
models, SAEs and matches.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

HOOK = "blocks.0.mlp.hook_post"
SPECIAL_TOKENS = ("<s>", "</s>", "<unk>")  # document separators in the packed streams: reset the labellers
CONCEPTS = ("variable_assignment", "python_exception")
CONCEPT_LABELS = {"variable_assignment": "variable assignment", "python_exception": "Python exception"}
SEARCH_VERSION = 1  # bump when the labellers or scores change: invalidates the cached searches
ENCODE_CHUNK_BLOCKS = 64  # blocks encoded at a time: bounds memory at chunk x context x d_sae floats

# The snippets of Figures 3 and 4: short, typical code with assignments next to near-misses ('==', '~=',
# keyword arguments, table fields) and, for Figure 4, every part of Python's exception handling.
PYTHON_SNIPPET = """def scale(values, factor=2):
    total = 0
    for v in values:
        if v == 0:
            continue
        total = total + v * factor
    result = total / len(values)
    return result
"""
LUA_SNIPPET = """local function scale(values, factor)
  local total = 0
  for _, v in ipairs(values) do
    if v ~= 0 then
      total = total + v * factor
    end
  end
  local result = total / #values
  return result
end
"""
EXCEPTION_SNIPPET = """def load(path):
    try:
        handle = open(path)
        data = json.load(handle)
    except ValueError as err:
        raise RuntimeError("bad file") from err
    except KeyError:
        data = None
    finally:
        handle.close()
    return data
"""


# ------------------------------------------------------------------------------------------ labelling

# An assignment target: a name with attribute access and subscripts (``x``, ``self.x``, ``t[i].y``).
_TARGET = r"\*?[A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\[[^\]\n]*\])*"
# A statement-level assignment: targets at the start of a line (optionally ``local`` in Lua, a tuple of
# targets, a Python annotation), then a single '=' that is not '=='. Comparisons ('==', '!=', '~=', '<=',
# '>='), augmented assignments ('+='), keyword arguments (not at the start of a line) and control
# statements (``if x == 1``, ``for i = 1, n``: a keyword followed by a space) do not match.
_ASSIGNMENT = re.compile(
    rf"^[ \t]*(?:local[ \t]+)?\(?{_TARGET}(?:[ \t]*,[ \t]*{_TARGET})*\)?[ \t]*(?::[^=\n]+)?(?P<op>=)(?!=)"
)
_STRINGS_AND_COMMENTS = re.compile(r"'(?:\\.|[^'\\\n])*'|\"(?:\\.|[^\"\\\n])*\"|#.*$|--.*$")
_EXCEPTION = re.compile(r"\b(?:try|except|raise|finally|[A-Za-z_]\w*(?:Error|Exception))\b")


def assignment_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the '=' of every statement-level variable assignment in Python or Lua code.

    A line counts only when it starts outside brackets: keyword arguments and Lua table fields spread over
    several lines inside ``(...)``/``{...}`` are not assignments. Bracket depth is tracked line by line with
    strings and comments removed (an approximation: multi-line strings are not parsed).
    """
    spans = []
    depth = 0
    offset = 0
    for line in text.splitlines(keepends=True):
        if depth == 0:
            match = _ASSIGNMENT.match(line)
            if match:
                spans.append((offset + match.start("op"), offset + match.end("op")))
        code = _STRINGS_AND_COMMENTS.sub("", line)
        depth += sum(code.count(c) for c in "([{") - sum(code.count(c) for c in ")]}")
        depth = max(depth, 0)  # an unbalanced closing bracket (e.g. from a parsing miss) must not stick
        offset += len(line)
    return spans


def exception_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of Python exception handling: ``try``, ``except``, ``raise``, ``finally`` and names
    ending in ``Error``/``Exception`` (whole words only, so ``retry`` or ``exceptional`` do not count)."""
    return [m.span() for m in _EXCEPTION.finditer(text)]


LABELLERS: dict[str, Callable[[str], list[tuple[int, int]]]] = {
    "variable_assignment": assignment_spans,
    "python_exception": exception_spans,
}


def label_tokens(
    tokens: Sequence[str],
    spans_fn: Callable[[str], list[tuple[int, int]]],
    special: Sequence[str] = SPECIAL_TOKENS,
) -> np.ndarray:
    """Binary label per token: True where the token's characters overlap a span found by ``spans_fn``.

    ``tokens`` are the token strings of a packed stream (each id decoded on its own); special tokens split it
    into documents, each labelled on its own text (they are never labelled themselves).
    """
    labels = np.zeros(len(tokens), dtype=bool)
    special = set(special)
    start = 0
    for end in [i for i, t in enumerate(tokens) if t in special] + [len(tokens)]:
        segment = tokens[start:end]
        if segment:
            bounds = np.cumsum([0] + [len(t) for t in segment])
            for lo, hi in spans_fn("".join(segment)):
                # tokens [a, b) overlap characters [lo, hi): a token overlaps when it starts before hi and ends after lo
                first = int(np.searchsorted(bounds, lo, side="right")) - 1
                last = int(np.searchsorted(bounds, hi, side="left"))
                labels[start + max(first, 0) : start + min(last, len(segment))] = True
        start = end + 1
    return labels


def concept_labels(tokens: Sequence[str], concepts: Sequence[str] = CONCEPTS) -> np.ndarray:
    """Labels of several concepts: ``[n_tokens, n_concepts]`` bool, concepts named as in ``LABELLERS``."""
    unknown = [c for c in concepts if c not in LABELLERS]
    if unknown:
        raise ValueError(f"unknown concept(s) {unknown}; known: {', '.join(LABELLERS)}")
    return np.stack([label_tokens(tokens, LABELLERS[c]) for c in concepts], axis=1)


# --------------------------------------------------------------------------------------------- scoring


class FeatureScorer:
    """Streaming scores of every feature against binary token labels, one chunk of activations at a time.

    Activations of all features on all searched tokens do not fit in memory (48k tokens x 16k features is
    3 GB), so sufficient statistics are accumulated in float64: Pearson correlation (point-biserial) of
    activation and label, and precision/recall/F1 of "the feature fires" (activation > 0) as a detector.
    """

    def __init__(self, n_features: int, concepts: Sequence[str]):
        self.concepts = list(concepts)
        c, f = len(self.concepts), n_features
        self.n = 0
        self.sum_y_C = torch.zeros(c, dtype=torch.float64)
        self.sum_x_F = torch.zeros(f, dtype=torch.float64)
        self.sum_xx_F = torch.zeros(f, dtype=torch.float64)
        self.sum_xy_CF = torch.zeros(c, f, dtype=torch.float64)
        self.fires_F = torch.zeros(f, dtype=torch.float64)
        self.hits_CF = torch.zeros(c, f, dtype=torch.float64)

    def update(self, acts_NF: torch.Tensor, labels_NC: torch.Tensor | np.ndarray) -> None:
        """Add ``acts_NF`` (activations of N tokens) with their labels ``[N, n_concepts]``."""
        # float64 throughout: the one-pass variance n*sum(x^2) - sum(x)^2 cancels badly in float32
        acts_NF = torch.as_tensor(acts_NF).double()
        labels_NC = torch.as_tensor(np.asarray(labels_NC)).double()
        if labels_NC.ndim == 1:
            labels_NC = labels_NC[:, None]
        if acts_NF.shape[0] != labels_NC.shape[0] or acts_NF.shape[1] != self.sum_x_F.numel():
            raise ValueError(
                f"activations {tuple(acts_NF.shape)} and labels {tuple(labels_NC.shape)} do not fit a scorer of "
                f"{self.sum_x_F.numel()} features: pass [n_tokens, d_sae] activations with one label row per token"
            )
        fires_NF = (acts_NF > 0).double()
        self.n += acts_NF.shape[0]
        self.sum_y_C += labels_NC.sum(0)
        self.sum_x_F += acts_NF.sum(0)
        self.sum_xx_F += (acts_NF * acts_NF).sum(0)
        self.sum_xy_CF += labels_NC.T @ acts_NF
        self.fires_F += fires_NF.sum(0)
        self.hits_CF += labels_NC.T @ fires_NF

    def table(self, concept: str):
        """One row per feature: pearson, precision, recall, f1, n_fires; sorted by pearson (best first)."""
        import pandas as pd

        c = self.concepts.index(concept)
        n = float(self.n)
        cov = n * self.sum_xy_CF[c] - self.sum_x_F * self.sum_y_C[c]
        var_x = (n * self.sum_xx_F - self.sum_x_F**2).clamp_min(0)
        var_y = (n * self.sum_y_C[c] - self.sum_y_C[c] ** 2).clamp_min(0)
        denom = torch.sqrt(var_x * var_y)
        # A feature that never varies (dead, or constant) has no correlation: score it 0, not NaN.
        pearson = torch.where(denom > 0, cov / denom.clamp_min(1e-300), torch.zeros_like(cov))
        hits = self.hits_CF[c]
        precision = torch.where(self.fires_F > 0, hits / self.fires_F.clamp_min(1), torch.zeros_like(hits))
        recall = hits / max(float(self.sum_y_C[c]), 1.0)
        f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12), 0)
        table = pd.DataFrame(
            {
                "feature": np.arange(len(pearson)),
                "pearson": pearson.numpy(),
                "precision": precision.numpy(),
                "recall": recall.numpy(),
                "f1": f1.numpy(),
                "n_fires": self.fires_F.numpy().astype(np.int64),
            }
        )
        return table.sort_values("pearson", ascending=False, kind="stable").reset_index(drop=True)


def score_features(acts_NF, labels_N, concept: str = "concept"):
    """Score every feature of in-memory activations ``[n_tokens, n_features]`` against a binary label
    ``[n_tokens]``: a table sorted by Pearson correlation (see ``FeatureScorer``)."""
    acts_NF = torch.as_tensor(acts_NF)
    scorer = FeatureScorer(acts_NF.shape[1], [concept])
    scorer.update(acts_NF, np.asarray(labels_N)[:, None])
    return scorer.table(concept)


def best_feature(table, score: str = "pearson") -> int:
    """The feature with the highest ``score`` in a ``score_features`` table."""
    if score not in table.columns:
        raise ValueError(f"unknown score '{score}'; choose one of pearson, precision, recall, f1")
    return int(table.loc[table[score].idxmax(), "feature"])


# ----------------------------------------------------------------------------- activations from a model


@torch.inference_mode()
def sae_activations(model, sae, blocks: torch.Tensor, batch_size: int = 32) -> Iterable[torch.Tensor]:
    """Yield SAE feature activations ``[batch, ctx, d_sae]`` of ``blocks`` (token ids ``[n, ctx]``), computed
    from a HookedTransformer's ``blocks.0.mlp.hook_post`` batch by batch."""
    for start in range(0, len(blocks), batch_size):
        batch = torch.as_tensor(blocks[start : start + batch_size])
        _, cache = model.run_with_cache(batch, names_filter=HOOK, stop_at_layer=1)
        yield sae.encode(cache[HOOK])


def correlation(a, b) -> float:
    """Position-wise Pearson correlation of two activation patterns on the same tokens (NaN if either is
    constant: a feature that never fires on the text has no pattern to compare)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"activation patterns of different lengths ({a.size} vs {b.size}): use the same tokens")
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def pairwise_pattern_correlations(acts: Mapping[str, Any]):
    """Position-wise Pearson correlation of every pair of activation patterns (``{label: acts}`` on the same
    tokens): a table with columns a, b, corr."""
    import pandas as pd

    names = list(acts)
    rows = [
        {"a": names[i], "b": names[j], "corr": correlation(acts[names[i]], acts[names[j]])}
        for i in range(len(names))
        for j in range(i + 1, len(names))
    ]
    return pd.DataFrame(rows, columns=["a", "b", "corr"])


# ------------------------------------------------------------------------------------ single features


def _show(token: str) -> str:
    """A token with its whitespace made visible (for plain-text contexts)."""
    return token.replace("\n", "\u21b5").replace("\t", "\u2192")


def top_contexts(tokens_BT: Sequence[Sequence[str]], acts_BT, k: int = 10, window: int = 8):
    """The ``k`` blocks where a feature peaks highest, as token windows around the peak.

    ``tokens_BT``: token strings per block; ``acts_BT``: the feature's activations ``[n_blocks, ctx]``. Each
    row gives the block, position, activation, the peak token and the text of up to ``window`` tokens on
    either side with the peak marked as ``[[token]]`` (newlines shown as ↵). One row per block, so a single
    repetitive block cannot fill the table.
    """
    import pandas as pd

    acts_BT = np.asarray(acts_BT, dtype=np.float32)
    if acts_BT.shape[0] != len(tokens_BT):
        raise ValueError(f"{len(tokens_BT)} token blocks but activations for {acts_BT.shape[0]}")
    peak_pos = acts_BT.argmax(1)
    peak = acts_BT.max(1)
    order = [b for b in np.argsort(-peak, kind="stable") if peak[b] > 0][:k]
    rows = []
    for b in order:
        p = int(peak_pos[b])
        toks = tokens_BT[b]
        left = "".join(_show(t) for t in toks[max(0, p - window) : p])
        right = "".join(_show(t) for t in toks[p + 1 : p + 1 + window])
        rows.append(
            {
                "block": int(b),
                "position": p,
                "activation": float(peak[b]),
                "token": toks[p],
                "context": f"{left}[[{_show(toks[p])}]]{right}",
            }
        )
    return pd.DataFrame(rows, columns=["block", "position", "activation", "token", "context"])


def activation_histogram(acts, bins: int = 30):
    """Histogram of a feature's non-zero activations: a table (left, right, count) and, in ``.attrs``, the
    share of tokens where it fires (``fire_rate``) and the number of tokens (``n_tokens``)."""
    import pandas as pd

    acts = np.asarray(acts, dtype=np.float64).ravel()
    active = acts[acts > 0]
    counts, edges = np.histogram(active, bins=bins) if active.size else (np.zeros(bins, int), np.linspace(0, 1, bins + 1))
    table = pd.DataFrame({"left": edges[:-1], "right": edges[1:], "count": counts})
    table.attrs = {"fire_rate": float(active.size / max(acts.size, 1)), "n_tokens": int(acts.size)}
    return table


@torch.inference_mode()
def logit_effects(model, direction_mlp, vocab: Sequence[str], k: int = 10):
    """The tokens whose logits a feature's decoder direction raises and lowers most.

    ``direction_mlp`` is the feature's decoder row ``W_dec[f]`` in the MLP's output space (``d_mlp``, the
    space of ``blocks.0.mlp.hook_post``). It is mapped into the residual stream through the MLP's output
    matrix (``model.blocks[0].mlp.W_out``, ``[d_mlp, d_model]``) and then to the vocabulary through the final
    RMSNorm and ``model.W_U``. Approximation: RMSNorm divides the whole residual stream by its RMS, a positive
    scalar that depends on the context; we drop it (as if the RMS were 1) and keep only its elementwise weight
    ``ln_final.w``. Dropping a positive scalar rescales every logit alike, so the ranking of tokens is exact
    for the direction alone; what it ignores is the rest of the residual stream the direction is added to.
    (With a folded norm, ``fold_ln=True``, the weight is already inside ``W_U``.) Returns a table with the
    ``k`` most raised and ``k`` most lowered tokens: effect (sign, rank, token id, token, logit).
    """
    import pandas as pd

    W_out_MD = model.blocks[0].mlp.W_out
    direction_mlp = torch.as_tensor(direction_mlp, dtype=W_out_MD.dtype).reshape(-1)
    if direction_mlp.numel() != W_out_MD.shape[0]:
        raise ValueError(
            f"a decoder row of {direction_mlp.numel()} values does not fit W_out {tuple(W_out_MD.shape)}: the SAE "
            f"must be trained on blocks.0.mlp.hook_post (d_mlp = {W_out_MD.shape[0]})"
        )
    resid_D = direction_mlp @ W_out_MD
    norm_weight = getattr(model.ln_final, "w", None)
    if norm_weight is not None:
        resid_D = resid_D * norm_weight
    logits_V = (resid_D @ model.W_U).float()
    if len(vocab) < logits_V.numel():
        raise ValueError(f"vocab has {len(vocab)} token strings but the model has {logits_V.numel()} logits")
    rows = []
    for effect, ids in (("raises", logits_V.argsort(descending=True)[:k]), ("lowers", logits_V.argsort()[:k])):
        for rank, i in enumerate(ids.tolist()):
            rows.append({"effect": effect, "rank": rank, "token_id": i, "token": vocab[i], "logit": float(logits_V[i])})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------- rendering

HIGHLIGHT_RGB = (220, 60, 20)  # the shading colour (an orange red); intensity = activation / max


def shade(acts, vmax: float | None = None) -> np.ndarray:
    """Opacity in [0, 1] per activation: activation / vmax, clipped (vmax defaults to the largest activation).
    Monotone non-decreasing in the activation; zero and negative activations are transparent."""
    acts = np.asarray(acts, dtype=np.float64)
    vmax = float(np.max(acts, initial=0.0)) if vmax is None else float(vmax)
    if vmax <= 0:
        return np.zeros_like(acts)
    return np.clip(acts / vmax, 0.0, 1.0)


def _html_token(token: str) -> str:
    # Escape first, then make whitespace visible: a newline shows as ↵ and breaks the line, a tab as →.
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
        f'border-right: 1px solid #eee">{_html_token(t)}</span>'
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
    lines = {s: len({line for line, _, _ in _layout(snippets[s], width)}) for s in names}
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


# ----------------------------------------------------------------------------- wiring to the real models


@dataclass
class FeatureSearch:
    """Result of ``find_feature``: the chosen feature, its score and the whole score table."""

    model: str
    concept: str
    score: str
    feature: int
    value: float
    table: Any  # pandas DataFrame, one row per feature (see FeatureScorer.table)
    n_tokens: int
    n_positive: int

    def describe(self) -> str:
        """A sentence naming the feature and its score, for notebooks."""
        row = self.table.set_index("feature").loc[self.feature]
        return (
            f"{self.model} feature {self.feature} is the best {CONCEPT_LABELS.get(self.concept, self.concept)} "
            f"feature: Pearson r = {row.pearson:.3f} with the rule-based label "
            f"(precision {row.precision:.2f}, recall {row.recall:.2f}, F1 {row.f1:.2f} of 'fires'), over "
            f"{self.n_tokens} Python validation tokens of which {self.n_positive} are labelled."
        )


def vocab_strings(cfg) -> list[str]:
    """The text of every token id of the run's tokenizer, each decoded on its own (so ' =' keeps its space)."""
    from .data import get_tokenizer

    tokenizer = get_tokenizer(cfg)
    return [tokenizer.decode([i]) for i in range(len(tokenizer))]


def search_blocks(cfg) -> tuple[torch.Tensor, np.ndarray]:
    """The Python validation blocks features are scored on (``cfg.case_studies.n_search_blocks`` blocks of
    ``cfg.sae.context_size`` tokens, the SAEs' context) and their labels ``[n_blocks, ctx, n_concepts]``.

    Labels are computed on the whole packed stream before it is cut into blocks, so a line split across two
    blocks is still recognised.
    """
    from .data import to_blocks, token_stream

    ctx = cfg.sae.context_size
    stream = token_stream(cfg, "python", "validation", cfg.case_studies.n_search_blocks * ctx)
    blocks = to_blocks(stream, ctx)
    vocab = vocab_strings(cfg)
    labels = concept_labels([vocab[int(i)] for i in stream[: blocks.numel()]])
    return blocks, labels.reshape(blocks.shape[0], ctx, len(CONCEPTS))


def _model_and_sae(cfg, name: str):
    from .saes import load_sae
    from .training import load_hooked_lm

    sae = load_sae(cfg, name)
    return load_hooked_lm(cfg, name).to(sae.device, print_details=False), sae


def _encode_chunks(cfg, name: str, blocks: torch.Tensor) -> Iterable[torch.Tensor]:
    """SAE activations ``[chunk, ctx, d_sae]`` of ``blocks``, a chunk at a time (model and SAE loaded once)."""
    from .saes import encode_blocks

    model, sae = _model_and_sae(cfg, name)
    for start in tqdm(range(0, len(blocks), ENCODE_CHUNK_BLOCKS), desc=f"encoding {name}", leave=False):
        chunk = blocks[start : start + ENCODE_CHUNK_BLOCKS]
        yield encode_blocks(cfg, name, chunk, model=model, sae=sae).detach().float().cpu()


def _search_inputs(cfg, name: str) -> dict[str, Any]:
    from .data import corpus_fingerprint, tokenizer_hash
    from .saes import sae_dir

    return {
        "sae": sae_dir(cfg, name).name,  # content-addressed: covers the model, its data and the SAE's config
        "tokenizer": tokenizer_hash(cfg),
        "corpus": corpus_fingerprint(cfg, "python", "validation"),
        "n_search_blocks": cfg.case_studies.n_search_blocks,
        "context_size": cfg.sae.context_size,
        "seed": cfg.seed,
        "concepts": list(CONCEPTS),
    }


def concept_scores(cfg, name: str = "babypython") -> dict[str, Any]:
    """Score every feature of ``name``'s SAE against every concept's labels on the Python validation blocks
    (cached step ``case-search-<name>``): ``{concept: table}`` plus ``n_tokens`` and ``n_positive``."""
    import pandas as pd

    from .artifacts import cached_step, read_json

    def build(out: Path) -> dict:
        blocks, labels = search_blocks(cfg)
        scorer = None
        for start, acts in zip(range(0, len(blocks), ENCODE_CHUNK_BLOCKS), _encode_chunks(cfg, name, blocks)):
            if scorer is None:
                scorer = FeatureScorer(acts.shape[-1], CONCEPTS)
            chunk_labels = labels[start : start + len(acts)].reshape(-1, len(CONCEPTS))
            scorer.update(acts.reshape(-1, acts.shape[-1]), chunk_labels)
        for concept in CONCEPTS:
            scorer.table(concept).to_csv(out / f"{concept}.csv", index=False)
        return {
            "n_tokens": int(labels.shape[0] * labels.shape[1]),
            "n_positive": {c: int(labels[..., i].sum()) for i, c in enumerate(CONCEPTS)},
        }

    path = cached_step(cfg.profile, f"case-search-{name}", _search_inputs(cfg, name), build, SEARCH_VERSION)
    meta = read_json(path / "manifest.json")["meta"]
    return {
        "tables": {c: pd.read_csv(path / f"{c}.csv") for c in CONCEPTS},
        "n_tokens": meta["n_tokens"],
        "n_positive": meta["n_positive"],
    }


def find_feature(cfg, concept: str, name: str = "babypython", score: str | None = None) -> FeatureSearch:
    """The feature of ``name``'s SAE that best matches a concept's rule-based labels (no hand-picked id),
    by ``score`` (default ``cfg.case_studies.score``)."""
    score = score or cfg.case_studies.score
    if concept not in CONCEPTS:
        raise ValueError(f"unknown concept '{concept}'; choose one of {', '.join(CONCEPTS)}")
    found = concept_scores(cfg, name)
    table = found["tables"][concept]
    feature = best_feature(table, score)
    return FeatureSearch(
        model=name,
        concept=concept,
        score=score,
        feature=feature,
        value=float(table.set_index("feature").loc[feature, score]),
        table=table,
        n_tokens=found["n_tokens"],
        n_positive=found["n_positive"][concept],
    )


# Routes from BabyPython to each other model through the matched pairs of notebook 05 (cfg.matching.pairs):
# LuaStories has no direct BabyPython pair, so a feature is followed through Lua (its merge's base model).
MATCH_ROUTES = {"lua": ["babypython", "lua"], "tinystories": ["babypython", "tinystories"],
                "luastories": ["babypython", "lua", "luastories"]}


def feature_matches(cfg, feature: int, mode: str | None = None, routes: Mapping[str, list[str]] | None = None):
    """Follow a BabyPython feature to its best match in every other model along ``routes`` (matched pairs of
    notebook 05, ``paper_lib.matching.match_pair``). One row per model: the matched feature, the correlation
    of the last hop, the weakest correlation along the route and whether every hop passes the threshold.
    ``mode`` defaults to ``cfg.case_studies.matching_mode``."""
    import pandas as pd

    mode = mode or cfg.case_studies.matching_mode

    from .matching import match_pair

    rows = []
    for target, route in (routes or MATCH_ROUTES).items():
        current, corrs = int(feature), []
        for parent, child in zip(route[:-1], route[1:]):
            if current < 0:  # no match on an earlier hop (a feature dead on the matching sample): nothing to follow
                corrs.append(float("nan"))
                continue
            result = match_pair(cfg, parent, child, mode=mode)
            corr = float(np.asarray(result.best_corr_for_parent)[current])
            current = int(np.asarray(result.best_child_for_parent)[current])
            corrs.append(corr)
        rows.append(
            {
                "model": target,
                "route": " -> ".join(route),
                "feature": current,
                "corr": corrs[-1],
                "route_min_corr": float(np.nanmin(corrs)) if not np.all(np.isnan(corrs)) else float("nan"),
                "matched": bool(current >= 0 and all(c >= cfg.matching.threshold for c in corrs)),
            }
        )
    return pd.DataFrame(rows)


def tokenize_snippet(cfg, text: str) -> tuple[torch.Tensor, list[str]]:
    """Token ids and token strings of a snippet (no special tokens)."""
    from .data import get_tokenizer

    tokenizer = get_tokenizer(cfg)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long), [tokenizer.decode([i]) for i in ids]


def snippet_activations(cfg, name: str, feature: int, ids: torch.Tensor, model=None, sae=None) -> np.ndarray:
    """One feature's activations on a snippet's tokens, run as a single context (split into consecutive
    windows of the LM's block size if longer). ``model``/``sae`` may be passed to avoid reloading them."""
    from .saes import encode_blocks

    if model is None or sae is None:
        model, sae = _model_and_sae(cfg, name)
    window = cfg.data.block_size
    out = []
    for start in range(0, len(ids), window):
        acts = encode_blocks(cfg, name, ids[start : start + window][None], model=model, sae=sae)
        out.append(acts[0, :, int(feature)].detach().float().cpu().numpy())
    return np.concatenate(out)


def case_study(cfg, features: Mapping[str, int], snippets: Mapping[str, str]) -> dict[str, Any]:
    """Activations of one feature per model (``{model: feature}``) on shared snippets, with the pairwise
    position-wise correlations per snippet and over all snippets together. Plain data, ready for
    ``save_results`` and ``highlight_figure``: ``{"tokens": {snippet: [str]}, "acts": {model: {snippet:
    [float]}}, "correlations": [{"snippet", "a", "b", "corr"}]}``."""
    import pandas as pd

    features = {name: int(f) for name, f in features.items() if int(f) >= 0}  # -1: no match to show
    encoded = {label: tokenize_snippet(cfg, text) for label, text in snippets.items()}
    tokens = {label: strings for label, (_, strings) in encoded.items()}
    acts = {}
    for name, feature in features.items():
        model, sae = _model_and_sae(cfg, name)
        acts[name] = {
            label: snippet_activations(cfg, name, feature, ids, model, sae).tolist() for label, (ids, _) in encoded.items()
        }
    tables = [pairwise_pattern_correlations({m: acts[m][s] for m in features}).assign(snippet=s) for s in snippets]
    together = {m: np.concatenate([acts[m][s] for s in snippets]) for m in features}
    tables.append(pairwise_pattern_correlations(together).assign(snippet="all"))
    correlations = pd.concat(tables, ignore_index=True)[["snippet", "a", "b", "corr"]]
    return {"features": dict(features), "tokens": tokens, "acts": acts, "correlations": correlations.to_dict("records")}


def feature_report(cfg, name: str, feature: int, domain: str = "python", k: int | None = None) -> dict[str, Any]:
    """Everything about one feature of one SAE: top contexts and activation histogram on ``domain``'s
    validation blocks (``cfg.case_studies.n_search_blocks`` blocks of the SAE's context) and logit effects."""
    from .data import to_blocks, token_stream

    k = k or cfg.case_studies.n_top_contexts
    ctx = cfg.sae.context_size
    blocks = to_blocks(token_stream(cfg, domain, "validation", cfg.case_studies.n_search_blocks * ctx), ctx)
    acts_BT = torch.cat([a[:, :, int(feature)] for a in _encode_chunks(cfg, name, blocks)]).numpy()
    vocab = vocab_strings(cfg)
    tokens_BT = [[vocab[int(i)] for i in block] for block in blocks]
    model, sae = _model_and_sae(cfg, name)
    return {
        "top_contexts": top_contexts(tokens_BT, acts_BT, k=k),
        "histogram": activation_histogram(acts_BT),
        "logit_effects": logit_effects(model, sae.W_dec[int(feature)].detach(), vocab, k=k),
    }


def summary_table(cfg, searches: Mapping[str, FeatureSearch], matches: Mapping[str, Any]):
    """The numbers of the case studies: one row per (concept, model) with the feature, its route and
    best-match correlation from BabyPython (NaN for BabyPython itself), its Pearson correlation / F1 with the
    concept's labels on the Python validation text, and the best such correlation of any feature of that
    model (does the model have a feature for the concept at all, matched or not?)."""
    import pandas as pd

    rows = []
    for concept, search in searches.items():
        found = [{"model": search.model, "feature": search.feature, "route": search.model, "corr": float("nan"),
                  "route_min_corr": float("nan"), "matched": True}]
        found += matches[concept].to_dict("records")
        for row in found:
            table = concept_scores(cfg, row["model"])["tables"][concept].set_index("feature")
            own = table.loc[row["feature"]] if row["feature"] >= 0 else {"pearson": np.nan, "f1": np.nan}
            rows.append(
                {
                    "concept": concept,
                    **row,
                    "label_pearson": float(own["pearson"]),
                    "label_f1": float(own["f1"]),
                    "best_label_feature": int(table["pearson"].idxmax()),
                    "best_label_pearson": float(table["pearson"].max()),
                }
            )
    return pd.DataFrame(rows)


def describe_findings(summary, threshold: float) -> list[str]:
    """Sentences stating what the summary table shows for each concept, with the paper's finding beside it
    (built from the numbers, so the text never disagrees with the saved results)."""
    from .training import MODEL_LABELS

    paper = {
        "variable_assignment": "the paper shows a variable-assignment feature in all four models",
        "python_exception": "the paper finds the Python-exception feature's closest Lua match too weak: it "
        "disappears through Lua fine-tuning",
    }
    sentences = []
    for concept, rows in summary.groupby("concept", sort=False):
        base = rows.iloc[0]
        others = rows.iloc[1:]
        if concept == "python_exception":
            others = others[others.model == "lua"]
        parts = [
            f"{MODEL_LABELS.get(r.model, r.model)} #{r.feature} (r = {r.corr:.2f}"
            + (f" via {r.route}, weakest hop {r.route_min_corr:.2f}" if r.route.count("->") > 1 else "")
            + f"; its own label correlation {r.label_pearson:.2f}, best in that model {r.best_label_pearson:.2f})"
            for r in others.itertuples()
        ]
        n_matched = int(others.matched.sum())
        verdict = (
            f"{n_matched} of {len(others)} pass the {threshold} matching threshold"
            if len(others) > 1
            else ("it passes" if n_matched else "it falls below") + f" the {threshold} matching threshold"
        )
        sentences.append(
            f"{CONCEPT_LABELS.get(concept, concept).capitalize()}: BabyPython feature #{base.feature} "
            f"(label correlation {base.label_pearson:.2f}, F1 {base.label_f1:.2f}); best matches: "
            f"{'; '.join(parts)}. {verdict.capitalize()}; {paper.get(concept, '')}."
        )
    return sentences
