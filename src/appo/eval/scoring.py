"""Per-sample scores and per-benchmark aggregation of evaluation records.

A *question record* (one line of ``results/<benchmark>.jsonl``) holds the question, the gold answer and one
entry per sample with its trajectory and ``scores``. :func:`aggregate` turns a list of question records
into the metrics of ``summary.json``; it reads nothing but the records, so summaries can be recomputed
from the files of an interrupted or resumed run.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from appo.eval.passk import pass_at_k
from appo.rewards import GroundTruth
from appo.rewards import math as math_reward
from appo.rewards import qa as qa_reward
from appo.rewards.text import format_error

__all__ = [
    "MATH_BENCHMARKS",
    "TOOL_PRODUCTIVITY_SIGMA",
    "aggregate",
    "score_sample",
    "task_of",
    "tool_productivity",
]

MATH_BENCHMARKS = frozenset({"aime24", "aime25", "gsm8k", "math500", "math"})
#: σ of the reference's tool-productivity figure: acc · T / (T + σ) · 100
TOOL_PRODUCTIVITY_SIGMA = 0.1


def task_of(benchmark: str) -> str:
    """``math`` for the math benchmarks (correct = math-equivalent), else ``qa``."""
    return "math" if benchmark.lower() in MATH_BENCHMARKS else "qa"


def tool_productivity(
    accuracy: float, mean_tool_calls: float, sigma: float = TOOL_PRODUCTIVITY_SIGMA
) -> float:
    """The reference's ``tool_productivity`` (its ``m1m2``): ``acc · T / (T + σ) · 100`` with ``T`` the
    mean number of tool calls per sample and ``acc`` the final accuracy (judge accuracy when a judge
    was used, else mean math-equivalence for math tasks and mean token F1 for QA tasks)."""
    if math.isnan(accuracy) or mean_tool_calls + sigma <= 0:
        return math.nan
    return accuracy * mean_tool_calls / (mean_tool_calls + sigma) * 100.0


def score_sample(
    text: str,
    gold: GroundTruth,
    task: str,
    *,
    question: str = "",
    judge: Any = None,
) -> dict[str, Any]:
    """Scores of one sample's response text (special tokens removed).

    Always: ``em``, ``cover_em``, ``f1`` (:func:`appo.rewards.qa`), ``has_answer``, ``format_ok``; math
    tasks add ``math_equal`` (:func:`appo.rewards.math`); with a ``judge`` (an :class:`~appo.rewards.LLMJudge`)
    ``llm_equal`` and ``judge_error``. ``correct`` = ``llm_equal`` with a judge, else ``math_equal`` (math)
    or ``em`` (QA); ``ref_acc`` is the per-sample accuracy the reference averages (judge, else
    math-equivalence for math and F1 for QA).
    """
    qa_res = qa_reward(text, gold)
    scores: dict[str, Any] = {
        "prediction": qa_res.answer,
        "em": qa_res.components["em"],
        "cover_em": qa_res.components["cover_em"],
        "f1": qa_res.components["f1"],
        "has_answer": qa_res.components["has_answer"],
    }
    err = format_error(text)
    scores["format_ok"] = float(err is None)
    scores["format_error"] = err
    if task == "math":
        m = math_reward(text, gold)
        scores["math_equal"] = m.components["math_equal"]
        correct = m.components["math_equal"]
        ref_acc = m.components["math_equal"]
    else:
        correct = scores["em"]
        ref_acc = scores["f1"]
    if judge is not None:
        j = judge(text, gold, question=question)
        scores["llm_equal"] = j.components["llm_equal"]
        scores["judge_error"] = j.components.get("judge_error", 0.0)
        scores["judge_reason"] = j.reason
        correct = ref_acc = j.components["llm_equal"]
    scores["correct"] = float(correct)
    scores["ref_acc"] = float(ref_acc)
    return scores


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else math.nan


def aggregate(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Metrics over question records (one benchmark, or several pooled for the overall row).

    Sample-level means (every sample weighs the same): ``accuracy`` (mean ``correct``), ``em``,
    ``cover_em``, ``f1``, ``math_equal`` (math samples only), ``llm_equal`` (judged samples only),
    ``python_calls``, ``search_calls``, ``tool_calls``, ``tool_use_rate``, ``tokens_per_answer`` (tokens
    the model sampled), ``response_tokens`` (including tool results), ``format_failure_rate``,
    ``answer_rate``, ``timeout_rate``, ``ref_accuracy`` and ``tool_productivity``. Question-level:
    ``pass@k`` for ``k = 1 … n`` (n = the smallest sample count of any question), averaged over questions.
    """
    samples = [s for r in records for s in r["samples"]]
    out: dict[str, Any] = {"questions": len(records), "samples": len(samples)}
    if not samples:
        return out

    def col(key: str) -> list[float]:
        return [float(s["scores"][key]) for s in samples if s["scores"].get(key) is not None]

    out["n"] = min(len(r["samples"]) for r in records)
    out["accuracy"] = _mean(col("correct"))
    for key in ("em", "cover_em", "f1"):
        out[key] = _mean(col(key))
    if any("math_equal" in s["scores"] for s in samples):
        out["math_equal"] = _mean(col("math_equal"))
    if any("llm_equal" in s["scores"] for s in samples):
        out["llm_equal"] = _mean(col("llm_equal"))
        out["judge_errors"] = int(sum(col("judge_error")))
    counts = [(len(r["samples"]), int(sum(s["scores"]["correct"] for s in r["samples"]))) for r in records]
    for k in range(1, out["n"] + 1):
        out[f"pass@{k}"] = _mean([pass_at_k(n, c, k) for n, c in counts])
    py = [float(s["tool_calls"].get("python", 0)) for s in samples]
    se = [float(s["tool_calls"].get("search", 0)) for s in samples]
    total = [float(sum(s["tool_calls"].values())) for s in samples]
    out["python_calls"] = _mean(py)
    out["search_calls"] = _mean(se)
    out["tool_calls"] = _mean(total)
    out["tool_use_rate"] = _mean([float(t > 0) for t in total])
    out["tool_call_histogram"] = {str(k): v for k, v in sorted(Counter(int(t) for t in total).items())}
    out["tokens_per_answer"] = _mean([float(s["sampled_tokens"]) for s in samples])
    out["response_tokens"] = _mean([float(s["response_tokens"]) for s in samples])
    out["format_failure_rate"] = 1.0 - _mean(col("format_ok"))
    out["answer_rate"] = _mean(col("has_answer"))
    out["timeout_rate"] = _mean([float(s["finish_reason"] == "timeout") for s in samples])
    out["finish_reasons"] = dict(Counter(s["finish_reason"] for s in samples))
    out["ref_accuracy"] = _mean(col("ref_acc"))
    out["tool_productivity"] = tool_productivity(out["ref_accuracy"], out["tool_calls"])
    out["seconds_per_question"] = _mean([float(r.get("elapsed_s", 0.0)) for r in records])
    return out
