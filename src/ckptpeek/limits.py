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


# Why these defaults (measured; README, "Limits"):
# real checkpoints (tests/data, tests/torch_corpus.py, a 20,000-tensor Adam
# checkpoint) need at most 11 open MARKs, keys of 3 parts, no colliding keys and
# 6 bytes of interpolated text: these defaults leave room and bound the worst case
# max_marks: 50x max_depth: the walks refuse deeper nesting anyway
# max_key_nodes: hashing one key: ~50 us
# max_hash_collisions: comparisons; the worst flood accepted: ~1,400 keys of one hash in
# one dict, tens of ms
# the largest real YAML at hand (torchgen's native_functions.yaml) is 0.6 MB and 28k
# nodes, real sidecars and Hydra configs a few KB: 16 MiB and 250k nodes leave 25x and
# 9x, and keep the worst file at ~130 MB and a few seconds (the loader's own cost)
# the largest array to_dense(), dequantize() and a conj/neg numpy() build from sizes in
# the file: 2x the largest real tensor (a 128k x 16k bfloat16 embedding, 4 GiB)
class Limits(
    collections.namedtuple(
        "Limits",
        [
            "max_pickle_bytes",
            "max_memo",
            "max_depth",
            "max_nodes",
            "max_zip_members",
            "max_marks",
            "max_key_nodes",
            "max_hash_collisions",
            "max_interpolated_bytes",
            "max_directory_bytes",
            "max_text_bytes",
            "max_text_nodes",
            "max_dense_bytes",
        ],
        defaults=[
            1 << 30,  # max_pickle_bytes
            50_000_000,  # max_memo
            200,  # max_depth
            50_000_000,  # max_nodes
            10_000_000,  # max_zip_members
            10_000,  # max_marks
            10_000,  # max_key_nodes
            1_000_000,  # max_hash_collisions
            16 << 20,  # max_interpolated_bytes
            1 << 29,  # max_directory_bytes
            16 << 20,  # max_text_bytes
            250_000,  # max_text_nodes
            8 << 30,  # max_dense_bytes
        ],
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
            parts as hashing and comparing visit them (all the keys of one pickle
            together: ``max_nodes``).
        max_hash_collisions: comparisons, in one pickle or text, of a key inserted into a
            container with the keys already there that share its hash, weighted by key
            cost (integers, floats and tuples hash the same in every process: hash
            flooding); ``ckptpeek.unpickle.KeyGuard`` counts them.
        max_interpolated_bytes: text OmegaConf interpolations of one pickle may produce.
        max_directory_bytes: the size of a ZIP central directory (read into memory).
        max_text_bytes: a sidecar, Hydra config or other text file the catalog reads.
        max_text_nodes: nodes a YAML/JSON text may build, aliases expanded.
        max_dense_bytes: an array a tensor method allocates whole (``to_dense()``,
            ``dequantize()``, ``numpy()`` of a tensor with its conj/neg bit set, so a
            copy): its size comes from the file, its bytes need not be in it. Tensor
            methods take ``max_bytes=`` to override it.
    """

    __slots__ = ()


DEFAULT_LIMITS: Final = Limits()
