"""The reference deep-research reward: every branch, plus property tests against slow references."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appo.rewards import RewardResult, combined, deep_research
from appo.rewards.text import format_error, normalize_answer, token_f1

THINK = "<think> reasoning </think>"
SEARCH = "<search> who </search> <result>\nsome page\n</result>"
PYTHON = "<python> print(1+1) </python> <result>\n2\n</result>"


def resp(answer: str = "\\boxed{Paris}", *, body: str = "", think: str = THINK) -> str:
    return f"{think}{body} <answer> The final answer is \\[ {answer} \\] </answer>"


# ---------------------------------------------------------------------------------------------------------
# format failures → −1
# ---------------------------------------------------------------------------------------------------------
FORMAT_FAILURES = {
    "no think": resp(think=""),
    "unbalanced think": resp(think="<think> a </think> <think> b"),
    "only closing think": resp(think="a </think>"),
    "two answers": resp() + " <answer> \\boxed{x} </answer>",
    "no answer": f"{THINK} The answer is \\boxed{{Paris}}",
    "missing </answer>": f"{THINK} <answer> \\boxed{{Paris}}",
    "answer closed before opened": f"{THINK} </answer> \\boxed{{Paris}} <answer>",
    "search without result": resp(body=" <search> q </search> "),
    "search without closer": resp(body=" <search> q <result> r </result>"),
    "search result without </result>": resp(body=" <search> q </search> <result> r"),
    "search result before closer": resp(body=" <search> q <result> r </result> </search>"),
    "python without result": resp(body=" <python> x = 1 </python>"),
    "python closer missing": resp(body=" <python> x <result> 1 </result>"),
    "second search incomplete": resp(body=" " + SEARCH + " <search> again </search>"),
    "no boxed in answer": resp(answer="Paris"),
    "boxed outside answer": f"{THINK} \\boxed{{Paris}} <answer> Paris </answer>",
    "boxed without closing brace": resp(answer="\\boxed{Paris"),
}


@pytest.mark.parametrize("name", sorted(FORMAT_FAILURES))
def test_format_failure_scores_minus_one(name: str) -> None:
    text = FORMAT_FAILURES[name]
    assert format_error(text) is not None
    out = deep_research(text, "Paris")
    assert out.score == -1.0
    assert out.components["format_ok"] == 0.0
    assert out.reason.startswith("format error")
    # the combined reward shares the format rules
    assert combined(text, "Paris").score == -1.0


def test_unmatched_braces_fail_extraction_not_format() -> None:
    text = resp(answer="\\boxed{{Paris}")  # contains "\boxed{" and "}" but the braces never balance
    assert format_error(text) is None
    out = deep_research(text, "Paris")
    assert out.score == -1.0
    assert "extract" in out.reason


def test_correct_answer_in_think_only_still_fails_without_think_tags() -> None:
    # a missing <think> is fatal even for a correct answer
    assert deep_research("<answer> \\boxed{Paris} </answer>", "Paris").score == -1.0


# ---------------------------------------------------------------------------------------------------------
# scores
# ---------------------------------------------------------------------------------------------------------
def test_wrong_answer_scores_zero_even_with_both_tools() -> None:
    out = deep_research(resp("\\boxed{Berlin}", body=" " + SEARCH + " " + PYTHON), "Paris")
    assert out == RewardResult(
        0.0, {"format_ok": 1.0, "f1": 0.0, "tool_bonus": 0.0}, "wrong answer", "Berlin"
    )


def test_exact_answer_scores_one() -> None:
    out = deep_research(resp("\\boxed{paris.}"), "Paris")
    assert out.score == 1.0
    assert out.answer == "paris."


def test_partial_f1() -> None:
    out = deep_research(resp("\\boxed{Eleanor}"), "Eleanor Of Lancaster")
    # P = 1/1, R = 1/3 -> F1 = 0.5
    assert out.score == pytest.approx(0.5)
    assert out.components["f1"] == pytest.approx(0.5)


def test_bonus_needs_both_tools() -> None:
    both = deep_research(resp("\\boxed{Eleanor}", body=" " + SEARCH + " " + PYTHON), "Eleanor Of Lancaster")
    assert both.score == pytest.approx(0.6)
    assert both.components["tool_bonus"] == pytest.approx(0.1)
    only_search = deep_research(resp("\\boxed{Eleanor}", body=" " + SEARCH), "Eleanor Of Lancaster")
    assert only_search.score == pytest.approx(0.5)
    only_python = deep_research(resp("\\boxed{Paris}", body=" " + PYTHON), "Paris")
    assert only_python.score == 1.0
    full = deep_research(resp("\\boxed{Paris}", body=" " + PYTHON + " " + SEARCH), "Paris")
    assert full.score == pytest.approx(1.1)


def test_yes_no_rule() -> None:
    assert deep_research(resp("\\boxed{Yes.}"), "yes").score == 1.0
    assert deep_research(resp("\\boxed{yes it is}"), "Yes").score == 0.0  # gold is yes, prediction differs
    assert deep_research(resp("\\boxed{no}"), "no answer here").score == 0.0  # prediction is "no"
    # without the rule this would have partial overlap
    assert token_f1("yes it is", "it is") > 0


def test_alias_list_takes_max() -> None:
    out = deep_research(resp("\\boxed{New York City}"), ["the five boroughs", "New York", "NYC"])
    assert out.score == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))


def test_last_boxed_and_nested_braces() -> None:
    out = deep_research(resp("\\boxed{London} or rather \\boxed{\\frac{1}{2}}"), "x")
    assert out.answer == "\\frac{1}{2}"


def test_boxed_space_variant_matches_reference_extractor() -> None:
    out = deep_research(resp("\\boxed{London} \\boxed Paris"), "Paris")
    assert out.answer == "Paris \\] "
    assert out.score == 1.0


def test_math_is_graded_by_token_f1_in_parity_reward() -> None:
    # the reference grades math by F1 of normalised strings: spacing changes the token bag
    assert deep_research(resp("\\boxed{3\\sqrt{3}-6}"), "3\\sqrt{3} - 6").score == 0.0
    assert deep_research(resp("\\boxed{0.5}"), "\\frac{1}{2}").score == 0.0
    # ... while the combined reward uses math equivalence for math rows
    assert combined(resp("\\boxed{3\\sqrt{3}-6}"), "3\\sqrt{3} - 6", ability="math").score == 1.0
    assert combined(resp("\\boxed{0.5}"), "\\frac{1}{2}", ability="math").score == 1.0


def test_tool_call_scan_resumes_after_result() -> None:
    # a second, well-formed call after the first passes; tags inside a result do not matter once skipped
    body = " " + SEARCH + " " + SEARCH + " " + PYTHON
    assert deep_research(resp(body=body), "Paris").score == pytest.approx(1.1)


# ---------------------------------------------------------------------------------------------------------
# slow, obviously-correct references
# ---------------------------------------------------------------------------------------------------------
def slow_normalize(text: str) -> str:
    lowered = text.lower()
    no_punct = ""
    for ch in lowered:
        if ch not in string.punctuation:
            no_punct += ch
    words = []
    for word in no_punct.replace("\t", " ").replace("\n", " ").split(" "):
        if word and word not in ("a", "an", "the"):
            words.append(word)
    return " ".join(words)


def slow_f1(pred: str, ref: str) -> float:
    p, r = slow_normalize(pred), slow_normalize(ref)
    if p != r and (p in ("yes", "no", "noanswer") or r in ("yes", "no", "noanswer")):
        return 0.0
    p_tokens, remaining = p.split(), r.split()
    common = 0
    for tok in p_tokens:
        if tok in remaining:
            remaining.remove(tok)
            common += 1
    if common == 0:
        return 0.0
    precision, recall = common / len(p_tokens), common / len(r.split())
    return 2 * precision * recall / (precision + recall)


words = st.sampled_from(
    ["a", "an", "the", "Paris", "paris,", "New", "york", "yes", "no", "of", "U.S.", "x-y", "1"]
)
phrases = st.lists(words, min_size=0, max_size=6).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(phrases, phrases)
def test_f1_matches_slow_reference(pred: str, ref: str) -> None:
    assert normalize_answer(pred) == slow_normalize(pred)
    assert token_f1(pred, ref) == pytest.approx(slow_f1(pred, ref))


segments = st.lists(st.sampled_from([THINK, SEARCH, PYTHON]), max_size=5)


@settings(max_examples=200, deadline=None)
@given(segments, phrases, phrases)
def test_grammar_valid_responses_score_the_reference_formula(segs: list[str], pred: str, gold: str) -> None:
    body = " " + " ".join(segs)
    text = resp(f"\\boxed{{{pred}}}", body=body)
    f1 = slow_f1(pred, gold)
    bonus = 0.1 if (SEARCH in segs and PYTHON in segs and f1 > 0) else 0.0
    expected = f1 + bonus if f1 > 0 else 0.0
    assert deep_research(text, gold).score == pytest.approx(expected)


@settings(max_examples=200, deadline=None)
@given(
    segments,
    st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "</search>", "</python>", "</result>"]),
)
def test_deleting_a_required_tag_gives_minus_one(segs: list[str], tag: str) -> None:
    text = resp("\\boxed{Paris}", body=" " + " ".join(segs))
    if tag not in text:
        return
    idx = text.rfind(tag)
    broken = text[:idx] + text[idx + len(tag) :]
    if tag in ("<think>", "</think>", "<answer>", "</answer>"):
        assert deep_research(broken, "Paris").score == -1.0
    elif tag == "</result>" or tag in ("</search>", "</python>"):
        # the last such tag belongs to a tool call (the answer contains none): the call is now incomplete
        assert deep_research(broken, "Paris").score == -1.0
