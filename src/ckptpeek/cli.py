"""The ``ckptpeek`` command: thin argument parsing over the library.

ckptpeek FILE...            a readable summary of each checkpoint
ckptpeek --tree FILE        every key, with shape and dtype for tensors
ckptpeek --json FILE...     the summaries as JSON (one object per file, in a list)
ckptpeek --version          version and which pickle engine is active
ckptpeek catalog ROOT       the catalog of an outputs/ tree (see ``ckptpeek catalog -h``)
ckptpeek scan FILE...       what torch.load would import, and a verdict (``ckptpeek scan -h``)

Every text printed is safe for a terminal: what comes from a file or its name goes
through ``printable`` (ESC sequences, newlines, bidi controls and lone surrogates
escaped), ``--json`` is written with ``ensure_ascii`` after ``json_safe`` (an int too
long for ``str()`` is the string ``"<int of N bits>"``), and an error is one line.
Text is printed as it is made (``--tree`` streams); an error in the middle of a file's
output leaves the lines printed so far, then its one error line on stderr (exit 1).
Exit status: 0 every file read, 1 some file could not be read, 2 a usage error, 3 a bug
of ckptpeek (``CKPTPEEK_DEBUG=1`` shows its traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence

from ckptpeek.summary.facts import collect
from ckptpeek.unpickle.standins import Placeholder, safe_repr

from . import BACKEND, __version__
from ._text import json_safe, printable
from .api import open_checkpoint
from .scan_cli import run_files, safe_streams
from .tensor import TensorRef
from .walk import children

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from typing import Any

__all__ = ("main",)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ckptpeek",
        description="Show what is inside PyTorch checkpoints without loading weights or torch.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="checkpoint files (.ckpt, .pt, .pth)")
    out = p.add_mutually_exclusive_group()
    out.add_argument(
        "--tree", action="store_true", help="list every key, tensors with shape and dtype"
    )
    out.add_argument("--json", action="store_true", help="print the summaries as JSON")
    out.add_argument(
        "--globals",
        action="store_true",
        help="list the globals each pickle names (what torch.load would import)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="fail on any global outside the safe registry instead of showing a placeholder",
    )
    p.add_argument(
        "--engine",
        choices=("python", "native"),
        default=None,
        help=f"pickle engine (default: {BACKEND})",
    )
    p.add_argument(
        "--max-items",
        type=int,
        default=20,
        metavar="N",
        help="with --tree, show at most N items of each list (default 20)",
    )
    p.add_argument(
        "--version",
        action="version",
        version=f"ckptpeek {__version__} (engine: {BACKEND}, Python {sys.version.split()[0]})",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; the exit status (see ``EXIT_*``)."""
    safe_streams()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "catalog":  # `ckptpeek catalog ROOT ...` (a file named so: ./catalog)
        from ckptpeek.catalog.cli import main as catalog_main  # noqa: PLC0415 - pydantic only here

        return catalog_main(argv[1:])
    if argv and argv[0] == "scan":  # `ckptpeek scan FILE...`: the security report
        from .scan_cli import main as scan_main  # noqa: PLC0415 - only for this command

        return scan_main(argv[1:])
    args = _parser().parse_args(argv)
    return run_files(args.files, lambda path: _show(path, args), "ckptpeek", json_out=args.json)


def _show(path: str, args: argparse.Namespace) -> tuple[Iterator[str] | None, Any]:
    """One file: the lines to print (made as they are printed), or (with ``--json``) its
    JSON-able summary."""
    if args.json:
        with open_checkpoint(path, strict=args.strict, engine=args.engine) as ckpt:
            return None, json_safe(collect(ckpt))
    return _lines(path, args), None


def _lines(path: str, args: argparse.Namespace) -> Iterator[str]:
    """The text of one file, a line at a time: ``--tree big.ckpt | head`` walks only
    what it prints. ``run_files`` prints each line as it comes, inside its error
    handling, so an error in the middle leaves the lines before it and one error line."""
    with open_checkpoint(path, strict=args.strict, engine=args.engine) as ckpt:
        if args.tree:
            yield f"{printable(path)}  [{printable(ckpt.format)}]"
            yield from tree_lines(ckpt.root, max_items=args.max_items)
        elif args.globals:
            yield printable(path)
            for g in ckpt.globals():
                yield f"  {'safe   ' if g.safe else 'UNKNOWN'}  {printable(g)}"
        else:
            yield format_summary(collect(ckpt))


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def format_summary(s: dict[str, Any]) -> str:
    """The human-readable block for one summary (``facts.collect``'s data); every value
    from the file is escaped (``printable``), so each line is one line on a terminal."""
    p = printable
    lines = [
        f"{p(s['path'] or '<file>')}  [{p(s['format'])}, {_human(s['file_size'])}, "
        f"read {_human(s['bytes_read'])}]"
    ]
    facts = [
        f"{name} {p(value)}"
        for name, value in (
            ("epoch", s["epoch"]),
            ("global_step", s["global_step"]),
            ("lightning", s["lightning_version"]),
        )
        if value is not None
    ]
    if facts:
        lines.append("  " + ", ".join(facts))
    for mc in s["model_checkpoints"]:
        lines.append(
            f"  ModelCheckpoint: monitor={p(mc['monitor'])} mode={p(mc['mode'])} "
            f"best={p(mc['best_model_score'])} path={p(mc['best_model_path'])}"
        )
        if mc["last_model_path"]:
            lines.append(f"    last={p(mc['last_model_path'])}")
    for es in s["early_stopping"]:
        lines.append(
            f"  EarlyStopping: monitor={p(es['monitor'])} best={p(es['best_score'])} "
            f"wait={p(es['wait_count'])}/{p(es['patience'])}"
        )
    for opt in s["optimizers"]:
        lines.append(
            f"  optimizer: {p(opt['type'] or '?')} ({p(opt['params'])} params in "
            f"{p(opt['param_groups'])} group(s), lr={p(json_text(opt['lr']))})"
        )
    for sch in s["lr_schedulers"]:
        lines.append(f"  lr scheduler: {p(sch['type'] or '?')} (last_epoch={p(sch['last_epoch'])})")
    if s["hyper_parameters"]:
        text = json_text(s["hyper_parameters"])
        lines.append(f"  hyper_parameters: {text if len(text) <= 200 else text[:197] + '...'}")
    dtypes = ", ".join(f"{p(k).removeprefix('torch.')} x{v}" for k, v in s["dtypes"].items())
    lines.append(
        f"  tensors: {s['tensor_count']} ({dtypes or 'none'}), "
        f"{_human(s['total_tensor_bytes'])}; state_dict: {s['state_dict_tensors']} "
        f"tensors, {s['parameter_count']:,} parameters"
    )
    if s["unknown_globals"]:
        names = ", ".join(p(g) for g in s["unknown_globals"])
        lines.append(f"  unknown globals (placeholders): {names}")
    return "\n".join(lines)


#: values of one line of the summary (``hyper_parameters``, ``lr``): an output cap, as
#: ``json_safe``'s (the line is cut at 200 characters anyway)
_LINE_VALUES = 10_000


def json_text(obj: Any) -> str:
    """``obj`` as one line of strict ASCII JSON (``json_safe`` first: it always writes)."""
    return json.dumps(json_safe(obj, budget=_LINE_VALUES), ensure_ascii=True, allow_nan=False)


def tree_lines(root: Any, *, max_items: int = 20, max_depth: int = 64) -> Iterator[str]:
    """Indented lines for every key; tensors show shape and dtype. Iterative, bounded;
    keys, type names and values are escaped (``printable``)."""
    seen: set[int] = set()
    stack: list[tuple[int, Any, Any]] = [(0, None, root)]
    while stack:
        depth, key, obj = stack.pop()
        shown = printable(key) if isinstance(key, (str, int)) else printable(safe_repr(key))
        label = "  " * depth + (f"{shown}: " if key is not None else "")
        is_list = isinstance(obj, (list, tuple))
        if isinstance(obj, TensorRef):
            dev = "" if str(obj.device) == "cpu" else f" {printable(obj.device)}"
            yield f"{label}{printable(obj.dtype.name)}{list(obj.shape)}{dev}"
            continue
        kids = list(children(obj))
        if not kids or depth >= max_depth or id(obj) in seen:
            what = _leaf(obj) if not kids else f"<{printable(type(obj).__name__)}, shown above>"
            yield label + what
            continue
        seen.add(id(obj))
        head = printable(obj.qualname if isinstance(obj, Placeholder) else type(obj).__name__)
        yield (
            f"{label}{head} ({len(kids)} items)"
            if key is not None or depth
            else f"{head} ({len(kids)} items)"
        )
        visible = kids[:max_items] if is_list else kids
        if len(visible) < len(kids):
            stack.append((depth + 1, None, _More(len(kids) - len(visible))))
        for k, v in reversed(visible):
            stack.append((depth + 1, k, v))


class _More:
    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        return f"... {self.n} more"


def _leaf(obj: Any) -> str:
    return printable(safe_repr(obj))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
