"""One view of every ZIP container, the one torch takes - or a refusal.

Each class of hostile archive has a generator below that builds its variants from
scratch (no torch): archives where another ZIP reader, or ckptpeek's old dict of
members, would see other members or other bytes than torch's reader (miniz's
``mz_zip_reader_*`` with flags 0, driven by ``PyTorchStreamReader``). Every variant is
refused, with its class's error code, by ``ckptpeek.open`` with both pickle engines and
both ZIP directory parsers (C and pure), and ``scan`` calls it refused.

Where torch is installed, the differential tests record what ``torch.load`` does with
the same bytes (``weights_only=False`` with a recording pickle module: nothing a file
names is ever imported): for the duplicate classes, which of the twins torch reads - it
depends on where the twins sort (miniz's binary search), so neither "the first" nor
"the last" is torch's view and refusing is the only answer that matches it.
"""

from __future__ import annotations

import contextlib
import io
import pathlib
import pickle
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _builders import Member, Pickle, build_zip, small_pickle, torch_zip

import ckptpeek
from ckptpeek.errors import CheckpointError, FormatError, UnsupportedError
from ckptpeek.io import zipdir
from ckptpeek.io.source import ByteSource
from ckptpeek.scan import scan

V = Member("archive/version", b"3\n")
#: a variant: (what, archive bytes, the marker module each candidate data.pkl names,
#: in central-directory order - or () when the variant is not about which data.pkl)
Variant = tuple[str, bytes, tuple[str, ...]]


def marker(tag: str) -> bytes:
    """A data.pkl whose only global is ``<tag>.mark`` (recorded, never resolved)."""
    p = Pickle().proto(2).empty_dict().str("view").glob(tag, "mark").empty_tuple().reduce()
    return bytes(p.setitem().stop())


A, B, C = marker("view_a"), marker("view_b"), marker("view_c")


def pkl(data: bytes, name: str = "archive/data.pkl", **kw: Any) -> Member:
    return Member(name, data, **kw)


def _cd_entries(data: bytes) -> Iterator[tuple[int, bytes, tuple[int, ...]]]:
    """(position, name, fields) of each central-directory entry."""
    pos = data.rindex(b"PK\x05\x06")
    pos = struct.unpack_from("<L", data, pos + 16)[0]
    while data[pos : pos + 4] == b"PK\x01\x02":
        f = struct.unpack_from("<4s6H3L5H2L", data, pos)
        yield pos, data[pos + 46 : pos + 46 + f[10]], f
        pos += 46 + f[10] + f[11] + f[12]


def _local_of(data: bytes, name: bytes) -> int:
    return next(f[16] for _p, n, f in _cd_entries(data) if n == name)


def patch(data: bytes, at: int, fmt: str, *values: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, at, *values)
    return bytes(out)


def shift(archive: bytes, n: int) -> bytes:
    """``archive`` with every offset moved by ``n``: the archive placed at byte ``n``."""
    out = bytearray(archive)
    eocd = out.rindex(b"PK\x05\x06")
    struct.pack_into("<L", out, eocd + 16, struct.unpack_from("<L", out, eocd + 16)[0] + n)
    for pos, _name, f in _cd_entries(archive):
        struct.pack_into("<L", out, pos + 42, f[16] + n)
    return bytes(out)


def with_comment(archive: bytes, comment: bytes) -> bytes:
    assert archive[-2:] == b"\0\0"
    return archive[:-2] + struct.pack("<H", len(comment)) + comment


def zip64_end(archive: bytes, *, rec_at: int | None = None, extra_rec: bytes = b"") -> bytes:
    """The archive with a ZIP64 end record and locator before its end record (as torch
    writes them); ``extra_rec`` goes right before the locator, ``rec_at`` is where the
    locator says the record is."""
    eocd = archive.rindex(b"PK\x05\x06")
    _s, _d, _c, _nh, n, size, offset, clen = struct.unpack_from("<4s4H2LH", archive, eocd)
    rec = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, size, offset)
    loc = struct.pack("<4sLQL", b"PK\x06\x07", 0, eocd if rec_at is None else rec_at, 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n, n, size, offset, clen)
    return archive[:eocd] + rec + extra_rec + loc + end + archive[eocd + 22 :]


def miniz_zip(
    members: list[tuple[str, bytes]],
    descriptor: Callable[[int, int, int, int], bytes] | None = None,
    *,
    past_4gib: bool = False,
) -> bytes:
    """Members laid out as torch's writer (miniz ``mz_zip_writer_add_mem_ex_v2``) lays
    them out: flags 0x808, zero crc and sizes in the local header, an ``FB`` extra field
    that pads the data to 64 bytes, then a data descriptor (``descriptor(index, crc,
    csize, size)``; by default the 16 bytes torch writes).

    ``past_4gib``: each member as torch writes one whose header is past 4 GiB (offsets
    here are small, the shape is that): the directory's header offset in a ZIP64 extra
    field, the local header's extra a ZIP64 field with that offset before the padding,
    a 24-byte descriptor."""
    out = bytearray()
    central = bytearray()
    for i, (name, data) in enumerate(members):
        raw = name.encode()
        crc = zlib.crc32(data)
        hoff = len(out)
        z64 = struct.pack("<2HQ", 1, 8, hoff) if past_4gib else b""
        pad = -(hoff + 30 + len(raw) + len(z64) + 4) % 64
        extra = z64 + b"FB" + struct.pack("<H", pad) + b"Z" * pad
        out += struct.pack(
            "<4s5H3L2H", b"PK\x03\x04", 20, 0x808, 0, 0, 0x21, 0, 0, 0, len(raw), len(extra)
        )
        out += raw + extra + data
        if descriptor is not None:
            out += descriptor(i, crc, len(data), len(data))
        elif past_4gib:
            out += struct.pack("<4sL2Q", b"PK\x07\x08", crc, len(data), len(data))
        else:
            out += struct.pack("<4s3L", b"PK\x07\x08", crc, len(data), len(data))
        central += struct.pack(
            "<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0x808, 0, 0, 0x21, crc, len(data), len(data),
            len(raw), len(z64), 0, 0, 0, 0, 0xFFFFFFFF if past_4gib else hoff,
        ) + raw + z64  # fmt: skip
    n = len(members)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n, n, len(central), len(out), 0)
    return bytes(out + central + end)


TORCH_LIKE = [
    ("archive/data.pkl", small_pickle()),
    ("archive/byteorder", b"little"),
    ("archive/data/0", struct.pack("<6f", *range(6))),
    ("archive/version", b"3\n"),
]


# ---------------------------------------------------------------------------------------
# the generators: one per class of trick
# ---------------------------------------------------------------------------------------


def duplicate_exact() -> Iterator[Variant]:
    """The same name twice: a dict keeps the last, torch's binary search finds either."""
    yield "data.pkl twice", build_zip([pkl(A), pkl(B), V]), ("view_a", "view_b")
    yield "data.pkl twice, version first", build_zip([V, pkl(A), pkl(B)]), ("view_a", "view_b")
    yield (
        "data.pkl three times",
        build_zip([pkl(A), V, pkl(B), pkl(C)]),
        (
            "view_a",
            "view_b",
            "view_c",
        ),
    )
    yield (
        "storage twice",
        torch_zip(small_pickle(), extra=[Member("archive/data/0", b"\1" * 24)]),
        (),
    )
    yield (
        "byteorder twice",
        torch_zip(small_pickle(), extra=[Member("archive/byteorder", b"big")]),
        (),
    )
    yield "unread member twice", build_zip([pkl(A), V, Member("archive/x", b"1"), Member("archive/x", b"2")]), ()  # fmt: skip


def duplicate_nul_twin() -> Iterator[Variant]:
    """A twin whose name continues after a NUL: the same name to C string functions."""
    yield (
        "data.pkl, data.pkl\\0x",
        build_zip([pkl(A), pkl(B, "archive/data.pkl\0x"), V]),
        (
            "view_a",
            "view_b",
        ),
    )
    yield (
        "data.pkl\\0x, data.pkl",
        build_zip([pkl(A, "archive/data.pkl\0x"), pkl(B), V]),
        (
            "view_a",
            "view_b",
        ),
    )
    yield "version\\0", build_zip([pkl(A), V, Member("archive/version\0", b"9\n")]), ()


def duplicate_case_twin() -> Iterator[Variant]:
    """Names equal ignoring ASCII case: one name to miniz (``MZ_TOLOWER``)."""
    yield (
        "data.pkl, DATA.PKL",
        build_zip([pkl(A), pkl(B, "archive/DATA.PKL"), V]),
        (
            "view_a",
            "view_b",
        ),
    )
    yield (
        "DATA.PKL, data.pkl",
        build_zip([pkl(A, "archive/DATA.PKL"), pkl(B), V]),
        (
            "view_a",
            "view_b",
        ),
    )
    yield (
        "Data.pkl, data.pkl, DATA.PKL",
        build_zip([pkl(A, "archive/Data.pkl"), pkl(B), pkl(C, "archive/DATA.PKL"), V]),
        ("view_a", "view_b", "view_c"),
    )
    yield (
        "byteorder, BYTEORDER",
        torch_zip(small_pickle(), extra=[Member("archive/BYTEORDER", b"big")]),
        (),
    )
    yield "data/0, DATA/0", torch_zip(small_pickle(), extra=[Member("archive/DATA/0", b"\1" * 24)]), ()  # fmt: skip


def nul_name() -> Iterator[Variant]:
    """A NUL byte in a name (no twin): torch lists ``constants.pkl\\0x`` as
    ``constants.pkl`` and takes the file for TorchScript."""
    yield "constants.pkl\\0x", torch_zip(small_pickle(), extra=[Member("archive/constants.pkl\0x", A)]), ()  # fmt: skip
    yield "NUL inside", torch_zip(small_pickle(), extra=[Member("archive/a\0b", b"1")]), ()
    yield "NUL in the folder", build_zip([pkl(A, "archive\0x/data.pkl"), V]), ()


def unsafe_name() -> Iterator[Variant]:
    """``..`` components and absolute names (extracting tools would write elsewhere)."""
    for name in (
        "archive/../evil.pkl",
        "archive/x/../../evil",
        "archive/..",
        "archive\\..\\evil",
        "/etc/evil",
        "\\evil",
        "C:/evil",
        "c:evil",
    ):
        yield name, torch_zip(small_pickle(), extra=[Member(name, b"1")]), ()
    yield "absolute first member", build_zip([pkl(A, "/archive/data.pkl"), V]), ()


def _patched_local(data: bytes, name: bytes, at: int, fmt: str, value: int) -> bytes:
    return patch(data, _local_of(data, name) + at, fmt, value)


def local_mismatch() -> Iterator[Variant]:
    """The local header says something else than the directory (name, method, flags,
    sizes or crc-32 without a data descriptor): readers that walk local headers see
    another archive. torch reads the directory's view."""
    base = torch_zip(small_pickle())
    m = b"archive/data.pkl"
    h = _local_of(base, m)
    yield "name", base[: h + 30] + b"archive/data.pkX" + base[h + 46 :], ()
    yield "method", _patched_local(base, m, 8, "<H", 8), ()
    yield "flags: encrypted", _patched_local(base, m, 6, "<H", 1), ()
    yield "flags: data descriptor", _patched_local(base, m, 6, "<H", 8), ()
    yield "crc-32", _patched_local(base, m, 14, "<L", 0), ()
    yield "compressed size", _patched_local(base, m, 18, "<L", 7), ()
    yield "size", _patched_local(base, m, 22, "<L", 7), ()
    s = b"archive/data/0"
    h = _local_of(base, s)
    yield "storage name", base[: h + 30] + b"archive/data/1" + base[h + 44 :], ()
    yield "storage size", _patched_local(base, s, 22, "<L", 8), ()
    # the ZIP64 sizes of a local header that disagree with the directory's
    z = torch_zip(small_pickle(), pkl_member=Member("archive/data.pkl", small_pickle(), zip64=True))
    assert z[:4] == b"PK\x03\x04"  # data.pkl's local header, its ZIP64 extra after the name
    yield "zip64 local size", patch(z, 30 + len(m) + 4, "<Q", 5), ()


def overlap() -> Iterator[Variant]:
    """Members whose bytes overlap each other or the directory: two names for one
    local header, a member hidden inside another's data, data running into the
    central directory or (once the local header is read) into the next member."""
    yield "two entries, one header", build_zip([pkl(A), V, pkl(A, "archive/x", claim_offset=0)]), ()
    # data.pkl's directory entry points at a local record inside archive/junk's data
    inner = struct.pack(
        "<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0x21, zlib.crc32(B), len(B), len(B), 16, 0
    )
    inner += b"archive/data.pkl" + B
    decoy = 30 + 16 + len(A)
    hidden = decoy + 30 + len("archive/junk")
    yield "member inside another's data", build_zip(
        [pkl(A, claim_offset=hidden, claim_size=len(B), claim_csize=len(B)), Member("archive/junk", inner), V]
    ), ()  # fmt: skip
    yield (
        "data into the central directory",
        build_zip([pkl(A), Member("archive/version", b"3\n", claim_size=60, claim_csize=60)]),
        (),
    )
    base = torch_zip(small_pickle())
    yield (
        "local extra into the next member",
        _patched_local(base, b"archive/data.pkl", 28, "<H", 40),
        (),
    )
    yield (
        "storage extra into the next member",
        _patched_local(base, b"archive/data/0", 28, "<H", 40),
        (),
    )


def double_end() -> Iterator[Variant]:
    """More than one plausible end record: the last one (torch's, and most readers')
    and another a reader could take; an archive hidden in the comment."""
    outer = build_zip([pkl(A), V])
    eocd = outer[-22:]
    yield "a copy of the end record in the comment", with_comment(outer, eocd[:20] + b"\0\0"), ()
    inner = build_zip([pkl(marker("view_hidden")), V])  # a pickle of another length
    yield (
        "an archive in the comment (absolute offsets)",
        with_comment(outer, shift(inner, len(outer))),
        (),
    )
    yield "an archive in the comment (its own offsets)", with_comment(outer, inner), ()
    yield "a local header in the comment", with_comment(outer, b"PK\x03\x04" + b"\0" * 26), ()
    yield "a directory entry in the comment", with_comment(outer, b"see PK\x01\x02"), ()
    # an end record (and directory) inside the last member's data, offsets absolute
    pre = build_zip([pkl(A), V, Member("archive/zzz", b"")])
    body = pre[: _local_of(pre, b"archive/zzz")] + b"PK\x03\x04"  # where zzz's record starts
    start = len(body) + 26 + len("archive/zzz")  # its data
    fake_cd = next(
        pre[p : p + 46 + len(n)] for p, n, _f in _cd_entries(pre) if n == b"archive/data.pkl"
    )
    fake_end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(fake_cd), start, 0)
    yield "an end record inside a member", build_zip([pkl(A), V, Member("archive/zzz", fake_cd + fake_end)]), ()  # fmt: skip
    z = zip64_end(outer)
    rec = z.index(b"PK\x06\x06")
    yield "two ZIP64 end records", zip64_end(outer, extra_rec=z[rec : rec + 56], rec_at=rec), ()
    yield "end record and ZIP64 record disagree", patch(z, len(z) - 22 + 10, "<H", 1), ()


def encrypted() -> Iterator[Variant]:
    """Encryption flags (bit 0, 6; bit 13 masks the local headers): torch's reader
    refuses to read such a member; ckptpeek used to read an encrypted storage as plain."""
    ts = small_pickle()
    storage = Member("archive/data/0", bytes(24), flags=1)
    yield "storage, bit 0", build_zip([pkl(ts), Member("archive/byteorder", b"little"), storage, V]), ()  # fmt: skip
    yield "data.pkl, bit 6", torch_zip(ts, pkl_member=pkl(ts, flags=0x40)), ()
    yield "version, bit 13", torch_zip(ts, extra=[Member("archive/x", b"1", flags=0x2000)]), ()
    yield "empty member, bit 0", torch_zip(ts, extra=[Member("archive/x", b"", flags=1)]), ()


def lying_descriptor() -> Iterator[Variant]:
    """A data descriptor (bit 3) that does not repeat the directory's crc-32 and sizes:
    a streaming reader takes its sizes from it."""

    def lie(field: int, value: int) -> Callable[[int, int, int, int], bytes]:
        def write(i: int, crc: int, cs: int, us: int) -> bytes:
            vals = [crc, cs, us]
            if i == 0:
                vals[field] = value
            return struct.pack("<4s3L", b"PK\x07\x08", *vals)

        return write

    yield "crc-32", miniz_zip(TORCH_LIKE, lie(0, 1)), ()
    yield "compressed size", miniz_zip(TORCH_LIKE, lie(1, 5)), ()
    yield "size", miniz_zip(TORCH_LIKE, lie(2, 5)), ()
    yield (
        "zip64 sizes",
        miniz_zip(
            TORCH_LIKE,
            lambda i, c, cs, us: struct.pack("<4sL2Q", b"PK\x07\x08", c, cs, us + (i == 0)),
        ),
        (),
    )
    yield "junk", miniz_zip(TORCH_LIKE, lambda i, c, cs, us: b"\xee" * 16), ()
    yield "byteorder's", miniz_zip(TORCH_LIKE, lambda i, c, cs, us: struct.pack("<4s3L", b"PK\x07\x08", c, cs, us + (i == 1))), ()  # fmt: skip


def stray_member() -> Iterator[Variant]:
    """A member outside the first member's folder: ``torch.load`` lists every member
    (``get_all_records``) and refuses the archive."""
    yield "another folder", torch_zip(small_pickle(), extra=[Member("other/x", b"1")]), ()
    yield "top level", torch_zip(small_pickle(), extra=[Member("x", b"1")]), ()
    yield (
        "same folder, other case",
        torch_zip(small_pickle(), extra=[Member("ARCHIVE/x", b"1")]),
        (),
    )


def torch_folder() -> Iterator[Variant]:
    """torch takes the archive's folder from its first member, and needs ``version``."""
    yield "data.pkl not in the first member's folder", build_zip([Member("other/version", b"3\n"), pkl(A), V]), ()  # fmt: skip
    yield "first member in no folder", build_zip([Member("version", b"3\n"), pkl(A), V]), ()


def no_version() -> Iterator[Variant]:
    yield "no version record", build_zip([pkl(A), Member("archive/byteorder", b"little")]), ()
    yield "version in another folder", build_zip([pkl(A), Member("archive/x/version", b"3\n")]), ()


def stored_sizes() -> Iterator[Variant]:
    """STORED with a compressed size other than its size (both headers agreeing): miniz
    refuses the archive at open when the DOS time is 0 (as torch and these builders
    write it), else reads ``size`` bytes; zipfile reads the compressed size."""
    yield (
        "stored 10 in 12",
        build_zip([pkl(A), V, Member("archive/x", b"0" * 12, claim_size=10)]),
        (),
    )
    yield (
        "stored 12 in 10",
        build_zip([pkl(A), V, Member("archive/x", b"0" * 10, claim_size=12)]),
        (),
    )
    yield "empty, 5 stored", build_zip([pkl(A), V, Member("archive/x", b"12345", claim_size=0)]), ()  # fmt: skip
    yield "data.pkl", torch_zip(small_pickle(), pkl_member=pkl(small_pickle(), claim_size=5)), ()
    z = torch_zip(small_pickle(), extra=[Member("archive/x", b"0" * 12, claim_size=10)])
    at = next(p for p, n, _f in _cd_entries(z) if n == b"archive/x")
    yield "stored 10 in 12, DOS time set (miniz reads 10)", patch(z, at + 12, "<H", 0x6000), ()


def with_attributes(archive: bytes, name: bytes, external: int) -> bytes:
    """``archive`` with the external attributes of ``name``'s directory entry set."""
    at = next(p for p, n, _f in _cd_entries(archive) if n == name)
    return patch(archive, at + 38, "<L", external)


def directory_member() -> Iterator[Variant]:
    """A member miniz takes for a directory (``mz_zip_reader_is_file_a_directory``: the
    MS-DOS directory attribute 0x10, whatever the "made by" system, or a name ending in
    "/") that holds bytes: miniz extracts none of them, so torch returns the buffer it
    allocated for them - uninitialised memory - where another reader returns the bytes."""
    # (only members torch reads whatever their bytes: torch's outcome with a data.pkl or
    # version of uninitialised memory would depend on that memory)
    base = torch_zip(small_pickle())
    yield "storage, attribute 0x10", with_attributes(base, b"archive/data/0", 0x10), ()
    yield "the fuzzer's 0x5a5a5a", with_attributes(base, b"archive/data/0", 0x5A5A5A), ()
    unix_dir = (0o40755 << 16) | 0x10  # what zip tools write for a directory on Unix
    yield "Unix mode and the DOS bit", with_attributes(base, b"archive/data/0", unix_dir), ()
    yield "an unread member x/", torch_zip(small_pickle(), extra=[Member("archive/x/", b"1")]), ()  # fmt: skip
    # a storage whose key ends in "/": torch looks up archive/data/0/, a directory to miniz
    slash = small_pickle().replace(b"X\x01\x00\x00\x000", b"X\x02\x00\x00\x000/")
    members = [pkl(slash), Member("archive/data/0/", struct.pack("<6f", *range(6))), V]
    yield "storage key '0/'", build_zip(members), ()


#: class -> (error class, code, generator)
TRICKS: dict[str, tuple[type[CheckpointError], str, Callable[[], Iterator[Variant]]]] = {
    "duplicate-exact": (FormatError, "zip-duplicate-name", duplicate_exact),
    "duplicate-nul-twin": (FormatError, "zip-duplicate-name", duplicate_nul_twin),
    "duplicate-case-twin": (FormatError, "zip-duplicate-name", duplicate_case_twin),
    "nul-name": (FormatError, "zip-nul-name", nul_name),
    "unsafe-name": (FormatError, "zip-unsafe-name", unsafe_name),
    "local-mismatch": (FormatError, "zip-local-mismatch", local_mismatch),
    "overlap": (FormatError, "zip-overlap", overlap),
    "double-end": (FormatError, "zip-multiple-eocd", double_end),
    "encrypted": (UnsupportedError, "zip-encrypted", encrypted),
    "lying-descriptor": (FormatError, "zip-bad-data-descriptor", lying_descriptor),
    "stray-member": (FormatError, "zip-stray-member", stray_member),
    "torch-folder": (FormatError, "zip-no-data-pkl", torch_folder),
    "no-version": (FormatError, "zip-missing-member", no_version),
    "stored-sizes": (FormatError, "zip-stored-size-mismatch", stored_sizes),
    "directory-member": (FormatError, "zip-directory-member", directory_member),
}
DUPLICATES = ("duplicate-exact", "duplicate-nul-twin", "duplicate-case-twin")


def variants(trick: str) -> list[Variant]:
    out = list(TRICKS[trick][2]())
    assert len(out) >= 2 and len({what for what, _d, _m in out}) == len(out), trick
    return out


# ---------------------------------------------------------------------------------------
# ckptpeek: every variant refused, with its class's code
# ---------------------------------------------------------------------------------------


def consume(ckpt: Any) -> None:
    for _key, ref in list(ckpt.tensors()):
        ref.numpy()
    ckpt.globals()


@pytest.fixture(params=["C", "pure"])
def zip_parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "C":
        if not zipdir.NATIVE:
            pytest.skip(f"the C ZIP directory parser is not built ({zipdir.NATIVE_ERROR})")
    else:
        monkeypatch.setattr(zipdir, "_native", None)
    return str(request.param)


@pytest.mark.parametrize("trick", sorted(TRICKS))
def test_trick_is_refused(engine: str, zip_parser: str, tmp_path: pathlib.Path, trick: str) -> None:
    """Refused by ckptpeek.open - at open, or (a storage's or byteorder's local header or
    descriptor) when that member is read - and then by ``scan`` / ``verify()``."""
    cls, code, _gen = TRICKS[trick]
    for what, data, _markers in variants(trick):
        path = tmp_path / "trick.ckpt"
        path.write_bytes(data)
        at_open = True
        with pytest.raises(CheckpointError) as info:
            with ckptpeek.open(path, engine=engine) as ckpt:
                at_open = False
                consume(ckpt)
        err = info.value
        assert type(err) is cls and err.code == code, f"{trick}: {what}: {err.code}: {err}"
        assert err.path == str(path) and str(path) in str(err), (what, str(err))
        if zip_parser == "C" and engine == "native":  # once per variant is enough
            if at_open:
                report = scan(path)
                assert report.verdict == "refused" and report.error is not None, (what, report)
                assert report.error.code == code, (what, report.error)
            else:  # a lie in a member read on demand: verify() finds it without reading data
                with zipdir_of(data) as directory, pytest.raises(CheckpointError) as info:
                    directory.verify()
                assert info.value.code == code, (what, info.value)


@contextlib.contextmanager
def zipdir_of(data: bytes) -> Iterator[zipdir.ZipDirectory]:
    with ByteSource(io.BytesIO(data)) as src:
        yield zipdir.read_directory(src)


def test_verify_passes_real_layouts() -> None:
    for data in (
        torch_zip(small_pickle()),
        miniz_zip(TORCH_LIKE),
        miniz_zip(TORCH_LIKE, past_4gib=True),
        build_zip([pkl(A), V]),
    ):
        with zipdir_of(data) as directory:
            directory.verify()


def test_the_untricked_archives_open(engine: str) -> None:
    """What the generators start from reads fine: the refusals are the tricks'."""
    for data in (
        build_zip([pkl(A), V]),
        build_zip([V, pkl(A)]),
        torch_zip(small_pickle()),
        torch_zip(
            small_pickle(), pkl_member=Member("archive/data.pkl", small_pickle(), zip64=True)
        ),
        miniz_zip(TORCH_LIKE),
        miniz_zip(TORCH_LIKE, lambda i, c, cs, us: struct.pack("<3L", c, cs, us)),  # no signature
        miniz_zip(TORCH_LIKE, lambda i, c, cs, us: struct.pack("<4sL2Q", b"PK\x07\x08", c, cs, us)),
        miniz_zip(TORCH_LIKE, past_4gib=True),
        zip64_end(miniz_zip(TORCH_LIKE, past_4gib=True)),
        zip64_end(build_zip([pkl(A), V])),
        with_comment(build_zip([pkl(A), V]), b"a comment, no records"),
        torch_zip(
            small_pickle(), extra=[Member("archive/..x", b"1"), Member("archive/a..b/c", b"")]
        ),
    ):
        with ckptpeek.open(io.BytesIO(data), engine=engine) as ckpt:
            consume(ckpt)


def test_case_is_ignored_like_torch(engine: str) -> None:
    """A lone ``BYTEORDER`` is torch's byteorder record (and ``DATA.PKL`` its pickle):
    the lookup ignores ASCII case, as ``mz_zip_reader_locate_file`` does."""
    big = torch_zip(small_pickle(), storage=struct.pack(">6f", *range(6)))
    data = big.replace(b"archive/byteorder", b"archive/BYTEORDER").replace(b"little", b"big\n\n\n")
    with ckptpeek.open(io.BytesIO(data), engine=engine) as ckpt:
        assert ckpt.root["w"].numpy().ravel().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    upper = build_zip([pkl(A, "archive/DATA.PKL"), V])
    with ckptpeek.open(io.BytesIO(upper), engine=engine) as ckpt:
        assert [str(g) for g in ckpt.globals()] == ["view_a.mark"]


def test_an_embedded_archive_is_no_second_end_record(engine: str) -> None:
    """A checkpoint that holds another archive's bytes (its offsets its own) near its
    end is not refused: that end record's directory is not where it says."""
    inner = build_zip([pkl(B), V])
    p = Pickle().proto(2).empty_dict().str("blob")
    p.raw(b"B" + struct.pack("<L", len(inner)) + inner)  # BINBYTES
    data = build_zip([pkl(bytes(p.setitem().stop())), V])
    assert data.count(b"PK\x05\x06") == 2
    with ckptpeek.open(io.BytesIO(data), engine=engine) as ckpt:
        assert ckpt.root["blob"] == inner


# ---------------------------------------------------------------------------------------
# the differential: what torch.load does with the same bytes
# ---------------------------------------------------------------------------------------


class Recorder:
    """A pickle module for torch.load that records each global and resolves none."""

    seen: list[tuple[str, str]] = []

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            Recorder.seen.append((module, name))
            return lambda *a, **k: (module, name)

    load = pickle.load


def torch_view(data: bytes) -> tuple[str, Any]:
    """``("reads", [globals])`` or ``("refuses", message)``."""
    torch = pytest.importorskip("torch")
    Recorder.seen = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.load(io.BytesIO(data), weights_only=False, pickle_module=Recorder)
    except Exception as exc:  # noqa: BLE001 - whatever torch raises is its refusal
        return "refuses", f"{type(exc).__name__}: {exc}"
    return "reads", [m for m, _n in Recorder.seen if m.startswith("view_")]


@pytest.mark.parametrize("trick", DUPLICATES)
def test_which_twin_torch_reads(trick: str) -> None:
    """torch reads one of the twins - which one depends on how they sort, not on their
    order: a reader that picks the first (or the last) disagrees with torch on some
    variant. ckptpeek refuses them all (test_trick_is_refused)."""
    picked = {}
    for what, data, markers in variants(trick):
        if not markers:
            continue
        outcome, seen = torch_view(data)
        assert outcome == "reads" and len(seen) == 1 and seen[0] in markers, (what, seen)
        picked[what] = markers.index(seen[0])
    assert picked == TORCH_PICKS[trick], picked
    if trick != "duplicate-nul-twin":
        last = {what: len(m) - 1 for what, _d, m in variants(trick) if m}
        assert any(i != 0 for i in picked.values()), "torch read the first twin every time"
        assert any(i != last[w] for w, i in picked.items()), "torch read the last every time"


#: which twin (by central-directory position) torch 2.13 reads in each variant
TORCH_PICKS = {
    "duplicate-exact": {
        "data.pkl twice": 0,
        "data.pkl twice, version first": 1,
        "data.pkl three times": 1,
    },
    # miniz compares whole stored names: the twin without the NUL, wherever it is
    "duplicate-nul-twin": {"data.pkl, data.pkl\\0x": 0, "data.pkl\\0x, data.pkl": 1},
    "duplicate-case-twin": {
        "data.pkl, DATA.PKL": 0,
        "DATA.PKL, data.pkl": 0,
        "Data.pkl, data.pkl, DATA.PKL": 2,
    },
}


#: what torch.load does with each variant of the other classes (the evidence)
TORCH_REFUSES: dict[str, str | set[str]] = {
    "stray-member": "all",
    "torch-folder": "all",
    "no-version": "all",
    # miniz refuses the archive when the DOS time is 0 too (one 32-bit test of method and
    # time), else reads `size` bytes
    "stored-sizes": {"stored 10 in 12", "stored 12 in 10", "empty, 5 stored", "data.pkl"},
    "directory-member": set(),  # torch returns uninitialised memory for the member
    "local-mismatch": set(),  # torch reads the directory's view, whatever the local header says
    "lying-descriptor": set(),  # torch never reads a descriptor
    "encrypted": {"storage, bit 0", "data.pkl, bit 6", "version, bit 13"},
    "double-end": {"an archive in the comment (its own offsets)"},
    "overlap": {"local extra into the next member"},  # data.pkl shifted: not a pickle
    "nul-name": {"constants.pkl\\0x", "NUL in the folder"},
    # outside the archive's folder (torch.load lists every member), or no version
    "unsafe-name": {
        "archive\\..\\evil",
        "/etc/evil",
        "\\evil",
        "C:/evil",
        "c:evil",
        "absolute first member",
    },
}


@pytest.mark.parametrize("trick", sorted(set(TRICKS) - set(DUPLICATES)))
def test_what_torch_does(trick: str) -> None:
    """Every variant torch refuses ckptpeek refuses too; the others torch reads, taking
    one view where another reader takes another (and ckptpeek refuses them)."""
    refused = TORCH_REFUSES[trick]
    outcomes = {what: torch_view(data) for what, data, _m in variants(trick)}
    for what, (outcome, detail) in outcomes.items():
        expect = "refuses" if refused == "all" or what in refused else "reads"
        assert outcome == expect, f"{trick}: {what}: torch {outcome}: {detail}"
    if trick == "double-end":  # torch reads the archive hidden in the comment
        assert outcomes["an archive in the comment (absolute offsets)"] == (
            "reads",
            ["view_hidden"],
        )
    if trick == "overlap":  # and the member hidden in another's data, not the decoy
        assert outcomes["member inside another's data"] == ("reads", ["view_b"])
