"""The type stubs of the C extensions describe the modules that are built.

For each extension that is built: every name the ``.pyi`` declares exists in the
compiled module, and every public name the module defines itself is declared (names it
merely imports - ``from .context import PickleResult`` in the ``.pyx`` - are not its
own); each stub function has the parameters of the compiled function (names, kinds,
which have defaults), as ``inspect.signature`` reads them from Cython's binding
functions, or, where Cython exposes none, of the function's pure-Python twin. A stub
that claims the contract of a pure-Python function (``run_pickle``) is also checked
against that function, built or not.

An extension that is not built is skipped, with the reason; with
``CKPTPEEK_REQUIRE_EXTENSIONS`` set (CI's native run) a missing one fails instead.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import os
import pathlib
import sys
import types
from typing import Any

import pytest

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"

#: each extension module and its stub
STUBS = {
    "ckptpeek.unpickle._pickle_vm_c": SRC / "ckptpeek" / "unpickle" / "_pickle_vm_c.pyi",
    "ckptpeek.io._zipdir_c": SRC / "ckptpeek" / "io" / "_zipdir_c.pyi",
}
#: stub functions that promise the contract of a pure-Python function
TWINS = {
    ("ckptpeek.unpickle._pickle_vm_c", "run_pickle"): ("ckptpeek.unpickle.pickle_vm", "run_pickle"),
}

Param = tuple[str, Any, bool]  # name, inspect.Parameter kind, has a default


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _built(name: str) -> types.ModuleType:
    """The compiled module, or a skip (a failure under CKPTPEEK_REQUIRE_EXTENSIONS)."""
    try:
        found = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ValueError: blocked (None in sys.modules)
        found = False
    reason = "not built (python setup.py build_ext --inplace builds it)"
    module = None
    if found:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            reason = f"not importable: {exc}"
    if module is None:
        if _truthy("CKPTPEEK_REQUIRE_EXTENSIONS"):
            pytest.fail(f"CKPTPEEK_REQUIRE_EXTENSIONS is set but {name} is {reason}")
        pytest.skip(f"{name} is {reason}")
    return module


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _stub(module: str) -> dict[str, ast.stmt]:
    """The names a stub declares (imports count only as ``import x as x`` re-exports)."""
    tree = ast.parse(STUBS[module].read_text(encoding="utf-8"))
    names: dict[str, ast.stmt] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
        elif isinstance(node, ast.Assign):
            names.update((t.id, node) for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname, node) for a in node.names if a.asname == a.name)
    return {n: node for n, node in names.items() if not _dunder(n)}


def _own_public_names(module: types.ModuleType) -> set[str]:
    """The public names ``module`` defines, leaving out what it imported: modules,
    classes and functions of other modules, and objects that another ckptpeek module
    holds under the same name (``DEFAULT_LIMITS``, ``KNOWN_GLOBALS``)."""
    others = [
        m
        for n, m in list(sys.modules.items())
        if m is not None and n.split(".")[0] == "ckptpeek" and n != module.__name__
    ]
    own = set()
    for name, value in vars(module).items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        if inspect.isclass(value) or inspect.isroutine(value):
            if getattr(value, "__module__", module.__name__) != module.__name__:
                continue
        elif any(getattr(m, name, None) is value for m in others):
            continue
        own.add(name)
    return own


def _stub_params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[Param]:
    a = fn.args
    kind = inspect.Parameter
    positional = [(arg, kind.POSITIONAL_ONLY) for arg in a.posonlyargs]
    positional += [(arg, kind.POSITIONAL_OR_KEYWORD) for arg in a.args]
    first_default = len(positional) - len(a.defaults)
    out: list[Param] = [(arg.arg, k, i >= first_default) for i, (arg, k) in enumerate(positional)]
    if a.vararg is not None:
        out.append((a.vararg.arg, kind.VAR_POSITIONAL, False))
    out += [
        (arg.arg, kind.KEYWORD_ONLY, default is not None)
        for arg, default in zip(a.kwonlyargs, a.kw_defaults, strict=True)
    ]
    if a.kwarg is not None:
        out.append((a.kwarg.arg, kind.VAR_KEYWORD, False))
    return out


def _params(sig: inspect.Signature) -> list[Param]:
    return [(p.name, p.kind, p.default is not p.empty) for p in sig.parameters.values()]


def _signature(fn: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):  # a Cython function compiled without binding=True
        return None


def _twin(module: str, name: str) -> Any:
    twin_module, twin_name = TWINS[(module, name)]
    return getattr(importlib.import_module(twin_module), twin_name)


def _stub_functions(module: str) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    return {
        n: node
        for n, node in _stub(module).items()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }


@pytest.mark.parametrize("module", sorted(STUBS))
def test_stub_declares_exactly_the_module_names(module: str) -> None:
    compiled = _built(module)
    declared = set(_stub(module))
    missing_in_module = sorted(n for n in declared if not hasattr(compiled, n))
    missing_in_stub = sorted(_own_public_names(compiled) - declared)
    assert missing_in_module == [], f"{STUBS[module].name} declares names {module} lacks"
    assert missing_in_stub == [], f"{module} defines names {STUBS[module].name} lacks"


@pytest.mark.parametrize(
    ("module", "function"),
    sorted((m, f) for m in STUBS for f in _stub_functions(m)),
)
def test_stub_function_has_the_compiled_parameters(module: str, function: str) -> None:
    compiled = getattr(_built(module), function)
    sig = _signature(compiled)
    if sig is None:
        if (module, function) not in TWINS:
            pytest.skip(f"{module}.{function} exposes no signature and has no pure twin")
        sig = inspect.signature(_twin(module, function))
    assert _stub_params(_stub_functions(module)[function]) == _params(sig)


@pytest.mark.parametrize(("module", "function"), sorted(TWINS))
def test_stub_function_is_its_pure_twin(module: str, function: str) -> None:
    """Built or not: the stub states the pure function's contract, annotations included."""
    twin = _twin(module, function)
    node = _stub_functions(module)[function]
    sig = inspect.signature(twin)  # the annotations stay strings (PEP 563)
    assert _stub_params(node) == _params(sig)
    stub_args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
    stub_annotations = {
        a.arg: ast.unparse(a.annotation) for a in stub_args if a.annotation is not None
    }
    twin_annotations = {
        p.name: p.annotation for p in sig.parameters.values() if p.annotation is not p.empty
    }
    assert stub_annotations == twin_annotations
    assert node.returns is not None and ast.unparse(node.returns) == sig.return_annotation


@pytest.mark.parametrize(("module", "function"), sorted(TWINS))
def test_compiled_defaults_are_the_pure_twin_defaults(module: str, function: str) -> None:
    """The engines agree on what an omitted argument means."""
    sig = _signature(getattr(_built(module), function))
    if sig is None:
        pytest.skip(f"{module}.{function} exposes no signature")
    twin = inspect.signature(_twin(module, function))
    assert {n: p.default for n, p in sig.parameters.items()} == {
        n: p.default for n, p in twin.parameters.items()
    }
