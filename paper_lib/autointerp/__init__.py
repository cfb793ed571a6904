"""Automated interpretability (Figure 6, notebook 07): explain a feature from examples, simulate it from the
explanation, score the simulation; with offline, OpenAI-compatible and local HF backends."""

from .backends import (
    EXPLAIN_SYSTEM,
    SIMULATE_SYSTEM,
    ChatBackend,
    OfflineBackend,
    explain_messages,
    make_backend,
    parse_explanation,
    parse_simulation,
    simulate_messages,
)
from .clients import ChatClient, HFChat, OpenAIChat, ResponseCache
from .protocol import (
    CONTEXT_WINDOW,
    EXPLANATION_PREFIX,
    HOLDOUT_FRACTION,
    N_LEVELS,
    AutointerpError,
    Backend,
    BackendUnavailable,
    Example,
    FeatureInterpretation,
    explanation_score,
    holdout_blocks,
    interpret_feature,
    interpret_features,
    normalise_activations,
    select_examples,
    summarise_scores,
)
from .run import (
    GROUP_LABELS,
    GROUPS,
    feature_activations,
    max_activations,
    other_seed_comparison,
    score_comparison,
    score_features,
    score_summary,
)
