"""Selective reads: what a run builds instead of the values nobody asked for, and the
check that a selective result is exactly a full read restricted to the selected keys."""

from __future__ import annotations

from collections import OrderedDict

from ckptpeek.errors import CheckpointError
from ckptpeek.tensor import StorageRef, TensorRef
from ckptpeek.torch_types import DType, Layout, MemoryFormat, QScheme, StorageType

from .standins import KnownGlobal, Placeholder, PlaceholderType

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Final

    from ckptpeek.limits import Limits

__all__ = (
    "SKIPPED",
    "GUARDED",
    "PICKLE_BATCH",
    "Tracker",
    "Outcome",
    "plain",
    "maybe_open",
    "filter_root",
    "selected_result",
)


class _Skipped:
    """What a selective run builds instead of a value nobody asked for."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<skipped>"


SKIPPED: Final = _Skipped()


#: values that hold nothing a run builds (text, numbers, what globals resolve to, the
#: storages persistent ids give): a walk never enters them, and a skipped tuple made of
#: them is built, because it is the same object a full run makes
_ATOMS: Final = frozenset(
    {str, bytes, bytearray, int, float, bool, type(None), complex}
    | {KnownGlobal, PlaceholderType, StorageRef, DType, StorageType, Layout, QScheme}
    | {MemoryFormat}
)
#: the operations of a run that consume values without keeping them (calls, BUILD,
#: persistent ids): a selective run never lets SKIPPED or a tainted object into them
GUARDED: Final = ("REDUCE", "NEWOBJ", "NEWOBJ_EX", "INST", "OBJ", "BUILD", "BINPERSID", "PERSID")


def plain(value: Any) -> bool:
    """Whether a skipped tuple item is the same object in a full run: an atom, or a tuple
    of atoms (a storage's persistent id, a shape)."""
    t = type(value)
    if t in _ATOMS:
        return True
    if t is tuple:
        for item in value:
            if type(item) not in _ATOMS:
                return False
        return True
    return False


def _children(obj: Any, t: type) -> Any:
    """What a walk enters below ``obj`` (None: nothing), the same for every check."""
    if t is TensorRef:
        return (obj.attrs, obj.metadata, obj.components)
    if t is Placeholder:
        return (*obj.args, obj.kwargs, obj.state, obj.items, obj.dictitems, obj.setitems)
    if isinstance(obj, dict):
        items: Any = [*dict.values(obj), *obj]  # keys too: a tuple key may hold SKIPPED
    elif isinstance(obj, (list, tuple, set, frozenset)):
        items = obj
    elif t is slice:
        return (obj.start, obj.stop, obj.step)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        return vars(obj).values()
    elif getattr(t, "__slots__", None) and t.__module__.startswith("ckptpeek."):
        # our slotted stand-ins (OmegaNode.value, Record.state, ...)
        return [
            getattr(obj, name, None)
            for klass in t.__mro__
            for name in getattr(klass, "__slots__", ())
            if name != "__weakref__"
        ]
    else:
        return None
    if t not in _EXACT:  # a dict/list subclass may carry attributes (OrderedDict._metadata)
        attrs = getattr(obj, "__dict__", None)
        if attrs:
            items = [*items, *attrs.values()]
    return items


_EXACT: Final = frozenset({dict, list, tuple, set, frozenset})
_CONTAINERS: Final = (dict, list, set)  # whose subclasses a file builds (with a __dict__)


class Tracker:
    """The bookkeeping that keeps a selective run exact (one per run, in both engines).

    A selective run differs from a full run in SKIPPED values only; what it builds from
    real values alone is what a full run builds. Three ways would let a skipped value
    change a selected one without leaving SKIPPED in it, and each is closed here:

    * an operation that consumes values without keeping them (a constructor call, BUILD,
      which may resolve ``${...}`` interpolations over a whole config, a persistent id)
      would turn a SKIPPED operand into an ordinary wrong result: such an operation on an
      operand that ``reaches`` SKIPPED or a tainted object is not run; a call pushes
      SKIPPED, a BUILD leaves its target (and what its state reaches) ``tainted``;
    * a skipped operation that swallows real objects (a skipped container or call they
      go into, the BUILD of a skipped config whose state holds real nodes) taints what
      its operands reach: in a full run they become part of an object that later
      operations may change (a root config's BUILD resolves ``${...}`` in them);
    * ``persistent_load`` decides a storage by the first id naming its key (as torch
      does), so skipped ids are kept (``pending``) and passed to it, in order, before
      the next id the run reads (``flush``); one it cannot see (an id that is not
      ``plain``) or that fails makes the run ``blind``: later storages become SKIPPED.

    The result is trusted only if no selected value reaches SKIPPED or a tainted object.
    """

    __slots__ = ("tainted", "blind", "budget", "pending")

    def __init__(self, limits: Limits) -> None:
        self.tainted: dict[int, Any] = {}  # id -> object (kept alive: ids stay unique)
        self.blind = False
        self.budget = limits.max_nodes  # objects all walks of the run may visit
        self.pending: list[Any] = []  # skipped persistent ids, in order

    def skipped_id(self, pid: Any) -> None:
        """A persistent id in a skipped value (its storage stays SKIPPED)."""
        if self.blind:
            return
        if plain(pid):
            self.pending.append(pid)
        else:
            self.blind = True
            self.pending.clear()
            self.taint(pid)  # swallowed, like any skipped operand

    def flush(self, persistent: Callable[[Any, int], Any], pos: int) -> bool:
        """Before a persistent id is read: pass the skipped ones before it to
        ``persistent`` (``Context.persistent``), in order. False if the run is blind."""
        pending = self.pending
        if pending and not self.blind:
            self.pending = []
            for pid in pending:
                try:
                    persistent(pid, pos)
                except CheckpointError:
                    # not reported: the full run does (a selected storage follows)
                    self.blind = True
                    break
        return not self.blind

    def reaches(self, *values: Any) -> bool:
        """Whether SKIPPED or a tainted object is (or is under) one of ``values``."""
        tainted = self.tainted
        todo: list[Any] = []
        seen: set[int] | None = None
        items: Any = values
        while True:
            for item in items:
                t = type(item)
                if t in _ATOMS:
                    continue
                if item is SKIPPED or (tainted and id(item) in tainted):
                    return True
                if t in _EXACT:
                    if not item:
                        continue  # empty: nothing under it
                    if t is tuple:
                        for part in item:
                            if type(part) not in _ATOMS:
                                break
                        else:
                            continue  # a tuple of atoms (a shape, a storage id)
                elif (
                    isinstance(item, _CONTAINERS) and not item and not getattr(item, "__dict__", 1)
                ):
                    continue  # an empty OrderedDict (a tensor's hooks), config, ...
                todo.append(item)
            if not todo:
                return False
            if seen is None:
                seen = set()
            obj = todo.pop()
            while id(obj) in seen:
                if not todo:
                    return False
                obj = todo.pop()
            seen.add(id(obj))
            self.budget -= 1
            if self.budget < 0:
                return True  # too big to check: let the full run decide
            items = _children(obj, type(obj))
            if items is None:
                items = ()

    def taint(self, *values: Any) -> None:
        """Mark every object under ``values`` as not what a full run has there."""
        tainted = self.tainted
        todo = [v for v in values if v is not SKIPPED and not plain(v)]  # nothing to change
        while todo:
            obj = todo.pop()
            if id(obj) in tainted:
                continue
            tainted[id(obj)] = obj
            self.budget -= 1
            if self.budget < 0:
                self.blind = True
                tainted[id(SKIPPED)] = SKIPPED  # marks the run untrusted (see outcome)
                return
            items = _children(obj, type(obj))
            if items is not None:
                todo.extend(i for i in items if type(i) not in _ATOMS and i is not SKIPPED)

    def outcome(self, value: Any) -> Outcome:
        """What the run returns at STOP (``selected_result`` reads it)."""
        return Outcome(value, self)


class Outcome:
    """What a selective run returns: its root and the run's tracker."""

    __slots__ = ("value", "tracker")

    def __init__(self, value: Any, tracker: Tracker) -> None:
        self.value = value
        self.tracker = tracker


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
    for key, item in dict.items(value):  # a BUILD may have shadowed value.items
        if key in select:
            out[key] = item
    return out


def selected_result(value: Any, select: frozenset[Any], limits: Limits) -> Any:
    """The filtered root of a selective run (an ``Outcome``), or SKIPPED if it cannot be
    trusted (the root is no dict, or a selected value reaches SKIPPED or an object the
    run could not build exactly): then the full run decides."""
    if type(value) is Outcome:
        tracker, value = value.tracker, value.value
    else:
        tracker = Tracker(limits)
    if type(value) not in (dict, OrderedDict) or id(SKIPPED) in tracker.tainted:
        return SKIPPED
    out = filter_root(value, select)
    tracker.budget = limits.max_nodes
    return SKIPPED if tracker.reaches(*out.values(), *out) else out
