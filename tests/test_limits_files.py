"""Files, containers and tensor data under attack: bounded work, no crash, no hang.

Every hostile input is made here by a generator (no checked-in blobs, no torch needed
except where a test compares with ``torch.load``): tensors whose sizes overflow numpy,
sparse tensors whose indices lie or whose dense form is huge, files truncated under a
reader, FIFOs where a checkpoint should be, ZIP directories that claim the whole file,
safetensors headers built to cost quadratic time, and files a symlink points at. Each
reader test runs once per pickle engine (``engine`` fixture); bounded work is asserted
by counting (bytes read, loop iterations), never by the clock.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from _builders import FLOATS, Member, Pickle, small_checkpoint, torch_zip

import ckptpeek
from ckptpeek import CheckpointError, FormatError, LimitError, Limits, UnsupportedError
from ckptpeek.io import zipdir
from ckptpeek.io.source import ByteSource

SRC = pathlib.Path(ckptpeek.__file__).resolve().parents[1]  # the ckptpeek under test


# -- generators ---------------------------------------------------------------------------
def put_int(p: Pickle, v: int) -> Pickle:
    """Any int: BININT* for 32-bit values, LONG1 beyond (torch writes both)."""
    if -(1 << 31) <= v < (1 << 31):
        return p.int(v) if v >= 0 else p.raw(b"J" + struct.pack("<i", v))
    raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
    return p.raw(b"\x8a" + bytes([len(raw)]) + raw)


def put_tensor(
    p: Pickle,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    *,
    key: str = "0",
    storage: str = "FloatStorage",
    numel: int = 6,
    offset: int = 0,
    metadata: tuple[str, ...] = (),
) -> Pickle:
    """``_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict()[, metadata])``
    as torch.save pickles it, the storage a persistent id ``("storage", cls, key, "cpu", numel)``."""
    p.glob("torch._utils", "_rebuild_tensor_v2").mark()
    p.mark().str("storage").glob("torch", storage).str(key).str("cpu")
    put_int(p, numel).tuple().binpersid()
    put_int(p, offset)
    for dims in (size, stride):
        p.mark()
        for d in dims:
            put_int(p, d)
        p.tuple()
    p.false().glob("collections", "OrderedDict").empty_tuple().reduce()
    if metadata:
        p.empty_dict()
        for flag in metadata:
            p.str(flag).raw(b"\x88").setitem()
    return p.tuple().reduce()


def put_sparse(p: Pickle, layout: str, parts: list[Any], size: tuple[int, ...]) -> Pickle:
    """``_rebuild_sparse_tensor(_get_layout("torch.<layout>"), (*parts, size[, False]))``;
    a part is a ``put_tensor`` keyword dict."""
    p.glob("torch._utils", "_rebuild_sparse_tensor")
    p.glob("torch.serialization", "_get_layout").str(f"torch.{layout}").tuple1().reduce()
    p.mark()
    for part in parts:
        put_tensor(p, **part)
    p.mark()
    for d in size:
        put_int(p, d)
    p.tuple()
    if layout == "sparse_coo":
        p.false()  # is_coalesced
    return p.tuple().tuple2().reduce()


def one_tensor(put: Any, storages: dict[str, bytes] | None = None) -> bytes:
    """A torch archive whose data.pkl is ``{"t": <what put(p) writes>}``."""
    p = Pickle().proto(2).empty_dict().str("t")
    put(p)
    pkl = bytes(p.setitem().stop())
    storages = storages or {"0": struct.pack("<6f", *FLOATS)}
    extra = [Member(f"archive/data/{k}", v) for k, v in storages.items() if k != "0"]
    return torch_zip(pkl, storage=storages.get("0", b""), extra=extra)


def longs(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}q", *values)


def floats(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def write(tmp_path: pathlib.Path, data: bytes, name: str = "m.ckpt") -> pathlib.Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def raises(cls: type, code: str, fn: Any, *args: Any, **kw: Any) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        fn(*args, **kw)
    err = info.value
    assert isinstance(err, cls), f"{type(err).__name__}: {err}"
    assert err.code == code, f"{err.code}: {err}"
    return err


# -- 1. numpy() of a tensor numpy cannot hold ---------------------------------------------
HUGE_FOR_NUMPY = {
    # an expanded 1-element view: torch loads it (numel 2**62, stride 0)
    "expanded": ((1 << 62,), (0,)),
    "expanded-2d": ((1 << 31, 1 << 31), (0, 0)),
    # empty, yet numpy multiplies the nonzero sizes: (0, 2**40, 2**40) overflows intp
    "empty-huge-dims": ((0, 1 << 40, 1 << 40), (1, 1, 1)),
}


@pytest.mark.parametrize("case", sorted(HUGE_FOR_NUMPY))
def test_numpy_of_a_tensor_numpy_cannot_hold(
    engine: str, tmp_path: pathlib.Path, case: str
) -> None:
    size, stride = HUGE_FOR_NUMPY[case]
    path = write(tmp_path, one_tensor(lambda p: put_tensor(p, size, stride)))
    with ckptpeek.open(path, engine=engine) as ckpt:  # torch.load accepts it too
        t = ckpt["t"]
        assert tuple(t.shape) == size
        before = ckpt.bytes_read
        raises(UnsupportedError, "numpy-too-large", t.numpy)
        raises(UnsupportedError, "numpy-too-large", t.tolist if t.numel() == 0 else t.numpy)
        assert ckpt.bytes_read == before  # refused before a byte is read


def test_numpy_of_a_large_expanded_view_costs_its_storage(
    engine: str, tmp_path: pathlib.Path
) -> None:
    """An expanded view numpy can index stays a view: no copy, only its element read."""
    n = 1 << 18  # a storage past the tail the ZIP reader keeps in memory
    path = write(
        tmp_path,
        one_tensor(
            lambda p: put_tensor(p, (1 << 40,), (0,), numel=n, offset=n - 1),
            {"0": floats(*range(n))},
        ),
    )
    with ckptpeek.open(path, engine=engine) as ckpt:
        before = ckpt.bytes_read
        arr = ckpt["t"].numpy()
        assert arr.shape == (1 << 40,) and arr.strides == (0,) and arr[-1] == n - 1
        # one float32, and the storage member's local header: not the 1 MiB storage
        assert ckpt.bytes_read - before < 1024


@pytest.mark.parametrize("flag", ["neg", "conj"])
def test_numpy_of_a_huge_neg_or_conj_view_is_refused_before_the_copy(
    engine: str, tmp_path: pathlib.Path, flag: str
) -> None:
    storage = "ComplexFloatStorage" if flag == "conj" else "FloatStorage"
    path = write(
        tmp_path,
        one_tensor(
            lambda p: put_tensor(p, (1 << 40,), (0,), storage=storage, numel=3, metadata=(flag,))
        ),
    )
    with ckptpeek.open(path, engine=engine) as ckpt:
        t = ckpt["t"]
        before = ckpt.bytes_read
        err = raises(LimitError, "limit-dense-size", t.numpy)
        assert "max_dense_bytes" in str(err)
        assert ckpt.bytes_read == before
    # the cap is the caller's to move
    path = write(
        tmp_path,
        one_tensor(
            lambda p: put_tensor(p, (1000,), (0,), storage=storage, numel=3, metadata=(flag,))
        ),
    )
    with ckptpeek.open(path, engine=engine) as ckpt:
        t = ckpt["t"]
        item = t.element_size()
        assert t.numpy().shape == (1000,)
        raises(LimitError, "limit-dense-size", t.numpy, max_bytes=1000 * item - 1)
        assert t.numpy(max_bytes=1000 * item)[0] == (
            -FLOATS[0] if flag == "neg" else complex(FLOATS[0], -FLOATS[1])
        )


def test_torch_accepts_what_numpy_cannot_hold(tmp_path: pathlib.Path) -> None:
    """The decision above: torch.load reads these files (so ckptpeek opens them), and
    torch's own numpy() refuses them."""
    torch = pytest.importorskip("torch")
    for size, stride in HUGE_FOR_NUMPY.values():
        path = write(tmp_path, one_tensor(lambda p, s=size, st=stride: put_tensor(p, s, st)))
        t = torch.load(path)["t"]
        assert tuple(t.shape) == size
        with pytest.raises(ValueError, match="too big"):
            t.numpy()


# -- 2. sparse tensors: indices checked as torch's invariants check them, size capped -----
def coo(indices: list[list[int]], values: list[float], size: tuple[int, ...]) -> bytes:
    sparse_dim, nnz = len(indices), len(values)
    flat = [i for row in indices for i in row]
    parts = [
        dict(
            size=(sparse_dim, nnz),
            stride=(nnz, 1),
            key="1",
            storage="LongStorage",
            numel=len(flat),
        ),
        dict(size=(nnz,), stride=(1,), key="0", numel=nnz),
    ]
    return one_tensor(
        lambda p: put_sparse(p, "sparse_coo", parts, size),
        {"0": floats(*values), "1": longs(*flat)},
    )


def compressed(layout: str, comp: list[int], plain: list[int], size: tuple[int, int]) -> bytes:
    nnz = len(plain)
    parts = [
        dict(size=(len(comp),), stride=(1,), key="1", storage="LongStorage", numel=len(comp)),
        dict(size=(nnz,), stride=(1,), key="2", storage="LongStorage", numel=nnz),
        dict(size=(nnz,), stride=(1,), key="0", numel=nnz),
    ]
    return one_tensor(
        lambda p: put_sparse(p, layout, parts, size),
        {"0": floats(*range(1, nnz + 1)), "1": longs(*comp), "2": longs(*plain)},
    )


BAD_SPARSE = {
    "coo-past-size": lambda: coo([[0, 5]], [1.0, 2.0], (3,)),
    "coo-negative": lambda: coo([[0, -1]], [1.0, 2.0], (3,)),
    "coo-2d-second-dim": lambda: coo([[0, 1], [0, 7]], [1.0, 2.0], (2, 2)),
    "csr-plain-past-cols": lambda: compressed("sparse_csr", [0, 1, 3], [0, 9, 1], (2, 2)),
    "csr-decreasing": lambda: compressed("sparse_csr", [0, 3, 1], [0, 1, 1], (2, 2)),
    "csr-not-from-zero": lambda: compressed("sparse_csr", [1, 2, 3], [0, 1, 1], (2, 2)),
    "csr-not-to-nnz": lambda: compressed("sparse_csr", [0, 2, 2], [0, 1, 1], (2, 2)),
    "csr-unsorted-row": lambda: compressed("sparse_csr", [0, 2, 3], [1, 0, 1], (2, 2)),
    "csr-repeated-in-row": lambda: compressed("sparse_csr", [0, 2, 3], [1, 1, 1], (2, 2)),
    "csr-wrong-row-count": lambda: compressed("sparse_csr", [0, 1, 2, 3], [0, 1, 1], (2, 2)),
    "csc-plain-past-rows": lambda: compressed("sparse_csc", [0, 1, 3], [0, 9, 1], (2, 2)),
}


@pytest.mark.parametrize("case", sorted(BAD_SPARSE))
def test_to_dense_checks_sparse_indices(engine: str, tmp_path: pathlib.Path, case: str) -> None:
    path = write(tmp_path, BAD_SPARSE[case]())
    with ckptpeek.open(path, engine=engine) as ckpt:  # torch.load accepts these too
        raises(FormatError, "sparse-bad-indices", ckpt["t"].to_dense)


GOOD_SPARSE = {
    "coo": (lambda: coo([[0, 2, 2]], [1.0, 2.0, 3.0], (3,)), [[1.0, 0.0, 5.0]]),
    "coo-2d": (lambda: coo([[0, 1], [1, 0]], [1.0, 2.0], (2, 2)), [[0.0, 1.0], [2.0, 0.0]]),
    "coo-empty": (lambda: coo([[]], [], (3,)), [[0.0, 0.0, 0.0]]),
    "csr": (
        lambda: compressed("sparse_csr", [0, 2, 3], [0, 1, 1], (2, 2)),
        [[1.0, 2.0], [0.0, 3.0]],
    ),
    "csr-empty-row": (
        lambda: compressed("sparse_csr", [0, 0, 2], [0, 1], (2, 2)),
        [[0.0, 0.0], [1.0, 2.0]],
    ),
    "csc": (
        lambda: compressed("sparse_csc", [0, 2, 3], [0, 1, 1], (2, 2)),
        [[1.0, 0.0], [2.0, 3.0]],
    ),
}


@pytest.mark.parametrize("case", sorted(GOOD_SPARSE))
def test_to_dense_of_valid_sparse_tensors(engine: str, tmp_path: pathlib.Path, case: str) -> None:
    make, want = GOOD_SPARSE[case]
    path = write(tmp_path, make())
    with ckptpeek.open(path, engine=engine) as ckpt:
        got = ckpt["t"].to_dense().tolist()
    assert (got if len(want) > 1 else [got]) == want


def test_to_dense_matches_torch_on_the_valid_cases(tmp_path: pathlib.Path) -> None:
    torch = pytest.importorskip("torch")
    for make, _want in GOOD_SPARSE.values():
        path = write(tmp_path, make())
        with ckptpeek.open(path) as ckpt:
            assert ckpt["t"].to_dense().tolist() == torch.load(path)["t"].to_dense().tolist()


@pytest.mark.parametrize(
    "make",
    [
        lambda: coo([[0, 1]], [1.0, 2.0], (1 << 40,)),  # 4 TiB of float32
        lambda: compressed("sparse_csr", [0, 1, 1], [3], (2, 1 << 40)),
    ],
    ids=["coo", "csr"],
)
def test_to_dense_refuses_a_huge_result_before_allocating(
    engine: str, tmp_path: pathlib.Path, make: Any
) -> None:
    path = write(tmp_path, make())
    with ckptpeek.open(path, engine=engine) as ckpt:
        t = ckpt["t"]
        before = ckpt.bytes_read
        err = raises(LimitError, "limit-dense-size", t.to_dense)
        assert str(Limits().max_dense_bytes) in str(err)
        assert ckpt.bytes_read == before  # not even the indices were read
        # the cap is the caller's to move: a small one refuses a small result
        small = write(tmp_path, coo([[0, 1]], [1.0, 2.0], (1000,)), "small.ckpt")
        with ckptpeek.open(small, engine=engine) as s:
            assert s["t"].to_dense().shape == (1000,)
            raises(LimitError, "limit-dense-size", s["t"].to_dense, max_bytes=3999)
            assert s["t"].to_dense(max_bytes=4000).shape == (1000,)


def test_dequantize_refuses_a_huge_result_before_allocating() -> None:
    from ckptpeek.tensor import StorageRef, TensorRef
    from ckptpeek.torch_types import DTYPES
    from ckptpeek.unpickle.torch_rebuild import BytesStorageReader

    reader = BytesStorageReader(b"\x01")
    storage = StorageRef("0", DTYPES["qint8"], 1, "cpu", reader)
    t = TensorRef(
        storage=storage,
        dtype=DTYPES["qint8"],
        shape=(1 << 40,),
        stride=(0,),
        storage_offset=0,
        kind="quantized",
    )
    t.components = {"qscheme": "per_tensor_affine", "scale": 0.5, "zero_point": 0}
    raises(LimitError, "limit-dense-size", t.dequantize)
    t.shape = type(t.shape)((4,))
    assert t.dequantize().tolist() == [0.5] * 4


# -- 3. tensor reads survive a file truncated under them ----------------------------------
def run_isolated(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter: a SIGBUS or a hang fails the test, not the run."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )


BIG = 1 << 20  # float32 values: a 4 MiB storage, many pages


@pytest.mark.parametrize(
    "when",
    ["after-numpy", "before-numpy", "after-byte-range", "small-tensor"],
)
def test_truncated_under_a_reader_is_file_changed_never_sigbus(
    engine: str, tmp_path: pathlib.Path, when: str
) -> None:
    n = 6 if when == "small-tensor" else BIG
    p = Pickle().proto(2).empty_dict().str("t")
    put_tensor(p, (n,), (1,), numel=n)
    data = torch_zip(bytes(p.setitem().stop()), storage=floats(*range(n)))
    path = write(tmp_path, data)
    result = run_isolated(
        f"""
        import os, ckptpeek
        path, when = {str(path)!r}, {when!r}
        with ckptpeek.open(path, engine={engine!r}) as ckpt:
            t = ckpt["t"]
            if when == "after-numpy":
                arr = t.numpy()
                os.truncate(path, 100)
                print("sum", float(arr.sum()))  # touches every page the array holds
            else:
                if when == "after-byte-range":
                    t.byte_range
                os.truncate(path, 100)
                try:
                    t.numpy()
                except ckptpeek.CheckpointError as exc:
                    print("error", type(exc).__name__, exc.code)
        """
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    if when == "after-numpy":  # the values were read into memory: truncation cannot reach them
        assert result.stdout.split() == ["sum", str(float(sum(range(n))))]
    else:
        assert result.stdout.split() == ["error", "FormatError", "file-changed"]


def test_a_grown_or_shrunk_file_is_file_changed_for_every_read(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, b"x" * 100)
    with ByteSource(path) as src:
        assert src.read_at(0, 10) == b"x" * 10
        os.truncate(path, 50)
        raises(FormatError, "file-changed", src.read_at, 0, 10)
        os.truncate(path, 200)
        raises(FormatError, "file-changed", src.view, 0, 10)
        os.truncate(path, 100)
        assert bytes(src.view(0, 10)) == b"x" * 10


def test_tensor_bytes_are_read_not_mapped(engine: str, tmp_path: pathlib.Path) -> None:
    """A numpy array of a tensor owns its bytes: the file can go and the values stay."""
    path = write(tmp_path, small_checkpoint())
    with ckptpeek.open(path, engine=engine) as ckpt:
        arr = ckpt["w"].numpy()
    os.truncate(path, 0)
    assert arr.ravel().tolist() == list(FLOATS)


# -- 4. no path blocks: FIFOs and other non-regular files are refused at open -------------
@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail (instead of hanging the run) if the block takes longer than ``seconds``."""

    def fire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"blocked for {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")


@needs_fifo
@pytest.mark.parametrize("name", ["model.ckpt", "model.safetensors", "model.pt"])
@pytest.mark.parametrize("entry", ["open", "load_checkpoint"])
def test_a_fifo_is_refused_without_blocking(
    engine: str, tmp_path: pathlib.Path, name: str, entry: str
) -> None:
    path = tmp_path / name
    os.mkfifo(path)
    fn = ckptpeek.open if entry == "open" else ckptpeek.load_checkpoint
    with deadline(10):
        err = raises(UnsupportedError, "not-regular-file", fn, path, engine=engine)
    assert "FIFO" in str(err) and err.path == str(path)


@needs_fifo
def test_a_fifo_is_refused_by_the_cli(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "model.ckpt"
    os.mkfifo(path)
    result = subprocess.run(
        [sys.executable, "-m", "ckptpeek", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    assert result.returncode != 0
    assert "not-regular-file" in result.stderr + result.stdout or "FIFO" in result.stderr


def test_a_device_is_refused(tmp_path: pathlib.Path) -> None:
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    with deadline(10):
        raises(UnsupportedError, "not-regular-file", ByteSource, "/dev/zero")
        link = tmp_path / "zero.ckpt"
        link.symlink_to("/dev/zero")  # a symlink is followed, and what it names checked
        raises(UnsupportedError, "not-regular-file", ckptpeek.open, link)


@needs_fifo
def test_a_fifo_shard_or_dcp_data_file_is_refused(engine: str, tmp_path: pathlib.Path) -> None:
    # a sharded index whose shard is a FIFO
    index = {"metadata": {}, "weight_map": {"w": "model-00001.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    os.mkfifo(tmp_path / "model-00001.safetensors")
    with deadline(10):
        with pytest.raises(CheckpointError) as info:
            ckptpeek.open(tmp_path / "model.safetensors.index.json", engine=engine)
    assert info.value.code in ("not-regular-file", "sharded-missing-shard"), info.value


@needs_fifo
def test_open_regular_refuses_before_any_read(tmp_path: pathlib.Path) -> None:
    """The central opener: a FIFO with no writer would block ``open`` itself."""
    from ckptpeek.io.source import open_regular

    os.mkfifo(tmp_path / "f")
    with deadline(10):
        raises(UnsupportedError, "not-regular-file", open_regular, tmp_path / "f")
        raises(UnsupportedError, "not-regular-file", open_regular, tmp_path)
    fd = open_regular(write(tmp_path, b"abc", "plain"))
    try:
        assert os.get_blocking(fd) and os.pread(fd, 3, 0) == b"abc"
    finally:
        os.close(fd)


# -- 5. a central directory that claims the file is refused before it is read ------------
def claims_the_file(size: int, entries: int) -> bytes:
    """The tail of a ZIP whose end record puts a directory of ``size - 22`` bytes at 0."""
    return struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, entries, entries, size - 22, 0, 0)


@pytest.mark.parametrize("native", [False, True], ids=["pure", "native"])
def test_a_directory_as_large_as_a_sparse_file_is_refused(
    tmp_path: pathlib.Path, native: bool
) -> None:
    if native and not zipdir.NATIVE:
        pytest.skip(f"native ZIP parser not built ({zipdir.NATIVE_ERROR})")
    size = 3 << 30  # sparse: no disk is spent
    path = tmp_path / "big.ckpt"
    with open(path, "wb") as f:
        f.write(b"PK\x03\x04")
        f.truncate(size)
        f.seek(size - 22)
        f.write(claims_the_file(size, 0xFFFF))
    with ByteSource(path) as src:
        raises(LimitError, "limit-directory-size", zipdir.read_directory, src, native=native)
        assert src.bytes_read <= zipdir._TAIL_READ  # only the tail was read
    # one entry cannot fill 3 GiB: corrupt, whatever the limit
    with open(path, "r+b") as f:
        f.seek(size - 22)
        f.write(claims_the_file(size, 1))
    with ByteSource(path) as src:
        raises(
            FormatError,
            "zip-bad-central-dir",
            zipdir.read_directory,
            src,
            native=native,
            max_directory_bytes=size,
        )
        assert src.bytes_read <= zipdir._TAIL_READ


def test_max_directory_bytes_is_honoured_from_open(engine: str, tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, small_checkpoint())
    with ckptpeek.open(path, engine=engine) as ckpt:
        assert ckpt["epoch"] == 3
    small = Limits(max_directory_bytes=100)
    raises(LimitError, "limit-directory-size", ckptpeek.open, path, engine=engine, limits=small)


# -- 6. safetensors headers: linear work --------------------------------------------------
def safetensors(tensors: dict[str, dict[str, Any]]) -> bytes:
    header = json.dumps(tensors).encode()
    return struct.pack("<Q", len(header)) + header


def count_lines(fn: Any, *files: str) -> int:
    """Python lines executed in ``files`` while ``fn()`` runs (a deterministic work count)."""
    count = 0

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        nonlocal count
        if frame.f_code.co_filename.endswith(files):
            if event == "line":
                count += 1
            return tracer
        return None

    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(None)
    return count


def _open_and_list(path: pathlib.Path) -> None:
    try:
        with ckptpeek.open(path) as ckpt:
            list(ckpt.tensors())
    except CheckpointError:
        pass


def test_many_zero_size_tensors_cost_linear_work(tmp_path: pathlib.Path) -> None:
    def work(n: int) -> int:
        tensors = {
            f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(n)
        }
        path = write(tmp_path, safetensors(tensors), f"{n}.safetensors")
        return count_lines(lambda: _open_and_list(path), "safetensors.py", "tensor.py")

    small, large = work(1000), work(4000)
    assert large <= 4.2 * small, (small, large)


def empty_st(shape: list[int]) -> bytes:
    return safetensors({"t": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}})


def test_huge_dims_of_an_empty_tensor_cost_linear_work(tmp_path: pathlib.Path) -> None:
    """``[0, 2**62, 2**62, ...]`` is valid safetensors and torch loads it. Computed exactly,
    its strides grew to thousands of digits (20,000 dims: 4.4 s, 40,000: 19.9 s); in
    torch's wrapping int64 arithmetic each is one word, and the work per dim is constant."""
    lines = {}
    for dims in (1_000, 4_000):
        path = write(tmp_path, empty_st([0] + [1 << 62] * dims), f"{dims}.safetensors")
        with ckptpeek.open(path) as ckpt:
            strides = ckpt["t"].stride()
        assert strides[-2:] == (1 << 62, 1) and set(strides[:-2]) == {0}
        assert all(0 <= st <= (1 << 63) - 1 for st in strides)  # one machine word each
        lines[dims] = count_lines(lambda p=path: _open_and_list(p), "safetensors.py")
    assert lines[4_000] <= 4.2 * lines[1_000], lines


STRIDE_CASES = {
    "wraps-to-zero": ([0, 1 << 40, 1 << 40], (0, 1 << 40, 1)),
    "wraps-to-zero-3": ([0, 1 << 62, 1 << 62, 1 << 62], (0, 0, 1 << 62, 1)),
    "int64-max": ([0, (1 << 63) - 1], ((1 << 63) - 1, 1)),
    "wraps-negative": ([0, 1 << 62, 2], None),
    "wraps-negative-inner": ([0, 3, 1 << 62, 3], None),
    "past-int64": ([0, (1 << 64) - 1], None),
}


@pytest.mark.parametrize("case", sorted(STRIDE_CASES))
def test_empty_tensor_strides_are_safetensors_torchs(tmp_path: pathlib.Path, case: str) -> None:
    shape, want = STRIDE_CASES[case]
    path = write(tmp_path, empty_st(shape))
    if want is None:
        raises(UnsupportedError, "st-shape-overflow", ckptpeek.open, path)
    else:
        with ckptpeek.open(path) as ckpt:
            assert ckpt["t"].stride() == want


def test_empty_tensor_strides_match_safetensors_torch_on_random_shapes(
    tmp_path: pathlib.Path,
) -> None:
    st = pytest.importorskip("safetensors.torch")
    rng = __import__("random").Random(11)
    sizes = [1, 2, 3, 1 << 31, (1 << 32) + 1, 1 << 40, (1 << 61) + 1, 1 << 62, (1 << 63) - 1]
    for i in range(300):
        shape = [rng.choice(sizes + [rng.randrange(1 << 63)]) for _ in range(rng.randint(1, 5))]
        shape.insert(rng.randint(0, 1), 0)
        path = write(tmp_path, empty_st(shape), f"{i}.safetensors")
        try:
            want = st.load_file(path)["t"].stride()
        except (RuntimeError, TypeError):
            raises(UnsupportedError, "st-shape-overflow", ckptpeek.open, path)
            continue
        with ckptpeek.open(path) as ckpt:
            assert ckpt["t"].stride() == want, shape


# -- 7. an error never quotes the file ----------------------------------------------------
SECRET = b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin\n"


@pytest.mark.parametrize("via", ["symlink", "hardlink", "direct"])
def test_unknown_format_quotes_no_byte_of_the_file(
    engine: str, tmp_path: pathlib.Path, via: str
) -> None:
    target = write(tmp_path, SECRET, "passwd")
    path = tmp_path / "model.ckpt"
    if via == "symlink":
        path.symlink_to(target)
    elif via == "hardlink":
        os.link(target, path)
    else:
        path = target
    err = raises(FormatError, "unknown-format", ckptpeek.open, path, engine=engine)
    text = str(err)
    for word in (b"root", b"daemon", b"bash", b"72 6f 6f 74"):
        assert word.decode() not in text.replace(str(tmp_path), ""), text


def test_unknown_format_names_common_non_checkpoints(tmp_path: pathlib.Path) -> None:
    lfs = b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 12\n"
    err = raises(FormatError, "unknown-format", ckptpeek.open, write(tmp_path, lfs))
    assert "Git LFS pointer" in str(err)
    err = raises(
        FormatError, "unknown-format", ckptpeek.open, write(tmp_path, b"\x1f\x8b" + bytes(30))
    )
    assert "gzip" in str(err)


@needs_fifo
def test_a_fifo_dcp_data_file_is_refused(engine: str, tmp_path: pathlib.Path) -> None:
    torch = pytest.importorskip("torch")
    dcp = pytest.importorskip("torch.distributed.checkpoint")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"w": torch.arange(6.0)}, checkpoint_id=str(tmp_path))
    (data,) = [n for n in os.listdir(tmp_path) if n.endswith(".distcp")]
    os.remove(tmp_path / data)
    os.mkfifo(tmp_path / data)
    with deadline(10):
        with pytest.raises(CheckpointError) as info:
            with ckptpeek.open(tmp_path, engine=engine) as ckpt:
                for _key, t in ckpt.tensors():
                    t.numpy()
    assert info.value.code == "not-regular-file", info.value


# -- 8. the sweep: what escaped as another exception ------------------------------------
def legacy_frame_probe(pad: int) -> bytes:
    """torch's legacy magic and version pickles, then a ``0x95`` (FRAME) byte within 9
    bytes of the end: the frame check searched to ``end - 9``, which for the 6-byte
    version pickle is negative and so counted from the end of the buffer
    (``struct.error`` in 0.x)."""
    magic = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."
    version = b"\x80\x02M\xe9\x03."
    return magic + version + b"\x00" * pad + b"\x95\x00\x00\x00\x00"


@pytest.mark.parametrize("pad", [0, 2, 30, 300])
def test_a_frame_byte_near_the_end_of_a_short_legacy_pickle(
    engine: str, tmp_path: pathlib.Path, pad: int
) -> None:
    path = write(tmp_path, legacy_frame_probe(pad), "m.pt")
    with pytest.raises(CheckpointError) as info:
        ckptpeek.open(path, engine=engine)
    assert isinstance(info.value, FormatError), info.value


def pax_tar(size_value: str) -> bytes:
    """A PAX tar whose member states its size in a PAX ``size`` record."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("storages")
        info.size = 3
        info.pax_headers = {"size": size_value}
        tf.addfile(info, io.BytesIO(b"abc"))
    return buf.getvalue()


def test_a_pax_size_of_thousands_of_digits_is_refused(engine: str, tmp_path: pathlib.Path) -> None:
    """``int()`` of more digits than ``sys.get_int_max_str_digits()`` raised ValueError
    (and tarfile, torch's reader, then takes the size as 0: readers differ by the
    interpreter's setting), so a size over 20 digits is refused with the other sizes
    that are no number."""
    ok = write(tmp_path, pax_tar("3"), "ok.pt")
    raises(FormatError, "tar-missing-member", ckptpeek.open, ok, engine=engine)
    path = write(tmp_path, pax_tar("1" * 5000), "m.pt")
    err = raises(FormatError, "tar-extended-header", ckptpeek.open, path, engine=engine)
    assert "no number" in str(err)


@pytest.mark.parametrize(
    ("size", "stride"),
    [((1 << 32, 0), (1, 1)), ((1 << 30,), (0,)), ((1000, 1000, 2), (0, 0, 0))],
    ids=["empty-rows", "expanded", "lists-and-values"],
)
def test_tolist_counts_the_lists_it_builds(
    engine: str, tmp_path: pathlib.Path, size: tuple[int, ...], stride: tuple[int, ...]
) -> None:
    """An empty ``(2**32, 0)`` tensor is 2**32 empty lists: MemoryError before."""
    path = write(tmp_path, one_tensor(lambda p: put_tensor(p, size, stride)))
    with ckptpeek.open(path, engine=engine) as ckpt:
        raises(LimitError, "limit-dense-size", ckpt["t"].tolist)
    ok = write(tmp_path, one_tensor(lambda p: put_tensor(p, (1000, 0), (1, 1))), "ok.ckpt")
    with ckptpeek.open(ok, engine=engine) as ckpt:
        assert ckpt["t"].tolist() == [[]] * 1000


def test_a_tensor_of_a_closed_file_object_checkpoint_is_a_checkpoint_error(engine: str) -> None:
    """``load_checkpoint(BytesIO)`` returns tensors whose file object is closed with it:
    reading one is a designed UnsupportedError, never a bare ValueError."""
    import io

    data = (pathlib.Path(__file__).parent / "data" / "state_dict.pt").read_bytes()
    root = ckptpeek.load_checkpoint(io.BytesIO(data), engine=engine)
    tensor = next(v for v in root.values() if isinstance(v, ckptpeek.TensorRef))
    with pytest.raises(ckptpeek.UnsupportedError) as err:
        tensor.numpy()
    assert err.value.code == "source-closed"


# -- TorchScript name lists: scanned, not parsed; what is inflated is capped ---------------
def script_archive(code: bytes, *, claim_size: int | None = None) -> bytes:
    """A TorchScript archive as ``torch.jit.save`` lays it out: ``data.pkl`` a
    ``__torch__.M`` object (NEWOBJ, BUILD) with a 6-float ``weight``, an empty
    ``constants.pkl``, and ``code/__torch__.py`` (DEFLATE) holding ``code``."""
    p = Pickle().proto(2).glob("__torch__", "M").empty_tuple().raw(b"\x81")
    p.empty_dict().str("weight")
    put_tensor(p, (6,), (1,)).setitem().build()
    constants = bytes(Pickle().proto(2).empty_tuple().stop())
    source = Member("archive/code/__torch__.py", code, method=8, claim_size=claim_size)
    return torch_zip(
        bytes(p.stop()),
        extra=[Member("archive/constants.pkl", constants), source],
    )


def module_source(names: str) -> bytes:
    return f"class M(Module):\n  __parameters__ = {names}\n  __buffers__ = []\n".encode()


def count_names(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every name literal the scanner decodes, appended as it is decoded."""
    from ckptpeek.formats import torchscript  # noqa: PLC0415

    seen: list[str] = []
    unquote = torchscript._unquote

    def counting(literal: str) -> str | None:
        seen.append(literal)
        return unquote(literal)

    monkeypatch.setattr(torchscript, "_unquote", counting)
    return seen


@pytest.mark.parametrize("n", [1_000, 1_000_000])
def test_a_name_list_bomb_is_refused_after_a_bounded_scan(
    engine: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, n: int
) -> None:
    # the attack: '["", "", ...]' DEFLATEs ~1000:1; ast.literal_eval spent ~1 KB per name
    import tracemalloc  # noqa: PLC0415

    data = script_archive(module_source("[" + '"", ' * n + "]"))
    assert len(data) < 8000
    path = write(tmp_path, data, "bomb.pt")
    seen = count_names(monkeypatch)
    tracemalloc.start()
    try:
        err = raises(LimitError, "limit-nodes", ckptpeek.open, path, engine=engine)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.member == "archive/code/__torch__.py"
    # no more names than the pickles have bytes (each attribute is named in one)
    with zipfile.ZipFile(path) as z:
        pickles = sum(z.getinfo(f"archive/{m}").file_size for m in ("data.pkl", "constants.pkl"))
    assert len(seen) == pickles
    assert peak < 4 * n + (8 << 20), peak  # the inflated text, not a tree of it


def test_a_code_member_inflating_past_the_cap_is_refused_before_inflating(
    engine: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ckptpeek.formats import torchscript  # noqa: PLC0415

    inflated: list[int] = []  # one entry per inflater made (zipdir inflates through zlib)
    decompressobj = zlib.decompressobj

    def counting(*args: Any) -> Any:
        inflated.append(1)
        return decompressobj(*args)

    monkeypatch.setattr(zlib, "decompressobj", counting)
    code = module_source('["weight", ]')
    path = write(tmp_path, script_archive(code, claim_size=torchscript._MAX_CODE_BYTES + 1))
    err = raises(LimitError, "limit-member-size", ckptpeek.open, path, engine=engine)
    assert err.member == "archive/code/__torch__.py"
    assert inflated == []  # refused by the directory's size, before any byte is inflated


NAME_LISTS = [
    "[]",
    '["weight", ]',  # what torch's printer writes
    '["weight", "bias"]',
    "['weight' ,\t'bias' , ]",
    r'["a\"b", "c\\d", "\n\t", "\u00e9\x41\101", "\U0001F600", "\0777\47x"]',
    "[\"'\", '\"']",
]


@pytest.mark.parametrize("names", NAME_LISTS)
def test_name_lists_scan_as_python_reads_them(
    engine: str, tmp_path: pathlib.Path, names: str
) -> None:
    import ast  # noqa: PLC0415

    path = write(tmp_path, script_archive(module_source(names)), "m.pt")
    with ckptpeek.open(path, engine=engine) as ckpt:
        module = ckpt.root["module"]
        assert module.parameter_names == tuple(ast.literal_eval(names))
        assert module.is_module is True
        assert list(ckpt.root["state_dict"]) == (["weight"] if "weight" in names else [])


MALFORMED_LISTS = [
    '["a" "b"]',  # implicit concatenation: Python reads it, torch never writes it
    '["a",, ]',
    '[b"a"]',
    '[r"a"]',
    '["a"]]',
    '[["a"]]',
    '["a", 1]',
    '[__import__("os")]',
    r'["\q"]',  # an escape Python warns about
    r'["\777"]',
    r'["\477"]',
    r'["\N{DIGIT ONE}"]',  # valid Python; torch's printer never writes it
    '["unterminated]',
]


@pytest.mark.parametrize("names", MALFORMED_LISTS)
def test_malformed_name_lists_are_torchscript_bad_code(
    engine: str, tmp_path: pathlib.Path, names: str
) -> None:
    path = write(tmp_path, script_archive(module_source(names)), "m.pt")
    err = raises(FormatError, "torchscript-bad-code", ckptpeek.open, path, engine=engine)
    assert err.member == "archive/code/__torch__.py"


# -- unbind() of a nested tensor: components counted before they are built -----------------
def nested(n: int) -> bytes:
    """``{"t": nested tensor of n empty rows}``: sizes and strides ``(n, 0)`` and offsets
    ``(n,)``, all stride-0 views of one int64, so ``n`` costs the file nothing."""

    def put(p: Pickle) -> None:
        p.glob("torch._utils", "_rebuild_nested_tensor").mark()
        put_tensor(p, (1,), (1,), numel=1)
        for shape, stride in (((n, 0), (0, 1)), ((n, 0), (0, 1)), ((n,), (0,))):
            put_tensor(p, shape, stride, key="1", storage="LongStorage", numel=1)
        p.tuple().reduce()

    return one_tensor(put, {"0": floats(1.0), "1": longs(0)})


@pytest.mark.parametrize(("n", "limit", "refused"), [(3, 5, False), (5, 5, False), (6, 5, True)])
def test_unbind_counts_components_before_building_them(
    engine: str,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    n: int,
    limit: int,
    refused: bool,
) -> None:
    from ckptpeek import tensor  # noqa: PLC0415

    built: list[tuple[int, ...]] = []
    check_layout = tensor.check_layout

    def counting(shape: tuple[int, ...], *args: Any) -> None:
        built.append(shape)
        check_layout(shape, *args)

    monkeypatch.setattr(tensor, "MAX_UNBIND", limit)
    path = write(tmp_path, nested(n))
    with ckptpeek.open(path, engine=engine) as ckpt:
        t = ckpt.get("t")
        monkeypatch.setattr(tensor, "check_layout", counting)
        if refused:
            err = raises(LimitError, "limit-dense-size", t.unbind)
            assert f"{n} components" in str(err) and str(limit) in str(err)
            assert built == []  # refused before the first component
        else:
            assert [p.shape for p in t.unbind()] == [()] * n  # 0-D: a row of no sizes
            assert len(built) == n


def test_unbind_of_the_attack_is_refused_at_the_default_limit(
    engine: str, tmp_path: pathlib.Path
) -> None:
    from ckptpeek.tensor import MAX_UNBIND  # noqa: PLC0415

    path = write(tmp_path, nested(999_999))
    assert path.stat().st_size < 4000
    with ckptpeek.open(path, engine=engine) as ckpt:
        assert ckpt.get("t").shape == (999_999,)
        err = raises(LimitError, "limit-dense-size", ckpt.get("t").unbind)
    assert f"more than {MAX_UNBIND}" in str(err)


def test_a_location_that_is_not_text_reads_as_torch_reads_it(tmp_path, engine: str) -> None:
    """torch.load(map_location="cpu") - what load_checkpoint stands in for - never reads a
    storage's location: a persistent id whose location is no string loads, onto the cpu
    (a fuzz finding: it was called corrupt, bad-persistent-id)."""
    import io
    import zipfile

    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save({"w": torch.arange(6, dtype=torch.float32)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    path = tmp_path / "location.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/data.pkl"):
                cpu = b"X\x03\x00\x00\x00cpu"  # BINUNICODE 'cpu', protocol 2
                assert data.count(cpu) == 1
                data = data.replace(cpu, b"K\x03")  # the location: the int 3
            out.writestr(info.filename, data)
    want = torch.load(path, map_location="cpu", weights_only=True)["w"]
    with ckptpeek.open(path, engine=engine) as ckpt:
        got = ckpt["w"]
        assert str(got.device) == "cpu"
        assert got.numpy().tolist() == want.tolist()
