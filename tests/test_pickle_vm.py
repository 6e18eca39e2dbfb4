"""The restricted interpreter against the stdlib's pickle, on data pickle builds itself.

For plain data the stdlib is the oracle: whatever ``pickle.dumps`` writes, in every
protocol, our engines must rebuild equal (and equally shared) objects - without ever
importing or calling anything the pickle names.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import math
import pathlib
import pickle

import numpy as np
import pytest

import ckptpeek
from ckptpeek.errors import FormatError, UnsafePickleError
from ckptpeek.unpickle import engine as _backend

PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)

VALUES = [
    None,
    True,
    False,
    0,
    1,
    -1,
    255,
    256,
    65535,
    65536,
    -(2**31),
    2**31,
    2**63,
    -(2**100),
    10**40,
    0.0,
    -0.0,
    1.5,
    1e308,
    float("inf"),
    "",
    "a",
    "é€𝄞",
    "x" * 300,
    "y" * 70_000,
    b"",
    b"\x00\xff",
    b"z" * 300,
    bytearray(b"ab"),
    (),
    (1,),
    (1, 2),
    (1, 2, 3),
    (1, 2, 3, 4),
    [],
    [1, [2, [3]]],
    {},
    {"a": 1, 2: "b", (3, 4): [5]},
    {1, 2, 3},
    frozenset({"a"}),
    collections.OrderedDict([("b", 1), ("a", 2)]),
    1 + 2j,
    slice(1, None, 2),
    datetime.datetime(2026, 11, 28, 12, 30, 1, 5),
    datetime.date(2024, 2, 29),
    datetime.timedelta(days=-1, seconds=5),
    pathlib.PurePosixPath("runs/a=1/x.ckpt"),
    collections.defaultdict(list, {"k": [1]}),
    {"nested": {"deep": [{"list": (None, 1.25, "s")}]}},
]


def _run(data: bytes, engine: str, **kw):
    return _backend.engine(engine).run_pickle(data, **kw).value


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b) or (a != a and b != b)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_roundtrip_equals_stdlib(value, proto: int, engine: str) -> None:
    data = pickle.dumps(value, protocol=proto)
    got = _run(data, engine)
    assert _same(got, pickle.loads(data))


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_nan_and_shared_references(proto: int, engine: str) -> None:
    shared = [1, 2]
    value = {"a": shared, "b": shared, "nan": float("nan"), "t": (shared,)}
    got = _run(pickle.dumps(value, protocol=proto), engine)
    assert got["a"] is got["b"] is got["t"][0]
    assert math.isnan(got["nan"])


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_recursive_list(proto: int, engine: str) -> None:
    value: list = [1]
    value.append(value)
    got = _run(pickle.dumps(value, protocol=proto), engine)
    assert got[1] is got and got[0] == 1


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_namespace_and_numpy(proto: int, engine: str) -> None:
    value = {
        "ns": argparse.Namespace(lr=0.1, layers=[2, 2]),
        "f32": np.float32(1.5),
        "i64": np.int64(-7),
        "b": np.bool_(True),
        "arr": np.arange(6, dtype=">i4").reshape(2, 3),
        "farr": np.asfortranarray(np.eye(2)),
        "dt": np.dtype("<f8"),
        "obj": np.array(["a", None], dtype=object),
    }
    data = pickle.dumps(value, protocol=proto)
    got, want = _run(data, engine), pickle.loads(data)
    assert vars(got["ns"]) == {"lr": 0.1, "layers": [2, 2]}
    for key in ("f32", "i64", "b"):
        assert type(got[key]) is type(value[key]) and got[key] == value[key]
    for key in ("arr", "farr", "obj"):  # numpy itself drops '>' below protocol 5
        assert got[key].dtype == want[key].dtype and np.array_equal(got[key], want[key])
        assert got[key].flags.f_contiguous == want[key].flags.f_contiguous
    assert got["dt"] == value["dt"]


class _Unknown:
    def __init__(self, x):
        self.x = x


def _touch(path):  # what an attacker's REDUCE would call
    pathlib.Path(path).touch()


@pytest.mark.parametrize("proto", [0, 2, 4])
def test_unknown_class_becomes_placeholder(proto: int, engine: str) -> None:
    data = pickle.dumps({"obj": _Unknown([1, 2])}, protocol=proto)
    got = _run(data, engine)["obj"]
    assert isinstance(got, ckptpeek.Placeholder)
    assert (got.module, got.name) == (__name__, "_Unknown")
    assert got.state == {"x": [1, 2]}


def test_unknown_function_is_never_called(tmp_path, engine: str) -> None:
    target = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (_touch, (str(target),))

    data = pickle.dumps(Evil(), protocol=2)
    got = _run(data, engine)
    assert isinstance(got, ckptpeek.Placeholder) and got.name == "_touch"
    assert got.args == (str(target),)
    assert not target.exists()
    with pytest.raises(UnsafePickleError) as err:
        _run(data, engine, strict=True)
    assert err.value.code == "forbidden-global"
    assert err.value.offset == data.index(b"c")  # the GLOBAL opcode
    assert "test_pickle_vm._touch" in str(err.value)


def test_python2_strings(engine: str) -> None:
    # protocol 0/1 Python 2 str opcodes, as old checkpoints carry them
    assert _run(b"S'abc'\np0\n.", engine) == "abc"
    assert _run(b"U\x03abcq\x00.", engine) == "abc"
    assert _run(b"T\x03\x00\x00\x00abc.", engine) == "abc"
    assert _run(b"U\x02\xff\xfe.", engine) == b"\xff\xfe"  # not UTF-8: kept as bytes
    assert _run(b"I01\n.", engine) is True
    assert _run(b"L12345678901234567890L\n.", engine) == 12345678901234567890


def test_globals_are_reported(engine: str) -> None:
    data = pickle.dumps({"od": collections.OrderedDict(), "u": _Unknown(1)}, protocol=2)
    result = _backend.engine(engine).run_pickle(data)
    assert result.globals[("collections", "OrderedDict")] is True
    assert result.globals[(__name__, "_Unknown")] is False


def test_build_on_shared_stand_in_is_refused(engine: str) -> None:
    # GLOBAL collections OrderedDict; EMPTY_DICT; BUILD  -> the registry entry itself
    data = b"ccollections\nOrderedDict\n}(X\x01\x00\x00\x00xK\x01ub."
    with pytest.raises(FormatError) as err:
        _run(data, engine)
    assert err.value.code == "bad-build"
    # and the registry still works for the next file
    assert _run(pickle.dumps(collections.OrderedDict(a=1), protocol=2), engine) == {"a": 1}
