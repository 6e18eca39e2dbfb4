"""``ckptpeek scan``: verdicts, globals, anomalies, JSON and exit codes, both engines; and
no entry point ever runs a payload (one that would create a file never does)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pathlib
import subprocess
import sys

import pytest
from _builders import Member, Pickle, small_checkpoint, small_pickle, torch_zip

import ckptpeek
from ckptpeek.scan import classify, scan
from ckptpeek.scan_cli import main as scan_main

DATA = pathlib.Path(__file__).parent / "data"
FIXTURES = ["lightning_tiny.ckpt", "state_dict.pt", "legacy_state_dict.pt", "tiny.safetensors"]


def _payload(module: str, name: str, arg: str = "x") -> bytes:
    """A pickle whose root is ``module.name(arg)``: REDUCE of a global, never run."""
    p = Pickle().proto(2).glob(module, name).str(arg).tuple1().reduce().stop()
    return bytes(p)


def _write(tmp_path: pathlib.Path, name: str, data: bytes) -> pathlib.Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = scan_main(argv)
    return code, out.getvalue()


@pytest.mark.parametrize("name", FIXTURES)
def test_real_files_are_safe(engine: str, name: str) -> None:
    report = scan(DATA / name, engine=engine)
    assert report.verdict == "safe", report.to_dict()
    assert report.anomalies == [] and report.error is None
    assert all(kind == "safe" for _m, _n, kind in report.globals)


@pytest.mark.parametrize(
    ("module", "name", "verdict"),
    [
        ("os", "system", "dangerous"),
        ("posix", "system", "dangerous"),
        ("subprocess", "Popen", "dangerous"),
        ("builtins", "eval", "dangerous"),
        ("builtins", "getattr", "dangerous"),
        ("runpy", "_run_code", "dangerous"),
        ("torch.serialization", "load", "dangerous"),
        ("mypackage.models", "Net", "unknown"),
    ],
)
def test_payload_in_data_pkl(
    engine: str, tmp_path: pathlib.Path, module: str, name: str, verdict: str
) -> None:
    path = _write(tmp_path, "evil.ckpt", torch_zip(_payload(module, name)))
    report = scan(path, engine=engine)
    assert report.verdict == verdict
    assert (module, name, verdict) in report.globals


def test_payload_in_an_extra_pickle_member(engine: str, tmp_path: pathlib.Path) -> None:
    evil = Member("archive/extra/evil.pkl", _payload("os", "system"))
    path = _write(tmp_path, "extra.ckpt", torch_zip(small_pickle(), extra=[evil]))
    report = scan(path, engine=engine)
    assert report.verdict == "unknown"  # torch never unpickles it; a reviewer is told
    assert any(
        "archive/extra/evil.pkl" in a and "os.system (dangerous)" in a for a in report.anomalies
    ), report.anomalies


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        (b"(ios\nsystem\nS'x'\n.", "INST (protocol 0 object creation)"),
        (b"\x80\x02\x82\x01N\x85R.", "EXT1"),
        (b"\x80\x02N.junk", "4 bytes after STOP"),
        (b"\x80\x02Nq\x01Nq\x01\x86.", "memo slot 1 overwritten"),
    ],
)
def test_opcode_anomalies(engine: str, tmp_path: pathlib.Path, body: bytes, expect: str) -> None:
    path = _write(tmp_path, "odd.ckpt", torch_zip(body))
    report = scan(path, engine=engine)
    assert report.verdict != "safe"
    assert any(expect in a for a in report.anomalies) or report.error is not None, report.to_dict()


def test_unreadable_is_refused_never_safe(engine: str, tmp_path: pathlib.Path) -> None:
    ckpt = small_checkpoint()
    for data in (b"", b"not a checkpoint", ckpt[: len(ckpt) // 2]):
        report = scan(_write(tmp_path, "bad.ckpt", data), engine=engine)
        assert report.verdict == "refused" and report.error is not None


def test_cli_exit_codes_and_json(engine: str, tmp_path: pathlib.Path) -> None:
    good = DATA / "lightning_tiny.ckpt"
    bad = _write(tmp_path, "evil.pt", torch_zip(_payload("os", "system")))
    assert _run([str(good), "--engine", engine])[0] == 0
    code, out = _run(["--json", "--engine", engine, str(good), str(bad), str(tmp_path / "no")])
    assert code == 1
    rows = json.loads(out)
    assert [r["verdict"] for r in rows] == ["safe", "dangerous", "error"]
    assert {"module": "os", "name": "system", "class": "dangerous"} in rows[1]["globals"]
    assert set(rows[0]) == {"path", "format", "verdict", "globals", "anomalies", "error"}
    with pytest.raises(SystemExit) as exc:
        _run([])
    assert exc.value.code == 2


def test_output_is_terminal_safe(engine: str, tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "esc.pt", torch_zip(_payload("evil\x1b[2J", "name\x07")))
    code, out = _run([str(path), "--engine", engine])
    assert code == 1
    assert "\x1b" not in out and "\x07" not in out
    assert "evil\\x1b[2J.name\\x07" in out


def test_classify() -> None:
    assert classify("os.path", "join", False) == "dangerous"  # any name of os
    assert classify("collections", "OrderedDict", True) == "safe"
    assert classify("builtins", "eval", True) == "dangerous"  # the list wins over a registry
    assert classify("my.Thing", "X", False) == "unknown"


def test_scan_is_a_subcommand() -> None:
    from ckptpeek.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["scan", str(DATA / "lightning_tiny.ckpt")]) == 0
    assert "SAFE" in out.getvalue()


# -- nothing runs ------------------------------------------------------------------------


def _file_creating_payloads(target: pathlib.Path) -> dict[str, bytes]:
    """Pickles that, run by CPython's unpickler, would create ``target``."""
    t = str(target)
    return {
        "os.system": _payload("os", "system", f"touch {t}"),
        "builtins.open": bytes(
            Pickle().proto(2).glob("builtins", "open").str(t).str("w").tuple2().reduce().stop()
        ),
        "subprocess.call": bytes(
            Pickle().proto(2).glob("subprocess", "call").str("touch").str(t).tuple2()
            .tuple1().reduce().stop()
        ),
        "stack_global": bytes(
            Pickle().proto(4).stack_global("os", "system").str(f"touch {t}").tuple1().reduce()
            .stop()
        ),
    }  # fmt: skip


_ENTRY_POINTS = [
    lambda p, e: ckptpeek.open(p, engine=e).close(),
    lambda p, e: ckptpeek.load_checkpoint(p, engine=e, fallback=None),
    lambda p, e: ckptpeek.open(p, engine=e).summary(),
    lambda p, e: ckptpeek.open(p, engine=e).globals(),
    lambda p, e: ckptpeek.open(p, engine=e, select=ckptpeek.SUMMARY_KEYS).summary(),
    lambda p, e: [t.numpy() for _k, t in ckptpeek.open(p, engine=e).tensors()],
    lambda p, e: scan(p, engine=e),
]


def test_no_entry_point_runs_a_payload(engine: str, tmp_path: pathlib.Path) -> None:
    from ckptpeek.cli import main as cli_main

    target = tmp_path / "pwned"
    for label, body in _file_creating_payloads(target).items():
        for kind, data in (("zip", torch_zip(body)), ("raw", body)):
            path = _write(tmp_path, f"{label}-{kind}.pt", data)
            for call in _ENTRY_POINTS:
                with contextlib.suppress(ckptpeek.CheckpointError):
                    call(path, engine)
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                for argv in ([], ["--tree"], ["--json"], ["--globals"], ["--strict"]):
                    cli_main([*argv, "--engine", engine, str(path)])
                cli_main(["scan", "--engine", engine, str(path)])
            assert not target.exists(), (label, kind)


def test_no_payload_runs_in_a_fresh_process(tmp_path: pathlib.Path) -> None:
    """The same through the installed command, in a process of its own."""
    target = tmp_path / "pwned"
    paths = []
    for label, body in _file_creating_payloads(target).items():
        paths.append(str(_write(tmp_path, f"{label}.pt", torch_zip(body))))
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-m", "ckptpeek", "scan", *paths],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.count("DANGEROUS") >= len(paths)
    assert not target.exists()


def test_named_globals_decodes_without_running() -> None:
    from ckptpeek.unpickle.peek import named_globals

    assert named_globals(_payload("os", "system")) == [("os", "system")]
    stack = bytes(Pickle().proto(4).stack_global("posix", "system").stop())
    assert named_globals(stack) == [("posix", "system")]
    assert named_globals(b"\x80\x02cos\nsystem\n" + b"\x00junk") == [("os", "system")]
    assert named_globals(b"\x10\x00\x00\x00\x00\x00\x00\x00{}") == []  # a safetensors start


def test_leading_pickle_of_a_non_pickle_format_is_reported(tmp_path: pathlib.Path) -> None:
    """torch.load unpickles any non-ZIP file from byte 0: those globals count."""
    from ckptpeek.scan import ScanReport, _scan_leading_pickle

    report = ScanReport("x")
    _scan_leading_pickle(report, str(_write(tmp_path, "x.safetensors", _payload("os", "system"))))
    assert report.verdict == "dangerous" and ("os", "system", "dangerous") in report.globals
    report = ScanReport("y")
    _scan_leading_pickle(report, str(DATA / "tiny.safetensors"))
    assert report.verdict == "safe"


def test_scan_reads_no_pickle_member_past_the_limit(tmp_path, engine, monkeypatch) -> None:
    """An extra ``*.pkl`` member larger than ``max_pickle_bytes`` is reported, not read
    (bytes read counted); one within the limit is read and its globals reported."""
    from ckptpeek import scan as scan_module

    sources: list[ckptpeek.io.source.ByteSource] = []

    class Counted(scan_module.ByteSource):
        def __init__(self, *args: object) -> None:
            super().__init__(*args)
            sources.append(self)

    monkeypatch.setattr(scan_module, "ByteSource", Counted)
    big = _payload("os", "system", "x" * (2 << 20))  # 2 MiB
    path = _write(
        tmp_path, "extra.pt", torch_zip(small_pickle(), extra=[Member("archive/extra.pkl", big)])
    )
    limits = ckptpeek.DEFAULT_LIMITS._replace(max_pickle_bytes=1 << 20)
    report = scan(path, engine=engine, limits=limits)
    assert report.verdict == "unknown" and report.error is None
    assert f"archive/extra.pkl: {len(big)} bytes, over the limit of {1 << 20}: not scanned" in (
        report.anomalies
    )
    assert sum(s.bytes_read for s in sources) < 128 << 10  # the end records, directory, headers
    sources.clear()
    report = scan(path, engine=engine)  # the default limit: read, and its global named
    assert report.verdict == "unknown"
    assert "archive/extra.pkl: names os.system (dangerous)" in report.anomalies
    assert sum(s.bytes_read for s in sources) > len(big)
