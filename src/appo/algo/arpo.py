"""ARPO's entropy-based adaptive branching rule (spec Appendix A), as pure functions."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import torch

__all__ = ["arpo_branch_decision", "arpo_plan_branches", "arpo_round_entropy"]


def arpo_round_entropy(
    *,
    vocab_size: int,
    topk_logprobs: torch.Tensor | None = None,
    token_entropies: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    max_tokens: int = 20,
) -> torch.Tensor:
    """Normalised entropy of a generation round's first ≤ ``max_tokens`` generated tokens (Appendix A step 2).

    ARPO pools the top-k log-prob entries of the round's first min(20, n) tokens and computes
      H = −Σ_{pooled entries} p·log p / log(V),   p = exp(logprob),
    which equals Σ_{t < min(20, n)} H̃_t / log V with H̃_t the truncated top-k entropy of token t.
    Give either ``topk_logprobs`` [R, T, k] (missing entries as −inf or NaN; reproduces ARPO) or exact
    per-token entropies ``token_entropies`` [R, T] (preferred; same scale: Σ_{t<20} H_t / log V).
    ``mask`` [R, T] marks the round's generated tokens (default: all); only the first ``max_tokens``
    masked positions of each row are used. Returns [R]; 0 for a row without tokens.
    """
    if (topk_logprobs is None) == (token_entropies is None):
        raise ValueError("arpo_round_entropy: give exactly one of topk_logprobs or token_entropies")
    if vocab_size < 2:
        raise ValueError(f"arpo_round_entropy: vocab_size must be >= 2, got {vocab_size}")
    if topk_logprobs is not None:
        if topk_logprobs.dim() != 3:
            raise ValueError(
                f"arpo_round_entropy: topk_logprobs must be [R, T, k], got {tuple(topk_logprobs.shape)}"
            )
        lp = topk_logprobs.double()
        finite = torch.isfinite(lp)
        lp0 = torch.where(finite, lp, torch.zeros_like(lp))
        per_token = torch.where(finite, -torch.exp(lp0) * lp0, torch.zeros_like(lp0)).sum(dim=-1)
    else:
        assert token_entropies is not None
        if token_entropies.dim() != 2:
            raise ValueError(
                f"arpo_round_entropy: token_entropies must be [R, T], got {tuple(token_entropies.shape)}"
            )
        per_token = token_entropies.double()
    valid = torch.ones_like(per_token, dtype=torch.bool) if mask is None else mask.to(torch.bool)
    if valid.shape != per_token.shape:
        raise ValueError(f"arpo_round_entropy: mask must have shape {tuple(per_token.shape)}")
    first = valid & (torch.cumsum(valid.long(), dim=-1) <= max_tokens)
    total = torch.where(first, per_token, torch.zeros_like(per_token)).sum(dim=-1)
    return (total / math.log(vocab_size)).float()


def arpo_branch_decision(
    entropy_now: torch.Tensor,
    initial_entropy: torch.Tensor,
    *,
    entropy_weight: float = 0.5,
    branch_probability: float = 0.5,
    u: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ARPO's branch test (Appendix A step 4), element-wise.

      ΔH = H_now − H₀,   p = clip(u − entropy_weight·ΔH, 0, 1),   branch ⇔ p ≤ branch_probability
    with u ~ U(0, 1) given explicitly (``u``) or drawn from ``generator`` (deterministic under a seed).
    A rise in entropy after a tool result lowers p and so makes branching more likely.
    Returns (branch: bool tensor, p).
    """
    delta = entropy_now.double() - initial_entropy.double()
    if u is None:
        u = torch.rand(delta.shape, generator=generator, dtype=torch.float64)
    elif u.shape != delta.shape:
        raise ValueError(f"arpo_branch_decision: u has shape {tuple(u.shape)}, expected {tuple(delta.shape)}")
    p = (u.double() - entropy_weight * delta).clamp(0.0, 1.0)
    return p <= branch_probability, p.float()


def arpo_plan_branches(
    delta_entropy: Sequence[float] | torch.Tensor,
    uids: Sequence[Hashable],
    active: Sequence[bool] | torch.Tensor,
    rows_per_uid: dict[Hashable, int],
    n: int,
    *,
    beam_size: int = 2,
    entropy_weight: float = 0.5,
    branch_probability: float = 0.5,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Which rows to copy after a tool round (Appendix A step 4); returns source row indices, one per branch.

    For each prompt, slots = n − rows it already has (``rows_per_uid``); each active row, in order, makes up
    to ``beam_size − 1`` attempts while slots remain; an attempt draws u ~ U(0, 1) from ``generator`` and
    branches iff clip(u − entropy_weight·ΔH, 0, 1) ≤ branch_probability (ΔH = ``delta_entropy`` of the
    row, H_now − H₀ of its trajectory). A branch is a copy of the row's full current state.
    """
    delta = torch.as_tensor(delta_entropy, dtype=torch.float64)
    act = torch.as_tensor(active, dtype=torch.bool)
    if not (delta.shape[0] == act.shape[0] == len(uids)):
        raise ValueError("arpo_plan_branches: delta_entropy, uids and active must have one entry per row")
    slots = {u: n - rows_per_uid.get(u, 0) for u in rows_per_uid}
    out: list[int] = []
    for row, uid in enumerate(uids):
        if not bool(act[row]):
            continue
        for _ in range(max(0, beam_size - 1)):
            if slots.get(uid, 0) <= 0:
                break
            branch, _p = arpo_branch_decision(
                delta[row : row + 1],
                torch.zeros(1, dtype=torch.float64),
                entropy_weight=entropy_weight,
                branch_probability=branch_probability,
                generator=generator,
            )
            if bool(branch[0]):
                out.append(row)
                slots[uid] = slots.get(uid, 0) - 1
    return out
