"""The command-line tool, run in-process and as a real subprocess."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from ckptpeek import __version__
from ckptpeek.cli import main

DATA = pathlib.Path(__file__).parent / "data"
LIGHTNING = DATA / "lightning_tiny.ckpt"


def test_summary(capsys, engine) -> None:
    assert main([str(LIGHTNING), "--engine", engine]) == 0
    out = capsys.readouterr().out
    assert "epoch 1, global_step 8" in out
    assert "ModelCheckpoint: monitor=val/hmean mode=max" in out
    assert "optimizer: AdamW" in out and "lr scheduler: StepLR" in out


def test_json(capsys) -> None:
    assert main(["--json", str(LIGHTNING), str(DATA / "state_dict.pt")]) == 0
    docs = json.loads(capsys.readouterr().out)
    assert [d["epoch"] for d in docs] == [1, None]
    assert docs[0]["model_checkpoints"][0]["monitor"] == "val/hmean"
    assert docs[1]["dtypes"]["torch.float32"] >= 6


def test_tree(capsys) -> None:
    assert main(["--tree", str(DATA / "state_dict.pt")]) == 0
    out = capsys.readouterr().out
    assert "linear.weight: float32[3, 4]" in out
    assert "view.slice: float32[2, 3]" in out


def test_globals(capsys) -> None:
    assert main(["--globals", str(DATA / "state_dict.pt")]) == 0
    assert "safe     torch._utils._rebuild_tensor_v2" in capsys.readouterr().out


def test_errors_are_one_line_and_exit_1(tmp_path, capsys) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not a checkpoint")
    assert main([str(bad), str(tmp_path / "missing.ckpt"), str(LIGHTNING)]) == 1
    captured = capsys.readouterr()
    assert "not a checkpoint format I know" in captured.err
    assert "No such file" in captured.err
    assert "Traceback" not in captured.err
    assert "epoch 1" in captured.out  # the good file is still shown


def test_version_shows_engine() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ckptpeek", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert __version__ in out and "engine:" in out


@pytest.mark.parametrize("args", [["FILE"], ["--json", "FILE"], ["--tree", "FILE"]])
def test_cli_never_imports_torch(args) -> None:
    code = (
        "import sys, runpy; sys.argv = ['ckptpeek'] + sys.argv[1:]\n"
        "try:\n    runpy.run_module('ckptpeek', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    argv = [str(LIGHTNING) if a == "FILE" else a for a in args]
    subprocess.run(
        [sys.executable, "-c", code, *argv],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
