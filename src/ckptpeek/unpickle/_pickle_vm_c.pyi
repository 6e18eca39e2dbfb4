"""Type stub of the optional Cython engine (same contract as ``pickle_vm.run_pickle``)."""

from collections.abc import Callable
from typing import Any, Final

from .context import PickleResult
from .opcodes import Limits

ENGINE: Final[str]
SPEC_DIGEST: Final[str]

def run_pickle(
    data: bytes,
    *,
    persistent_load: Callable[[Any], Any] | None = ...,
    strict: bool = ...,
    limits: Limits = ...,
    encoding: str = ...,
) -> PickleResult: ...
