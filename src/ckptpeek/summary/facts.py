"""The facts a catalog shows about a checkpoint, as plain data.

Everything comes from the object graph already parsed; the only tensor bytes read are
those of one-element metric tensors (``best_model_score`` and friends, 4-8 bytes each).
Optimizer and scheduler types are not stored in checkpoints; they are inferred from
the keys of their state by the rule tables below (first match wins). This module needs
no pydantic: the CLI prints from it directly; ``summary.py`` wraps it in models.
"""

from __future__ import annotations

import ast
import datetime
import math
import pathlib
from collections import Counter

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
    return "AdamW" if group.get("decoupled_weight_decay") is True else "Adam"


def infer_optimizer(state: Any) -> str | None:
    groups = state.get("param_groups") if isinstance(state, dict) else None
    if not (isinstance(groups, list) and groups and isinstance(groups[0], dict)):
        return None
    keys = set(groups[0])
    for name, need, absent in OPTIMIZER_RULES:
        if need <= keys and not (absent & keys):
            return _adam_variant(groups[0]) if name in ("Adam", "AdamW") else name
    return None


def infer_scheduler(state: Any) -> str | None:
    if not isinstance(state, dict):
        return None
    keys = set(state)
    for name, need in SCHEDULER_RULES:
        if need <= keys:
            return name
    return None


# -- value helpers ------------------------------------------------------------------------
def scalar(value: Any) -> float | None:
    """A metric as a float: Python numbers, numpy scalars, one-element tensors."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, TensorRef):
        if value.numel() != 1 or value.storage is None:
            return None
        try:
            return float(value.item())
        except (ValueError, TypeError, ArithmeticError):
            return None
    item = getattr(value, "item", None)  # numpy scalar
    if callable(item) and type(value).__module__ == "numpy":
        try:
            out = item()
        except (ValueError, TypeError):
            return None
        return float(out) if isinstance(out, (int, float)) else None
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
    """Plain JSON-able data for display: tensors become short descriptions.

    At most ``budget`` values are converted (shared sub-trees count every time they
    appear, so a pickle of shared references cannot make this exponential); past the
    budget, or 64 levels deep, values are shown as ``"..."``.
    """
    remaining = [budget]

    def conv(o: Any, depth: int) -> Any:
        remaining[0] -= 1
        if remaining[0] < 0 or depth > 64:
            return "..."
        if o is None or isinstance(o, (bool, int, str)):
            return o
        if isinstance(o, float):
            return o if math.isfinite(o) else str(o)
        if isinstance(o, dict):
            return {_key(k): conv(v, depth + 1) for k, v in o.items()}
        if isinstance(o, (list, tuple, set, frozenset)):
            return [conv(v, depth + 1) for v in o]
        if is_namespace(o):
            return {k: conv(v, depth + 1) for k, v in vars(o).items()}
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

    return conv(obj, 0)


def _key(k: Any) -> str:
    if isinstance(k, str):
        return k
    if isinstance(k, (PlaceholderType, Placeholder)):
        return k.qualname
    return safe_repr(k) if not isinstance(k, (int, float, bool)) else str(k)


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
    best_k = state.get("best_k_models")
    return _record(
        MODEL_CHECKPOINT_FIELDS,
        key=key,
        monitor=_str(state.get("monitor", info.get("monitor"))),
        mode=_str(info.get("mode", state.get("mode"))),
        best_model_score=scalar(state.get("best_model_score")),
        best_model_path=_str(state.get("best_model_path")) or None,
        best_k_models={_key(k): scalar(v) for k, v in best_k.items()}
        if isinstance(best_k, dict)
        else {},
        kth_best_model_path=_str(state.get("kth_best_model_path")) or None,
        kth_value=scalar(state.get("kth_value")),
        last_model_path=_str(state.get("last_model_path")) or None,
        current_score=scalar(state.get("current_score")),
        dirpath=_str(state.get("dirpath")),
    )


def _early_stopping(key: str, info: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    return _record(
        EARLY_STOPPING_FIELDS,
        key=key,
        monitor=_str(info.get("monitor", state.get("monitor"))),
        mode=_str(info.get("mode", state.get("mode"))),
        wait_count=_int(state.get("wait_count")),
        stopped_epoch=_int(state.get("stopped_epoch")),
        best_score=scalar(state.get("best_score")),
        patience=_int(state.get("patience")),
    )


def _callbacks(
    root: dict[str, Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    mcs: list[dict[str, Any]] = []
    ess: list[dict[str, Any]] = []
    others: list[str] = []
    callbacks = root.get("callbacks")
    if isinstance(callbacks, dict):
        for key, state in callbacks.items():
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
                best_model_score=scalar(root.get("checkpoint_callback_best_model_score")),
                best_model_path=_str(root.get("checkpoint_callback_best_model_path")),
            )
        )
    if "early_stop_callback_wait" in root or "early_stop_callback_patience" in root:
        ess.append(
            _record(
                EARLY_STOPPING_FIELDS,
                key="early_stop_callback",
                wait_count=_int(root.get("early_stop_callback_wait")),
                patience=_int(root.get("early_stop_callback_patience")),
            )
        )
    return mcs, ess, others


def _optimizers(root: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    states = root.get("optimizer_states")
    for st in states if isinstance(states, list) else []:
        if not isinstance(st, dict):
            continue
        raw_groups, raw_state = st.get("param_groups"), st.get("state")
        groups = raw_groups if isinstance(raw_groups, list) else []
        per_param = raw_state if isinstance(raw_state, dict) else {}
        n_tensors = sum(
            1
            for s in per_param.values()
            if isinstance(s, dict)
            for v in s.values()
            if isinstance(v, TensorRef)
        )
        out.append(
            _record(
                OPTIMIZER_FIELDS,
                type=infer_optimizer(st),
                param_groups=len(groups),
                params=sum(
                    len(g["params"])
                    for g in groups
                    if isinstance(g, dict) and isinstance(g.get("params"), (list, tuple))
                ),
                lr=[scalar(g.get("lr")) for g in groups if isinstance(g, dict)],
                state_tensors=n_tensors,
            )
        )
    return out


def _schedulers(root: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    states = root.get("lr_schedulers")
    for st in states if isinstance(states, list) else []:
        if isinstance(st, dict):
            last_lr = st.get("_last_lr")
            out.append(
                _record(
                    SCHEDULER_FIELDS,
                    type=infer_scheduler(st),
                    last_epoch=_int(st.get("last_epoch")),
                    last_lr=[scalar(v) for v in last_lr] if isinstance(last_lr, list) else None,
                )
            )
    return out


def collect(ckpt: Checkpoint) -> dict[str, Any]:
    """The summary of an opened checkpoint as plain, JSON-able data (fields in the order
    of ``SUMMARY_FIELDS``; ``Checkpoint.summary()`` wraps it in a pydantic model)."""
    root = ckpt.root
    tensors = list(ckpt.tensors())
    top = root if isinstance(root, dict) else {}
    state_dict = top.get(
        "state_dict", top.get("model") if isinstance(top.get("model"), dict) else None
    )
    if state_dict is None and all(isinstance(v, TensorRef) for v in top.values()) and top:
        state_dict = top
    sd_tensors = (
        [v for v in state_dict.values() if isinstance(v, TensorRef)]
        if isinstance(state_dict, dict)
        else []
    )
    storages: dict[str, int] = {}
    for _, t in tensors:
        if t.storage is not None:
            storages[t.storage.key] = t.storage.nbytes
    mcs, ess, others = _callbacks(top)
    hp = top.get("hyper_parameters", top.get("hparams"))
    return _record(
        SUMMARY_FIELDS,
        path=ckpt.path,
        format=ckpt.format,
        backend=ckpt.backend,
        file_size=ckpt.file_size,
        bytes_read=ckpt.bytes_read,
        top_level_keys=[_key(k) for k in top],
        epoch=_int(top.get("epoch")),
        global_step=_int(top.get("global_step")),
        lightning_version=_str(top.get("pytorch-lightning_version")),
        hparams_name=_str(top.get("hparams_name")),
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
