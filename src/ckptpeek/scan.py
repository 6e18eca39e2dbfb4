"""``ckptpeek scan``: a security report of a checkpoint, for a CI gate or a review.

For each file it says which globals the pickles torch would unpickle name (every
pickle of the file: the reader collects them all), classifies each one, lists what is
unusual about the archive and the pickle streams, and gives one verdict:

- ``refused``: ckptpeek cannot read the file one unambiguous way (the error says why:
  a duplicate member, a frame straddle, a lying length, ...). Never safe.
- ``dangerous``: a global that runs code, touches the system or loads more pickles
  (``os``, ``subprocess``, ``builtins.eval``, ``runpy``, ``pickle.loads``, ...).
- ``unknown``: a global outside ckptpeek's registry of known-harmless names, or an
  anomaly (an opcode torch never writes, a pickle member torch does not read, ...).
- ``safe``: every global is a known-harmless constructor and nothing is unusual.

Nothing is executed: the reader's restricted interpreter resolves names against its
registry, and the anomaly pass only decodes opcodes (``pickletools.genops``).
"""

from __future__ import annotations

import os
import pickletools

from ._text import printable
from .api import open_checkpoint
from .errors import CheckpointError
from .io.source import ByteSource
from .io.zipdir import read_directory
from .limits import DEFAULT_LIMITS, Limits
from .unpickle import engine as _engine
from .unpickle.peek import named_globals

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from typing import Any, Final

__all__ = ("ScanReport", "scan", "classify", "VERDICTS")

#: verdicts from best to worst
VERDICTS: Final = ("safe", "unknown", "dangerous", "refused")

#: modules any of whose names is dangerous to import and call
DANGEROUS_MODULES: Final = frozenset(
    {
        "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "sys", "runpy", "cProfile",
        "profile", "pdb", "bdb", "pty", "socket", "shutil", "importlib", "imp", "pickle",
        "_pickle", "cPickle", "dill", "marshal", "code", "codeop", "ctypes", "webbrowser",
        "pip", "setuptools", "distutils", "multiprocessing", "asyncio", "signal", "tempfile",
        "glob", "io", "_io", "urllib", "urllib2", "requests", "http", "httplib", "aiohttp",
        "ftplib", "smtplib", "telnetlib", "zipimport", "pkgutil", "timeit", "trace",
        "commands", "popen2", "platform", "shelve", "sqlite3", "_posixsubprocess",
    }
)  # fmt: skip
#: single names that are dangerous in otherwise ordinary modules
DANGEROUS_NAMES: Final = frozenset(
    {
        ("builtins", "eval"), ("builtins", "exec"), ("builtins", "compile"),
        ("builtins", "open"), ("builtins", "__import__"), ("builtins", "getattr"),
        ("builtins", "setattr"), ("builtins", "delattr"), ("builtins", "globals"),
        ("builtins", "locals"), ("builtins", "vars"), ("builtins", "input"),
        ("builtins", "breakpoint"), ("builtins", "execfile"), ("builtins", "apply"),
        ("__builtin__", "eval"), ("__builtin__", "exec"), ("__builtin__", "execfile"),
        ("__builtin__", "compile"), ("__builtin__", "open"), ("__builtin__", "__import__"),
        ("__builtin__", "getattr"), ("__builtin__", "setattr"), ("__builtin__", "apply"),
        ("operator", "attrgetter"), ("operator", "methodcaller"), ("functools", "reduce"),
        ("torch", "load"), ("torch.serialization", "load"), ("torch.jit", "load"),
        ("torch.hub", "load"), ("torch.hub", "load_state_dict_from_url"),
        ("numpy", "load"), ("numpy.lib.npyio", "load"), ("numpy", "fromfile"),
        ("types", "CodeType"), ("types", "FunctionType"),
    }
)  # fmt: skip
#: pickle members of a torch zip that torch unpickles (the reader reads these)
_READ_PICKLES: Final = ("data.pkl", "constants.pkl")
#: opcodes torch.save never writes (protocol 0/1 object creation, the extension registry)
_UNUSUAL_OPS: Final = {
    "INST": "INST (protocol 0 object creation)",
    "OBJ": "OBJ (protocol 1 object creation)",
    "EXT1": "EXT1 (copyreg's process-wide extension registry)",
    "EXT2": "EXT2 (copyreg's process-wide extension registry)",
    "EXT4": "EXT4 (copyreg's process-wide extension registry)",
    "NEXT_BUFFER": "NEXT_BUFFER (out-of-band buffers)",
    "READONLY_BUFFER": "READONLY_BUFFER (out-of-band buffers)",
}
_LEADING_PICKLE_BYTES: Final = 1 << 20  # of a non-pickle format, decoded as torch would
_MAX_ANOMALIES: Final = 50  # per file; the count of what was left out is reported


def classify(module: str, name: str, known_safe: bool) -> str:
    """``"safe"`` (ckptpeek's registry knows it), ``"dangerous"`` or ``"unknown"``."""
    if (module, name) in DANGEROUS_NAMES or module.split(".")[0] in DANGEROUS_MODULES:
        return "dangerous"
    return "safe" if known_safe else "unknown"


class ScanReport:
    """What ``scan`` found in one file (``to_dict()`` is the ``--json`` object)."""

    __slots__ = ("path", "format", "verdict", "globals", "anomalies", "error")

    def __init__(self, path: str) -> None:
        self.path = path
        self.format: str | None = None
        self.verdict = "safe"
        self.globals: list[tuple[str, str, str]] = []  # (module, name, class)
        self.anomalies: list[str] = []
        self.error: CheckpointError | None = None

    def _worse(self, verdict: str) -> None:
        if VERDICTS.index(verdict) > VERDICTS.index(self.verdict):
            self.verdict = verdict

    def add_global(self, module: str, name: str, known_safe: bool) -> None:
        kind = classify(module, name, known_safe)
        if (module, name, kind) not in self.globals:
            self.globals.append((module, name, kind))
        self._worse(kind)

    def add_anomaly(self, text: str) -> None:
        if len(self.anomalies) < _MAX_ANOMALIES:
            self.anomalies.append(text)
        elif len(self.anomalies) == _MAX_ANOMALIES:
            self.anomalies.append("... (more anomalies left out)")
        self._worse("unknown")

    def refuse(self, exc: CheckpointError) -> None:
        self.error = exc
        self._worse("refused")

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "verdict": self.verdict,
            "globals": [{"module": m, "name": n, "class": k} for m, n, k in self.globals],
            "anomalies": list(self.anomalies),
            "error": None
            if self.error is None
            else {
                "class": type(self.error).__name__,
                "code": self.error.code,
                "message": str(self.error),
            },
        }


def scan(
    path: str | os.PathLike[str], *, engine: str | None = None, limits: Limits = DEFAULT_LIMITS
) -> ScanReport:
    """Scan one checkpoint file or directory; raises only ``OSError`` (missing file).

    Every read is held to ``limits``, those of opening the file and those of the
    scan's own reads (the directory, each pickle member, read whole up to
    ``max_pickle_bytes``: a larger one torch does not read is an anomaly, not read)."""
    report = ScanReport(os.fspath(path))
    try:
        with open_checkpoint(path, engine=engine, limits=limits) as ckpt:
            report.format = ckpt.format
            for g in ckpt.globals():
                report.add_global(g.module, g.name, g.safe)
            if ckpt.format in ("torch-zip", "torchscript") and os.path.isfile(path):
                _scan_zip_pickles(report, os.fspath(path), engine, limits)
            elif ckpt.format == "safetensors" and os.path.isfile(path):
                _scan_leading_pickle(report, os.fspath(path))
    except CheckpointError as exc:
        report.refuse(exc)
    return report


def _scan_zip_pickles(report: ScanReport, path: str, engine: str | None, limits: Limits) -> None:
    """Opcode anomalies of every pickle member, and the globals of pickles torch does not
    unpickle (an extra ``*.pkl``): reported, so a reviewer sees them, as anomalies."""
    with ByteSource(path) as source:
        directory = read_directory(
            source,
            max_members=limits.max_zip_members,
            max_directory_bytes=limits.max_directory_bytes,
        )
        directory.verify()  # every member's local header, extent and data descriptor
        for record in directory.records:
            name = record.name
            if not name.endswith(".pkl"):
                continue
            base = name.rsplit("/", 1)[-1]
            read_by_torch = name.count("/") == 1 and base in _READ_PICKLES
            if not read_by_torch:
                report.add_anomaly(f"{name}: a pickle member torch.load does not read")
            if max(record.size, record.compressed_size) > limits.max_pickle_bytes:
                # torch's pickles were read within this limit by open_checkpoint
                report.add_anomaly(
                    f"{name}: {record.size} bytes, over the limit of "
                    f"{limits.max_pickle_bytes}: not scanned"
                )
                continue
            data = directory.read(record, max_size=limits.max_pickle_bytes)
            _opcode_anomalies(report, name, data)
            if not read_by_torch:
                _globals_of_unread(report, name, data, engine, limits)


def _scan_leading_pickle(report: ScanReport, path: str) -> None:
    """torch.load reads any file that is no ZIP as legacy pickles from byte 0 (after
    trying tarfile, which the sniffer already asked): a safetensors file whose first
    bytes also decode as a pickle naming globals would run them under torch.load."""
    with ByteSource(path) as source:  # a regular file only, opened without blocking
        head = source.read_at(0, min(_LEADING_PICKLE_BYTES, source.size), exact=False)
    for module, name in named_globals(head):
        report.add_global(module, name, known_safe=False)
        report.add_anomaly(
            f"the file's first bytes are also a pickle that names {printable(module)}."
            f"{printable(name)}: torch.load would import it"
        )


def _globals_of_unread(
    report: ScanReport, name: str, data: bytes, engine: str | None, limits: Limits
) -> None:
    try:
        result = _engine.engine(engine).run_pickle(
            data, persistent_load=lambda pid: None, limits=limits
        )
    except CheckpointError as exc:
        report.add_anomaly(f"{name}: not a pickle ckptpeek reads ({exc.code})")
        return
    for (module, gname), safe in result.globals.items():
        kind = classify(module, gname, safe)
        report.add_anomaly(f"{name}: names {printable(module)}.{printable(gname)} ({kind})")


def _opcode_anomalies(report: ScanReport, member: str, data: bytes) -> None:
    """Decode the opcodes (never run them) and note what torch.save never writes."""
    frame_end = -1
    seen_memo: set[Any] = set()
    last = None
    try:
        for op, arg, pos in pickletools.genops(data):
            if last is not None and frame_end >= 0 and last[1] < frame_end < (pos or 0):
                report.add_anomaly(
                    f"{member}: {last[0]} at byte {last[1]} straddles the frame ending at byte "
                    f"{frame_end}"
                )
            last = (op.name, pos or 0)
            if op.name == "FRAME":
                frame_end = (pos or 0) + 9 + (arg if isinstance(arg, int) else 0)
            elif op.name in _UNUSUAL_OPS:
                report.add_anomaly(f"{member}: {_UNUSUAL_OPS[op.name]} at byte {pos}")
            elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                if arg in seen_memo:
                    report.add_anomaly(f"{member}: memo slot {arg} overwritten at byte {pos}")
                seen_memo.add(arg)
            elif op.name == "STOP":
                end = (pos or 0) + 1
                if end < len(data):
                    report.add_anomaly(f"{member}: {len(data) - end} bytes after STOP")
                break
    except (ValueError, KeyError, IndexError, TypeError, OverflowError) as exc:
        report.add_anomaly(f"{member}: opcodes do not decode: {printable(str(exc))[:200]}")
