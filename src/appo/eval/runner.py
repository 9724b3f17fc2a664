"""The benchmark runner: questions → n samples each through the training tool loop → scored records.

Settings that follow the reference evaluation (``eval-tools-data.md`` §1): prompt type ``code_search``
(``base`` without tools), result wrapper ``<result>…</result>``, ``</answer>`` as a stop string next to the
tools' closing tags (sent server-side by the OpenAI-compatible engine), the reference's over-limit and
repeated-query messages, per-tool call limits (python 5, search 10), and a per-question wall clock.

Questions are processed in batches (``question_batch`` questions × ``n`` samples share one engine batch);
when a batch finishes, each question's record is appended to ``results/<benchmark>.jsonl`` — a re-run
with the same output folder skips the question ids already there.

The wall-clock limit is best-effort: it is checked before every sampling round, so a question stops at
most one round (≤ the remaining token budget) after its deadline; such samples end with finish reason
``timeout`` and are scored on what they produced. All questions of a batch start together, so the
deadline of a batch is the deadline of each of its questions.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from appo.data import Example, read_examples, render_prompt
from appo.data.readers import BENCHMARKS, shared_data_dir
from appo.eval.scoring import aggregate, score_sample, task_of
from appo.rollout.engine import RoundOutput, SamplingParams
from appo.rollout.loop import OVER_LIMIT_MESSAGES, LoopConfig, RolloutRequest, run_rollouts
from appo.tools import EVAL_RESULT_TEMPLATE, ToolResult

log = logging.getLogger(__name__)

__all__ = [
    "EvalSettings",
    "PerToolLimitRuntime",
    "benchmark_path",
    "eval_loop_config",
    "load_records",
    "run_eval",
    "select_questions",
    "summarize",
]

RESULTS_DIR = "results"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
RUN_JSON = "run.json"
CONFIG_YAML = "config.yaml"
#: per-tool limits of the reference evaluation script (``--max_python_times 5 --max_search_times 10``)
REFERENCE_TOOL_LIMITS = {"python": 5, "search": 10}


@dataclass
class EvalSettings:
    """What to evaluate and how (everything that is not the model/engine or the config tree)."""

    benchmarks: Sequence[str]
    output: Path
    n: int = 1
    limit: int | None = None
    data_dir: Path | None = None
    prompt_type: str | None = None  # default: code_search with tools, base without
    tools: bool = True
    tool_limits: dict[str, int] = field(default_factory=lambda: dict(REFERENCE_TOOL_LIMITS))
    sample_timeout_s: float = 1500.0
    question_batch: int = 8
    temperature: float | None = None  # None: actor_rollout_ref.rollout.val_kwargs
    top_p: float | None = None
    max_response_length: int | None = None  # None: data.max_response_length
    seed: int = 0
    model_name: str = ""
    plots: bool = True

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        if self.n < 1:
            raise ValueError(f"n must be ≥ 1 (samples per question), got {self.n}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be ≥ 1, got {self.limit}")
        if not self.benchmarks:
            raise ValueError("no benchmarks given")
        if self.question_batch < 1:
            raise ValueError(f"question_batch must be ≥ 1, got {self.question_batch}")
        if self.sample_timeout_s <= 0:
            raise ValueError(f"sample_timeout_s must be > 0, got {self.sample_timeout_s}")

    @property
    def prompt(self) -> str:
        return self.prompt_type or ("code_search" if self.tools else "base")


# ------------------------------------------------------------------------------------------------ data


def benchmark_path(benchmark: str, data_dir: Path | None = None) -> Path:
    """``<data_dir>/<benchmark>/test.jsonl`` (default data dir: ``<shared data>/eval``)."""
    root = Path(data_dir) if data_dir is not None else shared_data_dir() / "eval"
    return root / benchmark / "test.jsonl"


def _canonical(benchmark: str) -> str:
    lookup = {name.lower(): name for name in BENCHMARKS}
    return lookup.get(benchmark.lower(), benchmark)


def select_questions(benchmark: str, data_dir: Path | None = None, limit: int | None = None) -> list[Example]:
    """The first ``limit`` questions of a benchmark file (ids must be unique: they key the resume)."""
    path = benchmark_path(benchmark, data_dir)
    if not path.is_file():
        raise FileNotFoundError(
            f"benchmark {benchmark!r}: {path} not found (expected <data-dir>/<benchmark>/test.jsonl)"
        )
    examples, _ = read_examples(path, benchmark=_canonical(benchmark), limit=limit)
    seen: set[str] = set()
    for ex in examples:
        if ex.id in seen:
            raise ValueError(f"{path}: question id {ex.id!r} occurs twice; ids must be unique to resume")
        seen.add(ex.id)
    return examples


# ------------------------------------------------------------------------------------------------ loop


def eval_loop_config(cfg: Any, settings: EvalSettings, tool_tags: Sequence[str]) -> LoopConfig:
    """:class:`LoopConfig` for evaluation: validation sampling (``val_kwargs``, or the explicit
    temperature / top-p), eval result wrapper, ``</answer>`` stop, reference messages for over-limit and
    repeated queries. The loop's own total call limit is lifted; per-tool limits are enforced by
    :class:`PerToolLimitRuntime`."""
    base = LoopConfig.from_config(cfg, validation=True, seed=settings.seed)
    params = base.params
    if settings.temperature is not None:
        params = dataclasses.replace(
            params, temperature=float(settings.temperature), do_sample=settings.temperature > 0
        )
    if settings.top_p is not None:
        params = dataclasses.replace(params, top_p=float(settings.top_p))
    tags = tuple(tool_tags) if settings.tools else ()
    stops = (*(f"</{t}>" for t in tags), "</answer>")
    params = dataclasses.replace(params, stop=stops)
    limit = sum(settings.tool_limits.get(t, 0) for t in tags)
    return dataclasses.replace(
        base,
        max_response_length=int(settings.max_response_length or base.max_response_length),
        # Every call the model makes reaches the runtime, which answers over-limit calls itself; the loop's
        # total only stops runaway loops (the per-tool limits are reached long before).
        call_limit=max(1, 4 * limit + 16),
        params=params,
        tool_tags=tags,
        result_template=EVAL_RESULT_TEMPLATE,
        over_limit="message",
        empty_call="message",
        repeated_query="message",
        stop_at_answer=True,
    )


class PerToolLimitRuntime:
    """Wraps a tool runtime with per-tool, per-trajectory call limits (the reference evaluation has one
    limit per tool; the loop has one for all tools). A call beyond its tool's limit is not run; it gets
    the reference's over-limit message as its result (``ok=False``, ``metadata["over_limit"]``)."""

    def __init__(self, runtime: Any, limits: dict[str, int]) -> None:
        self.runtime = runtime
        self.limits = dict(limits)
        self._counts: dict[tuple[int, str], int] = {}

    def execute(self, calls: Sequence[Any]) -> list[ToolResult]:
        results: list[ToolResult | None] = [None] * len(calls)
        run_idx: list[int] = []
        for i, call in enumerate(calls):
            key = (id(call.session), call.tag)
            used = self._counts.get(key, 0)
            limit = self.limits.get(call.tag)
            if limit is not None and used >= limit:
                message = OVER_LIMIT_MESSAGES.get(call.tag, f"The maximum {call.tag} call limit is exceeded.")
                results[i] = ToolResult(message, False, 0.0, {"over_limit": True})
            else:
                self._counts[key] = used + 1
                run_idx.append(i)
        if run_idx:
            ran = self.runtime.execute([calls[i] for i in run_idx])
            for i, res in zip(run_idx, ran, strict=True):
                results[i] = res
        return [r for r in results if r is not None]

    def reset(self) -> None:
        self._counts.clear()


class DeadlineEngine:
    """An engine wrapper that stops sampling once ``deadline`` (``time.monotonic()``) has passed: every
    sequence of a later round gets an empty output with finish reason ``timeout``."""

    def __init__(self, engine: Any, deadline: float) -> None:
        self.engine = engine
        self.deadline = deadline
        self.timed_out = False

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return self.engine.eos_token_ids

    def new_sequence(self, token_ids: Sequence[int]) -> Any:
        return self.engine.new_sequence(token_ids)

    def prefill(self, seqs: Sequence[Any]) -> None:
        self.engine.prefill(seqs)

    def sample(
        self,
        seqs: Sequence[Any],
        params: SamplingParams,
        max_new_tokens: Sequence[int],
        generator: torch.Generator | None = None,
    ) -> list[RoundOutput]:
        if time.monotonic() >= self.deadline:
            self.timed_out = True
            return [RoundOutput(finish_reason="timeout") for _ in seqs]
        return self.engine.sample(seqs, params, max_new_tokens, generator)


# ------------------------------------------------------------------------------------------------ files


def results_path(output: Path, benchmark: str) -> Path:
    return Path(output) / RESULTS_DIR / f"{benchmark}.jsonl"


def load_records(path: Path) -> list[dict[str, Any]]:
    """Question records of a results file; a line cut short by a crash is skipped with a warning."""
    if not path.is_file():
        return []
    out = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                log.warning("%s: line %d is not valid JSON (interrupted write?); ignoring it", path, lineno)
                continue
            if isinstance(rec, dict) and "id" in rec and "samples" in rec:
                out.append(rec)
    return out


def _append_records(path: Path, records: Iterable[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    needs_newline = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with open(path, "a", encoding="utf-8") as fh:
        if needs_newline:
            fh.write("\n")
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False, allow_nan=True) + "\n")
        fh.flush()


def _check_run_meta(output: Path, meta: dict[str, Any]) -> None:
    path = output / RUN_JSON
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("n") != meta["n"]:
            raise ValueError(
                f"{output} holds a run with n={old.get('n')} samples per question; this run asks for "
                f"n={meta['n']}. Use another --output folder (pass@k needs the same n for all questions)."
            )
        changed = [k for k in ("model", "sampling", "prompt_type", "tools") if old.get(k) != meta.get(k)]
        if changed:
            log.warning("resuming %s with different settings: %s", output, ", ".join(changed))
    path.write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")


# ------------------------------------------------------------------------------------------------ run


def _sample_entry(
    index: int, traj: Any, tokenizer: Any, example: Example, task: str, judge: Any
) -> dict[str, Any]:
    text = tokenizer.decode(traj.response_ids, skip_special_tokens=True)
    scores = score_sample(text, example.ground_truth, task, question=example.question, judge=judge)
    tool_calls: dict[str, int] = {}
    for call in traj.tool_calls:
        tool_calls[call.tag] = tool_calls.get(call.tag, 0) + 1
    record = traj.to_record(tokenizer)
    for call, raw in zip(record["tool_calls"], traj.tool_calls, strict=True):
        if raw.metadata.get("over_limit"):
            call["over_limit"] = True
    return {
        "index": index,
        "prediction": scores.pop("prediction"),
        "scores": scores,
        "tool_calls": tool_calls,
        "sampled_tokens": int(sum(traj.loss_mask)),
        "response_tokens": len(traj.response_ids),
        "finish_reason": traj.finish_reason,
        "trajectory": record,
    }


def _prompt_ids(example: Example, tokenizer: Any, prompt_type: str) -> list[int]:
    text = render_prompt(example, tokenizer, prompt_type)
    return list(tokenizer.encode(text, add_special_tokens=False))


def run_eval(
    engine: Any,
    cfg: Any,
    settings: EvalSettings,
    *,
    runtime: Any | None = None,
    tool_tags: Sequence[str] = ("python", "search"),
    judge: Any = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Evaluate every benchmark of ``settings`` and write the run folder; returns the summary.

    ``engine``: an HF engine or :class:`~appo.eval.openai_engine.OpenAICompletionsEngine`; ``runtime``:
    the tool runtime (``None`` = no tools); ``judge``: an :class:`~appo.rewards.LLMJudge` or ``None``;
    ``progress(benchmark, done, total)`` is called after each batch.
    """
    from appo.eval.report import write_reports

    output = settings.output
    output.mkdir(parents=True, exist_ok=True)
    use_tools = settings.tools and runtime is not None
    loop_cfg = eval_loop_config(cfg, settings, tool_tags if use_tools else ())
    tokenizer = engine.tokenizer
    meta = {
        "model": settings.model_name,
        "benchmarks": list(settings.benchmarks),
        "n": settings.n,
        "limit": settings.limit,
        "prompt_type": settings.prompt,
        "tools": list(loop_cfg.tool_tags),
        "tool_limits": {t: settings.tool_limits.get(t) for t in loop_cfg.tool_tags},
        "sampling": {
            "temperature": loop_cfg.params.temperature,
            "top_p": loop_cfg.params.top_p,
            "top_k": loop_cfg.params.top_k,
            "do_sample": loop_cfg.params.do_sample,
            "stop": list(loop_cfg.params.stop),
        },
        "max_response_length": loop_cfg.max_response_length,
        "sample_timeout_s": settings.sample_timeout_s,
        "judge": getattr(getattr(judge, "config", None), "model", None),
        "seed": settings.seed,
    }
    _check_run_meta(output, meta)
    _write_config(output, cfg)
    if settings.n > 1 and loop_cfg.params.greedy:
        log.warning(
            "n=%d with greedy decoding: all samples of a question are identical (set a temperature, "
            "e.g. --temperature 0.6 --top-p 0.95 as in the reference evaluation)",
            settings.n,
        )
    limited = PerToolLimitRuntime(runtime, settings.tool_limits) if use_tools else None
    generator = torch.Generator().manual_seed(settings.seed)
    selected: dict[str, list[str]] = {}
    for benchmark in settings.benchmarks:
        examples = select_questions(benchmark, settings.data_dir, settings.limit)
        selected[benchmark] = [ex.id for ex in examples]
        task = task_of(benchmark)
        path = results_path(output, benchmark)
        done = {r["id"] for r in load_records(path)}
        todo = [ex for ex in examples if ex.id not in done]
        if progress is not None:
            progress(benchmark, len(examples) - len(todo), len(examples))
        for start in range(0, len(todo), settings.question_batch):
            batch = todo[start : start + settings.question_batch]
            records = _run_batch(
                engine, batch, benchmark, task, tokenizer, loop_cfg, limited, settings, judge, generator
            )
            _append_records(path, records)
            if progress is not None:
                progress(benchmark, len(examples) - len(todo) + start + len(batch), len(examples))
    summary = summarize(output, selected, meta)
    write_reports(output, summary, plots=settings.plots)
    return summary


def _write_config(output: Path, cfg: Any) -> None:
    try:
        from omegaconf import OmegaConf

        OmegaConf.save(cfg, output / CONFIG_YAML, resolve=True)
    except Exception as exc:  # a plain object config (tests) is not worth failing the run for
        log.debug("could not write the resolved config: %s", exc)


def _run_batch(
    engine: Any,
    batch: Sequence[Example],
    benchmark: str,
    task: str,
    tokenizer: Any,
    loop_cfg: LoopConfig,
    runtime: PerToolLimitRuntime | None,
    settings: EvalSettings,
    judge: Any,
    generator: torch.Generator,
) -> list[dict[str, Any]]:
    requests = []
    for ex in batch:
        ids = _prompt_ids(ex, tokenizer, settings.prompt)
        requests.extend(
            RolloutRequest(prompt_ids=ids, uid=ex.id, sample={"id": ex.id}) for _ in range(settings.n)
        )
    t0 = time.monotonic()
    timed = DeadlineEngine(engine, t0 + settings.sample_timeout_s)
    try:
        result = run_rollouts(timed, requests, runtime, loop_cfg, generator)
    finally:
        if runtime is not None:
            runtime.reset()
    elapsed = time.monotonic() - t0
    records = []
    for q, ex in enumerate(batch):
        trajs = result.trajectories[q * settings.n : (q + 1) * settings.n]
        samples = [_sample_entry(i, t, tokenizer, ex, task, judge) for i, t in enumerate(trajs)]
        for t in trajs:
            t.close()
        records.append(
            {
                "id": ex.id,
                "benchmark": benchmark,
                "task": task,
                "question": ex.question,
                "gold": ex.ground_truth,
                "n": settings.n,
                "correct": int(sum(s["scores"]["correct"] for s in samples)),
                # All questions of a batch run together; this is the batch's wall clock.
                "elapsed_s": round(elapsed, 3),
                "batch_questions": len(batch),
                "samples": samples,
            }
        )
    return records


def summarize(
    output: Path, selected: dict[str, list[str]] | None = None, meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Summary of a run folder from its results files (only the ``selected`` question ids per benchmark
    when given, else everything in the files)."""
    output = Path(output)
    if meta is None:
        meta_path = output / RUN_JSON
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    if selected is None:
        selected = {
            p.stem: [r["id"] for r in load_records(p)] for p in sorted((output / RESULTS_DIR).glob("*.jsonl"))
        }
    per_bench: dict[str, Any] = {}
    pooled: list[dict[str, Any]] = []
    for benchmark, ids in selected.items():
        wanted = set(ids)
        records = [r for r in load_records(results_path(output, benchmark)) if r["id"] in wanted]
        per_bench[benchmark] = aggregate(records)
        pooled.extend(records)
    overall = aggregate(pooled)
    macro: dict[str, float] = {}
    filled = [m for m in per_bench.values() if m.get("samples")]
    for key in overall:
        values = [
            m[key] for m in filled if isinstance(m.get(key), (int, float)) and not isinstance(m[key], bool)
        ]
        if values and len(values) == len(filled) and key not in ("questions", "samples", "n"):
            finite = [float(v) for v in values if not math.isnan(float(v))]
            macro[key] = sum(finite) / len(finite) if finite else math.nan
    ns = {m.get("n") for m in filled}
    if len(ns) == 1:
        macro["n"] = ns.pop()
    return {
        "run": meta,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "benchmarks": per_bench,
        "overall": overall,
        "macro_average": macro,
    }
