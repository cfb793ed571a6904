"""What the paper-scale run costs: throughput and peak GPU memory of every expensive step at the `paper` profile's shapes.

Measured steps (shapes are the `paper` profile's, i.e. the defaults of ``paper_lib/core/config.py``):

* ``lm_train``: one optimiser step of HF ``MistralForCausalLM`` (hidden 512, MLP 1024, 1 layer, 16 heads, 8 KV heads,
  vocab 32,000, blocks of 256, 64 blocks a step): forward + backward + gradient clipping + AdamW, through HF
  ``Trainer`` with the arguments ``paper_lib.models.train.train_lm`` uses, and as a plain loop with the same model
  and optimiser; bf16 autocast (the profile's ``bf16: true``) and float32.
* ``lm_eval``: the per-batch work of ``paper_lib.models.evaluate.evaluate_lm`` (float32 model, 64 blocks of 256,
  log-softmax, summed and per-token NLL, argmax accuracy, per-block sums to the CPU), inference mode.
* ``sae_collect``: the activation-collection forward SAELens runs while it trains an SAE (128 prompts of 24 tokens
  a forward, float32, up to layer 0's MLP post-activation, the paper's ``blocks.0.mlp.hook_post``).
* ``sae_train``: one SAELens ``StandardTrainingSAE`` training step (d_in 1024, 16,384 features, 3,072 tokens a
  batch, Adam(lr 1e-4, betas 0.9/0.9999)), re-implemented in plain torch op for op from SAELens 6's
  ``TrainingSAE.training_forward_pass``, ``StandardTrainingSAE.calculate_aux_loss`` and ``SAETrainer._train_step``
  (SAELens is not installed on the GPU machine). ``--check-sae-lens`` compares it with SAELens itself.
* ``matching``: the project's own ``paper_lib.matching`` code (numba, CPU) on synthetic SAE-like activations of
  16,384 x 16,384 features over the paper's sample (1,000 blocks of 24 tokens), via ``benchmarks/bench_matching.py``.

Each rate is the median of several timed windows after a warm-up (CUDA synchronised at window edges). The JSON also
gives, for each step, an estimate of hours at the paper's token counts, with each count's source.

    python benchmarks/paper_rates.py --device cuda --out rates.json
    python benchmarks/paper_rates.py --device cpu --quick --out /tmp/quick.json      # seconds-long sanity run
    python benchmarks/paper_rates.py --check-sae-lens --into rates.json              # CPU, needs sae_lens
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent

# The `paper` profile's shapes (paper_lib/core/config.py defaults; PAPER.md).
PAPER = {
    "vocab_size": 32_000,  # Mistral-7B tokenizer (data.vocab_size)
    "hidden_size": 512,
    "intermediate_size": 1024,
    "num_hidden_layers": 1,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "block_size": 256,
    "train_batch_blocks": 64,
    "eval_batch_blocks": 64,
    "pretrain_lr": 6e-4,
    "pretrain_weight_decay": 0.1,
    "adam_betas": (0.9, 0.999),
    "sae_d_in": 1024,  # blocks.0.mlp.hook_post = intermediate_size
    "sae_d_sae": 16_384,  # expansion_factor 16
    "sae_context": 24,
    "sae_batch_tokens": 128 * 24,
    "sae_store_prompts": 128,
    "sae_lr": 1e-4,
    "sae_betas": (0.9, 0.9999),
    "sae_l1": 1.0,
    "sae_decoder_init_norm": 0.1,
    "match_features": 16_384,
    "match_positions": 1000 * 24,  # matching.n_blocks x matching.context_size
    "match_min_token_support": 34,
    "match_min_coactive": 0,
    "match_l0": 45.0,  # bench_matching.py's default mean L0 ("tens of active features per token", PAPER.md)
}

QUICK = {  # seconds on a 2-core CPU: the same code paths at toy sizes
    **PAPER,
    "vocab_size": 4096,
    "block_size": 64,
    "train_batch_blocks": 2,
    "eval_batch_blocks": 2,
    "sae_d_sae": 2048,
    "sae_batch_tokens": 256,
    "sae_store_prompts": 8,
    "match_features": 1024,
    "match_positions": 4000,
    "match_l0": 20.0,
}

# Token counts of the paper's run. PAPER.md gives epochs, rows and block sizes but no token counts; where a count
# is derived, the derivation and its inputs are stated, so each hour estimate can be rescaled.
TOKEN_COUNTS = {
    "base_pretrain": {
        "tokens": 3 * 2 * 135_000_000,
        "source": "PAPER.md: BabyPython = all of BabyLM-100M plus an equal amount of Python (nilq/baby-python, "
                  "~10.7M train rows), 3 epochs (model card; the earliest config said 4). Derived: BabyLM-100M is "
                  "100M words ~ 135M Mistral tokens (assumed 1.35 tokens/word, not measured), doubled for the "
                  "Python half, times 3 epochs. Unverified estimate: PAPER.md states no token count.",
    },
    "finetune_lua": {
        "tokens": 559_000 * 1_500,
        "source": "PAPER.md: 1 epoch of nilq/small-lua-stack. Derived: ~559k rows (the dataset's Hugging Face "
                  "listing) x an assumed 1,500 Mistral tokens per Lua file. Unverified estimate.",
    },
    "finetune_tinystories": {
        "tokens": 925_000_000,
        "source": "PAPER.md: 1 epoch of roneneldan/TinyStories. Derived: its train split is ~925M GPT-2 tokens "
                  "(llm.c's TinyStories preprocessing count); taken as the Mistral-token count. Unverified estimate.",
    },
    "sae_per_model": {
        "tokens": 50_000_000,
        "source": "paper_lib/core/config.py SAEConfig.training_tokens (the paper profile's default; PAPER.md gives "
                  "no SAE token count). The paper trains 4 SAEs (one per model); the project's controls add more.",
    },
    "lm_evaluation": {
        "tokens": (21 * 2 + 4 * 2) * 1_048_576,
        "source": "paper_lib/core/config.py data.eval_tokens = 1,048,576 per domain; PAPER.md Figure 5: a SLERP sweep "
                  "at stride 0.05 (21 points) on Lua and TinyStories, plus the 4 models on ~2 domains each.",
    },
    "matching": {
        "positions": 1000 * 24,
        "pairs": 4,
        "modes": 2,
        "source": "PAPER.md: ~1,000 validation blocks of 24 tokens, 4 parent->child pairs; config.py matching.modes "
                  "= token and position. Controls (seed ceilings, null floors) multiply this.",
    },
}


def log(*parts) -> None:
    print("[paper_rates]", *parts, flush=True)


# ---------------------------------------------------------------------------------------------------- timing

def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(step, device: str, units_per_call: float, warmup: int, window_s: float, windows: int) -> dict:
    """Median units/s over ``windows`` windows of about ``window_s`` seconds each, after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    step()
    sync(device)
    per_call = max(time.perf_counter() - t0, 1e-6)
    calls = max(1, int(window_s / per_call))
    rates, seconds = [], []
    for _ in range(windows):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(calls):
            step()
        sync(device)
        dt = time.perf_counter() - t0
        seconds.append(dt)
        rates.append(calls * units_per_call / dt)
    return {
        "rate_median": statistics.median(rates),
        "rate_min": min(rates),
        "rate_max": max(rates),
        "windows": windows,
        "calls_per_window": calls,
        "window_seconds_median": statistics.median(seconds),
        "warmup_calls": warmup + 1,
        "step_ms_median": 1000 * statistics.median(seconds) / calls,
    }


def reset_memory(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory(device: str) -> dict:
    if device != "cuda":
        return {}
    return {
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3),
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 3),
    }


# ---------------------------------------------------------------------------------------------------- language model

def build_lm(shapes: dict, device: str):
    """The model ``paper_lib.models.build.build_model`` builds (same MistralConfig), float32, on ``device``."""
    from transformers import MistralConfig, MistralForCausalLM, set_seed

    config = MistralConfig(
        vocab_size=shapes["vocab_size"],
        hidden_size=shapes["hidden_size"],
        intermediate_size=shapes["intermediate_size"],
        num_hidden_layers=shapes["num_hidden_layers"],
        num_attention_heads=shapes["num_attention_heads"],
        num_key_value_heads=shapes["num_key_value_heads"],
        max_position_embeddings=shapes["block_size"],
        rms_norm_eps=shapes["rms_norm_eps"],
        rope_theta=shapes["rope_theta"],
        sliding_window=None,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    set_seed(0)
    model = MistralForCausalLM(config).float().to(device)
    return model


def random_blocks(n: int, shapes: dict, device: str = "cpu", seed: int = 0, length: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, shapes["vocab_size"], (n, length or shapes["block_size"]), generator=g)
    return ids.to(device)


def lm_train_loop(shapes: dict, device: str, bf16: bool, t: dict) -> dict:
    """Plain loop: forward with labels, backward, clip 1.0, fused AdamW, cosine LR: the Trainer's step without it."""
    model = build_lm(shapes, device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=shapes["pretrain_lr"], betas=shapes["adam_betas"],
                            weight_decay=shapes["pretrain_weight_decay"], fused=device == "cuda")
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100_000)
    batches = [random_blocks(shapes["train_batch_blocks"], shapes, device, seed=s) for s in range(4)]
    i = [0]

    def step():
        x = batches[i[0] % len(batches)]
        i[0] += 1
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)

    reset_memory(device)
    tokens = shapes["train_batch_blocks"] * shapes["block_size"]
    out = timed(step, device, tokens, **t)
    out.update(peak_memory(device))
    out["params"] = sum(p.numel() for p in model.parameters())
    del model, opt, batches
    return out


class _Blocks(torch.utils.data.Dataset):
    """As ``paper_lib.models.train._Blocks``: packed blocks as causal-LM examples (labels = inputs)."""

    def __init__(self, blocks: torch.Tensor):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict:
        block = self.blocks[index]
        return {"input_ids": block, "labels": block}


def lm_train_trainer(shapes: dict, device: str, bf16: bool, t: dict, steps_per_s: float, workdir: Path) -> dict:
    """HF ``Trainer`` with ``train_lm``'s arguments (evaluation and checkpointing off), timed by a step callback."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    warmup = t["warmup"] + 1
    per_window = max(1, int(t["window_s"] * steps_per_s))
    marks = [warmup + k * per_window for k in range(t["windows"] + 1)]
    total = marks[-1]
    times: dict[int, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in marks:
                sync(device)
                times[state.global_step] = time.perf_counter()

    batch = shapes["train_batch_blocks"]
    blocks = random_blocks(batch * total, shapes, "cpu", seed=1)
    model = build_lm(shapes, device)
    args = TrainingArguments(
        output_dir=str(workdir / "trainer"),
        per_device_train_batch_size=batch,
        per_device_eval_batch_size=shapes["eval_batch_blocks"],
        learning_rate=shapes["pretrain_lr"],
        lr_scheduler_type="cosine",
        warmup_steps=0,
        weight_decay=shapes["pretrain_weight_decay"],
        adam_beta1=shapes["adam_betas"][0],
        adam_beta2=shapes["adam_betas"][1],
        max_steps=total,
        logging_steps=50,
        eval_strategy="no",  # train_lm evaluates 8 times on 16 blocks per domain: negligible
        save_strategy="no",  # train_lm checkpoints every 1,000 steps (save_steps): not timed here
        logging_nan_inf_filter=False,
        report_to=[],
        seed=0,
        data_seed=0,
        bf16=bf16,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        disable_tqdm=True,
        use_cpu=device == "cpu",
    )
    trainer = Trainer(model=model, args=args, train_dataset=_Blocks(blocks), callbacks=[Clock()])
    reset_memory(device)
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    tokens = batch * shapes["block_size"]
    rates = [per_window * tokens / (times[b] - times[a]) for a, b in zip(marks, marks[1:])]
    out = {
        "rate_median": statistics.median(rates),
        "rate_min": min(rates),
        "rate_max": max(rates),
        "windows": len(rates),
        "steps_per_window": per_window,
        "warmup_steps": warmup,
        "step_ms_median": 1000 * statistics.median([(times[b] - times[a]) / per_window for a, b in zip(marks, marks[1:])]),
        "train_wall_seconds_incl_warmup": round(wall, 2),
        "optimizer": type(trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer).__name__,
        "optim_arg": str(args.optim),
    }
    out.update(peak_memory(device))
    del trainer, model, blocks
    return out


def lm_eval(shapes: dict, device: str, bf16: bool, t: dict) -> dict:
    """The per-batch work of ``evaluate_lm`` (copied op for op), in inference mode."""
    model = build_lm(shapes, device).eval()
    batches = [random_blocks(shapes["eval_batch_blocks"], shapes, "cpu", seed=10 + s) for s in range(4)]
    i = [0]
    sums = {"loss": 0.0, "correct": 0, "count": 0}

    @torch.inference_mode()
    def step():
        batch = batches[i[0] % len(batches)].to(device)
        i[0] += 1
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            logits = model(batch)
        logits = getattr(logits, "logits", logits)[:, :-1].float()
        targets = batch[:, 1:]
        log_probs = torch.nn.functional.log_softmax(logits.reshape(-1, logits.shape[-1]), dim=-1)
        sums["loss"] += float(torch.nn.functional.nll_loss(log_probs, targets.reshape(-1), reduction="sum"))
        token_loss = torch.nn.functional.nll_loss(log_probs, targets.reshape(-1), reduction="none").view(targets.shape)
        hits = logits.argmax(-1) == targets
        sums["correct"] += int(hits.sum())
        sums["count"] += targets.numel()
        token_loss.double().sum(1).cpu()
        hits.sum(1).cpu()

    reset_memory(device)
    # tokens read per call (evaluate_lm predicts block_size - 1 of them per block)
    tokens = shapes["eval_batch_blocks"] * shapes["block_size"]
    out = timed(step, device, tokens, **t)
    out.update(peak_memory(device))
    out["mean_loss_random_tokens"] = round(sums["loss"] / max(sums["count"], 1), 3)
    del model, batches
    return out


def sae_collect(shapes: dict, device: str, t: dict) -> dict:
    """The activation-collection forward: 128 prompts of 24 tokens, float32, up to layer 0's MLP post-activation.

    SAELens runs ``HookedTransformer.run_with_cache(names_filter=[hook], stop_at_layer=1)`` on the TransformerLens
    conversion; here the HF model's base (embedding, layer 0, final norm; no unembedding) runs with a hook on the
    input of ``mlp.down_proj`` (= act_fn(gate) * up, TransformerLens's ``blocks.0.mlp.hook_post``), and the batch is
    copied into a buffer as SAELens's store does.
    """
    model = build_lm(shapes, device).eval()
    captured = []
    handle = model.model.layers[0].mlp.down_proj.register_forward_pre_hook(lambda mod, args: captured.append(args[0]))
    batches = [random_blocks(shapes["sae_store_prompts"], shapes, device, seed=20 + s, length=shapes["sae_context"])
               for s in range(4)]
    buffer = torch.empty(shapes["sae_store_prompts"] * shapes["sae_context"], shapes["sae_d_in"], device=device)
    i = [0]

    @torch.no_grad()
    def step():
        captured.clear()
        model.model(input_ids=batches[i[0] % len(batches)])
        i[0] += 1
        buffer.copy_(captured[0].reshape(-1, shapes["sae_d_in"]))

    reset_memory(device)
    out = timed(step, device, shapes["sae_store_prompts"] * shapes["sae_context"], **t)
    out.update(peak_memory(device))
    out["activation_width"] = int(buffer.shape[1])
    handle.remove()
    del model, batches, buffer
    return out


# ---------------------------------------------------------------------------------------------------- SAE

class PlainStandardSAE(torch.nn.Module):
    """SAELens 6's ``StandardTrainingSAE`` (ReLU, untied, b_enc, b_dec subtracted from the input, heuristic init)."""

    def __init__(self, d_in: int, d_sae: int, decoder_init_norm: float, device: str, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        w_dec = torch.nn.init.kaiming_uniform_(torch.empty(d_sae, d_in), generator=g)
        w_dec = w_dec / w_dec.norm(dim=-1, keepdim=True) * decoder_init_norm
        self.W_dec = torch.nn.Parameter(w_dec.to(device))
        self.W_enc = torch.nn.Parameter(w_dec.T.clone().contiguous().to(device))
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae, device=device))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in, device=device))

    def training_forward_pass(self, x: torch.Tensor, l1: float) -> dict:
        # TrainingSAE.training_forward_pass + StandardTrainingSAE.encode_with_hidden_pre / calculate_aux_loss
        sae_in = x.to(self.W_enc.dtype) - self.b_dec * True  # process_sae_in with apply_b_dec_to_input
        hidden_pre = sae_in @ self.W_enc + self.b_enc
        feature_acts = torch.relu(hidden_pre)
        sae_out = feature_acts @ self.W_dec + self.b_dec
        mse_loss = torch.nn.functional.mse_loss(sae_out, x, reduction="none").sum(dim=-1).mean()
        weighted = feature_acts * self.W_dec.norm(dim=1)
        l1_loss = (l1 * weighted.norm(p=1, dim=-1)).mean()
        return {"loss": mse_loss + l1_loss, "mse_loss": mse_loss, "l1_loss": l1_loss, "feature_acts": feature_acts,
                "sae_out": sae_out}


class PlainSAETrainer:
    """``SAETrainer._train_step``: forward, firing statistics, backward, clip 1.0, Adam, constant LR schedule."""

    def __init__(self, sae: PlainStandardSAE, lr: float, betas: tuple, l1: float, autocast: bool = False):
        self.sae, self.l1 = sae, l1
        self.optimizer = torch.optim.Adam(sae.parameters(), lr=lr, betas=betas)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda steps: 1.0)  # "constant"
        d_sae, device = sae.W_dec.shape[0], sae.W_dec.device
        self.act_freq_scores = torch.zeros(d_sae, device=device)
        self.n_forward_passes_since_fired = torch.zeros(d_sae, device=device)
        self.n_frac_active_samples = 0
        self.autocast = autocast

    def step(self, sae_in: torch.Tensor) -> dict:
        self.sae.train()
        with torch.autocast(device_type=sae_in.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            out = self.sae.training_forward_pass(sae_in, self.l1)
            with torch.no_grad():
                firing_feats = out["feature_acts"].bool().float()
                did_fire = firing_feats.sum(-2).bool()
                self.n_forward_passes_since_fired += 1
                self.n_forward_passes_since_fired[did_fire] = 0
                self.act_freq_scores += firing_feats.sum(0)
                self.n_frac_active_samples += sae_in.shape[0]
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.sae.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.lr_scheduler.step()
        return out


def sae_train(shapes: dict, device: str, t: dict, tf32: bool = False, autocast: bool = False) -> dict:
    torch.backends.cuda.matmul.allow_tf32 = tf32
    sae = PlainStandardSAE(shapes["sae_d_in"], shapes["sae_d_sae"], shapes["sae_decoder_init_norm"], device)
    trainer = PlainSAETrainer(sae, shapes["sae_lr"], shapes["sae_betas"], shapes["sae_l1"], autocast=autocast)
    g = torch.Generator().manual_seed(3)
    # MLP post-activations are SiLU(gate) * up: signed, heavy-tailed; a gaussian batch has the same cost
    batches = [torch.randn(shapes["sae_batch_tokens"], shapes["sae_d_in"], generator=g).to(device) for _ in range(4)]
    i = [0]

    def step():
        trainer.step(batches[i[0] % len(batches)])
        i[0] += 1

    reset_memory(device)
    out = timed(step, device, shapes["sae_batch_tokens"], **t)
    out.update(peak_memory(device))
    out["sae_params"] = sum(p.numel() for p in sae.parameters())
    torch.backends.cuda.matmul.allow_tf32 = False
    del sae, trainer, batches
    return out


def check_sae_lens(d_in: int = 1024, d_sae: int = 2048, batch: int = 256) -> dict:
    """Loss and gradients of ``PlainStandardSAE`` against SAELens's ``StandardTrainingSAE`` on the same weights."""
    import sae_lens
    from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.saes.sae import TrainStepInput

    torch.manual_seed(0)
    cfg = StandardTrainingSAEConfig(d_in=d_in, d_sae=d_sae, l1_coefficient=1.0, decoder_init_norm=0.1,
                                    apply_b_dec_to_input=True, normalize_activations="none", dtype="float32",
                                    device="cpu")
    ref = StandardTrainingSAE(cfg)
    with torch.no_grad():
        ref.b_dec.normal_(0, 0.1)
        ref.b_enc.normal_(0, 0.01)
    ours = PlainStandardSAE(d_in, d_sae, 0.1, "cpu")
    ours.load_state_dict({k: v.detach().clone() for k, v in ref.state_dict().items() if k in ours.state_dict()})
    x = torch.randn(batch, d_in)
    out_ref = ref.training_forward_pass(TrainStepInput(sae_in=x, coefficients={"l1": 1.0}, dead_neuron_mask=None,
                                                       n_training_steps=0, is_logging_step=False))
    out_ref.loss.backward()
    out = ours.training_forward_pass(x, 1.0)
    out["loss"].backward()
    grads = {k: float((p.grad - dict(ref.named_parameters())[k].grad).abs().max()) for k, p in ours.named_parameters()}
    with torch.no_grad():
        init_ok = abs(float(ref.W_dec.norm(dim=-1).mean()) - 0.1) < 1e-6 and torch.equal(ref.W_enc, ref.W_dec.T)
    return {
        "sae_lens_version": sae_lens.__version__,
        "shape": {"d_in": d_in, "d_sae": d_sae, "batch": batch},
        "loss_sae_lens": float(out_ref.loss),
        "loss_plain": float(out["loss"]),
        "mse_abs_diff": abs(float(out_ref.losses["mse_loss"]) - float(out["mse_loss"])),
        "l1_abs_diff": abs(float(out_ref.losses["l1_loss"]) - float(out["l1_loss"])),
        "max_abs_grad_diff": grads,
        "sae_lens_init_matches_heuristic": bool(init_ok),
        "device": "cpu",
    }


# ---------------------------------------------------------------------------------------------------- matching

def load_matching() -> tuple[types.ModuleType, dict]:
    """``paper_lib.matching``'s modules and how they were imported.

    The package's ``__init__`` imports the pipeline (pydantic config, datasets, SAELens loaders); where that fails
    (the GPU machine lacks pydantic and datasets) the computing modules (kernels, correlate, methods, classify)
    are loaded unchanged from their files under a bare parent package.
    """
    info: dict = {}
    if str(ROOT) not in sys.path:  # run as `python benchmarks/paper_rates.py`, the repo root is not on the path
        sys.path.insert(0, str(ROOT))
    try:
        import paper_lib.matching as matching  # noqa: F401

        info["package_import"] = "ok"
    except Exception as err:  # ImportError, or anything the pipeline's imports raise
        info["package_import"] = f"failed: {type(err).__name__}: {err}"
        for name in [m for m in sys.modules if m == "paper_lib" or m.startswith("paper_lib.")]:
            del sys.modules[name]
        for pkg, path in (("paper_lib", ROOT / "paper_lib"), ("paper_lib.matching", ROOT / "paper_lib" / "matching"),
                          ("paper_lib.core", ROOT / "paper_lib" / "core")):
            module = types.ModuleType(pkg)
            module.__path__ = [str(path)]
            sys.modules[pkg] = module
        artifacts = types.ModuleType("paper_lib.core.artifacts")
        artifacts.record_benchmark = lambda *a, **k: None  # bench_matching.py's only use of the pipeline
        sys.modules["paper_lib.core.artifacts"] = artifacts
        import paper_lib.matching.classify  # noqa: F401
        import paper_lib.matching.correlate  # noqa: F401

        matching = sys.modules["paper_lib.matching"]
        matching.CorrelationAccumulator = sys.modules["paper_lib.matching.correlate"].CorrelationAccumulator
        matching.classify = sys.modules["paper_lib.matching.classify"].classify
        info["loaded"] = "paper_lib/matching/{kernels,correlate,methods,classify}.py unchanged, under a stub package"
    import numba

    info["numba"] = numba.__version__
    info["numba_threads"] = numba.config.NUMBA_NUM_THREADS
    return matching, info


def load_bench_matching() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("bench_matching", ROOT / "benchmarks" / "bench_matching.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def matching_rates(shapes: dict, one_to_one_timeout: float) -> dict:
    _, info = load_matching()
    bench = load_bench_matching()
    out: dict = {"import": info}
    t0 = time.perf_counter()
    bench.warm_up()  # numba compilation (no cache on a fresh machine)
    out["numba_warm_up_seconds"] = round(time.perf_counter() - t0, 2)
    n, f = shapes["match_positions"], shapes["match_features"]
    for mode, guard in (("position", shapes["match_min_coactive"]), ("token", shapes["match_min_token_support"])):
        t0 = time.perf_counter()
        numbers = bench.run(mode, n, f, shapes["match_l0"], 65_536, shapes["vocab_size"], min_support=guard)
        numbers["wall_incl_data_generation_s"] = round(time.perf_counter() - t0, 2)
        out[mode] = numbers
        log(f"matching {mode}: {json.dumps(numbers)}")
    if one_to_one_timeout > 0:
        cmd = [sys.executable, __file__, "--one-to-one-child", str(f), str(n), str(shapes["match_l0"])]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=one_to_one_timeout)
            last = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            out["one_to_one"] = json.loads(last[-1]) if last else {"error": proc.stderr[-2000:]}
        except subprocess.TimeoutExpired:
            out["one_to_one"] = {"timed_out_after_s": one_to_one_timeout,
                                 "note": "Hungarian assignment (scipy) on the 16,384 x 16,384 position-mode matrix "
                                         "did not finish inside the limit"}
        out["one_to_one"]["wall_s"] = round(time.perf_counter() - t0, 2)
    return out


def one_to_one_child(n_features: int, n_positions: int, l0: float) -> None:
    """Build the position-mode correlation of the synthetic sample and time ``methods.one_to_one`` on it."""
    matching, _ = load_matching()
    bench = load_bench_matching()
    from paper_lib.matching.methods import one_to_one

    acc = matching.CorrelationAccumulator(n_features, n_features, "position", vocab_size=32_000, min_support=0)
    for parent, child, tokens in bench.synthetic_chunks(n_positions, n_features, l0, 65_536, 32_000):
        acc.update(parent, child, tokens)
    corr = acc.finalize()
    t0 = time.perf_counter()
    rows, cols, scores = one_to_one(corr, ~acc.dead_parent, ~acc.dead_child)
    seconds = time.perf_counter() - t0
    print(json.dumps({"one_to_one_s": round(seconds, 2), "pairs": int(len(rows)),
                      "live_parent": int((~acc.dead_parent).sum()), "live_child": int((~acc.dead_child).sum()),
                      "n_features": n_features, "n_positions": n_positions}), flush=True)


# ---------------------------------------------------------------------------------------------------- estimates

def hours(tokens: float, rate: float | None) -> float | None:
    return round(tokens / rate / 3600, 3) if rate else None


def estimates(results: dict) -> dict:
    r = results["steps"]

    def rate(name):
        step = r.get(name) or {}
        return step.get("rate_median")

    train_rate = rate("lm_train_trainer_bf16") or rate("lm_train_loop_bf16")
    est = {}
    for key in ("base_pretrain", "finetune_lua", "finetune_tinystories"):
        tokens = TOKEN_COUNTS[key]["tokens"]
        est[key] = {"tokens": tokens, "source": TOKEN_COUNTS[key]["source"], "rate_used": "lm_train_trainer_bf16",
                    "hours": hours(tokens, train_rate),
                    "hours_float32": hours(tokens, rate("lm_train_trainer_fp32") or rate("lm_train_loop_fp32"))}
    tokens = TOKEN_COUNTS["lm_evaluation"]["tokens"]
    est["lm_evaluation"] = {"tokens": tokens, "source": TOKEN_COUNTS["lm_evaluation"]["source"],
                            "rate_used": "lm_eval_fp32", "hours": hours(tokens, rate("lm_eval_fp32"))}
    tokens = TOKEN_COUNTS["sae_per_model"]["tokens"]
    collect, sae = rate("sae_collect_fp32"), rate("sae_train_fp32")
    per_sae = round(hours(tokens, collect) + hours(tokens, sae), 3) if collect and sae else None
    est["sae_per_model"] = {
        "tokens": tokens, "source": TOKEN_COUNTS["sae_per_model"]["source"],
        "rate_used": "sae_train_fp32 + sae_collect_fp32 (run one after the other, as SAELens does)",
        "hours_sae_step": hours(tokens, sae), "hours_activation_collection": hours(tokens, collect),
        "hours": per_sae, "hours_four_saes": round(4 * per_sae, 3) if per_sae else None,
    }
    m = r.get("matching") or {}
    if "position" in m and "token" in m:
        per_pair = m["position"]["total_s"] + m["token"]["total_s"]
        c = TOKEN_COUNTS["matching"]
        est["matching"] = {**{k: c[k] for k in ("positions", "pairs", "modes")}, "source": c["source"],
                           "seconds_per_pair_both_modes": round(per_pair, 2),
                           "hours": round(c["pairs"] * per_pair / 3600, 4),
                           "note": "CPU (numba) on the GPU machine's cores; excludes data generation and SAE encoding"}
    main = [est[k]["hours"] for k in ("base_pretrain", "finetune_lua", "finetune_tinystories", "lm_evaluation")]
    if None not in main and est["sae_per_model"]["hours_four_saes"] is not None:
        est["total_paper_pipeline_hours"] = round(sum(main) + est["sae_per_model"]["hours_four_saes"]
                                                  + est.get("matching", {}).get("hours", 0.0), 3)
        est["total_note"] = ("3 LM trainings + evaluation/sweep + 4 SAEs + 4 matched pairs, one GPU, bf16 LM training, "
                             "at the estimated token counts above; the project's controls (extra SAE seeds, null "
                             "models, notebook 08's checkpoints) come on top")
    return est


# ---------------------------------------------------------------------------------------------------- main

def environment(device: str) -> dict:
    import transformers

    env = {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
           "numpy": np.__version__, "cpu_count": os.cpu_count(), "platform": platform.platform()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update({"device_name": torch.cuda.get_device_name(0), "cuda": torch.version.cuda,
                    "gpu_memory_gib": round(props.total_memory / 2**30, 2), "sm_count": props.multi_processor_count,
                    "bf16_supported": torch.cuda.is_bf16_supported(),
                    "matmul_allow_tf32_default": torch.backends.cuda.matmul.allow_tf32})
    else:
        env["device_name"] = f"cpu ({platform.processor() or platform.machine()})"
    return env


def write(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--out", type=Path, default=Path("paper_rates.json"))
    parser.add_argument("--quick", action="store_true", help="toy sizes and short windows: a CPU sanity run")
    parser.add_argument("--steps", nargs="+", default=["lm_train", "lm_eval", "sae", "matching"],
                        choices=["lm_train", "lm_eval", "sae", "matching"])
    parser.add_argument("--window-s", type=float, default=None, help="seconds per timed window (default 2, quick 0.2)")
    parser.add_argument("--windows", type=int, default=None, help="timed windows per measurement (default 5)")
    parser.add_argument("--one-to-one-timeout", type=float, default=None,
                        help="seconds for the Hungarian assignment at matching scale (0 skips; default 150, quick 60)")
    parser.add_argument("--check-sae-lens", action="store_true",
                        help="compare the plain-torch SAE step with SAELens (CPU) and add it to --into")
    parser.add_argument("--into", type=Path, help="JSON file that gets the --check-sae-lens result")
    parser.add_argument("--one-to-one-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one_to_one_child:
        f, n, l0 = args.one_to_one_child
        one_to_one_child(int(f), int(n), float(l0))
        return
    if args.check_sae_lens:
        check = check_sae_lens()
        log(json.dumps(check))
        if args.into:
            data = json.loads(args.into.read_text(encoding="utf-8"))
            data["sae_step_equivalence_check"] = check
            write(data, args.into)
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device visible")

    device = args.device
    shapes = QUICK if args.quick else PAPER
    t = {"warmup": 1 if args.quick else 5, "window_s": args.window_s or (0.2 if args.quick else 2.0),
         "windows": args.windows or (2 if args.quick else 5)}
    o2o_timeout = args.one_to_one_timeout if args.one_to_one_timeout is not None else (60 if args.quick else 150)
    results: dict = {
        "what": "throughput and peak GPU memory of the paper profile's expensive steps (benchmarks/paper_rates.py)",
        "quick": args.quick,
        "environment": environment(device),
        "shapes": {k: list(v) if isinstance(v, tuple) else v for k, v in shapes.items()},
        "timing": {**t, "statistic": "median tokens/s over the timed windows, after warm-up; CUDA synchronised at "
                   "window edges; peak memory = torch.cuda.max_memory_allocated over the measurement"},
        "token_counts": TOKEN_COUNTS,
        "approximations": [
            "Random token ids (uniform over the vocabulary) and gaussian SAE inputs: throughput does not depend on "
            "the values.",
            "sae_train is a plain-torch re-implementation of SAELens 6's StandardTrainingSAE step (SAELens is not "
            "installed on the GPU machine); --check-sae-lens compares its loss and gradients with SAELens on CPU.",
            "sae_collect uses HF MistralModel (SDPA attention) with a hook on mlp.down_proj's input; SAELens runs "
            "the TransformerLens conversion (eager attention), which is likely slower, so this rate is an upper bound.",
            "lm_train_trainer runs HF Trainer with train_lm's arguments but no periodic evaluation or checkpoints.",
            "matching uses bench_matching.py's synthetic SAE-like activations (mean L0 45) at the paper's sample size.",
        ],
        "steps": {},
    }
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / "paper_rates"
    started = time.perf_counter()

    def record(name, fn, *a, **k):
        log(f"{name} ...")
        t0 = time.perf_counter()
        try:
            value = fn(*a, **k)
            value["measurement_wall_s"] = round(time.perf_counter() - t0, 2)
            results["steps"][name] = value
            rate = value.get("rate_median")
            log(f"{name}: {rate:,.0f} tokens/s" if rate else f"{name}: done",
                f"peak {value.get('peak_allocated_gib')} GiB" if "peak_allocated_gib" in value else "")
        except Exception as err:
            results["steps"][name] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-3000:]}
            log(f"{name} FAILED: {type(err).__name__}: {err}")
        results["estimates"] = estimates(results)
        results["total_wall_s"] = round(time.perf_counter() - started, 1)
        write(results, args.out)

    if "lm_train" in args.steps:
        for bf16 in (True, False):
            tag = "bf16" if bf16 else "fp32"
            if bf16 and device == "cpu":  # the profile uses bf16 only on CUDA; CPU bf16 is emulated and very slow
                continue
            record(f"lm_train_loop_{tag}", lm_train_loop, shapes, device, bf16, t)
            loop = results["steps"].get(f"lm_train_loop_{tag}", {})
            steps_per_s = 1000 / loop["step_ms_median"] if "step_ms_median" in loop else 1.0
            record(f"lm_train_trainer_{tag}", lm_train_trainer, shapes, device, bf16, t, steps_per_s, workdir)
    if "lm_eval" in args.steps:
        record("lm_eval_fp32", lm_eval, shapes, device, False, t)
        if device == "cuda":
            record("lm_eval_bf16_autocast", lm_eval, shapes, device, True, t)
    if "sae" in args.steps:
        record("sae_collect_fp32", sae_collect, shapes, device, t)
        record("sae_train_fp32", sae_train, shapes, device, t)
        if device == "cuda":
            record("sae_train_tf32", sae_train, shapes, device, t, tf32=True)
            record("sae_train_bf16_autocast", sae_train, shapes, device, t, autocast=True)
    if "matching" in args.steps:
        record("matching", matching_rates, shapes, o2o_timeout)
    log(f"wrote {args.out} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
