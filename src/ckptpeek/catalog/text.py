"""The one reader of every text file the catalog reads: sidecars, Hydra configs, overrides.

Every guard is applied before the cost it bounds is paid, with the same ``Limits`` for
every file (``ckptpeek.Limits``):

* the file: only a regular file is opened (``O_NONBLOCK``, so a FIFO named ``*.yaml``
  cannot block; checked with ``fstat`` on the opened descriptor), never through a symlink
  out of the catalog root, and at most ``max_text_bytes`` are read (``fstat`` first: a
  5 GB sparse file costs nothing);
* YAML: nodes are counted while the document is composed, an alias counting every node it
  stands for (so alias fan-out, the "billion laughs", stops at ``max_text_nodes`` without
  building anything big); nesting stops at ``max_depth``; a recursive alias is refused; an
  integer in any YAML 1.1 form (``0x..``, ``0o..``, ``0b..``, ``1:20:30``, ``1_000``) is
  held to what prints as digits (``ckptpeek.printable``'s rule: 3 bits per digit
  ``int(str)`` accepts), bounded from its text *before* it is converted; every mapping
  key passes THE key guard (``ckptpeek.unpickle.KeyGuard``: key cost, depth, hash
  flooding), one guard per budget;
* JSON: nodes (bounded above by the commas and brackets of the text, counted before
  parsing), integer digits (before conversion) and nesting are held to the same limits.

Everything that goes wrong is a :class:`TextError` (a ``ValueError``): the catalog turns
it into a warning on the entry, naming the file and the limit.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node
from yaml.resolver import Resolver

from ckptpeek import DEFAULT_LIMITS, LimitError, Limits
from ckptpeek.unpickle import KeyGuard

from .files import NotRegularError, inside, open_regular

__all__ = (
    "TextBudget",
    "TextError",
    "check_depth",
    "load_text_file",
    "parse_text",
    "read_text_file",
)

#: decimal digits ``int(str)`` accepts (Python's default when the interpreter sets none)
_INT_DIGITS = sys.get_int_max_str_digits() or 4300
#: the bits of the largest integer a text may hold: ``ckptpeek.printable``'s rule for an
#: int that prints as digits (3 bits per allowed digit, ``2**(3n) < 10**n``), so every
#: int a text gives prints as itself, never as ``<int of N bits>``
_INT_BITS = 3 * _INT_DIGITS

#: the ``Limits`` field behind each of the key guard's error codes
_GUARD_LIMITS = {
    "limit-key-size": "max_key_nodes",
    "limit-depth": "max_depth",
    "limit-hash-collisions": "max_hash_collisions",
}

_YAML_INT_TAG = "tag:yaml.org,2002:int"
_BASES = (("0b", 2), ("0x", 16), ("0o", 8))


class TextError(ValueError):
    """A text file the catalog will not use: malformed, not a regular file under the
    root, or over a limit - ``limit`` names it (a ``Limits`` field, or
    ``"int_max_str_digits"``: Python's own bound of ``int(str)``), else None."""

    def __init__(self, msg: str, limit: str | None = None) -> None:
        super().__init__(msg)
        self.limit = limit


class TextBudget:
    """Nodes left to build for one file and whatever it pulls in (a Hydra config and its
    overrides share one budget), and THE key guard (``ckptpeek.unpickle.KeyGuard``) of
    their mapping keys."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.nodes = 0
        self.keys = KeyGuard(limits)

    def add(self, n: int) -> None:
        self.nodes += n
        if self.nodes > self.limits.max_text_nodes:
            raise TextError(
                f"more than {self.limits.max_text_nodes} nodes (aliases expanded; "
                "Limits.max_text_nodes)",
                "max_text_nodes",
            )

    def key(self, key: Any, mapping: Any) -> None:
        """Let ``key`` be inserted into ``mapping`` (the dict being built): the key guard's
        cost, depth and hash-flooding bounds (a non-string key hashes the same in every
        process), as a TextError naming the limit."""
        try:
            self.keys.check(key, mapping)
        except LimitError as exc:
            field = _GUARD_LIMITS.get(exc.code, "max_key_nodes")
            raise TextError(f"{exc} (Limits.{field})", field) from None

    def depth(self, depth: int) -> None:
        if depth > self.limits.max_depth:
            raise TextError(
                f"nested deeper than {self.limits.max_depth} (Limits.max_depth)", "max_depth"
            )


# --------------------------------------------------------------------------- files


def read_text_file(
    path: Path | str,
    limits: Limits = DEFAULT_LIMITS,
    root: Path | None = None,
    *,
    dir_fd: int | None = None,
) -> str:
    """The UTF-8 text of a regular file under ``root`` of at most ``max_text_bytes``
    (with ``dir_fd``: the file ``path`` in that directory, never through a symlink).

    Raises TextError (not a regular file, outside ``root``, too large, not UTF-8) or
    OSError (missing, permissions)."""
    if root is not None and not inside(path, root):
        raise TextError("a symlink out of the catalog root; not followed")
    try:
        fd, st = open_regular(path, dir_fd=dir_fd, nofollow=dir_fd is not None)
    except NotRegularError as exc:
        raise TextError(f"not a regular file ({exc.kind}); not read") from None
    try:
        cap = limits.max_text_bytes
        if st.st_size > cap:
            raise TextError(
                f"{st.st_size} bytes, more than {cap} (Limits.max_text_bytes); not read",
                "max_text_bytes",
            )
        chunks, size = [], 0
        while size <= cap:  # the file may grow while we read: read one byte past the cap
            chunk = os.read(fd, cap + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > cap:
            raise TextError(f"grew past {cap} bytes while read", "max_text_bytes")
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TextError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def load_text_file(
    path: Path,
    limits: Limits = DEFAULT_LIMITS,
    root: Path | None = None,
    budget: TextBudget | None = None,
) -> Any:
    """Read and parse a ``.json`` file with JSON, anything else as YAML (safe), guarded.

    Raises TextError or OSError."""
    text = read_text_file(path, limits, root)
    return parse_text(text, "json" if path.suffix.lower() == ".json" else "yaml", budget, limits)


def parse_text(
    text: str, kind: str, budget: TextBudget | None = None, limits: Limits = DEFAULT_LIMITS
) -> Any:
    """Parse ``text`` as ``"yaml"`` (YAML 1.1, safe) or ``"json"``; raises TextError."""
    if len(text) > limits.max_text_bytes:  # text that is not from a file (an override)
        raise TextError(f"longer than {limits.max_text_bytes} characters", "max_text_bytes")
    budget = budget if budget is not None else TextBudget(limits)
    return _parse_json(text, budget) if kind == "json" else _parse_yaml(text, budget)


# --------------------------------------------------------------------------- JSON


def _too_long() -> TextError:
    return TextError(
        f"an integer too long to print in {_INT_DIGITS} decimal digits (more than "
        f"{_INT_BITS} bits)",
        "int_max_str_digits",
    )


def _printable_int(value: int) -> int:
    """``value`` if it prints as digits (``ckptpeek.printable``'s rule), else TextError."""
    if int.bit_length(value) > _INT_BITS:
        raise _too_long()
    return value


def _json_int(digits: str) -> int:
    if len(digits.lstrip("-")) > _INT_DIGITS:  # before int(), which would refuse it
        raise _too_long()
    return _printable_int(int(digits))


def _parse_json(text: str, budget: TextBudget) -> Any:
    # every value but the first follows a comma or opens a container: an upper bound of
    # the nodes, counted at C speed before anything is built
    budget.add(1 + text.count(",") + text.count("[") + text.count("{"))
    try:
        data = json.loads(text, parse_int=_json_int)
    except json.JSONDecodeError as exc:
        raise TextError(f"malformed JSON: {exc}") from None
    except RecursionError:  # the C scanner recurses per level, far past max_depth
        budget.depth(budget.limits.max_depth + 1)
        raise  # pragma: no cover - depth() raised
    check_depth(data, budget)
    return data


def check_depth(data: Any, budget: TextBudget) -> None:
    """Raise TextError if dicts/lists nest deeper than ``max_depth`` (no recursion; a
    shared sub-tree is walked once per place it appears, as the nodes were counted)."""
    todo = [(data, 0)]
    while todo:
        node, depth = todo.pop()
        if isinstance(node, (dict, list)):
            budget.depth(depth)
            children = node.values() if isinstance(node, dict) else node
            todo.extend((child, depth + 1) for child in children)


# --------------------------------------------------------------------------- YAML

try:
    from yaml.cyaml import CParser as _Parser  # libyaml's parser: events at C speed
except ImportError:  # pragma: no cover - PyYAML built without libyaml

    class _Parser(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):  # type: ignore[no-redef,misc]
        def __init__(self, stream: str) -> None:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)


def _int_too_big(value: str) -> bool:
    """Is this YAML 1.1 integer literal surely too long (``_INT_BITS``)? From its text
    alone, before any conversion, whose cost it bounds (power-of-two bases skip ``int``'s
    digit limit, and base 60 multiplies); the exact bit count is checked after it."""
    digits = value.replace("_", "").lstrip("+-")
    for prefix, base in _BASES:
        if digits.startswith(prefix):
            return len(digits[2:].lstrip("0")) * math.log2(base) > _INT_BITS + 8
    if ":" in digits:  # base 60: the parts after the first are < 60
        first, *rest = digits.split(":")
        bits = len(first.lstrip("0")) * math.log2(10) + len(rest) * math.log2(60)
        return bits > _INT_BITS + 8
    if len(digits) > 1 and digits.startswith("0"):  # octal
        return len(digits.lstrip("0")) * 3 > _INT_BITS + 8
    return len(digits) > _INT_DIGITS


class _Loader(Composer, _Parser, SafeConstructor, Resolver):  # type: ignore[misc]
    """PyYAML's safe loader (libyaml's parser when present) that counts while composing.

    The composer is PyYAML's Python one over libyaml's events, so every node passes
    through :meth:`compose_node`: counted (an alias by the size of what it names), its
    depth checked, before the next is parsed."""

    def __init__(self, text: str, budget: TextBudget) -> None:
        _Parser.__init__(self, text)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.budget = budget
        self.depth_now = 0
        self.sizes: dict[str, int] = {}  # anchor -> nodes it stands for

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if self.check_event(AliasEvent):
            anchor = self.peek_event().anchor
            size = self.sizes.get(anchor)
            if size is None and anchor in self.anchors:
                raise TextError(f"recursive alias *{anchor}")
            node: Node = super().compose_node(parent, index)  # unknown anchor: ComposerError
            self.budget.add(size or 1)
            return node
        self.depth_now += 1
        self.budget.depth(self.depth_now)
        anchor = self.peek_event().anchor
        before = self.budget.nodes
        self.budget.add(1)
        node = super().compose_node(parent, index)
        self.depth_now -= 1
        if anchor is not None:
            self.sizes[anchor] = self.budget.nodes - before
        return node

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        # SafeConstructor's, with non-string keys held to the hash-collision limit
        # before each is inserted (their hashes are the same in every process)
        if not isinstance(node, MappingNode):
            raise ConstructorError(
                None, None, f"expected a mapping node, but found {node.id}", node.start_mark
            )
        self.flatten_mapping(node)
        mapping: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                raise ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    "found unhashable key",
                    key_node.start_mark,
                )
            self.budget.key(key, mapping)
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping

    def construct_yaml_int(self, node: Node) -> int:
        value = str(self.construct_scalar(node))
        if _int_too_big(value):
            raise _too_long()
        result: int = super().construct_yaml_int(node)
        return _printable_int(result)


_Loader.add_constructor(_YAML_INT_TAG, _Loader.construct_yaml_int)


def _parse_yaml(text: str, budget: TextBudget) -> Any:
    loader = _Loader(text, budget)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise TextError(f"malformed YAML: {' '.join(str(exc).split())}") from None
    except TextError:
        raise
    except (ValueError, LookupError, AttributeError, TypeError) as exc:
        # PyYAML's constructors raise these for an explicit tag on a value it does not
        # fit (``!!int abc``, ``!!bool maybe``, ``!!timestamp x``): malformed text too
        raise TextError(f"malformed YAML: {type(exc).__name__}: {exc}") from None
    finally:
        loader.dispose()
