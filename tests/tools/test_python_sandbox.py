from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from appo.tools import PythonTool, Session, ToolError, probe_namespaces

NAMESPACES, _, WHY = probe_namespaces()
needs_netns = pytest.mark.skipif("net" not in NAMESPACES, reason=f"network namespaces unavailable: {WHY}")
needs_mountns = pytest.mark.skipif("mount" not in NAMESPACES, reason=f"mount namespaces unavailable: {WHY}")
needs_pidns = pytest.mark.skipif("pid" not in NAMESPACES, reason=f"pid namespaces unavailable: {WHY}")


@pytest.fixture(scope="module")
def tool() -> PythonTool:
    return PythonTool(timeout=3.0, memory_mb=1024)


@pytest.fixture()
def session():
    with Session() as s:
        yield s


def _alive_and_responsive(tool: PythonTool) -> None:
    """The test process (= trainer) survived and can still run tools."""
    assert os.getpid() > 0
    with Session() as s:
        r = tool.run("print('still here')", s)
    assert r.ok and r.text == "still here"


def test_state_persists_across_calls(tool, session):
    assert tool.run("import math\nx = 41\ndef f(v):\n    return v + 1", session).ok
    r = tool.run("f(x)", session)
    assert (r.text, r.ok) == ("42", True)
    r = tool.run("print(math.sqrt(16)); x = f(x)", session)
    assert r.text == "4.0"
    assert tool.run("x", session).text == "42"
    assert session.calls == ["python"] * 4


def test_trailing_expression_printed_like_reference(tool, session):
    assert tool.run("1 + 1", session).text == "2"
    assert tool.run("print('a')", session).text == "a"  # not printed twice
    assert tool.run("[].append(1)", session).text == "None"  # reference prints any bare expression
    assert tool.run("x = 3", session).text == ""


def test_errors_come_back_as_traceback_tail_not_ok(tool, session):
    r = tool.run("print('before')\nraise ValueError('boom')", session)
    assert not r.ok and r.metadata["error_kind"] == "exception"
    assert r.text.startswith("before\nTraceback")
    assert r.text.endswith("ValueError: boom")
    assert "_sandbox_worker" not in r.text  # worker frames are hidden
    r = tool.run("def broken(:\n    pass", session)
    assert not r.ok and "SyntaxError" in r.text
    assert tool.run("print('ok after errors')", session).text == "ok after errors"


def test_sessions_are_isolated(tool):
    with Session() as a, Session() as b:
        tool.run("secret = 1", a)
        r = tool.run("secret", b)
        assert not r.ok and "NameError" in r.text


def test_fork_equals_replay_of_first_k_calls(tool, session):
    calls = [
        "import random\nxs = [random.random() for _ in range(3)]",
        "acc = sum(xs)\nopen('notes.txt', 'w').write('a')",
        "acc *= 2\nwith open('notes.txt', 'a') as fh: fh.write('b')",
        "acc += 100",
    ]
    for c in calls:
        assert tool.run(c, session).ok
    probe = "print(repr(acc), open('notes.txt').read(), 'xs' in dir())"
    for k in (2, 3):
        branch = session.fork(upto_call=k)
        with Session() as fresh:
            for c in calls[:k]:
                tool.run(c, fresh)
            expected = tool.run(probe, fresh).text
        got = tool.run(probe, branch).text
        assert got == expected
        branch.close()
    # the original is untouched by its forks
    assert tool.run("acc > 100", session).text == "True"
    # a fork before any call has an empty namespace
    with session.fork(upto_call=0) as empty:
        assert "NameError" in tool.run("acc", empty).text
    with pytest.raises(ValueError):
        session.fork(upto_call=99)


def test_tool_level_fork_counts_python_calls(tool, session):
    tool.run("a = 1", session)
    tool.run("a = 2", session)
    with tool.fork(session, upto_call=1) as branch:
        assert tool.run("a", branch).text == "1"


def test_timeout_is_reported_and_state_restored(tool, session):
    tool.run("y = 7", session)
    t0 = time.monotonic()
    r = tool.run("y = 8\nwhile True:\n    pass", session)
    assert time.monotonic() - t0 < 6
    assert not r.ok and r.metadata["timeout"] and "timeout" in r.text.lower()
    # the timed-out call is discarded: state is the one before it
    assert tool.run("y", session).text == "7"
    # and forks agree with the original (the discarded call is not replayed)
    with session.fork() as branch:
        assert tool.run("y", branch).text == "7"
    _alive_and_responsive(tool)


def test_memory_bomb_is_contained(tool, session):
    tool.run("keep = 5", session)
    r = tool.run("b = bytearray(64 * 2**30)", session)
    assert not r.ok and "MemoryError" in r.text
    r = tool.run("chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 2**20))", session)
    assert not r.ok and ("MemoryError" in r.text or r.metadata["error_kind"] in ("crash", "timeout"))
    assert tool.run("keep", session).text == "5"
    _alive_and_responsive(tool)


def test_fork_bomb_is_contained(session):
    if os.geteuid() == 0 and "pid" not in NAMESPACES:
        pytest.skip("running as root without a pid namespace: RLIMIT_NPROC is not enforced for root")
    tool = PythonTool(timeout=5.0, max_processes=32)
    tool.run("z = 1", session)
    t0 = time.monotonic()
    r = tool.run("import os\nwhile True:\n    os.fork()", session)
    assert time.monotonic() - t0 < 8
    assert not r.ok
    assert tool.run("z", session).text == "1"
    _alive_and_responsive(tool)


def test_infinite_output_is_capped_and_stopped(tool, session):
    t0 = time.monotonic()
    r = tool.run("while True:\n    print('spam' * 100)", session)
    assert time.monotonic() - t0 < 10
    assert r.metadata["truncated"]
    assert len(r.text) < tool.config.max_output_chars + 500
    assert "output truncated" in r.text
    r = tool.run("print('x' * 50000)", session)
    assert r.ok and r.metadata["truncated"] and r.text.startswith("x" * 20000)
    small = PythonTool(max_output_chars=10)
    with Session() as s:
        r = small.run("print('0123456789abcdef')", s)
    assert r.text.startswith("0123456789\n... [output truncated")
    _alive_and_responsive(tool)


def test_output_of_child_processes_is_captured(tool, session):
    r = tool.run("import subprocess\nsubprocess.run(['echo', 'from child'])", session)
    assert "from child" in r.text


@needs_mountns
def test_writes_outside_the_sandbox_dir_fail(tool, session, tmp_path):
    target = tmp_path / "escape.txt"
    home_target = Path.home() / "appo_sandbox_escape_test.txt"
    r = tool.run(f"open({str(target)!r}, 'w').write('x')", session)
    assert not r.ok and "Read-only file system" in r.text
    r = tool.run(f"open({str(home_target)!r}, 'w').write('x')", session)
    assert not r.ok
    r = tool.run(
        "import subprocess\nprint(subprocess.run('mount -o remount,rw / ; touch /tmp/appo_escape', shell=True).returncode)",
        session,
    )
    assert not target.exists() and not home_target.exists() and not Path("/tmp/appo_escape").exists()
    # inside its own directory it can write
    r = tool.run("open('inside.txt', 'w').write('ok'); print(open('inside.txt').read())", session)
    assert r.ok and r.text == "ok"


@needs_pidns
def test_killing_the_parent_is_contained(tool, session):
    me = os.getpid()
    r = tool.run(f"import os, signal\nos.kill({me}, signal.SIGKILL)", session)
    assert not r.ok  # our pid does not exist in the sandbox's pid namespace
    tool.run("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)", session)
    tool.run("import os, signal\nos.kill(-1, signal.SIGKILL)", session)
    r = tool.run(
        "import os\nprint(os.getppid(), len([p for p in os.listdir('/proc') if p.isdigit()]))", session
    )
    assert r.ok and r.text.split()[0] == "0"
    _alive_and_responsive(tool)


@needs_netns
def test_network_is_blocked(tool, session):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    accepted: list[object] = []
    srv.settimeout(0.5)

    def accept() -> None:
        with contextlib.suppress(OSError):
            accepted.append(srv.accept())

    r = tool.run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)", session)
    th = threading.Thread(target=accept)
    th.start()
    th.join()
    srv.close()
    assert not r.ok and not accepted
    assert "unreachable" in r.text.lower() or "refused" in r.text.lower()


def test_environment_is_scrubbed(tool, session, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-leak")
    leaky = PythonTool(env={"VISIBLE": "yes"})
    with Session() as s:
        r = leaky.run("import os\nprint(sorted(os.environ))\nprint(os.environ.get('VISIBLE'))", s)
        assert "OPENAI_API_KEY" not in r.text and r.text.endswith("yes")
        r = leaky.run("import os\nprint(os.environ['HOME'] == os.getcwd())", s)
        assert r.text == "True"


def test_stateless_mode_has_no_memory(session):
    stateless = PythonTool(stateless=True)
    assert stateless.run("x = 1", session).ok
    r = stateless.run("x", session)
    assert not r.ok and "NameError" in r.text
    assert stateless.run("2 * 21").text == "42"  # session=None is a one-off call too


def test_info_reports_protections(tool):
    info = tool.info()
    p = info["protections"]
    assert p["environment_scrubbed"] and p["rlimits"]["RLIMIT_AS"] == 1024 * 2**20
    assert p["rlimits"]["RLIMIT_FSIZE"] == 64 * 2**20
    if info["namespaces"] == "user+net+mount+pid":
        assert p["network_isolated"] and p["filesystem_readonly_outside_workdir"] and p["pid_namespace"]
        assert p["capabilities_dropped"]


def test_without_namespaces_still_runs_with_limits():
    plain = PythonTool(namespaces=False, timeout=2.0)
    with Session() as s:
        assert plain.run("v = 2", s).ok
        assert plain.run("v * 21", s).text == "42"
        assert plain.info()["namespaces"] == "none"
        r = plain.run("while True: pass", s)
        assert r.metadata["timeout"]


def test_bad_config_and_closed_session():
    with pytest.raises(ToolError):
        PythonTool(timeout_s=3)
    with pytest.raises(ValueError):
        PythonTool(timeout=0)
    s = Session()
    s.close()
    with pytest.raises(ToolError):
        PythonTool().run("1", s)


def test_a_cancel_while_the_worker_starts_runs_nothing(tool, session, monkeypatch):
    """Issue 14, class 6: a runtime timeout that lands while the worker is still starting (nothing to
    kill yet) must not let the call run unrecorded: it is not run, and later calls see the right state."""
    from appo.tools import python_sandbox

    tool.run("a = 1", session)
    state = session.get_state("python")
    state._discard_worker()  # the next call starts a worker and replays
    real_init = python_sandbox._Worker.__init__

    def start_then_cancel(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        state.cancel()  # arrives before the call's own code runs

    monkeypatch.setattr(python_sandbox._Worker, "__init__", start_then_cancel)
    r = tool.run("a = 100", session)
    assert not r.ok and r.metadata["timeout"] and not r.metadata["in_history"]
    monkeypatch.setattr(python_sandbox._Worker, "__init__", real_init)
    assert tool.run("print(a)", session).text == "1"
    assert session.calls == ["python", "python"]
