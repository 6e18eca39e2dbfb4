"""Error codes: one table in errors.py, documented in the README, used by the sources."""

from __future__ import annotations

import pathlib
import re

import pytest

import ckptpeek
from ckptpeek.errors import ERROR_CODES, CheckpointError, FormatError

ROOT = pathlib.Path(__file__).parent.parent
SRC = ROOT / "src" / "ckptpeek"


def _raised_codes() -> set[str]:
    codes = set()
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        codes |= set(re.findall(r'code="([a-z0-9-]+)"', text))
        codes |= set(re.findall(r'(?:self\.error|self\._error)\([^"]*?"([a-z0-9-]+)"', text))
        codes |= set(re.findall(r'Error, "([a-z0-9-]+)",', text))
    for pyx in (ROOT / "native").glob("*.pyx"):
        codes |= set(re.findall(r"\"([a-z]+(?:-[a-z0-9]+)+)\"", pyx.read_text())) & set(ERROR_CODES)
    return codes


def test_every_raised_code_is_in_the_table() -> None:
    raised = _raised_codes()
    raised.discard("torch-legacy-format")  # built as f"{kind}-format"
    assert raised - set(ERROR_CODES) == set()


def test_every_code_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [code for code in ERROR_CODES if f"`{code}`" not in readme]
    assert missing == []


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
