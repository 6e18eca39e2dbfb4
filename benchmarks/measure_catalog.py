"""The catalog of an outputs/ tree: the old way (torch.load per checkpoint) against
``ckptpeek.catalog.build_catalog`` uncached and cached, and the CLI in a fresh process.

    python benchmarks/corpus.py --scale large --outputs-only   # the tree (once; several GB)
    python benchmarks/measure_catalog.py [ROOT] [--old-rounds 1] [--rounds 5]

ROOT defaults to the `large` tree in $CKPTPEEK_BENCH_CACHE (~/.cache/ckptpeek-bench).
"The old way" is what our users' catalog does per checkpoint (see the background
analysis): read the metadata sidecar and the Hydra config, then ``torch.load`` the whole
checkpoint on the CPU to get epoch, metrics and weight shapes. It imports torch first
(not timed in the in-process figure; the fresh-process row includes it). Warm page cache.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

CACHE = pathlib.Path(os.environ.get("CKPTPEEK_BENCH_CACHE", "~/.cache/ckptpeek-bench")).expanduser()


def old_way(root: pathlib.Path) -> list[dict]:
    """The torch.load-based catalog: sidecar + hydra config + torch.load per checkpoint."""
    import torch
    import yaml

    rows = []
    for ckpt in sorted(root.rglob("*.ckpt")):
        row: dict = {"path": str(ckpt)}
        for side in (ckpt.with_suffix(".metadata.yaml"), ckpt.with_suffix(".metadata.json")):
            if side.exists():
                row["sidecar"] = yaml.safe_load(side.read_text())
        for parent in ckpt.parents:
            cfg = parent / ".hydra" / "config.yaml"
            if cfg.exists():
                row["config"] = yaml.safe_load(cfg.read_text())
                break
            if parent == root:
                break
        data = torch.load(ckpt, map_location="cpu", weights_only=False)
        row["epoch"], row["step"] = data.get("epoch"), data.get("global_step")
        row["callbacks"] = {
            k: {
                kk: (vv.item() if isinstance(vv, torch.Tensor) and vv.numel() == 1 else vv)
                for kk, vv in v.items()
                if not isinstance(vv, torch.Tensor) or vv.numel() == 1
            }
            for k, v in data.get("callbacks", {}).items()
        }
        row["shapes"] = {k: tuple(v.shape) for k, v in data.get("state_dict", {}).items()}
        rows.append(row)
        del data
    return rows


def timed(fn, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default=str(CACHE / "outputs-large-v1" / "outputs"))
    ap.add_argument("--old-rounds", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    root = pathlib.Path(args.root)
    ckpts = sorted(root.rglob("*.ckpt"))
    total = sum(p.stat().st_size for p in ckpts)
    for p in ckpts:  # warm page cache for everyone
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass

    import torch  # noqa: F401 - the old way's import is not part of its in-process time

    import ckptpeek
    from ckptpeek.catalog import build_catalog

    old = timed(lambda: old_way(root), args.old_rounds)
    uncached = timed(lambda: build_catalog(root, cache=False), args.rounds)
    cache_dir = tempfile.mkdtemp(prefix="ckptpeek-catalog-cache-")
    build_catalog(root, cache=cache_dir)  # fill the cache
    cached = timed(lambda: build_catalog(root, cache=cache_dir), args.rounds)

    env = {**os.environ, "CKPTPEEK_CACHE_DIR": cache_dir}
    cli = [sys.executable, "-m", "ckptpeek", "catalog", str(root)]
    subprocess.run(cli, env=env, check=True, capture_output=True)  # warm-up (.pyc)
    fresh_cached = timed(
        lambda: subprocess.run(cli, env=env, check=True, capture_output=True), args.rounds
    )
    fresh_uncached = timed(
        lambda: subprocess.run(cli + ["--no-cache"], env=env, check=True, capture_output=True),
        args.rounds,
    )
    old_fresh = timed(
        lambda: subprocess.run(
            [
                sys.executable,
                "-c",
                f"import sys; sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r}); "
                f"import measure_catalog, pathlib; measure_catalog.old_way(pathlib.Path({str(root)!r}))",
            ],
            check=True,
            capture_output=True,
        ),
        1,
    )

    med = statistics.median
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(
        f"Tree: {len(ckpts)} checkpoints, {total / 1e9:.2f} GB; ckptpeek {ckptpeek.__version__} "
        f"({ckptpeek.BACKEND}), commit {commit}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}\n"
    )
    rows = [
        (
            "old way: sidecar + hydra + torch.load per checkpoint (in-process, torch imported)",
            med(old),
        ),
        ("old way, fresh process (imports torch)", med(old_fresh)),
        ("build_catalog(root, cache=False)", med(uncached)),
        ("build_catalog(root) cached, nothing changed", med(cached)),
        ("`ckptpeek catalog ROOT` fresh process, cached", med(fresh_cached)),
        ("`ckptpeek catalog ROOT --no-cache` fresh process", med(fresh_uncached)),
    ]
    print("| method | median | old way / this |\n|---|---:|---:|")
    for name, t in rows:
        print(f"| {name} | {t * 1e3:,.1f} ms | {med(old) / t:,.1f}x |")
    print(f"\nuncached / cached: {med(uncached) / med(cached):.1f}x")
    print(
        json.dumps(
            {
                "old": old,
                "uncached": uncached,
                "cached": cached,
                "fresh_cached": fresh_cached,
                "fresh_uncached": fresh_uncached,
                "old_fresh": old_fresh,
            }
        )
    )


if __name__ == "__main__":
    main()
