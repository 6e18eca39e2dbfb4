"""Header-read timing: ckptpeek vs torch.load on one Lightning checkpoint, in one run.

Measures, for one checkpoint (default: the one ``make_big_checkpoint.py`` writes,
generated if missing):

(a) warm page cache (the file is read once first), in-process, median of N repeats
    (methods interleaved round-robin so drift hits all of them alike):
    ``ckptpeek.open(p, engine=...).summary()`` with each available engine (native
    and pure; ratios are to the default one), ``torch.load`` with
    ``map_location="cpu"``, ``"meta"``, ``mmap=True`` (``weights_only=True``, falling
    back to ``False`` if that refuses the file), and reading ``data.pkl`` alone with
    ``zipfile`` (the I/O floor: ZIP directory + pickle bytes);
(b) fresh processes: wall time of ``python -c "<imports + load>"`` including
    interpreter start and imports, median of K runs, again interleaved;
(c) bytes ckptpeek read (``ckpt.bytes_read`` after ``summary()``) vs file size.

Prints a markdown table and writes JSON (``--json``; default
``$CKPTPEEK_BENCH_CACHE/header-results.json``). ``--profile`` additionally prints the
top functions of ``ckptpeek.open(p).summary()`` by cumulative time.

    PYTHONPATH=src python benchmarks/measure_header.py [PATH] [--repeats 15] [--fresh 5]
        [--commit REV | --copy-src] [--profile] [--json OUT]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import make_big_checkpoint  # noqa: E402


def snapshot(rev: str) -> pathlib.Path:
    """Extract ``src/`` at git revision ``rev`` into a temp dir: a clean, known tree."""
    import atexit
    import io
    import shutil
    import tarfile
    import tempfile

    dest = pathlib.Path(tempfile.mkdtemp(prefix="ckptpeek-bench-src-"))
    atexit.register(shutil.rmtree, dest, ignore_errors=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", rev, "src"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    _compile(dest / "src")
    return dest / "src"


def copy_src() -> pathlib.Path:
    """Copy the working tree's ``src/`` (including an in-place native build) to a temp dir."""
    import atexit
    import shutil
    import tempfile

    dest = pathlib.Path(tempfile.mkdtemp(prefix="ckptpeek-bench-src-"))
    atexit.register(shutil.rmtree, dest, ignore_errors=True)
    shutil.copytree(REPO / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__"))
    _compile(dest / "src")
    return dest / "src"


def _compile(src: pathlib.Path) -> None:
    """Byte-compile the snapshot, as ``pip install`` does: otherwise every fresh process
    (and PYTHONDONTWRITEBYTECODE environments) would recompile ckptpeek from source."""
    import compileall

    compileall.compile_dir(str(src), quiet=1, force=True)


def machine(rev: str | None) -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        nproc = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout)
    except (OSError, ValueError):
        nproc = os.cpu_count()
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", rev or "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        dirty = (
            []
            if rev
            else [
                ln[3:]
                for ln in subprocess.run(
                    ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                    capture_output=True,
                    text=True,
                ).stdout.splitlines()
                if ln.strip()
            ]
        )
    except OSError:
        commit, dirty = "unknown", []
    import torch

    import ckptpeek

    try:
        import lightning

        lightning_version = lightning.__version__
    except ImportError:
        lightning_version = None
    return {
        "nproc": nproc,
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "lightning": lightning_version,
        "ckptpeek": ckptpeek.__version__,
        "ckptpeek_default_backend": ckptpeek.BACKEND,
        "commit": commit,
        "source": "git archive snapshot" if rev else "working tree",
        "tracked_changes": dirty,
        "loadavg_at_start": os.getloadavg(),
    }


def warm_file(path: pathlib.Path) -> None:
    with open(path, "rb") as f:
        while f.read(16 << 20):
            pass


def pickle_member(path: pathlib.Path) -> zipfile.ZipInfo:
    with zipfile.ZipFile(path) as z:
        return next(
            i
            for i in z.infolist()
            if i.filename.endswith("/data.pkl") and i.filename.count("/") == 1
        )


def bench_inprocess(methods: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in methods}
    for fn in methods.values():  # one untimed warm-up each (imports, lazy inits)
        fn()
    for _ in range(repeats):
        for name, fn in methods.items():
            gc.collect()
            t0 = time.perf_counter()
            result = fn()
            times[name].append(time.perf_counter() - t0)
            del result
    return times


def bench_fresh(codes: dict[str, str], runs: int, env: dict[str, str]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in codes}
    for code in codes.values():  # one untimed run each (.pyc compilation, disk cache)
        subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    for _ in range(runs):
        for name, code in codes.items():
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, "-c", code],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            times[name].append(time.perf_counter() - t0)
    return times


def stats(ts: list[float]) -> dict[str, Any]:
    return {
        "median_s": statistics.median(ts),
        "min_s": min(ts),
        "max_s": max(ts),
        "n": len(ts),
        "all_s": ts,
    }


def fmt_t(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 10 else f"{s:.2f} s"


def profile(path: pathlib.Path, top: int = 10) -> str:
    import cProfile
    import io
    import pstats

    import ckptpeek

    pr = cProfile.Profile()
    pr.enable()
    with ckptpeek.open(path) as c:
        c.summary()
    pr.disable()
    out = io.StringIO()
    pstats.Stats(pr, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", help="checkpoint (default: make_big_checkpoint.py's)")
    ap.add_argument("--repeats", type=int, default=15, help="in-process repeats per method")
    ap.add_argument("--fresh", type=int, default=5, help="fresh-process runs per command")
    ap.add_argument("--json", help="output JSON path")
    ap.add_argument("--profile", action="store_true", help="also cProfile ckptpeek once")
    ap.add_argument(
        "--commit",
        metavar="REV",
        help="measure ckptpeek's src/ as of git REV (extracted to a temp dir) "
        "instead of the working tree",
    )
    ap.add_argument(
        "--copy-src",
        action="store_true",
        help="measure a copy of the working tree's src/ (with the built native "
        "extension) taken at start, so concurrent edits cannot leak in",
    )
    args = ap.parse_args()
    src = snapshot(args.commit) if args.commit else copy_src() if args.copy_src else REPO / "src"
    sys.path.insert(0, str(src))

    path = pathlib.Path(args.path) if args.path else make_big_checkpoint.make()
    path = path.resolve()
    json_out = (
        pathlib.Path(args.json)
        if args.json
        else (make_big_checkpoint.cache_dir() / "header-results.json")
    )
    info = machine(args.commit)

    import torch

    import ckptpeek

    file_size = path.stat().st_size
    member = pickle_member(path)
    warm_file(path)

    # -- (c) bytes read -----------------------------------------------------------------
    with ckptpeek.open(path) as c:
        summ = c.summary()
        bytes_read = c.bytes_read
    tensor_count = summ.tensor_count

    # -- (a) warm, in-process ------------------------------------------------------------
    mmap_weights_only = True
    mmap_note = None
    try:
        torch.load(path, mmap=True, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - reported, then the fallback is measured
        mmap_weights_only = False
        mmap_note = (
            f"weights_only=True refused the file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}); measured with weights_only=False"
        )

    def ck(engine: str) -> Callable[[], Any]:
        def run() -> Any:
            with ckptpeek.open(path, engine=engine) as c:
                return c.summary()

        return run

    from ckptpeek.unpickle import engine as _backend

    engines = [e for e in ("native", "python") if e in _backend._ENGINES]
    ck_key = {e: f'ckptpeek.open(p, engine="{e}").summary()' for e in engines}
    base_key = ck_key[ckptpeek.BACKEND]

    def zip_floor() -> bytes:
        with zipfile.ZipFile(path) as z:
            return z.read(member.filename)

    warm_methods: dict[str, Callable[[], Any]] = {
        **{ck_key[e]: ck(e) for e in engines},
        'torch.load(p, map_location="cpu", weights_only=False)': lambda: torch.load(
            path, map_location="cpu", weights_only=False
        ),
        'torch.load(p, map_location="meta", weights_only=False)': lambda: torch.load(
            path, map_location="meta", weights_only=False
        ),
        f'torch.load(p, mmap=True, weights_only={mmap_weights_only}, map_location="cpu")': lambda: (
            torch.load(path, mmap=True, weights_only=mmap_weights_only, map_location="cpu")
        ),
        "zipfile: read data.pkl only (I/O floor)": zip_floor,
    }
    warm = {k: stats(v) for k, v in bench_inprocess(warm_methods, args.repeats).items()}

    # -- (b) fresh processes ---------------------------------------------------------------
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(src)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    p = repr(str(path))
    fresh_codes = {
        "python -c pass (interpreter floor)": "pass",
        "import ckptpeek; ckptpeek.open(p).summary()": f"import ckptpeek; ckptpeek.open({p}).summary()",
        "import ckptpeek; ckptpeek.open(p, engine='python').summary()": f"import ckptpeek; ckptpeek.open({p}, engine='python').summary()",
        "ckptpeek FILE (the CLI: same facts, printed; no pydantic)": f"import runpy, sys; sys.argv = ['ckptpeek', {p}]; "
        f"runpy.run_module('ckptpeek', run_name='__main__')",
        "import ckptpeek; open(p, select=[epoch, global_step, callbacks])": f"import ckptpeek; c = ckptpeek.open({p}, select=['epoch', 'global_step', "
        f"'callbacks']); c.get('epoch'); c.get('callbacks')",
        "import torch; torch.load(p, map_location='cpu', weights_only=False)": f"import torch; torch.load({p}, map_location='cpu', weights_only=False)",
        "import torch; torch.load(p, map_location='meta', weights_only=False)": f"import torch; torch.load({p}, map_location='meta', weights_only=False)",
        "import torch (import only)": "import torch",
        "import ckptpeek (import only)": "import ckptpeek",
    }
    torch_free = (
        subprocess.run(
            [
                sys.executable,
                "-c",
                f"import sys, ckptpeek; ckptpeek.open({p}).summary(); "
                "print('torch' in sys.modules)",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        == "False"
    )
    fresh = {k: stats(v) for k, v in bench_fresh(fresh_codes, args.fresh, env).items()}

    info["loadavg_at_end"] = os.getloadavg()

    # -- report ----------------------------------------------------------------------------
    ck_warm = warm[base_key]["median_s"]
    ck_fresh = fresh["import ckptpeek; ckptpeek.open(p).summary()"]["median_s"]
    for v in warm.values():
        v["ratio_vs_ckptpeek"] = v["median_s"] / ck_warm
    for v in fresh.values():
        v["ratio_vs_ckptpeek"] = v["median_s"] / ck_fresh

    cpu_ratio_warm = warm['torch.load(p, map_location="cpu", weights_only=False)'][
        "ratio_vs_ckptpeek"
    ]
    cpu_ratio_fresh = fresh["import torch; torch.load(p, map_location='cpu', weights_only=False)"][
        "ratio_vs_ckptpeek"
    ]
    targets = {
        "bytes_read_lt_1pct": {
            "value": bytes_read / file_size,
            "target": 0.01,
            "met": bytes_read / file_size < 0.01,
        },
        "warm_ge_5x_vs_torch_cpu": {
            "value": cpu_ratio_warm,
            "target": 5.0,
            "met": cpu_ratio_warm >= 5.0,
        },
        "fresh_ge_30x_vs_torch_cpu": {
            "value": cpu_ratio_fresh,
            "target": 30.0,
            "met": cpu_ratio_fresh >= 30.0,
        },
    }

    lines = [
        f"Checkpoint: `{path.name}`: {file_size / 1e6:.1f} MB, {tensor_count} tensors, "
        f"`data.pkl` {member.file_size / 1e3:.1f} kB",
        f"Machine: {info['nproc']} CPU ({info['cpu']}), Python {info['python']}, "
        f"torch {info['torch']}, lightning {info['lightning']}, ckptpeek {info['ckptpeek']} "
        f"(default backend: {info['ckptpeek_default_backend']}), commit {info['commit']} "
        f"({info['source']})"
        + (
            f" + uncommitted changes to {', '.join(info['tracked_changes'])}"
            if info["tracked_changes"]
            else ""
        )
        + f"; load average at start/end: {info['loadavg_at_start'][0]:.2f} / "
        f"{info['loadavg_at_end'][0]:.2f}",
        "",
        f"**(a) Warm page cache, in-process, median of {args.repeats}**",
        "",
        "| method | median | min | torch / ckptpeek |",
        "|---|---:|---:|---:|",
    ]
    for k, v in warm.items():
        lines.append(
            f"| `{k}` | {fmt_t(v['median_s'])} | {fmt_t(v['min_s'])} | "
            f"{v['ratio_vs_ckptpeek']:.1f}x |"
        )
    lines += [
        "",
        f"**(b) Fresh process (`python -c ...`, wall time incl. interpreter start and imports), "
        f"median of {args.fresh}**",
        "",
        "| command | median | min | torch / ckptpeek |",
        "|---|---:|---:|---:|",
    ]
    for k, v in fresh.items():
        lines.append(
            f"| `{k}` | {fmt_t(v['median_s'])} | {fmt_t(v['min_s'])} | "
            f"{v['ratio_vs_ckptpeek']:.1f}x |"
        )
    lines += [
        "",
        f"ckptpeek process imported torch: {'no' if torch_free else 'YES'}",
        "",
        "**(c) Bytes read**",
        "",
        "| quantity | bytes | fraction of file |",
        "|---|---:|---:|",
        f"| file size | {file_size:,} | 100% |",
        f"| `data.pkl` (uncompressed member size) | {member.file_size:,} | "
        f"{member.file_size / file_size:.4%} |",
        f"| ckptpeek `bytes_read` after `summary()` | {bytes_read:,} | "
        f"{bytes_read / file_size:.4%} |",
        "",
    ]
    if mmap_note:
        lines += [f"Note: {mmap_note}", ""]
    lines += ["**Targets**", ""]
    lines.append(
        f"- bytes read < 1% of file: {bytes_read / file_size:.4%} -> "
        f"{'met' if targets['bytes_read_lt_1pct']['met'] else 'MISSED'}"
    )
    lines.append(
        f'- >= 5x faster than torch.load(map_location="cpu"), warm: '
        f"{cpu_ratio_warm:.1f}x -> "
        f"{'met' if targets['warm_ge_5x_vs_torch_cpu']['met'] else 'MISSED'}"
    )
    lines.append(
        f'- >= 30x faster than torch.load(map_location="cpu"), fresh process: '
        f"{cpu_ratio_fresh:.1f}x -> "
        f"{'met' if targets['fresh_ge_30x_vs_torch_cpu']['met'] else 'MISSED'}"
    )
    report = "\n".join(lines)
    print(report)

    result = {
        "checkpoint": {
            "path": str(path),
            "file_size": file_size,
            "data_pkl_member": member.filename,
            "data_pkl_size": member.file_size,
            "tensor_count": tensor_count,
        },
        "machine": info,
        "bytes_read": bytes_read,
        "bytes_read_fraction": bytes_read / file_size,
        "warm_inprocess": warm,
        "fresh_process": fresh,
        "ckptpeek_process_imported_torch": not torch_free,
        "ckptpeek_src": str(src),
        "ckptpeek_module": ckptpeek.__file__,
        "mmap_weights_only": mmap_weights_only,
        "mmap_note": mmap_note,
        "targets": targets,
        "markdown": report,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if args.profile:
        prof = profile(path)
        result["profile"] = prof
        print("\n" + prof)
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(result, indent=2))
    print(f"\nJSON: {json_out}", file=sys.stderr)


if __name__ == "__main__":
    main()
