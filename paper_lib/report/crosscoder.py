"""Notebook 11's findings as sentences, rendered from the JSON it saved (``11_crosscoder``): the crosscoder's classes
per pair beside correlation matching's verdicts, latent scaling of the exclusive latents, and the case-study
features' classes."""

from __future__ import annotations

from typing import Any

from ..core.registry import REGISTRY
from ..case_studies.labels import CONCEPT_LABELS
from .claims import grouped_markdown, listing, percent, r_value, sentence

CLASS_WORDS = {"shared": "shared", "child_only": "child-only", "parent_only": "parent-only", "between": "between",
               "unmapped": "no latent at the threshold"}


def _pair(row: dict) -> str:
    return f"{REGISTRY.label(row['parent'])} → {REGISTRY.label(row['child'])}"


def class_sentences(data: dict[str, Any]) -> list[str]:
    out = []
    for row in data["pairs"]:
        live = sum(row[c] for c in ("shared", "parent_only", "child_only", "between"))
        parts = [f"{row[c]} {CLASS_WORDS[c]}" for c in ("shared", "parent_only", "child_only")]
        who = (f"control, {REGISTRY.label(row['parent'])} against itself (every latent should be shared)"
               if row.get("control") else _pair(row))
        out.append(sentence(f"{who}: of {live} live latents, {listing(parts)} ({row['dead']} dead on the pair's "
                            f"sample); the "
                            f"crosscoder explains {percent(row['parent_explained_variance'])} of the parent's and "
                            f"{percent(row['child_explained_variance'])} of the child's variance at mean L0 "
                            f"{row['mean_l0']:.1f}"))
        for label in ("child_only", "parent_only"):
            nu = row.get(f"{label}_median_nu")
            if nu is not None:
                out.append(sentence(f"its {CLASS_WORDS[label]} latents have median latent-scaling ratio {nu:.2f} "
                                    "(near 0: the other model lacks the direction; near 1: it has it too)"))
    return out


def agreement_sentences(data: dict[str, Any]) -> list[str]:
    out = []
    for row in data["agreement"]:
        if row["agreement_share"] is None:  # a class without a predicted verdict, or none of it mapped
            continue
        mapped = row["latents"] - row["unmapped"]
        out.append(sentence(f"{_pair(row)}: of {mapped} {CLASS_WORDS[row['class']]} latents mapped to an SAE feature, "
                            f"{percent(row['agreement_share'])} are {row['expected_verdict']} by correlation matching"))
    return out


def disagreement_sentences(data: dict[str, Any]) -> list[str]:
    out = []
    shown = data.get("disagreements", {"pair": [], "examples": []})
    for example in shown["examples"]:
        partners = []
        for side, name in zip(("parent", "child"), shown["pair"]):
            feature, label = example[f"{side}_best"], REGISTRY.label(name)
            partners.append(f"its best {label} feature is #{feature} (r = {r_value(example[f'{side}_r'])})"
                            if feature >= 0 else f"no {label} feature correlates with it")
        out.append(sentence(f"latent #{example['latent']}, {CLASS_WORDS[example['class']]} by its relative norm "
                            f"({example['relative_norm']:.2f}), is {example['verdict']} by correlation matching: "
                            f"{listing(partners)}"))
    return out


def case_sentences(data: dict[str, Any]) -> list[str]:
    out = []
    for row in data["case_studies"]:
        concept = CONCEPT_LABELS.get(row["concept"], row["concept"])
        if row["mapped"]:
            verdict = (f"latent #{row['latent']} (r = {r_value(row['r'])}), which the crosscoder calls "
                       f"{CLASS_WORDS[row['class']]} (relative norm {row['relative_norm']:.2f})")
        else:
            verdict = f"no latent at r ≥ {data['threshold']} (best r = {r_value(row['r'])})"
        out.append(sentence(f"BabyPython's {concept} feature #{row['feature']} in the {_pair(row)} crosscoder: {verdict}"))
    return out


def cost_sentences(data: dict[str, Any]) -> list[str]:
    c = data.get("cost") or {}
    if not c.get("ratio_to_notebook_01_steps"):
        return []
    return [sentence(
        f"Notebook 11's {c['crosscoder_steps']} steps (the crosscoders and their latents' partner features) took "
        f"{c['crosscoder_seconds']:.0f} s to build, {c['ratio_to_notebook_01_steps']:.2f} times notebook 01's steps "
        f"({c['notebook_01_steps_seconds']:.0f} s)")]


def crosscoder_markdown(data: dict[str, Any]) -> str:
    """Every finding of notebook 11, grouped, as Markdown."""
    return grouped_markdown([("Shared and exclusive latents", class_sentences(data)),
                             ("Agreement with correlation matching", agreement_sentences(data)),
                             ("Where they disagree (Figure 11b)", disagreement_sentences(data)),
                             ("The case-study features", case_sentences(data)),
                             ("Cost", cost_sentences(data))])
