"""Layer-wise evolution (notebook 09): the deeper family, per-layer similarity, per-layer SAEs and matching."""

from __future__ import annotations

import json

import numpy as np
import pytest

from paper_lib.core.config import ConfigError, load_config
from paper_lib.core.registry import REGISTRY, ModelSpec, Registry, RegistryError


def test_deeper_family_stays_out_of_the_paper_family():
    deep = REGISTRY.family("layerwise")
    assert deep == ("babypython_deep", "lua_deep", "tinystories_deep")
    assert not set(deep) & set(REGISTRY.names)
    assert all(n in REGISTRY.names for pair in REGISTRY.edges() for n in pair)
    assert REGISTRY.edges(deep) == [("babypython_deep", "lua_deep"), ("babypython_deep", "tinystories_deep")]
    assert set(REGISTRY.routes_from("babypython_deep")) == {"lua_deep", "tinystories_deep"}
    with pytest.raises(RegistryError, match="unknown family"):
        REGISTRY.family("wide")
    with pytest.raises(RegistryError, match="another family"):
        Registry([ModelSpec("a", "A", "pretrain", domains=("python",)),
                  ModelSpec("b", "B", "finetune", parents=("a",), domains=("lua",), family="other")])


def test_profile_reshapes_the_deeper_family_only(smoke_cfg):
    from paper_lib.models.store import architecture

    assert architecture(smoke_cfg, "babypython") == {}
    deep = architecture(smoke_cfg, "lua_deep")  # a fine-tune inherits its root's shape
    assert deep["num_hidden_layers"] == 2 and deep["hidden_size"] == 32
    assert architecture(load_config("paper"), "babypython_deep") == {"num_hidden_layers": 4}


def test_layerwise_config_names_bad_settings():
    with pytest.raises(ConfigError, match="hook comes from"):
        load_config("smoke", {"layerwise": {"sae": {"hook_name": "blocks.1.hook_resid_post"}}})
    with pytest.raises(ConfigError, match="unknown model setting"):
        load_config("smoke", {"layerwise": {"architecture": {"n_layers": 4}}})
    with pytest.raises(ConfigError, match="divisible"):
        load_config("smoke", {"layerwise": {"architecture": {"hidden_size": 33}}})


def test_linear_cka_is_one_under_rotation_and_scale_and_low_for_unrelated_activations():
    from paper_lib.layerwise.similarity import CKA_KEYS, block_sums, cka_from_sums, linear_cka, mean_cosine

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 16)) @ rng.normal(size=(16, 16))
    rotation, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    assert linear_cka(x, 3.0 * x @ rotation) == pytest.approx(1.0, abs=1e-9)
    assert mean_cosine(x, 3.0 * x) == pytest.approx(1.0, abs=1e-12)
    assert mean_cosine(x, x @ rotation) < 0.9  # the cosine sees the rotation, CKA does not
    assert linear_cka(x, rng.normal(size=(2000, 16))) < 0.05
    # the streamed sums over blocks (with tokens left out) give the CKA of the kept tokens
    y = x @ rng.normal(size=(16, 16)) + rng.normal(size=(2000, 16))
    keep = rng.random((20, 100)) > 0.1
    sums = block_sums(x.reshape(20, 100, 16), y.reshape(20, 100, 16), keep)
    streamed = cka_from_sums(*(sums[k] for k in CKA_KEYS))
    assert streamed == pytest.approx(linear_cka(x[keep.ravel()], y[keep.ravel()]), rel=1e-9)
    # streams of different widths (stitching's small and large models): CKA only, no cosine
    wide = np.concatenate([y, rng.normal(size=(2000, 8))], axis=1)
    sums = block_sums(x.reshape(20, 100, 16), wide.reshape(20, 100, 24), keep)
    assert "cos" not in sums
    streamed = cka_from_sums(*(sums[k] for k in CKA_KEYS))
    assert streamed == pytest.approx(linear_cka(x[keep.ravel()], wide[keep.ravel()]), rel=1e-9)


def test_cka_and_cosine_of_a_model_with_itself_are_one_at_every_layer(smoke_cfg):
    from paper_lib.core.artifacts import read_json
    from paper_lib.layerwise import base, n_layers, similarity_dir

    rows = read_json(similarity_dir(smoke_cfg, base(), parent=base()) / "similarity.json")
    assert sorted({r["depth"] for r in rows}) == list(range(n_layers(smoke_cfg) + 1))
    for row in rows:
        assert row["cka"] == pytest.approx(1.0, abs=1e-9) and row["cosine"] == pytest.approx(1.0, abs=1e-6)


def test_each_layer_sae_reads_its_own_hook_under_a_scale_matched_coefficient(smoke_cfg):
    from paper_lib.layerwise import activation_scale, layer_config, layers

    scale = activation_scale(smoke_cfg)
    assert len(scale) == len(layers(smoke_cfg)) and all(s > 0 for s in scale)
    for layer in layers(smoke_cfg):
        lc = layer_config(smoke_cfg, layer)
        assert lc.sae.hook_name == f"blocks.{layer}.hook_resid_post"
        assert lc.sae.l1_coefficient == {"default": pytest.approx(smoke_cfg.layerwise.l1_per_rms * scale[layer], rel=1e-5)}
        assert lc.model == smoke_cfg.model and lc.data == smoke_cfg.data  # the models are the same ones
    with pytest.raises(ValueError, match="outside the deeper family"):
        layer_config(smoke_cfg, len(layers(smoke_cfg)))


def test_an_sae_matched_to_itself_across_the_cross_layer_path_keeps_every_live_feature(smoke_cfg):
    from paper_lib.layerwise import base, cross_layer, fine_tunes
    from paper_lib.matching.pairs import sample_domains

    domains = sample_domains(smoke_cfg, base(), fine_tunes()[0])
    found = cross_layer(smoke_cfg, base(), base(), 0, 0, domains)
    live = np.flatnonzero(~found.dead_parent)
    assert len(live) > 0 and np.array_equal(found.persisting_parent, live)


def test_persistence_rows_read_against_their_ceiling_and_floor(smoke_cfg):
    from paper_lib.layerwise import fine_tunes, layers, persistence_table

    from paper_lib.layerwise import ceiling, same_layer

    # the ceiling is read on the base's own SAE: the child side of the base-against-itself match, on the same sample
    real, top = same_layer(smoke_cfg, fine_tunes()[0], 0), ceiling(smoke_cfg, fine_tunes()[0], 0)
    assert np.array_equal(top.dead_child, real.dead_parent)
    table = persistence_table(smoke_cfg)
    assert len(table) == len(fine_tunes()) * len(layers(smoke_cfg))
    for row in table.to_dict("records"):
        assert 0 <= row["survival"] <= 1 and 0 <= row["ceiling"] <= 1
        assert row["fraction_of_ceiling"] == pytest.approx(row["survival"] / row["ceiling"])
        assert row["floor_permuted"] < row["ceiling"]
        if row["layer"] < layers(smoke_cfg)[-1]:
            assert row["survival_same_or_next"] >= row["survival"]


def _step(root, name, inputs):
    """A finished step folder: just its manifest, with the inputs the cost helpers follow."""
    (root / name).mkdir()
    (root / name / "manifest.json").write_text(json.dumps({"inputs": inputs, "seconds": 1.0}))


def test_downstream_folders_follow_manifest_inputs_to_a_fixed_point(tmp_path):
    from paper_lib.layerwise import downstream_folders

    _step(tmp_path, "model-a-1", {})
    _step(tmp_path, "sae-a-2", {"model": "model-a-1"})
    _step(tmp_path, "match-3", {"parent": "sae-a-2"})
    _step(tmp_path, "model-b-4", {})
    _step(tmp_path, "sae-b-5", {"model": "model-b-4"})
    found = {p.name for p in downstream_folders(tmp_path, {"model-a-1"})}
    assert found == {"model-a-1", "sae-a-2", "match-3"}


def test_notebook_09_cost_leaves_out_the_stitching_steps_made_from_its_models(tmp_path, monkeypatch, smoke_cfg):
    """Notebook 10 reuses the deeper family: its steps are made from notebook 09's models but are not notebook 09's,
    so re-executing notebook 09 after notebook 10 counts the same steps as its first run."""
    from paper_lib.layerwise import cost, layerwise_folders

    monkeypatch.setattr(cost, "model_dir", lambda cfg, name: tmp_path / f"model-{name}-1")  # no model is trained
    model = "model-babypython_deep-1"
    _step(tmp_path, model, {})
    _step(tmp_path, "sae-babypython_deep-2", {"model": model})
    _step(tmp_path, "stitch-maps-babypython_small-babypython_deep-3", {"large": model})
    _step(tmp_path, "stitch-transfer-4", {"maps": "stitch-maps-babypython_small-babypython_deep-3", "large_sae": "sae-babypython_deep-2"})
    monkeypatch.setattr(cost, "run_dir", lambda profile: tmp_path)
    assert {p.name for p in layerwise_folders(smoke_cfg)} == {model, "sae-babypython_deep-2"}


def test_trend_needs_intervals_apart():
    from paper_lib.report.layerwise import trend

    def rec(v, lo, hi):
        return {"value": v, "low": lo, "high": hi}

    assert trend(rec(0.9, 0.85, 0.95), rec(0.5, 0.4, 0.6)) == "falls"
    assert trend(rec(0.5, 0.4, 0.6), rec(0.9, 0.85, 0.95)) == "rises"
    assert trend(rec(0.9, 0.7, 0.95), rec(0.8, 0.6, 0.9)) == "shows no clear change"
