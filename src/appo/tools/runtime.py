"""Concurrent execution of the tool calls of a rollout round.

All pending calls of a round run in one thread pool (``max_workers``). Every call gets a wall-clock
``timeout`` counted from the moment it starts running (not from when it was queued): when it expires
the caller gets a timeout result at once and the tool's :meth:`~appo.tools.base.Tool.cancel` hook is
called (the Python tool kills the session's worker). Failed attempts are retried up to
``retry_count`` attempts in total, but only when the failure is transient (an exception from the
tool, or ``metadata["retryable"]``) — code that ran and raised is never re-executed.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from appo.tools.base import Session, ToolResult
from appo.tools.grammar import DEFAULT_RESULT_TEMPLATE, format_result
from appo.tools.registry import ToolRegistry

__all__ = ["ToolCall", "ToolMetrics", "ToolRuntime"]


@dataclass
class ToolCall:
    tag: str
    argument: str
    session: Session | None = None
    id: Any = None


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100.0 * (len(s) - 1))))
    return float(s[k])


@dataclass
class ToolMetrics:
    calls: int = 0
    ok: int = 0
    failures: int = 0
    timeouts: int = 0
    retries: int = 0
    cache_hits: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=10000))

    def summary(self) -> dict[str, float]:
        lat = list(self.latencies)
        return {
            "calls": self.calls,
            "ok": self.ok,
            "failures": self.failures,
            "timeouts": self.timeouts,
            "retries": self.retries,
            "cache_hits": self.cache_hits,
            "latency_p50": _percentile(lat, 50),
            "latency_p95": _percentile(lat, 95),
            "latency_mean": sum(lat) / len(lat) if lat else 0.0,
        }


class ToolRuntime:
    """Runs tool calls concurrently with timeouts, retries and per-tool metrics."""

    def __init__(
        self,
        registry: ToolRegistry,
        max_workers: int | None = None,
        timeout: float | None = None,
        retry_count: int | None = None,
        result_template: str | None = None,
        sanitize: bool = True,
        retry_backoff: float = 0.0,
    ) -> None:
        cfg = registry.config
        self.registry = registry
        self.max_workers = int(max_workers or cfg.max_workers)
        self.timeout = float(timeout if timeout is not None else cfg.timeout)
        self.attempts = max(1, int(retry_count if retry_count is not None else cfg.retry_count))
        self.result_template = result_template or cfg.result_format or DEFAULT_RESULT_TEMPLATE
        self.sanitize = sanitize
        self.retry_backoff = retry_backoff
        self._pool = cf.ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="appo-tool")
        self._metrics: dict[str, ToolMetrics] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------
    def format(self, result: ToolResult | str) -> str:
        """The text to append to the trajectory (default `` <result>\\n{result}\\n</result>``)."""
        text = result.text if isinstance(result, ToolResult) else result
        return format_result(text, self.result_template, sanitize=self.sanitize)

    def _attempts(self, call: ToolCall, started: list[float]) -> ToolResult:
        started.append(time.monotonic())
        t0 = started[0]
        if call.tag not in self.registry:
            return ToolResult(f"Error: unknown tool {call.tag!r}", False, 0.0, {"error_kind": "unknown_tool"})
        tool = self.registry[call.tag]
        res: ToolResult | None = None
        attempt = 0
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                if time.monotonic() - t0 >= self.timeout:
                    break
                if self.retry_backoff:
                    time.sleep(self.retry_backoff * 2 ** (attempt - 2))
            try:
                res = tool.run(call.argument, call.session)
            except Exception as exc:
                res = ToolResult(
                    f"Error: Tool({call.tag}) execution failed with message: {exc}",
                    False,
                    0.0,
                    {"error_kind": "exception", "retryable": True},
                )
            if res.ok or not res.metadata.get("retryable"):
                break
        assert res is not None
        res.metadata["attempts"] = attempt
        res.latency = time.monotonic() - t0
        return res

    def _record(self, tag: str, res: ToolResult) -> None:
        with self._lock:
            m = self._metrics.setdefault(tag, ToolMetrics())
            m.calls += 1
            m.ok += bool(res.ok)
            m.failures += not res.ok
            m.timeouts += bool(res.metadata.get("timeout"))
            m.retries += max(0, int(res.metadata.get("attempts", 1)) - 1)
            m.cache_hits += bool(res.metadata.get("cache_hit"))
            m.latencies.append(res.latency)

    # How long to wait, after a timeout, for a cancelled call of a stateful tool to return, so that it
    # cannot change its session after this round (the python tool's cancel kills the worker: it returns at
    # once). Stateless calls are not waited for: a stuck one never delays the loop.
    CANCEL_GRACE_S = 5.0

    def execute(self, calls: Sequence[ToolCall]) -> list[ToolResult]:
        """Run all ``calls`` concurrently; results in the same order. Never raises for tool failures."""
        starts: list[list[float]] = [[] for _ in calls]
        futures = {self._pool.submit(self._attempts, c, starts[i]): i for i, c in enumerate(calls)}
        results: list[ToolResult | None] = [None] * len(calls)
        cancelled: list[cf.Future] = []
        pending = set(futures)
        while pending:
            done, pending = cf.wait(pending, timeout=0.02, return_when=cf.FIRST_COMPLETED)
            for f in done:
                results[futures[f]] = f.result()
            now = time.monotonic()
            for f in list(pending):
                i = futures[f]
                st = starts[i]
                if st and now - st[0] > self.timeout:
                    pending.discard(f)
                    c = calls[i]
                    results[i] = ToolResult(
                        f"Error: Tool({c.tag}) timed out after {self.timeout:g}s",
                        False,
                        now - st[0],
                        {"error_kind": "timeout", "timeout": True},
                    )
                    tool = self.registry.get(c.tag)
                    if tool is not None:
                        with contextlib.suppress(Exception):
                            tool.cancel(c.session)
                    if c.session is not None and c.session.get_state(c.tag) is not None:
                        cancelled.append(f)  # a stateful call: wait until it can no longer change the state
        if cancelled:
            done, _ = cf.wait(cancelled, timeout=self.CANCEL_GRACE_S)
            for f in done:
                late = f.result()
                if late.metadata.get("in_history"):  # it completed before the cancel: it is part of the state
                    results[futures[f]] = late
        out: list[ToolResult] = []
        for c, r in zip(calls, results, strict=True):
            assert r is not None
            self._record(c.tag, r)
            out.append(r)
        return out

    def run(self, tag: str, argument: str, session: Session | None = None) -> ToolResult:
        """One call (with the same timeout, retries and metrics)."""
        return self.execute([ToolCall(tag, argument, session)])[0]

    # ------------------------------------------------------------------------------------------
    def metrics(self) -> dict[str, dict[str, float]]:
        """Per-tool counters and latency percentiles (seconds)."""
        with self._lock:
            return {tag: m.summary() for tag, m in self._metrics.items()}

    def flat_metrics(self, prefix: str = "tools") -> dict[str, float]:
        """``{"tools/python/calls": …, …}`` for metric loggers."""
        return {f"{prefix}/{tag}/{k}": v for tag, d in self.metrics().items() for k, v in d.items()}

    def reset_metrics(self) -> None:
        with self._lock:
            self._metrics.clear()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> ToolRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
