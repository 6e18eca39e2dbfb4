"""``build_catalog``: scan a root, build one entry per checkpoint from its sources, merge.

Merge rule (README, "The catalog"): each field takes the first source (in ``sources.SOURCES``
order) that has it and every later source that disagrees adds a warning - except that
the checkpoint header wins for what it records (epoch, global_step, monitor, mode,
score, the metrics it has), and sidecars that disagree with it add a warning.
``entry.sources[field] = "<source>:<origin>"`` for every field set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from .agree import values_agree
from .models import Architecture, Catalog, CatalogEntry, Signatures
from .scan import Found, scan
from .signatures import SignatureRules
from .sources import (
    SIDECAR_KINDS,
    SOURCES,
    EntryContext,
    FileMemo,
    SourceResult,
    compile_patterns,
    sidecar_paths,
)

try:
    from .cache import CatalogCache, Stamp
except ImportError as exc:  # pragma: no cover - a Python built without sqlite3
    CatalogCache = Stamp = None  # type: ignore[assignment,misc]  # builds run uncached
    _NO_CACHE = str(exc)

__all__ = ("build_catalog", "build_entry", "merge", "values_agree", "RESOLVED_SUFFIX")

log = logging.getLogger("ckptpeek.catalog")

RESOLVED_SUFFIX = ".resolved.config.json"

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
                f"{key}: {_label(res, key)} says {_show(value)}, "
                f"{sources[key]} says {_show(win_val)} (using {res_name(win_res)})"
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


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


# --------------------------------------------------------------------------- one entry


def build_entry(ctx: EntryContext, stat: os.stat_result | None = None) -> CatalogEntry:
    if stat is None:
        stat = os.stat(ctx.path)
    results = [source(ctx) for source in SOURCES]
    return merge(ctx, results, stat)


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


def resolved_config(entry: CatalogEntry) -> dict[str, Any]:
    """What ``<stem>.resolved.config.json`` holds: the entry's merged view."""
    return {
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


def write_resolved_config(entry: CatalogEntry) -> Path:
    """Write ``<stem>.resolved.config.json`` beside the checkpoint atomically."""
    path = Path(entry.path)
    stem = EntryContext(path, path.parent, "", "").stem
    target = path.with_name(stem + RESOLVED_SUFFIX)
    data = json.dumps(resolved_config(entry), indent=2, sort_keys=True, default=str) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
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


def _fingerprint(rules: Any, patterns: Any) -> str:
    """Build options that shape entries, for the cache's validity check."""
    if rules is None and patterns is None:
        return ""
    h = hashlib.sha256()
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
                h.update(p.read_bytes())
            except OSError:
                pass
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
) -> Catalog:
    """Catalog every checkpoint under ``root``.

    Args:
        root: the training outputs directory.
        cache: ``True`` (the user cache, ``CatalogCache()``), ``False``, a path, or a
            ``CatalogCache``. Only new or changed checkpoints (or sidecars/configs) are read.
        workers: thread-pool size (default: ``min(32, cpu + 4)``); ``1`` builds in this thread.
        executor: any ``concurrent.futures.Executor`` to use instead of the thread pool.
        progress: draw a progress bar on stderr when the build takes > 0.5 s.
        write_resolved: write ``<stem>.resolved.config.json`` beside each checkpoint
            (atomically); nothing is written into the tree otherwise.
        rules: signature rules: a ``SignatureRules`` or a YAML file extending the defaults.
        filename_patterns: regexes with named groups replacing the default file-name patterns.
    """
    root_path = Path(root).expanduser().resolve()
    if not root_path.is_dir():
        return Catalog(root=str(root_path), entries=[], errors=[f"{root_path}: not a directory"])
    patterns = compile_patterns(list(filename_patterns) if filename_patterns is not None else None)
    rules_obj = _load_rules(rules)
    fingerprint = _fingerprint(rules, filename_patterns)
    memo = FileMemo()
    found = scan(root_path)
    cat_errors: list[str] = []
    store, own_cache = _open_cache(cache)
    bar = _Progress(len(found), progress)

    def one(f: Found) -> tuple[CatalogEntry | None, Any, str | None]:
        ctx = EntryContext(
            f.path,
            root_path,
            f.relpath,
            f.experiment,
            rules=rules_obj,
            patterns=patterns,
            memo=memo,
        )
        try:
            stamp = None
            if store is not None:
                stamp = Stamp.of(f.path, related_paths(ctx), fingerprint=fingerprint)
                hit = store.get(f.path, stamp)
                if hit is not None:
                    return hit, None, None
            st = os.stat(f.path)
            return build_entry(ctx, st), stamp, None
        except FileNotFoundError:
            return None, None, None  # deleted while we were scanning
        except Exception as exc:  # noqa: BLE001 - one bad file must not sink the catalog
            log.debug("catalog entry failed", exc_info=True)
            return None, None, f"{f.relpath}: {type(exc).__name__}: {exc}"
        finally:
            bar.step()

    try:
        results = _run(one, found, workers, executor)
        entries: list[CatalogEntry] = []
        fresh: list[tuple[CatalogEntry, Any]] = []
        for entry, stamp, err in results:
            if err is not None:
                cat_errors.append(err)
            if entry is None:
                continue
            entries.append(entry)
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
        for entry in entries:
            if entry.status == "unreadable":
                continue
            try:
                write_resolved_config(entry)
            except OSError as exc:
                entry.warnings.append(f"could not write {RESOLVED_SUFFIX}: {exc}")
    return Catalog(root=str(root_path), entries=entries, errors=cat_errors)


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
