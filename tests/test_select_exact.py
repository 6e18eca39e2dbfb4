"""``open(path, select=S)`` reads exactly what a full read gives for the keys in ``S``.

A selective run skips the values of the other keys (they become SKIPPED), so every way
a skipped value can take part in building a selected one has a generator here, and
each file it makes is read by both engines with and without ``select=``; the selected
keys must come out the same, compared structurally (container types, float bits,
sharing between objects, tensors by their storage, OmegaConf nodes after ``${...}``
resolution) and through ``summary()``:

* a real object built at the top of a skipped value (its parts skipped) and shared by
  memo with a selected value, whose BUILD drops what it does not understand (OmegaConf
  configs and nodes): ``lossy_builds``;
* a BUILD, SETITEM or APPEND that runs from a skipped position on a selected object:
  ``mutations_from_skipped``;
* ``${...}`` interpolations resolved over a config that holds an incomplete node, or
  resolved in a selected node by the BUILD of a skipped root config that swallowed it:
  ``interpolations``;
* SKIPPED in a dict key or an attribute: ``keys_and_attributes``;
* the first persistent id naming a storage decides its dtype and size (as torch does),
  so a skipped id changes a selected tensor: ``storages``;
* constructor calls on values from skipped keys: ``calls``;
* real OmegaConf configs written by ``torch.save`` (with Lightning's ``AttributeDict``).

A hypothesis test writes random dict-rooted pickles (memo sharing across keys, configs
with interpolations, BUILD/SETITEM on other keys' objects, storages) and checks
selective == full restricted to the selection, for random selections.
"""

from __future__ import annotations

import io
import itertools
import math
import struct
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _builders import Member, Pickle, torch_zip
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ckptpeek
from ckptpeek.tensor import StorageRef, TensorRef
from ckptpeek.unpickle import engine as _backend
from ckptpeek.unpickle import pickle_vm, select
from ckptpeek.unpickle.standins import KnownGlobal, Placeholder, PlaceholderType
from ckptpeek.unpickle.torch_rebuild import StorageResolver

# ---------------------------------------------------------------------------------------
# comparing results
# ---------------------------------------------------------------------------------------

_LEAVES = (type(None), bool, int, str, bytes)


def canonical(value: Any) -> Any:
    """A structure equal for two values iff they are the same object graph: exact types,
    float bits, shared objects and cycles (a second visit is ``("ref", n)``)."""
    seen: dict[int, int] = {}
    keep: list[Any] = []

    def c(o: Any) -> Any:
        t = type(o)
        if t in _LEAVES:
            return o
        if t is float:
            return ("float", o.hex() if not math.isnan(o) else struct.pack("<d", o).hex())
        if t is KnownGlobal:
            return ("global", o.module, o.name)
        if t is PlaceholderType:
            return ("type", o.module, o.name)
        if t.__module__ == "ckptpeek.torch_types" and not isinstance(o, tuple):
            return ("torch", t.__name__, repr(o))
        if id(o) in seen:
            return ("ref", seen[id(o)])
        seen[id(o)] = len(seen)
        keep.append(o)
        name = f"{t.__module__}.{t.__qualname__}"
        if t is TensorRef:
            return (
                "tensor",
                str(o.dtype),
                tuple(o.shape),
                o.stride(),
                o.storage_offset(),
                o.requires_grad,
                o.is_parameter,
                o.kind,
                o.type_name,
                c(o.storage),
                c(o.attrs),
                c(o.metadata),
                c(o.components),
            )
        if t is StorageRef:
            return ("storage", o.key, str(o.dtype), o.numel, o.location)
        if t is Placeholder:
            parts = (o.args, o.kwargs, o.state, o.items, o.dictitems, o.setitems)
            return ("placeholder", o.module, o.name, *map(c, parts))
        attrs = c(vars(o)) if hasattr(o, "__dict__") and vars(o) else None
        if isinstance(o, dict):
            return ("dict", name, [(c(k), c(v)) for k, v in o.items()], attrs)
        if isinstance(o, (list, tuple)):
            return ("seq", name, [c(x) for x in o], attrs)
        if isinstance(o, (set, frozenset)):
            return ("set", name, sorted(map(repr, map(c, o))), attrs)
        slots = [
            (s, c(getattr(o, s, "<unset>")))
            for k in t.__mro__
            for s in getattr(k, "__slots__", ())
            if s != "__weakref__"
        ]
        return ("obj", name, slots, attrs)

    return c(value)


def selected_part(root: Any, keys: Any) -> list[tuple[Any, Any]]:
    """The selected items of a root dict, in order (one list: sharing across keys counts)."""
    return [(k, v) for k, v in root.items() if k in keys] if isinstance(root, dict) else root


#: what summary() reports from the selected keys (the rest counts skipped tensors too)
SUMMARY_FIELDS = (
    "epoch",
    "global_step",
    "hparams_name",
    "hyper_parameters",
    "model_checkpoints",
    "early_stopping",
    "lr_schedulers",
    "unknown_globals",
)


def assert_exact(blob: bytes, keys: Any, engine: str) -> None:
    """``open(select=keys)`` of the file gives what the full read gives for ``keys``."""
    full = ckptpeek.open(io.BytesIO(blob), engine=engine)
    part = ckptpeek.open(io.BytesIO(blob), engine=engine, select=keys)
    assert part.selected == frozenset(keys)
    want = selected_part(full.root, keys)
    assert canonical(selected_part(part.root, keys)) == canonical(want)
    for key, value in want:
        assert canonical(part.get(key)) == canonical(value), key
    got, expected = part.summary(), full.summary()
    for name in SUMMARY_FIELDS:
        assert getattr(got, name) == getattr(expected, name), name


# ---------------------------------------------------------------------------------------
# writing pickles: a memo counter over _builders.Pickle, and the objects checkpoints hold
# ---------------------------------------------------------------------------------------


class W:
    """A pickle being written, with the memo indices it has used."""

    def __init__(self) -> None:
        self.p = Pickle().proto(2)
        self.n = 0

    def put(self) -> int:
        self.p.raw(b"r" + struct.pack("<I", self.n))  # LONG_BINPUT
        self.n += 1
        return self.n - 1

    def get(self, i: int) -> W:
        self.p.raw(b"j" + struct.pack("<I", i))  # LONG_BINGET
        return self

    def __getattr__(self, name: str) -> Any:  # the Pickle opcodes, chained on W
        op = getattr(self.p, name)

        def call(*args: Any) -> W:
            op(*args)
            return self

        return call

    def __bytes__(self) -> bytes:
        return bytes(self.p)


Emit = Callable[[W], Any]


def root(items: list[tuple[str, Emit]]) -> bytes:
    """``{key: value, ...}`` as torch.save writes it (one MARK ... SETITEMS)."""
    w = W()
    w.empty_dict()
    w.put()
    w.mark()
    for key, value in items:
        w.str(key)
        value(w)
    w.setitems().stop()
    return bytes(w)


def newobj(w: W, module: str, name: str) -> int:
    w.glob(module, name).empty_tuple().raw(b"\x81")  # NEWOBJ
    return w.put()


def config(
    w: W, content: list[tuple[str, Emit]], parent: Emit | None = None, kind: str = "dict"
) -> int:
    """An OmegaConf DictConfig (ListConfig: ``kind="list"``, keys ignored) as pickled."""
    cls = "DictConfig" if kind == "dict" else "ListConfig"
    i = newobj(w, f"omegaconf.{kind}config", cls)
    w.empty_dict().mark()
    w.str("_parent")
    (parent or (lambda w: w.none()))(w)
    w.str("_content")
    if kind == "dict":
        w.empty_dict().mark()
        for key, value in content:
            w.str(key)
            value(w)
        w.setitems()
    else:
        w.empty_list().mark()
        for _key, value in content:
            value(w)
        w.raw(b"e")  # APPENDS
    w.setitems().build()
    return i


def node(w: W, value: Emit) -> int:
    """An OmegaConf AnyNode holding ``value``."""
    i = newobj(w, "omegaconf.nodes", "AnyNode")
    w.empty_dict().str("_val")
    value(w)
    w.setitem().build()
    return i


def text(s: str) -> Emit:
    return lambda w: w.str(s)


def number(n: int) -> Emit:
    return lambda w: w.int(n)


def ref(box: list[int]) -> Emit:
    """A memo GET of the object whose index ``box[0]`` holds (set when it was written)."""
    return lambda w: w.get(box[0])


def keep(box: list[int], make: Callable[[W], int]) -> Emit:
    """Write an object and remember its memo index in ``box``."""

    def emit(w: W) -> None:
        box[:] = [make(w)]

    return emit


def in_list(value: Emit) -> Emit:
    """``[value]``: one level deeper (a skipped value's nested items become SKIPPED)."""

    def emit(w: W) -> None:
        w.empty_list()
        w.put()
        w.mark()
        value(w)
        w.raw(b"e")

    return emit


def in_dict(value: Emit, key: str = "v") -> Emit:
    def emit(w: W) -> None:
        w.empty_dict()
        w.put()
        w.mark()
        w.str(key)
        value(w)
        w.str("other").int(1).setitems()

    return emit


def tensor(key: str, stype: str = "FloatStorage", numel: int = 6, shape: int = 6) -> Emit:
    """A contiguous 1-d tensor on storage ``key`` (torch.save's opcodes)."""

    def emit(w: W) -> None:
        w.glob("torch._utils", "_rebuild_tensor_v2")
        w.mark().mark().str("storage").glob("torch", stype).str(key).str("cpu").int(numel)
        w.tuple().binpersid()
        w.int(0).int(shape).tuple1().int(1).tuple1().false()
        w.glob("collections", "OrderedDict").empty_tuple().reduce()
        w.tuple().reduce()
        w.put()

    return emit


def archive(pkl: bytes) -> bytes:
    """A torch zip with storages "0" (24 bytes) and "1" (48 bytes)."""
    return torch_zip(pkl, extra=[Member("archive/data/1", bytes(48))])


Case = tuple[str, bytes, tuple[str, ...]]


def cases(*gens: Callable[[], Iterator[Case]]) -> list[Any]:
    return [pytest.param(blob, keys, id=name) for g in gens for name, blob, keys in g()]


# ---------------------------------------------------------------------------------------
# the generators, one per way a skipped value can reach a selected one
# ---------------------------------------------------------------------------------------

HP = ("hyper_parameters", "epoch")  # what is read; "loops" and others are skipped


def _shared_objects() -> Iterator[tuple[str, Callable[[W], int]]]:
    """Objects whose BUILD keeps only part of its state (or keeps it whole: controls)."""
    yield "dictconfig", lambda w: config(w, [("a", number(1)), ("b", in_list(number(2)))])
    yield (
        "listconfig",
        lambda w: config(w, [("", number(1)), ("", in_list(number(3)))], None, "list"),
    )
    yield "anynode", lambda w: node(w, in_list(number(7)))
    yield (
        "interpolating",
        lambda w: config(
            w, [("width", number(64)), ("name", text("net${width}")), ("w", text("${width}"))]
        ),
    )

    def placeholder(w: W) -> int:
        w.glob("mylib.models", "Net").empty_tuple().reduce()
        i = w.put()
        w.empty_dict().str("layers").empty_list().mark().int(1).int(2).raw(b"e").setitem()
        w.build()
        return i

    yield "placeholder", placeholder

    def ordered(w: W) -> int:
        w.glob("collections", "OrderedDict").empty_tuple().reduce()
        i = w.put()
        w.str("w").int(1).setitem()
        w.empty_dict().str("_metadata").empty_dict().str("").empty_dict().setitem().setitem()
        w.build()
        return i

    yield "ordereddict-metadata", ordered


def lossy_builds() -> Iterator[Case]:
    """An object built at the top of a skipped value, or one level down, and shared."""
    for (kind, make), deep, use, where in itertools.product(
        _shared_objects(),
        (False, True),
        ("direct", "in-list", "in-dict", "in-config"),
        ("loops", "cfg"),
    ):
        box: list[int] = []
        made = keep(box, make)
        skipped = in_list(made) if deep else made
        used: Emit = {
            "direct": ref(box),
            "in-list": in_list(ref(box)),
            "in-dict": in_dict(ref(box)),
            "in-config": lambda w, box=box: config(w, [("m", ref(box)), ("x", text("${m.a}"))]),
        }[use]
        pkl = root([("epoch", number(3)), (where, skipped), ("hyper_parameters", used)])
        yield f"{kind}-{'deep' if deep else 'top'}-{use}-{where}", archive(pkl), HP


def _targets() -> Iterator[tuple[str, Callable[[W], int], Emit]]:
    """Selected objects, and a state a later BUILD from a skipped position gives them."""
    content = in_dict(in_list(number(5)), "_content")
    yield "anynode", lambda w: node(w, number(1)), in_dict(in_list(number(2)), "_val")
    yield "config", lambda w: config(w, [("a", number(1))], number(1)), content

    def root_state(w: W) -> None:  # a root config's state: resolves ${...} when built
        w.empty_dict().mark().str("_parent").none().str("_content")
        w.empty_dict().mark().str("x").str("${y.0}").str("y").empty_list().int(4).append()
        w.setitems().setitems()

    yield "config-root", lambda w: config(w, [("a", number(1))], number(1)), root_state

    def placeholder(w: W) -> int:
        w.glob("mylib", "Thing").empty_tuple().reduce()
        return w.put()

    yield "placeholder", placeholder, in_list(number(1))

    def namespace(w: W) -> int:
        return newobj(w, "argparse", "Namespace")

    yield "namespace", namespace, in_dict(in_list(number(1)), "lr")


def mutations_from_skipped() -> Iterator[Case]:
    """A BUILD, SETITEM or APPEND on a selected object, run while a later key is skipped."""
    for (kind, make, state), deep, plain_state in itertools.product(
        _targets(), (False, True), (False, True)
    ):
        box: list[int] = []

        def build(
            w: W, state: Emit = state, plain_state: bool = plain_state, box: list[int] = box
        ) -> None:
            w.get(box[0])
            if plain_state:
                w.empty_dict().str("_val").int(9).setitem()  # built in both runs alike
            else:
                state(w)
            w.build()

        later = in_list(build) if deep else build
        pkl = root([("hyper_parameters", keep(box, make)), ("epoch", number(1)), ("loops", later)])
        yield f"build-{kind}-{'deep' if deep else 'top'}-{plain_state}", archive(pkl), HP
    fills: dict[str, tuple[Callable[[W], int], Callable[[W, Emit], None]]] = {
        "dict-setitem": (
            lambda w: (w.empty_dict(), w.put())[1],
            lambda w, v: (w.str("new"), v(w), w.setitem()),
        ),
        "list-append": (lambda w: (w.empty_list(), w.put())[1], lambda w, v: (v(w), w.append())),
        "config-setitem": (
            lambda w: config(w, [("a", text("${b}")), ("b", number(1))]),
            lambda w, v: (w.str("b"), v(w), w.setitem()),
        ),
    }
    values: dict[str, Emit] = {"container": in_list(number(1)), "number": number(2)}
    for (fname, (make, fill)), (vname, value), deep in itertools.product(
        fills.items(), values.items(), (False, True)
    ):
        box = []

        def mutate(w: W, fill: Any = fill, value: Emit = value, box: list[int] = box) -> None:
            w.get(box[0])
            fill(w, value)

        later = in_list(mutate) if deep else mutate
        pkl = root([("hyper_parameters", keep(box, make)), ("loops", later), ("epoch", number(2))])
        yield f"{fname}-{vname}-{'deep' if deep else 'top'}", archive(pkl), HP


def interpolations() -> Iterator[Case]:
    """``${...}`` resolved over an incomplete node, or in a selected node by a skipped
    root config's BUILD."""
    refs = ("${m.width}", "w${m.width}", "${m}")
    for reference, deep in itertools.product(refs, (False, True)):
        box: list[int] = []
        made = keep(box, lambda w: config(w, [("width", number(64))], number(1)))

        def used(w: W, r: str = reference, box: list[int] = box) -> None:
            config(w, [("m", ref(box)), ("x", text(r))])

        pkl = root([("loops", in_list(made) if deep else made), ("hyper_parameters", used)])
        yield f"incomplete-node-{reference}-{'deep' if deep else 'top'}", archive(pkl), HP
    # a selected child config, later swallowed by the content of a skipped root config
    for reference, depth in itertools.product(("${top}", "${top}/x", "${.a}"), (0, 1, 2)):
        box = []
        child = keep(
            box, lambda w, r=reference: config(w, [("a", number(1)), ("v", text(r))], number(1))
        )

        def swallow(w: W, box: list[int] = box) -> None:
            config(w, [("top", number(5)), ("c", ref(box))])

        later: Emit = swallow
        for _ in range(depth):
            later = in_list(later)
        pkl = root([("hyper_parameters", child), ("epoch", number(1)), ("loops", later)])
        yield f"swallowed-child-{reference}-{depth}", archive(pkl), HP


def keys_and_attributes() -> Iterator[Case]:
    """SKIPPED inside a key of a selected dict, or an attribute of a selected object."""

    def thing(w: W) -> int:
        w.glob("mylib", "Key").empty_tuple().reduce()
        return w.put()

    for deep in (False, True):
        box: list[int] = []
        made = keep(box, thing)
        skipped = in_list(in_list(made)) if deep else in_list(made)

        def keyed(w: W, box: list[int] = box) -> None:
            w.empty_dict().int(1).get(box[0]).tuple2().str("v").setitem()

        def attributed(w: W, box: list[int] = box) -> None:  # a state_dict's _metadata
            w.glob("collections", "OrderedDict").empty_tuple().reduce()
            w.put()
            w.empty_dict().str("_metadata").get(box[0]).setitem().build()

        for name, used in (("tuple-key", keyed), ("attribute", attributed)):
            pkl = root([("loops", skipped), ("hyper_parameters", in_dict(used))])
            yield f"{name}-{'deep' if deep else 'top'}", archive(pkl), HP


def storages() -> Iterator[Case]:
    """The first id naming a storage decides it: skipped ids count."""
    first = [("FloatStorage", 6), ("HalfStorage", 12), ("DoubleStorage", 3)]
    for (t1, n1), (t2, n2), key in itertools.product(first, first, ("0", "1")):
        if (t1, n1) == (t2, n2):
            continue
        pkl = root(
            [
                ("optimizer_states", in_dict(tensor(key, t1, n1, 2))),
                ("state_dict", in_dict(tensor(key, t2, n2, 2))),
            ]
        )
        yield f"first-id-{t1}-{t2}-{key}", archive(pkl), ("state_dict",)
    # a tensor shared by memo with a skipped value, and a view of its storage
    for deep in (False, True):
        box: list[int] = []

        def shared(w: W, box: list[int] = box) -> None:
            tensor("0")(w)
            box[:] = [w.n - 1]

        skipped = in_dict(shared) if deep else shared
        pkl = root([("optimizer_states", skipped), ("state_dict", in_dict(ref(box)))])
        yield f"shared-tensor-{deep}", archive(pkl), ("state_dict",)


def calls() -> Iterator[Case]:
    """Constructors called on values that come from skipped keys."""

    def real_dict(w: W) -> int:
        w.empty_dict()
        i = w.put()
        w.mark().str("a").empty_list().str("b").int(2).setitems()
        return i

    made: dict[str, Callable[[W], int]] = {
        "dict": real_dict,
        "node": lambda w: node(w, in_list(number(1))),
    }
    ctors: dict[str, Callable[[W, Emit], None]] = {
        "list": lambda w, v: (w.glob("builtins", "list"), v(w), w.tuple1(), w.reduce()),
        "ordereddict": lambda w, v: (
            w.glob("collections", "OrderedDict"),
            w.empty_list().str("x"),
            v(w),
            w.tuple2().append().tuple1().reduce(),
        ),
        "placeholder": lambda w, v: (w.glob("mylib", "f"), v(w), w.tuple1(), w.reduce()),
        "defaultdict": lambda w, v: (
            w.glob("collections", "defaultdict"),
            w.glob("builtins", "list"),
            w.empty_dict().str("x"),
            v(w),
            w.setitem().tuple2().reduce(),
        ),
    }
    for (mname, make), (cname, call), deep in itertools.product(
        made.items(), ctors.items(), (False, True)
    ):
        if (mname, cname) == ("node", "list"):
            continue  # list() of a node fails in a full read too
        box: list[int] = []
        obj = keep(box, make)
        pkl = root(
            [
                ("loops", in_list(obj) if deep else obj),
                ("hyper_parameters", in_dict(lambda w, c=call, box=box: c(w, ref(box)))),
            ]
        )
        yield f"{cname}-of-{mname}-{deep}", archive(pkl), HP


GENERATORS = (lossy_builds, mutations_from_skipped, interpolations, keys_and_attributes)
ALL = cases(*GENERATORS, storages, calls)


@pytest.mark.parametrize(("blob", "keys"), ALL)
def test_selected_equals_full(blob: bytes, keys: tuple[str, ...], engine: str) -> None:
    assert_exact(blob, keys, engine)


def test_the_generators_reach_what_a_selective_run_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the tracker's guards and taints, each generator makes files whose
    selective read differs: the generators do exercise the mechanisms."""
    monkeypatch.setattr(pickle_vm, "_GUARD_TABLE", (None,) * 256)
    monkeypatch.setattr(select.Tracker, "taint", lambda self, *values: None)
    children = select._children

    def values_only(obj: Any, t: type) -> Any:  # the walk before: dict values, no more
        return obj.values() if isinstance(obj, dict) else children(obj, t)

    monkeypatch.setattr(select, "_children", values_only)
    for gen in GENERATORS:
        broken = []
        for name, blob, keys in gen():
            full = ckptpeek.open(io.BytesIO(blob), engine="python")
            part = ckptpeek.open(io.BytesIO(blob), engine="python", select=keys)
            if canonical(selected_part(part.root, keys)) != canonical(
                selected_part(full.root, keys)
            ):
                broken.append(name)
        assert broken, gen.__name__


def test_the_first_id_of_a_storage_decides_it(engine: str) -> None:
    """torch's rule (the first id naming a key makes the storage), kept by select=."""
    pkl = root(
        [
            ("optimizer_states", in_dict(tensor("0", "FloatStorage", 6, 2))),
            ("state_dict", in_dict(tensor("0", "HalfStorage", 12, 2))),
        ]
    )
    part = ckptpeek.open(io.BytesIO(archive(pkl)), engine=engine, select=["state_dict"])
    t = part.get(("state_dict", "v"))
    assert str(t.dtype) == "torch.float32" and t.storage.numel == 6


def test_a_failing_skipped_storage_is_reported_only_if_a_selected_one_follows(
    engine: str,
) -> None:
    bad = in_dict(tensor("9"))  # no archive/data/9
    good = in_dict(tensor("0"))
    for items, keys, raises in (
        ([("optimizer_states", bad), ("epoch", number(1))], ("epoch",), False),
        ([("optimizer_states", bad), ("state_dict", good)], ("state_dict",), True),
    ):
        blob = archive(root(items))
        with pytest.raises(ckptpeek.CheckpointError) as full_error:
            ckptpeek.open(io.BytesIO(blob), engine=engine)
        if raises:
            with pytest.raises(ckptpeek.CheckpointError) as err:
                ckptpeek.open(io.BytesIO(blob), engine=engine, select=keys)
            assert err.value.code == full_error.value.code == "missing-storage"
        else:
            assert ckptpeek.open(io.BytesIO(blob), engine=engine, select=keys).get("epoch") == 1


# ---------------------------------------------------------------------------------------
# real OmegaConf configs, written by torch.save
# ---------------------------------------------------------------------------------------


def _torch_files(tmp: Any) -> Iterator[tuple[str, Any, tuple[str, ...]]]:
    torch = pytest.importorskip("torch", reason="torch writes these files")
    omegaconf = pytest.importorskip("omegaconf")
    OmegaConf = omegaconf.OmegaConf
    try:
        from lightning.fabric.utilities.data import AttributeDict
    except ImportError:  # pragma: no cover - lightning is a test dependency
        AttributeDict = dict

    def cfg() -> Any:
        return OmegaConf.create(
            {
                "model": {"width": 64, "name": "net${model.width}", "up": "${..lr}"},
                "lr": 0.1,
                "t": {"w": "${model.width}", "layers": [1, "${lr}"]},
                "lst": ["${lr}", {"x": "${t.w}"}],
            }
        )

    layouts: dict[str, Callable[[Any], dict[str, Any]]] = {
        "shared-root": lambda c: {"cfg": c, "hyper_parameters": c},
        "root-in-loops": lambda c: {"loops": {"fit": {"cfg": c}}, "hyper_parameters": c},
        "child-in-loops": lambda c: {"loops": {"m": c.model}, "hyper_parameters": c},
        "root-then-child": lambda c: {"loops": [c], "hyper_parameters": {"m": c.model}},
        "attributedict": lambda c: {"cfg": c, "hyper_parameters": AttributeDict(cfg=c, lr=1)},
        "listconfig": lambda c: {"loops": c.lst, "hyper_parameters": {"l": c.lst, "c": c}},
        "tensor-too": lambda c: {
            "loops": {"c": c, "t": torch.arange(4.0)},
            "state_dict": {"w": torch.arange(4.0)[1:]},
            "hyper_parameters": c,
        },
    }
    for (name, layout), legacy in itertools.product(layouts.items(), (False, True)):
        obj = {"epoch": 1, **layout(cfg())}
        path = tmp / f"{name}-{legacy}.ckpt"
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
        keys = ("epoch", "hyper_parameters", "state_dict")
        yield f"{name}{'-legacy' if legacy else ''}", path, keys


def test_torch_saved_configs(tmp_path: Any, engine: str) -> None:
    for name, path, keys in _torch_files(tmp_path):
        blob = path.read_bytes()
        try:
            assert_exact(blob, keys, engine)
        except AssertionError as exc:  # pragma: no cover - names the failing file
            raise AssertionError(f"{name}: {exc}") from exc


def test_torch_saved_config_resolves_as_torch_does(tmp_path: Any) -> None:
    """The evidence for the cases above: the interpolations ckptpeek resolves are the
    values ``torch.load`` + ``OmegaConf.to_container(resolve=True)`` give."""
    torch = pytest.importorskip("torch")
    omegaconf = pytest.importorskip("omegaconf")
    c = omegaconf.OmegaConf.create({"m": {"width": 64, "name": "net${m.width}"}, "w": "${m.width}"})
    path = tmp_path / "c.ckpt"
    torch.save({"cfg": c, "hyper_parameters": c}, path)
    want = omegaconf.OmegaConf.to_container(
        torch.load(path, weights_only=False)["hyper_parameters"], resolve=True
    )
    for engine in ("python", "native"):
        if engine not in _backend._ENGINES:  # pragma: no cover - depends on the build
            continue
        part = ckptpeek.open(path, engine=engine, select=["hyper_parameters"])
        assert (
            part.get("hyper_parameters") == want == {"m": {"width": 64, "name": "net64"}, "w": 64}
        )


# ---------------------------------------------------------------------------------------
# random pickles, random selections
# ---------------------------------------------------------------------------------------

KEYS = ("k0", "k1", "k2", "k3", "k4")
NAMES = ("a", "b", "c")
REFS = ("${a}", "${b.a}", "x${a}", "${.a}", "${k}", "${c.0}", "\\${a}")


class _Reader:
    """What StorageRefs read through (never read here)."""

    path = None


def fresh_storages() -> StorageResolver:
    return StorageResolver({"0": 64, "1": 64, "2": 8}, _Reader(), "archive/data/")


class _Gen:
    """A random pickle: values built from draws, memoized objects reused across keys."""

    def __init__(self, draw: Callable[[Any], Any]) -> None:
        self.draw = draw
        self.w = W()
        self.done: list[tuple[int, str]] = []  # (memo index, kind) of finished objects

    def choice(self, seq: Any) -> Any:
        return seq[self.draw(st.integers(0, len(seq) - 1))]

    def finished(self, kinds: tuple[str, ...]) -> list[int]:
        return [i for i, k in self.done if k in kinds]

    def value(self, depth: int) -> None:
        w = self.w
        kinds = ["int", "text", "ref", "ref"] + (
            ["list", "dict", "tuple", "config", "config", "node", "placeholder", "tensor"]
            + ["mutate", "mutate"]
            if depth < 3
            else []
        )
        kind = self.choice(kinds)
        if kind == "int":
            w.int(self.draw(st.integers(0, 300)))
        elif kind == "text":
            w.str(self.choice(NAMES + REFS))
        elif kind == "ref":
            done = self.finished(("list", "dict", "tuple", "config", "node", "ph", "tensor"))
            if done:
                w.get(self.choice(done))
            else:
                w.none()
        elif kind == "list":
            w.empty_list()
            i = w.put()
            n = self.draw(st.integers(0, 3))
            if n == 1:
                self.value(depth + 1)
                w.append()
            elif n:
                w.mark()
                for _ in range(n):
                    self.value(depth + 1)
                w.raw(b"e")
            self.done.append((i, "list"))
        elif kind == "dict":
            w.empty_dict()
            i = w.put()
            self.items(depth)
            self.done.append((i, "dict"))
        elif kind == "tuple":
            n = self.draw(st.integers(1, 3))
            for _ in range(n):
                self.value(depth + 1)
            w.raw({1: b"\x85", 2: b"\x86", 3: b"\x87"}[n])
            self.done.append((w.put(), "tuple"))
        elif kind == "config":
            parents = self.finished(("config",))
            parent = self.choice([None, *parents]) if parents else None
            content = [
                (self.choice(NAMES + ("k",)), lambda w, d=depth: self.cfg_value(d))
                for _ in range(self.draw(st.integers(0, 3)))
            ]
            i = config(w, content, None if parent is None else ref([parent]))
            self.done.append((i, "config"))
        elif kind == "node":
            self.done.append((node(w, lambda w, d=depth: self.value(d + 1)), "node"))
        elif kind == "placeholder":
            w.glob("mylib", self.choice(("A", "B")))
            self.value(depth + 1)
            w.tuple1().reduce()
            self.done.append((w.put(), "ph"))
        elif kind == "tensor":
            stype, size = self.choice((("FloatStorage", 4), ("HalfStorage", 2), ("ByteStorage", 8)))
            tensor(self.choice(("0", "1")), stype, size, self.draw(st.integers(0, size)))(w)
            self.done.append((w.n - 1, "tensor"))
        else:  # mutate an object of another key: BUILD, SETITEM or APPEND; leaves it
            targets = self.finished(("config", "node", "ph", "dict", "list"))
            if not targets:
                w.none()
                return
            i = self.choice(targets)
            k = dict(self.done)[i]
            w.get(i)
            if k == "list":
                self.value(depth + 1)
                w.append()
            elif k == "dict":
                w.str(self.choice(NAMES))
                self.value(depth + 1)
                w.setitem()
            else:
                w.empty_dict().mark()
                w.str("_val" if k == "node" else "_content")
                if k == "config":
                    w.empty_dict()
                    self.items(depth)
                else:
                    self.value(depth + 1)
                if k == "config" and self.draw(st.booleans()):
                    w.str("_parent").none()  # a root now: its BUILD resolves ${...}
                w.setitems().build()

    def cfg_value(self, depth: int) -> None:
        if self.draw(st.booleans()):
            self.w.str(self.choice(REFS + NAMES))
        else:
            self.value(depth + 1)

    def items(self, depth: int) -> None:
        n = self.draw(st.integers(0, 3))
        if n == 1:
            self.w.str(self.choice(NAMES))
            self.value(depth + 1)
            self.w.setitem()
        elif n:
            self.w.mark()
            for _ in range(n):
                self.w.str(self.choice(NAMES))
                self.value(depth + 1)
            self.w.setitems()

    def pickle(self) -> bytes:
        w = self.w
        w.empty_dict()
        w.put()
        w.mark()
        for key in self.draw(st.lists(st.sampled_from(KEYS), min_size=2, max_size=6)):
            w.str(key)
            self.value(1)
        w.setitems().stop()
        return bytes(w)


def _outcome(engine: str, data: bytes, keys: Any) -> Any:
    try:
        result = _backend.engine(engine).run_pickle(
            data, persistent_load=fresh_storages(), select=keys
        )
    except ckptpeek.CheckpointError as exc:
        return ("error", exc.code)
    part = selected_part(result.value, keys) if keys is not None else result.value
    return ("ok", canonical(part), result.globals)


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_random_pickles_selective_equals_full(data: st.DataObject) -> None:
    pkl = _Gen(data.draw).pickle()
    keys = frozenset(data.draw(st.lists(st.sampled_from(KEYS), max_size=4)))
    for engine in _backend._ENGINES:
        full = _outcome(engine, pkl, None)
        if full[0] == "error":
            continue  # the promise is about values: a full read that fails has none
        part = _outcome(engine, pkl, keys)
        root_value = _backend.engine(engine).run_pickle(pkl, persistent_load=fresh_storages())
        want = ("ok", canonical(selected_part(root_value.value, keys)), full[2])
        assert part == want, (engine, sorted(keys))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
