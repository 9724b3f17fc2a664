"""A scripted engine for tests and benchmarks: the real HF engine (KV caches, batching, stop strings,
log-probs and entropies) whose token choice follows a script instead of sampling, so exact tool-calling
trajectories can be driven through any model — a tiny random one included."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from appo.rollout.engine import HFEngine, RoundOutput, SamplingParams
from appo.rollout.engine import Sequence as EngineSequence


class ScriptedEngine(HFEngine):
    """``script(text)`` gets the decoded stream so far (prompt included) at the start of each round and
    returns the text the model writes in that round; EOS follows it. Stop strings still end the round."""

    def __init__(self, model: Any, tokenizer: Any, script: Callable[[str], str]) -> None:
        super().__init__(model, tokenizer)
        self.script = script
        self.rounds = 0
        self._forced: dict[int, list[int]] = {}
        self._pos: dict[int, int] = {}

    def sample(
        self,
        seqs: Sequence[EngineSequence],
        params: SamplingParams,
        max_new_tokens: Sequence[int],
        generator: torch.Generator | None = None,
    ) -> list[RoundOutput]:
        self.rounds += 1
        for seq in seqs:
            segment = self.script(self.tokenizer.decode(seq.history))
            tokens = self.tokenizer.encode(segment, add_special_tokens=False)
            self._forced[id(seq)] = [*tokens, self.tokenizer.eos_token_id]
            self._pos[id(seq)] = 0
        return super().sample(seqs, params, max_new_tokens, generator)

    def _choose(
        self,
        logits: torch.Tensor,
        params: SamplingParams,
        generator: torch.Generator | None,
        seqs: list[EngineSequence],
    ) -> torch.Tensor:
        out = []
        for seq in seqs:
            forced, pos = self._forced[id(seq)], self._pos[id(seq)]
            out.append(forced[min(pos, len(forced) - 1)])
            self._pos[id(seq)] = pos + 1
        return torch.tensor(out, device=logits.device)
