"""Tensors that are not one dense view of a storage, against real torch.

Quantized (per tensor and per channel), sparse (COO, CSR, CSC, BSR), nested, meta,
parameters and subclasses with Python state, tensors saved from numpy for storage-less
devices, and files written on a big-endian machine (byteorder record "big").
"""

from __future__ import annotations

import io
import pickle
import warnings
import zipfile

import numpy as np
import pytest

import ckptpeek

torch = pytest.importorskip("torch")


def _save(tmp_path, obj, name="t.pt"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def test_quantized(tmp_path, engine) -> None:
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    saved = {
        "per_tensor_u8": torch.quantize_per_tensor(x, 0.1, 3, torch.quint8),
        "per_tensor_i32": torch.quantize_per_tensor(x, 0.01, 0, torch.qint32),
        "per_channel": torch.quantize_per_channel(
            x,
            torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.double),
            torch.tensor([0, 1, 2, 3]),
            0,
            torch.qint8,
        ),
    }
    path = _save(tmp_path, saved)
    expected = torch.load(path)
    got = ckptpeek.load_checkpoint(path, engine=engine, fallback=None)
    for key, want in expected.items():
        ref = got[key]
        assert ref.kind == "quantized" and str(ref.dtype) == str(want.dtype)
        assert tuple(ref.shape) == tuple(want.shape) and ref.stride() == want.stride()
        assert np.array_equal(ref.int_repr(), want.int_repr().numpy())
        assert np.allclose(ref.dequantize(), want.dequantize().numpy())
        assert torch.equal(ref.to_torch().int_repr(), want.int_repr())
        assert ref.components["qscheme"].name == str(want.qscheme()).removeprefix("torch.")
        with pytest.raises(ckptpeek.UnsupportedError) as err:
            ref.numpy()
        assert err.value.code == "not-dense"


def test_sparse(tmp_path, engine) -> None:
    dense = torch.tensor([[0.0, 1.5, 0.0, 0.0], [2.0, 0.0, 3.0, 0.0]])
    saved = {
        "coo": dense.to_sparse(),
        "csr": dense.to_sparse_csr(),
        "csc": dense.to_sparse_csc(),
        "bsr": dense.to_sparse_bsr((1, 2)),
        "uncoalesced": torch.sparse_coo_tensor([[0, 0], [1, 1]], [1.0, 2.0], (2, 2)),
    }
    path = _save(tmp_path, saved)
    expected = torch.load(path)
    got = ckptpeek.load_checkpoint(path, engine=engine, fallback=None)
    for key, want in expected.items():
        ref = got[key]
        assert ref.kind == str(want.layout).removeprefix("torch.")
        assert tuple(ref.shape) == tuple(want.shape) and str(ref.dtype) == str(want.dtype)
        assert torch.equal(ref.to_torch().to_dense(), want.to_dense())
        if key != "bsr":
            assert np.array_equal(ref.to_dense(), want.to_dense().numpy())
        with pytest.raises(ckptpeek.UnsupportedError):
            ref.numpy()


def test_nested_and_meta(tmp_path, engine) -> None:
    with warnings.catch_warnings():  # "nested tensors are a prototype"
        warnings.simplefilter("ignore")
        nested = torch.nested.nested_tensor([torch.arange(3.0), torch.arange(5.0) * 2])
    path = _save(tmp_path, {"nested": nested, "meta": torch.empty(2, 3, device="meta")})
    expected = torch.load(path)
    got = ckptpeek.load_checkpoint(path, engine=engine, fallback=None)
    parts = got["nested"].unbind()
    assert [p.numpy().tolist() for p in parts] == [t.tolist() for t in expected["nested"].unbind()]
    meta = got["meta"]
    assert (meta.kind, str(meta.device), tuple(meta.shape), meta.stride()) == (
        "meta",
        "meta",
        (2, 3),
        expected["meta"].stride(),
    )
    with pytest.raises(ckptpeek.UnsupportedError):
        meta.numpy()


class _Tagged(torch.Tensor):
    """A tensor subclass with Python state (saved through _rebuild_from_type_v2)."""


def test_parameter_with_state_and_subclass(tmp_path, engine) -> None:
    param = torch.nn.Parameter(torch.ones(2, 2))
    param.note = "kept"  # Python state on a Parameter: _rebuild_parameter_with_state
    tagged = torch.arange(4.0).as_subclass(_Tagged)
    tagged.tag = 7
    path = _save(tmp_path, {"param": param, "tagged": tagged})
    expected = torch.load(path, weights_only=False)
    got = ckptpeek.load_checkpoint(path, engine=engine, fallback=None)
    assert got["param"].is_parameter and got["param"].attrs == {"note": "kept"}
    assert expected["param"].note == "kept"
    assert got["tagged"].type_name == f"{__name__}._Tagged" and got["tagged"].attrs == {"tag": 7}
    assert np.array_equal(got["tagged"].numpy(), expected["tagged"].numpy())


class _FromNumpy:
    """Pickles like a tensor of a storage-less device (XLA): data travels as numpy."""

    def __init__(self, array, dtype=None):
        self.array = array
        self.dtype = dtype

    def __reduce__(self):
        return (
            torch._utils._rebuild_device_tensor_from_numpy,
            (self.array, self.dtype or torch.float32, "cpu", False),
        )


def test_device_tensor_from_numpy(tmp_path, engine) -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    path = _save(tmp_path, {"xla": _FromNumpy(array)})
    expected = torch.load(path, weights_only=False)["xla"]
    got = ckptpeek.load_checkpoint(path, engine=engine, fallback=None)["xla"]
    assert tuple(got.shape) == tuple(expected.shape) and got.stride() == expected.stride()
    assert np.array_equal(got.numpy(), expected.numpy())


@pytest.mark.parametrize("name", ["bfloat16", "float16"])
def test_device_tensor_from_float32_numpy_is_narrowed_like_torch(tmp_path, engine, name) -> None:
    # older XLA files carry bfloat16 tensors as float32 numpy data; torch rounds on load
    rng = np.random.default_rng(0)
    array = np.concatenate(
        [
            rng.standard_normal(64).astype(np.float32) * 1000,
            np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-40, 65519.0], dtype=np.float32),
        ]
    )
    path = _save(tmp_path, {"x": _FromNumpy(array, getattr(torch, name))})
    expected = torch.load(path, weights_only=False)["x"]
    got = ckptpeek.load_checkpoint(path, engine=engine, fallback=None)["x"]
    assert str(got.dtype) == str(expected.dtype)
    want = expected.view(torch.int16).numpy()
    have = got.to_torch().view(torch.int16).numpy()
    nan = np.isnan(array)
    assert np.array_equal(have[~nan], want[~nan])
    assert torch.isnan(got.to_torch()[torch.from_numpy(nan)]).all()


def _big_endian_copy(src, dst):
    """The same checkpoint as written on a big-endian machine: every storage's elements
    byte-swapped and the byteorder record saying so (torch.load swaps them back)."""
    item = {"float32": 4, "int64": 8, "float16": 2, "complex64": 4, "uint8": 1}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in info.filename and not info.filename.endswith(".pkl"):
                width = item[src.stem]
                data = np.frombuffer(data, dtype=f"<u{width}").byteswap().tobytes()
            zout.writestr(info.filename, data)


@pytest.mark.parametrize("dtype", ["float32", "int64", "float16", "complex64", "uint8"])
def test_big_endian_file(tmp_path, engine, dtype) -> None:
    base = torch.arange(12).reshape(3, 4).to(getattr(torch, dtype))
    src = _save(
        tmp_path,
        {"t": base, "view": base.t()[1:], "scalar": base[1, 1].clone()},
        name=f"{dtype}.pt",
    )
    dst = tmp_path / "big" / f"{dtype}.pt"
    dst.parent.mkdir()
    _big_endian_copy(src, dst)
    expected = torch.load(dst)
    got = ckptpeek.load_checkpoint(dst, engine=engine, fallback=None)
    for key, want in expected.items():
        assert np.array_equal(got[key].numpy(), want.numpy()), key
    assert got["scalar"].item() == expected["scalar"].item()


def test_wrapper_subclass_is_described(engine) -> None:
    # (cls, dtype, size, stride, storage_offset, layout, device, requires_grad): no data
    data = (
        b"\x80\x02ctorch._utils\n_rebuild_wrapper_subclass\n"
        b"(ctorch\nTensor\nctorch\nfloat32\n"  # MARK, cls, dtype
        b"K\x02K\x03\x86K\x03K\x01\x86K\x00"  # size, stride, storage_offset
        b"ctorch\nstrided\nX\x04\x00\x00\x00cuda\x89"  # layout, device, requires_grad
        b"tR."
    )
    ref = ckptpeek.unpickle.engine.engine(engine).run_pickle(data).value
    assert (ref.kind, tuple(ref.shape), ref.stride(), ref.components["device"]) == (
        "wrapper",
        (2, 3),
        (3, 1),
        "cuda",
    )
    with pytest.raises(ckptpeek.UnsupportedError):
        ref.numpy()


def test_pickle_of_tensor_state_round_trips() -> None:
    # errors and values from these readers stay picklable (process pools)
    err = ckptpeek.UnsupportedError("x", code="not-dense")
    assert pickle.loads(pickle.dumps(err)).code == "not-dense"
    assert io.BytesIO  # keeps the import used when torch is present
