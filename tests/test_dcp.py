"""torch.distributed.checkpoint directories against dcp.load."""

from __future__ import annotations

import os
import pickle
import shutil
import warnings

import numpy as np
import pytest

import ckptpeek
from ckptpeek.errors import CheckpointError, FormatError, UnsupportedError
from ckptpeek.formats.dcp import DCPTensorRef

torch = pytest.importorskip("torch")
dcp = pytest.importorskip("torch.distributed.checkpoint")
from torch.distributed.checkpoint import metadata as M  # noqa: E402
from torch.distributed.checkpoint.filesystem import _StorageInfo  # noqa: E402


def _state() -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "model": {
            "w": torch.randn(3, 4, generator=g),
            "b": torch.arange(5, dtype=torch.int64),
            "h": torch.randn(2, 2, generator=g).to(torch.bfloat16),
            "i8": torch.tensor([-1, 2, 3], dtype=torch.int8),
            "nc": torch.arange(12.0, dtype=torch.float64).reshape(3, 4).t(),
            "scalar": torch.tensor(2.5, dtype=torch.float16),
        },
        "optimizer": {
            "state": {0: {"exp_avg": torch.zeros(3), "step": torch.tensor(4.0)}},
            "param_groups": [{"lr": 0.1, "params": [0]}],
        },
        "epoch": 3,
        "name": "run",
    }


def _empty_like(sd):
    if isinstance(sd, dict):
        return {k: _empty_like(v) for k, v in sd.items()}
    if isinstance(sd, list):
        return [_empty_like(v) for v in sd]
    if isinstance(sd, torch.Tensor):
        return torch.empty_like(sd)
    return sd


def _flat(sd, prefix=""):
    for k, v in sd.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        elif isinstance(v, list) and all(isinstance(i, dict) for i in v):
            for i, item in enumerate(v):
                yield from _flat(item, f"{prefix}{k}.{i}.")
        else:
            yield f"{prefix}{k}", v


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("dcp") / "ckpt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process"
        dcp.save(_state(), checkpoint_id=path)
    return path


def _load(path: str) -> dict:
    target = _empty_like(_state())
    target["epoch"], target["name"] = None, None
    target["optimizer"]["param_groups"][0]["lr"] = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load(target, checkpoint_id=path)
    return dict(_flat(target))


def test_matches_dcp_load(saved: str, engine: str) -> None:
    expected = _load(saved)
    with ckptpeek.open(saved, engine=engine) as ckpt:
        assert ckpt.format == "torch-dcp"
        assert set(ckpt.root) == set(expected)
        for fqn, value in expected.items():
            got = ckpt.root[fqn]
            if isinstance(value, torch.Tensor):
                assert isinstance(got, DCPTensorRef)
                assert str(got.dtype) == str(value.dtype) and tuple(got.shape) == tuple(value.shape)
                assert torch.equal(got.to_torch(), value)
                if value.dtype != torch.bfloat16:
                    np.testing.assert_array_equal(got.numpy(), value.numpy())
                (chunk,) = got.chunks
                assert chunk.file == "__0_0.distcp" and chunk.stop > chunk.start
                start, stop = got.byte_range
                assert chunk.start <= start <= stop <= chunk.stop
                if value.is_contiguous() and value.dtype != torch.bfloat16:
                    with open(os.path.join(saved, chunk.file), "rb") as f:
                        f.seek(start)
                        assert f.read(stop - start) == value.numpy().tobytes()
            else:
                assert got == value
        assert ckpt.root["model.scalar"].item() == 2.5
        assert ckpt.root["optimizer.param_groups.0.params"] == [0]
        assert len(list(ckpt.tensors())) == 8
    # tensors still read after close (files reopen by path)
    assert ckpt.root["model.w"].numpy().shape == (3, 4)


def test_select_by_prefix(saved: str, engine: str) -> None:
    with ckptpeek.open(saved, engine=engine, select=["model", "epoch"]) as ckpt:
        assert sorted(ckpt.root) == sorted(
            ["epoch", "model.w", "model.b", "model.h", "model.i8", "model.nc", "model.scalar"]
        )
        assert ckpt.selected == frozenset({"model", "epoch"})


def _write_chunked(path: str, full: torch.Tensor, cut: int, keep: int = 2) -> None:
    """A tensor saved as two row chunks, the way two ranks would (one file each)."""
    os.makedirs(path)
    chunks, storage = [], {}
    for rank, (lo, hi) in enumerate([(0, cut), (cut, full.shape[0])][:keep]):
        name = f"__{rank}_0.distcp"
        with open(os.path.join(path, name), "wb") as f:
            f.write(b"\0" * 7)  # the item does not start the file
            start = f.tell()
            torch.save(full[lo:hi].clone(), f)
            length = f.tell() - start
        offsets = torch.Size([lo, 0])
        chunks.append(
            M.ChunkStorageMetadata(offsets=offsets, sizes=torch.Size([hi - lo, full.shape[1]]))
        )
        storage[M.MetadataIndex("w", offsets, rank)] = _StorageInfo(name, start, length)
    meta = M.Metadata(
        state_dict_metadata={
            "w": M.TensorStorageMetadata(
                properties=M.TensorProperties(dtype=full.dtype), size=full.shape, chunks=chunks
            )
        },
        storage_data=storage,
        planner_data={"w": ("w",)},
    )
    with open(os.path.join(path, ".metadata"), "wb") as f:
        pickle.dump(meta, f)


def test_multi_chunk_assembled(tmp_path, engine: str) -> None:
    full = torch.arange(20, dtype=torch.float32).reshape(5, 4)
    path = str(tmp_path / "two")
    _write_chunked(path, full, 2)
    target = {"w": torch.empty(5, 4)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load(target, checkpoint_id=path)
    with ckptpeek.open(path, engine=engine) as ckpt:
        ref = ckpt.root["w"]
        assert tuple(ref.shape) == (5, 4) and len(ref.chunks) == 2
        assert [c.offsets for c in ref.chunks] == [(0, 0), (2, 0)]
        assert ref.byte_range is None and str(ref.device) == "cpu"
        np.testing.assert_array_equal(ref.numpy(), target["w"].numpy())
        assert torch.equal(ref.to_torch(), target["w"])
        np.testing.assert_array_equal(ref.chunks[1].tensor.numpy(), full[2:].numpy())


def test_partial_tensor_unsupported(tmp_path, engine: str) -> None:
    path = str(tmp_path / "one-of-two")
    _write_chunked(path, torch.ones(5, 4), 2, keep=1)
    with ckptpeek.open(path, engine=engine) as ckpt:
        ref = ckpt.root["w"]
        assert tuple(ref.shape) == (5, 4)
        with pytest.raises(UnsupportedError) as err:
            ref.numpy()
        assert err.value.code == "dcp-partial-tensor"


# -- hostile input ----------------------------------------------------------------------


def _copy(saved: str, tmp_path) -> str:
    dst = str(tmp_path / "copy")
    shutil.copytree(saved, dst)
    return dst


def test_truncated_and_flipped_metadata(saved: str, tmp_path, engine: str) -> None:
    path = _copy(saved, tmp_path)
    meta = os.path.join(path, ".metadata")
    with open(meta, "rb") as f:
        raw = f.read()
    for blob in (raw[: len(raw) // 2], raw[:-1], b"", raw[:40] + b"\xff" * 30 + raw[70:]):
        with open(meta, "wb") as f:
            f.write(blob)
        with pytest.raises(CheckpointError):
            ckptpeek.open(path, engine=engine)
    with open(meta, "wb") as f:
        pickle.dump({"not": "metadata"}, f)
    with pytest.raises(FormatError) as err:
        ckptpeek.open(path, engine=engine)
    assert err.value.code == "dcp-bad-metadata"


def test_missing_data_file(saved: str, tmp_path, engine: str) -> None:
    path = _copy(saved, tmp_path)
    os.remove(os.path.join(path, "__0_0.distcp"))
    with pytest.raises(FormatError) as err:
        ckptpeek.open(path, engine=engine)
    assert err.value.code == "dcp-missing-file"


def test_truncated_data_file(saved: str, tmp_path, engine: str) -> None:
    path = _copy(saved, tmp_path)
    data = os.path.join(path, "__0_0.distcp")
    os.truncate(data, os.path.getsize(data) - 100)
    with pytest.raises(FormatError) as err:
        ckptpeek.open(path, engine=engine)
    assert err.value.code == "dcp-bad-range"


def _rewrite_storage(path: str, fn) -> None:
    meta = os.path.join(path, ".metadata")
    with open(meta, "rb") as f:
        md = pickle.load(f)  # the test's own file, written by torch above
    md.storage_data = {k: fn(v) for k, v in md.storage_data.items()}
    with open(meta, "wb") as f:
        pickle.dump(md, f)


@pytest.mark.parametrize(
    "change, code",
    [
        (lambda s: _StorageInfo(s.relative_path, s.offset + 10**9, s.length), "dcp-bad-range"),
        (lambda s: _StorageInfo("../../etc/passwd", s.offset, s.length), "dcp-bad-metadata"),
        (lambda s: _StorageInfo(s.relative_path, s.offset + 1, s.length), None),
    ],
)
def test_bad_storage_entries(saved: str, tmp_path, engine: str, change, code) -> None:
    path = _copy(saved, tmp_path)
    _rewrite_storage(path, change)
    with pytest.raises(CheckpointError) as err:
        ckptpeek.open(path, engine=engine)
    if code is not None:
        assert err.value.code == code


def test_missing_item(saved: str, tmp_path, engine: str) -> None:
    path = _copy(saved, tmp_path)
    meta = os.path.join(path, ".metadata")
    with open(meta, "rb") as f:
        md = pickle.load(f)
    md.storage_data = {k: v for k, v in md.storage_data.items() if k.fqn != "model.w"}
    with open(meta, "wb") as f:
        pickle.dump(md, f)
    with pytest.raises(FormatError) as err:
        ckptpeek.open(path, engine=engine)
    assert err.value.code == "dcp-missing-item"


def test_item_mismatch(saved: str, tmp_path, engine: str) -> None:
    path = _copy(saved, tmp_path)
    meta = os.path.join(path, ".metadata")
    with open(meta, "rb") as f:
        md = pickle.load(f)
    md.state_dict_metadata["model.w"].properties.dtype = torch.float64
    with open(meta, "wb") as f:
        pickle.dump(md, f)
    with pytest.raises(FormatError) as err:
        ckptpeek.open(path, engine=engine)
    assert err.value.code == "dcp-item-mismatch"
