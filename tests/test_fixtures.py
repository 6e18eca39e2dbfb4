"""ckptpeek against torch's recorded answers, without torch.

``tests/data/make_fixtures.py`` wrote each fixture with the real ``torch.save`` and
recorded what ``torch.load`` returned in ``<name>.expected.json``. Here both engines
must reproduce it: the object graph (types, keys, order, values) and, for every
tensor, dtype, shape, stride, storage offset, requires_grad, Parameter-ness, storage
sharing and the exact bytes of its values.
"""

from __future__ import annotations

import collections
import json
import pathlib

import numpy as np
import pytest

import ckptpeek

DATA = pathlib.Path(__file__).parent / "data"
FIXTURES = sorted(
    p.name
    for p in DATA.iterdir()
    if p.suffix in (".pt", ".ckpt") and (DATA / f"{p.name}.expected.json").exists()
)


def _expected(name: str) -> dict:
    return json.loads((DATA / f"{name}.expected.json").read_text())


def _tensor_hex(ref: ckptpeek.TensorRef) -> str:
    arr = np.ascontiguousarray(ref.numpy())
    return arr.reshape(-1).view(np.uint8).tobytes().hex()


def _check_graph(exp, got, path, tensors, seen, problems):
    where = "root" + "".join(f"[{k!r}]" for k in path)
    if isinstance(exp, dict) and "__tensor__" in exp:
        if not isinstance(got, ckptpeek.TensorRef):
            problems.append(f"{where}: expected a tensor, got {type(got).__name__}")
            return
        seen.append((exp["__tensor__"], got))
    elif isinstance(exp, dict) and "__dict__" in exp:
        want_type = {"dict": dict, "OrderedDict": collections.OrderedDict}[exp["__type__"]]
        if type(got) is not want_type:
            problems.append(f"{where}: expected {exp['__type__']}, got {type(got).__name__}")
            return
        keys = [k for k, _ in exp["__dict__"]]
        if keys != list(got.keys()):
            problems.append(f"{where}: keys {list(got.keys())} != {keys}")
            return
        for k, v in exp["__dict__"]:
            _check_graph(v, got[k], path + (k,), tensors, seen, problems)
    elif isinstance(exp, dict) and "__seq__" in exp:
        want = tuple if exp["__type__"] == "tuple" else list
        if type(got) is not want or len(got) != len(exp["__seq__"]):
            problems.append(
                f"{where}: expected {exp['__type__']} of {len(exp['__seq__'])}, got {got!r}"
            )
            return
        for i, v in enumerate(exp["__seq__"]):
            _check_graph(v, got[i], path + (i,), tensors, seen, problems)
    elif isinstance(exp, dict) and "__size__" in exp:
        if not (isinstance(got, ckptpeek.Size) and list(got) == exp["__size__"]):
            problems.append(f"{where}: {got!r} != torch.Size({exp['__size__']})")
    elif isinstance(exp, dict) and "__str__" in exp:
        if str(got) != exp["__str__"]:
            problems.append(f"{where}: {got!r} != {exp['__str__']}")
    elif isinstance(exp, dict) and "__float__" in exp:
        if not (type(got) is float and got.hex() == exp["__float__"]):
            problems.append(f"{where}: {got!r} != float {exp['__float__']}")
    elif not (type(got) is type(exp) and got == exp):
        problems.append(f"{where}: {got!r} != {exp!r}")


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_matches_torch(name: str, engine: str) -> None:
    exp = _expected(name)
    with ckptpeek.open(DATA / name, engine=engine) as ckpt:
        problems: list[str] = []
        seen: list[tuple[int, ckptpeek.TensorRef]] = []
        _check_graph(exp["graph"], ckpt.root, (), exp["tensors"], seen, problems)
        storage_of: dict[int, str] = {}
        for index, ref in seen:
            want = exp["tensors"][index]
            got = {
                "dtype": str(ref.dtype),
                "shape": list(ref.shape),
                "stride": list(ref.stride()),
                "storage_offset": ref.storage_offset(),
                "requires_grad": ref.requires_grad,
                "is_parameter": ref.is_parameter,
                "hex": _tensor_hex(ref),
            }
            for field, value in got.items():
                if value != want[field]:
                    problems.append(f"{want['path']}: {field} {value!r} != {want[field]!r}")
            # tensors torch shows on one storage share one storage in ckptpeek, and vice versa
            key = storage_of.setdefault(want["storage_id"], ref.storage_key)
            if key != ref.storage_key:
                problems.append(f"{want['path']}: storage {ref.storage_key} != {key}")
        assert len({k for k in storage_of.values()}) == len(storage_of), "distinct storages merged"
        assert not problems, "\n".join(problems)
        assert len(seen) == len(exp["tensors"])


@pytest.mark.parametrize("name", FIXTURES)
def test_tensors_lists_every_tensor_in_order(name: str, engine: str) -> None:
    exp = _expected(name)
    with ckptpeek.open(DATA / name, engine=engine) as ckpt:
        paths = [list(p) for p, _ in ckpt.tensors()]
    assert paths == [t["path"] for t in exp["tensors"]]


def test_lightning_summary(engine: str) -> None:
    with ckptpeek.open(DATA / "lightning_tiny.ckpt", engine=engine) as ckpt:
        s = ckpt.summary()
        root = ckpt.root
    assert (s.epoch, s.global_step) == (root["epoch"], root["global_step"]) == (1, 8)
    assert s.lightning_version == root["pytorch-lightning_version"]
    assert s.hyper_parameters == {
        "lr": 0.01,
        "encoder": {"name": "resnet18", "stages": [2, 2, 2, 2]},
    }
    (mc,) = s.model_checkpoints
    state = next(v for k, v in root["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert (mc.monitor, mc.mode) == ("val/hmean", "max")
    assert mc.best_model_score == float(state["best_model_score"].item())
    assert (
        mc.best_model_path
        == state["best_model_path"]
        == "outputs/tiny/checkpoints/epoch=1-step=8.ckpt"
    )
    assert mc.last_model_path == "outputs/tiny/checkpoints/last.ckpt"
    assert set(mc.best_k_models) == set(state["best_k_models"])
    (es,) = s.early_stopping
    assert (es.monitor, es.mode, es.patience) == ("val_loss", "min", 3)
    (opt,) = s.optimizers
    assert (opt.type, opt.param_groups, opt.params, opt.state_tensors) == ("AdamW", 1, 4, 12)
    assert [sch.type for sch in s.lr_schedulers] == ["StepLR"]
    assert s.state_dict_tensors == 4 and s.parameter_count == 4 * 8 + 8 + 8 + 1
    assert s.tensor_count == len(_expected("lightning_tiny.ckpt")["tensors"])
    assert s.unknown_globals == []
    assert s.bytes_read <= s.file_size * 1.2


def test_fixture_opened_from_file_object(engine: str) -> None:
    with open(DATA / "epoch=3-step=12.v2.pt", "rb") as f:
        f.seek(5)
        with ckptpeek.open(f, engine=engine) as ckpt:
            assert ckpt.members["prefix"] == "archive"
            assert ckpt.get("epoch") == 3
            assert ckpt.get("w").numpy().tolist() == [[8.0, 9.0, 10.0], [14.0, 15.0, 16.0]]
        assert f.tell() == 5  # the caller's position is left alone
