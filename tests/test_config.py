from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from appo.config import ConfigError, all_keys, list_presets, load_config, save_config, to_yaml

AR = "actor_rollout_ref"


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_resolves_and_validates(preset: str) -> None:
    cfg = load_config(preset)
    assert cfg.actor_rollout_ref.rollout.n >= 1
    # The resolved YAML loads back to the same tree.
    assert load_config(preset) == cfg


def test_required_presets_exist() -> None:
    assert {
        "default",
        "grpo",
        "arpo",
        "appo_7b_reasoning",
        "appo_8b_deepsearch",
        "appo_14b_deepsearch",
    } <= set(list_presets())


def test_7b_preset_has_official_launch_values() -> None:
    cfg = load_config("appo_7b_reasoning")
    r, a = cfg.actor_rollout_ref.rollout, cfg.actor_rollout_ref.actor
    assert (r.n, r.initial_rollouts, r.tools.call_limit, r.tools.timeout, r.tools.retry_count) == (
        16,
        8,
        3,
        30,
        1,
    )
    assert cfg.algorithm.reward_scale_discount == 0.9
    assert cfg.algorithm.adv_estimator == "appo" and cfg.algorithm.gamma == 1.0
    pl = a.policy_loss
    assert (pl.loss_mode, pl.decay_rate, pl.future_kl_clip_ratio, pl.future_kl_clip_high_only) == (
        "future_kl",
        64,
        0.2,
        True,
    )
    assert (pl.future_kl_weight, pl.safety_thresh, pl.chunk_size) == (1.0, 6.0, 128)
    assert (a.clip_ratio_low, a.clip_ratio_high, a.clip_ratio_c) == (0.2, 0.28, 3.0)
    assert (a.optim.lr, a.kl_loss_coef, a.kl_loss_type, a.use_kl_loss) == (1e-6, 0.001, "low_var_kl", True)
    assert (a.ppo_mini_batch_size, a.loss_agg_mode, a.entropy_coeff) == (16, "token-mean", 0.0)
    assert (cfg.data.train_batch_size, cfg.data.max_prompt_length, cfg.data.max_response_length) == (
        96,
        2048,
        6144,
    )
    assert (cfg.trainer.total_epochs, cfg.trainer.save_freq, cfg.trainer.test_freq) == (2, 20, 1)
    # 2(P+R) and 4(P+R) as the launch script sets them.
    assert a.ppo_max_token_len_per_gpu == 2 * (2048 + 6144)
    assert r.log_prob_max_token_len_per_gpu == 4 * (2048 + 6144)


def test_deepsearch_presets_extend_and_override() -> None:
    c8 = load_config("appo_8b_deepsearch")
    c14 = load_config("appo_14b_deepsearch")
    assert (
        c8.actor_rollout_ref.rollout.tools.call_limit == 6
        and c8.actor_rollout_ref.rollout.tools.timeout == 120
    )
    assert (c8.data.train_batch_size, c8.data.max_response_length) == (128, 10000)
    # Inherited from the 7B preset through `extends`.
    assert c8.actor_rollout_ref.actor.clip_ratio_high == 0.28
    assert c8.actor_rollout_ref.actor.policy_loss.loss_mode == "future_kl"
    assert (c14.actor_rollout_ref.rollout.n, c14.actor_rollout_ref.rollout.initial_rollouts) == (12, 6)
    assert (c14.data.train_batch_size, c14.actor_rollout_ref.actor.ppo_mini_batch_size) == (64, 8)
    assert c14.actor_rollout_ref.rollout.tools.call_limit == 6


def test_schema_defaults_mirror_reference_yaml(tmp_path: Path) -> None:
    # With an empty preset the reference defaults apply (spec §2 "Default" column).
    cfg = load_config(str(_write(tmp_path / "empty.yaml", {})))
    pl = cfg.actor_rollout_ref.actor.policy_loss
    assert (pl.loss_mode, pl.decay_rate, pl.future_kl_clip_high_only, pl.safety_thresh) == (
        "vanilla",
        128,
        False,
        4.0,
    )
    assert cfg.actor_rollout_ref.rollout.tools.call_limit == 5
    assert cfg.actor_rollout_ref.rollout.tools.retry_count == 3
    assert (cfg.data.train_batch_size, cfg.data.max_prompt_length) == (1024, 512)
    assert cfg.actor_rollout_ref.actor.optim.weight_decay == 0.01


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_dotted_overrides_are_typed() -> None:
    cfg = load_config(
        "appo_7b_reasoning",
        [
            f"{AR}.rollout.n=12",
            f"{AR}.rollout.initial_rollouts=6",
            "trainer.logger=[console,wandb]",
            "data.val_batch_size=null",
        ],
    )
    assert cfg.actor_rollout_ref.rollout.n == 12 and isinstance(cfg.actor_rollout_ref.rollout.n, int)
    assert list(cfg.trainer.logger) == ["console", "wandb"]
    assert cfg.data.val_batch_size is None


def test_free_form_tool_instances_accept_new_tools_and_params() -> None:
    cfg = load_config(
        None,
        [
            f"{AR}.rollout.tools.tool_instances.search.params.cache_file=/tmp/c.json",
            f"{AR}.rollout.tools.tool_instances.calc.class_path=my.module.Calc",
        ],
    )
    tools = cfg.actor_rollout_ref.rollout.tools.tool_instances
    assert tools.search.params.cache_file == "/tmp/c.json"
    assert tools.calc.class_path == "my.module.Calc"


@pytest.mark.parametrize(
    ("override", "closest"),
    [
        (f"{AR}.rollout.nn=16", f"{AR}.rollout.n"),
        (f"{AR}.rollout.temprature=0.5", f"{AR}.rollout.temperature"),
        ("rollout.n=16", f"{AR}.rollout.n"),
        (f"{AR}.actor.policy_loss.decay=64", f"{AR}.actor.policy_loss.decay_rate"),
    ],
)
def test_unknown_key_names_the_closest_valid_key(override: str, closest: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    message = str(err.value)
    assert override.split("=")[0] in message
    assert f"closest valid key: {closest}" in message


@pytest.mark.parametrize(
    ("overrides", "key", "given"),
    [
        ([f"{AR}.rollout.initial_rollouts=20", f"{AR}.rollout.n=16"], "initial_rollouts", "20"),
        ([f"{AR}.actor.optim.lr=-1e-6"], "optim.lr", "-1e-06"),
        ([f"{AR}.actor.clip_ratio_low=0"], "clip_ratio_low", "0"),
        ([f"{AR}.actor.clip_ratio_high=-0.1"], "clip_ratio_high", "-0.1"),
        ([f"{AR}.actor.clip_ratio_c=1.0"], "clip_ratio_c", "1.0"),
        ([f"{AR}.rollout.n=abc"], "rollout.n", "abc"),
        (["data.train_batch_size=1.5"], "train_batch_size", "1.5"),
        ([f"{AR}.rollout.top_p=1.5"], "top_p", "1.5"),
        (["algorithm.adv_estimator=gae"], "adv_estimator", "gae"),
        ([f"{AR}.actor.loss_agg_mode=mean"], "loss_agg_mode", "mean"),
        (["data.train_batch_size=6", f"{AR}.actor.ppo_mini_batch_size=4"], "ppo_mini_batch_size", "4"),
        # APPO needs a branch budget K = n - n0 >= 1.
        ([f"{AR}.rollout.initial_rollouts=4", f"{AR}.rollout.n=4"], "initial_rollouts", "4"),
        # A backend that does not exist yet is refused before any work, not silently replaced by hf.
        ([f"{AR}.rollout.name=vllm"], "rollout.name", "vllm"),
        ([f"{AR}.rollout.name=sglang"], "rollout.name", "sglang"),
    ],
)
def test_bad_values_name_key_expectation_and_value(overrides: list[str], key: str, given: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    message = str(err.value)
    assert key in message
    assert given in message
    assert "expected" in message or "could not be converted" in message


def test_grpo_allows_no_branch_budget() -> None:
    cfg = load_config("grpo", [f"{AR}.rollout.n=8"])
    assert cfg.actor_rollout_ref.rollout.initial_rollouts is None


def test_bad_override_syntax_and_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(None, ["actor_rollout_ref.rollout.n"])
    with pytest.raises(ConfigError, match="appo_7b_reasoning"):
        load_config("appo_7b_reasonin")


def test_user_preset_file_with_extends_and_cycle(tmp_path: Path) -> None:
    base = _write(tmp_path / "base.yaml", {"extends": "appo_7b_reasoning", "data": {"train_batch_size": 32}})
    child = _write(
        tmp_path / "child.yaml", {"extends": "base.yaml", "actor_rollout_ref": {"rollout": {"n": 10}}}
    )
    cfg = load_config(str(child))
    assert cfg.data.train_batch_size == 32 and cfg.actor_rollout_ref.rollout.n == 10
    assert cfg.actor_rollout_ref.rollout.initial_rollouts == 8
    _write(tmp_path / "a.yaml", {"extends": "b.yaml"})
    _write(tmp_path / "b.yaml", {"extends": "a.yaml"})
    with pytest.raises(ConfigError, match="cycle"):
        load_config(str(tmp_path / "a.yaml"))
    bad = _write(tmp_path / "bad.yaml", {"trainer": {"totl_epochs": 3}})
    with pytest.raises(ConfigError, match=r"trainer\.total_epochs"):
        load_config(str(bad))
    assert base.exists()


def test_saved_yaml_reloads_identically(tmp_path: Path) -> None:
    cfg = load_config("appo_8b_deepsearch", ["trainer.experiment_name=x"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(str(path)) == cfg
    text = to_yaml(cfg)
    assert "\n    n: 16\n" in text  # not quoted as a YAML 1.1 boolean
    assert "default_local_dir: runs/x" in text  # interpolations resolved


def test_every_spec_key_is_in_the_schema() -> None:
    keys = set(all_keys())
    spec = [
        "algorithm.adv_estimator",
        "algorithm.gamma",
        "algorithm.lam",
        "algorithm.norm_adv_by_std_in_grpo",
        "algorithm.use_kl_in_reward",
        "algorithm.reward_scale_discount",
        "algorithm.kl_ctrl.kl_coef",
        "rollout.n",
        "rollout.initial_rollouts",
        "rollout.appo_dynamic_branching",
        "rollout.reward_scale_discount",
        "rollout.name",
        "rollout.mode",
        "rollout.temperature",
        "rollout.top_p",
        "rollout.top_k",
        "rollout.val_kwargs.temperature",
        "rollout.val_kwargs.n",
        "rollout.val_kwargs.do_sample",
        "rollout.tensor_model_parallel_size",
        "rollout.gpu_memory_utilization",
        "rollout.max_num_batched_tokens",
        "rollout.enable_prefix_caching",
        "rollout.enforce_eager",
        "rollout.free_cache_engine",
        "rollout.log_prob_max_token_len_per_gpu",
        "rollout.tools.call_limit",
        "rollout.tools.max_workers",
        "rollout.tools.timeout",
        "rollout.tools.retry_count",
        "rollout.tools.tool_instances",
        "rollout.beam_size",
        "rollout.branch_probability",
        "rollout.entropy_weight",
        "rollout.multi_turn.enable",
        "rollout.multi_turn.tool_config_path",
        "actor.ppo_mini_batch_size",
        "actor.use_dynamic_bsz",
        "actor.ppo_max_token_len_per_gpu",
        "actor.optim.lr",
        "actor.optim.weight_decay",
        "actor.optim.warmup_style",
        "actor.grad_clip",
        "actor.clip_ratio_low",
        "actor.clip_ratio_high",
        "actor.clip_ratio_c",
        "actor.loss_agg_mode",
        "actor.entropy_coeff",
        "actor.use_kl_loss",
        "actor.kl_loss_coef",
        "actor.kl_loss_type",
        "actor.ppo_epochs",
        "actor.policy_loss.loss_mode",
        "actor.policy_loss.decay_rate",
        "actor.policy_loss.chunk_size",
        "actor.policy_loss.future_kl_clip_ratio",
        "actor.policy_loss.future_kl_clip_high_only",
        "actor.policy_loss.future_kl_weight",
        "actor.policy_loss.safety_thresh",
        "model.enable_gradient_checkpointing",
        "model.use_remove_padding",
    ]
    missing = [k for k in spec if k not in keys and f"{AR}.{k}" not in keys]
    assert not missing
    for key in [
        "data.train_batch_size",
        "data.max_prompt_length",
        "data.max_response_length",
        "data.train_files",
        "data.val_files",
        "reward_model.reward_manager",
        "custom_reward_function.name",
        "trainer.n_gpus_per_node",
        "trainer.nnodes",
        "trainer.total_epochs",
        "trainer.save_freq",
        "trainer.test_freq",
        "trainer.balance_batch",
        "trainer.val_before_train",
        "trainer.critic_warmup",
    ]:
        assert key in keys, key


def test_config_is_read_only() -> None:
    cfg = load_config()
    with pytest.raises(Exception):  # noqa: B017 - omegaconf raises its own ReadonlyConfigError
        cfg.actor_rollout_ref.rollout.n = 3
