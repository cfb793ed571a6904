"""Training an SAE with SAELens on a model's hook (``cfg.sae.hook_name``, the paper's ``blocks.0.mlp.hook_post``).

One SAE per registry model, trained with SAELens's ``LanguageModelSAETrainingRunner`` on the converted
TransformerLens model and a pre-tokenised local dataset (no hub, no wandb). Training data are the model's own
data plus its ancestors', evenly by tokens (``registry.sae_domains``).

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
"""

from __future__ import annotations

import contextlib
import math
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.artifacts import write_json_atomic
from ..core.config import Config
from ..core.hooks import hook_width
from ..core.registry import REGISTRY
from ..core.runtime import default_device, require_finite
from .checkpoints import checkpoint_root, latest_checkpoint, read_mark, sealing, skip_passed_thresholds
from .encode import hook_activations

N_CURVE_POINTS = 100  # points recorded on each training curve


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


def _runner_config(cfg: Config, name: str, d_in: int, n_blocks: int, device: str, l1: float, seed: int,
                   out_dir: Path, resume_from: Path | None):
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
        l1_coefficient=l1,
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
        dataset_path=f"local:{'+'.join(REGISTRY.sae_domains(name))}",
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
        seed=seed,
        logger=LoggingConfig(log_to_wandb=False),
        n_checkpoints=s.n_checkpoints,  # SAELens's checkpoints, so a killed run resumes (see checkpoints.py)
        checkpoint_path=str(checkpoint_root(out_dir)) if s.n_checkpoints else None,
        resume_from_checkpoint=str(resume_from) if resume_from else None,
        output_path=None,  # we save the (decoder-normalised) SAE ourselves
        model_from_pretrained_kwargs={},  # nothing is loaded by name (the model is converted locally)
        verbose=False,
    )


class _CurveRecorder:
    """Wraps ``TrainingSAE.training_forward_pass`` to record losses every ``every`` steps.

    SAELens logs its training metrics to wandb only; this keeps a small curve in memory instead.
    """

    def __init__(self, sae, every: int, tokens_per_step: int, resumed: dict[str, Any] | None = None):
        self.forward = sae.training_forward_pass
        self.every = max(1, every)
        self.tokens_per_step = tokens_per_step
        resumed = resumed or {"step": 0, "seconds": 0.0, "rows": []}  # where a resumed run's curve left off
        self.step = resumed["step"]
        self.rows: list[dict[str, float]] = list(resumed["rows"])
        self.started = time.time() - resumed["seconds"]

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the curve, so a resumed run continues it."""
        return {"step": self.step, "seconds": round(time.time() - self.started, 2), "rows": self.rows}

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


def train_sae(
    cfg: Config, name: str, model, blocks: torch.Tensor, out_dir: Path, l1: float, seed: int | None = None
) -> dict[str, Any]:
    """Train one SAE with SAELens on ``blocks`` of ``model``'s hook; save it to ``out_dir/sae``.

    ``seed`` (default ``cfg.seed``) sets the SAE's initial weights and SAELens's shuffling.

    Writes ``out_dir/training_curve.json`` and returns training statistics (tokens, seconds, tokens/s).
    """
    from sae_lens import LanguageModelSAETrainingRunner, StandardTrainingSAE

    device = default_device()
    model = model.to(device, print_details=False).eval()
    d_in = hook_width(cfg.sae.hook_name, model.cfg)
    seed = cfg.seed if seed is None else seed
    resume_from = latest_checkpoint(out_dir) if cfg.sae.n_checkpoints else None
    runner_cfg = _runner_config(cfg, name, d_in, len(blocks), device, l1, seed, out_dir, resume_from)
    torch.manual_seed(seed)
    sae = StandardTrainingSAE(runner_cfg.sae)
    if cfg.sae.b_dec_init != "zeros" and resume_from is None:  # a resumed run loads b_dec with the weights
        sample = hook_activations(model, blocks[: max(1, 8192 // cfg.sae.context_size)], cfg.sae.hook_name)
        sample = sample.reshape(-1, d_in)
        init = geometric_median(sample) if cfg.sae.b_dec_init == "geometric_median" else sample.mean(0)
        with torch.no_grad():
            sae.b_dec.data.copy_(init.to(sae.b_dec.device))
    with _quiet_sae_lens():
        runner = LanguageModelSAETrainingRunner(
            runner_cfg, override_model=model, override_dataset=_to_dataset(blocks), override_sae=sae
        )
        steps = runner_cfg.total_training_steps
        resumed = read_mark(resume_from) if resume_from else None
        recorder = _CurveRecorder(runner.sae, steps // N_CURVE_POINTS, cfg.sae.train_batch_size_tokens, resumed)
        runner.sae.training_forward_pass = recorder  # instance attribute: the trainer calls it each step
        runner.save_checkpoint = sealing(runner.save_checkpoint, recorder.state)
        if resume_from:
            print(f"[sae] {name}: resuming from {resume_from} (step {resumed['step']} of {steps})",
                  file=sys.stderr, flush=True)
            skip_passed_thresholds(runner)
        started = time.time()
        trained = runner.run()
        seconds = time.time() - started
    trained.training_forward_pass = recorder.forward
    require_finite(recorder.rows, f"the {name} SAE's training curve", "Training diverged: lower sae.lr or the L1 "
                   "coefficient; nothing was cached.")
    trained.eval()
    trained.fold_W_dec_norm()  # unit-norm decoder rows (the paper's convention); reconstructions unchanged
    with _quiet_sae_lens():
        _inference_sae(trained).save_model(out_dir / "sae")
    write_json_atomic(out_dir / "training_curve.json", recorder.rows)
    # Checkpoints exist to resume an interrupted run; a finished SAE keeps only its final weights.
    shutil.rmtree(checkpoint_root(out_dir), ignore_errors=True)
    tokens = steps * cfg.sae.train_batch_size_tokens
    resumed_from = resumed["step"] if resumed else 0
    tokens_this_run = (steps - resumed_from) * cfg.sae.train_batch_size_tokens  # `seconds` timed only these
    return {
        "train_tokens": tokens,
        "train_steps": steps,
        "train_seconds": round(seconds, 2),
        "tokens_per_second": round(tokens_this_run / max(seconds, 1e-9), 1),
        "resumed_from_step": resumed_from,
        "tokens_this_run": tokens_this_run,
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
