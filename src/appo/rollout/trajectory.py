"""The Trajectory: the contract between the rollout and the trainer.

Per response position there is exactly one entry in each of ``response_ids``, ``loss_mask`` (1 = sampled
by the model, 0 = tool result or a token the environment appended), ``logprobs`` (sampler log-prob, NaN
where nothing was sampled) and ``entropies`` (exact entropy of the sampling distribution, NaN where not
measured). :meth:`Trajectory.check` verifies that alignment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from appo.tools import Session

__all__ = ["ToolCallRecord", "Trajectory", "collate"]


@dataclass
class ToolCallRecord:
    tag: str
    argument: str
    result: str
    ok: bool
    latency: float
    # Response index of the last token of the call (the token that completed the closing tag).
    call_end: int
    # Response positions [start, end) of the inserted result tokens.
    result_span: tuple[int, int]
    metadata: dict[str, Any] = field(default_factory=dict)
    # Handed to the tool runtime (False: the loop answered it itself — malformed, over the limit, repeated).
    ran: bool = True
    # Counts towards the call limit.
    counted: bool = True
    # Length of the session's call log once this call returned: a branch whose prefix ends after this call
    # forks the session at this point, so calls the loop answered itself are never replayed.
    session_calls: int = 0


@dataclass
class Trajectory:
    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    finish_reason: str = ""
    uid: str = ""
    kind: str = "init"
    # For branches: index of the parent in the list the branch was made from, the split position (the
    # split token is part of the shared prefix), the Branching Score and how it was selected.
    parent: int = -1
    split: int = -1
    score: float = math.nan
    branch_kind: str = ""
    # The dataset example (data_source, ground_truth, ...) this rollout answers.
    sample: dict[str, Any] = field(default_factory=dict)
    rounds: int = 0
    # Tool calls made by this trajectory's response (a branch inherits those of its prefix).
    call_count: int = 0
    session: Session | None = field(default=None, repr=False, compare=False)
    text: str = ""
    # Why the rollout could not run (finish_reason "fork_failed"); such a branch is dropped by the trainer.
    error: str = ""

    def __len__(self) -> int:
        return len(self.response_ids)

    def append(
        self,
        tokens: Sequence[int],
        sampled: bool,
        logprobs: Sequence[float] | None = None,
        entropies: Sequence[float] | None = None,
    ) -> None:
        n = len(tokens)
        self.response_ids.extend(int(t) for t in tokens)
        self.loss_mask.extend([1 if sampled else 0] * n)
        self.logprobs.extend(logprobs if logprobs is not None else [math.nan] * n)
        self.entropies.extend(entropies if entropies is not None else [math.nan] * n)

    def check(self) -> None:
        """Raise if a per-position array is misaligned with the response."""
        n = len(self.response_ids)
        for name in ("loss_mask", "logprobs", "entropies"):
            if len(getattr(self, name)) != n:
                raise AssertionError(f"{name} has {len(getattr(self, name))} entries for {n} response tokens")
        for t, (m, lp) in enumerate(zip(self.loss_mask, self.logprobs, strict=True)):
            if m == 1 and math.isnan(lp):
                raise AssertionError(f"sampled position {t} has no log-prob")
        for call in self.tool_calls:
            start, end = call.result_span
            if any(self.loss_mask[start:end]):
                raise AssertionError(f"tool result at {start}:{end} is not masked")

    def prefix(self, split: int) -> Trajectory:
        """A copy of the prompt and response[:split + 1] (per-position arrays and the tool calls whose
        results lie inside), the start of a branch."""
        end = split + 1
        return Trajectory(
            prompt_ids=list(self.prompt_ids),
            response_ids=self.response_ids[:end],
            loss_mask=self.loss_mask[:end],
            logprobs=self.logprobs[:end],
            entropies=self.entropies[:end],
            tool_calls=[c for c in self.tool_calls if c.result_span[1] <= end],
            uid=self.uid,
            sample=dict(self.sample),
        )

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def to_record(self, tokenizer: Any = None) -> dict[str, Any]:
        """A JSON-ready summary (samples files, eval outputs)."""
        text = self.text or (tokenizer.decode(self.response_ids) if tokenizer is not None else "")
        return {
            "uid": self.uid,
            "kind": self.kind,
            "parent": self.parent,
            "split": self.split,
            "score": None if math.isnan(self.score) else self.score,
            "branch_kind": self.branch_kind,
            "finish_reason": self.finish_reason,
            "response_tokens": len(self.response_ids),
            "rounds": self.rounds,
            "tool_calls": [
                {
                    "tag": c.tag,
                    "argument": c.argument,
                    "result": c.result,
                    "ok": c.ok,
                    "latency": round(c.latency, 4),
                    "result_span": list(c.result_span),
                }
                for c in self.tool_calls
            ],
            "text": text,
        }


def collate(
    trajectories: Sequence[Trajectory],
    pad_token_id: int,
    loss_mask_branches: bool = True,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """Right-pad a batch: ``input_ids`` [B, P+L] (prompt left-padded to P, response right-padded to L),
    ``attention_mask``, ``position_ids``, ``responses``, ``response_mask`` (1 on real response tokens),
    ``loss_mask`` (0 on branch rows when ``loss_mask_branches``), ``rollout_logprobs`` and ``entropies``
    (0 where NaN) — all [B, L] except the first three."""
    if not trajectories:
        raise ValueError("cannot collate an empty batch")
    batch = len(trajectories)
    width_p = max(len(t.prompt_ids) for t in trajectories)
    width_r = max(1, max(len(t.response_ids) for t in trajectories))
    input_ids = torch.full((batch, width_p + width_r), pad_token_id, dtype=torch.long)
    attention = torch.zeros((batch, width_p + width_r), dtype=torch.long)
    loss_mask = torch.zeros((batch, width_r), dtype=torch.float32)
    logprobs = torch.zeros((batch, width_r), dtype=torch.float32)
    entropies = torch.zeros((batch, width_r), dtype=torch.float32)
    for i, t in enumerate(trajectories):
        p, r = len(t.prompt_ids), len(t.response_ids)
        input_ids[i, width_p - p : width_p] = torch.tensor(t.prompt_ids)
        attention[i, width_p - p : width_p] = 1
        if r:
            input_ids[i, width_p : width_p + r] = torch.tensor(t.response_ids)
            attention[i, width_p : width_p + r] = 1
            if not (loss_mask_branches and t.kind == "branch"):
                loss_mask[i, :r] = torch.tensor(t.loss_mask, dtype=torch.float32)
            logprobs[i, :r] = torch.tensor(t.logprobs, dtype=torch.float32).nan_to_num(0.0)
            entropies[i, :r] = torch.tensor(t.entropies, dtype=torch.float32).nan_to_num(0.0)
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    out = {
        "input_ids": input_ids,
        "attention_mask": attention,
        "position_ids": position_ids,
        "responses": input_ids[:, width_p:],
        "response_mask": attention[:, width_p:].float(),
        "loss_mask": loss_mask,
        "rollout_logprobs": logprobs,
        "entropies": entropies,
    }
    if device is not None:
        out = {k: v.to(device) for k, v in out.items()}
    return out
