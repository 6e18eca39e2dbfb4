"""The pickle interpreter: both engines on the same bytes must give the same outcome.

The input is a pickle. An input starting with ``0xFE`` (no pickle opcode) carries options
in its second byte and the pickle after it, so the fuzzer explores them too:

  bit 0  ``strict=True``                bit 1  ``encoding="bytes"``
  bit 2  ``select=`` (summary keys)     bit 3  tiny limits (every guard low)
  bit 4  no ``persistent_load``

Storages resolve against a small built archive (``test_parity.EXOTIC``: float, long,
double and quantized storages under keys 0-8), so tensor rebuilds run. The outcome is
compared with ``test_parity.outcome`` - the comparison the parity tests use: the value
graph (exact types, sharing, float bits), globals, ``complete`` and end offset, or the
error's class, code, offset and message.
"""

from __future__ import annotations

from typing import Any

from _common import Finding, first_difference, instrument, main, native_engine_required

instrument()
native_engine_required()

import test_parity  # noqa: E402

import ckptpeek  # noqa: E402

OPTIONS = 0xFE
TINY = ckptpeek.Limits(
    max_memo=8,
    max_depth=6,
    max_nodes=200,
    max_marks=4,
    max_key_nodes=16,
    max_hash_collisions=4,
    max_interpolated_bytes=256,
)


def options(data: bytes) -> tuple[bytes, dict[str, Any]]:
    """Split ``data`` into the pickle and ``run_pickle`` keywords (see the docstring)."""
    kw: dict[str, Any] = {}
    flags = 0
    if len(data) >= 2 and data[0] == OPTIONS:
        flags, data = data[1], data[2:]
    if flags & 1:
        kw["strict"] = True
    if flags & 2:
        kw["encoding"] = "bytes"
    if flags & 4:
        kw["select"] = ckptpeek.SUMMARY_KEYS
    if flags & 8:
        kw["limits"] = TINY
    if not flags & 16:
        kw["persistent_factory"] = test_parity.EXOTIC.persistent_load
    return data, kw


def one_input(data: bytes) -> None:
    pkl, kw = options(data)
    py = test_parity.outcome("python", pkl, **kw)
    nat = test_parity.outcome("native", pkl, **kw)
    if py[0] == "escaped" or nat[0] == "escaped":
        engine = "python" if py[0] == "escaped" else "native"
        factory = kw.pop("persistent_factory", None)
        if factory is not None:
            kw["persistent_load"] = factory()
        test_parity.ENGINES[engine].run_pickle(pkl, **kw)  # re-raise with its traceback
        raise Finding(
            f"{engine} engine: a non-CheckpointError escaped: {first_difference(py, nat)}"
        )
    if py != nat:
        raise Finding(f"engines differ with {kw}: {first_difference(py, nat)}")


if __name__ == "__main__":
    main(one_input)
