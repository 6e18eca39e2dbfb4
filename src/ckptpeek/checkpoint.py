"""The :class:`Checkpoint`: what every format reader returns.

It holds the unpickled object graph (``root``, with :class:`TensorRef` where torch has
tensors), the globals the file named, and the open file for lazy tensor reads.
"""

from __future__ import annotations

from collections.abc import Iterator

from ckptpeek.limits import DEFAULT_LIMITS, Limits

from ._frozen import Frozen
from .tensor import TensorRef
from .walk import iter_tensors

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

if TYPE_CHECKING:
    from ckptpeek.io.source import CheckpointSource
    from ckptpeek.summary.model import CheckpointSummary

__all__ = ("Checkpoint", "GlobalInfo", "SUMMARY_KEYS", "merge_globals")

_MISSING = object()

#: The top-level keys a summary needs (the catalog reads a subset of them,
#: ``catalog.sources.CATALOG_KEYS``): ``open(path, select=SUMMARY_KEYS).summary()``
#: gives the summary of a full read except what lives in the keys it skips (Lightning's
#: ``loops`` and ``optimizer_states``: ``optimizers`` stays empty and the tensor
#: statistics count what was read), for a fraction of the time on large checkpoints.
SUMMARY_KEYS: frozenset[str] = frozenset(
    {
        "epoch",
        "global_step",
        "pytorch-lightning_version",
        "state_dict",
        "callbacks",
        "lr_schedulers",
        "hparams_name",
        "hyper_parameters",
        "hparams",
        "model",
        "checkpoint_callback_best_model_score",
        "checkpoint_callback_best_model_path",
        "early_stop_callback_wait",
        "early_stop_callback_patience",
    }
)


class GlobalInfo(Frozen):
    """A global the pickle names; ``safe`` is True when ckptpeek's registry knows it
    (torch.load with ``weights_only=False`` would have imported every one of them)."""

    __slots__ = ("module", "name", "safe")
    module: str
    name: str
    safe: bool

    def __init__(self, module: str, name: str, safe: bool) -> None:
        super().__init__(module, name, safe)

    def __str__(self) -> str:
        return f"{self.module}.{self.name}"


def merge_globals(
    into: dict[tuple[str, str], bool], found: Mapping[tuple[str, str], bool]
) -> dict[tuple[str, str], bool]:
    """Add the globals one pickle named (``PickleResult.globals``) to a checkpoint's map.

    The one way readers of files with several pickles (legacy ``torch.save``, its tar
    predecessor, TorchScript) build ``Checkpoint(globals_=...)``: every pickle torch
    would unpickle is merged in, in file order, so ``globals()`` and strict mode see all
    of them. A name keeps its first position and is safe only if every pickle that names
    it resolved it as known (a format's own names differ per pickle). Returns ``into``.
    """
    for key, safe in found.items():
        into[key] = into.get(key, True) and safe
    return into


class Checkpoint:
    """An opened checkpoint. Use as a context manager to close the file.

    Attributes:
        format: ``"torch-zip"``, ``"torchscript"``, ``"torch-legacy"``, ``"safetensors"``,
            ``"sharded"`` or ``"torch-dcp"``.
        backend: the engine that parsed it: ``"python"`` or ``"native"``.
        root: the object graph, as ``torch.load`` would return it, with ``TensorRef``.
        path: the file's path, or ``None`` for an anonymous file object.
        members: where in the file things were found (e.g. the pickle member).
        selected: the top-level keys read when opened with ``select=``, else ``None``
            (everything was read).
    """

    def __init__(
        self,
        *,
        format: str,
        backend: str,
        root: Any,
        source: CheckpointSource,
        globals_: dict[tuple[str, str], bool],
        limits: Limits = DEFAULT_LIMITS,
        members: dict[str, Any] | None = None,
        selected: frozenset[Any] | None = None,
    ) -> None:
        self.format = format
        self.backend = backend
        self.root = root
        self.path = source.path
        self.file_size = source.size
        self.members = members or {}
        self.limits = limits
        self.selected = selected
        self._source = source
        self._globals = globals_

    @property
    def bytes_read(self) -> int:
        """Bytes read from the file so far (header, pickle, and any tensor data)."""
        return self._source.bytes_read

    def tensors(self) -> Iterator[tuple[tuple[Any, ...], TensorRef]]:
        """Every tensor with its key path, depth-first: ``(("state_dict", "fc.weight"), ref)``."""
        return iter_tensors(self.root, limits=self.limits, path=self.path)

    def get(self, key: Any, default: Any = _MISSING) -> Any:
        """``root[key]``; a tuple key walks a path: ``get(("state_dict", "fc.weight"))``."""
        keys = key if isinstance(key, tuple) else (key,)
        node = self.root
        try:
            for k in keys:
                node = node[k]
        except (KeyError, IndexError, TypeError):
            if default is not _MISSING:
                return default
            if self.selected is not None and keys[0] not in self.selected:
                raise KeyError(
                    f"{keys[0]!r} was not read: the checkpoint was opened with "
                    f"select={sorted(map(str, self.selected))}"
                ) from None
            raise KeyError(key) from None
        return node

    def __getitem__(self, key: Any) -> Any:
        return self.get(key)

    def __contains__(self, key: Any) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    def keys(self) -> list[Any]:
        # dict's method: a file-made OrderedDict may have an instance attribute ``keys``
        return list(dict.keys(self.root)) if isinstance(self.root, dict) else []

    def globals(self) -> list[GlobalInfo]:
        """Every global the file's pickles name (every pickle torch would unpickle, see
        :func:`merge_globals`), known-safe or not, in first-use order."""
        return [GlobalInfo(m, n, safe) for (m, n), safe in self._globals.items()]

    def summary(self) -> CheckpointSummary:
        """What a catalog shows: epoch, step, metrics, callbacks, optimizers, tensor stats."""
        from ckptpeek.summary.model import summarize  # noqa: PLC0415 - pydantic loads only when asked

        return summarize(self)

    def close(self) -> None:
        """Close the file. Tensors of a checkpoint opened by path can still read their
        bytes afterwards: the file is reopened on demand."""
        self._source.close()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Checkpoint {self.format} {self.path or '<file object>'} ({self.backend})>"
