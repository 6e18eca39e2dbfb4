"""The one exception hierarchy of ckptpeek.

Every error carries a stable ``code`` (kebab-case), and where it applies the file
``path``, the archive ``member`` and the byte ``offset`` (within that member) at which
the problem was found. The message is rendered in one place, tomli-style::

    unknown opcode 0xf3 (at byte 1187 of archive/data.pkl in epoch=3-step=1200.ckpt)
"""

from __future__ import annotations

from ._text import printable

TYPE_CHECKING = False  # typing is not imported at run time: `import ckptpeek` stays light
if TYPE_CHECKING:
    from typing import Any

__all__ = (
    "ERROR_CODES",
    "error",
    "CheckpointError",
    "FormatError",
    "UnsafePickleError",
    "UnsupportedError",
    "LimitError",
)


class CheckpointError(Exception):
    """Base of every error ckptpeek raises on a file.

    Attributes:
        code: a stable kebab-case identifier of the cause (see the README's table).
        path: the file (or ``None`` for an anonymous file object).
        member: the archive member the problem is in, when the format has members.
        offset: byte offset within ``member`` (or within the file when ``member`` is None).
    """

    def __init__(
        self,
        msg: str,
        *,
        code: str,
        path: str | None = None,
        member: str | None = None,
        offset: int | None = None,
        **details: Any,
    ) -> None:
        if type(self) is CheckpointError:
            raise TypeError("raise a subclass of CheckpointError, not the base class")
        self.msg = msg
        self.code = code
        self.path = path
        self.member = member
        self.offset = offset
        self.details = details
        super().__init__(msg)

    def located(
        self, *, path: str | None = None, member: str | None = None, offset_base: int = 0
    ) -> CheckpointError:
        """Fill in where the error happened, keeping what is already known.

        Readers that run an inner parser over a member (the pickle VM knows only the
        offset within its bytes) call this on the way out; ``offset_base`` shifts an
        offset found in a sub-buffer.
        """
        if self.path is None:
            self.path = path
        if self.member is None:
            self.member = member
        if self.offset is not None and offset_base:
            self.offset += offset_base
        return self

    def __str__(self) -> str:
        """The message and where, on one line that is safe to print: the member name, the
        path and the text a message quotes come from the file (or its name) and may hold
        ESC sequences, newlines or lone surrogates, so they are escaped here (``.msg``,
        ``.path`` and ``.member`` keep the raw values)."""
        where = []
        if self.offset is not None:
            where.append(f"byte {self.offset}")
        if self.member is not None:
            where.append(("of " if where else "") + self.member)
        if self.path is not None:
            where.append(("in " if where else "") + str(self.path))
        return printable(f"{self.msg} (at {' '.join(where)})" if where else self.msg)

    def __reduce__(self) -> Any:  # keep errors picklable across process pools
        return (
            _rebuild_error,
            (type(self), self.msg, self.code, self.path, self.member, self.offset, self.details),
        )


def _rebuild_error(
    cls: type[CheckpointError],
    msg: str,
    code: str,
    path: str | None,
    member: str | None,
    offset: int | None,
    details: dict[str, Any],
) -> CheckpointError:
    return cls(msg, code=code, path=path, member=member, offset=offset, **details)


class FormatError(CheckpointError, ValueError):
    """The bytes are not a valid instance of the format they claim (corrupt, truncated, lying)."""


class UnsafePickleError(CheckpointError):
    """A well-formed pickle names a global that is not known to be safe (``strict=True``)."""


class UnsupportedError(CheckpointError):
    """A valid file using a format or feature ckptpeek does not read (yet)."""


class LimitError(CheckpointError):
    """A resource guard tripped (pickle size, nesting depth, memo size, container length)."""


#: every error code, the class that carries it, and what it means (the README's table
#: is checked against this, and this against the codes the sources raise)
ERROR_CODES: dict[str, tuple[type[CheckpointError], str]] = {
    # the file as a whole
    "empty-file": (FormatError, "the file has no bytes"),
    "unknown-format": (FormatError, "the bytes are no checkpoint format ckptpeek knows"),
    "truncated": (FormatError, "a record, member or pickle ends before its stated length"),
    "file-changed": (FormatError, "the file changed size between opening and a tensor read"),
    "torch-refused": (
        UnsupportedError,
        "fallback='torch': torch.load could not read the file either",
    ),
    "needs-path": (
        UnsupportedError,
        "a checkpoint that refers to other files, opened as a file object",
    ),
    # legacy torch.save (torch_legacy.py)
    "legacy-bad-magic": (FormatError, "the first pickle is not torch's magic number"),
    "legacy-bad-version": (FormatError, "the protocol-version pickle is not 1001"),
    "legacy-bad-header": (
        FormatError,
        "the storage-key list is not what torch writes (sys_info is not checked: torch ignores it)",
    ),
    "legacy-storage-mismatch": (
        FormatError,
        "a storage's 8-byte element count disagrees with its persistent id",
    ),
    "tar-bad-header": (
        FormatError,
        "a tar header is malformed (checksum, number field, PAX records, no member after PAX)",
    ),
    "tar-missing-member": (FormatError, "the tar lacks its storages, tensors or pickle member"),
    "tar-bad-record": (
        FormatError,
        "a storage/tensor/view record in the tar's members is malformed",
    ),
    "tar-extended-header": (
        FormatError,
        "a GNU long-name/long-link record, a global or Solaris PAX header, or a PAX record "
        "other than times, owner, comment and size: names readers resolve differently",
    ),
    "tar-duplicate-member": (
        FormatError,
        "two tar members have the same name (tarfile, and so torch, reads the last)",
    ),
    "tar-member-type": (
        FormatError,
        "a tar member that is not a regular file (link, directory, device, sparse, unknown)",
    ),
    "tar-pickle-polyglot": (
        FormatError,
        "the file is a tar and also starts with a pickle: torch reads the tar from a path, "
        "the pickles from a file object",
    ),
    "legacy-frame-overrun": (
        FormatError,
        "a pickle of a legacy or tar file ends inside a FRAME that runs past its STOP: "
        "where the next pickle starts depends on how the file is opened",
    ),
    # TorchScript (torchscript.py) and torch.distributed.checkpoint (dcp.py)
    "torchscript-bad-root": (
        FormatError,
        "data.pkl of a TorchScript archive holds no __torch__ object",
    ),
    "torchscript-bad-constants": (FormatError, "constants.pkl does not hold a tuple"),
    "torchscript-bad-code": (
        FormatError,
        "a class's __parameters__/__buffers__ line in code/ is not a literal list of strings",
    ),
    "dcp-bad-metadata": (
        FormatError,
        "a DCP .metadata that is no Metadata, is inconsistent, or names a data path outside the directory",
    ),
    "dcp-missing-file": (FormatError, "a data file named by .metadata is absent"),
    "dcp-missing-item": (FormatError, "a chunk or bytes entry has no storage_data entry"),
    "dcp-bad-range": (FormatError, "an item's byte range reaches past the end of its data file"),
    "dcp-item-mismatch": (
        FormatError,
        "a chunk's stored tensor has another dtype or shape than .metadata says",
    ),
    "dcp-item-format": (
        UnsupportedError,
        "numpy() of a DCP chunk whose item is not a torch.save archive",
    ),
    "dcp-transform": (
        UnsupportedError,
        "numpy() of a DCP chunk stored with transforms (e.g. compression)",
    ),
    "dcp-partial-tensor": (
        UnsupportedError,
        "numpy() of a DCP tensor whose saved chunks do not cover it",
    ),
    # safetensors (safetensors.py) and Hugging Face indexes (sharded.py)
    "st-header-too-small": (
        FormatError,
        "a safetensors file shorter than its 8-byte header length",
    ),
    "st-header-too-large": (
        LimitError,
        "a safetensors header length over 100,000,000 (the format's maximum)",
    ),
    "st-invalid-header-length": (
        FormatError,
        "8 + the header length goes past the end of the file",
    ),
    "st-invalid-header": (FormatError, "the safetensors header is not UTF-8"),
    "st-invalid-json": (FormatError, "the header is not JSON the Rust reader accepts"),
    "st-unknown-dtype": (UnsupportedError, "a dtype safetensors does not define"),
    "st-invalid-offset": (
        FormatError,
        "tensor offsets leave a gap, overlap, or end before they begin",
    ),
    "st-validation-overflow": (FormatError, "shape times dtype size overflows 64 bits"),
    "st-misaligned-slice": (FormatError, "a 4- or 6-bit tensor does not fill whole bytes"),
    "st-tensor-invalid-info": (
        FormatError,
        "a tensor's byte span does not match its shape and dtype",
    ),
    "st-incomplete-buffer": (FormatError, "the tensors do not end exactly at the end of the file"),
    "sharded-bad-index": (
        FormatError,
        "the index is no JSON object with a weight_map of strings to strings",
    ),
    "sharded-index-too-large": (LimitError, "an index file over 100 MB"),
    "sharded-bad-shard-name": (
        FormatError,
        "a shard name that is absolute or leaves the index's directory",
    ),
    "sharded-missing-shard": (FormatError, "a shard named in the index is missing or not a file"),
    "sharded-missing-tensor": (FormatError, "a weight_map entry is absent from its shard"),
    "sharded-bad-shard": (
        FormatError,
        "a shard that is itself an index, no mapping, or holds a non-tensor under a weight_map name",
    ),
    # ZIP
    "zip-no-eocd": (FormatError, "no end-of-central-directory record"),
    "zip-bad-central-dir": (FormatError, "central directory is inconsistent with the file"),
    "zip-bad-local-header": (FormatError, "a member's local header is missing or corrupt"),
    "zip-bad-deflate": (FormatError, "a compressed member does not inflate to its stated size"),
    "zip-missing-member": (FormatError, "a member the format needs is absent"),
    "zip-no-data-pkl": (FormatError, "a ZIP archive without <prefix>/data.pkl"),
    "zip-compression": (
        UnsupportedError,
        "a member uses a compression method other than STORED/DEFLATE",
    ),
    "zip-encrypted": (UnsupportedError, "an encrypted member"),
    "zip-multidisk": (UnsupportedError, "a multi-disk (split) archive"),
    "zip-duplicate-name": (
        FormatError,
        "two members torch's lookup cannot tell apart (same name, equal up to a NUL byte "
        "or ignoring ASCII case, or decoding to the same text)",
    ),
    "zip-nul-name": (FormatError, "a member name with a NUL byte"),
    "zip-unsafe-name": (FormatError, "a member name that is absolute or has a '..' component"),
    "zip-local-mismatch": (
        FormatError,
        "a member's local header disagrees with its central-directory entry",
    ),
    "zip-overlap": (
        FormatError,
        "a member's bytes overlap another member or the central directory",
    ),
    "zip-multiple-eocd": (
        FormatError,
        "more than one plausible end record, or an archive comment holding ZIP records",
    ),
    "zip-bad-data-descriptor": (
        FormatError,
        "a member's data descriptor disagrees with its central-directory entry",
    ),
    "zip-stray-member": (
        FormatError,
        "a member outside the folder of the archive's first member (torch refuses it)",
    ),
    # pickle
    "unknown-opcode": (FormatError, "a byte that is no pickle opcode"),
    "bad-argument": (FormatError, "an opcode's inline argument is malformed"),
    "stack-underflow": (FormatError, "an opcode pops more items than the stack holds"),
    "mark-missing": (FormatError, "an opcode needs a MARK that was never pushed"),
    "memo-missing": (FormatError, "a memo GET of a key never PUT"),
    "bad-operand": (FormatError, "an opcode applied to an object of the wrong type"),
    "bad-call": (FormatError, "a known constructor (e.g. _rebuild_tensor_v2) got bad arguments"),
    "bad-build": (FormatError, "BUILD on an object that may not be changed, or with bad state"),
    "bad-persistent-id": (FormatError, "a persistent id that names no storage"),
    "protocol-too-new": (UnsupportedError, "a pickle protocol above 5"),
    "unsupported-opcode": (UnsupportedError, "NEXT_BUFFER: out-of-band buffers"),
    "forbidden-global": (UnsafePickleError, "strict mode: a global outside the safe registry"),
    "forbidden-reduce": (UnsafePickleError, "a call of a known name that is not callable"),
    "bad-frame": (
        FormatError,
        "a protocol-4 FRAME that CPython's unpickler may read out of order: an opcode running "
        "past its end, or a FRAME inside a frame",
    ),
    "forbidden-extension": (
        UnsafePickleError,
        "strict mode: EXT1/EXT2/EXT4, a global named through copyreg's extension registry",
    ),
    # storages and tensors
    "missing-storage": (
        FormatError,
        "a tensor's storage member is absent, or a legacy pickle names a storage its key list lacks "
        "(torch.load would give uninitialised memory)",
    ),
    "storage-too-small": (FormatError, "a storage member holds fewer bytes than its id claims"),
    "tensor-out-of-storage": (FormatError, "a tensor's shape/stride/offset reach past its storage"),
    "tensor-bad-shape": (
        FormatError,
        "a tensor size negative or past int64, more elements than int64 counts, or "
        "sparse/nested parts whose shapes do not fit the tensor",
    ),
    "tensor-bad-stride": (
        FormatError,
        "a stride or storage offset negative or past int64, or not one stride per dimension",
    ),
    "tensor-bad-qparams": (
        FormatError,
        "quantizer parameters torch cannot rebuild the quantized tensor from",
    ),
    "bad-byteorder": (FormatError, "the byteorder record is neither little nor big"),
    "no-storage": (UnsupportedError, "numpy() of a tensor with no data (meta)"),
    "not-dense": (
        UnsupportedError,
        "numpy() of a quantized, sparse, nested or data-less tensor "
        "(int_repr()/dequantize(), to_dense(), unbind() instead)",
    ),
    "unsupported-dtype": (
        UnsupportedError,
        "a dtype numpy cannot hold (complex32, quantized, sub-byte)",
    ),
    "needs-ml-dtypes": (UnsupportedError, "bfloat16/float8 values need the ml_dtypes package"),
    # limits
    "limit-pickle-size": (LimitError, "the pickle is larger than Limits.max_pickle_bytes"),
    "limit-member-size": (LimitError, "a member is larger than the reader accepts"),
    "limit-zip-members": (LimitError, "more central-directory entries than Limits.max_zip_members"),
    "limit-memo": (LimitError, "more memo entries than Limits.max_memo"),
    "limit-depth": (LimitError, "nesting deeper than Limits.max_depth"),
    "limit-nodes": (LimitError, "an object graph larger than Limits.max_nodes"),
    "limit-built-bytes": (
        LimitError,
        "constructors build or copy more data than 4x the pickle's size + 16 MiB (memo-multiplied "
        "copies: bytes, container slots, path parts), charged before they build",
    ),
    # -- limits of the interpreter and the object graph (unpickle/, walk.py, summary/)
    "limit-marks": (LimitError, "more MARKs open at once than Limits.max_marks"),
    "limit-key-size": (
        LimitError,
        "a dict key or set member costing more than Limits.max_key_nodes to hash, or the run's "
        "hashing work over Limits.max_nodes (shared parts counted as hashing visits them, long "
        "ints one unit per 128 bits)",
    ),
    "limit-hash-collisions": (
        LimitError,
        "keys sharing a hash in one container would cost more comparisons than "
        "Limits.max_hash_collisions (hash flooding)",
    ),
    "limit-interpolation": (
        LimitError,
        "resolving OmegaConf interpolations would scan or produce more than "
        "Limits.max_interpolated_bytes characters",
    ),
    # -- files and containers (io/, tensor.py, formats/)
    "limit-directory-size": (
        LimitError,
        "a ZIP central directory larger than Limits.max_directory_bytes",
    ),
    "not-regular-file": (
        UnsupportedError,
        "the path is a FIFO, socket, device or directory: only regular files are read (checked before any read)",
    ),
    "numpy-too-large": (
        UnsupportedError,
        "numpy() of a tensor whose sizes times its element size pass what a numpy array can "
        "index (an expanded view, or an empty tensor with huge dimensions): torch's numpy() "
        "refuses it too",
    ),
    "limit-dense-size": (
        LimitError,
        "to_dense(), dequantize() or numpy() of a conj/neg tensor would allocate more than "
        "Limits.max_dense_bytes (max_bytes=), or tolist() would build more than 1,000,000 values",
    ),
    "st-shape-overflow": (
        UnsupportedError,
        "an empty safetensors tensor with a size past int64, or whose strides (computed as "
        "torch does, in int64) wrap negative: the format allows it, safetensors.torch refuses "
        "it (Stride calculation overflowed)",
    ),
    "sparse-bad-indices": (
        FormatError,
        "to_dense() of a sparse tensor whose indices break torch's sparse invariants (out of "
        "range, compressed indices not from 0 to nnz and non-decreasing, unsorted or repeated "
        "within a row): torch.load accepts it unless invariant checks are on, and its "
        "to_dense() is undefined",
    ),
    "zip-stored-size-mismatch": (
        FormatError,
        "a STORED member whose compressed size is not its size: torch's reader refuses the "
        "archive (when the member's DOS time is 0, as torch writes it) or reads `size` bytes, "
        "zipfile reads the compressed size",
    ),
    "zip-directory-member": (
        FormatError,
        "a member torch's reader takes for a directory (the MS-DOS directory attribute 0x10, "
        "or a name ending in '/') that holds bytes: torch reads none of them and returns "
        "uninitialised memory",
    ),
    "source-closed": (
        UnsupportedError,
        "a tensor read after its checkpoint, opened from a file object, was closed",
    ),
    "sharded-duplicate-shard": (
        FormatError,
        "an index names one file (through symlinks or hard links) as two shards",
    ),
    # -- the torch fallback (torch_bridge.py, api.py)
    "fallback-allocation": (
        UnsafePickleError,
        "fallback='torch' refused: a pickle torch.load would run calls a constructor that "
        "allocates from a number in the file (bytearray(n), a tensor, storage or array of a "
        "size), or claims storages larger than the file",
    ),
    "fallback-unchecked": (
        UnsupportedError,
        "fallback='torch' refused: the pickles torch.load would run cannot be found "
        "beforehand the way torch finds them (a tar file with trust=True)",
    ),
}


def error(
    code: str,
    msg: str,
    *,
    path: str | None = None,
    member: str | None = None,
    offset: int | None = None,
    **details: Any,
) -> CheckpointError:
    """The error for ``code``, of the class the code table gives it.

    Every raise site in ckptpeek goes through here (``raise error("truncated", ...)``), so
    a code cannot be raised as two different classes: whether ``fallback="torch"`` runs
    (``UnsupportedError``) or ``except ValueError`` catches it (``FormatError``) is
    decided once, in ``ERROR_CODES``.
    """
    try:
        cls = ERROR_CODES[code][0]
    except KeyError:
        raise AssertionError(f"ckptpeek bug: error code {code!r} is not in ERROR_CODES") from None
    return cls(msg, code=code, path=path, member=member, offset=offset, **details)
