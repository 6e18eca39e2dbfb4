"""Which format is this file? Decided from its bytes (start and end), never its name."""

from __future__ import annotations

import struct

from ckptpeek.errors import error

from .source import ByteSource
from .tar import TAR_BLOCK, tar_header

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from typing import Final

__all__ = ("sniff",)

_ZIP_LOCAL: Final = b"PK\x03\x04"
_ZIP_EMPTY: Final = b"PK\x05\x06"
# torch.save's legacy format starts with a pickled LONG1 magic number 0x1950a86a20f9469cfc6c
_LEGACY_MAGIC: Final = b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
_LEGACY_MAGIC_TEXT: Final = b"L%dL\n" % 0x1950A86A20F9469CFC6C


def sniff(source: ByteSource) -> str:
    """Return ``"zip"``, ``"torch-legacy"``, ``"safetensors"``, ``"tar"`` or ``"json"``
    (a Hugging Face sharded-checkpoint index).

    Raises:
        FormatError: ``empty-file`` or ``unknown-format`` (the message says what the
            first bytes look like).
    """
    if source.size == 0:
        raise error("empty-file", "file is empty", path=source.path, offset=0)
    head = source.read_at(0, min(source.size, 512), what="file header")
    source.keep(0, head)  # readers re-read the start of the file: serve it from memory
    if head.startswith((_ZIP_LOCAL, _ZIP_EMPTY)):
        return "zip"
    # torch.load tries tarfile on anything that is no ZIP, before it reads pickles: a
    # file tarfile opens is a tar to torch, whatever else it may also look like (the
    # tar reader refuses one that is also a pickle)
    if tar_header(head[:TAR_BLOCK]) is not None:
        return "tar"
    # protocol 4+ puts an 8-byte FRAME header before the magic number
    if (
        head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
        and _LEGACY_MAGIC in head[:32]
    ):
        return "torch-legacy"
    if head.startswith(_LEGACY_MAGIC_TEXT):  # protocol 0/1: the magic as a LONG in text
        return "torch-legacy"
    if len(head) >= 10:
        # an 8-byte header length, then JSON (which may start with whitespace); lengths
        # that lie are the safetensors reader's to report
        (n,) = struct.unpack_from("<Q", head)
        if (
            n >= 2
            and head[8:9] in (b"{", b" ", b"\t", b"\n", b"\r")
            and head[8:].lstrip()[:1] in (b"{", b"")
        ):
            return "safetensors"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if head.lstrip()[:1] == b"{" and b'"weight_map"' in source.read_at(
        0, min(source.size, 1 << 20), what="JSON index"
    ):
        return "json"
    raise error(
        "unknown-format",
        f"not a checkpoint format I know: {_describe(head)}",
        path=source.path,
        offset=0,
    )


#: non-checkpoint files a checkpoint path often holds instead, by their first bytes
_KNOWN_OTHERS: Final = (
    (
        b"version https://git-lfs.github.com/spec/",
        "a Git LFS pointer (the file itself was not fetched)",
    ),
    (b"\x1f\x8b", "a gzip stream"),
    (b"\x28\xb5\x2f\xfd", "a zstd stream"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (Keras .h5?)"),
    (b"\x93NUMPY", "a numpy .npy array"),
)


def _describe(head: bytes) -> str:
    """What the file is not (and, for a few common non-checkpoints, what it is), never
    what it holds: whoever chose the path often sees the message, and the path may lead
    to a file they could not read themselves (a symlink or hard link to ``/etc/passwd``
    in an uploaded tree), so no byte of the file is quoted, whatever the path is."""
    for magic, what in _KNOWN_OTHERS:
        if head.startswith(magic):
            return f"the file is {what}"
    return "its first bytes are no ZIP, tar, torch pickle, safetensors or JSON index header"
