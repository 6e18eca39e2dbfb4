"""Header-only reads of a legacy torch.save file and a safetensors file, beside the
incumbents (torch.load, safetensors.safe_open / load_file), in one run.

    python benchmarks/measure_formats.py [--repeats 15]

Writes two ~100 MB files once into $CKPTPEEK_BENCH_CACHE (default
~/.cache/ckptpeek-bench) and prints a markdown table: median time (warm page cache,
in-process, round-robin) and bytes read (ckptpeek's own count; torch reads the file).
"""

from __future__ import annotations

import argparse
import gc
import os
import pathlib
import statistics
import subprocess
import sys
import time

CACHE = pathlib.Path(os.environ.get("CKPTPEEK_BENCH_CACHE", "~/.cache/ckptpeek-bench")).expanduser()


def make_files() -> tuple[pathlib.Path, pathlib.Path]:
    import torch
    from safetensors.torch import save_file

    CACHE.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    state = {f"layers.{i}.weight": torch.randn(512, 1024, generator=g) for i in range(48)}
    state.update({f"layers.{i}.bias": torch.randn(1024, generator=g) for i in range(48)})
    legacy = CACHE / "formats-legacy-100mb.pt"
    if not legacy.exists():
        torch.save(
            {"epoch": 3, "global_step": 1200, "state_dict": state},
            legacy,
            _use_new_zipfile_serialization=False,
        )
    st = CACHE / "formats-100mb.safetensors"
    if not st.exists():
        save_file(state, st, metadata={"format": "pt", "epoch": "3"})
    return legacy, st


def bench(methods: dict[str, object], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in methods}
    for fn in methods.values():
        fn()  # warm-up: imports, page cache
    for _ in range(repeats):
        for name, fn in methods.items():
            gc.collect()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    import ckptpeek

    legacy, st = make_files()

    def ck(path, engine):
        def run():
            with ckptpeek.open(path, engine=engine) as c:
                for _, t in c.tensors():
                    _ = (t.shape, t.dtype)  # touch the metadata a user reads
                return c.bytes_read

        return run

    def st_open():
        with safe_open(st, framework="numpy") as f:
            for k in f.keys():
                s = f.get_slice(k)
                (s.get_shape(), s.get_dtype())

    rows = []
    for label, path, methods in (
        (
            "legacy torch.save",
            legacy,
            {
                "ckptpeek.open + list tensors (native)": ck(legacy, "native"),
                "ckptpeek.open + list tensors (python)": ck(legacy, "python"),
                'torch.load(map_location="cpu")': lambda: torch.load(legacy, map_location="cpu"),
                'torch.load(map_location="meta")': lambda: torch.load(legacy, map_location="meta"),
            },
        ),
        (
            "safetensors",
            st,
            {
                "ckptpeek.open + list tensors (native)": ck(st, "native"),
                "safetensors.safe_open + keys/get_slice": st_open,
                "safetensors.torch.load_file": lambda: load_file(st),
            },
        ),
    ):
        med = bench(methods, args.repeats)
        first = next(iter(med))
        with ckptpeek.open(path) as c:
            list(c.tensors())
            read = c.bytes_read
        size = path.stat().st_size
        rows.append(
            f"\n**{label}** ({size / 1e6:.1f} MB; ckptpeek read {read:,} bytes = "
            f"{100 * read / size:.3f}% of the file)\n"
        )
        rows.append("| method | median | ratio to ckptpeek (native) |\n|---|---:|---:|")
        for name, t in med.items():
            rows.append(f"| `{name}` | {t * 1e3:.2f} ms | {t / med[first]:.1f}x |")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(
        f"ckptpeek {ckptpeek.__version__} ({ckptpeek.BACKEND}), commit {commit}, "
        f"torch {torch.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
