"""The catalog's three file rules, stated once: what kind a file is, whether a path stays
inside the catalog root, and how a file is opened (only a regular one).

Every reader of the catalog goes through these: the scan (``scan.not_readable``), the
text reader (sidecars, Hydra configs, an existing resolved config), the cache (its own
database file, a checkpoint's content stamp) and ``--write-resolved``.
"""

from __future__ import annotations

import errno
import os
import stat

__all__ = ("NotRegularError", "file_kind", "inside", "open_regular")

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISLNK, "a symlink"),
)


def file_kind(mode: int) -> str | None:
    """None for a regular file, else what it is (``"a FIFO"``, ``"a directory"``...)."""
    if stat.S_ISREG(mode):
        return None
    for test, name in _KINDS:
        if test(mode):
            return name
    return "a special file"


def inside(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> bool:
    """Whether ``path``, every symlink resolved, is ``root`` or below it."""
    real, top = os.path.realpath(path), os.path.realpath(root)
    return real == top or real.startswith(os.path.join(top, ""))


class NotRegularError(OSError):
    """``open_regular`` found something other than a regular file: ``kind`` says what."""

    def __init__(self, path: str | os.PathLike[str], kind: str) -> None:
        super().__init__(errno.EINVAL, f"not a regular file ({kind})", os.fspath(path))
        self.kind = kind


def open_regular(
    path: str | os.PathLike[str], *, dir_fd: int | None = None, nofollow: bool = False
) -> tuple[int, os.stat_result]:
    """Open a regular file read-only: a descriptor and its ``fstat``, checked on the
    opened descriptor (no race with a rename). ``O_NONBLOCK``: a FIFO never blocks the
    open. ``nofollow``: a symlink is refused, not followed; ``dir_fd``: ``path`` is
    relative to that directory.

    Raises NotRegularError (a FIFO, a socket, a device, a directory, a symlink with
    ``nofollow``) or OSError (missing, permissions)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if nofollow:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket, or a FIFO-like special file
            raise NotRegularError(path, "a special file") from None
        if exc.errno == errno.ELOOP and nofollow:
            raise NotRegularError(path, "a symlink") from None
        if exc.errno == errno.EISDIR:
            raise NotRegularError(path, "a directory") from None
        raise
    try:
        st = os.fstat(fd)
        kind = file_kind(st.st_mode)
        if kind is not None:
            raise NotRegularError(path, kind)
    except BaseException:
        os.close(fd)
        raise
    return fd, st
