"""SFT conversations: ShareGPT / ARPO-SFT files and synthetic tool-use traces.

A :class:`Conversation` is a list of chat messages (``system`` / ``user`` / ``assistant``). Assistant
text carries the whole trajectory inline — ``<think>``, ``<python>``/``<search>`` calls, the
``<result>…</result>`` blocks the environment inserted, and the final ``<answer>`` — exactly the
ARPO-SFT row format (``eval-tools-data.md`` §5).

Synthetic traces are built from the seeded task generator (:func:`appo.data.generate_synthetic`): for each
task a correct trajectory is written, its tool calls are **executed with the real tools** (the python
sandbox; BM25 search over the generator's corpus) and the real results are inserted with the runtime's
result format (`` <result>\\n…\\n</result>`` by default). The phrasing of reasoning, queries, code and
answer varies with the seed. Every trace is checked with :func:`appo.rewards.deep_research` (format ok,
score > 0); a task whose real tool output does not contain the answer is skipped and counted.
"""

from __future__ import annotations

import json
import random
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appo.data.prompts import get_prompt
from appo.data.readers import Example

__all__ = [
    "Conversation",
    "SFTDataError",
    "TraceReport",
    "build_synthetic_traces",
    "read_conversations",
    "read_sharegpt",
    "write_conversations",
]

_ROLE_ALIASES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
}


class SFTDataError(ValueError):
    """An SFT data file or row is malformed; the message names the file and row."""


@dataclass
class Conversation:
    """One SFT example: chat messages whose assistant turns hold the inline tool trajectory."""

    messages: list[dict[str, str]]
    id: str = ""
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_sharegpt(self) -> dict[str, Any]:
        """ARPO-SFT row form: ``{"system", "conversations": [{"from", "value"}]}``."""
        system = next((m["content"] for m in self.messages if m["role"] == "system"), None)
        names = {"user": "human", "assistant": "gpt"}
        turns = [
            {"from": names[m["role"]], "value": m["content"]} for m in self.messages if m["role"] != "system"
        ]
        row: dict[str, Any] = {"id": self.id, "conversations": turns}
        if system is not None:
            row["system"] = system
        if self.meta:
            row["meta"] = self.meta
        return row


@dataclass
class TraceReport:
    """What building a dataset saw: rows read, skipped (with the first reasons), tool failures."""

    source: str
    rows: int = 0
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)

    def skip(self, reason: str) -> None:
        self.skipped += 1
        if len(self.reasons) < 20:
            self.reasons.append(reason)


# ------------------------------------------------------------------------------------------ ShareGPT


def _row_messages(row: Any, where: str, system_default: str | None) -> list[dict[str, str]]:
    if not isinstance(row, Mapping):
        raise SFTDataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    turns = row.get("conversations", row.get("messages"))
    if not isinstance(turns, list) or not turns:
        raise SFTDataError(f"{where}: needs a non-empty 'conversations' (or 'messages') list")
    messages: list[dict[str, str]] = []
    system = row.get("system")
    if system is not None:
        if not isinstance(system, str):
            raise SFTDataError(f"{where}: 'system' must be a string")
        messages.append({"role": "system", "content": system})
    for j, turn in enumerate(turns):
        if not isinstance(turn, Mapping):
            raise SFTDataError(f"{where}: turn {j} is not an object")
        role = turn.get("from", turn.get("role"))
        content = turn.get("value", turn.get("content"))
        if role not in _ROLE_ALIASES:
            raise SFTDataError(
                f"{where}: turn {j} has role {role!r}; expected one of {sorted(_ROLE_ALIASES)}"
            )
        if not isinstance(content, str):
            raise SFTDataError(f"{where}: turn {j} ({role}) has no string 'value'/'content'")
        role = _ROLE_ALIASES[role]
        if role == "system" and (j > 0 or messages):
            raise SFTDataError(f"{where}: a system turn may only come first")
        messages.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in messages):
        raise SFTDataError(f"{where}: no assistant (gpt) turn to train on")
    if messages[0]["role"] != "system" and system_default is not None:
        messages.insert(0, {"role": "system", "content": system_default})
    return messages


def _iter_rows(path: Path) -> Iterator[tuple[int, Any]]:
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    yield i, json.loads(line)
                except json.JSONDecodeError as exc:
                    yield i, SFTDataError(f"{path}:{i}: invalid JSON: {exc.msg}")
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SFTDataError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if not isinstance(data, list):
        raise SFTDataError(f"{path}: a .json SFT file must hold a list of rows")
    yield from enumerate(data, 1)


def read_sharegpt(
    path: str | Path,
    *,
    system_default: str | None = None,
    system_override: str | None = None,
    skip_bad_rows: bool = False,
    report: TraceReport | None = None,
) -> list[Conversation]:
    """Read a ShareGPT / ARPO-SFT ``.json`` (list) or ``.jsonl`` file.

    Rows: ``{"system"?, "conversations": [{"from": "human"|"gpt", "value"}]}`` or
    ``{"messages": [{"role", "content"}]}``. ``system_default`` is used for rows without a system prompt
    (SmolLM2's chat template would otherwise inject its own); ``system_override`` replaces every row's.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SFT data file not found: {path}")
    if path.suffix not in (".json", ".jsonl"):
        raise SFTDataError(f"{path}: expected a .json or .jsonl ShareGPT file")
    report = report if report is not None else TraceReport(str(path))
    out: list[Conversation] = []
    for i, row in _iter_rows(path):
        where = f"{path}:{i}" if path.suffix == ".jsonl" else f"{path}[row {i}]"
        try:
            if isinstance(row, SFTDataError):
                raise row
            messages = _row_messages(row, where, system_default)
        except SFTDataError as exc:
            if not skip_bad_rows:
                raise
            report.skip(str(exc))
            continue
        if system_override is not None:
            messages = [m for m in messages if m["role"] != "system"]
            messages.insert(0, {"role": "system", "content": system_override})
        row_id = str(row.get("id", f"{path.stem}-{i}"))
        out.append(Conversation(messages, id=row_id, source=str(path), meta=dict(row.get("meta") or {})))
        report.rows += 1
    return out


def write_conversations(conversations: Sequence[Conversation], path: str | Path) -> Path:
    """Write conversations as ARPO-SFT jsonl (readable back with :func:`read_sharegpt`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for conv in conversations:
            fh.write(json.dumps(conv.to_sharegpt(), ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


# ------------------------------------------------------------------------------------------ synthetic

_PY_OPEN = (
    "The numbers are large, so I will compute the exact value with the python tool.",
    "Doing this by hand is error-prone. Let me use python to get the exact integer.",
    "I need an exact integer result here; python can compute it reliably.",
    "This is a pure computation. I will run it in the python interpreter.",
    "Let me compute {expr} with python instead of by hand.",
)
_PY_CLOSE = (
    "The python interpreter printed {r}, so the answer is {r}.",
    "The computation returned {r}. That is the exact result.",
    "Python gives {r}. So the final answer is {r}.",
    "The result of the code is {r}.",
)
_SEARCH_OPEN = (
    "I do not know {what} the {org}. I will search for it.",
    "The question asks about the {org}. Let me look it up with the search tool.",
    "To answer this I need information about the {org}, so I will search.",
    "I should find {what} the {org} using the wikipedia search tool.",
)
_SEARCH_HOP = (
    "The result says the {org} was founded by {founder}. Now I need to find {what2} {founder}.",
    "So the founder of the {org} is {founder}. Next I will search for {founder} to find {what2} them.",
    "The founder is {founder}. I still need {what2} {founder}, so I will search again.",
)
_SEARCH_CLOSE = (
    "According to the search results, the answer is {r}.",
    "The search result states it clearly: {r}.",
    "From the retrieved page, the answer is {r}.",
    "The document says {r}, which answers the question.",
)
_ANSWERS = (
    "<answer> The final answer is \\[ \\boxed{{{r}}} \\] </answer>",
    "<answer> \\boxed{{{r}}} </answer>",
    "<answer> The answer is \\boxed{{{r}}}. </answer>",
    "<answer> The final answer is \\boxed{{{r}}} </answer>",
)
_GAPS = (" ", "\n", " ")
_ORG_RE = re.compile(r"the ((?:[A-Z][a-z]+ )+[A-Z][a-z]+)(?: founded| located| born|\?)")


def _python_code(rng: random.Random, extra: Mapping[str, Any]) -> tuple[str, str]:
    kind = extra.get("kind")
    if kind == "product":
        a, b = extra["a"], extra["b"]
        expr = f"{a} × {b}"
        code = rng.choice([f"print({a} * {b})", f"{a} * {b}", f"a = {a}\nb = {b}\nprint(a * b)"])
    elif kind == "modpow":
        a, e, m = extra["a"], extra["e"], extra["m"]
        expr = f"{a}^{e} mod {m}"
        code = rng.choice(
            [
                f"print(pow({a}, {e}, {m}))",
                f"pow({a}, {e}, {m})",
                f"base, exp, mod = {a}, {e}, {m}\nprint(pow(base, exp, mod))",
            ]
        )
    elif kind == "modprod":
        x, y, z = extra["factors"]
        m = extra["m"]
        expr = f"({x} × {y} × {z}) mod {m}"
        code = rng.choice(
            [
                f"print(({x} * {y} * {z}) % {m})",
                f"({x} * {y} * {z}) % {m}",
                f"import math\nprint(math.prod([{x}, {y}, {z}]) % {m})",
            ]
        )
    else:
        raise SFTDataError(f"synthetic python task of unknown kind {kind!r}")
    return code, expr


def _what(question: str) -> str:
    q = question.lower()
    if "year" in q and "born" in q:
        return "the birth year of the founder of"
    if "city" in q and "born" in q:
        return "the birthplace of the founder of"
    if "year" in q:
        return "the founding year of"
    if "city" in q:
        return "the location of"
    return "the founder of"


class _TraceBuilder:
    def __init__(self, runtime: Any, rng: random.Random, corpus_titles: Mapping[str, str]) -> None:
        self.runtime = runtime
        self.rng = rng
        self.titles = corpus_titles

    def call(self, tag: str, argument: str) -> tuple[str, str, bool]:
        from appo.tools import Session

        with Session() as session:
            res = self.runtime.run(tag, argument, session)
        return res.text, self.runtime.format(res), bool(res.ok)

    def python(self, ex: Example) -> tuple[str, str]:
        rng = self.rng
        code, expr = _python_code(rng, ex.extra)
        text, formatted, ok = self.call("python", code)
        value = text.strip()
        if not ok or value != str(ex.ground_truth):
            raise _Skip(f"{ex.id}: python returned {value[:80]!r}, expected {ex.ground_truth!r}")
        gap = rng.choice(_GAPS)
        response = (
            f"<think> {rng.choice(_PY_OPEN).format(expr=expr)} </think>{gap}<python>\n{code}\n</python>"
            f"{formatted}{gap}<think> {rng.choice(_PY_CLOSE).format(r=value)} </think>{gap}"
            f"{rng.choice(_ANSWERS).format(r=value)}"
        )
        return response, value

    def search(self, ex: Example) -> tuple[str, str]:
        rng = self.rng
        match = _ORG_RE.search(ex.question)
        if match is None:
            raise _Skip(f"{ex.id}: cannot find the organisation in {ex.question!r}")
        org = match.group(1)
        answer = str(ex.ground_truth)
        what = _what(ex.question)
        gap = rng.choice(_GAPS)
        hops = int(ex.extra.get("hops", 1))
        q1 = (
            rng.choice([ex.question, org, f"{org} {what.split(' of')[0].replace('the ', '')}"])
            if hops == 1
            else org
        )
        if hops > 1 and rng.random() < 0.5:
            q1 = f"{org} founder"
        text1, formatted1, ok1 = self.call("search", q1)
        if not ok1:
            raise _Skip(f"{ex.id}: search failed: {text1[:80]}")
        parts = [
            f"<think> {rng.choice(_SEARCH_OPEN).format(what=what, org=org)} </think>{gap}<search> {q1} </search>{formatted1}"
        ]
        found = text1
        if hops > 1:
            doc_ids = list(ex.extra.get("doc_ids") or [])
            founder = self.titles.get(doc_ids[1]) if len(doc_ids) > 1 else None
            if not founder or founder not in text1:
                raise _Skip(f"{ex.id}: first search did not return the founder")
            what2 = "the birth year of" if "year" in ex.question.lower() else "the birthplace of"
            hop = rng.choice(_SEARCH_HOP).format(org=org, founder=founder, what2=what2)
            q2 = rng.choice(
                [
                    founder,
                    f"{founder} born",
                    f"{founder} birthplace" if "city" in ex.question.lower() else f"{founder} birth year",
                ]
            )
            text2, formatted2, ok2 = self.call("search", q2)
            if not ok2:
                raise _Skip(f"{ex.id}: search failed: {text2[:80]}")
            parts.append(f"{gap}<think> {hop} </think>{gap}<search> {q2} </search>{formatted2}")
            found = text2
        if answer not in found:
            raise _Skip(f"{ex.id}: the real search result does not contain the answer {answer!r}")
        parts.append(
            f"{gap}<think> {rng.choice(_SEARCH_CLOSE).format(r=answer)} </think>{gap}{rng.choice(_ANSWERS).format(r=answer)}"
        )
        return "".join(parts), answer


class _Skip(Exception):
    pass


def build_synthetic_traces(
    n_python: int,
    n_search: int,
    *,
    seed: int,
    tools_cfg: Mapping[str, Any] | None = None,
    system_prompt: str | None = None,
    prompt: str = "code_search",
    search_top_k: int = 3,
    workdir: str | Path | None = None,
    report: TraceReport | None = None,
) -> list[Conversation]:
    """Correct tool-use trajectories for ``generate_synthetic(n_python, n_search, seed=seed)``.

    ``tools_cfg`` is the ``actor_rollout_ref.rollout.tools`` subtree (python params and the result format
    are kept; the search tool is pointed at the generator's corpus with the local BM25 provider, top
    ``search_top_k`` results). ``system_prompt`` replaces the template's system prompt (as
    ``data.system_prompt`` does in RL). The corpus is written under ``workdir`` (a temporary directory
    when None). Every trace passes the deep-research format check with a positive score.
    """
    from omegaconf import DictConfig, OmegaConf

    from appo.data import generate_synthetic
    from appo.rewards import deep_research
    from appo.tools import build_tools

    template = get_prompt(prompt)
    synth = generate_synthetic(n_python, n_search, seed=seed, prompt=template)
    report = report if report is not None else TraceReport("synthetic")
    raw: dict[str, Any] = {}
    if isinstance(tools_cfg, DictConfig):
        raw = OmegaConf.to_container(tools_cfg, resolve=True)  # type: ignore[assignment]
    elif tools_cfg is not None:
        raw = json.loads(json.dumps(tools_cfg))
    instances = raw.get("tool_instances") or {}
    python_spec = next(
        (v for v in instances.values() if str(v.get("class_path", "")).endswith(("python", "PythonTool"))),
        {"class_path": "python", "params": {}},
    )
    cleanup: tempfile.TemporaryDirectory[str] | None = None
    if workdir is None:
        cleanup = tempfile.TemporaryDirectory(prefix="appo-sft-corpus-")
        workdir = cleanup.name
    corpus_path = synth.write_corpus(Path(workdir) / f"synthetic_corpus_seed{seed}.jsonl")
    tools = {
        "call_limit": raw.get("call_limit", 5),
        "timeout": raw.get("timeout", 30.0),
        "retry_count": raw.get("retry_count", 1),
        "result_format": raw.get("result_format", " <result>\n{result}\n</result>"),
        "max_workers": 4,
        "tool_instances": {
            "python": {
                "class_path": python_spec.get("class_path", "python"),
                "params": python_spec.get("params") or {},
            },
            "search": {
                "class_path": "search",
                "params": {
                    "providers": ["local"],
                    "corpus": str(corpus_path),
                    "top_k": search_top_k,
                    "live_cache": False,
                },
            },
        },
    }
    registry = build_tools(tools)
    runtime = registry.runtime()
    titles = {doc["id"]: doc["title"] for doc in synth.corpus}
    builder = _TraceBuilder(runtime, random.Random(f"appo-sft-traces-{seed}"), titles)
    out: list[Conversation] = []
    try:
        for ex in synth.examples:
            try:
                if ex.data_source == "synthetic_python":
                    response, answer = builder.python(ex)
                else:
                    response, answer = builder.search(ex)
            except _Skip as skip:
                report.skip(str(skip))
                continue
            scored = deep_research(response, ex.ground_truth)
            if scored.score <= 0:
                report.skip(f"{ex.id}: trace failed the deep-research check ({scored.reason})")
                continue
            messages = [dict(m) for m in (ex.messages or template.messages(ex.question))]
            if system_prompt is not None:
                messages = [m for m in messages if m["role"] != "system"]
                messages.insert(0, {"role": "system", "content": system_prompt})
            messages.append({"role": "assistant", "content": response})
            meta = {"data_source": ex.data_source, "ground_truth": answer, "seed": seed}
            out.append(Conversation(messages, id=ex.id, source="synthetic", meta=meta))
            report.rows += 1
    finally:
        runtime.close()
        registry.close()
        if cleanup is not None:
            cleanup.cleanup()
    return out


def read_conversations(
    files: Sequence[str],
    *,
    system_default: str | None,
    system_override: str | None,
    skip_bad_rows: bool,
    synthetic: Mapping[str, Any] | None = None,
    tools_cfg: Mapping[str, Any] | None = None,
    prompt: str = "code_search",
    workdir: str | Path | None = None,
) -> tuple[list[Conversation], list[TraceReport]]:
    """All conversations of ``files`` (paths, or ``synthetic`` for generated traces)."""
    out: list[Conversation] = []
    reports: list[TraceReport] = []
    for name in files:
        if name == "synthetic":
            syn = dict(synthetic or {})
            report = TraceReport("synthetic")
            out.extend(
                build_synthetic_traces(
                    int(syn.get("n_python", 96)),
                    int(syn.get("n_search", 96)),
                    seed=int(syn.get("seed", 1234)),
                    tools_cfg=tools_cfg,
                    system_prompt=system_override,
                    prompt=prompt,
                    search_top_k=int(syn.get("search_top_k", 3)),
                    workdir=workdir,
                    report=report,
                )
            )
        else:
            report = TraceReport(str(name))
            out.extend(
                read_sharegpt(
                    name,
                    system_default=system_default,
                    system_override=system_override,
                    skip_bad_rows=skip_bad_rows,
                    report=report,
                )
            )
        reports.append(report)
    return out, reports
