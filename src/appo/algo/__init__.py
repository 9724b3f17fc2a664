"""APPO algorithm core: pure, linear-time functions over tensors (no I/O, no model, no global state).

Spec mapping: see ``docs/algorithm.md``.
"""

from appo.algo.advantages import RewardScale, appo_token_advantages, group_advantages, reward_scale_factors
from appo.algo.arpo import arpo_branch_decision, arpo_plan_branches, arpo_round_entropy
from appo.algo.branching import (
    BranchPoint,
    branch_candidate_mask,
    branching_scores,
    masked_zscore,
    select_branch_points,
    stop_sequence_completion_mask,
    whitespace_token_table,
)
from appo.algo.logprobs import logprobs_and_entropy
from appo.algo.losses import LOSS_AGG_MODES, aggregate_loss, future_kl_row_filter, kl_penalty, policy_loss
from appo.algo.scans import discounted_future_sum, future_values

__all__ = [
    "LOSS_AGG_MODES",
    "BranchPoint",
    "RewardScale",
    "aggregate_loss",
    "appo_token_advantages",
    "arpo_branch_decision",
    "arpo_plan_branches",
    "arpo_round_entropy",
    "branch_candidate_mask",
    "branching_scores",
    "discounted_future_sum",
    "future_kl_row_filter",
    "future_values",
    "group_advantages",
    "kl_penalty",
    "logprobs_and_entropy",
    "masked_zscore",
    "policy_loss",
    "reward_scale_factors",
    "select_branch_points",
    "stop_sequence_completion_mask",
    "whitespace_token_table",
]
