"""Checkpoints: an HF model directory (loadable by ``transformers``) plus the trainer state needed to
resume exactly (optimizer, scheduler, RNG, data position, step).

A checkpoint is written to a temporary directory, every file is fsync-ed, a manifest (``checkpoint.json``:
size and SHA-256 of every file) is written last, and the directory is renamed into place — so a crash
leaves either a complete checkpoint or none. Resuming verifies the manifest and falls back to the newest
intact checkpoint when a later one was damaged after the fact (a disk filling up, a copy cut short).

One process writes a run directory at a time: :func:`run_dir_lock` holds an exclusive lock on
``RUN_DIR/.lock`` for the whole run."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from appo.config import ConfigError

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"
DONE_FILE = "checkpoint.json"
LOCK_FILE = ".lock"


class RunDirBusy(ConfigError):
    """Another process holds the run directory (exit code 2 at the CLI)."""


@contextlib.contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` (released when the process dies, however it dies)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fh = (run_dir / LOCK_FILE).open("a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise RunDirBusy(
                f"{run_dir} is in use by another appo process (pid {holder}); wait for it to finish, or "
                "write elsewhere with trainer.experiment_name=... or trainer.default_local_dir=..."
            ) from None
        except OSError as exc:  # a file system without flock (some NFS / Lustre mounts)
            log.warning("cannot lock %s (%s); make sure no other process writes this run", run_dir, exc)
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield
    finally:
        fh.close()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def verify_checkpoint(checkpoint: Path) -> str | None:
    """What is wrong with ``checkpoint`` (a missing, truncated or altered file), or None when intact."""
    try:
        manifest = json.loads((checkpoint / DONE_FILE).read_text())
    except (OSError, ValueError) as exc:
        return f"unreadable {DONE_FILE} ({exc})"
    files = manifest.get("files")
    if files is None:
        return None  # written before manifests existed: complete by its atomic rename, not verifiable
    if not isinstance(files, dict):
        return f"{DONE_FILE} has no valid file list"
    for name, entry in files.items():
        path = checkpoint / name
        if not isinstance(entry, dict) or not {"size", "sha256"} <= entry.keys():
            return f"{DONE_FILE} has a malformed entry for {name}"
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != entry["size"]:
            return f"{name} has {path.stat().st_size} bytes, {entry['size']} were written"
        if _sha256(path) != entry["sha256"]:
            return f"{name} does not match its checksum"
    return None


def latest_intact_checkpoint(run_dir: Path, log: Callable[[str], None] | None = None) -> Path | None:
    """The newest checkpoint that passes :func:`verify_checkpoint`; damaged newer ones are reported."""
    # Left by a process that died mid-write (the caller holds the run's lock: nobody is writing them now).
    for tmp in (run_dir / "checkpoints").glob(".step_*.tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    for checkpoint in reversed(checkpoint_dirs(run_dir)):
        problem = verify_checkpoint(checkpoint)
        if problem is None:
            return checkpoint
        aside = checkpoint.with_name(f"damaged-{checkpoint.name}")
        shutil.rmtree(aside, ignore_errors=True)
        checkpoint.rename(aside)  # out of the way of keep_last and of later resumes, kept for inspection
        if log:
            log(
                f"checkpoint {checkpoint} is damaged ({problem}); moved to {aside.name}, trying the previous one"
            )
    return None


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    base = run_dir / "checkpoints"
    if not base.is_dir():
        return []
    found = [
        p for p in base.iterdir() if p.is_dir() and p.name.startswith("step_") and (p / DONE_FILE).is_file()
    ]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.random.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: Any,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    extra: dict[str, Any],
    keep_last: int | None = None,
) -> Path:
    base = run_dir / "checkpoints"
    base.mkdir(parents=True, exist_ok=True)
    final = base / f"step_{step}"
    tmp = base / f".step_{step}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp / "model")
    tokenizer.save_pretrained(tmp / "model")
    torch.save(
        {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
            **extra,
        },
        tmp / STATE_FILE,
    )
    files = {}
    for path in sorted(q for q in tmp.rglob("*") if q.is_file()):
        _fsync(path)
        files[str(path.relative_to(tmp))] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    (tmp / DONE_FILE).write_text(json.dumps({"step": step, "files": files}, indent=1) + "\n")
    _fsync(tmp / DONE_FILE)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync(base)
    if keep_last:
        for old in checkpoint_dirs(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_state(checkpoint: Path) -> dict[str, Any]:
    return torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=False)
