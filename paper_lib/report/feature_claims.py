"""Claims about features (Figure 2 with its controls, Figures 3, 4 and 6), from notebooks 05-07's saved results."""

from __future__ import annotations

from .claims import (
    CANNOT_TELL,
    ClaimSpec,
    Verdict,
    combine,
    count,
    direction_verdict,
    envelope,
    few_verdict,
    is_number,
    listing,
    measured,
    methods_of,
    mostly_verdict,
    n_of,
    percent,
    persistence_verdict,
    r_value,
    sign_verdict,
    statistic_differs,
    telling_digits,
    threshold_verdict,
    with_interval,
)
from .inputs import Figures, NotRun, ReportError
from .model_claims import label

MATCHING = "05_feature_matching"
CONTROL_FIELDS = (
    "parent", "child", "method", "assignment", "persisting_share", "shared_init_persisting_share", "ceiling_share",
    "fraction_of_ceiling", "floor_null_model_share", "floor_permuted_share", "threshold", "min_support",
)
METHODS = ("position", "token", "decoder")
ASSIGNMENTS = {"many": "threshold matches", "one": "one-to-one assignment"}
RELEASED = ("token", "many")  # the released code: mean activation per token string, every pair above threshold
RELEASED_MIN_SUPPORT = 2  # the released code's pearsonr needs two shared token strings
CASES = "06_case_studies"
CASE_FIELDS = ("concept", "model", "feature", "corr", "route", "route_min_corr", "matched", "label_pearson",
               "label_f1", "best_label_feature", "best_label_pearson")


def pair_label(parent: str, child: str | None = None) -> str:
    """``'BabyPython → Lua'`` from two model names, or from one ``'babypython -> lua'`` string."""
    names = parent.split(" -> ") if child is None else [parent, child]
    return " → ".join(label(name) for name in names)


def _controls(figures: Figures) -> list[dict]:
    return figures.records(MATCHING, "controls", fields=CONTROL_FIELDS)


def _floor(row: dict):
    """The higher of the two floors: the stricter null."""
    floors = [row[f] for f in ("floor_null_model_share", "floor_permuted_share") if is_number(row[f])]
    return max(floors) if floors else None


def released_protocol(figures: Figures, spec: ClaimSpec):
    rows = [r for r in _controls(figures) if (r["method"], r["assignment"]) == RELEASED]
    if not rows:
        raise NotRun(f"{MATCHING}.json 'controls' has no {RELEASED[0]}-mode threshold rows")
    labels = [pair_label(r["parent"], r["child"]) for r in rows]
    parts = []
    shared = [measured(r, "shared_init_persisting_share") for r in rows]
    for name, r, share in zip(labels, rows, shared):
        part = f"{name} {with_interval(share, percent)}"
        if is_number(r.get("shared_init_same_index_matches")):
            part += f" ({count(r['shared_init_same_index_matches'])} matched at the parent's own index)"
        independent = (r.get("independent_init_persisting_share_interval")
                       or r.get("independent_init_persisting_share", r["persisting_share"]))
        parts.append(part + f"; with independent seeds {with_interval(independent, percent)}")
    verdict = combine([few_verdict(share) for share in shared], labels)
    support = rows[0]["min_support"]
    context = (f"one SAE seed for every model, token mode at r ≥ {r_value(rows[0]['threshold'])} with at least "
               f"{support} shared token strings"
               + (f" (the released code: {RELEASED_MIN_SUPPORT})" if support != RELEASED_MIN_SUPPORT else ""))
    if rows[0].get("sample"):
        context += f", on each pair's sample ({', '.join(dict.fromkeys(str(r['sample']) for r in rows))})"
    return spec.claim("; ".join(parts), verdict, context, intervals=methods_of(shared))


def _ordered(values, known) -> list[str]:
    """The ``values`` present, the ``known`` ones first in their order, then any others sorted."""
    present = set(values)
    return [v for v in known if v in present] + sorted(present - set(known))


def against_controls(figures: Figures, spec: ClaimSpec):
    rows = _controls(figures)
    claims = []
    for method in _ordered((r["method"] for r in rows), METHODS):
        for assignment in _ordered((r["assignment"] for r in rows), ASSIGNMENTS):
            group = [r for r in rows if r["method"] == method and r["assignment"] == assignment]
            if not group:
                continue
            how = ASSIGNMENTS.get(assignment, f"{assignment} assignment")
            labels = [pair_label(r["parent"], r["child"]) for r in group]
            shares = [measured(r, "persisting_share") for r in group]
            ceilings = [measured(r, "ceiling_share") for r in group]
            # the verdict reads the fraction of the ceiling with the wider of its two uncertainties: the bootstrap
            # over features and the range over draws of the SAE seeds
            fractions = [envelope(r.get("fraction_of_ceiling_interval"), r.get("fraction_of_ceiling_seeds"))
                         or r["fraction_of_ceiling"] for r in group]
            ours = "; ".join(
                f"{name} {with_interval(share, percent)}"
                + (f", seeds {percent(r['persisting_share_seeds']['low'])}–{percent(r['persisting_share_seeds']['high'])}"
                   if r.get("persisting_share_seeds") else "")
                + f" (ceiling {with_interval(ceiling, percent)}, floors "
                f"{with_interval(measured(r, 'floor_null_model_share'), percent)} "
                "untrained model, "
                f"{with_interval(measured(r, 'floor_permuted_share'), percent)} "
                "permuted)"
                for name, r, share, ceiling in zip(labels, group, shares, ceilings))
            verdicts = [persistence_verdict(share, ceiling, _floor(r), fraction)
                        for r, share, ceiling, fraction in zip(group, shares, ceilings, fractions)]
            seeding = f"SAEs seeded {group[0]['seeding']}" if group[0].get("seeding") else "independent SAE seeds"
            context = (f"{seeding}, {method} matching with {how} at threshold "
                       f"{r_value(group[0]['threshold'])}; ceiling: two SAE seeds of the child model; floor: the "
                       "higher of the two nulls; the fraction of the ceiling is read with the wider of its "
                       "bootstrap interval and its range over three draws of the SAE seeds")
            claims.append(spec.claim(ours, combine(verdicts, labels), context, id=f"{spec.id}-{method}-{assignment}",
                                     statement=f"{spec.statement} ({method}, {how})",
                                     intervals=methods_of(shares, ceilings, fractions,
                                                          [r.get("persisting_share_seeds") for r in group],
                                                          [r.get("floor_null_model_share_interval") for r in group],
                                                          [r.get("floor_permuted_share_interval") for r in group])))
    return claims


def formatting_features(figures: Figures, spec: ClaimSpec):
    rows = figures.records(MATCHING, "token_categories", fields=("pair", "group", "mode", "formatting_share",
                                                                 "n_features"))
    claims = []
    for mode in [m for m in METHODS if any(r["mode"] == m for r in rows)]:
        pairs = list(dict.fromkeys(r["pair"] for r in rows if r["mode"] == mode))
        share = {(r["pair"], r["group"]): r for r in rows if r["mode"] == mode}
        parts, verdicts, methods = [], [], []
        for pair in pairs:
            kept, new = share.get((pair, "persisting")), share.get((pair, "emerging"))
            if kept is None:
                raise ReportError(f"{figures.where(MATCHING)}: 'token_categories' has no persisting row for {pair} "
                                  f"({mode})")
            kept_share = measured(kept, "formatting_share")
            part = f"{pair_label(pair)}: {with_interval(kept_share, percent)} of {count(kept['n_features'])} persisting"
            if new:
                new_share = measured(new, "formatting_share")
                part += f" vs {with_interval(new_share, percent)} of {count(new['n_features'])} emerging"
                methods += methods_of(new_share)
            parts.append(part)
            methods += methods_of(kept_share, kept.get("difference_from_emerging_interval"))
            verdicts.append(mostly_verdict(kept_share, new["formatting_share"] if new else None,
                                           group="emerging features",
                                           difference=kept.get("difference_from_emerging_interval")))
        context = ("a feature counts as formatting when its top token string is punctuation, whitespace or "
                   "formatting (a rule, not a reading of the feature)")
        claims.append(spec.claim("; ".join(parts), combine(verdicts, [pair_label(p) for p in pairs]), context,
                                 id=f"{spec.id}-{mode}", statement=f"{spec.statement} ({mode} matching)",
                                 intervals=methods))
    return claims


def _cases(figures: Figures, concept: str) -> tuple[dict, list[dict], float, str]:
    rows = [r for r in figures.records(CASES, "summary", fields=CASE_FIELDS) if r["concept"] == concept]
    if not rows:
        raise NotRun(f"{CASES}.json has no {concept} rows")
    base = next((r for r in rows if "->" not in r["route"]), None)
    if base is None:
        raise ReportError(f"{figures.where(CASES)}: no {concept} row for the model the feature was found in")
    threshold, mode = figures.data(CASES, "threshold"), figures.data(CASES, "mode")
    return base, [r for r in rows if r is not base], threshold, mode


def _found(base: dict) -> str:
    return (f"{label(base['model'])} #{base['feature']} (label r {with_interval(measured(base, 'label_pearson'), r_value)}, "
            f"F1 {with_interval(measured(base, 'label_f1'), r_value)})")


def _case_methods(rows: list[dict]) -> list[str]:
    return methods_of([{k: v for k, v in r.items() if k.endswith("_interval")} for r in rows])


def _feature(row: dict) -> str:
    """``'Lua #183'``, or ``'Lua: no match'`` where the route found none (-1)."""
    found = is_number(row["feature"]) and row["feature"] >= 0
    return f"{label(row['model'])} #{row['feature']}" if found else f"{label(row['model'])}: no match"


def _match(row: dict, threshold: float) -> str:
    hops = row["route"].count("->")
    def shown(r) -> str:
        return with_interval(r, lambda x: r_value(x, telling_digits(x, threshold)))

    via = f" via {listing([label(m) for m in row['route'].split(' -> ')[1:-1]])}" if hops > 1 else ""
    weakest = f", weakest hop {shown(measured(row, 'route_min_corr'))}" if hops > 1 else ""
    return f"{_feature(row)} r = {shown(measured(row, 'corr'))}{via}{weakest}"


def assignment_everywhere(figures: Figures, spec: ClaimSpec):
    base, others, threshold, mode = _cases(figures, "variable_assignment")
    passing = [r for r in others if r["matched"]]
    ours = (f"{_found(base)}; best matches: {'; '.join(_match(r, threshold) for r in others)}; "
            f"{n_of(len(passing), len(others))} pass r ≥ {r_value(threshold)} ({mode} matching)")
    verdicts = [threshold_verdict(measured(r, "route_min_corr"), threshold, True) for r in others]
    context = []
    for r in others:
        if not r["matched"] and is_number(r["best_label_pearson"]):
            context.append(f"best feature for the labels in {label(r['model'])}: #{r['best_label_feature']} "
                           f"(label r {with_interval(measured(r, 'best_label_pearson'), r_value)}; the match's "
                           f"{with_interval(measured(r, 'label_pearson'), r_value)})")
    same = [r for r in others if r["feature"] == base["feature"]]
    if same:
        context.append(f"{n_of(len(same), len(others))} matches carry BabyPython's index #{base['feature']} (equal "
                       "indices are expected where SAEs start from identical weights)")
    verdict = combine(verdicts, [label(r["model"]) for r in others], unit="models")
    return spec.claim(ours, verdict, "; ".join(context), intervals=_case_methods([base, *others]))


def exception_disappears(figures: Figures, spec: ClaimSpec):
    base, others, threshold, mode = _cases(figures, "python_exception")
    lua = next((r for r in others if r["model"] == "lua"), None)
    if lua is None:
        raise NotRun(f"{CASES}.json has no python_exception row for Lua")
    r = with_interval(measured(lua, "corr"), lambda x: r_value(x, telling_digits(x, threshold)))
    ours = f"{_found(base)}; its best match {_feature(lua)} at r = {r} ({mode} matching)"
    context = []
    if is_number(lua["label_pearson"]):
        context.append(f"the Lua match follows the exception labels with r "
                       f"{with_interval(measured(lua, 'label_pearson'), r_value)} against BabyPython's "
                       f"{with_interval(measured(base, 'label_pearson'), r_value)} (F1 "
                       f"{with_interval(measured(lua, 'label_f1'), r_value)} against "
                       f"{with_interval(measured(base, 'label_f1'), r_value)}); best feature for the labels in Lua: "
                       f"#{lua['best_label_feature']} (r {with_interval(measured(lua, 'best_label_pearson'), r_value)})")
    return spec.claim(ours, threshold_verdict(measured(lua, "corr"), threshold, False), "; ".join(context),
                      intervals=_case_methods([base, lua]))


_SIDE = {1: "persisting features are explained better", -1: "persisting features are explained worse",
         0: "cannot tell which group is explained better"}


def _comparison(result: dict | None) -> str:
    """'persisting - Lua: 0.10 [0.01, 0.20] (persisting features are explained better)'."""
    if not result or not result.get("difference"):
        return "too few features scored to compare"
    return f"persisting − Lua mean {with_interval(result['difference'], r_value)} ({_SIDE[result['direction']]})"


def autointerp_groups(figures: Figures, spec: ClaimSpec):
    rows = figures.records("07_autointerp", "summary", fields=("group", "label", "mean", "median", "n", "n_scored",
                                                               "backend", "model"))
    means = [measured(r, "mean") for r in rows]
    ours = "; ".join(f"{r['label']}: mean {with_interval(mean, r_value)}, median {r_value(r['median'])} "
                     f"({n_of(r['n_scored'], r['n'])} scored)" for r, mean in zip(rows, means))
    backends = sorted({r["backend"] for r in rows if r["backend"]})
    models = sorted({r["model"] for r in rows if r["model"]})
    ours += f"; backend {', '.join(backends) or 'none'} ({', '.join(models) or 'no model'})"
    payload = figures.data("07_autointerp")
    comparison, other = payload.get("comparison"), payload.get("other_seed")
    context, methods = [], methods_of(means)
    if comparison:
        ours += f"; {_comparison(comparison)}"
        methods += methods_of(comparison.get("difference"))
        if comparison.get("features_needed"):
            context.append(f"an interval narrower than the measured difference on each side needs about "
                           f"{count(comparison['features_needed'])} scored features per group (scored here: "
                           f"{count(comparison['n_scored']['lua'])} Lua, "
                           f"{count(comparison['n_scored']['luastories_persisting'])} persisting)"
                           + (f", about {comparison['seconds_needed']:.0f} s of scoring at this run's rate"
                              if is_number(comparison.get("seconds_needed")) else ""))
    if comparison and other:
        same = other.get("direction") == comparison.get("direction")
        context.append(f"with every model's other SAE seed ({other.get('seeding')}): {_comparison(other)}, "
                       + ("the same reading" if same else "a different reading: the comparison does not survive a "
                          "change of SAE seed"))
        methods += methods_of(other.get("difference"))
    by_group = {r["group"]: r for r in rows}
    lua, kept = by_group.get("lua"), by_group.get("luastories_persisting")
    if backends == ["offline"]:
        verdict = statistic_differs("the offline backend explains a feature by its characteristic tokens, with no "
                                    "language model; the paper's explainer and simulator are a large language model")
    elif not backends:
        verdict = Verdict(CANNOT_TELL, "no feature was scored")
    elif comparison and comparison.get("difference"):
        verdict = sign_verdict(comparison["difference"], None, "persisting features' mean score above the Lua "
                               "features'")
    else:
        higher = (kept["median"] >= lua["median"] if lua and kept and is_number(kept["median"])
                  and is_number(lua["median"]) else None)
        verdict = direction_verdict(higher, None, "persisting features' median score at least the Lua features'")
    return spec.claim(ours, verdict, "; ".join(context), intervals=methods)


FEATURE_SPECS = (
    ClaimSpec("persistence-released", "05", "Figure 2",
              "very few features persist (the released protocol)",
              "very few (no share recorded); token mode, r ≥ 0.8, one SAE seed for all", released_protocol),
    ClaimSpec("persistence-controls", "05", "Figure 2", "very few features persist, against ceiling and floor",
              "very few (no share recorded), read against two SAE seeds of one model", against_controls),
    ClaimSpec("persisting-formatting", "05", "Figure 2",
              "persisting features are mostly about punctuation, formatting and whitespace",
              "mostly formatting features", formatting_features),
    ClaimSpec("assignment-everywhere", "06", "Figure 3", "a variable-assignment feature is found in all four models",
              "present in all four models", assignment_everywhere),
    ClaimSpec("exception-disappears", "06", "Figure 4",
              "the Python-exception feature disappears through Lua fine-tuning",
              "its closest Lua match is too weak (below r = 0.8)", exception_disappears),
    ClaimSpec("autointerp", "07", "Figure 6", "explanation scores of Lua features and of persisting Lua features in "
              "LuaStories", "two histograms (no number or direction recorded)", autointerp_groups),
)
