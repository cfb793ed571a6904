"""Sparse autoencoders on a hook of each model (SAELens): train, load, encode through one path, evaluate (notebook 04)."""

from .encode import encode_with, hook_activations, sae_hook
from .evaluate import (
    diagnostics_table,
    evaluate_sae,
    feature_frequencies,
    record_training_benchmark,
    sae_diagnostics,
    training_curves,
)
from .store import (
    encode_blocks,
    encode_chunks,
    l1_coefficient,
    load_sae,
    model_and_sae,
    sae_dir,
    training_stats,
)
from .train import geometric_median, train_sae
