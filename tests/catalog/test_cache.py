"""CatalogCache: hits, invalidation, pruning, robustness (corrupt / locked / old schema /
unwritable), two real processes on one file, thread safety and the LRU."""

from __future__ import annotations

import logging
import os
import pickle
import sqlite3
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import ckptpeek
from ckptpeek.catalog import cache as cache_mod
from ckptpeek.catalog.cache import ABSENT, SCHEMA_VERSION, CatalogCache, Stamp, default_cache_path
from ckptpeek.catalog.models import Architecture, CatalogEntry

SRC = str(Path(ckptpeek.__file__).resolve().parent.parent)
T0 = 1_700_000_000_123_456_789  # a fixed, sub-second (not "racy") mtime


def _write(path: Path, data: bytes, mtime_ns: int = T0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def _entry(path: Path, **kw: object) -> CatalogEntry:
    st = path.stat()
    fields: dict = dict(
        path=str(path),
        relpath=path.name,
        experiment="exp",
        file_size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        epoch=3,
        metrics={"val/hmean": 0.85},
        architecture=Architecture(encoder="resnet18"),
        config={"model": {"encoder": {"name": "resnet18"}}},
    )
    fields.update(kw)
    return CatalogEntry(**fields)


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    return _write(tmp_path / "exp" / "checkpoints" / "epoch=3-step=300.ckpt", b"x" * 100)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "catalog.sqlite"


def _sidecars(ckpt: Path) -> list[Path]:
    stem = ckpt.with_suffix("")
    return [
        Path(f"{stem}.metadata.yaml"),
        Path(f"{stem}.config.yaml"),
        ckpt.parent.parent / ".hydra" / "config.yaml",
    ]


# ---------------------------------------------------------------------------- hits


def test_stamp_of(ckpt: Path) -> None:
    meta = _write(_sidecars(ckpt)[0], b"epoch: 3\n", T0 + 5)
    stamp = Stamp.of(ckpt, [*_sidecars(ckpt), str(meta)])  # duplicates collapse
    assert (stamp.size, stamp.mtime_ns) == (100, T0)
    assert [p for p, _, _ in stamp.extras] == sorted(str(p) for p in _sidecars(ckpt))
    assert (str(meta), 9, T0 + 5) in stamp.extras
    assert (str(_sidecars(ckpt)[1]), ABSENT, ABSENT) in stamp.extras
    assert stamp == Stamp.of(ckpt, reversed(_sidecars(ckpt))) and hash(stamp)
    assert pickle.loads(pickle.dumps(stamp)) == stamp  # crosses process pools
    with pytest.raises(FileNotFoundError):
        Stamp.of(ckpt.with_name("missing.ckpt"))


def test_hit_in_process_and_across_instances(ckpt: Path, db: Path) -> None:
    stamp = Stamp.of(ckpt, _sidecars(ckpt))
    entry = _entry(ckpt)
    with CatalogCache(db) as cache:
        assert cache.persistent
        assert cache.get(ckpt, stamp) is None
        assert cache.put(entry, stamp)
        got = cache.get(ckpt, stamp)
        assert got == entry and got is not entry
        assert cache.stats["lru_hits"] == 1 and cache.stats["misses"] == 1
    with CatalogCache(db) as cache:  # a new process would see this
        assert cache.get(str(ckpt), stamp) == entry
        assert cache.stats["db_hits"] == 1
        assert cache.get(ckpt, stamp) == entry
        assert cache.stats["lru_hits"] == 1
        assert len(cache) == 1
        cache.clear()
        assert len(cache) == 0 and bool(cache)  # empty is still truthy


def test_relative_path_is_keyed_absolute(
    ckpt: Path, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ckpt.parent)
    stamp = Stamp.of(ckpt.name)
    with CatalogCache(db) as cache:
        cache.put(_entry(ckpt), stamp)
    with CatalogCache(db) as cache:
        assert cache.get(ckpt.name, stamp) is not None
        assert cache.get(ckpt, stamp) is not None


def test_put_many_and_memory(tmp_path: Path) -> None:
    paths = [_write(tmp_path / f"c{i}.ckpt", b"y" * i) for i in range(10)]
    with CatalogCache(":memory:") as cache:
        assert cache.put_many((_entry(p), Stamp.of(p)) for p in paths) == 10
        assert len(cache) == 10
        assert all(cache.get(p, Stamp.of(p)).path == str(p) for p in paths)


def test_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CKPTPEEK_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_cache_path() == tmp_path / "home" / ".cache" / "ckptpeek" / "catalog.sqlite"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert default_cache_path() == tmp_path / "home" / ".cache" / "ckptpeek" / "catalog.sqlite"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_path() == tmp_path / "xdg" / "ckptpeek" / "catalog.sqlite"
    monkeypatch.setenv("CKPTPEEK_CACHE_DIR", str(tmp_path / "mine"))
    with CatalogCache() as cache:
        assert cache.path == tmp_path / "mine" / "catalog.sqlite"
        assert cache.persistent and cache.path.exists()
    with CatalogCache(tmp_path / "mine") as cache:  # a directory -> catalog.sqlite in it
        assert cache.path == tmp_path / "mine" / "catalog.sqlite"
    with CatalogCache(tmp_path / "other.db") as cache:  # explicit file wins over the env var
        assert cache.path == tmp_path / "other.db"


# -------------------------------------------------------------------- invalidation


def test_invalidated_by_touch(ckpt: Path, db: Path) -> None:
    with CatalogCache(db) as cache:
        cache.put(_entry(ckpt), Stamp.of(ckpt))
        os.utime(ckpt, ns=(T0 + 1, T0 + 1))  # same size, 1 ns later
        assert cache.get(ckpt, Stamp.of(ckpt)) is None
    with CatalogCache(db) as cache:
        assert cache.get(ckpt, Stamp.of(ckpt)) is None
        assert cache.stats["stale"] == 1


def test_invalidated_by_size(ckpt: Path, db: Path) -> None:
    with CatalogCache(db) as cache:
        cache.put(_entry(ckpt), Stamp.of(ckpt))
        _write(ckpt, b"x" * 101)  # same mtime, other size
        assert cache.get(ckpt, Stamp.of(ckpt)) is None


@pytest.mark.parametrize("change", ["edit", "create", "delete"])
def test_invalidated_by_sidecar(ckpt: Path, db: Path, change: str) -> None:
    meta = _sidecars(ckpt)[0]
    if change != "create":
        _write(meta, b"score: 0.85\n")
    stamp = Stamp.of(ckpt, _sidecars(ckpt))
    with CatalogCache(db) as cache:
        cache.put(_entry(ckpt), stamp)
        assert cache.get(ckpt, Stamp.of(ckpt, _sidecars(ckpt))) is not None
        if change == "edit":
            _write(meta, b"score: 0.86\n", T0 + 1000)  # same size, new mtime
        elif change == "create":
            _write(meta, b"score: 0.86\n")
        else:
            meta.unlink()
        assert cache.get(ckpt, Stamp.of(ckpt, _sidecars(ckpt))) is None
    with CatalogCache(db) as cache:
        assert cache.get(ckpt, Stamp.of(ckpt, _sidecars(ckpt))) is None


def test_invalidated_by_fingerprint(ckpt: Path, db: Path) -> None:
    with CatalogCache(db) as cache:
        cache.put(_entry(ckpt), Stamp.of(ckpt, fingerprint="rules=a"))
        assert cache.get(ckpt, Stamp.of(ckpt, fingerprint="rules=a")) is not None
        assert cache.get(ckpt, Stamp.of(ckpt, fingerprint="rules=b")) is None


@pytest.mark.parametrize("attr", ["__version__", "SPEC_DIGEST", "code"])
def test_invalidated_by_version(
    ckpt: Path, db: Path, attr: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stamp = Stamp.of(ckpt)
    with CatalogCache(db) as cache:
        cache.put(_entry(ckpt), stamp)
        assert cache.get(ckpt, stamp) is not None
    monkeypatch.setattr(cache_mod, "_generation", None)
    if attr == "code":
        monkeypatch.setattr(cache_mod, "_code_digest", lambda: "edited")
    else:
        monkeypatch.setattr(ckptpeek, attr, "something-else")
    with CatalogCache(db) as cache:
        assert cache.get(ckpt, stamp) is None
        cache.put(_entry(ckpt), stamp)  # overwritten with the new version
        assert cache.get(ckpt, stamp) is not None
    monkeypatch.undo()  # back to the real version: stale
    with CatalogCache(db) as cache:
        assert cache.get(ckpt, stamp) is None


def test_lru_respects_version_change(ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stamp = Stamp.of(ckpt)
    with CatalogCache(":memory:") as cache:
        cache.put(_entry(ckpt), stamp)
        monkeypatch.setattr(cache_mod, "_generation", ("9.9", "x", "y"))
        assert cache.get(ckpt, stamp) is None


def test_racy_timestamps_not_stored(tmp_path: Path, db: Path) -> None:
    now_s = time.time_ns() // 1_000_000_000 * 1_000_000_000  # whole second: coarse fs
    ckpt = _write(tmp_path / "racy.ckpt", b"z", now_s)
    with CatalogCache(db) as cache:
        assert not cache.put(_entry(ckpt), Stamp.of(ckpt))
        assert cache.get(ckpt, Stamp.of(ckpt)) is None and cache.stats["skipped"] == 1
    with CatalogCache(db, racy_window_ns=0) as cache:
        assert cache.put(_entry(ckpt), Stamp.of(ckpt))
    old = _write(tmp_path / "old.ckpt", b"z", now_s - 10_000_000_000)
    with CatalogCache(db) as cache:  # whole second but long ago: fine
        assert cache.put(_entry(old), Stamp.of(old))


# ------------------------------------------------------------------- prune / clear


def test_prune(tmp_path: Path, db: Path) -> None:
    a = [_write(tmp_path / "rootA" / f"{i}.ckpt", b"a") for i in range(3)]
    b = [_write(tmp_path / "rootB" / f"{i}.ckpt", b"b") for i in range(2)]
    with CatalogCache(db) as cache:
        cache.put_many((_entry(p), Stamp.of(p)) for p in a + b)
        a[0].unlink()
        # scoped: everything under rootA not kept goes; rootB is another build's business
        assert cache.prune(a[1:2], under=tmp_path / "rootA") == 2
        assert cache.get(a[2], Stamp.of(a[2])) is None
        assert all(cache.get(p, Stamp.of(p)) is not None for p in [a[1], *b])
        b[0].unlink()
        assert cache.prune([]) == 1  # unscoped: only vanished files
        assert len(cache) == 2
    with CatalogCache(db) as cache:
        assert len(cache) == 2 and cache.get(b[1], Stamp.of(b[1])) is not None
        cache.clear()
        assert len(cache) == 0 and cache.get(b[1], Stamp.of(b[1])) is None


# ----------------------------------------------------------------------- robustness


def _clobber_pages(db: Path) -> None:
    """Garbage after the 100-byte header: still provably ckptpeek's (application_id), corrupt."""
    CatalogCache(db).close()
    data = db.read_bytes()
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    db.write_bytes(data[:100] + os.urandom(8192))


def test_corrupt_file_is_rebuilt(ckpt: Path, db: Path, caplog: pytest.LogCaptureFixture) -> None:
    _clobber_pages(db)
    caplog.set_level(logging.WARNING, logger="ckptpeek.catalog")
    with CatalogCache(db) as cache:
        assert cache.persistent
        assert cache.get(ckpt, Stamp.of(ckpt)) is None
        assert cache.put(_entry(ckpt), Stamp.of(ckpt))
    assert any("corrupt" in r.getMessage() for r in caplog.records)
    with CatalogCache(db) as cache:
        assert cache.get(ckpt, Stamp.of(ckpt)) is not None
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_corrupt_after_open(ckpt: Path, db: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The file is clobbered while a cache object has it open: the next query rebuilds it."""
    stamp = Stamp.of(ckpt)
    with CatalogCache(db, lru_size=0) as cache:
        cache.put(_entry(ckpt), stamp)
        cache._conn.close()  # simulate: reconnect finds garbage
        cache._conn = None
        _clobber_pages(db)
        assert cache.get(ckpt, stamp) is None
        assert cache.put(_entry(ckpt), stamp)
        assert cache.get(ckpt, stamp) is not None


def test_undecodable_row_is_dropped(ckpt: Path, db: Path) -> None:
    stamp = Stamp.of(ckpt)
    with CatalogCache(db) as cache:
        cache.put(_entry(ckpt), stamp)
    con = sqlite3.connect(db)
    con.execute('UPDATE entries SET entry = \'{"path": 1, "bogus": true}\'')
    con.commit()
    con.close()
    with CatalogCache(db) as cache:
        assert cache.get(ckpt, stamp) is None and cache.stats["stale"] == 1
        assert cache.put(_entry(ckpt), stamp) and cache.get(ckpt, stamp) is not None


_HOLD_LOCK = textwrap.dedent("""
    import sqlite3, sys
    con = sqlite3.connect(sys.argv[1], isolation_level=None)
    con.execute("PRAGMA journal_mode=" + sys.argv[2])
    con.execute("CREATE TABLE IF NOT EXISTS other (x)")
    con.execute("BEGIN EXCLUSIVE")
    con.execute("INSERT INTO other VALUES (1)")
    print("locked", flush=True)
    sys.stdin.read()                       # hold the lock until the test closes stdin
    con.execute("COMMIT")
""")


def _lock_holder(path: Path, mode: str) -> subprocess.Popen[str]:
    if not path.exists():
        cache_mod._create(path)  # a ckptpeek cache: nothing else is opened
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(path), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def _count_calls(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[int]:
    """Wrap ``owner.name`` (a method, or a static method called through an instance)
    with a call counter; returns the one-element list holding the count."""
    calls = [0]
    fn = getattr(owner, name)

    def counting(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        return fn(*args, **kwargs)

    monkeypatch.setattr(owner, name, counting)
    return calls


def _release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(timeout=10) == 0


def test_locked_db_writes_are_skipped(
    ckpt: Path, db: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = _write(ckpt.with_name("other.ckpt"), b"o")
    caplog.set_level(logging.WARNING, logger="ckptpeek.catalog")
    with CatalogCache(db, timeout=0.1) as cache:
        cache.put(_entry(other), Stamp.of(other))
        inserts = _count_calls(monkeypatch, cache, "_insert")
        holder = _lock_holder(db, "wal")
        try:
            for _ in range(20):  # one timeout, then back-off
                assert cache.put(_entry(ckpt), Stamp.of(ckpt))
            # counted, not timed: only the first put waited on the lock (and failed);
            # the other 19 were skipped without touching SQLite
            assert inserts == [1] and cache.stats["errors"] == 1
            assert cache.get(ckpt, Stamp.of(ckpt)) is not None  # from the LRU
            cache._lru.clear()
            assert cache.get(other, Stamp.of(other)) is not None  # WAL: reads go on
            assert cache.stats["skipped"] >= 19
        finally:
            _release(holder)
        assert any("locked" in r.getMessage() for r in caplog.records)
        monkeypatch.setattr(cache, "_pause_writes_until", 0.0)  # back-off over
        assert cache.put(_entry(ckpt), Stamp.of(ckpt)) and cache.stats["stores"] == 2
    with CatalogCache(db) as cache:
        assert cache.get(ckpt, Stamp.of(ckpt)) is not None


def test_locked_at_open(
    ckpt: Path, db: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds an exclusive lock on a rollback-journal file (so even reading
    blocks): the cache runs on its LRU, then uses the file once the lock is gone."""
    db.parent.mkdir(parents=True)
    caplog.set_level(logging.WARNING, logger="ckptpeek.catalog")
    opens = _count_calls(monkeypatch, CatalogCache, "_open")
    holder = _lock_holder(db, "delete")
    try:
        cache = CatalogCache(db, timeout=0.1)
        assert cache.get(ckpt, Stamp.of(ckpt)) is None
        assert cache.put(_entry(ckpt), Stamp.of(ckpt))
        assert cache.get(ckpt, Stamp.of(ckpt)) is not None  # LRU
        # counted, not timed: one attempt to open the locked file (one busy timeout);
        # the get/put/get after it back off without trying SQLite again
        assert opens == [1] and cache.stats["errors"] == 1
    finally:
        _release(holder)
    assert any("locked" in r.getMessage() for r in caplog.records)
    cache._pause_reads_until = cache._pause_writes_until = 0.0  # back-off over
    assert cache.put(_entry(ckpt), Stamp.of(ckpt))
    cache.close()
    with CatalogCache(db) as cache:
        assert cache.get(ckpt, Stamp.of(ckpt)) is not None


@pytest.mark.parametrize("kind", ["v1_ckptpeek_cache", "own_version0", "own_bad_columns"])
def test_old_schema_is_rebuilt(
    ckpt: Path, db: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    db.parent.mkdir(parents=True)
    con = sqlite3.connect(db)
    if kind == "v1_ckptpeek_cache":  # from before the application id: told by its table
        cols = ", ".join(f"{c} TEXT" for c in cache_mod._V1_COLUMNS)
        con.execute(f"CREATE TABLE entries ({cols})")
        con.execute("PRAGMA user_version = 1")
    else:
        con.execute(f"PRAGMA application_id = {cache_mod.APPLICATION_ID}")
        con.execute("CREATE TABLE entries (path TEXT PRIMARY KEY, blob TEXT)")
        con.execute("INSERT INTO entries VALUES ('/x', '{}')")
        version = 0 if kind == "own_version0" else SCHEMA_VERSION
        con.execute(f"PRAGMA user_version = {version}")
    con.commit()
    con.close()
    caplog.set_level(logging.WARNING, logger="ckptpeek.catalog")
    with CatalogCache(db) as cache:
        assert cache.persistent and len(cache) == 0
        assert cache.put(_entry(ckpt), Stamp.of(ckpt))
    assert any("schema" in r.getMessage() for r in caplog.records)
    with CatalogCache(db) as cache:
        assert cache.get(ckpt, Stamp.of(ckpt)) is not None


def test_newer_schema_is_left_alone(ckpt: Path, db: Path, caplog: pytest.LogCaptureFixture) -> None:
    db.parent.mkdir(parents=True)
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA application_id = {cache_mod.APPLICATION_ID}")
    con.execute("CREATE TABLE future (x)")
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    caplog.set_level(logging.WARNING, logger="ckptpeek.catalog")
    with CatalogCache(db) as cache:
        assert not cache.persistent
        assert cache.put(_entry(ckpt), Stamp.of(ckpt))
        assert cache.get(ckpt, Stamp.of(ckpt)) is not None  # LRU only
    assert any("newer" in r.getMessage() for r in caplog.records)
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    assert con.execute("SELECT name FROM sqlite_master").fetchall() == [("future",)]


def _permissions_ignored(tmp: Path) -> bool:
    probe = tmp / "probe"
    probe.mkdir(mode=0o500)
    try:
        (probe / "x").touch()
        return True
    except PermissionError:
        return False
    finally:
        probe.chmod(0o700)


@pytest.mark.parametrize(
    "where", ["file_as_dir", "readonly_dir", "readonly_dir_existing_db", "unreadable_file"]
)
def test_unusable_location(
    ckpt: Path, tmp_path: Path, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    if where == "file_as_dir":  # a regular file where a directory should be
        blocker = _write(tmp_path / "blocker", b"")
        path = blocker / "ckptpeek" / "catalog.sqlite"
    else:
        d = tmp_path / "ro"
        d.mkdir()
        if _permissions_ignored(tmp_path):
            pytest.skip("file permissions are not enforced for this user (root)")
        path = d / "catalog.sqlite"
        if where == "unreadable_file":
            path.write_bytes(b"")
            path.chmod(0)
        if where == "readonly_dir_existing_db":  # WAL needs to create -wal/-shm beside it
            with CatalogCache(path) as cache:
                cache.put(_entry(ckpt), Stamp.of(ckpt))
        d.chmod(0o500)
    caplog.set_level(logging.WARNING, logger="ckptpeek.catalog")
    try:
        with CatalogCache(path) as cache:
            assert not cache.persistent
            assert cache.get(ckpt, Stamp.of(ckpt)) is None
            assert cache.put(_entry(ckpt), Stamp.of(ckpt))
            assert cache.get(ckpt, Stamp.of(ckpt)) is not None  # LRU still works
            assert cache.prune([]) == 0 and len(cache) == 1
            cache.clear()
    finally:
        if where != "file_as_dir":
            (tmp_path / "ro").chmod(0o700)
    assert any("unusable" in r.getMessage() for r in caplog.records)


def test_closed_cache_is_harmless(ckpt: Path, db: Path) -> None:
    cache = CatalogCache(db)
    cache.close()
    cache.close()
    assert cache.get(ckpt, Stamp.of(ckpt)) is None
    cache.put(_entry(ckpt), Stamp.of(ckpt))


# ---------------------------------------------------------------------- concurrency

_HAMMER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, sys.argv[1])
    from ckptpeek.catalog.cache import CatalogCache, Stamp
    from ckptpeek.catalog.models import CatalogEntry
    db, root, wid, n = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    until = float(sys.argv[6])
    paths = sorted(os.path.join(root, f) for f in os.listdir(root))
    bad = i = 0
    with CatalogCache(db, lru_size=0) as cache:
        while i < n or time.time() < until:     # both processes overlap for a while
            i += 1
            p = paths[(i * 7 + wid) % len(paths)]
            st = Stamp.of(p)
            got = cache.get(p, st)
            if got is not None and got.path != p:
                bad += 1
            e = CatalogEntry(path=p, relpath=os.path.basename(p), experiment=f"w{wid}",
                             file_size=st.size, mtime_ns=st.mtime_ns, epoch=i,
                             config={"blob": "x" * (i % 50) * 20})
            if i % 10 == 9:
                cache.put_many([(e, st), (e.model_copy(update={"epoch": -i}), st)])
            else:
                cache.put(e, st)
        print(bad, cache.stats["stores"], cache.stats["errors"], i, flush=True)
""")


def test_two_processes_hammering_one_file(tmp_path: Path, db: Path) -> None:
    root = tmp_path / "ckpts"
    for i in range(25):
        _write(root / f"c{i:02d}.ckpt", b"c" * (i + 1))
    n, until = 300, time.time() + 1.5
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _HAMMER, SRC, str(db), str(root), str(w), str(n), str(until)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(2)
    ]
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        bad, stores, errors, _ops = map(int, out.split())
        assert bad == 0 and errors == 0 and stores >= n, (out, err)
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT count(*) FROM entries").fetchone()[0] == 25
    con.close()
    with CatalogCache(db) as cache:
        for f in root.iterdir():
            assert cache.get(f, Stamp.of(f)).path == str(f)


def test_threads_share_one_cache(tmp_path: Path, db: Path) -> None:
    paths = [_write(tmp_path / "t" / f"{i}.ckpt", b"t" * (i + 1)) for i in range(40)]
    with CatalogCache(db, lru_size=16) as cache:

        def work(i: int) -> bool:
            p = paths[i % len(paths)]
            st = Stamp.of(p)
            got = cache.get(p, st)
            if got is None:
                cache.put(_entry(p), st)
                return True
            return got.path == str(p)

        with ThreadPoolExecutor(8) as pool:
            assert all(pool.map(work, range(800)))
        assert len(cache) == 40 and cache.stats["errors"] == 0


def test_forked_child_opens_its_own_connection(ckpt: Path, db: Path) -> None:
    if not hasattr(os, "fork"):
        pytest.skip("no fork")
    cache = CatalogCache(db)
    cache.put(_entry(ckpt), Stamp.of(ckpt))
    parent_conn = cache._conn
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        ok = False
        try:
            cache._lru.clear()
            ok = cache.get(ckpt, Stamp.of(ckpt)) is not None and cache._conn is not parent_conn
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert cache.get(ckpt, Stamp.of(ckpt)) is not None
    cache.close()


# ---------------------------------------------------------------------------- LRU


def test_lru_eviction_and_isolation(tmp_path: Path, db: Path) -> None:
    paths = [_write(tmp_path / f"{i}.ckpt", b"l") for i in range(3)]
    with CatalogCache(db, lru_size=2) as cache:
        for p in paths:
            cache.put(_entry(p), Stamp.of(p))
        assert list(cache._lru) == [str(p) for p in paths[1:]]
        assert cache.get(paths[0], Stamp.of(paths[0])) is not None  # from SQLite
        assert cache.stats["db_hits"] == 1
        assert list(cache._lru) == [str(paths[2]), str(paths[0])]  # promoted, 1 evicted
        cache.get(paths[2], Stamp.of(paths[2]))
        assert cache.stats["lru_hits"] == 1
        # callers get their own objects: mutating one does not change the cache
        got = cache.get(paths[2], Stamp.of(paths[2]))
        got.metrics["val/hmean"] = -1.0
        got.warnings.append("mutated")
        again = cache.get(paths[2], Stamp.of(paths[2]))
        assert again.metrics["val/hmean"] == 0.85 and again.warnings == []
        # the LRU alone serves repeated gets without touching SQLite
        cache._conn.close()
        assert cache.get(paths[2], Stamp.of(paths[2])) is not None
    with CatalogCache(db, lru_size=0) as cache:
        cache.get(paths[1], Stamp.of(paths[1]))
        cache.get(paths[1], Stamp.of(paths[1]))
        assert cache.stats["db_hits"] == 2 and not cache._lru


def test_network_filesystem_uses_rollback_journal(
    ckpt: Path, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WAL needs shared memory, which network filesystems do not provide across hosts."""
    monkeypatch.setattr(cache_mod, "_is_network_fs", lambda path: True)
    with CatalogCache(db) as cache:
        assert cache.put(_entry(ckpt), Stamp.of(ckpt))
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    con.close()
    with CatalogCache(db) as cache:
        assert cache.get(ckpt, Stamp.of(ckpt)) is not None
