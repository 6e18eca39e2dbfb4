"""torch.distributed.checkpoint (DCP) directories, header-only.

Layout (torch/distributed/checkpoint/filesystem.py, metadata.py): ``<dir>/.metadata``
pickles a ``Metadata`` dataclass - ``state_dict_metadata`` maps each flattened key
(fqn) to a ``TensorStorageMetadata(properties=TensorProperties(dtype, ...), size,
chunks=[ChunkStorageMetadata(offsets, sizes)])`` or a ``BytesStorageMetadata()``;
``storage_data`` maps ``MetadataIndex(fqn, offset, index)`` to ``_StorageInfo(
relative_path, offset, length[, transform_descriptors])``; ``planner_data`` maps each
fqn to its path in the original nested state dict. ``__<rank>_<n>.distcp`` files hold
the items back to back; ``FileSystemWriter`` writes every item as a complete
``torch.save`` zip archive (a tensor chunk: the chunk tensor; a bytes item: the
``torch.save``'d Python object), so an item is read as a torch zip through a window
on its byte range.

The pickle is run with per-run stand-ins for the DCP dataclasses (never importing
torch.distributed); they are then checked and turned into frozen records.

``Checkpoint.root`` is ``{fqn: value}`` in ``.metadata`` order (flat, as DCP keys
them; ``planner_data`` gives the nesting). A tensor is a :class:`DCPTensorRef` with the
GLOBAL shape and dtype and ``.chunks`` (:class:`DCPChunk`: offsets, sizes, file, byte
range, and the chunk's own ``TensorRef``). When one chunk covers the tensor the ref
views that chunk's storage (``numpy()``, ``byte_range`` work as usual); when several
chunks tile it, ``numpy()``/``to_torch()`` assemble them; a tensor the files cover only
in part, or whose items are stored with transforms (compression), raises
``UnsupportedError``. Bytes items are read (they are small torch.save pickles) up to
``_MAX_BYTES_ITEM``; larger ones, and ones stored with transforms, become
``Placeholder("torch.distributed.checkpoint.metadata", "BytesStorageMetadata", (file,
offset, length))``. ``select=`` keeps the fqns named, or whose nested path starts with
a name given (``select=["model"]`` keeps ``model.*``).
"""

from __future__ import annotations

import os

from ckptpeek._frozen import Frozen
from ckptpeek.checkpoint import Checkpoint
from ckptpeek.errors import CheckpointError, UnsupportedError, error
from ckptpeek.io.source import ByteSource
from ckptpeek.io.zipdir import read_directory
from ckptpeek.tensor import StorageRef, TensorRef, check_dense_size, numpy_dtype
from ckptpeek.torch_types import Device, DType, Layout, MemoryFormat, Size
from ckptpeek.unpickle.standins import KnownGlobal, Placeholder

from . import torch_zip
from .options import ReadOptions

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ckptpeek.tensor import StorageReader

__all__ = ("DCPChunk", "DCPTensorRef", "read_path")

#: bytes items larger than this stay Placeholders
_MAX_BYTES_ITEM = 16 << 20
_META = "torch.distributed.checkpoint.metadata"
_ZIP_MAGIC = b"PK\x03\x04"


class DCPChunk(Frozen):
    """One saved chunk of a tensor: where it sits in the global tensor, where its item
    is (``file`` relative to the directory, absolute ``start``/``stop`` byte offsets),
    and ``tensor``, the chunk's own TensorRef (``None`` if the item is not readable)."""

    __slots__ = ("offsets", "sizes", "file", "start", "stop", "transforms", "tensor")
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    file: str
    start: int
    stop: int
    transforms: tuple[str, ...]
    tensor: TensorRef | None

    def __init__(
        self,
        offsets: tuple[int, ...],
        sizes: tuple[int, ...],
        file: str,
        start: int,
        stop: int,
        transforms: tuple[str, ...],
        tensor: TensorRef | None,
    ) -> None:
        super().__init__(offsets, sizes, file, start, stop, transforms, tensor)

    def __repr__(self) -> str:
        return (
            f"DCPChunk(offsets={list(self.offsets)}, sizes={list(self.sizes)}, "
            f"file={self.file!r}, bytes={self.start}..{self.stop})"
        )


class DCPTensorRef(TensorRef):
    """A DCP tensor: the global shape and dtype, and the ``chunks`` it was saved as."""

    __slots__ = ("chunks",)
    chunks: tuple[DCPChunk, ...]

    def _tiles(self) -> bool:
        total = sum(Size(c.sizes).numel() for c in self.chunks)
        return total == self.numel() and all(c.tensor is not None for c in self.chunks)

    def _check_readable(self) -> list[tuple[DCPChunk, TensorRef]]:
        """The chunks with their tensors, checked to be readable and to tile this tensor."""
        readable = []
        for c in self.chunks:
            if c.transforms:
                raise error(
                    "dcp-transform",
                    f"a chunk is stored with transforms {list(c.transforms)}: not read",
                    path=c.file,
                )
            if c.tensor is None:
                raise error(
                    "dcp-item-format", "a chunk's item is not a torch.save archive", path=c.file
                )
            readable.append((c, c.tensor))
        if not self._tiles():
            raise error(
                "dcp-partial-tensor",
                f"the {len(self.chunks)} saved chunks cover {sum(Size(c.sizes).numel() for c in self.chunks)}"
                f" of {self.numel()} elements: this directory holds only part of the tensor",
            )
        return readable

    @property
    def device(self) -> Device:
        return Device("cpu") if self.storage is None else super().device

    @property
    def is_meta(self) -> bool:
        return False

    def numpy(self, *, max_bytes: int | None = None) -> Any:
        """The tensor assembled from its chunks: a new array of the size ``.metadata``
        states (at most ``max_bytes``, default ``Limits.max_dense_bytes``)."""
        if self.storage is not None:
            return super().numpy(max_bytes=max_bytes)
        readable = self._check_readable()
        import numpy as np  # noqa: PLC0415

        check_dense_size(tuple(self.shape), self.dtype.itemsize, max_bytes, "numpy()")
        out = np.empty(tuple(self.shape), dtype=numpy_dtype(self.dtype))
        mask = np.zeros(tuple(self.shape), dtype=bool)
        for c, tensor in readable:
            where = tuple(slice(o, o + s) for o, s in zip(c.offsets, c.sizes, strict=False))
            out[where] = tensor.numpy()
            mask[where] = True
        if not mask.all():
            raise error(
                "dcp-partial-tensor",
                "the saved chunks overlap and leave part of the tensor uncovered",
            )
        return out

    def to_torch(self) -> Any:
        if self.storage is not None:
            return super().to_torch()
        readable = self._check_readable()
        import torch  # noqa: PLC0415 - optional dependency, only here

        out = torch.empty(tuple(self.shape), dtype=getattr(torch, self.dtype.name))
        for c, tensor in readable:
            where = tuple(slice(o, o + s) for o, s in zip(c.offsets, c.sizes, strict=False))
            out[where] = tensor.to_torch().detach()
        return out

    def __repr__(self) -> str:
        return (
            f"DCPTensorRef(shape={list(self.shape)}, dtype={self.dtype}, chunks={len(self.chunks)})"
        )


# -- the .metadata pickle's classes, as per-run records -----------------------------------


class _Record:
    """An instance of a DCP dataclass while the pickle builds it: kind + fields."""

    __slots__ = ("kind", "fields", "state", "args")

    def __init__(self, kind: str, args: tuple[Any, ...] = ()) -> None:
        self.kind = kind
        self.fields: dict[str, Any] = {}
        self.state: Any = None
        self.args = args

    def _ckpt_build(self, state: Any) -> None:
        if (
            type(state) is tuple
            and len(state) == 2
            and isinstance(state[1], dict)
            and (state[0] is None or isinstance(state[0], dict))
        ):
            state = {**(state[0] or {}), **state[1]}  # (dict, slots) of slotted dataclasses
        if type(state) is dict and all(type(k) is str for k in state):
            self.fields.update(state)
        else:
            self.state = state

    def __repr__(self) -> str:
        return f"<{self.kind}>"


_RECORD_CLASSES = (
    (_META, "Metadata"),
    (_META, "TensorStorageMetadata"),
    (_META, "BytesStorageMetadata"),
    (_META, "ChunkStorageMetadata"),
    (_META, "TensorProperties"),
    (_META, "MetadataIndex"),
    (_META, "StorageMeta"),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.distributed.checkpoint.metadata", "_StorageInfo"),
    ("torch.distributed._shard.sharded_tensor.metadata", "TensorProperties"),
)
_MEM_FORMATS = {0: "contiguous_format", 1: "channels_last", 2: "preserve_format"}


def _mem_format(args: tuple[Any, ...]) -> MemoryFormat:
    if len(args) != 1 or type(args[0]) is not int or args[0] not in _MEM_FORMATS:
        raise TypeError("_MEM_FORMAT_ENCODING(0|1|2) expected")
    return MemoryFormat(_MEM_FORMATS[args[0]])


def _layout(args: tuple[Any, ...]) -> Layout:
    if len(args) != 1 or not isinstance(args[0], str) or not args[0].startswith("torch."):
        raise TypeError("_get_layout('torch.<layout>') expected")
    return Layout(args[0][6:])


def _globals() -> dict[tuple[str, str], Any]:
    g: dict[tuple[str, str], Any] = {}
    for module, name in _RECORD_CLASSES:

        def call(args: tuple[Any, ...], name: str = name) -> _Record:
            return _Record(name, args)

        def new(args: tuple[Any, ...], kwargs: dict[str, Any], name: str = name) -> _Record:
            if kwargs:
                raise TypeError(f"{name} takes no keyword arguments")
            return _Record(name, args)

        g[(module, name)] = KnownGlobal(module, name, call=call, new=new)
    for module in (_META, "torch.distributed._shard.sharded_tensor.metadata"):
        for name in ("_MEM_FORMAT_ENCODING", "MEM_FORMAT_ENCODING"):
            g[(module, name)] = KnownGlobal(module, name, call=_mem_format)
    g[("torch.serialization", "_get_layout")] = KnownGlobal(
        "torch.serialization", "_get_layout", call=_layout
    )
    return g


# -- turning records into checked values ----------------------------------------------------


def _bad(msg: str, path: str) -> CheckpointError:
    return error("dcp-bad-metadata", f".metadata: {msg}", path=path, member=".metadata")


def _field(rec: Any, kind: str, name: str, path: str, default: Any = ...) -> Any:
    if type(rec) is not _Record or rec.kind != kind:
        raise _bad(f"expected a {kind}, found {type(rec).__name__}", path)
    if name in rec.fields:
        return rec.fields[name]
    if default is ...:
        raise _bad(f"a {kind} has no {name!r}", path)
    return default


def _ints(value: Any, what: str, path: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(type(v) is int and v >= 0 for v in value):
        raise _bad(f"{what} is not a tuple of non-negative ints", path)
    return tuple(value)


def _dtype(props: Any, path: str) -> DType:
    if type(props) is _Record and props.kind == "TensorProperties":
        dtype = props.fields.get("dtype")
        if dtype is None and type(props.state) is tuple and props.state:
            dtype = props.state[0]
        if isinstance(dtype, DType):
            return dtype
    raise _bad("a tensor's properties name no dtype", path)


def _relative(name: Any, path: str) -> str:
    """A data file name from the metadata: a plain relative path inside the directory."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise _bad(f"storage path {name!r} is not a file name", path)
    parts = name.replace("\\", "/").split("/")
    if os.path.isabs(name) or any(p in ("", ".", "..") for p in parts):
        raise _bad(f"storage path {name!r} leaves the checkpoint directory", path)
    return name


# -- reading items through a window ---------------------------------------------------------


class _Files:
    """The directory's files, opened on demand; also the Checkpoint's ``source`` (a
    ``CheckpointSource``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.size = 0
        self._open: dict[str, ByteSource] = {}
        self._sizes: dict[str, int] = {}
        self._done = 0  # bytes read by sources already closed

    def file(self, name: str) -> ByteSource:
        src = self._open.get(name)
        if src is not None:
            return src
        full = os.path.join(self.path, name)
        try:
            src = ByteSource(full)
        except FileNotFoundError:
            raise error(
                "dcp-missing-file", f"data file {name!r} named by .metadata is missing", path=full
            ) from None
        known = self._sizes.setdefault(name, src.size)
        if known != src.size:
            src.close()
            raise error("file-changed", "file changed size since it was opened", path=full)
        self._open[name] = src
        return src

    @property
    def bytes_read(self) -> int:
        return self._done + sum(s.bytes_read for s in self._open.values())

    @property
    def closed(self) -> bool:
        return not self._open

    def close(self) -> None:
        for src in self._open.values():
            self._done += src.bytes_read
            src.close()
        self._open.clear()


class _Window:
    """``bytes [base, base + size)`` of one data file, offsets relative to the item: a
    ``ReadableSource`` (``io.source``), what ``zipdir`` and ``torch_zip`` read through."""

    def __init__(self, files: _Files, name: str, base: int, size: int) -> None:
        self._files = files
        self._name = name
        self._base = base
        self.size = size
        self.path = os.path.join(files.path, name)
        self.closed = False  # reopened on demand by _Files

    @property
    def bytes_read(self) -> int:
        return self._files.bytes_read

    def _check(self, offset: int, n: int, what: str, member: str | None) -> None:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise error(
                "truncated",
                f"item is truncated: {what} needs bytes {offset}..{offset + n} "
                f"of an item of {self.size}",
                path=self.path,
                member=member,
                offset=self._base + offset,
            )

    def read_at(
        self,
        offset: int,
        n: int,
        *,
        what: str = "data",
        member: str | None = None,
        exact: bool = True,
    ) -> bytes:
        if not exact and 0 <= offset <= self.size:
            n = max(0, min(n, self.size - offset))
        self._check(offset, n, what, member)
        return self._files.file(self._name).read_at(
            self._base + offset, n, what=what, member=member
        )

    def reopen(self) -> _Window:
        return self  # never closed for good: _Files reopens the data file on demand

    def keep(self, offset: int, data: bytes) -> None:
        self._files.file(self._name).keep(self._base + offset, data)

    def view(
        self, offset: int, n: int, *, what: str = "data", member: str | None = None
    ) -> memoryview:
        self._check(offset, n, what, member)
        return self._files.file(self._name).view(self._base + offset, n, what=what, member=member)

    def close(self) -> None:
        pass


class _ItemStorageReader:
    """A chunk's storages: reads through the item's own reader, but reports absolute
    offsets in the data file (``storage_location``, hence ``byte_range``)."""

    def __init__(self, inner: StorageReader, base: int) -> None:
        self._inner = inner
        self._base = base
        self.path = inner.path

    @property
    def byteorder(self) -> str:
        return self._inner.byteorder

    def storage_view(self, storage: StorageRef, start: int, stop: int) -> memoryview:
        return self._inner.storage_view(storage, start, stop)

    def storage_location(self, storage: StorageRef) -> tuple[str | None, int, int]:
        member, start, size = self._inner.storage_location(storage)
        return member, self._base + start, size


def _read_item(
    files: _Files, name: str, offset: int, length: int, opts: ReadOptions
) -> tuple[Any, dict[tuple[str, str], bool]]:
    """The object a ``torch.save`` archive at ``name[offset:offset+length]`` holds."""
    window = _Window(files, name, offset, length)
    try:
        if window.read_at(0, min(4, length), what="item header") != _ZIP_MAGIC:
            raise error(
                "dcp-item-format",
                f"the item at bytes {offset}..{offset + length} is not a torch.save archive",
                path=window.path,
                offset=offset,
            )
        directory = read_directory(
            window,
            max_members=opts.limits.max_zip_members,
            max_directory_bytes=opts.limits.max_directory_bytes,
        )
        ckpt = torch_zip.read(window, directory, opts)
    except CheckpointError as exc:
        raise exc.located(path=window.path) from None
    return ckpt.root, dict(ckpt._globals)


def read_path(path: str, opts: ReadOptions) -> Checkpoint:
    """Read a DCP checkpoint directory into a :class:`Checkpoint` (``"torch-dcp"``)."""
    meta_path = os.path.join(path, ".metadata")
    with ByteSource(meta_path) as src:
        if src.size > opts.limits.max_pickle_bytes:
            raise error(
                "limit-pickle-size",
                f".metadata is {src.size} bytes, over the limit of {opts.limits.max_pickle_bytes}",
                path=meta_path,
            )
        data = src.read_at(0, src.size, what=".metadata")
    try:
        result = opts.run_pickle(data, None, select=None, extra_globals=_globals())
    except CheckpointError as exc:
        raise exc.located(path=meta_path) from None
    globals_ = dict(result.globals)
    meta = result.value
    entries = _field(meta, "Metadata", "state_dict_metadata", meta_path)
    storage = _field(meta, "Metadata", "storage_data", meta_path, None)
    planner = _field(meta, "Metadata", "planner_data", meta_path, None)
    if not isinstance(entries, dict) or not isinstance(storage, dict):
        raise _bad("state_dict_metadata and storage_data must be dicts", meta_path)

    # storage_data: (fqn, chunk offsets or None) -> (file, offset, length, transforms)
    items: dict[tuple[str, tuple[int, ...] | None], tuple[str, int, int, tuple[str, ...]]] = {}
    for index, info in storage.items():
        fqn = _field(index, "MetadataIndex", "fqn", meta_path)
        at = _field(index, "MetadataIndex", "offset", meta_path, None)
        rel = _relative(_field(info, "_StorageInfo", "relative_path", meta_path), meta_path)
        start = _field(info, "_StorageInfo", "offset", meta_path)
        length = _field(info, "_StorageInfo", "length", meta_path)
        transforms = _field(info, "_StorageInfo", "transform_descriptors", meta_path, None)
        if not (
            isinstance(fqn, str)
            and type(start) is int
            and type(length) is int
            and start >= 0
            and length >= 0
        ):
            raise _bad(f"storage entry for {fqn!r} has a malformed location", meta_path)
        if transforms is not None and not (
            isinstance(transforms, (list, tuple)) and all(isinstance(t, str) for t in transforms)
        ):
            raise _bad(f"storage entry for {fqn!r} has malformed transforms", meta_path)
        key = (fqn, None if at is None else _ints(at, f"offset of {fqn!r}", meta_path))
        items[key] = (rel, start, length, tuple(transforms or ()))

    files = _Files(path)
    select = opts.select
    inner = ReadOptions(opts.strict, opts.engine, opts.limits, None)
    root: dict[str, Any] = {}
    try:
        for fqn, entry in entries.items():
            if not isinstance(fqn, str):
                raise _bad(f"key {fqn!r} is not a string", meta_path)
            if select is not None and fqn not in select:
                nested = planner.get(fqn) if isinstance(planner, dict) else None
                if not (isinstance(nested, tuple) and nested and nested[0] in select):
                    continue
            if type(entry) is _Record and entry.kind == "BytesStorageMetadata":
                root[fqn] = _bytes_value(
                    files, fqn, items.get((fqn, None)), inner, globals_, meta_path
                )
                continue
            props = _field(entry, "TensorStorageMetadata", "properties", meta_path)
            dtype = _dtype(props, meta_path)
            shape = _ints(
                _field(entry, "TensorStorageMetadata", "size", meta_path),
                f"size of {fqn!r}",
                meta_path,
            )
            chunk_recs = _field(entry, "TensorStorageMetadata", "chunks", meta_path)
            if not isinstance(chunk_recs, list):
                raise _bad(f"chunks of {fqn!r} are not a list", meta_path)
            chunks = [
                _chunk(files, fqn, rec, dtype, shape, items, inner, meta_path) for rec in chunk_recs
            ]
            root[fqn] = _tensor(fqn, dtype, shape, chunks)
    except BaseException:
        files.close()
        raise
    files.size = sum(files._sizes.values()) + len(data)
    members = {"metadata": ".metadata", "files": ", ".join(sorted(files._sizes))}
    return Checkpoint(
        format="torch-dcp",
        backend=opts.engine.ENGINE,
        root=root,
        source=files,
        globals_=globals_,
        limits=opts.limits,
        members=members,
        selected=select,
    )


def _bytes_value(
    files: _Files,
    fqn: str,
    item: Any,
    opts: ReadOptions,
    globals_: dict[tuple[str, str], bool],
    meta_path: str,
) -> Any:
    if item is None:
        raise error(
            "dcp-missing-item",
            f"{fqn!r} has no entry in storage_data",
            path=meta_path,
            member=".metadata",
        )
    rel, start, length, transforms = item
    _check_range(files, rel, start, length)
    if transforms or length > _MAX_BYTES_ITEM:
        return Placeholder(_META, "BytesStorageMetadata", (rel, start, length))
    try:
        value, g = _read_item(files, rel, start, length, opts)
    except UnsupportedError as exc:
        if exc.code != "dcp-item-format":
            raise
        # raw BYTE_IO data (an io.BytesIO in the state dict): kept as bytes
        return files.file(rel).read_at(start, length, what=f"item {fqn!r}")
    for k, safe in g.items():
        globals_.setdefault(k, safe)
    return value


def _check_range(files: _Files, rel: str, start: int, length: int) -> None:
    size = files.file(rel).size
    if start + length > size:
        raise error(
            "dcp-bad-range",
            f"an item claims bytes {start}..{start + length} but {rel!r} has {size}",
            path=os.path.join(files.path, rel),
            offset=start,
        )


def _chunk(
    files: _Files,
    fqn: str,
    rec: Any,
    dtype: DType,
    shape: tuple[int, ...],
    items: dict[Any, Any],
    opts: ReadOptions,
    meta_path: str,
) -> DCPChunk:
    offsets = _ints(
        _field(rec, "ChunkStorageMetadata", "offsets", meta_path),
        f"chunk offsets of {fqn!r}",
        meta_path,
    )
    sizes = _ints(
        _field(rec, "ChunkStorageMetadata", "sizes", meta_path),
        f"chunk sizes of {fqn!r}",
        meta_path,
    )
    if not (
        len(offsets) == len(sizes) == len(shape)
        and all(o + s <= d for o, s, d in zip(offsets, sizes, shape, strict=False))
    ):
        raise _bad(
            f"a chunk of {fqn!r} ({list(offsets)} + {list(sizes)}) lies outside its "
            f"tensor {list(shape)}",
            meta_path,
        )
    item = items.get((fqn, offsets))
    if item is None:
        raise error(
            "dcp-missing-item",
            f"chunk {list(offsets)} of {fqn!r} has no entry in storage_data",
            path=meta_path,
            member=".metadata",
        )
    rel, start, length, transforms = item
    _check_range(files, rel, start, length)
    tensor: TensorRef | None = None
    if not transforms:
        try:
            tensor, _g = _read_item(files, rel, start, length, opts)
        except UnsupportedError as exc:
            if exc.code != "dcp-item-format":
                raise
        if tensor is not None and not (
            isinstance(tensor, TensorRef) and tensor.dtype == dtype and tuple(tensor.shape) == sizes
        ):
            raise error(
                "dcp-item-mismatch",
                f"chunk {list(offsets)} of {fqn!r} holds {tensor!r}, but .metadata says "
                f"{dtype} {list(sizes)}",
                path=os.path.join(files.path, rel),
                offset=start,
            )
        st = None if tensor is None else tensor.storage
        if tensor is not None and st is not None and st.reader is not None:
            tensor.storage = StorageRef(
                st.key, st.dtype, st.numel, st.location, _ItemStorageReader(st.reader, start)
            )
    return DCPChunk(offsets, sizes, rel, start, start + length, transforms, tensor)


def _tensor(fqn: str, dtype: DType, shape: tuple[int, ...], chunks: list[DCPChunk]) -> DCPTensorRef:
    whole = (
        len(chunks) == 1
        and chunks[0].tensor is not None
        and chunks[0].sizes == shape
        and not any(chunks[0].offsets)
    )
    if whole:
        t = chunks[0].tensor
        assert t is not None
        ref = DCPTensorRef(
            storage=t.storage,
            dtype=dtype,
            shape=shape,
            stride=t.stride(),
            storage_offset=t.storage_offset(),
            requires_grad=t.requires_grad,
            kind=t.kind,
            metadata=t.metadata,
        )
    else:
        stride = []
        n = 1
        for d in reversed(shape):
            stride.append(n)
            n *= d
        ref = DCPTensorRef(
            storage=None,
            dtype=dtype,
            shape=shape,
            stride=tuple(reversed(stride)),
            storage_offset=0,
            kind="dcp-chunked",
        )
    ref.chunks = tuple(chunks)
    return ref
