"""Every pickle torch would unpickle counts, and the tar format is read as tarfile reads it.

A checkpoint file can hold several pickles, and ``torch.load(weights_only=False)`` runs
each through CPython's unpickler (``torch/serialization.py`` ``_legacy_load``):

- legacy ``torch.save``: the magic number, the protocol version and ``sys_info``
  (``pickle_module.load``), the object (an ``Unpickler`` subclass), the storage-key
  list (``pickle_module.load``);
- the tar format of torch < 0.4 (``legacy_load``, members found with ``tarfile``): the
  storage count, each storage record and the view list of ``storages``, the tensor
  count and each tensor record of ``tensors`` (all ``pickle_module.load``), and the
  ``pickle`` member (the ``Unpickler`` subclass);
- TorchScript: ``data.pkl`` and ``constants.pkl``, through torch's C++ unpickler, which
  refuses any global outside its fixed set (``Unknown type name 'os.system'``).

For each pickle slot of each format a file is built from scratch (no torch) with a
payload global (``os.system``, never resolved) in that slot; both engines must list it
in ``globals()`` as not safe, strict mode must refuse it, and the real torch (a
recording ``pickle_module`` whose ``find_class`` records and returns a stub; skipped
without torch) must name the same global. The tar layouts that readers may resolve
differently are built too and checked against the real ``tarfile``: ckptpeek reads the
members tarfile reads, or refuses the file with its own code.
"""

from __future__ import annotations

import io
import pickle
import random
import struct
import tarfile
import types
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from _builders import Member, Pickle, build_zip

import ckptpeek
from ckptpeek.errors import FormatError, UnsafePickleError
from ckptpeek.formats import ReadOptions, torch_legacy
from ckptpeek.io import tar
from ckptpeek.io.source import ByteSource
from ckptpeek.limits import DEFAULT_LIMITS
from ckptpeek.scan import scan
from ckptpeek.unpickle import engine as _backend

PAYLOAD_GLOBAL = ("os", "system")
#: ``os.system("")`` then POP: the slot's own value follows, so every reader goes on
PAYLOAD = bytes(Pickle().glob(*PAYLOAD_GLOBAL).mark().str("").tuple().reduce().raw(b"0"))
MAGIC = torch_legacy.MAGIC_NUMBER
FLOATS = struct.pack("<6f", 1, 2, 3, 4, 5, 6)


def pk(body: bytes | Pickle, payload: bool = False, *, after: bool = False) -> bytes:
    """A protocol-2 pickle of ``body`` (opcodes, no PROTO/STOP), with the payload first
    (or ``after`` the body: its value stays on the stack below the payload's)."""
    pay = PAYLOAD if payload else b""
    return b"\x80\x02" + (bytes(body) + pay if after else pay + bytes(body)) + b"."


@dataclass
class Built:
    """A file with the payload in one slot, and where strict mode must find it."""

    data: bytes
    member: str | None  # the archive member holding the payload (None: the file itself)
    offset: int  # the payload GLOBAL's offset in that member (or the file)


# -- legacy torch.save -----------------------------------------------------------------------

LEGACY_SLOTS = ("magic", "version", "sys_info", "main", "keys")


def _legacy_main() -> bytes:
    """``{"w": 2x3 float tensor on storage "0"}`` as ``_legacy_save`` pickles it."""
    p = Pickle().empty_dict().str("w")
    p.glob("torch._utils", "_rebuild_tensor_v2").mark()
    p.mark().str("storage").glob("torch", "FloatStorage").str("0").str("cpu").int(6).none()
    p.tuple().binpersid()
    p.int(0).int(2).int(3).tuple2().int(3).int(1).tuple2().false()
    p.glob("collections", "OrderedDict").empty_tuple().reduce()
    return bytes(p.tuple().reduce().setitem())


def _sys_info() -> bytes:
    p = Pickle().empty_dict().mark()
    p.str("protocol_version").int(1001).str("little_endian").raw(b"\x88")
    p.str("type_sizes").empty_dict().mark().str("short").int(2).str("int").int(4)
    p.str("long").int(4).setitems()
    return bytes(p.setitems())


def legacy_parts(slot: str | None = None) -> list[bytes]:
    """The five pickles of a legacy file, the payload in ``slot``, then the storage."""
    bodies = {
        "magic": b"\x8a\x0a" + MAGIC.to_bytes(10, "little"),
        "version": bytes(Pickle().int(1001)),
        "sys_info": _sys_info(),
        "main": _legacy_main(),
        "keys": bytes(Pickle().empty_list().str("0").append()),
    }
    # the magic number comes first in its pickle: the format is recognised by it
    return [pk(body, name == slot, after=name == "magic") for name, body in bodies.items()] + [
        struct.pack("<q", 6) + FLOATS
    ]


def legacy_file(slot: str | None = None) -> Built:
    parts = legacy_parts(slot)
    if slot is None:
        return Built(b"".join(parts), None, -1)
    at = sum(len(p) for p in parts[: LEGACY_SLOTS.index(slot)]) + 2
    return Built(b"".join(parts), None, at + 12 if slot == "magic" else at)


# -- the tar format (torch < 0.4) ------------------------------------------------------------

TAR_SLOTS = (
    "storages-count",
    "storage-record",
    "storage-views",
    "tensors-count",
    "tensor-record",
    "pickle",
)
_STORAGE_RECORD = bytes(Pickle().mark().int(1).str("cpu").glob("torch", "FloatStorage").tuple())
_TENSOR_RECORD = bytes(Pickle().mark().int(10).int(1).glob("torch", "FloatTensor").tuple())
_TENSOR_GEOMETRY = struct.pack("<i4x2q2qq", 2, 2, 3, 3, 1, 0)  # 2x3, strides (3, 1), offset 0
_TAR_MAIN = bytes(Pickle().empty_dict().str("w").str("10").binpersid().setitem())


def tar_contents(slot: str | None = None) -> dict[str, bytes]:
    """The ``storages``, ``tensors`` and ``pickle`` members, the payload in ``slot``."""
    storages = (
        pk(Pickle().int(1), slot == "storages-count")
        + pk(_STORAGE_RECORD, slot == "storage-record")
        + struct.pack("<q", 6)
        + FLOATS
        + pk(Pickle().empty_list(), slot == "storage-views")
    )
    tensors = (
        pk(Pickle().int(1), slot == "tensors-count")
        + pk(_TENSOR_RECORD, slot == "tensor-record")
        + _TENSOR_GEOMETRY
    )
    return {"storages": storages, "tensors": tensors, "pickle": pk(_TAR_MAIN, slot == "pickle")}


def tar_header(
    name: bytes,
    size: int,
    kind: bytes = b"0",
    *,
    prefix: bytes = b"",
    linkname: bytes = b"",
    magic: bytes = b"ustar\x0000",
    uid: bytes = b"0000000\0",
    uname: bytes = b"",
    signed: bool = False,
) -> bytes:
    """One 512-byte tar header, field by field (POSIX ustar; ``magic=b""`` for V7)."""
    h = bytearray(512)
    h[0:100] = name.ljust(100, b"\0")[:100]
    h[100:108] = b"0000644\0"
    h[108:116] = uid
    h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"00000000000\0"
    h[148:156] = b" " * 8
    h[156:157] = kind
    h[157:257] = linkname.ljust(100, b"\0")
    h[257:265] = magic.ljust(8, b"\0")
    h[265:297] = uname.ljust(32, b"\0")
    h[345:500] = prefix.ljust(155, b"\0")
    total = sum(b - 256 if signed and b >= 128 else b for b in h)
    h[148:156] = b"%06o\0 " % total
    return bytes(h)


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 512)


def tar_member(name: bytes, data: bytes, kind: bytes = b"0", **kw: object) -> bytes:
    return tar_header(name, len(data), kind, **kw) + _pad(data)  # type: ignore[arg-type]


def pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(b"%d" % n) + len(body) != n:
        n = len(b"%d" % n) + len(body)
    return b"%d" % n + body


def pax_header(records: bytes, kind: bytes = b"x") -> bytes:
    return tar_member(b"././@PaxHeader", records, kind)


TAR_END = b"\0" * 1024


def tar_file(slot: str | None = None) -> Built:
    contents = tar_contents(slot)
    out = b"".join(tar_member(n.encode(), d) for n, d in contents.items()) + TAR_END
    if slot is None:
        return Built(out, None, -1)
    count = len(pk(Pickle().int(1)))  # the count pickle before each member's first record
    member, offset = {
        "storages-count": ("storages", 2),
        "storage-record": ("storages", count + 2),
        "storage-views": ("storages", len(contents["storages"]) - len(pk(b"]", True)) + 2),
        "tensors-count": ("tensors", 2),
        "tensor-record": ("tensors", count + 2),
        "pickle": ("pickle", 2),
    }[slot]
    return Built(out, member, offset)


def tar_file_pax(slot: str | None = None) -> bytes:
    """The members written by Python's own tarfile, as torch's writer did (PAX format, a
    float mtime: a PAX header before each member)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in tar_contents(slot).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_500_000_000.25
            info.uname = "r\u00e9searcher"
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


# -- TorchScript -----------------------------------------------------------------------------

TS_SLOTS = ("data.pkl", "constants.pkl")
_TS_CODE = b"""class M(Module):
  __parameters__ = ["w", ]
  __buffers__ = []
  w : Tensor
  training : bool
  def forward(self: __torch__.m.M,
    x: Tensor) -> Tensor:
    return torch.add(x, self.w)
"""


def torchscript_file(slot: str | None = None) -> Built:
    """A TorchScript archive as torch.jit.save lays it out (torch.jit.load accepts it):
    a module ``__torch__.m.M`` with one parameter ``w`` (2 floats)."""
    p = Pickle().glob("__torch__.m", "M").empty_tuple().raw(b"\x81").empty_dict().mark()
    p.str("training").raw(b"\x88").str("w")
    p.glob("torch._utils", "_rebuild_tensor_v2").mark()
    p.mark().str("storage").glob("torch", "FloatStorage").str("0").str("cpu").int(2).tuple()
    p.binpersid().int(0).int(2).tuple1().int(1).tuple1().false()
    p.glob("collections", "OrderedDict").empty_tuple().reduce().tuple().reduce()
    p.setitems().build()
    data = build_zip(
        [
            Member("archive/data.pkl", pk(p, slot == "data.pkl")),
            Member("archive/code/__torch__/m.py", _TS_CODE),
            Member("archive/data/0", struct.pack("<2f", 1.5, 2.5)),
            Member("archive/constants.pkl", pk(Pickle().empty_tuple(), slot == "constants.pkl")),
            Member("archive/version", b"3\n"),
            Member("archive/byteorder", b"little"),
        ]
    )
    return Built(data, None if slot is None else f"archive/{slot}", 2)


BUILDERS = {"torch-legacy": legacy_file, "tar": tar_file, "torchscript": torchscript_file}
SLOTS = [
    *(("torch-legacy", s) for s in LEGACY_SLOTS),
    *(("tar", s) for s in TAR_SLOTS),
    *(("torchscript", s) for s in TS_SLOTS),
]


def every_slot() -> Iterator[tuple[str, str, Built]]:
    """``(format, slot, file)`` for every pickle slot of every multi-pickle format."""
    for fmt, slot in SLOTS:
        yield fmt, slot, BUILDERS[fmt](slot)


# -- ground truth: the real torch, with a recording pickle module -----------------------------


def recording_pickle(seen: list[tuple[str, str]]) -> types.ModuleType:
    """A ``pickle_module`` for ``torch.load`` that records every global CPython's unpickler
    resolves and imports none but torch's own storage/tensor classes and rebuild
    functions (what the files here need to load): anything else is a harmless stub."""

    class Stub:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def __call__(self, *args: object, **kwargs: object) -> None:
            return None

    real = {("torch._utils", "_rebuild_tensor_v2"), ("collections", "OrderedDict")}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> object:
            seen.append((module, name))
            if (module, name) in real or (
                module == "torch" and name.endswith(("Storage", "Tensor"))
            ):
                return super().find_class(module, name)
            return Stub()

    def load(f: object, **kwargs: object) -> object:
        return Unpickler(f, **kwargs).load()  # type: ignore[arg-type]

    mod = types.ModuleType("recording_pickle")
    mod.Unpickler = Unpickler  # type: ignore[attr-defined]
    mod.load = load  # type: ignore[attr-defined]
    return mod


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
    return torch


def torch_globals(torch, source: object) -> tuple[list[tuple[str, str]], object]:
    """What ``torch.load(weights_only=False)`` resolves in ``source`` (a path or a file
    object), and what it returned or raised."""
    seen: list[tuple[str, str]] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = torch.load(source, weights_only=False, pickle_module=recording_pickle(seen))
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds; they are the evidence
        out = exc
    return seen, out


# -- every slot: reported, refused in strict mode, named by torch -----------------------------


def _write(tmp_path, data: bytes, name: str = "f.pt") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize(("fmt", "slot"), SLOTS)
def test_payload_in_every_slot_is_reported(fmt: str, slot: str, engine: str, tmp_path) -> None:
    built = BUILDERS[fmt](slot)
    path = _write(tmp_path, built.data)
    with ckptpeek.open(path, engine=engine) as ckpt:
        assert ckpt.format == ("torch-legacy" if fmt == "tar" else fmt)
        found = {(g.module, g.name): g.safe for g in ckpt.globals()}
        assert found[PAYLOAD_GLOBAL] is False
        assert [k for k, safe in found.items() if not safe] == [PAYLOAD_GLOBAL]
        assert "os.system" in ckpt.summary().unknown_globals
        # the slot's own value is intact: the file reads as without the payload
        if fmt == "torchscript":
            assert ckpt.root["state_dict"]["w"].numpy().tolist() == [1.5, 2.5]
        else:
            assert ckpt.root["w"].numpy().tolist() == [[1, 2, 3], [4, 5, 6]]
    assert scan(path, engine=engine).verdict == "dangerous"


@pytest.mark.parametrize(("fmt", "slot"), SLOTS)
def test_payload_in_every_slot_is_refused_in_strict_mode(
    fmt: str, slot: str, engine: str, tmp_path
) -> None:
    built = BUILDERS[fmt](slot)
    path = _write(tmp_path, built.data)
    with pytest.raises(UnsafePickleError) as err:
        ckptpeek.open(path, engine=engine, strict=True)
    assert err.value.code == "forbidden-global"
    assert (err.value.member, err.value.offset) == (built.member, built.offset)
    assert "os.system" in str(err.value)


@pytest.mark.parametrize("fmt", sorted(BUILDERS))
def test_without_payload_everything_is_safe(fmt: str, engine: str, tmp_path) -> None:
    path = _write(tmp_path, BUILDERS[fmt]().data)
    with ckptpeek.open(path, engine=engine, strict=True) as ckpt:
        assert ckpt.globals() and all(g.safe for g in ckpt.globals())
    assert scan(path, engine=engine).verdict == "safe"


def test_cli_globals_lists_the_payload(tmp_path, capsys) -> None:
    from ckptpeek.cli import main

    paths = [
        _write(tmp_path, built.data, f"{i}.pt") for i, (_, _, built) in enumerate(every_slot())
    ]
    assert main(["--globals", *paths]) == 0
    out = capsys.readouterr().out
    assert out.count("UNKNOWN  os.system") == len(paths)


@pytest.mark.parametrize(("fmt", "slot"), [s for s in SLOTS if s[0] != "torchscript"])
def test_torch_names_the_payload(torch, fmt: str, slot: str, tmp_path) -> None:
    """torch.load (weights_only=False) resolves the payload global of every slot, and
    every global it resolves is one ckptpeek reports (torch resolves storage names in
    the main pickle itself, so it may name fewer)."""
    path = _write(tmp_path, BUILDERS[fmt](slot).data)
    seen, out = torch_globals(torch, path)
    assert not isinstance(out, Exception), out
    assert out["w"].tolist() == [[1, 2, 3], [4, 5, 6]]
    assert PAYLOAD_GLOBAL in seen
    with ckptpeek.open(path) as ckpt:
        assert set(seen) <= {(g.module, g.name) for g in ckpt.globals()}


@pytest.mark.parametrize("fmt", ["torch-legacy", "tar"])
def test_torch_loads_the_clean_files(torch, fmt: str, tmp_path) -> None:
    path = _write(tmp_path, BUILDERS[fmt]().data)
    seen, out = torch_globals(torch, path)
    assert not isinstance(out, Exception), out
    assert out["w"].tolist() == [[1, 2, 3], [4, 5, 6]]
    with ckptpeek.open(path) as ckpt:
        assert set(seen) <= {(g.module, g.name) for g in ckpt.globals()}


@pytest.mark.parametrize("slot", [None, *TS_SLOTS])
def test_torchscript_slots_against_torch_jit_load(torch, slot: str | None, tmp_path) -> None:
    """torch.jit.load (and torch.load, which hands it TorchScript) unpickles data.pkl and
    constants.pkl with the C++ unpickler: the payload global is named and refused, never
    imported; without it the archive built here loads."""
    path = _write(tmp_path, torchscript_file(slot).data)
    if slot is None:
        assert torch.jit.load(path).w.tolist() == [1.5, 2.5]
        return
    for load in (torch.jit.load, lambda p: torch.load(p, weights_only=False)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(RuntimeError, match="Unknown type name 'os.system'"):
                load(path)


# -- the tar format as tarfile reads it -------------------------------------------------------

EVIL = pk(_TAR_MAIN, True)  # the ``pickle`` member with the payload
DECOY = pk(_TAR_MAIN)  # the same without it


def _head() -> bytes:
    c = tar_contents()
    return tar_member(b"storages", c["storages"]) + tar_member(b"tensors", c["tensors"])


def tar_layouts() -> Iterator[tuple[str, bytes, str | None]]:
    """``(name, file, expected)``: tars whose ``pickle`` member may be found in more than
    one place. ``expected`` is None where ckptpeek must read what tarfile reads, else
    the code it refuses the file with. Most put the payload where tarfile looks and a
    decoy where a looser reader would."""
    h = _head()
    yield "plain", h + tar_member(b"pickle", EVIL) + TAR_END, None
    yield "python-tarfile-pax", tar_file_pax("pickle"), None
    # GNU long name: tarfile names the member after the record, the last "pickle" wins
    long_evil = tar_member(b"././@LongLink", b"pickle\0", b"L") + tar_member(b"whatever", EVIL)
    yield (
        "long-name-after-decoy",
        h + tar_member(b"pickle", DECOY) + long_evil + TAR_END,
        ("tar-extended-header"),
    )
    yield "long-name-only", h + long_evil + TAR_END, "tar-extended-header"
    long_link = tar_member(b"././@LongLink", b"evil\0", b"K")
    yield (
        "long-link",
        h + long_link + tar_member(b"pickle", DECOY) + TAR_END,
        ("tar-extended-header"),
    )
    # PAX headers: a path that renames, a global header that renames every member after it
    rename = pax_header(pax_record(b"path", b"pickle"))
    yield (
        "pax-path",
        h + tar_member(b"pickle", DECOY) + rename + tar_member(b"x", EVIL) + TAR_END,
        ("tar-extended-header"),
    )
    glob = pax_header(pax_record(b"path", b"pickle"), b"g")
    yield "pax-global", h + glob + tar_member(b"x", EVIL) + TAR_END, "tar-extended-header"
    solaris = pax_header(pax_record(b"path", b"pickle"), b"X")
    yield "pax-solaris", h + solaris + tar_member(b"x", EVIL) + TAR_END, "tar-extended-header"
    sparse = pax_header(pax_record(b"GNU.sparse.name", b"pickle"))
    yield "pax-sparse-name", h + sparse + tar_member(b"x", EVIL) + TAR_END, "tar-extended-header"
    # what torch's writer puts in a PAX header, and a framed comment that holds a newline
    # and a "path=" line (a line-by-line reader sees a rename, tarfile a comment)
    meta = pax_record(b"mtime", b"1500000000.25") + pax_record(b"uname", "r\u00e9".encode())
    yield "pax-meta", h + pax_header(meta) + tar_member(b"pickle", EVIL) + TAR_END, None
    hidden = pax_record(b"comment", b"x\n12 path=x\n")
    yield "pax-comment", h + pax_header(hidden) + tar_member(b"pickle", EVIL) + TAR_END, None
    size = pax_record(b"size", b"%d" % len(EVIL))
    body = tar_header(b"pickle", 0) + _pad(EVIL)
    yield "pax-size", h + pax_header(size) + body + TAR_END, None
    torn = b"13 mtime=1.0\n" + b"9 uid=0\n"  # the second record's length is wrong
    yield (
        "pax-torn",
        h + pax_header(torn) + tar_member(b"pickle", EVIL) + TAR_END,
        ("tar-bad-header"),
    )
    yield (
        "pax-at-end",
        h + tar_member(b"pickle", EVIL) + pax_header(meta) + TAR_END,
        ("tar-bad-header"),
    )
    yield (
        "pax-twice",
        h + pax_header(meta) + pax_header(meta) + tar_member(b"pickle", EVIL) + (TAR_END),
        "tar-extended-header",
    )
    # the same name twice: tarfile takes the last
    yield (
        "duplicate",
        h + tar_member(b"pickle", DECOY) + tar_member(b"pickle", EVIL) + TAR_END,
        ("tar-duplicate-member"),
    )
    # the ustar prefix is joined whatever the magic: "junk/pickle" is no "pickle"
    for magic in (b"ustar\x0000", b"ustar  \0", b""):
        decoy = tar_member(b"pickle", DECOY, prefix=b"junk", magic=magic)
        yield (
            f"prefix-{magic[:5].decode() or 'v7'}",
            h + tar_member(b"pickle", EVIL) + decoy + (TAR_END),
            None,
        )
    # links: tarfile's extractfile follows them to another member
    for kind in (b"1", b"2"):
        link = tar_header(b"pickle", 0, kind, linkname=b"evil")
        yield (
            f"link-{kind.decode()}",
            h + tar_member(b"evil", EVIL) + link + TAR_END,
            ("tar-member-type"),
        )
    # an unknown type is a regular file to tarfile
    yield (
        "unknown-type",
        h + tar_member(b"pickle", DECOY) + tar_member(b"pickle", EVIL, b"Z") + (TAR_END),
        "tar-member-type",
    )
    # tarfile does not skip a directory's (or link's) stated size: what a reader that
    # does skip would never see is the next member to tarfile
    hiding = tar_member(b"pickle", EVIL)
    for kind, name in ((b"5", b"d"), (b"\0", b"d/"), (b"2", b"l")):
        cover = tar_header(name, len(hiding), kind)
        yield (
            f"skip-{name.decode()}",
            h + tar_member(b"pickle", DECOY) + cover + hiding + (TAR_END),
            "tar-member-type",
        )
    # a header tarfile finds invalid ends its archive: the decoy after it does not exist
    bad_uid = tar_header(b"y", 0, uid=b"0000z00\0")
    yield (
        "invalid-header",
        h + tar_member(b"pickle", EVIL) + bad_uid + tar_member(b"pickle", DECOY) + TAR_END,
        "tar-bad-header",
    )
    # a checksum over signed bytes (old Sun tar) is one tarfile accepts
    yield (
        "signed-checksum",
        h + tar_member(b"pickle", EVIL, uname=b"\xe9t\xe9", signed=True) + (TAR_END),
        None,
    )
    # base-256 and odd-but-valid octal number fields
    weird = bytearray(tar_header(b"pickle", len(EVIL)))
    weird[124:136] = b"\x80" + len(EVIL).to_bytes(11, "big")
    weird[100:108] = b" +0_644 "
    weird[148:156] = b" " * 8
    weird[148:156] = b"%06o\0 " % sum(weird)
    yield "number-fields", h + bytes(weird) + _pad(EVIL) + TAR_END, None
    # the last member's padding is cut: tarfile raises ReadError (torch then reads the
    # file as pickles)
    yield (
        "padding-cut",
        (h + tar_member(b"pickle", EVIL))[: len(h) + 512 + len(EVIL)],
        ("truncated"),
    )


TAR_LAYOUTS = {name: (data, expected) for name, data, expected in tar_layouts()}


def _tarfile_members(data: bytes) -> dict[str, tuple[int, int]] | Exception:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:", format=tarfile.PAX_FORMAT) as t:
            out = {}
            for name in ("storages", "tensors", "pickle"):
                m = t.getmember(name)
                out[name] = (m.offset_data, m.size)
            return out
    except (tarfile.TarError, KeyError) as exc:
        return exc


def _tarfile_pickle(data: bytes) -> bytes | Exception:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:", format=tarfile.PAX_FORMAT) as t:
            f = t.extractfile("pickle")
            assert f is not None
            return f.read()
    except (tarfile.TarError, KeyError) as exc:
        return exc


def _members(data: bytes) -> dict[str, tuple[int, int]]:
    opts = ReadOptions(False, _backend.engine("python"), DEFAULT_LIMITS, None)
    found = torch_legacy._tar_members(ByteSource(io.BytesIO(data)), opts)
    return {n.decode(): span for n, span in found.items() if n in torch_legacy._TAR_MEMBERS}


@pytest.mark.parametrize("name", sorted(TAR_LAYOUTS))
def test_tar_layout_is_read_as_tarfile_reads_it(name: str, engine: str, tmp_path) -> None:
    data, expected = TAR_LAYOUTS[name]
    path = _write(tmp_path, data)
    if expected is not None:
        for strict in (False, True):
            with pytest.raises(FormatError) as err:
                ckptpeek.open(path, engine=engine, strict=strict)
            assert err.value.code == expected, err.value
        assert scan(path, engine=engine).verdict == "refused"
        return
    # accepted: the same members at the same bytes as tarfile, and tarfile's pickle
    assert _members(data) == _tarfile_members(data)
    assert _tarfile_pickle(data) == EVIL
    with ckptpeek.open(path, engine=engine) as ckpt:
        assert PAYLOAD_GLOBAL in {(g.module, g.name) for g in ckpt.globals()}
        assert ckpt.root["w"].numpy().tolist() == [[1, 2, 3], [4, 5, 6]]
    with pytest.raises(UnsafePickleError):
        ckptpeek.open(path, engine=engine, strict=True)


#: what tarfile's ``extractfile("pickle")`` gives where it is not the payload's member
TARFILE_READS: dict[str, bytes | type[Exception]] = {
    "long-link": DECOY,  # a long link of a regular file changes nothing
    "pax-at-end": tarfile.ReadError,  # then torch reads the file as pickles
    "padding-cut": tarfile.ReadError,
}


@pytest.mark.parametrize("name", sorted(TAR_LAYOUTS))
def test_tar_layouts_against_tarfile(name: str) -> None:
    """The evidence for each refusal: in every layout but these three, tarfile's
    ``pickle`` is the member with the payload, so a reader that took the decoy (as
    ckptpeek did) would miss what torch runs."""
    got = _tarfile_pickle(TAR_LAYOUTS[name][0])
    want = TARFILE_READS.get(name, EVIL)
    if isinstance(want, bytes):
        assert got == want, got
    else:
        assert isinstance(got, want), got


@pytest.mark.parametrize("name", sorted(TAR_LAYOUTS))
def test_tar_layouts_against_torch(torch, name: str, tmp_path) -> None:
    """torch.load runs the payload exactly where tarfile finds it as ``pickle``: in every
    layout ckptpeek reads (and reports it) and in those it refuses."""
    seen, out = torch_globals(torch, _write(tmp_path, TAR_LAYOUTS[name][0]))
    assert (PAYLOAD_GLOBAL in seen) == (TARFILE_READS.get(name, EVIL) == EVIL), out


def test_tar_header_as_tarfile_frombuf() -> None:
    """``_tar_header`` accepts exactly the headers ``tarfile.TarInfo.frombuf`` accepts,
    with the same name, size and type: random corruptions of the number fields, the
    checksum, the type and the prefix of a valid header."""
    rng = random.Random(10)
    alphabet = b"01234567 \0+-_8x\x1c\x80\xff\xe9"
    fields = [(100, 108), (108, 116), (116, 124), (124, 136), (136, 148), (329, 337), (337, 345)]
    accepted = refused = 0
    for i in range(3000):
        h = bytearray(tar_header(b"name/" if i % 7 == 0 else b"pickle", 1234, b"0"))
        for _ in range(rng.randint(1, 3)):
            a, b = rng.choice(fields)
            at = rng.randrange(a, b)
            h[at] = rng.choice(alphabet)
        if i % 5 == 0:
            h[156] = rng.choice(b"0\x00" + b"25LKSxZ7")
        if i % 11 == 0:
            h[345:350] = b"junk/"[: rng.randint(0, 5)].ljust(5, b"\0")
        h[148:156] = b" " * 8
        if i % 3:  # the right checksum, signed or unsigned; else a random one
            signed = i % 2 == 0
            h[148:156] = b"%06o\0 " % sum(x - 256 if signed and x >= 128 else x for x in h)
        else:
            h[148:156] = b"%06o\0 " % rng.randrange(4000, 9000)
        ours = tar.tar_header(bytes(h))
        try:
            info = tarfile.TarInfo.frombuf(bytes(h), "utf-8", "surrogateescape")
        except tarfile.HeaderError:
            assert ours is None, bytes(h)
            refused += 1
            continue
        assert ours == (info.name.encode("utf-8", "surrogateescape"), info.size, info.type)
        accepted += 1
    assert accepted > 500 and refused > 500


def test_pax_records_as_tarfile_parses_them() -> None:
    """Where ``_pax_records`` accepts a PAX header, tarfile reads the same records (here:
    the same uname and comment); random cuts and changed lengths of real records."""
    rng = random.Random(11)
    base = pax_record(b"uname", b"a=b c") + pax_record(b"comment", b"x\ny") + b"\0" * 7
    agreed = 0
    for _ in range(400):
        buf = bytearray(base)
        for _ in range(rng.randint(0, 2)):
            buf[rng.randrange(len(buf))] = rng.choice(b"0123456789 =\n\0a")
        records = tar.pax_records(bytes(buf))
        if records is None:
            continue
        data = pax_header(bytes(buf)) + tar_member(b"f", b"") + TAR_END
        with tarfile.open(fileobj=io.BytesIO(data)) as t:
            (info,) = t.getmembers()
        want = {k.decode(): v.decode("utf-8", "surrogateescape") for k, v in records}
        assert {k: info.pax_headers[k] for k in want} == want
        agreed += 1
    assert agreed > 50


# -- where a pickle ends: a FRAME past STOP ---------------------------------------------------


def _framed(body: bytes, after_stop: bytes) -> bytes:
    """A protocol-4 pickle whose one FRAME holds ``body`` + STOP and then ``after_stop``."""
    inner = body + b"." + after_stop
    return b"\x80\x04\x95" + struct.pack("<Q", len(inner)) + inner


def test_frame_past_stop_agrees_with_cpython() -> None:
    """``_frame_past_stop`` flags a pickle exactly when CPython's unpickler leaves a
    ``BytesIO`` somewhere else than just after STOP; no pickle CPython writes is flagged."""
    for extra in (b"", b"K\x01.", b"\x95" + bytes(8), b"\x95" + struct.pack("<Q", 3) + b"abc"):
        data = _framed(b"K\x05", extra) + b"N."
        f = io.BytesIO(data)
        assert pickle.load(f) == 5
        end = data.index(b"K\x05.") + 3
        assert (torch_legacy._frame_past_stop(data, end) is not None) == (f.tell() != end)
    # a 0x95 byte inside data, with a plausible length after it, is no frame
    p = pickle.dumps([b"\x95" + struct.pack("<Q", 40), list(range(50))], protocol=4)
    assert torch_legacy._frame_past_stop(p + bytes(64), len(p)) is None
    for obj in ({"a": list(range(20_000))}, b"x" * 300_000, [b"y" * 70_000, "z" * 10], 7):
        for proto in (2, 4, 5):
            data = pickle.dumps(obj, protocol=proto)
            assert torch_legacy._frame_past_stop(data + b"trailing", len(data)) is None


def legacy_frame_overrun() -> bytes:
    """The magic number's FRAME runs past its STOP over a version pickle with the
    payload: a buffered file reads that one next, a ``BytesIO`` the real one after it."""
    parts = legacy_parts()
    magic = _framed(b"\x8a\x0a" + MAGIC.to_bytes(10, "little"), pk(Pickle().int(1001), True))
    return magic + b"".join(parts[1:])


def tar_frame_overrun() -> bytes:
    """The storage count's FRAME runs past its STOP over a decoy of the rest of the
    ``storages`` member; torch, reading the extracted member unbuffered, reads the
    records after the frame, whose first has the payload."""
    rest = _STORAGE_RECORD, struct.pack("<q", 6) + FLOATS + pk(Pickle().empty_list())
    decoy = pk(rest[0]) + rest[1]
    storages = _framed(b"K\x01", decoy) + pk(rest[0], True) + rest[1]
    c = tar_contents()
    return (
        tar_member(b"storages", storages)
        + tar_member(b"tensors", c["tensors"])
        + tar_member(b"pickle", c["pickle"])
        + TAR_END
    )


@pytest.mark.parametrize(
    ("build", "member", "offset"),
    [(legacy_frame_overrun, None, 2), (tar_frame_overrun, "storages", 2)],
)
def test_frame_past_stop_is_refused(build, member, offset, engine, tmp_path) -> None:
    path = _write(tmp_path, build())
    for strict in (False, True):
        with pytest.raises(FormatError) as err:
            ckptpeek.open(path, engine=engine, strict=strict)
        assert err.value.code == "legacy-frame-overrun"
        assert (err.value.member, err.value.offset) == (member, offset)


def test_frame_past_stop_against_torch(torch, tmp_path) -> None:
    """The evidence: torch reads a different next pickle from a path than from a BytesIO
    (legacy), and reads the tar's member after the frame."""
    data = legacy_frame_overrun()
    path = _write(tmp_path, data)
    by_path, _ = torch_globals(torch, path)
    by_bytes, out = torch_globals(torch, io.BytesIO(data))
    assert PAYLOAD_GLOBAL in by_path and PAYLOAD_GLOBAL not in by_bytes
    assert out["w"].tolist() == [[1, 2, 3], [4, 5, 6]]
    seen, out = torch_globals(torch, _write(tmp_path, tar_frame_overrun(), "t.pt"))
    assert PAYLOAD_GLOBAL in seen and out["w"].tolist() == [[1, 2, 3], [4, 5, 6]]


# -- a tar that is also a pickle ----------------------------------------------------------------


def tar_polyglot() -> bytes:
    """A legacy file (with the payload in its version pickle) whose first 512 bytes are
    also a valid tar header: sys_info starts with a string that fills the header's
    number fields, checksum and type (a regular member of 0 bytes; then zeros: the end
    of the archive)."""
    parts = legacy_parts("version")
    marker = b"\x01" * 1024

    def sys_info(pad: bytes) -> bytes:
        p = Pickle().empty_dict().mark().str("pad").raw(b"X" + struct.pack("<I", len(pad)) + pad)
        return pk(bytes(p) + _sys_info()[2:])  # then the usual keys, into the same dict

    parts[2] = sys_info(marker)
    at = b"".join(parts).index(marker)
    assert at < 100
    pad = bytearray(len(marker))
    fields = {100: b"0000644\0", 108: b"0000000\0", 116: b"0000000\0", 124: b"00000000000\0"}
    fields |= {136: b"00000000000\0", 148: b" " * 8, 156: b"0", 329: b"0000000\0"}
    fields |= {337: b"0000000\0"}
    for field, value in fields.items():
        pad[field - at : field - at + len(value)] = value
    parts[2] = sys_info(bytes(pad))
    data = bytearray(b"".join(parts))
    data[148:156] = b"%06o\0 " % sum(data[:512])
    return bytes(data)


def test_tar_pickle_polyglot_is_refused(engine, tmp_path) -> None:
    path = _write(tmp_path, tar_polyglot())
    with pytest.raises(FormatError) as err:
        ckptpeek.open(path, engine=engine)
    assert err.value.code == "tar-pickle-polyglot"
    with open(path, "rb") as f, pytest.raises(FormatError) as err:
        ckptpeek.open(f, engine=engine)
    assert err.value.code == "tar-pickle-polyglot"


def test_tar_pickle_polyglot_against_torch(torch, tmp_path) -> None:
    """torch.load of the path opens it with tarfile (and finds no ``storages``); of a
    BytesIO it reads the pickles and runs the payload."""
    data = tar_polyglot()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as t:
        assert len(t.getmembers()) == 1
    by_path, out = torch_globals(torch, _write(tmp_path, data))
    assert isinstance(out, KeyError) and by_path == []
    by_bytes, out = torch_globals(torch, io.BytesIO(data))
    assert PAYLOAD_GLOBAL in by_bytes and out["w"].tolist() == [[1, 2, 3], [4, 5, 6]]


def test_torch_written_tars_are_no_polyglot(engine) -> None:
    for data in (tar_file_pax(), tar_file().data):
        with ckptpeek.open(io.BytesIO(data), engine=engine) as ckpt:
            assert ckpt.members["layout"] == "tar"


def safetensors_tar_polyglot() -> bytes:
    """A valid safetensors file (one uint8 tensor) whose first 512 bytes are also a valid
    tar header: the JSON header's metadata string fills the number fields and checksum,
    and the tensor's bytes are the tar's ``storages``, ``tensors`` and ``pickle`` members
    (the payload in ``pickle``)."""
    import json

    rest = b"".join(tar_member(n.encode(), d) for n, d in tar_contents("pickle").items())
    rest += TAR_END
    meta = {"__metadata__": {"p": "#" * 400}}
    meta["x"] = {"dtype": "U8", "shape": [len(rest)], "data_offsets": [0, len(rest)]}  # type: ignore[dict-item]
    header = json.dumps(meta, separators=(",", ":")).ljust(504).encode()
    data = bytearray(struct.pack("<Q", len(header)) + header + rest)
    at = data.index(b"#" * 400)
    data[at : at + 400] = b" " * 400  # spaces: JSON text, and blanks to tarfile's numbers
    for field in (100, 108, 116, 329, 337):
        data[field : field + 8] = b"0000644 "
    data[124:136] = data[136:148] = b"00000000000 "
    data[156:157] = b"0"
    data[148:156] = b"%06o  " % sum(data[:512])
    return bytes(data)


def test_safetensors_tar_polyglot_is_not_safe(engine, tmp_path) -> None:
    """torch.load of a path tries tarfile on anything that is no PK\\x03\\x04 zip, so the
    sniffer asks tarfile's question first: the file is a tar, read as torch reads it."""
    path = _write(tmp_path, safetensors_tar_polyglot())
    with ckptpeek.open(path, engine=engine) as ckpt:
        assert ckpt.format == "torch-legacy" and ckpt.members["layout"] == "tar"
        assert PAYLOAD_GLOBAL in {(g.module, g.name) for g in ckpt.globals() if not g.safe}
    assert scan(path, engine=engine).verdict in ("dangerous", "refused")


def test_safetensors_tar_polyglot_against_torch(torch, tmp_path) -> None:
    """The evidence: tarfile lists the three members, and torch.load runs the payload."""
    data = safetensors_tar_polyglot()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as t:
        assert t.getnames()[1:] == ["storages", "tensors", "pickle"]
    seen, out = torch_globals(torch, _write(tmp_path, data))
    assert PAYLOAD_GLOBAL in seen and out["w"].tolist() == [[1, 2, 3], [4, 5, 6]]
