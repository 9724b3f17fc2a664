"""Rollout engine benchmark: ratios against baselines measured in the same run.

1. Multi-turn tool rollouts (batch B, R tool rounds): appo's HF engine (KV cache kept across rounds,
   finished rows leave the batch) vs a straightforward baseline that calls ``model.generate`` on the whole
   context every round. Both produce exactly the same tokens (a script forces the choice, the tool result is
   fixed), so the comparison is pure engine work. Reported: tokens/s of each and the ratio.
2. K branches from one split point: the shared prefix prefilled once and forked, vs K independent
   prefills of the same prefix. Reported: time of each and the ratio.

    python bench/rollout.py            # SmolLM2-135M-Instruct architecture, random weights
    python bench/rollout.py --model smollm2-135m-instruct   # the real embedded model
    python bench/rollout.py --quick    # small sizes, for the test suite
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from appo.rollout.engine import HFEngine, SamplingParams
from appo.rollout.loop import LoopConfig, RolloutRequest, run_rollouts
from appo.rollout.scripted import ScriptedEngine
from appo.tools.base import ToolResult

RESULT = "42"


def script(round_index: int, rounds: int) -> str:
    if round_index < rounds:
        return f"<think>Step {round_index}: I compute the next value with the tool.</think>\n<python>print({round_index} * 6 + 36)</python>"
    return (
        "<think>All steps are done; the value is known.</think>\n<answer>The answer is \\boxed{42}</answer>"
    )


class FixedTools:
    """A runtime whose every call returns the same text instantly (isolates engine work)."""

    def execute(self, calls):
        return [ToolResult(RESULT, True, 0.0) for _ in calls]


class ForceTokens:
    """A ``generate`` logits processor that forces a per-row token list."""

    def __init__(self, forced: list[list[int]], start: int) -> None:
        self.forced, self.start = forced, start

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - self.start
        out = torch.full_like(scores, float("-inf"))
        for row, tokens in enumerate(self.forced):
            out[row, tokens[min(step, len(tokens) - 1)]] = 0.0
        return out


def baseline_rollouts(model: Any, tok: Any, prompts: list[list[int]], rounds: int) -> int:
    """model.generate on the whole (left-padded) context every round; returns sampled tokens."""
    from transformers import LogitsProcessorList

    contexts = [list(p) for p in prompts]
    result_ids = tok.encode(f" <result>\n{RESULT}\n</result>", add_special_tokens=False)
    sampled = 0
    for r in range(rounds + 1):
        segment = tok.encode(script(r, rounds), add_special_tokens=False)
        if r == rounds:
            segment = [*segment, tok.eos_token_id]
        width = max(len(c) for c in contexts)
        ids = torch.full((len(contexts), width), tok.pad_token_id)
        mask = torch.zeros((len(contexts), width), dtype=torch.long)
        for i, c in enumerate(contexts):
            ids[i, width - len(c) :] = torch.tensor(c)
            mask[i, width - len(c) :] = 1
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=len(segment),
                min_new_tokens=len(segment),
                do_sample=False,
                logits_processor=LogitsProcessorList([ForceTokens([segment] * len(contexts), width)]),
                pad_token_id=tok.pad_token_id,
                eos_token_id=None,
            )
        sampled += len(segment) * len(contexts)
        for i in range(len(contexts)):
            contexts[i] += out[i, width:].tolist()
            if r < rounds:
                contexts[i] += result_ids
    return sampled


def bench_multiturn(model: Any, tok: Any, batch: int, rounds: int, group: int = 1) -> dict[str, float]:
    """``group`` rollouts per distinct prompt (RL samples several rollouts of each prompt)."""
    from appo.data.prompts import get_prompt

    # The RL system prompt (tag protocol with a worked example), as in training.
    messages = get_prompt("code_search").messages("Compute the value with the python tool.")
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)[
        "input_ids"
    ]
    prompts = [
        list(prompt) + tok.encode(f" Case {i // group}.", add_special_tokens=False) for i in range(batch)
    ]
    # `</result>` tags already in the prompt (the system prompt's worked example) are not rounds.
    in_prompt = tok.decode(prompt).count("</result>")
    engine = ScriptedEngine(model, tok, lambda text: script(text.count("</result>") - in_prompt, rounds))
    cfg = LoopConfig(
        max_response_length=4096,
        call_limit=rounds + 1,
        params=SamplingParams(do_sample=False, stop=("</python>", "</search>")),
    )
    t0 = time.perf_counter()
    result = run_rollouts(engine, [RolloutRequest(prompt_ids=p) for p in prompts], FixedTools(), cfg)
    ours = time.perf_counter() - t0
    ours_tokens = int(result.metrics["rollout/tokens_sampled"])
    assert all(len(t.tool_calls) == rounds for t in result.trajectories), (
        "script did not drive the tool rounds"
    )
    t0 = time.perf_counter()
    base_tokens = baseline_rollouts(model, tok, prompts, rounds)
    base = time.perf_counter() - t0
    return {
        "ours_tok_s": ours_tokens / ours,
        "base_tok_s": base_tokens / base,
        "ratio": (ours_tokens / ours) / (base_tokens / base),
        "tokens": ours_tokens,
        "base_tokens": base_tokens,
    }


def bench_branches(model: Any, tok: Any, k: int, prefix_len: int, new_tokens: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    prefix = torch.randint(200, 20000, (prefix_len,), generator=gen).tolist()
    engine = HFEngine(model, tok)
    params = SamplingParams(do_sample=False)

    def shared() -> None:
        root = engine.new_sequence(prefix)
        engine.prefill([root])
        engine.sample([root.fork() for _ in range(k)], params, [new_tokens] * k)

    def independent() -> None:
        seqs = [engine.new_sequence(prefix) for _ in range(k)]
        for s in seqs:  # distinct cache owners: each prefix is prefilled on its own
            s.pending = list(s.pending)
            engine.prefill([s])
        engine.sample(seqs, params, [new_tokens] * k)

    t0 = time.perf_counter()
    shared()
    t_shared = time.perf_counter() - t0
    t0 = time.perf_counter()
    independent()
    t_indep = time.perf_counter() - t0
    return {"shared_s": t_shared, "independent_s": t_indep, "ratio": t_indep / t_shared}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        default=None,
        help="a model dir or smollm2-135m-instruct (default: random "
        "weights with SmolLM2-135M's architecture)",
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--k", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.model:
        from appo.models import load_model

        model, tok = load_model(args.model, device="cpu", dtype="float32", quiet=True)
        name = args.model
    elif args.quick:
        from appo.models import tiny_model

        model, tok = tiny_model(seed=0, num_hidden_layers=2, hidden_size=64)
        name = "tiny random Llama (2 layers, hidden 64)"
    else:
        from appo.models import tiny_model

        model, tok = tiny_model(
            seed=0,
            num_hidden_layers=30,
            hidden_size=576,
            intermediate_size=1536,
            num_attention_heads=9,
            num_key_value_heads=3,
        )
        name = "SmolLM2-135M architecture, random weights"
    model.eval()
    batch, rounds = (4, 2) if args.quick else (args.batch, args.rounds)
    k, prefix_len, new_tokens = (4, 64, 4) if args.quick else (args.k, 512, 8)
    print(f"model: {name}; torch threads: {torch.get_num_threads()}")
    for group, label in ((1, "distinct prompts"), (4, "4 rollouts per prompt, as in RL")):
        mt = bench_multiturn(model, tok, batch, rounds, group=group)
        print(
            f"multi-turn rollouts (batch {batch}, {label}, {rounds} tool rounds, {mt['tokens']} sampled "
            f"tokens): appo engine {mt['ours_tok_s']:.1f} tok/s | model.generate per round "
            f"{mt['base_tok_s']:.1f} tok/s | ratio {mt['ratio']:.2f}x"
        )
    br = bench_branches(model, tok, k, prefix_len, new_tokens)
    print(
        f"{k} branches from one {prefix_len}-token prefix ({new_tokens} new tokens each): "
        f"shared prefill {br['shared_s']:.2f}s | independent prefills {br['independent_s']:.2f}s | "
        f"ratio {br['ratio']:.2f}x"
    )


if __name__ == "__main__":
    main()
