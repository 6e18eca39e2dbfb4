"""The safetensors reader, against the format's own (Rust) reader.

The input is a whole file. ``read_header`` must agree with ``safetensors.deserialize``
(the Rust reader the format is defined by): when it accepts the bytes, ckptpeek must not
call them corrupt (a ``FormatError``; an ``UnsupportedError`` for a dtype ckptpeek does
not know, or a ``LimitError``, is allowed) and must see the same tensors - names,
dtypes, shapes and bytes; when it refuses them, ckptpeek must not accept them. Then
``ckptpeek.open`` reads the file as a user would (sniffing first: a safetensors file that
is also a tar or a pickle is read as torch would read it), with every tensor's
``numpy()`` and ``summary()``: only CheckpointError may escape.
"""

from __future__ import annotations

import io
import re
from typing import Any

from _common import Finding, capture, instrument, main, reraise

instrument()

import safetensors  # noqa: E402

import ckptpeek  # noqa: E402
from ckptpeek.formats import safetensors as st  # noqa: E402
from ckptpeek.io.source import ByteSource  # noqa: E402

MAX_TENSORS = 64


def reference(data: bytes) -> dict[str, tuple[str, tuple[int, ...], bytes]] | str:
    """What the Rust reader sees, or why it refuses the bytes."""
    try:
        tensors = safetensors.deserialize(data)
    except Exception as exc:  # noqa: BLE001 - SafetensorError and friends: a refusal
        return str(exc)
    except BaseException as exc:  # a Rust panic (pyo3 PanicException) is a refusal too
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return str(exc)
    return {name: (t["dtype"], tuple(t["shape"]), bytes(t["data"])) for name, t in tensors}


def ours(data: bytes) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    n, _metadata, entries = st.read_header(ByteSource(io.BytesIO(data)))
    base = 8 + n
    return {e.name: (e.code, e.shape, data[base + e.begin : base + e.end]) for e in entries}


def consume(data: bytes) -> Any:
    with ckptpeek.open(io.BytesIO(data)) as ckpt:
        for _key, ref in list(ckpt.tensors())[:MAX_TENSORS]:
            got = capture(ref.numpy)
            reraise([got])
        return ckpt.summary().model_dump(mode="json")


#: what the Rust reader refuses and ckptpeek reads, already reported, so that the fuzzer
#: looks for new ones (repeated fields and names are read as serde reads them since the
#: fix of findings safetensors-1 and -2, tests/test_safetensors.py)
_REPORTED = re.compile(r"missing field")


def one_input(data: bytes) -> None:
    got = capture(lambda: ours(data))
    reraise([got])
    ref = reference(data)
    outcome = got[0]
    if not isinstance(ref, str):
        if outcome[0] == "err" and outcome[1] == "FormatError":
            raise Finding(f"the Rust reader accepts a file ckptpeek calls corrupt: {outcome}")
        if outcome[0] == "ok" and outcome[1] != ref:
            raise Finding(f"ckptpeek sees {outcome[1]!r:.300}, the Rust reader {ref!r:.300}")
    elif outcome[0] == "ok" and not _REPORTED.search(ref):
        raise Finding(
            f"ckptpeek accepts a header the Rust reader refuses ({ref}): {outcome[1]!r:.300}"
        )
    reraise([capture(lambda: consume(data))])


if __name__ == "__main__":
    main(one_input)
