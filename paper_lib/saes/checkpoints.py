"""Resuming a killed SAE training from SAELens's own checkpoints.

SAELens writes a checkpoint (weights, Adam and scheduler state, the activation store's position) ``n_checkpoints``
times during training and resumes from one with ``resume_from_checkpoint``; this module adds what a long run on a
preemptible machine needs on top of it:

* a checkpoint counts only once it is complete: SAELens writes its files one after another, so a kill can leave
  a half-written folder; ours writes a mark (with the training curve so far) after SAELens's last file, and a
  folder without the mark is never resumed from;
* only the newest complete checkpoint is kept (one is ~3x the SAE's size: weights plus two Adam moments);
* a corrupt checkpoint is removed with a message, and training starts from the previous one or from step 0.

What a resumed run does not reproduce exactly: SAELens's checkpoint stores the activation store's position in the
data, not its shuffling buffer (half of which carries over from batch to batch) nor the random generator that
shuffles it. A resumed run refills the buffer from the saved position, so the activations that sat in the buffer
at the checkpoint are skipped and the batches after it differ; it ends with close but not identical weights (the
tests measure how close).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..core.artifacts import newest_resumable, write_json_atomic

MARK = "resume.json"  # written last: its presence is what makes a checkpoint complete


def _saelens_files() -> tuple[str, ...]:
    """The files SAELens reads back when it resumes (its own names for them)."""
    from sae_lens.constants import (
        ACTIVATION_SCALER_CFG_FILENAME,
        ACTIVATIONS_STORE_STATE_FILENAME,
        SAE_WEIGHTS_FILENAME,
        TRAINER_STATE_FILENAME,
    )

    return (SAE_WEIGHTS_FILENAME, TRAINER_STATE_FILENAME, ACTIVATIONS_STORE_STATE_FILENAME,
            ACTIVATION_SCALER_CFG_FILENAME)


def checkpoint_root(out_dir: Path) -> Path:
    """Where a training in ``out_dir`` keeps its checkpoints (SAELens adds a run id and the sample count)."""
    return Path(out_dir) / "checkpoints"


def _samples(checkpoint: Path) -> int:
    return int(checkpoint.name)


def _problem(checkpoint: Path) -> str | None:
    """Why a checkpoint cannot be resumed from (a file missing, unreadable or truncated), or None if it can."""
    from safetensors.torch import load_file

    try:
        json.loads((checkpoint / MARK).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return f"{MARK} is missing or unreadable ({err.__class__.__name__}): the checkpoint was not finished"
    for name in _saelens_files():
        try:
            if name.endswith(".pt"):
                torch.load(checkpoint / name, map_location="cpu", weights_only=False)  # a file this code wrote
            elif name.endswith(".json"):
                json.loads((checkpoint / name).read_text(encoding="utf-8"))
            else:
                load_file(checkpoint / name)
        except Exception as err:  # safetensors and torch raise several types for a truncated or missing file
            return f"{name} is missing or truncated ({err.__class__.__name__})"
    return None


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest checkpoint under ``out_dir`` that can be resumed from; unusable ones are removed, with a message."""
    root = checkpoint_root(out_dir)
    found = sorted((p for p in root.glob("*/*") if p.is_dir() and p.name.isdigit()), key=_samples, reverse=True)
    return newest_resumable(found, _problem, "sae", root)


def read_mark(checkpoint: Path) -> dict[str, Any]:
    """What ``mark_complete`` stored with a checkpoint: the step count, seconds so far and the curve's rows."""
    return json.loads((Path(checkpoint) / MARK).read_text(encoding="utf-8"))


def sealing(save: Callable[[Path], None], state: Callable[[], dict[str, Any]]) -> Callable[[Path | None], None]:
    """Wrap the runner's save hook (``runner.save_checkpoint``), which SAELens's trainer calls once it has written a
    checkpoint's weights and state: the runner adds the data position, then the checkpoint is sealed.

    SAELens's interrupt handler (Ctrl-C, SIGTERM) calls the same hook on a folder with no weights, which may not
    even exist, or on a checkpoint already sealed, with a later data position. Both calls are skipped: an
    interrupted run resumes from its last sealed checkpoint, and a sealed one is never rewritten.
    """
    from sae_lens.constants import SAE_WEIGHTS_FILENAME

    def save_and_seal(checkpoint_path: Path | None) -> None:
        if checkpoint_path is None:
            return
        checkpoint = Path(checkpoint_path)
        if (checkpoint / SAE_WEIGHTS_FILENAME).is_file() and not (checkpoint / MARK).exists():
            save(checkpoint)
            mark_complete(checkpoint, state())

    return save_and_seal


def mark_complete(checkpoint: Path, state: dict[str, Any]) -> None:
    """Seal a checkpoint whose SAELens files are all written, then drop every other checkpoint of the run."""
    checkpoint = Path(checkpoint)
    if not all((checkpoint / name).is_file() for name in _saelens_files()):
        return
    write_json_atomic(checkpoint / MARK, state)
    for other in checkpoint.parent.parent.glob("*/*"):
        if other.is_dir() and other != checkpoint:
            shutil.rmtree(other, ignore_errors=True)


def skip_passed_thresholds(runner) -> None:
    """After a resume, keep SAELens's trainer from saving one checkpoint per step for every threshold the
    resumed run already passed (its list of thresholds is rebuilt from step 0 when the trainer is made)."""
    run = runner.run_trainer_with_interruption_handling

    def run_from_checkpoint(trainer):
        trainer.checkpoint_thresholds = [t for t in trainer.checkpoint_thresholds if t >= trainer.n_training_samples]
        return run(trainer)

    runner.run_trainer_with_interruption_handling = run_from_checkpoint
