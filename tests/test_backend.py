"""Engine selection, and the promise that reading a checkpoint never imports torch."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

import ckptpeek

DATA = pathlib.Path(__file__).parent / "data"


def _python(code: str, **env: str) -> str:
    full_env = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=full_env
    ).stdout.strip()


def test_no_extensions_forces_python() -> None:
    assert (
        _python(
            "import ckptpeek; print(ckptpeek.BACKEND)",
            CKPTPEEK_NO_EXTENSIONS="1",
            CKPTPEEK_REQUIRE_EXTENSIONS="",
        )
        == "python"
    )


def test_backend_is_reported() -> None:
    assert ckptpeek.BACKEND in ("python", "native")
    if os.environ.get("CKPTPEEK_REQUIRE_EXTENSIONS"):
        assert ckptpeek.BACKEND == "native"


def test_unknown_engine_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown engine"):
        ckptpeek.open(DATA / "state_dict.pt", engine="fortran")


def test_reading_never_imports_torch() -> None:
    code = f"""
import sys, ckptpeek
path = {str(DATA / "lightning_tiny.ckpt")!r}
with ckptpeek.open(path) as ckpt:
    s = ckpt.summary()
    list(ckpt.tensors())
    [t.numpy() for _, t in ckpt.tensors()]
root = ckptpeek.load_checkpoint(path, fallback=None)
root["state_dict"]["net.0.weight"].numpy()
bad = [m for m in sys.modules if m == "torch" or m.startswith(("torch.", "lightning"))]
print(bad)
"""
    assert _python(code) == "[]"


def test_import_is_light() -> None:
    out = _python(
        "import sys, ckptpeek; print(sorted(m for m in ('torch', 'pydantic', 'yaml', "
        "'numpy', 'safetensors') if m in sys.modules))"
    )
    assert out == "[]"
