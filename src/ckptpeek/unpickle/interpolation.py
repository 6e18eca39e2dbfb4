"""Resolve OmegaConf ``${...}`` node interpolations in a config rebuilt as dicts/lists.

A pickled ``DictConfig`` keeps interpolations as strings; with torch, reading
``cfg.optim.lr`` resolves them. ckptpeek rebuilds configs as plain containers, so it
resolves the plain node references when the root config is complete: absolute
(``${model.width}``, ``${a.0}``, ``${a[0]}``) and relative (``${.x}``, ``${..x}``), whole
values keeping the target's type, embedded ones formatted into the string. Resolver
calls (``${oc.env:HOME}``, ``${now:...}``) are never run: they stay as written, and so
does any reference that does not resolve or loops.

The text interpolations produce is counted before it is built: ``"${a}${a}..."`` chains
multiply it. So is the text they scan: memo references let many keys hold one big
interpolation string, each scanning it again. Past ``max_bytes`` of both in all
(``Limits.max_interpolated_bytes`` for a pickle's configs) the resolution stops with
``limit-interpolation``. Results go to a
journal, written into the configs only once the whole resolution fits: a config over
budget is left exactly as written, never half resolved.
"""

from __future__ import annotations

import sys

from ckptpeek._text import int_printable
from ckptpeek.errors import error
from ckptpeek.limits import DEFAULT_LIMITS

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    import re
    from typing import Any, Final, NoReturn

    #: the journal of a resolution: (id(container), key) -> (container, resolved value)
    Pending = dict[tuple[int, Any], tuple[Any, Any]]

__all__ = ("resolve_interpolations", "interpolations", "commit_interpolations")

# the leading dots, then a key that does not start with one: were both groups able to
# take a dot, "${" and a million dots would be tried split by split (quadratic)
_REF_PATTERN: Final = r"(?<!\\)\$\{(\.*)((?:[A-Za-z0-9_\-\[\]][A-Za-z0-9_\-\.\[\]]*)?)\}"
_ESCAPED_PATTERN: Final = r"\\\$\{"
_MISSING: Final = object()
_MAX_HOPS: Final = 32
_MAX_INDEX_DIGITS: Final = 18  # a list index past int64 names no node (and int() stays cheap)


def _split(key: str) -> list[str]:
    return [p for p in key.replace("[", ".").replace("]", ".").split(".") if p]


def _step(node: Any, part: str) -> Any:
    # the class's methods, never the node's: a BUILD may have shadowed them
    if isinstance(node, dict):
        return dict.get(node, part, _MISSING)
    if (
        isinstance(node, list)
        and part.isdigit()
        and len(part) <= _MAX_INDEX_DIGITS
        and int(part) < len(node)
    ):
        return node[int(part)]
    return _MISSING


def _text(value: Any) -> str | None:
    """How an embedded reference to ``value`` reads in the text (None: not resolved).
    Only OmegaConf's primitive values, and no int too long for ``str``. A path's text
    is no longer than its parts, charged when it was built (``Context.spend``), and
    ``PurePath`` keeps it: ``str`` joins them once, however often it is referenced."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not int_printable(value):
        return None
    if value is None or isinstance(value, (bool, int, float, bytes)):
        return str(value)
    pathlib = sys.modules.get("pathlib")  # no path exists unless pathlib was imported
    if pathlib is not None and isinstance(value, pathlib.PurePath):
        return str(value)
    return None


def resolve_interpolations(
    root: Any,
    max_bytes: int = DEFAULT_LIMITS.max_interpolated_bytes,
    done: set[int] | None = None,
) -> int:
    """Replace resolvable interpolation strings in ``root`` (a dict/list tree) in place.

    Returns the characters of text the interpolations scanned and produced; raises
    ``LimitError`` (``limit-interpolation``) before scanning and producing more than
    ``max_bytes``, with ``root`` left unchanged. ``done``: as for ``interpolations``.
    """
    pending: Pending = {}
    produced = interpolations(root, max_bytes, set() if done is None else done, pending)
    commit_interpolations(pending)
    return produced


def commit_interpolations(pending: Pending) -> None:
    """Write the values ``interpolations`` resolved into their containers."""
    for (_, key), (container, value) in pending.items():
        container[key] = value


def interpolations(root: Any, max_bytes: int, done: set[int], pending: Pending) -> int:
    """Resolve the interpolation strings of ``root`` into ``pending``, changing nothing.

    Returns the characters of text scanned and produced; raises ``LimitError``
    (``limit-interpolation``) before scanning and producing more than ``max_bytes``. ``done`` (ids of containers) and
    ``pending`` are shared by the calls of one run: each container is resolved once,
    under the first root that reaches it (many roots sharing one big subtree cost its
    size once), and a reference to a value resolved earlier reads its result.
    """
    import re  # noqa: PLC0415 - only configs need it; keeps `import ckptpeek` light

    ref = re.compile(_REF_PATTERN)
    escaped = re.compile(_ESCAPED_PATTERN)
    if id(root) in done:
        return 0
    done.add(id(root))
    parents: dict[int, Any] = {}
    todo = [root]
    containers = []
    while todo:  # collect containers and their parents without recursion
        node = todo.pop()
        containers.append(node)
        children = dict.values(node) if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, (dict, list)) and id(child) not in done:
                done.add(id(child))
                parents[id(child)] = node
                todo.append(child)

    # Each interpolating value is resolved once (memo by its container and key), so a
    # chain of "${a}${a}" references costs linear time in lookups; the text it makes is
    # counted against ``max_bytes`` before it is joined.
    memo: dict[tuple[int, Any], Any] = {}
    busy: set[tuple[int, Any]] = set()
    produced = 0  # characters scanned and produced so far
    # whether a string holds "${", by its id: one string many keys share is searched once
    # (the strings are alive in the tree, so their ids stay theirs)
    marked: dict[int, bool] = {}

    def over() -> NoReturn:
        raise error(
            "limit-interpolation",
            f"OmegaConf interpolations would scan or produce more than {max_bytes} "
            f"characters of text",
        )

    def spend(size: int) -> None:
        nonlocal produced
        produced += size
        if produced > max_bytes:
            over()

    def interpolating(value: Any) -> bool:
        if not isinstance(value, str):
            return False
        found = marked.get(id(value))
        if found is None:
            found = marked[id(value)] = "${" in value
        return found

    def lookup(container: Any, dots: str, key: str, hops: int) -> Any:
        node = root
        if dots:
            node = container
            for _ in range(len(dots) - 1):
                node = parents.get(id(node), _MISSING)
                if node is _MISSING:
                    return _MISSING
        holder: Any = None  # the container of the last step, and the key it took there
        index: Any = None
        for part in _split(key):
            holder = node
            node = _step(node, part)
            if node is _MISSING:
                return _MISSING
            index = int(part) if isinstance(holder, list) else part
            done_value = pending.get((id(holder), index))
            if done_value is not None:
                node = done_value[1]  # resolved already (its text is no longer a reference)
                holder = None
        if holder is not None and interpolating(node):
            # a referenced interpolation resolves relative to its own container
            return resolved(holder, index, node, hops + 1)
        return node

    def resolved(container: Any, key: Any, text: str, hops: int) -> Any:
        slot = (id(container), key)
        if slot in memo:
            return memo[slot]
        if slot in busy or hops > _MAX_HOPS:
            return _MISSING  # a reference loop, or too deep
        busy.add(slot)
        try:
            value = value_of(text, container, hops)
        finally:
            busy.discard(slot)
        memo[slot] = value
        return value

    def value_of(text: str, container: Any, hops: int = 0) -> Any:
        nonlocal produced
        spend(len(text))  # the text is scanned for its references (once per slot)
        whole = ref.fullmatch(text)
        if whole:
            return lookup(container, whole.group(1), whole.group(2), hops)
        failed = False
        size = len(text)  # the result is at most the text, each reference replaced

        def sub(m: re.Match[str]) -> str:
            nonlocal failed, size
            value = lookup(container, m.group(1), m.group(2), hops)
            piece = None if value is _MISSING else _text(value)
            if piece is None:
                failed = True
                return m.group(0)
            size += len(piece)
            if produced + size > max_bytes:
                over()
            return piece

        out = ref.sub(sub, text)
        if failed:
            return _MISSING
        produced += len(out)
        return escaped.sub("${", out)

    for container in containers:
        items = dict.items(container) if isinstance(container, dict) else enumerate(container)
        for key, value in list(items):
            if interpolating(value):
                result = resolved(container, key, value, 0)
                if result is not _MISSING:
                    pending[(id(container), key)] = (container, result)
    return produced
