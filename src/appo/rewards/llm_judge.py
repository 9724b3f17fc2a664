"""LLM-as-judge reward over an OpenAI-compatible chat-completions endpoint.

Configuration comes from arguments or the environment:

* ``APPO_JUDGE_BASE_URL`` — e.g. ``http://localhost:8001/v1`` (``/chat/completions`` is appended);
* ``APPO_JUDGE_MODEL`` — the served model name (e.g. ``Qwen2.5-72B-Instruct``);
* ``APPO_JUDGE_API_KEY`` — optional bearer token (``OPENAI_API_KEY`` is used when unset).

Prompt structure and decision rule follow the reference evaluation (``eval-tools-data.md`` §1.6): one user
message asking whether the predicted answer matches the golden answer, then labelled ``Question`` /
``Golden Answer`` / ``Predicted Answer`` lines (the gold interpolated with ``str()``, so alias lists read
``['a', 'b']``). The verdict text is the content of ``<judgment>…</judgment>`` if present, else the whole
reply, lower-cased; ``correct = is_equiv(pred, gold) or ("correct" in t and none of "incorrect", "wrong",
"not correct" in t)``. On API failure (after retries) only ``is_equiv`` decides and ``judge_error`` = 1.
Deviation: with an alias list, ``is_equiv`` is tried against each alias (the reference compares the list
object and always gets False).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from appo.rewards.base import GroundTruth, RewardResult, as_aliases
from appo.rewards.math_equiv import hendrycks_is_equiv
from appo.rewards.text import extract_final_answer

log = logging.getLogger(__name__)

ENV_BASE_URL = "APPO_JUDGE_BASE_URL"
ENV_MODEL = "APPO_JUDGE_MODEL"
ENV_API_KEY = "APPO_JUDGE_API_KEY"

JUDGE_PROMPT = (
    "Decide whether the Predicted Answer fully matches the meaning and the key information of the "
    'Golden Answer for the Question below. Reply with exactly one word: "Correct" if it matches, '
    '"Incorrect" if it does not. The Golden Answer may list several acceptable options; matching any one '
    "of them is enough.\n\n"
    "Question: {question}\n"
    "Golden Answer: {gold}\n"
    "Predicted Answer: {prediction}\n"
)
NEGATIVE_MARKERS = ("incorrect", "wrong", "not correct")
_JUDGMENT = re.compile(r"<judgment>(.*?)</judgment>", re.DOTALL | re.IGNORECASE)


class JudgeNotConfiguredError(RuntimeError):
    """No judge endpoint/model was given and none is set in the environment."""


class JudgeRequestError(RuntimeError):
    """The endpoint could not be reached or returned an unusable reply after all retries."""


@dataclass
class JudgeConfig:
    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 60.0
    max_attempts: int = 3
    backoff_s: Sequence[float] = (1.0, 2.0)
    cache_path: str | None = None
    prompt_template: str = JUDGE_PROMPT
    on_error: str = "fallback"  # or "raise"

    @classmethod
    def from_env(cls, **overrides: Any) -> JudgeConfig:
        base_url = overrides.pop("base_url", None) or os.environ.get(ENV_BASE_URL)
        model = overrides.pop("model", None) or os.environ.get(ENV_MODEL)
        api_key = (
            overrides.pop("api_key", None) or os.environ.get(ENV_API_KEY) or os.environ.get("OPENAI_API_KEY")
        )
        missing = [name for name, value in ((ENV_BASE_URL, base_url), (ENV_MODEL, model)) if not value]
        if missing:
            raise JudgeNotConfiguredError(
                "LLM judge is not configured: set "
                + " and ".join(missing)
                + f" (e.g. {ENV_BASE_URL}=http://localhost:8001/v1 {ENV_MODEL}=Qwen2.5-72B-Instruct; "
                f"optional {ENV_API_KEY}), or pass base_url=/model= explicitly."
            )
        return cls(base_url=str(base_url), model=str(model), api_key=api_key, **overrides)


def verdict_is_correct(reply: str) -> bool:
    """The reference decision on a judge reply (without the ``is_equiv`` shortcut)."""
    m = _JUDGMENT.search(reply)
    text = (m.group(1) if m else reply).lower()
    return "correct" in text and not any(marker in text for marker in NEGATIVE_MARKERS)


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-1, 2)
        return fh.read(1) == b"\n"


def judge_prediction(response_text: str) -> str:
    """The answer the judge sees: the extracted final answer, else the last five non-empty lines."""
    answer = extract_final_answer(response_text)
    if answer is not None:
        return answer
    lines = [ln for ln in response_text.splitlines() if ln.strip()]
    return "\n".join(lines[-5:]).strip()


@dataclass
class LLMJudge:
    """A reusable judge with an in-memory (optionally on-disk jsonl) cache of successful verdicts."""

    config: JudgeConfig
    client: httpx.Client | None = None
    _cache: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    cache_lines_skipped: int = field(default=0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.client is None:
            self.client = httpx.Client(timeout=self.config.timeout_s)
        if self.config.cache_path and Path(self.config.cache_path).exists():
            # A line cut by a crash mid-write (or damaged otherwise) is skipped and counted, not fatal.
            with open(self.config.cache_path, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                        key, reply = rec["key"], rec["reply"]
                        if not isinstance(key, str) or not isinstance(reply, str):
                            raise TypeError("key and reply must be strings")
                    except (ValueError, KeyError, TypeError):
                        self.cache_lines_skipped += 1
                        continue
                    self._cache[key] = reply
            if self.cache_lines_skipped:
                log.warning(
                    "LLM judge cache %s: skipped %d damaged line(s)",
                    self.config.cache_path,
                    self.cache_lines_skipped,
                )

    @property
    def url(self) -> str:
        return self.config.base_url.rstrip("/") + "/chat/completions"

    def cache_key(self, question: str, gold: str, prediction: str) -> str:
        blob = json.dumps([self.config.model, question, gold, prediction], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _request(self, prompt: str) -> str:
        headers = {"Content-Type": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        payload = {"model": self.config.model, "messages": [{"role": "user", "content": prompt}]}
        assert self.client is not None
        last: Exception | None = None
        for attempt in range(max(1, self.config.max_attempts)):
            if attempt:
                delays = list(self.config.backoff_s) or [0.0]
                time.sleep(delays[min(attempt - 1, len(delays) - 1)])
            try:
                resp = self.client.post(
                    self.url, json=payload, headers=headers, timeout=self.config.timeout_s
                )
                if resp.status_code >= 400:
                    last = JudgeRequestError(f"HTTP {resp.status_code} from {self.url}: {resp.text[:200]}")
                    if resp.status_code < 500 and resp.status_code not in (408, 429):
                        break  # client error: retrying will not help
                    continue
                data = resp.json()
                try:
                    content = data["choices"][0]["message"]["content"]
                except (KeyError, IndexError, TypeError):
                    raise JudgeRequestError(f"malformed reply: {str(data)[:200]}") from None
                if not isinstance(content, str):
                    raise JudgeRequestError(f"reply content is not a string: {content!r}")
                return content
            except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError, JudgeRequestError) as exc:
                last = exc
        raise JudgeRequestError(f"judge request to {self.url} failed after retries: {last}") from last

    def ask(self, question: str, gold: str, prediction: str) -> str:
        """The judge's raw reply (cached)."""
        key = self.cache_key(question, gold, prediction)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        prompt = self.config.prompt_template.format(question=question, gold=gold, prediction=prediction)
        reply = self._request(prompt)
        with self._lock:
            self._cache[key] = reply
            if self.config.cache_path:
                path = Path(self.config.cache_path)
                # After a torn last line, start a new line so this record is not glued to the damage.
                torn = path.exists() and path.stat().st_size > 0 and not _ends_with_newline(path)
                with open(path, "a", encoding="utf-8") as fh:
                    record = json.dumps({"key": key, "reply": reply}, ensure_ascii=False)
                    fh.write(("\n" if torn else "") + record + "\n")
        return reply

    def __call__(self, response_text: str, ground_truth: GroundTruth, **info: Any) -> RewardResult:
        question = str(info.get("question") or (info.get("extra_info") or {}).get("question") or "")
        prediction = judge_prediction(response_text)
        gold_text = str(ground_truth if isinstance(ground_truth, str) else list(ground_truth))
        equiv = any(
            hendrycks_is_equiv(prediction, gt) for gt in as_aliases(ground_truth, parse_json_list=False)
        )
        try:
            reply = self.ask(question, gold_text, prediction)
        except JudgeRequestError as exc:
            if self.config.on_error == "raise":
                raise
            log.warning("LLM judge failed, falling back to string equivalence: %s", exc)
            comps = {"llm_equal": float(equiv), "is_equiv": float(equiv), "judge_error": 1.0}
            return RewardResult(float(equiv), comps, reason=f"Error: {exc}", answer=prediction)
        llm_says = verdict_is_correct(reply)
        correct = equiv or llm_says
        comps = {"llm_equal": float(correct), "is_equiv": float(equiv), "judge_error": 0.0}
        return RewardResult(float(correct), comps, reason=reply.strip()[:500], answer=prediction)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


_DEFAULT: dict[tuple[str, str, str | None], LLMJudge] = {}
_DEFAULT_LOCK = threading.Lock()


def judge(
    response_text: str,
    ground_truth: GroundTruth,
    *,
    judge_client: LLMJudge | None = None,
    base_url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    **info: Any,
) -> RewardResult:
    """LLM-judge reward (score 1 correct / 0 incorrect). Pass ``question=`` in ``info`` (or inside
    ``extra_info``). Uses ``judge_client`` if given, else a shared :class:`LLMJudge` built from the
    arguments/environment; raises :class:`JudgeNotConfiguredError` when neither names an endpoint."""
    if judge_client is None:
        config = JudgeConfig.from_env(base_url=base_url, model=model, api_key=api_key)
        key = (config.base_url, config.model, config.api_key)
        with _DEFAULT_LOCK:
            judge_client = _DEFAULT.get(key)
            if judge_client is None:
                judge_client = _DEFAULT[key] = LLMJudge(config)
    return judge_client(response_text, ground_truth, **info)
