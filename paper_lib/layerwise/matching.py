"""Per-layer SAEs of the deeper family and per-layer feature matching, with each layer's seed ceiling and floor.

Every layer's SAEs and matches are the one-layer sections' own steps (``saes.sae_dir``, ``matching.match_saes``)
run on ``family.layer_config``: the controls issue's method (position mode with its support guard, on the
pair's sample of both models' text) and thresholds. Persistence is read from the base's side: the share of the
base's live features at a layer that some fine-tune feature matches (``parent_persisting_share``). Its ceiling
is the same statistic between the base's two SAE seeds at that layer (the base's independent SAE against its
shared-seed one, on the same sample); its floor the same statistic with the fine-tune's positions shuffled (the
permutation null's false-match rate). Each fine-tune's ceiling is read on its own pair's sample (the base's two
seeds on the same text as the real pair), so the two fine-tunes have a ceiling each at every layer.

Across layers: the base at layer l against the fine-tune at layer l + 1, so a feature that moved one layer down
is not counted as lost; beside it the base against itself one layer down, since the residual stream carries
features from layer to layer in any model (a match across layers is read against that reference).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core import intervals
from ..core.artifacts import cached_step
from ..core.config import Config
from ..matching.classify import MatchResult, classify
from ..matching.controls import flags_fraction_interval, other_seeding, persisting_flags
from ..matching.pairs import (
    _ARRAYS, _load_result, _vocab_size, activation_sample_dir, correlate_samples, load_activation_sample, match_saes,
    min_support, sample_domains,
)
from ..saes import sae_dir
from ..saes.evaluate import diagnostics_table
from .family import base, fine_tunes, layer_config, layers

METHOD = "position"  # the controls issue's method: Pearson r over positions, with its support guard
MANY = ("many",)  # every reading here is many-to-many: no one-to-one assignment is computed


def layer_sae_dir(cfg: Config, name: str, layer: int, seeding: str | None = None) -> Path:
    """The SAE of one model of the deeper family at one layer (trained on first use)."""
    return sae_dir(layer_config(cfg, layer), name, seeding)


def _domains(cfg: Config, child: str) -> tuple[str, ...]:
    return sample_domains(cfg, base(), child)


def same_layer(cfg: Config, child: str, layer: int, permute: bool = False) -> MatchResult:
    """The base's SAE at ``layer`` against the fine-tune's at the same layer (many-to-many)."""
    lc = layer_config(cfg, layer)
    return match_saes(lc, base(), child, METHOD, _domains(cfg, child), permute=permute, assignments=MANY)["many"]


def ceiling(cfg: Config, child: str, layer: int) -> MatchResult:
    """The base's other-seed SAE against its own SAE at ``layer``, on the pair's sample: the base's features
    (the child side of this match) that a second seed of the same model finds."""
    lc = layer_config(cfg, layer)
    main = cfg.sae.init
    return match_saes(lc, base(), base(), METHOD, _domains(cfg, child), other_seeding(main), main,
                      assignments=MANY)["many"]


def cross_layer(cfg: Config, parent: str, child: str, layer: int, child_layer: int,
                domains: tuple[str, ...]) -> MatchResult:
    """``parent``'s SAE at ``layer`` against ``child``'s at ``child_layer`` on the validation sample of
    ``domains`` (cached step ``layerwise-cross-<parent>-<child>``; many-to-many).

    ``match_saes`` reads both SAEs through one configuration, so it cannot pair two layers; this reads the two
    cached activation samples and classifies their correlations the same way.
    """
    domains = tuple(domains)
    pc, cc = layer_config(cfg, layer), layer_config(cfg, child_layer)
    parent_dir, child_dir = activation_sample_dir(pc, parent, domains), activation_sample_dir(cc, child, domains)
    guard, threshold = min_support(cfg, METHOD), cfg.matching.threshold
    inputs = {"parent": parent_dir.name, "child": child_dir.name, "method": METHOD, "threshold": threshold,
              "min_support": guard}

    def build(out: Path) -> dict:
        x, tokens = load_activation_sample(pc, parent, domains)
        y, child_tokens = load_activation_sample(cc, child, domains)
        if not np.array_equal(tokens, child_tokens):
            raise ValueError(f"the activation samples of {parent} and {child} are not on the same tokens")
        dead_p = np.bincount(x.indices, minlength=x.shape[1]) == 0
        dead_c = np.bincount(y.indices, minlength=y.shape[1]) == 0
        score, _ = correlate_samples(x, y, tokens, METHOD, _vocab_size(cfg, tokens), guard,
                                     desc=f"{parent} L{layer} -> {child} L{child_layer}")
        meta: dict[str, Any] = {"n_positions": int(x.shape[0])}
        for assignment in MANY:
            result = classify(score, dead_p, dead_c, threshold, parent, child, METHOD, x.shape[0], assignment=assignment)
            np.savez(out / f"{assignment}.npz", **{k: getattr(result, k) for k in _ARRAYS})
            result.pairs.to_csv(out / f"{assignment}_pairs.csv", index=False)
            meta[assignment] = result.counts()
        return meta

    code = ["paper_lib.matching.correlate", "paper_lib.matching.classify", "paper_lib.matching.kernels",
            "paper_lib.matching.methods", "paper_lib.matching.pairs"]
    path = cached_step(cfg.profile, f"layerwise-cross-{parent}-{child}", inputs, build, code=code)
    return _load_result(path, "many", parent, child, METHOD, threshold)


def survival_flags(result: MatchResult) -> np.ndarray:
    """One flag per parent feature: True where some child feature matches it."""
    flags = np.zeros(len(result.dead_parent), dtype=bool)
    flags[result.persisting_parent] = True
    return flags


def _share(flags: np.ndarray, alive: np.ndarray) -> float | None:
    return float(flags[alive].mean()) if alive.any() else None


def _share_interval(flags: np.ndarray, alive: np.ndarray) -> dict[str, Any] | None:
    return intervals.share_interval(flags[alive], unit="live base features") if alive.any() else None


def persistence_table(cfg: Config) -> pd.DataFrame:
    """One row per fine-tune and layer: the base's features that survive at that layer (raw, as a fraction of
    the layer's seed ceiling, and the permutation floor), the child side's persisting / emerging shares, and the
    across-layer reading (base layer l against the fine-tune's layer l + 1; and the base against itself there).

    Shares are of features live on the pair's sample, with 95% intervals (bootstrap over live base features;
    Wilson's interval at 0 or 1).
    """
    rows = []
    last = layers(cfg)[-1]
    for child in fine_tunes():
        for layer in layers(cfg):
            real, top, null = same_layer(cfg, child, layer), ceiling(cfg, child, layer), same_layer(cfg, child, layer, True)
            alive = ~real.dead_parent & ~top.dead_child
            flags, top_flags = survival_flags(real), persisting_flags(top)  # the ceiling's child: the base's SAE
            counts = real.counts()
            row = {
                "child": child, "layer": layer, "depth": layer + 1,
                "base_live": int(alive.sum()),
                "survival": _share(flags, alive),
                "survival_interval": _share_interval(flags, alive),
                "ceiling": _share(top_flags, alive),
                "ceiling_interval": _share_interval(top_flags, alive),
                "fraction_of_ceiling_interval": flags_fraction_interval(flags[alive], top_flags[alive],
                                                                        "live base features"),
                "floor_permuted": null.counts()["parent_persisting_share"],
                "persisting_share": counts["persisting_share"], "emerging_share": counts["emerging_share"],
                "disappearing_share": counts["disappearing_share"],
                "child_live": counts["n_child"] - counts["dead_child"],
            }
            frac = row["fraction_of_ceiling_interval"]
            row["fraction_of_ceiling"] = frac["value"] if frac else None
            if layer < last:
                down = cross_layer(cfg, base(), child, layer, layer + 1, _domains(cfg, child))
                carried = cross_layer(cfg, base(), base(), layer, layer + 1, _domains(cfg, child))
                either = flags | survival_flags(down)
                row.update({
                    "survival_next_layer": _share(survival_flags(down), alive),
                    "survival_same_or_next": _share(either, alive),
                    "survival_same_or_next_interval": _share_interval(either, alive),
                    "base_carried_next_layer": _share(survival_flags(carried), alive),
                })
            rows.append(row)
    return pd.DataFrame(rows)


def sae_table(cfg: Config) -> pd.DataFrame:
    """Diagnostics of every per-layer SAE (L0, dead share, variance explained, reconstruction score, timing):
    each model's SAE of ``sae.init`` and the base's second seed (its ceiling)."""
    frames = []
    other = other_seeding(cfg.sae.init)
    for layer in layers(cfg):
        lc = layer_config(cfg, layer)
        for names, seeding in (((base(), *fine_tunes()), None), ((base(),), other)):
            frame = diagnostics_table(lc, names, seeding)
            frames.append(frame.assign(layer=layer, depth=layer + 1, hook=lc.sae.hook_name))
    return pd.concat(frames, ignore_index=True)
