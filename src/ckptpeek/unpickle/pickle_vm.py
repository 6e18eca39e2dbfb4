"""The restricted pickle interpreter, in pure Python: the reference engine.

It runs every opcode of protocols 0-5 (the table is ``opcodes.OPCODES``) over its own
stack, mark stack and memo, and it never imports or calls what a pickle names: globals
resolve against ``registry.KNOWN_GLOBALS``; unknown ones become placeholders (or an
``UnsafePickleError`` with ``strict=True``). Every inline length is checked against the
bytes present before it is used, and every error carries the opcode's byte offset.
Inside a protocol-4 FRAME the frame's end is the end of what may be read: an opcode
that runs past it and a FRAME inside a frame are refused (``bad-frame``), because
CPython's unpickler may read such a stream differently (see ``messages.short``).
Object-level semantics and messages are shared with the Cython engine
(``native/unpickle/_pickle_vm_c.pyx``) through ``context.py``, ``messages.py`` and
``select.py``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping

from ckptpeek.errors import CheckpointError
from ckptpeek.limits import DEFAULT_LIMITS, Limits

from . import context as C
from . import messages as S
from . import select as SEL
from .context import PickleResult
from .opcodes import BY_CODE, BY_NAME, HIGHEST_PROTOCOL, group
from .standins import Placeholder

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from typing import Any, Final

__all__ = ("run_pickle", "PickleResult", "ENGINE", "SUPPORTED")

ENGINE: Final = "python"

_unpack_i4 = struct.Struct("<i").unpack_from
_unpack_u2 = struct.Struct("<H").unpack_from
_unpack_u4 = struct.Struct("<I").unpack_from
_unpack_u8 = struct.Struct("<Q").unpack_from
_unpack_f8 = struct.Struct(">d").unpack_from

#: what a handler returns at STOP; a FRAME handler returns ``_FRAMED - pos`` (the loop
#: then picks up the frame's end), every other handler the offset of the next opcode
_STOPPED: Final = -1
_FRAMED: Final = -2


class _VM:
    """One run over one pickle. Handlers take the offset after the opcode byte and
    return the offset of the next opcode (or -1 at STOP)."""

    def __init__(self, data: bytes, ctx: C.Context, select: frozenset[Any] | None = None) -> None:
        self.data = data
        self.select = select
        self.n = len(data)
        self.lim = self.n  # the end of what may be read: the open frame's end, else n
        self.frame_at = -1  # the offset of the open FRAME opcode, -1 outside frames
        self.ctx = ctx
        self.max_memo = ctx.limits.max_memo
        self.max_marks = ctx.limits.max_marks
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.op_pos = 0
        self.result: Any = None
        self.tracker = SEL.Tracker(ctx.limits)  # selective runs only

    # -- helpers ----------------------------------------------------------------------
    def code(self) -> int:
        return self.data[self.op_pos]

    def need(self, pos: int, n: int, what: str) -> int:
        """Check that ``n`` argument bytes exist at ``pos`` (in the open frame, if any);
        return the end offset."""
        end = pos + n
        if end > self.lim:
            raise S.short(what, n, self.lim - pos, self.frame_at, self.op_pos)
        return end

    def line(self, pos: int, what: str) -> tuple[bytes, int]:
        end = self.data.find(b"\n", pos, self.lim)
        if end < 0:
            raise S.no_line(what, self.frame_at, self.op_pos)
        return self.data[pos:end], end + 1

    def end_frame(self) -> int:
        """The open frame is read to its end: the rest of the data may be read again."""
        self.frame_at = -1
        self.lim = self.n
        return self.n

    def pop(self) -> Any:
        if not self.stack:
            raise S.underflow(self.code(), self.op_pos)
        return self.stack.pop()

    def top(self) -> Any:
        if not self.stack:
            raise S.underflow(self.code(), self.op_pos)
        return self.stack[-1]

    def pop_mark(self) -> list[Any]:
        if not self.metastack:
            raise S.mark_missing(self.code(), self.op_pos)
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def memo_put(self, idx: int) -> None:
        if not self.stack:
            raise S.underflow(self.code(), self.op_pos)
        if idx < 0:
            raise S.bad_argument(f"negative memo index {idx}", self.op_pos)
        if len(self.memo) >= self.max_memo and idx not in self.memo:
            raise S.memo_full(self.max_memo, self.op_pos)
        self.memo[idx] = self.stack[-1]

    def memo_get(self, idx: int) -> None:
        try:
            self.stack.append(self.memo[idx])
        except KeyError:
            raise S.memo_missing(idx, self.op_pos) from None

    def target(self, kinds: tuple[type, ...], what: str) -> Any:
        target = self.top()
        if not isinstance(target, kinds):
            raise S.wrong_target(self.code(), target, what, self.op_pos)
        return target

    # -- the loop -----------------------------------------------------------------------
    def run(self) -> Any:
        data = self.data
        table = _TABLE
        pos = 0
        lim = self.n
        try:
            while True:
                if pos >= lim:
                    if self.frame_at < 0:
                        break
                    lim = self.end_frame()
                    continue
                self.op_pos = pos
                handler = table[data[pos]]
                if handler is None:
                    raise S.unknown_opcode(data[pos], pos)
                pos = handler(self, pos + 1)
                if pos < 0:
                    if pos == _STOPPED:
                        return self.result
                    pos = _FRAMED - pos
                    lim = self.lim
        except CheckpointError:
            raise
        except S.BAD_OPERAND as exc:
            raise S.bad_operand(
                f"{S.opname(self.code())} cannot be applied here: {exc}", self.op_pos
            ) from None
        raise S.no_stop(self.n)

    def run_selective(self) -> Any:
        """The loop of a selective run: values of unselected top-level keys are skipped.

        The root dict's items are pushed after its MARK: key, value, key, value. While
        the value of a key outside ``select`` is being built, everything nested in it
        (mark depth >= 2) is skipped: containers, calls and persistent ids become
        SKIPPED; text, numbers, globals, tuples of them and storages are still built,
        because later values may fetch them from the memo. Once anything was skipped,
        the operations that consume values (``SEL.GUARDED``) are guarded by the run's
        ``SEL.Tracker``, so no SKIPPED value changes a real one unseen; ``run_pickle``
        re-runs in full if a selected value reaches SKIPPED or a tainted object, so the
        result is always exact. The key tracking below only decides how much is
        skipped. Mirrors ``_CVM.run``.
        """
        data = self.data
        table = _TABLE
        skip_table = _SKIP_TABLE
        guard_table = _GUARD_TABLE
        select = self.select
        tracker = self.tracker
        watching = False  # set at the first skip: before it, nothing can be SKIPPED
        pos = 0
        lim = self.n
        base: list[Any] | None = None  # the stack that holds the root dict
        skipping = False
        fills: dict[int, int] = {}  # id(root-level container) -> items in its last fill
        try:
            while True:
                if pos >= lim:
                    if self.frame_at < 0:
                        break
                    lim = self.end_frame()
                    continue
                self.op_pos = pos
                code = data[pos]
                handler = table[code]
                if handler is None:
                    raise S.unknown_opcode(code, pos)
                depth = len(self.metastack)
                filled = -1
                if depth <= 2 and base is not None and code in _FILL_OPS:
                    filled = self._fill_size(code, base)
                if skipping and depth >= 2 and (skip := skip_table[code]) is not None:
                    handler = skip
                    watching = True
                elif watching and (guard := guard_table[code]) is not None:
                    handler = guard
                pos = handler(self, pos + 1)
                if pos < 0:
                    if pos == _STOPPED:
                        return tracker.outcome(self.result)
                    pos = _FRAMED - pos
                    lim = self.lim
                if len(self.metastack) > 1:
                    continue
                if base is None:
                    if code == _EMPTY_DICT and len(self.stack) == 1 and not self.metastack:
                        base = self.stack
                elif not self.metastack:
                    skipping = False
                elif self.metastack[0] is base:
                    stack = self.stack
                    if filled >= 0 and stack:
                        fills[id(stack[-1])] = filled
                    elif len(stack) & 1 and code in _TEXT_OPS and type(stack[-1]) is str:
                        # a text at an odd count is the next key, unless the item below
                        # is a container that may still get a one-item SETITEM/APPEND
                        # (then it is that container's key, and nothing changes)
                        if len(stack) == 1 or not SEL.maybe_open(stack[-2], fills):
                            skipping = stack[-1] not in select  # type: ignore[operator]
        except CheckpointError:
            raise
        except S.BAD_OPERAND as exc:
            raise S.bad_operand(
                f"{S.opname(self.code())} cannot be applied here: {exc}", self.op_pos
            ) from None
        raise S.no_stop(self.n)

    def _fill_size(self, code: int, base: list[Any]) -> int:
        """Items the fill op about to run adds to a root-level container (else -1)."""
        depth = len(self.metastack)
        if code in _SINGLE_FILLS:
            return 1 if depth == 1 and self.metastack[0] is base else -1
        if depth == 2 and self.metastack[0] is base:
            return len(self.stack) // 2 if code == _SETITEMS else len(self.stack)
        return -1

    # skipped variants: same operands consumed, SKIPPED pushed, nothing built or called.
    # A real object a skipped one swallows is tainted: in a full run it becomes part of
    # that object, which later operations (a BUILD resolving ``${...}``) may change.
    def _swallow(self, items: list[Any] | tuple[Any, ...]) -> None:
        if _INERT.issuperset(map(type, items)):
            return
        for item in items:
            t = type(item)
            if t in _INERT or t is tuple and _ATOMS.issuperset(map(type, item)):
                continue  # nothing a full run could change
            self.tracker.taint(*items)
            return

    def skip_push(self, pos: int) -> int:
        self.stack.append(SEL.SKIPPED)
        return pos

    def skip_mark(self, pos: int) -> int:
        self._swallow(self.pop_mark())
        self.stack.append(SEL.SKIPPED)
        return pos

    def _skipped_call(self, operands: list[Any] | tuple[Any, ...]) -> None:
        # swallowed, and a full run would call a constructor on them
        self._swallow(operands)
        self.stack.append(SEL.SKIPPED)

    def skip_call2(self, pos: int) -> int:
        args = self.pop()
        func = self.pop()
        if type(func) in _ATOMS and (args is SEL.SKIPPED or type(args) is tuple and not args):
            self.stack.append(SEL.SKIPPED)  # the usual cases, in short
        else:
            self._skipped_call((func, args))
        return pos

    def skip_call3(self, pos: int) -> int:
        kwargs = self.pop()
        args = self.pop()
        self._skipped_call((self.pop(), args, kwargs))
        return pos

    def skip_OBJ(self, pos: int) -> int:
        self._skipped_call(self.pop_mark())
        return pos

    def skip_inst(self, pos: int) -> int:
        module, pos = self.line(pos, "INST")
        name, end = self.line(pos, "INST")
        self.ctx.find_global(
            S.decode_text(module, "INST", self.op_pos),
            S.decode_text(name, "INST", self.op_pos),
            self.op_pos,
        )
        self._skipped_call(self.pop_mark())
        return end

    # tuples of plain values (a storage's id, a shape) are built, others are SKIPPED
    def skip_EMPTY_TUPLE(self, pos: int) -> int:
        self.stack.append(())
        return pos

    def skip_TUPLE(self, pos: int) -> int:
        items = self.pop_mark()
        if _ATOMS.issuperset(map(type, items)):
            self.stack.append(tuple(items))
            return pos
        plain = SEL.plain
        for item in items:
            if type(item) not in _ATOMS and (item is SEL.SKIPPED or not plain(item)):
                self._swallow(items)
                self.stack.append(SEL.SKIPPED)
                return pos
        self.stack.append(tuple(items))
        return pos

    def skip_TUPLE1(self, pos: int) -> int:
        a = self.pop()
        if type(a) in _ATOMS:
            self.stack.append((a,))
        else:
            self._tuple_of((a,))
        return pos

    def _tuple_of(self, items: tuple[Any, ...]) -> None:
        plain = SEL.plain
        for item in items:
            if type(item) not in _ATOMS and (item is SEL.SKIPPED or not plain(item)):
                self._swallow(items)
                self.stack.append(SEL.SKIPPED)
                return
        self.stack.append(items)

    def skip_TUPLE2(self, pos: int) -> int:
        b = self.pop()
        a = self.pop()
        if type(a) in _ATOMS and type(b) in _ATOMS:  # a shape, in short
            self.stack.append((a, b))
        else:
            self._tuple_of((a, b))
        return pos

    def skip_TUPLE3(self, pos: int) -> int:
        c = self.pop()
        b = self.pop()
        a = self.pop()
        self._tuple_of((a, b, c))
        return pos

    # persistent ids: a skipped one is kept for later (SEL.Tracker.pending)
    def skip_persid(self, pos: int) -> int:
        raw, end = self.line(pos, "PERSID")
        self.tracker.skipped_id(raw.decode("ascii", "replace"))
        self.stack.append(SEL.SKIPPED)
        return end

    def skip_BINPERSID(self, pos: int) -> int:
        self.tracker.skipped_id(self.pop())
        self.stack.append(SEL.SKIPPED)
        return pos

    def skip_build(self, pos: int) -> int:
        return self.guard_BUILD(pos)

    # guarded variants (once anything was skipped): the operation runs unless an operand
    # reaches SKIPPED or a tainted object (see SEL.Tracker)
    def guard_REDUCE(self, pos: int) -> int:
        st = self.stack
        if (
            len(st) >= 2
            and type(st[-1]) in _ARGS
            and not (
                type(st[-2]) in _ATOMS
                and type(st[-1]) is tuple
                and _ATOMS.issuperset(map(type, st[-1]))
            )
            and self.tracker.reaches(st[-2], st[-1])
        ):
            return self.skip_call2(pos)
        return self.op_REDUCE(pos) if self.code() == _REDUCE else self.op_NEWOBJ(pos)

    def guard_NEWOBJ_EX(self, pos: int) -> int:
        st = self.stack
        if (
            len(st) >= 3
            and type(st[-2]) in _ARGS
            and type(st[-1]) in _KWARGS
            and self.tracker.reaches(st[-3], st[-2], st[-1])
        ):
            return self.skip_call3(pos)
        return self.op_NEWOBJ_EX(pos)

    def guard_OBJ(self, pos: int) -> int:
        if self.metastack and self.tracker.reaches(*self.stack):
            return self.skip_OBJ(pos)
        return self.op_OBJ(pos)

    def guard_INST(self, pos: int) -> int:
        if self.metastack and self.tracker.reaches(*self.stack):
            return self.skip_inst(pos)
        return self.op_INST(pos)

    def guard_BUILD(self, pos: int) -> int:
        st = self.stack
        if len(st) >= 2:
            target, state = st[-2], st[-1]
            if target is SEL.SKIPPED or self.tracker.reaches(target, state):
                # not built: what the BUILD could change is not what a full run has
                self.tracker.taint(target, state)
                st.pop()
                return pos
        return self.op_BUILD(pos)

    def guard_BINPERSID(self, pos: int) -> int:
        st = self.stack
        tracker = self.tracker
        if st and (
            (
                not tracker.flush(self.ctx.persistent, self.op_pos)
                if tracker.pending
                else tracker.blind
            )
            or not (type(st[-1]) is tuple and _ATOMS.issuperset(map(type, st[-1])))
            and tracker.reaches(st[-1])
        ):
            tracker.blind = True
            st[-1] = SEL.SKIPPED
            return pos
        return self.op_BINPERSID(pos)

    def guard_PERSID(self, pos: int) -> int:
        if not self.tracker.flush(self.ctx.persistent, self.op_pos):
            _raw, end = self.line(pos, "PERSID")
            self.stack.append(SEL.SKIPPED)
            return end
        return self.op_PERSID(pos)

    def _skip_into(self, npop: int, full: Callable[[_VM, int], int], pos: int) -> int:
        """Fill a container: a skipped one swallows its items, a real one is filled.

        ``npop`` items sit above the container (APPEND 1, SETITEM 2); 0 means the items
        are above a MARK and the container is on the stack below it.
        """
        if npop:
            below, at = self.stack, -(npop + 1)
        else:
            if not self.metastack:
                raise S.mark_missing(self.code(), self.op_pos)
            below, at = self.metastack[-1], -1
        if len(below) >= -at and below[at] is SEL.SKIPPED:
            if npop:
                self._swallow(self.stack[at + 1 :])
                del self.stack[at + 1 :]
            else:
                self._swallow(self.pop_mark())
            return pos
        return full(self, pos)

    def skip_APPEND(self, pos: int) -> int:
        return self._skip_into(1, _VM.op_APPEND, pos)

    def skip_SETITEM(self, pos: int) -> int:
        return self._skip_into(2, _VM.op_SETITEM, pos)

    def skip_APPENDS(self, pos: int) -> int:
        return self._skip_into(0, _VM.op_APPENDS, pos)

    def skip_SETITEMS(self, pos: int) -> int:
        return self._skip_into(0, _VM.op_SETITEMS, pos)

    def skip_ADDITEMS(self, pos: int) -> int:
        return self._skip_into(0, _VM.op_ADDITEMS, pos)

    # -- opcodes (named as in pickle.py; the table below is built from these names) -----
    def op_PROTO(self, pos: int) -> int:
        end = self.need(pos, 1, "PROTO")
        if self.data[pos] > HIGHEST_PROTOCOL:
            raise S.error(
                "protocol-too-new",
                f"pickle protocol {self.data[pos]} is newer than {HIGHEST_PROTOCOL}",
                self.op_pos,
            )
        return end

    def op_FRAME(self, pos: int) -> int:
        if self.frame_at >= 0:
            raise S.frame_nested(self.frame_at, self.lim - self.op_pos, self.op_pos)
        end = self.need(pos, 8, "FRAME")
        self.lim = self.need(end, _unpack_u8(self.data, pos)[0], "FRAME contents")
        self.frame_at = self.op_pos
        return _FRAMED - end

    def op_STOP(self, pos: int) -> int:
        self.result = self.pop()
        self.ctx.end = pos
        return _STOPPED

    def op_MARK(self, pos: int) -> int:
        if len(self.metastack) >= self.max_marks:
            raise S.marks_full(self.max_marks, self.op_pos)
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

    # constants, ints and floats
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
        end = self.need(pos, 1, "BININT1")
        self.stack.append(self.data[pos])
        return end

    def op_BININT2(self, pos: int) -> int:
        end = self.need(pos, 2, "BININT2")
        self.stack.append(_unpack_u2(self.data, pos)[0])
        return end

    def op_INT(self, pos: int) -> int:
        raw, end = self.line(pos, "INT")
        if raw == b"00":
            self.stack.append(False)
        elif raw == b"01":
            self.stack.append(True)
        else:
            self.stack.append(S.int_text(raw, "INT", self.op_pos))
        return end

    def op_LONG(self, pos: int) -> int:
        raw, end = self.line(pos, "LONG")
        self.stack.append(S.int_text(raw[:-1] if raw.endswith(b"L") else raw, "LONG", self.op_pos))
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
        n = _unpack_i4(self.data, pos)[0]
        if n < 0:
            raise S.bad_argument("LONG4 with a negative length", self.op_pos)
        return self._long(pos + 4, n)

    def op_FLOAT(self, pos: int) -> int:
        raw, end = self.line(pos, "FLOAT")
        self.stack.append(S.float_text(raw, self.op_pos))
        return end

    def op_BINFLOAT(self, pos: int) -> int:
        end = self.need(pos, 8, "BINFLOAT")
        self.stack.append(_unpack_f8(self.data, pos)[0])
        return end

    # strings and bytes: a length (1, 4 or 8 bytes), then the data
    def _sized(self, pos: int, width: int, what: str) -> tuple[bytes, int]:
        start = self.need(pos, width, what)
        if width == 1:
            n = self.data[pos]
        elif width == 4:
            n = _unpack_u4(self.data, pos)[0]
        else:
            n = _unpack_u8(self.data, pos)[0]
        end = self.need(start, n, what)
        return self.data[start:end], end

    def op_SHORT_BINUNICODE(self, pos: int) -> int:
        raw, end = self._sized(pos, 1, "SHORT_BINUNICODE")
        self.stack.append(S.decode_text(raw, "SHORT_BINUNICODE", self.op_pos))
        return end

    def op_BINUNICODE(self, pos: int) -> int:
        raw, end = self._sized(pos, 4, "BINUNICODE")
        self.stack.append(S.decode_text(raw, "BINUNICODE", self.op_pos))
        return end

    def op_BINUNICODE8(self, pos: int) -> int:
        raw, end = self._sized(pos, 8, "BINUNICODE8")
        self.stack.append(S.decode_text(raw, "BINUNICODE8", self.op_pos))
        return end

    def op_UNICODE(self, pos: int) -> int:
        raw, end = self.line(pos, "UNICODE")
        self.stack.append(S.unicode_text(raw, self.op_pos))
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
        self.stack.append(self.ctx.py2_string(raw))
        return end

    def op_BINSTRING(self, pos: int) -> int:
        self.need(pos, 4, "BINSTRING")
        if _unpack_i4(self.data, pos)[0] < 0:
            raise S.bad_argument("BINSTRING with a negative length", self.op_pos)
        raw, end = self._sized(pos, 4, "BINSTRING")
        self.stack.append(self.ctx.py2_string(raw))
        return end

    def op_STRING(self, pos: int) -> int:
        raw, end = self.line(pos, "STRING")
        self.stack.append(self.ctx.py2_string(S.quoted_bytes(raw, self.op_pos)))
        return end

    def op_NEXT_BUFFER(self, pos: int) -> int:
        raise S.error(
            "unsupported-opcode",
            "NEXT_BUFFER needs out-of-band buffers, which checkpoints never carry",
            self.op_pos,
        )

    def op_READONLY_BUFFER(self, pos: int) -> int:
        self.top()
        return pos

    # containers. NB: pop_mark() replaces self.stack, so call it before using self.stack.
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
        a = self.pop()
        self.stack.append((a, b))
        return pos

    def op_TUPLE3(self, pos: int) -> int:
        c = self.pop()
        b = self.pop()
        a = self.pop()
        self.stack.append((a, b, c))
        return pos

    def op_FROZENSET(self, pos: int) -> int:
        items = self.pop_mark()
        for item in items:
            if type(item) is not str:  # text passes the key guard at once
                self.ctx.check_hashable(item, items, self.op_pos)
        self.stack.append(frozenset(items))
        return pos

    def op_DICT(self, pos: int) -> int:
        items = self.pop_mark()
        if len(items) % 2:
            raise S.bad_operand("DICT with an odd number of items", self.op_pos)
        d: dict[Any, Any] = {}
        for i in range(0, len(items), 2):
            if type(items[i]) is not str:
                self.ctx.check_hashable(items[i], d, self.op_pos)
            d[items[i]] = items[i + 1]
        self.stack.append(d)
        return pos

    def op_APPEND(self, pos: int) -> int:
        value = self.pop()
        self.target((list, Placeholder), "list").append(value)
        return pos

    def op_APPENDS(self, pos: int) -> int:
        items = self.pop_mark()
        self.target((list, Placeholder), "list").extend(items)
        return pos

    def op_SETITEM(self, pos: int) -> int:
        value = self.pop()
        key = self.pop()
        target = self.target((dict, Placeholder), "dict")
        if type(key) is not str:
            self.ctx.check_hashable(key, target, self.op_pos)
        target[key] = value
        return pos

    def op_SETITEMS(self, pos: int) -> int:
        items = self.pop_mark()
        if len(items) % 2:
            raise S.bad_operand("SETITEMS with an odd number of items", self.op_pos)
        target = self.target((dict, Placeholder), "dict")
        for i in range(0, len(items), 2):
            if type(items[i]) is not str:
                self.ctx.check_hashable(items[i], target, self.op_pos)
            target[items[i]] = items[i + 1]
        return pos

    def op_ADDITEMS(self, pos: int) -> int:
        items = self.pop_mark()
        target = self.target((set, Placeholder), "set")
        for item in items:
            if type(item) is not str:
                self.ctx.check_hashable(item, target, self.op_pos)
            if isinstance(target, set):
                target.add(item)
            else:
                target.append(item)
        return pos

    # memo
    def op_BINPUT(self, pos: int) -> int:
        end = self.need(pos, 1, "BINPUT")
        self.memo_put(self.data[pos])
        return end

    def op_LONG_BINPUT(self, pos: int) -> int:
        end = self.need(pos, 4, "LONG_BINPUT")
        self.memo_put(_unpack_u4(self.data, pos)[0])
        return end

    def op_PUT(self, pos: int) -> int:
        raw, end = self.line(pos, "PUT")
        self.memo_put(S.int_text(raw, "PUT", self.op_pos))
        return end

    def op_MEMOIZE(self, pos: int) -> int:
        self.memo_put(len(self.memo))
        return pos

    def op_BINGET(self, pos: int) -> int:
        end = self.need(pos, 1, "BINGET")
        self.memo_get(self.data[pos])
        return end

    def op_LONG_BINGET(self, pos: int) -> int:
        end = self.need(pos, 4, "LONG_BINGET")
        self.memo_get(_unpack_u4(self.data, pos)[0])
        return end

    def op_GET(self, pos: int) -> int:
        raw, end = self.line(pos, "GET")
        self.memo_get(S.int_text(raw, "GET", self.op_pos))
        return end

    # copyreg's extension registry: torch never writes it; a code is an unknown global
    def _ext(self, code: int) -> None:
        self.stack.append(self.ctx.extension(code, self.op_pos))

    def op_EXT1(self, pos: int) -> int:
        end = self.need(pos, 1, "EXT1")
        self._ext(self.data[pos])
        return end

    def op_EXT2(self, pos: int) -> int:
        end = self.need(pos, 2, "EXT2")
        self._ext(_unpack_u2(self.data, pos)[0])
        return end

    def op_EXT4(self, pos: int) -> int:
        end = self.need(pos, 4, "EXT4")
        self._ext(_unpack_i4(self.data, pos)[0])
        return end

    # objects: names resolve in the registry, calls go to its safe constructors
    def op_GLOBAL(self, pos: int) -> int:
        module, pos = self.line(pos, "GLOBAL")
        name, end = self.line(pos, "GLOBAL")
        self.stack.append(
            self.ctx.find_global(
                S.decode_text(module, "GLOBAL", self.op_pos),
                S.decode_text(name, "GLOBAL", self.op_pos),
                self.op_pos,
            )
        )
        return end

    def op_STACK_GLOBAL(self, pos: int) -> int:
        name = self.pop()
        module = self.pop()
        if type(module) is not str or type(name) is not str:
            raise S.bad_operand("STACK_GLOBAL needs two strings", self.op_pos)
        self.stack.append(self.ctx.find_global(module, name, self.op_pos))
        return pos

    def op_REDUCE(self, pos: int) -> int:
        args = self.pop()
        func = self.pop()
        if type(args) is not tuple:
            raise S.bad_operand("REDUCE arguments must be a tuple", self.op_pos)
        self.stack.append(self.ctx.instantiate(func, args, None, "REDUCE", self.op_pos))
        return pos

    def op_NEWOBJ(self, pos: int) -> int:
        args = self.pop()
        cls = self.pop()
        if type(args) is not tuple:
            raise S.bad_operand("NEWOBJ arguments must be a tuple", self.op_pos)
        self.stack.append(self.ctx.instantiate(cls, args, {}, "NEWOBJ", self.op_pos))
        return pos

    def op_NEWOBJ_EX(self, pos: int) -> int:
        kwargs = self.pop()
        args = self.pop()
        cls = self.pop()
        if type(args) is not tuple or type(kwargs) is not dict:
            raise S.bad_operand("NEWOBJ_EX needs a tuple and a dict", self.op_pos)
        self.stack.append(self.ctx.instantiate(cls, args, kwargs, "NEWOBJ_EX", self.op_pos))
        return pos

    def op_INST(self, pos: int) -> int:
        module, pos = self.line(pos, "INST")
        name, end = self.line(pos, "INST")
        cls = self.ctx.find_global(
            S.decode_text(module, "INST", self.op_pos),
            S.decode_text(name, "INST", self.op_pos),
            self.op_pos,
        )
        args = tuple(self.pop_mark())
        self.stack.append(self.ctx.instantiate(cls, args, None, "INST", self.op_pos))
        return end

    def op_OBJ(self, pos: int) -> int:
        items = self.pop_mark()
        if not items:
            raise S.underflow(self.code(), self.op_pos)
        self.stack.append(
            self.ctx.instantiate(items[0], tuple(items[1:]), None, "OBJ", self.op_pos)
        )
        return pos

    def op_BUILD(self, pos: int) -> int:
        state = self.pop()
        self.ctx.build(self.top(), state, self.op_pos)
        return pos

    def op_PERSID(self, pos: int) -> int:
        raw, end = self.line(pos, "PERSID")
        self.stack.append(self.ctx.persistent(raw.decode("ascii", "replace"), self.op_pos))
        return end

    def op_BINPERSID(self, pos: int) -> int:
        pid = self.pop()
        self.stack.append(self.ctx.persistent(pid, self.op_pos))
        return pos


_TABLE: Final[tuple[Callable[[_VM, int], int] | None, ...]] = tuple(
    getattr(_VM, f"op_{BY_CODE[code].name}") if code in BY_CODE else None for code in range(256)
)
_SKIP_BY_NAME: Final = {
    "EMPTY_DICT": _VM.skip_push,
    "EMPTY_LIST": _VM.skip_push,
    "EMPTY_SET": _VM.skip_push,
    "EMPTY_TUPLE": _VM.skip_EMPTY_TUPLE,
    "TUPLE": _VM.skip_TUPLE,
    "LIST": _VM.skip_mark,
    "DICT": _VM.skip_mark,
    "FROZENSET": _VM.skip_mark,
    "OBJ": _VM.skip_OBJ,
    "TUPLE1": _VM.skip_TUPLE1,
    "TUPLE2": _VM.skip_TUPLE2,
    "TUPLE3": _VM.skip_TUPLE3,
    "REDUCE": _VM.skip_call2,
    "NEWOBJ": _VM.skip_call2,
    "NEWOBJ_EX": _VM.skip_call3,
    "BINPERSID": _VM.skip_BINPERSID,
    "PERSID": _VM.skip_persid,
    "INST": _VM.skip_inst,
    "BUILD": _VM.skip_build,
    "APPEND": _VM.skip_APPEND,
    "APPENDS": _VM.skip_APPENDS,
    "SETITEM": _VM.skip_SETITEM,
    "SETITEMS": _VM.skip_SETITEMS,
    "ADDITEMS": _VM.skip_ADDITEMS,
}
_SKIP_TABLE: Final = tuple(
    _SKIP_BY_NAME.get(BY_CODE[c].name) if c in BY_CODE else None for c in range(256)
)
_GUARD_BY_NAME: Final = {
    "REDUCE": _VM.guard_REDUCE,
    "NEWOBJ": _VM.guard_REDUCE,
    "NEWOBJ_EX": _VM.guard_NEWOBJ_EX,
    "INST": _VM.guard_INST,
    "OBJ": _VM.guard_OBJ,
    "BUILD": _VM.guard_BUILD,
    "BINPERSID": _VM.guard_BINPERSID,
    "PERSID": _VM.guard_PERSID,
}
assert set(_GUARD_BY_NAME) == set(SEL.GUARDED)
_GUARD_TABLE: Final = tuple(
    _GUARD_BY_NAME.get(BY_CODE[c].name) if c in BY_CODE else None for c in range(256)
)
_REDUCE: Final = BY_NAME["REDUCE"].code
_ATOMS: Final = SEL._ATOMS
_INERT: Final = _ATOMS | {type(SEL.SKIPPED)}  # what a skipped op may drop untainted
#: operand types a call accepts: others fail its own checks, in both runs
_ARGS: Final = frozenset({tuple, type(SEL.SKIPPED)})
_KWARGS: Final = frozenset({dict, type(SEL.SKIPPED)})
_EMPTY_DICT: Final = BY_NAME["EMPTY_DICT"].code
_SETITEMS: Final = BY_NAME["SETITEMS"].code
_SINGLE_FILLS: Final = group("single_fill")
_FILL_OPS: Final = group("fill")
_TEXT_OPS: Final = group("text")
#: opcode names the pure engine implements (a test checks this equals the table)
SUPPORTED: Final = frozenset(name for name in BY_NAME if hasattr(_VM, f"op_{name}"))


def run_pickle(
    data: bytes,
    *,
    persistent_load: Callable[[Any], Any] | None = None,
    strict: bool = False,
    limits: Limits = DEFAULT_LIMITS,
    encoding: str = "utf-8",
    select: Any = None,
    extra_globals: Mapping[tuple[str, str], Any] | None = None,
) -> PickleResult:
    """Interpret one pickle and return what it builds, without executing anything.

    Args:
        data: the pickle's bytes.
        persistent_load: called with each persistent id (torch storages).
        strict: raise ``UnsafePickleError`` on a global outside the registry instead of
            building a ``Placeholder``.
        limits: resource guards.
        encoding: how Python 2 ``str`` values are decoded (``"bytes"`` keeps them bytes).
        select: top-level keys to build (the root must be a dict); the values of the
            others are skipped at opcode speed and left out of the result. The result is
            what a full run would give for those keys, restricted to them.
        extra_globals: more known names, ``(module, name) -> KnownGlobal`` or an
            immutable value, for this run only (a format's own classes); the registry
            is consulted first, so they cannot replace a registered name.

    Raises:
        FormatError, LimitError, UnsupportedError, UnsafePickleError with ``offset`` set
        to the opcode's position in ``data``.
    """
    return C.drive(
        _run,
        data,
        persistent_load=persistent_load,
        strict=strict,
        limits=limits,
        encoding=encoding,
        select=select,
        extra_globals=extra_globals,
    )


def _run(data: bytes, ctx: C.Context, select: frozenset[Any] | None) -> Any:
    vm = _VM(data, ctx, select)
    return vm.run() if select is None else vm.run_selective()
