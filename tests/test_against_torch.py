"""Differential tests: ckptpeek versus ``torch.load`` on real checkpoints.

A corpus of small checkpoints is written once per session with the real
``torch.save`` and real ``lightning.Trainer`` runs (see ``torch_corpus.py``).
Each file is then read by torch (the reference) and by ckptpeek with every
available engine, and the two results must agree in structure, metadata and
tensor bytes (see ``compare.py`` for the exact rules).

The whole module is skipped when torch (or lightning / omegaconf, needed to
build the corpus) is not installed.
"""

from __future__ import annotations

import zipfile

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")
pytest.importorskip("omegaconf")

from compare import (  # noqa: E402
    assert_matches_torch,
    expected_tensor_paths,
    fmt_path,
    pickle_globals,
    to_plain,
)
from torch_corpus import CORPUS_NAMES, LIGHTNING_NAMES, build_corpus  # noqa: E402

import ckptpeek  # noqa: E402

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """``{name: Path}`` of every corpus checkpoint, built once per test session."""
    return build_corpus(tmp_path_factory.mktemp("torch_corpus"))


@pytest.fixture(scope="session")
def torch_load(corpus):
    """Memoised ``torch.load(path, map_location="cpu")`` for corpus entries (read-only use!)."""
    cache: dict[str, object] = {}

    def load(name: str):
        if name not in cache:
            cache[name] = torch.load(corpus[name], map_location="cpu", weights_only=False)
        return cache[name]

    return load


# --------------------------------------------------------------------------- the corpus itself


def test_corpus_is_complete(corpus):
    """The builder produced exactly the named entries, as real torch zip files.

    Also pins the properties some entries exist for: a ``BytesIO`` save uses the
    ``archive/`` member prefix, and one file name contains ``=`` and several dots.
    """
    assert list(corpus) == CORPUS_NAMES
    for name, path in corpus.items():
        assert path.is_file(), name
        assert zipfile.is_zipfile(path), name
        assert path.stat().st_size < 512 * 1024, f"{name} is larger than intended"
    members = zipfile.ZipFile(corpus["fileobj_archive_prefix"]).namelist()
    assert "archive/data.pkl" in members
    assert corpus["epoch=3-step=12"].name == "epoch=3-step=12.v1.ckpt"
    assert "=" in corpus["lit_adam_steplr_topk"].name


# --------------------------------------------------------------------------- full object graph


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_load_checkpoint_matches_torch(corpus, name, engine):
    """``ckptpeek.load_checkpoint`` is a faithful drop-in for ``torch.load``.

    Containers, keys (and their order), scalar leaves and every tensor's
    metadata and exact bytes must agree; shared storages must share a key.
    """
    assert_matches_torch(corpus[name], engine)


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_tensors_iterator_matches_torch(corpus, torch_load, name, engine):
    """``Checkpoint.tensors()`` yields exactly torch's tensors, depth-first, by key path."""
    expected = dict(expected_tensor_paths(torch_load(name)))
    want_paths = list(expected)
    with ckptpeek.open(corpus[name], engine=engine) as ckpt:
        got = list(ckpt.tensors())
    got_paths = [tuple(p) for p, _ in got]

    missing = [fmt_path(p) for p in want_paths if p not in got_paths]
    extra = [fmt_path(p) for p in got_paths if p not in expected]
    assert not missing and not extra, f"tensors() missing {missing}, unexpected {extra}"
    assert got_paths == want_paths, "tensors() order differs from depth-first order of the root"
    for path, ref in got:
        want = expected[tuple(path)]
        assert tuple(ref.shape) == tuple(want.shape), fmt_path(path)
        assert str(ref.dtype) == str(want.dtype), fmt_path(path)


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_tensor_device_is_saved_location(corpus, name, engine):
    """``TensorRef.device`` reports the location recorded at save time (all corpus saves are CPU)."""
    with ckptpeek.open(corpus[name], engine=engine) as ckpt:
        devices = {fmt_path(p): str(ref.device) for p, ref in ckpt.tensors()}
    wrong = {p: d for p, d in devices.items() if d != "cpu"}
    assert not wrong, f"unexpected devices: {wrong}"


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_open_reports_format_backend_and_path(corpus, name, engine):
    """``ckptpeek.open`` identifies the torch zip format, the engine used and the path."""
    path = corpus[name]
    with ckptpeek.open(path, engine=engine) as ckpt:
        assert ckpt.format == "torch-zip"
        assert ckpt.backend == engine
        assert ckpt.path == str(path)


@pytest.mark.parametrize(
    "name", ["sd_sequential", "fileobj_archive_prefix", "lit_adam_steplr_last"]
)
def test_open_binary_file_object(corpus, torch_load, name, engine):
    """Opening an already-open binary file gives the same tensors as opening the path."""
    with open(corpus[name], "rb") as fh, ckptpeek.open(fh, engine=engine) as ckpt:
        got = {tuple(p): (str(r.dtype), tuple(r.shape)) for p, r in ckpt.tensors()}
    want = {p: (str(t.dtype), tuple(t.shape)) for p, t in expected_tensor_paths(torch_load(name))}
    assert got == want


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_globals_match_cpython_unpickler(corpus, name, engine):
    """``Checkpoint.globals()`` names exactly the globals CPython's unpickler would resolve.

    The reference applies CPython's Python-2 name mapping for protocol < 3
    pickles (torch's default protocol is 2), e.g. ``__builtin__ long`` is
    ``builtins.int``, which OmegaConf's ListConfig metadata pickles.
    """
    want = pickle_globals(corpus[name])
    with ckptpeek.open(corpus[name], engine=engine) as ckpt:
        got = {(g.module, g.name) for g in ckpt.globals()}
    assert got == want, f"missing {sorted(want - got)}, unexpected {sorted(got - want)}"


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_strict_mode_opens_ordinary_checkpoints(corpus, name, engine):
    """Every corpus file uses only ordinary globals (torch, collections, OmegaConf,
    argparse, Lightning's AttributeDict, builtins), so ``strict=True`` must load it
    to the same tensors as the default mode."""
    with ckptpeek.open(corpus[name], engine=engine, strict=True) as ckpt:
        strict_paths = [tuple(p) for p, _ in ckpt.tensors()]
        unsafe = [f"{g.module}.{g.name}" for g in ckpt.globals() if not g.safe]
    with ckptpeek.open(corpus[name], engine=engine) as ckpt:
        default_paths = [tuple(p) for p, _ in ckpt.tensors()]
    assert strict_paths == default_paths
    assert not unsafe


def test_tensor_data_is_read_lazily(corpus, engine):
    """Walking the object graph does not read tensor data; ``numpy()`` reads only its tensor.

    ``many_and_big`` holds one 200 KB tensor next to 150 tiny ones.  Reading the
    ZIP directory may read a fixed-size tail of the file, so the first bound only
    requires that most of the big tensor was not read.
    """
    path = corpus["many_and_big"]
    size = path.stat().st_size
    with ckptpeek.open(path, engine=engine) as ckpt:
        root = ckpt.root
        after_root = ckpt.bytes_read
        big_nbytes = root["big"].nbytes
        assert after_root < size - big_nbytes // 2, (
            f"reading the pickle read {after_root} of {size} bytes"
        )
        root["layer0.weight"].numpy()
        assert ckpt.bytes_read - after_root < 64 * 1024, "reading an 8-byte tensor read far more"
        root["big"].numpy().sum()
        assert ckpt.bytes_read - after_root >= big_nbytes


# --------------------------------------------------------------------------- Lightning specifics


def _model_checkpoint_key(callbacks: dict) -> str:
    keys = [k for k in callbacks if k.startswith("ModelCheckpoint")]
    assert len(keys) == 1, keys
    return keys[0]


@pytest.mark.parametrize("name", LIGHTNING_NAMES)
def test_lightning_checkpoint_fields(corpus, torch_load, name, engine):
    """The fields people actually look at in Lightning checkpoints agree with torch.

    epoch / global_step via ``get``, callback state keys, hyper-parameters
    (DictConfig / Namespace / AttributeDict compared as plain containers),
    ModelCheckpoint's best score and path, optimizer param groups and
    scheduler state, and tuple-path ``get`` into the state dict.
    """
    expected = torch_load(name)
    with ckptpeek.open(corpus[name], engine=engine) as ckpt:
        assert ckpt.get("epoch") == expected["epoch"]
        assert ckpt.get("global_step") == expected["global_step"]
        assert type(ckpt.get("epoch")) is int and type(ckpt.get("global_step")) is int

        root = ckpt.root
        assert list(root["callbacks"].keys()) == list(expected["callbacks"].keys())
        assert to_plain(root["hyper_parameters"]) == to_plain(expected["hyper_parameters"])
        assert root["hparams_name"] == expected["hparams_name"]

        mc_key = _model_checkpoint_key(expected["callbacks"])
        want_mc, got_mc = expected["callbacks"][mc_key], root["callbacks"][mc_key]
        assert got_mc["best_model_path"] == want_mc["best_model_path"]
        assert float(got_mc["best_model_score"]) == want_mc["best_model_score"].item()
        assert list(got_mc["best_k_models"]) == list(want_mc["best_k_models"])

        assert len(root["optimizer_states"]) == len(expected["optimizer_states"])
        for got_opt, want_opt in zip(root["optimizer_states"], expected["optimizer_states"]):
            assert to_plain(got_opt["param_groups"]) == to_plain(want_opt["param_groups"])
        assert to_plain(root["lr_schedulers"]) == to_plain(expected["lr_schedulers"])

        for key, tensor in expected["state_dict"].items():
            ref = ckpt.get(("state_dict", key))
            assert tuple(ref.shape) == tuple(tensor.shape), key


@pytest.mark.parametrize("name", LIGHTNING_NAMES)
def test_lightning_summary(corpus, torch_load, name, engine):
    """``summary()`` reports the same epoch and global step as the checkpoint."""
    expected = torch_load(name)
    with ckptpeek.open(corpus[name], engine=engine) as ckpt:
        summary = ckpt.summary()
    assert summary.epoch == expected["epoch"]
    assert summary.global_step == expected["global_step"]
