"""One reader per checkpoint format; each turns its input into a :class:`Checkpoint`.

``read(source, opts)`` below is the reader table: it sniffs the format and runs its
reader (``api.open_checkpoint`` and the sharded reader, for each shard, both call it).
The interface every reader follows:

- file formats: ``read(source: ByteSource, opts: ReadOptions) -> Checkpoint``
  (``torch_zip`` and ``torchscript`` also take the ``ZipDirectory`` already read:
  ``read(source, directory, opts)``);
- directory formats: ``read_path(path: str, opts: ReadOptions) -> Checkpoint``
  (``sharded`` also takes the dispatcher, to open each shard: ``read_path(path, opts, read)``).

Import rule: readers import ``io``, ``unpickle``, the tensor model, ``checkpoint`` and
``options``; never this module (the table), ``api``, ``summary`` or the catalog.

A reader raises ``CheckpointError`` subclasses that name the file (and member and
offset where it can); it reads headers only, and gives tensors ``StorageRef``s whose
``reader`` (a ``tensor.StorageReader``) reads their bytes on demand.
"""

from __future__ import annotations

import os

from ckptpeek.checkpoint import Checkpoint
from ckptpeek.errors import CheckpointError, error
from ckptpeek.io.sniff import sniff
from ckptpeek.io.source import ByteSource
from ckptpeek.io.zipdir import read_directory

from . import torch_zip
from .options import ReadOptions

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from typing import BinaryIO

    Source = str | os.PathLike[str] | BinaryIO

__all__ = ("ReadOptions", "read")


def read(source: Source, opts: ReadOptions) -> Checkpoint:
    """Recognise the format of ``source`` (a path, a directory or a file object) from its
    bytes and run its reader: the one dispatch ``api.open_checkpoint`` and the sharded
    reader (for each shard) share."""
    if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
        return _read_directory_checkpoint(os.fspath(source), opts)
    src = ByteSource(source)
    try:
        kind = sniff(src)
        if kind == "zip":
            directory = read_directory(
                src,
                max_members=opts.limits.max_zip_members,
                max_directory_bytes=opts.limits.max_directory_bytes,
            )
            if torch_zip.is_torchscript(directory, torch_zip.find_prefix(directory)):
                from . import torchscript  # noqa: PLC0415 - loaded for its format only

                return torchscript.read(src, directory, opts)
            return torch_zip.read(src, directory, opts)
        if kind == "json":
            src.close()
            from . import sharded  # noqa: PLC0415 - loaded for its format only

            return sharded.read_path(_path_of(source, "a sharded checkpoint index"), opts, read)
        if kind == "safetensors":
            from . import safetensors  # noqa: PLC0415 - loaded for its format only

            return safetensors.read(src, opts)
        from . import torch_legacy  # noqa: PLC0415 - loaded for its format only

        return torch_legacy.read(src, opts)  # sniff() knows no other kinds
    except CheckpointError as exc:
        src.close()
        exc.located(path=src.path)
        raise
    except BaseException:
        src.close()
        raise


def _path_of(source: Source, what: str) -> str:
    if not isinstance(source, (str, os.PathLike)):
        raise error("needs-path", f"{what} refers to other files: open it by path")
    return os.fspath(source)


def _read_directory_checkpoint(path: str, opts: ReadOptions) -> Checkpoint:
    """A directory: a torch.distributed.checkpoint (``.metadata``) or a directory that
    holds one Hugging Face ``*.index.json``."""
    if os.path.isfile(os.path.join(path, ".metadata")):
        from . import dcp  # noqa: PLC0415 - loaded for its format only

        return dcp.read_path(path, opts)
    indexes = sorted(n for n in os.listdir(path) if n.endswith(".index.json"))
    if len(indexes) == 1:
        from . import sharded  # noqa: PLC0415 - loaded for its format only

        return sharded.read_path(os.path.join(path, indexes[0]), opts, read)
    raise error(
        "unknown-format",
        f"directory is no checkpoint ckptpeek knows: no .metadata (torch.distributed."
        f"checkpoint) and {'several' if indexes else 'no'} *.index.json (Hugging Face)",
        path=path,
    )
