"""Training a registry model data-parallel, one process per device, into the folder a single process makes.

    accelerate launch --multi_gpu --num_processes 4 -m paper_lib.models.launch --profile paper --model babypython
    torchrun --standalone --nproc_per_node 4 -m paper_lib.models.launch --profile paper --model babypython

Every process resolves the model with ``model_dir``, as a notebook does, so the folder carries the cache key a
single-process run computes and the notebooks load it as they would their own. Run as one process
(``python -m paper_lib.models.launch ...``) this is ``model_dir`` and nothing else. Under N processes:

- each training step of ``models.train`` goes through ``shared_cached_step``: rank 0 takes the step's lock and
  decides whether it is finished; every process trains in the same ``.partial`` folder (HF Trainer gives each
  process its share of every batch, all-reduces the gradients, and writes from rank 0 the checkpoints that an
  interrupted run resumes from); rank 0 alone saves the model and writes the manifest, and no process returns
  before the folder is in place.
- ``batch_size`` (of ``pretrain`` and ``finetune``) keeps its meaning, blocks per optimiser step: each process takes
  batch_size / N of them, so the run makes the single-process run's optimiser steps on the same global batches.
- steps that are not training (tokenizer, token blocks, merges) are built by whichever process takes their lock
  first, as with any concurrent builders; the others wait and load them.

Nothing in ``models.train`` is edited: its module-level names are swapped for the length of the run, so its source,
which is part of every trained model's cache key, stays the one a single process hashes.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from ..core.artifacts import manifest, shared_cached_step
from ..core.config import Config, load_config
from ..core.registry import REGISTRY, RegistryError
from ..core.schema import ConfigError
from . import store, train


class ProcessGroup:
    """The processes of the ``torch.distributed`` run this process belongs to, as a ``StepGroup``."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self._dist = dist
        self.rank = dist.get_rank()
        self.size = dist.get_world_size()
        self.is_main = self.rank == 0

    def share(self, value: Any) -> Any:
        """Rank 0's ``value`` on every process (a collective: every process calls it, so it is also a barrier)."""
        box = [value]
        self._dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        """Wait for every process, then leave the group (torch warns at exit about a group left open)."""
        self._dist.barrier()
        self._dist.destroy_process_group()


def join_processes() -> ProcessGroup | None:
    """Join the process group the launcher set up (``WORLD_SIZE`` and friends), or None when run as one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    cpu = not torch.cuda.is_available()
    if cpu:
        # The Trainer builds its own accelerate state, which on a machine without a GPU sees one process unless told
        # to spread over CPUs; without this every process would train alone on the whole data.
        os.environ["ACCELERATE_USE_CPU"] = "true"
    # Initialises torch.distributed (NCCL on GPUs, gloo on CPUs) and pins this rank's device. The timeout is the one
    # the Trainer would give the group (its ddp_timeout), not NCCL's shorter default: a rank may wait at a collective
    # while another saves a checkpoint.
    PartialState(cpu=cpu, timeout=timedelta(seconds=1800))
    return ProcessGroup()


def per_process_batch(batch_size: int, processes: int, section: str = "pretrain") -> int:
    """Blocks per process and optimiser step that keep the global batch at ``batch_size``."""
    if batch_size % processes:
        raise ConfigError(
            f"'{section}.batch_size' ({batch_size}) is blocks per optimiser step and cannot be split evenly over "
            f"{processes} processes: launch a number of processes that divides it (changing the batch size would "
            "train a different model, with another cache key)"
        )
    return batch_size // processes


def check_batches(cfg: Config, name: str, processes: int) -> None:
    """Fail before any work when a model, or a model it is trained from, has a batch the processes cannot share."""
    for model in [name, *REGISTRY.ancestors(name)]:
        recipe = REGISTRY.spec(model).recipe
        if recipe in ("pretrain", "finetune"):
            per_process_batch(getattr(cfg, recipe).batch_size, processes, recipe)


def _global_batch(train_lm: Callable, processes: int) -> Callable:
    """``train_lm`` with each process taking its share of the global batch; the statistics say how it was split.

    ``train_lm`` counts tokens and steps over the whole data set, so its ``train_tokens`` and ``tokens_per_second``
    already cover every process, and it places its eight validation points by the steps of the whole run.
    """

    @functools.wraps(train_lm)
    def wrapped(model, blocks, validation, train_cfg, out_dir: Path, seed: int) -> dict[str, Any]:
        share = per_process_batch(train_cfg.batch_size, processes)
        stats = train_lm(model, blocks, validation, train_cfg.model_copy(update={"batch_size": share}), out_dir, seed)
        return {**stats, "processes": processes, "batch_size_per_process": share, "global_batch_size": share * processes}

    return wrapped


def _then_wait(check: Callable, group: ProcessGroup) -> Callable:
    """``train._check_training`` (the first call after ``trainer.train()`` returns) followed by a barrier.

    The Trainer has no barrier after its last checkpoint, where every process writes its RNG state; without this one,
    a process that finished first would remove the checkpoints folder under another still writing into it.
    """

    @functools.wraps(check)
    def wrapped(*args, **kwargs) -> None:
        check(*args, **kwargs)
        group.share(None)

    return wrapped


def _decided_by_main(choose: Callable, group: ProcessGroup) -> Callable:
    """``train.usable_checkpoint`` decided by rank 0 alone and shared: it removes broken checkpoints, so processes
    checking at once could see different folders and resume from different steps."""

    @functools.wraps(choose)
    def wrapped(folder: Path) -> Path | None:
        return group.share(choose(folder) if group.is_main else None)

    return wrapped


def _skip(*args, **kwargs) -> None:
    """Stands in, on the processes other than rank 0, for a write rank 0 makes once for all."""


@contextlib.contextmanager
def data_parallel(group: ProcessGroup | None) -> Iterator[None]:
    """Within the block, ``model_dir`` trains its models with every process of ``group`` (unchanged when None)."""
    if group is None:
        yield
        return
    swaps: dict[tuple[Any, str], Any] = {
        (train, "cached_step"): functools.partial(shared_cached_step, group),
        (train, "train_lm"): _global_batch(train.train_lm, group.size),
        (train, "_check_training"): _then_wait(train._check_training, group),
        (train, "usable_checkpoint"): _decided_by_main(train.usable_checkpoint, group),
        # Every process holds the same weights after the last all-reduce; one writes them.
        (train, "_save_model"): train._save_model if group.is_main else _skip,
        (store, "record_benchmark"): store.record_benchmark if group.is_main else _skip,
    }
    saved = {key: getattr(*key) for key in swaps}
    try:
        for (module, name), value in swaps.items():
            setattr(module, name, value)
        yield
    finally:
        for (module, name), value in saved.items():
            setattr(module, name, value)


# YAML 1.1 reads 1e-3 (an exponent without a dot) as a string; on a command line it means the number.
_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as YAML (``pretrain.learning_rate=1e-3``, ``data.base_train_tokens=8192``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: write it as key=value, e.g. pretrain.learning_rate=1e-3")
    value = yaml.safe_load(raw)
    if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
        value = float(value)
    return key.strip(), value


def main(argv: list[str] | None = None) -> int:
    """Train (or find) one registry model, on as many processes as the launcher started; prints its folder."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu", help="a profile name or a YAML file (default: cpu)")
    parser.add_argument("--model", required=True, help=f"a registry model: {', '.join(REGISTRY.names)}")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override, as the notebooks' parameters take them (repeatable)")
    args = parser.parse_args(argv)
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    try:
        cfg = load_config(args.profile, dict(parse_override(o) for o in args.override))
        REGISTRY.spec(args.model)
        check_batches(cfg, args.model, processes)
    except (ConfigError, RegistryError) as err:
        print(f"[launch] {err}", file=sys.stderr)
        return 2
    group = join_processes()
    with data_parallel(group):
        path = store.model_dir(cfg, args.model)
    if group is None or group.is_main:
        print(json.dumps({"model": args.model, "folder": str(path), **manifest(path)["meta"]}, default=str), flush=True)
    if group is not None:
        group.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
