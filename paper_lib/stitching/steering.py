"""A steering vector made on the small model, carried up, and added to the large model's residual stream.

The vector is a difference of means (the target domain's mean residual stream minus the source domain's, on
training text). Carried up it is ``v P_up`` (the difference of the two mapped means: the bias cancels). It is added
at every position of the source domain's validation text, and judged by the shift it causes in the large model's
next-token probability mass on the target domain's characteristic tokens (the ``stitching.steering_tokens`` tokens
with the highest log-odds of appearing in the target domain's training text rather than the source's). Beside it:
the large model's own vector, and a random direction of the own vector's norm (the floor).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core import intervals
from ..core.config import Config
from .family import keep_mask, special_ids, train_blocks, validation_blocks

BATCH = 8
MIN_COUNT = 10  # a characteristic token appears at least this often in the target domain's training text


def characteristic_tokens(target: torch.Tensor, source: torch.Tensor, vocab_size: int, k: int,
                          exclude: list[int] | tuple[int, ...] = ()) -> np.ndarray:
    """The ``k`` token ids with the highest smoothed log-odds of the target stream against the source stream
    (``exclude``: ids never chosen, e.g. the document separators, whose rate only reflects document lengths)."""
    ct = np.bincount(target.reshape(-1).numpy(), minlength=vocab_size).astype(np.float64)
    cs = np.bincount(source.reshape(-1).numpy(), minlength=vocab_size).astype(np.float64)
    log_odds = np.log((ct + 1) / (ct.sum() + vocab_size)) - np.log((cs + 1) / (cs.sum() + vocab_size))
    log_odds[ct < MIN_COUNT] = -np.inf
    log_odds[list(exclude)] = -np.inf
    return np.argsort(-log_odds, kind="stable")[:k]


@torch.no_grad()
def mean_difference(model, hook: str, target: torch.Tensor, source: torch.Tensor, cfg: Config) -> torch.Tensor:
    """Mean residual stream (non-special tokens) on ``target`` blocks minus that on ``source`` blocks."""
    from .family import token_activations

    return (token_activations(model, target, hook, keep_mask(cfg, target)).mean(0)
            - token_activations(model, source, hook, keep_mask(cfg, source)).mean(0))


@torch.no_grad()
def target_mass(model, hook: str, blocks: torch.Tensor, tokens: np.ndarray, vector: torch.Tensor | None) -> np.ndarray:
    """Per block: the summed next-token probability on ``tokens``, summed over positions (``vector`` added at
    ``hook`` at every position, or nothing)."""
    ids = torch.as_tensor(tokens, dtype=torch.long)
    hooks = [] if vector is None else [(hook, lambda act, hook=None: act + vector.to(act.dtype))]
    sums = []
    for start in range(0, len(blocks), BATCH):
        logits = model.run_with_hooks(blocks[start : start + BATCH], fwd_hooks=hooks, prepend_bos=False)
        sums.append(logits.float().softmax(-1)[..., ids].sum(-1).double().sum(-1).numpy())
    return np.concatenate(sums)


def steering_rows(cfg: Config, models: dict, hooks: dict, up, pairs: list[tuple[str, str]], vocab_size: int,
                  seed: int) -> list[dict[str, Any]]:
    """Per (source, target) domain pair: the large model's mass on the target's tokens unsteered, steered by its own
    vector, by the small model's vector carried ``up``, and by a random vector; the small model steered by its own
    vector beside them. Shifts are steered minus unsteered, with intervals over blocks."""
    n_train = cfg.stitching.probe_blocks
    rows = []
    for source, target in pairs:
        tr = {d: train_blocks(cfg, d, n_train) for d in (source, target)}
        tokens = characteristic_tokens(tr[target], tr[source], vocab_size, cfg.stitching.steering_tokens,
                                       special_ids(cfg))
        vectors = {who: mean_difference(models[who], hooks[who], tr[target], tr[source], cfg)
                   for who in ("small", "large")}
        generator = torch.Generator().manual_seed(seed)
        random = torch.randn(vectors["large"].shape, generator=generator)
        arms = {"large_native": ("large", vectors["large"]), "large_transferred": ("large", up(vectors["small"])),
                "large_random": ("large", random * vectors["large"].norm() / random.norm()),
                "small_native": ("small", vectors["small"])}
        blocks = validation_blocks(cfg, source)
        n = np.full(len(blocks), float(blocks.shape[1]))
        base = {who: target_mass(models[who], hooks[who], blocks, tokens, None) for who in ("small", "large")}
        row: dict[str, Any] = {"source": source, "target": target, "n_tokens": len(tokens),
                               "large_unsteered": float(base["large"].sum() / n.sum()),
                               "small_unsteered": float(base["small"].sum() / n.sum()),
                               "cosine_transferred_native": float(torch.nn.functional.cosine_similarity(
                                   up(vectors["small"]), vectors["large"], dim=0)),
                               "norm_ratio_transferred_native": float(up(vectors["small"]).norm()
                                                                      / vectors["large"].norm())}
        for arm, (who, vector) in arms.items():
            steered = target_mass(models[who], hooks[who], blocks, tokens, vector)
            shift = intervals.ratio_interval(steered - base[who], n, unit="blocks")
            row[arm] = shift["value"]
            row[f"{arm}_interval"] = shift
        rows.append(row)
    return rows
