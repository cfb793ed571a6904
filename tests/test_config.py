"""Profiles load, round-trip, and reject bad keys and types with messages naming the key and the file."""

import pytest

from paper_lib.config import Config, ConfigError, available_profiles, config_from_dict, load_config


def test_every_profile_loads():
    assert {"smoke", "cpu", "paper"} <= set(available_profiles())
    for name in available_profiles():
        cfg = load_config(name)
        assert cfg.profile == name


def test_paper_profile_is_the_paper():
    cfg = load_config("paper")
    assert (cfg.model.hidden_size, cfg.model.intermediate_size, cfg.model.num_hidden_layers) == (512, 1024, 1)
    assert (cfg.model.num_attention_heads, cfg.model.num_key_value_heads) == (16, 8)
    assert cfg.data.block_size == 256 and cfg.pretrain.batch_size == 64
    assert cfg.pretrain.learning_rate == 6e-4 and cfg.finetune.learning_rate == 2e-5
    assert cfg.finetune.warmup_steps == 500 and cfg.merge.t == 0.58
    assert cfg.sae.hook_name == "blocks.0.mlp.hook_post" and cfg.sae.expansion_factor == 16
    assert cfg.matching.threshold == 0.8


def test_round_trip_through_dict():
    cfg = load_config("cpu")
    again = config_from_dict(cfg.to_dict())
    assert again == cfg


def test_overrides_dotted_and_nested():
    cfg = load_config("smoke", {"pretrain.learning_rate": 1e-2, "model": {"hidden_size": 96}})
    assert cfg.pretrain.learning_rate == 1e-2
    assert cfg.model.hidden_size == 96
    assert cfg.model.intermediate_size == load_config("smoke").model.intermediate_size


def test_int_is_accepted_for_float():
    assert load_config("smoke", {"merge.t": 1}).merge.t == 1.0


def test_unknown_key_is_rejected_with_its_name():
    with pytest.raises(ConfigError, match="unknown config key 'pretrain.learnig_rate'"):
        load_config("smoke", {"pretrain.learnig_rate": 1e-3})


def test_unknown_key_in_a_profile_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  hidden: 12\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(bad))
    assert "bad.yaml" in str(err.value) and "model.hidden" in str(err.value)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ({"model.hidden_size": "big"}, "'model.hidden_size' must be an integer"),
        ({"model.hidden_size": 1.5}, "'model.hidden_size' must be an integer"),
        ({"pretrain.bf16": "yes"}, "'pretrain.bf16' must be true or false"),
        ({"data.source": "ftp"}, "'data.source' is 'ftp'"),
        ({"sae.l1_coefficient": {"gpt2": 1.0}}, "unknown model 'gpt2'"),
        ({"matching.modes": ["cosine"]}, "'matching.modes'"),
        ({"data.eval_tokens": None}, "'data.eval_tokens' must be an integer"),
    ],
)
def test_wrong_types_and_values_are_rejected(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_config("smoke", override)


def test_missing_profile_lists_the_available_ones():
    with pytest.raises(ConfigError, match="Available: .*smoke"):
        load_config("laptop")


def test_building_a_config_has_no_side_effects(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("PAPER_RUNS_DIR", str(tmp_path / "runs"))
    state = torch.random.get_rng_state()
    load_config("cpu")
    Config()
    assert torch.equal(state, torch.random.get_rng_state())
    assert not (tmp_path / "runs").exists()
