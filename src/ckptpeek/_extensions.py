"""Loads ckptpeek's optional C extensions, each for the one module that selects it.

``unpickle/engine.py`` picks the pickle engine (``unpickle._pickle_vm_c``) and
``io/zipdir.py`` the ZIP directory parser (``io._zipdir_c``), independently of each
other. ``CKPTPEEK_NO_EXTENSIONS=1`` disables both; ``CKPTPEEK_REQUIRE_EXTENSIONS=1``
turns a missing, unimportable or stale extension into an ImportError at import (CI
sets it, so a silent fallback to pure Python cannot pass).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("truthy", "load")


def truthy(name: str) -> bool:
    """Whether environment variable ``name`` is set to something other than 0/false/no."""
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def load(
    name: str, check: Callable[[ModuleType], str | None] | None = None
) -> tuple[ModuleType | None, str | None]:
    """``(module, None)`` or ``(None, why not)`` for the extension module ``name``.

    ``check`` returns a reason to refuse a module that imported (a stale build).
    With ``CKPTPEEK_REQUIRE_EXTENSIONS`` set, a refusal raises ImportError instead.
    """
    module, reason = _load(name, check)
    if module is None and truthy("CKPTPEEK_REQUIRE_EXTENSIONS"):
        raise ImportError(f"CKPTPEEK_REQUIRE_EXTENSIONS is set but {name} is unusable: {reason}")
    return module, reason


def _load(
    name: str, check: Callable[[ModuleType], str | None] | None
) -> tuple[ModuleType | None, str | None]:
    if truthy("CKPTPEEK_NO_EXTENSIONS"):
        return None, "disabled by CKPTPEEK_NO_EXTENSIONS"
    if importlib.util.find_spec(name) is None:
        return None, (
            "extension not built (install without CKPTPEEK_NO_EXTENSIONS and with a C compiler)"
        )
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        return None, f"extension not importable: {exc}"
    reason = check(module) if check is not None else None
    return (None, reason) if reason else (module, None)
