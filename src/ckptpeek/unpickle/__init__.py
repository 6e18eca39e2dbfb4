"""The restricted pickle interpreter: bytes in, an object graph out; no files, no formats.

- ``opcodes.py``        THE opcode table and opcode groups (``SPEC_DIGEST``, with ``Limits``).
- ``pickle_vm.py``      the pure-Python loop, the reference engine.
- ``_pickle_vm_c``      the same loop in Cython (``native/unpickle/_pickle_vm_c.pyx``).
- ``engine.py``         picks the engine once (``BACKEND``).
- ``keys.py``           THE key guard (``KeyGuard``): what hashing file-made keys may cost.
- ``context.py``        per-run state and the object-level semantics both engines share
                        (globals, calls, BUILD, persistent ids); ``drive``.
- ``messages.py``       every error both engines raise, worded once.
- ``select.py``         selective reads (``select=``) and their exactness check.
- ``registry.py``       the known globals: ``standins.py`` (stdlib, numpy, OmegaConf,
                        Lightning, ``Placeholder``; ``interpolation.py`` for ``${...}``) and
                        ``torch_rebuild.py`` (torch's ``_rebuild_*`` -> ``TensorRef``).

Import rule: ``unpickle`` imports ``ckptpeek.errors``, ``ckptpeek._frozen``,
``ckptpeek._extensions`` and the tensor model (``ckptpeek.tensor``, ``ckptpeek.torch_types``);
never ``io``, ``formats`` or anything above them.
"""

from .interpolation import resolve_interpolations
from .keys import KeyGuard, key_cost

__all__ = ("resolve_interpolations", "KeyGuard", "key_cost")
