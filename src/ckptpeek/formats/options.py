"""``ReadOptions``: what the caller of ``open`` asked for, handed to every reader."""

from __future__ import annotations

from ckptpeek._frozen import Frozen

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

    from ckptpeek.limits import Limits

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
