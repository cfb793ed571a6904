"""Token-level views per layer: one concept's feature at every layer of the deeper base, and its best match in
each fine-tune at that layer, shown token by token on the case studies' Python snippet.

The feature at each layer is found by the case-study tools (``case_studies.find_feature`` on that layer's SAE:
the feature that best follows the concept's rule-based labels on Python validation text, no hand-picked id);
its partner in a fine-tune is its best position-mode match at the same layer (``matching.same_layer``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..case_studies import PYTHON_SNIPPET, case_study, find_feature
from ..core.config import Config
from .family import base, fine_tunes, layer_config, layers
from .matching import same_layer

SNIPPET = "Python"


def concept_views(cfg: Config, concept: str | None = None) -> dict[str, Any]:
    """``{"concept", "snippet", "layers": [{layer, feature, score, matches, tokens, acts}]}``: plain data for
    ``plots.layerwise.views_figure`` and the saved JSON (``acts``: ``{model: activations per token}``)."""
    concept = concept or cfg.layerwise.concept
    rows = []
    for layer in layers(cfg):
        lc = layer_config(cfg, layer)
        found = find_feature(lc, concept, base())
        features, matches = {base(): found.feature}, {}
        for child in fine_tunes():
            result = same_layer(cfg, child, layer)
            partner = int(result.best_child_for_parent[found.feature])
            corr = float(result.best_corr_for_parent[found.feature])
            matches[child] = {"feature": partner, "r": corr if np.isfinite(corr) else None}
            features[child] = partner
        study = case_study(lc, features, {SNIPPET: PYTHON_SNIPPET})
        rows.append({
            "layer": layer, "depth": layer + 1, "feature": found.feature, "score_name": found.score,
            "score": found.value, "matches": matches, "tokens": study["tokens"][SNIPPET],
            "acts": {model: study["acts"][model][SNIPPET] for model in study["acts"]},
        })
    return {"concept": concept, "snippet": SNIPPET, "layers": rows}
