"""FLOPs to train the large model's SAE from the transferred SAE against from scratch, to one explained variance.

Both arms train SAELens's ``StandardTrainingSAE`` with SAELens's loss (``training_forward_pass``) and L1 warm-up
(``CoefficientScheduler``), and the trainer's step (Adam, gradient clipping 1.0, constant rate), on the same
tokens in the same order per seed. The loop is ours, not SAELens's runner, for two reasons: the held-out explained
variance must be read along training (the runner logs to wandb only), and each arm's FLOPs are counted per step
with ``torch.utils.flop_counter.FlopCounterMode`` on one forward and backward, times the steps (the paper's
count). Each step is charged its SAE forward and backward pass and the large model's forward pass that makes the
step's activations (both arms pay it per step, so the arm with fewer steps pays less of it). The transferred arm is
also charged the whole stitch: the least-squares start, training the maps, and both models' forward passes over
the maps' tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from ..core.artifacts import write_json_atomic
from ..core.config import Config
from ..data import sae_train_blocks, sae_validation_blocks
from ..layerwise import family as layerwise
from ..saes import load_sae, sae_dir
from ..saes.encode import hook_activations
from ..saes.train import geometric_median
from .family import large, small
from .maps import StitchMaps
from .steps import load_models, run_step, step_inputs, stitch_setup, small_sae_config
from .store import load_maps
from .transfer import transfer_sae

CHUNK_BLOCKS = 512  # SAE blocks whose activations are computed at a time (shuffled within the chunk)


def training_sae(sae_cfg: Config, d_in: int, d_sae: int, l1: float, steps: int, seed: int, init=None,
                 sample: torch.Tensor | None = None):
    """A ``StandardTrainingSAE`` as ``saes.train_sae`` builds it (heuristic init, decoder bias at the geometric
    median of ``sample``), or holding the weights of the inference SAE ``init``."""
    from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig

    s = sae_cfg.sae
    config = StandardTrainingSAEConfig(d_in=d_in, d_sae=d_sae, l1_coefficient=l1,
                                       l1_warm_up_steps=int(s.l1_warm_up_fraction * steps),
                                       decoder_init_norm=s.decoder_init_norm, apply_b_dec_to_input=True,
                                       normalize_activations="none", dtype="float32", device="cpu")
    torch.manual_seed(seed)
    sae = StandardTrainingSAE(config)
    with torch.no_grad():
        if init is not None:
            sae.load_state_dict({k: v.detach().clone() for k, v in init.state_dict().items()})
        elif s.b_dec_init != "zeros" and sample is not None:
            start = geometric_median(sample) if s.b_dec_init == "geometric_median" else sample.mean(0)
            sae.b_dec.copy_(start)
    return sae


def step_flops(sae, batch: torch.Tensor, l1: float) -> int:
    """FLOPs of one training step's forward and backward pass (FlopCounterMode)."""
    from sae_lens.saes.sae import TrainStepInput

    with FlopCounterMode(display=False) as counter:
        out = sae.training_forward_pass(TrainStepInput(sae_in=batch, coefficients={"l1": l1}, dead_neuron_mask=None,
                                                       n_training_steps=0, is_logging_step=False))
        out.loss.backward()
    sae.zero_grad()
    return int(counter.get_total_flops())


def map_step_flops(maps: StitchMaps, h_small: torch.Tensor, h_large: torch.Tensor, alpha: float) -> int:
    with FlopCounterMode(display=False) as counter:
        maps.losses(h_small, h_large, alpha)["loss"].backward()
    maps.zero_grad()
    return int(counter.get_total_flops())


@torch.no_grad()
def forward_flops(model, blocks: torch.Tensor, hook: str) -> int:
    """FLOPs of running ``model`` on ``blocks`` up to ``hook`` (what collecting its activations costs)."""
    with FlopCounterMode(display=False) as counter:
        hook_activations(model, blocks, hook)
    return int(counter.get_total_flops())


def batches(model, blocks: torch.Tensor, hook: str, batch_tokens: int, seed: int) -> Iterator[torch.Tensor]:
    """Training batches of ``hook`` activations: blocks a chunk at a time, tokens shuffled within the chunk."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(blocks), generator=generator)
    carry = None
    for start in range(0, len(blocks), CHUNK_BLOCKS):
        acts = hook_activations(model, blocks[order[start : start + CHUNK_BLOCKS]], hook)
        acts = acts.reshape(-1, acts.shape[-1])
        acts = acts[torch.randperm(len(acts), generator=generator)]
        acts = acts if carry is None else torch.cat([carry, acts])
        n = len(acts) // batch_tokens
        yield from acts[: n * batch_tokens].split(batch_tokens)
        carry = acts[n * batch_tokens :]


@torch.no_grad()
def held_out_variance(sae, held: torch.Tensor) -> float:
    x = held.double()
    out = sae.decode(sae.encode(held)).double()
    return float(1 - (out - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def train_run(sae, model, blocks: torch.Tensor, hook: str, held: torch.Tensor, sae_cfg: Config, l1: float,
              steps: int, seed: int, desc: str) -> list[dict[str, Any]]:
    """Train ``sae`` for ``steps`` steps; the held-out explained variance every ``stitching.eval_every`` steps."""
    from sae_lens.saes.sae import TrainStepInput
    from sae_lens.training.optim import CoefficientScheduler

    s = sae_cfg.sae
    if s.lr_warm_up_fraction or s.lr_decay_fraction:
        raise ValueError("the FLOPs comparison trains at a constant rate; set sae.lr_warm_up_fraction and "
                         "sae.lr_decay_fraction to 0 (as saes.train_sae's schedule would otherwise differ)")
    optimizer = torch.optim.Adam(sae.parameters(), lr=s.lr, betas=(s.adam_beta1, s.adam_beta2))
    l1_schedule = CoefficientScheduler(warm_up_steps=int(s.l1_warm_up_fraction * steps), final_value=l1)
    every = sae_cfg.stitching.eval_every
    curve = [{"step": 0, "explained_variance": held_out_variance(sae, held)}]
    stream = batches(model, blocks, hook, s.train_batch_size_tokens, seed)
    for step in tqdm(range(1, steps + 1), desc=desc, leave=False):
        batch = next(stream, None)
        if batch is None:
            raise ValueError(f"the SAE blocks ran out after {step - 1} of {steps} steps: raise sae.training_tokens' "
                             "blocks or lower the steps")
        sae.train()
        out = sae.training_forward_pass(TrainStepInput(sae_in=batch, coefficients={"l1": l1_schedule.value},
                                                       dead_neuron_mask=None, n_training_steps=step - 1,
                                                       is_logging_step=False))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        l1_schedule.step()
        if step % every == 0 or step == steps:
            sae.eval()
            curve.append({"step": step, "explained_variance": held_out_variance(sae, held)})
            if not np.isfinite(curve[-1]["explained_variance"]):
                raise FloatingPointError(f"{desc}: the SAE diverged (non-finite explained variance); lower sae.lr")
    return curve


def steps_to(curve: list[dict[str, Any]], target: float) -> int | None:
    """The first evaluated step at which the held-out explained variance reaches ``target`` (None: never)."""
    return next((row["step"] for row in curve if row["explained_variance"] >= target), None)


def savings(runs: dict[str, list[list[dict]]], flops: dict[str, int], target_fraction: float) -> dict[str, Any]:
    """The target (``target_fraction`` of the lowest final scratch value), each run's steps and FLOPs to it, and
    the saving of each transfer seed against the scratch seed of the same index (1 - transfer / scratch)."""
    finals = [curve[-1]["explained_variance"] for curve in runs["scratch"]]
    target = target_fraction * min(finals)
    out: dict[str, Any] = {"target_explained_variance": target, "target_fraction": target_fraction,
                           "scratch_final": finals,
                           "transfer_final": [c[-1]["explained_variance"] for c in runs["transfer"]]}
    per_step = flops["sae_step"] + flops.get("activations_step", 0)
    for arm in ("scratch", "transfer"):
        out[f"{arm}_steps"] = [steps_to(c, target) for c in runs[arm]]
    for key, extra in (("saving", flops["stitch"]), ("saving_with_small_sae", flops["stitch"] + flops["small_sae"])):
        values = []
        for s_steps, t_steps in zip(out["scratch_steps"], out["transfer_steps"]):
            values.append(None if t_steps is None or not s_steps else
                          1 - (t_steps * per_step + extra) / (s_steps * per_step))
        out[key] = values
        done = [v for v in values if v is not None]
        out[f"{key}_mean"] = float(np.mean(done)) if done else None
        out[f"{key}_range"] = [float(min(done)), float(max(done))] if done else None
    out["transfer_runs_reaching_target"] = sum(s is not None for s in out["transfer_steps"])
    return out


def flops_step(cfg: Config) -> dict[str, Any]:
    """Cached step ``stitch-flops``: the large model's SAE trained from the transferred SAE and from scratch
    (``stitching.sae_seeds`` seeds each), held-out explained variance along training, FLOPs to the target."""
    setup = stitch_setup(cfg)
    small_cfg = small_sae_config(cfg)
    large_cfg = layerwise.layer_config(cfg, setup["layers"]["large"])
    s = cfg.stitching
    inputs = step_inputs(cfg, small_sae=sae_dir(small_cfg, small()).name, sae=large_cfg.sae.model_dump(),
                     seeds=s.sae_seeds, target_fraction=s.target_fraction, eval_every=s.eval_every,
                     map_blocks=s.map_blocks, map_epochs=s.map_epochs, map_batch_tokens=s.map_batch_tokens)

    def build(out: Path) -> dict:
        models, maps = load_models(cfg), load_maps(cfg, small(), large(), *setup["layers"].values())
        hook = setup["hooks"]["large"]
        carried = transfer_sae(load_sae(small_cfg, small()), maps, hook)
        blocks = sae_train_blocks(large_cfg, large())
        held = hook_activations(models["large"], sae_validation_blocks(large_cfg, large()), hook)
        held = held.reshape(-1, held.shape[-1])
        d_in, d_sae = maps.d_large, carried.cfg.d_sae
        steps = large_cfg.sae.training_tokens // large_cfg.sae.train_batch_size_tokens
        l1 = float(large_cfg.sae.l1_coefficient["default"])
        sample = hook_activations(models["large"], blocks[: max(1, 8192 // large_cfg.sae.context_size)], hook)
        sample = sample.reshape(-1, d_in)
        runs: dict[str, list] = {"scratch": [], "transfer": []}
        for k in range(s.sae_seeds):
            seed = cfg.seed + 1000 * (k + 1)
            for arm in runs:
                sae = training_sae(large_cfg, d_in, d_sae, l1, steps, seed,
                                     init=carried if arm == "transfer" else None, sample=sample)
                runs[arm].append(train_run(sae, models["large"], blocks, hook, held, large_cfg, l1, steps, seed,
                                             f"{arm} SAE, seed {k + 1}"))
        counts = _flop_counts(cfg, setup, models, maps, small_cfg, large_cfg, d_in, d_sae, l1, blocks)
        record = {"runs": runs, "flops": counts, "steps": steps, "l1_coefficient": l1,
                  "batch_tokens": large_cfg.sae.train_batch_size_tokens,
                  **savings(runs, counts, s.target_fraction)}
        write_json_atomic(out / "flops.json", record)
        return {"saving_mean": record["saving_mean"]}

    return run_step(cfg, "stitch-flops", inputs, build, "flops.json", ["paper_lib.stitching.transfer", "paper_lib.saes.train"])


def _flop_counts(cfg, setup, models, maps, small_cfg, large_cfg, d_in, d_sae, l1, blocks) -> dict[str, int]:
    """FLOPs per SAE step (the SAE's forward and backward, and the large model's forward over one batch of
    ``blocks``), the stitch's cost (least squares, map training, both models' forward passes over the maps' tokens)
    and the small model's SAE training (its steps' FLOPs and the small model's forward passes over its tokens)."""
    from .family import keep_mask
    from .store import map_blocks

    s = cfg.stitching
    batch = torch.randn(large_cfg.sae.train_batch_size_tokens, d_in)
    large_step = step_flops(training_sae(large_cfg, d_in, d_sae, l1, 1, cfg.seed), batch, l1)
    small_d = maps.d_small
    small_step = step_flops(training_sae(small_cfg, small_d, d_sae, l1, 1, cfg.seed),
                              torch.randn(small_cfg.sae.train_batch_size_tokens, small_d), l1)
    per_batch = max(1, large_cfg.sae.train_batch_size_tokens // large_cfg.sae.context_size)
    activations_step = forward_flops(models["large"], blocks[:per_batch], setup["hooks"]["large"])
    text = map_blocks(cfg, small(), large(), "train")
    forward = sum(forward_flops(models[who], text, setup["hooks"][who]) for who in ("small", "large"))
    n_tokens = int(keep_mask(cfg, text).sum())  # the maps train on the kept (non-special) tokens
    map_steps = s.map_epochs * max(1, n_tokens // s.map_batch_tokens)
    per_map_step = map_step_flops(maps, torch.randn(s.map_batch_tokens, small_d),
                                    torch.randn(s.map_batch_tokens, d_in), s.round_trip_weight)
    small_blocks = sae_train_blocks(small_cfg, small())
    small_steps = small_cfg.sae.training_tokens // small_cfg.sae.train_batch_size_tokens
    small_forward = forward_flops(models["small"], small_blocks, setup["hooks"]["small"])
    # the least-squares start: the Gram matrices of both directions over the maps' tokens (counted by hand: two
    # products [d, n] x [n, d'] per direction, 2 n d d' FLOPs each; the solves are negligible beside them)
    d_a, d_b = small_d, d_in
    least_squares = 2 * n_tokens * (d_a * d_a + d_a * d_b + d_b * d_b + d_b * d_a)
    return {"sae_step": large_step, "activations_step": activations_step, "stitch": forward + map_steps * per_map_step + least_squares,
            "stitch_forward": forward, "stitch_maps": map_steps * per_map_step, "stitch_least_squares": least_squares,
            "small_sae": small_steps * small_step + small_forward}
