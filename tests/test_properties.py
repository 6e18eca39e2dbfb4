"""Properties over generated inputs: pickles, ZIP archives, safetensors headers.

Each generator (a hypothesis strategy) makes a class of inputs from scratch: opcode
streams from a grammar of pickle tokens (with memo sharing, known and unknown globals,
persistent ids, frames), stdlib pickles of generated values, ZIP archives whose every
directory field may lie, and safetensors headers with honest or perturbed offsets. The
properties are the library's promises:

- only ``CheckpointError`` leaves ckptpeek, whatever the bytes;
- the pure and native engines (and ZIP directory parsers) give identical outcomes;
- a valid input is read, with the value the reference reader gives (``pickle.loads``,
  Python's ``zipfile``, the Rust ``safetensors`` reader);
- work is bounded, counted: opcodes executed never exceed the pickle's bytes, a walk
  visits each shared container once and stops at ``max_nodes``, a directory read
  reads a bounded number of bytes, a safetensors header read reads exactly ``8 + N``.

The native comparisons are skipped when the extension is not built (CI's pure-only
stage), the properties of one engine still run.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import struct
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
from _builders import Member, build_zip, small_checkpoint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ckptpeek
from ckptpeek import walk
from ckptpeek.errors import CheckpointError
from ckptpeek.formats import safetensors as st_format
from ckptpeek.formats.torch_zip import ZipStorageReader, find_prefix
from ckptpeek.io import zipdir
from ckptpeek.io.source import ByteSource
from ckptpeek.unpickle import engine as _backend
from ckptpeek.unpickle import pickle_vm

NATIVE = "native" in _backend._ENGINES
needs_native = pytest.mark.skipif(
    not NATIVE, reason=f"native engine not built ({_backend.NATIVE_ERROR})"
)
if NATIVE:  # the parity tests' comparison of value graphs (imports only with the engine)
    from test_parity import canonical

FAST = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ------------------------------------------------------------------------------ outcomes


def run_outcome(fn: Callable[[], Any], value: Callable[[Any], Any]) -> tuple[Any, ...]:
    """``("ok", value(result))`` or ``("err", class, code, offset, message)``; any other
    exception fails the test right here (it escaped the library)."""
    try:
        result = fn()
    except CheckpointError as e:
        return ("err", type(e).__name__, e.code, e.offset, str(e))
    return ("ok", value(result))


def pickle_outcome(engine: str, data: bytes, **kw: Any) -> tuple[Any, ...]:
    vm = _backend.engine(engine)
    shape = canonical if NATIVE else repr
    return run_outcome(
        lambda: vm.run_pickle(data, **kw),
        lambda r: (shape(r.value), sorted(r.globals.items()), r.complete, r.end),
    )


# ------------------------------------------------------------------------------ pickles

_CKPT = small_checkpoint()
_DIRECTORY = zipdir.read_directory(ByteSource(io.BytesIO(_CKPT)))


def persistent_load() -> Any:
    """A fresh storage resolver over the built checkpoint (storage key "0", 6 floats)."""
    return ZipStorageReader(_DIRECTORY, find_prefix(_DIRECTORY)).persistent_load


_GLOBALS = [
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch", "FloatStorage"),
    ("torch", "Size"),
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy", "dtype"),
    ("omegaconf.dictconfig", "DictConfig"),
    ("argparse", "Namespace"),
    ("os", "system"),  # unknown: a Placeholder, or UnsafePickleError when strict
]
_NULLARY = [
    b"N", b"(", b")", b"]", b"}", b"\x8f", b"t", b"l", b"d", b"a", b"e", b"s", b"u",
    b"0", b"1", b"2", b"\x85", b"\x86", b"\x87", b"\x88", b"\x89", b"\x94", b"R", b"b",
    b"\x81", b"\x90", b"\x91", b"\x93", b"Q", b".",
]  # fmt: skip


def _str_op(s: str) -> bytes:
    b = s.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(b)) + b


def _long1(n: int) -> bytes:
    b = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(b)]) + b


def _global(mn: tuple[str, str]) -> bytes:
    return b"c" + mn[0].encode() + b"\n" + mn[1].encode() + b"\n"


_TOKENS = st.one_of(
    st.sampled_from(_NULLARY),
    st.integers(0, 255).map(lambda i: b"K" + bytes([i])),
    st.integers(-(2**31), 2**31 - 1).map(lambda i: b"J" + struct.pack("<i", i)),
    st.integers(-(2**80), 2**80).map(_long1),
    st.floats(allow_nan=True).map(lambda f: b"G" + struct.pack(">d", f)),
    st.text(max_size=6).map(_str_op),
    st.binary(max_size=8).map(lambda b: b"C" + bytes([len(b)]) + b),
    st.integers(0, 7).map(lambda i: b"q" + bytes([i])),  # BINPUT
    st.integers(0, 7).map(lambda i: b"h" + bytes([i])),  # BINGET
    st.sampled_from(_GLOBALS).map(_global),
    st.sampled_from(["epoch", "state_dict", "w", "storage", "0", "cpu"]).map(_str_op),
)


@st.composite
def opcode_streams(draw: st.DrawFn) -> bytes:
    """A protocol header, 0-60 tokens of the grammar, usually a final STOP."""
    proto = draw(st.sampled_from([b"", b"\x80\x02", b"\x80\x04", b"\x80\x05"]))
    body = b"".join(draw(st.lists(_TOKENS, max_size=60)))
    return proto + body + draw(st.sampled_from([b".", b".", b""]))


def _opcode_counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count every opcode handler the pure engine runs (its dispatch table, wrapped)."""
    count = [0]

    def counted(handler: Any) -> Any:
        def run(vm: Any, pos: int) -> Any:
            count[0] += 1
            return handler(vm, pos)

        return run

    table = [None if h is None else counted(h) for h in pickle_vm._TABLE]
    monkeypatch.setattr(pickle_vm, "_TABLE", table)
    return count


@FAST
@given(data=opcode_streams(), strict=st.booleans(), storages=st.booleans())
def test_generated_pickles_only_raise_checkpoint_errors(
    data: bytes, strict: bool, storages: bool
) -> None:
    kw = {"strict": strict, "persistent_load": persistent_load() if storages else None}
    for engine in _backend._ENGINES:
        pickle_outcome(engine, data, **kw)


@needs_native
@FAST
@given(data=opcode_streams(), strict=st.booleans(), storages=st.booleans())
def test_generated_pickles_same_in_both_engines(data: bytes, strict: bool, storages: bool) -> None:
    outcomes = [
        pickle_outcome(
            engine, data, strict=strict, persistent_load=persistent_load() if storages else None
        )
        for engine in ("python", "native")
    ]
    assert outcomes[0] == outcomes[1]


def test_opcode_counting_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The counter sees every opcode (so the bound below can fail)."""
    count = _opcode_counting(monkeypatch)
    pickle_vm.run_pickle(b"\x80\x02]K\x01aK\x02a.")
    assert count[0] == 7  # PROTO EMPTY_LIST BININT1 APPEND BININT1 APPEND STOP


@FAST
@given(data=opcode_streams())
def test_opcodes_executed_at_most_bytes(data: bytes) -> None:
    with pytest.MonkeyPatch.context() as mp:
        count = _opcode_counting(mp)
        run_outcome(lambda: pickle_vm.run_pickle(data), lambda r: None)
    assert count[0] <= len(data)


def limit_outcomes(data: bytes, limits: ckptpeek.Limits) -> set[tuple[Any, ...]]:
    """The (class, code) or "ok" of every engine (asserted identical by the caller)."""
    outcomes = set()
    for engine in _backend._ENGINES:
        try:
            _backend.engine(engine).run_pickle(data, limits=limits)
            outcomes.add(("ok",))
        except CheckpointError as e:
            outcomes.add((type(e).__name__, e.code))
    return outcomes


@FAST
@given(marks=st.integers(0, 40), limit=st.integers(0, 40))
def test_open_marks_are_bounded(marks: int, limit: int) -> None:
    """MARK floods: at most ``max_marks`` open at once (the meta-stack is the cost)."""
    got = limit_outcomes(b"\x80\x02" + b"(" * marks + b"N.", ckptpeek.Limits(max_marks=limit))
    assert got == ({("ok",)} if marks <= limit else {("LimitError", "limit-marks")})


def colliding_int_keys(n: int) -> bytes:
    """A dict of ``n`` int keys that all have the same ``hash()`` (``i * (2**61 - 1) + 1``:
    CPython hashes ints modulo the Mersenne prime 2**61 - 1, in every process)."""
    p = b"\x80\x02}("
    for i in range(n):
        p += _long1(i * ((1 << 61) - 1) + 1) + b"K\x00"
    return p + b"u."


@FAST
@given(keys=st.integers(1, 60), limit=st.integers(0, 2000))
def test_hash_flooding_is_bounded(keys: int, limit: int) -> None:
    """Hash flooding: the cost is the comparisons of each new key with the keys already
    there of its hash, ``keys * (keys - 1) / 2`` for one hash; counted before they are
    spent, so a flood costs at most ``max_hash_collisions`` comparisons."""
    comparisons = keys * (keys - 1) // 2
    got = limit_outcomes(colliding_int_keys(keys), ckptpeek.Limits(max_hash_collisions=limit))
    assert got == ({("ok",)} if comparisons <= limit else {("LimitError", "limit-hash-collisions")})


def tuple_dag_key(levels: int) -> bytes:
    """A dict key of ``levels`` nested pairs, each pair the previous one twice: a few
    bytes, ``2 ** (levels + 1) - 1`` parts as hashing and comparing visit them."""
    p = b"\x80\x02}K\x00"
    for i in range(levels):
        p += b"q" + bytes([i]) + b"h" + bytes([i]) + b"\x86"  # BINPUT BINGET TUPLE2
    return p + b"K\x01s."


@FAST
@given(levels=st.integers(0, 22), limit=st.integers(1, 5000))  # unbounded: 2**23 parts, ~1 s
def test_key_sizes_are_bounded(levels: int, limit: int) -> None:
    """The tuple-DAG key: its parts are counted through the sharing, before hashing."""
    parts = 2 ** (levels + 1) - 1
    got = limit_outcomes(tuple_dag_key(levels), ckptpeek.Limits(max_key_nodes=limit))
    assert got == ({("ok",)} if parts <= limit else {("LimitError", "limit-key-size")})


# values every pickle protocol writes with opcodes ckptpeek must read exactly as CPython
_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
)
_HASHABLE = st.recursive(
    _LEAF, lambda c: st.tuples(c, c) | st.frozensets(c, max_size=3), max_leaves=6
)
_VALUES = st.recursive(
    _LEAF,
    lambda c: st.one_of(
        st.lists(c, max_size=4),
        st.tuples(c, c),
        st.dictionaries(_HASHABLE, c, max_size=4),
        st.sets(_HASHABLE, max_size=3),
    ),
    max_leaves=20,
)


@FAST
@given(value=_VALUES, proto=st.integers(0, pickle.HIGHEST_PROTOCOL))
def test_stdlib_pickles_read_as_cpython_reads_them(value: Any, proto: int) -> None:
    data = pickle.dumps(value, protocol=proto)
    expected = pickle.loads(data)
    for engine in _backend._ENGINES:
        got = _backend.engine(engine).run_pickle(data)  # a valid pickle: no error at all
        assert got.value == expected
        assert got.complete and got.end == len(data)
        if NATIVE:
            assert canonical(got.value) == canonical(expected)


# ------------------------------------------------------------------------------ walks


def dag_pickle(levels: int, fanout: int) -> bytes:
    """``levels`` lists, each holding the previous one ``fanout`` times (through the
    memo): ``fanout ** levels`` paths through ``levels + 1`` containers."""
    p = b"\x80\x02]q\x00"  # level 0: an empty list, memo 0
    for i in range(1, levels + 1):  # EMPTY_LIST MARK BINGET*fanout APPENDS BINPUT
        p += b"](" + (b"h" + bytes([i - 1])) * fanout + b"eq" + bytes([i])
    return p + b"."


@FAST
@given(
    levels=st.integers(1, 60),
    fanout=st.integers(1, 4),
    engine=st.sampled_from(sorted(_backend._ENGINES)),
)
def test_walk_visits_each_shared_container_once(levels: int, fanout: int, engine: str) -> None:
    data = dag_pickle(levels, fanout)
    root = _backend.engine(engine).run_pickle(data).value
    calls = [0]
    real = walk.children

    def counting(obj: Any) -> Any:
        calls[0] += 1
        return real(obj)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(walk, "children", counting)
        assert list(walk.iter_tensors(root, limits=ckptpeek.Limits(max_depth=100))) == []
    assert calls[0] == levels + 1  # one per container, however many paths reach it


@FAST
@given(levels=st.integers(2, 60), fanout=st.integers(2, 4), max_nodes=st.integers(1, 50))
def test_walk_stops_at_max_nodes(levels: int, fanout: int, max_nodes: int) -> None:
    root = pickle_vm.run_pickle(dag_pickle(levels, fanout)).value
    edges = levels * fanout  # each container's items are counted as nodes once
    limits = ckptpeek.Limits(max_nodes=max_nodes, max_depth=100)
    try:
        list(walk.iter_tensors(root, limits=limits))
    except CheckpointError as e:
        assert e.code == "limit-nodes"
        assert edges > max_nodes
    else:
        assert edges <= max_nodes


# ------------------------------------------------------------------------------ ZIP

_NAMES = st.sampled_from(
    ["a/data.pkl", "a/version", "a/data/0", "A/DATA.PKL", "a/../x", "/abs", "a/b\x00c", "a/é"]
)


@st.composite
def members(draw: st.DrawFn) -> Member:
    m = Member(draw(_NAMES), draw(st.binary(max_size=40)))
    m.method = draw(st.sampled_from([0, 0, 8, 12]))
    m.zip64 = draw(st.booleans())
    m.flags = draw(st.sampled_from([0, 0, 0x8, 0x1, 0x20]))
    lie = st.none() | st.integers(0, 200) | st.just(0xFFFFFFFF)
    m.claim_size = draw(st.none() | lie)
    m.claim_csize = draw(st.none() | lie)
    m.claim_offset = draw(st.none() | lie)
    return m


@st.composite
def archives(draw: st.DrawFn) -> bytes:
    ms = draw(st.lists(members(), max_size=5))
    kw: dict[str, Any] = {}
    for field in ("claim_count", "claim_cd_size", "claim_cd_offset"):
        if draw(st.integers(0, 4)) == 0:
            kw[field] = draw(st.integers(0, 1000) | st.just(0xFFFF) | st.just(0xFFFFFFFF))
    kw["comment"] = draw(st.sampled_from([b"", b"c", b"PK\x05\x06"]))
    data = build_zip(ms, **kw)
    if draw(st.integers(0, 3)) == 0:  # truncate or flip one byte
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if draw(st.booleans()):
            data = data[:i]
        elif data:
            data = data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1 :]
    return data


def directory_outcome(data: bytes, native: bool) -> tuple[Any, ...]:
    return run_outcome(
        lambda: zipdir.read_directory(ByteSource(io.BytesIO(data)), native=native),
        lambda d: [tuple(m) for m in d.records],
    )


@FAST
@given(data=archives())
def test_zip_directories_only_raise_checkpoint_errors_and_read_bounded_bytes(data: bytes) -> None:
    source = ByteSource(io.BytesIO(data))
    run_outcome(lambda: zipdir.read_directory(source, native=False), lambda d: None)
    # the tail (end record + the largest comment + ZIP64 records) and the directory once
    assert source.bytes_read <= len(data) + zipdir._TAIL_READ


@pytest.mark.skipif(not zipdir.NATIVE, reason="the C ZIP directory parser is not built")
@FAST
@given(data=archives())
def test_zip_directory_parsers_agree(data: bytes) -> None:
    assert directory_outcome(data, True) == directory_outcome(data, False)


@FAST
@given(
    contents=st.dictionaries(
        st.text("abcxyz_", min_size=1, max_size=6), st.binary(max_size=64), max_size=6
    ),
    compress=st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]),
)
def test_valid_archives_read_as_zipfile_reads_them(
    contents: dict[str, bytes], compress: int
) -> None:
    names = {}
    for name, data in contents.items():  # torch's lookup ignores ASCII case: one per name
        names.setdefault(name.lower(), (f"a/{name}", data))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compress) as z:
        for name, data in names.values():
            z.writestr(name, data)
    for native in {False, zipdir.NATIVE}:
        d = zipdir.read_directory(ByteSource(io.BytesIO(buf.getvalue())), native=native)
        assert d.names() == [n for n, _ in names.values()]
        for name, data in names.values():
            assert d.read(name) == data


# ------------------------------------------------------------------------------ safetensors

_ST_DTYPES = ["F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "F64", "C64", "XX"]


@st.composite
def safetensors_files(draw: st.DrawFn) -> bytes:
    """A header of 0-4 tensors (offsets honest, or one moved), optional metadata,
    any padding, and the data (sometimes a byte short or long)."""
    header: dict[str, Any] = {}
    if draw(st.booleans()):
        header["__metadata__"] = draw(
            st.dictionaries(st.text(max_size=4), st.text(max_size=4) | st.integers(), max_size=2)
        )
    start = 0
    for name in draw(st.lists(st.text(max_size=4), max_size=4, unique=True)):
        dtype = draw(st.sampled_from(_ST_DTYPES))
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        size = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "F64": 8, "C64": 8}.get(dtype, 1)
        nbytes = math.prod(shape) * size
        end = start + nbytes + draw(st.sampled_from([0, 0, 0, 1, -1]))
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}
        start = max(start, end)
    text = json.dumps(header).encode()
    text += b" " * draw(st.integers(0, 9))
    tail = bytes(max(0, start + draw(st.sampled_from([0, 0, 1, -1]))))
    n = len(text) + draw(st.sampled_from([0, 0, 0, 1, -1, 1 << 40]))
    return struct.pack("<Q", n % (1 << 64)) + text + tail


def _reference(data: bytes) -> dict[str, Any] | None:
    safetensors = pytest.importorskip("safetensors")
    try:
        tensors = safetensors.deserialize(data)
    except Exception:  # noqa: BLE001 - the Rust reader refusing the file
        return None
    return {name: (t["dtype"], tuple(t["shape"]), bytes(t["data"])) for name, t in tensors}


@FAST
@given(data=safetensors_files())
def test_safetensors_headers_agree_with_the_rust_reader(data: bytes) -> None:
    source = ByteSource(io.BytesIO(data))

    def ours() -> dict[str, Any]:
        n, _meta, entries = st_format.read_header(source)
        base = 8 + n
        assert source.bytes_read == base  # the header, nothing a length merely claims
        return {e.name: (e.code, e.shape, data[base + e.begin : base + e.end]) for e in entries}

    got = run_outcome(ours, lambda v: v)
    assert source.bytes_read <= min(len(data), 8 + struct.unpack_from("<Q", data)[0])
    ref = _reference(data)
    if ref is None:
        assert got[0] == "err", f"ckptpeek reads a file the Rust reader refuses: {got}"
    elif got[0] == "err":
        assert got[1] != "FormatError", f"a file the Rust reader reads called corrupt: {got}"
    else:
        assert got[1] == ref


@FAST
@given(data=safetensors_files())
def test_safetensors_files_open_end_to_end(data: bytes) -> None:
    def consume() -> None:
        with ckptpeek.open(io.BytesIO(data)) as ckpt:
            for _key, ref in ckpt.tensors():
                run_outcome(ref.numpy, lambda a: None)
            ckpt.summary()

    run_outcome(consume, lambda v: None)
