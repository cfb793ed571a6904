"""Model diffing with a trained crosscoder: which latents are shared, which belong to one model, and whether an
"exclusive" latent really is (latent scaling, Minder et al. 2025).

Model 0 is the parent and model 1 the child throughout. A latent's relative decoder norm (Minder et al.'s
Delta-norm) is ``0.5 * ((|d_child| - |d_parent|) / max(|d_parent|, |d_child|) + 1)``: 0 when only the parent's decoder
is non-zero, 1 when only the child's is, 0.5 when both are equal. Their bands name the classes: parent-only below
0.1, child-only above 0.9, shared from 0.4 to 0.6; the rest is "between".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from .model import BatchTopKCrosscoder

PARENT, CHILD = 0, 1
CLASS_BANDS = {"parent_only": (0.0, 0.1), "shared": (0.4, 0.6), "child_only": (0.9, 1.0)}
CLASSES = ("parent_only", "shared", "child_only", "between", "dead")


def relative_norms(crosscoder: BatchTopKCrosscoder) -> np.ndarray:
    """``[F]`` relative decoder norms of the child against the parent (see the module docstring)."""
    norms = crosscoder.decoder_norms().detach().double()
    parent, child = norms[:, PARENT], norms[:, CHILD]
    return (0.5 * ((child - parent) / torch.maximum(parent, child).clamp_min(1e-12) + 1)).numpy()


def latent_classes(relative: np.ndarray, live: np.ndarray) -> np.ndarray:
    """``[F]`` class names: a band of ``CLASS_BANDS`` for live latents, "between" outside the bands, "dead" where a
    latent never fired on the evaluation tokens."""
    classes = np.full(len(relative), "between", dtype=object)
    low, high = CLASS_BANDS["shared"]
    classes[(relative >= low) & (relative <= high)] = "shared"
    classes[relative < CLASS_BANDS["parent_only"][1]] = "parent_only"
    classes[relative > CLASS_BANDS["child_only"][0]] = "child_only"
    classes[~np.asarray(live, bool)] = "dead"
    return classes


def class_counts(classes: np.ndarray) -> dict[str, int]:
    """Latents per class (every class of ``CLASSES``, zeros included)."""
    return {name: int((classes == name).sum()) for name in CLASSES}


@torch.no_grad()
def evaluate(crosscoder: BatchTopKCrosscoder, batches: Iterable[torch.Tensor]) -> dict[str, Any]:
    """On held-out ``[B, M, D]`` batches, with the inference threshold: each model's fraction of variance
    explained (1 - residual / total sum of squares about the mean), the mean L0, and which latents ever fired."""
    crosscoder.eval()
    residual = None
    n, sum_x, sum_xx, l0 = 0, 0.0, 0.0, 0.0
    fired = torch.zeros(crosscoder.d_latents, dtype=torch.bool)
    for x_BMD in batches:
        acts_BF = crosscoder.encode(x_BMD)
        recon_BMD = crosscoder.decode(acts_BF)
        res = (x_BMD - recon_BMD).double().pow(2).sum(dim=(0, 2))
        residual = res if residual is None else residual + res
        sum_x = sum_x + x_BMD.double().sum(dim=0)
        sum_xx = sum_xx + x_BMD.double().pow(2).sum(dim=(0, 2))
        n += len(x_BMD)
        l0 += float((acts_BF > 0).sum())
        fired |= (acts_BF > 0).any(dim=0)
    if not n:
        raise ValueError("no evaluation batches")
    total = sum_xx - (sum_x.pow(2).sum(dim=1) / n)
    explained = (1 - residual / total.clamp_min(1e-12)).tolist()
    return {"explained_variance": explained, "mean_l0": l0 / n, "live": fired.numpy(), "n_tokens": n}


@torch.no_grad()
def latent_scaling(crosscoder: BatchTopKCrosscoder, batches: Iterable[torch.Tensor], latents: np.ndarray,
                   present: int) -> dict[str, np.ndarray]:
    """Minder et al.'s check of latents called exclusive to model ``present``: how much of each latent's direction
    the *other* model's activations carry where the latent fires.

    For latent j with decoder vector d (model ``present``'s) and activation f, beta_m = sum f <d, y_m> / sum f^2 |d|^2
    is the least-squares scale of f d in a target y_m of model m: the activation x_m (``nu_reconstruction``) or its
    reconstruction error with latent j put back (``nu_error``). Each ratio is beta of the absent model over beta of
    the present one: near 0 for a latent the other model truly lacks, near 1 for one it also has (an "exclusive"
    latent made by the sparsity, not by the models). NaN for a latent that never fires here.
    """
    latents = np.asarray(latents, dtype=np.int64)
    absent = 1 - present
    index = torch.as_tensor(latents)
    d_LD = crosscoder.W_dec_FMD[index, present].double()
    numerator = {(kind, m): torch.zeros(len(latents), dtype=torch.float64)
                 for kind in ("reconstruction", "error") for m in (present, absent)}
    denominator = torch.zeros(len(latents), dtype=torch.float64)
    crosscoder.eval()
    for x_BMD in batches:
        acts_BF = crosscoder.encode(x_BMD)
        recon_BMD = crosscoder.decode(acts_BF).double()
        f_BL = acts_BF[:, index].double()
        for m in (present, absent):
            x_BD = x_BMD[:, m].double()
            dot_BL = x_BD @ d_LD.T
            numerator["reconstruction", m] += (f_BL * dot_BL).sum(dim=0)
            # the error with latent j's own contribution (in model m's decoder) put back
            own_BLD = f_BL[:, :, None] * crosscoder.W_dec_FMD[index, m].double()[None]
            error_dot_BL = ((x_BD - recon_BMD[:, m])[:, None, :] + own_BLD).mul(d_LD[None]).sum(dim=-1)
            numerator["error", m] += (f_BL * error_dot_BL).sum(dim=0)
        denominator += f_BL.pow(2).sum(dim=0) * d_LD.pow(2).sum(dim=1)
    out = {}
    for kind in ("reconstruction", "error"):
        beta_present = numerator[kind, present] / denominator
        beta_absent = numerator[kind, absent] / denominator
        out[f"beta_{kind}_present"] = beta_present.numpy()
        out[f"beta_{kind}_absent"] = beta_absent.numpy()
        out[f"nu_{kind}"] = (beta_absent / beta_present).numpy()
    return out
