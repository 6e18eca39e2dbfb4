"""Generate the key/shape fixtures of tests/catalog/test_signatures.py from REAL modules.

Needs torch + torchvision + timm (NOT the dev venv: timm needs a torchvision that matches its
torch), e.g.::

    python3 -m venv timm-venv
    timm-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 timm
    timm-venv/bin/python tests/catalog/data/signatures/make_signature_fixtures.py

Every fixture is ``{key: shape}`` only (no tensor data), a few KB each:

* ``timm_<name>.json``: what a DBNet built the way the users build it (an ``encoder`` module
  holding ``timm.create_model(name, pretrained=False, features_only=True,
  out_indices=(1, 2, 3, 4))``
  as ``encoder.model``, decoders/heads below) stores, split so the encoder is written once:
  ``encoder`` (the timm keys, bare), ``decoders`` (``unet`` / ``fpn`` / ``pan``, bare decoder keys
  built for this encoder's feature channels), ``heads`` (``db``, bare, one per decoder since its
  in_channels is the decoder's output) and ``expected`` (the constructor arguments: the ground
  truth the tests compare against, never derived from the inference under test).
  The generator checks that ``model.`` + ``encoder.model.`` + encoder keys etc. equals the
  ``state_dict()`` of the real composed ``LightningLike(DBNet(...))`` module.
* ``plain_<name>.json``: a whole classification model (``features_only=False``: with fc /
  conv_head / classifier), bare keys; ``torchvision_resnet50.json`` the same from torchvision.
* ``unknown_transformer.json``: a small transformer-ish model (embedding, nn.TransformerEncoder,
  lm head) under ``model.``, for the generic fallback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import timm
import torch
import torchvision
from torch import nn

HERE = Path(__file__).resolve().parent
ENCODERS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "mobilenetv3_small_100",
    "mobilenetv3_large_100",
)
OUT_INDICES = (1, 2, 3, 4)


# --- DBNet-like modules (plain torch.nn; key layout as in the users' ocr.models) ------------------


class TimmEncoder(nn.Module):
    def __init__(self, name: str):
        super().__init__()
        self.model = timm.create_model(
            name, pretrained=False, features_only=True, out_indices=OUT_INDICES
        )

    @property
    def out_channels(self) -> list[int]:
        return list(self.model.feature_info.channels())


def conv_bn_relu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNetDecoder(nn.Module):
    """inners.i: 1x1 conv in_i -> inner; outers.i: 3x3 conv inner -> out (concatenated: 4*out)."""

    def __init__(self, in_channels, inner_channels=256, output_channels=64):
        super().__init__()
        self.inners = nn.ModuleList(
            nn.Conv2d(c, inner_channels, 1, bias=False) for c in in_channels
        )
        self.outers = nn.ModuleList(
            conv_bn_relu(inner_channels, output_channels, 3) for _ in in_channels
        )


class FPNDecoder(nn.Module):
    """lateral_convs.i: in_i -> inner; smooth_convs.i; fusion: concat(4*inner) -> out."""

    def __init__(self, in_channels, inner_channels=256, output_channels=256):
        super().__init__()
        self.lateral_convs = nn.ModuleList(conv_bn_relu(c, inner_channels, 1) for c in in_channels)
        self.smooth_convs = nn.ModuleList(
            conv_bn_relu(inner_channels, inner_channels, 3) for _ in in_channels
        )
        self.fusion = conv_bn_relu(inner_channels * len(in_channels), output_channels, 3)


class SeparableConv(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.depthwise = nn.Conv2d(
            channels, channels, 3, stride=2, padding=1, groups=channels, bias=False
        )
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)


class PANDecoder(nn.Module):
    """FPN top-down (lateral_convs) + PAN bottom-up path (bottom_up.i, separable convs) + fusion."""

    def __init__(self, in_channels, inner_channels=128, output_channels=256):
        super().__init__()
        self.lateral_convs = nn.ModuleList(conv_bn_relu(c, inner_channels, 1) for c in in_channels)
        self.bottom_up = nn.ModuleList(SeparableConv(inner_channels) for _ in in_channels[1:])
        self.fusion = conv_bn_relu(inner_channels * len(in_channels), output_channels, 3)


class DBHead(nn.Module):
    def __init__(self, in_channels: int):
        super().__init__()
        self.binarize = self._branch(in_channels)
        self.thresh = self._branch(in_channels)

    @staticmethod
    def _branch(c: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(c, c // 4, 3, padding=1, bias=False),
            nn.BatchNorm2d(c // 4),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(c // 4, c // 4, 2, 2),
            nn.BatchNorm2d(c // 4),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(c // 4, 1, 2, 2),
        )


class DBNet(nn.Module):
    def __init__(self, encoder, decoder, head):
        super().__init__()
        self.encoder, self.decoder, self.head = encoder, decoder, head


class LightningLike(nn.Module):  # what a LightningModule with `self.model = DBNet(...)` saves
    def __init__(self, model):
        super().__init__()
        self.model = model


DECODERS = {
    # name: (class, inner_channels, output_channels, channels the head gets)
    "unet": (UNetDecoder, 256, 64, lambda n, out: n * out),
    "fpn": (FPNDecoder, 256, 256, lambda n, out: out),
    "pan": (PANDecoder, 128, 256, lambda n, out: out),
}


# --- dumping ------------------------------------------------------------------------------------


def shapes(module: nn.Module, prefix: str = "") -> dict[str, list[int]]:
    return {prefix + k: list(v.shape) for k, v in module.state_dict().items()}


def dump(name: str, payload: dict) -> None:
    path = HERE / name
    text = json.dumps(payload, separators=(",", ":"))
    # one entry per line keeps diffs readable
    text = text.replace('],"', '],\n"')
    path.write_text(text + "\n")
    print(f"{path.name}: {path.stat().st_size / 1024:.1f} KB", file=sys.stderr)


def source(what: str) -> str:
    versions = {
        "torch": torch.__version__,
        "timm": timm.__version__,
        "torchvision": torchvision.__version__,
    }
    return what + "; " + ", ".join(f"{k} {v.split('+')[0]}" for k, v in versions.items())


def main() -> None:
    torch.manual_seed(0)
    for enc_name in ENCODERS:
        encoder = TimmEncoder(enc_name)
        in_channels = encoder.out_channels
        fixture = {
            "source": source(
                f"timm.create_model({enc_name!r}, pretrained=False, features_only=True, "
                f"out_indices={OUT_INDICES})"
            ),
            "encoder": shapes(encoder.model),
            "decoders": {},
            "heads": {},
            "expected": {
                "encoder": enc_name,
                "feature_channels": in_channels,
                "feature_reductions": list(encoder.model.feature_info.reduction()),
                "decoders": {},
            },
        }
        for dec_name, (cls, inner, out, head_in) in DECODERS.items():
            decoder = cls(in_channels, inner, out)
            head = DBHead(head_in(len(in_channels), out))
            model = LightningLike(DBNet(encoder, decoder, head))
            fixture["decoders"][dec_name] = shapes(decoder)
            fixture["heads"][dec_name] = shapes(head)
            fixture["expected"]["decoders"][dec_name] = {
                "in_channels": in_channels,
                "inner_channels": inner,
                "out_channels": out,
                "head_in_channels": head_in(len(in_channels), out),
            }
            # the split parts compose back to the real full state dict, prefix and order included
            composed = {
                **{f"model.encoder.model.{k}": v for k, v in fixture["encoder"].items()},
                **{f"model.decoder.{k}": v for k, v in fixture["decoders"][dec_name].items()},
                **{f"model.head.{k}": v for k, v in fixture["heads"][dec_name].items()},
            }
            real = shapes(model)
            assert list(composed) == list(real) and composed == real, (enc_name, dec_name)
        dump(f"timm_{enc_name}.json", fixture)

    for enc_name in ("resnet18", "mobilenetv3_large_100"):
        model = timm.create_model(enc_name, pretrained=False)
        dump(
            f"plain_{enc_name}.json",
            {
                "source": source(f"timm.create_model({enc_name!r}, pretrained=False)"),
                "shapes": shapes(model),
            },
        )
    tv = torchvision.models.resnet50(weights=None)
    dump(
        "torchvision_resnet50.json",
        {"source": source("torchvision.models.resnet50(weights=None)"), "shapes": shapes(tv)},
    )

    class TinyLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(1000, 64)
            layer = nn.TransformerEncoderLayer(64, 4, 128, batch_first=True)
            self.blocks = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(64)
            self.lm_head = nn.Linear(64, 1000, bias=False)

    tiny = LightningLike(TinyLM())
    dump(
        "unknown_transformer.json",
        {
            "source": source(
                "a tiny embedding + nn.TransformerEncoder(2 layers) + lm head under model."
            ),
            "shapes": shapes(tiny),
        },
    )


if __name__ == "__main__":
    main()
