"""TorchScript archives (``torch.jit.save`` / ``ScriptModule.save``), header-only.

Layout (torch/csrc/jit/serialization/export_module.cpp and import.cpp): a torch zip
whose ``<prefix>/data.pkl`` pickles the module object graph - every module and
TorchScript class instance is ``NEWOBJ`` of a global ``__torch__.<qualified name>``
then ``BUILD`` with a dict of its attributes in slot order - with tensors as
``_rebuild_tensor_v2`` over persistent ids whose bytes are ``<prefix>/data/<key>``;
``<prefix>/constants.pkl`` pickles a tuple of the constants the code refers to as
``CONSTANTS.c0, c1, ...`` with their storages in ``<prefix>/constants/<key>``;
``<prefix>/code/<qualifier path>.py`` holds the TorchScript source of every class.
Typed containers are pickled through ``torch.jit._pickle`` helpers
(``restore_type_tag(obj, "Dict[str, Tensor]")``, ``build_intlist([...])``, ...).

Nothing is imported or run. Classes named ``__torch__.*`` become :class:`ScriptObject`
records (fresh per load, filled by BUILD); which attributes are parameters and buffers
is not in the pickle - it is the ``__parameters__ = [...]`` / ``__buffers__ = [...]``
lines of each class in ``code/`` (what torch's C++ importer reads when it compiles the
class), scanned here as text - string literals only, no syntax tree, at most as many
names as the pickles have bytes, from code files of at most 16 MiB inflated - never
executed. A class is a module when its source says ``class Name(Module):``.

Presentation (``Checkpoint.root``) - a dict, chosen so that ``ckpt.tensors()`` lists
every tensor exactly once and a catalog finds the weights under the same key as in a
Lightning checkpoint::

    {"state_dict": {qualified name: TensorRef},   # == torch.jit.load(p).state_dict():
                                                  #    parameters, then buffers, then
                                                  #    submodules, same names and order
     "constants":  {"c0": value, ...},            # constants.pkl, by the code's names
     "attributes": {qualified name: value},       # other attributes of modules (tensor
                                                  #    attributes, lists, ints, ...) but
                                                  #    not `training`/hook bookkeeping
     "module":     ScriptObject}                  # the whole graph

``ScriptObject`` is deliberately not a container the tensor walk enters, so tensors
reached through ``module`` are not listed a second time; it offers ``named_parameters``,
``named_buffers``, ``named_modules``, ``state_dict`` and attribute access
(``root["module"].sub.lin.weight``). Parameters get ``is_parameter=True``, as
``torch.jit.load`` gives ``nn.Parameter`` for them.

Which pickles count: ``torch.jit.load`` (and ``torch.load``, which hands a zip with
``constants.pkl`` to it, refusing ``weights_only=True``) unpickles ``data.pkl`` and
``constants.pkl`` on every load; both are read here and the globals of both are in
``Checkpoint.globals()`` (strict mode refuses an unknown one in either). It does so
with torch's C++ unpickler, never CPython's: a global resolves only to ``__torch__.*``
classes compiled from ``code/`` and a fixed set of torch names (rebuild functions,
``torch.jit._pickle`` helpers, ``collections.OrderedDict``, ...); any other, such as
``os.system``, makes the load fail (``Unknown type name 'os.system'``) instead of being
imported. So for this format an unknown global in the report marks a file torch would
refuse, or that was not written by ``torch.jit.save``, rather than code torch would
run. (What torch.jit.load does run is TorchScript: it compiles the classes in ``code/``
and calls their ``__setstate__``; ckptpeek only reads their name lists.) The same C++
unpickler reads ``code/*.debug_pkl`` (lazily, when source ranges are needed) and
``traced_inputs.pkl`` (only with ``_restore_shapes=True``); neither is read here
(``ckptpeek scan`` flags ``traced_inputs.pkl`` as a pickle torch.load does not read).

Not read either: ``extra/`` files (raw bytes, returned only when asked for by name),
mobile bytecode (``bytecode.pkl``, for the lite interpreter), and the pre-1.4
``model.json`` layout. ``select=`` is ignored (TorchScript pickles are small; everything
is read).
"""

from __future__ import annotations

import re

from ckptpeek.checkpoint import Checkpoint, merge_globals
from ckptpeek.errors import CheckpointError, error
from ckptpeek.io.zipdir import ZipDirectory
from ckptpeek.limits import DEFAULT_LIMITS, Limits
from ckptpeek.tensor import TensorRef
from ckptpeek.unpickle.standins import KnownGlobal

from .options import ReadOptions
from .torch_zip import ZipStorageReader, find_prefix, read_pickle_member

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from ckptpeek.io.source import ReadableSource

__all__ = ("ScriptObject", "read")

#: attributes every scripted nn.Module carries; left out of ``root["attributes"]``
_BOOKKEEPING = frozenset({"training", "_is_full_backward_hook"})
#: the largest code file inflated to find a class's parameter and buffer names: checked
#: against the directory's sizes before inflating. ``torch.jit.save`` writes about 145
#: bytes per submodule and 25 per attribute (a 2,000-layer ``nn.Sequential``: 290 KB)
_MAX_CODE_BYTES = 16 << 20
_MANGLE = re.compile(r"___torch_mangle_\d+")
_CLASS_LINE = re.compile(r"class ([A-Za-z_][A-Za-z0-9_]*)(?:\(([A-Za-z_][A-Za-z0-9_.]*)\))?:")
_LIST_LINE = re.compile(r"  (__parameters__|__buffers__) = (\[.*\])")
#: one string literal as torch's printer writes it (quoted, backslash escapes, no newline)
_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'')
_SPACE = re.compile(r"[ \t]*")
#: the escapes Python decodes without a warning (octal: up to 3 digits, at most \377)
_ESCAPE = re.compile(
    r"\\(?:[\\'\"abfnrtv]|[0-3][0-7]{2}|[0-7]{1,2}(?![0-7])|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8})"
)


class ScriptObject:
    """An instance of a TorchScript class (a scripted module or ``@torch.jit.script``
    class), as the archive describes it. Never created from code: a record.

    Attributes:
        qualified_name: the class as saved, e.g. ``__torch__.torch.nn.modules.linear.
            ___torch_mangle_2.Linear``; ``type_name`` drops the ``___torch_mangle_N``.
        attributes: the object's attributes, in slot order (what BUILD set).
        state: for a class with ``__getstate__``, the state it returned (else ``None``).
        args: constructor arguments (enum values are pickled as ``Class(value)``).
        is_module: the class source says ``class X(Module)`` (``None``: no source found).
        parameter_names, buffer_names: from the class source's ``__parameters__`` /
            ``__buffers__`` lines.
    """

    __slots__ = (
        "qualified_name",
        "args",
        "attributes",
        "state",
        "is_module",
        "parameter_names",
        "buffer_names",
        "_built",
    )

    def __init__(self, qualified_name: str, args: tuple[Any, ...] = ()) -> None:
        self.qualified_name = qualified_name
        self.args = args
        self.attributes: dict[str, Any] = {}
        self.state: Any = None
        self.is_module: bool | None = None
        self.parameter_names: tuple[str, ...] = ()
        self.buffer_names: tuple[str, ...] = ()
        self._built = False

    def _ckpt_build(self, state: Any) -> None:
        if self._built:
            raise TypeError(f"{self.qualified_name} is built twice")
        self._built = True
        if type(state) is dict and all(type(k) is str for k in state):
            self.attributes = state
        else:
            self.state = state

    @property
    def type_name(self) -> str:
        """The class without torch's mangling: ``__torch__.torch.nn.modules.linear.Linear``."""
        return ".".join(p for p in self.qualified_name.split(".") if not _MANGLE.fullmatch(p))

    def __getattr__(self, name: str) -> Any:
        try:
            return object.__getattribute__(self, "attributes")[name]
        except (KeyError, AttributeError):
            raise AttributeError(name) from None

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, TensorRef]]:
        """``(qualified name, tensor)`` of the parameters, like ``named_parameters()``
        (each tensor once, recursing into submodules)."""
        seen: set[int] = set()
        for name, ref, kind in _module_tensors(self, prefix, DEFAULT_LIMITS, None):
            if kind == "parameter" and id(ref) not in seen:
                seen.add(id(ref))
                yield name, ref

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, TensorRef]]:
        seen: set[int] = set()
        for name, ref, kind in _module_tensors(self, prefix, DEFAULT_LIMITS, None):
            if kind == "buffer" and id(ref) not in seen:
                seen.add(id(ref))
                yield name, ref

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, ScriptObject]]:
        for name, obj, kind in _module_tensors(self, prefix, DEFAULT_LIMITS, None):
            if kind == "module":
                yield name, obj

    def state_dict(self) -> dict[str, TensorRef]:
        """Parameters and buffers by qualified name, in ``state_dict()`` order."""
        return {
            name: ref
            for name, ref, kind in _module_tensors(self, "", DEFAULT_LIMITS, None)
            if kind in ("parameter", "buffer")
        }

    def __repr__(self) -> str:
        if self.is_module:
            return (
                f"<ScriptModule {self.type_name} ({len(self.parameter_names)} parameters, "
                f"{len(self.buffer_names)} buffers)>"
            )
        return f"<ScriptObject {self.type_name}>"


def _module_tensors(
    root: ScriptObject, prefix: str, limits: Limits, path: str | None
) -> Iterator[tuple[str, Any, str]]:
    """Walk the module tree in ``nn.Module.state_dict`` order, iteratively.

    Yields ``(name, value, kind)`` with kind ``"module"`` (the module itself, first),
    ``"parameter"``, ``"buffer"`` or ``"attribute"`` (anything else a module holds).
    A module that is its own ancestor (only a hostile file builds one) is not entered
    again; depth and node count are bounded by ``limits``.
    """
    # each frame: (module, its prefix, remaining submodules to visit)
    stack: list[tuple[ScriptObject, str, Iterator[tuple[str, ScriptObject]]]] = []
    ancestors: set[int] = set()
    visited = 0

    def enter(mod: ScriptObject, pre: str) -> Iterator[tuple[str, Any, str]]:
        yield pre.rstrip("."), mod, "module"
        attrs = mod.attributes
        params, buffers = set(mod.parameter_names), set(mod.buffer_names)
        for name, value in attrs.items():
            if name in params and isinstance(value, TensorRef):
                yield pre + name, value, "parameter"
        for name, value in attrs.items():
            if name in buffers and isinstance(value, TensorRef):
                yield pre + name, value, "buffer"
        for name, value in attrs.items():
            if name in params or name in buffers or _is_module(value):
                continue
            yield pre + name, value, "attribute"
        stack.append((mod, pre, iter([(n, v) for n, v in attrs.items() if _is_module(v)])))
        ancestors.add(id(mod))

    yield from enter(root, prefix + "." if prefix else "")
    while stack:
        mod, pre, subs = stack[-1]
        for name, sub in subs:
            visited += 1
            if visited > limits.max_nodes:
                raise error(
                    "limit-nodes",
                    f"module graph has more than {limits.max_nodes} modules",
                    path=path,
                )
            if id(sub) in ancestors:
                continue
            if len(stack) >= limits.max_depth:
                raise error(
                    "limit-depth", f"modules nest deeper than {limits.max_depth}", path=path
                )
            yield from enter(sub, f"{pre}{name}.")
            break
        else:
            stack.pop()
            ancestors.discard(id(mod))


def _is_module(value: Any) -> bool:
    return type(value) is ScriptObject and value.is_module is True


# -- the pickles' globals ---------------------------------------------------------------


def _passthrough(name: str, n: int) -> KnownGlobal:
    """``torch.jit._pickle`` helpers that return (one of) their arguments unchanged."""

    def call(args: tuple[Any, ...]) -> Any:
        if len(args) != n:
            raise TypeError(f"{name} takes {n} argument(s)")
        if name == "restore_type_tag":
            if not isinstance(args[1], str):
                raise TypeError("restore_type_tag(obj, type string) expected")
        elif not isinstance(args[0], list):
            raise TypeError(f"{name} takes a list")
        return args[0]

    return KnownGlobal("torch.jit._pickle", name, call=call)


_JIT_PICKLE = {
    ("torch.jit._pickle", name): _passthrough(name, n)
    for name, n in (
        ("restore_type_tag", 2),
        ("build_intlist", 1),
        ("build_doublelist", 1),
        ("build_boollist", 1),
        ("build_tensorlist", 1),
        ("build_complexlist", 1),
    )
}


class _ScriptGlobals(dict[tuple[str, str], "Any"]):  # quoted: typing is not imported at run time
    """``extra_globals`` for one run: the ``torch.jit._pickle`` helpers, and a fresh
    constructor of :class:`ScriptObject` for every ``__torch__.*`` class named."""

    def __init__(self) -> None:
        super().__init__(_JIT_PICKLE)

    def get(self, key: Any, default: Any = None) -> Any:
        found = dict.get(self, key)
        if found is not None:
            return found
        module, name = key
        if not (module == "__torch__" or module.startswith("__torch__.")):
            return default
        qualname = f"{module}.{name}"

        def call(args: tuple[Any, ...]) -> ScriptObject:
            return ScriptObject(qualname, args)

        def new(args: tuple[Any, ...], kwargs: dict[str, Any]) -> ScriptObject:
            if kwargs:
                raise TypeError(f"{qualname} takes no keyword arguments")
            return ScriptObject(qualname, args)

        found = self[key] = KnownGlobal(module, name, call=call, new=new)
        return found


# -- class sources ------------------------------------------------------------------------


def _class_info(
    directory: ZipDirectory, prefix: str, qualnames: set[str], max_names: int
) -> dict[str, tuple[bool, tuple[str, ...], tuple[str, ...]]]:
    """``qualified name -> (is_module, parameters, buffers)`` from ``code/``, reading only
    the files of the classes the graph uses, each at most ``_MAX_CODE_BYTES`` inflated;
    a name list may hold at most ``max_names`` names."""
    by_file: dict[str, set[str]] = {}
    for q in qualnames:
        qualifier, _, cls = q.rpartition(".")
        by_file.setdefault(f"{prefix}/code/{qualifier.replace('.', '/')}.py", set()).add(cls)
    info: dict[str, tuple[bool, tuple[str, ...], tuple[str, ...]]] = {}
    for member, wanted in by_file.items():
        if member not in directory:
            continue
        qualifier = member[len(prefix) + 6 : -3].replace("/", ".")
        text = directory.read(member, max_size=_MAX_CODE_BYTES).decode("utf-8", "replace")
        current: str | None = None
        for line in text.splitlines():
            m = _CLASS_LINE.fullmatch(line)
            if m:
                current = m.group(1) if m.group(1) in wanted else None
                if current is not None:
                    info[f"{qualifier}.{current}"] = (m.group(2) == "Module", (), ())
                continue
            if current is None or not line.startswith("  "):
                if line and not line.startswith(" "):
                    current = None
                continue
            m = _LIST_LINE.fullmatch(line)
            if m:
                names = _name_list(m.group(2), member, max_names)
                is_mod, params, buffers = info[f"{qualifier}.{current}"]
                if m.group(1) == "__parameters__":
                    params = names
                else:
                    buffers = names
                info[f"{qualifier}.{current}"] = (is_mod, params, buffers)
    return info


def _name_list(text: str, member: str, max_names: int) -> tuple[str, ...]:
    """The names of ``["a", "b", ]`` - a literal list of string literals, as torch's
    printer writes it - scanned left to right: no syntax tree is built (``ast`` spends
    hundreds of bytes per element), and at most ``max_names`` names are taken."""
    names: list[str] = []
    pos = _SPACE.match(text, 1).end()  # type: ignore[union-attr]  # always matches
    while pos < len(text) and text[pos] != "]":
        m = _STRING.match(text, pos)
        if m is None:
            break
        if len(names) >= max_names:
            raise error(
                "limit-nodes",
                f"a class's name list has more than {max_names} names: more than the "
                "archive's pickles could give attributes",
                member=member,
            )
        name = _unquote(m.group())
        if name is None:
            break
        names.append(name)
        pos = _SPACE.match(text, m.end()).end()  # type: ignore[union-attr]
        if pos < len(text) and text[pos] == ",":
            pos = _SPACE.match(text, pos + 1).end()  # type: ignore[union-attr]
        elif pos < len(text) and text[pos] != "]":
            break
    if pos != len(text) - 1:  # not at the closing bracket, the line's last character
        raise error(
            "torchscript-bad-code",
            f"class source has a malformed name list {text[:60]!r}",
            member=member,
        )
    return tuple(names)


def _unquote(literal: str) -> str | None:
    """The value of one string literal (``_STRING``), ``None`` if an escape is not one
    Python reads without a warning; escapes are decoded by ``ast`` one literal at a time,
    so the cost is the literal's length."""
    if "\\" not in literal:
        return literal[1:-1]
    if _ESCAPE.sub("", literal[1:-1]).count("\\"):
        return None
    import ast  # noqa: PLC0415 - only names with escapes need it

    value = ast.literal_eval(literal)  # one string literal, escapes checked: nothing is run
    return value if isinstance(value, str) else None


def _script_objects(root: Any, limits: Limits, path: str | None) -> list[ScriptObject]:
    """Every ScriptObject reachable from ``root`` (iterative, each container once)."""
    found: list[ScriptObject] = []
    seen: set[int] = set()
    todo = [root]
    budget = limits.max_nodes
    while todo:
        obj = todo.pop()
        budget -= 1
        if budget < 0:
            raise error(
                "limit-nodes", f"object graph has more than {limits.max_nodes} nodes", path=path
            )
        if id(obj) in seen:
            continue
        if type(obj) is ScriptObject:
            seen.add(id(obj))
            found.append(obj)
            todo.extend(obj.attributes.values())
            todo.append(obj.state)
            todo.extend(obj.args)
        elif isinstance(obj, dict):
            seen.add(id(obj))
            todo.extend(obj.values())
        elif isinstance(obj, (list, tuple)):
            seen.add(id(obj))
            todo.extend(obj)
    return found


# -- storages -------------------------------------------------------------------------------


def _run(
    opts: ReadOptions,
    directory: ZipDirectory,
    member: str,
    resolver: Any,
    path: str | None,
    globals_: dict[tuple[str, str], bool],
) -> Any:
    """Run one pickle member; its globals are merged into ``globals_`` (the file's)."""
    data = read_pickle_member(directory, member, opts.limits)
    try:
        result = opts.run_pickle(data, resolver, select=None, extra_globals=_ScriptGlobals())
    except CheckpointError as exc:
        raise exc.located(path=path, member=member) from None
    merge_globals(globals_, result.globals)
    return result


def read(source: ReadableSource, directory: ZipDirectory, opts: ReadOptions) -> Checkpoint:
    """Read a TorchScript archive into a :class:`Checkpoint` (format ``"torchscript"``)."""
    prefix = find_prefix(directory)
    path = source.path
    data_member = f"{prefix}/data.pkl"
    globals_: dict[tuple[str, str], bool] = {}  # of data.pkl, then constants.pkl
    result = _run(
        opts,
        directory,
        data_member,
        ZipStorageReader(directory, prefix).persistent_load,
        path,
        globals_,
    )
    module = result.value
    if type(module) is not ScriptObject:
        raise error(
            "torchscript-bad-root",
            f"data.pkl holds a {type(module).__name__}, not a TorchScript object",
            path=path,
            member=data_member,
        )

    const_member = f"{prefix}/constants.pkl"
    consts = _run(
        opts,
        directory,
        const_member,
        ZipStorageReader(directory, prefix, "constants").persistent_load,
        path,
        globals_,
    )
    if not isinstance(consts.value, tuple):
        raise error(
            "torchscript-bad-constants",
            f"constants.pkl holds a {type(consts.value).__name__}, not a tuple",
            path=path,
            member=const_member,
        )

    objects = _script_objects((module, consts.value), opts.limits, path)
    try:
        # every parameter or buffer is an attribute some pickle names: at least one byte
        max_names = sum(directory.member(m).size for m in (data_member, const_member))
        info = _class_info(directory, prefix, {o.qualified_name for o in objects}, max_names)
    except CheckpointError as exc:
        raise exc.located(path=path) from None
    for obj in objects:
        entry = info.get(obj.qualified_name)
        if entry is not None:
            obj.is_module, obj.parameter_names, obj.buffer_names = entry

    state_dict: dict[str, TensorRef] = {}
    attributes: dict[str, Any] = {}
    for name, value, kind in _module_tensors(module, "", opts.limits, path):
        if kind == "parameter":
            if not value.is_parameter:
                value.is_parameter = True
                value.type_name = "torch.nn.parameter.Parameter"
            state_dict[name] = value
        elif kind == "buffer":
            state_dict[name] = value
        elif kind == "attribute" and name.rpartition(".")[2] not in _BOOKKEEPING:
            attributes[name] = value
    root = {
        "state_dict": state_dict,
        "constants": {f"c{i}": v for i, v in enumerate(consts.value)},
        "attributes": attributes,
        "module": module,
    }
    return Checkpoint(
        format="torchscript",
        backend=opts.engine.ENGINE,
        root=root,
        source=source,
        globals_=globals_,
        limits=opts.limits,
        members={
            "pickle": data_member,
            "constants": const_member,
            "code": f"{prefix}/code/",
            "prefix": prefix,
        },
        selected=None,
    )
