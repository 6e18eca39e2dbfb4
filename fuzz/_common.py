"""What every harness shares: resource bounds, instrumentation, and the finding rule.

A harness is ``fuzz/fuzz_<name>.py``: it calls :func:`instrument` before importing what it
fuzzes, defines ``one_input(data: bytes) -> None`` and ends with ``main(one_input)``.
``one_input`` returns quietly for every outcome the library promises (a value, or a
``ckptpeek.CheckpointError``) and raises for anything else - an escaped exception, two
engines that disagree, a result that breaks an invariant - which libFuzzer records as a
crash (``-artifact_prefix``). A hang is ``-timeout``, a blow-up the address-space limit
set here (a ``MemoryError`` escapes and is a finding too).

Run one harness by hand: ``python fuzz/fuzz_pickle.py CORPUS_DIR -max_total_time=60``;
replay inputs: ``python fuzz/fuzz_pickle.py FILE...`` (libFuzzer runs each once).
"""

from __future__ import annotations

import os
import pathlib
import pkgutil
import resource
import shutil
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import atheris

REPO = pathlib.Path(__file__).resolve().parent.parent
#: address space per fuzzing process, MiB (``CKPTPEEK_FUZZ_AS_MB``; 0 = unlimited)
DEFAULT_AS_MB = 2048
#: modules that import heavy optional dependencies at import time or need torch
_SKIP_MODULES = ("ckptpeek.torch_bridge",)
#: what the library imports lazily (numpy(), summary(), the catalog), imported up front
_LAZY_DEPENDENCIES = ("numpy", "ml_dtypes", "pydantic", "yaml", "argparse", "json")


class Finding(AssertionError):
    """An outcome the library promises never to give (engines disagree, an invariant)."""


def _sanitized() -> bool:
    """Whether this process runs under ASan (which reserves terabytes of address space,
    so RLIMIT_AS cannot apply; libFuzzer's ``-rss_limit_mb`` bounds memory instead)."""
    return "asan" in os.environ.get("LD_PRELOAD", "") or "ASAN_OPTIONS" in os.environ


def limit_resources() -> None:
    """Cap this process's address space so a blow-up is a ``MemoryError``, not a stuck box."""
    mb = int(os.environ.get("CKPTPEEK_FUZZ_AS_MB", DEFAULT_AS_MB))
    if mb > 0 and not _sanitized():
        limit = mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def instrument() -> None:
    """Import ``ckptpeek`` and all its modules with atheris' coverage instrumentation.

    Every submodule is imported here, under the hook, because the library imports some
    only when first needed (``summary.model``, the format readers, the catalog); a module
    first imported later would run uninstrumented and give the fuzzer no feedback.
    """
    sys.path.insert(0, str(REPO / "tests"))  # _builders and the parity helpers
    with atheris.instrument_imports(include=["ckptpeek"]):
        import ckptpeek  # noqa: PLC0415

        for mod in pkgutil.walk_packages(ckptpeek.__path__, "ckptpeek."):
            if mod.name in _SKIP_MODULES or mod.name.endswith("__main__"):
                continue
            try:
                __import__(mod.name)
            except ImportError as exc:  # a module the harness does not use may be broken
                print(f"fuzz: cannot instrument {mod.name}: {exc}", file=sys.stderr)
    for name in _LAZY_DEPENDENCIES:  # imported on first use: not inside the first input's
        try:  # time budget (ml_dtypes takes seconds to import under ASan)
            __import__(name)
        except ImportError:
            pass


def scratch_dir(harness: str) -> pathlib.Path:
    """A fresh directory for the files a harness writes (on ``/dev/shm`` when there is
    one). libFuzzer ends the process with ``_exit``, so no cleanup runs: the directories
    of processes that are gone are removed here instead."""
    shm = pathlib.Path("/dev/shm")
    base = shm if shm.is_dir() else pathlib.Path(tempfile.gettempdir())
    for old in base.glob(f"ckptpeek-fuzz-{harness}-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not pathlib.Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    d = base / f"ckptpeek-fuzz-{harness}-{os.getpid()}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    return d


def native_engine_required() -> None:
    """Refuse to run a parity harness without the native engine: it would check nothing."""
    from ckptpeek.unpickle import engine  # noqa: PLC0415

    if "native" not in engine._ENGINES:
        sys.exit(f"the native pickle engine is not built: {engine.NATIVE_ERROR}")


def escaped(exc: BaseException) -> bool:
    """Whether ``exc`` is outside the promise (only CheckpointError leaves ckptpeek)."""
    import ckptpeek  # noqa: PLC0415

    return not isinstance(exc, ckptpeek.CheckpointError)


def error_outcome(exc: BaseException) -> tuple[Any, ...]:
    """The comparable form of a CheckpointError (class, code, offset, member, message)."""
    return (
        "err",
        type(exc).__name__,
        getattr(exc, "code", None),
        getattr(exc, "offset", None),
        getattr(exc, "member", None),
        str(exc),
    )


def capture(
    fn: Callable[[], Any], allow: tuple[type[BaseException], ...] = ()
) -> tuple[tuple[Any, ...], BaseException | None]:
    """Run ``fn``: ``(("ok", value), None)``, ``(error outcome, None)`` for a
    CheckpointError (or an ``allow``-ed exception: OSError where a path is involved), or
    ``(("escaped", ...), exc)`` for anything else (a finding; the exception is kept so
    the harness can re-raise it with its traceback)."""
    try:
        return ("ok", fn()), None
    except Exception as exc:  # noqa: BLE001 - an escape is what we look for
        if escaped(exc) and not isinstance(exc, allow):
            return ("escaped", type(exc).__name__, str(exc)), exc
        return error_outcome(exc), None


def _short(obj: Any, limit: int = 300) -> str:
    try:
        text = repr(obj)
    except ValueError:  # an int of more than 4300 digits has no repr
        text = f"<{type(obj).__name__} without a repr>"
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def first_difference(a: Any, b: Any, path: str = "") -> str:
    """Where two outcomes first differ (nested tuples and lists), for the finding's text."""
    if type(a) is not type(b) or not isinstance(a, (tuple, list)) or len(a) != len(b):
        return f"at {path or '<top>'}: {_short(a)} / {_short(b)}"
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x != y:
            return first_difference(x, y, f"{path}[{i}]")
    return "no difference"


def same(what: str, a: Any, b: Any) -> None:
    """Raise a :class:`Finding` when two engines' (or parsers') outcomes differ."""
    if a != b:
        raise Finding(f"{what} differ {first_difference(a, b)}")


def reraise(outcomes: list[tuple[tuple[Any, ...], BaseException | None]]) -> None:
    """Re-raise the first escaped exception (its traceback shows where it came from)."""
    for _out, exc in outcomes:
        if exc is not None:
            raise exc


def main(one_input: Callable[[bytes], None]) -> None:
    limit_resources()
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
