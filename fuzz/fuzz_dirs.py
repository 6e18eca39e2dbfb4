"""Checkpoint directories: a Hugging Face sharded index, a torch.distributed.checkpoint.

The first byte picks the layout (``byte % 2``); the rest is written into a scratch
directory (on ``/dev/shm`` when there is one) and opened by path with both engines:

  0 sharded: the rest is ``model.safetensors.index.json``; two small valid shards
    (``model-00001-of-00002.safetensors`` holding ``w``, ``...00002...`` holding ``b``)
    are always there, so the index decides what is read
  1 DCP: a 4-byte little-endian length ``n``, then ``n`` bytes of ``.metadata`` (a
    pickle) and the rest as the data file ``__0_0.distcp``

As in fuzz_open.py, root, globals, tensors, each ``numpy()`` and ``summary()`` must give
the same stages in both engines, and only CheckpointError (or OSError: a path is
involved) may escape.
"""

from __future__ import annotations

import pathlib
import struct
from typing import Any

from _common import instrument, main, native_engine_required, same, scratch_dir

instrument()
native_engine_required()

from fuzz_open import stages  # noqa: E402
from make_corpus import safetensors_file  # noqa: E402

ROOT = scratch_dir("dirs")
SHARDED = ROOT / "sharded"
DCP = ROOT / "dcp"
INDEX = SHARDED / "model.safetensors.index.json"
SHARDS = {
    "model-00001-of-00002.safetensors": safetensors_file(
        {"w": ("F32", [2], struct.pack("<2f", 1, 2))}
    ),
    "model-00002-of-00002.safetensors": safetensors_file({"b": ("I64", [1], struct.pack("<q", 7))}),
}
SHARDED.mkdir()
DCP.mkdir()
for name, data in SHARDS.items():
    (SHARDED / name).write_bytes(data)


def layout(data: bytes) -> pathlib.Path | None:
    """Write the input's files; the directory to open (None: too short to say)."""
    if not data:
        return None
    kind, body = data[0] % 2, data[1:]
    if kind == 0:
        INDEX.write_bytes(body)
        return SHARDED
    if len(body) < 4:
        return None
    (n,) = struct.unpack_from("<I", body)
    (DCP / ".metadata").write_bytes(body[4 : 4 + n])
    (DCP / "__0_0.distcp").write_bytes(body[4 + n :])
    return DCP


def one_input(data: bytes) -> None:
    path = layout(data)
    if path is None:
        return
    py: list[Any] = stages("python", data, None, source=str(path))
    same("engines (directory)", py, stages("native", data, None, source=str(path)))


if __name__ == "__main__":
    main(one_input)
