"""A training-outputs tree built once per session with REAL tools.

* ``lightning.Trainer`` fits of tiny DBNet-like models (state-dict keys
  ``model.encoder.model.*`` - a ResNet-like stem and ``layer1..4`` of BasicBlocks -,
  ``model.decoder.*`` (UNet ``inners/outers`` or PAN ``lateral_convs/bottom_up``) and
  ``model.head.binarize.*`` / ``model.head.thresh.*``), ModelCheckpoint(monitor="val/hmean",
  mode="max", save_top_k=2, save_last=True), EarlyStopping, ``save_hyperparameters`` with
  nested configs;
* Hydra configs composed by hydra-core (``initialize_config_dir`` + ``compose`` with
  overrides) and written with ``OmegaConf.save``;
* metadata sidecars as a training callback would write them, in YAML and JSON, and a v1
  flat one.

Ground truth comes from the training itself (the metrics logged per epoch, the callback's
state) - never from the catalog under test.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from torch_corpus import quiet_lightning  # tests/ is on sys.path (rootdir-style import)

EXPERIMENT_R18 = "dbnet_r18"
EXPERIMENT_PAN = "dbnet_pan34"
EXPERIMENT_MULTIRUN = "multirun/2025-10-18/0"
STAGES = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
WIDTHS = (8, 16, 32, 64)


@dataclass
class Run:
    experiment: str
    dir: Path
    history: dict[int, dict[str, float]]  # epoch -> metrics logged at its validation end
    steps: dict[int, int]  # epoch -> global_step at its validation end
    best_k: dict[str, float]  # file name -> score (ModelCheckpoint's own record)
    last_epoch: int
    encoder: str
    decoder: str
    files: dict[str, Path] = field(default_factory=dict)  # "topk0", "topk1", "last"


@dataclass
class Tree:
    root: Path
    runs: dict[str, Run]
    conf_dir: Path


# --------------------------------------------------------------------------- models


def _model_classes():
    import lightning as L
    import torch
    from torch import nn
    from torch.nn import functional as F

    def cbr(cin, cout, k):
        return nn.Sequential(
            nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    class BasicBlock(nn.Module):
        def __init__(self, cin, w, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, w, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(w)
            self.conv2 = nn.Conv2d(w, w, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(w)
            self.downsample = None
            if stride != 1 or cin != w:
                self.downsample = nn.Sequential(
                    nn.Conv2d(cin, w, 1, stride, bias=False), nn.BatchNorm2d(w)
                )

        def forward(self, x):
            y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
            return F.relu(y + (x if self.downsample is None else self.downsample(x)))

    class ResNetFeatures(nn.Module):  # timm features_only layout: conv1, bn1, layer1..4
        def __init__(self, stages):
            super().__init__()
            self.conv1 = nn.Conv2d(3, WIDTHS[0], 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(WIDTHS[0])
            cin = WIDTHS[0]
            for i, (n, w) in enumerate(zip(stages, WIDTHS)):
                blocks = [BasicBlock(cin, w, 1 if i == 0 else 2)] + [
                    BasicBlock(w, w, 1) for _ in range(n - 1)
                ]
                setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
                cin = w

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
            feats = []
            for i in range(4):
                x = getattr(self, f"layer{i + 1}")(x)
                feats.append(x)
            return feats

    class Encoder(nn.Module):
        def __init__(self, stages):
            super().__init__()
            self.model = ResNetFeatures(stages)

        def forward(self, x):
            return self.model(x)

    class UNetDecoder(nn.Module):
        def __init__(self, in_channels, inner=16, out=8):
            super().__init__()
            self.inners = nn.ModuleList(nn.Conv2d(c, inner, 1, bias=False) for c in in_channels)
            self.outers = nn.ModuleList(cbr(inner, out, 3) for _ in in_channels)
            self.out_channels = out * len(in_channels)

        def forward(self, feats):
            lat = [m(f) for m, f in zip(self.inners, feats)]
            for i in range(len(lat) - 2, -1, -1):
                lat[i] = lat[i] + F.interpolate(lat[i + 1], size=lat[i].shape[-2:])
            size = lat[0].shape[-2:]
            return torch.cat([F.interpolate(o(x), size=size) for o, x in zip(self.outers, lat)], 1)

    class SeparableConv(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.depthwise = nn.Conv2d(c, c, 3, stride=2, padding=1, groups=c, bias=False)
            self.pointwise = nn.Conv2d(c, c, 1, bias=False)
            self.bn = nn.BatchNorm2d(c)

        def forward(self, x):
            return F.relu(self.bn(self.pointwise(self.depthwise(x))))

    class PANDecoder(nn.Module):
        def __init__(self, in_channels, inner=16, out=16):
            super().__init__()
            self.lateral_convs = nn.ModuleList(cbr(c, inner, 1) for c in in_channels)
            self.bottom_up = nn.ModuleList(SeparableConv(inner) for _ in in_channels[1:])
            self.fusion = cbr(inner * len(in_channels), out, 3)
            self.out_channels = out

        def forward(self, feats):
            lat = [m(f) for m, f in zip(self.lateral_convs, feats)]
            for i in range(len(lat) - 2, -1, -1):
                lat[i] = lat[i] + F.interpolate(lat[i + 1], size=lat[i].shape[-2:])
            for i, m in enumerate(self.bottom_up):
                lat[i + 1] = lat[i + 1] + F.interpolate(m(lat[i]), size=lat[i + 1].shape[-2:])
            size = lat[0].shape[-2:]
            return self.fusion(torch.cat([F.interpolate(x, size=size) for x in lat], 1))

    class DBHead(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.binarize = self._branch(c)
            self.thresh = self._branch(c)

        @staticmethod
        def _branch(c):
            q = max(1, c // 4)
            return nn.Sequential(
                nn.Conv2d(c, q, 3, padding=1, bias=False),
                nn.BatchNorm2d(q),
                nn.ReLU(inplace=True),
                nn.ConvTranspose2d(q, q, 2, 2),
                nn.BatchNorm2d(q),
                nn.ReLU(inplace=True),
                nn.ConvTranspose2d(q, 1, 2, 2),
            )

        def forward(self, x):
            return torch.sigmoid(self.binarize(x)), torch.sigmoid(self.thresh(x))

    class DBNet(nn.Module):
        def __init__(self, encoder, decoder, head):
            super().__init__()
            self.encoder, self.decoder, self.head = encoder, decoder, head

        def forward(self, x):
            return self.head(self.decoder(self.encoder(x)))

    class LitDBNet(L.LightningModule):
        def __init__(self, model: Any, optimizer: Any, data: Any = None):
            super().__init__()
            self.save_hyperparameters()  # nested configs, as the users' module does
            enc = model["encoder"]
            stages = STAGES[enc["name"]]
            encoder = Encoder(stages)
            dec_cfg = model["decoder"]
            cls = UNetDecoder if dec_cfg["name"] == "unet" else PANDecoder
            decoder = cls(list(WIDTHS), dec_cfg["inner_channels"], dec_cfg["out_channels"])
            self.model = DBNet(encoder, decoder, DBHead(decoder.out_channels))
            self.history: dict[int, dict[str, float]] = {}
            self.steps: dict[int, int] = {}
            self._val: list[float] = []

        def _loss(self, batch):
            x, y = batch
            prob, thresh = self.model(x)
            return F.binary_cross_entropy(prob, y) + F.l1_loss(thresh, y)

        def training_step(self, batch, batch_idx):
            loss = self._loss(batch)
            self.log("train/loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            loss = self._loss(batch)
            self._val.append(float(loss))
            self.log("val/loss", loss)

        def on_validation_epoch_end(self):
            loss = sum(self._val) / len(self._val)
            self._val.clear()
            precision = 1.0 / (1.0 + loss)
            recall = 1.0 / (1.0 + 0.5 * loss + 0.01 * self.current_epoch)
            hmean = 2 * precision * recall / (precision + recall)
            self.log("val/hmean", hmean)
            self.log("val/precision", precision)
            self.log("val/recall", recall)
            self.history[self.current_epoch] = {
                "val/hmean": hmean,
                "val/precision": precision,
                "val/recall": recall,
                "val/loss": loss,
            }
            self.steps[self.current_epoch] = self.global_step

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=float(self.hparams.optimizer["lr"]))

    return LitDBNet


def _loaders(seed):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(12, 3, 32, 32, generator=g)
    y = (x.mean(1, keepdim=True) > 0.5).float()
    return (
        DataLoader(TensorDataset(x[:8], y[:8]), batch_size=4),
        DataLoader(TensorDataset(x[8:], y[8:]), batch_size=4),
    )


def _fit(
    lit_cls, hparams: dict, run_dir: Path, seed: int, filename: str | None, experiment: str
) -> Run:
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    torch.manual_seed(seed)
    module = lit_cls(**hparams)
    kwargs: dict[str, Any] = {}
    if filename is not None:
        kwargs = {"filename": filename, "auto_insert_metric_name": False}
    cb = ModelCheckpoint(
        dirpath=str(run_dir / "checkpoints"),
        monitor="val/hmean",
        mode="max",
        save_top_k=2,
        save_last=True,
        **kwargs,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=4,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        callbacks=[cb, EarlyStopping(monitor="val/hmean", mode="max", patience=3)],
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        default_root_dir=str(run_dir),
    )
    train, val = _loaders(seed)
    trainer.fit(module, train_dataloaders=train, val_dataloaders=val)
    best_k = {Path(p).name: float(v) for p, v in cb.best_k_models.items()}
    # the epoch last.ckpt records, as torch itself reads it (Lightning does not rewrite
    # last.ckpt after an epoch that saved no top-k file)
    last_epoch = int(
        torch.load(cb.last_model_path, map_location="cpu", weights_only=False)["epoch"]
    )
    run = Run(
        experiment,
        run_dir,
        dict(module.history),
        dict(module.steps),
        best_k,
        last_epoch,
        hparams["model"]["encoder"]["name"],
        hparams["model"]["decoder"]["name"],
    )
    topk = sorted(best_k, key=lambda n: best_k[n], reverse=True)
    run.files = {
        "topk0": run_dir / "checkpoints" / topk[0],
        "topk1": run_dir / "checkpoints" / topk[1],
        "last": Path(cb.last_model_path),
    }
    return run


# --------------------------------------------------------------------------- hydra


def _write_conf(conf: Path) -> None:
    (conf / "model" / "encoder").mkdir(parents=True)
    (conf / "model" / "decoder").mkdir(parents=True)
    (conf / "config.yaml").write_text(
        "defaults:\n  - model/encoder: resnet18\n  - model/decoder: unet\n  - _self_\n"
        "model:\n  head:\n    name: db\n    _target_: ocr.models.head.DBHead\n"
        "    in_channels: ${model.decoder.out_channels}\n"
        "optimizer:\n  name: adamw\n  lr: 0.001\n"
        "data:\n  batch_size: 4\n  image_size: 32\n  root: ${oc.env:CKPTPEEK_TEST_DATA_ROOT,/data}\n"
        "trainer:\n  max_epochs: 4\n  accumulate: ${data.batch_size}\n"
        "exp_name: dbnet\n"
    )
    for name in STAGES:
        (conf / "model" / "encoder" / f"{name}.yaml").write_text(
            f"name: {name}\n_target_: ocr.models.encoder.TimmBackbone\nmodel_name: {name}\n"
            "out_indices: [1, 2, 3, 4]\n"
        )
    (conf / "model" / "decoder" / "unet.yaml").write_text(
        "name: unet\n_target_: ocr.models.decoder.UNetDecoder\ninner_channels: 16\nout_channels: 8\n"
    )
    (conf / "model" / "decoder" / "pan.yaml").write_text(
        "name: pan\n_target_: ocr.models.decoder.PANDecoder\ninner_channels: 16\nout_channels: 16\n"
    )


def compose(conf: Path, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(version_base=None, config_dir=str(conf)):
        return hydra_compose(config_name="config", overrides=overrides)


def save_hydra(run_dir: Path, cfg, overrides: list[str]) -> None:
    from omegaconf import OmegaConf

    hd = run_dir / ".hydra"
    hd.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, hd / "config.yaml")  # interpolations kept, as Hydra writes them
    OmegaConf.save(OmegaConf.create(overrides), hd / "overrides.yaml")
    (hd / "hydra.yaml").write_text("hydra:\n  run:\n    dir: ignored\n  job:\n    name: train\n")


# --------------------------------------------------------------------------- sidecars


def metadata_v2(run: Run, epoch: int, arch: bool = True) -> dict[str, Any]:
    h = run.history[epoch]
    out: dict[str, Any] = {
        "schema_version": 2,
        "epoch": epoch,
        "global_step": run.steps[epoch],
        "created_at": "2025-10-18T12:00:00+00:00",
        "metrics": dict(h),
        "monitor": "val/hmean",
        "mode": "max",
        "score": h["val/hmean"],
    }
    if arch:
        out.update({"encoder": run.encoder, "decoder": run.decoder, "head": "db"})
    return out


def epoch_of(run: Run, key: str) -> int:
    import re

    if key == "last":
        return run.last_epoch
    return int(re.search(r"epoch=(\d+)", run.files[key].name).group(1))


def sidecar(ckpt: Path, kind: str, ext: str) -> Path:
    stem = ckpt.name.rsplit(".", 1)[0]
    return ckpt.with_name(f"{stem}.{kind}.{ext}")


# --------------------------------------------------------------------------- the tree


@pytest.fixture(scope="session", autouse=True)
def _private_cache_dir(tmp_path_factory):
    """No test may touch the user's cache: point the default location at a temp dir."""
    old = {k: os.environ.get(k) for k in ("CKPTPEEK_CACHE_DIR", "XDG_CACHE_HOME")}
    os.environ["CKPTPEEK_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache-home"))
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def tree(tmp_path_factory) -> Tree:
    pytest.importorskip("lightning")
    pytest.importorskip("hydra")
    from omegaconf import OmegaConf

    base = tmp_path_factory.mktemp("catalog")
    conf = base / "conf"
    _write_conf(conf)
    root = base / "outputs"
    runs: dict[str, Run] = {}
    with quiet_lightning():
        lit = _model_classes()

        # 1. dbnet_r18: a Hydra run (composed with overrides), hparams = plain nested dicts
        ov_r18 = ["model/encoder=resnet18", "model/decoder=unet", "optimizer.lr=0.002"]
        cfg = compose(conf, ov_r18)
        run_dir = root / EXPERIMENT_R18
        plain = OmegaConf.to_container(cfg, resolve=True)
        r18 = _fit(
            lit,
            {"model": plain["model"], "optimizer": plain["optimizer"], "data": plain["data"]},
            run_dir,
            seed=0,
            filename=None,
            experiment=EXPERIMENT_R18,
        )
        save_hydra(run_dir, cfg, ov_r18)
        runs[EXPERIMENT_R18] = r18
        f0, f1 = r18.files["topk0"], r18.files["topk1"]
        import yaml

        sidecar(f0, "metadata", "yaml").write_text(
            yaml.safe_dump(metadata_v2(r18, epoch_of(r18, "topk0")))
        )
        sidecar(f1, "metadata", "json").write_text(
            json.dumps(metadata_v2(r18, epoch_of(r18, "topk1")))
        )
        sidecar(f0, "config", "yaml").write_text(
            yaml.safe_dump(
                {
                    "model": {
                        "encoder": {"name": "resnet18"},
                        "decoder": {"name": "unet"},
                        "head": {"name": "db"},
                    },
                    "optimizer": {"name": "adamw", "lr": 0.002},
                }
            )
        )

        # 2. dbnet_pan34: no Hydra; metric in the file name; hparams hold a DictConfig
        cfg_pan = compose(conf, ["model/encoder=resnet34", "model/decoder=pan"])
        run_dir = root / EXPERIMENT_PAN
        pan = _fit(
            lit,
            {"model": cfg_pan.model, "optimizer": cfg_pan.optimizer},
            run_dir,
            seed=1,
            filename="epoch={epoch}-val_hmean={val/hmean:.4f}",
            experiment=EXPERIMENT_PAN,
        )
        runs[EXPERIMENT_PAN] = pan
        e = epoch_of(pan, "topk0")
        v1 = {
            "epoch": e,
            "val_loss": pan.history[e]["val/loss"],
            "hmean": pan.history[e]["val/hmean"],
            "precision": pan.history[e]["val/precision"],
            "recall": pan.history[e]["val/recall"],
            "encoder": "resnet34",
            "note": "written by the old callback",
        }
        sidecar(pan.files["topk0"], "metadata", "yaml").write_text(yaml.safe_dump(v1))

    # 3. a multirun job: a copy of r18's checkpoints, config.yaml composed WITHOUT the value
    #    overrides that overrides.yaml lists (so applying them is observable)
    mr_dir = root / EXPERIMENT_MULTIRUN
    (mr_dir / "checkpoints").mkdir(parents=True)
    for key in ("topk0", "last"):
        shutil.copy2(r18.files[key], mr_dir / "checkpoints" / r18.files[key].name)
    save_hydra(
        mr_dir,
        compose(conf, ["model/encoder=resnet18"]),
        ["model/encoder=resnet18", "optimizer.lr=0.005", "+trainer.tag=sweep0", "~exp_name"],
    )
    mr = Run(
        EXPERIMENT_MULTIRUN,
        mr_dir,
        r18.history,
        r18.steps,
        r18.best_k,
        r18.last_epoch,
        "resnet18",
        "unet",
        {k: mr_dir / "checkpoints" / r18.files[k].name for k in ("topk0", "last")},
    )
    runs[EXPERIMENT_MULTIRUN] = mr
    return Tree(root, runs, conf)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root with (size, mtime_ns) - to prove nothing was written."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            st = os.stat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), root)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def one_ckpt(tree: Tree, tmp_path: Path):
    """A fresh tree holding one real top-k checkpoint of dbnet_r18 (no sidecars, no Hydra)."""
    run = tree.runs[EXPERIMENT_R18]
    src = run.files["topk0"]
    dst = tmp_path / "outputs" / "exp" / "checkpoints" / src.name
    dst.parent.mkdir(parents=True)
    shutil.copy2(src, dst)
    return tmp_path / "outputs", dst, run
