from __future__ import annotations

import math
from fractions import Fraction

import pytest

from appo.eval import mean_pass_at_k, pass_at_k, pass_at_k_curve


def _closed_form(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 0, 1, 0.0),  # nothing correct
        (5, 0, 5, 0.0),
        (5, 5, 1, 1.0),  # everything correct
        (5, 5, 5, 1.0),
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
        (5, 2, 1, 0.4),  # k = 1 is the fraction correct
        (5, 1, 5, 1.0),  # k = n: any correct
        (5, 3, 3, 1.0),  # n - c < k: every draw of k contains a correct one
        (1, 1, 1, 1.0),
        (1, 0, 1, 0.0),
    ],
)
def test_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_matches_closed_form_everywhere_small():
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(float(_closed_form(n, c, k)), abs=1e-12)


def test_large_n_is_stable():
    # C(1000, 500) overflows a float; the product form does not.
    assert pass_at_k(1000, 1, 500) == pytest.approx(0.5, abs=1e-12)
    assert pass_at_k(1000, 10, 100) == pytest.approx(float(_closed_form(1000, 10, 100)), rel=1e-10)


def test_k_larger_than_n_is_a_clear_error():
    with pytest.raises(ValueError, match=r"k=6 is larger than the number of samples n=5"):
        pass_at_k(5, 2, 6)


@pytest.mark.parametrize(
    ("args", "exc", "pattern"),
    [
        ((0, 0, 1), ValueError, "n must be"),
        ((5, 6, 1), ValueError, "c must satisfy"),
        ((5, -1, 1), ValueError, "c must satisfy"),
        ((5, 1, 0), ValueError, "k must be"),
        ((5.0, 1, 1), TypeError, "n must be an int"),
        ((5, True, 1), TypeError, "c must be an int"),
    ],
)
def test_bad_inputs(args, exc, pattern):
    with pytest.raises(exc, match=pattern):
        pass_at_k(*args)


def test_mean_and_curve():
    counts = [(4, 0), (4, 1), (4, 4)]
    assert mean_pass_at_k(counts, 1) == pytest.approx((0 + 0.25 + 1) / 3)
    curve = pass_at_k_curve(counts)
    assert list(curve) == [1, 2, 3, 4]
    assert curve[4] == pytest.approx(2 / 3)
    values = list(curve.values())
    assert values == sorted(values)
