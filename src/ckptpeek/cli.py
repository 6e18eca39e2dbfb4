"""The ``ckptpeek`` command: thin argument parsing over the library.

ckptpeek FILE...            a readable summary of each checkpoint
ckptpeek --tree FILE        every key, with shape and dtype for tensors
ckptpeek --json FILE...     the summaries as JSON (one object per file, in a list)
ckptpeek --version          version and which pickle engine is active
ckptpeek catalog ROOT       the catalog of an outputs/ tree (see ``ckptpeek catalog -h``)
ckptpeek scan FILE...       what torch.load would import, and a verdict (``ckptpeek scan -h``)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence

from ckptpeek.summary.facts import collect
from ckptpeek.unpickle.standins import Placeholder, safe_repr

from . import BACKEND, __version__
from .api import open_checkpoint
from .errors import CheckpointError
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
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "catalog":  # `ckptpeek catalog ROOT ...` (a file named so: ./catalog)
        from ckptpeek.catalog.cli import main as catalog_main  # noqa: PLC0415 - pydantic only here

        return catalog_main(argv[1:])
    if argv and argv[0] == "scan":  # `ckptpeek scan FILE...`: the security report
        from .scan_cli import main as scan_main  # noqa: PLC0415 - only for this command

        return scan_main(argv[1:])
    args = _parser().parse_args(argv)
    failures = 0
    results: list[Any] = []
    for i, path in enumerate(args.files):
        try:
            with open_checkpoint(path, strict=args.strict, engine=args.engine) as ckpt:
                if args.json:
                    results.append(collect(ckpt))
                    continue
                if i:
                    print()
                if args.tree:
                    print(f"{path}  [{ckpt.format}]")
                    for line in tree_lines(ckpt.root, max_items=args.max_items):
                        print(line)
                elif args.globals:
                    print(path)
                    for g in ckpt.globals():
                        print(f"  {'safe   ' if g.safe else 'UNKNOWN'}  {g}")
                else:
                    print(format_summary(collect(ckpt)))
        except CheckpointError as exc:
            failures += 1
            if args.json:
                results.append(
                    {
                        "path": path,
                        "error": {
                            "class": type(exc).__name__,
                            "code": exc.code,
                            "message": str(exc),
                        },
                    }
                )
            else:
                print(f"ckptpeek: error: {exc}", file=sys.stderr)
        except BrokenPipeError:  # `ckptpeek --tree big.ckpt | head`
            sys.stderr.close()
            return 0
        except OSError as exc:
            failures += 1
            print(f"ckptpeek: error: {path}: {exc.strerror or exc}", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - a bug of ours: one line, not a traceback
            failures += 1
            print(
                f"ckptpeek: internal error on {path}: {type(exc).__name__}: "
                f"{str(exc)[:200]} (please report it)",
                file=sys.stderr,
            )
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    return 1 if failures else 0


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def format_summary(s: dict[str, Any]) -> str:
    """The human-readable block for one summary (``facts.collect``'s data)."""
    lines = [
        f"{s['path'] or '<file>'}  [{s['format']}, {_human(s['file_size'])}, "
        f"read {_human(s['bytes_read'])}]"
    ]
    facts = [
        f"{name} {value}"
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
            f"  ModelCheckpoint: monitor={mc['monitor']} mode={mc['mode']} "
            f"best={mc['best_model_score']} path={mc['best_model_path']}"
        )
        if mc["last_model_path"]:
            lines.append(f"    last={mc['last_model_path']}")
    for es in s["early_stopping"]:
        lines.append(
            f"  EarlyStopping: monitor={es['monitor']} best={es['best_score']} "
            f"wait={es['wait_count']}/{es['patience']}"
        )
    for opt in s["optimizers"]:
        lines.append(
            f"  optimizer: {opt['type'] or '?'} ({opt['params']} params in "
            f"{opt['param_groups']} group(s), lr={opt['lr']})"
        )
    for sch in s["lr_schedulers"]:
        lines.append(f"  lr scheduler: {sch['type'] or '?'} (last_epoch={sch['last_epoch']})")
    if s["hyper_parameters"]:
        text = json.dumps(s["hyper_parameters"], default=str)
        lines.append(f"  hyper_parameters: {text if len(text) <= 200 else text[:197] + '...'}")
    dtypes = ", ".join(f"{k.removeprefix('torch.')} x{v}" for k, v in s["dtypes"].items())
    lines.append(
        f"  tensors: {s['tensor_count']} ({dtypes or 'none'}), "
        f"{_human(s['total_tensor_bytes'])}; state_dict: {s['state_dict_tensors']} "
        f"tensors, {s['parameter_count']:,} parameters"
    )
    if s["unknown_globals"]:
        lines.append(f"  unknown globals (placeholders): {', '.join(s['unknown_globals'])}")
    return "\n".join(lines)


def tree_lines(root: Any, *, max_items: int = 20, max_depth: int = 64) -> Iterator[str]:
    """Indented lines for every key; tensors show shape and dtype. Iterative, bounded."""
    seen: set[int] = set()
    stack: list[tuple[int, Any, Any]] = [(0, None, root)]
    while stack:
        depth, key, obj = stack.pop()
        shown = key if isinstance(key, (str, int)) else safe_repr(key)
        label = "  " * depth + (f"{shown}: " if key is not None else "")
        is_list = isinstance(obj, (list, tuple))
        if isinstance(obj, TensorRef):
            dev = "" if str(obj.device) == "cpu" else f" {obj.device}"
            yield f"{label}{obj.dtype.name}{list(obj.shape)}{dev}"
            continue
        kids = list(children(obj))
        if not kids or depth >= max_depth or id(obj) in seen:
            yield label + (_leaf(obj) if not kids else f"<{type(obj).__name__}, shown above>")
            continue
        seen.add(id(obj))
        head = type(obj).__name__ if not isinstance(obj, Placeholder) else obj.qualname
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
    return safe_repr(obj)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
