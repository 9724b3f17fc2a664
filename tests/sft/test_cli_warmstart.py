"""`appo sft` command function and the cached warm start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from appo.cli.sft_cmd import sft


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    app.command("sft")(sft)
    return app


def test_cli_bad_override_exits_2(app):
    result = CliRunner().invoke(app, ["sft.lr_scheduler=linear"])
    assert result.exit_code == 2
    assert "sft.lr_scheduler" in result.output


def test_cli_missing_data_file_exits_1(app, overrides, tmp_path):
    result = CliRunner().invoke(
        app, [*overrides(train_files=f"[{tmp_path}/nope.jsonl]"), "-o", str(tmp_path / "run")]
    )
    assert result.exit_code == 1
    assert "nope.jsonl" in result.output


def test_cli_bad_row_names_file_and_line(app, overrides, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps({"conversations": [{"from": "human", "value": "q"}]}) + "\n")
    result = CliRunner().invoke(app, [*overrides(train_files=f"[{data}]"), "-o", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert "bad.jsonl:1" in result.output


def test_cli_trains_and_resumes(app, overrides, tmp_path):
    out = tmp_path / "run"
    args = [*overrides(max_steps=2, save_every=1, eval_every=0), "-o", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "final" / "config.json").is_file()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = CliRunner().invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "Resuming from" in resumed.output


def test_ensure_sft_warm_start_caches_and_rebuilds(tmp_path, monkeypatch, tiny_dir):
    import appo.sft.trainer as trainer_mod
    from appo.config import load_config
    from appo.sft import ensure_sft_warm_start, warm_start_dir
    from appo.sft.warmstart import warm_start_config

    monkeypatch.setenv("APPO_HOME", str(tmp_path / "home"))
    preset = tmp_path / "tiny_sft.yaml"
    preset.write_text(
        "extends: sft_default\nsft:\n  synthetic: {n_python: 2, n_search: 2}\n  max_steps: 2\n"
        "  micro_batch_size: 2\n  save_every: 1\n"
    )
    rl_cfg = load_config("default", [f"actor_rollout_ref.model.path={tiny_dir}", "trainer.device=cpu"])
    calls = []
    real = trainer_mod.SFTRecipe.train

    def counting(self, *a, **k):
        calls.append(1)
        return real(self, *a, **k)

    monkeypatch.setattr(trainer_mod.SFTRecipe, "train", counting)
    path = ensure_sft_warm_start(rl_cfg, preset=str(preset), quiet=True)
    assert path == warm_start_dir(warm_start_config(rl_cfg, str(preset)))
    assert path.parent == tmp_path / "home" / "models" and (path / "appo_manifest.json").is_file()
    manifest = json.loads((path / "appo_manifest.json").read_text())
    assert manifest["base_model"] == str(tiny_dir) and manifest["steps"] == 2
    assert ensure_sft_warm_start(rl_cfg, preset=str(preset), quiet=True) == path
    assert len(calls) == 1  # cached
    # another base model / tool format → another key
    other = load_config("default", [f"actor_rollout_ref.model.path={tiny_dir}/", "trainer.device=cpu"])
    from omegaconf import OmegaConf

    OmegaConf.set_readonly(other, False)
    other.actor_rollout_ref.rollout.tools.result_format = "<result>{result}</result>"
    assert warm_start_dir(warm_start_config(other, str(preset))) != path
    # a broken cache is rebuilt
    (path / "model.safetensors").write_bytes(b"broken")
    assert ensure_sft_warm_start(rl_cfg, preset=str(preset), quiet=True) == path
    assert len(calls) == 2
    assert (path / "model.safetensors").stat().st_size > 1000
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(Path(path))


def test_warm_start_config_uses_preset_and_explicit_rl_sft_keys(tiny_dir):
    from appo.config import load_config
    from appo.sft.warmstart import warm_start_config

    preset = load_config("sft_default")
    rl = load_config("default", [f"actor_rollout_ref.model.path={tiny_dir}"])
    ws = warm_start_config(rl)
    assert ws.sft == preset.sft and ws.actor_rollout_ref.model.path == str(tiny_dir)
    tuned = load_config("default", [f"actor_rollout_ref.model.path={tiny_dir}", "sft.max_steps=7"])
    ws = warm_start_config(tuned)
    assert ws.sft.max_steps == 7 and ws.sft.lr == preset.sft.lr
