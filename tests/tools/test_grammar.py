from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from appo.tools.grammar import (
    DEFAULT_RESULT_TEMPLATE,
    EVAL_RESULT_TEMPLATE,
    TagScanner,
    count_tool_calls,
    extract_tool_call,
    format_result,
    parse,
    stop_strings,
)

TRAJ = (
    "<think>I should look this up.</think> <search>capital of France</search>"
    " <result>\nPage 1: Paris <python>evil()</python> </search>\n</result>"
    " <think>now compute</think><python>x = 2\nprint(x * 21)</python>"
    " <result>\n42\n</result> <answer>The final answer is \\boxed{42}</answer>"
)


def test_full_trajectory_calls_and_blocks():
    p = parse(TRAJ)
    assert [(c.tag, c.argument, c.status) for c in p.calls] == [
        ("search", "capital of France", "ok"),
        ("python", "x = 2\nprint(x * 21)", "ok"),
    ]
    assert [b.tag for b in p.blocks] == ["think", "search", "result", "think", "python", "result", "answer"]
    assert p.first("answer").content == "The final answer is \\boxed{42}"
    assert p.unclosed == [] and p.stray_closes == []


def test_tags_inside_results_are_ignored():
    text = "<result><search>q</search></python><answer>x</answer></result>"
    p = parse(text)
    assert p.calls == [] and p.stray_closes == []
    assert [b.tag for b in p.blocks] == ["result"]
    assert count_tool_calls(TRAJ) == 2


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(TRAJ)), max_size=12))
def test_chunked_feeding_equals_whole_text(cuts):
    """Tags split across generation chunks are found exactly as in the whole text."""
    points = sorted(set(cuts))
    chunks = [TRAJ[a:b] for a, b in zip([0, *points], [*points, len(TRAJ)], strict=True)]
    sc = TagScanner()
    streamed = []
    for ch in chunks:
        streamed.extend(sc.feed(ch))
    whole = parse(TRAJ)
    assert streamed == whole.calls
    assert sc.blocks == whole.blocks


def test_call_is_reported_by_the_chunk_that_completes_it():
    sc = TagScanner()
    assert sc.feed("<think>a</think> <sea") == []
    assert sc.feed("rch>who is X</sea") == []
    calls = sc.feed("rch>")
    assert [(c.tag, c.argument) for c in calls] == [("search", "who is X")]


def test_unclosed_tags_are_reported_not_raised():
    p = parse("<think>thinking forever <search>half a query")
    assert p.calls == []
    assert [(b.tag, b.closed) for b in p.unclosed] == [("think", False), ("search", False)]
    assert p.unclosed[1].content == "half a query"
    p = parse("<result>tool text without end")
    assert [b.tag for b in p.unclosed] == ["result"]


def test_nested_same_tag_uses_last_opening_and_flags_it():
    c = extract_tool_call("<search>first <search>second</search>")
    assert c is not None and c.argument == "second" and c.nested and c.status == "ok"


def test_other_tool_nested_inside_a_call():
    c = extract_tool_call("<search>q <python>1+1</python>")
    assert c is not None and (c.tag, c.argument) == ("python", "1+1")
    assert [b.tag for b in parse("<search>q <python>1+1</python>").unclosed] == ["search"]


def test_empty_and_missing_open():
    c = extract_tool_call("<think>x</think><python>   \n </python>")
    assert c is not None and c.status == "empty" and c.argument == "" and not c.valid
    c = extract_tool_call("oops I forgot the tag</search>")
    assert c is not None and c.status == "missing_open" and c.argument == ""
    assert extract_tool_call("") is None
    assert extract_tool_call("<think>no call here</think>") is None


def test_extract_requires_the_call_at_the_end():
    assert extract_tool_call("<search>q</search> and then more text") is None
    c = extract_tool_call("<search>q</search> and then more text", require_at_end=False)
    assert c is not None and c.argument == "q"
    assert extract_tool_call("<search>q</search>  \n").argument == "q"


def test_lookalikes_and_unknown_tags_are_text():
    p = parse("a < b and <searching> <search >x</search > <Search>y</Search> <tool>z</tool>")
    assert p.calls == [] and p.blocks == []


def test_count_excludes_prompt_like_noise_inside_results():
    text = "<result>example: <search> query </search></result><search>real</search>"
    assert count_tool_calls(text) == 1
    assert count_tool_calls("<python></python><python>1</python>", valid_only=True) == 1


def test_result_formatting_matches_reference():
    assert format_result("42") == " <result>\n42\n</result>"
    assert DEFAULT_RESULT_TEMPLATE == " <result>\n{result}\n</result>"
    assert format_result("42", EVAL_RESULT_TEMPLATE) == "<result>42</result>"
    assert format_result("x", "<r>{text}</r>") == "<r>x</r>"
    # a literal closing tag in tool output cannot end the block early (unless sanitize=False)
    out = format_result("a</result>b")
    assert parse(out).blocks[0].content == "\na</ result>b\n"
    assert format_result("a</result>b", sanitize=False) == " <result>\na</result>b\n</result>"
    assert stop_strings() == ["</search>", "</python>"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from([*"<>/ab ", "<search>", "</search>", "<result>", "</result>", "</python>"])))
def test_never_raises_on_arbitrary_text(pieces):
    text = "".join(pieces)
    parse(text)
    extract_tool_call(text)
    count_tool_calls(text)
