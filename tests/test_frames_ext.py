"""FRAME and EXT opcodes: read exactly as CPython's unpickler reads them, or refused.

What CPython 3.11 does (``Modules/_pickle.c``; the ``evidence`` tests below check it
against the real interpreter): ``load_frame`` reads the frame's bytes into the
unpickler's buffer (``_Unpickler_Read(frame_len)``) and rewinds. Reading a file object
- ``torch.load`` hands it ``io.BytesIO(zip_file.get_record("data.pkl"))`` - an opcode
that needs more bytes than the buffer has left (``_Unpickler_ReadImpl``: lengths, ints,
strings; ``_Unpickler_Readline``: the text opcodes) drops the rest of the buffer and
reads after the frame, and a FRAME inside a frame that does not fit in it loads the
bytes after the outer frame. From bytes (``pickle.loads``) or a peekable file
(``open(path, "rb")``, a BufferedReader) a small frame is only peeked and the same
stream reads in order. The bytes opcodes (BINBYTES, SHORT_BINBYTES, BINBYTES8,
BYTEARRAY8) read with ``_Unpickler_ReadInto``, which takes the rest of the buffer
first: in order from any input. ``pickle.py``'s ``_Unframer`` refuses every opcode
that crosses the end of its frame and every FRAME inside an unfinished frame.

ckptpeek refuses the same streams as ``pickle.py`` (``bad-frame``), so every stream it
accepts reads in order in every CPython reader. The generators build each class of
straddle from scratch (a global hidden from an in-order reader, a global renamed, a
nested frame) and sweep a frame end over every byte of a real pickle; a hypothesis
test re-frames stdlib pickles and checks both engines against a model of the rule.

EXT1/EXT2/EXT4 name a global through copyreg's process-wide extension registry: no
file can say which, so ckptpeek lists ``copyreg.extension.<code>`` as an unknown
global, refuses it in strict mode (``forbidden-extension``) and never consults the
registry.
"""

from __future__ import annotations

import collections
import copyreg
import io
import pickle
import pickletools
import struct
import types
from dataclasses import dataclass
from typing import Any

import pytest
from _builders import Pickle, small_checkpoint, torch_zip
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ckptpeek
from ckptpeek import FormatError, UnsafePickleError
from ckptpeek.unpickle import engine as _backend
from ckptpeek.unpickle.standins import Placeholder, PlaceholderType

MEMBER = "archive/data.pkl"


def run(engine: str, data: bytes, **kw: Any) -> Any:
    return _backend.engine(engine).run_pickle(data, **kw)


def vm_error(engine: str, data: bytes, cls: type, code: str, offset: int, **kw: Any) -> Any:
    with pytest.raises(ckptpeek.CheckpointError) as info:
        run(engine, data, **kw)
    err = info.value
    assert type(err) is cls and err.code == code, f"{type(err).__name__} {err.code}: {err}"
    assert err.offset == offset, f"offset {err.offset}, expected {offset}: {err}"
    return err


# ------------------------------------------------------------------------------ CPython


class Stub:
    """What the recording unpickler gives CPython for every global and persistent id:
    callable, constructible and fillable, so CPython reads on as far as it would."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Stub:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> Stub:
        return Stub()

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass

    def add(self, item: Any) -> None:
        pass

    def __repr__(self) -> str:
        return "Stub()"


assert pickle.Unpickler.__module__ == "_pickle", "the C unpickler is the one torch uses"


class Recorder(pickle.Unpickler):
    """CPython's C unpickler, but ``find_class`` only records what it is asked for."""

    def __init__(self, file: Any, **kw: Any) -> None:
        kw.setdefault("encoding", "utf-8")  # what torch.load passes
        super().__init__(file, **kw)
        self.asked: list[tuple[str, str]] = []

    def find_class(self, module: str, name: str) -> Any:
        self.asked.append((module, name))
        return Stub

    def persistent_load(self, pid: Any) -> Any:
        return Stub()


#: how torch gives CPython a pickle: a zip member as io.BytesIO (torch.load of any
#: torch.save zip), a legacy file as the file the caller opened (open(path, "rb"): a
#: BufferedReader, which has peek(); BufferedReader(BytesIO) behaves the same)
READERS: dict[str, Any] = {
    "bytesio": io.BytesIO,
    "file": lambda data: io.BufferedReader(io.BytesIO(data)),
}


@dataclass
class Read:
    asked: list[tuple[str, str]]  # find_class calls, in order
    error: str | None  # the exception CPython stopped with
    tell: int  # where the reader was left


def cpython(data: bytes, reader: str) -> Read:
    f = READERS[reader](data)
    u = Recorder(f)
    try:
        u.load()
        error = None
    except Exception as exc:  # noqa: BLE001 - CPython may stop with anything
        error = type(exc).__name__
    return Read(u.asked, error, f.tell())


def in_order_refuses(data: bytes) -> bool:
    """pickle.py's unpickler (with its _Unframer) refuses the stream's framing."""
    u = pickle._Unpickler(io.BytesIO(data))  # type: ignore[attr-defined]
    u.find_class = lambda module, name: Stub  # type: ignore[method-assign]
    u.persistent_load = lambda pid: Stub()  # type: ignore[method-assign]
    try:
        u.load()
    except pickle.UnpicklingError as exc:
        return "frame" in str(exc)
    except Exception:  # noqa: BLE001
        return False
    return False


# ------------------------------------------------------------------------------ generators


def frame(body: bytes) -> bytes:
    return b"\x95" + struct.pack("<Q", len(body)) + body


PROTO = b"\x80\x04"
AT = len(PROTO) + 9  # offset of the first opcode in the first frame
#: os.system("id") - pushes one item; only ever recorded, never resolved
PAYLOAD = bytes(Pickle().glob("os", "system").mark().str("id").tuple().reduce())
SYSTEM = ("os", "system")


def swallow(n: int) -> bytes:
    """A SHORT_BINBYTES header: the next ``n`` bytes are data to an in-order reader."""
    return b"C" + bytes([n])


@dataclass
class Straddle:
    """A stream CPython reads differently depending on the file object it is given."""

    data: bytes
    offset: int  # where ckptpeek refuses it (bad-frame)
    bytesio: list[tuple[str, str]]  # what CPython imports from io.BytesIO (torch.load)
    in_order: list[tuple[str, str]]  # ... reading in order (bytes, open(path, "rb"))


def hidden_by_length(op: bytes, width: int, k: int = 5) -> Straddle:
    """``op``'s length field is in the frame with 2 of its ``k`` data bytes. From a
    BytesIO CPython drops those 2 and takes ``k`` bytes after the frame; the 2 bytes
    after that start a SHORT_BINBYTES that, read in order, hides PAYLOAD."""
    body = op + k.to_bytes(width, "little") + b"zz"
    after = b"a" * (k - 2) + swallow(len(PAYLOAD)) + PAYLOAD + b"\x86."
    return Straddle(PROTO + frame(body) + after, AT, [SYSTEM], [])


def hidden_by_fixed(op: bytes, width: int) -> Straddle:
    """A fixed-width argument (BININT, BINFLOAT) split by the frame's end, 2 bytes in."""
    body = op + b"zz"
    after = b"a" * (width - 2) + swallow(len(PAYLOAD)) + PAYLOAD + b"\x86."
    return Straddle(PROTO + frame(body) + after, AT, [SYSTEM], [])


def renamed_global(head: bytes) -> Straddle:
    """GLOBAL's name line split by the frame's end: from a BytesIO CPython drops
    ``head`` and imports os.system; in order the name is ``head + "system"``."""
    data = PROTO + frame(b"cos\n" + head) + b"system\n)R."
    return Straddle(data, AT, [SYSTEM], [("os", head.decode() + "system")])


def hidden_by_nested_frame() -> Straddle:
    """A FRAME inside a frame, longer than what is left of it: from a BytesIO CPython
    loads the bytes after the outer frame and runs PAYLOAD; in order it is data."""
    inner = b"\x95" + struct.pack("<Q", len(PAYLOAD) + 2)
    data = PROTO + frame(b"N" + inner + swallow(len(PAYLOAD))) + PAYLOAD + b"\x86."
    return Straddle(data, AT + 1, [SYSTEM], [])


SIZED = {  # opcodes whose length-prefixed data CPython reads with _Unpickler_Read
    "BINUNICODE": (b"X", 4),
    "SHORT_BINUNICODE": (b"\x8c", 1),
    "BINUNICODE8": (b"\x8d", 8),
    "BINSTRING": (b"T", 4),
    "SHORT_BINSTRING": (b"U", 1),
    "LONG1": (b"\x8a", 1),
    "LONG4": (b"\x8b", 4),
}
FIXED = {"BININT": (b"J", 4), "BINFLOAT": (b"G", 8)}
BYTES_OPS = {  # read with _Unpickler_ReadInto: in order from every CPython reader
    "BINBYTES": (b"B", 4),
    "SHORT_BINBYTES": (b"C", 1),
    "BINBYTES8": (b"\x8e", 8),
    "BYTEARRAY8": (b"\x96", 8),
}


def hidden_stack_global() -> Straddle:
    """STACK_GLOBAL's module string split by the frame's end: from a BytesIO CPython
    reads "os" after the frame and imports os.system; in order the string is "zo"
    and the next byte a SETITEM that fails."""
    data = PROTO + frame(b"X\x02\x00\x00\x00z") + b"os\x8c\x06system\x93)R."
    return Straddle(data, AT, [SYSTEM], [])


def straddles() -> dict[str, Straddle]:
    out = {f"length-{name}": hidden_by_length(op, w) for name, (op, w) in SIZED.items()}
    out.update({f"fixed-{name}": hidden_by_fixed(op, w) for name, (op, w) in FIXED.items()})
    out.update({f"rename-{h.decode()}": renamed_global(h) for h in (b"X", b"sub.")})
    out["nested-frame"] = hidden_by_nested_frame()
    out["stack-global"] = hidden_stack_global()
    return out


STRADDLES = straddles()


def bytes_straddle(op: bytes, width: int) -> Straddle:
    """A bytes opcode with 3 of its 10 data bytes in the frame: every CPython reader
    reads it in order (pickle.py refuses it); ckptpeek refuses it too."""
    data = PROTO + frame(op + (10).to_bytes(width, "little") + b"abc") + b"defghij."
    return Straddle(data, AT, [], [])


def unframed(pkl: bytes) -> bytes:
    """``pkl`` without its FRAME opcodes (frames do not change an in-order read)."""
    out = bytearray()
    last = 0
    for op, _arg, pos in pickletools.genops(pkl):
        if op.name == "FRAME":
            out += pkl[last:pos]
            last = pos + 9
    return bytes(out + pkl[last:])


def boundaries(pkl: bytes) -> list[int]:
    """The offset of every opcode of ``pkl``, and the offset after its STOP."""
    ops = [pos for _op, _arg, pos in pickletools.genops(pkl)]
    return [*ops, ops[-1] + 1]  # type: ignore[operator]


def expected(data: bytes) -> tuple[str, int] | None:
    """The model of the rule: read ``data`` in order (pickletools.genops); the first
    FRAME inside an open frame or opcode running past its frame's end is ``bad-frame``
    at its offset, a frame past the end of the data ``truncated`` at the FRAME."""
    ops = list(pickletools.genops(data))
    ends = [pos for _op, _arg, pos in ops[1:]] + [ops[-1][2] + 1]  # type: ignore[operator]
    frame_end = -1
    for (op, arg, pos), end in zip(ops, ends, strict=True):
        assert pos is not None
        if 0 <= frame_end <= pos:
            frame_end = -1
        if op.name == "FRAME":
            if frame_end >= 0:
                return ("bad-frame", pos)
            if end + arg > len(data):
                return ("truncated", pos)
            frame_end = end + arg
        elif 0 <= frame_end < end:
            return ("bad-frame", pos)
    return None


def reframe(pkl: bytes, cuts: list[int], framed: list[bool], deltas: list[int]) -> bytes:
    """``pkl`` (unframed) cut at the opcode offsets ``cuts``; segment ``i`` is put in a
    FRAME whose length lies by ``deltas[i]`` if ``framed[i]``."""
    edges = [0, *cuts, len(pkl)]
    out = bytearray()
    for i in range(len(edges) - 1):
        seg = pkl[edges[i] : edges[i + 1]]
        if framed[i] and seg:
            out += b"\x95" + struct.pack("<Q", max(0, len(seg) + deltas[i]))
        out += seg
    return bytes(out)


def ext_pickle(op: str, code: int, *, call: bool = False) -> tuple[bytes, int]:
    """``{"a": <EXTn code>}`` (called if ``call``); returns it and the EXT's offset."""
    if op == "EXT1":
        arg = b"\x82" + bytes([code])
    elif op == "EXT2":
        arg = b"\x83" + struct.pack("<H", code)
    else:
        arg = b"\x84" + struct.pack("<i", code)
    p = Pickle().proto(2).empty_dict().str("a")
    at = p.pos
    p.raw(arg)
    if call:
        p.empty_tuple().reduce()
    return bytes(p.setitem().stop()), at


EXT_CASES = [
    ("EXT1", 1),
    ("EXT1", 255),
    ("EXT1", 0),
    ("EXT2", 256),
    ("EXT2", 65535),
    ("EXT4", 65536),
    ("EXT4", 2**31 - 1),
    ("EXT4", -1),
]


def hostile_streams() -> list[bytes]:
    """Every stream built here (the differential test runs them through CPython)."""
    out = [s.data for s in STRADDLES.values()]
    out += [bytes_straddle(op, w).data for op, w in BYTES_OPS.values()]
    out += [ext_pickle(op, code, call=call)[0] for op, code in EXT_CASES for call in (0, 1)]
    out += list(IN_ORDER.values()) + list(NESTED.values())
    return out


# ------------------------------------------------------------------------------ straddles


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("name", sorted(STRADDLES))
def test_straddles_are_refused(engine: str, name: str, strict: bool) -> None:
    case = STRADDLES[name]
    err = vm_error(engine, case.data, FormatError, "bad-frame", case.offset, strict=strict)
    assert "past the end of the FRAME at byte 2" in str(err) or "inside the FRAME" in str(err)


@pytest.mark.parametrize("name", sorted(STRADDLES))
def test_evidence_cpython_reads_straddles_by_reader(name: str) -> None:
    """Why they are refused: CPython's C unpickler imports one global from a BytesIO
    (what torch.load gives it) and another, or none, reading in order."""
    case = STRADDLES[name]
    assert cpython(case.data, "bytesio").asked == case.bytesio
    assert cpython(case.data, "file").asked == case.in_order
    assert in_order_refuses(case.data)


@pytest.mark.parametrize("name", sorted(BYTES_OPS))
def test_bytes_straddles_are_refused(engine: str, name: str) -> None:
    case = bytes_straddle(*BYTES_OPS[name])
    vm_error(engine, case.data, FormatError, "bad-frame", case.offset)
    # CPython happens to read these in order from every reader; pickle.py refuses them
    assert cpython(case.data, "bytesio") == cpython(case.data, "file")
    assert cpython(case.data, "bytesio").error is None
    assert in_order_refuses(case.data)


@pytest.mark.parametrize("name", ["length-BINUNICODE", "fixed-BININT", "rename-X", "nested-frame"])
def test_torch_load_imports_what_ckptpeek_refuses(engine: str, name: str) -> None:
    """Real torch.load of a zip whose data.pkl straddles imports os.system (recorded
    only); ckptpeek refuses the file, strict or not, naming member and offset."""
    torch = pytest.importorskip("torch")
    case = STRADDLES[name]
    file = torch_zip(case.data)
    asked: list[tuple[str, str]] = []

    class Unpickler(Recorder):
        def find_class(self, module: str, name: str) -> Any:
            asked.append((module, name))
            return Stub

    module = types.ModuleType("recording_pickle")
    module.Unpickler = Unpickler  # type: ignore[attr-defined]
    module.load = lambda f, **kw: Unpickler(f, **kw).load()  # type: ignore[attr-defined]
    torch.load(io.BytesIO(file), weights_only=False, pickle_module=module)
    assert asked == [SYSTEM]
    for strict in (False, True):
        with pytest.raises(FormatError) as info:
            ckptpeek.open(io.BytesIO(file), engine=engine, strict=strict)
        err = info.value
        assert err.code == "bad-frame" and err.member == MEMBER and err.offset == case.offset


# ------------------------------------------------------------------------------ nesting, in order

NESTED = {  # a FRAME inside an open frame (at AT + 1): refused, whether it fits or not
    "fits": PROTO + frame(b"N" + frame(b"N")) + b"\x86.",
    "zero": PROTO + frame(b"N" + frame(b"") + b"N") + b"\x86.",
    "past-outer": PROTO + frame(b"N" + b"\x95" + struct.pack("<Q", 3) + b"K\x01") + b"K\x02\x86.",
    "header-past-outer": PROTO + frame(b"N\x95\x01\x00") + bytes(6) + b"N\x86.",
}


@pytest.mark.parametrize("name", sorted(NESTED))
def test_nested_frames_are_refused(engine: str, name: str) -> None:
    err = vm_error(engine, NESTED[name], FormatError, "bad-frame", AT + 1)
    assert "FRAME inside the FRAME at byte 2" in str(err)
    assert in_order_refuses(NESTED[name])


IN_ORDER = {  # frames every reader reads in order: accepted, the same value as unframed
    "zero-frame": PROTO + frame(b"") + b"N.",
    "zero-after-frame": PROTO + frame(b"N") + frame(b"") + b".",
    "unframed-after-frame": PROTO + frame(b"N") + b"N\x86.",
    "frame-to-the-end": PROTO + frame(b"N."),
    "frame-then-frame": PROTO + frame(b"K\x01") + frame(b"K\x02\x86."),
    "frame-past-stop": PROTO + frame(b"N.cos\nsystem\n"),  # the legacy reader's concern
    "frame-before-proto": frame(PROTO + b"N."),
    "global-in-frame": PROTO + frame(b"cos\nsystem\n)R."),
}


@pytest.mark.parametrize("name", sorted(IN_ORDER))
def test_frames_read_in_order(engine: str, name: str) -> None:
    data = IN_ORDER[name]
    result = run(engine, data)
    plain = run(engine, unframed(data))
    assert repr(result.value) == repr(plain.value)
    assert result.globals == plain.globals
    assert result.end == boundaries(data)[-1]  # just past STOP
    reads = {reader: cpython(data, reader) for reader in READERS}
    assert reads["bytesio"].asked == reads["file"].asked == list(result.globals)
    assert reads["bytesio"].error is reads["file"].error is None


def test_frame_past_the_end(engine: str) -> None:
    data = PROTO + b"\x95" + struct.pack("<Q", 100) + b"N."
    vm_error(engine, data, FormatError, "truncated", len(PROTO))
    assert all(cpython(data, r).error == "UnpicklingError" for r in READERS)


def test_frame_past_the_end_in_a_frame_is_nested(engine: str) -> None:
    data = PROTO + frame(b"N\x95" + struct.pack("<Q", 100)) + b"N."
    vm_error(engine, data, FormatError, "bad-frame", AT + 1)


def _sweep_base() -> bytes:
    obj = {
        "a": [1, 2.5, -7, 2**40, "text", b"raw", (None, True)],
        "g": collections.OrderedDict(x=1),
        "u": "\u20ac" * 3,
    }
    return pickle.dumps(obj, protocol=3)


SWEEP = _sweep_base()


@pytest.mark.parametrize("select", [None, ["a"]])
def test_frame_end_at_every_byte(engine: str, select: Any) -> None:
    """One FRAME after PROTO, ending at each byte of a real pickle in turn: at an
    opcode boundary it is read like the unframed pickle; inside an opcode the opcode
    is refused at its offset (selective reads too)."""
    plain = run(engine, SWEEP, select=select)
    ops = boundaries(SWEEP)
    for end in range(len(PROTO), len(SWEEP) + 1):
        data = PROTO + b"\x95" + struct.pack("<Q", end - len(PROTO)) + SWEEP[len(PROTO) :]
        if end in ops:
            result = run(engine, data, select=select)
            assert repr(result.value) == repr(plain.value), end
            assert result.globals == plain.globals
            assert result.end == plain.end + 9
        else:
            op = max(p for p in ops if p < end)
            vm_error(engine, data, FormatError, "bad-frame", op + 9, select=select)
    # the sweep covered straddles of every argument kind the pickle has
    names = {op.name for op, _arg, _pos in pickletools.genops(SWEEP) if op.arg is not None}
    assert {"BININT1", "BINFLOAT", "LONG1", "BINUNICODE", "GLOBAL", "SHORT_BINBYTES"} <= names


def _bases() -> list[bytes]:
    objs: list[Any] = [
        {"epoch": 3, "lr": [0.1, 0.01], "name": "run", "blob": b"x" * 40},
        [list(range(30)), {"k": (1, 2, 3)}, "s" * 300],
        collections.OrderedDict(a=1, b=[2, 3]),
        (1.5, -2, None, True, frozenset({1, 2}), {3}),
    ]
    out = [unframed(pickle.dumps(o, protocol=p)) for o in objs for p in (2, 3, 4, 5)]
    return out


BASES = _bases()


@st.composite
def _reframed(draw: st.DrawFn) -> tuple[int, bytes]:
    index = draw(st.integers(0, len(BASES) - 1))
    pkl = BASES[index]
    ops = boundaries(pkl)[1:-1]
    cuts = sorted(set(draw(st.lists(st.sampled_from(ops), max_size=6))))
    n = len(cuts) + 1
    framed = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    lie = st.one_of(st.just(0), st.just(0), st.integers(-4, 4), st.integers(-100, 100))
    deltas = draw(st.lists(lie, min_size=n, max_size=n))
    return index, reframe(pkl, cuts, framed, deltas)


@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(_reframed())
def test_reframed_pickles_follow_the_rule(case: tuple[int, bytes]) -> None:
    index, data = case
    want = expected(data)
    plain = repr(run("python", BASES[index]).value)
    for eng in _backend._ENGINES:
        if want is None:
            result = run(eng, data)
            assert repr(result.value) == plain
        else:
            vm_error(eng, data, FormatError, want[0], want[1])
    if want is None:  # accepted: CPython reads it the same from every reader
        reads = [cpython(data, reader) for reader in READERS]
        assert reads[0].asked == reads[1].asked and reads[0].error == reads[1].error


# ------------------------------------------------------------------------------ EXT


@pytest.mark.parametrize(("op", "code"), EXT_CASES)
def test_ext_strict_is_refused(engine: str, op: str, code: int) -> None:
    for call in (False, True):
        data, at = ext_pickle(op, code, call=call)
        err = vm_error(engine, data, UnsafePickleError, "forbidden-extension", at, strict=True)
        assert f"extension code {code} " in str(err)


@pytest.mark.parametrize(("op", "code"), EXT_CASES)
def test_ext_is_an_unknown_global(engine: str, op: str, code: int) -> None:
    data, _ = ext_pickle(op, code)
    result = run(engine, data)
    value = result.value["a"]
    assert type(value) is PlaceholderType
    assert (value.module, value.name) == ("copyreg.extension", str(code))
    assert result.globals == {("copyreg.extension", str(code)): False}
    called = run(engine, ext_pickle(op, code, call=True)[0]).value["a"]
    assert type(called) is Placeholder
    assert (called.module, called.name) == ("copyreg.extension", str(code))


def test_ext_never_consults_the_registry(engine: str) -> None:
    """A code registered in this process (copyreg.add_extension) is what CPython
    would import; ckptpeek's answer does not change, and extra_globals cannot name
    an extension code either."""
    data, at = ext_pickle("EXT2", 0x7AB)
    before = run(engine, data)
    assert cpython(data, "bytesio").error == "ValueError"  # unregistered extension code
    copyreg.add_extension("os", "system", 0x7AB)
    try:
        after = run(engine, data)
        assert cpython(data, "bytesio").asked == [SYSTEM]
    finally:
        copyreg.remove_extension("os", "system", 0x7AB)
    assert repr(after.value) == repr(before.value) and after.globals == before.globals
    extra = {("copyreg.extension", str(0x7AB)): 7}
    assert type(run(engine, data, extra_globals=extra).value["a"]) is PlaceholderType
    vm_error(
        engine, data, UnsafePickleError, "forbidden-extension", at, strict=True, extra_globals=extra
    )


def test_ext_in_a_skipped_value_is_refused_strict(engine: str) -> None:
    p = Pickle().proto(2).empty_dict().str("keep").int(1).setitem()
    p.str("skip").mark().none()
    at = p.pos
    p.raw(b"\x82\x05").tuple().setitem().stop()
    vm_error(engine, bytes(p), UnsafePickleError, "forbidden-extension", at, strict=True)
    result = run(engine, bytes(p), select=["keep"])
    assert result.value == {"keep": 1}
    assert result.globals == {("copyreg.extension", "5"): False}


def test_ext_in_a_file(engine: str) -> None:
    data, at = ext_pickle("EXT1", 5)
    file = torch_zip(data)
    with pytest.raises(UnsafePickleError) as info:
        ckptpeek.open(io.BytesIO(file), engine=engine, strict=True)
    err = info.value
    assert err.code == "forbidden-extension" and err.member == MEMBER and err.offset == at
    assert MEMBER in str(err)
    with ckptpeek.open(io.BytesIO(file), engine=engine) as ckpt:
        assert [(g.module, g.name, g.safe) for g in ckpt.globals()] == [
            ("copyreg.extension", "5", False)
        ]
    with ckptpeek.open(io.BytesIO(small_checkpoint()), engine=engine, strict=True) as ckpt:
        assert all(g.safe for g in ckpt.globals())
