"""What the fallback tests share (their ``torch_load`` fixture is in conftest.py)."""

from __future__ import annotations

import os


def file_identity(source: object) -> object:
    """``(st_dev, st_ino)`` of a path or an open file (torch.load gets the descriptor the
    pre-flight read), else the object itself."""
    if isinstance(source, (str, os.PathLike)):
        st = os.stat(source)
    elif hasattr(source, "fileno"):
        st = os.fstat(source.fileno())
    else:
        return source
    return st.st_dev, st.st_ino
