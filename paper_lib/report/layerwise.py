"""Notebook 09's findings as sentences, rendered from the JSON it saved (``09_layerwise``). The paper studies one
layer; Nadipalli 2025 measures similarity by depth but matches no features. Each finding here carries its own
control (the one-layer model at equal tokens, each layer's seed ceiling and permutation floor, the base carrying
its own features one layer down) and interval."""

from __future__ import annotations

from typing import Any

from ..core import intervals
from ..core.registry import REGISTRY
from .claims import grouped_markdown, listing, sentence


def _f(record) -> str:
    return intervals.formatted(record)


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def trend(first, last) -> str:
    """'falls', 'rises' or 'shows no clear change': whether the last depth's interval lies wholly below or
    above the first one's."""
    if first and last and last["high"] < first["low"]:
        return "falls"
    if first and last and last["low"] > first["high"]:
        return "rises"
    return "shows no clear change"


def _own_similarity(data: dict[str, Any], child: str) -> list[dict]:
    """A fine-tune's similarity rows on its own domain's text, by depth (0: the embedding)."""
    own = REGISTRY.spec(child).domains[0]
    return sorted((r for r in data["similarity"] if r["child"] == child and r["domain"] == own), key=lambda r: r["depth"])


def _persistence(data: dict[str, Any], child: str) -> list[dict]:
    """A fine-tune's persistence rows, by layer."""
    return sorted((r for r in data["persistence"] if r["child"] == child), key=lambda r: r["layer"])


def model_sentences(data: dict[str, Any]) -> list[str]:
    rows = data["models"]
    arch = data["architecture"]
    lines = []
    bases = [r for r in rows if r["comparison"].startswith("deeper base")]
    if bases:
        deep, one = REGISTRY.label(bases[0]["model"]), REGISTRY.label(bases[0]["reference"])
        parts = [f"{r['domain']} {r['accuracy']:.3f} against {r['reference_accuracy']:.3f} (difference "
                 f"{_f(r['difference_interval'])}, paired over validation blocks)" for r in bases]
        wins = [r["domain"] for r in bases if r["difference_interval"]["low"] > 0]
        loses = [r["domain"] for r in bases if r["difference_interval"]["high"] < 0]
        parts_verdict = ([f"beats the one-layer model on {listing(wins)}"] if wins else []) + \
                        ([f"is worse than {'it' if wins else 'the one-layer model'} on {listing(loses)}"] if loses else [])
        verdict = (" and ".join(parts_verdict) if parts_verdict else "cannot be told apart from the one-layer model")
        if len(wins) < len(bases) and not loses and wins:
            verdict += " (the other domains' intervals include no difference)"
        equal = all(r["train_tokens"] == r["reference_train_tokens"] for r in bases)
        lines.append(sentence(
            f"{deep} ({arch['num_hidden_layers']} layers of width {arch['hidden_size']}, MLP "
            f"{arch['intermediate_size']}) after {bases[0]['train_tokens']:,} training tokens"
            f"{' (the same as ' + one + ')' if equal else ' (' + one + ': ' + format(bases[0]['reference_train_tokens'], ',') + ')'}: "
            f"accuracy on " + listing(parts) + f"; it {verdict}"))
    for r in (r for r in rows if r["comparison"].startswith("fine-tune")):
        lines.append(sentence(
            f"{REGISTRY.label(r['model'])} gains {_f(r['difference_interval'])} accuracy on {r['domain']} over "
            f"{REGISTRY.label(r['reference'])} ({r['reference_accuracy']:.3f} to {r['accuracy']:.3f}); the one-layer "
            f"fine-tune gained {_f(r['one_layer_gain_interval'])}"))
    return lines


def similarity_sentences(data: dict[str, Any]) -> list[str]:
    rows = data["similarity"]
    lines = []
    for child in dict.fromkeys(r["child"] for r in rows):
        own = REGISTRY.spec(child).domains[0]
        mine = _own_similarity(data, child)
        if len(mine) < 3:
            continue
        first, last = mine[1], mine[-1]  # after the first layer, and after the last
        lines.append(sentence(
            f"{REGISTRY.label(child)} against its base on {own} text: mean token cosine is {_f(mine[0]['cosine_interval'])} "
            f"at the embedding, {_f(first['cosine_interval'])} after layer 1 and {_f(last['cosine_interval'])} after "
            f"layer {last['depth']}; linear CKA is {_f(first['cka_interval'])} after layer 1 and "
            f"{_f(last['cka_interval'])} after layer {last['depth']}, so CKA {trend(first['cka_interval'], last['cka_interval'])} "
            f"with depth (cosine {trend(first['cosine_interval'], last['cosine_interval'])})"))
    return lines


def persistence_sentences(data: dict[str, Any]) -> list[str]:
    rows = data["persistence"]
    threshold = data["threshold"]
    lines = []
    for child in dict.fromkeys(r["child"] for r in rows):
        mine = _persistence(data, child)
        per_layer = [f"layer {r['depth']}: {_f(r['survival_interval'])} (ceiling {_f(r['ceiling_interval'])}, floor "
                     f"{_number(r['floor_permuted'])})" for r in mine]
        first, last = mine[0], mine[-1]
        text = (f"Share of the base's live SAE features that {REGISTRY.label(child)}'s SAE at the same layer matches at "
                f"r ≥ {threshold} (intervals over the base's features, for one SAE seed per layer): " + "; ".join(per_layer))
        if len(mine) > 1:
            text += (f". As a fraction of each layer's seed ceiling it goes from {_f(first['fraction_of_ceiling_interval'])} "
                     f"at layer 1 to {_f(last['fraction_of_ceiling_interval'])} at layer {last['depth']}: it "
                     f"{trend(first['fraction_of_ceiling_interval'], last['fraction_of_ceiling_interval'])} with depth")
        lines.append(sentence(text))
        moved = [r for r in mine if r.get("survival_same_or_next") is not None]
        if moved:
            parts = [f"layer {r['depth']}: {r['survival']:.3f} to {_f(r['survival_same_or_next_interval'])} (the base "
                     f"itself finds {r['base_carried_next_layer']:.3f} of these features one layer down)" for r in moved]
            lines.append(sentence(
                f"Counting a match one layer down in {REGISTRY.label(child)} as well: " + "; ".join(parts)))
    return lines


def together(a: str, b: str) -> str:
    """Whether two trends ('falls', 'rises', 'shows no clear change') agree: only two clear trends can."""
    clear = ("falls", "rises")
    if a in clear and b in clear:
        return "the two move together" if a == b else "they move in opposite directions"
    return "whether they move together cannot be told from these intervals"


def nadipalli_sentences(data: dict[str, Any]) -> list[str]:
    """Does persistence fall with depth, as similarity does in Nadipalli's BERT? Answered per fine-tune, with
    Nadipalli's own measure (mean token cosine) and CKA both required to show the similarity trend."""
    lines = []
    for child in dict.fromkeys(r["child"] for r in data["persistence"]):
        own = REGISTRY.spec(child).domains[0]
        sim, per = _own_similarity(data, child), _persistence(data, child)
        if len(sim) < 3 or len(per) < 2:
            continue
        cosine = trend(sim[1]["cosine_interval"], sim[-1]["cosine_interval"])
        cka = trend(sim[1]["cka_interval"], sim[-1]["cka_interval"])
        sim_trend = cosine if cosine == cka else "shows no clear change"
        per_trend = trend(per[0]["fraction_of_ceiling_interval"], per[-1]["fraction_of_ceiling_interval"])
        lines.append(sentence(
            f"{REGISTRY.label(child)}: similarity to the base on {own} text (mean token cosine and CKA) {sim_trend} from "
            f"layer 1 to the last, and feature persistence over its ceiling (matched on the pair's sample) {per_trend}: "
            + together(sim_trend, per_trend)))
    return lines


def sae_sentences(data: dict[str, Any]) -> list[str]:
    rows = data["saes"]
    if not rows:
        return []

    def span(key, fmt="{:.3f}"):
        values = [r[key] for r in rows if r.get(key) is not None]
        return f"{fmt.format(min(values))}-{fmt.format(max(values))}" if values else "n/a"

    return [sentence(
        f"The {len(rows)} per-layer SAEs ({rows[0]['d_sae']:,} features on the {data['hook_point']} of each layer): "
        f"L0 {span('l0', '{:.1f}')}, dead share {span('dead_fraction')}, variance explained {span('explained_variance')}, "
        f"reconstruction score {span('reconstruction_score')}")]


def view_sentences(data: dict[str, Any]) -> list[str]:
    views = data["views"]
    parts = []
    for row in views["layers"]:
        matches = ", ".join(f"{REGISTRY.label(m)} #{v['feature']} (r = {v['r']:.2f})" if v["r"] is not None
                            else f"{REGISTRY.label(m)}: none" for m, v in row["matches"].items())
        parts.append(f"layer {row['depth']}: #{row['feature']} ({row['score_name']} {row['score']:.2f}; {matches})")
    return [sentence(f"The base's best {views['concept'].replace('_', ' ')} feature at each layer and its best match in "
                     "each fine-tune: " + "; ".join(parts))]


def layerwise_markdown(data: dict[str, Any]) -> str:
    """Every finding of notebook 09 as Markdown bullet points, from its saved ``data``."""
    groups = [("The deeper family", model_sentences(data)), ("Similarity by depth", similarity_sentences(data)),
              ("Per-layer SAEs", sae_sentences(data)), ("Persistence by depth", persistence_sentences(data)),
              ("Against Nadipalli 2025", nadipalli_sentences(data)), ("One concept at every layer", view_sentences(data))]
    return grouped_markdown(groups)
