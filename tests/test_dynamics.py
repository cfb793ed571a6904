"""Feature dynamics: drift, snapshots along a fine-tune, merge methods through mergekit, survival crossings."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from paper_lib import dynamics
from paper_lib.dynamics import merge_points, merges, trajectory


def _sparse_acts(rng, n=3000, f=40, density=0.05):
    acts = sp.random(n, f, density=density, random_state=rng, format="csr", dtype=np.float64)
    acts.data = np.abs(acts.data) + 0.1
    return acts


def test_drift_of_activations_against_themselves_is_one_for_every_live_feature():
    rng = np.random.default_rng(0)
    x = _sparse_acts(rng).tolil()
    x[:, 3] = 0  # a dead feature: left out
    x = x.tocsr()
    drift = dynamics.feature_drift(x, x.toarray(), chunk_positions=700)  # chunks of another size than the data
    live = np.asarray(x.getnnz(axis=0) > 0)
    assert np.array_equal(drift["live"], live) and not drift["live"][3]
    assert np.all(drift["r"][live] == 1.0) and np.isnan(drift["r"][3])
    assert dynamics.survival_interval(drift, 0.8)["value"] == 1.0


def test_drift_is_pearson_r_per_feature_and_a_silenced_feature_does_not_survive():
    rng = np.random.default_rng(1)
    x = _sparse_acts(rng).toarray()
    y = x + 0.3 * rng.standard_normal(x.shape) * (x > 0)
    y[:, 5] = 0.0  # the other model never fires it
    drift = dynamics.feature_drift(sp.csr_matrix(x), y)
    for f in (0, 7, 20):
        assert drift["r"][f] == pytest.approx(np.corrcoef(x[:, f], y[:, f])[0, 1], abs=1e-10)
    assert drift["silent"][5] and np.isnan(drift["r"][5])
    flags = dynamics.drift.surviving(drift, 0.8)
    assert not flags[5] and flags.sum() == int((np.nan_to_num(drift["r"], nan=-1) >= 0.8).sum())


def test_snapshot_steps_are_refused_when_fractions_collide():
    assert dynamics.snapshot_steps(40, [0.5, 0.0625, 0.25]) == [(0.0625, 2), (0.25, 10), (0.5, 20)]
    with pytest.raises(dynamics.TrajectoryError, match="same as the snapshot"):
        dynamics.snapshot_steps(8, [0.0625, 0.1])
    with pytest.raises(dynamics.TrajectoryError, match="strictly between"):
        dynamics.snapshot_steps(8, [1.0])


def test_reproduction_gap_compares_the_logged_numbers_up_to_the_stop():
    original = [{"step": 5, "loss": 2.0, "learning_rate": 1e-3}, {"step": 10, "loss": 1.5, "eval_loss": 1.7},
                {"step": 15, "loss": 9.0}]
    rerun = [{"step": 5, "loss": 2.0, "learning_rate": 1e-3}, {"step": 10, "loss": 1.5 * (1 + 1e-5), "eval_loss": 1.7}]
    gap = trajectory.reproduction_gap(rerun, original, last_step=10)
    assert gap["compared"] == 4 and gap["max_relative_difference"] == pytest.approx(1e-5)


def test_cohen_kappa():
    a = np.array([1, 1, 0, 0, 1, 0], bool)
    assert dynamics.cohen_kappa(a, a) == 1.0
    assert dynamics.cohen_kappa(a, ~a) == -1.0
    assert dynamics.cohen_kappa(np.ones(4, bool), np.ones(4, bool)) is None


def test_half_survival_crossing_and_its_interval():
    t = np.array([0.0, 0.5, 1.0])
    survives = np.zeros((100, 3), bool)
    survives[:, 0] = True
    survives[:80, 1] = True  # 0.8 at t = 0.5, 0 at t = 1: half survive at t = 0.5 + 0.5 * 0.3 / 0.8
    record = merges.half_survival_interval(t, survives)
    assert record["value"] == pytest.approx(0.5 + 0.5 * 0.3 / 0.8)
    assert record["low"] < record["value"] < record["high"]
    assert merges.half_survival_interval(t, np.ones((10, 3), bool)) is None
    assert merges.survival_at_interval(t, survives, 0.25)["value"] == pytest.approx(0.9)


def test_task_weights_run_from_one_fine_tune_through_both_to_the_other():
    assert merge_points.task_weights(0.0) == (1.0, 0.0)
    assert merge_points.task_weights(0.5) == (1.0, 1.0)
    assert merge_points.task_weights(1.0) == (0.0, 1.0)
    assert merge_points.task_weights(0.75) == (0.5, 1.0)


@pytest.fixture
def family(tiny_hf_model, tiny_tokenizer, tmp_path):
    """A tiny root and two 'fine-tunes' of it on disk (HF checkpoints with a tokenizer)."""
    root = tiny_hf_model
    tokenizer = tiny_tokenizer
    generator = torch.Generator().manual_seed(3)
    states = {"root": {k: v.clone() for k, v in root.state_dict().items()}}
    for name, scale in (("first", 0.05), ("second", 0.08)):
        states[name] = {k: v + scale * torch.randn(v.shape, generator=generator) if v.ndim > 1 else v.clone()
                        for k, v in states["root"].items()}
    paths = {}
    for name, state in states.items():
        root.load_state_dict(state)
        root.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
        paths[name] = tmp_path / name
    return paths, states


def _merged(method, t, paths, tmp_path, density=0.5):
    from safetensors.torch import load_file

    config = merge_points.method_config(method, paths["first"], paths["second"], paths["root"], t, density)
    out = merge_points.run_merge(config, tmp_path / f"{method}-{t}")
    return load_file(next(out.glob("*.safetensors")))


def test_mergekit_methods_reach_the_fine_tunes_at_the_ends_and_differ_in_the_middle(family, tmp_path):
    paths, states = family
    weight = "model.layers.0.mlp.up_proj.weight"
    for method in ("linear", "slerp", "task_arithmetic"):
        start, end = _merged(method, 0.0, paths, tmp_path), _merged(method, 1.0, paths, tmp_path)
        torch.testing.assert_close(start[weight], states["first"][weight], rtol=0, atol=1e-6)
        torch.testing.assert_close(end[weight], states["second"][weight], rtol=0, atol=1e-6)
    middle = {m: _merged(m, 0.5, paths, tmp_path)[weight] for m in merge_points.METHODS}
    tau = {n: states[n][weight] - states["root"][weight] for n in ("first", "second")}
    torch.testing.assert_close(middle["linear"], (states["first"][weight] + states["second"][weight]) / 2)
    torch.testing.assert_close(middle["task_arithmetic"], states["root"][weight] + tau["first"] + tau["second"])
    assert not torch.allclose(middle["ties"], middle["task_arithmetic"])
    # TIES keeps only the largest half of each task vector: at t = 0 it is the root plus the trimmed task vector
    ties_start = _merged("ties", 0.0, paths, tmp_path)[weight]
    trimmed = ties_start - states["root"][weight]
    assert 0.4 < float((trimmed != 0).float().mean()) < 0.6
    # and the path leaves it smoothly: a small step in t moves the weights a small distance (with mergekit's default
    # disjoint mean, entries kept from TinyStories alone would enter at full size at once)
    step = _merged("ties", 0.01, paths, tmp_path)[weight]
    assert float((step - ties_start).norm()) < 0.05 * float(trimmed.norm())


def test_bad_merge_inputs_are_named(family):
    paths, _ = family
    with pytest.raises(ValueError, match="unknown merge method"):
        merge_points.method_config("dare", paths["first"], paths["second"], paths["root"], 0.5)
    with pytest.raises(ValueError, match="mixing parameter"):
        merge_points.method_config("ties", paths["first"], paths["second"], paths["root"], 1.5)


def test_dynamics_config_checks_its_fractions():
    from paper_lib.core.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="not snapshots"):
        load_config("smoke", overrides={"dynamics.sae_fractions": [0.3]})
    with pytest.raises(ConfigError, match="dynamics.fractions"):
        load_config("smoke", overrides={"dynamics.fractions": [1.0]})


def test_trajectory_on_smoke_reproduces_the_fine_tune_and_starts_at_drift_one(smoke_cfg):
    """The must-holds on the smoke family: the rerun follows the fine-tune's log; at checkpoint 0 (the parent
    itself) every live parent feature has drift exactly 1; the snapshots are weights between parent and child."""
    from paper_lib.core.artifacts import manifest
    from paper_lib.models.merge import load_state_dict

    points = dynamics.checkpoints(smoke_cfg, "lua")
    assert [p.nominal for p in points] == [0.0, *sorted(smoke_cfg.dynamics.fractions), 1.0]
    assert all(p.fraction == p.step / points[-1].step for p in points)  # where each snapshot's step landed
    gap = manifest(dynamics.trajectory_dir(smoke_cfg, "lua"))["meta"]["reproduction"]
    assert gap["compared"] > 0 and gap["max_relative_difference"] <= trajectory.REPRODUCTION_RTOL
    drift, summary = dynamics.load_drift(dynamics.checkpoint_drift(smoke_cfg, points[0]))
    assert drift["live"].sum() > 0 and np.all(drift["r"][drift["live"]] == 1.0)
    assert summary["survival_share"]["value"] == 1.0
    weight = "model.layers.0.mlp.up_proj.weight"
    parent, snap, child = (load_state_dict(p.path / "model")[weight] for p in (points[0], points[2], points[-1]))
    assert 0 < float((snap - parent).norm()) < float((child - parent).norm())
    with pytest.raises(dynamics.TrajectoryError, match="not a fine-tune"):
        dynamics.checkpoints(smoke_cfg, "luastories")


def _interval(value, low, high):
    return {"value": value, "low": low, "high": high, "confidence": 0.95, "method": "test", "n": 100}


def _method(name, lua, tinystories):
    return {"method": name, "grid": [0.0, 0.5, 1.0], "crossing_t": 0.5, "crossing_t_interval": _interval(0.5, 0.4, 0.6),
            "accuracy_at_crossing": 0.3, "lua_survival_at_crossing": lua[0],
            "lua_survival_at_crossing_interval": _interval(*lua), "tinystories_survival_at_crossing": tinystories[0],
            "tinystories_survival_at_crossing_interval": _interval(*tinystories),
            "lua_half_survival_t": 0.7, "lua_half_survival_t_interval": _interval(0.7, 0.65, 0.75)}


def test_merge_verdict_names_a_winner_only_when_the_weaker_parents_intervals_are_apart():
    from paper_lib.report.dynamics import merge_sentences

    data = {"merge_parents": ["lua", "tinystories"], "methods": [
        _method("slerp", (0.9, 0.85, 0.95), (0.58, 0.53, 0.63)), _method("ties", (0.8, 0.75, 0.85), (0.7, 0.65, 0.75))]}
    text = " ".join(merge_sentences(data))
    assert "Ties keeps the most features of both parents" in text and "not at one accuracy" in text
    data["methods"][0] = _method("slerp", (0.9, 0.85, 0.95), (0.68, 0.62, 0.72))
    assert "cannot tell which method keeps most" in " ".join(merge_sentences(data))
    data["methods"] = data["methods"][:1]  # one method: nothing to compare it with
    assert not any("keeps" in line for line in merge_sentences(data))


def test_length_criterion_scales_a_step_to_one_doubling_and_can_say_cannot_tell():
    from paper_lib.dynamics.measures import criterion_met, doubling_improvement

    rng = np.random.default_rng(0)
    before = 5.0 + 0.1 * rng.standard_normal(200)
    after = before * 0.9  # 10% lower on every block
    assert doubling_improvement(before, after, 1000, 2000)["value"] == pytest.approx(0.10)
    assert doubling_improvement(before, after, 1000, 4000)["value"] == pytest.approx(0.05)  # two doublings
    record = doubling_improvement(before, after + 0.05 * rng.standard_normal(200), 1000, 2000)
    assert record["low"] < record["value"] < record["high"]
    assert criterion_met(record, 0.2) is True and criterion_met(record, 0.01) is False
    assert criterion_met(record, record["value"]) is None and criterion_met(None, 0.02) is None
    with pytest.raises(ValueError, match="more tokens"):
        doubling_improvement(before, after, 2000, 2000)
