"""Per-layer representation similarity between a model and its fine-tune: mean token cosine and linear CKA.

Both are read on the residual stream at every depth: depth 0 is the token embedding (``blocks.0.hook_resid_pre``)
and depth d the stream after layer d (``blocks.{d-1}.hook_resid_post``), on each domain's validation text, with
document separators left out (Nadipalli 2025 averages over non-special tokens).

* Mean token cosine (Nadipalli's measure): the cosine between the two models' vectors of each token, averaged.
* Linear CKA (Kornblith et al. 2019): ``||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` over tokens, with ``Xc``
  and ``Yc`` the activations centred per dimension. It is invariant to rotations and isotropic scaling of either
  model's space, so it asks whether the two represent the same geometry, where the cosine asks whether they put
  the same vector in the same place. Hand-written (a few lines of numpy on sums): no maintained package computes
  it from streamed sums, which is what keeps its bootstrap over blocks cheap.

Intervals: percentile bootstrap over validation blocks (each block's sums are resampled whole).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..core import intervals
from ..core.artifacts import cached_step, read_json, write_json_atomic
from ..core.config import Config
from ..core.registry import DOMAINS, REGISTRY
from ..data import DATA_CODE, SPECIAL_TOKENS, corpora_fingerprints, eval_blocks, get_tokenizer
from ..models import load_hooked_lm, model_dir
from .family import base, fine_tunes, n_layers

CKA_RESAMPLES = 400  # bootstrap resamples of the CKA interval (each one sums d x d matrices over blocks)


def depth_hooks(n: int) -> list[str]:
    """The residual-stream hooks of depths 0 (embedding) to ``n`` (after the last of ``n`` layers)."""
    return ["blocks.0.hook_resid_pre", *[f"blocks.{layer}.hook_resid_post" for layer in range(n)]]


@torch.no_grad()
def residual_streams(model, blocks: torch.Tensor, batch_size: int = 16) -> np.ndarray:
    """The residual stream at every depth: ``[depth, n_blocks, ctx, d_model]`` (float32)."""
    hooks = depth_hooks(model.cfg.n_layers)
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(blocks), batch_size):
        _, cache = model.run_with_cache(blocks[start : start + batch_size].to(device), names_filter=hooks,
                                        prepend_bos=False)
        out.append(torch.stack([cache[h].float().cpu() for h in hooks]))
    return torch.cat(out, dim=1).numpy()


CKA_KEYS = ("n", "sx", "sy", "xx", "yy", "xy")  # the sums ``cka_from_sums`` takes, in its order


def block_sums(x_BTD: np.ndarray, y_BTE: np.ndarray, keep_BT: np.ndarray) -> dict[str, np.ndarray]:
    """Per-block sums behind the CKA of two models' activations (kept tokens only), and behind their mean cosine
    when both have the same width (``cos``; a cosine needs one space, CKA compares spaces of any widths)."""
    x = np.where(keep_BT[..., None], x_BTD, 0).astype(np.float64)
    y = np.where(keep_BT[..., None], y_BTE, 0).astype(np.float64)
    sums = {
        "n": keep_BT.sum(1).astype(np.float64),
        "sx": x.sum(1), "sy": y.sum(1),
        "xx": np.einsum("btd,bte->bde", x, x), "yy": np.einsum("btd,bte->bde", y, y),
        "xy": np.einsum("btd,bte->bde", x, y),
    }
    if x.shape[-1] == y.shape[-1]:
        norms = np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1)
        sums["cos"] = np.where(keep_BT, (x * y).sum(-1) / np.where(norms > 0, norms, 1), 0).sum(1)
    return sums


def cka_from_sums(n, sx, sy, xx, yy, xy) -> float:
    """Linear CKA from sums over tokens (``n``, per-dimension sums, and the three cross-product matrices)."""
    total = n.sum()
    mx, my = sx.sum(0) / total, sy.sum(0) / total
    cxy = xy.sum(0) - total * np.outer(mx, my)
    cxx = xx.sum(0) - total * np.outer(mx, mx)
    cyy = yy.sum(0) - total * np.outer(my, my)
    return float((cxy**2).sum() / np.sqrt((cxx**2).sum() * (cyy**2).sum()))


def linear_cka(x_ND: np.ndarray, y_ND: np.ndarray) -> float:
    """Linear CKA of two activation matrices over the same tokens ``[n_tokens, d]`` (d may differ)."""
    x, y = np.asarray(x_ND, dtype=np.float64), np.asarray(y_ND, dtype=np.float64)
    return cka_from_sums(np.array([len(x)], dtype=np.float64), x.sum(0)[None], y.sum(0)[None],
                         (x.T @ x)[None], (y.T @ y)[None], (x.T @ y)[None])


def mean_cosine(x_ND: np.ndarray, y_ND: np.ndarray) -> float:
    """Mean over tokens of the cosine between the two models' vectors of each token."""
    x, y = np.asarray(x_ND, dtype=np.float64), np.asarray(y_ND, dtype=np.float64)
    return float(((x * y).sum(-1) / (np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1))).mean())


def similarity_rows(sums: dict[str, np.ndarray]) -> dict[str, Any]:
    """Mean cosine and CKA of one depth with their intervals over blocks."""
    cosine = intervals.ratio_interval(sums["cos"], sums["n"], unit="blocks")
    cka = intervals.bootstrap([sums[k] for k in CKA_KEYS], cka_from_sums, unit="blocks", n_resamples=CKA_RESAMPLES)
    return {"cosine": cosine["value"], "cosine_interval": cosine, "cka": cka["value"], "cka_interval": cka,
            "n_tokens": int(sums["n"].sum())}


def special_ids(cfg: Config) -> list[int]:
    """The ids of the tokenizer's special tokens (the document separators), left out of every similarity."""
    tokenizer = get_tokenizer(cfg)
    return [int(tokenizer.convert_tokens_to_ids(t)) for t in SPECIAL_TOKENS]


def similarity_dir(cfg: Config, child: str, parent: str | None = None) -> Path:
    """Cached step ``layerwise-similarity-<child>``: cosine and CKA between ``parent`` (default: the child's parent)
    and ``child`` at every depth, on ``layerwise.similarity_blocks`` validation blocks of each domain."""
    parent = parent or REGISTRY.spec(child).parents[0]
    n_blocks = cfg.layerwise.similarity_blocks
    inputs = {"parent": model_dir(cfg, parent).name, "child": model_dir(cfg, child).name, "n_blocks": n_blocks,
              "eval_tokens": cfg.data.eval_tokens, "corpora": corpora_fingerprints(cfg, DOMAINS, "validation"),
              "resamples": CKA_RESAMPLES}

    def build(out: Path) -> dict:
        models = {who: load_hooked_lm(cfg, who) for who in (parent, child)}
        special = special_ids(cfg)
        rows = []
        for domain in DOMAINS:
            blocks = eval_blocks(cfg, domain)[:n_blocks]
            if len(blocks) < n_blocks:
                raise ValueError(f"only {len(blocks)} validation blocks of {domain}; lower layerwise.similarity_blocks "
                                 f"to {len(blocks)} or raise data.eval_tokens")
            x, y = (residual_streams(models[who], blocks) for who in (parent, child))
            keep = ~np.isin(blocks.numpy(), special)
            for depth in range(x.shape[0]):
                rows.append({"parent": parent, "child": child, "domain": domain, "depth": depth,
                             **similarity_rows(block_sums(x[depth], y[depth], keep))})
        write_json_atomic(out / "similarity.json", rows)
        return {"n_rows": len(rows)}

    code = [*DATA_CODE, "paper_lib.core.intervals", "paper_lib.models.build"]
    return cached_step(cfg.profile, f"layerwise-similarity-{child}", inputs, build, code=code)


def similarity_table(cfg: Config) -> pd.DataFrame:
    """Cosine and CKA between the deeper base and each fine-tune, per domain and depth (0: the embedding)."""
    rows = [row for child in fine_tunes() for row in read_json(similarity_dir(cfg, child) / "similarity.json")]
    table = pd.DataFrame(rows)
    table["n_layers"] = n_layers(cfg)
    table["base"] = base()
    return table
