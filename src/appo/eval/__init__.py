"""Evaluation harness: benchmarks through the training tool loop, pass@k, metrics and reports.

See docs/eval.md. Typical use::

    from appo.eval import EvalSettings, run_eval, pass_at_k
    summary = run_eval(engine, cfg, EvalSettings(["gsm8k", "hotpotqa"], "runs/eval", n=5), runtime=rt)
"""

from appo.eval.openai_engine import OpenAICompletionsEngine, OpenAIEngineError
from appo.eval.passk import mean_pass_at_k, pass_at_k, pass_at_k_curve
from appo.eval.report import (
    compare_runs,
    format_compare_markdown,
    load_summary,
    markdown_table,
    write_reports,
)
from appo.eval.runner import (
    EvalSettings,
    PerToolLimitRuntime,
    benchmark_path,
    eval_loop_config,
    load_records,
    run_eval,
    select_questions,
    summarize,
)
from appo.eval.scoring import aggregate, score_sample, task_of, tool_productivity

__all__ = [
    "EvalSettings",
    "OpenAICompletionsEngine",
    "OpenAIEngineError",
    "PerToolLimitRuntime",
    "aggregate",
    "benchmark_path",
    "compare_runs",
    "eval_loop_config",
    "format_compare_markdown",
    "load_records",
    "load_summary",
    "markdown_table",
    "mean_pass_at_k",
    "pass_at_k",
    "pass_at_k_curve",
    "run_eval",
    "score_sample",
    "select_questions",
    "summarize",
    "task_of",
    "tool_productivity",
    "write_reports",
]
