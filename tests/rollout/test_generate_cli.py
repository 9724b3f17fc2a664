from __future__ import annotations

import json

from typer.testing import CliRunner

from appo.cli import app


def test_generate_prints_trajectories_and_summary(tmp_path):
    from appo.models import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny")
    out = tmp_path / "gen.jsonl"
    result = CliRunner().invoke(
        app,
        [
            "generate",
            "--model",
            str(model),
            "--synthetic",
            "2",
            "--n",
            "2",
            "-o",
            str(out),
            "data.max_response_length=12",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "well-formed" in result.output and "finish=" in result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 4
    assert all(1 <= r["response_tokens"] <= 12 and r["reward"] == -1.0 for r in records)
    assert all(r["question"] and r["ground_truth"] for r in records)


def test_generate_needs_a_question():
    result = CliRunner().invoke(app, ["generate"])
    assert result.exit_code == 2
    assert "--synthetic" in result.output
