"""The cached steps of notebook 08 at the checkpoints of a fine-tune: evaluation, and a full SAE at a snapshot matched
to the parent's. Kept apart from the tables built on them (``measures``), so editing a table does not retrain an SAE:
each step's cache key covers the source of the module that defines it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..core.artifacts import cached_step, write_json_atomic
from ..core.config import Config
from ..core.registry import DOMAINS, REGISTRY
from ..core.runtime import default_device, require_finite
from ..data import DATA_CODE, corpora_fingerprints, eval_blocks, sae_train_blocks, tokenizer_hash
from ..matching import classify
from ..matching.pairs import (
    _vocab_size, activation_sample_dir, correlate_samples, load_activation_sample, min_support, sample_blocks,
    sample_domains,
)
from ..models.build import load_hf, to_hooked
from ..models.evaluate import BLOCK_SUMS, evaluate_lm, metric_intervals
from ..saes import encode_with, l1_coefficient, train_sae
from ..saes.encode import ENCODE_CODE
from ..saes.store import sae_seed
from ..saes.train import _quiet_sae_lens
from .trajectory import Checkpoint

MATCH_METHOD = "position"  # the controls' headline method (token mode matches chance pairs; see notebook 05)


def first_blocks(cfg: Config, domain: str, n: int):
    """The first ``n`` validation blocks of a domain (``eval_blocks``), with an error naming the setting to lower."""
    blocks = eval_blocks(cfg, domain)
    if len(blocks) < n:
        raise ValueError(f"dynamics.eval_blocks is {n} but {domain} has {len(blocks)} validation blocks of "
                         f"{cfg.data.block_size} tokens (data.eval_tokens): lower dynamics.eval_blocks")
    return blocks[:n]


def eval_dir(cfg: Config, weights: Path, weights_key: str) -> Path:
    """Loss and accuracy of the model in ``weights`` on the first ``cfg.dynamics.eval_blocks`` validation blocks of
    every domain (cached): ``metrics.json`` (with intervals over blocks) and ``block_sums.npz``."""
    n = cfg.dynamics.eval_blocks
    inputs = {"weights": weights_key, "eval_blocks": n, "eval_tokens": cfg.data.eval_tokens,
              "tokenizer": tokenizer_hash(cfg), "corpora": corpora_fingerprints(cfg, DOMAINS, "validation")}

    def build(out: Path) -> dict[str, Any]:
        model = load_hf(weights)
        metrics, sums = {}, {}
        for domain in DOMAINS:
            result = evaluate_lm(model, first_blocks(cfg, domain, n), cfg.pretrain.eval_batch_size,
                                 desc=f"{weights_key} on {domain}")
            require_finite({domain: {k: result[k] for k in ("loss", "accuracy")}}, f"{weights_key}'s metrics",
                           "The checkpoint is broken; nothing was cached.")
            metrics[domain] = {"loss": result["loss"], "accuracy": result["accuracy"], **metric_intervals(result)}
            sums.update({f"{domain}_{s}": result[f"block_{s}"] for s in BLOCK_SUMS})
        np.savez(out / "block_sums.npz", **sums)
        write_json_atomic(out / "metrics.json", metrics)
        return {}

    code = [*DATA_CODE, "paper_lib.models.build", "paper_lib.models.evaluate", "paper_lib.core.intervals"]
    return cached_step(cfg.profile, "dynamics-eval", inputs, build, code=code)


def snapshot_sae_dir(cfg: Config, ckpt: Checkpoint) -> Path:
    """An SAE on a snapshot, trained exactly as the fine-tune's own SAE (same data mixture, sparsity and seed)."""
    import sae_lens

    name = ckpt.model
    domains = REGISTRY.sae_domains(name)
    inputs = {"weights": ckpt.key,
              "sae": {k: v for k, v in cfg.sae.model_dump().items() if k not in ("l1_coefficient", "eval_blocks", "init")},
              "l1_coefficient": l1_coefficient(cfg, name), "domains": list(domains), "tokenizer": tokenizer_hash(cfg),
              "corpora": corpora_fingerprints(cfg, domains, "train"), "seed": sae_seed(cfg, name),
              "sae_lens": sae_lens.__version__}

    def build(out: Path) -> dict[str, Any]:
        model = to_hooked(load_hf(ckpt.path))
        return train_sae(cfg, name, model, sae_train_blocks(cfg, name), out, l1_coefficient(cfg, name),
                         sae_seed(cfg, name))

    code = [*DATA_CODE, *ENCODE_CODE, "paper_lib.saes.train"]
    return cached_step(cfg.profile, f"sae-{name}-snapshot", inputs, build, code=code)


def snapshot_match_dir(cfg: Config, ckpt: Checkpoint) -> Path:
    """The parent's SAE matched to the snapshot's SAE on the pair's sample with the controls' method (position-mode
    Pearson r, many-to-many, ``cfg.matching.threshold``), cached: ``match.npz`` (per parent feature, its best r)."""
    parent = REGISTRY.spec(ckpt.model).parents[0]
    domains = sample_domains(cfg, parent, ckpt.model)
    sae_folder = snapshot_sae_dir(cfg, ckpt)
    inputs = {"parent_sample": activation_sample_dir(cfg, parent, domains).name, "sae": sae_folder.name,
              "weights": ckpt.key, "threshold": cfg.matching.threshold, "min_support": min_support(cfg, MATCH_METHOD)}

    def build(out: Path) -> dict[str, Any]:
        from sae_lens import SAE

        x, tokens = load_activation_sample(cfg, parent, domains)
        with _quiet_sae_lens():
            sae = SAE.load_from_disk(sae_folder / "sae", device=default_device(), dtype="float32").eval()
        model = to_hooked(load_hf(ckpt.path)).to(sae.device, print_details=False)
        blocks = sample_blocks(cfg, domains)
        pieces = [sp.csr_matrix(encode_with(model, sae, blocks[s : s + 64], 64).reshape(-1, sae.cfg.d_sae).numpy())
                  for s in range(0, len(blocks), 64)]
        y = sp.vstack(pieces).tocsr()
        corr, _ = correlate_samples(x, y, tokens, MATCH_METHOD, _vocab_size(cfg, tokens), min_support(cfg, MATCH_METHOD),
                                    desc=f"{parent} -> {ckpt.key}")
        dead_p = np.bincount(x.indices, minlength=x.shape[1]) == 0
        dead_c = np.bincount(y.indices, minlength=y.shape[1]) == 0
        result = classify(corr, dead_p, dead_c, cfg.matching.threshold, parent, ckpt.model, MATCH_METHOD, x.shape[0])
        np.savez(out / "match.npz", best_corr_for_parent=result.best_corr_for_parent, dead_parent=dead_p,
                 dead_child=dead_c)
        return result.counts()

    code = ["paper_lib.matching.pairs", "paper_lib.matching.correlate", "paper_lib.matching.classify",
            "paper_lib.matching.kernels", *ENCODE_CODE]
    return cached_step(cfg.profile, f"matching-{parent}-{ckpt.model}-snapshot", inputs, build, code=code)
