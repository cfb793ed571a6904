"""Profiles load, round-trip, and reject bad keys and types with messages naming the key and the file."""

import pytest

from paper_lib.core.config import (
    DOMAINS,
    PROFILE_DIR,
    Config,
    ConfigError,
    available_profiles,
    config_from_dict,
    load_config,
)
from paper_lib.core.registry import REGISTRY


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


def test_profile_dir_and_reexports():
    assert PROFILE_DIR.name == "profiles" and PROFILE_DIR.parent.name == "paper_lib"
    assert DOMAINS == ("babylm", "python", "lua", "tinystories")


def test_finetune_defaults_differ_from_pretrain():
    cfg = Config()
    assert (cfg.pretrain.learning_rate, cfg.pretrain.warmup_steps, cfg.pretrain.weight_decay) == (6e-4, 0, 0.1)
    assert (cfg.finetune.learning_rate, cfg.finetune.warmup_steps, cfg.finetune.weight_decay) == (2e-5, 500, 0.01)
    assert cfg.pretrain.epochs == 3.0 and cfg.finetune.epochs == 1.0


def test_int_for_float_is_stored_as_float_so_cache_keys_agree():
    a = load_config("smoke", {"merge.t": 1}).merge.model_dump()
    b = load_config("smoke", {"merge.t": 1.0}).merge.model_dump()
    assert a == b and isinstance(a["t"], float)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ({"matching.threshold": 7.5}, "'matching.threshold' must be <= 1"),
        ({"matching.threshold": 0.0}, "'matching.threshold' must be > 0"),
        ({"merge.t": 3.0}, "'merge.t' must be <= 1"),
        ({"merge.t": -0.1}, "'merge.t' must be >= 0"),
        ({"merge.sweep_stride": 0}, "'merge.sweep_stride' must be > 0"),
        ({"data.block_size": -1}, "'data.block_size' must be > 0 (got -1)"),
        ({"data.base_train_tokens": 0}, "'data.base_train_tokens' must be > 0"),
        ({"autointerp.matching_mode": "cosine"}, "'autointerp.matching_mode' is 'cosine'; choose one of token, pos"),
        ({"autointerp.backend": "anthropic"}, "'autointerp.backend' is 'anthropic'; choose one of offline, openai, hf"),
        ({"sae.b_dec_init": "random"}, "'sae.b_dec_init' is 'random'"),
        ({"case_studies.score": "auc"}, "'case_studies.score' is 'auc'"),
        ({"pretrain.learning_rate": 0}, "'pretrain.learning_rate' must be > 0"),
        ({"pretrain.weight_decay": -0.1}, "'pretrain.weight_decay' must be >= 0"),
        ({"sae.adam_beta2": 1.0}, "'sae.adam_beta2' must be < 1"),
        ({"sae.l1_warm_up_fraction": 1.5}, "'sae.l1_warm_up_fraction' must be <= 1"),
        ({"sae.l1_coefficient.lua": 0}, "'sae.l1_coefficient.lua' must be > 0"),
        ({"matching.min_token_support": 1}, "'matching.min_token_support' must be >= 2"),
        ({"autointerp.temperature": -1}, "'autointerp.temperature' must be >= 0"),
        ({"autointerp.max_retries": -1}, "'autointerp.max_retries' must be >= 0"),
        ({"seed": -1}, "'seed' must be >= 0"),
        ({"seed": True}, "'seed' must be an integer"),
        ({"model.hidden_size": "3"}, "'model.hidden_size' must be an integer"),
        ({"merge.t": True}, "'merge.t' must be a number"),
        ({"pretrain.learning_rate": float("nan")}, "'pretrain.learning_rate' must be a finite number"),
    ],
)
def test_values_out_of_range_are_rejected(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config("smoke", override)
    assert fragment in str(err.value) and str(err.value).startswith("overrides: ")


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        load_config("smoke", {"data.block_size": -1, "merge.t": 3.0})
    assert "'data.block_size'" in str(err.value) and "'merge.t'" in str(err.value)


def test_nested_override_changes_only_the_named_key():
    smoke = load_config("smoke")
    for overrides in ({"sae.l1_coefficient.lua": 0.5}, {"sae": {"l1_coefficient": {"lua": 0.5}}}):
        cfg = load_config("smoke", overrides)
        assert cfg.sae.l1_coefficient == {**smoke.sae.l1_coefficient, "lua": 0.5}
        assert cfg.sae.l1_coefficient["babypython"] == 0.1  # the profile's, not the default 1.0
        assert cfg.sae.lr == smoke.sae.lr


def test_a_non_dict_override_replaces():
    cfg = load_config("smoke", {"matching.modes": ["position"]})
    assert cfg.matching.modes == ["position"]


def test_l1_default_key_is_accepted_beside_the_models():
    cfg = load_config("smoke", {"sae.l1_coefficient.default": 0.7})
    assert cfg.sae.l1_coefficient == {**load_config("smoke").sae.l1_coefficient, "default": 0.7}
    assert config_from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "override, keys",
    [
        ({"model.num_attention_heads": 5}, ("'model.hidden_size' (64)", "'model.num_attention_heads' (5)")),
        ({"model.num_key_value_heads": 3}, ("'model.num_attention_heads' (4)", "'model.num_key_value_heads' (3)")),
        ({"sae.n_batches_in_buffer": 2}, ("'sae.n_batches_in_buffer'", "'sae.train_batch_size_tokens' (480)")),
        ({"sae.training_tokens": 100}, ("'sae.training_tokens' (100)", "'sae.train_batch_size_tokens' (480)")),
    ],
)
def test_cross_field_checks_name_both_keys(override, keys):
    with pytest.raises(ConfigError) as err:
        load_config("smoke", override)
    assert all(key in str(err.value) for key in keys)


def test_cross_field_check_suggests_a_fix():
    with pytest.raises(ConfigError, match="divisor of 64 \\(e.g. 4\\)"):
        load_config("smoke", {"model.num_attention_heads": 5})
    cfg = load_config("smoke", {"model.num_attention_heads": 8, "model.num_key_value_heads": 8})
    assert (cfg.model.num_attention_heads, cfg.model.num_key_value_heads) == (8, 8)


def test_pairs_default_to_the_registry_edges():
    # None stands for every parent -> child edge of the registry; the edges themselves are valid pairs.
    assert Config().matching.pairs is None and load_config("smoke").matching.pairs is None
    assert REGISTRY.edges() == [("babypython", "lua"), ("babypython", "tinystories"), ("lua", "luastories"),
                                ("tinystories", "luastories")]
    given = load_config("smoke", {"matching.pairs": REGISTRY.edges()})  # tuples, as REGISTRY gives them
    assert given.matching.pairs == [list(edge) for edge in REGISTRY.edges()]
    assert config_from_dict(given.to_dict()) == given


@pytest.mark.parametrize("pair", [["lua", "lua"], ["lua", "gpt2"], ["lua"], ["babypython", "lua", "tinystories"]])
def test_a_bad_pair_is_rejected(pair):
    with pytest.raises(ConfigError, match="'matching.pairs' entry 1"):
        load_config("smoke", {"matching.pairs": [["babypython", "lua"], pair]})


def test_assignment_is_validated():
    cfg = load_config("smoke")
    cfg.merge.t = 1
    assert cfg.merge.t == 1.0 and isinstance(cfg.merge.t, float)
    with pytest.raises(ConfigError, match="'learning_rate' must be > 0"):
        cfg.pretrain.learning_rate = -1.0
    with pytest.raises(ConfigError, match="divisible"):
        cfg.model.num_attention_heads = 5
    assert cfg.model.num_attention_heads == 4  # a rejected assignment leaves the section valid
    assert cfg == config_from_dict(cfg.to_dict())


@pytest.mark.parametrize("name", ["../escape", "a/b", "a..b", ".hidden", "-dash", "with space", "trailing\n", ""])
def test_unsafe_profile_names_are_rejected(tmp_path, name):
    with pytest.raises(ConfigError, match="'profile'"):
        config_from_dict({"profile": name})
    profile = tmp_path / "ok.yaml"
    profile.write_text(f"profile: {name!r}\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(profile))
    assert str(profile) in str(err.value) and "'profile'" in str(err.value)
    with pytest.raises(ConfigError, match="not found"):
        load_config(name)


def test_a_profile_file_with_an_unsafe_stem_is_rejected(tmp_path):
    profile = tmp_path / "my run.yaml"
    profile.write_text("seed: 1\n")
    with pytest.raises(ConfigError, match="'profile' is 'my run'"):
        load_config(str(profile))


def test_a_missing_path_is_rejected_without_creating_anything(tmp_path):
    missing = tmp_path / "nowhere" / "laptop.yaml"
    with pytest.raises(ConfigError, match="does not exist") as err:
        load_config(str(missing))
    assert str(missing) in str(err.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "model: [unclosed\n"])
def test_a_non_mapping_or_broken_yaml_names_the_file(tmp_path, text):
    profile = tmp_path / "broken.yml"
    profile.write_text(text)
    with pytest.raises(ConfigError, match="broken.yml"):
        load_config(str(profile))


def test_a_custom_profile_file_loads(tmp_path):
    profile = tmp_path / "laptop.yml"
    profile.write_text("data:\n  block_size: 32\nsae:\n  l1_coefficient: {lua: 0.25}\n")
    cfg = load_config(profile, {"seed": 3})
    assert cfg.profile == "laptop" and cfg.seed == 3 and cfg.data.block_size == 32
    assert cfg.sae.l1_coefficient == {"babypython": 1.0, "lua": 0.25, "tinystories": 1.0, "luastories": 1.0}
    assert cfg.model == Config().model  # everything else is the default
    named = tmp_path / "other.yaml"
    named.write_text("profile: laptop-2\n")
    assert load_config(str(named)).profile == "laptop-2"
