"""The benchmark corpus: generated once into a cache directory outside the repository.

Three kinds of files:

(a) ``lightning-<n>``: real Lightning checkpoints written by ``lightning.Trainer`` on CPU
    (2 training steps + 1 validation batch on random data) with Adam state, a cosine LR
    scheduler stepped per step, ``ModelCheckpoint(monitor="val/hmean", mode="max")``,
    ``EarlyStopping`` and ``save_hyperparameters()``. The model is an ``nn.Sequential`` of
    tiny ``Linear(8, 8)`` + ``LayerNorm(8)`` blocks, so a file holds about 100, 1,000 or
    10,000 tensors (state_dict + optimizer state: each parameter has a weight, an
    ``exp_avg``, an ``exp_avg_sq`` and a ``step`` tensor) while staying small.
(b) ``statedict-<n>``: synthetic ``torch.save`` state dicts of 100 / 1,000 / 10,000 /
    100,000 small float32 tensors (an ``OrderedDict`` with ``_metadata``, like
    ``nn.Module.state_dict()``).
(c) ``lightning-big``: the >= 300 MB checkpoint of ``make_big_checkpoint.py``.
(d) ``outputs-<scale>``: a realistic ``outputs/`` tree like our users' (see
    ``ensure_outputs``): several experiments of a DBNet-style text detector (timm or
    stand-in encoder, FPN / UNet / PAN decoder, DB head) trained for a few steps by a real
    ``lightning.Trainer`` with ``ModelCheckpoint(monitor="val/hmean", mode="max",
    save_top_k=2, save_last=True)``, Hydra ``.hydra/`` directories and metadata sidecars,
    at the scales ``ci``, ``small`` and ``large``.

Everything goes to ``$CKPTPEEK_BENCH_CACHE`` (default ``~/.cache/ckptpeek-bench``) under
``corpus-<VERSION>/`` with a ``manifest.json`` written last; a complete manifest means
the corpus is reused as is. Bump ``VERSION`` when a recipe changes.

    python benchmarks/corpus.py            # generate if needed, print the manifest
    python benchmarks/corpus.py --force    # regenerate (not the big checkpoint: see
                                           # make_big_checkpoint.py --force)
    python benchmarks/corpus.py --scale small          # the outputs/ tree of one scale
    CKPTPEEK_BENCH_GEN_PYTHON=/path/to/venv/bin/python python benchmarks/corpus.py --scale large
                                           # generate it with another interpreter (with timm)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import shutil
import sys
import time
import warnings
import zipfile
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import make_big_checkpoint  # noqa: E402

#: Part of the cache path: a change regenerates everything but the big checkpoint
#: (which has its own ``make_big_checkpoint.RECIPE``).
VERSION = "v1"
LIGHTNING_TARGETS = (100, 1_000, 10_000)
STATEDICT_SIZES = (100, 1_000, 10_000, 100_000)
WIDTH = 8


def corpus_dir() -> pathlib.Path:
    return make_big_checkpoint.cache_dir() / f"corpus-{VERSION}"


def manifest_path() -> pathlib.Path:
    return corpus_dir() / "manifest.json"


def _log(msg: str) -> None:
    print(f"[corpus] {msg}", file=sys.stderr, flush=True)


def _label(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


# -- counting -------------------------------------------------------------------------------


def _count_tensors(obj: Any, torch: Any, seen: set[int] | None = None) -> int:
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        return 1
    if id(obj) in seen:
        return 0
    if isinstance(obj, dict):
        seen.add(id(obj))
        return sum(_count_tensors(v, torch, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        seen.add(id(obj))
        return sum(_count_tensors(v, torch, seen) for v in obj)
    return 0


def _pickle_info(path: pathlib.Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
        pkl = next(
            i for i in infos if i.filename.endswith("/data.pkl") and i.filename.count("/") == 1
        )
        storages = sum(1 for i in infos if "/data/" in i.filename)
    return {
        "data_pkl_member": pkl.filename,
        "data_pkl_bytes": pkl.file_size,
        "zip_members": len(infos),
        "storages": storages,
    }


def _describe(path: pathlib.Path, torch: Any, kind: str) -> dict[str, Any]:
    obj = torch.load(path, map_location="cpu", weights_only=False)
    info: dict[str, Any] = {
        "file": path.name,
        "kind": kind,
        "file_bytes": path.stat().st_size,
        "tensors": _count_tensors(obj, torch),
    }
    if kind == "lightning":
        info["state_dict_tensors"] = _count_tensors(obj["state_dict"], torch)
        info["optimizer_tensors"] = _count_tensors(obj["optimizer_states"], torch)
        info["top_level_keys"] = list(obj)
    info.update(_pickle_info(path))
    return info


# -- (a) small Lightning checkpoints ----------------------------------------------------------


def _lightning_module(L: Any, torch: Any, nn: Any) -> Any:
    class TinyStack(L.LightningModule):
        def __init__(self, n_blocks: int, width: int, config: dict) -> None:
            super().__init__()
            self.save_hyperparameters()
            layers: list[Any] = []
            for _ in range(n_blocks):
                layers += [nn.Linear(width, width), nn.LayerNorm(width)]
            self.body = nn.Sequential(*layers)
            self.head = nn.Linear(width, 1)

        def forward(self, x: Any) -> Any:
            return self.head(self.body(x)).squeeze(-1)

        def _loss(self, batch: Any) -> Any:
            x, y = batch
            return nn.functional.binary_cross_entropy_with_logits(self(x), y)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            loss = self._loss(batch)
            self.log("train/loss", loss)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            p = (self(x) > 0).float()
            tp = (p * y).sum()
            prec, rec = tp / (p.sum() + 1e-6), tp / (y.sum() + 1e-6)
            self.log("val/hmean", 2 * prec * rec / (prec + rec + 1e-6))
            self.log("val/loss", self._loss(batch))

        def configure_optimizers(self) -> Any:
            o = self.hparams.config["optim"]
            opt = torch.optim.Adam(self.parameters(), lr=o["lr"], betas=tuple(o["betas"]))
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=o["t_max"])
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return TinyStack


def _make_lightning(target: int, out: pathlib.Path) -> None:
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    # Tensors: 4 params per block + 2 for the head; x4 (weight, exp_avg, exp_avg_sq, step).
    n_blocks = max(1, round((target / 4 - 2) / 4))
    config = {
        "model": {"name": "tiny-stack", "blocks": n_blocks, "width": WIDTH},
        "optim": {"name": "adam", "lr": 1e-3, "betas": [0.9, 0.999], "t_max": 100},
        "data": {"batch_size": 4, "samples": 8},
        "seed": 1234,
        "tags": ["benchmark", "ckptpeek", f"target={target}"],
    }
    L.seed_everything(config["seed"], verbose=False)
    model = _lightning_module(L, torch, nn)(n_blocks, WIDTH, config)
    x = torch.randn(8, WIDTH)
    y = (torch.rand(8) > 0.5).float()
    dl = DataLoader(TensorDataset(x, y), batch_size=4)
    mc_dir = out.parent / f"_mc-{out.stem}"
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[
            ModelCheckpoint(
                dirpath=mc_dir,
                filename="best-{epoch}-{step}",
                monitor="val/hmean",
                mode="max",
                save_top_k=1,
                save_weights_only=True,
            ),
            EarlyStopping(monitor="val/hmean", mode="max", patience=3),
        ],
    )
    trainer.fit(model, dl, dl)
    tmp = out.with_suffix(".tmp")
    trainer.save_checkpoint(tmp)
    os.replace(tmp, out)
    shutil.rmtree(mc_dir, ignore_errors=True)


# -- (b) synthetic state dicts ----------------------------------------------------------------

_SHAPES = ((8, 8), (8,), (4, 8), (8,))
_NAMES = ("q_proj.weight", "q_proj.bias", "out_proj.weight", "norm.weight")


def _make_statedict(n: int, out: pathlib.Path) -> None:
    import collections

    import torch

    g = torch.Generator().manual_seed(n)
    sd: collections.OrderedDict[str, Any] = collections.OrderedDict()
    meta: collections.OrderedDict[str, Any] = collections.OrderedDict({"": {"version": 1}})
    for i in range(n):
        layer, j = divmod(i, len(_SHAPES))
        sd[f"model.layers.{layer}.{_NAMES[j]}"] = torch.randn(*_SHAPES[j], generator=g)
        if j == 0:
            meta[f"model.layers.{layer}"] = {"version": 1}
    sd._metadata = meta  # type: ignore[attr-defined]  # as nn.Module.state_dict() does
    tmp = out.with_suffix(".tmp")
    torch.save(sd, tmp)
    os.replace(tmp, out)


# -- driver ------------------------------------------------------------------------------------


def load_manifest() -> dict[str, Any] | None:
    try:
        m = json.loads(manifest_path().read_text())
    except (OSError, ValueError):
        return None
    if m.get("version") != VERSION:
        return None
    for entry in m["files"]:
        if not pathlib.Path(entry["path"]).exists():
            return None
    return m


def ensure(force: bool = False) -> dict[str, Any]:
    """The corpus manifest; generates whatever is missing (everything with ``force``)."""
    if not force:
        m = load_manifest()
        if m is not None:
            return m
    t_all = time.perf_counter()
    d = corpus_dir()
    if force and d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore")
    _log(f"generating into {d} (importing torch + lightning) ...")
    import lightning  # noqa: F401 - imported first so its loggers can be quietened
    import torch

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)

    files: list[dict[str, Any]] = []
    for target in LIGHTNING_TARGETS:
        out = d / f"lightning-{_label(target)}.ckpt"
        t0 = time.perf_counter()
        if not out.exists():
            _make_lightning(target, out)
        info = _describe(out, torch, "lightning")
        info.update(
            name=f"lightning-{_label(target)}",
            target_tensors=target,
            path=str(out),
            gen_seconds=round(time.perf_counter() - t0, 2),
        )
        files.append(info)
        _log(
            f"{info['name']}: {info['tensors']} tensors ({info['state_dict_tensors']} "
            f"state_dict + {info['optimizer_tensors']} optimizer), "
            f"{info['file_bytes'] / 1e6:.2f} MB, data.pkl {info['data_pkl_bytes'] / 1e3:.1f} kB, "
            f"{info['gen_seconds']:.1f}s"
        )
    for n in STATEDICT_SIZES:
        out = d / f"statedict-{_label(n)}.pt"
        t0 = time.perf_counter()
        if not out.exists():
            _make_statedict(n, out)
        info = _describe(out, torch, "statedict")
        info.update(
            name=f"statedict-{_label(n)}",
            target_tensors=n,
            path=str(out),
            gen_seconds=round(time.perf_counter() - t0, 2),
        )
        files.append(info)
        _log(
            f"{info['name']}: {info['tensors']} tensors, {info['file_bytes'] / 1e6:.2f} MB, "
            f"data.pkl {info['data_pkl_bytes'] / 1e3:.1f} kB, {info['gen_seconds']:.1f}s"
        )
    t0 = time.perf_counter()
    big = make_big_checkpoint.make()
    info = _describe(big, torch, "lightning")
    info.update(
        name="lightning-big",
        target_tensors=None,
        path=str(big),
        gen_seconds=round(time.perf_counter() - t0, 2),
    )
    files.append(info)
    _log(
        f"lightning-big: {info['tensors']} tensors, {info['file_bytes'] / 1e6:.1f} MB, "
        f"data.pkl {info['data_pkl_bytes'] / 1e3:.1f} kB, {info['gen_seconds']:.1f}s"
    )
    m = {
        "version": VERSION,
        "torch": torch.__version__,
        "files": files,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "gen_seconds": round(time.perf_counter() - t_all, 1),
    }
    tmp = manifest_path().with_suffix(".tmp")
    tmp.write_text(json.dumps(m, indent=2))
    os.replace(tmp, manifest_path())
    _log(f"done in {m['gen_seconds']:.1f}s")
    return m


# -- (d) a realistic outputs/ tree ------------------------------------------------------------

#: Part of the outputs cache path (``outputs-<scale>-<OUTPUTS_VERSION>``): bump when a recipe
#: below changes.
OUTPUTS_VERSION = "v1"
SCALES = ("ci", "small", "large")


def _exp(
    name: str,
    encoder: str,
    decoder: str,
    channels: int,
    optim: str,
    sched: str,
    *,
    width_mult: float = 1.0,
    impl: str = "timm",
    epochs: int = 3,
    hydra: bool = False,
    sidecar: str | None = None,
    image_size: int = 64,
) -> dict[str, Any]:
    return {
        "name": name,
        "encoder": encoder,
        "decoder": decoder,
        "channels": channels,
        "optim": optim,
        "sched": sched,
        "width_mult": width_mult,
        "impl": impl,
        "epochs": epochs,
        "hydra": hydra,
        "sidecar": sidecar,
        "image_size": image_size,
    }


#: The experiments of each scale. ``impl="standin"`` forces the plain torch.nn encoders (the
#: ci scale never needs timm); ``impl="timm"`` uses timm when importable, else the stand-ins.
#: Sizes are those of the stand-ins/timm at width 1.0 (float32; x3 with Adam/AdamW, x2 with
#: SGD momentum); every experiment keeps 2 best epochs + last.ckpt (2 files with epochs=1).
EXPERIMENTS: dict[str, list[dict[str, Any]]] = {
    "ci": [
        _exp(
            "2026-11-02_dbnet-mbv3s-fpn",
            "mobilenetv3_small_100",
            "fpn",
            32,
            "adam",
            "cosine",
            width_mult=0.5,
            impl="standin",
            epochs=2,
            hydra=True,
            sidecar="yaml",
            image_size=32,
        ),
        _exp(
            "2026-11-03_dbnet-r18-pan",
            "resnet18",
            "pan",
            32,
            "adamw",
            "onecycle",
            width_mult=0.25,
            impl="standin",
            epochs=2,
            sidecar="json",
            image_size=32,
        ),
        # the ~100 MB checkpoint of ci_check.py: 12.9M params, SGD momentum
        _exp(
            "2026-11-05_dbnet-r18-fpn-sgd",
            "resnet18",
            "fpn",
            256,
            "sgd",
            "poly",
            impl="standin",
            epochs=1,
            hydra=True,
            sidecar="json",
            image_size=32,
        ),
    ],
    "small": [
        _exp(
            "2026-10-12_dbnet-mbv3s-fpn",
            "mobilenetv3_small_100",
            "fpn",
            64,
            "adam",
            "cosine",
            hydra=True,
            sidecar="yaml",
        ),
        _exp(
            "2026-10-14_dbnet-mbv3s-unet",
            "mobilenetv3_small_100",
            "unet",
            32,
            "adamw",
            "onecycle",
            hydra=True,
            sidecar="json",
        ),
        _exp(
            "2026-10-20_dbnet-mbv3l-pan",
            "mobilenetv3_large_100",
            "pan",
            64,
            "sgd",
            "multistep",
            epochs=1,
            sidecar="json",
        ),
        _exp(
            "2026-10-21_dbnet-r18-fpn-tiny",
            "resnet18",
            "fpn",
            64,
            "adam",
            "poly",
            width_mult=0.25,
            impl="standin",
        ),
    ],
    "large": [
        _exp(
            "2026-09-01_dbnet-r50-fpn1024",
            "resnet50",
            "fpn",
            1024,
            "adam",
            "cosine",
            hydra=True,
            sidecar="yaml",
        ),
        _exp(
            "2026-09-04_dbnet-r50-pan640",
            "resnet50",
            "pan",
            640,
            "adamw",
            "onecycle",
            hydra=True,
            sidecar="json",
        ),
        _exp(
            "2026-09-09_dbnet-r34-unet192",
            "resnet34",
            "unet",
            192,
            "sgd",
            "multistep",
            sidecar="yaml",
        ),
        _exp("2026-09-15_dbnet-r18-fpn1024", "resnet18", "fpn", 1024, "adam", "poly", hydra=True),
        _exp(
            "2026-09-22_dbnet-mbv3l-pan896",
            "mobilenetv3_large_100",
            "pan",
            896,
            "sgd",
            "cosine",
            sidecar="json",
        ),
        _exp(
            "2026-10-01_dbnet-r34-fpn768",
            "resnet34",
            "fpn",
            768,
            "adamw",
            "cosine",
            hydra=True,
            sidecar="json",
        ),
        _exp(
            "2026-10-03_dbnet-r50-unet256",
            "resnet50",
            "unet",
            256,
            "adam",
            "multistep",
            epochs=1,
            sidecar="yaml",
        ),
    ],
}

OPTIMIZERS = {
    "adam": {"name": "adam", "lr": 1e-3, "weight_decay": 0.0},
    "adamw": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05},
    "sgd": {"name": "sgd", "lr": 7e-3, "momentum": 0.9, "weight_decay": 1e-4},
}
SCHEDULERS = {
    "cosine": {"name": "cosine", "t_max": 100, "interval": "step"},
    "onecycle": {"name": "onecycle", "total_steps": 100, "interval": "step"},
    "poly": {"name": "poly", "total_iters": 100, "power": 0.9, "interval": "step"},
    "multistep": {"name": "multistep", "milestones": [2, 4], "gamma": 0.1, "interval": "epoch"},
}


def outputs_dir(scale: str) -> pathlib.Path:
    return make_big_checkpoint.cache_dir() / f"outputs-{scale}-{OUTPUTS_VERSION}"


def outputs_manifest_path(scale: str) -> pathlib.Path:
    return outputs_dir(scale) / "manifest.json"


def _base_config(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "experiment": spec["name"],
        "seed": 1234,
        "model": {
            "name": "dbnet",
            "encoder": {
                "name": spec["encoder"],
                "impl": spec["impl"],
                "width_mult": spec["width_mult"],
                "pretrained": False,
            },
            "decoder": {"name": spec["decoder"], "channels": spec["channels"]},
            "head": {"name": "db", "k": 50},
        },
        "optimizer": dict(OPTIMIZERS[spec["optim"]]),
        "scheduler": dict(SCHEDULERS[spec["sched"]]),
        "data": {
            "image_size": spec["image_size"],
            "batch_size": 2,
            "train_batches": 2,
            "val_batches": 1,
            "augment": {"flip": True, "rotate": 10},
        },
        "trainer": {
            "max_epochs": spec["epochs"],
            "accelerator": "cpu",
            "limit_train_batches": 2,
            "limit_val_batches": 1,
        },
        "callbacks": {
            "checkpoint": {
                "monitor": "val/hmean",
                "mode": "max",
                "save_top_k": 2,
                "save_last": True,
            },
            "early_stopping": {"monitor": "val/hmean", "mode": "max", "patience": 5},
        },
    }


def _overrides(spec: dict[str, Any]) -> list[str]:
    return [
        f"model.encoder.name={spec['encoder']}",
        f"model.decoder.name={spec['decoder']}",
        f"model.decoder.channels={spec['channels']}",
        f"optimizer={spec['optim']}",
        f"scheduler={spec['sched']}",
        f"trainer.max_epochs={spec['epochs']}",
        f"experiment={spec['name']}",
    ]


def _hydra_config(spec: dict[str, Any], exp_dir: pathlib.Path) -> tuple[Any, str]:
    """Compose the experiment's config with Hydra (written to ``.hydra/``, as a Hydra run
    does); without hydra-core, write the same files with OmegaConf (or PyYAML)."""
    import tempfile

    base = _base_config(spec)
    hdir = exp_dir / ".hydra"
    hdir.mkdir(parents=True, exist_ok=True)
    overrides = _overrides(spec)
    try:
        from hydra import compose, initialize_config_dir
        from omegaconf import OmegaConf, open_dict
    except ImportError:
        import yaml

        try:
            from omegaconf import OmegaConf

            OmegaConf.save(OmegaConf.create(base), hdir / "config.yaml")
            cfg: Any = OmegaConf.create(base)
        except ImportError:
            (hdir / "config.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
            cfg = base
        (hdir / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        (hdir / "hydra.yaml").write_text(
            yaml.safe_dump(
                {
                    "hydra": {
                        "run": {"dir": f"outputs/{spec['name']}"},
                        "job": {"name": "train", "override_dirname": ",".join(overrides)},
                        "runtime": {"version": "unknown"},
                        "note": "written without hydra-core",
                    }
                },
                sort_keys=False,
            )
        )
        return cfg, "omegaconf/yaml (hydra-core not importable)"
    import yaml

    with tempfile.TemporaryDirectory(prefix="ckptpeek-hydra-conf-") as conf:
        c = pathlib.Path(conf)
        top = {k: v for k, v in base.items() if k not in ("optimizer", "scheduler")}
        top["defaults"] = ["_self_", {"optimizer": "adam"}, {"scheduler": "cosine"}]
        (c / "train.yaml").write_text(yaml.safe_dump(top, sort_keys=False))
        for group, table in (("optimizer", OPTIMIZERS), ("scheduler", SCHEDULERS)):
            (c / group).mkdir()
            for k, v in table.items():
                (c / group / f"{k}.yaml").write_text(yaml.safe_dump(v, sort_keys=False))
        with initialize_config_dir(config_dir=str(c), version_base="1.3", job_name="train"):
            cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    hydra_node = OmegaConf.create({"hydra": OmegaConf.to_container(cfg.hydra, resolve=False)})
    hydra_node.hydra.run.dir = f"outputs/{spec['name']}"  # as a launched run would record
    OmegaConf.save(hydra_node, hdir / "hydra.yaml")
    with open_dict(cfg):
        del cfg["hydra"]
    OmegaConf.save(cfg, hdir / "config.yaml")
    OmegaConf.save(OmegaConf.create(overrides), hdir / "overrides.yaml")
    return cfg, "hydra compose"


def _make_experiment(spec: dict[str, Any], exp_dir: pathlib.Path, timm: Any) -> dict[str, Any]:
    import datetime

    import dbnet_models
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    t0 = time.perf_counter()
    exp_dir.mkdir(parents=True, exist_ok=True)
    how = None
    if spec["hydra"]:
        cfg, how = _hydra_config(spec, exp_dir)
    else:
        cfg = _base_config(spec)
    L.seed_everything(1234, verbose=False)
    use_timm = timm if spec["impl"] == "timm" else None
    DBNet = dbnet_models.build(torch, nn, L, use_timm)
    # Hydra users pass DictConfig nodes (they end up pickled in hyper_parameters)
    model = DBNet(
        model=cfg["model"],
        optimizer=cfg["optimizer"],
        data=cfg["data"],
        scheduler=cfg["scheduler"],
        experiment=spec["name"],
    )
    n_params = sum(p.numel() for p in model.parameters())
    s = spec["image_size"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, s, s, generator=g)
    gt = (torch.rand(4, 1, s, s, generator=g) > 0.7).float()
    gt_t = torch.rand(4, 1, s, s, generator=g) * 0.4 + 0.3
    dl = DataLoader(TensorDataset(x, gt, gt_t), batch_size=2)

    history: dict[int, dict[str, float]] = {}

    class Record(Callback):
        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            history[trainer.current_epoch] = {
                k: float(v) for k, v in trainer.callback_metrics.items()
            }
            history[trainer.current_epoch]["global_step"] = trainer.global_step

    ckpt_dir = exp_dir / "checkpoints"
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=spec["epochs"],
        limit_train_batches=2,
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=exp_dir,
        callbacks=[
            Record(),
            ModelCheckpoint(
                dirpath=ckpt_dir,
                filename="{epoch}-{step}",
                monitor="val/hmean",
                mode="max",
                save_top_k=2,
                save_last=True,
            ),
            EarlyStopping(monitor="val/hmean", mode="max", patience=5),
        ],
    )
    trainer.fit(model, dl, dl)

    files = []
    for f in sorted(ckpt_dir.glob("*.ckpt")):
        epoch = (
            int(f.stem.split("-")[0].split("=")[1]) if f.stem.startswith("epoch=") else max(history)
        )
        h = history.get(epoch, {})
        if spec["sidecar"]:
            meta = {
                "epoch": epoch,
                "global_step": int(h.get("global_step", 0)),
                "val_loss": round(h.get("val/loss", float("nan")), 6),
                "hmean": round(h.get("val/hmean", 0.0), 6),
                "precision": round(h.get("val/precision", 0.0), 6),
                "recall": round(h.get("val/recall", 0.0), 6),
                "encoder": spec["encoder"],
                "decoder": spec["decoder"],
                "head": "db",
                "created_at": datetime.datetime.now(datetime.timezone.utc)
                .replace(microsecond=0)
                .isoformat(),
            }
            side = f.with_name(f"{f.stem}.metadata.{spec['sidecar']}")
            if spec["sidecar"] == "json":
                side.write_text(json.dumps(meta, indent=2) + "\n")
            else:
                import yaml

                side.write_text(yaml.safe_dump(meta, sort_keys=False))
        info = {
            "experiment": spec["name"],
            "file": f.name,
            "path": str(f),
            "file_bytes": f.stat().st_size,
            "epoch": epoch,
        }
        info.update(_pickle_info(f))
        files.append(info)
    return {
        "spec": spec,
        "params": n_params,
        "encoder_impl": "timm" if use_timm is not None else "torch.nn stand-in",
        "hydra": how,
        "files": files,
        "gen_seconds": round(time.perf_counter() - t0, 2),
    }


def load_outputs_manifest(scale: str) -> dict[str, Any] | None:
    try:
        m = json.loads(outputs_manifest_path(scale).read_text())
    except (OSError, ValueError):
        return None
    if m.get("version") != OUTPUTS_VERSION or m.get("scale") != scale:
        return None
    if not all(pathlib.Path(f["path"]).exists() for e in m["experiments"] for f in e["files"]):
        return None
    return m


def outputs_checkpoints(m: dict[str, Any]) -> list[dict[str, Any]]:
    """All checkpoint entries of an outputs manifest, plus the synthetic extras."""
    return [f for e in m["experiments"] for f in e["files"]] + list(m.get("extra", []))


def ensure_outputs(
    scale: str = "ci", force: bool = False, gen_python: str | None = None
) -> dict[str, Any]:
    """The manifest of the ``outputs/`` tree of ``scale``; generated if missing.

    ``gen_python`` (default ``$CKPTPEEK_BENCH_GEN_PYTHON``) generates it in another
    interpreter, e.g. a venv with timm (the dev venv's torch may not take torchvision)."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; one of {SCALES}")
    if not force:
        m = load_outputs_manifest(scale)
        if m is not None:
            return m
    gen_python = gen_python or os.environ.get("CKPTPEEK_BENCH_GEN_PYTHON")
    # abspath, not realpath: a venv's python is a symlink to the same base interpreter
    if gen_python and os.path.abspath(gen_python) != os.path.abspath(sys.executable):
        _log(f"outputs-{scale}: generating with another interpreter ({gen_python})")
        cmd = [gen_python, str(HERE / "corpus.py"), "--scale", scale, "--outputs-only"]
        subprocess_run(cmd + (["--force"] if force else []))
        m = load_outputs_manifest(scale)
        if m is None:
            raise RuntimeError(f"{gen_python} did not produce the outputs-{scale} manifest")
        return m

    t_all = time.perf_counter()
    root = outputs_dir(scale)
    if root.exists():
        shutil.rmtree(root)  # incomplete or forced: start clean
    out = root / "outputs"
    out.mkdir(parents=True)
    warnings.filterwarnings("ignore")
    _log(f"outputs-{scale}: generating into {root} (importing torch + lightning) ...")
    import lightning  # noqa: F401
    import torch

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    timm = None
    if any(e["impl"] == "timm" for e in EXPERIMENTS[scale]):
        try:
            import timm as timm_mod

            timm = timm_mod
            _log(f"timm {timm.__version__} found: timm encoders (pretrained=False)")
        except Exception as exc:  # ImportError, or torchvision failing beside this torch
            _log(
                f"timm not importable ({type(exc).__name__}: {exc}); FALLING BACK to the "
                "plain torch.nn stand-in encoders (same layouts, timm-like names)"
            )
    experiments = []
    specs = EXPERIMENTS[scale]
    for i, spec in enumerate(specs, 1):
        _log(
            f"[{i}/{len(specs)}] {spec['name']}: {spec['encoder']} + {spec['decoder']}"
            f"({spec['channels']}) + db head, {spec['optim']}/{spec['sched']}, "
            f"{spec['epochs']} epoch(s) ..."
        )
        e = _make_experiment(spec, out / spec["name"], timm)
        experiments.append(e)
        total = sum(f["file_bytes"] for f in e["files"])
        _log(
            f"      {e['encoder_impl']}, {e['params'] / 1e6:.1f}M params, {len(e['files'])} "
            f"checkpoints, {total / 1e6:.1f} MB, {e['gen_seconds']:.1f}s"
        )
    extra = []
    if scale == "ci":
        # the ~10k-tensor pickle of ci_check.py's native-vs-pure check
        syn = root / "synthetic"
        syn.mkdir()
        p = syn / "lightning-10k.ckpt"
        t0 = time.perf_counter()
        _make_lightning(10_000, p)
        info = {
            "experiment": None,
            "name": "lightning-10k",
            "file": p.name,
            "path": str(p),
            "file_bytes": p.stat().st_size,
        }
        info.update(_pickle_info(p))
        extra.append(info)
        _log(
            f"synthetic lightning-10k: {info['storages']} storages, data.pkl "
            f"{info['data_pkl_bytes'] / 1e3:.0f} kB, {time.perf_counter() - t0:.1f}s"
        )
    m = {
        "version": OUTPUTS_VERSION,
        "scale": scale,
        "root": str(root),
        "torch": torch.__version__,
        "timm": getattr(timm, "__version__", None),
        "experiments": experiments,
        "extra": extra,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "gen_seconds": round(time.perf_counter() - t_all, 1),
    }
    ckpts = outputs_checkpoints(m)
    m["total_bytes"] = sum(f["file_bytes"] for f in ckpts)
    tmp = outputs_manifest_path(scale).with_suffix(".tmp")
    tmp.write_text(json.dumps(m, indent=2))
    os.replace(tmp, outputs_manifest_path(scale))
    _log(
        f"outputs-{scale}: {len(ckpts)} checkpoints, {m['total_bytes'] / 1e6:.1f} MB in "
        f"{m['gen_seconds']:.1f}s"
    )
    return m


def subprocess_run(cmd: list[str]) -> None:
    import subprocess

    rc = subprocess.run(cmd).returncode
    if rc:
        raise RuntimeError(f"{cmd} failed with exit code {rc}")


def print_outputs(m: dict[str, Any]) -> None:
    root = pathlib.Path(m["root"])
    print(
        f"outputs-{m['scale']} ({m['version']}; torch {m['torch']}, timm {m['timm']}): "
        f"{m['total_bytes'] / 1e6:.1f} MB"
    )
    for e in m["experiments"]:
        print(
            f"  {e['spec']['name']}: {e['encoder_impl']} {e['spec']['encoder']} + "
            f"{e['spec']['decoder']}({e['spec']['channels']}), {e['params'] / 1e6:.1f}M params, "
            f"{e['spec']['optim']}, hydra: {e['hydra'] or 'no'}, sidecars: "
            f"{e['spec']['sidecar'] or 'no'}"
        )
        for f in e["files"]:
            print(
                f"    {f['file']:<28} {f['file_bytes'] / 1e6:9.1f} MB  {f['storages']:5} "
                f"storages  data.pkl {f['data_pkl_bytes'] / 1e3:7.1f} kB"
            )
    for f in m.get("extra", []):
        print(
            f"  {pathlib.Path(f['path']).relative_to(root)}: {f['file_bytes'] / 1e6:.1f} MB, "
            f"{f['storages']} storages"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="regenerate the small files")
    ap.add_argument(
        "--scale",
        choices=SCALES,
        help="also (or with --outputs-only, only) generate/print the outputs/ tree of this scale",
    )
    ap.add_argument("--outputs-only", action="store_true")
    args = ap.parse_args()
    if args.scale:
        print_outputs(ensure_outputs(args.scale, force=args.force))
        if args.outputs_only:
            return
    elif args.outputs_only:
        ap.error("--outputs-only needs --scale")
    m = ensure(force=args.force)
    for f in m["files"]:
        print(
            f"{f['name']:>18}  {f['tensors']:>7} tensors  {f['file_bytes'] / 1e6:9.2f} MB  "
            f"data.pkl {f['data_pkl_bytes'] / 1e3:9.1f} kB  {f['path']}"
        )


if __name__ == "__main__":
    main()
