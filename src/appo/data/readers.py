"""Readers for the ARPO/APPO datasets: RL parquet files and the evaluation jsonl benchmarks.

Both are normalised into :class:`Example`. Files are streamed (parquet by record batches, jsonl line by
line). A malformed row raises :class:`DataError` naming the file, the 1-based row number and the problem;
with ``skip_bad_rows=True`` the row is skipped and counted in the :class:`ReadReport` instead.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SHARED_DATA_ENV = "APPO_SHARED_DATA"
RL_FILES = ("train_10k", "valid", "hard_search_1k", "gaia_test", "hle_test")
EVAL_BENCHMARKS = (
    "aime24",
    "aime25",
    "math500",
    "gsm8k",
    "hotpotqa",
    "2wiki",
    "musique",
    "bamboogle",
    "SimpleQA",
    "xbench",
    "webwalker",
    "gaia",
)
_GSM8K_ANSWER = re.compile(r"#### (-?[0-9.,]+)")
_PARQUET_COLUMNS = ("data_source", "prompt", "ability", "reward_model", "extra_info")
MAX_ERRORS_KEPT = 50


class DataError(ValueError):
    """A dataset row or file could not be read; the message names the file and row."""


@dataclass
class Example:
    """One normalised task.

    ``messages`` is the chat prompt when the file carries one (RL parquet), else ``None`` (evaluation
    files: build the prompt with :mod:`appo.data.prompts`). ``ground_truth`` is a string or a list of
    aliases. ``ability`` is ``math``/``qa`` when known. ``extra`` keeps the remaining source fields.
    """

    id: str
    data_source: str
    question: str
    ground_truth: str | list[str]
    messages: list[dict[str, str]] | None = None
    ability: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "data_source": self.data_source,
            "question": self.question,
            "ground_truth": self.ground_truth,
            "messages": self.messages,
            "ability": self.ability,
            "extra": self.extra,
        }


@dataclass
class ReadReport:
    """What a reader saw: rows yielded, rows skipped (with the first error messages)."""

    path: str
    rows_read: int = 0
    rows_skipped: int = 0
    errors: list[str] = field(default_factory=list)
    boxed_repairs: int = 0

    def add_error(self, message: str) -> None:
        self.rows_skipped += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(message)

    @property
    def rows_total(self) -> int:
        return self.rows_read + self.rows_skipped


# --------------------------------------------------------------------------------------------------------
# locations
# --------------------------------------------------------------------------------------------------------
def shared_data_dir() -> Path:
    """``$APPO_SHARED_DATA`` or ``<repo root>/../shared/data`` (may not exist)."""
    env = os.environ.get(SHARED_DATA_ENV)
    if env:
        return Path(env)
    repo_root = Path(__file__).resolve().parents[3]
    return (repo_root / ".." / "shared" / "data").resolve()


def rl_path(name: str) -> Path:
    """Path of an RL parquet file (``train_10k``, ``valid``, …) in the shared data folder."""
    return shared_data_dir() / "rl" / f"{name}.parquet"


def eval_path(benchmark: str) -> Path:
    """Path of ``eval/<benchmark>/test.jsonl`` in the shared data folder."""
    return shared_data_dir() / "eval" / benchmark / "test.jsonl"


# --------------------------------------------------------------------------------------------------------
# backspace repair
# --------------------------------------------------------------------------------------------------------
def repair_backspace(text: str) -> str:
    """Undo the ``\\b`` escape mishap of the RL prompts: U+0008 becomes the two characters ``\\b``
    (so ``\\x08oxed`` becomes ``\\boxed``)."""
    return text.replace("\x08", "\\b")


# --------------------------------------------------------------------------------------------------------
# RL parquet
# --------------------------------------------------------------------------------------------------------
def _parquet_example(row: dict[str, Any], rowno: int, stem: str, repair: bool) -> tuple[Example, bool]:
    source = row.get("data_source")
    if not isinstance(source, str) or not source:
        raise ValueError(f"data_source must be a non-empty string, got {source!r}")
    prompt = row.get("prompt")
    if not isinstance(prompt, list) or not prompt:
        raise ValueError(f"prompt must be a non-empty list of messages, got {type(prompt).__name__}")
    messages: list[dict[str, str]] = []
    repaired = False
    for i, msg in enumerate(prompt):
        if not isinstance(msg, dict):
            raise ValueError(f"prompt[{i}] is not a message object")
        role, content = msg.get("role"), msg.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise ValueError(
                f"prompt[{i}] needs string 'role' and 'content', got {role!r}/{type(content).__name__}"
            )
        if repair and "\x08" in content:
            content = repair_backspace(content)
            repaired = True
        messages.append({"role": role, "content": content})
    reward_model = row.get("reward_model")
    if not isinstance(reward_model, dict) or "ground_truth" not in reward_model:
        raise ValueError("reward_model.ground_truth is missing")
    gt = reward_model["ground_truth"]
    if isinstance(gt, list):
        if not gt or not all(isinstance(x, str) for x in gt):
            raise ValueError(f"reward_model.ground_truth list must hold strings, got {gt!r}")
    elif not isinstance(gt, str):
        raise ValueError(f"reward_model.ground_truth must be a string, got {gt!r}")
    extra = dict(row.get("extra_info") or {})
    question = extra.get("question")
    if not isinstance(question, str):
        users = [m["content"] for m in messages if m["role"] == "user"]
        if not users:
            raise ValueError("no extra_info.question and no user message")
        question = users[-1]
    elif repair:
        question = repair_backspace(question)
    if "style" in reward_model and reward_model["style"] is not None:
        extra["reward_style"] = reward_model["style"]
    index = extra.get("index", rowno - 1)
    ability = row.get("ability")
    ex = Example(
        id=f"{stem}-{index}",
        data_source=source,
        question=question,
        ground_truth=gt,
        messages=messages,
        ability=ability if isinstance(ability, str) else None,
        extra=extra,
    )
    return ex, repaired


def iter_rl_parquet(
    path: str | os.PathLike[str],
    *,
    skip_bad_rows: bool = False,
    report: ReadReport | None = None,
    repair_boxed: bool = True,
    batch_size: int = 1024,
) -> Iterator[Example]:
    """Stream an RL parquet file (verl layout) as :class:`Example` records.

    ``repair_boxed`` (default) turns the stored U+0008 back into ``\\b`` in every message and question;
    pass ``False`` to keep the prompts byte-for-byte as stored (reference parity).
    """
    import pyarrow.parquet as pq

    path = Path(path)
    report = report if report is not None else ReadReport(str(path))
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:
        raise DataError(f"{path}: cannot open as parquet: {exc}") from exc
    names = set(pf.schema_arrow.names)
    missing = [c for c in ("data_source", "prompt", "reward_model") if c not in names]
    if missing:
        raise DataError(f"{path}: not an RL parquet file, missing column(s) {', '.join(missing)}")
    columns = [c for c in _PARQUET_COLUMNS if c in names]
    rowno = 0
    for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
        for row in batch.to_pylist():
            rowno += 1
            try:
                ex, repaired = _parquet_example(row, rowno, path.stem, repair_boxed)
            except ValueError as exc:
                msg = f"{path}: row {rowno}: {exc}"
                if not skip_bad_rows:
                    raise DataError(msg) from exc
                report.add_error(msg)
                continue
            report.rows_read += 1
            report.boxed_repairs += int(repaired)
            yield ex


# --------------------------------------------------------------------------------------------------------
# evaluation jsonl
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchmarkSpec:
    """How to read one evaluation benchmark: question field(s), answer kind and task family."""

    name: str
    question_fields: tuple[str, ...]
    answer_kind: str  # "str", "int", "aliases", "gsm8k"
    task: str  # "math" or "qa"
    id_field: str | None = None


BENCHMARKS: dict[str, BenchmarkSpec] = {
    "aime24": BenchmarkSpec("aime24", ("question", "problem"), "str", "math", "id"),
    "aime25": BenchmarkSpec("aime25", ("problem",), "int", "math", "id"),
    "math500": BenchmarkSpec("math500", ("question", "problem"), "str", "math"),
    "math": BenchmarkSpec("math", ("problem", "question"), "str", "math"),
    "gsm8k": BenchmarkSpec("gsm8k", ("question",), "gsm8k", "math", "idx"),
    "gaia": BenchmarkSpec("gaia", ("Question",), "str", "qa", "task_id"),
    "hotpotqa": BenchmarkSpec("hotpotqa", ("question",), "aliases", "qa"),
    "2wiki": BenchmarkSpec("2wiki", ("question",), "aliases", "qa"),
    "musique": BenchmarkSpec("musique", ("question",), "aliases", "qa"),
    "bamboogle": BenchmarkSpec("bamboogle", ("question",), "aliases", "qa"),
    "SimpleQA": BenchmarkSpec("SimpleQA", ("question",), "aliases", "qa"),
    "xbench": BenchmarkSpec("xbench", ("question",), "aliases", "qa"),
    "webwalker": BenchmarkSpec("webwalker", ("question",), "str", "qa"),
    "hle": BenchmarkSpec("hle", ("question",), "str", "qa", "id"),
}
GENERIC_SPEC = BenchmarkSpec("generic", ("question", "Question", "problem"), "any", "qa", "id")
"""Unknown files: question from ``question``/``Question``/``problem``, gold from ``answer`` (or
``ground_truth``); ``data_source``, ``ability``, ``messages`` and ``extra`` are used when present."""


def benchmark_for_path(path: str | os.PathLike[str]) -> str | None:
    """Benchmark name from a path such as ``…/eval/gsm8k/test.jsonl`` (parent folder, case-insensitive)."""
    p = Path(path)
    lookup = {name.lower(): name for name in BENCHMARKS}
    for part in (p.parent.name, p.stem):
        if part.lower() in lookup:
            return lookup[part.lower()]
    return None


def gsm8k_final_answer(answer: str) -> str:
    """The number after ``####`` in a gsm8k rationale, commas removed (``"…\\n#### 1,200"`` → ``"1200"``)."""
    m = _GSM8K_ANSWER.search(answer)
    if not m:
        raise ValueError("gsm8k answer has no '#### <number>' line")
    return m.group(1).replace(",", "")


def _parse_answer(value: Any, kind: str) -> str | list[str]:
    if value is None:
        raise ValueError("'answer' is missing or null")
    if kind == "gsm8k":
        if not isinstance(value, str):
            raise ValueError(f"gsm8k 'answer' must be a string, got {type(value).__name__}")
        return gsm8k_final_answer(value)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"'answer' must be an integer, got {value!r}")
        return str(value)
    if isinstance(value, list):
        if kind == "str":
            raise ValueError(f"'answer' must be a string, got a list {value!r}")
        if not value or not all(isinstance(x, str) for x in value):
            raise ValueError(f"'answer' alias list must be a non-empty list of strings, got {value!r}")
        return list(value)
    if kind == "aliases":
        if isinstance(value, str) and value.strip():
            return [value]
        raise ValueError(f"'answer' must be a list of aliases, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"'answer' must be a non-empty string, got {value!r}")
    return value


def _jsonl_example(record: Any, rowno: int, spec: BenchmarkSpec, source: str) -> Example:
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    question = None
    qfield = None
    for name in spec.question_fields:
        if isinstance(record.get(name), str) and record[name].strip():
            question, qfield = record[name], name
            break
    if question is None:
        raise ValueError(f"no non-empty question field (looked for {', '.join(spec.question_fields)})")
    generic = spec.answer_kind == "any"
    answer_key = "ground_truth" if generic and "answer" not in record else "answer"
    gt = _parse_answer(record.get(answer_key), spec.answer_kind)
    extra = {k: v for k, v in record.items() if k not in (qfield, "question", answer_key)}
    if spec.answer_kind == "gsm8k":
        extra["rationale"] = record["answer"]
    if "Level" in record:
        extra["level"] = record["Level"]
    rid = record.get(spec.id_field) if spec.id_field else None
    ex_id = f"{source}-{rid if rid is not None else rowno - 1}"
    ability: str | None = spec.task
    messages = None
    if generic:
        # a file written from Example.to_dict() (e.g. `appo data synth`) round-trips
        ability = record.get("ability") if isinstance(record.get("ability"), str) else None
        if isinstance(record.get("data_source"), str) and record["data_source"]:
            source = record["data_source"]
            ex_id = str(rid) if rid is not None else f"{source}-{rowno - 1}"
        messages = _messages_or_none(record.get("messages"))
        if isinstance(record.get("extra"), dict):
            known = ("extra", "messages", "id", "data_source", "ability")
            extra = {**{k: v for k, v in extra.items() if k not in known}, **record["extra"]}
    return Example(
        id=ex_id,
        data_source=source,
        question=question,
        ground_truth=gt,
        messages=messages,
        ability=ability,
        extra=extra,
    )


def _messages_or_none(value: Any) -> list[dict[str, str]] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in value
    ):
        raise ValueError("'messages' must be a list of {role, content} string objects")
    return [{"role": m["role"], "content": repair_backspace(m["content"])} for m in value]


def iter_eval_jsonl(
    path: str | os.PathLike[str],
    *,
    benchmark: str | None = None,
    skip_bad_rows: bool = False,
    report: ReadReport | None = None,
) -> Iterator[Example]:
    """Stream an evaluation jsonl file line by line. ``benchmark`` defaults to the name of the parent
    folder; unknown names use a generic schema (``question``/``Question``/``problem`` + ``answer``).
    Blank lines are ignored; the last line need not end with a newline. Rows are decoded one by one, so
    an invalid UTF-8 byte is an error of its row only; a UTF-8 byte-order mark at the start is ignored."""
    path = Path(path)
    report = report if report is not None else ReadReport(str(path))
    name = benchmark or benchmark_for_path(path)
    spec = BENCHMARKS.get(name or "", GENERIC_SPEC)
    source = spec.name if spec is not GENERIC_SPEC else (name or path.parent.name or path.stem)
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the with-block below
    except OSError as exc:
        raise DataError(f"{path}: cannot open: {exc}") from exc
    with fh:
        for rowno, raw in enumerate(fh, start=1):
            if rowno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise ValueError(f"invalid UTF-8 byte {raw[exc.start]:#04x} at byte {exc.start}") from exc
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"invalid JSON: {exc.msg} at column {exc.colno}") from exc
                ex = _jsonl_example(record, rowno, spec, source)
            except ValueError as exc:
                msg = f"{path}: row {rowno}: {exc}"
                if not skip_bad_rows:
                    raise DataError(msg) from exc
                report.add_error(msg)
                continue
            report.rows_read += 1
            yield ex


# --------------------------------------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------------------------------------
def iter_examples(
    path: str | os.PathLike[str],
    *,
    benchmark: str | None = None,
    skip_bad_rows: bool = False,
    report: ReadReport | None = None,
    repair_boxed: bool = True,
) -> Iterator[Example]:
    """Stream any supported file: ``.parquet`` (RL schema) or ``.jsonl``/``.json`` (evaluation schema)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file")
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        return iter_rl_parquet(p, skip_bad_rows=skip_bad_rows, report=report, repair_boxed=repair_boxed)
    if suffix in (".jsonl", ".json"):
        return iter_eval_jsonl(p, benchmark=benchmark, skip_bad_rows=skip_bad_rows, report=report)
    raise DataError(f"{p}: unsupported file type {suffix!r} (expected .parquet or .jsonl)")


def read_examples(
    path: str | os.PathLike[str],
    *,
    benchmark: str | None = None,
    skip_bad_rows: bool = False,
    repair_boxed: bool = True,
    limit: int | None = None,
) -> tuple[list[Example], ReadReport]:
    """Read a whole file (or its first ``limit`` good rows) into memory; returns (examples, report)."""
    report = ReadReport(str(path))
    out: list[Example] = []
    for ex in iter_examples(
        path, benchmark=benchmark, skip_bad_rows=skip_bad_rows, report=report, repair_boxed=repair_boxed
    ):
        out.append(ex)
        if limit is not None and len(out) >= limit:
            break
    return out, report
