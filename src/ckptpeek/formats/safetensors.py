"""safetensors files: an 8-byte header length, a JSON header, then the raw tensor bytes.

Layout (huggingface/safetensors ``tensor.rs``)::

    [8 bytes: N, little-endian u64][N bytes: UTF-8 JSON][data]

The JSON is an object ``{name: {"dtype": "F32", "shape": [..], "data_offsets": [b, e]},
"__metadata__": {str: str}}``; offsets are relative to the start of the data (``8 + N``),
tensors are C-contiguous and little-endian. Only the ``8 + N`` header bytes are read;
each tensor gets its own ``StorageRef`` (key = its name) whose reader memory-maps exactly
``[b, e)`` on demand.

Validation mirrors the Rust reader of safetensors 0.8, check for check, so a file is
accepted here exactly when ``safe_open`` accepts it (the tests check this
differentially): ``N <= 100_000_000``; ``8 + N <= file size``; UTF-8; JSON that serde
would accept (whitespace around it is fine, ``NaN`` and lone surrogates are not, sizes
are integers in ``0..2**64-1``, a tensor entry may be an object or a 3-element array,
extra fields are ignored, a repeated tensor name keeps its last entry, a repeated
``__metadata__`` is an error); then, tensors sorted by ``(begin, end)``, each must start
where the previous one ended (``begin == end_prev``, ``begin <= end``: no gaps, no
overlaps), hold exactly ``prod(shape) * bits / 8`` bytes (sub-byte types must fill whole
bytes; overflow past ``2**64`` is an error), and the last must end at the end of the file.
Errors carry ``st-`` codes named after ``SafeTensorError`` variants. The one deliberate
difference: a dtype this module does not know is ``UnsupportedError(st-unknown-dtype)``
(Rust: a JSON error) - new dtypes are how the format evolves, so such a file is
"valid but newer", not corrupt.

Where things go:

- ``Checkpoint.root`` is ``{name: TensorRef}`` in data-offset order - the dict
  ``safetensors.torch.load_file`` returns (same keys, same order), nothing else in it.
- ``Checkpoint.members["metadata"]`` is the ``__metadata__`` dict (``str -> str``), or
  ``None`` when the header has none - what ``safe_open(...).metadata()`` returns.
  ``members`` is the per-format record of what the file says about itself and where;
  putting the metadata in ``root`` would make ``root`` differ from ``load_file`` (and
  ``tensors()``/summaries would have to skip it), and ``Checkpoint`` has no metadata field.
- ``members["header_bytes"]`` is ``str(8 + N)``: where the data starts.

dtypes: every safetensors 0.8 dtype maps to the torch dtype ``safetensors.torch`` uses
(``F8_E4M3`` -> ``float8_e4m3fn``, ``F8_E8M0`` -> ``float8_e8m0fnu``, ``C64`` ->
``complex64``, ...). ``F4`` (4-bit e2m1) becomes torch's packed ``float4_e2m1fn_x2`` with
the last dimension halved, as ``load_file`` does. Two cases have no torch dtype:
``F6_E2M3`` / ``F6_E3M2`` (6-bit floats) and ``F4`` whose last dimension is odd (or 0-d).
Those become a 1-D ``torch.bits8`` tensor over the raw bytes (so ``byte_range`` and the
byte count are right; ``numpy()`` refuses, as for any raw-bits dtype) with the file's
dtype and shape in ``TensorRef.attrs["safetensors_dtype"]`` / ``["safetensors_shape"]``.

Why not use the ``safetensors`` package here (it is a dependency): its Python API does
not expose ``data_offsets`` (``byte_range`` and lazy reads need them, so the header would
be parsed twice); ``safe_open`` takes only paths (ckptpeek also reads file objects);
its single ``SafetensorError`` would have to be mapped to codes by message text; and
reading through :class:`ByteSource` keeps ``bytes_read`` exact. The package is the
reference the tests compare against instead.
"""

from __future__ import annotations

import json
import struct

from ckptpeek.checkpoint import Checkpoint
from ckptpeek.errors import CheckpointError, error
from ckptpeek.tensor import INT64_MAX, StorageRef, new_dense
from ckptpeek.torch_types import DTYPES, DType

from .options import ReadOptions

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from typing import Any

    from ckptpeek.io.source import ReadableSource

__all__ = ("read", "read_header", "SafetensorsStorageReader", "MAX_HEADER_SIZE", "ST_DTYPES")

#: the largest header safetensors accepts (``MAX_HEADER_SIZE`` in tensor.rs)
MAX_HEADER_SIZE = 100_000_000
_U64_MAX = (1 << 64) - 1

#: safetensors dtype -> (ckptpeek/torch dtype name, or None when torch has none; bits)
ST_DTYPES: dict[str, tuple[str | None, int]] = {
    "BOOL": ("bool", 8),
    "F4": ("float4_e2m1fn_x2", 4),  # packed in pairs along the last dimension
    "F6_E2M3": (None, 6),
    "F6_E3M2": (None, 6),
    "U8": ("uint8", 8),
    "I8": ("int8", 8),
    "F8_E5M2": ("float8_e5m2", 8),
    "F8_E4M3": ("float8_e4m3fn", 8),
    "F8_E8M0": ("float8_e8m0fnu", 8),
    "F8_E4M3FNUZ": ("float8_e4m3fnuz", 8),
    "F8_E5M2FNUZ": ("float8_e5m2fnuz", 8),
    "I16": ("int16", 16),
    "U16": ("uint16", 16),
    "F16": ("float16", 16),
    "BF16": ("bfloat16", 16),
    "I32": ("int32", 32),
    "U32": ("uint32", 32),
    "F32": ("float32", 32),
    "C64": ("complex64", 64),
    "F64": ("float64", 64),
    "I64": ("int64", 64),
    "U64": ("uint64", 64),
}

_RAW = DTYPES["bits8"]


class _Entry:
    __slots__ = ("name", "code", "shape", "begin", "end")

    def __init__(self, name: str, code: str, shape: tuple[int, ...], begin: int, end: int) -> None:
        self.name = name
        self.code = code
        self.shape = shape
        self.begin = begin
        self.end = end


class SafetensorsStorageReader:
    """Reads one file's tensors lazily: the storage with key ``name`` is the file's bytes
    ``[data_start + begin, data_start + end)``. Reopens the file by path when closed."""

    byteorder = "little"

    def __init__(
        self, source: ReadableSource, data_start: int, spans: dict[str, tuple[int, int]]
    ) -> None:
        self.source = source
        self.path = source.path
        self.data_start = data_start
        self._size = source.size
        self._spans = spans

    def _source(self) -> ReadableSource:
        self.source = self.source.reopen()
        return self.source

    def storage_location(self, storage: StorageRef) -> tuple[None, int, int]:
        begin, end = self._spans[storage.key]
        return None, self.data_start + begin, end - begin

    def storage_view(self, storage: StorageRef, start: int, stop: int) -> memoryview:
        _, base, size = self.storage_location(storage)
        if not 0 <= start <= stop <= size:
            raise error(
                "tensor-out-of-storage",
                f"bytes {start}..{stop} are outside tensor {storage.key!r} ({size} bytes)",
                path=self.path,
            )
        return self._source().view(base + start, stop - start, what=f"tensor {storage.key!r}")


def _bad_json(msg: str, path: str | None, offset: int | None = None) -> CheckpointError:
    return error("st-invalid-json", f"safetensors header: {msg}", path=path, offset=offset)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _size(value: Any, what: str, path: str | None) -> int:
    """A serde ``usize``: a JSON integer in 0..2**64-1 (not a bool, not a float)."""
    if type(value) is not int or not 0 <= value <= _U64_MAX:
        raise _bad_json(f"{what} must be an integer in 0..2**64-1, got {value!r:.40}", path)
    return value


def _utf8(text: str, what: str, path: str | None) -> str:
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a \\ud800 escape: serde refuses it
        raise _bad_json(f"{what} holds a lone surrogate escape", path) from None
    return text


def _parse(text: str, path: str | None) -> dict[str, Any]:
    try:
        header = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        offset = 8 + len(text[: exc.pos].encode("utf-8", "surrogatepass"))
        raise _bad_json(f"not valid JSON: {exc.msg}", path, offset) from None
    except (ValueError, RecursionError) as exc:  # NaN/Infinity, 4300+ digit ints, deep nesting
        raise _bad_json(f"not valid JSON: {type(exc).__name__}: {str(exc)[:80]}", path, 8) from None
    if not isinstance(header, dict):
        raise _bad_json(f"the header is a JSON {type(header).__name__}, not an object", path, 8)
    tensors = len(header) - ("__metadata__" in header)
    if text.count('"__metadata__"') > 1 or any(
        text.count(f'"{field}"') != tensors for field in _FIELDS
    ):
        _check_repeats(text, path)  # rare: some key may be written twice
    return header


#: the fields of serde's ``TensorInfo``: each once per tensor, or the Rust reader refuses
_FIELDS = ("dtype", "shape", "data_offsets")


def _dictify(value: Any) -> Any:
    """A value parsed as lists of pairs, as ``json.loads`` would build it (last key wins)."""
    if isinstance(value, _Pairs):
        return {k: _dictify(v) for k, v in value}
    if isinstance(value, list):
        return [_dictify(v) for v in value]
    return value


class _Pairs(list):  # type: ignore[type-arg]
    """A JSON object kept as its (key, value) pairs, repeats included."""


def _check_repeats(text: str, path: str | None) -> None:
    """What serde refuses in a header that writes a key twice, where ``json.loads`` keeps
    the last: ``__metadata__`` twice, a field of one tensor twice, and - for a tensor name
    written twice, of which the Rust reader keeps the last - an earlier value that does not
    deserialize (every occurrence is read)."""
    pairs = json.loads(text, object_pairs_hook=_Pairs)
    if not isinstance(pairs, _Pairs):
        return
    if sum(1 for k, _ in pairs if k == "__metadata__") > 1:
        raise _bad_json("duplicate field __metadata__", path, 8)
    for name, info in pairs:
        if name == "__metadata__":
            continue
        if isinstance(info, _Pairs):
            seen: set[str] = set()
            for field, _ in info:
                if field in _FIELDS and field in seen:
                    raise _bad_json(f"tensor {name!r}: duplicate field {field}", path, 8)
                seen.add(field)
        _entry(name, _dictify(info), path)  # raises for what serde cannot deserialize


def _entry(name: str, info: Any, path: str | None) -> _Entry:
    _utf8(name, "a tensor name", path)
    if type(info) is dict:
        try:
            code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        except KeyError as exc:
            raise _bad_json(f"tensor {name!r} has no {exc.args[0]!r}", path) from None
    elif isinstance(info, list) and len(info) == 3:  # serde also reads a struct from a sequence
        code, shape, offsets = info
    else:
        raise _bad_json(f"tensor {name!r} is a JSON {type(info).__name__}, not an object", path)
    if isinstance(code, dict) and len(code) == 1 and next(iter(code.values())) is None:
        (code,) = code  # serde's map form of a unit enum variant: {"F32": null}
    if not isinstance(code, str):
        raise _bad_json(f"tensor {name!r}: dtype must be a string, got {code!r:.40}", path)
    if code not in ST_DTYPES:
        raise error(
            "st-unknown-dtype",
            f"tensor {name!r} has dtype {code[:40]!r}, which safetensors 0.8 does not define",
            path=path,
        )
    if type(shape) is not list:
        raise _bad_json(f"tensor {name!r}: shape must be a list", path)
    for d in shape:
        if type(d) is not int or not 0 <= d <= _U64_MAX:
            _size(d, f"tensor {name!r}: a shape entry", path)  # raises
    dims = tuple(shape)
    if type(offsets) is not list or len(offsets) != 2:
        raise _bad_json(f"tensor {name!r}: data_offsets must be a list of 2 integers", path)
    begin, end = offsets
    if (
        type(begin) is not int
        or type(end) is not int
        or not 0 <= begin <= _U64_MAX
        or not 0 <= end <= _U64_MAX
    ):
        _size(begin, f"tensor {name!r}: data_offsets[0]", path)
        _size(end, f"tensor {name!r}: data_offsets[1]", path)
    return _Entry(name, code, dims, begin, end)


def read_header(source: ReadableSource) -> tuple[int, dict[str, str] | None, list[_Entry]]:
    """Read and validate the header: ``(N, metadata or None, tensors in offset order)``.

    Raises ``FormatError``/``LimitError``/``UnsupportedError`` with ``st-`` codes; reads
    ``8 + N`` bytes and allocates nothing a length merely claims.
    """
    path, size = source.path, source.size
    if size < 8:
        raise error(
            "st-header-too-small",
            f"a safetensors file needs 8 bytes of header length, this one has {size}",
            path=path,
            offset=0,
        )
    (n,) = struct.unpack("<Q", source.read_at(0, 8, what="safetensors header length"))
    if n > MAX_HEADER_SIZE:
        raise error(
            "st-header-too-large",
            f"safetensors header claims {n} bytes; at most {MAX_HEADER_SIZE} are accepted",
            path=path,
            offset=0,
        )
    if 8 + n > size:
        raise error(
            "st-invalid-header-length",
            f"safetensors header claims {n} bytes but the file has only "
            f"{size - 8} after the length",
            path=path,
            offset=0,
        )
    raw = source.read_at(8, n, what="safetensors header")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(
            "st-invalid-header",
            f"safetensors header is not UTF-8: {exc.reason}",
            path=path,
            offset=8 + exc.start,
        ) from None
    header = _parse(text, path)

    metadata = header.pop("__metadata__", None)
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise _bad_json(
                f"__metadata__ must be an object, got a {type(metadata).__name__}", path
            )
        for k, v in metadata.items():
            if not isinstance(v, str):
                raise _bad_json(f"__metadata__[{k!r}] must be a string, got {v!r:.40}", path)
            _utf8(k, "a __metadata__ key", path)
            _utf8(v, "a __metadata__ value", path)
    entries = [_entry(name, info, path) for name, info in header.items()]

    # SafeTensors::read_metadata + Metadata::validate, in their order
    entries.sort(key=lambda e: (e.begin, e.end))
    start = 0
    for e in entries:
        if e.begin != start or e.end < e.begin:
            raise error(
                "st-invalid-offset",
                f"tensor {e.name!r} has data_offsets [{e.begin}, {e.end}]; the previous tensor "
                f"ends at {start} (tensors must tile the data with no gap or overlap)",
                path=path,
                offset=8 + n + min(e.begin, size),
            )
        start = e.end
        numel = 1
        for d in e.shape:
            numel *= d
            if numel > _U64_MAX:
                break
        bits = numel * ST_DTYPES[e.code][1]
        if bits > _U64_MAX:
            raise error(
                "st-validation-overflow",
                f"tensor {e.name!r}: shape {list(e.shape)} of {e.code} overflows "
                f"a 64-bit byte count",
                path=path,
            )
        if bits % 8:
            raise error(
                "st-misaligned-slice",
                f"tensor {e.name!r}: {numel} {e.code} values do not fill whole bytes",
                path=path,
            )
        if e.end - e.begin != bits // 8:
            raise error(
                "st-tensor-invalid-info",
                f"tensor {e.name!r}: {e.code}{list(e.shape)} needs {bits // 8} "
                f"bytes but data_offsets span {e.end - e.begin}",
                path=path,
            )
    if 8 + n + start != size:
        raise error(
            "st-incomplete-buffer",
            f"the tensors end at byte {8 + n + start} but the file has {size} "
            f"(the data must be covered exactly)",
            path=path,
            offset=min(8 + n + start, size),
        )
    return n, metadata, entries


def _contiguous(name: str, shape: tuple[int, ...], path: str | None) -> tuple[int, ...]:
    """The strides ``safetensors.torch`` gives: contiguous, empty dimensions counting as 1.

    The format lets an empty tensor have any sizes (``[0, 2**62, 2**62]``). torch holds
    them in int64 and computes the strides of such a view in int64 arithmetic that wraps
    (``computeStride``): ``[0, 2**40, 2**40]`` loads with strides ``(0, 2**40, 1)``,
    and a stride that wraps negative is refused (``Stride calculation overflowed``), as
    is a size past int64. Wrapping also keeps the work one small multiplication per
    dimension (exact products of thousands of huge sizes cost quadratic time).
    """
    strides = []
    acc = 1
    for d in reversed(shape):
        if d > INT64_MAX or acc > INT64_MAX:
            raise error(
                "st-shape-overflow",
                f"tensor {name!r}: an empty tensor of {len(shape)} dims whose "
                + ("sizes pass int64" if d > INT64_MAX else "strides overflow int64")
                + " (torch: Stride calculation overflowed); safetensors.torch cannot load it",
                path=path,
            )
        strides.append(acc)
        acc = acc * max(d, 1) & _U64_MAX  # as int64 wraps; past INT64_MAX: negative
    return tuple(reversed(strides))


def _layout(e: _Entry) -> tuple[DType, tuple[int, ...], dict[str, Any] | None]:
    """The torch dtype and shape of an entry (or raw bytes, with the file's view in attrs)."""
    name, _bits = ST_DTYPES[e.code]
    if e.code == "F4" and e.shape and e.shape[-1] % 2 == 0:
        return DTYPES[name], e.shape[:-1] + (e.shape[-1] // 2,), None  # type: ignore[index]
    if name is None or e.code == "F4":
        return _RAW, (e.end - e.begin,), {"safetensors_dtype": e.code, "safetensors_shape": e.shape}
    return DTYPES[name], e.shape, None


def read(source: ReadableSource, opts: ReadOptions) -> Checkpoint:
    """Read a safetensors header into a :class:`Checkpoint` (``root`` = name -> TensorRef)."""
    n, metadata, entries = read_header(source)
    select = opts.select
    spans: dict[str, tuple[int, int]] = {}
    reader = SafetensorsStorageReader(source, 8 + n, spans)
    root: dict[str, Any] = {}
    strides: dict[tuple[int, ...], tuple[int, ...]] = {}
    for e in entries:
        if select is not None and e.name not in select:
            continue
        dtype, shape, attrs = _layout(e)
        spans[e.name] = (e.begin, e.end)
        storage = StorageRef(e.name, dtype, (e.end - e.begin) // dtype.itemsize, "cpu", reader)
        stride = strides.get(shape)
        if stride is None:  # models repeat a few shapes many times
            stride = strides[shape] = _contiguous(e.name, shape, source.path)
        t = new_dense(storage, dtype, shape, stride, 0, False, None)
        if attrs is not None:
            t.attrs = attrs
        root[e.name] = t
    dropped = select is not None and len(root) != len(entries)
    return Checkpoint(
        format="safetensors",
        backend=opts.engine.ENGINE,
        root=root,
        source=source,
        globals_={},
        limits=opts.limits,
        members={
            "metadata": metadata,
            "header_bytes": str(8 + n),
        },
        selected=select if dropped else None,
    )
