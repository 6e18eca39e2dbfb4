"""``ckptpeek catalog``: table, --json, --jsonl, --sort, --experiment."""

from __future__ import annotations

import json
import subprocess
import sys

from ckptpeek.catalog.cli import main

from .conftest import EXPERIMENT_MULTIRUN, EXPERIMENT_PAN, EXPERIMENT_R18, snapshot


def run(capsys, *argv):
    code = main([*argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_table(tree, capsys):
    code, out, err = run(capsys, str(tree.root), "--no-cache", "--no-progress")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["EXPERIMENT", "CHECKPOINT", "EPOCH", "STEP"]
    assert sum(EXPERIMENT_R18 in line for line in lines) == 3
    assert "resnet34/pan/db" in out and "val/hmean (max)" in out
    assert "8 checkpoint(s)" in out


def test_json_and_jsonl(tree, capsys):
    code, out, _ = run(capsys, str(tree.root), "--no-cache", "--json")
    doc = json.loads(out)
    assert code == 0 and len(doc["entries"]) == 8 and doc["root"] == str(tree.root)
    code, out, _ = run(capsys, str(tree.root), "--no-cache", "--jsonl")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["relpath"] for r in rows] == [e["relpath"] for e in doc["entries"]]
    assert all(r["sources"]["epoch"] == "header:header" for r in rows)


def test_sort_and_experiment(tree, capsys):
    _, out, _ = run(
        capsys, str(tree.root), "--no-cache", "--jsonl", "--sort", "val/hmean", "--desc"
    )
    scores = [json.loads(line)["metrics"]["val/hmean"] for line in out.splitlines()]
    assert scores == sorted(scores, reverse=True)
    _, out, _ = run(capsys, str(tree.root), "--no-cache", "--jsonl", "--sort", "epoch")
    epochs = [json.loads(line)["epoch"] for line in out.splitlines()]
    assert epochs == sorted(epochs)
    _, out, _ = run(
        capsys,
        str(tree.root),
        "--no-cache",
        "--jsonl",
        "--experiment",
        EXPERIMENT_PAN,
        "--experiment",
        "multirun/",
    )
    exps = {json.loads(line)["experiment"] for line in out.splitlines()}
    assert exps == {EXPERIMENT_PAN, EXPERIMENT_MULTIRUN}
    _, out, _ = run(capsys, str(tree.root), "--no-cache", "--sort", "val_hmean")
    assert "VAL_HMEAN" in out.splitlines()[0]


def test_cache_path_and_write_resolved(tree, tmp_path, capsys):
    import shutil

    root = tmp_path / "outputs"
    shutil.copytree(tree.root, root)
    before = snapshot(root)
    code, _, _ = run(capsys, str(root), "--cache-path", str(tmp_path / "cache"), "--workers", "2")
    assert code == 0 and snapshot(root) == before
    code, _, _ = run(capsys, str(root), "--no-cache", "--write-resolved")
    assert code == 0 and len(snapshot(root)) == len(before) + 8


def test_missing_root(tmp_path, capsys):
    code, out, err = run(capsys, str(tmp_path / "nope"), "--no-cache")
    assert code == 1 and "not a directory" in err


def test_module_entry_point_needs_no_torch(tree):
    code = (
        f"import sys, runpy; sys.argv = ['x', {str(tree.root)!r}, '--no-cache', '--jsonl'];"
        "runpy.run_module('ckptpeek.catalog.cli', run_name='__main__')"
    )
    probe = code.replace(
        "runpy.run_module",
        "import atexit; atexit.register(lambda: print('TORCH' if 'torch' in sys.modules else 'NOTORCH', file=sys.stderr)); runpy.run_module",
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.splitlines()) == 8
    assert "NOTORCH" in res.stderr
