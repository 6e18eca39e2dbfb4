"""Regressions for defects a review found by crafting files (each was reproduced first)."""

from __future__ import annotations

import io
import struct

import pytest
from _builders import Pickle, torch_zip

import ckptpeek
from ckptpeek.cli import main as cli_main
from ckptpeek.summary.facts import collect
from ckptpeek.unpickle import interpolation
from ckptpeek.unpickle.interpolation import resolve_interpolations


def _open(pkl: bytes, engine: str, **kw):
    return ckptpeek.open(io.BytesIO(torch_zip(pkl)), engine=engine, **kw)


def _bytes(b: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(b)) + b


@pytest.mark.parametrize("elsize", [16, 1 << 30])
def test_dtype_build_cannot_resize_a_shared_descriptor(engine, elsize) -> None:
    # an array made with dtype V4, then a BUILD giving that dtype a larger element size:
    # numpy would read past the array's buffer (leaked heap, or a crash)
    p = Pickle().proto(3)
    p.glob("numpy", "dtype").str("V4").tuple1().reduce().binput(1).raw(b"0")
    p.glob("numpy.core.numeric", "_frombuffer").mark().raw(_bytes(b"ABCD")).binget(1)
    p.int(1).tuple1().str("C").tuple().reduce().binput(2).raw(b"0")
    p.binget(1).mark().int(3).str("|").none().none().none()
    p.raw(b"J" + struct.pack("<i", elsize)).int(1).int(0).tuple().build().raw(b"0")
    p.empty_dict().str("x").binget(2).setitem().stop()
    with pytest.raises(ckptpeek.FormatError) as err:
        _open(bytes(p), engine)
    assert err.value.code == "bad-build"


class _TooMuchWork(BaseException):
    """Raised from inside the library to stop a runaway; not an Exception, so no
    ``except Exception`` on the way out can swallow it."""


def test_interpolation_chains_are_linear_and_bounded(engine, monkeypatch) -> None:
    n = 40  # "${k1}${k1}", "${k2}${k2}", ...: exponential if each use re-expands
    p = Pickle().proto(2).empty_dict().str("hyper_parameters")
    p.glob("omegaconf.dictconfig", "DictConfig").empty_tuple().reduce()
    p.empty_dict().str("_parent").none().setitem().str("_content").empty_dict().mark()
    for i in range(n):
        p.str(f"k{i}").str(f"${{k{i + 1}}}${{k{i + 1}}}")
    p.str(f"k{n}").str("x").setitems().setitem().build().setitem().stop()
    # bounded work, counted: every node lookup of the resolver goes through _step
    steps = [0]
    step = interpolation._step

    def counting_step(node, part):
        steps[0] += 1
        if steps[0] > 100 * n:  # far past linear: stop instead of running for hours
            raise _TooMuchWork(steps[0])
        return step(node, part)

    monkeypatch.setattr(interpolation, "_step", counting_step)
    try:
        with _open(bytes(p), engine) as ckpt:
            config = ckpt.get("hyper_parameters")
    except _TooMuchWork:
        pytest.fail(f"resolving {n} chained interpolations took over {100 * n} lookups")
    # each of the n values is resolved once, by looking up its two references
    assert 0 < steps[0] <= 2 * n + 2, steps[0]
    assert max(len(v) for v in config.values() if isinstance(v, str)) <= 1 << 16
    assert config[f"k{n}"] == "x" and config[f"k{n - 1}"] == "xx"


def test_relative_interpolation_resolves_in_its_own_container() -> None:
    config = {"a": {"x": 1, "y": "${.x}"}, "b": {"x": 2, "z": "${a.y}"}}
    resolve_interpolations(config)
    assert config == {"a": {"x": 1, "y": 1}, "b": {"x": 2, "z": 1}}  # as OmegaConf gives


def test_odd_values_never_leak_exceptions_from_summary_or_cli(engine, tmp_path, capsys) -> None:
    p = Pickle().proto(2).empty_dict().mark()
    p.str("callbacks").empty_dict().str("X{{}: 1}").empty_dict().setitem()
    p.str("optimizer_states").empty_list().empty_dict().str("param_groups").empty_list()
    p.empty_dict().str("params").int(5).setitem().append().setitem().append()
    p.setitems().stop()
    data = torch_zip(bytes(p))
    with ckptpeek.open(io.BytesIO(data), engine=engine) as ckpt:
        facts = collect(ckpt)
        ckpt.summary()
    assert facts["optimizers"][0]["params"] == 0
    path = tmp_path / "odd.ckpt"
    path.write_bytes(data)
    assert cli_main([str(path), "--engine", engine]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_unparsable_device_is_kept_as_written(engine, tmp_path) -> None:
    from _builders import small_pickle

    pkl = small_pickle().replace(b"\x03\x00\x00\x00cpu", b"\x03\x00\x00\x00c:x")
    with _open(pkl, engine) as ckpt:
        ref = ckpt.get("w")
        assert str(ref.device) == "c:x" and "c:x" in repr(ref)


def test_select_sees_skipped_values_inside_stand_ins(engine) -> None:
    # a standalone OmegaConf node in a selected value holds a list built in a skipped one
    p = Pickle().proto(2).empty_dict().mark()
    p.str("a").empty_list().mark().empty_list().binput(5).int(7).append().int(1).raw(b"e")
    p.str("b").empty_list().glob("omegaconf.nodes", "AnyNode").empty_tuple().reduce()
    p.empty_dict().str("_val").binget(5).setitem().build().append()
    p.setitems().stop()
    full = _open(bytes(p), engine).root["b"]
    part = _open(bytes(p), engine, select=["b"]).root["b"]
    assert repr(part) == repr(full) == "[OmegaNode([7])]"
