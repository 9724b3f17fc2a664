"""Tools of tool-using agents: tag grammar, sandboxed stateful Python, offline-first search, runtime.

Typical use::

    from appo.tools import build_tools, Session, ToolCall

    registry = build_tools(cfg.actor_rollout_ref.rollout.tools)
    runtime = registry.runtime()
    with Session() as s:
        res = runtime.run("python", "x = 2\\nx * 21", s)
        text = runtime.format(res)          # ' <result>\\n42\\n</result>'
"""

from appo.tools.base import Session, SessionState, Tool, ToolError, ToolResult
from appo.tools.grammar import (
    DEFAULT_RESULT_TEMPLATE,
    EVAL_RESULT_TEMPLATE,
    TagScanner,
    ToolCallParse,
    count_tool_calls,
    extract_tool_call,
    format_result,
    parse,
    stop_strings,
)
from appo.tools.python_sandbox import PythonSandboxConfig, PythonSession, PythonTool, probe_namespaces
from appo.tools.registry import ToolRegistry, ToolsConfig, build_tools, resolve_tool_class
from appo.tools.runtime import ToolCall, ToolRuntime
from appo.tools.search import SearchTool, build_index, corpus_from_search_cache, normalize_query

__all__ = [
    "DEFAULT_RESULT_TEMPLATE",
    "EVAL_RESULT_TEMPLATE",
    "PythonSandboxConfig",
    "PythonSession",
    "PythonTool",
    "SearchTool",
    "Session",
    "SessionState",
    "TagScanner",
    "Tool",
    "ToolCall",
    "ToolCallParse",
    "ToolError",
    "ToolRegistry",
    "ToolResult",
    "ToolRuntime",
    "ToolsConfig",
    "build_index",
    "build_tools",
    "corpus_from_search_cache",
    "count_tool_calls",
    "extract_tool_call",
    "format_result",
    "normalize_query",
    "parse",
    "probe_namespaces",
    "resolve_tool_class",
    "stop_strings",
]
