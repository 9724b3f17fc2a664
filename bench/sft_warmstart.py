"""Warm-start benchmark: train the ``sft_default`` preset on the embedded SmolLM2-135M-Instruct, then
measure how many of 50 fresh synthetic prompts (another seed) get a response that passes the
deep-research format check — for the base model (baseline, same process) and the warm-started one.

Generation is a plain multi-turn tool loop of its own (HF ``generate`` in batches, stopping at
``</python>`` / ``</search>`` / EOS, executing the call with the real tools and appending
`` <result>\\n…\\n</result>``), greedy and sampled (T = 1, as RL rollouts).

    python bench/sft_warmstart.py [--n 50] [--seed 777] [--force] [--base] [--modes greedy,sampled_t1]
                                  [--out runs/bench/sft_warmstart] [sft.key=value ...]

On 2 busy CPU cores the evaluation dominates (each response may run to 448 tokens): ~10-30 min per
model and mode for 50 prompts; ``--base`` (the untrained model, which rarely stops early) doubles it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

STOPS = ("</python>", "</search>")


def build_runtime(corpus_path: Path, cfg: Any) -> tuple[Any, Any]:
    from appo.tools import build_tools

    tools = {
        "call_limit": 3,
        "timeout": 30,
        "retry_count": 1,
        "result_format": str(cfg.actor_rollout_ref.rollout.tools.result_format),
        "tool_instances": {
            "python": {"class_path": "python", "params": {}},
            "search": {
                "class_path": "search",
                "params": {
                    "providers": ["local"],
                    "corpus": str(corpus_path),
                    "top_k": 3,
                    "live_cache": False,
                },
            },
        },
    }
    registry = build_tools(tools)
    return registry, registry.runtime()


def cut_at_stop(tokenizer: Any, new_ids: list[int]) -> tuple[list[int], str | None]:
    """Shortest prefix of ``new_ids`` whose text contains a stop string; (ids, stop) or (ids, None)."""
    text = tokenizer.decode(new_ids)
    hits = [(text.find(s), s) for s in STOPS if s in text]
    if not hits:
        return new_ids, None
    _, stop = min(hits)
    for k in range(1, len(new_ids) + 1):
        if stop in tokenizer.decode(new_ids[:k]):
            return new_ids[:k], stop
    return new_ids, stop


@torch.no_grad()
def tool_loop(
    model: Any,
    tokenizer: Any,
    runtime: Any,
    prompts: list[list[int]],
    *,
    sample: bool,
    max_response: int = 448,
    call_limit: int = 3,
    batch_size: int = 16,
    seed: int = 0,
) -> list[str]:
    from appo.tools import Session

    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    responses: list[list[int]] = [[] for _ in prompts]
    calls = [0] * len(prompts)
    active = list(range(len(prompts)))
    torch.manual_seed(seed)
    while active:
        still: list[int] = []
        for j in range(0, len(active), batch_size):
            rows = active[j : j + batch_size]
            seqs = [prompts[i] + responses[i] for i in rows]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, s in enumerate(seqs):
                ids[r, width - len(s) :] = torch.tensor(s)
                mask[r, width - len(s) :] = 1
            budget = max_response - min(len(responses[i]) for i in rows)
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max(1, min(budget, 256)),
                do_sample=sample,
                temperature=1.0 if sample else None,
                top_p=1.0 if sample else None,
                top_k=0 if sample else None,
                stop_strings=list(STOPS),
                tokenizer=tokenizer,
                pad_token_id=pad,
                eos_token_id=eos,
            )
            for r, i in enumerate(rows):
                new = out[r, width:].tolist()
                room = max_response - len(responses[i])
                eos_at = new.index(eos) if eos in new else None  # pad = eos after a stop string too
                head, stop = cut_at_stop(tokenizer, new[:eos_at] if eos_at is not None else new)
                if stop is None:
                    responses[i].extend(([*head, eos] if eos_at is not None else head)[:room])
                    if eos_at is None and len(responses[i]) < max_response:
                        still.append(i)  # round budget used up, response budget left
                    continue
                responses[i].extend(head[:room])
                if len(responses[i]) >= max_response:
                    continue  # length: finished
                if calls[i] >= call_limit:
                    responses[i].append(eos)
                    continue
                text = tokenizer.decode(responses[i])
                tag = stop[2:-1]
                start = text.rfind(f"<{tag}>")
                arg = text[start + len(tag) + 2 : text.rfind(stop)].strip() if start >= 0 else ""
                if not arg:
                    continue  # no call content: the sample stops (as the reference)
                calls[i] += 1
                with Session() as session:
                    res = runtime.run(tag, arg, session)
                result_ids = tokenizer(runtime.format(res), add_special_tokens=False)["input_ids"]
                responses[i].extend(result_ids[: max_response - len(responses[i])])
                if len(responses[i]) < max_response:
                    still.append(i)
        active = still
    return [tokenizer.decode(r, skip_special_tokens=True) for r in responses]


def score(responses: list[str], examples: list[Any]) -> dict[str, Any]:
    from appo.rewards import deep_research

    results = [deep_research(r, ex.ground_truth) for r, ex in zip(responses, examples, strict=True)]
    n = len(results)
    fmt = sum(r.score > -1 for r in results)
    correct = sum(r.components.get("f1", 0.0) >= 1.0 for r in results)
    return {
        "n": n,
        "format_pass": fmt,
        "format_share": fmt / n,
        "correct_share": correct / n,
        "mean_score": sum(r.score for r in results) / n,
    }


def evaluate(
    model_dir: str, cfg: Any, n: int, seed: int, label: str, out_dir: Path, modes: list[str]
) -> dict[str, Any]:
    from appo.data import apply_chat_template, generate_synthetic
    from appo.models import load_model

    model, tokenizer = load_model(model_dir, dtype="float32", device="cpu", quiet=True)
    model.eval()
    synth = generate_synthetic(n - n // 2, n // 2, seed=seed)
    report: dict[str, Any] = {"model": model_dir}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = synth.write_corpus(Path(tmp) / "corpus.jsonl")
        registry, runtime = build_runtime(corpus, cfg)
        prompts = [
            tokenizer(apply_chat_template(tokenizer, ex.messages), add_special_tokens=False)["input_ids"]
            for ex in synth.examples
        ]
        for mode in modes:
            sample = mode == "sampled_t1"
            t0 = time.perf_counter()
            responses = tool_loop(model, tokenizer, runtime, prompts, sample=sample, seed=seed)
            stats = score(responses, synth.examples)
            stats["seconds"] = round(time.perf_counter() - t0, 1)
            report[mode] = stats
            print(f"[{label}] {mode}: {json.dumps(stats)}", flush=True)
            with open(out_dir / f"{label}_{mode}.jsonl", "w") as fh:
                for ex, r in zip(synth.examples, responses, strict=True):
                    fh.write(json.dumps({"id": ex.id, "ground_truth": ex.ground_truth, "response": r}) + "\n")
        runtime.close()
        registry.close()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--seed", type=int, default=777, help="seed of the fresh evaluation prompts")
    parser.add_argument("--force", action="store_true", help="retrain even if a cached warm start exists")
    parser.add_argument("--base", action="store_true", help="also evaluate the base model (baseline)")
    parser.add_argument("--modes", default="greedy,sampled_t1", help="greedy and/or sampled_t1")
    parser.add_argument("--out", default="runs/bench/sft_warmstart")
    parser.add_argument("overrides", nargs="*", help="overrides of the sft_default preset (sft.lr=…)")
    args = parser.parse_args()

    from appo.config import load_config
    from appo.models import ensure_default_model
    from appo.sft.trainer import run_sft

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg = load_config("sft_default", args.overrides)
    summary: dict[str, Any] = {"overrides": args.overrides, "threads": torch.get_num_threads()}
    if not args.overrides:
        from appo.sft.warmstart import ensure_sft_warm_start

        t0 = time.perf_counter()
        model_dir = ensure_sft_warm_start(None, force=args.force)
        summary["train_seconds"] = round(time.perf_counter() - t0, 1)
    else:
        t0 = time.perf_counter()
        result = run_sft(cfg, output_dir=out_dir / "run", resume=False)
        model_dir = result.final_dir
        summary["train_seconds"] = round(time.perf_counter() - t0, 1)
    print(f"warm start: {model_dir} in {summary['train_seconds']} s", flush=True)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("greedy", "sampled_t1")]
    if bad:
        parser.error(f"unknown mode(s) {bad}; use greedy and/or sampled_t1")
    summary["warm_start"] = evaluate(str(model_dir), cfg, args.n, args.seed, "sft", out_dir, modes)
    if args.base:
        base_dir = str(ensure_default_model(quiet=True))
        summary["base"] = evaluate(base_dir, cfg, args.n, args.seed, "base", out_dir, modes)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
