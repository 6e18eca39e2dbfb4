"""A small, header-only ZIP reader: the central directory, and members on demand.

Written for torch's archives (PKWARE APPNOTE 6.3.x): members are written with data
descriptors, so sizes are trusted only from the central directory (§4.3.12); archives
over 4 GiB or 65,535 members use the ZIP64 end record and locator (§4.3.14-4.3.15) and
ZIP64 extra fields (§4.5.3). A member's data offset needs its local header (§4.3.7),
which is read only when that member's bytes are wanted. STORED and DEFLATE members can
be read; storage members in torch files are always STORED (and 64-byte aligned).
"""

from __future__ import annotations

import collections
import struct
import zlib

from ckptpeek import _extensions
from ckptpeek.errors import CheckpointError, error

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
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
_EOCD = struct.Struct("<4s4H2LH")  # 22 bytes, followed by the archive comment
_EOCD64_LOC = struct.Struct("<4sLQL")  # 20 bytes
_EOCD64 = struct.Struct("<4sQ2H2L4Q")  # 56 bytes
_CDIR = struct.Struct("<4s6H3L5H2L")  # 46 bytes, then name, extra, comment
_LOCAL = struct.Struct("<4s5H3L2H")  # 30 bytes, then name, extra
_MAX_COMMENT: Final = 0xFFFF
_STORED: Final = 0
_DEFLATED: Final = 8
# The tail read at open: EOCD + a full-length comment + the ZIP64 records, and, for
# the common case, the whole central directory in the same read.
_TAIL_READ: Final = 64 * 1024


ZipMember = collections.namedtuple(
    "ZipMember", "name method compressed_size size header_offset flags"
)
ZipMember.__doc__ = "One central-directory entry (sizes and offsets as the directory states them)."


class ZipDirectory:
    """The members of a ZIP archive, read from its central directory.

    ``data_offset(member)`` reads the member's 30-byte local header (once) to find where
    its data starts; ``read(member)`` returns its (decompressed) bytes.
    """

    def __init__(self, source: ReadableSource, members: dict[str, ZipMember], base: int) -> None:
        self.source = source
        self.members = members
        self._base = base  # bytes prepended to the archive (self-extractors); usually 0
        self._data_offsets: dict[str, int] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.members

    def names(self) -> list[str]:
        return list(self.members)

    def _error(
        self, msg: str, code: str, offset: int, member: str | None = None
    ) -> CheckpointError:
        return error(code, msg, path=self.source.path, member=member, offset=offset)

    def data_offset(self, name: str, *, prefetch: int = 0) -> tuple[int, bytes]:
        """Absolute file offset of ``name``'s data, plus up to ``prefetch`` bytes of it.

        Reading the local header and the start of the data in one call saves a round
        trip for small members such as ``data.pkl``.
        """
        m = self.members[name]
        start = self._base + m.header_offset
        extra_guess = 64 + len(name.encode("utf-8"))  # torch pads local extras to align data
        head = self.source.read_at(
            start,
            _LOCAL.size + extra_guess + prefetch,
            what="local header",
            member=name,
            exact=False,
        )
        if len(head) < _LOCAL.size:
            raise self._error(
                "local header runs past the end of the file", "truncated", start, name
            )
        sig, _ver, _flags, _meth, _t, _d, _crc, _cs, _us, nlen, xlen = _LOCAL.unpack_from(head)
        if sig != _LOCAL_SIG:
            raise self._error(
                f"bad local header signature {sig!r} for member {name!r}",
                "zip-bad-local-header",
                start,
                name,
            )
        offset = start + _LOCAL.size + nlen + xlen
        if offset + m.compressed_size > self.source.size:
            raise self._error(
                f"member {name!r} claims {m.compressed_size} bytes at {offset} but the "
                f"file ends at {self.source.size}",
                "truncated",
                offset,
                name,
            )
        self._data_offsets[name] = offset
        skip = _LOCAL.size + nlen + xlen
        return offset, head[skip : skip + prefetch]

    def read(self, name: str, *, max_size: int | None = None) -> bytes:
        """The whole (decompressed) content of ``name``; ``max_size`` guards allocation."""
        m = self.members.get(name)
        if m is None:
            raise error(
                "zip-missing-member", f"archive has no member {name!r}", path=self.source.path
            )
        if max_size is not None and max(m.size, m.compressed_size) > max_size:
            raise error(
                "limit-member-size",
                f"member {name!r} is {m.size} bytes, over the limit of {max_size}",
                path=self.source.path,
                member=name,
            )
        if m.flags & 0x1:
            raise error(
                "zip-encrypted", f"member {name!r} is encrypted", path=self.source.path, member=name
            )
        offset, data = self.data_offset(name, prefetch=m.compressed_size)
        if len(data) < m.compressed_size:
            data += self.source.read_at(
                offset + len(data),
                m.compressed_size - len(data),
                what=f"member {name!r}",
                member=name,
            )
        if m.method == _STORED:
            return data
        if m.method == _DEFLATED:
            d = zlib.decompressobj(-15)
            try:
                # max_length bounds the output to what the directory promised (zip bombs)
                out = d.decompress(data, m.size)
            except zlib.error as exc:
                raise self._error(
                    f"member {name!r} does not inflate: {exc}", "zip-bad-deflate", offset, name
                ) from exc
            if len(out) != m.size or d.unconsumed_tail:
                raise self._error(
                    f"member {name!r} inflates to a size other than the "
                    f"{m.size} bytes the directory states",
                    "zip-bad-deflate",
                    offset,
                    name,
                )
            return out
        raise error(
            "zip-compression",
            f"member {name!r} uses compression method {m.method}",
            path=self.source.path,
            member=name,
        )


def read_directory(
    source: ReadableSource, *, max_members: int = 10_000_000, native: bool | None = None
) -> ZipDirectory:
    """Find the end-of-central-directory record and parse the central directory.

    ``native`` (default: when built) parses well-formed directories in C; the C parser
    returns ``None`` at anything unusual (ZIP64 fields, non-ASCII names, any
    inconsistency), which this module then parses - and reports. Both give the same
    directory (``tests/test_zipdir.py`` checks it).

    Raises:
        FormatError: ``zip-no-eocd``, ``zip-bad-central-dir``, ``truncated``.
        LimitError: ``limit-zip-members``.
    """
    size = source.size
    tail_len = min(size, _TAIL_READ)
    tail_start = size - tail_len
    tail = source.read_at(tail_start, tail_len, what="end of central directory")
    source.keep(tail_start, tail)
    # The EOCD is the last signature within the final 22 + 65,535 bytes (§4.3.16).
    pos = tail.rfind(_EOCD_SIG, max(0, len(tail) - _EOCD.size - _MAX_COMMENT))
    while pos >= 0 and pos + _EOCD.size > len(tail):
        pos = tail.rfind(_EOCD_SIG, 0, pos)
    if pos < 0:
        raise error(
            "zip-no-eocd", "no ZIP end-of-central-directory record", path=source.path, offset=size
        )
    eocd_off = tail_start + pos
    (_sig, disk, cd_disk, _n_here, n_total, cd_size, cd_offset, _clen) = _EOCD.unpack_from(
        tail, pos
    )
    if disk != cd_disk and 0xFFFF not in (disk, cd_disk):
        raise error(
            "zip-multidisk",
            "multi-disk ZIP archives are not supported",
            path=source.path,
            offset=eocd_off,
        )
    cd_end = eocd_off  # where the central directory must end (before any ZIP64 records)
    loc_pos = pos - _EOCD64_LOC.size
    if loc_pos >= 0 and tail[loc_pos : loc_pos + 4] == _EOCD64_LOC_SIG:
        _s, _d, eocd64_off, _disks = _EOCD64_LOC.unpack_from(tail, loc_pos)
        rec = source.read_at(eocd64_off, _EOCD64.size, what="ZIP64 end record")
        if rec[:4] != _EOCD64_SIG:
            raise error(
                "zip-bad-central-dir",
                "bad ZIP64 end-of-central-directory signature",
                path=source.path,
                offset=eocd64_off,
            )
        (_s, _rs, _vm, _vn, _dk, _cdk, _nh, n_total, cd_size, cd_offset) = _EOCD64.unpack_from(rec)
        cd_end = eocd64_off
    # A prefix before the archive (e.g. a self-extracting stub) shifts every offset.
    base = cd_end - cd_size - cd_offset
    if base < 0 or cd_size < 0:
        raise error(
            "zip-bad-central-dir",
            f"central directory (offset {cd_offset}, size {cd_size}) does not "
            f"fit before its end record at {cd_end}",
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
    cd_start = base + cd_offset
    if cd_start >= tail_start:
        cd = tail[cd_start - tail_start : cd_start - tail_start + cd_size]
    else:
        cd = source.read_at(cd_start, cd_size, what="central directory")
    members = None
    if _native is not None and (native is None or native):
        members = _native.parse_central_directory(cd, n_total, source.size, ZipMember)
    elif native:
        raise ValueError(f"the native ZIP directory parser is not available: {NATIVE_ERROR}")
    if members is None:
        members = _parse_central_directory(cd, n_total, source, cd_start)
    return ZipDirectory(source, members, base)


def _parse_central_directory(
    cd: bytes, count: int, source: ReadableSource, cd_start: int
) -> dict[str, ZipMember]:
    members: dict[str, ZipMember] = {}
    pos = 0
    unpack = _CDIR.unpack_from
    for _ in range(count):
        if pos + _CDIR.size > len(cd):
            raise error(
                "zip-bad-central-dir",
                "central directory ends in the middle of an entry",
                path=source.path,
                offset=cd_start + pos,
            )
        (
            sig,
            _vm,
            _vn,
            flags,
            method,
            _t,
            _d,
            _crc,
            csize,
            usize,
            nlen,
            xlen,
            clen,
            _disk,
            _ia,
            _ea,
            hoff,
        ) = unpack(cd, pos)
        if sig != _CDIR_SIG:
            raise error(
                "zip-bad-central-dir",
                f"bad central directory entry signature {sig!r}",
                path=source.path,
                offset=cd_start + pos,
            )
        name_end = pos + _CDIR.size + nlen
        extra_end = name_end + xlen
        if pos + _CDIR.size + nlen + xlen + clen > len(cd):
            raise error(
                "zip-bad-central-dir",
                "central directory entry runs past the directory",
                path=source.path,
                offset=cd_start + pos,
            )
        raw = cd[pos + _CDIR.size : name_end]
        name = raw.decode("utf-8" if flags & 0x800 else "cp437", errors="replace")
        if 0xFFFFFFFF in (csize, usize, hoff):
            usize, csize, hoff = _zip64_extra(
                cd[name_end:extra_end], usize, csize, hoff, source, cd_start + pos
            )
        if hoff + _LOCAL.size > source.size:
            raise error(
                "zip-bad-central-dir",
                f"member {name!r} has its header at {hoff}, past the end of the file",
                path=source.path,
                offset=cd_start + pos,
            )
        members[name] = ZipMember(name, method, csize, usize, hoff, flags)
        pos = extra_end + clen
    return members


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
