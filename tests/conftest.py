"""Shared fixtures: every reader test runs once per pickle engine.

``engine`` is parametrised over ``"python"`` and ``"native"``. When the native
extension is not built the native cases are skipped - unless
``CKPTPEEK_REQUIRE_EXTENSIONS=1`` is set (CI sets it), in which case importing
ckptpeek already fails, so a missing extension can never pass silently.
"""

from __future__ import annotations

import pathlib

import pytest

import ckptpeek
from ckptpeek.unpickle import engine as _backend

DATA = pathlib.Path(__file__).parent / "data"
ENGINES = ("python", "native")


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    if request.param == "native" and "native" not in _backend._ENGINES:
        pytest.skip(f"native engine not built ({_backend.NATIVE_ERROR})")
    return request.param


@pytest.fixture
def data_dir() -> pathlib.Path:
    return DATA


@pytest.fixture
def torch_load(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """``torch.load`` replaced by a recorder (the fallback tests): the identities of the
    files it was called on - so a refusal is shown to come before torch runs, and no test
    allocates what a hostile file asks for."""
    torch = pytest.importorskip("torch")
    from _fallback import file_identity

    calls: list[object] = []

    def record(source: object, *args: object, **kwargs: object) -> object:
        calls.append(file_identity(source))
        return {}

    monkeypatch.setattr(torch, "load", record)
    return calls


def pytest_report_header(config: pytest.Config) -> str:
    return f"ckptpeek {ckptpeek.__version__}: default engine {ckptpeek.BACKEND}" + (
        f" (native unavailable: {_backend.NATIVE_ERROR})" if _backend.NATIVE_ERROR else ""
    )
