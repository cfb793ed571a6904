"""The deeper family's language models beside the one-layer family's: accuracy at equal training tokens, and what
each fine-tune gains on its own domain (paired differences over the same validation blocks)."""

from __future__ import annotations

import pandas as pd

from ..core.registry import REGISTRY
from ..models import model_metrics, training_stats
from ..models.evaluate import metric_difference
from .family import base, fine_tunes

ONE_LAYER_BASE = "babypython"  # the one-layer family's base, trained on the same data and tokenizer


def model_table(cfg) -> pd.DataFrame:
    """One row per comparison, each a paired accuracy difference with its 95% interval over validation blocks:
    the deeper base against the one-layer base on each of their training domains (with both models' training
    tokens, which the comparison needs equal), then each deeper fine-tune against the deeper base on its own
    domain (the gain), beside the one-layer fine-tune's gain."""
    rows = []
    deep, one = base(), ONE_LAYER_BASE
    for domain in REGISTRY.spec(deep).domains:
        diff = metric_difference(cfg, deep, one, domain)
        rows.append({
            "comparison": "deeper base - one-layer base", "model": deep, "reference": one, "domain": domain,
            "accuracy": model_metrics(cfg, deep)[domain]["accuracy"],
            "reference_accuracy": model_metrics(cfg, one)[domain]["accuracy"],
            "difference": diff["value"], "difference_interval": diff,
            "train_tokens": training_stats(cfg, deep)["train_tokens"],
            "reference_train_tokens": training_stats(cfg, one)["train_tokens"],
        })
    for child in fine_tunes():
        domain = REGISTRY.spec(child).domains[0]
        one_child = next(n for n in REGISTRY.names if REGISTRY.spec(n).recipe == "finetune"
                         and REGISTRY.spec(n).domains == REGISTRY.spec(child).domains)
        diff, one_diff = metric_difference(cfg, child, deep, domain), metric_difference(cfg, one_child, one, domain)
        rows.append({
            "comparison": "fine-tune gain on its own domain", "model": child, "reference": deep, "domain": domain,
            "accuracy": model_metrics(cfg, child)[domain]["accuracy"],
            "reference_accuracy": model_metrics(cfg, deep)[domain]["accuracy"],
            "difference": diff["value"], "difference_interval": diff,
            "one_layer_gain": one_diff["value"], "one_layer_gain_interval": one_diff,
            "train_tokens": training_stats(cfg, child)["train_tokens"],
        })
    return pd.DataFrame(rows)
