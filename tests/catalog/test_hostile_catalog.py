"""The catalog against hostile and careless trees: every input is made here by a generator.

Nothing in a tree may break the catalog, make it lose a checkpoint, cost unbounded work or
memory, fool its cache, overwrite a file it did not write, or reach the terminal as control
characters. Bounded work is asserted by counting (nodes, bytes, calls), never by time.
"""

from __future__ import annotations

import collections
import functools
import json
import math
import os
import sqlite3
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
from _builders import (  # tests/ is on sys.path (rootdir-style import)
    Pickle,
    small_checkpoint,
    small_pickle,
    torch_zip,
)

import ckptpeek
from ckptpeek.catalog import agree as agree_mod
from ckptpeek.catalog import build_catalog
from ckptpeek.catalog import cache as cache_mod
from ckptpeek.catalog import hydra as hydra_mod
from ckptpeek.catalog import signatures as sig_mod
from ckptpeek.catalog import sources as sources_mod
from ckptpeek.catalog import text as text_mod
from ckptpeek.catalog.build import RESOLVED_SUFFIX
from ckptpeek.catalog.cache import CatalogCache, NotACacheError, Stamp
from ckptpeek.catalog.cli import main
from ckptpeek.catalog.text import TextBudget, TextError, parse_text

LIMITS = ckptpeek.DEFAULT_LIMITS


# --------------------------------------------------------------------------- generators


def make_tree(tmp_path: Path, name: str = "epoch=3-step=30.ckpt") -> tuple[Path, Path]:
    """``outputs/exp/checkpoints/<name>``: one small valid checkpoint."""
    root = tmp_path / "outputs"
    ckpt = root / "exp" / "checkpoints" / name
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(small_checkpoint())
    return root, ckpt


def sidecar(ckpt: Path, kind: str, ext: str, text: str | bytes) -> Path:
    stem = ckpt.name.rsplit(".", 1)[0]
    path = ckpt.with_name(f"{stem}.{kind}{ext}")
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def laughs(levels: int, fan: int = 10) -> str:
    """Billion laughs: ``levels`` anchors, each a list of ``fan`` aliases of the one before."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * fan) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * fan) + "]")
    return "\n".join(lines) + "\n"


def deep_json(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


def deep_yaml(depth: int) -> str:
    return "".join("  " * i + "a:\n" for i in range(depth)) + "  " * depth + "b: 1\n"


#: an integer of ~5000 decimal digits in every YAML 1.1 form (the int(str) limit is 4300)
BIG_INTS = {
    "decimal": "9" * 5000,
    "underscores": "1_" * 5000 + "1",
    "hex": "0x" + "f" * 4200,
    "old_octal": "0" + "7" * 5700,
    "binary": "0b" + "1" * 17000,
    "base60": "1" + ":59" * 3000,
}


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main([*argv])
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def reader(engine: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The catalog reads its checkpoints with ``engine`` (both pickle engines, as every
    reader test; the catalog itself takes no engine option)."""
    real = ckptpeek.open
    monkeypatch.setattr(
        sources_mod.ckptpeek, "open", functools.partial(real, engine=engine), raising=True
    )
    return engine


def only(catalog: Any) -> Any:
    assert catalog.errors == [] and len(catalog.entries) == 1
    return catalog.entries[0]


# --------------------------------------------------------------------------- 1. text guards


@pytest.mark.parametrize(
    ("text", "kind", "limit"),
    [
        (laughs(9), "yaml", "max_text_nodes"),
        ("a: &a [*a]\n", "yaml", None),  # a recursive alias
        (deep_yaml(LIMITS.max_depth + 5), "yaml", "max_depth"),
        ("[" * 300 + "]" * 300, "yaml", "max_depth"),
        (deep_json(LIMITS.max_depth + 5), "json", "max_depth"),
        (deep_json(100_000), "json", "max_depth"),  # RecursionError before the fix
        ("[" + "0," * 1_100_000 + "0]", "json", "max_text_nodes"),
        *((f"v: {v}\n", "yaml", "int_max_str_digits") for v in BIG_INTS.values()),
        ("9" * 5000, "json", "int_max_str_digits"),
        ("- !!int abc\n", "yaml", None),  # ValueError inside PyYAML before
        ("- !!bool maybe\n", "yaml", None),  # KeyError inside PyYAML before
        ("!!python/object/apply:os.system [echo]\n", "yaml", None),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 20 else None,
)
def test_parse_text_refuses(text: str, kind: str, limit: str | None) -> None:
    with pytest.raises(TextError) as info:
        parse_text(text, kind)
    assert info.value.limit == limit


def test_alias_fan_out_is_counted_while_composing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each alias counts the nodes it stands for, before the next event is parsed: the
    composer stops one alias past the limit, with a graph of a few hundred nodes built."""
    composed = [0]
    real = text_mod._Loader.compose_node

    def counting(self: Any, parent: Any, index: Any) -> Any:
        composed[0] += 1
        return real(self, parent, index)

    monkeypatch.setattr(text_mod._Loader, "compose_node", counting)
    budget = TextBudget(LIMITS)
    with pytest.raises(TextError):
        parse_text(laughs(9), "yaml", budget)  # 10**9 nodes expanded
    assert composed[0] < 100  # compose_node calls (one per YAML node of the *text*)
    assert LIMITS.max_text_nodes < budget.nodes <= LIMITS.max_text_nodes + 10**8


def test_yaml_is_the_same_as_safe_load_for_valid_text() -> None:
    import yaml

    text = (
        "a: 0x1f\nb: 1:20:30\nc: 1_000\nd: 0o17\ne: 017\nf: 0b101\ng: -1.5e3\nh: ~\n"
        "i: [1, {j: k}]\nanchor: &x {p: 1}\nmerged: {<<: *x, q: 2}\nt: 2001-12-14\n"
        "s: !!set {u, v}\n" + "big: " + "9" * 3800 + "\n"
    )
    assert parse_text(text, "yaml") == yaml.safe_load(text)


def test_hash_flooding_keys_are_bounded() -> None:
    # distinct ints sharing one hash (hash(n) == n mod 2**61 - 1, the same in every process):
    # the n-th compares with the n - 1 before it, 1500 of them ~1.1 million comparisons
    m = (1 << 61) - 1
    assert 1500 * 1499 // 2 > LIMITS.max_hash_collisions
    text = "{" + ", ".join(f"{k * m}: 1" for k in range(1, 1501)) + "}"
    with pytest.raises(TextError) as info:
        parse_text(text, "yaml")
    assert info.value.limit == "max_hash_collisions"


def test_sparse_file_is_refused_by_fstat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, ckpt = make_tree(tmp_path)
    big = sidecar(ckpt, "metadata", ".yaml", b"epoch: 3\n")
    with open(big, "r+b") as fh:
        fh.truncate(5 << 30)  # 5 GB, sparse: a MemoryError before the fix
    read = [0]
    real_read = os.read

    def counting(fd: int, n: int) -> bytes:
        data = real_read(fd, n)
        read[0] += len(data)
        return data

    monkeypatch.setattr(text_mod.os, "read", counting)
    entry = only(build_catalog(root, cache=False))
    assert read[0] == 0  # refused from fstat, nothing read
    assert entry.status == "partial"
    assert any("Limits.max_text_bytes" in w for w in entry.warnings)


def test_text_cap_bounds_what_is_read(tmp_path: Path) -> None:
    root, ckpt = make_tree(tmp_path)
    limits = LIMITS._replace(max_text_bytes=1000)
    sidecar(ckpt, "config", ".yaml", "x: " + "y" * 2000 + "\n")
    entry = only(build_catalog(root, cache=False, limits=limits))
    assert any("Limits.max_text_bytes" in w for w in entry.warnings)


@pytest.mark.parametrize(
    ("form", "ext"), [(form, ".yaml") for form in sorted(BIG_INTS)] + [("decimal", ".json")]
)
def test_big_ints_in_a_sidecar_are_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], form: str, ext: str
) -> None:
    """v1 (flat) and v2 metadata sidecars with huge ints: OverflowError / a ValueError
    traceback in ``--json`` before; now a warning, and the JSON is valid."""
    root, ckpt = make_tree(tmp_path)
    if ext == ".json":  # JSON has decimal integers only
        sidecar(ckpt, "metadata", ext, '{"epoch": 3, "val_loss": ' + BIG_INTS[form] + "}")
    else:
        sidecar(ckpt, "metadata", ext, f"schema_version: 2\nepoch: {BIG_INTS[form]}\n")
        sidecar(ckpt, "config", ext, f"model: {{width: {BIG_INTS[form]}}}\n")
    entry = only(build_catalog(root, cache=False))
    assert entry.status == "partial"
    assert any("decimal digits" in w or "digits" in w for w in entry.warnings)
    for flag in ("--json", "--jsonl"):
        code, out, err = run_cli(capsys, str(root), "--no-cache", flag, "--write-resolved")
        assert code == 0 and "Traceback" not in err
        assert json.loads(out.splitlines()[0] if flag == "--jsonl" else out)


def test_float_overflow_in_a_v1_sidecar(tmp_path: Path) -> None:
    root, ckpt = make_tree(tmp_path)
    sidecar(ckpt, "metadata", ".yaml", "val_loss: 0x" + "f" * 300 + "\n")  # > float max
    entry = only(build_catalog(root, cache=False))
    assert entry.status == "partial" and any("too large" in w for w in entry.warnings)


def test_hydra_config_fan_out_and_deep_override(tmp_path: Path) -> None:
    root, ckpt = make_tree(tmp_path)
    hydra = root / "exp" / ".hydra"
    hydra.mkdir()
    (hydra / "config.yaml").write_text("model: {encoder: resnet18}\n" + laughs(8))
    entry = only(build_catalog(root, cache=False))
    assert any("Limits.max_text_nodes" in w for w in entry.warnings)
    (hydra / "config.yaml").write_text("model: {encoder: resnet18}\n")
    deep_key = ".".join(["a"] * 5000)
    (hydra / "overrides.yaml").write_text(
        json.dumps([f"{deep_key}=1", "model.width=" + "[" * 300 + "]" * 300, "model.x=2"])
    )
    entry = only(build_catalog(root, cache=False))
    assert entry.architecture.encoder == "resnet18"
    assert entry.config is not None and entry.config["model"]["x"] == 2
    notes = [w for w in entry.warnings if "override" in w]
    assert any("Limits.max_depth" in w for w in notes) and len(notes) == 2


@pytest.mark.parametrize("where", ["config sidecar", "hydra"])
def test_interpolation_output_is_capped(tmp_path: Path, where: str) -> None:
    """Each ``${a}.`` makes a copy of ``a``: 200 of them would make 200 KB of text from 2 KB;
    the resolution stops at ``max_interpolated_bytes`` and the config stays as written."""
    root, ckpt = make_tree(tmp_path)
    limits = LIMITS._replace(max_interpolated_bytes=10_000)
    text = "model:\n  encoder: r18\n  a: '" + "x" * 1000 + "'\n"
    text += "".join(f"  k{i}: ${{model.a}}.\n" for i in range(200))
    if where == "hydra":
        (root / "exp" / ".hydra").mkdir()
        (root / "exp" / ".hydra" / "config.yaml").write_text(text)
    else:
        sidecar(ckpt, "config", ".yaml", text)
    entry = only(build_catalog(root, cache=False, limits=limits))
    assert any("interpolations not resolved" in w for w in entry.warnings)
    assert entry.config is not None
    produced = sum(len(v) for k, v in entry.config["model"].items() if k.startswith("k"))
    assert produced <= limits.max_interpolated_bytes + 200 * len("${model.a}.")
    assert entry.architecture.encoder == "r18"  # the rest of the config is used


def test_huge_interpolation_index(tmp_path: Path) -> None:
    root, ckpt = make_tree(tmp_path)
    text = "a: [1]\nb: ${a.99999999999}\nc: ${a." + "9" * 5000 + "}\nd: ${a.0}\n"
    sidecar(ckpt, "config", ".yaml", text)
    entry = only(build_catalog(root, cache=False))
    assert entry.status == "ok" and entry.config is not None
    assert entry.config["b"] == "${a.99999999999}" and entry.config["c"].startswith("${a.")
    assert entry.config["d"] == 1


# --------------------------------------------------------------------------- 2. signatures


def test_long_keys_cost_linear_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 900 KB key of wrapper prefixes took 17 s (a quadratic prefix strip), and keys under
    the length cap sharing a long chain of wrappers were quadratic too: count calls."""
    shapes: dict[str, tuple[int, ...]] = {"model." * 150_000 + "conv1.weight": (8, 3, 7, 7)}
    shapes.update({"model." * 150 + f"k{i}.weight": (1,) for i in range(2000)})
    sig_mod.SignatureRules.default()  # the shipped rules, parsed once, are not counted
    calls = [0]

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event in ("call", "c_call"):
            calls[0] += 1

    sys.setprofile(profile)
    try:
        sigs = sig_mod.infer_signatures(shapes)
    finally:
        sys.setprofile(None)
    # linear: a few dozen calls per key (~600 000 for the chain before, + 150 000
    # startswith over 900 KB for the long key)
    assert calls[0] < 40 * len(shapes)
    assert sigs.generic == {"model": 0} or all(len(k) < 1000 for k in sigs.generic)


def test_long_key_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, ckpt = make_tree(tmp_path)
    real = sources_mod.read_header

    def with_long_key(path: Path, limits: Any) -> Any:
        head = real(path, limits)
        head.shapes["x" * (sig_mod.MAX_KEY_CHARS + 1)] = (1,)
        return head

    monkeypatch.setattr(sources_mod, "read_header", with_long_key)
    entry = only(build_catalog(root, cache=False))
    assert any("longer than" in w for w in entry.warnings)


# --------------------------------------------------------------------------- 3. mark, never drop


def test_a_bug_is_an_unreadable_entry_not_a_lost_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root, ckpt = make_tree(tmp_path)
    make_tree(tmp_path / "b")  # not under root
    (root / "exp" / "checkpoints" / "last.ckpt").write_bytes(small_checkpoint())

    def buggy(path: Any, **kw: Any) -> Any:
        if Path(path).name == "last.ckpt":
            raise TypeError("a bug")
        return real(path, **kw)

    real = ckptpeek.open
    monkeypatch.setattr(sources_mod.ckptpeek, "open", buggy)
    cat = build_catalog(root, cache=False)
    assert cat.errors == [] and len(cat.entries) == 2
    bad = next(e for e in cat.entries if e.relpath.endswith("last.ckpt"))
    assert bad.status == "unreadable" and "ckptpeek bug" in bad.errors[0]
    assert bad.is_last  # the file name's fields are kept
    code, out, _ = run_cli(capsys, str(root), "--no-cache")
    assert code == 1 and "2 checkpoint(s), 1 unreadable" in out


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "file is empty"),
        (b"PK\x03\x04garbage", "no ZIP end-of-central-directory"),
        (b"\x80\x02}q\x00.", "not a checkpoint format"),  # a bare pickle: torch refuses it too
        (b"\x80\x05" + b"(" * 100_000, "not a checkpoint format"),
        (torch_zip(b"\x80\x02" + b"(" * 100_000 + b"."), "MARKs open at once"),
    ],
    ids=["empty", "zip-garbage", "bare-pickle", "marks", "zip-marks"],
)
def test_broken_checkpoints_are_entries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], reader: str, content: bytes, why: str
) -> None:
    root, ckpt = make_tree(tmp_path)
    ckpt.write_bytes(content)
    entry = only(build_catalog(root, cache=False))
    assert entry.status == "unreadable" and why in entry.errors[0]
    code, out, _ = run_cli(capsys, str(root), "--no-cache")
    assert "1 checkpoint(s), 1 unreadable" in out and code == 1


def test_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, ckpt = make_tree(tmp_path)
    sidecar(ckpt, "metadata", ".yaml", "[unclosed\n")
    code, out, _ = run_cli(capsys, str(root), "--no-cache")
    assert code == 0 and "1 with warnings" in out  # warnings do not fail
    assert run_cli(capsys, str(root / "nope"), "--no-cache")[0] == 1
    assert run_cli(capsys, str(root), "--no-such-option")[0] == 2


# --------------------------------------------------------------------------- 4. the cache is data


def _forge(db: Path, **fields: Any) -> None:
    con = sqlite3.connect(db)
    (text,) = con.execute("SELECT entry FROM entries").fetchone()
    entry = json.loads(text)
    entry.update(fields)
    con.execute("UPDATE entries SET entry = ?", (json.dumps(entry),))
    con.commit()
    con.close()


def test_forged_row_is_a_miss(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, ckpt = make_tree(tmp_path)
    db = tmp_path / "cache.sqlite"
    truth = only(build_catalog(root, cache=db))
    outside = tmp_path / "elsewhere" / "checkpoints"
    outside.mkdir(parents=True)
    _forge(db, epoch=999, score=0.999, path=str(outside / "x.ckpt"))
    entry = only(build_catalog(root, cache=db, write_resolved=True))
    assert entry.epoch == truth.epoch != 999 and entry.score != 0.999
    assert list(outside.iterdir()) == []  # nothing written where the row pointed
    assert (ckpt.parent / ("epoch=3-step=30" + RESOLVED_SUFFIX)).is_file()


def test_row_forged_with_the_true_stamp_but_not_the_bytes(tmp_path: Path) -> None:
    """Everything stat gives is public; the MAC needs the checkpoint's own bytes."""
    root, ckpt = make_tree(tmp_path)
    db = tmp_path / "cache.sqlite"
    entry = only(build_catalog(root, cache=db))
    stamp = Stamp.of(ckpt)
    guessed = Stamp(stamp.size, stamp.mtime_ns, stamp.extras, stamp.fingerprint)  # no bytes
    assert guessed == stamp and guessed.content() == "" != stamp.content()
    forged = entry.model_copy(update={"epoch": 999})
    text = forged.model_dump_json()
    mac = cache_mod._mac(str(ckpt), guessed, cache_mod._current_generation(), text)
    con = sqlite3.connect(db)
    con.execute("UPDATE entries SET entry = ?, mac = ?", (text, mac))
    con.commit()
    con.close()
    with CatalogCache(db) as cache:
        assert cache.get(ckpt, stamp) is None and cache.stats["stale"] == 1
    assert only(build_catalog(root, cache=db)).epoch == entry.epoch


def test_oversized_row_is_a_miss(tmp_path: Path) -> None:
    root, ckpt = make_tree(tmp_path)
    db = tmp_path / "cache.sqlite"
    only(build_catalog(root, cache=db))
    _forge(db, warnings=["x" * cache_mod.MAX_ROW_BYTES])
    with CatalogCache(db) as cache:
        assert cache.get(ckpt, Stamp.of(ckpt)) is None and cache.stats["stale"] == 1


@pytest.mark.parametrize("blocker", ["text", "symlink_out", "directory", "fifo"])
def test_write_resolved_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], blocker: str
) -> None:
    root, ckpt = make_tree(tmp_path)
    target = ckpt.with_name("epoch=3-step=30" + RESOLVED_SUFFIX)
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's file\n")
    if blocker == "text":
        target.write_text('{"mine": true}\n')
    elif blocker == "symlink_out":
        target.symlink_to(victim)
    elif blocker == "directory":
        target.mkdir()
    else:
        os.mkfifo(target)
    before = (victim.read_bytes(), os.lstat(target).st_mode)
    code, _, err = run_cli(capsys, str(root), "--no-cache", "--write-resolved")
    assert "not written by ckptpeek" in err
    assert (victim.read_bytes(), os.lstat(target).st_mode) == before
    if blocker == "text":
        assert target.read_text() == '{"mine": true}\n'
    assert code == 0


def test_write_resolved_replaces_its_own_file(tmp_path: Path) -> None:
    root, ckpt = make_tree(tmp_path)
    target = ckpt.with_name("epoch=3-step=30" + RESOLVED_SUFFIX)
    build_catalog(root, cache=False, write_resolved=True)
    first = json.loads(target.read_text())
    assert first["written_by"].startswith("ckptpeek catalog")
    entry = only(build_catalog(root, cache=False, write_resolved=True))
    assert entry.warnings == [] or all(RESOLVED_SUFFIX not in w for w in entry.warnings)
    assert sorted(p.name for p in ckpt.parent.iterdir()) == sorted([ckpt.name, target.name])


# --------------------------------------------------------------------------- 5. cache ownership


def _foreign(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "target"
    if kind == "sqlite":
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE photos (id INTEGER, name TEXT)")
        con.execute("INSERT INTO photos VALUES (1, 'cat')")
        con.commit()
        con.close()
    elif kind == "checkpoint":
        path.write_bytes(small_checkpoint())
    elif kind == "text":
        path.write_text("notes\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":  # a directory holds catalog.sqlite: here, a directory too
        (path / cache_mod.DB_NAME).mkdir(parents=True)
    elif kind == "symlink":
        other = tmp_path / "other.db"
        other.write_bytes(small_checkpoint())
        path.symlink_to(other)
    elif kind == "fifo":
        os.mkfifo(path)
    return path


def _state(path: Path) -> Any:
    out = []
    for p in sorted([path, *path.parent.rglob("*")]):
        st = os.lstat(p)
        data = p.read_bytes() if p.is_file() and not p.is_symlink() else None
        out.append((str(p), st.st_mode, data))
    return out


FOREIGN = ["sqlite", "checkpoint", "text", "empty", "directory", "symlink", "fifo"]


@pytest.mark.parametrize("kind", FOREIGN)
def test_foreign_cache_path_is_refused_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    root, _ = make_tree(tmp_path / "t")
    path = _foreign(tmp_path, kind)
    before = _state(path)
    with pytest.raises(NotACacheError) as info:
        CatalogCache(path)
    assert isinstance(info.value, OSError) and "not a" in str(info.value)
    with pytest.raises(NotACacheError):
        build_catalog(root, cache=path)
    code, out, err = run_cli(capsys, str(root), "--cache-path", str(path))
    assert code == 2 and "not a" in err and out == ""
    assert _state(path) == before


def test_cache_created_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "c" / "catalog.sqlite"

    def crash(*a: Any, **kw: Any) -> None:
        raise KeyboardInterrupt  # a crash between building the file and linking it

    monkeypatch.setattr(cache_mod.os, "link", crash)
    with pytest.raises(KeyboardInterrupt):
        CatalogCache(db)
    assert list(db.parent.iterdir()) == []  # no half cache, no temporary left
    monkeypatch.undo()
    with CatalogCache(db) as cache:
        assert cache.persistent
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA application_id").fetchone()[0] == cache_mod.APPLICATION_ID
    assert not [p for p in db.parent.iterdir() if p.name.endswith(".tmp")]


def test_corrupt_cache_rebuilt_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A corrupt ckptpeek cache is rebuilt aside and renamed over: a crash in between
    leaves the old file whole (still provably ours, rebuilt next time), never half a cache."""
    root, ckpt = make_tree(tmp_path)
    db = tmp_path / "c" / "catalog.sqlite"
    CatalogCache(db).close()
    data = db.read_bytes()
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    corrupt = data[:100] + b"\xee" * 4000
    db.write_bytes(corrupt)

    def crash(*a: Any, **kw: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_mod.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        with CatalogCache(db) as cache:
            cache.get(ckpt, Stamp.of(ckpt))
    assert db.read_bytes() == corrupt and not list(db.parent.glob("*.tmp"))
    monkeypatch.undo()
    assert only(build_catalog(root, cache=db)).status == "ok"
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("PRAGMA application_id").fetchone()[0] == cache_mod.APPLICATION_ID


def test_catalog_exports_the_refusal() -> None:
    import ckptpeek.catalog

    assert ckptpeek.catalog.NotACacheError is NotACacheError


# --------------------------------------------------------------------------- 6. terminal safety


def test_table_is_terminal_safe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, ckpt = make_tree(tmp_path, "epoch=3-\x1b]0;pwned\x07.ckpt")
    sidecar(
        ckpt,
        "metadata",
        ".yaml",
        'monitor: "val\\nexp  fake.ckpt  9  9"\nmode: max\nscore: 0.5\n'
        'encoder: "\\e[2J\\u202eevil"\n',
    )
    code, out, _ = run_cli(capsys, str(root), "--no-cache")
    assert code == 0
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert len(out.splitlines()) == 4  # header, one row, blank, the count: no fake row
    assert "\\x1b" in out and "val\\nexp" in out
    code, out, _ = run_cli(capsys, str(root), "--no-cache", "--json")
    doc = json.loads(out)
    assert doc["entries"][0]["monitor"] == "val\nexp  fake.ckpt  9  9"  # JSON: unchanged


def test_undecodable_file_name_in_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, ckpt = make_tree(tmp_path)
    odd = os.fsencode(ckpt.parent) + b"/epoch=1-\xff\xfe.ckpt"
    with open(odd, "wb") as fh:
        fh.write(small_checkpoint())
    db = str(tmp_path / "c.sqlite")
    for flag in ("--json", "--jsonl", "--no-progress", "--write-resolved"):
        # twice with a cache: SQLite refused the name (a "ckptpeek bug" entry) before
        for cache in ("--no-cache", db, db):
            argv = ("--no-cache",) if cache == "--no-cache" else ("--cache-path", cache)
            code, out, _ = run_cli(capsys, str(root), *argv, flag)
            assert code == 0 and out.isascii() and "\\udcff" in out
        if flag == "--json":
            names = [e["relpath"] for e in json.loads(out)["entries"]]
            assert any("\udcff" in n for n in names)


# --------------------------------------------------------------------------- 7. special files


def test_special_files_are_never_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root, ckpt = make_tree(tmp_path)
    ckdir = ckpt.parent
    os.mkfifo(ckdir / "fifo.ckpt")
    (ckdir / "out.ckpt").symlink_to(make_tree(tmp_path / "other")[1])
    (ckdir / "dangling.pt").symlink_to(root / "nothing")
    (ckdir / "inside.pt").symlink_to(ckpt)  # a link inside the tree is read
    os.mkfifo(ckpt.with_name("epoch=3-step=30.metadata.yaml"))
    (root / "exp" / ".hydra").mkdir()
    os.mkfifo(root / "exp" / ".hydra" / "config.yaml")
    opened: list[str] = []
    real = ckptpeek.open

    def spy(path: Any, **kw: Any) -> Any:
        opened.append(Path(path).name)
        return real(path, **kw)

    monkeypatch.setattr(sources_mod.ckptpeek, "open", spy)
    cat = build_catalog(root, cache=False)
    by_name = {e.relpath.rsplit("/", 1)[-1]: e for e in cat.entries}
    assert sorted(set(opened)) == ["epoch=3-step=30.ckpt", "inside.pt"]
    assert "a FIFO" in by_name["fifo.ckpt"].errors[0]
    assert "out of the catalog root" in by_name["out.ckpt"].errors[0]
    assert "dangling" in by_name["dangling.pt"].errors[0]
    assert by_name["inside.pt"].status != "unreadable"
    good = by_name["epoch=3-step=30.ckpt"]
    assert sum("not a regular file" in w for w in good.warnings) == 2  # sidecar + hydra
    code, out, _ = run_cli(capsys, str(root), "--no-cache")
    assert code == 1 and "5 checkpoint(s), 3 unreadable" in out


def test_a_deep_tree_is_walked_without_recursion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """1100 nested directories: os.walk (recursive in Python 3.11) raised RecursionError."""
    root = tmp_path / "outputs"
    here = root
    root.mkdir()
    try:
        for _ in range(1100):  # one level at a time (pathlib's parents=True recurses too)
            here = here / "a"
            here.mkdir()
        ckdir = here / "checkpoints"
        ckdir.mkdir()
        (ckdir / "epoch=1.ckpt").write_bytes(small_checkpoint())
        entry = only(build_catalog(root, cache=tmp_path / "c.sqlite", write_resolved=True))
        assert entry.status == "ok" and entry.experiment == "/".join(["a"] * 1100)
        assert (ckdir / ("epoch=1" + RESOLVED_SUFFIX)).is_file()
        code, out, _ = run_cli(capsys, str(root), "--no-cache")
        assert code == 0 and "1 checkpoint(s)" in out
    finally:
        remove_deep(root)  # pytest's own clean-up of old tmp dirs recurses (shutil.rmtree)


def remove_deep(top: Path) -> None:
    """``rm -r top`` without recursion."""
    order, todo = [], [str(top)]
    while todo:
        here = todo.pop()
        order.append(here)
        with os.scandir(here) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    todo.append(e.path)
                else:
                    os.unlink(e.path)
    for here in reversed(order):
        os.rmdir(here)


def test_sidecar_symlink_out_of_the_tree(tmp_path: Path) -> None:
    root, ckpt = make_tree(tmp_path)
    secret = tmp_path / "secret.yaml"
    secret.write_text("epoch: 77\n")
    ckpt.with_name("epoch=3-step=30.metadata.yaml").symlink_to(secret)
    entry = only(build_catalog(root, cache=False))
    assert entry.epoch != 77 and any("out of the catalog root" in w for w in entry.warnings)


# --------------------------------------------------------------------------- 8. header values


def header_checkpoint(entries: dict[str, int], shadow: tuple[str, ...] = ()) -> bytes:
    """A torch zip whose root is ``collections.OrderedDict(**entries, state_dict={"w":
    <2x3 tensor>})``; ``shadow``: instance attributes (each = 7) the root's BUILD sets,
    shadowing dict methods of the same name (``root.get`` is then an int)."""
    tensor = small_pickle()
    start = tensor.index(b"X\x01\x00\x00\x00w") + len(b"X\x01\x00\x00\x00w")
    tensor_ops = tensor[start : tensor.rindex(b"u.")]  # the REDUCE that makes the tensor
    p = Pickle().proto(2).glob("collections", "OrderedDict").empty_tuple().reduce()
    p.mark()
    for key, value in entries.items():
        p.str(key)
        if 0 <= value < (1 << 31):
            p.int(value)
        else:  # LONG4: any int, little-endian two's complement
            raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
            p.raw(b"\x8b" + struct.pack("<I", len(raw)) + raw)
    p.str("state_dict").empty_dict().mark().str("w").raw(tensor_ops).setitems()
    p.setitems()
    if shadow:
        p.empty_dict().mark()
        for attr in shadow:
            p.str(attr).int(7)
        p.setitems().build()
    return torch_zip(bytes(p.stop()))


@pytest.mark.parametrize(
    "ints",
    [
        {"epoch": 1 << 20000},  # the reviewer's 2.5 KB file: no str() for it
        {"epoch": 1 << 63, "global_step": -(1 << 63) - 1},  # just outside int64
        {"epoch": 5, "global_step": 1 << 4000},  # prints, but is no counter
    ],
    ids=["20000-bits", "int64-edges", "4000-bits"],
)
def test_huge_header_ints_are_dropped_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], reader: str, ints: dict[str, int]
) -> None:
    """``epoch = 1 << 20000`` killed the build in the cache's JSON encoder, ``--json`` /
    ``--jsonl`` in the CLI and ``--write-resolved`` in build.py (a ValueError traceback):
    a counter outside int64 is not used, with a warning naming it; the file name's
    epoch and step stand in."""
    root, ckpt = make_tree(tmp_path)
    ckpt.write_bytes(header_checkpoint(ints))
    db = tmp_path / "c.sqlite"
    for cache in (db, db, False):  # a cold and a warm build with the cache, and none
        entry = only(build_catalog(root, cache=cache, write_resolved=True))
        assert entry.status == "ok"
        for key, value in ints.items():
            wanted = value if -(1 << 63) <= value < (1 << 63) else None
            fallback = {"epoch": 3, "global_step": 30}[key]  # epoch=3-step=30.ckpt
            assert getattr(entry, key) == (fallback if wanted is None else wanted)
            noted = [w for w in entry.warnings if w.startswith(f"{key}: header:")]
            assert len(noted) == (wanted is None)
            assert all("outside int64" in w and "bits" in w for w in noted)
    for argv in ((), ("--json",), ("--jsonl",), ("--write-resolved",)):
        for cache_argv in (("--no-cache",), ("--cache-path", str(db))):
            code, out, err = run_cli(capsys, str(root), *cache_argv, *argv)
            assert code == 0 and "Traceback" not in err
            if argv in ((), ("--write-resolved",)):
                assert "1 checkpoint(s), 1 with warnings" in out
            else:
                doc = json.loads(out.splitlines()[0] if argv[0] == "--jsonl" else out)
                got = doc if argv[0] == "--jsonl" else doc["entries"][0]
                assert (got["epoch"], got["global_step"]) == (entry.epoch, entry.global_step)


SHADOWS = ("items", "keys", "values", "get", "setdefault", "copy")


def test_a_shadowing_root_is_read(tmp_path: Path, reader: str) -> None:
    """A root whose BUILD sets instance attributes ``items``/``get``/``keys``/``values``
    (torch.load keeps them, and reads the file): ``root.get(...)`` was "'int' object is
    not callable", an ``unreadable`` internal-error entry. Only dict's own methods are
    called on file-made objects."""
    root, ckpt = make_tree(tmp_path)
    ckpt.write_bytes(header_checkpoint({"epoch": 4, "global_step": 44}, SHADOWS))
    entry = only(build_catalog(root, cache=False))
    assert entry.status == "ok" and entry.errors == []
    assert (entry.epoch, entry.global_step) == (4, 44)
    assert entry.sources["epoch"] == "header:header"
    with ckptpeek.open(ckpt) as opened:  # the file really shadows them
        assert vars(opened.root) == dict.fromkeys(SHADOWS, 7)


def test_a_shadowing_root_matches_torch(tmp_path: Path, reader: str) -> None:
    """torch.save writes such a root (``items`` aside: its pickler calls it): the entry
    says what torch.load reads."""
    torch = pytest.importorskip("torch")
    root, ckpt = make_tree(tmp_path)
    od: Any = collections.OrderedDict(epoch=6, global_step=66, state_dict={"w": torch.zeros(2, 3)})
    for attr in ("keys", "values", "get", "copy"):
        setattr(od, attr, 5)
    torch.save(od, ckpt)
    expected = torch.load(ckpt, weights_only=False)
    entry = only(build_catalog(root, cache=False))
    assert entry.status == "ok"
    assert (entry.epoch, entry.global_step) == (expected["epoch"], expected["global_step"])
    assert entry.signatures is not None


def test_catalog_limits_reach_the_checkpoint(tmp_path: Path, reader: str) -> None:
    """``build_catalog(limits=...)`` reads the checkpoints under those limits too."""
    root, ckpt = make_tree(tmp_path)
    entry = only(build_catalog(root, cache=False, limits=LIMITS._replace(max_pickle_bytes=50)))
    assert entry.status == "unreadable" and "over the limit of 50" in entry.errors[0]
    assert only(build_catalog(root, cache=False)).status == "ok"


def test_exit_status_counts_what_is_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], reader: str
) -> None:
    root, _ = make_tree(tmp_path)
    bad = root / "broken" / "checkpoints" / "epoch=1.ckpt"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"PK\x03\x04garbage")
    code, out, _ = run_cli(capsys, str(root), "--no-cache", "--experiment", "exp")
    assert code == 0 and "1 checkpoint(s)" in out and "unreadable" not in out
    code, out, _ = run_cli(capsys, str(root), "--no-cache", "--experiment", "broken")
    assert code == 1 and "1 checkpoint(s), 1 unreadable" in out
    code, out, _ = run_cli(capsys, str(root), "--no-cache", "--json", "--experiment", "exp")
    assert code == 0 and len(json.loads(out)["entries"]) == 1


# --------------------------------------------------------------------------- 9. text rules


@pytest.mark.parametrize("form", ["decimal", "hex", "binary", "octal"])
def test_text_ints_follow_the_printable_rule(form: str) -> None:
    """A text int is kept iff ``ckptpeek.printable`` prints it as digits (3 bits per digit
    ``int(str)`` allows): ints of 12.9k-14.3k bits parsed, then printed ``<int ...>``."""
    bits = 3 * sys.get_int_max_str_digits()
    for value, kept in (((1 << bits) - 1, True), (1 << bits, False)):
        literal = {
            "decimal": str(value),
            "hex": hex(value),
            "binary": bin(value),
            "octal": "0" + oct(value)[2:],
        }[form]
        if kept:
            assert parse_text(f"v: {literal}\n", "yaml") == {"v": value}
            assert ckptpeek.printable(value) == str(value)
            if form == "decimal":
                assert parse_text(f'{{"v": {literal}}}', "json") == {"v": value}
        else:
            assert ckptpeek.printable(value).startswith("<int of")
            with pytest.raises(TextError) as info:
                parse_text(f"v: {literal}\n", "yaml")
            assert info.value.limit == "int_max_str_digits"
            if form == "decimal":
                with pytest.raises(TextError):
                    parse_text(f'{{"v": {literal}}}', "json")


def test_equal_keys_in_many_mappings_are_not_flooding(monkeypatch: pytest.MonkeyPatch) -> None:
    """1 001 mappings ``{0: a, 1: b}`` were refused as hash flooding (equal keys of
    different mappings counted as colliding): THE key guard counts per mapping built."""
    import yaml

    checks = [0]
    real = text_mod.KeyGuard.check

    def counting(self: Any, key: Any, container: Any) -> None:
        checks[0] += 1
        real(self, key, container)

    monkeypatch.setattr(text_mod.KeyGuard, "check", counting)
    limits = LIMITS._replace(max_hash_collisions=1000)
    text = "".join("- {0: a, 1: b}\n" for _ in range(1001))
    assert parse_text(text, "yaml", limits=limits) == yaml.safe_load(text)
    assert checks[0] == 2002  # every key of every mapping passed the guard, once


def test_key_guard_errors_name_the_limit() -> None:
    """A flood inside one mapping is still refused, as the guard's LimitError turned into
    a TextError naming its ``Limits`` field."""
    m = (1 << 61) - 1  # hash(k * m) == 0 for every k
    keys = ", ".join(f"{k * m}: 1" for k in range(1, 60))
    with pytest.raises(TextError) as info:
        parse_text("{" + keys + "}", "yaml", limits=LIMITS._replace(max_hash_collisions=100))
    assert info.value.limit == "max_hash_collisions"
    assert "Limits.max_hash_collisions" in str(info.value)
    assert parse_text("{" + keys + "}", "yaml")[m] == 1  # under the default limit: kept


# --------------------------------------------------------------------------- 10. warm cost


def test_warm_build_reads_one_tail_per_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reader: str
) -> None:
    """The content stamp costs one ``pread`` of at most 64 KiB per checkpoint whose stat
    matches a row (two reads and both ends before), and none for a stat miss."""
    root, ckpt = make_tree(tmp_path)
    for i in range(4):
        (ckpt.parent / f"epoch=1{i}-step=1{i}0.ckpt").write_bytes(
            torch_zip(small_pickle(), storage=bytes(24) + b"\0" * (200 << 10))
        )
    db = tmp_path / "c.sqlite"
    n = len(build_catalog(root, cache=db).entries)
    reads: list[int] = []
    real = os.pread

    def counting(fd: int, size: int, offset: int) -> bytes:
        data = real(fd, size, offset)
        reads.append(len(data))
        return data

    monkeypatch.setattr(cache_mod.os, "pread", counting)
    warm = build_catalog(root, cache=db)
    assert all(e.sources for e in warm.entries) and len(warm.entries) == n == 5
    stamp_reads = [r for r in reads if r != 100]  # 100: the cache file's own header check
    assert len(stamp_reads) == n and max(stamp_reads) <= cache_mod.CONTENT_BYTES
    entry = next(e for e in warm.entries if e.path == str(ckpt))
    other_db = tmp_path / "d.sqlite"
    with CatalogCache(other_db) as cache:
        assert cache.put(entry, Stamp.of(ckpt))
    reads.clear()
    with CatalogCache(other_db) as cache:  # no LRU: from the database
        stamp = Stamp.of(ckpt)
        moved = Stamp(stamp.size + 1, stamp.mtime_ns, path=stamp.path)  # a stat miss
        assert cache.get(ckpt, moved) is None and cache.stats["stale"] == 1
        assert [r for r in reads if r != 100] == []
        assert cache.get(ckpt, stamp) == entry and cache.stats["db_hits"] == 1
        assert len([r for r in reads if r != 100]) == 1


# --------------------------------------------------------------------------- 11. round 3


@pytest.mark.parametrize(
    ("a", "b", "agree"),
    [
        (1 << 1024, 1, False),  # float(1 << 1024) raised OverflowError
        (10**400, 10**400, True),
        (10**400, 10**400 + 1, False),  # exactly, not to a float's precision
        ((1 << 53) + 1, 1 << 53, False),  # equal as floats
        (1 << 1024, math.inf, False),
        (-(1 << 1024), -math.inf, False),
        (1 << 1024, 1e308, False),
        (3, 3.0, True),
        (0.8512, 0.85123, True),
        (math.nan, math.nan, True),
        (math.nan, 1 << 2000, False),
        (1 << 1024, "1", False),
    ],
)
def test_values_agree_takes_any_value(a: Any, b: Any, agree: bool) -> None:
    assert agree_mod.values_agree("epoch", a, b) is agree
    assert agree_mod.values_agree("epoch", b, a) is agree


def test_a_huge_counter_in_one_of_two_sidecars(tmp_path: Path) -> None:
    """``epoch: 10**400`` in one metadata sidecar and ``1`` in the other: the sidecars were
    compared (``float(10**400)``: OverflowError, the entry an "internal error") before
    the merge dropped the counter. It is now dropped first, with a warning, and the
    other sidecar gives the epoch."""
    root, ckpt = make_tree(tmp_path, "last.ckpt")
    ckpt.write_bytes(header_checkpoint({"global_step": 1}))
    sidecar(ckpt, "metadata", ".yaml", f"schema_version: 2\nepoch: {10**400}\n")
    sidecar(ckpt, "metadata", ".json", '{"schema_version": 2, "epoch": 7}')
    entry = only(build_catalog(root, cache=False))
    assert entry.status == "ok" and entry.errors == []
    assert entry.epoch == 7 and entry.sources["epoch"].endswith("last.metadata.json")
    assert [w for w in entry.warnings if "outside int64" in w] == [
        "epoch: metadata sidecars: exp/checkpoints/last.metadata.yaml says an int of "
        "1329 bits, outside int64; not used"
    ]


def test_a_huge_header_counter_against_the_file_name(tmp_path: Path, reader: str) -> None:
    root, ckpt = make_tree(tmp_path, "epoch=1-step=1.ckpt")
    ckpt.write_bytes(header_checkpoint({"epoch": 1 << 1024, "global_step": 1}))
    entry = only(build_catalog(root, cache=False))
    assert entry.status == "ok" and (entry.epoch, entry.sources["epoch"]) == (
        1,
        "filename:filename",
    )
    assert any(
        w.startswith("epoch: header:header says an int of 1025 bits") for w in entry.warnings
    )


def _companion(db: Path, suffix: str, how: str, victim: Path) -> None:
    """Plant ``db + suffix`` as ``how`` names ``victim``: a hard link, a symlink, or (as
    root) a file of another user."""
    name = Path(f"{db}{suffix}")
    if how == "hardlink":
        os.link(victim, name)
    elif how == "symlink":
        os.symlink(victim, name)
    else:
        name.write_bytes(victim.read_bytes())
        os.chown(name, 12345, 12345)


COMPANION_KINDS = [
    "hardlink",
    "symlink",
    pytest.param(
        "other-user",
        marks=pytest.mark.skipif(
            not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown needs root"
        ),
    ),
]


@pytest.mark.parametrize("suffix", cache_mod.COMPANIONS)
@pytest.mark.parametrize("how", COMPANION_KINDS)
def test_planted_cache_companions_are_never_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, suffix: str, how: str
) -> None:
    """A cache in a shared directory: the file is ours, but its ``-wal``/``-shm``/
    ``-journal`` is a link to a file of the user. SQLite follows it and overwrote the
    victim; now the build runs without the persistent cache, with a warning, and the
    victim and the link are byte-identical."""
    root, ckpt = make_tree(tmp_path / "t")
    db = tmp_path / "shared" / "cat.sqlite"
    db.parent.mkdir()
    assert only(build_catalog(root, cache=db)).status == "ok"  # a genuine cache
    assert not any(os.path.lexists(f"{db}{s}") for s in cache_mod.COMPANIONS)
    victim = tmp_path / "thesis.txt"
    victim.write_bytes(b"my precious work\n" * 1000)
    _companion(db, suffix, how, victim)
    os.utime(ckpt, ns=(1, 1))  # a changed checkpoint: the build would store its entry
    before = (_state(victim), _state(db.parent))
    with caplog.at_level("WARNING", logger="ckptpeek.catalog"):
        with CatalogCache(db) as cache:
            entry = only(build_catalog(root, cache=cache))
            assert cache.stats["stores"] == 0 and cache.stats["db_hits"] == 0
    assert entry.status == "ok" and entry.mtime_ns == 1
    assert (_state(victim), _state(db.parent)) == before
    assert [r.getMessage() for r in caplog.records if f"{db}{suffix}" in r.getMessage()]
    os.unlink(f"{db}{suffix}")  # gone: the cache is used again
    with CatalogCache(db) as cache:
        build_catalog(root, cache=cache)
        assert cache.stats["stores"] == 1
    assert victim.read_bytes() == b"my precious work\n" * 1000


def test_own_cache_companions_are_used(tmp_path: Path) -> None:
    """What SQLite itself leaves beside the database (a live connection's -wal and -shm,
    one name each, ours) is no reason to bypass it: a second cache shares it."""
    root, _ = make_tree(tmp_path / "t")
    db = tmp_path / "cat.sqlite"
    with CatalogCache(db) as first:
        build_catalog(root, cache=first)
        assert os.path.exists(f"{db}-wal") and os.path.exists(f"{db}-shm")
        with CatalogCache(db) as second:
            build_catalog(root, cache=second)
            assert second.stats["db_hits"] == 1 and second._disabled is None


def fan_out_overrides(n: int, parts: int) -> list[str]:
    """``n`` overrides ``+k<i>.a.a...a=1`` of ``parts`` parts: each makes ``parts - 1``
    mappings from a few hundred bytes."""
    return [f"+k{i}." + "a." * (parts - 2) + "a=1" for i in range(n)]


def _nodes(cfg: Any) -> int:
    count, todo = 0, [cfg]
    while todo:
        node = todo.pop()
        count += 1
        if isinstance(node, dict):
            todo.extend(node.values())
    return count


def test_override_mappings_are_counted() -> None:
    budget = TextBudget(LIMITS)
    cfg: dict[str, Any] = {"a": {}}
    assert hydra_mod.apply_overrides(cfg, ["+a.b.c.d=1", "a.b.e=[1, 2]"], budget) == []
    assert cfg == {"a": {"b": {"c": {"d": 1}, "e": [1, 2]}}}
    assert budget.nodes == 2 + 1 + 3  # b and c made, the value 1; the list and its items


@pytest.mark.parametrize("parts", [3, 50, LIMITS.max_depth - 2])
def test_override_fan_out_is_bounded(tmp_path: Path, parts: int) -> None:
    """A 4 MB overrides.yaml of ``+k<i>.a.a...a=1`` made 198 mappings per override
    uncounted (12.8 s, 956 MB): every mapping an override makes counts against
    ``max_text_nodes``, before it is made; once spent, the rest are not applied (one
    note, not one per override)."""
    limits = LIMITS._replace(max_text_nodes=5_000)
    n = 4 * limits.max_text_nodes // parts
    overrides = fan_out_overrides(n, parts)
    budget = TextBudget(limits)
    cfg: dict[str, Any] = {}
    notes = hydra_mod.apply_overrides(cfg, overrides, budget)
    # what was built (but the root) is within the budget; the refused override counted
    assert _nodes(cfg) - 1 <= limits.max_text_nodes < budget.nodes
    assert len(notes) == 1 and "Limits.max_text_nodes" in notes[0] and "not applied" in notes[0]
    # through the catalog: the config it keeps is bounded the same way
    root, _ = make_tree(tmp_path)
    hydra = root / "exp" / ".hydra"
    hydra.mkdir()
    (hydra / "config.yaml").write_text("model: {encoder: resnet18}\n")
    (hydra / "overrides.yaml").write_text(json.dumps(overrides))
    entry = only(build_catalog(root, cache=False, limits=limits))
    assert entry.architecture.encoder == "resnet18" and entry.status == "ok"
    assert _nodes(entry.config) <= limits.max_text_nodes
    assert [w for w in entry.warnings if "override" in w] == [
        w for w in entry.warnings if "Limits.max_text_nodes" in w and "not applied" in w
    ]


def test_override_notes_are_bounded() -> None:
    overrides = ["no equals sign"] * 1000 + [7] * 1000 + ["+x.y=1"]
    cfg: dict[str, Any] = {}
    notes = hydra_mod.apply_overrides(cfg, overrides, TextBudget(LIMITS))
    assert cfg == {"x": {"y": 1}}  # the valid one still applies
    assert len(notes) == hydra_mod.MAX_OVERRIDE_NOTES + 1
    assert notes[-1] == f"{2000 - hydra_mod.MAX_OVERRIDE_NOTES} more override(s) skipped"


def _strict_json(text: str) -> Any:
    def refuse(token: str) -> Any:
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_catalog_json_is_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``lr = nan`` in a config, ``.inf`` and ``'1e999'`` as metrics: ``--json``,
    ``--jsonl`` and ``.resolved.config.json`` had ``NaN``/``Infinity`` tokens, which no
    strict parser reads; they are the strings ``ckptpeek --json`` writes."""
    root, ckpt = make_tree(tmp_path)
    sidecar(
        ckpt,
        "metadata",
        ".yaml",
        "schema_version: 2\nmonitor: val/a\nmode: max\n"
        "metrics: {val/a: .inf, val/b: -.inf, val/c: .nan, val/d: '1e999'}\n",
    )
    sidecar(ckpt, "config", ".yaml", "optimizer: {lr: .nan, wd: [.inf, 1.5]}\n")
    code, out, _ = run_cli(capsys, str(root), "--no-cache", "--json")
    assert code == 0
    (got,) = _strict_json(out)["entries"]
    code, out, _ = run_cli(capsys, str(root), "--no-cache", "--jsonl")
    assert code == 0 and [_strict_json(line) for line in out.splitlines()] == [got]
    assert got["score"] == "Infinity"
    assert got["metrics"] == {
        "val/a": "Infinity",
        "val/b": "-Infinity",
        "val/c": "NaN",
        "val/d": "Infinity",
    }
    assert got["config"]["optimizer"] == {"lr": "NaN", "wd": ["Infinity", 1.5]}
    # the resolved config too, and the entry keeps its floats
    entry = only(build_catalog(root, cache=False, write_resolved=True))
    written = _strict_json(ckpt.with_name("epoch=3-step=30" + RESOLVED_SUFFIX).read_text())
    assert written["metrics"] == got["metrics"] and written["config"] == got["config"]
    assert entry.metrics["val/a"] == math.inf and math.isnan(entry.metrics["val/c"])


def test_sort_argument_is_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = make_tree(tmp_path)
    code, out, _ = run_cli(capsys, str(root), "--no-cache", "--sort", "x\x1b[2J\u202e")
    assert code == 0 and "\x1b" not in out and "\u202e" not in out
    assert out.splitlines()[0].split()[6] == ckptpeek.printable("X\x1b[2J\u202e")


def _expanded_nodes(cfg: Any) -> int:
    """Nodes counted once per place they appear (as every later walk visits them)."""
    count, todo = 0, [cfg]
    while todo:
        node = todo.pop()
        count += 1
        if isinstance(node, dict):
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return count


def aliased_config(places: int) -> str:
    """``a: &a {x: 1}`` named in ``places`` more places."""
    return "a: &a {x: 1}\nb: [" + ", ".join(["*a"] * places) + "]\nc: *a\n"


def test_overrides_copy_what_aliases_share() -> None:
    """An override writes only to its own place, as OmegaConf (Hydra) holds an aliased
    mapping copied into each place; the copy counts against the budget."""
    omegaconf = pytest.importorskip("omegaconf")
    text = aliased_config(2)
    budget = TextBudget(LIMITS)
    cfg = parse_text(text, "yaml", budget)
    before = budget.nodes
    assert hydra_mod.apply_overrides(cfg, ["a.x=2", "+c.y.z=3"], budget) == []
    assert cfg == {"a": {"x": 2}, "b": [{"x": 1}, {"x": 1}], "c": {"x": 1, "y": {"z": 3}}}
    assert budget.nodes - before == 1 + 1 + 1 + 1 + 1  # two values, two copies of 1, y
    theirs = omegaconf.OmegaConf.create(text)
    theirs.a.x = 2
    theirs.c.y = {"z": 3}
    assert omegaconf.OmegaConf.to_container(theirs) == cfg


def test_overrides_through_an_alias_do_not_multiply(tmp_path: Path) -> None:
    """2,000 places of one aliased mapping and 100 overrides of 190 parts into it: 38
    million nodes to walk (20 s) from a 50 KB config. Now the mapping is copied once
    and every place but one keeps the original: what every walk visits is bounded."""
    overrides = [f"+a.k{i}." + "x." * 188 + "y=1" for i in range(100)]
    budget = TextBudget(LIMITS)
    cfg = parse_text(aliased_config(2000), "yaml", budget)
    assert hydra_mod.apply_overrides(cfg, overrides, budget) == []
    assert _expanded_nodes(cfg) - 1 <= budget.nodes <= LIMITS.max_text_nodes
    root, _ = make_tree(tmp_path)
    hydra = root / "exp" / ".hydra"
    hydra.mkdir()
    (hydra / "config.yaml").write_text(aliased_config(2000))
    (hydra / "overrides.yaml").write_text(json.dumps(overrides))
    entry = only(build_catalog(root, cache=False))
    assert entry.status == "ok" and entry.warnings == []
    assert _expanded_nodes(entry.config) <= LIMITS.max_text_nodes


def test_disagreeing_sidecars_quote_at_most_80_characters(tmp_path: Path) -> None:
    root, ckpt = make_tree(tmp_path)
    sidecar(ckpt, "metadata", ".yaml", f"schema_version: 2\nencoder: {'a' * 100_000}\n")
    sidecar(ckpt, "metadata", ".json", json.dumps({"schema_version": 2, "encoder": "b" * 100_000}))
    entry = only(build_catalog(root, cache=False))
    (noted,) = [w for w in entry.warnings if "disagree on architecture.encoder" in w]
    assert len(noted) < 400 and "a" * 76 in noted and "a" * 77 not in noted
