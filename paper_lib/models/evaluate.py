"""Evaluating language models: next-token loss and accuracy on every domain, the model-card tables, a unigram floor."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..core.artifacts import cached_step, read_json, write_json_atomic
from ..core.config import DOMAINS, Config
from ..core.registry import REGISTRY
from ..core.runtime import require_finite
from ..data import DATA_CODE, corpora_fingerprints, eval_blocks, get_tokenizer, token_stream, tokenizer_hash, unigram_accuracy
from .build import load_hf
from .store import model_dir


@torch.inference_mode()
def evaluate_lm(model, blocks: torch.Tensor, batch_size: int = 32, desc: str = "evaluating") -> dict[str, float]:
    """Mean next-token cross-entropy and argmax accuracy of an HF or TransformerLens model on blocks."""
    total_loss = 0.0
    correct = 0
    count = 0
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(blocks), batch_size), desc=desc, leave=False):
        batch = blocks[start : start + batch_size].to(device)
        logits = model(batch)
        logits = getattr(logits, "logits", logits)[:, :-1].float()
        targets = batch[:, 1:]
        total_loss += float(
            torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
        )
        correct += int((logits.argmax(-1) == targets).sum())
        count += targets.numel()
    return {"loss": total_loss / count, "accuracy": correct / count}


def model_metrics(cfg: Config, name: str) -> dict[str, dict[str, float]]:
    """Loss and accuracy of one model on every domain's validation blocks (a cached step of its own)."""
    path = model_dir(cfg, name)
    inputs = {"model": path.name, "eval_tokens": cfg.data.eval_tokens, "tokenizer": tokenizer_hash(cfg)}
    inputs["corpora"] = corpora_fingerprints(cfg, DOMAINS, "validation")

    def build(out: Path) -> dict:
        model = load_hf(path)
        metrics = {
            d: evaluate_lm(model, eval_blocks(cfg, d), cfg.pretrain.eval_batch_size, desc=f"{name} on {d}")
            for d in DOMAINS
        }
        require_finite(metrics, f"{name}'s validation metrics", "The model is broken (diverged training?); nothing was cached.")
        write_json_atomic(out / "metrics.json", metrics)
        return {}

    done = cached_step(cfg.profile, f"eval-{name}", inputs, build, code=[*DATA_CODE, "paper_lib.models.build"])
    return read_json(done / "metrics.json")


def model_table(cfg: Config, names: tuple[str, ...] | list[str]):
    """A long table (model, domain, loss, accuracy) of models on every domain, like the model cards."""
    import pandas as pd

    rows = []
    for name in names:
        for domain, values in model_metrics(cfg, name).items():
            rows.append({"model": REGISTRY.label(name), "domain": domain, **values})
    return pd.DataFrame(rows)


def unigram_baselines(cfg: Config, domains: tuple[str, ...] | list[str], model: str = "babypython") -> dict[str, float]:
    """Accuracy of always predicting a pretrained model's most frequent training token, per validation domain."""
    own = REGISTRY.spec(model).domains
    per_domain = None if cfg.data.base_train_tokens is None else cfg.data.base_train_tokens // len(own)
    train = torch.cat([token_stream(cfg, d, "train", per_domain) for d in own])
    vocab = len(get_tokenizer(cfg))
    return {d: unigram_accuracy(train, token_stream(cfg, d, "validation", cfg.data.eval_tokens), vocab) for d in domains}

