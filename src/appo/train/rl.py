"""The RL recipe: APPO, with GRPO and ARPO as configurations of the same step. Reads top to bottom.

One step (``algorithm.adv_estimator=appo``)::

    prompts ─► n0 initial rollouts per prompt (tool loop)
            ─► current-policy log-probs + exact entropies (chunked kernel, no [B, L, V] logits)
            ─► Branching Score per token ─► top-K split points per prompt (K = n − n0)
            ─► K branch continuations per prompt (same tool loop, from prompt + response[:s+1])
            ─► rewards for every row ─► dual-group advantages, branch credit on parent prefixes
            ─► PPO / future-KL update on initial-rollout tokens only (tool tokens masked)

GRPO: n initial rollouts, one group per prompt, no branching. ARPO: the rollout branches after tool
results when entropy rises (the loop's ARPO mode), then a GRPO update on all rows.

Aggregation is token-weighted over each mini-batch — one optimizer step — with a denominator fixed before
any backward pass (the future-KL filter's kept rows are found by a no-grad pass once the policy has moved),
so how rows are grouped into micro-batches never changes the gradient, and branch rows — which never enter
the loss — could be added to any micro-batch without changing it (spec §6, invariants 20 and 22).
"""

from __future__ import annotations

import json
import logging
import math
import random
import signal
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from appo import algo
from appo.config import ConfigError, save_config
from appo.rollout.engine import HFEngine
from appo.rollout.loop import LoopConfig, RolloutRequest, branch_requests, run_rollouts
from appo.rollout.trajectory import Trajectory, collate
from appo.train import checkpoint as ckpt

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- policy math


def policy_logprobs(
    model: Any,
    batch: dict[str, torch.Tensor],
    temperature: float = 1.0,
    with_entropy: bool = True,
    chunk_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log π(y_t) and exact entropy for every response position of a collated batch, [B, L] each.

    The backbone's last hidden states are projected chunk by chunk (``appo.algo.logprobs_and_entropy``),
    so the full [B, L, V] float logits never exist; gradients flow to the log-probs."""
    width_r = batch["responses"].shape[1]
    backbone = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    hidden = backbone(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        use_cache=False,
    ).last_hidden_state
    # The hidden state at position i predicts token i + 1: responses start at P, so use P-1 .. P+L-2.
    hidden = hidden[:, -width_r - 1 : -1]
    head = model.get_output_embeddings()
    logp, entropy = algo.logprobs_and_entropy(
        hidden,
        head.weight,
        batch["responses"],
        temperature=temperature,
        chunk_size=chunk_size,
        lm_head_bias=getattr(head, "bias", None),
    )
    if not with_entropy:
        entropy = entropy.detach()
    return logp, entropy


def micro_batches(lengths: Sequence[int], max_tokens: int | None, max_rows: int | None) -> list[list[int]]:
    """Split row indices into micro-batches by a token budget (dynamic batching) or a row count."""
    order = list(range(len(lengths)))
    if max_tokens is None:
        size = max_rows or len(order) or 1
        return [order[i : i + size] for i in range(0, len(order), size)]
    out: list[list[int]] = []
    current: list[int] = []
    widest = 0
    for i in sorted(order, key=lambda j: lengths[j]):
        w = max(widest, lengths[i])
        if current and w * (len(current) + 1) > max_tokens:
            out.append(current)
            current, w = [], lengths[i]
        current.append(i)
        widest = w
    if current:
        out.append(current)
    return out


@dataclass
class UpdateResult:
    metrics: dict[str, float] = field(default_factory=dict)


# Metrics of a micro-batch that combine over the mini-batch by min, max or sum (others: token-weighted mean).
_MIN_METRICS = {"fipo_iw_min", "fipo_iw_raw_min"}
_MAX_METRICS = {"fipo_iw_max", "fipo_iw_raw_max"}
_SUM_METRICS = {"fipo_rows_filtered", "skipped_steps"}


def _merge_metric(
    sums: Counter[str], extremes: dict[str, float], name: str, value: float, weight: float
) -> None:
    """Fold one value of metric ``name`` into running results: min/max for extremes, a plain sum for
    counts, a ``weight``-ed sum for means."""
    short = name.removeprefix("actor/")
    if short in _MIN_METRICS or short in _MAX_METRICS:
        pick = min if short in _MIN_METRICS else max
        extremes[name] = pick(extremes.get(name, value), value)
    elif short in _SUM_METRICS:
        sums[name] += value
    else:
        sums[name] += value * weight


def _forward_micro_batch(
    model: Any,
    rows: Sequence[Trajectory],
    group: Sequence[int],
    advantages: Sequence[torch.Tensor],
    old_logprobs: Sequence[torch.Tensor],
    cfg: DictConfig,
    pad_token_id: int,
    with_entropy: bool,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Collate ``group`` and run the actor: (batch, advantages, old log-probs, log-probs, entropies)."""
    device = next(model.parameters()).device
    batch = collate([rows[i] for i in group], pad_token_id, device=device)
    width = batch["responses"].shape[1]
    adv = torch.stack([_pad(advantages[i], width) for i in group]).to(device)
    old = torch.stack([_pad(old_logprobs[i], width) for i in group]).to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null()
    with autocast:
        logp, entropy = policy_logprobs(
            model, batch, float(cfg.actor_rollout_ref.rollout.temperature), with_entropy=with_entropy
        )
    return batch, adv, old, logp, entropy


@torch.no_grad()
def future_kl_keep_rows(
    model: Any,
    rows: Sequence[Trajectory],
    advantages: Sequence[torch.Tensor],
    old_logprobs: Sequence[torch.Tensor],
    cfg: DictConfig,
    pad_token_id: int,
    groups: list[list[int]],
) -> dict[int, bool]:
    """Which rows of a mini-batch the future-KL sequence filter keeps under the current policy (a no-grad
    pass), so the loss can be normalised by the kept tokens of the whole mini-batch before any backward."""
    actor = cfg.actor_rollout_ref.actor
    keep: dict[int, bool] = {}
    for group in groups:
        batch, adv, old, logp, _ = _forward_micro_batch(
            model, rows, group, advantages, old_logprobs, cfg, pad_token_id, with_entropy=False
        )
        kept = algo.future_kl_row_filter(
            old,
            logp.float(),
            adv,
            batch["loss_mask"],
            clip_ratio_low=actor.clip_ratio_low,
            clip_ratio_high=actor.clip_ratio_high,
            clip_ratio_c=actor.clip_ratio_c,
        )
        keep.update(zip(group, kept.tolist(), strict=True))
    return keep


def accumulate_policy_gradient(
    model: Any,
    rows: Sequence[Trajectory],
    advantages: Sequence[torch.Tensor],
    old_logprobs: Sequence[torch.Tensor],
    ref_logprobs: Sequence[torch.Tensor] | None,
    cfg: DictConfig,
    pad_token_id: int,
    groups: list[list[int]],
    keep: dict[int, bool] | None = None,
) -> dict[str, float]:
    """Backward one mini-batch's loss, computed over its micro-batches ``groups`` (lists of row indices).

    The loss is the mini-batch's, however it is split: with m the loss mask (model-sampled tokens of
    initial rows) and M the mask of the rows the future-KL filter keeps (``keep``; found by a no-grad pass
    when not given; the trainer passes "all" while the policy is still the one of ``old_logprobs``),
      token-mean:                 Σ ℓ_pg·M / Σ M
      seq-mean-token-{sum,mean}:  Σ_rows (row value) / #non-empty kept rows
      seq-mean-token-sum-norm:    Σ ℓ_pg·M / (data.max_response_length · #non-empty kept rows)
                                  (Dr. GRPO: a constant horizon instead of each row's length)
    plus kl_loss_coef·Σ kl·m / Σ m − entropy_coeff·Σ H·m / Σ m; every sum runs over the whole mini-batch.
    Metrics are mini-batch values: token-weighted means, min/max of extremes, sums of counts."""
    actor = cfg.actor_rollout_ref.actor
    pl = actor.policy_loss
    if keep is None and pl.loss_mode == "future_kl":
        keep = future_kl_keep_rows(model, rows, advantages, old_logprobs, cfg, pad_token_id, groups)
    mini = [i for group in groups for i in group]
    # Branch rows are never trained (collate zeroes their loss mask), so they count no tokens either.
    tokens = {i: 0.0 if rows[i].kind == "branch" else float(sum(rows[i].loss_mask)) for i in mini}
    kept = [i for i in mini if keep is None or keep[i]]
    loss_tokens = max(1.0, sum(tokens.values()))
    mode = actor.loss_agg_mode
    if mode == "token-mean":
        pg_denominator = max(1.0, sum(tokens[i] for i in kept))
    else:
        rows_kept = max(1.0, float(sum(1 for i in kept if tokens[i] > 0)))
        # Dr. GRPO: the mean over rows of (row sum / a constant horizon).
        horizon = float(cfg.data.max_response_length) if mode == "seq-mean-token-sum-norm" else 1.0
        pg_denominator = rows_kept * horizon
    sums: Counter[str] = Counter()
    extremes: dict[str, float] = {}
    for group in groups:
        batch, adv, old, logp, entropy = _forward_micro_batch(
            model, rows, group, advantages, old_logprobs, cfg, pad_token_id, actor.entropy_coeff > 0
        )
        mask = batch["loss_mask"]
        keep_rows = None if keep is None else torch.tensor([keep[i] for i in group], device=mask.device)
        loss, metrics = algo.policy_loss(
            old,
            logp,
            adv,
            mask,
            pl.loss_mode,
            clip_ratio_low=actor.clip_ratio_low,
            clip_ratio_high=actor.clip_ratio_high,
            clip_ratio_c=actor.clip_ratio_c,
            decay_rate=pl.decay_rate,
            future_kl_clip_ratio=pl.future_kl_clip_ratio,
            future_kl_clip_high_only=pl.future_kl_clip_high_only,
            future_kl_weight=pl.future_kl_weight,
            safety_thresh=pl.safety_thresh,
            loss_agg_mode=mode,
            chunk_size=pl.chunk_size,
            denominator=pg_denominator,
            keep_rows=keep_rows,
        )
        total = loss
        if actor.use_kl_loss and ref_logprobs is not None:
            width = mask.shape[1]
            ref = torch.stack([_pad(ref_logprobs[i], width) for i in group]).to(mask.device)
            kl = algo.kl_penalty(logp, ref, actor.kl_loss_type)
            kl_loss = algo.aggregate_loss(kl, mask, "token-mean", denominator=loss_tokens)
            total = total + actor.kl_loss_coef * kl_loss
            sums["actor/kl_loss"] += float(kl_loss.detach())
        if actor.entropy_coeff > 0:
            ent_loss = algo.aggregate_loss(entropy, mask, "token-mean", denominator=loss_tokens)
            total = total - actor.entropy_coeff * ent_loss
        sums["actor/entropy"] += float(
            algo.aggregate_loss(entropy.detach(), mask, "token-mean", denominator=loss_tokens)
        )
        total.backward()
        sums["actor/pg_loss"] += float(loss.detach())
        share = float(mask.sum()) / loss_tokens
        for key, value in metrics.items():
            if key == "pg_loss" or (share == 0 and (key in _MIN_METRICS or key in _MAX_METRICS)):
                continue  # pg_loss is summed above; an empty micro-batch has no extremes
            _merge_metric(sums, extremes, f"actor/{key}", float(value), share)
    return {**sums, **extremes}


def _pad(x: torch.Tensor, width: int) -> torch.Tensor:
    if x.shape[0] >= width:
        return x[:width]
    return torch.cat([x, x.new_zeros(width - x.shape[0])])


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@torch.no_grad()
def recompute_logprobs(
    model: Any, trajs: Sequence[Trajectory], cfg: DictConfig, pad_token_id: int, max_tokens: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Current-policy log-probs and exact entropies per row (unpadded, length = response length)."""
    temperature = float(cfg.actor_rollout_ref.rollout.temperature)
    device = next(model.parameters()).device
    lengths = [len(t.prompt_ids) + len(t.response_ids) for t in trajs]
    logps: list[torch.Tensor | None] = [None] * len(trajs)
    ents: list[torch.Tensor | None] = [None] * len(trajs)
    for group in micro_batches(lengths, max_tokens, None):
        batch = collate([trajs[i] for i in group], pad_token_id, device=device)
        logp, ent = policy_logprobs(model, batch, temperature)
        for row, i in enumerate(group):
            n = len(trajs[i].response_ids)
            logps[i] = logp[row, :n].float().cpu()
            ents[i] = ent[row, :n].float().cpu()
    return [x for x in logps if x is not None], [x for x in ents if x is not None]


# --------------------------------------------------------------------------------------------- branching


def _to_width(rows: Sequence[Sequence[float]] | Sequence[torch.Tensor], width: int) -> torch.Tensor:
    out = torch.zeros(len(rows), width)
    for i, r in enumerate(rows):
        values = torch.as_tensor(r, dtype=torch.float32)[:width]
        out[i, : values.shape[0]] = values.nan_to_num(0.0)
    return out


@dataclass
class Splits:
    """Selected branch points, their metrics, and the per-row z-scores of entropy and FutureValue (for the
    report: where the score could tell tokens apart)."""

    points: list[Any]
    metrics: dict[str, float]
    z_entropy: list[list[float]]
    z_future: list[list[float]]


def select_splits(
    trajs: Sequence[Trajectory],
    old_logprobs: Sequence[torch.Tensor],
    entropies: Sequence[torch.Tensor],
    behaviour_logprobs: Sequence[torch.Tensor] | Sequence[Sequence[float]],
    cfg: DictConfig,
    budget: int,
    whitespace_table: torch.Tensor,
    eos_ids: Sequence[int],
    stop_sequences: Sequence[Sequence[int]],
) -> Splits:
    """Branching Score over the initial rollouts and the top-``budget`` split points of every prompt.

    The FutureValue compares ``old_logprobs`` (the current policy) with ``behaviour_logprobs`` (π_b of
    ``algorithm.future_value_source``). When their log-ratio does not vary (std below
    ``algorithm.future_value_min_std``: e.g. a lagged or reference policy that has not moved yet), the
    FutureValue cannot rank tokens: the lagged and reference sources then rank by entropy alone for this
    step (``branch/future_value_degenerate`` = 1); the rollout source keeps the reference behaviour."""
    alg = cfg.algorithm
    width = int(cfg.data.max_response_length)
    ids = torch.zeros(len(trajs), width, dtype=torch.long)
    for i, t in enumerate(trajs):
        ids[i, : len(t.response_ids)] = torch.tensor(t.response_ids[:width], dtype=torch.long)
    mask = _to_width([t.loss_mask for t in trajs], width)
    valid = mask.bool()
    current = _to_width(old_logprobs, width)
    behaviour = _to_width(behaviour_logprobs, width)
    entropy = (
        _to_width(entropies, width)
        if alg.branch_entropy == "exact"
        else _to_width([t.entropies for t in trajs], width)
    )
    pl = cfg.actor_rollout_ref.actor.policy_loss
    value = algo.future_values(
        current, behaviour, mask, gamma=float(alg.gamma), clip_eps=float(pl.future_kl_clip_ratio)
    )
    ratio_std = float((current - behaviour)[valid].std()) if valid.sum() > 1 else 0.0
    degenerate = ratio_std < float(alg.future_value_min_std)
    mode = alg.branching_score
    if degenerate and alg.future_value_source != "rollout" and mode in ("appo", "future"):
        mode = "entropy"
    score, z_h, z_f = algo.branching_scores(entropy, value, mask, mode=mode)
    exclude = bool(alg.exclude_stop_tokens_from_splits)
    candidates = algo.branch_candidate_mask(
        ids,
        mask,
        whitespace_table=whitespace_table,
        eos_token_ids=list(eos_ids) if exclude else (),
        stop_sequences=list(stop_sequences) if exclude else (),
    )
    uids = [t.uid for t in trajs]
    row_ids = [(t.uid, int(t.sample.get("_rollout_index", i))) for i, t in enumerate(trajs)]
    points = algo.select_branch_points(score, z_h, z_f, candidates, uids, budget, row_ids=row_ids)
    kinds = Counter(p.kind for p in points)
    metrics = {
        "branch/points": float(len(points)),
        "branch/strict": float(kinds.get("strict", 0)),
        "branch/fallback": float(kinds.get("fallback", 0)),
        "branch/duplicate": float(kinds.get("duplicate", 0)),
        "branch/prompts_without_candidates": float(len(set(uids)) - len({p.uid for p in points})),
        "branch/score_mean": float(score[valid].mean()) if valid.any() else 0.0,
        "branch/score_selected_mean": sum(p.score for p in points) / max(1, len(points)),
        "branch/future_value_mean": float(value[valid].mean()) if valid.any() else 0.0,
        "branch/future_value_std": float(value[valid].std()) if valid.sum() > 1 else 0.0,
        "branch/future_value_logratio_std": ratio_std,
        "branch/future_value_degenerate": float(degenerate),
        "branch/split_position_mean": sum(p.split for p in points) / max(1, len(points)),
        "branch/split_relative_mean": sum(p.split / max(1, len(trajs[p.row].response_ids)) for p in points)
        / max(1, len(points)),
    }
    per_parent = Counter(p.row for p in points)
    metrics["branch/branches_per_parent_max"] = float(max(per_parent.values(), default=0))
    metrics["branch/parents_with_branches"] = float(len(per_parent))
    lengths = [min(len(t.response_ids), width) for t in trajs]
    return Splits(
        points,
        metrics,
        [z_h[i, :n].tolist() for i, n in enumerate(lengths)],
        [z_f[i, :n].tolist() for i, n in enumerate(lengths)],
    )


def sampler_logprobs_mismatch(engine: Any, actor: Any, params: Any, temperature: float) -> str | None:
    """Why the sampler's recorded log-probs and entropies are not the actor's old-policy values, or None
    when they are the same computation: the same weights (the same module), dtype and temperature."""
    sampler_dtype = next(engine.model.parameters()).dtype
    actor_dtype = next(actor.parameters()).dtype
    if sampler_dtype != actor_dtype:
        return f"sampler dtype {sampler_dtype} differs from the actor's {actor_dtype}"
    if actor_dtype != torch.float32:
        # Token-by-token decoding with a KV cache and a full-sequence forward agree to ~1e-6 in fp32 but
        # only to ~1e-2 in bf16/fp16: too far apart for the PPO ratio and the FutureValue.
        return f"{actor_dtype} weights: the sampler's values are not exact enough to reuse"
    if engine.model is not actor:
        return "the sampler runs a different model object than the actor (its weights may differ)"
    sampled_at = 1.0 if params.greedy else float(params.temperature)
    if abs(sampled_at - temperature) > 1e-9:
        return f"sampled at temperature {sampled_at}, the actor scores at {temperature}"
    return None


def _recorded(values: Sequence[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).nan_to_num(0.0)


def _frozen_copy(model: Any) -> Any:
    import copy

    frozen = copy.deepcopy(model).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen


# --------------------------------------------------------------------------------------------- the trainer


@dataclass
class StepOutput:
    metrics: dict[str, float]
    trajectories: list[Trajectory]
    rewards: list[float]
    advantages: list[torch.Tensor]
    # Per initial row: z-scores of entropy and FutureValue over its response (APPO only).
    z_scores: tuple[list[list[float]], list[list[float]]] | None = None


class RLTrainer:
    """Holds the model, optimizer, tools and data of a run; :meth:`step` is one training step."""

    def __init__(self, cfg: DictConfig, run_dir: Path, phase: Callable[[str], None] | None = None) -> None:
        from appo.models import load_model

        self.cfg = cfg
        self.run_dir = run_dir
        # Told what the step is doing now (for a live progress display).
        self.phase = phase or (lambda text: None)
        self.estimator = cfg.algorithm.adv_estimator
        rollout = cfg.actor_rollout_ref.rollout
        self.n = int(rollout.n)
        self.n0 = int(rollout.initial_rollouts) if rollout.initial_rollouts is not None else self.n
        if self.estimator == "grpo":
            self.n0 = self.n
        self.budget = self.n - self.n0 if self.estimator == "appo" else 0
        seed = int(cfg.trainer.seed)
        random.seed(seed)
        torch.manual_seed(seed)

        self.data, self.val_data, corpus = _load_data(cfg, run_dir)
        model_path = _model_path(cfg)
        self.model, self.tokenizer = load_model(
            model_path, dtype=cfg.actor_rollout_ref.model.dtype, device=cfg.trainer.device
        )
        if cfg.actor_rollout_ref.model.enable_gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.pad_id = int(self.tokenizer.pad_token_id)
        # The FutureValue's comparison policy π_b (APPO only; see AlgorithmConfig.future_value_source).
        alg = cfg.algorithm
        self.fv_source = alg.future_value_source if self.budget > 0 else None
        if alg.branching_score == "entropy":
            self.fv_source = None  # the entropy-only ablation never reads the FutureValue
        self.ref_model = None
        if cfg.actor_rollout_ref.actor.use_kl_loss or self.fv_source == "reference":
            self.ref_model = _frozen_copy(self.model)
        self.fv_model = _frozen_copy(self.model) if self.fv_source == "lagged" else None
        # Lagged source: the weights of the last `future_value_lag` steps, oldest first (CPU copies).
        self.fv_history: deque[dict[str, torch.Tensor]] = deque(maxlen=int(alg.future_value_lag))
        self.fv_ema: list[torch.Tensor] | None = None  # fp32 EMA of the weights (future_value_ema)
        self._warned_fv_noise = False
        optim = cfg.actor_rollout_ref.actor.optim
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=float(optim.lr),
            betas=tuple(optim.betas),
            weight_decay=float(optim.weight_decay),
        )
        self.total_steps = _total_steps(cfg, len(self.data))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(cfg, self.total_steps))

        from appo.tools import build_tools

        tools_cfg = OmegaConf.to_container(rollout.tools, resolve=True)
        search = tools_cfg.get("tool_instances", {}).get("search")
        if corpus is not None and search is not None and not search.get("params", {}).get("corpus"):
            search.setdefault("params", {})["corpus"] = str(corpus)
        self.registry = build_tools(tools_cfg)
        self.runtime = self.registry.runtime()
        self.reward_fn = make_reward_fn(cfg)
        self.engine = HFEngine(self.model, self.tokenizer)
        self.loop_cfg = LoopConfig.from_config(cfg, seed=seed)
        self.val_loop_cfg = LoopConfig.from_config(cfg, validation=True, seed=seed)
        self.whitespace = algo.whitespace_token_table(self.tokenizer, len(self.tokenizer))
        self.stop_sequences = [
            self.tokenizer.encode(s, add_special_tokens=False) for s in self.loop_cfg.params.stop
        ]
        self.step_index = 0  # completed steps
        self.data_order: list[int] = []
        self.epoch = 0
        self.cursor = 0

    # ----------------------------------------------------------------------------------------- data

    def _next_batch(self) -> list[Any]:
        size = int(self.cfg.data.train_batch_size)
        batch = []
        while len(batch) < size:
            if not self.data_order or self.cursor >= len(self.data_order):
                if self.data_order:
                    self.epoch += 1
                order = list(range(len(self.data)))
                if self.cfg.data.shuffle:
                    random.Random(int(self.cfg.data.seed) * 1000 + self.epoch).shuffle(order)
                self.data_order, self.cursor = order, 0
            batch.append(self.data[self.data_order[self.cursor]])
            self.cursor += 1
        return batch

    def _prompt_ids(self, example: Any) -> list[int]:
        from appo.data.prompts import get_prompt

        messages = example.messages or get_prompt("code_search").messages(example.question)
        if self.cfg.data.system_prompt is not None:
            messages = [{"role": "system", "content": self.cfg.data.system_prompt}] + [
                m for m in messages if m["role"] != "system"
            ]
        ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        limit = int(self.cfg.data.max_prompt_length)
        if len(ids) > limit:
            if self.cfg.data.truncation == "error":
                raise ConfigError(
                    f"prompt of example {example.id!r} has {len(ids)} tokens > data.max_prompt_length = {limit} "
                    "(raise the limit or set data.truncation=left|right)"
                )
            ids = ids[-limit:] if self.cfg.data.truncation == "left" else ids[:limit]
        return list(ids)

    def _sample_info(self, example: Any, index: int) -> dict[str, Any]:
        return {
            "id": example.id,
            "data_source": example.data_source,
            "ground_truth": example.ground_truth,
            "ability": example.ability,
            "question": example.question,
            "_rollout_index": index,
        }

    # ----------------------------------------------------------------------------------------- rewards

    def score(self, traj: Trajectory) -> tuple[float, dict[str, Any]]:
        return score_trajectory(self.reward_fn, traj, self.tokenizer)

    # ----------------------------------------------------------------------------------------- the step

    def step(self) -> StepOutput:
        cfg = self.cfg
        step = self.step_index + 1
        timings: dict[str, float] = {}
        t_step = time.perf_counter()
        examples = self._next_batch()
        generator = torch.Generator().manual_seed(int(cfg.trainer.seed) * 100_003 + step)
        self.model.eval()

        # 1. Initial rollouts: n0 per prompt (ARPO fills each group up to n by branching in the loop).
        self.phase(f"step {step}: initial rollouts…")
        t0 = time.perf_counter()
        requests = []
        for i, example in enumerate(examples):
            prompt = self._prompt_ids(example)
            requests += [
                RolloutRequest(prompt_ids=prompt, uid=f"s{step}-p{i}", sample=self._sample_info(example, j))
                for j in range(self.n0)
            ]
        arpo = None
        if self.estimator == "arpo":
            rollout = cfg.actor_rollout_ref.rollout
            arpo = {
                "n": self.n,
                "beam_size": int(rollout.beam_size),
                "branch_probability": float(rollout.branch_probability),
                "entropy_weight": float(rollout.entropy_weight),
            }
        result = run_rollouts(self.engine, requests, self.runtime, self.loop_cfg, generator, arpo=arpo)
        init = result.trajectories
        metrics: dict[str, float] = dict(result.metrics)
        timings["gen"] = time.perf_counter() - t0

        # 2. Old-policy log-probs and exact entropies of the initial rollouts: the sampler's when they are
        # the same computation (the rollout FutureValue source compares exactly those two, so it recomputes).
        self.phase(f"step {step}: policy log-probs…")
        t0 = time.perf_counter()
        max_tokens = int(cfg.actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu)
        temperature = float(cfg.actor_rollout_ref.rollout.temperature)
        reuse = bool(cfg.actor_rollout_ref.rollout.reuse_logprobs) and self.fv_source != "rollout"
        if (
            reuse
            and sampler_logprobs_mismatch(self.engine, self.model, self.loop_cfg.params, temperature) is None
        ):
            old_lp = [_recorded(t.logprobs) for t in init]
            entropies = [_recorded(t.entropies) for t in init]
            metrics["actor/old_logprobs_from_sampler"] = 1.0
        else:
            old_lp, entropies = recompute_logprobs(self.model, init, cfg, self.pad_id, max_tokens)
            metrics["actor/old_logprobs_from_sampler"] = 0.0
        timings["old_log_prob"] = time.perf_counter() - t0

        # Reference log-probs (KL loss, reference FutureValue) of the trained rows: the initial rollouts
        # (ARPO's copies are initial rollouts too). Branch rows never enter the loss.
        ref_lp = None
        if self.ref_model is not None:
            t0 = time.perf_counter()
            ref_lp, _ = recompute_logprobs(self.ref_model, init, cfg, self.pad_id, max_tokens)
            timings["ref"] = time.perf_counter() - t0

        # 3. APPO: Branching Score, top-K split points per prompt, branch continuations.
        self.phase(f"step {step}: branching…")
        branches: list[Trajectory] = []
        chosen: Splits | None = None
        if self.budget > 0:
            t0 = time.perf_counter()
            if self.fv_source in ("lagged", "reference") and self.step_index == 0:
                behaviour = old_lp  # π_b is still the current policy: ℓ ≡ 0, rank by entropy this step
            elif self.fv_source == "lagged":
                behaviour, _ = recompute_logprobs(self.fv_model, init, cfg, self.pad_id, max_tokens)
            elif self.fv_source == "reference":
                behaviour = ref_lp
            elif self.fv_source == "rollout":
                behaviour = [_recorded(t.logprobs) for t in init]
            else:  # entropy-only score: the FutureValue is not used
                behaviour = old_lp
            chosen = select_splits(
                init,
                old_lp,
                entropies,
                behaviour,
                cfg,
                self.budget,
                self.whitespace,
                sorted(self.engine.eos_token_ids),
                self.stop_sequences,
            )
            metrics.update(chosen.metrics)
            noise = self.fv_source == "rollout" and chosen.metrics["branch/future_value_degenerate"]
            if noise and not self._warned_fv_noise:
                log.warning(
                    "FutureValue source 'rollout': log π_current − log π_rollout has std %.2g over valid "
                    "tokens — the sampler and the trainer share weights, so the FutureValue z-scores "
                    "rounding noise. Use algorithm.future_value_source=lagged or reference.",
                    chosen.metrics["branch/future_value_logratio_std"],
                )
                self._warned_fv_noise = True
            branch_result = run_rollouts(
                self.engine, branch_requests(init, chosen.points), self.runtime, self.loop_cfg, generator
            )
            # A branch whose tool state could not be forked has no continuation to credit: drop it.
            failed = [t for t in branch_result.trajectories if t.finish_reason == "fork_failed"]
            branches = [t for t in branch_result.trajectories if t.finish_reason != "fork_failed"]
            metrics.update({f"branch_{k}": v for k, v in branch_result.metrics.items()})
            metrics["branch/fork_failures"] = float(len(failed))
            for t in failed:
                t.close()
            timings["appo_branch"] = time.perf_counter() - t0
        for traj in (*init, *branches):
            traj.close()
        rows = [*init, *branches]

        # 4. Rewards for every row (the scalar sits at the last valid position; R_j is the row sum).
        self.phase(f"step {step}: rewards…")
        t0 = time.perf_counter()
        scored = [self.score(t) for t in rows]
        rewards = torch.tensor([s for s, _ in scored], dtype=torch.float32)
        timings["reward"] = time.perf_counter() - t0

        # 5. Advantages.
        kinds = [t.kind for t in rows]
        uids = [t.uid for t in rows]
        width = max(1, max(len(t.response_ids) for t in rows))
        response_mask = torch.zeros(len(rows), width)
        for i, t in enumerate(rows):
            response_mask[i, : len(t.response_ids)] = 1.0
        group_kinds = kinds if (self.estimator == "appo" and cfg.algorithm.dual_group) else None
        row_adv = algo.group_advantages(
            rewards, uids, group_kinds, norm_by_std=cfg.algorithm.norm_adv_by_std_in_grpo
        )
        if self.estimator == "appo":
            parents = torch.tensor([t.parent for t in rows], dtype=torch.long)
            splits = torch.tensor([t.split for t in rows], dtype=torch.long)
            scores = torch.tensor([0.0 if math.isnan(t.score) else t.score for t in rows])
            scale = algo.reward_scale_factors(
                scores,
                parents,
                splits,
                width,
                discount=float(cfg.algorithm.reward_scale_discount),
                mode=cfg.algorithm.reward_scale_mode,
            )
            if cfg.algorithm.reward_scale_mode == "reference":
                # Official per-token scaling of the sparse reward (a no-op unless a split is the last token).
                last = (response_mask.sum(-1) - 1).clamp(min=0).long()
                token_rewards = torch.zeros(len(rows), width)
                token_rewards[torch.arange(len(rows)), last] = rewards
                rewards_scaled = (token_rewards * scale.token_factors).sum(-1)
                row_adv = algo.group_advantages(
                    rewards_scaled, uids, group_kinds, norm_by_std=cfg.algorithm.norm_adv_by_std_in_grpo
                )
            token_adv = algo.appo_token_advantages(
                row_adv,
                response_mask,
                kinds,
                parents,
                splits,
                branch_boost=scale.branch_boost if cfg.algorithm.reward_scale_mode == "advantage" else None,
                boost_discount=scale.discount,
            )
        else:
            token_adv = row_adv[:, None] * response_mask
        advantages = [token_adv[i, : len(t.response_ids)] for i, t in enumerate(rows)]

        # 6. Policy update on the initial rollouts only (the lagged FutureValue policy keeps the weights
        # from before it).
        self.phase(f"step {step}: policy update…")
        t0 = time.perf_counter()
        self._lagged_policy_before_update()
        update_metrics = self.update(init, advantages[: len(init)], old_lp, ref_lp, n_prompts=len(examples))
        metrics.update(update_metrics)
        self._lagged_policy_after_update()
        timings["update_actor"] = time.perf_counter() - t0
        self.scheduler.step()
        self.step_index = step

        # 7. Metrics.
        init_mask = torch.tensor([k != "branch" for k in kinds])
        metrics.update(_reward_metrics(rewards, init_mask, scored, rows, token_adv, response_mask))
        metrics.update(self.runtime.flat_metrics())
        self.runtime.reset_metrics()
        metrics["actor/lr"] = self.scheduler.get_last_lr()[0]
        metrics["training/rows"] = float(len(rows))
        timings["step"] = time.perf_counter() - t_step
        metrics.update({f"timing_s/{k}": v for k, v in timings.items()})
        tokens = sum(len(t.response_ids) for t in rows)
        metrics["perf/tokens_per_s"] = tokens / max(timings["step"], 1e-9)
        z_scores = (chosen.z_entropy, chosen.z_future) if chosen is not None else None
        return StepOutput(metrics, rows, rewards.tolist(), advantages, z_scores)

    @torch.no_grad()
    def _lagged_policy_before_update(self) -> None:
        """Remember the pre-update weights: lag 1 loads them into the lagged policy; a longer lag keeps a
        window of them on the CPU (an EMA needs nothing here)."""
        if self.fv_model is None or self.cfg.algorithm.future_value_ema is not None:
            return
        if self.fv_history.maxlen == 1:
            self.fv_model.load_state_dict(self.model.state_dict())
        else:
            self.fv_history.append(
                {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            )

    @torch.no_grad()
    def _lagged_policy_after_update(self) -> None:
        """After an update: the EMA moves towards the new weights, or the lag window's oldest weights load."""
        if self.fv_model is None:
            return
        ema = self.cfg.algorithm.future_value_ema
        if ema is not None:
            # Averaged in fp32: in bf16, (1 − d)·(θ − θ_b) is often below one ulp and the EMA would stall.
            if self.fv_ema is None:
                self.fv_ema = [p.detach().float().clone() for p in self.fv_model.parameters()]
            for shadow, lagged, current in zip(
                self.fv_ema, self.fv_model.parameters(), self.model.parameters(), strict=True
            ):
                shadow.mul_(float(ema)).add_(current.detach().float(), alpha=1.0 - float(ema))
                lagged.copy_(shadow)
        elif self.fv_history.maxlen != 1 and self.fv_history:
            self.fv_model.load_state_dict(self.fv_history[0])

    def update(
        self,
        rows: Sequence[Trajectory],
        advantages: Sequence[torch.Tensor],
        old_logprobs: Sequence[torch.Tensor],
        ref_logprobs: Sequence[torch.Tensor] | None,
        n_prompts: int,
    ) -> dict[str, float]:
        cfg = self.cfg
        actor = cfg.actor_rollout_ref.actor
        self.model.train()
        rows_per_prompt = max(1, len(rows) // max(1, n_prompts))
        mini_rows = max(1, int(actor.ppo_mini_batch_size) * rows_per_prompt)
        totals: Counter[str] = Counter()
        extremes: dict[str, float] = {}
        n_updates = 0
        moved = False  # has an optimizer step changed the policy since old_logprobs were computed?
        for epoch in range(int(actor.ppo_epochs)):
            order = list(range(len(rows)))
            if actor.shuffle:
                random.Random(int(cfg.trainer.seed) + 7919 * self.step_index + epoch).shuffle(order)
            for start in range(0, len(order), mini_rows):
                mini = order[start : start + mini_rows]
                lengths = [len(rows[i].prompt_ids) + len(rows[i].response_ids) for i in mini]
                max_tokens = int(actor.ppo_max_token_len_per_gpu) if actor.use_dynamic_bsz else None
                groups = [
                    [mini[j] for j in g]
                    for g in micro_batches(lengths, max_tokens, actor.ppo_micro_batch_size_per_gpu)
                ]
                keep = None
                if actor.policy_loss.loss_mode == "future_kl":
                    # Unmoved, the policy is the one that gave old_logprobs (r ≡ 1 < c): no row is filtered.
                    # (Exact for models without dropout, as every model this trainer targets; with dropout
                    # the train-mode forward differs from the eval-mode recompute by the dropout noise.)
                    keep = (
                        future_kl_keep_rows(
                            self.model, rows, advantages, old_logprobs, cfg, self.pad_id, groups
                        )
                        if moved
                        else dict.fromkeys(mini, True)
                    )
                self.optimizer.zero_grad(set_to_none=True)
                sums = accumulate_policy_gradient(
                    self.model, rows, advantages, old_logprobs, ref_logprobs, cfg, self.pad_id, groups, keep
                )
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(actor.grad_clip))
                if torch.isfinite(grad_norm):
                    self.optimizer.step()
                    moved = True
                else:
                    totals["actor/skipped_steps"] += 1
                totals["actor/grad_norm"] += float(grad_norm)
                for key, value in sums.items():
                    _merge_metric(totals, extremes, key, value, 1.0)
                n_updates += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.model.eval()
        # Per optimizer step means, except counts (summed over the step) and extremes.
        out = {
            k: v if k.removeprefix("actor/") in _SUM_METRICS else v / max(1, n_updates)
            for k, v in totals.items()
        }
        out.update(extremes)
        out["actor/optimizer_steps"] = float(n_updates)
        return out

    # ----------------------------------------------------------------------------------------- validation

    def validate(self) -> dict[str, float]:
        if not self.val_data:
            return {}
        size = int(self.cfg.data.val_batch_size or len(self.val_data))
        examples = self.val_data[:size]
        requests = [
            RolloutRequest(prompt_ids=self._prompt_ids(e), uid=f"val-{i}", sample=self._sample_info(e, 0))
            for i, e in enumerate(examples)
        ]
        result = run_rollouts(
            self.engine,
            requests,
            self.runtime,
            self.val_loop_cfg,
            torch.Generator().manual_seed(int(self.cfg.trainer.seed)),
        )
        by_source: dict[str, list[float]] = {}
        formats: list[float] = []
        for traj in result.trajectories:
            traj.close()
            score, _ = self.score(traj)
            by_source.setdefault(str(traj.sample.get("data_source")), []).append(score)
            formats.append(1.0 if score > -1 else 0.0)
        self.runtime.reset_metrics()
        out = {f"val-core/{src}/reward/mean@1": sum(v) / len(v) for src, v in by_source.items()}
        out["val/reward_mean"] = sum(sum(v) for v in by_source.values()) / max(1, len(formats))
        out["val/format_ok"] = sum(formats) / max(1, len(formats))
        return out

    # ----------------------------------------------------------------------------------------- checkpoints

    def save(self) -> Path:
        return ckpt.save_checkpoint(
            self.run_dir,
            self.step_index,
            self.model,
            self.tokenizer,
            self.optimizer,
            self.scheduler,
            {
                "epoch": self.epoch,
                "cursor": self.cursor,
                "data_order": self.data_order,
                **(
                    {
                        "fv_model": self.fv_model.state_dict(),
                        "fv_history": list(self.fv_history),
                        "fv_ema": self.fv_ema,
                    }
                    if self.fv_model is not None
                    else {}
                ),
            },
            keep_last=self.cfg.trainer.max_actor_ckpt_to_keep,
        )

    def restore(self, checkpoint: Path) -> None:
        from transformers import AutoModelForCausalLM

        loaded = AutoModelForCausalLM.from_pretrained(
            checkpoint / "model", dtype=self.model.dtype, local_files_only=True
        )
        self.model.load_state_dict(loaded.state_dict())
        state = ckpt.load_state(checkpoint)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(state["rng"])
        self.step_index = int(state["step"])
        self.epoch, self.cursor, self.data_order = state["epoch"], state["cursor"], list(state["data_order"])
        if self.fv_model is not None:
            if "fv_model" in state:
                self.fv_model.load_state_dict(state["fv_model"])
                self.fv_history.extend(state["fv_history"])
                self.fv_ema = state.get("fv_ema")
            else:
                # A checkpoint without a lagged policy (another source, an older appo): start the lag anew
                # from the restored weights (the next step ranks by entropy) rather than from θ0.
                log.warning(
                    "%s has no lagged FutureValue policy; the lag restarts from its weights", checkpoint
                )
                self.fv_model.load_state_dict(self.model.state_dict())

    def close(self) -> None:
        self.runtime.close()
        self.registry.close()


def _reward_metrics(
    rewards: torch.Tensor,
    init_mask: torch.Tensor,
    scored: list,
    rows: Sequence[Trajectory],
    token_adv: torch.Tensor,
    response_mask: torch.Tensor,
) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, sel in (("init", init_mask), ("branch", ~init_mask)):
        if sel.any():
            r = rewards[sel]
            out[f"critic/score/{name}_mean"] = float(r.mean())
            out[f"critic/score/{name}_max"] = float(r.max())
            out[f"critic/score/{name}_min"] = float(r.min())
            out[f"critic/format_ok/{name}"] = float((r > -1).float().mean())
    out["critic/score/mean"] = float(rewards.mean())
    trained = init_mask[:, None] & response_mask.bool()
    if trained.any():
        out["critic/advantages/mean"] = float(token_adv[trained].mean())
        out["critic/advantages/max"] = float(token_adv[trained].max())
        out["critic/advantages/min"] = float(token_adv[trained].min())
    lengths = torch.tensor([float(len(t.response_ids)) for t in rows])
    out["response_length/mean"] = float(lengths.mean())
    out["response_length/max"] = float(lengths.max())
    out["prompt_length/mean"] = float(sum(len(t.prompt_ids) for t in rows) / max(1, len(rows)))
    return out


# --------------------------------------------------------------------------------------------- setup helpers


def make_reward_fn(cfg: DictConfig) -> Callable[..., Any]:
    """The reward of ``custom_reward_function``: a built-in name, ``module:function``, or VERL's path + name."""
    from appo.rewards import get_reward

    reward_cfg = cfg.custom_reward_function
    return get_reward(reward_cfg.path, reward_cfg.name) if reward_cfg.path else get_reward(reward_cfg.name)


def score_trajectory(
    fn: Callable[..., Any], traj: Trajectory, tokenizer: Any
) -> tuple[float, dict[str, Any]]:
    """Reward of one row: its response decoded without special tokens (as the reference reward manager)."""
    sample = traj.sample
    text = tokenizer.decode(traj.response_ids, skip_special_tokens=True)
    result = fn(
        text, sample["ground_truth"], data_source=sample.get("data_source"), ability=sample.get("ability")
    )
    return float(result.score), dict(result.components)


def _model_path(cfg: DictConfig) -> str:
    model = cfg.actor_rollout_ref.model
    if model.sft_warm_start:
        from appo.sft import ensure_sft_warm_start

        return str(ensure_sft_warm_start(cfg))
    return str(model.path)


def _load_data(cfg: DictConfig, run_dir: Path) -> tuple[list[Any], list[Any], Path | None]:
    from appo.data import read_examples
    from appo.data.synthetic import generate_synthetic

    corpus_path: Path | None = None

    def load(files: Sequence[str], split: str) -> list[Any]:
        nonlocal corpus_path
        out: list[Any] = []
        for name in files:
            if name == "synthetic":
                synth = generate_synthetic(
                    n_python=int(cfg.data.synthetic.n_python),
                    n_search=int(cfg.data.synthetic.n_search),
                    seed=int(cfg.data.synthetic.seed),
                )
                corpus_path = synth.write_corpus(run_dir / "synthetic_corpus.jsonl")
                examples = list(synth.examples)
                # A fixed, disjoint slice for validation: the last val_size tasks of each kind.
                val = []
                for kind in ("python", "search"):
                    same = [x for x in examples if x.data_source == f"synthetic_{kind}"]
                    # Never hold out more than half of a kind, so training always has tasks.
                    hold = min(int(cfg.data.synthetic.val_size), len(same) // 2)
                    val += same[len(same) - hold :] if hold else []
                val_ids = {e.id for e in val}
                out += val if split == "val" else [e for e in examples if e.id not in val_ids]
                continue
            path = Path(name).expanduser()
            if not path.exists():
                raise ConfigError(f"data.{split}_files: {name} does not exist")
            examples, _ = read_examples(path, skip_bad_rows=bool(cfg.data.skip_bad_rows))
            out += examples
        return out

    train = load(list(cfg.data.train_files), "train")
    if not train:
        raise ConfigError("data.train_files produced no examples")
    val = load(list(cfg.data.val_files), "val")
    return train, val, corpus_path


def _total_steps(cfg: DictConfig, n_examples: int) -> int:
    if cfg.trainer.total_training_steps:
        return int(cfg.trainer.total_training_steps)
    per_epoch = max(1, n_examples // int(cfg.data.train_batch_size))
    return per_epoch * int(cfg.trainer.total_epochs)


def _lr_lambda(cfg: DictConfig, total: int) -> Callable[[int], float]:
    optim = cfg.actor_rollout_ref.actor.optim
    warmup = (
        int(optim.lr_warmup_steps) if optim.lr_warmup_steps >= 0 else int(optim.lr_warmup_steps_ratio * total)
    )
    min_ratio = float(optim.min_lr_ratio)

    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if optim.warmup_style == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return factor


# --------------------------------------------------------------------------------------------- the run


def resolve_run_dir(cfg: DictConfig) -> Path:
    return Path(str(cfg.trainer.default_local_dir)).expanduser().resolve()


class _Interrupt:
    """First Ctrl-C: finish the current step, checkpoint and stop. Second: stop at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _Interrupt:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not in the main thread
            self._previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def train(
    cfg: DictConfig,
    resume: bool = False,
    on_step: Callable[[int, int, dict[str, float]], None] | None = None,
    log: Callable[[str], None] | None = None,
    max_steps: int | None = None,
    phase: Callable[[str], None] | None = None,
) -> Path:
    """Run (or resume) training; returns the run directory. ``max_steps`` stops early (tests)."""
    run_dir = resolve_run_dir(cfg)
    with ckpt.run_dir_lock(run_dir):
        return _train_locked(cfg, run_dir, resume, on_step, log, max_steps, phase)


def _train_locked(
    cfg: DictConfig,
    run_dir: Path,
    resume: bool,
    on_step: Callable[[int, int, dict[str, float]], None] | None,
    log: Callable[[str], None] | None,
    max_steps: int | None,
    phase: Callable[[str], None] | None,
) -> Path:
    latest = None
    if resume or cfg.trainer.resume_mode == "auto":
        latest = ckpt.latest_intact_checkpoint(run_dir, log=log or logging.getLogger(__name__).warning)
        if ckpt.checkpoint_dirs(run_dir) and latest is None:
            raise ConfigError(
                f"no intact checkpoint under {run_dir / 'checkpoints'} (all are damaged; see above); "
                "start a new run with trainer.experiment_name=..."
            )
    if resume and latest is None:
        raise ConfigError(f"--resume: no complete checkpoint under {run_dir / 'checkpoints'}")
    save_config(cfg, run_dir / "config.yaml")
    from appo.train.metrics import MetricSinks

    sinks = MetricSinks(
        list(cfg.trainer.logger),
        run_dir,
        str(cfg.trainer.project_name),
        str(cfg.trainer.experiment_name),
        OmegaConf.to_container(cfg, resolve=True),
    )
    trainer = RLTrainer(cfg, run_dir, phase=phase)
    metrics_path = run_dir / "metrics.jsonl"
    samples_path = run_dir / "samples.jsonl"
    if latest is not None:
        trainer.restore(latest)
        _truncate_jsonl(metrics_path, trainer.step_index)
        _truncate_jsonl(samples_path, trainer.step_index)
        if log:
            log(f"resumed from {latest} (step {trainer.step_index})")
    else:
        for path in (metrics_path, samples_path):
            path.unlink(missing_ok=True)
    total = trainer.total_steps
    save_freq, test_freq = int(cfg.trainer.save_freq), int(cfg.trainer.test_freq)
    try:
        with _Interrupt() as interrupt:
            if trainer.step_index == 0 and cfg.trainer.val_before_train and test_freq > 0:
                _append_jsonl(metrics_path, {"step": 0, **trainer.validate()})
            while trainer.step_index < total and (max_steps is None or trainer.step_index < max_steps):
                out = trainer.step()
                step = trainer.step_index
                if test_freq > 0 and (step % test_freq == 0 or step == total):
                    out.metrics.update(trainer.validate())
                _append_jsonl(metrics_path, {"step": step, **out.metrics})
                sinks.log(step, out.metrics)
                _append_jsonl(
                    samples_path,
                    {
                        "step": step,
                        "trajectories": [
                            {
                                **t.to_record(trainer.tokenizer),
                                "reward": r,
                                "data_source": t.sample.get("data_source"),
                                "ground_truth": t.sample.get("ground_truth"),
                                "response_ids": t.response_ids,
                                "loss_mask": t.loss_mask,
                                "entropies": [None if math.isnan(e) else round(e, 4) for e in t.entropies],
                                **_z_record(out.z_scores, i),
                            }
                            for i, (t, r) in enumerate(zip(out.trajectories, out.rewards, strict=True))
                        ],
                    },
                )
                if on_step:
                    on_step(step, total, out.metrics)
                if (save_freq > 0 and step % save_freq == 0) or step == total or interrupt.requested:
                    trainer.save()
                if interrupt.requested:
                    if log:
                        log(f"stopped after step {step}; resume with `appo train --resume {run_dir}`")
                    break
        if trainer.step_index >= total:
            final = run_dir / "final"
            tmp = run_dir / ".final.tmp"
            trainer.model.save_pretrained(tmp)
            trainer.tokenizer.save_pretrained(tmp)
            if final.exists():
                import shutil

                shutil.rmtree(final)
            tmp.replace(final)
    finally:
        trainer.close()
        sinks.close()
    return run_dir


def _z_record(z_scores: tuple[list[list[float]], list[list[float]]] | None, row: int) -> dict[str, Any]:
    """The z-scores of initial row ``row`` for samples.jsonl (rows beyond them are branches)."""
    if z_scores is None or row >= len(z_scores[0]):
        return {}
    return {
        "z_entropy": [round(v, 3) for v in z_scores[0][row]],
        "z_future": [round(v, 3) for v in z_scores[1][row]],
    }


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _truncate_jsonl(path: Path, last_step: int) -> None:
    """Keep the records of steps ≤ ``last_step`` (a resumed run rewrites what came after its checkpoint)."""
    if not path.exists():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line)["step"] <= last_step
    ]
    path.write_text("".join(line + "\n" for line in kept))
