"""Decode a pickle's opcodes without building anything: which globals it would import.

For bytes that are not meant to be a pickle but that torch.load would unpickle anyway
(the start of a file ckptpeek reads as another format), and for the anomaly pass of
``ckptpeek scan``. ``pickletools.genops`` decodes each opcode's argument; nothing runs.
"""

from __future__ import annotations

import pickletools

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from typing import Any

__all__ = ("named_globals",)

_STRINGS = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
     "BINSTRING", "STRING"}
)  # fmt: skip
_DECODE_ERRORS = (ValueError, KeyError, IndexError, TypeError, OverflowError, UnicodeError)


def named_globals(data: bytes, limit: int = 1 << 20) -> list[tuple[str, str]]:
    """The (module, name) pairs the first pickle in ``data`` names before CPython's
    unpickler would stop (at ``STOP`` or at the first byte that does not decode), in
    order. ``STACK_GLOBAL`` takes the last two strings pushed (its usual operands; a
    memo-built name is reported as ``"?"``). At most ``limit`` opcodes are decoded."""
    found: list[tuple[str, str]] = []
    strings: list[Any] = []
    try:
        for count, (op, arg, _pos) in enumerate(pickletools.genops(data)):
            if count >= limit:
                break
            name = op.name
            if name in ("GLOBAL", "INST") and isinstance(arg, str):
                module, _, gname = arg.partition(" ")
                found.append((module, gname))
            elif name == "STACK_GLOBAL":
                if len(strings) >= 2 and all(isinstance(s, str) for s in strings[-2:]):
                    found.append((strings[-2], strings[-1]))
                else:
                    found.append(("?", "?"))
            elif name in _STRINGS:
                strings.append(arg)
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                strings.append(None)  # a memo reference: the value is not tracked
            elif name in ("EXT1", "EXT2", "EXT4"):
                found.append(("copyreg.extension", str(arg)))
            elif name == "STOP":
                break
    except _DECODE_ERRORS:
        pass
    return found
