"""Write a realistic, large Lightning checkpoint for the header-read benchmarks.

The file is produced by a real ``lightning.Trainer`` run (CPU, two training steps on
random data) so that everything Lightning puts into a checkpoint is there: weights,
AdamW state (two moment buffers per parameter), a OneCycleLR scheduler, ModelCheckpoint
and EarlyStopping callback state, loop state and nested hyperparameters.

The model is a conv encoder/decoder (ResNet-like basic blocks, plain ``torch.nn``) of
~27M float32 parameters (~109 MB), so the checkpoint is ~330 MB and holds several
hundred tensors.

The file goes to a cache directory outside the repository and is reused if present:
``$CKPTPEEK_BENCH_CACHE`` (default ``~/.cache/ckptpeek-bench``).

    python benchmarks/make_big_checkpoint.py          # prints the path
    python benchmarks/make_big_checkpoint.py --force  # regenerate
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import sys
import time

# Bump when the recipe changes so stale cached files are not reused.
RECIPE = "v1"
FILENAME = f"lightning-encdec-{RECIPE}.ckpt"


def cache_dir() -> pathlib.Path:
    return pathlib.Path(
        os.environ.get("CKPTPEEK_BENCH_CACHE", "~/.cache/ckptpeek-bench")
    ).expanduser()


def checkpoint_path() -> pathlib.Path:
    return cache_dir() / FILENAME


CONFIG = {
    "model": {
        "name": "resnet-encdec",
        "encoder": {"widths": [64, 128, 256, 512], "blocks": [2, 3, 4, 3], "stem": 64},
        "decoder": {"widths": [512, 256, 128, 64], "blocks": [1, 2, 2, 2]},
        "in_channels": 3,
        "out_channels": 1,
    },
    "optim": {
        "name": "adamw",
        "lr": 1e-3,
        "weight_decay": 0.05,
        "betas": [0.9, 0.999],
        "scheduler": {"name": "onecycle", "pct_start": 0.3, "total_steps": 100},
    },
    "data": {"image_size": 32, "batch_size": 2, "augment": {"flip": True, "jitter": 0.1}},
    "seed": 1234,
    "tags": ["benchmark", "ckptpeek"],
}


def _build(torch, nn, L):  # imports passed in so `--help` and path queries stay fast
    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.act = nn.ReLU(inplace=True)
            self.shortcut = nn.Identity()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x):
            y = self.act(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return self.act(y + self.shortcut(x))

    class EncDec(L.LightningModule):
        def __init__(self, config: dict) -> None:
            super().__init__()
            self.save_hyperparameters()
            m = config["model"]
            enc, dec = m["encoder"], m["decoder"]
            self.stem = nn.Sequential(
                nn.Conv2d(m["in_channels"], enc["stem"], 3, 1, 1, bias=False),
                nn.BatchNorm2d(enc["stem"]),
                nn.ReLU(inplace=True),
            )
            stages, cin = [], enc["stem"]
            for i, (w, n) in enumerate(zip(enc["widths"], enc["blocks"])):
                blocks = [BasicBlock(cin, w, 1 if i == 0 else 2)]
                blocks += [BasicBlock(w, w) for _ in range(n - 1)]
                stages.append(nn.Sequential(*blocks))
                cin = w
            self.encoder = nn.ModuleList(stages)
            ups = []
            for i, (w, n) in enumerate(zip(dec["widths"], dec["blocks"])):
                layers = [] if i == 0 else [nn.Upsample(scale_factor=2, mode="nearest")]
                layers += [BasicBlock(cin, w)] + [BasicBlock(w, w) for _ in range(n - 1)]
                ups.append(nn.Sequential(*layers))
                cin = w
            self.decoder = nn.ModuleList(ups)
            self.head = nn.Conv2d(cin, m["out_channels"], 1)

        def forward(self, x):
            x = self.stem(x)
            for s in self.encoder:
                x = s(x)
            for s in self.decoder:
                x = s(x)
            return self.head(x)

        def _loss(self, batch):
            x, y = batch
            return nn.functional.binary_cross_entropy_with_logits(self(x), y)

        def training_step(self, batch, batch_idx):
            loss = self._loss(batch)
            self.log("train/loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            p = (self(x) > 0).float()
            tp = (p * y).sum()
            prec, rec = tp / (p.sum() + 1e-6), tp / (y.sum() + 1e-6)
            self.log("val/hmean", 2 * prec * rec / (prec + rec + 1e-6))
            self.log("val/loss", self._loss(batch))

        def configure_optimizers(self):
            o = self.hparams.config["optim"]
            opt = torch.optim.AdamW(
                self.parameters(),
                lr=o["lr"],
                betas=tuple(o["betas"]),
                weight_decay=o["weight_decay"],
            )
            s = o["scheduler"]
            sched = torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=o["lr"], total_steps=s["total_steps"], pct_start=s["pct_start"]
            )
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return EncDec


def make(force: bool = False) -> pathlib.Path:
    out = checkpoint_path()
    if out.exists() and not force:
        return out
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    L.seed_everything(CONFIG["seed"], verbose=False)
    model = _build(torch, nn, L)(CONFIG)
    n_params = sum(p.numel() for p in model.parameters())
    size = CONFIG["data"]["image_size"]
    x = torch.randn(8, 3, size, size)
    y = (torch.rand(8, 1, size, size) > 0.5).float()
    ds = TensorDataset(x, y)
    bs = CONFIG["data"]["batch_size"]
    mc_dir = out.parent / f"_modelcheckpoint-{RECIPE}"
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
    trainer.fit(model, DataLoader(ds, batch_size=bs), DataLoader(ds, batch_size=bs))
    tmp = out.with_suffix(".ckpt.tmp")
    trainer.save_checkpoint(tmp)
    os.replace(tmp, out)
    shutil.rmtree(mc_dir, ignore_errors=True)  # only the full checkpoint is benchmarked
    print(
        f"wrote {out}: {out.stat().st_size / 1e6:.1f} MB, {n_params / 1e6:.1f}M params, "
        f"{time.perf_counter() - t0:.1f}s",
        file=sys.stderr,
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="regenerate even if cached")
    args = ap.parse_args()
    print(make(force=args.force))


if __name__ == "__main__":
    main()
