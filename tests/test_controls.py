"""The matching controls: SAE seeds, the null model, pair samples, and the controls table on the smoke models."""

from __future__ import annotations

import numpy as np
import pytest

from paper_lib.core.config import load_config
from paper_lib.core.registry import DOMAINS, NULL_MODEL, REGISTRY
from paper_lib.saes.store import _sae_inputs, sae_seed


def test_the_null_model_is_a_control_outside_the_family():
    assert NULL_MODEL in REGISTRY and NULL_MODEL in REGISTRY.controls
    assert NULL_MODEL not in REGISTRY.names and NULL_MODEL not in REGISTRY.labels
    assert all(NULL_MODEL not in edge for edge in REGISTRY.edges())
    spec = REGISTRY.spec(NULL_MODEL)
    assert spec.recipe == "init" and not spec.parents and REGISTRY.sae_domains(NULL_MODEL) == DOMAINS


def test_pair_samples_hold_both_models_text():
    assert REGISTRY.data_domains("luastories") == ("lua", "tinystories")
    assert REGISTRY.pair_domains("babypython", "lua") == ("babylm", "python", "lua")
    assert REGISTRY.pair_domains("babypython", "tinystories") == ("babylm", "python", "tinystories")
    # both merge pairs are matched on one sample
    assert REGISTRY.pair_domains("lua", "luastories") == REGISTRY.pair_domains("tinystories", "luastories")


def test_sae_seeds(smoke_cfg):
    names = [*REGISTRY.names, NULL_MODEL]
    shared = {sae_seed(smoke_cfg, n, "shared") for n in names}
    independent = [sae_seed(smoke_cfg, n, "independent") for n in names]
    assert shared == {smoke_cfg.seed}  # the released protocol: one seed for every SAE
    assert len(set(independent)) == len(names) and smoke_cfg.seed not in independent
    assert sae_seed(smoke_cfg, "lua") == sae_seed(smoke_cfg, "lua", "independent")  # the default
    released = load_config("smoke", {"sae.init": "shared"})
    assert sae_seed(released, "lua") == released.seed
    assert sae_seed(load_config("smoke", {"seed": 1}), "lua") != sae_seed(smoke_cfg, "lua")
    with pytest.raises(ValueError, match="seeding must be one of"):
        sae_seed(smoke_cfg, "lua", "same")
    from pathlib import Path

    folder = Path("model-lua-0")
    assert _sae_inputs(smoke_cfg, "lua", folder, "independent") != _sae_inputs(smoke_cfg, "lua", folder, "shared")
    # the switch picks which SAE is the default, it does not change what each seeding is
    assert _sae_inputs(released, "lua", folder, "independent") == _sae_inputs(smoke_cfg, "lua", folder, "independent")


def test_the_untrained_model_learned_nothing(smoke_cfg):
    import torch

    from paper_lib import models
    from paper_lib.models.init import initial_seed

    assert initial_seed(smoke_cfg, REGISTRY.spec(NULL_MODEL)) != smoke_cfg.seed
    null = models.load_lm(smoke_cfg, NULL_MODEL)
    base = models.load_lm(smoke_cfg, "babypython")
    assert models.training_history(smoke_cfg, NULL_MODEL).empty
    name = "model.layers.0.mlp.up_proj.weight"
    a, b = dict(null.named_parameters())[name], dict(base.named_parameters())[name]
    assert a.shape == b.shape and not torch.allclose(a, b)


@pytest.mark.parametrize("method", ["position", "token", "decoder"])
def test_one_sae_against_itself_persists_entirely(smoke_cfg, method):
    """Sanity: one SAE matched against itself under two names: every live feature persists, r = 1 on the
    diagonal, and the one-to-one assignment is the identity."""
    from paper_lib.matching.pairs import match_saes, sample_domains

    domains = sample_domains(smoke_cfg, "babypython", "lua")
    found = match_saes(smoke_cfg, "lua", "lua", method, domains, "independent", "independent")
    for assignment, result in found.items():
        live = np.flatnonzero(~result.dead_child)
        assert result.counts()["persisting_share"] == 1.0, assignment
        np.testing.assert_allclose(result.best_corr_for_child[live], 1.0, atol=1e-5)
    one = found["one"]
    live = np.flatnonzero(~one.dead_child)
    np.testing.assert_array_equal(one.best_parent_for_child[live], live)


def test_the_controls_table_on_smoke(smoke_cfg):
    from paper_lib.matching import controls
    from paper_lib.matching.pairs import match_pair

    table = controls.controls_table(smoke_cfg)
    assert len(table) == len(REGISTRY.edges()) * 3 * 2  # pairs x methods x assignments
    shares = ["persisting_share", "ceiling_share", "floor_null_model_share", "shared_init_persisting_share",
              "released_sample_persisting_share"]
    assert table[shares].notna().all().all() and ((table[shares] >= 0) & (table[shares] <= 1)).all().all()
    # two seeds of one model do not agree on every feature
    assert (table["ceiling_share"] < 1).all()
    correlation = table[table["method"] != "decoder"]
    assert correlation["floor_permuted_share"].between(0, 1).all()
    assert table.loc[table["method"] == "decoder", "floor_permuted_share"].isna().all()
    ok = table["ceiling_share"] > 0
    np.testing.assert_allclose(table.loc[ok, "fraction_of_ceiling"],
                               table.loc[ok, "persisting_share"] / table.loc[ok, "ceiling_share"])
    # the family's matches are on the pair's sample
    result = match_pair(smoke_cfg, "lua", "luastories", "position")
    real = table[(table["child"] == "luastories") & (table["parent"] == "lua") & (table["method"] == "position")
                 & (table["assignment"] == "many")]
    assert real["persisting_share"].item() == result.counts()["persisting_share"]
    assert real["sample"].item() == "lua+tinystories"
    curves = controls.threshold_curves(smoke_cfg)
    assert {"real", "ceiling", "null_model", "permuted", "shared"} <= set(curves["kind"])
    # persistence can only fall as the threshold rises
    for _, curve in curves.groupby(["pair", "method", "kind"]):
        assert (np.diff(curve.sort_values("threshold")["share"].to_numpy()) <= 1e-12).all()
    null = controls.null_table(smoke_cfg)
    assert null["false_match_rate"].between(0, 1).all() and null["recommended_min_support"].notna().all()
    cost = controls.controls_cost(smoke_cfg)
    assert cost["controls_seconds"] > 0 and cost["notebook_01_steps_seconds"] > 0


def test_each_model_has_a_seed_ceiling_on_its_own_text(smoke_cfg):
    from paper_lib.matching import controls

    ceilings = controls.model_ceilings(smoke_cfg)
    assert set(ceilings["model"]) == set(REGISTRY.names) and len(ceilings) == len(REGISTRY.names) * 3 * 2
    assert ceilings["ceiling_share"].between(0, 1).all() and (ceilings["ceiling_share"] < 1).all()
    assert ceilings.loc[ceilings["model"] == "luastories", "sample"].unique().tolist() == ["lua+tinystories"]


def test_without_compare_methods_no_one_to_one_assignment_runs(smoke_cfg, monkeypatch):
    """``matching.compare_methods`` off: matches and the controls tables are many-to-many only, and the one-to-one
    assignment (minutes per 16,384 x 16,384 match) is never computed; the decoder method still reads one-to-one."""
    import importlib

    from paper_lib.matching import controls
    from paper_lib.matching.pairs import default_assignments, match_saes, sample_domains

    cfg = smoke_cfg.model_copy(update={"matching": smoke_cfg.matching.model_copy(update={"compare_methods": False})})
    assert default_assignments(cfg, "position") == ("many",) and default_assignments(cfg, "decoder") == ("many", "one")
    assert default_assignments(smoke_cfg, "token") == ("many", "one")

    def refuse(*args, **kwargs):
        raise AssertionError("a one-to-one assignment was computed")

    # the module (the package exports a function of the same name)
    monkeypatch.setattr(importlib.import_module("paper_lib.matching.classify"), "_assigned_pairs", refuse)
    domains = sample_domains(cfg, "babypython", "lua")
    found = match_saes(cfg, "babypython", "lua", "position", domains)
    assert list(found) == ["many"]
    full = match_saes(smoke_cfg, "babypython", "lua", "position", domains, assignments=("many",))
    assert full["many"].extra["folder"] == found["many"].extra["folder"]  # one step for the same assignments
    table = controls.controls_table(cfg)
    assert set(table["assignment"]) == {"many"} and set(table["method"]) == set(cfg.matching.modes)
    assert len(table) == len(REGISTRY.edges()) * len(cfg.matching.modes)
    assert controls.null_table(cfg)["false_match_rate_one_to_one"].isna().all()
    with pytest.raises(ValueError, match="assignments must be some of"):
        match_saes(cfg, "babypython", "lua", "position", domains, assignments=("all",))
