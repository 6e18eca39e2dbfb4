"""``open`` and ``load_checkpoint``: sniff the format, run its reader, return a Checkpoint."""

from __future__ import annotations

import os
from collections.abc import Iterable

from ckptpeek.limits import DEFAULT_LIMITS, Limits
from ckptpeek.unpickle import engine as _engine

from .checkpoint import Checkpoint
from .errors import UnsupportedError
from .formats import ReadOptions, read

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from typing import Any, BinaryIO

__all__ = ("open_checkpoint", "load_checkpoint")

if TYPE_CHECKING:
    Source = str | os.PathLike[str] | BinaryIO


def open_checkpoint(
    source: Source,
    *,
    strict: bool = False,
    engine: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    select: Iterable[Any] | None = None,
    fallback: str | None = None,
    trust: bool = False,
) -> Checkpoint:
    """Open a checkpoint header-only: its directory and pickles, no tensor data.

    The format is recognised from the bytes (``Checkpoint.format``): ``torch-zip``
    (``torch.save``), ``torch-legacy`` (``torch.save`` before 1.6 or with
    ``_use_new_zipfile_serialization=False``), ``torchscript`` (``torch.jit.save``),
    ``safetensors``, ``sharded`` (a Hugging Face ``*.index.json``, or a directory holding
    one) and ``torch-dcp`` (a ``torch.distributed.checkpoint`` directory).

    Args:
        source: a path (file or checkpoint directory) or a seekable binary file object.
        strict: raise ``UnsafePickleError`` for any global outside the registry
            instead of recording a ``Placeholder``.
        engine: ``"python"`` or ``"native"``; ``None`` picks ``ckptpeek.BACKEND``.
        limits: resource guards (``ckptpeek.Limits``).
        select: top-level keys to read (e.g. ``ckptpeek.SUMMARY_KEYS`` or
            ``["epoch", "global_step", "callbacks"]``). The values of other keys are
            skipped at opcode speed - not built, not validated - and absent from
            ``root``; ``Checkpoint.selected`` records the selection. What is read is
            exactly what a full read gives for those keys.
        fallback: ``"torch"``: when ckptpeek meets a format or feature it does not read
            (an ``UnsupportedError`` that ``torch_bridge.FALLBACK`` lets fall back; never
            corrupt or unsafe input, a tripped limit or a refusal made for safety), use
            ``torch.load(mmap=False, weights_only=True, map_location="cpu")`` instead,
            after a pre-flight that holds every pickle torch would run to ckptpeek's
            limits; the result has ``backend == "torch"``. Needs torch installed.
            torch reads the storages into memory at load (never a mapping of the
            file, which a truncation would turn into SIGBUS): as much memory as the
            storages have bytes, which the pre-flight holds to the file's size.
        trust: with ``fallback="torch"``, allow ``weights_only=False`` - which runs the
            pickle's code. Only for files you trust.

    Raises:
        FormatError: not a checkpoint, or corrupt/truncated (``code`` says which).
        UnsupportedError: a format or feature not read yet.
        UnsafePickleError: ``strict=True`` and the pickle names an unknown global.
        LimitError: a resource guard tripped (also by the fallback's pre-flight).
        OSError: the file cannot be opened.
    """
    if fallback not in (None, "torch"):
        raise ValueError(f"fallback must be None or 'torch', not {fallback!r}")
    try:
        return read(
            source,
            ReadOptions(
                strict,
                _engine.engine(engine),
                limits,
                None if select is None else frozenset(select),
            ),
        )
    except UnsupportedError as exc:
        if fallback != "torch":
            raise
        from .torch_bridge import falls_back, load_with_torch  # noqa: PLC0415 - last resort

        if not falls_back(exc):  # refused for safety, not for a missing feature
            raise
        return load_with_torch(source, trust=trust, limits=limits, format="torch", cause=exc)


def load_checkpoint(
    path: Source,
    *,
    strict: bool = False,
    engine: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    map_location: Any = None,
    fallback: str | None = None,
    trust: bool = False,
) -> Any:
    """Drop-in for ``torch.load(path, map_location="cpu")`` in catalog code.

    Returns the same nested structure and non-tensor values torch returns, with a
    ``TensorRef`` wherever torch gives a tensor. ``map_location`` is accepted for
    signature compatibility and ignored: nothing is loaded onto any device. A file or
    feature ckptpeek does not read raises ``UnsupportedError`` saying what is missing:
    ``torch.load`` runs only when asked, as the last resort - ``fallback="torch"``, or
    ``fallback="auto"`` for ``"torch"`` when torch is installed (see ``open_checkpoint``).
    """
    if fallback == "auto":
        from .torch_bridge import torch_available  # noqa: PLC0415

        fallback = "torch" if torch_available() else None
    with open_checkpoint(
        path, strict=strict, engine=engine, limits=limits, fallback=fallback, trust=trust
    ) as ckpt:
        return ckpt.root
