"""bench/learning.py's table: mean ± std over seeds of validation before/after, the baseline row, and
sampled tokens counted with branch tokens — from finished run folders (no training here)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "learning.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_learning", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_run(folder: Path, before: float, after: float, tokens: tuple[int, int], wall: float) -> None:
    folder.mkdir(parents=True)
    records = [
        {"step": 0, "val/reward_mean": before, "val/format_ok": 0.5},
        {
            "step": 1,
            "critic/score/init_mean": 0.1,
            "rollout/tokens_sampled": tokens[0],
            "branch_rollout/tokens_sampled": tokens[1],
        },
        {
            "step": 2,
            "critic/score/init_mean": 0.3,
            "rollout/tokens_sampled": tokens[0],
            "val/reward_mean": after,
            "val/format_ok": 1.0,
        },
    ]
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    (folder / "bench_done.json").write_text(json.dumps({"wall_s": wall}))


def test_summary_table_reports_seed_spread_baseline_and_sampled_tokens(tmp_path):
    bench = _bench()
    _fake_run(tmp_path / "synthetic" / "appo_lagged" / "seed1", 0.5, 0.7, (100, 40), 60)
    _fake_run(tmp_path / "synthetic" / "appo_lagged" / "seed2", 0.5, 0.9, (100, 60), 120)
    _fake_run(tmp_path / "synthetic" / "grpo" / "seed1", 0.5, 0.6, (150, 0), 90)
    text = bench.summarise(tmp_path, ["synthetic"], ["appo_lagged", "grpo"], [1, 2])
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in text.splitlines()
        if line.startswith("| ")
    }
    assert rows["untrained warm start (baseline)"][1] == "0.500 ± 0.000"
    appo = rows["appo_lagged"]
    assert appo[0] == "2" and appo[2] == "0.800 ± 0.141" and appo[3] == "0.300 ± 0.141"
    assert appo[7] == "250 ± 14"  # 100 + 40 + 100 and 100 + 60 + 100 sampled tokens
    assert rows["grpo"][2] == "0.600" and rows["grpo"][7] == "300"
    assert "different numbers of finished seeds" in text
    assert (tmp_path / "synthetic_reward_vs_tokens.png").is_file()
