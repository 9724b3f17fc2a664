"""The one multi-turn tool loop: initial rollouts, branches, ARPO rollouts, validation and evaluation.

A round samples every active trajectory until EOS, a stop string (a tool's closing tag, optionally
``</answer>``) or its length budget; the tool calls that ended the round run concurrently; their
formatted results are appended with loss mask 0 and the next round begins. A branch is the same loop
started from ``prompt + response[:split + 1]`` with the parent's tool state at that point.

Behaviour the reference gets wrong, and what we do (compatibility switches in :class:`LoopConfig`):

* log-probs/entropies are recorded per response position, so they stay aligned after tool results;
* the call limit counts calls made in the *response* (a branch inherits the counted calls of its prefix),
  not the closing tags in the prompt (``branch_call_counter="reference"`` reproduces that);
* a branch gets the tool state of the calls in its prefix that actually ran — a call the loop answered
  itself (empty or malformed, over the limit, a repeated query) is never replayed into it;
* a branch whose tool state cannot be forked comes back with ``finish_reason="fork_failed"`` instead of
  failing the whole batch;
* a token appended by the environment (the EOS at the call limit) has loss mask 0;
* a branch whose prefix ends exactly on a closing tag handles that call first, under the same rules as
  any round (limit, malformed call, repeated query);
* rounds are capped (``max_rounds``).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from appo.rollout.engine import Engine, SamplingParams
from appo.rollout.engine import Sequence as EngineSequence
from appo.rollout.trajectory import ToolCallRecord, Trajectory
from appo.tools import Session, ToolCall, extract_tool_call, format_result
from appo.tools.grammar import DEFAULT_RESULT_TEMPLATE

__all__ = ["LoopConfig", "RolloutRequest", "RolloutResult", "branch_requests", "run_rollouts"]

log = logging.getLogger(__name__)

OVER_LIMIT_MESSAGES = {
    "python": "The maximum python call limit is exceeded. You are not allowed to use python.",
    "search": "The maximum search limit is exceeded. You are not allowed to search.",
}
REPEATED_QUERY_MESSAGE = "You have searched this query. Please refer to previous results."


@dataclass
class LoopConfig:
    max_response_length: int = 512
    call_limit: int = 5
    params: SamplingParams = field(default_factory=SamplingParams)
    tool_tags: tuple[str, ...] = ("search", "python")
    result_template: str = DEFAULT_RESULT_TEMPLATE
    # eos: append EOS and stop (reference RL); message: answer with the reference eval message.
    over_limit: str = "eos"
    # message: answer "empty call" and continue; stop: end the trajectory (reference RL).
    empty_call: str = "message"
    # allow: run it again; message: the reference eval's "You have searched this query" (search only).
    repeated_query: str = "allow"
    stop_at_answer: bool = False
    max_rounds: int = 64
    # response: a branch counts the calls in its response prefix; reference: also the prompt's closing tags.
    branch_call_counter: str = "response"
    seed: int = 0

    @classmethod
    def from_config(cls, cfg: Any, validation: bool = False, seed: int = 0) -> LoopConfig:
        rollout = cfg.actor_rollout_ref.rollout
        tools = rollout.tools
        tags = tuple(_tool_tag(name, inst.class_path) for name, inst in tools.tool_instances.items())
        turns = rollout.multi_turn
        stop = [f"</{t}>" for t in tags] + (["</answer>"] if turns.stop_at_answer else [])
        return cls(
            max_response_length=int(cfg.data.max_response_length),
            call_limit=int(tools.call_limit),
            params=SamplingParams.from_config(rollout, validation=validation, stop=stop),
            tool_tags=tags,
            result_template=str(tools.result_format),
            over_limit=str(turns.over_limit),
            empty_call=str(turns.empty_call),
            repeated_query=str(turns.repeated_query),
            stop_at_answer=bool(turns.stop_at_answer),
            max_rounds=int(turns.max_rounds),
            branch_call_counter=str(tools.branch_call_counter),
            seed=seed,
        )


def _tool_tag(name: str, class_path: str) -> str:
    from appo.tools import resolve_tool_class

    try:
        return resolve_tool_class(class_path).tag or name
    except Exception:
        return name


@dataclass
class RolloutRequest:
    prompt_ids: list[int]
    uid: str = ""
    sample: dict[str, Any] = field(default_factory=dict)
    # Branches: the parent trajectory, its index in the caller's list, and the split position.
    parent: Trajectory | None = None
    parent_index: int = -1
    split: int = -1
    score: float = math.nan
    branch_kind: str = ""


@dataclass
class RolloutResult:
    trajectories: list[Trajectory]
    metrics: dict[str, float]


def branch_requests(parents: Sequence[Trajectory], points: Sequence[Any]) -> list[RolloutRequest]:
    """Requests for branch points (anything with ``.row``, ``.split``, ``.score``, ``.kind``)."""
    out = []
    for p in points:
        parent = parents[int(p.row)]
        split = int(p.split)
        if not 0 <= split < len(parent.response_ids):
            raise ValueError(
                f"split {split} outside the response of row {p.row} ({len(parent.response_ids)} tokens)"
            )
        out.append(
            RolloutRequest(
                prompt_ids=parent.prompt_ids,
                uid=parent.uid,
                sample=parent.sample,
                parent=parent,
                parent_index=int(p.row),
                split=split,
                score=float(p.score),
                branch_kind=str(p.kind),
            )
        )
    return out


class _Row:
    """Loop-side state of one trajectory."""

    def __init__(self, traj: Trajectory, seq: EngineSequence) -> None:
        self.traj = traj
        self.seq = seq
        self.queries: set[tuple[str, str]] = set()
        # A branch whose prefix ends on a stop string: the call it closes is handled before sampling.
        self.stop_string: str | None = None
        # Response index where the current segment (the text a call is parsed from) begins: after the last
        # tool result. A branch that splits inside a call starts with part of the segment in its prefix.
        self.segment_start = len(traj.response_ids)
        self.active = True
        self.initial_entropy: float | None = None  # ARPO's H0 of this trajectory
        self.last_entropy: float | None = None

    def copy(self) -> _Row:
        """An independent continuation of this row's full current state (ARPO)."""
        t = self.traj
        traj = Trajectory(
            prompt_ids=list(t.prompt_ids),
            response_ids=list(t.response_ids),
            loss_mask=list(t.loss_mask),
            logprobs=list(t.logprobs),
            entropies=list(t.entropies),
            tool_calls=list(t.tool_calls),
            uid=t.uid,
            sample=dict(t.sample),
            rounds=t.rounds,
            call_count=t.call_count,
            branch_kind="arpo",
            split=len(t.response_ids) - 1,
        )
        traj.session = t.session.fork() if t.session is not None else None
        row = _Row(traj, self.seq.fork())
        row.queries = set(self.queries)
        row.segment_start = self.segment_start
        row.active = self.active
        row.initial_entropy = self.initial_entropy
        return row


def _start_rows(
    engine: Engine, requests: Sequence[RolloutRequest], cfg: LoopConfig, tokenizer: Any, use_tools: bool
) -> list[_Row]:
    rows: list[_Row] = []
    shared: dict[tuple, EngineSequence] = {}
    for req in requests:
        queries: set[tuple[str, str]] = set()
        failed = ""
        if req.parent is None:
            traj = Trajectory(prompt_ids=list(req.prompt_ids), uid=req.uid, sample=dict(req.sample))
            traj.session = Session() if use_tools else None
            tokens = list(req.prompt_ids)
        else:
            parent = req.parent
            traj = parent.prefix(req.split)
            traj.kind, traj.parent, traj.split = "branch", req.parent_index, req.split
            traj.score, traj.branch_kind = req.score, req.branch_kind
            # The branch continues with the parent's state at the split: the calls that counted and the
            # tool state of the calls that ran — never the calls the loop answered itself.
            ran = [c for c in traj.tool_calls if c.ran]
            traj.call_count = sum(1 for c in traj.tool_calls if c.counted)
            if cfg.branch_call_counter == "reference":
                prompt_text = tokenizer.decode(traj.prompt_ids)
                traj.call_count += sum(prompt_text.count(f"</{t}>") for t in cfg.tool_tags)
            queries = {(c.tag, c.argument) for c in ran}
            if use_tools and parent.session is not None:
                try:
                    traj.session = parent.session.fork(
                        upto_call=max((c.session_calls for c in ran), default=0)
                    )
                except Exception as exc:  # a broken tool state fails this branch, never the whole step
                    log.warning(
                        "branch of row %d at %d: tool state fork failed: %s", req.parent_index, req.split, exc
                    )
                    failed = f"{type(exc).__name__}: {exc}"
            elif use_tools:
                traj.session = Session()
            tokens = traj.prompt_ids + traj.response_ids
        key = tuple(tokens)
        if key not in shared:
            shared[key] = engine.new_sequence(tokens)
            row = _Row(traj, shared[key])
        else:
            row = _Row(traj, shared[key].fork())
        row.queries = queries
        row.segment_start = traj.tool_calls[-1].result_span[1] if traj.tool_calls else 0
        if failed:
            traj.finish_reason, row.active = "fork_failed", False
            traj.error = failed
        elif req.parent is not None:
            row.stop_string = _round_stop(traj.response_ids[row.segment_start :], tokenizer, cfg)
            if (
                row.stop_string is None
                and traj.response_ids
                and traj.response_ids[-1] in engine.eos_token_ids
            ):
                # A prefix ending on EOS has nothing left to generate; it keeps the parent's ending.
                traj.finish_reason, row.active = "eos", False
        rows.append(row)
    # Prefill shared prefixes once, then give each row its own handle.
    engine.prefill([r.seq for r in rows if r.active])
    return rows


def _round_stop(segment: list[int], tokenizer: Any, cfg: LoopConfig) -> str | None:
    """The stop string that ends a branch prefix's current segment, when the split token is the one that
    completed it (a closing tag): the parent's round stopped right there, so the branch handles that call
    first. (A stop string can only stand at the end of a segment: the round would have ended there.)"""
    text = tokenizer.decode(segment)
    hits = [(text.find(s), s) for s in cfg.params.stop if s and s in text]
    return min(hits)[1] if hits else None


def run_rollouts(
    engine: Engine,
    requests: Sequence[RolloutRequest],
    runtime: Any | None,
    cfg: LoopConfig,
    generator: torch.Generator | None = None,
    arpo: dict[str, Any] | None = None,
) -> RolloutResult:
    """Run every request through the tool loop; returns trajectories in request order (sessions left
    open so branches can fork them — call :meth:`Trajectory.close` when done) and rollout metrics.

    ``arpo`` (keys ``n``, ``beam_size``, ``branch_probability``, ``entropy_weight``) turns on ARPO's
    rollout (spec Appendix A): after each tool round an active trajectory is copied — tokens, masks,
    tool state — when the entropy of the round's first tokens rose against the trajectory's first round;
    each prompt (``uid``) is filled up to ``n`` rows (fresh rows from the prompt when none is active)
    and trimmed to its first ``n``. Copies get ``branch_kind="arpo"`` and ``split`` = the copy point."""
    tokenizer = engine.tokenizer
    if generator is None:
        generator = torch.Generator().manual_seed(cfg.seed)
    t_start = time.perf_counter()
    rows = _start_rows(engine, requests, cfg, tokenizer, use_tools=runtime is not None)
    budget = cfg.max_response_length
    sample_time = tool_time = 0.0
    sampled_tokens = rounds = 0
    eos = min(engine.eos_token_ids) if engine.eos_token_ids else None

    def reply(row: _Row, tag: str, argument: str, message: str, call_end: int, counted: bool) -> None:
        """Answer a call with a message of the loop's own (limit reached, empty call, repeated query)."""
        _append_result(
            row, tag, argument, message, False, 0.0, call_end, cfg, tokenizer, counted=counted, ran=False
        )

    def dispatch(row: _Row, segment: list[int], stop_string: str | None) -> tuple[_Row, str, str, int] | None:
        """Handle a round that ended on ``stop_string`` (``segment``: the response since the last tool
        result): finish the trajectory, answer the call with a message, or return the call to run."""
        traj = row.traj
        if stop_string == "</answer>":
            traj.finish_reason, row.active = "answer", False
            return None
        call = extract_tool_call(tokenizer.decode(segment), cfg.tool_tags, require_at_end=False)
        end = len(traj.response_ids) - 1
        if call is None or not call.valid:
            if cfg.empty_call == "stop":
                traj.finish_reason, row.active = "empty_call", False
            else:
                tag = call.tag if call is not None else (stop_string or "</?>")[2:-1]
                reply(row, tag, "", f"Error: empty or malformed <{tag}> call; nothing was run.", end, False)
            return None
        if traj.call_count >= cfg.call_limit:
            if cfg.over_limit == "eos" and eos is not None:
                # The reference trains on this EOS although it was never sampled; we mask it.
                if len(traj.response_ids) < budget:
                    traj.append([eos], sampled=False)
                traj.finish_reason, row.active = "call_limit", False
            else:
                message = OVER_LIMIT_MESSAGES.get(call.tag, f"The maximum {call.tag} call limit is exceeded.")
                reply(row, call.tag, call.argument, message, end, False)
            return None
        if (
            cfg.repeated_query == "message"
            and call.tag == "search"
            and (call.tag, call.argument) in row.queries
        ):
            reply(row, call.tag, call.argument, REPEATED_QUERY_MESSAGE, end, True)
            return None
        row.queries.add((call.tag, call.argument))
        return (row, call.tag, call.argument, end)

    # Branches whose prefix ends on a closing tag handle that call first, under the same rules.
    first_calls = []
    for r in rows:
        if not r.active or r.stop_string is None:
            continue
        if (call := dispatch(r, r.traj.response_ids[r.segment_start :], r.stop_string)) is not None:
            first_calls.append(call)
    if first_calls:
        t0 = time.perf_counter()
        _execute(first_calls, runtime, cfg, tokenizer)
        tool_time += time.perf_counter() - t0

    while True:
        active = [r for r in rows if r.active]
        for r in active:
            if len(r.traj.response_ids) >= budget:
                r.traj.finish_reason, r.active = "length", False
            elif r.traj.rounds >= cfg.max_rounds:
                r.traj.finish_reason, r.active = "max_rounds", False
        active = [r for r in rows if r.active]
        if not active:
            break
        rounds += 1
        for r in active:
            r.seq.stop_context = r.traj.response_ids[r.segment_start :]
        t0 = time.perf_counter()
        outs = engine.sample(
            [r.seq for r in active],
            cfg.params,
            [budget - len(r.traj.response_ids) for r in active],
            generator,
        )
        sample_time += time.perf_counter() - t0
        calls: list[tuple[_Row, str, str, int]] = []
        for row, out in zip(active, outs, strict=True):
            traj = row.traj
            traj.append(out.tokens, sampled=True, logprobs=out.logprobs, entropies=out.entropies)
            traj.rounds += 1
            sampled_tokens += len(out.tokens)
            if out.finish_reason != "stop":
                traj.finish_reason, row.active = out.finish_reason, False
            elif (call := dispatch(row, traj.response_ids[row.segment_start :], out.stop_string)) is not None:
                calls.append(call)
        if calls:
            t0 = time.perf_counter()
            _execute(calls, runtime, cfg, tokenizer)
            tool_time += time.perf_counter() - t0
        if arpo is not None:
            _arpo_round(
                rows, active, outs, arpo, engine, requests, cfg, tokenizer, generator, runtime is not None
            )

    if arpo is not None:
        rows = _arpo_finish(rows, int(arpo["n"]))
    trajectories = []
    for r in rows:
        r.traj.text = tokenizer.decode(r.traj.response_ids, skip_special_tokens=False)
        r.traj.check()
        trajectories.append(r.traj)
    return RolloutResult(
        trajectories,
        _metrics(trajectories, sampled_tokens, rounds, sample_time, tool_time, time.perf_counter() - t_start),
    )


def _execute(
    calls: list[tuple[_Row, str, str, int]], runtime: Any | None, cfg: LoopConfig, tokenizer: Any
) -> None:
    if runtime is None:
        results = [None] * len(calls)
    else:
        results = runtime.execute([ToolCall(tag, arg, row.traj.session) for row, tag, arg, _ in calls])
    for (row, tag, arg, end), res in zip(calls, results, strict=True):
        if res is None:
            text, ok, latency, meta = f"Error: no tool runtime; <{tag}> was not run.", False, 0.0, {}
        else:
            text, ok, latency, meta = res.text, res.ok, res.latency, dict(res.metadata)
        _append_result(
            row, tag, arg, text, ok, latency, end, cfg, tokenizer, counted=True, ran=True, metadata=meta
        )


def _append_result(
    row: _Row,
    tag: str,
    argument: str,
    text: str,
    ok: bool,
    latency: float,
    call_end: int,
    cfg: LoopConfig,
    tokenizer: Any,
    counted: bool,
    ran: bool,
    metadata: dict[str, Any] | None = None,
) -> None:
    traj = row.traj
    tokens = tokenizer.encode(format_result(text, cfg.result_template), add_special_tokens=False)
    room = cfg.max_response_length - len(traj.response_ids)
    start = len(traj.response_ids)
    if len(tokens) >= room:
        tokens = tokens[: max(room, 0)]
        traj.finish_reason, row.active = "length", False
    traj.append(tokens, sampled=False)
    row.seq.extend(tokens)
    row.segment_start = len(traj.response_ids)
    if counted:
        traj.call_count += 1
    traj.tool_calls.append(
        ToolCallRecord(
            tag=tag,
            argument=argument,
            result=text,
            ok=ok,
            latency=latency,
            call_end=call_end,
            result_span=(start, start + len(tokens)),
            metadata=metadata or {},
            ran=ran,
            counted=counted,
            session_calls=len(traj.session.calls) if traj.session is not None else 0,
        )
    )


def _metrics(
    trajs: Sequence[Trajectory], sampled: int, rounds: int, sample_time: float, tool_time: float, total: float
) -> dict[str, float]:
    n = max(1, len(trajs))
    out: dict[str, float] = {
        "rollout/trajectories": float(len(trajs)),
        "rollout/tokens_sampled": float(sampled),
        "rollout/rounds": float(rounds),
        "rollout/response_length_mean": sum(len(t.response_ids) for t in trajs) / n,
        "rollout/tool_calls_per_trajectory": sum(len(t.tool_calls) for t in trajs) / n,
        "rollout/time_sampling_s": sample_time,
        "rollout/time_tools_s": tool_time,
        "rollout/time_total_s": total,
        "rollout/tokens_per_s": sampled / sample_time if sample_time > 0 else 0.0,
    }
    for reason, count in Counter(t.finish_reason for t in trajs).items():
        out[f"rollout/finish/{reason}"] = count / n
    for tag, count in Counter(c.tag for t in trajs for c in t.tool_calls).items():
        out[f"rollout/calls/{tag}"] = count / n
    return out


def _arpo_round(
    rows: list[_Row],
    sampled: list[_Row],
    outs: Sequence[Any],
    arpo: dict[str, Any],
    engine: Engine,
    requests: Sequence[RolloutRequest],
    cfg: LoopConfig,
    tokenizer: Any,
    generator: torch.Generator,
    use_tools: bool,
) -> None:
    """ARPO after a round: entropy of the round's first tokens vs the trajectory's H0 decides copies."""
    from appo.algo import arpo_plan_branches, arpo_round_entropy

    vocab = len(tokenizer)
    width = max((len(o.entropies) for o in outs), default=0)
    if width:
        ent = torch.zeros(len(outs), width)
        valid = torch.zeros(len(outs), width, dtype=torch.bool)
        for i, o in enumerate(outs):
            ent[i, : len(o.entropies)] = torch.tensor(o.entropies)
            valid[i, : len(o.entropies)] = True
        now = arpo_round_entropy(vocab_size=vocab, token_entropies=ent, mask=valid).tolist()
        for row, h in zip(sampled, now, strict=True):
            if row.initial_entropy is None:
                row.initial_entropy = h
            row.last_entropy = h
    per_uid = Counter(r.traj.uid for r in rows)
    candidates = [r for r in rows if r.active and r.traj.tool_calls and r.last_entropy is not None]
    delta = [(r.last_entropy or 0.0) - (r.initial_entropy or 0.0) for r in candidates]
    picks = arpo_plan_branches(
        delta,
        [r.traj.uid for r in candidates],
        [True] * len(candidates),
        dict(per_uid),
        int(arpo["n"]),
        beam_size=int(arpo["beam_size"]),
        entropy_weight=float(arpo["entropy_weight"]),
        branch_probability=float(arpo["branch_probability"]),
        generator=generator,
    )
    for index in picks:
        try:
            rows.append(candidates[index].copy())
        except Exception as exc:  # a tool state that cannot be copied costs this copy, not the batch
            log.warning("ARPO copy of a %s row: tool state fork failed: %s", candidates[index].traj.uid, exc)
    # A prompt without an active row and fewer than n rows gets one fresh row per round.
    per_uid = Counter(r.traj.uid for r in rows)
    active_uids = {r.traj.uid for r in rows if r.active}
    for req in requests:
        if per_uid[req.uid] < int(arpo["n"]) and req.uid not in active_uids and req.parent is None:
            fresh = _start_rows(engine, [req], cfg, tokenizer, use_tools)[0]
            rows.append(fresh)
            per_uid[req.uid] += 1
            active_uids.add(req.uid)


def _arpo_finish(rows: list[_Row], n: int) -> list[_Row]:
    """Each prompt keeps its first n rows, duplicating its last row when it has fewer."""
    by_uid: dict[str, list[_Row]] = {}
    for r in rows:
        by_uid.setdefault(r.traj.uid, []).append(r)
    out: list[_Row] = []
    for group in by_uid.values():
        for extra in group[n:]:
            extra.traj.close()
        group = group[:n]
        while len(group) < n:
            dup = group[-1].copy()
            dup.traj.finish_reason = group[-1].traj.finish_reason
            dup.traj.text = group[-1].traj.text
            group.append(dup)
        out.extend(group)
    return out
