"""Linear-time discounted reverse scans and the APPO FutureValue (spec §1.5 steps 2–4, §5.D).

Everything here is O(B·L·C) for a block size C (default 64): no L×L decay matrix is ever built and
no γ^{−t} rescaling is used (γ^{−10000} overflows float32 for γ = 2^(−1/64)).
"""

from __future__ import annotations

import torch

__all__ = ["discounted_future_sum", "future_values"]

_DEFAULT_BLOCK = 64


def _decay_block(gamma: float, size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Upper-triangular decay block D[j, i] = γ^{j−i} for j ≥ i, else 0 (shape [size, size])."""
    idx = torch.arange(size, device=device, dtype=torch.float64)
    diff = idx[:, None] - idx[None, :]  # j - i
    block = torch.where(
        diff >= 0, torch.pow(torch.tensor(gamma, dtype=torch.float64), diff.clamp(min=0)), 0.0
    )
    return block.to(dtype)


def _scan_2d(x: torch.Tensor, gamma: float, block: int) -> torch.Tensor:
    """Blocked reverse scan of a 2-D tensor [R, L] along the last dimension."""
    rows, length = x.shape
    if length == 0:
        return x.clone()
    if length <= block:
        return x @ _decay_block(gamma, length, x.dtype, x.device)
    n_blocks = -(-length // block)
    pad = n_blocks * block - length
    xp = torch.nn.functional.pad(x, (0, pad)) if pad else x
    xb = xp.reshape(rows, n_blocks, block)
    # 1) within-block inclusive discounted suffix sums: local[n, i] = Σ_{j≥i in block n} γ^{j−i} x[n, j]
    local = xb @ _decay_block(gamma, block, x.dtype, x.device)
    # 2) carry into block n from everything after it: c_n = F at the first position of block n+1.
    #    F(first of block n) = local[n, 0] + γ^C·F(first of block n+1) — itself a discounted future sum over
    #    blocks with factor γ^C, solved recursively (depth log_C(L)).
    heads = local[:, :, 0]
    gamma_c = float(gamma) ** block
    head_f = _scan_2d(heads, gamma_c, block)  # F at the first position of every block
    carry = torch.zeros_like(head_f)
    carry[:, :-1] = head_f[:, 1:]
    # 3) F[n, i] = local[n, i] + γ^{C−i}·carry_n
    powers = torch.pow(
        torch.tensor(float(gamma), dtype=torch.float64),
        torch.arange(block, 0, -1, dtype=torch.float64, device=x.device),
    ).to(x.dtype)
    out = local + carry[:, :, None] * powers
    out = out.reshape(rows, n_blocks * block)
    return out[:, :length] if pad else out


def discounted_future_sum(
    x: torch.Tensor,
    gamma: float,
    mask: torch.Tensor | None = None,
    *,
    block_size: int = _DEFAULT_BLOCK,
) -> torch.Tensor:
    """Inclusive discounted future sum along the last dimension.

    F_t = Σ_{k ≥ t} γ^{k−t} · m_k · x_k      (k = t included; m ≡ 1 when ``mask`` is None)

    Computed as a blocked reverse scan: inside each block of C = ``block_size`` positions a C×C
    triangular matmul, across blocks the carry F_{start of next block}·γ^{C−i} (the block carries form a
    shorter scan with factor γ^C, solved the same way). Cost O(B·L·C), memory O(B·L); no L×L matrix, no
    γ^{−t} trick. Masked positions contribute 0 even when ``x`` holds NaN/inf there. Works for any leading
    shape; float16/bfloat16 inputs are computed in float32 and cast back. Not differentiable by design
    intent (it is used under ``torch.no_grad``), although autograd does flow through it.

    Args:
        x: tensor [..., L].
        gamma: discount γ ≥ 0 (γ = 1 gives plain suffix sums).
        mask: optional tensor broadcastable to ``x``; nonzero = valid.
        block_size: scan block C.
    """
    if gamma < 0:
        raise ValueError(f"discounted_future_sum: gamma must be >= 0, got {gamma}")
    if block_size < 2:
        raise ValueError(f"discounted_future_sum: block_size must be >= 2, got {block_size}")
    orig_dtype = x.dtype
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    if mask is not None:
        work = torch.where(mask.to(torch.bool), work, torch.zeros((), dtype=work.dtype, device=work.device))
    shape = work.shape
    if work.dim() == 0:
        raise ValueError("discounted_future_sum: x must have at least one dimension")
    flat = work.reshape(-1, shape[-1])
    out = _scan_2d(flat, float(gamma), block_size).reshape(shape)
    return out.to(orig_dtype) if out.dtype != orig_dtype and orig_dtype.is_floating_point else out


def future_values(
    current_logprobs: torch.Tensor,
    rollout_logprobs: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    clip_eps: float,
) -> torch.Tensor:
    """APPO FutureValue (spec §1.5 steps 2–4).

    ℓ_t = current_t − rollout_t;  F_t = Σ_{k≥t} γ^{k−t} m_k ℓ_k;
    V_t = clamp(exp(clamp(F_t, −20, 20)), 1−ε, 1+ε)  (no outer clamp when ε ≤ 0).

    Values are returned at every position (also where ``mask`` is 0, as in the reference); the
    z-scoring step (:func:`appo.algo.masked_zscore`) ignores the masked ones. Computed without autograd.
    """
    with torch.no_grad():
        ell = current_logprobs.float() - rollout_logprobs.float()
        f = discounted_future_sum(ell, gamma, mask)
        v = torch.exp(f.clamp(-20.0, 20.0))
        if clip_eps > 0:
            v = v.clamp(1.0 - clip_eps, 1.0 + clip_eps)
    return v
