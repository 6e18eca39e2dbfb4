"""Write the tiny legacy-format fixtures in tests/data/ and their expected values.

Run from the repository root with torch installed:

    python tests/data/make_legacy_fixtures.py

- ``legacy_state_dict.pt``: the real ``torch.save(obj, f, _use_new_zipfile_serialization=False)``
  (protocol 2): parameters, views sharing one storage, every dtype legacy saving
  round-trips, a 0-d and an empty tensor.
- ``legacy_py2.pt``: what torch 0.4 under Python 2 wrote, built by hand here (no
  Python 2 needed): the same sequence of pickles, but written by :class:`Py2Pickler`,
  which spells every Python 2 ``str`` as SHORT_BINSTRING/BINSTRING (keys, the
  ``'storage'`` tag, storage keys, locations), ``unicode`` as BINUNICODE, an
  ``OrderedDict`` the way Python 2 reduced it (a list of ``[key, value]`` lists, then
  BUILD with its ``_metadata``) and tensors with the 6-argument ``_rebuild_tensor_v2``
  of torch 0.4. Storages follow in sorted-key order, each an 8-byte little-endian count
  and its bytes. The current ``torch.load`` reads it: that load is the ground truth.
- ``legacy_tar.pt``: the tar format of torch < 0.4 (members ``sys_info``,
  ``storages``, ``tensors``, ``pickle``), also built by hand (:func:`tar_checkpoint`)
  and checked by ``torch.load``, which still reads it.

Beside each, ``<name>.expected.json`` records what ``torch.load`` returns, in the
format of ``make_fixtures.py`` (whose ``expected()`` is reused), so
``tests/test_fixtures.py`` checks ckptpeek against them without torch.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import pathlib
import struct
import sys
import tarfile
import warnings

HERE = pathlib.Path(__file__).resolve().parent

MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_NAMES = {
    "float32": "FloatStorage",
    "float64": "DoubleStorage",
    "float16": "HalfStorage",
    "bfloat16": "BFloat16Storage",
    "int64": "LongStorage",
    "int32": "IntStorage",
    "int16": "ShortStorage",
    "int8": "CharStorage",
    "uint8": "ByteStorage",
    "bool": "BoolStorage",
    "complex64": "ComplexFloatStorage",
    "complex128": "ComplexDoubleStorage",
}


def legacy_state_dict():
    """The object of ``legacy_state_dict.pt`` (and of the real-torch tests)."""
    import torch

    g = torch.Generator().manual_seed(0)
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    return {
        "linear.weight": torch.nn.Parameter(torch.randn(3, 4, generator=g)),
        "linear.bias": torch.randn(3, generator=g),
        "view.slice": base[1:3, 2:5],
        "view.transposed": base.t(),
        "view.step": base[:, ::2],
        "view.base": base,
        "expanded": torch.tensor([1.0, 2.0]).expand(3, 2),
        "bf16": torch.linspace(-2, 2, 5).to(torch.bfloat16),
        "f16": torch.linspace(-2, 2, 5).to(torch.float16),
        "f64": torch.tensor([1e-300, -0.0, float("inf")], dtype=torch.float64),
        "i64": torch.tensor([-(2**62), 0, 2**62]),
        "i32": torch.tensor([-7, 2**31 - 1], dtype=torch.int32),
        "i16": torch.tensor([-300, 300], dtype=torch.int16),
        "i8": torch.tensor([-128, 127], dtype=torch.int8),
        "u8": torch.arange(5, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "c64": torch.tensor([1 + 2j, -3j], dtype=torch.complex64),
        "c128": torch.tensor([0.5 - 1j], dtype=torch.complex128),
        "scalar": torch.tensor(0.875),
        "empty": torch.zeros(3, 0),
        "grad": torch.ones(2, requires_grad=True),
        "meta": {
            "epoch": 7,
            "note": "legacy fixture",
            "sizes": torch.Size([2, 3]),
            "device": torch.device("cpu"),
            "dtype": torch.float16,
        },
    }


# -- a Python 2 pickler, by hand ------------------------------------------------------------


class Py2Tensor:
    """A tensor as the Python 2 pickler sees it: storage key, type, geometry."""

    def __init__(
        self,
        key: str,
        storage_type: str,
        numel: int,
        offset: int,
        size: tuple,
        stride: tuple,
        requires_grad: bool = False,
    ) -> None:
        self.key, self.storage_type, self.numel = key, storage_type, numel
        self.offset, self.size, self.stride, self.requires_grad = (
            offset,
            size,
            stride,
            requires_grad,
        )


class Py2OrderedDict(collections.OrderedDict):
    """An OrderedDict with the ``_metadata`` attribute a state dict carries."""

    metadata = None


class Py2Pickler:
    """Protocol 2 as Python 2's cPickle wrote it: ``bytes`` are Python 2 ``str``
    (SHORT_BINSTRING / BINSTRING), ``str`` is ``unicode`` (BINUNICODE)."""

    def __init__(self) -> None:
        self.out = bytearray(b"\x80\x02")
        self.memo = 0
        self.globals: dict[tuple[str, str], int] = {}

    def put(self) -> None:
        self.out += (
            b"q" + bytes([self.memo]) if self.memo < 256 else b"r" + struct.pack("<I", self.memo)
        )
        self.memo += 1

    def glob(self, module: str, name: str) -> None:
        idx = self.globals.get((module, name))
        if idx is not None:
            self.out += b"h" + bytes([idx]) if idx < 256 else b"j" + struct.pack("<I", idx)
            return
        self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"
        self.globals[(module, name)] = self.memo
        self.put()

    def dump(self, obj) -> bytes:
        self.save(obj)
        self.out += b"."
        return bytes(self.out)

    def save(self, o) -> None:  # noqa: C901 - one branch per type, like pickle.py
        out = self.out
        if o is None:
            out += b"N"
        elif o is True or o is False:
            out += b"\x88" if o else b"\x89"
        elif type(o) is int:
            if 0 <= o < 256:
                out += b"K" + bytes([o])
            elif 0 <= o < 65536:
                out += b"M" + struct.pack("<H", o)
            elif -(2**31) <= o < 2**31:
                out += b"J" + struct.pack("<i", o)
            else:
                raw = o.to_bytes((o.bit_length() + 8) // 8, "little", signed=True)
                out += b"\x8a" + bytes([len(raw)]) + raw
        elif type(o) is float:
            out += b"G" + struct.pack(">d", o)
        elif type(o) is bytes:
            out += (
                b"U" + bytes([len(o)]) if len(o) < 256 else b"T" + struct.pack("<I", len(o))
            ) + o
            self.put()
        elif type(o) is str:
            raw = o.encode("utf-8")
            out += b"X" + struct.pack("<I", len(raw)) + raw
            self.put()
        elif type(o) is tuple:
            if not o:
                out += b")"
                return
            if len(o) > 3:
                out += b"("
            for v in o:
                self.save(v)
            out += {1: b"\x85", 2: b"\x86", 3: b"\x87"}.get(len(o), b"t")
            self.put()
        elif type(o) is list:
            out += b"]"
            self.put()
            if o:
                out += b"("
                for v in o:
                    self.save(v)
                out += b"e"
        elif isinstance(o, collections.OrderedDict):
            self.glob("collections", "OrderedDict")
            self.save([[k, v] for k, v in o.items()])
            self.out += b"\x85R"
            self.put()
            if getattr(o, "metadata", None) is not None:
                self.save({b"_metadata": o.metadata})
                self.out += b"b"
        elif type(o) is dict:
            out += b"}"
            self.put()
            if o:
                out += b"("
                for k, v in o.items():
                    self.save(k)
                    self.save(v)
                out += b"u"
        elif isinstance(o, Py2Tensor):
            self.glob("torch._utils", "_rebuild_tensor_v2")
            self.out += b"("
            self.out += b"("
            self.save(b"storage")
            self.glob("torch", o.storage_type)
            self.save(o.key.encode())
            self.save(b"cpu")
            self.save(o.numel)
            self.out += b"N"
            self.out += b"t"
            self.put()
            self.out += b"Q"
            self.save(o.offset)
            self.save(tuple(o.size))
            self.save(tuple(o.stride))
            self.save(bool(o.requires_grad))
            self.glob("collections", "OrderedDict")
            self.out += b")R"
            self.put()
            self.out += b"t"
            self.put()
            self.out += b"R"
            self.put()
        else:
            raise TypeError(f"cannot pickle {type(o)}")


def py2_checkpoint(extra_value=b"adam") -> bytes:
    """A legacy file as Python 2 + torch 0.4 wrote ``{"state_dict": ..., "epoch": ...}``.

    ``extra_value`` lands at ``root["optimizer"]``: the tests pass undecodable bytes.
    """
    weight = struct.pack("<6f", 0.5, -1.0, 2.0, 3.5, -0.25, 8.0)
    steps = struct.pack("<3q", 1, -2, 2**40)
    storages = {
        "140230418560": ("FloatStorage", 6, weight),
        "94020153280": ("LongStorage", 3, steps),
    }
    sd = Py2OrderedDict()
    sd[b"fc.weight"] = Py2Tensor("140230418560", "FloatStorage", 6, 0, (2, 3), (3, 1))
    sd[b"fc.weight_t"] = Py2Tensor("140230418560", "FloatStorage", 6, 1, (2, 2), (1, 3))
    sd[b"steps"] = Py2Tensor("94020153280", "LongStorage", 3, 0, (3,), (1,))
    sd[b"loss"] = Py2Tensor("94020153280", "LongStorage", 3, 2, (), ())
    sd.metadata = Py2OrderedDict([(b"", {b"version": 1}), (b"fc", {b"version": 1})])
    obj = {
        b"epoch": 12,
        b"arch": b"resnet18",
        b"title": "r\u00e9sum\u00e9",
        b"best": 0.75,
        b"big": 2**70,
        b"optimizer": extra_value,
        b"state_dict": sd,
        b"lr": [0.1, 0.01],
        b"shape": (2, 3),
    }
    out = bytearray()
    out += Py2Pickler().dump(MAGIC)
    out += Py2Pickler().dump(1001)
    out += Py2Pickler().dump(
        {
            b"protocol_version": 1001,
            b"little_endian": True,
            b"type_sizes": {b"short": 2, b"int": 4, b"long": 8},
        }
    )
    out += Py2Pickler().dump(obj)
    keys = sorted(storages)
    out += Py2Pickler().dump([k.encode() for k in keys])
    for k in keys:
        _, numel, raw = storages[k]
        out += struct.pack("<q", numel) + raw
    return bytes(out)


# -- the tar format (torch < 0.4) -----------------------------------------------------------


def tar_checkpoint() -> bytes:
    """``{"w": 2x3 float tensor, "w_t": its transpose, "s": a tensor on a storage view, "n": 4}``
    as torch 0.3's tar ``torch.save`` laid it out (torch/serialization.py ``legacy_load``
    documents what it reads: ``storages`` = count, then per storage a pickled
    ``(key, location, storage_type)`` and 8-byte count + bytes, then a pickled list of
    views ``(view_key, root_key, offset, numel)``; ``tensors`` = count, then per tensor a
    pickled ``(key, storage_key, tensor_type)`` and ``<i ndim, 4 pad, ndim x <q size,
    ndim x <q stride, <q offset``; ``pickle`` refers to tensors/storages by key)."""
    import pickle

    def dump(obj) -> bytes:
        return pickle.dumps(obj, protocol=2)

    class _Global:
        def __init__(self, module: str, name: str) -> None:
            self.module, self.name = module, name

    def dump_globals(obj) -> bytes:
        """Protocol 2 with ``_Global`` values written as GLOBAL opcodes."""
        p = Py2Pickler()
        p.out = bytearray(b"\x80\x02")

        def save(o):
            if isinstance(o, _Global):
                p.glob(o.module, o.name)
            elif type(o) is tuple:
                p.out += b"("
                for v in o:
                    save(v)
                p.out += b"t"
            else:
                p.save(o)

        save(obj)
        return bytes(p.out + b".")

    storages = io.BytesIO()
    storages.write(dump(2))
    storages.write(dump_globals((1, "cpu", _Global("torch", "FloatStorage"))))
    storages.write(struct.pack("<q", 6) + struct.pack("<6f", 1, 2, 3, 4, 5, 6))
    storages.write(dump_globals((2, "cpu", _Global("torch", "LongStorage"))))
    storages.write(struct.pack("<q", 4) + struct.pack("<4q", 10, 20, 30, 40))
    storages.write(dump([(3, 2, 1, 2)]))  # storage 3: elements 1..3 of storage 2

    tensors = io.BytesIO()
    tensors.write(dump(3))
    for key, storage, size, stride, offset in (
        (10, 1, (2, 3), (3, 1), 0),
        (11, 1, (3, 2), (1, 3), 0),
        (12, 3, (2,), (1,), 0),
    ):
        tensors.write(dump_globals((key, storage, _Global("torch", "FloatTensor"))))
        tensors.write(struct.pack("<i", len(size)) + b"\0" * 4)
        tensors.write(struct.pack(f"<{len(size)}q", *size))
        tensors.write(struct.pack(f"<{len(stride)}q", *stride))
        tensors.write(struct.pack("<q", offset))

    # the object: persistent ids are the keys, as strings (torch looks up int(saved_id))
    p = Py2Pickler()
    p.out += b"}"
    p.put()
    p.out += b"("
    for name, key in ((b"w", "10"), (b"w_t", "11"), (b"s", "12")):
        p.save(name)
        p.out += b"X" + struct.pack("<I", len(key)) + key.encode() + b"Q"
    p.save(b"n")
    p.save(4)
    p.out += b"u."
    main = bytes(p.out)

    sys_info = dump(
        {
            "protocol_version": 1001,
            "little_endian": True,
            "type_sizes": {"short": 2, "int": 4, "long": 8},
        }
    )
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (
            ("sys_info", sys_info),
            ("pickle", main),
            ("tensors", tensors.getvalue()),
            ("storages", storages.getvalue()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def main() -> None:
    import torch

    sys.path.insert(0, str(HERE))
    from make_fixtures import expected

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=pathlib.Path, default=HERE)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(
        legacy_state_dict(), args.out / "legacy_state_dict.pt", _use_new_zipfile_serialization=False
    )
    (args.out / "legacy_py2.pt").write_bytes(py2_checkpoint())
    (args.out / "legacy_tar.pt").write_bytes(tar_checkpoint())
    for name in ("legacy_state_dict.pt", "legacy_py2.pt", "legacy_tar.pt"):
        obj = torch.load(args.out / name, map_location="cpu", weights_only=False)
        (args.out / f"{name}.expected.json").write_text(json.dumps(expected(obj), indent=1) + "\n")
        print(f"wrote {name} ({(args.out / name).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
