"""Legacy ``torch.save`` files: torch < 1.6, or ``_use_new_zipfile_serialization=False``.

Layout (torch/serialization.py ``_legacy_save``), a run of pickles then raw storages:

1. the magic number ``0x1950a86a20f9469cfc6c`` (a pickled int);
2. the protocol version, ``1001``;
3. ``sys_info``: ``{"protocol_version", "little_endian", "type_sizes"}`` (torch's
   reader unpickles it and ignores it, so any pickle is accepted here);
4. the object itself; tensors refer to storages by persistent id
   ``('storage', StorageType, root_key, location, numel, view_metadata)`` with
   ``view_metadata`` ``None`` or ``(view_key, offset, view_size)`` (a sub-storage, in
   elements of the root; only very old files have them); ``nn.Module`` classes saved
   whole appear as ``('module', cls, source_file, source)``;
5. the list of storage keys, in the order their data follows;
6. per key: an 8-byte little-endian element count, then ``count * element_size`` bytes.

Storage bytes are always little-endian: torch's writer converts on big-endian machines
and its reader converts back, whatever ``sys_info`` says (``little_endian`` records only
the writer's machine; very old writers put the *count* in native order, which is
accepted when ``sys_info`` says big-endian and only that reading fits).

The very old tar format (torch < 0.4: a tar archive with members ``sys_info``,
``pickle``, ``tensors`` and ``storages``) is read by :func:`_read_tar`.

Every pickle torch unpickles counts (``torch/serialization.py`` ``_legacy_load``): with
``weights_only=False`` the magic number, the protocol version, ``sys_info`` and the
storage-key list go through ``pickle_module.load`` and the object through a subclass of
``pickle_module.Unpickler`` - CPython's unpickler for all five, so a global in any of
them is imported; in the tar format, ``pickle_module.load`` reads the storage count,
each storage record, the view list, the tensor count and each tensor record, and the
``Unpickler`` subclass the ``pickle`` member. Each of them runs through the restricted
interpreter and its globals go into ``Checkpoint.globals()`` (strict mode refuses an
unknown one in any of them). Where the pickles begin is torch's too: a pickle that ends
inside a ``FRAME`` running past its ``STOP`` is refused (``legacy-frame-overrun``),
because CPython's unpickler leaves a buffered file after the ``STOP`` but a
``BytesIO`` or the unbuffered member files of the tar format after the frame.

Only the pickles (at the start of the file, small) and 8 bytes per storage are read;
tensor data is memory-mapped on demand.
"""

from __future__ import annotations

import struct

from ckptpeek.checkpoint import Checkpoint, merge_globals
from ckptpeek.errors import CheckpointError, error
from ckptpeek.io.tar import TAR_BLOCK, pax_records, tar_block, tar_header
from ckptpeek.tensor import StorageRef, new_dense
from ckptpeek.torch_types import StorageType
from ckptpeek.unpickle.standins import KnownGlobal, safe_repr

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from typing import Any, Final

    from ckptpeek.io.source import ReadableSource

    from .options import ReadOptions

__all__ = ("read", "LegacyStorageReader", "MAGIC_NUMBER", "PROTOCOL_VERSION")

MAGIC_NUMBER: Final = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION: Final = 1001
#: the first read covers the small pickles of most files; it grows x4 when a pickle
#: runs past it (each pickle is re-run on the longer buffer, so the total stays linear)
_FIRST_CHUNK: Final = 64 * 1024
_GROWTH: Final = 4
_COUNT: Final = struct.Struct("<q")
_FRAME: Final = struct.Struct("<BQ")  # the FRAME opcode (0x95) and its 8-byte length


def _text(value: Any) -> Any:
    """torch's ``_maybe_decode_ascii``: Python 2 ``str`` read as bytes -> text."""
    if type(value) is bytes:
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            return value
    return value


class LegacyStorageReader:
    """Where each storage of a legacy file lives; reads its bytes (memory-mapped).

    ``spans`` maps a storage key to ``(absolute offset of its first byte, nbytes)``; it
    is filled by the walk over the storage headers after the pickles are read.
    """

    byteorder = "little"  # always: see the module docstring

    def __init__(self, source: ReadableSource) -> None:
        self.source = source
        self.path = source.path
        self._size = source.size
        self.spans: dict[str, tuple[int, int]] = {}

    def _source(self) -> ReadableSource:
        self.source = self.source.reopen()
        return self.source

    def storage_location(self, storage: StorageRef) -> tuple[None, int, int]:
        span = self.spans.get(storage.key)
        if span is None:  # cannot happen for a Checkpoint that read() returned
            raise error(
                "missing-storage",
                f"storage {storage.key!r} has no data in the file",
                path=self.path,
            )
        return None, span[0], span[1]

    def storage_view(self, storage: StorageRef, start: int, stop: int) -> memoryview:
        _, base, size = self.storage_location(storage)
        if not 0 <= start <= stop <= size:
            raise error(
                "tensor-out-of-storage",
                f"bytes {start}..{stop} are past the end of storage {storage.key!r} ({size} bytes)",
                path=self.path,
            )
        return self._source().view(base + start, stop - start, what=f"storage {storage.key!r}")


class _Resolver:
    """``persistent_load`` of the main pickle: legacy storage ids -> :class:`StorageRef`.

    As in torch, the first id naming a root key decides its type and length; a view
    (``view_metadata``) is a storage of its own, a slice of the root's bytes.
    """

    __slots__ = ("reader", "limit", "roots", "cache", "views")

    def __init__(self, reader: LegacyStorageReader, limit: int) -> None:
        self.reader = reader
        self.limit = limit  # no storage can hold more bytes than the file has after the pickles
        self.reset()

    def reset(self) -> None:
        self.roots: dict[str, StorageRef] = {}
        self.cache: dict[str, StorageRef] = {}  # roots and views, like torch's one dict
        self.views: dict[str, tuple[str, int]] = {}  # view key -> (root key, element offset)

    def _bad(self, msg: str, code: str = "bad-persistent-id") -> CheckpointError:
        return error(code, msg, path=self.reader.path)

    def __call__(self, pid: Any) -> Any:
        if type(pid) is not tuple or not pid:
            raise self._bad(f"persistent id {safe_repr(pid)} is not a tuple")
        tag = _text(pid[0])
        if tag == "module" and len(pid) == 4:
            return pid[1]  # an nn.Module class saved with torch.save(model): the class
        if tag != "storage" or len(pid) != 6:
            raise error(
                "bad-persistent-id",
                f"unknown persistent id {safe_repr(pid)}",
                path=self.reader.path,
            )
        _, stype, key, location, numel, view = pid
        key, location = _text(key), _text(location)
        root = self.cache.get(key) if type(key) is str else None
        if root is None:
            if type(stype) is not StorageType:
                raise self._bad(f"persistent id names {safe_repr(stype)}, not a storage type")
            if not (
                type(key) is str and type(location) is str and type(numel) is int and numel >= 0
            ):
                raise self._bad(f"malformed storage persistent id {safe_repr(pid)}")
            if numel * stype.dtype.itemsize > self.limit:
                raise self._bad(
                    f"storage {key!r} claims {numel} x {stype.dtype} but the file "
                    f"has {self.limit} bytes after its pickles",
                    "storage-too-small",
                )
            root = self.cache[key] = self.roots[key] = StorageRef(
                key, stype.dtype, numel, location, self.reader
            )
        if view is None:
            return root
        if not (type(view) is tuple and len(view) == 3):
            raise self._bad(f"malformed storage view {safe_repr(view)}")
        view_key, offset, size = _text(view[0]), view[1], view[2]
        if not (
            type(view_key) is str
            and type(offset) is int
            and type(size) is int
            and offset >= 0
            and size >= 0
        ):
            raise self._bad(f"malformed storage view {safe_repr(view)}")
        ref = self.cache.get(view_key)
        if ref is None:
            if root.key not in self.roots:
                raise self._bad(f"storage view {view_key!r} of {root.key!r}, itself a view")
            if offset + size > root.numel:
                raise self._bad(
                    f"storage view {view_key!r} covers elements {offset}..{offset + size} "
                    f"of {root.key!r}, which has {root.numel}",
                    "storage-too-small",
                )
            ref = self.cache[view_key] = StorageRef(
                view_key, root.dtype, size, root.location, self.reader
            )
            self.views[view_key] = (root.key, offset)
        return ref


class _Reader:
    """One read of one file: the pickles in order, then the storage headers."""

    def __init__(self, source: ReadableSource, opts: ReadOptions) -> None:
        self.source = source
        self.opts = opts
        self.path = source.path
        self.base = 0  # file offset of buf[0]
        self.buf = b""  # bytes read around the pickles, grown as they need
        #: the globals of every pickle run so far (``merge_globals``): the Checkpoint's
        self.globals: dict[tuple[str, str], bool] = {}

    def run(
        self,
        pos: int,
        what: str,
        persistent_load: Any = None,
        select: Any = None,
        *,
        end: int | None = None,
        first: int = _FIRST_CHUNK,
        extra_globals: Any = None,
        member: str | None = None,
        member_start: int = 0,
    ) -> tuple[Any, int]:
        """Run the pickle starting at file offset ``pos``; returns its result and the
        offset just past it.

        A pickle that runs past the bytes read so far is re-run on a longer buffer; one
        that runs past ``end`` (the end of the file or of its tar member) is truncated.
        """
        end = self.source.size if end is None else end
        limit = self.opts.limits.max_pickle_bytes
        if not self.base <= pos <= self.base + len(self.buf):
            self.base, self.buf = pos, b""
        want = max(first, 1)
        while True:
            stop = min(pos + want, end, pos + limit)
            have = self.base + len(self.buf)
            if have < stop:
                self.buf += self.source.read_at(have, stop - have, what=what, member=member)
            data = self.buf[pos - self.base : stop - self.base]
            try:
                result = self.opts.run_pickle(
                    data, persistent_load, select=select, extra_globals=extra_globals
                )
            except CheckpointError as exc:
                if exc.code == "truncated" and stop < end:
                    if stop - pos >= limit:
                        raise error(
                            "limit-pickle-size",
                            f"the {what} runs past {limit} bytes (Limits.max_pickle_bytes)",
                            path=self.path,
                            member=member,
                            offset=pos - member_start,
                        ) from None
                    want = (stop - pos) * _GROWTH
                    if persistent_load is not None and hasattr(persistent_load, "reset"):
                        persistent_load.reset()  # forget the partial run's ids
                    continue
                if exc.code == "truncated":
                    exc.msg = f"{what}: {exc.msg}"
                raise exc.located(
                    path=self.path, member=member, offset_base=pos - member_start
                ) from None
            if result.end <= 0:
                raise error(
                    "truncated",
                    f"the {what} has no end",
                    path=self.path,
                    member=member,
                    offset=pos - member_start,
                )
            frame = _frame_past_stop(data, result.end)
            if frame is not None:
                raise error(
                    "legacy-frame-overrun",
                    f"the {what} ends at byte {result.end - 1} inside the FRAME at byte "
                    f"{frame}, which runs past it: torch reads the next pickle from either "
                    f"end depending on how the file is opened",
                    path=self.path,
                    member=member,
                    offset=pos - member_start + frame,
                )
            merge_globals(self.globals, result.globals)
            return result, pos + result.end


def _frame_past_stop(data: bytes, end: int) -> int | None:
    """The offset of a ``FRAME`` opcode of the pickle ``data[:end]`` (``end`` is just past
    its ``STOP``) whose frame runs past ``end``, or ``None``.

    CPython's unpickler reads a whole frame when it meets one; what it leaves of the
    file after ``STOP`` then depends on the file (peek-able or not), so the next pickle
    would start in one of two places. ``torch.save`` ends its last frame at ``STOP``.
    A quick scan for ``0x95`` bytes with a length that fits rules out almost every
    pickle; a candidate is confirmed by decoding the opcodes (never running them).
    """
    last = max(end - 9, 0)  # a FRAME's 9 bytes end before STOP (a negative bound would wrap)
    i = data.find(b"\x95", 0, last)
    while i >= 0:
        if end < i + 9 + _FRAME.unpack_from(data, i)[1] <= len(data):
            break  # a frame that could be executed (its bytes are there) and passes STOP
        i = data.find(b"\x95", i + 1, last)
    else:
        return None
    import pickletools  # noqa: PLC0415 - only for a rare candidate

    try:
        for op, arg, at in pickletools.genops(data[:end]):
            if op.name == "FRAME" and type(arg) is int and (at or 0) + 9 + arg > end:
                return at or 0
    except ValueError:  # the engine read these opcodes; if genops cannot, assume the worst
        return i
    return None


def _expect(value: Any, want: Any, what: str, code: str, path: str | None, pos: int) -> None:
    if type(value) is not int or value != want:
        raise error(
            code,
            f"{what} is {safe_repr(value)}, expected {want!r}: not a legacy "
            f"torch.save file (or a corrupt one)",
            path=path,
            offset=pos,
        )


def read(source: ReadableSource, opts: ReadOptions) -> Checkpoint:
    """Read a legacy ``torch.save`` file (or its tar predecessor) header-only."""
    r = _Reader(source, opts)
    r.buf = source.read_at(0, min(source.size, _FIRST_CHUNK), what="file header")
    # torch.load of a path tries tarfile first: whatever tarfile opens is a tar to it
    if tar_header(r.buf[:TAR_BLOCK]) is not None or r.buf[257:262] == b"ustar":
        return _read_tar(source, opts, r)
    path = source.path
    magic, pos = r.run(0, "magic number")
    _expect(magic.value, MAGIC_NUMBER, "the magic number", "legacy-bad-magic", path, 0)
    start = pos
    version, pos = r.run(pos, "protocol version")
    _expect(
        version.value,
        PROTOCOL_VERSION,
        "the legacy protocol version",
        "legacy-bad-version",
        path,
        start,
    )
    sys_info, pos = r.run(pos, "sys_info pickle")
    # torch unpickles sys_info and never looks at it (``_legacy_load``: ``_sys_info``):
    # any value is accepted; only a dict saying ``little_endian: False`` allows the old
    # native-order storage counts (see the module docstring)
    info = sys_info.value
    little = not (isinstance(info, dict) and info.get("little_endian") is False)

    reader = LegacyStorageReader(source)
    resolver = _Resolver(reader, max(0, source.size - pos))
    main_start = pos
    main, pos = r.run(pos, "main pickle", resolver, select=opts.select)
    keys_start = pos
    keys, pos = r.run(pos, "storage key list")
    key_list = keys.value
    if type(key_list) is not list:
        raise error(
            "legacy-bad-header",
            f"the storage key list is a {type(key_list).__name__}",
            path=path,
            offset=keys_start,
        )
    key_list = [_text(k) for k in key_list]
    if any(type(k) is not str for k in key_list) or len(set(key_list)) != len(key_list):
        raise error(
            "legacy-bad-header",
            "the storage key list holds non-string or repeated keys",
            path=path,
            offset=keys_start,
        )
    if len(key_list) > (source.size - pos) // 8:
        raise error(
            "truncated",
            f"{len(key_list)} storages cannot fit in the "
            f"{source.size - pos} bytes after the pickles",
            path=path,
            offset=pos,
        )
    roots = resolver.roots
    if any(k not in roots for k in key_list) and not main.complete:
        # a selective run skipped tensors whose storages precede ones it needs: their
        # element sizes (to step over their bytes) are only in the skipped ids
        full = _Resolver(reader, resolver.limit)
        r.run(main_start, "main pickle", full, select=None)
        roots = full.roots
    _walk(source, reader, key_list, roots, pos, little)
    listed = set(key_list)
    for key in resolver.roots:
        if key not in listed:
            raise error(
                "missing-storage",
                f"storage {key!r} is used by the pickle but not in the storage key list",
                path=path,
                offset=keys_start,
            )
    for view_key, (root_key, offset) in resolver.views.items():
        base, _ = reader.spans[root_key]
        ref = resolver.cache[view_key]
        reader.spans[view_key] = (base + offset * ref.dtype.itemsize, ref.nbytes)
    return Checkpoint(
        format="torch-legacy",
        backend=opts.engine.ENGINE,
        root=main.value,
        source=source,
        globals_=r.globals,
        limits=opts.limits,
        members={
            "pickle": f"bytes {main_start}..{keys_start}",
            "storages": f"{len(key_list)} from byte {pos}",
            "byteorder": "little" if little else "big",
        },
        selected=None if main.complete else opts.select,
    )


def _walk(
    source: ReadableSource,
    reader: LegacyStorageReader,
    keys: list[str],
    roots: dict[str, StorageRef],
    pos: int,
    little: bool,
) -> None:
    """Step over the storages' headers: 8 bytes read per storage, its data skipped."""
    size = source.size
    path = source.path
    for key in keys:
        ref = roots.get(key)
        if ref is None:
            raise error(
                "missing-storage",
                f"storage {key!r} is in the storage key list but no tensor uses it",
                path=path,
                offset=pos,
            )
        raw = source.read_at(pos, 8, what=f"the header of storage {key!r}")
        (count,) = _COUNT.unpack(raw)
        if count != ref.numel and not little:
            (swapped,) = struct.unpack(">q", raw)  # very old big-endian writers
            if swapped == ref.numel:
                count = swapped
        if count != ref.numel:
            raise error(
                "legacy-storage-mismatch",
                f"storage {key!r} has {count} elements in its header but {ref.numel} in the pickle",
                path=path,
                offset=pos,
            )
        nbytes = count * ref.dtype.itemsize
        if pos + 8 + nbytes > size:
            raise error(
                "truncated",
                f"file is truncated: storage {key!r} needs bytes "
                f"{pos + 8}..{pos + 8 + nbytes} but the file has {size}",
                path=path,
                offset=pos,
            )
        reader.spans[key] = (pos + 8, nbytes)
        pos += 8 + nbytes


# -- the tar format (torch < 0.4) ---------------------------------------------------------
#
# torch/serialization.py ``legacy_load`` reads it: ``storages`` holds a pickled count,
# then per storage a pickled ``(key, location, storage_type)`` followed by an 8-byte
# count and the bytes, then a pickled list of views ``(view_key, root_key, offset,
# numel)``; ``tensors`` holds a pickled count, then per tensor a pickled ``(key,
# storage_key, tensor_type)`` followed by ``<i ndim``, 4 unused bytes, ``ndim`` sizes,
# ``ndim`` strides and the storage offset (``<q`` each); ``pickle`` is the object, whose
# persistent ids are those keys (as text) or ``(module_class, source_file, source)``.
#
# torch finds the members with Python's ``tarfile`` (``tarfile.open(fileobj=f,
# mode="r:")``, then ``extract``/``extractfile`` by name, which take the LAST member of
# that name), and only when ``f`` is a real file: a ``BytesIO`` goes straight to the
# pickles. The walk below reads headers as ``tarfile.TarInfo.frombuf`` does (both
# checksums, every number field, the ustar prefix joined whatever the magic says, a
# V7 directory ``name/``) and refuses whatever readers may resolve differently instead
# of guessing: GNU long names and links, global, Solaris and path-changing PAX headers
# (``tar-extended-header``), a member name used twice (``tar-duplicate-member``), a
# member that is not a regular file, whose size tarfile would not skip or whose
# contents it would follow elsewhere (``tar-member-type``), and a file that a
# file-object ``torch.load`` would read as pickles (``tar-pickle-polyglot``). What is
# left is what ``torch.save`` wrote: regular members, each optionally after a PAX
# header with times, owner, comment or size.

_TAR_MEMBERS: Final = (b"storages", b"tensors", b"pickle")
_TAR_REGULAR: Final = (b"0", b"\0", b"7")  # tarfile's isreg(), GNU sparse "S" refused
#: PAX keywords that say nothing about a member's name, data or layout in tarfile
_PAX_HARMLESS: Final = frozenset(
    (b"mtime", b"atime", b"ctime", b"uid", b"gid", b"uname", b"gname", b"comment")
)
_PAX_MAX: Final = 1 << 20
_MAX_NDIM: Final = 64
#: the tensor classes the ``tensors`` records name (markers: never called)
_TENSOR_TYPES: Final = {
    ("torch", n): KnownGlobal("torch", n)
    for n in (
        "FloatTensor",
        "DoubleTensor",
        "HalfTensor",
        "ByteTensor",
        "CharTensor",
        "ShortTensor",
        "IntTensor",
        "LongTensor",
    )
}
_TENSOR_TYPES.update(
    {("torch.cuda", n): KnownGlobal("torch.cuda", n) for _, n in list(_TENSOR_TYPES)}
)


def _tar_members(source: ReadableSource, opts: ReadOptions) -> dict[bytes, tuple[int, int]]:
    """name -> (data offset, size) of every member, as ``tarfile`` finds them, or an
    error where it might find them otherwise (see the comment above)."""
    members: dict[bytes, tuple[int, int]] = {}
    path = source.path
    pos = 0
    pax: int | None = None  # offset of a PAX header waiting for its member
    pax_size: int | None = None  # the size it gives that member
    while True:
        last = pos + TAR_BLOCK > source.size
        block = b"" if last else source.read_at(pos, TAR_BLOCK, what="tar header")
        if last or block.count(0) == TAR_BLOCK:
            if pax is not None:  # tarfile: a SubsequentHeaderError, and torch reads pickles
                raise error(
                    "tar-bad-header",
                    "a tar PAX header has no member after it",
                    path=path,
                    offset=pax,
                )
            break  # tarfile ends the archive at a short, missing or all-zero block
        header = tar_header(block)
        if header is None:
            raise error(
                "tar-bad-header",
                "tar header has a bad checksum or a number field that is no number",
                path=path,
                offset=pos,
            )
        name, size, kind = header
        shown = name[:100].decode("utf-8", "backslashreplace")
        data = pos + TAR_BLOCK
        if size < 0 or data + tar_block(size) > source.size:
            raise error(
                "truncated",
                f"tar member {shown!r} claims {size} bytes (and their padding to "
                f"{TAR_BLOCK}-byte blocks) past the end of the file",
                path=path,
                offset=pos,
            )
        if kind in (b"x", b"g", b"X", b"L", b"K"):
            if kind != b"x" or pax is not None:
                what = {
                    b"g": "a global PAX header",
                    b"X": "a Solaris extended header",
                    b"L": "a GNU long-name record",
                    b"K": "a GNU long-link record",
                    b"x": "two PAX headers in a row",
                }[kind]
                raise error(
                    "tar-extended-header",
                    f"tar archive has {what}: torch's writer never uses one, and readers "
                    f"disagree on which member it names",
                    path=path,
                    offset=pos,
                )
            if size > _PAX_MAX:
                raise error("tar-bad-header", "tar PAX header is too large", path=path, offset=pos)
            # tarfile parses the whole blocks, padding included
            records = pax_records(source.read_at(data, tar_block(size), what="tar PAX header"))
            if records is None:
                raise error(
                    "tar-bad-header", "tar PAX header records are malformed", path=path, offset=pos
                )
            for keyword, value in records:
                # at most 20 digits: a longer number is past any file, and int() of one
                # past sys.get_int_max_str_digits() fails (tarfile then takes size 0)
                if keyword == b"size" and value.isdigit() and value.isascii() and len(value) <= 20:
                    pax_size = int(value)
                elif keyword not in _PAX_HARMLESS:
                    raise error(
                        "tar-extended-header",
                        f"tar PAX header sets {keyword[:40].decode('utf-8', 'backslashreplace')!r}"
                        f"{'' if keyword != b'size' else ' to no number'}: torch's writer "
                        f"only records times, owner, comment and size",
                        path=path,
                        offset=pos,
                    )
            pax = pos
            pos = data + tar_block(size)
            continue
        if kind not in _TAR_REGULAR:
            raise error(
                "tar-member-type",
                f"tar member {shown!r} is a {_TAR_KINDS.get(kind, 'member of unknown type')} "
                f"{kind!r}, not a regular file: torch.save wrote only regular files",
                path=path,
                offset=pos,
            )
        if pax_size is not None:
            size = pax_size
            if data + tar_block(size) > source.size:
                raise error(
                    "truncated",
                    f"tar member {shown!r} claims {size} bytes past the end of the file",
                    path=path,
                    offset=pos,
                )
        if name in members:
            raise error(
                "tar-duplicate-member",
                f"tar archive has two members named {shown!r} (tarfile, and so torch, "
                f"reads the last)",
                path=path,
                offset=pos,
            )
        members[name] = (data, size)
        if len(members) > opts.limits.max_zip_members:
            raise error(
                "limit-zip-members",
                f"more than {opts.limits.max_zip_members} tar members",
                path=path,
                offset=pos,
            )
        pax = pax_size = None
        pos = data + tar_block(size)
    for required in _TAR_MEMBERS:
        if required not in members:
            raise error(
                "tar-missing-member",
                f"tar archive has no {required.decode()!r} member: not a torch.save file "
                f"of torch < 0.4",
                path=path,
            )
    return members


_TAR_KINDS: Final = {
    b"1": "hard link",
    b"2": "symbolic link",
    b"3": "character device",
    b"4": "block device",
    b"5": "directory",
    b"6": "FIFO",
    b"S": "GNU sparse file",
}


def _starts_with_pickle(source: ReadableSource, first: bytes, limit: int) -> bool:
    """Whether the file's first bytes are a pickle torch.load of a file object would
    run (it never tries tarfile on one): its opcodes, decoded from byte 0 and never
    run, reach one that names a global, or a STOP after at least one other opcode.

    A tar that ``torch.save`` wrote starts with a member or PAX header name
    (``sys_info``, ``././@PaxHeader``, ...), where decoding fails at once. ``first``
    is what was read of the file's start; it grows x4 while the decoding runs off its
    end (opcodes that still decode at ``limit`` bytes count as a pickle).
    """
    import io  # noqa: PLC0415 - only tar files need them
    import pickletools  # noqa: PLC0415

    chunk = first
    while True:
        f = io.BytesIO(chunk)
        try:
            for op, _arg, at in pickletools.genops(f):
                if op.name in ("GLOBAL", "STACK_GLOBAL", "INST", "EXT1", "EXT2", "EXT4"):
                    return True
                if op.name == "STOP":
                    return bool(at)
        except ValueError:  # UnicodeDecodeError included
            if f.tell() < len(chunk) or len(chunk) >= source.size:
                return False  # not an opcode, a bad argument, or the end of the file
            if len(chunk) >= limit:
                return True
            chunk = source.read_at(
                0, min(max(len(chunk), 1) * _GROWTH, source.size, limit), what="file header"
            )
            continue
        return False


def _read_tar(source: ReadableSource, opts: ReadOptions, r: _Reader) -> Checkpoint:
    path = source.path
    if tar_header(r.buf[:TAR_BLOCK]) is not None and _starts_with_pickle(
        source, r.buf, opts.limits.max_pickle_bytes
    ):
        raise error(
            "tar-pickle-polyglot",
            "the file is a tar archive and also starts with a pickle: torch.load reads "
            "the tar when opened by path and the pickles when given a file object",
            path=path,
            offset=0,
        )
    found = _tar_members(source, opts)
    members = {name.decode(): span for name, span in found.items() if name in _TAR_MEMBERS}
    reader = LegacyStorageReader(source)
    objects: dict[int, Any] = {}

    def bad(msg: str, member: str, start: int, at: int) -> CheckpointError:
        return error("tar-bad-record", msg, path=path, member=member, offset=at - start)

    def count(member: str, start: int, end: int, pos: int, per: int) -> tuple[int, int]:
        result, nxt = r.run(pos, f"{member} count", end=end, member=member, member_start=start)
        n = result.value
        if type(n) is not int or not 0 <= n <= (end - nxt) // per:
            raise bad(f"{member} count {safe_repr(n)} does not fit the member", member, start, pos)
        return n, nxt

    # storages
    start, size = members["storages"]
    end = start + size
    n, pos = count("storages", start, end, start, 8)
    for _ in range(n):
        rec, nxt = r.run(
            pos, "storage record", end=end, first=256, member="storages", member_start=start
        )
        value = rec.value
        if not (
            type(value) is tuple
            and len(value) == 3
            and type(value[0]) is int
            and type(_text(value[1])) is str
            and type(value[2]) is StorageType
            and value[0] not in objects
        ):
            raise bad(
                f"storage record {safe_repr(value)} is not (key, location, storage type)",
                "storages",
                start,
                pos,
            )
        key, location, stype = value[0], _text(value[1]), value[2]
        raw = (
            source.read_at(nxt, 8, what="storage size", member="storages")
            if nxt + 8 <= end
            else b""
        )
        if len(raw) != 8:
            raise error(
                "truncated",
                "storages member is truncated",
                path=path,
                member="storages",
                offset=nxt - start,
            )
        (numel,) = _COUNT.unpack(raw)
        nbytes = numel * stype.dtype.itemsize
        if numel < 0 or nxt + 8 + nbytes > end:
            raise error(
                "truncated",
                f"storage {key} claims {numel} x {stype.dtype}, past the end "
                f"of the storages member",
                path=path,
                member="storages",
                offset=nxt - start,
            )
        ref = StorageRef(str(key), stype.dtype, numel, location, reader)
        reader.spans[ref.key] = (nxt + 8, nbytes)
        objects[key] = ref
        pos = nxt + 8 + nbytes
    views, pos = r.run(
        pos, "storage view list", end=end, first=256, member="storages", member_start=start
    )
    if type(views.value) is not list:
        raise bad("storage view list is not a list", "storages", start, pos)
    for view in views.value:
        if not (
            type(view) is tuple
            and len(view) == 4
            and all(type(v) is int for v in view)
            and type(objects.get(view[1])) is StorageRef
            and view[0] not in objects
            and view[2] >= 0
            and view[3] >= 0
            and view[2] + view[3] <= objects[view[1]].numel
        ):
            raise bad(
                f"storage view {safe_repr(view)} is not (new key, storage key, "
                f"offset, numel) inside that storage",
                "storages",
                start,
                pos,
            )
        root = objects[view[1]]
        ref = StorageRef(str(view[0]), root.dtype, view[3], root.location, reader)
        base, _ = reader.spans[root.key]
        reader.spans[ref.key] = (base + view[2] * root.dtype.itemsize, ref.nbytes)
        objects[view[0]] = ref

    # tensors
    start, size = members["tensors"]
    end = start + size
    n, pos = count("tensors", start, end, start, 24)
    for _ in range(n):
        rec, nxt = r.run(
            pos,
            "tensor record",
            end=end,
            first=256,
            member="tensors",
            member_start=start,
            extra_globals=_TENSOR_TYPES,
        )
        value = rec.value
        if not (
            type(value) is tuple
            and len(value) == 3
            and type(value[0]) is int
            and type(value[1]) is int
            and value[0] not in objects
        ):
            raise bad(
                f"tensor record {safe_repr(value)} is not (key, storage key, type)",
                "tensors",
                start,
                pos,
            )
        storage = objects.get(value[1])
        if type(storage) is not StorageRef:
            raise error(
                "missing-storage",
                f"tensor {value[0]} names storage {value[1]}, which the "
                f"storages member does not hold",
                path=path,
                member="tensors",
                offset=pos - start,
            )
        head = (
            source.read_at(nxt, 8, what="tensor record", member="tensors")
            if nxt + 8 <= end
            else b""
        )
        ndim = struct.unpack_from("<i", head)[0] if len(head) == 8 else -1
        if not 0 <= ndim <= _MAX_NDIM or nxt + 16 + 16 * ndim > end:
            raise bad(f"tensor {value[0]} has a bad or truncated geometry", "tensors", start, nxt)
        geometry = struct.unpack(
            f"<{2 * ndim + 1}q",
            source.read_at(nxt + 8, 16 * ndim + 8, what="tensor record", member="tensors"),
        )
        shape, stride, offset = geometry[:ndim], geometry[ndim : 2 * ndim], geometry[-1]
        if min(geometry, default=0) < 0:
            raise bad(
                f"tensor {value[0]} has a negative size, stride or offset", "tensors", start, nxt
            )
        objects[value[0]] = new_dense(storage, storage.dtype, shape, stride, offset, False, None)
        pos = nxt + 16 + 16 * ndim

    # the object
    start, size = members["pickle"]

    def persistent_load(saved_id: Any) -> Any:
        if type(saved_id) is tuple and saved_id:
            return saved_id[0]  # an nn.Module class saved whole
        saved_id = _text(saved_id)
        try:
            return objects[int(saved_id)]
        except (KeyError, ValueError, TypeError):
            raise error(
                "bad-persistent-id",
                f"persistent id {safe_repr(saved_id)} names no tensor or storage",
                path=path,
            ) from None

    main, _ = r.run(
        start,
        "main pickle",
        persistent_load,
        select=opts.select,
        end=start + size,
        member="pickle",
        member_start=start,
    )
    return Checkpoint(
        format="torch-legacy",
        backend=opts.engine.ENGINE,
        root=main.value,
        source=source,
        globals_=r.globals,
        limits=opts.limits,
        members={"pickle": "pickle", "storages": "storages", "tensors": "tensors", "layout": "tar"},
        selected=None if main.complete else opts.select,
    )
