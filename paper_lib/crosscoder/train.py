"""Training a ``BatchTopKCrosscoder`` on batches of paired activations (the algorithm, apart from the module).

The loss is the squared reconstruction error summed over the models and the activation width, averaged over
tokens, plus the auxiliary loss of Gao et al. 2024 (AuxK): the ``k_aux`` largest pre-activations among latents
that have not fired for ``dead_after_tokens`` tokens reconstruct the main reconstruction's error, which brings
dead latents back. BatchTopK needs no sparsity penalty. Adam, with the learning rate decayed linearly to zero
over the last fifth of the steps. The inference threshold is the mean, over the second half of training, of
each batch's smallest kept score (Bussmann et al. 2024).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from tqdm.auto import tqdm

from ..core.runtime import require_finite
from .model import BatchTopKCrosscoder


def _fvu(x_BMD: torch.Tensor, recon_BMD: torch.Tensor) -> torch.Tensor:
    """``[M]``: each model's fraction of variance unexplained over the batch."""
    residual = (x_BMD - recon_BMD).pow(2).sum(dim=(0, 2))
    total = (x_BMD - x_BMD.mean(dim=0)).pow(2).sum(dim=(0, 2))
    return residual / total.clamp_min(1e-12)


def train_crosscoder(
    crosscoder: BatchTopKCrosscoder, batches: Iterator[torch.Tensor], n_steps: int, lr: float = 1e-3,
    aux_alpha: float = 1 / 32, k_aux: int | None = None, dead_after_tokens: int = 100_000,
    log_every: int = 25, desc: str = "crosscoder",
) -> dict[str, Any]:
    """Train ``crosscoder`` for ``n_steps`` batches ``[B, M, D]`` drawn from ``batches``; returns its curve and
    the learnt threshold. ``k_aux``: latents in the auxiliary loss (default ``d_in // 2``, Gao et al.)."""
    if n_steps < 2:
        raise ValueError(f"n_steps must be at least 2 (the threshold is read over the second half), got {n_steps}")
    k_aux = max(1, min(crosscoder.d_in // 2, crosscoder.d_latents)) if k_aux is None else k_aux
    optimizer = torch.optim.Adam(crosscoder.parameters(), lr=lr)
    decay_from = int(n_steps * 0.8)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 1.0 if step < decay_from else max(0.0, (n_steps - step) / (n_steps - decay_from)))
    since_fired_F = torch.zeros(crosscoder.d_latents)
    thresholds: list[float] = []
    curve: list[dict[str, Any]] = []
    crosscoder.train()
    for step in tqdm(range(n_steps), desc=desc, leave=False):
        x_BMD = next(batches)
        pre_BF, acts_BF = crosscoder.encode_with_pre(x_BMD, batch_topk=True)
        recon_BMD = crosscoder.decode(acts_BF)
        error_BMD = x_BMD - recon_BMD
        loss = error_BMD.pow(2).sum(dim=(1, 2)).mean()
        fired_F = (acts_BF > 0).any(dim=0)
        since_fired_F = torch.where(fired_F, 0.0, since_fired_F + len(x_BMD))
        dead_F = since_fired_F >= dead_after_tokens
        aux = torch.zeros(())
        if dead_F.any() and aux_alpha > 0:
            # Only the dead latents' columns: the same sum as over all latents with the live ones zeroed, at a
            # fraction of the dense product's cost (8-30% of the latents are dead on the cpu profile).
            dead = dead_F.nonzero().squeeze(1)
            dead_pre_BK = pre_BF[:, dead]  # the encoder's one pass: its gradient sums both losses' before the matmul
            top = dead_pre_BK.topk(min(k_aux, len(dead)), dim=1)
            aux_acts_BK = torch.zeros_like(dead_pre_BK).scatter(1, top.indices, top.values)
            aux_recon_BMD = torch.einsum("bk,kmd->bmd", aux_acts_BK, crosscoder.W_dec_FMD[dead])
            aux = (error_BMD.detach() - aux_recon_BMD).pow(2).sum(dim=(1, 2)).mean()
        total = loss + aux_alpha * aux
        require_finite(total.detach(), f"{desc} loss at step {step}",
                       "lower the learning rate, or check the activations for NaN")
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        schedule.step()
        if step >= n_steps // 2:
            with torch.no_grad():
                score_BF = acts_BF * crosscoder.decoder_norms().sum(dim=1)
                kept = score_BF[score_BF > 0]
                if kept.numel():
                    thresholds.append(float(kept.min()))
        if step % log_every == 0 or step == n_steps - 1:
            with torch.no_grad():
                fvu = _fvu(x_BMD, recon_BMD)
            curve.append({"step": step, "loss": float(loss.detach()), "aux_loss": float(aux.detach()),
                          "fvu": [float(v) for v in fvu], "l0": float((acts_BF > 0).sum(dim=1).float().mean()),
                          "dead_share": float(dead_F.float().mean())})
    if not thresholds:
        raise RuntimeError(f"{desc}: no latent fired in the second half of training; nothing to set a threshold from")
    crosscoder.threshold.fill_(sum(thresholds) / len(thresholds))
    crosscoder.eval()
    return {"curve": curve, "threshold": float(crosscoder.threshold), "steps": n_steps, "k_aux": k_aux}
