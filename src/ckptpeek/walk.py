"""Iterative walks over an unpickled object graph: bounded depth, each container once.

Pickles can share sub-objects (memo) and even build cycles, and a hostile one can nest
a million levels deep. These walks never recurse in Python, visit every container at
most once, and stop with a ``LimitError`` past the configured depth or node count.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

from ckptpeek.limits import DEFAULT_LIMITS, Limits
from ckptpeek.unpickle.standins import Placeholder

from .errors import error
from .tensor import TensorRef

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from typing import Any

__all__ = ("children", "is_namespace", "iter_tensors")

Key = object  # a dict key or list index


def is_namespace(obj: Any) -> bool:
    """An ``argparse.Namespace`` (hyper-parameters of older Lightning checkpoints)."""
    ns = sys.modules.get("argparse")  # no Namespace exists unless argparse was imported
    return ns is not None and isinstance(obj, ns.Namespace)


def children(obj: Any) -> Iterator[tuple[Key, Any]]:
    """The (key, child) pairs of a container, in order; nothing for a leaf.

    Always through the class's methods (``dict.items(obj)``): a BUILD may have set
    instance attributes named ``items`` or ``keys`` on an ``OrderedDict``, as torch.load
    does, and a method looked up on a file-made object is never called.
    """
    if isinstance(obj, dict):
        return iter(dict.items(obj))
    if isinstance(obj, (list, tuple)):
        return enumerate(obj)
    if is_namespace(obj):
        return iter(vars(obj).items())
    if isinstance(obj, Placeholder):
        parts: list[tuple[Key, Any]] = list(enumerate(obj.args))
        if isinstance(obj.state, dict):
            parts += list(dict.items(obj.state))
        elif obj.state is not None:
            parts.append(("__state__", obj.state))
        parts += [(f"__item{i}__", v) for i, v in enumerate(obj.items)]
        parts += list(obj.dictitems.items())
        return iter(parts)
    return iter(())


def _is_container(obj: Any) -> bool:
    return isinstance(obj, (dict, list, tuple, Placeholder)) or is_namespace(obj)


def iter_tensors(
    root: Any, *, limits: Limits = DEFAULT_LIMITS, path: str | None = None
) -> Iterator[tuple[tuple[Key, ...], TensorRef]]:
    """Yield ``(key_path, tensor)`` depth-first in container order.

    A container reached twice (shared through the memo) is walked only the first time.
    """
    if isinstance(root, TensorRef):
        yield (), root
        return
    seen: set[int] = set()
    stack: list[tuple[tuple[Key, ...], Iterator[tuple[Key, Any]]]] = [((), children(root))]
    seen.add(id(root))
    visited = 0
    while stack:
        prefix, it = stack[-1]
        for key, child in it:
            visited += 1
            if visited > limits.max_nodes:
                raise error(
                    "limit-nodes", f"object graph has more than {limits.max_nodes} nodes", path=path
                )
            if isinstance(child, TensorRef):
                yield prefix + (key,), child
            elif _is_container(child) and id(child) not in seen:
                seen.add(id(child))
                if len(stack) >= limits.max_depth:
                    raise error(
                        "limit-depth",
                        f"object graph nests deeper than {limits.max_depth}",
                        path=path,
                    )
                stack.append((prefix + (key,), children(child)))
                break
        else:
            stack.pop()
