"""``Checkpoint.summary()``: the facts a catalog shows (``facts.py``), as a pydantic model.

pydantic loads here, on the first ``summary()``, never at ``import ckptpeek``; the CLI
prints from ``facts.collect`` and does not load it at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from .facts import (
    EARLY_STOPPING_FIELDS,
    MODEL_CHECKPOINT_FIELDS,
    OPTIMIZER_FIELDS,
    SCHEDULER_FIELDS,
    SUMMARY_FIELDS,
    collect,
)

if TYPE_CHECKING:
    from ckptpeek.checkpoint import Checkpoint

__all__ = (
    "CheckpointSummary",
    "ModelCheckpointState",
    "EarlyStoppingState",
    "OptimizerInfo",
    "SchedulerInfo",
    "summarize",
)


class _Model(BaseModel):
    # validation schemas are built on first validation, not at import: summarize()
    # builds models from values it has checked itself (model_construct)
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class ModelCheckpointState(_Model):
    """Lightning ``ModelCheckpoint`` state (``callbacks["ModelCheckpoint{...}"]``)."""

    key: str
    monitor: str | None = None
    mode: str | None = None
    best_model_score: float | None = None
    best_model_path: str | None = None
    best_k_models: dict[str, float | None] = Field(default_factory=dict)
    kth_best_model_path: str | None = None
    kth_value: float | None = None
    last_model_path: str | None = None
    current_score: float | None = None
    dirpath: str | None = None


class EarlyStoppingState(_Model):
    """Lightning ``EarlyStopping`` state."""

    key: str
    monitor: str | None = None
    mode: str | None = None
    wait_count: int | None = None
    stopped_epoch: int | None = None
    best_score: float | None = None
    patience: int | None = None


class OptimizerInfo(_Model):
    """One optimizer's state dict. ``type`` is inferred from its keys (None if unknown)."""

    type: str | None
    param_groups: int
    params: int
    lr: list[float | None]
    state_tensors: int


class SchedulerInfo(_Model):
    """One lr scheduler's state dict; ``type`` inferred from its keys."""

    type: str | None
    last_epoch: int | None = None
    last_lr: list[float | None] | None = None


class CheckpointSummary(_Model):
    """What a catalog shows about one checkpoint. ``selected`` lists the top-level keys
    that were read when the checkpoint was opened with ``select=`` (else ``None``)."""

    path: str | None
    format: str
    backend: str
    file_size: int
    bytes_read: int
    top_level_keys: list[str]
    epoch: int | None = None
    global_step: int | None = None
    lightning_version: str | None = None
    hparams_name: str | None = None
    hyper_parameters: dict[str, Any] | None = None
    model_checkpoints: list[ModelCheckpointState] = Field(default_factory=list)
    early_stopping: list[EarlyStoppingState] = Field(default_factory=list)
    other_callbacks: list[str] = Field(default_factory=list)
    optimizers: list[OptimizerInfo] = Field(default_factory=list)
    lr_schedulers: list[SchedulerInfo] = Field(default_factory=list)
    tensor_count: int
    state_dict_tensors: int
    parameter_count: int
    dtypes: dict[str, int]
    total_tensor_bytes: int
    unknown_globals: list[str] = Field(default_factory=list)
    selected: list[str] | None = None

    @property
    def best_model_score(self) -> float | None:
        """The first ModelCheckpoint's best score (the usual "the metric")."""
        return self.model_checkpoints[0].best_model_score if self.model_checkpoints else None

    @property
    def monitor(self) -> str | None:
        return self.model_checkpoints[0].monitor if self.model_checkpoints else None


_NESTED: dict[str, type[BaseModel]] = {
    "model_checkpoints": ModelCheckpointState,
    "early_stopping": EarlyStoppingState,
    "optimizers": OptimizerInfo,
    "lr_schedulers": SchedulerInfo,
}
#: each model with the field table of facts.py it mirrors (tests compare them)
MODEL_FIELDS = (
    (CheckpointSummary, SUMMARY_FIELDS),
    (ModelCheckpointState, MODEL_CHECKPOINT_FIELDS),
    (EarlyStoppingState, EARLY_STOPPING_FIELDS),
    (OptimizerInfo, OPTIMIZER_FIELDS),
    (SchedulerInfo, SCHEDULER_FIELDS),
)


def from_facts(data: dict[str, Any]) -> CheckpointSummary:
    """The model of ``facts.collect``'s data, built without re-validating it (the values
    were made and checked by ckptpeek itself, and validation schemas cost ~100 ms to build)."""
    fields = dict(data)
    for name, model in _NESTED.items():
        fields[name] = [model.model_construct(**item) for item in data[name]]
    return CheckpointSummary.model_construct(**fields)


def summarize(ckpt: Checkpoint) -> CheckpointSummary:
    """Build the summary of an opened checkpoint."""
    return from_facts(collect(ckpt))
