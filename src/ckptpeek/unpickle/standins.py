"""Safe stand-ins for the non-torch globals that checkpoints name.

The interpreter never imports what a pickle names. ``GLOBAL module name`` resolves in
``registry.py`` to one of the :class:`KnownGlobal` records built here; REDUCE, NEWOBJ and
friends call the record's small constructor, which checks its arguments and builds a
fresh, per-load object (a dict, a list, an ``argparse.Namespace``, a numpy scalar, ...).
The records themselves are frozen, so a file cannot change them for the next file.
Anything unknown becomes a :class:`Placeholder` that records what the file asked for.
"""

from __future__ import annotations

import collections
import os
import sys
from collections.abc import Callable

from ckptpeek._frozen import Frozen
from ckptpeek._text import int_printable, int_text

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    import argparse
    import datetime
    from typing import Any, Final

__all__ = (
    "KnownGlobal",
    "Placeholder",
    "PlaceholderType",
    "AttributeDict",
    "OmegaDict",
    "OmegaList",
    "STDLIB_GLOBALS",
    "BUILDERS",
    "apply_build",
    "build_inputs",
    "SLOT_BYTES",
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    Call = Callable[[tuple[Any, ...]], Any]
    New = Callable[[tuple[Any, ...], dict[str, Any]], Any]
    Keys = Callable[[tuple[Any, ...]], Iterable[Any]]
    Cost = Callable[[tuple[Any, ...]], int]

_REPR: list[Any] = []  # one reprlib.Repr, made on first use (reprlib costs import time)


def safe_repr(obj: Any) -> str:
    """A repr of bounded size and depth, whatever a file built (shared or deep graphs,
    ints too long for ``str``)."""
    if not _REPR:
        import reprlib  # noqa: PLC0415 - only error messages and displays need it

        class _Repr(reprlib.Repr):
            def repr_int(self, x: int, level: int) -> str:
                return reprlib.Repr.repr_int(self, x, level) if int_printable(x) else int_text(x)

            def repr1(self, x: Any, level: int) -> str:
                # reprlib bounds the containers it knows by exact type and calls repr()
                # on everything else - which, for a subclass (OrderedDict, a config) or an
                # object with attributes (Namespace), walks the whole graph through every
                # shared part (exponential for a tuple DAG). Those are shown through the
                # bounded repr of their base container or of their attributes instead.
                t = type(x)
                for base in (dict, list, tuple, set, frozenset):
                    if isinstance(x, base) and t is not base:
                        inner = getattr(self, "repr_" + base.__name__)(x, level)
                        return f"{t.__name__}({inner})"
                if isinstance(x, str) and t is not str:
                    return reprlib.Repr.repr1(self, str.__str__(x), level)
                if isinstance(x, int) and t not in (int, bool):
                    return self.repr_int(int.__int__(x), level)
                attrs = getattr(x, "__dict__", None)
                if type(attrs) is dict and attrs and not isinstance(x, type):
                    if level <= 0:
                        return f"{t.__name__}(...)"
                    items = list(dict.items(attrs))[: self.maxdict]
                    shown = ", ".join(
                        f"{k if isinstance(k, str) else '?'}={self.repr1(v, level - 1)}"
                        for k, v in items
                    )
                    more = ", ..." if len(attrs) > self.maxdict else ""
                    return f"{t.__name__}({shown}{more})"
                return str(reprlib.Repr.repr1(self, x, level))

        r = _Repr()
        r.maxlevel, r.maxstring, r.maxother = 3, 60, 60
        r.maxlist = r.maxtuple = r.maxdict = r.maxset = r.maxfrozenset = 6
        _REPR.append(r)
    return str(_REPR[0].repr(obj))


class KnownGlobal(Frozen):
    """A name from the registry: ``call`` serves REDUCE/INST/OBJ, ``new`` serves NEWOBJ.

    A record with neither is a marker (``builtins.object``, ``torch.Tensor``) that other
    constructors accept as an argument but that cannot be called. ``keys``, for a
    constructor that builds a dict or set, gives the keys it will hash from its
    arguments: the interpreter guards them first (``Context.check_hashable``). ``cost``,
    for a constructor that copies a container or joins strings, gives the bytes it will
    build from its arguments: the interpreter charges them first (``Context.spend``), as
    memo references can hand it one big argument again and again.
    Immutable: every load shares these records.
    """

    __slots__ = ("module", "name", "call", "new", "marker", "keys", "cost")
    module: str
    name: str
    call: Call | None
    new: New | None
    marker: Any  # the real type this marker stands for, where one is safe to expose
    keys: Keys | None
    cost: Cost | None

    def __init__(
        self,
        module: str,
        name: str,
        call: Call | None = None,
        new: New | None = None,
        marker: Any = None,
        keys: Keys | None = None,
        cost: Cost | None = None,
    ) -> None:
        super().__init__(module, name, call, new, marker, keys, cost)

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"

    def __repr__(self) -> str:
        return f"<global {self.module}.{self.name}>"


class PlaceholderType:
    """What ``GLOBAL`` pushes for a name outside the registry (one object per load)."""

    __slots__ = ("module", "name")

    def __init__(self, module: str, name: str) -> None:
        self.module = module
        self.name = name

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"

    def __repr__(self) -> str:
        return f"<unknown global {self.module}.{self.name}>"


class Placeholder:
    """An object of a class ckptpeek does not know, recorded instead of being created.

    Attributes:
        module, name: the class (or function) the file names.
        args, kwargs: the constructor arguments (REDUCE / NEWOBJ / NEWOBJ_EX).
        state: what BUILD would have passed to ``__setstate__`` (or ``None``).
        items: values appended (list subclasses); ``dictitems``: pairs set (dict subclasses).
    """

    __slots__ = ("module", "name", "args", "kwargs", "state", "items", "dictitems", "setitems")

    def __init__(
        self,
        module: str,
        name: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.module = module
        self.name = name
        self.args = args
        self.kwargs = kwargs or {}
        self.state: Any = None
        self.items: list[Any] = []
        self.dictitems: dict[Any, Any] = {}
        self.setitems: list[Any] = []

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"

    # The pickle protocol's container opcodes, recorded rather than performed.
    def append(self, value: Any) -> None:
        self.items.append(value)

    def extend(self, values: list[Any]) -> None:
        self.items.extend(values)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.dictitems[key] = value

    def _ckpt_build(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        parts = [safe_repr(a) for a in self.args[:4]] + (["..."] if len(self.args) > 4 else [])
        return f"<placeholder {self.module}.{self.name}({', '.join(parts)})>"


class AttributeDict(dict["Any", "Any"]):  # quoted: typing is not imported at run time
    """Lightning's ``AttributeDict`` (hyper-parameters): a dict with attribute access."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as exc:
            raise AttributeError(key) from exc


class OmegaDict(dict["Any", "Any"]):
    """An OmegaConf ``DictConfig`` as a plain dict of its node values.

    Interpolations (``${...}``) and missing values (``???``) are kept as their strings;
    resolving them is the catalog's job.
    """

    def _ckpt_build(self, state: Any) -> bool:
        content = dict.get(state, "_content") if isinstance(state, dict) else None
        if isinstance(content, dict):
            for key, node in dict.items(content):
                self[key] = _omega_value(node)
        return _is_root(state)


class OmegaList(list["Any"]):
    """An OmegaConf ``ListConfig`` as a plain list of its node values."""

    def _ckpt_build(self, state: Any) -> bool:
        content = dict.get(state, "_content") if isinstance(state, dict) else None
        if isinstance(content, list):
            self.extend(_omega_value(node) for node in content)
        return _is_root(state)


class OmegaNode:
    """An OmegaConf value node (``AnyNode``, ``StringNode``, ...): holds ``_val``."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: Any = None

    def _ckpt_build(self, state: Any) -> None:
        if isinstance(state, dict):
            self.value = dict.get(state, "_val")

    def __repr__(self) -> str:
        return f"OmegaNode({safe_repr(self.value)})"


class Record:
    """A known-harmless object kept as its state (OmegaConf metadata and the like)."""

    __slots__ = ("qualname", "state")

    def __init__(self, qualname: str) -> None:
        self.qualname = qualname
        self.state: Any = None

    def _ckpt_build(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<{self.qualname}>"


def _is_root(state: Any) -> bool:
    """A config without a parent: its interpolations are resolved when the run is
    complete (``Context.finish``), as every node it may name is built by then (a child
    config pickled before its root is filled after the root's BUILD)."""
    return isinstance(state, dict) and dict.get(state, "_parent") is None


def _omega_value(node: Any) -> Any:
    return node.value if isinstance(node, OmegaNode) else node


def _keys_of(source: Any, pairs: bool) -> Iterable[Any]:
    """The keys a dict or set built from ``source`` hashes: ``pairs`` means (key, value)
    pairs (a dict from a list), a mapping gives its keys, anything else its items."""
    if isinstance(source, dict):
        return list(dict.keys(source))
    if not isinstance(source, (list, tuple, set, frozenset)):
        return ()  # the constructor refuses it, or hashes no file-made object
    if not pairs:
        return source
    keys = []
    for item in source:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise TypeError("expected (key, value) pairs")
        keys.append(item[0])
    return keys


#: what one slot of a container costs when a constructor or a BUILD copies it (a pointer)
SLOT_BYTES: Final = 8


def _size(source: Any) -> int:
    """The slots copied from ``source``: the items of a container (0 for the rest)."""
    return len(source) if isinstance(source, (list, tuple, set, frozenset, dict)) else 0


def _copy_cost(args: tuple[Any, ...]) -> int:
    """``list(L)``, ``dict(d)``, ``OrderedDict(pairs)``, ...: the slots of the first argument."""
    return SLOT_BYTES * _size(args[0]) if args else 0


def _defaultdict_cost(args: tuple[Any, ...]) -> int:
    return SLOT_BYTES * _size(args[1]) if len(args) == 2 else 0


def _reconstructor_cost(args: tuple[Any, ...]) -> int:
    return SLOT_BYTES * _size(args[2]) if len(args) == 3 else 0


def _reconstructor_keys(args: tuple[Any, ...]) -> Iterable[Any]:
    """The keys ``_reconstructor`` copies into a dict it makes (``obj.update(state)``)."""
    return _keys_of(args[2], pairs=False) if len(args) == 3 and isinstance(args[2], dict) else ()


def _path_cost(args: tuple[Any, ...]) -> int:
    """A path joins its parts: the text of all of them (and a separator each)."""
    return sum(len(a) + 1 for a in args if isinstance(a, str))


def build_inputs(obj: Any, state: Any) -> tuple[int, Iterable[Any]]:
    """What a BUILD of ``state`` on ``obj`` copies: (slots, the keys it hashes into
    ``obj``), for ``Context.build`` to charge and guard before ``apply_build`` runs.

    Only configs copy a container out of their state (``_content``); the attribute
    BUILDs take text names, which the key guard passes at once.
    """
    if isinstance(obj, (OmegaDict, OmegaList)) and isinstance(state, dict):
        content = dict.get(state, "_content")
        if isinstance(obj, OmegaDict) and isinstance(content, dict):
            return len(content), list(dict.keys(content))
        if isinstance(obj, OmegaList) and isinstance(content, list):
            return len(content), ()
    return 0, ()


def _pair_keys(args: tuple[Any, ...]) -> Iterable[Any]:
    return _keys_of(args[0], pairs=True) if args else ()


def _item_keys(args: tuple[Any, ...]) -> Iterable[Any]:
    return _keys_of(args[0], pairs=False) if args else ()


def _defaultdict_keys(args: tuple[Any, ...]) -> Iterable[Any]:
    return _keys_of(args[1], pairs=not isinstance(args[1], dict)) if len(args) == 2 else ()


# -- BUILD -------------------------------------------------------------------------------


def _set_attributes(obj: Any, state: Any) -> None:
    """``obj.__dict__.update(state)`` for the few real classes we create, refusing dunders."""
    slotstate = None
    if isinstance(state, tuple) and len(state) == 2:
        state, slotstate = state
    for part in (state, slotstate):
        if part is None:
            continue
        if not isinstance(part, dict):
            raise TypeError(
                f"state of a {type(obj).__name__} must be a dict, not {type(part).__name__}"
            )
        for key, value in dict.items(part):  # never a method a file may have shadowed
            if not isinstance(key, str) or key.startswith("__"):
                raise TypeError(f"refusing to set attribute {safe_repr(key)}")
            setattr(obj, key, value)


def _build_ndarray(arr: Any, state: Any) -> None:
    import numpy as np  # noqa: PLC0415 - numpy only when a file holds numpy objects

    if not (isinstance(state, tuple) and len(state) == 5):
        raise TypeError("ndarray state must be a 5-tuple")
    version, shape, dtype, is_fortran, raw = state
    if not (isinstance(shape, tuple) and all(type(d) is int and d >= 0 for d in shape)):
        raise TypeError("ndarray shape must be a tuple of non-negative ints")
    if not isinstance(dtype, np.dtype):
        raise TypeError("ndarray dtype must be a numpy dtype")
    # the element count, kept small: a long shape of big sizes would make a huge int
    count = 0 if 0 in shape else 1
    cap = (len(raw) + 1) << 64 if isinstance(raw, (bytes, bytearray, list)) else 1 << 64
    for d in shape:
        count *= d
        if count > cap:
            raise TypeError("ndarray shape is larger than its data")
    if dtype.hasobject:
        if not (isinstance(raw, list) and len(raw) == count and dtype.fields is None):
            raise TypeError("object array state must be a list of its elements")
        # numpy frees nested object arrays recursively with no depth guard: a deep
        # chain of them crashes the interpreter. Checkpoints only need flat ones.
        if not all(
            v is None or isinstance(v, (bool, int, float, complex, str, bytes)) for v in raw
        ):
            raise TypeError("object arrays may hold only scalars and strings")
    elif not (isinstance(raw, (bytes, bytearray)) and len(raw) == count * dtype.itemsize):
        raise TypeError(
            f"ndarray data is {len(raw) if isinstance(raw, bytes) else '?'} bytes, "
            f"expected {count * dtype.itemsize}"
        )
    else:
        _check_code_points(raw, dtype)
    # a copy of the descriptor: a later BUILD of the file's dtype (its byte order) must
    # not reinterpret data already checked
    dtype = np.dtype(dtype, False, True)
    arr.__setstate__((version, shape, dtype, bool(is_fortran), raw))


def _check_code_points(raw: Any, dtype: Any) -> None:
    """numpy ``<U``/``>U`` data is UCS-4: a code point past U+10FFFF or a surrogate makes
    numpy fail with SystemError when it turns an element into text. Refused here."""
    if dtype.kind != "U":
        return
    try:
        bytes(raw).decode("utf-32-be" if dtype.str[0] == ">" else "utf-32-le")
    except UnicodeDecodeError:
        raise TypeError(f"numpy {dtype} data holds a code point outside Unicode") from None


def _build_np_dtype(dt: Any, state: Any) -> None:
    # (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
    if not (isinstance(state, tuple) and 8 <= len(state) <= 9 and type(state[0]) is int):
        raise TypeError("numpy dtype state must be an 8- or 9-tuple")
    if state[1] not in ("<", ">", "|", "=") or any(s is not None for s in state[2:5]):
        raise TypeError("only simple (non-structured) numpy dtypes are rebuilt")
    if not all(type(s) is int for s in state[5:8]):
        raise TypeError("numpy dtype sizes must be ints")
    # BUILD may set the byte order, nothing else: arrays made with this descriptor share
    # it, so a new element size, alignment or object flag would make numpy read memory
    # the array does not own
    elsize, alignment, flags = state[5:8]
    if (
        elsize not in (-1, dt.itemsize)
        or alignment not in (-1, dt.alignment)
        or flags not in (0, dt.flags)
    ):
        raise TypeError(f"numpy dtype state changes the size or layout of {dt}")
    dt.__setstate__(state[:8])


#: BUILD for real classes we hand to pickles (our own stand-ins define ``_ckpt_build``),
#: by (module, name) of the type, so that argparse is imported only when a file uses it
BUILDERS: Final[dict[tuple[str, str], Callable[[Any, Any], None]]] = {
    ("collections", "OrderedDict"): _set_attributes,  # state_dict's ``_metadata``
    ("argparse", "Namespace"): _set_attributes,
    (__name__, "AttributeDict"): _set_attributes,
}


def apply_build(obj: Any, state: Any) -> bool:
    """The BUILD opcode: only on objects created for this load, never on shared ones.

    Instance attributes a BUILD sets may shadow the class's methods (``items``, ``get``),
    as they do for torch.load: ckptpeek never calls a method looked up on a file-made
    object. True if ``obj`` is to be finished when the run is complete (a stand-in's
    ``_ckpt_build`` says so: ``Context.defer``).
    """
    builder = BUILDERS.get((type(obj).__module__, type(obj).__qualname__))
    if builder is not None:
        builder(obj, state)
        return False
    method = getattr(type(obj), "_ckpt_build", None)
    if method is not None:
        return method(obj, state) is True
    np = sys.modules.get("numpy")  # numpy objects exist only if a constructor imported it
    if np is not None and isinstance(obj, np.ndarray):
        _build_ndarray(obj, state)
    elif np is not None and isinstance(obj, np.dtype):
        _build_np_dtype(obj, state)
    else:
        raise TypeError(f"BUILD on a {type(obj).__name__} is not allowed")
    return False


# -- constructors -----------------------------------------------------------------------


def _check_items(args: tuple[Any, ...], n: int, name: str) -> None:
    if len(args) > n:
        raise TypeError(f"{name} takes at most {n} argument(s), got {len(args)}")


def _ordered_dict(args: tuple[Any, ...]) -> Any:
    _check_items(args, 1, "OrderedDict")
    return collections.OrderedDict(*args)


def _defaultdict(args: tuple[Any, ...]) -> Any:
    _check_items(args, 2, "defaultdict")
    factory = args[0] if args else None
    if isinstance(factory, KnownGlobal):
        factory = factory.marker if any(factory.marker is f for f in _SAFE_FACTORIES) else None
    elif factory is not None:
        factory = None  # never keep a callable a file chose
    d: collections.defaultdict[Any, Any] = collections.defaultdict(factory)
    if len(args) == 2:
        d.update(args[1])
    return d


def _container(kind: type) -> Call:
    def make(args: tuple[Any, ...]) -> Any:
        _check_items(args, 1, kind.__name__)
        if args and not isinstance(args[0], (list, tuple, set, frozenset, dict, str)):
            raise TypeError(f"{kind.__name__}() from a {type(args[0]).__name__}")
        return kind(*args)

    return make


def _scalar_type(kind: type) -> Call:
    def make(args: tuple[Any, ...]) -> Any:
        _check_items(args, 2, kind.__name__)
        if not all(isinstance(a, (int, float, str, complex)) for a in args):
            raise TypeError(f"{kind.__name__}() arguments must be numbers or strings")
        return kind(*args)

    return make


def _bytes_like(kind: type) -> Call:
    def make(args: tuple[Any, ...]) -> Any:
        _check_items(args, 2, kind.__name__)
        # never bytearray(n): a file could ask for terabytes
        if not args:
            return kind()
        if isinstance(args[0], (bytes, bytearray)) and len(args) == 1:
            return kind(args[0])
        if (
            isinstance(args[0], str)
            and len(args) == 2
            and isinstance(args[1], str)
            and args[1] in _CODECS
        ):
            return kind(args[0], args[1])
        if isinstance(args[0], list) and all(type(i) is int for i in args[0]):
            return kind(args[0])
        raise TypeError(f"{kind.__name__}() from these arguments is not allowed")

    return make


_MAX_NUMPY_ITEMSIZE: Final = 1 << 16  # scalars and array elements a checkpoint stores are small

_CODECS: Final = frozenset({"latin1", "latin-1", "utf-8", "utf8", "ascii", "iso-8859-1"})


def _codecs_encode(args: tuple[Any, ...]) -> bytes:
    if not (1 <= len(args) <= 2 and isinstance(args[0], str)):
        raise TypeError("_codecs.encode(str, encoding) expected")
    encoding = args[1] if len(args) == 2 else "utf-8"
    if not isinstance(encoding, str) or encoding not in _CODECS:
        raise TypeError(f"encoding {encoding!r} is not allowed")
    return args[0].encode(encoding)


def _slice(args: tuple[Any, ...]) -> slice:
    _check_items(args, 3, "slice")
    if not all(a is None or type(a) is int for a in args):
        raise TypeError("slice() takes ints or None")
    return slice(*args)


def _reconstructor(args: tuple[Any, ...]) -> Any:
    """``copyreg._reconstructor(cls, base, state)``: protocol 0/1 objects."""
    if len(args) != 3:
        raise TypeError("_reconstructor takes 3 arguments")
    cls, _base, state = args
    if isinstance(cls, PlaceholderType):
        p = Placeholder(cls.module, cls.name)
        if state is not None:
            p.args = (state,)
        return p
    if isinstance(cls, KnownGlobal) and cls.new is not None:
        obj = cls.new((), {})
        if isinstance(state, dict) and isinstance(obj, dict):
            obj.update(state)
        return obj
    raise TypeError(f"cannot reconstruct a {cls!r}")


def _new_via_call(call: Call) -> New:
    def new(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if kwargs:
            raise TypeError("keyword arguments are not accepted here")
        return call(args)

    return new


def _namespace(args: tuple[Any, ...]) -> argparse.Namespace:
    import argparse  # noqa: PLC0415 - stdlib modules load when a file names them

    _check_items(args, 0, "Namespace")
    return argparse.Namespace()


def _namespace_new(args: tuple[Any, ...], kwargs: dict[str, Any]) -> argparse.Namespace:
    import argparse  # noqa: PLC0415

    ns = argparse.Namespace()
    _set_attributes(ns, kwargs)
    return ns


def _path(name: str) -> Call:
    def make(args: tuple[Any, ...]) -> Any:
        import pathlib  # noqa: PLC0415 - stdlib modules load when a file names them

        if not all(isinstance(a, str) for a in args):
            raise TypeError("path parts must be strings")
        if name == "PosixPath":  # a concrete PosixPath never touches the file system
            kind = pathlib.PosixPath if os.name == "posix" else pathlib.PurePosixPath
        else:
            kind = getattr(pathlib, name)
        return kind(*args)

    return make


def _datetime(name: str) -> Call:
    def make(args: tuple[Any, ...]) -> Any:
        import datetime  # noqa: PLC0415

        _check_items(args, 8, name)
        if not all(
            isinstance(a, (int, float, bytes, str, datetime.tzinfo)) or a is None for a in args
        ):
            raise TypeError(f"{name}() arguments are of the wrong types")
        return getattr(datetime, name)(*args)

    return make


def _timezone(args: tuple[Any, ...]) -> datetime.timezone:
    import datetime  # noqa: PLC0415

    if not (1 <= len(args) <= 2 and isinstance(args[0], datetime.timedelta)):
        raise TypeError("timezone(timedelta[, name]) expected")
    return datetime.timezone(*args)


# numpy: scalars, dtypes and small arrays (Lightning callback state, logged metrics)


def _np_dtype(args: tuple[Any, ...]) -> Any:
    import numpy as np  # noqa: PLC0415

    if not (1 <= len(args) <= 3 and isinstance(args[0], str)):
        raise TypeError("numpy.dtype(str, align, copy) expected")
    spec = args[0]
    if not (len(spec) <= 8 and spec.isascii() and spec[:1].isalpha()):
        raise TypeError(f"numpy dtype {spec!r} is not a simple type code")
    dt = np.dtype(spec, False, True)  # copy=True: a fresh descriptor this file may BUILD
    if dt.itemsize > _MAX_NUMPY_ITEMSIZE:
        raise TypeError(f"numpy dtype {spec!r} has {dt.itemsize}-byte elements")
    return dt


def _np_scalar(args: tuple[Any, ...]) -> Any:
    import numpy as np  # noqa: PLC0415

    if not (len(args) in (1, 2) and isinstance(args[0], np.dtype)):
        raise TypeError("numpy scalar(dtype, data) expected")
    dtype = args[0]
    if len(args) != 2:
        raise TypeError("numpy scalar without its data")
    if dtype.hasobject:
        return args[1]
    data = args[1]
    if isinstance(data, str):
        data = data.encode("latin1")
    if not isinstance(data, (bytes, bytearray)) or len(data) != dtype.itemsize:
        raise TypeError(f"numpy scalar of {dtype} needs {dtype.itemsize} bytes")
    _check_code_points(data, dtype)
    return np.frombuffer(bytes(data), dtype=dtype)[0]


def _np_reconstruct(args: tuple[Any, ...]) -> Any:
    import numpy as np  # noqa: PLC0415

    if len(args) != 3:
        raise TypeError("_reconstruct(subtype, shape, dtype) expected")
    subtype = args[0]
    if isinstance(subtype, PlaceholderType):  # np.matrix, masked arrays, ...
        return Placeholder(subtype.module, subtype.name, args[1:])
    if not (isinstance(subtype, KnownGlobal) and subtype.qualname == "numpy.ndarray"):
        raise TypeError("_reconstruct of something other than numpy.ndarray")
    return np.ndarray((0,), dtype="b")


def _np_frombuffer(args: tuple[Any, ...]) -> Any:
    import numpy as np  # noqa: PLC0415

    if len(args) != 4:
        raise TypeError("_frombuffer(buf, dtype, shape, order) expected")
    buf, dtype, shape, order = args
    if not (
        isinstance(buf, (bytes, bytearray))
        and isinstance(dtype, np.dtype)
        and not dtype.hasobject
        and isinstance(shape, tuple)
        and order in ("C", "F")
    ):
        raise TypeError("_frombuffer arguments are of the wrong types")
    _check_code_points(buf, dtype)
    dtype = np.dtype(dtype, False, True)  # see _build_ndarray
    return np.frombuffer(bytes(buf), dtype=dtype).reshape(shape, order=order)


_SAFE_FACTORIES: Final = (dict, list, set, int, float, str, tuple, bytes, None)

_g = KnownGlobal


def _simple(
    module: str,
    name: str,
    call: Call,
    new: New | None = None,
    keys: Keys | None = None,
    cost: Cost | None = None,
) -> KnownGlobal:
    return _g(module, name, call=call, new=new or _new_via_call(call), keys=keys, cost=cost)


def _record_maker(qualname: str) -> Callable[[], Record]:
    def make() -> Record:
        return Record(qualname)

    return make


def _cls(module: str, name: str, make: Callable[[], Any]) -> KnownGlobal:
    """A class whose instances are built by NEWOBJ and filled by BUILD/SETITEMS."""

    def call(args: tuple[Any, ...]) -> Any:
        if args:
            raise TypeError(f"{name}() takes no arguments here")
        return make()

    return _g(module, name, call=call, new=lambda args, kwargs: make())


def _typ(
    kind: type, call: Call | None, keys: Keys | None = None, cost: Cost | None = None
) -> KnownGlobal:
    return _g(
        "builtins",
        kind.__name__,
        call=call,
        new=_new_via_call(call) if call else None,
        marker=kind,
        keys=keys,
        cost=cost,
    )


def _stdlib_globals() -> dict[tuple[str, str], KnownGlobal]:
    out: list[KnownGlobal] = [
        _simple("collections", "OrderedDict", _ordered_dict, keys=_pair_keys, cost=_copy_cost),
        _simple(
            "collections",
            "defaultdict",
            _defaultdict,
            keys=_defaultdict_keys,
            cost=_defaultdict_cost,
        ),
        _typ(dict, _container(dict), keys=_pair_keys, cost=_copy_cost),
        _typ(list, _container(list), cost=_copy_cost),
        _typ(tuple, _container(tuple), cost=_copy_cost),
        _typ(set, _container(set), keys=_item_keys, cost=_copy_cost),
        _typ(frozenset, _container(frozenset), keys=_item_keys, cost=_copy_cost),
        _typ(int, _scalar_type(int)),
        _typ(float, _scalar_type(float)),
        _typ(complex, _scalar_type(complex)),
        _typ(bool, _scalar_type(bool)),
        _typ(str, _scalar_type(str)),
        _typ(bytes, _bytes_like(bytes)),
        _typ(bytearray, _bytes_like(bytearray)),
        _typ(object, None),
        _typ(type(None), None),
        _simple("builtins", "slice", _slice),
        _simple("_codecs", "encode", _codecs_encode),
        _simple(
            "copyreg",
            "_reconstructor",
            _reconstructor,
            keys=_reconstructor_keys,
            cost=_reconstructor_cost,
        ),
        _g("argparse", "Namespace", call=_namespace, new=_namespace_new),
        # a concrete PosixPath never touches the file system until asked to
        _simple("pathlib", "PosixPath", _path("PosixPath"), cost=_path_cost),
        _simple("pathlib", "PurePosixPath", _path("PurePosixPath"), cost=_path_cost),
        _simple("pathlib", "WindowsPath", _path("PureWindowsPath"), cost=_path_cost),
        _simple("pathlib", "PureWindowsPath", _path("PureWindowsPath"), cost=_path_cost),
        _simple("pathlib", "Path", _path("PurePath"), cost=_path_cost),
        _simple("datetime", "datetime", _datetime("datetime")),
        _simple("datetime", "date", _datetime("date")),
        _simple("datetime", "time", _datetime("time")),
        _simple("datetime", "timedelta", _datetime("timedelta")),
        _simple("datetime", "timezone", _timezone),
        _g("typing", "Any"),  # a marker: OmegaConf metadata names it as a type
    ]
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out.append(_simple(mod, "scalar", _np_scalar))
        out.append(_simple(mod, "_reconstruct", _np_reconstruct))
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        out.append(_simple(mod, "_frombuffer", _np_frombuffer))
    out.append(_simple("numpy", "dtype", _np_dtype))
    out.append(_g("numpy", "ndarray"))  # a marker: only _reconstruct accepts it
    for mod in (
        "lightning.fabric.utilities.data",
        "lightning_fabric.utilities.data",
        "lightning.pytorch.utilities.parsing",
        "pytorch_lightning.utilities.parsing",
    ):
        out.append(_cls(mod, "AttributeDict", AttributeDict))
    out += [
        _cls("omegaconf.dictconfig", "DictConfig", OmegaDict),
        _cls("omegaconf.listconfig", "ListConfig", OmegaList),
        *(
            _cls("omegaconf.nodes", n, OmegaNode)
            for n in (
                "AnyNode",
                "StringNode",
                "IntegerNode",
                "FloatNode",
                "BooleanNode",
                "EnumNode",
                "BytesNode",
                "PathNode",
                "InterpolationResultNode",
                "ValueNode",
            )
        ),
        *(
            _cls("omegaconf.base", n, _record_maker(f"omegaconf.base.{n}"))
            for n in ("Metadata", "ContainerMetadata")
        ),
    ]
    return {(g.module, g.name): g for g in out}


STDLIB_GLOBALS: Final = _stdlib_globals()
