"""``ckptpeek catalog ROOT``: the checkpoints under a training-outputs tree, as a table or JSON.

    ckptpeek catalog outputs                       a table, by experiment then epoch
    ckptpeek catalog outputs --sort val/hmean --desc
    ckptpeek catalog outputs --experiment dbnet_r18 --json
    ckptpeek catalog outputs --jsonl | jq .score

Exit status: 0, or 1 if the root could not be cataloged (not a directory).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ("main", "sort_entries", "format_table")

_FIELD_SORTS = {
    "epoch": "epoch",
    "step": "global_step",
    "global_step": "global_step",
    "score": "score",
    "mtime": "mtime_ns",
    "size": "file_size",
    "path": "relpath",
    "relpath": "relpath",
    "experiment": "experiment",
    "created": "created",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ckptpeek catalog",
        description="Catalog the checkpoints under a training-outputs directory "
        "(sidecars, Hydra configs, checkpoint headers, file names, state-dict signatures).",
    )
    p.add_argument("root", metavar="ROOT", help="the outputs directory")
    p.add_argument(
        "--sort",
        metavar="METRIC",
        help="sort by a metric (e.g. val/hmean; val_hmean and hmean match it) or by "
        "epoch, step, score, mtime, size, path; entries without it come last",
    )
    p.add_argument("--desc", action="store_true", help="sort descending")
    p.add_argument(
        "--experiment",
        metavar="X",
        action="append",
        help="only this experiment (repeatable; a trailing / matches everything below)",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="the catalog as one JSON document")
    out.add_argument("--jsonl", action="store_true", help="one JSON entry per line")
    p.add_argument("--no-cache", action="store_true", help="read every checkpoint; no cache")
    p.add_argument(
        "--cache-path", metavar="P", help="cache file or directory (default: user cache dir)"
    )
    p.add_argument(
        "--workers", type=int, metavar="N", help="threads (default: cpu count + 4, max 32)"
    )
    p.add_argument(
        "--write-resolved",
        action="store_true",
        help="write <stem>.resolved.config.json beside each checkpoint",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr for long builds (default: when stderr is a terminal)",
    )
    return p


def _sort_value(entry: Any, key: str) -> Any:
    attr = _FIELD_SORTS.get(key)
    if attr is not None:
        value = getattr(entry, attr)
        return value.timestamp() if hasattr(value, "timestamp") else value
    return entry.metric(key)


def sort_entries(entries: list[Any], key: str | None, desc: bool = False) -> list[Any]:
    """Sorted entries; ``None``/NaN values always last."""
    if key is None:
        default = sorted(
            entries,
            key=lambda e: (
                e.experiment,
                e.is_last,
                -1 if e.epoch is None else e.epoch,
                -1 if e.global_step is None else e.global_step,
                e.relpath,
            ),
        )
        return default[::-1] if desc else default
    have: list[tuple[Any, Any]] = []
    missing: list[tuple[Any, Any]] = []
    for e in entries:
        v = _sort_value(e, key)
        (missing if v is None or (isinstance(v, float) and math.isnan(v)) else have).append((v, e))
    have.sort(key=lambda ve: ve[0], reverse=desc)
    return [e for _, e in have] + [e for _, e in missing]


def _matches(experiment: str, wanted: list[str]) -> bool:
    for w in wanted:
        if experiment == w.rstrip("/") or (w.endswith("/") and experiment.startswith(w)):
            return True
    return False


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def format_table(entries: list[Any], sort_key: str | None = None) -> str:
    """The entries as a plain-text table: columns padded to their widest cell, two spaces apart.

    Hand-written on purpose (``rich`` would be a dependency for a dozen lines): the output
    is plain ASCII without colour (nothing for ``NO_COLOR`` to turn off) and is never cut
    to the terminal's width, so it reads the same in a terminal, a pipe (``| less -S``,
    ``| grep``) and a log file.
    """
    header = ["EXPERIMENT", "CHECKPOINT", "EPOCH", "STEP", "MONITOR", "SCORE"]
    if sort_key is not None and sort_key not in _FIELD_SORTS:
        header.append(sort_key.upper())
    header += ["BEST", "ARCH", "STATUS"]
    rows = []
    for e in entries:
        name = e.relpath.rsplit("/", 1)[-1]
        arch = "/".join(
            x or "?" for x in (e.architecture.encoder, e.architecture.decoder, e.architecture.head)
        )
        row = [
            e.experiment,
            name,
            _fmt(e.epoch),
            _fmt(e.global_step),
            f"{e.monitor} ({e.mode})" if e.monitor and e.mode else _fmt(e.monitor),
            _fmt(e.score),
        ]
        if sort_key is not None and sort_key not in _FIELD_SORTS:
            row.append(_fmt(e.metric(sort_key)))
        status = e.status
        if e.warnings:
            status += f" ({len(e.warnings)} warning{'s' if len(e.warnings) > 1 else ''})"
        row += ["*" if e.is_best else "", arch if arch != "?/?/?" else "-", status]
        rows.append(row)
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=False)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip() for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .build import build_catalog  # noqa: PLC0415 - ~0.2 s (pydantic...) only after -h

    if args.no_cache:
        cache: Any = False
    elif args.cache_path:
        cache = args.cache_path
    else:
        cache = True
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    catalog = build_catalog(
        args.root,
        cache=cache,
        workers=args.workers,
        progress=progress,
        write_resolved=args.write_resolved,
    )
    entries = list(catalog.entries)
    if args.experiment:
        entries = [e for e in entries if _matches(e.experiment, args.experiment)]
    entries = sort_entries(entries, args.sort, args.desc)
    try:
        if args.json:
            doc = catalog.model_copy(update={"entries": entries}).model_dump(mode="json")
            print(json.dumps(doc, indent=2))
        elif args.jsonl:
            for e in entries:
                print(e.model_dump_json())
        else:
            print(format_table(entries, args.sort))
            unreadable = sum(e.status == "unreadable" for e in entries)
            warned = sum(bool(e.warnings) for e in entries)
            print(
                f"\n{len(entries)} checkpoint(s)"
                + (f", {unreadable} unreadable" if unreadable else "")
                + (f", {warned} with warnings (--json shows them)" if warned else "")
            )
        sys.stdout.flush()
    except BrokenPipeError:
        return 0
    for err in catalog.errors:
        print(f"ckptpeek catalog: error: {err}", file=sys.stderr)
    return 1 if catalog.errors and not catalog.entries else 0


if __name__ == "__main__":  # python -m ckptpeek.catalog.cli ROOT
    sys.exit(main())
