"""Reports of an evaluation run: ``summary.json``, ``summary.md`` (benchmarks × metrics table, pass@k
table, plots), ``passk.png`` and ``tool_calls.png`` (matplotlib, imported only when plotting), and the
difference table of two runs (``appo eval compare``)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = [
    "TABLE_COLUMNS",
    "compare_runs",
    "format_compare_markdown",
    "load_summary",
    "markdown_table",
    "plot_pass_at_k",
    "plot_tool_calls",
    "write_reports",
]

PASSK_PNG = "passk.png"
TOOLS_PNG = "tool_calls.png"

#: (key in the metrics dict, column title, kind) — kind ``pct`` prints ×100 with one decimal
TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("questions", "questions", "int"),
    ("n", "n", "int"),
    ("accuracy", "acc", "pct"),
    ("pass@1", "pass@1", "pct"),
    ("pass@n", "pass@n", "pct"),
    ("em", "EM", "pct"),
    ("cover_em", "cover-EM", "pct"),
    ("f1", "F1", "pct"),
    ("math_equal", "math-eq", "pct"),
    ("llm_equal", "judge", "pct"),
    ("python_calls", "python calls", "num"),
    ("search_calls", "search calls", "num"),
    ("tokens_per_answer", "tokens/answer", "int"),
    ("format_failure_rate", "format-fail", "pct"),
    ("timeout_rate", "timeout", "pct"),
    ("tool_productivity", "tool-prod", "num"),
)
COMPARE_KEYS = (
    "accuracy",
    "pass@1",
    "pass@n",
    "em",
    "f1",
    "math_equal",
    "llm_equal",
    "tool_calls",
    "tokens_per_answer",
    "format_failure_rate",
    "tool_productivity",
)


def _value(metrics: dict[str, Any], key: str) -> Any:
    if key == "pass@n":
        n = metrics.get("n")
        return metrics.get(f"pass@{n}") if n else None
    return metrics.get(key)


def _fmt(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if kind == "pct":
        return f"{100.0 * float(value):.1f}"
    if kind == "int":
        return str(round(float(value)))
    return f"{float(value):.2f}"


def markdown_table(summary: dict[str, Any]) -> str:
    """Benchmarks × metrics (rates in %), with the pooled ``overall`` row and the ``macro avg`` over
    benchmarks. Columns without any value in the run are left out."""
    rows: list[tuple[str, dict[str, Any]]] = list(summary["benchmarks"].items())
    if len(rows) > 1:
        rows.append(("**overall**", summary["overall"]))
        macro = dict(summary.get("macro_average") or {})
        if macro:
            rows.append(("macro avg", macro))
    columns = [c for c in TABLE_COLUMNS if any(_value(m, c[0]) is not None for _, m in rows)]
    head = "| benchmark | " + " | ".join(title for _, title, _ in columns) + " |"
    sep = "|---|" + "|".join("---:" for _ in columns) + "|"
    lines = [head, sep]
    for name, metrics in rows:
        cells = [_fmt(_value(metrics, key), kind) for key, _, kind in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _passk_table(summary: dict[str, Any]) -> str:
    bench = summary["benchmarks"]
    ks = sorted({int(k.split("@")[1]) for m in bench.values() for k in m if k.startswith("pass@")})
    if not ks:
        return ""
    lines = [
        "| benchmark | " + " | ".join(f"pass@{k}" for k in ks) + " |",
        "|---|" + "|".join("---:" for _ in ks) + "|",
    ]
    for name, m in bench.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(m.get(f"pass@{k}"), "pct") for k in ks) + " |")
    return "\n".join(lines)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pass_at_k(summary: dict[str, Any], path: Path) -> Path:
    """pass@k against k, one line per benchmark."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, m in summary["benchmarks"].items():
        ks = sorted(int(k.split("@")[1]) for k in m if k.startswith("pass@"))
        if ks:
            ax.plot(ks, [100 * m[f"pass@{k}"] for k in ks], marker="o", label=name)
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k (%)")
    ax.set_title("pass@k (unbiased estimator, mean over questions)")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()
        ax.set_xticks(sorted({int(x) for line in ax.lines for x in line.get_xdata()}))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_tool_calls(summary: dict[str, Any], path: Path) -> Path:
    """Histogram of tool calls per sample (share of samples), grouped bars per benchmark."""
    plt = _pyplot()
    bench = {k: m for k, m in summary["benchmarks"].items() if m.get("tool_call_histogram")}
    counts = sorted({int(c) for m in bench.values() for c in m["tool_call_histogram"]}) or [0]
    width = 0.8 / max(1, len(bench))
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, m) in enumerate(bench.items()):
        hist = {int(k): v for k, v in m["tool_call_histogram"].items()}
        total = sum(hist.values()) or 1
        xs = [c + (i - (len(bench) - 1) / 2) * width for c in counts]
        ax.bar(xs, [100 * hist.get(c, 0) / total for c in counts], width=width, label=name)
    ax.set_xticks(counts)
    ax.set_xlabel("tool calls per sample (python + search)")
    ax.set_ylabel("samples (%)")
    ax.set_title("Tool calls per sample")
    if bench:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_reports(output: Path, summary: dict[str, Any], plots: bool = True) -> list[Path]:
    """Write ``summary.json``, ``summary.md`` and (when matplotlib is installed) the two PNG plots."""
    output = Path(output)
    written = [output / "summary.json"]
    written[0].write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    images: list[str] = []
    note = ""
    if plots:
        try:
            written.append(plot_pass_at_k(summary, output / PASSK_PNG))
            written.append(plot_tool_calls(summary, output / TOOLS_PNG))
            images = [PASSK_PNG, TOOLS_PNG]
        except ImportError:
            note = "_Plots skipped: matplotlib is not installed (`pip install matplotlib`)._"
            log.warning("matplotlib is not installed; summary.md has no plots")
    run = summary.get("run") or {}
    sampling = run.get("sampling") or {}
    lines = [
        "# Evaluation summary",
        "",
        f"- model: `{run.get('model', '')}`",
        f"- samples per question n = {run.get('n')}, question limit = {run.get('limit')}, "
        f"prompt `{run.get('prompt_type')}`, tools {', '.join(run.get('tools') or []) or 'none'} "
        f"(limits {run.get('tool_limits')})",
        f"- sampling: temperature {sampling.get('temperature')}, top-p {sampling.get('top_p')}, "
        f"do_sample {sampling.get('do_sample')}; max response length {run.get('max_response_length')} "
        f"tokens; per-question limit {run.get('sample_timeout_s')} s",
        f"- judge: {run.get('judge') or 'none (acc = math equivalence for math, exact match for QA)'}",
        f"- created {summary.get('created')}",
        "",
        "Rates in %. acc: mean correctness over samples (judge if configured, else math equivalence for "
        "math benchmarks and EM for QA); pass@k: unbiased estimator averaged over questions; python calls, "
        "search calls: tool calls per sample; tokens/answer: tokens the model generated per sample; "
        "tool-prod: the reference's tool productivity acc·T/(T+0.1)·100 (acc = judge, else math-eq / F1).",
        "",
        markdown_table(summary),
        "",
        "## pass@k",
        "",
        _passk_table(summary),
        "",
    ]
    if images:
        lines += [f"![pass@k]({PASSK_PNG})", "", f"![tool calls per sample]({TOOLS_PNG})", ""]
    elif note:
        lines += [note, ""]
    md = output / "summary.md"
    md.write_text("\n".join(lines), encoding="utf-8")
    written.append(md)
    return written


# ------------------------------------------------------------------------------------------------ compare


def load_summary(run: Path) -> dict[str, Any]:
    """``summary.json`` of a run folder (or the file itself)."""
    path = Path(run)
    if path.suffix != ".json":
        path = path / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run} an `appo eval` output folder?")
    return json.loads(path.read_text(encoding="utf-8"))


def compare_runs(run_a: Path, run_b: Path, keys: Sequence[str] = COMPARE_KEYS) -> list[dict[str, Any]]:
    """Rows ``{benchmark, metric, a, b, delta}`` (delta = b − a) for the benchmarks in both runs plus
    ``overall``; metrics missing in either run are left out."""
    a, b = load_summary(run_a), load_summary(run_b)
    names = [k for k in a["benchmarks"] if k in b["benchmarks"]]
    if not names:
        raise ValueError(
            f"the runs share no benchmark ({', '.join(a['benchmarks'])} vs {', '.join(b['benchmarks'])})"
        )
    pairs = [(n, a["benchmarks"][n], b["benchmarks"][n]) for n in names] + [
        ("overall", a["overall"], b["overall"])
    ]
    rows = []
    for name, ma, mb in pairs:
        for key in keys:
            va, vb = _value(ma, key), _value(mb, key)
            if va is None or vb is None:
                continue
            rows.append(
                {
                    "benchmark": name,
                    "metric": key,
                    "a": float(va),
                    "b": float(vb),
                    "delta": float(vb) - float(va),
                }
            )
    return rows


def _kind(key: str) -> str:
    return "num" if key in ("tool_calls", "tokens_per_answer", "tool_productivity") else "pct"


def format_compare_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The compare rows as a markdown table (one row per benchmark, A / B / Δ per metric)."""
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    benches = list(dict.fromkeys(r["benchmark"] for r in rows))
    index = {(r["benchmark"], r["metric"]): r for r in rows}
    head = "| benchmark | " + " | ".join(f"{m} (A → B, Δ)" for m in metrics) + " |"
    lines = [head, "|---|" + "|".join("---:" for _ in metrics) + "|"]
    for bench in benches:
        cells = []
        for m in metrics:
            r = index.get((bench, m))
            if r is None:
                cells.append("–")
                continue
            kind = _kind(m)
            sign = "+" if r["delta"] >= 0 else "−"
            delta = _fmt(abs(r["delta"]), kind)
            cells.append(f"{_fmt(r['a'], kind)} → {_fmt(r['b'], kind)} ({sign}{delta})")
        lines.append(f"| {bench} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
