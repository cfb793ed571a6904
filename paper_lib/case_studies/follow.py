"""Following a feature through the model family (Figures 3 and 4): matches along registry routes with intervals
for their correlations, snippets shaded by each model's feature, the case studies' summary table and the
sentences stating what it shows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .. import matching
from ..core import intervals
from ..core.registry import REGISTRY
from ..data import get_tokenizer, search_blocks, token_strings
from ..saes import encode_blocks, encode_chunks, model_and_sae, sae_hook
from .features import activation_histogram, logit_effects, pairwise_pattern_correlations, top_contexts
from .labels import CONCEPT_LABELS
from .search import FeatureSearch, concept_scores, label_intervals

ROOT = "babypython"  # case-study features are found in the pretrained model and followed into its descendants
MATCH_UNIT = "sample blocks"  # what the match correlations' intervals resample: blocks of the matching sample


# The snippets of Figures 3 and 4: short, typical code with assignments next to near-misses ('==', '~=',
# keyword arguments, table fields) and, for Figure 4, every part of Python's exception handling.
PYTHON_SNIPPET = """def scale(values, factor=2):
    total = 0
    for v in values:
        if v == 0:
            continue
        total = total + v * factor
    result = total / len(values)
    return result
"""


LUA_SNIPPET = """local function scale(values, factor)
  local total = 0
  for _, v in ipairs(values) do
    if v ~= 0 then
      total = total + v * factor
    end
  end
  local result = total / #values
  return result
end
"""


EXCEPTION_SNIPPET = """def load(path):
    try:
        handle = open(path)
        data = json.load(handle)
    except ValueError as err:
        raise RuntimeError("bad file") from err
    except KeyError:
        data = None
    finally:
        handle.close()
    return data
"""


def feature_matches(cfg, feature: int, mode: str | None = None, routes: Mapping[str, list[str]] | None = None,
                    with_intervals: bool = True):
    """Follow a BabyPython feature to its best match in every other model along ``routes`` (default: the
    registry's routes from BabyPython, a merge reached through its base model; matched pairs of notebook 05,
    ``paper_lib.matching.match_pair``). One row per model: the matched feature, the correlation
    of the last hop, the weakest correlation along the route and whether every hop passes the threshold,
    with ``with_intervals`` their 95% intervals ``corr_interval`` and ``route_min_corr_interval``
    (``route_intervals``; ``None`` where the feature has no match). ``mode`` defaults to
    ``cfg.case_studies.matching_mode``."""
    import pandas as pd

    mode = mode or cfg.case_studies.matching_mode
    rows = []
    for target, route in (routes or REGISTRY.routes_from(ROOT)).items():
        current, corrs, hops = int(feature), [], []
        for parent, child in zip(route[:-1], route[1:]):
            if current < 0:  # no match on an earlier hop (a feature dead on the matching sample): nothing to follow
                corrs.append(float("nan"))
                continue
            result = matching.match_pair(cfg, parent, child, mode=mode)
            corr = float(np.asarray(result.best_corr_for_parent)[current])
            matched_to = int(np.asarray(result.best_child_for_parent)[current])
            hops.append((parent, child, current, matched_to))
            current = matched_to
            corrs.append(corr)
        row = {
            "model": target,
            "route": " -> ".join(route),
            "feature": current,
            "corr": corrs[-1],
            "route_min_corr": float(np.nanmin(corrs)) if not np.all(np.isnan(corrs)) else float("nan"),
            "matched": bool(current >= 0 and all(c >= cfg.matching.threshold for c in corrs)),
        }
        if with_intervals:
            row.update(route_intervals(cfg, hops, corrs, mode) if current >= 0 and np.all(np.isfinite(corrs))
                       else {"corr_interval": None, "route_min_corr_interval": None})
        rows.append(row)
    return pd.DataFrame(rows)


def match_blocks(cfg, parent: str, child: str, parent_feature: int, child_feature: int) -> np.ndarray:
    """A matched pair's activations on the sample it was matched on (``matching.sample_domains``, the SAEs of
    ``cfg.sae.init``, as ``matching.match_pair``), block by block: ``[n_blocks, 3, context]`` float64 holding the
    parent feature's activations, the child feature's and the token ids at the same positions."""
    domains = matching.sample_domains(cfg, parent, child)
    parent_acts, tokens = matching.load_activation_sample(cfg, parent, domains)
    child_acts, _ = matching.load_activation_sample(cfg, child, domains)
    ctx = cfg.matching.context_size
    columns = [parent_acts[:, [parent_feature]].toarray().ravel(), child_acts[:, [child_feature]].toarray().ravel(),
               np.asarray(tokens, dtype=np.float64)]
    return np.stack([c.reshape(-1, ctx) for c in columns], axis=1)


def match_correlation(hop_BKC: np.ndarray, mode: str = "position", min_support: int = 0) -> float:
    """The matching statistic of one pair on ``match_blocks`` arrays (any subset of blocks): the Pearson r of the
    two features' activations over all positions (``position``; NaN with fewer than ``min_support`` co-active
    positions, or a constant side) or over token strings (``token``, as ``matching.pairwise_correlations``)."""
    x, y = hop_BKC[:, 0].ravel(), hop_BKC[:, 1].ravel()
    if mode == "token":
        tokens = hop_BKC[:, 2].ravel().astype(np.int64)
        return float(matching.pairwise_correlations(x[:, None], y[:, None], "token", tokens, max(min_support, 2))[0, 0])
    if min_support and np.count_nonzero((x != 0) & (y != 0)) < min_support:
        return float("nan")
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt((x @ x) * (y @ y))
    return float(x @ y / denom) if denom > 0 else float("nan")


def route_intervals(cfg, hops: list[tuple[str, str, int, int]], corrs: list[float], mode: str) -> dict[str, Any]:
    """95% intervals for a followed feature's correlations, by a bootstrap over the matching sample's blocks:
    ``corr_interval`` (the last hop) and ``route_min_corr_interval`` (the weakest hop; each hop's sample is
    resampled on its own, as the hops are matched on different samples). ``hops``: (parent, child, parent
    feature, child feature) along the route, ``corrs``: their reported correlations."""
    guard = matching.pairs.min_support(cfg, mode)
    samples = [match_blocks(cfg, *hop) for hop in hops]

    def one(hop_BKC):
        return match_correlation(hop_BKC, mode, guard)

    def weakest_hop(*hop_arrays):  # undefined when any hop is (Python's min would depend on the order)
        values = [one(h) for h in hop_arrays]
        return min(values) if np.all(np.isfinite(values)) else float("nan")

    last = intervals.around(intervals.bootstrap(samples[-1], one, unit=MATCH_UNIT), corrs[-1],
                            f"{hops[-1][0]} -> {hops[-1][1]} correlation")
    if len(samples) == 1:
        return {"corr_interval": last, "route_min_corr_interval": dict(last)}
    weakest = intervals.bootstrap(samples, weakest_hop, unit=MATCH_UNIT, paired=False)
    route = " -> ".join([hops[0][0], *(h[1] for h in hops)])
    return {"corr_interval": last,
            "route_min_corr_interval": intervals.around(weakest, min(corrs), f"{route} weakest correlation")}


def tokenize_snippet(cfg, text: str) -> tuple[torch.Tensor, list[str]]:
    """Token ids and token strings of a snippet (no special tokens)."""
    ids = get_tokenizer(cfg)(text, add_special_tokens=False)["input_ids"]
    vocab = token_strings(cfg)
    return torch.tensor(ids, dtype=torch.long), [vocab[i] for i in ids]


def snippet_activations(cfg, name: str, feature: int, ids: torch.Tensor, model=None, sae=None) -> np.ndarray:
    """One feature's activations on a snippet's tokens, run as a single context (split into consecutive
    windows of the LM's block size if longer). ``model``/``sae`` may be passed to avoid reloading them."""
    if model is None or sae is None:
        model, sae = model_and_sae(cfg, name)
    window = cfg.data.block_size
    out = []
    for start in range(0, len(ids), window):
        acts = encode_blocks(cfg, name, ids[start : start + window][None], model=model, sae=sae)
        out.append(acts[0, :, int(feature)].detach().float().cpu().numpy())
    return np.concatenate(out)


def case_study(cfg, features: Mapping[str, int], snippets: Mapping[str, str]) -> dict[str, Any]:
    """Activations of one feature per model (``{model: feature}``) on shared snippets, with the pairwise
    position-wise correlations per snippet and over all snippets together. Plain data, ready for
    ``save_results`` and ``highlight_figure``: ``{"tokens": {snippet: [str]}, "acts": {model: {snippet:
    [float]}}, "correlations": [{"snippet", "a", "b", "corr"}]}``."""
    import pandas as pd

    features = {name: int(f) for name, f in features.items() if int(f) >= 0}  # -1: no match to show
    encoded = {label: tokenize_snippet(cfg, text) for label, text in snippets.items()}
    tokens = {label: strings for label, (_, strings) in encoded.items()}
    acts = {}
    for name, feature in features.items():
        model, sae = model_and_sae(cfg, name)
        acts[name] = {
            label: snippet_activations(cfg, name, feature, ids, model, sae).tolist() for label, (ids, _) in encoded.items()
        }
    tables = [pairwise_pattern_correlations({m: acts[m][s] for m in features}).assign(snippet=s) for s in snippets]
    together = {m: np.concatenate([acts[m][s] for s in snippets]) for m in features}
    tables.append(pairwise_pattern_correlations(together).assign(snippet="all"))
    correlations = pd.concat(tables, ignore_index=True)[["snippet", "a", "b", "corr"]]
    return {"features": dict(features), "tokens": tokens, "acts": acts, "correlations": correlations.to_dict("records")}


def feature_report(cfg, name: str, feature: int, domain: str = "python", k: int | None = None) -> dict[str, Any]:
    """Everything about one feature of one SAE: top contexts and activation histogram on ``domain``'s
    validation blocks (``cfg.case_studies.n_search_blocks`` blocks of the SAE's context) and logit effects."""
    k = k or cfg.case_studies.n_top_contexts
    blocks, _ = search_blocks(cfg, domain)
    model, sae = model_and_sae(cfg, name)
    acts_BT = np.concatenate([a[:, :, int(feature)] for a in encode_chunks(cfg, name, blocks, model=model, sae=sae)])
    vocab = token_strings(cfg)
    tokens_BT = [[vocab[int(i)] for i in block] for block in blocks]
    return {
        "top_contexts": top_contexts(tokens_BT, acts_BT, k=k),
        "histogram": activation_histogram(acts_BT),
        "logit_effects": logit_effects(model, sae.W_dec[int(feature)].detach(), vocab, k=k, hook=sae_hook(sae)),
    }


def summary_table(cfg, searches: Mapping[str, FeatureSearch], matches: Mapping[str, Any]):
    """The numbers of the case studies: one row per (concept, model) with the feature, its route and
    best-match correlation from BabyPython (NaN for BabyPython itself), its Pearson correlation / F1 with the
    concept's labels on the Python validation text, and the best such correlation of any feature of that
    model (does the model have a feature for the concept at all, matched or not?).

    Each number has its 95% interval beside it (``core.intervals`` records, ``None`` where the number is
    undefined): ``corr_interval`` and ``route_min_corr_interval`` over the matching sample's blocks (from
    ``feature_matches``), ``label_pearson_interval``, ``label_f1_interval`` and ``best_label_pearson_interval``
    over the searched blocks (``search.label_intervals``)."""
    import pandas as pd

    rows = []
    for concept, search in searches.items():
        found = [{"model": search.model, "feature": search.feature, "route": search.model, "corr": float("nan"),
                  "route_min_corr": float("nan"), "matched": True, "corr_interval": None,
                  "route_min_corr_interval": None}]
        found += matches[concept].to_dict("records")
        for row in found:
            table = concept_scores(cfg, row["model"])["tables"][concept].set_index("feature")
            own = table.loc[row["feature"]] if row["feature"] >= 0 else {"pearson": np.nan, "f1": np.nan}
            rows.append(
                {
                    "concept": concept,
                    **row,
                    "label_pearson": float(own["pearson"]),
                    "label_f1": float(own["f1"]),
                    "best_label_feature": int(table["pearson"].idxmax()),
                    "best_label_pearson": float(table["pearson"].max()),
                    **label_intervals(cfg, row["model"], concept, int(row["feature"])),
                }
            )
    return pd.DataFrame(rows)


def formatted_summary(summary):
    """The summary table for display: each ``*_interval`` column as ``value [low, high]`` text."""
    shown = summary.copy()
    for column in [c for c in shown.columns if c.endswith("_interval")]:
        shown[column] = [intervals.formatted(r, lambda x: f"{x:.3f}") if r else "n/a" for r in shown[column]]
    return shown.round(3)


def describe_findings(summary, threshold: float) -> list[str]:
    """Sentences stating what the summary table shows for each concept, with the paper's finding beside it
    (built from the numbers, so the text never disagrees with the saved results)."""
    paper = {
        "variable_assignment": "the paper shows a variable-assignment feature in all four models",
        "python_exception": "the paper finds the Python-exception feature's closest Lua match too weak: it "
        "disappears through Lua fine-tuning",
    }
    sentences = []
    for concept, rows in summary.groupby("concept", sort=False):
        base = rows.iloc[0]
        others = rows.iloc[1:]
        if concept == "python_exception":
            others = others[others.model == "lua"]
        parts = [
            f"{REGISTRY.labels.get(r.model, r.model)} #{r.feature} (r = {r.corr:.2f}"
            + (f" via {r.route}, weakest hop {r.route_min_corr:.2f}" if r.route.count("->") > 1 else "")
            + f"; its own label correlation {r.label_pearson:.2f}, best in that model {r.best_label_pearson:.2f})"
            for r in others.itertuples()
        ]
        n_matched = int(others.matched.sum())
        verdict = (
            f"{n_matched} of {len(others)} pass the {threshold} matching threshold"
            if len(others) > 1
            else ("it passes" if n_matched else "it falls below") + f" the {threshold} matching threshold"
        )
        sentences.append(
            f"{CONCEPT_LABELS.get(concept, concept).capitalize()}: BabyPython feature #{base.feature} "
            f"(label correlation {base.label_pearson:.2f}, F1 {base.label_f1:.2f}); best matches: "
            f"{'; '.join(parts)}. {verdict.capitalize()}; {paper.get(concept, '')}."
        )
    return sentences
