"""The ZIP directory reader: the C and the pure parser must give the same directory.

The input is a whole file. ``read_directory(native=True)`` and ``native=False`` must
give the same records and lookup index, or the same error (class, code, offset, member,
path, message). A directory both accept is then read as a checkpoint reader reads it:
``verify()`` and every member (up to 16, each capped at 1 MiB) - again only
CheckpointError may escape. And one view of the archive: when Python's ``zipfile`` reads
the same bytes too, it must see the same names, and a member both read must have the same
bytes (ckptpeek refuses what could give readers different views; it must never accept
an archive that another reader sees differently).
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

from _common import Finding, capture, instrument, main, reraise, same

instrument()

from ckptpeek.io import zipdir  # noqa: E402
from ckptpeek.io.source import ByteSource  # noqa: E402

if not zipdir.NATIVE:
    raise SystemExit(f"the C ZIP directory parser is not built: {zipdir.NATIVE_ERROR}")

MAX_MEMBERS_READ = 16
MAX_MEMBER_SIZE = 1 << 20


def directory(data: bytes, native: bool) -> zipdir.ZipDirectory:
    return zipdir.read_directory(ByteSource(io.BytesIO(data)), native=native)


def shape(d: zipdir.ZipDirectory) -> tuple[Any, ...]:
    records = [tuple(m) for m in d.records]
    index = sorted((key, tuple(m)) for key, m in d._index.items())
    return (records, index, d.names())


def members(d: zipdir.ZipDirectory) -> dict[str, bytes | None]:
    """Every member's bytes (``None`` where ckptpeek refuses to read it)."""
    if len(d.records) <= MAX_MEMBERS_READ:
        d.verify()
    out: dict[str, bytes | None] = {}
    for m in d.records[:MAX_MEMBERS_READ]:
        got, exc = capture(lambda m=m: d.read(m, max_size=MAX_MEMBER_SIZE))
        reraise([(got, exc)])
        out[m.name] = got[1] if got[0] == "ok" else None
    return out


def zipfile_view(data: bytes) -> tuple[list[str], dict[str, bytes]] | None:
    """What Python's zipfile reads (names, and the members it can read), or None."""
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - zipfile refusing the archive is fine
        return None
    read: dict[str, bytes] = {}
    with z:
        names = z.namelist()
        for info in z.infolist()[:MAX_MEMBERS_READ]:
            if info.file_size > MAX_MEMBER_SIZE:
                continue
            try:
                read[info.filename] = z.read(info)
            except Exception:  # noqa: BLE001, PERF203 - a member zipfile cannot read
                continue
    return names, read


def one_input(data: bytes) -> None:
    c = capture(lambda: directory(data, True))
    py = capture(lambda: directory(data, False))
    reraise([c, py])
    if c[0][0] != "ok" or py[0][0] != "ok":
        same("C and pure directory parsers", c[0], py[0])
        return
    same("C and pure directories", shape(c[0][1]), shape(py[0][1]))
    d = py[0][1]
    got, exc = capture(lambda: members(d))
    reraise([(got, exc)])
    view = zipfile_view(data)
    if got[0] != "ok" or view is None:
        return
    names, read = view
    if names != d.names():
        raise Finding(f"zipfile sees members {names[:8]}, ckptpeek {d.names()[:8]}")
    for name, content in got[1].items():
        if content is not None and name in read and read[name] != content:
            raise Finding(f"member {name!r}: zipfile reads other bytes than ckptpeek")


if __name__ == "__main__":
    main(one_input)
