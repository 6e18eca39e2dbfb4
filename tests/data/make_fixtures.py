"""Write the tiny committed fixtures in tests/data/ and their expected values.

Run from the repository root with torch and lightning installed:

    python tests/data/make_fixtures.py

Every ``.pt``/``.ckpt`` here is written by the real ``torch.save`` (the Lightning one by
a real ``lightning.Trainer`` run, then re-saved with its run directory rewritten to a
relative path so no machine path is committed). Beside each, ``<name>.expected.json``
records what ``torch.load`` returns: every tensor's key path, dtype, shape, stride,
storage offset, requires_grad, Parameter-ness and exact bytes (hex), and the object
graph with tensors replaced by markers. ``tests/test_fixtures.py`` checks ckptpeek
against these files without needing torch.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import pathlib
import tempfile
import warnings

HERE = pathlib.Path(__file__).resolve().parent


def _plain_state_dict():
    import torch

    g = torch.Generator().manual_seed(0)
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    sd = {
        "linear.weight": torch.nn.Parameter(torch.randn(3, 4, generator=g)),
        "linear.bias": torch.randn(3, generator=g),
        "view.slice": base[1:3, 2:5],  # storage offset 8, stride (6, 1)
        "view.transposed": base.t(),  # stride (1, 6)
        "view.step": base[:, ::2],  # stride (6, 2)
        "view.base": base,  # shares storage with the three views
        "expanded": torch.tensor([1.0, 2.0]).expand(3, 2),  # stride (0, 1)
        "bf16": torch.linspace(-2, 2, 5).to(torch.bfloat16),
        "f16": torch.linspace(-2, 2, 5).to(torch.float16),
        "f64": torch.tensor([1e-300, -0.0, float("inf")], dtype=torch.float64),
        "f8": torch.tensor([0.5, -1.0, 448.0]).to(torch.float8_e4m3fn),
        "i64": torch.tensor([-(2**62), 0, 2**62]),
        "u8": torch.arange(5, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "c64": torch.tensor([1 + 2j, -3j], dtype=torch.complex64),
        "scalar": torch.tensor(0.875),
        "empty": torch.zeros(3, 0),
        "grad": torch.ones(2, requires_grad=True),
        "meta": {
            "epoch": 7,
            "note": "ckptpeek fixture",
            "sizes": torch.Size([2, 3]),
            "device": torch.device("cuda", 1),
            "dtype": torch.float16,
        },
    }
    return sd


def _lightning_checkpoint(out: pathlib.Path) -> None:
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from torch import nn

    class TinyRegressor(L.LightningModule):
        def __init__(self, lr: float = 0.01, encoder: dict | None = None) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))

        def training_step(self, batch, _):
            x, y = batch
            return nn.functional.mse_loss(self.net(x), y)

        def validation_step(self, batch, _):
            x, y = batch
            loss = nn.functional.mse_loss(self.net(x), y)
            self.log("val_loss", loss)
            self.log("val/hmean", 1.0 / (1.0 + loss))

        def configure_optimizers(self):
            opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)
            return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)}

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt_dir = pathlib.Path(tmp) / "checkpoints"
        trainer = L.Trainer(
            max_epochs=2,
            accelerator="cpu",
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[
                ModelCheckpoint(
                    dirpath=ckpt_dir,
                    monitor="val/hmean",
                    mode="max",
                    save_top_k=2,
                    save_last=True,
                    filename="{epoch}-{step}",
                ),
                EarlyStopping("val_loss", patience=3),
            ],
        )
        trainer.fit(
            TinyRegressor(encoder={"name": "resnet18", "stages": [2, 2, 2, 2]}), loader, loader
        )
        ckpt = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=False)
    ckpt = _relative_paths(ckpt, str(pathlib.Path(tmp)), "outputs/tiny")
    torch.save(ckpt, out)


def _relative_paths(obj, prefix: str, replacement: str):
    if isinstance(obj, str):
        return obj.replace(prefix, replacement)
    if isinstance(obj, dict):
        return type(obj)(
            (_relative_paths(k, prefix, replacement), _relative_paths(v, prefix, replacement))
            for k, v in obj.items()
        )
    if isinstance(obj, list):
        return [_relative_paths(v, prefix, replacement) for v in obj]
    return obj


def expected(obj) -> dict:
    """What torch.load returned, as JSON: tensors listed, the graph with markers."""
    import torch

    tensors = []

    def plain(o, path):
        if isinstance(o, torch.Tensor):
            data = o.detach()
            raw = (
                data.contiguous().view(torch.uint8)
                if data.dim()
                else data.reshape(1).view(torch.uint8)
            )
            tensors.append(
                {
                    "path": list(path),
                    "dtype": str(o.dtype),
                    "shape": list(o.shape),
                    "stride": list(o.stride()),
                    "storage_offset": o.storage_offset(),
                    "requires_grad": o.requires_grad,
                    "is_parameter": isinstance(o, torch.nn.Parameter),
                    "storage_id": o.untyped_storage().data_ptr(),
                    "hex": raw.numpy().tobytes().hex(),
                }
            )
            return {"__tensor__": len(tensors) - 1}
        if isinstance(o, torch.Size):
            return {"__size__": list(o)}
        if isinstance(o, dict):
            return {
                "__dict__": [[plain(k, path), plain(v, path + [k])] for k, v in o.items()],
                "__type__": type(o).__name__,
            }
        if isinstance(o, (list, tuple)):
            return {
                "__seq__": [plain(v, path + [i]) for i, v in enumerate(o)],
                "__type__": "tuple" if isinstance(o, tuple) else "list",
            }
        if isinstance(o, (torch.dtype, torch.device)):
            return {"__str__": str(o)}
        if isinstance(o, float):
            return {"__float__": o.hex()}
        if o is None or isinstance(o, (bool, int, str)):
            return o
        raise TypeError(f"no JSON form for {type(o)} at {path}")

    graph = plain(obj, [])
    # storage identity as small ints (data_ptr values are process-specific)
    ids = {}
    for t in tensors:
        t["storage_id"] = ids.setdefault(t["storage_id"], len(ids))
    return {"graph": graph, "tensors": tensors}


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=pathlib.Path, default=HERE)
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("PYTHONHASHSEED", "0")
    args.out.mkdir(parents=True, exist_ok=True)

    files = {}
    sd = _plain_state_dict()
    torch.save(sd, args.out / "state_dict.pt")
    files["state_dict.pt"] = sd
    buf = io.BytesIO()  # a file object: torch names the archive "archive/"
    torch.save(
        {"epoch": 3, "w": sd["view.slice"], "nested": [(1, 2.5), {"k": None}]},
        buf,
        pickle_protocol=2,
    )
    (args.out / "epoch=3-step=12.v2.pt").write_bytes(buf.getvalue())
    files["epoch=3-step=12.v2.pt"] = None
    _lightning_checkpoint(args.out / "lightning_tiny.ckpt")
    files["lightning_tiny.ckpt"] = None
    for name in files:
        obj = torch.load(args.out / name, map_location="cpu", weights_only=False)
        (args.out / f"{name}.expected.json").write_text(json.dumps(expected(obj), indent=1) + "\n")
        print(f"wrote {name} ({(args.out / name).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
