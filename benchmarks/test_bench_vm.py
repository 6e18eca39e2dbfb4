"""The pickle VM alone: ``run_pickle`` over one corpus file's ``data.pkl`` bytes.

One pytest-benchmark group per corpus file (``vm <file>``), five methods each:

- ``native-full`` / ``python-full``: ``engine(...).run_pickle(data, persistent_load=r)``;
- ``native-select`` / ``python-select``: the same with
  ``select=("epoch", "global_step", "callbacks")``. A state dict has none of these keys,
  so there the whole pickle is skipped: that is the skip speed;
- ``stdlib-c-stubs``: CPython's C ``pickle.Unpickler`` over the same bytes with
  ``find_class`` returning a stub class and ``persistent_load`` returning its argument,
  the fastest safe-ish thing a Python programmer would write (it builds no tensors and
  checks nothing).

The bytes are read once per session. The storage resolver is reused (it caches one
StorageRef per key), so this times the VM, not the ZIP directory.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import pytest
from conftest import SELECT_KEYS, PickleCase, require_engine

from ckptpeek.unpickle import engine as _backend

METHODS = ("native-full", "python-full", "native-select", "python-select", "stdlib-c-stubs")


class _Stub:
    """Stands for every global: callable with anything, accepts BUILD/SETITEMS/APPENDS."""

    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


class StubUnpickler(pickle.Unpickler):  # the C implementation (_pickle.Unpickler)
    def find_class(self, module: str, name: str) -> Any:
        return _Stub

    def persistent_load(self, pid: Any) -> Any:
        return pid


def stdlib_load(data: bytes) -> Any:
    return StubUnpickler(io.BytesIO(data)).load()


def _runner(method: str, case: PickleCase) -> Any:
    if method == "stdlib-c-stubs":
        assert pickle.Unpickler.__module__ == "_pickle", "C unpickler not available"
        data = case.data
        return lambda: stdlib_load(data)
    engine_name, mode = method.split("-")
    require_engine(engine_name)
    run = _backend.engine(engine_name).run_pickle
    data, resolver = case.data, case.resolver
    if mode == "full":
        return lambda: run(data, persistent_load=resolver)
    return lambda: run(data, persistent_load=resolver, select=SELECT_KEYS)


@pytest.mark.parametrize("method", METHODS)
def test_vm(benchmark: Any, pickle_case: PickleCase, method: str) -> None:
    entry = pickle_case.entry
    fn = _runner(method, pickle_case)
    result = fn()  # untimed warm-up; fills the resolver's cache; checked below
    if method.endswith("-full"):
        assert isinstance(result.value, dict) and len(result.value) > 0
    elif method.endswith("-select"):
        assert set(result.value) == set(SELECT_KEYS) & set(entry.get("top_level_keys", ()))
    del result
    benchmark.group = f"vm {entry['name']}"
    benchmark.extra_info.update(
        corpus=entry["name"],
        kind=entry["kind"],
        method=method,
        tensors=entry["tensors"],
        data_pkl_bytes=len(pickle_case.data),
        file_bytes=entry["file_bytes"],
    )
    benchmark(fn)
