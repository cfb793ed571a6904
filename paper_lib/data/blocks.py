"""Token streams cached per corpus, cut into fixed-length blocks (256 tokens for the LMs, 24 for the SAEs)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.artifacts import cached_step
from ..core.config import Config
from .corpora import DataError, _check_domain_split, corpus_fingerprint, describe_corpus, load_texts
from .tokenizer import get_tokenizer, tokenizer_hash


def token_stream(cfg: Config, domain: str, split: str, max_tokens: int | None = None) -> torch.Tensor:
    """A 1-D tensor of token ids: the split's documents in a seeded shuffled order, each followed by EOS.

    Only as many documents as needed for ``max_tokens`` are tokenised (the hub corpora are large);
    the stream is cached in the run folder.
    """
    _check_domain_split(domain, split)
    inputs = {
        "domain": domain,
        "split": split,
        "max_tokens": max_tokens,
        "tokenizer": tokenizer_hash(cfg),
        "corpus": corpus_fingerprint(cfg, domain, split),
        "seed": cfg.seed,
    }

    def build(out_dir: Path) -> dict:
        tokenizer = get_tokenizer(cfg)
        eos_id = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
        dataset = load_texts(cfg, domain, split)
        order = np.random.default_rng(cfg.seed).permutation(len(dataset))
        chunks: list[np.ndarray] = []
        total = 0
        batch = 256
        with tqdm(total=max_tokens, desc=f"tokenising {domain}/{split}", unit="tok", leave=False) as bar:
            for start in range(0, len(order), batch):
                texts = list(dataset.select(order[start : start + batch].tolist())["text"])
                for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
                    ids.append(eos_id)
                    chunks.append(np.asarray(ids, dtype=np.int32))
                    total += len(ids)
                    bar.update(len(ids))
                if max_tokens is not None and total >= max_tokens:
                    break
        stream = np.concatenate(chunks)[:max_tokens]
        np.save(out_dir / "tokens.npy", stream)
        return {"n_tokens": int(stream.size), "n_documents": len(chunks)}

    path = cached_step(cfg.profile, f"tokens-{domain}-{split}", inputs, build, code=["paper_lib.data.corpora"])
    return torch.from_numpy(np.load(path / "tokens.npy").astype(np.int64))


class DataWarning(UserWarning):
    """Data that was usable but not what was asked for (a mixture cut short by a small corpus)."""


def to_blocks(stream: torch.Tensor, block_size: int, source: str = "the token stream") -> torch.Tensor:
    """Cut a token stream into ``[n_blocks, block_size]`` (the remainder is dropped); ``source`` names it in errors."""
    n_blocks = stream.numel() // block_size
    if n_blocks == 0:
        raise DataError(
            f"{source}: only {stream.numel()} tokens, not enough for one block of {block_size}. Add text to the "
            "corpus, or lower the block size (data.block_size for the models, sae.context_size for the SAEs)."
        )
    return stream[: n_blocks * block_size].view(n_blocks, block_size)


def domain_blocks(
    cfg: Config, domain: str, split: str, max_tokens: int | None = None, block_size: int | None = None
) -> torch.Tensor:
    """Packed ``[n_blocks, block_size]`` token ids of one domain (block size defaults to the LM's)."""
    stream = token_stream(cfg, domain, split, max_tokens)
    return to_blocks(stream, block_size or cfg.data.block_size, describe_corpus(cfg, domain, split))


def mixture_blocks(
    cfg: Config, domains: tuple[str, ...] | list[str], split: str, total_tokens: int | None, block_size: int
) -> torch.Tensor:
    """Blocks drawn evenly by tokens from several domains, shuffled together with the run's seed.

    Each domain contributes ``total_tokens / len(domains)`` tokens, or, if one has fewer, as many as the
    smallest has, so the mixture stays even (the paper's base data matches BabyLM with as much Python).
    """
    per_domain = None if total_tokens is None else total_tokens // len(domains)
    streams = [token_stream(cfg, d, split, per_domain) for d in domains]
    even = min(s.numel() for s in streams)
    if per_domain is not None and even < per_domain:
        short = min(zip(domains, streams), key=lambda pair: pair[1].numel())[0]
        warnings.warn(
            f"the {'+'.join(domains)} {split} mixture asked for {per_domain} tokens per domain, but "
            f"{describe_corpus(cfg, short, split)} has only {even}: every domain is cut to {even} tokens to keep "
            f"the mixture even ({per_domain * len(domains)} -> {even * len(domains)} tokens in all). Add text to "
            "that corpus or ask for fewer tokens.",
            DataWarning,
            stacklevel=2,
        )
    blocks = torch.cat([to_blocks(s[:even], block_size, describe_corpus(cfg, d, split)) for d, s in zip(domains, streams)])
    generator = torch.Generator().manual_seed(cfg.seed)
    return blocks[torch.randperm(len(blocks), generator=generator)]


def eval_blocks(cfg: Config, domain: str) -> torch.Tensor:
    """Validation blocks of one domain used for every loss/accuracy number."""
    return domain_blocks(cfg, domain, "validation", cfg.data.eval_tokens)


def unigram_accuracy(train_stream: torch.Tensor, eval_stream: torch.Tensor, vocab_size: int) -> float:
    """Accuracy of always predicting the most frequent training token: the floor a real LM must beat."""
    counts = torch.bincount(train_stream, minlength=vocab_size)
    return float((eval_stream[1:] == counts.argmax()).float().mean())
