"""The language models: BabyPython, its Lua and TinyStories fine-tunes (and access to the LuaStories merge).

Models are HF ``MistralForCausalLM`` trained with HF ``Trainer`` (about 2-4x faster on a CPU than
TransformerLens), then converted to a TransformerLens ``HookedTransformer`` for every later analysis.
Each model is a cached step folder holding ``model/`` (safetensors weights, config and tokenizer, a
standalone HF checkpoint that mergekit can read), ``history.json`` (the Trainer's log) and its manifest.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .artifacts import cached_step, manifest, read_json, record_benchmark, write_json_atomic
from .config import DOMAINS, MODEL_NAMES, Config
from .data import (
    base_train_blocks,
    corpus_fingerprint,
    domain_blocks,
    eval_blocks,
    get_tokenizer,
    token_stream,
    tokenizer_hash,
    unigram_accuracy,
)

FINETUNE_DOMAIN = {"lua": "lua", "tinystories": "tinystories"}
MODEL_LABELS = {"babypython": "BabyPython", "lua": "Lua", "tinystories": "TinyStories", "luastories": "LuaStories"}
STEP_VERSION = 1


def build_model(cfg: Config, vocab_size: int):
    """A freshly initialised ``MistralForCausalLM`` of the profile's shape (seeded by ``cfg.seed``)."""
    from transformers import MistralConfig, MistralForCausalLM, set_seed

    m = cfg.model
    config = MistralConfig(
        vocab_size=vocab_size,
        hidden_size=m.hidden_size,
        intermediate_size=m.intermediate_size,
        num_hidden_layers=m.num_hidden_layers,
        num_attention_heads=m.num_attention_heads,
        num_key_value_heads=m.num_key_value_heads,
        max_position_embeddings=cfg.data.block_size,
        rms_norm_eps=m.rms_norm_eps,
        rope_theta=m.rope_theta,
        sliding_window=None,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    set_seed(cfg.seed)
    return MistralForCausalLM(config).float()


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

    steps_per_epoch = math.ceil(len(train) / train_cfg.batch_size)
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
        save_total_limit=1,
        report_to=[],
        seed=seed,
        data_seed=seed,
        bf16=use_bf16,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,  # no accelerator on CPU runs; pinning only warns there
        disable_tqdm=False,
    )
    trainer = Trainer(model=model, args=args, train_dataset=_Blocks(train), eval_dataset=_Blocks(validation))
    checkpoints = sorted((out_dir / "checkpoints").glob("checkpoint-*"))
    started = time.time()
    result = trainer.train(resume_from_checkpoint=bool(checkpoints))
    seconds = time.time() - started
    write_json_atomic(out_dir / "history.json", trainer.state.log_history)
    # Checkpoints (weights + optimiser state, ~3x the model) exist to resume an interrupted run; a finished
    # model keeps only its final weights.
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    tokens = int(len(train) * train.shape[1] * train_cfg.epochs)
    return {
        "train_tokens": tokens,
        "train_steps": int(result.global_step),
        "train_seconds": round(seconds, 2),
        "tokens_per_second": round(tokens / max(seconds, 1e-9), 1),
        "resumed": bool(checkpoints),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


def _save_model(model, tokenizer, out_dir: Path) -> None:
    model.save_pretrained(out_dir / "model", safe_serialization=True)
    tokenizer.save_pretrained(out_dir / "model")


def _curve_blocks(cfg: Config, domains: tuple[str, ...]) -> torch.Tensor:
    """A small validation set for the curve logged during training (the final numbers use all eval blocks)."""
    return torch.cat([eval_blocks(cfg, d)[:16] for d in domains])


def _base_inputs(cfg: Config) -> dict[str, Any]:
    return {
        "model": cfg.model.__dict__,
        "train": cfg.pretrain.__dict__,
        "tokenizer": tokenizer_hash(cfg),
        "block_size": cfg.data.block_size,
        "tokens": cfg.data.base_train_tokens,
        "corpora": {d: corpus_fingerprint(cfg, d, "train") for d in ("babylm", "python")},
        "seed": cfg.seed,
    }


def _trainable(build):
    """Models are trained on first use, which may happen inside a caller's no_grad or inference_mode block:
    build (and so create the parameters) with autograd on, whatever the caller's context."""

    def wrapped(out: Path) -> dict:
        with torch.inference_mode(False), torch.enable_grad():
            return build(out)

    return wrapped


def model_dir(cfg: Config, name: str) -> Path:
    """The finished artifact folder of a model, trained (or merged) on first use."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model '{name}'; models are {', '.join(MODEL_NAMES)}")
    if name == "luastories":
        from .merging import merged_model_dir

        return merged_model_dir(cfg)
    tokenizer = get_tokenizer(cfg)
    if name == "babypython":

        @_trainable
        def build(out: Path) -> dict:
            model = build_model(cfg, len(tokenizer))
            stats = train_lm(
                model, base_train_blocks(cfg), _curve_blocks(cfg, ("babylm", "python")), cfg.pretrain, out, cfg.seed
            )
            _save_model(model, tokenizer, out)
            return stats

        path = cached_step(cfg.profile, "model-babypython", _base_inputs(cfg), build, STEP_VERSION)
    else:
        parent = model_dir(cfg, "babypython")
        domain = FINETUNE_DOMAIN[name]
        inputs = {
            "parent": parent.name,
            "train": cfg.finetune.__dict__,
            "domain": domain,
            "tokens": cfg.data.finetune_train_tokens,
            "corpus": corpus_fingerprint(cfg, domain, "train"),
            "seed": cfg.seed,
        }

        @_trainable
        def build(out: Path) -> dict:
            model = _load_hf(parent)
            blocks = domain_blocks(cfg, domain, "train", cfg.data.finetune_train_tokens)
            stats = train_lm(model, blocks, _curve_blocks(cfg, (domain,)), cfg.finetune, out, cfg.seed)
            _save_model(model, tokenizer, out)
            return stats

        path = cached_step(cfg.profile, f"model-{name}", inputs, build, STEP_VERSION)
    stats = manifest(path)["meta"]
    if "tokens_per_second" in stats:
        record_benchmark(cfg.profile, f"train_{name}", stats)
    return path


def _load_hf(path: Path):
    from transformers import MistralForCausalLM

    try:
        model = MistralForCausalLM.from_pretrained(path / "model", dtype=torch.float32)
    except Exception as err:
        raise RuntimeError(
            f"cannot load the model checkpoint in {path / 'model'} ({err}). The folder is corrupt: delete "
            f"{path} and rerun to rebuild it."
        ) from err
    return model.to(default_device()).eval()


def default_device() -> str:
    """Where analysis runs: the GPU when there is one (Colab), else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_lm(cfg: Config, name: str):
    """The HF ``MistralForCausalLM`` of a model (float32, eval mode, on the GPU if there is one)."""
    return _load_hf(model_dir(cfg, name))


def hooked_config(hf_config):
    """TransformerLens config equivalent to an HF Mistral config, built without touching the hub."""
    from transformer_lens import HookedTransformerConfig

    d_head = hf_config.hidden_size // hf_config.num_attention_heads
    return HookedTransformerConfig(
        n_layers=hf_config.num_hidden_layers,
        d_model=hf_config.hidden_size,
        d_head=d_head,
        n_heads=hf_config.num_attention_heads,
        n_key_value_heads=hf_config.num_key_value_heads,
        d_mlp=hf_config.intermediate_size,
        d_vocab=hf_config.vocab_size,
        n_ctx=hf_config.max_position_embeddings,
        act_fn="silu",
        gated_mlp=True,
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=d_head,
        rotary_base=int(hf_config.rope_theta) if hasattr(hf_config, "rope_theta") else 10000,
        eps=hf_config.rms_norm_eps,
        original_architecture="MistralForCausalLM",
        default_prepend_bos=False,
    )


def to_hooked(hf_model):
    """Convert an HF Mistral model to a TransformerLens ``HookedTransformer`` (same logits, no hub access)."""
    from transformer_lens import HookedTransformer
    from transformer_lens.pretrained.weight_conversions import convert_mistral_weights

    tl_cfg = hooked_config(hf_model.config)
    model = HookedTransformer(tl_cfg)
    state_dict = convert_mistral_weights(hf_model, tl_cfg)
    model.load_and_process_state_dict(
        state_dict, fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False
    )
    return model.eval()


def load_hooked_lm(cfg: Config, name: str):
    """A model as a TransformerLens ``HookedTransformer``, for every analysis after training."""
    return to_hooked(load_lm(cfg, name))


@torch.inference_mode()
def evaluate_lm(model, blocks: torch.Tensor, batch_size: int = 32, desc: str = "evaluating") -> dict[str, float]:
    """Mean next-token cross-entropy and argmax accuracy of an HF or TransformerLens model on blocks."""
    total_loss = 0.0
    correct = 0
    count = 0
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(blocks), batch_size), desc=desc, leave=False):
        batch = blocks[start : start + batch_size].to(device)
        logits = model(batch)
        logits = getattr(logits, "logits", logits)[:, :-1].float()
        targets = batch[:, 1:]
        total_loss += float(
            torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
        )
        correct += int((logits.argmax(-1) == targets).sum())
        count += targets.numel()
    return {"loss": total_loss / count, "accuracy": correct / count}


def model_metrics(cfg: Config, name: str) -> dict[str, dict[str, float]]:
    """Loss and accuracy of one model on every domain's validation blocks (a cached step of its own)."""
    path = model_dir(cfg, name)
    inputs = {"model": path.name, "eval_tokens": cfg.data.eval_tokens, "tokenizer": tokenizer_hash(cfg)}
    inputs["corpora"] = {d: corpus_fingerprint(cfg, d, "validation") for d in DOMAINS}

    def build(out: Path) -> dict:
        model = _load_hf(path)
        metrics = {
            d: evaluate_lm(model, eval_blocks(cfg, d), cfg.pretrain.eval_batch_size, desc=f"{name} on {d}")
            for d in DOMAINS
        }
        write_json_atomic(out / "metrics.json", metrics)
        return {}

    done = cached_step(cfg.profile, f"eval-{name}", inputs, build)
    return read_json(done / "metrics.json")


def model_table(cfg: Config, names: tuple[str, ...] | list[str]):
    """A long table (model, domain, loss, accuracy) of models on every domain, like the model cards."""
    import pandas as pd

    rows = []
    for name in names:
        for domain, values in model_metrics(cfg, name).items():
            rows.append({"model": MODEL_LABELS[name], "domain": domain, **values})
    return pd.DataFrame(rows)


def training_history(cfg: Config, name: str):
    """The Trainer's log of a trained model as a table (step, loss, eval_loss, learning_rate, ...)."""
    import pandas as pd

    return pd.DataFrame(read_json(model_dir(cfg, name) / "history.json"))


def unigram_baselines(cfg: Config, domains: tuple[str, ...] | list[str]) -> dict[str, float]:
    """Accuracy of always predicting BabyPython's most frequent training token, per validation domain."""
    train = torch.cat([token_stream(cfg, d, "train", _half(cfg.data.base_train_tokens)) for d in ("babylm", "python")])
    vocab = len(get_tokenizer(cfg))
    return {d: unigram_accuracy(train, token_stream(cfg, d, "validation", cfg.data.eval_tokens), vocab) for d in domains}


def _half(tokens: int | None) -> int | None:
    return None if tokens is None else tokens // 2


def training_stats(cfg: Config, name: str) -> dict[str, Any]:
    """How a model was trained: tokens, steps, wall time and throughput (from its manifest)."""
    return manifest(model_dir(cfg, name))["meta"]
