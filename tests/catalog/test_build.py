"""build_catalog over a tree of real Lightning runs: every field, its source, and the build options."""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil

import pytest

from ckptpeek.catalog import Catalog, build_catalog
from ckptpeek.catalog.build import RESOLVED_SUFFIX
from ckptpeek.io.source import ByteSource

from .conftest import EXPERIMENT_MULTIRUN, EXPERIMENT_PAN, EXPERIMENT_R18, epoch_of, snapshot

H = "header:header"


@pytest.fixture(scope="module")
def catalog(tree) -> Catalog:
    return build_catalog(tree.root, cache=False)


def by_rel(catalog, run, key):
    rel = run.files[key].relative_to(catalog.root).as_posix()
    [entry] = [e for e in catalog.entries if e.relpath == rel]
    return entry


def test_finds_every_checkpoint_with_its_experiment(catalog, tree):
    got = {(e.experiment, e.relpath.rsplit("/", 1)[-1]) for e in catalog.entries}
    want = {(run.experiment, f.name) for run in tree.runs.values() for f in run.files.values()}
    assert got == want
    assert catalog.errors == []
    assert all(e.status == "ok" and e.errors == [] for e in catalog.entries)
    assert not any(RESOLVED_SUFFIX in e.relpath for e in catalog.entries)


@pytest.mark.parametrize("key", ["topk0", "topk1", "last"])
def test_r18_fields_and_sources(catalog, tree, key):
    run = tree.runs[EXPERIMENT_R18]
    e = by_rel(catalog, run, key)
    epoch = epoch_of(run, key)
    assert (e.epoch, e.global_step) == (epoch, run.steps[epoch])
    assert e.sources["epoch"] == e.sources["global_step"] == H
    assert (e.monitor, e.mode) == ("val/hmean", "max")
    assert e.sources["monitor"] == e.sources["mode"] == e.sources["score"] == H
    # the score is ModelCheckpoint's record of this file (last.ckpt: of its epoch's top-k file)
    name = run.files[key].name if key != "last" else f"epoch={epoch}-step={run.steps[epoch]}.ckpt"
    assert e.score == pytest.approx(run.best_k[name], rel=1e-7)
    assert e.metrics["val/hmean"] == e.score and e.sources["metrics.val/hmean"] == H
    assert e.is_last is (key == "last")
    assert e.is_best is (key == "topk0" or (key == "last" and name == run.files["topk0"].name))
    assert (e.architecture.encoder, e.architecture.decoder, e.architecture.head) == (
        "resnet18",
        "unet",
        "db",
    )
    assert e.signatures is not None and e.sources["signatures"] == "signatures:signatures"
    assert e.warnings == []
    rel_dir = f"{EXPERIMENT_R18}/checkpoints"
    stem = run.files[key].name[: -len(".ckpt")]
    if key == "topk0":  # YAML metadata + YAML config sidecar
        md = f"metadata:{rel_dir}/{stem}.metadata.yaml"
        assert e.sources["architecture.encoder"] == md and e.sources["created"] == md
        assert e.created is not None and e.created.year == 2025
        for m in ("val/precision", "val/recall", "val/loss"):
            assert e.metrics[m] == pytest.approx(run.history[epoch][m])
            assert e.sources[f"metrics.{m}"] == md
        assert e.sources["config"] == f"config:{rel_dir}/{stem}.config.yaml"
        assert e.config["optimizer"]["lr"] == 0.002
    elif key == "topk1":  # JSON metadata, config from Hydra
        md = f"metadata:{rel_dir}/{stem}.metadata.json"
        assert e.sources["architecture.decoder"] == md and e.sources["metrics.val/recall"] == md
        assert e.sources["config"] == f"hydra:{EXPERIMENT_R18}/.hydra/config.yaml"
    else:  # no sidecars: Hydra names the architecture
        hy = f"hydra:{EXPERIMENT_R18}/.hydra/config.yaml"
        assert e.sources["architecture.encoder"] == e.sources["architecture.head"] == hy
        assert e.created is None and set(e.metrics) == {"val/hmean"}
        assert e.config["optimizer"]["lr"] == 0.002
        assert e.config["trainer"]["accumulate"] == 4  # ${data.batch_size} resolved
        assert (
            e.config["data"]["root"] == "${oc.env:CKPTPEEK_TEST_DATA_ROOT,/data}"
        )  # resolver kept


def test_pan_filename_metric_and_v1_sidecar(catalog, tree):
    run = tree.runs[EXPERIMENT_PAN]
    e = by_rel(catalog, run, "topk0")
    epoch = epoch_of(run, "topk0")
    assert e.epoch == epoch and e.sources["epoch"] == H
    # the file name's "val_hmean=0.5215" is the logged "val/hmean"; the header's value wins
    assert set(k for k in e.metrics if k.endswith("hmean")) == {"val/hmean", "hmean"}
    assert e.metrics["val/hmean"] == pytest.approx(run.best_k[run.files["topk0"].name], rel=1e-7)
    assert e.sources["metrics.val/hmean"] == H
    # v1 flat sidecar migrated: its metrics and encoder are used, with a note
    md = f"metadata:{EXPERIMENT_PAN}/checkpoints/{run.files['topk0'].name[:-5]}.metadata.yaml"
    assert e.metrics["val_loss"] == pytest.approx(run.history[epoch]["val/loss"])
    assert e.sources["metrics.val_loss"] == md and e.sources["architecture.encoder"] == md
    assert any("schema_version 1 migrated" in w for w in e.warnings)
    # no Hydra, no config sidecar: the hparams saved in the checkpoint name the rest
    assert (e.architecture.encoder, e.architecture.decoder, e.architecture.head) == (
        "resnet34",
        "pan",
        "db",
    )
    assert e.sources["architecture.decoder"] == H and e.sources["config"] == H
    assert e.config["model"]["encoder"]["name"] == "resnet34"
    last = by_rel(catalog, run, "last")
    assert last.is_last and last.sources["is_last"] == H


def test_multirun_experiment_and_overrides(catalog, tree):
    run = tree.runs[EXPERIMENT_MULTIRUN]
    e = by_rel(catalog, run, "topk0")
    assert e.experiment == EXPERIMENT_MULTIRUN
    assert e.config["optimizer"]["lr"] == 0.005  # overrides.yaml applied
    assert e.config["trainer"]["tag"] == "sweep0"  # +key
    assert "exp_name" not in e.config  # ~key
    assert e.sources["config"] == f"hydra:{EXPERIMENT_MULTIRUN}/.hydra/config.yaml"


def test_best_and_records(catalog, tree):
    r18 = tree.runs[EXPERIMENT_R18]
    best = catalog.best("val/hmean", experiment=EXPERIMENT_R18)
    assert best.relpath.endswith(r18.files["topk0"].name) or best.is_last
    assert best.score == max(r18.best_k.values()) or best.score == pytest.approx(
        max(r18.best_k.values())
    )
    overall = catalog.best("val/hmean")
    assert overall.score == max(e.score for e in catalog.entries if e.score is not None)
    worst = catalog.best("val_hmean", mode="min")  # the file-name spelling finds it too
    assert worst.score == min(e.score for e in catalog.entries if e.score is not None)
    assert catalog.best("no-such-metric") is None
    with pytest.raises(ValueError):
        catalog.best("val/hmean", mode="up")
    recs = catalog.to_records()
    assert len(recs) == len(catalog.entries)
    for rec, e in zip(recs, catalog.entries):
        assert all(not isinstance(v, (dict, list)) for v in rec.values())
        assert (
            rec["relpath"] == e.relpath
            and rec["epoch"] == e.epoch
            and rec["encoder"] == e.architecture.encoder
        )
        assert rec["metric.val/hmean"] == e.metrics["val/hmean"]
    json.dumps(recs)
    assert set(catalog.by_experiment()) == set(tree.runs)


def _dump(c):
    return [e.model_dump() for e in c.entries]


def test_workers_and_executor_equal(tree, catalog):
    one = build_catalog(tree.root, cache=False, workers=1)
    with concurrent.futures.ThreadPoolExecutor(3) as ex:
        custom = build_catalog(tree.root, cache=False, executor=ex)
    assert _dump(one) == _dump(catalog) == _dump(custom)


def test_nothing_written_by_default(tree):
    before = snapshot(tree.root)
    build_catalog(tree.root, cache=False)
    build_catalog(tree.root, cache=True)  # the cache lives outside the tree
    assert snapshot(tree.root) == before


def test_write_resolved_atomic(tree, tmp_path, monkeypatch):
    root = tmp_path / "outputs"
    shutil.copytree(tree.root, root)
    replaced = []

    def spy(real):
        def call(src, dst, *, src_dir_fd, dst_dir_fd, **kw):
            # a temporary file renamed (linked) into place within one directory
            replaced.append((os.fspath(src), os.fspath(dst)))
            assert src_dir_fd == dst_dir_fd and "/" not in os.fspath(src) + os.fspath(dst)
            return real(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd, **kw)

        return call

    monkeypatch.setattr(os, "replace", spy(os.replace))
    monkeypatch.setattr(os, "link", spy(os.link))
    before = snapshot(root)
    cat = build_catalog(root, cache=False, write_resolved=True)
    after = snapshot(root)
    assert set(before) <= set(after) and all(after[k] == v for k, v in before.items())
    new = sorted(set(after) - set(before))
    assert len(new) == len(cat.entries) and all(n.endswith(RESOLVED_SUFFIX) for n in new)
    assert len(replaced) == len(new)
    e = cat.entries[0]
    doc = json.loads((root / e.relpath.replace(".ckpt", RESOLVED_SUFFIX)).read_text())
    assert doc["epoch"] == e.epoch and doc["architecture"]["encoder"] == e.architecture.encoder
    # the resolved files are not checkpoints and change nothing on the next build
    again = build_catalog(root, cache=False)
    assert _dump(again) == _dump(build_catalog(root, cache=False))
    assert len(again.entries) == len(cat.entries)


def test_reads_headers_only(tree, monkeypatch):
    """Bounded work, counted (speed is claimed in benchmarks/measure_catalog.py): each
    checkpoint is opened once, and only its pickle and directory are read - no weights -
    apart from the few scalar tensors that hold metrics (best_model_score, ...)."""
    sources, viewed = [], []
    init, view = ByteSource.__init__, ByteSource.view

    def counting_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        sources.append(self)

    def counting_view(self, offset, n, **kwargs):
        viewed.append(n)
        return view(self, offset, n, **kwargs)

    monkeypatch.setattr(ByteSource, "__init__", counting_init)
    monkeypatch.setattr(ByteSource, "view", counting_view)
    cat = build_catalog(tree.root, cache=False, workers=1)
    assert len(cat.entries) == 8 and all(e.status == "ok" for e in cat.entries)
    assert sorted(s.path for s in sources) == sorted(e.path for e in cat.entries)
    for s in sources:
        assert s.bytes_read < s.size // 10, (s.path, s.bytes_read, s.size)
    assert all(n <= 8 for n in viewed), viewed  # one float64 / int64 at most
    assert len(viewed) <= 8 * len(sources), len(viewed)


def test_cache_reuses_and_notices_changes(tree, tmp_path):
    root = tmp_path / "outputs"
    shutil.copytree(tree.root, root)
    db = tmp_path / "cache.sqlite"
    first = build_catalog(root, cache=db)
    second = build_catalog(root, cache=db)
    assert _dump(first) == _dump(second)
    # a new sidecar next to last.ckpt changes that entry
    last = root / EXPERIMENT_R18 / "checkpoints" / "last.ckpt"
    (last.parent / "last.metadata.yaml").write_text(
        "schema_version: 2\nmetrics: {test/hmean: 0.5}\n"
    )
    third = build_catalog(root, cache=db)
    [e] = [e for e in third.entries if e.path == str(last)]
    assert e.metrics["test/hmean"] == 0.5
    # a deleted checkpoint drops out
    (root / EXPERIMENT_MULTIRUN / "checkpoints" / "last.ckpt").unlink()
    assert len(build_catalog(root, cache=db).entries) == len(first.entries) - 1


def test_root_missing(tmp_path):
    cat = build_catalog(tmp_path / "nope", cache=False)
    assert cat.entries == [] and cat.errors
