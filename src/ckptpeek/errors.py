"""The one exception hierarchy of ckptpeek.

Every error carries a stable ``code`` (kebab-case), and where it applies the file
``path``, the archive ``member`` and the byte ``offset`` (within that member) at which
the problem was found. The message is rendered in one place, tomli-style::

    unknown opcode 0xf3 (at byte 1187 of archive/data.pkl in epoch=3-step=1200.ckpt)
"""

from __future__ import annotations

from typing import Any

__all__ = (
    "CheckpointError",
    "FormatError",
    "UnsafePickleError",
    "UnsupportedError",
    "LimitError",
)


class CheckpointError(Exception):
    """Base of every error ckptpeek raises on a file.

    Attributes:
        code: a stable kebab-case identifier of the cause (see the README's table).
        path: the file (or ``None`` for an anonymous file object).
        member: the archive member the problem is in, when the format has members.
        offset: byte offset within ``member`` (or within the file when ``member`` is None).
    """

    def __init__(
        self,
        msg: str,
        *,
        code: str,
        path: str | None = None,
        member: str | None = None,
        offset: int | None = None,
        **details: Any,
    ) -> None:
        if type(self) is CheckpointError:
            raise TypeError("raise a subclass of CheckpointError, not the base class")
        self.msg = msg
        self.code = code
        self.path = path
        self.member = member
        self.offset = offset
        self.details = details
        super().__init__(msg)

    def located(self, *, path: str | None = None, member: str | None = None,
                offset_base: int = 0) -> CheckpointError:
        """Fill in where the error happened, keeping what is already known.

        Readers that run an inner parser over a member (the pickle VM knows only the
        offset within its bytes) call this on the way out; ``offset_base`` shifts an
        offset found in a sub-buffer.
        """
        if self.path is None:
            self.path = path
        if self.member is None:
            self.member = member
        if self.offset is not None and offset_base:
            self.offset += offset_base
        return self

    def __str__(self) -> str:
        where = []
        if self.offset is not None:
            where.append(f"byte {self.offset}")
        if self.member is not None:
            where.append(("of " if where else "") + self.member)
        if self.path is not None:
            where.append(("in " if where else "") + str(self.path))
        return f"{self.msg} (at {' '.join(where)})" if where else self.msg

    def __reduce__(self) -> Any:  # keep errors picklable across process pools
        return (_rebuild_error, (type(self), self.msg, self.code, self.path, self.member,
                                 self.offset, self.details))


def _rebuild_error(cls: type[CheckpointError], msg: str, code: str, path: str | None,
                   member: str | None, offset: int | None,
                   details: dict[str, Any]) -> CheckpointError:
    return cls(msg, code=code, path=path, member=member, offset=offset, **details)


class FormatError(CheckpointError, ValueError):
    """The bytes are not a valid instance of the format they claim (corrupt, truncated, lying)."""


class UnsafePickleError(CheckpointError):
    """A well-formed pickle names a global that is not known to be safe (``strict=True``)."""


class UnsupportedError(CheckpointError):
    """A valid file using a format or feature ckptpeek does not read (yet)."""


class LimitError(CheckpointError):
    """A resource guard tripped (pickle size, nesting depth, memo size, container length)."""
