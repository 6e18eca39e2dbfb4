"""``torch.load`` as the last resort: the only module that imports torch.

``open(path, fallback="torch")`` (the default of ``load_checkpoint`` when torch is
installed) comes here only after the inspector raised an ``UnsupportedError`` whose code
``FALLBACK`` lets fall back - never for corrupt input (``FormatError``), unsafe input
(``UnsafePickleError``), a tripped limit, or a refusal made for safety.

Before torch runs, a pre-flight decodes every pickle ``torch.load`` would run (the
opcodes, with ``pickletools.genops``; nothing is built) and holds them to ckptpeek's own
bounds: the pickle size, memo entries, open MARKs, the dict keys and set members torch
would hash (THE key guard, ``unpickle.keys.KeyGuard``, on stand-ins of the keys: their
size, nesting and hash collisions), the bytes constructors copy from the pickle, and no
call of a constructor that allocates from a number in the file (``bytearray(n)``, a
tensor, storage or array of a given size; torch's ``weights_only`` unpickler allows
``bytearray``) or storages larger than the file. Then it runs
``torch.load(path, mmap=False, weights_only=True, map_location="cpu")``;
``weights_only=False``, which executes the pickle, only with ``trust=True``.

Never ``mmap=True``: a mapping of the user's file would outlive every size check, and a
file truncated after the load would kill the process (SIGBUS) when a tensor is read.
torch reads the storages into memory instead, at load: they cost as much memory as they
have bytes, which the pre-flight holds to the file's size (the storages the persistent
ids claim, and the records torch would read for them). The result is converted to the
usual ``Checkpoint``/``TensorRef`` interface in one bounded walk that visits each shared
object once and keeps the sharing torch gives (``Checkpoint.backend == "torch"``); dense
tensors keep their (in-memory) storages and ``numpy()`` reads them; other tensor layouts
stay torch tensors.
"""

from __future__ import annotations

import os
import pickletools
import sys

from ckptpeek.io.sniff import sniff
from ckptpeek.io.source import ByteSource, open_regular
from ckptpeek.io.zipdir import ZipDirectory, read_directory
from ckptpeek.unpickle.context import BUILT_BYTES_FACTOR, BUILT_BYTES_SLACK
from ckptpeek.unpickle.keys import KeyGuard
from ckptpeek.unpickle.messages import marks_full, memo_full

from .checkpoint import Checkpoint
from .errors import CheckpointError, UnsupportedError, error
from .formats.torch_zip import find_prefix, is_torchscript, read_pickle_member
from .tensor import StorageRef, TensorRef
from .torch_types import DTYPE_ATTRS, DTYPES, STORAGE_TYPES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import Any, Final

    from ckptpeek.limits import Limits

__all__ = ("FALLBACK", "falls_back", "load_with_torch", "preflight", "torch_available")

#: every ``UnsupportedError`` code, and whether ``fallback="torch"`` may run torch.load
#: after it (``True``: a format or feature ckptpeek does not read, which torch's reader
#: may) or not (the reason: a refusal made for safety stays a refusal). A code missing
#: here never falls back; ``tests/test_fallback_limits.py`` fails until it is listed.
FALLBACK: Final[dict[str, bool | str]] = {
    "protocol-too-new": True,
    "unsupported-opcode": True,
    "zip-compression": True,
    "zip-multidisk": True,
    "st-unknown-dtype": True,
    "dcp-item-format": True,
    "dcp-transform": True,
    "dcp-partial-tensor": True,
    "no-storage": True,
    "not-dense": True,
    "unsupported-dtype": True,
    "needs-ml-dtypes": True,
    "numpy-too-large": True,
    "st-shape-overflow": True,
    "zip-encrypted": "an encryption flag is one of the ways to give readers different views",
    "not-regular-file": "torch.load would block on a FIFO or read a device without end",
    "needs-path": "a sharded index opened as a file object: torch.load reads no index",
    "source-closed": "raised by a tensor read after the checkpoint was closed, not by open",
    "torch-refused": "torch.load already refused the file",
    "fallback-unchecked": "the fallback's own refusal",
}


def falls_back(exc: CheckpointError) -> bool:
    """Whether ``fallback="torch"`` may hand the file ``exc`` was raised for to torch."""
    return isinstance(exc, UnsupportedError) and FALLBACK.get(exc.code) is True


def torch_available() -> bool:
    """Whether torch can be imported (checked without importing it)."""
    import importlib.util  # noqa: PLC0415

    if "torch" in sys.modules:
        return sys.modules["torch"] is not None  # None: imports of torch are blocked
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


# -- the pre-flight: every pickle torch.load would run, decoded, never built --------

#: constructors that allocate as much memory as a number in their arguments says
_ALLOCATORS: Final = frozenset(
    {
        ("builtins", "bytearray"), ("builtins", "bytes"), ("__builtin__", "bytearray"),
        ("builtins", "memoryview"), ("array", "array"),
        ("numpy", "ndarray"), ("numpy", "zeros"), ("numpy", "empty"), ("numpy", "ones"),
        ("numpy", "full"), ("numpy", "arange"), ("numpy", "memmap"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("torch", "empty"), ("torch", "zeros"), ("torch", "ones"), ("torch", "full"),
        ("torch", "rand"), ("torch", "randn"), ("torch", "arange"), ("torch", "eye"),
    }
)  # fmt: skip
#: torch's ``_rebuild_from_type_v2(func, new_type, args, state)`` calls ``func(*args)``
_CALLS_ITS_ARGUMENT: Final = ("torch._tensor", "_rebuild_from_type_v2")
#: opcodes that push a number, and those that push text (str or bytes) from the pickle
_INTS: Final = frozenset({"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"})
_TEXTS: Final = frozenset(
    {"STRING", "BINSTRING", "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
     "BYTEARRAY8", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"}
)  # fmt: skip
#: opcodes that push a value the pre-flight knows whole (hashable: it may be a key)
_CONSTANTS: Final = frozenset({"NONE", "NEWTRUE", "NEWFALSE", "FLOAT", "BINFLOAT"})
_NAME_CHARS: Final = 256  # text up to this long is kept (a global's module or name)
_LEGACY_PICKLES: Final = 5  # magic number, protocol, sys_info, the object, storage keys
#: torch's tensor rebuild functions (``torch._utils``, all allowed by ``weights_only``) and
#: what each does with memory: ``view`` - ``set_`` a tensor onto a storage, which grows a
#: storage too small for the tensor's extent; ``qview`` - the same after allocating the
#: quantized tensor's ``size`` (``_empty_affine_quantized``); ``copy`` - ``data.to(dtype)``;
#: ``sparse``/``nested`` - a tensor of the component tensors (validated, walked, densified
#: from them); ``meta`` - sizes with no data; ``same`` - the tensor it is given
_REBUILDS: Final = {
    ("torch._utils", "_rebuild_tensor"): "view",
    ("torch._utils", "_rebuild_tensor_v2"): "view",
    ("torch._utils", "_rebuild_tensor_v3"): "view",
    ("torch._utils", "_rebuild_qtensor"): "qview",
    ("torch._utils", "_rebuild_device_tensor_from_cpu_tensor"): "copy",
    ("torch._utils", "_rebuild_device_tensor_from_numpy"): "copy",
    ("torch._utils", "_rebuild_xla_tensor"): "copy",
    ("torch._utils", "_rebuild_sparse_tensor"): "sparse",
    ("torch._utils", "_rebuild_nested_tensor"): "nested",
    ("torch._utils", "_rebuild_meta_tensor_no_storage"): "meta",
    ("torch._utils", "_rebuild_wrapper_subclass"): "meta",
    ("torch._utils", "_rebuild_parameter"): "same",
    ("torch._utils", "_rebuild_parameter_with_state"): "same",
    ("torch.nn.parameter", "Parameter"): "same",
    ("torch.serialization", "_get_layout"): "layout",
}
#: the component tensors of a sparse tensor's data tuple, by layout
_SPARSE_TENSORS: Final = {
    "sparse_coo": 2, "sparse_csr": 3, "sparse_csc": 3, "sparse_bsr": 3, "sparse_bsc": 3
}  # fmt: skip
_INT64: Final = 1 << 63  # sizes, strides and offsets torch can hold are below this
#: records torch reads whole besides the pickles and storages (``PyTorchStreamReader``'s
#: version and serialization id, ``torch.serialization._load``'s); torch writes at most
#: 40 bytes in any of them
_SMALL_RECORDS: Final = (
    "version", ".data/version", ".format_version", "byteorder", ".storage_alignment",
    ".data/serialization_id",
)  # fmt: skip
_SMALL_RECORD_BYTES: Final = 4096
#: DEFLATE expands: the declared sizes of all members together may pass the file's by this
_INFLATE_SLACK: Final = 16 << 20


def _is_allocator(module: str, name: str) -> bool:
    """``bytearray(n)``, ``numpy.zeros(n)``, ``torch.FloatTensor(n)``, ``torch.UntypedStorage(n)``, ..."""
    if (module, name) in _ALLOCATORS:
        return True
    return module.split(".")[0] == "torch" and name.endswith(("Tensor", "Storage"))


class _Known:
    """What the pre-flight knows of one value of the pickle: its kind (``global``,
    ``int``, ``const`` - None, a bool or a float -, ``text``, ``tuple`` or ``other``),
    the name, number or short text, a text's size and a tuple's items.

    Each opcode that makes an object makes a new ``_Known`` (a memo GET returns the one
    PUT), so the identity of a ``_Known`` is the identity of the object torch would
    build: the key guard tells containers apart by it.
    """

    __slots__ = ("kind", "value", "size", "items", "standin")
    kind: str
    value: Any
    size: int
    items: tuple[_Known, ...]
    standin: Any  # what the key guard measures for this value (``_standin``), once made

    def __init__(
        self, kind: str, value: Any = None, size: int = 0, items: tuple[_Known, ...] = ()
    ) -> None:
        self.kind = kind
        self.value = value
        self.size = size
        self.items = items
        self.standin = _UNMADE


_UNMADE: Final[Any] = object()


def _standin(known: _Known) -> Any:
    """A hashable object that costs the key guard what the value torch builds costs:
    the int, float, bool, None or short text itself, a tuple of stand-ins (shared where
    the pickle shares it, so hashing it walks the same parts), and for anything else -
    long text, an object of a call, a list - a fresh ``object()``, which collides with
    nothing. Built iteratively, each ``_Known`` once."""
    todo = [known]
    while todo:
        k = todo[-1]
        if k.standin is not _UNMADE:
            todo.pop()
        elif k.kind == "tuple":
            pending = [i for i in k.items if i.standin is _UNMADE]
            if pending:
                todo.extend(pending)
            else:
                k.standin = tuple(i.standin for i in k.items)
                todo.pop()
        else:
            short = k.kind in ("int", "const") or (k.kind == "text" and k.value is not None)
            k.standin = k.value if short else object()
            todo.pop()
    return known.standin


def _int(k: _Known) -> int | None:
    """A size, stride or offset: an int of the pickle that torch can hold, else ``None``."""
    return k.value if k.kind == "int" and 0 <= k.value < _INT64 else None


def _ints(k: _Known) -> tuple[int, ...] | None:
    if k.kind != "tuple":
        return None
    ints = []
    for i in k.items:
        v = _int(i)
        if v is None:
            return None
        ints.append(v)
    return tuple(ints)


def _dtype_size(k: _Known) -> int | None:
    """The element size of a dtype named by its global (``torch.float64``)."""
    dtype = DTYPE_ATTRS.get(k.value[1]) if k.kind == "global" and k.value[0] == "torch" else None
    return dtype.itemsize if dtype is not None else None


class _Preflight:
    """Follows the opcodes of the pickles of one file on a stack of ``_Known`` values."""

    def __init__(self, limits: Limits, path: str | None, file_size: int) -> None:
        self.limits = limits
        self.path = path
        self.file_size = file_size
        self.storage_bytes: dict[Any, int] = {}  # storage key -> bytes torch allocates
        self.storage_total = 0  # their sum
        #: the bytes of the record torch reads for a storage key (a ZIP's ``data/<key>``)
        self.record_bytes: Callable[[str], int] = lambda key: 0
        self.claims: dict[tuple[str | None, Any], int] = {}  # storage -> its fewest bytes
        self.directory: ZipDirectory | None = None  # a ZIP's records, for ``_storage``
        #: (sizes, strides) -> both, and their numel and span (``_shape``)
        self.shapes: dict[tuple[int, int], tuple[_Known, _Known, tuple[int, int] | None]] = {}
        self.member: str | None = None
        self.pos = 0

    def _error(self, code: str, msg: str) -> CheckpointError:
        return error(
            code,
            f"fallback='torch' refused before torch.load ran: {msg}",
            path=self.path,
            member=self.member,
            offset=self.pos,
        )

    def _refused(self, exc: CheckpointError) -> CheckpointError:
        """A shared guard's error (worded by the interpreter), said of the pre-flight."""
        return self._error(exc.code, exc.msg)

    def run(self, ops: Iterator[tuple[Any, Any, int | None]], size: int, member: str | None) -> int:
        """Check one pickle of ``size`` bytes; returns the offset after its ``STOP``
        (or where it stopped decoding: torch's unpickler stops there too)."""
        self.member = member
        limits = self.limits
        keys = KeyGuard(limits)  # the key guard of this pickle (the interpreter's own)
        stack: list[_Known] = []
        marks: list[list[_Known]] = []
        memo: dict[Any, _Known] = {}
        budget = BUILT_BYTES_SLACK + BUILT_BYTES_FACTOR * size
        end = 0

        def hashed(members: Iterable[_Known], container: _Known) -> None:
            """Dict keys or set members about to be inserted into ``container``."""
            for key in members:
                try:
                    keys.check(_standin(key), container)
                except CheckpointError as exc:
                    raise self._refused(exc) from None

        try:
            for op, arg, pos in ops:
                self.pos = pos or 0
                name = op.name
                end = self.pos + 1
                if name in _INTS:
                    stack.append(_Known("int", int(arg)))
                elif name in _TEXTS:
                    short = arg if len(arg) <= _NAME_CHARS else None
                    stack.append(_Known("text", short, size=len(arg)))
                elif name in _CONSTANTS:
                    value = {"NEWTRUE": True, "NEWFALSE": False}.get(name, arg)
                    stack.append(_Known("const", value))
                elif name == "EMPTY_TUPLE":
                    stack.append(_Known("tuple"))
                elif name in ("GLOBAL", "INST"):
                    module, _, gname = str(arg).partition(" ")
                    g = _Known("global", (module, gname))
                    if name == "GLOBAL":
                        stack.append(g)
                    else:
                        made = self._call(g, _Known("tuple", items=tuple(stack)), budget)
                        budget -= made.size
                        stack = marks.pop()
                        stack.append(made)
                elif name == "STACK_GLOBAL":
                    gname_k, module_k = stack.pop(), stack.pop()
                    named = module_k.kind == gname_k.kind == "text"
                    value = (str(module_k.value), str(gname_k.value)) if named else ("?", "?")
                    stack.append(_Known("global", value))
                elif name == "MARK":
                    if len(marks) >= limits.max_marks:
                        raise self._refused(marks_full(limits.max_marks, self.pos))
                    marks.append(stack)
                    stack = []
                elif name in ("TUPLE", "LIST", "DICT", "FROZENSET", "APPENDS", "SETITEMS",
                              "ADDITEMS", "POP_MARK", "OBJ"):  # fmt: skip
                    items = tuple(stack)
                    stack = marks.pop()
                    if name in ("TUPLE", "LIST", "DICT", "FROZENSET"):
                        made = _Known("tuple" if name == "TUPLE" else "other", items=items)
                        if name == "DICT":
                            hashed(items[::2], made)
                        elif name == "FROZENSET":
                            hashed(items, made)
                        stack.append(made)
                    elif name == "SETITEMS":
                        hashed(items[::2], stack[-1])
                    elif name == "ADDITEMS":
                        hashed(items, stack[-1])
                    elif name == "OBJ":
                        made = self._call(items[0], _Known("tuple", items=items[1:]), budget)
                        budget -= made.size
                        stack.append(made)
                elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                    n = int(name[-1])
                    items = tuple(stack[-n:]) if len(stack) >= n else ()
                    del stack[-n:]
                    stack.append(_Known("tuple", items=items))
                elif name in ("POP", "APPEND", "BUILD"):
                    if stack:
                        stack.pop()
                    elif name == "POP" and marks:
                        stack = marks.pop()
                elif name == "DUP":
                    stack.append(stack[-1])
                elif name == "SETITEM":
                    stack.pop()
                    key = stack.pop()
                    hashed((key,), stack[-1])
                elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                    idx = len(memo) if name == "MEMOIZE" else arg
                    # the interpreter's rule (entries), and CPython's unpickler (trust=True)
                    # allocates its memo as an array as long as the largest index
                    if idx not in memo and (len(memo) >= limits.max_memo or idx >= limits.max_memo):
                        raise self._refused(memo_full(limits.max_memo, self.pos))
                    memo[idx] = stack[-1]
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    stack.append(memo[arg] if arg in memo else _Known("other"))
                elif name == "REDUCE":
                    args = stack.pop()
                    made = self._call(stack[-1], args, budget)
                    budget -= made.size
                    stack[-1] = made
                elif name in ("NEWOBJ", "NEWOBJ_EX"):
                    if name == "NEWOBJ_EX":
                        stack.pop()  # the keyword arguments
                    args = stack.pop()
                    made = self._call(stack.pop(), args, budget)
                    budget -= made.size
                    stack.append(made)
                elif name == "BINPERSID":
                    pid = stack.pop()
                    self._persistent_id(pid)
                    stack.append(self._storage(pid))
                elif name == "STOP":
                    return end
                elif name not in ("PROTO", "FRAME", "READONLY_BUFFER"):  # nothing to follow
                    stack.append(_Known("other"))  # EMPTY_*, PERSID, EXT*, NEXT_BUFFER
        except IndexError:  # an opcode pops more than the stack holds: torch stops here
            return end
        except (ValueError, KeyError, TypeError, OverflowError, UnicodeError):
            return end  # the bytes stop decoding: so does torch's unpickler
        return end

    def _call(self, fn: _Known, arguments: _Known, budget: int) -> _Known:
        """Check one call of ``fn`` with the tuple ``arguments`` (anything else is an
        argument list the pre-flight cannot see into). What it returns is text of the
        size it copies from its text arguments (``bytearray(_codecs.encode(s, "latin1"))``
        is how protocol 2 pickles a bytearray), or another value."""
        args = arguments.items if arguments.kind == "tuple" else (arguments,)
        if fn.kind == "global" and fn.value == _CALLS_ITS_ARGUMENT and len(args) >= 3:
            return self._call(args[0], args[2], budget)
        if fn.kind == "global" and fn.value in _REBUILDS:
            return self._rebuild(fn.value, args, budget)
        copied = sum(a.size for a in args if a.kind == "text")
        if copied > budget:
            raise self._error(
                "limit-built-bytes",
                f"constructors would copy more data than a pickle of this size may "
                f"({BUILT_BYTES_FACTOR}x its bytes + {BUILT_BYTES_SLACK >> 20} MiB)",
            )
        if fn.kind == "global" and _is_allocator(*fn.value):
            todo = list(args)
            while todo:
                a = todo.pop()
                if a.kind == "tuple":
                    todo.extend(a.items)
                elif not (a.kind in ("text", "global") or (a.kind == "int" and a.value <= 0)):
                    module, name = fn.value
                    raise self._error(
                        "fallback-allocation",
                        f"the pickle calls {module}.{name} with a size, which torch.load "
                        f"would allocate",
                    )
        return _Known("text", size=copied) if copied else _Known("other")

    def _persistent_id(self, pid: _Known) -> None:
        """``("storage", type, key, location, numel, ...)``: torch allocates the storage,
        as large as the pid says or, in a ZIP, as its record ``data/<key>``; the
        storages together must fit in the file."""
        items = pid.items
        if pid.kind != "tuple" or len(items) < 5 or items[4].kind != "int":
            return
        storage_type = items[1].value if items[1].kind == "global" else None
        known = STORAGE_TYPES.get(storage_type[1]) if storage_type else None
        itemsize = known.dtype.itemsize if known is not None else 16  # the largest dtype
        named = items[2].kind == "text" and items[2].value
        key = str(items[2].value) if named else id(items[2])
        claimed = max(0, items[4].value) * itemsize
        record = self.record_bytes(key) if isinstance(key, str) else 0
        size = max(claimed, record)
        self.storage_total += size - self.storage_bytes.get(key, 0)
        self.storage_bytes[key] = size
        if self.storage_total > self.file_size:
            raise self._error(
                "fallback-allocation",
                f"persistent ids claim {self.storage_total} bytes of storages in a file of "
                f"{self.file_size}: torch.load would allocate them",
            )

    # -- tensor rebuilds: what torch's rebuild functions allocate, from what the pickle says

    def _unchecked(self, what: str) -> CheckpointError:
        """A refusal where the pre-flight would have to guess (a size computed by a call)."""
        return self._error(
            "fallback-allocation",
            f"{what} cannot be checked before torch.load allocates for it (torch.save "
            f"writes it as numbers in the pickle)",
        )

    def _storage(self, pid: _Known) -> _Known:
        """The storage a persistent id ``("storage", type, key, location, numel[, view])``
        names: its element size, and as ``size`` the bytes torch gives it - the fewest any
        id of its key claims (torch keeps the storage of the first). The record torch
        reads whole for it (a ZIP's ``data/<key>``) may not declare more bytes."""
        items = pid.items
        is_storage = pid.kind == "tuple" and len(items) >= 5 and items[0].value == "storage"
        if not is_storage:
            return _Known("other")  # torch's persistent_load refuses it, or a legacy module
        numel = _int(items[4])
        if numel is None:
            raise self._unchecked("a storage's element count in its persistent id")
        storage_type = items[1].value if items[1].kind == "global" else ("?", "?")
        known = STORAGE_TYPES.get(storage_type[1])
        itemsize = known.dtype.itemsize if known is not None else 16  # the largest dtype
        claimed = numel * itemsize
        key = items[2].value if items[2].kind == "text" else None
        if key is not None and self.directory is not None and self.member is not None:
            # data.pkl's storages are data/<key>, TorchScript's constants.pkl's constants/<key>
            found = self.directory.get(f"{self.member.removesuffix('.pkl')}/{key}")
            record = 0 if found is None else found.size
            if record > claimed:
                raise self._error(
                    "limit-member-size",
                    f"the record of storage {str(key)!r} declares {record} bytes, more than "
                    f"the {claimed} its persistent id claims: torch.load would inflate it whole",
                )
        view = items[5] if len(items) > 5 else _Known("const")
        if view.kind != "const" or view.value is not None:  # a legacy view: its own storage
            parts = view.items if view.kind == "tuple" and len(view.items) == 3 else None
            start, length = (_int(parts[1]), _int(parts[2])) if parts else (None, None)
            if parts is None or start is None or length is None or parts[0].kind != "text":
                raise self._unchecked("a storage view's key, offset or size in its persistent id")
            claimed = min(length, max(0, numel - start)) * itemsize
            key = parts[0].value
        if key is not None:
            scoped = (self.member, key)
            claimed = min(claimed, self.claims.get(scoped, claimed))
            self.claims[scoped] = claimed
        return _Known("storage", itemsize, size=claimed)

    def _rebuild(self, fn: tuple[str, str], args: tuple[_Known, ...], budget: int) -> _Known:
        """One call of a tensor rebuild function (``_REBUILDS``). What it returns is the
        tensor, as ``(numel, itemsize)`` (numel ``None`` where unknown), with ``size`` the
        bytes the call builds, which the pickle and the storages it names pay for as they
        pay for text (4x their bytes + 16 MiB): torch.save's tensors cost at most their
        storages; a stride-0 view copied, a storage rebuilt N times, cost what they say."""
        how = _REBUILDS[fn]
        what = f"{fn[0]}.{fn[1]}"
        a: tuple[_Known, ...] = (*args, *(_Known("other"),) * 8)  # torch: TypeError
        if how == "layout":  # _get_layout("torch.sparse_coo"): the layout named
            named = a[0].kind == "text" and a[0].value is not None
            if not named:
                return _Known("other")
            return _Known("global", ("torch", str(a[0].value).removeprefix("torch.")))
        if how == "same":
            return _Known("tensor", a[0].value) if a[0].kind == "tensor" else _Known("other")
        if how == "meta":  # (dtype, size, stride, ...) / (cls, dtype, size, stride, ...)
            dtype, size, stride = a[0:3] if fn[1].endswith("no_storage") else a[1:4]
            shape = self._shape(size, stride)
            return _Known("tensor", (shape and shape[0], _dtype_size(dtype) or 16))
        if how in ("view", "qview"):
            storage, offset, size, stride = a[0:4]
            if fn[1] == "_rebuild_tensor_v3":
                itemsize = _dtype_size(a[6]) or 16
            else:
                itemsize = storage.value if storage.kind == "storage" else 16
            numel = self._extent(what, storage, offset, size, stride, itemsize)
            charge = numel * itemsize if how == "qview" else 0
            return self._made(what, numel, itemsize, charge, budget)
        if how == "copy":  # data.to(dtype): a new tensor of data's elements
            data = a[0]
            if data.kind != "tensor" or data.value[0] is None:
                raise self._unchecked(f"the tensor {what} copies")
            itemsize = _dtype_size(a[1]) or 16
            return self._made(what, data.value[0], itemsize, data.value[0] * itemsize, budget)
        if how == "sparse":  # (layout, (indices, values, size[, coalesced])) or compressed
            layout, data = a[0], a[1]
            n = _SPARSE_TENSORS.get(layout.value[1]) if layout.kind == "global" else None
            parts = data.items if data.kind == "tuple" and n is not None else ()
            return self._made(what, None, 0, self._components(what, parts[:n], n or 1), budget)
        return self._made(what, None, 0, self._components(what, a[:4], 4), budget)  # nested

    def _components(self, what: str, parts: tuple[_Known, ...], n: int) -> int:
        """The bytes of the ``n`` tensors a sparse or nested tensor is made of."""
        if len(parts) < n or any(p.kind != "tensor" or p.value[0] is None for p in parts):
            raise self._unchecked(f"the component tensors of {what}")
        return sum(p.value[0] * p.value[1] for p in parts)

    def _made(
        self, what: str, numel: int | None, itemsize: int, charge: int, budget: int
    ) -> _Known:
        available = budget + BUILT_BYTES_FACTOR * self.storage_total
        if charge > available:
            raise self._error(
                "fallback-allocation",
                f"{what} would build {charge} bytes of tensor data, more than the pickle and "
                f"the storages it names may ({BUILT_BYTES_FACTOR}x their bytes + "
                f"{BUILT_BYTES_SLACK >> 20} MiB): torch.load would allocate them",
            )
        return _Known("tensor", (numel, itemsize), size=charge)

    def _extent(
        self, what: str, storage: _Known, offset: _Known, size: _Known, stride: _Known, item: int
    ) -> int:
        """The element count of a tensor ``set_`` onto ``storage``, which must be a storage
        of the file holding the tensor's extent (``offset + sum((size-1)*stride) + 1``
        elements; an empty tensor may have any): torch grows a storage that is smaller."""
        start, shape = _int(offset), self._shape(size, stride)
        if start is None or shape is None:
            raise self._unchecked(f"the offset, sizes or strides of {what}")
        numel, span = shape
        if numel == 0:
            return 0
        need = (start + span + 1) * item
        if storage.kind != "storage":
            raise self._error(
                "fallback-allocation",
                f"{what} views a storage that no persistent id names (one the pickle "
                f"constructs): torch would grow it to the tensor's {need} bytes",
            )
        if need > storage.size:
            raise self._error(
                "fallback-allocation",
                f"{what} reaches {need} bytes into a storage of {storage.size}: torch "
                f"would grow the storage to hold it",
            )
        return numel

    def _shape(self, size: _Known, stride: _Known) -> tuple[int, int] | None:
        """``(numel, sum((size-1)*stride))`` of tuples of ints below 2**63 (numel
        saturated there), ``None`` for anything else; each pair once, so a memoised
        100,000-dimension shape rebuilt 100,000 times costs one walk."""
        key = (id(size), id(stride))
        hit = self.shapes.get(key)
        if hit is not None:
            return hit[2]
        dims, steps = _ints(size), _ints(stride)
        shape = None
        if dims is not None and steps is not None and len(dims) == len(steps):
            numel = 1
            for d in dims:
                numel = min(numel * d, _INT64)
            span = sum((d - 1) * s for d, s in zip(dims, steps, strict=True)) if numel else 0
            shape = (numel, span)
        self.shapes[key] = (size, stride, shape)  # keeps both alive: their ids stay theirs
        return shape


class _Stream:
    """A file read from ``start`` as ``pickletools.genops`` reads it (``read``,
    ``readline``, ``tell``), at most ``limit`` bytes: legacy files are pickles one after
    the other, then storage bytes, so nothing tells in advance where a pickle ends."""

    def __init__(self, source: ByteSource, start: int, limit: int) -> None:
        self.source = source
        self.start = start
        self.pos = start
        self.limit = limit

    def tell(self) -> int:
        return self.pos - self.start

    def _take(self, n: int) -> int:
        if self.pos - self.start + n > self.limit:
            raise error(
                "limit-pickle-size",
                f"fallback='torch' refused before torch.load ran: a pickle of the file "
                f"is longer than the limit of {self.limit} bytes",
                path=self.source.path,
                offset=self.start,
            )
        return max(0, min(n, self.source.size - self.pos))

    def read(self, n: int) -> bytes:
        data = self.source.read_at(self.pos, self._take(n), exact=False)
        self.pos += len(data)
        return data

    def readline(self) -> bytes:
        out = b""
        while not out.endswith(b"\n") and self.pos < self.source.size:
            chunk = self.source.read_at(self.pos, self._take(256), exact=False)
            line, nl, _ = chunk.partition(b"\n")
            out += line + nl
            self.pos += len(line) + len(nl)
        return out


def _check_records(directory: ZipDirectory, prefix: str, limits: Limits, file_size: int) -> None:
    """Hold the records torch reads whole to the sizes they declare, before any is read:
    DEFLATE inflates a small file to whatever size a record declares, and torch
    allocates that size. All members together may declare the file's size + 16 MiB
    (STORED members hold their bytes: such archives always pass), the small records
    4 KiB each, the pickles ``Limits.max_pickle_bytes``; a storage's record is held to
    what its persistent id claims (``_Preflight._storage``).

    Raises:
        LimitError: ``limit-member-size``.
    """
    path = directory.source.path
    declared = sum(m.size for m in directory.records)
    if declared > file_size + _INFLATE_SLACK:
        raise error(
            "limit-member-size",
            f"fallback='torch' refused before torch.load ran: the archive's members declare "
            f"{declared} bytes, more than the file's {file_size} + {_INFLATE_SLACK >> 20} MiB "
            f"(DEFLATE bombs): torch.load would inflate them",
            path=path,
        )
    pickles = ("data.pkl", "constants.pkl")
    for name in (*_SMALL_RECORDS, *pickles):
        record = directory.get(f"{prefix}/{name}")
        limit = limits.max_pickle_bytes if name in pickles else _SMALL_RECORD_BYTES
        if record is not None and record.size > limit:
            raise error(
                "limit-member-size",
                f"fallback='torch' refused before torch.load ran: record {name!r} declares "
                f"{record.size} bytes, over the limit of {limit}: torch.load would read it whole",
                path=path,
                member=record.name,
            )


def preflight(source: Any, *, limits: Limits, trust: bool) -> None:
    """Decode every pickle ``torch.load(source)`` would run and refuse what ckptpeek
    would refuse (see the module docstring); nothing is built or run.

    Raises:
        LimitError: a pickle passes ckptpeek's limits (``limit-*``).
        UnsafePickleError: ``fallback-allocation``.
        UnsupportedError: ``fallback-unchecked``: the pickles cannot be found the way
            torch would find them (a tar file with ``trust=True``).
        FormatError: a ZIP archive ckptpeek cannot read one unambiguous way.
    """
    path = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
    if path is not None and path.endswith(".safetensors"):
        return  # torch.load hands such a path to the safetensors library: no pickle
    with ByteSource(source) as src:
        check = _Preflight(limits, src.path, src.size)
        if src.read_at(0, 4, exact=False) == b"PK\x03\x04":  # torch's _is_zipfile
            directory = read_directory(
                src,
                max_members=limits.max_zip_members,
                max_directory_bytes=limits.max_directory_bytes,
            )
            prefix = find_prefix(directory)
            _check_records(directory, prefix, limits, src.size)

            def record_bytes(key: str) -> int:
                record = directory.get(f"{prefix}/data/{key}")
                return 0 if record is None else record.size

            check.record_bytes = record_bytes
            check.directory = directory
            names = ["data.pkl"] + (["constants.pkl"] if is_torchscript(directory, prefix) else [])
            for name in names:
                data = read_pickle_member(directory, f"{prefix}/{name}", limits)
                check.run(pickletools.genops(data), len(data), f"{prefix}/{name}")
            return
        if sniff(src) == "tar":
            if not trust:
                return  # torch.load(weights_only=True) refuses a tar before any pickle
            raise error(
                "fallback-unchecked",
                "fallback='torch' refused: the pickles torch.load would run from the "
                "members of a tar file with trust=True are not checked beforehand",
                path=src.path,
            )
        start = 0
        for _ in range(_LEGACY_PICKLES):  # the pickles of a legacy file, back to back
            stream = _Stream(src, start, limits.max_pickle_bytes)
            ops = pickletools.genops(stream)  # type: ignore[arg-type]  # read, readline, tell
            end = check.run(ops, min(src.size, limits.max_pickle_bytes), None)
            if end <= 0 or stream.pos >= src.size:
                break
            start += end


# -- the result: torch's objects as ckptpeek's ------------------------------------------


class _TorchStorages:
    """Storage bytes of the tensors torch loaded (a ``StorageReader``)."""

    byteorder = sys.byteorder  # torch swaps to native order on load

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.storages: dict[str, Any] = {}

    def storage_view(self, storage: StorageRef, start: int, stop: int) -> memoryview:
        import torch  # noqa: PLC0415 - this module exists to use torch

        untyped = self.storages[storage.key]
        flat = torch.empty(0, dtype=torch.uint8).set_(untyped)
        return memoryview(flat.numpy()[start:stop])

    def storage_location(self, storage: StorageRef) -> tuple[None, int, int]:
        return None, 0, storage.nbytes


class _Source:
    """What a Checkpoint needs of its file when torch did the reading."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.size = os.path.getsize(path) if path else 0
        self.bytes_read = self.size  # torch reads every storage at load
        self.closed = False

    def close(self) -> None:
        self.closed = True


def _to_ref(tensor: Any, storages: _TorchStorages) -> Any:
    import torch  # noqa: PLC0415

    if tensor.layout != torch.strided or tensor.is_quantized or tensor.is_nested:
        return tensor  # other layouts stay torch tensors
    dtype = DTYPES.get(str(tensor.dtype).removeprefix("torch."))
    if dtype is None:
        return tensor
    if tensor.device.type == "meta":
        ref = TensorRef(
            storage=None,
            dtype=dtype,
            shape=tuple(tensor.shape),
            stride=tensor.stride(),
            storage_offset=tensor.storage_offset(),
            requires_grad=tensor.requires_grad,
            kind="meta",
        )
    else:
        untyped = tensor.untyped_storage()
        key = str(untyped.data_ptr())
        storages.storages[key] = untyped
        storage = StorageRef(key, DTYPES["uint8"], untyped.nbytes(), str(tensor.device), storages)
        ref = TensorRef(
            storage=storage,
            dtype=dtype,
            shape=tuple(tensor.shape),
            stride=tensor.stride(),
            storage_offset=tensor.storage_offset(),
            requires_grad=tensor.requires_grad,
        )
    if isinstance(tensor, torch.nn.Parameter):
        ref.is_parameter = True
        ref.type_name = "torch.nn.parameter.Parameter"
    return ref


def _convert(obj: Any, storages: _TorchStorages, limits: Limits, path: str | None) -> Any:
    """Replace torch tensors by TensorRefs in dicts, lists and tuples.

    One iterative walk visits every shared object once (``limits.max_nodes`` children in
    all, ``limits.max_depth`` deep) and records each container; then tuples holding a
    tensor are rebuilt once each, children first, and dicts and lists are changed in
    place. A tensor or tuple reached twice gives one replacement, so the result shares
    exactly what torch's result shares.
    """
    import torch  # noqa: PLC0415

    def walked(o: Any) -> bool:
        return type(o) in (list, tuple) or isinstance(o, dict)

    seen: dict[int, Any] = {}  # id -> object, keeps each alive and visited once
    order: list[Any] = []  # containers in the order their walk finished: children first
    new: dict[int, Any] = {}  # id of a tensor or tuple -> its replacement
    if isinstance(obj, torch.Tensor):
        return _to_ref(obj, storages)
    if not walked(obj):
        return obj
    seen[id(obj)] = obj
    stack: list[tuple[Any, Iterator[Any]]] = [(obj, iter(_values(obj)))]
    visited = 0
    while stack:
        parent, it = stack[-1]
        for child in it:
            visited += 1
            if visited > limits.max_nodes:
                raise error(
                    "limit-nodes",
                    f"fallback='torch': torch.load's result has more than {limits.max_nodes} nodes",
                    path=path,
                )
            if id(child) in seen:
                continue
            if isinstance(child, torch.Tensor):
                seen[id(child)] = child
                new[id(child)] = _to_ref(child, storages)
            elif walked(child):
                if len(stack) >= limits.max_depth:
                    raise error(
                        "limit-depth",
                        f"fallback='torch': torch.load's result nests deeper than "
                        f"{limits.max_depth}",
                        path=path,
                    )
                seen[id(child)] = child
                stack.append((child, iter(_values(child))))
                break
        else:
            stack.pop()
            order.append(parent)
    for o in order:  # children before parents: a tuple's items are final when it is rebuilt
        if type(o) is tuple:
            items = tuple(new.get(id(v), v) for v in o)
            if any(a is not b for a, b in zip(items, o, strict=True)):
                new[id(o)] = items
    for o in order:
        if type(o) is list:
            for i, v in enumerate(o):
                if id(v) in new:
                    o[i] = new[id(v)]
        elif isinstance(o, dict):
            for k, v in list(o.items()):
                if id(v) in new:
                    o[k] = new[id(v)]
    return new.get(id(obj), obj)


def _values(o: Any) -> Any:
    return list(o.values()) if isinstance(o, dict) else o


def load_with_torch(
    source: Any, *, trust: bool, limits: Limits, format: str, cause: UnsupportedError
) -> Checkpoint:
    """Read ``source`` with torch.load and present it as a Checkpoint.

    Raises:
        UnsupportedError: torch is not installed (``cause``, saying torch would help),
            ``torch-refused`` (torch.load failed) or ``fallback-unchecked``.
        LimitError, UnsafePickleError, FormatError: the pre-flight refused the file.
    """
    if not torch_available():
        raise error(
            cause.code,
            f"{cause.msg}; installing torch (pip install 'ckptpeek[torch]') would let "
            f"fallback='torch' read it",
            path=cause.path,
            member=cause.member,
            offset=cause.offset,
        ) from cause
    path = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
    target, opened = source, None
    if path is not None and not path.endswith(".safetensors"):  # (torch reads those by path)
        # one descriptor for the pre-flight and torch.load: a file renamed over the path
        # between the two cannot be the one torch reads
        target = opened = os.fdopen(open_regular(path), "rb")
    try:
        return _checked_load(target, path, trust=trust, limits=limits, format=format, cause=cause)
    finally:
        if opened is not None:
            opened.close()


def _checked_load(
    source: Any,
    path: str | None,
    *,
    trust: bool,
    limits: Limits,
    format: str,
    cause: UnsupportedError,
) -> Checkpoint:
    try:
        preflight(source, limits=limits, trust=trust)
    except CheckpointError as exc:
        exc.located(path=cause.path)
        raise exc from cause
    import torch  # noqa: PLC0415 - the one place ckptpeek imports torch

    if hasattr(source, "seek"):
        source.seek(0)
    try:
        # never mmap=True: no mapping of the user's file may outlive the size checks
        obj = torch.load(source, mmap=False, weights_only=not trust, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds; all mean "could not"
        hint = (
            "" if trust else " (weights_only=True; trust=True allows more, running the file's code)"
        )
        raise error(
            "torch-refused",
            f"{cause.msg}; torch.load could not read it either{hint}: "
            f"{type(exc).__name__}: {str(exc)[:300]}",
            path=cause.path,
        ) from exc
    storages = _TorchStorages(path)
    root = _convert(obj, storages, limits, cause.path)
    return Checkpoint(
        format=_format_of(path, format),
        backend="torch",
        root=root,
        source=_Source(path),
        globals_={},
        limits=limits,
        members={"fallback_reason": str(cause)},
    )


def _format_of(path: str | None, default: str) -> str:
    """The format ckptpeek recognises the file as, though it could not read it."""
    if path is None:
        return default
    try:
        with ByteSource(path) as src:
            kind = sniff(src)
    except (CheckpointError, OSError):
        return default
    return {"zip": "torch-zip", "tar": "torch-legacy"}.get(kind, kind)
