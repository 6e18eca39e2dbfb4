"""Selective reads: what a run builds instead of the values nobody asked for, and the
check that a selective result is exactly a full read restricted to the selected keys."""

from __future__ import annotations

from collections import OrderedDict

from ckptpeek.tensor import TensorRef

from .standins import Placeholder

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from typing import Any, Final

    from .opcodes import Limits

__all__ = ("SKIPPED", "PICKLE_BATCH", "maybe_open", "filter_root", "selected_result")


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
            items = [
                getattr(obj, name, None)
                for klass in t.__mro__
                for name in getattr(klass, "__slots__", ())
                if name != "__weakref__"
            ]
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
