"""Looking at one feature: its activations, top contexts, activation histogram, logit effects, pattern correlations."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..core.hooks import DEFAULT_HOOK, is_mlp_post, parse_hook
from ..core.runtime import pearson
from ..saes import encode_with


def sae_activations(model, sae, blocks: torch.Tensor, batch_size: int = 32) -> Iterable[torch.Tensor]:
    """Yield SAE feature activations ``[batch, ctx, d_sae]`` of ``blocks`` (token ids ``[n, ctx]``), computed
    at the SAE's own hook of a HookedTransformer, batch by batch (``saes.encode_with``)."""
    for start in range(0, len(blocks), batch_size):
        yield encode_with(model, sae, torch.as_tensor(blocks[start : start + batch_size]), batch_size)


def correlation(a, b) -> float:
    """Position-wise Pearson correlation of two activation patterns on the same tokens (NaN if either is
    constant: a feature that never fires on the text has no pattern to compare)."""
    return pearson(a, b)


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
def logit_effects(model, direction_mlp, vocab: Sequence[str], k: int = 10, hook: str = DEFAULT_HOOK):
    """The tokens whose logits a feature's decoder direction raises and lowers most.

    ``direction_mlp`` is the feature's decoder row ``W_dec[f]`` in the space of the SAE's ``hook``. For
    ``blocks.{l}.mlp.hook_post`` (``d_mlp``, the paper's) it is mapped into the residual stream through that
    layer's MLP output matrix (``model.blocks[l].mlp.W_out``, ``[d_mlp, d_model]``); a residual-stream or
    output hook is already there (its direct effect: later layers are not run). It then reaches the
    vocabulary through the final
    RMSNorm and ``model.W_U``. Approximation: RMSNorm divides the whole residual stream by its RMS, a positive
    scalar that depends on the context; we drop it (as if the RMS were 1) and keep only its elementwise weight
    ``ln_final.w``. Dropping a positive scalar rescales every logit alike, so the ranking of tokens is exact
    for the direction alone; what it ignores is the rest of the residual stream the direction is added to.
    (With a folded norm, ``fold_ln=True``, the weight is already inside ``W_U``.) Returns a table with the
    ``k`` most raised and ``k`` most lowered tokens: effect (sign, rank, token id, token, logit).
    """
    import pandas as pd

    layer, _ = parse_hook(hook)
    if is_mlp_post(hook):
        W_out_MD = model.blocks[layer].mlp.W_out
        direction_mlp = torch.as_tensor(direction_mlp, dtype=W_out_MD.dtype).reshape(-1)
        if direction_mlp.numel() != W_out_MD.shape[0]:
            raise ValueError(
                f"a decoder row of {direction_mlp.numel()} values does not fit W_out {tuple(W_out_MD.shape)}: the "
                f"SAE must be trained on {hook} (d_mlp = {W_out_MD.shape[0]}), or pass its own hook"
            )
        resid_D = direction_mlp @ W_out_MD
    elif parse_hook(hook)[1].startswith("mlp."):
        raise ValueError(f"logit effects are defined for mlp.hook_post and residual-stream hooks, not {hook}: the MLP's "
                         "pre-activations reach the residual stream only through its nonlinearity")
    else:
        resid_D = torch.as_tensor(direction_mlp, dtype=model.W_U.dtype).reshape(-1)
        if resid_D.numel() != model.cfg.d_model:
            raise ValueError(f"a decoder row of {resid_D.numel()} values does not fit {hook} (d_model = {model.cfg.d_model})")
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
