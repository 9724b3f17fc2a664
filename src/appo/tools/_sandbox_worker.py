"""Sandbox worker: runs untrusted Python for one session, inside its own namespaces.

This file is executed as a *script* (``python -I -S? _sandbox_worker.py CONFIG_JSON``) by
:mod:`appo.tools.python_sandbox`; it must only import the standard library and never ``appo``.

Protocol (newline-delimited JSON, on the file descriptors that were stdin/stdout at start):
  worker → parent  {"hello": {...protections...}}
  parent → worker  {"code": str, "max_output": int}
  worker → parent  {"output": str, "truncated": bool, "bytes": int, "error": str|null,
                    "error_kind": str|null}

User code never sees the protocol descriptors through ``sys.stdout``: fd 1 and 2 are pointed at a
per-call pipe whose reader thread collects (and caps) everything written, including output of
child processes.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import ctypes
import ctypes.util
import io
import json
import linecache
import os
import random
import resource
import signal
import sys
import threading
import time
import traceback

# Linux constants (x86_64 / aarch64 share these)
MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
ST_NOSUID, ST_NODEV, ST_NOEXEC = 2, 4, 8
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
SYS_MOUNT_SETATTR = 442
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
PR_SET_NO_NEW_PRIVS = 38
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
# SECBIT_NOROOT | NOROOT_LOCKED | NO_SETUID_FIXUP | NO_SETUID_FIXUP_LOCKED | KEEP_CAPS_LOCKED:
# uid 0 inside the namespace no longer gains capabilities on exec.
SECUREBITS = 0x2F


class OutputLimitExceeded(BaseException):
    """Raised in the main thread when a call writes more than the hard output limit."""


class _Capture:
    """Collects what is written to fd 1/2 during one call, keeping at most ``keep`` bytes."""

    def __init__(self, read_fd: int, keep: int, hard_limit: int) -> None:
        self.fd = read_fd
        self.keep = keep
        self.hard_limit = hard_limit
        self.buf = bytearray()
        self.total = 0
        self.signalled = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            self.total += len(chunk)
            room = self.keep - len(self.buf)
            if room > 0:
                self.buf += chunk[:room]
            if self.total > self.hard_limit and not self.signalled:
                self.signalled = True
                import _thread

                _thread.interrupt_main(signal.SIGUSR1)
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _mount_points() -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            parts = line.split()
            points.append(parts[4].replace("\\040", " "))
    return points


def _make_fs_readonly(libc: ctypes.CDLL, workdir: str) -> str:
    """Make every mount read-only except ``workdir``; returns the mechanism used ('' = failed)."""
    if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return ""
    wd = workdir.encode()
    if libc.mount(wd, wd, None, MS_BIND | MS_REC, None) != 0:
        return ""
    # fresh private tmpfs for /dev/shm (multiprocessing needs it); failure is harmless
    libc.mount(b"tmpfs", b"/dev/shm", b"tmpfs", MS_NOSUID | MS_NODEV, b"size=64m")
    attr = _MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    rc = libc.syscall(
        SYS_MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr)
    )
    if rc == 0:
        clr = _MountAttr(0, MOUNT_ATTR_RDONLY, 0, 0)
        ok = libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, wd, 0, ctypes.byref(clr), ctypes.sizeof(clr)) == 0
        libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, b"/dev/shm", 0, ctypes.byref(clr), ctypes.sizeof(clr))
        return "mount_setattr" if ok else ""
    # older kernels: remount each mount point read-only, keeping its locked flags
    failures = 0
    for mp in _mount_points():
        if mp == workdir or mp == "/dev/shm":
            continue
        try:
            st = os.statvfs(mp)
        except OSError:
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for st_flag, ms_flag in ((ST_NOSUID, MS_NOSUID), (ST_NODEV, MS_NODEV), (ST_NOEXEC, MS_NOEXEC)):
            if st.f_flag & st_flag:
                flags |= ms_flag
        if libc.mount(None, mp.encode(), None, flags, None) != 0:
            failures += 1
    return "remount" if failures == 0 else ""


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _drop_capabilities(libc: ctypes.CDLL) -> bool:
    """Drop every capability (also across exec of children) so code cannot undo the mounts."""
    libc.prctl(PR_SET_SECUREBITS, SECUREBITS, 0, 0, 0)
    for cap in range(64):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    hdr = _CapHeader(0x20080522, 0)
    data = (_CapData * 2)()
    ok = libc.capset(ctypes.byref(hdr), data) == 0
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    return ok


def _process_watchdog(max_procs: int, proto_out: int, interval: float = 0.02) -> None:
    """Inside a private PID namespace, /proc lists only our processes: kill them all if too many."""
    while True:
        time.sleep(interval)
        try:
            n = sum(1 for e in os.listdir("/proc") if e.isdigit())
        except OSError:
            continue
        if n > max_procs:
            with contextlib.suppress(OSError):
                os.kill(-1, signal.SIGKILL)  # every process of the namespace except ourselves
            msg = {
                "output": "",
                "truncated": False,
                "bytes": 0,
                "error": f"Process limit exceeded ({n} > {max_procs} processes); the session was killed.",
                "error_kind": "process_limit",
                "fatal": True,
            }
            try:
                os.write(proto_out, (json.dumps(msg) + "\n").encode())
            finally:
                os._exit(3)


def _set_limits(cfg: dict) -> dict:
    active = {}
    limits = {
        "RLIMIT_AS": cfg.get("memory_bytes"),
        "RLIMIT_FSIZE": cfg.get("file_size_bytes"),
        "RLIMIT_NPROC": cfg.get("max_processes"),
        "RLIMIT_CORE": 0,
        "RLIMIT_NOFILE": cfg.get("max_open_files"),
    }
    for name, value in limits.items():
        if value is None:
            continue
        try:
            resource.setrlimit(getattr(resource, name), (int(value), int(value)))
            active[name] = int(value)
        except (ValueError, OSError):
            pass
    return active


def _prepare(code: str, counter: int) -> tuple[object, str]:
    """Compile ``code``; a trailing bare expression that is not ``print(...)`` gets printed."""
    filename = f"<python-{counter}>"
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    try:
        tree = ast.parse(code, filename=filename, mode="exec")
    except SyntaxError:
        return compile(code, filename, "exec"), filename  # raises again, with a proper message
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        value = tree.body[-1].value
        is_print = (
            isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "print"
        )
        if not is_print:
            call = ast.Call(func=ast.Name(id="print", ctx=ast.Load()), args=[value], keywords=[])
            tree.body[-1] = ast.copy_location(ast.Expr(value=call), tree.body[-1])
            ast.fix_missing_locations(tree)
    return compile(tree, filename, "exec"), filename


def _format_error(exc: BaseException, max_lines: int) -> str:
    tb = exc.__traceback__
    # skip worker frames: keep frames from the user's code onwards
    while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<python-"):
        tb = tb.tb_next
    lines = "".join(traceback.format_exception(type(exc), exc, tb)).rstrip("\n").split("\n")
    if len(lines) > max_lines:
        lines = lines[-max_lines:]
    return "\n".join(lines)


def _set_cpu_limit(seconds: int | None) -> None:
    """Per-call CPU budget: the soft RLIMIT_CPU is cumulative, so move it past what was used."""
    if not seconds:
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = int(usage.ru_utime + usage.ru_stime) + 1
    try:
        _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
        new = used + int(seconds)
        if hard != resource.RLIM_INFINITY:
            new = min(new, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (new, hard))
    except (ValueError, OSError):
        pass


def main() -> None:
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)  # never let user code import the package's own modules by accident
    cfg = json.loads(sys.argv[1])
    workdir = cfg["workdir"]
    proto_in = os.dup(0)
    proto_out = os.dup(1)
    os.set_inheritable(proto_in, False)
    os.set_inheritable(proto_out, False)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)

    protections: dict[str, object] = {"pid": os.getpid()}
    libc = _libc()
    in_userns = bool(cfg.get("userns"))
    if in_userns and cfg.get("mountns") and libc is not None:
        protections["fs_readonly"] = _make_fs_readonly(libc, workdir) or False
    else:
        protections["fs_readonly"] = False
    os.chdir(workdir)
    if in_userns and libc is not None:
        protections["caps_dropped"] = _drop_capabilities(libc)
    protections["rlimits"] = _set_limits(cfg)
    if cfg.get("cpu_seconds"):
        protections["rlimits"]["RLIMIT_CPU_per_call"] = int(cfg["cpu_seconds"])
    pidns = bool(cfg.get("pidns")) and os.getpid() == 1
    protections["pid_namespace"] = pidns
    if pidns and cfg.get("max_processes"):
        threading.Thread(
            target=_process_watchdog, args=(int(cfg["max_processes"]), proto_out), daemon=True
        ).start()
        protections["process_watchdog"] = True

    def _on_output_limit(signum: int, frame: object) -> None:
        raise OutputLimitExceeded(f"output limit exceeded ({cfg['output_hard_limit']} bytes)")

    signal.signal(signal.SIGUSR1, _on_output_limit)
    sys.stdout = io.TextIOWrapper(
        os.fdopen(1, "wb", closefd=False), encoding="utf-8", errors="replace", write_through=True
    )
    sys.stderr = io.TextIOWrapper(
        os.fdopen(2, "wb", closefd=False), encoding="utf-8", errors="replace", write_through=True
    )
    random.seed(0)
    namespace: dict[str, object] = {"__name__": "__main__", "__builtins__": builtins}
    worker_pid = os.getpid()
    reader = os.fdopen(proto_in, "rb", buffering=0)

    def send(obj: dict) -> None:
        data = (json.dumps(obj) + "\n").encode()
        view = memoryview(data)
        while view:
            n = os.write(proto_out, view)
            view = view[n:]

    send({"hello": protections})
    counter = 0
    pending = b""
    while True:
        while b"\n" not in pending:
            chunk = reader.read(1 << 20)
            if not chunk:
                os._exit(0)
            pending += chunk
        line, pending = pending.split(b"\n", 1)
        request = json.loads(line)
        counter += 1
        max_output = int(request.get("max_output", 20000))
        r, w = os.pipe()
        cap = _Capture(r, keep=max_output * 4 + 16, hard_limit=int(cfg["output_hard_limit"]))
        os.dup2(w, 1)
        os.dup2(w, 2)
        os.close(w)
        error = error_kind = None
        _set_cpu_limit(cfg.get("cpu_seconds"))
        try:
            compiled, _ = _prepare(request["code"], counter)
            exec(compiled, namespace)
        except OutputLimitExceeded as exc:
            error, error_kind = f"{exc}; the call was stopped.", "output_limit"
        except SystemExit as exc:
            if exc.code not in (None, 0):
                error, error_kind = _format_error(exc, int(cfg.get("max_traceback_lines", 20))), "exception"
        except BaseException as exc:
            error, error_kind = _format_error(exc, int(cfg.get("max_traceback_lines", 20))), "exception"
        if os.getpid() != worker_pid:  # a fork()ed child of user code must never answer
            os._exit(0)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        cap.thread.join(timeout=0.5)  # background children may keep the pipe open: don't wait
        raw = bytes(cap.buf)
        text = raw.decode("utf-8", errors="replace")
        truncated = len(text) > max_output or cap.total > len(raw)
        send(
            {
                "output": text[:max_output],
                "truncated": truncated,
                "bytes": cap.total,
                "error": error,
                "error_kind": error_kind,
            }
        )


if __name__ == "__main__":
    main()
