"""Torch's ``_rebuild_*`` functions, re-done as constructors of :class:`TensorRef`.

Each takes the arguments ``Tensor.__reduce_ex__`` wrote (see ``torch/_tensor.py`` and
``torch/_utils.py``), checks their types, checks what torch.load checks of the tensor
they describe (``tensor.check_layout``: sizes, strides, offset, element count, the span
in its storage; quantizer parameters; sparse and nested parts), and returns a
descriptor: no storage is read. A ``TypeError`` becomes ``bad-call`` at the REDUCE's
offset; the checks' own codes (``tensor-*``) get that offset too.
"""

from __future__ import annotations

import sys

from ckptpeek.errors import error
from ckptpeek.tensor import INT64_MAX, StorageRef, TensorRef, check_layout, new_dense
from ckptpeek.torch_types import (
    DTYPE_ATTRS,
    STORAGE_TYPES,
    TORCH_CONSTANTS,
    Device,
    DType,
    Layout,
    QScheme,
    Size,
    StorageType,
)

from .standins import KnownGlobal, PlaceholderType, safe_repr

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from typing import Any, Final

__all__ = ("TORCH_GLOBALS", "StorageResolver")


class StorageResolver:
    """torch's persistent ids, ``('storage', StorageType, key, location, numel)``, to
    :class:`StorageRef`, one per key, each checked against the bytes the file holds.

    A format reader makes one per file with ``sizes`` (key -> bytes available) and
    passes it to the engine as ``persistent_load``. The native engine recognises this
    type and runs the common case in C with the same checks, calling back here for
    anything else, so both engines build the same storages and raise the same errors.
    """

    __slots__ = ("cache", "sizes", "reader", "where")

    def __init__(self, sizes: dict[str, int], reader: Any, where: str) -> None:
        self.cache: dict[str, StorageRef] = {}
        self.sizes = sizes
        self.reader = reader  # the StorageReader the StorageRefs read through
        self.where = where  # where a key's bytes live, for messages ("archive/data/")

    def __call__(self, pid: Any) -> StorageRef:
        path = self.reader.path
        if type(pid) is not tuple or len(pid) != 5 or pid[0] != "storage":
            raise error("bad-persistent-id", f"unknown persistent id {safe_repr(pid)}", path=path)
        _tag, stype, key, location, numel = pid
        ref = self.cache.get(key) if type(key) is str else None
        if ref is not None:
            return ref
        if type(stype) is not StorageType:
            raise error(
                "bad-persistent-id",
                f"persistent id names {safe_repr(stype)}, not a storage type",
                path=path,
            )
        if type(location) is not str:
            # torch.load(map_location="cpu") - what load_checkpoint stands in for - never
            # reads the location: any value loads, onto the cpu
            location = "cpu"
        if not (type(key) is str and type(numel) is int and numel >= 0):
            raise error(
                "bad-persistent-id", f"malformed storage persistent id {safe_repr(pid)}", path=path
            )
        size = self.sizes.get(key)
        if size is None:
            raise error(
                "missing-storage", f"storage {key!r} has no data at {self.where}{key}", path=path
            )
        if size < numel * stype.dtype.itemsize:
            # located at the persistent id in the pickle; the message names where the bytes are
            raise error(
                "storage-too-small",
                f"storage {key!r} claims {numel} x {stype.dtype} but "
                f"{self.where}{key} holds {size} bytes",
                path=path,
            )
        ref = self.cache[key] = StorageRef(key, stype.dtype, numel, location, self.reader)
        return ref


def _ints(value: Any, what: str) -> tuple[int, ...]:
    """A tuple of ints (sizes, strides); their values are ``check_layout``'s to judge."""
    if type(value) is not tuple:
        if not isinstance(value, (tuple, list)):
            raise TypeError(f"{what} must be a tuple of ints")
        value = tuple(value)
    for v in value:
        if type(v) is not int:
            raise TypeError(f"{what} must be a tuple of ints")
    ints: tuple[int, ...] = value
    return ints


def _tensor(
    storage: Any,
    offset: Any,
    size: Any,
    stride: Any,
    dtype: DType | None = None,
    requires_grad: Any = False,
    metadata: Any = None,
) -> TensorRef:
    # the native engine's fast path (_fast_reduce, _dims_ok in _pickle_vm_c.pyx) builds
    # _rebuild_tensor_v2's tensors itself only when every check here would pass
    if type(storage) is not StorageRef:
        raise TypeError(f"expected a storage, got {type(storage).__name__}")
    if type(offset) is not int:
        raise TypeError("storage offset must be an int")
    shape, strides = _ints(size, "size"), _ints(stride, "stride")
    if type(requires_grad) is not bool:
        raise TypeError("requires_grad must be a bool")
    if metadata is not None and type(metadata) is not dict:
        raise TypeError("tensor metadata must be a dict")
    dtype = dtype or storage.dtype
    check_layout(shape, strides, offset, storage, dtype)
    return new_dense(storage, dtype, shape, strides, offset, requires_grad, metadata)


def _rebuild_tensor(args: tuple[Any, ...]) -> TensorRef:
    if len(args) != 4:
        raise TypeError("_rebuild_tensor takes 4 arguments")
    return _tensor(*args)


def _rebuild_tensor_v2(args: tuple[Any, ...]) -> TensorRef:
    # (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
    if not 6 <= len(args) <= 7:
        raise TypeError("_rebuild_tensor_v2 takes 6 or 7 arguments")
    return _tensor(
        args[0],
        args[1],
        args[2],
        args[3],
        requires_grad=args[4],
        metadata=args[6] if len(args) == 7 else None,
    )


def _rebuild_tensor_v3(args: tuple[Any, ...]) -> TensorRef:
    # (untyped storage, storage_offset, size, stride, requires_grad, hooks, dtype[, metadata])
    if not 7 <= len(args) <= 8 or not isinstance(args[6], DType):
        raise TypeError("_rebuild_tensor_v3 takes 7 or 8 arguments, the 7th a dtype")
    return _tensor(
        args[0],
        args[1],
        args[2],
        args[3],
        dtype=args[6],
        requires_grad=args[4],
        metadata=args[7] if len(args) == 8 else None,
    )


def _as_parameter(data: Any, requires_grad: Any, state: Any = None) -> TensorRef:
    if not isinstance(data, TensorRef):
        raise TypeError(f"a Parameter wraps a tensor, not a {type(data).__name__}")
    if type(requires_grad) is not bool:
        raise TypeError("requires_grad must be a bool")
    ref = TensorRef(
        storage=data.storage,
        dtype=data.dtype,
        shape=data.shape,
        stride=data.stride(),
        storage_offset=data.storage_offset(),
        requires_grad=requires_grad,
        kind=data.kind,
        metadata=data.metadata,
    )
    ref.components = data.components
    ref.is_parameter = True
    ref.type_name = "torch.nn.parameter.Parameter"
    _set_state(ref, state)
    return ref


def _set_state(ref: TensorRef, state: Any) -> None:
    """A tensor's Python ``__dict__`` (and slots: ``(dict, slots_dict)``), kept as data in
    ``ref.attrs``. Not recursive: a file cannot nest states to exhaust the stack."""
    if state is None:
        return
    parts = state if type(state) is tuple and len(state) == 2 else (state,)
    for part in parts:
        if part is None:
            continue
        if not isinstance(part, dict):
            raise TypeError("tensor state must be a dict")
        ref.attrs.update(dict.items(part))  # never a method a BUILD may have shadowed


def _rebuild_parameter(args: tuple[Any, ...]) -> TensorRef:
    if len(args) != 3:
        raise TypeError("_rebuild_parameter takes 3 arguments")
    return _as_parameter(args[0], args[1])


def _rebuild_parameter_with_state(args: tuple[Any, ...]) -> TensorRef:
    if len(args) != 4:
        raise TypeError("_rebuild_parameter_with_state takes 4 arguments")
    return _as_parameter(args[0], args[1], args[3])


def _rebuild_from_type_v2(args: tuple[Any, ...]) -> Any:
    # (func, new_type, args, state): func(*args), then the subclass and its state
    if len(args) != 4:
        raise TypeError("_rebuild_from_type_v2 takes 4 arguments")
    func, new_type, fargs, state = args
    if not (
        isinstance(func, KnownGlobal)
        and func.qualname in _TENSOR_FUNCTIONS
        and func.call is not None  # every tensor rebuild function has one
        and isinstance(fargs, tuple)
    ):
        # torch passes a tensor rebuild function here, never itself: refusing nesting
        # keeps a file from recursing through this constructor
        raise TypeError("_rebuild_from_type_v2 needs a tensor rebuild function")
    ref = func.call(fargs)
    if not isinstance(ref, TensorRef):
        return ref
    if isinstance(new_type, KnownGlobal):
        if new_type.qualname == "torch.nn.parameter.Parameter" and not ref.is_parameter:
            ref = _as_parameter(ref, ref.requires_grad)
        elif new_type.qualname != "torch.Tensor":
            ref.type_name = new_type.qualname
    elif isinstance(new_type, PlaceholderType):
        ref.type_name = new_type.qualname  # a user's Tensor subclass: described, never created
    else:
        raise TypeError("_rebuild_from_type_v2 needs a type")
    _set_state(ref, state)
    return ref


_TENSOR_FUNCTIONS: Final = frozenset(
    f"torch._utils.{name}"
    for name in (
        "_rebuild_tensor",
        "_rebuild_tensor_v2",
        "_rebuild_tensor_v3",
        "_rebuild_parameter",
        "_rebuild_parameter_with_state",
        "_rebuild_meta_tensor_no_storage",
        "_rebuild_qtensor",
        "_rebuild_sparse_tensor",
        "_rebuild_nested_tensor",
        "_rebuild_wrapper_subclass",
        "_rebuild_device_tensor_from_cpu_tensor",
        "_rebuild_device_tensor_from_numpy",
        "_rebuild_xla_tensor",
    )
)


def _rebuild_meta_tensor_no_storage(args: tuple[Any, ...]) -> TensorRef:
    if len(args) != 4 or not isinstance(args[0], DType):
        raise TypeError("_rebuild_meta_tensor_no_storage(dtype, size, stride, requires_grad)")
    shape, strides = _ints(args[1], "size"), _ints(args[2], "stride")
    check_layout(shape, strides, 0)  # torch's empty_strided: no storage to fit in
    return TensorRef(
        storage=None,
        dtype=args[0],
        shape=shape,
        stride=strides,
        storage_offset=0,
        requires_grad=bool(args[3]),
        kind="meta",
    )


# -- tensors that are not one dense storage view (torch/_tensor.py __reduce_ex_internal)


def _bad_qparams(msg: str) -> Exception:
    return error("tensor-bad-qparams", msg)


#: what torch.load rebuilds (torch/_utils.py _rebuild_qtensor); the symmetric schemes
#: are never saved ("Can't deserialize quantized tensor with qscheme ...")
_PER_TENSOR: Final = frozenset({"per_tensor_affine"})
_PER_CHANNEL: Final = frozenset({"per_channel_affine", "per_channel_affine_float_qparams"})


def _channel_count(part: Any, what: str) -> int:
    """How many per-channel scales or zero points ``part`` holds (a list or a 1-D tensor,
    as torch requires: ``scale tensor must have dimension 1``)."""
    if isinstance(part, TensorRef):
        if part.ndim != 1 or part.kind != "dense":
            raise _bad_qparams(f"per-channel {what} must be a 1-D dense tensor, not {part!r}")
        if what == "scales" and part.dtype.kind != "f":
            raise _bad_qparams(f"per-channel scales must be floating point, not {part.dtype}")
        return part.shape[0]
    if type(part) is list:
        for v in part:
            if type(v) not in (int, float, bool):
                raise _bad_qparams(f"per-channel {what} must be numbers")
        return len(part)
    raise _bad_qparams(f"per-channel {what} must be a list or a tensor")


def _rebuild_qtensor(args: tuple[Any, ...]) -> TensorRef:
    # (storage, storage_offset, size, stride, quantizer_params, requires_grad, hooks)
    if len(args) != 7:
        raise TypeError("_rebuild_qtensor takes 7 arguments")
    storage, offset, size, stride, qparams, requires_grad, _hooks = args
    ref = _tensor(storage, offset, size, stride, requires_grad=requires_grad)
    if ref.dtype.kind != "q":
        raise _bad_qparams(
            f"a quantized tensor of {ref.dtype}: torch quantizes to qint8, quint8, qint32, "
            f"quint4x2 or quint2x4 only"
        )
    if not (type(qparams) is tuple and qparams and isinstance(qparams[0], QScheme)):
        raise _bad_qparams(f"quantizer parameters {safe_repr(qparams)} do not start with a qscheme")
    scheme = qparams[0].name
    if scheme in _PER_TENSOR and len(qparams) == 3:
        scale, zero_point = qparams[1:]
        if not isinstance(scale, (int, float)):
            raise _bad_qparams(f"per-tensor scale {safe_repr(scale)} is not a number")
        if type(zero_point) is not int or not -INT64_MAX - 1 <= zero_point <= INT64_MAX:
            # torch: "argument 'zero_point' must be int", or an int64 overflow
            raise _bad_qparams(f"per-tensor zero point {safe_repr(zero_point)} is not an int64")
        ref.components = {"qscheme": qparams[0], "scale": float(scale), "zero_point": zero_point}
    elif scheme in _PER_CHANNEL and len(qparams) == 4:
        scales, zero_points, axis = qparams[1:]
        if type(axis) is not int or not 0 <= axis < len(ref.shape):
            raise _bad_qparams(
                f"per-channel axis {safe_repr(axis)} out of range for size {tuple(ref.shape)}"
            )
        want = ref.shape[axis]
        got = (_channel_count(scales, "scales"), _channel_count(zero_points, "zero points"))
        if got != (want, want):
            raise _bad_qparams(
                f"per-channel scales and zero points must have size[{axis}]={want} entries, "
                f"got {got[0]} scales and {got[1]} zero points"
            )
        ref.components = {
            "qscheme": qparams[0],
            "scale": scales,
            "zero_point": zero_points,
            "axis": axis,
        }
    elif scheme in _PER_TENSOR or scheme in _PER_CHANNEL:
        raise _bad_qparams(
            f"quantizer parameters for {scheme} hold {len(qparams) - 1} values, "
            f"not {2 if scheme in _PER_TENSOR else 3}"
        )
    else:
        raise _bad_qparams(f"torch does not load quantized tensors of qscheme {scheme}")
    ref.kind = "quantized"
    return ref


_SPARSE_PARTS: Final = {
    "sparse_coo": ("indices", "values", "size", "is_coalesced"),
    "sparse_csr": ("compressed_indices", "plain_indices", "values", "size"),
    "sparse_csc": ("compressed_indices", "plain_indices", "values", "size"),
    "sparse_bsr": ("compressed_indices", "plain_indices", "values", "size"),
    "sparse_bsc": ("compressed_indices", "plain_indices", "values", "size"),
}


def _rebuild_sparse_tensor(args: tuple[Any, ...]) -> TensorRef:
    # (layout, (indices, values, size[, is_coalesced])) or compressed layouts
    if len(args) != 2 or not isinstance(args[0], Layout) or type(args[1]) is not tuple:
        raise TypeError("_rebuild_sparse_tensor(layout, data) expected")
    layout, data = args
    names = _SPARSE_PARTS.get(layout.name)
    if names is None:
        raise TypeError(f"no sparse layout {layout}")
    if layout.name == "sparse_coo" and len(data) == 3:
        data = (*data, None)
    if len(data) != len(names):
        raise TypeError(f"{layout} data has {len(data)} parts, expected {len(names)}")
    parts = dict(zip(names, data, strict=False))
    shape = _ints(parts.pop("size"), "size")
    for name, value in parts.items():
        if name != "is_coalesced" and not isinstance(value, TensorRef):
            raise TypeError(f"sparse {name} must be a tensor")
    check_layout(shape, None, 0)
    values = parts["values"]
    if layout.name == "sparse_coo":
        _check_coo(shape, parts["indices"], values)
    ref = TensorRef(
        storage=None,
        dtype=values.dtype,
        shape=shape,
        stride=(),
        storage_offset=0,
        requires_grad=values.requires_grad,
        kind=layout.name,
    )
    ref.components = parts
    return ref


def _check_coo(shape: tuple[int, ...], indices: TensorRef, values: TensorRef) -> None:
    """What ``torch.sparse_coo_tensor(check_invariants=False)`` refuses: indices that are
    not sparse_dim x nnz, values that are not nnz x size[sparse_dim:]. (Index values are
    data: checked only by torch's opt-in invariants, and by ``to_dense()``.)"""
    if indices.ndim != 2:
        raise error(
            "tensor-bad-shape",
            f"sparse COO indices of size {tuple(indices.shape)} are not sparse dims x nnz",
        )
    sparse_dim, nnz = indices.shape
    dense = tuple(values.shape[1:])
    if len(shape) != sparse_dim + len(dense) or (
        values.ndim and (values.shape[0] != nnz or dense != shape[sparse_dim:])
    ):
        raise error(
            "tensor-bad-shape",
            f"sparse COO tensor of size {tuple(shape)}: indices of size "
            f"{tuple(indices.shape)} and values of size {tuple(values.shape)} do not fit it",
        )


def _rebuild_nested_tensor(args: tuple[Any, ...]) -> TensorRef:
    # (buffer, sizes, strides, storage_offsets): one flat buffer, a row per component
    if len(args) != 4 or not all(isinstance(a, TensorRef) for a in args):
        raise TypeError("_rebuild_nested_tensor(buffer, sizes, strides, offsets) expected")
    buffer, sizes, strides, offsets = args
    if (
        buffer.ndim != 1
        or sizes.ndim != 2
        or strides.shape != sizes.shape
        or offsets.ndim != 1
        or offsets.shape[0] != sizes.shape[0]
        or not sizes.dtype.name == strides.dtype.name == offsets.dtype.name == "int64"
    ):
        # torch's _nested_view_from_buffer asserts these; the rows' values are data,
        # checked against the buffer by unbind() (numpy() of each component)
        raise error(
            "tensor-bad-shape",
            f"nested tensor of a {buffer.ndim}-D buffer with sizes {sizes!r}, strides "
            f"{strides!r} and offsets {offsets!r}: torch needs a 1-D buffer, 2-D int64 sizes "
            f"and strides of one shape, and 1-D int64 offsets, one per row",
        )
    ref = TensorRef(
        storage=None,
        dtype=buffer.dtype,
        shape=(sizes.shape[0],),
        stride=(),
        storage_offset=0,
        requires_grad=buffer.requires_grad,
        kind="nested",
    )
    ref.components = {"buffer": buffer, "sizes": sizes, "strides": strides, "offsets": offsets}
    return ref


def _rebuild_wrapper_subclass(args: tuple[Any, ...]) -> TensorRef:
    # (cls, dtype, size, stride, storage_offset, layout, device, requires_grad): no data
    if len(args) != 8 or not isinstance(args[1], DType):
        raise TypeError("_rebuild_wrapper_subclass takes 8 arguments, the 2nd a dtype")
    cls, dtype, size, stride, offset, _layout, device, requires_grad = args
    if type(offset) is not int:
        raise TypeError("storage offset must be an int")
    shape, strides = _ints(size, "size"), _ints(stride, "stride")
    check_layout(shape, strides, offset)  # torch's _make_wrapper_subclass: no storage
    ref = TensorRef(
        storage=None,
        dtype=dtype,
        shape=shape,
        stride=strides,
        storage_offset=offset,
        requires_grad=_bool(requires_grad),
        kind="wrapper",
    )
    if not isinstance(cls, (KnownGlobal, PlaceholderType)):
        raise TypeError("_rebuild_wrapper_subclass needs a tensor class")
    ref.type_name = cls.qualname
    ref.components = {"device": _device_str(device)}
    return ref


def _rebuild_device_tensor_from_cpu_tensor(args: tuple[Any, ...]) -> TensorRef:
    # (cpu tensor, dtype, device, requires_grad): the data is the CPU copy torch saved
    if len(args) != 4 or not isinstance(args[0], TensorRef) or not isinstance(args[1], DType):
        raise TypeError(
            "_rebuild_device_tensor_from_cpu_tensor(data, dtype, device, requires_grad) expected"
        )
    data, dtype, device, requires_grad = args
    if dtype != data.dtype:
        raise TypeError(f"device tensor of {dtype} saved from a {data.dtype} copy")
    if data.storage is None:
        raise TypeError("device tensor without data")
    storage = StorageRef(
        data.storage.key,
        data.storage.dtype,
        data.storage.numel,
        _device_str(device),
        data.storage.reader,
    )
    return new_dense(
        storage,
        dtype,
        tuple(data.shape),
        data.stride(),
        data.storage_offset(),
        _bool(requires_grad),
        data.metadata,
    )


def _rebuild_device_tensor_from_numpy(args: tuple[Any, ...]) -> TensorRef:
    # (numpy array, dtype, device, requires_grad): XLA and other storage-less devices
    if len(args) != 4 or not isinstance(args[1], DType):
        raise TypeError(
            "_rebuild_device_tensor_from_numpy(data, dtype, device, requires_grad) expected"
        )
    data, dtype, device, requires_grad = args
    if type(data).__name__ != "ndarray" or type(data).__module__ != "numpy":
        raise TypeError("device tensor data must be a numpy array")
    location, requires_grad = _device_str(device), _bool(requires_grad)
    item = dtype.itemsize
    if data.dtype.hasobject:
        raise TypeError("device tensor data of object dtype")
    array = data.astype(data.dtype.newbyteorder("="), copy=False)
    if array.dtype.itemsize != item:
        # torch converts with .to(dtype); older XLA files hold bfloat16 as float32
        array = _narrow_float(array, dtype)
    raw = array.tobytes()
    storage = StorageRef(
        "numpy", dtype, len(raw) // item if item else 0, location, BytesStorageReader(raw)
    )
    shape = tuple(array.shape)
    strides = []
    step = 1
    for dim in reversed(shape):
        strides.append(step)
        step *= dim
    return new_dense(storage, dtype, shape, tuple(reversed(strides)), 0, requires_grad, None)


def _narrow_float(array: Any, dtype: DType) -> Any:
    """float32 data for a float16/bfloat16 tensor, rounded to nearest even as torch does."""
    import numpy as np  # noqa: PLC0415 - numpy data is only here when numpy is

    if array.dtype != np.float32 or dtype.name not in ("float16", "bfloat16"):
        raise TypeError(f"numpy data of {array.dtype} for a {dtype} tensor")
    if dtype.name == "float16":
        return array.astype(np.float16)
    bits = array.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(array)
    rounded[nan] = ((bits[nan] >> 16) | 0x40).astype(np.uint16)  # keep NaNs quiet NaNs
    return rounded


def _device_str(device: Any) -> str:
    """A device argument as its string; anything but a Device or a str is refused (a
    stand-in's ``str()`` must not turn a skipped or placeholder value into text)."""
    if isinstance(device, (Device, str)):
        return str(device)
    raise TypeError(f"a device must be a torch.device or a str, not {type(device).__name__}")


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise TypeError(f"expected a bool, not {type(value).__name__}")
    return value


class BytesStorageReader:
    """Storage bytes held in memory (tensors that pickles carry inline)."""

    path = None
    byteorder = sys.byteorder

    def __init__(self, data: bytes) -> None:
        self.data = data

    def storage_view(self, storage: StorageRef, start: int, stop: int) -> memoryview:
        return memoryview(self.data)[start:stop]

    def storage_location(self, storage: StorageRef) -> tuple[None, int, int]:
        return None, 0, len(self.data)


def _get_layout(args: tuple[Any, ...]) -> Layout:
    """``torch.serialization._get_layout("torch.sparse_coo")``: how layouts are pickled."""
    if len(args) != 1 or not isinstance(args[0], str):
        raise TypeError("_get_layout(name) expected")
    layout = TORCH_CONSTANTS.get(args[0].removeprefix("torch."))
    if not isinstance(layout, Layout):
        raise TypeError(f"no layout named {args[0]!r}")
    return layout


def _size(args: tuple[Any, ...]) -> Size:
    # torch.Size holds any int64 (torch.Size([-1]) is one); a tensor's sizes are checked
    # where a tensor is built
    if len(args) > 1:
        raise TypeError("torch.Size takes one argument")
    dims = _ints(args[0], "torch.Size") if args else ()
    for d in dims:
        if not -INT64_MAX - 1 <= d <= INT64_MAX:
            raise OverflowError(f"torch.Size entry {d} is past int64")
    return Size(dims)


def _device(args: tuple[Any, ...]) -> Device:
    if not 1 <= len(args) <= 2:
        raise TypeError("torch.device takes 1 or 2 arguments")
    return Device.parse(*args)


def _torch_globals() -> dict[tuple[str, str], Any]:
    g: dict[tuple[str, str], Any] = {}

    def fn(module: str, name: str, call: Any) -> None:
        g[(module, name)] = KnownGlobal(module, name, call=call)

    for name, call in (
        ("_rebuild_tensor", _rebuild_tensor),
        ("_rebuild_tensor_v2", _rebuild_tensor_v2),
        ("_rebuild_tensor_v3", _rebuild_tensor_v3),
        ("_rebuild_parameter", _rebuild_parameter),
        ("_rebuild_parameter_with_state", _rebuild_parameter_with_state),
        ("_rebuild_meta_tensor_no_storage", _rebuild_meta_tensor_no_storage),
        ("_rebuild_qtensor", _rebuild_qtensor),
        ("_rebuild_sparse_tensor", _rebuild_sparse_tensor),
        ("_rebuild_nested_tensor", _rebuild_nested_tensor),
        ("_rebuild_wrapper_subclass", _rebuild_wrapper_subclass),
        ("_rebuild_device_tensor_from_cpu_tensor", _rebuild_device_tensor_from_cpu_tensor),
        ("_rebuild_device_tensor_from_numpy", _rebuild_device_tensor_from_numpy),
        ("_rebuild_xla_tensor", _rebuild_device_tensor_from_numpy),
    ):
        fn("torch._utils", name, call)
    fn("torch._tensor", "_rebuild_from_type_v2", _rebuild_from_type_v2)
    fn("torch", "Size", _size)
    fn("torch.serialization", "_get_layout", _get_layout)
    fn("torch", "device", _device)
    g[("torch", "Tensor")] = KnownGlobal("torch", "Tensor")
    g[("torch._tensor", "Tensor")] = KnownGlobal("torch", "Tensor")
    g[("torch.nn.parameter", "Parameter")] = KnownGlobal("torch.nn.parameter", "Parameter")
    for name, dtype in DTYPE_ATTRS.items():
        g[("torch", name)] = dtype
    for name, constant in TORCH_CONSTANTS.items():
        g[("torch", name)] = constant
    for name, storage_type in STORAGE_TYPES.items():
        g[("torch", name)] = storage_type
    g[("torch.storage", "UntypedStorage")] = STORAGE_TYPES["UntypedStorage"]
    return g


TORCH_GLOBALS: Final = _torch_globals()
