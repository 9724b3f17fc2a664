"""`appo eval` (default command run) and `appo eval compare`, through a parent app as `appo` registers it."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from appo.cli import eval_cmd

runner = CliRunner()


@pytest.fixture(scope="module")
def appo_app() -> typer.Typer:
    parent = typer.Typer()

    @parent.callback()
    def _root() -> None:
        """appo"""

    parent.add_typer(eval_cmd.app, name="eval")
    return parent


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from appo.models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def test_eval_default_command_writes_a_run_and_resumes(appo_app, tiny_dir, shared_data, tmp_path):
    out = tmp_path / "run"
    args = [
        "eval",
        "--model",
        str(tiny_dir),
        "--benchmarks",
        "gsm8k,hotpotqa",
        "--data-dir",
        str(shared_data / "eval"),
        "--n",
        "2",
        "--limit",
        "1",
        "--temperature",
        "1.0",
        "--output",
        str(out),
        "--no-plots",
        "--threads",
        "1",
        "data.max_response_length=12",
    ]
    result = runner.invoke(appo_app, args)
    assert result.exit_code == 0, result.output
    assert "| gsm8k |" in result.output and "| hotpotqa |" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["n"] == 2 and summary["run"]["max_response_length"] == 12
    assert summary["run"]["sampling"]["temperature"] == 1.0
    assert summary["benchmarks"]["gsm8k"]["samples"] == 2 and "pass@2" in summary["benchmarks"]["gsm8k"]
    assert (out / "summary.md").is_file() and (out / "results" / "hotpotqa.jsonl").is_file()
    lines = (out / "results" / "gsm8k.jsonl").read_text().splitlines()
    assert len(lines) == 1 and all(s["response_tokens"] <= 12 for s in json.loads(lines[0])["samples"])
    again = runner.invoke(appo_app, args)
    assert again.exit_code == 0, again.output
    assert (out / "results" / "gsm8k.jsonl").read_text().splitlines() == lines

    # `eval compare` against a second run of the same model
    cmp = runner.invoke(appo_app, ["eval", "compare", str(out), str(out), "--markdown"])
    assert cmp.exit_code == 0, cmp.output
    assert "| gsm8k |" in cmp.output and "(+0.0)" in cmp.output


def _summary(path, acc, calls):
    path.mkdir(parents=True)
    metrics = {
        "questions": 10,
        "n": 2,
        "accuracy": acc,
        "pass@1": acc,
        "pass@2": acc + 0.1,
        "em": acc,
        "f1": acc,
        "tool_calls": calls,
        "tokens_per_answer": 100.0,
    }
    summary = {"benchmarks": {"gsm8k": metrics, "bamboogle": metrics}, "overall": metrics}
    (path / "summary.json").write_text(json.dumps(summary))


def test_compare_prints_differences(appo_app, tmp_path):
    _summary(tmp_path / "a", 0.25, 1.0)
    _summary(tmp_path / "b", 0.40, 2.5)
    result = runner.invoke(
        appo_app, ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--markdown"]
    )
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("| gsm8k |"))
    assert "25.0 → 40.0 (+15.0)" in row and "1.00 → 2.50 (+1.50)" in row
    rich = runner.invoke(appo_app, ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert rich.exit_code == 0 and "+15.0" in rich.output and "bamboogle" in rich.output


def test_errors_and_help(appo_app, tmp_path, shared_data):
    missing = runner.invoke(appo_app, ["eval", "--benchmarks", "nosuch", "--data-dir", str(tmp_path)])
    assert missing.exit_code == 1 and "nosuch" in missing.output and "test.jsonl" in missing.output
    bad_key = runner.invoke(appo_app, ["eval", "--benchmarks", "gsm8k", "actor_rollout_ref.rollout.nn=3"])
    assert bad_key.exit_code == 2
    no_run = runner.invoke(appo_app, ["eval", "compare", str(tmp_path / "x"), str(tmp_path / "y")])
    assert no_run.exit_code == 1 and "summary.json not found" in no_run.output
    helped = runner.invoke(appo_app, ["eval", "--help"])
    assert helped.exit_code == 0 and "compare" in helped.output and "run" in helped.output
    run_help = runner.invoke(appo_app, ["eval", "run", "--help"])
    assert "--benchmarks" in run_help.output and "--n" in run_help.output
