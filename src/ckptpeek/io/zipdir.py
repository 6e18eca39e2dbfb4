"""A small, header-only ZIP reader: the central directory, and members on demand.

Written for torch's archives (PKWARE APPNOTE 6.3.x): members are written with data
descriptors, so sizes are trusted only from the central directory (§4.3.12); archives
over 4 GiB or 65,535 members use the ZIP64 end record and locator (§4.3.14-4.3.15) and
ZIP64 extra fields (§4.5.3). A member's data offset needs its local header (§4.3.7),
which is read only when that member's bytes are wanted. STORED and DEFLATE members can
be read; storage members in torch files are always STORED (and 64-byte aligned).

One view of the file, the one torch's reader (miniz, ``mz_zip_reader_*`` with flags 0)
takes, or a refusal: the central directory is a list of records (``ZipDirectory.records``,
in directory order), found from the last end record, at the absolute offsets it states;
a name is looked up the way ``mz_zip_reader_locate_file`` does (its UTF-8 bytes, ASCII
case ignored), and no two records may answer the same lookup. Anything that would let
another reader see other members or other bytes is refused: a second plausible end
record or a comment holding ZIP records, records torch cannot tell apart (the same name,
equal up to a NUL byte or ignoring ASCII case), NUL bytes, ``..`` components or absolute
names, members that overlap each other or the directory, encryption flags, a STORED
member with two sizes, a member miniz takes for a directory that holds bytes, and - when
a member is read - a local header or a data descriptor that disagrees with the directory.
A ZIP64 locator that points at no ZIP64 end record is read as miniz reads it: the 32-bit
end record counts, if it has all the values (and a ZIP64 record before the locator,
which ``zipfile`` takes, says the same).
"""

from __future__ import annotations

import collections
import struct
import zlib

from ckptpeek import _extensions
from ckptpeek.errors import CheckpointError, error
from ckptpeek.limits import DEFAULT_LIMITS

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Final

    from .source import ReadableSource

__all__ = ("ZipMember", "ZipDirectory", "read_directory", "NATIVE", "NATIVE_ERROR")

# the central-directory parser in C (native/io/_zipdir_c.pyx), when built
_native, NATIVE_ERROR = _extensions.load(f"{__package__}._zipdir_c")
#: whether read_directory parses in C by default
NATIVE: Final = _native is not None

_EOCD_SIG: Final = b"PK\x05\x06"
_EOCD64_LOC_SIG: Final = b"PK\x06\x07"
_EOCD64_SIG: Final = b"PK\x06\x06"
_CDIR_SIG: Final = b"PK\x01\x02"
_LOCAL_SIG: Final = b"PK\x03\x04"
_DESCRIPTOR_SIG: Final = b"PK\x07\x08"
#: the records an archive comment must not hold (it would hide another archive)
_RECORD_SIGS: Final = (
    _LOCAL_SIG,
    _CDIR_SIG,
    _EOCD_SIG,
    _EOCD64_SIG,
    _EOCD64_LOC_SIG,
    _DESCRIPTOR_SIG,
)
_EOCD = struct.Struct("<4s4H2LH")  # 22 bytes, followed by the archive comment
_EOCD64_LOC = struct.Struct("<4sLQL")  # 20 bytes
_EOCD64 = struct.Struct("<4sQ2H2L4Q")  # 56 bytes
_CDIR = struct.Struct("<4s6H3L5H2L")  # 46 bytes, then name, extra, comment
_LOCAL = struct.Struct("<4s5H3L2H")  # 30 bytes, then name, extra
_MAX_COMMENT: Final = 0xFFFF
#: the largest central-directory entry: a name, an extra field and a comment of 64 KiB
_MAX_CDIR_ENTRY: Final = _CDIR.size + 3 * 0xFFFF
_STORED: Final = 0
_DEFLATED: Final = 8
_FLAG_ENCRYPTED: Final = 0x0001  # §4.4.4 bit 0
_FLAG_DESCRIPTOR: Final = 0x0008  # bit 3: crc and sizes follow the data
_FLAG_STRONG_ENCRYPTION: Final = 0x0040  # bit 6
_FLAG_UTF8: Final = 0x0800  # bit 11
_FLAG_MASKED: Final = 0x2000  # bit 13: local header values masked (encrypted directory)
_FLAG_PATCHED: Final = 0x0020  # bit 5: compressed patched data (miniz refuses it)
#: the MS-DOS directory bit of the external attributes (§4.4.15): with it, or a name that
#: ends in "/", miniz (mz_zip_reader_is_file_a_directory) extracts no byte of a member
_DOS_DIRECTORY: Final = 0x10
_ENCRYPTION_FLAGS: Final = _FLAG_ENCRYPTED | _FLAG_STRONG_ENCRYPTION | _FLAG_MASKED
#: the flags that change how a member's bytes are read: local and central must agree
#: (bits 1-2, compression options, do not; bit 11 matters for non-ASCII names only)
_READ_FLAGS: Final = _ENCRYPTION_FLAGS | _FLAG_DESCRIPTOR | _FLAG_PATCHED
_MIN_DESCRIPTOR: Final = 12  # crc-32 and two 4-byte sizes, without the optional signature
_MAX_DESCRIPTOR: Final = 24  # signature, crc-32 and two 8-byte sizes (ZIP64)
# The tail read at open: EOCD + a full-length comment + the ZIP64 locator and record
# (the whole window a reader searches, APPNOTE §4.3.16), and, for the common case, the
# whole central directory in the same read.
_TAIL_READ: Final = _EOCD.size + _MAX_COMMENT + _EOCD64_LOC.size + _EOCD64.size


ZipMember = collections.namedtuple(
    "ZipMember",
    "name method compressed_size size header_offset flags crc raw_name limit",
)
ZipMember.__doc__ = """One central-directory record, as the directory states it.

``raw_name`` is the name's bytes (what torch compares), ``name`` their text (UTF-8 with
flag bit 11, else cp437). ``limit`` is where the next record starts (the next member's
local header, or the central directory): this member's header, data and data descriptor
must end there."""


class ZipDirectory:
    """The members of a ZIP archive, read from its central directory.

    ``records`` are the central-directory entries in directory order; ``get(name)`` finds
    one the way torch does (see :func:`read_directory`). ``data_offset(member)`` reads a
    member's local header (once) to find where its data starts; ``read(member)`` returns
    its (decompressed) bytes. Members are given by name or as a :class:`ZipMember`.
    """

    def __init__(
        self,
        source: ReadableSource,
        records: list[ZipMember],
        index: dict[bytes, ZipMember],
    ) -> None:
        self.source = source
        self.records: tuple[ZipMember, ...] = tuple(records)
        self._index = index  # ASCII-lowercased name bytes -> record (unique: checked)
        self._data_offsets: dict[int, int] = {}  # header offset -> data offset, once read
        #: torch's archive folder, once ``formats.torch_zip.find_prefix`` has checked it
        self.torch_prefix: str | None = None

    def __iter__(self) -> Iterator[ZipMember]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None

    def names(self) -> list[str]:
        return [m.name for m in self.records]

    def get(self, name: str) -> ZipMember | None:
        """The record torch's reader finds for ``name``: ``mz_zip_reader_locate_file``
        compares the name's UTF-8 bytes ignoring ASCII case. No two records answer the
        same name (``read_directory`` refuses such archives), so this is never a choice."""
        try:
            key = name.encode("utf-8").lower()  # bytes.lower(): ASCII only, as miniz's
        except UnicodeEncodeError:  # a lone surrogate: torch cannot ask for it either
            return None
        return self._index.get(key)

    def member(self, name: str | ZipMember) -> ZipMember:
        """The record for ``name`` (or ``name`` itself); ``zip-missing-member`` if none."""
        if isinstance(name, ZipMember):
            return name
        m = self.get(name)
        if m is None:
            raise error(
                "zip-missing-member", f"archive has no member {name!r}", path=self.source.path
            )
        return m

    def cached_data_offset(self, member: ZipMember) -> int | None:
        """Where ``member``'s data starts, if its local header was read already."""
        return self._data_offsets.get(member.header_offset)

    def _error(
        self, msg: str, code: str, offset: int | None, member: str | None = None
    ) -> CheckpointError:
        return error(code, msg, path=self.source.path, member=member, offset=offset)

    def data_offset(self, name: str | ZipMember, *, prefetch: int = 0) -> tuple[int, bytes]:
        """Absolute file offset of the member's data, plus up to ``prefetch`` bytes of it.

        Reading the local header and the start of the data in one call saves a round
        trip for small members such as ``data.pkl``. The local header must agree with
        the central directory (name, method, flags, and crc-32 and sizes when there is no
        data descriptor), and the data must end before the next record.
        """
        m = self.member(name)
        start = m.header_offset
        extra_guess = 64 + len(m.raw_name)  # torch pads local extras to align data
        head = self.source.read_at(
            start,
            _LOCAL.size + extra_guess + prefetch,
            what="local header",
            member=m.name,
            exact=False,
        )
        if len(head) < _LOCAL.size:
            raise self._error(
                "local header runs past the end of the file", "truncated", start, m.name
            )
        sig, _ver, flags, method, _t, _d, crc, csize, usize, nlen, xlen = _LOCAL.unpack_from(head)
        if sig != _LOCAL_SIG:
            raise self._error(
                f"bad local header signature {sig!r} for member {m.name!r}",
                "zip-bad-local-header",
                start,
                m.name,
            )
        skip = _LOCAL.size + nlen + xlen
        if len(head) < skip:  # a long name or extra field: read the rest of the header
            head = self.source.read_at(
                start, skip + prefetch, what="local header", member=m.name, exact=False
            )
            if len(head) < skip:
                raise self._error(
                    "local header runs past the end of the file", "truncated", start, m.name
                )
        self._check_local(m, head, flags, method, crc, csize, usize, nlen, xlen)
        offset = start + skip
        if offset + m.compressed_size > self.source.size:
            raise self._error(
                f"member {m.name!r} claims {m.compressed_size} bytes at {offset} but the "
                f"file ends at {self.source.size}",
                "truncated",
                offset,
                m.name,
            )
        if offset + m.compressed_size > m.limit:
            raise self._error(
                f"member {m.name!r}: its data (bytes {offset}..{offset + m.compressed_size}, "
                f"after a {skip}-byte local header at {start}) runs into the next record at "
                f"byte {m.limit}",
                "zip-overlap",
                None,
                m.name,
            )
        self._data_offsets[start] = offset
        return offset, head[skip : skip + prefetch]

    def _check_local(
        self,
        m: ZipMember,
        head: bytes,
        flags: int,
        method: int,
        crc: int,
        csize: int,
        usize: int,
        nlen: int,
        xlen: int,
    ) -> None:
        """The local header says what the central directory says (APPNOTE §4.3.7 vs §4.3.12)."""
        name = head[_LOCAL.size : _LOCAL.size + nlen]
        what = None
        if name != m.raw_name:
            what = f"name {name!r}, the central directory {m.raw_name!r}"
        elif method != m.method:
            what = f"compression method {method}, the central directory {m.method}"
        elif (flags ^ m.flags) & (_READ_FLAGS if name.isascii() else _READ_FLAGS | _FLAG_UTF8):
            what = f"flags {flags:#06x}, the central directory {m.flags:#06x}"
        elif not m.flags & _FLAG_DESCRIPTOR:
            if 0xFFFFFFFF in (csize, usize):
                extra = head[_LOCAL.size + nlen : _LOCAL.size + nlen + xlen]
                usize, csize = _local_zip64_sizes(extra, usize, csize)
            if (crc, csize, usize) != (m.crc, m.compressed_size, m.size):
                what = (
                    f"crc-32 {crc:#010x}, {csize} bytes stored, {usize} bytes; the central "
                    f"directory {m.crc:#010x}, {m.compressed_size}, {m.size}"
                )
        if what is not None:
            raise self._error(
                f"the local header of member {m.name!r} (at byte {m.header_offset}) says {what}",
                "zip-local-mismatch",
                None,
                m.name,
            )

    def _check_descriptor(self, m: ZipMember, raw: bytes, at: int) -> None:
        """The data descriptor after a member's data (bit 3) repeats its directory entry."""
        want = (m.crc, m.compressed_size, m.size)
        room = m.limit - at
        forms = [(4, "<3L"), (4, "<L2Q")] if raw[:4] == _DESCRIPTOR_SIG else []
        forms += [(0, "<3L"), (0, "<L2Q")]
        for skip, fmt in forms:
            n = skip + struct.calcsize(fmt)
            if n <= min(len(raw), room) and struct.unpack_from(fmt, raw, skip) == want:
                return
        raise self._error(
            f"member {m.name!r}: the data descriptor at byte {at} "
            f"({raw[: min(len(raw), room, _MAX_DESCRIPTOR)].hex()}) does not repeat the "
            f"central directory's crc-32 {m.crc:#010x} and sizes {m.compressed_size}/{m.size}",
            "zip-bad-data-descriptor",
            None,
            m.name,
        )

    def verify(self) -> None:
        """Check every member as reading it would - its local header against the
        directory, where its data ends, its data descriptor - without reading its data
        (two small reads per member): for a tool that vouches for the whole file. Opening
        a checkpoint checks only the members it reads, when it reads them."""
        for m in self.records:
            offset, _ = self.data_offset(m)
            if m.flags & _FLAG_DESCRIPTOR:
                at = offset + m.compressed_size
                raw = self.source.read_at(
                    at,
                    min(_MAX_DESCRIPTOR, m.limit - at),
                    what="data descriptor",
                    member=m.name,
                    exact=False,
                )
                self._check_descriptor(m, raw, at)

    def read(self, name: str | ZipMember, *, max_size: int | None = None) -> bytes:
        """The whole (decompressed) content of a member; ``max_size`` guards allocation.

        A member written with a data descriptor has it checked against the directory."""
        m = self.member(name)
        if max_size is not None and max(m.size, m.compressed_size) > max_size:
            raise error(
                "limit-member-size",
                f"member {m.name!r} is {m.size} bytes, over the limit of {max_size}",
                path=self.source.path,
                member=m.name,
            )
        described = bool(m.flags & _FLAG_DESCRIPTOR)
        want = m.compressed_size + (_MAX_DESCRIPTOR if described else 0)
        offset, data = self.data_offset(m, prefetch=want)
        end = offset + m.compressed_size
        want = min(want, self.source.size - offset, m.limit - offset)
        if len(data) < want:
            data += self.source.read_at(
                offset + len(data), want - len(data), what=f"member {m.name!r}", member=m.name
            )
        if described:
            self._check_descriptor(m, data[m.compressed_size :], end)
        data = data[: m.compressed_size]
        if m.method == _STORED:
            return data
        if m.method == _DEFLATED:
            d = zlib.decompressobj(-15)
            try:
                # max_length bounds the output to what the directory promised (zip bombs)
                out = d.decompress(data, m.size)
            except zlib.error as exc:
                raise self._error(
                    f"member {m.name!r} does not inflate: {exc}", "zip-bad-deflate", offset, m.name
                ) from exc
            if len(out) != m.size or d.unconsumed_tail:
                raise self._error(
                    f"member {m.name!r} inflates to a size other than the "
                    f"{m.size} bytes the directory states",
                    "zip-bad-deflate",
                    offset,
                    m.name,
                )
            return out
        raise error(
            "zip-compression",
            f"member {m.name!r} uses compression method {m.method}",
            path=self.source.path,
            member=m.name,
        )


def read_directory(
    source: ReadableSource,
    *,
    max_members: int = DEFAULT_LIMITS.max_zip_members,
    max_directory_bytes: int = DEFAULT_LIMITS.max_directory_bytes,
    native: bool | None = None,
) -> ZipDirectory:
    """Find the end-of-central-directory record and parse the central directory.

    The view taken is torch's: the last end record in the final 64 KiB (§4.3.16), its
    ZIP64 record where its locator points (the 32-bit record when no ZIP64 record is
    there, as miniz does), the directory at the absolute offset stated
    (no bytes before the archive: torch reads none), every record checked as described in
    the module docstring.

    ``native`` (default: when built) parses well-formed directories in C; the C parser
    returns ``None`` at anything unusual (ZIP64 fields, non-ASCII names, any
    inconsistency), which this module then parses - and reports. Both give the same
    directory (``tests/test_zipdir.py`` checks it).

    Raises:
        FormatError: ``zip-no-eocd``, ``zip-bad-central-dir``, ``zip-multiple-eocd``,
            ``zip-duplicate-name``, ``zip-nul-name``, ``zip-unsafe-name``,
            ``zip-overlap``, ``zip-stored-size-mismatch``, ``zip-directory-member``,
            ``truncated``.
        UnsupportedError: ``zip-encrypted``, ``zip-multidisk``.
        LimitError: ``limit-zip-members``, ``limit-directory-size``.
    """
    size = source.size
    tail_len = min(size, _TAIL_READ)
    tail_start = size - tail_len
    tail = source.read_at(tail_start, tail_len, what="end of central directory")
    source.keep(tail_start, tail)
    # Every end-record signature a reader could take: the last one within the final
    # 22 + 65,535 bytes with room for the record (§4.3.16) is the one torch takes.
    candidates = []
    window = max(0, len(tail) - _EOCD.size - _MAX_COMMENT)
    end = len(tail)
    while (pos := tail.rfind(_EOCD_SIG, window, end)) >= 0:
        if pos + _EOCD.size <= len(tail):
            candidates.append(pos)
        end = pos
    if not candidates:
        raise error(
            "zip-no-eocd", "no ZIP end-of-central-directory record", path=source.path, offset=size
        )
    pos = candidates[0]
    eocd_off = tail_start + pos
    (_sig, disk, cd_disk, n_here, n_total, cd_size, cd_offset, clen) = _EOCD.unpack_from(tail, pos)
    _check_single_end(source, tail, tail_start, pos, candidates[1:])
    cd_end = eocd_off  # where the central directory must end (before any ZIP64 records)
    loc_pos = pos - _EOCD64_LOC.size
    if loc_pos >= 0 and tail[loc_pos : loc_pos + 4] == _EOCD64_LOC_SIG:
        found = _zip64_end_of(source, tail, tail_start, pos)
        if found is None:
            raise error(
                "zip-bad-central-dir",
                f"the ZIP64 end-of-central-directory locator points at byte "
                f"{_EOCD64_LOC.unpack_from(tail, loc_pos)[2]}, past the end of the file "
                f"({size} bytes)",
                path=source.path,
                offset=tail_start + loc_pos,
            )
        eocd64_off, rec = found
        if rec is None:
            cd_end = _check_ignored_locator(source, tail, tail_start, pos, eocd64_off)
        else:
            fields = _EOCD64.unpack_from(rec)
            _check_zip64_end(source, tail, tail_start, loc_pos, eocd64_off, fields, eocd_off)
            (_s, _rs, _vm, _vn, disk, cd_disk, n_here, n_total, cd_size, cd_offset) = fields
            cd_end = eocd64_off
    if (disk, cd_disk) not in ((0, 0), (1, 1)) or n_here != n_total:
        raise error(
            "zip-multidisk",
            f"multi-disk ZIP archives are not supported (disk {disk}, directory on disk "
            f"{cd_disk}, {n_here} of {n_total} entries on this disk)",
            path=source.path,
            offset=eocd_off,
        )
    if cd_offset + cd_size != cd_end:
        # torch reads the directory at the offset stated; bytes before the archive (a
        # self-extractor's stub) or between the directory and its end record would make
        # a reader that measures back from the end record read another directory
        raise error(
            "zip-bad-central-dir",
            f"central directory (offset {cd_offset}, size {cd_size}) does not end at "
            f"its end record at {cd_end}",
            path=source.path,
            offset=eocd_off,
        )
    if n_total > max_members or n_total * _CDIR.size > cd_size:
        if n_total > max_members:
            raise error(
                "limit-zip-members",
                f"archive claims {n_total} members, over the limit of {max_members}",
                path=source.path,
                offset=eocd_off,
            )
        raise error(
            "zip-bad-central-dir",
            f"central directory of {cd_size} bytes cannot hold {n_total} entries",
            path=source.path,
            offset=eocd_off,
        )
    # Both parsers get the directory in memory: its size is checked before it is read.
    # An entry is at most 46 bytes + a name, an extra field and a comment of 64 KiB
    # each, and the entries must fill the directory exactly (checked when parsed): a
    # larger directory is corrupt, whatever the limit.
    if cd_size > n_total * _MAX_CDIR_ENTRY:
        raise error(
            "zip-bad-central-dir",
            f"central directory of {cd_size} bytes is larger than {n_total} entries can be",
            path=source.path,
            offset=eocd_off,
        )
    if cd_size > max_directory_bytes:
        raise error(
            "limit-directory-size",
            f"central directory of {cd_size} bytes, over the limit of {max_directory_bytes} "
            f"(Limits.max_directory_bytes)",
            path=source.path,
            offset=eocd_off,
        )
    cd_start = cd_offset
    if cd_start >= tail_start:
        cd = tail[cd_start - tail_start : cd_start - tail_start + cd_size]
    else:
        cd = source.read_at(cd_start, cd_size, what="central directory")
    parsed = None
    if _native is not None and (native is None or native):
        parsed = _native.parse_central_directory(cd, n_total, cd_start, size, ZipMember)
    elif native:
        raise ValueError(f"the native ZIP directory parser is not available: {NATIVE_ERROR}")
    if parsed is None:
        parsed = _parse_central_directory(cd, n_total, source, cd_start)
    return ZipDirectory(source, *parsed)


def _bytes_at(
    source: ReadableSource, tail: bytes, tail_start: int, offset: int, n: int
) -> bytes | None:
    """``n`` bytes at ``offset``, from the tail when it holds them; None outside the file."""
    if tail_start <= offset and offset + n <= tail_start + len(tail):
        return tail[offset - tail_start : offset - tail_start + n]
    if 0 <= offset and offset + n <= source.size:
        return source.read_at(offset, n, what="central directory signature")
    return None


def _check_single_end(
    source: ReadableSource, tail: bytes, tail_start: int, pos: int, others: list[int]
) -> None:
    """The end record at ``pos`` is the only one a reader could take: no earlier
    signature in the search window is a plausible end record, and its comment holds
    no ZIP records (an archive hidden there)."""
    clen = _EOCD.unpack_from(tail, pos)[7]
    comment = tail[pos + _EOCD.size : pos + _EOCD.size + clen]
    at = comment.find(b"PK")
    while at >= 0:
        if comment[at : at + 4] in _RECORD_SIGS:
            raise error(
                "zip-multiple-eocd",
                f"the archive comment holds a ZIP record signature {comment[at : at + 4]!r} "
                f"at byte {tail_start + pos + _EOCD.size + at}: an archive hidden in it",
                path=source.path,
                offset=tail_start + pos,
            )
        at = comment.find(b"PK", at + 1)
    for q in others:
        if _plausible_end(source, tail, tail_start, q):
            raise error(
                "zip-multiple-eocd",
                f"two end-of-central-directory records: at byte {tail_start + q} and at "
                f"byte {tail_start + pos}; readers that take the first read another archive",
                path=source.path,
                offset=tail_start + q,
            )


def _plausible_end(source: ReadableSource, tail: bytes, tail_start: int, q: int) -> bool:
    """Whether the signature at ``tail[q]`` is an end record some reader would take:
    a consistent single-disk record whose comment ends exactly at the end of the file
    (as an end record's does), or whose central directory is where it says."""
    (_s, disk, cd_disk, n_here, n_total, cd_size, cd_offset, clen) = _EOCD.unpack_from(tail, q)
    if disk != cd_disk or n_here != n_total:
        return False
    if q + _EOCD.size + clen == len(tail):
        return True
    end = tail_start + q
    loc = q - _EOCD64_LOC.size
    if loc >= 0 and tail[loc : loc + 4] == _EOCD64_LOC_SIG:
        found = _zip64_end_of(source, tail, tail_start, q)
        if found is None:  # a locator past the end of the file: miniz refuses it
            return False
        end, rec = found
        if rec is None:  # miniz takes the 32-bit record (the locator's bytes before it)
            end = tail_start + loc
        else:
            n_total, cd_size, cd_offset = _EOCD64.unpack_from(rec)[7:]
    if n_total == 0:
        return bool(cd_size == 0 and cd_offset == end)
    if cd_offset + cd_size > end:
        return False
    return _bytes_at(source, tail, tail_start, cd_offset, 4) == _CDIR_SIG


def _zip64_end_of(
    source: ReadableSource, tail: bytes, tail_start: int, pos: int
) -> tuple[int, bytes | None] | None:
    """Where the ZIP64 locator before the end record at ``tail[pos]`` points, and the
    ZIP64 end record there - or, in its place, None where miniz
    (``mz_zip_reader_read_central_dir``) takes the 32-bit end record instead: the bytes
    there are no ZIP64 record, or the end record starts too early in the file for a
    locator and a record before it. None for both when miniz refuses the archive: the
    locator points past the last 56 bytes of the file."""
    eocd_off = tail_start + pos
    eocd64_off: int = _EOCD64_LOC.unpack_from(tail, pos - _EOCD64_LOC.size)[2]
    if eocd_off < _EOCD64_LOC.size + _EOCD64.size:
        return eocd64_off, None
    if eocd64_off > source.size - _EOCD64.size:
        return None
    rec = _bytes_at(source, tail, tail_start, eocd64_off, _EOCD64.size)
    return eocd64_off, rec if rec is not None and rec[:4] == _EOCD64_SIG else None


def _check_ignored_locator(
    source: ReadableSource, tail: bytes, tail_start: int, pos: int, eocd64_off: int
) -> int:
    """A ZIP64 locator that points at no ZIP64 end record: torch's reader (miniz) takes
    the 32-bit end record at ``tail[pos]``, Python's ``zipfile`` the ZIP64 record just
    before the locator if there is one. Both see one directory only when the end record
    has no field saying "see ZIP64" and such a record (if any) states the same values.
    Returns where the central directory must end: at that record, or at the end record
    (so the locator's own bytes are refused as bytes between the directory and its end
    record: zipfile would take them for bytes before the archive)."""
    eocd_off = tail_start + pos
    loc_pos = pos - _EOCD64_LOC.size
    (_sig, disk16, cd_disk16, n_here16, n_total16, cd_size32, cd_offset32, _clen) = (
        _EOCD.unpack_from(tail, pos)
    )
    if 0xFFFF in (disk16, cd_disk16, n_here16, n_total16) or 0xFFFFFFFF in (
        cd_size32,
        cd_offset32,
    ):
        raise error(
            "zip-bad-central-dir",
            f"the end record at byte {eocd_off} defers to a ZIP64 end record, but its "
            f"locator points at byte {eocd64_off}, where there is none",
            path=source.path,
            offset=eocd64_off,
        )
    before = loc_pos - _EOCD64.size
    if before < 0 or tail[before : before + 4] != _EOCD64_SIG:
        return eocd_off
    fields = _EOCD64.unpack_from(tail, before)
    if fields[4:] != (disk16, cd_disk16, n_here16, n_total16, cd_size32, cd_offset32):
        raise error(
            "zip-multiple-eocd",
            f"the ZIP64 locator points at byte {eocd64_off}, where there is no ZIP64 end "
            f"record: torch reads the end record at byte {eocd_off} ({n_total16} entries, "
            f"{cd_size32} bytes at {cd_offset32}), zipfile the ZIP64 record before the "
            f"locator ({fields[7]} entries, {fields[8]} bytes at {fields[9]})",
            path=source.path,
            offset=eocd_off,
        )
    return tail_start + before


def _check_zip64_end(
    source: ReadableSource,
    tail: bytes,
    tail_start: int,
    loc_pos: int,
    eocd64_off: int,
    fields: tuple[int, ...],
    eocd_off: int,
) -> None:
    """The ZIP64 end record ends at its locator (where readers that do not follow the
    locator look for it), and the end record's fields are its values or "see ZIP64"."""
    (_s, rec_size, _vm, _vn, disk, cd_disk, n_here, n_total, cd_size, cd_offset) = fields
    loc_off = tail_start + loc_pos
    if eocd64_off + 12 + rec_size != loc_off:
        before = loc_pos - _EOCD64.size
        if before >= 0 and tail[before : before + 4] == _EOCD64_SIG:
            raise error(
                "zip-multiple-eocd",
                f"two ZIP64 end records: the locator points at byte {eocd64_off}, another "
                f"ends at the locator (byte {loc_off})",
                path=source.path,
                offset=eocd64_off,
            )
        raise error(
            "zip-bad-central-dir",
            f"the ZIP64 end record at byte {eocd64_off} ({12 + rec_size} bytes) does not "
            f"end at its locator at byte {loc_off}",
            path=source.path,
            offset=eocd64_off,
        )
    (_sig, disk16, cd_disk16, n_here16, n_total16, cd_size32, cd_offset32, _clen) = (
        _EOCD.unpack_from(tail, loc_pos + _EOCD64_LOC.size)
    )
    pairs = (
        (disk16, disk, 0xFFFF),
        (cd_disk16, cd_disk, 0xFFFF),
        (n_here16, n_here, 0xFFFF),
        (n_total16, n_total, 0xFFFF),
        (cd_size32, cd_size, 0xFFFFFFFF),
        (cd_offset32, cd_offset, 0xFFFFFFFF),
    )
    for short, full, see_zip64 in pairs:
        if short not in (full, see_zip64):
            raise error(
                "zip-multiple-eocd",
                f"the end record (at byte {eocd_off}: {n_total16} entries, {cd_size32} "
                f"bytes at {cd_offset32}) and the ZIP64 end record (at byte {eocd64_off}: "
                f"{n_total} entries, {cd_size} bytes at {cd_offset}) describe different "
                f"directories",
                path=source.path,
                offset=eocd_off,
            )


def _unsafe_name(raw: bytes) -> bool:
    """An absolute name (leading ``/`` or ``\\``, a drive letter) or a ``..`` component."""
    if raw[:1] in (b"/", b"\\") or (raw[1:2] == b":" and raw[:1].isalpha()):
        return True
    return b".." in raw.replace(b"\\", b"/").split(b"/")


def _parse_central_directory(
    cd: bytes, count: int, source: ReadableSource, cd_start: int
) -> tuple[list[ZipMember], dict[bytes, ZipMember]]:
    """The records of the directory ``cd`` (read at ``cd_start``) and their lookup index,
    or the error that refuses them; ``_zipdir_c.parse_central_directory`` is the same
    for the common case."""
    path = source.path
    file_size = source.size
    rows: list[tuple[str, int, int, int, int, int, int, bytes]] = []
    entry_at: list[int] = []
    folders: list[int] = []  # the records miniz takes for directories that hold bytes
    pos = 0
    unpack = _CDIR.unpack_from
    head = _CDIR.size
    end = len(cd)
    for _ in range(count):
        at = cd_start + pos
        if pos + head > end:
            raise error(
                "zip-bad-central-dir",
                "central directory ends in the middle of an entry",
                path=path,
                offset=at,
            )
        (
            sig,
            _vm,
            _vn,
            flags,
            method,
            _t,
            _d,
            crc,
            csize,
            usize,
            nlen,
            xlen,
            clen,
            disk,
            _ia,
            ext_attr,
            hoff,
        ) = unpack(cd, pos)
        if sig != _CDIR_SIG:
            raise error(
                "zip-bad-central-dir",
                f"bad central directory entry signature {sig!r}",
                path=path,
                offset=at,
            )
        name_end = pos + head + nlen
        extra_end = name_end + xlen
        if extra_end + clen > end:
            raise error(
                "zip-bad-central-dir",
                "central directory entry runs past the directory",
                path=path,
                offset=at,
            )
        raw = cd[pos + head : name_end]
        name = raw.decode("utf-8" if flags & _FLAG_UTF8 else "cp437", errors="replace")
        if csize == 0xFFFFFFFF or usize == 0xFFFFFFFF or hoff == 0xFFFFFFFF:
            usize, csize, hoff = _zip64_extra(
                cd[name_end:extra_end], usize, csize, hoff, source, at
            )
        if hoff + 30 > file_size:  # a local header's 30 bytes
            raise error(
                "zip-bad-central-dir",
                f"member {name!r} has its header at {hoff}, past the end of the file",
                path=path,
                offset=at,
            )
        if disk > 1:  # miniz: the member's first disk is this one (or disk 1)
            raise error(
                "zip-multidisk",
                f"member {name!r} starts on disk {disk}: multi-disk archives are not supported",
                path=path,
                member=name,
            )
        if (ext_attr & _DOS_DIRECTORY or raw[-1:] == b"/") and (csize or usize):
            folders.append(len(rows))
        rows.append((name, method, csize, usize, hoff, flags, crc, raw))
        entry_at.append(at)
        pos = extra_end + clen
    if pos != end:
        # a reader that parses the directory by its size, not its count, sees more entries
        raise error(
            "zip-bad-central-dir",
            f"central directory holds {end - pos} bytes after its {count} entries",
            path=path,
            offset=cd_start + pos,
        )
    keys = _check_names(rows, entry_at, path)
    if any(row[5] & (_ENCRYPTION_FLAGS | _FLAG_PATCHED) for row in rows):
        for (name, _m, _cs, _us, _h, flags, _c, _r), at in zip(rows, entry_at, strict=True):
            if flags & _ENCRYPTION_FLAGS:
                raise error(
                    "zip-encrypted",
                    f"member {name!r} is flagged encrypted (flags {flags:#06x}, its entry at "
                    f"byte {at}); torch reads no encrypted member",
                    path=path,
                    member=name,
                )
            if flags & _FLAG_PATCHED:
                raise error(
                    "zip-compression",
                    f"member {name!r} is flagged compressed patched data (flags {flags:#06x})",
                    path=path,
                    member=name,
                )
    limits = _check_extents(rows, cd_start, file_size, path)
    for name, method, csize, usize, _h, _f, _c, _r in rows:
        if usize and not csize:  # miniz refuses it at open (mz_zip_reader_read_central_dir)
            raise error(
                "zip-bad-central-dir",
                f"member {name!r} is {usize} bytes stored in none",
                path=path,
                member=name,
            )
        if csize != usize and method == _STORED:
            # miniz refuses it at open only when the DOS time is 0, as torch writes it (it
            # tests method and time as one 32-bit word), else reads `usize` bytes; zipfile
            # reads `csize` bytes
            raise error(
                "zip-stored-size-mismatch",
                f"member {name!r} is STORED with two sizes ({usize} bytes, {csize} stored): "
                f"torch's reader takes {usize} bytes or refuses the archive, zipfile {csize}",
                path=path,
                member=name,
            )
    for i in folders:
        name, _m, csize, usize, _h, _f, _c, _r = rows[i]
        raise error(
            "zip-directory-member",
            f"member {name!r} (its entry at byte {entry_at[i]}) is marked a directory but "
            f"holds {csize} bytes ({usize} uncompressed): torch's reader reads none of them "
            f"and leaves the memory it returns uninitialised",
            path=path,
            member=name,
        )
    new = tuple.__new__  # ZipMember(*row, limit) without namedtuple's own __new__
    records = [new(ZipMember, (*row, limit)) for row, limit in zip(rows, limits, strict=True)]
    return records, dict(zip(keys, records, strict=True))


def _check_names(
    rows: list[tuple[str, int, int, int, int, int, int, bytes]],
    entry_at: list[int],
    path: str | None,
) -> list[bytes]:
    """No two records answer the same lookup (torch's: the bytes up to a NUL, ASCII case
    ignored; ours: the decoded text), no NUL byte, no absolute or ``..`` name. Returns
    each record's lookup key (its name's bytes, ASCII-lowercased)."""
    folded: dict[bytes, int] = {}
    texts: dict[str, int] = {}
    keys = []
    for i, row in enumerate(rows):
        name, raw = row[0], row[7]
        key = raw.lower()
        if 0 in key:  # (``0 in``: memchr; ``b"\0" in`` is the slow general search)
            key = key.split(b"\0", 1)[0]
        keys.append(key)
        j = folded.setdefault(key, i)
        if j == i and not name.isascii():  # an ASCII name is its bytes: folded covers it
            j = texts.setdefault(name, i)
        if j != i:
            other = rows[j][7]
            cut = other.split(b"\0", 1)[0]
            if other == raw:
                how = "the same name"
            elif cut == raw.split(b"\0", 1)[0]:
                how = "names equal up to a NUL byte"
            elif cut.lower() == key:
                how = "names equal ignoring ASCII case"
            else:
                how = "names that decode to the same text"
            raise error(
                "zip-duplicate-name",
                f"central directory entries at bytes {entry_at[j]} and {entry_at[i]} have "
                f"{how} ({other!r} and {raw!r}): torch's lookup cannot tell them apart",
                path=path,
                member=name,
            )
    for i, row in enumerate(rows):
        name, raw = row[0], row[7]
        if 0 in raw:
            seen = raw.split(b"\0", 1)[0]  # what C string functions (and torch) see
            raise error(
                "zip-nul-name",
                f"member name {raw!r} (its entry at byte {entry_at[i]}) holds a NUL byte: "
                f"C readers see {seen!r}",
                path=path,
                member=name,
            )
        if (
            (46 in raw and b".." in raw)  # a '.' (46), then the slower search
            or (raw and raw[0] in (47, 92))  # '/', '\\'
            or (len(raw) > 1 and raw[1] == 58)  # ':'
        ) and _unsafe_name(raw):
            raise error(
                "zip-unsafe-name",
                f"member name {raw!r} (its entry at byte {entry_at[i]}) is absolute or "
                f"has a '..' component",
                path=path,
                member=name,
            )
    return keys


def _check_extents(
    rows: list[tuple[str, int, int, int, int, int, int, bytes]],
    cd_start: int,
    file_size: int,
    path: str | None,
) -> list[int]:
    """Each member's local header, name and data (and a data descriptor's 12 bytes, at
    least) end before the next member's header and the central directory; returns each
    record's limit (where the next record starts)."""
    n = len(rows)
    starts = [row[4] for row in rows]
    order = list(range(n))
    if any(a >= b for a, b in zip(starts, starts[1:], strict=False)):  # torch: in file order
        order.sort(key=lambda i: (starts[i], i))
    limits = [0] * n
    for k, i in enumerate(order):
        name, _m, csize, _us, hoff, flags, _c, raw = rows[i]
        end = (
            hoff
            + _LOCAL.size
            + len(raw)
            + csize
            + (_MIN_DESCRIPTOR if flags & _FLAG_DESCRIPTOR else 0)
        )
        nxt = starts[order[k + 1]] if k + 1 < n else cd_start
        if end > nxt:
            if end > file_size:
                raise error(
                    "truncated",
                    f"member {name!r} claims {csize} bytes after its header at {hoff}, past "
                    f"the end of the file at {file_size}",
                    path=path,
                    member=name,
                )
            what = (
                f"member {rows[order[k + 1]][0]!r}'s local header"
                if k + 1 < n
                else "the central directory"
            )
            raise error(
                "zip-overlap",
                f"member {name!r} (header at byte {hoff}, {csize} bytes of data) runs into "
                f"{what} at byte {nxt}",
                path=path,
                member=name,
            )
        limits[i] = nxt
    return limits


def _zip64_extra(
    extra: bytes, usize: int, csize: int, hoff: int, source: ReadableSource, at: int
) -> tuple[int, int, int]:
    """Replace 0xFFFFFFFF placeholders with the ZIP64 extended information (§4.5.3)."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<2H", extra, pos)
        body = extra[pos + 4 : pos + 4 + size]
        if tag == 0x0001:
            vals = [v[0] for v in struct.iter_unpack("<Q", body[: len(body) // 8 * 8])]
            try:
                if usize == 0xFFFFFFFF:
                    usize = vals.pop(0)
                if csize == 0xFFFFFFFF:
                    csize = vals.pop(0)
                if hoff == 0xFFFFFFFF:
                    hoff = vals.pop(0)
            except IndexError:
                break
            return usize, csize, hoff
        pos += 4 + size
    raise error(
        "zip-bad-central-dir", "ZIP64 extra field missing or too short", path=source.path, offset=at
    )


def _local_zip64_sizes(extra: bytes, usize: int, csize: int) -> tuple[int, int]:
    """A local header's sizes from its ZIP64 extra field (§4.5.3: both sizes, in that
    order); the placeholders stay (and disagree) when there is none."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<2H", extra, pos)
        if tag == 0x0001:
            body = extra[pos + 4 : pos + 4 + size]
            vals = [v[0] for v in struct.iter_unpack("<Q", body[: len(body) // 8 * 8])]
            if usize == 0xFFFFFFFF and vals:
                usize = vals.pop(0)
            if csize == 0xFFFFFFFF and vals:
                csize = vals.pop(0)
            break
        pos += 4 + size
    return usize, csize
