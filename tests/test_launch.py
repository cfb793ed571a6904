"""Data-parallel training: ``shared_cached_step``'s protocol, and two CPU processes under ``accelerate launch``."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from paper_lib.core import artifacts
from paper_lib.models import launch

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# A base model of 4 optimiser steps (64 blocks of 64 tokens, 16 per step), checkpointed at steps 2 and 4, so the run
# crosses a checkpoint written by both processes (model and optimiser from rank 0, one RNG state per rank) and the
# removal of the checkpoints once training ends. The data settings are the smoke profile's, so the tokenizer and
# token blocks are those the other tests build.
OVERRIDES = {"data.base_train_tokens": 4096, "pretrain.save_steps": 2, "pretrain.logging_steps": 1}


class _ThreadGroup:
    """A ``StepGroup`` of threads, so the protocol runs without torch.distributed."""

    def __init__(self, rank: int, barrier: threading.Barrier, slot: list):
        self.is_main, self._barrier, self._slot = rank == 0, barrier, slot

    def share(self, value):
        if self.is_main:
            self._slot[0] = value
        self._barrier.wait()
        shared = self._slot[0]
        self._barrier.wait()  # nobody overwrites the slot before every thread has read it
        return shared


def _run_together(build, ranks: int = 2) -> list:
    """``shared_cached_step`` on ``ranks`` threads; each thread's returned folder or raised error."""
    barrier, slot, results = threading.Barrier(ranks, timeout=30), [None], [None] * ranks

    def run(rank: int) -> None:
        try:
            results[rank] = artifacts.shared_cached_step(_ThreadGroup(rank, barrier, slot), "launchtest", "toy",
                                                         {"n": 1}, build)
        except Exception as err:
            results[rank] = err

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(ranks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_shared_step_is_built_by_every_process_and_finished_once(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPER_RUNS_DIR", str(tmp_path))
    calls = []

    def build(out: Path) -> dict:
        calls.append(out)
        if len(calls) == 1:  # as in training: one process writes each file
            (out / "weights.txt").write_text("w")
        return {"value": 1.0}

    first, second = _run_together(build)
    assert first == second and isinstance(first, Path)
    assert len(calls) == 2 and calls[0] == calls[1] == first.with_name(first.name + ".partial")
    # the folder a single process would find (same key), finished, with the manifest listing the file
    assert artifacts.cached_step("launchtest", "toy", {"n": 1}, build) == first
    assert artifacts.manifest(first)["files"] == {"weights.txt": 1}
    assert not calls[0].exists() and len(calls) == 2
    assert _run_together(build) == [first, first] and len(calls) == 2  # finished: nobody builds again


def test_shared_step_failure_on_the_main_process_is_raised_on_every_process(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPER_RUNS_DIR", str(tmp_path))
    results = _run_together(lambda out: {"loss": math.nan})
    assert all(isinstance(r, artifacts.ArtifactError) and "loss" in str(r) for r in results)
    finished = [p for p in (tmp_path / "launchtest").iterdir() if p.is_dir() and not p.name.endswith(".partial")]
    assert finished == []  # nothing unfinished is taken as finished


def test_the_checkpoint_to_resume_from_is_chosen_by_the_main_process_alone(tmp_path):
    """Choosing removes broken checkpoints, so two processes choosing at once could resume from different steps."""
    barrier, slot, seen, chosen = threading.Barrier(2, timeout=30), [None], [], [None, None]

    def choose(folder):
        seen.append(folder)
        return folder / "checkpoint-20"

    def run(rank):
        chosen[rank] = launch._decided_by_main(choose, _ThreadGroup(rank, barrier, slot))(tmp_path)

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert seen == [tmp_path] and chosen == [tmp_path / "checkpoint-20"] * 2


def test_batch_that_processes_cannot_share_is_refused():
    assert launch.per_process_batch(16, 2) == 8
    with pytest.raises(ValueError, match="cannot be split evenly over 3 processes"):
        launch.per_process_batch(16, 3)
    assert launch.parse_override("pretrain.learning_rate=1e-3") == ("pretrain.learning_rate", 1e-3)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _losses(path: Path) -> dict[int, float]:
    return {row["step"]: row["loss"] for row in json.loads((path / "history.json").read_text()) if "loss" in row}


def test_two_cpu_processes_train_the_folder_a_single_process_would(data_dir, tmp_path, monkeypatch):
    from paper_lib.core.config import load_config
    from paper_lib.models import load_hf, model_dir, training_stats

    cfg = load_config("smoke", OVERRIDES)
    single = model_dir(cfg, "babypython")  # in the session's run folder, trained by this one process
    single_stats = training_stats(cfg, "babypython")
    # The launched run gets a run folder of its own, with the data steps (tokenizer, token blocks) copied over so it
    # only trains.
    launched_runs = tmp_path / "launched"
    (launched_runs / "smoke").mkdir(parents=True)
    for step in single.parent.iterdir():
        if step.name.startswith(("tokenizer-", "tokens-babylm-", "tokens-python-")) and artifacts.is_complete(step):
            shutil.copytree(step, launched_runs / "smoke" / step.name)

    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "-m", "paper_lib.models.launch",
               "--profile", "smoke", "--model", "babypython",
               *(arg for key, value in OVERRIDES.items() for arg in ("--override", f"{key}={value}"))]
    env = {**os.environ, "PAPER_RUNS_DIR": str(launched_runs), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    started = time.time()
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"launch failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    print(f"two-process launch: {time.time() - started:.1f} s")

    folders = [p for p in (launched_runs / "smoke").iterdir() if p.is_dir() and p.name.startswith("model-")]
    assert [p.name for p in folders] == [single.name]  # one finished folder, the single-process key; no .partial
    launched = folders[0]
    assert artifacts.is_complete(launched) and not (launched / "checkpoints").exists()
    meta = artifacts.manifest(launched)["meta"]
    assert meta["processes"] == 2 and meta["global_batch_size"] == cfg.pretrain.batch_size == 16
    assert meta["batch_size_per_process"] == 8
    # The same optimiser steps over the same tokens, and the throughput counts both processes' tokens.
    assert meta["train_steps"] == single_stats["train_steps"] == 4
    assert meta["train_tokens"] == single_stats["train_tokens"] == 4096
    assert meta["tokens_per_second"] == pytest.approx(4096 / meta["train_seconds"], rel=0.05)
    benchmark = json.loads((launched_runs / "smoke" / artifacts.BENCHMARK_FILE).read_text())["train_babypython"]
    assert benchmark["processes"] == 2

    # Each step sees the same 16 blocks, split 8 + 8: the losses agree to float rounding, not bit for bit (the
    # two half-batch gradients are all-reduced, which sums in another order than one full batch does).
    single_losses, launched_losses = _losses(single), _losses(launched)
    assert sorted(launched_losses) == sorted(single_losses) == [1, 2, 3, 4]
    for step, loss in single_losses.items():
        assert launched_losses[step] == pytest.approx(loss, rel=1e-5)
    assert launched_losses[4] < launched_losses[1]
    evaluated = [[row["step"] for row in json.loads((path / "history.json").read_text()) if "eval_loss" in row]
                 for path in (single, launched)]
    assert evaluated[0] == evaluated[1] and evaluated[0]  # the validation curve at the same steps

    model, reference = load_hf(launched), load_hf(single)
    blocks = torch.randint(0, cfg.data.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (model(blocks).logits - reference(blocks).logits).abs().max().item() < 1e-3
    monkeypatch.setenv("PAPER_RUNS_DIR", str(launched_runs))
    assert model_dir(cfg, "babypython") == launched  # the notebooks find it, and do not train again
