"""The ``fallback="torch"`` pre-flight accounts for torch's tensor rebuilds and ZIP records.

torch's ``weights_only`` unpickler allows every rebuild function of ``torch._utils``, and
some of them allocate from numbers in the file: ``set_()`` grows a storage too small for
the tensor's extent, ``_rebuild_device_tensor_from_cpu_tensor`` copies a stride-0 view
whole, ``_rebuild_qtensor`` allocates the tensor's ``size`` first. And torch reads some
ZIP records whole, at the size they declare: a DEFLATE record inflates to any size. Every
hostile file here is built from scratch with ``PROTO 6`` (ckptpeek: ``protocol-too-new``,
so the fallback runs; torch's unpickler only warns) and ``torch.load`` is a recorder that
a refusal must never reach. The valid files are real ``torch.save`` output.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import pytest
from _builders import Member, Pickle, build_zip
from _builders import torch_zip as make_torch_zip
from _fallback import file_identity

import ckptpeek
from ckptpeek import torch_bridge
from ckptpeek.io import zipdir

LIMITS = ckptpeek.DEFAULT_LIMITS
SLACK = 16 << 20  # the pre-flight's built-bytes slack and DEFLATE allowance


# -- generators: pickles that call torch's rebuild functions ------------------------------


def _long(p: Pickle, v: int) -> Pickle:
    return p.raw(b"\x8a\x08" + v.to_bytes(8, "little", signed=True))  # LONG1, 8 bytes


def _ints(p: Pickle, values: tuple[int, ...]) -> Pickle:
    p.mark()
    for v in values:
        _long(p, v)
    return p.tuple()


def _storage(p: Pickle, how: str, numel: int, key: str = "0", kind: str = "FloatStorage") -> None:
    """A persistent id claiming ``numel`` elements, or a storage the pickle constructs."""
    if how == "pid":
        _long(p.mark().str("storage").glob("torch", kind).str(key).str("cpu"), numel)
        p.tuple().binpersid()
    else:  # TypedStorage() / UntypedStorage(): empty, and resizable
        p.glob("torch.storage" if how == "TypedStorage" else "torch", how).empty_tuple().reduce()


def _view(
    p: Pickle,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    *,
    numel: int = 1,
    storage: str = "pid",
    rebuild: str = "_rebuild_tensor_v2",
    kind: str = "FloatStorage",
    key: str = "0",
    offset: int = 0,
) -> Pickle:
    """``rebuild(storage, offset, size, stride, ...)`` as torch.save writes it."""
    p.glob("torch._utils", rebuild).mark()
    _storage(p, storage, numel, key, kind)
    _ints(_long(p, offset), size)
    _ints(p, stride)
    if rebuild == "_rebuild_qtensor":  # (per_tensor_affine, scale, zero_point)
        p.mark().glob("torch", "per_tensor_affine").raw(b"G" + struct.pack(">d", 0.1))
        p.int(0).tuple()
    if rebuild != "_rebuild_tensor":
        p.false().glob("collections", "OrderedDict").empty_tuple().reduce()
    if rebuild == "_rebuild_tensor_v3":
        p.glob("torch", "float32")
    return p.tuple().reduce()


def _copied(p: Pickle, inner: object, dtype: str = "float64") -> Pickle:
    """``_rebuild_device_tensor_from_cpu_tensor(inner, dtype, "cpu", False)``: ``.to()``."""
    p.glob("torch._utils", "_rebuild_device_tensor_from_cpu_tensor").mark()
    inner(p)  # type: ignore[operator]
    return p.glob("torch", dtype).str("cpu").false().tuple().reduce()


def _sparse(p: Pickle, nnz: int, stride: int) -> Pickle:
    """A 10x10 COO tensor of ``nnz`` entries, indices and values views of one element
    each with stride ``stride`` (0: expanded; 1: as torch.save writes them)."""
    p.glob("torch._utils", "_rebuild_sparse_tensor")
    p.glob("torch.serialization", "_get_layout").str("torch.sparse_coo").tuple1().reduce()
    p.mark()
    n = nnz if stride else 1
    _view(p, (2, nnz), (stride * nnz, stride), numel=2 * n, kind="LongStorage", key="0")
    _view(p, (nnz,), (stride,), numel=n, key="1")
    p.glob("torch", "Size").mark().int(10).int(10).tuple().tuple1().reduce()
    return p.raw(b"\x88").tuple().tuple2().reduce()  # is_coalesced=True


def _nested(p: Pickle, n: int, stride: int) -> Pickle:
    """``_rebuild_nested_tensor(buffer, sizes, strides, offsets)``, buffer ``n`` floats."""
    p.glob("torch._utils", "_rebuild_nested_tensor").mark()
    _view(p, (n,), (stride,), numel=n if stride else 1, key="0")
    for key in ("1", "2"):
        _view(p, (1, 1), (1, 1), kind="LongStorage", key=key)
    _view(p, (1,), (1,), kind="LongStorage", key="3")
    return p.tuple().reduce()


def _document(body: object, storages: dict[str, int] | None = None) -> bytes:
    """A torch ZIP archive of ``{"w": body}`` (protocol 6) with zeroed storage records
    of the given byte sizes (by default ``data/0`` of one float32)."""
    p = Pickle().proto(6).empty_dict().str("w")
    body(p)  # type: ignore[operator]
    pkl = bytes(p.setitem().stop())
    sizes = {"0": 4} if storages is None else storages
    extra = [Member(f"archive/data/{k}", b"\0" * n) for k, n in sizes.items() if k != "0"]
    return make_torch_zip(pkl, storage=b"\0" * sizes.get("0", 0), extra=extra)


def _refused(tmp_path, engine, torch_load, data: bytes, code: str, says: str) -> None:
    path = tmp_path / "hostile.pt"
    path.write_bytes(data)
    with pytest.raises(ckptpeek.CheckpointError) as err:
        ckptpeek.open(path, engine=engine, fallback="torch")
    assert err.value.code == code, str(err.value)
    assert says in str(err.value) and "before torch.load ran" in str(err.value)
    assert torch_load == []


def _passes(tmp_path, engine, torch_load, data: bytes) -> None:
    path = tmp_path / "fine.pt"
    path.write_bytes(data)
    with ckptpeek.open(path, engine=engine, fallback="torch") as ckpt:
        assert ckpt.backend == "torch"
    assert torch_load == [file_identity(path)]


# -- 1. a tensor's storage: a persistent id's, holding the tensor's extent ---------------

REBUILDS = ["_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_qtensor"]


@pytest.mark.parametrize("storage", ["TypedStorage", "UntypedStorage"])
@pytest.mark.parametrize("rebuild", REBUILDS)
def test_a_tensor_on_a_constructed_storage_is_refused(
    tmp_path, engine, torch_load, storage, rebuild
) -> None:
    """The attacker's 573-byte file: ``set_()`` would grow ``TypedStorage()`` to 1.6 GB."""
    body = lambda p: _view(p, (200_000_000,), (1,), storage=storage, rebuild=rebuild)  # noqa: E731
    data = _document(body, storages={})
    _refused(tmp_path, engine, torch_load, data, "fallback-allocation", "no persistent id names")


@pytest.mark.parametrize("storage", ["TypedStorage", "UntypedStorage"])
def test_an_empty_tensor_on_a_constructed_storage_passes(
    tmp_path, engine, torch_load, storage
) -> None:
    """No element, nothing to grow (an empty tensor may have any offset, as in torch)."""
    body = lambda p: _view(p, (0, 5), (5, 1), storage=storage, offset=10**9)  # noqa: E731
    _passes(tmp_path, engine, torch_load, _document(body, storages={}))


#: (size, stride, offset, elements the storage claims): the extent is one element more
EXTENTS = [((2,), (1,), 0, 1), ((3, 2), (2, 1), 0, 5), ((4,), (1,), 7, 10), ((2, 2), (0, 3), 0, 3)]


@pytest.mark.parametrize("rebuild", REBUILDS)
@pytest.mark.parametrize(("size", "stride", "offset", "numel"), EXTENTS)
def test_a_tensor_past_its_storage_is_refused(
    tmp_path, engine, torch_load, rebuild, size, stride, offset, numel
) -> None:
    kind = "QInt8Storage" if rebuild == "_rebuild_qtensor" else "FloatStorage"
    width = 1 if rebuild == "_rebuild_qtensor" else 4

    def body(p: Pickle, claim: int) -> None:
        _view(p, size, stride, numel=claim, offset=offset, rebuild=rebuild, kind=kind)

    data = _document(lambda p: body(p, numel), storages={"0": numel * width})
    _refused(tmp_path, engine, torch_load, data, "fallback-allocation", "would grow the storage")
    torch_load.clear()
    fits = _document(lambda p: body(p, numel + 1), storages={"0": (numel + 1) * width})
    _passes(tmp_path, engine, torch_load, fits)


def test_an_expanded_view_is_no_allocation(tmp_path, engine, torch_load) -> None:
    """One float viewed as 15000x15000 with stride 0 is legal (torch.save writes
    ``expand()``'s views so): nothing is copied."""
    _passes(tmp_path, engine, torch_load, _document(lambda p: _view(p, (15000, 15000), (0, 0))))


# -- rebuilds that build: charged to the pickle's and its storages' budget ---------------


def _budget(pickle_bytes: int, storage_bytes: int) -> int:
    return SLACK + 4 * (pickle_bytes + storage_bytes)


def test_copying_an_expanded_view_is_refused(tmp_path, engine, torch_load) -> None:
    """The attacker's 730-byte file: a 4-byte storage copied as 15000x15000 float64."""
    body = lambda p: _copied(p, lambda q: _view(q, (15000, 15000), (0, 0)))  # noqa: E731
    data = _document(body)
    _refused(tmp_path, engine, torch_load, data, "fallback-allocation", "1800000000 bytes")


@pytest.mark.parametrize("dtype", ["float64", "complex128", "int8"])
def test_a_copy_costs_its_elements_at_the_new_dtype(tmp_path, engine, torch_load, dtype) -> None:
    """The charge is numel x the itemsize of the dtype copied to: the largest side
    ``s`` that fits the budget passes, ``s + 1`` is refused."""
    width = {"float64": 8, "complex128": 16, "int8": 1}[dtype]

    def data(side: int) -> bytes:
        return _document(lambda p: _copied(p, lambda q: _view(q, (side, side), (0, 0)), dtype))

    fits = int((_budget(len(data(1)) - 400, 4) // width) ** 0.5) - 8  # a little inside
    _passes(tmp_path, engine, torch_load, data(fits))
    torch_load.clear()
    over = int((_budget(len(data(1)), 4) // width) ** 0.5) + 8
    _refused(tmp_path, engine, torch_load, data(over), "fallback-allocation", "bytes of tensor")


def _copies(n: int, side: int) -> bytes:
    """``[copy(v)] * n``: one memoised ``side x side`` stride-0 view copied ``n`` times."""

    def body(p: Pickle) -> None:
        _view(p, (side, side), (0, 0)).binput(0).raw(b"0")  # memoised, popped
        p.empty_list()
        for _ in range(n):
            _copied(p, lambda q: q.binget(0)).append()

    return _document(body)


def test_every_copy_of_a_storage_is_charged(tmp_path, engine, torch_load) -> None:
    """A storage referenced N times is copied N times: 1 MiB copies, refused at the
    copy that passes the budget (~16 of them), whatever the memo shares."""
    side = 362  # 362**2 float64s: 1,048,352 bytes
    per = side * side * 8
    allowed = _budget(len(_copies(1, side)), 4) // per
    _passes(tmp_path, engine, torch_load, _copies(allowed - 1, side))
    torch_load.clear()
    _refused(tmp_path, engine, torch_load, _copies(allowed + 2, side), "fallback-allocation", "")


def test_a_quantized_tensor_charges_its_allocation(tmp_path, engine, torch_load) -> None:
    """``_rebuild_qtensor`` allocates ``size`` before ``set_()``: a stride-0 quantized
    view of 2**32 elements is 4 GiB allocated, though it fits its one-byte storage."""

    def body(p: Pickle) -> None:
        _view(p, (1 << 16, 1 << 16), (0, 0), rebuild="_rebuild_qtensor", kind="QInt8Storage")

    data = _document(body, storages={"0": 1})
    _refused(tmp_path, engine, torch_load, data, "fallback-allocation", f"{1 << 32} bytes")


@pytest.mark.parametrize(("make", "what"), [(_sparse, "sparse"), (_nested, "nested")])
def test_sparse_and_nested_tensors_charge_their_components(
    tmp_path, engine, torch_load, make, what
) -> None:
    """Their components (validated and walked by torch, densified from) are charged:
    expanded to 100,000,000 entries they are refused; as torch.save writes them they pass."""
    n = 100_000_000
    storages = {"0": 16, "1": 4, "2": 8, "3": 8} if what == "sparse" else None
    if what == "nested":
        storages = {"0": 4, "1": 8, "2": 8, "3": 8}
    data = _document(lambda p: make(p, n, 0), storages=storages)
    _refused(tmp_path, engine, torch_load, data, "fallback-allocation", f"_rebuild_{what}_tensor")
    torch_load.clear()
    small = 1000
    if what == "sparse":
        storages = {"0": 16 * small, "1": 4 * small, "2": 8, "3": 8}
    else:
        storages = {"0": 4 * small, "1": 8, "2": 8, "3": 8}
    _passes(tmp_path, engine, torch_load, _document(lambda p: make(p, small, 1), storages))


# -- what cannot be checked is refused, not guessed ----------------------------------------


def _computed_size(p: Pickle) -> None:
    """``_rebuild_tensor_v2(pid, 0, torch.Size((n,)), (1,), ...)``: a size made by a call."""
    p.glob("torch._utils", "_rebuild_tensor_v2").mark()
    _storage(p, "pid", 1)
    _long(p, 0).glob("torch", "Size").mark().int(200).tuple().tuple1().reduce()
    _ints(p, (1,)).false().glob("collections", "OrderedDict").empty_tuple().reduce()
    p.tuple().reduce()


def _computed_numel(p: Pickle) -> None:
    """A persistent id whose element count is the result of a call."""
    p.mark().str("storage").glob("torch", "FloatStorage").str("0").str("cpu")
    p.glob("torch", "Size").empty_tuple().reduce().tuple().binpersid()


def _copy_of_unknown(p: Pickle) -> None:
    """``_rebuild_device_tensor_from_cpu_tensor`` of something no rebuild made."""
    _copied(p, lambda q: q.glob("collections", "OrderedDict").empty_tuple().reduce())


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (_computed_size, "sizes or strides"),
        (_computed_numel, "element count"),
        (_copy_of_unknown, "the tensor torch._utils._rebuild_device_tensor_from_cpu_tensor"),
    ],
)
def test_what_is_not_a_number_of_the_pickle_cannot_be_checked(
    tmp_path, engine, torch_load, make, says
) -> None:
    data = _document(make)
    _refused(tmp_path, engine, torch_load, data, "fallback-allocation", "cannot be checked")
    assert says in _error_of(data)


def _error_of(data: bytes) -> str:
    with pytest.raises(ckptpeek.CheckpointError) as err:
        torch_bridge.preflight(io.BytesIO(data), limits=LIMITS, trust=False)
    return str(err.value)


def test_a_shared_shape_is_walked_once(monkeypatch) -> None:
    """A memoised 10,000-dimension shape rebuilt 2,000 times: its numbers are read
    once (``_ints`` calls counted), not 2,000 x 10,000 times."""
    dims = 10_000
    p = Pickle().proto(6).empty_list()
    _ints(p, (1,) * dims).raw(b"r" + struct.pack("<I", 1)).raw(b"0")  # LONG_BINPUT 1
    _ints(p, (0,) * dims).raw(b"r" + struct.pack("<I", 2)).raw(b"0")
    for _ in range(2000):
        p.glob("torch._utils", "_rebuild_tensor_v2").mark()
        _storage(p, "pid", 1)
        _long(p, 0).raw(b"j" + struct.pack("<I", 1) + b"j" + struct.pack("<I", 2))
        p.false().glob("collections", "OrderedDict").empty_tuple().reduce().tuple().reduce()
        p.append()
    data = make_torch_zip(bytes(p.stop()), storage=b"\0" * 4)
    calls: list[int] = []
    ints = torch_bridge._ints
    monkeypatch.setattr(torch_bridge, "_ints", lambda k: calls.append(1) or ints(k))
    torch_bridge.preflight(io.BytesIO(data), limits=LIMITS, trust=False)
    assert len(calls) == 2


# -- 2. ZIP records torch reads whole, held to the sizes they declare ------------------------


def _deflated(name: str, data: bytes) -> Member:
    return Member(name, data, method=8)


def _archive(*extra: Member, storage: bytes = b"\0" * 4) -> bytes:
    p = Pickle().proto(6).empty_dict().str("w")
    _view(p, (1,), (1,))
    return make_torch_zip(bytes(p.setitem().stop()), storage=storage, extra=list(extra))


@pytest.mark.parametrize("record", torch_bridge._SMALL_RECORDS)
def test_a_small_record_is_held_to_4_kib(tmp_path, torch_load, record) -> None:
    """``.format_version``, ``byteorder``, ... : torch writes at most 40 bytes, and reads
    them whole before the pickle; 4 KiB + 1 declared is refused, 4 KiB passes."""
    path = tmp_path / "record.pt"
    for size in (4097, 4096):
        path.write_bytes(_replaced(_deflated(f"archive/{record}", b"3" * size)))
        if size == 4096:
            torch_bridge.preflight(path, limits=LIMITS, trust=False)
            continue
        with pytest.raises(ckptpeek.LimitError) as err:
            torch_bridge.preflight(path, limits=LIMITS, trust=False)
        assert err.value.code == "limit-member-size" and err.value.member == f"archive/{record}"
    assert torch_load == []


def _replaced(member: Member, storage: bytes = b"\0" * 4) -> bytes:
    """``_archive()`` with ``member`` added, or in place of its record of that name."""
    with zipfile.ZipFile(io.BytesIO(_archive(storage=storage))) as z:
        kept = [Member(i.filename, z.read(i)) for i in z.infolist() if i.filename != member.name]
    return build_zip([*kept, member])


def _counting_inflate(monkeypatch) -> list[int]:
    """Every byte ckptpeek inflates, counted (``zipdir`` inflates with ``zlib``)."""
    out: list[int] = []
    real = zlib.decompressobj

    class Counting:
        def __init__(self, *a: object) -> None:
            self.d = real(*a)  # type: ignore[arg-type]

        def decompress(self, data: bytes, max_length: int = 0) -> bytes:
            got = self.d.decompress(data, max_length)
            out.append(len(got))
            return got

        @property
        def unconsumed_tail(self) -> bytes:
            return self.d.unconsumed_tail

    monkeypatch.setattr(zipdir.zlib, "decompressobj", Counting)
    return out


@pytest.mark.parametrize("as_file_object", [False, True])
@pytest.mark.parametrize(
    "record", ["archive/extra/blob", "archive/.format_version", "archive/data/0"]
)
def test_a_deflate_bomb_anywhere_is_refused_uninflated(
    tmp_path, engine, torch_load, monkeypatch, as_file_object, record
) -> None:
    """The members together may declare the file's size + 16 MiB: a 20 MiB bomb in a
    record torch never reads, one it reads whole, or a storage record whose id claims
    one float (the attacker's file-object case) is refused before torch runs, and
    nothing of it is inflated; the same bytes STORED pass (DEFLATE only expands)."""
    bomb = b"\0" * (20 << 20)
    inflated = _counting_inflate(monkeypatch)
    data = _replaced(_deflated(record, bomb))
    path = tmp_path / "bomb.pt"
    path.write_bytes(data)
    with pytest.raises(ckptpeek.LimitError) as err:
        ckptpeek.open(io.BytesIO(data) if as_file_object else path, engine=engine, fallback="torch")
    assert err.value.code == "limit-member-size", str(err.value)
    assert torch_load == [] and sum(inflated) < 1 << 20, sum(inflated)
    if record == "archive/extra/blob":
        path.write_bytes(_replaced(Member(record, bomb)))
        torch_bridge.preflight(path, limits=LIMITS, trust=False)


def test_a_storage_record_larger_than_its_id_claims_is_refused(
    tmp_path, engine, torch_load
) -> None:
    """Within the file's size, but more than the persistent id's one float: torch reads
    the whole record; torch.save writes exactly what the id claims."""
    data = _archive(storage=b"\0" * 4096)
    _refused(tmp_path, engine, torch_load, data, "limit-member-size", "declares 4096 bytes")
    torch_load.clear()
    _passes(tmp_path, engine, torch_load, _archive(storage=b"\0" * 4))


def test_a_pickle_record_is_held_to_the_pickle_limit(tmp_path) -> None:
    p = Pickle().proto(6).empty_dict().str("x" * 5000).none().setitem().stop()
    path = tmp_path / "p.pt"
    path.write_bytes(make_torch_zip(bytes(p), pkl_member=_deflated("archive/data.pkl", bytes(p))))
    with pytest.raises(ckptpeek.LimitError) as err:
        torch_bridge.preflight(path, limits=LIMITS._replace(max_pickle_bytes=4096), trust=False)
    assert err.value.code == "limit-member-size" and err.value.member == "archive/data.pkl"
    torch_bridge.preflight(path, limits=LIMITS, trust=False)


# -- every file torch.save writes still passes -----------------------------------------------


def _saved(torch) -> dict[str, object]:
    q = torch.quantize_per_tensor(torch.rand(4, 4), 0.1, 3, torch.qint8)
    base = torch.arange(24.0).reshape(4, 6)
    return {
        "quantized": q,
        "quantized_view": q[1:, ::2],
        "per_channel": torch.quantize_per_channel(
            torch.rand(3, 4),
            torch.tensor([0.1, 0.2, 0.3]),
            torch.tensor([0, 1, 2]),
            0,
            torch.quint8,
        ),
        "coo": torch.eye(3).to_sparse(),
        "csr": torch.eye(3).to_sparse_csr(),
        "csc": torch.eye(3).to_sparse_csc(),
        "bsr": torch.eye(4).to_sparse_bsr((2, 2)),
        "nested": torch.nested.nested_tensor([torch.ones(2), torch.ones(3)]),
        "expanded": torch.ones(1).expand(1000, 1000),
        "strided": base[1:, ::2],
        "transposed": base.t(),
        "offset": base[3],
        "shared": (base, base[2:]),
        "complex64": torch.ones(3, dtype=torch.complex64),
        "complex128": torch.ones(2, 2, dtype=torch.complex128).conj(),
        "bfloat16": torch.ones(3, dtype=torch.bfloat16),
        "float8": torch.ones(3, dtype=torch.float8_e4m3fn),
        "uint16": torch.ones(3, dtype=torch.uint16),
        "meta": torch.ones(5, 7, device="meta"),
        "empty": torch.ones(0, 4),
        "scalar": torch.tensor(3.0),
        "parameter": torch.nn.Parameter(torch.ones(2)),
    }


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("zipped", [True, False])
def test_the_preflight_passes_every_tensor_torch_saves(tmp_path, zipped) -> None:
    torch = pytest.importorskip("torch")
    for name, obj in _saved(torch).items():
        path = tmp_path / f"{name}.pt"
        torch.save({name: obj}, path, _use_new_zipfile_serialization=zipped)
        torch_bridge.preflight(path, limits=LIMITS, trust=False)
        torch_bridge.preflight(io.BytesIO(path.read_bytes()), limits=LIMITS, trust=False)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_large_quantized_tensor_passes(tmp_path) -> None:
    """A 32 MiB quantized tensor charges its 32 MiB allocation: its storage pays for
    it (4x the storage bytes), though the pickle's share alone (16 MiB + 4x a few
    hundred bytes) would not."""
    torch = pytest.importorskip("torch")
    q = torch.quantize_per_tensor(torch.zeros(32 << 20), 0.1, 0, torch.qint8)
    path = tmp_path / "q.pt"
    torch.save({"q": q}, path)
    torch_bridge.preflight(path, limits=LIMITS, trust=False)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_fallback_gives_torchs_answer_for_rebuilt_tensors(tmp_path) -> None:
    """Through the fallback (protocol 6 marks the pickle), real torch.load's result."""
    torch = pytest.importorskip("torch")
    obj = {k: _saved(torch)[k] for k in ("quantized", "coo", "nested", "expanded", "meta")}
    buf = io.BytesIO()
    torch.save(obj, buf)
    out = io.BytesIO()
    with zipfile.ZipFile(buf) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            zout.writestr(
                info, b"\x80\x06" + data[2:] if info.filename.endswith("data.pkl") else data
            )
    path = tmp_path / "p6.pt"
    path.write_bytes(out.getvalue())
    want = torch.load(path, weights_only=True)
    with ckptpeek.open(path, fallback="torch") as ckpt:
        assert ckpt.backend == "torch"
        assert torch.equal(ckpt.root["quantized"].int_repr(), want["quantized"].int_repr())
        assert torch.equal(ckpt.root["coo"].to_dense(), want["coo"].to_dense())
        assert [t.tolist() for t in ckpt.root["nested"].unbind()] == [[1, 1], [1, 1, 1]]
        assert ckpt.get("expanded").numpy().shape == (1000, 1000)
        assert ckpt.get("meta").shape == (5, 7)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_torchscript_constants_are_held_to_their_own_records(tmp_path) -> None:
    """``constants.pkl``'s storages are ``constants/<key>`` records, not ``data/<key>``
    (a traced module has both, with key ``0`` each, of different sizes)."""
    torch = pytest.importorskip("torch")

    class Scaled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(7))
            self.c = torch.arange(5.0)  # no buffer: tracing makes it a constant

        def forward(self, x):  # noqa: ANN001, ANN202
            return x * self.w + self.c[:1]

    path = tmp_path / "traced.pt"
    torch.jit.save(torch.jit.trace(Scaled(), torch.ones(7)), path)
    with zipfile.ZipFile(path) as z:
        sizes = {i.filename.split("/", 1)[1]: i.file_size for i in z.infolist()}
    assert sizes["data/0"] == 28 and sizes["constants/0"] == 20
    torch_bridge.preflight(path, limits=LIMITS, trust=True)
