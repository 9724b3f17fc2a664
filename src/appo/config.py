"""Typed configuration for appo, using the VERL key tree users already know.

The schema below mirrors the keys of the reference trainer (``../shared/reference/appo-algorithm.md`` §2):
defaults are the reference yaml/code defaults, presets in ``appo/configs/*.yaml`` carry the values of the
official launch scripts. Keys that only exist for reproducing a reference quirk say so in their comment.

Load a config with :func:`load_config` (preset + dotted overrides). Every error — unknown key, wrong type,
out-of-range value, inconsistent combination — raises :class:`ConfigError` whose message names the key,
what was expected and what was given (and, for unknown keys, the closest valid key).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

PRESET_DIR = Path(__file__).parent / "configs"
DEFAULT_PRESET = "default"

ADV_ESTIMATORS = ("appo", "grpo", "arpo")
LOSS_MODES = ("vanilla", "future_kl")
LOSS_AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")
KL_TYPES = ("kl", "abs", "mse", "low_var_kl")
REWARD_SCALE_MODES = ("off", "reference", "advantage")
BRANCHING_SCORES = ("appo", "entropy", "future")
BRANCH_ENTROPIES = ("exact", "topk")
FUTURE_VALUE_SOURCES = ("lagged", "reference", "rollout")
BRANCH_CALL_COUNTERS = ("response", "reference")
# Rollout backends that exist; "vllm" is planned and rejected with a message until it does.
ROLLOUT_NAMES = ("hf",)
DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")
TRUNCATIONS = ("error", "left", "right")
WARMUP_STYLES = ("constant", "cosine")
LOGGERS = ("console", "jsonl", "tensorboard", "wandb")


class ConfigError(ValueError):
    """A configuration problem that should stop the run before any work starts (CLI exit code 2)."""


# --------------------------------------------------------------------------------------------- schema


@dataclass
class SyntheticDataConfig:
    """The seeded synthetic tool tasks used when a files list names "synthetic"."""

    n_python: int = 64
    n_search: int = 64
    seed: int = 0
    # Tasks of each kind held out (the last ones generated) as the validation set.
    val_size: int = 8


@dataclass
class DataConfig:
    # "synthetic" is the seeded tool-task generator (no files needed); otherwise parquet/jsonl paths.
    train_files: list[str] = field(default_factory=lambda: ["synthetic"])
    val_files: list[str] = field(default_factory=lambda: ["synthetic"])
    prompt_key: str = "prompt"
    train_batch_size: int = 1024
    val_batch_size: int | None = None
    max_prompt_length: int = 512
    max_response_length: int = 512
    truncation: str = "error"
    shuffle: bool = True
    seed: int = 1
    skip_bad_rows: bool = False
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)
    # Optional override of the system prompt stored in the data (None keeps the data's own).
    system_prompt: str | None = None


@dataclass
class KLControlConfig:
    type: str = "fixed"
    kl_coef: float = 0.001


@dataclass
class AlgorithmConfig:
    # The reference default is "gae"; appo is critic-free, so only critic-free estimators exist here.
    adv_estimator: str = "grpo"
    # gamma is the discount of the branching FutureValue scan (reference RT:1451), not of the loss.
    gamma: float = 1.0
    lam: float = 1.0
    norm_adv_by_std_in_grpo: bool = True
    use_kl_in_reward: bool = False
    kl_ctrl: KLControlConfig = field(default_factory=KLControlConfig)
    reward_scale_discount: float = 0.9
    # off | reference (official per-token reward scaling, a no-op for end-of-sequence rewards)
    # | advantage (scale the branch credit that reaches prefix tokens: the paper's intent).
    reward_scale_mode: str = "advantage"
    # Paper ablations: appo = Z(H)·Z(V); entropy = Z(H) only ("BS-Ent"); future = Z(V) only.
    branching_score: str = "appo"
    # False puts init and branch rows of a prompt in one advantage group (the "single group" ablation).
    dual_group: bool = True
    # exact = entropy of softmax(logits/T) from the actor; topk = the reference's truncated top-10 estimate.
    branch_entropy: str = "exact"
    # Exclude EOS and tool-closing-tag tokens from split points (the reference allows them).
    exclude_stop_tokens_from_splits: bool = True
    # The policy the FutureValue compares the current one with, ℓ_t = log π_current − log π_b (spec §1.5):
    #   lagged    = the policy future_value_lag steps ago, or an EMA of it (future_value_ema): where recent
    #               learning moves the policy on the suffix; one extra no-grad forward per step.
    #   reference = the initial policy (the KL reference): how far training has moved it on the suffix.
    #   rollout   = the sampler's log-probs (the reference implementation). The sampler and the trainer
    #               share weights here, so ℓ is floating-point noise; kept for parity, with a warning.
    future_value_source: str = "lagged"
    future_value_lag: int = 1
    # Set (e.g. 0.9) to use an EMA of the policy, θ_b ← d·θ_b + (1 − d)·θ after each step, instead of a lag.
    future_value_ema: float | None = None
    # Below this std of ℓ over valid tokens the FutureValue cannot tell tokens apart: warn (rollout), or
    # rank by entropy alone for that step (lagged / reference before the policy has moved).
    future_value_min_std: float = 1e-4


@dataclass
class ModelConfig:
    # An HF model directory, or the embedded default "smollm2-135m-instruct".
    path: str = "smollm2-135m-instruct"
    tokenizer_path: str | None = None
    dtype: str = "auto"
    enable_gradient_checkpointing: bool = True
    use_remove_padding: bool = False
    trust_remote_code: bool = False
    # Start from a cold-start SFT of `path` made with the sft.* settings (cached; built on first use).
    sft_warm_start: bool = False


@dataclass
class OptimConfig:
    lr: float = 1e-6
    lr_warmup_steps: int = -1
    lr_warmup_steps_ratio: float = 0.0
    warmup_style: str = "constant"
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    total_training_steps: int = -1


@dataclass
class PolicyLossConfig:
    loss_mode: str = "vanilla"
    # FIPO future-KL loss: gamma = 2^(-1/decay_rate).
    decay_rate: float = 128.0
    chunk_size: int = 128
    future_kl_clip_ratio: float = 0.2
    future_kl_clip_high_only: bool = False
    future_kl_weight: float = 1.0
    safety_thresh: float = 4.0


@dataclass
class ActorConfig:
    strategy: str = "fsdp2"
    ppo_mini_batch_size: int = 256
    ppo_micro_batch_size_per_gpu: int | None = None
    use_dynamic_bsz: bool = False
    ppo_max_token_len_per_gpu: int = 16384
    grad_clip: float = 1.0
    clip_ratio: float = 0.2
    clip_ratio_low: float = 0.2
    clip_ratio_high: float = 0.2
    clip_ratio_c: float = 3.0
    loss_agg_mode: str = "token-mean"
    entropy_coeff: float = 0.0
    use_kl_loss: bool = False
    kl_loss_coef: float = 0.001
    kl_loss_type: str = "low_var_kl"
    ppo_epochs: int = 1
    shuffle: bool = False
    optim: OptimConfig = field(default_factory=OptimConfig)
    policy_loss: PolicyLossConfig = field(default_factory=PolicyLossConfig)


@dataclass
class ToolInstanceConfig:
    # A short name ("python", "search") or a dotted import path of a tool class.
    class_path: str = "python"
    params: dict[str, Any] = field(default_factory=dict)


def _default_tool_instances() -> dict[str, ToolInstanceConfig]:
    return {
        "python": ToolInstanceConfig(class_path="python", params={}),
        "search": ToolInstanceConfig(
            class_path="search", params={"providers": ["cache", "local"], "cache_file": None, "corpus": None}
        ),
    }


@dataclass
class ToolsConfig:
    call_limit: int = 5
    max_workers: int = 64
    timeout: float = 120.0
    retry_count: int = 3
    verbose_logging: bool = False
    fail_on_error: bool = False
    # The text appended after a tool call; {result} is replaced by the tool output.
    result_format: str = " <result>\n{result}\n</result>"
    # response = a branch's call counter starts at the calls inside its response prefix;
    # reference = also count the closing tags of the prompt (reproduces the reference bug, §3.6).
    branch_call_counter: str = "response"
    tool_instances: dict[str, ToolInstanceConfig] = field(default_factory=_default_tool_instances)


@dataclass
class ValKwargsConfig:
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = -1
    n: int = 1
    do_sample: bool = False


@dataclass
class MultiTurnConfig:
    # Accepted for VERL launch-script compatibility; appo always runs the tool loop in rollouts.
    enable: bool = False
    tool_config_path: str | None = None
    # A tool call over tools.call_limit: eos = append EOS and stop (reference RL, the EOS is masked);
    # message = answer with the reference evaluation's "limit exceeded" result and continue.
    over_limit: str = "eos"
    # An empty or malformed call: message = answer with an error result and continue; stop = end (reference).
    empty_call: str = "message"
    # A search query the trajectory already issued: allow, or message (reference evaluation).
    repeated_query: str = "allow"
    # Treat </answer> as a stop string (evaluation does).
    stop_at_answer: bool = False
    # Cap on sampling rounds per trajectory (the reference has none).
    max_rounds: int = 64


@dataclass
class RolloutConfig:
    name: str = "hf"
    mode: str = "sync_with_tool"
    n: int = 1
    # None means "= n" (no branch budget), the reference's code default.
    initial_rollouts: int | None = None
    appo_dynamic_branching: bool = True
    # Stored but unused by the reference (algorithm.reward_scale_discount is the one read); kept so
    # official launch overrides are accepted.
    reward_scale_discount: float = 0.9
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    do_sample: bool = True
    dtype: str = "auto"
    # Use the sampler's log-probs and entropies as the old policy's when they are the same computation
    # (same weights, dtype and temperature); false always recomputes them with the actor.
    reuse_logprobs: bool = True
    tensor_model_parallel_size: int = 1
    gpu_memory_utilization: float = 0.5
    max_num_batched_tokens: int = 8192
    enable_prefix_caching: bool = True
    enforce_eager: bool = True
    free_cache_engine: bool = True
    log_prob_micro_batch_size_per_gpu: int | None = None
    log_prob_use_dynamic_bsz: bool = False
    log_prob_max_token_len_per_gpu: int = 16384
    # ARPO rollout rule (Appendix A): beam_size - 1 branch attempts per active row and round.
    beam_size: int = 1
    branch_probability: float = 0.5
    entropy_weight: float = 0.5
    # Optional prompt variant of the reference ("cognitive addon", §1.1); nothing in the objective uses it.
    cognitive_addon: bool = False
    val_kwargs: ValKwargsConfig = field(default_factory=ValKwargsConfig)
    multi_turn: MultiTurnConfig = field(default_factory=MultiTurnConfig)
    tools: ToolsConfig = field(default_factory=ToolsConfig)


@dataclass
class FSDPConfig:
    param_offload: bool = False
    optimizer_offload: bool = False


@dataclass
class RefConfig:
    log_prob_micro_batch_size_per_gpu: int | None = None
    log_prob_use_dynamic_bsz: bool = False
    log_prob_max_token_len_per_gpu: int = 16384
    fsdp_config: FSDPConfig = field(default_factory=FSDPConfig)


@dataclass
class ActorRolloutRefConfig:
    hybrid_engine: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    ref: RefConfig = field(default_factory=RefConfig)


@dataclass
class CustomRewardConfig:
    # path=None selects a built-in reward by name (deep_research, qa, math, combined, judge);
    # otherwise a python file and the function name inside it, as in VERL.
    path: str | None = None
    name: str = "combined"


@dataclass
class RewardModelConfig:
    reward_manager: str = "naive"


@dataclass
class TrainerConfig:
    project_name: str = "appo"
    experiment_name: str = "default"
    logger: list[str] = field(default_factory=lambda: ["console", "jsonl"])
    nnodes: int = 1
    n_gpus_per_node: int = 8
    device: str = "auto"
    total_epochs: int = 30
    total_training_steps: int | None = None
    save_freq: int = -1
    test_freq: int = -1
    val_before_train: bool = True
    balance_batch: bool = True
    critic_warmup: int = 0
    default_local_dir: str = "runs/${trainer.experiment_name}"
    resume_mode: str = "auto"
    max_actor_ckpt_to_keep: int | None = None
    seed: int = 1


@dataclass
class SFTSyntheticConfig:
    n_python: int = 96
    n_search: int = 96
    seed: int = 1234
    # Search results per synthetic search call (the search tool's top_k while building traces).
    search_top_k: int = 3


@dataclass
class SFTConfig:
    """Cold-start SFT (`appo sft`). The model is actor_rollout_ref.model.path; tools come from
    actor_rollout_ref.rollout.tools (synthetic traces run the real tools)."""

    # ShareGPT / ARPO-SFT json(l) files, or "synthetic" for traces generated by the task generator.
    train_files: list[str] = field(default_factory=lambda: ["synthetic"])
    val_files: list[str] = field(default_factory=list)
    val_fraction: float = 0.05
    synthetic: SFTSyntheticConfig = field(default_factory=SFTSyntheticConfig)
    # System prompt (appo.data prompt name or .txt path) for rows that carry none; data.system_prompt,
    # when set, replaces every row's system prompt (as in RL).
    prompt: str = "code_search"
    skip_bad_rows: bool = False
    output_dir: str = "runs/sft"
    max_length: int = 1024
    # Sequences longer than max_length: truncate (keep the head) or drop.
    overlong: str = "truncate"
    micro_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    packing: bool = False
    epochs: int = 1
    max_steps: int = -1
    lr: float = 5e-5
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.05
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    grad_clip: float = 1.0
    # False reproduces the reference (LLaMA-Factory trains on tool results too).
    mask_tool_results: bool = True
    eval_every: int = 50
    save_every: int = 100
    keep_last: int = 2
    gradient_checkpointing: bool = False
    # auto = float32 weights (+ bf16 autocast on CUDA with bf16 support); float32 | bfloat16 | float16.
    dtype: str = "auto"
    seed: int = 1


@dataclass
class AppoConfig:
    data: DataConfig = field(default_factory=DataConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    actor_rollout_ref: ActorRolloutRefConfig = field(default_factory=ActorRolloutRefConfig)
    custom_reward_function: CustomRewardConfig = field(default_factory=CustomRewardConfig)
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)


# Sub-trees whose keys are free-form (user-named tools, tool parameters).
_FREE_FORM = ("actor_rollout_ref.rollout.tools.tool_instances",)


# --------------------------------------------------------------------------------------------- loading


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _preset_path(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate
    packaged = PRESET_DIR / f"{name_or_path}.yaml"
    if packaged.is_file():
        return packaged
    if candidate.suffix in (".yaml", ".yml"):
        raise ConfigError(f"config file not found: {name_or_path}")
    close = difflib.get_close_matches(name_or_path, list_presets(), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ConfigError(
        f"unknown preset '{name_or_path}'{hint} (presets: {', '.join(list_presets())}; or pass a .yaml path)"
    )


def _read_preset(name_or_path: str, chain: tuple[str, ...] = ()) -> list[tuple[Path, dict]]:
    """Return the preset and its ancestors (via ``extends:``), base first."""
    path = _preset_path(name_or_path)
    key = str(path.resolve())
    if key in chain:
        raise ConfigError(f"preset cycle: {' -> '.join([*chain, key])}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a preset must be a mapping at top level, got {type(raw).__name__}")
    parent = raw.pop("extends", None)
    layers: list[tuple[Path, dict]] = []
    if parent is not None:
        for name in [parent] if isinstance(parent, str) else list(parent):
            # A relative parent path is resolved next to the child file.
            sibling = path.parent / name
            ref = str(sibling) if sibling.suffix in (".yaml", ".yml") and sibling.is_file() else name
            layers.extend(_read_preset(ref, (*chain, key)))
    layers.append((path, raw))
    return layers


def all_keys(node: Any = None, prefix: str = "") -> list[str]:
    """Every valid dotted key path of the schema (free-form sub-trees are listed by their root)."""
    if node is None:
        node = OmegaConf.structured(AppoConfig)
    keys = []
    for k in node:
        path = f"{prefix}{k}"
        keys.append(path)
        child = node[k] if not OmegaConf.is_missing(node, k) else None
        if isinstance(child, DictConfig) and path not in _FREE_FORM:
            keys.extend(all_keys(child, f"{path}."))
    return keys


def _closest_key(bad: str) -> str | None:
    keys = all_keys()
    # A key given without its full prefix (`rollout.n`) matches the unique key it is a suffix of.
    suffixed = [k for k in keys if k.endswith("." + bad)]
    if len(suffixed) == 1:
        return suffixed[0]
    parent = bad.rsplit(".", 1)[0] if "." in bad else ""
    # Prefer siblings (same parent) so `rollout.nn` suggests `rollout.n`, not an unrelated leaf.
    siblings = [k for k in keys if k.rsplit(".", 1)[0] == parent] if parent else []
    for pool in (siblings, keys):
        close = difflib.get_close_matches(bad, pool, n=1, cutoff=0.5)
        if close:
            return close[0]
    leaf = bad.rsplit(".", 1)[-1]
    by_leaf = [k for k in keys if k.rsplit(".", 1)[-1] == leaf]
    return by_leaf[0] if by_leaf else None


def _unknown_key_error(key: str, source: str) -> ConfigError:
    close = _closest_key(key)
    hint = f"; closest valid key: {close}" if close else ""
    return ConfigError(f"unknown config key '{key}' (from {source}){hint}")


def _merge(
    base: DictConfig, layer: DictConfig | dict, source: str, override_key: str | None = None
) -> DictConfig:
    try:
        return OmegaConf.merge(base, layer)
    except ConfigKeyError as exc:
        key = override_key or getattr(exc, "full_key", None) or str(exc)
        raise _unknown_key_error(key, source) from exc
    except ValidationError as exc:
        key = getattr(exc, "full_key", "?")
        raise ConfigError(f"invalid value for '{key}' (from {source}): {_first_line(exc)}") from exc
    except OmegaConfBaseException as exc:
        raise ConfigError(f"invalid configuration (from {source}): {_first_line(exc)}") from exc


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


_OVERRIDE = re.compile(r"^\+?(?P<key>[A-Za-z_][\w.\-]*)=(?P<value>.*)$", re.S)


def parse_overrides(overrides: Iterable[str]) -> list[tuple[str, Any]]:
    """Parse ``a.b.c=value`` strings; values are read as YAML (``16`` → int, ``[a,b]`` → list, ``null``)."""
    parsed = []
    for text in overrides:
        match = _OVERRIDE.match(text)
        if not match:
            raise ConfigError(
                f"bad override '{text}': expected KEY=VALUE with a dotted key, e.g. data.seed=3"
            )
        raw = match["value"]
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        parsed.append((match["key"], value))
    return parsed


def _nest(key: str, value: Any) -> dict:
    out: dict = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def load_config(preset: str | None = None, overrides: Sequence[str] = ()) -> DictConfig:
    """Resolve ``preset`` (a name in ``appo/configs`` or a yaml path; default ``default``) plus dotted
    ``overrides`` into a validated, read-only config. Raises :class:`ConfigError` on any problem."""
    cfg = OmegaConf.structured(AppoConfig)
    for path, raw in _read_preset(preset or DEFAULT_PRESET):
        cfg = _merge(cfg, raw, str(path))
    for key, value in parse_overrides(overrides):
        cfg = _merge(cfg, _nest(key, value), "command-line override", override_key=key)
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot resolve interpolation: {_first_line(exc)}") from exc
    validate(cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    """The fully resolved YAML of a config: what `appo config show` prints and every run saves."""
    # PyYAML rather than OmegaConf's dumper, which quotes the key `n` ('n': 16) as a YAML 1.1 boolean.
    return yaml.safe_dump(OmegaConf.to_container(cfg, resolve=True), sort_keys=False, allow_unicode=True)


def save_config(cfg: DictConfig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(to_yaml(cfg))
    tmp.replace(path)
    return path


def load_saved_config(path: str | Path) -> DictConfig:
    """Load a config previously written by :func:`save_config` (e.g. from a run directory)."""
    return load_config(str(path))


# --------------------------------------------------------------------------------------------- validation


def _check(cond: bool, key: str, expected: str, value: Any) -> None:
    if not cond:
        raise ConfigError(f"invalid value for '{key}': expected {expected}, got {value!r}")


def _one_of(cfg: DictConfig, key: str, choices: Sequence[str]) -> None:
    value = OmegaConf.select(cfg, key)
    _check(value in choices, key, f"one of {', '.join(choices)}", value)


def _positive(cfg: DictConfig, key: str, strict: bool = True) -> None:
    value = OmegaConf.select(cfg, key)
    if strict:
        _check(value is not None and value > 0, key, "a number > 0", value)
    else:
        _check(value is not None and value >= 0, key, "a number >= 0", value)


def validate(cfg: DictConfig) -> None:
    """Range and consistency checks that types alone cannot express."""
    ar = "actor_rollout_ref"
    _check(
        cfg.actor_rollout_ref.rollout.name != "vllm",
        f"{ar}.rollout.name",
        "hf (the vLLM backend is not available yet; the HF engine runs on CPU and CUDA)",
        "vllm",
    )
    for key, choices in [
        ("algorithm.adv_estimator", ADV_ESTIMATORS),
        ("algorithm.reward_scale_mode", REWARD_SCALE_MODES),
        ("algorithm.branching_score", BRANCHING_SCORES),
        ("algorithm.branch_entropy", BRANCH_ENTROPIES),
        ("algorithm.future_value_source", FUTURE_VALUE_SOURCES),
        (f"{ar}.actor.policy_loss.loss_mode", LOSS_MODES),
        (f"{ar}.actor.loss_agg_mode", LOSS_AGG_MODES),
        (f"{ar}.actor.kl_loss_type", KL_TYPES),
        (f"{ar}.actor.optim.warmup_style", WARMUP_STYLES),
        (f"{ar}.rollout.name", ROLLOUT_NAMES),
        (f"{ar}.rollout.dtype", DTYPES),
        (f"{ar}.rollout.tools.branch_call_counter", BRANCH_CALL_COUNTERS),
        (f"{ar}.model.dtype", DTYPES),
        ("data.truncation", TRUNCATIONS),
        ("trainer.device", DEVICES),
        ("trainer.resume_mode", ("auto", "disable")),
        (f"{ar}.rollout.multi_turn.over_limit", ("eos", "message")),
        (f"{ar}.rollout.multi_turn.empty_call", ("message", "stop")),
        (f"{ar}.rollout.multi_turn.repeated_query", ("allow", "message")),
    ]:
        _one_of(cfg, key, choices)

    for key in [
        "data.train_batch_size",
        "data.max_prompt_length",
        "data.max_response_length",
        f"{ar}.rollout.n",
        f"{ar}.rollout.temperature",
        f"{ar}.rollout.top_p",
        f"{ar}.rollout.beam_size",
        f"{ar}.rollout.multi_turn.max_rounds",
        f"{ar}.rollout.val_kwargs.n",
        f"{ar}.rollout.tools.max_workers",
        f"{ar}.rollout.tools.timeout",
        f"{ar}.rollout.tools.retry_count",
        f"{ar}.actor.ppo_mini_batch_size",
        f"{ar}.actor.ppo_max_token_len_per_gpu",
        f"{ar}.actor.ppo_epochs",
        f"{ar}.actor.grad_clip",
        f"{ar}.actor.clip_ratio",
        f"{ar}.actor.clip_ratio_low",
        f"{ar}.actor.clip_ratio_high",
        f"{ar}.actor.optim.lr",
        f"{ar}.actor.policy_loss.decay_rate",
        f"{ar}.actor.policy_loss.chunk_size",
        "trainer.nnodes",
        "trainer.n_gpus_per_node",
        "trainer.total_epochs",
    ]:
        _positive(cfg, key)
    for key in [
        f"{ar}.rollout.tools.call_limit",
        f"{ar}.rollout.val_kwargs.temperature",
        f"{ar}.actor.entropy_coeff",
        f"{ar}.actor.kl_loss_coef",
        f"{ar}.actor.optim.weight_decay",
        f"{ar}.actor.policy_loss.future_kl_weight",
        f"{ar}.actor.policy_loss.safety_thresh",
        "algorithm.kl_ctrl.kl_coef",
    ]:
        _positive(cfg, key, strict=False)

    rollout = cfg.actor_rollout_ref.rollout
    actor = cfg.actor_rollout_ref.actor
    _check(rollout.top_p <= 1.0, f"{ar}.rollout.top_p", "a number in (0, 1]", rollout.top_p)
    _check(rollout.top_k == -1 or rollout.top_k > 0, f"{ar}.rollout.top_k", "-1 (off) or > 0", rollout.top_k)
    _check(0 < cfg.algorithm.gamma <= 1.0, "algorithm.gamma", "a number in (0, 1]", cfg.algorithm.gamma)
    _check(
        cfg.algorithm.future_value_lag >= 1,
        "algorithm.future_value_lag",
        "an integer >= 1 (steps behind the current policy)",
        cfg.algorithm.future_value_lag,
    )
    ema = cfg.algorithm.future_value_ema
    _check(ema is None or 0 <= ema < 1, "algorithm.future_value_ema", "null or a number in [0, 1)", ema)
    _check(
        0 <= cfg.algorithm.reward_scale_discount <= 1.0,
        "algorithm.reward_scale_discount",
        "a number in [0, 1]",
        cfg.algorithm.reward_scale_discount,
    )
    _check(
        actor.clip_ratio_c > 1.0, f"{ar}.actor.clip_ratio_c", "a number > 1 (dual-clip)", actor.clip_ratio_c
    )
    _check(
        0.0 <= rollout.branch_probability <= 1.0,
        f"{ar}.rollout.branch_probability",
        "a number in [0, 1]",
        rollout.branch_probability,
    )
    _check(
        0.0 < rollout.gpu_memory_utilization <= 1.0,
        f"{ar}.rollout.gpu_memory_utilization",
        "a number in (0, 1]",
        rollout.gpu_memory_utilization,
    )
    n0 = rollout.initial_rollouts
    if n0 is not None:
        _check(
            1 <= n0 <= rollout.n,
            f"{ar}.rollout.initial_rollouts",
            f"an integer in [1, rollout.n = {rollout.n}]",
            n0,
        )
    if cfg.algorithm.adv_estimator == "appo":
        budget = rollout.n - (n0 if n0 is not None else rollout.n)
        _check(
            budget >= 1,
            f"{ar}.rollout.initial_rollouts",
            f"fewer than rollout.n = {rollout.n} with adv_estimator=appo "
            "(the branch budget K = n - initial_rollouts must be >= 1)",
            n0,
        )
    _check(
        cfg.data.train_batch_size % actor.ppo_mini_batch_size == 0,
        f"{ar}.actor.ppo_mini_batch_size",
        f"a divisor of data.train_batch_size = {cfg.data.train_batch_size}",
        actor.ppo_mini_batch_size,
    )
    _check(
        actor.ppo_mini_batch_size <= cfg.data.train_batch_size,
        f"{ar}.actor.ppo_mini_batch_size",
        f"at most data.train_batch_size = {cfg.data.train_batch_size}",
        actor.ppo_mini_batch_size,
    )
    for name, inst in rollout.tools.tool_instances.items():
        key = f"{ar}.rollout.tools.tool_instances.{name}.class_path"
        _check(
            isinstance(inst.class_path, str) and inst.class_path != "",
            key,
            "a tool name or class path",
            inst.class_path,
        )
    for name in cfg.trainer.logger:
        _check(name in LOGGERS, "trainer.logger", f"a list of {', '.join(LOGGERS)}", list(cfg.trainer.logger))
    _check(
        isinstance(cfg.data.train_files, ListConfig) and len(cfg.data.train_files) > 0,
        "data.train_files",
        "a non-empty list of files (or 'synthetic')",
        cfg.data.train_files,
    )
