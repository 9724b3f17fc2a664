"""Tag grammar of tool-using trajectories (reference §4.3).

``<think>…</think>``, ``<search>q</search>``, ``<python>code</python>``, ``<answer>…</answer>`` are written
by the model; ``<result>…</result>`` is inserted by the environment. Everything inside a ``<result>``
block is opaque: tags in tool output never count as calls.

One incremental scanner (:class:`TagScanner`) serves both streaming (chunks of generated text, tags
may be split across chunks) and whole-text parsing, so both give identical results. Nothing here
raises on malformed text: unclosed, nested, stray or empty tags are reported as data.

Nesting rule (as the reference): a call's argument is the text between the closing tag and the
**last** opening tag of the same name before it; an earlier unclosed opening of that tag is reported
as ``nested``. A closing tool tag without any opening tag is reported as a call with status
``missing_open`` (the reference would grab text from the system prompt instead).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "DEFAULT_RESULT_TEMPLATE",
    "EVAL_RESULT_TEMPLATE",
    "TAGS",
    "TOOL_TAGS",
    "Block",
    "CallStatus",
    "TagScanner",
    "ToolCallParse",
    "count_tool_calls",
    "extract_tool_call",
    "format_result",
    "parse",
    "stop_strings",
]

TOOL_TAGS: tuple[str, ...] = ("search", "python")
TAGS: tuple[str, ...] = ("think", "answer", "search", "python", "result")
#: RL rollouts (reference): a space, <result>, newline, text, newline, </result>
DEFAULT_RESULT_TEMPLATE = " <result>\n{result}\n</result>"
#: evaluation pipeline of the reference
EVAL_RESULT_TEMPLATE = "<result>{result}</result>"

CallStatus = Literal["ok", "empty", "missing_open"]


@dataclass(frozen=True)
class Block:
    """A tagged span. ``start``/``end`` are offsets of the opening tag start and closing tag end
    (``end`` = ``None`` when unclosed); ``content`` is the raw text between the tags."""

    tag: str
    content: str
    start: int
    end: int | None
    closed: bool = True
    nested: bool = False  # an earlier opening of the same tag was left unclosed


@dataclass(frozen=True)
class ToolCallParse:
    """A completed tool call: ``<tag>argument</tag>`` (argument stripped)."""

    tag: str
    argument: str
    status: CallStatus
    start: int  # offset of the opening tag (of the closing tag when missing_open)
    end: int  # offset just after the closing tag
    nested: bool = False

    @property
    def valid(self) -> bool:
        return self.status == "ok"


@dataclass
class _Events:
    blocks: list[Block] = field(default_factory=list)
    calls: list[ToolCallParse] = field(default_factory=list)
    stray_closes: list[tuple[str, int]] = field(default_factory=list)


class TagScanner:
    """Incremental scanner; feed text in arbitrary chunks.

    ``feed`` returns the tool calls completed by that chunk (outside ``<result>`` blocks); all blocks,
    calls and stray closing tags found so far are in ``blocks``/``calls``/``stray_closes``.
    """

    def __init__(self, tags: Sequence[str] = TAGS, tool_tags: Sequence[str] = TOOL_TAGS) -> None:
        self.tags = tuple(dict.fromkeys([*tags, *tool_tags, "result"]))
        self.tool_tags = tuple(tool_tags)
        self._tokens: dict[str, tuple[str, bool]] = {}
        for t in self.tags:
            self._tokens[f"<{t}>"] = (t, True)
            self._tokens[f"</{t}>"] = (t, False)
        self._max_tok = max(len(k) for k in self._tokens)
        self.text = ""
        self._pos = 0  # next offset to scan
        self._in_result: int | None = None  # offset of the open <result> tag
        self._open: dict[str, tuple[int, bool]] = {}  # tag -> (offset of opening tag, nested)
        self._ev = _Events()

    @property
    def blocks(self) -> list[Block]:
        return list(self._ev.blocks)

    @property
    def calls(self) -> list[ToolCallParse]:
        return list(self._ev.calls)

    @property
    def stray_closes(self) -> list[tuple[str, int]]:
        return list(self._ev.stray_closes)

    @property
    def in_result(self) -> bool:
        return self._in_result is not None

    def feed(self, chunk: str) -> list[ToolCallParse]:
        self.text += chunk
        n_calls = len(self._ev.calls)
        text = self.text
        while True:
            lt = text.find("<", self._pos)
            if lt < 0:
                self._pos = len(text)
                break
            gt = text.find(">", lt, lt + self._max_tok)
            if gt < 0:
                tail = text[lt : lt + self._max_tok]
                if len(text) - lt < self._max_tok and any(k.startswith(tail) for k in self._tokens):
                    self._pos = lt  # possibly a tag split across chunks: wait for more text
                    break
                self._pos = lt + 1
                continue
            token = text[lt : gt + 1]
            hit = self._tokens.get(token)
            if hit is None:
                self._pos = lt + 1
                continue
            self._pos = gt + 1
            self._handle(hit[0], hit[1], lt, gt + 1)
        return self._ev.calls[n_calls:]

    def _handle(self, tag: str, opening: bool, start: int, end: int) -> None:
        if self._in_result is not None:
            if tag == "result" and not opening:
                s = self._in_result
                self._ev.blocks.append(Block("result", self.text[s + len("<result>") : start], s, end))
                self._in_result = None
            return  # everything else inside a result is opaque text
        if tag == "result":
            if opening:
                self._in_result = start
            else:
                self._ev.stray_closes.append((tag, start))
            return
        if opening:
            prev = self._open.get(tag)
            self._open[tag] = (start, prev is not None)
            return
        opened = self._open.pop(tag, None)
        if opened is None:
            self._ev.stray_closes.append((tag, start))
            if tag in self.tool_tags:
                self._ev.calls.append(ToolCallParse(tag, "", "missing_open", start, end))
            return
        s, nested = opened
        content = self.text[s + len(tag) + 2 : start]
        self._ev.blocks.append(Block(tag, content, s, end, True, nested))
        if tag in self.tool_tags:
            arg = content.strip()
            self._ev.calls.append(ToolCallParse(tag, arg, "ok" if arg else "empty", s, end, nested))

    def unclosed(self) -> list[Block]:
        """Blocks opened but not (yet) closed, including an open ``<result>``."""
        out = [
            Block(t, self.text[s + len(t) + 2 :], s, None, False, nested)
            for t, (s, nested) in self._open.items()
        ]
        if self._in_result is not None:
            s = self._in_result
            out.append(Block("result", self.text[s + len("<result>") :], s, None, False))
        return sorted(out, key=lambda b: b.start)


@dataclass(frozen=True)
class ParseResult:
    blocks: list[Block]
    calls: list[ToolCallParse]
    unclosed: list[Block]
    stray_closes: list[tuple[str, int]]

    def first(self, tag: str) -> Block | None:
        return next((b for b in self.blocks if b.tag == tag), None)

    def all(self, tag: str) -> list[Block]:
        return [b for b in self.blocks if b.tag == tag]


def parse(text: str, tags: Sequence[str] = TAGS, tool_tags: Sequence[str] = TOOL_TAGS) -> ParseResult:
    """Parse a whole text: closed blocks (in closing order), tool calls, unclosed blocks, stray closes."""
    sc = TagScanner(tags, tool_tags)
    sc.feed(text)
    return ParseResult(sc.blocks, sc.calls, sc.unclosed(), sc.stray_closes)


def extract_tool_call(
    segment: str, tool_tags: Sequence[str] = TOOL_TAGS, *, require_at_end: bool = True
) -> ToolCallParse | None:
    """The tool call that ends ``segment`` (the text generated in the current turn), or ``None``.

    With ``require_at_end`` (default) only a call whose closing tag is the end of the segment
    (trailing whitespace allowed) counts — that is what a stop string produces. Never raises; check
    ``status`` (``ok``, ``empty``, ``missing_open``). Only the segment is parsed, never the prompt.
    """
    sc = TagScanner(TAGS, tool_tags)
    calls = sc.feed(segment)
    if not calls:
        return None
    last = calls[-1]
    if require_at_end and segment[last.end :].strip():
        return None
    return last


def count_tool_calls(text: str, tool_tags: Sequence[str] = TOOL_TAGS, *, valid_only: bool = False) -> int:
    """Number of tool calls in ``text`` outside ``<result>`` blocks (use on the response only)."""
    calls = parse(text, TAGS, tool_tags).calls
    return sum(1 for c in calls if c.valid or not valid_only)


def stop_strings(tool_tags: Iterable[str] = TOOL_TAGS) -> list[str]:
    """Generation stop strings: the closing tag of every tool, in order."""
    return [f"</{t}>" for t in tool_tags]


def format_result(text: str, template: str = DEFAULT_RESULT_TEMPLATE, *, sanitize: bool = True) -> str:
    """Wrap tool output for insertion into the trajectory.

    The default template is the reference's RL wrapper; ``{result}`` (or ``{text}``) marks the output.
    With ``sanitize`` a literal ``</result>`` inside the output is rewritten to ``</ result>`` so it
    cannot close the block early.
    """
    if sanitize:
        text = text.replace("</result>", "</ result>")
    if "{result}" in template:
        return template.replace("{result}", text)
    return template.replace("{text}", text)
