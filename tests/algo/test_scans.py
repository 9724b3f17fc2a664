"""Invariant 9 (O(L) scan == O(L²) reference) and invariant 10 (FutureValue)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from appo.algo import discounted_future_sum, future_values

# hypothesis settings local to this file (no global profile: other test dirs are unaffected)
FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None)


def dense_reference(x: torch.Tensor, gamma: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Obviously correct O(L²): F = x·D with D[k, t] = γ^{k−t} for k ≥ t (float64)."""
    xd = x.double()
    if mask is not None:
        xd = torch.where(mask.bool(), xd, torch.zeros_like(xd))
    length = x.shape[-1]
    out = torch.zeros_like(xd)
    for t in range(length):
        for k in range(t, length):
            out[..., t] += gamma ** (k - t) * xd[..., k]
    return out


def loop_reference(x: torch.Tensor, gamma: float) -> torch.Tensor:
    """Backward recursion F_t = x_t + γ F_{t+1} in float64 (vectorised over rows, loop over L)."""
    xd = x.double()
    out = torch.empty_like(xd)
    acc = torch.zeros(xd.shape[:-1], dtype=torch.float64)
    for t in range(xd.shape[-1] - 1, -1, -1):
        acc = xd[..., t] + gamma * acc
        out[..., t] = acc
    return out


def test_small_hand_example():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    out = discounted_future_sum(x, 0.5)
    # F_3 = 4, F_2 = 3 + 2 = 5, F_1 = 2 + 2.5 = 4.5, F_0 = 1 + 2.25 = 3.25
    assert torch.allclose(out, torch.tensor([[3.25, 4.5, 5.0, 4.0]]))
    m = torch.tensor([[1, 0, 1, 1]])
    assert torch.allclose(discounted_future_sum(x, 0.5, m), torch.tensor([[2.25, 2.5, 5.0, 4.0]]))


@pytest.mark.parametrize("gamma", [1.0, 2.0 ** (-1.0 / 64), 0.989])
def test_long_sequences_match_reference_to_1e5_relative(gamma):
    """Invariant 9 at L = 10 000 in float32."""
    g = torch.Generator().manual_seed(0)
    length = 10_000
    # strictly positive terms: plain relative error is well defined everywhere
    pos = torch.rand(3, length, generator=g) + 0.01
    ref = loop_reference(pos, gamma)
    out = discounted_future_sum(pos, gamma)
    assert out.dtype == torch.float32
    assert ((out.double() - ref).abs() / ref.abs()).max().item() < 1e-5
    # signed log-ratios with a mask: relative to the magnitude Σ γ^{k−t}|m_k x_k| (F itself may cross 0)
    x = torch.randn(3, length, generator=g) * 0.3
    m = torch.rand(3, length, generator=g) > 0.3
    ref = loop_reference(torch.where(m, x, 0.0), gamma)
    scale = loop_reference(torch.where(m, x.abs(), 0.0), gamma)
    out = discounted_future_sum(x, gamma, m)
    assert ((out.double() - ref).abs() / scale.clamp(min=1e-12)).max().item() < 1e-5


@FAST
@given(
    rows=st.integers(1, 3),
    length=st.integers(1, 70),
    gamma=st.sampled_from([0.0, 0.3, 0.9, 0.989, 1.0]),
    block=st.integers(2, 9),
    seed=st.integers(0, 10_000),
    use_mask=st.booleans(),
)
def test_matches_dense_reference(rows, length, gamma, block, seed, use_mask):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, length, generator=g)
    mask = (torch.rand(rows, length, generator=g) > 0.4) if use_mask else None
    ref = dense_reference(x, gamma, mask)
    out = discounted_future_sum(x, gamma, mask, block_size=block)
    assert torch.allclose(out.double(), ref, rtol=1e-5, atol=1e-5)


def test_masked_garbage_is_ignored_and_shapes_are_kept():
    x = torch.randn(2, 3, 50)
    m = torch.rand(2, 3, 50) > 0.5
    garbage = torch.where(m, x, torch.full_like(x, float("nan")))
    out = discounted_future_sum(garbage, 0.97, m)
    assert out.shape == (2, 3, 50)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, discounted_future_sum(torch.where(m, x, 0.0), 0.97), atol=1e-6)


def test_no_overflow_at_long_length_with_strong_discount():
    # the γ^{−t} cumsum trick overflows here (0.989^{−10000} = inf in float32)
    x = torch.ones(1, 10_000)
    out = discounted_future_sum(x, 0.989)
    assert torch.isfinite(out).all()
    assert out[0, 0].item() == pytest.approx(1 / (1 - 0.989), rel=1e-5)
    assert out[0, -1].item() == pytest.approx(1.0)


def test_low_precision_input_keeps_dtype():
    x = torch.randn(2, 100).to(torch.bfloat16)
    out = discounted_future_sum(x, 1.0)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), loop_reference(x.float(), 1.0).float(), atol=0.2)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="gamma"):
        discounted_future_sum(torch.zeros(1, 3), -0.5)
    with pytest.raises(ValueError, match="block_size"):
        discounted_future_sum(torch.zeros(1, 3), 0.5, block_size=1)


def reference_future_values(cur, roll, mask, gamma, eps):
    f = dense_reference(cur - roll, gamma, mask)
    v = torch.exp(f.clamp(-20, 20))
    if eps > 0:
        v = v.clamp(1 - eps, 1 + eps)
    return v


@FAST
@given(
    length=st.integers(1, 40),
    gamma=st.sampled_from([1.0, 0.95]),
    eps=st.sampled_from([0.0, -1.0, 0.2, 0.5]),
    seed=st.integers(0, 1000),
    scale=st.sampled_from([0.1, 3.0, 30.0]),
)
def test_future_values_match_reference(length, gamma, eps, seed, scale):
    """Invariant 10: V = clamp(exp(clamp(F, −20, 20)), 1−ε, 1+ε); no clamp for ε ≤ 0."""
    g = torch.Generator().manual_seed(seed)
    cur = torch.randn(2, length, generator=g) * scale
    roll = torch.randn(2, length, generator=g) * scale
    mask = torch.rand(2, length, generator=g) > 0.3
    out = future_values(cur, roll, mask, gamma, eps)
    ref = reference_future_values(cur, roll, mask, gamma, eps)
    assert torch.allclose(out.double(), ref, rtol=1e-4, atol=1e-6)
    if eps > 0:
        assert out.min() >= 1 - eps - 1e-6 and out.max() <= 1 + eps + 1e-6
    else:
        assert out.max() <= math.exp(20) * (1 + 1e-5)


def test_future_values_symmetric_clip_and_exp_clamp():
    cur = torch.tensor([[0.0, 0.0, 0.0]])
    roll = torch.tensor([[-100.0, 0.0, 0.1]])
    m = torch.ones(1, 3)
    v = future_values(cur, roll, m, 1.0, 0.0)
    assert v[0, 0].item() == pytest.approx(math.exp(20), rel=1e-5)  # F = 99.9 clamped to 20
    assert v[0, 2].item() == pytest.approx(math.exp(-0.1), rel=1e-6)
    v = future_values(cur, roll, m, 1.0, 0.2)
    assert v[0].tolist() == pytest.approx([1.2, 0.9048374, 0.9048374], rel=1e-6)
