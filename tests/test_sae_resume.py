"""SAE training survives a kill: SAELens checkpoints, the completeness mark, and how close a resumed run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from paper_lib.saes import train_sae
from paper_lib.saes.checkpoints import MARK, checkpoint_root, latest_checkpoint

TESTS = Path(__file__).resolve().parent
# 50 steps of 480 tokens on a tiny random model's MLP (64 -> 128 features), a checkpoint every 10 steps.
OVERRIDES = {"sae.training_tokens": 24_000, "sae.n_checkpoints": 4}
N_BLOCKS = 1_000  # 24,000 tokens of 24-token blocks: one pass, no repeats


def _inputs():
    """The same model and blocks in every process (both are seeded)."""
    from conftest import _tiny_mistral
    from paper_lib.core.config import load_config
    from paper_lib.models import to_hooked

    cfg = load_config("smoke", OVERRIDES)
    blocks = torch.randint(3, 97, (N_BLOCKS, cfg.sae.context_size), generator=torch.Generator().manual_seed(0))
    return cfg, to_hooked(_tiny_mistral()), blocks


def _weights(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(out / "sae" / "sae_weights.safetensors")


def _distance(a: dict, b: dict) -> float:
    """Relative Frobenius distance over all the SAE's parameters."""
    num = sum(float((a[k] - b[k]).pow(2).sum()) for k in a)
    return (num / sum(float(a[k].pow(2).sum()) for k in a)) ** 0.5


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference run, with checkpoints, and the same run with another seed (the scale of 'different')."""
    cfg, model, blocks = _inputs()
    runs = {}
    for name, seed in (("full", 1), ("other_seed", 2)):
        out = tmp_path_factory.mktemp(name)
        runs[name] = (out, train_sae(cfg, "babypython", model, blocks, out, 0.1, seed=seed))
    return runs


def test_checkpoints_do_not_change_the_trained_sae(uninterrupted, tmp_path):
    """n_checkpoints is left out of the SAE's cache key: saving checkpoints must leave training bit for bit alone."""
    cfg, model, blocks = _inputs()
    cfg = cfg.model_copy(update={"sae": cfg.sae.model_copy(update={"n_checkpoints": 0})})
    train_sae(cfg, "babypython", model, blocks, tmp_path, 0.1, seed=1)
    full_dir, stats = uninterrupted["full"]
    reference, plain = _weights(full_dir), _weights(tmp_path)
    assert all(torch.equal(reference[k], plain[k]) for k in reference)
    assert stats["resumed_from_step"] == 0 and not checkpoint_root(full_dir).exists()  # a finished SAE keeps none


def test_a_killed_training_resumes_from_its_last_checkpoint(uninterrupted, tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(TESTS)!r})
        import paper_lib.saes.checkpoints as checkpoints
        import paper_lib.saes.train as train
        from test_sae_resume import _inputs
        seal, sealed = checkpoints.mark_complete, []

        def seal_then_die(path, state):  # killed for real, right after the second checkpoint is complete
            seal(path, state)
            sealed.append(path)
            if len(sealed) == 2:
                os.kill(os.getpid(), signal.SIGKILL)

        checkpoints.mark_complete = seal_then_die
        cfg, model, blocks = _inputs()
        train.train_sae(cfg, "babypython", model, blocks, __import__("pathlib").Path({str(tmp_path)!r}), 0.1, seed=1)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    checkpoint = latest_checkpoint(tmp_path)
    assert checkpoint is not None and len(list(checkpoint_root(tmp_path).glob("*/*"))) == 1  # only the newest kept
    saved = json.loads((checkpoint / MARK).read_text())
    assert not (tmp_path / "sae").exists()

    cfg, model, blocks = _inputs()
    stats = train_sae(cfg, "babypython", model, blocks, tmp_path, 0.1, seed=1)
    full_dir, full_stats = uninterrupted["full"]
    assert 0 < stats["resumed_from_step"] == saved["step"] < stats["train_steps"] == full_stats["train_steps"]
    assert stats["tokens_this_run"] == (stats["train_steps"] - saved["step"]) * cfg.sae.train_batch_size_tokens
    curve = json.loads((tmp_path / "training_curve.json").read_text())
    full_curve = json.loads((full_dir / "training_curve.json").read_text())
    assert [r["step"] for r in curve] == [r["step"] for r in full_curve]  # the curve continues where it stopped
    assert curve[: len(saved["rows"])] == saved["rows"]
    assert not checkpoint_root(tmp_path).exists()
    # Not bit for bit (SAELens does not checkpoint its shuffling buffer; see checkpoints.py), but far closer to
    # the uninterrupted run than the same run with another seed is.
    resumed, full, other = _weights(tmp_path), _weights(full_dir), _weights(uninterrupted["other_seed"][0])
    gap, seed_gap = _distance(resumed, full), _distance(other, full)
    print(f"relative weight distance: resumed {gap:.4f}, other seed {seed_gap:.4f}")
    assert gap < seed_gap
    assert abs(curve[-1]["explained_variance"] - full_curve[-1]["explained_variance"]) < abs(
        full_curve[-1]["explained_variance"] - full_curve[0]["explained_variance"]
    )


def test_an_unfinished_or_corrupt_checkpoint_is_never_resumed(tmp_path, capsys):
    root = checkpoint_root(tmp_path) / "run"
    unfinished = root / "4800"  # what a kill in the middle of SAELens's writing leaves: files, no mark
    unfinished.mkdir(parents=True)
    (unfinished / "sae_weights.safetensors").write_bytes(b"\x00" * 10)
    corrupt = root / "2400"  # marked, but a file was truncated afterwards
    corrupt.mkdir()
    (corrupt / MARK).write_text(json.dumps({"step": 5, "seconds": 1.0, "rows": []}))
    assert latest_checkpoint(tmp_path) is None
    assert not unfinished.exists() and not corrupt.exists()
    err = capsys.readouterr().err
    assert "not finished" in err and "missing or truncated" in err and "starts again from step 0" in err


def test_the_interrupt_handlers_save_never_writes_or_rewrites_a_checkpoint(tmp_path):
    """SAELens's Ctrl-C / SIGTERM handler calls the save hook on a folder with no weights (it may not exist) or on
    a checkpoint already sealed; neither call may write anything."""
    from paper_lib.saes.checkpoints import sealing

    calls = []
    hook = sealing(calls.append, lambda: {"step": 1, "seconds": 0.0, "rows": []})
    hook(None)
    hook(tmp_path / "run" / "480")
    sealed = tmp_path / "run" / "960"
    sealed.mkdir(parents=True)
    (sealed / "sae_weights.safetensors").write_bytes(b"")
    (sealed / MARK).write_text("{}")
    hook(sealed)
    assert calls == [] and not (tmp_path / "run" / "480").exists() and (sealed / MARK).read_text() == "{}"
