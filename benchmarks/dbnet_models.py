"""DBNet-style text-detection models for the realistic benchmark corpus (``corpus.py``).

encoder (timm ``resnet18/34/50``, ``mobilenetv3_*`` with ``pretrained=False`` when timm is
importable; plain ``torch.nn`` stand-ins with timm-like parameter names otherwise) ->
decoder (``fpn``, ``unet`` or ``pan``; PAN has ``decoder.bottom_up...``) -> DB head
(``head.binarize...``, ``head.thresh...``), wrapped in a LightningModule whose
``save_hyperparameters()`` stores the nested model / optimizer / data configs.

Imports are passed in (``build(torch, nn, L, timm)``) so importing this module is free.
"""

from __future__ import annotations

from typing import Any

# stand-in encoders: (block kind, blocks per stage, stage widths)
RESNETS = {
    "resnet18": ("basic", (2, 2, 2, 2), (64, 128, 256, 512)),
    "resnet34": ("basic", (3, 4, 6, 3), (64, 128, 256, 512)),
    "resnet50": ("bottleneck", (3, 4, 6, 3), (64, 128, 256, 512)),
}
# (kernel, expansion, out channels, SE, stride) per block; roughly mobilenetv3_large_100
MBV3_LARGE = [
    (3, 1, 16, False, 1),
    (3, 4, 24, False, 2),
    (3, 3, 24, False, 1),
    (5, 3, 40, True, 2),
    (5, 3, 40, True, 1),
    (5, 3, 40, True, 1),
    (3, 6, 80, False, 2),
    (3, 2.5, 80, False, 1),
    (3, 2.3, 80, False, 1),
    (3, 6, 112, True, 1),
    (3, 6, 112, True, 1),
    (5, 6, 160, True, 2),
    (5, 6, 160, True, 1),
    (5, 6, 160, True, 1),
]
MBV3_SMALL = [
    (3, 1, 16, True, 2),
    (3, 4.5, 24, False, 2),
    (3, 3.67, 24, False, 1),
    (5, 4, 40, True, 2),
    (5, 6, 40, True, 1),
    (5, 6, 40, True, 1),
    (5, 3, 48, True, 1),
    (5, 3, 48, True, 1),
    (5, 6, 96, True, 2),
    (5, 6, 96, True, 1),
    (5, 6, 96, True, 1),
]


def _div(v: float, d: int = 8) -> int:
    return max(d, int(v + d / 2) // d * d)


def build(torch: Any, nn: Any, L: Any, timm: Any | None) -> Any:
    """The LightningModule class (``DBNet``); ``timm=None`` selects the stand-ins."""

    # -- stand-in encoders ---------------------------------------------------------------

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, cin: int, w: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, w, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(w)
            self.act1 = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(w, w, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(w)
            self.act2 = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or cin != w:
                self.downsample = nn.Sequential(
                    nn.Conv2d(cin, w, 1, stride, bias=False), nn.BatchNorm2d(w)
                )

        def forward(self, x: Any) -> Any:
            y = self.act1(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return self.act2(y + (x if self.downsample is None else self.downsample(x)))

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, cin: int, w: int, stride: int) -> None:
            super().__init__()
            out = w * 4
            self.conv1 = nn.Conv2d(cin, w, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(w)
            self.conv2 = nn.Conv2d(w, w, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(w)
            self.conv3 = nn.Conv2d(w, out, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(out)
            self.act = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or cin != out:
                self.downsample = nn.Sequential(
                    nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out)
                )

        def forward(self, x: Any) -> Any:
            y = self.act(self.bn1(self.conv1(x)))
            y = self.act(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return self.act(y + (x if self.downsample is None else self.downsample(x)))

    class ResNetStandIn(nn.Module):
        """torchvision/timm ResNet layout (``conv1``, ``bn1``, ``layer1..4``), features only."""

        def __init__(self, name: str, width_mult: float = 1.0) -> None:
            super().__init__()
            kind, blocks, widths = RESNETS[name]
            block = BasicBlock if kind == "basic" else Bottleneck
            stem = _div(64 * width_mult)
            self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(stem)
            self.act1 = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            cin, self.channels = stem, []
            for i, (n, w) in enumerate(zip(blocks, widths)):
                w = _div(w * width_mult)
                layers = [block(cin, w, 1 if i == 0 else 2)]
                cin = w * block.expansion
                layers += [block(cin, w, 1) for _ in range(n - 1)]
                setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
                self.channels.append(cin)

        def forward(self, x: Any) -> list[Any]:
            x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
            feats = []
            for i in range(4):
                x = getattr(self, f"layer{i + 1}")(x)
                feats.append(x)
            return feats

    class SqueezeExcite(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            r = _div(c / 4)
            self.conv_reduce = nn.Conv2d(c, r, 1)
            self.act1 = nn.ReLU(inplace=True)
            self.conv_expand = nn.Conv2d(r, c, 1)
            self.gate = nn.Hardsigmoid()

        def forward(self, x: Any) -> Any:
            s = x.mean((2, 3), keepdim=True)
            return x * self.gate(self.conv_expand(self.act1(self.conv_reduce(s))))

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, k: int, exp: float, cout: int, se: bool, stride: int):
            super().__init__()
            mid = _div(cin * exp)
            self.conv_pw = nn.Conv2d(cin, mid, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(mid)
            self.conv_dw = nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False)
            self.bn2 = nn.BatchNorm2d(mid)
            self.se = SqueezeExcite(mid) if se else nn.Identity()
            self.conv_pwl = nn.Conv2d(mid, cout, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(cout)
            self.act = nn.Hardswish()
            self.residual = stride == 1 and cin == cout

        def forward(self, x: Any) -> Any:
            y = self.act(self.bn1(self.conv_pw(x)))
            y = self.se(self.act(self.bn2(self.conv_dw(y))))
            y = self.bn3(self.conv_pwl(y))
            return x + y if self.residual else y

    class MobileNetV3StandIn(nn.Module):
        """timm MobileNetV3 layout (``conv_stem``, ``bn1``, ``blocks.i.j``), features only."""

        def __init__(self, name: str, width_mult: float = 1.0) -> None:
            super().__init__()
            spec = MBV3_SMALL if "small" in name else MBV3_LARGE
            stem = _div(16 * width_mult)
            self.conv_stem = nn.Conv2d(3, stem, 3, 2, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(stem)
            self.act1 = nn.Hardswish()
            stages: list[list[Any]] = [[]]
            cin, self.taps, self.channels = stem, [], []
            for k, e, c, se, s in spec:
                if s == 2 and stages[-1]:
                    stages.append([])
                c = _div(c * width_mult)
                stages[-1].append(InvertedResidual(cin, k, e, c, se, s))
                cin = c
            self.blocks = nn.Sequential(*[nn.Sequential(*st) for st in stages])
            last = _div(960 * width_mult if "large" in name else 576 * width_mult)
            self.conv_head = nn.Sequential(
                nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.Hardswish()
            )
            # feature taps: the ends of the stages at strides 4, 8, 16 and the head (32)
            self.n_stages = len(stages)
            with torch.no_grad():
                outs = self._all(torch.zeros(1, 3, 64, 64))
            self.channels = [o.shape[1] for o in outs]

        def _all(self, x: Any) -> list[Any]:
            x = self.act1(self.bn1(self.conv_stem(x)))
            by_stride: dict[int, Any] = {}
            for st in self.blocks:
                x = st(x)
                by_stride[x.shape[-1]] = x
            x = self.conv_head(x)
            sizes = sorted(by_stride, reverse=True)  # spatial sizes: large (stride 2/4) first
            size4 = sizes[1] if len(sizes) > 4 else sizes[0]
            keep = [s for s in sizes if s <= size4][:3]
            return [by_stride[s] for s in keep] + [x]

        def forward(self, x: Any) -> list[Any]:
            return self._all(x)

    class TimmEncoder(nn.Module):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.body = timm.create_model(
                name, pretrained=False, features_only=True, out_indices=(1, 2, 3, 4)
            )
            self.channels = list(self.body.feature_info.channels())

        def forward(self, x: Any) -> list[Any]:
            return self.body(x)

    def make_encoder(cfg: dict) -> Any:
        name, wm = cfg["name"], float(cfg.get("width_mult", 1.0))
        if timm is not None and cfg.get("impl", "timm") == "timm" and wm == 1.0:
            return TimmEncoder(name)
        if name.startswith("resnet"):
            return ResNetStandIn(name, wm)
        return MobileNetV3StandIn(name, wm)

    # -- decoders -------------------------------------------------------------------------

    def cbr(cin: int, cout: int, k: int = 3, stride: int = 1) -> Any:
        return nn.Sequential(
            nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    def up_to(x: Any, ref: Any) -> Any:
        return nn.functional.interpolate(x, size=ref.shape[-2:], mode="nearest")

    class FPNDecoder(nn.Module):
        def __init__(self, chans: list[int], inner: int) -> None:
            super().__init__()
            self.lateral = nn.ModuleList(nn.Conv2d(c, inner, 1, bias=False) for c in chans)
            self.smooth = nn.ModuleList(cbr(inner, inner // 4) for _ in chans)
            self.fuse = cbr(inner, inner)
            self.out_channels = inner

        def forward(self, feats: list[Any]) -> Any:
            lat = [m(f) for m, f in zip(self.lateral, feats)]
            for i in range(len(lat) - 2, -1, -1):
                lat[i] = lat[i] + up_to(lat[i + 1], lat[i])
            outs = [up_to(m(p), lat[0]) for m, p in zip(self.smooth, lat)]
            return self.fuse(torch.cat(outs, 1))

    class UNetDecoder(nn.Module):
        def __init__(self, chans: list[int], inner: int) -> None:
            super().__init__()
            blocks, cin = [], chans[-1]
            widths = [inner * 2**i for i in range(len(chans) - 2, -1, -1)]
            for skip, w in zip(chans[-2::-1], widths):
                blocks.append(nn.ModuleDict({"conv1": cbr(cin + skip, w), "conv2": cbr(w, w)}))
                cin = w
            self.blocks = nn.ModuleList(blocks)
            self.center = cbr(chans[-1], chans[-1], k=1)
            self.out_channels = cin

        def forward(self, feats: list[Any]) -> Any:
            x = self.center(feats[-1])
            for blk, skip in zip(self.blocks, feats[-2::-1]):
                x = blk["conv2"](blk["conv1"](torch.cat([up_to(x, skip), skip], 1)))
            return x

    class PANDecoder(nn.Module):
        def __init__(self, chans: list[int], inner: int) -> None:
            super().__init__()
            n = len(chans)
            self.lateral = nn.ModuleList(nn.Conv2d(c, inner, 1, bias=False) for c in chans)
            self.top_down = nn.ModuleList(cbr(inner, inner) for _ in range(n - 1))
            self.bottom_up = nn.ModuleList(
                nn.ModuleDict({"downsample": cbr(inner, inner, 3, 2), "smooth": cbr(inner, inner)})
                for _ in range(n - 1)
            )
            self.fuse = cbr(inner * n, inner)
            self.out_channels = inner

        def forward(self, feats: list[Any]) -> Any:
            p = [m(f) for m, f in zip(self.lateral, feats)]
            for i in range(len(p) - 2, -1, -1):
                p[i] = self.top_down[i](p[i] + up_to(p[i + 1], p[i]))
            n = [p[0]]
            for i, blk in enumerate(self.bottom_up):
                d = blk["downsample"](n[-1])
                n.append(blk["smooth"](p[i + 1] + up_to(d, p[i + 1])))
            return self.fuse(torch.cat([up_to(x, n[0]) for x in n], 1))

    DECODERS = {"fpn": FPNDecoder, "unet": UNetDecoder, "pan": PANDecoder}

    # -- DB head ----------------------------------------------------------------------------

    def db_branch(cin: int) -> Any:
        mid = max(cin // 4, 8)
        return nn.Sequential(
            nn.Conv2d(cin, mid, 3, 1, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(mid, mid, 2, 2),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(mid, 1, 2, 2),
            nn.Sigmoid(),
        )

    class DBHead(nn.Module):
        def __init__(self, cin: int, k: float) -> None:
            super().__init__()
            self.k = k
            self.binarize = db_branch(cin)
            self.thresh = db_branch(cin)

        def forward(self, x: Any) -> tuple[Any, Any, Any]:
            prob, thresh = self.binarize(x), self.thresh(x)
            return prob, thresh, torch.sigmoid(self.k * (prob - thresh))

    # -- the LightningModule -----------------------------------------------------------------

    class DBNet(L.LightningModule):
        def __init__(
            self, model: Any, optimizer: Any, data: Any, scheduler: Any = None, experiment: str = ""
        ) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.encoder = make_encoder(model["encoder"])
            dec = model["decoder"]
            self.decoder = DECODERS[dec["name"]](self.encoder.channels, int(dec["channels"]))
            self.head = DBHead(self.decoder.out_channels, float(model["head"]["k"]))

        def forward(self, x: Any) -> Any:
            y = self.head(self.decoder(self.encoder(x)))
            return [
                nn.functional.interpolate(
                    t, size=x.shape[-2:], mode="bilinear", align_corners=False
                )
                for t in y
            ]

        def _loss(self, batch: Any) -> Any:
            x, gt, gt_thresh = batch
            prob, thresh, binary = self(x)
            bce = nn.functional.binary_cross_entropy
            return (
                bce(prob.clamp(1e-6, 1 - 1e-6), gt)
                + bce(binary.clamp(1e-6, 1 - 1e-6), gt)
                + 10 * (thresh - gt_thresh).abs().mean()
            )

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            loss = self._loss(batch)
            self.log("train/loss", loss)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, gt, _ = batch
            pred = (self(x)[0] > 0.5).float()
            tp = (pred * gt).sum()
            precision, recall = tp / (pred.sum() + 1e-6), tp / (gt.sum() + 1e-6)
            self.log("val/precision", precision)
            self.log("val/recall", recall)
            self.log("val/hmean", 2 * precision * recall / (precision + recall + 1e-6))
            self.log("val/loss", self._loss(batch))

        def configure_optimizers(self) -> Any:
            o, s = self.hparams.optimizer, self.hparams.scheduler
            name = o["name"]
            if name == "adam":
                opt = torch.optim.Adam(
                    self.parameters(), lr=o["lr"], weight_decay=o.get("weight_decay", 0.0)
                )
            elif name == "adamw":
                opt = torch.optim.AdamW(
                    self.parameters(), lr=o["lr"], weight_decay=o.get("weight_decay", 0.01)
                )
            else:
                opt = torch.optim.SGD(
                    self.parameters(),
                    lr=o["lr"],
                    momentum=o["momentum"],
                    weight_decay=o.get("weight_decay", 0.0),
                    nesterov=True,
                )
            if not s:
                return opt
            kind = s["name"]
            if kind == "cosine":
                sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=s["t_max"])
            elif kind == "onecycle":
                sched = torch.optim.lr_scheduler.OneCycleLR(
                    opt, max_lr=o["lr"], total_steps=s["total_steps"]
                )
            elif kind == "poly":
                sched = torch.optim.lr_scheduler.PolynomialLR(
                    opt, total_iters=s["total_iters"], power=s["power"]
                )
            else:
                sched = torch.optim.lr_scheduler.MultiStepLR(
                    opt, milestones=list(s["milestones"]), gamma=s["gamma"]
                )
            return {
                "optimizer": opt,
                "lr_scheduler": {"scheduler": sched, "interval": s.get("interval", "step")},
            }

    return DBNet
