"""What both pickle engines share besides the opcode table: the object-level semantics.

Resolving a global, calling a known constructor, BUILD, persistent ids, hashing guards,
string decoding, and every error message live here, so the pure loop
(``pickle_vm.py``) and the Cython loop (``native/_pickle_vm_c.pyx``) cannot drift:
they differ only in how they walk the bytes and keep the stack.
"""

from __future__ import annotations

import codecs
import contextlib
import gc
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from typing import Any, Final

from . import registry
from .errors import CheckpointError, FormatError, LimitError, UnsafePickleError
from .opcodes import BY_CODE, Limits
from .tensor import TensorRef
from .standins import (MAX_KEY_DEPTH, KnownGlobal, Placeholder, PlaceholderType, apply_build,
                       check_key_depth)

__all__ = ("Context", "PickleResult", "BAD_OPERAND", "error", "opname")

# Errors that a stand-in constructor or a container operation raises on arguments of
# the wrong type; the engines turn them into FormatError at the opcode's offset.
BAD_OPERAND: Final = (TypeError, ValueError, AttributeError, KeyError, IndexError,
                      OverflowError, UnicodeError, RecursionError, MemoryError)


class PickleResult:
    """What a run produced: the unpickled object, every global the pickle named, whether
    the value is complete (not restricted by ``select``), and ``end``, the offset just
    past the STOP opcode (files that hold several pickles in a row need it)."""

    __slots__ = ("value", "globals", "complete", "end")

    def __init__(self, value: Any, globals_: dict[tuple[str, str], bool],
                 complete: bool = True, end: int = -1) -> None:
        self.value = value
        self.globals = globals_  # (module, name) -> known-safe?
        self.complete = complete
        self.end = end


_gc_lock = threading.Lock()
_gc_holders = 0
_gc_was_enabled = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a pickle is built.

    Building hundreds of thousands of small containers triggers a collection every few
    hundred allocations, each walking everything built so far: a quarter of the native
    engine's time. A run creates no garbage cycles worth collecting, so both engines
    pause the collector (counted across threads: the last run to finish restores it).
    """
    global _gc_holders, _gc_was_enabled
    with _gc_lock:
        if _gc_holders == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_holders += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_holders -= 1
            if _gc_holders == 0 and _gc_was_enabled:
                # Everything allocated while paused still counts towards the next young
                # collection, which would then walk the whole result (~1 ms per 100k
                # objects). freeze()+unfreeze() moves tracked objects to the oldest
                # generation and resets that count in O(1): the result is kept anyway.
                gc.freeze()
                gc.unfreeze()
                gc.enable()


class _Skipped:
    """What a selective run builds instead of a value nobody asked for."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<skipped>"


SKIPPED: Final = _Skipped()


_LEAVES: Final = frozenset({str, int, float, bool, type(None), bytes, complex})


def _contains_skipped(value: Any, limits: Limits) -> bool:
    """Whether SKIPPED appears anywhere under ``value`` (iterative, each container once).

    Membership tests (``SKIPPED in d`` hashes once; ``in`` on lists and values runs in C)
    do the bulk of the work; only containers are walked into.
    """
    if value is SKIPPED:
        return True
    seen: set[int] = set()
    todo = [value]
    budget = limits.max_nodes
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        budget -= 1
        if budget < 0:
            return True  # too big to check: let the full run decide
        t = type(obj)
        if t is TensorRef:
            for part in (obj.attrs, obj.metadata, obj.components):
                if part:
                    todo.append(part)
            continue
        if isinstance(obj, dict):
            if SKIPPED in obj:  # a key
                return True
            items: Any = obj.values()
        elif isinstance(obj, (list, tuple, set, frozenset)):
            items = obj
        elif t is Placeholder:
            items = (*obj.args, obj.kwargs, obj.state, obj.items, obj.dictitems)
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            items = vars(obj).values()
        elif getattr(t, "__slots__", None) and t.__module__.startswith("ckptpeek."):
            # our slotted stand-ins (OmegaNode.value, Record.state, ...)
            items = [getattr(obj, name, None) for klass in t.__mro__
                     for name in getattr(klass, "__slots__", ()) if name != "__weakref__"]
        else:
            continue
        for item in items:
            if item is SKIPPED:
                return True
            if type(item) not in _LEAVES:
                todo.append(item)
    return False


#: the pickler fills containers in batches of this many items (pickle._BATCHSIZE)
PICKLE_BATCH: Final = 1000


def maybe_open(obj: Any, fills: dict[int, int]) -> bool:
    """Whether a root-level item may still receive a one-item SETITEM/APPEND.

    The pickler fills a container in batches of 1000 and writes a last single item
    with SETITEM/APPEND: a container is done once a batch smaller than that came, or
    if it is non-empty and was built whole. Only decides how much a selective run skips.
    """
    if type(obj) is Placeholder:
        return fills.get(id(obj), PICKLE_BATCH) >= PICKLE_BATCH
    if not isinstance(obj, (dict, list, set)):
        return False
    size = fills.get(id(obj))
    return len(obj) == 0 if size is None else size >= PICKLE_BATCH


def filter_root(value: Any, select: frozenset[Any]) -> Any:
    """The root dict with only the selected top-level keys (other roots: unchanged)."""
    if type(value) not in (dict, OrderedDict):
        return value
    out = type(value)()
    for key, item in value.items():
        if key in select:
            out[key] = item
    return out


def selected_result(value: Any, select: frozenset[Any], limits: Limits) -> Any:
    """The filtered root of a selective run, or SKIPPED if it cannot be trusted (the root
    is no dict, or a skipped value reached a selected one): then the full run decides."""
    if type(value) not in (dict, OrderedDict):
        return SKIPPED
    out = filter_root(value, select)
    return SKIPPED if _contains_skipped(out, limits) else out


def opname(code: int) -> str:
    op = BY_CODE.get(code)
    return op.name if op else f"opcode 0x{code:02x}"


def error(cls: type[CheckpointError], code: str, msg: str, pos: int) -> CheckpointError:
    return cls(msg, code=code, offset=pos)


# -- the messages of the hot-path checks (both engines raise exactly these) -----------
def truncated(what: str, n: int, remain: int, pos: int) -> CheckpointError:
    return error(FormatError, "truncated",
                 f"pickle is truncated: {what} needs {n} bytes, {remain} remain", pos)


def no_newline(what: str, pos: int) -> CheckpointError:
    return error(FormatError, "truncated",
                 f"pickle is truncated: {what} has no terminating newline", pos)


def no_stop(pos: int) -> CheckpointError:
    return error(FormatError, "truncated", "pickle ends before its STOP opcode", pos)


def underflow(code: int, pos: int) -> CheckpointError:
    return error(FormatError, "stack-underflow",
                 f"{opname(code)} needs more items than the stack holds", pos)


def mark_missing(code: int, pos: int) -> CheckpointError:
    return error(FormatError, "mark-missing", f"{opname(code)} without a MARK", pos)


def unknown_opcode(code: int, pos: int) -> CheckpointError:
    return error(FormatError, "unknown-opcode", f"unknown opcode 0x{code:02x}", pos)


def memo_missing(idx: int, pos: int) -> CheckpointError:
    return error(FormatError, "memo-missing", f"memo key {idx} has never been stored into", pos)


def memo_full(limit: int, pos: int) -> CheckpointError:
    return error(LimitError, "limit-memo", f"memo grows past {limit} entries", pos)


def bad_argument(msg: str, pos: int) -> CheckpointError:
    return error(FormatError, "bad-argument", msg, pos)


def bad_operand(msg: str, pos: int) -> CheckpointError:
    return error(FormatError, "bad-operand", msg, pos)


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
        return codecs.escape_decode(raw[1:-1])[0]  # type: ignore[attr-defined,no-any-return]
    except ValueError as exc:
        raise bad_argument(f"STRING argument: {exc}", pos) from None


def decode_text(raw: bytes, what: str, pos: int) -> str:
    try:
        return raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        raise bad_argument(f"{what} is not valid UTF-8: {exc.reason}", pos) from None


class Context:
    """Per-run state and the object-level operations of the interpreter."""

    __slots__ = ("persistent_load", "strict", "limits", "encoding", "globals", "end", "extra")

    def __init__(self, persistent_load: Callable[[Any], Any] | None, strict: bool,
                 limits: Limits, encoding: str,
                 extra_globals: Mapping[tuple[str, str], Any] | None = None) -> None:
        self.extra = extra_globals  # a format's own known names (after the registry)
        self.persistent_load = persistent_load
        self.strict = strict
        self.limits = limits
        self.encoding = encoding
        self.globals: dict[tuple[str, str], bool] = {}
        self.end = -1  # set by the engine at STOP: the offset after it

    def py2_string(self, raw: bytes) -> Any:
        """A Python 2 ``str``: text in the pickle's encoding, or bytes if it is not text."""
        if self.encoding == "bytes":
            return raw
        try:
            return raw.decode(self.encoding)
        except UnicodeDecodeError:
            return raw

    def check_hashable(self, key: Any, pos: int) -> None:
        """Refuse keys whose hashing or comparison would recurse deeper than the limit.

        CPython hashes and compares nested tuples recursively in C, so a key is held to
        ``MAX_KEY_DEPTH`` even when ``Limits.max_depth`` allows deeper containers.
        """
        if type(key) in (tuple, frozenset):
            limit = min(self.limits.max_depth, MAX_KEY_DEPTH)
            try:
                check_key_depth(key, limit)
            except RecursionError:
                raise error(LimitError, "limit-depth",
                            f"a key nests deeper than {limit}", pos) from None

    def find_global(self, module: str, name: str, pos: int) -> Any:
        """GLOBAL / STACK_GLOBAL: a registry entry, or a placeholder type. Never imports."""
        value = registry.resolve(module, name)
        if value is None and self.extra is not None:
            value = self.extra.get(registry.normalise(module, name))
        self.globals[registry.normalise(module, name)] = value is not None
        if value is not None:
            return value
        if self.strict:
            raise error(UnsafePickleError, "forbidden-global",
                        f"global {module}.{name} is not known to be safe; open with "
                        f"strict=False to get a Placeholder for it instead", pos)
        return PlaceholderType(module, name)

    def instantiate(self, cls: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None,
                    how: str, pos: int) -> Any:
        """REDUCE / NEWOBJ / INST / OBJ on a resolved global."""
        if type(cls) is KnownGlobal:
            fn = cls.new if kwargs is not None else cls.call
            if fn is None:
                raise error(UnsafePickleError, "forbidden-reduce",
                            f"{how} of {cls.qualname} is not allowed", pos)
            try:
                return fn(args, kwargs) if kwargs is not None else fn(args)  # type: ignore[call-arg]
            except CheckpointError as exc:
                if exc.offset is None:
                    exc.offset = pos
                raise
            except BAD_OPERAND as exc:
                raise error(FormatError, "bad-call",
                            f"{how} of {cls.qualname} with bad arguments: {exc}", pos) from None
        if type(cls) is PlaceholderType:
            return Placeholder(cls.module, cls.name, args, kwargs)
        raise bad_operand(f"{how} needs a class or function, got {type(cls).__name__}", pos)

    def build(self, obj: Any, state: Any, pos: int) -> None:
        try:
            apply_build(obj, state)
        except BAD_OPERAND as exc:
            raise error(FormatError, "bad-build", f"BUILD refused: {exc}", pos) from None

    def persistent(self, pid: Any, pos: int) -> Any:
        if self.persistent_load is None:
            raise error(FormatError, "bad-persistent-id",
                        "persistent id in a pickle that has no storages", pos)
        try:
            return self.persistent_load(pid)
        except CheckpointError as exc:
            if exc.offset is None:
                exc.offset = pos
            raise
        except BAD_OPERAND as exc:
            raise error(FormatError, "bad-persistent-id", f"bad persistent id: {exc}", pos) from None


def drive(run: Callable[[bytes, Context, frozenset[Any] | None], Any], data: bytes, *,
          persistent_load: Callable[[Any], Any] | None, strict: bool, limits: Limits,
          encoding: str, select: Any,
          extra_globals: Mapping[tuple[str, str], Any] | None = None) -> PickleResult:
    """``run_pickle`` for either engine: ``run(data, ctx, select)`` interprets once.

    With ``select``, a selective run comes first; if it fails, or a skipped value
    reached a selected one, a full run decides (and reports any error), so the result
    is always that of a full read restricted to the selected keys.
    """
    if len(data) > limits.max_pickle_bytes:
        raise LimitError(f"pickle of {len(data)} bytes is over the limit of "
                         f"{limits.max_pickle_bytes}", code="limit-pickle-size")
    data = bytes(data)
    with gc_paused():
        if select is not None:
            select = frozenset(select)
            ctx = Context(persistent_load, strict, limits, encoding, extra_globals)
            try:
                value = selected_result(run(data, ctx, select), select, limits)
            except CheckpointError:
                value = SKIPPED
            if value is not SKIPPED:
                return PickleResult(value, ctx.globals, complete=False, end=ctx.end)
        ctx = Context(persistent_load, strict, limits, encoding, extra_globals)
        value = run(data, ctx, None)
    if select is not None:
        return PickleResult(filter_root(value, select), ctx.globals,
                            complete=type(value) not in (dict, OrderedDict), end=ctx.end)
    return PickleResult(value, ctx.globals, end=ctx.end)
