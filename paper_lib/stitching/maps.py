"""Affine stitch maps between two models' residual streams (Chen et al. 2025), trained jointly in both directions.

``up``: ``h_A P_up + b_up`` (small -> large), ``down``: ``h_B P_down + b_down`` (large -> small), trained together on
``MSE(up(h_A), h_B) + MSE(down(h_B), h_A) + alpha * (MSE(down(up(h_A)), h_A) + MSE(up(down(h_B)), h_B))`` with the
paper's optimiser: Adam, gradient clipping 1.0, cosine decay, a number of epochs over the tokens (special tokens
left out). Written here: no library trains stitch maps.

The paper initialises the biases at zero and does not state the weights' initialisation. We start both maps at the
least-squares solution of their direct terms (each map's best affine fit on the training tokens), so a short
cpu-scale training starts where the joint objective's first two terms are already minimal, and the optimiser only
trades them against the round-trip terms. ``fit_maps`` reports the held-out loss at that start and after training,
so what the joint training adds is measured, not assumed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm


class StitchMaps(torch.nn.Module):
    """The two affine maps: ``up`` (``d_small -> d_large``) and ``down`` (``d_large -> d_small``), row-vector
    convention (``h @ P + b``) as in the paper's equations."""

    def __init__(self, d_small: int, d_large: int):
        super().__init__()
        self.P_up = torch.nn.Parameter(torch.zeros(d_small, d_large))
        self.b_up = torch.nn.Parameter(torch.zeros(d_large))
        self.P_down = torch.nn.Parameter(torch.zeros(d_large, d_small))
        self.b_down = torch.nn.Parameter(torch.zeros(d_small))

    @property
    def d_small(self) -> int:
        return self.P_up.shape[0]

    @property
    def d_large(self) -> int:
        return self.P_up.shape[1]

    def up(self, h_small: torch.Tensor) -> torch.Tensor:
        return h_small @ self.P_up + self.b_up

    def down(self, h_large: torch.Tensor) -> torch.Tensor:
        return h_large @ self.P_down + self.b_down

    def losses(self, h_small: torch.Tensor, h_large: torch.Tensor, alpha: float) -> dict[str, torch.Tensor]:
        """The four mean squared errors and the joint loss (``alpha`` weighs the round trips)."""
        mse = torch.nn.functional.mse_loss
        up, down = self.up(h_small), self.down(h_large)
        out = {"up": mse(up, h_large), "down": mse(down, h_small),
               "small_round_trip": mse(self.down(up), h_small), "large_round_trip": mse(self.up(down), h_large)}
        out["loss"] = out["up"] + out["down"] + alpha * (out["small_round_trip"] + out["large_round_trip"])
        return out


def least_squares(x_ND: torch.Tensor, y_NE: torch.Tensor, ridge: float = 1e-9) -> tuple[torch.Tensor, torch.Tensor]:
    """The affine map ``x P + b`` closest to ``y`` in squared error (float64 normal equations on centred data, with a
    ridge of ``ridge`` times the mean variance so that a rank-deficient ``x`` still has a solution)."""
    x, y = x_ND.double(), y_NE.double()
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    gram = xc.T @ xc
    gram += ridge * float(gram.diagonal().mean()) * torch.eye(gram.shape[0], dtype=gram.dtype)
    P = torch.linalg.solve(gram, xc.T @ yc)
    return P.float(), (my - mx @ P).float()


def explained_variance(pred_ND: torch.Tensor, target_ND: torch.Tensor) -> float:
    """Fraction of the target's variance (summed over dimensions, about its mean) the prediction explains."""
    pred, target = pred_ND.double(), target_ND.double()
    residual = (pred - target).pow(2).sum()
    total = (target - target.mean(0)).pow(2).sum()
    return float(1 - residual / total)


@torch.no_grad()
def evaluate_maps(maps: StitchMaps, h_small: torch.Tensor, h_large: torch.Tensor, alpha: float) -> dict[str, Any]:
    """Held-out variance explained each way and round trip, and the four losses."""
    up, down = maps.up(h_small), maps.down(h_large)
    losses = {k: float(v) for k, v in maps.losses(h_small, h_large, alpha).items()}
    return {
        "explained_variance_up": explained_variance(up, h_large),
        "explained_variance_down": explained_variance(down, h_small),
        "explained_variance_small_round_trip": explained_variance(maps.down(up), h_small),
        "explained_variance_large_round_trip": explained_variance(maps.up(down), h_large),
        "losses": losses,
        "n_tokens": len(h_small),
    }


def fit_maps(
    h_small: torch.Tensor,
    h_large: torch.Tensor,
    held_small: torch.Tensor,
    held_large: torch.Tensor,
    epochs: int,
    lr: float,
    batch_tokens: int,
    alpha: float = 1.0,
    seed: int = 0,
) -> tuple[StitchMaps, dict[str, Any]]:
    """Train the maps on paired token activations ``[n, d_small]`` and ``[n, d_large]`` (special tokens already
    left out); evaluate on the held-out pair. Returns the maps and a record: held-out metrics at the
    least-squares start and after training, the loss curve, steps and tokens."""
    if h_small.shape[0] != h_large.shape[0] or held_small.shape[0] != held_large.shape[0]:
        raise ValueError("the small and large activations must be at the same tokens (equal first dimensions)")
    if len(h_small) < 2 * max(h_small.shape[1], h_large.shape[1]):
        raise ValueError(f"{len(h_small)} training tokens are too few for affine maps of widths {h_small.shape[1]} "
                         f"and {h_large.shape[1]}: raise stitching.map_blocks")
    maps = StitchMaps(h_small.shape[1], h_large.shape[1])
    with torch.no_grad():
        for (P, b), (x, y) in (((maps.P_up, maps.b_up), (h_small, h_large)),
                               ((maps.P_down, maps.b_down), (h_large, h_small))):
            fit_P, fit_b = least_squares(x, y)
            P.copy_(fit_P)
            b.copy_(fit_b)
    start = evaluate_maps(maps, held_small, held_large, alpha)
    steps_per_epoch = max(1, len(h_small) // batch_tokens)
    total = epochs * steps_per_epoch
    optimizer = torch.optim.Adam(maps.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    generator = torch.Generator().manual_seed(seed)
    curve = []
    with tqdm(total=total, desc="stitch maps", leave=False) as bar:
        for epoch in range(epochs):
            order = torch.randperm(len(h_small), generator=generator)
            for k in range(steps_per_epoch):
                idx = order[k * batch_tokens : (k + 1) * batch_tokens]
                out = maps.losses(h_small[idx], h_large[idx], alpha)
                optimizer.zero_grad()
                out["loss"].backward()
                torch.nn.utils.clip_grad_norm_(maps.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                step = epoch * steps_per_epoch + k + 1
                if step == 1 or step % max(1, total // 50) == 0 or step == total:
                    curve.append({"step": step, **{key: float(v.detach()) for key, v in out.items()}})
                bar.update(1)
    end = evaluate_maps(maps, held_small, held_large, alpha)
    if not all(np.isfinite(v) for v in end["losses"].values()):
        raise FloatingPointError("the stitch maps diverged (non-finite held-out loss): lower stitching.map_lr")
    record = {"least_squares": start, "trained": end, "curve": curve, "steps": total,
              "train_tokens": len(h_small), "epochs": epochs, "lr": lr, "batch_tokens": batch_tokens, "alpha": alpha}
    return maps.eval(), record
