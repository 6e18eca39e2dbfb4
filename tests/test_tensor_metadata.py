"""Tensor metadata that cannot be true is refused at open, as torch.load refuses it.

Every record here is built from scratch (``_builders.Pickle`` + ``torch_zip``, no torch):
one ``{"w": <tensor>}`` pickle per case, its storages exactly as long as their ids say
(torch refuses any other record size). Each family of impossible tensors asserts class,
code, the pickle offset of the REDUCE that builds the tensor and the member, with both
engines; the boundary cases next to them must open with the shape, stride and offset
the file states. Where torch is installed, ``test_torch_agrees`` runs ``torch.load``
(``weights_only=True``: torch's own globals only, nothing else runs) on the same bytes.

The checks run inside the interpreter, at the REDUCE that builds the tensor: the key
path is not known yet there (the SETITEMS that names the tensor comes after it), so
errors carry the pickle offset (and the message the storage key and the layout).
"""

from __future__ import annotations

import functools
import io
import pathlib
import struct
import tracemalloc
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from _builders import Member, Pickle, torch_zip

import ckptpeek
from ckptpeek import FormatError, UnsupportedError
from ckptpeek.tensor import TensorRef, check_layout
from ckptpeek.unpickle import torch_rebuild
from ckptpeek.unpickle.torch_rebuild import TORCH_GLOBALS

I64 = 2**63 - 1
ITEMSIZE = {
    "FloatStorage": 4,
    "DoubleStorage": 8,
    "LongStorage": 8,
    "IntStorage": 4,
    "ByteStorage": 1,
    "QUInt8Storage": 1,
    "QInt8Storage": 1,
    "QInt32Storage": 4,
}
SIX = 6  # storage "0" holds six elements unless a case says otherwise


# ------------------------------------------------------------------------ the record writer


def put_int(p: Pickle, v: int) -> Pickle:
    """Any int: BININT1/BININT2/BININT, else LONG1 (two's complement, little-endian)."""
    if 0 <= v < 65536 or -(2**31) <= v < 2**31:
        return p.int(v)
    n = (v.bit_length() + 8) // 8
    return p.raw(b"\x8a" + bytes([n]) + v.to_bytes(n, "little", signed=True))


def put_ints(p: Pickle, values: tuple[int, ...]) -> Pickle:
    p.mark()
    for v in values:
        put_int(p, v)
    return p.tuple()


def put_float(p: Pickle, v: float) -> Pickle:
    return p.raw(b"G" + struct.pack(">d", v))


def contiguous(shape: tuple[int, ...]) -> tuple[int, ...]:
    out, step = [], 1
    for d in reversed(shape):
        out.append(step)
        step *= max(d, 1)
    return tuple(reversed(out))


class Writer:
    """Writes ``{"w": <tensor>}``; each method pushes one object and returns the offset
    of the REDUCE that builds it (where an error about it is located)."""

    def __init__(self) -> None:
        self.p = Pickle().proto(2).empty_dict().str("w")
        self.storages: dict[str, bytes] = {}

    def storage(self, stype: str, numel: int, key: str | None = None) -> None:
        key = key if key is not None else str(len(self.storages))
        module = "torch.storage" if stype == "UntypedStorage" else "torch"
        self.p.mark().str("storage").glob(module, stype).str(key).str("cpu")
        put_int(self.p, numel).tuple().binpersid()
        self.storages.setdefault(key, bytes(numel * ITEMSIZE.get(stype, 1)))

    def hooks(self) -> None:
        self.p.glob("collections", "OrderedDict").empty_tuple().reduce()

    def call(self, name: str, args: Callable[[], object], module: str = "torch._utils") -> int:
        self.p.glob(module, name).mark()
        args()
        self.p.tuple()
        at = self.p.pos
        self.p.reduce()
        return at

    def v2(
        self,
        offset: int,
        size: tuple[int, ...],
        stride: tuple[int, ...],
        stype: str = "FloatStorage",
        numel: int = SIX,
    ) -> int:
        def args() -> None:
            self.storage(stype, numel)
            put_int(self.p, offset)
            put_ints(self.p, size)
            put_ints(self.p, stride)
            self.p.false()
            self.hooks()

        return self.call("_rebuild_tensor_v2", args)

    def v1(self, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> int:
        def args() -> None:
            self.storage("FloatStorage", SIX)
            put_int(self.p, offset)
            put_ints(self.p, size)
            put_ints(self.p, stride)

        return self.call("_rebuild_tensor", args)

    def v3(
        self,
        offset: int,
        size: tuple[int, ...],
        stride: tuple[int, ...],
        dtype: str,
        stype: str = "UntypedStorage",
        numel: int = 24,
    ) -> int:
        def args() -> None:
            self.storage(stype, numel)
            put_int(self.p, offset)
            put_ints(self.p, size)
            put_ints(self.p, stride)
            self.p.false()
            self.hooks()
            self.p.glob("torch", dtype)

        return self.call("_rebuild_tensor_v3", args)

    def meta(self, size: tuple[int, ...], stride: tuple[int, ...]) -> int:
        def args() -> None:
            self.p.glob("torch", "float32")
            put_ints(self.p, size)
            put_ints(self.p, stride)
            self.p.false()

        return self.call("_rebuild_meta_tensor_no_storage", args)

    def wrapper(self, size: tuple[int, ...], stride: tuple[int, ...], offset: int) -> int:
        def args() -> None:
            self.p.glob("my_pkg", "WrapperTensor")  # a placeholder class, never resolved
            self.p.glob("torch", "float32")
            put_ints(self.p, size)
            put_ints(self.p, stride)
            put_int(self.p, offset)
            self.p.glob("torch", "strided")
            self.p.str("cpu")
            self.p.false()

        return self.call("_rebuild_wrapper_subclass", args)

    def qtensor(
        self,
        offset: int,
        size: tuple[int, ...],
        stride: tuple[int, ...],
        qparams: Callable[[Writer], None],
        stype: str = "QUInt8Storage",
        numel: int = SIX,
    ) -> int:
        def args() -> None:
            self.storage(stype, numel)
            put_int(self.p, offset)
            put_ints(self.p, size)
            put_ints(self.p, stride)
            qparams(self)
            self.p.false()
            self.hooks()

        return self.call("_rebuild_qtensor", args)

    def coo(
        self,
        indices: tuple[int, ...],
        values: tuple[int, ...],
        size: tuple[int, ...],
        values_numel: int | None = None,
    ) -> int:
        """A COO tensor of ``size`` from a zero LongStorage index tensor of shape
        ``indices`` and a FloatStorage values tensor of shape ``values``."""

        def dense(shape: tuple[int, ...], stype: str, numel: int) -> None:
            self.v2(0, shape, contiguous(shape), stype, numel)

        def args() -> None:
            self.p.glob("torch.serialization", "_get_layout").str("torch.sparse_coo")
            self.p.tuple1().reduce()
            self.p.mark()
            n_idx = max(1, _prod(indices))
            dense(indices, "LongStorage", n_idx)
            dense(values, "FloatStorage", values_numel or max(1, _prod(values)))
            self.p.glob("torch", "Size")
            put_ints(self.p, size).tuple1().reduce()
            self.p.false()
            self.p.tuple()

        # _rebuild_sparse_tensor(layout, data): two arguments, the data a tuple
        self.p.glob("torch._utils", "_rebuild_sparse_tensor")
        args()
        self.p.tuple2()
        at = self.p.pos
        self.p.reduce()
        return at

    def nested(
        self,
        buffer: tuple[int, ...],
        sizes: tuple[int, ...],
        strides: tuple[int, ...],
        offsets: tuple[int, ...],
        meta_stype: str = "LongStorage",
    ) -> int:
        def args() -> None:
            self.v2(0, buffer, contiguous(buffer), "FloatStorage", max(1, _prod(buffer)))
            for shape in (sizes, strides):
                self.v2(0, shape, contiguous(shape), meta_stype, max(1, _prod(shape)))
            self.v2(0, offsets, contiguous(offsets), meta_stype, max(1, _prod(offsets)))

        return self.call("_rebuild_nested_tensor", args)

    def parameter(self, inner: Callable[[], int]) -> int:
        """``_rebuild_parameter(<tensor>, True, OrderedDict())``: returns the inner offset."""
        self.p.glob("torch._utils", "_rebuild_parameter").mark()
        at = inner()
        self.p.raw(b"\x88")  # NEWTRUE
        self.hooks()
        self.p.tuple().reduce()
        return at

    def from_type_v2(self, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> int:
        """``_rebuild_from_type_v2(_rebuild_tensor_v2, Parameter, (args), {})``: the tensor
        is built by the outer REDUCE."""
        self.p.glob("torch._tensor", "_rebuild_from_type_v2").mark()
        self.p.glob("torch._utils", "_rebuild_tensor_v2")
        self.p.glob("torch.nn.parameter", "Parameter")
        self.p.mark()
        self.storage("FloatStorage", SIX)
        put_int(self.p, offset)
        put_ints(self.p, size)
        put_ints(self.p, stride)
        self.p.false()
        self.hooks()
        self.p.tuple()
        self.p.empty_dict()
        self.p.tuple()
        at = self.p.pos
        self.p.reduce()
        return at

    def file(self) -> bytes:
        self.p.setitem().stop()
        keys = sorted(self.storages, key=int)
        return torch_zip(
            bytes(self.p),
            storage=self.storages.get("0", b""),
            extra=[Member(f"archive/data/{k}", self.storages[k]) for k in keys if k != "0"],
        )


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def per_tensor(scheme: str = "per_tensor_affine", scale: Any = 0.5, zero: Any = 3) -> Any:
    def write(w: Writer) -> None:
        w.p.mark().glob("torch", scheme)
        for v in (scale, zero):
            if isinstance(v, float):
                put_float(w.p, v)
            else:
                put_int(w.p, v)
        w.p.tuple()

    return write


def per_channel(
    scales: Any,
    zeros: Any,
    axis: int,
    scheme: str = "per_channel_affine",
    scale_stype: str = "DoubleStorage",
) -> Any:
    """Per-channel qparams; ``scales``/``zeros`` a list of numbers, or an int: a tensor of
    that many entries (DoubleStorage / LongStorage, as torch writes them)."""

    def write(w: Writer) -> None:
        w.p.mark().glob("torch", scheme)
        for part, stype in ((scales, scale_stype), (zeros, "LongStorage")):
            if isinstance(part, int):
                w.v2(0, (part,), (1,), stype, max(part, 1))
            else:
                w.p.empty_list().mark()
                for v in part:
                    (put_float if isinstance(v, float) else put_int)(w.p, v)
                w.p.raw(b"e")  # APPENDS
        put_int(w.p, axis)
        w.p.tuple()

    return write


# ---------------------------------------------------------------------------- the cases


@dataclass
class Case:
    name: str
    build: Callable[[Writer], int]
    code: str | None  # None: a valid tensor, it must open
    kind: str = "dense"  # dense, meta, wrapper, quantized, sparse, nested
    #: torch loads it (rewriting the negative value or keeping a negative size) while
    #: ckptpeek refuses it by design: asserted as such by the differential
    negative: bool = False
    expect: tuple[Any, ...] | None = field(default=None)  # (shape, stride, offset) if valid

    def record(self) -> tuple[bytes, int]:
        w = Writer()
        at = self.build(w)
        return w.file(), at


def dense_case(
    name: str,
    offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    code: str | None,
    **kw: Any,
) -> Case:
    negative = min((*size, *stride, offset), default=0) < 0
    return Case(
        name,
        lambda w: w.v2(offset, size, stride, **kw),
        code,
        negative=negative,
        expect=(size, stride, offset),
    )


def out_of_storage() -> Iterator[Case]:
    """Views of a 6-element storage: the largest offset that fits opens, one more (and
    far more) does not. Every dense rebuild function, and a quantized one."""
    shapes = [
        ((), ()),
        ((6,), (1,)),
        ((2, 3), (3, 1)),
        ((3, 2), (1, 3)),  # a transpose
        ((2, 3), (0, 1)),  # an expanded row
        ((1, 1, 3), (9, 9, 2)),  # size-1 dims: their stride does not matter
        ((4, 2), (1, 1)),  # overlapping rows
    ]
    for size, stride in shapes:
        span = 1 + sum((s - 1) * st for s, st in zip(size, stride, strict=True))
        top = SIX - span
        tag = f"{size}/{stride}"
        yield dense_case(f"largest offset {tag}", top, size, stride, None)
        for past in (top + 1, top + 7, 2**40, I64 - span + 1):
            yield dense_case(f"offset {past} {tag}", past, size, stride, "tensor-out-of-storage")
        yield Case(
            f"v1 past {tag}",
            lambda w, o=top + 1, s=size, st=stride: w.v1(o, s, st),
            "tensor-out-of-storage",
        )
        yield Case(f"v1 fits {tag}", lambda w, o=top, s=size, st=stride: w.v1(o, s, st), None)
        yield Case(
            f"quantized past {tag}",
            lambda w, o=top + 1, s=size, st=stride: w.qtensor(o, s, st, per_tensor()),
            "tensor-out-of-storage",
            kind="quantized",
        )
        yield Case(
            f"quantized fits {tag}",
            lambda w, o=top, s=size, st=stride: w.qtensor(o, s, st, per_tensor()),
            None,
            kind="quantized",
            expect=(size, stride, top),
        )
    yield dense_case("stride reaches past", 0, (2, 3), (4, 1), "tensor-out-of-storage")
    yield dense_case("stride 2**62 x 2", 0, (2,), (2**62,), "tensor-out-of-storage")
    yield dense_case("stride int64 max, size 1", 0, (1,), (I64,), None)
    yield dense_case("stride int64 max, size 2", 0, (2,), (I64,), "tensor-out-of-storage")
    yield dense_case("empty storage, 1 element", 0, (1,), (1,), "tensor-out-of-storage", numel=0)
    # _rebuild_tensor_v3: the span counts in the tensor's dtype, the storage in bytes
    for dtype, n, code in (("float64", 3, None), ("float64", 4, "tensor-out-of-storage")):
        yield Case(
            f"v3 {n} x {dtype} in 24 bytes",
            lambda w, d=dtype, n=n: w.v3(0, (n,), (1,), d),
            code,
            expect=((n,), (1,), 0),
        )
    for n, code in ((12, None), (13, "tensor-out-of-storage")):
        yield Case(
            f"v3 {n} x uint16 on a FloatStorage",
            lambda w, n=n: w.v3(0, (n,), (1,), "uint16", "FloatStorage", SIX),
            code,
            expect=((n,), (1,), 0),
        )
    yield Case(
        "v3 float64 at offset 3 of 24 bytes",
        lambda w: w.v3(3, (1,), (1,), "float64"),
        "tensor-out-of-storage",
    )
    yield Case(
        "Parameter around a tensor past its storage",
        lambda w: w.parameter(lambda: w.v2(1, (6,), (1,))),
        "tensor-out-of-storage",
    )
    yield Case(
        "_rebuild_from_type_v2 of a tensor past its storage",
        lambda w: w.from_type_v2(0, (7,), (1,)),
        "tensor-out-of-storage",
    )


def empty_tensors() -> Iterator[Case]:
    """An empty tensor needs no storage: any offset and stride in int64 opens."""
    for size in ((0,), (0, 5), (5, 0), (3, 0, 2)):
        for offset in (0, 6, 100, 2**40, I64):
            yield dense_case(f"empty {size} at {offset}", offset, size, contiguous(size), None)
    yield dense_case("empty, huge stride", 3, (0, 5), (I64, I64), None)
    yield dense_case("empty on an empty storage", 9, (0,), (1,), None, numel=0)
    yield dense_case("empty, offset 2**63", 2**63, (0,), (1,), "tensor-bad-stride")


def bad_shapes() -> Iterator[Case]:
    big = (2**63, 2**64, 2**100)
    for v in big:
        yield dense_case(f"size {v}", 0, (v,), (0,), "tensor-bad-shape")
        yield dense_case(f"size {v} beside a 0", 0, (v, 0), (1, 1), "tensor-bad-shape")
    yield dense_case("size int64 max, stride 0", 0, (I64,), (0,), None)
    for size in ((-1,), (2, -3), (-1, 0), (0, -(2**63))):
        yield dense_case(f"size {size}", 0, size, (1,) * len(size), "tensor-bad-shape")
    # element counts past int64 (torch: "numel: integer multiplication overflow")
    for size in ((2**32,) * 3, (2**32, 2**31), (2**21,) * 3, (2**40, 2**40, 0), (2**32, 2**32, 0)):
        yield dense_case(f"numel of {size}", 0, size, (0,) * len(size), "tensor-bad-shape")
    for size in ((2**31, 2**31), (2**31, 2**32 - 1), (0, 2**40, 2**40), (2**32, 2**31, 0)):
        yield dense_case(f"numel of {size} fits", 0, size, (0,) * len(size), None)
    yield Case(
        "meta numel overflow",
        lambda w: w.meta((2**32,) * 3, (0, 0, 0)),
        "tensor-bad-shape",
        kind="meta",
    )
    yield Case("meta size -1", lambda w: w.meta((-1,), (1,)), "tensor-bad-shape", kind="meta")
    yield Case("meta size 2**64", lambda w: w.meta((2**64,), (1,)), "tensor-bad-shape", kind="meta")
    yield Case(
        "quantized numel overflow",
        lambda w: w.qtensor(0, (2**32,) * 3, (0, 0, 0), per_tensor()),
        "tensor-bad-shape",
        kind="quantized",
    )
    yield Case(
        "wrapper size 2**64",
        lambda w: w.wrapper((2**64,), (1,), 0),
        "tensor-bad-shape",
        kind="wrapper",
    )
    yield Case(
        "wrapper numel overflow",
        lambda w: w.wrapper((2**32,) * 3, (0, 0, 0), 0),
        "tensor-bad-shape",
        kind="wrapper",
    )


def bad_strides() -> Iterator[Case]:
    for stride in ((-1,), (2**63,), (2**64,)):
        yield dense_case(f"stride {stride}", 0, (2,), stride, "tensor-bad-stride")
        yield dense_case(f"stride {stride}, size 1", 0, (1,), stride, "tensor-bad-stride")
        yield dense_case(f"stride {stride}, empty", 0, (0,), stride, "tensor-bad-stride")
    for offset in (-1, -(2**63), 2**63):
        yield dense_case(f"offset {offset}", offset, (1,), (1,), "tensor-bad-stride")
    for size, stride in (((2, 3), (1,)), ((6,), (1, 1)), ((), (1,))):
        yield dense_case(f"{len(stride)} strides for {size}", 0, size, stride, "tensor-bad-stride")
    yield Case(
        "meta stride count",
        lambda w: w.meta((2, 3), (1,)),
        "tensor-bad-stride",
        kind="meta",
    )
    yield Case(
        "meta stride -1",
        lambda w: w.meta((2,), (-1,)),
        "tensor-bad-stride",
        kind="meta",
        negative=True,
    )
    yield Case(
        "meta any stride in int64",
        lambda w: w.meta((2, 3), (I64, 7)),
        None,
        kind="meta",
        expect=((2, 3), (I64, 7), 0),
    )
    yield Case(
        "quantized stride -1",
        lambda w: w.qtensor(0, (2,), (-1,), per_tensor()),
        "tensor-bad-stride",
        kind="quantized",
        negative=True,
    )
    yield Case(
        "wrapper stride count",
        lambda w: w.wrapper((2, 3), (1,), 0),
        "tensor-bad-stride",
        kind="wrapper",
    )
    yield Case(
        "wrapper offset 2**63",
        lambda w: w.wrapper((2,), (1,), 2**63),
        "tensor-bad-stride",
        kind="wrapper",
    )
    yield Case(
        "wrapper offset -1",  # torch's _make_wrapper_subclass keeps it: no data to place
        lambda w: w.wrapper((2,), (1,), -1),
        "tensor-bad-stride",
        kind="wrapper",
        negative=True,
    )
    yield Case(
        "wrapper offset int64 max",
        lambda w: w.wrapper((2,), (1,), I64),
        None,
        kind="wrapper",
        expect=((2,), (1,), I64),
    )


def bad_qparams() -> Iterator[Case]:
    def q(
        name: str, qparams: Any, code: str | None, size: tuple[int, ...] = (2, 3), **kw: Any
    ) -> Case:
        return Case(
            name,
            lambda w: w.qtensor(0, size, contiguous(size), qparams, **kw),
            code,
            kind="quantized",
            expect=(size, contiguous(size), 0),
        )

    bad = "tensor-bad-qparams"
    yield q("per tensor", per_tensor(), None)
    yield q("per tensor, qint32", per_tensor(zero=2**40), None, stype="QInt32Storage")
    yield q("per tensor, any scale", per_tensor(scale=-0.0), None)
    yield q("per tensor, int scale, negative zero point", per_tensor(scale=2, zero=-5), None)
    yield q("per tensor symmetric", per_tensor("per_tensor_symmetric"), bad)
    yield q("per tensor, float zero point", per_tensor(zero=3.0), bad)
    yield q("per tensor, zero point 2**63", per_tensor(zero=2**63), bad)
    yield q("per tensor of a float storage", per_tensor(), bad, stype="FloatStorage")
    yield q("per channel, lists", per_channel([0.1, 0.2], [0, 1], 0), None)
    yield q("per channel, tensors", per_channel(2, 2, 0), None)
    yield q("per channel, axis 1", per_channel(3, 3, 1), None)
    yield q(
        "per channel float qparams",
        per_channel([0.1, 0.2], [0, 1], 0, "per_channel_affine_float_qparams"),
        None,
    )
    yield q("per channel, empty tensor", per_channel([], [], 0), None, size=(0, 3))
    yield q("per channel symmetric", per_channel(2, 2, 0, "per_channel_symmetric"), bad)
    for axis in (2, -1, 7):
        yield q(f"per channel, axis {axis}", per_channel(2, 2, axis), bad)
    yield q("per channel of a 0-dim tensor", per_channel(1, 1, 0), bad, size=())
    for scales, zeros in ((1, 2), (2, 1), (3, 3), ([0.1], [0, 1]), ([0.1, 0.2], [0])):
        yield q(
            f"per channel, {scales} scales, {zeros} zero points", per_channel(scales, zeros, 0), bad
        )
    yield q(
        "per channel, integer scales tensor", per_channel(2, 2, 0, scale_stype="LongStorage"), bad
    )
    yield q("per channel scheme, 2 values", per_tensor("per_channel_affine"), bad)


def bad_sparse_and_nested() -> Iterator[Case]:
    def coo(name: str, indices: Any, values: Any, size: Any, code: str | None) -> Case:
        return Case(
            name,
            lambda w: w.coo(indices, values, size),
            code,
            kind="sparse",
            expect=(size, None, None),
        )

    yield coo("coo", (2, 2), (2,), (2, 3), None)
    yield coo("coo hybrid", (1, 2), (2, 3), (2, 3), None)
    yield coo("coo, no entries", (2, 0), (0,), (2, 3), None)
    yield coo("coo, values nnz differs", (2, 2), (3,), (2, 3), "tensor-bad-shape")
    yield coo("coo, more dims than indices", (2, 2), (2,), (2, 3, 4), "tensor-bad-shape")
    yield coo("coo, dense part differs", (1, 2), (2, 4), (2, 3), "tensor-bad-shape")
    yield coo("coo, 3-D indices", (1, 1, 2), (2,), (2,), "tensor-bad-shape")
    # (a size past int64 fails in torch.Size already: bad-call, as torch.Size([2**64]) fails)
    yield coo("coo, size int64 max x 2", (2, 2), (2,), (I64, 2), "tensor-bad-shape")
    yield coo("coo, numel overflow", (2, 2), (2,), (2**40, 2**40), "tensor-bad-shape")
    yield coo("coo, negative size", (2, 2), (2,), (-2, 3), "tensor-bad-shape")

    def nested(name: str, *args: Any, code: str | None, **kw: Any) -> Case:
        return Case(name, lambda w: w.nested(*args, **kw), code, kind="nested")

    yield nested("nested", (6,), (2, 1), (2, 1), (2,), code=None)
    yield nested("nested, 2-D buffer", (2, 3), (2, 1), (2, 1), (2,), code="tensor-bad-shape")
    yield nested("nested, strides differ", (6,), (2, 1), (2, 2), (2,), code="tensor-bad-shape")
    yield nested("nested, offsets differ", (6,), (2, 1), (2, 1), (3,), code="tensor-bad-shape")
    yield nested("nested, 1-D sizes", (6,), (2,), (2,), (2,), code="tensor-bad-shape")
    yield nested(
        "nested, int32 sizes",
        (6,),
        (2, 1),
        (2, 1),
        (2,),
        code="tensor-bad-shape",
        meta_stype="IntStorage",
    )


FAMILIES = {
    "out-of-storage": list(out_of_storage()),
    "empty": list(empty_tensors()),
    "shape": list(bad_shapes()),
    "stride": list(bad_strides()),
    "qparams": list(bad_qparams()),
    "sparse-nested": list(bad_sparse_and_nested()),
}
CASES = [c for cases in FAMILIES.values() for c in cases]
BAD = [c for c in CASES if c.code is not None]
GOOD = [c for c in CASES if c.code is None]


def _open(data: bytes, engine: str) -> Any:
    return ckptpeek.open(io.BytesIO(data), engine=engine, fallback=None)


def test_the_generators_cover_every_code_and_kind() -> None:
    assert {c.code for c in BAD} == {
        "tensor-out-of-storage",
        "tensor-bad-shape",
        "tensor-bad-stride",
        "tensor-bad-qparams",
    }
    for kind in ("dense", "meta", "wrapper", "quantized", "sparse", "nested"):
        assert any(c.kind == kind for c in BAD) and any(c.kind == kind for c in GOOD), kind
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", BAD, ids=lambda c: c.name)
def test_impossible_tensor_is_refused_at_open(case: Case, engine: str) -> None:
    data, at = case.record()
    with pytest.raises(FormatError) as err:
        _open(data, engine)
    assert err.value.code == case.code, str(err.value)
    assert err.value.offset == at  # the REDUCE that builds the tensor
    assert err.value.member == "archive/data.pkl"
    assert f"at byte {at} of archive/data.pkl" in str(err.value)


@pytest.mark.parametrize("case", GOOD, ids=lambda c: c.name)
def test_possible_tensor_opens(case: Case, engine: str) -> None:
    data, _ = case.record()
    with _open(data, engine) as ckpt:
        ref = ckpt["w"]
        assert isinstance(ref, TensorRef)
        if case.expect is not None:
            shape, stride, offset = case.expect
            assert tuple(ref.shape) == tuple(shape)
            if stride is not None:
                assert ref.stride() == tuple(stride) and ref.storage_offset() == offset
        if case.kind == "dense" and _prod(tuple(d for d in ref.shape if d)) <= 64:
            ref.numpy()  # whatever opened can be read (an empty one: without a byte)


def test_fast_path_matches_the_pure_engine_on_every_record() -> None:
    """The native fast path (``_dims_ok``) may only accept what check_layout accepts:
    every record, valid or not, gives both engines the same outcome."""
    pytest.importorskip("ckptpeek.unpickle._pickle_vm_c")
    for case in CASES:
        data, _ = case.record()
        got = []
        for engine in ("python", "native"):
            try:
                with _open(data, engine) as ckpt:
                    ref = ckpt["w"]
                    got.append(("ok", tuple(ref.shape), ref.stride(), ref.storage_offset()))
            except ckptpeek.CheckpointError as exc:
                got.append(("err", exc.code, exc.offset, str(exc)))
        assert got[0] == got[1], case.name


def test_numel_rule_is_torchs() -> None:
    """torch multiplies the sizes in uint64 and the overflow sticks even if a 0 follows;
    an element count must end within int64."""
    for shape, ok in (
        ((2**32, 2**31, 0), True),  # 2**63 fits uint64, then 0
        ((2**32, 2**32, 0), False),  # 2**64 does not
        ((0, 2**63 - 1, 2**63 - 1), True),
        ((2**63 - 1,), True),
        ((3, 2**62), False),
        ((2**31, 2**31, 2, 0), True),
        ((2**31, 2**31, 4, 0), False),
    ):
        try:
            check_layout(shape, (0,) * len(shape), 0)
        except FormatError as exc:
            assert not ok and exc.code == "tensor-bad-shape", shape
        else:
            assert ok, shape


def test_many_huge_dims_keep_the_count_small() -> None:
    """The element count is kept bounded while it is multiplied: 20,000 dims of 2**62
    would otherwise make a 1.26-million-bit int, squared work (and a pickle of a few MB
    can hold a million such dims, through the memo)."""
    shape = (2**62,) * 20_000
    stride = (0,) * len(shape)
    tracemalloc.start()
    try:
        with pytest.raises(FormatError) as err:
            check_layout(shape, stride, 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.value.code == "tensor-bad-shape"
    assert len(str(err.value)) < 400  # the message cuts the size short
    assert peak < 16 << 10, peak


def test_native_fast_path_builds_valid_tensors_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks cost the native engine nothing on the common path: it proves valid
    ``_rebuild_tensor_v2`` calls in C and never calls check_layout for them."""
    pytest.importorskip("ckptpeek.unpickle._pickle_vm_c")
    calls = []

    def counting(*args: Any) -> None:
        calls.append(args)
        check_layout(*args)

    monkeypatch.setattr(torch_rebuild, "check_layout", counting)
    data = pathlib.Path(__file__).parent / "data" / "lightning_tiny.ckpt"  # all v2
    counts = {}
    for engine in ("python", "native"):
        calls.clear()
        with ckptpeek.open(data, engine=engine) as ckpt:
            counts[engine] = (len(calls), sum(1 for _ in ckpt.tensors()))
    assert counts["python"][0] > 0
    assert counts["native"] == (0, counts["python"][1])
    # and an invalid one takes the slow path, which raises there
    w = Writer()
    w.v2(1, (6,), (1,))
    calls.clear()
    with pytest.raises(FormatError):
        _open(w.file(), "native")
    assert len(calls) == 1


def test_torch_size_keeps_torchs_range() -> None:
    size = TORCH_GLOBALS[("torch", "Size")].call
    assert size(((-1, 2),)) == (-1, 2)  # torch.Size([-1, 2]) is a Size
    with pytest.raises(OverflowError):
        size(((2**63,),))


# --------------------------------------------------------------------------- torch agrees


@functools.cache
def torch_verdict(name: str) -> tuple[Any, ...]:
    torch = pytest.importorskip("torch")
    case = next(c for c in CASES if c.name == name)
    data, _ = case.record()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = torch.load(io.BytesIO(data), weights_only=True)["w"]
    except Exception as exc:  # noqa: BLE001 - torch's verdict, whatever it raises
        return ("refused", f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
    if t.is_sparse or t.is_nested:
        return ("loaded", tuple(t.shape) if not t.is_nested else None, None, None)
    return ("loaded", tuple(t.shape), t.stride(), t.storage_offset())


# wrapper subclasses name a class, which weights_only refuses whatever the metadata says
DIFFERENTIAL = [c for c in CASES if c.kind != "wrapper"]


@pytest.mark.parametrize("case", DIFFERENTIAL, ids=lambda c: c.name)
def test_torch_agrees(case: Case, engine: str) -> None:
    verdict = torch_verdict(case.name)
    data, _ = case.record()
    try:
        with _open(data, engine) as ckpt:
            ref = ckpt["w"]
            mine: tuple[Any, ...] = ("loaded", tuple(ref.shape), ref.stride(), ref.storage_offset())
    except (FormatError, UnsupportedError) as exc:
        mine = ("refused", exc.code)
    if case.negative:
        # torch's set_ keeps a negative size beside a 0 and rewrites a negative stride
        # of a size-1 dim (TensorImpl::set_sizes_and_strides): ckptpeek refuses both
        assert mine[0] == "refused", (case.name, verdict)
        return
    if verdict[0] == "refused":
        assert mine[0] == "refused", (case.name, verdict)
        assert case.code is not None, (case.name, verdict)
        return
    assert mine[0] == "loaded", (case.name, verdict, mine)
    assert case.code is None
    if case.kind == "nested":
        return
    assert mine[1] == verdict[1], (case.name, verdict, mine)
    if case.kind != "sparse":
        assert mine[2:] == verdict[2:], (case.name, verdict, mine)
