"""Rollout fixtures: a scripted engine (appo.rollout.scripted) driving a two-call python trajectory through
the tiny model, and a real python tool runtime."""

from __future__ import annotations

import pytest

from appo.rollout.scripted import ScriptedEngine


def two_calls_script(text: str) -> str:
    """Think, python, think, python (using state of the first call), answer."""
    done = text.count("</result>")
    if done == 0:
        return "<think>I multiply first.</think>\n<python>x = 6 * 7\nprint(x)</python>"
    if done == 1:
        return "<think>Now add one.</think>\n<python>print(x + 1)</python>"
    return "<think>Done.</think>\n<answer>The answer is \\boxed{43}</answer>"


@pytest.fixture(scope="session")
def scripted_engine_class():
    return ScriptedEngine


@pytest.fixture(scope="session")
def scripted(tiny):
    model, tokenizer = tiny
    return ScriptedEngine(model, tokenizer, two_calls_script)


@pytest.fixture(scope="session")
def python_runtime():
    from appo.tools import build_tools

    registry = build_tools(
        {
            "call_limit": 5,
            "timeout": 30,
            "retry_count": 1,
            "tool_instances": {"python": {"class_path": "python", "params": {}}},
        }
    )
    runtime = registry.runtime()
    yield runtime
    runtime.close()
    registry.close()
