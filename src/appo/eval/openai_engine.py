"""A sampler for models served elsewhere: any OpenAI-compatible ``/v1/completions`` endpoint (vLLM,
SGLang, TGI, llama.cpp server, …), behind the same :class:`~appo.rollout.engine.Engine` protocol as the
local HF engine, so evaluation runs the very same tool loop.

Each round sends, per active sequence, one completions request with the whole context as the prompt (the
decoded text by default, or the token ids with ``prompt_format="tokens"``), ``max_tokens`` = the
sequence's remaining budget and the loop's stop strings **server-side** (the reference evaluation sent
none and cut client-side). Requests of a round run concurrently in a thread pool.

Mapping of the reply onto a :class:`~appo.rollout.engine.RoundOutput`:

* the text is tokenized with the local tokenizer (the same model's tokenizer is expected);
* ``finish_reason == "length"`` → ``length``;
* a stop string: servers strip it from the text unless asked otherwise (we send vLLM's
  ``include_stop_str_in_output``); the matched string is taken from the text's end, else vLLM's
  ``stop_reason``, else inferred from an unclosed opening tag (``…<python>code`` → ``</python>``), and
  is appended to the text when missing, so the loop sees the complete tool call;
* otherwise ``eos`` (the EOS token id is appended, like the HF engine records it);
* log-probs: when ``request_logprobs`` and the server returns one per token that matches the local
  tokenization, those values; otherwise **0.0** for every sampled token (evaluation never uses them; the
  trajectory invariant only needs a finite value). Entropies are NaN (not measured).
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import time
from collections.abc import Sequence as Seq
from typing import Any

import httpx
import torch

from appo.rollout.engine import RoundOutput, SamplingParams, Sequence, eos_ids_of

__all__ = ["OpenAICompletionsEngine", "OpenAIEngineError"]


class OpenAIEngineError(RuntimeError):
    """The completions endpoint could not be reached or returned an unusable reply after retries."""


def _first_choice(data: Any) -> dict[str, Any]:
    """The first choice of a completions reply, checked: a malformed reply is an :class:`OpenAIEngineError`
    naming what was wrong, never a raw AttributeError/KeyError from deep inside."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices:
        raise OpenAIEngineError(f"reply has no 'choices' list: {str(data)[:200]}")
    choice = choices[0]
    if not isinstance(choice, dict) or not isinstance(choice.get("text"), str):
        raise OpenAIEngineError(f"reply choice has no text: {choice!r}"[:300])
    return choice


class OpenAICompletionsEngine:
    """Engine protocol over ``POST {base_url}/completions``."""

    def __init__(
        self,
        base_url: str,
        model: str,
        tokenizer: Any,
        *,
        api_key: str | None = None,
        timeout_s: float = 600.0,
        max_attempts: int = 3,
        backoff_s: float = 1.0,
        max_concurrency: int = 16,
        prompt_format: str = "text",
        request_logprobs: bool = False,
        extra_body: dict[str, Any] | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        if prompt_format not in ("text", "tokens"):
            raise ValueError(f"prompt_format must be 'text' or 'tokens', got {prompt_format!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_ids_of(tokenizer)
        self.api_key = api_key
        self.timeout_s = float(timeout_s)
        self.max_attempts = max(1, int(max_attempts))
        self.backoff_s = float(backoff_s)
        self.prompt_format = prompt_format
        self.request_logprobs = request_logprobs
        self.extra_body = dict(extra_body or {})
        self.client = client or httpx.Client(timeout=self.timeout_s)
        self._pool = cf.ThreadPoolExecutor(
            max_workers=max(1, int(max_concurrency)), thread_name_prefix="appo-oai"
        )
        self.requests_sent = 0

    @property
    def url(self) -> str:
        return self.base_url + "/completions"

    # ---------------------------------------------------------------------------------- sequences

    def new_sequence(self, token_ids: Seq[int]) -> Sequence:
        if not token_ids:
            raise ValueError("a sequence needs at least one token")
        ids = [int(t) for t in token_ids]
        return Sequence(pending=list(ids), history=list(ids))

    def prefill(self, seqs: Seq[Sequence]) -> None:
        """Nothing to do: the server keeps (or recomputes) its own prefix cache."""

    # ---------------------------------------------------------------------------------- sampling

    def _payload(self, seq: Sequence, params: SamplingParams, max_tokens: int, seed: int | None) -> dict:
        prompt: Any = (
            list(seq.history)
            if self.prompt_format == "tokens"
            else self.tokenizer.decode(seq.history, skip_special_tokens=False)
        )
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": int(max_tokens),
            "temperature": 0.0 if params.greedy else float(params.temperature),
            "top_p": 1.0 if params.greedy else float(params.top_p),
            "n": 1,
            "stream": False,
        }
        if params.stop:
            body["stop"] = list(params.stop)
            body["include_stop_str_in_output"] = True
        if params.top_k > 0 and not params.greedy:
            body["top_k"] = int(params.top_k)
        if seed is not None:
            body["seed"] = int(seed)
        if self.request_logprobs:
            body["logprobs"] = 1
        body.update(self.extra_body)
        return body

    def _post(self, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last: Exception | None = None
        for attempt in range(self.max_attempts):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                resp = self.client.post(self.url, json=body, headers=headers, timeout=self.timeout_s)
                if resp.status_code >= 400:
                    last = OpenAIEngineError(f"HTTP {resp.status_code} from {self.url}: {resp.text[:300]}")
                    if resp.status_code < 500 and resp.status_code not in (408, 429):
                        break  # a client error does not go away by retrying
                    continue
                return _first_choice(resp.json())
            except (httpx.HTTPError, ValueError, OpenAIEngineError) as exc:
                last = exc
        raise OpenAIEngineError(
            f"completions request to {self.url} failed after {self.max_attempts} attempt(s): {last}"
        ) from last

    def _stop_string(self, text: str, choice: dict, stops: tuple[str, ...]) -> str | None:
        """Which stop string ended this reply (None: EOS)."""
        stripped = text.rstrip()
        for s in stops:
            if stripped.endswith(s):
                return s
        reason = choice.get("stop_reason")
        if isinstance(reason, str) and reason in stops:
            return reason
        if reason is None and "stop_reason" in choice:
            return None  # vLLM says: EOS
        # Servers that report neither: an opening tag whose closer is a stop string and that is still open.
        best: tuple[int, str] | None = None
        for s in stops:
            if s.startswith("</"):
                opener = "<" + s[2:]
                pos = text.rfind(opener)
                if pos >= 0 and text.find(s, pos) < 0 and (best is None or pos > best[0]):
                    best = (pos, s)
        return best[1] if best else None

    def _one(self, seq: Sequence, params: SamplingParams, budget: int, seed: int | None) -> RoundOutput:
        out = RoundOutput()
        if budget <= 0:
            return out
        choice = self._post(self._payload(seq, params, budget, seed))
        self.requests_sent += 1
        text = choice["text"]
        finish = choice.get("finish_reason")
        eos = min(self.eos_token_ids) if self.eos_token_ids else None
        if finish == "length":
            out.finish_reason = "length"
        else:
            hit = self._stop_string(text, choice, tuple(params.stop))
            if hit is not None:
                if not text.rstrip().endswith(hit):
                    text += hit
                out.finish_reason, out.stop_string = "stop", hit
            else:
                out.finish_reason = "eos"
        tokens = self.tokenizer.encode(text, add_special_tokens=False) if text else []
        if (
            out.finish_reason == "eos"
            and eos is not None
            and (not tokens or tokens[-1] not in self.eos_token_ids)
        ):
            tokens.append(eos)
        if len(tokens) > budget:
            tokens = tokens[:budget]
            if out.finish_reason != "eos" or tokens[-1] not in self.eos_token_ids:
                out.finish_reason, out.stop_string = "length", None
        out.tokens = tokens
        out.logprobs = self._logprobs(choice, len(tokens))
        out.entropies = [math.nan] * len(tokens)
        seq.extend(tokens)
        seq.pending = []  # nothing is cached client-side; the history is the prompt of the next round
        return out

    def _logprobs(self, choice: dict, count: int) -> list[float]:
        lp = choice.get("logprobs") if self.request_logprobs else None
        values = lp.get("token_logprobs") if isinstance(lp, dict) else None
        if isinstance(values, list) and len(values) == count:
            clean = [float(v) if isinstance(v, (int, float)) and math.isfinite(v) else 0.0 for v in values]
            return clean
        return [0.0] * count

    def sample(
        self,
        seqs: Seq[Sequence],
        params: SamplingParams,
        max_new_tokens: Seq[int],
        generator: torch.Generator | None = None,
    ) -> list[RoundOutput]:
        if len(max_new_tokens) != len(seqs):
            raise ValueError("max_new_tokens needs one budget per sequence")
        seeds: list[int | None] = [None] * len(seqs)
        if generator is not None and not params.greedy:
            draws = torch.randint(0, 2**31 - 1, (len(seqs),), generator=generator)
            seeds = [int(s) for s in draws.tolist()]
        futures = [
            self._pool.submit(self._one, seq, params, int(budget), seed)
            for seq, budget, seed in zip(seqs, max_new_tokens, seeds, strict=True)
        ]
        return [f.result() for f in futures]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()
