"""The OpenAI-compatible completions sampler against a stub server on 127.0.0.1 (no external network)."""

from __future__ import annotations

import pytest

from appo.eval import OpenAICompletionsEngine, OpenAIEngineError
from appo.rollout.engine import SamplingParams
from appo.rollout.loop import LoopConfig, RolloutRequest, run_rollouts
from appo.tools import EVAL_RESULT_TEMPLATE

STOPS = ("</python>", "</search>", "</answer>")


def _prompt_ids(tok, question="What is 6*7?"):
    text = tok.apply_chat_template(
        [{"role": "system", "content": "Use tools."}, {"role": "user", "content": question}],
        tokenize=False,
        add_generation_prompt=True,
    )
    return tok.encode(text, add_special_tokens=False)


def _vllm_like(path: str, body: dict) -> tuple[int, dict]:
    """Server-side stop strings; vLLM reports the matched string in ``stop_reason``; honours
    include_stop_str_in_output=False by stripping it (we expect the client to ask for it)."""
    prompt = body["prompt"]
    if "<result>42</result>" not in prompt:
        text, stop = "<think>multiply</think><python>print(6 * 7)", "</python>"
    else:
        text, stop = "<think>done</think><answer>\\boxed{42}", "</answer>"
    if body.get("include_stop_str_in_output"):
        text += stop
    return 200, {"choices": [{"index": 0, "text": text, "finish_reason": "stop", "stop_reason": stop}]}


def test_tool_loop_through_stub_server(tiny, stub_server, tool_runtime):
    _, tok = tiny
    server = stub_server(_vllm_like)
    engine = OpenAICompletionsEngine(server.base_url, "policy", tok)
    cfg = LoopConfig(
        max_response_length=200,
        call_limit=5,
        params=SamplingParams(temperature=0.6, top_p=0.95, stop=STOPS),
        result_template=EVAL_RESULT_TEMPLATE,
        stop_at_answer=True,
        over_limit="message",
    )
    res = run_rollouts(engine, [RolloutRequest(prompt_ids=_prompt_ids(tok), uid="q")] * 2, tool_runtime, cfg)
    for traj in res.trajectories:
        traj.check()
        assert traj.finish_reason == "answer"
        assert [(c.tag, c.result) for c in traj.tool_calls] == [("python", "42")]
        assert traj.text.endswith("<answer>\\boxed{42}</answer>")
        assert "<python>print(6 * 7)</python><result>42</result><think>" in traj.text
        assert all(lp == 0.0 for lp, m in zip(traj.logprobs, traj.loss_mask, strict=True) if m)
        traj.close()
    assert len(server.requests) == 4
    path, first = server.requests[0]
    assert path == "/v1/completions"
    assert first["model"] == "policy" and first["stop"] == list(STOPS)
    assert first["temperature"] == 0.6 and first["top_p"] == 0.95 and first["n"] == 1
    assert first["max_tokens"] == 200
    assert first["prompt"].startswith("<|im_start|>system\nUse tools.")
    second = next(b for _, b in server.requests if "<result>42</result>" in b["prompt"])
    # the budget shrinks by what the trajectory already holds
    assert second["max_tokens"] < 200
    assert second["prompt"].endswith("<python>print(6 * 7)</python><result>42</result>")
    engine.close()


def test_stop_inferred_without_stop_reason_and_eos_and_length(tiny, stub_server):
    _, tok = tiny
    replies = iter(
        [
            {"text": "<search>capital of France", "finish_reason": "stop"},  # stop string stripped, no hint
            {"text": "Paris is the answer.", "finish_reason": "stop"},  # EOS
            {"text": "one two three four", "finish_reason": "length"},
        ]
    )
    server = stub_server(lambda path, body: (200, {"choices": [next(replies)]}))
    engine = OpenAICompletionsEngine(server.base_url, "m", tok, prompt_format="tokens")
    seq = engine.new_sequence(_prompt_ids(tok))
    params = SamplingParams(stop=STOPS)
    out = engine.sample([seq], params, [64])[0]
    assert out.finish_reason == "stop" and out.stop_string == "</search>"
    assert tok.decode(out.tokens) == "<search>capital of France</search>"
    assert isinstance(server.requests[0][1]["prompt"], list)  # token ids sent
    out = engine.sample([seq], params, [64])[0]
    assert out.finish_reason == "eos" and out.tokens[-1] == tok.eos_token_id
    out = engine.sample([seq], params, [64])[0]
    assert out.finish_reason == "length"
    assert len(out.logprobs) == len(out.tokens) and len(out.entropies) == len(out.tokens)
    engine.close()


def test_retries_server_errors_then_fails_clearly(tiny, stub_server):
    _, tok = tiny
    calls = {"n": 0}

    def flaky(path, body):
        calls["n"] += 1
        if calls["n"] == 1:
            return 503, {"error": "busy"}
        return 200, {
            "choices": [{"text": "ok", "finish_reason": "length", "logprobs": {"token_logprobs": [-0.5]}}]
        }

    server = stub_server(flaky)
    engine = OpenAICompletionsEngine(server.base_url, "m", tok, backoff_s=0.0, request_logprobs=True)
    out = engine.sample([engine.new_sequence([1, 2, 3])], SamplingParams(), [8])[0]
    assert calls["n"] == 2 and out.finish_reason == "length"
    assert out.logprobs == [-0.5]  # the server's log-prob, one per (locally re-tokenized) token
    assert server.requests[-1][1]["logprobs"] == 1
    engine.close()

    bad = stub_server(lambda path, body: (400, {"error": "unknown model"}))
    engine = OpenAICompletionsEngine(bad.base_url, "nope", tok, backoff_s=0.0)
    with pytest.raises(OpenAIEngineError, match="HTTP 400"):
        engine.sample([engine.new_sequence([1, 2])], SamplingParams(), [8])
    assert len(bad.requests) == 1  # a client error is not retried
    engine.close()


@pytest.mark.parametrize("reply", [{"choices": ["oops"]}, {"choices": []}, {"nothing": 1}, ["a", "list"]])
def test_a_malformed_reply_is_an_engine_error(tiny, stub_server, reply):
    """Issue 14, class 9: a reply of the wrong shape is retried and then reported as an engine error
    naming the problem — never a raw AttributeError from inside the engine."""
    _, tok = tiny
    server = stub_server(lambda path, body: (200, reply))
    engine = OpenAICompletionsEngine(server.base_url, "m", tok, backoff_s=0.0, max_attempts=2)
    with pytest.raises(OpenAIEngineError, match="failed after 2 attempt"):
        engine.sample([engine.new_sequence([1, 2])], SamplingParams(), [8])
    assert len(server.requests) == 2
    engine.close()
