"""When two sources' values of a field say the same thing (``values_agree``), which
values a field cannot take at all (``unusable``), and how a value is quoted when they
disagree (``show_value``).

Used by the merge (``build.merge``, ``build._mark_best``) and by the sources that read
several files of one kind (``sources._add_fields``); it sits below both so neither
imports the other. Both take any value a file may give (an int of thousands of bits, a
NaN, a string) and never raise.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ("COUNTERS", "show_value", "unusable", "values_agree")

#: counters: an entry holds them as a trainer keeps them, in an int64; a larger int
#: (``epoch = 1 << 20000`` in a checkpoint or a sidecar) is no counter, and would not print
COUNTERS = frozenset({"epoch", "global_step"})
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def show_value(value: Any) -> str:
    """A value in a disagreement warning: its repr, at most 80 characters (a sidecar's
    name may be megabytes long)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def unusable(field: str, value: Any) -> str | None:
    """Why ``value`` cannot be ``field``'s (a counter outside int64), else None: the
    merge and ``sources._add_fields`` skip it, with this reason as a warning, before it
    is compared, so the next file or source gives the field."""
    if field not in COUNTERS or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if _INT64_MIN <= value <= _INT64_MAX:  # exact for an int; False for a NaN
        return None
    if isinstance(value, int):
        return f"an int of {int.bit_length(value)} bits, outside int64; not used"
    return f"{float.__repr__(value)}, outside int64; not used"


def _norm_name(text: str) -> str:
    t = re.sub(r"[^a-z0-9]", "", text.lower())
    for suffix in ("decoder", "encoder", "head", "backbone", "neck"):
        if t.endswith(suffix) and len(t) > len(suffix):
            t = t[: -len(suffix)]
    return t


def _decimals(x: float) -> int | None:
    text = repr(float(x))
    if "e" in text or "n" in text:
        return None
    return len(text.partition(".")[2])


def _as_float(x: int | float) -> float | None:
    """``x`` as a float, None for an int no float holds (past 2**1024)."""
    try:
        return float(x)
    except OverflowError:
        return None


def values_agree(field: str, a: Any, b: Any) -> bool:
    """Do two sources' values of ``field`` say the same thing?

    Ints compare exactly (never through float(): ``2**1024`` is no float, and ``2**53 +
    1`` is not ``2**53``); floats agree to the precision of the less precise one (a file
    name's ``0.8512`` agrees with ``0.85123``), an int and a float so too when the int
    fits a float; architecture names ignore case, punctuation and a ``Decoder``/``Head``
    suffix; datetimes compare as instants."""
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a == b)
    if isinstance(a, int) and isinstance(b, int):
        return bool(a == b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        fa, fb = _as_float(a), _as_float(b)
        if fa is None or fb is None:  # an int past every finite float equals none
            return False
        if math.isnan(fa) or math.isnan(fb):
            return math.isnan(fa) and math.isnan(fb)
        if math.isclose(fa, fb, rel_tol=1e-6, abs_tol=1e-12):
            return True
        da, db = _decimals(fa), _decimals(fb)
        if da is None or db is None:
            return False
        d = min(da, db)
        return bool(abs(fa - fb) <= 0.5 * 10 ** (-d) + 1e-12)
    if field.startswith("architecture.") and isinstance(a, str) and isinstance(b, str):
        return _norm_name(a) == _norm_name(b)
    if hasattr(a, "timestamp") and hasattr(b, "timestamp"):
        try:
            return bool(abs(a.timestamp() - b.timestamp()) < 1e-3)
        except (TypeError, ValueError, OverflowError):
            return bool(a == b)
    return bool(a == b)
