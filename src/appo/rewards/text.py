"""Text utilities shared by the rule rewards: tag-format check, ``\\boxed`` extraction, SQuAD-style
normalisation and token F1.

These restate the behaviour of the reference deep-research reward (see ``docs/data-and-rewards.md``); they
are written from the specification, not copied.
"""

from __future__ import annotations

import re
import string
from collections import Counter

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ANSWER_SPAN = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
YES_NO = frozenset({"yes", "no", "noanswer"})
TOOL_TAGS = ("search", "python")


# --------------------------------------------------------------------------------------------------------
# normalisation and token F1
# --------------------------------------------------------------------------------------------------------
def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, delete ASCII punctuation, replace whole-word a/an/the by a space,
    collapse whitespace."""
    text = str(text).lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def token_f1(prediction: str, reference: str) -> float:
    """Bag-of-tokens F1 of the SQuAD-normalised strings with the yes/no rule: when either side normalises
    to ``yes``/``no``/``noanswer`` and the two differ, the score is 0."""
    pred = normalize_answer(prediction)
    ref = normalize_answer(reference)
    if (pred in YES_NO or ref in YES_NO) and pred != ref:
        return 0.0
    pred_tokens = pred.split()
    ref_tokens = ref.split()
    overlap = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def cover_match(prediction: str, reference: str) -> float:
    """1 when the normalised reference occurs inside the normalised prediction ("cover EM")."""
    ref = normalize_answer(reference)
    if not ref:
        return 0.0
    return float(ref in normalize_answer(prediction))


# --------------------------------------------------------------------------------------------------------
# format check (deep-research reward, step 1)
# --------------------------------------------------------------------------------------------------------
def _tool_call_error(text: str, tag: str) -> str | None:
    open_tag, close_tag = f"<{tag}>", f"</{tag}>"
    pos = 0
    while True:
        start = text.find(open_tag, pos)
        if start < 0:
            return None
        close = text.find(close_tag, start)
        res_open = text.find("<result>", start)
        res_close = text.find("</result>", res_open) if res_open >= 0 else -1
        if close < 0 or res_open < 0 or res_close < 0:
            return f"{open_tag} at offset {start} is not followed by {close_tag}, <result> and </result>"
        if not start < close < res_open < res_close:
            return f"{open_tag} at offset {start}: {close_tag}, <result>, </result> are out of order"
        pos = res_close


def format_error(text: str) -> str | None:
    """Return why ``text`` fails the deep-research tag format, or ``None`` when it passes.

    Checks, in order: ``<think>``/``</think>`` counts equal and ≥ 1; exactly one ``<answer>`` and one
    ``</answer>``; every ``<search>`` (then every ``<python>``) followed by its closer, ``<result>`` and
    ``</result>`` in that order; ``<answer>`` before ``</answer>``; the answer span contains ``\\boxed{``
    and ``}``.
    """
    n_think, n_think_close = text.count("<think>"), text.count("</think>")
    if n_think != n_think_close:
        return f"<think> count {n_think} != </think> count {n_think_close}"
    if n_think == 0:
        return "no <think> </think> block"
    n_ans, n_ans_close = text.count("<answer>"), text.count("</answer>")
    if n_ans != 1 or n_ans_close != 1:
        return f"expected exactly one <answer> and one </answer>, found {n_ans} and {n_ans_close}"
    for tag in TOOL_TAGS:
        err = _tool_call_error(text, tag)
        if err:
            return err
    start, end = text.find("<answer>"), text.find("</answer>")
    if start > end:
        return "</answer> comes before <answer>"
    span = text[start:end]
    if "\\boxed{" not in span or "}" not in span:
        return "answer has no \\boxed{...}"
    return None


# --------------------------------------------------------------------------------------------------------
# answer extraction
# --------------------------------------------------------------------------------------------------------
def answer_span(text: str) -> str | None:
    """Content of the first ``<answer>…</answer>`` pair (non-greedy), or ``None``."""
    m = _ANSWER_SPAN.search(text)
    return m.group(1) if m else None


def _match_braces(text: str, start: int) -> int | None:
    """Index of the ``}`` closing the first ``{`` at or after ``start``; ``None`` if unbalanced."""
    depth = 0
    for i in range(start, len(text)):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
            if depth < 0:
                return None
    return None


def last_boxed(text: str, *, allow_fbox: bool = False) -> str | None:
    """Content of the last ``\\boxed{…}`` in ``text`` (brace-matched), or ``None``.

    Compatible with the reference extractor: if a ``\\boxed `` (with a space) form occurs, the text after
    the last such occurrence up to the next ``$`` is the answer. ``\\fbox{…}`` is accepted only when
    ``allow_fbox`` (the reference extractor finds it but then fails to unwrap it).
    """
    if "\\boxed " in text:
        return text.split("\\boxed ")[-1].split("$")[0]
    idx = text.rfind("\\boxed")
    prefix = "\\boxed{"
    if idx < 0:
        idx = text.rfind("\\fbox")
        prefix = "\\fbox{"
        if idx < 0 or not allow_fbox:
            return None
    end = _match_braces(text, idx)
    if end is None:
        return None
    whole = text[idx : end + 1]
    if not whole.startswith(prefix):
        return None
    return whole[len(prefix) : -1]


def strip_text_wrapper(answer: str) -> str:
    """Remove one ``\\text{…}`` wrapper around the whole answer (what the evaluation pipeline does)."""
    s = answer.strip()
    if s.startswith("\\text{") and _match_braces(s, 0) == len(s) - 1:
        return s[len("\\text{") : -1]
    return answer


def extract_final_answer(text: str) -> str | None:
    """Lenient answer extraction for the QA and math rewards.

    Order: last ``\\boxed{}`` inside the first ``<answer>`` span; the ``<answer>`` span itself; the last
    ``\\boxed{}`` anywhere; ``None``.
    """
    span = answer_span(text)
    if span is not None:
        boxed = last_boxed(span, allow_fbox=True)
        if boxed is not None:
            return strip_text_wrapper(boxed).strip()
        return span.strip()
    boxed = last_boxed(text, allow_fbox=True)
    if boxed is not None:
        return strip_text_wrapper(boxed).strip()
    return None


def used_both_tools(text: str) -> bool:
    """True when the response contains both ``</search>`` and ``</python>`` (the multi-tool bonus test)."""
    return "</search>" in text and "</python>" in text
