"""Bounded work in the interpreter, the object graph and the summary (issue 11, "VM").

Each attack is made by a generator of its class (no checked-in blobs) and run through
both engines (``engine`` fixture). Work is asserted by counting - parts a key guard
walks, guard calls, containers a summary walk visits, bytes a resolution builds, the
opcode offset a limit trips at - never with a clock.
"""

from __future__ import annotations

import collections
import io
import itertools
import math
import pathlib
import pickle
import pickletools
import random
import re
import struct
import tracemalloc
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from _builders import Pickle, torch_zip

import ckptpeek
from ckptpeek import CheckpointError, FormatError, LimitError, Limits
from ckptpeek.summary import facts
from ckptpeek.unpickle import context as ctx_module
from ckptpeek.unpickle import engine as _backend
from ckptpeek.unpickle import keys as keys_module
from ckptpeek.unpickle.standins import safe_repr

DATA = pathlib.Path(__file__).parent / "data"
P61 = (1 << 61) - 1  # the modulus of CPython's numeric hash: i * P61 all hash to 0


def run(engine: str, data: bytes, **kw: Any) -> Any:
    return _backend.engine(engine).run_pickle(data, **kw)


def refused(engine: str, data: bytes, code: str, cls: type = LimitError, **kw: Any) -> Any:
    with pytest.raises(CheckpointError) as info:
        run(engine, data, **kw)
    err = info.value
    assert isinstance(err, cls) and err.code == code, f"{type(err).__name__} {err.code}: {err}"
    assert isinstance(err.offset, int) and 0 <= err.offset < len(data), err.offset
    return err


def opened(engine: str, pkl: bytes) -> Any:
    return ckptpeek.open(io.BytesIO(torch_zip(pkl)), engine=engine)


def long4(value: int) -> bytes:
    """LONG4: any int, as two's complement little-endian bytes."""
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8b" + struct.pack("<i", len(raw)) + raw


def long_binput(p: Pickle, i: int) -> Pickle:
    return p.raw(b"r" + struct.pack("<I", i))


def long_binget(p: Pickle, i: int) -> Pickle:
    return p.raw(b"j" + struct.pack("<I", i))


# ---------------------------------------------------------------- 1. the size of a key


def dag(p: Pickle, levels: int, first_memo: int = 0) -> int:
    """t0 = (), t(i) = (t(i-1), t(i-1)) through the memo; leaves t(levels) on the stack
    and returns its memo index. 2**levels parts when walked without a memo."""
    p.empty_tuple().binput(first_memo)
    for i in range(first_memo + 1, first_memo + levels + 1):
        p.raw(b"0").binget(i - 1).binget(i - 1).tuple2().binput(i)
    return first_memo + levels


def dag_key_pickle(how: str, levels: int = 40) -> bytes:
    """The DAG hashed by each way a file can hash an object."""
    p = Pickle().proto(4)
    if how == "SETITEM":
        p.empty_dict()
        dag(p, levels)
        p.none().setitem()
    elif how == "SETITEMS":
        p.empty_dict().mark()
        dag(p, levels)
        p.none().setitems()
    elif how == "DICT":
        p.mark()
        dag(p, levels)
        p.none().raw(b"d")
    elif how == "FROZENSET":
        p.mark()
        dag(p, levels)
        p.raw(b"\x91")
    elif how == "ADDITEMS":
        p.raw(b"\x8f").mark()
        dag(p, levels)
        p.raw(b"\x90")
    elif how in ("set", "frozenset"):
        p.glob("builtins", how).empty_list()
        dag(p, levels)
        p.append().tuple1().reduce()
    elif how in ("dict", "OrderedDict"):
        p.glob("builtins" if how == "dict" else "collections", how).empty_list()
        dag(p, levels)
        p.none().tuple2().append().tuple1().reduce()
    elif how == "defaultdict":
        p.glob("collections", "defaultdict").none().empty_list()
        dag(p, levels)
        p.none().tuple2().append().tuple2().reduce()
    elif how == "placeholder-SETITEM":
        p.glob("mylib", "Thing").empty_tuple().reduce()
        dag(p, levels)
        p.none().setitem()
    else:  # pragma: no cover
        raise AssertionError(how)
    return bytes(p.stop())


HOW = (
    "SETITEM",
    "SETITEMS",
    "DICT",
    "FROZENSET",
    "ADDITEMS",
    "set",
    "frozenset",
    "dict",
    "OrderedDict",
    "defaultdict",
    "placeholder-SETITEM",
)


@pytest.fixture
def key_walk(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts what the key guard walks: calls, and the elements of every part it walks
    (each distinct part once: the memo), and the sizes it returns."""
    counts = {"calls": 0, "elements": 0, "charged": 0}
    key_cost = keys_module.key_cost

    def counting(key: Any, max_cost: int, max_depth: int, memo: dict[int, Any]) -> int:
        counts["calls"] += 1
        before = set(memo)
        try:
            cost = key_cost(key, max_cost, max_depth, memo)
        finally:
            counts["elements"] += sum(len(memo[i][0]) for i in set(memo) - before)
        counts["charged"] += cost
        return cost

    monkeypatch.setattr(keys_module, "key_cost", counting)
    return counts


@pytest.mark.parametrize("how", HOW)
def test_dag_key_is_refused_before_hashing(engine: str, how: str, key_walk: dict[str, int]) -> None:
    """A 40-level tuple DAG (a few hundred bytes, 2**41 parts to hash) is refused by
    every opcode and stand-in that hashes it, after walking each distinct part once."""
    data = dag_key_pickle(how)
    assert len(data) < 600
    refused(engine, data, "limit-key-size")
    # the parts up to the one that passes max_key_nodes (2**14 > 10,000): 2 elements each
    assert key_walk["calls"] == 1 and key_walk["elements"] <= 2 * 15, key_walk


@pytest.mark.parametrize("how", ["SETITEM", "FROZENSET", "dict"])
def test_dag_key_under_the_limit_reads(engine: str, how: str) -> None:
    """12 levels (8,191 parts) pass ``max_key_nodes``; 13 (16,383) do not."""
    run(engine, dag_key_pickle(how, levels=12))
    refused(engine, dag_key_pickle(how, levels=13), "limit-key-size")


def test_key_size_limit_is_configurable(engine: str) -> None:
    data = dag_key_pickle("SETITEM", levels=20)
    limits = ckptpeek.DEFAULT_LIMITS._replace(max_key_nodes=1 << 22)
    (key,) = run(engine, data, limits=limits).value
    assert len(key) == 2 and key[0] is key[1]


def shared_tuple_keys(n_keys: int, width: int) -> bytes:
    """One tuple of ``width`` ints, then ``n_keys`` dict keys (big, i) that share it."""
    p = Pickle().proto(4).empty_dict().mark()
    for i in range(width):
        p.int(i)
    p.tuple()
    long_binput(p, 0)
    p.raw(b"0").mark()
    for i in range(n_keys):
        long_binget(p, 0)
        p.int(i).tuple2().none()
    return bytes(p.setitems().stop())


def test_total_hashing_work_of_a_pickle_is_bounded(engine: str, key_walk: dict[str, int]) -> None:
    """Keys that each reference one big shared tuple: each is small to walk (the memo),
    but CPython hashes the whole tuple for every key. The sizes charged add up to at
    most ``max_nodes`` plus one key, then the run stops."""
    limits = ckptpeek.DEFAULT_LIMITS._replace(max_nodes=200_000)
    data = shared_tuple_keys(n_keys=100_000, width=5_000)
    err = refused(engine, data, "limit-key-size", limits=limits)
    assert "hashing the keys of this file" in str(err)
    assert key_walk["charged"] <= 200_000 + 5_002, key_walk
    assert key_walk["calls"] <= 200_000 // 5_000 + 1, key_walk
    # each key costs its new tuple; the shared one is walked once
    assert key_walk["elements"] <= 5_000 + 2 * key_walk["calls"], key_walk


def test_deep_key_behind_a_memoised_part(engine: str) -> None:
    """A part the memo already measured still counts for the depth of a new key."""
    p = Pickle().proto(4).empty_dict().empty_tuple()
    for _ in range(150):
        p.tuple1()
    long_binput(p, 0)
    p.none().setitem()  # 151 levels: allowed
    long_binget(p, 0)
    for _ in range(60):
        p.tuple1()
    p.none().setitem().stop()  # 211 levels: refused, though its inner part is known
    refused(engine, bytes(p), "limit-depth")


def test_key_depth_is_capped_whatever_max_depth_allows(engine: str) -> None:
    """CPython hashes nested tuples by recursing in C: a larger ``max_depth`` lets walks
    go deeper, never keys (held to 200 levels)."""
    limits = ckptpeek.DEFAULT_LIMITS._replace(max_depth=100_000)
    for levels, ok in ((199, True), (201, False)):
        p = Pickle().proto(4).empty_dict().empty_tuple()
        for _ in range(levels):
            p.tuple1()
        data = bytes(p.none().setitem().stop())
        if ok:
            assert len(run(engine, data, limits=limits).value) == 1
        else:
            refused(engine, data, "limit-depth", limits=limits)


# ----------------------------------------------------------------------- 2. MARKs


@pytest.mark.parametrize("n", [10_001, 1_000_000])
def test_marks_stop_at_the_limit(engine: str, n: int) -> None:
    data = b"\x80\x02" + b"(" * n + b"."
    err = refused(engine, data, "limit-marks")
    assert err.offset == 2 + ckptpeek.DEFAULT_LIMITS.max_marks  # the first MARK too many


def test_marks_limit_is_configurable_and_exact(engine: str) -> None:
    limits = ckptpeek.DEFAULT_LIMITS._replace(max_marks=5)
    ok = b"\x80\x02" + b"(" * 5 + b"t" * 5 + b"."
    assert run(engine, ok, limits=limits).value == pickle.loads(ok)
    err = refused(engine, b"\x80\x02" + b"(" * 6 + b"t" * 6 + b".", "limit-marks", limits=limits)
    assert err.offset == 7


# ------------------------------------------------------------------ 3. hash flooding


def colliding(kind: str, n: int) -> Iterator[bytes]:
    """``n`` distinct keys that all share one hash, as pickle opcodes."""
    for i in range(1, n + 1):
        if kind == "int":
            yield long4(i * P61)
        elif kind == "negative":
            yield long4(-i * P61)
        elif kind == "mixed":  # 2.0**(61 k) hashes as 1, and so does 1 + i * P61
            yield b"G" + struct.pack(">d", 2.0 ** (61 * i)) if i <= 16 else long4(1 + i * P61)
        elif kind == "tuple":
            yield long4(i * P61) + b"\x85"
        else:  # pragma: no cover
            raise AssertionError(kind)


def flood(kind: str, n: int, op: str = "SETITEMS") -> bytes:
    """``n`` keys of one hash inserted into one container by ``op``."""
    p = Pickle().proto(4)
    if op == "SETITEMS":
        p.empty_dict().mark()
        for key in colliding(kind, n):
            p.raw(key).none()
        p.setitems()
    elif op == "FROZENSET":
        p.mark()
        for key in colliding(kind, n):
            p.raw(key)
        p.raw(b"\x91")
    elif op == "dict":  # builtins.dict([(k, None), ...]): the stand-in hashes them
        p.glob("builtins", "dict").empty_list()
        for key in colliding(kind, n):
            p.raw(key).none().tuple2().append()
        p.tuple1().reduce()
    elif op == "placeholder-SETITEM":  # a dict subclass the registry does not know
        p.glob("mylib", "Thing").empty_tuple().reduce()
        for key in colliding(kind, n):
            p.raw(key).none().setitem()
    return bytes(p.stop())


def keys_before_refusal(limit: int, cost: int) -> int:
    """The insertion of keys of one hash into one container that the guard refuses:
    the n-th compares with the n - 1 before it, each comparison costing ``cost``."""
    n, spent = 1, 0
    while spent <= limit:
        spent += n * cost
        n += 1
    return n


@pytest.fixture
def guard_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts Context.check_hashable calls (both engines call the shared method)."""
    counts = {"calls": 0}
    check = ctx_module.Context.check_hashable

    def counting(self: Any, key: Any, container: Any, pos: int) -> None:
        counts["calls"] += 1
        check(self, key, container, pos)

    monkeypatch.setattr(ctx_module.Context, "check_hashable", counting)
    return counts


@pytest.mark.parametrize("kind", ["int", "negative", "mixed", "tuple"])
@pytest.mark.parametrize("op", ["SETITEMS", "FROZENSET", "dict", "placeholder-SETITEM"])
def test_hash_flooding_is_refused(
    engine: str, kind: str, op: str, guard_calls: dict[str, int]
) -> None:
    """5,000 keys of one hash in one container: refused once the comparisons they cause
    pass ``max_hash_collisions`` (about 1,400 keys), counted in calls of the guard."""
    keys = list(colliding(kind, 50))
    assert len({hash(run(engine, b"\x80\x04" + k + b".").value) for k in keys}) == 1
    guard_calls["calls"] = 0
    limit = ckptpeek.DEFAULT_LIMITS.max_hash_collisions
    refused(engine, flood(kind, 5_000, op), "limit-hash-collisions")
    per_key = 2 if kind == "tuple" else 1  # a tuple key costs itself and its int
    expected = keys_before_refusal(limit, per_key)
    assert 1_000 < expected < 1_500
    assert guard_calls["calls"] == expected, guard_calls


@pytest.mark.parametrize("op", ["SETITEMS", "FROZENSET", "dict", "placeholder-SETITEM"])
def test_keys_of_one_hash_under_the_limit_read(engine: str, op: str) -> None:
    """The last container the default accepts: 1,000 keys of one hash (499,500
    comparisons), read as pickle reads them."""
    data = flood("int", 1_000, op)
    value = run(engine, data).value
    if op != "placeholder-SETITEM":
        assert value == pickle.loads(data)
    else:
        assert list(value.dictitems) == [i * P61 for i in range(1, 1_001)]


def reinserted(n_colliding: int, n_again: int) -> bytes:
    """``n_colliding`` keys sharing a hash, then the first one set ``n_again`` times."""
    p = Pickle().proto(4).empty_dict().mark()
    for key in colliding("int", n_colliding):
        p.raw(key).none()
    p.setitems()
    first = next(colliding("int", 1))
    for _ in range(n_again):
        p.raw(first).none().setitem()
    return bytes(p.stop())


def test_reinserting_a_colliding_key_counts(engine: str) -> None:
    """Re-setting a key that shares its hash with others compares it with them (the
    dict's probe finds it last): the n-th insertion of a hash into a dict costs n - 1."""
    spent = sum(range(50)) + 50 + 51  # 50 distinct keys, then two re-insertions
    limits = ckptpeek.DEFAULT_LIMITS._replace(max_hash_collisions=spent)
    assert len(run(engine, reinserted(50, 2), limits=limits).value) == 50
    refused(engine, reinserted(50, 3), "limit-hash-collisions", limits=limits)


def distinct_dicts(n: int, keys: tuple[Any, ...] = (-1, -2)) -> list[dict[Any, int]]:
    return [dict.fromkeys(keys, 0) for _ in range(n)]


@pytest.mark.parametrize(
    "value",
    [[{-1: 0, -2: 0}] * 600, distinct_dicts(600), distinct_dicts(600, (0, P61, 2 * P61))],
    ids=["one-dict-600-times", "600-dicts", "600-dicts-of-3-colliding-keys"],
)
def test_colliding_keys_spread_over_many_dicts_read(
    engine: str, value: Any, tmp_path: pathlib.Path, guard_calls: dict[str, int]
) -> None:
    """Reviewer #5: ``hash(-1) == hash(-2)``, so every such dict compares its two keys
    once - a few comparisons per dict, never a flood. Read as pickle and torch read it."""
    data = pickle.dumps(value, protocol=2)
    assert run(engine, data).value == pickle.loads(data) == value
    torch = pytest.importorskip("torch")
    path = tmp_path / "dicts.pt"
    torch.save(value, path)
    with ckptpeek.open(path, engine=engine) as ckpt:
        assert ckpt.root == torch.load(path) == value


def test_equal_keys_in_many_dicts_are_not_collisions(engine: str) -> None:
    """The same int keys (an optimizer's parameter ids) in many dicts, and keys equal
    across types (1, 1.0, True) each in its own dict: nothing is compared, nothing counts."""
    limits = ckptpeek.DEFAULT_LIMITS._replace(max_hash_collisions=0)
    p = Pickle().proto(4).empty_list().mark()
    for _ in range(200):
        p.empty_dict().mark()
        for i in range(50):
            p.int(i).none()
        p.setitems()
    p.empty_dict().int(1).none().setitem()
    p.empty_dict().raw(b"G" + struct.pack(">d", 1.0)).none().setitem()
    p.empty_dict().raw(b"\x88").none().setitem()
    value = run(engine, bytes(p.raw(b"e").stop()), limits=limits).value
    assert len(value) == 203 and value[-3:] == [{1: None}] * 3


def memoised_args_dicts(n_keys: int, n_calls: int) -> bytes:
    """``builtins.dict(args)`` called ``n_calls`` times on one memoised ``args`` holding
    ``n_keys`` pairs whose keys share a hash: each call builds its own dict."""
    p = Pickle().proto(4).empty_list().mark().glob("builtins", "dict").binput(0).empty_list()
    for key in colliding("int", n_keys):
        p.raw(key).none().tuple2().append()
    p.tuple1().binput(1).reduce()
    for _ in range(n_calls - 1):
        p.binget(0).binget(1).reduce()
    return bytes(p.raw(b"e").stop())


def test_stand_in_dicts_from_one_memoised_argument_are_separate_containers(
    engine: str,
) -> None:
    """Each call of a stand-in that hashes is its own container for the guard, even when
    its arguments are one memoised object: 1,000 colliding keys cost 499,500
    comparisons per dict, two such dicts 999,000, under the default budget (were they
    one container, the second's keys would be compared with the first's too: 1.5M)."""
    value = run(engine, memoised_args_dicts(1_000, 2)).value
    assert len(value) == 2 and all(len(d) == 1_000 for d in value)
    assert value[0] is not value[1]
    refused(engine, memoised_args_dicts(1_000, 3), "limit-hash-collisions")  # 1.5M in all


def big_int_keys(bits: int, how: str, n: int) -> bytes:
    """Reviewer #2's keys: one memoised LONG4 int of ``bits`` bits, then ``n`` dicts
    each keyed by it (``int``) or by a tuple of 5,000 references to it (``tuple``)."""
    p = Pickle().proto(4).raw(long4((1 << bits) - 1)).binput(0).raw(b"0")
    if how == "tuple":
        p.mark()
        for _ in range(5_000):
            p.binget(0)
        p.tuple().binput(1).raw(b"0")
    p.empty_list().mark()
    for _ in range(n):
        p.empty_dict().binget(1 if how == "tuple" else 0).none().setitem()
    return bytes(p.raw(b"e").stop())


@pytest.mark.parametrize("how", ["int", "tuple"])
def test_a_megabyte_int_key_is_refused_by_its_cost(
    engine: str, how: str, key_walk: dict[str, int]
) -> None:
    """Reviewer #2: a 1 MB int hashes in time linear in its length, uncached, for every
    insertion (a tuple of 5,000 references to it, 5,000 times that). Its cost, 1 unit per
    128 bits (65,537 units), is over ``max_key_nodes``: the first insertion is refused,
    before hashing, having measured the int once."""
    data = big_int_keys(8 << 20, how, 5)
    assert len(data) < (1 << 20) + 30_000
    err = refused(engine, data, "limit-key-size")
    assert "long ints by their length" in str(err)
    assert key_walk["calls"] == 1
    assert err.offset == data.index(b"s")  # the first SETITEM (no earlier "s" byte)


def test_hashing_a_shared_long_int_adds_up_to_max_nodes(
    engine: str, key_walk: dict[str, int]
) -> None:
    """A 150 KB int (9,376 units, under ``max_key_nodes``) keying 10,000 dicts: each
    insertion hashes it again, so the run stops once the costs charged pass ``max_nodes``
    (5,333 insertions), not after 10,000 (the reviewer's 1M SETITEMs of a 5 MB file)."""
    bits = 150_000 * 8
    per_key = 1 + bits // 128
    data = big_int_keys(bits, "int", 10_000)
    err = refused(engine, data, "limit-key-size")
    assert "hashing the keys of this file" in str(err)
    max_nodes = ckptpeek.DEFAULT_LIMITS.max_nodes
    assert key_walk["calls"] == max_nodes // per_key + 1, key_walk
    assert key_walk["charged"] <= max_nodes + per_key


def test_string_keys_do_not_pay(engine: str, guard_calls: dict[str, int]) -> None:
    """A state dict's text keys: neither engine calls the guard for them."""
    p = Pickle().proto(4).empty_dict().mark()
    for i in range(5_000):
        p.str(f"layer.{i}.weight").none()
    p.setitems().mark().str("a").str("b").raw(b"\x91")
    run(engine, bytes(p.tuple2().stop()))
    assert guard_calls["calls"] == 0


# -------------------------------------------------------------- 4. interpolations


def dictconfig(p: Pickle, items: list[tuple[str, Any]], parent: int | None = None) -> Pickle:
    """A DictConfig as OmegaConf pickles it: NEWOBJ, then BUILD of its state."""
    p.glob("omegaconf.dictconfig", "DictConfig").empty_tuple().raw(b"\x81")
    p.empty_dict().str("_parent")
    if parent is None:
        p.none()
    else:
        long_binget(p, parent)
    p.setitem().str("_content").empty_dict().mark()
    for key, value in items:
        p.str(key)
        if callable(value):
            value(p)
        else:
            p.str(value)
    return p.setitems().setitem().build()


def amplifying_config(width: int, fanout: int, n: int) -> bytes:
    """base = "x" * width; k = "${base}" * fanout; then n values "${k}${k}"."""
    items: list[tuple[str, Any]] = [("base", "x" * width), ("k", "${base}" * fanout)]
    items += [(f"v{i}", "${k}${k}") for i in range(n)]
    p = Pickle().proto(2).empty_dict().str("hyper_parameters")
    return bytes(dictconfig(p, items).setitem().stop())


def test_interpolation_amplification_leaves_the_configs_as_written(engine: str) -> None:
    """Reviewer #7: 250 KB of text made 2 MB per value. The resolution stops once the
    total would pass the limit, having built no more than that (counted with
    tracemalloc); the load succeeds with every config exactly as written, as torch.load
    returns a DictConfig (resolved only on access) - none half resolved."""
    limit = 4 << 20
    limits = ckptpeek.DEFAULT_LIMITS._replace(max_interpolated_bytes=limit)
    data = amplifying_config(width=1_000, fanout=250, n=1_000)
    tracemalloc.start()
    try:
        root = run(engine, data, limits=limits).value
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * limit, peak  # the text made (and one copy being joined), not 2 GB
    config = root["hyper_parameters"]
    assert config["k"] == "${base}" * 250  # it alone fits, but the whole does not
    assert all(config[f"v{i}"] == "${k}${k}" for i in range(1_000))


def two_configs(first: list[tuple[str, Any]], second: list[tuple[str, Any]]) -> bytes:
    p = Pickle().proto(2).empty_dict().str("a")
    dictconfig(p, first).setitem().str("b")
    return bytes(dictconfig(p, second).setitem().stop())


def test_interpolation_budget_is_all_or_nothing_for_the_run(engine: str) -> None:
    """A small config that fits and a big one that does not, in one pickle: neither is
    resolved (the budget is the run's); with room for both, both are."""
    small = [("x", "ab"), ("y", "${x}-${x}")]
    big = [("base", "x" * 100), ("k", "${base}" * 100), ("v", "${k}${k}")]
    data = two_configs(small, big)
    limits = ckptpeek.DEFAULT_LIMITS._replace(max_interpolated_bytes=20_000)
    root = run(engine, data, limits=limits).value
    assert root["a"]["y"] == "${x}-${x}" and root["b"]["v"] == "${k}${k}"
    root = run(engine, data).value
    assert root["a"]["y"] == "ab-ab" and root["b"]["v"] == "x" * 20_000


def test_resolve_interpolations_over_budget_changes_nothing() -> None:
    """The catalog's call: over budget it raises ``limit-interpolation`` (its note) and
    leaves the config as written, including values resolved before the limit tripped."""
    from ckptpeek.unpickle import resolve_interpolations

    config: dict[str, Any] = {"x": "ab", "y": "${x}", "z": "${x}" * 100, "sub": {"w": "${x}"}}
    written = {**config, "sub": dict(config["sub"])}
    with pytest.raises(LimitError) as info:
        resolve_interpolations(config, max_bytes=100)
    assert info.value.code == "limit-interpolation"
    assert config == written
    # whole values make no text; every interpolation string is scanned: 4 + 400 + 4
    assert resolve_interpolations(config, max_bytes=2_000) == 200 + 408
    assert config == {"x": "ab", "y": "ab", "z": "ab" * 100, "sub": {"w": "ab"}}


def test_interpolations_under_the_limit_resolve(engine: str) -> None:
    data = amplifying_config(width=10, fanout=3, n=5)
    config = run(engine, data).value["hyper_parameters"]
    assert config["k"] == "x" * 30 and config["v4"] == "x" * 60


def test_child_config_pickled_before_its_root_resolves(engine: str) -> None:
    """{"model": cfg.m, "cfg": cfg}: the child is pickled first, so its root's BUILD
    runs while the child is still empty. Resolution waits for the end of the run."""
    p = Pickle().proto(2).empty_dict().str("model")
    # the child: NEWOBJ, memo 0; its state names the root as parent, built inside it
    p.glob("omegaconf.dictconfig", "DictConfig").empty_tuple().raw(b"\x81")
    long_binput(p, 0)
    p.empty_dict().str("_parent")
    p.glob("omegaconf.dictconfig", "DictConfig").empty_tuple().raw(b"\x81")
    long_binput(p, 1)
    root_state: list[tuple[str, Any]] = [
        ("m", lambda q: long_binget(q, 0)),
        ("x", "${m.width}"),
        ("y", "w${m.width}"),
    ]
    p.empty_dict().str("_parent").none().setitem().str("_content").empty_dict().mark()
    for key, value in root_state:
        p.str(key)
        value(p) if callable(value) else p.str(value)
    p.setitems().setitem().build()  # the root's BUILD: its child is empty here
    p.setitem().str("_content").empty_dict().str("width").int(64).setitem().setitem().build()
    p.setitem().str("cfg")
    long_binget(p, 1)
    p.setitem().stop()
    root = run(engine, bytes(p)).value
    assert root["cfg"]["x"] == 64 and root["cfg"]["y"] == "w64"
    assert root["model"] is root["cfg"]["m"]


def test_child_config_before_root_matches_torch(engine: str, tmp_path: pathlib.Path) -> None:
    torch = pytest.importorskip("torch")
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create({"m": {"width": 64}, "x": "${m.width}", "y": "w${m.width}"})
    path = tmp_path / "child_first.pt"
    torch.save({"model": cfg.m, "cfg": cfg}, path)
    expected = torch.load(path, weights_only=False)
    with ckptpeek.open(path, engine=engine) as ckpt:
        got = ckpt.root
    assert got["cfg"]["x"] == expected["cfg"].x == 64
    assert got["cfg"]["y"] == expected["cfg"].y == "w64"


def test_interpolation_of_a_huge_int_stays_unresolved(engine: str) -> None:
    p = Pickle().proto(2).empty_dict().str("hyper_parameters")
    items: list[tuple[str, Any]] = [
        ("n", lambda q: q.raw(long4(10**5000))),
        ("whole", "${n}"),
        ("text", "n=${n}"),
        ("index", "${l." + "9" * 5000 + "}"),
    ]
    cfg = run(engine, bytes(dictconfig(p, items).setitem().stop())).value["hyper_parameters"]
    assert cfg["whole"] == 10**5000  # a whole value keeps the object
    assert cfg["text"] == "n=${n}" and cfg["index"].startswith("${l.")


def configs_sharing_a_subtree(n_roots: int, width: int) -> bytes:
    """``n_roots`` root configs, each holding one shared dict of ``width`` references
    that do not resolve."""
    p = Pickle().proto(2).empty_list().empty_dict().mark()
    for i in range(width):
        p.str(f"k{i}").str("${nope.x}")
    p.setitems()
    long_binput(p, 0)
    p.raw(b"0").mark()
    for _ in range(n_roots):
        dictconfig(p, [("big", lambda q: long_binget(q, 0))])
    return bytes(p.raw(b"e").stop())


def test_configs_sharing_a_subtree_resolve_it_once(
    engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ckptpeek.unpickle import interpolation

    lookups = [0]
    split = interpolation._split

    def counting(key: str) -> list[str]:
        lookups[0] += 1
        return split(key)

    monkeypatch.setattr(interpolation, "_split", counting)
    roots = run(engine, configs_sharing_a_subtree(n_roots=300, width=1_000)).value
    assert len(roots) == 300 and roots[0]["big"] is roots[-1]["big"]
    assert lookups[0] == 1_000, lookups  # not 300 x 1,000


# ------------------------------------------------------------- 5. shared containers


def shared_optimizer_state(n_refs: int, width: int) -> bytes:
    """One per-parameter state dict of ``width`` entries, referenced by ``n_refs``
    parameters, and one optimizer state referenced ``n_refs`` times."""
    p = Pickle().proto(4).empty_dict().str("optimizer_states").empty_list()
    p.empty_dict()
    long_binput(p, 0)
    p.str("param_groups").empty_list().empty_dict().str("lr").raw(b"G" + struct.pack(">d", 0.1))
    p.setitem().append().setitem().str("state").empty_dict().mark()
    p.int(0).empty_dict()
    long_binput(p, 1)
    p.mark()
    for i in range(width):
        p.str(f"s{i}").int(i)
    p.setitems()
    for i in range(1, n_refs):
        p.int(i % 60_000)
        long_binget(p, 1)
    p.setitems().setitem().append()
    p.mark()
    for _ in range(n_refs - 1):
        long_binget(p, 0)
    p.raw(b"e").setitem().stop()
    return bytes(p)


def test_shared_optimizer_state_is_walked_once(
    engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts = {"tensor_counts": 0, "optimizers": 0}
    tensor_count, optimizer = facts._tensor_count, facts._optimizer

    def counting_tensor_count(state: Any) -> int:
        counts["tensor_counts"] += 1
        return tensor_count(state)

    def counting_optimizer(state: Any) -> Any:
        counts["optimizers"] += 1
        return optimizer(state)

    monkeypatch.setattr(facts, "_tensor_count", counting_tensor_count)
    monkeypatch.setattr(facts, "_optimizer", counting_optimizer)
    data = shared_optimizer_state(n_refs=20_000, width=2_000)
    assert len(data) < 400_000
    with opened(engine, data) as ckpt:
        summary = ckpt.summary()
    assert len(summary.optimizers) == 20_000 and summary.optimizers[0].lr == [0.1]
    assert counts == {"tensor_counts": 1, "optimizers": 1}, counts


def test_tensor_walk_visits_shared_containers_once(
    engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ckptpeek.walk as walk

    calls = [0]
    children = walk.children

    def counting(obj: Any) -> Any:
        calls[0] += 1
        return children(obj)

    monkeypatch.setattr(walk, "children", counting)
    with opened(engine, shared_optimizer_state(n_refs=5_000, width=500)) as ckpt:
        assert list(ckpt.tensors()) == []
    # root, the list, the optimizer state, param_groups, its group, state, the shared dict
    assert calls[0] == 7, calls


# ------------------------------------------------------------- 6. shadowed methods


SHADOWS = ("items", "keys", "values", "get", "setdefault", "copy")


def shadowed_pickle(module: str, name: str) -> bytes:
    p = Pickle().proto(2).glob(module, name).empty_tuple().reduce()
    long_binput(p, 0)
    p.mark().str("epoch").int(3).str("lr").raw(b"G" + struct.pack(">d", 0.5)).setitems()
    p.empty_dict().mark()
    for attr in SHADOWS:
        p.str(attr).int(7)
    p.setitems().build()
    return bytes(p.stop())


@pytest.mark.parametrize(
    "qualname",
    ["collections.OrderedDict", "lightning.fabric.utilities.data.AttributeDict"],
)
def test_shadowing_attributes_do_not_break_walks(engine: str, qualname: str) -> None:
    module, name = qualname.rsplit(".", 1)
    data = shadowed_pickle(module, name)
    wrapped = bytes(Pickle().proto(2).empty_dict().mark().str("state_dict")) + data[2:-1]
    wrapped += bytes(Pickle().str("hyper_parameters").raw(b"h\x00").str("x").raw(b"h\x00"))
    wrapped += b"u."
    for pkl in (data, wrapped):
        with opened(engine, pkl) as ckpt:
            assert list(ckpt.tensors()) == []
            ckpt.summary()
            assert ckpt.keys() and ckpt.get("epoch", None) in (3, None)
            facts.collect(ckpt)
    with opened(engine, data) as ckpt:
        root = ckpt.root
        assert ckpt.summary().epoch == 3 and ckpt.keys() == ["epoch", "lr"]
        assert dict.items(root) and vars(root) == dict.fromkeys(SHADOWS, 7)


def test_shadowing_matches_torch(engine: str, tmp_path: pathlib.Path) -> None:
    """torch.load keeps the instance attributes too (pickle's BUILD updates
    ``__dict__``): ckptpeek's root is the same mapping with the same ``vars()``. torch
    writes such a file (``items`` aside: its pickler calls ``items()``) and reads the
    hand-made one with ``items`` too."""
    torch = pytest.importorskip("torch")
    od = collections.OrderedDict(w=torch.arange(3.0), epoch=2)
    for attr in ("keys", "values", "get", "copy"):
        setattr(od, attr, 5)
    saved = tmp_path / "shadow.pt"
    torch.save(od, saved)
    made = tmp_path / "made.pt"
    made.write_bytes(torch_zip(shadowed_pickle("collections", "OrderedDict")))
    for path in (saved, made):
        expected = torch.load(path, weights_only=False)
        with ckptpeek.open(path, engine=engine) as ckpt:
            root = ckpt.root
            assert type(root) is type(expected) is collections.OrderedDict
            assert vars(root) == vars(expected) and vars(root)
            assert list(dict.items(root))[1:] == list(dict.items(expected))[1:]
            assert ckpt.keys() == list(dict.keys(expected))
            assert ckpt.summary().tensor_count == (1 if path is saved else 0)
    with ckptpeek.open(saved, engine=engine) as ckpt:
        ((key, ref),) = list(ckpt.tensors())
        assert key == ("w",) and ref.numpy().tolist() == [0.0, 1.0, 2.0]


# --------------------------------------------------------------------- 7. huge ints


def huge_ints_pickle() -> bytes:
    big, bigger = 10**5000, 2**100_000
    p = Pickle().proto(2).empty_dict().mark()
    p.str("epoch").raw(long4(big)).str("global_step").raw(long4(bigger))
    p.str("callbacks").empty_dict().str("ModelCheckpoint{'monitor': 'acc'}").empty_dict().mark()
    p.str("best_model_score").raw(long4(-big)).str("best_k_models").empty_dict()
    p.str("a.ckpt").raw(long4(big)).setitem().setitems().setitem()
    p.str("optimizer_states").empty_list().empty_dict().str("param_groups").empty_list()
    p.empty_dict().mark().str("lr").raw(long4(big)).str("params").empty_list().setitems()
    p.append().setitem().append()
    p.str("lr_schedulers").empty_list().empty_dict().mark().str("last_epoch").raw(long4(bigger))
    p.str("_last_lr").empty_list().raw(long4(big)).append().setitems().append()
    p.str("hyper_parameters").empty_dict().str("n").raw(long4(big)).setitem()
    p.raw(long4(big)).int(1)  # a top-level int key that str() cannot write
    return bytes(p.setitems().stop())


def test_huge_ints_never_break_the_summary(engine: str) -> None:
    with opened(engine, huge_ints_pickle()) as ckpt:
        s = ckpt.summary()
        data = facts.collect(ckpt)
    assert s.epoch == 10**5000 and s.global_step == 2**100_000  # the int, as the file says
    (mc,) = s.model_checkpoints
    assert mc.best_model_score == -math.inf and mc.best_k_models == {"a.ckpt": math.inf}
    assert s.optimizers[0].lr == [math.inf]
    assert s.lr_schedulers[0].last_epoch == 2**100_000 and s.lr_schedulers[0].last_lr == [math.inf]
    assert s.hyper_parameters == {"n": "<int of 16610 bits>"}
    assert data["top_level_keys"][-1] == "<int of 16610 bits>"
    s.model_dump_json()  # a JSON writer on the whole summary


# ------------------------------------------------------------ 8. numpy code points


def numpy_pickle(how: str, code_point: int, order: str = "<") -> bytes:
    raw = struct.pack(order + "I", code_point)
    data = b"C" + bytes([len(raw)]) + raw

    def dtype(p: Pickle) -> Pickle:  # as numpy pickles it: dtype("U1", False, True), BUILD
        p.glob("numpy", "dtype").mark().str("U1").false().raw(b"\x88").tuple().reduce()
        p.mark().int(3).str(order).none().none().none().int(4).int(4).int(8).tuple()
        return p.build()

    p = Pickle().proto(2)
    if how == "scalar":
        dtype(p.glob("numpy.core.multiarray", "scalar").mark())
        p.raw(data).tuple().reduce()
    elif how == "frombuffer":
        p.glob("numpy.core.numeric", "_frombuffer").mark().raw(data)
        dtype(p)
        p.int(1).tuple1().str("C").tuple().reduce()
    elif how == "ndarray":
        p.glob("numpy.core.multiarray", "_reconstruct").mark().glob("numpy", "ndarray")
        p.int(0).tuple1().str("b").tuple().reduce()
        p.mark().int(1).int(1).tuple1()
        dtype(p)
        p.false().raw(data).tuple().build()
    return bytes(p.stop())


@pytest.mark.parametrize("how", ["scalar", "frombuffer", "ndarray"])
@pytest.mark.parametrize("code_point", [0x110000, 0xFFFFFFFF, 0xD800, 0xDFFF])
@pytest.mark.parametrize("order", ["<", ">"])
def test_invalid_numpy_code_points_are_refused(
    engine: str, how: str, code_point: int, order: str
) -> None:
    err = refused(
        engine,
        numpy_pickle(how, code_point, order),
        "bad-build" if how == "ndarray" else "bad-call",
        FormatError,
    )
    assert "code point outside Unicode" in str(err)


@pytest.mark.parametrize("how", ["scalar", "frombuffer", "ndarray"])
@pytest.mark.parametrize("order", ["<", ">"])
def test_valid_numpy_text_reads(engine: str, how: str, order: str) -> None:
    value = run(engine, numpy_pickle(how, 0x10FFFF, order)).value
    text = value if how == "scalar" else value.reshape(-1)[0]
    assert str(text) == "\U0010ffff"


# -------------------------------------------------------------------- 9. the sweep


def fixture_pickles() -> list[tuple[str, bytes]]:
    out = []
    for path in sorted(DATA.iterdir()):
        if path.suffix in (".pt", ".ckpt") and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
                out.append((path.name, z.read(name)))
    return out


def with_pickle(fixture: str, pkl: bytes) -> bytes:
    """The fixture's archive with its data.pkl replaced (every other member kept)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(DATA / fixture) as src, zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            data = pkl if info.filename.endswith("/data.pkl") else src.read(info)
            dst.writestr(info.filename, data)
    return buf.getvalue()


#: opcodes that push one value and consume none: replacing one by another value keeps
#: the pickle well-formed, so the odd value reaches the walks and the summary
_LEAVES = frozenset(
    "NONE NEWTRUE NEWFALSE BININT BININT1 BININT2 LONG1 BINFLOAT BINUNICODE "
    "SHORT_BINUNICODE BINUNICODE8 BINGET LONG_BINGET".split()
)
ODD_VALUES = (
    long4(10**5000),
    long4(-(2**100_000)),
    long4(-(2**63)),
    b"G" + struct.pack(">d", math.inf),
    b"G" + struct.pack(">d", math.nan),
    b")" + b"\x85" * 150,  # a 151-level tuple
    b"}",
    b"]",
    b"\x8f",
    b"\x88",
    b"N",
    b"cmylib\nThing\n)R",  # a placeholder
    b"X\x08\x00\x00\x00\x1b[2J\xe2\x80\xae\n",  # terminal controls and a bidi override
    b"C\x03\xff\x00\x1b",
    b"ccollections\nOrderedDict\n)R}(X\x05\x00\x00\x00itemsK\x01X\x03\x00\x00\x00getK\x02ub",
    b"clightning.fabric.utilities.data\nAttributeDict\n)R}X\x04\x00\x00\x00keysK\x01sb",
    b"cbuiltins\nfrozenset\n]" + long4(P61) + b"a" + long4(2 * P61) + b"a\x85R",
)


def value_swaps(pkl: bytes, n: int, seed: int) -> Iterator[bytes]:
    """``n`` copies of ``pkl``, each with one to three of its plain values (or memo
    references) replaced by an odd value: huge ints, inf/nan, deep tuples, empty
    containers, placeholders, control characters, stand-ins with shadowing attributes."""
    ops = [(op.name, pos) for op, _arg, pos in pickletools.genops(pkl)]
    ends = [pos for _, pos in ops[1:]] + [len(pkl)]
    leaves = [(pos, end) for (name, pos), end in zip(ops, ends) if name in _LEAVES]
    rng = random.Random(seed)
    for _ in range(n):
        buf = bytearray(pkl)
        for pos, end in sorted(rng.sample(leaves, rng.randint(1, 3)), reverse=True):
            buf[pos:end] = rng.choice(ODD_VALUES)
        yield bytes(buf)


@pytest.mark.parametrize(
    ("name", "pkl"), fixture_pickles(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_mutated_fixtures_raise_only_checkpoint_errors(engine: str, name: str, pkl: bytes) -> None:
    """Every mutation of every fixture pickle opens, walks and summarises, or fails with
    a CheckpointError: nothing else escapes (RecursionError, OverflowError, ...)."""
    bad = []
    for i, mutated in enumerate(value_swaps(pkl, 100, seed=zlib.crc32(name.encode()))):
        data = with_pickle(name, mutated)
        try:
            with ckptpeek.open(io.BytesIO(data), engine=engine) as ckpt:
                for _key, ref in ckpt.tensors():
                    try:
                        ref.numpy()
                    except CheckpointError:
                        pass
                facts.collect(ckpt)
                ckpt.summary().model_dump_json()
                ckpt.keys()
        except CheckpointError:
            pass
        except Exception as exc:  # noqa: BLE001 - that is what is being looked for
            bad.append(f"{i}: {type(exc).__name__}: {str(exc)[:100]}")
    assert not bad, bad


def test_interpolation_pattern_splits_dots_once() -> None:
    """The reference pattern reads leading dots in one group and a key that starts with
    no dot in the other: the same matches as before, and "${" followed by a million dots
    is rejected with one split per position instead of one per pair (quadratic)."""
    from ckptpeek.unpickle import interpolation

    ref = re.compile(interpolation._REF_PATTERN)
    old = re.compile(r"(?<!\\)\$\{(\.*)([A-Za-z0-9_\-\.\[\]]*)\}")
    for n in range(1, 7):
        for text in map("".join, itertools.product(".a}0[", repeat=n)):
            a, b = old.fullmatch("${" + text), ref.fullmatch("${" + text)
            assert (a and a.groups()) == (b and b.groups()), text
    assert ref.search("${" + "." * 1_000_000) is None


def test_selected_read_of_a_shadowing_root(engine: str) -> None:
    data = shadowed_pickle("collections", "OrderedDict")
    with ckptpeek.open(io.BytesIO(torch_zip(data)), engine=engine, select={"epoch"}) as ckpt:
        assert dict(dict.items(ckpt.root)) == {"epoch": 3}


def generated_inputs() -> Iterator[tuple[str, bytes, Limits]]:
    """Every generator of this module, at sizes around its limit."""
    small = ckptpeek.DEFAULT_LIMITS._replace(
        max_hash_collisions=40, max_key_nodes=500, max_nodes=20_000, max_marks=30
    )
    for how in HOW:
        for levels in (8, 9, 40):
            yield f"dag-{how}-{levels}", dag_key_pickle(how, levels), small
    yield "shared-keys", shared_tuple_keys(200, 300), small
    yield "marks", b"\x80\x02" + b"(" * 31 + b".", small
    for kind in ("int", "negative", "mixed", "tuple"):
        for op in ("SETITEMS", "FROZENSET"):
            yield f"flood-{kind}-{op}", flood(kind, 60, op), small
    yield "reinserted", reinserted(30, 20), small
    yield "amplified", amplifying_config(100, 20, 30), small._replace(max_interpolated_bytes=50_000)
    yield "huge-ints", huge_ints_pickle(), small
    for how in ("scalar", "frombuffer", "ndarray"):
        yield f"numpy-{how}", numpy_pickle(how, 0x110000), small


def outcome(engine: str, data: bytes, limits: Limits) -> Any:
    try:
        result = run(engine, data, limits=limits)
    except CheckpointError as exc:
        return type(exc).__name__, exc.code, exc.offset, str(exc)
    return "ok", safe_repr(result.value), result.end


def test_engines_agree_on_every_generated_input() -> None:
    if "native" not in _backend._ENGINES:
        pytest.skip("native engine not built")
    for name, data, limits in generated_inputs():
        assert outcome("python", data, limits) == outcome("native", data, limits), name


def test_summary_json_view_is_json_safe_of_the_graph(engine: str) -> None:
    """Reviewer #11/#12: one rule. For plain data, the summary's JSON view of
    hyper-parameters is exactly ``_text.json_safe`` of it (long ints, non-finite floats,
    cycles, non-text keys), and ``json.dumps`` writes it."""
    import json

    from ckptpeek._text import json_safe

    p = Pickle().proto(4).empty_dict().mark()
    p.str("n").raw(long4(10**5000)).str("f").raw(b"G" + struct.pack(">d", math.inf))
    p.str("cycle").empty_list().binput(0).binget(0).append()
    p.int(3).str("int key").int(1).int(2).tuple2().str("tuple key")
    value = run(engine, bytes(p.setitems().stop())).value
    assert value["cycle"][0] is value["cycle"]
    got = facts.to_jsonable(value)
    assert got == json_safe(value)
    assert got["n"] == "<int of 16610 bits>" and got["cycle"] == ["<cycle>"]
    assert got["3"] == "int key" and got["(1, 2)"] == "tuple key"
    json.dumps(got)


def test_safe_repr_of_shared_graphs_inside_subclasses_is_bounded() -> None:
    """reprlib calls repr() on types it does not know - a dict subclass (OrderedDict, a
    config), a Namespace - and repr() walks a tuple DAG through every shared part. The
    bounded repr shows them through their base container or their attributes: counted by
    the calls of the nodes' own __repr__ (the old path made 2**18 of them)."""
    import argparse
    import collections

    from ckptpeek.unpickle.standins import safe_repr

    calls = [0]

    class Node(tuple):  # type: ignore[type-arg]
        __slots__ = ()

        def __repr__(self) -> str:
            calls[0] += 1
            return tuple.__repr__(self)

    dag: Node = Node(())
    for _ in range(18):
        dag = Node((dag, dag))
    for holder in (collections.OrderedDict(a=dag), argparse.Namespace(a=dag, b=1), [dag]):
        text = safe_repr(holder)
        assert len(text) < 400, text
    assert calls[0] == 0


# ------------------------------------------- 7. copies and joins of shared arguments (VM-3)


@pytest.fixture
def spent(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every size ``Context.spend`` is asked for (both engines call the shared method)."""
    sizes: list[int] = []
    spend = ctx_module.Context.spend

    def counting(self: Any, size: int, how: str, pos: int) -> None:
        sizes.append(size)
        spend(self, size, how, pos)

    monkeypatch.setattr(ctx_module.Context, "spend", counting)
    return sizes


def built_budget(data: bytes) -> int:
    return ctx_module.BUILT_BYTES_SLACK + ctx_module.BUILT_BYTES_FACTOR * len(data)


def memoised_path(kind: str, width: int, n: int) -> bytes:
    """``pathlib.<kind>(s, s, ..., s)``: ``n`` references to one memoised ``width``-char
    string, joined into one path of ``n * width`` characters."""
    p = Pickle().proto(2).glob("pathlib", kind).mark().str("a" * width).binput(0)
    for _ in range(n - 1):
        p.binget(0)
    return bytes(p.tuple().reduce().stop())


PATHS = ["PurePosixPath", "PosixPath", "PureWindowsPath", "WindowsPath", "Path"]


@pytest.mark.parametrize("kind", PATHS)
def test_a_path_of_memoised_parts_is_charged_before_it_is_joined(
    engine: str, kind: str, spent: list[int]
) -> None:
    """3,000 references to one 1 MB string made a 3 GB path. Its parts are charged
    against the built-bytes budget before they are joined: refused at the first path,
    having charged only its own parts (a separator each)."""
    data = memoised_path(kind, width=1 << 20, n=100)
    refused(engine, data, "limit-built-bytes")
    assert spent == [100 * ((1 << 20) + 1)] and spent[0] > built_budget(data)


@pytest.mark.parametrize("kind", PATHS)
def test_a_path_under_the_budget_reads(engine: str, kind: str, spent: list[int]) -> None:
    value = run(engine, memoised_path(kind, width=10, n=3)).value
    assert str(value).replace("\\", "/") == "/".join(["a" * 10] * 3)
    assert spent == [33]


def shared_interpolation(n: int, dots: int) -> bytes:
    """One root DictConfig whose ``n`` keys hold one memoised ``"${a.a.....a}"``."""
    text = "${" + "a." * dots + "a}"

    def first(p: Pickle) -> None:
        long_binput(p.str(text), 0)

    items: list[tuple[str, Any]] = [("k0", first)]
    items += [(f"k{i}", lambda p: long_binget(p, 0)) for i in range(1, n)]
    p = Pickle().proto(2).empty_dict().str("cfg")
    return bytes(dictconfig(p, items).setitem().stop())


@pytest.fixture
def split_chars(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """The characters of references the interpolation pass splits into keys."""
    from ckptpeek.unpickle import interpolation

    counts = {"calls": 0, "chars": 0}
    split = interpolation._split

    def counting(key: str) -> list[str]:
        counts["calls"] += 1
        counts["chars"] += len(key)
        return split(key)

    monkeypatch.setattr(interpolation, "_split", counting)
    return counts


def test_one_interpolation_string_many_keys_share_is_scanned_within_the_budget(
    engine: str, split_chars: dict[str, int]
) -> None:
    """10,000 keys holding one 1 MB "${a.a...}" scanned it 10,000 times (60 s). The text
    scanned counts against ``max_interpolated_bytes`` with the text produced: the pass
    stops within it and leaves the config as written, as torch.load returns it."""
    limit = 1 << 20
    limits = ckptpeek.DEFAULT_LIMITS._replace(max_interpolated_bytes=limit)
    data = shared_interpolation(n=2_000, dots=50_000)
    config = run(engine, data, limits=limits).value["cfg"]
    assert len(config) == 2_000 and len({id(v) for v in config.values()}) == 1
    assert split_chars["chars"] <= limit and split_chars["calls"] == limit // 100_004
    assert config["k1999"].startswith("${a.a.")


def test_resolve_interpolations_counts_a_shared_string_per_key(
    split_chars: dict[str, int],
) -> None:
    """The catalog's call on YAML whose aliases share one string among many keys: the
    same budget, so it raises ``limit-interpolation`` and changes nothing."""
    from ckptpeek.unpickle import resolve_interpolations

    text = "${" + "a." * 5_000 + "a}"
    config: dict[str, Any] = {f"k{i}": text for i in range(5_000)}
    with pytest.raises(LimitError) as info:
        resolve_interpolations(config, max_bytes=100_000)
    assert info.value.code == "limit-interpolation"
    assert split_chars["chars"] <= 100_000 and all(v is text for v in config.values())
    small = {f"k{i}": text for i in range(5)}
    assert resolve_interpolations(small, max_bytes=100_000) == 5 * len(text)  # scanned


def rebuilt_keys(how: str, n_keys: int, n_copies: int) -> bytes:
    """A memoised dict of ``n_keys`` keys of one hash, copied into ``n_copies`` new dicts
    by a stand-in: a DictConfig BUILD of ``{"_content": d}``, or
    ``copyreg._reconstructor(OrderedDict, object, d)``."""
    p = Pickle().proto(2).empty_list().empty_dict().mark()
    for key in colliding("int", n_keys):
        p.raw(key).none()
    long_binput(p.setitems(), 0).raw(b"0")
    p.mark()
    for _ in range(n_copies):
        if how == "DictConfig":
            p.glob("omegaconf.dictconfig", "DictConfig").empty_tuple().raw(b"\x81")
            p.empty_dict().str("_parent").none().setitem().str("_content")
            long_binget(p, 0).setitem().build()
        else:
            p.glob("copyreg", "_reconstructor").glob("collections", "OrderedDict")
            long_binget(p.glob("builtins", "object"), 0).tuple3().reduce()
    return bytes(p.raw(b"e").stop())


@pytest.mark.parametrize("how", ["DictConfig", "_reconstructor"])
def test_stand_ins_that_copy_a_dict_guard_its_keys(
    engine: str, how: str, guard_calls: dict[str, int]
) -> None:
    """A stand-in copying an already-built dict's keys hashes them into a new container:
    each key passes the guard. 1,000 colliding keys cost 499,500 comparisons per copy;
    the memoised dict and one copy fit the default budget, a second copy does not."""
    value = run(engine, rebuilt_keys(how, 1_000, 1)).value
    assert len(value) == 1 and len(value[0]) == 1_000
    assert guard_calls["calls"] == 2 * 1_000  # SETITEMS of the dict, then the copy
    refused(engine, rebuilt_keys(how, 1_000, 2), "limit-hash-collisions")


COPIES = ["list", "tuple", "set", "frozenset", "dict", "OrderedDict", "ListConfig", "DictConfig"]


def shared_copies(how: str, size: int, n: int) -> bytes:
    """One memoised container of ``size`` slots (a list of ints, or a dict of text
    keys), copied ``n`` times by ``how``: a constructor or a config's BUILD."""
    p = Pickle().proto(2)
    if how in ("dict", "OrderedDict", "DictConfig"):
        p.empty_dict().mark()
        for i in range(size):
            p.str(f"k{i}").none()
        p.setitems()
    else:
        p.empty_list().mark()
        for i in range(size):
            p.int(i)
        p.raw(b"e")
    long_binput(p, 0).raw(b"0").empty_list().mark()
    for _ in range(n):
        if how.endswith("Config"):
            module = "omegaconf.dictconfig" if how == "DictConfig" else "omegaconf.listconfig"
            p.glob(module, how).empty_tuple().raw(b"\x81")
            p.empty_dict().str("_parent").none().setitem().str("_content")
            long_binget(p, 0).setitem().build()
        else:
            module = "collections" if how == "OrderedDict" else "builtins"
            long_binget(p.glob(module, how), 0).tuple1().reduce()
    return bytes(p.raw(b"e").stop())


@pytest.mark.parametrize("how", COPIES)
def test_copies_of_a_shared_container_are_charged(engine: str, how: str, spent: list[int]) -> None:
    """300 ``list(L)`` of one memoised 1M-slot list built 2.4 GB from 1 MB. Each copy
    charges its slots (8 bytes each) before it is made: the run stops at the copy that
    passes the budget, having charged every copy made."""
    data = shared_copies(how, 100_000, 60)
    refused(engine, data, "limit-built-bytes")
    budget = built_budget(data)
    copies = [s for s in spent if s == 8 * 100_000]
    assert len(copies) == budget // (8 * 100_000) + 1 == len(spent)
    assert sum(spent[:-1]) <= budget < sum(spent)


@pytest.mark.parametrize("how", COPIES)
def test_a_few_copies_of_a_shared_container_read(engine: str, how: str, spent: list[int]) -> None:
    value = run(engine, shared_copies(how, 10, 3)).value
    assert len(value) == 3 and all(len(v) == 10 for v in value)
    assert spent == [80] * 3
    if not how.endswith("Config"):
        assert value == pickle.loads(shared_copies(how, 10, 3))


def test_memory_error_is_never_a_bad_argument(engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Running out of memory in a constructor says nothing about the file: it stays a
    MemoryError, never a FormatError "REDUCE of builtins.list with bad arguments: "."""

    def exhausted(self: Any, size: int, how: str, pos: int) -> None:
        raise MemoryError

    monkeypatch.setattr(ctx_module.Context, "spend", exhausted)
    with pytest.raises(MemoryError):
        run(engine, shared_copies("list", 10, 1))
