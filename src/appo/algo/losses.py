"""Policy losses (vanilla dual-clip PPO and future-KL / FIPO), KL penalties and loss aggregation.

Spec §1.10 (steps 1–11) and §6 invariants 22–25.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from appo.algo.scans import discounted_future_sum

__all__ = ["LOSS_AGG_MODES", "aggregate_loss", "future_kl_row_filter", "kl_penalty", "policy_loss"]

LossAggMode = Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
LOSS_AGG_MODES: tuple[str, ...] = (
    "token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-mean",
    "seq-mean-token-sum-norm",
)
KLKind = Literal["kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3"]


def aggregate_loss(
    loss: torch.Tensor,
    mask: torch.Tensor,
    mode: LossAggMode = "token-mean",
    *,
    denominator: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss [B, L] to a scalar over ``mask``.

    * ``token-mean``:              Σ_{j,t} m·ℓ / Σ_{j,t} m
    * ``seq-mean-token-sum``:      mean over rows with Σ_t m > 0 of Σ_t m·ℓ
    * ``seq-mean-token-mean``:     mean over rows with Σ_t m > 0 of (Σ_t m·ℓ / Σ_t m)
    * ``seq-mean-token-sum-norm``: Σ_{j,t} m·ℓ / L   (L = padded width, the "Dr. GRPO" constant horizon)

    Rows with an empty mask are skipped by the seq-mean modes (as APPO does), so appending all-masked
    rows never changes the value or the gradient. ``denominator`` replaces the per-call normaliser (token
    count, non-empty row count or L) — use it to normalise by a whole mini-batch across micro-batches.
    An all-zero mask gives exactly 0 with zero (never NaN) gradient; masked positions are selected with
    ``torch.where``, so NaN/inf there never leaks into the value or the gradient.
    """
    if loss.shape != mask.shape:
        raise ValueError(
            f"aggregate_loss: loss {tuple(loss.shape)} and mask {tuple(mask.shape)} differ in shape"
        )
    m = mask.to(torch.bool)
    masked = torch.where(m, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))
    mf = m.to(loss.dtype)
    if mode == "token-mean":
        num = masked.sum()
        den = mf.sum() if denominator is None else denominator
    elif mode in ("seq-mean-token-sum", "seq-mean-token-mean"):
        tokens = mf.sum(dim=-1)
        row = masked.sum(dim=-1)
        if mode == "seq-mean-token-mean":
            row = row / tokens.clamp(min=1.0)
        num = row.sum()
        den = (tokens > 0).to(loss.dtype).sum() if denominator is None else denominator
    elif mode == "seq-mean-token-sum-norm":
        num = masked.sum()
        den = float(loss.shape[-1]) if denominator is None else denominator
    else:
        raise ValueError(f"aggregate_loss: loss_agg_mode must be one of {LOSS_AGG_MODES}, got {mode!r}")
    if isinstance(den, torch.Tensor):
        return num / den.to(num.dtype).clamp(min=1e-8)
    return num / max(float(den), 1e-8)


def kl_penalty(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: KLKind = "low_var_kl"
) -> torch.Tensor:
    """Per-token KL estimate between the current policy and the reference policy.

    With δ = log π − log π_ref:
      * ``kl`` / ``k1``:           δ
      * ``abs``:                  |δ|
      * ``mse`` / ``k2``:          ½ δ²
      * ``low_var_kl`` / ``k3``:   with u = −δ = log π_ref − log π,  clamp(exp(u) − u − 1, −10, 10).
        u is first clamped to [−20, 20]: this does not change any value (|u| > 20 already gives ≥ 10) but
        keeps exp finite so the gradient of saturated tokens is 0 instead of NaN.
    """
    delta = logprobs - ref_logprobs
    if kind in ("kl", "k1"):
        return delta
    if kind == "abs":
        return delta.abs()
    if kind in ("mse", "k2"):
        return 0.5 * delta.square()
    if kind in ("low_var_kl", "k3"):
        u = (-delta).clamp(-20.0, 20.0)
        return (torch.exp(u) - u - 1.0).clamp(-10.0, 10.0)
    raise ValueError(f"kl_penalty: kind must be one of kl/k1, abs, mse/k2, low_var_kl/k3, got {kind!r}")


def _masked_stat(x: torch.Tensor, m: torch.Tensor, how: str) -> torch.Tensor:
    if not bool(m.any()):
        return torch.zeros((), dtype=torch.float32, device=x.device)
    v = x[m].float()
    return {"mean": v.mean, "min": v.min, "max": v.max}[how]().detach()


def future_kl_row_filter(
    old_logprobs: torch.Tensor,
    logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.2,
    clip_ratio_c: float = 3.0,
) -> torch.Tensor:
    """Rows the future-KL loss keeps, [B] bool (spec §1.10 step 9): a row is dropped when more than one of
    its tokens has A_t < 0 and a ratio past the dual clip, max(r_t, clip(r_t, 1−ε_lo, 1+ε_hi)) > c.

    That is C1_t > −Ã_t·c for Ã_t < 0, divided by −Ã_t > 0 (Ã = A·(1 + b·w) has A's sign since b ≥ 0,
    w > 0). A trainer that normalises over a whole mini-batch calls this first to count the kept tokens,
    then passes the result to :func:`policy_loss` as ``keep_rows``."""
    with torch.no_grad():
        m = mask.to(torch.bool)
        d = torch.where(m, logprobs.detach() - old_logprobs.detach(), torch.zeros_like(logprobs)).clamp(
            -20, 20
        )
        ratio = torch.exp(d)
        past = torch.maximum(ratio, ratio.clamp(1.0 - clip_ratio_low, 1.0 + clip_ratio_high)) > clip_ratio_c
        bad = (advantages < 0) & m & past
        return bad.sum(dim=-1) <= 1


def policy_loss(
    old_logprobs: torch.Tensor,
    logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    mode: Literal["vanilla", "future_kl"] = "vanilla",
    *,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.2,
    clip_ratio_c: float = 3.0,
    decay_rate: float = 128.0,
    future_kl_clip_ratio: float = 0.2,
    future_kl_clip_high_only: bool = False,
    future_kl_weight: float = 1.0,
    safety_thresh: float = 4.0,
    loss_agg_mode: LossAggMode = "token-mean",
    chunk_size: int = 64,
    denominator: float | torch.Tensor | None = None,
    keep_rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO-style policy loss; returns (scalar loss, metrics of detached 0-dim tensors).

    Common part (d, r, dual clip), with ε_lo = ``clip_ratio_low``, ε_hi = ``clip_ratio_high``,
    c = ``clip_ratio_c``:
      d_t = clamp(lp_t − old_t, −20, 20),  r_t = exp(d_t),  ppo_kl = mean_m(−d)
      C1 = max(−Ã r, −Ã clip(r, 1−ε_lo, 1+ε_hi)),  C2 = min(−Ã c, C1),  ℓ_t = C2 if Ã_t < 0 else C1

    ``mode="vanilla"``: Ã = A, final mask = m.

    ``mode="future_kl"`` (FIPO, spec §1.10 steps 1–10), h = ``decay_rate``, ε_f = ``future_kl_clip_ratio``,
    b = ``future_kl_weight``, τ = ``safety_thresh``:
      2. participation P_t = [d_t ≤ log c];  x_t = d_t·m_t·P_t
      3. γ = 2^(−1/h)
      4. FKL_t = Σ_{k≥t} γ^{k−t} x_k  (inclusive; :func:`discounted_future_sum`, under no_grad)
      5. w_t = clamp(exp FKL_t, lb, 1+ε_f), lb = 1 if ``future_kl_clip_high_only`` else 1−ε_f;
         if ε_f ≤ 0: w_t = min(exp FKL_t, 10).  w is detached.
      6. safety cap: where A_t < 0 ∧ r_t > τ: w_t ← clamp(w_t, 0.8, 1.0)
      7. Ã_t = A_t·(1 + b·w_t)
      8. dual clip as above on Ã
      9. sequence filter (:func:`future_kl_row_filter`, or ``keep_rows`` [B] when given): drop a row
        entirely if #{t : A_t < 0 ∧ m_t ∧ C1_t > −Ã_t c} > 1
     10. loss = aggregate_loss(ℓ, m ∧ keep_row, ``loss_agg_mode``)
    Metrics: ``pg_loss``, ``pg_clipfrac`` (fraction with −Ã·clip(r) > −Ã·r), ``ppo_kl``,
    ``pg_clipfrac_lower`` (fraction with (C1 > −Ã c) ∧ Ã < 0), all over m; for future_kl also
    ``fipo_iw_{mean,min,max}`` (final w), ``fipo_iw_raw_{mean,min,max}`` (exp FKL before clipping),
    ``fipo_iw_clip_{upper,lower,total}`` (fraction of raw weights above ub / below lb / either),
    ``fipo_iw_weight`` (b) and ``fipo_rows_filtered`` (rows removed by step 9).
    ``chunk_size`` is the scan block size (the config key of the same name); ``denominator`` is passed to
    :func:`aggregate_loss`.
    """
    if not (old_logprobs.shape == logprobs.shape == advantages.shape == mask.shape):
        raise ValueError(
            "policy_loss: old_logprobs, logprobs, advantages and mask must have the same shape, got "
            f"{tuple(old_logprobs.shape)}, {tuple(logprobs.shape)}, {tuple(advantages.shape)}, {tuple(mask.shape)}"
        )
    if mode not in ("vanilla", "future_kl"):
        raise ValueError(f"policy_loss: mode must be 'vanilla' or 'future_kl', got {mode!r}")
    if clip_ratio_c <= 1.0:
        raise ValueError(f"policy_loss: clip_ratio_c must be > 1, got {clip_ratio_c}")
    m = mask.to(torch.bool)
    zero = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    # masked positions may hold garbage (zeros on branch rows, NaN): neutralise before any arithmetic
    d = torch.where(m, logprobs - old_logprobs.detach(), zero).clamp(-20.0, 20.0)
    ratio = torch.exp(d)
    adv = torch.where(m, advantages.detach().to(logprobs.dtype), zero)
    metrics: dict[str, torch.Tensor] = {}
    metrics["ppo_kl"] = _masked_stat(-d, m, "mean")

    if mode == "future_kl":
        with torch.no_grad():
            d_ng = d.detach()
            participate = d_ng <= math.log(clip_ratio_c)
            x = torch.where(m & participate, d_ng, torch.zeros_like(d_ng))
            gamma = 2.0 ** (-1.0 / decay_rate)
            fkl = discounted_future_sum(
                x if x.dtype == torch.float64 else x.float(), gamma, block_size=max(2, chunk_size)
            )
            raw = torch.exp(fkl)
            if future_kl_clip_ratio > 0:
                ub = 1.0 + future_kl_clip_ratio
                lb = 1.0 if future_kl_clip_high_only else 1.0 - future_kl_clip_ratio
                w = raw.clamp(lb, ub)
            else:
                ub, lb = 10.0, -math.inf
                w = raw.clamp(max=10.0)
            cap = (adv < 0) & (ratio.detach() > safety_thresh)
            w = torch.where(cap, w.clamp(0.8, 1.0), w).to(logprobs.dtype)
            above = m & (raw > ub)
            below = m & (raw < lb)
            n_valid = m.sum().clamp(min=1).float()
            metrics.update(
                fipo_iw_mean=_masked_stat(w, m, "mean"),
                fipo_iw_min=_masked_stat(w, m, "min"),
                fipo_iw_max=_masked_stat(w, m, "max"),
                fipo_iw_raw_mean=_masked_stat(raw, m, "mean"),
                fipo_iw_raw_min=_masked_stat(raw, m, "min"),
                fipo_iw_raw_max=_masked_stat(raw, m, "max"),
                fipo_iw_clip_upper=above.sum().float() / n_valid,
                fipo_iw_clip_lower=below.sum().float() / n_valid,
                fipo_iw_clip_total=(above | below).sum().float() / n_valid,
                fipo_iw_weight=torch.tensor(float(future_kl_weight)),
            )
        adv_t = adv * (1.0 + future_kl_weight * w)
    else:
        adv_t = adv

    loss1 = -adv_t * ratio
    loss2 = -adv_t * ratio.clamp(1.0 - clip_ratio_low, 1.0 + clip_ratio_high)
    c1 = torch.maximum(loss1, loss2)
    loss3 = -adv_t * clip_ratio_c
    c2 = torch.minimum(loss3, c1)
    per_token = torch.where(adv_t < 0, c2, c1)

    lower_hit = (c1 > loss3) & (adv_t < 0)
    metrics["pg_clipfrac"] = _masked_stat((loss2 > loss1).float(), m, "mean")
    metrics["pg_clipfrac_lower"] = _masked_stat(lower_hit.float(), m, "mean")

    final_mask = m
    if mode == "future_kl":
        if keep_rows is None:
            keep_rows = future_kl_row_filter(
                old_logprobs,
                logprobs,
                advantages,
                mask,
                clip_ratio_low=clip_ratio_low,
                clip_ratio_high=clip_ratio_high,
                clip_ratio_c=clip_ratio_c,
            )
        keep_row = keep_rows.to(device=m.device, dtype=torch.bool)[:, None]
        final_mask = m & keep_row
        metrics["fipo_rows_filtered"] = (~keep_row & m.any(dim=-1, keepdim=True)).sum().float()
    loss = aggregate_loss(per_token, final_mask, loss_agg_mode, denominator=denominator)
    metrics["pg_loss"] = loss.detach()
    return loss, metrics
