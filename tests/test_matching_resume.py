"""A correlation pass killed half way resumes from its saved statistics and ends with the same numbers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from paper_lib.matching import correlate_samples, resume

TESTS = Path(__file__).resolve().parent
CHUNK = 400  # 4,000 positions in 10 chunks


def _sample(seed: int = 0):
    """Sparse activations of 40 parent and 50 child features over 4,000 positions, the child partly a copy."""
    rng = np.random.default_rng(seed)
    x = sp.random(4000, 40, density=0.08, random_state=rng, format="csr", dtype=np.float32)
    y = sp.hstack([x[:, :25] * 1.5, sp.random(4000, 25, density=0.08, random_state=rng, dtype=np.float32)]).tocsr()
    return x, y, rng.integers(0, 30, 4000)


def _correlate(mode: str, checkpoint=None):
    x, y, tokens = _sample()
    support = 2 if mode == "token" else 1
    return correlate_samples(x, y, tokens, mode, 30, support, chunk_positions=CHUNK, track_support=True,
                             checkpoint=checkpoint)


@pytest.mark.parametrize("mode", ["position", "token"])
def test_a_killed_pass_resumes_with_the_same_numbers(mode, tmp_path):
    state = tmp_path / "correlation-state.pkl"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(TESTS)!r})
        from paper_lib.matching import resume
        from test_matching_resume import _correlate
        resume.SAVE_SECONDS, resume.SAVE_SHARE, save, saves = 0.0, 1e9, resume.save, []

        def save_then_die(*args):  # killed for real once the fourth chunk's statistics are on disk
            seconds = save(*args)
            saves.append(1)
            if len(saves) == 4:
                os.kill(os.getpid(), signal.SIGKILL)
            return seconds

        resume.save = save_then_die
        _correlate({mode!r}, __import__("pathlib").Path({str(state)!r}))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    x, y, tokens = _sample()
    what = {"shapes": [x.shape, y.shape], "nnz": [x.nnz, y.nnz], "mode": mode, "vocab_size": 30,
            "min_support": 2 if mode == "token" else 1, "chunk": CHUNK, "support": True}
    acc, next_position = resume.load(state, what)
    assert next_position == 4 * CHUNK and acc.n_positions == 4 * CHUNK  # four chunks were in, none counted twice

    half_written = state.with_name(state.name + ".tmp")  # what a kill during a later save would leave
    half_written.write_bytes(b"\x80\x05partial")
    corr, acc = _correlate(mode, state)
    reference, ref_acc = _correlate(mode)
    assert acc.n_positions == 4000 and not state.exists() and not half_written.exists()
    np.testing.assert_array_equal(corr, reference)  # sums over the same chunks in the same order: bit for bit
    np.testing.assert_array_equal(acc.support(), ref_acc.support())
    assert np.isfinite(corr).any()


def test_a_state_from_another_pass_or_a_broken_file_is_not_used(tmp_path, capsys):
    state = tmp_path / "state.pkl"
    x, y, tokens = _sample()
    what = {"mode": "position", "chunk": CHUNK}
    resume.save(state, "an accumulator", 800, what)
    assert resume.load(state, {**what, "chunk": CHUNK * 2}) == (None, 0) and not state.exists()
    state.write_bytes(b"\x80\x05truncated")
    assert resume.load(state, what) == (None, 0) and not state.exists()
    err = capsys.readouterr().err
    assert "another pass" in err and "unreadable" in err
