"""Hugging Face sharded checkpoints: an index JSON naming the shard of every tensor.

``model.safetensors.index.json`` / ``pytorch_model.bin.index.json`` (written by
``transformers``' ``save_pretrained`` / ``huggingface_hub.split_*_state_dict_into_shards``)::

    {"metadata": {"total_size": 123456},
     "weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors", ...}}

``read_path`` opens every shard the (selected) tensors live in - safetensors shards with
:mod:`.safetensors`, anything else (``torch.save`` zip ``.bin`` shards) through
the reader table (``formats.read``, passed in by it) with the caller's engine,
strictness and limits - and presents
one :class:`Checkpoint`:

- ``root``: ``{tensor_name: TensorRef}`` in ``weight_map`` order (each ``TensorRef``
  reads from its own shard, lazily);
- ``format``: ``"sharded"``; ``path``: the index; ``file_size``: index + shards;
  ``bytes_read``: index + every shard, live (tensor reads count);
- ``members``: ``"index"`` (the index file name), ``"metadata"`` (the index's
  ``metadata`` object, or ``None``), ``"weight_map"`` (tensor -> shard file, for the
  tensors in ``root``) and ``"shards"`` (shard file -> the format it was read as);
- ``globals()``: what the pickles of ``.bin`` shards name (union);
- ``close()`` closes every shard.

Checks: the index is a JSON object (at most ``MAX_INDEX_BYTES``) whose ``weight_map``
maps strings to strings; shard names are relative paths that stay inside the index's
directory lexically (no absolute path, drive, ``..`` or backslash; symlinks are followed
- the Hugging Face cache links shards into ``blobs/``); every shard exists and is a file
(not another index); every ``weight_map`` entry is a tensor of its shard. Tensors a shard
holds beyond the ``weight_map`` are ignored, as ``transformers`` does.

``select`` filters tensor names: only shards holding selected tensors are opened, and
``.bin`` shards skip the pickled values of other tensors.
"""

from __future__ import annotations

import json
import ntpath
import os
from collections.abc import Callable, Mapping

from ckptpeek.checkpoint import Checkpoint
from ckptpeek.errors import CheckpointError, error
from ckptpeek.io.sniff import sniff
from ckptpeek.io.source import ByteSource
from ckptpeek.tensor import TensorRef

from . import safetensors as _safetensors
from .options import ReadOptions

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from typing import Any

__all__ = ("read_path", "MAX_INDEX_BYTES")

#: the largest index read (a 1T-parameter model's index is a few MB)
MAX_INDEX_BYTES = 100_000_000


class _Shards:
    """The ``source`` of a sharded Checkpoint: the index plus every shard opened."""

    def __init__(self, path: str, index_size: int, index_read: int) -> None:
        self.path = path
        self._index_size = index_size
        self._extra_read = index_read  # the index, and shard headers sniffed before opening
        self.shards: dict[str, Checkpoint] = {}
        self.closed = False

    @property
    def size(self) -> int:
        return self._index_size + sum(c.file_size for c in self.shards.values())

    @property
    def bytes_read(self) -> int:
        return self._extra_read + sum(c.bytes_read for c in self.shards.values())

    def close(self) -> None:
        for c in self.shards.values():
            c.close()
        self.closed = True


def _read_index(path: str) -> tuple[dict[str, Any], int, int]:
    with ByteSource(path) as src:
        if src.size > MAX_INDEX_BYTES:
            raise error(
                "sharded-index-too-large",
                f"sharded index is {src.size} bytes; at most {MAX_INDEX_BYTES} are read",
                path=path,
            )
        raw = src.read_at(0, src.size, what="sharded index")
        size, nread = src.size, src.bytes_read
    try:
        index = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise error(
            "sharded-bad-index",
            f"sharded index is not UTF-8: {exc.reason}",
            path=path,
            offset=exc.start,
        ) from None
    except json.JSONDecodeError as exc:
        raise error(
            "sharded-bad-index",
            f"sharded index is not valid JSON: {exc.msg}",
            path=path,
            offset=exc.pos,
        ) from None
    except (ValueError, RecursionError) as exc:
        raise error(
            "sharded-bad-index", f"sharded index is not valid JSON: {type(exc).__name__}", path=path
        ) from None
    if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
        raise error(
            "sharded-bad-index",
            'sharded index must be a JSON object with a "weight_map" object',
            path=path,
        )
    bad = next(((k, v) for k, v in index["weight_map"].items() if not isinstance(v, str)), None)
    if bad is not None:
        raise error(
            "sharded-bad-index",
            f"weight_map[{bad[0]!r}] must be a shard file name, got {bad[1]!r:.40}",
            path=path,
        )
    metadata = index.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise error("sharded-bad-index", 'the index\'s "metadata" must be an object', path=path)
    return index, size, nread


def _shard_path(directory: str, name: str, index_path: str) -> str:
    """``directory/name`` for a shard name that stays inside ``directory`` (lexically)."""
    parts = name.split("/")
    if (
        not name
        or "\\" in name
        or "\0" in name
        or os.path.isabs(name)
        or ntpath.isabs(name)
        or ntpath.splitdrive(name)[0]
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise error(
            "sharded-bad-shard-name",
            f"shard name {name[:200]!r} is not a relative path inside the index's directory",
            path=index_path,
        )
    return os.path.join(directory, *parts)


def _open_shard(
    path: str,
    name: str,
    opts: ReadOptions,
    index_path: str,
    select: frozenset[str] | None,
    read: Callable[[str, ReadOptions], Checkpoint],
    seen: dict[tuple[int, int], str],
) -> tuple[Checkpoint, int]:
    """Open one shard; returns it and the bytes read to recognise it beyond its own count.

    ``seen`` maps the identity of every shard opened so far to its name: an index naming
    one file under two names (symlinks, hard links) would have it read, and its limits
    spent, once per name - a small index multiplying one big header - and is refused."""
    if not os.path.isfile(path):
        raise error(
            "sharded-missing-shard",
            f"shard {name!r} named by the index does not exist (or is no file)",
            path=index_path,
        )
    src = ByteSource(path)
    identity = src.identity
    if identity is not None:
        other = seen.setdefault(identity, name)
        if other != name:
            src.close()
            raise error(
                "sharded-duplicate-shard",
                f"shards {other!r} and {name!r} named by the index are the same file",
                path=index_path,
            )
    try:
        kind = sniff(src)
        if kind == "safetensors":
            return _safetensors.read(
                src, ReadOptions(opts.strict, opts.engine, opts.limits, select)
            ), 0
        if kind == "json":
            raise error("sharded-bad-shard", "a shard is itself a sharded index", path=path)
    except CheckpointError as exc:
        src.close()
        exc.located(path=path)
        raise
    except BaseException:
        src.close()
        raise
    sniffed = src.bytes_read
    src.close()
    return read(path, ReadOptions(opts.strict, opts.engine, opts.limits, select)), sniffed


def read_path(
    path: str, opts: ReadOptions, read: Callable[[str, ReadOptions], Checkpoint]
) -> Checkpoint:
    """Read a Hugging Face ``*.index.json`` and the shards it names into one Checkpoint;
    ``read`` opens each shard (the reader table, ``formats.read``)."""
    index, index_size, index_read = _read_index(path)
    weight_map: dict[str, str] = index["weight_map"]
    directory = os.path.dirname(os.path.abspath(path))
    select = opts.select

    wanted: dict[str, list[str]] = {}  # shard -> its tensors, in first-use order
    shard_paths: dict[str, str] = {}
    for tensor, shard in weight_map.items():
        if shard not in shard_paths:
            shard_paths[shard] = _shard_path(directory, shard, path)
        if select is None or tensor in select:
            wanted.setdefault(shard, []).append(tensor)

    source = _Shards(path, index_size, index_read)
    seen: dict[tuple[int, int], str] = {}
    try:
        for shard, tensors in wanted.items():
            ckpt, sniffed = _open_shard(
                shard_paths[shard],
                shard,
                opts,
                path,
                None if select is None else frozenset(tensors),
                read,
                seen,
            )
            source.shards[shard] = ckpt
            source._extra_read += sniffed
            if not isinstance(ckpt.root, Mapping):
                raise error(
                    "sharded-bad-shard",
                    f"shard {shard!r} holds a {type(ckpt.root).__name__}, not a "
                    f"mapping of tensor names",
                    path=ckpt.path,
                )
        root: dict[str, TensorRef] = {}
        where: dict[str, str] = {}
        globals_: dict[tuple[str, str], bool] = {}
        for ckpt in source.shards.values():
            for g, safe in ckpt._globals.items():
                globals_[g] = globals_.get(g, True) and safe
        for tensor, shard in weight_map.items():
            if select is not None and tensor not in select:
                continue
            shard_root = source.shards[shard].root
            if tensor not in shard_root:
                raise error(
                    "sharded-missing-tensor",
                    f"the index puts tensor {tensor!r} in shard {shard!r}, which "
                    f"has no such tensor",
                    path=source.shards[shard].path,
                )
            value = shard_root[tensor]
            if not isinstance(value, TensorRef):
                raise error(
                    "sharded-bad-shard",
                    f"{tensor!r} in shard {shard!r} is a {type(value).__name__}, not a tensor",
                    path=source.shards[shard].path,
                )
            root[tensor] = value
            where[tensor] = shard
    except BaseException:
        source.close()
        raise
    return Checkpoint(
        format="sharded",
        backend=opts.engine.ENGINE,
        root=root,
        source=source,
        globals_=globals_,
        limits=opts.limits,
        members={
            "index": os.path.basename(path),
            "metadata": index.get("metadata"),
            "weight_map": where,
            "shards": {s: c.format for s, c in source.shards.items()},
        },
        selected=select if len(root) != len(weight_map) else None,
    )
