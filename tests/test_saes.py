"""Sparse autoencoders: SAELens save/load, diagnostics on hand-built SAEs, training on the smoke profile."""

from __future__ import annotations

import pytest
import torch

from paper_lib import data, saes
from paper_lib.core.hooks import DEFAULT_HOOK
from paper_lib.saes.store import _sae_inputs


def _standard_sae(d_in: int, d_sae: int, apply_b_dec_to_input: bool = True):
    from sae_lens import SAE, StandardSAEConfig

    sae = SAE.from_dict(
        StandardSAEConfig(d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=apply_b_dec_to_input).to_dict()
    )
    sae.cfg.metadata.hook_name = DEFAULT_HOOK
    return sae.eval()


def _identity_sae(d_in: int):
    """Features relu(x_i) and relu(-x_i) decoded back as x_i: a perfect reconstruction."""
    sae = _standard_sae(d_in, 2 * d_in, apply_b_dec_to_input=False)
    eye = torch.eye(d_in)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def _zero_sae(d_in: int):
    sae = _standard_sae(d_in, 2 * d_in)
    with torch.no_grad():
        for p in sae.parameters():
            p.zero_()
    return sae


@pytest.fixture
def tiny_blocks():
    generator = torch.Generator().manual_seed(0)
    return torch.randint(3, 97, (40, 24), generator=generator)


def test_save_load_round_trip(tmp_path, seed):
    from sae_lens import SAE

    sae = _standard_sae(16, 48)
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_()
    sae.save_model(tmp_path / "sae")
    loaded = SAE.load_from_disk(tmp_path / "sae", dtype="float32").eval()
    assert loaded.cfg.d_sae == 48 and loaded.cfg.metadata.hook_name == DEFAULT_HOOK
    for key, value in sae.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    x = torch.randn(5, 16)
    assert torch.allclose(sae.encode(x), loaded.encode(x))
    assert torch.allclose(sae(x), loaded(x))


def test_hook_activations_match_the_cache(tiny_hooked, tiny_blocks):
    acts = saes.hook_activations(tiny_hooked, tiny_blocks, batch_size=7)
    _, cache = tiny_hooked.run_with_cache(tiny_blocks, names_filter=[DEFAULT_HOOK])
    assert acts.shape == (40, 24, tiny_hooked.cfg.d_mlp)
    assert torch.allclose(acts, cache[DEFAULT_HOOK], atol=1e-5)


def test_diagnostics_perfect_reconstruction(tiny_hooked, tiny_blocks):
    d = saes.evaluate_sae(_identity_sae(tiny_hooked.cfg.d_mlp), tiny_hooked, tiny_blocks)
    assert d["n_tokens"] == 40 * 24
    assert d["ce_loss_zero_ablation"] != pytest.approx(d["ce_loss_clean"], abs=1e-4)  # the hook matters
    assert d["reconstruction_score"] == pytest.approx(1.0, abs=1e-3)
    assert d["explained_variance"] == pytest.approx(1.0, abs=1e-4)
    # every coordinate is non-zero, so exactly one of each (relu(x), relu(-x)) pair fires
    assert d["l0"] == pytest.approx(tiny_hooked.cfg.d_mlp, abs=0.5)
    assert len(d["feature_frequency"]) == 2 * tiny_hooked.cfg.d_mlp
    assert d["dead_fraction"] < 0.1


def test_diagnostics_zero_sae(tiny_hooked, tiny_blocks):
    d = saes.evaluate_sae(_zero_sae(tiny_hooked.cfg.d_mlp), tiny_hooked, tiny_blocks)
    assert d["reconstruction_score"] == pytest.approx(0.0, abs=1e-4)
    assert d["ce_loss_reconstruction"] == pytest.approx(d["ce_loss_zero_ablation"], abs=1e-5)
    assert d["l0"] == 0.0 and d["dead_fraction"] == 1.0


def test_diagnostic_intervals_resample_blocks_and_add_up_to_saelens(tiny_hooked, tiny_blocks, seed):
    import numpy as np

    sae = _identity_sae(tiny_hooked.cfg.d_mlp)
    with torch.no_grad():  # a coordinate's feature fires only beyond a threshold: L0 and the error vary by block
        sae.b_enc.fill_(-float(saes.hook_activations(tiny_hooked, tiny_blocks).abs().median()))
    d = saes.evaluate_sae(sae, tiny_hooked, tiny_blocks)
    assert 0 < d["explained_variance"] < 1 and 0 < d["l0"] < tiny_hooked.cfg.d_mlp
    for field in ("l0", "explained_variance"):
        record = d[f"{field}_interval"]
        assert record["value"] == d[field] and record["low"] < d[field] < record["high"], field
        assert record["n"] == 40 and record["confidence"] == 0.95
        assert record["method"].startswith("bootstrap over 40 evaluation blocks (percentile"), record["method"]
    # Per block, summed: SAELens's L0 and explained variance; the total sum of squares is around the global mean.
    per_block = saes.evaluate.block_statistics(sae, tiny_hooked, tiny_blocks, batch_size=16)
    assert per_block["l0"].mean() == pytest.approx(d["l0"], rel=1e-5)
    assert 1 - per_block["residual_ss"].sum() / per_block["total_ss"].sum() == pytest.approx(d["explained_variance"],
                                                                                           abs=1e-5)
    x_BCD = saes.hook_activations(tiny_hooked, tiny_blocks).double()
    direct = (x_BCD - x_BCD.mean((0, 1))).pow(2).sum((1, 2)).numpy()
    np.testing.assert_allclose(per_block["total_ss"], direct, rtol=1e-8)
    assert len(per_block["l0"]) == 40 and np.ptp(per_block["l0"]) > 0


def test_an_interval_is_not_put_around_a_number_it_does_not_estimate():
    from paper_lib.core import intervals

    record = intervals.mean_interval([1.0, 2.0, 3.0], unit="evaluation blocks")
    with pytest.raises(ValueError, match="different tokens"):
        intervals.around(record, 2.5, "L0", saes.evaluate.DIFFERENT_TOKENS)
    assert intervals.around(record, 2.0000001, "L0", saes.evaluate.DIFFERENT_TOKENS)["value"] == 2.0000001


def test_geometric_median_resists_outliers(seed):
    points = torch.randn(500, 8) * 0.1 + 1.0
    points[:50] += 100.0  # 10% far outliers pull the mean, not the median
    median = saes.geometric_median(points)
    assert (median - 1.0).abs().max() < 0.1
    assert (points.mean(0) - 1.0).abs().max() > 5.0


def test_cache_key_has_only_the_own_coefficient(smoke_cfg):
    from pathlib import Path

    from paper_lib.core.config import load_config

    folder = Path("model-babypython-0")
    base = _sae_inputs(smoke_cfg, "babypython", folder, "independent")
    other = load_config("smoke", {"sae.l1_coefficient": {**smoke_cfg.sae.l1_coefficient, "lua": 0.5}})
    assert _sae_inputs(other, "babypython", folder, "independent") == base
    mine = load_config("smoke", {"sae.l1_coefficient": {**smoke_cfg.sae.l1_coefficient, "babypython": 0.5}})
    assert _sae_inputs(mine, "babypython", folder, "independent") != base
    assert _sae_inputs(smoke_cfg, "babypython", Path("model-babypython-1"), "independent") != base
    with pytest.raises(ValueError, match="unknown model"):
        saes.sae_dir(smoke_cfg, "gpt2")


def test_smoke_training_gives_a_loadable_sae(smoke_cfg):
    path = saes.sae_dir(smoke_cfg, "babypython")
    sae = saes.load_sae(smoke_cfg, "babypython")
    assert not sae.training and sae.W_dec.dtype == torch.float32
    assert sae.cfg.d_in == smoke_cfg.model.intermediate_size
    assert sae.cfg.d_sae == smoke_cfg.model.intermediate_size * smoke_cfg.sae.expansion_factor
    assert sae.cfg.metadata.hook_name == DEFAULT_HOOK
    # decoder rows were normalised after training (the paper's convention)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(sae.cfg.d_sae), atol=1e-4)
    # the recorded curve shows learning: the reconstruction error falls
    curve = saes.training_curves(smoke_cfg, ["babypython"])
    # (a trend, not a factor: how far a 50-step smoke run gets depends on the SAE's seed)
    from scipy.stats import spearmanr

    assert curve["mse_loss"].iloc[-1] < curve["mse_loss"].iloc[0]
    assert spearmanr(curve["step"], curve["mse_loss"]).statistic < -0.8
    assert curve["explained_variance"].iloc[-1] > curve["explained_variance"].iloc[0]
    stats = saes.training_stats(smoke_cfg, "babypython")
    assert stats["train_tokens"] == (smoke_cfg.sae.training_tokens // smoke_cfg.sae.train_batch_size_tokens) * (
        smoke_cfg.sae.train_batch_size_tokens
    )
    # reused, not retrained
    assert saes.sae_dir(smoke_cfg, "babypython") == path
    blocks = data.sae_validation_blocks(smoke_cfg, "babypython")[:5]
    acts = saes.encode_blocks(smoke_cfg, "babypython", blocks)
    assert acts.shape == (5, smoke_cfg.sae.context_size, sae.cfg.d_sae) and (acts >= 0).all()
    diag = saes.sae_diagnostics(smoke_cfg, "babypython")
    assert diag["n_blocks"] == smoke_cfg.sae.eval_blocks
    assert 0.0 <= diag["dead_fraction"] <= 1.0 and diag["l0"] > 0
    for field in ("l0", "explained_variance"):
        record = diag[f"{field}_interval"]
        assert record["low"] <= record["value"] == diag[field] <= record["high"] and record["low"] < record["high"]
        assert record["n"] == smoke_cfg.sae.eval_blocks and "evaluation blocks" in record["method"]
    row = saes.diagnostics_table(smoke_cfg, ["babypython"]).iloc[0]  # notebook 04's table: the ends as columns
    assert (row.l0_low, row.l0_high, row.l0_method) == (diag["l0_interval"]["low"], diag["l0_interval"]["high"],
                                                        diag["l0_interval"]["method"])
    assert row.explained_variance_low <= row.explained_variance <= row.explained_variance_high
    assert row.l0_interval == diag["l0_interval"] and row.explained_variance_interval["low"] == row.explained_variance_low


def test_an_sae_on_another_hook_works_through_every_consumer(smoke_cfg):
    """An SAE on blocks.0.hook_resid_post (d_model wide, not d_mlp) is trained, evaluated and encoded by every
    consumer at its own hook: diagnostics, matching samples, case-study search and report, autointerp."""
    import numpy as np

    from paper_lib import autointerp, case_studies, matching, models
    from paper_lib.core.config import load_config

    hook = "blocks.0.hook_resid_post"
    cfg = load_config("smoke", {"sae.hook_name": hook})
    sae = saes.load_sae(cfg, "babypython")
    assert sae.cfg.d_in == cfg.model.hidden_size != cfg.model.intermediate_size
    assert saes.sae_hook(sae) == hook and saes.sae_dir(cfg, "babypython") != saes.sae_dir(smoke_cfg, "babypython")
    model = models.load_hooked_lm(cfg, "babypython")
    blocks = data.matching_blocks(cfg)[:4]
    _, cache = model.run_with_cache(blocks, names_filter=[hook])
    expected = sae.encode(cache[hook]).detach()
    torch.testing.assert_close(saes.encode_blocks(cfg, "babypython", blocks), expected)

    diagnostics = saes.sae_diagnostics(cfg, "babypython")
    assert diagnostics["d_sae"] == sae.cfg.d_sae and np.isfinite(diagnostics["explained_variance"])
    acts, tokens = matching.load_activation_sample(cfg, "babypython")
    np.testing.assert_allclose(acts[: blocks.numel()].toarray(), expected.reshape(-1, sae.cfg.d_sae).numpy(), atol=1e-5)
    scores = case_studies.concept_scores(cfg, "babypython")
    assert len(scores["tables"]["variable_assignment"]) == sae.cfg.d_sae
    report = case_studies.feature_report(cfg, "babypython", int(expected.sum((0, 1)).argmax()), k=3)
    assert len(report["logit_effects"]) == 6 and len(report["top_contexts"]) > 0
    features = autointerp.feature_activations(cfg, "babypython", blocks, [0, 5])
    np.testing.assert_allclose(features, expected[..., [0, 5]].permute(2, 0, 1).numpy(), atol=1e-5)
