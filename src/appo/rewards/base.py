"""Common types for reward functions.

Every reward is a callable ``(response_text, ground_truth, **info) -> RewardResult``. ``ground_truth`` is a
string or a list of acceptable aliases; ``info`` carries optional context (``data_source``, ``ability``,
``question``, ``extra_info`` …) that a reward may use or ignore.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

GroundTruth = str | Sequence[str]


@dataclass(frozen=True)
class RewardResult:
    """Outcome of one reward call.

    ``score`` is the scalar used for training or as the headline metric; ``components`` holds the numeric
    sub-scores (e.g. ``em``, ``cover_em``, ``f1``); ``reason`` is a short human-readable explanation and
    ``answer`` the answer string that was extracted from the response (``None`` when none was found).
    """

    score: float
    components: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    answer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, **self.components, "reason": self.reason, "answer": self.answer}


class RewardFn(Protocol):
    def __call__(self, response_text: str, ground_truth: GroundTruth, **info: Any) -> RewardResult: ...


def as_aliases(ground_truth: Any, *, parse_json_list: bool = True) -> list[str]:
    """Normalise a ground truth to a non-empty list of alias strings.

    A list/tuple is used as-is (items converted with ``str``). A string that is a JSON array of strings
    (``'["a", "b"]'``) is decoded when ``parse_json_list`` is true; any other string is a single alias.
    Numbers (e.g. aime25's integer answers) become their decimal string.
    """
    if ground_truth is None:
        raise ValueError("ground truth is None")
    if isinstance(ground_truth, str):
        text = ground_truth.strip()
        if parse_json_list and text.startswith("[") and text.endswith("]"):
            try:
                decoded = json.loads(text)
            except ValueError:
                decoded = None
            if isinstance(decoded, list) and decoded and all(isinstance(x, str) for x in decoded):
                return list(decoded)
        return [ground_truth]
    if isinstance(ground_truth, (list, tuple)):
        if not ground_truth:
            raise ValueError("ground truth alias list is empty")
        return [str(x) for x in ground_truth]
    if isinstance(ground_truth, (int, float)) and not isinstance(ground_truth, bool):
        return [str(ground_truth)]
    # numpy arrays and other sequences coming from pyarrow/pandas
    if hasattr(ground_truth, "tolist"):
        return as_aliases(ground_truth.tolist(), parse_json_list=parse_json_list)
    raise TypeError(f"unsupported ground truth type {type(ground_truth).__name__}")
