"""The controls a persistence share is read against: the seed ceiling, the null floors, shared vs independent SAE
seeds, the released sample, and the matching methods side by side (notebook 05)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..core import intervals
from ..core.artifacts import STEP_TABLE, is_complete, manifest, read_benchmarks, record_benchmark, run_dir
from ..core.config import Config
from ..core.registry import NULL_MODEL
from ..data import MATCHING_DOMAINS
from .methods import threshold_curve
from .pairs import METHODS, match_saes, matching_pairs, min_support, sample_domains

# The steps notebook 01 builds on a cold run: the tokenizer, BabyPython's token data, the model and its evaluation.
# Read by name only where the run has no step table (notebooks executed outside ``paper_lib.pipeline``): other
# notebooks build further folders of the same names (token data cut to other lengths), which count too then.
NOTEBOOK_01_STEPS = ("tokenizer", "tokens-babylm-train", "tokens-python-train", "tokens-babylm-validation",
                     "tokens-python-validation", "model-babypython", "eval-babypython")
NOTEBOOK_01 = "01_training"  # its name in the benchmark file's step table
CURVE_THRESHOLDS = np.round(np.arange(0.05, 1.0001, 0.05), 2)


def other_seeding(seeding: str) -> str:
    """The SAE seeding that is not ``seeding`` (each model has one SAE of each: the second seed of its ceiling)."""
    return "shared" if seeding == "independent" else "independent"


def _share(result) -> float:
    return result.counts()["persisting_share"]


def persisting_flags(result) -> np.ndarray:
    """One flag per child feature: True where it persists (``nan``-free; dead features included, as False)."""
    flags = np.zeros(len(result.dead_child), dtype=bool)
    flags[result.persisting] = True
    return flags


def share_interval(result) -> dict[str, Any] | None:
    """The persistence share with its interval: bootstrap over the child's features live on the sample."""
    alive = ~result.dead_child
    if not alive.any():
        return None
    return intervals.share_interval(persisting_flags(result)[alive], unit="live child features")


def fraction_interval(real, ceiling) -> dict[str, Any] | None:
    """Persistence over its seed ceiling, with an interval. Both are shares of the same child SAE's features on
    the same sample (the real pair's child and the ceiling's child are one SAE), so the features are resampled
    together (a paired bootstrap over the child's live features)."""
    alive = ~real.dead_child & ~ceiling.dead_child
    return flags_fraction_interval(persisting_flags(real)[alive], persisting_flags(ceiling)[alive],
                                   "live child features")


def flags_fraction_interval(real_flags, ceiling_flags, unit: str) -> dict[str, Any] | None:
    """The share of ``real_flags`` over the share of ``ceiling_flags``, flags on the same features (resampled
    together: a paired bootstrap over ``unit``); None with no feature or an empty ceiling."""
    a, b = np.asarray(real_flags, dtype=float), np.asarray(ceiling_flags, dtype=float)
    if not len(a) or not b.any():
        return None

    def ratio(x, y):
        return x.mean() / y.mean() if y.any() else float("nan")

    return intervals.bootstrap((a, b), ratio, unit=unit, paired=True)


def _methods(cfg: Config) -> tuple[str, ...]:
    return METHODS if cfg.matching.compare_methods else tuple(m for m in METHODS if m in cfg.matching.modes)


def pair_matches(cfg: Config, parent: str, child: str, method: str) -> dict[str, dict[str, Any]]:
    """Every match behind one pair's controls, by kind, each ``{assignment: MatchResult}`` for the assignments of
    ``pairs.default_assignments``.

    ``real``: the SAEs of ``cfg.sae.init`` on the pair's sample; ``independent`` / ``shared``: both SAEs of that
    seeding; ``ceiling``: the child's other-seed SAE against its own; ``null_model``: the untrained model's SAE
    against the child's; ``permuted``: the real pair with the child's positions shuffled (correlation methods);
    ``released_sample``: the real pair on the released BabyPython sample; ``seed_parent`` / ``seed_child``: the
    real pair with the parent's / the child's other-seed SAE, two more draws of the SAE seeds with no shared
    start (with ``real``, the seed spread of the persistence share).
    """
    main = cfg.sae.init
    domains = sample_domains(cfg, parent, child)
    kinds = {
        "real": match_saes(cfg, parent, child, method, domains),
        other_seeding(main): match_saes(cfg, parent, child, method, domains, other_seeding(main), other_seeding(main)),
        "seed_parent": match_saes(cfg, parent, child, method, domains, other_seeding(main), main),
        "seed_child": match_saes(cfg, parent, child, method, domains, main, other_seeding(main)),
        "ceiling": match_saes(cfg, child, child, method, domains, other_seeding(main), main),
        "null_model": match_saes(cfg, NULL_MODEL, child, method, domains, "independent", main),
        "released_sample": match_saes(cfg, parent, child, method, MATCHING_DOMAINS),
    }
    kinds[main] = kinds["real"]
    if method != "decoder":
        kinds["permuted"] = match_saes(cfg, parent, child, method, domains, permute=True)
    return kinds


def controls_table(cfg: Config) -> pd.DataFrame:
    """One row per pair, method and assignment: the persistence share beside its ceiling and floors.

    ``persisting_share``: share of the child's features active on the pair's sample that some parent feature
    matches (SAEs seeded by ``cfg.sae.init``); ``fraction_of_ceiling``: that over ``ceiling_share`` (the same
    statistic between two seeds of the child); ``floor_null_model_share`` / ``floor_permuted_share``: the same
    statistic against the untrained model's SAE / with the child's positions shuffled (the false-match rate).

    Each share has an ``*_interval`` (95%, bootstrap over the child's live features; Wilson's interval when a
    share is 0 or 1), ``fraction_of_ceiling_interval`` a paired bootstrap, and ``persisting_share_seeds`` /
    ``fraction_of_ceiling_seeds`` the range over three draws of the SAE seeds with no shared start (``real``,
    the parent's other seed, the child's other seed). Shared-start seeds are not draws of the independent
    protocol and are left out of the range. The one-to-one decoder share between two SAEs of one model cannot
    be permuted, and the decoder method has no permutation floor.
    """
    rows = []
    for parent, child in matching_pairs(cfg):
        for method in _methods(cfg):
            kinds = pair_matches(cfg, parent, child, method)
            for assignment in kinds["real"]:  # the assignments computed (pairs.default_assignments)
                share = {kind: _share(found[assignment]) for kind, found in kinds.items()}
                real = kinds["real"][assignment].counts()
                ceiling = share["ceiling"]
                rows.append({
                    "parent": parent, "child": child, "method": method, "assignment": assignment,
                    "sample": "+".join(sample_domains(cfg, parent, child)),
                    "threshold": cfg.matching.threshold, "min_support": min_support(cfg, method),
                    "seeding": cfg.sae.init,
                    "child_live_on_sample": real["n_child"] - real["dead_child"],
                    "persisting_share": share["real"],
                    "independent_init_persisting_share": share["independent"],
                    "shared_init_persisting_share": share["shared"],
                    "ceiling_share": ceiling,
                    "fraction_of_ceiling": share["real"] / ceiling if ceiling else None,
                    "floor_null_model_share": share["null_model"],
                    "floor_permuted_share": share.get("permuted"),
                    "released_sample_persisting_share": share["released_sample"],
                    "same_index_matches": _same_index(kinds["real"][assignment]),
                    "shared_init_same_index_matches": _same_index(kinds["shared"][assignment]),
                    **_row_intervals(kinds, assignment, ceiling),
                })
    return pd.DataFrame(rows)


def _row_intervals(kinds: dict, assignment: str, ceiling) -> dict[str, Any]:
    """The intervals of one controls row (see ``controls_table``)."""
    draws = [_share(kinds[k][assignment]) for k in ("real", "seed_parent", "seed_child")]
    draws = [d for d in draws if d is not None]
    row = {f"{name}_interval": share_interval(kinds[kind][assignment])
           for name, kind in (("persisting_share", "real"), ("ceiling_share", "ceiling"),
                              ("floor_null_model_share", "null_model"), ("floor_permuted_share", "permuted"),
                              ("released_sample_persisting_share", "released_sample"),
                              ("independent_init_persisting_share", "independent"),
                              ("shared_init_persisting_share", "shared")) if kind in kinds}
    row["fraction_of_ceiling_interval"] = fraction_interval(kinds["real"][assignment], kinds["ceiling"][assignment])
    row["persisting_share_seeds"] = intervals.seed_range(draws, unit="draws of the SAE seeds",
                                                         value=draws[0]) if draws else None
    row["fraction_of_ceiling_seeds"] = intervals.seed_range(
        [d / ceiling for d in draws], unit="draws of the SAE seeds", value=draws[0] / ceiling
    ) if draws and ceiling else None
    return row


def model_ceilings(cfg: Config) -> pd.DataFrame:
    """Each family model's seed ceiling on its own text (``REGISTRY.data_domains``): the share of its SAE's
    features (``cfg.sae.init``) that its other-seed SAE matches, per method and assignment."""
    from ..core.registry import REGISTRY

    main, rows = cfg.sae.init, []
    for name in REGISTRY.names:
        domains = REGISTRY.data_domains(name)
        for method in _methods(cfg):
            found = match_saes(cfg, name, name, method, domains, other_seeding(main), main)
            for assignment in found:
                counts = found[assignment].counts()
                rows.append({"model": name, "sample": "+".join(domains), "method": method, "assignment": assignment,
                             "live_on_sample": counts["n_child"] - counts["dead_child"],
                             "ceiling_share": counts["persisting_share"],
                             "ceiling_share_interval": share_interval(found[assignment])})
    return pd.DataFrame(rows)


def _same_index(result) -> int:
    """Persisting child features whose best parent has the same feature id (a trace of a shared initialisation)."""
    persisting = result.persisting
    return int((result.best_parent_for_child[persisting] == persisting).sum())


def threshold_curves(cfg: Config, thresholds=CURVE_THRESHOLDS) -> pd.DataFrame:
    """Persistence against the threshold for every pair, method and kind (real, ceiling, floors), long format.

    Correlation methods are read many-to-many, the decoder method one-to-one (its usual form: SAE Match).
    ``low`` / ``high``: Wilson's 95% score interval of each share over the live child features.
    """
    frames = []
    for parent, child in matching_pairs(cfg):
        for method in _methods(cfg):
            assignment = "one" if method == "decoder" else "many"
            for kind, found in pair_matches(cfg, parent, child, method).items():
                if kind in ("independent", "shared") and kind == cfg.sae.init:
                    continue  # the same match as "real"
                if kind in ("seed_parent", "seed_child"):
                    continue  # seed draws of "real": their spread is in the controls table
                result = found[assignment]
                curve = threshold_curve(result.best_corr_for_child, ~result.dead_child, thresholds)
                # a band for the figure: Wilson's interval at every threshold (the bootstrap over features of a
                # share gives about the same and would cost a second per point)
                bounds = [intervals.wilson_interval(m, n) if n else (np.nan, np.nan)
                          for m, n in zip(curve["matched"], curve["live"])]
                curve["low"], curve["high"] = [b[0] for b in bounds], [b[1] for b in bounds]
                frames.append(curve.assign(pair=f"{parent} -> {child}", method=method, assignment=assignment,
                                           kind=kind))
    return pd.concat(frames, ignore_index=True)


def null_table(cfg: Config) -> pd.DataFrame:
    """Per pair and correlation method: the false-match rate of the permutation null at the threshold with the
    configured guard, and the smallest guard whose rate is at most 1% (measured on that null)."""
    rows = []
    for parent, child in matching_pairs(cfg):
        for method in ("position", "token"):
            found = match_saes(cfg, parent, child, method, sample_domains(cfg, parent, child), permute=True)
            meta = manifest(run_dir(cfg.profile) / found["many"].extra["folder"])["meta"]
            rows.append({
                "parent": parent, "child": child, "method": method, "threshold": cfg.matching.threshold,
                "min_support": min_support(cfg, method),
                "false_match_rate": _share(found["many"]),
                "false_match_rate_one_to_one": _share(found["one"]) if "one" in found else None,
                "false_match_rate_interval": share_interval(found["many"]),
                "recommended_min_support": meta.get("recommended_min_support"),
            })
    return pd.DataFrame(rows)


def guard_table(cfg: Config) -> pd.DataFrame:
    """The permutation null's false-match rate for every guard of the grid, per pair and correlation method."""
    frames = []
    for parent, child in matching_pairs(cfg):
        for method in ("position", "token"):
            found = match_saes(cfg, parent, child, method, sample_domains(cfg, parent, child), permute=True)
            table = pd.read_csv(run_dir(cfg.profile) / found["many"].extra["folder"] / "guard.csv")
            frames.append(table.assign(pair=f"{parent} -> {child}", method=method))
    return pd.concat(frames, ignore_index=True)


def method_disagreements(cfg: Config, parent: str, child: str, n: int = 3) -> pd.DataFrame:
    """Child features that persist by one method and not by another (up to ``n`` per ordered method pair), with
    each method's best score, for the pair's SAEs on its sample."""
    domains = sample_domains(cfg, parent, child)
    results = {}
    for method in _methods(cfg):
        assignment = "one" if method == "decoder" else "many"
        results[method] = match_saes(cfg, parent, child, method, domains)[assignment]
    rows = []
    for a, ra in results.items():
        for b, rb in results.items():
            if a == b:
                continue
            only = np.setdiff1d(ra.persisting, rb.persisting)
            order = np.argsort(-ra.best_corr_for_child[only], kind="stable")[:n]
            for feature in only[order]:
                rows.append({"pair": f"{parent} -> {child}", "persists_by": a, "not_by": b,
                             "child_feature": int(feature),
                             **{f"{m}_best": float(r.best_corr_for_child[feature]) for m, r in results.items()},
                             **{f"{m}_parent": int(r.best_parent_for_child[feature]) for m, r in results.items()}})
    return pd.DataFrame(rows)


def notebook_01_reference(cfg: Config) -> tuple[float, float | None]:
    """What a section's cost is read against: the build seconds of notebook 01's steps in the profile's run folder
    and the wall time of notebook 01's last execution that built steps (None if never run).

    The steps are those the benchmark file's step table (written by ``paper_lib.pipeline``) says notebook 01 built,
    still complete in the folder; without a table, every complete folder named like one of ``NOTEBOOK_01_STEPS``.
    Seconds come from the folders' manifests (the time each took when it was built)."""
    root = run_dir(cfg.profile)
    stored = read_benchmarks(cfg.profile)
    record = stored.get(f"notebook_{NOTEBOOK_01}", {})
    wall = record.get("building_wall_seconds", record.get("wall_seconds"))  # its last execution that built steps
    rows = (stored.get(STEP_TABLE) or {}).get("rows", [])
    built = {row["folder"] for row in rows if row.get("notebook") == NOTEBOOK_01}
    if built:
        base = [root / name for name in sorted(built) if is_complete(root / name)]
    else:
        base = [p for p in root.iterdir()
                if p.is_dir() and is_complete(p) and p.name.rsplit("-", 1)[0] in NOTEBOOK_01_STEPS]
    return sum(manifest(p)["seconds"] for p in base), wall


def section_cost(cfg: Config, folders, prefix: str, benchmark: str) -> dict[str, Any]:
    """The build seconds of a section's step ``folders`` (from their manifests: the time each took when it was
    built), per kind of step, beside notebook 01's steps and its last wall time, written to the benchmark file
    under ``benchmark`` (keys ``<prefix>_seconds``, ``<prefix>_steps``). Compare on a run folder made by one run: a
    step built by an earlier run counts with that run's time."""
    by_kind: dict[str, float] = {}
    for folder in folders:
        kind = folder.name.rsplit("-", 1)[0].split("-")[0]
        by_kind[kind] = by_kind.get(kind, 0.0) + manifest(folder)["seconds"]
    seconds = sum(by_kind.values())
    base_seconds, notebook = notebook_01_reference(cfg)
    values = {
        f"{prefix}_seconds": round(seconds, 1),
        f"{prefix}_steps": len(folders),
        "seconds_by_kind": {k: round(v, 1) for k, v in sorted(by_kind.items())},
        "notebook_01_steps_seconds": round(base_seconds, 1),
        "notebook_01_wall_seconds": notebook,
        "ratio_to_notebook_01_steps": round(seconds / base_seconds, 3) if base_seconds else None,
    }
    record_benchmark(cfg.profile, benchmark, values)
    return values


def controls_cost(cfg: Config) -> dict[str, Any]:
    """Seconds spent on the controls (the other-seed SAEs, the null model and its SAE, every match and activation
    sample of ``pair_matches``) beside those of notebook 01's work (tokenizer, base model, its evaluation), from
    the step manifests (the time each step took when it was built), written to the benchmark file as
    ``matching_controls`` (``section_cost``). Several folders of one step (older code versions) would all count:
    compare on a run folder made by one run."""
    from ..models import model_dir
    from ..saes import sae_dir

    root, other = run_dir(cfg.profile), other_seeding(cfg.sae.init)
    folders = {sae_dir(cfg, n, other).name for n in {c for p in matching_pairs(cfg) for c in p}}
    folders |= {model_dir(cfg, NULL_MODEL).name, sae_dir(cfg, NULL_MODEL, "independent").name}
    for parent, child in matching_pairs(cfg):
        for method in _methods(cfg):
            for found in pair_matches(cfg, parent, child, method).values():
                inputs = manifest(root / found["many"].extra["folder"])["inputs"]
                folders |= {found["many"].extra["folder"], inputs["parent"], inputs["child"]}
    return section_cost(cfg, {root / f for f in folders}, "controls", "matching_controls")
