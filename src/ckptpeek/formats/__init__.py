"""One reader per checkpoint format; each turns its input into a :class:`Checkpoint`.

The interface every reader follows (``api.open_checkpoint`` dispatches to them):

- file formats: ``read(source: ByteSource, opts: ReadOptions) -> Checkpoint``
  (``torch_zip`` and ``torchscript`` also take the ``ZipDirectory`` already read:
  ``read(source, directory, opts)``);
- directory formats: ``read_path(path: str, opts: ReadOptions) -> Checkpoint``.

A reader raises ``CheckpointError`` subclasses that name the file (and member and
offset where it can); it reads headers only, and gives tensors ``StorageRef``s whose
``reader`` (a ``tensor.StorageReader``) reads their bytes on demand.
"""

from __future__ import annotations

from ckptpeek._frozen import Frozen

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

    from ckptpeek.unpickle.opcodes import Limits

__all__ = ("ReadOptions",)


class ReadOptions(Frozen):
    """What the caller of ``open`` asked for, handed to every reader.

    Attributes:
        strict: unknown globals raise instead of becoming placeholders.
        engine: the pickle engine module (``run_pickle(data, persistent_load=..., strict=...,
            limits=..., select=..., extra_globals=...)``).
        limits: resource guards.
        select: top-level keys to read, or ``None`` for everything.
    """

    __slots__ = ("strict", "engine", "limits", "select")
    strict: bool
    engine: ModuleType
    limits: Limits
    select: frozenset[Any] | None

    def __init__(
        self, strict: bool, engine: ModuleType, limits: Limits, select: frozenset[Any] | None
    ) -> None:
        super().__init__(strict, engine, limits, select)

    def run_pickle(
        self,
        data: bytes,
        persistent_load: Any = None,
        *,
        select: Any = "default",
        extra_globals: Any = None,
        encoding: str = "utf-8",
    ) -> Any:
        """Run the chosen engine with these options (``select`` defaults to the caller's)."""
        return self.engine.run_pickle(
            data,
            persistent_load=persistent_load,
            strict=self.strict,
            limits=self.limits,
            select=self.select if select == "default" else select,
            extra_globals=extra_globals,
            encoding=encoding,
        )
