"""Hand-made checkpoint bytes for the hostile-input tests: no torch needed.

``Pickle`` is a tiny opcode writer (every byte is spelled out, so a test can put any
opcode anywhere); ``small_pickle()`` is the pickle torch writes for
``{"epoch": 3, "w": torch.zeros(2, 3)}`` (protocol 2, one float storage of 6 elements);
``build_zip()`` assembles a ZIP archive byte by byte so that every field of the
central directory can be made to lie; ``torch_zip()`` is the usual torch layout
(``archive/data.pkl``, ``archive/data/0``, ``archive/version``, ``archive/byteorder``).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

__all__ = (
    "Pickle",
    "small_pickle",
    "Member",
    "build_zip",
    "torch_zip",
    "small_checkpoint",
    "FLOATS",
    "GLOBAL_OFFSETS",
)


class Pickle:
    """Append opcodes one by one; ``bytes(p)`` is the pickle, ``p.pos`` the next offset."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def __bytes__(self) -> bytes:
        return bytes(self.buf)

    @property
    def pos(self) -> int:
        return len(self.buf)

    def raw(self, b: bytes) -> Pickle:
        self.buf += b
        return self

    def proto(self, n: int = 2) -> Pickle:
        return self.raw(b"\x80" + bytes([n]))

    def stop(self) -> Pickle:
        return self.raw(b".")

    def mark(self) -> Pickle:
        return self.raw(b"(")

    def none(self) -> Pickle:
        return self.raw(b"N")

    def false(self) -> Pickle:
        return self.raw(b"\x89")

    def int(self, v: int) -> Pickle:
        if 0 <= v < 256:
            return self.raw(b"K" + bytes([v]))
        if 0 <= v < 65536:
            return self.raw(b"M" + struct.pack("<H", v))
        return self.raw(b"J" + struct.pack("<i", v))

    def str(self, s: str) -> Pickle:
        b = s.encode("utf-8")
        return self.raw(b"X" + struct.pack("<I", len(b)) + b)

    def glob(self, module: str, name: str) -> Pickle:
        return self.raw(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def stack_global(self, module: str, name: str) -> Pickle:
        return self.str(module).str(name).raw(b"\x93")

    def binput(self, i: int) -> Pickle:
        return self.raw(b"q" + bytes([i]))

    def binget(self, i: int) -> Pickle:
        return self.raw(b"h" + bytes([i]))

    def empty_dict(self) -> Pickle:
        return self.raw(b"}")

    def empty_list(self) -> Pickle:
        return self.raw(b"]")

    def empty_tuple(self) -> Pickle:
        return self.raw(b")")

    def tuple(self) -> Pickle:
        return self.raw(b"t")

    def tuple1(self) -> Pickle:
        return self.raw(b"\x85")

    def tuple2(self) -> Pickle:
        return self.raw(b"\x86")

    def tuple3(self) -> Pickle:
        return self.raw(b"\x87")

    def setitem(self) -> Pickle:
        return self.raw(b"s")

    def setitems(self) -> Pickle:
        return self.raw(b"u")

    def append(self) -> Pickle:
        return self.raw(b"a")

    def reduce(self) -> Pickle:
        return self.raw(b"R")

    def build(self) -> Pickle:
        return self.raw(b"b")

    def binpersid(self) -> Pickle:
        return self.raw(b"Q")


#: 6 float32 values stored in archive/data/0 (torch.arange(6.) as a 2x3 tensor)
FLOATS = tuple(float(i) for i in range(6))
#: byte offsets of the GLOBAL opcodes in small_pickle(), filled in below
GLOBAL_OFFSETS: dict[str, int] = {}


def small_pickle() -> bytes:
    """``{"epoch": 3, "w": <2x3 float tensor on storage "0">}`` as torch.save (protocol 2) writes it."""
    p = Pickle().proto(2).empty_dict().binput(0).mark()
    p.str("epoch").int(3)
    p.str("w")
    GLOBAL_OFFSETS["_rebuild_tensor_v2"] = p.pos
    p.glob("torch._utils", "_rebuild_tensor_v2").binput(1)
    p.mark()
    p.mark().str("storage")
    GLOBAL_OFFSETS["FloatStorage"] = p.pos
    p.glob("torch", "FloatStorage").binput(2)
    p.str("0").str("cpu").int(6).tuple().binput(3).binpersid()
    p.int(0)  # storage_offset
    p.int(2).int(3).tuple2().binput(4)  # size
    p.int(3).int(1).tuple2().binput(5)  # stride
    p.false()  # requires_grad
    GLOBAL_OFFSETS["OrderedDict"] = p.pos
    p.glob("collections", "OrderedDict").binput(6).empty_tuple().reduce().binput(7)  # hooks
    p.tuple().binput(8).reduce().binput(9)
    p.setitems().stop()
    return bytes(p)


@dataclass
class Member:
    """One archive member. ``claim_*`` override what the directory says (to make it lie);
    the local header states the same sizes (a consistent liar: a local header that
    disagrees with the directory is refused before any size is used)."""

    name: str
    data: bytes
    method: int = 0  # 0 STORED, 8 DEFLATE
    compressed: bytes | None = None  # pre-compressed payload (raw deflate) for method 8
    claim_size: int | None = None  # uncompressed size stated in the directory
    claim_csize: int | None = None  # compressed size stated in the directory
    claim_offset: int | None = None  # local header offset stated in the directory
    zip64: bool = False  # state sizes/offset in a ZIP64 extra field
    flags: int = 0
    extra_local: bytes = field(default=b"")


def build_zip(
    members: list[Member],
    *,
    claim_count: int | None = None,
    claim_cd_size: int | None = None,
    claim_cd_offset: int | None = None,
    prefix: bytes = b"",
    comment: bytes = b"",
) -> bytes:
    """A ZIP archive written field by field (PKWARE APPNOTE 4.3.7, 4.3.12, 4.3.16)."""
    out = bytearray(prefix)
    central = bytearray()
    for m in members:
        name = m.name.encode("utf-8")
        payload = m.data
        if m.method == 8:
            if m.compressed is not None:
                payload = m.compressed
            else:
                c = zlib.compressobj(9, zlib.DEFLATED, -15)
                payload = c.compress(m.data) + c.flush()
        crc = zlib.crc32(m.data) & 0xFFFFFFFF
        offset = len(out) - len(prefix)
        size = len(m.data) if m.claim_size is None else m.claim_size
        csize = len(payload) if m.claim_csize is None else m.claim_csize
        extra_local = m.extra_local
        if m.zip64:  # sizes in a local ZIP64 extra field (both, APPNOTE 4.5.3)
            extra_local = struct.pack("<2H2Q", 1, 16, size, csize) + extra_local
        local = struct.pack(
            "<4s5H3L2H",
            b"PK\x03\x04",
            45 if m.zip64 else 20,
            m.flags,
            m.method,
            0,
            0x21,
            crc,
            0xFFFFFFFF if m.zip64 else csize & 0xFFFFFFFF,
            0xFFFFFFFF if m.zip64 else size & 0xFFFFFFFF,
            len(name),
            len(extra_local),
        )
        out += local + name + extra_local + payload
        hoff = offset if m.claim_offset is None else m.claim_offset
        extra = b""
        if m.zip64:
            extra = struct.pack("<2H3Q", 1, 24, size, csize, hoff)
            size = csize = hoff = 0xFFFFFFFF
        central += (
            struct.pack(
                "<4s6H3L5H2L",
                b"PK\x01\x02",
                45,
                45 if m.zip64 else 20,
                m.flags | 0x800,
                m.method,
                0,
                0x21,
                crc,
                csize,
                size,
                len(name),
                len(extra),
                0,
                0,
                0,
                0,
                hoff,
            )
            + name
            + extra
        )
    cd_offset = len(out) - len(prefix)
    out += central
    count = len(members) if claim_count is None else claim_count
    out += (
        struct.pack(
            "<4s4H2LH",
            b"PK\x05\x06",
            0,
            0,
            count & 0xFFFF,
            count & 0xFFFF,
            len(central) if claim_cd_size is None else claim_cd_size,
            cd_offset if claim_cd_offset is None else claim_cd_offset,
            len(comment),
        )
        + comment
    )
    return bytes(out)


def torch_zip(
    pkl: bytes,
    *,
    prefix: str = "archive",
    storage: bytes | None = None,
    pkl_member: Member | None = None,
    extra: list[Member] | None = None,
    **kw: object,
) -> bytes:
    """The torch.save layout around ``pkl`` (the data.pkl member can be replaced whole)."""
    if storage is None:
        storage = struct.pack("<6f", *FLOATS)
    members = [
        pkl_member or Member(f"{prefix}/data.pkl", pkl),
        Member(f"{prefix}/byteorder", b"little"),
        Member(f"{prefix}/data/0", storage),
        Member(f"{prefix}/version", b"3\n"),
        *(extra or []),
    ]
    return build_zip(members, **kw)  # type: ignore[arg-type]


def small_checkpoint() -> bytes:
    return torch_zip(small_pickle())
