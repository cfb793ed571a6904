"""Notebook 08's findings as sentences, rendered from the JSON it saved (``08_feature_dynamics``). The notebook goes
past the paper (which compares end points only), so there is no paper number to set beside these: each finding
carries its own control (the parent against itself, the seed ceiling, the other merge methods) and interval."""

from __future__ import annotations

from typing import Any

from ..core import intervals
from ..core.registry import REGISTRY
from .claims import grouped_markdown, intervals_overlap, listing, percent, sentence


def _when(row: dict) -> str:
    """Where a checkpoint sits: 'at the parent', 'after 24% of its tokens (step 18 of 74)', 'at the end'."""
    f, step = row["fraction"], row.get("step")
    if f == 0:
        return "at the parent"
    if f == 1:
        return "at the end of the fine-tune"
    total = round(step / f) if step else None
    return f"after {percent(f, 0)} of its tokens" + (f" (step {step} of {total})" if total else "")


def _share(record) -> str:
    return intervals.formatted(record)


def trajectory_sentences(data: dict[str, Any]) -> list[str]:
    rows = data["trajectory"]
    lines = []
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = sorted((r for r in rows if r["model"] == name), key=lambda r: r["fraction"])
        start, end = mine[0], mine[-1]
        parent = REGISTRY.label(REGISTRY.spec(name).parents[0])
        own = REGISTRY.spec(name).domains[0]
        others = [d for d in ("python", "babylm") if d != own]
        early = mine[1] if len(mine) > 2 else end
        lines.append(sentence(
            f"Along the {REGISTRY.label(name)} fine-tune, the share of {parent}'s SAE features whose drift stays at "
            f"r ≥ {data['threshold']} goes from {_share(start['survival_share_interval'])} at the parent to "
            f"{_share(early['survival_share_interval'])} {_when(early)} and "
            f"{_share(end['survival_share_interval'])} at the end (bootstrap over the parent's live features); "
            f"the parent's SAE explains {_share(end['parent_sae_explained_variance_interval'])} of the variance of "
            f"the fine-tune's activations, against {_share(start['parent_sae_explained_variance_interval'])} of "
            f"its own. Validation loss on {own} goes from {_share(start[f'{own}_loss_interval'])} to "
            f"{_share(end[f'{own}_loss_interval'])}, and on "
            + listing([f"{d} from {_share(start[f'{d}_loss_interval'])} to {_share(end[f'{d}_loss_interval'])}"
                       for d in others])
        ))
    return lines


def length_sentences(data: dict[str, Any]) -> list[str]:
    lines = []
    for verdict in data["length"]:
        label = REGISTRY.label(verdict["model"])
        steps = "; ".join(f"{percent(d['from_fraction'], 0)} to {percent(d['to_fraction'], 0)} of the tokens: "
                          f"{_share(d['improvement_per_doubling_interval'])}" for d in verdict["steps"])
        first = verdict["first_fraction_under_criterion"]
        when = (f"first under it on reaching {percent(first, 0)} of the tokens" if first is not None
                else "never under it within the fine-tune")
        holds = {True: "meets it (the whole interval of the last doubling lies under the criterion)",
                 False: "does not meet it (the whole interval of the last doubling lies at or over it)",
                 None: "cannot be told to meet it or not at this size (the last doubling's interval straddles it)"}
        lines.append(sentence(
            f"Fine-tune length ({label}): the relative improvement of {verdict['domain']} validation loss per "
            f"doubling of tokens was {steps}. Against the criterion of {percent(verdict['criterion'])} per doubling it "
            f"was {when}, and the profile's length {holds[verdict['profile_length_meets_criterion']]}. The curve is read "
            "along one run whose learning rate decays to zero at its end, so the last doubling also holds the annealing"
        ))
    return lines


def case_sentences(data: dict[str, Any]) -> list[str]:
    lines = []
    rows = data["case_features"]
    for entry in data["first_below"]:
        mine = sorted((r for r in rows if r["model"] == entry["model"] and r["feature_name"] == entry["feature_name"]),
                      key=lambda r: r["fraction"])
        if not mine:
            continue
        feature = mine[0]["feature"]
        what = entry["feature_name"].replace("_", "-")
        parent = REGISTRY.label(REGISTRY.spec(entry["model"]).parents[0])
        drifts = [r["drift"] for r in mine if r["drift"] is not None]
        lowest = min(drifts) if drifts else None
        if entry["fraction"] is None:
            lines.append(sentence(
                f"{parent}'s {what} feature #{feature} never drifts below r = {data['threshold']} within the "
                f"{REGISTRY.label(entry['model'])} fine-tune (its lowest drift is {lowest:.3f}); beyond the "
                "profile's length was not run, so whether it goes later is open"))
        else:
            at = next(r for r in mine if r["fraction"] == entry["fraction"])
            r = "it stops firing" if at["drift"] is None else f"r = {at['drift']:.3f}"
            lines.append(sentence(
                f"{parent}'s {what} feature #{feature} first drifts below r = {data['threshold']} in the "
                f"{REGISTRY.label(entry['model'])} fine-tune {_when(at)} ({r})"))
    return lines


def agreement_sentences(data: dict[str, Any]) -> list[str]:
    lines = []
    for row in data["agreement"]:
        lines.append(sentence(
            f"{REGISTRY.label(row['model'])} {_when(row)}: drift keeps "
            f"{_share(row['drift_survival_interval'])} of the parent's {row['live_parent_features']:,} live features, "
            f"matching to the checkpoint's own SAE keeps {_share(row['matching_survival_interval'])}; the two verdicts "
            f"agree on {_share(row['agreement_interval'])} of the features (Cohen's kappa "
            f"{'n/a' if row['kappa'] is None else format(row['kappa'], '.2f')}), and matching finds "
            f"{_share(row['parent_seed_ceiling_interval'])} for the parent's own second SAE seed (its ceiling)"))
    return lines


def merge_sentences(data: dict[str, Any]) -> list[str]:
    lines = []
    methods = {m["method"]: m for m in data["methods"]}
    first, second = data["merge_parents"]
    slerp = methods.get("slerp")
    if slerp:
        half = slerp[f"{first}_half_survival_t_interval"]
        crossing = slerp["crossing_t_interval"]
        lines.append(sentence(
            f"Along the SLERP path, half of {REGISTRY.label(first)}'s SAE features are gone at t = "
            f"{_share(half) if half else 'no t on the path'}, where the accuracy curves cross at t = "
            f"{_share(crossing) if crossing else 'no t (they do not cross)'}"))
    read = [m for m in data["methods"] if m.get("crossing_t") is not None]
    if read:
        parts = [f"{m['method'].replace('_', ' ')} (t = {_share(m['crossing_t_interval'])}, accuracy "
                 f"{m['accuracy_at_crossing']:.3f} on both): {REGISTRY.label(first)} "
                 f"{_share(m[f'{first}_survival_at_crossing_interval'])}, {REGISTRY.label(second)} "
                 f"{_share(m[f'{second}_survival_at_crossing_interval'])}" for m in read]
        lines.append(sentence(
            "Each method read where it is equally accurate on both domains (its accuracy crossing, on the grid t = "
            + ", ".join(f"{x:g}" for x in read[0]["grid"]) + "; the crossing taken at its point estimate), with the "
            "share of each parent's SAE features that survive there: " + "; ".join(parts)))
    if len(read) > 1:
        weaker = {m["method"]: min((m[f"{p}_survival_at_crossing_interval"] for p in (first, second)),
                                   key=lambda record: record["value"]) for m in read}
        best = max(read, key=lambda m: weaker[m["method"]]["value"])
        name = best["method"].replace("_", " ")
        tied = [m["method"].replace("_", " ") for m in read
                if m is not best and intervals_overlap(weaker[best["method"]], weaker[m["method"]])]
        low, high = (f(m["accuracy_at_crossing"] for m in read) for f in (min, max))
        spread = f"accuracies {low:.3f}-{high:.3f}" if f"{low:.3f}" != f"{high:.3f}" else f"accuracy {low:.3f}"
        if tied:
            lines.append(sentence(
                f"{name} keeps the largest share of its weaker parent's features at its crossing "
                f"({_share(weaker[best['method']])}), but that interval overlaps the weaker parent's share under "
                f"{listing(tied)}: at this size we cannot tell which method keeps most (the crossings sit at "
                f"{spread})"))
        else:
            lines.append(sentence(
                f"{name} keeps the most features of both parents at its crossing: its weaker parent keeps "
                f"{_share(weaker[best['method']])}, clear of every other method's weaker parent (the crossings sit at "
                f"{spread}: each method is read at its own balance point, not at one accuracy)"))
    return lines


def dynamics_markdown(data: dict[str, Any]) -> str:
    """Every finding of notebook 08 as Markdown bullet points, from its saved ``data``."""
    groups = [("Along each fine-tune", trajectory_sentences(data)), ("Fine-tune length", length_sentences(data)),
              ("Case-study features", case_sentences(data)), ("Drift against SAE matching", agreement_sentences(data)),
              ("Merge path and methods", merge_sentences(data))]
    return grouped_markdown(groups)
