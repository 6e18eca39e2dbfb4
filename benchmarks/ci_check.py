"""CI speed floor: fail when ckptpeek's speed ratios fall below generous floors.

    python benchmarks/ci_check.py [--min-torch-ratio 20] [--min-native-ratio 3]

Run from the repo root after installing the package (it imports the *installed* ckptpeek,
not ``src/``) with torch and lightning in the environment (no timm, hydra-core or
pytest-benchmark needed). It generates the ``ci`` scale of the benchmark corpus
(``corpus.ensure_outputs("ci")``, into ``$CKPTPEEK_BENCH_CACHE``, reused when present),
warms the page cache, and checks two ratios:

1. ``torch.load(p, map_location="cpu", weights_only=False)`` vs ``ckptpeek.open(p,
   engine="native").summary()`` on the same ~100 MB Lightning checkpoint (a DBNet-style
   model, SGD momentum): at least ``--min-torch-ratio`` (20) times slower;
2. the pure engine vs the native engine, full ``run_pickle`` over the same ``data.pkl`` of a
   ~10k-tensor Lightning checkpoint: at least ``--min-native-ratio`` (3) times slower.

Robust on a busy 2-core machine: the methods of a check run round-robin (drift hits both
alike, ``gc.collect()`` before each call); each of ``--blocks`` blocks takes the median of
``--rounds`` calls per method; a method's time is the minimum of its block medians; the
ratio is the quotient of those. A check below its floor is retried once (fresh blocks)
before failing. Exit code 0 when both pass, 1 when one fails (with a message naming it),
2 when the setup is wrong (native engine missing, corpus broken).
"""

from __future__ import annotations

import argparse
import gc
import os
import pathlib
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import corpus  # noqa: E402
import make_big_checkpoint  # noqa: E402  (stdlib-only at import time)


def say(msg: str) -> None:
    print(f"[ci_check] {msg}", flush=True)


def warm(path: str) -> None:
    with open(path, "rb") as f:
        while f.read(16 << 20):
            pass


def measure(methods: dict[str, Callable[[], Any]], blocks: int, rounds: int) -> dict[str, float]:
    """Min over blocks of the per-block median, methods interleaved round-robin."""
    for fn in methods.values():  # untimed warm-up
        fn()
    best = {k: float("inf") for k in methods}
    for _ in range(blocks):
        ts: dict[str, list[float]] = {k: [] for k in methods}
        for _ in range(rounds):
            for k, fn in methods.items():
                gc.collect()
                t0 = time.perf_counter()
                r = fn()
                ts[k].append(time.perf_counter() - t0)
                del r
        for k, v in ts.items():
            best[k] = min(best[k], statistics.median(v))
    return best


def fmt(s: float) -> str:
    return f"{s * 1e3:.2f} ms"


def check(
    name: str,
    floor: float,
    slow: str,
    fast: str,
    methods: dict[str, Callable[[], Any]],
    blocks: int,
    rounds: int,
) -> tuple[bool, float]:
    for attempt in (1, 2):
        t = measure(methods, blocks, rounds)
        ratio = t[slow] / t[fast]
        ok = ratio >= floor
        say(
            f"{name}: {slow} {fmt(t[slow])} / {fast} {fmt(t[fast])} = {ratio:.1f}x "
            f"(floor {floor:g}x, min of {blocks} block medians of {rounds} rounds, "
            f"attempt {attempt}): {'ok' if ok else 'BELOW FLOOR'}"
        )
        if ok:
            return True, ratio
    return False, ratio


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--min-torch-ratio", type=float, default=20.0)
    ap.add_argument(
        "--file",
        choices=("big", "ci-100mb"),
        default="big",
        help="check 1 on the >= 300 MB Lightning checkpoint (default) or the "
        "~100 MB one of the ci outputs tree",
    )
    ap.add_argument("--min-native-ratio", type=float, default=3.0)
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    t_start = time.perf_counter()

    import ckptpeek
    from ckptpeek.unpickle import engine as _backend

    say(
        f"ckptpeek {ckptpeek.__version__} from {pathlib.Path(ckptpeek.__file__).parent}, "
        f"default engine {ckptpeek.BACKEND}; engines: {sorted(_backend._ENGINES)}"
    )
    if "native" not in _backend._ENGINES:
        say(f"FAIL: the native engine is not available ({_backend.NATIVE_ERROR})")
        return 2
    if pathlib.Path(ckptpeek.__file__).resolve().is_relative_to(HERE.parent / "src"):
        say("note: this is the repo's src/ tree, not an installed package")

    m = corpus.ensure_outputs("ci")
    ckpts = corpus.outputs_checkpoints(m)
    big = max(
        (f for f in ckpts if f["experiment"] and f["file"].startswith("epoch=")),
        key=lambda f: f["file_bytes"],
    )
    many = next(f for f in ckpts if f.get("name") == "lightning-10k")
    say(f"corpus outputs-ci ready ({time.perf_counter() - t_start:.1f}s so far)")

    import torch

    if args.file == "ci-100mb":
        p = big["path"]
        label = (
            f"{big['experiment']}/checkpoints/{big['file']}: {big['file_bytes'] / 1e6:.1f} MB, "
            f"{big['storages']} storages, data.pkl {big['data_pkl_bytes'] / 1e3:.1f} kB"
        )
    else:  # the >= 300 MB Lightning checkpoint with AdamW state (make_big_checkpoint.py)
        p = str(make_big_checkpoint.make())
        label = f"{pathlib.Path(p).name}: {pathlib.Path(p).stat().st_size / 1e6:.1f} MB"
    warm(p)
    say(f"check 1 file: {label}; torch {torch.__version__}")

    def summary() -> Any:
        with ckptpeek.open(p, engine="native") as c:
            return c.summary()

    def torch_load() -> Any:
        return torch.load(p, map_location="cpu", weights_only=False)

    if summary().tensor_count <= 0:
        say("FAIL: summary() found no tensors")
        return 2
    ok1, r1 = check(
        "torch.load(cpu) / ckptpeek summary()",
        args.min_torch_ratio,
        "torch.load",
        "ckptpeek",
        {"ckptpeek": summary, "torch.load": torch_load},
        args.blocks,
        args.rounds,
    )

    from ckptpeek.formats.torch_zip import ZipStorageReader, find_prefix
    from ckptpeek.io.source import ByteSource
    from ckptpeek.io.zipdir import read_directory

    warm(many["path"])
    src = ByteSource(many["path"])
    try:
        directory = read_directory(src)
        prefix = find_prefix(directory)
        data = directory.read(f"{prefix}/data.pkl")
        resolver = ZipStorageReader(directory, prefix).persistent_load
        native = _backend.engine("native").run_pickle
        pure = _backend.engine("python").run_pickle
        say(
            f"check 2 pickle: synthetic/{many['file']}: {many['storages']} storages, "
            f"data.pkl {len(data) / 1e3:.1f} kB"
        )
        ok2, r2 = check(
            "pure / native run_pickle (full parse)",
            args.min_native_ratio,
            "pure",
            "native",
            {
                "native": lambda: native(data, persistent_load=resolver),
                "pure": lambda: pure(data, persistent_load=resolver),
            },
            args.blocks,
            max(3, args.rounds // 2),
        )
    finally:
        src.close()

    load = os.getloadavg()[0]
    say(
        f"done in {time.perf_counter() - t_start:.1f}s (load average {load:.2f}); ratios: "
        f"torch.load/summary {r1:.1f}x (floor {args.min_torch_ratio:g}x), "
        f"pure/native {r2:.1f}x (floor {args.min_native_ratio:g}x)"
    )
    failed = [
        n
        for n, ok in (("torch.load(cpu) / summary()", ok1), ("pure / native engine", ok2))
        if not ok
    ]
    if failed:
        say(
            "FAIL: below the floor (twice): " + "; ".join(failed) + ". ckptpeek got slower "
            "relative to its incumbent, or the machine was too busy to measure; rerun with "
            "`python benchmarks/ci_check.py` to see the numbers"
        )
        return 1
    say("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
