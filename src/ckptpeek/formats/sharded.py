"""Hugging Face sharded checkpoints (being written)."""

from __future__ import annotations

from ..errors import UnsupportedError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..checkpoint import Checkpoint
    from . import ReadOptions


def read_path(path: str, opts: ReadOptions) -> Checkpoint:
    raise UnsupportedError("a sharded checkpoint cannot be read yet", code="sharded-format")
