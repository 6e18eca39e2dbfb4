"""THE specification of the restricted pickle interpreter: its opcodes.

One record per opcode (pickletools-style): name as spelled in ``pickle.py``, the byte,
how its inline argument is encoded, and the protocol that introduced it. Both engines
(``pickle_vm`` in pure Python, ``_pickle_vm_c`` in Cython) read this module; a test
checks it against the stdlib's ``pickletools.opcodes`` so nothing is missing or wrong.
``SPEC_DIGEST`` fingerprints the table and the default limits (``ckptpeek.limits``), so a native extension
built from an older table is detected at import.
"""

from __future__ import annotations

import collections
import zlib
from types import MappingProxyType

from ckptpeek.limits import DEFAULT_LIMITS, Limits

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from typing import Final

__all__ = ("Opcode", "OPCODES", "BY_CODE", "BY_NAME", "SPEC_DIGEST")


class Opcode(collections.namedtuple("Opcode", "name code arg proto doc")):
    """One pickle opcode.

    ``arg`` names the inline argument encoding (``pickletools`` ArgumentDescriptor
    names): e.g. ``uint1`` one unsigned byte, ``unicodestring4`` a 4-byte little-endian
    length then UTF-8 bytes, ``stringnl_noescape`` text up to a newline.
    """

    __slots__ = ()


# fmt: off
OPCODES: Final[tuple[Opcode, ...]] = tuple(Opcode(*row) for row in (
    # ints
    ("INT",              ord("I"), "decimalnl_short", 0, "int (or bool '00'/'01') as decimal text"),
    ("BININT",           ord("J"), "int4",            1, "signed 4-byte int"),
    ("BININT1",          ord("K"), "uint1",           1, "unsigned 1-byte int"),
    ("BININT2",          ord("M"), "uint2",           1, "unsigned 2-byte int"),
    ("LONG",             ord("L"), "decimalnl_long",  0, "long int as decimal text with optional L"),
    ("LONG1",            0x8a,     "long1",           2, "two's complement int, 1-byte length"),
    ("LONG4",            0x8b,     "long4",           2, "two's complement int, 4-byte length"),
    # strings and bytes
    ("STRING",           ord("S"), "stringnl",        0, "quoted Python 2 str (bytes) repr"),
    ("BINSTRING",        ord("T"), "string4",         1, "Python 2 str, 4-byte length"),
    ("SHORT_BINSTRING",  ord("U"), "string1",         1, "Python 2 str, 1-byte length"),
    ("BINBYTES",         ord("B"), "bytes4",          3, "bytes, 4-byte length"),
    ("SHORT_BINBYTES",   ord("C"), "bytes1",          3, "bytes, 1-byte length"),
    ("BINBYTES8",        0x8e,     "bytes8",          4, "bytes, 8-byte length"),
    ("BYTEARRAY8",       0x96,     "bytearray8",      5, "bytearray, 8-byte length"),
    ("NEXT_BUFFER",      0x97,     "none",            5, "next out-of-band buffer"),
    ("READONLY_BUFFER",  0x98,     "none",            5, "make the top buffer read-only"),
    ("NONE",             ord("N"), "none",            0, "push None"),
    ("NEWTRUE",          0x88,     "none",            2, "push True"),
    ("NEWFALSE",         0x89,     "none",            2, "push False"),
    ("UNICODE",          ord("V"), "unicodestringnl", 0, "raw-unicode-escape text to newline"),
    ("SHORT_BINUNICODE", 0x8c,     "unicodestring1",  4, "UTF-8 str, 1-byte length"),
    ("BINUNICODE",       ord("X"), "unicodestring4",  1, "UTF-8 str, 4-byte length"),
    ("BINUNICODE8",      0x8d,     "unicodestring8",  4, "UTF-8 str, 8-byte length"),
    ("FLOAT",            ord("F"), "floatnl",         0, "float as decimal text"),
    ("BINFLOAT",         ord("G"), "float8",          1, "big-endian IEEE 754 double"),
    # containers
    ("EMPTY_LIST",       ord("]"), "none",            1, "push []"),
    ("APPEND",           ord("a"), "none",            0, "list.append(top)"),
    ("APPENDS",          ord("e"), "none",            1, "list.extend(items since mark)"),
    ("LIST",             ord("l"), "none",            0, "list of items since mark"),
    ("EMPTY_TUPLE",      ord(")"), "none",            1, "push ()"),
    ("TUPLE",            ord("t"), "none",            0, "tuple of items since mark"),
    ("TUPLE1",           0x85,     "none",            2, "tuple of the top item"),
    ("TUPLE2",           0x86,     "none",            2, "tuple of the top two items"),
    ("TUPLE3",           0x87,     "none",            2, "tuple of the top three items"),
    ("EMPTY_DICT",       ord("}"), "none",            1, "push {}"),
    ("DICT",             ord("d"), "none",            0, "dict of key/value pairs since mark"),
    ("SETITEM",          ord("s"), "none",            0, "dict[key] = value"),
    ("SETITEMS",         ord("u"), "none",            1, "dict.update(pairs since mark)"),
    ("EMPTY_SET",        0x8f,     "none",            4, "push set()"),
    ("ADDITEMS",         0x90,     "none",            4, "set.update(items since mark)"),
    ("FROZENSET",        0x91,     "none",            4, "frozenset of items since mark"),
    # stack manipulation
    ("POP",              ord("0"), "none",            0, "discard the top item"),
    ("DUP",              ord("2"), "none",            0, "push the top item again"),
    ("MARK",             ord("("), "none",            0, "push a mark"),
    ("POP_MARK",         ord("1"), "none",            1, "discard items down to the mark"),
    # memo
    ("GET",              ord("g"), "decimalnl_short", 0, "push memo[n] (decimal index)"),
    ("BINGET",           ord("h"), "uint1",           1, "push memo[n] (1-byte index)"),
    ("LONG_BINGET",      ord("j"), "uint4",           1, "push memo[n] (4-byte index)"),
    ("PUT",              ord("p"), "decimalnl_short", 0, "memo[n] = top (decimal index)"),
    ("BINPUT",           ord("q"), "uint1",           1, "memo[n] = top (1-byte index)"),
    ("LONG_BINPUT",      ord("r"), "uint4",           1, "memo[n] = top (4-byte index)"),
    ("MEMOIZE",          0x94,     "none",            4, "memo[len(memo)] = top"),
    # extension registry (copyreg): never used by torch; resolved to placeholders
    ("EXT1",             0x82,     "uint1",           2, "extension code, 1 byte"),
    ("EXT2",             0x83,     "uint2",           2, "extension code, 2 bytes"),
    ("EXT4",             0x84,     "int4",            2, "extension code, 4 bytes"),
    # objects: every name resolves against the registry, nothing is imported
    ("GLOBAL",           ord("c"), "stringnl_noescape_pair", 0, "push module.name (text)"),
    ("STACK_GLOBAL",     0x93,     "none",            4, "push module.name (from the stack)"),
    ("REDUCE",           ord("R"), "none",            0, "callable(*args)"),
    ("BUILD",            ord("b"), "none",            0, "obj.__setstate__(state)"),
    ("INST",             ord("i"), "stringnl_noescape_pair", 0, "instance of module.name(*items since mark)"),
    ("OBJ",              ord("o"), "none",            1, "instance of cls(*items since mark)"),
    ("NEWOBJ",           0x81,     "none",            2, "cls.__new__(cls, *args)"),
    ("NEWOBJ_EX",        0x92,     "none",            4, "cls.__new__(cls, *args, **kwargs)"),
    # machine control
    ("PROTO",            0x80,     "uint1",           2, "protocol version"),
    ("STOP",             ord("."), "none",            0, "end of pickle: return the top item"),
    ("FRAME",            0x95,     "uint8",           4, "start of a frame of the given length"),
    ("PERSID",           ord("P"), "stringnl_noescape", 0, "persistent object (text id)"),
    ("BINPERSID",        ord("Q"), "none",            1, "persistent object (id from the stack)"),
))
# fmt: on

BY_CODE: Final = MappingProxyType({op.code: op for op in OPCODES})
BY_NAME: Final = MappingProxyType({op.name: op for op in OPCODES})
if len(BY_CODE) != len(OPCODES) or len(BY_NAME) != len(OPCODES):  # pragma: no cover
    raise AssertionError("duplicate opcode name or code in the table")

HIGHEST_PROTOCOL: Final = 5


#: opcode groups the selective reader of both engines acts on (the Cython engine gets
#: them as generated predicates, ``_is_<group>_op``, so the two cannot differ)
OPCODE_GROUPS: Final = {
    # one item into a container (the pickler's last, partial batch)
    "single_fill": ("SETITEM", "APPEND"),
    # any fill of a container
    "fill": ("SETITEM", "APPEND", "SETITEMS", "APPENDS", "ADDITEMS"),
    # opcodes after which a text on top of the stack may be a root key
    "text": (
        "SHORT_BINUNICODE",
        "BINUNICODE",
        "BINUNICODE8",
        "UNICODE",
        "SHORT_BINSTRING",
        "BINSTRING",
        "STRING",
        "BINGET",
        "LONG_BINGET",
        "GET",
    ),
}


def group(name: str) -> frozenset[int]:
    """The codes of an ``OPCODE_GROUPS`` group."""
    return frozenset(BY_NAME[n].code for n in OPCODE_GROUPS[name])


def _digest() -> str:
    # two CRC-32s over the table and the limits: a fingerprint to detect an extension
    # built from another table (not a security check; zlib imports faster than hashlib)
    text = repr(
        [(op.name, op.code, op.arg, op.proto) for op in OPCODES]
        + [Limits._fields, tuple(DEFAULT_LIMITS)]
        + sorted(OPCODE_GROUPS.items())
    ).encode()
    return f"{zlib.crc32(text):08x}{zlib.crc32(text[::-1]):08x}"


SPEC_DIGEST: Final = _digest()


def write_pxi(path: str) -> None:
    """Write ``native/unpickle/_opcodes.pxi``: the table as a Cython enum, the opcode
    groups as inline predicates, and the digest.

    Called by ``setup.py`` at build time, so the native engine is always compiled from
    this table; the file is generated, never edited (and not committed).
    """
    lines = [
        "# GENERATED from src/ckptpeek/unpickle/opcodes.py by setup.py: do not edit.",
        "cdef enum:",
    ]
    lines += [f"    OP_{op.name} = {op.code}" for op in OPCODES]
    for name, members in OPCODE_GROUPS.items():
        test = " or ".join(f"code == OP_{m}" for m in members)
        lines += [
            "",
            "",
            f"cdef inline bint _is_{name}_op(int code) noexcept:",
            f"    return {test}",
        ]
    lines += [
        "",
        f"SPEC_DIGEST = {SPEC_DIGEST!r}",
        f"cdef int HIGHEST_PROTO = {HIGHEST_PROTOCOL}",
        "",
    ]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
