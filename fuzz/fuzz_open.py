"""``ckptpeek.open`` end to end, on a file object: sniffing, every single-file format
(torch zip, legacy, tar, TorchScript, safetensors), then what a catalog does with it.

For each engine: open the bytes, take the root (compared as ``test_parity.canonical``),
the globals, every tensor (up to 64; its metadata and ``numpy()`` bytes) and
``summary()``. Each stage gives a value or a CheckpointError; anything else escaping is
a finding, and the two engines must give the same stages. A file that opens is opened
again with ``select=SUMMARY_KEYS`` (the selective path), compared the same way.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable
from typing import Any

from _common import Finding, capture, instrument, main, native_engine_required, reraise, same

instrument()
native_engine_required()

from test_parity import canonical  # noqa: E402

import ckptpeek  # noqa: E402

MAX_TENSORS = 64
MAX_TENSOR_BYTES = 1 << 16  # compared per tensor (numpy() itself reads all)


def _tensor(ref: Any) -> tuple[Any, ...]:
    array = ref.numpy()
    # the first values only: an expanded view's array is small, its bytes need not be
    first = array.reshape(-1)[:0] if array.size == 0 else array.flat[: MAX_TENSOR_BYTES // 8]
    return (array.dtype.str, array.shape, first.tobytes())


def stages(engine: str, data: bytes, select: Any, source: Any = None) -> list[tuple[Any, ...]]:
    """The outcome of every stage, up to the first error (escapes are re-raised).

    ``source`` is what to open (default: ``data`` as a file object); a path may also
    raise OSError."""
    out: list[tuple[Any, ...]] = []
    allow = (OSError,) if isinstance(source, str) else ()

    def stage(fn: Callable[[], Any]) -> bool:
        got = capture(fn, allow)
        reraise([got])
        out.append(got[0])
        return got[0][0] == "ok"

    holder: list[Any] = []
    opened = io.BytesIO(data) if source is None else source
    if not stage(lambda: holder.append(ckptpeek.open(opened, engine=engine, select=select))):
        return out
    with holder[0] as ckpt:
        out[-1] = ("ok", ckpt.format, ckpt.members, ckpt.selected)
        if not stage(lambda: canonical(ckpt.root)):
            return out
        stage(lambda: [(g.module, g.name, g.safe) for g in ckpt.globals()])
        refs: list[Any] = []
        if stage(lambda: refs.extend(itertools.islice(ckpt.tensors(), MAX_TENSORS))):
            out[-1] = ("ok", [(key, canonical(ref)) for key, ref in refs])
            for _key, ref in refs:
                stage(lambda ref=ref: _tensor(ref))

        def summary() -> Any:
            dumped = ckpt.summary().model_dump(mode="json")
            if dumped.pop("backend") != engine:
                raise Finding(f"summary().backend is not {engine!r}")
            return dumped

        stage(summary)
    return out


def one_input(data: bytes) -> None:
    py = stages("python", data, None)
    same("engines (open)", py, stages("native", data, None))
    if py[0][0] == "ok":
        selected = stages("python", data, ckptpeek.SUMMARY_KEYS)
        same("engines (open, select)", selected, stages("native", data, ckptpeek.SUMMARY_KEYS))


if __name__ == "__main__":
    main(one_input)
