"""Find the checkpoints under a training-outputs root.

A checkpoint is a ``*.ckpt``, ``*.pt``, ``*.pth`` or ``*.safetensors`` file below any
``checkpoints/`` directory, or directly inside an experiment directory (one holding a
``checkpoints/`` or ``.hydra/`` directory). Its experiment is the directory above the
nearest ``checkpoints/`` (relative to the root, POSIX separators: ``"dbnet_r18"``,
``"multirun/2025-10-18/0"``); ``"."`` becomes the root's own name. Hidden directories and
files (``.hydra``, ``.tmp_x.ckpt``) and generated files (``*.resolved.config.json``) are
skipped.

Only what ``lstat`` shows to be a regular file, or a symlink to a regular file inside the
root, is read. Anything else with a checkpoint's name (a FIFO, a socket, a device, a
symlink out of the root or a dangling one) is still found, with ``problem`` saying why it
is not read: the catalog lists it as an ``unreadable`` entry instead of opening it (a FIFO
would block) or dropping it. Directory symlinks are not followed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .files import file_kind, inside

__all__ = (
    "CHECKPOINT_SUFFIXES",
    "Found",
    "experiment_of",
    "not_readable",
    "scan",
    "strip_checkpoint_suffix",
)

#: What a checkpoint's file name ends with (compared lowercased); the one list the scan,
#: an entry's stem and the file-name source all use.
CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth", ".safetensors")
CHECKPOINTS_DIR = "checkpoints"


@dataclass(frozen=True)
class Found:
    path: Path  # absolute
    relpath: str  # relative to the root, POSIX separators
    experiment: str
    problem: str | None = None  # why it is not read (not a regular file inside the root)


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


def not_readable(path: Path, root: Path) -> str | None:
    """Why ``path`` must not be opened (None: a regular file, or a link to one inside
    ``root``); stat only, never an open. Raises FileNotFoundError if it is gone."""
    st = os.lstat(path)
    if not stat.S_ISLNK(st.st_mode):
        return file_kind(st.st_mode)
    if not inside(path, root):
        return "a symlink out of the catalog root (not followed)"
    try:
        target = os.stat(path)
    except OSError:
        return "a dangling symlink"
    kind = file_kind(target.st_mode)
    return None if kind is None else f"a symlink to {kind}"


def _walk(top: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk(top)`` without recursion (a tree 1000 directories deep is a tree, not a
    RecursionError): (directory, visible subdirectories, file names), both sorted;
    directory symlinks are listed as directories but never entered, unlistable
    directories are skipped (as ``os.walk`` does)."""
    stack = [top]
    while stack:
        here = stack.pop()
        try:
            with os.scandir(here) as it:
                entries = list(it)
        except OSError:
            continue
        dirs, files, enter = [], [], []
        for e in entries:
            try:
                is_dir = e.is_dir()
                linked = is_dir and e.is_symlink()
            except OSError:
                is_dir = linked = False
            if not is_dir:
                files.append(e.name)
            elif not e.name.startswith("."):
                dirs.append(e.name)
                if not linked:
                    enter.append(e.name)
        dirs.sort()
        files.sort()
        yield here, dirs, files
        stack.extend(os.path.join(here, d) for d in sorted(enter, reverse=True))


def scan(root: str | os.PathLike[str]) -> list[Found]:
    """Every checkpoint under ``root``, sorted by relative path."""
    root_path = Path(root).resolve()
    root_name = root_path.name or str(root_path)
    found: list[Found] = []
    for dirpath, dirnames, filenames in _walk(str(root_path)):
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
            try:
                problem = not_readable(full, root_path)
            except FileNotFoundError:
                continue  # deleted while we walked
            parts = rel_dir + (name,)
            found.append(Found(full, "/".join(parts), experiment_of(parts, root_name), problem))
    found.sort(key=lambda f: f.relpath)
    return found
