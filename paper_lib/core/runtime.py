"""Where computation runs, and the one Pearson correlation that plain (non-streaming) code shares."""

from __future__ import annotations

import numpy as np
import torch


def default_device() -> str:
    """Where models and SAEs run: the GPU when there is one (Colab), else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def pearson(a, b) -> float:
    """Pearson correlation of two equally long sequences (NaN if either is constant).

    The streaming and all-pairs correlations (``matching``, ``case_studies.labels``) are written for their
    scale; every one-off correlation of two patterns goes through here.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"cannot correlate sequences of different lengths ({a.size} vs {b.size}): use the same tokens")
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")
