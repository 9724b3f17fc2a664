"""Samplers. The HF engine keeps a KV cache per sequence across tool rounds.

A :class:`Sequence` is a token stream the engine continues over several rounds: its ``cache`` holds the
keys/values of every token already fed to the model, ``pending`` the tokens appended since (a prompt, a
tool result, the last sampled token). A round (:meth:`HFEngine.sample`) first prefills each sequence's
pending tokens into its own cache (sequences forked from one prefix share it, so the prefix is prefilled
once), then decodes all sequences together as one left-padded batch. A sequence leaves the batch as soon
as it stops (EOS, a stop string, its token budget), keeping its cache for the next round — tool-result
tokens are appended to that cache, never re-prefilled with the whole context.

Every sampled token comes with its log-prob under softmax(logits / T) and the exact entropy of that
distribution (T = 1 for greedy decoding), in float32, so the trainer's FutureValue and Branching Score
read per-position values that are aligned with the response by construction.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

__all__ = ["Engine", "HFEngine", "RoundOutput", "SamplingParams", "Sequence"]


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    do_sample: bool = True
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature <= 0

    @classmethod
    def from_config(cls, rollout_cfg: Any, validation: bool = False, stop: Seq[str] = ()) -> SamplingParams:
        src = rollout_cfg.val_kwargs if validation else rollout_cfg
        return cls(
            temperature=float(src.temperature),
            top_p=float(src.top_p),
            top_k=int(src.top_k),
            do_sample=bool(src.do_sample),
            stop=tuple(stop),
        )


@dataclass
class Sequence:
    """Engine-side state of one token stream: ``length`` tokens in ``cache``, then ``pending``."""

    pending: list[int]
    cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    length: int = 0
    # Every token of the stream so far (in the cache or pending).
    history: list[int] = field(default_factory=list)
    # Tokens written before this round that a stop string may span: the start of the current segment
    # when a branch splits inside a tool call or its closing tag. Set by the caller before sampling.
    stop_context: list[int] = field(default_factory=list)

    def fork(self) -> Sequence:
        # Cache tensors are never modified in place (appending creates new tensors), so sharing is safe.
        return Sequence(
            pending=list(self.pending),
            cache=self.cache,
            length=self.length,
            history=list(self.history),
            stop_context=list(self.stop_context),
        )

    def extend(self, tokens: Seq[int]) -> None:
        self.pending.extend(int(t) for t in tokens)
        self.history.extend(int(t) for t in tokens)


@dataclass
class RoundOutput:
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)
    # "eos" (an end-of-sequence token), "stop" (a stop string; see stop_string), "length" (token budget)
    finish_reason: str = "length"
    stop_string: str | None = None


class Engine(Protocol):
    """What the tool loop needs from a sampler."""

    tokenizer: Any
    eos_token_ids: frozenset[int]

    def new_sequence(self, token_ids: Seq[int]) -> Sequence: ...

    def prefill(self, seqs: Seq[Sequence]) -> None: ...

    def sample(
        self,
        seqs: Seq[Sequence],
        params: SamplingParams,
        max_new_tokens: Seq[int],
        generator: torch.Generator | None = None,
    ) -> list[RoundOutput]: ...


def eos_ids_of(tokenizer: Any, model: Any = None) -> frozenset[int]:
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, (list, tuple)):
        ids.update(int(e) for e in eos)
    return frozenset(ids)


_TOKEN_TEXT_CACHE: dict[int, list[str]] = {}


def token_texts(tokenizer: Any) -> list[str]:
    """The decoded text of every vocabulary id, computed once per tokenizer."""
    key = id(tokenizer)
    if key not in _TOKEN_TEXT_CACHE:
        _TOKEN_TEXT_CACHE[key] = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return _TOKEN_TEXT_CACHE[key]


class StopMatcher:
    """Finds stop strings in a stream of tokens, including strings that span several tokens.

    Only tokens whose text contains the last character of some stop string can complete a match; for
    those, the decoded tail of the current segment is searched. The token that completes the stop
    string is kept (its text may run past the stop string); nothing after it is generated."""

    WINDOW = 24

    def __init__(self, tokenizer: Any, stops: Seq[str]) -> None:
        self.tokenizer = tokenizer
        self.stops = tuple(s for s in stops if s)
        last_chars = {s[-1] for s in self.stops}
        texts = token_texts(tokenizer) if self.stops else []
        self.can_complete = [any(c in t for c in last_chars) for t in texts]

    def match(self, segment: Seq[int], context: Seq[int] = ()) -> str | None:
        """The stop string completed by the last token of ``segment`` (this round's tokens), which may
        begin in ``context`` (tokens of the same text written before this round)."""
        if not self.stops or not segment:
            return None
        last = segment[-1]
        if last >= len(self.can_complete) or not self.can_complete[last]:
            return None
        window = list(segment[-self.WINDOW :])
        if len(window) < self.WINDOW and context:
            window = list(context[len(window) - self.WINDOW :]) + window
        tail = self.tokenizer.decode(window)
        hits = [(tail.find(s), s) for s in self.stops if s in tail]
        return min(hits)[1] if hits else None


def _filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the mass before it already reaches top_p (the first token always stays).
        drop = (probs.cumsum(-1) - probs) >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


class HFEngine:
    """Batched sampling on a ``transformers`` causal LM with per-sequence KV caches (CPU or CUDA)."""

    def __init__(
        self, model: Any, tokenizer: Any, max_batch_size: int = 64, prefill_tokens: int = 16384
    ) -> None:
        from transformers.cache_utils import DynamicCache, DynamicLayer

        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        # Upper bound on rows x padded width of one prefill forward pass.
        self.prefill_tokens = prefill_tokens
        self.eos_token_ids = eos_ids_of(tokenizer, model)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._DynamicCache = DynamicCache
        probe = DynamicCache(config=model.config)
        if any(type(layer) is not DynamicLayer for layer in probe.layers):
            raise NotImplementedError(
                f"{type(model).__name__} uses sliding-window or hybrid caches; the HF engine supports "
                "full-attention models (Llama, Qwen2/3, Mistral without sliding window, ...)"
            )
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._stop_matchers: dict[tuple[str, ...], StopMatcher] = {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------------------------- sequences

    def new_sequence(self, token_ids: Seq[int]) -> Sequence:
        if not token_ids:
            raise ValueError("a sequence needs at least one token")
        return Sequence(pending=[int(t) for t in token_ids], history=[int(t) for t in token_ids])

    def _forward(self, input_ids: torch.Tensor, cache: Any, **kwargs: Any) -> Any:
        return self.model(
            input_ids=input_ids, use_cache=True, logits_to_keep=1, **{self._cache_kw: cache}, **kwargs
        )

    @torch.no_grad()
    def prefill(self, seqs: Seq[Sequence]) -> None:
        """Feed all pending tokens but the last into each sequence's cache, batched.

        Sequences whose fed context would be identical — the same cache object (or none) at the same
        length, followed by the same pending tokens but the last — are computed once (forks of one prefix,
        branches that split at their first divergent token). Each keeps its own last pending token, which
        the next decoding step feeds. A batch holds each sequence's cache left-padded and its new tokens
        right-aligned; the attention mask marks the holes, and each cache is compacted back from the mask
        afterwards."""
        unique: dict[tuple[int | None, int, tuple[int, ...]], list[Sequence]] = {}
        for seq in seqs:
            if len(seq.pending) > 1:
                owner = None if seq.cache is None else id(seq.cache)
                unique.setdefault((owner, seq.length, tuple(seq.pending[:-1])), []).append(seq)
        items = list(unique.values())
        start = 0
        while start < len(items):
            # Grow the group while the padded batch stays within the token budget.
            end, width_c, width_n = start, 0, 0
            while end < len(items):
                head = items[end][0]
                wc, wn = max(width_c, head.length), max(width_n, len(head.pending) - 1)
                if end > start and (end - start + 1) * (wc + wn) > self.prefill_tokens:
                    break
                width_c, width_n, end = wc, wn, end + 1
            self._prefill_group([group[0] for group in items[start:end]], width_c, width_n)
            for group in items[start:end]:
                for seq in group[1:]:
                    seq.cache, seq.length, seq.pending = group[0].cache, group[0].length, seq.pending[-1:]
            start = end

    def _prefill_group(self, seqs: list[Sequence], width_c: int, width_n: int) -> None:
        device = self.device
        rows = len(seqs)
        cache = self._batched_cache(seqs, width_c)
        ids = torch.full((rows, width_n), self.pad_token_id, dtype=torch.long, device=device)
        attention = torch.zeros(rows, width_c + width_n, dtype=torch.long, device=device)
        positions = torch.zeros(rows, width_n, dtype=torch.long, device=device)
        for b, seq in enumerate(seqs):
            new = seq.pending[:-1]
            ids[b, width_n - len(new) :] = torch.tensor(new, device=device)
            attention[b, width_c - seq.length : width_c] = 1
            attention[b, width_c + width_n - len(new) :] = 1
            positions[b, width_n - len(new) :] = torch.arange(
                seq.length, seq.length + len(new), device=device
            )
        self._forward(ids, cache, attention_mask=attention, position_ids=positions)
        for b, seq in enumerate(seqs):
            keep = attention[b].bool()
            seq.cache = [
                (layer.keys[b : b + 1, :, keep], layer.values[b : b + 1, :, keep]) for layer in cache.layers
            ]
            seq.length = int(keep.sum())
            seq.pending = seq.pending[-1:]

    def _batched_cache(self, seqs: list[Sequence], width: int) -> Any:
        """One DynamicCache holding the sequences' caches left-padded to ``width`` (empty when width is 0)."""
        template = next((s.cache for s in seqs if s.cache is not None), None)
        layers = []
        for layer in range(len(template) if template is not None and width else 0):
            keys, values = [], []
            for seq in seqs:
                if seq.cache is not None:
                    k, v = seq.cache[layer]
                else:  # nothing in the cache yet: all padding
                    k, v = template[layer][0][:, :, :0], template[layer][1][:, :, :0]
                pad = width - seq.length
                if pad:
                    k = torch.cat([k.new_zeros(*k.shape[:2], pad, k.shape[3]), k], dim=2)
                    v = torch.cat([v.new_zeros(*v.shape[:2], pad, v.shape[3]), v], dim=2)
                keys.append(k)
                values.append(v)
            layers.append((torch.cat(keys), torch.cat(values)))
        return self._DynamicCache(ddp_cache_data=layers or None, config=self.model.config)

    # ------------------------------------------------------------------------------------- sampling

    def _stop_matcher(self, stops: tuple[str, ...]) -> StopMatcher:
        if stops not in self._stop_matchers:
            self._stop_matchers[stops] = StopMatcher(self.tokenizer, stops)
        return self._stop_matchers[stops]

    def _choose(
        self,
        logits: torch.Tensor,
        params: SamplingParams,
        generator: torch.Generator | None,
        seqs: list[Sequence],
    ) -> torch.Tensor:
        """Pick the next token of each row from temperature-scaled ``logits`` [rows, V]."""
        if params.greedy:
            return logits.argmax(-1)
        probs = torch.softmax(_filter_logits(logits, params.top_k, params.top_p), dim=-1)
        if generator is not None and generator.device != probs.device:
            return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(probs.device)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

    def sample(
        self,
        seqs: Seq[Sequence],
        params: SamplingParams,
        max_new_tokens: Seq[int],
        generator: torch.Generator | None = None,
    ) -> list[RoundOutput]:
        """Continue every sequence until EOS, a stop string or its own ``max_new_tokens``."""
        if len(max_new_tokens) != len(seqs):
            raise ValueError("max_new_tokens needs one budget per sequence")
        outputs = [RoundOutput() for _ in seqs]
        for start in range(0, len(seqs), self.max_batch_size):
            chunk = range(start, min(len(seqs), start + self.max_batch_size))
            self._sample_batch(
                [seqs[i] for i in chunk],
                params,
                [max_new_tokens[i] for i in chunk],
                [outputs[i] for i in chunk],
                generator,
            )
        return outputs

    @torch.no_grad()
    def _sample_batch(
        self,
        seqs: list[Sequence],
        params: SamplingParams,
        budgets: list[int],
        outputs: list[RoundOutput],
        generator: torch.Generator | None,
    ) -> None:
        for seq in seqs:
            if not seq.pending:
                raise ValueError("a sequence has nothing to continue from (no pending token)")
        self.prefill(seqs)
        matcher = self._stop_matcher(params.stop)
        device = self.device
        rows = [i for i, b in enumerate(budgets) if b > 0]
        if not rows:
            return
        # Left-pad the caches of the batch to a common width.
        width = max(seqs[i].length for i in rows)
        cache = self._batched_cache([seqs[i] for i in rows], width)
        attention = torch.zeros(len(rows), width + 1, dtype=torch.long, device=device)
        for b, i in enumerate(rows):
            attention[b, width - seqs[i].length :] = 1
        positions = torch.tensor([seqs[i].length for i in rows], device=device)
        next_ids = torch.tensor([seqs[i].pending[-1] for i in rows], device=device)
        active = list(rows)
        temperature = 1.0 if params.greedy else params.temperature
        while active:
            out = self._forward(
                next_ids[:, None], cache, attention_mask=attention, position_ids=positions[:, None]
            )
            logits = out.logits[:, -1, :].float() / temperature
            logp = torch.log_softmax(logits, dim=-1)
            entropy = -(logp.exp() * logp).sum(-1)  # logits are unfiltered here, so logp is finite
            chosen = self._choose(logits, params, generator, [seqs[i] for i in active])
            chosen_lp = logp.gather(-1, chosen[:, None]).squeeze(-1)
            tokens, lps, ents = chosen.tolist(), chosen_lp.tolist(), entropy.tolist()
            keep: list[int] = []
            for b, i in enumerate(active):
                seq, res = seqs[i], outputs[i]
                token = tokens[b]
                res.tokens.append(token)
                res.logprobs.append(lps[b])
                res.entropies.append(ents[b])
                # The token fed at this step is now in the cache; the new one waits for the next step.
                seq.length += 1
                seq.pending = [token]
                seq.history.append(token)
                if token in self.eos_token_ids:
                    res.finish_reason = "eos"
                elif (hit := matcher.match(res.tokens, seq.stop_context)) is not None:
                    res.finish_reason, res.stop_string = "stop", hit
                elif len(res.tokens) >= budgets[i]:
                    res.finish_reason = "length"
                else:
                    keep.append(b)
                    continue
                seq.cache = [
                    (
                        layer.keys[b : b + 1, :, -seq.length :].clone(),
                        layer.values[b : b + 1, :, -seq.length :].clone(),
                    )
                    for layer in cache.layers
                ]
            if len(keep) < len(active):
                if not keep:
                    break
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                attention = attention[index]
                chosen = chosen[index]
                active = [active[b] for b in keep]
                # Drop left columns that are padding for every remaining row.
                lead = int((attention.cumsum(-1) == 0).sum(-1).min())
                if lead:
                    attention = attention[:, lead:]
                    for layer in cache.layers:
                        layer.keys = layer.keys[:, :, lead:]
                        layer.values = layer.values[:, :, lead:]
            positions = torch.tensor([seqs[i].length for i in active], device=device)
            next_ids = chosen
            attention = torch.cat([attention, attention.new_ones(len(active), 1)], dim=1)


def logprob_entropy_reference(
    model: Any, token_ids: Seq[int], temperature: float = 1.0
) -> tuple[list[float], list[float]]:
    """Log-prob of each token given its prefix and entropy of that prefix's distribution, from one full
    forward pass (position 0 gets NaN). For tests and checks of the engine's recorded values."""
    ids = torch.tensor([list(token_ids)], device=next(model.parameters()).device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float() / temperature
    logp = torch.log_softmax(logits, dim=-1)
    token_lp = logp[:-1].gather(-1, ids[0, 1:, None]).squeeze(-1)
    ent = -(logp.exp() * logp).nan_to_num().sum(-1)[:-1]
    return [math.nan, *token_lp.tolist()], [math.nan, *ent.tolist()]
