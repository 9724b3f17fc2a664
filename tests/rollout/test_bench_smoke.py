import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "rollout.py"


def test_rollout_bench_quick_prints_ratios():
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if "ratio" in line]
    assert len(lines) == 3
    assert all(float(line.rsplit("ratio", 1)[1].strip().rstrip("x")) > 0 for line in lines)
