"""safetensors: ckptpeek against the real safetensors package (and torch where present).

The committed fixture ``data/tiny.safetensors`` (written by ``make_safetensors_fixtures.py``)
needs no torch; files with torch-only dtypes are written by ``safetensors.torch.save_file``
in a temporary directory. Hostile headers are checked differentially: for each, ckptpeek
must raise the right ``st-`` code *and* ``safe_open`` must reject the file too; each
oddity ``safe_open`` accepts, ckptpeek must accept with the same keys and shapes.
"""

from __future__ import annotations

import io
import json
import pathlib
import struct

import numpy as np
import pytest
from safetensors import safe_open

import ckptpeek
from ckptpeek.errors import CheckpointError, FormatError, LimitError, UnsupportedError
from ckptpeek.formats import ReadOptions
from ckptpeek.formats import safetensors as st
from ckptpeek.io.source import ByteSource
from ckptpeek.limits import DEFAULT_LIMITS
from ckptpeek.unpickle import engine as _backend

DATA = pathlib.Path(__file__).parent / "data"
TINY = DATA / "tiny.safetensors"


def _read(path: pathlib.Path | str, select=None) -> ckptpeek.Checkpoint:
    opts = ReadOptions(
        False, _backend.engine(None), DEFAULT_LIMITS, None if select is None else frozenset(select)
    )
    return st.read(ByteSource(path), opts)


def _file(
    tmp_path: pathlib.Path, header: bytes | dict, data: bytes = b"", name: str = "x.safetensors"
) -> pathlib.Path:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    p = tmp_path / name
    p.write_bytes(struct.pack("<Q", len(h)) + h + data)
    return p


def _u8(name: str = "a", n: int = 2, begin: int = 0) -> dict:
    return {name: {"dtype": "U8", "shape": [n], "data_offsets": [begin, begin + n]}}


def _header_size(path: pathlib.Path) -> int:
    with open(path, "rb") as f:
        return 8 + struct.unpack("<Q", f.read(8))[0]


# -- the committed fixture against safe_open (no torch) -------------------------------------


def test_fixture_matches_safe_open() -> None:
    with safe_open(TINY, framework="numpy") as ref, _read(TINY) as ckpt:
        assert ckpt.format == "safetensors"
        assert sorted(ckpt.keys()) == sorted(ref.keys())
        assert list(ckpt.keys()) == list(ref.offset_keys())  # root is in data order
        assert ckpt.members["metadata"] == ref.metadata()
        for name in ref.keys():
            t = ckpt[name]
            sl = ref.get_slice(name)
            assert list(t.shape) == sl.get_shape()
            assert st.ST_DTYPES[sl.get_dtype()][0] == t.dtype.name
            expected = ref.get_tensor(name)
            got = t.numpy()
            assert got.dtype == expected.dtype and got.shape == expected.shape
            assert got.tobytes() == expected.tobytes()
            assert t.is_contiguous() and t.storage_offset() == 0
            assert t.storage_key == name and t.device == "cpu"


def test_fixture_values() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("mk", DATA / "make_safetensors_fixtures.py")
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)  # type: ignore[union-attr]
    with ckptpeek.open(TINY) as ckpt:
        assert ckpt.members["metadata"] == mk.TINY_METADATA
        for name, arr in mk.tiny_tensors().items():
            np.testing.assert_array_equal(ckpt[name].numpy(), arr)
        assert ckpt["scalar"].item() == 0.875
        assert ckpt["u64"].tolist() == [0, 2**64 - 1]


def test_reads_only_the_header() -> None:
    n = _header_size(TINY)
    with _read(TINY) as ckpt:
        assert ckpt.bytes_read == n
        t = ckpt["f32"]
        start, stop = t.byte_range
        assert stop - start == t.nbytes == 96
        with open(TINY, "rb") as f:
            f.seek(start)
            assert f.read(stop - start) == t.numpy().tobytes()
        assert ckpt.bytes_read == n + 96  # that tensor's bytes, nothing else
    with ckptpeek.open(TINY) as ckpt:  # sniffing reads the first 512 bytes, kept for the header
        assert ckpt.bytes_read == max(n, min(512, TINY.stat().st_size))


def test_file_object_and_reopen_after_close() -> None:
    with open(TINY, "rb") as f, ckptpeek.open(f) as ckpt:
        assert ckpt.format == "safetensors" and ckpt.path == str(TINY)
        np.testing.assert_array_equal(ckpt["i32"].numpy(), np.arange(-3, 3).reshape(2, 3))
    bio = io.BytesIO(TINY.read_bytes())
    with ckptpeek.open(bio) as ckpt:
        assert ckpt.path is None
        assert ckpt["c64"].numpy().tolist() == [1 + 2j, -3j]
    ckpt = ckptpeek.open(TINY)
    t = ckpt["f64"]
    ckpt.close()
    assert t.numpy()[0] == 1e-300  # reopened by path on demand


def test_select() -> None:
    with ckptpeek.open(TINY, select=["f32", "u8", "nope"]) as ckpt:
        assert sorted(ckpt.keys()) == ["f32", "u8"]
        assert ckpt.selected == frozenset({"f32", "u8", "nope"})
        with pytest.raises(KeyError, match="not read"):
            ckpt["i64"]
    with ckptpeek.open(TINY, select=list(safe_open(TINY, "numpy").keys())) as ckpt:
        assert ckpt.selected is None  # nothing was left out


def test_summary_and_tensors() -> None:
    with ckptpeek.open(TINY) as ckpt:
        assert [k for k, _ in ckpt.tensors()] == [(k,) for k in ckpt.keys()]
        s = ckpt.summary()
        assert s is not None


def test_load_checkpoint_is_load_file_shaped() -> None:
    root = ckptpeek.load_checkpoint(TINY, fallback=None)
    assert isinstance(root, dict) and "__metadata__" not in root
    assert all(isinstance(v, ckptpeek.TensorRef) for v in root.values())


# -- against torch --------------------------------------------------------------------------


def _torch_state():
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    f = torch.randn(4, 6, generator=g)
    sd = {
        "f32": f,
        "f64": f.double(),
        "f16": f.half(),
        "bf16": f.bfloat16(),
        "f8_e4m3fn": f.to(torch.float8_e4m3fn),
        "f8_e5m2": f.to(torch.float8_e5m2),
        "f8_e4m3fnuz": f.to(torch.float8_e4m3fnuz),
        "f8_e5m2fnuz": f.to(torch.float8_e5m2fnuz),
        "f8_e8m0": f.abs().add(0.01).to(torch.float8_e8m0fnu),
        "f4": torch.arange(12, dtype=torch.uint8).reshape(2, 6).view(torch.float4_e2m1fn_x2),
        "c64": torch.complex(f, -f),
        "i64": (f * 1e6).long(),
        "i32": (f * 100).int(),
        "i16": (f * 100).short(),
        "i8": (f * 10).to(torch.int8),
        "u8": (f * 10).abs().byte(),
        "u16": torch.tensor([0, 7, 65535], dtype=torch.uint16),
        "u32": torch.tensor([1, 2**32 - 1], dtype=torch.uint32),
        "u64": torch.tensor([0, 2**63 - 1], dtype=torch.uint64),
        "bool": f > 0,
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(2, 0, 3),
        "big.0.weight": torch.randn(64, 33, generator=g),
    }
    return torch, sd


@pytest.mark.torch
def test_against_torch_load_file(tmp_path: pathlib.Path) -> None:
    torch, sd = _torch_state()
    from safetensors.torch import load_file, save_file

    p = tmp_path / "m.safetensors"
    save_file(sd, str(p), metadata={"format": "pt", "step": "7"})
    ref = load_file(str(p))
    with ckptpeek.open(p) as ckpt:
        assert list(ckpt.keys()) == list(ref)
        assert ckpt.members["metadata"] == {"format": "pt", "step": "7"}
        assert ckpt.bytes_read == max(_header_size(p), min(512, p.stat().st_size))
        for name, r in ref.items():
            t = ckpt[name]
            assert t.dtype == r.dtype, name
            assert tuple(t.shape) == tuple(r.shape), name
            assert t.stride() == r.stride(), name
            assert t.storage_offset() == r.storage_offset() == 0
            raw = r.contiguous().reshape(-1).view(torch.uint8)
            start, stop = t.byte_range
            assert stop - start == r.numel() * r.element_size()
            if t.dtype.name == "float4_e2m1fn_x2":  # no numpy/to_torch for packed fp4: raw bytes
                with open(p, "rb") as fh:
                    fh.seek(start)
                    assert fh.read(stop - start) == bytes(raw.numpy())
                continue
            got = t.to_torch()
            assert got.dtype == r.dtype and got.shape == r.shape and got.stride() == r.stride()
            got_raw = got.contiguous().reshape(-1).view(torch.uint8)
            assert bytes(got_raw.numpy()) == bytes(raw.numpy()), name
            np.testing.assert_array_equal(
                t.numpy().reshape(-1).view(np.uint8),
                r.contiguous().reshape(-1).view(torch.uint8).numpy(),
            )


@pytest.mark.torch
def test_against_safe_open_numpy_slices(tmp_path: pathlib.Path) -> None:
    _torch, sd = _torch_state()
    from safetensors.torch import save_file

    p = tmp_path / "m.safetensors"
    save_file(sd, str(p))
    with safe_open(p, framework="numpy") as ref, ckptpeek.open(p) as ckpt:
        assert ref.metadata() == ckpt.members["metadata"]
        assert sorted(ref.keys()) == sorted(ckpt.keys())
        for name in ref.keys():
            sl = ref.get_slice(name)
            t = ckpt[name]
            code = sl.get_dtype()
            assert st.ST_DTYPES[code][0] == t.dtype.name
            shape = sl.get_shape()
            if code == "F4":
                shape = shape[:-1] + [shape[-1] // 2]
            assert list(t.shape) == shape


# -- dtypes torch has no name for -----------------------------------------------------------


@pytest.mark.parametrize(
    "code,shape,nbytes", [("F6_E2M3", [4], 3), ("F6_E3M2", [2, 2, 4], 12), ("F4", [2, 3], 3)]
)
def test_raw_bits_dtypes(tmp_path: pathlib.Path, code: str, shape: list, nbytes: int) -> None:
    data = bytes(range(nbytes))
    p = _file(
        tmp_path,
        {"x": {"dtype": code, "shape": shape, "data_offsets": [0, nbytes]}, **_u8("y", 2, nbytes)},
        data + b"ab",
    )
    with safe_open(p, framework="numpy") as ref:
        assert ref.get_slice("x").get_shape() == shape
    with ckptpeek.open(p) as ckpt:
        t = ckpt["x"]
        assert t.dtype.name == "bits8" and tuple(t.shape) == (nbytes,)
        assert t.attrs == {"safetensors_dtype": code, "safetensors_shape": tuple(shape)}
        start, stop = t.byte_range
        assert p.read_bytes()[start:stop] == data
        with pytest.raises(UnsupportedError) as exc:
            t.numpy()
        assert exc.value.code == "unsupported-dtype"
        assert ckpt["y"].numpy().tobytes() == b"ab"


def test_every_installed_dtype_is_mapped() -> None:
    import safetensors

    rust = pathlib.Path(safetensors.__file__).parent
    so = next(rust.glob("_safetensors_rust*"))
    blob = so.read_bytes()
    for code in st.ST_DTYPES:
        assert code.encode() in blob
    from ckptpeek.torch_types import DTYPES

    for name, _bits in st.ST_DTYPES.values():
        assert name is None or name in DTYPES


# -- hostile input --------------------------------------------------------------------------

_TENSOR = {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}

HOSTILE = {
    "empty": (b"", "st-header-too-small"),
    "short": (b"\x05\x00\x00", "st-header-too-small"),
    "huge-length": (struct.pack("<Q", 2**63) + b"{}", "st-header-too-large"),
    "just-over-max": (struct.pack("<Q", st.MAX_HEADER_SIZE + 1) + b"{}", "st-header-too-large"),
    "lying-length": (struct.pack("<Q", 99_999_999) + b'{"a":1}', "st-invalid-header-length"),
    "length-past-end": (struct.pack("<Q", 3) + b"{}", "st-invalid-header-length"),
    "not-utf8": (b'{"\xff\xfe":1}', "st-invalid-header"),
    "bad-json": (b'{"a":', "st-invalid-json"),
    "empty-json": (b"", "st-invalid-json"),
    "array": (b"[1,2]", "st-invalid-json"),
    "string": (b'"hi"', "st-invalid-json"),
    "nan": (b'{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"x":NaN}}', "st-invalid-json"),
    "nul-padding": (json.dumps({"a": _TENSOR}).encode() + b"\0\0", "st-invalid-json"),
    "bom": (b"\xef\xbb\xbf{}", "st-invalid-json"),
    "deep": (b"[" * 100_000 + b"]" * 100_000, "st-invalid-json"),
    "deep-in-object": (b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "st-invalid-json"),
    "long-int": (
        b'{"a":{"dtype":"U8","shape":[' + b"9" * 5000 + b'],"data_offsets":[0,2]}}',
        "st-invalid-json",
    ),
    "meta-not-str": ({"__metadata__": {"a": 1}, "a": _TENSOR}, "st-invalid-json"),
    "meta-list": ({"__metadata__": ["a"], "a": _TENSOR}, "st-invalid-json"),
    "meta-twice": (
        b'{"__metadata__":{},"__metadata__":{},"a":' + json.dumps(_TENSOR).encode() + b"}",
        "st-invalid-json",
    ),
    "tensor-not-object": ({"a": 5}, "st-invalid-json"),
    "missing-offsets": ({"a": {"dtype": "U8", "shape": [2]}}, "st-invalid-json"),
    "negative-dim": ({"a": {**_TENSOR, "shape": [-2]}}, "st-invalid-json"),
    "float-dim": ({"a": {**_TENSOR, "shape": [2.0]}}, "st-invalid-json"),
    "bool-dim": ({"a": {**_TENSOR, "shape": [True, 2]}}, "st-invalid-json"),
    "dim-over-u64": ({"a": {**_TENSOR, "shape": [2**64]}}, "st-invalid-json"),
    "three-offsets": ({"a": {**_TENSOR, "data_offsets": [0, 2, 2]}}, "st-invalid-json"),
    "dtype-null": ({"a": {**_TENSOR, "dtype": None}}, "st-invalid-json"),
    "surrogate-name": (b'{"\\ud800":' + json.dumps(_TENSOR).encode() + b"}", "st-invalid-json"),
    "unknown-dtype": ({"a": {**_TENSOR, "dtype": "F128"}}, "st-unknown-dtype"),
    "lowercase-dtype": ({"a": {**_TENSOR, "dtype": "u8"}}, "st-unknown-dtype"),
    "gap": ({"a": {**_TENSOR, "data_offsets": [1, 3]}}, "st-invalid-offset"),
    "overlap": ({**_u8("a"), "b": {**_TENSOR, "data_offsets": [1, 3]}}, "st-invalid-offset"),
    "end-before-begin": (
        {"a": {**_TENSOR, "shape": [0], "data_offsets": [2, 0]}},
        "st-invalid-offset",
    ),
    "shape-mismatch": ({"a": {**_TENSOR, "dtype": "U16"}}, "st-tensor-invalid-info"),
    "overflow": (
        {"a": {**_TENSOR, "dtype": "F32", "shape": [2**62, 2**62]}},
        "st-validation-overflow",
    ),
    "overflow-bits": ({"a": {**_TENSOR, "shape": [2**64 - 1]}}, "st-validation-overflow"),
    "f4-half-byte": (
        {"a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}},
        "st-misaligned-slice",
    ),
    "past-end": ({"a": {**_TENSOR, "shape": [4], "data_offsets": [0, 4]}}, "st-incomplete-buffer"),
    "huge-offsets": (
        {"a": {**_TENSOR, "shape": [2**40], "data_offsets": [0, 2**40]}},
        "st-incomplete-buffer",
    ),
    "trailing-bytes": ({"a": _TENSOR}, "st-incomplete-buffer"),
}
_HOSTILE_DATA = {"trailing-bytes": b"abc", "f4-half-byte": b"ab"}
_CLASSES = {"st-header-too-large": LimitError, "st-unknown-dtype": UnsupportedError}


_RAW_CASES = {"empty", "short", "huge-length", "just-over-max", "lying-length", "length-past-end"}


def _hostile_file(tmp_path: pathlib.Path, case: str) -> pathlib.Path:
    header, _code = HOSTILE[case]
    if case in _RAW_CASES:  # the bytes are the whole file
        p = tmp_path / f"{case}.safetensors"
        p.write_bytes(header)  # type: ignore[arg-type]
        return p
    return _file(tmp_path, header, _HOSTILE_DATA.get(case, b"xx"), f"{case}.safetensors")


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_header(tmp_path: pathlib.Path, case: str) -> None:
    p = _hostile_file(tmp_path, case)
    code = HOSTILE[case][1]
    src = ByteSource(p)
    opts = ReadOptions(False, _backend.engine(None), DEFAULT_LIMITS, None)
    with pytest.raises(CheckpointError) as exc:
        st.read(src, opts)
    # bounded work, counted: whatever the header claims, each byte is read at most once
    assert src.bytes_read <= p.stat().st_size, (src.bytes_read, p.stat().st_size)
    assert exc.value.code == code, str(exc.value)
    assert isinstance(exc.value, _CLASSES.get(code, FormatError))
    assert exc.value.path == str(p)
    assert str(p) in str(exc.value)
    if p.stat().st_size:
        with pytest.raises(Exception):  # noqa: B017 - the reference implementation refuses it too
            with safe_open(p, framework="numpy") as f:
                [f.get_slice(k) for k in f.keys()]


def test_hostile_through_open(tmp_path: pathlib.Path) -> None:
    # what the sniffer recognises as safetensors reaches the reader's own codes
    p = _hostile_file(tmp_path, "overlap")
    with pytest.raises(FormatError) as exc:
        ckptpeek.open(p)
    assert exc.value.code == "st-invalid-offset" and exc.value.path == str(p)
    p = _hostile_file(tmp_path, "unknown-dtype")
    with pytest.raises(UnsupportedError) as exc2:
        ckptpeek.open(p)
    assert exc2.value.code == "st-unknown-dtype"


def test_huge_claims_do_not_allocate(tmp_path: pathlib.Path) -> None:
    import tracemalloc

    p = tmp_path / "x.safetensors"
    p.write_bytes(struct.pack("<Q", st.MAX_HEADER_SIZE) + b"{}")
    tracemalloc.start()
    try:
        with pytest.raises(FormatError):
            _read(p)
        _cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


ODD_BUT_VALID = {  # safe_open accepts all of these; so must we, with the same tensors
    "leading-space": b' {"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}',
    "trailing-space": b'{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}   \n',
    "sequence-form": b'{"a":["U8",[2],[0,2]]}',
    "map-form-dtype": b'{"a":{"dtype":{"U8":null},"shape":[2],"data_offsets":[0,2]}}',
    "extra-field": b'{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"x":[1]}}',
    "duplicate-name": b'{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},'
    b'"a":{"dtype":"I8","shape":[1,2],"data_offsets":[0,2]}}',
    "metadata-null": b'{"__metadata__":null,"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}',
    "metadata-only": b'{"__metadata__":{"k":"v"}}',
    "empty-object": b"{}",
    "empty-tensor-first": b'{"b":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},'
    b'"a":{"dtype":"F32","shape":[0,5],"data_offsets":[0,0]}}',
    "unsorted": b'{"b":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},'
    b'"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}',
}


@pytest.mark.parametrize("case", sorted(ODD_BUT_VALID))
def test_odd_but_valid(tmp_path: pathlib.Path, case: str) -> None:
    header = ODD_BUT_VALID[case]
    data = b"" if b"data_offsets" not in header and b"[0,2]" not in header else b"xy"
    p = _file(tmp_path, header, data)
    with safe_open(p, framework="numpy") as ref:
        expected = {
            k: (ref.get_slice(k).get_dtype(), ref.get_slice(k).get_shape())
            for k in ref.offset_keys()
        }
        meta = ref.metadata()
    ckpt = _read(p)
    assert {k: (t.dtype.name, list(t.shape)) for k, t in ckpt.root.items()} == {
        k: (st.ST_DTYPES[c][0], s) for k, (c, s) in expected.items()
    }
    assert list(ckpt.root) == list(expected)
    assert ckpt.members["metadata"] == meta
    for k, t in ckpt.root.items():
        with safe_open(p, framework="numpy") as ref:
            assert t.numpy().tobytes() == ref.get_tensor(k).tobytes()
    ckpt.close()


def test_differential_fuzz(tmp_path: pathlib.Path) -> None:
    """Mutated headers: ckptpeek accepts exactly what safe_open accepts."""
    import hypothesis  # a test dependency (pyproject [test]), as in test_parity.py
    from hypothesis import strategies as hs

    base = TINY.read_bytes()
    n = _header_size(TINY)
    header = base[8:n]
    p = tmp_path / "f.safetensors"

    @hypothesis.settings(
        max_examples=150,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(
        hs.integers(0, len(header) - 1),
        hs.binary(min_size=0, max_size=3),
        hs.integers(0, 3),
        hs.integers(-3, 3),
    )
    def check(pos: int, ins: bytes, cut: int, extra: int) -> None:
        new = header[:pos] + ins + header[pos + cut :]
        body = base[n:]
        if extra > 0:
            body += b"\0" * extra
        elif extra < 0:
            body = body[:extra]
        p.write_bytes(struct.pack("<Q", len(new)) + new + body)
        try:
            with safe_open(p, framework="numpy") as ref:
                want = {k: ref.get_slice(k).get_shape() for k in ref.keys()}
        except Exception:
            want = None
        try:
            with _read(p) as ckpt:
                got = {
                    k: list(t.attrs.get("safetensors_shape", t.shape)) for k, t in ckpt.root.items()
                }
                for k, t in ckpt.root.items():  # packed fp4: the file's last dim is twice torch's
                    if t.dtype.name == "float4_e2m1fn_x2":
                        got[k][-1] *= 2
        except CheckpointError:
            got = None
        assert got == want

    check()


# -- keys written twice: what serde (the Rust reader) does, not what json.loads keeps ------

_T = '{"dtype":"F32","shape":[2],"data_offsets":[0,8]}'
REPEATS = {
    # (header, the Rust reader's outcome: shapes read, or the error ckptpeek gives)
    "a field of one tensor twice": (
        '{"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
        "st-invalid-json",
    ),
    "shape twice": (
        '{"a":{"dtype":"F32","shape":[2],"shape":[2],"data_offsets":[0,8]}}',
        "st-invalid-json",
    ),
    "a name twice, the last kept": (
        '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":' + _T + "}",
        {"a": [2]},
    ),
    "a name twice, the first of an unknown dtype": (
        '{"a":{"dtype":"XX","shape":[2],"data_offsets":[0,8]},"a":' + _T + "}",
        "st-unknown-dtype",
    ),
    "a name twice, the first of a negative size": (
        '{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,8]},"a":' + _T + "}",
        "st-invalid-json",
    ),
    "a name twice, the first with offsets only validated on the last": (
        '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,99]},"a":' + _T + "}",
        {"a": [2]},
    ),
    "a metadata key twice": ('{"__metadata__":{"x":"1","x":"2"},"a":' + _T + "}", {"a": [2]}),
    "a tensor named like a field": ('{"dtype":' + _T + "}", {"dtype": [2]}),
}


@pytest.mark.parametrize("case", sorted(REPEATS))
def test_repeated_keys_read_as_the_rust_reader_reads_them(case: str) -> None:
    import safetensors

    header, want = REPEATS[case]
    raw = header.encode()
    data = struct.pack("<Q", len(raw)) + raw + bytes(8)
    try:
        rust: object = {n: list(info["shape"]) for n, info in safetensors.deserialize(data)}
    except Exception:  # noqa: BLE001 - the Rust reader's error type is not exported
        rust = "refused"
    if isinstance(want, dict):
        assert rust == want
        with ckptpeek.open(io.BytesIO(data)) as ckpt:
            assert {k[0]: list(t.shape) for k, t in ckpt.tensors()} == want
    else:
        assert rust == "refused"
        with pytest.raises(CheckpointError) as err:
            ckptpeek.open(io.BytesIO(data))
        assert err.value.code == want
