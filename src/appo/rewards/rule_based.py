"""Rule-based rewards: ``deep_research`` (the reference training reward), ``qa``, ``math`` and ``combined``.

All have the signature ``(response_text, ground_truth, **info) -> RewardResult``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from appo.rewards.base import GroundTruth, RewardResult, as_aliases
from appo.rewards.math_equiv import math_verify_equal, numeric_equal
from appo.rewards.text import (
    answer_span,
    cover_match,
    exact_match,
    extract_final_answer,
    format_error,
    last_boxed,
    token_f1,
    used_both_tools,
)

FORMAT_PENALTY = -1.0
TOOL_BONUS = 0.1

# data sources whose items are graded as math / as QA by the ``combined`` reward (lower-case keys)
MATH_SOURCES = frozenset(
    {
        "aime24",
        "aime25",
        "math500",
        "math",
        "gsm8k",
        "amc23",
        "tabmwp",
        "gaokao2023en",
        "college_math",
        "svamp",
        "asdiv",
        "mawps",
        "minerva_math",
        "olympiadbench",
        "synthetic_python",
    }
)
QA_SOURCES = frozenset(
    {
        "hotpotqa",
        "2wiki",
        "musique",
        "bamboogle",
        "simpleqa",
        "webwalker",
        "xbench",
        "dr_simpledeepsearch0.8k",
        "dr_nan",
        "synthetic_search",
    }
)
_MATHY_PLAIN = re.compile(r"^[\s\d.,+\-*/()=<>%:]+$")


def _fail(reason: str, **components: float) -> RewardResult:
    return RewardResult(FORMAT_PENALTY, {"format_ok": 0.0, **components}, reason=reason, answer=None)


# --------------------------------------------------------------------------------------------------------
# deep research (reference training reward)
# --------------------------------------------------------------------------------------------------------
def deep_research(response_text: str, ground_truth: GroundTruth, **info: Any) -> RewardResult:
    """The reference deep-research training reward.

    1. tag-format check (:func:`appo.rewards.text.format_error`) → −1 on failure;
    2. answer = last brace-matched ``\\boxed{}`` of the first ``<answer>…</answer>`` → −1 if none;
    3. token F1 after SQuAD normalisation, yes/no rule, max over aliases;
    4. score = F1 + 0.1 if F1 > 0 and the response contains both ``</search>`` and ``</python>``; F1 if
       F1 > 0; else 0.

    Strings are graded as given (a string ground truth is one alias). ``info`` is ignored.
    """
    err = format_error(response_text)
    if err is not None:
        return _fail(f"format error: {err}")
    span = answer_span(response_text)
    answer = last_boxed(span) if span is not None else None
    if answer is None:
        return _fail("could not extract a \\boxed{} answer")
    aliases = as_aliases(ground_truth, parse_json_list=False)
    f1 = max(token_f1(answer, gt) for gt in aliases)
    if f1 > 0:
        bonus = TOOL_BONUS if used_both_tools(response_text) else 0.0
        score = f1 + bonus
        reason = f"f1={f1:.4f}" + (" + multi-tool bonus" if bonus else "")
    else:
        bonus, score, reason = 0.0, 0.0, "wrong answer"
    return RewardResult(
        score, {"format_ok": 1.0, "f1": f1, "tool_bonus": bonus}, reason=reason, answer=answer
    )


# --------------------------------------------------------------------------------------------------------
# QA
# --------------------------------------------------------------------------------------------------------
def _fallback_answer(text: str) -> str:
    tail = text.rsplit("</think>", 1)[-1]
    return tail.strip()


def qa_scores(prediction: str, ground_truth: GroundTruth) -> dict[str, float]:
    """``em``, ``cover_em`` and ``f1`` of ``prediction``, each the max over the aliases."""
    aliases = as_aliases(ground_truth)
    return {
        "em": max(exact_match(prediction, gt) for gt in aliases),
        "cover_em": max(cover_match(prediction, gt) for gt in aliases),
        "f1": max(token_f1(prediction, gt) for gt in aliases),
    }


def qa(response_text: str, ground_truth: GroundTruth, *, metric: str = "f1", **info: Any) -> RewardResult:
    """QA reward: exact match, cover EM (normalised gold is a substring of the normalised answer) and token
    F1 with SQuAD normalisation, each the max over aliases. ``score`` = the component named by ``metric``
    (``f1`` by default, or ``em`` / ``cover_em``).

    The answer is the last ``\\boxed{}`` in the ``<answer>`` span, else the span, else the last ``\\boxed{}``
    anywhere, else the text after the last ``</think>`` (component ``has_answer`` = 0 in that case).
    """
    if metric not in ("f1", "em", "cover_em"):
        raise ValueError(f"unknown QA metric {metric!r}; expected one of f1, em, cover_em")
    answer = extract_final_answer(response_text)
    has_answer = answer is not None
    if answer is None:
        answer = _fallback_answer(response_text)
    comps = qa_scores(answer, ground_truth)
    comps["has_answer"] = float(has_answer)
    return RewardResult(comps[metric], comps, reason=f"{metric}={comps[metric]:.4f}", answer=answer)


# --------------------------------------------------------------------------------------------------------
# math
# --------------------------------------------------------------------------------------------------------
def math_equal(prediction: str, ground_truth: GroundTruth) -> tuple[bool, str]:
    """Whether ``prediction`` equals any alias; returns (equal, method) with method ``exact`` (identical up
    to whitespace), ``numeric``, ``math_verify`` or ``""``."""
    compact = "".join(prediction.split())
    for gt in as_aliases(ground_truth, parse_json_list=False):
        if compact and compact == "".join(gt.split()):
            return True, "exact"
        if numeric_equal(prediction, gt):
            return True, "numeric"
        if math_verify_equal(prediction, gt):
            return True, "math_verify"
    return False, ""


def math(response_text: str, ground_truth: GroundTruth, **info: Any) -> RewardResult:
    """Math reward: 1 when the extracted answer is equivalent to the ground truth (math-verify, with a
    numeric fallback), else 0.

    The answer is extracted like :func:`qa`; without any ``<answer>``/``\\boxed{}`` the last five non-empty
    lines are handed to math-verify's own extraction (component ``has_answer`` = 0).
    """
    answer = extract_final_answer(response_text)
    has_answer = answer is not None
    if answer is None:
        lines = [ln for ln in response_text.splitlines() if ln.strip()]
        answer = "\n".join(lines[-5:])
    equal, method = math_equal(answer, ground_truth) if answer.strip() else (False, "")
    comps = {
        "math_equal": float(equal),
        "numeric_equal": float(method == "numeric"),
        "has_answer": float(has_answer),
    }
    reason = f"equivalent ({method})" if equal else "not equivalent"
    return RewardResult(float(equal), comps, reason=reason, answer=answer)


# --------------------------------------------------------------------------------------------------------
# combined
# --------------------------------------------------------------------------------------------------------
def looks_mathematical(ground_truth: GroundTruth) -> bool:
    """Heuristic for rows without a task label: LaTeX, or digits with only arithmetic punctuation."""
    for gt in as_aliases(ground_truth, parse_json_list=False):
        s = gt.strip()
        if "\\" in s or "^" in s or "_{" in s:
            return True
        if _MATHY_PLAIN.match(s) and any(ch.isdigit() for ch in s):
            return True
    return False


def task_for(ground_truth: GroundTruth, info: Mapping[str, Any]) -> str:
    """``math`` or ``qa`` for one row: explicit ``task``/``ability`` (also inside ``extra_info``), then the
    data source table, then :func:`looks_mathematical`."""
    extra = info.get("extra_info") or {}
    for label in (info.get("task"), info.get("ability"), extra.get("task"), extra.get("ability")):
        if isinstance(label, str) and label.lower() in ("math", "qa"):
            return label.lower()
    source = str(info.get("data_source") or "").lower()
    if source in MATH_SOURCES:
        return "math"
    if source in QA_SOURCES:
        return "qa"
    return "math" if looks_mathematical(ground_truth) else "qa"


def combined(
    response_text: str,
    ground_truth: GroundTruth,
    *,
    tool_bonus: float = TOOL_BONUS,
    **info: Any,
) -> RewardResult:
    """Default reward for mixed math + QA data.

    Same format rules and answer extraction as :func:`deep_research` (format failure or no ``\\boxed{}``
    → −1). Then, by :func:`task_for`: math rows score 1/0 by equivalence (math-verify + numeric fallback,
    so ``\\frac{1}{2}`` = ``0.5``); QA rows score the deep-research token F1 (yes/no rule, max over
    aliases). A positive score gets ``tool_bonus`` (0.1) when both search and python were used, so the
    range is {−1} ∪ [0, 1.1] as in the reference.
    """
    err = format_error(response_text)
    if err is not None:
        return _fail(f"format error: {err}")
    span = answer_span(response_text)
    answer = last_boxed(span) if span is not None else None
    if answer is None:
        return _fail("could not extract a \\boxed{} answer")
    task = task_for(ground_truth, info)
    comps: dict[str, float] = {"format_ok": 1.0, "task_math": float(task == "math")}
    if task == "math":
        equal, _ = math_equal(answer, ground_truth)
        base = float(equal)
        comps["math_equal"] = base
    else:
        base = max(token_f1(answer, gt) for gt in as_aliases(ground_truth, parse_json_list=False))
        comps["f1"] = base
    bonus = tool_bonus if base > 0 and used_both_tools(response_text) else 0.0
    comps["tool_bonus"] = bonus
    reason = f"{task}: {base:.4f}" + (" + multi-tool bonus" if bonus else "")
    return RewardResult(base + bonus, comps, reason=reason, answer=answer)
