"""Picks the pickle engine once: the Cython one when built and current, else pure Python.

``CKPTPEEK_NO_EXTENSIONS=1`` forces the pure engine; ``CKPTPEEK_REQUIRE_EXTENSIONS=1``
turns a missing or stale extension into an ImportError (CI sets it, so a silent
fallback cannot pass). An extension built from another opcode table is stale: it must
report the same ``SPEC_DIGEST`` as ``opcodes.py``.
"""

from __future__ import annotations

from types import ModuleType

from ckptpeek import _extensions

from . import pickle_vm
from .opcodes import SPEC_DIGEST

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from typing import Final

__all__ = ("BACKEND", "NATIVE_ERROR", "engine")


def _stale(native: ModuleType) -> str | None:
    built = getattr(native, "SPEC_DIGEST", "?")
    if built != SPEC_DIGEST:
        return (
            f"extension is stale: built from opcode table {built}, package has "
            f"{SPEC_DIGEST}; rebuild with pip install ."
        )
    return None


_native, NATIVE_ERROR = _extensions.load(f"{__package__}._pickle_vm_c", _stale)

BACKEND: Final[str] = "native" if _native is not None else "python"
_ENGINES: Final = {"python": pickle_vm, **({"native": _native} if _native is not None else {})}


def engine(name: str | None = None) -> ModuleType:
    """The engine module to run (``run_pickle``): ``None`` means the default."""
    if name is None:
        return _ENGINES[BACKEND]
    try:
        return _ENGINES[name]
    except KeyError:
        if name == "native":
            raise ValueError(f"the native engine is not available: {NATIVE_ERROR}") from None
        raise ValueError(f"unknown engine {name!r}: use 'python' or 'native'") from None
