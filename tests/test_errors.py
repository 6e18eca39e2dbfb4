"""Error codes: one table in errors.py, documented in the README, used by the sources."""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

import ckptpeek
from ckptpeek.errors import ERROR_CODES, CheckpointError, FormatError, error

ROOT = pathlib.Path(__file__).parent.parent
SRC = ROOT / "src" / "ckptpeek"


CLASSES = {"FormatError", "UnsupportedError", "LimitError", "UnsafePickleError"}
CODE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)+$")


def _sources() -> list[pathlib.Path]:
    return sorted(p for p in SRC.rglob("*.py") if p.name != "errors.py")


def _call_name(node: ast.Call) -> str:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def _raised_codes() -> dict[str, list[str]]:
    """code -> where it is raised: every string literal that is an argument of a call of
    an error factory (``error``, ``make_error``, ``self._error``, ``S.error``, ...)."""
    codes: dict[str, list[str]] = {}
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            name = _call_name(node).lower() if isinstance(node, ast.Call) else ""
            if "error" in name or name == "_expect":  # _expect(value, want, what, code, ...)
                for arg in node.args:  # type: ignore[attr-defined]
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        if CODE.match(arg.value) or arg.value in ERROR_CODES:
                            codes.setdefault(arg.value, []).append(f"{path.name}:{node.lineno}")
    for pyx in (ROOT / "native").rglob("*.pyx"):
        for m in re.finditer(r"error\(\s*\"([a-z0-9]+(?:-[a-z0-9]+)+)\"", pyx.read_text()):
            codes.setdefault(m.group(1), []).append(pyx.name)
    return codes


def _readme_table() -> dict[str, str]:
    """code -> class, from the README's table of codes."""
    rows = re.findall(r"^\| `([a-z0-9-]+)` \| (\w+) \|", (ROOT / "README.md").read_text(), re.M)
    return dict(rows)


def test_every_raised_code_is_in_the_table() -> None:
    raised = _raised_codes()
    assert len(raised) > 60  # the scan finds the raise sites (it would pass empty otherwise)
    assert {c: w for c, w in raised.items() if c not in ERROR_CODES} == {}


def test_every_code_in_the_table_is_raised() -> None:
    assert set(ERROR_CODES) - set(_raised_codes()) == set()


def test_no_raise_site_picks_its_own_class() -> None:
    """Raising by code takes the class from ERROR_CODES: no site constructs an error class
    with a code of its own choosing (so a code cannot be two classes in two places)."""
    bad = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and _call_name(node) in CLASSES:
                bad.append(f"{path.relative_to(SRC)}:{node.lineno}")
    for pyx in (ROOT / "native").rglob("*.pyx"):
        for m in re.finditer(r"\b(\w+Error)\(", pyx.read_text()):
            if m.group(1) in CLASSES:
                bad.append(f"{pyx.name}: {m.group(0)}")
    assert bad == []


@pytest.mark.parametrize("code", sorted(ERROR_CODES))
def test_error_takes_the_class_of_its_code(code: str) -> None:
    err = error(code, "m", path="p", member="x", offset=1)
    assert type(err) is ERROR_CODES[code][0]
    assert (err.code, err.path, err.member, err.offset) == (code, "p", "x", 1)


def test_an_unknown_code_is_a_bug_not_an_error_class() -> None:
    with pytest.raises(AssertionError, match="not in ERROR_CODES"):
        error("no-such-code", "m")


def test_readme_table_matches_the_code_table() -> None:
    table = _readme_table()
    want = {code: cls.__name__ for code, (cls, _) in ERROR_CODES.items()}
    assert table == want


def test_the_persistent_id_error_is_a_format_error() -> None:
    # two readers used to raise it as UnsupportedError, which made fallback="torch" run
    # on a corrupt file
    assert ERROR_CODES["bad-persistent-id"][0] is FormatError


def test_message_names_file_member_and_offset() -> None:
    err = FormatError(
        "unknown opcode 0xf3",
        code="unknown-opcode",
        path="a.ckpt",
        member="archive/data.pkl",
        offset=1187,
    )
    assert str(err) == "unknown opcode 0xf3 (at byte 1187 of archive/data.pkl in a.ckpt)"
    assert isinstance(err, ValueError) and isinstance(err, CheckpointError)


def test_base_class_is_abstract() -> None:
    with pytest.raises(TypeError):
        CheckpointError("x", code="x")


def test_errors_pickle_across_processes() -> None:
    import pickle

    err = FormatError("m", code="truncated", path="p", member="m", offset=3)
    back = pickle.loads(pickle.dumps(err))
    assert (type(back), back.code, back.offset, str(back)) == (
        FormatError,
        "truncated",
        3,
        str(err),
    )


def test_public_names() -> None:
    for name in ckptpeek.__all__:
        assert hasattr(ckptpeek, name), name
