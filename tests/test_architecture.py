"""The rooms of the package and the one direction of imports (README, "Architecture").

Every ``import`` of a ckptpeek module that runs (top-level or inside a function; not
those under ``if TYPE_CHECKING:``) is an edge of the import graph. The graph must have
no cycles, every edge must point down the layers below, the catalog may use only the
public exports of the core, and only ``torch_bridge`` (and ``TensorRef.to_torch``,
lazily) may import torch.
"""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Iterator

import pytest

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
PKG = SRC / "ckptpeek"

#: lowest first; a module may import only from its own room or from a room above it in
#: this list (a room is a sub-package, or a group of top-level modules)
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "base",
        (
            "ckptpeek.errors",
            "ckptpeek.limits",
            "ckptpeek._text",
            "ckptpeek._frozen",
            "ckptpeek._extensions",
        ),
    ),
    ("io", ("ckptpeek.io",)),
    ("model", ("ckptpeek.torch_types", "ckptpeek.tensor")),
    ("unpickle", ("ckptpeek.unpickle",)),
    ("walk", ("ckptpeek.walk",)),
    ("summary", ("ckptpeek.summary",)),
    ("checkpoint", ("ckptpeek.checkpoint",)),
    ("formats", ("ckptpeek.formats",)),
    ("torch_bridge", ("ckptpeek.torch_bridge",)),
    ("api", ("ckptpeek.api",)),
    ("scan", ("ckptpeek.scan",)),
    ("package", ("ckptpeek",)),
    ("catalog", ("ckptpeek.catalog",)),
    ("cli", ("ckptpeek.cli", "ckptpeek.scan_cli", "ckptpeek.__main__")),
]
#: pairs the layer order would allow but the design forbids: the interpreter reads no
#: files, and the summary knows nothing of where bytes come from
FORBIDDEN = {("unpickle", "io"), ("summary", "io")}
#: the only modules that may import torch: the bridge, and lazily inside ``to_torch()``
#: (TensorRef's, and the chunked DCP tensor's)
TORCH_IMPORTERS = {"ckptpeek.torch_bridge", "ckptpeek.tensor", "ckptpeek.formats.dcp"}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _room(module: str) -> str:
    best = ""
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            if prefix == "ckptpeek":
                hit = module == "ckptpeek"
            else:
                hit = module == prefix or module.startswith(prefix + ".")
            if hit and len(prefix) >= len(best):
                best, room = prefix, name
    if not best:
        raise AssertionError(f"{module} is in no room of LAYERS: add it")
    return room


RANK = {name: i for i, (name, _) in enumerate(LAYERS)}


class _Imports(ast.NodeVisitor):
    """(target module, imported names, line) for each ckptpeek import that runs."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: list[tuple[str, tuple[str, ...], int]] = []

    def visit_If(self, node: ast.If) -> None:
        if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] in ("ckptpeek", "torch"):
                self.found.append((alias.name, (), node.lineno))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            if node.level > 1:
                base = base[: -(node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        if target.split(".")[0] not in ("ckptpeek", "torch"):
            return
        names = tuple(a.name for a in node.names)
        # `from pkg import submodule` imports the submodule
        subs = [n for n in names if f"{target}.{n}" in MODULES]
        for n in subs:
            self.found.append((f"{target}.{n}", (), node.lineno))
        rest = tuple(n for n in names if n not in subs)
        if rest or not subs:
            self.found.append((target, rest, node.lineno))


def _imports(module: str) -> list[tuple[str, tuple[str, ...], int]]:
    path = MODULES[module]
    visitor = _Imports(module, path.name == "__init__.py")
    visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
    return visitor.found


GRAPH = {m: _imports(m) for m in MODULES}


def _edges() -> Iterator[tuple[str, str, tuple[str, ...], int]]:
    for module, found in GRAPH.items():
        for target, names, line in found:
            if target.split(".")[0] == "ckptpeek":
                yield module, target, names, line


def _public(package: str) -> set[str]:
    tree = ast.parse(MODULES[package].read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return set(ast.literal_eval(node.value))
    return set()


def test_every_module_is_in_a_room() -> None:
    for module in MODULES:
        _room(module)


def test_imports_point_down_the_layers() -> None:
    bad = []
    for module, target, _names, line in _edges():
        if target not in MODULES:
            bad.append(f"{module}:{line} imports {target}, which does not exist")
            continue
        a, b = _room(module), _room(target)
        if a == b:
            continue
        if RANK[b] > RANK[a] or (a, b) in FORBIDDEN:
            bad.append(f"{module}:{line} ({a}) imports {target} ({b})")
    assert bad == []


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, target, _names, _line in _edges():
        if target in MODULES and target != module:
            graph[module].add(target)
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, path)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert cycles == []


def test_no_room_imports_a_private_module_of_another() -> None:
    bad = []
    for module, target, names, line in _edges():
        if _room(module) == _room(target):
            continue
        private = [p for p in target.split(".")[1:] if p.startswith("_") and p != "__init__"]
        # package-level private helpers (ckptpeek._frozen, ckptpeek._extensions) are
        # shared by design; a room's private modules and names are its own
        if private and target.count(".") > 1:
            bad.append(f"{module}:{line} imports {target}")
        bad += [
            f"{module}:{line} imports {target}.{n}"
            for n in names
            if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))
        ]
    assert bad == []


def test_catalog_uses_only_public_exports_of_the_core() -> None:
    bad = []
    for module, target, names, line in _edges():
        if _room(module) != "catalog" or _room(target) == "catalog":
            continue
        if target != "ckptpeek" and target.count(".") != 1:
            bad.append(f"{module}:{line} imports {target} (not a room's public package)")
            continue
        if target == "ckptpeek" or MODULES[target].name == "__init__.py":
            public = _public(target)
            bad += [f"{module}:{line} imports {target}.{n}" for n in names if n not in public]
        else:
            bad.append(f"{module}:{line} imports the module {target}")
    assert bad == []


def test_only_the_bridge_imports_torch() -> None:
    bad = [
        f"{module}:{line}"
        for module, found in GRAPH.items()
        for target, _names, line in found
        if target.split(".")[0] == "torch" and module not in TORCH_IMPORTERS
    ]
    assert bad == []


@pytest.mark.parametrize(
    ("source", "expect"),
    [
        ("import ckptpeek.cli\n", "cli"),  # upward
        ("from ckptpeek.io import zipdir\n", "io"),  # the interpreter reads no files
    ],
)
def test_the_checker_sees_a_wrong_import(source: str, expect: str) -> None:
    # the checks above read the real tree; this one shows they would catch a bad edge
    visitor = _Imports("ckptpeek.unpickle.pickle_vm", False)
    visitor.visit(ast.parse(source))
    ((target, _names, _line),) = visitor.found
    a, b = _room("ckptpeek.unpickle.pickle_vm"), _room(target)
    assert b == expect and (RANK[b] > RANK[a] or (a, b) in FORBIDDEN)
