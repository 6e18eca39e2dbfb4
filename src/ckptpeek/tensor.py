"""Lazy tensors: :class:`TensorRef` describes a tensor and reads its own bytes on demand.

A ``TensorRef`` knows what torch would know after ``torch.load`` - dtype, shape, stride,
storage offset, requires_grad, the device recorded at save time - and where its bytes
are in the file. Nothing is read until ``numpy()`` (or ``item()``, ``tolist()``) is
called, and then only the span of the storage this tensor covers.
"""

from __future__ import annotations

import struct
import sys

from .errors import error
from .limits import DEFAULT_LIMITS
from .torch_types import DTYPES, Device, DType, Size

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from typing import Any, Protocol

    import numpy as np
else:
    Protocol = object  # StorageReader is a plain documenting class at run time

__all__ = (
    "INT64_MAX",
    "StorageRef",
    "StorageReader",
    "TensorRef",
    "check_dense_size",
    "check_layout",
    "new_dense",
)

#: struct formats of the dtypes whose single values item() reads without numpy
_STRUCT_FORMATS = {
    "float32": "f",
    "float64": "d",
    "float16": "e",
    "bfloat16": "H",
    "int8": "b",
    "uint8": "B",
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "uint64": "Q",
    "bool": "?",
    "complex64": "f",
    "complex128": "d",
}

_QUANT_INT = {"qint8": DTYPES["int8"], "quint8": DTYPES["uint8"], "qint32": DTYPES["int32"]}

_NOT_DENSE = {
    "quantized": "numpy() of a quantized tensor: use int_repr() for its integers or "
    "dequantize() for its values (torch's numpy() refuses it too)",
    "nested": "numpy() of a nested tensor: unbind() gives its components",
    "meta": "a meta tensor has no data",
    "wrapper": "a wrapper-subclass tensor was saved without data",
    **{
        k: f"numpy() of a {k} tensor: to_dense() gives its values"
        for k in ("sparse_coo", "sparse_csr", "sparse_csc", "sparse_bsr", "sparse_bsc")
    },
}

#: ``tolist()`` and ``repr`` refuse to materialise more elements than this
MAX_TOLIST: int = 1_000_000
#: ``unbind()`` refuses to build more component views than this: each is a TensorRef of
#: about 550 bytes, and empty components cost the file no bytes (a nested tensor's
#: sizes can be an expanded view of one row)
MAX_UNBIND: int = 100_000


class StorageReader(Protocol):
    """What a format reader gives its storages: where their bytes are, and how to read them.

    A protocol (a plain class at run time): ``ZipStorageReader``, ``SafetensorsStorageReader``,
    ``LegacyStorageReader``, the DCP item reader and the torch bridge's storages match it by
    their shape, not by subclassing it.
    """

    @property
    def path(self) -> str | None: ...

    @property
    def byteorder(self) -> str: ...  # "little" or "big"

    def storage_view(self, storage: StorageRef, start: int, stop: int) -> memoryview: ...

    def storage_location(self, storage: StorageRef) -> tuple[str | None, int, int]: ...


class StorageRef:
    """One storage of the file: a key, an element type, a length, a device.

    ``nbytes`` is what the file claims (``numel * dtype.itemsize``); it is checked
    against the real member size before any byte is read.
    """

    __slots__ = ("key", "dtype", "numel", "location", "reader")
    key: str
    dtype: DType
    numel: int
    location: str
    reader: StorageReader | None

    def __init__(
        self, key: str, dtype: DType, numel: int, location: str, reader: StorageReader | None
    ) -> None:
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.location = location
        self.reader = reader

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    def __repr__(self) -> str:
        return f"StorageRef(key={self.key!r}, dtype={self.dtype}, numel={self.numel}, location={self.location!r})"


_NUMPY_NATIVE = frozenset(
    {
        "float16",
        "float32",
        "float64",
        "complex64",
        "complex128",
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
    }
)


def numpy_dtype(dtype: DType) -> np.dtype[Any]:
    import numpy as np  # noqa: PLC0415 - numpy is needed only to materialise data

    if dtype.numpy_name is None:
        raise error(
            "unsupported-dtype",
            f"{dtype} has no numpy equivalent (torch.Tensor.numpy() refuses it too); use to_torch()",
        )
    if dtype.numpy_name in _NUMPY_NATIVE:
        return np.dtype(dtype.numpy_name)
    try:
        import ml_dtypes  # noqa: PLC0415 - optional extra, only for bfloat16/float8
    except ImportError:
        raise error(
            "needs-ml-dtypes",
            f"{dtype} needs the ml_dtypes package to become a numpy array "
            f"(pip install ml_dtypes, or 'ckptpeek[numpy-dtypes]')",
        ) from None
    try:
        found: np.dtype[Any] = np.dtype(getattr(ml_dtypes, dtype.numpy_name))
        return found
    except AttributeError:
        raise error(
            "needs-ml-dtypes", f"this ml_dtypes has no {dtype.numpy_name}; upgrade it"
        ) from None


def _fill(
    t: TensorRef,
    storage: StorageRef | None,
    dtype: DType,
    shape: Size,
    stride: tuple[int, ...],
    offset: int,
    requires_grad: bool,
    kind: str,
    metadata: dict[str, Any] | None,
) -> None:
    t.storage = storage
    t.dtype = dtype
    t.shape = shape
    t._stride = stride
    t._offset = offset
    t.requires_grad = requires_grad
    t.is_parameter = False
    t.kind = kind
    t.attrs = {}
    t.type_name = "torch.Tensor"
    t.metadata = metadata or {}
    t.components = {}


#: torch holds sizes, strides, storage offsets and element counts in int64
INT64_MAX = (1 << 63) - 1
_UINT64_LIMIT = 1 << 64


def _dims_text(dims: tuple[int, ...]) -> str:
    """``(2, 3)`` for a message; a long tuple is cut (a file can make it any length)."""
    if len(dims) <= 8:
        return str(tuple(dims))
    return "(" + ", ".join(str(d) for d in dims[:8]) + f", ... {len(dims)} dims)"


def _why(value: int) -> str:
    return "negative" if value < 0 else "past int64"


def _check_numpy_size(shape: tuple[int, ...], itemsize: int) -> None:
    """``numpy-too-large`` where numpy would refuse an array of ``shape``: its rule (the
    nonzero sizes times the item size must fit ``intp``), so an empty tensor counts too.
    torch allows more (int64 elements of any stride, e.g. a 1-element expanded view)."""
    nbytes = itemsize
    for size in shape:
        if size:
            nbytes *= size
            if nbytes > sys.maxsize:
                raise error(
                    "numpy-too-large",
                    f"a tensor of size {_dims_text(shape)} and {itemsize}-byte elements "
                    f"passes the largest numpy array ({sys.maxsize} bytes); torch's numpy() "
                    f"refuses it too",
                )


def check_dense_size(
    shape: tuple[int, ...], itemsize: int, max_bytes: int | None, what: str
) -> None:
    """Refuse, before allocating, an array of ``shape`` that ``what`` would build whole."""
    _check_numpy_size(shape, itemsize)
    limit = DEFAULT_LIMITS.max_dense_bytes if max_bytes is None else max_bytes
    nbytes = itemsize
    for size in shape:
        nbytes *= size
    if nbytes > limit:
        raise error(
            "limit-dense-size",
            f"{what} of a tensor of size {_dims_text(shape)} would allocate {nbytes} bytes, "
            f"over the limit of {limit} (Limits.max_dense_bytes; pass max_bytes= to allow it)",
        )


def check_layout(
    shape: tuple[int, ...],
    stride: tuple[int, ...] | None,
    offset: int,
    storage: StorageRef | None = None,
    dtype: DType | None = None,
) -> None:
    """Refuse sizes, strides and a storage offset that no torch tensor can have.

    The checks ``torch.load`` makes (``set_``, ``empty_strided``, ``computeStorageNbytes``),
    on ints the caller has type-checked:

    - ``tensor-bad-shape``: a size negative or past int64, or more elements than int64
      counts. torch's rule (``numel: integer multiplication overflow``): the running
      product of the sizes may not pass uint64, even if a later 0 ends it, and must end
      within int64, so ``(0, 2**40, 2**40)`` loads and ``(2**40, 2**40, 0)`` does not;
    - ``tensor-bad-stride``: as many strides as dimensions, each and the offset in
      0..int64 (``stride=None``: a layout without strides, e.g. a sparse size);
    - ``tensor-out-of-storage`` (only with ``storage``): the last element of a non-empty
      tensor, in ``dtype`` (the storage's by default), lies past the storage's bytes. An
      empty tensor may have any offset, as in torch.

    The caller (a rebuild function, run by the interpreter) adds the pickle offset.
    """
    if stride is None:
        stride = (0,) * len(shape)
    elif len(stride) != len(shape):
        raise error(
            "tensor-bad-stride",
            f"tensor of size {_dims_text(shape)} has stride {_dims_text(stride)}: "
            f"{len(stride)} strides for {len(shape)} dimensions",
        )
    if not 0 <= offset <= INT64_MAX:
        raise error("tensor-bad-stride", f"tensor storage offset {offset} is {_why(offset)}")
    numel = 1
    wrapped = False  # the running product passed uint64 (kept there: bounded work)
    last = offset
    for size, step in zip(shape, stride, strict=False):
        if not 0 <= size <= INT64_MAX:
            raise error(
                "tensor-bad-shape",
                f"tensor size {_dims_text(shape)}: {size} is {_why(size)}",
            )
        if not 0 <= step <= INT64_MAX:
            raise error(
                "tensor-bad-stride",
                f"tensor stride {_dims_text(stride)}: {step} is {_why(step)}",
            )
        numel *= size
        if numel >= _UINT64_LIMIT:
            wrapped, numel = True, _UINT64_LIMIT
        last += (size - 1) * step
    if wrapped or numel > INT64_MAX:
        raise error(
            "tensor-bad-shape",
            f"tensor size {_dims_text(shape)} holds more elements than int64 counts "
            f"(torch: numel: integer multiplication overflow)",
        )
    if storage is None or numel == 0:
        return
    item = (dtype or storage.dtype).itemsize
    if (last + 1) * item > storage.numel * storage.dtype.itemsize:
        raise error(
            "tensor-out-of-storage",
            f"tensor of size {_dims_text(shape)}, stride {_dims_text(stride)} and storage "
            f"offset {offset} needs {(last + 1) * item} bytes of storage {storage.key!r}, "
            f"which holds {storage.numel} x {storage.dtype} ({storage.nbytes} bytes)",
        )


def new_dense(
    storage: StorageRef,
    dtype: DType,
    shape: tuple[int, ...],
    stride: tuple[int, ...],
    offset: int,
    requires_grad: bool,
    metadata: dict[str, Any] | None,
) -> TensorRef:
    """A TensorRef from arguments already checked (the rebuild functions' fast path)."""
    t = TensorRef.__new__(TensorRef)
    _fill(t, storage, dtype, Size(shape), stride, offset, requires_grad, "dense", metadata)
    return t


def _bad_indices(why: str) -> Exception:
    return error("sparse-bad-indices", f"{why} (torch's sparse invariants refuse it)")


def _check_index_dtype(indices: TensorRef, what: str) -> None:
    if indices.dtype.name not in ("int64", "int32"):
        raise _bad_indices(f"sparse {what} of dtype {indices.dtype}: torch needs int64 or int32")


def _check_compressed(
    shape: tuple[int, ...],
    major_dim: int,
    n_compressed: int,
    plain: tuple[int, ...],
    values: tuple[int, ...],
) -> None:
    """The shapes of a 2-D CSR/CSC tensor's parts: one compressed index per row (CSR)
    or column (CSC) and one more, one plain index per value."""
    if n_compressed != shape[major_dim] + 1 or len(plain) != 1 or plain != values:
        raise _bad_indices(
            f"compressed sparse tensor of size {_dims_text(shape)}: {n_compressed} compressed "
            f"indices, plain indices of size {_dims_text(plain)}, values of size "
            f"{_dims_text(values)}"
        )


def _check_compressed_values(
    shape: tuple[int, ...],
    major_dim: int,
    compressed: np.ndarray[Any, Any],
    minor: np.ndarray[Any, Any],
) -> None:
    """torch's invariants of compressed indices (``_validate_sparse_compressed_tensor_args``):
    from 0 to nnz, non-decreasing; plain indices in range, sorted and distinct in a row."""
    import numpy as np  # noqa: PLC0415

    nnz = len(minor)
    if compressed[0] != 0 or compressed[-1] != nnz or (np.diff(compressed) < 0).any():
        raise _bad_indices(f"compressed indices must run from 0 to nnz ({nnz}) without decreasing")
    if nnz == 0:
        return
    ncols = shape[1 - major_dim]
    if minor.min() < 0 or minor.max() >= ncols:
        raise _bad_indices(
            f"plain indices run from {minor.min()} to {minor.max()}, outside 0..{ncols - 1}"
        )
    steps = np.diff(minor)
    within = np.ones(nnz - 1, dtype=bool)  # steps between two values of one row
    starts = compressed[1:-1]
    within[starts[(starts > 0) & (starts < nnz)] - 1] = False
    if (steps[within] <= 0).any():
        raise _bad_indices("plain indices are not sorted and distinct within a row")


class TensorRef:
    """A tensor described, not loaded. Uses ``torch.Tensor``'s names for its metadata.

    Attributes:
        shape: a ``Size`` (tuple) like ``torch.Size``.
        dtype: a ``DType``; ``str(t.dtype) == "torch.float32"``.
        requires_grad: as saved.
        is_parameter: the tensor was an ``nn.Parameter``.
        storage: the ``StorageRef`` it views (``None`` for meta tensors).
        kind: ``"dense"``, or what else it is: ``"meta"`` and ``"wrapper"`` (no data),
            ``"quantized"``, ``"sparse_coo"``/``"sparse_csr"``/``"sparse_csc"``/
            ``"sparse_bsr"``/``"sparse_bsc"``, ``"nested"``.
        components: the parts of a non-dense tensor, as saved: quantizer parameters
            (``qscheme``, ``scale``, ``zero_point``, ``axis``), sparse ``indices``/
            ``values`` (or ``compressed_indices``/``plain_indices``/``values``), nested
            ``buffer``/``sizes``/``strides``/``offsets``.
        attrs: extra Python state saved with the tensor (parameter/subclass ``__dict__``).
        type_name: the tensor's class as saved (``torch.Tensor``, ``torch.nn.parameter.Parameter``, ...).
    """

    __slots__ = (
        "shape",
        "dtype",
        "_stride",
        "_offset",
        "requires_grad",
        "is_parameter",
        "storage",
        "kind",
        "attrs",
        "type_name",
        "metadata",
        "components",
        "__weakref__",
    )
    shape: Size
    dtype: DType
    _stride: tuple[int, ...]
    _offset: int
    requires_grad: bool
    is_parameter: bool
    storage: StorageRef | None
    kind: str
    attrs: dict[str, Any]
    type_name: str
    metadata: dict[str, Any]
    components: dict[str, Any]

    def __init__(
        self,
        *,
        storage: StorageRef | None,
        dtype: DType,
        shape: tuple[int, ...],
        stride: tuple[int, ...],
        storage_offset: int,
        requires_grad: bool = False,
        kind: str = "dense",
        metadata: dict[str, Any] | None = None,
    ) -> None:
        _fill(
            self,
            storage,
            dtype,
            Size(shape),
            tuple(stride),
            storage_offset,
            bool(requires_grad),
            kind,
            metadata,
        )

    # -- metadata, with torch's names ---------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    def dim(self) -> int:
        return len(self.shape)

    def size(self, dim: int | None = None) -> Any:
        return self.shape if dim is None else self.shape[dim]

    def stride(self, dim: int | None = None) -> Any:
        return self._stride if dim is None else self._stride[dim]

    def storage_offset(self) -> int:
        return self._offset

    def numel(self) -> int:
        return self.shape.numel()

    def nelement(self) -> int:
        return self.numel()

    def element_size(self) -> int:
        return self.dtype.itemsize

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.numel() * self.dtype.itemsize

    @property
    def device(self) -> Device:
        if self.storage is None:
            return Device("meta")
        return Device.parse(self.storage.location)

    @property
    def is_meta(self) -> bool:
        return self.storage is None

    def is_contiguous(self) -> bool:
        if self.numel() == 0:  # torch calls every empty tensor contiguous
            return True
        expected = 1
        for size, stride in zip(reversed(self.shape), reversed(self._stride), strict=False):
            if size != 1 and stride != expected:
                return False
            expected *= size
        return True

    @property
    def storage_key(self) -> str | None:
        return None if self.storage is None else self.storage.key

    def _element_span(self) -> tuple[int, int]:
        """First and one-past-last storage element this tensor can touch."""
        if self.numel() == 0:
            return self._offset, self._offset
        last = self._offset
        for size, stride in zip(self.shape, self._stride, strict=False):
            last += (size - 1) * stride
        return self._offset, last + 1

    @property
    def byte_range(self) -> tuple[int, int] | None:
        """``(start, stop)``: absolute offsets in the file of the bytes this tensor spans
        (``None`` for meta tensors). Reads the storage member's local header once."""
        if self.storage is None or self.storage.reader is None:
            return None
        _member, start, _size = self.storage.reader.storage_location(self.storage)
        first, stop = self._element_span()
        item = self.dtype.itemsize
        return start + first * item, start + stop * item

    # -- data --------------------------------------------------------------------------
    def _reader(self) -> StorageReader:
        """The reader of this tensor's storage (``no-storage`` when it has none)."""
        storage = self.storage
        if storage is None or storage.reader is None:
            raise error("no-storage", f"a {self.kind} tensor has no data to read")
        return storage.reader

    def _raw(self) -> memoryview:
        """The bytes of the storage elements this tensor spans (first to last), checked
        against the storage; empty for an empty tensor."""
        storage = self.storage
        if storage is None or storage.reader is None:
            raise error("no-storage", f"a {self.kind} tensor has no data to read")
        if self.numel() == 0:  # touches no element: any offset is valid, as in torch
            return memoryview(b"")
        item = self.dtype.itemsize
        first, stop = self._element_span()
        if stop * item > storage.nbytes:
            raise error(
                "tensor-out-of-storage",
                f"tensor spans storage bytes {first * item}..{stop * item} but storage "
                f"{storage.key!r} holds {storage.nbytes}",
                path=storage.reader.path,
            )
        return storage.reader.storage_view(storage, first * item, stop * item)

    def _span(self) -> np.ndarray[Any, Any]:
        """The storage elements this tensor spans, first to last, as raw bits in native
        byte order: a read-only 1-D array of ``uint8/16/32/64`` (``complex128`` for
        16-byte elements). ``numpy()`` and ``to_torch()`` stride and view it."""
        import numpy as np  # noqa: PLC0415 - keeps `import ckptpeek` light

        item = self.dtype.itemsize
        carrier = np.dtype(f"u{item}") if item <= 8 else np.dtype("c16")
        buf = self._raw()
        if self.numel() == 0:
            return np.empty((0,), dtype=carrier)
        unit = item // 2 if self.dtype.kind == "c" else item  # complex: swap each half
        order = self._reader().byteorder
        if order != sys.byteorder and unit > 1:
            # written on a machine of the other byte order: torch swaps on load, so do we
            flat = np.frombuffer(buf, dtype=("<" if order == "little" else ">") + f"u{unit}")
            flat = flat.astype(f"u{unit}")
            flat.flags.writeable = False
        else:
            flat = np.frombuffer(buf, dtype=f"u{unit}")
        return flat.view(carrier)

    def _bits(self) -> np.ndarray[Any, Any]:
        import numpy as np  # noqa: PLC0415

        item = self.dtype.itemsize
        _check_numpy_size(tuple(self.shape), item)
        span = self._span()
        # a dim of size 1, or any dim of an empty tensor, never steps: any stride in int64
        # is valid there, but numpy wants strides that fit its intp
        empty = self.numel() == 0
        strides = tuple(
            0 if empty or size <= 1 else st * item
            for size, st in zip(self.shape, self._stride, strict=False)
        )
        return np.lib.stride_tricks.as_strided(
            span, shape=tuple(self.shape), strides=strides, writeable=False
        )

    def numpy(self, *, max_bytes: int | None = None) -> np.ndarray[Any, Any]:
        """The values, as a read-only numpy array.

        Only this tensor's bytes are read, into memory (never memory-mapped: a file
        truncated under a mapping crashes the process). A view of a tensor's span with
        its strides (an expanded tensor costs only its storage); big-endian files are
        converted to native order, and a tensor with its conj or neg bit set is resolved,
        each a copy (``max_bytes``, default ``Limits.max_dense_bytes``, bounds the
        latter). bfloat16 and float8 types need ``ml_dtypes``.

        Raises:
            UnsupportedError: ``unsupported-dtype`` (no numpy type holds it, as with
                torch's own ``numpy()``), ``needs-ml-dtypes``, ``no-storage``,
                ``numpy-too-large``.
            FormatError: ``tensor-out-of-storage`` when the tensor claims elements past
                its storage; ``file-changed`` when the file changed since it was opened.
            LimitError: ``limit-dense-size``.
        """
        import numpy as np  # noqa: PLC0415 - keeps `import ckptpeek` light

        if self.kind != "dense":
            raise error(
                "not-dense",
                _NOT_DENSE.get(self.kind, f"a {self.kind} tensor has no values of its own to read"),
            )
        arr = self._bits().view(numpy_dtype(self.dtype))
        if self.metadata.get("conj") or self.metadata.get("neg"):
            check_dense_size(tuple(self.shape), self.dtype.itemsize, max_bytes, "numpy()")
        if self.metadata.get("conj"):
            arr = np.conj(arr)
        if self.metadata.get("neg"):
            arr = np.negative(arr)
        return arr

    def _dense_view(self, kind: str) -> TensorRef:
        """This tensor's storage view as a dense tensor of its own dtype (internal)."""
        if self.kind != kind:
            raise error("not-dense", f"only a {kind} tensor has this (this one is {self.kind})")
        view = TensorRef(
            storage=self.storage,
            dtype=self.dtype,
            shape=self.shape,
            stride=self._stride,
            storage_offset=self._offset,
        )
        return view

    def int_repr(self) -> np.ndarray[Any, Any]:
        """The stored integers of a quantized tensor (``torch.Tensor.int_repr()``)."""
        import numpy as np  # noqa: PLC0415

        view = self._dense_view("quantized")
        view.dtype = _QUANT_INT[self.dtype.name]
        return np.asarray(view.numpy())

    def dequantize(self, *, max_bytes: int | None = None) -> np.ndarray[Any, Any]:
        """The values of a quantized tensor as float32: ``(q - zero_point) * scale``,
        per tensor or per channel along ``components["axis"]`` (an array of its own: at
        most ``max_bytes``, default ``Limits.max_dense_bytes``)."""
        import numpy as np  # noqa: PLC0415

        check_dense_size(tuple(self.shape), 4, max_bytes, "dequantize()")
        q = self.int_repr().astype(np.float32)
        scale, zero = self.components["scale"], self.components["zero_point"]
        if "axis" in self.components:
            shape = [1] * q.ndim
            shape[self.components["axis"]] = -1
            scale = np.asarray(
                scale.numpy() if isinstance(scale, TensorRef) else scale, dtype=np.float64
            ).reshape(shape)
            zero = np.asarray(
                zero.numpy() if isinstance(zero, TensorRef) else zero, dtype=np.float64
            ).reshape(shape)
        values: np.ndarray[Any, Any] = ((q - zero) * scale).astype(np.float32)
        return values

    def to_dense(self, *, max_bytes: int | None = None) -> np.ndarray[Any, Any]:
        """The values of a sparse tensor (COO, CSR, CSC) as a dense numpy array; the
        values of a dense one.

        The indices are checked first as torch's sparse invariants check them (which
        ``torch.load`` applies only when asked: it loads such a file, and its
        ``to_dense()`` is then undefined), and the result's size against ``max_bytes``
        (default ``Limits.max_dense_bytes``) before it is allocated.

        Raises:
            FormatError: ``sparse-bad-indices``.
            LimitError: ``limit-dense-size``.
        """
        import numpy as np  # noqa: PLC0415

        if self.kind == "dense":
            return self.numpy()
        parts = self.components
        shape = tuple(self.shape)
        if self.kind == "sparse_coo":
            indices, values = parts["indices"], parts["values"]
            _check_index_dtype(indices, "indices")
            check_dense_size(shape, values.dtype.itemsize, max_bytes, "to_dense()")
            coords = indices.numpy()
            sparse_dim = coords.shape[0]
            if coords.shape[1]:
                low, high = coords.min(axis=1), coords.max(axis=1)
                for dim in range(sparse_dim):
                    if low[dim] < 0 or high[dim] >= shape[dim]:
                        raise _bad_indices(
                            f"sparse COO tensor of size {_dims_text(shape)}: indices of dim "
                            f"{dim} run from {low[dim]} to {high[dim]}"
                        )
            vals = values.numpy()
            out = np.zeros(shape, dtype=vals.dtype)
            if sparse_dim == 0:  # every value is the whole (dense) tensor: they add up
                out += vals.sum(axis=0, dtype=vals.dtype)
            else:
                np.add.at(out, tuple(coords.astype(np.intp)), vals)  # duplicates add up
            return out
        if self.kind in ("sparse_csr", "sparse_csc"):
            comp, plain, values = (
                parts["compressed_indices"],
                parts["plain_indices"],
                parts["values"],
            )
            if comp.ndim != 1 or values.ndim != 1 or len(shape) != 2:
                raise error(
                    "not-dense",
                    "to_dense() of batched or hybrid compressed sparse tensors is not supported",
                )
            _check_index_dtype(comp, "compressed indices")
            _check_index_dtype(plain, "plain indices")
            major_dim = 0 if self.kind == "sparse_csr" else 1
            _check_compressed(shape, major_dim, comp.shape[0], plain.shape, values.shape)
            check_dense_size(shape, values.dtype.itemsize, max_bytes, "to_dense()")
            compressed = comp.numpy().astype(np.int64)
            minor = plain.numpy().astype(np.int64)
            _check_compressed_values(shape, major_dim, compressed, minor)
            major = np.repeat(np.arange(len(compressed) - 1), np.diff(compressed))
            rows, cols = (major, minor) if major_dim == 0 else (minor, major)
            vals = values.numpy()
            out = np.zeros(shape, dtype=vals.dtype)
            out[rows, cols] = vals  # distinct positions (checked)
            return out
        raise error("not-dense", f"to_dense() of a {self.kind} tensor is not supported")

    def unbind(self) -> list[TensorRef]:
        """The components of a nested tensor, each a view into its buffer."""
        if self.kind != "nested":
            raise error("not-dense", f"unbind() is for nested tensors (this one is {self.kind})")
        parts = self.components
        buffer = parts["buffer"]
        count = self.shape[0]  # one component per row of sizes (checked at the rebuild)
        if count > MAX_UNBIND:
            raise error(
                "limit-dense-size",
                f"unbind() of a nested tensor of {count} components would build "
                f"{count} tensors, more than {MAX_UNBIND} (the limit)",
            )
        sizes, strides = parts["sizes"].tolist(), parts["strides"].tolist()
        offsets = parts["offsets"].tolist()
        out = []
        for size, stride, offset in zip(sizes, strides, offsets, strict=False):
            # rows of the file's int64 tensors: checked as torch.load checks a tensor
            start = buffer.storage_offset() + offset
            check_layout(tuple(size), tuple(stride), start, buffer.storage, self.dtype)
            out.append(
                TensorRef(
                    storage=buffer.storage,
                    dtype=self.dtype,
                    shape=tuple(size),
                    stride=tuple(stride),
                    storage_offset=start,
                    requires_grad=self.requires_grad,
                )
            )
        return out

    def item(self) -> Any:
        """The single value of a one-element tensor, as a Python number."""
        if self.numel() != 1:
            raise ValueError(
                f"a tensor with {self.numel()} elements cannot be converted to a Python scalar"
            )
        fmt = _STRUCT_FORMATS.get(self.dtype.name)
        storage = self.storage
        if (
            fmt is not None
            and self.kind == "dense"
            and storage is not None
            and storage.reader is not None
        ):
            # metric values are one-element tensors: read them without numpy
            raw = bytes(self._raw())
            order = "<" if storage.reader.byteorder == "little" else ">"
            if self.dtype.name == "bfloat16":  # the top half of a float32
                (bits,) = struct.unpack(order + "H", raw)
                value = struct.unpack("<f", (bits << 16).to_bytes(4, "little"))[0]
            elif self.dtype.kind == "c":
                re, im = struct.unpack(order + fmt * 2, raw)
                value = complex(re, im)
            else:
                (value,) = struct.unpack(order + fmt, raw)
            if self.metadata.get("conj") and isinstance(value, complex):
                value = value.conjugate()
            if self.metadata.get("neg"):
                value = -value
            return value
        value = self.numpy().reshape(()).item()
        if self.dtype.name == "bfloat16" or self.dtype.name.startswith("float8"):
            return float(value)
        return value

    def tolist(self) -> Any:
        """The values as nested lists (``torch.Tensor.tolist()``), at most ``MAX_TOLIST``
        objects: the values and the lists holding them (an empty ``(2**32, 0)`` tensor
        is 2**32 empty lists)."""
        built, level = 0, 1
        for size in self.shape:
            level *= size
            built += level
            if built > MAX_TOLIST:
                raise error(
                    "limit-dense-size",
                    f"tolist() of a tensor of size {_dims_text(tuple(self.shape))} builds "
                    f"more than {MAX_TOLIST} lists and values (the limit)",
                )
        arr = self.numpy()
        if self.dtype.name == "bfloat16" or self.dtype.name.startswith("float8"):
            arr = arr.astype("float32")
        return arr.tolist()

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __bool__(self) -> bool:
        return bool(self.item())

    def __index__(self) -> int:
        if self.dtype.kind not in "iub":
            raise TypeError("only integer tensors can be converted to an index")
        return int(self.item())

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def to_torch(self) -> Any:
        """A real ``torch.Tensor`` with these values and strides (imports torch)."""
        import numpy as np  # noqa: PLC0415
        import torch  # noqa: PLC0415 - optional dependency, only here

        torch_dtype = getattr(torch, self.dtype.name)
        if self.kind != "dense" and self.kind != "meta":
            return self._to_torch_composite(torch)
        if self.storage is None:
            t = torch.empty_strided(
                tuple(self.shape), self._stride, dtype=torch_dtype, device="meta"
            )
        elif self.dtype.kind in "qx":
            raise error("unsupported-dtype", f"to_torch() of {self.dtype} is not supported")
        else:
            flat = torch.from_numpy(np.array(self._span()))  # a writable copy of the span
            if flat.dtype != torch_dtype:
                unsigned = {1: torch.uint8, 2: torch.uint16, 4: torch.uint32, 8: torch.uint64}
                flat = flat.view(unsigned[self.dtype.itemsize]).view(torch_dtype)
            t = torch.as_strided(flat, tuple(self.shape), self._stride)
            if self.metadata:  # conj/neg bits, set exactly as torch.load sets them
                torch._utils.set_tensor_metadata(t, self.metadata)
        if self.is_parameter:
            return torch.nn.Parameter(t, requires_grad=self.requires_grad)
        return t.requires_grad_(self.requires_grad) if self.requires_grad else t

    def _to_torch_composite(self, torch: Any) -> Any:
        """to_torch() of quantized, sparse and nested tensors, from their parts."""
        parts = self.components
        if self.kind == "quantized":
            ints = torch.from_numpy(self.int_repr().copy())
            if "axis" in parts:
                scale, zero = (
                    p.to_torch() if isinstance(p, TensorRef) else torch.tensor(p)
                    for p in (parts["scale"], parts["zero_point"])
                )
                return torch._make_per_channel_quantized_tensor(ints, scale, zero, parts["axis"])
            return torch._make_per_tensor_quantized_tensor(
                ints, parts["scale"], int(parts["zero_point"])
            )
        if self.kind == "sparse_coo":
            return torch.sparse_coo_tensor(
                parts["indices"].to_torch(),
                parts["values"].to_torch(),
                tuple(self.shape),
                is_coalesced=parts["is_coalesced"],
            )
        if self.kind.startswith("sparse_"):
            return torch.sparse_compressed_tensor(
                parts["compressed_indices"].to_torch(),
                parts["plain_indices"].to_torch(),
                parts["values"].to_torch(),
                tuple(self.shape),
                layout=getattr(torch, self.kind),
            )
        if self.kind == "nested":
            return torch.nested.nested_tensor([t.to_torch() for t in self.unbind()])
        raise error("not-dense", f"to_torch() of a {self.kind} tensor is not supported")

    def __repr__(self) -> str:
        extra = ""
        if self.storage is not None and str(self.device) != "cpu":
            extra += f", device='{self.device}'"
        if self.requires_grad:
            extra += ", requires_grad=True"
        if self.kind != "dense":
            extra += f", kind={self.kind!r}"
        name = "Parameter" if self.is_parameter else "TensorRef"
        return f"{name}(shape={list(self.shape)}, dtype={self.dtype}{extra})"
