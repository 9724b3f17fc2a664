"""Invariants 2 (permutation), 16 (reward scale M), 17 (base advantages), 18–19 (token advantages)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from appo.algo import appo_token_advantages, group_advantages, reward_scale_factors

# hypothesis settings local to this file (no global profile: other test dirs are unaffected)
FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None)

# ------------------------------------------------------------------------------------------------ references


def group_reference(scores, uids, kinds, norm, eps=1e-6):
    out = []
    for j in range(len(uids)):
        key = (uids[j], None if kinds is None else kinds[j])
        members = [
            float(scores[i])
            for i in range(len(uids))
            if (uids[i], None if kinds is None else kinds[i]) == key
        ]
        mu = sum(members) / len(members)
        sd = math.sqrt(sum((v - mu) ** 2 for v in members) / len(members)) if len(members) > 1 else 0.0
        out.append((float(scores[j]) - mu) / (sd + eps) if norm else float(scores[j]) - mu)
    return torch.tensor(out, dtype=torch.float64)


def token_adv_reference(row_adv, mask, kinds, parents, splits, boost=None, d=0.9):
    """Dense O(#branches·L) loop, the formula of §1.9 (with the optional per-branch M of §1.8)."""
    n, length = mask.shape
    out = torch.zeros(n, length, dtype=torch.float64)
    for p in range(n):
        if kinds[p] != "init":
            continue
        for t in range(length):
            if not mask[p, t]:
                continue
            credits = []
            for b in range(n):
                if kinds[b] == "branch" and int(parents[b]) == p and min(int(splits[b]), length - 1) >= t:
                    m = 1.0 if boost is None else 1.0 + float(boost[b]) * d ** (int(splits[b]) - t)
                    credits.append(float(row_adv[b]) * m)
            out[p, t] = float(row_adv[p]) + (sum(credits) / len(credits) if credits else 0.0)
    return out


def random_batch(g, n_prompts, n0, k, length):
    """A batch with n0 init rows and k branch rows per prompt, rows in random order."""
    kinds, uids, parent_local, splits_l = [], [], [], []
    for u in range(n_prompts):
        for _ in range(n0):
            kinds.append("init")
            uids.append(u)
            parent_local.append(None)
            splits_l.append(-1)
        for _ in range(k):
            kinds.append("branch")
            uids.append(u)
            parent_local.append((u, int(torch.randint(0, n0, (1,), generator=g))))
            splits_l.append(int(torch.randint(0, length + 2, (1,), generator=g)))  # may exceed L−1
    init_index = {}
    for j, kd in enumerate(kinds):
        if kd == "init":
            init_index.setdefault(uids[j], []).append(j)
    parents = torch.tensor(
        [-1 if pl is None else init_index[pl[0]][pl[1]] for pl in parent_local], dtype=torch.long
    )
    splits = torch.tensor(splits_l, dtype=torch.long)
    mask = torch.ones(len(kinds), length, dtype=torch.bool)
    for j in range(len(kinds)):
        mask[j, int(torch.randint(1, length + 1, (1,), generator=g)) :] = False
    return kinds, uids, parents, splits, mask


# ------------------------------------------------------------------------------------------------ base advantages


@FAST
@given(n=st.integers(1, 12), n_uids=st.integers(1, 4), norm=st.booleans(), seed=st.integers(0, 10_000))
def test_group_advantages_match_reference(n, n_uids, norm, seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(-1, 3, (n,), generator=g).float() * 0.5
    uids = [int(u) for u in torch.randint(0, n_uids, (n,), generator=g)]
    kinds = ["init" if bool(b) else "branch" for b in torch.rand(n, generator=g) > 0.5]
    got = group_advantages(scores, uids, kinds, norm_by_std=norm)
    assert torch.allclose(got.double(), group_reference(scores, uids, kinds, norm), atol=1e-5)
    got = group_advantages(scores, uids, None, norm_by_std=norm)
    assert torch.allclose(got.double(), group_reference(scores, uids, None, norm), atol=1e-5)


def test_singleton_groups_get_zero_and_groups_do_not_mix():
    scores = torch.tensor([1.0, 0.0, 7.0, 3.0, -1.0])
    uids = ["a", "a", "a", "b", "a"]
    kinds = ["init", "init", "branch", "init", "branch"]
    adv = group_advantages(scores, uids, kinds)
    assert adv[3].item() == 0.0  # singleton (b, init)
    assert adv[0].item() == pytest.approx(0.5 / (0.5 + 1e-6))
    # init advantages do not depend on branch rewards and vice versa
    scores2 = scores.clone()
    scores2[2], scores2[4] = 100.0, -50.0
    adv2 = group_advantages(scores2, uids, kinds)
    assert torch.equal(adv[[0, 1, 3]], adv2[[0, 1, 3]])
    scores3 = scores.clone()
    scores3[0] = 9.0
    assert torch.equal(adv[[2, 4]], group_advantages(scores3, uids, kinds)[[2, 4]])


# ------------------------------------------------------------------------------------------------ §1.9 worked example


def test_worked_example_section_1_9():
    length = 10
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0])  # I1, I2, B1, B2
    uids = ["q"] * 4
    kinds = ["init", "init", "branch", "branch"]
    parents = torch.tensor([-1, -1, 0, 0])
    splits = torch.tensor([-1, -1, 3, 7])
    a_hat = group_advantages(rewards, uids, kinds)
    one = 0.5 / (0.5 + 1e-6)
    assert a_hat.tolist() == pytest.approx([one, -one, one, -one], abs=1e-7)
    mask = torch.ones(4, length)
    adv = appo_token_advantages(a_hat, mask, kinds, parents, splits)
    expected_i1 = [one + (one - one) / 2] * 4 + [one - one] * 4 + [one] * 2
    assert adv[0].tolist() == pytest.approx(expected_i1, abs=1e-6)
    assert adv[0, :4].tolist() == pytest.approx([1.0] * 4, abs=1e-5)
    assert adv[0, 4:8].abs().max().item() < 1e-6
    assert adv[1].tolist() == pytest.approx([-one] * length, abs=1e-6)
    assert (adv[2:] == 0).all()


# ------------------------------------------------------------------------------------------------ token advantages


@FAST
@given(
    n_prompts=st.integers(1, 3),
    n0=st.integers(1, 3),
    k=st.integers(0, 4),
    length=st.integers(1, 9),
    seed=st.integers(0, 10_000),
    with_boost=st.booleans(),
)
def test_token_advantages_match_dense_reference(n_prompts, n0, k, length, seed, with_boost):
    g = torch.Generator().manual_seed(seed)
    kinds, _uids, parents, splits, mask = random_batch(g, n_prompts, n0, k, length)
    row_adv = torch.randn(len(kinds), generator=g)
    boost = torch.rand(len(kinds), generator=g) if with_boost else None
    got = appo_token_advantages(row_adv, mask, kinds, parents, splits, branch_boost=boost, boost_discount=0.8)
    ref = token_adv_reference(row_adv, mask, kinds, parents, splits, boost, 0.8)
    assert torch.allclose(got.double(), ref, atol=1e-5)
    # invariant 19: branch rows are all zero; masked positions are zero
    is_branch = torch.tensor([kd == "branch" for kd in kinds])
    assert (got[is_branch] == 0).all() and (got[~mask] == 0).all()


@FAST
@given(n_prompts=st.integers(1, 3), n0=st.integers(1, 3), k=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_shuffling_rows_gives_identical_per_row_advantages(n_prompts, n0, k, seed):
    """Invariant 2: advantages follow the rows under any permutation (parents remapped)."""
    g = torch.Generator().manual_seed(seed)
    length = 8
    kinds, uids, parents, splits, mask = random_batch(g, n_prompts, n0, k, length)
    rewards = torch.randint(0, 3, (len(kinds),), generator=g).float()
    a_hat = group_advantages(rewards, uids, kinds)
    base = appo_token_advantages(a_hat, mask, kinds, parents, splits)

    perm = torch.randperm(len(kinds), generator=g)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(len(perm))
    p_kinds = [kinds[i] for i in perm]
    p_uids = [uids[i] for i in perm]
    p_parents = torch.where(parents[perm] >= 0, inv[parents[perm].clamp(min=0)], -1)
    p_a_hat = group_advantages(rewards[perm], p_uids, p_kinds)
    shuffled = appo_token_advantages(p_a_hat, mask[perm], p_kinds, p_parents, splits[perm])
    assert torch.allclose(shuffled, base[perm], atol=1e-6)


def test_token_advantages_reject_inconsistent_bookkeeping():
    mask = torch.ones(3, 4)
    adv = torch.zeros(3)
    with pytest.raises(ValueError, match="itself a branch"):
        appo_token_advantages(
            adv, mask, ["init", "branch", "branch"], torch.tensor([-1, 2, 0]), torch.tensor([-1, 1, 1])
        )
    with pytest.raises(ValueError, match="parent = split = -1"):
        appo_token_advantages(
            adv, mask, ["init", "init", "branch"], torch.tensor([-1, 0, 0]), torch.tensor([-1, 1, 1])
        )
    with pytest.raises(ValueError, match="outside"):
        appo_token_advantages(
            adv, mask, ["init", "init", "branch"], torch.tensor([-1, -1, 5]), torch.tensor([-1, -1, 1])
        )


# ------------------------------------------------------------------------------------------------ reward scale M


def test_worked_example_section_1_8_reference_mode():
    length = 6
    parents = torch.tensor([-1, 0])
    splits = torch.tensor([-1, 2])
    scores = torch.tensor([0.0, 1.7])  # BS = BS_max
    rs = reward_scale_factors(scores, parents, splits, length, discount=0.9, mode="reference")
    assert rs.token_factors[0].tolist() == pytest.approx([1.81, 1.9, 2.0, 1.0, 1.0, 1.0], abs=1e-6)
    assert rs.token_factors[1].tolist() == [1.0] * length  # branch rows are not scaled
    assert (rs.branch_boost == 0).all()


def m_reference(bs, s, bs_max, d, length):
    if bs <= 0 or bs_max <= 0:
        return [1.0] * length
    return [1 + (bs / bs_max) * d ** (s - t) if t <= min(s, length - 1) else 1.0 for t in range(length)]


def test_reference_mode_parent_mean_and_nonpositive_scores():
    length = 5
    parents = torch.tensor([-1, -1, 0, 0, 0, 1])
    splits = torch.tensor([-1, -1, 1, 3, 9, 2])
    scores = torch.tensor([0.0, 0.0, 2.0, 1.0, -3.0, 4.0])
    rs = reward_scale_factors(scores, parents, splits, length, discount=0.5, mode="reference")
    ms = [m_reference(2.0, 1, 4.0, 0.5, length), m_reference(1.0, 3, 4.0, 0.5, length), [1.0] * length]
    parent0 = [sum(m[t] for m in ms) / 3 for t in range(length)]
    assert rs.token_factors[0].tolist() == pytest.approx(parent0, abs=1e-6)
    assert rs.token_factors[1].tolist() == pytest.approx(m_reference(4.0, 2, 4.0, 0.5, length), abs=1e-6)
    # BS_max ≤ 0 ⇒ nothing happens
    rs = reward_scale_factors(-scores.abs(), parents, splits, length, mode="reference")
    assert (rs.token_factors == 1).all()
    rs = reward_scale_factors(scores, parents, splits, length, mode="off")
    assert (rs.token_factors == 1).all() and (rs.branch_boost == 0).all()


def test_reference_mode_is_a_noop_for_end_of_sequence_rewards():
    """Invariant 16: with one sparse reward at the last valid index, R_j changes only if s = that index."""
    length = 8
    last = 5  # last attention-valid index of the parent
    rewards = torch.zeros(2, length)
    rewards[0, last] = 1.0
    for split, changes in [(0, False), (3, False), (4, False), (last, True)]:
        rs = reward_scale_factors(
            torch.tensor([0.0, 1.0]),
            torch.tensor([-1, 0]),
            torch.tensor([-1, split]),
            length,
            mode="reference",
        )
        r_sum = (rewards * rs.token_factors).sum(dim=-1)
        assert (r_sum[0].item() != 1.0) == changes


def test_advantage_mode_boosts_credit_near_the_split():
    length = 6
    kinds = ["init", "branch"]
    parents = torch.tensor([-1, 0])
    splits = torch.tensor([-1, 2])
    rs = reward_scale_factors(torch.tensor([0.0, 3.0]), parents, splits, length, discount=0.9)
    assert rs.branch_boost.tolist() == [0.0, 1.0] and (rs.token_factors == 1).all()
    adv = appo_token_advantages(
        torch.tensor([0.0, 1.0]),
        torch.ones(2, length),
        kinds,
        parents,
        splits,
        branch_boost=rs.branch_boost,
        boost_discount=rs.discount,
    )
    # A = â_p + â_b·M_t with M = (1.81, 1.9, 2.0, 1, 1, 1) on t ≤ s, â_p beyond
    assert adv[0].tolist() == pytest.approx([1.81, 1.9, 2.0, 0.0, 0.0, 0.0], abs=1e-6)
    assert (adv[1] == 0).all()


@FAST
@given(n_prompts=st.integers(1, 2), n0=st.integers(1, 3), k=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_reference_mode_matches_loop_reference(n_prompts, n0, k, seed):
    g = torch.Generator().manual_seed(seed)
    length = 7
    kinds, _uids, parents, splits, _mask = random_batch(g, n_prompts, n0, k, length)
    scores = torch.randn(len(kinds), generator=g)
    rs = reward_scale_factors(scores, parents, splits, length, discount=0.8, mode="reference")
    branch_rows = [b for b in range(len(kinds)) if kinds[b] == "branch"]
    bs_max = max(float(scores[b]) for b in branch_rows)
    for p in range(len(kinds)):
        mine = [b for b in branch_rows if int(parents[b]) == p]
        if kinds[p] == "branch" or not mine or bs_max <= 0:
            assert rs.token_factors[p].tolist() == [1.0] * length
            continue
        ms = [m_reference(float(scores[b]), int(splits[b]), bs_max, 0.8, length) for b in mine]
        want = [sum(m[t] for m in ms) / len(ms) for t in range(length)]
        assert rs.token_factors[p].tolist() == pytest.approx(want, abs=1e-5)
