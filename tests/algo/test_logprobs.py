"""Chunked log-prob/entropy equals the naive full-logit computation, values and gradients."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from appo.algo import logprobs_and_entropy

# hypothesis settings local to this file (no global profile: other test dirs are unaffected)
FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None)


def naive(hidden, weight, targets, temperature=1.0, bias=None):
    logits = hidden @ weight.t()
    if bias is not None:
        logits = logits + bias
    logits = logits / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, targets[..., None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


@FAST
@given(
    b=st.integers(1, 3),
    length=st.integers(1, 9),
    vocab=st.integers(2, 40),
    chunk=st.integers(1, 11),
    temperature=st.sampled_from([1.0, 0.7, 1.3]),
    with_bias=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_matches_naive_including_gradients(b, length, vocab, chunk, temperature, with_bias, seed):
    g = torch.Generator().manual_seed(seed)
    hdim = 6
    hidden = (torch.randn(b, length, hdim, generator=g, dtype=torch.float64) * 2).requires_grad_(True)
    weight = torch.randn(vocab, hdim, generator=g, dtype=torch.float64).requires_grad_(True)
    bias = torch.randn(vocab, generator=g, dtype=torch.float64).requires_grad_(True) if with_bias else None
    targets = torch.randint(0, vocab, (b, length), generator=g)
    g_lp = torch.randn(b, length, generator=g, dtype=torch.float64)
    g_ent = torch.randn(b, length, generator=g, dtype=torch.float64)

    lp, ent = logprobs_and_entropy(hidden, weight, targets, temperature, chunk_size=chunk, lm_head_bias=bias)
    grads = torch.autograd.grad(
        (lp * g_lp).sum() + (ent * g_ent).sum(), [hidden, weight, *([bias] if bias is not None else [])]
    )
    lp_ref, ent_ref = naive(hidden, weight, targets, temperature, bias)
    grads_ref = torch.autograd.grad(
        (lp_ref * g_lp).sum() + (ent_ref * g_ent).sum(),
        [hidden, weight, *([bias] if bias is not None else [])],
    )
    assert lp.dtype == torch.float64 and lp.shape == targets.shape
    assert torch.allclose(lp, lp_ref, atol=1e-10)
    assert torch.allclose(ent, ent_ref, atol=1e-10)
    for got, ref in zip(grads, grads_ref, strict=True):
        assert torch.allclose(got, ref, atol=1e-9)


def test_float32_and_logprob_only_gradient():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 33, 16, generator=g).requires_grad_(True)
    weight = (torch.randn(500, 16, generator=g) * 0.3).requires_grad_(True)
    targets = torch.randint(0, 500, (2, 33), generator=g)
    lp, ent = logprobs_and_entropy(hidden, weight, targets, chunk_size=8)
    lp.sum().backward()
    lp_ref, ent_ref = naive(hidden, weight, targets)
    h_grad, w_grad = torch.autograd.grad(lp_ref.sum(), [hidden, weight])
    assert lp.dtype == torch.float32
    assert torch.allclose(lp, lp_ref, atol=1e-4) and torch.allclose(ent, ent_ref, atol=1e-4)
    assert torch.allclose(hidden.grad, h_grad, atol=1e-4) and torch.allclose(weight.grad, w_grad, atol=1e-4)
    assert (ent >= 0).all() and (lp <= 0).all()


def test_bfloat16_inputs_give_float32_outputs():
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(1, 10, 8, generator=g).bfloat16()
    weight = torch.randn(64, 8, generator=g).bfloat16()
    targets = torch.randint(0, 64, (1, 10), generator=g)
    lp, ent = logprobs_and_entropy(hidden, weight, targets, chunk_size=4)
    lp_ref, ent_ref = naive(hidden.float(), weight.float(), targets)
    assert lp.dtype == torch.float32
    assert torch.allclose(lp, lp_ref, atol=0.1) and torch.allclose(ent, ent_ref, atol=0.1)


def test_bad_inputs():
    h = torch.zeros(2, 3, 4)
    w = torch.zeros(10, 4)
    with pytest.raises(ValueError, match="target ids"):
        logprobs_and_entropy(h, w, torch.full((2, 3), 10))
    with pytest.raises(ValueError, match="lm_head_weight"):
        logprobs_and_entropy(h, torch.zeros(10, 5), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature"):
        logprobs_and_entropy(h, w, torch.zeros(2, 3, dtype=torch.long), temperature=0.0)


def test_entropy_only_gradient_and_unused_outputs():
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(3, 5, 4, generator=g, dtype=torch.float64).requires_grad_(True)
    weight = torch.randn(30, 4, generator=g, dtype=torch.float64).requires_grad_(True)
    targets = torch.randint(0, 30, (3, 5), generator=g)
    _, ent = logprobs_and_entropy(hidden, weight, targets, temperature=0.8, chunk_size=4)
    gh, gw = torch.autograd.grad(ent.sum(), [hidden, weight])
    _, ent_ref = naive(hidden, weight, targets, 0.8)
    gh_ref, gw_ref = torch.autograd.grad(ent_ref.sum(), [hidden, weight])
    assert torch.allclose(gh, gh_ref, atol=1e-10) and torch.allclose(gw, gw_ref, atol=1e-10)
