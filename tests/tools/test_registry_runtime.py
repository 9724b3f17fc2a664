from __future__ import annotations

import threading
import time

import pytest
from omegaconf import OmegaConf

from appo.tools import PythonTool, SearchTool, Session, Tool, ToolCall, ToolError, ToolResult, build_tools
from appo.tools.registry import ToolRegistry, ToolsConfig

DEFAULT_TOOLS = {
    "call_limit": 3,
    "max_workers": 8,
    "timeout": 30.0,
    "retry_count": 2,
    "result_format": " <result>\n{result}\n</result>",
    "branch_call_counter": "response",
    "tool_instances": {
        "python": {"class_path": "python", "params": {}},
        "search": {
            "class_path": "search",
            "params": {"providers": ["cache", "local"], "cache_file": None, "corpus": None},
        },
    },
}


class SleepTool(Tool):
    """Test tool: sleeps ``argument`` seconds; 'flaky' fails transiently twice, 'boom' raises."""

    tag = "sleep"

    def __init__(self, tag: str | None = None, fail_times: int = 0) -> None:
        super().__init__(tag)
        self.fail_times = fail_times
        self.calls = 0
        self.cancelled: list[object] = []
        self.lock = threading.Lock()

    def run(self, argument: str, session: Session | None = None) -> ToolResult:
        with self.lock:
            self.calls += 1
            n = self.calls
        if argument == "boom":
            raise RuntimeError("kaput")
        if argument == "flaky" and n <= self.fail_times:
            return ToolResult("try again", False, 0.0, {"retryable": True})
        if argument == "userr":
            return ToolResult("user error", False, 0.0, {"error_kind": "exception"})
        time.sleep(float(argument) if argument.replace(".", "").isdigit() else 0)
        return ToolResult(f"slept {argument}", True, 0.0, {"cache_hit": argument == "0"})

    def cancel(self, session: Session | None) -> None:
        self.cancelled.append(session)


def test_build_from_plain_dict_and_omegaconf():
    for cfg in (DEFAULT_TOOLS, OmegaConf.create(DEFAULT_TOOLS)):
        reg = build_tools(cfg)
        assert reg.tags == ("python", "search")
        assert isinstance(reg["python"], PythonTool) and isinstance(reg["search"], SearchTool)
        assert reg.stop_strings == ["</python>", "</search>"]
        assert reg.config == ToolsConfig(3, 8, 30.0, 2, " <result>\n{result}\n</result>")
        assert reg.lookup("search") is reg["search"]


def test_dotted_class_path_and_params():
    cfg = {
        "tool_instances": {
            "nap": {"class_path": f"{__name__}.SleepTool", "params": {"tag": "nap", "fail_times": 1}}
        }
    }
    reg = build_tools(cfg)
    assert reg.tags == ("nap",) and reg["nap"].fail_times == 1
    assert reg.lookup("nap").tag == "nap"
    # reference class paths map to the built-in tools when their module is absent
    ref = {"tool_instances": {"python": {"class_path": "verl.workers.rollout.tools.python_tool.PythonTool"}}}
    assert isinstance(build_tools(ref)["python"], PythonTool)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"tool_instances": {"python": {"class_path": "pyhton"}}}, "did you mean 'python'"),
        (
            {"tool_instances": {"s": {"class_path": "search", "params": {"top_kk": 3}}}},
            r"params\.top_kk.*'top_k'",
        ),
        ({"tool_instances": {"p": {"class_path": "python", "params": {"timeot": 3}}}}, "'timeout'"),
        ({"tool_instances": {"x": {"class_path": "no.such.module.Tool"}}}, "cannot import"),
        ({"tool_instances": {"x": {"class_path": "json.JSONDecoder"}}}, "not a subclass"),
        ({"call_limt": 3}, "did you mean 'call_limit'"),
        (
            {"tool_instances": {"a": {"class_path": "python"}, "b": {"class_path": "python"}}},
            "two tools use the tag",
        ),
    ],
)
def test_config_errors_name_the_key(cfg, message):
    with pytest.raises(ToolError, match=message):
        build_tools(cfg)


def _runtime(**kw):
    reg = ToolRegistry(
        [SleepTool(fail_times=2)], ToolsConfig(max_workers=16, timeout=kw.pop("timeout", 5.0), retry_count=3)
    )
    return reg, reg.runtime(**kw)


def test_calls_of_a_round_run_concurrently_in_order():
    _reg, rt = _runtime()
    t0 = time.monotonic()
    res = rt.execute([ToolCall("sleep", "0.3", id=i) for i in range(12)])
    wall = time.monotonic() - t0
    assert wall < 0.3 * 12 / 3  # far below sequential (3.6 s)
    assert [r.text for r in res] == ["slept 0.3"] * 12
    rt.close()


def test_timeout_really_fires_and_cancels():
    reg, rt = _runtime(timeout=0.3)
    s = Session()
    t0 = time.monotonic()
    res = rt.execute([ToolCall("sleep", "3", s), ToolCall("sleep", "0.01")])
    assert time.monotonic() - t0 < 1.5
    assert not res[0].ok and res[0].metadata["timeout"] and "timed out after 0.3s" in res[0].text
    assert res[1].ok
    assert reg["sleep"].cancelled == [s]
    assert rt.metrics()["sleep"]["timeouts"] == 1
    rt.close()


def test_python_timeout_through_runtime_kills_the_worker():
    reg = ToolRegistry([PythonTool(timeout=30)], ToolsConfig(timeout=1.0))
    with reg.runtime() as rt, Session() as s:
        rt.run("python", "v = 1", s)
        t0 = time.monotonic()
        r = rt.run("python", "import time\ntime.sleep(20)", s)
        assert time.monotonic() - t0 < 3 and r.metadata["timeout"]
        assert rt.run("python", "v", s).text == "1"


def test_retries_only_transient_failures():
    _reg, rt = _runtime()
    r = rt.run("sleep", "flaky")
    assert r.ok and r.metadata["attempts"] == 3
    r = rt.run("sleep", "userr")  # a tool-reported error is not re-executed
    assert not r.ok and r.metadata["attempts"] == 1
    r = rt.run("sleep", "boom")
    assert not r.ok and r.text == "Error: Tool(sleep) execution failed with message: kaput"
    assert r.metadata["attempts"] == 3
    r = rt.run("nosuchtool", "x")
    assert not r.ok and "unknown tool" in r.text
    rt.close()


def test_metrics_and_formatting():
    _reg, rt = _runtime()
    rt.execute([ToolCall("sleep", "0"), ToolCall("sleep", "0.05"), ToolCall("sleep", "userr")])
    m = rt.metrics()["sleep"]
    assert (m["calls"], m["ok"], m["failures"], m["cache_hits"]) == (3, 2, 1, 1)
    assert 0 <= m["latency_p50"] <= m["latency_p95"] and m["latency_p95"] >= 0.05
    flat = rt.flat_metrics()
    assert flat["tools/sleep/calls"] == 3
    assert rt.format(ToolResult("hi", True)) == " <result>\nhi\n</result>"
    reg2 = ToolRegistry([SleepTool()], ToolsConfig(result_format="<result>{result}</result>"))
    assert reg2.runtime().format("x") == "<result>x</result>"
    rt.reset_metrics()
    assert rt.metrics() == {}
    rt.close()


def test_session_fork_across_tools():
    reg = build_tools(DEFAULT_TOOLS)
    with reg.runtime() as rt, Session() as s:
        rt.run("python", "n = 1", s)
        rt.run("search", "capital of Canada", s)
        rt.run("python", "n = 2", s)
        assert s.calls == ["python", "python"]  # the log holds the calls that make up the state
        with s.fork(upto_call=1) as branch:  # the state after the first logged call
            assert rt.run("python", "n", branch).text == "1"
        with s.fork() as branch:
            assert rt.run("python", "n", branch).text == "2"


def test_runtime_timeout_during_replay_keeps_the_history(tmp_path):
    """Issue 14, class 6: a timeout while a forked session replays its history blames no replayed call;
    the timed-out call is never run nor part of the history; the next call sees the prefix's state."""
    tool = PythonTool(timeout=10)
    reg = ToolRegistry([tool], ToolsConfig(timeout=1.0))
    with reg.runtime() as rt, Session() as s:
        assert rt.run("python", "import time\ntime.sleep(0.6)\nx = 1", s).ok
        assert rt.run("python", "time.sleep(0.6)\nx += 1", s).ok
        with s.fork() as branch:  # replaying both calls takes 1.2 s > the runtime's 1 s
            r = rt.run("python", "x += 100\nprint(x)", branch)
            assert not r.ok and r.metadata["timeout"]
            assert branch.calls == ["python", "python"]
            # The replay resumed, not restarted: the next call under the same 1 s deadline gets the state.
            assert rt.run("python", "print(x)", branch).text == "2"
            assert branch.calls == ["python"] * 3
        assert tool.run("print(x)", s).text == "2"


def test_a_retried_search_is_not_a_call_of_the_session_state(monkeypatch):
    """Issue 14, class 7: a search the runtime retried leaves the session's call log as it was, so the
    fork point of a branch after it still names the right Python state."""
    reg = build_tools(DEFAULT_TOOLS)
    from appo.tools.search import ProviderAnswer

    search = reg["search"]
    first = {"attempt": True}

    def unavailable_once(original):
        def run(query):
            return (
                ProviderAnswer("error", message="503", retryable=True)
                if first["attempt"]
                else original(query)
            )

        return run

    for provider in search.providers:
        monkeypatch.setattr(provider, "search", unavailable_once(provider.search))
    original_run = search.run

    def run(argument, session=None):
        try:
            return original_run(argument, session)
        finally:
            first["attempt"] = False

    monkeypatch.setattr(search, "run", run)
    with reg.runtime() as rt, Session() as s:
        r = rt.run("search", "capital of Canada", s)
        assert r.metadata["attempts"] == 2
        rt.run("python", "n = 1", s)
        point = len(s.calls)  # what the loop records as the fork point after this call
        rt.run("python", "n += 1", s)
        assert s.calls == ["python", "python"]
        with s.fork(upto_call=point) as branch:
            assert rt.run("python", "print(n)", branch).text == "1"
