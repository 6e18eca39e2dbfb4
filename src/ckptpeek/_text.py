"""Text that is safe to print: what a file says never reaches a terminal as control.

File contents and file names may hold ESC sequences (set the window title, clear the
screen, move the cursor and erase lines), newlines that fake a table row, bidi overrides
that reorder what is shown, and lone surrogates that a UTF-8 terminal cannot encode.
``printable`` escapes every one of them the way ``repr`` would, so what is shown is what
is there; ``--json`` output needs none of this (JSON escapes control characters itself).
"""

from __future__ import annotations

import re

__all__ = ("printable",)

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


def printable(text: object) -> str:
    """``str(text)`` with every control, bidi and unencodable character escaped (``\\x1b``)."""
    s = text if type(text) is str else str(text)
    if s.isprintable() and s.isascii():
        return s
    return _UNSAFE.sub(_escape, s)
