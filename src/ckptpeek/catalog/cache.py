"""Persistent catalog cache: one SQLite row per checkpoint, an in-process LRU on top.

A catalog build reads a checkpoint's header, its sidecars and its Hydra config; the
result (a :class:`~ckptpeek.catalog.models.CatalogEntry`) only changes when one of
those files changes. :class:`CatalogCache` remembers entries across runs, keyed by the
checkpoint's absolute path and guarded by a :class:`Stamp` (``build_catalog`` does this
for every checkpoint it finds; ``ctx`` is the entry's ``sources.EntryContext``)::

    with CatalogCache() as cache:                        # ~/.cache/ckptpeek/catalog.sqlite
        stamp = Stamp.of(ctx.path, related_paths(ctx))   # stat BEFORE reading the files
        entry = cache.get(ctx.path, stamp)
        if entry is None:
            stamp.content()                              # the bytes, before they are read
            entry = build_entry(ctx)                     # the expensive part (build.py)
            cache.put(entry, stamp)

Validity. A row is returned only if all of these equal what is stored:

* the checkpoint's ``(size, mtime_ns)``, and its *content stamp*: a digest of its inode,
  ctime and last 64 KiB (a torch ZIP's central directory, with every member's CRC, is at
  the end), read only once the stat matches a row. The row carries an HMAC keyed by that
  digest over the row's own data, so
  a row forged or edited by someone who can write the cache but not read the checkpoint
  is a miss, not an answer; a row whose entry does not describe its own key (path, size,
  mtime) or is larger than :data:`MAX_ROW_BYTES` is a miss too. Rows are data: the
  catalog never takes a path to write to from one;
* ``extras``: ``(path, size, mtime_ns)`` of every related file the caller names
  (sidecars, config files, ``.hydra/*.yaml`` candidates). A related file that does not
  exist is stamped ``(path, -1, -1)``, so *creating* a sidecar invalidates too - name
  every candidate location, not only the files that exist;
* ``fingerprint``: an opaque string for build options that shape the entry (custom
  signature rules, filename patterns); ``""`` by default;
* the generation: ``ckptpeek.__version__``, ``ckptpeek.SPEC_DIGEST`` and a digest of
  the catalog package's own source (``*.py``, ``*.yaml``), so upgrading ckptpeek - or
  editing the catalog code in a development checkout - invalidates every row.

Entries whose files carry whole-second timestamps (coarse filesystems: some NFS, FAT,
ext3) and were modified within :data:`RACY_WINDOW_NS` of the ``put`` are not stored:
a same-size rewrite within the same second would otherwise be invisible forever
(git's "racily clean" problem). They are simply rebuilt next time.

Location: ``CatalogCache(path)`` (a file, or a directory to hold ``catalog.sqlite``;
``":memory:"`` for a private in-memory database) > ``$CKPTPEEK_CACHE_DIR/catalog.sqlite``
> ``$XDG_CACHE_HOME/ckptpeek/catalog.sqlite`` > ``~/.cache/ckptpeek/catalog.sqlite``.

Ownership: the cache touches only a file it can prove is its own. A new cache is created
only where nothing exists (in a temporary file, linked into place: a crash never leaves
half a cache, and a file that appeared meanwhile is kept). An existing file is opened only
if it is a regular file (not a symlink) holding an SQLite database whose
``PRAGMA application_id`` is :data:`APPLICATION_ID` (or a version-1 ckptpeek cache, from
before the id, recognised read-only by its one table); anything else - another program's
database, a checkpoint, a text file, a directory, a symlink - raises
:class:`NotACacheError` (a ``FileExistsError``) and is left byte for byte as it was.
SQLite opens the database's ``-wal``, ``-shm`` and ``-journal`` by name and writes into
them: before every connection each must be absent or a regular file of one name
(``st_nlink == 1``) owned by this user; a symlink or hard link planted there (a cache in
a shared directory) makes the build run without the persistent cache (one logged
warning: the cache file itself is ours, so this is no usage error), and the file it
names is not touched. (A link planted between that check and SQLite's open is not
caught: keep the cache in a directory only you can write, as the default is.)

Robustness: past that check the cache never makes a build fail. A corrupt ckptpeek cache
or an old schema is replaced by a fresh one (built aside, renamed over it); a database another process keeps
write-locked past the busy timeout turns that operation into a miss / a skipped store
(and writes pause for :data:`LOCK_BACKOFF_S`); an unreadable or unwritable location,
or a schema written by a *newer* ckptpeek, leaves the cache running on its in-process
LRU only. Each case logs one warning on ``logging.getLogger("ckptpeek.catalog")``.

Concurrency: WAL journal (rollback journal on network filesystems, where WAL is not
safe), ``synchronous=NORMAL``, a busy timeout and short ``BEGIN IMMEDIATE``
transactions, so several processes can build at once. Within a process one connection
is shared under a lock, so one :class:`CatalogCache` may serve a thread pool.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import pathlib
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import ckptpeek

from .files import NotRegularError, file_kind, open_regular
from .models import CatalogEntry

__all__ = (
    "APPLICATION_ID",
    "CatalogCache",
    "NotACacheError",
    "Stamp",
    "default_cache_path",
    "SCHEMA_VERSION",
    "ABSENT",
    "UNSTATTABLE",
)

log = logging.getLogger("ckptpeek.catalog")

#: ``PRAGMA user_version`` of the database layout below; bump when it changes.
SCHEMA_VERSION = 2
#: ``PRAGMA application_id`` of every ckptpeek cache ("CkPt"): what proves a file ours.
APPLICATION_ID = 0x436B5074
#: the largest entry a row may hold (a real one is a few KiB; its config summary is at
#: most 100 000 values, a few MiB)
MAX_ROW_BYTES = 16 << 20
#: bytes of the checkpoint's tail in the content stamp
CONTENT_BYTES = 64 << 10
_SQLITE_MAGIC = b"SQLite format 3\x00"
_V1_COLUMNS = (
    "path",
    "size",
    "mtime_ns",
    "extras",
    "fingerprint",
    "version",
    "spec_digest",
    "code_digest",
    "entry",
    "stored_at",
)
#: size/mtime_ns stamped for a related file that does not exist.
ABSENT = -1
#: size/mtime_ns stamped for a related file that exists but cannot be stat'ed.
UNSTATTABLE = -2
#: see the module docstring ("racily clean" entries on coarse-timestamp filesystems).
RACY_WINDOW_NS = 2_000_000_000
#: after a write lock timed out, stores skip SQLite for this long (LRU only).
LOCK_BACKOFF_S = 5.0
DEFAULT_LRU_SIZE = 4096
DEFAULT_TIMEOUT_S = 2.0
DB_NAME = "catalog.sqlite"

_NETWORK_FS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ncpfs",
        "afs",
        "lustre",
        "gpfs",
        "beegfs",
        "ceph",
        "glusterfs",
        "fuse.sshfs",
        "fuse.glusterfs",
        "fuse.ceph",
        "9p",
        "virtiofs",
    }
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    path        TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    extras      TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    version     TEXT NOT NULL,
    spec_digest TEXT NOT NULL,
    code_digest TEXT NOT NULL,
    entry       TEXT NOT NULL,
    stored_at   REAL NOT NULL,
    mac         TEXT NOT NULL
) WITHOUT ROWID
"""
_COLUMNS = (*_V1_COLUMNS, "mac")  # version 2: each row bound to its file


# ---------------------------------------------------------------------------- stamps


def content_stamp(path: str | os.PathLike[str]) -> str:
    """A digest of what only the file's own bytes and inode give: device, inode, ctime,
    size, mtime and its last :data:`CONTENT_BYTES` (``""`` if it is not a regular file).

    The tail, not the head: a torch ZIP ends with its central directory, which holds the
    CRC of every member, so the tail changes with any member; and ctime changes with
    every write to the file, which no user can set back. One ``pread``."""
    try:
        fd, st = open_regular(path)
    except NotRegularError:
        return ""
    try:
        h = hashlib.sha256(
            repr((st.st_dev, st.st_ino, st.st_ctime_ns, st.st_size, st.st_mtime_ns)).encode()
        )
        h.update(os.pread(fd, CONTENT_BYTES, max(0, st.st_size - CONTENT_BYTES)))
        return h.hexdigest()
    finally:
        os.close(fd)


@dataclasses.dataclass(frozen=True)
class Stamp:
    """What a cached entry's validity depends on. Take it *before* reading the files.

    ``size``/``mtime_ns`` are the checkpoint's; ``extras`` holds ``(absolute path,
    size, mtime_ns)`` for each related file, sorted by path (:data:`ABSENT` for both
    numbers when the file does not exist, :data:`UNSTATTABLE` when stat fails);
    ``fingerprint`` is an opaque string for entry-shaping build options; ``path`` the
    checkpoint whose :meth:`content` keys the row's MAC (never stored). The content is
    read only when needed - when a row's stat matches, or before an entry is built to be
    stored - and once: a stat miss costs no read.
    """

    size: int
    mtime_ns: int
    extras: tuple[tuple[str, int, int], ...] = ()
    fingerprint: str = ""
    path: str = dataclasses.field(default="", compare=False)
    _content: list[str] = dataclasses.field(default_factory=list, compare=False, repr=False)

    @classmethod
    def of(
        cls,
        checkpoint_path: str | os.PathLike[str],
        related_paths: Iterable[str | os.PathLike[str]] = (),
        *,
        fingerprint: str = "",
    ) -> Stamp:
        """Stat the checkpoint (``OSError`` propagates) and every related path."""
        st = os.stat(checkpoint_path)
        extras = []
        for p in sorted({os.path.abspath(os.fspath(p)) for p in related_paths}):
            try:
                rs = os.stat(p)
            except (FileNotFoundError, NotADirectoryError):
                extras.append((p, ABSENT, ABSENT))
            except OSError:
                extras.append((p, UNSTATTABLE, UNSTATTABLE))
            else:
                extras.append((p, rs.st_size, rs.st_mtime_ns))
        path = os.path.abspath(os.fspath(checkpoint_path))
        return cls(st.st_size, st.st_mtime_ns, tuple(extras), fingerprint, path)

    def content(self) -> str:
        """The checkpoint's :func:`content_stamp`, read on the first call (``""``: none,
        and an entry without one is never cached; ``OSError`` propagates)."""
        if not self._content:
            self._content.append(content_stamp(self.path) if self.path else "")
        return self._content[0]

    def extras_json(self) -> str:
        return json.dumps(self.extras, separators=(",", ":"))

    def is_racy(self, now_ns: int, window_ns: int = RACY_WINDOW_NS) -> bool:
        """True if some stamped file has a whole-second mtime within ``window_ns`` of now."""
        mtimes = [self.mtime_ns] + [m for _, _, m in self.extras if m >= 0]
        return any(m % 1_000_000_000 == 0 and now_ns - m < window_ns for m in mtimes)


# ---------------------------------------------------------------------- generation


def _code_digest() -> str:
    """Digest of the catalog package's source, so a code change invalidates rows."""
    h = hashlib.sha256()
    try:
        here = pathlib.Path(__file__).parent
        for f in sorted(here.iterdir()):
            if f.suffix in (".py", ".yaml", ".yml") and f.is_file():
                h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    except OSError:  # zipped install etc.: fall back to version + SPEC_DIGEST only
        return ""
    return h.hexdigest()[:16]


_generation: tuple[str, str, str] | None = None


def _current_generation() -> tuple[str, str, str]:
    global _generation
    if _generation is None:
        _generation = (str(ckptpeek.__version__), str(ckptpeek.SPEC_DIGEST), _code_digest())
    return _generation


def _db_key(path: str) -> str:
    """The row key of ``path``: itself, or for a file name that is not UTF-8 (lone
    surrogates from ``os.fsdecode``, which SQLite cannot store) ``fs:`` + its bytes in hex
    (an absolute path never starts so)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "fs:" + os.fsencode(path).hex()
    return path


def _from_db_key(key: str) -> str:
    if key.startswith("fs:"):
        try:
            return os.fsdecode(bytes.fromhex(key[3:]))
        except ValueError:
            return key
    return key


def _encode(entry: CatalogEntry) -> str:
    """The entry as JSON text that any file name survives (``\\udcff`` escapes, which
    pydantic's own JSON writer and reader refuse)."""
    return json.dumps(entry.model_dump(mode="json"), separators=(",", ":"))


def _mac(key: str, stamp: Stamp, gen: tuple[str, str, str], text: str) -> str:
    """The row's MAC: HMAC-SHA256 keyed by the checkpoint's content stamp, over
    everything stored."""
    h = hmac.new(stamp.content().encode(), digestmod=hashlib.sha256)
    for part in (key, str(stamp.size), str(stamp.mtime_ns), stamp.extras_json()):
        h.update(part.encode("utf-8", "surrogatepass") + b"\0")
    for part in (stamp.fingerprint, *gen, text):
        h.update(part.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()


# ------------------------------------------------------------------------ location


def default_cache_path() -> pathlib.Path:
    """``$CKPTPEEK_CACHE_DIR/catalog.sqlite``, else the XDG cache dir, else ``~/.cache``."""
    env = os.environ.get("CKPTPEEK_CACHE_DIR")
    if env:
        return pathlib.Path(env).expanduser() / DB_NAME
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(xdg) if xdg and os.path.isabs(xdg) else pathlib.Path.home() / ".cache"
    return base / "ckptpeek" / DB_NAME


def _is_network_fs(path: pathlib.Path) -> bool:
    """Best effort (Linux /proc/self/mountinfo): is ``path`` on a network filesystem?"""
    try:
        real = os.path.realpath(path)
        best, best_type = "", ""
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or not right:
                    continue
                mnt = fields[4].replace("\\040", " ")
                under = real == mnt or real.startswith(mnt.rstrip("/") + "/")
                if under and len(mnt) >= len(best):
                    best, best_type = mnt, right.split()[0]
        return best_type in _NETWORK_FS or best_type.startswith("nfs")
    except OSError:
        return False


class _Bypass(Exception):
    """The persistent layer is unusable; run on the LRU only."""


# --------------------------------------------------------------------------- cache


class CatalogCache:
    """Persistent (SQLite) + in-process (LRU) cache of :class:`CatalogEntry` by path.

    Thread-safe; safe for several processes on one file; never raises for cache
    trouble (see the module docstring). ``stats`` counts lru_hits, db_hits, misses,
    stale, stores, skipped (racy or backed off) and errors.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        lru_size: int = DEFAULT_LRU_SIZE,
        timeout: float = DEFAULT_TIMEOUT_S,
        racy_window_ns: int = RACY_WINDOW_NS,
    ) -> None:
        if path is None:
            self.path: pathlib.Path | str = default_cache_path()
        elif os.fspath(path) == ":memory:":
            self.path = ":memory:"
        else:
            p = pathlib.Path(path).expanduser()
            self.path = p / DB_NAME if p.is_dir() else p
        self.lru_size = max(0, int(lru_size))
        self.timeout = float(timeout)
        self.racy_window_ns = int(racy_window_ns)
        self.stats: dict[str, int] = dict.fromkeys(
            ("lru_hits", "db_hits", "misses", "stale", "stores", "skipped", "errors"), 0
        )
        self._lock = threading.RLock()
        # path -> (stamp, generation, entry JSON); JSON so callers get fresh objects
        self._lru: OrderedDict[str, tuple[Stamp, tuple[str, str, str], str]] = OrderedDict()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._disabled: str | None = None  # reason the persistent layer is off
        # after a lock timeout, skip SQLite for a while (writes only: WAL readers are
        # not blocked by writers; reads too if a read or the open timed out)
        self._pause_writes_until = 0.0
        self._pause_reads_until = 0.0
        self._warned: set[str] = set()
        self._closed = False
        self._orphans: list[sqlite3.Connection] = []  # inherited across fork; never used
        if isinstance(self.path, pathlib.Path):
            try:
                _claim(self.path)  # NotACacheError: not ours, and left untouched
            except NotACacheError:
                raise
            except OSError:
                pass  # an unusable location: the connection below runs on the LRU only
        with self._lock:
            with contextlib.suppress(_Bypass):
                self._connection()

    # ------------------------------------------------------------------ public API
    def get(self, path: str | os.PathLike[str], stamp: Stamp) -> CatalogEntry | None:
        """The cached entry for ``path`` if it is still valid for ``stamp``, else None."""
        key = os.path.abspath(os.fspath(path))
        gen = _current_generation()
        with self._lock:
            hit = self._lru.get(key)
            if hit is not None:
                if hit[0] == stamp and hit[1] == gen and hit[0].content() == stamp.content():
                    self._lru.move_to_end(key)
                    entry = self._decode(key, hit[2])
                    if entry is not None:
                        self.stats["lru_hits"] += 1
                        return entry
                else:
                    del self._lru[key]
            row = self._db("get", self._select, key)
            if row is None or row is _FAILED:
                self.stats["misses"] += 1
                return None
            size, mtime_ns, extras, fingerprint, version, spec, code, length, mac = row
            if (size, mtime_ns, extras, fingerprint) != (
                stamp.size,
                stamp.mtime_ns,
                stamp.extras_json(),
                stamp.fingerprint,
            ) or (version, spec, code) != gen:
                self.stats["stale"] += 1
                return None
            if not stamp.content():  # no content stamp: never cached
                self.stats["stale"] += 1
                return None
            text = None
            if isinstance(length, int) and 0 < length <= MAX_ROW_BYTES:
                text = self._db("get", self._select_entry, key)
            if not isinstance(text, str) or not isinstance(mac, str):
                self.stats["stale"] += 1
                return None
            if not secrets.compare_digest(mac, _mac(key, stamp, gen, text)):
                self.stats["stale"] += 1  # forged, edited, or the file's bytes changed
                return None
            entry = self._decode(key, text)
            if entry is None:
                return None
            if (entry.path, entry.file_size, entry.mtime_ns) != (key, stamp.size, stamp.mtime_ns):
                self.stats["stale"] += 1  # a row that does not describe its own key
                return None
            self._remember(key, stamp, gen, text)
            self.stats["db_hits"] += 1
            return entry

    def put(self, entry: CatalogEntry, stamp: Stamp) -> bool:
        """Store ``entry`` (keyed by ``abspath(entry.path)``) under ``stamp``.

        Returns False if it was kept out of the cache (racy timestamps); a store that
        only reached the LRU because SQLite was unavailable still returns True.
        """
        return self.put_many([(entry, stamp)]) == 1

    def put_many(self, items: Iterable[tuple[CatalogEntry, Stamp]]) -> int:
        """Store several entries in one transaction; returns how many were accepted."""
        gen = _current_generation()
        now_ns = time.time_ns()
        rows = []
        with self._lock:
            for entry, stamp in items:
                if (
                    self.racy_window_ns > 0 and stamp.is_racy(now_ns, self.racy_window_ns)
                ) or not stamp.content():
                    self.stats["skipped"] += 1
                    continue
                key = os.path.abspath(entry.path)
                text = _encode(entry)
                self._remember(key, stamp, gen, text)
                rows.append(
                    (
                        _db_key(key),
                        stamp.size,
                        stamp.mtime_ns,
                        stamp.extras_json(),
                        stamp.fingerprint,
                        *gen,
                        text,
                        time.time(),
                        _mac(key, stamp, gen, text),
                    )
                )
            if rows and self._db("put", self._insert, rows) is not _FAILED:
                self.stats["stores"] += len(rows)
        return len(rows)

    def prune(
        self,
        keep_paths: Iterable[str | os.PathLike[str]],
        *,
        under: str | os.PathLike[str] | None = None,
    ) -> int:
        """Drop rows for checkpoints that are gone; returns how many were removed.

        With ``under=root`` every row below ``root`` whose path is not in ``keep_paths``
        is removed (what a build of ``root`` should call: the cache is shared by all
        roots, so an unscoped prune must not drop other trees). Without ``under``,
        rows not in ``keep_paths`` are removed only if their file no longer exists.
        """
        keep = {os.path.abspath(os.fspath(p)) for p in keep_paths}
        prefix = None
        if under is not None:
            prefix = os.path.join(os.path.abspath(os.fspath(under)), "")

        def doomed(p: str) -> bool:
            if p in keep:
                return False
            if prefix is not None:
                return p.startswith(prefix)
            return not os.path.lexists(p)

        with self._lock:
            lru_gone = [p for p in self._lru if doomed(p)]
            for p in lru_gone:
                del self._lru[p]
            db_gone = self._db("prune", self._prune, doomed)
        gone = set(lru_gone) | (set(db_gone) if isinstance(db_gone, list) else set())
        return len(gone)

    def clear(self) -> None:
        """Forget everything (LRU and database rows)."""
        with self._lock:
            self._lru.clear()
            self._db("clear", lambda c: c.execute("DELETE FROM entries"))

    def __len__(self) -> int:
        """Rows in the database (LRU size when the database is unavailable)."""
        with self._lock:
            n = self._db("len", lambda c: c.execute("SELECT count(*) FROM entries").fetchone()[0])
            return len(self._lru) if n is _FAILED or n is None else int(n)

    def __bool__(self) -> bool:  # an empty cache is still a cache (``if cache:``)
        return True

    @property
    def persistent(self) -> bool:
        """False while the cache runs on the in-process LRU only."""
        return self._disabled is None and not self._closed

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                self._conn = None

    def __enter__(self) -> CatalogCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = (
            "closed"
            if self._closed
            else ("lru-only: " + self._disabled if self._disabled else "persistent")
        )
        return f"CatalogCache({str(self.path)!r}, {state})"

    # --------------------------------------------------------------- SQL bodies
    @staticmethod
    def _select(conn: sqlite3.Connection, key: str) -> Any:
        return conn.execute(
            "SELECT size, mtime_ns, extras, fingerprint, version, spec_digest, code_digest,"
            " length(CAST(entry AS BLOB)), mac FROM entries WHERE path = ?",
            (_db_key(key),),
        ).fetchone()

    @staticmethod
    def _select_entry(conn: sqlite3.Connection, key: str) -> Any:
        row = conn.execute("SELECT entry FROM entries WHERE path = ?", (_db_key(key),)).fetchone()
        return None if row is None else row[0]

    @staticmethod
    def _insert(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                f"INSERT OR REPLACE INTO entries ({', '.join(_COLUMNS)})"
                f" VALUES ({', '.join('?' * len(_COLUMNS))})",
                rows,
            )
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _prune(conn: sqlite3.Connection, doomed: Any) -> list[str]:
        paths = [r[0] for r in conn.execute("SELECT path FROM entries")]
        gone = [p for p in paths if doomed(_from_db_key(p))]
        if gone:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("DELETE FROM entries WHERE path = ?", [(p,) for p in gone])
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        return [_from_db_key(p) for p in gone]

    # ------------------------------------------------------------------ plumbing
    def _remember(self, key: str, stamp: Stamp, gen: tuple[str, str, str], text: str) -> None:
        if self.lru_size == 0:
            return
        self._lru[key] = (stamp, gen, text)
        self._lru.move_to_end(key)
        while len(self._lru) > self.lru_size:
            self._lru.popitem(last=False)

    def _decode(self, key: str, text: str) -> CatalogEntry | None:
        try:
            return CatalogEntry.model_validate(json.loads(text))
        except ValueError as e:  # pydantic.ValidationError is a ValueError
            # a model change without a version/code change (should not happen): drop it
            log.debug("catalog cache: dropping undecodable row for %s: %s", key, e)
            with self._lock:
                self._lru.pop(key, None)
                self._db(
                    "drop",
                    lambda c: c.execute("DELETE FROM entries WHERE path = ?", (_db_key(key),)),
                )
            self.stats["stale"] += 1
            return None

    def _warn(self, kind: str, msg: str, *args: object) -> None:
        """One warning per kind per cache object; repeats go to debug."""
        if kind in self._warned:
            log.debug(msg, *args)
        else:
            self._warned.add(kind)
            log.warning(msg, *args)

    def _db(self, op: str, fn: Any, *args: Any) -> Any:
        """Run ``fn(conn, *args)`` under the lock; cache trouble becomes ``_FAILED``."""
        write = op not in _READ_OPS
        if write and time.monotonic() < self._pause_writes_until:
            self.stats["skipped"] += 1 if op != "put" else len(args[0])
            return _FAILED
        for attempt in (1, 2):
            try:
                conn = self._connection()
                return fn(conn, *args)
            except _Bypass:
                return _FAILED
            except sqlite3.OperationalError as e:
                self.stats["errors"] += 1
                if _is_locked(e):
                    self._pause_writes_until = time.monotonic() + LOCK_BACKOFF_S
                    if not write:
                        self._pause_reads_until = self._pause_writes_until
                    self._warn(
                        "locked",
                        "catalog cache %s is locked by another process "
                        "(%s); continuing without it for now",
                        self.path,
                        e,
                    )
                    return _FAILED
                if attempt == 1 and _is_corrupt(e):
                    self._recreate(f"{type(e).__name__}: {e}")
                    continue
                self._warn("error", "catalog cache %s: %s failed (%s); skipped", self.path, op, e)
                return _FAILED
            except sqlite3.DatabaseError as e:  # corrupt / not a database
                self.stats["errors"] += 1
                if attempt == 1:
                    self._recreate(f"{type(e).__name__}: {e}")
                    continue
                self._disable(f"still failing after rebuild: {e}")
                return _FAILED
            except sqlite3.Error as e:  # ProgrammingError (closed) etc.
                self.stats["errors"] += 1
                self._warn("error", "catalog cache %s: %s failed (%s); skipped", self.path, op, e)
                return _FAILED
        return _FAILED

    def _disable(self, reason: str) -> None:
        if self._disabled is None:
            self._disabled = reason
            log.warning(
                "catalog cache %s unusable (%s); using an in-process cache only", self.path, reason
            )
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise _Bypass
        if self._conn is not None and self._pid != os.getpid():  # forked: never share
            self._orphans.append(self._conn)
            self._conn, self._pid = None, os.getpid()
        if self._disabled is not None:
            raise _Bypass
        if time.monotonic() < self._pause_reads_until:
            raise _Bypass
        if self._conn is not None:
            return self._conn
        try:
            self._conn = self._open()
        except NotACacheError as e:  # replaced under us, or a -wal/-shm/-journal not ours
            self._disable(f"{e}")
            raise _Bypass from None
        except _NewerSchema as e:
            self._disable(f"{e}; written by a newer ckptpeek, left untouched")
            raise _Bypass from None
        except sqlite3.DatabaseError as e:
            self.stats["errors"] += 1
            if _is_locked(e):
                self._pause_reads_until = time.monotonic() + LOCK_BACKOFF_S
                self._pause_writes_until = self._pause_reads_until
                self._warn(
                    "locked",
                    "catalog cache %s is locked by another process (%s); "
                    "continuing without it for now",
                    self.path,
                    e,
                )
                raise _Bypass from None  # retried after the back-off
            if not isinstance(e, sqlite3.OperationalError) or _is_corrupt(e):
                self._recreate(f"{type(e).__name__}: {e}")
            else:  # "unable to open database file", read-only location, ...
                self._disable(f"{type(e).__name__}: {e}")
            if self._conn is None:
                raise _Bypass from None
        except OSError as e:
            self._disable(f"{type(e).__name__}: {e}")
            raise _Bypass from None
        return self._conn

    def _open(self) -> sqlite3.Connection:
        try:
            return self._open_once()
        except _Reopen:  # an old schema was just replaced by a fresh file
            pass
        try:
            return self._open_once()
        except _Reopen:  # replaced again under us: another writer disagrees; step aside
            raise sqlite3.OperationalError("the cache's schema keeps changing") from None

    def _open_once(self) -> sqlite3.Connection:
        if self.path == ":memory:":
            target, network = ":memory:", False
        else:
            assert isinstance(self.path, pathlib.Path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            state = _claim(self.path)
            if state == "absent":
                _create(self.path)
            elif state == "legacy":
                log.warning(
                    "catalog cache %s has an old schema (version 1, want %s); rebuilding it",
                    self.path,
                    SCHEMA_VERSION,
                )
                _create(self.path, replace=True)
            target, network = str(self.path), _is_network_fs(self.path.parent)
            _check_companions(self.path)
        conn = sqlite3.connect(
            target, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
                if target == ":memory:":
                    _init_schema(conn)
                mode = conn.execute("PRAGMA journal_mode").fetchone()[0].lower()
                want = "delete" if network else "wal"
                if target != ":memory:" and mode != want:
                    # switching the journal mode does not wait on a busy database (two
                    # processes creating the cache at once): retry until the timeout
                    conn.execute(f"PRAGMA journal_mode = {want}")
                conn.execute("PRAGMA synchronous = NORMAL")
                self._check_schema(conn)
                return conn
            except sqlite3.OperationalError as e:
                if _is_locked(e) and time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                conn.close()
                raise
            except BaseException:
                conn.close()
                raise

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        """An own file of another schema version: newer is left alone, older replaced."""
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION and _has_table(conn):
            return
        if version > SCHEMA_VERSION:
            raise _NewerSchema(version)
        assert isinstance(self.path, pathlib.Path)
        log.warning(
            "catalog cache %s has an old schema (version %s, want %s); rebuilding it",
            self.path,
            version,
            SCHEMA_VERSION,
        )
        conn.close()
        _create(self.path, replace=True)
        raise _Reopen

    def _recreate(self, reason: str) -> None:
        """Replace a corrupt own database (and drop its -wal/-shm) by a fresh one."""
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        if self.path == ":memory:" or self._disabled is not None:
            self._disable(reason)
            return
        assert isinstance(self.path, pathlib.Path)
        try:
            _claim(self.path)  # still ours? (a header that is not ours: hands off)
        except NotACacheError as e:
            self._disable(f"{reason}; {e}")
            return
        except OSError as e:
            self._disable(f"rebuild failed: {e}")
            return
        log.warning("catalog cache %s is corrupt (%s); rebuilding it", self.path, reason)
        try:
            _create(self.path, replace=True)
            self._conn = self._open()
        except (OSError, sqlite3.Error, _Bypass) as e:
            self._disable(f"rebuild failed: {e}")


def _claim(path: pathlib.Path) -> str:
    """``"absent"``, ``"ours"`` (our application id) or ``"legacy"`` (a version-1 ckptpeek
    cache); anything else raises NotACacheError. Reads 100 bytes at most, writes nothing."""
    try:
        fd, st = open_regular(path, nofollow=True)
    except FileNotFoundError:
        if os.path.lexists(path):  # a dangling symlink
            raise NotACacheError(
                f"{path}: a symlink, not a ckptpeek cache; left untouched"
            ) from None
        return "absent"
    except NotRegularError as exc:
        if exc.kind == "a symlink":
            raise NotACacheError(
                f"{path}: a symlink, not a ckptpeek cache; left untouched"
            ) from None
        raise NotACacheError(f"{path}: not a regular file; left untouched") from None
    try:
        head = os.pread(fd, 100, 0)
    finally:
        os.close(fd)
    if len(head) == 100 and head.startswith(_SQLITE_MAGIC):
        app_id = int.from_bytes(head[68:72], "big")
        if app_id == APPLICATION_ID:
            return "ours"
        if app_id == 0 and int.from_bytes(head[60:64], "big") == 1 and _is_v1(path):
            return "legacy"
        what = "an SQLite database of another program"
    else:
        what = "not an SQLite database" if st.st_size else "an empty file"
    raise NotACacheError(f"{path}: {what}, not a ckptpeek cache; left untouched")


#: the files SQLite opens beside a database, by name, following links, and writes into
COMPANIONS = ("-wal", "-shm", "-journal")


def _check_companions(path: pathlib.Path) -> None:
    """Raise NotACacheError unless each of ``path``'s -wal, -shm and -journal is absent
    or a file SQLite could have made for it: regular (not a symlink), one name
    (``st_nlink == 1``: no hard link to another file) and owned by this user. SQLite
    opens them by name and truncates or overwrites them, so a link planted there (a
    cache in a shared directory) would have it write into whatever the link names; the
    caller bypasses the cache instead (``_connection``), and nothing there is touched.
    Writes nothing."""
    uid = os.geteuid() if hasattr(os, "geteuid") else None
    for suffix in COMPANIONS:
        name = f"{path}{suffix}"
        try:
            st = os.lstat(name)
        except FileNotFoundError:
            continue
        kind = file_kind(st.st_mode)
        if kind is not None:
            why = kind
        elif st.st_nlink != 1:
            why = f"a file of {st.st_nlink} names (hard links)"
        elif uid is not None and st.st_uid != uid:
            why = f"a file of another user (uid {st.st_uid})"
        else:
            continue
        raise NotACacheError(f"{name}: {why}, not made by SQLite for this cache; left untouched")


def _is_v1(path: pathlib.Path) -> bool:
    """A version-1 ckptpeek cache (one table, ``entries``, of the v1 columns), read-only."""
    uri = path.absolute().as_uri() + "?mode=ro&immutable=1"
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            tables = conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            ).fetchall()
            cols = tuple(r[1] for r in conn.execute("PRAGMA table_info(entries)"))
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    return tables == [("entries",)] and cols == _V1_COLUMNS


def _init_schema(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(_SCHEMA)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _create(path: pathlib.Path, *, replace: bool = False) -> None:
    """A fresh, empty cache at ``path``: built in a temporary file beside it, then linked
    into place (``replace``: renamed over an own file, its -wal/-shm dropped first), so no
    crash leaves half a cache and nothing that is not ours is overwritten."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        conn = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = delete")
            _init_schema(conn)
        finally:
            conn.close()
        if replace:
            for suffix in ("-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{path}{suffix}")
            os.replace(tmp, path)
        else:
            with contextlib.suppress(FileExistsError):  # another process made one meanwhile
                os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _claim(path)  # what is there now must be ours (raises if something else won the race)


class NotACacheError(FileExistsError):
    """The cache path holds something ckptpeek did not create: refused, left untouched."""


class _Reopen(Exception):
    """The file was replaced by a fresh one: connect again."""


class _NewerSchema(sqlite3.DatabaseError):
    """Written by a newer ckptpeek: leave it alone (handled as bypass, not rebuild)."""

    def __init__(self, version: int) -> None:
        super().__init__(f"schema version {version} is newer than {SCHEMA_VERSION}")


_FAILED: Any = object()
_READ_OPS = frozenset({"get", "len", "rows"})


def _has_table(conn: sqlite3.Connection) -> bool:
    cols = [r[1] for r in conn.execute("PRAGMA table_info(entries)")]
    return tuple(cols) == _COLUMNS


def _is_locked(e: sqlite3.Error) -> bool:
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(e) or "busy" in str(e)


def _is_corrupt(e: sqlite3.Error) -> bool:
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    return "malformed" in str(e) or "not a database" in str(e)
