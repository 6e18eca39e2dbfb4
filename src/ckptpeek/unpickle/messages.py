"""Every error both pickle engines raise, worded once, and the decoders of inline text
arguments that raise them: the pure loop and the Cython loop call these, so an error's
class, code, offset and message cannot differ between them."""

from __future__ import annotations

import codecs

from ckptpeek.errors import CheckpointError
from ckptpeek.errors import error as make_error

from .opcodes import BY_CODE

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from typing import Any, Final

__all__ = ("BAD_OPERAND", "error", "opname")

# Errors that a stand-in constructor or a container operation raises on arguments of
# the wrong type; the engines turn them into FormatError at the opcode's offset. Never
# MemoryError: running out of memory says nothing about the file, so calling it corrupt
# ("bad arguments: ") would be a lie; the budgets exist so that it does not happen.
BAD_OPERAND: Final = (
    TypeError,
    ValueError,
    AttributeError,
    KeyError,
    IndexError,
    OverflowError,
    UnicodeError,
    RecursionError,
)


def opname(code: int) -> str:
    op = BY_CODE.get(code)
    return op.name if op else f"opcode 0x{code:02x}"


def error(code: str, msg: str, pos: int | None = None) -> CheckpointError:
    """The error of ``code`` (its class from the code table) at byte ``pos`` of the pickle."""
    return make_error(code, msg, offset=pos)


# -- the messages of the hot-path checks (both engines raise exactly these) -----------
def truncated(what: str, n: int, remain: int, pos: int) -> CheckpointError:
    return error("truncated", f"pickle is truncated: {what} needs {n} bytes, {remain} remain", pos)


def no_newline(what: str, pos: int) -> CheckpointError:
    return error("truncated", f"pickle is truncated: {what} has no terminating newline", pos)


# -- frames (protocol 4+). CPython's C unpickler, reading a file object (torch.load hands
# it an io.BytesIO of data.pkl), reads a whole FRAME into its buffer; an opcode that needs
# more bytes than the buffer has left (through _Unpickler_Read or a readline) drops the
# rest and reads on after the frame, and a FRAME inside a frame that does not fit in it
# loads the bytes after the outer one. From bytes or a peekable file the same stream
# reads in order. Both engines refuse (bad-frame) every opcode that runs past the end
# of its frame and every FRAME inside a frame: what they read, CPython reads from any
# input. See the README's "Security model".
_FRAME_WHY = "CPython's unpickler would not read these bytes in order"


def short(what: str, n: int, remain: int, frame_at: int, pos: int) -> CheckpointError:
    """``what`` needs ``n`` bytes, ``remain`` are left: in the data or, if ``frame_at``
    (the offset of the open FRAME, else -1) is set, in the frame."""
    if frame_at < 0:
        return truncated(what, n, remain, pos)
    return error(
        "bad-frame",
        f"{what} runs past the end of the FRAME at byte {frame_at}: it needs {n} bytes, "
        f"{remain} remain in the frame ({_FRAME_WHY})",
        pos,
    )


def no_line(what: str, frame_at: int, pos: int) -> CheckpointError:
    """A text argument without its newline: before the end of the data or of the frame."""
    if frame_at < 0:
        return no_newline(what, pos)
    return error(
        "bad-frame",
        f"{what} runs past the end of the FRAME at byte {frame_at}: no newline before the "
        f"frame ends ({_FRAME_WHY})",
        pos,
    )


def frame_nested(frame_at: int, remain: int, pos: int) -> CheckpointError:
    return error(
        "bad-frame",
        f"FRAME inside the FRAME at byte {frame_at}, {remain} bytes before its end ({_FRAME_WHY})",
        pos,
    )


def no_stop(pos: int) -> CheckpointError:
    return error("truncated", "pickle ends before its STOP opcode", pos)


def underflow(code: int, pos: int) -> CheckpointError:
    return error("stack-underflow", f"{opname(code)} needs more items than the stack holds", pos)


def mark_missing(code: int, pos: int) -> CheckpointError:
    return error("mark-missing", f"{opname(code)} without a MARK", pos)


def unknown_opcode(code: int, pos: int) -> CheckpointError:
    return error("unknown-opcode", f"unknown opcode 0x{code:02x}", pos)


def memo_missing(idx: int, pos: int) -> CheckpointError:
    return error("memo-missing", f"memo key {idx} has never been stored into", pos)


def memo_full(limit: int, pos: int) -> CheckpointError:
    return error("limit-memo", f"memo grows past {limit} entries", pos)


def marks_full(limit: int, pos: int) -> CheckpointError:
    return error("limit-marks", f"more than {limit} MARKs open at once", pos)


def bad_argument(msg: str, pos: int) -> CheckpointError:
    return error("bad-argument", msg, pos)


def bad_operand(msg: str, pos: int) -> CheckpointError:
    return error("bad-operand", msg, pos)


def wrong_target(code: int, target: Any, what: str, pos: int) -> CheckpointError:
    return bad_operand(f"{opname(code)} on a {type(target).__name__}, not a {what}", pos)


def int_text(raw: bytes, what: str, pos: int) -> int:
    try:
        return int(raw)
    except ValueError:
        raise bad_argument(f"{what} argument {raw[:40]!r} is not an int", pos) from None


def float_text(raw: bytes, pos: int) -> float:
    try:
        return float(raw)
    except ValueError:
        raise bad_argument(f"FLOAT argument {raw[:40]!r} is not a float", pos) from None


def unicode_text(raw: bytes, pos: int) -> str:
    try:
        return raw.decode("raw-unicode-escape")
    except UnicodeDecodeError as exc:
        raise bad_argument(f"UNICODE argument does not decode: {exc.reason}", pos) from None


def quoted_bytes(raw: bytes, pos: int) -> bytes:
    """The STRING opcode's argument: a quoted Python 2 string literal."""
    if not (len(raw) >= 2 and raw[0] == raw[-1] and raw[:1] in (b'"', b"'")):
        raise bad_argument("STRING argument is not quoted", pos)
    try:
        return codecs.escape_decode(raw[1:-1])[0]
    except ValueError as exc:
        raise bad_argument(f"STRING argument: {exc}", pos) from None


def decode_text(raw: bytes, what: str, pos: int) -> str:
    try:
        return raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        raise bad_argument(f"{what} is not valid UTF-8: {exc.reason}", pos) from None
