"""A crosscoder for a [parent, child] pair of registry models: its cache key, its folder (trained on first use) and
loading it.

The activations come from the models themselves, not from SAELens's activation store: that store reads one model,
and a crosscoder needs both models' activations at the same token positions. Each model's activations are divided
by one scale (measured on the first training blocks) so that their mean squared norm is the width ``d_in``, as
SAELens normalises an SAE's inputs; without it the model with larger activations would own the loss.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from safetensors.torch import load_file, save_file

from ..core.artifacts import cached_step, read_json, write_json_atomic
from ..core.config import Config
from ..core.hooks import hook_width
from ..core.registry import REGISTRY
from ..data import DATA_CODE, corpora_fingerprints, mixture_blocks, tokenizer_hash
from ..matching.pairs import sample_blocks
from ..models import load_hooked_lm, model_dir
from ..saes.encode import ENCODE_CODE, hook_activations
from .diff import class_counts, evaluate, latent_classes, latent_scaling, relative_norms
from .model import BatchTopKCrosscoder
from .train import train_crosscoder

WEIGHTS, CONFIG, HISTORY = "crosscoder.safetensors", "crosscoder.json", "history.json"
SAMPLE_CODES = "sample_latents.npz"  # the latents on the pair's matching sample (CSR), for correlation matching
SCALE_BLOCKS = 64  # training blocks the activation scales are measured on


def _pair(parent: str, child: str) -> tuple[str, str]:
    for name in (parent, child):
        REGISTRY.spec(name)
    return parent, child


def n_latents(cfg: Config, d_in: int) -> int:
    """Latents of a crosscoder over activations of width ``d_in`` (``crosscoder.expansion_factor``, else the SAEs')."""
    return d_in * (cfg.crosscoder.expansion_factor or cfg.sae.expansion_factor)


def paired_activations(models: list, blocks: torch.Tensor, hook: str, scales: list[float],
                       chunk_blocks: int = 64) -> Iterator[torch.Tensor]:
    """``[tokens, M, D]`` activations of every model at ``hook`` on the same blocks, a chunk of blocks at a time,
    each model's divided by its scale."""
    for start in range(0, len(blocks), chunk_blocks):
        chunk = blocks[start : start + chunk_blocks]
        acts = [hook_activations(model, chunk, hook).flatten(0, 1) / scale for model, scale in zip(models, scales)]
        yield torch.stack(acts, dim=1)


def shuffled_batches(models: list, blocks: torch.Tensor, hook: str, scales: list[float], batch_tokens: int,
                     buffer_blocks: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless ``[batch_tokens, M, D]`` training batches: the blocks' activations, ``buffer_blocks`` blocks at a
    time shuffled together, epoch after epoch in a new order."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = blocks[torch.randperm(len(blocks), generator=generator)]
        for start in range(0, len(order), buffer_blocks):
            buffer = torch.cat(list(paired_activations(models, order[start : start + buffer_blocks], hook, scales)))
            buffer = buffer[torch.randperm(len(buffer), generator=generator)]
            for first in range(0, len(buffer) - batch_tokens + 1, batch_tokens):
                yield buffer[first : first + batch_tokens]


def _inputs(cfg: Config, parent: str, child: str) -> dict[str, Any]:
    domains = REGISTRY.pair_domains(parent, child)
    return {
        "models": [model_dir(cfg, parent).name, model_dir(cfg, child).name],
        "crosscoder": cfg.crosscoder.model_dump(exclude={"pairs"}),
        "hook": cfg.sae.hook_name, "context_size": cfg.sae.context_size, "expansion_factor": cfg.sae.expansion_factor,
        "domains": list(domains), "tokenizer": tokenizer_hash(cfg),
        "corpora": corpora_fingerprints(cfg, domains, "train"),
        "evaluation": {"n_blocks": cfg.matching.n_blocks, "context_size": cfg.matching.context_size,
                       "corpora": corpora_fingerprints(cfg, domains, "validation")},
        "seed": cfg.seed,
    }


def crosscoder_dir(cfg: Config, parent: str, child: str) -> Path:
    """The finished folder of the pair's crosscoder, trained on first use: weights, the relative decoder norms,
    which latents fired on the pair's matching sample, their classes, latent scaling of the exclusive ones, and
    each model's explained variance there (``meta``), and the latents' codes on that sample (``SAMPLE_CODES``).
    ``parent == child`` is the control: one model's activations
    twice (``crosscoder.control``)."""
    parent, child = _pair(parent, child)
    cc = cfg.crosscoder

    def build(out: Path) -> dict:
        domains = REGISTRY.pair_domains(parent, child)
        models = [load_hooked_lm(cfg, parent)]
        models.append(models[0] if child == parent else load_hooked_lm(cfg, child))
        hook = cfg.sae.hook_name
        d_in = hook_width(hook, models[0].cfg)
        blocks = mixture_blocks(cfg, domains, "train", cc.training_tokens, cfg.sae.context_size)
        scales = [float(hook_activations(m, blocks[:SCALE_BLOCKS], hook).pow(2).sum(-1).mean().div(d_in).sqrt())
                  for m in models]
        n_steps = max(2, len(blocks) * cfg.sae.context_size // cc.batch_tokens)
        d_latents = n_latents(cfg, d_in)
        crosscoder = BatchTopKCrosscoder(d_in, d_latents, min(cc.k, d_latents), seed=cfg.seed)
        batches = shuffled_batches(models, blocks, hook, scales, cc.batch_tokens, cc.buffer_blocks, cfg.seed)
        trained = train_crosscoder(crosscoder, batches, n_steps, cc.lr, cc.aux_alpha,
                                   dead_after_tokens=cc.dead_after_tokens, desc=f"crosscoder {parent} + {child}")
        # the sample's activations, once for the evaluation, latent scaling and the latents' codes
        sample = list(paired_activations(models, sample_blocks(cfg, domains), hook, scales))
        found = evaluate(crosscoder, sample)
        relative = relative_norms(crosscoder)
        classes = latent_classes(relative, found["live"])
        scaling = {}
        for label, present in (("child_only", 1), ("parent_only", 0)):
            latents = np.flatnonzero(classes == label)
            if len(latents):
                scaling[label] = {"latents": latents, **latent_scaling(crosscoder, sample, latents, present)}
        with torch.no_grad():
            codes = sp.vstack([sp.csr_matrix(crosscoder.encode(x).numpy()) for x in sample]).tocsr()
        sp.save_npz(out / SAMPLE_CODES, codes.astype(np.float32))
        save_file({k: v.contiguous() for k, v in crosscoder.state_dict().items()}, out / WEIGHTS)
        write_json_atomic(out / CONFIG, {**crosscoder.config(), "scales": scales, "parent": parent, "child": child})
        write_json_atomic(out / HISTORY, trained["curve"])
        np.savez(out / "latents.npz", relative_norm=relative, live=found["live"], classes=classes.astype(str),
                 **{f"{label}_{key}": value for label, values in scaling.items() for key, value in values.items()})
        return {"parent": parent, "child": child, "domains": list(domains), "d_in": d_in,
                "d_latents": crosscoder.d_latents, "k": crosscoder.k, "steps": n_steps,
                "train_tokens": n_steps * cc.batch_tokens, "threshold": trained["threshold"], "scales": scales,
                "explained_variance": dict(zip(("parent", "child"), found["explained_variance"])),
                "mean_l0": found["mean_l0"], "eval_tokens": found["n_tokens"], "classes": class_counts(classes)}

    code = [*DATA_CODE, *ENCODE_CODE, "paper_lib.crosscoder.model", "paper_lib.crosscoder.train",
            "paper_lib.crosscoder.diff", "paper_lib.matching.pairs"]
    return cached_step(cfg.profile, f"crosscoder-{parent}-{child}", _inputs(cfg, parent, child), build, code=code)


def load_crosscoder(cfg: Config, parent: str, child: str) -> tuple[BatchTopKCrosscoder, dict[str, Any]]:
    """The pair's crosscoder (in eval mode) and its saved config (with each model's activation scale)."""
    path = crosscoder_dir(cfg, parent, child)
    config = read_json(path / CONFIG)
    shape = {k: config[k] for k in ("d_in", "d_latents", "k", "n_models")}
    try:
        state = load_file(path / WEIGHTS)
        return BatchTopKCrosscoder.from_state(shape, state), config
    except Exception as err:
        raise RuntimeError(f"cannot load the crosscoder in {path} ({err}). The folder is corrupt: delete it and "
                           "rerun.") from err


def latent_table(cfg: Config, parent: str, child: str) -> dict[str, np.ndarray]:
    """The pair's per-latent arrays: ``relative_norm``, ``live``, ``classes`` and latent scaling of exclusive
    latents (``child_only_nu_reconstruction``, ...)."""
    with np.load(crosscoder_dir(cfg, parent, child) / "latents.npz", allow_pickle=False) as found:
        return {key: found[key] for key in found.files}
