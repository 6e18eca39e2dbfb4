"""Picks the pickle engine once: the Cython one when built and current, else pure Python.

``CKPTPEEK_NO_EXTENSIONS=1`` forces the pure engine; ``CKPTPEEK_REQUIRE_EXTENSIONS=1``
turns a missing or stale extension into an ImportError (CI sets it, so a silent
fallback cannot pass). An extension built from another opcode table is stale: it must
report the same ``SPEC_DIGEST`` as ``opcodes.py``.
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType
TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from typing import Final

from . import pickle_vm
from .opcodes import SPEC_DIGEST

__all__ = ("BACKEND", "NATIVE_ERROR", "engine")


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _load_native() -> tuple[ModuleType | None, str | None]:
    if _truthy("CKPTPEEK_NO_EXTENSIONS"):
        return None, "disabled by CKPTPEEK_NO_EXTENSIONS"
    if importlib.util.find_spec(f"{__package__}._pickle_vm_c") is None:
        return None, "extension not built (install without CKPTPEEK_NO_EXTENSIONS and with a C compiler)"
    try:
        from . import _pickle_vm_c as native  # noqa: PLC0415 - optional extension
    except ImportError as exc:
        return None, f"extension not importable: {exc}"
    if getattr(native, "SPEC_DIGEST", None) != SPEC_DIGEST:
        return None, (f"extension is stale: built from opcode table {getattr(native, 'SPEC_DIGEST', '?')}, "
                      f"package has {SPEC_DIGEST}; rebuild with pip install .")
    return native, None


_native, NATIVE_ERROR = _load_native()
if _native is None and _truthy("CKPTPEEK_REQUIRE_EXTENSIONS"):
    raise ImportError(f"CKPTPEEK_REQUIRE_EXTENSIONS is set but the native engine is unusable: "
                      f"{NATIVE_ERROR}")

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
