"""Type stub of the optional Cython engine built from ``native/unpickle/_pickle_vm_c.pyx``
(same contract as ``pickle_vm.run_pickle``; ``tests/test_stubs.py`` checks both)."""

from collections.abc import Callable, Mapping
from typing import Any, Final

from ckptpeek.limits import Limits

from .context import PickleResult

ENGINE: Final[str]
SPEC_DIGEST: Final[str]

def run_pickle(
    data: bytes,
    *,
    persistent_load: Callable[[Any], Any] | None = ...,
    strict: bool = ...,
    limits: Limits = ...,
    encoding: str = ...,
    select: Any = ...,
    extra_globals: Mapping[tuple[str, str], Any] | None = ...,
) -> PickleResult: ...
