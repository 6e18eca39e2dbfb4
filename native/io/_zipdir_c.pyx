# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The ZIP central directory in C: ``ckptpeek.io._zipdir_c``, chosen by ``io/zipdir.py``.

Only the common case (no ZIP64 field, ASCII names): at anything unusual it returns
``None`` and the pure parser in ``zipdir.py`` handles (and reports) the directory exactly
as it does without the extension. Independent of the pickle engine.
"""

from libc.stdint cimport uint16_t, uint32_t
from cpython.unicode cimport PyUnicode_DecodeASCII


cdef inline uint16_t _u2(const unsigned char* p) noexcept nogil:
    return <uint16_t>p[0] | (<uint16_t>p[1] << 8)


cdef inline uint32_t _u4(const unsigned char* p) noexcept nogil:
    return (<uint32_t>p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16)
            | (<uint32_t>p[3] << 24))


def parse_central_directory(bytes cd, Py_ssize_t count, Py_ssize_t file_size, member_cls):
    """``zipdir.parse_central_directory_py`` for the common case, in C (APPNOTE §4.3.12).

    Returns ``{name: member_cls(name, method, compressed_size, size, header_offset,
    flags)}``, or ``None`` at anything unusual - a bad signature or length, a ZIP64
    field, a non-ASCII name, a header past the end - so that the pure parser handles
    (and reports) it exactly as without the extension.
    """
    cdef const unsigned char* p = <const unsigned char*>cd
    cdef Py_ssize_t n = len(cd), pos = 0, k, i, nlen, xlen, clen
    cdef uint32_t csize, usize, hoff
    cdef dict members = {}
    for k in range(count):
        if n - pos < 46 or p[pos] != 0x50 or p[pos + 1] != 0x4B or p[pos + 2] != 1 or p[pos + 3] != 2:
            return None
        nlen = _u2(p + pos + 28)
        xlen = _u2(p + pos + 30)
        clen = _u2(p + pos + 32)
        if 46 + nlen + xlen + clen > n - pos:
            return None
        csize = _u4(p + pos + 20)
        usize = _u4(p + pos + 24)
        hoff = _u4(p + pos + 42)
        if csize == 0xFFFFFFFF or usize == 0xFFFFFFFF or hoff == 0xFFFFFFFF:
            return None
        if <Py_ssize_t>hoff + 30 > file_size:
            return None
        for i in range(pos + 46, pos + 46 + nlen):
            if p[i] >= 0x80:
                return None
        name = PyUnicode_DecodeASCII(<const char*>p + pos + 46, nlen, NULL)
        members[name] = tuple.__new__(member_cls, (name, _u2(p + pos + 10), csize, usize,
                                                   hoff, _u2(p + pos + 8)))
        pos += 46 + nlen + xlen + clen
    return members
