"""Hugging Face sharded checkpoints: an index JSON plus safetensors or torch.save shards.

Shards are written here the way ``transformers`` writes them: a state dict split into
2-3 files (``safetensors.*.save_file`` or ``torch.save``) and an index
``{"metadata": {"total_size": ...}, "weight_map": {name: shard}}``. ckptpeek must give
one checkpoint with the same names (in weight_map order), dtypes, shapes, strides and
values as loading every shard with the reference library.
"""

from __future__ import annotations

import json
import os
import pathlib
import struct

import numpy as np
import pytest

import ckptpeek
from ckptpeek import formats
from ckptpeek.errors import CheckpointError, FormatError, LimitError
from ckptpeek.formats import ReadOptions, sharded
from ckptpeek.limits import DEFAULT_LIMITS
from ckptpeek.unpickle import engine as _backend


def _numpy_state() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "model.embed.weight": rng.standard_normal((10, 4)).astype(np.float32),
        "model.layers.0.q.weight": rng.standard_normal((4, 4)).astype(np.float16),
        "model.layers.0.q.bias": np.arange(4, dtype=np.int64),
        "model.layers.1.q.weight": rng.standard_normal((4, 4)).astype(np.float64),
        "model.norm.flag": np.array([True, False]),
        "lm_head.weight": rng.standard_normal((10, 4)).astype(np.float32),
    }


def _chunks(names: list[str], n: int) -> list[list[str]]:
    size = -(-len(names) // n)
    return [names[i : i + size] for i in range(0, len(names), size)]


def _write_index(
    d: pathlib.Path, name: str, weight_map: dict[str, str], total: int = 0
) -> pathlib.Path:
    p = d / name
    p.write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
    )
    return p


def _write_numpy_shards(d: pathlib.Path, sd: dict, n: int = 3) -> pathlib.Path:
    from safetensors.numpy import save_file

    weight_map = {}
    for i, names in enumerate(_chunks(list(sd), n)):
        fn = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        save_file({k: sd[k] for k in names}, str(d / fn), metadata={"format": "np"})
        weight_map.update(dict.fromkeys(names, fn))
    # transformers sorts the weight_map by name
    return _write_index(d, "model.safetensors.index.json", dict(sorted(weight_map.items())))


def _opts(engine: str | None = None, select=None) -> ReadOptions:
    return ReadOptions(
        False,
        _backend.engine(engine),
        DEFAULT_LIMITS,
        None if select is None else frozenset(select),
    )


def _header_size(path: pathlib.Path) -> int:
    with open(path, "rb") as f:
        return 8 + struct.unpack("<Q", f.read(8))[0]


# -- safetensors shards (no torch) ---------------------------------------------------------


def test_safetensors_shards(tmp_path: pathlib.Path) -> None:
    sd = _numpy_state()
    index = _write_numpy_shards(tmp_path, sd)
    weight_map = json.loads(index.read_text())["weight_map"]
    shards = sorted(set(weight_map.values()))
    for source in (index, tmp_path, str(index)):
        with ckptpeek.open(source) as ckpt:
            assert ckpt.format == "sharded" and ckpt.path == str(index)
            assert list(ckpt.keys()) == list(weight_map)  # weight_map order
            assert ckpt.members["index"] == "model.safetensors.index.json"
            assert ckpt.members["metadata"] == {"total_size": 0}
            assert ckpt.members["weight_map"] == weight_map
            assert ckpt.members["shards"] == dict.fromkeys(shards, "safetensors")
            assert (
                ckpt.file_size
                == sum(os.path.getsize(tmp_path / s) for s in shards) + index.stat().st_size
            )
            # header only: the index, and per shard its header (the sniffed first 512
            # bytes are kept and not read twice)
            assert ckpt.bytes_read == index.stat().st_size + sum(
                max(min(512, os.path.getsize(tmp_path / s)), _header_size(tmp_path / s))
                for s in shards
            )
            for name, arr in sd.items():
                t = ckpt[name]
                assert t.dtype.name == arr.dtype.name and tuple(t.shape) == arr.shape
                np.testing.assert_array_equal(t.numpy(), arr)
                assert t.storage.reader.path == str(tmp_path / weight_map[name])
            assert ckpt.globals() == []


def test_select_opens_only_needed_shards(tmp_path: pathlib.Path) -> None:
    sd = _numpy_state()
    index = _write_numpy_shards(tmp_path, sd)
    weight_map = json.loads(index.read_text())["weight_map"]
    with ckptpeek.open(index, select=["lm_head.weight", "missing"]) as ckpt:
        assert list(ckpt.keys()) == ["lm_head.weight"]
        assert list(ckpt.members["shards"]) == [weight_map["lm_head.weight"]]
        assert ckpt.selected == frozenset({"lm_head.weight", "missing"})
        np.testing.assert_array_equal(ckpt["lm_head.weight"].numpy(), sd["lm_head.weight"])
    with ckptpeek.open(index, select=list(sd)) as ckpt:
        assert ckpt.selected is None


def test_close_closes_every_shard(tmp_path: pathlib.Path) -> None:
    sd = _numpy_state()
    index = _write_numpy_shards(tmp_path, sd)
    ckpt = ckptpeek.open(index)
    refs = dict(ckpt.root)
    shards = list(ckpt._source.shards.values())
    ckpt.close()
    assert ckpt._source.closed and all(s._source.closed for s in shards)
    for name, t in refs.items():  # tensors reopen their shard on demand
        np.testing.assert_array_equal(t.numpy(), sd[name])


def test_shards_in_subdirectory_and_symlinks(tmp_path: pathlib.Path) -> None:
    # the Hugging Face cache: snapshots/<rev>/x.safetensors -> ../../blobs/<hash>
    from safetensors.numpy import save_file

    sd = _numpy_state()
    blobs = tmp_path / "blobs"
    snap = tmp_path / "snapshots" / "rev"
    (snap / "sub").mkdir(parents=True)
    blobs.mkdir()
    save_file({k: sd[k] for k in list(sd)[:3]}, str(blobs / "h1"))
    save_file({k: sd[k] for k in list(sd)[3:]}, str(snap / "sub" / "b.safetensors"))
    os.symlink("../../blobs/h1", snap / "a.safetensors")
    wm = {
        **dict.fromkeys(list(sd)[:3], "a.safetensors"),
        **dict.fromkeys(list(sd)[3:], "sub/b.safetensors"),
    }
    _write_index(snap, "model.safetensors.index.json", wm)
    with ckptpeek.open(snap) as ckpt:
        assert list(ckpt.keys()) == list(sd)
        for name, arr in sd.items():
            np.testing.assert_array_equal(ckpt[name].numpy(), arr)


# -- against torch: safetensors and .bin flavours -------------------------------------------


def _torch_state():
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 8, generator=g)
    return torch, {
        "embed.weight": torch.randn(16, 8, generator=g),
        "layers.0.weight": base.bfloat16(),
        "layers.0.bias": torch.randn(6, generator=g).half(),
        "layers.1.weight": torch.randn(8, 6, generator=g).to(torch.float8_e4m3fn),
        "layers.1.ids": torch.arange(5),
        "layers.1.mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5, dtype=torch.float64),
        "empty": torch.zeros(0, 4),
        "complex": torch.complex(base[0], base[1]),
        "head.weight": torch.randn(8, 16, generator=g),
    }


def _write_torch_shards(d: pathlib.Path, sd: dict, flavour: str, n: int) -> pathlib.Path:
    import torch
    from safetensors.torch import save_file

    weight_map = {}
    ext = "safetensors" if flavour == "safetensors" else "bin"
    for i, names in enumerate(_chunks(list(sd), n)):
        fn = f"{'model' if ext == 'safetensors' else 'pytorch_model'}-{i + 1:05d}-of-{n:05d}.{ext}"
        part = {k: sd[k] for k in names}
        if flavour == "safetensors":
            save_file(part, str(d / fn), metadata={"format": "pt"})
        else:
            torch.save(part, d / fn)
        weight_map.update(dict.fromkeys(names, fn))
    total = sum(t.numel() * t.element_size() for t in sd.values())
    name = (
        "model.safetensors.index.json" if ext == "safetensors" else "pytorch_model.bin.index.json"
    )
    return _write_index(d, name, weight_map, total)


def _reference(torch, d: pathlib.Path, index: pathlib.Path) -> dict:
    from safetensors.torch import load_file

    wm = json.loads(index.read_text())["weight_map"]
    loaded = {}
    for shard in dict.fromkeys(wm.values()):
        p = d / shard
        loaded[shard] = (
            load_file(str(p))
            if shard.endswith(".safetensors")
            else torch.load(p, map_location="cpu", weights_only=True)
        )
    return {k: loaded[s][k] for k, s in wm.items()}


def _same(torch, t: ckptpeek.TensorRef, r) -> None:
    assert t.dtype == r.dtype
    assert tuple(t.shape) == tuple(r.shape)
    assert t.stride() == r.stride()
    assert t.storage_offset() == r.storage_offset()
    got = t.to_torch()
    assert got.dtype == r.dtype and got.shape == r.shape
    as_bytes = lambda x: x.contiguous().reshape(-1).view(torch.uint8)  # noqa: E731
    assert torch.equal(as_bytes(got), as_bytes(r))


@pytest.mark.torch
@pytest.mark.parametrize(
    "flavour,n", [("safetensors", 2), ("safetensors", 3), ("bin", 2), ("bin", 3)]
)
def test_against_torch(tmp_path: pathlib.Path, engine: str, flavour: str, n: int) -> None:
    torch, sd = _torch_state()
    index = _write_torch_shards(tmp_path, sd, flavour, n)
    ref = _reference(torch, tmp_path, index)
    with ckptpeek.open(tmp_path, engine=engine) as ckpt:
        assert ckpt.format == "sharded" and ckpt.backend == engine
        assert list(ckpt.keys()) == list(ref)
        assert len(ckpt.members["shards"]) == n
        formats = set(ckpt.members["shards"].values())
        assert formats == {"safetensors" if flavour == "safetensors" else "torch-zip"}
        for name, r in ref.items():
            _same(torch, ckpt[name], r)
        if flavour == "bin":
            assert {str(g) for g in ckpt.globals()} >= {"torch._utils._rebuild_tensor_v2"}
            assert all(g.safe for g in ckpt.globals())
        assert ckptpeek.load_checkpoint(tmp_path, engine=engine, fallback=None).keys() == ref.keys()


@pytest.mark.torch
def test_bin_shards_with_views_and_select(tmp_path: pathlib.Path, engine: str) -> None:
    torch = pytest.importorskip("torch")
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    sd = {
        "a.base": base,
        "a.t": base.t(),
        "b.slice": base[1:3, 2:5],
        "b.step": base[:, ::2],
        "c.w": torch.ones(3, dtype=torch.int16),
    }
    torch.save({k: sd[k] for k in ("a.base", "a.t")}, tmp_path / "p1.bin")
    torch.save({k: sd[k] for k in ("b.slice", "b.step", "c.w")}, tmp_path / "p2.bin")
    wm = {
        "a.base": "p1.bin",
        "a.t": "p1.bin",
        "b.slice": "p2.bin",
        "b.step": "p2.bin",
        "c.w": "p2.bin",
    }
    index = _write_index(tmp_path, "pytorch_model.bin.index.json", wm)
    ref = _reference(torch, tmp_path, index)
    with ckptpeek.open(index, engine=engine) as ckpt:
        for name, r in ref.items():
            _same(torch, ckpt[name], r)
    with ckptpeek.open(index, engine=engine, select=["b.step"]) as ckpt:
        assert list(ckpt.keys()) == ["b.step"] and list(ckpt.members["shards"]) == ["p2.bin"]
        _same(torch, ckpt["b.step"], ref["b.step"])


@pytest.mark.torch
def test_mixed_shard_formats(tmp_path: pathlib.Path, engine: str) -> None:
    torch, sd = _torch_state()
    from safetensors.torch import save_file

    names = list(sd)
    save_file({k: sd[k] for k in names[:4]}, str(tmp_path / "a.safetensors"))
    torch.save({k: sd[k] for k in names[4:]}, tmp_path / "b.bin")
    wm = {**dict.fromkeys(names[:4], "a.safetensors"), **dict.fromkeys(names[4:], "b.bin")}
    _write_index(tmp_path, "model.index.json", wm)
    with ckptpeek.open(tmp_path, engine=engine) as ckpt:
        assert ckpt.members["shards"] == {"a.safetensors": "safetensors", "b.bin": "torch-zip"}
        for name, r in sd.items():
            _same(torch, ckpt[name], r)


# -- broken and hostile indexes --------------------------------------------------------------


def _err(path: pathlib.Path | str, engine: str | None = None) -> CheckpointError:
    with pytest.raises(CheckpointError) as exc:
        sharded.read_path(str(path), _opts(engine), formats.read)
    return exc.value


@pytest.mark.parametrize(
    "name",
    [
        "../x.safetensors",
        "/etc/passwd",
        "a/../../b.safetensors",
        "./a.safetensors",
        "a//b",
        "",
        "C:\\x.safetensors",
        "C:x.safetensors",
        "..\\x.safetensors",
        "a\0b",
        "//server/share/x",
    ],
)
def test_shard_names_must_stay_inside(tmp_path: pathlib.Path, name: str) -> None:
    _write_numpy_shards(tmp_path, _numpy_state())
    index = _write_index(tmp_path, "bad.index.json", {"x": name})
    exc = _err(index)
    assert exc.code == "sharded-bad-shard-name" and isinstance(exc, FormatError)
    assert exc.path == str(index)


def test_missing_shard_and_missing_tensor(tmp_path: pathlib.Path) -> None:
    index = _write_numpy_shards(tmp_path, _numpy_state())
    wm = json.loads(index.read_text())["weight_map"]
    bad = _write_index(tmp_path, "b.index.json", {**wm, "extra": "nope.safetensors"})
    exc = _err(bad)
    assert exc.code == "sharded-missing-shard" and "nope.safetensors" in str(exc)
    bad = _write_index(tmp_path, "c.index.json", {**wm, "extra": next(iter(wm.values()))})
    exc = _err(bad)
    assert exc.code == "sharded-missing-tensor" and "'extra'" in str(exc)
    (tmp_path / "dir.safetensors").mkdir()
    bad = _write_index(tmp_path, "d.index.json", {"x": "dir.safetensors"})
    assert _err(bad).code == "sharded-missing-shard"


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
@pytest.mark.parametrize("copies", [2, 5])
def test_one_file_named_as_many_shards_is_refused(
    tmp_path: pathlib.Path, link: str, copies: int
) -> None:
    """A small index naming one big shard under many names (links to it) would have it
    read once per name: refused before the second one is read, however it is linked."""
    from safetensors.numpy import save_file

    sd = _numpy_state()
    save_file(sd, str(tmp_path / "real.safetensors"))
    names = [f"s{i}.safetensors" for i in range(copies)]
    for n in names:
        make = os.symlink if link == "symlink" else os.link
        make(tmp_path / "real.safetensors", tmp_path / n)
    keys = list(sd)
    wm = {k: names[i % copies] for i, k in enumerate(keys)}
    index = _write_index(tmp_path, "model.safetensors.index.json", wm)
    opened: list[str] = []
    real_open = sharded._safetensors.read

    def counting(src, opts):  # type: ignore[no-untyped-def]
        opened.append(src.path)
        return real_open(src, opts)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sharded._safetensors, "read", counting)
        exc = _err(index)
    assert exc.code == "sharded-duplicate-shard", exc
    assert "'s0.safetensors' and 's1.safetensors'" in str(exc)
    assert len(opened) == 1  # the first name only: the second is refused before its read


def test_distinct_shards_are_not_duplicates(tmp_path: pathlib.Path) -> None:
    index = _write_numpy_shards(tmp_path, _numpy_state())
    with ckptpeek.open(index) as ckpt:
        assert len(ckpt.members["shards"]) > 1


@pytest.mark.parametrize(
    "text",
    [
        "{",
        "[]",
        '{"weight_map": []}',
        '{"weight_map": {"a": 1}}',
        '{"metadata": 3, "weight_map": {}}',
        '{"no": 1}',
        "\xff",
        "[" * 100_000 + "]" * 100_000,
    ],
)
def test_bad_index(tmp_path: pathlib.Path, text: str) -> None:
    p = tmp_path / "x.index.json"
    p.write_bytes(text.encode("latin-1") if text == "\xff" else text.encode())
    exc = _err(p)
    assert exc.code == "sharded-bad-index" and exc.path == str(p)


def test_index_too_large(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index = _write_numpy_shards(tmp_path, _numpy_state())
    monkeypatch.setattr(sharded, "MAX_INDEX_BYTES", 100)
    exc = _err(index)
    assert exc.code == "sharded-index-too-large" and isinstance(exc, LimitError)


def test_shard_that_is_an_index_is_refused(tmp_path: pathlib.Path) -> None:
    # a self-reference must not recurse
    index = _write_index(
        tmp_path, "model.safetensors.index.json", {"a": "model.safetensors.index.json"}
    )
    exc = _err(index)
    assert exc.code == "sharded-bad-shard"


def test_hostile_safetensors_shard(tmp_path: pathlib.Path) -> None:
    h = json.dumps(
        {
            "a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
            "b": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]},
        }
    ).encode()
    (tmp_path / "s.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + b"xyz")
    _write_index(tmp_path, "m.index.json", {"a": "s.safetensors"})
    with pytest.raises(FormatError) as exc:
        ckptpeek.open(tmp_path)
    assert exc.value.code == "st-invalid-offset"
    assert exc.value.path == str(tmp_path / "s.safetensors")


def test_unknown_shard_format(tmp_path: pathlib.Path) -> None:
    (tmp_path / "s.bin").write_bytes(b"hello, not a checkpoint")
    _write_index(tmp_path, "m.index.json", {"a": "s.bin"})
    with pytest.raises(FormatError) as exc:
        ckptpeek.open(tmp_path)
    assert exc.value.code == "unknown-format"
    assert exc.value.path == str(tmp_path / "s.bin")


@pytest.mark.torch
def test_bin_shard_that_is_no_state_dict(tmp_path: pathlib.Path, engine: str) -> None:
    torch = pytest.importorskip("torch")
    torch.save([torch.ones(2)], tmp_path / "list.bin")
    torch.save({"a": 1}, tmp_path / "int.bin")
    index = _write_index(tmp_path, "l.index.json", {"a": "list.bin"})
    assert _err(index, engine).code == "sharded-bad-shard"
    index = _write_index(tmp_path, "i.index.json", {"a": "int.bin"})
    assert _err(index, engine).code == "sharded-bad-shard"
    index = _write_index(tmp_path, "m.index.json", {"b": "int.bin"})
    assert _err(index, engine).code == "sharded-missing-tensor"


@pytest.mark.torch
def test_strict_applies_to_bin_shards(tmp_path: pathlib.Path, engine: str) -> None:
    torch = pytest.importorskip("torch")
    import collections

    torch.save({"a": torch.ones(2), "c": collections.Counter("ab")}, tmp_path / "p.bin")
    index = _write_index(tmp_path, "m.index.json", {"a": "p.bin"})
    with ckptpeek.open(index, engine=engine) as ckpt:
        assert any(not g.safe for g in ckpt.globals())
    with pytest.raises(ckptpeek.UnsafePickleError):
        ckptpeek.open(index, engine=engine, strict=True)
