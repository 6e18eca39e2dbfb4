"""The restricted pickle interpreter, in pure Python: the reference implementation.

It runs every opcode of protocols 0-5 (the table is ``opcodes.OPCODES``) over its own
stack, mark stack and memo, and it never imports or calls what a pickle names: globals
resolve against ``registry.KNOWN_GLOBALS``; unknown ones become placeholders (or an
``UnsafePickleError`` with ``strict=True``). Every inline length is checked against the
bytes present before it is used, and every error carries the opcode's byte offset.
The Cython engine (``native/_pickle_vm_c.pyx``) mirrors this module branch for branch.
"""

from __future__ import annotations

import codecs
import struct
from collections.abc import Callable
from typing import Any, Final

from . import registry
from .errors import CheckpointError, FormatError, LimitError, UnsafePickleError, UnsupportedError
from .opcodes import BY_NAME, DEFAULT_LIMITS, HIGHEST_PROTOCOL, OPCODES, Limits
from .standins import KnownGlobal, Placeholder, PlaceholderType, apply_build

__all__ = ("run_pickle", "PickleResult", "ENGINE")

ENGINE: Final = "python"

_unpack_i4 = struct.Struct("<i").unpack_from
_unpack_u2 = struct.Struct("<H").unpack_from
_unpack_u4 = struct.Struct("<I").unpack_from
_unpack_u8 = struct.Struct("<Q").unpack_from
_unpack_f8 = struct.Struct(">d").unpack_from

# Errors that a stand-in constructor or a container operation raises on arguments of
# the wrong type; the interpreter turns them into FormatError at the opcode's offset.
_BAD_OPERAND: Final = (TypeError, ValueError, AttributeError, KeyError, IndexError,
                       OverflowError, UnicodeError, RecursionError, MemoryError)


class PickleResult:
    """What a run produced: the unpickled object and every global the pickle named."""

    __slots__ = ("value", "globals")

    def __init__(self, value: Any, globals_: dict[tuple[str, str], bool]) -> None:
        self.value = value
        self.globals = globals_  # (module, name) -> known-safe?


class _VM:
    """One run over one pickle. Handlers take the offset after the opcode byte and
    return the offset of the next opcode (or -1 at STOP)."""

    def __init__(self, data: bytes, persistent_load: Callable[[Any], Any] | None,
                 strict: bool, limits: Limits, encoding: str) -> None:
        self.data = data
        self.n = len(data)
        self.persistent_load = persistent_load
        self.strict = strict
        self.limits = limits
        self.encoding = encoding
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.globals: dict[tuple[str, str], bool] = {}
        self.op_pos = 0
        self.proto = 0
        self.result: Any = None

    # -- helpers ----------------------------------------------------------------------
    def error(self, cls: type[CheckpointError], code: str, msg: str) -> CheckpointError:
        return cls(msg, code=code, offset=self.op_pos)

    def need(self, pos: int, n: int, what: str) -> int:
        """Check that ``n`` argument bytes exist at ``pos``; return the end offset."""
        end = pos + n
        if end > self.n:
            raise self.error(FormatError, "truncated",
                             f"pickle is truncated: {what} needs {n} bytes, "
                             f"{self.n - pos} remain")
        return end

    def line(self, pos: int, what: str) -> tuple[bytes, int]:
        end = self.data.find(b"\n", pos)
        if end < 0:
            raise self.error(FormatError, "truncated",
                             f"pickle is truncated: {what} has no terminating newline")
        return self.data[pos:end], end + 1

    def pop(self) -> Any:
        if not self.stack:
            raise self.error(FormatError, "stack-underflow",
                             f"{self.opname()} pops from an empty stack")
        return self.stack.pop()

    def top(self) -> Any:
        if not self.stack:
            raise self.error(FormatError, "stack-underflow",
                             f"{self.opname()} needs an item but the stack is empty")
        return self.stack[-1]

    def pop_mark(self) -> list[Any]:
        if not self.metastack:
            raise self.error(FormatError, "mark-missing", f"{self.opname()} without a MARK")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def opname(self) -> str:
        op = _OP_BY_CODE.get(self.data[self.op_pos]) if self.op_pos < self.n else None
        return op.name if op else "opcode"

    def memo_put(self, idx: int) -> None:
        if not self.stack:
            raise self.error(FormatError, "stack-underflow", f"{self.opname()} with an empty stack")
        if idx < 0:
            raise self.error(FormatError, "bad-argument", f"negative memo index {idx}")
        if len(self.memo) >= self.limits.max_memo and idx not in self.memo:
            raise self.error(LimitError, "limit-memo",
                             f"memo grows past {self.limits.max_memo} entries")
        self.memo[idx] = self.stack[-1]

    def memo_get(self, idx: int) -> None:
        try:
            self.stack.append(self.memo[idx])
        except KeyError:
            raise self.error(FormatError, "memo-missing",
                             f"memo key {idx} has never been stored into") from None

    def decode_text(self, raw: bytes, what: str) -> str:
        try:
            return raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as exc:
            raise self.error(FormatError, "bad-argument", f"{what} is not valid UTF-8: {exc.reason}") from None

    def py2_string(self, raw: bytes) -> Any:
        """A Python 2 ``str``: text in the pickle's encoding, or bytes if it is not text."""
        if self.encoding == "bytes":
            return raw
        try:
            return raw.decode(self.encoding)
        except UnicodeDecodeError:
            return raw

    def check_hashable(self, key: Any) -> None:
        """Refuse keys whose hashing would recurse deeper than the limit (deep tuples)."""
        if type(key) not in (tuple, frozenset):
            return
        todo = [(key, 1)]
        while todo:
            obj, depth = todo.pop()
            if depth > self.limits.max_depth:
                raise self.error(LimitError, "limit-depth",
                                 f"a key nests deeper than {self.limits.max_depth}")
            todo.extend((o, depth + 1) for o in obj if type(o) in (tuple, frozenset))

    def find_global(self, module: str, name: str) -> Any:
        value = registry.resolve(module, name)
        self.globals[registry.normalise(module, name)] = value is not None
        if value is not None:
            return value
        if self.strict:
            raise self.error(UnsafePickleError, "forbidden-global",
                             f"global {module}.{name} is not known to be safe; open with "
                             f"strict=False to get a Placeholder for it instead")
        return PlaceholderType(module, name)

    def instantiate(self, cls: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None,
                    how: str) -> Any:
        """REDUCE / NEWOBJ / INST / OBJ on a resolved global."""
        if type(cls) is KnownGlobal:
            fn = cls.new if kwargs is not None else cls.call
            if fn is None:
                raise self.error(UnsafePickleError, "forbidden-reduce",
                                 f"{how} of {cls.qualname} is not allowed")
            try:
                return fn(args, kwargs) if kwargs is not None else fn(args)  # type: ignore[call-arg]
            except CheckpointError as exc:
                if exc.offset is None:
                    exc.offset = self.op_pos
                raise
            except _BAD_OPERAND as exc:
                raise self.error(FormatError, "bad-call",
                                 f"{how} of {cls.qualname} with bad arguments: {exc}") from None
        if type(cls) is PlaceholderType:
            return Placeholder(cls.module, cls.name, args, kwargs)
        raise self.error(FormatError, "bad-operand",
                         f"{how} needs a class or function, got {type(cls).__name__}")

    # -- the loop -----------------------------------------------------------------------
    def run(self) -> Any:
        data = self.data
        table = _TABLE
        pos = 0
        n = self.n
        try:
            while pos < n:
                self.op_pos = pos
                handler = table[data[pos]]
                if handler is None:
                    raise self.error(FormatError, "unknown-opcode",
                                     f"unknown opcode 0x{data[pos]:02x}")
                pos = handler(self, pos + 1)
                if pos < 0:
                    return self.result
        except CheckpointError:
            raise
        except _BAD_OPERAND as exc:
            raise self.error(FormatError, "bad-operand",
                             f"{self.opname()} cannot be applied here: {exc}") from None
        self.op_pos = n
        raise self.error(FormatError, "truncated", "pickle ends before its STOP opcode")

    # -- opcodes (named as in pickle.py; the table below is built from these names) -----
    def op_PROTO(self, pos: int) -> int:
        end = self.need(pos, 1, "PROTO")
        proto = self.data[pos]
        if proto > HIGHEST_PROTOCOL:
            raise self.error(UnsupportedError, "protocol-too-new",
                             f"pickle protocol {proto} is newer than {HIGHEST_PROTOCOL}")
        self.proto = proto
        return end

    def op_FRAME(self, pos: int) -> int:
        end = self.need(pos, 8, "FRAME")
        (size,) = _unpack_u8(self.data, pos)
        self.need(end, size, "FRAME contents")
        return end

    def op_STOP(self, pos: int) -> int:
        self.result = self.pop()
        return -1

    def op_MARK(self, pos: int) -> int:
        self.metastack.append(self.stack)
        self.stack = []
        return pos

    def op_POP(self, pos: int) -> int:
        if self.stack:
            self.stack.pop()
        else:
            self.pop_mark()
        return pos

    def op_POP_MARK(self, pos: int) -> int:
        self.pop_mark()
        return pos

    def op_DUP(self, pos: int) -> int:
        self.stack.append(self.top())
        return pos

    # ints and floats
    def op_NONE(self, pos: int) -> int:
        self.stack.append(None)
        return pos

    def op_NEWTRUE(self, pos: int) -> int:
        self.stack.append(True)
        return pos

    def op_NEWFALSE(self, pos: int) -> int:
        self.stack.append(False)
        return pos

    def op_BININT(self, pos: int) -> int:
        end = self.need(pos, 4, "BININT")
        self.stack.append(_unpack_i4(self.data, pos)[0])
        return end

    def op_BININT1(self, pos: int) -> int:
        self.need(pos, 1, "BININT1")
        self.stack.append(self.data[pos])
        return pos + 1

    def op_BININT2(self, pos: int) -> int:
        end = self.need(pos, 2, "BININT2")
        self.stack.append(_unpack_u2(self.data, pos)[0])
        return end

    def _int_text(self, raw: bytes, what: str) -> int:
        try:
            return int(raw)
        except ValueError:
            raise self.error(FormatError, "bad-argument", f"{what} argument {raw[:40]!r} is not an int") from None

    def op_INT(self, pos: int) -> int:
        raw, end = self.line(pos, "INT")
        if raw == b"00":
            self.stack.append(False)
        elif raw == b"01":
            self.stack.append(True)
        else:
            self.stack.append(self._int_text(raw, "INT"))
        return end

    def op_LONG(self, pos: int) -> int:
        raw, end = self.line(pos, "LONG")
        self.stack.append(self._int_text(raw[:-1] if raw.endswith(b"L") else raw, "LONG"))
        return end

    def _long(self, pos: int, n: int) -> int:
        end = self.need(pos, n, "LONG data")
        self.stack.append(int.from_bytes(self.data[pos:end], "little", signed=True))
        return end

    def op_LONG1(self, pos: int) -> int:
        self.need(pos, 1, "LONG1")
        return self._long(pos + 1, self.data[pos])

    def op_LONG4(self, pos: int) -> int:
        self.need(pos, 4, "LONG4")
        (n,) = _unpack_i4(self.data, pos)
        if n < 0:
            raise self.error(FormatError, "bad-argument", "LONG4 with a negative length")
        return self._long(pos + 4, n)

    def op_FLOAT(self, pos: int) -> int:
        raw, end = self.line(pos, "FLOAT")
        try:
            self.stack.append(float(raw))
        except ValueError:
            raise self.error(FormatError, "bad-argument", f"FLOAT argument {raw[:40]!r} is not a float") from None
        return end

    def op_BINFLOAT(self, pos: int) -> int:
        end = self.need(pos, 8, "BINFLOAT")
        self.stack.append(_unpack_f8(self.data, pos)[0])
        return end

    # strings and bytes
    def _sized(self, pos: int, width: int, what: str) -> tuple[bytes, int]:
        start = self.need(pos, width, what)
        if width == 1:
            n = self.data[pos]
        elif width == 4:
            (n,) = _unpack_u4(self.data, pos)
        else:
            (n,) = _unpack_u8(self.data, pos)
        end = self.need(start, n, what)
        return self.data[start:end], end

    def op_SHORT_BINUNICODE(self, pos: int) -> int:
        raw, end = self._sized(pos, 1, "SHORT_BINUNICODE")
        self.stack.append(self.decode_text(raw, "SHORT_BINUNICODE"))
        return end

    def op_BINUNICODE(self, pos: int) -> int:
        raw, end = self._sized(pos, 4, "BINUNICODE")
        self.stack.append(self.decode_text(raw, "BINUNICODE"))
        return end

    def op_BINUNICODE8(self, pos: int) -> int:
        raw, end = self._sized(pos, 8, "BINUNICODE8")
        self.stack.append(self.decode_text(raw, "BINUNICODE8"))
        return end

    def op_UNICODE(self, pos: int) -> int:
        raw, end = self.line(pos, "UNICODE")
        try:
            self.stack.append(raw.decode("raw-unicode-escape"))
        except UnicodeDecodeError as exc:
            raise self.error(FormatError, "bad-argument", f"UNICODE argument does not decode: {exc.reason}") from None
        return end

    def op_SHORT_BINBYTES(self, pos: int) -> int:
        raw, end = self._sized(pos, 1, "SHORT_BINBYTES")
        self.stack.append(raw)
        return end

    def op_BINBYTES(self, pos: int) -> int:
        raw, end = self._sized(pos, 4, "BINBYTES")
        self.stack.append(raw)
        return end

    def op_BINBYTES8(self, pos: int) -> int:
        raw, end = self._sized(pos, 8, "BINBYTES8")
        self.stack.append(raw)
        return end

    def op_BYTEARRAY8(self, pos: int) -> int:
        raw, end = self._sized(pos, 8, "BYTEARRAY8")
        self.stack.append(bytearray(raw))
        return end

    def op_SHORT_BINSTRING(self, pos: int) -> int:
        raw, end = self._sized(pos, 1, "SHORT_BINSTRING")
        self.stack.append(self.py2_string(raw))
        return end

    def op_BINSTRING(self, pos: int) -> int:
        self.need(pos, 4, "BINSTRING")
        if _unpack_i4(self.data, pos)[0] < 0:
            raise self.error(FormatError, "bad-argument", "BINSTRING with a negative length")
        raw, end = self._sized(pos, 4, "BINSTRING")
        self.stack.append(self.py2_string(raw))
        return end

    def op_STRING(self, pos: int) -> int:
        raw, end = self.line(pos, "STRING")
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[:1] in (b'"', b"'"):
            raw = raw[1:-1]
        else:
            raise self.error(FormatError, "bad-argument", "STRING argument is not quoted")
        try:
            value = codecs.escape_decode(raw)[0]
        except ValueError as exc:
            raise self.error(FormatError, "bad-argument", f"STRING argument: {exc}") from None
        self.stack.append(self.py2_string(value))
        return end

    def op_NEXT_BUFFER(self, pos: int) -> int:
        raise self.error(UnsupportedError, "unsupported-opcode",
                         "NEXT_BUFFER needs out-of-band buffers, which checkpoints never carry")

    def op_READONLY_BUFFER(self, pos: int) -> int:
        self.top()
        return pos

    # containers
    def op_EMPTY_LIST(self, pos: int) -> int:
        self.stack.append([])
        return pos

    def op_EMPTY_TUPLE(self, pos: int) -> int:
        self.stack.append(())
        return pos

    def op_EMPTY_DICT(self, pos: int) -> int:
        self.stack.append({})
        return pos

    def op_EMPTY_SET(self, pos: int) -> int:
        self.stack.append(set())
        return pos

    # NB: pop_mark() replaces self.stack, so it must run before self.stack is looked up.
    def op_LIST(self, pos: int) -> int:
        items = self.pop_mark()
        self.stack.append(items)
        return pos

    def op_TUPLE(self, pos: int) -> int:
        items = tuple(self.pop_mark())
        self.stack.append(items)
        return pos

    def op_TUPLE1(self, pos: int) -> int:
        self.stack.append((self.pop(),))
        return pos

    def op_TUPLE2(self, pos: int) -> int:
        b = self.pop()
        self.stack.append((self.pop(), b))
        return pos

    def op_TUPLE3(self, pos: int) -> int:
        c = self.pop()
        b = self.pop()
        self.stack.append((self.pop(), b, c))
        return pos

    def op_FROZENSET(self, pos: int) -> int:
        items = self.pop_mark()
        for item in items:
            self.check_hashable(item)
        self.stack.append(frozenset(items))
        return pos

    def op_DICT(self, pos: int) -> int:
        items = self.pop_mark()
        if len(items) % 2:
            raise self.error(FormatError, "bad-operand", "DICT with an odd number of items")
        d = {}
        for i in range(0, len(items), 2):
            self.check_hashable(items[i])
            d[items[i]] = items[i + 1]
        self.stack.append(d)
        return pos

    def _target(self, kinds: tuple[type, ...], what: str) -> Any:
        target = self.top()
        if not isinstance(target, kinds):
            raise self.error(FormatError, "bad-operand",
                             f"{self.opname()} on a {type(target).__name__}, not a {what}")
        return target

    def op_APPEND(self, pos: int) -> int:
        value = self.pop()
        self._target((list, Placeholder), "list").append(value)
        return pos

    def op_APPENDS(self, pos: int) -> int:
        items = self.pop_mark()
        self._target((list, Placeholder), "list").extend(items)
        return pos

    def op_SETITEM(self, pos: int) -> int:
        value = self.pop()
        key = self.pop()
        self.check_hashable(key)
        self._target((dict, Placeholder), "dict")[key] = value
        return pos

    def op_SETITEMS(self, pos: int) -> int:
        items = self.pop_mark()
        if len(items) % 2:
            raise self.error(FormatError, "bad-operand", "SETITEMS with an odd number of items")
        target = self._target((dict, Placeholder), "dict")
        for i in range(0, len(items), 2):
            self.check_hashable(items[i])
            target[items[i]] = items[i + 1]
        return pos

    def op_ADDITEMS(self, pos: int) -> int:
        items = self.pop_mark()
        target = self._target((set, Placeholder), "set")
        for item in items:
            self.check_hashable(item)
            if isinstance(target, set):
                target.add(item)
            else:
                target.append(item)
        return pos

    # memo
    def op_BINPUT(self, pos: int) -> int:
        self.need(pos, 1, "BINPUT")
        self.memo_put(self.data[pos])
        return pos + 1

    def op_LONG_BINPUT(self, pos: int) -> int:
        end = self.need(pos, 4, "LONG_BINPUT")
        self.memo_put(_unpack_u4(self.data, pos)[0])
        return end

    def op_PUT(self, pos: int) -> int:
        raw, end = self.line(pos, "PUT")
        self.memo_put(self._int_text(raw, "PUT"))
        return end

    def op_MEMOIZE(self, pos: int) -> int:
        self.memo_put(len(self.memo))
        return pos

    def op_BINGET(self, pos: int) -> int:
        self.need(pos, 1, "BINGET")
        self.memo_get(self.data[pos])
        return pos + 1

    def op_LONG_BINGET(self, pos: int) -> int:
        end = self.need(pos, 4, "LONG_BINGET")
        self.memo_get(_unpack_u4(self.data, pos)[0])
        return end

    def op_GET(self, pos: int) -> int:
        raw, end = self.line(pos, "GET")
        self.memo_get(self._int_text(raw, "GET"))
        return end

    # extension registry: torch never writes these; they stay opaque
    def _ext(self, code: int) -> None:
        self.stack.append(self.find_global("copyreg.extension", str(code)))

    def op_EXT1(self, pos: int) -> int:
        self.need(pos, 1, "EXT1")
        self._ext(self.data[pos])
        return pos + 1

    def op_EXT2(self, pos: int) -> int:
        end = self.need(pos, 2, "EXT2")
        self._ext(_unpack_u2(self.data, pos)[0])
        return end

    def op_EXT4(self, pos: int) -> int:
        end = self.need(pos, 4, "EXT4")
        self._ext(_unpack_i4(self.data, pos)[0])
        return end

    # objects
    def op_GLOBAL(self, pos: int) -> int:
        module, pos = self.line(pos, "GLOBAL module")
        name, end = self.line(pos, "GLOBAL name")
        self.stack.append(self.find_global(self.decode_text(module, "GLOBAL"),
                                           self.decode_text(name, "GLOBAL")))
        return end

    def op_STACK_GLOBAL(self, pos: int) -> int:
        name = self.pop()
        module = self.pop()
        if type(module) is not str or type(name) is not str:
            raise self.error(FormatError, "bad-operand", "STACK_GLOBAL needs two strings")
        self.stack.append(self.find_global(module, name))
        return pos

    def op_REDUCE(self, pos: int) -> int:
        args = self.pop()
        func = self.pop()
        if type(args) is not tuple:
            raise self.error(FormatError, "bad-operand", "REDUCE arguments must be a tuple")
        self.stack.append(self.instantiate(func, args, None, "REDUCE"))
        return pos

    def op_NEWOBJ(self, pos: int) -> int:
        args = self.pop()
        cls = self.pop()
        if type(args) is not tuple:
            raise self.error(FormatError, "bad-operand", "NEWOBJ arguments must be a tuple")
        self.stack.append(self.instantiate(cls, args, {}, "NEWOBJ"))
        return pos

    def op_NEWOBJ_EX(self, pos: int) -> int:
        kwargs = self.pop()
        args = self.pop()
        cls = self.pop()
        if type(args) is not tuple or type(kwargs) is not dict:
            raise self.error(FormatError, "bad-operand", "NEWOBJ_EX needs a tuple and a dict")
        self.stack.append(self.instantiate(cls, args, kwargs, "NEWOBJ_EX"))
        return pos

    def op_INST(self, pos: int) -> int:
        module, pos = self.line(pos, "INST module")
        name, end = self.line(pos, "INST name")
        cls = self.find_global(self.decode_text(module, "INST"), self.decode_text(name, "INST"))
        args = tuple(self.pop_mark())
        self.stack.append(self.instantiate(cls, args, None, "INST"))
        return end

    def op_OBJ(self, pos: int) -> int:
        items = self.pop_mark()
        if not items:
            raise self.error(FormatError, "stack-underflow", "OBJ without a class")
        self.stack.append(self.instantiate(items[0], tuple(items[1:]), None, "OBJ"))
        return pos

    def op_BUILD(self, pos: int) -> int:
        state = self.pop()
        obj = self.top()
        try:
            apply_build(obj, state)
        except _BAD_OPERAND as exc:
            raise self.error(FormatError, "bad-build", f"BUILD refused: {exc}") from None
        return pos

    def _persistent(self, pid: Any) -> None:
        if self.persistent_load is None:
            raise self.error(FormatError, "bad-persistent-id",
                             "persistent id in a pickle that has no storages")
        try:
            self.stack.append(self.persistent_load(pid))
        except CheckpointError as exc:
            if exc.offset is None:
                exc.offset = self.op_pos
            raise
        except _BAD_OPERAND as exc:
            raise self.error(FormatError, "bad-persistent-id", f"bad persistent id: {exc}") from None

    def op_PERSID(self, pos: int) -> int:
        raw, end = self.line(pos, "PERSID")
        self._persistent(raw.decode("ascii", "replace"))
        return end

    def op_BINPERSID(self, pos: int) -> int:
        self._persistent(self.pop())
        return pos


_OP_BY_CODE: Final = {op.code: op for op in OPCODES}
_TABLE: Final[tuple[Callable[[_VM, int], int] | None, ...]] = tuple(
    getattr(_VM, f"op_{_OP_BY_CODE[code].name}") if code in _OP_BY_CODE else None
    for code in range(256))
#: opcode names the pure engine implements (a test checks this equals the table)
SUPPORTED: Final = frozenset(name for name in BY_NAME if hasattr(_VM, f"op_{name}"))


def run_pickle(data: bytes, *, persistent_load: Callable[[Any], Any] | None = None,
               strict: bool = False, limits: Limits = DEFAULT_LIMITS,
               encoding: str = "utf-8") -> PickleResult:
    """Interpret one pickle and return what it builds, without executing anything.

    Args:
        data: the pickle's bytes.
        persistent_load: called with each persistent id (torch storages).
        strict: raise ``UnsafePickleError`` on a global outside the registry instead of
            building a ``Placeholder``.
        limits: resource guards.
        encoding: how Python 2 ``str`` values are decoded (``"bytes"`` keeps them bytes).

    Raises:
        FormatError, LimitError, UnsupportedError, UnsafePickleError with ``offset`` set
        to the opcode's position in ``data``.
    """
    if len(data) > limits.max_pickle_bytes:
        raise LimitError(f"pickle of {len(data)} bytes is over the limit of "
                         f"{limits.max_pickle_bytes}", code="limit-pickle-size")
    vm = _VM(bytes(data), persistent_load, strict, limits, encoding)
    value = vm.run()
    return PickleResult(value, vm.globals)
