"""The opcode table is the single specification: check it against the stdlib's."""

from __future__ import annotations

import pickletools

from ckptpeek.unpickle import opcodes, pickle_vm


def test_table_matches_pickletools() -> None:
    ours = {op.name: (op.code, op.arg, op.proto) for op in opcodes.OPCODES}
    theirs = {
        op.name: (ord(op.code.encode("latin1")), op.arg.name if op.arg else "none", op.proto)
        for op in pickletools.opcodes
    }
    assert ours == theirs


def test_every_opcode_has_a_pure_handler() -> None:
    assert pickle_vm.SUPPORTED == set(opcodes.BY_NAME)


def test_spec_digest_is_a_fingerprint() -> None:
    assert len(opcodes.SPEC_DIGEST) == 16
    assert opcodes.SPEC_DIGEST == opcodes._digest()
