"""A BatchTopK crosscoder: one sparse dictionary read from two models' activations, with a decoder per model.

Written here because no maintained pip package ships a crosscoder (SAELens has only an open proposal; the
``dictionary-learning`` release on PyPI has none). The design follows Anthropic's crosscoders (2024) and the
BatchTopK crosscoders of Minder et al. 2025 (arXiv 2504.02922), which they show avoid the "exclusive" latents an L1
crosscoder invents:

- the encoder reads every model's activations, ``f = ReLU(sum_m x_m W_enc[m] + b_enc)``;
- a latent is ranked by its activation times the sum of its decoder norms (so a latent cannot win by a small
  activation on a huge decoder), and in training the ``k * batch`` largest of the batch are kept (BatchTopK);
- at inference a latent fires where that score exceeds ``threshold``, a number learnt in training (the mean of
  each batch's smallest kept score), so one token's code does not depend on the rest of its batch;
- each model ``m`` has its own decoder ``W_dec[:, m]`` and bias, ``x_m ~ f W_dec[:, m] + b_dec[m]``.

Tensors carry their shape in their names: B batch, M models, D activation width, F latents.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BatchTopKCrosscoder(nn.Module):
    """``d_latents`` latents over ``n_models`` activations of width ``d_in``, ``k`` active per token on average."""

    def __init__(self, d_in: int, d_latents: int, k: int, n_models: int = 2, seed: int = 0,
                 decoder_init_norm: float = 0.1):
        super().__init__()
        if min(d_in, d_latents, k, n_models) < 1 or k > d_latents:
            raise ValueError(f"need d_in, d_latents, n_models >= 1 and 1 <= k <= d_latents; got d_in={d_in}, "
                             f"d_latents={d_latents}, k={k}, n_models={n_models}")
        self.d_in, self.d_latents, self.k, self.n_models = d_in, d_latents, k, n_models
        generator = torch.Generator().manual_seed(seed)
        # Every model's decoder direction drawn independently, so a trained latent's relative norm is learnt, not
        # inherited; the encoder starts as the decoder's transpose (Anthropic's initialisation).
        W_dec_FMD = torch.randn(d_latents, n_models, d_in, generator=generator)
        W_dec_FMD = W_dec_FMD / W_dec_FMD.norm(dim=-1, keepdim=True) * decoder_init_norm
        self.W_dec_FMD = nn.Parameter(W_dec_FMD)
        self.W_enc_MDF = nn.Parameter(W_dec_FMD.permute(1, 2, 0).clone())
        self.b_enc_F = nn.Parameter(torch.zeros(d_latents))
        self.b_dec_MD = nn.Parameter(torch.zeros(n_models, d_in))
        # < 0 until training sets it: encode(..., batch_topk=False) refuses to run before
        self.register_buffer("threshold", torch.tensor(-1.0))

    def _check(self, x_BMD: torch.Tensor) -> None:
        if x_BMD.ndim != 3 or tuple(x_BMD.shape[1:]) != (self.n_models, self.d_in):
            raise ValueError(f"activations must be [batch, {self.n_models}, {self.d_in}], got {tuple(x_BMD.shape)}")

    def decoder_norms(self) -> torch.Tensor:
        """``[F, M]``: the norm of every latent's decoder vector in every model."""
        return self.W_dec_FMD.norm(dim=-1)

    def pre_activations(self, x_BMD: torch.Tensor) -> torch.Tensor:
        """``[B, F]``: every latent's activation before the sparsity is applied (after the ReLU)."""
        self._check(x_BMD)
        return torch.relu(torch.einsum("bmd,mdf->bf", x_BMD, self.W_enc_MDF) + self.b_enc_F)

    def encode(self, x_BMD: torch.Tensor, batch_topk: bool | None = None) -> torch.Tensor:
        """``[B, F]`` latent activations: BatchTopK in training (``batch_topk`` defaults to ``self.training``),
        else every latent whose score (activation times summed decoder norms) exceeds the learnt threshold."""
        return self.encode_with_pre(x_BMD, batch_topk)[1]

    def encode_with_pre(self, x_BMD: torch.Tensor, batch_topk: bool | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pre_activations, encode)`` from one encoder pass: training's auxiliary loss reads the first."""
        acts_BF = self.pre_activations(x_BMD)
        score_BF = acts_BF * self.decoder_norms().sum(dim=1)
        if self.training if batch_topk is None else batch_topk:
            keep = min(self.k * len(score_BF), score_BF.numel())
            flat = score_BF.flatten()
            mask = torch.zeros_like(flat, dtype=torch.bool)
            mask[flat.topk(keep, sorted=False).indices] = True
            return acts_BF, acts_BF * (mask.view_as(acts_BF) & (score_BF > 0))
        if float(self.threshold) < 0:
            raise RuntimeError("this crosscoder has no inference threshold yet: train it (crosscoder.train) first")
        return acts_BF, acts_BF * (score_BF > self.threshold)

    def decode(self, acts_BF: torch.Tensor) -> torch.Tensor:
        """``[B, M, D]``: every model's reconstruction from the latents.

        Sparse: only the active latents' decoder rows are read (``embedding_bag`` with the activations as
        per-sample weights), the same sum as the dense ``einsum("bf,fmd->bmd")``. With k = 32 of 2,048 latents
        active it is 8x faster, forward and backward, than the dense product on the cpu profile's batches
        (1,024 tokens, two models of width 1,024: 0.028 s against 0.233 s on 2 cores); the auxiliary loss, with
        ``d_in / 2`` latents per token, stays dense (measured faster there).
        """
        rows, latents = acts_BF.detach().nonzero(as_tuple=True)  # row-major: each row's latents together
        offsets = torch.searchsorted(rows, torch.arange(len(acts_BF), device=rows.device))
        W_dec_FX = self.W_dec_FMD.reshape(self.d_latents, self.n_models * self.d_in)
        recon_BX = F.embedding_bag(latents, W_dec_FX, offsets, mode="sum", per_sample_weights=acts_BF[rows, latents])
        return recon_BX.view(len(acts_BF), self.n_models, self.d_in) + self.b_dec_MD

    def forward(self, x_BMD: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x_BMD))

    def config(self) -> dict:
        """What rebuilds this module's shape (saved beside its weights)."""
        return {"d_in": self.d_in, "d_latents": self.d_latents, "k": self.k, "n_models": self.n_models}

    @classmethod
    def from_state(cls, config: dict, state: dict[str, torch.Tensor]) -> BatchTopKCrosscoder:
        """A crosscoder from a saved ``config()`` and state dict."""
        crosscoder = cls(**config)
        crosscoder.load_state_dict(state)
        return crosscoder.eval()
