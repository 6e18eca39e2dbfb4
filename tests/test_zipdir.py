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
import zlib

import pytest
from _builders import Member, build_zip
from test_zip_views import TRICKS, variants

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


@pytest.mark.parametrize("kind", ["plain", "zip64", "comment", "deflated"])
def test_members_match_zipfile(tmp_path, kind) -> None:
    path, members = _archive(
        tmp_path,
        zip64=kind == "zip64",
        comment=b"c" * 1000 if kind == "comment" else b"",
        method=zipfile.ZIP_DEFLATED if kind == "deflated" else zipfile.ZIP_STORED,
    )
    with ByteSource(path) as src:
        directory = read_directory(src)
        assert directory.names() == list(members)
        for name, data in members.items():
            assert directory.read(name) == data
            assert directory.read(name.upper()) == data  # torch's lookup ignores ASCII case
        assert [directory.read(m) for m in directory] == list(members.values())


def test_bytes_before_the_archive_are_refused(tmp_path) -> None:
    """A self-extractor's stub shifts every offset: torch reads the directory at the
    offset stated (and refuses the file), so ckptpeek does not measure back from the end
    record to read it either."""
    path, _ = _archive(tmp_path, prefix=b"#!stub\n" * 10)
    with ByteSource(path) as src, pytest.raises(FormatError) as err:
        read_directory(src)
    assert err.value.code == "zip-bad-central-dir" and "does not end at" in str(err.value)


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
    records = [(type(m).__name__, tuple(m)) for m in directory.records]
    index = sorted((key, tuple(m)) for key, m in directory._index.items())
    return ("ok", records, index, directory.names())


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
    with_comment = io.BytesIO()
    with zipfile.ZipFile(with_comment, "w") as z:
        z.writestr("a/data.pkl", b"N.")
        z.comment = b"c" * 300
    out["comment"] = with_comment.getvalue()
    return out


def _refused() -> dict[str, tuple[bytes, str]]:
    """Archives read_directory refuses, with the code: every variant of the trick classes
    of test_zip_views.py that is refused at the directory (the others - a lying local
    header or data descriptor, a missing version record - are refused on reading)."""
    small = {"a/data.pkl": b"\x80\x02K\x01.", "a/data/0": bytes(range(256)), "a/version": b"3\n"}
    with warnings.catch_warnings():  # "Duplicate name"
        warnings.simplefilter("ignore")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("same", b"1")
            z.writestr("same", b"22")
    out = {
        "prefixed": (b"#!/bin/sh\n" * 5 + _zipfile_archive(small), "zip-bad-central-dir"),
        "duplicate-names": (buf.getvalue(), "zip-duplicate-name"),
    }
    for trick in TRICKS:
        for what, data, _markers in variants(trick):
            outcome = directory_outcome(data, False)
            if outcome[0] == "err":
                out[f"{trick}: {what}"] = (data, outcome[2])
    return out


GENERATED = _generated()
REFUSED = _refused()
#: the first refused variant of each class (its mutations are compared too)
FIRST_REFUSED = {
    next(n for n in REFUSED if n.split(":")[0] == c) for c in {n.split(":")[0] for n in REFUSED}
}
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
    assert directory_outcome(GENERATED["utf8-names"], False)[3] == ["a/dätä.pkl", "a/€/0", "名前"]
    assert directory_outcome(GENERATED["cp437-name"], False)[3] == ["a/üΘ.pkl"]
    # every class of trick that can be refused from the directory alone is in REFUSED
    refused_classes = {name.split(":")[0] for name in REFUSED}
    assert refused_classes >= set(TRICKS) - {
        "local-mismatch",
        "lying-descriptor",
        "no-version",
        "stray-member",
        "torch-folder",
    }, refused_classes
    codes = {code for _data, code in REFUSED.values()}
    assert {
        "zip-duplicate-name",
        "zip-nul-name",
        "zip-unsafe-name",
        "zip-overlap",
        "zip-multiple-eocd",
        "zip-encrypted",
        "zip-bad-central-dir",
    } <= codes, codes


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
@pytest.mark.parametrize("name", sorted(REFUSED))
def test_c_and_pure_parsers_refuse_alike(name: str) -> None:
    """The C parser never accepts what the pure one refuses (it declines, and the pure
    parser reports): the same error on every hostile archive, and on its mutations for
    the first variant of each class."""
    data, code = REFUSED[name]
    out = assert_same_directory(data, name)
    assert out[0] == "err" and out[2] == code, out
    if name in FIRST_REFUSED:
        outcomes = collections.Counter()
        for what, mutated in _mutations(name, data):
            outcomes[assert_same_directory(mutated, what)[0]] += 1
        assert outcomes["err"], outcomes


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
            end = data.find(b"PK\x06\x06", start) if b"PK\x06\x06" in data[start:end] else end
            bases.append((data[start:end], start, len(data)))
    handled = 0
    for i in range(6000):
        cd, cd_start, size = rng.choice(bases)
        cd = bytearray(cd)
        for _ in range(rng.randint(1, 4)):
            cd[rng.randrange(len(cd))] = rng.randrange(256)
        count = max(0, bytes(cd).count(b"PK\x01\x02") + rng.choice((0, 0, 0, -1, 1)))
        source = ByteSource(io.BytesIO(bytes(size)))
        c = zipdir._native.parse_central_directory(
            bytes(cd), count, cd_start, size, zipdir.ZipMember
        )
        try:
            pure: object = zipdir._parse_central_directory(bytes(cd), count, source, cd_start)
        except CheckpointError as e:
            pure = ("err", e.code)
        if c is not None:
            handled += 1
            assert c == pure and [type(m) for m in c[0]] == [zipdir.ZipMember] * len(c[0]), (
                i,
                bytes(cd),
                count,
            )
    # the C parser took part (it declines overlaps, counts off by one, ...)
    assert handled > 400, handled


# ---------------------------------------------------------------------------------------
# real torch.save / torch.jit.save output: accepted whole, by both parsers
# ---------------------------------------------------------------------------------------


def _torch_outputs(tmp_path: pathlib.Path) -> dict[str, pathlib.Path]:
    torch = pytest.importorskip("torch")
    out = {}

    def save(name: str, obj: object, **kw: object) -> None:
        out[name] = tmp_path / f"{name}.pt"
        torch.save(obj, out[name], **kw)

    save("many-small", {f"t{i}": torch.full((i % 3 + 1,), float(i)) for i in range(300)},
         _use_new_zipfile_serialization=True)  # fmt: skip
    save("protocol-4", {"w": torch.arange(6.0).reshape(2, 3), "n": 3}, pickle_protocol=4)
    save("empty-tensors", {"e": torch.empty(0), "z": torch.zeros(0, 3), "x": torch.ones(2)})
    save("shared-views", {"a": (base := torch.arange(10.0)), "b": base[2:5], "c": base.view(2, 5)})
    out["torchscript"] = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 2)), out["torchscript"])
    buf = io.BytesIO()
    torch.save({"w": torch.ones(3)}, buf)  # a file object: the folder is "archive"
    out["file-object"] = tmp_path / "buffer.pt"
    out["file-object"].write_bytes(buf.getvalue())
    return out


def test_real_torch_files_pass_every_check(tmp_path: pathlib.Path) -> None:
    """torch's own archives: the C parser takes them whole, the pure parser agrees,
    every member's local header and data descriptor agree with the directory
    (``verify()``), and the tensors read are torch's."""
    import ckptpeek

    torch = pytest.importorskip("torch")
    for name, path in _torch_outputs(tmp_path).items():
        data = path.read_bytes()
        out = directory_outcome(data, False)
        assert out[0] == "ok", (name, out)
        if zipdir.NATIVE:
            assert assert_same_directory(data, name) == out
        with ByteSource(path) as src:
            directory = read_directory(src)
            directory.verify()
        with ckptpeek.open(path) as ckpt:
            ours = {k[-1]: t.numpy().tolist() for k, t in ckpt.tensors()}
        if name != "torchscript":
            # our own file (weights_only refuses protocol 4's FRAME, so the full unpickler)
            theirs = torch.load(path, weights_only=name != "protocol-4")
            for key, value in theirs.items():
                if isinstance(value, torch.Tensor):
                    assert ours[key] == value.tolist(), (name, key)


def _many_member_archive(n: int) -> bytes:
    """n one-byte STORED members laid out as torch writes them past 65,535 members: the
    end record's count saturated at 0xFFFF, the ZIP64 end record and locator with the
    real count (a torch.save of 66,000 tensors has exactly this shape)."""
    local, central = [], []
    offset = 0
    for i in range(n):
        raw = f"archive/data/{i}".encode()
        crc = zlib.crc32(b"x")
        local.append(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0x800, 0, 0, 0x21, crc, 1, 1,
                                 len(raw), 0) + raw + b"x")  # fmt: skip
        central.append(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0x800, 0, 0, 0x21, crc,
                                   1, 1, len(raw), 0, 0, 0, 0, 0, offset) + raw)  # fmt: skip
        offset += 30 + len(raw) + 1
    cd = b"".join(central)
    rec = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, len(cd), offset)
    loc = struct.pack("<4sLQL", b"PK\x06\x07", 0, offset + len(cd), 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, len(cd), offset, 0)
    return b"".join(local) + cd + rec + loc + end


def test_more_than_65535_members() -> None:
    data = _many_member_archive(65_600)
    out = assert_same_directory(data, "65,600 members") if zipdir.NATIVE else None
    directory = read_directory(ByteSource(io.BytesIO(data)))
    assert len(directory) == 65_600 and directory.get("ARCHIVE/DATA/65599") is directory.records[-1]
    assert out is None or out[0] == "ok"


@pytest.mark.parametrize("path", ZIP_FIXTURES, ids=lambda p: p.name)
def test_fixtures_pass_verify(path: pathlib.Path) -> None:
    with ByteSource(path) as src:
        read_directory(src).verify()
