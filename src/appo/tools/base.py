"""Tool protocol: :class:`Tool`, :class:`ToolResult` and the per-trajectory :class:`Session`."""

from __future__ import annotations

import contextlib
import itertools
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

__all__ = ["Session", "SessionState", "Tool", "ToolError", "ToolResult"]


class ToolError(RuntimeError):
    """A tool could not be created or could not run at all (not: the tool reported an error)."""


@dataclass
class ToolResult:
    """Outcome of one tool call.

    ``ok`` is False when the call failed (exception in user code, timeout, no provider answered…);
    ``text`` is then a message meant for the model. ``metadata`` carries machine-readable details:
    ``error_kind`` (``exception``, ``timeout``, ``unavailable``, ``transient``, …), ``retryable``
    (the runtime retries only those), ``cache_hit``, ``provider``, ``truncated``…
    """

    text: str
    ok: bool
    latency: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class SessionState(Protocol):
    """Per-session state a stateful tool keeps in a :class:`Session`."""

    def fork(self, upto_call: int) -> SessionState: ...

    def close(self) -> None: ...


_session_ids = itertools.count()


class Session:
    """State of one trajectory, shared by all tools it calls.

    Stateful tools (the Python sandbox) store their state here under their tag. ``calls`` logs, in order
    and once each, the tags of the calls that are part of that state (a stateful tool records a call
    when it completed; a timed-out or discarded call and a stateless tool's call are not logged), so
    :meth:`fork` can give a branch exactly the state that the first ``upto_call`` logged calls created.
    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, id: str | None = None) -> None:
        self.id = id if id is not None else f"session-{next(_session_ids)}"
        self.calls: list[str] = []
        self._states: dict[str, SessionState] = {}
        self._lock = threading.Lock()
        self.closed = False

    def state(self, key: str, factory: Callable[[], SessionState]) -> SessionState:
        """The state stored under ``key``, created by ``factory`` on first use."""
        with self._lock:
            if self.closed:
                raise ToolError(f"session {self.id!r} is closed")
            st = self._states.get(key)
            if st is None:
                st = self._states[key] = factory()
            return st

    def get_state(self, key: str) -> SessionState | None:
        return self._states.get(key)

    def record_call(self, tag: str) -> int:
        """Log one call of ``tag``; returns its index among all calls of this session."""
        with self._lock:
            self.calls.append(tag)
            return len(self.calls) - 1

    def fork(self, upto_call: int | None = None, id: str | None = None) -> Session:
        """A new session whose state equals this one's after its first ``upto_call`` calls (all tools)."""
        k = len(self.calls) if upto_call is None else upto_call
        if not 0 <= k <= len(self.calls):
            raise ValueError(f"upto_call={k} outside 0..{len(self.calls)} (calls made so far)")
        child = Session(id=id)
        child.calls = list(self.calls[:k])
        for key, st in list(self._states.items()):
            local = sum(1 for tag in self.calls[:k] if tag == key)
            child._states[key] = st.fork(local)
        return child

    def close(self) -> None:
        with self._lock:
            self.closed = True
            states, self._states = list(self._states.values()), {}
        for st in states:
            with contextlib.suppress(Exception):  # closing must never raise into the trainer
                st.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Session(id={self.id!r}, calls={len(self.calls)})"


class Tool(ABC):
    """A tool the model calls with ``<tag>argument</tag>``.

    Subclasses set ``tag`` and implement :meth:`run`. ``run`` must not raise for problems caused by
    the argument (return ``ok=False`` instead); raising is reserved for "could not run at all".
    """

    tag: ClassVar[str] = ""
    #: short name usable as ``class_path`` in the config (``python``, ``search``)
    short_name: ClassVar[str] = ""

    def __init__(self, tag: str | None = None) -> None:
        if tag is not None:
            self.tag = tag  # type: ignore[misc]
        if not self.tag:
            raise ToolError(f"{type(self).__name__} has no tag")

    @abstractmethod
    def run(self, argument: str, session: Session | None = None) -> ToolResult:
        """Execute one call. ``session`` is the trajectory's session (None: a one-off call)."""

    def cancel(self, session: Session | None) -> None:  # noqa: B027 - optional hook
        """Best-effort: stop a call of this session that is still running (after a runtime timeout)."""

    def info(self) -> dict[str, Any]:
        """Human/machine readable description of the tool's configuration and protections."""
        return {"tag": self.tag, "class": f"{type(self).__module__}.{type(self).__qualname__}"}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources held by the tool (not by sessions)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(tag={self.tag!r})"
