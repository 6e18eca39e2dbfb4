"""The facts a catalog shows about a checkpoint, as plain data.

Everything comes from the object graph already parsed; the only tensor bytes read are
those of one-element metric tensors (``best_model_score`` and friends, 4-8 bytes each).
Optimizer and scheduler types are not stored in checkpoints; they are inferred from
the keys of their state by the rule tables below (first match wins). This module needs
no pydantic: the CLI prints from it directly; ``summary.py`` wraps it in models.

No value a file holds makes it raise. Integer fields (epoch, steps, counts) keep the int
the file holds, however long; a metric that a float cannot hold (``10**5000``) is
``inf`` or ``-inf``; where an int becomes text (keys, the JSON view of hyper-parameters)
one too long for ``str()`` reads ``<int of N bits>``. The walks visit every shared
container once, and only the class's methods are called (``dict.get(d, k)``, never
``d.get``): a BUILD may have set instance attributes that shadow them.
"""

from __future__ import annotations

import ast
import datetime
import math
import pathlib
from collections import Counter

from ckptpeek._text import int_text, json_safe
from ckptpeek.tensor import TensorRef
from ckptpeek.torch_types import Device, DType
from ckptpeek.unpickle.standins import Placeholder, PlaceholderType, safe_repr
from ckptpeek.walk import is_namespace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

    from ckptpeek.checkpoint import Checkpoint

__all__ = (
    "collect",
    "to_jsonable",
    "infer_optimizer",
    "infer_scheduler",
    "scalar",
    "SUMMARY_FIELDS",
)


def _list() -> list[Any]:
    return []


def _dict() -> dict[Any, Any]:
    return {}


# The fields of each record, in order, with their defaults (a callable makes a fresh one).
# summary.py's pydantic models declare the same fields; a test keeps them in step.
MODEL_CHECKPOINT_FIELDS: Final = (
    ("key", None),
    ("monitor", None),
    ("mode", None),
    ("best_model_score", None),
    ("best_model_path", None),
    ("best_k_models", _dict),
    ("kth_best_model_path", None),
    ("kth_value", None),
    ("last_model_path", None),
    ("current_score", None),
    ("dirpath", None),
)
EARLY_STOPPING_FIELDS: Final = (
    ("key", None),
    ("monitor", None),
    ("mode", None),
    ("wait_count", None),
    ("stopped_epoch", None),
    ("best_score", None),
    ("patience", None),
)
OPTIMIZER_FIELDS: Final = (
    ("type", None),
    ("param_groups", None),
    ("params", None),
    ("lr", _list),
    ("state_tensors", None),
)
SCHEDULER_FIELDS: Final = (("type", None), ("last_epoch", None), ("last_lr", None))
SUMMARY_FIELDS: Final = (
    ("path", None),
    ("format", None),
    ("backend", None),
    ("file_size", None),
    ("bytes_read", None),
    ("top_level_keys", _list),
    ("epoch", None),
    ("global_step", None),
    ("lightning_version", None),
    ("hparams_name", None),
    ("hyper_parameters", None),
    ("model_checkpoints", _list),
    ("early_stopping", _list),
    ("other_callbacks", _list),
    ("optimizers", _list),
    ("lr_schedulers", _list),
    ("tensor_count", None),
    ("state_dict_tensors", None),
    ("parameter_count", None),
    ("dtypes", _dict),
    ("total_tensor_bytes", None),
    ("unknown_globals", _list),
    ("selected", None),
)


def _record(fields: tuple[tuple[str, Any], ...], **values: Any) -> dict[str, Any]:
    out = {}
    for name, default in fields:
        out[name] = (
            values.pop(name) if name in values else (default() if callable(default) else default)
        )
    if values:
        raise TypeError(f"unknown fields {sorted(values)}")
    return out


# -- rule tables: (type, param_group keys that must be present, keys that must be absent)
OPTIMIZER_RULES: Final[tuple[tuple[str, frozenset[str], frozenset[str]], ...]] = tuple(
    (name, frozenset(need.split()), frozenset(absent.split()))
    for name, need, absent in (
        ("AdamW", "betas amsgrad decoupled_weight_decay", ""),  # see _adam_variant
        ("Adam", "betas amsgrad", ""),
        ("NAdam", "betas momentum_decay", ""),
        ("RAdam", "betas decoupled_weight_decay", "amsgrad momentum_decay"),
        ("Adamax", "betas", "amsgrad decoupled_weight_decay momentum_decay"),
        ("SGD", "momentum dampening nesterov", ""),
        ("RMSprop", "alpha centered", ""),
        ("Adagrad", "lr_decay initial_accumulator_value", ""),
        ("Adadelta", "rho", ""),
        ("ASGD", "lambd alpha t0", ""),
        ("Rprop", "etas step_sizes", ""),
        ("LBFGS", "max_iter history_size", ""),
    )
)

SCHEDULER_RULES: Final[tuple[tuple[str, frozenset[str]], ...]] = tuple(
    (name, frozenset(keys.split()))
    for name, keys in (
        ("OneCycleLR", "total_steps"),
        ("CosineAnnealingWarmRestarts", "T_0 T_mult"),
        ("CosineAnnealingLR", "T_max eta_min"),
        ("ReduceLROnPlateau", "patience cooldown threshold"),
        ("CyclicLR", "max_lrs total_size"),
        ("SequentialLR", "_milestones _schedulers"),
        ("ChainedScheduler", "_schedulers"),
        ("PolynomialLR", "total_iters power"),
        ("LinearLR", "start_factor end_factor total_iters"),
        ("ConstantLR", "factor total_iters"),
        ("MultiStepLR", "milestones gamma"),
        ("StepLR", "step_size gamma"),
        ("LambdaLR", "lr_lambdas"),
        ("ExponentialLR", "gamma"),
    )
)


def _adam_variant(group: dict[str, Any]) -> str:
    return "AdamW" if dict.get(group, "decoupled_weight_decay") is True else "Adam"


def _text_keys(d: dict[Any, Any]) -> set[str]:
    """The string keys of ``d`` (the rules name only those; other keys are not hashed
    again: numbers can share a hash, strings cannot be made to)."""
    return {k for k in dict.keys(d) if type(k) is str}


def infer_optimizer(state: Any) -> str | None:
    groups = dict.get(state, "param_groups") if isinstance(state, dict) else None
    if not (isinstance(groups, list) and groups and isinstance(groups[0], dict)):
        return None
    keys = _text_keys(groups[0])
    for name, need, absent in OPTIMIZER_RULES:
        if need <= keys and not (absent & keys):
            return _adam_variant(groups[0]) if name in ("Adam", "AdamW") else name
    return None


def infer_scheduler(state: Any) -> str | None:
    if not isinstance(state, dict):
        return None
    keys = _text_keys(state)
    for name, need in SCHEDULER_RULES:
        if need <= keys:
            return name
    return None


# -- value helpers ------------------------------------------------------------------------
def scalar(value: Any) -> float | None:
    """A metric as a float: Python numbers, numpy scalars, one-element tensors.

    An int past the float range (a file may hold 10**5000) is the float it rounds to,
    ``inf`` or ``-inf``, as IEEE overflow gives: never an OverflowError.
    """
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    if isinstance(value, float):
        return float(value)
    if isinstance(value, TensorRef):
        if value.numel() != 1 or value.storage is None:
            return None
        try:
            return float(value.item())
        except (ValueError, TypeError, ArithmeticError):
            return None
    item = getattr(type(value), "item", None)  # numpy scalar (the class's method)
    if callable(item) and type(value).__module__ == "numpy":
        try:
            out = item(value)
        except (ValueError, TypeError):
            return None
        return scalar(out) if isinstance(out, (int, float)) else None
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    f = scalar(value)
    return int(f) if f is not None and math.isfinite(f) and f == int(f) else None


def _str(value: Any) -> str | None:
    return (
        value
        if isinstance(value, str)
        else (str(value) if isinstance(value, pathlib.PurePath) else None)
    )


def to_jsonable(obj: Any, budget: int = 100_000) -> Any:
    """Plain JSON-able data for display: ``_text.json_safe`` (THE rules for long ints,
    floats, cycles and the budget of values: at most ``budget``, shared sub-trees
    counted every time they appear, then ``"..."``) of ``obj`` with the checkpoint's own
    objects described (``_described``)."""
    return json_safe(_described(obj, budget), budget)


def _described(obj: Any, budget: int) -> Any:
    """``obj`` with what ``json_safe`` does not know replaced by plain data: namespaces and
    dicts become dicts with text keys (``_key``), lists, tuples and sets lists (each
    container once: shared and cyclic parts stay shared), tensors, dtypes, devices,
    paths, dates, bytes and numpy scalars their text or number, anything else its type's
    name. Numbers and text stay as they are (``json_safe`` decides). Iterative; past
    ``budget`` values, the rest is ``"..."``."""
    memo: dict[int, Any] = {}
    out: list[Any] = [None]
    todo: list[tuple[Any, Any, Any]] = [(obj, out, 0)]
    while todo:
        o, into, key = todo.pop()
        budget -= 1
        if budget < 0:
            into[key] = "..."
        elif o is None or isinstance(o, (bool, int, float, str)):
            into[key] = o
        elif id(o) in memo:
            into[key] = memo[id(o)]
        elif isinstance(o, dict) or is_namespace(o):
            d: dict[str, Any] = {}
            into[key] = memo[id(o)] = d
            pairs = []
            for k, v in list(dict.items(o) if isinstance(o, dict) else vars(o).items()):
                name = _key(k)
                d[name] = None
                pairs.append((v, d, name))
            todo.extend(reversed(pairs))  # the first values first: the budget ends last
        elif isinstance(o, (list, tuple, set, frozenset)):
            items: list[Any] = [None] * len(o)
            into[key] = memo[id(o)] = items
            todo.extend((v, items, i) for i, v in reversed(list(enumerate(o))))
        else:
            into[key] = _leaf(o)
    return out[0]


def _leaf(o: Any) -> Any:
    if isinstance(o, TensorRef):
        return f"tensor(shape={list(o.shape)}, dtype={o.dtype})"
    if isinstance(o, (DType, Device, pathlib.PurePath)):
        return str(o)
    if isinstance(o, (datetime.date, datetime.time)):
        return o.isoformat()
    if isinstance(o, bytes):
        return o[:1000].decode("utf-8", "replace")
    f = scalar(o)
    if f is not None:
        return f
    text = repr(o) if isinstance(o, Placeholder) else f"<{type(o).__name__}>"
    return text[:200]


def _key(k: Any) -> str:
    if isinstance(k, str):
        return k
    if isinstance(k, (PlaceholderType, Placeholder)):
        return k.qualname
    if isinstance(k, int) and not isinstance(k, bool):
        return int_text(k)
    return safe_repr(k) if not isinstance(k, (float, bool)) else str(k)


def parse_callback_key(key: Any) -> tuple[str, dict[str, Any]]:
    """``"ModelCheckpoint{'monitor': 'val/hmean', 'mode': 'max'}"`` -> name and state key.

    Parsed with ``ast.literal_eval`` (literals only, nothing evaluated). Lightning < 1.5
    keyed callbacks by their class, which arrives here as a placeholder type.
    """
    if isinstance(key, (PlaceholderType, Placeholder)):
        return key.name, {}
    if not isinstance(key, str):
        return safe_repr(key), {}
    name, brace, rest = key.partition("{")
    if not brace or len(key) > 10_000:
        return key, {}
    try:
        state = ast.literal_eval("{" + rest)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return name, {}
    return name, state if isinstance(state, dict) else {}


def _model_checkpoint(key: str, info: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    best_k = dict.get(state, "best_k_models")
    return _record(
        MODEL_CHECKPOINT_FIELDS,
        key=key,
        monitor=_str(dict.get(state, "monitor", info.get("monitor"))),
        mode=_str(info.get("mode", dict.get(state, "mode"))),
        best_model_score=scalar(dict.get(state, "best_model_score")),
        best_model_path=_str(dict.get(state, "best_model_path")) or None,
        best_k_models={_key(k): scalar(v) for k, v in dict.items(best_k)}
        if isinstance(best_k, dict)
        else {},
        kth_best_model_path=_str(dict.get(state, "kth_best_model_path")) or None,
        kth_value=scalar(dict.get(state, "kth_value")),
        last_model_path=_str(dict.get(state, "last_model_path")) or None,
        current_score=scalar(dict.get(state, "current_score")),
        dirpath=_str(dict.get(state, "dirpath")),
    )


def _early_stopping(key: str, info: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    return _record(
        EARLY_STOPPING_FIELDS,
        key=key,
        monitor=_str(info.get("monitor", dict.get(state, "monitor"))),
        mode=_str(info.get("mode", dict.get(state, "mode"))),
        wait_count=_int(dict.get(state, "wait_count")),
        stopped_epoch=_int(dict.get(state, "stopped_epoch")),
        best_score=scalar(dict.get(state, "best_score")),
        patience=_int(dict.get(state, "patience")),
    )


def _callbacks(
    root: dict[str, Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    mcs: list[dict[str, Any]] = []
    ess: list[dict[str, Any]] = []
    others: list[str] = []
    callbacks = dict.get(root, "callbacks")
    if isinstance(callbacks, dict):
        for key, state in dict.items(callbacks):
            name, info = parse_callback_key(key)
            state = state if isinstance(state, dict) else {}
            label = key if isinstance(key, str) else name
            if name == "ModelCheckpoint" or "best_model_score" in state:
                mcs.append(_model_checkpoint(label, info, state))
            elif name == "EarlyStopping" or "wait_count" in state:
                ess.append(_early_stopping(label, info, state))
            else:
                others.append(label)
    # Lightning < 0.10 kept these at the top level
    if (
        "checkpoint_callback_best_model_score" in root
        or "checkpoint_callback_best_model_path" in root
    ):
        mcs.append(
            _record(
                MODEL_CHECKPOINT_FIELDS,
                key="checkpoint_callback",
                best_model_score=scalar(dict.get(root, "checkpoint_callback_best_model_score")),
                best_model_path=_str(dict.get(root, "checkpoint_callback_best_model_path")),
            )
        )
    if "early_stop_callback_wait" in root or "early_stop_callback_patience" in root:
        ess.append(
            _record(
                EARLY_STOPPING_FIELDS,
                key="early_stop_callback",
                wait_count=_int(dict.get(root, "early_stop_callback_wait")),
                patience=_int(dict.get(root, "early_stop_callback_patience")),
            )
        )
    return mcs, ess, others


def _tensor_count(state: dict[Any, Any]) -> int:
    return sum(1 for v in dict.values(state) if isinstance(v, TensorRef))


def _optimizer(st: dict[Any, Any]) -> dict[str, Any]:
    raw_groups, raw_state = dict.get(st, "param_groups"), dict.get(st, "state")
    groups = raw_groups if isinstance(raw_groups, list) else []
    per_param = raw_state if isinstance(raw_state, dict) else {}
    # shared per-parameter states (the memo) are counted where they occur, walked once
    counts: dict[int, int] = {}
    n_tensors = 0
    for s in dict.values(per_param):
        if isinstance(s, dict):
            n = counts.get(id(s))
            if n is None:
                n = counts[id(s)] = _tensor_count(s)
            n_tensors += n
    dicts = [g for g in groups if isinstance(g, dict)]
    params = (dict.get(g, "params") for g in dicts)
    return _record(
        OPTIMIZER_FIELDS,
        type=infer_optimizer(st),
        param_groups=len(groups),
        params=sum(len(p) for p in params if isinstance(p, (list, tuple))),
        lr=[scalar(dict.get(g, "lr")) for g in dicts],
        state_tensors=n_tensors,
    )


def _scheduler(st: dict[Any, Any]) -> dict[str, Any]:
    last_lr = dict.get(st, "_last_lr")
    return _record(
        SCHEDULER_FIELDS,
        type=infer_scheduler(st),
        last_epoch=_int(dict.get(st, "last_epoch")),
        last_lr=[scalar(v) for v in last_lr] if isinstance(last_lr, list) else None,
    )


def _each_state(root: dict[str, Any], key: str, make: Any) -> list[dict[str, Any]]:
    """``make(state)`` for every dict in the list ``root[key]``: a state the list holds
    many times (shared through the memo) is made once and its record repeated."""
    states = dict.get(root, key)
    made: dict[int, dict[str, Any]] = {}
    out = []
    for st in states if isinstance(states, list) else []:
        if isinstance(st, dict):
            record = made.get(id(st))
            if record is None:
                record = made[id(st)] = make(st)
            out.append(record)
    return out


def _optimizers(root: dict[str, Any]) -> list[dict[str, Any]]:
    return _each_state(root, "optimizer_states", _optimizer)


def _schedulers(root: dict[str, Any]) -> list[dict[str, Any]]:
    return _each_state(root, "lr_schedulers", _scheduler)


def collect(ckpt: Checkpoint) -> dict[str, Any]:
    """The summary of an opened checkpoint as plain, JSON-able data (fields in the order
    of ``SUMMARY_FIELDS``; ``Checkpoint.summary()`` wraps it in a pydantic model)."""
    root = ckpt.root
    tensors = list(ckpt.tensors())
    top = root if isinstance(root, dict) else {}
    state_dict = dict.get(
        top,
        "state_dict",
        dict.get(top, "model") if isinstance(dict.get(top, "model"), dict) else None,
    )
    if state_dict is None and all(isinstance(v, TensorRef) for v in dict.values(top)) and top:
        state_dict = top
    sd_tensors = (
        [v for v in dict.values(state_dict) if isinstance(v, TensorRef)]
        if isinstance(state_dict, dict)
        else []
    )
    storages: dict[str, int] = {}
    for _, t in tensors:
        if t.storage is not None:
            storages[t.storage.key] = t.storage.nbytes
    mcs, ess, others = _callbacks(top)
    hp = dict.get(top, "hyper_parameters", dict.get(top, "hparams"))
    return _record(
        SUMMARY_FIELDS,
        path=ckpt.path,
        format=ckpt.format,
        backend=ckpt.backend,
        file_size=ckpt.file_size,
        bytes_read=ckpt.bytes_read,
        top_level_keys=[_key(k) for k in top],
        epoch=_int(dict.get(top, "epoch")),
        global_step=_int(dict.get(top, "global_step")),
        lightning_version=_str(dict.get(top, "pytorch-lightning_version")),
        hparams_name=_str(dict.get(top, "hparams_name")),
        hyper_parameters=to_jsonable(hp) if isinstance(hp, dict) or is_namespace(hp) else None,
        model_checkpoints=mcs,
        early_stopping=ess,
        other_callbacks=others,
        optimizers=_optimizers(top),
        lr_schedulers=_schedulers(top),
        tensor_count=len(tensors),
        state_dict_tensors=len(sd_tensors),
        parameter_count=sum(t.numel() for t in sd_tensors),
        dtypes=dict(Counter(str(t.dtype) for _, t in tensors).most_common()),
        total_tensor_bytes=sum(storages.values()),
        unknown_globals=[str(g) for g in ckpt.globals() if not g.safe],
        selected=None if ckpt.selected is None else sorted(map(str, ckpt.selected)),
    )
