"""The sources of a catalog entry, in the order the merge consults them.

Each is ``from_<name>(ctx) -> SourceResult``; ``fields`` uses flat names: ``epoch``,
``global_step``, ``created``, ``monitor``, ``mode``, ``score``, ``is_best``, ``is_last``,
``architecture.encoder`` / ``.decoder`` / ``.head``, ``signatures``, ``config`` and one
``metrics.<name>`` per metric. ``origin`` is a path relative to the catalog root, or
``"header"`` / ``"filename"`` / ``"signatures"``.

1. ``metadata``   ``<stem>.metadata.yaml`` / ``<stem>.metadata.json`` (``MetadataSidecar``)
2. ``config``     ``<stem>.config.yaml`` / ``<stem>.config.json``
3. ``hydra``      the nearest ``.hydra/config.yaml`` (+ ``overrides.yaml``) up to the root
4. ``header``     the checkpoint itself, read header-only and selectively with ckptpeek
5. ``filename``   ``epoch=10-step=1100``, ``epoch=3-val_hmean=0.8512``, ``last``, ``best``
6. ``signatures`` architecture recognised from the state dict's key -> shape
"""

from __future__ import annotations

import copy
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ckptpeek
from ckptpeek import DEFAULT_LIMITS, Limits, TensorRef
from ckptpeek.summary import collect, to_jsonable

from .agree import show_value, unusable, values_agree
from .hydra import find_hydra_dir, load_hydra_config, load_yaml_or_json, resolve_config, stamp_of
from .models import MetadataSidecar
from .scan import strip_checkpoint_suffix
from .signatures import MAX_KEY_CHARS, infer_signatures

__all__ = (
    "CATALOG_KEYS",
    "DEFAULT_FILENAME_PATTERNS",
    "EntryContext",
    "FileMemo",
    "HeaderRead",
    "SIDECAR_KINDS",
    "SOURCES",
    "SourceResult",
    "arch_from_config",
    "compile_patterns",
    "config_summary",
    "from_config",
    "from_filename",
    "from_header",
    "from_hydra",
    "from_metadata",
    "from_signatures",
    "parse_filename",
    "read_header",
    "sidecar_paths",
)

#: Keys whose value is a state dict (the first present wins); else a flat dict of tensors.
_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")

#: Summary keys whose facts no entry field uses: ``from_header`` takes only the epoch,
#: global step, ModelCheckpoint states and hyper-parameters of ``collect``'s facts.
_UNUSED_SUMMARY_KEYS = frozenset(
    {
        "lr_schedulers",
        "early_stop_callback_wait",
        "early_stop_callback_patience",
        "pytorch-lightning_version",
        "hparams_name",
    }
)

#: The top-level keys ``read_header`` reads: those of the summary (``ckptpeek.SUMMARY_KEYS``,
#: which already leaves out Lightning's loops and optimizer states) that an entry uses, and
#: every key the state dict may be under (the signatures need its shapes).
CATALOG_KEYS: frozenset[str] = (ckptpeek.SUMMARY_KEYS - _UNUSED_SUMMARY_KEYS) | frozenset(
    _STATE_DICT_KEYS
)

#: Filename patterns, applied to the stem (``-vN`` suffix removed) with ``finditer``.
#: Named groups: ``epoch``, ``step``/``global_step``, ``last``, ``best``, a
#: ``metric``+``value`` pair, or any other name = a metric of that name.
DEFAULT_FILENAME_PATTERNS: tuple[str, ...] = (
    r"(?:^|[-_])epoch=(?P<epoch>\d+)",
    r"(?:^|[-_])(?:global_)?step=(?P<step>\d+)",
    r"(?:^|-)(?P<metric>(?!epoch=|step=|global_step=)[A-Za-z][A-Za-z0-9_.]*)="
    r"(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf)(?=-|$)",
    r"^(?P<last>last)(?:$|[-_])",
    r"^(?P<best>best)(?:$|[-_])",
)

_VERSION_SUFFIX = re.compile(r"-v\d+$")
#: the sidecar kinds: ``<stem>.<kind>.yaml|yml|json``
SIDECAR_KINDS = ("metadata", "config")
_SIDE_EXTS = (".yaml", ".yml", ".json")


def compile_patterns(patterns: Any) -> tuple[re.Pattern[str], ...]:
    if patterns is None:
        patterns = DEFAULT_FILENAME_PATTERNS
    if isinstance(patterns, (str, re.Pattern)):
        patterns = [patterns]
    return tuple(p if isinstance(p, re.Pattern) else re.compile(p) for p in patterns)


@dataclass
class SourceResult:
    name: str
    origin: str
    fields: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: a per-field origin where it differs from ``origin`` (two sidecar files of one kind)
    field_origins: dict[str, str] = field(default_factory=dict)
    #: a file of this source exists but could not be used (the entry becomes "partial")
    failed: bool = False
    #: the checkpoint could not be read (the entry becomes "unreadable")
    errors: list[str] = field(default_factory=list)


@dataclass
class HeaderRead:
    facts: dict[str, Any]
    shapes: dict[str, tuple[int, ...]]
    hyper_parameters: Any


class FileMemo:
    """Parsed shared files (Hydra configs), reused by every entry of one build."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hydra: dict[Path, tuple[Any, Any]] = {}

    def hydra(
        self, hydra_dir: Path, limits: Limits = DEFAULT_LIMITS, root: Path | None = None
    ) -> tuple[dict[str, Any], list[str]]:
        """``load_hydra_config`` once per directory and file stamps (raises as it does)."""
        stamps = (stamp_of(hydra_dir / "config.yaml"), stamp_of(hydra_dir / "overrides.yaml"))
        with self._lock:
            hit = self._hydra.get(hydra_dir)
        if hit is not None and hit[0] == stamps:
            result = hit[1]
        else:
            try:
                result = load_hydra_config(hydra_dir, limits, root)
            except (ValueError, OSError) as exc:
                result = exc
            with self._lock:
                self._hydra[hydra_dir] = (stamps, result)
        if isinstance(result, Exception):
            raise result
        cfg, notes = result
        return copy.deepcopy(cfg), list(notes)


@dataclass
class EntryContext:
    path: Path  # absolute
    root: Path  # absolute
    relpath: str
    experiment: str
    rules: Any = None
    patterns: tuple[re.Pattern[str], ...] = field(default_factory=lambda: compile_patterns(None))
    memo: FileMemo = field(default_factory=FileMemo)
    limits: Limits = DEFAULT_LIMITS
    _header: HeaderRead | BaseException | None = None
    _hydra_dir: Any = False

    @property
    def stem(self) -> str:
        stem = strip_checkpoint_suffix(self.path.name)
        return stem if stem != self.path.name else self.path.stem

    def rel(self, p: Path) -> str:
        try:
            return p.relative_to(self.root).as_posix()
        except ValueError:
            return str(p)

    def hydra_dir(self) -> Path | None:
        if self._hydra_dir is False:
            self._hydra_dir = find_hydra_dir(self.path, self.root)
        return self._hydra_dir if isinstance(self._hydra_dir, Path) else None

    def header(self) -> HeaderRead:
        """The checkpoint, read once (header-only, selective); raises what ckptpeek raises."""
        if self._header is None:
            try:
                self._header = read_header(self.path, self.limits)
            except BaseException as exc:  # noqa: BLE001 - kept and re-raised per caller
                self._header = exc
        if isinstance(self._header, BaseException):
            raise self._header
        return self._header


def sidecar_paths(path: Path, stem: str, kind: str) -> list[Path]:
    return [path.with_name(f"{stem}.{kind}{ext}") for ext in _SIDE_EXTS]


# --------------------------------------------------------------------------- helpers

_ARCH_ALIASES = {
    "encoder": ("encoder", "backbone"),
    "decoder": ("decoder", "neck"),
    "head": ("head",),
}
_NAME_KEYS = ("name", "model_name", "arch", "architecture", "type", "backbone", "variant")


def _component_name(value: Any) -> str | None:
    if isinstance(value, str):
        text = value.strip()
        return text if text and "${" not in text else None
    if isinstance(value, dict):
        for key in _NAME_KEYS:
            name = value.get(key)
            if isinstance(name, str) and name.strip() and "${" not in name:
                return name.strip()
        target = value.get("_target_") or value.get("class_path")
        if isinstance(target, str) and target.strip():
            return target.strip().rsplit(".", 1)[-1]
    return None


def arch_from_config(cfg: Any, max_depth: int = 3) -> dict[str, str]:
    """``architecture.<part>`` names found in a config (breadth first, shallowest wins)."""
    out: dict[str, str] = {}
    level = [cfg] if isinstance(cfg, dict) else []
    for _ in range(max_depth + 1):
        nxt = []
        for node in level:
            for part, aliases in _ARCH_ALIASES.items():
                if f"architecture.{part}" in out:
                    continue
                for alias in aliases:
                    name = _component_name(node.get(alias)) if alias in node else None
                    if name is not None:
                        out[f"architecture.{part}"] = name
                        break
            nxt += [v for v in node.values() if isinstance(v, dict)]
        level = nxt
        if len(out) == 3 or not level:
            break
    return out


_SUMMARY_BLOCKS = (
    "model",
    "architecture",
    "encoder",
    "decoder",
    "head",
    "optimizer",
    "optim",
    "scheduler",
    "lr_scheduler",
    "loss",
    "data",
    "dataset",
    "datamodule",
    "dataloader",
    "trainer",
    "seed",
    "exp_name",
    "experiment",
)


def config_summary(cfg: Any) -> dict[str, Any] | None:
    """The model/optimizer/data blocks of a config (all of it if it has none of them)."""
    if not isinstance(cfg, dict) or not cfg:
        return None
    picked = {k: cfg[k] for k in _SUMMARY_BLOCKS if k in cfg}
    if not picked:
        for value in cfg.values():  # e.g. hyper_parameters = {"cfg": {...}}
            if isinstance(value, dict) and any(k in value for k in _SUMMARY_BLOCKS):
                picked = {k: value[k] for k in _SUMMARY_BLOCKS if k in value}
                break
    out: dict[str, Any] = to_jsonable(picked or cfg)
    return out


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- 1. metadata


def from_metadata(ctx: EntryContext) -> SourceResult:
    res = SourceResult("metadata", "")
    for path in sidecar_paths(ctx.path, ctx.stem, "metadata"):
        if not os.path.lexists(path):  # a FIFO or a dangling link: refused with a warning
            continue
        origin = ctx.rel(path)
        res.origin = res.origin or origin
        try:
            data = load_yaml_or_json(path, ctx.limits, ctx.root)
            sidecar, notes = MetadataSidecar.migrate({} if data is None else data)
        except (ValueError, OSError) as exc:
            res.warnings.append(f"{origin}: unusable metadata sidecar: {_short(exc)}")
            res.failed = True
            continue
        res.warnings += [f"{origin}: {note}" for note in notes]
        fields: dict[str, Any] = {
            "epoch": sidecar.epoch,
            "global_step": sidecar.global_step,
            "created": sidecar.created_at,
            "monitor": sidecar.monitor,
            "mode": sidecar.mode,
            "score": sidecar.score,
            "architecture.encoder": sidecar.encoder,
            "architecture.decoder": sidecar.decoder,
            "architecture.head": sidecar.head,
        }
        fields.update({f"metrics.{k}": v for k, v in sidecar.metrics.items()})
        _add_fields(res, fields, origin, "metadata sidecars")
    return res


def _add_fields(res: SourceResult, fields: dict[str, Any], origin: str, what: str) -> None:
    """Merge one file's fields into a source of several files: the first file wins."""
    for key, value in fields.items():
        if value is None:
            continue
        why = unusable(key, value)
        if why is not None:  # skipped before it is compared: the next file may give it
            res.warnings.append(f"{key}: {what}: {origin} says {why}")
            continue
        if key in res.fields:
            if not values_agree(key, res.fields[key], value):
                first = res.field_origins.get(key, res.origin)
                res.warnings.append(
                    f"{what} disagree on {key}: {first} says "
                    f"{show_value(res.fields[key])}, {origin} says {show_value(value)}"
                )
            continue
        res.fields[key] = value
        if origin != res.origin:
            res.field_origins[key] = origin


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


# --------------------------------------------------------------------------- 2. config


def from_config(ctx: EntryContext) -> SourceResult:
    res = SourceResult("config", "")
    for path in sidecar_paths(ctx.path, ctx.stem, "config"):
        if not os.path.lexists(path):
            continue
        origin = ctx.rel(path)
        res.origin = res.origin or origin
        try:
            cfg = load_yaml_or_json(path, ctx.limits, ctx.root)
            if cfg is None:
                cfg = {}
            if not isinstance(cfg, dict):
                raise ValueError(f"holds a {type(cfg).__name__}, not a mapping")
        except (ValueError, OSError) as exc:
            res.warnings.append(f"{origin}: unusable config sidecar: {_short(exc)}")
            res.failed = True
            continue
        res.warnings += [f"{origin}: {note}" for note in resolve_config(cfg, ctx.limits)]
        fields: dict[str, Any] = dict(arch_from_config(cfg))
        fields["config"] = config_summary(cfg)
        _add_fields(res, fields, origin, "config sidecars")
    return res


# --------------------------------------------------------------------------- 3. hydra


def from_hydra(ctx: EntryContext) -> SourceResult:
    hydra_dir = ctx.hydra_dir()
    if hydra_dir is None:
        return SourceResult("hydra", "")
    origin = ctx.rel(hydra_dir / "config.yaml")
    res = SourceResult("hydra", origin)
    try:
        cfg, notes = ctx.memo.hydra(hydra_dir, ctx.limits, ctx.root)
    except (ValueError, OSError) as exc:
        res.warnings.append(f"{origin}: unusable Hydra config: {_short(exc)}")
        res.failed = True
        return res
    res.warnings += [f"{ctx.rel(hydra_dir)}: {n}" for n in notes]
    res.fields.update(arch_from_config(cfg))
    summary = config_summary(cfg)
    if summary is not None:
        res.fields["config"] = summary
    return res


# --------------------------------------------------------------------------- 4. header


def read_header(path: Path, limits: Limits = DEFAULT_LIMITS) -> HeaderRead:
    """Open the checkpoint header-only with only the keys an entry needs (``CATALOG_KEYS``),
    under ``limits``.

    The root and the state dict are made by the file: only ``dict``'s own methods are
    called on them (``dict.get(top, k)``, never ``top.get``), as a BUILD may have set
    instance attributes ``get``, ``items``... that shadow them."""
    select = None if path.name.lower().endswith(".safetensors") else CATALOG_KEYS
    ckpt = ckptpeek.open(path, select=select, limits=limits)
    try:
        root = ckpt.root
        if select is not None and isinstance(root, dict) and not root:
            ckpt.close()  # a bare state dict: none of the catalog keys, read it all
            ckpt = ckptpeek.open(path, limits=limits)
            root = ckpt.root
        facts = collect(ckpt)
        top = root if isinstance(root, dict) else {}
        sd: Any = None
        for key in _STATE_DICT_KEYS:
            if isinstance(dict.get(top, key), dict):
                sd = dict.get(top, key)
                break
        if sd is None and top and all(isinstance(v, TensorRef) for v in dict.values(top)):
            sd = top
        shapes: dict[str, tuple[int, ...]] = {}
        if isinstance(sd, dict):
            for k, v in dict.items(sd):
                if isinstance(k, str) and isinstance(v, TensorRef):
                    shapes[k] = tuple(int(d) for d in v.shape)
        hp = dict.get(top, "hyper_parameters", dict.get(top, "hparams"))
        return HeaderRead(facts, shapes, facts.get("hyper_parameters") if hp is not None else None)
    finally:
        ckpt.close()


def _basename(p: Any) -> str | None:
    if not isinstance(p, str) or not p:
        return None
    return p.replace("\\", "/").rsplit("/", 1)[-1]


def from_header(ctx: EntryContext) -> SourceResult:
    res = SourceResult("header", "header")
    try:
        head = ctx.header()
    except (ckptpeek.CheckpointError, OSError) as exc:
        res.errors.append(f"unreadable checkpoint: {_short(exc)}")
        return res
    facts = head.facts
    f: dict[str, Any] = {"epoch": facts.get("epoch"), "global_step": facts.get("global_step")}
    name = ctx.path.name
    monitored = [mc for mc in facts.get("model_checkpoints") or [] if mc.get("monitor")]
    mcs = monitored or list(facts.get("model_checkpoints") or [])
    for mc in mcs:
        if _basename(mc.get("last_model_path")) == name:
            f["is_last"] = True
    if mcs:
        mc = mcs[0]
        f["monitor"] = mc.get("monitor")
        f["mode"] = mc.get("mode")
        score = _score_of(ctx, mc, facts, name)
        f["score"] = score
        if score is not None and mc.get("monitor"):
            f[f"metrics.{mc['monitor']}"] = score
    hp = head.hyper_parameters
    if isinstance(hp, dict) and hp:
        f.update(arch_from_config(hp))
        f["config"] = config_summary(hp)
    res.fields = {k: v for k, v in f.items() if v is not None}
    return res


def _score_of(
    ctx: EntryContext, mc: dict[str, Any], facts: dict[str, Any], name: str
) -> float | None:
    """This file's monitored score as the ModelCheckpoint state recorded it, if it did."""
    best_k = mc.get("best_k_models") or {}
    for path, value in best_k.items():
        if _basename(path) == name and value is not None:
            return float(value)
    if _basename(mc.get("best_model_path")) == name and mc.get("best_model_score") is not None:
        return float(mc["best_model_score"])
    if _basename(mc.get("kth_best_model_path")) == name and mc.get("kth_value") is not None:
        return float(mc["kth_value"])
    # last.ckpt (or a copy): the top-k file of the same epoch and step holds its score
    epoch, step = facts.get("epoch"), facts.get("global_step")
    if epoch is None:
        return None
    for path, value in best_k.items():
        base = _basename(path)
        if base is None or value is None:
            continue
        parsed = parse_filename(base, ctx.patterns)
        if parsed.get("epoch") == epoch and parsed.get("global_step", step) == step:
            return float(value)
    return None


# --------------------------------------------------------------------------- 5. filename


def parse_filename(
    name: str, patterns: tuple[re.Pattern[str], ...] | None = None
) -> dict[str, Any]:
    """Fields from a checkpoint's file name: epoch, global_step, is_last, is_best, metrics."""
    patterns = compile_patterns(None) if patterns is None else patterns
    stem = _VERSION_SUFFIX.sub("", strip_checkpoint_suffix(name))
    out: dict[str, Any] = {}
    for pattern in patterns:
        for m in pattern.finditer(stem):
            groups = {k: v for k, v in m.groupdict().items() if v is not None}
            for key, raw in groups.items():
                if key == "epoch":
                    out.setdefault("epoch", int(raw))
                elif key in ("step", "global_step"):
                    out.setdefault("global_step", int(raw))
                elif key == "last":
                    out["is_last"] = True
                elif key == "best":
                    out["is_best"] = True
                elif key == "metric":
                    value = _float(groups.get("value"))
                    if value is not None:
                        out.setdefault(f"metrics.{raw}", value)
                elif key == "value":
                    continue
                else:
                    value = _float(raw)
                    if value is not None:
                        out.setdefault(f"metrics.{key}", value)
    return out


def from_filename(ctx: EntryContext) -> SourceResult:
    return SourceResult("filename", "filename", parse_filename(ctx.path.name, ctx.patterns))


# --------------------------------------------------------------------------- 6. signatures


def from_signatures(ctx: EntryContext) -> SourceResult:
    res = SourceResult("signatures", "signatures")
    try:
        shapes = ctx.header().shapes
    except BaseException:  # noqa: BLE001 - the header source reports it
        return res
    if not shapes:
        return res
    long_keys = sum(len(k) > MAX_KEY_CHARS for k in shapes)
    if long_keys:
        res.warnings.append(
            f"{long_keys} state-dict key(s) longer than {MAX_KEY_CHARS} characters "
            "left out of the signatures"
        )
    try:
        sigs = infer_signatures(shapes, ctx.rules)
    except Exception as exc:  # noqa: BLE001 - a rule bug must not lose the entry
        res.warnings.append(f"signature inference failed: {type(exc).__name__}: {_short(exc)}")
        return res
    res.fields["signatures"] = sigs
    for part in ("encoder", "decoder", "head"):
        sig = getattr(sigs, part, None)
        if sig is not None and getattr(sig, "name", None):
            res.fields[f"architecture.{part}"] = sig.name
    return res


#: The sources in merge order.
SOURCES = (from_metadata, from_config, from_hydra, from_header, from_filename, from_signatures)
