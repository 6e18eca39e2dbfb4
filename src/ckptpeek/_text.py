"""Text that is safe to print: what a file says never reaches a terminal as control.

File contents and file names may hold ESC sequences (set the window title, clear the
screen, move the cursor and erase lines), newlines that fake a table row, bidi overrides
that reorder what is shown, and lone surrogates that a UTF-8 terminal cannot encode.
``printable`` escapes every one of them the way ``repr`` would, so what is shown is what
is there; ``--json`` output needs none of this (JSON escapes control characters itself).

``printable`` never raises, whatever it is given: an int too long for ``str()`` (CPython
refuses more than ``sys.get_int_max_str_digits()`` digits) is shown as
``<int of N bits>`` (``int_text``), an object whose ``__str__`` fails by its type.
``json_safe`` makes a copy of data that ``json.dumps`` always writes, as strict JSON
(the same rule for ints, as the string ``"<int of N bits>"``; NaN and the infinities
as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``): THE JSON-safe copy, which
``--json``, ``ckptpeek scan --json`` and the summary's facts use.
"""

from __future__ import annotations

import re
import sys

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from typing import Any, Final

__all__ = (
    "printable",
    "int_printable",
    "int_text",
    "json_safe",
    "JSON_MAX_VALUES",
    "JSON_MAX_DEPTH",
)

# C0 and C1 controls, DEL, the bidi embeddings/overrides/isolates and marks, line and
# paragraph separators, zero-width joiners and the BOM, and lone surrogates
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    c = ord(match.group())
    if c < 0x100:
        return {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}.get(c, f"\\x{c:02x}")
    return f"\\u{c:04x}"


def int_printable(value: int) -> bool:
    """Whether ``str(value)`` works: CPython refuses ints of more decimal digits than
    ``sys.get_int_max_str_digits()`` (ValueError), and a file may hold any int
    (``2**(3n) < 10**n``: 3 bits per allowed digit is safe)."""
    limit = sys.get_int_max_str_digits()
    return limit == 0 or int.bit_length(value) <= 3 * limit


def int_text(value: int) -> str:
    """``str(value)``, or ``<int of N bits>`` for an int too long for ``str``."""
    if int_printable(value):
        return int.__repr__(value)
    return f"<int of {int.bit_length(value)} bits>"


def printable(text: object) -> str:
    """``str(text)`` with every control, bidi and unencodable character escaped (``\\x1b``).

    Never raises: a str subclass gives its characters (not its own ``__str__``), an int
    ``int_text``, and an object whose ``__str__`` raises or returns no str its type's
    default repr (``<module.Type object at 0x...>``).
    """
    try:
        if isinstance(text, str):
            s = str.__str__(text)
        elif isinstance(text, int) and not isinstance(text, bool):
            s = int_text(text)
        else:
            s = str(text)
            if type(s) is not str:  # a str subclass returned by __str__: its characters
                s = str.__str__(s)
    except Exception:  # noqa: BLE001 - any object's __str__ may fail; printing must not
        try:
            s = object.__repr__(text)
        except Exception:  # noqa: BLE001 - a type that breaks even object.__repr__
            s = "<unprintable object>"
    if s.isprintable() and s.isascii():
        return s
    return _UNSAFE.sub(_escape, s)


#: output caps of ``json_safe``, not file limits: what it copies was read within
#: ``ckptpeek.Limits`` already (``max_nodes``, ``max_depth`` bound the file); these bound
#: what one JSON document shows of it. A value shared many times is copied each time it
#: is met (JSON has no references), so the copy needs a cap of its own: 1,000,000
#: values is tens of MB of JSON. ``json.dumps`` (and the reader's ``json.loads``)
#: recurse once per level, so the depth must stay far below the interpreter's
#: recursion limit (1,000) whatever ``Limits.max_depth`` a caller sets: 200, the
#: default ``max_depth``. Past either cap a value is ``"..."``.
JSON_MAX_VALUES: Final = 1_000_000
JSON_MAX_DEPTH: Final = 200
_JSON_TEXT_CHARS: Final = 10_000  # of the text of an object JSON cannot hold
#: floats JSON cannot hold (``json.dumps`` writes them as bare tokens no JSON parser
#: has to accept): the strings JavaScript and Python's ``float()`` read back
_NON_FINITE: Final = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_EXIT: Final[Any] = object()  # a marker on json_safe's stack: a container's copy is done


def json_safe(obj: Any, budget: int = JSON_MAX_VALUES) -> Any:
    """A copy of plain data that ``json.dumps(allow_nan=False)`` always writes, as
    strict JSON: dicts (keys as text), lists and tuples, sets (as lists), str, int,
    float, bool and None; ints too long for ``str()`` become ``"<int of N bits>"``
    (``int_text``), NaN and the infinities the strings ``"NaN"``, ``"Infinity"``,
    ``"-Infinity"``, other objects their escaped text (``printable``, at most 10,000
    characters; bytes cut before they are shown). Iterative: at most ``budget`` values
    and ``JSON_MAX_DEPTH`` levels (then ``"..."``); a container met again on its own
    path is ``"<cycle>"``, one shared elsewhere is copied where it is met.
    """
    out: list[Any] = [None]
    on_path: set[int] = set()  # ids of the containers being copied, outermost first
    todo: list[tuple[Any, Any, Any, int]] = [(obj, out, 0, 0)]
    while todo:
        o, into, key, depth = todo.pop()
        if o is _EXIT:
            on_path.discard(key)
            continue
        budget -= 1
        if budget < 0 or depth > JSON_MAX_DEPTH:
            into[key] = "..."
        elif o is None or o is True or o is False:
            into[key] = o
        elif isinstance(o, str):
            into[key] = str.__str__(o)
        elif isinstance(o, int) and not isinstance(o, bool):
            text = int_text(o)
            into[key] = int.__int__(o) if text[:1] != "<" else text
        elif isinstance(o, float):
            f = float.__float__(o)
            into[key] = _NON_FINITE.get(float.__repr__(f), f)
        elif isinstance(o, (dict, list, tuple, set, frozenset)):
            if id(o) in on_path:
                into[key] = "<cycle>"
                continue
            on_path.add(id(o))
            todo.append((_EXIT, None, id(o), 0))
            if isinstance(o, dict):
                d: dict[str, Any] = {}
                into[key] = d
                pairs = []
                for k, v in list(dict.items(o)):
                    name = str.__str__(k) if isinstance(k, str) else printable(k)
                    d[name] = None
                    pairs.append((v, d, name, depth + 1))
                todo.extend(reversed(pairs))  # the first values first: the budget ends last
            else:
                values = list(o)
                items: list[Any] = [None] * len(values)
                into[key] = items
                todo.extend((v, items, j, depth + 1) for j, v in reversed(list(enumerate(values))))
        elif isinstance(o, (bytes, bytearray)):
            head = bytes(o[:_JSON_TEXT_CHARS])
            into[key] = printable(head) + ("..." if len(o) > len(head) else "")
        else:
            into[key] = printable(o)[:_JSON_TEXT_CHARS]
    return out[0]
