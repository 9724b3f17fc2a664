"""The unbiased pass@k estimator (Chen et al., 2021).

For a question with ``n`` samples of which ``c`` are correct, ``pass@k = 1 − C(n−c, k) / C(n, k)``: the
probability that at least one of ``k`` samples drawn without replacement from the ``n`` is correct.
The ratio of binomials is evaluated as the product ``∏_{i=n−c+1}^{n} (1 − k / i)``, which never forms
the (possibly huge) binomial coefficients and is exact for ``c = 0`` (0) and ``n − c < k`` (1).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["mean_pass_at_k", "pass_at_k", "pass_at_k_curve"]


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"pass_at_k: {name} must be an int, got {type(value).__name__} {value!r}")
    return value


def pass_at_k(n: int, c: int, k: int) -> float:
    """``1 − C(n−c, k)/C(n, k)`` for ``n`` samples, ``c`` correct, ``k`` drawn (``1 ≤ k ≤ n``, ``0 ≤ c ≤ n``).

    >>> pass_at_k(5, 0, 1), pass_at_k(5, 5, 3), pass_at_k(4, 1, 2)
    (0.0, 1.0, 0.5)
    """
    n, c, k = _check_int("n", n), _check_int("c", c), _check_int("k", k)
    if n < 1:
        raise ValueError(f"pass_at_k: n must be ≥ 1 (number of samples), got n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: c must satisfy 0 ≤ c ≤ n, got c={c}, n={n}")
    if k < 1:
        raise ValueError(f"pass_at_k: k must be ≥ 1, got k={k}")
    if k > n:
        raise ValueError(f"pass_at_k: k={k} is larger than the number of samples n={n}; draw n ≥ k samples")
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def mean_pass_at_k(counts: Iterable[tuple[int, int]], k: int) -> float:
    """Mean of :func:`pass_at_k` over questions given as ``(n, c)`` pairs (NaN when there are none)."""
    values = [pass_at_k(n, c, k) for n, c in counts]
    return sum(values) / len(values) if values else float("nan")


def pass_at_k_curve(counts: Sequence[tuple[int, int]], max_k: int | None = None) -> dict[int, float]:
    """``{k: mean pass@k}`` for ``k = 1 … max_k`` (default: the smallest ``n`` over the questions)."""
    if not counts:
        return {}
    limit = min(n for n, _ in counts) if max_k is None else max_k
    return {k: mean_pass_at_k(counts, k) for k in range(1, limit + 1)}
