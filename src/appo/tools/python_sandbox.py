"""Stateful, sandboxed Python tool.

Mechanism
---------
Each session (one trajectory) owns one worker process running ``_sandbox_worker.py`` with the same
interpreter as the trainer (configurable). Code of successive calls is ``exec``-ed in one persistent
namespace, so variables, imports and definitions persist. The worker is started as::

    unshare --user --map-root-user --net --mount --pid --fork --kill-child --mount-proc python ...

when the kernel allows it (probed once, see :func:`probe_namespaces`), giving:

* **network**: a fresh network namespace with only a (down) loopback device — nothing is reachable;
* **filesystem**: a private mount namespace in which every mount is re-mounted read-only except the
  session's fresh temporary working directory (also ``HOME`` and ``TMPDIR``) and a private
  ``/dev/shm``; capabilities are then dropped (bounding set, securebits, no_new_privs) so the code
  cannot undo this;
* **processes**: a private PID namespace — the trainer is invisible and cannot be signalled; a
  watchdog thread kills every process of the namespace when there are more than ``max_processes``
  (RLIMIT_NPROC is set too, but Linux does not enforce it for processes of uid 0 outside the
  namespace, which is why the watchdog exists); killing the session kills the whole namespace.

Always active: resource limits (address space, file size, CPU seconds per call, core dumps,
processes, open files), a scrubbed environment (no variable of the parent is passed unless listed in
``env``), a wall-clock timeout enforced by the parent (the worker is killed), and an output cap.
Without ``unshare`` the worker runs as a plain child process in its own process group with the same
limits; ``info()`` reports which protections are active.

Fork
----
``fork(upto_call=k)`` uses **deterministic replay**: the session keeps the code of every call; the
forked session starts a fresh worker (lazily, on its first call) and re-executes the first ``k``
recorded calls in a fresh working directory (``random`` is seeded and ``PYTHONHASHSEED=0``). Only a
call that completed enters the history (and the session's call log): a call that timed out, was
cancelled or killed its worker is *discarded* — the original session restarts and replays its history
without it — so the state after ``k`` calls is the same in the original and in a fork.

Replay happens lazily, inside the first call after a fork or a discarded call, and counts against that
call's deadline. If the call is cancelled (the runtime's timeout) while the history is being replayed,
no replayed call is blamed and the worker is not killed: the replayed call in progress finishes, the new
call fails as timed out without running, the history stays intact, and the next call resumes the replay
where it stopped — a history that takes longer than one timeout to replay is restored over several
calls, never lost. A replayed call that kills the worker on its own (it did not the first time: e.g. a
delayed ``os._exit``) is found and discarded.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from appo.tools.base import Session, Tool, ToolError, ToolResult

__all__ = ["PythonSandboxConfig", "PythonSession", "PythonTool", "probe_namespaces"]

_WORKER = Path(__file__).with_name("_sandbox_worker.py")
_MiB = 1 << 20

_NS_VARIANTS: list[tuple[str, list[str]]] = [
    (
        "user+net+mount+pid",
        ["--user", "--map-root-user", "--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"],
    ),
    ("user+net+mount", ["--user", "--map-root-user", "--net", "--mount"]),
    ("user+net", ["--user", "--map-root-user", "--net"]),
]


@lru_cache(maxsize=1)
def probe_namespaces() -> tuple[str, tuple[str, ...], str]:
    """Which namespace set works here: (name, unshare argv prefix, reason if none)."""
    exe = shutil.which("unshare")
    if exe is None:
        return "none", (), "the `unshare` program (util-linux) is not installed"
    if not sys.platform.startswith("linux"):
        return "none", (), "namespaces are Linux-only"
    reason = ""
    for name, flags in _NS_VARIANTS:
        try:
            r = subprocess.run([exe, *flags, "true"], capture_output=True, timeout=10, env={})
        except (OSError, subprocess.TimeoutExpired) as exc:
            reason = str(exc)
            continue
        if r.returncode == 0:
            return name, (exe, *flags), ""
        reason = r.stderr.decode(errors="replace").strip() or f"exit {r.returncode}"
    return "none", (), f"unprivileged namespaces are not available: {reason}"


@dataclass
class PythonSandboxConfig:
    """Limits of the Python sandbox (all configurable through the tool's ``params``)."""

    timeout: float = 30.0
    memory_mb: int = 4096
    max_processes: int = 64
    file_size_mb: int = 64
    max_output_chars: int = 20000
    output_hard_limit_mb: int = 8
    cpu_seconds: int | None = None  # default: ceil(timeout) + 1
    max_open_files: int = 1024
    max_traceback_lines: int = 20
    namespaces: str | bool = "auto"  # "auto" | True (required) | False (off)
    stateless: bool = False
    python_executable: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    workdir_root: str | None = None
    start_timeout: float = 30.0
    empty_output: str = ""

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError(f"python tool: timeout must be > 0, got {self.timeout}")
        for name in (
            "memory_mb",
            "max_processes",
            "file_size_mb",
            "max_output_chars",
            "output_hard_limit_mb",
        ):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"python tool: {name} must be > 0, got {getattr(self, name)}")
        if self.namespaces not in ("auto", True, False):
            raise ValueError(
                f"python tool: namespaces must be 'auto', true or false, got {self.namespaces!r}"
            )


class _WorkerDied(Exception):
    pass


class _Worker:
    """One sandbox process (plus its namespaces)."""

    def __init__(self, cfg: PythonSandboxConfig, workdir: str) -> None:
        self.cfg = cfg
        ns_name, prefix, _reason = probe_namespaces() if cfg.namespaces is not False else ("none", (), "")
        if cfg.namespaces is True and ns_name == "none":
            raise ToolError(f"python sandbox: namespaces required but unavailable ({_reason})")
        self.ns_name = ns_name
        python = cfg.python_executable or sys.executable
        wcfg = {
            "workdir": workdir,
            "userns": "user" in ns_name,
            "mountns": "mount" in ns_name,
            "pidns": "pid" in ns_name,
            "memory_bytes": int(cfg.memory_mb) * _MiB,
            "file_size_bytes": int(cfg.file_size_mb) * _MiB,
            "max_processes": int(cfg.max_processes),
            "max_open_files": int(cfg.max_open_files),
            "cpu_seconds": int(cfg.cpu_seconds) if cfg.cpu_seconds else int(cfg.timeout) + 2,
            "output_hard_limit": int(cfg.output_hard_limit_mb) * _MiB,
            "max_traceback_lines": int(cfg.max_traceback_lines),
        }
        bindir = str(Path(python).parent)
        env = {
            "PATH": f"{bindir}:/usr/local/bin:/usr/bin:/bin",
            "HOME": workdir,
            "TMPDIR": workdir,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONIOENCODING": "utf-8",
            "MPLBACKEND": "Agg",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        env.update({str(k): str(v) for k, v in cfg.env.items()})
        argv = [*prefix, python, "-s", str(_WORKER), json.dumps(wcfg)]
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=workdir,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise ToolError(f"python sandbox: cannot start {python}: {exc}") from exc
        self._buf = b""
        self.dead = False
        try:
            hello = self._read(time.monotonic() + cfg.start_timeout)
        except (_WorkerDied, TimeoutError) as exc:
            err = self._stderr_tail()
            self.close()
            raise ToolError(f"python sandbox failed to start ({exc}): {err}") from exc
        self.protections: dict[str, Any] = hello.get("hello", {})

    def _stderr_tail(self) -> str:
        assert self.proc.stderr is not None
        with contextlib.suppress(OSError):
            os.set_blocking(self.proc.stderr.fileno(), False)
            data = self.proc.stderr.read() or b""
            return data.decode(errors="replace")[-2000:]
        return ""

    def _read(self, deadline: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer before the deadline")
            if self.dead:
                raise _WorkerDied("worker was killed")
            ready, _, _ = select.select([fd], [], [], min(left, 0.2))
            if not ready:
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                self.dead = True
                raise _WorkerDied(f"worker exited (code {self.proc.poll()})")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, code: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        msg = json.dumps({"code": code, "max_output": int(self.cfg.max_output_chars)}) + "\n"
        try:
            self.proc.stdin.write(msg.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            self.dead = True
            raise _WorkerDied(f"worker is gone ({exc})") from exc
        return self._read(time.monotonic() + timeout)

    def kill(self) -> None:
        """SIGKILL the sandbox (safe from any thread; a blocked reader then sees EOF)."""
        self.dead = True
        with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, OSError):
            self.proc.kill()

    def close(self) -> None:
        """Kill, reap and release the pipes (only from the thread that owns the worker)."""
        self.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            with contextlib.suppress(Exception):
                stream.close()  # type: ignore[union-attr]


_live_sessions: weakref.WeakSet[PythonSession] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for s in list(_live_sessions):
        s.close()


class _Cancelled(Exception):
    """The call was cancelled from another thread (a runtime timeout)."""


@dataclass
class _Record:
    code: str
    replay: bool  # False: the call was discarded (timeout / killed worker)


class PythonSession:
    """The Python state of one trajectory: a worker process plus the history needed to rebuild it."""

    def __init__(self, cfg: PythonSandboxConfig, history: list[_Record] | None = None) -> None:
        self.cfg = cfg
        self.history: list[_Record] = list(history or [])
        self._worker: _Worker | None = None
        self._workdir: str | None = None
        self._lock = threading.RLock()
        self._cancelled = False
        # History records the current worker has executed, and whether it is executing them now.
        self._replayed = 0
        self._replaying = False
        self.closed = False
        self.starts = 0
        _live_sessions.add(self)

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def workdir(self) -> str | None:
        return self._workdir

    @property
    def protections(self) -> dict[str, Any]:
        return dict(self._worker.protections) if self._worker else {}

    # A replayed call can kill its worker just after answering (e.g. by killing the pid namespace's init);
    # wait this long after a replay to see the worker still alive.
    REPLAY_SETTLE_S = 0.05

    def _ensure_worker(self, careful: bool = False) -> _Worker:
        """A live worker whose state is the whole history. Replay resumes where it stopped: a cancel
        between two replayed calls keeps the worker and its progress (no replayed call is blamed), so a
        long history is restored across calls instead of being restarted by every timeout."""
        if self._worker is None or self._worker.dead:
            self._discard_worker()
            self._workdir = tempfile.mkdtemp(prefix="appo-py-", dir=self.cfg.workdir_root)
            self._worker = _Worker(self.cfg, self._workdir)
            self.starts += 1
            self._replayed = 0
        replayed_now = False
        self._replaying = True
        try:
            while self._replayed < len(self.history):
                rec = self.history[self._replayed]
                if rec.replay:
                    if self._cancelled:
                        raise _Cancelled
                    replayed_now = True
                    try:
                        resp = self._worker.call(rec.code, self.cfg.timeout)
                        if resp.get("fatal") or (careful and self._settled_dead()):
                            raise _WorkerDied("killed during replay")
                    except (TimeoutError, _WorkerDied):
                        rec.replay = False  # it does not replay as it ran: discard it
                        self._discard_worker()
                        return self._ensure_worker(careful)
                self._replayed += 1
        finally:
            self._replaying = False
        if replayed_now and not careful and self._settled_dead():
            # Some replayed call killed the worker late; replay again, checking after each call, so the
            # culprit is found and discarded.
            self._discard_worker()
            return self._ensure_worker(careful=True)
        if self._cancelled:
            raise _Cancelled
        return self._worker

    def _settled_dead(self) -> bool:
        assert self._worker is not None
        try:
            self._worker.proc.wait(timeout=self.REPLAY_SETTLE_S)
        except subprocess.TimeoutExpired:
            return False
        self._worker.dead = True
        return True

    def start(self) -> PythonSession:
        """Start the worker now (otherwise it starts on the first call)."""
        with self._lock:
            self._ensure_worker()
        return self

    def _discard_worker(self) -> None:
        self._replayed = 0
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def close(self) -> None:
        self.closed = True
        self._discard_worker()

    def cancel(self) -> None:
        """Stop a running call from another thread (it returns a timeout result): kill the worker while
        user code runs; during a replay, stop after the replayed call in progress (keeping the progress)."""
        self._cancelled = True
        w = self._worker
        if w is not None and not self._replaying:
            w.kill()

    def fork(self, upto_call: int) -> PythonSession:
        with self._lock:
            if not 0 <= upto_call <= len(self.history):
                raise ValueError(
                    f"upto_call={upto_call} outside 0..{len(self.history)} (python calls so far)"
                )
            return PythonSession(self.cfg, [_Record(r.code, r.replay) for r in self.history[:upto_call]])

    # -- calls -----------------------------------------------------------------------------
    def run(self, code: str) -> ToolResult:
        """Run one call. ``metadata["in_history"]`` says whether it entered the history (it completed)."""
        t0 = time.monotonic()
        with self._lock:
            if self.closed:
                raise ToolError("python session is closed")
            self._cancelled = False
            meta: dict[str, Any] = {"in_history": False}
            try:
                worker = self._ensure_worker()
            except _Cancelled:
                meta.update(error_kind="timeout", timeout=True)
                text = (
                    f"Execution timeout while restoring the session's state ({self._replayed} of "
                    f"{len(self.history)} earlier calls replayed); this call was not run."
                )
                return ToolResult(text, False, time.monotonic() - t0, meta)
            meta["namespaces"] = worker.ns_name
            try:
                resp = worker.call(code, self.cfg.timeout)
            except TimeoutError:
                self._discard_worker()
                meta.update(error_kind="timeout", timeout=True)
                text = f"Execution timeout (exceeded {self.cfg.timeout:g}s)"
                if not self.cfg.stateless:
                    text += "; the call was discarded and the session restored to its state before it."
                return ToolResult(text, False, time.monotonic() - t0, meta)
            except _WorkerDied as exc:
                self._discard_worker()
                kind = "timeout" if self._cancelled else "crash"
                meta.update(error_kind=kind, timeout=self._cancelled)
                text = (
                    f"Execution timeout (exceeded {self.cfg.timeout:g}s)"
                    if self._cancelled
                    else f"The Python process died ({exc}); the session was restored to its state before this call."
                )
                return ToolResult(text, False, time.monotonic() - t0, meta)
            if resp.get("fatal") or self._cancelled:
                # A cancel that raced the answer (or came while the worker was starting and killed
                # nothing): the worker may hold this call's effects, so it goes; the history stays.
                self._discard_worker()
            else:
                # Only a completed call is part of the state that forks replay.
                self.history.append(_Record(code, True))
                self._replayed = len(self.history)
                meta.update(in_history=True, call_index=len(self.history) - 1)
        out = resp.get("output", "")
        error = resp.get("error")
        truncated = bool(resp.get("truncated"))
        out = out.rstrip()
        if truncated:
            out += f"\n... [output truncated: {resp.get('bytes', 0)} bytes written, first {self.cfg.max_output_chars} characters shown]"
        parts = [p for p in (out, error) if p]
        text = "\n".join(parts).strip("\n")
        if not text and error is None:
            text = self.cfg.empty_output
        meta.update(truncated=truncated, error_kind=resp.get("error_kind"))
        return ToolResult(text, error is None, time.monotonic() - t0, meta)


class PythonTool(Tool):
    """``<python>code</python>``: run code in the session's persistent sandbox (see module doc).

    Accepted params: every field of :class:`PythonSandboxConfig`, plus ``tag`` and the reference's
    ``conda_path``/``conda_env`` (→ ``python_executable = {conda_path}/envs/{conda_env}/bin/python``).
    """

    tag = "python"
    short_name = "python"

    def __init__(
        self,
        tag: str | None = None,
        conda_path: str | None = None,
        conda_env: str | None = None,
        **params: Any,
    ) -> None:
        super().__init__(tag)
        if conda_path and conda_env and not params.get("python_executable"):
            params["python_executable"] = str(Path(conda_path) / "envs" / conda_env / "bin" / "python")
        try:
            self.config = PythonSandboxConfig(**params)
        except TypeError as exc:
            raise ToolError(f"python tool: {exc}") from exc

    def _session_state(self, session: Session) -> PythonSession:
        st = session.state(self.tag, lambda: PythonSession(self.config))
        assert isinstance(st, PythonSession)
        return st

    def new_session(self) -> PythonSession:
        return PythonSession(self.config)

    def run(self, argument: str, session: Session | None = None) -> ToolResult:
        if session is None or self.config.stateless:
            one = PythonSession(self.config)
            try:
                return one.run(argument)
            finally:
                one.close()
        st = self._session_state(session)
        res = st.run(argument)
        if res.metadata.get("in_history"):
            # The session's call log lists the calls that are part of its state, once each.
            session.record_call(self.tag)
        return res

    def fork(self, session: Session, upto_call: int) -> Session:
        """A new session whose Python state equals ``session``'s after its first ``upto_call`` python calls."""
        child = Session()
        st = session.get_state(self.tag)
        if st is None:
            if upto_call != 0:
                raise ValueError(f"upto_call={upto_call} but the session made no python call")
            return child
        assert isinstance(st, PythonSession)
        child._states[self.tag] = st.fork(upto_call)
        child.calls = [self.tag] * upto_call
        return child

    def cancel(self, session: Session | None) -> None:
        if session is not None:
            st = session.get_state(self.tag)
            if isinstance(st, PythonSession):
                st.cancel()

    def info(self, probe: bool = True) -> dict[str, Any]:
        ns_name, prefix, reason = (
            probe_namespaces() if self.config.namespaces is not False else ("none", (), "off")
        )
        out: dict[str, Any] = super().info()
        out["config"] = asdict(self.config)
        out["config"]["env"] = sorted(self.config.env)  # names only
        out["namespaces"] = ns_name
        if reason:
            out["namespaces_unavailable_because"] = reason
        out["unshare"] = " ".join(prefix)
        if probe:
            s = PythonSession(self.config)
            try:
                s.start()
                p = s.protections
            finally:
                s.close()
            out["protections"] = {
                "network_isolated": "net" in ns_name,
                "filesystem_readonly_outside_workdir": bool(p.get("fs_readonly")),
                "capabilities_dropped": bool(p.get("caps_dropped")),
                "pid_namespace": bool(p.get("pid_namespace")),
                "process_watchdog": bool(p.get("process_watchdog")),
                "rlimits": p.get("rlimits", {}),
                "environment_scrubbed": True,
                "wall_clock_timeout_s": self.config.timeout,
                "output_cap_chars": self.config.max_output_chars,
            }
        return out
