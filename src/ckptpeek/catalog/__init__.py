"""ckptpeek.catalog: a catalog of the checkpoints under a training-outputs tree, without torch.

    >>> from ckptpeek.catalog import build_catalog
    >>> catalog = build_catalog("outputs")
    >>> catalog.best("val/hmean").relpath

Attributes are imported lazily so ``import ckptpeek.catalog.models`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = (
    "Architecture",
    "Catalog",
    "CatalogEntry",
    "MetadataSidecar",
    "NotACacheError",
    "Signature",
    "SignatureRules",
    "Signatures",
    "build_catalog",
)

_LAZY = {
    "Architecture": "models",
    "Catalog": "models",
    "CatalogEntry": "models",
    "MetadataSidecar": "models",
    "NotACacheError": "cache",
    "Signature": "models",
    "Signatures": "models",
    "SignatureRules": "signatures",
    "build_catalog": "build",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ckptpeek.catalog' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
