"""TorchScript archives (torch.jit.save) against torch.jit.load."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

import ckptpeek
from ckptpeek.errors import CheckpointError, FormatError, UnsafePickleError
from ckptpeek.formats.torchscript import ScriptObject

torch = pytest.importorskip("torch")
nn = torch.nn


class _Sub(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.lin(x))


class _Scripted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.sub = _Sub()
        self.emb = nn.Embedding(4, 3).to(torch.float16)
        self.register_buffer("ib", torch.arange(5, dtype=torch.int32))
        self.register_buffer("tmp", torch.zeros(2, dtype=torch.float64), persistent=False)
        self.frozen = nn.Parameter(torch.randn(3, 2).t(), requires_grad=False)  # strided
        self.bf = nn.Parameter(torch.randn(4).to(torch.bfloat16))
        self.c = torch.tensor([1.5, 2.5])  # a plain tensor attribute
        self.lst = nn.ModuleList([nn.Linear(1, 1), nn.ReLU()])
        self.scale = 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.lst:
            x = m(x)
        return (
            self.sub(x.expand(-1, 3))
            + self.c.sum()
            + self.ib.sum()
            + self.tmp.sum()
            + self.frozen.sum()
            + self.bf.float().sum()
            + self.scale
        )


class _Traced(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2).double()
        self.k = torch.tensor([[1.0, 2.0], [3.0, 4.0]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) + self.k[0].double() + torch.tensor([7, 8]).double()


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> str:
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("ts") / "scripted.pt")
    torch.jit.script(_Scripted()).save(path)
    return path


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> str:
    torch.manual_seed(1)
    path = str(tmp_path_factory.mktemp("ts") / "traced.pt")
    with pytest.warns(Warning):  # torch warns that torch.tensor becomes a constant
        torch.jit.trace(_Traced(), torch.randn(1, 3, dtype=torch.float64)).save(path)
    return path


def _same(ref: ckptpeek.TensorRef, t: torch.Tensor) -> None:
    assert str(ref.dtype) == str(t.dtype)
    assert tuple(ref.shape) == tuple(t.shape)
    assert ref.stride() == t.stride()
    assert ref.storage_offset() == t.storage_offset()
    assert torch.equal(ref.to_torch().detach(), t.detach())
    if t.dtype != torch.bfloat16:
        np.testing.assert_array_equal(ref.numpy(), t.detach().numpy())


@pytest.mark.parametrize("which", ["scripted", "traced"])
def test_state_dict_matches_torch(which: str, engine: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(which)
    loaded = torch.jit.load(path)
    with ckptpeek.open(path, engine=engine) as ckpt:
        assert ckpt.format == "torchscript"
        sd = ckpt.root["state_dict"]
        expected = loaded.state_dict()
        assert list(sd) == list(expected)
        for name, t in expected.items():
            _same(sd[name], t)
        module = ckpt.root["module"]
        assert isinstance(module, ScriptObject) and module.is_module
        assert [n for n, _ in module.named_parameters()] == [
            n for n, _ in loaded.named_parameters()
        ]
        assert [n for n, _ in module.named_buffers()] == [n for n, _ in loaded.named_buffers()]
        assert [n for n, _ in module.named_modules()] == [n for n, _ in loaded.named_modules()]
        for name, p in loaded.named_parameters():
            assert sd[name].is_parameter and sd[name].requires_grad == p.requires_grad
        # every tensor is listed once: state dict, constants, other attributes
        listed = [path for path, _ in ckpt.tensors()]
        assert len(listed) == len({id(r) for _, r in ckpt.tensors()})
        assert all(p[0] in ("state_dict", "constants", "attributes") for p in listed)


def test_scripted_attributes(scripted: str, engine: str) -> None:
    with ckptpeek.open(scripted, engine=engine) as ckpt:
        attrs = ckpt.root["attributes"]
        _same(attrs["c"], torch.tensor([1.5, 2.5]))
        assert attrs["scale"] == 0.5
        assert "training" not in attrs
        module = ckpt.root["module"]
        assert module.sub.lin.type_name == "__torch__.torch.nn.modules.linear.Linear"
        assert module.sub.bn.running_var is ckpt.root["state_dict"]["sub.bn.running_var"]
        assert ckpt.root["constants"] == {}
        assert all(g.safe for g in ckpt.globals())


def test_traced_constants(traced: str, engine: str) -> None:
    with ckptpeek.open(traced, engine=engine) as ckpt:
        consts = ckpt.root["constants"]
        assert sorted(consts) == ["c0", "c1"]
        _same(consts["c0"], torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        _same(consts["c1"], torch.tensor([7, 8]))
        member, start, stop = consts["c0"].storage.reader.storage_location(consts["c0"].storage)
        assert member.endswith("/constants/0")


def test_strict_accepts_torchscript_classes(scripted: str, engine: str) -> None:
    with ckptpeek.open(scripted, engine=engine, strict=True) as ckpt:
        assert ckpt.root["state_dict"]


def _rewrite(src: str, dst: str, member_suffix: str, new: bytes) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = new if info.filename.endswith(member_suffix) else zin.read(info)
            zout.writestr(info, data)


def test_root_not_an_object(scripted: str, tmp_path, engine: str) -> None:
    bad = str(tmp_path / "bad.pt")
    _rewrite(scripted, bad, "/data.pkl", b"\x80\x02]q\x00.")
    with pytest.raises(FormatError) as err:
        ckptpeek.open(bad, engine=engine)
    assert err.value.code == "torchscript-bad-root"


def test_bad_constants(traced: str, tmp_path, engine: str) -> None:
    bad = str(tmp_path / "bad.pt")
    _rewrite(traced, bad, "/constants.pkl", b"\x80\x02}q\x00.")
    with pytest.raises(FormatError) as err:
        ckptpeek.open(bad, engine=engine)
    assert err.value.code == "torchscript-bad-constants"


def test_malformed_parameter_list(scripted: str, tmp_path, engine: str) -> None:
    bad = str(tmp_path / "bad.pt")
    with zipfile.ZipFile(scripted) as z:
        name = next(n for n in z.namelist() if n.endswith(".py") and b'"frozen"' in z.read(n))
        code = z.read(name).replace(b"__parameters__ = [", b'__parameters__ = [__import__("os"), ')
    _rewrite(scripted, bad, name, code)
    with pytest.raises(FormatError) as err:
        ckptpeek.open(bad, engine=engine)
    assert err.value.code == "torchscript-bad-code"


def test_truncated_and_flipped(scripted: str, tmp_path, engine: str) -> None:
    with open(scripted, "rb") as f:
        raw = f.read()
    for i, blob in enumerate([raw[: len(raw) // 2], raw[:-30]]):
        p = tmp_path / f"t{i}.pt"
        p.write_bytes(blob)
        with pytest.raises(CheckpointError):
            ckptpeek.open(str(p), engine=engine)
    # a pickle that is garbage after its first opcodes
    bad = str(tmp_path / "flip.pt")
    with zipfile.ZipFile(scripted) as z:
        name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        pkl = bytearray(z.read(name))
    pkl[len(pkl) // 2 :] = b"\xff" * (len(pkl) - len(pkl) // 2)
    _rewrite(scripted, bad, "/data.pkl", bytes(pkl))
    with pytest.raises(CheckpointError):
        ckptpeek.open(bad, engine=engine)


def test_missing_class_source_is_not_fatal(scripted: str, tmp_path, engine: str) -> None:
    bad = str(tmp_path / "nocode.pt")
    with zipfile.ZipFile(scripted) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            if "/code/__torch__/torch/nn/modules/batchnorm" not in info.filename:
                zout.writestr(info, zin.read(info))
    with ckptpeek.open(bad, engine=engine) as ckpt:
        sd = ckpt.root["state_dict"]
        assert "sub.lin.weight" in sd and "sub.bn.weight" not in sd
        assert ckpt.root["module"].sub.bn.is_module is None


# -- every pickle torch.jit.load unpickles (see also test_every_pickle.py) --------------------

#: ``os.system("")`` then POP, put after PROTO: the pickle's own value is unchanged
_PAYLOAD = b"cos\nsystem\n(X\x00\x00\x00\x00tR0"


def _inject(data: bytes) -> bytes:
    assert data[:2] == b"\x80\x02"
    return data[:2] + _PAYLOAD + data[2:]


def _rewrite_with(src: str, dst: str, member_suffix: str) -> None:
    with zipfile.ZipFile(src) as z:
        name = next(n for n in z.namelist() if n.endswith(member_suffix))
        _rewrite(src, dst, name, _inject(z.read(name)))


@pytest.mark.parametrize("member", ["/data.pkl", "/constants.pkl"])
def test_payload_in_a_loaded_pickle(traced: str, tmp_path, engine: str, member: str) -> None:
    """Both pickles torch.jit.load unpickles count: the payload is listed as unknown and
    refused in strict mode; torch's C++ unpickler refuses it too (never imports it)."""
    bad = str(tmp_path / "bad.pt")
    _rewrite_with(traced, bad, member)
    with ckptpeek.open(bad, engine=engine) as ckpt:
        assert [str(g) for g in ckpt.globals() if not g.safe] == ["os.system"]
        assert sorted(ckpt.root["constants"]) == ["c0", "c1"]
    with pytest.raises(UnsafePickleError) as err:
        ckptpeek.open(bad, engine=engine, strict=True)
    assert err.value.member.endswith(member) and err.value.offset == 2
    with pytest.raises(RuntimeError, match="Unknown type name 'os.system'"):
        torch.jit.load(bad)


@pytest.mark.parametrize(
    ("which", "member", "error"),
    [
        ("scripted", ".debug_pkl", "unknown type os.system"),
        ("traced", "/traced_inputs.pkl", "Unknown type name 'os.system'"),
    ],
)
def test_pickles_torch_unpickles_only_on_demand(
    which: str, member: str, error: str, tmp_path, engine: str, request: pytest.FixtureRequest
) -> None:
    """``code/*.debug_pkl`` (source ranges) and ``traced_inputs.pkl`` go through the same
    C++ unpickler, only on demand: torch.jit.load succeeds, and the unknown global fails
    (is never imported) when the source ranges are wanted or the shapes restored.
    ckptpeek does not read them for the checkpoint."""
    bad = str(tmp_path / "lazy.pt")
    _rewrite_with(request.getfixturevalue(which), bad, member)
    loaded = torch.jit.load(bad)
    with pytest.raises(RuntimeError, match=error):
        if member == ".debug_pkl":
            _ = loaded.code
        else:
            torch.jit.load(bad, _restore_shapes=True)
    with ckptpeek.open(bad, engine=engine, strict=True) as ckpt:
        assert all(g.safe for g in ckpt.globals())
