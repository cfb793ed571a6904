"""Named token samples: the blocks each section reads (SAE training and validation, the matching sample,
the case studies' labelled search text, the autointerp text), defined once."""

from __future__ import annotations

import torch

from ..core.config import Config
from ..core.registry import REGISTRY
from .blocks import domain_blocks, mixture_blocks, to_blocks, token_stream

MATCHING_DOMAINS = ("babylm", "python")  # BabyPython validation data, as in the released code
AUTOINTERP_DOMAIN = "lua"  # Figure 6 explains and simulates features on Lua validation text


def sae_train_blocks(cfg: Config, name: str) -> torch.Tensor:
    """An SAE's training blocks: its model's data plus its ancestors', evenly by tokens, ``cfg.sae.context_size`` each."""
    domains = REGISTRY.sae_domains(name)
    return mixture_blocks(cfg, domains, "train", cfg.sae.training_tokens, cfg.sae.context_size)


def sae_validation_blocks(cfg: Config, name: str) -> torch.Tensor:
    """``cfg.sae.eval_blocks`` held-out blocks from the same domain mixture (validation split)."""
    domains = REGISTRY.sae_domains(name)
    ctx = cfg.sae.context_size
    # Ask for one extra block per domain so that flooring per domain still yields eval_blocks blocks.
    blocks = mixture_blocks(cfg, domains, "validation", (cfg.sae.eval_blocks + len(domains)) * ctx, ctx)
    return blocks[: cfg.sae.eval_blocks]


def matching_blocks(cfg: Config) -> torch.Tensor:
    """The shared token sample features are matched on: ``[n_blocks, context_size]`` BabyPython validation blocks."""
    m = cfg.matching
    # One spare block per domain so flooring per domain still leaves n_blocks blocks.
    spare = len(MATCHING_DOMAINS)
    blocks = mixture_blocks(cfg, MATCHING_DOMAINS, "validation", (m.n_blocks + spare) * m.context_size, m.context_size)
    if len(blocks) < m.n_blocks:
        raise ValueError(
            f"only {len(blocks)} validation blocks of {m.context_size} tokens are available, "
            f"matching.n_blocks asks for {m.n_blocks}: lower matching.n_blocks"
        )
    return blocks[: m.n_blocks]


def validation_stream(cfg: Config, domain: str, n_blocks: int) -> torch.Tensor:
    """The first ``n_blocks`` SAE-context blocks' worth of a domain's validation stream (1-D token ids)."""
    return token_stream(cfg, domain, "validation", n_blocks * cfg.sae.context_size)


def search_blocks(cfg: Config, domain: str = "python") -> tuple[torch.Tensor, torch.Tensor]:
    """The case studies' text: ``cfg.case_studies.n_search_blocks`` validation blocks of the SAE context and the
    stream they were cut from (labels are computed on the stream, so a line split across blocks is kept)."""
    stream = validation_stream(cfg, domain, cfg.case_studies.n_search_blocks)
    return to_blocks(stream, cfg.sae.context_size), stream


def autointerp_blocks(cfg: Config) -> torch.Tensor:
    """Figure 6's text: ``cfg.autointerp.n_blocks`` Lua validation blocks of ``cfg.sae.context_size`` tokens."""
    context = cfg.sae.context_size
    return domain_blocks(cfg, AUTOINTERP_DOMAIN, "validation", cfg.autointerp.n_blocks * context, block_size=context)
