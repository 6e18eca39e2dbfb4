"""What both pickle engines share besides the opcode table: the object-level semantics.

Resolving a global, calling a known constructor, BUILD, persistent ids and hashing
guards live here (the messages in ``messages.py``, selective reads in ``select.py``), so
the pure loop (``pickle_vm.py``) and the Cython loop (``native/unpickle/_pickle_vm_c.pyx``)
cannot drift: they differ only in how they walk the bytes and keep the stack.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping

from ckptpeek.errors import CheckpointError

from . import registry
from .interpolation import commit_interpolations, interpolations
from .keys import KeyGuard
from .messages import BAD_OPERAND, bad_operand, error
from .select import SKIPPED, filter_root, selected_result
from .standins import (
    SLOT_BYTES,
    KnownGlobal,
    Placeholder,
    PlaceholderType,
    apply_build,
    build_inputs,
)

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from typing import Any, Final

    from ckptpeek.limits import Limits

__all__ = ("Context", "PickleResult", "drive", "gc_paused", "EXTENSION_MODULE")

#: the module under which EXT1/EXT2/EXT4 codes are listed among a pickle's globals
EXTENSION_MODULE: Final = "copyreg.extension"


class PickleResult:
    """What a run produced: the unpickled object, every global the pickle named, whether
    the value is complete (not restricted by ``select``), and ``end``, the offset just
    past the STOP opcode (files that hold several pickles in a row need it)."""

    __slots__ = ("value", "globals", "complete", "end")

    def __init__(
        self,
        value: Any,
        globals_: dict[tuple[str, str], bool],
        complete: bool = True,
        end: int = -1,
    ) -> None:
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


#: Constructors that build data from the pickle's bytes (numpy scalars and arrays,
#: encoded strings) make a new copy on every call, so memo references could turn a small
#: pickle into gigabytes. A run may build this many times its own size, plus the slack,
#: in such objects (counted in ``Context.charge``); more is ``limit-built-bytes``.
BUILT_BYTES_FACTOR: Final = 4
BUILT_BYTES_SLACK: Final = 16 << 20


def built_bytes(obj: Any) -> int:
    """The bytes of data ``obj`` holds that a constructor made for it (0 for the rest)."""
    t = type(obj)
    if t is bytes or t is bytearray or t is str:
        return len(obj)
    if t.__module__ == "numpy" and hasattr(obj, "nbytes"):  # ndarray and numpy scalars
        return int(obj.nbytes)
    return 0


class Context:
    """Per-run state and the object-level operations of the interpreter."""

    __slots__ = (
        "persistent_load",
        "strict",
        "limits",
        "encoding",
        "globals",
        "end",
        "extra",
        "built_budget",
        "key_guard",
        "configs",
    )

    def __init__(
        self,
        persistent_load: Callable[[Any], Any] | None,
        strict: bool,
        limits: Limits,
        encoding: str,
        extra_globals: Mapping[tuple[str, str], Any] | None = None,
    ) -> None:
        self.extra = extra_globals  # a format's own known names (after the registry)
        self.persistent_load = persistent_load
        self.strict = strict
        self.limits = limits
        self.encoding = encoding
        self.globals: dict[tuple[str, str], bool] = {}
        self.end = -1  # set by the engine at STOP: the offset after it
        self.built_budget = BUILT_BYTES_SLACK  # drive() adds the pickle's share
        self.key_guard = KeyGuard(limits)  # what hashing the run's keys may cost
        self.configs: list[Any] = []  # root configs, resolved when the run is complete

    def charge(self, obj: Any, how: str, pos: int) -> Any:
        """Count what a constructor built against the run's budget; returns ``obj``."""
        size = built_bytes(obj)
        if size:
            self.spend(size, how, pos)
        return obj

    def spend(self, size: int, how: str, pos: int) -> None:
        """Count ``size`` bytes that ``how`` is about to build (a copy of a container's
        slots, a path's parts) against the run's budget, before they are built."""
        self.built_budget -= size
        if self.built_budget < 0:
            raise error(
                "limit-built-bytes",
                f"{how} builds more data than a pickle of this size may "
                f"({BUILT_BYTES_FACTOR}x its bytes + {BUILT_BYTES_SLACK >> 20} MiB)",
                pos,
            )

    def py2_string(self, raw: bytes) -> Any:
        """A Python 2 ``str``: text in the pickle's encoding, or bytes if it is not text."""
        if self.encoding == "bytes":
            return raw
        try:
            return raw.decode(self.encoding)
        except UnicodeDecodeError:
            return raw

    def check_hashable(self, key: Any, container: Any, pos: int) -> None:
        """Let ``key`` be hashed into ``container`` (the dict or set being built, or an
        object standing for it) by the opcode at ``pos``: ``KeyGuard.check``, its
        ``LimitError`` located at ``pos``.

        Called before every insertion of a file-made object into a hashed container
        (SETITEM(S), DICT, FROZENSET, ADDITEMS, and the stand-ins that build dicts and
        sets); the engines skip text keys, which the guard passes at once.
        """
        try:
            self.key_guard.check(key, container)
        except CheckpointError as exc:
            exc.offset = pos
            raise

    def defer(self, config: Any) -> None:
        """Finish ``config`` once the run is complete (``finish``): a root OmegaConf
        config, whose interpolations may name nodes built after its BUILD."""
        self.configs.append(config)

    def finish(self) -> None:
        """The end of a run: resolve the deferred configs' interpolations, all of them
        together held to ``Limits.max_interpolated_bytes`` of text.

        Over that budget no config of the run is resolved at all: they stay exactly as
        written (``${...}`` text), as torch.load returns them (OmegaConf resolves on
        access), and the load goes on. Nothing is changed until the whole fits.
        """
        if not self.configs:
            return
        done: set[int] = set()  # containers resolved (each once, under its first root)
        pending: dict[tuple[int, Any], tuple[Any, Any]] = {}
        budget = self.limits.max_interpolated_bytes
        try:
            for config in self.configs:
                budget -= interpolations(config, budget, done, pending)
        except CheckpointError:  # limit-interpolation: leave every config as written
            return
        commit_interpolations(pending)

    def find_global(self, module: str, name: str, pos: int) -> Any:
        """GLOBAL / STACK_GLOBAL: a registry entry, or a placeholder type. Never imports."""
        value = registry.resolve(module, name)
        if value is None and self.extra is not None:
            value = self.extra.get(registry.normalise(module, name))
        self.globals[registry.normalise(module, name)] = value is not None
        if value is not None:
            return value
        if self.strict:
            raise error(
                "forbidden-global",
                f"global {module}.{name} is not known to be safe; open with "
                f"strict=False to get a Placeholder for it instead",
                pos,
            )
        return PlaceholderType(module, name)

    def extension(self, code: int, pos: int) -> Any:
        """EXT1 / EXT2 / EXT4: the global behind a code of copyreg's extension registry.

        That registry is process-wide state of whoever unpickles (``copyreg.add_extension``),
        so no file says which global a code names: the code is listed as the unknown
        global ``copyreg.extension.<code>``, refused in strict mode and a placeholder
        otherwise. Neither the registry nor ``extra_globals`` (nor copyreg) is consulted.
        """
        key = (EXTENSION_MODULE, str(code))
        self.globals[key] = False
        if self.strict:
            raise error(
                "forbidden-extension",
                f"extension code {code} names a global through copyreg's process-wide "
                f"extension registry, which no file can vouch for; open with strict=False "
                f"to get a Placeholder for it instead",
                pos,
            )
        return PlaceholderType(*key)

    def instantiate(
        self, cls: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None, how: str, pos: int
    ) -> Any:
        """REDUCE / NEWOBJ / INST / OBJ on a resolved global."""
        if type(cls) is KnownGlobal:
            fn = cls.new if kwargs is not None else cls.call
            if fn is None:
                raise error("forbidden-reduce", f"{how} of {cls.qualname} is not allowed", pos)
            try:
                if cls.cost is not None:  # what it copies or joins: charged first
                    self.spend(cls.cost(args), f"{how} of {cls.qualname}", pos)
                if cls.keys is not None:  # it hashes these: guarded first
                    built: list[Any] = []  # stands for the one container fn builds
                    for key in cls.keys(args):
                        self.check_hashable(key, built, pos)
                out = fn(args, kwargs) if kwargs is not None else fn(args)  # type: ignore[call-arg]
            except CheckpointError as exc:
                if exc.offset is None:
                    exc.offset = pos
                raise
            except BAD_OPERAND as exc:
                raise error(
                    "bad-call", f"{how} of {cls.qualname} with bad arguments: {exc}", pos
                ) from None
            return self.charge(out, f"{how} of {cls.qualname}", pos)
        if type(cls) is PlaceholderType:
            return Placeholder(cls.module, cls.name, args, kwargs)
        raise bad_operand(f"{how} needs a class or function, got {type(cls).__name__}", pos)

    def build(self, obj: Any, state: Any, pos: int) -> None:
        try:
            slots, keys = build_inputs(obj, state)  # charged and guarded first
            self.spend(SLOT_BYTES * slots, "BUILD", pos)
            for key in keys:
                self.check_hashable(key, obj, pos)
            if apply_build(obj, state):
                self.defer(obj)
        except BAD_OPERAND as exc:
            raise error("bad-build", f"BUILD refused: {exc}", pos) from None
        self.charge(obj, "BUILD", pos)  # a numpy array gets its data here

    def persistent(self, pid: Any, pos: int) -> Any:
        if self.persistent_load is None:
            raise error("bad-persistent-id", "persistent id in a pickle that has no storages", pos)
        try:
            return self.persistent_load(pid)
        except CheckpointError as exc:
            if exc.offset is None:
                exc.offset = pos
            raise
        except BAD_OPERAND as exc:
            raise error("bad-persistent-id", f"bad persistent id: {exc}", pos) from None


def drive(
    run: Callable[[bytes, Context, frozenset[Any] | None], Any],
    data: bytes,
    *,
    persistent_load: Callable[[Any], Any] | None,
    strict: bool,
    limits: Limits,
    encoding: str,
    select: Any,
    extra_globals: Mapping[tuple[str, str], Any] | None = None,
) -> PickleResult:
    """``run_pickle`` for either engine: ``run(data, ctx, select)`` interprets once.

    With ``select``, a selective run comes first; if it fails, or a skipped value
    reached a selected one, a full run decides (and reports any error), so the result
    is always that of a full read restricted to the selected keys.
    """
    if len(data) > limits.max_pickle_bytes:
        raise error(
            "limit-pickle-size",
            f"pickle of {len(data)} bytes is over the limit of {limits.max_pickle_bytes}",
        )
    data = bytes(data)
    with gc_paused():
        if select is not None:
            select = frozenset(select)
            ctx = Context(persistent_load, strict, limits, encoding, extra_globals)
            ctx.built_budget += BUILT_BYTES_FACTOR * len(data)
            try:
                value = run(data, ctx, select)
                ctx.finish()
                value = selected_result(value, select, limits)
            except CheckpointError:
                value = SKIPPED
            if value is not SKIPPED:
                return PickleResult(value, ctx.globals, complete=False, end=ctx.end)
        ctx = Context(persistent_load, strict, limits, encoding, extra_globals)
        ctx.built_budget += BUILT_BYTES_FACTOR * len(data)
        value = run(data, ctx, None)
        ctx.finish()
    if select is not None:
        return PickleResult(
            filter_root(value, select),
            ctx.globals,
            complete=type(value) not in (dict, OrderedDict),
            end=ctx.end,
        )
    return PickleResult(value, ctx.globals, end=ctx.end)
