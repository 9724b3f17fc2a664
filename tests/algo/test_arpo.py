"""ARPO's entropy-based branching rule (spec Appendix A)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from appo.algo import arpo_branch_decision, arpo_plan_branches, arpo_round_entropy

# hypothesis settings local to this file (no global profile: other test dirs are unaffected)
FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None)


def pooled_reference(topk_rows, vocab_size):
    """ARPO step 2: pool the top-k entries of the first ≤ 20 tokens, H = −Σ p log p / log V."""
    out = []
    for tokens in topk_rows:
        pooled = [lp for tok in tokens[:20] for lp in tok]
        out.append(-sum(math.exp(lp) * lp for lp in pooled) / math.log(vocab_size))
    return out


@FAST
@given(n_rows=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_round_entropy_from_topk_matches_pooled_formula(n_rows, seed):
    g = torch.Generator().manual_seed(seed)
    max_t, k = 30, 4
    lengths = torch.randint(0, max_t + 1, (n_rows,), generator=g).tolist()
    logits = torch.randn(n_rows, max_t, 50, generator=g, dtype=torch.float64)
    top = torch.log_softmax(logits, -1).topk(k, dim=-1).values
    mask = torch.arange(max_t)[None, :] < torch.tensor(lengths)[:, None]
    padded = torch.where(mask[..., None], top, torch.full_like(top, float("-inf")))
    got = arpo_round_entropy(vocab_size=50, topk_logprobs=padded, mask=mask)
    rows = [[top[j, t].tolist() for t in range(lengths[j])] for j in range(n_rows)]
    assert got.tolist() == pytest.approx(pooled_reference(rows, 50), rel=1e-5, abs=1e-7)


def test_round_entropy_with_exact_entropies_uses_first_20_valid_tokens():
    ent = torch.ones(2, 30)
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[1, :15] = False  # row 1 generated only 15 tokens this round
    got = arpo_round_entropy(vocab_size=100, token_entropies=ent, mask=mask)
    assert got.tolist() == pytest.approx([20 / math.log(100), 15 / math.log(100)], rel=1e-6)
    with pytest.raises(ValueError, match="exactly one"):
        arpo_round_entropy(vocab_size=100)


def test_branch_decision_formula_and_determinism():
    now = torch.tensor([1.0, 0.5, 0.5, 3.0])
    h0 = torch.tensor([0.5, 0.5, 0.5, 0.0])
    u = torch.tensor([0.7, 0.5, 0.51, 0.9])
    branch, p = arpo_branch_decision(now, h0, entropy_weight=0.2, branch_probability=0.5, u=u)
    # p = clip(u − 0.2·ΔH, 0, 1): 0.6, 0.5, 0.51, 0.3
    assert p.tolist() == pytest.approx([0.6, 0.5, 0.51, 0.3], abs=1e-6)
    assert branch.tolist() == [False, True, False, True]
    b1, _ = arpo_branch_decision(now, h0, generator=torch.Generator().manual_seed(5))
    b2, _ = arpo_branch_decision(now, h0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(b1, b2)
    # a large entropy rise always branches, a large drop never does
    yes, _ = arpo_branch_decision(
        torch.tensor([10.0]), torch.tensor([0.0]), entropy_weight=0.5, u=torch.tensor([1.0])
    )
    no, _ = arpo_branch_decision(
        torch.tensor([0.0]), torch.tensor([10.0]), entropy_weight=0.5, u=torch.tensor([0.0])
    )
    assert yes.item() and not no.item()


def test_plan_branches_respects_slots_beam_and_activity():
    uids = ["a", "a", "b", "b"]
    # every attempt succeeds (huge entropy rise), so only slots / beam / activity limit the plan
    plan = arpo_plan_branches(
        [100.0] * 4,
        uids,
        [True, True, False, True],
        {"a": 2, "b": 3},
        4,
        beam_size=3,
        generator=torch.Generator(),
    )
    assert plan == [0, 0, 3]  # a: 2 slots, row 0 uses both (beam − 1 = 2); b: 1 slot, row 2 inactive
    plan = arpo_plan_branches(
        [-100.0] * 4, uids, [True] * 4, {"a": 2, "b": 3}, 4, generator=torch.Generator()
    )
    assert plan == []
