"""The Cython engine's fast paths build TensorRef and StorageRef without their Python
constructors: each field they set is written out by hand in the .pyx. These tests keep
that copy honest: every slot is set, and set to what the pure engine sets."""

from __future__ import annotations

import pathlib
import re

import pytest

import ckptpeek
from ckptpeek.tensor import StorageRef, TensorRef
from ckptpeek.unpickle import engine as _engine

PYX = pathlib.Path(__file__).resolve().parent.parent / "native" / "unpickle" / "_pickle_vm_c.pyx"
DATA = pathlib.Path(__file__).parent / "data"


def _function(name: str) -> str:
    text = PYX.read_text()
    start = text.index(f"cdef object {name}(")
    end = text.index("\ncdef ", start + 1)
    return text[start:end]


def _slots(cls: type) -> set[str]:
    return {s for k in cls.__mro__ for s in getattr(k, "__slots__", ()) if s != "__weakref__"}


@pytest.mark.parametrize(
    ("function", "var", "cls"),
    [("_fast_reduce", "t", TensorRef), ("_fast_storage", "ref", StorageRef)],
)
def test_fast_path_sets_every_slot(function: str, var: str, cls: type) -> None:
    assigned = set(re.findall(rf"^\s+{var}\.(\w+) = ", _function(function), re.M))
    assert assigned == _slots(cls), f"{function} and {cls.__name__}.__slots__ differ"


def _fields(obj: object, cls: type) -> dict[str, object]:
    out = {}
    for name in sorted(_slots(cls)):
        value = getattr(obj, name)
        out[name] = _fields(value, StorageRef) if isinstance(value, StorageRef) else value
    return out


@pytest.mark.skipif("native" not in _engine._ENGINES, reason="native engine not built")
@pytest.mark.parametrize("name", ["lightning_tiny.ckpt", "state_dict.pt"])
def test_fast_path_objects_equal_the_pure_ones(name: str) -> None:
    got = {}
    for engine in ("python", "native"):
        with ckptpeek.open(DATA / name, engine=engine) as ckpt:
            tensors = list(ckpt.tensors())
            assert tensors
            got[engine] = [(path, type(t), _fields(t, TensorRef)) for path, t in tensors]
    # readers differ per run (each holds its own file handle): compare what they read
    for rows in got.values():
        for _path, _cls, fields in rows:
            storage = fields["storage"]
            if isinstance(storage, dict):
                storage["reader"] = type(storage["reader"])
    assert got["native"] == got["python"]
