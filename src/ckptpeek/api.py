"""``open`` and ``load_checkpoint``: sniff the format, run its reader, return a Checkpoint."""

from __future__ import annotations

import os
from collections.abc import Iterable
TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from typing import Any, BinaryIO

from . import _backend
from .checkpoint import Checkpoint
from .errors import CheckpointError, UnsupportedError
from .formats import torch_zip
from .opcodes import DEFAULT_LIMITS, Limits
from .sniff import sniff
from .source import ByteSource
from .zipdir import read_directory

__all__ = ("open_checkpoint", "load_checkpoint")

if TYPE_CHECKING:
    Source = str | os.PathLike[str] | BinaryIO

_NOT_YET = {
    "torch-legacy": "a legacy (pre-1.6 / _use_new_zipfile_serialization=False) torch.save file",
    "safetensors": "a safetensors file",
    "tar": "a tar-based torch.save file (torch < 0.4)",
}


def open_checkpoint(source: Source, *, strict: bool = False, engine: str | None = None,
                    limits: Limits = DEFAULT_LIMITS,
                    select: Iterable[Any] | None = None) -> Checkpoint:
    """Open a checkpoint header-only: the ZIP directory and the pickle, no tensor data.

    Args:
        source: a path or a seekable binary file object.
        strict: raise ``UnsafePickleError`` for any global outside the registry
            instead of recording a ``Placeholder``.
        engine: ``"python"`` or ``"native"``; ``None`` picks ``ckptpeek.BACKEND``.
        limits: resource guards (``ckptpeek.Limits``).
        select: top-level keys to read (e.g. ``ckptpeek.SUMMARY_KEYS`` or
            ``["epoch", "global_step", "callbacks"]``). The values of other keys are
            skipped at opcode speed - not built, not validated - and absent from
            ``root``; ``Checkpoint.selected`` records the selection. What is read is
            exactly what a full read gives for those keys.

    Raises:
        FormatError: not a checkpoint, or corrupt/truncated (``code`` says which).
        UnsupportedError: a format or feature not read yet.
        UnsafePickleError: ``strict=True`` and the pickle names an unknown global.
        LimitError: a resource guard tripped.
        OSError: the file cannot be opened.
    """
    vm = _backend.engine(engine)
    src = ByteSource(source)
    try:
        kind = sniff(src)
        if kind == "zip":
            directory = read_directory(src, max_members=limits.max_zip_members,
                                       fast_parse=getattr(vm, "parse_central_directory", None))
            return torch_zip.read(src, directory, strict=strict, engine=vm, limits=limits,
                                  select=None if select is None else frozenset(select))
        raise UnsupportedError(f"{_NOT_YET[kind]} cannot be read yet", code=f"{kind}-format",
                               path=src.path)
    except CheckpointError as exc:
        src.close()
        raise exc.located(path=src.path)
    except BaseException:
        src.close()
        raise


def load_checkpoint(path: Source, *, strict: bool = False, engine: str | None = None,
                    limits: Limits = DEFAULT_LIMITS, map_location: Any = None) -> Any:
    """Drop-in for ``torch.load(path, map_location="cpu")`` in catalog code.

    Returns the same nested structure and non-tensor values torch returns, with a
    ``TensorRef`` wherever torch gives a tensor. ``map_location`` is accepted for
    signature compatibility and ignored: nothing is loaded onto any device.
    """
    with open_checkpoint(path, strict=strict, engine=engine, limits=limits) as ckpt:
        return ckpt.root
