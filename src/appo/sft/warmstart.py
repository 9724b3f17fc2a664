"""A cached SFT warm start of the RL run's base model (the default RL run starts from it).

:func:`ensure_sft_warm_start` trains the ``sft_default`` preset once on the base model named by the RL
config and caches the result under ``$APPO_HOME/models/sft-warmstart-<hash>/``, keyed by a hash of
everything that determines it (the preset's ``sft`` section, base model, tools settings, system
prompt, trace-generator version). Like the embedded default model, the directory counts as complete
only when its manifest lists every file with the right size; the manifest is written last and the
directory is moved into place atomically, so a broken or partial cache is rebuilt. The training run
itself lives in ``$APPO_HOME/runs/sft-warmstart-<hash>/`` and resumes from its last checkpoint if a
previous build was interrupted.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["TRACE_VERSION", "ensure_sft_warm_start", "warm_start_config", "warm_start_dir"]

#: bump when the synthetic traces or the encoding change, so cached warm starts are rebuilt
TRACE_VERSION = 1
MANIFEST = "appo_manifest.json"


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def warm_start_config(cfg: DictConfig | None = None, preset: str = "sft_default") -> DictConfig:
    """The preset, with the base model, tool result format, system prompt and device of ``cfg`` (the RL
    run), and every ``sft.*`` key that ``cfg`` sets to a non-default value (so an RL config can tune
    its warm start; ``output_dir`` is ignored)."""
    from appo.config import SFTConfig, load_config

    sft_cfg = load_config(preset)
    if cfg is None:
        return sft_cfg
    defaults = _flat(OmegaConf.to_container(OmegaConf.structured(SFTConfig), resolve=True))
    given = _flat(OmegaConf.to_container(cfg.sft, resolve=True))
    changed = {k: v for k, v in given.items() if k != "output_dir" and defaults.get(k, object()) != v}
    OmegaConf.set_readonly(sft_cfg, False)
    sft_cfg.actor_rollout_ref.model.path = cfg.actor_rollout_ref.model.path
    sft_cfg.actor_rollout_ref.rollout.tools.result_format = cfg.actor_rollout_ref.rollout.tools.result_format
    sft_cfg.data.system_prompt = cfg.data.system_prompt
    sft_cfg.trainer.device = cfg.trainer.device
    for key, value in changed.items():
        OmegaConf.update(sft_cfg, f"sft.{key}", value, merge=False)
    OmegaConf.set_readonly(sft_cfg, True)
    from appo.sft.trainer import validate_sft_config

    validate_sft_config(sft_cfg)
    return sft_cfg


def warm_start_dir(sft_cfg: DictConfig) -> Path:
    from appo.models import appo_home
    from appo.sft.trainer import sft_section_hash

    key = sft_section_hash(sft_cfg, {"trace_version": TRACE_VERSION})
    return appo_home() / "models" / f"sft-warmstart-{key}"


def ensure_sft_warm_start(
    cfg: DictConfig | None = None,
    *,
    preset: str = "sft_default",
    quiet: bool = False,
    force: bool = False,
) -> Path:
    """Path of the warm-started model for the RL config ``cfg`` (an HF directory), trained on first use.

    ``cfg`` supplies the base model (``actor_rollout_ref.model.path``), the tool result format, the
    system prompt override and the device; everything else comes from ``preset``."""
    from appo.models import appo_home, cache_problem
    from appo.models.default import cache_lock, write_manifest
    from appo.sft.trainer import run_sft

    sft_cfg = warm_start_config(cfg, preset)
    target = warm_start_dir(sft_cfg)
    if not force and cache_problem(target) is None:
        return target
    with cache_lock(target.name):
        problem = cache_problem(target)
        if not force and problem is None:
            return target
        if not quiet and target.exists() and problem:
            from rich.console import Console

            Console(stderr=True).print(f"[yellow]Rebuilding the SFT warm start:[/] {problem}")
        run_dir = appo_home() / "runs" / target.name
        if force and run_dir.exists():
            shutil.rmtree(run_dir)
        result = run_sft(sft_cfg, output_dir=run_dir, resume=True, progress=not quiet)
        tmp = target.parent / f".{target.name}.build-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        shutil.copytree(result.final_dir, tmp)
        write_manifest(
            tmp,
            name=target.name,
            base_model=str(sft_cfg.actor_rollout_ref.model.path),
            preset=preset,
            steps=result.steps,
            eval_loss=result.eval_loss,
            trace_version=TRACE_VERSION,
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    return target
