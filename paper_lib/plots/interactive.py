"""Interactive token views for JupyterLab, from circuitsvis (``colored_tokens_multi``: hover a token for its value,
pick the series to shade by). A library view rather than our own widget; the static figures that ``figures/``
keeps are drawn beside them by ``plots.highlight``.

circuitsvis loads its JavaScript from a CDN (unpkg) when the cell output is displayed, so these views need a
browser with internet access (Colab, or JupyterLab online); offline they render empty, and the static highlight
above each of them (plain HTML, no script) is the view to read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def colored_tokens(tokens: Sequence[str], series: Mapping[str, Sequence[float]]):
    """One circuitsvis view of ``tokens`` shaded by each named series of per-token values (one label each)."""
    import torch
    from circuitsvis.tokens import colored_tokens_multi

    if not series:
        raise ValueError("colored_tokens needs at least one series of activations")
    columns = []
    for label, values in series.items():
        values = np.asarray(values, dtype=np.float32)
        if values.shape != (len(tokens),):
            raise ValueError(f"series {label!r} has {values.shape} values for {len(tokens)} tokens")
        columns.append(values)
    return colored_tokens_multi(
        tokens=[str(t) for t in tokens], values=torch.from_numpy(np.stack(columns, axis=1)), labels=list(series)
    )


def layer_views(views: Mapping, labels: Mapping[str, str]) -> list:
    """Notebook 09's concept views (``layerwise.concept_views``) as circuitsvis views: one per distinct text, with
    a series per (layer, model) labelled by the feature and its match."""
    groups: dict[tuple[str, ...], dict[str, Sequence[float]]] = {}
    for row in views["layers"]:
        series = groups.setdefault(tuple(row["tokens"]), {})
        for model, acts in row["acts"].items():
            feature = row["matches"][model]["feature"] if model in row["matches"] else row["feature"]
            series[f"layer {row['depth']} · {labels.get(model, model)} #{feature}"] = acts
    return [colored_tokens(list(tokens), series) for tokens, series in groups.items()]
