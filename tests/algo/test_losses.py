"""Invariants 20 (masked rows add no gradient), 22–25: future-KL loss, on-policy check, empty masks, KL."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from appo.algo import LOSS_AGG_MODES, aggregate_loss, kl_penalty, policy_loss

# hypothesis settings local to this file (no global profile: other test dirs are unaffected)
FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None)

CFG = dict(
    clip_ratio_low=0.2,
    clip_ratio_high=0.28,
    clip_ratio_c=3.0,
    decay_rate=64.0,
    future_kl_clip_ratio=0.2,
    future_kl_clip_high_only=True,
    future_kl_weight=1.0,
    safety_thresh=6.0,
)


def agg_reference(loss, mask, mode):
    rows, length = loss.shape
    if mode == "token-mean":
        n = sum(int(mask[j, t]) for j in range(rows) for t in range(length))
        s = sum(float(loss[j, t]) for j in range(rows) for t in range(length) if mask[j, t])
        return s / n if n else 0.0
    if mode == "seq-mean-token-sum-norm":
        return sum(float(loss[j, t]) for j in range(rows) for t in range(length) if mask[j, t]) / length
    per_row = []
    for j in range(rows):
        vals = [float(loss[j, t]) for t in range(length) if mask[j, t]]
        if vals:
            per_row.append(sum(vals) / (len(vals) if mode == "seq-mean-token-mean" else 1))
    return sum(per_row) / len(per_row) if per_row else 0.0


def loss_reference(old, lp, adv, mask, mode, cfg, agg="token-mean"):
    """Token-by-token Python version of spec §1.10 (O(L²) FutureKL)."""
    rows, length = lp.shape
    lo, hi, c = cfg["clip_ratio_low"], cfg["clip_ratio_high"], cfg["clip_ratio_c"]
    d = [[min(max(float(lp[j, t] - old[j, t]), -20.0), 20.0) for t in range(length)] for j in range(rows)]
    r = [[math.exp(v) for v in row] for row in d]
    losses = [[0.0] * length for _ in range(rows)]
    keep = []
    for j in range(rows):
        bad = 0
        for t in range(length):
            a = float(adv[j, t])
            if mode == "future_kl":
                gamma = 2 ** (-1 / cfg["decay_rate"])
                fkl = sum(
                    gamma ** (k - t) * d[j][k]
                    for k in range(t, length)
                    if mask[j, k] and d[j][k] <= math.log(c)
                )
                eps_f = cfg["future_kl_clip_ratio"]
                if eps_f > 0:
                    lb = 1.0 if cfg["future_kl_clip_high_only"] else 1 - eps_f
                    w = min(max(math.exp(fkl), lb), 1 + eps_f)
                else:
                    w = min(math.exp(fkl), 10.0)
                if a < 0 and r[j][t] > cfg["safety_thresh"]:
                    w = min(max(w, 0.8), 1.0)
                a_t = a * (1 + cfg["future_kl_weight"] * w)
            else:
                a_t = a
            c1 = max(-a_t * r[j][t], -a_t * min(max(r[j][t], 1 - lo), 1 + hi))
            c2 = min(-a_t * c, c1)
            losses[j][t] = c2 if a_t < 0 else c1
            if a < 0 and mask[j, t] and c1 > -a_t * c:
                bad += 1
        keep.append(mode != "future_kl" or bad <= 1)
    final = torch.tensor([[bool(mask[j, t]) and keep[j] for t in range(length)] for j in range(rows)])
    return agg_reference(torch.tensor(losses, dtype=torch.float64), final, agg)


def random_inputs(g, rows, length, spread):
    old = -torch.rand(rows, length, generator=g, dtype=torch.float64) * 3
    lp = old + torch.randn(rows, length, generator=g, dtype=torch.float64) * spread
    adv = torch.randn(rows, length, generator=g, dtype=torch.float64)
    mask = torch.rand(rows, length, generator=g) > 0.25
    return old, lp, adv, mask


@FAST
@given(
    rows=st.integers(1, 4),
    length=st.integers(1, 12),
    spread=st.sampled_from([0.0, 0.05, 0.5, 1.5]),
    mode=st.sampled_from(["vanilla", "future_kl"]),
    high_only=st.booleans(),
    eps_f=st.sampled_from([0.2, 0.0]),
    agg=st.sampled_from(LOSS_AGG_MODES),
    seed=st.integers(0, 10_000),
)
def test_policy_loss_matches_reference(rows, length, spread, mode, high_only, eps_f, agg, seed):
    g = torch.Generator().manual_seed(seed)
    old, lp, adv, mask = random_inputs(g, rows, length, spread)
    cfg = dict(
        CFG, future_kl_clip_high_only=high_only, future_kl_clip_ratio=eps_f, decay_rate=4.0, safety_thresh=2.0
    )
    loss, metrics = policy_loss(old, lp, adv, mask, mode, loss_agg_mode=agg, **cfg)
    assert loss.item() == pytest.approx(
        loss_reference(old, lp, adv, mask, mode, cfg, agg), rel=1e-9, abs=1e-9
    )
    assert metrics["pg_loss"].item() == pytest.approx(loss.item())


@pytest.mark.parametrize("high_only", [True, False])
@pytest.mark.parametrize("agg", LOSS_AGG_MODES)
def test_on_policy_future_kl_equals_vanilla_with_scaled_advantages(high_only, agg):
    """Invariant 23: lp == old ⇒ future_kl loss (and gradient) == vanilla with A·(1 + b)."""
    g = torch.Generator().manual_seed(3)
    rows, length = 4, 50
    old = -torch.rand(rows, length, generator=g) * 4
    adv = torch.randn(rows, length, generator=g)
    mask = torch.rand(rows, length, generator=g) > 0.2
    cfg = dict(CFG, future_kl_clip_high_only=high_only, future_kl_weight=1.0)
    for b in (1.0, 0.5):
        cfg["future_kl_weight"] = b
        lp1 = old.clone().requires_grad_(True)
        fkl, m1 = policy_loss(old, lp1, adv, mask, "future_kl", loss_agg_mode=agg, **cfg)
        fkl.backward()
        lp2 = old.clone().requires_grad_(True)
        van, _ = policy_loss(old, lp2, adv * (1 + b), mask, "vanilla", loss_agg_mode=agg, **cfg)
        van.backward()
        assert fkl.item() == pytest.approx(van.item(), rel=1e-6, abs=1e-7)
        assert torch.allclose(lp1.grad, lp2.grad, rtol=1e-6, atol=1e-8)
        assert m1["fipo_iw_mean"].item() == pytest.approx(1.0)
        assert fkl.abs().item() > 0  # not a vacuous comparison


@pytest.mark.parametrize("mode", ["vanilla", "future_kl"])
@pytest.mark.parametrize("agg", LOSS_AGG_MODES)
def test_all_zero_mask_gives_zero_loss_and_zero_grad(mode, agg):
    """Invariant 24 — also with garbage (NaN) in the masked positions."""
    old = torch.zeros(3, 7)
    lp = torch.full((3, 7), float("nan")).requires_grad_(True)
    adv = torch.randn(3, 7)
    loss, metrics = policy_loss(old, lp, adv, torch.zeros(3, 7), mode, loss_agg_mode=agg, **CFG)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(lp.grad, torch.zeros(3, 7))
    assert all(torch.isfinite(v).all() for v in metrics.values())


@pytest.mark.parametrize("mode", ["vanilla", "future_kl"])
@pytest.mark.parametrize("agg", LOSS_AGG_MODES)
def test_extra_all_masked_rows_do_not_change_the_gradient(mode, agg):
    """Invariant 20: branch rows (loss_mask 0, A 0, old_lp 0) contribute exactly nothing."""
    g = torch.Generator().manual_seed(7)
    old, lp, adv, mask = random_inputs(g, 3, 20, 0.3)
    lp_a = lp.clone().requires_grad_(True)
    la, _ = policy_loss(old, lp_a, adv, mask, mode, loss_agg_mode=agg, **CFG)
    la.backward()
    extra = 2
    lp_b = torch.cat([lp, torch.randn(extra, 20, dtype=torch.float64)]).requires_grad_(True)
    old_b = torch.cat([old, torch.zeros(extra, 20, dtype=torch.float64)])
    adv_b = torch.cat([adv, torch.zeros(extra, 20, dtype=torch.float64)])
    mask_b = torch.cat([mask, torch.zeros(extra, 20, dtype=torch.bool)])
    lb, _ = policy_loss(old_b, lp_b, adv_b, mask_b, mode, loss_agg_mode=agg, **CFG)
    lb.backward()
    assert lb.item() == pytest.approx(la.item(), rel=1e-12)
    assert torch.allclose(lp_b.grad[:3], lp_a.grad, rtol=1e-12, atol=1e-15)
    assert (lp_b.grad[3:] == 0).all()


def test_future_kl_mechanics():
    """Invariant 22 piece by piece on a hand-made row."""
    old = torch.zeros(1, 4)
    lp = torch.tensor([[0.1, math.log(5.0), 0.05, 0.0]])  # r_1 = 5 > c = 3: excluded from FKL
    adv = torch.ones(1, 4)
    mask = torch.ones(1, 4)
    cfg = dict(CFG, future_kl_clip_ratio=0.0, decay_rate=1.0)  # γ = 0.5, w = min(exp FKL, 10)
    loss, m = policy_loss(old, lp, adv, mask, "future_kl", **cfg)
    fkl = [0.1 + 0.25 * 0.05, 0.5 * 0.05, 0.05, 0.0]
    w = [math.exp(v) for v in fkl]
    assert m["fipo_iw_raw_max"].item() == pytest.approx(max(w), rel=1e-6)
    assert m["fipo_iw_raw_min"].item() == pytest.approx(1.0)
    ratios = [math.exp(0.1), 5.0, math.exp(0.05), 1.0]
    per = [-(1 + w[t]) * min(ratios[t], 1.28) for t in range(4)]  # A > 0: C1 = −Ã·min(r, 1+ε_hi)
    assert loss.item() == pytest.approx(sum(per) / 4, rel=1e-6)


def test_future_kl_safety_cap_and_sequence_filter():
    old = torch.zeros(3, 3)
    big = math.log(8.0)  # r = 8 > τ = 6 and > c = 3
    lp = torch.tensor([[big, 0.0, 0.0], [big, big, 0.0], [0.0, 0.0, 0.0]])
    adv = torch.tensor([[-1.0, 1.0, 1.0], [-1.0, -1.0, 1.0], [1.0, 1.0, 1.0]])
    mask = torch.ones(3, 3)
    cfg = dict(CFG, future_kl_clip_high_only=False)
    lp_ = lp.clone().requires_grad_(True)
    loss, m = policy_loss(old, lp_, adv, mask, "future_kl", **cfg)
    loss.backward()
    # row 1 has two tokens with A < 0 and r > c → removed from numerator and denominator
    assert m["fipo_rows_filtered"].item() == 1.0
    assert (lp_.grad[1] == 0).all()
    # row 0: one such token survives; it is dual-clipped: loss = −Ã·c with Ã = −(1 + w), w capped to [0.8, 1]
    # (FKL_0 excludes the token itself since r > c, so w_0 = clamp(exp(0), 0.8, 1.2) = 1 → capped 1)
    expected_row0 = [2.0 * 3.0, -2.0, -2.0]
    expected_row2 = [-2.0, -2.0, -2.0]
    assert loss.item() == pytest.approx((sum(expected_row0) + sum(expected_row2)) / 6, rel=1e-6)
    assert lp_.grad[0, 0] == 0  # dual clip ⇒ constant
    assert m["pg_clipfrac_lower"].item() == pytest.approx(3 / 9)


def test_vanilla_loss_hand_values():
    old = torch.zeros(1, 3)
    lp = torch.log(torch.tensor([[1.5, 0.5, 5.0]]))
    adv = torch.tensor([[1.0, 1.0, -1.0]])
    loss, m = policy_loss(old, lp, adv, torch.ones(1, 3), "vanilla", clip_ratio_low=0.2, clip_ratio_high=0.28)
    # t0: max(−1.5, −1.28) = −1.28; t1: max(−0.5, −0.8) = −0.5; t2: min(3, max(5, 1.28)) = 3
    assert loss.item() == pytest.approx((-1.28 - 0.5 + 3.0) / 3, rel=1e-6)
    assert m["pg_clipfrac"].item() == pytest.approx(1 / 3)


@FAST
@given(
    rows=st.integers(1, 4),
    length=st.integers(1, 10),
    agg=st.sampled_from(LOSS_AGG_MODES),
    seed=st.integers(0, 9999),
)
def test_aggregate_loss_matches_reference(rows, length, agg, seed):
    g = torch.Generator().manual_seed(seed)
    loss = torch.randn(rows, length, generator=g, dtype=torch.float64)
    mask = torch.rand(rows, length, generator=g) > 0.5
    assert aggregate_loss(loss, mask, agg).item() == pytest.approx(agg_reference(loss, mask, agg), abs=1e-12)


def test_aggregate_loss_external_denominator_and_bad_mode():
    loss = torch.ones(2, 4)
    mask = torch.ones(2, 4)
    assert aggregate_loss(loss, mask, "token-mean", denominator=16).item() == 0.5
    with pytest.raises(ValueError, match="loss_agg_mode"):
        aggregate_loss(loss, mask, "mean")  # type: ignore[arg-type]


def test_kl_penalty_kinds():
    lp = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.5, -1.0, -0.5])
    delta = lp - ref
    assert torch.allclose(kl_penalty(lp, ref, "kl"), delta)
    assert torch.allclose(kl_penalty(lp, ref, "abs"), delta.abs())
    assert torch.allclose(kl_penalty(lp, ref, "mse"), 0.5 * delta**2)
    u = ref - lp
    assert torch.allclose(kl_penalty(lp, ref, "low_var_kl"), torch.exp(u) - u - 1)
    assert kl_penalty(lp, ref, "low_var_kl")[2] == 0
    with pytest.raises(ValueError, match="kind"):
        kl_penalty(lp, ref, "full")  # type: ignore[arg-type]


def test_low_var_kl_clamp_and_finite_gradient():
    """Invariant 25: k3 clamped to [−10, 10]; saturated tokens get zero (not NaN) gradient."""
    lp = torch.tensor([-200.0, 0.0, -3.0], requires_grad=True)
    ref = torch.tensor([0.0, -200.0, -0.5])
    kl = kl_penalty(lp, ref, "low_var_kl")
    assert kl[:2].tolist() == [10.0, 10.0]
    kl_loss = aggregate_loss(kl, torch.ones(3), "token-mean") * 0.001
    kl_loss.backward()
    assert torch.isfinite(lp.grad).all() and lp.grad[0] == 0 and lp.grad[1] == 0
    u = 2.5
    assert lp.grad[2].item() == pytest.approx(0.001 / 3 * (1 - math.exp(u)), rel=1e-5)
