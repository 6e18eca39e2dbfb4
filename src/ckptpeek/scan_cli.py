"""``ckptpeek scan FILE...``: the security report of ``ckptpeek.scan`` on the command line.

Exit status: 0 when every file is ``safe``, 1 when any is not (``unknown``,
``dangerous``, ``refused``) or cannot be opened, 2 for a usage error (argparse).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .scan import ScanReport, printable, scan

__all__ = ("main",)

_MARK = {"safe": "safe     ", "unknown": "UNKNOWN  ", "dangerous": "DANGEROUS"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ckptpeek scan",
        description=(
            "Report what torch.load would import from each checkpoint, and what is unusual "
            "about it, without running anything. Verdicts: safe, unknown, dangerous, refused."
        ),
        epilog="exit status: 0 all files safe, 1 any file not safe or unreadable, 2 usage error",
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
        lines.append(f"  refused: {report.error.code}: {printable(str(report.error))}")
    for module, name, kind in report.globals:
        lines.append(f"  {_MARK[kind]}  {printable(module)}.{printable(name)}")
    lines += [f"  anomaly: {printable(a)}" for a in report.anomalies]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    failures = 0
    results = []
    for path in args.files:
        try:
            report = scan(path, engine=args.engine)
        except OSError as exc:
            failures += 1
            msg = f"{path}: {exc.strerror or exc}"
            if args.json:
                results.append(
                    {
                        "path": path,
                        "verdict": "error",
                        "globals": [],
                        "anomalies": [],
                        "error": {"class": "OSError", "code": "os-error", "message": msg},
                    }
                )
            else:
                print(f"ckptpeek scan: error: {printable(msg)}", file=sys.stderr)
            continue
        failures += report.verdict != "safe"
        if args.json:
            results.append(report.to_dict())
        else:
            print(format_report(report))
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    return 1 if failures else 0
