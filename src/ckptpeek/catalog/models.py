"""Pydantic v2 models of the checkpoint catalog (entries, sidecars, signatures, the catalog).

Shared by every catalog module (sources, signatures, cache, build, cli); the fields and the
merge are described in the README, "The catalog".
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = (
    "Architecture",
    "Catalog",
    "CatalogEntry",
    "MetadataSidecar",
    "SIDECAR_SCHEMA_VERSION",
    "Signature",
    "Signatures",
    "dumps_json",
)

SIDECAR_SCHEMA_VERSION = 2

#: how a non-finite float is written: as a string, the convention of ``ckptpeek --json``
_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _finite(doc: Any) -> Any:
    """A copy of plain data (dicts, lists, tuples as lists) with every NaN and infinity
    the string ``_NON_FINITE`` names. Iterative: a config nests up to ``Limits.max_depth``."""
    box: list[Any] = [None]
    todo: list[tuple[Any, Any, Any]] = [(doc, box, 0)]
    while todo:
        value, into, key = todo.pop()
        if isinstance(value, float) and not math.isfinite(value):
            into[key] = _NON_FINITE[repr(value)]
        elif isinstance(value, dict):
            into[key] = mapping = dict.fromkeys(value)
            todo += [(v, mapping, k) for k, v in value.items()]
        elif isinstance(value, (list, tuple)):
            into[key] = items = [None] * len(value)
            todo += [(v, items, i) for i, v in enumerate(value)]
        else:
            into[key] = value
    return box[0]


def dumps_json(doc: Any, **kwargs: Any) -> str:
    """Strict JSON (RFC 8259) of plain data, for every JSON the catalog prints or writes
    (``--json``, ``--jsonl``, ``.resolved.config.json``): ``NaN`` and ``Infinity`` are
    no JSON tokens, and a strict parser refuses a whole document for one, so non-finite
    floats are the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (``allow_nan=False``
    guards it). ``kwargs`` go to ``json.dumps``."""
    return json.dumps(_finite(doc), allow_nan=False, **kwargs)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Signature(_Model):
    """One component (encoder, decoder or head) as recognised from state-dict shapes."""

    name: str | None = None  # "resnet18", "pan", "db", or None if unknown
    params: dict[str, Any] = Field(
        default_factory=dict
    )  # e.g. {"in_channels": [64, 128, 256, 512]}


class Signatures(_Model):
    encoder: Signature | None = None
    decoder: Signature | None = None
    head: Signature | None = None
    generic: dict[str, int] = Field(default_factory=dict)  # top-level module -> parameter count


class Architecture(_Model):
    encoder: str | None = None
    decoder: str | None = None
    head: str | None = None


class CatalogEntry(_Model):
    path: str
    relpath: str
    experiment: str
    file_size: int
    mtime_ns: int
    created: datetime | None = None
    epoch: int | None = None
    global_step: int | None = None
    metrics: dict[str, float] = Field(
        default_factory=dict
    )  # names as logged ("val/hmean" kept as is)
    monitor: str | None = None
    mode: str | None = None
    score: float | None = None
    is_best: bool | None = None
    is_last: bool = False
    architecture: Architecture = Field(default_factory=Architecture)
    signatures: Signatures | None = None
    config: dict[str, Any] | None = None  # a config summary (model/optimizer/data blocks)
    sources: dict[str, str] = Field(default_factory=dict)  # field -> "<source name>:<origin>"
    warnings: list[str] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)
    status: Literal["ok", "partial", "unreadable"] = "ok"

    def metric(self, name: str) -> float | None:
        """A metric by name ("val/hmean", "val_hmean" and "hmean" find each other); the
        score if the name is the monitor's."""
        if name in self.metrics:
            return self.metrics[name]
        if self.monitor is not None and self.score is not None and _same_metric(name, self.monitor):
            return self.score
        for key, value in self.metrics.items():
            if _same_metric(name, key):
                return value
        return None

    def to_record(self) -> dict[str, Any]:
        """A flat dict (one DataFrame row): the scalars, ``encoder``/``decoder``/``head``,
        warning and error counts and one ``metric.<name>`` per metric."""
        rec: dict[str, Any] = {
            "path": self.path,
            "relpath": self.relpath,
            "experiment": self.experiment,
            "file_size": self.file_size,
            "mtime_ns": self.mtime_ns,
            "created": self.created.isoformat() if self.created is not None else None,
            "epoch": self.epoch,
            "global_step": self.global_step,
            "monitor": self.monitor,
            "mode": self.mode,
            "score": self.score,
            "is_best": self.is_best,
            "is_last": self.is_last,
            "encoder": self.architecture.encoder,
            "decoder": self.architecture.decoder,
            "head": self.architecture.head,
            "status": self.status,
            "n_warnings": len(self.warnings),
            "n_errors": len(self.errors),
        }
        for key, value in sorted(self.metrics.items()):
            rec[f"metric.{key}"] = value
        return rec


def _norm_metric(name: str) -> str:
    return name.replace("/", "_").replace("-", "_").lower()


def _same_metric(a: str, b: str) -> bool:
    if a == b:
        return True
    na, nb = _norm_metric(a), _norm_metric(b)
    if na == nb:
        return True
    # "hmean" matches "val/hmean" / "val_hmean" (a suffix after a separator)
    return nb.endswith("_" + na) or na.endswith("_" + nb)


# v1 sidecar keys (flat) that are not metrics
_V1_FIELDS = {
    "epoch",
    "global_step",
    "created_at",
    "monitor",
    "mode",
    "score",
    "encoder",
    "decoder",
    "head",
}
_V1_RENAMES = {
    "step": "global_step",
    "created": "created_at",
    "timestamp": "created_at",
    "architecture": "decoder",
    "backbone": "encoder",
    "best_score": "score",
}


class MetadataSidecar(_Model):
    """``<stem>.metadata.yaml`` / ``<stem>.metadata.json``; schema_version 2 is current.

    Version 1 (flat: ``val_loss``, ``hmean``, ``precision``, ``recall``, ... at top level, no
    ``schema_version``) is migrated by :meth:`migrate` / :meth:`load`.
    """

    schema_version: int = SIDECAR_SCHEMA_VERSION
    epoch: int | None = None
    global_step: int | None = None
    created_at: datetime | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    monitor: str | None = None
    mode: Literal["min", "max"] | None = None
    score: float | None = None
    encoder: str | None = None
    decoder: str | None = None
    head: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def migrate(cls, data: Any) -> tuple[MetadataSidecar, list[str]]:
        """Validate a parsed sidecar (any version) -> (sidecar, notes about the migration)."""
        if not isinstance(data, dict):
            raise ValueError(f"a metadata sidecar must be a mapping, not {type(data).__name__}")
        notes: list[str] = []
        version = data.get("schema_version")
        if version is None or version == 1:
            data = _migrate_v1(data)
            notes.append("metadata sidecar schema_version 1 migrated to 2")
        elif not isinstance(version, int) or version > SIDECAR_SCHEMA_VERSION:
            raise ValueError(f"unsupported metadata sidecar schema_version {version!r}")
        return cls.model_validate(data), notes

    @classmethod
    def load(cls, path: str | Path) -> MetadataSidecar:
        """Read and validate (migrating version 1) a YAML or JSON sidecar.

        Raises ValueError (malformed or invalid) or OSError."""
        return cls.load_with_notes(path)[0]

    @classmethod
    def load_with_notes(cls, path: str | Path) -> tuple[MetadataSidecar, list[str]]:
        """:meth:`load`, with the migration notes."""
        from .hydra import load_yaml_or_json  # noqa: PLC0415 - PyYAML only when a sidecar is read

        data = load_yaml_or_json(Path(path))
        return cls.migrate({} if data is None else data)


def _migrate_v1(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"schema_version": SIDECAR_SCHEMA_VERSION}
    metrics: dict[str, float] = {}
    extra: dict[str, Any] = {}
    for key, value in data.items():
        if key == "schema_version":
            continue
        key = _V1_RENAMES.get(key, key)
        if key in _V1_FIELDS:
            out.setdefault(key, value)
        elif key == "metrics" and isinstance(value, dict):
            metrics.update(value)
        elif key == "extra" and isinstance(value, dict):
            extra.update(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                metrics[key] = float(value)
            except OverflowError:  # an integer past the float range: not a metric
                raise ValueError(f"{key}: an integer too large for a metric") from None
        else:
            extra[key] = value
    out["metrics"] = metrics
    out["extra"] = extra
    return out


class Catalog(_Model):
    root: str
    entries: list[CatalogEntry]
    errors: list[str] = Field(default_factory=list)

    def best(
        self,
        metric: str | None = None,
        mode: Literal["min", "max"] = "max",
        experiment: str | None = None,
    ) -> CatalogEntry | None:
        """The entry with the best value of ``metric`` (default: each entry's monitored score).

        Entries without the metric (or NaN) are skipped; ties go to the later epoch/step.
        """
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', not {mode!r}")
        best: CatalogEntry | None = None
        best_key: tuple[float, int, int] | None = None
        for entry in self.entries:
            if experiment is not None and entry.experiment != experiment:
                continue
            value = entry.score if metric is None else entry.metric(metric)
            if value is None or math.isnan(value):
                continue
            signed = value if mode == "max" else -value
            key = (
                signed,
                entry.epoch if entry.epoch is not None else -1,
                entry.global_step if entry.global_step is not None else -1,
            )
            if best_key is None or key > best_key:
                best, best_key = entry, key
        return best

    def to_records(self) -> list[dict[str, Any]]:
        """One flat dict per entry (``pandas.DataFrame(catalog.to_records())``)."""
        return [entry.to_record() for entry in self.entries]

    def by_experiment(self) -> dict[str, list[CatalogEntry]]:
        groups: dict[str, list[CatalogEntry]] = defaultdict(list)
        for entry in self.entries:
            groups[entry.experiment].append(entry)
        return dict(groups)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[CatalogEntry]:  # type: ignore[override]  # entries, not fields
        return iter(self.entries)
