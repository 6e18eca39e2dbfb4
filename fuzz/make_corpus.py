"""Write the seed corpus of every harness: small inputs built here, without torch.

``python fuzz/make_corpus.py [--out DIR]`` writes ``DIR/<harness>/<name>`` (default
``~/.cache/ckptpeek-fuzz/seeds``; ``CKPTPEEK_FUZZ_DIR`` moves the whole fuzzing state).
Seeds are built with ``tests/_builders.py`` (byte-exact pickles and ZIP archives) and the
stdlib (``pickle``, ``zipfile``, ``tarfile``), plus copies of the tiny real checkpoints
in ``tests/data``. Each seed is a valid input or a near miss of one, so the fuzzer starts
inside every format instead of having to find its magic bytes.
"""

from __future__ import annotations

import argparse
import collections
import functools
import hashlib
import io
import json
import os
import pathlib
import pickle
import struct
import sys
import tarfile
import warnings
import zipfile
from collections.abc import Iterator
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
sys.path.insert(0, str(REPO / "tests"))

from _builders import Member, Pickle, build_zip, small_checkpoint, small_pickle, torch_zip  # noqa: E402

HARNESSES = ("zipdir", "pickle", "open", "safetensors", "catalog", "cli", "dirs", "torch")


def state_dir() -> pathlib.Path:
    """Where fuzzing keeps its seeds, corpora and findings (outside the repository)."""
    env = os.environ.get("CKPTPEEK_FUZZ_DIR")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "ckptpeek-fuzz"


def data_files() -> list[pathlib.Path]:
    return sorted(p for p in DATA.iterdir() if p.is_file() and p.suffix not in (".json", ".py"))


# --------------------------------------------------------------------------- pickles


def _stdlib_pickles() -> Iterator[tuple[str, bytes]]:
    values: dict[str, object] = {
        "dict": {"epoch": 3, "global_step": 12, "lr": 1e-3, "name": "run"},
        "nested": {"a": [1, (2, 3), {"b": None}], "c": {1, 2}, "d": frozenset({3})},
        "ordered": collections.OrderedDict([("w", 1.5), ("b", -0.0)]),
        "bytes": [b"\x00\xff", bytearray(b"ab"), "\u00e9\U0001f600"],
        "ints": [0, -1, 255, 65536, 2**31, -(2**63), 2**100],
        "float": [float("nan"), float("inf"), 1.0 / 3],
        "complex": [complex(1, -2)],
    }
    shared: list[int] = [1]
    values["shared"] = [shared, shared, {"k": shared}]
    for name, value in values.items():
        for proto in range(pickle.HIGHEST_PROTOCOL + 1):
            yield f"{name}-p{proto}", pickle.dumps(value, protocol=proto)


def _hostile_pickles() -> Iterator[tuple[str, bytes]]:
    """Small instances of the shapes the issue list names (the fuzzer grows them)."""
    p = Pickle().proto(2)  # tuple DAG: each level's key holds the previous twice
    p.empty_dict().mark()
    p.int(0)
    for i in range(8):
        p.binput(i).binget(i).tuple2()
    p.int(1).setitems()
    yield "tuple-dag-key", bytes(p.stop())
    yield "mark-flood", b"\x80\x02" + b"(" * 64 + b"N."
    yield "deep-list", b"\x80\x02" + b"]" * 32 + b"a" * 31 + b"."
    p = Pickle().proto(2).empty_dict().mark()
    for i in range(16):  # LONG1 keys that collide in hash(): i * (2**61 - 1) + 1
        key = (i * ((1 << 61) - 1) + 1).to_bytes(9, "little", signed=True)
        p.raw(b"\x8a\x09" + key).int(i)
    yield "int-keys", bytes(p.setitems().stop())
    p = Pickle().proto(2).glob("collections", "OrderedDict").empty_tuple().reduce()
    p.empty_dict().str("keys").int(1).setitem().build()
    yield "ordereddict-build", bytes(p.stop())
    p = Pickle().proto(2).empty_dict().str("cfg")
    p.glob("omegaconf.dictconfig", "DictConfig").empty_tuple().reduce()
    yield "omegaconf-stub", bytes(p.setitem().stop())
    p = Pickle().proto(2).glob("numpy.core.multiarray", "scalar")
    p.glob("numpy", "dtype").mark().str("U1").int(0).int(1).tuple().reduce()
    yield "numpy-scalar", bytes(p.raw(b"C\x04A\x00\x00\x00").tuple2().reduce().stop())
    yield "big-int", b"\x80\x02\x8b\x00\x01\x00\x00" + b"\xff" * 256 + b"."


def _library_pickles() -> Iterator[tuple[str, bytes]]:
    """Hyper-parameters as Lightning saves them: an OmegaConf DictConfig with
    interpolations (when omegaconf is installed: the test extra has it) and a Namespace."""
    import argparse  # noqa: PLC0415

    ns = argparse.Namespace(lr=0.1, encoder="resnet18", layers=[1, 2])
    yield "namespace", pickle.dumps({"hyper_parameters": ns, "epoch": 1}, protocol=2)
    try:
        from omegaconf import OmegaConf  # noqa: PLC0415
    except ImportError:
        return
    cfg = OmegaConf.create(
        {
            "model": {"name": "unet", "width": 8},
            "tag": "${model.name}-${model.width}",
            "x": "${tag}",
        }
    )
    yield "omegaconf", pickle.dumps({"hyper_parameters": cfg, "epoch": 2}, protocol=2)


def pickles() -> Iterator[tuple[str, bytes]]:
    yield "small", small_pickle()
    yield from _stdlib_pickles()
    yield from _hostile_pickles()
    yield from _library_pickles()
    files = [(p.name, p.read_bytes()) for p in data_files()] + list(torch_files())
    for name, data in files:  # every pickle member of the real archives
        if zipfile.is_zipfile(io.BytesIO(data)):
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                for n in z.namelist():
                    if n.endswith(".pkl"):
                        yield f"{name}-{n.rsplit('/', 1)[-1]}", z.read(n)
    try:  # the exotic tensors of the parity tests (importing them needs the native engine)
        from test_parity import exotic_pickle  # noqa: PLC0415

        yield "exotic", exotic_pickle()
    except BaseException:  # noqa: BLE001 - pytest.skip at import when native is not built
        pass
    base = small_pickle()
    for flags in (1, 2, 4, 8, 16, 31):  # the harness's option header (fuzz_pickle.py)
        yield f"small-options-{flags}", bytes([0xFE, flags]) + base


# --------------------------------------------------------------------------- archives


def archives() -> Iterator[tuple[str, bytes]]:
    yield "small-checkpoint", small_checkpoint()
    yield "prefix-other", torch_zip(small_pickle(), prefix="model")
    yield "deflated", build_zip([Member("a/data.pkl", small_pickle(), method=8)])
    yield "zip64", build_zip([Member("a/data.pkl", small_pickle(), zip64=True)])
    yield "comment", build_zip([Member("a/x", b"abc")], comment=b"hello")
    yield "empty", build_zip([])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", small_pickle())
        z.writestr("archive/version", "3\n")
    yield "zipfile", buf.getvalue()
    for path in data_files():
        if zipfile.is_zipfile(path):
            yield path.name, path.read_bytes()
    for name, data in torch_files():
        if zipfile.is_zipfile(io.BytesIO(data)):
            yield name, data


# --------------------------------------------------------------------------- safetensors


def safetensors_file(
    tensors: dict[str, tuple[str, list[int], bytes]], metadata: dict[str, str] | None = None
) -> bytes:
    header: dict[str, object] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    data = b""
    for name, (dtype, shape, payload) in tensors.items():
        header[name] = {
            "dtype": dtype,
            "shape": shape,
            "data_offsets": [len(data), len(data) + len(payload)],
        }
        data += payload
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # what the Rust writer pads to
    return struct.pack("<Q", len(text)) + text + data


def safetensors_seeds() -> Iterator[tuple[str, bytes]]:
    yield "f32", safetensors_file({"w": ("F32", [2, 3], struct.pack("<6f", *range(6)))})
    yield (
        "mixed",
        safetensors_file(
            {
                "a": ("I64", [2], struct.pack("<2q", -1, 1)),
                "b": ("BF16", [1, 2], b"\x80\x3f\x00\x40"),
                "c": ("BOOL", [3], b"\x01\x00\x01"),
                "d": ("F8_E4M3", [2], b"\x38\x40"),
                "e": ("U8", [0], b""),
            },
            metadata={"format": "pt", "epoch": "3"},
        ),
    )
    yield "scalar", safetensors_file({"s": ("F64", [], struct.pack("<d", 2.5))})
    yield "empty", safetensors_file({})
    for path in data_files():
        if path.suffix == ".safetensors":
            yield path.name, path.read_bytes()


# --------------------------------------------------------------------------- whole files


def legacy_files() -> Iterator[tuple[str, bytes]]:
    """A hand-made tar ("torch.save" before 1.6) and the committed legacy fixtures."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, payload in (
            ("sys_info", pickle.dumps({"little_endian": True, "type_sizes": {}}, protocol=2)),
            ("pickle", pickle.dumps({"epoch": 1}, protocol=2)),
            ("storages", pickle.dumps(0, protocol=2)),
            ("tensors", pickle.dumps(0, protocol=2)),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            t.addfile(info, io.BytesIO(payload))
    yield "tar-made", buf.getvalue()


@functools.cache
def torch_files() -> tuple[tuple[str, bytes], ...]:
    """What torch itself writes, when it is installed (optional: the other seeds cover
    every format but TorchScript without it): a TorchScript module, a legacy file,
    quantized/sparse/nested tensors."""
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        return ()
    with warnings.catch_warnings():  # quantized, sparse CSR and nested are "beta"
        warnings.simplefilter("ignore")
        return tuple(_torch_files(torch))


def _torch_files(torch: Any) -> Iterator[tuple[str, bytes]]:
    def saved(obj: object, **kw: object) -> bytes:
        buf = io.BytesIO()
        torch.save(obj, buf, **kw)
        return buf.getvalue()

    torch.manual_seed(0)
    lin = torch.nn.Linear(2, 2)
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(lin), buf)
    yield "torchscript.pt", buf.getvalue()
    yield "legacy.pt", saved(lin.state_dict(), _use_new_zipfile_serialization=False)
    x = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    yield (
        "exotic-torch.pt",
        saved(
            {
                "q": torch.quantize_per_tensor(x, 0.5, 1, torch.quint8),
                "coo": x.to_sparse(),
                "csr": x.to_sparse_csr(),
                "nested": torch.nested.nested_tensor([x[0], x[1, :2]]),
                "bf16": x.to(torch.bfloat16),
                "view": x[:, 1:],
            }
        ),
    )


def whole_files() -> Iterator[tuple[str, bytes]]:
    yield from torch_files()
    yield from archives()
    yield from legacy_files()
    yield from safetensors_seeds()
    for name, data in _stdlib_pickles():  # a bare pickle is "unknown-format" or legacy
        if name.endswith("-p2"):
            yield f"bare-{name}", data
    for path in data_files():
        yield path.name, path.read_bytes()
    for name, data in _library_pickles():
        yield f"{name}.pt", torch_zip(data)
    p = Pickle().proto(2).empty_dict().mark()  # what a terminal must never be sent
    p.str("epoch\x1b]0;title\x07").int(3).str("\u202eevil").str("x\x9b2J")
    p.str("hyper_parameters").empty_dict().str("lr\x1b[31m").str("\x1b[2J").setitem()
    yield "control-chars.pt", torch_zip(bytes(p.setitems().stop()))
    try:
        from test_parity import exotic_checkpoint  # noqa: PLC0415

        yield "exotic.pt", exotic_checkpoint()
    except BaseException:  # noqa: BLE001 - pytest.skip at import when native is not built
        pass


# --------------------------------------------------------------------------- catalog texts


def catalog_seeds() -> Iterator[tuple[str, bytes]]:
    """Prefixed with the harness's selector byte (fuzz_catalog.py)."""
    meta = {
        "schema_version": 2,
        "epoch": 3,
        "global_step": 120,
        "created_at": "2025-10-18T12:00:00+00:00",
        "metrics": {"val/hmean": 0.85, "val/loss": 0.1},
        "monitor": "val/hmean",
        "mode": "max",
        "score": 0.85,
        "encoder": "resnet18",
        "decoder": "fpn",
        "head": "db",
    }
    v1 = {"epoch": 2, "step": 50, "val_hmean": 0.5, "model": {"backbone": "resnet34"}}
    yaml_meta = "\n".join(f"{k}: {json.dumps(v)}" for k, v in meta.items())
    yield "metadata-yaml", b"\x00" + yaml_meta.encode()
    yield "metadata-yaml-v1", b"\x00" + json.dumps(v1).encode()
    yield "metadata-json", b"\x01" + json.dumps(meta).encode()
    cfg = (
        "model:\n  encoder:\n    name: resnet18\n  decoder:\n    type: fpn\n"
        "  head: db\ntrainer:\n  max_epochs: 10\n  lr: ${optim.lr}\noptim:\n  lr: 0.001\n"
        "name: ${model.encoder.name}-${model.head}\nanchors: &a [1, 2]\nmore: *a\n"
    )
    yield "config-yaml", b"\x02" + cfg.encode()
    yield (
        "config-json",
        b"\x03" + json.dumps({"model": {"arch": "unet", "lr": "${x}"}, "x": 1}).encode(),
    )
    overrides = "- model.encoder.name=resnet50\n- +extra.flag=true\n- ~trainer.lr\n- model=dbnet\n"
    yield "hydra", b"\x04" + cfg.encode() + b"\0" + overrides.encode()
    for name in (
        "epoch=10-step=1100.ckpt",
        "epoch=3-val_hmean=0.8512-v1.ckpt",
        "last-v2.ckpt",
        "best.pth",
    ):
        yield f"filename-{name}", b"\x05" + name.encode()


def _dcp_files(torch: Any) -> tuple[bytes, bytes] | None:
    """``.metadata`` and ``__0_0.distcp`` of a small torch.distributed.checkpoint."""
    import tempfile  # noqa: PLC0415

    try:
        import torch.distributed.checkpoint as dcp  # noqa: PLC0415
    except ImportError:
        return None
    state = {
        "model": {"w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2])},
        "epoch": 3,
    }
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process"
        dcp.save(state, checkpoint_id=d)
        root = pathlib.Path(d)
        return (root / ".metadata").read_bytes(), (root / "__0_0.distcp").read_bytes()


def dir_seeds() -> Iterator[tuple[str, bytes]]:
    """Prefixed with the harness's selector byte (fuzz_dirs.py)."""
    shards = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    index = {"metadata": {"total_size": 24}, "weight_map": {"w": shards[0], "b": shards[1]}}
    yield "sharded", b"\x00" + json.dumps(index).encode()
    yield (
        "sharded-missing",
        b"\x00" + json.dumps({"weight_map": {"w": "nope.safetensors"}}).encode(),
    )
    yield "sharded-escape", b"\x00" + json.dumps({"weight_map": {"w": "../x.safetensors"}}).encode()
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        return
    files = _dcp_files(torch)
    if files is not None:
        metadata, data = files
        yield "dcp", b"\x01" + struct.pack("<I", len(metadata)) + metadata + data


SEEDS = {
    "pickle": pickles,
    "zipdir": archives,
    "open": whole_files,
    "safetensors": safetensors_seeds,
    "catalog": catalog_seeds,
    "cli": whole_files,
    "dirs": dir_seeds,
    "torch": whole_files,
}


def write(out: pathlib.Path, harnesses: tuple[str, ...] = HARNESSES) -> dict[str, int]:
    """Write the seeds; return how many each harness got (names are content-addressed
    after the first, so reruns do not duplicate and never overwrite a corpus)."""
    counts = {}
    for harness in harnesses:
        d = out / harness
        d.mkdir(parents=True, exist_ok=True)
        seen = set()
        for name, data in SEEDS[harness]():
            digest = hashlib.sha1(data).hexdigest()[:12]
            if digest in seen:
                continue
            seen.add(digest)
            (d / f"{name}-{digest}").write_bytes(data)
        counts[harness] = len(seen)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=pathlib.Path, default=state_dir() / "seeds")
    args = ap.parse_args()
    for harness, n in write(args.out).items():
        print(f"{harness}: {n} seeds in {args.out / harness}")


if __name__ == "__main__":
    main()
