"""Smoke run of bench/algo.py --quick: the benchmark runs and its variants agree."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "algo.py"


@pytest.mark.skipif(
    not BENCH.exists(), reason="bench/algo.py not present (installed package without sources)"
)
def test_bench_quick_mode_runs_and_results_agree():
    res = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    for header in ("[1a] FutureKL", "[1b] FutureValue", "[2]  logprobs_and_entropy"):
        assert header in out
    # rows of the two scan tables: "<t>ms <t>ms <ratio>x <maxdiff>"
    scan_rows = re.findall(r"ms\s+[\d.]+ms\s+([\d.]+)x\s+([\d.e+-]+)", out)
    assert len(scan_rows) == 2
    for _ratio, diff in scan_rows:
        assert float(diff) < 1e-4
    # logprob row: vocab, peaks, ratio, times, three max differences
    lp_rows = re.findall(
        r"^\s+(\d+)\s+[\d.]+MB\s+[\d.]+MB\s+[\d.]+x\s+[\d.]+s\s+[\d.]+s\s+(\S+)\s+(\S+)\s+(\S+)$", out, re.M
    )
    assert lp_rows, out
    for _vocab, *diffs in lp_rows:
        assert all(float(d) < 1e-4 for d in diffs)
