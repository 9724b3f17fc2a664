"""Invariants 4, 5, 10, 11, 12: z-scores, Branching Score, eligibility and per-prompt selection."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from appo.algo import (
    BranchPoint,
    branch_candidate_mask,
    branching_scores,
    masked_zscore,
    select_branch_points,
    stop_sequence_completion_mask,
    whitespace_token_table,
)

# hypothesis settings local to this file (no global profile: other test dirs are unaffected)
FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None)

# ------------------------------------------------------------------------------------------------ z-scores


def zscore_reference(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(x.shape, dtype=torch.float64)
    for j in range(x.shape[0]):
        vals = [float(x[j, t]) for t in range(x.shape[1]) if mask[j, t]]
        if not vals:
            continue
        mu = sum(vals) / len(vals)
        sd = math.sqrt(sum((v - mu) ** 2 for v in vals) / len(vals))
        for t in range(x.shape[1]):
            if mask[j, t]:
                out[j, t] = (float(x[j, t]) - mu) / (sd + 1e-6)
    return out


@FAST
@given(rows=st.integers(1, 4), length=st.integers(1, 30), seed=st.integers(0, 10_000))
def test_masked_zscore_matches_reference(rows, length, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, length, generator=g) * 3 + 1
    mask = torch.rand(rows, length, generator=g) > 0.3
    x_garbage = torch.where(mask, x, torch.full_like(x, float("nan")))
    out = masked_zscore(x_garbage, mask)
    assert torch.allclose(out.double(), zscore_reference(x, mask), atol=1e-5)
    assert (out[~mask] == 0).all()


def test_masked_zscore_population_std_and_constant_rows():
    x = torch.tensor([[1.0, 3.0, 100.0], [5.0, 5.0, 5.0]])
    m = torch.tensor([[1, 1, 0], [1, 1, 1]])
    z = masked_zscore(x, m)
    # population std of {1, 3} is 1 → z = ∓1/(1 + 1e-6)
    assert z[0].tolist() == pytest.approx([-1 / (1 + 1e-6), 1 / (1 + 1e-6), 0.0])
    assert z[1].tolist() == [0.0, 0.0, 0.0]


def test_branching_score_modes():
    ent = torch.tensor([[0.1, 0.5, 0.9, 0.3]])
    fv = torch.tensor([[1.0, 0.9, 1.1, 1.2]])
    m = torch.tensor([[1, 1, 1, 0]])
    zh, zf = masked_zscore(ent, m), masked_zscore(fv, m)
    bs, zh2, zf2 = branching_scores(ent, fv, m)
    assert torch.equal(zh, zh2) and torch.equal(zf, zf2)
    assert torch.allclose(bs, zh * zf)
    assert torch.allclose(branching_scores(ent, fv, m, "entropy")[0], zh)
    assert torch.allclose(branching_scores(ent, fv, m, "future")[0], zf)
    assert bs[0, 3] == 0
    with pytest.raises(ValueError, match="mode"):
        branching_scores(ent, fv, m, "bogus")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ eligibility


class FakeTokenizer:
    pieces = ("a", " ", "\n", ".", "<|im_end|>", "</", "search", ">", "  \t", "b")

    def __len__(self) -> int:
        return len(self.pieces)

    def decode(self, ids, skip_special_tokens=False):
        return "".join(self.pieces[i] for i in ids)


def test_whitespace_table_from_tokenizer():
    table = whitespace_token_table(FakeTokenizer(), vocab_size=12)
    assert table.dtype == torch.bool and table.shape == (12,)
    assert table.tolist() == [False, True, True, False, False, False, False, False, True, False, True, True]


def test_candidate_mask_excludes_tool_results_padding_whitespace_eos_and_tag_completions():
    table = whitespace_token_table(FakeTokenizer())
    # "a . </ search > <result...> b <|im_end|> pad pad"
    ids = torch.tensor([[0, 3, 5, 6, 7, 0, 9, 1, 4, 0, 0]])
    loss = torch.tensor([[1, 1, 1, 1, 1, 0, 1, 1, 1, 0, 0]])
    base = branch_candidate_mask(ids, loss)
    assert base[0].tolist() == [True, True, True, True, True, False, True, True, True, False, False]
    full = branch_candidate_mask(
        ids, loss, whitespace_table=table, eos_token_ids=[4], stop_sequences=[[5, 6, 7]]
    )
    # whitespace (t=7), EOS (t=8) and the token completing "</search>" (t=4) are gone; "." stays
    assert full[0].tolist() == [True, True, True, True, False, False, True, False, False, False, False]
    stop = torch.zeros_like(ids, dtype=torch.bool)
    stop[0, 4] = True
    via_mask = branch_candidate_mask(ids, loss, whitespace_table=table, eos_token_ids=[4], stop_mask=stop)
    assert torch.equal(via_mask, full)


def test_candidate_mask_never_allows_the_last_position():
    ids = torch.zeros(2, 5, dtype=torch.long)
    m = branch_candidate_mask(ids, torch.ones(2, 5))
    assert not m[:, -1].any() and m[:, :-1].all()


def test_candidate_mask_rejects_ids_outside_table():
    with pytest.raises(ValueError, match="whitespace table"):
        branch_candidate_mask(
            torch.tensor([[20]]), torch.ones(1, 1), whitespace_table=torch.zeros(10, dtype=torch.bool)
        )


def test_stop_sequence_completion_mask():
    ids = torch.tensor([[5, 6, 7, 5, 6, 1, 6, 7]])
    out = stop_sequence_completion_mask(ids, [[5, 6, 7], [6, 7]])
    assert out[0].tolist() == [False, False, True, False, False, False, False, True]


# ------------------------------------------------------------------------------------------------ selection


def select_reference(score, zh, zf, cand, uids, budget, row_ids):
    """Literal spec §1.5 steps 8–10 with the documented tie-break (−BS, row id, t)."""
    length = score.shape[1]
    out = []
    seen = []
    for u in uids:
        if u not in seen:
            seen.append(u)
    for u in seen:
        rows = [j for j in range(len(uids)) if uids[j] == u]
        allc = []
        for j in rows:
            for t in range(length - 1):
                if cand[j, t] and math.isfinite(float(score[j, t])):
                    strict = bool(zh[j, t] > 0 and zf[j, t] > 0)
                    allc.append((-float(score[j, t]), row_ids[j], t, j, strict))
        allc.sort()
        strict = [c for c in allc if c[4]]
        chosen = [(c, "strict") for c in strict[:budget]]
        for c in allc:
            if len(chosen) >= budget:
                break
            if all((c[3], c[2]) != (d[0][3], d[0][2]) for d in chosen):
                chosen.append((c, "fallback"))
        base = [(c[3], c[2], -c[0], kind) for c, kind in chosen]
        out.extend(base)
        i = 0
        while base and len(base) + i < budget:
            r, t, s, _ = base[i % len(base)]
            out.append((r, t, s, "duplicate"))
            i += 1
    return out


def as_tuples(points):
    return [(p.row, p.split, p.score, p.kind) for p in points]


def hand_example():
    zh = torch.tensor(
        [[1, 2, -1, -1, 1, 0.5], [2, 0, 1, 1, 3, 0], [0, 0, 1, 0, 0, 0]],
        dtype=torch.float32,
    )
    zf = torch.tensor(
        [[1, 1, -2, 1, 1, 2], [1, 0, -1, 1, 1, 0], [0, 0, -1, 0, 0, 0]],
        dtype=torch.float32,
    )
    cand = torch.ones(3, 6, dtype=torch.bool)
    cand[1, 4] = False  # e.g. whitespace token
    cand[2] = torch.tensor([0, 0, 1, 0, 0, 0], dtype=torch.bool)
    return zh * zf, zh, zf, cand, ["a", "a", "b"]


def test_hand_built_example_with_ties():
    bs, zh, zf, cand, uids = hand_example()
    got = as_tuples(select_branch_points(bs, zh, zf, cand, uids, 3, row_ids=[0, 1, 2]))
    assert got == [
        (0, 1, 2.0, "strict"),  # tie BS = 2 with (1, 0): row id 0 first
        (1, 0, 2.0, "strict"),
        (0, 0, 1.0, "strict"),  # tie BS = 1 among (0,0), (0,4), (1,3): row then t
        (2, 2, -1.0, "fallback"),  # prompt b: one candidate, then cyclic duplicates
        (2, 2, -1.0, "duplicate"),
        (2, 2, -1.0, "duplicate"),
    ]
    got = as_tuples(select_branch_points(bs, zh, zf, cand, uids, 10, row_ids=[0, 1, 2]))[:10]
    assert got == [
        (0, 1, 2.0, "strict"),
        (1, 0, 2.0, "strict"),
        (0, 0, 1.0, "strict"),
        (0, 4, 1.0, "strict"),
        (1, 3, 1.0, "strict"),
        (0, 2, 2.0, "fallback"),  # (−,−) pair: positive product ranks first among the rest
        (1, 1, 0.0, "fallback"),
        (0, 3, -1.0, "fallback"),  # tie −1 with (1, 2): row 0 first
        (1, 2, -1.0, "fallback"),
        (0, 1, 2.0, "duplicate"),  # 9 distinct candidates (position 5 has no room) → cycle
    ]
    # reversing the row ids flips every row tie
    got = as_tuples(select_branch_points(bs, zh, zf, cand, uids, 2, row_ids=[1, 0, 2]))
    assert got[:2] == [(1, 0, 2.0, "strict"), (0, 1, 2.0, "strict")]


def test_budget_is_per_prompt_and_rows_may_get_zero_or_all():
    bs, zh, zf, cand, uids = hand_example()
    pts = select_branch_points(bs, zh, zf, cand, uids, 2, row_ids=[0, 1, 2])
    per_uid = {u: sum(p.uid == u for p in pts) for u in ("a", "b")}
    assert per_uid == {"a": 2, "b": 2}
    zh2 = zh.clone()
    zh2[1] = -1.0  # row 1 has no strict candidate any more: row 0 takes the whole budget
    pts = select_branch_points(zh2 * zf, zh2, zf, cand, uids, 3, row_ids=[0, 1, 2])
    assert [p.row for p in pts if p.uid == "a"] == [0, 0, 0]


@FAST
@given(
    rows=st.integers(1, 6),
    length=st.integers(1, 12),
    budget=st.integers(0, 7),
    n_uids=st.integers(1, 3),
    seed=st.integers(0, 10_000),
)
def test_selection_matches_reference(rows, length, budget, n_uids, seed):
    g = torch.Generator().manual_seed(seed)
    # quantised z-scores force many ties
    zh = torch.randint(-2, 3, (rows, length), generator=g).float()
    zf = torch.randint(-2, 3, (rows, length), generator=g).float()
    bs = zh * zf
    cand = torch.rand(rows, length, generator=g) > 0.3
    uids = [int(u) for u in torch.randint(0, n_uids, (rows,), generator=g)]
    row_ids = torch.randperm(rows, generator=g).tolist()
    got = as_tuples(select_branch_points(bs, zh, zf, cand, uids, budget, row_ids=row_ids))
    assert got == select_reference(bs, zh, zf, cand, uids, budget, row_ids)
    for row, split, _s, _k in got:
        assert cand[row, split] and split <= length - 2
    for u in set(uids):
        eligible = any(cand[j, : length - 1].any() for j in range(rows) if uids[j] == u)
        n_sel = sum(1 for p in got if uids[p[0]] == u)
        assert n_sel == (budget if eligible else 0)


@FAST
@given(
    rows=st.integers(2, 7), length=st.integers(2, 10), budget=st.integers(1, 6), seed=st.integers(0, 10_000)
)
def test_selection_is_independent_of_row_order(rows, length, budget, seed):
    """Invariant 11: shuffling rows together with their uids selects the same (uid, row, split) points."""
    g = torch.Generator().manual_seed(seed)
    zh = torch.randn(rows, length, generator=g)  # distinct rows
    zf = torch.randint(-1, 2, (rows, length), generator=g).float()
    bs = torch.sign(zh) * zf  # heavily tied scores
    cand = torch.rand(rows, length, generator=g) > 0.2
    uids = [f"p{int(u)}" for u in torch.randint(0, 2, (rows,), generator=g)]
    perm = torch.randperm(rows, generator=g)
    base = select_branch_points(bs, zh, zf, cand, uids, budget)
    shuffled = select_branch_points(bs[perm], zh[perm], zf[perm], cand[perm], [uids[i] for i in perm], budget)

    def per_uid(points, row_map):
        out: dict = {}
        for p in points:
            out.setdefault(p.uid, []).append((row_map[p.row], p.split, p.kind))
        return out

    assert per_uid(base, list(range(rows))) == per_uid(shuffled, perm.tolist())


def test_selection_skips_non_finite_scores_and_validates_input():
    bs = torch.tensor([[float("nan"), 1.0, 2.0]])
    pts = select_branch_points(bs, bs, bs, torch.ones(1, 3, dtype=torch.bool), ["u"], 2)
    assert [(p.split, p.kind) for p in pts] == [(1, "strict"), (1, "duplicate")]
    assert isinstance(pts[0], BranchPoint) and pts[0].row == 0 and pts[0].score == 1.0
    with pytest.raises(ValueError, match="uids"):
        select_branch_points(bs, bs, bs, torch.ones(1, 3, dtype=torch.bool), ["u", "v"], 2)
    with pytest.raises(ValueError, match="budget"):
        select_branch_points(bs, bs, bs, torch.ones(1, 3, dtype=torch.bool), ["u"], -1)


@FAST
@given(
    rows=st.integers(1, 3),
    length=st.integers(1, 12),
    seed=st.integers(0, 10_000),
    n_stops=st.integers(0, 2),
)
def test_candidate_mask_matches_loop_reference(rows, length, seed, n_stops):
    g = torch.Generator().manual_seed(seed)
    vocab = 6
    ids = torch.randint(0, vocab, (rows, length), generator=g)
    loss = torch.rand(rows, length, generator=g) > 0.2
    table = torch.rand(vocab, generator=g) > 0.7
    stops = [torch.randint(0, vocab, (int(torch.randint(1, 3, (1,), generator=g)),), generator=g).tolist()]
    stops = stops * n_stops
    eos = [5]
    got = branch_candidate_mask(ids, loss, whitespace_table=table, eos_token_ids=eos, stop_sequences=stops)
    for j in range(rows):
        for t in range(length):
            completes = any(t + 1 >= len(s) and ids[j, t + 1 - len(s) : t + 1].tolist() == s for s in stops)
            want = bool(loss[j, t]) and not bool(table[ids[j, t]]) and int(ids[j, t]) not in eos
            want = want and not completes and t <= length - 2
            assert bool(got[j, t]) == want


def test_whitespace_table_with_real_tokenizer():
    from appo.models import tiny_tokenizer

    tok = tiny_tokenizer()
    table = whitespace_token_table(tok)
    ids = tok.encode(" hello \n\n world.", add_special_tokens=False)
    for i in ids:
        assert bool(table[i]) == (tok.decode([i]).strip() == "")
    assert not table[tok.encode("hello", add_special_tokens=False)[0]]
    assert table[tok.encode("\n\n", add_special_tokens=False)[0]]
