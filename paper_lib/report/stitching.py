"""Notebook 10's findings as sentences, rendered from the JSON it saved (``10_stitching``), each beside its control
(each model's own loss, the large model's own SAE and its second seed, native probes and steering vectors, a random
vector, chance) and the stitching paper's number where it reports one (PAPER.md, "Model stitching")."""

from __future__ import annotations

from typing import Any

from ..core import intervals
from ..core.registry import REGISTRY
from .claims import grouped_markdown, intervals_overlap, listing, n_of, percent, sentence

PAPER_STITCHED_EXCESS = (0.11, 0.39)  # stitched loss over the large model's own
PAPER_ROUND_TRIP_EXCESS = 0.01  # the small -> large -> small round trip costs under this
PAPER_ZERO_SHOT_FVU = (0.39, 0.52)  # fraction of variance unexplained by the carried SAE, zero-shot
PAPER_SAVING = (0.30, 0.50)


def _f(record) -> str:
    return intervals.formatted(record)


def _compare(a, b, better: str, worse: str, same: str) -> str:
    """``better`` when interval ``a`` lies wholly above ``b``, ``worse`` wholly below, else ``same``."""
    if not (a and b) or intervals_overlap(a, b):
        return same
    return better if a["low"] > b["high"] else worse


def _inside(value: float, band: tuple[float, float]) -> str:
    if band[0] <= value <= band[1]:
        return "inside"
    return "below" if value < band[0] else "above"


def pairing_sentences(data: dict[str, Any]) -> list[str]:
    p = data["pairing"]
    row = p["cka"][p["small_layer"] + 1][1:]
    others = sorted((c for k, c in enumerate(row) if k != p["large_layer"]), reverse=True)
    runner = f" (the next best layer: {others[0]:.3f})" if others else ""
    return [sentence(
        f"The residual stream after layer {p['small_layer']} of {REGISTRY.label(p['small'])} is closest, by linear CKA "
        f"on {listing(p['domains'])} validation text, to the one after layer {p['large_layer']} of "
        f"{REGISTRY.label(p['large'])}: CKA {p['cka_of_pair']:.3f}{runner}; that pair is stitched")]


def map_sentences(data: dict[str, Any]) -> list[str]:
    m, start = data["maps"]["trained"], data["maps"]["least_squares"]
    return [sentence(
        f"On held-out tokens the up map explains {percent(m['explained_variance_up'])} of the large model's variance "
        f"and the down map {percent(m['explained_variance_down'])} of the small model's; the round trips keep "
        f"{percent(m['explained_variance_small_round_trip'])} (small) and {percent(m['explained_variance_large_round_trip'])} "
        f"(large). The joint training moved these from the least-squares start's {percent(start['explained_variance_up'])}, "
        f"{percent(start['explained_variance_down'])}, {percent(start['explained_variance_small_round_trip'])} and "
        f"{percent(start['explained_variance_large_round_trip'])} (joint held-out loss {start['losses']['loss']:.4g} -> "
        f"{m['losses']['loss']:.4g})")]


def loss_sentences(data: dict[str, Any]) -> list[str]:
    lines = []
    for domain, r in data["losses"].items():
        large, small, stitched, trip = (r[k]["loss"] for k in ("large", "small", "small_to_large", "small_round_trip"))
        excess, trip_excess = stitched / large - 1, trip / small - 1
        vs_small = _compare(r["small_to_large"]["interval"], r["small"]["interval"], "worse than", "better than",
                            "indistinguishable from")
        lines.append(sentence(
            f"On {domain}, the small model run to the stitch and finished by the large one has loss "
            f"{_f(r['small_to_large']['interval'])} nats: {percent(abs(excess))} {'above' if excess >= 0 else 'below'} the "
            f"large model's own "
            f"{large:.3f} ({_inside(excess, PAPER_STITCHED_EXCESS)} the paper's +11% to +39%) and "
            f"{vs_small} the small model's own {small:.3f}. The round trip small -> large -> small costs "
            f"{percent(trip_excess)} over the small model's own loss (the paper: under 1%; ours is "
            f"{'within' if trip_excess < PAPER_ROUND_TRIP_EXCESS else 'beyond'} that)"))
    return lines


def transfer_sentences(data: dict[str, Any]) -> list[str]:
    t = data["transfer"]
    carried, own, small = t["transferred_on_large"], t["large_on_large"], t["small_on_small"]
    fvu = 1 - carried["explained_variance"]
    m, c = t["matches"], t["matches_ceiling"]
    return [
        sentence(
            f"Carried to the large model with no training, the small model's SAE explains "
            f"{_f(carried['explained_variance_interval'])} of the variance (unexplained {fvu:.2f}: "
            f"{_inside(fvu, PAPER_ZERO_SHOT_FVU)} the paper's 0.39-0.52), against {_f(small['explained_variance_interval'])} "
            f"on its own model and {_f(own['explained_variance_interval'])} for the large model's own SAE of the same size; "
            f"a perfect small-model SAE carried through the maps would explain {percent(t['round_trip_explained_variance'])} "
            f"(the round trip large -> small -> large). Its reconstruction score "
            f"is {carried['reconstruction_score']:.3f} (the large model's own SAE: {own['reconstruction_score']:.3f}), "
            f"at L0 {carried['l0']:.1f} (own: {own['l0']:.1f})"),
        sentence(
            f"{n_of(m['matched'], m['live'])} live carried features ({percent(m['matched_share'])}) have a feature of the "
            f"large model's own SAE at r >= {m['threshold']} (median best r {m['best_r_median']:.2f}); the own SAE's "
            f"second seed, the ceiling, has {percent(c['matched_share'])} (median best r {c['best_r_median']:.2f})"),
    ]


def flops_sentences(data: dict[str, Any]) -> list[str]:
    f = data["flops"]
    n = len(f["scratch_steps"])
    reached = f["transfer_runs_reaching_target"]
    lines = [sentence(
        f"Trained to {f['target_explained_variance']:.3f} held-out explained variance ({f['target_fraction']:.2f} of "
        f"the lowest final scratch value), the {n} scratch runs took {listing([str(s) for s in f['scratch_steps']])} steps and the "
        f"runs started from the carried SAE {listing(['never' if s is None else str(s) for s in f['transfer_steps']])} "
        f"(of {f['steps']}; checked every {data['eval_every']} steps)")]
    if f["saving_mean"] is not None:
        low, high = f["saving_range"]
        verdict = "inside" if PAPER_SAVING[0] <= f["saving_mean"] <= PAPER_SAVING[1] else \
            ("below" if f["saving_mean"] < PAPER_SAVING[0] else "above")
        extra = f["saving_with_small_sae_mean"]
        pairs = [(s_, t_) for s_, t_ in zip(f["scratch_steps"], f["transfer_steps"]) if s_ and t_ is not None]
        steps_only = sum(1 - t_ / s_ for s_, t_ in pairs) / len(pairs)
        per_step = f["flops"]["sae_step"] + f["flops"].get("activations_step", 0)
        stitch_share = f["flops"]["stitch"] / (per_step * sum(s_ for s_, _ in pairs) / len(pairs))
        lines.append(sentence(
            f"Counted with FlopCounterMode (each step: the SAE's forward and backward pass and the large model's forward "
            f"pass over its batch), the stitch included, the carried start saves {percent(f['saving_mean'])} of "
            f"the FLOPs to that target (from {percent(low)} to {percent(high)} over {reached} seed pairs; a negative "
            f"share is a cost): {verdict} the paper's 30-50%. The SAE steps alone are {percent(steps_only)} fewer; the "
            f"stitch costs {percent(stitch_share)} of the scratch runs' FLOPs to the target. Charged also with "
            f"training the small model's SAE, the saving is {percent(extra)}"))
    else:
        lines.append(sentence("No run from the carried SAE reached the target, so there is no saving to report"))
    return lines


def probe_sentences(data: dict[str, Any]) -> list[str]:
    lines = []
    for r in data["probes"]["probes"]:
        gap = r["large_transferred"] - r["large_native"]
        lines.append(sentence(
            f"Probe '{r['task']}' ({r['classes']} classes, chance {r['chance']:.2f} balanced accuracy): "
            f"{r['small_native']:.3f} on the small model, {r['large_native']:.3f} trained on the large model, and "
            f"{r['large_transferred']:.3f} for the small model's probe carried down to the large one "
            f"({gap:+.3f} against the native probe)"))
    for r in data["probes"]["steering"]:
        native, carried, rand = (r[k] for k in ("large_native", "large_transferred", "large_random"))
        verdict = _compare(r["large_transferred_interval"], r["large_random_interval"], "more than", "less than",
                           "no more than")
        ratio = f"{carried / native:.2f} of the native vector's shift" if native else "no native shift to compare"
        lines.append(sentence(
            f"Steering {r['source']} text toward {r['target']}: the large model's probability on {r['n_tokens']} "
            f"characteristic {r['target']} tokens moves by {_f(r['large_native_interval'])} with its own vector and "
            f"{_f(r['large_transferred_interval'])} with the small model's vector carried up ({ratio}; the two "
            f"vectors' cosine {r['cosine_transferred_native']:.2f}, norm ratio "
            f"{r['norm_ratio_transferred_native']:.2f}), {verdict} a random vector of the native norm "
            f"({_f(r['large_random_interval'])}); from {r['large_unsteered']:.4f} unsteered"))
    return lines


def finetune_sentences(data: dict[str, Any]) -> list[str]:
    ft = data["finetune"]
    child, parent = ft["child"], ft["parent"]
    lines = []
    for who, rows in ft["text"].items():
        carried, unchanged, own = (rows[k]["explained_variance_interval"] for k in ("carried", "unchanged", "own"))
        verdict = _compare(carried, unchanged, "better than", "worse than", "no different from")
        lines.append(sentence(
            f"On {REGISTRY.label(who)}'s text, layer {ft['layer']} of {REGISTRY.label(child)}: {REGISTRY.label(parent)}'s "
            f"SAE used unchanged explains {_f(unchanged)} of the variance, carried through the affine maps {_f(carried)} "
            f"({verdict} unchanged), and {REGISTRY.label(child)}'s own SAE {_f(own)}; reconstruction scores "
            f"{rows['unchanged']['reconstruction_score']:.3f}, {rows['carried']['reconstruction_score']:.3f} and "
            f"{rows['own']['reconstruction_score']:.3f}"))
    return lines


def cost_sentences(data: dict[str, Any]) -> list[str]:
    c = data["cost"]
    if not c.get("ratio_to_notebook_01_steps"):
        return []
    return [sentence(
        f"Notebook 10's own steps took {c['stitching_seconds']:.0f} s to build, {c['ratio_to_notebook_01_steps']:.2f} "
        f"times notebook 01's steps ({c['notebook_01_steps_seconds']:.0f} s; the deeper family is notebook 09's, reused)")]


def stitching_markdown(data: dict[str, Any]) -> str:
    """Every finding of notebook 10 as Markdown bullet points, from its saved ``data``."""
    groups = [("Layer pairing", pairing_sentences(data)), ("The maps", map_sentences(data)),
              ("Loss through the stitch", loss_sentences(data)), ("SAE transfer", transfer_sentences(data)),
              ("FLOPs saved", flops_sentences(data)), ("Probes and steering", probe_sentences(data)),
              ("Beyond the paper: a base and its fine-tune", finetune_sentences(data)), ("Cost", cost_sentences(data))]
    return grouped_markdown(groups)
