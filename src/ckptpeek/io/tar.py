"""Tar headers read exactly as Python's ``tarfile`` reads them (``TarInfo.frombuf``).

torch.load tries ``tarfile`` on every file that is not a ZIP, so both the sniffer (is
this file a tar to torch?) and the legacy tar reader need the same answer; no pickles.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from typing import Final

__all__ = (
    "TAR_BLOCK",
    "TAR_DIR",
    "TAR_GNU",
    "tar_number",
    "tar_header",
    "tar_block",
    "pax_records",
)

TAR_BLOCK: Final = 512
TAR_DIR: Final = b"5"
TAR_GNU: Final = (b"L", b"K", b"S")  # tarfile joins the ustar prefix to no GNU type
_NUMBER_FIELDS: Final = ((100, 108), (108, 116), (116, 124), (136, 148), (329, 337), (337, 345))
_ASCII_LOW: Final = bytes(range(128))


def tar_number(field: bytes) -> int | None:
    """``tarfile.nti``: a number field, or ``None`` where tarfile finds it invalid."""
    if field[0] in (0o200, 0o377):  # GNU base-256
        value = int.from_bytes(field[1:], "big")
        return value - 256 ** (len(field) - 1) if field[0] == 0o377 else value
    try:
        return int(field.split(b"\0", 1)[0].decode("ascii").strip() or "0", 8)
    except ValueError:  # UnicodeDecodeError included, as in tarfile
        return None


def tar_header(block: bytes) -> tuple[bytes, int, bytes] | None:
    """``(name, size, type)`` of a 512-byte tar header as ``tarfile.TarInfo.frombuf``
    reads it, or ``None`` where frombuf raises (no full block, the end-of-archive block,
    a checksum that is neither sum, a number field that is no number)."""
    if len(block) != TAR_BLOCK or block.count(0) == TAR_BLOCK:
        return None
    checksum = tar_number(block[148:156])
    outside = block[:148] + block[156:]
    unsigned = 256 + sum(outside)
    signed = unsigned - 256 * len(outside.translate(None, _ASCII_LOW))
    if checksum is None or checksum not in (unsigned, signed):
        return None
    if any(tar_number(block[a:b]) is None for a, b in _NUMBER_FIELDS):
        return None
    size = tar_number(block[124:136])
    if size is None:
        return None
    kind = block[156:157]
    if kind == b"S":  # the old GNU sparse map, parsed by frombuf too
        fields = [(p, p + 12) for p in range(386, 482, 12)] + [(483, 495)]
        if any(tar_number(block[a:b]) is None for a, b in fields):
            return None
    name = block[:100].split(b"\0", 1)[0]
    prefix = block[345:500].split(b"\0", 1)[0]
    if kind == b"\0" and name.endswith(b"/"):
        kind = TAR_DIR  # a V7 directory
    if kind == TAR_DIR:
        name = name.rstrip(b"/")
    if prefix and kind not in TAR_GNU:
        name = prefix + b"/" + name
    return name, size, kind


def tar_block(size: int) -> int:
    return -(-size // TAR_BLOCK) * TAR_BLOCK


def pax_records(buf: bytes) -> list[tuple[bytes, bytes]] | None:
    """The ``<length> <keyword>=<value>\\n`` records of a PAX header, or ``None`` unless
    each is framed exactly (so old and new ``tarfile`` parsers read the same records:
    both stop at the end or at a NUL byte between records)."""
    records = []
    pos = 0
    while pos < len(buf) and buf[pos] != 0:
        digits = pos
        while digits < len(buf) and 48 <= buf[digits] <= 57 and digits - pos < 20:
            digits += 1
        if digits == pos or buf[digits : digits + 1] != b" ":
            return None
        length = int(buf[pos:digits])
        last = pos + length - 1
        if length < 5 or pos + length > len(buf) or buf[last] != 0x0A:
            return None
        keyword, eq, value = buf[digits + 1 : last].partition(b"=")
        if not keyword or not eq:
            return None
        records.append((keyword, value))
        pos += length
    return records
