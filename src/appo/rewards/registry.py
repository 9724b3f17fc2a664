"""Name → reward function registry, and the reward that applies to a data source.

``get_reward`` accepts a registered name (``deep_research``, ``qa``, ``math``, ``combined``, ``judge``),
the reference's custom-reward spelling (``deep_research.compute_score``, or a path ending in
``deep_research.py`` with function ``compute_score`` as in VERL's ``custom_reward_function``), or an import
string ``package.module:function`` for user-defined rewards.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from appo.rewards.base import RewardFn
from appo.rewards.llm_judge import judge
from appo.rewards.rule_based import MATH_SOURCES, QA_SOURCES, combined, deep_research, math, qa

_REGISTRY: dict[str, RewardFn] = {
    "deep_research": deep_research,
    "qa": qa,
    "math": math,
    "combined": combined,
    "judge": judge,
}
_ALIASES = {
    "deep_research.compute_score": "deep_research",
    "compute_score": "deep_research",
    "llm_judge": "judge",
    "default": "combined",
}
# data sources of the reference RL parquet files (all trained with deep_research in the reference)
REFERENCE_RL_SOURCES = frozenset(
    {"dr_grpo_mix", "dr_simpledeepsearch0.8k", "dr_nan", "dr_gaia", "dr_hle_100"}
)


def register_reward(name: str, fn: RewardFn, *, overwrite: bool = False) -> None:
    """Register ``fn`` under ``name`` (``ValueError`` if taken unless ``overwrite``)."""
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"reward {name!r} is already registered")
    _REGISTRY[name] = fn


def available_rewards() -> list[str]:
    return sorted(_REGISTRY)


def get_reward(name: str, function_name: str | None = None) -> RewardFn:
    """Resolve a reward by name (see module docstring). ``function_name`` is VERL's
    ``custom_reward_function.name`` when ``name`` is its ``path``."""
    key = name.strip()
    if function_name and key.endswith(".py"):
        stem = Path(key).stem
        key = f"{stem}.{function_name}"
    key = _ALIASES.get(key, key)
    if key in _REGISTRY:
        return _REGISTRY[key]
    if ":" in key:
        module_name, _, attr = key.partition(":")
        try:
            fn: Callable = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise KeyError(f"cannot import reward {name!r}: {exc}") from exc
        return fn  # type: ignore[return-value]
    raise KeyError(f"unknown reward {name!r}; known: {', '.join(available_rewards())} or 'module:function'")


def reward_name_for_source(data_source: str | None, *, parity: bool = False) -> str:
    """Name of the reward that applies to ``data_source``.

    * reference RL sources (``DR_*``): ``combined`` — or ``deep_research`` with ``parity=True`` to
      reproduce the reference exactly (it grades math answers by token F1);
    * math benchmarks (aime24/25, math500, gsm8k, …): ``math``;
    * QA / deep-search benchmarks (hotpotqa, 2wiki, musique, bamboogle, SimpleQA, webwalker, xbench): ``qa``;
    * anything else (gaia, hle, unknown, mixed): ``combined``, which decides per row.

    The papers' headline metric for evaluation is the LLM judge (``judge``); it needs an endpoint, so it is
    never chosen automatically.
    """
    source = (data_source or "").lower()
    if source in REFERENCE_RL_SOURCES:
        return "deep_research" if parity else "combined"
    if source in MATH_SOURCES and not source.startswith("synthetic"):
        return "math"
    if source in QA_SOURCES and not source.startswith(("dr_", "synthetic")):
        return "qa"
    return "combined"


def reward_for_source(data_source: str | None, *, parity: bool = False) -> RewardFn:
    """The reward function for ``data_source`` (see :func:`reward_name_for_source`)."""
    return _REGISTRY[reward_name_for_source(data_source, parity=parity)]


def verl_compute_score(reward: str | RewardFn = "combined") -> Callable[..., dict]:
    """Adapter to VERL's ``compute_score(data_source, solution_str, ground_truth, extra_info)`` contract:
    returns a dict with ``score``, the components, ``reason`` and ``answer``."""
    fn = get_reward(reward) if isinstance(reward, str) else reward

    def compute_score(
        data_source: str | None,
        solution_str: str,
        ground_truth: object,
        extra_info: dict | None = None,
        **kwargs: object,
    ) -> dict:
        extra = dict(extra_info or {})
        result = fn(solution_str, ground_truth, data_source=data_source, extra_info=extra, **kwargs)  # type: ignore[arg-type]
        return result.to_dict()

    return compute_score
