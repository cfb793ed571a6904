"""Merging: SLERP geometry, exact endpoints, equality with mergekit's own run_merge, the LuaStories artifact."""

from __future__ import annotations

import math

import pytest
import torch

from paper_lib import models
from paper_lib.models import MergeError, linear_tensor, merge_state_dicts, slerp_tensor, tensor_geometry


def _pair(model):
    """Two tiny models from one parent, like two fine-tunes: a small update each, norms left at 1 (parallel)."""
    import copy

    base = model
    other = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for (name, p0), p1 in zip(base.named_parameters(), other.parameters()):
            if p0.ndim > 1:  # matrices move apart (angles of a few degrees); RMSNorm weights stay all ones
                p0.add_(0.02 * torch.randn(p0.shape, generator=generator))
                p1.add_(0.05 * torch.randn(p1.shape, generator=generator))
    return base.eval(), other.eval()


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture
def checkpoints(tiny_hf_model, tiny_tokenizer, tmp_path):
    """Two tiny local HF checkpoints (safetensors + config + tokenizer) and their state dicts."""
    base, other = _pair(tiny_hf_model)
    tokenizer = tiny_tokenizer
    paths = []
    for name, model in (("base", base), ("other", other)):
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
        paths.append(tmp_path / name)
    return paths, _state(base), _state(other), (base, other)


def test_slerp_of_orthogonal_unit_vectors_stays_on_the_sphere():
    v0, v1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    for t in (0.25, 0.5, 0.58):
        out = slerp_tensor(t, v0, v1)
        assert out.norm().item() == pytest.approx(1.0, abs=1e-6)
        assert math.atan2(out[1], out[0]) == pytest.approx(t * math.pi / 2, abs=1e-6)
    # linear interpolation cuts the chord instead: shorter than 1 in the middle
    assert linear_tensor(0.5, v0, v1).norm().item() == pytest.approx(math.sqrt(0.5), abs=1e-6)


def test_slerp_falls_back_to_linear_for_nearly_parallel_tensors():
    v0 = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    parallel = 3.0 * v0  # cos = 1: mergekit interpolates linearly (a straight line, norms interpolate)
    assert torch.allclose(slerp_tensor(0.3, v0, parallel), 0.7 * v0 + 0.3 * parallel, atol=1e-6)
    nearly = v0 + 1e-3 * torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    unrelated = torch.randn(64, 8, generator=torch.Generator().manual_seed(2))  # not the global RNG: order-independent
    geometry = tensor_geometry({"w": v0, "x": v0}, {"w": nearly, "x": unrelated})
    assert geometry.set_index("tensor")["linear_fallback"].to_dict() == {"w": True, "x": False}
    assert torch.allclose(slerp_tensor(0.3, v0, nearly), linear_tensor(0.3, v0, nearly), atol=1e-6)


def test_endpoints_reproduce_both_models(checkpoints, tiny_hf_model):
    _, base_sd, other_sd, (base, other) = checkpoints
    tokens = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(0))
    merged_model = type(base)(base.config).eval()
    for method in models.METHODS:
        for t, reference in ((0.0, base), (1.0, other)):
            merged = merge_state_dicts(base_sd, other_sd, t, method)
            merged_model.load_state_dict(merged)
            with torch.no_grad():
                diff = (merged_model(tokens).logits - reference(tokens).logits).abs().max().item()
            assert diff <= 1e-5, (method, t, diff)
            assert all(torch.equal(merged[k], reference.state_dict()[k]) for k in merged), (method, t)


def test_slerp_and_linear_differ_in_the_middle(checkpoints):
    _, base_sd, other_sd, _ = checkpoints
    geometry = tensor_geometry(base_sd, other_sd)
    bent = geometry[~geometry["linear_fallback"]]["tensor"].tolist()
    straight = geometry[geometry["linear_fallback"]]["tensor"].tolist()
    assert bent and straight  # the fixture has both kinds: matrices at an angle, RMSNorm weights parallel
    slerp = merge_state_dicts(base_sd, other_sd, 0.5, "slerp")
    linear = merge_state_dicts(base_sd, other_sd, 0.5, "linear")
    for name in straight:
        assert torch.allclose(slerp[name], linear[name], atol=1e-7)
    for name in bent:  # the arc lies outside the chord: SLERP keeps more norm than linear interpolation
        assert slerp[name].norm() > linear[name].norm()


@pytest.mark.parametrize(("method", "dtype"), [("slerp", "float16"), ("slerp", "float32"), ("linear", "float16")])
def test_in_memory_merge_equals_mergekit_run_merge(checkpoints, tmp_path, method, dtype):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    (base_path, other_path), base_sd, other_sd, _ = checkpoints
    out = models.run_mergekit(base_path, other_path, tmp_path / f"merged-{method}-{dtype}", 0.58, method, dtype)
    theirs = {}
    for file in out.glob("*.safetensors"):
        theirs.update(load_file(file))
    ours = merge_state_dicts(base_sd, other_sd, 0.58, method, dtype)
    assert set(theirs) == set(ours)
    max_diff = max((theirs[k].double() - ours[k].double()).abs().max().item() for k in ours)
    assert max_diff == 0.0, max_diff
    assert all(theirs[k].dtype == getattr(torch, dtype) for k in theirs)
    # mergekit copied the base's tokenizer from the local folder (no hub), and it tokenises identically
    text = "w3 w7 w50 w96"
    ids = AutoTokenizer.from_pretrained(out)(text)["input_ids"]
    assert ids == AutoTokenizer.from_pretrained(base_path)(text)["input_ids"]
    assert (out / "mergekit_config.yml").is_file()


def test_bad_inputs_are_named():
    a = {"w": torch.ones(3)}
    with pytest.raises(MergeError, match="t must be a number in"):
        merge_state_dicts(a, a, 1.5)
    with pytest.raises(MergeError, match="merge.method"):
        merge_state_dicts(a, a, 0.5, "ties")
    with pytest.raises(MergeError, match="different tensors"):
        merge_state_dicts(a, {"v": torch.ones(3)}, 0.5)
    with pytest.raises(MergeError, match="shape"):
        merge_state_dicts(a, {"w": torch.ones(4)}, 0.5)


def test_paper_sweep_is_converted_to_lua_at_t0():
    table = models.paper_sweep_table()
    first, last = table.iloc[0], table.iloc[-1]
    assert (first["t"], first["lua_accuracy"]) == (0.0, 0.4941)  # Lua-ft's model-card accuracy
    assert (last["t"], last["tinystories_accuracy"]) == (1.0, 0.5196)  # TinyStories-ft's
    crossing = models.crossing_point(table["t"], table["lua_accuracy"], table["tinystories_accuracy"])
    assert 0.40 < crossing < 0.45  # the paper's curves cross between its t = 0.55 and 0.6
    assert models.monotonicity(table["t"], table["lua_accuracy"], increasing=False)["monotonic"]
    assert not models.monotonicity(table["t"], table["lua_accuracy"], increasing=True)["monotonic"]


def test_crossing_point_interpolates():
    assert models.crossing_point([0, 1], [0.0, 1.0], [1.0, 0.0]) == pytest.approx(0.5)
    assert models.crossing_point([0, 0.5, 1], [0.0, 0.2, 1.0], [1.0, 0.6, 0.6]) == pytest.approx(0.5 + 0.5 * 0.4 / 0.8)
    assert models.crossing_point([0, 1], [0.0, 0.1], [1.0, 0.9]) is None


def test_luastories_artifact_and_sweep_on_smoke(smoke_cfg):
    """The merged model is a fourth model like the others, and the sweep's endpoints are the fine-tunes."""
    from safetensors.torch import load_file


    path = models.model_dir(smoke_cfg, "luastories")
    assert path.name.startswith("model-luastories-") and (path / "model" / "mergekit_config.yml").is_file()
    stored = load_file(next((path / "model").glob("*.safetensors")))
    assert {v.dtype for v in stored.values()} == {torch.float16}  # written in cfg.merge.dtype, like mergekit
    assert (path / "model" / "tokenizer.json").is_file()
    model = models.load_lm(smoke_cfg, "luastories")
    assert next(model.parameters()).dtype == torch.float32
    assert models.load_hooked_lm(smoke_cfg, "luastories").cfg.d_model == smoke_cfg.model.hidden_size

    sweep = models.slerp_sweep(smoke_cfg)
    assert sweep["t"].tolist() == models.sweep_points(smoke_cfg) and smoke_cfg.merge.t in sweep["t"].tolist()
    for t, name in ((0.0, "lua"), (1.0, "tinystories")):
        metrics = models.model_metrics(smoke_cfg, name)
        row = sweep.set_index("t").loc[t]
        for domain in ("lua", "tinystories"):  # the parents' fine-tuning domains
            assert row[f"{domain}_accuracy"] == pytest.approx(metrics[domain]["accuracy"], abs=1e-12)
            assert row[f"{domain}_loss"] == pytest.approx(metrics[domain]["loss"], rel=1e-5)
    # the float16 artifact lands next to the float32 sweep point at the same t
    merged = models.model_metrics(smoke_cfg, "luastories")
    at_t = sweep.set_index("t").loc[smoke_cfg.merge.t]
    assert merged["lua"]["accuracy"] == pytest.approx(at_t["lua_accuracy"], abs=0.01)
