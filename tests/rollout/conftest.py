"""A scripted engine: the real HF engine (KV caches, batching, stop strings, log-probs) whose token
choice follows a script, so tests can drive exact tool-calling trajectories through a tiny model."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from appo.rollout.engine import HFEngine, SamplingParams


class ScriptedEngine(HFEngine):
    def __init__(self, model, tokenizer, script: Callable[[str], str]) -> None:
        super().__init__(model, tokenizer)
        self.script = script
        self._forced: dict[int, list[int]] = {}
        self._pos: dict[int, int] = {}
        self.prompt_len: dict[int, int] = {}

    def sample(self, seqs, params: SamplingParams, max_new_tokens, generator=None):
        for seq in seqs:
            text = self.tokenizer.decode(seq.history)
            segment = self.script(text)
            self._forced[id(seq)] = [
                *self.tokenizer.encode(segment, add_special_tokens=False),
                self.tokenizer.eos_token_id,
            ]
            self._pos[id(seq)] = 0
        return super().sample(seqs, params, max_new_tokens, generator)

    def _choose(self, logits, params, generator, seqs):
        out = []
        for seq in seqs:
            forced, pos = self._forced[id(seq)], self._pos[id(seq)]
            out.append(forced[min(pos, len(forced) - 1)])
            self._pos[id(seq)] = pos + 1
        return torch.tensor(out, device=logits.device)


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
