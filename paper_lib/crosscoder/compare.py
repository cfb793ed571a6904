"""The crosscoder beside correlation matching: do "shared / parent-only / child-only" latents line up with
"persisting / disappearing / emerging" SAE features?

Each live crosscoder latent is mapped to the parent's and the child's SAE features by Pearson r over the positions of
the pair's matching sample (the statistic and sample of notebook 05's position mode): its best partner on each side
counts where r >= ``matching.threshold``. The correlation method's verdict on a latent is then read from its
partners' classes in the pair's position-mode match: "emerging" for a child partner no parent feature matches,
"disappearing" for a parent partner no child feature matches (and no child partner), "persisting" for a partner
matched across, "unmapped" without any partner. A shared latent should be persisting, a child-only one emerging and
a parent-only one disappearing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..core.artifacts import manifest
from ..core.config import Config
from ..core.registry import REGISTRY
from ..matching.pairs import load_activation_sample, match_pair
from .cost import crosscoder_pairs
from .diff import CLASSES
from .partners import best_partners
from .store import SAMPLE_CODES, crosscoder_dir, latent_table

EXPECTED = {"shared": "persisting", "child_only": "emerging", "parent_only": "disappearing"}
VERDICTS = ("persisting", "emerging", "disappearing", "unmapped")


def latent_verdicts(cfg: Config, parent: str, child: str) -> pd.DataFrame:
    """One row per crosscoder latent: its class, relative norm, best partner and r on each side, and the
    correlation method's verdict (see the module docstring)."""
    table, partners = latent_table(cfg, parent, child), best_partners(cfg, parent, child)
    match = match_pair(cfg, parent, child, "position")
    threshold = cfg.matching.threshold
    persisting_child, persisting_parent = set(match.persisting.tolist()), set(match.persisting_parent.tolist())
    rows = []
    for latent, cls in enumerate(table["classes"]):
        p, c = int(partners["parent_feature"][latent]), int(partners["child_feature"][latent])
        p_ok = p >= 0 and partners["parent_r"][latent] >= threshold
        c_ok = c >= 0 and partners["child_r"][latent] >= threshold
        if c_ok:
            verdict = "persisting" if c in persisting_child else "emerging"
        elif p_ok:
            verdict = "persisting" if p in persisting_parent else "disappearing"
        else:
            verdict = "unmapped"
        rows.append({"latent": latent, "class": str(cls), "relative_norm": float(table["relative_norm"][latent]),
                     "parent_feature": p if p_ok else -1, "parent_r": float(partners["parent_r"][latent]),
                     "child_feature": c if c_ok else -1, "child_r": float(partners["child_r"][latent]),
                     "verdict": verdict})
    return pd.DataFrame(rows)


def disagreements(verdicts: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``latent_verdicts`` where the methods disagree: a shared or exclusive latent, mapped, whose
    verdict is not the one its class predicts."""
    expected = verdicts["class"].map(EXPECTED)
    return verdicts[expected.notna() & (verdicts["verdict"] != "unmapped") & (expected != verdicts["verdict"])]


def disagreement_examples(cfg: Config, parent: str, child: str, per_kind: int = 1) -> list[dict[str, Any]]:
    """Where the methods disagree, on text: for each (class, verdict) of ``disagreements``, the ``per_kind``
    latents with the strongest partner, each on the matching-sample block where it fires most, with its
    activations there and those of its best partner feature in each SAE (whether or not that r reaches the
    threshold). Read from the stored samples, no model is run. Plain data for ``save_results`` and
    ``plots.crosscoder.disagreement_figure``: one dict per example with its row of ``latent_verdicts``, the
    best partners (``parent_best``, ``child_best``), ``block``, ``tokens`` and ``acts`` {"latent", "parent", "child"}."""
    from ..data.vocab import token_strings

    found = disagreements(latent_verdicts(cfg, parent, child))
    if found.empty:
        return []
    found = found.assign(strongest=found[["parent_r", "child_r"]].max(axis=1))
    found = found.sort_values(["class", "verdict", "strongest", "latent"], ascending=[True, True, False, True])
    chosen = found.groupby(["class", "verdict"], sort=True).head(per_kind)
    partners = best_partners(cfg, parent, child)
    codes = sp.load_npz(crosscoder_dir(cfg, parent, child) / SAMPLE_CODES).tocsc()
    domains = REGISTRY.pair_domains(parent, child)
    samples = {side: load_activation_sample(cfg, name, domains) for side, name in (("parent", parent), ("child", child))}
    tokens, width, vocab = samples["parent"][1], cfg.matching.context_size, token_strings(cfg)
    examples = []
    for row in chosen.drop(columns="strongest").to_dict("records"):
        latent = int(row["latent"])
        column = codes[:, latent].toarray().ravel()
        block = int(column.argmax()) // width
        span = slice(block * width, (block + 1) * width)
        acts = {"latent": column[span].tolist()}
        best = {}
        for side in ("parent", "child"):
            feature = int(partners[f"{side}_feature"][latent])
            best[f"{side}_best"] = feature
            acts[side] = (samples[side][0][span][:, feature].toarray().ravel().tolist() if feature >= 0
                          else [0.0] * width)
        examples.append({**row, **best, "block": block, "tokens": [vocab[int(t)] for t in tokens[span]], "acts": acts})
    return examples


def agreement_table(cfg: Config) -> pd.DataFrame:
    """Per pair of ``crosscoder.pairs``, crosscoder class by correlation verdict: counts of live latents, and the
    share of each class's mapped latents whose verdict is the one the class predicts (``EXPECTED``)."""
    rows = []
    for parent, child in cfg.crosscoder.pairs:
        verdicts = latent_verdicts(cfg, parent, child)
        for cls in CLASSES[:-1]:  # live latents only
            group = verdicts[verdicts["class"] == cls]
            counts = {v: int((group["verdict"] == v).sum()) for v in VERDICTS}
            mapped = len(group) - counts["unmapped"]
            agree = counts.get(EXPECTED.get(cls, ""), 0)
            rows.append({"parent": parent, "child": child, "class": cls, "latents": len(group), **counts,
                         "expected_verdict": EXPECTED.get(cls), "agreement_share": agree / mapped
                         if cls in EXPECTED and mapped else None})
    return pd.DataFrame(rows)


def pair_table(cfg: Config) -> pd.DataFrame:
    """Per pair, and the control (``crosscoder.control`` against itself, ``control`` True): latent counts per class,
    mean L0, each model's explained variance by the crosscoder on the pair's matching sample, and by that model's
    own SAE on its SAE's validation blocks (diagnostics; another sample)."""
    from ..saes.evaluate import sae_diagnostics

    rows = []
    for parent, child in crosscoder_pairs(cfg):
        meta = manifest(crosscoder_dir(cfg, parent, child))["meta"]
        table = latent_table(cfg, parent, child)
        row: dict[str, Any] = {"parent": parent, "child": child, "control": parent == child, "d_latents": meta["d_latents"], "k": meta["k"],
                               "train_tokens": meta["train_tokens"], "mean_l0": meta["mean_l0"], **meta["classes"]}
        for side, name in (("parent", parent), ("child", child)):
            row[f"{side}_explained_variance"] = meta["explained_variance"][side]
            row[f"{side}_sae_explained_variance"] = sae_diagnostics(cfg, name).get("explained_variance")
        for label in ("child_only", "parent_only"):
            nu = table.get(f"{label}_nu_reconstruction")
            row[f"{label}_median_nu"] = float(np.median(nu)) if nu is not None and len(nu) else None
        rows.append(row)
    return pd.DataFrame(rows)


def case_study_verdicts(cfg: Config) -> pd.DataFrame:
    """The case-study features of BabyPython's SAE (``case_studies.find_feature``) in every crosscoder pair with
    BabyPython as the parent: the latent that correlates best with the feature, its r and class."""
    from ..case_studies import CONCEPTS, find_feature

    pairs = [(parent, child) for parent, child in cfg.crosscoder.pairs if parent == "babypython"]
    found = {pair: (best_partners(cfg, *pair), latent_table(cfg, *pair)) for pair in pairs}
    rows = []
    for concept in CONCEPTS:
        feature = find_feature(cfg, concept).feature
        for (parent, child), (partners, table) in found.items():
            latent = int(partners["parent_best_latent"][feature])
            r = float(partners["parent_best_latent_r"][feature])
            mapped = latent >= 0 and r >= cfg.matching.threshold
            rows.append({"concept": concept, "parent": parent, "child": child, "feature": int(feature),
                         "latent": latent, "r": r, "mapped": bool(mapped),
                         "class": str(table["classes"][latent]) if mapped else "unmapped",
                         "relative_norm": float(table["relative_norm"][latent]) if latent >= 0 else None})
    return pd.DataFrame(rows)
