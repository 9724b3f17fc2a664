"""The SFT recipe on a tiny model: HF output, metrics, checkpoints, resume, accumulation, validation."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from appo.config import ConfigError, load_config
from appo.sft import SFTRecipe, run_sft
from appo.sft.trainer import lr_factor


class Interrupt(Exception):
    pass


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(directory / "model.safetensors")


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, overrides):
    """One uninterrupted 4-step run (checkpoint every step, keep 2; eval every 2 steps)."""
    out = tmp_path_factory.mktemp("sft") / "run"
    cfg = load_config("default", overrides(max_steps=4, save_every=1, keep_last=2, warmup_ratio=0.5))
    return run_sft(cfg, output_dir=out, progress=False), cfg


def test_final_dir_loads_with_auto_classes(finished_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result, _ = finished_run
    model = AutoModelForCausalLM.from_pretrained(result.final_dir)
    tokenizer = AutoTokenizer.from_pretrained(result.final_dir)
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    ids = tokenizer("<think> hi </think>", return_tensors="pt").input_ids
    assert torch.isfinite(model(input_ids=ids).logits).all()
    assert json.loads((result.final_dir / "appo_sft.json").read_text())["steps"] == 4


def test_metrics_and_checkpoints(finished_run):
    result, _ = finished_run
    records = _metrics(result.output_dir)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for r in records:
        assert {"loss", "lr", "grad_norm", "tokens_per_s", "tokens", "epoch"} <= set(r)
        assert r["loss"] > 0 and r["tokens_per_s"] > 0
    assert [("eval_loss" in r) for r in records] == [False, True, False, True]
    assert records[0]["lr"] < records[1]["lr"]  # warmup
    assert records[-1]["loss"] < records[0]["loss"]  # it learns
    ckpts = sorted(p.name for p in (result.output_dir / "checkpoints").iterdir())
    assert ckpts == ["step-000002", "step-000003"]  # keep_last=2; the final step goes to final/
    state = json.loads((result.output_dir / "checkpoints" / "step-000003" / "trainer_state.json").read_text())
    assert state["step"] == 3
    # the data the run trained on is kept for inspection and resume
    assert (result.output_dir / "data" / "train.jsonl").is_file()
    assert (result.output_dir / "config.yaml").is_file()


def test_resume_after_interruption_matches_uninterrupted_run(finished_run, overrides, tmp_path):
    result, _ = finished_run
    # same run, checkpoints every 2 steps (checkpointing does not change the numbers)
    cfg = load_config("default", overrides(max_steps=4, save_every=2, keep_last=2, warmup_ratio=0.5))
    out = tmp_path / "run"

    def crash(step: int, record: dict) -> None:
        if step == 3:  # after the step-2 checkpoint, before the end
            raise Interrupt

    with pytest.raises(Interrupt):
        run_sft(cfg, output_dir=out, progress=False, hooks=[crash])
    assert not (out / "final").exists()
    assert [r["step"] for r in _metrics(out)] == [1, 2, 3]
    with pytest.raises(ConfigError, match="--resume"):
        run_sft(cfg, output_dir=out, progress=False)
    resumed = run_sft(cfg, output_dir=out, resume=True, progress=False)
    assert resumed.resumed_from == 2 and resumed.steps == 4
    # metrics: step 3 of the crashed run is dropped and redone; same numbers as the uninterrupted run
    got, want = _metrics(out), _metrics(result.output_dir)
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    for a, b in zip(got, want, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["lr"] == pytest.approx(b["lr"])
        assert ("eval_loss" in a) == ("eval_loss" in b)
        if "eval_loss" in b:
            assert a["eval_loss"] == pytest.approx(b["eval_loss"], rel=1e-5)
    wa, wb = _weights(resumed.final_dir), _weights(result.final_dir)
    assert wa.keys() == wb.keys()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_gradient_accumulation_is_token_mean_over_the_step(tiny_dir, overrides, tmp_path):
    """2 micro-batches of 2 accumulate to the same gradient as 1 micro-batch of 4 (same examples)."""
    grads = []
    for mbs, accum in ((4, 1), (2, 2)):
        cfg = load_config("default", overrides(micro_batch_size=mbs, gradient_accumulation_steps=accum))
        recipe = SFTRecipe(cfg, output_dir=tmp_path / f"r{mbs}", progress=False).setup()
        # make both see the same four examples: the first four of the training set
        recipe._plan = lambda epoch, mbs=mbs: [list(range(i, i + mbs)) for i in range(0, 4, mbs)]  # type: ignore[method-assign]
        recipe.train_step()
        grads.append([p.grad.clone() for p in recipe.model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(*grads, strict=True))


def test_lr_schedule():
    total, warm = 10, 2
    cos = [lr_factor(i, total, warm, "cosine", 0.1) for i in range(total)]
    assert cos[:2] == [0.5, 1.0] and cos[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(cos[2:])) and cos[-1] > 0.1
    assert lr_factor(total, total, warm, "cosine", 0.1) == pytest.approx(0.1)
    assert [lr_factor(i, total, warm, "constant", 0.0) for i in range(4)] == [0.5, 1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("sft.lr=0", "sft.lr"),
        ("sft.lr_scheduler=linear", "sft.lr_scheduler"),
        ("sft.micro_batch_size=0", "sft.micro_batch_size"),
        ("sft.warmup_ratio=1.5", "sft.warmup_ratio"),
        ("sft.packing=true", "sft.packing"),
        ("sft.overlong=wrap", "sft.overlong"),
        ("sft.train_files=[]", "sft.train_files"),
        ("sft.dtype=int8", "sft.dtype"),
    ],
)
def test_bad_sft_values_fail_before_any_work(override, match, tmp_path):
    cfg = load_config("default", [override])
    with pytest.raises(ConfigError, match=match):
        SFTRecipe(cfg, output_dir=tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_sharegpt_file_training_and_reference_parity(overrides, tmp_path):
    row = {
        "system": "S",
        "conversations": [
            {"from": "human", "value": "What is 6 * 7?"},
            {
                "from": "gpt",
                "value": "<think> use python </think> <python>print(6*7)</python> <result>\n42\n</result> "
                "<think> ok </think> <answer> \\boxed{42} </answer>",
            },
        ],
    }
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for _ in range(4)))
    trained = {}
    for mask in (True, False):
        cfg = load_config(
            "default",
            overrides(train_files=f"[{data}]", max_steps=1, val_fraction=0.0, mask_tool_results=mask),
        )
        recipe = SFTRecipe(cfg, output_dir=tmp_path / f"m{mask}", progress=False).setup()
        trained[mask] = sum(e.n_trained for e in recipe.train_set)
        assert len(recipe.train_set) == 4 and not recipe.val_set
    assert trained[False] > trained[True]
