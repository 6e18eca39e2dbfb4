"""Header read of the >= 300 MB Lightning checkpoint (warm page cache), end to end.

One group, ``header lightning-big``: ckptpeek's ``open(p).summary()`` with each engine
and with ``select=SUMMARY_KEYS``; reading ``data.pkl`` alone with ``zipfile`` (the I/O
floor: ZIP directory + pickle bytes, nothing parsed); and the incumbents: ``torch.load``
(``map_location="cpu"``, ``mmap=True`` + ``weights_only=True``, ``map_location="meta"``)
and Lightning's ``_lazy_load``. The torch rows use ``benchmark.pedantic`` with 5 rounds
after one warm-up round.
"""

from __future__ import annotations

import zipfile
from typing import Any

import pytest
from conftest import require_engine

import ckptpeek

TORCH_ROUNDS = 5


@pytest.fixture(scope="session")
def big(big_checkpoint: dict[str, Any]) -> dict[str, Any]:
    with open(big_checkpoint["path"], "rb") as f:  # warm the page cache
        while f.read(16 << 20):
            pass
    return big_checkpoint


def _tag(benchmark: Any, big: dict[str, Any], method: str) -> None:
    benchmark.group = f"header {big['name']}"
    benchmark.extra_info.update(
        corpus=big["name"],
        method=method,
        tensors=big["tensors"],
        file_bytes=big["file_bytes"],
        data_pkl_bytes=big["data_pkl_bytes"],
    )


@pytest.mark.parametrize("engine", ["native", "python"])
def test_summary(benchmark: Any, big: dict[str, Any], engine: str) -> None:
    require_engine(engine)
    p = big["path"]

    def run() -> Any:
        with ckptpeek.open(p, engine=engine) as c:
            return c.summary()

    s = run()
    assert s.tensor_count == big["tensors"]
    _tag(benchmark, big, f"ckptpeek-{engine}-summary")
    benchmark(run)


@pytest.mark.parametrize("engine", ["native", "python"])
def test_summary_select(benchmark: Any, big: dict[str, Any], engine: str) -> None:
    require_engine(engine)
    p = big["path"]

    def run() -> Any:
        with ckptpeek.open(p, engine=engine, select=ckptpeek.SUMMARY_KEYS) as c:
            return c.summary()

    run()
    _tag(benchmark, big, f"ckptpeek-{engine}-select-summary")
    benchmark(run)


def test_io_floor_zipfile(benchmark: Any, big: dict[str, Any]) -> None:
    p, member = big["path"], big["data_pkl_member"]

    def run() -> bytes:
        with zipfile.ZipFile(p) as z:
            return z.read(member)

    assert len(run()) == big["data_pkl_bytes"]
    _tag(benchmark, big, "io-floor-zipfile-data.pkl")
    benchmark(run)


TORCH_VARIANTS = {
    "torch.load-cpu": dict(map_location="cpu", weights_only=False),
    "torch.load-mmap-weights_only": dict(mmap=True, weights_only=True, map_location="cpu"),
    "torch.load-meta": dict(map_location="meta", weights_only=False),
}


@pytest.mark.parametrize("variant", list(TORCH_VARIANTS))
def test_torch_load(benchmark: Any, big: dict[str, Any], variant: str) -> None:
    torch = pytest.importorskip("torch")
    p, kwargs = big["path"], TORCH_VARIANTS[variant]
    _tag(benchmark, big, variant)
    benchmark.pedantic(
        torch.load, args=(p,), kwargs=kwargs, rounds=TORCH_ROUNDS, iterations=1, warmup_rounds=1
    )


def test_lightning_lazy_load(benchmark: Any, big: dict[str, Any]) -> None:
    load = pytest.importorskip("lightning.fabric.utilities.load")
    lazy = getattr(load, "_lazy_load", None)
    if lazy is None:
        pytest.skip("lightning.fabric.utilities.load._lazy_load is gone")
    _tag(benchmark, big, "lightning-_lazy_load")
    benchmark.pedantic(
        lazy, args=(big["path"],), rounds=TORCH_ROUNDS, iterations=1, warmup_rounds=1
    )
