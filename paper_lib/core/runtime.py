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


class NonFiniteError(ArithmeticError):
    """A loss or metric that is NaN or infinite: the step that produced it fails instead of being cached."""


def first_non_finite(values, path: str = "") -> tuple[str, float] | None:
    """The first NaN or infinite number in a nested dict/list of numbers, as (dotted path, value), else None."""
    if isinstance(values, dict):
        items = values.items()
    elif isinstance(values, (list, tuple)):
        items = ((str(i), v) for i, v in enumerate(values))
    else:
        if isinstance(values, (int, float, np.floating, np.integer)) and not isinstance(values, bool):
            if not np.isfinite(float(values)):
                return path, float(values)
        return None
    for key, value in items:
        found = first_non_finite(value, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


def require_finite(values, what: str, fix: str) -> None:
    """Raise ``NonFiniteError`` naming ``what``, the offending entry and ``fix`` if ``values`` holds NaN or inf."""
    found = first_non_finite(values)
    if found:
        raise NonFiniteError(f"{what}: {found[0]} is {found[1]}. {fix}")
