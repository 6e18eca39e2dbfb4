"""The opcode table is the single specification: check it against the stdlib's."""

from __future__ import annotations

import collections
import importlib
import pickletools
import types

import pytest

import ckptpeek
from ckptpeek.unpickle import engine, opcodes, pickle_vm


def test_table_matches_pickletools() -> None:
    ours = {op.name: (op.code, op.arg, op.proto) for op in opcodes.OPCODES}
    theirs = {
        op.name: (ord(op.code.encode("latin1")), op.arg.name if op.arg else "none", op.proto)
        for op in pickletools.opcodes
    }
    assert ours == theirs


def test_every_opcode_has_a_pure_handler() -> None:
    assert pickle_vm.SUPPORTED == set(opcodes.BY_NAME)


def test_native_extension_was_built_from_this_table() -> None:
    """The Cython engine reports the digest of the table it was generated from."""
    try:
        native = importlib.import_module("ckptpeek.unpickle._pickle_vm_c")
    except ImportError as exc:
        pytest.skip(f"native engine not built: {exc}")
    assert len(opcodes.SPEC_DIGEST) == 16
    assert native.SPEC_DIGEST == opcodes.SPEC_DIGEST == ckptpeek.SPEC_DIGEST
    assert engine._stale(native) is None


def test_a_stale_extension_is_refused() -> None:
    stale = types.SimpleNamespace(SPEC_DIGEST="0" * 16)
    reason = engine._stale(stale)
    assert reason is not None and "stale" in reason and opcodes.SPEC_DIGEST in reason
    assert engine._stale(types.SimpleNamespace()) is not None  # built before digests


def _changed_opcode(which: str, **change: object) -> tuple[opcodes.Opcode, ...]:
    return tuple(op._replace(**change) if op.name == which else op for op in opcodes.OPCODES)


@pytest.mark.parametrize(
    "what",
    [
        "opcode-proto",
        "opcode-arg",
        "opcode-code",
        "opcode-name",
        "opcode-dropped",
        "opcode-order",
        "default-limit",
        "limit-fields",
        "group-member",
        "group-added",
    ],
)
def test_changing_the_specification_changes_the_digest(
    monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    assert opcodes._digest() == opcodes.SPEC_DIGEST  # recomputed: deterministic
    ops = opcodes.OPCODES
    if what == "opcode-proto":
        monkeypatch.setattr(opcodes, "OPCODES", _changed_opcode("FRAME", proto=5))
    elif what == "opcode-arg":
        monkeypatch.setattr(opcodes, "OPCODES", _changed_opcode("BINPUT", arg="uint4"))
    elif what == "opcode-code":
        monkeypatch.setattr(opcodes, "OPCODES", _changed_opcode("STOP", code=0x2F))
    elif what == "opcode-name":
        monkeypatch.setattr(opcodes, "OPCODES", _changed_opcode("DUP", name="DUPLICATE"))
    elif what == "opcode-dropped":
        monkeypatch.setattr(opcodes, "OPCODES", ops[:-1])
    elif what == "opcode-order":
        monkeypatch.setattr(opcodes, "OPCODES", (ops[1], ops[0], *ops[2:]))
    elif what == "default-limit":
        limits = opcodes.DEFAULT_LIMITS._replace(max_depth=opcodes.DEFAULT_LIMITS.max_depth + 1)
        monkeypatch.setattr(opcodes, "DEFAULT_LIMITS", limits)
    elif what == "limit-fields":
        wider = collections.namedtuple("Limits", (*opcodes.Limits._fields, "max_frames"))
        monkeypatch.setattr(opcodes, "Limits", wider)
    elif what == "group-member":
        groups = dict(opcodes.OPCODE_GROUPS, single_fill=("SETITEM",))
        monkeypatch.setattr(opcodes, "OPCODE_GROUPS", groups)
    else:
        groups = dict(opcodes.OPCODE_GROUPS, memo=("BINPUT", "LONG_BINPUT"))
        monkeypatch.setattr(opcodes, "OPCODE_GROUPS", groups)
    changed = opcodes._digest()
    assert len(changed) == 16 and changed != opcodes.SPEC_DIGEST, what
