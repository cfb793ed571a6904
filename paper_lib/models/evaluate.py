"""Evaluating language models: next-token loss and accuracy on every domain, the model-card tables, a unigram floor.

Every loss and accuracy comes with a 95% confidence interval over validation blocks (``core.intervals``): the
blocks are the unit that is resampled, because tokens within a block are not independent (a model that gets a
block's opening wrong tends to get its continuation wrong too). The per-block sums behind each number are kept
beside it (``block_sums.npz``), so any later comparison of two models on the same blocks can be paired.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core import intervals
from ..core.artifacts import cached_step, read_json, write_json_atomic
from ..core.config import DOMAINS, Config
from ..core.registry import REGISTRY
from ..core.runtime import require_finite
from ..data import DATA_CODE, corpora_fingerprints, eval_blocks, get_tokenizer, token_stream, tokenizer_hash, unigram_accuracy
from .build import load_hf
from .store import model_dir

EVAL_UNIT = "validation blocks"  # the unit every loss/accuracy interval resamples
BLOCK_SUMS_FILE = "block_sums.npz"  # per-block sums in an eval step folder: {domain}_{loss,correct,tokens}
BLOCK_SUMS = ("loss", "correct", "tokens")  # summed cross-entropy, correct argmax predictions, predicted tokens


@torch.inference_mode()
def evaluate_lm(model, blocks: torch.Tensor, batch_size: int = 32, desc: str = "evaluating") -> dict[str, Any]:
    """Mean next-token cross-entropy and argmax accuracy of an HF or TransformerLens model on blocks.

    Returns ``loss`` and ``accuracy`` (floats over all predicted tokens) and, per block (arrays of length
    ``len(blocks)``), ``block_loss`` (summed cross-entropy, float64), ``block_correct`` and ``block_tokens``
    (int64): the sums a confidence interval over blocks resamples. The totals are accumulated batch by batch
    exactly as before the per-block sums existed, so ``loss`` and ``accuracy`` are bit-identical to earlier runs;
    the block sums add up to them up to rounding in the last bits (``loss``) or exactly (``accuracy``).
    """
    total_loss = 0.0
    correct = 0
    count = 0
    block_loss, block_correct, block_tokens = [], [], []
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(blocks), batch_size), desc=desc, leave=False):
        batch = blocks[start : start + batch_size].to(device)
        logits = model(batch)
        logits = getattr(logits, "logits", logits)[:, :-1].float()
        targets = batch[:, 1:]
        # cross_entropy is log_softmax then nll_loss; computing the log-probabilities once gives the same summed
        # loss, bit for bit, and the per-token losses for the block sums at no second softmax
        log_probs = torch.nn.functional.log_softmax(logits.reshape(-1, logits.shape[-1]), dim=-1)
        total_loss += float(torch.nn.functional.nll_loss(log_probs, targets.reshape(-1), reduction="sum"))
        token_loss_BT = torch.nn.functional.nll_loss(log_probs, targets.reshape(-1), reduction="none").view(targets.shape)
        hits_BT = logits.argmax(-1) == targets
        correct += int(hits_BT.sum())
        count += targets.numel()
        block_loss.append(token_loss_BT.double().sum(1).cpu())
        block_correct.append(hits_BT.sum(1).cpu())
        block_tokens.append(torch.full((len(targets),), targets.shape[1], dtype=torch.int64))
    if count == 0:
        raise ValueError(f"{desc}: no tokens to predict ({tuple(blocks.shape)} blocks); each block needs >= 2 tokens.")
    return {
        "loss": total_loss / count,
        "accuracy": correct / count,
        "block_loss": torch.cat(block_loss).numpy().astype(np.float64),
        "block_correct": torch.cat(block_correct).numpy().astype(np.int64),
        "block_tokens": torch.cat(block_tokens).numpy().astype(np.int64),
    }


def block_interval(value: float, numerators, denominators) -> intervals.Interval:
    """``value`` (a loss or accuracy over all tokens) with its 95% interval: the ratio of per-block sums, blocks
    resampled (``intervals.ratio_interval``). The record carries ``value`` as reported: the ratio of the block
    sums can differ from it in the last bits (another summation order)."""
    record = intervals.ratio_interval(numerators, denominators, unit=EVAL_UNIT)
    return intervals.around(record, value, "a metric over validation blocks")


def metric_intervals(metrics: dict[str, Any]) -> dict[str, intervals.Interval]:
    """``loss_interval`` and ``accuracy_interval`` of one ``evaluate_lm`` result."""
    return {
        "loss_interval": block_interval(metrics["loss"], metrics["block_loss"], metrics["block_tokens"]),
        "accuracy_interval": block_interval(metrics["accuracy"], metrics["block_correct"], metrics["block_tokens"]),
    }


def _eval_step(cfg: Config, name: str) -> Path:
    path = model_dir(cfg, name)
    inputs = {"model": path.name, "eval_tokens": cfg.data.eval_tokens, "tokenizer": tokenizer_hash(cfg)}
    inputs["corpora"] = corpora_fingerprints(cfg, DOMAINS, "validation")

    def build(out: Path) -> dict:
        model = load_hf(path)
        metrics, sums = {}, {}
        for d in DOMAINS:
            result = evaluate_lm(model, eval_blocks(cfg, d), cfg.pretrain.eval_batch_size, desc=f"{name} on {d}")
            require_finite({d: {k: result[k] for k in ("loss", "accuracy")}}, f"{name}'s validation metrics",
                           "The model is broken (diverged training?); nothing was cached.")
            metrics[d] = {"loss": result["loss"], "accuracy": result["accuracy"], **metric_intervals(result)}
            sums.update({f"{d}_{s}": result[f"block_{s}"] for s in BLOCK_SUMS})
        np.savez(out / BLOCK_SUMS_FILE, **sums)
        write_json_atomic(out / "metrics.json", metrics)
        return {}

    code = [*DATA_CODE, "paper_lib.models.build", "paper_lib.models.evaluate", "paper_lib.core.intervals"]
    return cached_step(cfg.profile, f"eval-{name}", inputs, build, code=code)


def model_metrics(cfg: Config, name: str) -> dict[str, dict[str, Any]]:
    """Loss and accuracy of one model on every domain's validation blocks (a cached step of its own).

    ``{domain: {"loss", "accuracy", "loss_interval", "accuracy_interval"}}``; each interval is a
    ``core.intervals`` record over the validation blocks.
    """
    return read_json(_eval_step(cfg, name) / "metrics.json")


def model_block_sums(cfg: Config, name: str) -> dict[str, dict[str, np.ndarray]]:
    """The per-block sums behind ``model_metrics``: ``{domain: {"loss", "correct", "tokens"}}``, each an array with
    one entry per validation block (the same blocks, in the same order, for every model)."""
    with np.load(_eval_step(cfg, name) / BLOCK_SUMS_FILE) as stored:
        return {d: {s: stored[f"{d}_{s}"] for s in BLOCK_SUMS} for d in DOMAINS}


def metric_difference(cfg: Config, name: str, reference: str, domain: str, metric: str = "accuracy") -> intervals.Interval:
    """``metric`` of model ``name`` minus that of ``reference`` on one domain, with a 95% interval paired over the
    validation blocks (both models saw the same blocks, so resampling them together removes the blocks' own
    difficulty from the interval)."""
    if metric not in ("loss", "accuracy"):
        raise ValueError(f"metric must be 'loss' or 'accuracy'; got {metric!r}")
    ours, theirs = model_block_sums(cfg, name)[domain], model_block_sums(cfg, reference)[domain]
    if not np.array_equal(ours["tokens"], theirs["tokens"]):
        raise ValueError(f"{name} and {reference} were evaluated on different {domain} blocks; rebuild their evaluations.")
    total = "loss" if metric == "loss" else "correct"
    value = model_metrics(cfg, name)[domain][metric] - model_metrics(cfg, reference)[domain][metric]
    record = intervals.bootstrap(
        (ours[total].astype(np.float64), theirs[total].astype(np.float64), ours["tokens"].astype(np.float64)),
        lambda a, b, n, axis=-1: a.sum(axis) / n.sum(axis) - b.sum(axis) / n.sum(axis),
        unit=EVAL_UNIT, paired=True, vectorized=True,
    )
    return intervals.around(record, value, f"{name} minus {reference} on {domain}")


def model_table(cfg: Config, names: tuple[str, ...] | list[str]):
    """A long table of models on every domain, like the model cards: model, domain, loss, accuracy, each
    metric's 95% interval over validation blocks as plain columns (``loss_low``, ``loss_high``,
    ``accuracy_low``, ``accuracy_high``, for plots) and as the full records (``loss_interval``,
    ``accuracy_interval``: method and number of blocks included, for the saved JSON)."""
    import pandas as pd

    rows = []
    for name in names:
        for domain, values in model_metrics(cfg, name).items():
            row = {"model": REGISTRY.label(name), "domain": domain, "loss": values["loss"], "accuracy": values["accuracy"]}
            for metric in ("loss", "accuracy"):
                record = values[f"{metric}_interval"]
                row[f"{metric}_low"], row[f"{metric}_high"] = record["low"], record["high"]
            rows.append({**row, "loss_interval": values["loss_interval"], "accuracy_interval": values["accuracy_interval"]})
    return pd.DataFrame(rows)


def unigram_baselines(cfg: Config, domains: tuple[str, ...] | list[str], model: str = "babypython") -> dict[str, float]:
    """Accuracy of always predicting a pretrained model's most frequent training token, per validation domain."""
    own = REGISTRY.spec(model).domains
    per_domain = None if cfg.data.base_train_tokens is None else cfg.data.base_train_tokens // len(own)
    train = torch.cat([token_stream(cfg, d, "train", per_domain) for d in own])
    vocab = len(get_tokenizer(cfg))
    return {d: unigram_accuracy(train, token_stream(cfg, d, "validation", cfg.data.eval_tokens), vocab) for d in domains}
