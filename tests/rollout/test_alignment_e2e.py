"""End to end through the real engine, loop and sandbox: rollouts and branches of a model that writes
well-formed, empty and stray python calls, checked against a teacher-forced forward and a fresh replay of
each trajectory's python calls."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import pytest
import torch

from appo.models import tiny_grammar_model
from appo.rollout.engine import HFEngine, SamplingParams, logprob_entropy_reference
from appo.rollout.loop import LoopConfig, RolloutRequest, branch_requests, run_rollouts
from appo.tools import Session, build_tools

# Next-token table of the model (each key and successor is one token of the SmolLM2 tokenizer). It writes
# `<python>x=1;print( x)</python>`-like calls, empty calls (`<python></python>`), stray closing tags
# (`x+=1</python>` outside a call), a closing tag glued to more text (`</python></`), multi-line code and
# code whose result depends on the session's state (`x+=1` raises until `x=1` ran).
GRAMMAR = {
    "<": {"python": 1.0},
    "</": {"python": 1.0},
    "python": {">": 0.85, "></": 0.15},
    "></": {"python": 1.0},
    ">": {"x": 0.3, "print": 0.25, "<": 0.3, "<eos>": 0.05, "\n": 0.1},
    "x": {"=": 0.6, "+=": 0.3, "</": 0.1},
    "=": {"1": 1.0},
    "+=": {"1": 1.0},
    "1": {";": 0.3, "</": 0.6, "\n": 0.1},
    ";": {"x": 0.5, "print": 0.5},
    "print": {"(": 1.0},
    "(": {" x": 1.0},
    " x": {")": 1.0},
    ")": {";": 0.3, "</": 0.6, "\n": 0.1},
    "\n": {"<": 0.6, "x": 0.2, "print": 0.2},
}
CALL_LIMIT = 2


@pytest.fixture(scope="module")
def grammar_model():
    return tiny_grammar_model(GRAMMAR, default="<")


@pytest.fixture(scope="module")
def runtime():
    registry = build_tools(
        {
            "call_limit": CALL_LIMIT,
            "timeout": 30,
            "retry_count": 1,
            "tool_instances": {"python": {"class_path": "python", "params": {}}},
        }
    )
    rt = registry.runtime()
    yield registry, rt
    rt.close()
    registry.close()


def _points(init):
    """Split points that stress the branch start: closing tags (the branch handles that call), the first
    token after each result, the first divergent token of two siblings, and a spread of others."""
    points = set()
    for row, t in enumerate(init):
        sampled = [s for s in range(len(t.response_ids) - 1) if t.loss_mask[s] == 1]
        for c in t.tool_calls:
            points.add((row, c.call_end))
            if c.result_span[1] in sampled:
                points.add((row, c.result_span[1]))
        points.update((row, s) for s in sampled[:: max(1, len(sampled) // 3)])
    for (i, a), (j, b) in itertools.combinations(enumerate(init), 2):
        if a.uid != b.uid:
            continue
        d = next(
            (k for k, (x, y) in enumerate(zip(a.response_ids, b.response_ids, strict=False)) if x != y), None
        )
        if d is not None and a.loss_mask[d] == b.loss_mask[d] == 1:
            points.update({(i, d), (j, d)})
    return sorted(points)


def _replay(tool, codes):
    """The results of running ``codes`` in order in a fresh session."""
    with Session() as session:
        return [tool.run(code, session).text for code in codes]


@pytest.mark.parametrize("over_limit", ["eos", "message"])
def test_rollouts_and_branches_match_teacher_forcing_and_replayed_state(grammar_model, runtime, over_limit):
    model, tok = grammar_model
    registry, rt = runtime
    engine = HFEngine(model, tok)
    cfg = LoopConfig(
        max_response_length=160,
        call_limit=CALL_LIMIT,
        params=SamplingParams(stop=("</python>",)),
        tool_tags=("python",),
        over_limit=over_limit,
    )
    prompts = [
        tok.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        for q in ("first task", "second task")
    ]
    requests = [RolloutRequest(prompt_ids=p, uid=f"u{i}") for i, p in enumerate(prompts) for _ in range(4)]
    init = run_rollouts(engine, requests, rt, cfg, torch.Generator().manual_seed(11)).trajectories
    points = _points(init)
    branch_points = [SimpleNamespace(row=r, split=s, score=0.0, kind="test") for r, s in points]
    branches = run_rollouts(
        engine, branch_requests(init, branch_points), rt, cfg, torch.Generator().manual_seed(12)
    ).trajectories

    coverage = {"malformed_then_ran": 0, "closing_tag_splits": 0, "sibling_splits": 0, "over_limit": 0}
    for traj in (*init, *branches):
        traj.check()
        # Every model-sampled token: the recorded log-prob and entropy equal a teacher-forced forward.
        lp, ent = logprob_entropy_reference(model, traj.prompt_ids + traj.response_ids)
        p = len(traj.prompt_ids)
        for t, m in enumerate(traj.loss_mask):
            if m == 1:
                assert abs(traj.logprobs[t] - lp[p + t]) <= 1e-3, (traj.kind, t)
                assert abs(traj.entropies[t] - ent[p + t]) <= 1e-3, (traj.kind, t)
            else:
                assert math.isnan(traj.logprobs[t])
        for c in traj.tool_calls:
            assert not any(traj.loss_mask[slice(*c.result_span)])
        # Call counter: exactly the calls that counted; never more calls run than the limit.
        assert traj.call_count == sum(c.counted for c in traj.tool_calls)
        assert sum(c.ran for c in traj.tool_calls) <= CALL_LIMIT
        coverage["over_limit"] += traj.finish_reason == "call_limit" or any(
            "limit is exceeded" in c.result for c in traj.tool_calls
        )
        # Python state: each call's result equals a fresh replay of the trajectory's calls that ran (for a
        # branch, the parent's calls before the split, then its own).
        ran = [c for c in traj.tool_calls if c.ran]
        assert [c.result for c in ran] == _replay(registry["python"], [c.argument for c in ran])
        first_ran = next((k for k, c in enumerate(traj.tool_calls) if c.ran), None)
        coverage["malformed_then_ran"] += first_ran is not None and first_ran > 0

    for b in branches:
        parent = init[b.parent]
        s = b.split
        assert b.prompt_ids == parent.prompt_ids
        for name in ("response_ids", "loss_mask"):
            assert getattr(b, name)[: s + 1] == getattr(parent, name)[: s + 1]
        inherited = [c for c in parent.tool_calls if c.result_span[1] <= s + 1]
        assert b.tool_calls[: len(inherited)] == inherited
        on_tag = any(c.call_end == s for c in parent.tool_calls)
        coverage["closing_tag_splits"] += on_tag
        if on_tag:  # the branch handled the call the parent made there, under the same rules
            own = b.tool_calls[len(inherited)] if len(b.tool_calls) > len(inherited) else None
            theirs = next(c for c in parent.tool_calls if c.call_end == s)
            assert own is not None and (own.argument, own.result) == (theirs.argument, theirs.result)
        siblings = [o for o in branches if o is not b and o.split == s and init[o.parent].uid == parent.uid]
        coverage["sibling_splits"] += any(o.response_ids[:s] == b.response_ids[:s] for o in siblings)

    for name, count in coverage.items():
        assert count > 0, f"the sampled rollouts never exercised {name}; change the seed"
    for traj in (*init, *branches):
        traj.close()
