"""The fuzzer's one-view findings in ZIP and legacy files (fuzz/, harness `torch`).

Each class of input has a generator here (or in ``test_zip_views.py``, whose trick
classes both ZIP directory parsers are also compared on) that builds its variants from
scratch, without torch. For each, ckptpeek reads the file exactly as ``torch.load``
does, or refuses it with a code that says which two readers disagree:

- a member miniz takes for a directory (external attribute 0x10, a name ending in "/"):
  torch returns uninitialised memory for its bytes - refused (``zip-directory-member``)
  when it holds bytes; an empty directory entry, as zip tools write, is read;
- a ZIP64 locator pointing at no ZIP64 end record: miniz takes the 32-bit end record,
  and so does ckptpeek when that record has every value (and a ZIP64 record before the
  locator, which ``zipfile`` reads, says the same);
- a STORED member with two sizes: refused (``zip-stored-size-mismatch``) - miniz reads
  ``size`` bytes or refuses the archive, depending on the member's DOS time;
- a legacy ``sys_info`` that is not a dict: torch never looks at it, nor does ckptpeek;
- a legacy pickle naming a storage its key list lacks: torch makes that storage from
  uninitialised memory - refused (``missing-storage``).

Where torch is installed, the differential tests record what torch 2.13 does with the
same bytes: that is the evidence for each decision.
"""

from __future__ import annotations

import io
import pickle
import struct
import warnings
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
from _builders import FLOATS, Member, Pickle, build_zip, small_pickle, torch_zip
from test_zip_views import _cd_entries, patch, with_attributes, zip64_end, zip_parser

import ckptpeek
from ckptpeek.errors import CheckpointError, FormatError
from ckptpeek.io import zipdir
from ckptpeek.io.source import ByteSource

__all__ = ("zip_parser",)  # the fixture, imported: C and pure ZIP directory parsers

STORAGE = struct.pack("<6f", *FLOATS)


@pytest.fixture(scope="module")
def torch() -> Any:
    torch = pytest.importorskip("torch")
    warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
    return torch


def torch_load(torch: Any, data: bytes) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def open_values(data: bytes, engine: str) -> list[float]:
    """The values of tensor ``w`` as ckptpeek reads them from ``data``."""
    with ckptpeek.open(io.BytesIO(data), engine=engine) as ckpt:
        values: list[float] = ckpt.root["w"].numpy().ravel().tolist()
        return values


def refusal(data: bytes, engine: str) -> CheckpointError:
    """The error ckptpeek raises on ``data``, at open or when every tensor is read."""
    with pytest.raises(CheckpointError) as info:
        with ckptpeek.open(io.BytesIO(data), engine=engine) as ckpt:
            for _key, ref in ckpt.tensors():
                ref.numpy()
    return info.value


# ---------------------------------------------------------------------------------------
# 1. members miniz takes for directories
# ---------------------------------------------------------------------------------------


def empty_directory_entries() -> Iterator[tuple[str, bytes]]:
    """Empty directory entries, as ``zip -r`` writes them when an archive is re-zipped:
    miniz extracts nothing from them, every reader agrees that they hold nothing."""
    folder = Member("archive/", b"")
    data = Member("archive/data/", b"")
    base = torch_zip(small_pickle(), extra=[folder, data])
    yield "named x/", base
    yield "named x/, attribute 0x10", with_attributes(base, b"archive/", 0x10)
    unix_dir = (0o40755 << 16) | 0x10
    yield "Unix directory mode", with_attributes(base, b"archive/data/", unix_dir)
    empty = torch_zip(small_pickle(), extra=[Member("archive/empty", b"")])
    yield "an empty file with attribute 0x10", with_attributes(empty, b"archive/empty", 0x10)
    members = [
        folder,
        Member("archive/data.pkl", small_pickle()),
        Member("archive/version", b"3\n"),
    ]
    members.insert(2, Member("archive/data/0", STORAGE))
    yield "the directory entry first", build_zip(members)


def test_empty_directory_entries_are_read(engine: str, zip_parser: str) -> None:
    for what, data in empty_directory_entries():
        assert open_values(data, engine) == list(FLOATS), what


def test_empty_directory_entries_torch(torch: Any) -> None:
    for what, data in empty_directory_entries():
        assert torch_load(torch, data)["w"].ravel().tolist() == list(FLOATS), what


def test_torch_save_never_marks_a_directory(torch: Any, tmp_path: Any) -> None:
    """torch's writer sets no external attributes and names no folder: the refusal
    never meets a file torch wrote."""
    objects = {
        "tensors": {"w": torch.ones(3), "b": torch.zeros(2, 2, dtype=torch.int64)},
        "nested": {"a": [torch.arange(4), {"b": torch.tensor(1.5)}], "n": 3},
        "many": {f"t{i}": torch.full((2,), float(i)) for i in range(40)},
        "empty": {},
    }
    for name, obj in objects.items():
        buf = io.BytesIO()
        torch.save(obj, buf)
        path = tmp_path / f"{name}.pt"
        torch.save(obj, path)
        for data in (buf.getvalue(), path.read_bytes()):
            entries = list(_cd_entries(data))
            assert entries, name
            for _pos, raw, fields in entries:
                made_by, external = fields[1], fields[15]
                assert (made_by, external) == (0, 0) and not raw.endswith(b"/"), (name, raw)


# ---------------------------------------------------------------------------------------
# 2. a ZIP64 locator that points at no ZIP64 end record (torch-3)
# ---------------------------------------------------------------------------------------


def _locator_at(data: bytes) -> int:
    return data.rindex(b"PK\x06\x07")


def point_locator(data: bytes, target: int) -> bytes:
    """``data`` (with ZIP64 end records) with its locator pointing at ``target``."""
    return patch(data, _locator_at(data) + 8, "<Q", target)


def torch_like() -> bytes:
    """A torch-like archive with the ZIP64 end record and locator torch always writes
    (the 32-bit end record keeps the real values when they fit, as torch's does)."""
    return zip64_end(torch_zip(small_pickle()))


def dangling_locators() -> Iterator[tuple[str, bytes]]:
    """The locator points at bytes that are no ZIP64 end record: miniz takes the
    32-bit end record, zipfile the ZIP64 record before the locator - the same values."""
    base = torch_like()
    rec = base.rindex(b"PK\x06\x06")
    cd = base.index(b"PK\x01\x02")
    for what, target in (
        ("10 bytes past the record (the fuzzer's)", rec + 10),
        ("1 byte before the record", rec - 1),
        ("the start of the file", 0),
        ("the central directory", cd),
        ("a storage's bytes", base.index(STORAGE)),
        ("the last 56 bytes", len(base) - 56),
    ):
        yield what, point_locator(base, target)


def refused_locators() -> Iterator[tuple[str, bytes, str]]:
    """Dangling locators where readers disagree, or where miniz refuses too."""
    base = torch_like()
    rec = base.rindex(b"PK\x06\x06")
    eocd = len(base) - 22
    yield "past the end of the file", point_locator(base, len(base) - 55), "zip-bad-central-dir"
    yield "at the locator", point_locator(base, _locator_at(base)), "zip-bad-central-dir"
    yield "at 2**64 - 1", point_locator(base, 2**64 - 1), "zip-bad-central-dir"
    # the end record defers to the ZIP64 record, which the locator does not point at
    for what, at, fmt, value in (
        ("count", 10, "<H", 0xFFFF),
        ("size", 12, "<L", 0xFFFFFFFF),
        ("offset", 16, "<L", 0xFFFFFFFF),
    ):
        data = patch(point_locator(base, rec + 10), eocd + at, fmt, value)
        yield f"end record's {what} saturated", data, "zip-bad-central-dir"
    # zipfile reads the ZIP64 record before the locator: it says another count (which
    # zipfile does not use; miniz does) or another directory size (zipfile then reads
    # the directory a byte early)
    for what, at in (("count", 32), ("directory size", 40)):
        value = struct.unpack_from("<Q", base, rec + at)[0] + 1
        data = patch(point_locator(base, rec + 10), rec + at, "<Q", value)
        yield f"the ZIP64 record's {what} disagrees", data, "zip-multiple-eocd"
    # no ZIP64 record at all: zipfile takes the locator's 20 bytes for bytes before
    # the archive and reads the directory 20 bytes further on
    plain = torch_zip(small_pickle())
    p_eocd = len(plain) - 22
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, 0, 1)
    yield (
        "a locator and no record",
        plain[:p_eocd] + locator + plain[p_eocd:],
        "zip-bad-central-dir",
    )


def test_dangling_locator_is_read_as_miniz_reads_it(engine: str, zip_parser: str) -> None:
    base = torch_like()
    with ByteSource(io.BytesIO(base)) as src:
        want = zipdir.read_directory(src).records
        base_read = src.bytes_read
    for what, data in dangling_locators():
        assert open_values(data, engine) == list(FLOATS), what
        with ByteSource(io.BytesIO(data)) as src:
            assert zipdir.read_directory(src).records == want, what
            # the fallback costs no read beyond the one at the locator's target
            assert src.bytes_read <= base_read + 56, (what, src.bytes_read, base_read)


def test_dangling_locator_refusals(engine: str, zip_parser: str) -> None:
    for what, data, code in refused_locators():
        err = refusal(data, engine)
        assert type(err) is FormatError and err.code == code, (what, err.code, str(err))


def test_dangling_locator_torch(torch: Any) -> None:
    """torch reads every accepted variant as the untouched archive, and zipfile lists the
    same members; of the refused ones torch refuses those past the end or saturated,
    and reads the others - which zipfile reads differently, or not at all."""
    names = zipfile.ZipFile(io.BytesIO(torch_like())).namelist()
    for what, data in dangling_locators():
        assert torch_load(torch, data)["w"].ravel().tolist() == list(FLOATS), what
        assert zipfile.ZipFile(io.BytesIO(data)).namelist() == names, what
    torch_reads = {
        "the ZIP64 record's count disagrees",
        "the ZIP64 record's directory size disagrees",
        "a locator and no record",
    }
    for what, data, _code in refused_locators():
        try:
            torch_load(torch, data)
            reads = True
        except Exception:  # noqa: BLE001 - whatever torch raises is its refusal
            reads = False
        assert reads == (what in torch_reads), what
        if reads and what != "the ZIP64 record's count disagrees":
            with pytest.raises(zipfile.BadZipFile):  # zipfile misses the directory
                zipfile.ZipFile(io.BytesIO(data))


def test_real_torch_archive_with_dangling_locator(torch: Any, engine: str) -> None:
    """The fuzzer's class on a real torch.save archive: the same tensors as torch.load."""
    buf = io.BytesIO()
    torch.save({"w": torch.arange(6.0).reshape(2, 3), "n": torch.tensor([7, 8])}, buf)
    base = buf.getvalue()
    rec = base.rindex(b"PK\x06\x06")
    data = point_locator(base, rec + 10)
    loaded = torch_load(torch, data)
    with ckptpeek.open(io.BytesIO(data), engine=engine) as ckpt:
        assert ckpt.root["w"].numpy().tolist() == loaded["w"].tolist()
        assert ckpt.root["n"].numpy().tolist() == loaded["n"].tolist()


# ---------------------------------------------------------------------------------------
# 3. a STORED member with two sizes (torch-5): the evidence for the refusal
# ---------------------------------------------------------------------------------------


def test_stored_sizes_two_views(torch: Any, engine: str) -> None:
    """miniz tests a STORED member's sizes at open with the method and the DOS time as
    one 32-bit word: with the time 0 (as torch writes it) it refuses the archive, with
    another time it reads ``size`` bytes, where zipfile reads the compressed size."""
    data = torch_zip(small_pickle(), extra=[Member("archive/x", b"0123456789ab", claim_size=10)])
    at = next(p for p, n, _f in _cd_entries(data) if n == b"archive/x")
    with pytest.raises(RuntimeError, match="invalid header or archive is corrupted"):
        torch._C.PyTorchFileReader(io.BytesIO(data))
    timed = patch(data, at + 12, "<H", 0x6000)
    reader = torch._C.PyTorchFileReader(io.BytesIO(timed))
    assert bytes(reader.get_record("x")) == b"0123456789"
    with zipfile.ZipFile(io.BytesIO(timed)) as z, pytest.raises(zipfile.BadZipFile, match="CRC"):
        z.read("archive/x")  # 12 bytes, the crc-32 of the 12
    for variant in (data, timed):
        err = refusal(variant, engine)
        assert type(err) is FormatError and err.code == "zip-stored-size-mismatch", str(err)
        assert err.member == "archive/x"


def test_stored_member_without_its_bytes_is_corrupt(engine: str, zip_parser: str) -> None:
    """``size`` bytes stored in none: miniz refuses the archive whatever the time."""
    for method in (0, 8):
        m = Member("archive/x", b"", method=method, compressed=b"", claim_size=4)
        err = refusal(torch_zip(small_pickle(), extra=[m]), engine)
        assert type(err) is FormatError and err.code == "zip-bad-central-dir", str(err)


# ---------------------------------------------------------------------------------------
# 4. and 5. legacy files: sys_info, storages missing from the key list
# ---------------------------------------------------------------------------------------

MAGIC = 0x1950A86A20F9469CFC6C


def legacy_main(keys: dict[str, str]) -> bytes:
    """The object pickle: ``{name: 2x3 float tensor on storage key}`` with legacy ids
    ``('storage', FloatStorage, key, 'cpu', 6, None)``."""
    p = Pickle().proto(2).empty_dict().mark()
    for name, key in keys.items():
        p.str(name).glob("torch._utils", "_rebuild_tensor_v2").mark()
        p.mark().str("storage").glob("torch", "FloatStorage").str(key).str("cpu").int(6)
        p.none().tuple().binpersid()
        p.int(0).int(2).int(3).tuple2().int(3).int(1).tuple2().false()
        p.glob("collections", "OrderedDict").empty_tuple().reduce()
        p.tuple().reduce()
    return bytes(p.setitems().stop())


def legacy_file(sys_info: bytes, tensors: dict[str, str], stored: list[str]) -> bytes:
    """A legacy torch.save file, pickle by pickle (``_legacy_save``)."""
    out = pickle.dumps(MAGIC, protocol=2) + pickle.dumps(1001, protocol=2) + sys_info
    out += legacy_main(tensors) + pickle.dumps(stored, protocol=2)
    for _key in stored:
        out += struct.pack("<q", 6) + STORAGE
    return out


def sys_infos() -> Iterator[tuple[str, bytes]]:
    """``sys_info`` pickles other than torch's dict: torch unpickles them and goes on."""
    sizes = {"short": 2, "int": 4, "long": 4}
    yield (
        "a tuple (the fuzzer's)",
        pickle.dumps(
            ("protocol_version", 1001, "little_endian", True, "type_sizes", sizes), protocol=2
        ),
    )
    yield "a list", pickle.dumps([1001], protocol=2)
    yield "None", pickle.dumps(None, protocol=2)
    yield "an int", pickle.dumps(7, protocol=2)
    yield "a string", pickle.dumps("little", protocol=2)
    yield "an empty dict", pickle.dumps({}, protocol=2)
    yield "little_endian 1", pickle.dumps({"little_endian": 1}, protocol=2)
    yield "little_endian None", pickle.dumps({"little_endian": None}, protocol=2)
    torchs = {"protocol_version": 1001, "little_endian": True, "type_sizes": sizes}
    yield "torch's own", pickle.dumps(torchs, protocol=2)


def test_any_sys_info_is_read(engine: str) -> None:
    for what, info in sys_infos():
        data = legacy_file(info, {"w": "0"}, ["0"])
        with ckptpeek.open(io.BytesIO(data), engine=engine) as ckpt:
            assert ckpt.format == "torch-legacy", what
            assert ckpt.members["byteorder"] == "little", what
            assert ckpt.root["w"].numpy().ravel().tolist() == list(FLOATS), what


def test_any_sys_info_torch(torch: Any) -> None:
    for what, info in sys_infos():
        loaded = torch_load(torch, legacy_file(info, {"w": "0"}, ["0"]))
        assert loaded["w"].ravel().tolist() == list(FLOATS), what


def missing_storages() -> Iterator[tuple[str, bytes]]:
    """The pickle names a storage the key list lacks (torch-1): torch allocates it and
    never fills it."""
    yield "one of two", legacy_file(pickle.dumps({}, protocol=2), {"w": "0", "v": "1"}, ["0"])
    yield "a key that differs by a digit", legacy_file(pickle.dumps({}, protocol=2), {"w": "0", "v": "01"}, ["0"])  # fmt: skip


def test_missing_storage_is_refused(engine: str) -> None:
    for what, data in missing_storages():
        err = refusal(data, engine)
        assert type(err) is FormatError and err.code == "missing-storage", (what, str(err))


def test_missing_storage_torch(torch: Any) -> None:
    """torch reads these files: the listed storage has its bytes, the other is whatever
    memory it was given (its values are not compared: they are undefined)."""
    for what, data in missing_storages():
        loaded = torch_load(torch, data)
        assert loaded["w"].ravel().tolist() == list(FLOATS), what
        assert loaded["v"].shape == (2, 3), what
