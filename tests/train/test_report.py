from __future__ import annotations

import json

from appo.train.report import write_report


def test_report_totals_branch_statistics_including_prompts_without_branches(tmp_path):
    steps = [
        {
            "step": 1,
            "branch/points": 4,
            "branch/strict": 3,
            "branch/duplicate": 1,
            "branch/prompts_without_candidates": 1,
        },
        {"step": 2, "branch/points": 4, "branch/fallback": 2, "branch/strict": 2, "branch/fork_failures": 1},
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(s) for s in steps))
    text = write_report(tmp_path).read_text()
    section = text.split("## Branch statistics (all steps)")[1]
    rows = {
        line.split("|")[1].strip(): line.split("|")[2].strip()
        for line in section.splitlines()
        if line.count("|") == 3
    }
    assert rows["branch points"] == "8"
    assert rows["strict (both z-scores > 0)"] == "5"
    assert rows["prompts with no eligible split token: no branch"] == "1"
    assert rows["branches dropped: tool state could not be forked"] == "1"


def test_report_of_an_appo_run_shows_zscores_split_contexts_and_branch_gain(overrides):
    from appo.config import load_config
    from appo.train.rl import train

    run_dir = train(load_config(None, overrides("appo", "trainer.total_training_steps=2")))
    text = write_report(run_dir).read_text()
    for picture in ("zscores.png", "branch_gain.png", "split_positions.png"):
        assert (run_dir / picture).is_file() and f"]({picture})" in text
    section = text.split("## Where splits land")[1].split("##")[0]
    counts = [
        int(line.split("|")[2]) for line in section.splitlines() if line.count("|") == 4 and "%" in line
    ]
    assert sum(counts) == 8  # 2 steps × 2 prompts × K = 2 branches
