"""Positioned reads over a file: the only place ckptpeek touches file bytes.

A :class:`ByteSource` wraps a path (``os.pread`` on a descriptor it owns) or a seekable
binary file object (``seek`` + ``read``). It knows the file size, counts the bytes it
has handed out, and checks every read against the end of the file, so a length a file
merely claims never becomes an allocation.

Every path ckptpeek reads is opened by :func:`open_regular`, which refuses what is not a
regular file before a read can block on it (a FIFO named ``model.ckpt`` would hang any
reader forever). Tensor data is read into memory, never memory-mapped: a mapping of a
file its writer truncates kills the process with ``SIGBUS`` when a page past the new
end is touched, and numpy arrays outlive any check. A read of a file whose size is no
longer the size it had when opened raises ``file-changed`` (checked before and after
each read from the file).
"""

from __future__ import annotations

import io
import os
import stat
import threading

from ckptpeek.errors import error

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from typing import BinaryIO, Protocol
else:
    Protocol = object  # the protocols below are plain documenting classes at run time

__all__ = ("ByteSource", "CheckpointSource", "ReadableSource", "open_regular")

#: O_NONBLOCK where the platform has it: an open of a FIFO then returns at once
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
}


def open_regular(path: str | os.PathLike[str]) -> int:
    """A read-only descriptor of ``path``, refused unless it is a regular file.

    Opened with ``O_NONBLOCK`` (an ``open`` of a FIFO blocks until a writer comes; with
    it, it returns at once), checked with ``fstat`` (the descriptor's file, not the
    path's, which could be swapped in between), then made blocking again. Every file
    ckptpeek reads is opened here.

    Raises:
        UnsupportedError: ``not-regular-file`` for a FIFO, socket, device or directory.
        OSError: a missing file, no permission.
    """
    fd = os.open(path, os.O_RDONLY | _O_NONBLOCK | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
            raise error(
                "not-regular-file",
                f"{kind}: only regular files are read",
                path=os.fspath(path),
            )
        if _O_NONBLOCK:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


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
        self._fd: int | None = None
        self._fileobj: BinaryIO | None = None
        self._kept: tuple[int, bytes] = (0, b"")  # one region kept in memory (see keep())
        if isinstance(source, (str, os.PathLike)):
            self.path: str | None = os.fspath(source)
            self._fd = open_regular(self.path)
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

    @property
    def identity(self) -> tuple[int, int] | None:
        """``(st_dev, st_ino)`` of the open file (``None`` for a file object): two paths
        of one file - symlinks, hard links - have the same identity."""
        if self._fd is None:
            return None
        st = os.fstat(self._fd)
        return st.st_dev, st.st_ino

    def reopen(self) -> ByteSource:
        """This source while open; once closed, a new one on the same path (tensors of a
        closed checkpoint read their bytes on demand), checked to be the same size."""
        if not self.closed:
            return self
        if self.path is None:
            raise error(
                "source-closed",
                "the checkpoint was read from a file object and is closed: read its tensors "
                "while it is open, or open it by path",
            )
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
            self._check_size(self._fd, what, member, offset)
            data = os.pread(self._fd, n, offset)
            if len(data) == n:
                self._check_size(self._fd, what, member, offset)
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
            raise self._changed(
                f"short read: {what} wanted {n} bytes, got {len(data)}", member, offset
            )
        return data

    def _check_size(self, fd: int, what: str, member: str | None, offset: int) -> None:
        """``file-changed`` unless the file still has the size it had when opened."""
        now = os.fstat(fd).st_size
        if now != self.size:
            raise self._changed(
                f"reading {what}: {now} bytes, {self.size} when opened", member, offset
            )

    def _changed(self, why: str, member: str | None, offset: int) -> Exception:
        return error(
            "file-changed",
            f"file changed since it was opened ({why})",
            path=self.path,
            member=member,
            offset=offset,
        )

    def keep(self, offset: int, data: bytes) -> None:
        """Remember ``data`` (read at ``offset``) so later reads inside it cost no I/O.

        The ZIP reader keeps its tail read: for small files it holds the whole archive,
        and for large ones the central directory.
        """
        self._kept = (offset, data)

    def view(
        self, offset: int, n: int, *, what: str = "data", member: str | None = None
    ) -> memoryview:
        """``n`` bytes at ``offset`` as a memoryview: the bytes of one tensor, read whole
        into memory (never mapped: see the module docstring). The file's size is checked
        even when the bytes come from the kept region: a tensor is never read from a
        file that changed since it was opened."""
        if self._fd is not None:
            self._check_size(self._fd, what, member, offset)
        if offset < 0 or n < 0 or offset + n > self.size:
            raise error(
                "truncated",
                f"{what} lies outside the file: bytes {offset}..{offset + n} of {self.size}",
                path=self.path,
                member=member,
                offset=offset,
            )
        return memoryview(self.read_at(offset, n, what=what, member=member))

    def close(self) -> None:
        """Release the descriptor (file objects passed in are left open: they are the caller's)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._fileobj = None

    def __enter__(self) -> ByteSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
