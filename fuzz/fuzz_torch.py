"""The first promise, against torch itself: every file torch reads, ckptpeek reads the same.

The input is a whole file, given to both as a file object. When
``torch.load(weights_only=True, map_location="cpu")`` reads it, ``ckptpeek.open`` (both
engines) must read it too - an ``UnsupportedError`` (a feature not
read yet) or a ``LimitError`` is allowed, a ``FormatError`` (calling a valid file
corrupt) or ``UnsafePickleError`` is a finding - and give the same object graph as
``tests/compare.py`` compares it (types, key order, float bits, every tensor's dtype,
shape, strides, offset, storage sharing and bytes). When torch refuses the file there is
nothing to compare; only CheckpointError may escape ckptpeek either way. Needs torch.
"""

from __future__ import annotations

import io
import re
import warnings
import zipfile
from typing import Any

from _common import Finding, capture, instrument, main, native_engine_required, reraise

instrument()
native_engine_required()

import torch  # noqa: E402
from compare import _StorageTracker, compare_objects  # noqa: E402

import ckptpeek  # noqa: E402

ALLOWED = ("UnsupportedError", "LimitError")
#: refusals by design of files torch reads: what another reader could see differently
#: (README, "Security model": one view of a ZIP archive, of a pickle stream, of a tar)
ONE_VIEW = frozenset(
    {
        "zip-local-mismatch",
        "zip-overlap",
        "zip-duplicate-name",
        "zip-nul-name",
        "zip-unsafe-name",
        "zip-multiple-eocd",
        "zip-bad-data-descriptor",
        "bad-frame",
        "legacy-frame-overrun",
        "tar-extended-header",
        "tar-duplicate-member",
        "tar-member-type",
        "tar-pickle-polyglot",
        # a legacy pickle naming a storage its key list lacks: torch makes it from
        # uninitialised memory and never fills it (fuzz finding torch-1)
        "missing-storage",
        # a member marked a directory: torch returns uninitialised memory (torch-2.bin)
        "zip-directory-member",
        # a STORED member whose two sizes differ: readers take either (torch-5.bin)
        "zip-stored-size-mismatch",
    }
)


#: messages by code (regular expressions): one-view refusals that share a code with
#: corruption (bytes between the directory and its end records: read_directory)
REPORTED = {
    "zip-bad-central-dir": re.compile(r"central directory \(offset|the ZIP64 end record at byte"),
}


def refusal_allowed(outcome: tuple[Any, ...]) -> bool:
    if outcome[1] in ALLOWED or outcome[2] in ONE_VIEW:
        return True
    known = REPORTED.get(outcome[2])
    return known is not None and known.match(str(outcome[5])) is not None


def comparable(obj: Any) -> bool:
    """Whether ``tests/compare.py`` can compare ``obj``: it holds dense tensors only
    (sparse, quantized and nested ones are checked by the reader tests instead)."""
    stack, seen = [obj], set()
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, torch.Tensor):
            if o.layout != torch.strided or o.is_quantized or o.is_nested:
                return False
        elif isinstance(o, dict):
            stack += o.values()
        elif isinstance(o, (list, tuple)):
            stack += o
    return True


def torch_misreads(data: bytes) -> bool:
    """Files torch reads wrongly, so its answer is no oracle: a member whose external
    attributes carry the MS-DOS directory bit, which miniz takes for a directory - torch
    then returns the tensor's uninitialised memory (fuzz finding torch-2)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return any(info.external_attr & 0x10 for info in z.infolist())
    except Exception:  # noqa: BLE001 - not a ZIP archive zipfile reads
        return False


def one_input(data: bytes) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        torch_reads = True
        dense = comparable(expected) and not torch_misreads(data)
    except Exception:  # noqa: BLE001 - torch refusing the file: nothing to compare
        expected, torch_reads, dense = None, False, False
    for engine in ("python", "native"):
        got = capture(lambda engine=engine: ckptpeek.open(io.BytesIO(data), engine=engine))
        reraise([got])
        outcome = got[0]
        if outcome[0] != "ok":
            if torch_reads and not refusal_allowed(outcome):
                raise Finding(f"torch reads a file ckptpeek ({engine}) refuses: {outcome}")
            continue
        with outcome[1] as ckpt:  # open: compare_objects reads every tensor's bytes
            refused = None
            for _key, ref in ckpt.tensors():
                read = capture(ref.numpy)
                reraise([read])
                if read[0][0] != "ok":
                    refused = read[0]
            if not torch_reads:
                continue
            if refused is not None:
                if not refusal_allowed(refused):
                    raise Finding(f"torch reads a tensor ckptpeek ({engine}) refuses: {refused}")
                continue
            if not dense:  # compare.py cannot compare it, or torch's answer is wrong
                continue
            problems: list[str] = []
            compare_objects(expected, ckpt.root, (), problems, _StorageTracker())
            if problems:
                raise Finding(f"ckptpeek ({engine}) disagrees with torch.load: {problems[:10]}")


if __name__ == "__main__":
    main(one_input)
