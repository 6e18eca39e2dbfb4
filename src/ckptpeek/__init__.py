"""ckptpeek: read what is inside PyTorch checkpoints without loading weights or importing torch.

>>> import ckptpeek
>>> with ckptpeek.open("epoch=3-step=1200.ckpt") as ckpt:
...     print(ckpt.get("epoch"), ckpt.summary().best_model_score)
"""

from __future__ import annotations

from ckptpeek._text import printable
from ckptpeek.limits import DEFAULT_LIMITS, Limits
from ckptpeek.unpickle.engine import BACKEND
from ckptpeek.unpickle.opcodes import SPEC_DIGEST
from ckptpeek.unpickle.standins import Placeholder

from .api import load_checkpoint, open_checkpoint
from .checkpoint import SUMMARY_KEYS, Checkpoint, GlobalInfo
from .errors import CheckpointError, FormatError, LimitError, UnsafePickleError, UnsupportedError
from .tensor import StorageRef, TensorRef
from .torch_types import Device, DType, Size

__version__ = "0.1.0"

open = open_checkpoint  # noqa: A001 - ckptpeek.open(path) is the documented entry point

__all__ = (
    "BACKEND",
    "Checkpoint",
    "CheckpointError",
    "DEFAULT_LIMITS",
    "DType",
    "Device",
    "FormatError",
    "GlobalInfo",
    "LimitError",
    "Limits",
    "Placeholder",
    "SPEC_DIGEST",
    "SUMMARY_KEYS",
    "Size",
    "StorageRef",
    "TensorRef",
    "UnsafePickleError",
    "UnsupportedError",
    "__version__",
    "load_checkpoint",
    "open",
    "open_checkpoint",
    "printable",
)
