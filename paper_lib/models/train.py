"""Training a language model with HF ``Trainer``: pretraining from scratch and fine-tuning a parent.

HF ``MistralForCausalLM`` trains about 2-4x faster on a CPU than TransformerLens, so models are trained here and
converted to TransformerLens for analysis (``models.build.to_hooked``). Each model is a cached step folder
holding ``model/`` (safetensors weights, config and tokenizer: a standalone HF checkpoint that mergekit can
read), ``history.json`` (the Trainer's log) and its manifest.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from ..core.artifacts import cached_step, newest_resumable, write_json_atomic
from ..core.config import Config
from ..core.registry import ModelSpec
from ..core.runtime import NonFiniteError, require_finite
from ..data import DATA_CODE, check_corpora, corpora_fingerprints, domain_blocks, eval_blocks, get_tokenizer, mixture_blocks, tokenizer_hash
from .build import build_model, load_hf

# Code whose output is not an upstream step of its own (reading, mixing and cutting data; building the model).
TRAIN_CODE = [*DATA_CODE, "paper_lib.models.build"]


class _Blocks(torch.utils.data.Dataset):
    """Packed token blocks as causal-LM examples (labels = inputs; the model shifts them)."""

    def __init__(self, blocks: torch.Tensor):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        block = self.blocks[index]
        return {"input_ids": block, "labels": block}


def train_lm(
    model, train: torch.Tensor, validation: torch.Tensor, train_cfg, out_dir: Path, seed: int
) -> dict[str, Any]:
    """Train ``model`` on ``train`` blocks with HF ``Trainer``; checkpoints in ``out_dir/checkpoints``.

    An interrupted run resumes from its last checkpoint. Returns throughput numbers.
    """
    from transformers import Trainer, TrainingArguments

    # Under a data-parallel launch (models.launch) each of WORLD_SIZE processes takes batch_size blocks a step.
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    steps_per_epoch = math.ceil(len(train) / (train_cfg.batch_size * processes))
    total_steps = max(1, math.ceil(steps_per_epoch * train_cfg.epochs))
    use_bf16 = train_cfg.bf16 and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    args = TrainingArguments(
        output_dir=str(out_dir / "checkpoints"),
        per_device_train_batch_size=train_cfg.batch_size,
        per_device_eval_batch_size=train_cfg.eval_batch_size,
        learning_rate=train_cfg.learning_rate,
        lr_scheduler_type=train_cfg.lr_scheduler_type,
        warmup_steps=train_cfg.warmup_steps,
        weight_decay=train_cfg.weight_decay,
        adam_beta1=train_cfg.adam_beta1,
        adam_beta2=train_cfg.adam_beta2,
        num_train_epochs=train_cfg.epochs,
        logging_steps=train_cfg.logging_steps,
        eval_strategy="steps",
        eval_steps=max(1, total_steps // 8),  # eight points on the validation curve
        save_strategy="steps",
        save_steps=train_cfg.save_steps,
        save_total_limit=2,  # the previous checkpoint is the fallback if the newest is broken
        logging_nan_inf_filter=False,  # a NaN loss must show in the log, where _check_training sees it
        report_to=[],
        seed=seed,
        data_seed=seed,
        bf16=use_bf16,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,  # no accelerator on CPU runs; pinning only warns there
        disable_tqdm=False,
    )
    trainer = Trainer(model=model, args=args, train_dataset=_Blocks(train), eval_dataset=_Blocks(validation))
    checkpoint = usable_checkpoint(out_dir / "checkpoints")
    resumed_from = _checkpoint_step(checkpoint) if checkpoint else 0
    started = time.time()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds = time.time() - started
    _check_training(trainer.state.log_history, model, train_cfg)
    write_json_atomic(out_dir / "history.json", trainer.state.log_history)
    # Checkpoints (weights + optimiser state, ~3x the model) exist to resume an interrupted run; a finished
    # model keeps only its final weights.
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    tokens = int(len(train) * train.shape[1] * train_cfg.epochs)
    steps = int(result.global_step)
    # A resumed run trained only the steps after its checkpoint in `seconds`.
    tokens_this_run = round(tokens * (steps - resumed_from) / max(steps, 1))
    return {
        "train_tokens": tokens,
        "train_steps": steps,
        "train_seconds": round(seconds, 2),
        "tokens_per_second": round(tokens_this_run / max(seconds, 1e-9), 1),
        "resumed": bool(checkpoint),
        "resumed_from_step": resumed_from,
        "tokens_this_run": tokens_this_run,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


def _checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[-1])


def _checkpoint_problem(checkpoint: Path) -> str | None:
    """Why a Trainer checkpoint cannot be resumed from (a file missing or unreadable), or None if it can."""
    from safetensors import safe_open

    state = checkpoint / "trainer_state.json"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return f"trainer_state.json is missing or unreadable ({err.__class__.__name__})"
    try:
        with safe_open(str(checkpoint / "model.safetensors"), "pt") as weights:
            for key in weights.keys():
                weights.get_tensor(key)
    except Exception as err:  # safetensors raises several types for a truncated or missing file
        return f"model.safetensors is missing or truncated ({err.__class__.__name__})"
    for name in ("optimizer.pt", "scheduler.pt"):  # resuming without them would silently change the run
        try:
            torch.load(checkpoint / name, map_location="cpu", weights_only=False)  # files this code wrote
        except Exception as err:  # torch raises several types for a truncated or missing file
            return f"{name} is missing or truncated ({err.__class__.__name__})"
    return None


def usable_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint in ``folder`` that can be resumed from; broken ones are removed, with a message
    saying which, so an interrupted run falls back to the previous checkpoint or starts afresh by itself."""
    checkpoints = sorted(Path(folder).glob("checkpoint-*"), key=_checkpoint_step, reverse=True)
    return newest_resumable(checkpoints, _checkpoint_problem, "train", folder)


def _check_training(history: list[dict], model, train_cfg) -> None:
    """Fail, instead of caching a broken model, when a logged loss or a weight is NaN or infinite."""
    fix = (
        f"Training diverged: lower the learning rate (now {train_cfg.learning_rate}) or check the data; "
        "nothing was cached."
    )
    for row in history:
        losses = {k: row[k] for k in ("loss", "eval_loss") if k in row}
        require_finite(losses, f"training log at step {row.get('step')}", fix)
    for name, param in model.named_parameters():
        if not torch.isfinite(param).all():
            raise NonFiniteError(f"weight {name} holds NaN or inf after training. {fix}")


def _save_model(model, tokenizer, out_dir: Path) -> None:
    model.save_pretrained(out_dir / "model", safe_serialization=True)
    tokenizer.save_pretrained(out_dir / "model")


def _curve_blocks(cfg: Config, domains: tuple[str, ...]) -> torch.Tensor:
    """A small validation set for the curve logged during training (the final numbers use all eval blocks)."""
    return torch.cat([eval_blocks(cfg, d)[:16] for d in domains])


def _trainable(build):
    """Models are trained on first use, which may happen inside a caller's no_grad or inference_mode block:
    build (and so create the parameters) with autograd on, whatever the caller's context."""

    def wrapped(out: Path) -> dict:
        with torch.inference_mode(False), torch.enable_grad():
            return build(out)

    return wrapped


def pretrained_dir(cfg: Config, spec: ModelSpec) -> Path:
    """A model trained from scratch on ``spec.domains`` evenly by tokens (BabyPython), trained on first use.

    Before training, every corpus the family will read is checked, so a missing fine-tuning corpus fails now,
    not after the base model has trained (a cached model is loaded without touching the corpora again).
    """
    tokenizer = get_tokenizer(cfg)
    inputs = {
        "model": {**cfg.model.model_dump(), **spec.architecture},
        "train": cfg.pretrain.model_dump(),
        "tokenizer": tokenizer_hash(cfg),
        "block_size": cfg.data.block_size,
        "tokens": cfg.data.base_train_tokens,
        "domains": list(spec.domains),
        "corpora": corpora_fingerprints(cfg, spec.domains, "train"),
        "seed": cfg.seed,
    }

    @_trainable
    def build(out: Path) -> dict:
        check_corpora(cfg)
        model = build_model(cfg, len(tokenizer), spec.architecture)
        blocks = mixture_blocks(cfg, spec.domains, "train", cfg.data.base_train_tokens, cfg.data.block_size)
        stats = train_lm(model, blocks, _curve_blocks(cfg, spec.domains), cfg.pretrain, out, cfg.seed)
        _save_model(model, tokenizer, out)
        return stats

    return cached_step(cfg.profile, f"model-{spec.name}", inputs, build, code=TRAIN_CODE)


def finetuned_dir(cfg: Config, spec: ModelSpec, parent: Path) -> Path:
    """``parent`` (a finished model folder) fine-tuned on ``spec.domains``, trained on first use."""
    tokenizer = get_tokenizer(cfg)
    inputs = {
        "parent": parent.name,
        "train": cfg.finetune.model_dump(),
        "domains": list(spec.domains),
        "tokens": cfg.data.finetune_train_tokens,
        "corpora": corpora_fingerprints(cfg, spec.domains, "train"),
        "seed": cfg.seed,
    }

    @_trainable
    def build(out: Path) -> dict:
        model = load_hf(parent)
        if len(spec.domains) == 1:
            blocks = domain_blocks(cfg, spec.domains[0], "train", cfg.data.finetune_train_tokens)
        else:
            blocks = mixture_blocks(cfg, spec.domains, "train", cfg.data.finetune_train_tokens, cfg.data.block_size)
        stats = train_lm(model, blocks, _curve_blocks(cfg, spec.domains), cfg.finetune, out, cfg.seed)
        _save_model(model, tokenizer, out)
        return stats

    return cached_step(cfg.profile, f"model-{spec.name}", inputs, build, code=TRAIN_CODE)
