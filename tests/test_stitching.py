"""Model stitching (notebook 10): the maps, the SAE transfer formula, probes and steering carried across, FLOPs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paper_lib.core.config import ConfigError, load_config


def _data(n=4000, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g) + torch.randn(d, generator=g)


def _identity_maps(d):
    from paper_lib.stitching import StitchMaps

    maps = StitchMaps(d, d)
    with torch.no_grad():
        maps.P_up.copy_(torch.eye(d))
        maps.P_down.copy_(torch.eye(d))
    return maps


def _random_sae(d_in=8, d_sae=32, seed=0):
    from sae_lens import StandardSAE, StandardSAEConfig

    cfg = StandardSAEConfig(d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=True, normalize_activations="none",
                            dtype="float32", device="cpu")
    torch.manual_seed(seed)
    sae = StandardSAE(cfg)
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_(0, 0.3)
    return sae.eval()


def test_stitching_config_names_bad_settings():
    with pytest.raises(ConfigError, match="small_layer"):
        load_config("smoke", {"stitching.small_layer": 5})
    with pytest.raises(ConfigError, match="unknown model setting"):
        load_config("smoke", {"stitching": {"architecture": {"n_layers": 2}}})


def test_least_squares_recovers_an_affine_map():
    from paper_lib.stitching import least_squares

    x = _data(d=6)
    P, b = torch.randn(6, 10), torch.randn(10)
    fit_P, fit_b = least_squares(x, x @ P + b)
    assert torch.allclose(fit_P, P, atol=1e-4) and torch.allclose(fit_b, b, atol=1e-4)


def test_maps_between_a_stream_and_itself_train_to_the_identity():
    from paper_lib.stitching import fit_maps

    x, held = _data(seed=0), _data(n=1000, seed=1)
    maps, record = fit_maps(x, x, held, held, epochs=2, lr=1e-3, batch_tokens=256, alpha=1.0)
    eye = torch.eye(8)
    for P in (maps.P_up, maps.P_down):
        assert (P.detach() - eye).abs().max() < 1e-3
    for b in (maps.b_up, maps.b_down):
        assert b.detach().abs().max() < 1e-3
    assert record["trained"]["explained_variance_up"] > 0.999999
    assert record["steps"] == 2 * (4000 // 256) and len(record["curve"]) > 2


def test_a_model_mapped_to_itself_gets_the_identity(smoke_cfg):
    """The real path (activations of a smoke model, masked, trained with the profile's optimiser)."""
    from paper_lib.stitching import load_maps, maps_record, small

    maps = load_maps(smoke_cfg, small(), small(), 0, 0)
    eye = torch.eye(maps.d_small)
    assert (maps.P_up.detach() - eye).abs().max() < 1e-3 and (maps.P_down.detach() - eye).abs().max() < 1e-3
    assert maps_record(smoke_cfg, small(), small(), 0, 0)["trained"]["explained_variance_up"] > 0.9999


def test_transfer_with_identity_maps_returns_the_sae_unchanged():
    from paper_lib.stitching import transfer_sae

    sae = _random_sae()
    carried = transfer_sae(sae, _identity_maps(8), "blocks.0.hook_resid_post")
    for key, value in sae.state_dict().items():
        assert torch.allclose(carried.state_dict()[key], value, atol=1e-6), key
    x = _data(n=200)
    assert torch.allclose(carried.encode(x), sae.encode(x), atol=1e-5)


def test_transferred_sae_encodes_the_down_map_and_decodes_through_the_up_map():
    from paper_lib.stitching import StitchMaps, transfer_sae

    sae = _random_sae(d_in=6, d_sae=24)
    maps = StitchMaps(6, 10)
    with torch.no_grad():
        for p in maps.parameters():
            p.normal_(0, 0.5)
    carried = transfer_sae(sae, maps, "blocks.1.hook_resid_post")
    x_large = torch.randn(300, 10)
    with torch.no_grad():
        assert torch.allclose(carried.encode(x_large), sae.encode(maps.down(x_large)), atol=1e-4)
        features = sae.encode(maps.down(x_large))
        assert torch.allclose(carried.decode(features), maps.up(sae.decode(features)), atol=1e-4)
    assert carried.cfg.metadata.hook_name == "blocks.1.hook_resid_post" and carried.cfg.d_in == 10


def test_probe_carried_through_identity_maps_predicts_the_same_and_folds_the_scaler():
    from paper_lib.stitching.probes import balanced_accuracy, carry_down, fit_probe, predict

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 8)) * 5 + 3
    y = (x[:, 0] + 0.5 * x[:, 1] > 3).astype(int)
    probe = fit_probe(x, y, seed=0)
    assert balanced_accuracy(probe, x, y) > 0.97
    carried = carry_down(probe, _identity_maps(8))
    assert (predict(carried, x) == predict(probe, x)).all()
    with pytest.raises(ValueError, match="both classes"):
        fit_probe(x, np.zeros(2000, dtype=int), seed=0)


def test_literal_spans_find_strings_docstrings_and_comments_and_survive_cut_code():
    from paper_lib.stitching.probes import literal_spans

    text = 'def f(x):\n    """Doc\n    string."""\n    y = "a"  # note\n    return y\n'
    found = [text[a:b] for a, b in literal_spans(text)]
    assert found == ['"""Doc\n    string."""', '"a"', "# note"]
    assert [text[a:b] for a, b in literal_spans(text[:40] + "(\n")] == ['"""Doc\n    string."""']


def test_characteristic_tokens_are_those_the_target_uses_more():
    from paper_lib.stitching.steering import characteristic_tokens

    target = torch.tensor([1] * 50 + [2] * 50 + [3] * 50 + [4] * 3)
    source = torch.tensor([1] * 50 + [3] * 5 + [4] * 1)
    assert list(characteristic_tokens(target, source, vocab_size=6, k=2)) == [2, 3]  # 4 is too rare
    assert list(characteristic_tokens(target, source, vocab_size=6, k=2, exclude=[2])) == [3, 1]  # 1: as common in both, but frequent enough


def test_savings_read_steps_to_the_target_and_charge_the_stitch():
    from paper_lib.stitching.flops import savings, steps_to

    def curve(values):
        return [{"step": 10 * k, "explained_variance": v} for k, v in enumerate(values)]

    runs = {"scratch": [curve([0, 0.4, 0.7, 0.9, 1.0]), curve([0, 0.5, 0.8, 0.95, 0.98])],
            "transfer": [curve([0.5, 0.9, 0.95, 0.99, 1.0]), curve([0.3, 0.6, 0.7, 0.8, 0.9])]}
    out = savings(runs, {"sae_step": 80, "activations_step": 20, "stitch": 500, "small_sae": 1000}, target_fraction=0.9)
    assert out["target_explained_variance"] == pytest.approx(0.882) and out["target_fraction"] == 0.9
    assert out["scratch_steps"] == [30, 30] and out["transfer_steps"] == [10, 40]
    assert out["saving"] == pytest.approx([1 - 1500 / 3000, 1 - 4500 / 3000])
    assert out["saving_with_small_sae"][0] == pytest.approx(1 - 2500 / 3000)
    assert steps_to(curve([0.1, 0.2]), 0.5) is None


def test_sae_step_flops_count_the_three_matmuls_forward_and_backward():
    from paper_lib.stitching.flops import step_flops, training_sae

    cfg = load_config("smoke")
    sae = training_sae(cfg, d_in=16, d_sae=64, l1=1.0, steps=10, seed=0)
    flops = step_flops(sae, torch.randn(128, 16), 1.0)
    matmul = 2 * 128 * 16 * 64  # one [128, 16] x [16, 64] product
    # forward: encode and decode; backward: two products per weight matmul, one fewer for the encoder's input
    assert 5 * matmul <= flops <= 7 * matmul
