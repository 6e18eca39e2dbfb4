"""Find the checkpoints under a training-outputs root.

A checkpoint is a ``*.ckpt``, ``*.pt``, ``*.pth`` or ``*.safetensors`` file below any
``checkpoints/`` directory, or directly inside an experiment directory (one holding a
``checkpoints/`` or ``.hydra/`` directory). Its experiment is the directory above the
nearest ``checkpoints/`` (relative to the root, POSIX separators: ``"dbnet_r18"``,
``"multirun/2025-10-18/0"``); ``"."`` becomes the root's own name. Hidden directories and
files (``.hydra``, ``.tmp_x.ckpt``) and generated files (``*.resolved.config.json``) are
skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ("CHECKPOINT_SUFFIXES", "Found", "scan", "experiment_of", "strip_checkpoint_suffix")

#: What a checkpoint's file name ends with (compared lowercased); the one list the scan,
#: an entry's stem and the file-name source all use.
CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth", ".safetensors")
CHECKPOINTS_DIR = "checkpoints"


@dataclass(frozen=True)
class Found:
    path: Path  # absolute
    relpath: str  # relative to the root, POSIX separators
    experiment: str


def _is_checkpoint_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(CHECKPOINT_SUFFIXES)


def strip_checkpoint_suffix(name: str) -> str:
    """``name`` without its checkpoint suffix (any case): ``"last.CKPT"`` -> ``"last"``;
    a name with none is returned as it is."""
    lower = name.lower()
    for suffix in CHECKPOINT_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def experiment_of(rel_parts: tuple[str, ...], root_name: str) -> str:
    """The experiment of a checkpoint from its relative path parts (directories + file)."""
    dirs = rel_parts[:-1]
    for i in range(len(dirs) - 1, -1, -1):
        if dirs[i] == CHECKPOINTS_DIR:
            above = dirs[:i]
            return "/".join(above) if above else root_name
    return "/".join(dirs) if dirs else root_name


def scan(root: str | os.PathLike[str]) -> list[Found]:
    """Every checkpoint under ``root``, sorted by relative path."""
    root_path = Path(root).resolve()
    root_name = root_path.name or str(root_path)
    found: list[Found] = []
    for dirpath, dirnames, filenames in os.walk(root_path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        rel_dir = here.relative_to(root_path).parts
        in_checkpoints = CHECKPOINTS_DIR in rel_dir
        if not in_checkpoints:
            # directly inside an experiment directory (or the root itself)
            is_experiment = (
                not rel_dir
                or CHECKPOINTS_DIR in dirnames
                or os.path.isdir(os.path.join(dirpath, ".hydra"))
            )
            if not is_experiment:
                continue
        for name in sorted(filenames):
            if not _is_checkpoint_name(name):
                continue
            full = here / name
            if not full.is_file():
                continue
            parts = rel_dir + (name,)
            found.append(Found(full, "/".join(parts), experiment_of(parts, root_name)))
    found.sort(key=lambda f: f.relpath)
    return found
