"""The one registry of globals a checkpoint may name, and how names are normalised.

Both interpreters resolve ``GLOBAL``/``STACK_GLOBAL`` here. A hit returns a frozen
:class:`~ckptpeek.standins.KnownGlobal` (or an immutable value such as a dtype); a miss
returns ``None`` and the interpreter makes a placeholder (or, in strict mode, raises).
"""

from __future__ import annotations

from types import MappingProxyType

from .standins import STDLIB_GLOBALS
from .torch_rebuild import TORCH_GLOBALS

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from typing import Any, Final

__all__ = ("KNOWN_GLOBALS", "resolve", "normalise")

KNOWN_GLOBALS: Final = MappingProxyType({**STDLIB_GLOBALS, **TORCH_GLOBALS})

# Python 2 module names that protocol 0-2 pickles still use (pickle's fix_imports).
_PY2_MODULES: Final = MappingProxyType(
    {
        "__builtin__": "builtins",
        "copy_reg": "copyreg",
    }
)


# Python 2 builtins that protocol 0-2 pickles name (what pickle's fix_imports maps).
_PY2_NAMES: Final = MappingProxyType(
    {
        ("__builtin__", "long"): ("builtins", "int"),
        ("__builtin__", "unicode"): ("builtins", "str"),
        ("__builtin__", "basestring"): ("builtins", "str"),
    }
)


def normalise(module: str, name: str) -> tuple[str, str]:
    """The Python 3 spelling of a global a (possibly Python 2) pickle names."""
    return _PY2_NAMES.get((module, name)) or (_PY2_MODULES.get(module, module), name)


def resolve(module: str, name: str) -> Any | None:
    """The safe stand-in for ``module.name``, or ``None`` if the name is unknown."""
    return KNOWN_GLOBALS.get(normalise(module, name))
