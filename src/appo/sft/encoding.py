"""Conversations → ``(input_ids, labels)`` with the loss on assistant tokens only.

The sequence is tokenised **segment by segment**, the way an RL rollout builds it:

* the prompt is the chat template rendered with ``add_generation_prompt=True`` (tokenised without extra
  special tokens, i.e. the ids the rollout feeds the model);
* the assistant text is split into model-written pieces and tool-result pieces (``<result>…</result>``
  plus the whitespace the tool inserted before it); each piece is tokenised on its own, as the rollout
  appends generated ids and then the separately tokenised result text;
* the turn ends with the end-of-turn token the chat template writes (``<|im_end|>`` for ChatML templates,
  which is the tokenizer's EOS and the rollout's stop token).

Labels are ``-100`` on prompt tokens and — unless ``mask_tool_results=False`` (the reference trains on
them) — on tool-result tokens. Multi-turn conversations train on every assistant turn; the text between
turns comes from the chat template and is masked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from appo.sft.traces import Conversation, SFTDataError

__all__ = [
    "IGNORE_INDEX",
    "EncodedExample",
    "Segment",
    "encode_conversation",
    "split_tool_results",
]

IGNORE_INDEX = -100
_RESULT = re.compile(r"\s*<result>.*?</result>", re.S)


@dataclass(frozen=True)
class Segment:
    """A piece of text and its role: ``prompt`` (template), ``model`` (assistant-written) or ``tool``."""

    text: str
    kind: str


@dataclass
class EncodedExample:
    """Token ids, labels (``-100`` = no loss) and the kind of every token (0 prompt, 1 model, 2 tool)."""

    input_ids: list[int]
    labels: list[int]
    kinds: list[int]
    id: str = ""
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_trained(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


KIND_IDS = {"prompt": 0, "model": 1, "tool": 2}


def split_tool_results(text: str, result_tag: str = "result") -> list[Segment]:
    """Split assistant text into ``model`` and ``tool`` segments.

    A tool segment is the whitespace before ``<result>`` plus the block through ``</result>`` (the
    runtime inserts `` <result>\\n…\\n</result>``). An unclosed ``<result>`` raises :class:`SFTDataError`.
    """
    pattern = _RESULT if result_tag == "result" else re.compile(rf"\s*<{result_tag}>.*?</{result_tag}>", re.S)
    out: list[Segment] = []
    pos = 0
    for m in pattern.finditer(text):
        if m.start() > pos:
            out.append(Segment(text[pos : m.start()], "model"))
        out.append(Segment(m.group(0), "tool"))
        pos = m.end()
    rest = text[pos:]
    if f"<{result_tag}>" in rest:
        raise SFTDataError(
            f"unclosed <{result_tag}> block in assistant text near {rest[rest.index('<' + result_tag) :][:60]!r}"
        )
    if rest:
        out.append(Segment(rest, "model"))
    return out


def _render(tokenizer: Any, messages: Sequence[dict[str, str]], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
    )


def conversation_segments(conv: Conversation, tokenizer: Any) -> list[Segment]:
    """The full sequence as prompt / model / tool segments, in order (nothing after the last turn)."""
    messages = conv.messages
    if not any(m["role"] == "assistant" for m in messages):
        raise SFTDataError(f"{conv.id or 'conversation'}: no assistant turn to train on")
    full = _render(tokenizer, messages, add_generation_prompt=False)
    eos = tokenizer.eos_token
    segments: list[Segment] = []
    pos = 0
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        prefix = _render(tokenizer, messages[:i], add_generation_prompt=True)
        content = msg["content"]
        if not full.startswith(prefix) or not full.startswith(content, len(prefix)) or len(prefix) < pos:
            raise SFTDataError(
                f"{conv.id or 'conversation'}: the chat template does not render assistant turn {i} as "
                "'generation prompt + content' (templates that rewrite history are not supported)"
            )
        segments.append(Segment(full[pos : len(prefix)], "prompt"))
        segments.extend(split_tool_results(content))
        pos = len(prefix) + len(content)
        # The end-of-turn marker the template writes right after the content is what the model must
        # learn to emit; ChatML: <|im_end|> (= EOS of SmolLM2/Qwen). Otherwise train on the EOS token.
        if eos and full.startswith(eos, pos):
            segments.append(Segment(eos, "model"))
            pos += len(eos)
        elif eos:
            segments.append(Segment(eos, "model"))
    return [s for s in segments if s.text]


def encode_conversation(
    conv: Conversation,
    tokenizer: Any,
    *,
    mask_tool_results: bool = True,
    max_length: int | None = None,
    overlong: str = "truncate",
) -> EncodedExample | None:
    """Tokenise ``conv``; ``None`` when it is over ``max_length`` and ``overlong="drop"`` (or nothing
    trainable survives truncation)."""
    ids: list[int] = []
    kinds: list[int] = []
    for seg in conversation_segments(conv, tokenizer):
        piece = tokenizer(seg.text, add_special_tokens=False)["input_ids"]
        ids.extend(piece)
        kinds.extend([KIND_IDS[seg.kind]] * len(piece))
    truncated = False
    if max_length is not None and len(ids) > max_length:
        if overlong == "drop":
            return None
        ids, kinds, truncated = ids[:max_length], kinds[:max_length], True
    trained = {KIND_IDS["model"]} | (set() if mask_tool_results else {KIND_IDS["tool"]})
    labels = [t if k in trained else IGNORE_INDEX for t, k in zip(ids, kinds, strict=True)]
    if not any(x != IGNORE_INDEX for x in labels):
        return None
    return EncodedExample(ids, labels, kinds, id=conv.id, truncated=truncated)
