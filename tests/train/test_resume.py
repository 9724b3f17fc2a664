from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

VOLATILE = (
    "timing_s/",
    "perf/",
    "rollout/time_",
    "rollout/tokens_per_s",
    "branch_rollout/time_",
    "branch_rollout/tokens_per_s",
    "latency",
)


def _stable(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        out.append({k: v for k, v in record.items() if not any(part in k for part in VOLATILE)})
    return out


def _run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appo", "train", *args, "--no-report"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_kill_9_then_resume_reproduces_metrics(overrides, reward_module, tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{reward_module}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    base = [
        o
        for o in overrides("appo")
        if not o.startswith(("trainer.default_local_dir", "trainer.total_training"))
    ]
    base += ["trainer.total_training_steps=3", "trainer.save_freq=1"]
    interrupted = tmp_path / "interrupted"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "appo",
            "train",
            *base,
            f"trainer.default_local_dir={interrupted}",
            "--no-report",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker = interrupted / "checkpoints" / "step_1" / "checkpoint.json"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "no checkpoint appeared"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (interrupted / "final").exists()

    resumed = _run(["--resume", str(interrupted)], env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight = _run([*base, f"trainer.default_local_dir={tmp_path / 'straight'}"], env)
    assert straight.returncode == 0, straight.stderr[-2000:]

    a = _stable(interrupted / "metrics.jsonl")
    b = _stable(tmp_path / "straight" / "metrics.jsonl")
    assert [r["step"] for r in a] == [1, 2, 3]
    assert a == b
    assert any(r["actor/grad_norm"] > 0 for r in a)


def test_a_damaged_newest_checkpoint_is_never_loaded(overrides, tmp_path):
    """Issue 14, class 11: a checkpoint file truncated after the fact is detected by the manifest; resume
    falls back to the previous intact checkpoint with a message, and finishes the run."""
    from appo.config import load_config
    from appo.train.rl import train

    cfg = load_config(None, overrides("appo", "trainer.save_freq=1", "trainer.total_training_steps=3"))
    run_dir = train(cfg, max_steps=2)
    weights = run_dir / "checkpoints" / "step_2" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    messages: list[str] = []
    train(cfg, resume=True, log=messages.append)
    assert any("step_2 is damaged" in m and "model.safetensors" in m for m in messages), messages
    assert any("resumed from" in m and "step_1" in m for m in messages), messages
    assert (run_dir / "checkpoints" / "damaged-step_2").is_dir()
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_a_second_writer_of_a_run_dir_is_refused(overrides):
    """Issue 14, class 12: one writer per run directory; the second is told who holds it."""
    from appo.config import load_config
    from appo.train import checkpoint as ckpt
    from appo.train.rl import resolve_run_dir, train

    cfg = load_config(None, overrides("appo"))
    run_dir = resolve_run_dir(cfg)
    with ckpt.run_dir_lock(run_dir), pytest.raises(ckpt.RunDirBusy, match=f"pid {os.getpid()}"):
        train(cfg)
    assert not (run_dir / "metrics.jsonl").exists()
