"""`appo data`: inspect dataset files and generate synthetic tasks."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Inspect dataset files (RL parquet, evaluation jsonl) and generate synthetic tool-use tasks.",
    no_args_is_help=True,
)
_SCHEMA_SCAN_LINES = 1000


@app.callback()
def _data() -> None:
    """Inspect dataset files (RL parquet, evaluation jsonl) and generate synthetic tool-use tasks."""


def _console() -> Console:
    return Console(soft_wrap=True, width=140)


def _fail(console: Console, message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(1)


def _short(value: Any, limit: int = 90) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _schema_table(path: Path) -> Table:
    table = Table(title="schema", show_lines=False)
    table.add_column("field")
    table.add_column("type")
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        for fld in pq.ParquetFile(path).schema_arrow:
            table.add_row(fld.name, str(fld.type))
        return table
    types: dict[str, Counter[str]] = {}
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= _SCHEMA_SCAN_LINES:
                break
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                for key, value in rec.items():
                    types.setdefault(key, Counter())[type(value).__name__] += 1
    for key, counter in types.items():
        table.add_row(key, " | ".join(f"{t} ({n})" for t, n in counter.most_common()))
    return table


@app.command("inspect")
def inspect(
    path: Path = typer.Argument(..., help="A .parquet (RL schema) or .jsonl (evaluation schema) file."),
    rows: int = typer.Option(3, "--rows", "-n", min=0, help="Number of sample rows to print."),
    benchmark: str | None = typer.Option(
        None, "--benchmark", "-b", help="Evaluation schema to use (default: the parent folder name)."
    ),
    skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows", help="Count bad rows instead of failing."),
) -> None:
    """Print the schema, row count, data sources, sample rows and the reward that applies."""
    from appo.data.readers import DataError, ReadReport, iter_examples
    from appo.rewards.registry import reward_name_for_source

    console = _console()
    if not path.is_file():
        raise _fail(console, f"{path}: no such file")
    report = ReadReport(str(path))
    samples = []
    sources: Counter[str] = Counter()
    abilities: Counter[str] = Counter()
    try:
        for ex in iter_examples(path, benchmark=benchmark, skip_bad_rows=skip_bad_rows, report=report):
            sources[ex.data_source] += 1
            abilities[ex.ability or "-"] += 1
            if len(samples) < rows:
                samples.append(ex)
        schema = _schema_table(path)
    except DataError as exc:
        raise _fail(console, str(exc)) from None

    kind = "RL parquet" if path.suffix.lower() == ".parquet" else "evaluation jsonl"
    console.print(f"[bold]{path}[/] ({kind}, {path.stat().st_size:,} bytes)", highlight=False)
    console.print(schema)
    console.print(f"rows: {report.rows_read}", highlight=False)
    if report.rows_skipped:
        console.print(f"[yellow]skipped bad rows: {report.rows_skipped}[/]", highlight=False)
        for msg in report.errors[:5]:
            console.print(f"  {msg}", highlight=False)
    if report.boxed_repairs:
        console.print(f"repaired \\x08oxed → \\boxed in {report.boxed_repairs} rows", highlight=False)

    rewards = Table(title="data sources and rewards")
    for col in ("data_source", "rows", "reward", "parity reward"):
        rewards.add_column(col)
    for source, count in sources.most_common():
        rewards.add_row(
            source,
            str(count),
            reward_name_for_source(source),
            reward_name_for_source(source, parity=True),
        )
    console.print(rewards)
    console.print(
        "ability: " + ", ".join(f"{k} {v}" for k, v in abilities.most_common()),
        highlight=False,
    )

    if samples:
        table = Table(title=f"first {len(samples)} rows", show_lines=True)
        for col in ("id", "question", "ground_truth", "ability", "prompt"):
            table.add_column(col, overflow="fold")
        for ex in samples:
            prompt = f"{len(ex.messages)} messages" if ex.messages else "(template)"
            table.add_row(ex.id, _short(ex.question), _short(ex.ground_truth, 60), ex.ability or "-", prompt)
        console.print(table)


@app.command("synth")
def synth(
    out: Path = typer.Argument(..., help="Output folder for tasks.jsonl and corpus.jsonl."),
    n_python: int = typer.Option(32, "--n-python", min=0, help="Tool-arithmetic tasks."),
    n_search: int = typer.Option(32, "--n-search", min=0, help="Corpus-lookup tasks."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    """Generate seeded synthetic tasks (tasks.jsonl) and their search corpus (corpus.jsonl)."""
    from appo.data.synthetic import generate_synthetic

    data = generate_synthetic(n_python, n_search, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "tasks.jsonl", "w", encoding="utf-8") as fh:
        for ex in data.examples:
            fh.write(json.dumps(ex.to_dict(), ensure_ascii=False) + "\n")
    data.write_corpus(out / "corpus.jsonl")
    typer.echo(f"wrote {len(data.examples)} tasks and {len(data.corpus)} corpus documents to {out}")
