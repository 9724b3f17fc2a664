"""LLM judge against a local stub OpenAI-compatible server on 127.0.0.1 (no external network)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from appo.rewards import JudgeConfig, JudgeNotConfiguredError, JudgeRequestError, LLMJudge, judge
from appo.rewards.llm_judge import verdict_is_correct


class Stub:
    """Replies are taken from ``script`` in order (the last one repeats): a string is a 200 reply with
    that content, an int is an HTTP error status, a float is a delay in seconds before a 'Correct' reply."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[str | int | float] = ["Correct"]
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append(
                    {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
                )
                step = stub.script[min(len(stub.requests) - 1, len(stub.script) - 1)]
                if isinstance(step, float):
                    time.sleep(step)
                    step = "Correct"
                if isinstance(step, int):
                    self.send_response(step)
                    self.end_headers()
                    self.wfile.write(b"server error")
                    return
                payload = json.dumps(
                    {"choices": [{"message": {"role": "assistant", "content": step}}]}
                ).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        return Handler


@pytest.fixture
def stub() -> Iterator[Stub]:
    s = Stub()
    s.thread.start()
    yield s
    s.server.shutdown()
    s.server.server_close()


def make_judge(stub: Stub, **kw: Any) -> LLMJudge:
    cfg = JudgeConfig(base_url=stub.base_url, model="stub-model", api_key="k", backoff_s=(0.0,), **kw)
    return LLMJudge(cfg)


def answer(text: str) -> str:
    return f"<think> t </think> <answer> \\boxed{{{text}}} </answer>"


def test_prompt_structure_and_request(stub: Stub) -> None:
    j = make_judge(stub)
    out = j(answer("Michio Sugeno"), ["Michio Sugeno", "M. Sugeno"], question="Who won?")
    assert out.score == 1.0
    req = stub.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["auth"] == "Bearer k"
    body = req["body"]
    assert body["model"] == "stub-model"
    assert "temperature" not in body
    assert [m["role"] for m in body["messages"]] == ["user"]
    content = body["messages"][0]["content"]
    assert "Question: Who won?\n" in content
    assert "Golden Answer: ['Michio Sugeno', 'M. Sugeno']\n" in content
    assert "Predicted Answer: Michio Sugeno" in content
    assert '"Correct"' in content and '"Incorrect"' in content


@pytest.mark.parametrize(
    ("reply", "correct"),
    [
        ("Correct", True),
        ("correct.", True),
        ("Incorrect", False),
        ("This is not correct", False),
        ("Wrong, but correct spelling", False),
        ("<judgment>Correct</judgment> although an incorrect reasoning", True),
        ("<judgment>Incorrect</judgment> correct", False),
        ("I cannot tell", False),
    ],
)
def test_decision_rule(stub: Stub, reply: str, correct: bool) -> None:
    assert verdict_is_correct(reply) is correct
    stub.script = [reply]
    out = make_judge(stub)(answer("Berlin"), "Paris", question="Capital of France?")
    assert out.score == float(correct)
    assert out.components["llm_equal"] == float(correct)
    assert out.components["judge_error"] == 0.0


def test_string_equivalence_overrides_a_negative_verdict(stub: Stub) -> None:
    stub.script = ["Incorrect"]
    out = make_judge(stub)(answer("\\dfrac{1}{2}"), "\\frac12", question="q")
    assert out.score == 1.0
    assert out.components["is_equiv"] == 1.0


def test_cache_avoids_second_request_and_persists(stub: Stub, tmp_path: Path) -> None:
    cache = tmp_path / "judge_cache.jsonl"
    j = make_judge(stub, cache_path=str(cache))
    j(answer("Paris"), "Paris", question="q")
    j(answer("Paris"), "Paris", question="q")
    assert len(stub.requests) == 1
    j(answer("Lyon"), "Paris", question="q")
    assert len(stub.requests) == 2
    again = make_judge(stub, cache_path=str(cache))  # fresh object reads the on-disk cache
    again(answer("Paris"), "Paris", question="q")
    assert len(stub.requests) == 2


def test_retries_then_success(stub: Stub) -> None:
    stub.script = [500, 503, "Correct"]
    out = make_judge(stub)(answer("Paris"), "London", question="q")
    assert len(stub.requests) == 3
    assert out.score == 1.0


def test_failure_falls_back_to_string_equivalence(stub: Stub) -> None:
    stub.script = [500]
    j = make_judge(stub)
    out = j(answer("Paris"), "London", question="q")
    assert len(stub.requests) == 3  # 3 attempts
    assert out.score == 0.0
    assert out.components["judge_error"] == 1.0
    assert out.reason.startswith("Error")
    assert j(answer("1/2"), "\\frac{1}{2}", question="q2").score == 1.0
    with pytest.raises(JudgeRequestError):
        make_judge(stub, on_error="raise")(answer("x"), "y", question="q3")


def test_client_error_is_not_retried(stub: Stub) -> None:
    stub.script = [401]
    out = make_judge(stub)(answer("Paris"), "Paris!", question="q")
    assert len(stub.requests) == 1
    assert out.components["judge_error"] == 1.0


def test_timeout(stub: Stub) -> None:
    stub.script = [1.0]
    j = make_judge(stub, timeout_s=0.2, max_attempts=1)
    t0 = time.monotonic()
    out = j(answer("Paris"), "London", question="q")
    assert time.monotonic() - t0 < 1.0
    assert out.components["judge_error"] == 1.0


def test_not_configured_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("APPO_JUDGE_BASE_URL", "APPO_JUDGE_MODEL", "APPO_JUDGE_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(JudgeNotConfiguredError, match="APPO_JUDGE_BASE_URL and APPO_JUDGE_MODEL"):
        judge(answer("x"), "x", question="q")


def test_module_function_reads_env(stub: Stub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPO_JUDGE_BASE_URL", stub.base_url)
    monkeypatch.setenv("APPO_JUDGE_MODEL", "env-model")
    monkeypatch.setenv("APPO_JUDGE_API_KEY", "secret")
    stub.script = ["Incorrect"]
    out = judge(answer("Berlin"), "Paris", extra_info={"question": "Capital?"})
    assert out.score == 0.0
    assert stub.requests[0]["body"]["model"] == "env-model"
    assert "Question: Capital?" in stub.requests[0]["body"]["messages"][0]["content"]


def test_a_torn_last_cache_line_is_skipped_and_counted(stub: Stub, tmp_path: Path) -> None:
    """Issue 14, class 9: a cache whose last line was cut mid-write still builds the judge."""
    cache = tmp_path / "judge_cache.jsonl"
    make_judge(stub, cache_path=str(cache))(answer("Paris"), "Paris", question="q")
    with cache.open("a") as fh:
        fh.write('{"key": "abc", "rep')  # a crash mid-write
    again = make_judge(stub, cache_path=str(cache))
    assert again.cache_lines_skipped == 1
    again(answer("Paris"), "Paris", question="q")
    assert len(stub.requests) == 1  # the intact line still answers from the cache
    again(answer("Lyon"), "Paris", question="q")  # a new record after the torn line stays readable
    third = make_judge(stub, cache_path=str(cache))
    assert third.cache_lines_skipped == 1 and len(third._cache) == 2
