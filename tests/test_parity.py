"""Differential tests: the Cython engine must behave exactly like the pure-Python one.

Every input - committed fixture pickles, all their truncations and single-byte flips,
stdlib pickles of many objects in every protocol, random bytes, and mutated fixtures -
is run through both ``run_pickle`` implementations, and the *outcomes* must be equal:
either the same value graph (compared structurally, with exact container types, float
bits, object sharing/cycles, and the ``components`` of quantized/sparse/nested tensors),
the same globals, ``complete`` flag and end offset, or the same error (class, ``code``,
``offset`` and message). Selective runs (``select=``) are compared the same way, on the
fixtures, their truncations and flips, stdlib pickles and fuzzed inputs. Whole files are
compared through ``ckptpeek.open`` and ``summary()`` too.

Skipped when the native engine is not built - unless ``CKPTPEEK_REQUIRE_EXTENSIONS``
is set, in which case importing ckptpeek already fails.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import io
import math
import pathlib
import pickle
import pickletools
import re
import struct
import sys
import zipfile
from typing import Any

import pytest
from _builders import Member, Pickle, torch_zip

import ckptpeek
from ckptpeek.unpickle import engine as _backend

if "native" not in _backend._ENGINES:  # pragma: no cover - depends on the build
    pytest.skip(f"native engine not built ({_backend.NATIVE_ERROR})", allow_module_level=True)

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ckptpeek.formats.torch_zip import ZipStorageReader, find_prefix  # noqa: E402
from ckptpeek.io.source import ByteSource  # noqa: E402
from ckptpeek.io.zipdir import read_directory  # noqa: E402
from ckptpeek.tensor import StorageRef, TensorRef  # noqa: E402
from ckptpeek.torch_types import Device, DType, StorageType  # noqa: E402
from ckptpeek.unpickle.standins import KnownGlobal, Placeholder, PlaceholderType  # noqa: E402

ENGINES = {name: _backend.engine(name) for name in ("python", "native")}
DATA = pathlib.Path(__file__).parent / "data"
FIXTURE_PATHS = sorted(
    p
    for p in DATA.iterdir()  # torch zip fixtures (legacy files have their own tests)
    if p.suffix in (".pt", ".ckpt") and zipfile.is_zipfile(p)
)

# ---------------------------------------------------------------------------------------
# canonical form of a result
# ---------------------------------------------------------------------------------------

MAX_DEPTH = 120  # nesting below this is summarised (hostile inputs nest arbitrarily deep)
_ADDR = re.compile(r" at 0x[0-9a-fA-F]+")
_LEAVES = (type(None), bool, int, str, bytes)


def _float(x: float) -> Any:
    if math.isnan(x):  # keep the payload and sign: both engines must produce the same bits
        return ("nan", struct.pack("<d", x).hex())
    return x.hex()


def canonical(value: Any, max_depth: int = MAX_DEPTH) -> Any:
    """A structure that compares equal iff two results are the same object graph.

    Containers keep their exact type; mutable/compound objects seen a second time (by
    identity) become ``("ref", n)`` with ``n`` their first-visit number, so sharing and
    cycles are compared too. Floats compare by bits (``hex``, nan-aware).
    """
    seen: dict[int, int] = {}
    keep: list[Any] = []  # keep every visited object alive so ids stay unique
    np = sys.modules.get("numpy")

    def c(o: Any, depth: int) -> Any:
        t = type(o)
        if t in _LEAVES:
            return o
        if t is float:
            return ("float", _float(o))
        if t is complex:
            return ("complex", _float(o.real), _float(o.imag))
        if t is type:
            return ("type", o.__module__, o.__qualname__)
        if t is KnownGlobal:  # frozen registry records
            return ("global", o.module, o.name)
        if (
            t in (DType, StorageType, Device)
            or t.__module__ == "ckptpeek.torch_types"
            and t.__name__ in ("Layout", "MemoryFormat", "QScheme")
        ):
            return ("torch", t.__name__, repr(o))
        if depth > max_depth:
            return ("deep", t.__qualname__)
        key = id(o)
        if key in seen:
            return ("ref", seen[key])
        seen[key] = len(seen)
        keep.append(o)
        d = depth + 1
        tname = f"{t.__module__}.{t.__qualname__}"
        if t is TensorRef:
            return (
                "TensorRef",
                str(o.dtype),
                type(o.shape).__name__,
                tuple(o.shape),
                c(o._stride, d),
                c(o._offset, d),
                o.requires_grad,
                o.is_parameter,
                o.kind,
                o.type_name,
                c(o.storage, d),
                c(o.attrs, d),
                c(o.metadata, d),
                c(o.components, d),
            )
        if t is StorageRef:
            return (
                "StorageRef",
                o.key,
                str(o.dtype),
                o.numel,
                o.location,
                type(o.reader).__name__,
                getattr(o.reader, "prefix", None),
            )
        if t is Placeholder:
            return (
                "Placeholder",
                o.module,
                o.name,
                c(o.args, d),
                c(o.kwargs, d),
                c(o.state, d),
                c(o.items, d),
                c(o.dictitems, d),
                c(o.setitems, d),
            )
        if t is PlaceholderType:
            return ("PlaceholderType", o.module, o.name)
        if np is not None:
            if isinstance(o, np.ndarray):
                if o.dtype.hasobject:
                    return ("ndarray", tname, o.dtype.str, o.shape, c(o.tolist(), d))
                return ("ndarray", tname, o.dtype.str, o.shape, o.tobytes())
            if isinstance(o, np.generic):
                return (
                    "npscalar",
                    tname,
                    o.dtype.str,
                    o.tobytes() if not o.dtype.hasobject else repr(o),
                )
            if isinstance(o, np.dtype):
                return ("npdtype", o.str, repr(o), o.isnative)
        extra = c(vars(o), d) if hasattr(o, "__dict__") and vars(o) else None
        if isinstance(o, dict):
            factory = c(o.default_factory, d) if isinstance(o, collections.defaultdict) else None
            return ("dict", tname, [(c(k, d), c(v, d)) for k, v in o.items()], factory, extra)
        if isinstance(o, (list, tuple, set, frozenset, bytearray)):
            if isinstance(o, bytearray):
                return ("bytearray", tname, bytes(o), extra)
            return ("seq", tname, [c(x, d) for x in o], extra)
        slots = []
        for klass in t.__mro__:
            for name in getattr(klass, "__slots__", ()):
                if name in ("__weakref__", "__dict__"):
                    continue
                try:
                    slots.append((name, c(getattr(o, name), d)))
                except AttributeError:
                    slots.append((name, "<unset>"))
        if slots or extra is not None:
            return ("obj", tname, slots, extra)
        return ("repr", tname, _ADDR.sub("", repr(o)))

    return c(value, 0)


# ---------------------------------------------------------------------------------------
# outcomes
# ---------------------------------------------------------------------------------------


def outcome(engine: str, data: bytes, **kw: Any) -> tuple[Any, ...]:
    """What one engine makes of ``data``: the value graph and globals, or the error.

    ``persistent_load`` may be given as a zero-argument factory (``persistent_factory``)
    so that each run gets a fresh storage cache.
    """
    factory = kw.pop("persistent_factory", None)
    if factory is not None:
        kw["persistent_load"] = factory()
    try:
        result = ENGINES[engine].run_pickle(data, **kw)
    except ckptpeek.CheckpointError as e:
        return ("err", type(e).__name__, e.code, e.offset, str(e))
    except Exception as e:  # noqa: BLE001 - an escape is a bug; compared (and reported) too
        return ("escaped", type(e).__name__, str(e))
    return (
        "ok",
        canonical(result.value),
        sorted(result.globals.items()),
        result.complete,
        result.end,
    )


def _short(obj: Any, limit: int = 1500) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    """Where two canonical forms first differ (for readable failure messages)."""
    if type(a) is not type(b) or not isinstance(a, (tuple, list)) or len(a) != len(b):
        return f"at {path or '<top>'}: python {_short(a, 300)} / native {_short(b, 300)}"
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return _first_difference(x, y, f"{path}[{i}]")
    return "no difference"


def assert_same(data: bytes, **kw: Any) -> tuple[Any, ...]:
    py = outcome("python", data, **kw)
    nat = outcome("native", data, **kw)
    assert py == nat, (
        f"engines differ on {_short(bytes(data), 400)} with {kw}: {_first_difference(py, nat)}"
    )
    assert py[0] != "escaped", f"a non-CheckpointError escaped on {_short(bytes(data))}: {py!r}"
    return py


# ---------------------------------------------------------------------------------------
# the committed fixtures
# ---------------------------------------------------------------------------------------


class Fixture:
    """A torch zip checkpoint: a committed file, or bytes built here (``file``)."""

    def __init__(self, path: pathlib.Path, file: bytes | None = None) -> None:
        self.path = path
        self.file = path.read_bytes() if file is None else file
        with zipfile.ZipFile(io.BytesIO(self.file)) as z:
            (self.member,) = [n for n in z.namelist() if n.endswith("/data.pkl")]
            self.pickle = z.read(self.member)
        self.directory = read_directory(ByteSource(io.BytesIO(self.file)))
        self.prefix = find_prefix(self.directory)

    def persistent_load(self) -> Any:
        """A fresh resolver, as the real reader makes (its cache is per run)."""
        return ZipStorageReader(self.directory, self.prefix).persistent_load


def _ints(p: Pickle, values: tuple[int, ...]) -> Pickle:
    p.mark()
    for v in values:
        p.int(v)
    return p.tuple()


def _storage(p: Pickle, storage_type: str, key: str, numel: int) -> Pickle:
    p.mark().str("storage").glob("torch", storage_type).str(key).str("cpu").int(numel).tuple()
    return p.binpersid()


def _no_hooks(p: Pickle) -> Pickle:
    """requires_grad=False and an empty backward-hooks OrderedDict."""
    return p.false().glob("collections", "OrderedDict").empty_tuple().reduce()


def _dense(
    p: Pickle,
    storage_type: str,
    key: str,
    numel: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    offset: int = 0,
) -> Pickle:
    p.glob("torch._utils", "_rebuild_tensor_v2").mark()
    _storage(p, storage_type, key, numel).int(offset)
    _ints(p, size)
    _ints(p, stride)
    return _no_hooks(p).tuple().reduce()


def exotic_pickle() -> bytes:
    """Tensors with ``components`` (what torch.save writes for them, spelled out here so
    no torch is needed): quantized per tensor and per channel (scales and zero points are
    tensors), sparse COO and CSR (index and value tensors; the values tensor is shared
    with a top-level key through the memo), and nested (buffer, sizes, strides, offsets).
    """
    p = Pickle().proto(2).empty_dict().mark()
    p.str("q_tensor").glob("torch._utils", "_rebuild_qtensor").mark()
    _storage(p, "QUInt8Storage", "1", 6).int(0)
    _ints(p, (2, 3))
    _ints(p, (3, 1))
    p.glob("torch", "per_tensor_affine").raw(b"G" + struct.pack(">d", 0.5)).int(3).tuple3()
    _no_hooks(p).tuple().reduce()
    p.str("q_channel").glob("torch._utils", "_rebuild_qtensor").mark()
    _storage(p, "QInt8Storage", "8", 6).int(0)
    _ints(p, (2, 3))
    _ints(p, (3, 1))
    p.mark().glob("torch", "per_channel_affine")
    _dense(p, "DoubleStorage", "2", 2, (2,), (1,))
    _dense(p, "LongStorage", "3", 2, (2,), (1,))
    p.int(0).tuple()
    _no_hooks(p).tuple().reduce()
    p.str("coo").glob("torch._utils", "_rebuild_sparse_tensor").glob("torch", "sparse_coo")
    p.mark()
    _dense(p, "LongStorage", "4", 4, (2, 2), (2, 1))
    _dense(p, "FloatStorage", "0", 6, (2,), (1,), offset=1).binput(10)  # shared below
    _ints(p, (2, 3)).raw(b"\x88").tuple().tuple2().reduce()  # NEWTRUE: is_coalesced
    p.str("csr").glob("torch._utils", "_rebuild_sparse_tensor").glob("torch", "sparse_csr")
    p.mark()
    _dense(p, "LongStorage", "5", 3, (3,), (1,))
    _dense(p, "LongStorage", "4", 4, (2,), (1,), offset=2)
    p.binget(10)
    _ints(p, (2, 3)).tuple().tuple2().reduce()
    p.str("nested").glob("torch._utils", "_rebuild_nested_tensor").mark()
    _dense(p, "FloatStorage", "0", 6, (6,), (1,))
    _dense(p, "LongStorage", "6", 4, (2, 1), (1, 1))
    _dense(p, "LongStorage", "6", 4, (2, 1), (1, 1), offset=2)
    _dense(p, "LongStorage", "7", 2, (2,), (1,))
    p.tuple().reduce()
    p.str("values_again").binget(10)
    p.str("epoch").int(4).str("global_step").int(40)
    return bytes(p.setitems().stop())


def exotic_checkpoint() -> bytes:
    def longs(*v: int) -> bytes:
        return struct.pack(f"<{len(v)}q", *v)

    extra = [
        Member("archive/data/1", bytes([3, 4, 5, 6, 7, 8])),
        Member("archive/data/2", struct.pack("<2d", 0.1, 0.2)),
        Member("archive/data/3", longs(0, 1)),
        Member("archive/data/4", longs(0, 1, 1, 2)),
        Member("archive/data/5", longs(0, 1, 2)),
        Member("archive/data/6", longs(3, 1, 1, 1)),
        Member("archive/data/7", longs(0, 3)),
        Member("archive/data/8", bytes([1, 2, 3, 4, 5, 6])),
    ]
    return torch_zip(exotic_pickle(), extra=extra)


FIXTURES = [Fixture(p) for p in FIXTURE_PATHS]
FIXTURES.append(Fixture(pathlib.Path("built/exotic.pt"), exotic_checkpoint()))
FIXTURE_IDS = [f.path.name for f in FIXTURES]
EXOTIC = FIXTURES[-1]


def test_canonical_sees_sharing_types_and_float_bits() -> None:
    a = [1]
    assert canonical([a, a]) != canonical([a, [1]])
    cyc: list[Any] = []
    cyc.append(cyc)
    assert canonical(cyc) == ("seq", "builtins.list", [("ref", 0)], None)
    assert canonical((1,)) != canonical([1])
    assert canonical(collections.OrderedDict(a=1)) != canonical({"a": 1})
    assert canonical(0.0) != canonical(-0.0)
    assert canonical(float("nan")) != canonical(-float("nan"))
    assert canonical({"a": 1, "b": 2}) != canonical({"b": 2, "a": 1})  # insertion order
    deep: list[Any] = []
    for _ in range(10 * MAX_DEPTH):
        deep = [deep]
    assert canonical(deep) == canonical(deep)
    assert outcome("python", b"N.") == ("ok", None, [], True, 2)


def test_fixtures_exist() -> None:
    assert len(FIXTURES) >= 3


@pytest.mark.parametrize("fx", FIXTURES, ids=FIXTURE_IDS)
def test_fixture_pickle(fx: Fixture) -> None:
    out = assert_same(fx.pickle, persistent_factory=fx.persistent_load)
    assert out[0] == "ok"
    assert_same(fx.pickle, persistent_factory=fx.persistent_load, strict=True)
    assert_same(fx.pickle, persistent_factory=fx.persistent_load, encoding="bytes")
    assert_same(fx.pickle)  # no storages: bad-persistent-id at the first tensor


@pytest.mark.parametrize("fx", FIXTURES, ids=FIXTURE_IDS)
def test_fixture_truncations(fx: Fixture) -> None:
    data = fx.pickle
    for n in range(len(data)):
        assert_same(data[:n], persistent_factory=fx.persistent_load)


@pytest.mark.parametrize("fx", FIXTURES, ids=FIXTURE_IDS)
def test_fixture_byte_flips(fx: Fixture) -> None:
    data = fx.pickle
    for i in range(min(len(data), 2048)):
        for new in {0x00, 0xFF, data[i] ^ 0x01} - {data[i]}:
            mutated = data[:i] + bytes([new]) + data[i + 1 :]
            assert_same(mutated, persistent_factory=fx.persistent_load)


@pytest.mark.parametrize("fx", FIXTURES, ids=FIXTURE_IDS)
def test_fixture_small_limits(fx: Fixture) -> None:
    for limits in (
        ckptpeek.Limits(max_memo=3),
        ckptpeek.Limits(max_memo=0),
        ckptpeek.Limits(max_depth=2),
        ckptpeek.Limits(max_pickle_bytes=100),
    ):
        assert_same(fx.pickle, persistent_factory=fx.persistent_load, limits=limits)


# ---------------------------------------------------------------------------------------
# tensor components, selective runs
# ---------------------------------------------------------------------------------------

#: the selections every selective comparison alternates between
SELECTS = (ckptpeek.SUMMARY_KEYS, ("epoch", "global_step"))
#: and a few more for the committed fixtures themselves
MORE_SELECTS = ((), ("no-such-key",), ("state_dict",), ("epoch", "q_channel", "values_again"))


def test_canonical_sees_components() -> None:
    """Two results that differ only in a tensor's components are not equal."""
    value = ENGINES["python"].run_pickle(EXOTIC.pickle, persistent_load=EXOTIC.persistent_load())
    root = value.value
    assert {k: root[k].kind for k in ("q_tensor", "q_channel", "coo", "csr", "nested")} == {
        "q_tensor": "quantized",
        "q_channel": "quantized",
        "coo": "sparse_coo",
        "csr": "sparse_csr",
        "nested": "nested",
    }
    before = canonical(root)
    root["q_tensor"].components["scale"] = 0.25  # a plain value inside components
    assert canonical(root) != before
    root["q_tensor"].components["scale"] = 0.5
    assert canonical(root) == before
    zp = root["q_channel"].components["zero_point"]  # a TensorRef inside components
    zp._offset = 1
    assert canonical(root) != before
    zp._offset = 0
    # the values tensor is shared by both sparse tensors and a top-level key: a copy
    # in one place instead of the shared object is a difference too
    values = root["coo"].components["values"]
    assert root["csr"].components["values"] is values and root["values_again"] is values
    copy = TensorRef.__new__(TensorRef)
    for name in TensorRef.__slots__[:-1]:
        setattr(copy, name, getattr(values, name))
    root["csr"].components["values"] = copy
    assert canonical(root) != before


@pytest.fixture(scope="module")
def torch_exotic() -> Fixture:
    """The same kinds of tensors as ``exotic_pickle``, written by the real torch.save."""
    torch = pytest.importorskip("torch", reason="torch is optional: it writes these pickles")
    import warnings

    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    dense = torch.tensor([[0.0, 1.5, 0.0, 0.0], [2.0, 0.0, 3.0, 0.0]])
    scales = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.double)
    with warnings.catch_warnings():  # quantized: deprecated; sparse/nested: beta, prototype
        warnings.simplefilter("ignore")
        coo = dense.to_sparse()
        obj = {
            "per_tensor": torch.quantize_per_tensor(x, 0.1, 3, torch.quint8),
            "per_channel": torch.quantize_per_channel(x, scales, torch.arange(4), 0, torch.qint8),
            "coo": coo,
            "coo_again": coo,
            "csr": dense.to_sparse_csr(),
            "csc": dense.to_sparse_csc(),
            "bsr": dense.to_sparse_bsr((1, 2)),
            "nested": torch.nested.nested_tensor([torch.arange(3.0), torch.arange(5.0) * 2]),
            "epoch": 2,
        }
        buf = io.BytesIO()
        torch.save(obj, buf)
    return Fixture(pathlib.Path("torch/exotic.pt"), buf.getvalue())


def test_torch_exotic_tensors(torch_exotic: Fixture) -> None:
    fx = torch_exotic
    assert assert_same(fx.pickle, persistent_factory=fx.persistent_load)[0] == "ok"
    root = ENGINES["native"].run_pickle(fx.pickle, persistent_load=fx.persistent_load()).value
    assert all(root[k].components for k in root if k != "epoch"), "nothing to compare"
    for select in SELECTS + (("coo", "nested"),):
        assert_same(fx.pickle, persistent_factory=fx.persistent_load, select=select)
    for n in range(0, len(fx.pickle), 3):
        assert_same(fx.pickle[:n], persistent_factory=fx.persistent_load, select=SELECTS[n % 2])
    assert assert_same_file(fx.file)[-1][0] == "summary"


@pytest.mark.parametrize("fx", FIXTURES, ids=FIXTURE_IDS)
def test_fixture_pickle_selected(fx: Fixture) -> None:
    for select in SELECTS + MORE_SELECTS:
        out = assert_same(fx.pickle, persistent_factory=fx.persistent_load, select=select)
        assert out[0] == "ok" and out[3] is False, (select, _short(out))  # a dict root
        assert_same(fx.pickle, persistent_factory=fx.persistent_load, select=select, strict=True)
    assert_same(fx.pickle, select=SELECTS[0])  # no storages: the first tensor fails


@pytest.mark.parametrize("fx", FIXTURES, ids=FIXTURE_IDS)
def test_fixture_truncations_selected(fx: Fixture) -> None:
    data = fx.pickle
    for n in range(len(data)):
        assert_same(data[:n], persistent_factory=fx.persistent_load, select=SELECTS[n % 2])


@pytest.mark.parametrize("fx", FIXTURES, ids=FIXTURE_IDS)
def test_fixture_byte_flips_selected(fx: Fixture) -> None:
    """One flip per position (cycling through 0x00, 0xFF and bit 0), both selections."""
    data = fx.pickle
    for i in range(min(len(data), 2048)):
        new = (0x00, 0xFF, data[i] ^ 0x01)[i % 3]
        if new == data[i]:
            new ^= 0x80
        mutated = data[:i] + bytes([new]) + data[i + 1 :]
        assert_same(mutated, persistent_factory=fx.persistent_load, select=SELECTS[i % 2])


# ---------------------------------------------------------------------------------------
# stdlib pickles
# ---------------------------------------------------------------------------------------


class Foreign:
    """Pickled by reference to this module: an unknown global -> Placeholder."""

    def __init__(self) -> None:
        self.a = 1
        self.b = [1.5, "x"]


class ForeignSlots:
    __slots__ = ("x", "y")

    def __init__(self) -> None:
        self.x = 1
        self.y = (2, 3)


class ForeignList(list):  # type: ignore[type-arg]
    pass


class ForeignDict(dict):  # type: ignore[type-arg]
    pass


class NewArgsEx:
    def __init__(self, a: int, *, b: int) -> None:
        self.a, self.b = a, b

    def __getnewargs_ex__(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (self.a,), {"b": self.b}


def _objects() -> list[Any]:
    import numpy as np

    shared = [1, 2]
    rec: list[Any] = [0]
    rec.append(rec)
    d_rec: dict[str, Any] = {}
    d_rec["self"] = d_rec
    ns = argparse.Namespace(lr=0.1, name="x", layers=[1, 2])
    od = collections.OrderedDict([("a", 1), ("b", [2])])
    od._metadata = {"": {"version": 1}}  # type: ignore[attr-defined]
    dd = collections.defaultdict(list, {"k": [1]})
    return [
        None,
        True,
        False,
        0,
        1,
        -1,
        255,
        256,
        65535,
        65536,
        2**31 - 1,
        -(2**31),
        2**31,
        2**63,
        -(2**63) - 1,
        2**200,
        -(2**1000),
        0.0,
        -0.0,
        1.5,
        1e308,
        -1e-308,
        5e-324,
        float("inf"),
        float("-inf"),
        float("nan"),
        1 + 2j,
        "",
        "a",
        "ünï\u20ac\U0001f600",
        "\ud800x",
        "line\nbreak\\",
        "x" * 300,
        b"",
        b"\x00\xff",
        b"b" * 300,
        bytearray(b"ba"),
        (),
        (1,),
        (1, 2),
        (1, 2, 3),
        (1, 2, 3, 4),
        [],
        [1],
        list(range(2500)),
        {},
        {"a": 1},
        {i: str(i) for i in range(1200)},
        set(),
        {1, 2, 3},
        frozenset(),
        frozenset({"a", "b"}),
        [shared, shared, (shared,)],
        rec,
        d_rec,
        ((),) * 3,
        {(1, 2): [3], frozenset({1}): {2}},
        [[[[[[[[[[1]]]]]]]]]],
        ns,
        od,
        dd,
        slice(1, 10, 2),
        datetime.datetime(2024, 1, 2, 3, 4, 5, 6),
        datetime.date(2020, 2, 29),
        datetime.timedelta(days=1, seconds=2),
        datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
        pathlib.PurePosixPath("/a/b"),
        pathlib.PureWindowsPath("C:/x"),
        collections.Counter("abca"),
        Foreign(),
        ForeignSlots(),
        ForeignList([1, 2]),
        ForeignDict(a=1),
        NewArgsEx(1, b=2),
        [Foreign(), Foreign()],
        np.float32(1.5),
        np.int64(-3),
        np.float64("nan"),
        np.bool_(True),
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.array([1, 2], dtype=">i4"),
        np.array(["a", "bc"]),
        np.array([1, None], dtype=object),
        np.zeros((0, 3)),
        np.dtype("float16"),
        {"epoch": 3, "global_step": 12, "lr": [0.1, np.float64(0.01)]},
        [1.0, 1.0, "s", "s", b"b", b"b"],
    ]


OBJECTS = _objects()


def _dumps_all() -> list[bytes]:
    out = []
    for obj in OBJECTS:
        for p in range(pickle.HIGHEST_PROTOCOL + 1):
            try:
                out.append(pickle.dumps(obj, protocol=p))
            except (TypeError, pickle.PicklingError, UnicodeError):
                pass  # e.g. __slots__ objects below protocol 2
    return out


STDLIB_PICKLES = _dumps_all()
# protocol 0-2 of a Python-2-style payload (fix_imports spellings, py2 str via bytes)
STDLIB_PICKLES += [pickletools.optimize(p) for p in STDLIB_PICKLES[::7]]


def test_stdlib_pickles() -> None:
    for data in STDLIB_PICKLES:
        assert_same(data)


def test_stdlib_pickles_options() -> None:
    for data in STDLIB_PICKLES[::3]:
        assert_same(data, strict=True)
        assert_same(data, encoding="bytes")
        assert_same(data, encoding="latin1")
        assert_same(data, limits=ckptpeek.Limits(max_memo=2))


def test_stdlib_pickles_selected() -> None:
    """Dict roots (``{"a": 1}``, ``{"epoch": 3, ...}``, OrderedDict, subclasses) and
    others (returned whole), in every protocol, with both selections and one key."""
    for i, data in enumerate(STDLIB_PICKLES):
        assert_same(data, select=SELECTS[i % 2])
        assert_same(data, select=("a", "lr"))


def test_stdlib_pickle_truncations() -> None:
    for data in STDLIB_PICKLES:
        for n in range(0, len(data), max(1, len(data) // 64)):
            assert_same(data[:n])
        assert_same(data[:-1])


def test_stdlib_roundtrip_sanity() -> None:
    """Not parity: a few values must come out as the stdlib built them."""
    for obj in (None, 1, 2**100, "ü", b"x", (1, (2,)), [1, {"a": {1, 2}}], 1.25):
        for p in range(pickle.HIGHEST_PROTOCOL + 1):
            out = assert_same(pickle.dumps(obj, protocol=p))
            assert out[1] == canonical(obj)


# ---------------------------------------------------------------------------------------
# hand-written edge cases (each once found worth pinning)
# ---------------------------------------------------------------------------------------

EDGE_CASES = [
    b"",
    b".",
    b"N.",
    b"(.",
    b"(N.",
    b"\x80\x06N.",
    b"\x80\x05N.",
    b"\x95" + b"\xff" * 8,
    b"\x95\x02\x00\x00\x00\x00\x00\x00\x00N.",
    b"I00\n.",
    b"I01\n.",
    b"I-0\n.",
    b"I 1_0\n.",
    b"L12L\n.",
    b"L\n.",
    b"F1e999\n.",
    b"Fnan\n.",
    b"F-nan\n.",
    b"Fx\n.",
    b"G\x7f\xf8\x00\x00\x00\x00\x00\x01.",
    b"G\xff\xf0\x00\x00\x00\x00\x00\x01.",
    b"S'a\\x41'\n.",
    b"S'a\n.",
    b'S"\\q"\n.',
    b"Vx\\u20ac\\\n.",
    b"V\\U00110000\n.",
    b"U\x02\xc3\xa9.",
    b"U\x01\xff.",
    b"T\xff\xff\xff\xff.",
    b"T\x01\x00\x00\x00a.",
    b"X\x02\x00\x00\x00\xed\xa0.",
    b"X\x03\x00\x00\x00\xed\xa0\x80.",
    b"\x8c\x01\xff.",
    b"\x8d" + b"\xff" * 8,
    b"\x8e\x01" + b"\x00" * 7 + b"a.",
    b"\x96\x01" + b"\x00" * 7 + b"a\x98.",
    b"\x97.",
    b"\x98.",
    b"\x8a\x00.",
    b"\x8a\x02\xff\x7f.",
    b"\x8b\xff\xff\xff\xff.",
    b"\x8b\x01\x00\x00\x00\x80.",
    b"Np0\n.",
    b"Np-1\n.",
    b"Np99999999999999999999\ng99999999999999999999\n.",
    b"Ng0\n.",
    b"g-1\n.",
    b"Nq\x05h\x05.",
    b"Nr\xff\xff\xff\xffj\xff\xff\xff\xff.",
    b"Nr\x00\x00\x00\x80j\x00\x00\x00\x80.",
    b"Np2147483648\nj\x00\x00\x00\x80.",
    b"Nr\x00\x00\x00\x80g2147483648\n.",
    b"N\x94\x94h\x00h\x01.",
    b"Nq\x01\x94h\x00.",
    b"Nq\x00q\x02\x94\x94\x94h\x01.",
    b"Np5\nq\x00q\x01q\x02q\x03q\x04q\x05\x94h\x06.",
    b"\x82\x01.",
    b"\x83\xff\xff.",
    b"\x84\xff\xff\xff\xff.",
    b"cbuiltins\nset\n)R.",
    b"cbuiltins\nset\n(K\x01K\x02lR.",
    b"c__builtin__\nlong\nK\x01\x85R.",
    b"cfoo\nbar\n)R}b.",
    b"cfoo\nbar\n)\x81]b.",
    b"cfoo\nbar\n)}\x92.",
    b"cfoo\nbar\n)]\x92.",
    b"(cfoo\nbar\nK\x01o.",
    b"(o.",
    b"(ifoo\nbar\n.",
    b"(K\x01ifoo\nbar\n.",
    b"cbuiltins\nobject\n)R.",
    b"ccollections\nOrderedDict\n)R.",
    b"ccollections\nOrderedDict\n)R}X\x01\x00\x00\x00aK\x01sb.",
    b"ccollections\nOrderedDict\n(]tR.",
    b"ccollections\nOrderedDict\n(]K\x01atR.",
    b"](K\x01K\x02e.",
    b"]K\x01a.",
    b"}K\x01a.",
    b"}(K\x01e.",
    b"](K\x01u.",
    b"}(K\x01K\x02u.",
    b"}(K\x01u.",
    b"}(]K\x01u.",
    b"}]K\x01s.",
    b"(K\x01d.",
    b"(]K\x01d.",
    b"\x8f(K\x01\x90.",
    b"\x8f(]\x90.",
    b"](K\x01\x90.",
    b"(]\x91.",
    b"(K\x01K\x01\x91.",
    b"0.",
    b"1.",
    b"(0.",
    b"(1.",
    b"2.",
    b"N2.",
    b"t.",
    b"(t.",
    b"\x85.",
    b"N\x86.",
    b"NN\x87.",
    b"\x93.",
    b"NN\x93.",
    b"X\x01\x00\x00\x00aX\x01\x00\x00\x00b\x93.",
    b"R.",
    b"N)R.",
    b"NNR.",
    b"\x81.",
    b"N)\x81.",
    b"\x92.",
    b"N)}\x92.",
    b"N)N\x92.",
    b"b.",
    b"N}b.",
    b"PX\n.",
    b"Q.",
    b"NQ.",
    b"(lq\x00h\x00a.",
    b"]q\x00h\x00\x85q\x01a.",
    b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n)R.",
    b"\x80\x02ctorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x06t.",
    b"\x80\x02ctorch\nSize\n(K\x01K\x02\x86\x85R.",
    b"\x80\x02ctorch\nSize\n(\x89\x85\x85R.",
    b"\x80\x02ctorch\ndevice\nX\x04\x00\x00\x00cuda\x85R.",
    b"\x80\x02ctorch\ndevice\nX\x06\x00\x00\x00cuda:x\x85R.",
    b"\x80\x02cnumpy\ndtype\nX\x02\x00\x00\x00f8\x85R.",
    b"\x80\x02cnumpy\ndtype\nX\x02\x00\x00\x00V9\x85R.",
    b"\x80\x02cnumpy.core.multiarray\nscalar\ncnumpy\ndtype\nX\x02\x00\x00\x00f8\x85R"
    b"C\x08\x00\x00\x00\x00\x00\x00\xf8\x7f\x86R.",
    b"\x80\x02cnumpy\ndtype\nX\x02\x00\x00\x00f8\x85R(K\x03X\x01\x00\x00\x00<NNNJ\xff\xff\xff\xff"
    b"J\xff\xff\xff\xffK\x00tb.",
]


def _deep(n: int, open_: bytes, close: bytes) -> bytes:
    return b"\x80\x02" + open_ * n + close * n + b"."


EDGE_CASES += [
    _deep(5000, b"(", b"l"),
    _deep(5000, b"(", b"t"),
    _deep(400, b"(", b"\x91"),
    b"\x80\x02" + b"]" * 5000 + b"a" * 4999 + b".",
    b"\x80\x02" + b"}" + b"N" * 2 + b"\x86" + b"N\x85" * 300 + b"N" + b"s" * 1 + b".",
    b"\x80\x02(" + b"N\x85" * 1 + b"\x85" * 500 + b"N" + b"d.",
    b"\x80\x02}" + b"N" + b"\x85" * 250 + b"Ns.",
    b"\x80\x02}" + b"N" + b"\x85" * 150 + b"Ns.",
]


@pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")
@pytest.mark.parametrize("data", EDGE_CASES, ids=range(len(EDGE_CASES)))
def test_edge_cases(data: bytes) -> None:
    assert_same(data)
    assert_same(data, strict=True, encoding="bytes")
    assert_same(data, select=SELECTS[1])


@pytest.mark.parametrize("data", EDGE_CASES[:3] + EDGE_CASES[-8:], ids=range(11))
def test_edge_cases_small_limits(data: bytes) -> None:
    assert_same(data, limits=ckptpeek.Limits(max_depth=100, max_memo=1))


# ---------------------------------------------------------------------------------------
# hypothesis: random bytes and mutated fixtures
# ---------------------------------------------------------------------------------------

HYPOTHESIS = dict(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_OPCODES = pickletools.opcodes
_LINES = [
    b"0",
    b"1",
    b"00",
    b"01",
    b"-1",
    b"255",
    b"2147483648",
    b"1.5",
    b"nan",
    b"'a'",
    b'"\\x00"',
    b"x\\u1234",
    b"",
    b"storage",
    b"torch",
    b"collections",
    b"builtins",
    b"foo",
    b"\xff",
]
_GLOBALS = [
    b"torch._utils\n_rebuild_tensor_v2\n",
    b"torch._utils\n_rebuild_parameter\n",
    b"torch\nFloatStorage\n",
    b"torch\nLongStorage\n",
    b"torch\nSize\n",
    b"torch\ndevice\n",
    b"torch\nfloat32\n",
    b"collections\nOrderedDict\n",
    b"collections\ndefaultdict\n",
    b"builtins\nset\n",
    b"builtins\nlist\n",
    b"builtins\ndict\n",
    b"builtins\nobject\n",
    b"copyreg\n_reconstructor\n",
    b"argparse\nNamespace\n",
    b"numpy\ndtype\n",
    b"numpy.core.multiarray\nscalar\n",
    b"torch._tensor\n_rebuild_from_type_v2\n",
    b"torch.nn.parameter\nParameter\n",
    b"omegaconf.dictconfig\nDictConfig\n",
    b"omegaconf.nodes\nAnyNode\n",
    b"pathlib\nPosixPath\n",
    b"foo\nbar\n",
]


@st.composite
def _opcode_bytes(draw: st.DrawFn) -> bytes:
    """One opcode with an argument of the right shape (and sometimes a lying length)."""
    op = draw(st.sampled_from(_OPCODES))
    out = op.code.encode("latin-1")
    arg = op.arg
    if arg is None:
        return out
    n = arg.n
    if arg.name in ("stringnl_noescape_pair",):
        return out + draw(st.sampled_from(_GLOBALS))
    if n >= 0:
        if n in (1, 2, 4) and draw(st.booleans()):  # small values: memo keys, lengths
            return out + draw(st.integers(0, 8)).to_bytes(n, "little")
        return out + draw(st.binary(min_size=n, max_size=n))
    if n == pickletools.UP_TO_NEWLINE:
        return out + draw(st.sampled_from(_LINES)) + b"\n"
    width = {
        pickletools.TAKEN_FROM_ARGUMENT1: 1,
        pickletools.TAKEN_FROM_ARGUMENT4: 4,
        pickletools.TAKEN_FROM_ARGUMENT4U: 4,
        pickletools.TAKEN_FROM_ARGUMENT8U: 8,
    }[n]
    body = draw(
        st.one_of(
            st.sampled_from([b"storage", b"torch", b"0", b"cpu", b"\xed\xa0\x80"]),
            st.binary(max_size=12),
        )
    )
    length = len(body)
    if draw(st.integers(0, 9)) == 0:
        length = draw(
            st.sampled_from([0, length + 1, 2 ** (8 * width - 1) - 1, 2 ** (8 * width) - 1])
        )
    return out + length.to_bytes(width, "little") + body


@st.composite
def _mutated_fixture(draw: st.DrawFn) -> tuple[int, bytes]:
    index = draw(st.integers(0, len(FIXTURES) - 1))
    data = bytearray(FIXTURES[index].pickle)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["splice", "splice", "delete", "dup", "flip", "truncate"]))
        pos = draw(st.integers(0, len(data)))
        if kind == "splice":
            data[pos:pos] = draw(st.lists(_opcode_bytes(), min_size=1, max_size=3).map(b"".join))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif kind == "dup":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 64))]
        elif kind == "flip" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[pos:]
    return index, bytes(data)


@settings(max_examples=1000, **HYPOTHESIS)
@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    assert_same(data)


@settings(max_examples=800, **HYPOTHESIS)
@given(st.binary(max_size=40), st.lists(_opcode_bytes(), max_size=12).map(b"".join))
def test_random_opcode_streams(prefix: bytes, ops: bytes) -> None:
    data = b"\x80\x02" + ops + b"."
    assert_same(data, persistent_factory=FIXTURES[0].persistent_load)
    assert_same(prefix + ops)


@settings(max_examples=2000, **HYPOTHESIS)
@given(_mutated_fixture(), st.sampled_from(SELECTS))
def test_mutated_fixture_pickles(case: tuple[int, bytes], select: Any) -> None:
    index, data = case
    assert_same(data, persistent_factory=FIXTURES[index].persistent_load)
    assert_same(data, persistent_factory=FIXTURES[index].persistent_load, select=select)


_ROOT_KEYS = ["epoch", "global_step", "state_dict", "hyper_parameters", "loops", "x"]


@settings(max_examples=400, **HYPOTHESIS)
@given(
    st.lists(
        st.tuples(st.sampled_from(_ROOT_KEYS), st.lists(_opcode_bytes(), max_size=6)),
        min_size=1,
        max_size=5,
    ),
    st.sampled_from(SELECTS),
)
def test_random_dict_roots_selected(items: list[tuple[str, list[bytes]]], select: Any) -> None:
    """A dict root whose values are random opcode streams: what the selective reader
    skips (or gives up on, falling back to a full run) is fuzzed."""
    p = Pickle().proto(2).empty_dict().binput(0).mark()
    for key, ops in items:
        p.str(key).raw(b"".join(ops) or b"N")
    data = bytes(p.setitems().stop())
    assert_same(data, persistent_factory=FIXTURES[0].persistent_load, select=select)
    assert_same(data, persistent_factory=FIXTURES[0].persistent_load)


# ---------------------------------------------------------------------------------------
# file level: ckptpeek.open and summary()
# ---------------------------------------------------------------------------------------


def file_outcome(engine: str, data: bytes, select: Any = None) -> tuple[Any, ...]:
    try:
        ckpt = ckptpeek.open(io.BytesIO(data), engine=engine, select=select)
    except ckptpeek.CheckpointError as e:
        return ("err", type(e).__name__, e.code, e.offset, e.member, str(e))
    except Exception as e:  # noqa: BLE001
        return ("escaped", type(e).__name__, str(e))
    with ckpt:
        opened = (
            "ok",
            ckpt.format,
            ckpt.members,
            ckpt.selected,
            canonical(ckpt.root),
            [(g.module, g.name, g.safe) for g in ckpt.globals()],
        )
        try:
            dumped = ckpt.summary().model_dump(mode="json")
            assert dumped.pop("backend") == engine  # the one field that must differ
            summary: Any = ("summary", dumped)
        except ckptpeek.CheckpointError as e:
            summary = ("summary-err", type(e).__name__, e.code, e.offset, str(e))
        except Exception as e:  # noqa: BLE001
            summary = ("summary-escaped", type(e).__name__, str(e))
    return opened + (summary,)


def assert_same_file(data: bytes, select: Any = None) -> tuple[Any, ...]:
    py, nat = file_outcome("python", data, select), file_outcome("native", data, select)
    assert py == nat, f"engines differ on a file (select={select}): {_first_difference(py, nat)}"
    assert py[0] != "escaped", _short(py)
    assert py[0] != "ok" or py[-1][0] != "summary-escaped", _short(py[-1])
    return py


@pytest.mark.parametrize("fx", FIXTURES, ids=FIXTURE_IDS)
def test_fixture_files(fx: Fixture) -> None:
    out = assert_same_file(fx.file)
    assert out[0] == "ok" and out[-1][0] == "summary"
    for select in SELECTS + MORE_SELECTS:
        out = assert_same_file(fx.file, select)
        assert out[0] == "ok" and out[-1][0] == "summary", select


@settings(max_examples=300, **HYPOTHESIS)
@given(
    st.integers(0, len(FIXTURES) - 1),
    st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=3),
)
def test_file_flips(index: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(FIXTURES[index].file)
    for pos, value in flips:
        data[pos % len(data)] = value
    assert_same_file(bytes(data))
    assert_same_file(bytes(data), SELECTS[index % 2])


@pytest.mark.parametrize("fx", FIXTURES, ids=FIXTURE_IDS)
def test_file_flips_in_pickle_member(fx: Fixture) -> None:
    """Flip bytes inside the data.pkl member of a STORED archive (a systematic stride)."""
    start = fx.file.find(fx.pickle)
    assert start > 0
    for i in range(0, len(fx.pickle), 7):
        data = bytearray(fx.file)
        data[start + i] ^= 0xFF
        assert_same_file(bytes(data))


# ---------------------------------------------------------------------------------------
# known divergences (bugs in the shared code; see the report that added them)
# ---------------------------------------------------------------------------------------


def _nested_state_pickle(depth: int) -> bytes:
    """``_rebuild_from_type_v2(_rebuild_meta_tensor_no_storage, torch.Tensor,
    (float32, (), (), False), state)`` with ``state`` a 2-tuple nested ``depth`` deep:
    ``torch_rebuild._set_state`` recurses once per level with no depth limit."""
    state = b"N" + b"N\x86" * depth
    return (
        b"\x80\x02ctorch._tensor\n_rebuild_from_type_v2\n"
        b"(ctorch._utils\n_rebuild_meta_tensor_no_storage\nctorch\nTensor\n"
        b"(ctorch\nfloat32\n))\x89t" + state + b"tR."
    )


def _nested_rebuild_pickle(depth: int) -> bytes:
    """``_rebuild_from_type_v2`` whose rebuild function is ``_rebuild_from_type_v2``
    again, ``depth`` times: each level is one more Python call, unbounded."""
    f = b"ctorch._tensor\n_rebuild_from_type_v2\n"
    s = (
        b"(ctorch._utils\n_rebuild_meta_tensor_no_storage\nctorch\nTensor\n"
        b"(ctorch\nfloat32\n))\x89tNt"
    )
    for _ in range(depth):
        s = b"(" + f + b"ctorch\nTensor\n" + s + b"Nt"
    return b"\x80\x02" + f + s + b"R."


@pytest.mark.parametrize("make", [_nested_state_pickle, _nested_rebuild_pickle])
def test_unbounded_recursion_near_the_interpreter_limit(make: Any) -> None:
    limit = sys.getrecursionlimit()
    for depth in range(max(0, limit - 200), limit + 20):
        assert_same(make(depth))


def test_deep_equal_keys_with_a_large_depth_limit() -> None:
    limits = ckptpeek.Limits(max_depth=5000)
    limit = sys.getrecursionlimit()
    for depth in range(max(0, limit - 200), limit + 20):
        key = b"N" + b"\x85" * depth  # (((None,),),...) nested `depth` deep
        assert_same(b"\x80\x02}" + key + b"Ns" + key + b"K\x01s.", limits=limits)
