"""``fallback="torch"`` is bounded as ckptpeek is: the pre-flight, the policy, the walk.

Every hostile file is built here from scratch, with a pickle feature ckptpeek refuses as
unsupported (``PROTO 6``: ``protocol-too-new``; torch's ``weights_only`` unpickler only
warns about it) so that the fallback is reached. ``torch.load`` is replaced by a recorder:
a refusal must come before torch runs, so no test allocates what the file asks for.
"""

from __future__ import annotations

import io
import os
import pathlib
import struct
import subprocess
import sys
import zipfile

import pytest
from _builders import Member, Pickle, build_zip
from _builders import torch_zip as make_torch_zip
from _fallback import file_identity

import ckptpeek
from ckptpeek import torch_bridge
from ckptpeek.errors import ERROR_CODES, UnsupportedError
from ckptpeek.formats import torch_legacy, torch_zip

DATA = pathlib.Path(__file__).parent / "data"
BIG = 3_200_000_000 // 4  # what the attacker's 866-byte file asked for, in float32s


def _int(p: Pickle, v: int) -> Pickle:
    return p.raw(b"\x8a" + bytes([16]) + v.to_bytes(16, "little", signed=True))  # LONG1


def _calling(module: str, name: str, size: int, how: str) -> bytes:
    """A protocol-6 pickle ``{"x": module.name(size)}``, the call made ``how``: REDUCE
    with ``(size,)``, NEWOBJ, numpy's ``_reconstruct(ndarray, (size,), b"b")``, or
    torch's ``_rebuild_from_type_v2(module.name, Tensor, (size,), {})`` (torch calls it)."""
    p = Pickle().proto(6).empty_dict().str("x")
    if how == "rebuild_from_type":
        p.glob("torch._tensor", "_rebuild_from_type_v2").mark().glob(module, name)
        _int(p.glob("torch", "Tensor"), size).tuple1().empty_dict().tuple().reduce()
    elif how == "reconstruct":
        p.glob(module, name).glob("numpy", "ndarray")
        _int(p, size).tuple1().raw(b"C\x01b").tuple3().reduce()
    else:
        _int(p.glob(module, name), size).tuple1().raw(b"\x81" if how == "newobj" else b"R")
    return bytes(p.setitem().stop())


ALLOCATIONS = [
    ("builtins", "bytearray", "reduce"),
    ("torch", "FloatTensor", "reduce"),
    ("torch", "UntypedStorage", "reduce"),
    ("torch", "Tensor", "newobj"),
    ("numpy.core.multiarray", "_reconstruct", "reconstruct"),
    ("builtins", "bytearray", "rebuild_from_type"),
]


@pytest.mark.parametrize(("module", "name", "how"), ALLOCATIONS)
def test_allocation_from_a_number_is_refused_before_torch_runs(
    tmp_path, engine, torch_load, module, name, how
) -> None:
    path = tmp_path / "alloc.pt"
    path.write_bytes(make_torch_zip(_calling(module, name, BIG, how)))
    with pytest.raises(ckptpeek.UnsafePickleError) as err:
        ckptpeek.open(path, engine=engine, fallback="torch")
    assert err.value.code == "fallback-allocation" and f"{module}.{name}" in str(err.value)
    assert err.value.member == "archive/data.pkl" and err.value.path == str(path)
    assert isinstance(err.value.__cause__, UnsupportedError)  # what made it fall back
    assert torch_load == []
    with pytest.raises(ckptpeek.UnsafePickleError):  # the drop-in, asked to fall back
        ckptpeek.load_checkpoint(path, engine=engine, fallback="auto")
    with pytest.raises(UnsupportedError) as unsupported:  # by default: never torch
        ckptpeek.load_checkpoint(path, engine=engine)
    assert unsupported.value.code == "protocol-too-new"
    assert torch_load == []


@pytest.mark.parametrize("how", ["reduce", "reconstruct"])
def test_a_size_of_zero_is_no_allocation(tmp_path, engine, torch_load, how) -> None:
    """numpy pickles every array as ``_reconstruct(ndarray, (0,), b"b")``."""
    module, name = ("builtins", "bytearray") if how == "reduce" else ALLOCATIONS[4][:2]
    path = tmp_path / "zero.pt"
    path.write_bytes(make_torch_zip(_calling(module, name, 0, how)))
    with ckptpeek.open(path, engine=engine, fallback="torch") as ckpt:
        assert ckpt.backend == "torch"
    assert len(torch_load) == 1


def _legacy(numel: int) -> bytes:
    """A legacy ``torch.save`` file whose storage claims ``numel`` floats (the object
    pickle is protocol 6); torch allocates ``numel * 4`` bytes before reading them."""
    magic = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + b"."
    version = b"\x80\x02M\xe9\x03."
    sys_info = bytes(Pickle().proto(2).empty_dict().stop())
    p = Pickle().proto(6).mark().str("storage").glob("torch", "FloatStorage")
    _int(p.str("0").str("cpu"), numel).none().tuple().binpersid().stop()
    keys = bytes(Pickle().proto(2).mark().str("0").raw(b"l").stop())
    return magic + version + sys_info + bytes(p) + keys + struct.pack("<q", 1) + b"\0" * 4


def test_legacy_storages_larger_than_the_file_are_refused(tmp_path, engine, torch_load) -> None:
    path = tmp_path / "legacy.pt"
    path.write_bytes(_legacy(BIG))
    with pytest.raises(ckptpeek.UnsafePickleError) as err:
        ckptpeek.open(path, engine=engine, fallback="torch")
    assert err.value.code == "fallback-allocation" and "persistent ids claim" in str(err.value)
    assert torch_load == []
    path.write_bytes(_legacy(1))  # the one float the file holds: torch may read it
    with ckptpeek.open(path, engine=engine, fallback="torch") as ckpt:
        assert ckpt.backend == "torch"
    assert torch_load == [file_identity(path)]


def _memo(n: int) -> bytes:
    p = Pickle().proto(6).empty_list()
    for i in range(n):
        p.none().binput(i).append()
    return bytes(p.stop())


def _marks(n: int) -> bytes:
    return bytes(Pickle().proto(6).raw(b"(" * n).raw(b"0" * n).none().stop())


def _copies(n: int, size: int = 1 << 20) -> bytes:
    """``[_codecs.encode(s, "latin1")] * n`` of one memoised string: ``n`` copies."""
    p = Pickle().proto(6).empty_list().str("x" * size).binput(0).raw(b"0")
    for _ in range(n):
        p.glob("_codecs", "encode").binget(0).str("latin1").tuple2().reduce().append()
    return bytes(p.stop())


def _dag_key(depth: int) -> bytes:
    """``{t: 0}`` with ``t`` a tuple DAG ``depth`` levels deep: hashing it visits 2**depth."""
    p = Pickle().proto(6).empty_dict().int(1).tuple1().binput(0)
    for i in range(depth):
        p.binget(i).binget(i).tuple2().binput(i + 1)
    return bytes(p.int(0).setitem().stop())


MERSENNE = (1 << 61) - 1  # CPython hashes an int modulo this prime: i * MERSENNE -> 0


#: how a pickle inserts keys: the opcode before them, the one after (a key and a value
#: each for a dict, a member for a set)
INSERTIONS = {
    "setitems": (b"}(", b"u"),  # EMPTY_DICT MARK ... SETITEMS
    "dict": (b"(", b"d"),  # MARK ... DICT
    "frozenset": (b"(", b"\x91"),  # MARK ... FROZENSET
    "additems": (b"\x8f(", b"\x90"),  # EMPTY_SET MARK ... ADDITEMS
    "setitem": (b"}", b""),  # EMPTY_DICT, then key value SETITEM each
}


def _keys(keys: list[Pickle], how: str = "setitems") -> bytes:
    """A dict or set of the keys the ``Pickle`` fragments push, inserted ``how``."""
    before, after = INSERTIONS[how]
    p = Pickle().proto(6).raw(before)
    for key in keys:
        p.raw(bytes(key))
        if how in ("setitems", "dict", "setitem"):
            p.int(0)
        if how == "setitem":
            p.setitem()
    return bytes(p.raw(after).stop())


def _flood(n: int, how: str = "setitems") -> bytes:
    """``n`` distinct int keys that all hash to 0 (~20 bytes each): each insertion
    compares with every key before it, n**2 / 2 comparisons in all."""
    return _keys([_int(Pickle(), i * MERSENNE) for i in range(n)], how)


def _tuple_flood(n: int) -> bytes:
    """Tuples hash the same in every process too: ``(i * MERSENNE, 1)`` all collide."""
    return _keys([_int(Pickle(), i * MERSENNE).int(1).tuple2() for i in range(n)])


def _big_int_key(nbytes: int) -> bytes:
    """``{i: 0}`` with ``i`` an int of ``nbytes`` bytes: hashing it is linear in them."""
    return _keys([Pickle().raw(b"\x8b" + struct.pack("<I", nbytes) + b"\x01" * nbytes)])


def _deep_key(depth: int) -> bytes:
    """``{((...(1,)...),): 0}``: a key ``depth`` tuples deep (hashing it recurses in C)."""
    p = Pickle().int(1)
    for _ in range(depth):
        p.tuple1()
    return _keys([p])


#: (code, generator, n over the limit, n within it, limits)
LIMITED = [
    ("limit-memo", _memo, 11, 10, {"max_memo": 10}),
    ("limit-marks", _marks, 11, 10, {"max_marks": 10}),
    ("limit-built-bytes", _copies, 30, 10, {}),  # 4 MiB of pickle + 16 MiB: 20 copies
    ("limit-key-size", _dag_key, 60, 10, {}),  # 3 * 2**10 - 1 parts hashed; 10,000 allowed
    # n keys of one hash cost n * (n - 1) / 2 comparisons; 1,000,000 allowed (1,414 keys)
    ("limit-hash-collisions", _flood, 20_000, 1_000, {}),
    ("limit-hash-collisions", _tuple_flood, 2_000, 500, {}),  # each comparison costs 3
    ("limit-key-size", _big_int_key, 1 << 20, 1 << 10, {}),  # 128 bits a part: 10,000 parts
    ("limit-depth", _deep_key, 201, 200, {}),
]


@pytest.mark.parametrize(
    ("code", "make", "n", "within", "limits"), LIMITED, ids=[c[1].__name__ for c in LIMITED]
)
def test_the_preflight_holds_torch_to_ckptpeeks_limits(
    tmp_path, engine, torch_load, code, make, n, within, limits
) -> None:
    path = tmp_path / "limit.pt"
    path.write_bytes(make_torch_zip(make(n)))
    with pytest.raises(ckptpeek.LimitError) as err:
        ckptpeek.open(
            path, engine=engine, fallback="torch", limits=ckptpeek.DEFAULT_LIMITS._replace(**limits)
        )
    assert err.value.code == code and "before torch.load ran" in str(err.value)
    assert torch_load == []


@pytest.mark.parametrize(
    ("code", "make", "n", "within", "limits"), LIMITED, ids=[c[1].__name__ for c in LIMITED]
)
def test_within_the_limits_the_fallback_runs(
    tmp_path, engine, torch_load, code, make, n, within, limits
) -> None:
    path = tmp_path / "small.pt"
    path.write_bytes(make_torch_zip(make(within)))
    with ckptpeek.open(
        path, engine=engine, fallback="torch", limits=ckptpeek.DEFAULT_LIMITS._replace(**limits)
    ) as ckpt:
        assert ckpt.backend == "torch"
    assert len(torch_load) == 1


def _pretend(code: str):
    def read(*args: object, **kwargs: object) -> object:
        raise ckptpeek.errors.error(code, "pretend this feature is not read")

    return read


def test_pickle_size_limit_holds_for_the_fallback(tmp_path, monkeypatch, torch_load) -> None:
    monkeypatch.setattr(torch_zip, "read", _pretend("not-dense"))
    limits = ckptpeek.DEFAULT_LIMITS._replace(max_pickle_bytes=100)
    with pytest.raises(ckptpeek.LimitError) as err:
        ckptpeek.open(DATA / "state_dict.pt", fallback="torch", limits=limits)
    assert err.value.code == "limit-member-size" and torch_load == []


def test_every_unsupported_code_has_a_fallback_decision() -> None:
    """A new ``UnsupportedError`` code must say whether torch may read what it refuses."""
    unsupported = {c for c, (cls, _) in ERROR_CODES.items() if cls is UnsupportedError}
    assert set(torch_bridge.FALLBACK) == unsupported
    for code, decision in torch_bridge.FALLBACK.items():
        assert decision is True or (isinstance(decision, str) and decision), code


@pytest.mark.parametrize("code", [c for c, d in torch_bridge.FALLBACK.items() if d is not True])
def test_refusals_made_for_safety_never_fall_back(monkeypatch, torch_load, code) -> None:
    monkeypatch.setattr(torch_zip, "read", _pretend(code))
    with pytest.raises(UnsupportedError) as err:
        ckptpeek.open(DATA / "state_dict.pt", fallback="torch")
    assert err.value.code == code and torch_load == []


def test_an_encrypted_member_never_reaches_torch(tmp_path, engine, torch_load) -> None:
    extra = Member("archive/extra", b"x", flags=1)  # torch never reads it; another reader might
    path = tmp_path / "encrypted.pt"
    path.write_bytes(make_torch_zip(_calling("builtins", "bytearray", 0, "reduce"), extra=[extra]))
    with pytest.raises(UnsupportedError) as err:
        ckptpeek.open(path, engine=engine, fallback="torch")
    assert err.value.code == "zip-encrypted" and torch_load == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_never_reaches_torch(tmp_path, torch_load) -> None:
    fifo = tmp_path / "fifo.pt"
    os.mkfifo(fifo)
    with pytest.raises(UnsupportedError) as err:
        ckptpeek.open(fifo, fallback="torch")  # torch.load would block on it
    assert err.value.code == "not-regular-file" and torch_load == []


@pytest.mark.parametrize(
    "name", sorted(p.name for p in DATA.iterdir() if p.suffix != ".json" and p.suffix != ".py")
)
@pytest.mark.parametrize("trust", [False, True])
def test_the_preflight_passes_every_fixture(name, trust) -> None:
    """Valid files are never refused: the committed fixtures, every format (but the
    pickles of a tar's members, which only ``trust=True`` lets torch run, are not found)."""
    if trust and name == "legacy_tar.pt":
        with pytest.raises(UnsupportedError) as err:
            torch_bridge.preflight(DATA / name, limits=ckptpeek.DEFAULT_LIMITS, trust=trust)
        assert err.value.code == "fallback-unchecked"
        return
    torch_bridge.preflight(DATA / name, limits=ckptpeek.DEFAULT_LIMITS, trust=trust)


def test_the_preflight_passes_what_torch_saves(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    q = torch.quantize_per_tensor(torch.rand(4), 0.1, 3, torch.qint8)
    params = [torch.nn.Parameter(torch.ones(2)) for _ in range(300)]
    adam = torch.optim.Adam(params)
    sum(p.sum() for p in params).backward()
    adam.step()  # a state per parameter, keyed 0..299, each {"step", "exp_avg", ...}
    obj = {
        "optimizer_states": [adam.state_dict(), adam.state_dict()],
        "b": bytearray(b"abc" * 100),
        "q": q,
        "s": torch.eye(3).to_sparse(),
        "p": torch.nn.Parameter(torch.ones(2)),
        "n": torch.nested.nested_tensor([torch.ones(2), torch.ones(3)]),
        "k": {(1, (2, 3)): torch.zeros(1)},
        "e": torch.ones(1).expand(1000, 1000),
    }
    for zipped in (True, False):
        path = tmp_path / f"saved-{zipped}.pt"
        torch.save(obj, path, _use_new_zipfile_serialization=zipped)
        torch_bridge.preflight(path, limits=ckptpeek.DEFAULT_LIMITS, trust=False)


def test_legacy_files_fall_back_by_path(tmp_path, monkeypatch) -> None:
    """torch.load refuses mmap=True for a non-ZIP file: the bridge maps ZIP files only."""
    torch = pytest.importorskip("torch")
    path = tmp_path / "legacy.pt"
    want = {"w": torch.arange(6.0).reshape(2, 3), "t": (torch.ones(2), 3)}
    torch.save(want, path, _use_new_zipfile_serialization=False)
    monkeypatch.setattr(torch_legacy, "read", _pretend("not-dense"))
    with ckptpeek.open(path, fallback="torch") as ckpt:
        assert ckpt.backend == "torch"
        assert ckpt.get("w").numpy().tolist() == want["w"].tolist()
        assert ckpt.get("t")[0].numpy().tolist() == [1.0, 1.0] and ckpt.get("t")[1] == 3


def _shared_dag(torch, depth: int):
    t = (torch.zeros(2),)
    for _ in range(depth):
        t = (t, t)
    return t


def test_the_walk_visits_each_shared_object_once(tmp_path, monkeypatch) -> None:
    """A tuple DAG 60 levels deep (2**60 paths): one TensorRef, sharing as torch gives it."""
    torch = pytest.importorskip("torch")
    path = tmp_path / "dag.pt"
    torch.save({"dag": _shared_dag(torch, 60), "again": [None]}, path)
    monkeypatch.setattr(torch_zip, "read", _pretend("not-dense"))
    made: list[object] = []
    to_ref = torch_bridge._to_ref
    monkeypatch.setattr(torch_bridge, "_to_ref", lambda t, s: made.append(t) or to_ref(t, s))
    with ckptpeek.open(path, fallback="torch") as ckpt:
        t = ckpt.get("dag")
        for _ in range(60):
            assert t[0] is t[1]  # shared as in torch.load's result
            t = t[0]
        assert isinstance(t[0], ckptpeek.TensorRef)
    assert len(made) == 1


@pytest.mark.parametrize(
    ("limit", "code"), [("max_nodes", "limit-nodes"), ("max_depth", "limit-depth")]
)
def test_the_walk_is_bounded_by_the_limits(tmp_path, monkeypatch, limit, code) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "deep.pt"
    deep: list[object] = [torch.ones(1)]
    for _ in range(30):
        deep = [deep, 1, 2]
    torch.save({"deep": deep}, path)
    monkeypatch.setattr(torch_zip, "read", _pretend("not-dense"))
    limits = ckptpeek.DEFAULT_LIMITS._replace(**{limit: 20})
    with pytest.raises(ckptpeek.LimitError) as err:
        ckptpeek.open(path, fallback="torch", limits=limits)
    assert err.value.code == code
    with ckptpeek.open(path, fallback="torch") as ckpt:  # the defaults: converted
        inner = ckpt.root["deep"]
        for _ in range(30):
            inner = inner[0]
        assert isinstance(inner[0], ckptpeek.TensorRef)


def test_a_file_object_is_checked_too(engine, torch_load) -> None:
    """torch.load reads a file object from its start; so does the pre-flight (and leaves
    the caller's position alone)."""
    data = make_torch_zip(_calling("builtins", "bytearray", BIG, "reduce"))
    f = io.BytesIO(data)
    with pytest.raises(ckptpeek.UnsafePickleError) as err:
        ckptpeek.open(f, engine=engine, fallback="torch")
    assert err.value.code == "fallback-allocation" and err.value.path is None
    assert torch_load == []


class _CountingGuard(torch_bridge.KeyGuard):
    checked = 0

    def check(self, key: object, container: object) -> None:
        _CountingGuard.checked += 1
        super().check(key, container)


@pytest.mark.parametrize("how", sorted(INSERTIONS))
def test_a_hash_flood_is_refused_after_a_bounded_number_of_keys(
    tmp_path, engine, torch_load, monkeypatch, how
) -> None:
    """20,000 int keys of one hash (400 KB; 5.1 s in torch.load): the pre-flight stops
    at the key that passes 1,000,000 comparisons (the 1,415th), however it is inserted."""
    monkeypatch.setattr(torch_bridge, "KeyGuard", _CountingGuard)
    monkeypatch.setattr(_CountingGuard, "checked", 0)
    path = tmp_path / "flood.pt"
    path.write_bytes(make_torch_zip(_flood(20_000, how)))
    with pytest.raises(ckptpeek.LimitError) as err:
        ckptpeek.open(path, engine=engine, fallback="torch")
    assert err.value.code == "limit-hash-collisions" and torch_load == []
    assert err.value.member == "archive/data.pkl" and err.value.offset > 0
    assert "before torch.load ran" in str(err.value) and "hash flooding" in str(err.value)
    assert _CountingGuard.checked == 1_415  # 1414 * 1413 / 2 <= 1,000,000 < 1415 * 1414 / 2


def test_keys_of_different_containers_do_not_collide(tmp_path, engine, torch_load) -> None:
    """An optimizer's state: 2,000 dicts keyed 0..99 - the same keys, in distinct dicts
    (one of them shared through the memo, as torch.save writes it)."""
    p = Pickle().proto(6).empty_list().raw(b"(")
    for i in range(2_000):
        p.empty_dict().raw(b"(")
        for k in range(100):
            p.int(k).int(i)
        p.raw(b"u")
    p.raw(b"e").binput(0).binget(0).append()  # APPENDS, then the list inside itself
    path = tmp_path / "state.pt"
    path.write_bytes(make_torch_zip(bytes(p.stop())))
    with ckptpeek.open(path, engine=engine, fallback="torch") as ckpt:
        assert ckpt.backend == "torch"
    assert len(torch_load) == 1


def _saved_with_protocol_6(torch, path: pathlib.Path, obj: object) -> None:
    """``torch.save(obj)`` with its ``data.pkl`` marked protocol 6: ckptpeek refuses
    that (``protocol-too-new``), torch's unpickler only warns, so the fallback runs."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    out = io.BytesIO()
    with zipfile.ZipFile(buf) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("/data.pkl"):
                data = b"\x80\x06" + data[2:]
            zout.writestr(info, data)
    path.write_bytes(out.getvalue())


_TRUNCATE_AFTER_OPEN = """
import os, sys, warnings
import ckptpeek
warnings.simplefilter("ignore")
path = sys.argv[1]
with ckptpeek.open(path, fallback="torch") as ckpt:
    assert ckpt.backend == "torch"
    os.truncate(path, 1000)  # the writer truncates the file after the load
    values = ckpt.get("w").numpy()
    print(int(values[-1]), int(values.astype("float64").sum()))
"""


def test_a_file_truncated_after_the_fallback_loaded_it_cannot_crash(tmp_path) -> None:
    """torch.load(mmap=True) mapped the file: a truncation made numpy() die of SIGBUS
    (rc 135). The bridge loads with mmap=False: the storages were read at load, so the
    values are still there. In a subprocess, as SIGBUS would kill the test process."""
    torch = pytest.importorskip("torch")
    path = tmp_path / "big.pt"
    _saved_with_protocol_6(torch, path, {"w": torch.arange(1 << 20, dtype=torch.float32)})
    run = subprocess.run(
        [sys.executable, "-c", _TRUNCATE_AFTER_OPEN, str(path)], capture_output=True, text=True
    )
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
    assert run.stdout.split() == [str((1 << 20) - 1), str(sum(range(1 << 20)))]
    assert path.stat().st_size == 1000


def test_the_fallback_never_maps_the_file(tmp_path, monkeypatch) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "p6.pt"
    _saved_with_protocol_6(torch, path, {"w": torch.ones(3)})
    calls: list[dict[str, object]] = []
    load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or load(*a, **k))
    with (
        pytest.warns(UserWarning, match="protocol 6"),
        ckptpeek.open(path, fallback="torch") as ckpt,
    ):
        assert ckpt.get("w").numpy().tolist() == [1.0, 1.0, 1.0]
    assert [c["mmap"] for c in calls] == [False]


def test_compressed_storage_records_count_at_their_inflated_size(tmp_path, torch_load) -> None:
    """Without a mapping torch reads each ``data/<key>`` record whole: a DEFLATE record
    that inflates past the file's size is an allocation the file cannot back."""
    p = Pickle().proto(6).mark().str("storage").glob("torch", "FloatStorage")
    _int(p.str("0").str("cpu"), 1).none().tuple().binpersid().stop()
    members = [
        Member("archive/data.pkl", bytes(p)),
        Member("archive/data/0", b"\0" * (8 << 20), method=8),  # 8 MiB, ~8 KB stored
        Member("archive/version", b"3\n"),
    ]
    path = tmp_path / "deflated.pt"
    path.write_bytes(build_zip(members))
    with pytest.raises(ckptpeek.UnsafePickleError) as err:
        torch_bridge.preflight(path, limits=ckptpeek.DEFAULT_LIMITS, trust=False)
    assert err.value.code == "fallback-allocation" and f"claim {8 << 20} bytes" in str(err.value)


def test_torch_reads_the_file_the_preflight_read(tmp_path, engine, torch_load, monkeypatch) -> None:
    """A file renamed over the path between the pre-flight and torch.load is not the one
    torch reads: both read one descriptor, opened once."""
    path, evil = tmp_path / "legacy.pt", tmp_path / "evil.pt"
    path.write_bytes(_legacy(1))
    evil.write_bytes(_legacy(BIG))  # what the pre-flight refuses
    checked = file_identity(path)
    real = torch_bridge.preflight

    def then_swap(source, **kwargs):  # type: ignore[no-untyped-def]
        real(source, **kwargs)
        os.replace(evil, path)  # the race, won by the attacker every time

    monkeypatch.setattr(torch_bridge, "preflight", then_swap)
    with ckptpeek.open(path, engine=engine, fallback="torch") as ckpt:
        assert ckpt.backend == "torch"
    assert torch_load == [checked] and file_identity(path) != checked
