"""``ckptpeek scan FILE...``: the security report of ``ckptpeek.scan`` on the command line.

It also holds the loop both commands share (``run_files``: every output path inside
the error handling) - here, not in ``cli.py``, which imports this module for ``scan``.

Exit status: 0 when every file is ``safe``, 1 when any is not (``unknown``,
``dangerous``, ``refused``) or cannot be opened, 2 for a usage error (argparse), 3 for a
bug of ckptpeek (``CKPTPEEK_DEBUG=1`` shows its traceback). Everything printed from a
file or its name is escaped (``printable``); ``--json`` is ASCII.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence

from ._text import json_safe, printable
from .errors import CheckpointError

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from typing import Any

    from .scan import ScanReport

__all__ = ("main", "run_files", "safe_streams", "EXIT_OK", "EXIT_FILES", "EXIT_INTERNAL")


_MARK = {"safe": "safe     ", "unknown": "UNKNOWN  ", "dangerous": "DANGEROUS"}


#: exit statuses: every file read; a file could not be read (or, for ``scan``, is not
#: safe); a usage error (argparse); a bug of ckptpeek (an exception it does not define)
EXIT_OK, EXIT_FILES, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
#: set to 1 to see the traceback of an internal error instead of its one-line report
DEBUG_ENV = "CKPTPEEK_DEBUG"


def run_files(
    files: Sequence[str],
    show: Callable[[str], tuple[Iterable[str] | None, Any]],
    prog: str,
    *,
    json_out: bool,
    failed: Callable[[Any], bool] | None = None,
    error_entry: Callable[[str, dict[str, str]], Any] | None = None,
    blank_lines: bool = True,
) -> int:
    """Run ``show`` on each file and print what it gives; every error on one line.

    ``show(path)`` returns the lines to print - printed as the iterable makes them, so a
    generator streams - or, with ``json_out``, a JSON-able value (``json_safe``). It
    raises ``CheckpointError`` or ``OSError`` for a file it cannot read, also while
    making its lines: the lines printed so far stay, then one escaped line on stderr, or
    with ``json_out`` the entry ``error_entry(path, error)`` makes (default ``{"path",
    "error": {"class", "code", "message"}}``). Any other exception is a bug of
    ckptpeek: one line on stderr and ``EXIT_INTERNAL``, its traceback with
    ``CKPTPEEK_DEBUG=1``. ``failed(value)`` says whether a file shown counts as a
    failure (``scan``: a verdict other than safe). The status is the worst of
    ``EXIT_OK``, ``EXIT_FILES`` and ``EXIT_INTERNAL`` over the files. The JSON document
    is strict (``allow_nan=False``: ``json_safe`` writes no NaN or Infinity).
    """
    status = EXIT_OK
    results: list[Any] = []
    shown = 0
    try:
        for path in files:
            printed = False
            try:
                lines, value = show(path)
                for line in () if json_out or lines is None else lines:
                    if not printed and shown and blank_lines:
                        print()
                    print(line)
                    printed = True
            except BrokenPipeError:
                raise  # the reader of stdout has gone: not this file's error
            except (CheckpointError, OSError) as exc:
                status = max(status, EXIT_FILES)
                shown += printed
                if isinstance(exc, CheckpointError):
                    err = {"class": type(exc).__name__, "code": exc.code, "message": str(exc)}
                else:
                    reason = printable(f"{path}: {exc.strerror or exc}")
                    err = {"class": "OSError", "code": "os-error", "message": reason}
                if json_out:
                    entry = {"path": path, "error": err}
                    results.append(
                        json_safe(entry if error_entry is None else error_entry(path, err))
                    )
                else:
                    sys.stdout.flush()  # the lines before the error come before it
                    print(f"{prog}: error: {err['message']}", file=sys.stderr)
                continue
            except Exception as exc:
                if os.environ.get(DEBUG_ENV):
                    raise
                status = EXIT_INTERNAL
                shown += printed
                sys.stdout.flush()
                print(_internal(prog, path, exc), file=sys.stderr)
                continue
            shown += printed
            if failed is not None and failed(value):
                status = max(status, EXIT_FILES)
            if json_out:
                results.append(value)
        if json_out:
            try:
                text = json.dumps(results, indent=2, ensure_ascii=True, allow_nan=False)
            except Exception as exc:  # json_safe wrote it: a failure here is a bug
                if os.environ.get(DEBUG_ENV):
                    raise
                print(_internal(prog, "the JSON document", exc), file=sys.stderr)
                return EXIT_INTERNAL
            print(text)
    except BrokenPipeError:  # `ckptpeek --tree big.ckpt | head`: the reader has gone
        _silence_stdout()
    return status


def _internal(prog: str, path: str, exc: BaseException) -> str:
    return (
        f"{prog}: internal error on {printable(path)}: {printable(type(exc).__name__)}: "
        f"{printable(exc)[:200]} (a bug of ckptpeek, please report it; {DEBUG_ENV}=1 shows "
        f"the traceback)"
    )


def safe_streams() -> None:
    """Never fail at print: characters the terminal's encoding lacks are escaped."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def _silence_stdout() -> None:
    """After a broken pipe, send what is left (the interpreter's final flush) nowhere."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real descriptor (captured output)
        pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ckptpeek scan",
        description=(
            "Report what torch.load would import from each checkpoint, and what is unusual "
            "about it, without running anything. Verdicts: safe, unknown, dangerous, refused."
        ),
        epilog=(
            "exit status: 0 all files safe, 1 any file not safe or unreadable, 2 usage error, "
            "3 a bug of ckptpeek"
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="checkpoint files or directories")
    p.add_argument("--json", action="store_true", help="one JSON object per file, in a list")
    p.add_argument(
        "--engine", choices=("python", "native"), default=None, help="pickle engine to use"
    )
    return p


def format_report(report: ScanReport) -> str:
    lines = [
        f"{printable(report.path)}: {report.verdict.upper()}"
        + (f"  [{report.format}]" if report.format else "")
    ]
    if report.error is not None:
        lines.append(f"  refused: {printable(report.error.code)}: {report.error}")
    for module, name, kind in report.globals:
        lines.append(f"  {_MARK[kind]}  {printable(module)}.{printable(name)}")
    lines += [f"  anomaly: {printable(a)}" for a in report.anomalies]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from .scan import scan  # noqa: PLC0415 - `ckptpeek FILE` does not need the scanner

    args = _parser().parse_args(argv)

    def show(path: str) -> tuple[tuple[str, ...] | None, Any]:
        report = scan(path, engine=args.engine)
        if args.json:
            return None, json_safe(report.to_dict())
        return (format_report(report),), report

    def not_safe(value: Any) -> bool:
        return bool(value["verdict"] != "safe") if args.json else value.verdict != "safe"

    def error_entry(path: str, error: dict[str, str]) -> dict[str, Any]:
        return {"path": path, "verdict": "error", "globals": [], "anomalies": [], "error": error}

    return run_files(
        args.files,
        show,
        "ckptpeek scan",
        json_out=args.json,
        failed=not_safe,
        error_entry=error_entry,
        blank_lines=False,
    )
