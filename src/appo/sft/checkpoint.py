"""SFT checkpoints: HF model directories plus resumable trainer state, written atomically.

Layout under ``<output_dir>/checkpoints``::

    step-000050/   config.json, model.safetensors, tokenizer files  (loadable with from_pretrained)
                   trainer_state.pt    optimizer, scheduler, RNG states, step and data position
                   trainer_state.json  the same counters, human-readable (written last)

Every directory is first written as ``.tmp-step-…`` and renamed into place, so a crash never leaves a
half-written checkpoint under a real name. Only the newest ``keep_last`` checkpoints are kept.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "STATE_FILE",
    "atomic_save_pretrained",
    "capture_rng",
    "latest_checkpoint",
    "list_checkpoints",
    "restore_rng",
    "save_checkpoint",
]

STATE_FILE = "trainer_state.pt"
STATE_JSON = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def capture_rng() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _replace_dir(tmp: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def atomic_save_pretrained(
    model: Any, tokenizer: Any, target: Path, extra: dict[str, Any] | None = None
) -> Path:
    """``save_pretrained`` of model and tokenizer into ``target`` via a temporary sibling directory.
    ``extra`` maps file names to JSON-serialisable payloads written alongside (last)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    for name, payload in (extra or {}).items():
        (tmp / name).write_text(json.dumps(payload, indent=2) + "\n")
    _replace_dir(tmp, target)
    return target


def list_checkpoints(ckpt_root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (they have both state files), oldest first."""
    out = []
    if not ckpt_root.is_dir():
        return out
    for p in ckpt_root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file() and (p / STATE_JSON).is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    ckpts = list_checkpoints(ckpt_root)
    return ckpts[-1][1] if ckpts else None


def save_checkpoint(
    ckpt_root: Path,
    step: int,
    model: Any,
    tokenizer: Any,
    state: dict[str, Any],
    summary: dict[str, Any],
    keep_last: int,
) -> Path:
    """Write ``step-{step:06d}`` atomically, then delete all but the newest ``keep_last``."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    target = ckpt_root / f"step-{step:06d}"
    tmp = ckpt_root / f".tmp-{target.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    torch.save(state, tmp / STATE_FILE)
    (tmp / STATE_JSON).write_text(json.dumps(summary, indent=2) + "\n")
    _replace_dir(tmp, target)
    for _, old in list_checkpoints(ckpt_root)[: -max(1, keep_last)]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in ckpt_root.glob(".tmp-step-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return target
