"""``torch.load`` as the last resort: the only module that imports torch.

``open(path, fallback="torch")`` (the default of ``load_checkpoint`` when torch is
installed) comes here only after the inspector raised ``UnsupportedError`` - never for
corrupt input (``FormatError``), unsafe input (``UnsafePickleError``) or a tripped limit.
It runs ``torch.load(path, mmap=True, weights_only=True, map_location="cpu")``;
``weights_only=False`` (which executes the pickle) only with ``trust=True``. The
result is converted to the usual ``Checkpoint``/``TensorRef`` interface, with
``Checkpoint.backend == "torch"``; dense tensors keep their storages (memory-mapped by
torch) and ``numpy()`` reads them; other tensor layouts stay torch tensors.
"""

from __future__ import annotations

import os
import sys

from .checkpoint import Checkpoint
from .errors import UnsupportedError, error
from .tensor import StorageRef, TensorRef
from .torch_types import DTYPES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ckptpeek.limits import Limits

__all__ = ("load_with_torch", "torch_available")


def torch_available() -> bool:
    """Whether torch can be imported (checked without importing it)."""
    import importlib.util  # noqa: PLC0415

    if "torch" in sys.modules:
        return sys.modules["torch"] is not None  # None: imports of torch are blocked
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


class _TorchStorages:
    """Storage bytes of the tensors torch loaded (a ``StorageReader``)."""

    byteorder = sys.byteorder  # torch swaps to native order on load

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.storages: dict[str, Any] = {}

    def storage_view(self, storage: StorageRef, start: int, stop: int) -> memoryview:
        import torch  # noqa: PLC0415 - this module exists to use torch

        untyped = self.storages[storage.key]
        flat = torch.empty(0, dtype=torch.uint8).set_(untyped)
        return memoryview(flat.numpy()[start:stop])

    def storage_location(self, storage: StorageRef) -> tuple[None, int, int]:
        return None, 0, storage.nbytes


class _Source:
    """What a Checkpoint needs of its file when torch did the reading."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.size = os.path.getsize(path) if path else 0
        self.bytes_read = self.size  # torch maps the whole file
        self.closed = False

    def close(self) -> None:
        self.closed = True


def _to_ref(tensor: Any, storages: _TorchStorages) -> Any:
    import torch  # noqa: PLC0415

    if tensor.layout != torch.strided or tensor.is_quantized or tensor.is_nested:
        return tensor  # other layouts stay torch tensors
    dtype = DTYPES.get(str(tensor.dtype).removeprefix("torch."))
    if dtype is None:
        return tensor
    if tensor.device.type == "meta":
        ref = TensorRef(
            storage=None,
            dtype=dtype,
            shape=tuple(tensor.shape),
            stride=tensor.stride(),
            storage_offset=tensor.storage_offset(),
            requires_grad=tensor.requires_grad,
            kind="meta",
        )
    else:
        untyped = tensor.untyped_storage()
        key = str(untyped.data_ptr())
        storages.storages[key] = untyped
        storage = StorageRef(key, DTYPES["uint8"], untyped.nbytes(), str(tensor.device), storages)
        ref = TensorRef(
            storage=storage,
            dtype=dtype,
            shape=tuple(tensor.shape),
            stride=tensor.stride(),
            storage_offset=tensor.storage_offset(),
            requires_grad=tensor.requires_grad,
        )
    if isinstance(tensor, torch.nn.Parameter):
        ref.is_parameter = True
        ref.type_name = "torch.nn.parameter.Parameter"
    return ref


def _convert(obj: Any, storages: _TorchStorages, limits: Limits) -> Any:
    """Replace torch tensors by TensorRefs in dicts, lists and tuples (iteratively)."""
    import torch  # noqa: PLC0415

    if isinstance(obj, torch.Tensor):
        return _to_ref(obj, storages)
    memo: dict[int, Any] = {}

    def shallow(o: Any) -> Any:
        if isinstance(o, torch.Tensor):
            return _to_ref(o, storages)
        if type(o) in (dict, list, tuple) or isinstance(o, dict):
            if id(o) not in memo:
                memo[id(o)] = None
                todo.append(o)
        return o

    todo = [obj]
    done = 0
    while todo:
        o = todo.pop()
        done += 1
        if done > limits.max_nodes:
            break
        if isinstance(o, dict):
            for k, v in list(o.items()):
                o[k] = shallow(v)
        elif type(o) is list:
            for i, v in enumerate(o):
                o[i] = shallow(v)
        elif type(o) is tuple:
            for v in o:
                shallow(v)
    return _fix_tuples(obj, storages)


def _fix_tuples(obj: Any, storages: _TorchStorages) -> Any:
    """Tuples are immutable: rebuild those that hold tensors (bounded recursion)."""
    import torch  # noqa: PLC0415

    def fix(o: Any, depth: int) -> Any:
        if depth > 64:
            return o
        if isinstance(o, torch.Tensor):
            return _to_ref(o, storages)
        if type(o) is tuple:
            return tuple(fix(v, depth + 1) for v in o)
        if isinstance(o, dict):
            for k, v in list(o.items()):
                if type(v) is tuple or isinstance(v, (dict, list)):
                    o[k] = fix(v, depth + 1)
            return o
        if type(o) is list:
            for i, v in enumerate(o):
                if type(v) is tuple or isinstance(v, (dict, list)):
                    o[i] = fix(v, depth + 1)
            return o
        return o

    return fix(obj, 0)


def load_with_torch(
    source: Any, *, trust: bool, limits: Limits, format: str, cause: UnsupportedError
) -> Checkpoint:
    """Read ``source`` with torch.load and present it as a Checkpoint.

    Raises:
        UnsupportedError: torch is not installed (``cause``, saying torch would help).
    """
    if not torch_available():
        raise error(
            cause.code,
            f"{cause.msg}; installing torch (pip install 'ckptpeek[torch]') would let "
            f"fallback='torch' read it",
            path=cause.path,
            member=cause.member,
            offset=cause.offset,
        ) from cause
    import torch  # noqa: PLC0415 - the one place ckptpeek imports torch

    path = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
    if hasattr(source, "seek"):
        source.seek(0)
    try:
        obj = torch.load(source, mmap=path is not None, weights_only=not trust, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds; all mean "could not"
        hint = (
            "" if trust else " (weights_only=True; trust=True allows more, running the file's code)"
        )
        raise error(
            "torch-refused",
            f"{cause.msg}; torch.load could not read it either{hint}: "
            f"{type(exc).__name__}: {str(exc)[:300]}",
            path=cause.path,
        ) from exc
    storages = _TorchStorages(path)
    root = _convert(obj, storages, limits)
    return Checkpoint(
        format=_format_of(path, format),
        backend="torch",
        root=root,
        source=_Source(path),
        globals_={},
        limits=limits,
        members={"fallback_reason": str(cause)},
    )


def _format_of(path: str | None, default: str) -> str:
    """The format ckptpeek recognises the file as, though it could not read it."""
    from ckptpeek.io.sniff import sniff  # noqa: PLC0415
    from ckptpeek.io.source import ByteSource  # noqa: PLC0415

    from .errors import CheckpointError  # noqa: PLC0415

    if path is None:
        return default
    try:
        with ByteSource(path) as src:
            kind = sniff(src)
    except (CheckpointError, OSError):
        return default
    return {"zip": "torch-zip", "tar": "torch-legacy"}.get(kind, kind)
