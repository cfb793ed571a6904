"""Case studies (Figures 3 and 4, notebook 06): find a concept's feature by rule-based labels, look at it, and
follow it through the model family.

- ``labels``: rule-based token labels (variable assignment, Python exception);
- ``scoring`` and ``search``: every feature scored against the labels, the best one chosen (no hand-picked id);
- ``features``: one feature's top contexts, histogram, logit effects and pattern correlations;
- ``follow``: its matches along the registry's routes (with intervals), the snippets of the figures, the summary
  and its sentences.
The token-highlight renderer is ``plots.highlight``.
"""

from .features import (
    activation_histogram,
    correlation,
    logit_effects,
    pairwise_pattern_correlations,
    sae_activations,
    top_contexts,
)
from .follow import (
    EXCEPTION_SNIPPET,
    LUA_SNIPPET,
    PYTHON_SNIPPET,
    case_study,
    describe_findings,
    feature_matches,
    feature_report,
    formatted_summary,
    match_blocks,
    match_correlation,
    route_intervals,
    snippet_activations,
    summary_table,
    tokenize_snippet,
)
from .labels import CONCEPT_LABELS, CONCEPTS, LABELLERS, assignment_spans, concept_labels, exception_spans, label_tokens
from .scoring import FeatureScorer, best_feature, score_features
from .search import (
    FeatureSearch,
    concept_scores,
    find_feature,
    label_intervals,
    labelled_search_blocks,
    search_sample,
)
