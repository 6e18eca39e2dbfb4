"""Whatever a file holds or is named, the CLI prints it safely and fails in one line.

Each hostile input is made here by a generator: a pickle whose keys, values and global
names hold ESC sequences (set the window title, clear the screen, cursor up + erase
line), newlines that fake a line, lone surrogates and ints too long for ``str()``, in a
file whose name holds them too. Every output path (summary, ``--tree``, ``--json``,
``--globals``, ``scan``, ``scan --json``, error lines) is checked in-process on both
engines and, for the encoding, in a real process with a strict UTF-8 or ASCII stdout.
"""

from __future__ import annotations

import json
import os
import pathlib
import struct
import subprocess
import sys

import pytest
from _builders import Member, Pickle, build_zip, torch_zip

import ckptpeek
from ckptpeek import cli, printable, scan_cli
from ckptpeek._text import JSON_MAX_DEPTH, int_text, json_safe
from ckptpeek.errors import error

ESC = ["\x1b]0;pwned\x07", "\x1b[2J", "\x1b[1A\x1b[2K", "\x9b31m"]  # title, clear, erase, C1 CSI
FAKE = "ok\nModelCheckpoint: monitor=faked"  # a newline that fakes a line of the summary
SURROGATE = "\ud800"
HUGE_BYTES = 2100  # a LONG4 of 2100 bytes: 16,800 bits, past str()'s 4300 digits


def _text(p: Pickle, s: str) -> Pickle:
    """BINUNICODE as CPython writes it: UTF-8 with surrogates passed through."""
    b = s.encode("utf-8", "surrogatepass")
    return p.raw(b"X" + struct.pack("<I", len(b)) + b)


def _huge(p: Pickle, nbytes: int = HUGE_BYTES) -> Pickle:
    return p.raw(b"\x8b" + struct.pack("<I", nbytes) + b"\x01" * nbytes)  # LONG4


def hostile_pickle(esc: str) -> bytes:
    """A Lightning-like checkpoint whose every printed field is hostile."""
    p = Pickle().proto(2).empty_dict().mark()
    _huge(_text(p, "epoch"))
    _text(_text(p, "pytorch-lightning_version"), esc + FAKE)
    _text(_text(p, esc + "key"), FAKE + SURROGATE)
    _huge(_text(p, "big"))
    _text(p, "hyper_parameters").empty_dict().mark()
    _huge(_text(_text(_text(p, "name" + esc), esc + SURROGATE), "n"))
    p.setitems()
    _text(p, "obj").glob(f"evil{esc}", f"name{esc}").empty_tuple().reduce()
    p.setitems().stop()
    return bytes(p)


@pytest.fixture(params=range(len(ESC)), ids=["title", "clear", "erase", "c1"])
def esc(request: pytest.FixtureRequest) -> str:
    return ESC[request.param]


@pytest.fixture
def hostile(tmp_path: pathlib.Path, esc: str) -> pathlib.Path:
    path = tmp_path / f"run{esc}\nfake.ckpt"
    path.write_bytes(torch_zip(hostile_pickle(esc)))
    return path


def _assert_safe(text: str) -> None:
    assert all(c not in text for c in "\x1b\x07\x9b\r" + SURROGATE), repr(text)
    assert "Traceback" not in text


MODES = [[], ["--tree"], ["--globals"]]


@pytest.mark.parametrize("mode", MODES, ids=["summary", "tree", "globals"])
def test_text_output_is_escaped(hostile, esc, engine, mode, capsys) -> None:
    assert cli.main([*mode, "--engine", engine, str(hostile)]) == 0
    out, err = capsys.readouterr()
    _assert_safe(out + err)
    assert err == ""
    assert printable(str(hostile)) in out  # the name, escaped
    lines = out.splitlines()
    assert not any(line.startswith(("fake", "ModelCheckpoint")) for line in lines)
    if mode == ["--globals"]:
        with ckptpeek.open(hostile, engine=engine) as ckpt:
            assert len(lines) == 1 + len(ckpt.globals())
    if not mode:
        assert f"  epoch <int of {HUGE_BYTES * 8 - 7} bits>, lightning " in out
    if mode == ["--tree"]:
        assert f"  big: <int of {HUGE_BYTES * 8 - 7} bits>" in lines
        assert "\\ud800" in out


def test_json_output_is_ascii_and_designed(hostile, esc, engine, capsys) -> None:
    assert cli.main(["--json", "--engine", engine, str(hostile)]) == 0
    out, err = capsys.readouterr()
    assert out.isascii() and err == ""
    (doc,) = json.loads(out)
    bits = HUGE_BYTES * 8 - 7
    assert doc["epoch"] == f"<int of {bits} bits>"
    assert doc["path"] == str(hostile)  # JSON escapes it; the value is the real name
    assert doc["lightning_version"] == esc + FAKE
    assert doc["hyper_parameters"] == {"name" + esc: esc + SURROGATE, "n": f"<int of {bits} bits>"}


def test_scan_output_is_escaped(hostile, esc, engine, capsys) -> None:
    assert scan_cli.main(["--engine", engine, str(hostile)]) == 1  # unknown global
    out, err = capsys.readouterr()
    _assert_safe(out + err)
    assert printable(f"evil{esc}") in out
    assert cli.main(["scan", "--json", "--engine", engine, str(hostile)]) == 1
    out = capsys.readouterr().out
    assert out.isascii()
    (doc,) = json.loads(out)
    assert doc["verdict"] == "unknown" and doc["path"] == str(hostile)


def test_error_lines_are_escaped(tmp_path, esc, engine, capsys) -> None:
    """The name of a missing file, a corrupt file's name, and a ZIP member named by the
    file itself: all in one escaped line per file."""
    missing = tmp_path / f"missing{esc}.ckpt"
    corrupt = tmp_path / f"corrupt{esc}\n.ckpt"
    corrupt.write_bytes(b"not a checkpoint" + esc.encode() + b"\n")
    member = tmp_path / "member.ckpt"
    member.write_bytes(build_zip([Member(f"a{esc}/data.pkl", b"."), Member(f"b{esc}/x", b"")]))
    files = [str(missing), str(corrupt), str(member)]
    for args in ([], ["--tree"], ["scan"]):
        status = cli.main([*args, "--engine", engine, *files])
        out, err = capsys.readouterr()
        _assert_safe(out + err)
        assert status == 1
        if args != ["scan"]:
            assert len(err.splitlines()) == 3 and out == ""
    assert cli.main(["--json", *files]) == 1
    out = capsys.readouterr().out
    assert out.isascii()
    docs = json.loads(out)
    assert [d["path"] for d in docs] == files and all(
        "\x1b" not in d["error"]["message"] for d in docs
    )


def test_checkpoint_error_str_escapes_but_keeps_the_raw_attributes() -> None:
    exc = error("truncated", f"bad {ESC[0]}", path=f"p{ESC[1]}\n.pt", member=f"m{SURROGATE}")
    assert str(exc) == "bad \\x1b]0;pwned\\x07 (at m\\ud800 in p\\x1b[2J\\n.pt)"
    assert (exc.path, exc.member, exc.msg) == (f"p{ESC[1]}\n.pt", f"m{SURROGATE}", f"bad {ESC[0]}")


@pytest.mark.parametrize("encoding", ["utf-8", "ascii"])
@pytest.mark.parametrize("args", [[], ["--tree"], ["--json"], ["scan"], ["--globals"]])
def test_printing_never_fails_on_the_terminals_encoding(tmp_path, encoding, args) -> None:
    """A strict stdout (PYTHONIOENCODING without an error handler) gets what it can encode."""
    path = tmp_path / "t\u00e9st.ckpt"  # printable, but not ASCII
    path.write_bytes(torch_zip(hostile_pickle(ESC[0] + "\u00e9")))
    run = subprocess.run(
        [sys.executable, "-m", "ckptpeek", *args, str(path)],
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": encoding},
    )
    assert run.returncode == (1 if args == ["scan"] else 0), run.stderr
    assert b"Traceback" not in run.stderr and b"\x1b" not in run.stdout + run.stderr
    if encoding == "ascii":
        assert (run.stdout + run.stderr).isascii()


def _boom(*args: object, **kwargs: object) -> object:
    raise RuntimeError("a bug\x1b[2J of ours")


@pytest.mark.parametrize("args", [[], ["--json"], ["scan"], ["scan", "--json"]])
def test_an_internal_error_is_one_line_and_exit_3(monkeypatch, capsys, args) -> None:
    from ckptpeek import scan as scan_module

    monkeypatch.setattr(cli, "collect", _boom)
    monkeypatch.setattr(scan_module, "scan", _boom)
    good = str(pathlib.Path(__file__).parent / "data" / "state_dict.pt")
    monkeypatch.delenv(scan_cli.DEBUG_ENV, raising=False)
    assert cli.main([*args, good, good]) == scan_cli.EXIT_INTERNAL
    out, err = capsys.readouterr()
    assert err.count("internal error") == 2 and len(err.splitlines()) == 2
    assert "RuntimeError: a bug\\x1b[2J of ours" in err and "Traceback" not in err
    monkeypatch.setenv(scan_cli.DEBUG_ENV, "1")  # the traceback, for whoever fixes it
    with pytest.raises(RuntimeError):
        cli.main([*args, good])


def test_exit_statuses(tmp_path, capsys) -> None:
    good = str(pathlib.Path(__file__).parent / "data" / "state_dict.pt")
    assert cli.main([good]) == scan_cli.EXIT_OK
    assert cli.main([good, str(tmp_path / "missing")]) == scan_cli.EXIT_FILES
    with pytest.raises(SystemExit) as usage:
        cli.main(["--no-such-option", good])
    assert usage.value.code == 2
    with pytest.raises(SystemExit) as usage:
        cli.main(["scan"])
    assert usage.value.code == 2
    capsys.readouterr()


def test_a_closed_pipe_ends_quietly(tmp_path) -> None:
    """``ckptpeek --tree big.ckpt | head -1``: no traceback, no 'Exception ignored'."""
    p = Pickle().proto(2).empty_dict().mark()
    for i in range(20_000):
        p.str(f"k{i}").int(i % 200)
    path = tmp_path / "wide.ckpt"
    path.write_bytes(torch_zip(bytes(p.setitems().stop())))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ckptpeek", "--tree", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait()
    assert b"Traceback" not in err and b"Exception ignored" not in err, err


class _Raises:
    def __str__(self) -> str:
        raise ValueError("no")

    __repr__ = __str__


class _NotStr:
    def __str__(self) -> object:  # type: ignore[override]
        return 42


class _Sub(str):
    def __str__(self) -> str:
        raise RuntimeError("a str subclass whose __str__ fails")


@pytest.mark.parametrize(
    ("obj", "want"),
    [
        (10**5000, f"<int of {(10**5000).bit_length()} bits>"),
        (-(10**5000), f"<int of {(10**5000).bit_length()} bits>"),
        (2**64, str(2**64)),
        (True, "True"),
        (_Sub("a\x1bb"), "a\\x1bb"),
        ("\u202eevil\u2066", "\\u202eevil\\u2066"),
        ("tab\tcr\r\u0085", "tab\\tcr\\r\\x85"),
        ("caf\u00e9 \u4e2d", "caf\u00e9 \u4e2d"),
    ],
    ids=["huge", "huge-negative", "2**64", "bool", "str-subclass", "bidi", "controls", "unicode"],
)
def test_printable(obj, want) -> None:
    assert printable(obj) == want


@pytest.mark.parametrize(
    "obj",
    [_Raises(), _NotStr(), [10**5000], ckptpeek.Placeholder("m\x1b", "n\n", (10**5000,))],
    ids=["str-raises", "str-not-str", "list-of-huge", "placeholder"],
)
def test_printable_never_raises(obj) -> None:
    text = printable(obj)
    assert isinstance(text, str) and text.isprintable()


def test_printable_of_a_deep_list() -> None:
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    assert printable(deep).startswith(("<list object", "[[[["))


def test_json_safe() -> None:
    shared: list[object] = [1]
    cyclic: list[object] = [shared, shared]
    cyclic.append(cyclic)
    doc = json_safe({"n": 10**5000, 3: (1, 2), "c": cyclic, "o": _Raises()})
    assert doc["n"] == int_text(10**5000) and doc["3"] == [1, 2]
    assert doc["c"] == [[1], [1], "<cycle>"] and doc["o"].startswith("<")
    json.dumps(doc)
    assert json_safe(list(range(100)), budget=10)[-1] == "..."


def _wide(n: int) -> bytes:
    p = Pickle().proto(2).empty_dict().mark()
    for i in range(n):
        p.str(f"k{i}").empty_list().int(i).append()  # {"k0": [0], ...}: one line per item
    return torch_zip(bytes(p.setitems().stop()))


class _Pipe:
    """A stdout whose reader goes away after ``n`` lines (``| head -n``)."""

    def __init__(self, n: int) -> None:
        self.parts: list[str] = []
        self.newlines = 0
        self.n = n

    @property
    def lines(self) -> list[str]:
        return "".join(self.parts).splitlines()

    def write(self, text: str) -> int:
        if self.newlines >= self.n:
            raise BrokenPipeError(32, "Broken pipe")
        self.parts.append(text)
        self.newlines += text.count("\n")
        return len(text)

    def flush(self) -> None:
        pass


def test_the_tree_streams(tmp_path, monkeypatch, engine) -> None:
    """``--tree wide.ckpt | head``: 40,001 lines in the tree, 11 made (counted)."""
    path = tmp_path / "wide.ckpt"
    path.write_bytes(_wide(20_000))
    made = []
    tree_lines = cli.tree_lines

    def counted(*args: object, **kwargs: object):
        for line in tree_lines(*args, **kwargs):
            made.append(line)
            yield line

    monkeypatch.setattr(cli, "tree_lines", counted)
    pipe = _Pipe(10)
    monkeypatch.setattr(sys, "stdout", pipe)
    assert cli.main(["--tree", "--engine", engine, str(path)]) == 0
    assert len(pipe.lines) == 10 and pipe.lines[1] == "dict (20000 items)"
    assert len(made) <= 10  # the header, then at most the lines printed (and the next one)
    monkeypatch.setattr(sys, "stdout", _Pipe(10**6))
    made.clear()
    assert cli.main(["--tree", "--engine", engine, str(path)]) == 0
    assert len(made) == 40_001


def test_an_error_in_the_middle_of_the_tree(tmp_path, monkeypatch, capsys, engine) -> None:
    """The lines printed so far stay, then one error line on stderr, exit 1; the next file
    is shown whole."""
    path = tmp_path / "wide.ckpt"
    path.write_bytes(_wide(100))
    calls = []
    children = cli.children

    def fails_on_the_fifth(obj: object):
        calls.append(obj)
        if len(calls) == 5:
            raise error("limit-nodes", "the walk stops here", path=str(path))
        return children(obj)

    monkeypatch.setattr(cli, "children", fails_on_the_fifth)
    other = pathlib.Path(__file__).parent / "data" / "state_dict.pt"
    assert cli.main(["--tree", "--engine", engine, str(path), str(other)]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[:6] == [printable(str(path)) + "  [torch-zip]", "dict (100 items)",
                         "  k0: list (1 items)", "    0: 0", "  k1: list (1 items)", ""]  # fmt: skip
    assert lines[6].startswith(str(other))  # the lines up to the error, then the next file
    assert "linear.weight: float32[3, 4]" in out
    assert err.splitlines() == [f"ckptpeek: error: the walk stops here (at {path})"]


def _float(p: Pickle, x: float) -> Pickle:
    return p.raw(b"G" + struct.pack(">d", x))  # BINFLOAT


def non_finite_pickle() -> bytes:
    """A Lightning-like checkpoint whose metrics and hyper-parameters are NaN and +-inf."""
    p = Pickle().proto(2).empty_dict().mark()
    p.str("epoch").int(1).str("global_step").int(2)
    p.str("callbacks").empty_dict().str("ModelCheckpoint{'monitor': 'val', 'mode': 'max'}")
    p.empty_dict().mark().str("monitor").str("val").str("best_model_score")
    _float(p, float("inf")).str("current_score")
    _float(p, float("nan")).setitems().setitem()
    p.str("hyper_parameters").empty_dict().mark().str("lr")
    _float(p, float("nan")).str("bounds").mark()
    _float(_float(_float(p, float("-inf")), float("inf")), 0.5).tuple().setitems()
    return bytes(p.setitems().stop())


def _strict(token: str) -> object:
    raise AssertionError(f"{token} is not JSON")


def test_json_is_strict_for_nan_and_infinity(tmp_path, engine, capsys) -> None:
    path = tmp_path / "nan.ckpt"
    path.write_bytes(torch_zip(non_finite_pickle()))
    assert cli.main(["--json", "--engine", engine, str(path)]) == 0
    out = capsys.readouterr().out
    (doc,) = json.loads(out, parse_constant=_strict)
    assert doc["model_checkpoints"][0]["best_model_score"] == "Infinity"
    assert doc["hyper_parameters"]["bounds"] == ["-Infinity", "Infinity", 0.5]
    assert doc["hyper_parameters"]["lr"] in ("NaN", "nan")  # facts' own copy writes "nan"
    assert cli.main(["--engine", engine, str(path)]) == 0  # the summary's JSON line too
    assert 'hyper_parameters: {"lr": ' in capsys.readouterr().out


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (float("nan"), "NaN"),
        (float("inf"), "Infinity"),
        (float("-inf"), "-Infinity"),
        (-0.0, -0.0),
        (1e308, 1e308),
        (True, True),
    ],
)
def test_json_safe_floats(value, want) -> None:
    doc = json_safe({"x": [value]})
    assert json.loads(json.dumps(doc, allow_nan=False), parse_constant=_strict) == {"x": [want]}


def test_json_safe_is_bounded_in_depth_and_values() -> None:
    """100,000 levels (json.dumps would overflow the stack): cut at JSON_MAX_DEPTH, in
    work linear in what is copied; a shared list 2**60 paths wide: cut at the budget."""
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    doc = json_safe(deep)
    text = json.dumps(doc)
    assert text.count("[") == JSON_MAX_DEPTH + 1 and '"..."' in text
    dag: list[object] = [0]
    for _ in range(60):
        dag = [dag, dag]
    flat = json.dumps(json_safe(dag, budget=1_000))
    assert flat.count("0") + flat.count('"..."') <= 1_000 + 2 * JSON_MAX_DEPTH
    assert json_safe({1: {2}, b"k": b"\x1b" * 20_000})["1"] == [2]
    assert len(json_safe([b"\x1b" * 20_000])[0]) < 45_000  # bytes cut before repr


def test_a_failure_writing_the_json_document_is_one_line_and_exit_3(monkeypatch, capsys) -> None:
    """The document is written after every file was read: a failure there (memory, a
    bug) is the same one-line internal error, never a traceback."""

    def fail(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise MemoryError("cannot allocate the document")

    good = str(pathlib.Path(__file__).parent / "data" / "state_dict.pt")
    monkeypatch.delenv(scan_cli.DEBUG_ENV, raising=False)
    monkeypatch.setattr(scan_cli.json, "dumps", fail)
    assert cli.main(["--json", good]) == scan_cli.EXIT_INTERNAL
    out, err = capsys.readouterr()
    assert out == "" and "internal error on the JSON document: MemoryError" in err
    assert "Traceback" not in err
