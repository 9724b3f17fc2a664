"""Readers against the real shared data (skipped when absent) and against small malformed files."""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from appo.data import (
    EVAL_BENCHMARKS,
    RL_FILES,
    DataError,
    ReadReport,
    eval_path,
    gsm8k_final_answer,
    iter_examples,
    read_examples,
    rl_path,
    shared_data_dir,
)
from appo.data.prompts import CODE_SEARCH_SYSTEM

DATA = shared_data_dir()
needs_data = pytest.mark.skipif(
    not (DATA / "rl").is_dir() or not (DATA / "eval").is_dir(),
    reason=f"shared data folder not found at {DATA} (set APPO_SHARED_DATA to the folder holding rl/ and eval/)",
)

# reference inventory (eval-tools-data.md §3.1)
RL_ROWS = {"train_10k": 10_000, "valid": 180, "hard_search_1k": 1_071, "gaia_test": 103, "hle_test": 100}
EVAL_ROWS = {
    "aime24": 30,
    "aime25": 30,
    "math500": 500,
    "gsm8k": 1_319,
    "hotpotqa": 200,
    "2wiki": 200,
    "musique": 200,
    "bamboogle": 125,
    "SimpleQA": 500,
    "xbench": 100,
    "webwalker": 200,
    "gaia": 103,
}
STORED_PROMPT_MD5 = "3b472e55ea92b44349c2a7fce3ca6e7d"
REPAIRED_PROMPT_MD5 = "c4292c3bb8064e8c86cad495d32fac9d"


def md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def test_inventory_covers_all_files() -> None:
    assert set(RL_FILES) == set(RL_ROWS)
    assert set(EVAL_BENCHMARKS) == set(EVAL_ROWS)


# ---------------------------------------------------------------------------------------------------------
# shared data
# ---------------------------------------------------------------------------------------------------------
@needs_data
@pytest.mark.parametrize("name", sorted(RL_ROWS))
def test_rl_parquet_loads_with_reference_row_count_and_no_backspace(name: str) -> None:
    t0 = time.perf_counter()
    examples, report = read_examples(rl_path(name))
    elapsed = time.perf_counter() - t0
    assert len(examples) == RL_ROWS[name]
    assert report.rows_skipped == 0 and report.rows_read == RL_ROWS[name]
    assert elapsed < 20, f"reading {name} took {elapsed:.1f}s"
    systems = set()
    for ex in examples:
        assert ex.messages is not None and [m["role"] for m in ex.messages] == ["system", "user"]
        for m in ex.messages:
            assert "\x08" not in m["content"]
        assert "\x08" not in ex.question
        assert ex.messages[1]["content"] == ex.question
        assert isinstance(ex.ground_truth, str) and ex.ground_truth
        systems.add(ex.messages[0]["content"])
    # all rows share one system prompt; repaired it is exactly the evaluation prompt `code_search`
    assert len(systems) == 1
    system = systems.pop()
    assert md5(system) == REPAIRED_PROMPT_MD5
    assert system == CODE_SEARCH_SYSTEM
    assert report.boxed_repairs == RL_ROWS[name]


@needs_data
def test_parity_mode_keeps_stored_prompt_bytes() -> None:
    examples, report = read_examples(rl_path("valid"), repair_boxed=False, limit=3)
    assert md5(examples[0].messages[0]["content"]) == STORED_PROMPT_MD5
    assert "\x08oxed" in examples[0].messages[0]["content"]
    assert report.boxed_repairs == 0


@needs_data
def test_rl_file_contents_match_reference_description() -> None:
    valid, _ = read_examples(rl_path("valid"))
    assert [ex.ability for ex in valid] == ["qa"] * 80 + ["math"] * 100
    assert valid[0].ground_truth == "Eleanor Of Lancaster"
    assert valid[90].ground_truth == "104"
    assert valid[0].extra["reward_style"] == "rule" and valid[0].extra["split"] == "valid"
    hard, _ = read_examples(rl_path("hard_search_1k"))
    assert Counter(ex.data_source for ex in hard) == {"DR_simpledeepsearch0.8k": 871, "DR_nan": 200}
    assert hard[0].ground_truth == "E. H. Shepard" and hard[535].ground_truth == "Yes"
    hle, _ = read_examples(rl_path("hle_test"))
    indices = {ex.extra["index"] for ex in hle}
    assert not indices & {32, 42, 45, 78, 82}
    assert hle[50].id == "hle_test-53" and hle[50].ground_truth == "0"
    train, _ = read_examples(rl_path("train_10k"))
    assert Counter(ex.ability for ex in train) == {"math": 5000, "qa": 5000}
    assert train[0].ground_truth == "3\\sqrt{3} - 6"
    assert train[5000].ground_truth == "The Two Little Bears"


@needs_data
@pytest.mark.parametrize("name", sorted(EVAL_ROWS))
def test_eval_jsonl_loads_with_reference_row_count(name: str) -> None:
    examples, report = read_examples(eval_path(name))
    assert len(examples) == EVAL_ROWS[name]
    assert report.rows_skipped == 0
    assert len({ex.id for ex in examples}) == len(examples), "ids must be unique"
    for ex in examples:
        assert ex.data_source == name
        assert ex.question.strip()
        assert ex.messages is None
        assert "\x08" not in ex.question
        if isinstance(ex.ground_truth, list):
            assert ex.ground_truth and all(isinstance(a, str) for a in ex.ground_truth)
        else:
            assert isinstance(ex.ground_truth, str) and ex.ground_truth.strip()


@needs_data
def test_eval_schemas() -> None:
    gsm, _ = read_examples(eval_path("gsm8k"))
    assert gsm[0].ground_truth == "18"
    for ex in gsm:
        float(ex.ground_truth)  # every gsm8k answer parses as a number
        assert "," not in ex.ground_truth
        assert "####" in ex.extra["rationale"]
    aime25, _ = read_examples(eval_path("aime25"))
    assert aime25[0].ground_truth == "70" and aime25[1].ground_truth == "588"
    aime24, _ = read_examples(eval_path("aime24"))
    assert aime24[0].ground_truth == "204" and "solution" in aime24[0].extra
    gaia, _ = read_examples(eval_path("gaia"))
    assert Counter(ex.extra["level"] for ex in gaia) == {1: 39, 2: 52, 3: 12}
    assert gaia[0].ground_truth == "34689" and gaia[0].question.startswith("I’m researching species")
    two, _ = read_examples(eval_path("2wiki"))
    assert max(len(ex.ground_truth) for ex in two) == 21
    assert two[0].ground_truth[:2] == ["the five boroughs", "City of New York"]
    mus, _ = read_examples(eval_path("musique"))
    assert mus[1].ground_truth == ["Emperor Zhaozong of Tang", "Li Jie", "Li Ye"]
    ww, _ = read_examples(eval_path("webwalker"))
    assert all(isinstance(ex.ground_truth, str) for ex in ww)
    m5, _ = read_examples(eval_path("math500"))
    assert m5[0].ground_truth == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert [ex.ability for ex in m5[:1] + gaia[:1]] == ["math", "qa"]


@needs_data
def test_rl_gaia_matches_eval_gaia() -> None:
    rl, _ = read_examples(rl_path("gaia_test"))
    ev, _ = read_examples(eval_path("gaia"))
    assert sorted(ex.ground_truth for ex in rl) == sorted(ex.ground_truth for ex in ev)


# ---------------------------------------------------------------------------------------------------------
# malformed input
# ---------------------------------------------------------------------------------------------------------
def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def test_gsm8k_answer_extraction() -> None:
    assert gsm8k_final_answer("She pays 2*3=6.\n#### 1,200") == "1200"
    assert gsm8k_final_answer("#### -3.5") == "-3.5"
    with pytest.raises(ValueError, match="####"):
        gsm8k_final_answer("no marker")


@pytest.mark.parametrize(
    ("bench", "line", "problem"),
    [
        ("hotpotqa", "{not json", "invalid JSON"),
        ("hotpotqa", '["a list"]', "expected a JSON object"),
        ("hotpotqa", '{"answer": ["x"]}', "no non-empty question field"),
        ("hotpotqa", '{"question": "q"}', "'answer' is missing"),
        ("hotpotqa", '{"question": "q", "answer": []}', "non-empty list of strings"),
        ("hotpotqa", '{"question": "q", "answer": [1, 2]}', "non-empty list of strings"),
        ("gsm8k", '{"question": "q", "answer": "it is 5"}', "####"),
        ("gaia", '{"question": "lower-case key", "answer": "x"}', "Question"),
        ("aime25", '{"problem": "p", "answer": 1.5}', "integer"),
        ("math500", '{"question": "q", "answer": ["x"]}', "must be a string"),
    ],
)
def test_bad_jsonl_row_names_file_row_and_problem(
    tmp_path: Path, bench: str, line: str, problem: str
) -> None:
    good = {"gsm8k": '{"question": "q", "answer": "#### 1"}', "gaia": '{"Question": "q", "answer": "x"}'}.get(
        bench,
        '{"question": "q", "problem": "q", "answer": ["x"]}'
        if bench == "hotpotqa"
        else '{"question": "q", "problem": "q", "answer": "1"}',
    )
    path = write_jsonl(tmp_path / bench / "test.jsonl", [good, "", good, line, good])
    seen = []
    with pytest.raises(DataError) as info:
        for ex in iter_examples(path):
            seen.append(ex)
    msg = str(info.value)
    assert str(path) in msg and "row 4" in msg and problem in msg
    assert len(seen) == 2  # streaming: rows before the bad one were already yielded

    examples, report = read_examples(path, skip_bad_rows=True)
    assert len(examples) == 3
    assert report.rows_skipped == 1 and report.rows_read == 3 and report.rows_total == 4
    assert "row 4" in report.errors[0]


def build_parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def rl_row(gt: object = "x", prompt: object = None, source: object = "DR_test") -> dict:
    if prompt is None:
        prompt = [{"role": "system", "content": "use \x08oxed{}"}, {"role": "user", "content": "q?"}]
    return {
        "data_source": source,
        "prompt": prompt,
        "reward_model": {"ground_truth": gt},
        "extra_info": {"index": 7, "question": "q?", "split": "train"},
    }


def test_bad_parquet_rows(tmp_path: Path) -> None:
    path = build_parquet(tmp_path / "t.parquet", [rl_row(), rl_row(gt=None), rl_row(source=""), rl_row()])
    with pytest.raises(DataError, match=r"t\.parquet: row 2: reward_model\.ground_truth must be a string"):
        list(iter_examples(path))
    report = ReadReport(str(path))
    good = list(iter_examples(path, skip_bad_rows=True, report=report))
    assert len(good) == 2 and report.rows_skipped == 2
    assert "row 3: data_source" in report.errors[1]
    assert good[0].messages[0]["content"] == "use \\boxed{}"
    assert good[0].id == "t-7"


def test_parquet_missing_columns_and_unsupported_files(tmp_path: Path) -> None:
    path = build_parquet(tmp_path / "other.parquet", [{"a": 1}])
    with pytest.raises(DataError, match="missing column"):
        list(iter_examples(path))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported file type"):
        iter_examples(tmp_path / "x.csv")
    with pytest.raises(DataError, match="no such file"):
        iter_examples(tmp_path / "missing.jsonl")


def test_streaming_parquet_over_batches(tmp_path: Path) -> None:
    rows = [rl_row(gt=str(i)) for i in range(2500)]
    rows[2400] = rl_row(gt=None)
    path = build_parquet(tmp_path / "big.parquet", rows)
    seen = []
    with pytest.raises(DataError, match="row 2401"):
        for ex in iter_examples(path):
            seen.append(ex.ground_truth)
    assert seen == [str(i) for i in range(2400)]


def test_generic_jsonl_schema(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "mine" / "data.jsonl",
        [json.dumps({"problem": "p", "answer": 3}), json.dumps({"Question": "q", "answer": ["a", "b"]})],
    )
    examples, _ = read_examples(path)
    assert [ex.ground_truth for ex in examples] == ["3", ["a", "b"]]
    assert examples[0].data_source == "mine"
    hle = write_jsonl(tmp_path / "x.jsonl", [json.dumps({"id": "h1", "question": "q", "answer": "D"})])
    (ex,), _ = read_examples(hle, benchmark="hle")
    assert ex.id == "hle-h1" and ex.data_source == "hle"


def test_shared_data_env_var(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("APPO_SHARED_DATA", str(tmp_path))
    assert shared_data_dir() == tmp_path
    assert rl_path("valid") == tmp_path / "rl" / "valid.parquet"
    assert eval_path("gsm8k") == tmp_path / "eval" / "gsm8k" / "test.jsonl"


def test_one_bad_byte_is_one_bad_row_and_a_bom_is_ignored(tmp_path):
    """Issue 14, class 10: rows are decoded one by one; a UTF-8 BOM does not reject row 1."""
    good = json.dumps({"question": "What is 2+2?", "answer": "2+2=4\n#### 4"}).encode()
    bad = b'{"question": "caf\xe9?", "answer": "x"}'  # latin-1 byte, not UTF-8
    path = tmp_path / "gsm8k" / "test.jsonl"
    path.parent.mkdir()
    path.write_bytes(b"\xef\xbb\xbf" + good + b"\n" + bad + b"\n" + good + b"\n")
    examples, report = read_examples(path, skip_bad_rows=True)
    assert len(examples) == 2
    assert report.rows_read == 2 and len(report.errors) == 1
    assert "row 2" in report.errors[0] and "UTF-8" in report.errors[0]
    with pytest.raises(DataError, match=r"row 2: invalid UTF-8 byte 0xe9"):
        read_examples(path)
