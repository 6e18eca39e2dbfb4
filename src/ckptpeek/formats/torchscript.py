"""TorchScript archives (being written)."""

from __future__ import annotations

from ..errors import UnsupportedError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..checkpoint import Checkpoint
    from . import ReadOptions


def read(source: object, directory: object, opts: ReadOptions) -> Checkpoint:
    raise UnsupportedError("a TorchScript archive cannot be read yet", code="torchscript-archive")
