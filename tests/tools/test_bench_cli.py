from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from appo.cli import search_cmd, tool_cmd

REPO = Path(__file__).resolve().parents[2]


def _app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(tool_cmd.app, name="tool")
    app.add_typer(search_cmd.app, name="search")
    return app


def test_bench_quick_mode():
    spec = importlib.util.spec_from_file_location("bench_tools", REPO / "bench" / "tools.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main(["--quick", "--json"])
    assert res["calls"] == 8
    assert res["python_speedup"] > 0 and res["search_speedup"] > 0
    assert 0 < res["python_session_start_median_s"] < 10


def test_tool_run_cli_python_and_exit_codes():
    r = CliRunner().invoke(_app(), ["tool", "run", "python", "x = 6\nx * 7"])
    assert r.exit_code == 0 and r.stdout.startswith(" <result>\n42\n</result>")
    r = CliRunner().invoke(_app(), ["tool", "run", "python", "1/0"])
    assert r.exit_code == 0 and "ZeroDivisionError" in r.stdout  # the tool worked; the code failed
    r = CliRunner().invoke(_app(), ["tool", "run", "pyton", "1"])
    assert r.exit_code == 1 and "did you mean 'python'" in r.output
    r = CliRunner().invoke(_app(), ["tool", "run", "python", "--info"])
    assert r.exit_code == 0 and "protections" in json.loads(r.stdout)


def test_tool_run_cli_search_with_cache_override(search_cache_file):
    data = json.loads(search_cache_file.read_text(encoding="utf-8"))
    key = next(k for k in data if k == k.strip() and len(k) < 100)
    over = f"actor_rollout_ref.rollout.tools.tool_instances.search.params.cache_file={search_cache_file}"
    r = CliRunner().invoke(_app(), ["tool", "run", "search", key, over, "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["ok"] and out["metadata"]["cache_hit"] and out["text"] == data[key]
    bad = "actor_rollout_ref.rollout.tools.tool_instances.search.params.top_kk=3"
    r = CliRunner().invoke(_app(), ["tool", "run", "search", "q", bad])
    assert r.exit_code == 1 and "top_k" in r.output


def test_search_index_cli(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(
        '{"id": "1", "title": "Owls", "text": "Owls hunt at night."}\n'
        '{"id": "2", "title": "Bees", "text": "Bees make honey."}\n'
    )
    r = CliRunner().invoke(_app(), ["search", "index", str(corpus), "--out", str(tmp_path / "idx")])
    assert r.exit_code == 0 and "indexed 2 documents" in r.stdout
    r = CliRunner().invoke(_app(), ["search", "query", "who makes honey", "--corpus", str(tmp_path / "idx")])
    assert r.exit_code == 0 and r.stdout.startswith("Page 1: Bees: Bees make honey.")
    r = CliRunner().invoke(_app(), ["search", "index", str(tmp_path / "missing.jsonl")])
    assert r.exit_code == 1
