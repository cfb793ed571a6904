"""Notebook 05's findings, rendered from its saved results (``05_feature_matching.json``)."""

from __future__ import annotations

from typing import Any

from .claims import percent as _pct
from .claims import measured, with_interval
from .model_claims import label as _label


def _rows(data: dict, key: str, **match: Any) -> list[dict]:
    return [r for r in data.get(key, []) if all(r.get(k) == v for k, v in match.items())]


def matching_sentences(data: dict, method: str = "position", assignment: str = "many") -> str:
    """Markdown sentences for notebook 05 from its saved results: each pair's persistence beside its seed
    ceiling and floors, the shared-seed comparison, the methods, the null and the cost (numbers only from
    ``data``)."""
    lines = []
    rows = _rows(data, "controls", method=method, assignment=assignment)
    if not rows:
        return "No controls were saved (`controls` is missing from the results): rerun notebook 05."
    threshold = rows[0]["threshold"]
    lines.append(f"**Persistence beside its controls** ({method} Pearson r ≥ {threshold}, {assignment}-to-"
                 f"{'many' if assignment == 'many' else 'one'}, at least {rows[0]['min_support']} co-active "
                 "positions):")
    def shown(r: dict, name: str, digits: int = 1) -> str:  # a share with its 95% interval where saved
        return with_interval(measured(r, name), lambda x: _pct(x, digits))

    for r in rows:
        seeds = r.get("persisting_share_seeds")
        spread = (f" (over three draws of the SAE seeds {_pct(seeds['low'])}–{_pct(seeds['high'])})"
                  if isinstance(seeds, dict) else "")
        lines.append(
            f"- {_label(r.get('parent'))} → {_label(r.get('child'))} (on {r.get('sample')}): {shown(r, 'persisting_share')} of "
            f"{_label(r.get('child'))}'s {r.get('child_live_on_sample', 'n/a')} features active on the sample persist"
            f"{spread}; the seed ceiling is {shown(r, 'ceiling_share')}, so the pair keeps "
            f"{shown(r, 'fraction_of_ceiling', 0)} of what two seeds of {_label(r.get('child'))} agree on. Floors: "
            f"{shown(r, 'floor_null_model_share')} against the untrained model's SAE, "
            f"{shown(r, 'floor_permuted_share')} with positions shuffled."
        )
    lines.append("\nBrackets are 95% intervals (bootstrap over the child's live features; Wilson's interval for a "
                 "share of 0).")
    own = _rows(data, "model_ceilings", method=method, assignment=assignment)
    if own:
        lines.append(
            "\n**Seed ceilings on each model's own text** (two SAEs of one model, different seeds): "
            + ", ".join(f"{_label(r.get('model'))} {shown(r, 'ceiling_share')}" for r in own) + "."
        )
    shared = [(r, r["shared_init_persisting_share"] - r["independent_init_persisting_share"]) for r in rows
              if r.get("shared_init_persisting_share") is not None
              and r.get("independent_init_persisting_share") is not None]
    if shared:
        changes = ", ".join(f"{100 * d:+.1f} points ({_label(r.get('parent'))} → {_label(r.get('child'))})"
                            for r, d in shared)
        indices = ", ".join(f"{r.get('shared_init_same_index_matches')} shared vs {r.get('same_index_matches')} "
                            "independent" for r, _ in shared)
        lines.append(
            "\n**Shared vs independent SAE seeds.** With one seed for every SAE (the released protocol) the shares "
            f"change by {changes}; persisting features whose best parent has the same index: {indices}."
        )
    lines.append(
        "\n**The released sample.** On BabyPython validation text only, the shares are "
        + ", ".join(f"{shown(r, 'released_sample_persisting_share')} ({_label(r.get('parent'))} → {_label(r.get('child'))})"
                    for r in rows) + "."
    )
    methods = {}
    for r in _rows(data, "controls"):
        if r.get("persisting_share") is not None:
            methods.setdefault((r.get("method"), r.get("assignment")), []).append(r["persisting_share"])
    lines.append(
        "\n**Methods.** Persistence shares over the pairs, lowest to highest: "
        + "; ".join(f"{m} {a}-to-{'many' if a == 'many' else 'one'}: {_pct(min(v))}–{_pct(max(v))}"
                    for (m, a), v in methods.items()) + "."
    )
    null = data.get("null", [])
    if null:
        worst = {}
        for r in null:
            worst.setdefault(r["method"], []).append(r)
        parts = []
        for m, group in worst.items():
            top = max(group, key=lambda r: r["false_match_rate"])
            recommended = [r["recommended_min_support"] for r in group]
            parts.append(
                f"{m} mode (guard {top['min_support']}): at most {_pct(top['false_match_rate'], 2)} of a child's "
                f"features find a false match (worst pair {_label(top['parent'])} → {_label(top['child'])}); the "
                f"smallest guard keeping every pair at or under 1% is "
                f"{'not in the grid' if None in recommended else max(recommended)}"
            )
        lines.append("\n**The null.** With the child's positions shuffled, " + "; ".join(parts) + ".")
    cats = [c for c in data.get("token_categories", []) if c.get("mode") == method]
    if cats:
        by_pair: dict[str, dict[str, float]] = {}
        for c in cats:
            by_pair.setdefault(c["pair"], {})[c["group"]] = c["formatting_share"]
        lines.append(
            "\n**What persists.** Share of features whose top token is punctuation, whitespace or formatting, "
            "persisting vs emerging: " + "; ".join(
                f"{pair}: {_pct(v.get('persisting'))} vs {_pct(v.get('emerging'))}" for pair, v in by_pair.items())
            + "."
        )
    cost = data.get("cost") or {}
    if cost.get("ratio_to_notebook_01_steps") is not None:
        lines.append(
            f"\n**Cost.** The controls (second SAEs, the untrained model and its SAE, every match) took "
            f"{cost['controls_seconds']:.0f} s, {cost['ratio_to_notebook_01_steps']:.2f} times notebook 01's steps "
            f"({cost['notebook_01_steps_seconds']:.0f} s)."
        )
    return "\n".join(lines)
