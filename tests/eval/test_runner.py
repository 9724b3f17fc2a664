"""End to end: real benchmark rows (gsm8k = math, hotpotqa = QA) through the tool loop with python and
local search on a tiny scripted model; every output file; resume; timeouts; the judge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appo.config import load_config
from appo.eval import EvalSettings, load_records, run_eval, score_sample, select_questions
from appo.rewards import JudgeConfig, LLMJudge


def _make_script(answers: dict[str, str]):
    """python call, then search call, then answer; per question the first answer round gives the gold
    answer and later ones a wrong one (so with n = 2: c = 1, pass@1 = 0.5, pass@2 = 1)."""
    answered: dict[str, int] = {}

    def script(text: str) -> str:
        question = next(q for q in answers if q in text)
        done = _response(text).count("</result>")
        if done == 0:
            return "<think>Compute first.</think>\n<python>print(6 * 7)</python>"
        if done == 1:
            return "<think>Look it up.</think>\n<search>capital of France</search>"
        k = answered.get(question, 0)
        answered[question] = k + 1
        final = answers[question] if k % 2 == 0 else "nothing"
        return f"<think>Done.</think>\n<answer>The final answer is \\[ \\boxed{{{final}}} \\]</answer>"

    return script


def _response(text: str) -> str:
    """The assistant's part of the context (the code_search system prompt itself shows tag examples)."""
    return text.rsplit("<|im_start|>assistant", 1)[-1]


def _gold(ex) -> str:
    return ex.ground_truth if isinstance(ex.ground_truth, str) else ex.ground_truth[0]


@pytest.fixture()
def setup(tiny, shared_data, scripted_engine_class, tmp_path):
    model, tok = tiny
    data_dir = shared_data / "eval"
    examples = select_questions("gsm8k", data_dir, 3) + select_questions("hotpotqa", data_dir, 3)
    engine = scripted_engine_class(model, tok, _make_script({ex.question: _gold(ex) for ex in examples}))
    cfg = load_config("default", ["data.max_response_length=400"])

    def settings(**kw):
        values = dict(
            benchmarks=["gsm8k", "hotpotqa"],
            output=tmp_path / "run",
            n=2,
            limit=2,
            data_dir=data_dir,
            plots=True,
            model_name="tiny-scripted",
            temperature=0.6,
            top_p=0.95,
        )
        values.update(kw)
        return EvalSettings(**values)

    return engine, cfg, settings


def test_end_to_end_outputs_and_resume(setup, tool_runtime, tool_registry):
    engine, cfg, settings = setup
    s = settings()
    summary = run_eval(engine, cfg, s, runtime=tool_runtime, tool_tags=tool_registry.tags)
    out = s.output
    for name in (
        "summary.json",
        "summary.md",
        "passk.png",
        "tool_calls.png",
        "run.json",
        "config.yaml",
        "results/gsm8k.jsonl",
        "results/hotpotqa.jsonl",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "passk.png").read_bytes()[:4] == b"\x89PNG"

    records = load_records(out / "results" / "gsm8k.jsonl")
    assert [r["id"] for r in records] == ["gsm8k-0", "gsm8k-1"]
    rec = records[0]
    assert rec["gold"] == "18" and "Janet" in rec["question"] and rec["n"] == 2 and len(rec["samples"]) == 2
    first, second = rec["samples"]
    traj = first["trajectory"]
    assert [c["tag"] for c in traj["tool_calls"]] == ["python", "search"]
    assert traj["tool_calls"][0]["result"] == "42"
    assert "<python>print(6 * 7)</python><result>42</result>" in traj["text"]  # eval result wrapper
    assert traj["text"].rstrip().endswith("</answer>") and first["finish_reason"] == "answer"
    assert (
        first["prediction"] == "18"
        and first["scores"]["math_equal"] == 1.0
        and first["scores"]["correct"] == 1
    )
    assert second["scores"]["correct"] == 0 and rec["correct"] == 1
    assert first["scores"]["format_ok"] == 1.0 and first["tool_calls"] == {"python": 1, "search": 1}
    assert 0 < first["sampled_tokens"] < first["response_tokens"]
    hot = load_records(out / "results" / "hotpotqa.jsonl")[0]
    assert hot["samples"][0]["scores"]["em"] == 1.0 and "math_equal" not in hot["samples"][0]["scores"]

    g, h = summary["benchmarks"]["gsm8k"], summary["benchmarks"]["hotpotqa"]
    for m in (g, h):
        assert m["questions"] == 2 and m["samples"] == 4
        assert m["pass@1"] == pytest.approx(0.5) and m["pass@2"] == pytest.approx(1.0)
        assert m["accuracy"] == pytest.approx(0.5)
        assert m["python_calls"] == 1.0 and m["search_calls"] == 1.0 and m["tool_calls"] == 2.0
        assert m["format_failure_rate"] == 0.0 and m["timeout_rate"] == 0.0
        assert m["tool_call_histogram"] == {"2": 4}
    assert g["math_equal"] == pytest.approx(0.5)
    # tool productivity = acc · T / (T + 0.1) · 100 with acc = math-eq (math) and T = 2 calls
    assert g["tool_productivity"] == pytest.approx(0.5 * 2 / 2.1 * 100)
    assert summary["overall"]["questions"] == 4
    md = (out / "summary.md").read_text()
    assert "| gsm8k |" in md and "| hotpotqa |" in md and "**overall**" in md and "![pass@k](passk.png)" in md
    assert json.loads((out / "summary.json").read_text())["benchmarks"]["gsm8k"]["pass@2"] == 1.0

    # Re-running the same command does no work and leaves the records alone.
    before = (out / "results" / "gsm8k.jsonl").read_text()
    engine.rounds = 0
    again = run_eval(engine, cfg, s, runtime=tool_runtime, tool_tags=tool_registry.tags)
    assert engine.rounds == 0
    assert (out / "results" / "gsm8k.jsonl").read_text() == before
    assert again["benchmarks"]["gsm8k"]["pass@2"] == 1.0
    # A larger limit only runs the new question.
    more = run_eval(engine, cfg, settings(limit=3), runtime=tool_runtime, tool_tags=tool_registry.tags)
    ids = [r["id"] for r in load_records(out / "results" / "gsm8k.jsonl")]
    assert ids == ["gsm8k-0", "gsm8k-1", "gsm8k-2"]
    assert engine.rounds == 6  # python, search, answer rounds of one batch per benchmark
    assert more["benchmarks"]["hotpotqa"]["questions"] == 3
    # pass@k over a different n would be meaningless: refuse to mix.
    with pytest.raises(ValueError, match="n=2 samples per question"):
        run_eval(engine, cfg, settings(n=3), runtime=tool_runtime, tool_tags=tool_registry.tags)


def test_interrupted_line_is_ignored_and_rerun(setup, tool_runtime, tool_registry):
    engine, cfg, settings = setup
    s = settings(benchmarks=["gsm8k"], limit=1, n=1, plots=False)
    run_eval(engine, cfg, s, runtime=tool_runtime, tool_tags=tool_registry.tags)
    path = s.output / "results" / "gsm8k.jsonl"
    path.write_text('{"id": "gsm8k-0", "samp')  # a crash in the middle of the only write
    run_eval(engine, cfg, s, runtime=tool_runtime, tool_tags=tool_registry.tags)
    assert [r["id"] for r in load_records(path)] == ["gsm8k-0"]
    assert not (s.output / "passk.png").exists()


def test_per_tool_limit_and_timeout(setup, tool_runtime, tool_registry, tiny, scripted_engine_class):
    _, cfg, settings = setup
    model, tok = tiny
    # Always calls python: the third call exceeds a limit of 2 and gets the reference message.
    engine = scripted_engine_class(
        model,
        tok,
        lambda text: (
            "<python>print(1)</python>"
            if _response(text).count("</result>") < 3
            else "<answer>\\boxed{1}</answer>"
        ),
    )
    s = settings(benchmarks=["gsm8k"], limit=1, n=1, tool_limits={"python": 2, "search": 1}, plots=False)
    run_eval(engine, cfg, s, runtime=tool_runtime, tool_tags=tool_registry.tags)
    calls = load_records(s.output / "results" / "gsm8k.jsonl")[0]["samples"][0]["trajectory"]["tool_calls"]
    assert [c["ok"] for c in calls] == [True, True, False]
    assert (
        calls[2]["result"].startswith("The maximum python call limit is exceeded") and calls[2]["over_limit"]
    )

    t = settings(
        benchmarks=["hotpotqa"],
        limit=2,
        n=1,
        sample_timeout_s=1e-6,
        output=s.output.parent / "t",
        plots=False,
    )
    summary = run_eval(engine, cfg, t, runtime=tool_runtime, tool_tags=tool_registry.tags)
    assert summary["benchmarks"]["hotpotqa"]["timeout_rate"] == 1.0
    assert summary["benchmarks"]["hotpotqa"]["accuracy"] == 0.0


def test_no_tools_uses_base_prompt_and_answer_stop(setup, tiny, scripted_engine_class):
    _, cfg, settings = setup
    model, tok = tiny
    seen: list[str] = []

    def script(text: str) -> str:
        seen.append(text)
        return "<think>easy</think><answer>\\boxed{18}</answer> trailing text never generated"

    engine = scripted_engine_class(model, tok, script)
    s = settings(benchmarks=["gsm8k"], limit=1, n=1, tools=False, plots=False)
    summary = run_eval(engine, cfg, s)
    assert "wikipedia search tool" not in seen[0] and "You are a helpful assistant." in seen[0]
    assert summary["run"]["prompt_type"] == "base" and summary["run"]["sampling"]["stop"] == ["</answer>"]
    rec = load_records(s.output / "results" / "gsm8k.jsonl")[0]
    assert rec["samples"][0]["trajectory"]["text"].endswith("</answer>")
    assert summary["benchmarks"]["gsm8k"]["accuracy"] == 1.0


def test_judge_scores_through_stub_server(stub_server):
    server = stub_server(
        lambda path, body: (200, {"choices": [{"message": {"content": "<judgment>Correct</judgment>"}}]})
    )
    judge = LLMJudge(JudgeConfig(base_url=server.base_url, model="judge"))
    text = "<think>x</think><answer>\\boxed{Lowy}</answer>"
    scores = score_sample(text, ["Frank Lowy"], "qa", question="Who?", judge=judge)
    assert scores["em"] == 0.0 and scores["llm_equal"] == 1.0 and scores["correct"] == 1.0
    assert server.requests[0][0] == "/v1/chat/completions"
    assert "Frank Lowy" in server.requests[0][1]["messages"][0]["content"]
    judge.close()


def test_missing_benchmark_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nosuch.*test.jsonl"):
        select_questions("nosuch", Path(tmp_path))
