"""Fixtures of the pytest-benchmark suite (run it from the repo root: ``python -m pytest
benchmarks``; ``python benchmarks/report.py`` runs it and writes the report).

The plain ``python -m pytest`` never collects this directory: ``testpaths`` is ``tests``.

ckptpeek is imported from this checkout's ``src/`` (the working tree is what is measured).
The corpus (``corpus.py``) is generated on first use into ``$CKPTPEEK_BENCH_CACHE``.
``CKPTPEEK_BENCH_ONLY=name1,name2`` restricts the suite to some corpus files;
``CKPTPEEK_BENCH_SRC=DIR`` imports ckptpeek from ``DIR`` instead of ``src/``;
``CKPTPEEK_BENCH_SCALE=ci,small,large`` picks the ``outputs/`` corpus scales of the memory
groups (``test_bench_process.py``; default ``ci``).
"""

from __future__ import annotations

import os
import pathlib
import sys
from typing import Any

import pytest

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
#: report.py points this at a copy of src/ taken at the start of a run, so edits made to the
#: working tree while the suite runs cannot leak into it
SRC = pathlib.Path(os.environ.get("CKPTPEEK_BENCH_SRC") or REPO / "src")
if (SRC / "ckptpeek").is_dir():
    sys.path.insert(0, str(SRC))
sys.path.insert(0, str(HERE))

import corpus  # noqa: E402

import ckptpeek  # noqa: E402
from ckptpeek import _backend  # noqa: E402
from ckptpeek.formats.torch_zip import ZipStorageReader, find_prefix  # noqa: E402
from ckptpeek.io.source import ByteSource  # noqa: E402
from ckptpeek.io.zipdir import read_directory  # noqa: E402

#: what the Lightning "selective" benchmarks ask for
SELECT_KEYS = ("epoch", "global_step", "callbacks")

_MANIFEST: dict[str, Any] | None = None


def manifest(config: pytest.Config) -> dict[str, Any]:
    """The corpus manifest, generating the corpus (with output shown) if needed."""
    global _MANIFEST
    if _MANIFEST is None:
        capman = config.pluginmanager.getplugin("capturemanager")
        if capman is not None:
            with capman.global_and_fixture_disabled():
                _MANIFEST = corpus.ensure()
        else:
            _MANIFEST = corpus.ensure()
        only = os.environ.get("CKPTPEEK_BENCH_ONLY")
        if only:
            keep = {s.strip() for s in only.split(",")}
            _MANIFEST = {**_MANIFEST, "files": [f for f in _MANIFEST["files"] if f["name"] in keep]}
    return _MANIFEST


def big_entry(config: pytest.Config) -> dict[str, Any] | None:
    return next((f for f in manifest(config)["files"] if f["name"] == "lightning-big"), None)


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        f"ckptpeek {ckptpeek.__version__} from {pathlib.Path(ckptpeek.__file__).parent}: "
        f"default engine {ckptpeek.BACKEND}"
        + (f" (native unavailable: {_backend.NATIVE_ERROR})" if _backend.NATIVE_ERROR else ""),
        f"benchmark corpus: {corpus.corpus_dir()}",
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "corpus_entry" in metafunc.fixturenames:
        files = manifest(metafunc.config)["files"]
        metafunc.parametrize("corpus_entry", files, ids=[f["name"] for f in files], scope="session")
    if "big_checkpoint" in metafunc.fixturenames:
        big = big_entry(metafunc.config)
        metafunc.parametrize(
            "big_checkpoint",
            [big] if big else [],
            ids=[big["name"]] if big else [],
            scope="session",
        )


class PickleCase:
    """One corpus file's ``data.pkl`` bytes (read once) and a storage resolver."""

    def __init__(self, entry: dict[str, Any]) -> None:
        self.entry = entry
        self.path = entry["path"]
        self.source = ByteSource(self.path)
        self.directory = read_directory(self.source)
        self.prefix = find_prefix(self.directory)
        self.data = self.directory.read(f"{self.prefix}/data.pkl")
        # Reused across calls: it caches one StorageRef per key, which is fine for timing
        # the VM (the first, untimed warm-up call fills it).
        self.resolver = ZipStorageReader(self.directory, self.prefix).persistent_load

    def close(self) -> None:
        self.source.close()


_CASES: dict[str, PickleCase] = {}


@pytest.fixture(scope="session")
def pickle_case(corpus_entry: dict[str, Any]) -> PickleCase:
    name = corpus_entry["name"]
    if name not in _CASES:
        _CASES[name] = PickleCase(corpus_entry)
    return _CASES[name]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for case in _CASES.values():
        case.close()
    _CASES.clear()


def require_engine(name: str) -> None:
    if name == "native" and "native" not in _backend._ENGINES:
        pytest.skip(
            f"native engine not built ({_backend.NATIVE_ERROR}); build it with "
            "`python setup.py build_ext --inplace`"
        )
