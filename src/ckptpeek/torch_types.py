"""Torch's value types without torch: dtypes, ``torch.Size``, ``torch.device``, storage classes.

Each stand-in is immutable (frozen, slotted), so the same object can be handed to every
pickle: nothing a file does through BUILD or SETSTATE can change it. Names and sizes
follow ``torch/_utils.py`` (``_element_size``) and ``torch/storage.py``
(``_dtype_to_storage_type_map``); dtypes newer than that map are saved as an
``UntypedStorage`` plus a dtype argument (``_rebuild_tensor_v3``).
"""

from __future__ import annotations

from types import MappingProxyType

from ._frozen import Frozen

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from typing import Any, Final

__all__ = (
    "DType",
    "DTYPES",
    "Size",
    "Device",
    "StorageType",
    "STORAGE_TYPES",
    "Layout",
    "MemoryFormat",
    "QScheme",
    "TORCH_CONSTANTS",
)


class DType(Frozen):
    """A torch dtype: ``str(d) == "torch.float32"``, ``d.itemsize == 4``.

    Compares equal to the real ``torch.float32`` (by name) so code written against
    torch keeps working; ``numpy_name`` is the numpy (or ``ml_dtypes``) type that holds
    the same bits, or ``None`` when there is none (quantized, sub-byte, complex32).
    """

    __slots__ = ("name", "itemsize", "kind", "numpy_name")
    name: str
    itemsize: int
    kind: (
        str  # "f" float, "c" complex, "i" signed, "u" unsigned, "b" bool, "q" quantized, "x" other
    )
    numpy_name: str | None

    def __init__(self, name: str, itemsize: int, kind: str, numpy_name: str | None = None) -> None:
        super().__init__(name, itemsize, kind, numpy_name)

    @property
    def is_floating_point(self) -> bool:
        return self.kind == "f"

    @property
    def is_complex(self) -> bool:
        return self.kind == "c"

    @property
    def is_signed(self) -> bool:
        return self.kind in "fcqi"

    def __str__(self) -> str:
        return f"torch.{self.name}"

    __repr__ = __str__

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DType):
            return self.name == other.name
        if type(other).__name__ == "dtype" and type(other).__module__ == "torch":
            return str(other) == str(self)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("torch.dtype", self.name))

    def __reduce__(self) -> Any:
        return (_dtype_by_name, (self.name,))


def _dtype_by_name(name: str) -> DType:
    return DTYPES[name]


_DTYPE_ROWS: Final = (
    # name, itemsize, kind, numpy/ml_dtypes name, aliases
    ("float32", 4, "f", "float32", ("float",)),
    ("float64", 8, "f", "float64", ("double",)),
    ("float16", 2, "f", "float16", ("half",)),
    ("bfloat16", 2, "f", "bfloat16", ()),
    ("float8_e4m3fn", 1, "f", "float8_e4m3fn", ()),
    ("float8_e5m2", 1, "f", "float8_e5m2", ()),
    ("float8_e4m3fnuz", 1, "f", "float8_e4m3fnuz", ()),
    ("float8_e5m2fnuz", 1, "f", "float8_e5m2fnuz", ()),
    ("float8_e8m0fnu", 1, "f", "float8_e8m0fnu", ()),
    ("float4_e2m1fn_x2", 1, "x", None, ()),
    ("complex32", 4, "c", None, ("chalf",)),
    ("complex64", 8, "c", "complex64", ("cfloat",)),
    ("complex128", 16, "c", "complex128", ("cdouble",)),
    ("uint8", 1, "u", "uint8", ()),
    ("uint16", 2, "u", "uint16", ()),
    ("uint32", 4, "u", "uint32", ()),
    ("uint64", 8, "u", "uint64", ()),
    ("int8", 1, "i", "int8", ()),
    ("int16", 2, "i", "int16", ("short",)),
    ("int32", 4, "i", "int32", ("int",)),
    ("int64", 8, "i", "int64", ("long",)),
    ("bool", 1, "b", "bool", ()),
    ("qint8", 1, "q", "int8", ()),
    ("quint8", 1, "q", "uint8", ()),
    ("qint32", 4, "q", "int32", ()),
    ("quint4x2", 1, "q", None, ()),
    ("quint2x4", 1, "q", None, ()),
    ("bits1x8", 1, "x", None, ()),
    ("bits2x4", 1, "x", None, ()),
    ("bits4x2", 1, "x", None, ()),
    ("bits8", 1, "x", None, ()),
    ("bits16", 2, "x", None, ()),
    *((f"uint{n}", 1, "x", None, ()) for n in range(1, 8)),
    *((f"int{n}", 1, "x", None, ()) for n in range(1, 8)),
)

_dtypes: dict[str, DType] = {}
_aliases: dict[str, DType] = {}
for _name, _size, _kind, _np, _alias in _DTYPE_ROWS:
    _dtypes[_name] = DType(_name, _size, _kind, _np)
    for _a in _alias:
        _aliases[_a] = _dtypes[_name]
DTYPES: Final = MappingProxyType(_dtypes)
#: every ``torch.<name>`` attribute that names a dtype, aliases included
DTYPE_ATTRS: Final = MappingProxyType({**_dtypes, **_aliases})


class Size(tuple[int, ...]):
    """``torch.Size``: a tuple of ints with ``numel()``."""

    __slots__ = ()

    def numel(self) -> int:
        n = 1
        for d in self:
            n *= d
        return n

    def __repr__(self) -> str:
        return f"torch.Size({list(self)!r})"


class Device(Frozen):
    """``torch.device``: ``str(Device("cuda", 0)) == "cuda:0"``; equal to that string."""

    __slots__ = ("type", "index")
    type: str
    index: int | None

    def __init__(self, type: str, index: int | None = None) -> None:  # noqa: A002 - torch's name
        super().__init__(type, index)

    @classmethod
    def parse(cls, spec: str | Device, index: int | None = None) -> Device:
        if isinstance(spec, Device):
            return spec
        if not isinstance(spec, str):
            raise TypeError(f"device must be a str, not {type(spec).__name__}")
        if index is None and ":" in spec:
            typ, _, idx = spec.partition(":")
            if idx.isdigit() and len(idx) < 10:
                return cls(typ, int(idx))
            return cls(spec)  # a location torch would not parse either: kept as written
        if index is not None and not isinstance(index, int):
            raise TypeError("device index must be an int")
        return cls(spec, index)

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Device):
            return (self.type, self.index) == (other.type, other.index)
        if isinstance(other, str) or type(other).__module__ == "torch":
            return str(other) == str(self)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(str(self))

    def __repr__(self) -> str:
        idx = "" if self.index is None else f", index={self.index}"
        return f"device(type={self.type!r}{idx})"


class StorageType(Frozen):
    """A storage class named in a persistent id: ``torch.FloatStorage`` (typed, its
    count is in elements) or ``torch.UntypedStorage`` (bytes)."""

    __slots__ = ("name", "dtype")
    name: str
    dtype: DType

    def __init__(self, name: str, dtype: DType) -> None:
        super().__init__(name, dtype)

    def __repr__(self) -> str:
        return f"torch.{self.name}"


_STORAGE_DTYPES: Final = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "BFloat16Storage": "bfloat16",
    "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64",
    "QInt8Storage": "qint8",
    "QInt32Storage": "qint32",
    "QUInt8Storage": "quint8",
    "QUInt4x2Storage": "quint4x2",
    "QUInt2x4Storage": "quint2x4",
    "UntypedStorage": "uint8",
}
STORAGE_TYPES: Final = MappingProxyType(
    {name: StorageType(name, DTYPES[dt]) for name, dt in _STORAGE_DTYPES.items()}
)


class _Named(Frozen):
    """An enum-like torch constant (layout, memory format, qscheme): compares by name."""

    __slots__ = ("name",)
    name: str

    def __init__(self, name: str) -> None:
        super().__init__(name)

    def __str__(self) -> str:
        return f"torch.{self.name}"

    __repr__ = __str__


class Layout(_Named):
    __slots__ = ()


class MemoryFormat(_Named):
    __slots__ = ()


class QScheme(_Named):
    __slots__ = ()


#: other ``torch.<name>`` constants that pickles of tensors name as plain values
TORCH_CONSTANTS: Final = MappingProxyType(
    {
        **{
            n: Layout(n)
            for n in (
                "strided",
                "sparse_coo",
                "sparse_csr",
                "sparse_csc",
                "sparse_bsr",
                "sparse_bsc",
                "_mkldnn",
                "jagged",
            )
        },
        **{
            n: MemoryFormat(n)
            for n in ("contiguous_format", "channels_last", "channels_last_3d", "preserve_format")
        },
        **{
            n: QScheme(n)
            for n in (
                "per_tensor_affine",
                "per_channel_affine",
                "per_tensor_symmetric",
                "per_channel_symmetric",
                "per_channel_affine_float_qparams",
            )
        },
    }
)
