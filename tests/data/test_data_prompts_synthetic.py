"""Prompt templates with a real transformers chat template, and the seeded synthetic tasks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from appo.data import (
    Example,
    PromptTemplate,
    available_prompts,
    build_messages,
    generate_synthetic,
    get_prompt,
    register_prompt,
    render_prompt,
)
from appo.data.prompts import CODE_SEARCH_SYSTEM, apply_chat_template
from appo.rewards import combined, reward_for_source

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]")))
    tok.chat_template = CHATML
    return tok


def test_named_templates() -> None:
    assert {"code_search", "search", "math", "base", "code_search_cn", "react", "rl"} <= set(
        available_prompts()
    )
    assert get_prompt().name == "code_search"
    assert get_prompt("rl").system == CODE_SEARCH_SYSTEM
    assert len(CODE_SEARCH_SYSTEM) == 1148
    for name in ("code_search", "search", "math", "base"):
        system = get_prompt(name).system
        assert system is not None and "\\boxed{" in system and "<answer>" in system and "\x08" not in system
    assert "<python>" not in (get_prompt("search").system or "")
    assert "<search>" not in (get_prompt("math").system or "")
    with pytest.raises(KeyError, match="unknown prompt"):
        get_prompt("nope")


def test_render_with_chat_template(tokenizer: PreTrainedTokenizerFast) -> None:
    text = render_prompt("What is 2+2?", tokenizer, "base")
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.")
    assert text.endswith("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
    no_gen = apply_chat_template(tokenizer, build_messages("q"), add_generation_prompt=False)
    assert not no_gen.endswith("assistant\n")


def test_missing_chat_template_is_a_clear_error() -> None:
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]")))
    with pytest.raises(ValueError, match="no chat_template"):
        render_prompt("q", tok)


def test_example_messages_and_overrides(tmp_path: Path, tokenizer: PreTrainedTokenizerFast) -> None:
    rl = Example(
        "r-0",
        "DR_x",
        "q?",
        "a",
        messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "q?"}],
    )
    assert build_messages(rl) == rl.messages  # keeps its stored prompt
    assert build_messages(rl, "base")[0]["content"] == get_prompt("base").system  # unless asked otherwise
    ev = Example("e-0", "hotpotqa", "Who?", ["x"])
    assert build_messages(ev) == [
        {"role": "system", "content": CODE_SEARCH_SYSTEM},
        {"role": "user", "content": "Who?"},
    ]
    custom = PromptTemplate("terse", "Be terse.", user="Question: {question}\nAnswer:")
    register_prompt(custom)
    assert render_prompt(ev, tokenizer, "terse").startswith(
        "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nQuestion: Who?"
    )
    path = tmp_path / "my_system.txt"
    path.write_text("From a file.", encoding="utf-8")
    assert build_messages("q", str(path))[0] == {"role": "system", "content": "From a file."}
    assert build_messages("q", PromptTemplate("none", None)) == [{"role": "user", "content": "q"}]


# ---------------------------------------------------------------------------------------------------------
# synthetic tasks
# ---------------------------------------------------------------------------------------------------------
def recompute_python_answer(question: str) -> int:
    """Independent check: parse the numbers back out of the question text and compute the answer."""
    nums = [int(x) for x in re.findall(r"\d+", question)]
    if "remainder" in question:
        a, e, m = nums
        return pow(a, e, m)
    if "mod" in question:
        x, y, z, m = nums
        return (x * y * z) % m
    a, b = nums
    return a * b


def test_synthetic_is_seeded_and_exact() -> None:
    a = generate_synthetic(12, 10, seed=3)
    b = generate_synthetic(12, 10, seed=3)
    c = generate_synthetic(12, 10, seed=4)
    assert [e.to_dict() for e in a.examples] == [e.to_dict() for e in b.examples]
    assert a.corpus == b.corpus
    assert [e.question for e in a.examples] != [e.question for e in c.examples]
    python = [e for e in a.examples if e.data_source == "synthetic_python"]
    assert len(python) == 12
    assert {e.extra["kind"] for e in python} == {"product", "modpow", "modprod"}
    for ex in python:
        assert ex.ground_truth == str(recompute_python_answer(ex.question))
        assert ex.ability == "math"
        assert ex.messages is not None and ex.messages[-1]["content"] == ex.question
    products = [e for e in python if e.extra["kind"] == "product"]
    assert all(len(e.ground_truth) >= 10 for e in products)  # big enough to need the tool


def test_synthetic_search_answers_are_only_in_the_corpus() -> None:
    data = generate_synthetic(0, 20, seed=11, n_distractors=15)
    assert len(data.corpus) == 2 * (20 + 15)
    ids = [doc["id"] for doc in data.corpus]
    assert len(set(ids)) == len(ids)
    assert all(set(doc) == {"id", "title", "text"} for doc in data.corpus)
    by_id = {doc["id"]: doc for doc in data.corpus}
    titles = [doc["title"] for doc in data.corpus]
    assert len(set(titles)) == len(titles)
    for ex in data.examples:
        assert ex.data_source == "synthetic_search" and ex.ability == "qa"
        # the entity named in the question has exactly one document
        named = [doc for doc in data.corpus if doc["title"] in ex.question]
        assert len(named) == 1
        support = [by_id[i] for i in ex.extra["doc_ids"]]
        assert named[0] in support
        # the answer is stated in the last supporting document (the second hop for two-hop questions)
        assert ex.ground_truth in support[-1]["text"]
        if ex.extra["hops"] == 2:
            assert ex.ground_truth not in support[0]["text"]
            assert support[1]["title"] in support[0]["text"]  # hop 1 names the hop-2 entity
    assert {ex.extra["hops"] for ex in data.examples} == {1, 2}


def test_synthetic_rewards_and_corpus_file(tmp_path: Path) -> None:
    data = generate_synthetic(3, 3, seed=0)
    for ex in data.examples:
        reward = reward_for_source(ex.data_source)
        good = f"<think> t </think> <answer> \\boxed{{{ex.ground_truth}}} </answer>"
        assert reward(good, ex.ground_truth, ability=ex.ability).score == 1.0
        assert combined(good.replace(ex.ground_truth, "0"), ex.ground_truth, ability=ex.ability).score == 0.0
    path = data.write_corpus(tmp_path / "c" / "corpus.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == data.corpus
    with pytest.raises(ValueError):
        generate_synthetic(-1, 0)
