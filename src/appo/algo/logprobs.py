"""Chunked token log-probabilities and exact entropies from hidden states (never materialising [B, L, V])."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["logprobs_and_entropy"]


def _chunk_logits(
    out: torch.Tensor, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, temperature: float
) -> torch.Tensor:
    """z = (h Wᵀ + bias)/T written into the preallocated float buffer ``out`` ([≥c, V]); returns out[:c]."""
    z = out[: h.shape[0]]
    if weight.dtype == z.dtype:
        torch.matmul(h, weight.t(), out=z)
    else:
        z.copy_(h @ weight.t())
    if bias is not None:
        z.add_(bias)
    if temperature != 1.0:
        z.div_(temperature)
    return z


class _ChunkedLogprobEntropy(torch.autograd.Function):
    """Forward: per chunk z = h Wᵀ / T, lse, log p(y), H = lse − Σ softmax(z)·z. Saves only h, W, y, lse, H.

    Backward recomputes each chunk's logits:  with p = softmax(z), log p = z − lse,
      ∂ log p(y)/∂z = onehot(y) − p,       ∂H/∂z = −p ⊙ (log p + H),
    and ∂z/∂h = W/T, ∂z/∂W = h/T. Two [chunk, V] float buffers are allocated once per call and reused by
    every chunk (in-place ops), so peak extra memory is 2·chunk·V floats, independent of B·L.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        temperature: float,
        chunk_size: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, vocab = hidden.shape[0], weight.shape[0]
        out_dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
        dev = hidden.device
        logp = torch.empty(n, dtype=out_dtype, device=dev)
        ent = torch.empty(n, dtype=out_dtype, device=dev)
        lse_all = torch.empty(n, dtype=out_dtype, device=dev)
        c = max(1, min(chunk_size, n))
        zbuf = torch.empty(c, vocab, dtype=out_dtype, device=dev)
        pbuf = torch.empty(c, vocab, dtype=out_dtype, device=dev)
        for start in range(0, n, chunk_size):
            sl = slice(start, min(n, start + chunk_size))
            z = _chunk_logits(zbuf, hidden[sl], weight, bias, temperature)
            p = pbuf[: z.shape[0]]
            zmax = z.amax(dim=-1, keepdim=True)
            torch.sub(z, zmax, out=p)
            p.exp_()
            total = p.sum(dim=-1, keepdim=True)
            lse = (zmax + total.log()).squeeze(-1)
            logp[sl] = z.gather(1, targets[sl, None]).squeeze(1) - lse
            p.div_(total)
            ent[sl] = lse - p.mul_(z).sum(dim=-1)
            lse_all[sl] = lse
        del zbuf, pbuf
        ctx.save_for_backward(hidden, weight, bias, targets, lse_all, ent)
        ctx.set_materialize_grads(False)  # an unused output (e.g. entropy) gets None, not a zero tensor
        ctx.temperature = temperature
        ctx.chunk_size = chunk_size
        return logp, ent

    @staticmethod
    def backward(ctx: Any, g_logp: torch.Tensor | None, g_ent: torch.Tensor | None):  # type: ignore[override]
        hidden, weight, bias, targets, lse_all, ent = ctx.saved_tensors
        if g_logp is None and g_ent is None:
            return None, None, None, None, None, None
        temperature, chunk_size = ctx.temperature, ctx.chunk_size
        need_h, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        grad_h = torch.zeros_like(hidden) if need_h else None
        acc_dtype = torch.float32 if weight.dtype in (torch.float16, torch.bfloat16) else weight.dtype
        grad_w = torch.zeros_like(weight, dtype=acc_dtype) if need_w else None
        grad_b = torch.zeros_like(bias) if (need_b and bias is not None) else None
        n, vocab = hidden.shape[0], weight.shape[0]
        c = max(1, min(chunk_size, n))
        zbuf = torch.empty(c, vocab, dtype=lse_all.dtype, device=hidden.device)
        pbuf = torch.empty(c, vocab, dtype=lse_all.dtype, device=hidden.device)
        for start in range(0, n, chunk_size):
            sl = slice(start, min(n, start + chunk_size))
            z = _chunk_logits(zbuf, hidden[sl], weight, bias, temperature)
            z.sub_(lse_all[sl, None])  # z := log p
            p = torch.exp(z, out=pbuf[: z.shape[0]])
            if g_ent is not None:
                # ∂H/∂z = −p ⊙ (log p + H), times the incoming entropy gradient (in z's buffer)
                gz = z.add_(ent[sl, None]).mul_(p).mul_(-g_ent[sl, None].to(z.dtype))
                if g_logp is not None:
                    gz.addcmul_(p, g_logp[sl, None].to(z.dtype), value=-1.0)
            else:
                assert g_logp is not None
                gz = p.mul_(-g_logp[sl, None].to(p.dtype))
            if g_logp is not None:
                gz.scatter_add_(1, targets[sl, None], g_logp[sl, None].to(gz.dtype))
            if temperature != 1.0:
                gz.div_(temperature)
            gzw = gz if gz.dtype == weight.dtype else gz.to(weight.dtype)
            if grad_h is not None:
                grad_h[sl] = gzw @ weight
            if grad_w is not None:
                grad_w += (gzw.t() @ hidden[sl]).to(acc_dtype)
            if grad_b is not None:
                grad_b += gz.sum(dim=0).to(grad_b.dtype)
        del zbuf, pbuf
        if grad_w is not None:
            grad_w = grad_w.to(weight.dtype)
        return grad_h, grad_w, grad_b, None, None, None


def logprobs_and_entropy(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    chunk_size: int = 256,
    *,
    lm_head_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log π(y_t) and exact entropy of softmax(z_t/T), z_t = h_t W^T (+ bias).

      log p_t = z_{t,y_t}/T − logsumexp_v(z_{t,v}/T)
      H_t     = logsumexp_v(z_{t,v}/T) − Σ_v softmax(z_t/T)_v · z_{t,v}/T

    Computed ``chunk_size`` tokens at a time; the full [B, L, V] logits are never materialised, neither in
    the forward nor in the backward (a custom autograd function recomputes one chunk's logits at a time),
    so peak extra memory is O(chunk_size·V) instead of O(B·L·V). Logits are computed in the weight dtype
    and upcast to float32 (float64 inputs stay float64). Gradients flow to ``hidden``, ``lm_head_weight``
    and the bias through both outputs.

    Args:
        hidden: [..., H] final hidden states (e.g. [B, L, H], already aligned with ``targets``).
        lm_head_weight: [V, H].
        targets: [...] int64 token ids.
    Returns:
        (logprobs, entropy), each of shape ``targets.shape``, float32 (float64 for float64 inputs).
    """
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(
            f"logprobs_and_entropy: hidden {tuple(hidden.shape)} must be targets.shape + (H,), "
            f"targets {tuple(targets.shape)}"
        )
    if lm_head_weight.dim() != 2 or lm_head_weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"logprobs_and_entropy: lm_head_weight must be [V, {hidden.shape[-1]}], got {tuple(lm_head_weight.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"logprobs_and_entropy: temperature must be > 0, got {temperature}")
    if chunk_size < 1:
        raise ValueError(f"logprobs_and_entropy: chunk_size must be >= 1, got {chunk_size}")
    shape = targets.shape
    h = hidden.reshape(-1, hidden.shape[-1])
    y = targets.reshape(-1).long()
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= lm_head_weight.shape[0]):
        raise ValueError(
            f"logprobs_and_entropy: target ids must lie in [0, {lm_head_weight.shape[0]}), "
            f"got range [{int(y.min())}, {int(y.max())}]"
        )
    logp, ent = _ChunkedLogprobEntropy.apply(
        h, lm_head_weight, lm_head_bias, y, float(temperature), int(chunk_size)
    )
    return logp.reshape(shape), ent.reshape(shape)
