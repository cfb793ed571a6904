"""The language models: build, train and fine-tune (HF Trainer), merge (mergekit), evaluate, convert to TransformerLens.

``model_dir(cfg, name)`` resolves any registry model, making its parents first; notebooks 01-03 live here.
"""

from ..core.registry import MODEL_LABELS, MODEL_NAMES
from .build import build_model, hooked_config, load_hf, to_hooked
from .evaluate import evaluate_lm, metric_difference, model_block_sums, model_metrics, model_table, unigram_baselines
from .merge import (
    METHODS,
    MergeError,
    linear_tensor,
    merge_state_dicts,
    mergekit_config,
    run_mergekit,
    slerp_tensor,
    tensor_geometry,
)
from .store import load_hooked_lm, load_lm, merge_geometry, model_dir, training_history, training_stats
from .sweep import (
    PAPER_SWEEP,
    crossing_point,
    monotonicity,
    paper_sweep_table,
    slerp_sweep,
    sweep_block_sums,
    sweep_intervals,
    sweep_points,
    sweep_summary,
)
from .train import train_lm
