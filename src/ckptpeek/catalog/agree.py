"""When two sources' values of a field say the same thing (``values_agree``).

Used by the merge (``build.merge``, ``build._mark_best``) and by the sources that read
several files of one kind (``sources._add_fields``); it sits below both so neither
imports the other.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ("values_agree",)


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


def values_agree(field: str, a: Any, b: Any) -> bool:
    """Do two sources' values of ``field`` say the same thing?

    Floats agree to the precision of the less precise one (a file name's ``0.8512``
    agrees with ``0.85123``); architecture names ignore case, punctuation and a
    ``Decoder``/``Head`` suffix; datetimes compare as instants."""
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a == b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        fa, fb = float(a), float(b)
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
