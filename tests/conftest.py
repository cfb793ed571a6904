"""Shared fixtures: the smoke profile with a session run folder, a tiny random Mistral model, seeding."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session", autouse=True)
def _session_environment(tmp_path_factory):
    """Point the run folder at a session tmp dir and the corpora at $PAPER_DATA_DIR (or ../shared/data).

    Under pytest-xdist (``make test`` runs two workers) every worker shares one run folder, one level above
    its own temp dir, so a smoke step is built once and the other worker waits on its lock (``cached_step``)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        shared = tmp_path_factory.getbasetemp().parent
        runs, figures = shared / "runs", shared / "figures"
        runs.mkdir(exist_ok=True)
        figures.mkdir(exist_ok=True)
    else:
        runs, figures = tmp_path_factory.mktemp("runs"), tmp_path_factory.mktemp("figures")
    os.environ["PAPER_RUNS_DIR"] = str(runs)
    os.environ.setdefault("PAPER_FIGURES_DIR", str(figures))
    if "PAPER_DATA_DIR" not in os.environ:
        default = PROJECT_ROOT.parent / "shared" / "data"
        if default.is_dir():
            os.environ["PAPER_DATA_DIR"] = str(default)
    os.environ.setdefault("MPLBACKEND", "Agg")
    if worker:
        # One thread per worker, and per notebook kernel it starts (they inherit the variables): OpenMP threads
        # spin while they wait, so two workers each running two threads on two cores ran a step up to 17x slower.
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = "1"
        torch.set_num_threads(1)
    else:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield runs


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The offline corpora; tests that need them fail loudly if they are missing."""
    path = os.environ.get("PAPER_DATA_DIR")
    assert path and Path(path).is_dir(), "set PAPER_DATA_DIR to the offline corpora (e.g. ../shared/data)"
    return Path(path)


@pytest.fixture(scope="session")
def smoke_cfg(data_dir):
    """The smoke profile, reading the offline corpora."""
    from paper_lib.core.config import load_config

    return load_config("smoke")


@pytest.fixture
def seed():
    """Seed every generator the tests use."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    return 0


def _tiny_mistral(vocab_size: int = 97):
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rms_norm_eps=1e-6,
        sliding_window=None,
        tie_word_embeddings=False,
    )
    return MistralForCausalLM(config).float().eval()


def _word_tokenizer(vocab_size: int = 97):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


@pytest.fixture
def tiny_tokenizer():
    """A word-level fast tokenizer over the tiny model's 97 ids (w3 ... w96), built locally."""
    return _word_tokenizer()


@pytest.fixture
def tiny_hf_model():
    """A tiny random MistralForCausalLM (vocab 97, hidden 32, MLP 64, 1 layer), built locally."""
    return _tiny_mistral()


class _PlusOne(torch.nn.Module):
    """A language model that predicts the next token is the current one plus one (mod 10), with certainty."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))  # a parameter, so evaluate_lm can find the device

    def forward(self, tokens):
        return torch.nn.functional.one_hot((tokens + 1) % 10, 10).float() * 50


@pytest.fixture
def plus_one_lm():
    """``_PlusOne``: an evaluation whose right answer is known token by token."""
    return _PlusOne()


@pytest.fixture
def tiny_hooked(tiny_hf_model):
    """The tiny model converted to a TransformerLens HookedTransformer."""
    from paper_lib.models import to_hooked

    return to_hooked(tiny_hf_model)
