"""``ckptpeek catalog ROOT``: the checkpoints under a training-outputs tree, as a table or JSON.

    ckptpeek catalog outputs                       a table, by experiment then epoch
    ckptpeek catalog outputs --sort val/hmean --desc
    ckptpeek catalog outputs --experiment dbnet_r18 --json
    ckptpeek catalog outputs --jsonl | jq .score

Exit status (as ``ckptpeek FILE``): 0 when every checkpoint shown was read (warnings about
sidecars or configs do not change it); 1 when any checkpoint shown (after
``--experiment``) is ``unreadable`` (the table,
``--json`` or ``--jsonl`` is still printed in full) or the root is not a directory; 2 for a
usage error: a bad option, or a ``--cache-path`` that holds something other than a
ckptpeek cache (left untouched).

The table is terminal-safe: every cell goes through ``ckptpeek.printable`` (an ESC
sequence or a newline in a file or monitor name is shown escaped, never acted on or
turned into a fake row), and so is the ``--sort`` argument shown as a column title;
``--json`` and ``--jsonl`` are strict JSON (escaped by JSON, lone surrogates as ``\\udxxx``
escapes, NaN and the infinities as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import Any

import ckptpeek

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
    return ckptpeek.printable(value)


def format_table(entries: list[Any], sort_key: str | None = None) -> str:
    """The entries as a plain-text table: columns padded to their widest cell, two spaces apart.

    Hand-written on purpose (``rich`` would be a dependency for a dozen lines): the output
    is plain ASCII without colour (nothing for ``NO_COLOR`` to turn off) and is never cut
    to the terminal's width, so it reads the same in a terminal, a pipe (``| less -S``,
    ``| grep``) and a log file.
    """
    header = ["EXPERIMENT", "CHECKPOINT", "EPOCH", "STEP", "MONITOR", "SCORE"]
    if sort_key is not None and sort_key not in _FIELD_SORTS:
        header.append(ckptpeek.printable(sort_key.upper()))  # the user's text: escaped too
    header += ["BEST", "ARCH", "STATUS"]
    rows = []
    for e in entries:
        name = e.relpath.rsplit("/", 1)[-1]
        arch = "/".join(
            x or "?" for x in (e.architecture.encoder, e.architecture.decoder, e.architecture.head)
        )
        row = [
            _fmt(e.experiment),
            _fmt(name),
            _fmt(e.epoch),
            _fmt(e.global_step),
            _fmt(f"{e.monitor} ({e.mode})") if e.monitor and e.mode else _fmt(e.monitor),
            _fmt(e.score),
        ]
        if sort_key is not None and sort_key not in _FIELD_SORTS:
            row.append(_fmt(e.metric(sort_key)))
        status = e.status
        if e.warnings:
            status += f" ({len(e.warnings)} warning{'s' if len(e.warnings) > 1 else ''})"
        row += ["*" if e.is_best else "", _fmt(arch) if arch != "?/?/?" else "-", _fmt(status)]
        rows.append(row)
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=False)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip() for r in rows]
    return "\n".join(lines)


def _dumps(doc: Any, indent: int | None = None) -> str:
    """Strict JSON (``models.dumps_json``: non-finite floats as strings), every non-ASCII
    character escaped: a lone surrogate from a file name becomes ``\\udcxx`` (valid
    JSON), not an encoding error on stdout."""
    from .models import dumps_json  # noqa: PLC0415 - pydantic: loaded by the build anyway

    return dumps_json(doc, indent=indent, ensure_ascii=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from .build import NOT_WRITTEN, build_catalog  # noqa: PLC0415 - ~0.2 s (pydantic...)
    from .cache import NotACacheError  # noqa: PLC0415

    if args.no_cache:
        cache: Any = False
    elif args.cache_path:
        cache = args.cache_path
    else:
        cache = True
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    try:
        catalog = build_catalog(
            args.root,
            cache=cache,
            workers=args.workers,
            progress=progress,
            write_resolved=args.write_resolved,
        )
    except NotACacheError as exc:
        parser.error(  # exits 2
            f"catalog cache {ckptpeek.printable(exc)} (choose another with --cache-path, "
            "or --no-cache)"
        )
    entries = list(catalog.entries)
    if args.experiment:
        entries = [e for e in entries if _matches(e.experiment, args.experiment)]
    entries = sort_entries(entries, args.sort, args.desc)
    try:
        if args.json:
            doc = catalog.model_copy(update={"entries": entries}).model_dump(mode="json")
            print(_dumps(doc, indent=2))
        elif args.jsonl:
            for e in entries:
                print(_dumps(e.model_dump(mode="json")))
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
        print(f"ckptpeek catalog: error: {ckptpeek.printable(err)}", file=sys.stderr)
    for e in catalog.entries:  # --write-resolved refusals: the user asked for these files
        for w in e.warnings:
            if w.startswith(NOT_WRITTEN):
                print(f"ckptpeek catalog: warning: {ckptpeek.printable(w)}", file=sys.stderr)
    # over the entries shown: a checkpoint --experiment leaves out does not fail the run
    unreadable = any(e.status == "unreadable" for e in entries)
    return 1 if catalog.errors or unreadable else 0


if __name__ == "__main__":  # python -m ckptpeek.catalog.cli ROOT
    sys.exit(main())
