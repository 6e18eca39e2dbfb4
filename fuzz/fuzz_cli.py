"""The command line on one file: what it prints must be safe for a terminal.

The input is written to a scratch file (on ``/dev/shm`` when there is one) and shown with
``ckptpeek FILE``, ``--tree``, ``--globals``, ``--json``, ``--strict``, ``ckptpeek scan
FILE`` and ``scan --json``. For each: ``main`` returns an exit status other than
``EXIT_INTERNAL`` (3: an exception escaped the library and the command caught it) and
raises nothing; stdout and stderr hold no control character but the newline, no C1
control, DEL, bidi control, zero-width or separator character, no lone surrogate (what
a file holds could move the cursor, rewrite the screen or reorder what is shown); JSON
output parses.
"""

from __future__ import annotations

import contextlib
import io
import json
import re

from _common import Finding, instrument, main, scratch_dir

instrument()

from ckptpeek import cli  # noqa: E402

EXIT_INTERNAL = 3
ROOT = scratch_dir("cli")
FILE = ROOT / "in.ckpt"
COMMANDS = (
    [],
    ["--tree"],
    ["--globals"],
    ["--json"],
    ["--strict"],
    ["scan"],
    ["scan", "--json"],
)
#: what must never reach a terminal from a file (the newline is the CLI's own)
UNSAFE = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]"
)


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(argv)
        except SystemExit as exc:  # argparse: usage errors only
            rc = exc.code if isinstance(exc.code, int) else 2
    return rc, out.getvalue(), err.getvalue()


def one_input(data: bytes) -> None:
    FILE.write_bytes(data)
    for command in COMMANDS:
        argv = [*command, str(FILE)]
        rc, out, err = run(argv)
        if rc == EXIT_INTERNAL:
            raise Finding(f"ckptpeek {' '.join(command)}: internal error: {err[-2000:]}")
        for name, text in (("stdout", out), ("stderr", err)):
            bad = UNSAFE.search(text)
            if bad is not None:
                at = bad.start()
                raise Finding(
                    f"ckptpeek {' '.join(command)}: {bad.group()!r} on {name}: "
                    f"{text[max(0, at - 80) : at + 80]!r}"
                )
        if "--json" in command and out.strip():
            json.loads(out)


if __name__ == "__main__":
    main(one_input)
