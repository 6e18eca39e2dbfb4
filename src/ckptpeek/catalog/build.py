"""``build_catalog``: scan a root, build one entry per checkpoint from its sources, merge.

Merge rule (README, "The catalog"): each field takes the first source (in ``sources.SOURCES``
order) that has it and every later source that disagrees adds a warning - except that
the checkpoint header wins for what it records (epoch, global_step, monitor, mode,
score, the metrics it has), and sidecars that disagree with it add a warning.
``entry.sources[field] = "<source>:<origin>"`` for every field set.

The catalog marks, never drops: a checkpoint that cannot be read - ckptpeek raised a
``CheckpointError`` or ``OSError``, it is not a regular file inside the root, or reading
it hit a bug (any other exception: logged with its traceback, and named in the entry as a
ckptpeek bug) - is an ``unreadable`` entry with the reason; a sidecar or config that cannot
be used is a warning. ``Catalog.errors`` holds only what stops the whole catalog (a root
that is not a directory).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import secrets
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import ckptpeek
from ckptpeek import DEFAULT_LIMITS, Limits

from .agree import show_value, unusable, values_agree
from .files import inside
from .models import Architecture, Catalog, CatalogEntry, Signatures, dumps_json
from .scan import Found, scan
from .signatures import SignatureRules
from .sources import (
    SIDECAR_KINDS,
    SOURCES,
    EntryContext,
    FileMemo,
    SourceResult,
    compile_patterns,
    from_filename,
    sidecar_paths,
)
from .text import TextError, parse_text, read_text_file

try:
    from .cache import CatalogCache, Stamp
except ImportError as exc:  # pragma: no cover - a Python built without sqlite3
    CatalogCache = Stamp = None  # type: ignore[assignment,misc]  # builds run uncached
    _NO_CACHE = str(exc)

__all__ = (
    "NOT_WRITTEN",
    "RESOLVED_SUFFIX",
    "build_catalog",
    "build_entry",
    "merge",
    "unreadable_entry",
    "values_agree",
    "write_resolved_config",
)

log = logging.getLogger("ckptpeek.catalog")

RESOLVED_SUFFIX = ".resolved.config.json"
#: how the warning of a resolved config that was not written starts (the CLI shows them)
NOT_WRITTEN = f"could not write {RESOLVED_SUFFIX}"

#: fields the checkpoint header wins when it records them (plus every ``metrics.*``)
HEADER_WINS = frozenset({"epoch", "global_step", "monitor", "mode", "score"})
#: fields whose disagreement between sources is not worth a warning
_NO_CONFLICT = frozenset({"config", "signatures"})
_SCALAR_FIELDS = (
    "created",
    "epoch",
    "global_step",
    "monitor",
    "mode",
    "score",
    "is_best",
    "is_last",
)


# --------------------------------------------------------------------------- merge


def _metric_norm(name: str) -> str:
    return name.replace("/", "_")


def merge(ctx: EntryContext, results: list[SourceResult], stat: os.stat_result) -> CatalogEntry:
    """One entry from the source results (in source order)."""
    warnings: list[str] = []
    errors: list[str] = []
    failed = False
    for res in results:
        warnings += res.warnings
        errors += res.errors
        failed = failed or res.failed

    # canonical metric names: "val_hmean" (a file name) joins "val/hmean"; the header's
    # spelling wins, then the first seen
    canon: dict[str, str] = {}
    for res in sorted(results, key=lambda r: r.name != "header"):
        for key in res.fields:
            if key.startswith("metrics."):
                canon.setdefault(_metric_norm(key), key)

    cands: dict[str, list[tuple[SourceResult, Any]]] = {}
    for res in results:
        for key, value in res.fields.items():
            if value is None:
                continue
            why = unusable(key, value)
            if why is not None:  # before any comparison: the next source gives it
                warnings.append(f"{key}: {_label(res, key)} says {why}")
                continue
            if key.startswith("metrics."):
                key = canon.get(_metric_norm(key), key)
            cands.setdefault(key, []).append((res, value))

    chosen: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, options in cands.items():
        win_res, win_val = options[0]
        if key in HEADER_WINS or key.startswith("metrics."):
            for res, value in options:
                if res.name == "header":
                    win_res, win_val = res, value
                    break
        chosen[key] = win_val
        sources[key] = _label(win_res, key)
        if key in _NO_CONFLICT:
            continue
        for res, value in options:
            if res is win_res or values_agree(key, win_val, value):
                continue
            warnings.append(
                f"{key}: {_label(res, key)} says {show_value(value)}, "
                f"{sources[key]} says {show_value(win_val)} (using {res_name(win_res)})"
            )

    # derived: score <-> the monitored metric
    monitor = chosen.get("monitor")
    if monitor is not None:
        mkey = canon.get(_metric_norm(f"metrics.{monitor}"), f"metrics.{monitor}")
        if "score" not in chosen and mkey in chosen:
            chosen["score"], sources["score"] = chosen[mkey], sources[mkey]
        elif "score" in chosen and mkey not in chosen:
            chosen[mkey], sources[mkey] = chosen["score"], sources["score"]

    metrics = {
        k[len("metrics.") :]: float(v) for k, v in chosen.items() if k.startswith("metrics.")
    }
    arch = Architecture(
        **{p: chosen.get(f"architecture.{p}") for p in ("encoder", "decoder", "head")}
    )
    sigs = chosen.get("signatures")
    if sigs is not None and not isinstance(sigs, Signatures):
        sigs = Signatures.model_validate(sigs.model_dump() if hasattr(sigs, "model_dump") else sigs)
    status: Literal["ok", "partial", "unreadable"] = (
        "unreadable" if errors else ("partial" if failed else "ok")
    )
    entry = CatalogEntry(
        path=str(ctx.path),
        relpath=ctx.relpath,
        experiment=ctx.experiment,
        file_size=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
        metrics=metrics,
        architecture=arch,
        signatures=sigs,
        config=chosen.get("config"),
        sources=sources,
        warnings=_dedupe(warnings),
        errors=errors,
        status=status,
        **{k: chosen[k] for k in _SCALAR_FIELDS if k in chosen},
    )
    return entry


def res_name(res: SourceResult) -> str:
    return res.name


def _label(res: SourceResult, key: str) -> str:
    return f"{res.name}:{res.field_origins.get(key, res.origin)}"


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


# --------------------------------------------------------------------------- one entry


def build_entry(ctx: EntryContext, st: os.stat_result | None = None) -> CatalogEntry:
    if st is None:
        st = os.stat(ctx.path)
    results = [source(ctx) for source in SOURCES]
    return merge(ctx, results, st)


def unreadable_entry(ctx: EntryContext, st: os.stat_result, reason: str) -> CatalogEntry:
    """The entry of a checkpoint that is not read: the reason, and its file name's fields."""
    header = SourceResult("header", "header", errors=[reason])
    return merge(ctx, [header, from_filename(ctx)], st)


def related_paths(ctx: EntryContext) -> list[Path]:
    """Every file location whose appearance or change changes the entry (for the cache)."""
    out = [p for kind in SIDECAR_KINDS for p in sidecar_paths(ctx.path, ctx.stem, kind)]
    here = ctx.path.parent
    while True:
        out += [here / ".hydra" / "config.yaml", here / ".hydra" / "overrides.yaml"]
        if here == ctx.root or here.parent == here or ctx.root not in here.parents:
            break
        here = here.parent
    return out


# --------------------------------------------------------------------------- resolved config


#: the key that marks a ``.resolved.config.json`` as ckptpeek's (it replaces only those)
WRITTEN_BY = "written_by"
_LEGACY_RESOLVED_KEYS = frozenset(
    {
        "checkpoint",
        "experiment",
        "epoch",
        "global_step",
        "monitor",
        "mode",
        "score",
        "metrics",
        "architecture",
        "signatures",
        "config",
        "sources",
    }
)


def resolved_config(entry: CatalogEntry) -> dict[str, Any]:
    """What ``<stem>.resolved.config.json`` holds: the entry's merged view."""
    return {
        WRITTEN_BY: f"ckptpeek catalog {ckptpeek.__version__}",
        "checkpoint": entry.relpath,
        "experiment": entry.experiment,
        "epoch": entry.epoch,
        "global_step": entry.global_step,
        "monitor": entry.monitor,
        "mode": entry.mode,
        "score": entry.score,
        "metrics": entry.metrics,
        "architecture": entry.architecture.model_dump(),
        "signatures": entry.signatures.model_dump() if entry.signatures else None,
        "config": entry.config,
        "sources": entry.sources,
    }


class NotOursError(FileExistsError):
    """A file ckptpeek did not write is where it would write: left untouched."""


def _written_by_ckptpeek(dir_fd: int, name: str, limits: Limits) -> bool:
    """Does the existing ``name`` in ``dir_fd`` hold a resolved config ckptpeek wrote?"""
    try:
        text = read_text_file(name, limits, dir_fd=dir_fd)
        data = parse_text(text, "json", limits=limits)
    except (TextError, OSError):
        return False
    if not isinstance(data, dict):
        return False
    mark = data.get(WRITTEN_BY)
    return (isinstance(mark, str) and mark.startswith("ckptpeek ")) or set(
        data
    ) == _LEGACY_RESOLVED_KEYS


def write_resolved_config(
    entry: CatalogEntry, path: Path, root: Path, limits: Limits = DEFAULT_LIMITS
) -> Path:
    """Write ``<stem>.resolved.config.json`` beside the checkpoint ``path``, atomically.

    Only into ``path``'s own directory, inside ``root`` (never through a symlink out of
    it); an existing file is replaced only if ckptpeek wrote it (``written_by``).
    Raises OSError (``NotOursError`` when something else is in the way)."""
    stem = EntryContext(path, path.parent, "", "").stem
    name = stem + RESOLVED_SUFFIX
    target = path.with_name(name)
    real_dir = os.path.realpath(path.parent)
    if not inside(real_dir, root):
        raise NotOursError(f"{target}: outside the catalog root; not written")
    data = dumps_json(resolved_config(entry), indent=2, sort_keys=True, default=str) + "\n"
    dir_fd = os.open(real_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        try:
            st: os.stat_result | None = os.lstat(name, dir_fd=dir_fd)
        except FileNotFoundError:
            st = None
        if st is not None and not (
            stat.S_ISREG(st.st_mode) and _written_by_ckptpeek(dir_fd, name, limits)
        ):
            raise NotOursError(f"{target}: exists and was not written by ckptpeek; left untouched")
        tmp = f".{name}.{secrets.token_hex(6)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o644, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            if st is None:  # link, not replace: a file that appeared meanwhile is kept
                os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            else:
                os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except FileExistsError:
            raise NotOursError(f"{target}: appeared while written; left untouched") from None
        finally:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
    finally:
        os.close(dir_fd)
    return target


# --------------------------------------------------------------------------- progress


class _Progress:
    """A progress bar on stderr, drawn only once the build has taken > ``delay`` s.

    Hand-written on purpose: thirty lines instead of a dependency (``rich``, ``tqdm``) for
    every install. It is one ``\r``-redrawn line of plain ASCII, 30 + ~25 columns, so it
    fits any terminal without asking its width; it uses no colour (nothing for ``NO_COLOR``
    to turn off) and draws only when asked (``ckptpeek catalog``: when stderr is a tty).
    """

    def __init__(self, total: int, enabled: bool, delay: float = 0.5, stream: Any = None) -> None:
        self.total = total
        self.enabled = enabled and total > 0
        self.delay = delay
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.monotonic()
        self.done = 0
        self.drawn = False
        self.last = 0.0
        self.lock = threading.Lock()

    def step(self) -> None:
        if not self.enabled:
            return
        with self.lock:
            self.done += 1
            now = time.monotonic()
            if now - self.start < self.delay or (now - self.last < 0.1 and self.done < self.total):
                return
            self.last = now
            width = 30
            filled = int(width * self.done / self.total)
            self.stream.write(
                f"\rcatalog [{'#' * filled}{'.' * (width - filled)}] "
                f"{self.done}/{self.total} {now - self.start:.1f}s"
            )
            self.stream.flush()
            self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


# --------------------------------------------------------------------------- build


def _open_cache(cache: Any) -> tuple[Any, bool]:
    """(cache object or None, whether we own it and must close it)."""
    if cache is False or cache is None:
        return None, False
    if CatalogCache is None:  # pragma: no cover - a Python built without sqlite3
        log.warning("catalog cache unavailable: %s", _NO_CACHE)
        return None, False
    if cache is True:
        return CatalogCache(), True
    if isinstance(cache, (str, os.PathLike)):
        return CatalogCache(cache), True
    return cache, False


def _fingerprint(rules: Any, patterns: Any, limits: Limits = DEFAULT_LIMITS) -> str:
    """Build options that shape entries, for the cache's validity check."""
    if rules is None and patterns is None and limits == DEFAULT_LIMITS:
        return ""
    h = hashlib.sha256(repr(tuple(limits)).encode())
    h.update(
        repr(
            [p.pattern if isinstance(p, re.Pattern) else p for p in compile_patterns(patterns)]
        ).encode()
    )
    if rules is not None:
        if isinstance(rules, (str, os.PathLike)):
            p = Path(rules)
            h.update(str(p.resolve()).encode())
            try:
                h.update(read_text_file(p).encode())
            except (OSError, TextError):
                pass  # SignatureRules.load reports it
        else:
            dump = getattr(rules, "model_dump_json", None)
            h.update((dump() if callable(dump) else repr(rules)).encode())
    return h.hexdigest()[:16]


def _load_rules(rules: Any) -> Any:
    if rules is None or not isinstance(rules, (str, os.PathLike)):
        return rules
    return SignatureRules.load(rules)


def build_catalog(
    root: str | os.PathLike[str],
    *,
    cache: Any = True,
    workers: int | None = None,
    executor: Executor | None = None,
    progress: bool = False,
    write_resolved: bool = False,
    rules: Any = None,
    filename_patterns: Iterable[str | re.Pattern[str]] | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Catalog:
    """Catalog every checkpoint under ``root``.

    Args:
        root: the training outputs directory.
        cache: ``True`` (the user cache, ``CatalogCache()``), ``False``, a path, or a
            ``CatalogCache``. Only new or changed checkpoints (or sidecars/configs) are read.
            A path that holds something other than a ckptpeek cache raises
            ``cache.NotACacheError`` (an OSError) and is left untouched.
        workers: thread-pool size (default: ``min(32, cpu + 4)``); ``1`` builds in this thread.
        executor: any ``concurrent.futures.Executor`` to use instead of the thread pool.
        progress: draw a progress bar on stderr when the build takes > 0.5 s.
        write_resolved: write ``<stem>.resolved.config.json`` beside each checkpoint
            (atomically, never replacing a file ckptpeek did not write); nothing is
            written into the tree otherwise.
        rules: signature rules: a ``SignatureRules`` or a YAML file extending the defaults.
        filename_patterns: regexes with named groups replacing the default file-name patterns.
        limits: the guards for every file read: the text files (``max_text_bytes``,
            ``max_text_nodes``, ``max_depth``, the key guard's fields) and the checkpoints
            (``ckptpeek.open(path, limits=limits)``).
    """
    root_path = Path(root).expanduser().resolve()
    if not root_path.is_dir():
        return Catalog(root=str(root_path), entries=[], errors=[f"{root_path}: not a directory"])
    patterns = compile_patterns(list(filename_patterns) if filename_patterns is not None else None)
    rules_obj = _load_rules(rules)
    fingerprint = _fingerprint(rules, filename_patterns, limits)
    memo = FileMemo()
    found = scan(root_path)
    store, own_cache = _open_cache(cache)
    bar = _Progress(len(found), progress)

    def one(f: Found) -> tuple[CatalogEntry | None, Any]:
        ctx = EntryContext(
            f.path,
            root_path,
            f.relpath,
            f.experiment,
            rules=rules_obj,
            patterns=patterns,
            memo=memo,
            limits=limits,
        )
        try:
            if f.problem is not None:  # never opened: a FIFO would block
                return unreadable_entry(ctx, os.lstat(f.path), f"not read: {f.problem}"), None
            stamp = None
            if store is not None:
                stamp = Stamp.of(f.path, related_paths(ctx), fingerprint=fingerprint)
                hit = store.get(f.path, stamp)
                if hit is not None and _describes(hit, f):
                    return hit, None
                stamp.content()  # the bytes the entry is built from, stamped before the build
            st = os.stat(f.path)
            return build_entry(ctx, st), stamp
        except FileNotFoundError:
            return None, None  # deleted while we were scanning: not a checkpoint any more
        except Exception as exc:  # noqa: BLE001 - marked on the entry and logged, not hidden
            # ckptpeek raises only CheckpointError/OSError for a file (handled by the
            # sources): anything else is a bug. The entry says so, the log has the
            # traceback, and the rest of the catalog is still built.
            log.error("catalog: reading %s hit a ckptpeek bug", f.path, exc_info=True)
            reason = f"internal error (a ckptpeek bug, please report): {type(exc).__name__}: {exc}"
            try:
                return unreadable_entry(ctx, os.lstat(f.path), reason[:500]), None
            except OSError:
                return None, None
        finally:
            bar.step()

    try:
        results = _run(one, found, workers, executor)
        entries: list[CatalogEntry] = []
        paths: list[Path] = []
        fresh: list[tuple[CatalogEntry, Any]] = []
        for f, (entry, stamp) in zip(found, results, strict=True):
            if entry is None:
                continue
            entries.append(entry)
            paths.append(f.path)
            if stamp is not None and store is not None:
                fresh.append((entry, stamp))
        if store is not None:
            if fresh:
                store.put_many(fresh)
            store.prune([e.path for e in entries], under=root_path)
    finally:
        bar.close()
        if own_cache and store is not None:
            store.close()

    _mark_best(entries)
    if write_resolved:
        for entry, path in zip(entries, paths, strict=True):
            if entry.status == "unreadable":
                continue
            try:  # the path of the scan, never one from a cached row
                write_resolved_config(entry, path, root_path, limits)
            except OSError as exc:
                entry.warnings.append(f"{NOT_WRITTEN}: {exc}")
    return Catalog(root=str(root_path), entries=entries, errors=[])


def _describes(entry: CatalogEntry, f: Found) -> bool:
    """A cached entry is used only for the file the scan found (its row says where)."""
    return (entry.path, entry.relpath, entry.experiment) == (str(f.path), f.relpath, f.experiment)


def _run(
    fn: Callable[[Found], Any], items: list[Found], workers: int | None, executor: Executor | None
) -> list[Any]:
    if executor is not None:
        return list(executor.map(fn, items))
    if workers is None:
        workers = min(32, (os.cpu_count() or 1) + 4)
    workers = max(1, min(int(workers), len(items) or 1))
    if workers == 1:
        return [fn(f) for f in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ckptpeek-catalog") as pool:
        return list(pool.map(fn, items))


def _mark_best(entries: list[CatalogEntry]) -> None:
    """``is_best`` per experiment and monitor: the entries with the best score.

    Set only where no source said it (a ``best.ckpt`` file name); entries without a
    score keep None."""
    groups: dict[tuple[str, str | None, str | None], list[CatalogEntry]] = {}
    for e in entries:
        if e.score is not None and not math.isnan(e.score) and e.mode in ("min", "max"):
            groups.setdefault((e.experiment, e.monitor, e.mode), []).append(e)
    for (_, _, mode), group in groups.items():
        pick = max if mode == "max" else min
        best = pick(e.score for e in group)  # type: ignore[type-var]
        for e in group:
            if e.is_best is None:
                e.is_best = bool(values_agree("score", e.score, best) and e.score == best)
                e.sources["is_best"] = "catalog:experiment"
