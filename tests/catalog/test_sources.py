"""Each source on its own, missing, contradicting, malformed; unreadable checkpoints; file names."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from ckptpeek.catalog import MetadataSidecar, build_catalog
from ckptpeek.catalog.hydra import apply_overrides, find_hydra_dir
from ckptpeek.catalog.scan import scan
from ckptpeek.catalog.sources import compile_patterns, parse_filename

from .conftest import EXPERIMENT_R18, compose, epoch_of, metadata_v2, save_hydra, sidecar

H = "header:header"


def entry_of(root):
    [e] = build_catalog(root, cache=False).entries
    return e


# --------------------------------------------------------------------------- file names


@pytest.mark.parametrize(
    "name, want",
    [
        ("epoch=10-step=1100.ckpt", {"epoch": 10, "global_step": 1100}),
        ("epoch=3-val_hmean=0.8512.ckpt", {"epoch": 3, "metrics.val_hmean": 0.8512}),
        ("epoch=3-val_hmean=0.8512-v1.ckpt", {"epoch": 3, "metrics.val_hmean": 0.8512}),
        (
            "epoch=07-step=800-val_loss=1.2e-03.ckpt",
            {"epoch": 7, "global_step": 800, "metrics.val_loss": 0.0012},
        ),
        ("last.ckpt", {"is_last": True}),
        ("last-v2.ckpt", {"is_last": True}),
        ("best.pth", {"is_best": True}),
        ("model_final.safetensors", {}),
    ],
)
def test_parse_filename(name, want):
    assert parse_filename(name) == want


def test_custom_filename_patterns(one_ckpt):
    root, ckpt, run = one_ckpt
    target = ckpt.with_name("run7_ep05_hm0.77.ckpt")
    ckpt.rename(target)
    pats = [r"ep(?P<epoch>\d+)", r"hm(?P<hmean>\d+\.\d+)"]
    assert parse_filename(target.name, compile_patterns(pats)) == {
        "epoch": 5,
        "metrics.hmean": 0.77,
    }
    e = build_catalog(root, cache=False, filename_patterns=pats).entries[0]
    assert e.metrics["hmean"] == 0.77 and e.sources["metrics.hmean"] == "filename:filename"
    # the header's epoch wins; the file name's disagreeing one is a warning
    assert e.sources["epoch"] == H and any("epoch" in w and "filename" in w for w in e.warnings)


# --------------------------------------------------------------------------- each source missing


def test_header_only(one_ckpt):
    root, ckpt, run = one_ckpt
    e = entry_of(root)
    epoch = epoch_of(run, "topk0")
    assert e.status == "ok" and e.warnings == []
    assert (e.epoch, e.global_step) == (epoch, run.steps[epoch]) and e.sources["epoch"] == H
    # without sidecars or Hydra the saved hparams, then the weights name the architecture
    assert e.architecture.encoder == "resnet18" and e.sources["architecture.encoder"] == H
    assert e.config["model"]["decoder"]["name"] == "unet"
    assert e.signatures.encoder is not None


def test_sidecar_only_when_checkpoint_unreadable(one_ckpt):
    root, ckpt, run = one_ckpt
    epoch = epoch_of(run, "topk0")
    sidecar(ckpt, "metadata", "yaml").write_text(yaml.safe_dump(metadata_v2(run, epoch)))
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])  # still being written
    e = entry_of(root)
    assert e.status == "unreadable" and e.errors and "unreadable checkpoint" in e.errors[0]
    md = f"metadata:exp/checkpoints/{ckpt.stem}.metadata.yaml"
    assert (e.epoch, e.global_step, e.score) == (
        epoch,
        run.steps[epoch],
        pytest.approx(run.history[epoch]["val/hmean"]),
    )
    assert e.sources["epoch"] == md and e.sources["score"] == md
    assert e.architecture.encoder == "resnet18" and e.signatures is None
    # picked up once complete
    ckpt.write_bytes(data)
    e = entry_of(root)
    assert e.status == "ok" and e.errors == [] and e.sources["epoch"] == H


def test_truncated_picked_up_with_cache(one_ckpt, tmp_path):
    root, ckpt, run = one_ckpt
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[:100])
    db = tmp_path / "c.sqlite"
    assert build_catalog(root, cache=db).entries[0].status == "unreadable"
    ckpt.write_bytes(data)
    assert build_catalog(root, cache=db).entries[0].status == "ok"


def test_filename_only(tmp_path):
    ckpt = tmp_path / "outputs" / "exp" / "checkpoints" / "epoch=3-val_hmean=0.8512.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")  # an empty file: nothing but its name to go on
    e = entry_of(tmp_path / "outputs")
    assert e.status == "unreadable"
    assert e.epoch == 3 and e.sources["epoch"] == "filename:filename"
    assert e.metrics == {"val_hmean": 0.8512}


def test_hydra_only_architecture(one_ckpt, tree):
    """Hydra present, no sidecars: architecture from Hydra (first source that has it)."""
    root, ckpt, run = one_ckpt
    save_hydra(
        root / "exp", compose(tree.conf_dir, ["model/encoder=resnet18"]), ["model/encoder=resnet18"]
    )
    e = entry_of(root)
    assert e.sources["architecture.encoder"] == "hydra:exp/.hydra/config.yaml"
    assert e.sources["config"] == "hydra:exp/.hydra/config.yaml"
    assert e.warnings == []


def test_no_hparams_uses_signatures(tmp_path, tree):
    """A bare state dict (.pt): only the weights can name the architecture."""
    torch = pytest.importorskip("torch")
    run = tree.runs[EXPERIMENT_R18]
    sd = torch.load(run.files["topk0"], map_location="cpu", weights_only=False)["state_dict"]
    dst = tmp_path / "outputs" / "exp" / "checkpoints" / "weights.pt"
    dst.parent.mkdir(parents=True)
    torch.save(sd, dst)
    e = entry_of(tmp_path / "outputs")
    assert e.status == "ok" and e.epoch is None
    assert e.signatures is not None and e.sources["signatures"] == "signatures:signatures"
    if e.architecture.encoder is not None:
        assert e.sources["architecture.encoder"] == "signatures:signatures"
        assert e.architecture.encoder == "resnet18"


# --------------------------------------------------------------------------- contradictions


def test_contradicting_sidecars(one_ckpt):
    root, ckpt, run = one_ckpt
    epoch = epoch_of(run, "topk0")
    bad = metadata_v2(run, epoch)
    bad.update(epoch=epoch + 5, score=0.01, encoder="mobilenetv3_large")
    bad["metrics"]["val/hmean"] = 0.01
    sidecar(ckpt, "metadata", "yaml").write_text(yaml.safe_dump(bad))
    other = metadata_v2(run, epoch)
    other["metrics"]["val/recall"] = 0.123
    sidecar(ckpt, "metadata", "json").write_text(json.dumps(other))
    e = entry_of(root)
    assert e.status == "ok"
    # the header wins for what it records
    assert e.epoch == epoch and e.sources["epoch"] == H
    assert e.score == pytest.approx(run.best_k[ckpt.name], rel=1e-7) and e.sources["score"] == H
    assert e.metrics["val/hmean"] == e.score and e.sources["metrics.val/hmean"] == H
    # the first source wins for the rest, each disagreement noted
    md_yaml = f"metadata:exp/checkpoints/{ckpt.stem}.metadata.yaml"
    assert (
        e.architecture.encoder == "mobilenetv3_large"
        and e.sources["architecture.encoder"] == md_yaml
    )
    text = "\n".join(e.warnings)
    for field in ("epoch:", "score:", "metrics.val/hmean:", "architecture.encoder:"):
        assert field in text, field
    assert "metadata sidecars disagree on metrics.val/recall" in text


# --------------------------------------------------------------------------- malformed files


@pytest.mark.parametrize(
    "kind, ext, text",
    [
        ("metadata", "yaml", "epoch: [1, 2\nmetrics: {"),
        ("metadata", "json", '{"epoch": 3, '),
        ("metadata", "yaml", "schema_version: 2\nepoch: not-a-number\n"),
        ("metadata", "yaml", "- just\n- a list\n"),
        ("metadata", "yaml", "schema_version: 9\n"),
        ("config", "yaml", "model: {encoder: [\n"),
        ("config", "json", "[1, 2"),
    ],
)
def test_malformed_sidecar(one_ckpt, kind, ext, text):
    root, ckpt, run = one_ckpt
    sidecar(ckpt, kind, ext).write_text(text)
    e = entry_of(root)
    assert e.status == "partial" and e.errors == []
    assert any(f"{ckpt.stem}.{kind}.{ext}" in w and "unusable" in w for w in e.warnings)
    assert e.epoch == epoch_of(run, "topk0") and e.architecture.encoder == "resnet18"


def test_malformed_hydra(one_ckpt):
    root, ckpt, run = one_ckpt
    (root / "exp" / ".hydra").mkdir()
    (root / "exp" / ".hydra" / "config.yaml").write_text("model: {encoder: [\n")
    e = entry_of(root)
    assert e.status == "partial" and any("Hydra config" in w for w in e.warnings)
    assert e.epoch is not None


# --------------------------------------------------------------------------- sidecar model, hydra, scan


def test_metadata_sidecar_v1_migration(tmp_path):
    p = tmp_path / "x.metadata.json"
    p.write_text(
        json.dumps(
            {
                "epoch": 3,
                "val_loss": 0.5,
                "hmean": 0.8,
                "precision": 0.9,
                "recall": 0.7,
                "encoder": "resnet18",
                "note": "old",
            }
        )
    )
    m = MetadataSidecar.load(p)
    assert m.schema_version == 2 and m.epoch == 3 and m.encoder == "resnet18"
    assert m.metrics == {"val_loss": 0.5, "hmean": 0.8, "precision": 0.9, "recall": 0.7}
    assert m.extra == {"note": "old"}
    with pytest.raises(ValueError):
        MetadataSidecar.model_validate({"schema_version": 2, "bogus": 1})


def test_overrides():
    cfg = {"a": {"b": 1}, "model": {"encoder": {"name": "r18"}}, "drop": 1}
    notes = apply_overrides(
        cfg,
        [
            "a.b=2",
            "+a.c=[1, 2]",
            "++x.y=null",
            "~drop",
            "model/encoder=resnet34",
            "model.encoder=resnet34",
            "garbage",
        ],
    )
    assert cfg == {
        "a": {"b": 2, "c": [1, 2]},
        "model": {"encoder": {"name": "r18"}},
        "x": {"y": None},
    }
    assert any("garbage" in n for n in notes)


def test_find_hydra_dir_stops_at_root(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("a: 1\n")
    root = tmp_path / "outputs"
    (root / "exp" / "checkpoints").mkdir(parents=True)
    assert find_hydra_dir(root / "exp" / "checkpoints" / "x.ckpt", root) is None
    (root / ".hydra").mkdir()
    (root / ".hydra" / "config.yaml").write_text("a: 1\n")
    assert find_hydra_dir(root / "exp" / "checkpoints" / "x.ckpt", root) == root / ".hydra"


def test_scan(tmp_path):
    root = tmp_path / "outputs"
    files = [
        "a/checkpoints/e.ckpt",
        "a/checkpoints/e.resolved.config.json",
        "a/checkpoints/.tmp.ckpt",
        "multirun/2025-10-18/0/checkpoints/sub/x.pth",
        "b/model.safetensors",
        "b/checkpoints/y.pt",
        "c/.hydra/config.yaml",
        "c/direct.ckpt",
        "d/notes/stray.ckpt",
        ".hidden/checkpoints/h.ckpt",
        "checkpoints/top.ckpt",
    ]
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_bytes(b"x")
    got = {(f.relpath, f.experiment) for f in scan(root)}
    assert got == {
        ("a/checkpoints/e.ckpt", "a"),
        ("multirun/2025-10-18/0/checkpoints/sub/x.pth", "multirun/2025-10-18/0"),
        ("b/model.safetensors", "b"),
        ("b/checkpoints/y.pt", "b"),
        ("c/direct.ckpt", "c"),
        ("checkpoints/top.ckpt", "outputs"),
    }


def test_copy_keeps_entry_equal(one_ckpt, tmp_path):
    """Moving a tree keeps everything but paths (basenames match the callback's records)."""
    root, ckpt, run = one_ckpt
    a = entry_of(root)
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    b = entry_of(moved)
    assert a.model_dump(exclude={"path", "mtime_ns"}) == b.model_dump(exclude={"path", "mtime_ns"})
