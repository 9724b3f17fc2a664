"""Create tools from the ``actor_rollout_ref.rollout.tools`` config subtree.

Shape (any Mapping, including an OmegaConf ``DictConfig``)::

    call_limit: 3          # max tool calls per trajectory (all tools together)
    max_workers: 64        # thread pool of the runtime
    timeout: 120           # per-call wall clock enforced by the runtime (seconds)
    retry_count: 3         # attempts per call (transient failures only)
    result_format: " <result>\n{result}\n</result>"
    # also accepted (used elsewhere / for compatibility): branch_call_counter, verbose_logging,
    # fail_on_error (tool loading errors always fail: correct first)
    tool_instances:
      python: {class_path: python, params: {}}
      search: {class_path: search, params: {providers: [cache, local], cache_file: null, corpus: null}}

``class_path`` is a short name (``python``, ``search``) or a dotted import path
(``pkg.module.Class`` or ``pkg.module:Class``). Reference class paths ending in ``PythonTool`` /
``BingSearchTool`` whose module is not importable map to the built-in tools.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from appo.config import ToolsConfig as _ToolsSchema
from appo.tools.base import Tool, ToolError
from appo.tools.grammar import stop_strings

# One source for the loop settings' defaults: the config schema of actor_rollout_ref.rollout.tools.
_DEFAULTS = _ToolsSchema()

__all__ = ["SHORT_NAMES", "ToolRegistry", "ToolsConfig", "build_tools", "resolve_tool_class"]


def _short_names() -> dict[str, type[Tool]]:
    from appo.tools.python_sandbox import PythonTool
    from appo.tools.search import SearchTool

    return {"python": PythonTool, "search": SearchTool}


SHORT_NAMES = ("python", "search")
_REFERENCE_ALIASES = {"PythonTool": "python", "BingSearchTool": "search"}


def _plain(obj: Any) -> Any:
    """Mapping/DictConfig/ListConfig → plain dict/list (without importing omegaconf eagerly)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, DictConfig | ListConfig):
            return OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def resolve_tool_class(class_path: str) -> type[Tool]:
    """Short name or dotted path → Tool subclass; clear error otherwise."""
    shorts = _short_names()
    if class_path in shorts:
        return shorts[class_path]
    if "." not in class_path and ":" not in class_path:
        near = difflib.get_close_matches(class_path, list(shorts), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ToolError(f"unknown tool class_path {class_path!r} (short names: {', '.join(shorts)}{hint})")
    mod_name, _, cls_name = class_path.replace(":", ".").rpartition(".")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        if cls_name in _REFERENCE_ALIASES:
            return shorts[_REFERENCE_ALIASES[cls_name]]
        raise ToolError(f"cannot import tool class {class_path!r}: {exc}") from exc
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise ToolError(f"module {mod_name!r} has no attribute {cls_name!r} (class_path {class_path!r})")
    if not (inspect.isclass(cls) and issubclass(cls, Tool)):
        raise ToolError(f"{class_path!r} is not a subclass of appo.tools.Tool")
    return cls


def _accepted_params(cls: type) -> list[str] | None:
    """Names of keyword params of ``cls.__init__`` (None: takes **kwargs we cannot enumerate)."""
    from appo.tools.python_sandbox import PythonSandboxConfig, PythonTool

    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    names = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        if issubclass(cls, PythonTool):
            return names + list(PythonSandboxConfig.__dataclass_fields__)
        return None
    return names


def make_tool(name: str, spec: Mapping[str, Any]) -> Tool:
    """One tool from ``{class_path, params}``; errors name the config key."""
    where = f"tool_instances.{name}"
    if not isinstance(spec, Mapping):
        raise ToolError(f"{where} must be a mapping with class_path and params, got {type(spec).__name__}")
    extra = set(spec) - {"class_path", "params"}
    if extra:
        raise ToolError(f"{where}: unknown key(s) {sorted(extra)} (expected class_path, params)")
    class_path = spec.get("class_path") or name
    cls = resolve_tool_class(str(class_path))
    params = dict(spec.get("params") or {})
    accepted = _accepted_params(cls)
    if accepted is not None:
        for key in params:
            if key not in accepted:
                near = difflib.get_close_matches(key, accepted, n=1)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                raise ToolError(f"{where}.params.{key}: unknown parameter for {cls.__name__}{hint}")
    try:
        return cls(**params)
    except ToolError as exc:
        raise ToolError(f"{where}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise ToolError(f"{where}: {exc}") from exc


@dataclass
class ToolsConfig:
    call_limit: int = _DEFAULTS.call_limit
    max_workers: int = _DEFAULTS.max_workers
    timeout: float = _DEFAULTS.timeout
    retry_count: int = _DEFAULTS.retry_count
    #: text appended after a tool call; ``{result}`` (or ``{text}``) is replaced by the tool output
    result_format: str = _DEFAULTS.result_format


class ToolRegistry(Mapping[str, Tool]):
    """Tools keyed by tag (in config order) plus the loop settings of the config subtree."""

    def __init__(self, tools: Mapping[str, Tool] | list[Tool], config: ToolsConfig | None = None) -> None:
        named = list(tools.items()) if isinstance(tools, Mapping) else [(t.tag, t) for t in tools]
        self._tools: dict[str, Tool] = {}
        #: config instance name -> tag (usually identical)
        self.names: dict[str, str] = {}
        for name, t in named:
            if t.tag in self._tools:
                raise ToolError(f"two tools use the tag {t.tag!r}")
            self._tools[t.tag] = t
            self.names[str(name)] = t.tag
        self.config = config or ToolsConfig()

    def lookup(self, name: str) -> Tool:
        """A tool by tag or by its config instance name."""
        if name in self._tools:
            return self._tools[name]
        if name in self.names:
            return self._tools[self.names[name]]
        return self[name]  # raises a KeyError with a suggestion

    def __getitem__(self, tag: str) -> Tool:
        try:
            return self._tools[tag]
        except KeyError:
            near = difflib.get_close_matches(tag, list(self._tools), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise KeyError(
                f"no tool with tag {tag!r} (configured: {', '.join(self._tools) or 'none'}{hint})"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._tools)

    def __len__(self) -> int:
        return len(self._tools)

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(self._tools)

    @property
    def stop_strings(self) -> list[str]:
        return stop_strings(self._tools)

    def runtime(self, **kwargs: Any) -> Any:
        """A :class:`~appo.tools.runtime.ToolRuntime` using this registry's settings."""
        from appo.tools.runtime import ToolRuntime

        return ToolRuntime(self, **kwargs)

    def close(self) -> None:
        for t in self._tools.values():
            t.close()


def build_tools(tools_cfg: Mapping[str, Any] | None) -> ToolRegistry:
    """Create all tools of ``actor_rollout_ref.rollout.tools`` (see module doc)."""
    cfg = _plain(tools_cfg) if tools_cfg is not None else {}
    if not isinstance(cfg, Mapping):
        raise ToolError(f"tools config must be a mapping, got {type(cfg).__name__}")
    known = {
        "call_limit",
        "max_workers",
        "timeout",
        "retry_count",
        "tool_instances",
        "result_format",
        "branch_call_counter",
        "verbose_logging",
        "fail_on_error",
    }
    for key in cfg:
        if key not in known:
            near = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ToolError(f"tools.{key}: unknown key{hint}")
    settings = ToolsConfig(
        call_limit=int(cfg.get("call_limit", _DEFAULTS.call_limit)),
        max_workers=int(cfg.get("max_workers", _DEFAULTS.max_workers)),
        timeout=float(cfg.get("timeout", _DEFAULTS.timeout)),
        retry_count=int(cfg.get("retry_count", _DEFAULTS.retry_count)),
        result_format=str(cfg.get("result_format", _DEFAULTS.result_format)),
    )
    if (
        settings.max_workers < 1
        or settings.timeout <= 0
        or settings.call_limit < 0
        or settings.retry_count < 0
    ):
        raise ToolError(f"tools: invalid settings {settings}")
    instances = cfg.get("tool_instances") or {}
    if not isinstance(instances, Mapping):
        raise ToolError("tools.tool_instances must be a mapping name -> {class_path, params}")
    tools = {str(name): make_tool(str(name), spec) for name, spec in instances.items()}
    return ToolRegistry(tools, settings)
