"""Resolve OmegaConf ``${...}`` node interpolations in a config rebuilt as dicts/lists.

A pickled ``DictConfig`` keeps interpolations as strings; with torch, reading
``cfg.optim.lr`` resolves them. ckptpeek rebuilds configs as plain containers, so it
resolves the plain node references when the root config is complete: absolute
(``${model.width}``, ``${a.0}``, ``${a[0]}``) and relative (``${.x}``, ``${..x}``), whole
values keeping the target's type, embedded ones formatted into the string. Resolver
calls (``${oc.env:HOME}``, ``${now:...}``) are never run: they stay as written, and so
does any reference that does not resolve or loops.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    import re
    from typing import Any, Final

__all__ = ("resolve_interpolations",)

_REF_PATTERN: Final = r"(?<!\\)\$\{(\.*)([A-Za-z0-9_\-\.\[\]]*)\}"
_ESCAPED_PATTERN: Final = r"\\\$\{"
_MISSING: Final = object()
_MAX_HOPS: Final = 32
_MAX_TEXT: Final = 1 << 16  # longest interpolated string produced


def _split(key: str) -> list[str]:
    return [p for p in key.replace("[", ".").replace("]", ".").split(".") if p]


def _step(node: Any, part: str) -> Any:
    if isinstance(node, dict):
        return node.get(part, _MISSING)
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return node[int(part)]
    return _MISSING


def resolve_interpolations(root: Any) -> None:
    """Replace resolvable interpolation strings in ``root`` (a dict/list tree) in place."""
    import re  # noqa: PLC0415 - only configs need it; keeps `import ckptpeek` light

    ref = re.compile(_REF_PATTERN)
    escaped = re.compile(_ESCAPED_PATTERN)
    parents: dict[int, Any] = {}
    todo = [root]
    containers = []
    while todo:  # collect containers and their parents without recursion
        node = todo.pop()
        containers.append(node)
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, (dict, list)) and id(child) not in parents and child is not root:
                parents[id(child)] = node
                todo.append(child)

    # Each interpolating value is resolved once (memo by its container and key), so a
    # chain of "${a}${a}" references costs linear time; results longer than
    # _MAX_TEXT are left unresolved instead of growing exponentially.
    memo: dict[tuple[int, Any], Any] = {}
    busy: set[tuple[int, Any]] = set()

    def lookup(container: Any, dots: str, key: str, hops: int) -> Any:
        node = root
        if dots:
            node = container
            for _ in range(len(dots) - 1):
                node = parents.get(id(node), _MISSING)
                if node is _MISSING:
                    return _MISSING
        holder: Any = None  # the container of the last step, and the key it took there
        last = ""
        for part in _split(key):
            holder, last = node, part
            node = _step(node, part)
            if node is _MISSING:
                return _MISSING
        if isinstance(node, str) and "${" in node and holder is not None:
            # a referenced interpolation resolves relative to its own container
            index = int(last) if isinstance(holder, list) else last
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
        whole = ref.fullmatch(text)
        if whole:
            return lookup(container, whole.group(1), whole.group(2), hops)
        failed = False
        size = 0

        def sub(m: re.Match[str]) -> str:
            nonlocal failed, size
            value = lookup(container, m.group(1), m.group(2), hops)
            if value is _MISSING or isinstance(value, (dict, list)):
                failed = True
                return m.group(0)
            piece = str(value)
            size += len(piece)
            if size > _MAX_TEXT:
                failed = True
            return piece if not failed else m.group(0)

        out = ref.sub(sub, text)
        if failed or len(out) > _MAX_TEXT:
            return _MISSING
        return escaped.sub("${", out)

    for container in containers:
        items = container.items() if isinstance(container, dict) else enumerate(container)
        for key, value in list(items):
            if isinstance(value, str) and "${" in value:
                result = resolved(container, key, value, 0)
                if result is not _MISSING:
                    container[key] = result
