"""Selective reads: ``open(path, select=...)`` reads exactly what a full read gives for
the selected top-level keys, with both engines, and skips the rest."""

from __future__ import annotations

import collections
import io
import pathlib
import pickle

import pytest

import ckptpeek
from ckptpeek.summary.model import MODEL_FIELDS
from ckptpeek.unpickle import engine as _backend

DATA = pathlib.Path(__file__).parent / "data"
LIGHTNING = DATA / "lightning_tiny.ckpt"
SELECTIONS = [
    ["epoch"],
    ["epoch", "global_step", "callbacks"],
    ["state_dict"],
    ["hyper_parameters", "optimizer_states"],
    ["no-such-key"],
    sorted(ckptpeek.SUMMARY_KEYS),
]


def _described(value):
    """A comparable rendering of a value (tensors by their metadata and values)."""
    if isinstance(value, ckptpeek.TensorRef):
        return (
            "tensor",
            str(value.dtype),
            tuple(value.shape),
            value.stride(),
            value.storage_offset(),
            value.storage_key,
            value.numpy().tolist(),
        )
    if isinstance(value, dict):
        return (type(value).__name__, [(k, _described(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_described(v) for v in value])
    return value


@pytest.mark.parametrize("select", SELECTIONS, ids=lambda s: ",".join(s)[:40])
def test_selected_keys_equal_the_full_read(select, engine) -> None:
    full = ckptpeek.load_checkpoint(LIGHTNING, engine=engine, fallback=None)
    with ckptpeek.open(LIGHTNING, engine=engine, select=select) as ckpt:
        assert ckpt.selected == frozenset(select)
        assert list(ckpt.root) == [k for k in full if k in select]
        for key in ckpt.root:
            assert _described(ckpt.root[key]) == _described(full[key]), key
        missing = next((k for k in full if k not in select), None)
        if missing is not None:
            with pytest.raises(KeyError, match="was not read"):
                ckpt.get(missing)


def test_summary_of_a_selective_read(engine) -> None:
    full = ckptpeek.open(LIGHTNING, engine=engine).summary()
    part = ckptpeek.open(LIGHTNING, engine=engine, select=ckptpeek.SUMMARY_KEYS).summary()
    assert part.selected == sorted(ckptpeek.SUMMARY_KEYS)
    for field in (
        "epoch",
        "global_step",
        "lightning_version",
        "hyper_parameters",
        "model_checkpoints",
        "early_stopping",
        "lr_schedulers",
        "state_dict_tensors",
        "parameter_count",
    ):
        assert getattr(part, field) == getattr(full, field), field
    assert part.optimizers == [] and full.optimizers  # optimizer_states was not read


def test_cross_references_fall_back_to_a_full_read(engine) -> None:
    # the selected value reuses (memo GET) a list built inside a skipped value
    shared = [{"w": 1}, {"w": 2}]
    root = {"skipped": {"a": shared, "b": [1, 2]}, "kept": {"again": shared}}
    data = pickle.dumps(root, protocol=2)
    vm = _backend.engine(engine)
    result = vm.run_pickle(data, select={"kept"})
    assert result.value == {"kept": {"again": shared}}
    assert result.complete is False


def test_non_dict_root_is_returned_whole(engine) -> None:
    data = pickle.dumps([1, {"epoch": 2}], protocol=2)
    result = _backend.engine(engine).run_pickle(data, select={"epoch"})
    assert result.value == [1, {"epoch": 2}] and result.complete


def test_errors_in_skipped_values_are_not_reported_but_in_selected_ones_are(engine) -> None:
    # an unknown opcode inside a skipped value is still an error: the selective run
    # fails, and the full run reports it
    good = pickle.dumps(collections.OrderedDict(a=[1, 2], b=3), protocol=2)
    bad = good.replace(b"K\x01", b"\xff\x01", 1)
    vm = _backend.engine(engine)
    with pytest.raises(ckptpeek.FormatError) as err:
        vm.run_pickle(bad, select={"b"})
    assert err.value.code == "unknown-opcode"


def test_summary_models_mirror_the_facts_tables() -> None:
    for model, fields in MODEL_FIELDS:
        assert list(model.model_fields) == [name for name, _ in fields], model.__name__


def test_summary_equals_the_cli_facts(engine) -> None:
    from ckptpeek.summary.facts import collect

    with ckptpeek.open(LIGHTNING, engine=engine) as ckpt:
        data = collect(ckpt)
        summary = ckpt.summary()
    assert summary.model_dump(mode="json") == {**data, "bytes_read": summary.bytes_read}


def _tensor_pickle(sections: list[tuple[str, int]]) -> bytes:
    """``{name: {"t0": tensor, ...}, ...}``: torch.save's opcodes, storages "0".."n"."""
    import struct

    p, memo = [b"\x80\x02}q\x00("], 1
    for name, count in sections:
        p.append(b"X" + struct.pack("<I", len(name)) + name.encode() + b"}(")
        for i in range(count):
            key = f"t{i}".encode()
            p.append(b"X" + struct.pack("<I", len(key)) + key)
            p.append(b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage")
            p.append(b"ctorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x06tQ")
            p.append(b"K\x00K\x06\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtR")
            p.append(b"r" + struct.pack("<I", memo))
            memo += 1
        p.append(b"u")
    p.append(b"u.")
    return b"".join(p)


def test_a_selected_value_after_skipped_tensors_is_read_once(engine, monkeypatch) -> None:
    """Skipped tensors before a selected one leave nothing that forces a full read:
    what they share (the empty tuple, storage types, globals) is not tainted."""
    from _builders import torch_zip

    from ckptpeek.unpickle import context

    runs: list[bool] = []
    drive = context.drive

    def counted(run, data, **kw):
        def counting(d, ctx, select):
            runs.append(select is not None)
            return run(d, ctx, select)

        return drive(counting, data, **kw)

    monkeypatch.setattr(context, "drive", counted)
    blob = torch_zip(_tensor_pickle([("optimizer", 30), ("model", 30), ("epoch", 0)]))
    with ckptpeek.open(io.BytesIO(blob), engine=engine, select=["model"]) as ckpt:
        assert len(ckpt.get("model")) == 30
    assert runs == [True]  # one selective run, no full one


def test_tracker_walks_keys_attributes_and_never_taints_plain_values() -> None:
    from ckptpeek.limits import DEFAULT_LIMITS
    from ckptpeek.unpickle import select as sel
    from ckptpeek.unpickle.standins import Placeholder

    t = sel.Tracker(DEFAULT_LIMITS)
    od = collections.OrderedDict(w=1)
    od._metadata = {"": sel.SKIPPED}  # an attribute of a dict subclass
    ph = Placeholder("m", "C")
    ph.setitems.append([sel.SKIPPED])
    for value in (
        {(1, sel.SKIPPED): 2},  # inside a key
        od,
        ph,
        slice([sel.SKIPPED]),
        [[[sel.SKIPPED]]],
    ):
        assert t.reaches(value), value
    assert not t.reaches({"a": ((), (1, "x"))}, collections.OrderedDict(), [], "s", None)
    t.taint((), (1, 2), "s", sel.SKIPPED)  # immutable and shared: nothing to taint
    assert not t.tainted and not t.reaches(())
    inner: list[int] = []
    outer = {"k": [inner]}
    t.taint(outer)  # everything under it
    assert t.reaches(inner) and t.reaches([outer]) and not t.reaches([[]])
