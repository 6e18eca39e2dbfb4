"""Our ZIP directory reader against the stdlib's zipfile, on archives zipfile writes, and
its C parser (``io/_zipdir_c``) against the pure one on fixtures and their mutations."""

from __future__ import annotations

import collections
import io
import pathlib
import random
import struct
import warnings
import zipfile

import pytest
from _builders import Member, build_zip

from ckptpeek.errors import CheckpointError, FormatError, LimitError
from ckptpeek.io import zipdir
from ckptpeek.io.source import ByteSource
from ckptpeek.io.zipdir import read_directory


def _archive(
    tmp_path, *, zip64=False, comment=b"", prefix=b"", method=zipfile.ZIP_STORED, members=None
):
    members = members or {
        "a/data.pkl": b"\x80\x02K\x01.",
        "a/data/0": bytes(range(256)) * 4,
        "a/ver.sion": b"3\n",
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method, allowZip64=True) as z:
        for name, data in members.items():
            with z.open(zipfile.ZipInfo(name), "w", force_zip64=zip64) as f:
                f.write(data)
        z.comment = comment
    path = tmp_path / "x.zip"
    path.write_bytes(prefix + buf.getvalue())
    return path, members


@pytest.mark.parametrize("kind", ["plain", "zip64", "comment", "prefixed", "deflated"])
def test_members_match_zipfile(tmp_path, kind) -> None:
    path, members = _archive(
        tmp_path,
        zip64=kind == "zip64",
        comment=b"c" * 1000 if kind == "comment" else b"",
        prefix=b"#!stub\n" * 10 if kind == "prefixed" else b"",
        method=zipfile.ZIP_DEFLATED if kind == "deflated" else zipfile.ZIP_STORED,
    )
    with ByteSource(path) as src:
        directory = read_directory(src)
        assert directory.names() == list(members)
        for name, data in members.items():
            assert directory.read(name) == data


def test_many_members_beyond_the_tail_read(tmp_path) -> None:
    members = {f"p/data/{i}": bytes([i % 256]) * 3 for i in range(3000)}
    path, _ = _archive(tmp_path, members=members)
    with ByteSource(path) as src:
        directory = read_directory(src)
        assert len(directory.names()) == 3000
        assert directory.read("p/data/2999") == bytes([2999 % 256]) * 3


def test_not_a_zip(tmp_path) -> None:
    path = tmp_path / "x.zip"
    path.write_bytes(b"hello" * 100)
    with ByteSource(path) as src, pytest.raises(FormatError) as err:
        read_directory(src)
    assert err.value.code == "zip-no-eocd" and str(path) in str(err.value)


def test_member_limit(tmp_path) -> None:
    path, _ = _archive(tmp_path)
    with ByteSource(path) as src, pytest.raises(LimitError):
        read_directory(src, max_members=2)


def test_deflate_bomb_is_bounded(tmp_path) -> None:
    path, _ = _archive(
        tmp_path, method=zipfile.ZIP_DEFLATED, members={"a/data.pkl": b"\0" * 10_000_000}
    )
    with ByteSource(path) as src:
        directory = read_directory(src)
        with pytest.raises(LimitError):
            directory.read("a/data.pkl", max_size=1_000_000)


# ---------------------------------------------------------------------------------------
# the C parser (io/_zipdir_c) against the pure one: same members or the same error
# ---------------------------------------------------------------------------------------

DATA = pathlib.Path(__file__).parent / "data"
ZIP_FIXTURES = sorted(p for p in DATA.iterdir() if p.is_file() and zipfile.is_zipfile(p))
needs_native = pytest.mark.skipif(
    not zipdir.NATIVE, reason=f"the C ZIP directory parser is not built ({zipdir.NATIVE_ERROR})"
)


def directory_outcome(data: bytes, native: bool, max_members: int = 10_000_000) -> tuple:
    """What ``read_directory`` makes of ``data``: every member's fields, or the error."""
    try:
        directory = read_directory(
            ByteSource(io.BytesIO(data)), max_members=max_members, native=native
        )
    except CheckpointError as e:
        return ("err", type(e).__name__, e.code, e.offset, e.member, e.path, str(e))
    except Exception as e:  # noqa: BLE001 - an escape is a bug; compared (and reported) too
        return ("escaped", type(e).__name__, str(e))
    members = [(key, type(m).__name__, tuple(m)) for key, m in directory.members.items()]
    return ("ok", members, directory.names())


def assert_same_directory(data: bytes, what: str, **kw: int) -> tuple:
    c, py = directory_outcome(data, True, **kw), directory_outcome(data, False, **kw)
    assert c == py, f"{what}: C parser {c!r:.600} / pure parser {py!r:.600}"
    assert py[0] != "escaped", f"{what}: {py!r}"
    return py


def _zipfile_archive(members: dict[str, bytes], *, zip64: bool = False, **kw: object) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", allowZip64=True, **kw) as z:  # type: ignore[arg-type]
        for name, data in members.items():
            with z.open(zipfile.ZipInfo(name), "w", force_zip64=zip64) as f:
                f.write(data)
    return buf.getvalue()


def _with_zip64_end(data: bytes) -> bytes:
    """The same archive with a ZIP64 end record and locator (APPNOTE 4.3.14-15) before
    its end record, whose count/size/offset fields then say "see ZIP64"."""
    eocd = data.rindex(b"PK\x05\x06")
    _sig, _d, _cd, _nh, count, cd_size, cd_offset, clen = struct.unpack_from("<4s4H2LH", data, eocd)
    rec64 = struct.pack(
        "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size, cd_offset
    )
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, eocd, 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, clen)
    return data[:eocd] + rec64 + locator + end + data[eocd + 22 :]


def _generated() -> dict[str, bytes]:
    small = {"a/data.pkl": b"\x80\x02K\x01.", "a/data/0": bytes(range(256)), "a/version": b"3\n"}
    out = {
        "plain": _zipfile_archive(small),
        # force_zip64: ZIP64 extras in the local headers (zipfile's directory has them
        # only for sizes or offsets past 4 GiB; "builders-zip64" below has them there)
        "zip64-local": _zipfile_archive(small, zip64=True),
        "zip64-end": _with_zip64_end(_zipfile_archive(small)),
        "zip64-end-local": _with_zip64_end(_zipfile_archive(small, zip64=True)),
        "utf8-names": _zipfile_archive({"a/dätä.pkl": b"1", "a/€/0": b"22", "名前": b""}),
        "utf8-zip64-local": _zipfile_archive({"a/dätä.pkl": b"1", "名前": b"x"}, zip64=True),
        "empty": _zipfile_archive({}),
        "empty-name": _zipfile_archive({"": b"1", "x": b"2"}),
        "deflated": _zipfile_archive(
            {"a/data.pkl": b"\x80\x02" * 500 + b"N."}, compression=zipfile.ZIP_DEFLATED
        ),
        "prefixed": b"#!/bin/sh\n" * 5 + _zipfile_archive(small),
        # high bytes in a name without the UTF-8 flag: cp437 (the C parser declines)
        "cp437-name": _zipfile_archive({"a/XY.pkl": b"1"}).replace(b"a/XY.pkl", b"a/\x81\xe9.pkl"),
        # what _builders writes: the UTF-8 flag on every entry, ZIP64 extras on request
        "builders": build_zip([Member("a/data.pkl", b"N."), Member("a/b", b"x" * 70)]),
        "builders-zip64": build_zip(
            [Member("a/data.pkl", b"N.", zip64=True), Member("a/b", b"xy", zip64=True)]
        ),
        "builders-zip64-end": _with_zip64_end(
            build_zip([Member("a/data.pkl", b"N.", zip64=True), Member("a/b", b"xy")])
        ),
    }
    with warnings.catch_warnings():  # "Duplicate name"
        warnings.simplefilter("ignore")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("same", b"1")
            z.writestr("same", b"22")
        out["duplicate-names"] = buf.getvalue()
    with_comment = io.BytesIO()
    with zipfile.ZipFile(with_comment, "w") as z:
        z.writestr("a/data.pkl", b"N.")
        z.comment = b"c" * 300
    out["comment"] = with_comment.getvalue()
    return out


GENERATED = _generated()
ARCHIVES = {p.name: p.read_bytes() for p in ZIP_FIXTURES} | GENERATED


def _mutations(name: str, data: bytes):
    """Truncations (front and back, every length), and byte flips over the central
    directory, the ZIP64 records and the end record (0x00, 0xFF, bit 0 and bit 7)."""
    for k in range(len(data) + 1):
        yield f"{name}[:{k}]", data[:k]
        yield f"{name}[{k}:]", data[k:]
    cd = data.find(b"PK\x01\x02")
    start = cd if cd >= 0 else data.rindex(b"PK\x05\x06")
    for i in range(start, len(data)):
        for new in sorted({0x00, 0xFF, data[i] ^ 0x01, data[i] ^ 0x80} - {data[i]}):
            yield f"{name} byte {i} -> {new:#x}", data[:i] + bytes([new]) + data[i + 1 :]


def test_fixtures_and_generated_archives_exist() -> None:
    assert {p.name for p in ZIP_FIXTURES} >= {"state_dict.pt", "lightning_tiny.ckpt"}
    for name, data in GENERATED.items():
        out = directory_outcome(data, False)
        assert out[0] == "ok", (name, out)
        if name.startswith("zip64-end") or name == "builders-zip64-end":
            assert b"PK\x06\x06" in data and b"PK\x06\x07" in data
    assert directory_outcome(GENERATED["utf8-names"], False)[2] == ["a/dätä.pkl", "a/€/0", "名前"]
    assert directory_outcome(GENERATED["cp437-name"], False)[2] == ["a/üΘ.pkl"]


@needs_native
@pytest.mark.parametrize("name", sorted(ARCHIVES))
def test_c_and_pure_directory_parsers_agree(name: str) -> None:
    data = ARCHIVES[name]
    out = assert_same_directory(data, name)
    assert out[0] == "ok", out
    assert_same_directory(data, f"{name} max_members=1", max_members=1)
    outcomes = collections.Counter()
    for what, mutated in _mutations(name, data):
        outcomes[assert_same_directory(mutated, what)[0]] += 1
    assert outcomes["ok"] and outcomes["err"], outcomes  # both kinds of outcome compared


@needs_native
def test_c_parser_handles_the_common_case(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison above is not vacuous: on torch's archives the C parser returns the
    directory itself (it declines - returns None - only at ZIP64 fields and non-ASCII
    names, and then the pure parser decides)."""
    results = []
    native = zipdir._native

    class Recording:
        @staticmethod
        def parse_central_directory(*args):
            results.append(native.parse_central_directory(*args))
            return results[-1]

    monkeypatch.setattr(zipdir, "_native", Recording)
    for p in ZIP_FIXTURES:
        read_directory(ByteSource(io.BytesIO(p.read_bytes())), native=True)
    assert len(results) == len(ZIP_FIXTURES) and all(r is not None for r in results)
    results.clear()
    for name in ("builders-zip64", "utf8-names", "cp437-name"):
        read_directory(ByteSource(io.BytesIO(GENERATED[name])), native=True)
    assert results == [None, None, None]


@needs_native
def test_c_parser_declines_or_agrees_on_fuzzed_directories() -> None:
    """The two parsers on the central directory bytes alone, randomly corrupted: the C
    one returns exactly the pure one's members, or None (never a different answer, and
    never members where the pure parser raises)."""
    rng = random.Random(2024)
    bases = []
    for data in ARCHIVES.values():
        start, end = data.find(b"PK\x01\x02"), data.rfind(b"PK\x05\x06")
        if 0 <= start < end:
            bases.append((data[start:end], len(data)))
    handled = 0
    for i in range(4000):
        cd, size = rng.choice(bases)
        cd = bytearray(cd)
        for _ in range(rng.randint(1, 4)):
            cd[rng.randrange(len(cd))] = rng.randrange(256)
        count = max(0, bytes(cd).count(b"PK\x01\x02") + rng.choice((0, 0, 0, -1, 1)))
        source = ByteSource(io.BytesIO(bytes(size)))
        c = zipdir._native.parse_central_directory(bytes(cd), count, size, zipdir.ZipMember)
        try:
            pure: object = zipdir._parse_central_directory(bytes(cd), count, source, 0)
        except CheckpointError as e:
            pure = ("err", e.code)
        if c is not None:
            handled += 1
            assert c == pure and [type(m) for m in c.values()] == [zipdir.ZipMember] * len(c), (
                i,
                bytes(cd),
                count,
            )
    assert handled > 1000, handled  # the C parser took part
