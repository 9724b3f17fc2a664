"""`appo eval`: evaluate a model on the benchmarks (default command) and `appo eval compare A B`.

The sub-app is a group whose default command is `run`: ``appo eval --model M --benchmarks a,b …`` is
``appo eval run --model M …`` (anything that is not a sub-command name is handed to `run`), while
``appo eval compare RUN_A RUN_B`` reaches the other command. Dotted config overrides stay positional.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from appo.cli.common import config_option, fail, overrides_argument, resolve_config, user_errors


class _DefaultRunGroup(TyperGroup):
    """A group that runs ``run`` unless the first argument names a sub-command (or asks for help)."""

    default_command = "run"

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_DefaultRunGroup,
    help="Evaluate a model on the benchmarks with tools (default command `run`) and compare runs.",
    no_args_is_help=True,
)


@app.callback()
def _eval() -> None:
    """Evaluate a model on the benchmarks with tools: `appo eval --model M --benchmarks a,b [--n 5]`
    (= `appo eval run …`), or `appo eval compare RUN_A RUN_B`."""


def _console() -> Console:
    return Console(soft_wrap=True, width=160)


def _default_output(model: str) -> Path:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(model.rstrip("/")).name or model) or "model"
    return Path("runs") / f"eval-{stem}"


@app.command("run")
def run(
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="HF model directory or `smollm2-135m-instruct` (default: the config's model).",
    ),
    benchmarks: str = typer.Option(
        ..., "--benchmarks", "-b", help="Comma-separated benchmark names, e.g. gsm8k,hotpotqa."
    ),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Folder holding <benchmark>/test.jsonl (default: <shared data>/eval)."
    ),
    n: int = typer.Option(1, "--n", min=1, help="Samples per question (pass@1 … pass@n)."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="First N questions of each benchmark."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Run folder (default runs/eval-<model>); re-running resumes it."
    ),
    temperature: float | None = typer.Option(
        None, "--temperature", min=0.0, help="Sampling temperature (default: rollout.val_kwargs.temperature)."
    ),
    top_p: float | None = typer.Option(
        None, "--top-p", min=0.0, max=1.0, help="Top-p (default: rollout.val_kwargs.top_p)."
    ),
    prompt_type: str | None = typer.Option(
        None, "--prompt-type", help="Prompt template (default code_search; base with --no-tools)."
    ),
    tools: bool = typer.Option(True, "--tools/--no-tools", help="Offer the python and search tools."),
    max_python_calls: int = typer.Option(5, "--max-python-calls", min=0, help="Python calls per sample."),
    max_search_calls: int = typer.Option(10, "--max-search-calls", min=0, help="Search calls per sample."),
    sample_timeout: float = typer.Option(
        1500.0, "--sample-timeout", min=1.0, help="Wall clock per question (s)."
    ),
    batch_questions: int = typer.Option(8, "--batch-questions", min=1, help="Questions sampled together."),
    max_response_length: int | None = typer.Option(
        None,
        "--max-response-length",
        min=1,
        help="Token budget per sample (default data.max_response_length).",
    ),
    endpoint: str | None = typer.Option(
        None, "--endpoint", help="OpenAI-compatible base URL (…/v1) to sample from instead of a local model."
    ),
    served_model: str | None = typer.Option(
        None, "--served-model", help="Model name at --endpoint (default: --model)."
    ),
    judge_url: str | None = typer.Option(
        None, "--judge-url", help="LLM judge base URL (or APPO_JUDGE_BASE_URL); judge accuracy when set."
    ),
    judge_model: str | None = typer.Option(
        None, "--judge-model", help="Judge model name (or APPO_JUDGE_MODEL)."
    ),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 …"),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, bfloat16, float16."),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="torch CPU threads (1 is often fastest on a busy shared CPU)."
    ),
    plots: bool = typer.Option(
        True, "--plots/--no-plots", help="PNG plots in summary.md (needs matplotlib)."
    ),
    config: str | None = config_option(),
    overrides: list[str] | None = overrides_argument(),
) -> None:
    """Evaluate a model: n samples per question through the tool loop, metrics, pass@k, reports."""
    cfg = resolve_config(config, overrides)
    names = [b.strip() for b in benchmarks.split(",") if b.strip()]
    if not names:
        raise fail("--benchmarks is empty")
    model_name = model or str(cfg.actor_rollout_ref.model.path)
    console = _console()
    with user_errors():
        from appo.eval import EvalSettings, benchmark_path

        for name in names:  # fail before loading anything
            if not benchmark_path(name, data_dir).is_file():
                raise FileNotFoundError(f"benchmark {name!r}: {benchmark_path(name, data_dir)} not found")
        settings = EvalSettings(
            benchmarks=names,
            output=output or _default_output(model_name),
            n=n,
            limit=limit,
            data_dir=data_dir,
            prompt_type=prompt_type,
            tools=tools,
            tool_limits={"python": max_python_calls, "search": max_search_calls},
            sample_timeout_s=sample_timeout,
            question_batch=batch_questions,
            temperature=temperature,
            top_p=top_p,
            max_response_length=max_response_length,
            seed=seed,
            model_name=model_name if endpoint is None else f"{served_model or model_name} @ {endpoint}",
            plots=plots,
        )
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        engine = _engine(model_name, endpoint, served_model, device, dtype)
        judge = _judge(judge_url, judge_model)
        registry = runtime = None
        tags: tuple[str, ...] = ()
        if tools:
            from appo.tools import build_tools

            registry = build_tools(cfg.actor_rollout_ref.rollout.tools)
            runtime, tags = registry.runtime(), registry.tags
        try:
            summary = _run_with_progress(console, engine, cfg, settings, runtime, tags, judge)
        finally:
            if runtime is not None:
                runtime.close()
            if registry is not None:
                registry.close()
            if hasattr(engine, "close"):
                engine.close()
            if judge is not None:
                judge.close()
    from appo.eval import markdown_table

    console.print(markdown_table(summary), highlight=False, markup=False)
    console.print(f"\nwritten: {settings.output}/summary.md, summary.json, results/*.jsonl", highlight=False)


def _engine(model_name: str, endpoint: str | None, served_model: str | None, device: str, dtype: str) -> Any:
    if endpoint:
        from appo.eval import OpenAICompletionsEngine
        from appo.models import load_tokenizer

        api_key = os.environ.get("APPO_EVAL_API_KEY") or os.environ.get("OPENAI_API_KEY")
        tokenizer = load_tokenizer(model_name, quiet=True)
        return OpenAICompletionsEngine(endpoint, served_model or model_name, tokenizer, api_key=api_key)
    from appo.models import load_model
    from appo.rollout.engine import HFEngine

    mdl, tok = load_model(model_name, dtype=dtype, device=device)
    mdl.eval()
    return HFEngine(mdl, tok)


def _judge(url: str | None, model: str | None) -> Any:
    from appo.rewards import JudgeConfig, JudgeNotConfiguredError, LLMJudge

    if not (url or model or os.environ.get("APPO_JUDGE_BASE_URL")):
        return None
    try:
        return LLMJudge(JudgeConfig.from_env(base_url=url, model=model))
    except JudgeNotConfiguredError as exc:
        raise fail(str(exc), code=2) from None


def _run_with_progress(
    console: Console, engine: Any, cfg: Any, settings: Any, runtime: Any, tags: tuple[str, ...], judge: Any
) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from appo.eval import run_eval

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(benchmark: str, done: int, total: int) -> None:
            if benchmark not in tasks:
                tasks[benchmark] = bar.add_task(benchmark, total=total)
            bar.update(tasks[benchmark], completed=done)

        return run_eval(
            engine, cfg, settings, runtime=runtime, tool_tags=tags, judge=judge, progress=progress
        )


@app.command("compare")
def compare(
    run_a: Path = typer.Argument(..., help="First run folder (A)."),
    run_b: Path = typer.Argument(..., help="Second run folder (B)."),
    markdown: bool = typer.Option(
        False, "--markdown", help="Print a markdown table instead of a rich table."
    ),
) -> None:
    """Per-benchmark metrics of two runs and their difference (B − A)."""
    from appo.eval.report import _fmt, _kind, compare_runs, format_compare_markdown

    with user_errors():
        rows = compare_runs(run_a, run_b)
    console = _console()
    if markdown:
        console.print(format_compare_markdown(rows), highlight=False, markup=False)
        return
    table = Table(title=f"A = {run_a}   B = {run_b}   (rates in %)")
    for col in ("benchmark", "metric", "A", "B", "Δ (B − A)"):
        table.add_column(col, justify="left" if col in ("benchmark", "metric") else "right")
    for r in rows:
        kind = _kind(r["metric"])
        sign = "+" if r["delta"] >= 0 else "−"
        table.add_row(
            r["benchmark"],
            r["metric"],
            _fmt(r["a"], kind),
            _fmt(r["b"], kind),
            sign + _fmt(abs(r["delta"]), kind),
        )
    console.print(table)
