"""Scoring every SAE feature against binary token labels (streaming Pearson and F1), to find a concept's feature."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class FeatureScorer:
    """Streaming scores of every feature against binary token labels, one chunk of activations at a time.

    Activations of all features on all searched tokens do not fit in memory (48k tokens x 16k features is
    3 GB), so sufficient statistics are accumulated in float64: Pearson correlation (point-biserial) of
    activation and label, and precision/recall/F1 of "the feature fires" (activation > 0) as a detector.
    """

    def __init__(self, n_features: int, concepts: Sequence[str]):
        self.concepts = list(concepts)
        c, f = len(self.concepts), n_features
        self.n = 0
        self.sum_y_C = torch.zeros(c, dtype=torch.float64)
        self.sum_x_F = torch.zeros(f, dtype=torch.float64)
        self.sum_xx_F = torch.zeros(f, dtype=torch.float64)
        self.sum_xy_CF = torch.zeros(c, f, dtype=torch.float64)
        self.fires_F = torch.zeros(f, dtype=torch.float64)
        self.hits_CF = torch.zeros(c, f, dtype=torch.float64)

    def update(self, acts_NF: torch.Tensor, labels_NC: torch.Tensor | np.ndarray) -> None:
        """Add ``acts_NF`` (activations of N tokens) with their labels ``[N, n_concepts]``."""
        # float64 throughout: the one-pass variance n*sum(x^2) - sum(x)^2 cancels badly in float32
        acts_NF = torch.as_tensor(acts_NF).double()
        labels_NC = torch.as_tensor(np.asarray(labels_NC)).double()
        if labels_NC.ndim == 1:
            labels_NC = labels_NC[:, None]
        if acts_NF.shape[0] != labels_NC.shape[0] or acts_NF.shape[1] != self.sum_x_F.numel():
            raise ValueError(
                f"activations {tuple(acts_NF.shape)} and labels {tuple(labels_NC.shape)} do not fit a scorer of "
                f"{self.sum_x_F.numel()} features: pass [n_tokens, d_sae] activations with one label row per token"
            )
        fires_NF = (acts_NF > 0).double()
        self.n += acts_NF.shape[0]
        self.sum_y_C += labels_NC.sum(0)
        self.sum_x_F += acts_NF.sum(0)
        self.sum_xx_F += (acts_NF * acts_NF).sum(0)
        self.sum_xy_CF += labels_NC.T @ acts_NF
        self.fires_F += fires_NF.sum(0)
        self.hits_CF += labels_NC.T @ fires_NF

    def table(self, concept: str):
        """One row per feature: pearson, precision, recall, f1, n_fires; sorted by pearson (best first)."""
        import pandas as pd

        c = self.concepts.index(concept)
        n = float(self.n)
        cov = n * self.sum_xy_CF[c] - self.sum_x_F * self.sum_y_C[c]
        var_x = (n * self.sum_xx_F - self.sum_x_F**2).clamp_min(0)
        var_y = (n * self.sum_y_C[c] - self.sum_y_C[c] ** 2).clamp_min(0)
        denom = torch.sqrt(var_x * var_y)
        # A feature that never varies (dead, or constant) has no correlation: score it 0, not NaN.
        pearson = torch.where(denom > 0, cov / denom.clamp_min(1e-300), torch.zeros_like(cov))
        hits = self.hits_CF[c]
        precision = torch.where(self.fires_F > 0, hits / self.fires_F.clamp_min(1), torch.zeros_like(hits))
        recall = hits / max(float(self.sum_y_C[c]), 1.0)
        f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12), 0)
        table = pd.DataFrame(
            {
                "feature": np.arange(len(pearson)),
                "pearson": pearson.numpy(),
                "precision": precision.numpy(),
                "recall": recall.numpy(),
                "f1": f1.numpy(),
                "n_fires": self.fires_F.numpy().astype(np.int64),
            }
        )
        return table.sort_values("pearson", ascending=False, kind="stable").reset_index(drop=True)


def score_features(acts_NF, labels_N, concept: str = "concept"):
    """Score every feature of in-memory activations ``[n_tokens, n_features]`` against a binary label
    ``[n_tokens]``: a table sorted by Pearson correlation (see ``FeatureScorer``)."""
    acts_NF = torch.as_tensor(acts_NF)
    scorer = FeatureScorer(acts_NF.shape[1], [concept])
    scorer.update(acts_NF, np.asarray(labels_N)[:, None])
    return scorer.table(concept)


def best_feature(table, score: str = "pearson") -> int:
    """The feature with the highest ``score`` in a ``score_features`` table."""
    if score not in table.columns:
        raise ValueError(f"unknown score '{score}'; choose one of pearson, precision, recall, f1")
    return int(table.loc[table[score].idxmax(), "feature"])
