"""Field validators shared by every config dataclass (EconomyConfig, LearnerConfig, the scripts' settings).

Each raises ``ValueError`` naming the field, the allowed range and the value received, e.g.
``"mutation must be a finite number in [0.0, 5.0], got 300"``. Bools are refused where numbers are
expected (``True`` is an int to Python, never a population size to a user). Standard library only.
"""
from __future__ import annotations

import math
import numbers

__all__ = ["check_int", "check_float", "check_vector", "check_seed", "is_number", "SEED_MAX"]

SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed takes seeds modulo 2**64: larger ones (and -1) alias


def is_number(value) -> bool:
    """A real int or float (not a bool, not a string, not complex)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(name: str, value, low: int, high: float = math.inf) -> None:
    """``value`` is an int (not a bool) in [low, high]."""
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        upper = "" if high == math.inf else f" and <= {high}"
        raise ValueError(f"{name} must be an int >= {low}{upper}, got {value!r}")


def check_float(name: str, value, low: float, high: float, low_open: bool = False, high_open: bool = False) -> None:
    """``value`` is a finite int or float in the interval from low to high (open ends as flagged)."""
    ok = is_number(value) and math.isfinite(value)
    ok = ok and (low < value if low_open else low <= value) and (value < high if high_open else value <= high)
    if not ok:
        left = "(" if low_open else "["
        right = ")" if high_open or high == math.inf else "]"
        raise ValueError(f"{name} must be a finite number in {left}{low}, {high}{right}, got {value!r}")


def check_vector(name: str, vector, length: int, high: float = math.inf, what: str = "one per resource") -> None:
    """``vector`` is a tuple or list of ``length`` finite numbers in [0, high]."""
    ok = isinstance(vector, (tuple, list)) and len(vector) == length and all(
        is_number(v) and math.isfinite(v) and 0 <= v <= high for v in vector)
    if not ok:
        bound = ">= 0" if high == math.inf else f"in [0, {high:g}]"
        raise ValueError(f"{name} must be {length} finite numbers {bound} ({what}), got {vector!r}")


def check_seed(name: str, value, allow_none: bool = False) -> None:
    """``value`` is an integer (Python or NumPy, not a bool) in [0, 2**64 - 1], or None if allowed.

    The range is the torch generator's: it reduces seeds modulo 2**64, so -1 and 2**64 - 1 would
    give the same stream, and 1.5 or "7" are not seeds at all.
    """
    if value is None and allow_none:
        return
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or not 0 <= value <= SEED_MAX:
        none = "None or " if allow_none else ""
        raise ValueError(f"{name} must be {none}an int in [0, 2**64 - 1], got {value!r} ({type(value).__name__})")
