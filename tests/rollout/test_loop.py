from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from appo.rollout.engine import SamplingParams, logprob_entropy_reference
from appo.rollout.loop import LoopConfig, RolloutRequest, branch_requests, run_rollouts
from appo.rollout.scripted import ScriptedEngine

STOPS = ("</search>", "</python>")


def _cfg(**kw) -> LoopConfig:
    values = dict(max_response_length=256, call_limit=5, params=SamplingParams(stop=STOPS))
    values.update(kw)
    return LoopConfig(**values)


def _prompt(tok, question="What is 6*7+1?"):
    return tok.apply_chat_template(
        [{"role": "system", "content": "Use tools."}, {"role": "user", "content": question}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
    )["input_ids"]


def test_two_tool_calls_aligned_masked_and_stateful(scripted, python_runtime):
    tok = scripted.tokenizer
    requests = [RolloutRequest(prompt_ids=_prompt(tok), uid="q0") for _ in range(2)]
    result = run_rollouts(scripted, requests, python_runtime, _cfg())
    for traj in result.trajectories:
        traj.check()
        assert traj.finish_reason == "eos"
        assert [c.result for c in traj.tool_calls] == ["42", "43"]  # the second call sees x from the first
        assert traj.call_count == 2
        n = len(traj.response_ids)
        assert len(traj.loss_mask) == len(traj.logprobs) == len(traj.entropies) == n
        lp, ent = logprob_entropy_reference(scripted.model, traj.prompt_ids + traj.response_ids)
        p = len(traj.prompt_ids)
        sampled = [t for t in range(n) if traj.loss_mask[t] == 1]
        assert len(sampled) > 20
        for t in sampled:
            assert abs(traj.logprobs[t] - lp[p + t]) < 1e-4, t
            assert abs(traj.entropies[t] - ent[p + t]) < 1e-4, t
        for call in traj.tool_calls:
            start, end = call.result_span
            assert end > start
            assert all(m == 0 for m in traj.loss_mask[start:end])
            assert all(math.isnan(x) for x in traj.logprobs[start:end])
            assert tok.decode(traj.response_ids[call.call_end - 3 : call.call_end + 1]).endswith("</python>")
        assert "<result>\n42\n</result>" in traj.text and "\\boxed{43}" in traj.text
        traj.close()
    assert result.metrics["rollout/calls/python"] == 2.0


def test_branch_shares_prefix_and_python_state(scripted, python_runtime):
    tok = scripted.tokenizer
    init = run_rollouts(scripted, [RolloutRequest(prompt_ids=_prompt(tok), uid="q0")], python_runtime, _cfg())
    parent = init.trajectories[0]
    first_result_end = parent.tool_calls[0].result_span[1]
    split = first_result_end + 2  # a model token after the first result
    assert parent.loss_mask[split] == 1
    points = [SimpleNamespace(row=0, split=split, score=1.5, kind="strict")] * 3
    branches = run_rollouts(scripted, branch_requests(init.trajectories, points), python_runtime, _cfg())
    for b in branches.trajectories:
        assert b.kind == "branch" and b.parent == 0 and b.split == split and b.branch_kind == "strict"
        assert b.prompt_ids == parent.prompt_ids
        assert b.response_ids[: split + 1] == parent.response_ids[: split + 1]
        assert b.loss_mask[: split + 1] == parent.loss_mask[: split + 1]
        # One call inherited from the prefix, one made by the branch, which sees the forked state x = 42.
        assert b.call_count == 2
        assert [c.result for c in b.tool_calls] == ["42", "43"]
        b.check()
        b.close()
    parent.close()


def test_reference_call_counter_counts_prompt_tags(scripted, python_runtime):
    tok = scripted.tokenizer
    prompt = _prompt(tok, "Example: <python>1</python> and <search>x</search>. Now 6*7+1?")
    init = run_rollouts(
        scripted, [RolloutRequest(prompt_ids=prompt, uid="q")], python_runtime, _cfg(call_limit=3)
    )
    parent = init.trajectories[0]
    split = parent.tool_calls[0].result_span[1] + 2
    point = [SimpleNamespace(row=0, split=split, score=1.0, kind="strict")]
    ours = run_rollouts(
        scripted, branch_requests(init.trajectories, point), python_runtime, _cfg(call_limit=3)
    )
    ref = run_rollouts(
        scripted,
        branch_requests(init.trajectories, point),
        python_runtime,
        _cfg(call_limit=3, branch_call_counter="reference"),
    )
    assert [c.result for c in ours.trajectories[0].tool_calls] == ["42", "43"]
    # The reference counts 2 prompt tags + 1 prefix call = 3 = call_limit: the branch's call gets an EOS.
    assert ref.trajectories[0].finish_reason == "call_limit"
    assert len(ref.trajectories[0].tool_calls) == 1
    assert ref.trajectories[0].loss_mask[-1] == 0  # the appended EOS was never sampled
    for t in (*init.trajectories, *ours.trajectories, *ref.trajectories):
        t.close()


def test_call_limit_behaviours(scripted, python_runtime):
    tok = scripted.tokenizer
    eos_mode = run_rollouts(
        scripted, [RolloutRequest(prompt_ids=_prompt(tok))], python_runtime, _cfg(call_limit=1)
    )
    t = eos_mode.trajectories[0]
    assert t.finish_reason == "call_limit" and len(t.tool_calls) == 1
    assert t.response_ids[-1] == tok.eos_token_id and t.loss_mask[-1] == 0
    msg_mode = run_rollouts(
        scripted,
        [RolloutRequest(prompt_ids=_prompt(tok))],
        python_runtime,
        _cfg(call_limit=1, over_limit="message"),
    )
    m = msg_mode.trajectories[0]
    assert [c.ok for c in m.tool_calls] == [True, False]
    assert "maximum python call limit" in m.tool_calls[1].result
    assert m.finish_reason == "eos"
    t.close()
    m.close()


def test_length_budget_truncates_and_stops(scripted, python_runtime):
    tok = scripted.tokenizer
    res = run_rollouts(
        scripted, [RolloutRequest(prompt_ids=_prompt(tok))], python_runtime, _cfg(max_response_length=30)
    )
    t = res.trajectories[0]
    assert len(t.response_ids) == 30 and t.finish_reason == "length"
    t.check()
    t.close()


def test_same_seed_same_trajectories_with_sampling(tiny, python_runtime):
    from appo.rollout.engine import HFEngine

    model, tok = tiny
    engine = HFEngine(model, tok)
    reqs = [RolloutRequest(prompt_ids=_prompt(tok), uid=str(i)) for i in range(3)]

    def run(seed):
        out = run_rollouts(engine, reqs, None, _cfg(max_response_length=24, seed=seed)).trajectories
        return [t.response_ids for t in out]

    assert run(5) == run(5)
    assert run(5) != run(6)


@pytest.mark.parametrize("policy", ["message", "stop"])
def test_empty_call(tiny, python_runtime, policy, scripted_engine_class):
    model, tok = tiny
    engine = scripted_engine_class(
        model,
        tok,
        lambda text: "<python>  </python>" if "<result>" not in text else "<answer>\\boxed{1}</answer>",
    )
    res = run_rollouts(
        engine, [RolloutRequest(prompt_ids=_prompt(tok))], python_runtime, _cfg(empty_call=policy)
    )
    t = res.trajectories[0]
    if policy == "stop":
        assert t.finish_reason == "empty_call" and not t.tool_calls
    else:
        assert t.tool_calls[0].ok is False and "empty" in t.tool_calls[0].result
        assert t.call_count == 0 and t.finish_reason == "eos"
    t.close()


def test_arpo_copies_after_tool_results_and_fills_groups(scripted, python_runtime):
    tok = scripted.tokenizer
    requests = [RolloutRequest(prompt_ids=_prompt(tok), uid=f"u{i}") for i in range(2) for _ in range(2)]
    # branch_probability 1.0: every attempt branches, so each group fills to n after the first tool round.
    arpo = {"n": 4, "beam_size": 2, "branch_probability": 1.0, "entropy_weight": 0.2}
    result = run_rollouts(scripted, requests, python_runtime, _cfg(), arpo=arpo)
    trajs = result.trajectories
    assert [t.uid for t in trajs].count("u0") == 4 and [t.uid for t in trajs].count("u1") == 4
    copies = [t for t in trajs if t.branch_kind == "arpo"]
    assert copies, "no ARPO copy was made"
    for t in trajs:
        t.check()
        # Every copy continued with the Python state of its source: the second call still sees x = 42.
        assert [c.result for c in t.tool_calls] == ["42", "43"]
        assert t.kind == "init"
        t.close()
    for c in copies:
        # The copy point is right after a tool result.
        assert any(call.result_span[1] - 1 == c.split for call in c.tool_calls)


def test_arpo_never_branches_with_probability_zero(scripted, python_runtime):
    tok = scripted.tokenizer
    requests = [RolloutRequest(prompt_ids=_prompt(tok), uid="u") for _ in range(2)]
    arpo = {"n": 3, "beam_size": 2, "branch_probability": 0.0, "entropy_weight": 0.0}
    result = run_rollouts(scripted, requests, python_runtime, _cfg(), arpo=arpo)
    # No copies (u ~ U(0,1) > 0 almost surely); the third row is a fresh rollout or a duplicate.
    assert len(result.trajectories) == 3
    assert not [t for t in result.trajectories[:2] if t.branch_kind == "arpo"]
    for t in result.trajectories:
        t.close()


def _malformed_then_state(text: str) -> str:
    """An empty call the loop answers itself, then two python calls where the second reads the first's x."""
    done = text.count("</result>")
    return [
        "<python></python>",
        "Set it.<python>x = 1\nprint(x)</python>",
        "Bump it.<python>x += 1\nprint(x)</python>",
        "<answer>\\boxed{2}</answer>",
    ][min(done, 3)]


@pytest.mark.parametrize("where", ["after_first_result", "on_closing_tag"])
def test_branch_state_counts_only_calls_that_ran(tiny, python_runtime, scripted_engine_class, where):
    """A call the loop answered itself (malformed) is not a call the session ran: a branch after the first
    real call must see x = 1 (not the parent's later x = 2), count one call, and never fail to fork."""
    model, tok = tiny
    engine = scripted_engine_class(model, tok, _malformed_then_state)
    init = run_rollouts(engine, [RolloutRequest(prompt_ids=_prompt(tok), uid="q0")], python_runtime, _cfg())
    parent = init.trajectories[0]
    assert [(c.ran, c.result) for c in parent.tool_calls] == [
        (False, "Error: empty or malformed <python> call; nothing was run."),
        (True, "1"),
        (True, "2"),
    ]
    assert parent.call_count == 2
    if where == "after_first_result":
        split = parent.tool_calls[1].result_span[1]  # the first model token after x = 1's result
    else:
        split = parent.tool_calls[2].call_end  # the token that closes the x += 1 call: the branch runs it
    inherited = 2
    assert parent.loss_mask[split] == 1
    points = [SimpleNamespace(row=0, split=split, score=1.0, kind="strict")] * 2
    branches = run_rollouts(engine, branch_requests(init.trajectories, points), python_runtime, _cfg())
    for b in branches.trajectories:
        assert b.finish_reason == "eos", b.error
        assert [c.result for c in b.tool_calls[:inherited]] == [
            c.result for c in parent.tool_calls[:inherited]
        ]
        assert [c.result for c in b.tool_calls if c.ran] == ["1", "2"]  # x += 1 saw x = 1, not x = 2
        assert b.call_count == 2
        b.check()
        b.close()
    parent.close()


def test_branch_on_closing_tag_obeys_the_call_limit(tiny, python_runtime, scripted_engine_class):
    """A branch that splits right on a closing tag handles that call under the same rules as any round:
    over the call limit it is not run."""
    model, tok = tiny
    engine = scripted_engine_class(model, tok, _malformed_then_state)
    cfg = _cfg(call_limit=1, over_limit="message")
    init = run_rollouts(engine, [RolloutRequest(prompt_ids=_prompt(tok), uid="q0")], python_runtime, cfg)
    parent = init.trajectories[0]
    assert [c.ran for c in parent.tool_calls] == [False, True, False]  # the third call was over the limit
    split = parent.tool_calls[2].call_end
    points = [SimpleNamespace(row=0, split=split, score=1.0, kind="strict")]
    (b,) = run_rollouts(engine, branch_requests(init.trajectories, points), python_runtime, cfg).trajectories
    assert [c.ran for c in b.tool_calls] == [False, True, False]
    assert "maximum python call limit" in b.tool_calls[2].result
    assert b.call_count == 1
    b.close()
    parent.close()


def test_a_failed_fork_fails_the_branch_not_the_batch(scripted, python_runtime, monkeypatch):
    tok = scripted.tokenizer
    init = run_rollouts(scripted, [RolloutRequest(prompt_ids=_prompt(tok), uid="q0")], python_runtime, _cfg())
    parent = init.trajectories[0]
    split = parent.tool_calls[0].result_span[1]

    def broken_fork(*args, **kwargs):
        raise ValueError("state lost")

    points = [SimpleNamespace(row=0, split=split, score=1.0, kind="strict")]
    good = branch_requests(init.trajectories, points)
    bad = branch_requests(init.trajectories, points)
    bad[0].parent = parent.prefix(len(parent.response_ids) - 1)
    bad[0].parent.session = SimpleNamespace(fork=broken_fork)
    out = run_rollouts(scripted, [*good, *bad], python_runtime, _cfg()).trajectories
    assert out[0].finish_reason == "eos" and [c.result for c in out[0].tool_calls] == ["42", "43"]
    assert out[1].finish_reason == "fork_failed" and "state lost" in out[1].error
    assert out[1].response_ids == parent.response_ids[: split + 1]
    for t in (*out, parent):
        t.close()


_TWO_CALLS = [
    "<think>I multiply first.</think>\n<python>x = 6 * 7\nprint(x)</python>",
    "<think>Now add one.</think>\n<python>print(x + 1)</python>",
    "<think>Done.</think>\n<answer>The answer is \\boxed{43}</answer>",
]


def _resuming_script(text: str) -> str:
    """The two-call script, continuing a round that a branch prefix has already begun."""
    done = text.count("</result>")
    segment = text.rsplit("</result>", 1)[-1] if done else text.split("assistant\n")[-1]
    full = _TWO_CALLS[min(done, 2)]
    return next((full[k:] for k in range(len(full), 0, -1) if segment.endswith(full[:k])), full)


@pytest.mark.parametrize("cut", ["<python", "<python>print(", "print(x + 1)</", "print(x + 1)</python"])
def test_branch_split_inside_a_call_or_its_closing_tag_runs_that_call(tiny, python_runtime, cut):
    """The round a branch continues began in its prefix: the call is parsed, and the closing tag matched,
    over the whole segment since the last tool result, not only the tokens the branch sampled."""
    model, tok = tiny
    engine = ScriptedEngine(model, tok, _resuming_script)
    init = run_rollouts(engine, [RolloutRequest(prompt_ids=_prompt(tok), uid="q0")], python_runtime, _cfg())
    parent = init.trajectories[0]
    assert [c.result for c in parent.tool_calls] == ["42", "43"]
    start = parent.tool_calls[0].result_span[1]
    split = next(
        s
        for s in range(start, len(parent.response_ids))
        if tok.decode(parent.response_ids[start : s + 1]).endswith(cut)
    )
    points = [SimpleNamespace(row=0, split=split, score=1.0, kind="strict")]
    (b,) = run_rollouts(
        engine, branch_requests(init.trajectories, points), python_runtime, _cfg()
    ).trajectories
    assert [(c.ran, c.result) for c in b.tool_calls] == [(True, "42"), (True, "43")]
    assert b.call_count == 2 and b.finish_reason == "eos"
    assert b.text.count("</python>") == 2 and "</python>python" not in b.text
    b.close()
    parent.close()
