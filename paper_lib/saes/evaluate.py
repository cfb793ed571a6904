"""SAE diagnostics with SAELens's evaluation code (L0, dead features, variance explained, reconstruction score),
with bootstrap intervals over the evaluation blocks for L0 and explained variance, and the tables and curves of
notebook 04."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core import intervals
from ..core.artifacts import cached_step, read_json, record_benchmark, write_json_atomic
from ..core.config import Config
from ..core.registry import MODEL_NAMES, REGISTRY
from ..data import DATA_CODE, corpora_fingerprints, sae_validation_blocks
from ..models import load_hooked_lm
from .encode import ENCODE_CODE, hook_activations, sae_hook
from .store import load_sae, sae_dir, training_stats
from .train import _quiet_sae_lens, _to_dataset

EVAL_UNIT = "evaluation blocks"  # the unit the diagnostics' intervals resample
# what a per-block recomputation that disagrees with SAELens's own number means
DIFFERENT_TOKENS = "the two read different tokens"
# Interval fields of the diagnostics, flattened into notebook 04's table as <name>_low, <name>_high, <name>_method.
INTERVAL_FIELDS = ("l0", "explained_variance")
# How far a per-block recomputation may sit from SAELens's own number (float32 sums in different orders) before
# it is taken to have read other text than the evaluation did.


def _eval_batch_size(n_blocks: int, largest: int = 64) -> int:
    """The largest batch size up to ``largest`` that divides ``n_blocks`` (SAELens's evals read whole batches)."""
    return next(b for b in range(min(largest, n_blocks), 0, -1) if n_blocks % b == 0)


def _eval_store(model, sae, blocks: torch.Tensor, batch: int):
    """A SAELens ``ActivationsStore`` that reads ``blocks`` in order, ``batch`` blocks at a time."""
    from sae_lens import ActivationsStore

    n_blocks, ctx = blocks.shape
    return ActivationsStore(
        model=model,
        dataset=_to_dataset(blocks),
        streaming=False,
        hook_name=sae.cfg.metadata.hook_name,
        hook_head_index=None,
        context_size=ctx,
        d_in=sae.cfg.d_in,
        n_batches_in_buffer=max(2, n_blocks),
        total_training_tokens=n_blocks * ctx,
        store_batch_size_prompts=batch,
        train_batch_size_tokens=batch * ctx,
        prepend_bos=False,
        normalize_activations="none",
        device=sae.device,
        dtype="float32",
        sequence_separator_token=None,
    )


@torch.no_grad()
def evaluate_sae(sae, model, blocks: torch.Tensor) -> dict[str, Any]:
    """Diagnostics of an SAE on token blocks with SAELens's ``run_evals``.

    Returns L0, dead-feature fraction (never active on these blocks), explained variance, the cross-entropy
    of the clean model, with the SAE's reconstruction spliced into the hook, and with the hook zero-ablated,
    the reconstruction score (zero - reconstruction) / (zero - clean), the KL score, and the per-feature
    activation frequency (``feature_frequency``, a list of d_sae floats). ``l0_interval`` and
    ``explained_variance_interval`` (``core.intervals`` records around SAELens's numbers) come from a bootstrap
    over the blocks (``block_statistics``): tokens of one block are not independent, blocks are.
    """
    from sae_lens.evals import EvalConfig, run_evals
    from sae_lens.training.activation_scaler import ActivationScaler

    n_blocks, ctx = blocks.shape
    batch = _eval_batch_size(n_blocks)
    if sae.cfg.metadata.hook_name is None:  # a hand-built SAE: the evals read the hook name from metadata
        sae.cfg.metadata.hook_name = sae_hook(sae)
    model = model.to(sae.device, print_details=False).eval()
    with _quiet_sae_lens():
        store = _eval_store(model, sae, blocks, batch)
    eval_cfg = EvalConfig(
        batch_size_prompts=batch,
        n_eval_reconstruction_batches=n_blocks // batch,
        n_eval_sparsity_variance_batches=n_blocks // batch,
        compute_ce_loss=True,
        compute_kl=True,
        compute_l2_norms=True,
        compute_sparsity_metrics=True,
        compute_variance_metrics=True,
        compute_featurewise_density_statistics=True,
    )
    with _quiet_sae_lens():
        metrics, feature_metrics = run_evals(
            sae=sae,
            activation_store=store,
            model=model,
            activation_scaler=ActivationScaler(),
            eval_config=eval_cfg,
            exclude_special_tokens=False,
        )
    frequency = np.asarray(feature_metrics["feature_density"], dtype=np.float64)
    perf = metrics["model_performance_preservation"]
    per_block = block_statistics(sae, model, blocks, batch)
    l0 = metrics["sparsity"]["l0"]
    explained_variance = metrics["reconstruction_quality"]["explained_variance"]
    return {
        "n_blocks": int(n_blocks),
        "n_tokens": int(n_blocks * ctx),
        "d_sae": int(sae.cfg.d_sae),
        "l0": l0,
        "l0_interval": intervals.around(intervals.mean_interval(per_block["l0"], unit=EVAL_UNIT), l0,
                                        "L0 per evaluation block against SAELens's evaluation", DIFFERENT_TOKENS),
        "l1": metrics["sparsity"]["l1"],
        "dead_fraction": float((frequency == 0).mean()),
        "explained_variance": explained_variance,
        "explained_variance_interval": intervals.around(
            intervals.bootstrap((per_block["residual_ss"], per_block["total_ss"]), _explained_variance, unit=EVAL_UNIT,
                                vectorized=True),
            explained_variance, "explained variance per evaluation block against SAELens's evaluation",
            DIFFERENT_TOKENS,
        ),
        "mse": metrics["reconstruction_quality"]["mse"],
        "cossim": metrics["reconstruction_quality"]["cossim"],
        "l2_ratio": metrics["shrinkage"]["l2_ratio"],
        "ce_loss_clean": perf["ce_loss_without_sae"],
        "ce_loss_reconstruction": perf["ce_loss_with_sae"],
        "ce_loss_zero_ablation": perf["ce_loss_with_ablation"],
        "reconstruction_score": perf["ce_loss_score"],
        "kl_div_score": metrics["model_behavior_preservation"]["kl_div_score"],
        "feature_frequency": frequency.tolist(),
    }


@torch.no_grad()
def block_statistics(sae, model, blocks: torch.Tensor, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Per block of ``blocks`` ``[n_blocks, ctx]`` (float64, ``[n_blocks]`` each): ``l0``, the mean number of
    active features per token; ``residual_ss``, the squared reconstruction error summed over the block's tokens and
    dimensions; ``total_ss``, the squared distance of its activations from the mean activation of all blocks.

    Summed over blocks they give SAELens's definitions: L0 is the mean of ``l0`` (blocks are equally long) and
    explained variance is 1 - sum(residual_ss) / sum(total_ss).
    """
    model = model.to(sae.device, print_details=False).eval()
    hook = sae_hook(sae)
    l0, residual, squares, sums = [], [], [], []
    for start in range(0, len(blocks), batch_size):
        acts_BCD = hook_activations(model, blocks[start : start + batch_size], hook, batch_size)
        feats_BCF = sae.encode(acts_BCD.to(sae.device))
        recon_BCD = sae.decode(feats_BCF).double().cpu()
        x_BCD = acts_BCD.double()
        l0.append((feats_BCF != 0).sum(-1).double().mean(-1).cpu())
        residual.append((x_BCD - recon_BCD).pow(2).sum((1, 2)))
        squares.append(x_BCD.pow(2).sum((1, 2)))
        sums.append(x_BCD.sum(1))
    sums_BD = torch.cat(sums)
    ctx = blocks.shape[1]
    mean_D = sums_BD.sum(0) / (len(blocks) * ctx)
    # sum over a block's tokens of |x - mean|^2 = sum |x|^2 - 2 mean . sum x + ctx |mean|^2, in float64
    total = torch.cat(squares) - 2 * sums_BD @ mean_D + ctx * mean_D.pow(2).sum()
    return {"l0": torch.cat(l0).numpy(), "residual_ss": torch.cat(residual).numpy(),
            "total_ss": total.clamp_min(0).numpy()}


def _explained_variance(residual_ss, total_ss, axis=-1):
    return 1 - residual_ss.sum(axis) / total_ss.sum(axis)


def sae_diagnostics(cfg: Config, name: str, seeding: str | None = None) -> dict[str, Any]:
    """One SAE's diagnostics on ``cfg.sae.eval_blocks`` validation blocks (cached as JSON); ``seeding`` picks
    which of the model's SAEs (``saes.sae_seed``; default ``cfg.sae.init``)."""
    path = sae_dir(cfg, name, seeding)
    inputs = {
        "sae": path.name,
        "eval_blocks": cfg.sae.eval_blocks,
        "corpora": corpora_fingerprints(cfg, REGISTRY.sae_domains(name), "validation"),
    }

    def build(out: Path) -> dict:
        result = evaluate_sae(load_sae(cfg, name, seeding), load_hooked_lm(cfg, name), sae_validation_blocks(cfg, name))
        write_json_atomic(out / "diagnostics.json", result)
        return {k: v for k, v in result.items() if k != "feature_frequency"}

    tag = "" if (seeding or cfg.sae.init) == "independent" else "-shared"
    code = [*DATA_CODE, *ENCODE_CODE, "paper_lib.saes.train", "paper_lib.saes.evaluate", "paper_lib.core.intervals"]
    done = cached_step(cfg.profile, f"sae-eval-{name}{tag}", inputs, build, code=code)
    return read_json(done / "diagnostics.json")


def diagnostics_table(cfg: Config, names: tuple[str, ...] | list[str] = MODEL_NAMES, seeding: str | None = None):
    """One row per SAE: size, seed, L1 coefficient, L0, dead fraction, explained variance, reconstruction score,
    timing (``seeding``: which of each model's SAEs; default ``cfg.sae.init``). L0 and explained variance come
    with their 95% intervals over the evaluation blocks as ``l0_low``, ``l0_high``, ``l0_method`` and
    ``explained_variance_low``, ``explained_variance_high``, ``explained_variance_method``, and as whole records
    ``l0_interval`` and ``explained_variance_interval``."""
    import pandas as pd

    rows = []
    for name in names:
        diag = sae_diagnostics(cfg, name, seeding)
        stats = training_stats(cfg, name, seeding)
        rows.append(
            {
                "model": REGISTRY.label(name),
                "seeding": seeding or cfg.sae.init,
                "seed": stats.get("seed", cfg.seed),
                "d_sae": diag["d_sae"],
                "l1_coefficient": stats["l1_coefficient"],
                "l0": diag["l0"],
                "dead_fraction": diag["dead_fraction"],
                "explained_variance": diag["explained_variance"],
                "reconstruction_score": diag["reconstruction_score"],
                **_flat_intervals(diag),
                "ce_loss_clean": diag["ce_loss_clean"],
                "ce_loss_reconstruction": diag["ce_loss_reconstruction"],
                "ce_loss_zero_ablation": diag["ce_loss_zero_ablation"],
                "train_tokens": stats["train_tokens"],
                "train_seconds": stats["train_seconds"],
                "tokens_per_second": stats["tokens_per_second"],
            }
        )
    return pd.DataFrame(rows)


def _flat_intervals(diag: dict[str, Any]) -> dict[str, Any]:
    """``<name>_low``, ``<name>_high``, ``<name>_method`` of each interval field, as table columns, and the whole
    record as ``<name>_interval`` (the form ``core.intervals`` and the report read)."""
    columns = {f"{field}_{end}": diag[f"{field}_interval"][end] for field in INTERVAL_FIELDS
               for end in ("low", "high", "method")}
    return {**columns, **{f"{field}_interval": diag[f"{field}_interval"] for field in INTERVAL_FIELDS}}


def training_curves(cfg: Config, names: tuple[str, ...] | list[str] = MODEL_NAMES):
    """The recorded training curves (step, tokens, losses, L0, explained variance) of several SAEs, long format."""
    import pandas as pd

    frames = [
        pd.DataFrame(read_json(sae_dir(cfg, n) / "training_curve.json")).assign(model=REGISTRY.label(n)) for n in names
    ]
    return pd.concat(frames, ignore_index=True)


def feature_frequencies(cfg: Config, names: tuple[str, ...] | list[str] = MODEL_NAMES):
    """Per-feature activation frequency on the validation blocks (model, feature, frequency), long format."""
    import pandas as pd

    frames = []
    for name in names:
        freq = sae_diagnostics(cfg, name)["feature_frequency"]
        frames.append(pd.DataFrame({"model": REGISTRY.label(name), "feature": range(len(freq)), "frequency": freq}))
    return pd.concat(frames, ignore_index=True)


def record_training_benchmark(cfg: Config, names: tuple[str, ...] | list[str] = MODEL_NAMES) -> dict[str, Any]:
    """Write total SAE training time and throughput to the profile's benchmarks (``sae_training``)."""
    stats = {name: training_stats(cfg, name) for name in names}
    tokens = sum(s["train_tokens"] for s in stats.values())
    seconds = sum(s["train_seconds"] for s in stats.values())
    values = {
        "total_train_seconds": round(seconds, 2),
        "total_train_tokens": tokens,
        "tokens_per_second": round(tokens / max(seconds, 1e-9), 1),
        "torch_threads": torch.get_num_threads(),
        "per_model": {
            n: {k: s[k] for k in ("train_seconds", "tokens_per_second", "train_tokens", "d_sae", "device")}
            for n, s in stats.items()
        },
    }
    record_benchmark(cfg.profile, "sae_training", values)
    return values
