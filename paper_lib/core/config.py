"""Typed, validated configuration of every section of the paper, loaded from a profile plus overrides."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from .registry import DOMAINS, REGISTRY  # noqa: F401 (DOMAINS is re-exported for callers)
from .schema import (  # noqa: F401 (ConfigError and the number types are re-exported for callers)
    Beta, ConfigError, Fraction, Mode, NonNegative, NonNegativeFloat, Positive, PositiveFloat,
)
from .schema import Section as _Section
from .schema import invalid as _invalid
from .schema import model_pairs
from .schema import message
from .crosscoder_config import CrosscoderConfig
from .stitching_config import StitchingConfig

PROFILE_DIR = Path(__file__).parent.parent / "profiles"
MODEL_NAMES = REGISTRY.names  # re-exported, like DOMAINS, for callers that imported it from the old config
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # names the run folder: must not climb out or nest


class DataConfig(_Section):
    # "local": <data_dir or $PAPER_DATA_DIR>/<domain>/{train,validation}.jsonl.gz; "hub": the paper's datasets.
    source: Literal["local", "hub"] = "hub"
    data_dir: str | None = None
    # "bpe": byte-level BPE trained on the base mixture; "hub": a pretrained tokenizer from the hub
    # (the paper used Mistral-7B's 32k tokenizer).
    tokenizer: Literal["bpe", "hub"] = "hub"
    hub_tokenizer: str = "mistralai/Mistral-7B-v0.1"
    vocab_size: Positive = 32000
    tokenizer_train_chars: Positive = 20_000_000  # characters of base-mixture text the BPE is trained on
    block_size: Positive = 256
    base_train_tokens: Positive | None = None  # None: all available, split evenly between BabyLM and Python
    finetune_train_tokens: Positive | None = None  # per fine-tuning domain; None: all available
    eval_tokens: Positive = 1_048_576  # validation tokens per domain for loss/accuracy


class ModelConfig(_Section):
    # MistralForCausalLM as in the paper's model card (35.1M parameters with the 32k vocabulary).
    hidden_size: Positive = 512
    intermediate_size: Positive = 1024
    num_hidden_layers: Positive = 1
    num_attention_heads: Positive = 16
    num_key_value_heads: Positive = 8
    rms_norm_eps: PositiveFloat = 1e-6
    rope_theta: PositiveFloat = 10000.0

    @model_validator(mode="after")
    def _heads_fit(self) -> ModelConfig:
        hidden, heads, kv = self.hidden_size, self.num_attention_heads, self.num_key_value_heads
        if hidden % heads:
            fit = max(d for d in range(1, heads) if hidden % d == 0)  # the nearest smaller head count that works
            raise ValueError(
                f"'model.hidden_size' ({hidden}) must be divisible by 'model.num_attention_heads' ({heads}): "
                f"set num_attention_heads to a divisor of {hidden} (e.g. {fit}) "
                "or change hidden_size"
            )
        if heads % kv:
            fit = max(d for d in range(1, kv) if heads % d == 0)
            raise ValueError(
                f"'model.num_attention_heads' ({heads}) must be divisible by 'model.num_key_value_heads' ({kv}): "
                f"set num_key_value_heads to a divisor of {heads} (e.g. {fit})"
            )
        return self


class TrainConfig(_Section):
    learning_rate: PositiveFloat = 6e-4
    lr_scheduler_type: str = "cosine"
    warmup_steps: NonNegative = 0
    weight_decay: NonNegativeFloat = 0.1
    adam_beta1: Beta = 0.9
    adam_beta2: Beta = 0.999
    batch_size: Positive = 64  # blocks per optimiser step
    epochs: PositiveFloat = 3.0  # the model card says 3 (the earliest config said 4)
    eval_batch_size: Positive = 64
    logging_steps: Positive = 50
    save_steps: Positive = 1000  # checkpoint interval, for resuming an interrupted run
    bf16: bool = True  # used only where a CUDA device supports it


def _finetune_defaults() -> TrainConfig:
    return TrainConfig(learning_rate=2e-5, warmup_steps=500, weight_decay=0.01, epochs=1.0)


class MergeConfig(_Section):
    method: Literal["slerp", "linear"] = "slerp"  # "slerp" (mergekit) or "linear"
    t: Fraction = 0.58  # LuaStories: 0.58 of the way from Lua (base_model) to TinyStories
    sweep_stride: Annotated[float, Field(gt=0, le=1)] = 0.05
    dtype: str = "float16"  # dtype the merged checkpoint is written in, as in the paper's mergekit config


class SAEConfig(_Section):
    hook_name: str = "blocks.0.mlp.hook_post"
    expansion_factor: Positive = 16  # 16 x 1024 = 16,384 features
    # Sparsity coefficient per model, tuned so that L0 lands in tens of features per token. The paper's
    # values (3e-4; 3e-3 for TinyStories) are in its own loss scale; SAELens 6's standard SAE sums the MSE
    # over dimensions and weights each feature's L1 by its decoder norm, where 3e-4 leaves L0 in the
    # thousands (measured: 1e-3 -> L0 ~1,700 on the cpu BabyPython). 1.0 gives L0 ~20 on all four cpu models
    # (1,024-d MLP, like the paper's); unmeasured at the paper's scale: check L0 in notebook 04 and adjust.
    # Keys are registry model names, or "default": the coefficient of a model with no entry of its own (profiles
    # merge key by key onto these four entries, so "default" reaches only models added to the registry later).
    l1_coefficient: dict[str, PositiveFloat] = Field(
        default_factory=lambda: {"babypython": 1.0, "lua": 1.0, "tinystories": 1.0, "luastories": 1.0}
    )
    lr: PositiveFloat = 1e-4
    adam_beta1: Beta = 0.9
    adam_beta2: Beta = 0.9999
    context_size: Positive = 24
    train_batch_size_tokens: Positive = 128 * 24
    training_tokens: Positive = 50_000_000
    # SAELens's shuffling buffer holds n_batches_in_buffer * context_size activations (it must be at least
    # one training batch): 512 x 24 = 12,288 tokens, four of the paper's batches.
    n_batches_in_buffer: Positive = 512
    store_batch_size_prompts: Positive = 128  # blocks per language-model forward pass when collecting activations
    # Not stated in the paper (constant Adam rate there): warm-ups and decay as fractions of the training steps.
    lr_warm_up_fraction: Fraction = 0.0
    lr_decay_fraction: Fraction = 0.0  # linear decay to lr/10 over the last fraction of the steps
    l1_warm_up_fraction: Fraction = 0.05  # SAELens's L1 warm-up, which keeps early features from dying
    decoder_init_norm: PositiveFloat = 0.1  # SAELens's heuristic decoder row norm at initialisation (encoder = W_dec.T)
    # The paper's; "mean" or "zeros" also accepted.
    b_dec_init: Literal["geometric_median", "mean", "zeros"] = "geometric_median"
    eval_blocks: Positive = 1000  # held-out validation blocks (of context_size tokens) for diagnostics
    n_checkpoints: NonNegative = 4  # SAELens checkpoints during training, so a killed run resumes; 0: none
    # How SAEs are seeded. "independent": each model's SAE from its own seed, derived from `seed` and the model's
    # name; "shared": the released protocol, every SAE from `seed` (with equal shapes: identical initial weights,
    # which by itself makes features match by index). Notebook 05 trains both and reports both; this picks the
    # SAEs that every other notebook uses.
    init: Literal["independent", "shared"] = "independent"

    @field_validator("l1_coefficient")
    @classmethod
    def _keys_are_models(cls, coefficients: dict[str, float]) -> dict[str, float]:
        unknown = [repr(m) for m in coefficients if m != "default" and m not in REGISTRY]
        if unknown:
            raise _invalid(
                f"names unknown model {', '.join(unknown)}; keys are {', '.join(REGISTRY.names)} or 'default'"
            )
        return coefficients

    @model_validator(mode="after")
    def _batches_fit(self) -> SAEConfig:
        batch, context, buffers = self.train_batch_size_tokens, self.context_size, self.n_batches_in_buffer
        if buffers * context < batch:
            raise ValueError(
                f"'sae.n_batches_in_buffer' x 'sae.context_size' ({buffers} x {context} = {buffers * context} "
                f"activations) must hold one batch of 'sae.train_batch_size_tokens' ({batch}): raise "
                f"n_batches_in_buffer to at least {-(-batch // context)} or lower train_batch_size_tokens"
            )
        if self.training_tokens < batch:
            raise ValueError(
                f"'sae.training_tokens' ({self.training_tokens}) must be at least one batch of "
                f"'sae.train_batch_size_tokens' ({batch}): raise training_tokens or lower train_batch_size_tokens"
            )
        return self


class MatchingConfig(_Section):
    threshold: Annotated[float, Field(gt=0, le=1)] = 0.8
    n_blocks: Positive = 1000  # BabyPython validation blocks of context_size tokens, as in the released code
    context_size: Positive = 24
    # Support guards, chosen from the permutation null (the child's positions shuffled, so every match is false):
    # the smallest guard of the grid (matching.pairs.GUARD_GRID) that keeps the false-match rate at r >= 0.8 at
    # or under 1% of live child features in every pair of the cpu run. Notebook 05 recomputes the recommended
    # guard on every run; raise these where it says so (e.g. at another scale).
    # Token mode: fewest token strings on which both features fired. The released code's pearsonr needs 2, and
    # with 2 (or 3, 5, 8) the null matched 86-100% of features on the cpu run; 34 kept it at or under 0.1%.
    min_token_support: Annotated[int, Field(ge=2)] = 34
    # Position mode: fewest positions where both features fire (0: no guard; two features that each fire once,
    # at the same position, have r = 1). The cpu run's null matched no feature at any guard, so none is set.
    min_coactive: NonNegative = 0
    # The text a pair is matched on: "pair" (both models' data_domains, evenly by tokens) or "babypython" (the
    # released code's sample, BabyLM + Python validation text, for every pair).
    sample: Literal["pair", "babypython"] = "pair"
    # Decoder-direction cosine with a one-to-one assignment and the one-to-one variants of the correlation modes,
    # beside the many-to-many correlation matches (notebook 05's table of methods).
    compare_methods: bool = True
    modes: list[Mode] = Field(default_factory=lambda: ["token", "position"])
    # None: every parent -> child edge of the registry (REGISTRY.edges(); see matching.pairs.matching_pairs), so a
    # new model is matched to its parents without touching the profiles; otherwise a list of [parent, child] names.
    pairs: list[list[str]] | None = None

    @field_validator("modes", "pairs", mode="before")
    @classmethod
    def _tuples_as_lists(cls, value: Any) -> Any:
        # REGISTRY.edges() and callers hand over tuples, which strict mode would refuse as lists.
        if isinstance(value, (list, tuple)):
            return [list(item) if isinstance(item, tuple) else item for item in value]
        return value

    @field_validator("pairs")
    @classmethod
    def _pairs_are_models(cls, pairs: list[list[str]] | None) -> list[list[str]] | None:
        return model_pairs(pairs)


class CaseStudyConfig(_Section):
    n_top_contexts: Positive = 10
    n_search_blocks: Positive = 2000  # validation code blocks scored against the labelled token sets
    # How a feature is chosen for a concept: "pearson" (with the labels) or "f1" (of firing).
    score: Literal["pearson", "f1"] = "pearson"
    # Features are followed through position-mode matches: token mode with the released minimum of 2 shared
    # token strings gives |r| = 1 to chance pairs (on the cpu run 99.9% of features "persisted" that way).
    matching_mode: Mode = "position"


class AutointerpConfig(_Section):
    # "offline", "openai" (any OpenAI-compatible API) or "hf" (local transformers model).
    backend: Literal["offline", "openai", "hf"] = "offline"
    explainer_model: str = "gpt-4-turbo"
    simulator_model: str = "gpt-4-turbo"
    hf_model: str = "Qwen/Qwen2.5-1.5B-Instruct"
    temperature: NonNegativeFloat = 0.0
    n_features: Positive = 100  # features sampled per group
    n_examples: Positive = 40
    n_holdout_blocks: Positive = 20
    n_blocks: Positive = 2000  # Lua validation blocks (of sae.context_size tokens): 80% searched, 20% held out
    # Which matching.modes result defines LuaStories' persisting Lua features (position: see CaseStudyConfig).
    matching_mode: Mode = "position"
    request_timeout_s: PositiveFloat = 60.0  # per HTTP request of the "openai" backend
    max_retries: NonNegative = 5  # retries of a failed request (429, 5xx, timeouts), with exponential backoff


MergeMethod = Literal["linear", "slerp", "task_arithmetic", "ties"]


class DynamicsConfig(_Section):
    """Feature dynamics (notebook 08): checkpoints along each fine-tune, the merge path, merge methods compared."""

    # Snapshots along each fine-tune, as fractions of its tokens (0 is the parent and 1 the fine-tune itself, both
    # always included). They come from a rerun of the fine-tune's first steps with its own schedule and data order.
    fractions: list[Annotated[float, Field(gt=0, lt=1)]] = Field(default_factory=lambda: [0.0625, 0.125, 0.25, 0.5])
    # Snapshots that also get a full SAE of their own, matched to the parent's (to check the drift curve).
    sae_fractions: list[Annotated[float, Field(gt=0, lt=1)]] = Field(default_factory=lambda: [0.25])
    eval_blocks: Positive = 128  # validation blocks (of data.block_size tokens) per domain for each checkpoint
    # The fine-tune is long enough when its last doubling of tokens improved the new domain's validation loss by
    # less than this (relative); notebook 08 reads the verdict from the snapshots' loss curve.
    length_criterion: Annotated[float, Field(gt=0, lt=1)] = 0.02
    methods: list[MergeMethod] = Field(default_factory=lambda: ["linear", "slerp", "task_arithmetic", "ties"])
    merge_points: list[Fraction] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    # TIES keeps this share of each task vector's entries (largest magnitudes): the value of mergekit's examples.
    ties_density: Annotated[float, Field(gt=0, le=1)] = 0.5

    @field_validator("fractions", "sae_fractions", "methods", "merge_points", mode="before")
    @classmethod
    def _tuples_as_lists(cls, value: Any) -> Any:
        return list(value) if isinstance(value, tuple) else value

    @model_validator(mode="after")
    def _sae_fractions_are_snapshots(self) -> DynamicsConfig:
        missing = [f for f in self.sae_fractions if f not in self.fractions]
        if missing:
            raise ValueError(
                f"'dynamics.sae_fractions' {missing} are not snapshots: add them to 'dynamics.fractions' "
                f"({self.fractions}) or remove them"
            )
        return self


LayerPoint = Literal["hook_resid_post", "hook_mlp_out", "mlp.hook_post"]


class LayerwiseConfig(_Section):
    """Layer-wise evolution (notebook 09): the deeper family's shape, per-layer similarity and per-layer SAEs."""

    # Overrides of `model` for the deeper family (the registry gives it 4 layers of the profile's width).
    architecture: dict[str, Any] = Field(default_factory=dict)
    # Where each layer's SAE reads. The residual stream after the layer: the representation the similarity
    # measures compare (Nadipalli's cosine is on it), what a later layer reads, and what model stitching maps.
    hook_point: LayerPoint = "hook_resid_post"
    # Overrides of `sae` for the per-layer SAEs (e.g. a wider dictionary on the narrow residual stream).
    sae: dict[str, Any] = Field(default_factory=dict)
    # The per-layer SAEs' sparsity coefficient per unit of activation scale: each layer's coefficient is this
    # times the RMS norm of the base model's activations at that layer (scaling activations by k is the same
    # problem as scaling the coefficient by k), so every layer is trained under the same pressure relative to the
    # base's scale (the fine-tunes share their base's coefficient at each layer, as the one-layer family shares 1.0).
    # 0.174 is the one-layer family's own pressure on the cpu profile: its coefficient (1.0) over the RMS norm of
    # BabyPython's MLP activations there (5.75). It gave L0 48 of 1,024 features, 0.88 of the variance explained,
    # on the cpu deeper base's second layer; unmeasured at the paper's scale.
    l1_per_rms: PositiveFloat = 0.174
    similarity_blocks: Positive = 32  # validation blocks (of data.block_size tokens) per domain for cosine and CKA
    # The concept whose best feature at each layer notebook 09 shows token by token (case_studies' labels).
    concept: Literal["variable_assignment", "python_exception"] = "variable_assignment"

    @field_validator("architecture")
    @classmethod
    def _architecture_keys(cls, architecture: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(architecture) - set(ModelConfig.model_fields))
        if unknown:
            raise _invalid(f"names unknown model setting(s) {unknown}; settings are {sorted(ModelConfig.model_fields)}")
        return architecture

    @field_validator("sae")
    @classmethod
    def _sae_keys(cls, sae: dict[str, Any]) -> dict[str, Any]:
        reserved = {"hook_name", "l1_coefficient", "init"} & set(sae)
        if reserved:
            raise _invalid(f"sets {sorted(reserved)}: the hook comes from 'layerwise.hook_point' and the sparsity "
                           "from 'layerwise.l1_per_rms'; remove them")
        unknown = sorted(set(sae) - set(SAEConfig.model_fields))
        if unknown:
            raise _invalid(f"names unknown SAE setting(s) {unknown}; settings are {sorted(SAEConfig.model_fields)}")
        return sae


class Config(_Section):
    profile: str = "paper"
    seed: NonNegative = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    pretrain: TrainConfig = Field(default_factory=TrainConfig)
    finetune: TrainConfig = Field(default_factory=_finetune_defaults)
    merge: MergeConfig = Field(default_factory=MergeConfig)
    sae: SAEConfig = Field(default_factory=SAEConfig)
    matching: MatchingConfig = Field(default_factory=MatchingConfig)
    case_studies: CaseStudyConfig = Field(default_factory=CaseStudyConfig)
    autointerp: AutointerpConfig = Field(default_factory=AutointerpConfig)
    dynamics: DynamicsConfig = Field(default_factory=DynamicsConfig)
    layerwise: LayerwiseConfig = Field(default_factory=LayerwiseConfig)
    stitching: StitchingConfig = Field(default_factory=StitchingConfig)
    crosscoder: CrosscoderConfig = Field(default_factory=CrosscoderConfig)

    @model_validator(mode="after")
    def _layerwise_shapes_fit(self) -> Config:
        try:  # the deeper family's model and its SAEs must be valid settings of their sections
            ModelConfig(**{**self.model.model_dump(), **self.layerwise.architecture})
            SAEConfig(**{**self.sae.model_dump(), **self.layerwise.sae})
        except ValidationError as err:
            raise ValueError(f"'layerwise' does not fit: {_message(err, 'layerwise')}") from None
        unknown = sorted(set(self.stitching.architecture) - set(ModelConfig.model_fields))
        if unknown:
            raise ValueError(f"'stitching.architecture' names unknown model setting(s) {unknown}; settings are "
                             f"{sorted(ModelConfig.model_fields)}")
        try:
            small = ModelConfig(**{**self.model.model_dump(), **self.stitching.architecture})
        except ValidationError as err:
            raise ValueError(f"'stitching.architecture' does not fit: {_message(err, 'stitching')}") from None
        if self.stitching.small_layer >= small.num_hidden_layers:
            raise ValueError(f"'stitching.small_layer' is {self.stitching.small_layer}, but the small model has "
                             f"{small.num_hidden_layers} layers: choose 0-{small.num_hidden_layers - 1}")
        return self

    @field_validator("profile")
    @classmethod
    def _profile_is_a_folder_name(cls, name: str) -> str:
        if not PROFILE_NAME.fullmatch(name) or ".." in name:
            pattern = f"^{PROFILE_NAME.pattern}$ without '..' (rename the file or set its 'profile:' key)"
            raise _invalid(f"is {name!r}: a profile name names the run folder, so it must match {pattern}")
        return name

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (round-trips through ``config_from_dict``)."""
        return self.model_dump()


def _message(err: ValidationError, source: str) -> str:
    return message(err, source, Config)


def _merge(base: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated key by key at every depth, as a new dict; a non-dict value replaces."""
    merged = dict(base)
    for key, value in updates.items():
        both_dicts = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if both_dicts else value
    return merged


def _nest(overrides: dict[str, Any]) -> dict[str, Any]:
    """Turn ``{"pretrain.learning_rate": 1e-3}`` into ``{"pretrain": {"learning_rate": 1e-3}}``."""
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        for part in reversed(str(key).split(".")):
            value = {part: value}
        nested = _merge(nested, value)
    return nested


def config_from_dict(values: dict[str, Any], source: str = "<dict>") -> Config:
    """Build a Config from a (possibly partial) nested dict merged key by key onto the defaults, validating it."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: a config must be a mapping of config keys, got {type(values).__name__}")
    try:
        return Config.model_validate(_merge(Config().to_dict(), values))
    except ValidationError as err:
        raise ConfigError(_message(err, source)) from err


def available_profiles() -> list[str]:
    """Names of the profiles shipped with the package."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def _profile_path(profile: str | os.PathLike) -> Path:
    """The YAML file a profile name or path refers to; checks only, creates nothing."""
    text = os.fspath(profile)
    available = ", ".join(available_profiles())
    path = Path(text)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise ConfigError(f"profile file {path} does not exist. Available: {available}")
        return path
    # A name is looked up in PROFILE_DIR only: "../x" or "a/b" must not reach files beside it.
    path = PROFILE_DIR / f"{text}.yaml"
    if not PROFILE_NAME.fullmatch(text) or ".." in text or not path.is_file():
        raise ConfigError(
            f"profile '{text}' not found (no file {path}; a path must end in .yaml or .yml). Available: {available}"
        )
    return path


def load_config(profile: str = "smoke", overrides: dict[str, Any] | None = None) -> Config:
    """Load a profile (a name from ``available_profiles()`` or a path to a YAML file) and apply overrides.

    Overrides are a nested dict or dotted keys, e.g. ``{"pretrain.learning_rate": 1e-3}`` or
    ``{"sae.l1_coefficient.lua": 0.5}`` (papermill parameters pass them this way), merged key by key at every
    depth into the profile, itself merged key by key onto the defaults. Unknown keys, wrong types and values out
    of range raise ConfigError naming the key and the file (or "overrides").
    """
    path = _profile_path(profile)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read the profile as YAML: {err}") from err
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a profile must be a mapping of config keys, got {type(values).__name__}")
    values.setdefault("profile", path.stem)
    cfg = config_from_dict(values, source=str(path))
    if overrides:
        cfg = config_from_dict(_merge(cfg.to_dict(), _nest(dict(overrides))), source="overrides")
    return cfg
