"""``fallback="torch"``: torch.load as the last resort, only for unsupported features."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

import ckptpeek
from ckptpeek.formats import torch_zip

DATA = pathlib.Path(__file__).parent / "data"


def _unsupported(*args, **kwargs):
    raise ckptpeek.UnsupportedError("pretend this feature is not read", code="not-dense")


def test_unsupported_falls_back_to_torch(monkeypatch) -> None:
    torch = pytest.importorskip("torch")
    path = DATA / "state_dict.pt"
    monkeypatch.setattr(torch_zip, "read", _unsupported)
    with pytest.raises(ckptpeek.UnsupportedError):
        ckptpeek.open(path)  # no fallback unless asked
    with ckptpeek.open(path, fallback="torch") as ckpt:
        assert (ckpt.backend, ckpt.format) == ("torch", "torch-zip")
        expected = torch.load(path)
        for key, want in expected.items():
            if isinstance(want, torch.Tensor):
                got = ckpt.get(key)
                assert str(got.dtype) == str(want.dtype) and got.stride() == want.stride()
                assert torch.equal(got.to_torch().detach().float(), want.detach().float()), key
        assert ckpt.get("linear.weight").is_parameter
    # the drop-in falls back when asked ("auto": torch if installed), never by default
    root = ckptpeek.load_checkpoint(path, fallback="auto")
    assert isinstance(root["view.slice"], ckptpeek.TensorRef)
    with pytest.raises(ckptpeek.UnsupportedError):
        ckptpeek.load_checkpoint(path)


def test_corrupt_and_unsafe_input_never_falls_back(tmp_path) -> None:
    pytest.importorskip("torch")
    broken = tmp_path / "broken.pt"
    broken.write_bytes((DATA / "state_dict.pt").read_bytes()[:-100])
    with pytest.raises(ckptpeek.FormatError):
        ckptpeek.open(broken, fallback="torch")
    unsafe = tmp_path / "unsafe.pt"
    import torch

    torch.save({"x": pathlib.PurePosixPath("a"), "obj": _Custom()}, unsafe)
    with pytest.raises(ckptpeek.UnsafePickleError):
        ckptpeek.open(unsafe, strict=True, fallback="torch")


class _Custom:
    pass


def test_untrusted_fallback_refuses_code(monkeypatch, tmp_path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "custom.pt"
    torch.save({"obj": _Custom(), "w": torch.ones(2)}, path)
    monkeypatch.setattr(torch_zip, "read", _unsupported)
    with pytest.raises(ckptpeek.UnsupportedError) as err:
        ckptpeek.open(path, fallback="torch")
    assert err.value.code == "torch-refused" and "trust=True" in str(err.value)
    with ckptpeek.open(path, fallback="torch", trust=True) as ckpt:
        assert isinstance(ckpt.get("obj"), _Custom)  # trusted: torch ran the pickle


def test_without_torch_the_error_says_torch_would_help() -> None:
    code = f"""
import sys
sys.modules["torch"] = None  # torch hidden: imports of it fail
import ckptpeek
from ckptpeek.formats import torch_zip
def unsupported(*a, **k):
    raise ckptpeek.UnsupportedError("pretend", code="not-dense")
torch_zip.read = unsupported
try:
    ckptpeek.load_checkpoint({str(DATA / "state_dict.pt")!r})
except ckptpeek.UnsupportedError as exc:
    print(exc.code, "|", exc)
try:
    ckptpeek.open({str(DATA / "state_dict.pt")!r}, fallback="torch")
except ckptpeek.UnsupportedError as exc:
    print(exc.code, "|", exc)
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ.copy(),
    ).stdout.splitlines()
    assert out[0].startswith("not-dense | pretend")  # auto fallback off: torch absent
    assert out[1].startswith("not-dense |") and "installing torch" in out[1]
