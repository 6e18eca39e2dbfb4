"""Fresh-process benchmarks: start-up cost and peak memory of each way to read a checkpoint.

Two kinds of groups:

- ``startup``: wall time of ``python -c "pass"``, ``python -c "import ckptpeek"``,
  ``python -c "import torch"`` and ``python -c "import lightning"``, each a fresh process
  (one untimed run first, then ``PROCESS_ROUNDS`` rounds).
- ``memory <file>``: for checkpoints of the ``outputs/`` corpus of different sizes (scale
  ``$CKPTPEEK_BENCH_SCALE``, default ``ci``: the smallest, a middle one and the largest, plus
  ``lightning-big``), one fresh child process per round and method. The child imports what it
  needs, reads ``VmHWM`` from ``/proc/self/status`` (the peak resident set so far: the
  baseline after imports), runs the method once, reads ``VmHWM`` again and reports both and
  the in-process time of the call. ``ru_maxrss`` is not used: on Linux a child started by
  fork inherits the parent's value, so a small child of a big pytest process would report
  the parent's peak. The timed quantity of the benchmark itself is the child's wall time
  (interpreter start + imports + the call); the report shows the in-child call time.

The page cache is warm (each file is read once first). The children import ckptpeek from
the same tree as the suite (``$CKPTPEEK_BENCH_SRC`` or ``src/``).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from typing import Any

import corpus
import pytest
from conftest import SRC, require_engine

PROCESS_ROUNDS = int(os.environ.get("CKPTPEEK_BENCH_PROCESS_ROUNDS", "5"))
MEMORY_ROUNDS = int(os.environ.get("CKPTPEEK_BENCH_MEMORY_ROUNDS", "3"))
#: outputs/ corpus scales whose checkpoints the memory groups use (comma-separated)
SCALES = [x.strip() for x in os.environ.get("CKPTPEEK_BENCH_SCALE", "ci").split(",") if x.strip()]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if (SRC / "ckptpeek").is_dir():
        env["PYTHONPATH"] = str(SRC)
    return env


# -- start-up -----------------------------------------------------------------------------------

STARTUP = {
    "python-pass": "pass",
    "import-ckptpeek": "import ckptpeek",
    "import-torch": "import torch",
    "import-lightning": "import lightning",
}


@pytest.mark.parametrize("what", list(STARTUP))
def test_startup(benchmark: Any, what: str) -> None:
    if what != "python-pass":
        pytest.importorskip(STARTUP[what].split()[1])
    cmd = [sys.executable, "-c", STARTUP[what]]
    env = child_env()

    def run() -> None:
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)

    benchmark.group = "startup"
    benchmark.extra_info.update(method=what, code=STARTUP[what])
    benchmark.pedantic(run, rounds=PROCESS_ROUNDS, iterations=1, warmup_rounds=1)


# -- peak memory per method ----------------------------------------------------------------------

CHILD = r"""
import json, sys, time
method, path = sys.argv[1], sys.argv[2]

def hwm():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
note = ""
if method.startswith("ckptpeek-"):
    import ckptpeek
    engine = method.split("-")[1]
    def run():
        with ckptpeek.open(path, engine=engine) as c:
            return c.summary()
elif method == "io-floor-zipfile-data.pkl":
    import zipfile
    def run():
        with zipfile.ZipFile(path) as z:
            name = next(n for n in z.namelist() if n.endswith("/data.pkl") and n.count("/") == 1)
            return z.read(name)
elif method == "lightning-_lazy_load":
    import torch
    from lightning.fabric.utilities.load import _lazy_load
    def run():
        return _lazy_load(path)
else:
    import torch
    kw = {"torch.load-cpu": dict(map_location="cpu", weights_only=False),
          "torch.load-meta": dict(map_location="meta", weights_only=False),
          "torch.load-mmap": dict(mmap=True, weights_only=True, map_location="cpu")}[method]
    def run():
        global note
        try:
            return torch.load(path, **kw)
        except Exception as exc:  # weights_only=True refuses e.g. DictConfig hyperparameters
            if not kw.get("weights_only"):
                raise
            kw["weights_only"] = False
            note = "weights_only=False (weights_only=True refused: %s)" % type(exc).__name__
            return torch.load(path, **kw)
base = hwm()
t0 = time.perf_counter()
result = run()
dt = time.perf_counter() - t0
peak = hwm()
print(json.dumps({"baseline_hwm": base, "peak_hwm": peak, "seconds": dt, "note": note}))
"""

MEMORY_METHODS = (
    "ckptpeek-native-summary",
    "ckptpeek-python-summary",
    "io-floor-zipfile-data.pkl",
    "torch.load-cpu",
    "torch.load-meta",
    "torch.load-mmap",
    "lightning-_lazy_load",
)


def memory_files() -> list[dict[str, Any]]:
    """Checkpoints of different sizes: smallest, middle and largest of the outputs corpus of
    each scale in ``SCALES`` (distinct sizes only), plus lightning-big."""
    out: list[dict[str, Any]] = []
    for scale in SCALES:
        m = corpus.ensure_outputs(scale)
        ckpts = sorted(
            (
                f
                for f in corpus.outputs_checkpoints(m)
                if f["experiment"] and not f["file"].startswith("last")
            ),
            key=lambda f: f["file_bytes"],
        )
        picked: list[dict[str, Any]] = []
        for f in (ckpts[0], ckpts[len(ckpts) // 2], ckpts[-1]) if ckpts else ():
            if all(abs(f["file_bytes"] - q["file_bytes"]) > 0.2 * q["file_bytes"] for q in picked):
                picked.append(f)
        out += [
            {
                **f,
                "scale": scale,
                "name": f"{scale}:{f['experiment'].split('_', 1)[-1]}/{f['file']}",
            }
            for f in picked
        ]
    big = corpus.make_big_checkpoint.checkpoint_path()
    if big.exists():
        out.append(
            {
                "name": "lightning-big",
                "path": str(big),
                "file_bytes": big.stat().st_size,
                **corpus._pickle_info(big),
            }
        )
    return out


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "memory_file" in metafunc.fixturenames:
        only = os.environ.get("CKPTPEEK_BENCH_ONLY")
        files = [] if only and "memory" not in only else memory_files()
        metafunc.parametrize("memory_file", files, ids=[f["name"] for f in files], scope="module")


_WARM: set[str] = set()


@pytest.mark.parametrize("method", MEMORY_METHODS)
def test_memory(benchmark: Any, memory_file: dict[str, Any], method: str) -> None:
    if method.startswith("ckptpeek-"):
        require_engine(method.split("-")[1])
    elif method != "io-floor-zipfile-data.pkl":
        pytest.importorskip("torch")
        if method == "lightning-_lazy_load":
            load = pytest.importorskip("lightning.fabric.utilities.load")
            if not hasattr(load, "_lazy_load"):
                pytest.skip("lightning.fabric.utilities.load._lazy_load is gone")
    path = memory_file["path"]
    if path not in _WARM:
        with open(path, "rb") as f:
            while f.read(16 << 20):
                pass
        _WARM.add(path)
    cmd = [sys.executable, "-c", CHILD, method, path]
    env = child_env()
    reports: list[dict[str, Any]] = []

    def run() -> None:
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        reports.append(json.loads(out.strip().splitlines()[-1]))

    benchmark.group = f"memory {memory_file['name']}"
    benchmark.pedantic(run, rounds=MEMORY_ROUNDS, iterations=1, warmup_rounds=1)
    timed = (
        reports[1:] or reports
    )  # the first is the warm-up round's (none with --benchmark-disable)
    benchmark.extra_info.update(
        method=method,
        corpus=memory_file["name"],
        file_bytes=memory_file["file_bytes"],
        data_pkl_bytes=memory_file["data_pkl_bytes"],
        storages=memory_file["storages"],
        tensors=memory_file["storages"],
        peak_hwm=max(r["peak_hwm"] for r in timed),
        baseline_hwm=statistics.median(r["baseline_hwm"] for r in timed),
        delta_hwm=max(r["peak_hwm"] - r["baseline_hwm"] for r in timed),
        call_seconds=statistics.median(r["seconds"] for r in timed),
        call_seconds_min=min(r["seconds"] for r in timed),
        note=next((r["note"] for r in timed if r["note"]), ""),
    )
