"""torch.save's zip format (torch >= 1.6): ``<prefix>/data.pkl`` plus one member per storage.

Layout (torch/serialization.py ``_save``): ``<prefix>/data.pkl`` is a pickle whose
tensors refer to storages by persistent id ``('storage', StorageType, key, location,
numel)``; ``<prefix>/data/<key>`` holds each storage's raw bytes (STORED, aligned);
``<prefix>/byteorder`` says ``little`` or ``big`` (absent before torch 2.1: little);
``<prefix>/version``, ``.format_version``, ``.storage_alignment`` and
``.data/serialization_id`` are bookkeeping. The prefix is ``archive`` for file objects
and the file's stem otherwise, dots and ``=`` included.
"""

from __future__ import annotations

from ckptpeek.checkpoint import Checkpoint
from ckptpeek.errors import CheckpointError, error
from ckptpeek.io.zipdir import ZipDirectory
from ckptpeek.limits import Limits
from ckptpeek.tensor import StorageRef
from ckptpeek.unpickle.torch_rebuild import StorageResolver

from .options import ReadOptions

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from ckptpeek.io.source import ReadableSource

__all__ = ("find_prefix", "ZipStorageReader", "read_pickle_member", "read", "is_torchscript")


def find_prefix(directory: ZipDirectory) -> str:
    """The archive's top-level folder: torch's, or a refusal.

    torch's reader (``PyTorchStreamReader``) takes the folder of the first member in
    the central directory and looks every record up under it: ``data.pkl``, ``version``
    (or ``.data/version``: it refuses an archive without one), and ``torch.load`` lists
    all members and refuses one outside that folder. The same view here: the first
    member's folder, which must hold ``data.pkl`` and a version record and every member.
    """
    if directory.torch_prefix is not None:
        return directory.torch_prefix
    path = directory.source.path
    if not directory.records:
        raise error(
            "zip-no-data-pkl", "zip archive has no members: not a torch checkpoint", path=path
        )
    first = directory.records[0]
    name: str = first.name
    prefix, sep, _ = name.partition("/")
    if not sep:
        raise error(
            "zip-no-data-pkl",
            f"the first member {first.name!r} is in no folder (torch takes the archive's "
            f"folder from it): not a torch checkpoint",
            path=path,
        )
    if f"{prefix}/data.pkl" not in directory:
        raise error(
            "zip-no-data-pkl",
            f"zip archive has no {prefix}/data.pkl (the folder of its first member): "
            f"not a torch checkpoint",
            path=path,
        )
    if f"{prefix}/.data/version" not in directory and f"{prefix}/version" not in directory:
        raise error(
            "zip-missing-member",
            f"archive has no {prefix}/version record (torch refuses an archive without one)",
            path=path,
        )
    lead = first.raw_name[: first.raw_name.index(b"/") + 1]
    for m in directory.records:
        if not m.raw_name.startswith(lead):
            raise error(
                "zip-stray-member",
                f"member {m.name!r} is outside the archive's folder {prefix!r} (torch.load "
                f"refuses such archives)",
                path=path,
                member=m.name,
            )
    directory.torch_prefix = prefix
    return prefix


class ZipStorageReader:
    """Reads storages of a torch zip lazily; reopens the file by path when needed.

    Storage ``key`` lives in member ``<prefix>/<folder>/<key>``: ``data`` for torch.save
    and TorchScript's ``data.pkl``, ``constants`` for TorchScript's ``constants.pkl``.
    """

    def __init__(self, directory: ZipDirectory, prefix: str, folder: str = "data") -> None:
        self.directory = directory
        self.prefix = prefix
        self.path = directory.source.path
        self._byteorder: str | None = None
        self._size = directory.source.size
        self.folder = data = f"{prefix}/{folder}/"
        #: the pickle's persistent_load: storage ids -> StorageRef, checked against the members
        # the members torch's lookup of f"{folder}{key}" finds (a name that is not its
        # bytes' UTF-8 is one torch cannot ask for; other case is refused as missing)
        cut = len(data)
        self.persistent_load = StorageResolver(
            {
                m.name[cut:]: m.size
                for m in directory.records
                if m.name[:cut] == data
                and (m.name.isascii() or m.raw_name == m.name.encode("utf-8"))
            },
            self,
            data,
        )

    def _source(self) -> ReadableSource:
        self.directory.source = self.directory.source.reopen()
        return self.directory.source

    @property
    def byteorder(self) -> str:
        if self._byteorder is None:
            name = f"{self.prefix}/byteorder"
            if name in self.directory:
                self._source()
                raw = self.directory.read(name, max_size=16).strip()
                if raw not in (b"little", b"big"):
                    raise error(
                        "bad-byteorder",
                        f"byteorder record says {raw[:16]!r}",
                        path=self.path,
                        member=name,
                    )
                self._byteorder = raw.decode()
            else:
                self._byteorder = "little"  # files from torch < 2.1 have no record
        return self._byteorder

    def storage_location(self, storage: StorageRef) -> tuple[str, int, int]:
        member = f"{self.folder}{storage.key}"
        m = self.directory.member(member)
        start = self.directory.cached_data_offset(m)
        if start is None:
            self._source()
            start, _ = self.directory.data_offset(m)
        if m.method != 0:
            raise error(
                "zip-compression",
                f"storage member {member!r} is compressed",
                path=self.path,
                member=member,
            )
        return member, start, m.size

    def storage_view(self, storage: StorageRef, start: int, stop: int) -> memoryview:
        member, base, size = self.storage_location(storage)
        if stop > size:
            raise error(
                "tensor-out-of-storage",
                f"bytes {start}..{stop} are past the end of {member!r} ({size} bytes)",
                path=self.path,
                member=member,
            )
        return self._source().view(
            base + start, stop - start, what=f"storage {storage.key!r}", member=member
        )


def read_pickle_member(directory: ZipDirectory, name: str, limits: Limits) -> bytes:
    try:
        return directory.read(name, max_size=limits.max_pickle_bytes)
    except CheckpointError as exc:
        exc.located(member=name)
        raise


def is_torchscript(directory: ZipDirectory, prefix: str) -> bool:
    """torch.jit.save writes ``constants.pkl`` (and ``code/``); torch.save never does.

    As ``torch.load`` decides it: ``"constants.pkl"`` among the record names it lists,
    exactly (case matters here) and cut at 511 bytes (miniz's name buffer)."""
    target = prefix.encode("utf-8") + b"/constants.pkl"
    return any(m.raw_name[:511] == target for m in directory.records)


def read(source: ReadableSource, directory: ZipDirectory, opts: ReadOptions) -> Checkpoint:
    """Read the pickle of a torch zip checkpoint into a :class:`Checkpoint`."""
    prefix = find_prefix(directory)
    member = f"{prefix}/data.pkl"
    data = read_pickle_member(directory, member, opts.limits)
    storages = ZipStorageReader(directory, prefix)
    try:
        result = opts.run_pickle(data, storages.persistent_load)
    except CheckpointError as exc:
        raise exc.located(path=source.path, member=member) from None
    return Checkpoint(
        format="torch-zip",
        backend=opts.engine.ENGINE,
        root=result.value,
        source=source,
        globals_=result.globals,
        limits=opts.limits,
        members={"pickle": member, "prefix": prefix},
        selected=None if result.complete else opts.select,
    )
