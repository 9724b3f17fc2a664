"""`appo generate`: run questions through the tool loop and print each trajectory readably."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from appo.cli.common import config_option, fail, overrides_argument, resolve_config, user_errors


def generate(
    question: str = typer.Argument(None, help="A question (or use --prompts / --synthetic)."),
    overrides: list[str] = overrides_argument(),
    config: str = config_option(),
    model: str = typer.Option(None, "--model", "-m", help="HF model directory or smollm2-135m-instruct."),
    prompts: Path = typer.Option(
        None, "--prompts", help="A dataset file (RL parquet / eval jsonl) to take questions from."
    ),
    synthetic: int = typer.Option(
        0, "--synthetic", help="Use N fresh synthetic tool tasks (python + search)."
    ),
    seed: int = typer.Option(12345, "--seed", help="Seed of the synthetic tasks and of sampling."),
    limit: int = typer.Option(5, "--limit", help="At most this many questions from --prompts."),
    n: int = typer.Option(1, "--n", help="Samples per question."),
    greedy: bool = typer.Option(False, "--greedy", help="Greedy decoding (validation settings)."),
    entropy: bool = typer.Option(False, "--entropy", help="Colour each sampled token by its entropy."),
    quiet: bool = typer.Option(False, "--quiet", help="Only print the summary."),
    output: Path = typer.Option(None, "--output", "-o", help="Write every trajectory as jsonl here."),
) -> None:
    """Check a model and its tools by eye: tool calls, results, answer, reward, optionally entropy."""
    import torch

    from appo.data.prompts import get_prompt
    from appo.models import load_model
    from appo.rollout.engine import HFEngine
    from appo.rollout.loop import LoopConfig, RolloutRequest, run_rollouts
    from appo.tools import build_tools
    from appo.train.rl import make_reward_fn, score_trajectory

    if question and _looks_like_override(question):
        # `appo generate --synthetic 4 data.max_response_length=64`: the first override lands in QUESTION.
        overrides = [question, *(overrides or [])]
        question = None
    cfg = resolve_config(config, overrides)
    console = Console()
    examples: list[dict[str, Any]] = []
    corpus = None
    with user_errors():
        if synthetic:
            from appo.data.synthetic import generate_synthetic

            half = synthetic // 2
            synth = generate_synthetic(n_python=synthetic - half, n_search=half, seed=seed)
            corpus = synth.write_corpus(Path(_tmpdir()) / "corpus.jsonl")
            examples = [_example(e) for e in synth.examples]
        elif prompts is not None:
            from appo.data import read_examples

            loaded, _ = read_examples(prompts, limit=limit)
            examples = [_example(e) for e in loaded]
        elif question:
            examples = [
                {
                    "id": "q0",
                    "question": question,
                    "messages": None,
                    "ground_truth": None,
                    "data_source": "cli",
                }
            ]
        else:
            raise fail("give a QUESTION, --prompts FILE or --synthetic N", code=2)
        path = model or str(cfg.actor_rollout_ref.model.path)
        policy, tokenizer = load_model(
            path, dtype=cfg.actor_rollout_ref.model.dtype, device=cfg.trainer.device
        )
        from omegaconf import OmegaConf

        tools_cfg = OmegaConf.to_container(cfg.actor_rollout_ref.rollout.tools, resolve=True)
        if corpus is not None and "search" in tools_cfg.get("tool_instances", {}):
            tools_cfg["tool_instances"]["search"].setdefault("params", {})["corpus"] = str(corpus)
        registry = build_tools(tools_cfg)
        runtime = registry.runtime()
        reward_fn = make_reward_fn(cfg)
        loop_cfg = LoopConfig.from_config(cfg, validation=greedy, seed=seed)
        template = get_prompt("code_search")
        requests = []
        for i, ex in enumerate(examples):
            messages = ex["messages"] or template.messages(ex["question"])
            ids = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
            requests += [RolloutRequest(prompt_ids=list(ids), uid=str(i), sample=ex) for _ in range(n)]
        with console.status(f"generating {len(requests)} trajectories…"):
            result = run_rollouts(
                HFEngine(policy, tokenizer), requests, runtime, loop_cfg, torch.Generator().manual_seed(seed)
            )
        runtime.close()
        registry.close()
    rewards, formats = [], []
    records = []
    for traj in result.trajectories:
        traj.close()
        ex = traj.sample
        score = None
        if ex.get("ground_truth") is not None:
            score, _ = score_trajectory(reward_fn, traj, tokenizer)
            rewards.append(score)
            formats.append(score > -1)
        records.append(
            {
                **traj.to_record(tokenizer),
                "question": ex.get("question"),
                "ground_truth": ex.get("ground_truth"),
                "reward": score,
            }
        )
        if not quiet:
            _show(console, traj, tokenizer, ex, score, entropy)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text("".join(json.dumps(r, default=str) + "\n" for r in records))
    table = Table(title="summary", show_header=False)
    table.add_row("trajectories", str(len(result.trajectories)))
    if rewards:
        table.add_row(
            "well-formed (reward ≠ −1)", f"{sum(formats)}/{len(formats)} = {sum(formats) / len(formats):.0%}"
        )
        table.add_row("mean reward", f"{sum(rewards) / len(rewards):.3f}")
    table.add_row("tool calls / trajectory", f"{result.metrics['rollout/tool_calls_per_trajectory']:.2f}")
    table.add_row("tokens / s (sampling)", f"{result.metrics['rollout/tokens_per_s']:.1f}")
    console.print(table)


def _looks_like_override(text: str) -> bool:
    from appo.config import AppoConfig

    key, sep, _ = text.partition("=")
    return bool(sep) and " " not in key and key.split(".")[0] in AppoConfig.__dataclass_fields__


def _example(e: Any) -> dict[str, Any]:
    return {
        "id": e.id,
        "question": e.question,
        "messages": e.messages,
        "ground_truth": e.ground_truth,
        "data_source": e.data_source,
        "ability": e.ability,
    }


def _tmpdir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="appo-generate-")


def _show(
    console: Console, traj: Any, tokenizer: Any, ex: dict[str, Any], score: float | None, entropy: bool
) -> None:
    text = Text()
    if entropy:
        finite = [e for e, m in zip(traj.entropies, traj.loss_mask, strict=True) if m and not math.isnan(e)]
        top = max(finite) if finite else 1.0
        for token, m, e in zip(traj.response_ids, traj.loss_mask, traj.entropies, strict=True):
            piece = tokenizer.decode([token])
            if not m:
                text.append(piece, style="dim cyan")
            else:
                level = 0.0 if math.isnan(e) else min(1.0, e / max(top, 1e-6))
                red = int(80 + 175 * level)
                text.append(piece, style=f"rgb({red},{int(200 - 150 * level)},80)")
    else:
        cursor = 0
        for call in traj.tool_calls:
            start, end = call.result_span
            text.append(tokenizer.decode(traj.response_ids[cursor:start]))
            text.append(tokenizer.decode(traj.response_ids[start:end]), style="cyan" if call.ok else "red")
            cursor = end
        text.append(tokenizer.decode(traj.response_ids[cursor:]))
    title = f"[bold]{ex.get('question', '')[:100]}[/]"
    subtitle = f"finish={traj.finish_reason} tools={len(traj.tool_calls)} tokens={len(traj.response_ids)}"
    if score is not None:
        subtitle += f" reward={score:+.3f} gold={ex.get('ground_truth')}"
    console.print(Panel(text, title=title, subtitle=subtitle, expand=True))
