"""Branching Score, candidate eligibility and per-prompt split selection (spec §1.5 steps 5–10, §6 inv. 4, 5, 10–12)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

__all__ = [
    "BranchPoint",
    "branch_candidate_mask",
    "branching_scores",
    "masked_zscore",
    "select_branch_points",
    "stop_sequence_completion_mask",
    "whitespace_token_table",
]

ScoreMode = Literal["appo", "entropy", "future"]
BranchKind = Literal["strict", "fallback", "duplicate"]


def masked_zscore(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-row z-score over the masked positions of the last dimension.

    z_t = (x_t − μ)/(σ + eps) where μ, σ are the mean and *population* standard deviation of
    {x_k : m_k = 1} of the same row; z_t = 0 where m_t = 0 (and on rows without any valid position).
    Values at masked positions never influence the result (they may be NaN).
    """
    m = mask.to(torch.bool)
    xf = x.double()
    zero = torch.zeros((), dtype=xf.dtype, device=x.device)
    xm = torch.where(m, xf, zero)
    n = m.sum(dim=-1, keepdim=True).to(xf.dtype)
    n_safe = n.clamp(min=1.0)
    mean = xm.sum(dim=-1, keepdim=True) / n_safe
    centred = torch.where(m, xf - mean, zero)
    std = torch.sqrt((centred * centred).sum(dim=-1, keepdim=True) / n_safe)
    z = centred / (std + eps)
    return torch.where(m, z, zero).to(x.dtype if x.dtype.is_floating_point else torch.float32)


def branching_scores(
    entropy: torch.Tensor,
    future_value: torch.Tensor,
    mask: torch.Tensor,
    mode: ScoreMode = "appo",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Branching Score per token (spec §1.5 steps 5–6).

    z^H = Z(H), z^F = Z(V) per row over ``mask`` (:func:`masked_zscore`), then
      * ``"appo"``:    BS = z^H · z^F
      * ``"entropy"``: BS = z^H           (the paper's BS-Ent ablation)
      * ``"future"``:  BS = z^F           (future-value-only ablation)
    Returns (BS, z^H, z^F), all 0 outside the mask.
    """
    z_h = masked_zscore(entropy, mask)
    z_f = masked_zscore(future_value, mask)
    if mode == "appo":
        score = z_h * z_f
    elif mode == "entropy":
        score = z_h.clone()
    elif mode == "future":
        score = z_f.clone()
    else:
        raise ValueError(f"branching_scores: mode must be 'appo', 'entropy' or 'future', got {mode!r}")
    return score, z_h, z_f


# --------------------------------------------------------------------------------------------------
# Candidate eligibility
# --------------------------------------------------------------------------------------------------


def whitespace_token_table(tokenizer: Any, vocab_size: int | None = None) -> torch.Tensor:
    """Boolean table T[v] = (single-token decode of id v is empty after ``str.strip()``).

    Built once per tokenizer (one ``decode`` per vocabulary id, not per generated token) and then used by
    :func:`branch_candidate_mask` as a lookup. Works with any HF tokenizer (anything with ``decode`` and
    ``__len__``). ``vocab_size`` may exceed the tokenizer length (padded embedding rows); those extra
    ids are marked whitespace-only (they are never legitimately sampled, so never a valid split).
    """
    n_tok = len(tokenizer)
    size = max(n_tok, vocab_size or 0)
    table = torch.ones(size, dtype=torch.bool)
    for v in range(n_tok):
        try:
            text = tokenizer.decode([v], skip_special_tokens=False)
        except TypeError:
            text = tokenizer.decode([v])
        table[v] = text.strip() == ""
    return table


def stop_sequence_completion_mask(
    response_ids: torch.Tensor, stop_sequences: Sequence[Sequence[int]]
) -> torch.Tensor:
    """Mark positions whose token completes one of the given token-id sequences.

    out[j, t] = True iff response_ids[j, t−n+1 .. t] == seq for some seq of length n (e.g. the token ids of
    ``</search>``). Vectorised: O(B·L·Σ|seq|). Token-level matching is exact only if the tag is tokenised the
    same way inside the response; the rollout layer, which knows where each generation round stopped on a
    stop string, can pass its own per-position mask to :func:`branch_candidate_mask` instead.
    """
    ids = response_ids
    out = torch.zeros(ids.shape, dtype=torch.bool, device=ids.device)
    length = ids.shape[-1]
    for seq in stop_sequences:
        n = len(seq)
        if n == 0 or n > length:
            continue
        hit = torch.ones((*ids.shape[:-1], length - n + 1), dtype=torch.bool, device=ids.device)
        for i, tok in enumerate(seq):
            hit &= ids[..., i : length - n + 1 + i] == int(tok)
        out[..., n - 1 :] |= hit
    return out


def branch_candidate_mask(
    response_ids: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    whitespace_table: torch.Tensor | None = None,
    eos_token_ids: Sequence[int] = (),
    stop_mask: torch.Tensor | None = None,
    stop_sequences: Sequence[Sequence[int]] = (),
) -> torch.Tensor:
    """Positions eligible as split points (spec §1.5 step 7, §6 invariants 4–5).

    eligible[j, t] = loss_mask[j, t] = 1                    (excludes tool-result tokens and padding)
                   ∧ ¬whitespace_table[y_{j,t}]             (whitespace-only tokens; punctuation stays eligible)
                   ∧ y_{j,t} ∉ eos_token_ids                (a split on EOS reproduces the parent)
                   ∧ ¬stop_mask[j, t]                       (token completing a tool-closing tag, e.g. the last
                   ∧ ¬completes(stop_sequences)[j, t]        token of ``</search>`` — the branch would skip the tool)
                   ∧ t ≤ L − 2                              (room for at least one continuation token)

    ``whitespace_table`` is the vocab-sized boolean tensor from :func:`whitespace_token_table`.
    To reproduce the reference (which allows EOS/closing-tag splits) pass no ``eos_token_ids`` and no stop
    information.
    """
    if response_ids.shape != loss_mask.shape:
        raise ValueError(
            f"branch_candidate_mask: response_ids {tuple(response_ids.shape)} and loss_mask "
            f"{tuple(loss_mask.shape)} differ in shape"
        )
    ok = loss_mask.to(torch.bool).clone()
    ids = response_ids.long()
    if whitespace_table is not None:
        table = whitespace_table.to(device=ids.device, dtype=torch.bool)
        valid_ids = ids[ok]
        if valid_ids.numel() and (int(valid_ids.max()) >= table.numel() or int(valid_ids.min()) < 0):
            raise ValueError(
                f"branch_candidate_mask: token id {int(valid_ids.max())} outside the whitespace table of size "
                f"{table.numel()} (build it with vocab_size= the model's vocabulary size)"
            )
        ok &= ~table[ids.clamp(0, table.numel() - 1)]
    for eos in eos_token_ids:
        ok &= ids != int(eos)
    if stop_mask is not None:
        if stop_mask.shape != ids.shape:
            raise ValueError(
                f"branch_candidate_mask: stop_mask {tuple(stop_mask.shape)} must have shape {tuple(ids.shape)}"
            )
        ok &= ~stop_mask.to(device=ids.device, dtype=torch.bool)
    if stop_sequences:
        ok &= ~stop_sequence_completion_mask(ids, stop_sequences)
    if ok.shape[-1] >= 1:
        ok[..., -1] = False
    return ok


# --------------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BranchPoint:
    """A selected split: continue row ``row`` from response position ``split`` (token included in the prefix).

    ``kind`` is ``"strict"`` (z^H > 0 and z^F > 0), ``"fallback"`` (best remaining score) or
    ``"duplicate"`` (cyclic repeat of an already selected point when a prompt has fewer than K candidates).
    """

    row: int
    split: int
    score: float
    kind: BranchKind
    uid: Hashable = None


def _row_order_keys(
    rows: list[int],
    score: torch.Tensor,
    z_entropy: torch.Tensor,
    z_future: torch.Tensor,
    candidate_mask: torch.Tensor,
    row_ids: Sequence[Any] | None,
) -> list[int]:
    """Rank of every row of a group under a key that does not depend on the row's batch position."""
    if row_ids is not None:
        keys = [(row_ids[r],) for r in rows]
    else:
        keys = [
            (
                score[r].numpy().tobytes(),
                z_entropy[r].numpy().tobytes(),
                z_future[r].numpy().tobytes(),
                candidate_mask[r].numpy().tobytes(),
            )
            for r in rows
        ]
    order = sorted(range(len(rows)), key=lambda i: (keys[i], rows[i]))
    rank = [0] * len(rows)
    for pos, i in enumerate(order):
        rank[i] = pos
    return rank


def select_branch_points(
    score: torch.Tensor,
    z_entropy: torch.Tensor,
    z_future: torch.Tensor,
    candidate_mask: torch.Tensor,
    uids: Sequence[Hashable],
    budget: int,
    *,
    row_ids: Sequence[Any] | None = None,
) -> list[BranchPoint]:
    """Per-prompt top-K split selection (spec §1.5 steps 8–10, §6 invariants 4, 11, 12).

    For every prompt (``uid``), over all its rows' eligible positions (``candidate_mask``, finite score,
    t ≤ L−2):
      1. strict candidates (z^H > 0 ∧ z^F > 0) sorted by BS descending → take the first K = ``budget``;
      2. if fewer than K, append the best remaining candidates by BS (fallback; a (−,−) pair with
         positive product ranks above a (+,−) pair, as in the reference);
      3. if still fewer than K, repeat the selected points cyclically (``kind="duplicate"``).
    The budget is per prompt, so a row may receive 0…K branches. A prompt without any eligible position
    gets no branch point (check the result per uid if you need exactly K·#prompts).

    Tie-break (explicit and independent of batch row order): (−BS, row key, t) where the row key is
    ``row_ids[j]`` when given (e.g. the sample index inside its prompt group) and otherwise the row's content
    (bytes of its score, z^H, z^F and candidate rows). Shuffling rows together with ``uids`` (and
    ``row_ids``) therefore selects the same (uid, row, split) set. Rows with byte-identical content are
    interchangeable; among them only the batch order decides.

    Returns points grouped by uid in first-appearance order, each group in selection order.
    """
    if budget < 0:
        raise ValueError(f"select_branch_points: budget must be >= 0, got {budget}")
    if score.dim() != 2:
        raise ValueError(f"select_branch_points: score must be [B, L], got shape {tuple(score.shape)}")
    n_rows, length = score.shape
    for name, t in (("z_entropy", z_entropy), ("z_future", z_future), ("candidate_mask", candidate_mask)):
        if t.shape != score.shape:
            raise ValueError(
                f"select_branch_points: {name} has shape {tuple(t.shape)}, expected {tuple(score.shape)}"
            )
    if len(uids) != n_rows:
        raise ValueError(f"select_branch_points: {len(uids)} uids for {n_rows} rows")
    if row_ids is not None and len(row_ids) != n_rows:
        raise ValueError(f"select_branch_points: {len(row_ids)} row_ids for {n_rows} rows")
    if budget == 0 or n_rows == 0:
        return []

    score_c = score.detach().float().cpu()
    zh = z_entropy.detach().float().cpu()
    zf = z_future.detach().float().cpu()
    cand = candidate_mask.detach().to(torch.bool).cpu() & torch.isfinite(score_c)
    if length >= 1:
        cand[:, -1] = False  # no room for a continuation after position L−1

    groups: dict[Hashable, list[int]] = {}
    for r, u in enumerate(uids):
        groups.setdefault(u, []).append(r)

    out: list[BranchPoint] = []
    for uid, rows in groups.items():
        rank = _row_order_keys(rows, score_c, zh, zf, cand, row_ids)
        rows_t = torch.tensor(rows, dtype=torch.long)
        sub = cand[rows_t]
        local_row, pos = sub.nonzero(as_tuple=True)
        if local_row.numel() == 0:
            continue
        global_row = rows_t[local_row]
        bs = score_c[global_row, pos]
        strict = (zh[global_row, pos] > 0) & (zf[global_row, pos] > 0)
        row_rank = torch.tensor(rank, dtype=torch.long)[local_row]
        # lexicographic sort by (−BS, row rank, t) with stable sorts, least significant key first
        order = torch.argsort(pos, stable=True)
        order = order[torch.argsort(row_rank[order], stable=True)]
        order = order[torch.argsort(-bs[order].double(), stable=True)]
        strict_sorted = order[strict[order]]
        chosen: list[tuple[int, BranchKind]] = [(int(i), "strict") for i in strict_sorted[:budget]]
        if len(chosen) < budget:
            # all strict candidates are already chosen, so "not chosen" == "not strict"
            rest = order[~strict[order]][: budget - len(chosen)]
            chosen.extend((int(i), "fallback") for i in rest)
        base = [BranchPoint(int(global_row[i]), int(pos[i]), float(bs[i]), kind, uid) for i, kind in chosen]
        out.extend(base)
        k = 0
        while len(base) + k < budget:
            src = base[k % len(base)]
            out.append(BranchPoint(src.row, src.split, src.score, "duplicate", uid))
            k += 1
    return out
