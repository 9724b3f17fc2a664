from __future__ import annotations

import subprocess
import sys

import yaml
from typer.testing import CliRunner

from appo import __version__
from appo.cli import app

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_config_show_prints_resolved_yaml_with_override() -> None:
    result = runner.invoke(app, ["config", "show", "actor_rollout_ref.rollout.n=16"])
    assert result.exit_code == 0, result.output
    tree = yaml.safe_load(result.output)
    assert tree["actor_rollout_ref"]["rollout"]["n"] == 16
    assert "\n    n: 16\n" in result.output


def test_config_show_preset_and_output_file(tmp_path) -> None:
    out = tmp_path / "resolved.yaml"
    result = runner.invoke(
        app,
        ["config", "show", "--config", "appo_7b_reasoning", "actor_rollout_ref.rollout.n=12", "-o", str(out)],
    )
    assert result.exit_code == 0, result.output
    tree = yaml.safe_load(out.read_text())
    assert tree["actor_rollout_ref"]["rollout"]["n"] == 12
    assert tree["actor_rollout_ref"]["rollout"]["initial_rollouts"] == 8
    assert yaml.safe_load(result.output) == tree


def test_unknown_key_exits_2_naming_closest() -> None:
    result = runner.invoke(app, ["config", "show", "actor_rollout_ref.rollout.nn=16"])
    assert result.exit_code == 2
    assert "actor_rollout_ref.rollout.n" in result.output


def test_inconsistent_values_exit_2() -> None:
    result = runner.invoke(
        app,
        ["config", "show", "actor_rollout_ref.rollout.initial_rollouts=20", "actor_rollout_ref.rollout.n=16"],
    )
    assert result.exit_code == 2
    assert "initial_rollouts" in result.output and "20" in result.output


def test_config_list_and_keys() -> None:
    listed = runner.invoke(app, ["config", "list"])
    assert listed.exit_code == 0 and "appo_7b_reasoning" in listed.output
    keys = runner.invoke(app, ["config", "keys", "actor_rollout_ref.actor.policy_loss"])
    assert keys.exit_code == 0
    assert "actor_rollout_ref.actor.policy_loss.decay_rate" in keys.output.split()


def test_console_script_entry_point() -> None:
    # The installed `appo` script, as a user runs it: exit code 2 and the message on stderr.
    proc = subprocess.run(
        [sys.executable, "-m", "appo", "config", "show", "actor_rollout_ref.rollout.nn=1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "closest valid key: actor_rollout_ref.rollout.n" in proc.stderr
