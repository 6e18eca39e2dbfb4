"""ckptpeek's promise, checked against CPython's own unpickler: the globals it reports
(``run_pickle(...).globals``, ``Checkpoint.globals()``, and so strict mode) are a
superset of what CPython's C unpickler - the one ``torch.load`` uses - would import
from the same bytes.

The oracle is ``_pickle.Unpickler`` with a ``find_class`` that only records
``(module, name)`` and returns a stub (``test_frames_ext.Recorder``), reading each
input the ways torch hands it a pickle: an ``io.BytesIO`` (a zip's ``data.pkl``) and a
peekable buffered file (a legacy file opened by path). For every input, both engines
must agree (``test_parity.assert_same``: value, globals, or the same error); where they
read it, every name CPython asked for, from either reader, is among the globals they
report (normalised as ckptpeek normalises Python 2 names) - and with ``strict=True``,
among the safe ones. Where ckptpeek refuses the input, the promise is moot: nothing is
returned. Inputs: the hostile pickles of ``test_hostile.py``, the frame and EXT
generators of ``test_frames_ext.py``, stdlib pickles of every protocol, the committed
fixtures, and fuzzed mutations of all of these (byte flips, FRAMEs inserted anywhere
with true, short, long, zero and huge lengths, opcode splices, deletions, copies).
CPython runs under an address-space cap, so that a fuzzed length or memo index makes
it raise MemoryError instead of allocating gigabytes.
"""

from __future__ import annotations

import contextlib
import copyreg
import pathlib
import resource
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import test_frames_ext as FX
import test_hostile as H
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ckptpeek
from ckptpeek.unpickle import engine as _backend
from ckptpeek.unpickle.registry import normalise

try:
    import test_parity as PARITY  # both engines' outcomes, compared (needs the native one)
except pytest.skip.Exception:  # pragma: no cover - the native engine is not built
    PARITY = None  # type: ignore[assignment]

HYPOTHESIS: dict[str, Any] = dict(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _no_storages() -> Callable[[Any], Any]:
    return lambda pid: "persistent"


# ------------------------------------------------------------------------------ the check


@contextlib.contextmanager
def _address_space_cap(extra: int = 256 << 20) -> Iterator[None]:
    """Fail allocations of more than ``extra`` bytes over what the process maps now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    try:
        with open("/proc/self/statm") as f:
            mapped = int(f.read().split()[0]) * resource.getpagesize()
    except OSError:  # not Linux: no cap (no fuzzed input here needs more than seconds)
        yield
        return
    cap = mapped + extra
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def ckptpeek_outcome(data: bytes, factory: Callable[[], Any], **kw: Any) -> tuple[Any, ...]:
    """Both engines' outcome (they must agree): ("ok", value, sorted globals, ...) or
    ("err", class, code, offset, message)."""
    if PARITY is not None:
        return PARITY.assert_same(data, persistent_factory=factory, **kw)
    try:  # pragma: no cover - the pure engine alone
        r = _backend.engine("python").run_pickle(data, persistent_load=factory(), **kw)
    except ckptpeek.CheckpointError as e:
        return ("err", type(e).__name__, e.code, e.offset, str(e))
    return ("ok", None, sorted(r.globals.items()), r.complete, r.end)


def asked_by_cpython(data: bytes) -> dict[str, set[tuple[str, str]]]:
    with _address_space_cap():
        reads = {reader: FX.cpython(data, reader) for reader in FX.READERS}
    return {reader: {normalise(m, n) for m, n in read.asked} for reader, read in reads.items()}


def assert_superset(data: bytes, asked: dict[str, set[Any]], reported: set[Any]) -> None:
    for reader, names in asked.items():
        missing = names - reported
        assert not missing, (
            f"CPython ({reader}) imports {sorted(missing)} that ckptpeek does not report "
            f"({sorted(reported)}) from {data[:300]!r}"
        )


def check(data: bytes, factory: Callable[[], Any] = _no_storages) -> str:
    """The property for one input; returns "ok" or "refused" (for the tallies)."""
    out = ckptpeek_outcome(data, factory)
    assert out[0] in ("ok", "err"), out
    if out[0] == "err":
        return "refused"
    asked = asked_by_cpython(data)
    assert_superset(data, asked, {name for name, _safe in out[2]})
    strict = ckptpeek_outcome(data, factory, strict=True)
    if strict[0] == "ok":
        assert_superset(data, asked, {name for name, safe in strict[2] if safe})
    else:  # strict stops at the first unknown global (or EXT)
        assert strict[1] == "UnsafePickleError", strict
    return "ok"


def check_all(cases: list[bytes], factory: Callable[[], Any] = _no_storages) -> dict[str, int]:
    tally: dict[str, int] = {}
    for data in cases:
        kind = check(data, factory)
        tally[kind] = tally.get(kind, 0) + 1
    return tally


@pytest.fixture(autouse=True, scope="module")
def _empty_extension_registry() -> None:
    """EXT codes name what copyreg.add_extension registered in the unpickling process;
    with an empty registry (a fresh interpreter's, torch's) CPython imports nothing."""
    assert copyreg._extension_registry == {}  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------ the inputs


def hostile_pickles() -> list[bytes]:
    target = pathlib.Path("/nonexistent/ckptpeek-differential")
    out = [H.PKL]
    for module, name, kind in H.ATTACKS:
        for how in ("GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "NEWOBJ"):
            out.append(H._attack_pickle(module, name, kind, target, how)[0])
    out += [H._build_attack(*H.BUILDS[case]) for case in sorted(H.BUILDS)]
    out += [b"\x80\x05" + v for v in H.LENGTHS.values()]
    out += [b"\x80\x05" + v + b"." for v in H.UNDERFLOW.values()]
    out += [b"\x80\x05(NN" + v + b"." for v in H.NEED_MARK.values()]
    out += [H._deep_list(2000), H._dict_state(("__class__", ("os", "system"))).stop().buf]
    return [bytes(d) for d in out]


def stdlib_pickles() -> list[bytes]:
    if PARITY is not None:
        return list(PARITY.STDLIB_PICKLES)
    return list(FX.BASES)  # pragma: no cover


def test_hostile_pickles() -> None:
    cases = hostile_pickles()
    tally = check_all(cases)
    assert len(cases) > 80 and tally.get("ok", 0) > 40, tally  # most are read, not refused


def test_frame_and_ext_generators() -> None:
    cases = FX.hostile_streams()
    tally = check_all(cases)
    # every straddle and nested frame is refused; in-order frames and EXT are read
    assert tally["refused"] >= len(FX.STRADDLES) + len(FX.BYTES_OPS) + len(FX.NESTED), tally
    assert tally["ok"] >= len(FX.IN_ORDER), tally


def test_stdlib_pickles() -> None:
    tally = check_all(stdlib_pickles())
    # a handful are refused for reasons of their own (REDUCE of a placeholder's result)
    assert tally.get("refused", 0) <= tally["ok"] // 50, tally


@pytest.mark.skipif(PARITY is None, reason="the fixtures' storages need test_parity")
def test_fixture_pickles() -> None:
    for fx in PARITY.FIXTURES:
        assert check(fx.pickle, fx.persistent_load) == "ok"


def test_the_check_has_teeth() -> None:
    """Reading straddles in order - what the engines did before frames were checked -
    misses what CPython imports from a BytesIO: the check fails on it."""
    for case in FX.STRADDLES.values():
        asked = asked_by_cpython(case.data)
        with pytest.raises(AssertionError, match="does not report"):
            assert_superset(case.data, asked, set(case.in_order))


# ------------------------------------------------------------------------------ fuzzing

_FIXTURE_PICKLES = [fx.pickle for fx in PARITY.FIXTURES] if PARITY is not None else []
BASES = [
    *stdlib_pickles()[::3],
    *FX.BASES,
    *(s.data for s in FX.STRADDLES.values()),
    *FX.IN_ORDER.values(),
    *hostile_pickles()[:60],
]
_FIXED_LENGTHS = (0, 1, 2, 8, 1 << 16, 1 << 40, (1 << 64) - 1)


@st.composite
def _frame_header(draw: st.DrawFn, room: int) -> bytes:
    length = draw(
        st.one_of(
            st.integers(0, max(0, room)),  # ends inside the data (often mid-opcode)
            st.integers(max(0, room - 4), room + 4),
            st.sampled_from(_FIXED_LENGTHS),
        )
    )
    return b"\x95" + struct.pack("<Q", max(0, length) & ((1 << 64) - 1))


def _opcode() -> st.SearchStrategy[bytes]:
    if PARITY is not None:
        return PARITY._opcode_bytes()  # type: ignore[no-any-return]
    return st.binary(min_size=1, max_size=12)  # pragma: no cover


@st.composite
def _mutated(draw: st.DrawFn, bases: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["frame", "frame", "splice", "flip", "delete", "dup", "cut"]))
        pos = draw(st.integers(0, len(data)))
        if kind == "frame":
            data[pos:pos] = draw(_frame_header(len(data) - pos))
        elif kind == "splice":
            data[pos:pos] = draw(st.lists(_opcode(), min_size=1, max_size=3).map(b"".join))
        elif kind == "flip" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif kind == "dup":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 64))]
        elif kind == "cut":
            del data[pos:]
    return bytes(data)


@settings(max_examples=1500, **HYPOTHESIS)
@given(_mutated(BASES))
def test_fuzzed_pickles(data: bytes) -> None:
    check(data)


@pytest.mark.skipif(PARITY is None, reason="the fixtures' storages need test_parity")
@settings(max_examples=300, **HYPOTHESIS)
@given(st.integers(0, max(0, len(_FIXTURE_PICKLES) - 1)), st.data())
def test_fuzzed_fixture_pickles(index: int, draw: st.DataObject) -> None:
    data = draw.draw(_mutated([_FIXTURE_PICKLES[index]]))
    check(data, PARITY.FIXTURES[index].persistent_load)
