"""safetensors files (being written)."""

from __future__ import annotations

from ..errors import UnsupportedError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..checkpoint import Checkpoint
    from . import ReadOptions


def read(source: object, opts: ReadOptions) -> Checkpoint:
    raise UnsupportedError("a safetensors file cannot be read yet", code="safetensors-format")
