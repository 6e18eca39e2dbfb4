"""Run the pytest-benchmark suite and write the markdown report (and the scaling plot).

    python benchmarks/report.py                     # run everything, update README.md
    python benchmarks/report.py --from-json F.json  # only re-render from an earlier run
    python benchmarks/report.py --scale ci,small    # outputs/ corpus scales of the memory groups

Steps: generate the corpus if needed (``corpus.py``), run
``python -m pytest benchmarks --benchmark-json=...`` from the repo root, then print a
report (per group: median, min, rounds and ratios to ckptpeek's native engine and to the
I/O floor where there is one; the targets, met or missed) and put it between
``<!-- report:start -->`` and ``<!-- report:end -->`` in ``benchmarks/README.md``. The
log-log plot of time against tensor count goes to ``benchmarks/scaling.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import re
import shlex
import subprocess
import sys
import time
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
README = HERE / "README.md"
PLOT = HERE / "scaling.png"
START, END = "<!-- report:start -->", "<!-- report:end -->"
sys.path.insert(0, str(HERE))

import corpus  # noqa: E402

VM_METHODS = ("native-full", "python-full", "native-select", "python-select", "stdlib-c-stubs")
VM_LABELS = {
    "native-full": "ckptpeek native `run_pickle` (full)",
    "python-full": "ckptpeek pure `run_pickle` (full)",
    "native-select": "ckptpeek native, `select=(epoch, global_step, callbacks)`",
    "python-select": "ckptpeek pure, `select=(epoch, global_step, callbacks)`",
    "stdlib-c-stubs": "stdlib C `pickle.Unpickler`, stub `find_class`/`persistent_load`",
}
HEADER_METHODS = {
    "ckptpeek-native-summary": '`ckptpeek.open(p, engine="native").summary()`',
    "ckptpeek-python-summary": '`ckptpeek.open(p, engine="python").summary()`',
    "ckptpeek-native-select-summary": '`ckptpeek.open(p, engine="native", select=SUMMARY_KEYS).summary()`',
    "ckptpeek-python-select-summary": '`ckptpeek.open(p, engine="python", select=SUMMARY_KEYS).summary()`',
    "io-floor-zipfile-data.pkl": "`zipfile`: read `data.pkl` only (I/O floor)",
    "torch.load-cpu": '`torch.load(p, map_location="cpu", weights_only=False)`',
    "torch.load-mmap-weights_only": '`torch.load(p, mmap=True, weights_only=True, map_location="cpu")`',
    "torch.load-meta": '`torch.load(p, map_location="meta", weights_only=False)`',
    "lightning-_lazy_load": "`lightning.fabric.utilities.load._lazy_load(p)`",
}
MEMORY_METHODS = {
    "ckptpeek-native-summary": '`ckptpeek.open(p, engine="native").summary()`',
    "ckptpeek-python-summary": '`ckptpeek.open(p, engine="python").summary()`',
    "io-floor-zipfile-data.pkl": "`zipfile`: read `data.pkl` only (I/O floor)",
    "torch.load-cpu": '`torch.load(p, map_location="cpu", weights_only=False)`',
    "torch.load-meta": '`torch.load(p, map_location="meta", weights_only=False)`',
    "torch.load-mmap": '`torch.load(p, mmap=True, weights_only=True, map_location="cpu")`',
    "lightning-_lazy_load": "`lightning.fabric.utilities.load._lazy_load(p)`",
}
STARTUP_METHODS = {
    "python-pass": '`python -c "pass"` (interpreter floor)',
    "import-ckptpeek": '`python -c "import ckptpeek"`',
    "import-torch": '`python -c "import torch"`',
    "import-lightning": '`python -c "import lightning"`',
}
SMALL_LIGHTNING = ("lightning-100", "lightning-1k", "lightning-10k")
ADAM_CKPTS = (*SMALL_LIGHTNING, "lightning-big")


# -- machine -----------------------------------------------------------------------------------


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO).stdout.strip()
    except OSError:
        return ""


def machine(src: pathlib.Path) -> dict[str, Any]:
    cpu = "unknown"
    mem_gb = None
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = int(line.split()[1]) / 1024**2
    except OSError:
        pass
    code = (
        f"import sys, json; sys.path.insert(0, {str(src)!r}); import ckptpeek, torch\n"
        "try:\n import lightning; lv = lightning.__version__\n"
        "except ImportError:\n lv = None\n"
        "print(json.dumps([ckptpeek.__version__, ckptpeek.BACKEND, torch.__version__, lv]))"
    )
    versions = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
        ).stdout
    )
    dirty = [
        ln[3:]
        for ln in _run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                "src",
                "native",
                "setup.py",
            ]
        ).splitlines()
        if ln.strip()
    ]
    return {
        "nproc": _run(["nproc"]) or str(os.cpu_count()),
        "cpu": cpu,
        "mem_gb": mem_gb,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "ckptpeek": versions[0],
        "default_engine": versions[1],
        "torch": versions[2],
        "lightning": versions[3],
        "commit": _run(["git", "rev-parse", "--short", "HEAD"]),
        "dirty": dirty,
        "loadavg_start": os.getloadavg()[0],
    }


# -- running -----------------------------------------------------------------------------------


def _display_path(p: pathlib.Path) -> str:
    """A path for the report without this machine's directories."""
    cache = corpus.make_big_checkpoint.cache_dir()
    try:
        return "$CKPTPEEK_BENCH_CACHE/" + str(p.resolve().relative_to(cache.resolve()))
    except ValueError:
        pass
    try:
        return str(p.resolve().relative_to(REPO))
    except ValueError:
        return p.name


def pytest_args(json_out: pathlib.Path, args: argparse.Namespace) -> list[str]:
    return [
        "-m",
        "pytest",
        "benchmarks",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--benchmark-json={json_out}",
        f"--benchmark-min-rounds={args.min_rounds}",
        f"--benchmark-max-time={args.max_time}",
        "--benchmark-warmup=on",
        "--benchmark-warmup-iterations=1",
        "--benchmark-sort=name",
        "--benchmark-columns=min,median,iqr,rounds",
        *args.pytest_args,
    ]


def snapshot_src() -> pathlib.Path:
    """Copy ``src/`` (with the built extension) to a temp dir: the suite imports that copy,
    so edits made while it runs cannot leak into the measurement."""
    import atexit
    import shutil
    import tempfile

    so = sorted((REPO / "src" / "ckptpeek").glob("_pickle_vm_c*.so"))
    pyx = sorted((REPO / "native").glob("*.pyx")) + sorted((REPO / "native").glob("*.pxi"))
    if so and pyx and max(p.stat().st_mtime for p in pyx) > so[0].stat().st_mtime:
        print(
            "[report] WARNING: native/*.pyx is newer than the built extension; rebuild with "
            "`python setup.py build_ext --inplace`",
            file=sys.stderr,
        )
    dest = pathlib.Path(tempfile.mkdtemp(prefix="ckptpeek-bench-src-"))
    atexit.register(shutil.rmtree, dest, ignore_errors=True)
    shutil.copytree(
        REPO / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    return dest / "src"


def run_suite(
    json_out: pathlib.Path, args: argparse.Namespace, src: pathlib.Path
) -> tuple[float, str]:
    cmd = [sys.executable, *pytest_args(json_out, args)]
    shown = f"CKPTPEEK_BENCH_SCALE={args.scale} python " + " ".join(
        shlex.quote(a) for a in pytest_args(pathlib.Path(_display_path(json_out)), args)
    ).replace("'", "")
    print(f"[report] {shown}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    rc = subprocess.run(
        cmd,
        cwd=REPO,
        env={**os.environ, "CKPTPEEK_BENCH_SRC": str(src), "CKPTPEEK_BENCH_SCALE": args.scale},
    ).returncode
    elapsed = time.perf_counter() - t0
    if rc != 0:
        sys.exit(f"[report] the benchmark suite failed (exit {rc})")
    return elapsed, shown


# -- rendering ---------------------------------------------------------------------------------


def fmt_t(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms" if s < 0.01 else f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def fmt_x(r: float) -> str:
    return f"{r:.2f}x" if r < 10 else f"{r:.1f}x" if r < 100 else f"{r:.0f}x"


def collect(results: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    groups: dict[str, dict[str, dict[str, Any]]] = {}
    for b in results["benchmarks"]:
        groups.setdefault(b["group"], {})[b["extra_info"]["method"]] = b
    return groups


def _median(groups: dict[str, Any], group: str, method: str) -> float | None:
    b = groups.get(group, {}).get(method)
    return b["stats"]["median"] if b else None


def group_table(
    group: str,
    rows: dict[str, dict[str, Any]],
    order: list[str],
    labels: dict[str, str],
    base: str,
    floor: str | None,
) -> list[str]:
    b0 = next(iter(rows.values()))["extra_info"]
    head = (
        f"**{group}**: {b0['tensors']:,} tensors, `data.pkl` "
        f"{b0['data_pkl_bytes'] / 1e3:,.1f} kB, file {b0['file_bytes'] / 1e6:,.2f} MB"
    )
    base_t = rows[base]["stats"]["median"] if base in rows else None
    floor_t = rows[floor]["stats"]["median"] if floor and floor in rows else None
    cols = ["method", "median", "min", "rounds", "÷ ckptpeek native"]
    if floor_t:
        cols.append("÷ I/O floor")
    out = [head, "", "| " + " | ".join(cols) + " |", "|---|" + "---:|" * (len(cols) - 1)]
    for m in order:
        if m not in rows:
            continue
        st = rows[m]["stats"]
        cells = [
            labels.get(m, m),
            fmt_t(st["median"]),
            fmt_t(st["min"]),
            str(st["rounds"]),
            fmt_x(st["median"] / base_t) if base_t else "n/a",
        ]
        if floor_t:
            cells.append(fmt_x(st["median"] / floor_t))
        out.append("| " + " | ".join(cells) + " |")
    return out + [""]


def verdict(value: float | None, target: float, higher_is_better: bool = True) -> str:
    if value is None:
        return "not measured"
    if higher_is_better:
        return "**met**" if value >= target else f"**missed** (by {target / value:.2f}x)"
    return "**met**" if value <= target else f"**missed** (by {value / target:.2f}x)"


def targets(groups: dict[str, Any]) -> list[str]:
    lines = ["| target | file | measured | result |", "|---|---|---:|---|"]

    def ratio(g: str, num: str, den: str) -> float | None:
        a, b = _median(groups, g, num), _median(groups, g, den)
        return a / b if a and b else None

    for name in SMALL_LIGHTNING:
        r = ratio(f"vm {name}", "python-full", "native-full")
        lines.append(
            f"| native full parse >= 10x faster than pure | {name} | "
            f"{fmt_x(r) if r else 'n/a'} | {verdict(r, 10)} |"
        )
    vm_groups = [g for g in groups if g.startswith("vm ")]
    for g in vm_groups:
        r = ratio(g, "stdlib-c-stubs", "native-full")
        lines.append(
            f"| native full parse no slower than stdlib C unpickler with stubs | "
            f"{g[3:]} | {fmt_x(r) if r else 'n/a'} faster | {verdict(r, 1)} |"
        )
    for name in ADAM_CKPTS:
        r = ratio(f"vm {name}", "native-full", "native-select")
        lines.append(
            f"| native selective (epoch/global_step/callbacks) >= 3x faster than "
            f"native full | {name} | {fmt_x(r) if r else 'n/a'} | {verdict(r, 3)} |"
        )
    hg = next((g for g in groups if g.startswith("header ")), None)
    if hg:
        r = ratio(hg, "torch.load-cpu", "ckptpeek-native-summary")
        lines.append(
            f'| `summary()` >= 100x faster than `torch.load(map_location="cpu")` | '
            f"{hg[7:]} | {fmt_x(r) if r else 'n/a'} | {verdict(r, 100)} |"
        )
        r = ratio(hg, "ckptpeek-native-summary", "io-floor-zipfile-data.pkl")
        lines.append(
            f"| `summary()` within 2x of the `data.pkl` I/O floor | {hg[7:]} | "
            f"{fmt_x(r) if r else 'n/a'} the floor | "
            f"{verdict(r, 2, higher_is_better=False)} |"
        )
        r2 = ratio(hg, "torch.load-cpu", "ckptpeek-native-select-summary")
        r3 = ratio(hg, "ckptpeek-native-select-summary", "io-floor-zipfile-data.pkl")
        if r2 and r3:
            lines.append(
                f"| (same two, with `select=SUMMARY_KEYS`) | {hg[7:]} | "
                f"{fmt_x(r2)} / {fmt_x(r3)} the floor | "
                f"{verdict(r2, 100)} / {verdict(r3, 2, higher_is_better=False)} |"
            )
    mg = sorted(
        (g for g in groups if g.startswith("memory ")),
        key=lambda g: next(iter(groups[g].values()))["extra_info"]["file_bytes"],
    )
    nat = [groups[g].get("ckptpeek-native-summary") for g in mg]
    nat = [b["extra_info"] for b in nat if b]
    if len(nat) >= 2:
        lo, hi = nat[0], nat[-1]
        r = hi["delta_hwm"] / max(lo["delta_hwm"], 1)
        lines.append(
            f"| `summary()` memory does not grow with the file (growth of peak RSS, "
            f"largest / smallest file, <= 1.5x) | {fmt_mb(lo['file_bytes'])} -> "
            f"{fmt_mb(hi['file_bytes'])} | {fmt_mb(lo['delta_hwm'])} -> "
            f"{fmt_mb(hi['delta_hwm'])} ({r:.2f}x) | {verdict(r, 1.5, False)} |"
        )
    return lines


def fmt_mb(b: float) -> str:
    return f"{b / 1e6:,.1f} MB"


def startup_table(rows: dict[str, dict[str, Any]]) -> list[str]:
    base = rows.get("import-ckptpeek", {}).get("stats", {}).get("median")
    out = [
        "| command (fresh process) | median | min | rounds | ÷ `import ckptpeek` |",
        "|---|---:|---:|---:|---:|",
    ]
    for m, label in STARTUP_METHODS.items():
        if m in rows:
            st = rows[m]["stats"]
            out.append(
                f"| {label} | {fmt_t(st['median'])} | {fmt_t(st['min'])} | "
                f"{st['rounds']} | {fmt_x(st['median'] / base) if base else 'n/a'} |"
            )
    return out + [""]


def memory_table(group: str, rows: dict[str, dict[str, Any]]) -> list[str]:
    b0 = next(iter(rows.values()))["extra_info"]
    head = (
        f"**{group}**: file {fmt_mb(b0['file_bytes'])}, {b0['storages']:,} storages, "
        f"`data.pkl` {b0['data_pkl_bytes'] / 1e3:,.1f} kB"
    )
    e = {m: r["extra_info"] for m, r in rows.items()}
    base = e.get("ckptpeek-native-summary", {}).get("call_seconds")
    floor = e.get("io-floor-zipfile-data.pkl", {}).get("call_seconds")
    out = [
        head,
        "",
        "| method | peak RSS (VmHWM) | growth during the call | call time in the child "
        "| ÷ ckptpeek native | ÷ I/O floor | child wall time (start-up + imports + call) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for m, label in MEMORY_METHODS.items():
        if m not in e:
            continue
        x = e[m]
        if x.get("note"):
            notes.append(f"{label}: {x['note']}")
            label += " *"
        out.append(
            f"| {label} | {fmt_mb(x['peak_hwm'])} | {fmt_mb(x['delta_hwm'])} | "
            f"{fmt_t(x['call_seconds'])} | "
            f"{fmt_x(x['call_seconds'] / base) if base else 'n/a'} | "
            f"{fmt_x(x['call_seconds'] / floor) if floor else 'n/a'} | "
            f"{fmt_t(rows[m]['stats']['median'])} |"
        )
    out.append("")
    out += [f"\\* {n}" for n in notes] + ([""] if notes else [])
    return out


def memory_overview(groups: dict[str, Any]) -> list[str]:
    mg = sorted(
        (g for g in groups if g.startswith("memory ")),
        key=lambda g: next(iter(groups[g].values()))["extra_info"]["file_bytes"],
    )
    if not mg:
        return []
    cols = [
        "ckptpeek-native-summary",
        "torch.load-cpu",
        "torch.load-mmap",
        "torch.load-meta",
        "lightning-_lazy_load",
    ]
    short = {
        "ckptpeek-native-summary": "ckptpeek native `summary()`",
        "torch.load-cpu": "`torch.load` cpu",
        "torch.load-mmap": "`torch.load` mmap",
        "torch.load-meta": "`torch.load` meta",
        "lightning-_lazy_load": "`_lazy_load`",
    }
    out = [
        "| file | size | " + " | ".join(short[c] for c in cols) + " |",
        "|---|---:|" + "---:|" * len(cols),
    ]
    for g in mg:
        e = {m: r["extra_info"] for m, r in groups[g].items()}
        size = next(iter(e.values()))["file_bytes"]
        out.append(
            f"| {g[7:]} | {fmt_mb(size)} | "
            + " | ".join(f"{fmt_mb(e[c]['delta_hwm'])}" if c in e else "n/a" for c in cols)
            + " |"
        )
    return out + [""]


def plot(groups: dict[str, Any], out: pathlib.Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[report] matplotlib not installed: no plot", file=sys.stderr)
        return False
    panels = [
        ("synthetic torch.save state dicts", "vm statedict-"),
        ("Lightning checkpoints (Adam + scheduler)", "vm lightning-"),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, (title, prefix) in zip(axes, panels):
        for m in VM_METHODS:
            pts = sorted(
                (b["extra_info"]["tensors"], b["stats"]["median"])
                for g, rows in groups.items()
                if g.startswith(prefix) and g != "vm lightning-big"
                for k, b in rows.items()
                if k == m
            )
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("tensors in the pickle")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("median time per parse (s)")
    axes[1].legend(fontsize=8)
    fig.suptitle("ckptpeek pickle VM: time to parse data.pkl vs tensor count (log-log)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return True


def _dirty_note(dirty: list[str]) -> str:
    if len(dirty) <= 5:
        return (
            " plus uncommitted changes to "
            + ", ".join(f"`{d}`" for d in dirty)
            + " (a copy of the working tree taken at the start was measured)"
        )
    return (
        f" plus uncommitted changes to {len(dirty)} tracked files under `src/`, `native/` "
        "(a copy of the working tree taken at the start was measured)"
    )


def render(
    results: dict[str, Any],
    info: dict[str, Any],
    command: str,
    shown: str,
    suite_seconds: float | None,
    manifest: dict[str, Any],
    plotted: bool,
) -> str:
    groups = collect(results)
    order = [f"vm {f['name']}" for f in manifest["files"]]
    lines = [
        f"_Generated by `{command}` on {results.get('datetime', '')[:19].replace('T', ' ')} UTC._",
        "",
        f"**Machine:** {info['nproc']} CPUs (`nproc`), {info['cpu']}"
        + (f", {info['mem_gb']:.0f} GB RAM" if info.get("mem_gb") else "")
        + f"; Python {info['python']}; torch {info['torch']}; lightning {info['lightning']}; "
        f"ckptpeek {info['ckptpeek']} (default engine: {info['default_engine']}) at commit "
        f"`{info['commit']}`"
        + (_dirty_note(info["dirty"]) if info["dirty"] else "")
        + f". Load average (1 min) {info['loadavg_start']:.2f} at the start, "
        f"{info.get('loadavg_end', float('nan')):.2f} at the end.",
        "",
        f"**Suite command** (run from the repo root by `{command}`):",
        "",
        "```sh",
        shown,
        "```",
        "",
        (
            "**Suite runtime:** "
            + (f"{suite_seconds:.0f} s" if suite_seconds else "n/a")
            + f" (corpus generation, when needed, is separate: {manifest.get('gen_seconds', '?')} s "
            "the last time it ran)."
        ),
        "",
        "Times are pytest-benchmark medians over the rounds shown (GC left on; ckptpeek pauses "
        "it itself while parsing). A ratio is the row's median divided by the median of "
        "ckptpeek's native engine (full parse in the VM groups, `summary()` in the header group), "
        "so above 1x means slower than ckptpeek native.",
        "",
        *outputs_note(info),
        "",
        "### Targets",
        "",
        *targets(groups),
        "",
    ]
    hg = [g for g in groups if g.startswith("header ")]
    for g in hg:
        lines += ["### Header read, end to end, warm page cache", ""]
        lines += group_table(
            g,
            groups[g],
            list(HEADER_METHODS),
            HEADER_METHODS,
            "ckptpeek-native-summary",
            "io-floor-zipfile-data.pkl",
        )
    if "startup" in groups:
        lines += [
            "### Process start-up (fresh processes, page cache warm)",
            "",
            *startup_table(groups["startup"]),
        ]
    mg = sorted(
        (g for g in groups if g.startswith("memory ")),
        key=lambda g: next(iter(groups[g].values()))["extra_info"]["file_bytes"],
    )
    if mg:
        lines += [
            "### Peak memory and first-call time in a fresh process, by checkpoint size",
            "",
            "One child process per round and method (page cache warm): it imports what the "
            "method needs, reads `VmHWM` from `/proc/self/status` (baseline), calls the method "
            "once, and reads `VmHWM` again. *Growth during the call* is the largest increase "
            "over the rounds; *peak RSS* includes the imports (torch alone is about 230 MB). "
            "The call time is the median of the rounds' single calls: a first call in a fresh "
            "process, so it includes lazy imports and page faults for new memory, unlike the "
            "warm in-process timings above.",
            "",
            "Growth of peak RSS during the call, by file size:",
            "",
            *memory_overview(groups),
        ]
        for g in mg:
            lines += memory_table(g, groups[g])
    lines += ["### Pickle VM only (`run_pickle` over the same `data.pkl` bytes)", ""]
    skip = set(hg) | set(mg) | {"startup"}
    for g in order + sorted(set(groups) - set(order) - skip):
        if g in groups:
            lines += group_table(g, groups[g], list(VM_METHODS), VM_LABELS, "native-full", None)
    if plotted:
        lines += [f"![time vs tensor count, log-log]({PLOT.name})", ""]
    return "\n".join(lines).rstrip() + "\n"


def outputs_note(info: dict[str, Any]) -> list[str]:
    parts = []
    for o in info.get("outputs", []):
        impls = sorted({e["encoder_impl"] for e in o["experiments"]})
        n = sum(len(e["files"]) for e in o["experiments"])
        parts.append(
            f"`{o['scale']}` ({len(o['experiments'])} experiments, {n} checkpoints, "
            f"{o['total_bytes'] / 1e6:,.0f} MB; encoders: {', '.join(impls)}; written by "
            f"torch {o['torch']}" + (f", timm {o['timm']}" if o.get("timm") else "") + ")"
        )
    if not parts:
        return []
    return ["**outputs/ corpus scales in the memory groups:** " + "; ".join(parts) + "."]


def update_readme(section: str) -> None:
    text = README.read_text()
    block = f"{START}\n{section}{END}"
    if START in text and END in text:
        text = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n## pytest-benchmark suite\n\n" + block + "\n"
    README.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--json",
        type=pathlib.Path,
        help="where pytest-benchmark writes its JSON "
        "(default $CKPTPEEK_BENCH_CACHE/bench-results.json)",
    )
    ap.add_argument("--from-json", type=pathlib.Path, help="re-render an earlier run only")
    ap.add_argument("--min-rounds", type=int, default=10)
    ap.add_argument("--max-time", type=float, default=1.0)
    ap.add_argument("--no-readme", action="store_true", help="print only")
    ap.add_argument(
        "--scale",
        default="ci",
        help="outputs/ corpus scales for the memory groups, comma-separated "
        "(ci, small, large); generated first if missing",
    )
    ap.add_argument("pytest_args", nargs="*", help="passed on to pytest (after --)")
    args = ap.parse_args()

    manifest = corpus.ensure()
    outputs = [corpus.ensure_outputs(sc.strip()) for sc in args.scale.split(",") if sc.strip()]
    command = (
        "python benchmarks/report.py"
        + (f" --scale {args.scale}" if args.scale != "ci" else "")
        + (" -- " + " ".join(args.pytest_args) if args.pytest_args else "")
    )
    meta_path = None
    if args.from_json:
        results = json.loads(args.from_json.read_text())
        meta_path = args.from_json.with_suffix(".meta.json")
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        info = meta.get("machine") or machine(REPO / "src")
        shown, suite_seconds = meta.get("shown", "?"), meta.get("suite_seconds")
        command = meta.get("command", command)
    else:
        json_out = args.json or corpus.make_big_checkpoint.cache_dir() / "bench-results.json"
        json_out.parent.mkdir(parents=True, exist_ok=True)
        src = snapshot_src()
        info = machine(src)
        info["outputs"] = [
            {k: o[k] for k in ("scale", "experiments", "total_bytes", "torch", "timm")}
            for o in outputs
        ]
        suite_seconds, shown = run_suite(json_out, args, src)
        info["loadavg_end"] = os.getloadavg()[0]
        results = json.loads(json_out.read_text())
        json_out.with_suffix(".meta.json").write_text(
            json.dumps(
                {
                    "machine": info,
                    "shown": shown,
                    "suite_seconds": suite_seconds,
                    "command": command,
                },
                indent=2,
            )
        )
    plotted = plot(collect(results), PLOT)
    section = render(results, info, command, shown, suite_seconds, manifest, plotted)
    print(section)
    if not args.no_readme:
        update_readme(section)
        print(
            f"[report] updated {README.relative_to(REPO)}"
            + (f" and {PLOT.relative_to(REPO)}" if plotted else ""),
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
