"""``Frozen``: the base of ckptpeek's small immutable value types.

Registry entries, dtypes and devices are shared by every load, so nothing a file does
may change them; they are also created at import, where ``dataclasses`` would cost more
than the rest of the package. A subclass lists its fields in ``__slots__`` and calls
``Frozen.__init__`` with them in order.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ("Frozen",)


class Frozen:
    __slots__ = ()

    def __init__(self, *values: Any) -> None:
        for name, value in zip(self._fields(), values, strict=True):
            object.__setattr__(self, name, value)

    @classmethod
    def _fields(cls) -> tuple[str, ...]:
        return tuple(
            name
            for klass in reversed(cls.__mro__)
            for name in klass.__dict__.get("__slots__", ())
            if name != "__weakref__"
        )

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields())

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._values()))

    def __repr__(self) -> str:
        inner = ", ".join(
            f"{n}={v!r}" for n, v in zip(self._fields(), self._values(), strict=False)
        )
        return f"{type(self).__name__}({inner})"

    def __reduce__(self) -> Any:
        return (type(self), self._values())
