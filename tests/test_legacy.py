"""The legacy ``torch.save`` format (``_use_new_zipfile_serialization=False``, torch < 1.6),
its Python 2 variant and the tar format of torch < 0.4.

Files are written by the real ``torch.save`` where torch can write them, and
``torch.load`` is the ground truth (``compare.compare_objects``: structure, dtype,
shape, stride, storage offset, storage sharing and exact bytes). Python 2 and tar
files are built by ``tests/data/make_legacy_fixtures.py`` (torch still reads both).
Without torch, the committed fixtures are checked by ``test_fixtures.py``; the
hostile-input tests here need no torch either.
"""

from __future__ import annotations

import collections
import importlib.util
import io
import pathlib
import pickle
import struct
import warnings

import pytest

import ckptpeek
from ckptpeek.errors import CheckpointError, FormatError, LimitError
from ckptpeek.formats import ReadOptions, torch_legacy
from ckptpeek.io.source import ByteSource
from ckptpeek.limits import DEFAULT_LIMITS, Limits
from ckptpeek.unpickle import engine as _backend

DATA = pathlib.Path(__file__).parent / "data"
_spec = importlib.util.spec_from_file_location(
    "make_legacy_fixtures", DATA / "make_legacy_fixtures.py"
)
fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixtures)  # type: ignore[union-attr]


def read_legacy(source, engine: str, select=None, limits: Limits = DEFAULT_LIMITS):
    """The legacy reader called directly (bypasses the sniffer)."""
    opts = ReadOptions(
        False, _backend.engine(engine), limits, None if select is None else frozenset(select)
    )
    return torch_legacy.read(ByteSource(source), opts)


def _all_values(ckpt) -> None:
    for _, ref in ckpt.tensors():
        if ref.dtype.numpy_name is not None:
            ref.numpy()


# ----------------------------------------------------------------------------- with torch


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
    return torch


def _lightning_style(torch):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(4, 3, generator=g)
    sd = collections.OrderedDict([("net.weight", w), ("net.bias", torch.zeros(4))])
    return {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "1.4.9",
        "state_dict": sd,
        "callbacks": {
            "ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}": {
                "monitor": "val_loss",
                "best_model_score": torch.tensor(0.125),
                "best_model_path": "ckpts/epoch=2.ckpt",
                "current_score": torch.tensor(0.25),
                "best_k_models": {"ckpts/epoch=2.ckpt": torch.tensor(0.125)},
            },
            "EarlyStopping{'monitor': 'val_loss'}": {
                "wait_count": 0,
                "patience": 3,
                "best_score": torch.tensor(0.125),
            },
        },
        "optimizer_states": [
            {
                "state": {
                    0: {
                        "step": 120,
                        "exp_avg": torch.ones(4, 3),
                        "exp_avg_sq": torch.full((4, 3), 2.0),
                    },
                    1: {"step": 120, "exp_avg": torch.ones(4)},
                },
                "param_groups": [{"lr": 0.01, "betas": (0.9, 0.999), "params": [0, 1]}],
            }
        ],
        "lr_schedulers": [{"step_size": 1, "gamma": 0.5, "last_epoch": 3}],
        "hyper_parameters": {"lr": 0.01, "layers": [4, 3]},
    }


def _views(torch):
    base = torch.arange(60, dtype=torch.float64).reshape(5, 12)
    return {
        "base": base,
        "row": base[2],
        "col": base[:, 3],
        "t": base.t(),
        "block": base[1:4, 2:9:3],
        "flat_tail": base.view(-1)[50:],
        "strided_t": base.t()[::2, 1:],
        "diag": base.diagonal(),
        "expanded": base[0, :1].expand(4, 3),
        "other": torch.ones(2, 2),
        "same_twice": [base, base],
    }


#: dtypes torch.save (legacy) writes *and* torch.load reads back
LEGACY_DTYPES = (
    "float32",
    "float64",
    "float16",
    "bfloat16",
    "complex64",
    "complex128",
    "uint8",
    "int8",
    "int16",
    "int32",
    "int64",
    "bool",
)


def _dtypes(torch):
    out = {}
    for name in LEGACY_DTYPES:
        dt = getattr(torch, name)
        if dt.is_floating_point or dt.is_complex:
            t = torch.linspace(-3, 3, 7).to(dt)
            if dt.is_complex:
                t = t * (1 - 2j)
        elif dt == torch.bool:
            t = torch.tensor([True, False, True, True])
        else:
            t = torch.arange(-3 if dt != torch.uint8 else 0, 5).to(dt)
        out[name] = t
        out[name + "_0d"] = t[1].clone()
        out[name + "_empty"] = torch.empty(0, 2, dtype=dt)
        out[name + "_view"] = t[1::2]
    return out


def _check(torch, path, engine: str, *, direct: bool = False) -> ckptpeek.Checkpoint:
    from compare import _StorageTracker, compare_objects

    want = torch.load(path, map_location="cpu", weights_only=False)
    ckpt = read_legacy(path, engine) if direct else ckptpeek.open(path, engine=engine)
    assert ckpt.format == "torch-legacy"
    problems: list[str] = []
    compare_objects(want, ckpt.root, (), problems, _StorageTracker())
    assert not problems, "\n".join(problems)
    return ckpt


CASES = ("state_dict", "lightning", "views", "dtypes")


@pytest.fixture(scope="module")
def legacy_files(torch, tmp_path_factory):
    out = tmp_path_factory.mktemp("legacy")
    objs = {
        "state_dict": fixtures.legacy_state_dict(),
        "lightning": _lightning_style(torch),
        "views": _views(torch),
        "dtypes": _dtypes(torch),
    }
    files = {}
    for name, obj in objs.items():
        for proto in (2, 4):
            files[name, proto] = out / f"{name}.p{proto}.pt"
            torch.save(
                obj, files[name, proto], _use_new_zipfile_serialization=False, pickle_protocol=proto
            )
    return files


@pytest.mark.parametrize("case", CASES)
def test_protocol2_matches_torch(torch, legacy_files, case, engine):
    with _check(torch, legacy_files[case, 2], engine) as ckpt:
        assert ckpt.members["byteorder"] == "little"


@pytest.mark.parametrize("case", CASES)
def test_protocol4_matches_torch(torch, legacy_files, case, engine):
    _check(torch, legacy_files[case, 4], engine, direct=True).close()


def test_protocol4_is_sniffed(torch, legacy_files):
    with ckptpeek.open(legacy_files["state_dict", 4]) as ckpt:
        assert ckpt.format == "torch-legacy"


def test_lightning_summary_and_select(torch, legacy_files, engine):
    path = legacy_files["lightning", 2]
    with ckptpeek.open(path, engine=engine) as full:
        s = full.summary()
        assert (s.epoch, s.global_step) == (3, 120)
        (mc,) = s.model_checkpoints
        assert mc.best_model_score == 0.125
    # the selection skips the optimizer state, whose storages sit between the selected
    # ones: the reader still finds every selected storage's bytes
    with ckptpeek.open(path, engine=engine, select=ckptpeek.SUMMARY_KEYS) as sel:
        assert "optimizer_states" not in sel.root and sel.selected is not None
        want = torch.load(path, weights_only=False)
        for key in ("net.weight", "net.bias"):
            assert sel.root["state_dict"][key].numpy().tolist() == want["state_dict"][key].tolist()
        cb = sel.root["callbacks"]["EarlyStopping{'monitor': 'val_loss'}"]
        assert cb["best_score"].item() == 0.125
    with ckptpeek.open(path, engine=engine, select=["epoch"]) as sel:
        assert sel.root == {"epoch": 3}


def test_file_object_save_and_open(torch, engine, tmp_path):
    buf = io.BytesIO()
    obj = {"w": torch.arange(6.0).reshape(2, 3)[:, 1:], "n": 1}
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    path = tmp_path / "fileobj.pt"
    path.write_bytes(buf.getvalue())
    _check(torch, path, engine).close()
    with open(path, "rb") as f:
        f.seek(3)
        with ckptpeek.open(f, engine=engine) as ckpt:
            assert ckpt.path is not None and ckpt.root["n"] == 1
            assert ckpt.root["w"].numpy().tolist() == [[1.0, 2.0], [4.0, 5.0]]
        assert f.tell() == 3
    buf.seek(0)
    with ckptpeek.open(buf, engine=engine) as ckpt:
        assert ckpt.path is None
        assert ckpt.root["w"].numpy().tolist() == [[1.0, 2.0], [4.0, 5.0]]


def test_dtypes_torch_cannot_load_back(torch, engine, tmp_path):
    """torch.save (legacy) writes these dtypes as UntypedStorage (+ _rebuild_tensor_v3)
    but torch.load of the file fails; ckptpeek reads them, values as saved."""
    names = ("uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e5m2")
    obj = {n: torch.tensor([0.0, 1.0, 2.0, 3.0]).to(getattr(torch, n))[1:] for n in names}
    path = tmp_path / "new_dtypes.pt"
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    with pytest.raises(Exception):  # noqa: B017 - torch raises several kinds
        torch.load(path, weights_only=False)
    with ckptpeek.open(path, engine=engine) as ckpt:
        for n in names:
            ref = ckpt.root[n]
            assert str(ref.dtype) == f"torch.{n}" and ref.storage_offset() == 1
            assert ref.to_torch().float().tolist() == [1.0, 2.0, 3.0]


def test_module_saved_whole(torch, engine, tmp_path):
    path = tmp_path / "module.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(torch.nn.Linear(3, 2), path, _use_new_zipfile_serialization=False)
    with ckptpeek.open(path, engine=engine) as ckpt:
        shapes = sorted(tuple(t.shape) for _, t in ckpt.tensors())
        assert shapes == [(2,), (2, 3)]
        assert ("torch.nn.modules.linear", "Linear") in {(g.module, g.name) for g in ckpt.globals()}


def test_big_endian_sys_info_still_little_endian_data(torch, engine, tmp_path):
    """torch writes legacy storages little-endian on every machine and reads them so:
    ``sys_info['little_endian']`` does not change how the bytes are read."""
    src = pathlib.Path(tmp_path / "le.pt")
    torch.save(
        {"w": torch.arange(5, dtype=torch.int32), "d": torch.tensor([1.5, -2.0])},
        src,
        _use_new_zipfile_serialization=False,
    )
    raw = bytearray(src.read_bytes())
    at = raw.index(b"little_endian") + len(b"little_endian")
    at = raw.index(b"\x88", at)
    raw[at] = 0x89  # NEWTRUE -> NEWFALSE
    path = tmp_path / "be_sysinfo.pt"
    path.write_bytes(bytes(raw))
    with _check(torch, path, engine) as ckpt:
        assert ckpt.members["byteorder"] == "big"
        assert ckpt.root["w"].numpy().tolist() == [0, 1, 2, 3, 4]


def test_header_only_reads(torch, engine, tmp_path):
    path = tmp_path / "big.pt"
    torch.save(
        {f"layer{i}": torch.zeros(256, 1024) for i in range(8)},
        path,
        _use_new_zipfile_serialization=False,
    )
    with ckptpeek.open(path, engine=engine) as ckpt:
        assert len(list(ckpt.tensors())) == 8
        assert ckpt.bytes_read < 80_000 < ckpt.file_size // 100
        assert max(t.byte_range[1] for _, t in ckpt.tensors()) == ckpt.file_size


def test_large_main_pickle_grows_the_read(torch, engine, tmp_path):
    """A main pickle far past the first 64 KiB read is re-run on a longer buffer."""
    path = tmp_path / "many.pt"
    obj = {
        "names": [f"name-{i}" for i in range(30_000)],
        "t": {f"k{i}": torch.tensor(float(i)) for i in range(300)},
    }
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    with _check(torch, path, engine) as ckpt:
        assert ckpt.bytes_read < ckpt.file_size * 1.1
    with pytest.raises(LimitError) as err:
        read_legacy(path, engine, limits=Limits(max_pickle_bytes=100_000))
    assert err.value.code == "limit-pickle-size"


def test_old_big_endian_count_is_accepted(torch, engine, tmp_path):
    """Writers before torch 1.x put the 8-byte count in native order: with sys_info
    saying big-endian, a count that only fits byte-swapped is accepted."""
    src = tmp_path / "x.pt"
    torch.save({"w": torch.arange(3.0)}, src, _use_new_zipfile_serialization=False)
    raw = bytearray(src.read_bytes())
    at = raw.index(b"\x88", raw.index(b"little_endian"))
    raw[at] = 0x89
    count = len(raw) - 12 - 8
    assert raw[count : count + 8] == struct.pack("<q", 3)
    raw[count : count + 8] = struct.pack(">q", 3)
    path = tmp_path / "old_be.pt"
    path.write_bytes(bytes(raw))
    with ckptpeek.open(path, engine=engine) as ckpt:
        assert ckpt.root["w"].numpy().tolist() == [0.0, 1.0, 2.0]


# ------------------------------------------------------------------- Python 2, tar (no torch)


def test_py2_strings(engine, tmp_path):
    path = tmp_path / "py2.pt"
    path.write_bytes(fixtures.py2_checkpoint(extra_value=b"\xff\xfeadam"))
    with ckptpeek.open(path, engine=engine) as ckpt:
        root = ckpt.root
        assert root["optimizer"] == b"\xff\xfeadam"  # not text in utf-8: stays bytes
        assert root["arch"] == "resnet18" and type(root["arch"]) is str
        assert root["title"] == "r\u00e9sum\u00e9" and root["big"] == 2**70
        sd = root["state_dict"]
        assert type(sd) is collections.OrderedDict and list(sd) == [
            "fc.weight",
            "fc.weight_t",
            "steps",
            "loss",
        ]
        assert sd._metadata == {"": {"version": 1}, "fc": {"version": 1}}
        assert sd["fc.weight_t"].numpy().tolist() == [[-1.0, -0.25], [2.0, 8.0]]
        assert sd["loss"].item() == 2**40
        assert sd["fc.weight"].storage_key == sd["fc.weight_t"].storage_key


def test_tar_format(engine):
    with ckptpeek.open(DATA / "legacy_tar.pt", engine=engine) as ckpt:
        assert ckpt.format == "torch-legacy" and ckpt.members["layout"] == "tar"
        assert ckpt.root["w_t"].numpy().tolist() == [[1, 4], [2, 5], [3, 6]]
        assert ckpt.root["w_t"].stride() == (1, 3)
        assert ckpt.root["s"].numpy().tolist() == [20, 30]
        assert ckpt.root["n"] == 4
        _, start, size = ckpt.root["s"].storage.reader.storage_location(ckpt.root["s"].storage)
        assert size == 16
    with ckptpeek.open(DATA / "legacy_tar.pt", engine=engine, strict=True) as ckpt:
        assert ckpt.root["w"].shape == (2, 3)


@pytest.mark.parametrize("name", ["legacy_state_dict.pt", "legacy_py2.pt", "legacy_tar.pt"])
def test_fixture_globals_cover_torch(torch, name, engine):
    """Every global torch.load resolves in the committed fixtures (all their pickles,
    through a recording pickle_module) is in ``globals()``; the tar's storage and tensor
    records name the storage and tensor classes."""
    from test_every_pickle import torch_globals

    seen, out = torch_globals(torch, DATA / name)
    assert not isinstance(out, Exception), out
    with ckptpeek.open(DATA / name, engine=engine) as ckpt:
        found = {(g.module, g.name): g.safe for g in ckpt.globals()}
    assert set(seen) <= set(found) and all(found.values())
    if name == "legacy_tar.pt":
        assert {("torch", "LongStorage"), ("torch", "FloatTensor")} <= set(seen)


def test_tar_errors(engine, tmp_path):
    raw = bytearray((DATA / "legacy_tar.pt").read_bytes())
    bad = bytearray(raw)
    bad[5] ^= 1  # inside the first header's name: the checksum no longer matches
    path = tmp_path / "bad.pt"
    path.write_bytes(bytes(bad))
    with pytest.raises(FormatError) as err:
        ckptpeek.open(path, engine=engine)
    assert err.value.code == "tar-bad-header"
    bad = bytearray(raw)
    name = bad.index(b"tensors")
    bad[name : name + 7] = b"tensorz"
    bad[148:156] = b"\0" * 8  # recompute the checksum of the header that was changed
    hdr = name - name % 512
    bad[hdr + 148 : hdr + 156] = b" " * 8
    bad[hdr + 148 : hdr + 155] = b"%06o\0" % sum(bad[hdr : hdr + 512]) + b" "
    path.write_bytes(bytes(bad))
    with pytest.raises(FormatError) as err:
        ckptpeek.open(path, engine=engine)
    assert err.value.code in ("tar-missing-member", "tar-bad-header")


# ------------------------------------------------------------------------ hostile inputs


def _sample() -> bytes:
    return (DATA / "legacy_state_dict.pt").read_bytes()


def test_truncated_everywhere(engine, tmp_path):
    raw = _sample()
    path = tmp_path / "cut.pt"
    for i in range(1, 50):
        cut = len(raw) * i // 50
        path.write_bytes(raw[:cut])
        with pytest.raises(CheckpointError) as err:
            with ckptpeek.open(path, engine=engine) as ckpt:
                _all_values(ckpt)
        assert isinstance(err.value, FormatError), (cut, err.value)
        assert err.value.path == str(path)


def test_bit_flips_raise_only_checkpoint_errors(engine, tmp_path):
    raw = _sample()
    path = tmp_path / "flip.pt"
    data_start = len(raw) - 1400  # roughly where the storages begin: flips in values are silent
    failures = 0
    for pos in range(0, len(raw), 7):
        bad = bytearray(raw)
        bad[pos] ^= 1 << (pos % 8)
        path.write_bytes(bytes(bad))
        try:
            with ckptpeek.open(path, engine=engine) as ckpt:
                _all_values(ckpt)
        except CheckpointError:
            failures += 1
        # anything else propagates and fails the test
    assert failures > data_start // 7 // 4


@pytest.mark.parametrize(
    "what, code",
    [
        ("magic", "legacy-bad-magic"),
        ("version", "legacy-bad-version"),
        ("count", "legacy-storage-mismatch"),
        ("keys", "legacy-bad-header"),
    ],
)
def test_specific_errors(engine, tmp_path, what, code):
    raw = bytearray(_sample())
    if what == "magic":
        raw[4] ^= 0x40
    elif what == "version":
        at = raw.index(b"M\xe9\x03")
        raw[at + 1] = 0xE8
    elif what == "count":
        ck = read_legacy(io.BytesIO(bytes(raw)), engine)
        last = max((ref.storage for _, ref in ck.tensors()), key=lambda s: s.reader.spans[s.key][0])
        at = last.reader.spans[last.key][0] - 8
        raw[at : at + 8] = struct.pack("<q", last.numel + 1)
    elif what == "keys":  # a well-formed pickle of the wrong thing
        ck = read_legacy(io.BytesIO(bytes(raw)), engine)
        _main_start, keys_start = map(int, ck.members["pickle"].split()[1].split(".."))
        storages = int(ck.members["storages"].split()[-1])
        raw[keys_start:storages] = pickle.dumps({"a": 1}, protocol=2)
    path = tmp_path / f"{what}.pt"
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError) as err:
        with read_legacy(path, engine) as ckpt:
            _all_values(ckpt)
    assert err.value.code == code, err.value
    assert err.value.path == str(path)


def test_storage_claim_past_file_end(engine, tmp_path):
    raw = _sample()
    path = tmp_path / "short.pt"
    path.write_bytes(raw[:-1])
    with pytest.raises(FormatError) as err:
        ckptpeek.open(path, engine=engine)
    assert err.value.code == "truncated"
