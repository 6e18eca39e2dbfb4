"""Differential comparison of ``ckptpeek`` results against ``torch.load``.

The central entry point is :func:`assert_matches_torch`, which loads one file
with both libraries and walks the two object graphs in parallel.  Every
difference is collected together with its key path (``root['state_dict']['w']``)
so a single failing assertion reports all mismatches in a file at once.

Rules of the walk (``expected`` is torch's object, ``got`` is ckptpeek's):

* ``collections.OrderedDict`` must come back as an ``OrderedDict``; an exact
  ``dict`` as an exact ``dict``; other mappings (Lightning ``AttributeDict``,
  OmegaConf ``DictConfig``) only need to be ``dict`` instances.  Keys must be
  equal *and in the same order*.
* lists / tuples keep their type; ``ListConfig`` only needs to be a ``list``.
* ``argparse.Namespace`` must stay a ``Namespace``; its ``vars()`` are compared.
* scalars must have the same type; floats must be bit-identical (NaN-aware,
  ``-0.0`` distinguished from ``0.0``).
* ``torch.Size`` / ``torch.device`` / ``torch.dtype`` values are compared
  through ``tuple()`` / ``str()``.
* every tensor is checked against its ``TensorRef``: dtype, shape, stride,
  storage offset, requires_grad, Parameter-ness, derived metadata and the
  exact bytes of the values (so NaN payloads and ``-0.0`` count), both through
  ``numpy()`` and through ``to_torch()``.  Conjugate / negative views are
  compared by their resolved values.  A dtype numpy cannot hold (complex32)
  may make ``numpy()`` raise ``UnsupportedError``, as torch's own does.
* tensors that share one torch storage must share one ``storage_key``, and
  tensors with different storages must not.

torch and ckptpeek are imported lazily so this module can be imported anywhere.
"""

from __future__ import annotations

import argparse
import collections
import io
import math
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

__all__ = [
    "assert_matches_torch",
    "compare_objects",
    "compare_tensor",
    "expected_tensor_paths",
    "fmt_path",
    "pickle_globals",
    "to_plain",
]


# --------------------------------------------------------------------------- small helpers


def fmt_path(path: tuple) -> str:
    """Render a key path tuple as ``root['a'][0]['b']``."""
    return "root" + "".join(f"[{k!r}]" for k in path)


def _is_omegaconf(obj: Any) -> bool:
    try:
        from omegaconf import DictConfig, ListConfig
    except ImportError:  # pragma: no cover - omegaconf is installed in the dev venv
        return False
    return isinstance(obj, (DictConfig, ListConfig))


def _omegaconf_to_container(obj: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(obj, resolve=True)


def _floats_identical(a: float, b: float) -> bool:
    """Exact float equality that treats NaN == NaN and distinguishes -0.0 from 0.0."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


def _numpy_dtype_for(torch_dtype) -> np.dtype | None:
    """The numpy dtype ``TensorRef.numpy()`` should produce, or None if numpy has none."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.empty(0, dtype=torch_dtype).numpy().dtype
    except (TypeError, RuntimeError):
        pass
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover
        return None
    name = str(torch_dtype).removeprefix("torch.")
    ml = getattr(ml_dtypes, name, None)
    return np.dtype(ml) if ml is not None else None


def _numpy_required(torch_dtype) -> bool:
    """Whether the spec requires ``TensorRef.numpy()`` for this dtype.

    That is every dtype torch's own ``numpy()`` supports, plus bfloat16 and the
    float8 family (through ml_dtypes).  For others (complex32) ckptpeek may
    raise ``UnsupportedError`` just like torch does.
    """
    import torch

    name = str(torch_dtype).removeprefix("torch.")
    if name == "bfloat16" or name.startswith("float8"):
        return True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "ComplexHalf support is experimental"
            torch.empty(0, dtype=torch_dtype).numpy()
    except (TypeError, RuntimeError):
        return False
    return True


def _tensor_bytes(t) -> np.ndarray:
    """The logical (C-order) element bytes of a torch tensor, as uint8."""
    import torch

    flat = t.detach().resolve_conj().resolve_neg().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy()


def _array_bytes(arr: np.ndarray) -> np.ndarray:
    """The logical (C-order) element bytes of a numpy array, as uint8."""
    return np.ascontiguousarray(arr).reshape(-1).view(np.uint8)


# --------------------------------------------------------------------------- tensors


class _StorageTracker:
    """Check that torch storages and ckptpeek ``storage_key``s correspond one-to-one.

    It also checks pickle-memo parity: when torch returns the *same* tensor object
    at two key paths, ckptpeek must return the same ``TensorRef`` object there too.
    """

    def __init__(self) -> None:
        self.key_by_storage: dict[int, tuple[str, tuple]] = {}
        self.storage_by_key: dict[str, tuple[int, tuple]] = {}
        self.ref_by_tensor: dict[
            int, tuple[Any, Any, tuple]
        ] = {}  # id(tensor) -> (tensor, ref, path)

    def check_identity(self, tensor, ref, path: tuple, problems: list[str]) -> None:
        seen = self.ref_by_tensor.get(id(tensor))
        if seen is None:
            self.ref_by_tensor[id(tensor)] = (
                tensor,
                ref,
                path,
            )  # keep tensor alive: ids stay unique
        elif seen[1] is not ref:
            problems.append(
                f"{fmt_path(path)}: torch returns the same tensor object as at {fmt_path(seen[2])}, "
                "ckptpeek returns two different TensorRefs"
            )

    def add(self, tensor, ref, path: tuple, problems: list[str]) -> None:
        storage_id = tensor.untyped_storage()._cdata  # identity of the StorageImpl
        try:
            key = ref.storage_key
        except Exception as exc:  # noqa: BLE001 - report, don't crash the walk
            problems.append(f"{fmt_path(path)}: storage_key raised {exc!r}")
            return
        if not isinstance(key, str):
            problems.append(f"{fmt_path(path)}: storage_key is {type(key).__name__}, expected str")
        if storage_id in self.key_by_storage:
            first_key, first_path = self.key_by_storage[storage_id]
            if first_key != key:
                problems.append(
                    f"{fmt_path(path)}: shares a torch storage with {fmt_path(first_path)} "
                    f"but storage_key {key!r} != {first_key!r}"
                )
        else:
            self.key_by_storage[storage_id] = (key, path)
        if key in self.storage_by_key:
            first_storage, first_path = self.storage_by_key[key]
            if first_storage != storage_id:
                problems.append(
                    f"{fmt_path(path)}: storage_key {key!r} also used by {fmt_path(first_path)}, "
                    "but torch loaded them into different storages"
                )
        else:
            self.storage_by_key[key] = (storage_id, path)


def _compare_to_torch(tensor, ref, where: str, problems: list[str]) -> None:
    """``TensorRef.to_torch()`` must rebuild the same tensor: dtype, shape, strides, bits."""
    try:
        rebuilt = ref.to_torch()
    except Exception as exc:  # noqa: BLE001
        problems.append(f"{where}: to_torch() raised {exc!r} (dtype {tensor.dtype})")
        return
    if rebuilt.dtype != tensor.dtype or tuple(rebuilt.shape) != tuple(tensor.shape):
        problems.append(
            f"{where}: to_torch() gave {rebuilt.dtype}{tuple(rebuilt.shape)}, "
            f"expected {tensor.dtype}{tuple(tensor.shape)}"
        )
        return
    if rebuilt.stride() != tensor.stride():
        problems.append(f"{where}: to_torch().stride() {rebuilt.stride()} != {tensor.stride()}")
    if not np.array_equal(_tensor_bytes(rebuilt), _tensor_bytes(tensor)):
        problems.append(f"{where}: to_torch() values differ from torch.load's (bit-exact compare)")


def compare_tensor(tensor, ref, path: tuple, problems: list[str]) -> None:
    """Compare one torch tensor with one ckptpeek ``TensorRef``; append problems."""
    import torch

    where = fmt_path(path)

    def check(label: str, want, get):
        """Evaluate ``get()`` (guarding exceptions) and compare with ``want``."""
        try:
            value = get()
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{where}: {label} raised {exc!r}")
            return
        if value != want:
            problems.append(f"{where}: {label}: expected {want!r}, got {value!r}")

    check("str(dtype)", str(tensor.dtype), lambda: str(ref.dtype))
    check("shape", tuple(tensor.shape), lambda: tuple(ref.shape))
    check("stride()", tuple(tensor.stride()), lambda: tuple(ref.stride()))
    check("storage_offset()", tensor.storage_offset(), lambda: ref.storage_offset())
    check("requires_grad", tensor.requires_grad, lambda: ref.requires_grad)
    check("is_parameter", isinstance(tensor, torch.nn.Parameter), lambda: ref.is_parameter)
    check("ndim", tensor.ndim, lambda: ref.ndim)
    check("numel()", tensor.numel(), lambda: ref.numel())
    check("element_size()", tensor.element_size(), lambda: ref.element_size())
    check("nbytes", tensor.nbytes, lambda: ref.nbytes)
    check("is_contiguous()", tensor.is_contiguous(), lambda: ref.is_contiguous())

    _compare_to_torch(tensor, ref, where, problems)

    # ---- values
    want_np = _numpy_dtype_for(tensor.dtype)
    try:
        arr = ref.numpy()
    except Exception as exc:  # noqa: BLE001
        import ckptpeek

        if not _numpy_required(tensor.dtype) and isinstance(exc, ckptpeek.UnsupportedError):
            return  # e.g. complex32: torch's own numpy() refuses it too; to_torch() was checked
        problems.append(f"{where}: numpy() raised {exc!r} (dtype {tensor.dtype})")
        return
    if not isinstance(arr, np.ndarray):
        problems.append(f"{where}: numpy() returned {type(arr).__name__}, expected ndarray")
        return
    if arr.shape != tuple(tensor.shape):
        problems.append(f"{where}: numpy().shape {arr.shape} != {tuple(tensor.shape)}")
        return
    if want_np is not None and arr.dtype != want_np:
        problems.append(f"{where}: numpy().dtype {arr.dtype} != {want_np}")
        return
    if arr.dtype.itemsize != tensor.element_size():
        problems.append(
            f"{where}: numpy() itemsize {arr.dtype.itemsize} != {tensor.element_size()}"
        )
        return

    want_bytes = _tensor_bytes(tensor)
    got_bytes = _array_bytes(arr)
    if not np.array_equal(want_bytes, got_bytes):
        diff = (
            np.flatnonzero(want_bytes != got_bytes) if want_bytes.shape == got_bytes.shape else None
        )
        first = int(diff[0]) // tensor.element_size() if diff is not None and diff.size else "?"
        problems.append(
            f"{where}: values differ (bit-exact compare, dtype {tensor.dtype}, first differing element {first}): "
            f"expected {tensor.detach().reshape(-1)[:8].tolist()!r}..., got {arr.reshape(-1)[:8].tolist()!r}..."
        )
        return

    # Value-level equality too, where numpy understands the dtype natively.
    try:
        want_arr = tensor.detach().resolve_conj().resolve_neg().numpy()
    except (TypeError, RuntimeError):
        want_arr = None
    if want_arr is not None:
        equal_nan = want_arr.dtype.kind in "fc"
        if not np.array_equal(want_arr, arr, equal_nan=equal_nan):
            problems.append(f"{where}: np.array_equal failed for dtype {tensor.dtype}")

    # 0-d tensors are metric values: item() must agree.
    if tensor.ndim == 0:
        try:
            got_item = ref.item()
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{where}: item() raised {exc!r}")
            return
        want_item = tensor.item()
        if type(got_item) is not type(want_item):
            problems.append(
                f"{where}: item() type {type(got_item).__name__} != {type(want_item).__name__}"
            )
        elif isinstance(want_item, float):
            if not _floats_identical(want_item, got_item):
                problems.append(f"{where}: item() {got_item!r} != {want_item!r}")
        elif isinstance(want_item, complex):
            if not (
                _floats_identical(want_item.real, got_item.real)
                and _floats_identical(want_item.imag, got_item.imag)
            ):
                problems.append(f"{where}: item() {got_item!r} != {want_item!r}")
        elif got_item != want_item:
            problems.append(f"{where}: item() {got_item!r} != {want_item!r}")


# --------------------------------------------------------------------------- object graph walk


def _compare_mapping_items(expected: Mapping, got: Mapping, path, problems, storages) -> None:
    want_keys, got_keys = list(expected.keys()), list(got.keys())
    if want_keys != got_keys:
        missing = [k for k in want_keys if k not in got_keys]
        extra = [k for k in got_keys if k not in want_keys]
        if missing or extra:
            problems.append(
                f"{fmt_path(path)}: keys differ: missing {missing!r}, unexpected {extra!r}"
            )
        else:
            problems.append(
                f"{fmt_path(path)}: key order differs: expected {want_keys!r}, got {got_keys!r}"
            )
    for k in want_keys:
        if k in got_keys:
            got_k = next(gk for gk in got_keys if gk == k)
            if type(got_k) is not type(k):
                problems.append(
                    f"{fmt_path(path)}: key {k!r} has type {type(got_k).__name__}, expected {type(k).__name__}"
                )
            compare_objects(expected[k], got[k], path + (k,), problems, storages)


def compare_objects(
    expected: Any, got: Any, path: tuple, problems: list[str], storages=None
) -> None:
    """Recursively compare torch's ``expected`` with ckptpeek's ``got``; append problems."""
    import torch

    if storages is None:
        storages = _StorageTracker()
    where = fmt_path(path)

    def type_problem(want: str) -> None:
        problems.append(
            f"{where}: expected {want}, got {type(got).__module__}.{type(got).__qualname__}: {got!r:.200}"
        )

    # ---- tensors ---------------------------------------------------------------
    if isinstance(expected, torch.Tensor):
        if isinstance(got, torch.Tensor) or not hasattr(got, "storage_key"):
            type_problem("a TensorRef")
            return
        compare_tensor(expected, got, path, problems)
        storages.add(expected, got, path, problems)
        storages.check_identity(expected, got, path, problems)
        return

    # ---- torch value types (checked before tuple: torch.Size is a tuple) --------
    if isinstance(expected, torch.Size):
        if not isinstance(got, tuple) or type(got).__name__ != "Size":
            type_problem("a ckptpeek Size (tuple subclass)")
        elif tuple(got) != tuple(expected):
            problems.append(f"{where}: Size {tuple(got)!r} != {tuple(expected)!r}")
        return
    if isinstance(expected, (torch.device, torch.dtype)):
        if str(got) != str(expected):
            problems.append(
                f"{where}: str() {str(got)!r} != {str(expected)!r} ({type(expected).__name__} value)"
            )
        return

    # ---- config containers ------------------------------------------------------
    if _is_omegaconf(expected):
        plain = _omegaconf_to_container(expected)
        want_type = dict if isinstance(plain, dict) else list
        if not isinstance(got, want_type):
            type_problem(f"a {want_type.__name__} (subclass) for {type(expected).__name__}")
            return
        _compare_loose(plain, got, path, problems, storages)
        return
    if isinstance(expected, argparse.Namespace):
        if not isinstance(got, argparse.Namespace):
            type_problem("argparse.Namespace")
            return
        _compare_mapping_items(vars(expected), vars(got), path, problems, storages)
        return

    # ---- mappings -------------------------------------------------------------------
    if isinstance(expected, Mapping):
        if isinstance(expected, collections.OrderedDict):
            ok = isinstance(got, collections.OrderedDict)
            want = "collections.OrderedDict"
        elif type(expected) is dict:
            ok = type(got) is dict
            want = "a plain dict"
        else:  # AttributeDict and other dict subclasses: any dict will do
            ok = isinstance(got, dict)
            want = f"a dict (for {type(expected).__qualname__})"
        if not ok:
            type_problem(want)
            if not isinstance(got, Mapping):
                return
        _compare_mapping_items(expected, got, path, problems, storages)
        # nn.Module.state_dict() attaches per-module versions as ``_metadata``;
        # load_state_dict() relies on it, so a drop-in loader must keep it.
        if hasattr(expected, "_metadata"):
            got_meta = getattr(got, "_metadata", None)
            if got_meta is None:
                problems.append(f"{where}: the state dict's _metadata attribute was dropped")
            else:
                compare_objects(
                    expected._metadata, got_meta, path + ("<_metadata>",), problems, storages
                )
        return

    # ---- sequences ----------------------------------------------------------------
    if isinstance(expected, (list, tuple)):
        if type(got) is not type(expected):
            type_problem(type(expected).__name__)
            if not isinstance(got, (list, tuple)):
                return
        if len(got) != len(expected):
            problems.append(f"{where}: length {len(got)} != {len(expected)}")
            return
        for i, (e, g) in enumerate(zip(expected, got)):
            compare_objects(e, g, path + (i,), problems, storages)
        return
    if isinstance(expected, (set, frozenset)):
        if type(got) is not type(expected) or got != expected:
            problems.append(f"{where}: expected {expected!r}, got {got!r}")
        return

    # ---- scalars ------------------------------------------------------------------
    if expected is None or isinstance(expected, (bool, int, str, bytes, bytearray)):
        if type(got) is not type(expected) or got != expected:
            problems.append(
                f"{where}: expected {expected!r} ({type(expected).__name__}), got {got!r:.200} "
                f"({type(got).__name__})"
            )
        return
    if isinstance(expected, float):
        if type(got) is not float or not _floats_identical(expected, got):
            problems.append(
                f"{where}: expected float {expected!r}, got {got!r} ({type(got).__name__})"
            )
        return
    if isinstance(expected, complex):
        if (
            type(got) is not complex
            or not _floats_identical(expected.real, got.real)
            or not _floats_identical(expected.imag, got.imag)
        ):
            problems.append(f"{where}: expected complex {expected!r}, got {got!r}")
        return

    # ---- classes stored as values (e.g. Lightning's "hparams_type") -------------------
    if isinstance(expected, type):
        if got is expected:
            return
        mod = getattr(got, "module", None)
        name = getattr(got, "name", None) or getattr(got, "qualname", None)
        if (mod, name) != (expected.__module__, expected.__qualname__):
            problems.append(
                f"{where}: expected class {expected.__module__}.{expected.__qualname__}, got {got!r:.200}"
            )
        return

    # ---- anything else: fall back to equality --------------------------------------
    try:
        same = bool(got == expected)
    except Exception:  # noqa: BLE001
        same = False
    if not same:
        problems.append(
            f"{where}: unhandled type {type(expected).__qualname__}: expected {expected!r:.200}, "
            f"got {got!r:.200}"
        )


def _compare_loose(plain: Any, got: Any, path, problems, storages) -> None:
    """Compare an OmegaConf container (already converted to plain python) with ckptpeek's value.

    Container *types* are not enforced here (``dict``/``list`` subclasses are fine),
    but keys, order and leaf values are.
    """
    if isinstance(plain, dict):
        if not isinstance(got, dict):
            problems.append(
                f"{fmt_path(path)}: expected a dict (from DictConfig), got {type(got).__name__}"
            )
            return
        want_keys, got_keys = list(plain), list(got)
        if want_keys != got_keys:
            problems.append(f"{fmt_path(path)}: DictConfig keys {want_keys!r} != {got_keys!r}")
        for k in want_keys:
            if k in got:
                _compare_loose(plain[k], got[k], path + (k,), problems, storages)
        return
    if isinstance(plain, list):
        if not isinstance(got, list) or len(got) != len(plain):
            problems.append(
                f"{fmt_path(path)}: expected list {plain!r} (from ListConfig), got {got!r:.200}"
            )
            return
        for i, (e, g) in enumerate(zip(plain, got)):
            _compare_loose(e, g, path + (i,), problems, storages)
        return
    compare_objects(plain, got, path, problems, storages)


# --------------------------------------------------------------------------- public helpers


def expected_tensor_paths(obj: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """Depth-first ``(key_path, tensor)`` pairs of a torch-loaded object graph.

    Mirrors the order the spec promises for ``Checkpoint.tensors()``: mapping
    keys in insertion order, sequence items by index.
    """
    import torch

    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, torch.Size):
        return
    elif _is_omegaconf(obj):
        return  # configs hold no tensors in the corpus
    elif isinstance(obj, argparse.Namespace):
        yield from expected_tensor_paths(vars(obj), path)
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from expected_tensor_paths(v, path + (k,))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from expected_tensor_paths(v, path + (i,))


def to_plain(obj: Any) -> Any:
    """Convert configs to plain containers so hyper-parameters compare with ``==``.

    ``DictConfig``/``ListConfig`` -> dict/list (resolved), ``Namespace`` -> dict of
    its ``vars()``, any mapping -> dict, list subclasses -> list, tuples stay tuples;
    torch.Size / torch.device / torch.dtype and their ckptpeek stand-ins -> str/tuple.
    """
    if _is_omegaconf(obj):
        return to_plain(_omegaconf_to_container(obj))
    if isinstance(obj, argparse.Namespace):
        return {k: to_plain(v) for k, v in vars(obj).items()}
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_plain(v) for v in obj)
    return obj


def assert_matches_torch(path, engine) -> None:
    """Load ``path`` with torch and with ckptpeek (``engine``) and assert they agree.

    All mismatches are collected and reported together, each prefixed by its
    key path, e.g. ``root['optimizer_states'][0]['state'][0]['step']: stride()...``.
    """
    import torch

    import ckptpeek

    expected = torch.load(path, map_location="cpu", weights_only=False)
    got = ckptpeek.load_checkpoint(path, engine=engine, fallback=None)

    problems: list[str] = []
    compare_objects(expected, got, (), problems, _StorageTracker())
    if problems:
        shown = "\n  ".join(problems[:60])
        more = f"\n  ... and {len(problems) - 60} more" if len(problems) > 60 else ""
        raise AssertionError(
            f"ckptpeek (engine={engine!r}) disagrees with torch.load on {path}: "
            f"{len(problems)} mismatch(es):\n  {shown}{more}"
        )


def pickle_globals(path) -> set[tuple[str, str]]:
    """The ``(module, name)`` globals CPython's own unpickler resolves in a torch zip's data.pkl.

    Runs the pure-Python ``pickle._Unpickler`` with a ``find_class`` that records
    each name after the same Python-2 name mapping CPython applies to protocol < 3
    pickles (``__builtin__ long`` -> ``builtins int``), and returns an inert stand-in
    instead of importing anything.  This is the reference for ``Checkpoint.globals()``.
    """
    import _compat_pickle
    import pickle
    import zipfile

    class _Inert(dict):
        """Accepts any construction / state / items; never runs real code."""

        def __init__(self, *args, **kwargs):
            pass

        def __setstate__(self, state):
            pass

        def append(self, item):
            pass

        def extend(self, items):
            pass

    seen: set[tuple[str, str]] = set()

    class _Recorder(pickle._Unpickler):  # type: ignore[name-defined]  # pure-Python: exposes .proto
        def find_class(self, module, name):
            if self.proto < 3 and self.fix_imports:
                if (module, name) in _compat_pickle.NAME_MAPPING:
                    module, name = _compat_pickle.NAME_MAPPING[(module, name)]
                elif module in _compat_pickle.IMPORT_MAPPING:
                    module = _compat_pickle.IMPORT_MAPPING[module]
            seen.add((module, name))
            return _Inert

        def persistent_load(self, pid):
            return None

    with zipfile.ZipFile(path) as zf:
        member = next(n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
        data = zf.read(member)
    _Recorder(io.BytesIO(data)).load()
    return seen
