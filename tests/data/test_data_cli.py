"""`appo data inspect` / `appo data synth` through typer's CliRunner on the sub-app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from appo.cli.data_cmd import app
from appo.data import rl_path, shared_data_dir

runner = CliRunner()
needs_data = pytest.mark.skipif(
    not (shared_data_dir() / "rl").is_dir(), reason=f"shared data folder not found at {shared_data_dir()}"
)


@needs_data
def test_inspect_rl_parquet() -> None:
    result = runner.invoke(app, ["inspect", str(rl_path("valid")), "--rows", "2"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "reward_model" in out and "struct<ground_truth: string" in out  # schema
    assert "rows: 180" in out
    assert "DR_grpo_mix" in out and "combined" in out and "deep_research" in out  # reward that applies
    assert "valid-0" in out and "valid-1" in out and "valid-2" not in out  # sample
    assert "Eleanor Of Lancaster" in out


@needs_data
def test_inspect_eval_jsonl() -> None:
    result = runner.invoke(
        app, ["inspect", str(shared_data_dir() / "eval" / "gsm8k" / "test.jsonl"), "-n", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "rows: 1319" in result.output
    assert "idx" in result.output and "gsm8k-0" in result.output and "18" in result.output
    assert "math" in result.output


def test_inspect_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "hotpotqa" / "test.jsonl"
    path.parent.mkdir()
    path.write_text('{"question": "q", "answer": ["a"]}\n{"question": "q2"}\n', encoding="utf-8")
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 1
    assert "row 2" in result.output and "'answer' is missing" in result.output
    result = runner.invoke(app, ["inspect", str(path), "--skip-bad-rows"])
    assert result.exit_code == 0, result.output
    assert "rows: 1" in result.output and "skipped bad rows: 1" in result.output
    assert "qa" in result.output


def test_inspect_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["inspect", str(tmp_path / "nope.parquet")])
    assert result.exit_code == 1
    assert "no such file" in result.output


def test_synth(tmp_path: Path) -> None:
    result = runner.invoke(app, ["synth", str(tmp_path), "--n-python", "2", "--n-search", "3", "--seed", "5"])
    assert result.exit_code == 0, result.output
    tasks = [json.loads(x) for x in (tmp_path / "tasks.jsonl").read_text().splitlines()]
    corpus = [json.loads(x) for x in (tmp_path / "corpus.jsonl").read_text().splitlines()]
    assert len(tasks) == 5 and len(corpus) == 12
    result = runner.invoke(app, ["inspect", str(tmp_path / "tasks.jsonl")])
    assert result.exit_code == 0, result.output


def test_synth_output_round_trips_through_the_reader(tmp_path: Path) -> None:
    from appo.data import generate_synthetic, read_examples

    runner.invoke(app, ["synth", str(tmp_path), "--n-python", "2", "--n-search", "2"])
    examples, _ = read_examples(tmp_path / "tasks.jsonl")
    expected = generate_synthetic(2, 2, seed=0).examples
    assert [e.to_dict() for e in examples] == [e.to_dict() for e in expected]
