"""Run the fuzz harnesses for a while each; exit 1 on any finding.

    python fuzz/run.py --seconds 20                 # every harness, 20 s each (CI)
    python fuzz/run.py --seconds 600 --harness pickle --jobs 1

Each harness runs in its own subprocess (libFuzzer under atheris) on its corpus
``<state>/corpus/<harness>`` (kept between runs, so coverage accumulates) plus the seeds
``<state>/seeds/<harness>`` (written by make_corpus.py when missing), with
``-timeout`` per input and an address-space limit (``--memory-mb``, RLIMIT_AS). The
state directory is ``~/.cache/ckptpeek-fuzz`` (``CKPTPEEK_FUZZ_DIR``). A finding - an
escaped exception, a disagreement, a timeout or a blow-up - is saved as
``<state>/findings/<harness>-crash-<sha1>`` (libFuzzer's ``-artifact_prefix``) and its
log as ``<state>/logs/<harness>.log``; replay it with ``python fuzz/fuzz_<harness>.py FILE``.

Prints, per harness: executions/s, total executions, corpus size, findings.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import os
import pathlib
import re
import subprocess
import sys
import time

import make_corpus

HERE = pathlib.Path(__file__).resolve().parent
HARNESSES = make_corpus.HARNESSES
#: per-harness libFuzzer flags: inputs up to the size of the real fixtures they start from
MAX_LEN = {
    "zipdir": 16384,
    "pickle": 8192,
    "open": 16384,
    "safetensors": 4096,
    "catalog": 4096,
    "cli": 16384,
    "dirs": 16384,
    "torch": 16384,
}
#: harnesses that need an optional package (not in the test extra): skipped without it
REQUIRES = {"torch": "torch"}
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.M)
_FINDING = re.compile(r"Test unit written to (\S+)")


def run_one(
    harness: str, seconds: int, state: pathlib.Path, timeout: int, memory_mb: int, extra: list[str]
) -> dict[str, object]:
    corpus = state / "corpus" / harness
    seeds = state / "seeds" / harness
    findings = state / "findings"
    logs = state / "logs"
    for d in (corpus, findings, logs):
        d.mkdir(parents=True, exist_ok=True)
    before = set(findings.glob(f"{harness}-*"))
    cmd = [
        sys.executable,
        str(HERE / f"fuzz_{harness}.py"),
        str(corpus),
        str(seeds),
        f"-max_total_time={seconds}",
        f"-timeout={timeout}",
        f"-max_len={MAX_LEN[harness]}",
        f"-rss_limit_mb={memory_mb}",
        f"-artifact_prefix={findings}/{harness}-",
        "-print_final_stats=1",
        *extra,
    ]
    env = dict(os.environ, CKPTPEEK_FUZZ_AS_MB=str(memory_mb))
    start = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, errors="replace")
    elapsed = time.monotonic() - start
    log = proc.stderr + proc.stdout
    (logs / f"{harness}.log").write_text(log)
    stats = {k: int(v) for k, v in _STAT.findall(log)}
    new = sorted(set(findings.glob(f"{harness}-*")) - before)
    written = [pathlib.Path(p) for p in _FINDING.findall(log)]
    found = sorted(set(new) | {p for p in written if p.exists()})
    # a harness that could not start (or died without libFuzzer's stats) is a failure too
    broken = not stats and not found
    return {
        "harness": harness,
        "rc": proc.returncode,
        "seconds": elapsed,
        "execs": stats.get("number_of_executed_units", 0),
        "execs_per_sec": stats.get("average_exec_per_sec", 0),
        "corpus": sum(1 for _ in corpus.iterdir()),
        "findings": found,
        "broken": broken,
        "tail": "\n".join(
            [line for line in log.strip().splitlines() if "Instrumenting" not in line][-25:]
        ),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=20, help="per harness (default 20)")
    ap.add_argument("--harness", action="append", choices=HARNESSES, help="repeatable; default all")
    ap.add_argument("--jobs", type=int, default=1, help="harnesses run at once (default 1)")
    ap.add_argument("--timeout", type=int, default=10, help="seconds per input (default 10)")
    ap.add_argument("--memory-mb", type=int, default=2048, help="per process (default 2048)")
    ap.add_argument("--state", type=pathlib.Path, default=make_corpus.state_dir())
    ap.add_argument("libfuzzer", nargs="*", help="more libFuzzer flags, after --")
    args = ap.parse_args()
    harnesses = tuple(args.harness or HARNESSES)
    for h in harnesses:
        if h in REQUIRES and importlib.util.find_spec(REQUIRES[h]) is None:
            print(f"{h}: skipped ({REQUIRES[h]} is not installed)")
    harnesses = tuple(
        h for h in harnesses if h not in REQUIRES or importlib.util.find_spec(REQUIRES[h])
    )
    missing = tuple(h for h in harnesses if not (args.state / "seeds" / h).is_dir())
    if missing:
        make_corpus.write(args.state / "seeds", missing)
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        results = list(
            pool.map(
                lambda h: run_one(
                    h, args.seconds, args.state, args.timeout, args.memory_mb, args.libfuzzer
                ),
                harnesses,
            )
        )
    print(f"{'harness':<12} {'exec/s':>8} {'execs':>10} {'corpus':>7} {'findings':>8}  time")
    failed = False
    for r in results:
        findings: list[pathlib.Path] = r["findings"]  # type: ignore[assignment]
        print(
            f"{r['harness']:<12} {r['execs_per_sec']:>8} {r['execs']:>10} {r['corpus']:>7} "
            f"{len(findings):>8}  {r['seconds']:.0f}s"
        )
        if findings or r["broken"]:
            failed = True
    for r in results:
        if r["findings"] or r["broken"]:
            what = "could not run" if r["broken"] else "found"
            print(f"\n--- {r['harness']} {what} (rc {r['rc']}):")
            for f in r["findings"]:  # type: ignore[attr-defined]
                print(f"  {f}  (replay: python fuzz/fuzz_{r['harness']}.py {f})")
            print(r["tail"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
