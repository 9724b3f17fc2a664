"""The FutureValue's comparison policy (algorithm.future_value_source) and the reuse of the sampler's
log-probs as the old policy's."""

from __future__ import annotations

import copy
import logging

import pytest
import torch

from appo.config import load_config
from appo.rollout.engine import HFEngine, SamplingParams
from appo.rollout.loop import LoopConfig, RolloutRequest, run_rollouts
from appo.train.rl import RLTrainer, recompute_logprobs, resolve_run_dir, sampler_logprobs_mismatch


def _trainer(overrides, *extra):
    cfg = load_config(None, overrides("appo", *extra))
    run_dir = resolve_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    return RLTrainer(cfg, run_dir)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_lagged_source_is_the_policy_one_step_behind(overrides):
    trainer = _trainer(overrides, "algorithm.future_value_source=lagged")
    try:
        first = trainer.step()
        # Step 1: the lagged copy is the current policy, the log-ratio is exactly 0 → entropy-only ranking.
        assert first.metrics["branch/future_value_degenerate"] == 1.0
        assert first.metrics["branch/future_value_logratio_std"] == 0.0
        after_one = _state(trainer.model)
        assert _same(_state(trainer.fv_model), _state(trainer.ref_model))
        second = trainer.step()
        # Step 2 compares θ1 with θ0: the FutureValue varies; after the update the copy holds θ1.
        assert second.metrics["branch/future_value_degenerate"] == 0.0
        assert second.metrics["branch/future_value_logratio_std"] > 1e-3
        assert second.metrics["branch/future_value_std"] > 0
        assert _same(_state(trainer.fv_model), after_one)
        assert not _same(_state(trainer.model), after_one)
        _, z_f = second.z_scores
        assert len(z_f) == sum(t.kind == "init" for t in second.trajectories)
        assert any(abs(v) > 0 for row in z_f for v in row)
    finally:
        trainer.close()


def test_ema_source_moves_towards_the_policy(overrides):
    trainer = _trainer(overrides, "algorithm.future_value_source=lagged", "algorithm.future_value_ema=0.75")
    try:
        before = _state(trainer.model)
        trainer.step()
        after = _state(trainer.model)
        lagged = _state(trainer.fv_model)
        for k in lagged:
            if before[k].is_floating_point():
                assert torch.allclose(lagged[k], 0.75 * before[k] + 0.25 * after[k], atol=1e-6)
    finally:
        trainer.close()


def test_reference_source_compares_with_the_initial_policy(overrides):
    trainer = _trainer(
        overrides, "algorithm.future_value_source=reference", "actor_rollout_ref.actor.use_kl_loss=false"
    )
    try:
        initial = _state(trainer.model)
        assert trainer.ref_model is not None and trainer.fv_model is None
        assert trainer.step().metrics["branch/future_value_degenerate"] == 1.0
        second = trainer.step()
        assert second.metrics["branch/future_value_degenerate"] == 0.0
        assert _same(_state(trainer.ref_model), initial)
    finally:
        trainer.close()


def test_rollout_source_with_shared_weights_is_noise_and_warns(overrides, caplog):
    trainer = _trainer(overrides, "algorithm.future_value_source=rollout")
    try:
        with caplog.at_level(logging.WARNING, logger="appo.train.rl"):
            out = trainer.step()
        # The rollout source recomputes (that difference is what it measures) and finds only rounding noise.
        assert out.metrics["actor/old_logprobs_from_sampler"] == 0.0
        assert out.metrics["branch/future_value_logratio_std"] < 1e-4
        assert abs(out.metrics["branch/future_value_mean"] - 1.0) < 1e-3
        assert out.metrics["branch/future_value_degenerate"] == 1.0
        assert any("rounding noise" in r.message for r in caplog.records)
    finally:
        trainer.close()


def test_sampler_logprobs_equal_the_actor_recompute(tiny):
    model, tok = tiny
    cfg = load_config(None, ["actor_rollout_ref.rollout.temperature=0.8"])
    engine = HFEngine(model, tok)
    params = SamplingParams(temperature=0.8)
    loop = LoopConfig(max_response_length=40, params=params)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Count to ten."}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
    )["input_ids"]
    trajs = run_rollouts(engine, [RolloutRequest(prompt_ids=prompt, uid="u")] * 3, None, loop).trajectories
    assert sampler_logprobs_mismatch(engine, model, params, 0.8) is None
    lp, ent = recompute_logprobs(model, trajs, cfg, tok.pad_token_id, 10_000)
    for t, a, h in zip(trajs, lp, ent, strict=True):
        m = torch.tensor(t.loss_mask, dtype=torch.bool)
        assert torch.allclose(torch.tensor(t.logprobs)[m], a[m], atol=1e-4)
        assert torch.allclose(torch.tensor(t.entropies)[m], h[m], atol=1e-4)


def test_sampler_logprobs_are_not_reused_when_weights_dtype_or_temperature_differ(tiny):
    model, tok = tiny
    engine = HFEngine(model, tok)
    params = SamplingParams(temperature=1.0)
    assert sampler_logprobs_mismatch(engine, model, params, 1.0) is None
    assert "different model" in sampler_logprobs_mismatch(engine, copy.deepcopy(model), params, 1.0)
    bf16 = HFEngine(copy.deepcopy(model).to(torch.bfloat16), tok)
    assert "dtype" in sampler_logprobs_mismatch(bf16, model, params, 1.0)
    assert "temperature" in sampler_logprobs_mismatch(engine, model, SamplingParams(temperature=0.7), 1.0)
    assert "temperature" in sampler_logprobs_mismatch(engine, model, SamplingParams(do_sample=False), 0.6)


@pytest.mark.parametrize("reuse", ["true", "false"])
def test_trainer_reuses_sampler_logprobs_unless_told_not_to(overrides, reuse):
    trainer = _trainer(overrides, f"actor_rollout_ref.rollout.reuse_logprobs={reuse}")
    try:
        out = trainer.step()
        assert out.metrics["actor/old_logprobs_from_sampler"] == (1.0 if reuse == "true" else 0.0)
    finally:
        trainer.close()


def test_lag_two_keeps_the_policy_two_steps_behind_and_resumes_it(overrides):
    trainer = _trainer(overrides, "algorithm.future_value_lag=2", "trainer.total_training_steps=4")
    try:
        states = [_state(trainer.model)]
        for _ in range(3):
            trainer.step()
            states.append(_state(trainer.model))
        # After step 3 the current policy is θ3 and the lagged one θ1.
        assert _same(_state(trainer.fv_model), states[1])
        checkpoint = trainer.save()
    finally:
        trainer.close()
    resumed = _trainer(overrides, "algorithm.future_value_lag=2", "trainer.total_training_steps=4")
    try:
        resumed.restore(checkpoint)
        assert _same(_state(resumed.fv_model), states[1])
        # The window holds θ1 and θ2 (pushed before the updates of steps 2 and 3).
        assert [_same(h, states[k]) for k, h in zip((1, 2), resumed.fv_history, strict=True)] == [True, True]
    finally:
        resumed.close()
