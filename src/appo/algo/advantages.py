"""Dual-group advantages, branch-credit mapping and the reward scale M (spec §1.8, §1.9, §6 inv. 16–19)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Literal, NamedTuple

import torch

from appo.algo.scans import discounted_future_sum

__all__ = [
    "RewardScale",
    "appo_token_advantages",
    "group_advantages",
    "reward_scale_factors",
]

RewardScaleMode = Literal["off", "reference", "advantage"]


def group_advantages(
    scores: torch.Tensor,
    uids: Sequence[Hashable],
    kinds: Sequence[str] | None = None,
    norm_by_std: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Base advantage per row (spec §1.9 step 1, §6 invariant 17).

    Rows are grouped by (uid, kind) (by uid alone when ``kinds`` is None). For a group G:
    μ_G = mean R, σ_G = population std (σ_G = 0 for |G| = 1) and
      â_j = (R_j − μ_G)/(σ_G + eps)   if ``norm_by_std``,   else   â_j = R_j − μ_G.
    A singleton group therefore gets exactly 0. Init-group and branch-group advantages never mix.
    ``scores`` is [B] (R_j, e.g. the row sum of token-level rewards); returns [B] in its dtype.
    """
    if scores.dim() != 1:
        raise ValueError(f"group_advantages: scores must be 1-D [B], got shape {tuple(scores.shape)}")
    n = scores.shape[0]
    if len(uids) != n:
        raise ValueError(f"group_advantages: {len(uids)} uids for {n} scores")
    if kinds is not None and len(kinds) != n:
        raise ValueError(f"group_advantages: {len(kinds)} kinds for {n} scores")
    ids: dict[tuple[Hashable, str | None], int] = {}
    gid = torch.tensor(
        [ids.setdefault((u, None if kinds is None else kinds[j]), len(ids)) for j, u in enumerate(uids)],
        dtype=torch.long,
        device=scores.device,
    )
    r = scores.detach().double()
    n_groups = len(ids)
    count = torch.zeros(n_groups, dtype=torch.float64, device=r.device).index_add_(0, gid, torch.ones_like(r))
    mean = torch.zeros(n_groups, dtype=torch.float64, device=r.device).index_add_(0, gid, r) / count
    centred = r - mean[gid]
    if not norm_by_std:
        return centred.to(scores.dtype)
    var = (
        torch.zeros(n_groups, dtype=torch.float64, device=r.device).index_add_(0, gid, centred * centred)
        / count
    )
    std = torch.sqrt(var)  # population std; 0 for singletons
    return (centred / (std[gid] + eps)).to(scores.dtype)


def _branch_rows(
    n_rows: int,
    length: int,
    kinds: Sequence[str],
    parents: torch.Tensor,
    splits: torch.Tensor,
    where: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate the branch bookkeeping; return (is_branch [B], branch rows, their parents, splits clamped to L−1)."""
    if len(kinds) != n_rows:
        raise ValueError(f"{where}: {len(kinds)} kinds for {n_rows} rows")
    if parents.shape != (n_rows,) or splits.shape != (n_rows,):
        raise ValueError(
            f"{where}: parents {tuple(parents.shape)} and splits {tuple(splits.shape)} must both be [{n_rows}]"
        )
    bad = [k for k in kinds if k not in ("init", "branch")]
    if bad:
        raise ValueError(f"{where}: kinds must be 'init' or 'branch', got {bad[0]!r}")
    is_branch = torch.tensor([k == "branch" for k in kinds], dtype=torch.bool, device=parents.device)
    par = parents.long()
    spl = splits.long()
    if bool((par[~is_branch] != -1).any()) or bool((spl[~is_branch] != -1).any()):
        raise ValueError(f"{where}: init rows must have parent = split = -1")
    b_rows = is_branch.nonzero(as_tuple=True)[0]
    b_par = par[b_rows]
    b_spl = spl[b_rows]
    if b_rows.numel():
        if bool((b_par < 0).any()) or bool((b_par >= n_rows).any()):
            raise ValueError(f"{where}: a branch row's parent index is outside [0, {n_rows})")
        if bool(is_branch[b_par].any()):
            raise ValueError(f"{where}: a branch row's parent is itself a branch row")
        if bool((b_spl < 0).any()):
            raise ValueError(f"{where}: a branch row has a negative split")
    return is_branch, b_rows, b_par, b_spl.clamp(max=length - 1)


def _reverse_cumsum(x: torch.Tensor) -> torch.Tensor:
    return torch.flip(torch.cumsum(torch.flip(x, dims=[-1]), dim=-1), dims=[-1])


def appo_token_advantages(
    row_adv: torch.Tensor,
    response_mask: torch.Tensor,
    kinds: Sequence[str],
    parents: torch.Tensor,
    splits: torch.Tensor,
    *,
    branch_boost: torch.Tensor | None = None,
    boost_discount: float = 0.9,
) -> torch.Tensor:
    """Token-level APPO advantages with branch credit on the parent prefix (spec §1.9, §6 inv. 18–19).

    For an init row p and position t with m_{p,t} = 1, with C_{p,t} = {b : parent(b) = p, s_b ≥ t}:
      A_{p,t} = â_p + (1/|C_{p,t}|) Σ_{b∈C_{p,t}} â_b · M_{b,t}      (A_{p,t} = â_p when C_{p,t} = ∅)
    with M_{b,t} = 1 + β_b·d^{s_b − t} (β = ``branch_boost``, d = ``boost_discount``; M ≡ 1 when
    ``branch_boost`` is None — the reference behaviour). A = 0 where m = 0, and A ≡ 0 on branch rows.
    Splits beyond L−1 are treated as L−1 (as the reference does).

    Linear time: per parent a histogram over split positions of counts and of â_b (and of â_b·β_b), then
    reverse cumulative sums (and a discounted reverse scan for the boost): O(L + #branches) per row.
    ``parents`` index rows of the same batch, so the result is permutation-equivariant: permuting the rows
    (and remapping ``parents``) permutes the output rows.

    Args:
        row_adv: [B] base advantages â (e.g. :func:`group_advantages` with kinds).
        response_mask: [B, L] attention-derived response mask.
        kinds: "init" / "branch" per row.
        parents, splits: int64 [B]; −1 on init rows; for branch rows the parent row index and split s_b.
        branch_boost: optional [B] per-branch β_b (value on init rows ignored), see
            :func:`reward_scale_factors` with ``mode="advantage"``.
    """
    if response_mask.dim() != 2:
        raise ValueError(
            f"appo_token_advantages: response_mask must be [B, L], got {tuple(response_mask.shape)}"
        )
    n_rows, length = response_mask.shape
    if row_adv.shape != (n_rows,):
        raise ValueError(f"appo_token_advantages: row_adv must be [{n_rows}], got {tuple(row_adv.shape)}")
    is_branch, b_rows, b_par, b_spl = _branch_rows(
        n_rows, length, kinds, parents, splits, "appo_token_advantages"
    )
    dtype = row_adv.dtype if row_adv.dtype.is_floating_point else torch.float32
    adv = row_adv.to(dtype)
    mask = response_mask.to(torch.bool)
    out = adv[:, None].expand(n_rows, length).clone()
    if b_rows.numel():
        flat = b_par * length + b_spl
        counts = torch.zeros(n_rows * length, dtype=torch.float64, device=adv.device)
        sums = torch.zeros(n_rows * length, dtype=torch.float64, device=adv.device)
        counts.index_add_(0, flat, torch.ones(flat.shape[0], dtype=torch.float64, device=adv.device))
        b_adv = adv[b_rows].double()
        sums.index_add_(0, flat, b_adv)
        cover = _reverse_cumsum(counts.view(n_rows, length))
        credit = _reverse_cumsum(sums.view(n_rows, length))
        if branch_boost is not None:
            if branch_boost.shape != (n_rows,):
                raise ValueError(
                    f"appo_token_advantages: branch_boost must be [{n_rows}], got {tuple(branch_boost.shape)}"
                )
            boosted = torch.zeros(n_rows * length, dtype=torch.float64, device=adv.device)
            # a split beyond L−1 is binned at L−1 with its extra decay d^{s−(L−1)} folded in
            overshoot = (splits.long()[b_rows] - b_spl).double()
            weight = branch_boost[b_rows].double() * torch.pow(torch.tensor(float(boost_discount)), overshoot)
            boosted.index_add_(0, flat, b_adv * weight)
            credit = credit + discounted_future_sum(boosted.view(n_rows, length), boost_discount)
        mean_credit = torch.where(cover > 0, credit / cover.clamp(min=1.0), torch.zeros_like(credit))
        out = out + mean_credit.to(dtype)
    out = torch.where(mask, out, torch.zeros((), dtype=dtype, device=out.device))
    out[is_branch] = 0.0
    return out


class RewardScale(NamedTuple):
    """Output of :func:`reward_scale_factors`; apply both fields, they compose for every mode.

    ``token_factors`` [B, L]: multiply token-level rewards by it (≠ 1 only in ``"reference"`` mode).
    ``branch_boost`` [B]: pass to :func:`appo_token_advantages` together with ``discount``
    (≠ 0 only in ``"advantage"`` mode).
    """

    token_factors: torch.Tensor
    branch_boost: torch.Tensor
    discount: float


def reward_scale_factors(
    branch_scores: torch.Tensor,
    parents: torch.Tensor,
    splits: torch.Tensor,
    length: int,
    discount: float = 0.9,
    mode: RewardScaleMode = "advantage",
) -> RewardScale:
    """Procedure-level reward scale M (spec §1.8, §6 invariant 16).

    With BS_max = max of ``branch_scores`` over the branch rows (rows with parent ≥ 0) and, per branch b,
    β_b = BS_b/BS_max if BS_b > 0 and BS_max > 0 else 0:
      M_{b,t} = 1 + β_b · d^{s_b − t}  for t ≤ min(s_b, L−1),   M_{b,t} = 1 otherwise.
    Example: s = 2, BS = BS_max, d = 0.9 → M = (1.81, 1.9, 2.0, 1, 1, …).

    Modes:
      * ``"off"``: no scaling (token_factors ≡ 1, branch_boost ≡ 0).
      * ``"reference"``: the official per-token reward scaling — a parent row's token rewards are multiplied
        by M̄ = elementwise mean of its branches' M (branch rows and rows without branches: 1). Kept for
        parity only: with the usual end-of-sequence reward (one non-zero at the last valid position) it is
        a no-op unless some split sits on that last position, because M̄_t ≠ 1 only for t ≤ s.
      * ``"advantage"`` (default, the paper's intent): rewards untouched; the branch credit that reaches
        prefix position t of the parent is multiplied by M_{b,t} (``branch_boost`` = β for
        :func:`appo_token_advantages`), so decisions closer to a high-scoring split get more credit.
    Linear time: M̄ is 1 + (1/n_p)·Σ_{s≥t} d^{s−t} h_{p,s} with h the per-parent histogram of β over splits.
    """
    n_rows = parents.shape[0]
    if branch_scores.shape != (n_rows,) or splits.shape != (n_rows,):
        raise ValueError(
            f"reward_scale_factors: branch_scores {tuple(branch_scores.shape)}, parents {tuple(parents.shape)} "
            f"and splits {tuple(splits.shape)} must all be [B]"
        )
    if mode not in ("off", "reference", "advantage"):
        raise ValueError(
            f"reward_scale_factors: mode must be 'off', 'reference' or 'advantage', got {mode!r}"
        )
    device = branch_scores.device
    token_factors = torch.ones(n_rows, length, dtype=torch.float32, device=device)
    boost = torch.zeros(n_rows, dtype=torch.float32, device=device)
    if mode == "off":
        return RewardScale(token_factors, boost, discount)
    par = parents.long()
    is_branch = par >= 0
    if not bool(is_branch.any()):
        return RewardScale(token_factors, boost, discount)
    if bool((splits.long()[is_branch] < 0).any()) or bool((par[is_branch] >= n_rows).any()):
        raise ValueError("reward_scale_factors: branch rows need 0 <= parent < B and split >= 0")
    bs = branch_scores.double()
    bs_max = bs[is_branch].max()
    if not bool(bs_max > 0):
        return RewardScale(token_factors, boost, discount)
    beta = torch.where(is_branch & (bs > 0), bs / bs_max, torch.zeros_like(bs))
    if mode == "advantage":
        return RewardScale(token_factors, beta.float(), discount)
    b_rows = is_branch.nonzero(as_tuple=True)[0]
    b_par = par[b_rows]
    raw_spl = splits.long()[b_rows]
    b_spl = raw_spl.clamp(max=length - 1)
    hist = torch.zeros(n_rows * length, dtype=torch.float64, device=device)
    # M uses d^{s−t} with the raw s even when s > L−1: fold d^{s−(L−1)} into the bin at L−1
    overshoot = (raw_spl - b_spl).double()
    hist.index_add_(
        0, b_par * length + b_spl, beta[b_rows] * torch.pow(torch.tensor(float(discount)), overshoot)
    )
    n_branches = torch.zeros(n_rows, dtype=torch.float64, device=device).index_add_(
        0, b_par, torch.ones_like(b_par, dtype=torch.float64)
    )
    scan = discounted_future_sum(hist.view(n_rows, length), discount)
    mbar = 1.0 + scan / n_branches.clamp(min=1.0)[:, None]
    return RewardScale(mbar.float(), boost, discount)
