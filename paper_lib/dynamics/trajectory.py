"""Checkpoints along a fine-tune: the fine-tune's own first steps, rerun with snapshots at fixed fractions.

The fine-tunes of notebook 02 keep only their final weights. Their trajectory is recovered by training the same
parent on the same blocks, with the same Trainer arguments, learning-rate schedule (built for the whole run) and
data order, and stopping after the largest snapshot fraction: snapshot k of the rerun *is* the fine-tune after
k steps, not a shorter fine-tune with its own schedule (whose learning rate would have decayed by then). The rerun
is checked against the fine-tune's own log (loss, learning rate and validation loss at every logged step up to the
stop); a disagreement beyond float noise raises ``TrajectoryError`` instead of caching a trajectory of some other
run. Fraction 0 is the parent and fraction 1 the fine-tune itself, so neither is retrained.

The Trainer arguments are built here as in ``models.train.train_lm`` rather than shared with it: every trained
model's cache key covers ``models/train.py``, and a refactor there would retrain the whole family. The log check
above is what keeps the two in step.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.artifacts import cached_step, read_json, write_json_atomic
from ..core.config import Config
from ..core.registry import REGISTRY
from ..data import corpora_fingerprints, domain_blocks, get_tokenizer, mixture_blocks
from ..models import model_dir
from ..models.build import load_hf
from ..models.train import TRAIN_CODE, _Blocks, _check_training, _curve_blocks, _trainable, usable_checkpoint

REPRODUCTION_RTOL = 1e-3  # a logged number of the rerun may differ from the fine-tune's by float noise, not more
SNAPSHOTS_FILE = "snapshots.json"


class TrajectoryError(RuntimeError):
    """A trajectory that cannot be made (a model that is no fine-tune, fractions that collide) or that does not
    reproduce its fine-tune."""


@dataclass(frozen=True)
class Checkpoint:
    """One point of a fine-tune's trajectory: ``path`` is a folder holding ``model/`` (an HF checkpoint)."""

    model: str  # the fine-tune (registry name)
    fraction: float  # of the fine-tune's steps (its tokens): 0 is its parent, 1 the fine-tune
    step: int
    tokens: int
    path: Path
    nominal: float  # the fraction asked for (``cfg.dynamics.fractions``); ``fraction`` is where the step landed

    @property
    def key(self) -> str:
        """What identifies the weights in cache keys: the step folder's name and, for a snapshot, its sub-folder."""
        return self.path.name if self.nominal in (0.0, 1.0) else f"{self.path.parent.parent.name}/{self.path.name}"


def fine_tunes() -> tuple[str, ...]:
    """The registry's fine-tunes (models made by training one parent further), in registry order."""
    return tuple(n for n in REGISTRY.names if REGISTRY.spec(n).recipe == "finetune")


def _check_fine_tune(name: str) -> str:
    spec = REGISTRY.spec(name)
    if spec.recipe != "finetune":
        raise TrajectoryError(f"model '{name}' is a {spec.recipe}, not a fine-tune: trajectories exist for "
                              f"{', '.join(fine_tunes())}")
    return spec.parents[0]


def finetune_blocks(cfg: Config, name: str) -> torch.Tensor:
    """The training blocks of a fine-tune, exactly as ``models.train.finetuned_dir`` reads them."""
    spec = REGISTRY.spec(name)
    if len(spec.domains) == 1:
        return domain_blocks(cfg, spec.domains[0], "train", cfg.data.finetune_train_tokens)
    return mixture_blocks(cfg, spec.domains, "train", cfg.data.finetune_train_tokens, cfg.data.block_size)


def total_steps(n_blocks: int, train_cfg) -> int:
    """Optimiser steps of a run over ``n_blocks`` (as ``train_lm`` and HF Trainer count them)."""
    return max(1, math.ceil(math.ceil(n_blocks / train_cfg.batch_size) * train_cfg.epochs))


def snapshot_steps(total: int, fractions) -> list[tuple[float, int]]:
    """``(fraction, step)`` of each snapshot: the step nearest ``fraction x total`` (at least 1; a tie goes to the
    even step, Python's rounding). Fractions that land on the same step, or on the last step (the fine-tune
    itself), are refused with the step size named. Tables use the step's own fraction, ``step / total``."""
    found, seen = [], {}
    for fraction in sorted(float(f) for f in fractions):
        if not 0.0 < fraction < 1.0:
            raise TrajectoryError(f"snapshot fraction {fraction} must lie strictly between 0 (the parent) and 1 (the "
                                  "fine-tune itself)")
        step = max(1, round(fraction * total))
        if step >= total or step in seen:
            clash = "the fine-tune's last step" if step >= total else f"the snapshot at {seen[step]}"
            raise TrajectoryError(
                f"snapshot fraction {fraction} lands on step {step} of {total}, the same as {clash}: the run has too "
                "few steps for these dynamics.fractions; remove the smaller fractions or lengthen the fine-tune"
            )
        seen[step] = fraction
        found.append((fraction, step))
    return found


def _training_arguments(train_cfg, out_dir: Path, seed: int, steps: int):
    """``models.train.train_lm``'s arguments, item for item (see the module docstring for why not shared)."""
    from transformers import TrainingArguments

    use_bf16 = train_cfg.bf16 and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return TrainingArguments(
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
        eval_steps=max(1, steps // 8),
        save_strategy="steps",
        save_steps=train_cfg.save_steps,
        save_total_limit=2,
        logging_nan_inf_filter=False,
        report_to=[],
        seed=seed,
        data_seed=seed,
        bf16=use_bf16,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        disable_tqdm=False,
    )


def _snapshot_callback(folders: dict[int, Path], stop: int, tokenizer):
    """A Trainer callback that saves the weights (and the tokenizer, like every model folder) at the given steps,
    atomically, and stops after ``stop``."""
    from transformers import TrainerCallback

    class Snapshots(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            folder = folders.get(state.global_step)
            if folder is not None and not (folder / "model" / "config.json").is_file():
                staging = folder.with_name(folder.name + ".tmp")
                shutil.rmtree(staging, ignore_errors=True)
                model.save_pretrained(staging / "model", safe_serialization=True)
                tokenizer.save_pretrained(staging / "model")
                shutil.rmtree(folder, ignore_errors=True)
                staging.rename(folder)
            if state.global_step >= stop:
                control.should_training_stop = True
            return control

    return Snapshots()


def reproduction_gap(rerun: list[dict], original: list[dict], last_step: int) -> dict[str, Any]:
    """The largest relative difference between two Trainer logs over the steps both logged up to ``last_step``
    (training loss, learning rate, validation loss), and how many logged numbers were compared."""
    keys = ("loss", "learning_rate", "eval_loss")

    def by_step(log):
        rows: dict[tuple[int, str], float] = {}
        for row in log:
            for key in keys:
                if key in row and row.get("step", 0) <= last_step:
                    rows[(int(row["step"]), key)] = float(row[key])
        return rows

    ours, theirs = by_step(rerun), by_step(original)
    shared = sorted(set(ours) & set(theirs))
    gaps = [abs(ours[k] - theirs[k]) / max(abs(theirs[k]), 1e-12) for k in shared]
    return {"compared": len(shared), "max_relative_difference": max(gaps, default=math.nan)}


def trajectory_dir(cfg: Config, name: str) -> Path:
    """The cached folder of a fine-tune's snapshots: ``snapshots/step-NNNNN/model/`` and ``snapshots.json``."""
    parent_name = _check_fine_tune(name)
    parent, final = model_dir(cfg, parent_name), model_dir(cfg, name)
    spec = REGISTRY.spec(name)
    inputs = {
        "parent": parent.name,
        "fine_tune": final.name,
        "train": cfg.finetune.model_dump(),
        "domains": list(spec.domains),
        "tokens": cfg.data.finetune_train_tokens,
        "corpora": corpora_fingerprints(cfg, spec.domains, "train"),
        "seed": cfg.seed,
        "fractions": sorted(cfg.dynamics.fractions),
    }

    @_trainable
    def build(out: Path) -> dict[str, Any]:
        from transformers import Trainer

        blocks = finetune_blocks(cfg, name)
        steps = total_steps(len(blocks), cfg.finetune)
        original = read_json(final / "history.json")
        logged_last = max((int(r["step"]) for r in original if "step" in r), default=0)
        if logged_last != steps:
            raise TrajectoryError(f"{name}'s log ends at step {logged_last}, but its {len(blocks)} blocks make "
                                  f"{steps} steps: the fine-tune was made with other data or settings; rebuild it")
        planned = snapshot_steps(steps, cfg.dynamics.fractions)
        stop = planned[-1][1]
        folders = {step: out / "snapshots" / f"step-{step:05d}" for _, step in planned}
        model = load_hf(parent)
        args = _training_arguments(cfg.finetune, out, cfg.seed, steps)
        trainer = Trainer(model=model, args=args, train_dataset=_Blocks(blocks),
                          eval_dataset=_Blocks(_curve_blocks(cfg, spec.domains)),
                          callbacks=[_snapshot_callback(folders, stop, get_tokenizer(cfg))])
        checkpoint = usable_checkpoint(out / "checkpoints")
        started = time.time()
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        seconds = time.time() - started
        _check_training(trainer.state.log_history, model, cfg.finetune)
        gap = reproduction_gap(trainer.state.log_history, original, stop)
        if not gap["compared"]:
            raise TrajectoryError(f"the rerun of {name}'s first {stop} steps logged no number at a step the fine-tune's "
                                  "log has, so it cannot be checked: lower finetune.logging_steps or raise the fractions")
        if not gap["max_relative_difference"] <= REPRODUCTION_RTOL:
            raise TrajectoryError(
                f"the rerun of {name}'s first {stop} steps does not reproduce its log (largest relative difference "
                f"{gap['max_relative_difference']:.3g} over {gap['compared']} logged numbers; at most "
                f"{REPRODUCTION_RTOL} is float noise): the fine-tune was trained with other code, data or threads. "
                "Delete its model folder to retrain it with this code, then rerun."
            )
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        tokens_per_step = cfg.finetune.batch_size * blocks.shape[1]
        snapshots = [{"nominal": f, "fraction": s / steps, "step": s, "tokens": min(s * tokens_per_step, blocks.numel()),
                      "folder": str(folders[s].relative_to(out))} for f, s in planned]
        for snap in snapshots:
            if not (out / snap["folder"] / "model" / "config.json").is_file():
                raise TrajectoryError(f"snapshot at step {snap['step']} was not written; rerun")
        write_json_atomic(out / SNAPSHOTS_FILE, {"total_steps": steps, "total_tokens": int(blocks.numel()),
                                                 "snapshots": snapshots, "history": trainer.state.log_history})
        return {"steps_trained": stop, "total_steps": steps, "seconds": round(seconds, 2),
                "tokens_per_second": round(stop * tokens_per_step / max(seconds, 1e-9), 1),
                "reproduction": gap}

    # build is wrapped by models.train._trainable, so this module is named here to key the cache on it too
    return cached_step(cfg.profile, f"trajectory-{name}", inputs, build, code=[*TRAIN_CODE, __name__])


def checkpoints(cfg: Config, name: str) -> list[Checkpoint]:
    """A fine-tune's trajectory: its parent (fraction 0), the snapshots, and the fine-tune itself (fraction 1)."""
    parent_name = _check_fine_tune(name)
    folder = trajectory_dir(cfg, name)
    stored = read_json(folder / SNAPSHOTS_FILE)
    points = [Checkpoint(name, 0.0, 0, 0, model_dir(cfg, parent_name), 0.0)]
    points += [Checkpoint(name, s["fraction"], s["step"], s["tokens"], folder / s["folder"], s["nominal"])
               for s in stored["snapshots"]]
    points.append(Checkpoint(name, 1.0, stored["total_steps"], stored["total_tokens"], model_dir(cfg, name), 1.0))
    return points
