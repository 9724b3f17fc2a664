from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from transformers import AutoModelForCausalLM

from appo.config import ConfigError, load_config
from appo.rollout.trajectory import Trajectory, collate
from appo.train.rl import RLTrainer, accumulate_policy_gradient, micro_batches, resolve_run_dir, train


def _trainer(overrides, estimator, *extra):
    cfg = load_config(None, overrides(estimator, *extra))
    run_dir = resolve_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    return RLTrainer(cfg, run_dir)


def test_appo_batch_layout_and_branch_rows(overrides):
    trainer = _trainer(overrides, "appo")
    try:
        for _ in range(2):
            out = trainer.step()
            counts = Counter((t.uid, t.kind) for t in out.trajectories)
            uids = {t.uid for t in out.trajectories}
            assert len(uids) == 2
            for uid in uids:
                assert counts[(uid, "init")] == 2 and counts[(uid, "branch")] == 2
            inits = [t for t in out.trajectories if t.kind == "init"]
            batch = collate(out.trajectories, trainer.pad_id)
            for i, t in enumerate(out.trajectories):
                if t.kind == "branch":
                    parent = inits[t.parent]
                    assert parent.uid == t.uid
                    assert t.response_ids[: t.split + 1] == parent.response_ids[: t.split + 1]
                    assert torch.count_nonzero(out.advantages[i]) == 0
                    assert batch["loss_mask"][i].sum() == 0
            assert any(torch.count_nonzero(a) for a in out.advantages)
            assert out.metrics["branch/points"] == 4
            assert out.metrics["actor/grad_norm"] > 0
    finally:
        trainer.close()


@pytest.mark.parametrize("estimator", ["grpo", "arpo"])
def test_baselines_run_two_steps(overrides, estimator):
    trainer = _trainer(overrides, estimator, "actor_rollout_ref.actor.policy_loss.loss_mode=vanilla")
    try:
        for _ in range(2):
            out = trainer.step()
            per_uid = Counter(t.uid for t in out.trajectories)
            assert set(per_uid.values()) == {4}
            assert all(t.kind == "init" for t in out.trajectories)
            assert "branch/points" not in out.metrics
            assert out.metrics["actor/grad_norm"] > 0
    finally:
        trainer.close()


def _rows(tokenizer, n_init=4, n_branch=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n_init + n_branch):
        p = torch.randint(100, 1000, (int(torch.randint(3, 8, (1,), generator=gen)),), generator=gen).tolist()
        r = torch.randint(
            100, 1000, (int(torch.randint(4, 12, (1,), generator=gen)),), generator=gen
        ).tolist()
        mask = [1] * len(r)
        mask[1] = 0  # a tool-result token
        kind = "init" if i < n_init else "branch"
        rows.append(
            Trajectory(
                prompt_ids=p,
                response_ids=r,
                loss_mask=mask,
                logprobs=[0.0] * len(r),
                entropies=[0.0] * len(r),
                uid="u",
                kind=kind,
                parent=0 if kind == "branch" else -1,
                split=1 if kind == "branch" else -1,
            )
        )
    return rows


@pytest.mark.parametrize("loss_mode", ["vanilla", "future_kl"])
def test_branch_rows_contribute_zero_gradient_for_any_micro_batching(tiny, loss_mode):
    """Spec invariant 20: gradient with branch rows present == gradient with them removed."""
    model, tokenizer = tiny
    cfg = load_config(
        None,
        [
            f"actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode}",
            "actor_rollout_ref.actor.use_kl_loss=false",
        ],
    )
    rows = _rows(tokenizer)
    gen = torch.Generator().manual_seed(1)
    adv = [torch.randn(len(t.response_ids), generator=gen) * (t.kind == "init") for t in rows]
    with torch.no_grad():
        old = []
        for t in rows:
            old.append(torch.randn(len(t.response_ids), generator=gen) * 0.05 - 5.0)

    def grad(indices, groups):
        model.zero_grad(set_to_none=True)
        sub = [rows[i] for i in indices]
        accumulate_policy_gradient(
            model,
            sub,
            [adv[i] for i in indices],
            [old[i] for i in indices],
            None,
            cfg,
            tokenizer.pad_token_id,
            groups,
        )
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    init_only = grad(list(range(4)), [[0, 1, 2, 3]])
    assert init_only.abs().sum() > 0
    everything = list(range(7))
    for groups in ([[0, 1, 2, 3, 4, 5, 6]], [[0, 4], [1, 5, 6], [2, 3]], [[6], [0], [5, 1], [2], [3, 4]]):
        assert torch.allclose(grad(everything, groups), init_only, atol=1e-6, rtol=1e-4)
    model.zero_grad(set_to_none=True)


def test_micro_batches_respect_token_budget():
    lengths = [5, 30, 12, 7, 30, 1]
    groups = micro_batches(lengths, 40, None)
    assert sorted(i for g in groups for i in g) == list(range(6))
    for g in groups:
        assert max(lengths[i] for i in g) * len(g) <= 40 or len(g) == 1
    assert micro_batches(lengths, None, 4) == [[0, 1, 2, 3], [4, 5]]


def test_train_writes_run_dir_and_loadable_checkpoints(overrides):
    cfg = load_config(None, overrides("appo", "trainer.save_freq=1", "trainer.test_freq=2"))
    run_dir = train(cfg)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert "val/reward_mean" in records[-1]
    for key in (
        "critic/score/init_mean",
        "critic/score/branch_mean",
        "branch/strict",
        "actor/pg_loss",
        "rollout/tokens_per_s",
        "timing_s/step",
        "actor/lr",
    ):
        assert key in records[0], key
    assert (run_dir / "config.yaml").is_file()
    model = AutoModelForCausalLM.from_pretrained(run_dir / "checkpoints" / "step_1" / "model")
    assert model.config.num_hidden_layers == 2
    AutoModelForCausalLM.from_pretrained(run_dir / "final")
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert {t["kind"] for t in samples[0]["trajectories"]} == {"init", "branch"}


def test_impossible_configuration_fails_before_work(overrides, tmp_path):
    with pytest.raises(ConfigError, match="initial_rollouts"):
        load_config(None, overrides("appo", "actor_rollout_ref.rollout.initial_rollouts=4"))
    cfg = load_config(None, overrides("appo", f"data.train_files=[{tmp_path / 'missing.parquet'}]"))
    with pytest.raises(ConfigError, match=r"missing\.parquet"):
        train(cfg)


def _grad(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def _reference_grad(model, rows, adv, old, loss_mode, tokenizer):
    """The spec's loss over ``rows`` as one batch: policy_loss with its own filter and token-mean."""
    from appo import algo
    from appo.train.rl import policy_logprobs

    model.zero_grad(set_to_none=True)
    batch = collate(rows, tokenizer.pad_token_id)
    width = batch["responses"].shape[1]
    pad = lambda xs: torch.stack([torch.cat([x, x.new_zeros(width - len(x))]) for x in xs])  # noqa: E731
    logp, _ = policy_logprobs(model, batch)
    loss, metrics = algo.policy_loss(pad(old), logp, pad(adv), batch["loss_mask"], loss_mode)
    loss.backward()
    return _grad(model), loss.item(), metrics


@pytest.mark.parametrize("loss_mode", ["vanilla", "future_kl"])
def test_an_optimizer_step_normalises_by_its_own_mini_batch(tiny, loss_mode):
    """The denominator is the mini-batch's tokens, however many other rows the step has: the gradient of
    mini-batch {0..3} out of 8 rows equals the token-mean loss over those 4 rows alone; on-policy, the
    future-KL weights report their true mean 1.0 (not 1.0 × the mini-batch's share of the step)."""
    model, tokenizer = tiny
    cfg = load_config(
        None,
        [
            f"actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode}",
            "actor_rollout_ref.actor.use_kl_loss=false",
        ],
    )
    rows = _rows(tokenizer, n_init=8, n_branch=0, seed=3)
    gen = torch.Generator().manual_seed(4)
    adv = [torch.randn(len(t.response_ids), generator=gen) for t in rows]
    with torch.no_grad():
        from appo.train.rl import recompute_logprobs

        old, _ = recompute_logprobs(model, rows, cfg, tokenizer.pad_token_id, 10_000)  # on-policy
    expected, expected_loss, _ = _reference_grad(model, rows[:4], adv[:4], old[:4], loss_mode, tokenizer)
    model.zero_grad(set_to_none=True)
    metrics = accumulate_policy_gradient(
        model, rows, adv, old, None, cfg, tokenizer.pad_token_id, [[0, 1], [2], [3]]
    )
    assert torch.allclose(_grad(model), expected, atol=1e-6, rtol=1e-4)
    assert metrics["actor/pg_loss"] == pytest.approx(expected_loss, rel=1e-4, abs=1e-6)
    if loss_mode == "future_kl":
        assert metrics["actor/fipo_iw_mean"] == pytest.approx(1.0, abs=1e-5)
    model.zero_grad(set_to_none=True)


def test_rows_removed_by_the_future_kl_filter_leave_the_denominator(tiny):
    """Spec invariant 22: a row with two tokens where A < 0 and r > c leaves numerator and denominator,
    also when the mini-batch is split into micro-batches that each normalise by the mini-batch."""
    model, tokenizer = tiny
    cfg = load_config(
        None,
        [
            "actor_rollout_ref.actor.policy_loss.loss_mode=future_kl",
            "actor_rollout_ref.actor.use_kl_loss=false",
        ],
    )
    rows = _rows(tokenizer, n_init=4, n_branch=0, seed=5)
    gen = torch.Generator().manual_seed(6)
    adv = [torch.randn(len(t.response_ids), generator=gen).abs() for t in rows]
    with torch.no_grad():
        from appo.train.rl import recompute_logprobs

        old, _ = recompute_logprobs(model, rows, cfg, tokenizer.pad_token_id, 10_000)
    # Row 2: two sampled tokens with A < 0 whose old log-prob was far lower (r = e^15 > c).
    for t in (2, 3):
        adv[2][t] = -1.0
        old[2][t] = old[2][t] - 15.0
    expected, expected_loss, ref_metrics = _reference_grad(model, rows, adv, old, "future_kl", tokenizer)
    assert ref_metrics["fipo_rows_filtered"].item() == 1.0
    for groups in ([[0, 1, 2, 3]], [[0], [1, 2], [3]]):
        model.zero_grad(set_to_none=True)
        metrics = accumulate_policy_gradient(model, rows, adv, old, None, cfg, tokenizer.pad_token_id, groups)
        assert metrics["actor/fipo_rows_filtered"] == 1.0
        assert metrics["actor/pg_loss"] == pytest.approx(expected_loss, rel=1e-4, abs=1e-6)
        assert torch.allclose(_grad(model), expected, atol=1e-6, rtol=1e-4)
    model.zero_grad(set_to_none=True)


def test_a_failed_tool_state_fork_drops_the_branch_not_the_step(overrides, monkeypatch):
    from appo.tools import Session

    def broken(self, *args, **kwargs):
        raise ValueError("upto_call=3 outside 0..2")

    trainer = _trainer(overrides, "appo")
    monkeypatch.setattr(Session, "fork", broken)
    try:
        out = trainer.step()
        assert out.metrics["branch/fork_failures"] == out.metrics["branch/points"] == 4
        assert all(t.kind == "init" for t in out.trajectories)
        assert out.metrics["actor/grad_norm"] > 0
    finally:
        trainer.close()


@pytest.mark.parametrize("mode", ["seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_row_based_aggregation_is_the_mini_batch_mean_over_rows(tiny, mode):
    """seq-mean modes: the mean over the mini-batch's non-empty rows (sum-norm: of row sum / L_max), the
    same for any micro-batching and independent of the rest of the step."""
    from appo import algo
    from appo.train.rl import policy_logprobs, recompute_logprobs

    model, tokenizer = tiny
    cfg = load_config(
        None,
        [
            f"actor_rollout_ref.actor.loss_agg_mode={mode}",
            "actor_rollout_ref.actor.policy_loss.loss_mode=vanilla",
            "actor_rollout_ref.actor.use_kl_loss=false",
        ],
    )
    rows = _rows(tokenizer, n_init=6, n_branch=0, seed=8)
    gen = torch.Generator().manual_seed(9)
    adv = [torch.randn(len(t.response_ids), generator=gen) for t in rows]
    old, _ = recompute_logprobs(model, rows, cfg, tokenizer.pad_token_id, 10_000)

    # Reference: one batch of the mini-batch's 3 rows, per-row values averaged by hand.
    model.zero_grad(set_to_none=True)
    batch = collate(rows[:3], tokenizer.pad_token_id)
    width = batch["responses"].shape[1]
    pad = lambda xs: torch.stack([torch.cat([x, x.new_zeros(width - len(x))]) for x in xs])  # noqa: E731
    logp, _ = policy_logprobs(model, batch)
    terms = []
    for j in range(3):
        m = batch["loss_mask"][j : j + 1]
        row_sum, _ = algo.policy_loss(
            pad(old[j : j + 1]), logp[j : j + 1], pad(adv[j : j + 1]), m, "vanilla", denominator=1.0
        )
        if mode == "seq-mean-token-mean":
            row_sum = row_sum / m.sum()
        elif mode == "seq-mean-token-sum-norm":
            row_sum = row_sum / cfg.data.max_response_length
        terms.append(row_sum)
    reference = sum(terms) / 3
    reference.backward()
    expected = _grad(model)
    for groups in ([[0, 1, 2]], [[2], [0, 1]]):
        model.zero_grad(set_to_none=True)
        metrics = accumulate_policy_gradient(model, rows, adv, old, None, cfg, tokenizer.pad_token_id, groups)
        assert metrics["actor/pg_loss"] == pytest.approx(reference.item(), rel=1e-4, abs=1e-7)
        assert (_grad(model) - expected).abs().max() <= 1e-4 * expected.abs().max()
    model.zero_grad(set_to_none=True)
