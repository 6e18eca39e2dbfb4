"""Build a corpus of small, real PyTorch / Lightning checkpoints for differential tests.

Every file in the corpus is written by the real ``torch.save`` (or by a real
``lightning.Trainer`` run), so the tests in ``test_against_torch.py`` can compare
what ``ckptpeek`` reads against what ``torch.load`` reads from the very same bytes.

This module must stay importable without torch: torch, lightning and omegaconf
are imported lazily inside the builder functions.

Usage::

    from torch_corpus import build_corpus, CORPUS_NAMES, LIGHTNING_NAMES
    paths = build_corpus(tmp_dir)      # {name: Path}, keys == CORPUS_NAMES

The corpus is deterministic: fixed seeds, fixed data, no wall-clock values in
the files we write ourselves (Lightning checkpoints contain the absolute
``dirpath`` of the run, which depends on ``dirpath`` only).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import logging
import shutil
import warnings
from pathlib import Path

# Plain ``torch.save`` entries.
PLAIN_NAMES = [
    "sd_sequential",
    "sd_convnet",
    "nested_containers",
    "dtypes",
    "dtypes_exotic",
    "views",
    "conj_neg_views",
    "shared_storage",
    "scalars_and_empty",
    "requires_grad",
    "tensor_attrs",
    "many_and_big",
    "protocol_2",
    "protocol_3",
    "protocol_4",
    "protocol_5",
    "fileobj_archive_prefix",
    "epoch=3-step=12",
    "torch_values",
    "omegaconf_direct",
    "omegaconf_interpolation",
    "namespace_direct",
    "python_extras",
    "builtin_type_values",
]

# Checkpoints written by ``lightning.Trainer`` (through ModelCheckpoint).
LIGHTNING_NAMES = [
    "lit_adam_steplr_last",
    "lit_adam_steplr_topk",
    "lit_adamw_onecycle_omegaconf",
    "lit_sgd_cosine_namespace",
]

CORPUS_NAMES = PLAIN_NAMES + LIGHTNING_NAMES

#: ``torch.dtype`` attribute names stored by the "dtypes" entry when available.
CORE_DTYPES = [
    "float64",
    "float32",
    "float16",
    "bfloat16",
    "float8_e4m3fn",
    "float8_e5m2",
    "float8_e4m3fnuz",
    "float8_e5m2fnuz",
    "complex64",
    "complex128",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
]

#: Rarer dtypes, kept in their own entry so a gap there does not hide the rest.
EXOTIC_DTYPES = ["float8_e8m0fnu", "complex32"]

_FLOAT_SPECIALS = [
    0.0,
    -0.0,
    1.0,
    -1.5,
    0.333,
    240.0,
    1e-3,
    float("inf"),
    float("-inf"),
    float("nan"),
]


# --------------------------------------------------------------------------- helpers


def _save(obj, path: Path, **kwargs) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path, **kwargs)
    return path


def _values_for(dtype):
    """Return a small 1-D tensor of "interesting" values for ``dtype``."""
    import torch

    if dtype == torch.bool:
        return torch.tensor([True, False, True, True, False])
    if dtype.is_complex:
        real = torch.tensor([1.0, -0.0, float("inf"), 0.5, float("nan"), -2.25])
        imag = torch.tensor([2.0, 0.0, -1.0, float("nan"), 3.0, -0.0])
        c = torch.complex(real, imag)
        if dtype == torch.complex128:
            return c.to(torch.complex128)
        if dtype == torch.complex64:
            return c
        return c.to(dtype)  # complex32
    if dtype.is_floating_point:
        vals = list(_FLOAT_SPECIALS)
        if dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
            finfo = torch.finfo(dtype)
            vals += [
                finfo.max,
                finfo.min,
                finfo.tiny,
                finfo.smallest_normal / 4,
            ]  # incl. a subnormal
        if dtype == torch.float64:
            vals += [0.1, 1 / 3, 2.0**-1074]
        return torch.tensor(vals, dtype=torch.float64).to(dtype)
    # integers: min, max, and a few ordinary values
    info = torch.iinfo(dtype)
    if dtype == torch.uint64:
        # torch.iinfo(uint64).max overflows some constructors; build from int64 bits.
        return torch.tensor([0, 1, 2**63 - 1, 12345], dtype=torch.int64).to(torch.uint64)
    return torch.tensor([info.min, info.max, 0, 1, 7, info.max // 3], dtype=torch.int64).to(dtype)


# --------------------------------------------------------------------------- plain torch.save entries


def _build_plain(out: Path) -> dict[str, Path]:
    import torch
    from torch import nn

    paths: dict[str, Path] = {}
    torch.manual_seed(1234)

    # -- plain state dicts -------------------------------------------------------
    seq = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    paths["sd_sequential"] = _save(seq.state_dict(), out / "sd_sequential.pt")

    conv = nn.Sequential(
        nn.Conv2d(3, 4, kernel_size=3, padding=1),
        nn.BatchNorm2d(4),  # running_mean/var + int64 0-d num_batches_tracked
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 2),
    )
    conv.train()
    conv(torch.randn(2, 3, 4, 4))  # update BN running stats so they are not trivial
    paths["sd_convnet"] = _save(conv.state_dict(), out / "sd_convnet.pth")

    # -- nested python containers with tensors -----------------------------------
    a, b, c = torch.randn(2, 3), torch.arange(5), torch.ones(2, 2, dtype=torch.float64)
    nested = {
        "list": [a, b, (c, torch.zeros(1)), [], ()],
        "tuple": (b, [a, {"deep": c}]),
        "int_keys": {0: a, 1: {"x": b}, -7: "neg"},
        "none": None,
        "true": True,
        "false": False,
        "str": "héllo ✓",
        "bytes": b"\x00\x01\xffraw",
        "bigint": 2**70,
        "negbig": -(2**65) + 3,
        "small_ints": [0, -1, 255, 256, 65535, 65536, 2**31, -(2**31) - 1],
        "floats": [0.1, -0.0, float("inf"), float("-inf"), float("nan"), 1e308, 5e-324],
        "empty_dict": {},
    }
    memo_list = [1, "shared", 2.5]
    nested["memo_a"] = memo_list  # the same list object twice: a pickle memo hit
    nested["memo_b"] = {"again": memo_list, "tensor_twice": (a, a)}
    paths["nested_containers"] = _save(nested, out / "nested_containers.pt")

    # -- dtypes ------------------------------------------------------------------
    def dtype_payload(names):
        payload = {}
        for name in names:
            dt = getattr(torch, name, None)
            if dt is None:
                continue
            try:
                v = _values_for(dt)
            except (
                RuntimeError,
                TypeError,
                NotImplementedError,
            ):  # pragma: no cover - depends on torch build
                continue
            payload[name] = v
            # a 2-D contiguous version and a transposed (non-contiguous) view of it
            m = torch.cat([v, v[:1]]) if v.numel() % 2 else v
            m = m.reshape(2, -1)
            payload[name + "_2d"] = m
            payload[name + "_T"] = m.t()
        return payload

    paths["dtypes"] = _save(dtype_payload(CORE_DTYPES), out / "dtypes.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "ComplexHalf support is experimental"
        paths["dtypes_exotic"] = _save(dtype_payload(EXOTIC_DTYPES), out / "dtypes_exotic.pt")

    # -- views / strides / storage offsets ---------------------------------------
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    ibase = torch.arange(30, dtype=torch.int64).reshape(5, 6)
    views = {
        "row_slice": base[1:3],  # storage offset 6, contiguous
        "col": base[:, 2],  # offset 2, stride (6,)
        "transposed": base.t(),  # stride (1, 6)
        "step2": base.view(-1)[::2],  # stride (2,)
        "step_offset": base.view(-1)[3::5],  # offset 3, stride (5,)
        "narrow": base.narrow(1, 2, 3),  # offset 2, stride (6, 1)
        "int_block": ibase[1:4, 2:5],  # 2-D window, offset 8
        "int_T_slice": ibase.t()[1:, ::2],
        "expand": torch.tensor([1.0, 2.0, 3.0]).expand(4, 3),  # stride (0, 1)
        "expand_scalar": torch.tensor(7, dtype=torch.int16).expand(2, 3),  # stride (0, 0)
        "unsqueeze_expand": torch.arange(4.0).unsqueeze(1).expand(4, 2),
        "permute3d": torch.arange(24, dtype=torch.float64).reshape(2, 3, 4).permute(2, 0, 1),
        "diag_stride": base[:4, :4].diagonal(),  # stride (7,)
        "expand_offset": ibase[2, 3:4].expand(3, 4),  # offset 15, stride (0, 1)
        "empty_slice_offset": base.view(-1)[5:5],  # shape (0,), offset 5
    }
    paths["views"] = _save(views, out / "views.pt")

    # -- conjugate / negative views: torch records these bits as tensor metadata -
    z = torch.complex(torch.randn(2, 3), torch.randn(2, 3))
    z2 = torch.complex(torch.randn(2, 2), torch.randn(2, 2))
    conj_neg = {
        "conj": z.conj(),  # lazy conjugate view: storage holds z, metadata {"conj": True}
        "conj_T": z.conj().t(),
        "neg_imag": z2.conj().imag,  # float view of a complex storage with {"neg": True}
        "neg_view": torch._neg_view(torch.arange(4.0)),
    }
    paths["conj_neg_views"] = _save(conj_neg, out / "conj_neg_views.pt")

    # -- several tensors sharing one storage -------------------------------------
    x = torch.arange(12, dtype=torch.float32)
    y = torch.randn(3, 4)
    shared = {
        "x": x,
        "x_view": x[2:8].view(2, 3),  # same storage as "x"
        "x_again": x,  # the same tensor object twice
        "x_T": x.view(3, 4).t(),
        "y": y,
        "y_row": y[1],
        "nested": [y[2], {"deep": x[::3]}],
        "independent": x.clone(),  # same values, different storage
    }
    paths["shared_storage"] = _save(shared, out / "shared_storage.pt")

    # -- 0-d and empty tensors ---------------------------------------------------
    scalars = {
        "loss": torch.tensor(0.25),
        "acc_f64": torch.tensor(0.875, dtype=torch.float64),
        "step": torch.tensor(42),
        "flag": torch.tensor(True),
        "half": torch.tensor(-1.5, dtype=torch.float16),
        "bf16": torch.tensor(3.0, dtype=torch.bfloat16),
        "nan": torch.tensor(float("nan")),
        "neg_zero": torch.tensor(-0.0),
        "empty": torch.empty(0),
        "empty_3x0": torch.zeros(3, 0),
        "empty_0x4_int": torch.zeros(0, 4, dtype=torch.int32),
        "empty_bool": torch.zeros(0, dtype=torch.bool),
    }
    paths["scalars_and_empty"] = _save(scalars, out / "scalars_and_empty.pt")

    # -- requires_grad / nn.Parameter --------------------------------------------
    grad = {
        "param": nn.Parameter(torch.randn(3, 2)),
        "frozen_param": nn.Parameter(torch.randn(4), requires_grad=False),
        "leaf_requires_grad": torch.randn(2, 2, requires_grad=True),
        "plain": torch.randn(2),
        "param_f64": nn.Parameter(torch.randn(2, dtype=torch.float64)),
    }
    paths["requires_grad"] = _save(grad, out / "requires_grad.pt")

    # -- tensors carrying python attributes (saved via _rebuild_from_type_v2) -----
    tagged = torch.arange(6, dtype=torch.int32).reshape(2, 3)
    tagged.note = "has a __dict__"
    tagged_param = nn.Parameter(torch.ones(2))
    tagged_param.lr_scale = 0.5
    paths["tensor_attrs"] = _save(
        {"tagged": tagged, "tagged_param": tagged_param}, out / "tensor_attrs.pt"
    )

    # -- many storages (keys "0".."149": string vs numeric order) and one ~200 KB tensor
    many = collections.OrderedDict(
        (f"layer{i}.weight", torch.full((2,), float(i))) for i in range(150)
    )
    many["big"] = torch.arange(50_000, dtype=torch.float32).reshape(250, 200)
    many["big_tail_view"] = many["big"][-3:, 190:]
    paths["many_and_big"] = _save(many, out / "many_and_big.pt")

    # -- pickle protocols ----------------------------------------------------------
    w = torch.randn(3, 4)
    proto_payload = {
        "w": w,
        "w_T": w.t(),
        "b": torch.randn(4, dtype=torch.float64),
        "meta": {"name": "proto", "ints": [1, 2**40, -5], "f": 0.1, "bytes": b"abc" * 3},
        "pair": (torch.arange(3), torch.tensor(1.5)),
        "long_str": "x" * 300,  # long enough for *BINUNICODE / framing differences
    }
    for proto in (2, 3, 4, 5):
        name = f"protocol_{proto}"
        paths[name] = _save(proto_payload, out / f"{name}.pt", pickle_protocol=proto)

    # -- save to a file object: zip members are prefixed with "archive/" ---------
    buf = io.BytesIO()
    torch.save({"weight": torch.randn(2, 3), "note": "saved to BytesIO"}, buf)
    p = out / "fileobj_archive_prefix.pt"
    p.write_bytes(buf.getvalue())
    paths["fileobj_archive_prefix"] = p

    # -- Lightning-style file name with '=' and several dots ---------------------
    paths["epoch=3-step=12"] = _save(
        {"epoch": 3, "global_step": 12, "state_dict": {"w": torch.randn(2)}},
        out / "dotted.dir" / "epoch=3-step=12.v1.ckpt",
    )

    # -- torch.Size / torch.device / torch.dtype as plain values -----------------
    t = torch.zeros(2, 3, 4)
    values = {
        "size": t.shape,
        "empty_size": torch.Size([]),
        "sizes": [torch.Size([1]), torch.Size([0, 5])],
        "dev": torch.device("cpu"),
        "dev_cuda": torch.device("cuda", 0),
        "dev_meta": torch.device("meta"),
        "dt": torch.float16,
        "dtypes": [torch.bfloat16, torch.int64, torch.bool, torch.complex64],
        "tensor": t[0],
    }
    paths["torch_values"] = _save(values, out / "torch_values.pt")

    # -- OmegaConf containers and argparse.Namespace saved directly --------------
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {
            "model": {"hidden": [16, 8], "act": "gelu", "dropout": 0.1},
            "data": {"paths": ["a.csv", "b.csv"], "batch": 4, "shuffle": True},
            "optim": {"name": "adam", "betas": [0.9, 0.999], "nested": [[1, 2], {"k": None}]},
            "seed": 7,
        }
    )
    paths["omegaconf_direct"] = _save(
        {"cfg": cfg, "list_cfg": OmegaConf.create([1, "two", {"three": 3.0}]), "w": torch.ones(2)},
        out / "omegaconf_direct.pt",
    )

    # interpolations, a "???" (missing) value and struct/readonly flags: the pickled
    # nodes hold the raw "${...}" strings; torch.load + OmegaConf resolves them on access.
    icfg = OmegaConf.create(
        {
            "base_lr": 0.1,
            "optim": {"lr": "${base_lr}", "name": "sgd", "tag": "lr=${base_lr}"},
            "model": {"width": 8, "widths": ["${model.width}", 4]},
            "required": "???",
        }
    )
    OmegaConf.set_struct(icfg, True)
    OmegaConf.set_readonly(icfg.model, True)
    paths["omegaconf_interpolation"] = _save({"cfg": icfg}, out / "omegaconf_interpolation.pt")

    ns = argparse.Namespace(lr=0.01, layers=[8, 4], name="run", flags={"amp": False}, none=None)
    paths["namespace_direct"] = _save({"args": ns, "w": torch.ones(3)}, out / "namespace_direct.pt")

    # -- other plain python values pickle can carry (sets only of ints: str hashing is
    #    randomised per process, which would make the file non-deterministic) ------
    extras = {
        "set": {3, 1, 2},
        "empty_set": set(),
        "frozenset": frozenset({10, 20}),
        "complex": 1.5 - 2j,
        "tuple_keys": {(1, "a"): "t", (): "empty"},
        "float_keys": {0.5: "half", -1.0: "neg"},
        "bytearray": bytearray(b"\x00mutable"),
    }
    paths["python_extras"] = _save(extras, out / "python_extras.pt")

    # -- builtin classes as values (OmegaConf metadata pickles key/element types).
    #    torch's default pickle protocol is 2, so CPython writes them under their
    #    Python 2 names: int -> "__builtin__ long", str -> "__builtin__ unicode".
    type_values = {"types": [int, str, float, bool, bytes, dict, list, tuple], "key_type": int}
    paths["builtin_type_values"] = _save(type_values, out / "builtin_type_values.pt")

    return paths


# --------------------------------------------------------------------------- Lightning runs


@contextlib.contextmanager
def quiet_lightning():
    """Silence Lightning's info logging and warnings; restore levels afterwards."""
    import lightning  # noqa: F401  (importing it configures the loggers we then quiet)

    names = ["lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"]
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


def _make_lightning_module_classes():
    """Define the LightningModule classes lazily (they need lightning imported)."""
    import lightning as L
    import torch
    from torch import nn

    class _Base(L.LightningModule):
        def _build(self, hidden):
            self.net = nn.Sequential(nn.Linear(6, hidden), nn.Tanh(), nn.Linear(hidden, 2))

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = nn.functional.cross_entropy(self.net(x), y)
            self.log("train/loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            logits = self.net(x)
            loss = nn.functional.cross_entropy(logits, y)
            acc = (logits.argmax(-1) == y).float().mean()
            # "hmean" of accuracy and 1/(1+loss): deterministic, varies across epochs
            inv = 1.0 / (1.0 + loss)
            hmean = 2 * acc * inv / (acc + inv + 1e-8)
            self.log("val/hmean", hmean)
            self.log("val/loss", loss)

    class LitAdam(_Base):
        """Adam + StepLR; hparams: nested plain dicts collected from __init__."""

        def __init__(self, lr=1e-2, arch=None, sched=None, tags=("tiny", "adam")):
            super().__init__()
            self.save_hyperparameters()
            self._build(self.hparams.arch["hidden"])

        def configure_optimizers(self):
            opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
            sched = torch.optim.lr_scheduler.StepLR(opt, **self.hparams.sched)
            return [opt], [sched]

    class LitAdamWOneCycle(_Base):
        """AdamW + OneCycleLR (per step); hparams: an OmegaConf DictConfig."""

        def __init__(self, cfg):
            super().__init__()
            self.save_hyperparameters(cfg)  # stored as the DictConfig itself
            self._build(cfg.model.hidden[0])

        def configure_optimizers(self):
            opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.optim.lr, weight_decay=0.05)
            sched = torch.optim.lr_scheduler.OneCycleLR(
                opt,
                max_lr=self.hparams.optim.lr,
                total_steps=int(self.trainer.estimated_stepping_batches),
            )
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    class LitSGDCosine(_Base):
        """SGD with momentum + CosineAnnealingLR; hparams contain an argparse.Namespace."""

        def __init__(self, args, extra=None):
            super().__init__()
            self.save_hyperparameters()  # -> {"args": Namespace(...), "extra": {...}}
            self._build(args.hidden)

        def configure_optimizers(self):
            args = self.hparams.args
            opt = torch.optim.SGD(self.parameters(), lr=args.lr, momentum=0.9, nesterov=True)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)
            return [opt], [{"scheduler": sched, "interval": "epoch", "name": "cosine"}]

    return LitAdam, LitAdamWOneCycle, LitSGDCosine


def _loaders(seed: int):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(48, 6, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    train = DataLoader(TensorDataset(x[:32], y[:32]), batch_size=8, shuffle=False, num_workers=0)
    val = DataLoader(TensorDataset(x[32:], y[32:]), batch_size=8, shuffle=False, num_workers=0)
    return train, val


def _fit(module, run_dir: Path, seed: int, max_epochs: int = 4):
    """Run a tiny CPU fit; return the ModelCheckpoint callback."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    # Start from an empty run dir: ModelCheckpoint would otherwise add "-v1" suffixes
    # to names that already exist, making a rebuild into the same dir non-deterministic.
    shutil.rmtree(run_dir, ignore_errors=True)
    ckpt_cb = ModelCheckpoint(
        dirpath=str(run_dir / "checkpoints"),
        monitor="val/hmean",
        mode="max",
        save_top_k=2,
        save_last=True,
    )
    early = EarlyStopping(monitor="val/hmean", mode="max", patience=3)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        limit_train_batches=4,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        callbacks=[ckpt_cb, early],
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        default_root_dir=str(run_dir),
    )
    train, val = _loaders(seed)
    trainer.fit(module, train_dataloaders=train, val_dataloaders=val)
    return ckpt_cb


def _build_lightning(out: Path) -> dict[str, Path]:
    import torch
    from omegaconf import OmegaConf

    paths: dict[str, Path] = {}
    with quiet_lightning():
        LitAdam, LitAdamWOneCycle, LitSGDCosine = _make_lightning_module_classes()

        torch.manual_seed(0)
        module = LitAdam(
            lr=2e-2,
            arch={
                "hidden": 16,
                "act": "tanh",
                "widths": [16, 8],
                "opts": {"bias": True, "init": None},
            },
            sched={"step_size": 2, "gamma": 0.5},
        )
        cb = _fit(module, out / "lit_adam", seed=0)
        paths["lit_adam_steplr_last"] = Path(cb.last_model_path)
        # a top-k file other than last.ckpt, named like "epoch=2-step=12.ckpt"
        paths["lit_adam_steplr_topk"] = Path(cb.kth_best_model_path or cb.best_model_path)

        torch.manual_seed(1)
        cfg = OmegaConf.create(
            {
                "model": {"hidden": [12, 6], "act": "tanh"},
                "optim": {"name": "adamw", "lr": 0.05, "betas": [0.9, 0.99]},
                "data": {"splits": ["train", "val"], "sizes": [[32, 16], {"unit": "rows"}]},
                "seed": 1,
            }
        )
        cb = _fit(LitAdamWOneCycle(cfg), out / "lit_adamw", seed=1)
        paths["lit_adamw_onecycle_omegaconf"] = Path(cb.last_model_path)

        torch.manual_seed(2)
        args = argparse.Namespace(lr=0.05, hidden=10, name="sgd-run", layers=[10, 2])
        cb = _fit(
            LitSGDCosine(args, extra={"note": "namespace", "k": [1, 2]}), out / "lit_sgd", seed=2
        )
        paths["lit_sgd_cosine_namespace"] = Path(cb.last_model_path)
    return paths


# --------------------------------------------------------------------------- entry point


def build_corpus(dirpath) -> dict[str, Path]:
    """Write every corpus checkpoint under ``dirpath``; return ``{name: path}``.

    The returned keys are exactly :data:`CORPUS_NAMES` (in that order).
    """
    out = Path(dirpath)
    out.mkdir(parents=True, exist_ok=True)
    paths = _build_plain(out / "plain")
    paths.update(_build_lightning(out / "lightning"))
    missing = [n for n in CORPUS_NAMES if n not in paths or not paths[n].is_file()]
    if missing:
        raise RuntimeError(f"corpus entries not written: {missing}")
    return {name: paths[name] for name in CORPUS_NAMES}


if __name__ == "__main__":  # pragma: no cover - manual use: python tests/torch_corpus.py OUTDIR
    import sys
    import time

    t0 = time.perf_counter()
    result = build_corpus(sys.argv[1] if len(sys.argv) > 1 else "corpus_out")
    for k, v in result.items():
        print(f"{k:32s} {v.stat().st_size:8d}  {v}")
    print(f"built {len(result)} entries in {time.perf_counter() - t0:.1f}s")
