"""Positioned reads over a file: the only place ckptpeek touches file bytes.

A :class:`ByteSource` wraps a path (``os.pread`` on a descriptor it owns, ``mmap`` for
tensor data) or a seekable binary file object (``seek`` + ``read``). It knows the file
size, counts the bytes it has handed out, and checks every read against the end of the
file, so a length a file merely claims never becomes an allocation.
"""

from __future__ import annotations

import io
import mmap
import os
import threading

from ckptpeek.errors import error

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from typing import BinaryIO, Protocol
else:
    Protocol = object  # the protocols below are plain documenting classes at run time

__all__ = ("ByteSource", "CheckpointSource", "ReadableSource")


class CheckpointSource(Protocol):
    """What a ``Checkpoint`` keeps of where its bytes come from: a :class:`ByteSource`,
    or an aggregate of several files (a DCP directory's data files, a sharded
    checkpoint's shards, the file ``torch.load`` read)."""

    @property
    def path(self) -> str | None: ...

    @property
    def size(self) -> int: ...

    @property
    def bytes_read(self) -> int: ...

    @property
    def closed(self) -> bool: ...

    def close(self) -> None: ...


class ReadableSource(CheckpointSource, Protocol):
    """What the readers (``sniff``, ``zipdir``, the format readers and their storage
    readers) use of a :class:`ByteSource`: checked positioned reads, zero-copy views,
    one kept region, and reopening by path. A DCP item window offers the same."""

    def read_at(
        self,
        offset: int,
        n: int,
        *,
        what: str = ...,
        member: str | None = ...,
        exact: bool = ...,
    ) -> bytes: ...

    def view(
        self, offset: int, n: int, *, what: str = ..., member: str | None = ...
    ) -> memoryview: ...

    def keep(self, offset: int, data: bytes) -> None: ...

    def reopen(self) -> ReadableSource: ...


class ByteSource:
    """Random-access reads over a checkpoint file.

    Args:
        source: a path or a seekable binary file object (its position is restored
            after every read, so the caller's handle is left as it was).
    """

    def __init__(self, source: str | os.PathLike[str] | BinaryIO) -> None:
        self.bytes_read = 0
        self._lock = threading.Lock()
        self._mmap: mmap.mmap | None = None
        self._fd: int | None = None
        self._fileobj: BinaryIO | None = None
        self._kept: tuple[int, bytes] = (0, b"")  # one region kept in memory (see keep())
        if isinstance(source, (str, os.PathLike)):
            self.path: str | None = os.fspath(source)
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            self.size = os.fstat(self._fd).st_size
        elif hasattr(source, "read") and hasattr(source, "seek"):
            self.path = getattr(source, "name", None)
            if not isinstance(self.path, str):
                self.path = None
            self._fileobj = source
            pos = source.tell()
            self.size = source.seek(0, io.SEEK_END)
            source.seek(pos)
        else:
            raise TypeError(f"expected a path or a binary file object, got {type(source).__name__}")

    @property
    def closed(self) -> bool:
        return self._fd is None and self._fileobj is None

    def reopen(self) -> ByteSource:
        """This source while open; once closed, a new one on the same path (tensors of a
        closed checkpoint read their bytes on demand), checked to be the same size."""
        if not self.closed:
            return self
        if self.path is None:
            raise ValueError("the checkpoint's file object is closed")
        src = ByteSource(self.path)
        if src.size != self.size:
            src.close()
            raise error("file-changed", "file changed size since it was opened", path=self.path)
        return src

    def read_at(
        self,
        offset: int,
        n: int,
        *,
        what: str = "data",
        member: str | None = None,
        exact: bool = True,
    ) -> bytes:
        """Read ``n`` bytes at ``offset``.

        With ``exact`` (the default) a read past the end of the file raises a
        ``FormatError(code="truncated")`` naming ``what`` was being read; otherwise the
        available bytes are returned.
        """
        if offset < 0 or n < 0 or offset > self.size or (exact and offset + n > self.size):
            if not exact and 0 <= offset:
                n = max(0, min(n, self.size - offset))
            else:
                raise error(
                    "truncated",
                    f"file is truncated: {what} needs bytes {offset}..{offset + n} "
                    f"but the file has {self.size}",
                    path=self.path,
                    member=member,
                    offset=offset,
                )
        n = min(n, self.size - offset)
        if n == 0:
            return b""
        kept_start, kept = self._kept
        if kept_start <= offset < kept_start + len(kept):
            head = kept[offset - kept_start : offset - kept_start + n]
            if len(head) == n:
                return head
            # the read starts in the kept region: only the rest comes from the file
            return head + self.read_at(
                offset + len(head), n - len(head), what=what, member=member, exact=exact
            )
        if self._fd is not None:
            data = os.pread(self._fd, n, offset)
        elif self._fileobj is not None:
            with self._lock:
                pos = self._fileobj.tell()
                self._fileobj.seek(offset)
                data = self._fileobj.read(n)
                self._fileobj.seek(pos)
        else:
            raise ValueError("I/O operation on a closed checkpoint")
        self.bytes_read += len(data)
        if len(data) != n:  # the file shrank under us (still being written?)
            raise error(
                "truncated",
                f"short read: {what} wanted {n} bytes, got {len(data)}",
                path=self.path,
                member=member,
                offset=offset,
            )
        return data

    def keep(self, offset: int, data: bytes) -> None:
        """Remember ``data`` (read at ``offset``) so later reads inside it cost no I/O.

        The ZIP reader keeps its tail read: for small files it holds the whole archive,
        and for large ones the central directory.
        """
        self._kept = (offset, data)

    def view(
        self, offset: int, n: int, *, what: str = "data", member: str | None = None
    ) -> memoryview:
        """A zero-copy view of ``n`` bytes at ``offset`` (memory-mapped for local files).

        Used for tensor data: only the pages touched are read from disk.
        """
        if offset < 0 or n < 0 or offset + n > self.size:
            raise error(
                "truncated",
                f"{what} lies outside the file: bytes {offset}..{offset + n} of {self.size}",
                path=self.path,
                member=member,
                offset=offset,
            )
        if self._fd is not None and n > 0:
            with self._lock:
                if self._mmap is None:
                    self._mmap = mmap.mmap(self._fd, 0, access=mmap.ACCESS_READ)
            self.bytes_read += n
            return memoryview(self._mmap)[offset : offset + n]
        return memoryview(self.read_at(offset, n, what=what, member=member))

    def close(self) -> None:
        """Release the descriptor (file objects passed in are left open: they are the caller's)."""
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:  # numpy arrays still view the map; it closes when they go
                pass
            self._mmap = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._fileobj = None

    def __enter__(self) -> ByteSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
