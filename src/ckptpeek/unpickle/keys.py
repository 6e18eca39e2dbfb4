"""What hashing and inserting file-made keys may cost: THE key guard.

A dict key or set member made from a file is hashed, and compared with every key of its
container that shares its hash. Three ways a small file makes that expensive:

* a tuple (or frozenset) is hashed and compared by walking it, through shared parts as
  often as they occur, and recursively in C: a 200-byte DAG of 40 tuples ``(t, t)``
  hashes 2**40 parts, a deep one takes the C stack;
* an int is hashed in time linear in its digits, and CPython does not cache the hash:
  one memoised 1 MB int used as a key costs milliseconds per insertion;
* numbers, and tuples of them, hash the same in every process (only text is seeded), so
  a file can make many distinct keys share one hash (``hash(-1) == hash(-2)``, ``i`` and
  ``i + 2**61 - 1``): each insertion then compares the new key with all of them (hash
  flooding, quadratic).

``KeyGuard.check(key, container)`` runs before every such insertion - in both
interpreter engines, the stand-ins that build dicts and sets, the torch fallback's
pre-flight and the catalog's YAML/JSON loader - and refuses, before any hashing, a key
whose parts exceed ``Limits.max_key_nodes`` or nest deeper than ``Limits.max_depth``
(and never deeper than 200: CPython hashes nested tuples recursively in C),
hashing work of one run beyond ``Limits.max_nodes``, and comparisons caused by shared
hashes beyond ``Limits.max_hash_collisions``. Text and bytes pass at once: their hash is
seeded and cached, and they cost their length once, which the file's size bounds.
"""

from __future__ import annotations

from ckptpeek.errors import error
from ckptpeek.limits import DEFAULT_LIMITS, Limits

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

__all__ = ("KeyGuard", "key_cost")

_IDENTITY_HASH: Final[Any] = object.__hash__  # objects hashed by address never collide
#: bits of an int that cost one unit to hash or compare (about one small object's cost)
_INT_BITS_PER_UNIT: Final = 128
#: CPython hashes and compares nested tuples by recursing in C with no depth check: a key
#: is held to this depth even where a larger ``Limits.max_depth`` lets walks go deeper
_MAX_KEY_DEPTH: Final = 200


class _TooLarge(Exception):
    def __init__(self, deep: bool) -> None:
        self.deep = deep


def _atom_cost(obj: Any) -> int:
    if type(obj) is int or (isinstance(obj, int) and type(obj).__hash__ is int.__hash__):
        return 1 + int.bit_length(obj) // _INT_BITS_PER_UNIT
    return 1


def key_cost(key: Any, max_cost: int, max_depth: int, memo: dict[int, Any]) -> int:
    """The cost of hashing (or comparing) ``key`` once, in units of one small object:
    1 per part and per small element, more for long ints, and the expanded cost of
    every tuple or frozenset in it (shared ones counted where they occur).

    ``memo`` maps ``id(part) -> (part, cost, depth)`` across calls (holding ``part``, so
    no id is reused), so each distinct part is walked once per run and a key costs
    O(its distinct parts) to measure. Raises ``_TooLarge`` as soon as the cost passes
    ``max_cost`` or the nesting ``max_depth``.
    """
    if not isinstance(key, (tuple, frozenset)):
        cost = _atom_cost(key)
        if cost > max_cost:
            raise _TooLarge(deep=False)
        return cost
    hit = memo.get(id(key))
    if hit is not None:
        return int(hit[1])
    # the path being walked: [part, iterator over it, cost so far, depth below it]
    path: list[list[Any]] = [[key, iter(key), 1, 1]]
    while True:
        frame = path[-1]
        for child in frame[1]:
            if not isinstance(child, (tuple, frozenset)):
                frame[2] += _atom_cost(child)
            elif (hit := memo.get(id(child))) is not None:
                if len(path) + hit[2] > max_depth:
                    raise _TooLarge(deep=True)
                frame[2] += hit[1]
                frame[3] = max(frame[3], hit[2] + 1)
            else:
                if len(path) >= max_depth:
                    raise _TooLarge(deep=True)
                path.append([child, iter(child), 1, 1])
                break
            if frame[2] > max_cost:
                raise _TooLarge(deep=False)
        else:
            path.pop()
            part, _, cost, depth = frame
            memo[id(part)] = (part, cost, depth)
            if not path:
                return int(cost)
            parent = path[-1]
            parent[2] += cost
            parent[3] = max(parent[3], depth + 1)
            if parent[2] > max_cost:
                raise _TooLarge(deep=False)


class KeyGuard:
    """The key guard of one run (one pickle, one text file): call ``check`` before each
    insertion of a file-made key into a hashed container.

    Raises ``LimitError`` without a location (the caller adds its offset or file):
    ``limit-key-size`` (a key over ``max_key_nodes``, or the run's hashing work over
    ``max_nodes``), ``limit-depth`` (a key nested deeper than ``max_depth``),
    ``limit-hash-collisions`` (comparisons caused by keys that share a hash in one
    container, weighted by key cost, over ``max_hash_collisions``).
    """

    __slots__ = ("limits", "_costs", "_work", "_chains", "_budget", "_containers")

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._costs: dict[int, Any] = {}  # key_cost's memo
        self._work = limits.max_nodes  # hashing work left for the run
        # insertions so far per (container, hash): each new one compares with them all
        self._chains: dict[tuple[int, int], int] = {}
        self._budget = limits.max_hash_collisions  # comparisons left for the run
        self._containers: dict[int, Any] = {}  # held, so no container id is reused

    def check(self, key: Any, container: Any) -> None:
        """Let ``key`` be hashed and inserted into ``container`` (any object standing for
        the dict or set being built: the same object for every key of one container)."""
        t = type(key)
        if t is str or t is bytes:
            return
        limits = self.limits
        depth = min(limits.max_depth, _MAX_KEY_DEPTH)
        try:
            cost = key_cost(key, limits.max_key_nodes, depth, self._costs)
        except _TooLarge as exc:
            if exc.deep:
                raise error("limit-depth", f"a key nests deeper than {depth}") from None
            raise error(
                "limit-key-size",
                f"a key costs more than {limits.max_key_nodes} parts to hash (shared parts "
                f"counted as often as hashing visits them, long ints by their length)",
            ) from None
        self._work -= cost
        if self._work < 0:
            raise error(
                "limit-key-size",
                f"hashing the keys of this file visits more than {limits.max_nodes} parts",
            )
        if t.__hash__ is _IDENTITY_HASH:
            return
        h = hash(key)  # an unhashable key raises TypeError: the caller's bad operand
        cid = id(container)
        if cid not in self._containers:
            self._containers[cid] = container
        chain = (cid, h)
        n = self._chains.get(chain, 0)
        self._chains[chain] = n + 1
        if n:
            self._budget -= n * cost
            if self._budget < 0:
                raise error(
                    "limit-hash-collisions",
                    f"keys sharing a hash in one container cost more than "
                    f"{limits.max_hash_collisions} comparisons (hash flooding)",
                )
