"""THE resource limits: every guard ckptpeek applies to a file, in one immutable record.

Every length a file claims is also checked against the bytes really present, so these
bound what a *valid-looking* file may cost. Each is checked before the work or memory
it guards is spent, and tripping one raises ``LimitError`` (code ``limit-*``). The
defaults are generous for the largest real checkpoints (README, "Limits") and strict
for hostile ones; ``DEFAULT_LIMITS._replace(max_depth=50)`` makes a changed copy, and
every entry point takes ``limits=``.
"""

from __future__ import annotations

import collections

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ("Limits", "DEFAULT_LIMITS")

_FIELDS = (
    # (name, default)
    ("max_pickle_bytes", 1 << 30),
    ("max_memo", 50_000_000),
    ("max_depth", 200),
    ("max_nodes", 50_000_000),
    ("max_zip_members", 10_000_000),
    ("max_marks", 10_000),
    ("max_key_nodes", 10_000),
    ("max_hash_collisions", 10_000),
    ("max_interpolated_bytes", 16 << 20),
    ("max_directory_bytes", 1 << 29),
    ("max_text_bytes", 64 << 20),
    ("max_text_nodes", 1_000_000),
)


class Limits(
    collections.namedtuple(
        "Limits", [name for name, _ in _FIELDS], defaults=[value for _, value in _FIELDS]
    )
):
    """Resource guards for one file (immutable).

    Attributes:
        max_pickle_bytes: the largest pickle member read into memory.
        max_memo: memo entries (one per PUT/MEMOIZE).
        max_depth: container nesting depth that walks over the result accept.
        max_nodes: objects a walk over the result visits (shared sub-trees count once).
        max_zip_members: central-directory entries.
        max_marks: MARKs open at once (the interpreter's meta-stack depth).
        max_key_nodes: objects in one dict key or set member, counted through shared
            parts as hashing and comparing visit them.
        max_hash_collisions: distinct non-string keys of one pickle that share a hash
            (integers, floats and tuples hash the same in every process: hash flooding).
        max_interpolated_bytes: text OmegaConf interpolations of one file may produce.
        max_directory_bytes: the size of a ZIP central directory (read into memory).
        max_text_bytes: a sidecar, Hydra config or other text file the catalog reads.
        max_text_nodes: nodes a YAML/JSON text may build, aliases expanded.
    """

    __slots__ = ()


DEFAULT_LIMITS: Final = Limits()
