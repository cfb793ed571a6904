"""Models at initialisation (the registry's ``init`` controls): the family's architecture, nothing learned."""

from __future__ import annotations

from pathlib import Path

from ..core.artifacts import cached_step, stable_hash, write_json_atomic
from ..core.config import Config
from ..core.registry import ModelSpec
from ..data import get_tokenizer, tokenizer_hash
from .build import build_model


def initial_seed(cfg: Config, spec: ModelSpec) -> int:
    """The seed of an ``init`` model: derived from the profile's seed and its name, never the family's own seed."""
    seed = int(stable_hash({"seed": cfg.seed, "init": spec.name}, 8), 16) % 2**31
    return seed if seed != cfg.seed else seed + 1


def initial_dir(cfg: Config, spec: ModelSpec) -> Path:
    """The folder of an ``init`` model (``model/``, an HF checkpoint with the tokenizer), made on first use."""
    tokenizer = get_tokenizer(cfg)
    seed = initial_seed(cfg, spec)
    inputs = {
        "model": {**cfg.model.model_dump(), **spec.architecture},
        "tokenizer": tokenizer_hash(cfg),
        "block_size": cfg.data.block_size,
        "seed": seed,
    }

    def build(out: Path) -> dict:
        model = build_model(cfg.model_copy(update={"seed": seed}), len(tokenizer), spec.architecture)
        model.save_pretrained(out / "model", safe_serialization=True)
        tokenizer.save_pretrained(out / "model")
        write_json_atomic(out / "history.json", [])  # nothing was trained
        return {"recipe": "init", "seed": seed, "train_tokens": 0}

    return cached_step(cfg.profile, f"model-{spec.name}", inputs, build, code=["paper_lib.models.build"])
