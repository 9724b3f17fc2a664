"""Mathematical answer equivalence.

* :func:`math_verify_equal` — symbolic equivalence with the ``math-verify`` package (fractions vs decimals,
  LaTeX forms, sets, intervals, …). Works in worker threads (the signal-based timeout is only used in
  the main thread).
* :func:`numeric_equal` — a small, dependency-free numeric fallback (``1,000`` = ``1000``,
  ``\\frac{3}{4}`` = ``0.75``, ``50\\%`` = ``50``, ``5\\text{ cm}`` = ``5``).
* :func:`hendrycks_is_equiv` — the string-rewriting comparison of the reference evaluation code (MATH
  style), used by the LLM-judge decision rule.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from fractions import Fraction

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------
# math-verify
# --------------------------------------------------------------------------------------------------------
def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _parse(text: str, timeout: int | None) -> list:
    from math_verify import parse  # imported lazily: sympy is slow to import

    try:
        return parse(text, parsing_timeout=timeout)  # type: ignore[arg-type]
    except Exception as exc:  # math-verify raises on pathological input
        log.debug("math-verify parse failed for %r: %s", text, exc)
        return []


def parse_math(answer: str, *, timeout: int | None = 5) -> list:
    """Parse an answer (bare LaTeX, ``$…$`` or plain expression) with math-verify; ``[]`` on failure."""
    if not _in_main_thread():
        timeout = None
    s = answer.strip()
    if not s:
        return []
    parsed = _parse(f"${s}$", timeout) if "$" not in s else _parse(s, timeout)
    if not parsed:
        parsed = _parse(f"\\boxed{{{s}}}", timeout)
    return parsed


def math_verify_equal(prediction: str, gold: str, *, timeout: int | None = 5) -> bool:
    """Symbolic equivalence of two answer strings according to math-verify (``gold`` first)."""
    from math_verify import verify

    if not _in_main_thread():
        timeout = None
    g = parse_math(gold, timeout=timeout)
    p = parse_math(prediction, timeout=timeout)
    if not g or not p:
        return False
    try:
        return bool(verify(g, p, timeout_seconds=timeout))
    except Exception as exc:
        log.debug("math-verify verify failed for %r vs %r: %s", prediction, gold, exc)
        return False


# --------------------------------------------------------------------------------------------------------
# numeric fallback
# --------------------------------------------------------------------------------------------------------
_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{[^{}]*\}")
_FRAC = re.compile(r"^(-?)\\[dt]?frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}$")
_SLASH = re.compile(r"^(-?\d+(?:\.\d+)?)/(-?\d+(?:\.\d+)?)$")
_NUMBER = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def to_number(text: str) -> Fraction | float | None:
    """Parse a plain number, a fraction (``a/b``, ``\\frac{a}{b}``) or a number with a unit/percent
    decoration into an exact :class:`~fractions.Fraction` (or float for exponents); ``None`` otherwise."""
    s = str(text).strip().strip("$").strip()
    for token in (
        "\\!",
        "\\,",
        "\\;",
        "\\:",
        "\\ ",
        "\\left",
        "\\right",
        "^\\circ",
        "^{\\circ}",
        "\\%",
        "%",
        "\\$",
    ):
        s = s.replace(token, "")
    s = _TEXT.sub("", s)
    s = _THOUSANDS.sub("", s).replace(" ", "")
    s = s.rstrip(".")
    if s.startswith("{") and s.endswith("}"):
        s = s[1:-1]
    if not s:
        return None
    try:
        if _NUMBER.match(s):
            if "e" in s.lower():
                return float(s)
            return Fraction(s)
        m = _FRAC.match(s)
        if m:
            value = Fraction(m.group(2)) / Fraction(m.group(3))
            return -value if m.group(1) else value
        m = _SLASH.match(s)
        if m:
            return Fraction(m.group(1)) / Fraction(m.group(2))
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return None


def numeric_equal(prediction: str, gold: str, *, rel_tol: float = 1e-9, abs_tol: float = 1e-9) -> bool:
    """True when both strings parse as numbers (see :func:`to_number`) with equal values."""
    a, b = to_number(prediction), to_number(gold)
    if a is None or b is None:
        return False
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return a == b
    return math.isclose(float(a), float(b), rel_tol=rel_tol, abs_tol=abs_tol)


# --------------------------------------------------------------------------------------------------------
# reference-style string equivalence (Hendrycks MATH)
# --------------------------------------------------------------------------------------------------------
def _fix_fracs(s: str) -> str:
    parts = s.split("\\frac")
    out = parts[0]
    for sub in parts[1:]:
        out += "\\frac"
        if sub.startswith("{"):
            out += sub
            continue
        if len(sub) < 2:
            return s  # malformed: give up and keep the input unchanged
        a, b, rest = sub[0], sub[1], sub[2:]
        if b == "{":
            out += "{" + a + "}" + b + rest
        else:
            out += "{" + a + "}{" + b + "}" + rest
    return out


def _fix_sqrt(s: str) -> str:
    if "\\sqrt" not in s:
        return s
    parts = s.split("\\sqrt")
    out = parts[0]
    for sub in parts[1:]:
        if not sub:
            raise ValueError("trailing \\sqrt")
        if sub[0] != "{":
            out += "\\sqrt{" + sub[0] + "}" + sub[1:]
        else:
            out += "\\sqrt" + sub
    return out


def _fix_slash(s: str) -> str:
    pieces = s.split("/")
    if len(pieces) != 2:
        return s
    try:
        a, b = int(pieces[0]), int(pieces[1])
    except ValueError:
        return s
    if s != f"{a}/{b}":
        return s
    return f"\\frac{{{a}}}{{{b}}}"


def hendrycks_strip(s: str) -> str:
    """Canonicalise a LaTeX answer string by the fixed rewrite list of the reference evaluation code."""
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "")
    if "\\text{ " in s:
        pieces = s.split("\\text{ ")
        if len(pieces) != 2:
            raise ValueError("more than one unit")
        s = pieces[0]
    s = s.replace("\\%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        s = sides[1]
    s = _fix_sqrt(s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _fix_slash(s)


def hendrycks_is_equiv(a: str | None, b: str | None) -> bool:
    """String equivalence after :func:`hendrycks_strip`; raw equality if stripping fails."""
    if a is None and b is None:
        return True
    if a is None or b is None:
        return False
    try:
        return hendrycks_strip(a) == hendrycks_strip(b)
    except Exception:
        return a == b
