"""QA (em / cover_em / f1), math equivalence and the combined reward."""

from __future__ import annotations

import threading
from fractions import Fraction

import pytest

from appo.rewards import as_aliases, combined, math, qa, task_for
from appo.rewards.math_equiv import hendrycks_is_equiv, math_verify_equal, numeric_equal, to_number
from appo.rewards.text import extract_final_answer, normalize_answer


def boxed(ans: str) -> str:
    return f"<think> t </think> <answer> The final answer is \\[ \\boxed{{{ans}}} \\] </answer>"


# ---------------------------------------------------------------------------------------------------------
# QA
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("The Beatles", "beatles"),
        ("an Apple a day", "apple day"),
        ("U.S.A.", "usa"),
        ("  Hello,   World! ", "hello world"),
        ("Theatre then", "theatre then"),  # only whole words are articles
    ],
)
def test_squad_normalisation(raw: str, norm: str) -> None:
    assert normalize_answer(raw) == norm


def test_qa_components_articles_and_punctuation() -> None:
    out = qa(boxed("the Beatles!"), ["Beatles"])
    assert out.components == {"em": 1.0, "cover_em": 1.0, "f1": 1.0, "has_answer": 1.0}
    assert out.score == 1.0


def test_qa_cover_em_and_partial_f1() -> None:
    out = qa(boxed("It was James Madison, in 1812"), ["james madison"])
    assert out.components["em"] == 0.0
    assert out.components["cover_em"] == 1.0
    # prediction tokens: it was james madison in 1812 (6), overlap 2 -> P=1/3, R=1
    assert out.components["f1"] == pytest.approx(0.5)
    assert qa(boxed("It was James Madison, in 1812"), ["james madison"], metric="cover_em").score == 1.0
    assert qa(boxed("It was James Madison, in 1812"), ["james madison"], metric="em").score == 0.0


def test_qa_yes_no() -> None:
    assert qa(boxed("Yes"), "yes").score == 1.0
    assert qa(boxed("no"), "yes").score == 0.0
    assert qa(boxed("yes, definitely"), "yes").components["f1"] == 0.0


def test_qa_aliases_max_and_json_string_aliases() -> None:
    gold = ["the five boroughs", "City of New York", "New York"]
    assert qa(boxed("New York"), gold).components["em"] == 1.0
    assert qa(boxed("New York"), '["x", "New York"]').components["em"] == 1.0
    assert as_aliases("[4,\\infty)") == ["[4,\\infty)"]  # not JSON: stays one alias
    assert as_aliases(70) == ["70"]


def test_qa_answer_extraction_fallbacks() -> None:
    assert qa("<answer> Paris </answer>", "Paris").score == 1.0
    out = qa("<think> hmm </think> Paris", "Paris")
    assert out.score == 1.0 and out.components["has_answer"] == 0.0
    assert extract_final_answer("x \\boxed{\\text{Paris}}") == "Paris"
    with pytest.raises(ValueError, match="unknown QA metric"):
        qa("x", "y", metric="acc")


# ---------------------------------------------------------------------------------------------------------
# math
# ---------------------------------------------------------------------------------------------------------
EQUIVALENT = [
    ("0.5", "\\frac{1}{2}"),
    ("1/2", "\\frac{1}{2}"),
    ("\\dfrac{1}{2}", "0.5"),
    ("\\frac12", "\\frac{1}{2}"),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"),
    ("3\\sqrt3-6", "3\\sqrt{3} - 6"),
    ("\\{2, 1\\}", "\\{1,2\\}"),
    ("[4, \\infty)", "[4,\\infty)"),
    ("(0,1]", "(0, 1]"),
    ("1,000", "1000"),
    ("2\\pi", "\\pi \\cdot 2"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("x^2+2x+1", "(x+1)^2"),
    ("204", "204"),
]
NOT_EQUIVALENT = [
    ("0.51", "\\frac{1}{2}"),
    ("(0,1)", "(0,1]"),
    ("\\{1, 3\\}", "\\{1,2\\}"),
    ("3\\sqrt{3} + 6", "3\\sqrt{3} - 6"),
    ("Paris", "204"),
]


@pytest.mark.parametrize(("pred", "gold"), EQUIVALENT)
def test_math_equivalent_forms_score_one(pred: str, gold: str) -> None:
    out = math(boxed(pred), gold)
    assert out.score == 1.0, out


@pytest.mark.parametrize(("pred", "gold"), NOT_EQUIVALENT)
def test_math_different_values_score_zero(pred: str, gold: str) -> None:
    assert math(boxed(pred), gold).score == 0.0


def test_math_without_box_uses_last_lines() -> None:
    out = math("Let me compute.\nSo the result is $\\frac{3}{4}$.", "0.75")
    assert out.score == 1.0
    assert out.components["has_answer"] == 0.0


def test_math_verify_works_off_the_main_thread() -> None:
    results: list[bool] = []
    t = threading.Thread(target=lambda: results.append(math_verify_equal("0.5", "\\frac{1}{2}")))
    t.start()
    t.join()
    assert results == [True]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1,234", Fraction(1234)),
        ("\\frac{3}{4}", Fraction(3, 4)),
        ("-\\dfrac{3}{4}", Fraction(-3, 4)),
        ("3/4", Fraction(3, 4)),
        ("50\\%", Fraction(50)),
        ("5\\text{ cm}", Fraction(5)),
        ("$12.50$", Fraction(25, 2)),
        ("x+1", None),
        ("1/0", None),
    ],
)
def test_numeric_fallback_parser(text: str, value: Fraction | None) -> None:
    assert to_number(text) == value


def test_numeric_equal() -> None:
    assert numeric_equal("0.75", "\\frac{3}{4}")
    assert numeric_equal("1e3", "1000")
    assert not numeric_equal("0.7501", "\\frac{3}{4}")


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("\\frac12", "0.5", True),  # 0.5 -> \frac{1}{2}, \frac12 -> \frac{1}{2}
        ("\\dfrac{1}{2}", "1/2", True),
        ("x = 5", "5", True),  # short left-hand side dropped
        ("10\\%", "10", True),
        ("10%", "10", False),  # bare % is not removed
        ("5\\text{ cm}", "5", True),
        ("\\sqrt2", "\\sqrt{2}", True),
        ("0.50", "\\frac{1}{2}", False),  # purely textual after rewriting
        (".5", "0.5", True),
    ],
)
def test_hendrycks_is_equiv(a: str, b: str, equal: bool) -> None:
    assert hendrycks_is_equiv(a, b) is equal


# ---------------------------------------------------------------------------------------------------------
# combined
# ---------------------------------------------------------------------------------------------------------
def test_task_routing() -> None:
    assert task_for("x", {"ability": "math"}) == "math"
    assert task_for("x", {"extra_info": {"ability": "qa"}, "data_source": "gsm8k"}) == "qa"
    assert task_for("Frank Lowy", {"data_source": "aime24"}) == "math"
    assert task_for("204", {"data_source": "hotpotqa"}) == "qa"
    assert task_for("\\frac{1}{2}", {"data_source": "DR_hle_100"}) == "math"
    assert task_for("E. H. Shepard", {"data_source": "DR_hle_100"}) == "qa"
    assert task_for("1.95 m", {}) == "qa"
    assert task_for("34689", {}) == "math"


def test_combined_math_and_qa_rows() -> None:
    tools = "<think> a </think> <search> q </search> <result> r </result> <python> 1 </python> <result> 1 </result>"
    text = tools + " <answer> \\boxed{0.5} </answer>"
    assert combined(text, "\\frac{1}{2}", ability="math").score == pytest.approx(1.1)
    assert combined(text, "\\frac{2}{3}", ability="math").score == 0.0
    qa_out = combined(boxed("Eleanor"), "Eleanor Of Lancaster", ability="qa")
    assert qa_out.score == pytest.approx(0.5)
    assert qa_out.components["task_math"] == 0.0
    assert combined(boxed("x"), "x", tool_bonus=0.0, ability="qa").score == 1.0
    assert combined("<answer>\\boxed{1}</answer>", "1", ability="math").score == -1.0


def test_real_ground_truths_are_equivalent_to_themselves() -> None:
    from appo.data import read_examples, rl_path

    path = rl_path("valid")
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    examples, _ = read_examples(path)
    for ex in examples:
        out = combined(boxed(ex.ground_truth), ex.ground_truth, ability=ex.ability)
        assert out.score == 1.0, (ex.id, ex.ground_truth, out)
        # a reformatted (spaces removed) math answer still scores 1 under combined, unlike deep_research
        if ex.ability == "math":
            squeezed = ex.ground_truth.replace(" ", "")
            assert combined(boxed(squeezed), ex.ground_truth, ability="math").score == 1.0
