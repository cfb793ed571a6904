"""Sparse autoencoders on ``blocks.0.mlp.hook_post`` of each model, trained and evaluated with SAELens.

One SAE per model (BabyPython, Lua, TinyStories, LuaStories), trained with SAELens's
``LanguageModelSAETrainingRunner`` on the converted TransformerLens model and a pre-tokenised local
dataset (no hub, no wandb). Training data are the model's own data plus its parents', evenly by tokens.

Choices (the paper's where it states them, SAELens's standard ReLU SAE otherwise):

* untied encoder/decoder, encoder bias, decoder bias subtracted from the input (``apply_b_dec_to_input``);
* decoder bias initialised at the geometric median of a sample of activations (SAELens 6 dropped its own
  geometric-median initialisation, so we compute it here with Weiszfeld's algorithm and hand SAELens the
  initialised SAE through ``override_sae``);
* SAELens's "heuristic" initialisation: decoder rows of norm ``decoder_init_norm``, encoder = decoder^T;
* SAELens does not constrain decoder rows to unit norm; its L1 term weights each feature by its decoder
  norm instead. After training we fold the decoder norms into the encoder (``fold_W_dec_norm``), so the
  saved SAE has the paper's unit-norm decoder rows and the same reconstructions;
* L1 warm-up (``l1_warm_up_fraction``) and optional lr warm-up/decay; SAELens's standard SAE has no
  dead-feature resampling (ghost grads and resampling are gone in SAELens 6), so none is used;
* the sparsity coefficient is per model and per profile, picked by measuring L0 (SAELens's L1 scale is
  not the paper's: the MSE is summed over dimensions and the L1 is decoder-norm weighted).

SAELens logs training metrics to wandb only; we record a training curve by wrapping the SAE's
``training_forward_pass`` (every ``log_every`` steps: MSE, L1, L0, batch explained variance).
Diagnostics come from SAELens's evaluation code (``sae_lens.evals``) on held-out validation blocks.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .artifacts import cached_step, manifest, read_json, record_benchmark, write_json_atomic
from .config import MODEL_NAMES, Config
from .data import corpus_fingerprint, mixture_blocks, tokenizer_hash

HOOK = "blocks.0.mlp.hook_post"
STEP_VERSION = 1
# Domains each SAE is trained and evaluated on: the model's own data plus its parents'.
SAE_DOMAINS = {
    "babypython": ("babylm", "python"),
    "lua": ("babylm", "python", "lua"),
    "tinystories": ("babylm", "python", "tinystories"),
    "luastories": ("babylm", "python", "lua", "tinystories"),
}
N_CURVE_POINTS = 100  # points recorded on each training curve


def _check_name(name: str) -> None:
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model '{name}'; models are {', '.join(MODEL_NAMES)}")


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def l1_coefficient(cfg: Config, name: str) -> float:
    """The sparsity coefficient of one model's SAE (``cfg.sae.l1_coefficient[name]``)."""
    _check_name(name)
    if name not in cfg.sae.l1_coefficient:
        raise ValueError(
            f"sae.l1_coefficient has no value for '{name}'; add it to the profile under sae.l1_coefficient."
        )
    return cfg.sae.l1_coefficient[name]


# ------------------------------------------------------------------------------------------- activations


@torch.no_grad()
def hook_activations(model, blocks: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """``blocks.0.mlp.hook_post`` of a HookedTransformer on token blocks: ``[n_blocks, ctx, d_mlp]`` (float32).

    Stops the forward pass after block 0 (no unembedding), batching internally.
    """
    device = next(model.parameters()).device
    outs = []
    for start in range(0, len(blocks), batch_size):
        batch = blocks[start : start + batch_size].to(device)
        _, cache = model.run_with_cache(batch, names_filter=[HOOK], stop_at_layer=1, prepend_bos=False)
        outs.append(cache[HOOK].float().cpu())
    return torch.cat(outs)


def geometric_median(points_ND: torch.Tensor, max_iter: int = 100, tol: float = 1e-5) -> torch.Tensor:
    """Geometric median of the rows of ``points_ND`` by Weiszfeld's algorithm (the paper's b_dec init)."""
    points = points_ND.double()
    median = points.mean(0)
    for _ in range(max_iter):
        dist = (points - median).norm(dim=1).clamp(min=1e-8)
        weights = 1.0 / dist
        new = (weights[:, None] * points).sum(0) / weights.sum()
        shift = (new - median).norm() / median.norm().clamp(min=1e-8)
        median = new
        if shift < tol:
            break
    return median.float()


# ------------------------------------------------------------------------------------------------ training


def train_blocks(cfg: Config, name: str) -> torch.Tensor:
    """The SAE's training blocks: its domains evenly by tokens, ``cfg.sae.context_size`` tokens each."""
    _check_name(name)
    return mixture_blocks(cfg, SAE_DOMAINS[name], "train", cfg.sae.training_tokens, cfg.sae.context_size)


def validation_blocks(cfg: Config, name: str) -> torch.Tensor:
    """``cfg.sae.eval_blocks`` held-out blocks from the same domain mixture (validation split)."""
    _check_name(name)
    ctx = cfg.sae.context_size
    # Ask for one extra block per domain so that flooring per domain still yields eval_blocks blocks.
    n_domains = len(SAE_DOMAINS[name])
    blocks = mixture_blocks(cfg, SAE_DOMAINS[name], "validation", (cfg.sae.eval_blocks + n_domains) * ctx, ctx)
    return blocks[: cfg.sae.eval_blocks]


def _sae_inputs(cfg: Config, name: str, model_path: Path) -> dict[str, Any]:
    import sae_lens

    sae_cfg = {k: v for k, v in cfg.sae.__dict__.items() if k not in ("l1_coefficient", "eval_blocks")}
    return {
        "model": model_path.name,
        "sae": sae_cfg,
        "l1_coefficient": l1_coefficient(cfg, name),
        "domains": SAE_DOMAINS[name],
        "tokenizer": tokenizer_hash(cfg),
        "corpora": {d: corpus_fingerprint(cfg, d, "train") for d in SAE_DOMAINS[name]},
        "seed": cfg.seed,
        "sae_lens": sae_lens.__version__,
    }


def _runner_config(cfg: Config, name: str, d_in: int, n_blocks: int, device: str):
    from sae_lens import LanguageModelSAERunnerConfig, LoggingConfig, StandardTrainingSAEConfig

    s = cfg.sae
    batch = s.train_batch_size_tokens
    if s.n_batches_in_buffer * s.context_size < batch:
        raise ValueError(
            f"sae.n_batches_in_buffer * sae.context_size = {s.n_batches_in_buffer * s.context_size} tokens is "
            f"smaller than one training batch ({batch} tokens); SAELens needs a buffer of at least one batch. "
            f"Raise sae.n_batches_in_buffer to {math.ceil(batch / s.context_size)} or more."
        )
    steps = s.training_tokens // batch
    if steps < 1:
        raise ValueError(f"sae.training_tokens ({s.training_tokens}) is less than one batch ({batch} tokens).")
    sae_cfg = StandardTrainingSAEConfig(
        d_in=d_in,
        d_sae=d_in * s.expansion_factor,
        l1_coefficient=l1_coefficient(cfg, name),
        l1_warm_up_steps=int(s.l1_warm_up_fraction * steps),
        decoder_init_norm=s.decoder_init_norm,
        apply_b_dec_to_input=True,
        normalize_activations="none",
        dtype="float32",
        device=device,
    )
    return LanguageModelSAERunnerConfig(
        sae=sae_cfg,
        model_name=f"paper-{name}",  # a label only: the model is passed in, nothing is loaded by name
        hook_name=s.hook_name,
        dataset_path=f"local:{'+'.join(SAE_DOMAINS[name])}",
        is_dataset_tokenized=True,
        streaming=False,
        context_size=s.context_size,
        prepend_bos=False,  # our blocks are packed documents separated by EOS, as the LMs were trained
        sequence_separator_token=None,
        exclude_special_tokens=False,
        training_tokens=s.training_tokens,
        train_batch_size_tokens=batch,
        n_batches_in_buffer=s.n_batches_in_buffer,
        store_batch_size_prompts=min(s.store_batch_size_prompts, n_blocks),
        lr=s.lr,
        adam_beta1=s.adam_beta1,
        adam_beta2=s.adam_beta2,
        lr_scheduler_name="constant",
        lr_warm_up_steps=int(s.lr_warm_up_fraction * steps),
        lr_decay_steps=int(s.lr_decay_fraction * steps),
        device=device,
        dtype="float32",
        seed=cfg.seed,
        logger=LoggingConfig(log_to_wandb=False),
        n_checkpoints=0,
        checkpoint_path=None,
        output_path=None,  # we save the (decoder-normalised) SAE ourselves
        model_from_pretrained_kwargs={},  # nothing is loaded by name (the model is converted locally)
        verbose=False,
    )


class _CurveRecorder:
    """Wraps ``TrainingSAE.training_forward_pass`` to record losses every ``every`` steps.

    SAELens logs its training metrics to wandb only; this keeps a small curve in memory instead.
    """

    def __init__(self, sae, every: int, tokens_per_step: int):
        self.forward = sae.training_forward_pass
        self.every = max(1, every)
        self.tokens_per_step = tokens_per_step
        self.step = 0
        self.rows: list[dict[str, float]] = []
        self.started = time.time()

    def __call__(self, step_input):
        out = self.forward(step_input)
        self.step += 1
        if self.step % self.every == 0 or self.step == 1:
            with torch.no_grad():
                x = out.sae_in.float()
                resid = (out.sae_out - x).pow(2).sum(-1).mean()
                total = (x - x.mean(0)).pow(2).sum(-1).mean()
                self.rows.append(
                    {
                        "step": self.step,
                        "tokens": self.step * self.tokens_per_step,
                        "seconds": round(time.time() - self.started, 2),
                        "loss": float(out.loss),
                        "mse_loss": float(out.losses["mse_loss"]),
                        "l1_loss": float(out.losses.get("l1_loss", torch.tensor(0.0))),
                        "l1_coefficient": float(step_input.coefficients.get("l1", 0.0)),
                        "l0": float((out.feature_acts > 0).float().sum(-1).mean()),
                        "explained_variance": float(1 - resid / total),
                    }
                )
        return out


@contextlib.contextmanager
def _quiet_sae_lens():
    """Silence SAELens warnings that do not apply here (it counts dataset rows as tokens; our rows are blocks)."""
    import logging

    sae_lens_logger = logging.getLogger("sae_lens")
    level = sae_lens_logger.level
    sae_lens_logger.setLevel(logging.ERROR)  # "you passed in a model/dataset": we do so on purpose
    with warnings.catch_warnings():
        for message in ("The training dataset contains fewer samples", "All samples in the training dataset",
                        "To copy construct from a tensor", "This SAE has non-empty model_from_pretrained_kwargs"):
            warnings.filterwarnings("ignore", message=f".*{message}")
        try:
            yield
        finally:
            sae_lens_logger.setLevel(level)


def _to_dataset(blocks: torch.Tensor):
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": blocks.numpy().astype(np.int32)})


def train_sae(cfg: Config, name: str, model, blocks: torch.Tensor, out_dir: Path) -> dict[str, Any]:
    """Train one SAE with SAELens on ``blocks`` of ``model``'s hook; save it to ``out_dir/sae``.

    Writes ``out_dir/training_curve.json`` and returns training statistics (tokens, seconds, tokens/s).
    """
    from sae_lens import LanguageModelSAETrainingRunner, StandardTrainingSAE

    device = _device()
    model = model.to(device, print_details=False).eval()
    d_in = model.cfg.d_mlp
    runner_cfg = _runner_config(cfg, name, d_in, len(blocks), device)
    torch.manual_seed(cfg.seed)
    sae = StandardTrainingSAE(runner_cfg.sae)
    if cfg.sae.b_dec_init != "zeros":
        sample = hook_activations(model, blocks[: max(1, 8192 // cfg.sae.context_size)]).reshape(-1, d_in)
        init = geometric_median(sample) if cfg.sae.b_dec_init == "geometric_median" else sample.mean(0)
        with torch.no_grad():
            sae.b_dec.data.copy_(init.to(sae.b_dec.device))
    with _quiet_sae_lens():
        runner = LanguageModelSAETrainingRunner(
            runner_cfg, override_model=model, override_dataset=_to_dataset(blocks), override_sae=sae
        )
        steps = runner_cfg.total_training_steps
        recorder = _CurveRecorder(runner.sae, steps // N_CURVE_POINTS, cfg.sae.train_batch_size_tokens)
        runner.sae.training_forward_pass = recorder  # instance attribute: the trainer calls it each step
        started = time.time()
        trained = runner.run()
        seconds = time.time() - started
    trained.training_forward_pass = recorder.forward
    trained.eval()
    trained.fold_W_dec_norm()  # unit-norm decoder rows (the paper's convention); reconstructions unchanged
    with _quiet_sae_lens():
        _inference_sae(trained).save_model(out_dir / "sae")
    write_json_atomic(out_dir / "training_curve.json", recorder.rows)
    tokens = steps * cfg.sae.train_batch_size_tokens
    return {
        "train_tokens": tokens,
        "train_steps": steps,
        "train_seconds": round(seconds, 2),
        "tokens_per_second": round(tokens / max(seconds, 1e-9), 1),
        "d_in": d_in,
        "d_sae": runner_cfg.sae.d_sae,
        "l1_coefficient": runner_cfg.sae.l1_coefficient,
        "data_blocks": len(blocks),
        "device": device,
    }


def _inference_sae(training_sae):
    """The inference ``SAE`` (SAELens's saved format) with the weights of a trained ``TrainingSAE``."""
    from sae_lens import SAE

    sae = SAE.from_dict(training_sae.cfg.get_inference_sae_cfg_dict())
    state = training_sae.state_dict()
    sae.load_state_dict({k: v for k, v in state.items() if k in sae.state_dict()})
    return sae


def sae_dir(cfg: Config, name: str) -> Path:
    """The finished folder of one model's SAE (``sae/`` in SAELens's format), trained on first use."""
    from .training import load_hooked_lm, model_dir

    _check_name(name)
    model_path = model_dir(cfg, name)

    def build(out: Path) -> dict:
        model = load_hooked_lm(cfg, name)
        return train_sae(cfg, name, model, train_blocks(cfg, name), out)

    path = cached_step(cfg.profile, f"sae-{name}", _sae_inputs(cfg, name, model_path), build, STEP_VERSION)
    return path


def load_sae(cfg: Config, name: str):
    """One model's trained SAELens ``SAE`` (float32, eval mode), trained on first use."""
    from sae_lens import SAE

    path = sae_dir(cfg, name) / "sae"
    try:
        with _quiet_sae_lens():
            sae = SAE.load_from_disk(path, device=_device(), dtype="float32")
    except Exception as err:
        raise RuntimeError(
            f"cannot load the SAE in {path} ({err}). The folder is corrupt: delete {path.parent} and rerun."
        ) from err
    return sae.eval()


def training_stats(cfg: Config, name: str) -> dict[str, Any]:
    """How one SAE was trained: tokens, steps, seconds, tokens/s, sizes (from its manifest)."""
    return manifest(sae_dir(cfg, name))["meta"]


@torch.no_grad()
def encode_blocks(cfg: Config, name: str, blocks: torch.Tensor, batch_size: int = 64, model=None, sae=None):
    """Dense SAE feature activations of token blocks: ``[n_blocks, ctx, d_sae]`` (float32, on the CPU).

    ``model`` and ``sae`` may be passed to avoid reloading them.
    """
    from .training import load_hooked_lm

    model = load_hooked_lm(cfg, name) if model is None else model
    sae = load_sae(cfg, name) if sae is None else sae
    model = model.to(sae.device, print_details=False)
    outs = []
    for start in tqdm(range(0, len(blocks), batch_size), desc=f"encoding ({name})", leave=False):
        acts = hook_activations(model, blocks[start : start + batch_size], batch_size)
        outs.append(sae.encode(acts.to(sae.device)).float().cpu())
    return torch.cat(outs)


# --------------------------------------------------------------------------------------------- diagnostics


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
    activation frequency (``feature_frequency``, a list of d_sae floats).
    """
    from sae_lens.evals import EvalConfig, run_evals
    from sae_lens.training.activation_scaler import ActivationScaler

    n_blocks, ctx = blocks.shape
    batch = _eval_batch_size(n_blocks)
    if sae.cfg.metadata.hook_name is None:  # a hand-built SAE: the evals read the hook name from metadata
        sae.cfg.metadata.hook_name = HOOK
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
    return {
        "n_blocks": int(n_blocks),
        "n_tokens": int(n_blocks * ctx),
        "d_sae": int(sae.cfg.d_sae),
        "l0": metrics["sparsity"]["l0"],
        "l1": metrics["sparsity"]["l1"],
        "dead_fraction": float((frequency == 0).mean()),
        "explained_variance": metrics["reconstruction_quality"]["explained_variance"],
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


def sae_diagnostics(cfg: Config, name: str) -> dict[str, Any]:
    """One SAE's diagnostics on ``cfg.sae.eval_blocks`` validation blocks (cached as JSON)."""
    from .training import load_hooked_lm

    path = sae_dir(cfg, name)
    inputs = {
        "sae": path.name,
        "eval_blocks": cfg.sae.eval_blocks,
        "corpora": {d: corpus_fingerprint(cfg, d, "validation") for d in SAE_DOMAINS[name]},
    }

    def build(out: Path) -> dict:
        result = evaluate_sae(load_sae(cfg, name), load_hooked_lm(cfg, name), validation_blocks(cfg, name))
        write_json_atomic(out / "diagnostics.json", result)
        return {k: v for k, v in result.items() if k != "feature_frequency"}

    done = cached_step(cfg.profile, f"sae-eval-{name}", inputs, build, STEP_VERSION)
    return read_json(done / "diagnostics.json")


def diagnostics_table(cfg: Config, names: tuple[str, ...] | list[str] = MODEL_NAMES):
    """One row per SAE: size, L1 coefficient, L0, dead fraction, explained variance, reconstruction score, timing."""
    import pandas as pd

    from .training import MODEL_LABELS

    rows = []
    for name in names:
        diag = sae_diagnostics(cfg, name)
        stats = training_stats(cfg, name)
        rows.append(
            {
                "model": MODEL_LABELS[name],
                "d_sae": diag["d_sae"],
                "l1_coefficient": stats["l1_coefficient"],
                "l0": diag["l0"],
                "dead_fraction": diag["dead_fraction"],
                "explained_variance": diag["explained_variance"],
                "reconstruction_score": diag["reconstruction_score"],
                "ce_loss_clean": diag["ce_loss_clean"],
                "ce_loss_reconstruction": diag["ce_loss_reconstruction"],
                "ce_loss_zero_ablation": diag["ce_loss_zero_ablation"],
                "train_tokens": stats["train_tokens"],
                "train_seconds": stats["train_seconds"],
                "tokens_per_second": stats["tokens_per_second"],
            }
        )
    return pd.DataFrame(rows)


def training_curves(cfg: Config, names: tuple[str, ...] | list[str] = MODEL_NAMES):
    """The recorded training curves (step, tokens, losses, L0, explained variance) of several SAEs, long format."""
    import pandas as pd

    from .training import MODEL_LABELS

    frames = [
        pd.DataFrame(read_json(sae_dir(cfg, n) / "training_curve.json")).assign(model=MODEL_LABELS[n]) for n in names
    ]
    return pd.concat(frames, ignore_index=True)


def feature_frequencies(cfg: Config, names: tuple[str, ...] | list[str] = MODEL_NAMES):
    """Per-feature activation frequency on the validation blocks (model, feature, frequency), long format."""
    import pandas as pd

    from .training import MODEL_LABELS

    frames = []
    for name in names:
        freq = sae_diagnostics(cfg, name)["feature_frequency"]
        frames.append(pd.DataFrame({"model": MODEL_LABELS[name], "feature": range(len(freq)), "frequency": freq}))
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
