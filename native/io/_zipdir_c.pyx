# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The ZIP central directory in C: ``ckptpeek.io._zipdir_c``, chosen by ``io/zipdir.py``.

Only the common case (no ZIP64 field, plain ASCII names, nothing the pure parser would
refuse): at anything unusual it returns ``None`` and the pure parser in ``zipdir.py``
handles (and reports) the directory exactly as it does without the extension. It never
accepts a directory the pure parser refuses: duplicate names (ASCII case ignored), NUL
bytes, absolute or ``..`` names, encryption or patch flags, other disks, STORED members whose
sizes differ, members marked directories that hold bytes, members that overlap each other
or the directory, bytes after the last entry. Independent of the pickle engine.
"""

from libc.stdint cimport uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, qsort
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_DecodeASCII


cdef extern from "Python.h":
    # the value now under key (borrowed): ``default`` if key was absent
    PyObject* PyDict_SetDefault(object d, object key, object default) except NULL
    ctypedef object (*allocfunc)(PyTypeObject*, Py_ssize_t)
    ctypedef struct PyTypeObject:
        allocfunc tp_alloc
    void PyTuple_SET_ITEM(object t, Py_ssize_t i, object v)  # steals a reference to v
    void Py_INCREF(object o)


cdef inline void _put(object t, Py_ssize_t i, object v):
    Py_INCREF(v)
    PyTuple_SET_ITEM(t, i, v)


cdef inline object _record(PyTypeObject* cls, object name, object method, object csize,
                           object usize, object hoff, object flags, object crc, object raw,
                           object limit):
    """``cls(name, ..., limit)`` for a tuple subclass without slots (a namedtuple), made
    as ``tuple.__new__`` makes it (``tp_alloc``, then the items), without the call."""
    cdef object t = cls.tp_alloc(cls, 9)
    _put(t, 0, name)
    _put(t, 1, method)
    _put(t, 2, csize)
    _put(t, 3, usize)
    _put(t, 4, hoff)
    _put(t, 5, flags)
    _put(t, 6, crc)
    _put(t, 7, raw)
    _put(t, 8, limit)
    return t


ctypedef struct _Span:
    uint64_t start      # the member's local header offset
    uint64_t end        # at least where it ends: header, name, data, a descriptor's 12 bytes
    Py_ssize_t index    # its place in the central directory


cdef inline uint16_t _u2(const unsigned char* p) noexcept nogil:
    return <uint16_t>p[0] | (<uint16_t>p[1] << 8)


cdef inline uint32_t _u4(const unsigned char* p) noexcept nogil:
    return (<uint32_t>p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16)
            | (<uint32_t>p[3] << 24))


cdef int _by_start(const void* a, const void* b) noexcept nogil:
    cdef const _Span* x = <const _Span*>a
    cdef const _Span* y = <const _Span*>b
    if x.start != y.start:
        return -1 if x.start < y.start else 1
    if x.index != y.index:
        return -1 if x.index < y.index else 1
    return 0


cdef bint _plain_name(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    """ASCII without NUL, not absolute (``/``, ``\\``, a drive letter), no ``..`` part."""
    cdef Py_ssize_t i, start = 0
    cdef unsigned char c
    if n > 0 and (s[0] == 47 or s[0] == 92):
        return False
    if n >= 2 and s[1] == 58 and 65 <= (s[0] & 0xDF) <= 90 and s[0] < 0x80:
        return False
    for i in range(n + 1):
        if i < n:
            c = s[i]
            if c == 0 or c >= 0x80:
                return False
            if c != 47 and c != 92:
                continue
        if i - start == 2 and s[start] == 46 and s[start + 1] == 46:
            return False
        start = i + 1
    return True


def parse_central_directory(
    bytes cd, Py_ssize_t count, Py_ssize_t cd_start, Py_ssize_t file_size, member_cls
):
    """``zipdir._parse_central_directory`` for the common case, in C (APPNOTE §4.3.12).

    Returns ``(records, index)``: ``member_cls(name, method, compressed_size, size,
    header_offset, flags, crc, raw_name, limit)`` per entry in directory order, and
    ``{ASCII-lowercased name bytes: record}``; or ``None`` at anything unusual - a bad
    signature or length, a ZIP64 field, a non-ASCII name, anything the pure parser
    refuses - so that the pure parser handles (and reports) it exactly as without the
    extension.
    """
    cdef const unsigned char* p = <const unsigned char*>cd
    cdef const unsigned char* s
    cdef Py_ssize_t n = len(cd), pos = 0, k, i, nlen, xlen, clen
    cdef uint32_t csize, usize, hoff
    cdef uint16_t flags, method
    cdef uint64_t nxt, prev = 0
    cdef unsigned char c
    cdef char* kp
    cdef _Span* spans
    cdef uint64_t* limits
    cdef Py_ssize_t* entry_at
    cdef list records
    cdef dict index
    cdef bytes key
    cdef bint ordered = True
    cdef PyTypeObject* cls = <PyTypeObject*>member_cls
    if not (isinstance(member_cls, type) and issubclass(member_cls, tuple)
            and member_cls.__itemsize__ == tuple.__itemsize__
            and member_cls.__basicsize__ == tuple.__basicsize__
            and len(member_cls._fields) == 9):
        raise TypeError("member_cls must be a namedtuple of 9 fields")
    if count < 0 or count > n // 46:
        return None
    spans = <_Span*>malloc((count + 1) * sizeof(_Span))
    limits = <uint64_t*>malloc((count + 1) * sizeof(uint64_t))
    entry_at = <Py_ssize_t*>malloc((count + 1) * sizeof(Py_ssize_t))
    if spans == NULL or limits == NULL or entry_at == NULL:
        free(spans)
        free(limits)
        free(entry_at)
        raise MemoryError()
    try:
        for k in range(count):
            if n - pos < 46 or p[pos] != 0x50 or p[pos + 1] != 0x4B or p[pos + 2] != 1 or p[pos + 3] != 2:
                return None
            nlen = _u2(p + pos + 28)
            xlen = _u2(p + pos + 30)
            clen = _u2(p + pos + 32)
            if 46 + nlen + xlen + clen > n - pos:
                return None
            flags = _u2(p + pos + 8)
            method = _u2(p + pos + 10)
            csize = _u4(p + pos + 20)
            usize = _u4(p + pos + 24)
            hoff = _u4(p + pos + 42)
            if csize == 0xFFFFFFFF or usize == 0xFFFFFFFF or hoff == 0xFFFFFFFF:
                return None
            if <Py_ssize_t>hoff + 30 > file_size:
                return None
            if flags & 0x2061 or _u2(p + pos + 34) != 0:  # encryption, patch data; another disk
                return None
            if (method == 0 and csize != usize) or (usize != 0 and csize == 0):
                return None
            if not _plain_name(p + pos + 46, nlen):
                return None
            # a member miniz takes for a directory (the MS-DOS directory attribute, or a
            # name ending in "/") that holds bytes: the pure parser refuses it
            if (csize != 0 or usize != 0) and (
                    p[pos + 38] & 0x10 or (nlen > 0 and p[pos + 46 + nlen - 1] == 47)):
                return None
            spans[k].start = hoff
            spans[k].end = <uint64_t>hoff + 30 + <uint64_t>nlen + csize + (12 if flags & 8 else 0)
            spans[k].index = k
            if k and prev >= hoff:
                ordered = False
            prev = hoff
            entry_at[k] = pos
            pos += 46 + nlen + xlen + clen
        if pos != n:
            return None
        if not ordered:  # torch writes the directory in file order: no sort needed
            qsort(spans, count, sizeof(_Span), _by_start)
        for k in range(count):
            nxt = spans[k + 1].start if k + 1 < count else <uint64_t>cd_start
            if spans[k].end > nxt or spans[k].end > <uint64_t>file_size:
                return None
            limits[spans[k].index] = nxt
        records = []
        index = {}
        for k in range(count):
            pos = entry_at[k]
            nlen = _u2(p + pos + 28)
            s = p + pos + 46
            key = PyBytes_FromStringAndSize(NULL, nlen)
            kp = PyBytes_AS_STRING(key)
            for i in range(nlen):
                c = s[i]
                kp[i] = <char>(c + 32 if 65 <= c <= 90 else c)
            rec = _record(
                cls,
                PyUnicode_DecodeASCII(<const char*>s, nlen, NULL),
                _u2(p + pos + 10),
                _u4(p + pos + 20),
                _u4(p + pos + 24),
                _u4(p + pos + 42),
                _u2(p + pos + 8),
                _u4(p + pos + 16),
                PyBytes_FromStringAndSize(<const char*>s, nlen),
                limits[k],
            )
            if PyDict_SetDefault(index, key, rec) != <PyObject*>rec:
                return None  # two names equal ignoring ASCII case
            records.append(rec)
        return records, index
    finally:
        free(spans)
        free(limits)
        free(entry_at)
