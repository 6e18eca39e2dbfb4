# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The restricted pickle interpreter in Cython: the same engine as ``pickle_vm.py``, faster.

The opcode loop runs over a C view of the bytes with C-level dispatch (the ``if code ==``
chain compiles to a switch) and bounds checks in C; everything object-level - globals,
constructors, BUILD, persistent ids, hashing guards, string decoding and every error
message - is shared with the pure engine through ``ckptpeek.unpickle.context`` (and its
``messages`` and ``select``). Branches are
in the same order as the pure handlers, so both engines fail on the same opcode with
the same error. The opcode numbers come from ``_opcodes.pxi``, generated from
``src/ckptpeek/unpickle/opcodes.py`` at build time; ``SPEC_DIGEST`` lets the package refuse an
extension built from another table.
"""

from libc.string cimport memchr, memcpy
from libc.stdint cimport int32_t, uint16_t, uint32_t, uint64_t
from cpython.unicode cimport PyUnicode_DecodeUTF8

include "_opcodes.pxi"

from . import context as C
from . import messages as S
from . import select as SEL
from ckptpeek.errors import CheckpointError, UnsupportedError
from ckptpeek.limits import DEFAULT_LIMITS

from .opcodes import BY_NAME
from .registry import KNOWN_GLOBALS
from .standins import Placeholder
from ckptpeek.tensor import StorageRef, StorageRef as _StorageRef, TensorRef as _TensorRef
from .torch_rebuild import StorageResolver
from ckptpeek.torch_types import Size as _Size, StorageType
from .context import PickleResult

ENGINE = "native"

cdef object _BAD_OPERAND = S.BAD_OPERAND
cdef object _UNSET = object()
cdef object _SKIPPED = SEL.SKIPPED
cdef frozenset _ATOMS = SEL._ATOMS
cdef tuple _CONTAINERS = SEL._CONTAINERS
cdef bint _GUARDED_OPS[256]  # SEL.GUARDED: the ops a selective run guards (see SEL.Tracker)
for _name in SEL.GUARDED:
    _GUARDED_OPS[BY_NAME[_name].code] = True


cdef inline bint _plain(object value):
    """select.plain, in C (the same atoms)."""
    if type(value) in _ATOMS:
        return True
    if type(value) is tuple:
        for item in <tuple>value:
            if type(item) not in _ATOMS:
                return False
        return True
    return False


# _is_fill_op, _is_text_op, _is_single_fill_op: generated into _opcodes.pxi from
# opcodes.OPCODE_GROUPS, the same sets the pure engine uses
cdef tuple _LIST_LIKE = (list, Placeholder)
cdef tuple _DICT_LIKE = (dict, Placeholder)
cdef tuple _SET_LIKE = (set, Placeholder)
cdef object _REBUILD_V2 = KNOWN_GLOBALS[("torch._utils", "_rebuild_tensor_v2")]
cdef object _ORDERED_DICT = KNOWN_GLOBALS[("collections", "OrderedDict")]
cdef object _OrderedDict = __import__("collections").OrderedDict


cdef inline bint _dims_ok(object size, object stride, object offset, object storage):
    """Whether ``_rebuild_tensor_v2``'s size, stride and offset pass ``torch_rebuild._ints``
    and ``tensor.check_layout`` (int64 values, element count, span inside ``storage``),
    proven in C: every product and sum is bounded before it is made, and an int that
    does not fit int64 stops the proof. False means: the slow path decides and raises
    (or, where only the proof gave up, e.g. sizes ``(2**32, 2**31, 0)``, builds it)."""
    cdef Py_ssize_t n, i
    cdef long long s, st, last, avail
    cdef long long numel = 1
    cdef long long imax = 0x7FFFFFFFFFFFFFFF
    if type(size) is not tuple or type(stride) is not tuple or type(offset) is not int:
        return False
    n = len(<tuple>size)
    if len(<tuple>stride) != n:
        return False
    try:
        last = offset
        avail = (<object>storage).numel
        if last < 0:
            return False
        for i in range(n):
            v = (<tuple>size)[i]
            w = (<tuple>stride)[i]
            if type(v) is not int or type(w) is not int:
                return False
            s = v
            st = w
            if s < 0 or st < 0:
                return False
            if s == 0:
                numel = 0
            elif numel != 0:
                if numel > imax // s:
                    return False
                numel *= s
            if s > 1 and st != 0:
                if st > (imax - last) // (s - 1):
                    return False
                last += (s - 1) * st
    except OverflowError:  # an int past int64
        return False
    # v2 views the storage in its own dtype: the last element must be one of its own
    return numel == 0 or last < avail


cdef object _fast_storage(object resolver, object pid):
    """``StorageResolver.__call__`` for well-formed ids, in C; None means: call it."""
    if type(pid) is not tuple or len(<tuple>pid) != 5:
        return None
    tag, stype, key, location, numel = <tuple>pid
    if type(key) is not str or type(tag) is not str or tag != "storage":
        return None
    cache = (<object>resolver).cache
    ref = cache.get(key)
    if ref is not None:
        return ref
    if (type(stype) is not StorageType or type(location) is not str or type(numel) is not int
            or numel < 0):
        return None
    size = (<object>resolver).sizes.get(key)
    if size is None or size < numel * (<object>stype).dtype.itemsize:
        return None
    # the same fields as StorageRef.__init__
    ref = _StorageRef.__new__(_StorageRef)
    ref.key = key
    ref.dtype = (<object>stype).dtype
    ref.numel = numel
    ref.location = location
    ref.reader = (<object>resolver).reader
    cache[key] = ref
    return ref


cdef object _fast_reduce(object func, tuple args):
    """The two calls every torch tensor makes, without the Python constructor.

    Returns None unless the arguments pass exactly the checks ``torch_rebuild._tensor``
    makes; then the slow path runs and raises (or builds) exactly as the pure engine.
    """
    cdef Py_ssize_t na = len(args)
    if func is _REBUILD_V2:
        if na != 6 and na != 7:
            return None
        storage, offset, size, stride, rg = args[0], args[1], args[2], args[3], args[4]
        metadata = args[6] if na == 7 else None
        if (type(storage) is not StorageRef or type(rg) is not bool
                or (metadata is not None and type(metadata) is not dict)
                or not _dims_ok(size, stride, offset, storage)):
            return None
        # the same fields, in the same way, as tensor.new_dense
        t = _TensorRef.__new__(_TensorRef)
        t.storage = storage
        t.dtype = (<object>storage).dtype
        t.shape = _Size(size)
        t._stride = stride
        t._offset = offset
        t.requires_grad = rg
        t.is_parameter = False
        t.kind = "dense"
        t.attrs = {}
        t.type_name = "torch.Tensor"
        t.metadata = metadata or {}
        t.components = {}
        return t
    if func is _ORDERED_DICT and na == 0:
        return _OrderedDict()
    return None


cdef inline uint16_t _u2(const unsigned char* p) noexcept nogil:
    return <uint16_t>p[0] | (<uint16_t>p[1] << 8)


cdef inline uint32_t _u4(const unsigned char* p) noexcept nogil:
    return (<uint32_t>p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16)
            | (<uint32_t>p[3] << 24))


cdef inline uint64_t _u8(const unsigned char* p) noexcept nogil:
    return <uint64_t>_u4(p) | (<uint64_t>_u4(p + 4) << 32)


cdef inline double _f8_big_endian(const unsigned char* p) noexcept nogil:
    cdef uint64_t bits = 0
    cdef int i
    cdef double value
    for i in range(8):
        bits = (bits << 8) | p[i]
    memcpy(&value, &bits, 8)
    return value


cdef class _CVM:
    cdef bytes data
    cdef const unsigned char* buf
    cdef Py_ssize_t n
    cdef Py_ssize_t lim       # the end of what may be read: the open frame's end, else n
    cdef Py_ssize_t frame_at  # the offset of the open FRAME opcode, -1 outside frames
    cdef Py_ssize_t op_pos
    cdef list stack
    cdef list metastack
    cdef list memo_list     # memo[i] for dense i (pickle writes 0, 1, 2, ...); _UNSET = empty
    cdef dict memo_dict     # any other index
    cdef Py_ssize_t memo_count
    cdef object ctx
    cdef Py_ssize_t max_memo
    cdef Py_ssize_t max_marks
    # selective runs (see pickle_vm._VM.run_selective, which this mirrors)
    cdef object select
    cdef bint selective
    cdef bint skipping
    cdef list base
    cdef dict fills
    cdef object tracker    # SEL.Tracker
    cdef dict tainted      # tracker.tainted (the same dict)
    cdef bint watching     # set at the first skip: before it, nothing can be SKIPPED

    def __cinit__(self, bytes data, ctx, select=None):
        self.data = data
        self.buf = <const unsigned char*>data
        self.n = len(data)
        self.lim = self.n
        self.frame_at = -1
        self.ctx = ctx
        self.max_memo = ctx.limits.max_memo
        self.max_marks = ctx.limits.max_marks
        self.stack = []
        self.metastack = []
        self.memo_list = []
        self.memo_dict = {}
        self.memo_count = 0
        self.op_pos = 0
        self.select = select
        self.selective = select is not None
        self.skipping = False
        self.base = None
        self.fills = {}
        self.tracker = SEL.Tracker(ctx.limits) if self.selective else None
        self.tainted = self.tracker.tainted if self.selective else None
        self.watching = False

    # -- helpers (mirror pickle_vm._VM's) ----------------------------------------------
    cdef inline int code(self):
        return self.buf[self.op_pos]

    cdef inline Py_ssize_t need(self, Py_ssize_t pos, Py_ssize_t k, str what) except -1:
        if k > self.lim - pos:
            raise S.short(what, k, self.lim - pos, self.frame_at, self.op_pos)
        return pos + k

    cdef Py_ssize_t need_u64(self, Py_ssize_t pos, uint64_t k, str what) except -1:
        if k > <uint64_t>(self.lim - pos):
            raise S.short(what, k, self.lim - pos, self.frame_at, self.op_pos)
        return pos + <Py_ssize_t>k

    cdef Py_ssize_t line_end(self, Py_ssize_t pos, str what) except -1:
        """Offset of the newline that ends the text argument starting at ``pos`` (within
        the open frame, if any)."""
        cdef const void* hit = NULL
        if pos < self.lim:
            hit = memchr(self.buf + pos, 10, self.lim - pos)
        if hit == NULL:
            raise S.no_line(what, self.frame_at, self.op_pos)
        return <const unsigned char*>hit - self.buf

    cdef inline object pop(self):
        if not self.stack:
            raise S.underflow(self.code(), self.op_pos)
        return self.stack.pop()

    cdef inline object top(self):
        if not self.stack:
            raise S.underflow(self.code(), self.op_pos)
        return self.stack[len(self.stack) - 1]

    cdef list pop_mark(self):
        cdef list items
        if not self.metastack:
            raise S.mark_missing(self.code(), self.op_pos)
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    cdef int memo_put(self, Py_ssize_t idx) except -1:
        """memo[idx] = top: the same checks, in the same order, as pickle_vm._VM.memo_put
        (``idx`` is never negative here: BINPUT/LONG_BINPUT are unsigned, PUT checks)."""
        cdef Py_ssize_t size = len(self.memo_list)
        cdef bint present
        if not self.stack:
            raise S.underflow(self.code(), self.op_pos)
        if idx < size:
            present = self.memo_list[idx] is not _UNSET
        else:
            present = bool(self.memo_dict) and idx in self.memo_dict
        if self.memo_count >= self.max_memo and not present:
            raise S.memo_full(self.max_memo, self.op_pos)
        value = self.stack[len(self.stack) - 1]
        if idx < size:
            self.memo_list[idx] = value
        elif idx == size and not present:
            self.memo_list.append(value)
        else:
            self.memo_dict[idx] = value
        if not present:
            self.memo_count += 1
        return 0

    cdef int memo_put_text(self, object idx) except -1:
        """PUT's decimal index: any Python int."""
        if not self.stack:
            raise S.underflow(self.code(), self.op_pos)
        if idx < 0:
            raise S.bad_argument(f"negative memo index {idx}", self.op_pos)
        if idx <= 0x7FFFFFFF:
            return self.memo_put(idx)
        if self.memo_count >= self.max_memo and idx not in self.memo_dict:
            raise S.memo_full(self.max_memo, self.op_pos)
        if idx not in self.memo_dict:
            self.memo_count += 1
        self.memo_dict[idx] = self.stack[len(self.stack) - 1]
        return 0

    cdef int memo_get(self, Py_ssize_t idx) except -1:
        cdef object value = _UNSET
        if 0 <= idx < len(self.memo_list):
            value = self.memo_list[idx]
        if value is _UNSET and self.memo_dict:
            value = self.memo_dict.get(idx, _UNSET)
        if value is _UNSET:
            raise S.memo_missing(idx, self.op_pos)
        self.stack.append(value)
        return 0

    cdef int memo_get_text(self, object idx) except -1:
        if 0 <= idx <= 0x7FFFFFFF:
            return self.memo_get(idx)
        value = self.memo_dict.get(idx, _UNSET)
        if value is _UNSET:
            raise S.memo_missing(idx, self.op_pos)
        self.stack.append(value)
        return 0

    cdef object target(self, tuple kinds, str what):
        t = self.top()
        if not isinstance(t, kinds):
            raise S.wrong_target(self.code(), t, what, self.op_pos)
        return t

    cdef object text(self, Py_ssize_t start, Py_ssize_t end, str what):
        """UTF-8 text; on bad bytes the shared decoder raises the shared error."""
        try:
            return PyUnicode_DecodeUTF8(<const char*>self.buf + start, end - start,
                                        "surrogatepass")
        except UnicodeDecodeError:
            return S.decode_text(self.data[start:end], what, self.op_pos)

    cdef Py_ssize_t sized(self, Py_ssize_t pos, int width, str what, Py_ssize_t* start) except -1:
        """Read a 1-, 4- or 8-byte length at ``pos``; check the data is there."""
        cdef uint64_t k
        start[0] = self.need(pos, width, what)
        if width == 1:
            k = self.buf[pos]
        elif width == 4:
            k = _u4(self.buf + pos)
        else:
            k = _u8(self.buf + pos)
        return self.need_u64(start[0], k, what)

    # -- selective runs ------------------------------------------------------------------
    cdef Py_ssize_t fill_size(self, int code):
        """Items the fill op about to run adds to a root-level container (else -1)."""
        cdef Py_ssize_t depth = len(self.metastack)
        if _is_single_fill_op(code):
            return 1 if depth == 1 and self.metastack[0] is self.base else -1
        if depth == 2 and self.metastack[0] is self.base:
            return len(self.stack) // 2 if code == OP_SETITEMS else len(self.stack)
        return -1

    cdef int post_op(self, int code, Py_ssize_t filled) except -1:
        """Track the root's keys after an op (pickle_vm._VM.run_selective's bookkeeping)."""
        cdef list stack
        cdef Py_ssize_t size
        if len(self.metastack) > 1:
            return 0
        if self.base is None:
            if code == OP_EMPTY_DICT and len(self.stack) == 1 and not self.metastack:
                self.base = self.stack
        elif not self.metastack:
            self.skipping = False
        elif self.metastack[0] is self.base:
            stack = self.stack
            size = len(stack)
            if filled >= 0 and size:
                self.fills[id(stack[size - 1])] = filled
            elif size & 1 and _is_text_op(code) and type(stack[size - 1]) is str:
                if size == 1 or not SEL.maybe_open(stack[size - 2], self.fills):
                    self.skipping = stack[size - 1] not in self.select
        return 0

    cdef Py_ssize_t skip_op(self, int code, Py_ssize_t pos) except -3:
        """The skipped variant of an op (pickle_vm._VM.skip_*): the same operands are
        consumed and SKIPPED pushed. Returns the next offset, or -2 to run the op as usual
        (BUILD, which the guard decides, and fills of real objects), or -1 if the op has
        no skipped variant."""
        cdef Py_ssize_t end, k
        cdef list below, items
        cdef int npop
        if code == OP_EMPTY_DICT or code == OP_EMPTY_LIST or code == OP_EMPTY_SET:
            pass
        elif code == OP_EMPTY_TUPLE:
            self.stack.append(())
            return pos
        elif code == OP_TUPLE or code == OP_TUPLE1 or code == OP_TUPLE2 or code == OP_TUPLE3:
            # built if made of plain values (a storage's id, a shape), else SKIPPED
            if code == OP_TUPLE:
                items = self.pop_mark()
            else:
                k = 1 if code == OP_TUPLE1 else 2 if code == OP_TUPLE2 else 3
                if len(self.stack) < k:
                    raise S.underflow(code, self.op_pos)
                items = self.stack[len(self.stack) - k:]
                del self.stack[len(self.stack) - k:]
            for a in items:
                if not _plain(a):
                    self.taint(items)  # swallowed (pickle_vm._VM._swallow)
                    break
            else:
                self.stack.append(tuple(items))
                return pos
        elif code == OP_LIST or code == OP_DICT or code == OP_FROZENSET:
            self.taint(self.pop_mark())
        elif code == OP_OBJ:
            self.taint(self.pop_mark())
        elif code == OP_REDUCE or code == OP_NEWOBJ:
            b = self.pop()
            a = self.pop()
            if not ((a is _SKIPPED or _plain(a)) and (b is _SKIPPED or _plain(b))):
                self.tracker.taint(a, b)
        elif code == OP_NEWOBJ_EX:
            c = self.pop()
            b = self.pop()
            a = self.pop()
            self.taint([a, b, c])
        elif code == OP_BINPERSID:
            self.tracker.skipped_id(self.pop())
        elif code == OP_PERSID:
            end = self.line_end(pos, "PERSID")
            self.tracker.skipped_id(self.data[pos:end].decode("ascii", "replace"))
            pos = end + 1
        elif code == OP_INST:
            end = self.line_end(pos, "INST")
            a = self.data[pos:end]
            pos = end + 1
            end = self.line_end(pos, "INST")
            b = self.data[pos:end]
            pos = end + 1
            self.ctx.find_global(S.decode_text(a, "INST", self.op_pos),
                                 S.decode_text(b, "INST", self.op_pos), self.op_pos)
            self.taint(self.pop_mark())
        elif code == OP_BUILD:
            return -2
        elif code == OP_APPEND or code == OP_SETITEM:
            npop = 1 if code == OP_APPEND else 2
            if len(self.stack) >= npop + 1 and self.stack[len(self.stack) - npop - 1] is _SKIPPED:
                self.taint(self.stack[len(self.stack) - npop:])
                del self.stack[len(self.stack) - npop:]
                return pos
            return -2
        elif code == OP_APPENDS or code == OP_SETITEMS or code == OP_ADDITEMS:
            if not self.metastack:
                raise S.mark_missing(code, self.op_pos)
            below = self.metastack[len(self.metastack) - 1]
            if below and below[len(below) - 1] is _SKIPPED:
                self.taint(self.pop_mark())
                return pos
            return -2
        else:
            return -1
        self.stack.append(_SKIPPED)
        return pos

    cdef int taint(self, list values) except -1:
        """tracker.taint(*values) (what a skipped op swallows), unless every value is
        SKIPPED or plain (nothing to do)."""
        for a in values:
            if not (a is _SKIPPED or _plain(a)):
                self.tracker.taint(*values)
                return 0
        return 0

    cdef bint clean(self, object value, int depth):
        """True if ``value`` certainly reaches no SKIPPED or tainted object (the cases
        tracker.reaches settles without a walk, and tuples of them); False: ask it."""
        t = type(value)
        if t in _ATOMS:
            return True
        if value is _SKIPPED or (self.tainted and id(value) in self.tainted):
            return False
        if t is tuple:
            if depth == 0:
                return False
            for a in <tuple>value:
                if not self.clean(a, depth - 1):
                    return False
            return True
        if t is dict or t is list or t is set or t is frozenset:
            return len(value) == 0
        if isinstance(value, _CONTAINERS) and len(value) == 0:
            return not getattr(value, "__dict__", 1)
        return False

    cdef Py_ssize_t guard_op(self, int code, Py_ssize_t pos) except -3:
        """An op of SEL.GUARDED once anything was skipped (pickle_vm._VM.guard_*): replaced
        (returns the next offset) if an operand reaches SKIPPED or a tainted object, else
        -2: run it as usual."""
        cdef list st = self.stack
        cdef Py_ssize_t n = len(st), end
        tracker = self.tracker
        if code == OP_REDUCE or code == OP_NEWOBJ:
            if (n >= 2 and (type(st[n - 1]) is tuple or st[n - 1] is _SKIPPED)
                    and not (self.clean(st[n - 2], 2) and self.clean(st[n - 1], 2))
                    and tracker.reaches(st[n - 2], st[n - 1])):
                return self.skip_op(code, pos)
        elif code == OP_NEWOBJ_EX:
            if (n >= 3 and (type(st[n - 2]) is tuple or st[n - 2] is _SKIPPED)
                    and (type(st[n - 1]) is dict or st[n - 1] is _SKIPPED)
                    and tracker.reaches(st[n - 3], st[n - 2], st[n - 1])):
                return self.skip_op(code, pos)
        elif code == OP_OBJ or code == OP_INST:
            if self.metastack and tracker.reaches(*st):
                return self.skip_op(code, pos)
        elif code == OP_BUILD:
            if n >= 2:
                a = st[n - 2]
                b = st[n - 1]
                if a is _SKIPPED or tracker.reaches(a, b):
                    # not built: what the BUILD could change is not what a full run has
                    tracker.taint(a, b)
                    st.pop()
                    return pos
        elif code == OP_BINPERSID:
            if n and ((not tracker.flush(self.ctx.persistent, self.op_pos)
                       if tracker.pending else tracker.blind)
                      or not self.clean(st[n - 1], 2) and tracker.reaches(st[n - 1])):
                tracker.blind = True
                st[n - 1] = _SKIPPED
                return pos
        elif code == OP_PERSID:
            if not tracker.flush(self.ctx.persistent, self.op_pos):
                end = self.line_end(pos, "PERSID")
                st.append(_SKIPPED)
                return end + 1
        return -2

    # -- the loop ------------------------------------------------------------------------
    cdef object run(self):
        try:
            value = self._run()
            return self.tracker.outcome(value) if self.selective else value
        except CheckpointError:
            raise
        except _BAD_OPERAND as exc:
            raise S.bad_operand(f"{S.opname(self.code())} cannot be applied here: {exc}",
                                self.op_pos) from None

    cdef object _run(self):
        cdef const unsigned char* buf = self.buf
        cdef Py_ssize_t n = self.n
        cdef Py_ssize_t lim = self.n  # == self.lim: the open frame's end, else n
        cdef Py_ssize_t pos = 0, end = 0, start = 0, i
        cdef int code
        cdef int32_t i4
        cdef list items
        cdef object a, b, c, value, key, t, ctx = self.ctx
        cdef object fast_storages = (ctx.persistent_load
                                     if type(ctx.persistent_load) is StorageResolver else None)
        cdef bint selective = self.selective
        cdef Py_ssize_t depth, filled = -1, skipped
        while True:
            if pos >= lim:
                if self.frame_at < 0:
                    break
                self.frame_at = -1  # the frame is read to its end (pickle_vm: end_frame)
                lim = self.lim = n
                continue
            self.op_pos = pos
            code = buf[pos]
            pos += 1
            if selective:
                depth = len(self.metastack)
                filled = -1
                if depth <= 2 and self.base is not None and _is_fill_op(code):
                    filled = self.fill_size(code)
                skipped = -1
                if self.skipping and depth >= 2:
                    skipped = self.skip_op(code, pos)
                    if skipped != -1:
                        self.watching = True
                if skipped == -2 or (self.watching and skipped == -1 and _GUARDED_OPS[code]):
                    skipped = self.guard_op(code, pos)
                if skipped >= 0:
                    pos = skipped
                    if len(self.metastack) <= 1:
                        self.post_op(code, filled)
                    continue
            # --- the hot opcodes of torch pickles first -----------------------------
            if code == OP_BINPUT:
                end = self.need(pos, 1, "BINPUT")
                self.memo_put(buf[pos])
                pos = end
            elif code == OP_LONG_BINPUT:
                end = self.need(pos, 4, "LONG_BINPUT")
                self.memo_put(_u4(buf + pos))
                pos = end
            elif code == OP_BINGET:
                end = self.need(pos, 1, "BINGET")
                self.memo_get(buf[pos])
                pos = end
            elif code == OP_LONG_BINGET:
                end = self.need(pos, 4, "LONG_BINGET")
                self.memo_get(_u4(buf + pos))
                pos = end
            elif code == OP_MARK:
                if len(self.metastack) >= self.max_marks:
                    raise S.marks_full(self.max_marks, self.op_pos)
                self.metastack.append(self.stack)
                self.stack = []
            elif code == OP_BININT1:
                end = self.need(pos, 1, "BININT1")
                self.stack.append(buf[pos])
                pos = end
            elif code == OP_BININT:
                end = self.need(pos, 4, "BININT")
                i4 = <int32_t>_u4(buf + pos)
                self.stack.append(i4)
                pos = end
            elif code == OP_BININT2:
                end = self.need(pos, 2, "BININT2")
                self.stack.append(_u2(buf + pos))
                pos = end
            elif code == OP_SHORT_BINUNICODE:
                end = self.sized(pos, 1, "SHORT_BINUNICODE", &start)
                self.stack.append(self.text(start, end, "SHORT_BINUNICODE"))
                pos = end
            elif code == OP_BINUNICODE:
                end = self.sized(pos, 4, "BINUNICODE", &start)
                self.stack.append(self.text(start, end, "BINUNICODE"))
                pos = end
            elif code == OP_TUPLE:
                items = self.pop_mark()
                self.stack.append(tuple(items))
            elif code == OP_TUPLE1:
                a = self.pop()
                self.stack.append((a,))
            elif code == OP_TUPLE2:
                b = self.pop()
                a = self.pop()
                self.stack.append((a, b))
            elif code == OP_TUPLE3:
                c = self.pop()
                b = self.pop()
                a = self.pop()
                self.stack.append((a, b, c))
            elif code == OP_EMPTY_TUPLE:
                self.stack.append(())
            elif code == OP_EMPTY_DICT:
                self.stack.append({})
            elif code == OP_EMPTY_LIST:
                self.stack.append([])
            elif code == OP_NONE:
                self.stack.append(None)
            elif code == OP_NEWTRUE:
                self.stack.append(True)
            elif code == OP_NEWFALSE:
                self.stack.append(False)
            elif code == OP_REDUCE:
                a = self.pop()
                b = self.pop()
                if type(a) is not tuple:
                    raise S.bad_operand("REDUCE arguments must be a tuple", self.op_pos)
                value = _fast_reduce(b, <tuple>a)
                if value is None:
                    value = ctx.instantiate(b, a, None, "REDUCE", self.op_pos)
                self.stack.append(value)
            elif code == OP_BINPERSID:
                a = self.pop()
                value = None
                if fast_storages is not None:
                    value = _fast_storage(fast_storages, a)
                if value is None:
                    value = ctx.persistent(a, self.op_pos)
                self.stack.append(value)
            elif code == OP_SETITEMS:
                items = self.pop_mark()
                if len(items) % 2:
                    raise S.bad_operand("SETITEMS with an odd number of items", self.op_pos)
                t = self.target(_DICT_LIKE, "dict")
                for i in range(0, len(items), 2):
                    key = items[i]
                    if type(key) is not str:  # text passes the key guard at once
                        ctx.check_hashable(key, t, self.op_pos)
                    t[key] = items[i + 1]
            elif code == OP_SETITEM:
                value = self.pop()
                key = self.pop()
                t = self.target(_DICT_LIKE, "dict")
                if type(key) is not str:
                    ctx.check_hashable(key, t, self.op_pos)
                t[key] = value
            elif code == OP_APPENDS:
                items = self.pop_mark()
                self.target(_LIST_LIKE, "list").extend(items)
            elif code == OP_APPEND:
                value = self.pop()
                self.target(_LIST_LIKE, "list").append(value)
            elif code == OP_STOP:
                value = self.pop()
                ctx.end = pos
                return value
            elif code == OP_GLOBAL:
                end = self.line_end(pos, "GLOBAL")
                a = self.data[pos:end]
                pos = end + 1
                end = self.line_end(pos, "GLOBAL")
                b = self.data[pos:end]
                pos = end + 1
                self.stack.append(ctx.find_global(S.decode_text(a, "GLOBAL", self.op_pos),
                                                  S.decode_text(b, "GLOBAL", self.op_pos),
                                                  self.op_pos))
            elif code == OP_STACK_GLOBAL:
                b = self.pop()
                a = self.pop()
                if type(a) is not str or type(b) is not str:
                    raise S.bad_operand("STACK_GLOBAL needs two strings", self.op_pos)
                self.stack.append(ctx.find_global(a, b, self.op_pos))
            elif code == OP_MEMOIZE:
                self.memo_put(self.memo_count)
            elif code == OP_PROTO:
                end = self.need(pos, 1, "PROTO")
                if buf[pos] > HIGHEST_PROTO:
                    raise S.error("protocol-too-new",
                                  f"pickle protocol {buf[pos]} is newer than {HIGHEST_PROTO}",
                                  self.op_pos)
                pos = end
            elif code == OP_FRAME:
                if self.frame_at >= 0:
                    raise S.frame_nested(self.frame_at, lim - self.op_pos, self.op_pos)
                end = self.need(pos, 8, "FRAME")
                lim = self.lim = self.need_u64(end, _u8(buf + pos), "FRAME contents")
                self.frame_at = self.op_pos
                pos = end
            # --- everything else, in the order of pickle_vm.py ------------------------
            elif code == OP_POP:
                if self.stack:
                    self.stack.pop()
                else:
                    self.pop_mark()
            elif code == OP_POP_MARK:
                self.pop_mark()
            elif code == OP_DUP:
                a = self.top()
                self.stack.append(a)
            elif code == OP_INT:
                end = self.line_end(pos, "INT")
                a = self.data[pos:end]
                pos = end + 1
                if a == b"00":
                    self.stack.append(False)
                elif a == b"01":
                    self.stack.append(True)
                else:
                    self.stack.append(S.int_text(a, "INT", self.op_pos))
            elif code == OP_LONG:
                end = self.line_end(pos, "LONG")
                a = self.data[pos:end]
                pos = end + 1
                self.stack.append(S.int_text(a[:len(a) - 1] if a.endswith(b"L") else a, "LONG",
                                             self.op_pos))
            elif code == OP_LONG1:
                self.need(pos, 1, "LONG1")
                start = pos + 1
                end = self.need(start, buf[pos], "LONG data")
                self.stack.append(int.from_bytes(self.data[start:end], "little", signed=True))
                pos = end
            elif code == OP_LONG4:
                self.need(pos, 4, "LONG4")
                i4 = <int32_t>_u4(buf + pos)
                if i4 < 0:
                    raise S.bad_argument("LONG4 with a negative length", self.op_pos)
                start = pos + 4
                end = self.need(start, i4, "LONG data")
                self.stack.append(int.from_bytes(self.data[start:end], "little", signed=True))
                pos = end
            elif code == OP_FLOAT:
                end = self.line_end(pos, "FLOAT")
                a = self.data[pos:end]
                pos = end + 1
                self.stack.append(S.float_text(a, self.op_pos))
            elif code == OP_BINFLOAT:
                end = self.need(pos, 8, "BINFLOAT")
                self.stack.append(_f8_big_endian(buf + pos))
                pos = end
            elif code == OP_BINUNICODE8:
                end = self.sized(pos, 8, "BINUNICODE8", &start)
                self.stack.append(self.text(start, end, "BINUNICODE8"))
                pos = end
            elif code == OP_UNICODE:
                end = self.line_end(pos, "UNICODE")
                a = self.data[pos:end]
                pos = end + 1
                self.stack.append(S.unicode_text(a, self.op_pos))
            elif code == OP_SHORT_BINBYTES:
                end = self.sized(pos, 1, "SHORT_BINBYTES", &start)
                self.stack.append(self.data[start:end])
                pos = end
            elif code == OP_BINBYTES:
                end = self.sized(pos, 4, "BINBYTES", &start)
                self.stack.append(self.data[start:end])
                pos = end
            elif code == OP_BINBYTES8:
                end = self.sized(pos, 8, "BINBYTES8", &start)
                self.stack.append(self.data[start:end])
                pos = end
            elif code == OP_BYTEARRAY8:
                end = self.sized(pos, 8, "BYTEARRAY8", &start)
                self.stack.append(bytearray(self.data[start:end]))
                pos = end
            elif code == OP_SHORT_BINSTRING:
                end = self.sized(pos, 1, "SHORT_BINSTRING", &start)
                self.stack.append(ctx.py2_string(self.data[start:end]))
                pos = end
            elif code == OP_BINSTRING:
                self.need(pos, 4, "BINSTRING")
                if <int32_t>_u4(buf + pos) < 0:
                    raise S.bad_argument("BINSTRING with a negative length", self.op_pos)
                end = self.sized(pos, 4, "BINSTRING", &start)
                self.stack.append(ctx.py2_string(self.data[start:end]))
                pos = end
            elif code == OP_STRING:
                end = self.line_end(pos, "STRING")
                a = self.data[pos:end]
                pos = end + 1
                self.stack.append(ctx.py2_string(S.quoted_bytes(a, self.op_pos)))
            elif code == OP_NEXT_BUFFER:
                raise S.error("unsupported-opcode",
                              "NEXT_BUFFER needs out-of-band buffers, which checkpoints never carry",
                              self.op_pos)
            elif code == OP_READONLY_BUFFER:
                self.top()
            elif code == OP_EMPTY_SET:
                self.stack.append(set())
            elif code == OP_LIST:
                items = self.pop_mark()
                self.stack.append(items)
            elif code == OP_FROZENSET:
                items = self.pop_mark()
                for a in items:
                    if type(a) is not str:
                        ctx.check_hashable(a, items, self.op_pos)
                self.stack.append(frozenset(items))
            elif code == OP_DICT:
                items = self.pop_mark()
                if len(items) % 2:
                    raise S.bad_operand("DICT with an odd number of items", self.op_pos)
                a = {}
                for i in range(0, len(items), 2):
                    if type(items[i]) is not str:
                        ctx.check_hashable(items[i], a, self.op_pos)
                    a[items[i]] = items[i + 1]
                self.stack.append(a)
            elif code == OP_ADDITEMS:
                items = self.pop_mark()
                t = self.target(_SET_LIKE, "set")
                for a in items:
                    if type(a) is not str:
                        ctx.check_hashable(a, t, self.op_pos)
                    if isinstance(t, set):
                        t.add(a)
                    else:
                        t.append(a)
            elif code == OP_PUT:
                end = self.line_end(pos, "PUT")
                a = self.data[pos:end]
                pos = end + 1
                self.memo_put_text(S.int_text(a, "PUT", self.op_pos))
            elif code == OP_GET:
                end = self.line_end(pos, "GET")
                a = self.data[pos:end]
                pos = end + 1
                self.memo_get_text(S.int_text(a, "GET", self.op_pos))
            elif code == OP_EXT1:
                end = self.need(pos, 1, "EXT1")
                self.stack.append(ctx.extension(buf[pos], self.op_pos))
                pos = end
            elif code == OP_EXT2:
                end = self.need(pos, 2, "EXT2")
                self.stack.append(ctx.extension(_u2(buf + pos), self.op_pos))
                pos = end
            elif code == OP_EXT4:
                end = self.need(pos, 4, "EXT4")
                i4 = <int32_t>_u4(buf + pos)
                self.stack.append(ctx.extension(i4, self.op_pos))
                pos = end
            elif code == OP_NEWOBJ:
                a = self.pop()
                b = self.pop()
                if type(a) is not tuple:
                    raise S.bad_operand("NEWOBJ arguments must be a tuple", self.op_pos)
                self.stack.append(ctx.instantiate(b, a, {}, "NEWOBJ", self.op_pos))
            elif code == OP_NEWOBJ_EX:
                c = self.pop()
                a = self.pop()
                b = self.pop()
                if type(a) is not tuple or type(c) is not dict:
                    raise S.bad_operand("NEWOBJ_EX needs a tuple and a dict", self.op_pos)
                self.stack.append(ctx.instantiate(b, a, c, "NEWOBJ_EX", self.op_pos))
            elif code == OP_INST:
                end = self.line_end(pos, "INST")
                a = self.data[pos:end]
                pos = end + 1
                end = self.line_end(pos, "INST")
                b = self.data[pos:end]
                pos = end + 1
                t = ctx.find_global(S.decode_text(a, "INST", self.op_pos),
                                    S.decode_text(b, "INST", self.op_pos), self.op_pos)
                items = self.pop_mark()
                self.stack.append(ctx.instantiate(t, tuple(items), None, "INST", self.op_pos))
            elif code == OP_OBJ:
                items = self.pop_mark()
                if not items:
                    raise S.underflow(code, self.op_pos)
                self.stack.append(ctx.instantiate(items[0], tuple(items[1:]), None, "OBJ",
                                                  self.op_pos))
            elif code == OP_BUILD:
                a = self.pop()
                ctx.build(self.top(), a, self.op_pos)
            elif code == OP_PERSID:
                end = self.line_end(pos, "PERSID")
                a = self.data[pos:end]
                pos = end + 1
                self.stack.append(ctx.persistent(a.decode("ascii", "replace"), self.op_pos))
            else:
                raise S.unknown_opcode(code, self.op_pos)
            if selective and len(self.metastack) <= 1:
                self.post_op(code, filled)
        raise S.no_stop(n)


def run_pickle(data, *, persistent_load=None, strict=False, limits=DEFAULT_LIMITS,
               encoding="utf-8", select=None, extra_globals=None):
    """Same contract as ``ckptpeek.unpickle.pickle_vm.run_pickle`` (both go through
    ``context.drive``)."""
    return C.drive(_run, data, persistent_load=persistent_load, strict=strict, limits=limits,
                   encoding=encoding, select=select, extra_globals=extra_globals)


def _run(bytes data, ctx, select):
    return (<_CVM>_CVM(data, ctx, select)).run()
