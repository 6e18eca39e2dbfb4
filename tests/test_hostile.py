"""Hostile and broken inputs: every failure is a CheckpointError, nothing runs, nothing blows up.

All inputs are built here, byte by byte (``_builders.py``), so the module needs no torch.
The base input is the pickle torch writes for ``{"epoch": 3, "w": <2x3 float tensor>}``
inside the usual zip layout; the tests truncate it, flip its bits, make its directory
lie, and replace its pickle with attacks on the interpreter. Each test runs once per
pickle engine (``engine`` fixture). Cases that can crash the interpreter process
(C-level recursion, memory blow-ups) run in a subprocess so that a crash is reported
as a failure of that test instead of killing the session.
"""

from __future__ import annotations

import inspect
import io
import os
import pathlib
import pickle
import random
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zlib
from dataclasses import fields, is_dataclass
from functools import cache
from typing import Any

import pytest
from _builders import (
    FLOATS,
    Member,
    Pickle,
    build_zip,
    small_checkpoint,
    small_pickle,
    torch_zip,
)

import ckptpeek
from ckptpeek import (
    CheckpointError,
    FormatError,
    LimitError,
    Limits,
    Placeholder,
    UnsafePickleError,
    UnsupportedError,
)
from ckptpeek.io.source import ByteSource
from ckptpeek.summary import facts
from ckptpeek.unpickle import engine as _backend
from ckptpeek.unpickle import registry

PKL = small_pickle()
CKPT = small_checkpoint()
MEMBER = "archive/data.pkl"
SRC = pathlib.Path(ckptpeek.__file__).resolve().parents[1]  # the ckptpeek under test


# ------------------------------------------------------------------------------ helpers


def run(engine: str, data: bytes, **kw: Any) -> Any:
    """``run_pickle`` of the chosen engine (no storages unless given)."""
    return _backend.engine(engine).run_pickle(data, **kw)


def write(tmp_path: pathlib.Path, data: bytes, name: str = "hostile.ckpt") -> pathlib.Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def consume(ckpt: Any) -> None:
    """Everything a catalog does with an opened file (may raise CheckpointError)."""
    for _key, ref in list(ckpt.tensors()):
        ref.numpy()
    ckpt.summary()
    ckpt.globals()


def open_and_consume(engine: str, data: bytes, **kw: Any) -> Any:
    with ckptpeek.open(io.BytesIO(data), engine=engine, **kw) as ckpt:
        consume(ckpt)
        return ckpt.root


def vm_error(
    engine: str,
    data: bytes,
    cls: type = FormatError,
    code: str | tuple[str, ...] | None = None,
    offset: int | None = None,
    **kw: Any,
) -> CheckpointError:
    """Run ``data`` and check the error: class, code, and an offset inside the pickle."""
    with pytest.raises(CheckpointError) as info:
        run(engine, data, **kw)
    err = info.value
    assert isinstance(err, cls), f"{type(err).__name__}: {err}"
    if code is not None:
        codes = (code,) if isinstance(code, str) else code
        assert err.code in codes, f"code {err.code!r} not in {codes}: {err}"
    assert isinstance(err.offset, int) and 0 <= err.offset <= len(data), err.offset
    if offset is not None:
        assert err.offset == offset, f"offset {err.offset}, expected {offset}: {err}"
    return err


def file_error(
    engine: str,
    tmp_path: pathlib.Path,
    data: bytes,
    cls: type = CheckpointError,
    code: str | tuple[str, ...] | None = None,
    member: str | None = MEMBER,
    pickle_len: int | None = None,
    **kw: Any,
) -> CheckpointError:
    """Open ``data`` as a file: the error names the file (and member), offset in the pickle."""
    path = write(tmp_path, data)
    with pytest.raises(CheckpointError) as info:
        with ckptpeek.open(path, engine=engine, **kw) as ckpt:
            consume(ckpt)
    err = info.value
    assert isinstance(err, cls), f"{type(err).__name__}: {err}"
    if code is not None:
        codes = (code,) if isinstance(code, str) else code
        assert err.code in codes, f"code {err.code!r} not in {codes}: {err}"
    assert err.path == str(path)
    assert str(path) in str(err)
    if member is not None:
        assert err.member == member, f"member {err.member!r}: {err}"
        assert member in str(err)
    if pickle_len is not None:
        assert isinstance(err.offset, int) and 0 <= err.offset <= pickle_len, err.offset
    return err


def only_checkpoint_errors(
    fn: Any, cases: list[Any], tally: dict[str, int] | None = None
) -> list[str]:
    """Run ``fn`` on every case; return a description of each non-CheckpointError.

    ``tally`` (if given) counts the cases read (``"ok"``) and refused (``"refused"``).
    """
    bad = []
    for case in cases:
        try:
            fn(case)
        except CheckpointError:
            if tally is not None:
                tally["refused"] = tally.get("refused", 0) + 1
        except Exception as exc:  # noqa: BLE001 - that is what is being looked for
            bad.append(f"{case!r:.80}: {type(exc).__name__}: {exc}")
        else:
            if tally is not None:
                tally["ok"] = tally.get("ok", 0) + 1
    return bad


def wrap(pkl: bytes) -> bytes:
    return torch_zip(pkl)


@pytest.fixture
def sources(monkeypatch: pytest.MonkeyPatch) -> list[ByteSource]:
    """Every ByteSource opened during the test (each counts its ``bytes_read``)."""
    made: list[ByteSource] = []
    init = ByteSource.__init__

    def counting_init(self: ByteSource, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(ByteSource, "__init__", counting_init)
    return made


def assert_read_once(sources: list[ByteSource], size: int) -> None:
    """One source was opened for the file, and no byte of it was read twice."""
    assert len(sources) == 1, f"{len(sources)} sources opened"
    assert sources[0].size == size and sources[0].bytes_read <= size, (
        f"read {sources[0].bytes_read} bytes of a {size}-byte file"
    )
    sources.clear()


def snapshot(ckpt: Any) -> Any:
    """Everything observable about a read, for comparing two reads of the same file."""
    tensors = [
        (key, tuple(t.shape), str(t.dtype), t.stride(), t.storage_offset(), t.numpy().tolist())
        for key, t in ckpt.tensors()
    ]
    summary = ckpt.summary().model_dump()
    summary.pop("bytes_read", None)
    return repr(ckpt.root), tensors, [str(g) for g in ckpt.globals()], summary


def registry_snapshot() -> dict[Any, Any]:
    out = {}
    for key, value in registry.KNOWN_GLOBALS.items():
        if is_dataclass(value):
            out[key] = (
                type(value),
                tuple(
                    (f.name, id(getattr(value, f.name)), repr(getattr(value, f.name)))
                    for f in fields(value)
                ),
            )
        else:
            out[key] = (type(value), repr(value))
    return out


def isolated(
    engine: str,
    tmp_path: pathlib.Path,
    data: bytes,
    *,
    after: str = "",
    timeout: float = 60,
    limit_mb: int | None = None,
) -> str:
    """Run the pickle in a fresh interpreter; fail (not crash) if that process dies.

    The child prints ``result ok`` or ``result error <code> <offset>``, then runs
    ``after`` (one line) with ``value`` bound to the result, drops it (deallocation) and
    prints ``done``. ``timeout`` only catches a hang: it is no speed claim.
    """
    pkl = write(tmp_path, data, "isolated.pkl")
    script = textwrap.dedent(f"""
        import resource, sys, time
        import ckptpeek
        from ckptpeek.unpickle import engine as _backend
        data = open({str(pkl)!r}, "rb").read()
        value = None
        try:
            value = _backend.engine({engine!r}).run_pickle(data).value
            print("result ok", flush=True)
        except ckptpeek.CheckpointError as exc:
            print("result error", exc.code, exc.offset, flush=True)
        {after}
        del value
        # VmHWM is this process's own peak (ru_maxrss would include the pytest parent's,
        # which Linux carries across exec)
        hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")]
        print("maxrss_mb", int(hwm[0].split()[1]) // 1024 if hwm else
              resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
        print("done", flush=True)
    """)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"reading a {len(data)}-byte pickle took more than {timeout} s")
    assert proc.returncode == 0 and "done" in proc.stdout, (
        f"interpreter process died (exit code {proc.returncode}) on a {len(data)}-byte pickle\n"
        f"stdout: {proc.stdout[-500:]}\nstderr: {proc.stderr[-1500:]}"
    )
    if limit_mb is not None:
        rss = int(proc.stdout.split("maxrss_mb", 1)[1].split()[0])
        assert rss < limit_mb, f"a {len(data)}-byte pickle made the reader use {rss} MB"
    return proc.stdout


def isolated_result(out: str) -> tuple[str, ...]:
    """The ``result`` line of an ``isolated`` run: ``("ok",)`` or ``("error", code, offset)``."""
    (line,) = [line for line in out.splitlines() if line.startswith("result ")]
    return tuple(line.split()[1:])


@cache
def deflate_zeros(n_mb: int, head: bytes = b"") -> bytes:
    """Raw DEFLATE of ``head`` followed by ``n_mb`` MiB of zeros, compressed chunk by chunk."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [c.compress(head)]
    chunk = bytes(1 << 20)
    parts += [c.compress(chunk) for _ in range(n_mb)]
    parts.append(c.flush())
    return b"".join(parts)


# ------------------------------------------------------------------------------ sanity


def test_builder_checkpoint_reads(engine: str) -> None:
    with ckptpeek.open(io.BytesIO(CKPT), engine=engine) as ckpt:
        assert ckpt.root["epoch"] == 3
        w = ckpt.root["w"]
        assert tuple(w.shape) == (2, 3) and str(w.dtype) == "torch.float32"
        assert w.numpy().ravel().tolist() == list(FLOATS)
        assert ckpt.summary().epoch == 3


# ------------------------------------------------------------------------------ truncation


def test_truncated_file_every_50th(
    engine: str, tmp_path: pathlib.Path, sources: list[ByteSource]
) -> None:
    for k in range(50):
        cut = len(CKPT) * k // 50
        err = file_error(engine, tmp_path, CKPT[:cut], FormatError, member=None)
        assert err.code in (
            "empty-file",
            "zip-no-eocd",
            "truncated",
            "unknown-format",
            "zip-bad-central-dir",
        ), (cut, err.code, str(err))
        assert_read_once(sources, cut)


def test_truncated_pickle_every_byte(
    engine: str, tmp_path: pathlib.Path, sources: list[ByteSource]
) -> None:
    for k in range(len(PKL)):
        data = wrap(PKL[:k])
        err = file_error(engine, tmp_path, data, FormatError, "truncated", pickle_len=k)
        assert err.offset <= k
        assert_read_once(sources, len(data))


def test_truncated_pickle_every_byte_vm(engine: str) -> None:
    for k in range(len(PKL)):
        try:
            run(engine, PKL[:k], persistent_load=lambda pid: pid)
        except CheckpointError as err:
            assert isinstance(err.offset, int) and 0 <= err.offset <= k
        else:
            pytest.fail(f"pickle cut at {k} of {len(PKL)} bytes was accepted")


# ------------------------------------------------------------------------------ bit flips, noise


def test_pickle_bit_flips(engine: str) -> None:
    start_pkl = CKPT.index(PKL)
    cases = []
    for i in range(len(PKL) * 8):
        data = bytearray(CKPT)
        data[start_pkl + i // 8] ^= 1 << (i % 8)
        cases.append(bytes(data))
    tally: dict[str, int] = {}
    bad = only_checkpoint_errors(lambda d: open_and_consume(engine, d), cases, tally)
    assert not bad, "\n".join(bad[:10])
    # a flip may leave a readable pickle (a changed value) or not: both kinds occur
    assert tally.get("ok", 0) > 0 and tally.get("refused", 0) > 0, tally


def test_central_directory_bit_flips(engine: str) -> None:
    cd_start = CKPT.index(b"PK\x01\x02")
    rng = random.Random(1234)
    cases = []
    for _ in range(400):
        data = bytearray(CKPT)
        for _ in range(rng.choice((1, 1, 2, 4))):
            i = rng.randrange(cd_start, len(data))
            data[i] ^= 1 << rng.randrange(8)
        cases.append(bytes(data))
    tally: dict[str, int] = {}
    bad = only_checkpoint_errors(lambda d: open_and_consume(engine, d), cases, tally)
    assert not bad, "\n".join(bad[:10])
    assert tally.get("ok", 0) > 0 and tally.get("refused", 0) > 0, tally  # both kinds


@pytest.mark.parametrize("head", [b"", b"PK\x03\x04", b"PK\x05\x06", b"\x80\x02", b"\x80\x05\x95"])
@pytest.mark.parametrize("n", [1, 4, 21, 22, 100, 4096, 70_000])
def test_random_bytes(engine: str, tmp_path: pathlib.Path, head: bytes, n: int) -> None:
    rng = random.Random(n)
    data = head + rng.randbytes(n)
    err = file_error(engine, tmp_path, data, member=None)
    assert isinstance(err, (FormatError, UnsupportedError)), str(err)


@pytest.mark.parametrize("n", [0, 1, 2, 16, 100, 5000])
def test_random_pickles_vm(engine: str, n: int) -> None:
    rng = random.Random(n)
    bad = only_checkpoint_errors(lambda d: run(engine, d), [rng.randbytes(n) for _ in range(200)])
    bad += only_checkpoint_errors(
        lambda d: run(engine, d), [b"\x80\x04" + rng.randbytes(n) for _ in range(200)]
    )
    assert not bad, "\n".join(bad[:10])


def test_empty_file(engine: str, tmp_path: pathlib.Path) -> None:
    err = file_error(engine, tmp_path, b"", FormatError, "empty-file", member=None)
    assert err.offset == 0


def test_text_file(engine: str, tmp_path: pathlib.Path) -> None:
    err = file_error(
        engine, tmp_path, b"epoch: 3\nstep: 1200\n" * 20, FormatError, "unknown-format", member=None
    )
    assert "text" in str(err)


def test_zip_without_data_pkl(engine: str, tmp_path: pathlib.Path) -> None:
    data = build_zip(
        [
            Member("archive/version", b"3\n"),
            Member("archive/data/0", b"\0" * 24),
            Member("archive/data.pkl.bak", PKL),
            Member("data.pkl/x", PKL),
        ]
    )
    file_error(engine, tmp_path, data, FormatError, "zip-no-data-pkl", member=None)


def test_empty_zip(engine: str, tmp_path: pathlib.Path) -> None:
    file_error(engine, tmp_path, build_zip([]), FormatError, "zip-no-data-pkl", member=None)


# ------------------------------------------------------------------------------ lying zips


def _pkl_member(**kw: Any) -> Member:
    return Member(MEMBER, PKL, **kw)


LIES = {
    "count-too-high": dict(claim_count=5),
    "count-65535": dict(claim_count=0xFFFF),
    "cd-size-too-big": dict(claim_cd_size=1 << 20),
    "cd-size-too-small": dict(claim_cd_size=20),
    "cd-offset-past-end": dict(claim_cd_offset=1 << 30),
    "cd-offset-zero": dict(claim_cd_offset=0),
    "cd-offset-off-by-one": dict(claim_cd_offset=-1),
    "header-offset-past-end": dict(pkl_member=_pkl_member(claim_offset=1 << 30)),
    "header-offset-into-data": dict(pkl_member=_pkl_member(claim_offset=40)),
    "header-offset-other-member": dict(pkl_member=_pkl_member(claim_offset=-2)),
    "size-bigger": dict(pkl_member=_pkl_member(claim_size=1000, claim_csize=1000)),
    "size-smaller": dict(pkl_member=_pkl_member(claim_size=10, claim_csize=10)),
    "csize-past-end": dict(pkl_member=_pkl_member(claim_csize=100_000)),
    "deflate-claims-stored-size": dict(pkl_member=_pkl_member(method=8, claim_size=10)),
    "encrypted": dict(pkl_member=_pkl_member(flags=1)),
    "bzip2": dict(pkl_member=_pkl_member(method=12)),
    "storage-too-small": dict(storage=b"\0" * 8),
}


#: what each lie is refused as: (class, code, whether the error names data.pkl)
LIE_ERRORS = {
    "count-too-high": (FormatError, "zip-bad-central-dir", False),
    "count-65535": (FormatError, "zip-bad-central-dir", False),
    "cd-size-too-big": (FormatError, "zip-bad-central-dir", False),  # does not fit the file
    "cd-size-too-small": (FormatError, "zip-bad-central-dir", False),
    "cd-offset-past-end": (FormatError, "zip-bad-central-dir", False),
    "cd-offset-zero": (FormatError, "zip-bad-central-dir", False),
    "cd-offset-off-by-one": (FormatError, "zip-bad-central-dir", False),
    "header-offset-past-end": (FormatError, "zip-bad-central-dir", False),
    "header-offset-into-data": (FormatError, "zip-overlap", True),
    "header-offset-other-member": (FormatError, "zip-overlap", True),  # one header, two names
    "size-bigger": (FormatError, "truncated", True),
    "size-smaller": (FormatError, "truncated", True),
    "csize-past-end": (FormatError, "truncated", True),
    "deflate-claims-stored-size": (FormatError, "zip-bad-deflate", True),
    "encrypted": (UnsupportedError, "zip-encrypted", True),
    "bzip2": (UnsupportedError, "zip-compression", True),
    "storage-too-small": (FormatError, "storage-too-small", True),
}


def test_every_lie_has_an_expected_error() -> None:
    assert set(LIE_ERRORS) == set(LIES)


@pytest.mark.parametrize("lie", sorted(LIES))
def test_lying_central_directory(engine: str, tmp_path: pathlib.Path, lie: str) -> None:
    kw = dict(LIES[lie])
    if kw.get("claim_cd_offset") == -1:
        kw["claim_cd_offset"] = torch_zip(PKL).index(b"PK\x01\x02") + 1
    pm = kw.get("pkl_member")
    if pm is not None and pm.claim_offset == -2:  # point data.pkl at the byteorder record
        kw["pkl_member"] = _pkl_member(claim_offset=30 + len(MEMBER) + len(PKL))
    cls, code, names_member = LIE_ERRORS[lie]
    err = file_error(
        engine, tmp_path, torch_zip(PKL, **kw), cls, code, member=MEMBER if names_member else None
    )
    if not names_member:  # the directory itself is refused, before any member is read
        assert err.member is None, str(err)


def test_member_claims_4gb(engine: str, tmp_path: pathlib.Path) -> None:
    data = torch_zip(PKL, pkl_member=_pkl_member(claim_size=0xFFFFFFFE, claim_csize=0xFFFFFFFE))
    tracemalloc.start()
    try:
        # a STORED member is checked against the file at open: it does not fit
        err = file_error(engine, tmp_path, data, FormatError, "truncated")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak
    assert err.member == MEMBER


@pytest.mark.parametrize("claim", [0xFFFFFFFE, 1 << 40, (1 << 63) - 1])
def test_member_claims_huge_under_raised_limit(
    engine: str, tmp_path: pathlib.Path, claim: int
) -> None:
    """Even with the size guard lifted, a claim is checked against the file before use."""
    data = torch_zip(
        PKL, pkl_member=_pkl_member(claim_size=claim, claim_csize=claim, zip64=claim >= 0xFFFFFFFF)
    )
    tracemalloc.start()
    try:
        err = file_error(
            engine,
            tmp_path,
            data,
            FormatError,
            "truncated",
            limits=Limits(max_pickle_bytes=1 << 63),
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak
    assert err.member == MEMBER


def test_storage_claims_4gb(engine: str, tmp_path: pathlib.Path) -> None:
    storage = Member(
        "archive/data/0", struct.pack("<6f", *FLOATS), claim_size=0xFFFFFFF0, claim_csize=0xFFFFFFF0
    )
    data = build_zip(
        [
            Member(MEMBER, PKL),
            Member("archive/byteorder", b"little"),
            storage,
            Member("archive/version", b"3\n"),
        ]
    )
    path = write(tmp_path, data)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError) as info:
            with ckptpeek.open(path, engine=engine) as ckpt:
                consume(ckpt)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak
    assert str(path) in str(info.value)


def test_deflate_bomb_small_claim(engine: str, tmp_path: pathlib.Path) -> None:
    """32 MiB of zeros claimed as 64 KiB: refused without inflating past the claim."""
    bomb = _pkl_member(method=8, compressed=deflate_zeros(32, PKL), claim_size=64 << 10)
    tracemalloc.start()
    try:
        err = file_error(
            engine, tmp_path, torch_zip(PKL, pkl_member=bomb), FormatError, "zip-bad-deflate"
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"inflated {peak} bytes for a 64 KiB member"
    assert err.member == MEMBER


def test_deflate_bomb_exact_pickle_claim(engine: str, tmp_path: pathlib.Path) -> None:
    """The claim equals the real pickle, but the stream goes on for 32 MiB more."""
    bomb = _pkl_member(method=8, compressed=deflate_zeros(32, PKL), claim_size=len(PKL))
    tracemalloc.start()
    try:
        file_error(
            engine, tmp_path, torch_zip(PKL, pkl_member=bomb), FormatError, "zip-bad-deflate"
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak


def test_deflate_bomb_over_limit(engine: str, tmp_path: pathlib.Path) -> None:
    bomb = _pkl_member(method=8, compressed=deflate_zeros(1, PKL), claim_size=3 << 30)
    file_error(engine, tmp_path, torch_zip(PKL, pkl_member=bomb), LimitError, "limit-member-size")


def test_deflate_bomb_short_of_claim(engine: str, tmp_path: pathlib.Path) -> None:
    """Inflates to 8 MiB although 64 MiB are claimed: an error, and no more than the claim."""
    bomb = _pkl_member(method=8, compressed=deflate_zeros(8, PKL), claim_size=64 << 20)
    tracemalloc.start()
    try:
        file_error(
            engine, tmp_path, torch_zip(PKL, pkl_member=bomb), FormatError, "zip-bad-deflate"
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, peak


def test_deflate_garbage(engine: str, tmp_path: pathlib.Path) -> None:
    bad = _pkl_member(method=8, compressed=b"\xff" * 64, claim_size=len(PKL))
    file_error(engine, tmp_path, torch_zip(PKL, pkl_member=bad), FormatError, "zip-bad-deflate")


# ------------------------------------------------------------------------------ unknown globals

ATTACKS = [
    ("os", "system", "touch"),
    ("posix", "system", "touch"),
    ("builtins", "eval", "eval"),
    ("__builtin__", "eval", "eval"),
    ("builtins", "exec", "eval"),
    ("subprocess", "Popen", "popen"),
    ("builtins", "getattr", "getattr"),
]


def _attack_args(kind: str, target: pathlib.Path) -> Pickle:
    p = Pickle()
    if kind == "touch":
        return p.mark().str(f"touch {target}").tuple()
    if kind == "eval":
        return p.mark().str(f"open({str(target)!r}, 'w').close()").tuple()
    if kind == "popen":
        return p.mark().mark().str("touch").str(str(target)).raw(b"l").tuple()
    # getattr(os, "system")
    return p.mark().glob("os", "system").str("system").tuple()


def _attack_pickle(
    module: str, name: str, kind: str, target: pathlib.Path, how: str = "GLOBAL"
) -> tuple[bytes, int]:
    """``{"x": module.name(args)}``; returns the pickle and the offset of the naming opcode."""
    p = Pickle().proto(4 if how in ("STACK_GLOBAL", "NEWOBJ") else 2).empty_dict().str("x")
    args = bytes(_attack_args(kind, target))
    if how == "INST":
        p.raw(args[:-1])  # MARK + the arguments, no TUPLE
        at = p.pos
        p.raw(b"i" + module.encode() + b"\n" + name.encode() + b"\n")
    elif how == "OBJ":
        at = p.pos + 1
        p.mark().glob(module, name).raw(args[1:-1]).raw(b"o")
    else:
        if how == "STACK_GLOBAL":
            p.str(module).str(name)
            at = p.pos
            p.raw(b"\x93")
        else:
            at = p.pos
            p.glob(module, name)
        p.raw(args).raw(b"\x81" if how == "NEWOBJ" else b"R")
    p.setitem().stop()
    return bytes(p), at


@pytest.mark.parametrize("how", ["GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "NEWOBJ"])
@pytest.mark.parametrize(("module", "name", "kind"), ATTACKS)
def test_unknown_global_becomes_placeholder(
    engine: str, tmp_path: pathlib.Path, module: str, name: str, kind: str, how: str
) -> None:
    target = tmp_path / "pwned"
    pkl, _at = _attack_pickle(module, name, kind, target, how)
    path = write(tmp_path, wrap(pkl))
    with ckptpeek.open(path, engine=engine) as ckpt:
        x = ckpt.root["x"]
        assert isinstance(x, Placeholder), repr(x)
        assert (x.module, x.name) == (module, name)
        if kind == "touch":
            assert x.args == (f"touch {target}",)
        elif kind == "popen":
            assert x.args == (["touch", str(target)],)
        assert any(
            g.module in (module, "builtins") and g.name == name and not g.safe
            for g in ckpt.globals()
        ), ckpt.globals()
        consume(ckpt)
        assert any(name in g for g in ckpt.summary().unknown_globals)
    assert not target.exists(), "the pickle's code ran"


@pytest.mark.parametrize("how", ["GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "NEWOBJ"])
@pytest.mark.parametrize(("module", "name", "kind"), ATTACKS)
def test_unknown_global_strict(
    engine: str, tmp_path: pathlib.Path, module: str, name: str, kind: str, how: str
) -> None:
    target = tmp_path / "pwned"
    pkl, at = _attack_pickle(module, name, kind, target, how)
    if kind == "getattr" and how != "INST":
        at = pkl.index(b"cos\nsystem\n")  # the first unknown global is os.system inside the args
        if how in ("GLOBAL", "STACK_GLOBAL", "NEWOBJ"):
            at = min(at, _attack_pickle(module, name, kind, target, how)[1])
    err = file_error(
        engine,
        tmp_path,
        wrap(pkl),
        UnsafePickleError,
        "forbidden-global",
        pickle_len=len(pkl),
        strict=True,
    )
    if kind != "getattr":
        assert err.offset == at, (err.offset, at, str(err))
    assert not target.exists()


def test_strict_offset_of_global_in_vm(engine: str) -> None:
    p = Pickle().proto(2).mark().int(1).int(2)
    at = p.pos
    p.glob("os", "system").str("id").tuple1().reduce().raw(b"l").stop()
    vm_error(engine, bytes(p), UnsafePickleError, "forbidden-global", offset=at, strict=True)


def test_known_global_file_strict_ok(engine: str) -> None:
    with ckptpeek.open(io.BytesIO(CKPT), engine=engine, strict=True) as ckpt:
        assert ckpt.root["epoch"] == 3


def test_no_code_runs_even_if_names_are_monkeypatched(
    engine: str, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a))
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: calls.append(a))
    for module, name, kind in ATTACKS:
        pkl, _ = _attack_pickle(module, name, kind, tmp_path / "x")
        run(engine, pkl)
    assert calls == []


# ------------------------------------------------------------------------------ BUILD attacks


def _dict_state(*pairs: tuple[str, Any]) -> Pickle:
    p = Pickle().empty_dict()
    for key, value in pairs:
        p.str(key)
        if isinstance(value, tuple):
            p.glob(*value)
        else:
            p.int(value)
        p.setitem()
    return p


BUILDS = {
    "odict-global-__class__": (
        ("collections", "OrderedDict"),
        _dict_state(("__class__", ("os", "system"))),
    ),
    "odict-global-x": (("collections", "OrderedDict"), _dict_state(("x", 1))),
    "odict-global-call": (
        ("collections", "OrderedDict"),
        _dict_state(("call", ("builtins", "eval"))),
    ),
    "rebuild-global-x": (("torch._utils", "_rebuild_tensor_v2"), _dict_state(("x", 1))),
    "rebuild-global-call": (
        ("torch._utils", "_rebuild_tensor_v2"),
        _dict_state(("call", ("os", "system"))),
    ),
    "rebuild-global-slots": (
        ("torch._utils", "_rebuild_tensor_v2"),
        Pickle().none().raw(bytes(_dict_state(("call", ("os", "system"))))).tuple2(),
    ),
    "dtype-itemsize": (("torch", "float32"), _dict_state(("itemsize", 1))),
    "storage-type-dtype": (("torch", "FloatStorage"), _dict_state(("dtype", ("torch", "float64")))),
    "layout": (("torch", "strided"), _dict_state(("name", 1))),
    "builtins-dict": (("builtins", "dict"), _dict_state(("x", 1))),
    "namespace-global": (("argparse", "Namespace"), _dict_state(("new", ("os", "system")))),
    "unknown-global": (("os", "system"), _dict_state(("module", 1))),
    "odict-instance-__class__": (None, _dict_state(("__class__", ("collections", "OrderedDict")))),
    "odict-instance-__dict__": (None, _dict_state(("__dict__", 1))),
    "odict-instance-slot-__class__": (
        None,
        Pickle().none().raw(bytes(_dict_state(("__class__", ("os", "system"))))).tuple2(),
    ),
    "tensor-instance-shape": ("tensor", _dict_state(("shape", 1))),
}


def _build_attack(target: Any, state: Pickle) -> bytes:
    p = Pickle().proto(2).empty_dict().str("x")
    if target is None:
        p.glob("collections", "OrderedDict").empty_tuple().reduce()
    elif target == "tensor":
        body = PKL[PKL.index(b"c" + b"torch._utils") : PKL.rindex(b"u.")]
        p.raw(body)
    else:
        p.glob(*target)
    p.raw(bytes(state)).build().setitem().stop()
    return bytes(p)


@pytest.mark.parametrize("case", sorted(BUILDS))
@pytest.mark.parametrize("strict", [False, True])
def test_build_on_globals_and_standins(
    engine: str, tmp_path: pathlib.Path, case: str, strict: bool
) -> None:
    with ckptpeek.open(io.BytesIO(CKPT), engine=engine) as ckpt:
        before = snapshot(ckpt)
    reg_before = registry_snapshot()
    target, state = BUILDS[case]
    pkl = _build_attack(target, state)
    err = file_error(engine, tmp_path, wrap(pkl), pickle_len=len(pkl), strict=strict)
    assert err.code in ("bad-build", "forbidden-global", "forbidden-build"), str(err)
    if not strict:
        assert err.code != "forbidden-global"
    assert registry_snapshot() == reg_before
    with ckptpeek.open(io.BytesIO(CKPT), engine=engine) as ckpt:
        assert snapshot(ckpt) == before


def test_container_ops_on_globals(engine: str) -> None:
    """SETITEM / APPEND / ADDITEMS cannot reach into a shared registry record."""
    reg_before = registry_snapshot()
    for glob in (
        ("collections", "OrderedDict"),
        ("torch", "float32"),
        ("builtins", "list"),
        ("torch", "FloatStorage"),
    ):
        vm_error(
            engine,
            bytes(Pickle().proto(2).glob(*glob).str("k").int(1).setitem().stop()),
            FormatError,
            "bad-operand",
        )
        vm_error(
            engine,
            bytes(Pickle().proto(2).glob(*glob).int(1).append().stop()),
            FormatError,
            "bad-operand",
        )
        vm_error(
            engine,
            bytes(Pickle().proto(4).glob(*glob).mark().int(1).raw(b"\x90.")),
            FormatError,
            "bad-operand",
        )
    assert registry_snapshot() == reg_before


def test_build_on_placeholder_is_recorded(engine: str) -> None:
    p = Pickle().proto(2).glob("mymod", "Thing").empty_tuple().reduce()
    p.raw(bytes(_dict_state(("__class__", ("os", "system"))))).build().stop()
    value = run(engine, bytes(p)).value
    assert isinstance(value, Placeholder) and value.name == "Thing"
    assert set(value.state) == {"__class__"}


def test_loads_do_not_share_objects(engine: str) -> None:
    """Mutating what one load returned changes nothing in the next load."""
    with ckptpeek.open(io.BytesIO(CKPT), engine=engine) as a:
        before = snapshot(a)
        a.root["epoch"] = 99
        a.root["w"].attrs["x"] = 1
        a.root["w"].metadata["y"] = 2
    with ckptpeek.open(io.BytesIO(CKPT), engine=engine) as b:
        assert snapshot(b) == before
        assert b.root["w"].attrs == {} and b.root["w"].metadata == {}


# ------------------------------------------------------------------------------ deep nesting


def _deep_list(n: int) -> bytes:
    return b"\x80\x02" + b"]" * n + b"a" * (n - 1) + b"."


def _assert_walks_refused(engine: str, pkl: bytes, globals_: tuple[str, ...] = ()) -> None:
    """Open as a file (the interpreter builds any depth without recursing); the walks,
    tensors() and summary(), refuse the nesting with a LimitError and globals() lists
    what the pickle named."""
    limit = ckptpeek.DEFAULT_LIMITS.max_depth
    with ckptpeek.open(io.BytesIO(wrap(pkl)), engine=engine) as ckpt:
        for walk in (lambda: list(ckpt.tensors()), ckpt.summary):
            with pytest.raises(LimitError) as info:
                walk()
            assert info.value.code == "limit-depth", str(info.value)
            assert f"deeper than {limit}" in str(info.value)
        assert [str(g) for g in ckpt.globals()] == list(globals_)


@pytest.mark.parametrize("n", [100_000, 1_000_000])
def test_deep_lists(engine: str, n: int) -> None:
    _assert_walks_refused(engine, _deep_list(n))


def test_deep_list_under_hyper_parameters(engine: str) -> None:
    n = 100_000
    pkl = (
        b"\x80\x02}"
        + bytes(Pickle().str("hyper_parameters"))
        + b"}"
        + bytes(Pickle().str("a"))
        + b"]" * n
        + b"a" * (n - 1)
        + b"ss."
    )
    _assert_walks_refused(engine, pkl)


def test_deep_dicts(engine: str) -> None:
    n = 100_000
    key = bytes(Pickle().str("k"))
    pkl = b"\x80\x02" + (b"}" + key) * n + b"N" + b"s" * n + b"."
    _assert_walks_refused(engine, pkl)


def test_deep_tuples(engine: str) -> None:
    _assert_walks_refused(engine, b"\x80\x02)" + b"\x85" * 100_000 + b".")


def test_deep_placeholders(engine: str) -> None:
    n = 100_000
    head = bytes(Pickle().proto(2).glob("mymod", "Node").binput(0))
    pkl = head + b"h\x00" * n + b"N" + b"\x85R" * n + b"."
    _assert_walks_refused(engine, pkl, ("mymod.Node",))


def test_deep_placeholder_build_states(engine: str) -> None:
    n = 100_000
    head = bytes(Pickle().proto(2).glob("mymod", "Node").binput(0).raw(b"0"))
    one = b"h\x00)R"  # Node()
    pkl = head + one * n + b"N" + b"b" * n + b"."
    _assert_walks_refused(engine, pkl, ("mymod.Node",))


@pytest.mark.parametrize("n", [100_000, 1_000_000])
def test_deep_tuple_as_dict_key(engine: str, n: int) -> None:
    """Refused when SETITEM would hash it (CPython hashes nested tuples recursively)."""
    pkl = b"\x80\x02})" + b"\x85" * n + b"Ns."
    vm_error(engine, pkl, LimitError, "limit-depth", offset=len(pkl) - 2)


@pytest.mark.parametrize("op", ["DICT", "SETITEMS", "FROZENSET", "ADDITEMS"])
def test_deep_tuple_hashed_by_opcodes(engine: str, op: str) -> None:
    deep = b")" + b"\x85" * 200_000
    pkl = {
        "DICT": b"\x80\x04(" + deep + b"Nd.",
        "SETITEMS": b"\x80\x04}(" + deep + b"Nu.",
        "FROZENSET": b"\x80\x04(" + deep + b"\x91.",
        "ADDITEMS": b"\x80\x04\x8f(" + deep + b"\x90.",
    }[op]
    vm_error(engine, pkl, LimitError, "limit-depth", offset=len(pkl) - 2)  # at the opcode


# Stand-ins that hash or compare what a file gives them: a deep tuple must not take the
# interpreter's C stack with it. Run in a subprocess: the failure mode is a segfault.
_DEEP = b")" + b"\x85" * 200_000
HASHING_STANDINS = {
    "builtins.set": bytes(Pickle().proto(2).glob("builtins", "set")) + _DEEP + b"\x85\x85R.",
    "builtins.frozenset": bytes(Pickle().proto(2).glob("builtins", "frozenset"))
    + _DEEP
    + b"\x85\x85R.",
    "builtins.dict-pairs": bytes(Pickle().proto(2).glob("builtins", "dict").raw(b"]"))
    + _DEEP
    + b"N\x86a\x85R.",
    "OrderedDict-pairs": bytes(Pickle().proto(2).glob("collections", "OrderedDict").raw(b"]"))
    + _DEEP
    + b"N\x86a\x85R.",
    "defaultdict-update": bytes(
        Pickle().proto(2).glob("collections", "defaultdict").none().raw(b"]")
    )
    + _DEEP
    + b"N\x86a\x86R.",
    "_codecs.encode-encoding": bytes(Pickle().proto(2).glob("_codecs", "encode").str("x"))
    + _DEEP
    + b"\x86R.",
    "builtins.bytes-encoding": bytes(Pickle().proto(2).glob("builtins", "bytes").str("x"))
    + _DEEP
    + b"\x86R.",
    "builtins.bytearray-encoding": bytes(Pickle().proto(2).glob("builtins", "bytearray").str("x"))
    + _DEEP
    + b"\x86R.",
}


@pytest.mark.parametrize("case", sorted(HASHING_STANDINS))
def test_deep_tuple_into_standins(engine: str, tmp_path: pathlib.Path, case: str) -> None:
    data = HASHING_STANDINS[case]
    out = isolated(engine, tmp_path, data, timeout=60)
    # refused by the stand-in's REDUCE (the opcode before STOP), the process intact: the
    # keys a stand-in will hash are measured by the interpreter's key guard first (the
    # code the opcodes give), the text arguments of the codecs by the call itself
    code = "bad-call" if case.endswith("-encoding") else "limit-depth"
    assert isolated_result(out) == ("error", code, str(len(data) - 2)), out


def test_deep_object_arrays_are_refused(engine: str, tmp_path: pathlib.Path) -> None:
    """Object ndarrays nested 100,000 deep (numpy would free them recursively in C): an
    object array may hold only scalars and strings, so the BUILD of the second level is
    refused and no chain is ever built. One level reads."""
    n = 100_000
    p = Pickle().proto(2).glob("numpy.core.multiarray", "_reconstruct").binput(0)
    p.glob("numpy", "ndarray").binput(1).glob("numpy", "dtype").str("O").tuple1().reduce().binput(2)
    p.raw(b"0").none()
    level = bytes(
        Pickle()
        .binput(3)
        .raw(b"0")
        .binget(0)
        .mark()
        .binget(1)
        .int(0)
        .tuple1()
        .str("b")
        .tuple()
        .reduce()
        .mark()
        .int(1)
        .int(1)
        .tuple1()
        .binget(2)
        .false()
        .empty_list()
        .binget(3)
        .append()
        .tuple()
        .build()
    )
    one = run(engine, bytes(p) + level + b".").value
    assert type(one).__name__ == "ndarray" and one.dtype.hasobject and one.tolist() == [None]
    second_build = len(bytes(p)) + 2 * len(level) - 1
    err = vm_error(engine, bytes(p) + level * 2 + b".", FormatError, "bad-build", second_build)
    assert "object arrays may hold only scalars and strings" in str(err)
    out = isolated(engine, tmp_path, bytes(p) + level * n + b".", timeout=60)
    assert isolated_result(out) == ("error", "bad-build", str(second_build)), out


_COUNT_SUMMARY_WORK = """
import ckptpeek.walk as walk
calls = [0]
children = walk.children
def counting(obj):
    calls[0] += 1
    return children(obj)
walk.children = counting
with ckptpeek.open(PATH, engine=ENGINE) as ckpt:
    hp = ckpt.summary().hyper_parameters
nodes, elided, todo = 0, 0, [hp]
while todo:
    o = todo.pop()
    nodes += 1
    elided += o == "..."
    todo.extend(o.values() if isinstance(o, dict) else o if isinstance(o, list) else ())
print("work", calls[0], nodes, elided, flush=True)
"""


def test_summary_of_shared_subtrees_is_not_exponential(engine: str, tmp_path: pathlib.Path) -> None:
    """64 lists, each holding the previous one twice (450 bytes), under hyper_parameters:
    2**64 paths. Counted: the tensor walk visits each of the 67 containers once, and the
    JSON view of hyper_parameters converts ``to_jsonable``'s budget of values and then
    elides the rest. In a subprocess with a generous timeout, so a regression to
    exponential work fails instead of hanging the session."""
    p = Pickle().proto(2).raw(b"]q\x000")
    for _ in range(64):
        p.raw(b"]h\x00ah\x00aq\x000")
    p.empty_dict().str("hyper_parameters").empty_dict().str("a").binget(
        0
    ).setitem().setitem().stop()
    path = write(tmp_path, wrap(bytes(p)))
    script = _COUNT_SUMMARY_WORK.replace("PATH", repr(str(path))).replace("ENGINE", repr(engine))
    out = isolated(engine, tmp_path, bytes(p), after=f"exec({script!r})", timeout=60)
    calls, nodes, elided = map(int, out.split("work", 1)[1].split()[:3])
    assert calls == 65 + 2, out  # 65 lists, the root dict and hyper_parameters, once each
    budget = inspect.signature(facts.to_jsonable).parameters["budget"].default
    # every conversion inside the budget yields one node; past it, only the pending
    # children of the (at most 66) open containers are rendered, as "..."
    assert budget < nodes <= budget + 2 * 66 and elided > 0, (nodes, elided)


def test_cycles_terminate(engine: str) -> None:
    # L = [L]; D = {"d": D, "l": L}
    pkl = (
        b"\x80\x02}q\x00"
        + bytes(Pickle().str("d"))
        + b"h\x00s"
        + bytes(Pickle().str("l"))
        + b"]q\x01h\x01as."
    )
    with ckptpeek.open(io.BytesIO(wrap(pkl)), engine=engine) as ckpt:
        assert list(ckpt.tensors()) == []
        ckpt.summary()


def test_tuple_key_of_allowed_depth_in_summary(engine: str, tmp_path: pathlib.Path) -> None:
    """The deepest key the limit allows reads, walks and summarises (no RecursionError);
    one level more is refused at the SETITEM that would hash it."""
    limit = ckptpeek.DEFAULT_LIMITS.max_depth
    pkl = b"\x80\x02})" + b"\x85" * (limit - 1) + b"Ns."  # a key of `limit` nested tuples
    with ckptpeek.open(io.BytesIO(wrap(pkl)), engine=engine) as ckpt:
        (key,) = ckpt.root
        depth = 0
        while key:
            (key,), depth = key, depth + 1
        assert depth == limit - 1 and key == ()
        assert list(ckpt.tensors()) == []
        summary = ckpt.summary()
        assert summary.hyper_parameters is None and summary.epoch is None
    deeper = b"\x80\x02})" + b"\x85" * limit + b"Ns."
    err = file_error(engine, tmp_path, wrap(deeper), LimitError, "limit-depth")
    assert err.offset == len(deeper) - 2


def test_numpy_scalar_memory(engine: str, tmp_path: pathlib.Path) -> None:
    """A few hundred bytes must not make the reader hold hundreds of megabytes: 40
    scalars of a 10 MB void dtype. The dtype itself is refused (its REDUCE)."""
    p = Pickle().proto(2).empty_list().binput(3).glob("numpy", "dtype").str("V9999999").tuple1()
    dtype_reduce = p.pos
    p.reduce().binput(0).raw(b"0").glob("numpy.core.multiarray", "scalar").binput(1)
    p.binget(0).tuple1().binput(2).raw(b"00")
    for _ in range(40):
        p.binget(1).binget(2).reduce().append()
    data = bytes(p.stop())
    out = isolated(engine, tmp_path, data, timeout=60, limit_mb=250)
    assert isolated_result(out) == ("error", "bad-call", str(dtype_reduce)), out


def test_numpy_scalar_memory_at_the_itemsize_limit(engine: str, tmp_path: pathlib.Path) -> None:
    """The same attack with the largest void dtype the reader accepts (64 KiB) and the
    value's bytes stored once and shared through the memo: 4,000 six-byte REDUCEs in a
    90 KB pickle must not make the reader hold 4,000 copies (262 MB)."""
    itemsize = 1 << 16
    p = Pickle().proto(3).empty_list().binput(3)
    p.glob("numpy", "dtype").str(f"V{itemsize}").tuple1().reduce().binput(0).raw(b"0")
    p.glob("numpy.core.multiarray", "scalar").binput(1)
    p.binget(0).raw(b"B" + struct.pack("<I", itemsize) + b"x" * itemsize).tuple2().binput(2)
    p.raw(b"00")
    for _ in range(4000):
        p.binget(1).binget(2).reduce().append()
    data = bytes(p.stop())
    assert len(data) < 100_000
    out = isolated(engine, tmp_path, data, timeout=60, limit_mb=100)
    # refused once the copies pass 4x the pickle + 16 MiB (about 256 of them)
    assert isolated_result(out)[:2] == ("error", "limit-built-bytes"), out


# ------------------------------------------------------------------------------ memo


def test_memo_get_unset(engine: str) -> None:
    vm_error(engine, b"\x80\x02h\x05.", FormatError, "memo-missing", offset=2)
    vm_error(engine, b"\x80\x02j\xff\xff\xff\xff.", FormatError, "memo-missing", offset=2)
    vm_error(engine, b"\x80\x02Nq\x00h\x01.", FormatError, "memo-missing", offset=5)
    vm_error(engine, b"(g7\nt.", FormatError, "memo-missing", offset=1)
    vm_error(engine, b"(gx\nt.", FormatError, "bad-argument", offset=1)


def test_memo_put_huge_index(engine: str) -> None:
    tracemalloc.start()
    try:
        assert run(engine, b"\x80\x02K\x07r\xff\xff\xff\xff0j\xff\xff\xff\xff.").value == 7
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert run(engine, b"K\x07p99999999999999999999\n0g99999999999999999999\n.").value == 7


def test_memo_put_bad(engine: str) -> None:
    vm_error(engine, b"\x80\x02q\x00.", FormatError, "stack-underflow", offset=2)
    vm_error(engine, b"\x80\x02r\x00\x00\x00\x00.", FormatError, "stack-underflow", offset=2)
    vm_error(engine, b"\x80\x04\x94.", FormatError, "stack-underflow", offset=2)
    vm_error(engine, b"Np-1\n.", FormatError, "bad-argument", offset=1)
    vm_error(engine, b"Npx\n.", FormatError, "bad-argument", offset=1)


def test_memo_limit(engine: str) -> None:
    pkl = b"\x80\x02N" + b"".join(b"q" + bytes([i]) for i in range(10)) + b"."
    err = vm_error(engine, pkl, LimitError, "limit-memo", limits=Limits(max_memo=4))
    assert err.offset == 3 + 2 * 4


# ------------------------------------------------------------------------------ lengths past the end

LENGTHS = {
    "LONG1": b"\x8a\xff\x01\x02",
    "LONG4": b"\x8b\xff\xff\xff\x7f\x01",
    "BINSTRING": b"T\xff\xff\xff\x7fab",
    "SHORT_BINSTRING": b"U\xffab",
    "BINUNICODE": b"X\xff\xff\xff\xffab",
    "SHORT_BINUNICODE": b"\x8c\xffab",
    "BINUNICODE8": b"\x8d" + struct.pack("<Q", 1 << 62) + b"ab",
    "BINUNICODE8-max": b"\x8d" + b"\xff" * 8 + b"ab",
    "BINBYTES": b"B\xff\xff\xff\xffab",
    "SHORT_BINBYTES": b"C\xffab",
    "BINBYTES8": b"\x8e" + struct.pack("<Q", 1 << 62) + b"ab",
    "BINBYTES8-max": b"\x8e" + b"\xff" * 8 + b"ab",
    "BYTEARRAY8": b"\x96" + b"\xff" * 8 + b"ab",
    "FRAME": b"\x95" + struct.pack("<Q", 1 << 40) + b"N.",
    "FRAME-max": b"\x95" + b"\xff" * 8 + b"N.",
    "FRAME-short": b"\x95\x01\x00",
    "BININT-short": b"J\x01",
    "BINFLOAT-short": b"G\x01\x02",
    "GLOBAL-no-newline": b"cos\nsystem",
    "INT-no-newline": b"I12",
}


@pytest.mark.parametrize("case", sorted(LENGTHS))
def test_lengths_past_the_end(engine: str, case: str) -> None:
    data = b"\x80\x05" + LENGTHS[case]
    tracemalloc.start()
    try:
        vm_error(engine, data, FormatError, "truncated", offset=2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{case} allocated {peak} bytes"


@pytest.mark.parametrize("data", [b"\x8b\xff\xff\xff\xff\x01.", b"T\xff\xff\xff\xffab."])
def test_negative_lengths(engine: str, data: bytes) -> None:
    vm_error(engine, b"\x80\x02" + data, FormatError, ("bad-argument", "truncated"), offset=2)


def test_frame_past_end_in_file(engine: str, tmp_path: pathlib.Path) -> None:
    pkl = b"\x80\x04\x95" + struct.pack("<Q", 1 << 60) + PKL[2:]
    file_error(engine, tmp_path, wrap(pkl), FormatError, "truncated", pickle_len=len(pkl))


# ------------------------------------------------------------------------------ stack discipline

UNDERFLOW = {  # opcode bytes (with a valid argument) that pop from the stack
    "STOP": b".",
    "POP": b"0",
    "DUP": b"2",
    "TUPLE1": b"\x85",
    "TUPLE2": b"\x86",
    "TUPLE3": b"\x87",
    "APPEND": b"a",
    "SETITEM": b"s",
    "BUILD": b"b",
    "REDUCE": b"R",
    "NEWOBJ": b"\x81",
    "NEWOBJ_EX": b"\x92",
    "STACK_GLOBAL": b"\x93",
    "BINPERSID": b"Q",
    "BINPUT": b"q\x00",
    "LONG_BINPUT": b"r\x00\x00\x00\x00",
    "PUT": b"p0\n",
    "MEMOIZE": b"\x94",
    "READONLY_BUFFER": b"\x98",
}
NEED_MARK = {  # opcodes that pop to the topmost MARK
    "POP_MARK": b"1",
    "TUPLE": b"t",
    "LIST": b"l",
    "DICT": b"d",
    "APPENDS": b"e",
    "SETITEMS": b"u",
    "ADDITEMS": b"\x90",
    "FROZENSET": b"\x91",
    "OBJ": b"o",
    "INST": b"imymod\nThing\n",
}


@pytest.mark.parametrize("op", sorted(UNDERFLOW))
def test_stack_underflow(engine: str, op: str) -> None:
    data = b"\x80\x05" + UNDERFLOW[op] + b"."
    vm_error(
        engine,
        data,
        FormatError,
        ("stack-underflow", "mark-missing"),
        offset=2,
        persistent_load=lambda pid: pid,
    )


@pytest.mark.parametrize("op", sorted(set(UNDERFLOW) - {"POP"}))
def test_stack_underflow_across_mark(engine: str, op: str) -> None:
    """Items below a MARK are out of reach: ``NNN( op`` underflows like an empty stack."""
    data = b"\x80\x05NNN(" + UNDERFLOW[op] + b"."
    vm_error(
        engine,
        data,
        FormatError,
        ("stack-underflow", "mark-missing"),
        offset=6,
        persistent_load=lambda pid: pid,
    )


def test_pop_across_mark_pops_the_mark(engine: str) -> None:
    """POP on an empty stack after a MARK pops the mark, as pickle.py does: the items
    below it are untouched (``1 2 3 ( POP`` returns 3)."""
    data = b"\x80\x05K\x01K\x02K\x03(0."
    assert pickle.loads(data) == 3
    assert run(engine, data).value == 3
    # the second POP takes the 1 (the mark is gone), so STOP finds an empty stack
    vm_error(engine, b"\x80\x05K\x01(00.", FormatError, "stack-underflow", offset=7)


@pytest.mark.parametrize("op", sorted(NEED_MARK))
def test_mark_missing(engine: str, op: str) -> None:
    data = b"\x80\x05}]\x8f" + NEED_MARK[op] + b"."
    vm_error(engine, data, FormatError, "mark-missing", offset=5)


@pytest.mark.parametrize("op", ["APPENDS", "SETITEMS", "ADDITEMS"])
def test_mark_without_target(engine: str, op: str) -> None:
    data = b"\x80\x05(NN" + NEED_MARK[op] + b"."
    vm_error(engine, data, FormatError, ("stack-underflow", "bad-operand"), offset=5)


@pytest.mark.parametrize(
    ("data", "code", "offset"),
    [
        (b"(.", "stack-underflow", 1),  # STOP finds only a mark
        (b"((((.", "stack-underflow", 4),
        (b"\x80\x02(N(.", "stack-underflow", 5),
        (b"\x80\x02}(Nu(u.", "bad-operand", 5),  # SETITEMS of one item
        (b")(((.", "stack-underflow", 4),
        (b"0.", "mark-missing", 0),
        (b"1.", "mark-missing", 0),
        (b"(1(1(1(1.", "stack-underflow", 8),
        (b"(N(NN(NNN" + b"t" * 4 + b".", "mark-missing", 12),  # the fourth TUPLE
        (b"\x80\x02(K\x01d.", "bad-operand", 5),  # DICT of one item
    ],
)
def test_mark_imbalance(engine: str, data: bytes, code: str, offset: int) -> None:
    with pytest.raises(Exception):  # noqa: B017 - the stdlib refuses these too
        pickle.loads(data)
    vm_error(engine, data, FormatError, code, offset=offset)


def test_leftover_mark_is_not_returned(engine: str) -> None:
    """``N ( 5 .``: STOP returns the top item, 5, as pickle.py does; the MARK left on
    the stack (the interpreter's internals) is never handed out."""
    data = b"\x80\x02N(K\x05."
    assert pickle.loads(data) == 5
    result = run(engine, data)
    assert result.value == 5 and type(result.value) is int
    assert result.end == len(data)


@pytest.mark.parametrize(
    "data", [b"", b"\x80\x02", b"\x80\x02}", b"\x80\x02]K\x01a", b"N", b"(lp0\n"]
)
def test_no_stop(engine: str, data: bytes) -> None:
    err = vm_error(engine, data, FormatError, "truncated")
    assert err.offset == len(data)


def test_no_stop_in_file(engine: str, tmp_path: pathlib.Path) -> None:
    err = file_error(
        engine, tmp_path, wrap(PKL[:-1]), FormatError, "truncated", pickle_len=len(PKL)
    )
    assert err.offset == len(PKL) - 1


def test_unknown_opcode(engine: str) -> None:
    for byte in sorted(set(range(256)) - {op.code for op in ckptpeek.unpickle.opcodes.OPCODES}):
        vm_error(
            engine, b"\x80\x02N" + bytes([byte]) + b".", FormatError, "unknown-opcode", offset=3
        )


def test_protocol_too_new(engine: str) -> None:
    vm_error(engine, b"\x80\x06N.", UnsupportedError, "protocol-too-new", offset=0)


def test_persistent_id_without_storages(engine: str) -> None:
    vm_error(engine, b"\x80\x02NQ.", FormatError, "bad-persistent-id", offset=3)
    vm_error(engine, b"P0\n.", FormatError, "bad-persistent-id", offset=0)


@pytest.mark.parametrize(
    "pid",
    [
        b"N",
        b"X\x07\x00\x00\x00storage\x85",
        b"(X\x07\x00\x00\x00storagecos\nsystem\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x06t",
        b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x009X\x03\x00\x00\x00cpuK\x06t",
        b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuJ\xff\xff\xff\x7ft",
        b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuJ\xff\xff\xff\xfft",
        b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x05\x00\x00\x00../..X\x03\x00\x00\x00cpuK\x06t",
    ],
)
def test_bad_persistent_ids_in_file(engine: str, tmp_path: pathlib.Path, pid: bytes) -> None:
    pkl = b"\x80\x02}X\x01\x00\x00\x00w" + pid + b"Qs."
    err = file_error(engine, tmp_path, wrap(pkl), member=None, pickle_len=len(pkl))
    assert err.offset == len(pkl) - 3, (err.offset, str(err))
    assert MEMBER in str(err), "a persistent-id error must name the pickle member"
