"""Signatures from state-dict key names + shapes (no torch at test time).

Fixtures (tests/catalog/data/signatures/*.json) are keys + shapes dumped from REAL timm/torchvision
modules by make_signature_fixtures.py; their "expected" blocks are the constructor arguments the
generator used, never the output of the code under test.
"""

from __future__ import annotations

import json
import math
import random
import re
import textwrap
from functools import cache
from pathlib import Path

import pytest

from ckptpeek.catalog.models import Signature, Signatures
from ckptpeek.catalog.signatures import RULES_PATH, SignatureRules, infer_signatures

DATA = Path(__file__).parent / "data" / "signatures"
ENCODERS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "mobilenetv3_small_100",
    "mobilenetv3_large_100",
)
DECODERS = ("unet", "fpn", "pan")
BUFFER = re.compile(r"(running_mean|running_var|num_batches_tracked)$")


@cache
def fixture(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def dbnet(encoder: str, decoder: str, prefix: str = "model.") -> dict[str, tuple[int, ...]]:
    """The state dict of LightningLike(DBNet(TimmEncoder, decoder, DBHead)), under ``prefix``."""
    f = fixture(f"timm_{encoder}")
    out = {f"{prefix}encoder.model.{k}": tuple(v) for k, v in f["encoder"].items()}
    out.update({f"{prefix}decoder.{k}": tuple(v) for k, v in f["decoders"][decoder].items()})
    out.update({f"{prefix}head.{k}": tuple(v) for k, v in f["heads"][decoder].items()})
    return out


def n_params(shapes: dict, start: str = "") -> int:
    return sum(
        math.prod(s) for k, s in shapes.items() if k.startswith(start) and not BUFFER.search(k)
    )


# --- every encoder x decoder x DB head combination ------------------------------------------------


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("encoder", ENCODERS)
def test_dbnet_combinations(encoder: str, decoder: str) -> None:
    shapes = dbnet(encoder, decoder)
    expected = fixture(f"timm_{encoder}")["expected"]
    dec_expected = expected["decoders"][decoder]
    sigs = infer_signatures(shapes)

    assert sigs.encoder is not None and sigs.encoder.name == encoder
    # what timm's feature_info says the decoder gets (out_indices 1..4) is what the decoder reads
    assert sigs.encoder.params["feature_channels"][1:] == expected["feature_channels"]
    assert sigs.encoder.params["feature_reductions"][1:] == expected["feature_reductions"]
    assert sigs.encoder.params["in_channels"] == 3
    assert sigs.encoder.params["num_params"] == n_params(shapes, "model.encoder.")

    assert sigs.decoder == Signature(
        name=decoder,
        params={
            **sigs.decoder.params,  # the rule's extra measures, checked below
            "in_channels": dec_expected["in_channels"],
            "inner_channels": dec_expected["inner_channels"],
            "out_channels": dec_expected["out_channels"],
        },
    )
    assert sigs.decoder.params["num_params"] == n_params(shapes, "model.decoder.")
    if decoder == "unet":
        assert sigs.decoder.params["fused_channels"] == dec_expected["head_in_channels"]
    if decoder == "fpn":
        assert sigs.decoder.params["fusion_in_channels"] == 4 * dec_expected["inner_channels"]
    if decoder == "pan":
        assert sigs.decoder.params["bottom_up_levels"] == 3

    assert sigs.head is not None and sigs.head.name == "db"
    head_in = dec_expected["head_in_channels"]
    assert {
        k: sigs.head.params[k]
        for k in ("in_channels", "inner_channels", "out_channels", "adaptive")
    } == {
        "in_channels": head_in,
        "inner_channels": head_in // 4,
        "out_channels": 1,
        "adaptive": True,
    }

    assert sigs.generic == {
        "encoder": n_params(shapes, "model.encoder."),
        "decoder": n_params(shapes, "model.decoder."),
        "head": n_params(shapes, "model.head."),
    }
    # plain data: round-trips through JSON (the catalog cache stores it)
    assert Signatures.model_validate_json(sigs.model_dump_json()) == sigs


# exact encoder depth/width signatures (timm ground truth: blocks per stage, stage widths)
ENCODER_EXPECTED = {
    "resnet18": ("basic", [2, 2, 2, 2], [64, 128, 256, 512], 64),
    "resnet34": ("basic", [3, 4, 6, 3], [64, 128, 256, 512], 64),
    "resnet50": ("bottleneck", [3, 4, 6, 3], [256, 512, 1024, 2048], 64),
    "resnet101": ("bottleneck", [3, 4, 23, 3], [256, 512, 1024, 2048], 64),
    "mobilenetv3_small_100": (None, [1, 2, 3, 2, 3, 1], [16, 24, 40, 48, 96, 576], 16),
    "mobilenetv3_large_100": (None, [1, 2, 3, 4, 2, 3, 1], [16, 24, 40, 80, 112, 160, 960], 16),
}


@pytest.mark.parametrize("encoder", ENCODERS)
def test_encoder_depth_and_width(encoder: str) -> None:
    block_type, blocks, widths, stem = ENCODER_EXPECTED[encoder]
    params = infer_signatures(dbnet(encoder, "fpn")).encoder.params
    assert params.get("block_type") == block_type
    assert params["blocks_per_stage"] == blocks
    assert params["num_stages"] == len(blocks) and params["num_blocks"] == sum(blocks)
    assert params["stage_channels"] == widths
    assert params["stem_channels"] == stem
    assert params["family"] == (
        "resnet" if encoder.startswith("resnet") else "timm_efficientnet_builder"
    )
    assert "num_classes" not in params  # features_only: no classifier


def test_resnet_block_type_decides_between_same_depths() -> None:
    # resnet34 and resnet50 both have 3-4-6-3 blocks: the Bottleneck's conv3 tells them apart
    r34 = infer_signatures(dbnet("resnet34", "unet")).encoder
    r50 = infer_signatures(dbnet("resnet50", "unet")).encoder
    assert r34.params["blocks_per_stage"] == r50.params["blocks_per_stage"]
    assert (r34.name, r50.name) == ("resnet34", "resnet50")


# --- prefixes ------------------------------------------------------------------------------------

PREFIXES = (
    "",
    "model.",
    "net.",
    "module.",
    "model.module.",
    "state_dict.model.",
    "_orig_mod.",
    "lit.model.",
)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_prefix_variants_give_the_same_signatures(prefix: str) -> None:
    reference = infer_signatures(dbnet("resnet18", "pan", "model."))
    sigs = infer_signatures(dbnet("resnet18", "pan", prefix))
    assert sigs == reference
    assert set(sigs.generic) == {"encoder", "decoder", "head"}


def test_encoder_without_timm_wrapper_and_other_roots() -> None:
    f = fixture("timm_resnet50")
    for root in ("encoder.", "backbone.", "backbone.body.", "encoder.backbone."):
        shapes = {f"net.{root}{k}": tuple(v) for k, v in f["encoder"].items()}
        shapes.update({f"net.neck.{k}": tuple(v) for k, v in f["decoders"]["fpn"].items()})
        sigs = infer_signatures(shapes)
        assert sigs.encoder.name == "resnet50", root
        assert sigs.decoder.name == "fpn", root


def test_key_order_does_not_matter() -> None:
    # safetensors headers come sorted; other writers use module order
    shapes = dbnet("mobilenetv3_large_100", "unet")
    items = list(shapes.items())
    random.Random(0).shuffle(items)
    assert infer_signatures(dict(items)) == infer_signatures(shapes)
    assert infer_signatures(dict(sorted(items))) == infer_signatures(shapes)


def test_ema_copy_beside_the_model() -> None:
    shapes = dbnet("resnet18", "fpn", "model.")
    shapes.update(
        {
            k.replace("model.", "ema_model.", 1): v
            for k, v in dbnet("resnet50", "pan", "model.").items()
        }
    )
    sigs = infer_signatures(shapes)
    # the model under a known wrapper ("model.") wins over a bigger EMA copy
    assert (sigs.encoder.name, sigs.decoder.name) == ("resnet18", "fpn")
    assert set(sigs.generic) == {"encoder", "decoder", "head", "ema_model"}


def conv(cout: int, cin: int, k: int = 3) -> dict[str, tuple[int, ...]]:
    return {
        "0.weight": (cout, cin, k, k),
        "1.weight": (cout,),
        "1.bias": (cout,),
        "1.running_mean": (cout,),
        "1.running_var": (cout,),
        "1.num_batches_tracked": (),
    }


def under(prefix: str, d: dict) -> dict:
    return {f"{prefix}{k}": v for k, v in d.items()}


@pytest.mark.parametrize("decoder", ["fpn", "pan", "unet"])
def test_second_spelling_lateral_fuse_center_blocks(decoder: str) -> None:
    # the layout of benchmarks/dbnet_models.py: encoder.body (timm), lateral/fuse, center/blocks
    chans, inner = [64, 128, 256, 512], 96
    f = fixture("timm_resnet18")
    shapes = {f"encoder.body.{k}": tuple(v) for k, v in f["encoder"].items()}
    if decoder in ("fpn", "pan"):
        shapes.update(
            {f"decoder.lateral.{i}.weight": (inner, c, 1, 1) for i, c in enumerate(chans)}
        )
    if decoder == "fpn":
        for i in range(4):
            shapes.update(under(f"decoder.smooth.{i}.", conv(inner // 4, inner)))
        shapes.update(under("decoder.fuse.", conv(inner, inner)))
    if decoder == "pan":
        for i in range(3):
            shapes.update(under(f"decoder.top_down.{i}.", conv(inner, inner)))
            shapes.update(under(f"decoder.bottom_up.{i}.downsample.", conv(inner, inner)))
            shapes.update(under(f"decoder.bottom_up.{i}.smooth.", conv(inner, inner)))
        shapes.update(under("decoder.fuse.", conv(inner, inner * 4)))
    if decoder == "unet":
        shapes.update(under("decoder.center.", conv(512, 512, 1)))
        cin = 512
        for i, (skip, w) in enumerate(
            zip([256, 128, 64], [4 * inner, 2 * inner, inner], strict=True)
        ):
            shapes.update(under(f"decoder.blocks.{i}.conv1.", conv(w, cin + skip)))
            shapes.update(under(f"decoder.blocks.{i}.conv2.", conv(w, w)))
            cin = w
    sigs = infer_signatures(shapes)
    assert sigs.encoder.name == "resnet18"
    assert sigs.decoder.name == decoder
    assert sigs.decoder.params["out_channels"] == inner
    if decoder == "unet":
        assert sigs.decoder.params["block_channels"] == [4 * inner, 2 * inner, inner]
        assert sigs.decoder.params["center_channels"] == 512
    else:
        assert sigs.decoder.params["in_channels"] == chans
        assert sigs.decoder.params["inner_channels"] == inner


# --- whole classification models (bare keys) -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected", "extra"),
    [
        ("plain_resnet18", "resnet18", {"num_classes": 1000}),
        (
            "plain_mobilenetv3_large_100",
            "mobilenetv3_large_100",
            {"num_classes": 1000, "head_channels": 1280},
        ),
        ("torchvision_resnet50", "resnet50", {"num_classes": 1000}),
    ],
)
@pytest.mark.parametrize("prefix", ["", "model."])
def test_plain_models(name: str, expected: str, extra: dict, prefix: str) -> None:
    shapes = {prefix + k: tuple(v) for k, v in fixture(name)["shapes"].items()}
    sigs = infer_signatures(shapes)
    assert sigs.encoder.name == expected
    assert extra.items() <= sigs.encoder.params.items()
    assert sigs.decoder is None and sigs.head is None
    assert sum(sigs.generic.values()) == n_params(shapes)
    assert "fc" in sigs.generic or "classifier" in sigs.generic
    if name == "plain_resnet18":
        assert sigs.generic["fc"] == 512 * 1000 + 1000
        assert sum(sigs.generic.values()) == 11_689_512  # torchvision's published resnet18 size


# --- generic fallback / unknown components --------------------------------------------------------


def test_generic_fallback_on_unknown_model() -> None:
    shapes = {k: tuple(v) for k, v in fixture("unknown_transformer")["shapes"].items()}
    sigs = infer_signatures(shapes)
    assert sigs.encoder is None and sigs.decoder is None and sigs.head is None
    assert sigs.generic == {
        "embed": 1000 * 64,
        "blocks": n_params(shapes, "model.blocks."),
        "norm": 2 * 64,
        "lm_head": 64 * 1000,
    }
    assert sigs.generic["blocks"] > 0


def test_unknown_component_under_a_known_root() -> None:
    shapes = dbnet("resnet18", "unet")
    shapes = {k: v for k, v in shapes.items() if ".decoder." not in k}
    shapes.update(
        {
            "model.decoder.attn.qkv.weight": (768, 256),
            "model.decoder.attn.qkv.bias": (768,),
            "model.decoder.proj.weight": (256, 256),
            "model.encoder.extra_token": (1, 1, 256),  # not under encoder.model.: not the encoder's
        }
    )
    sigs = infer_signatures(shapes)
    assert sigs.encoder.name == "resnet18"
    assert sigs.decoder == Signature(
        name=None,
        params={
            "num_params": 768 * 256 + 768 + 256 * 256,
            "num_tensors": 3,
            "children": ["attn", "proj"],
        },
    )
    assert sigs.head.name == "db"
    assert sigs.generic["decoder"] == 768 * 256 + 768 + 256 * 256


def test_unrecognised_variant_keeps_the_family_and_measures() -> None:
    # a resnet with 1-1-1-1 basic blocks (no shipped variant): family + measures, no name
    f = fixture("timm_resnet18")
    shapes = {
        f"encoder.model.{k}": tuple(v)
        for k, v in f["encoder"].items()
        if not re.match(r"layer\d\.1\.", k)
    }
    enc = infer_signatures(shapes).encoder
    assert enc.name is None
    assert enc.params["family"] == "resnet"
    assert enc.params["blocks_per_stage"] == [1, 1, 1, 1]
    assert enc.params["stage_channels"] == [64, 128, 256, 512]
    assert "feature_channels" not in enc.params  # variant info only for a named variant


def test_unknown_encoder_layout_is_unnamed_not_misnamed() -> None:
    shapes = {
        "model.encoder.stem.0.weight": (96, 3, 4, 4),
        "model.encoder.stages.0.blocks.0.conv_dw.weight": (96, 1, 7, 7),
    }
    enc = infer_signatures(shapes).encoder
    assert enc == Signature(
        name=None,
        params={"num_params": 96 * 48 + 96 * 49, "num_tensors": 2, "children": ["stem", "stages"]},
    )


# --- user rules -----------------------------------------------------------------------------------

USER_RULES = textwrap.dedent(
    r"""
    components:
      encoder:
        roots: ["encoder.trunk."]
    encoders:
      - name: convnext            # a new family, tried before the shipped ones
        detect:
          all: ['^stem\.0\.weight$', '^stages\.\d+\.blocks\.\d+\.conv_dw\.weight$']
        stages: '^stages\.(?P<stage>\d+)\.blocks\.(?P<block>\d+)\.'
        measures:
          stem_channels: {key: stem.0.weight, dim: 0}
          stage_channels: {per_stage: 'stages.{stage}.blocks.{block}.conv_dw.weight', dim: 0}
        variants:
          - {name: convnext_tiny_toy, when: {blocks_per_stage: [1, 2], stage_channels: [96, 192]}}
      - name: resnet              # extend a shipped family with a variant
        variants:
          - {name: resnet10_basic, when: {block_type: basic, blocks_per_stage: [1, 1, 1, 1]}}
    decoders:
      - name: fpn
        aliases: [my_fpn]
    heads:
      - name: ctc_like
        detect: {all: ['^classifier\.weight$']}
        measures:
          num_classes: {key: classifier.weight, dim: 0}
          in_channels: {key: classifier.weight, dim: 1}
    """
)


def convnext_like(prefix: str) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}stem.0.weight": (96, 3, 4, 4),
        f"{prefix}stem.0.bias": (96,),
        f"{prefix}stages.0.blocks.0.conv_dw.weight": (96, 1, 7, 7),
        f"{prefix}stages.1.downsample.1.weight": (192, 96, 2, 2),
        f"{prefix}stages.1.blocks.0.conv_dw.weight": (192, 1, 7, 7),
        f"{prefix}stages.1.blocks.1.conv_dw.weight": (192, 1, 7, 7),
    }


def test_user_rules_file_adds_an_encoder(tmp_path: Path) -> None:
    user = tmp_path / "my_rules.yaml"
    user.write_text(USER_RULES)
    rules = SignatureRules.load(user)
    assert str(user) in rules.sources and str(RULES_PATH) in rules.sources

    shapes = convnext_like("model.encoder.trunk.")
    shapes["model.head.classifier.weight"] = (97, 256)
    sigs = infer_signatures(shapes, rules)
    assert sigs.encoder.name == "convnext_tiny_toy"
    assert sigs.encoder.params["stage_channels"] == [96, 192]
    assert sigs.encoder.params["stem_channels"] == 96
    assert sigs.head.name == "ctc_like" and sigs.head.params["num_classes"] == 97
    # the shipped rules alone do not know it
    assert infer_signatures(shapes).encoder.name is None

    # the added resnet variant, and the shipped ones still there
    f = fixture("timm_resnet18")
    tiny = {
        f"encoder.model.{k}": tuple(v)
        for k, v in f["encoder"].items()
        if not re.match(r"layer\d\.1\.", k)
    }
    assert infer_signatures(tiny, rules).encoder.name == "resnet10_basic"
    assert infer_signatures(dbnet("resnet50", "fpn"), rules).encoder.name == "resnet50"
    assert infer_signatures(dbnet("resnet50", "fpn"), rules).decoder.name == "fpn"

    assert rules.canonical_name("decoder", "my_fpn") == "fpn"
    assert rules.canonical_name("decoder", "PAN_Decoder") == "pan"
    assert rules.canonical_name("head", "db_head") == "db"
    assert rules.canonical_name("encoder", "ResNet18") == "resnet18"
    assert rules.canonical_name("decoder", "something_else") == "something_else"
    assert rules.digest != SignatureRules.default().digest
    assert SignatureRules.load(None).digest == SignatureRules.default().digest
    # build_catalog(rules=...) may pass a path or a dict
    assert SignatureRules.coerce(str(user)).digest == rules.digest
    assert infer_signatures(shapes, str(user)).encoder.name == "convnext_tiny_toy"


def test_user_rules_override_disable_and_replace() -> None:
    # override a shipped decoder's detection, disable the DB head
    rules = SignatureRules.from_dict(
        {
            "decoders": [
                {"name": "unet", "detect": {"all": [r"^inners\."], "none": [r"^outers\."]}}
            ],
            "heads": [{"name": "db", "disabled": True}],
        }
    )
    sigs = infer_signatures(dbnet("resnet18", "unet"), rules)
    assert sigs.decoder.name is None  # has outers now excluded
    assert sigs.head.name is None and sigs.head.params["children"] == ["binarize", "thresh"]
    assert "db" not in rules.names("head") and "resnet50" in rules.names("encoder")
    # inherit: false starts from nothing
    bare = SignatureRules.from_dict(
        {"inherit": False, "components": {"encoder": {"roots": ["encoder."]}}}
    )
    sigs = infer_signatures(dbnet("resnet18", "unet"), bare)
    assert sigs.encoder.name is None and sigs.decoder is None and sigs.head is None
    assert set(sigs.generic) == {"encoder", "decoder", "head"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("encoders: [{name: x, detect: {all: ['(']}}]", "bad regex"),
        (
            "encoders: [{name: x, detect: {all: ['a']}, measures: {m: {key: a, each: b}}}]",
            "exactly one",
        ),
        ("encoders: [{name: x, detect: {alll: ['a']}}]", "alll"),
        ("encoders: [{name: x, stages: 'layer(\\d+)', detect: {all: ['a']}}]", "named groups"),
        ("encoders: [{detect: {all: ['a']}}]", "needs a name"),
        ("- just a list", "must be a mapping"),
        ("a: [", "cannot read"),
    ],
)
def test_invalid_user_rules_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        SignatureRules.load(path)
    assert "bad.yaml" in str(info.value)


def test_empty_user_file_is_the_default(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert SignatureRules.load(path).digest == SignatureRules.default().digest


# --- robustness -----------------------------------------------------------------------------------


def test_empty_input() -> None:
    assert infer_signatures({}) == Signatures()
    assert infer_signatures({}).generic == {}


def test_weird_shapes_never_raise() -> None:
    shapes = {
        "model.encoder.model.conv1.weight": None,  # no shape
        "model.encoder.model.layer1.0.conv1.weight": "64x64",  # not a shape
        "model.encoder.model.layer1.0.conv2.weight": (),  # a scalar: measured dims missing
        "model.decoder.inners.0.weight": (256,),  # too few dims for dim=1
        "model.decoder.outers.0.0.weight": (-1, 3),  # negative
        "model.head.binarize.0.weight": (64.5, 256, 3, 3),  # non-integral
        "model.head.thresh.0.weight": [64, 256, 3, 3],  # a list is fine
        "model.head.scale": (True,),  # bools are not dims
        "model.big": (2**40, 2**40),  # huge but valid
        "": (3,),  # empty key ignored
        7: (3,),  # non-str key ignored
        "top": (0,),
    }
    sigs = infer_signatures(shapes)  # type: ignore[arg-type]
    assert sigs.encoder.name is None and sigs.encoder.params["family"] == "resnet"
    assert "stem_channels" not in sigs.encoder.params
    assert sigs.decoder.name == "unet" and "in_channels" not in sigs.decoder.params
    assert sigs.head.name == "db" and "in_channels" not in sigs.head.params
    assert sigs.generic == {
        "encoder": 1,
        "decoder": 256,
        "head": 64 * 256 * 9,
        "big": 2**80,
        "top": 0,
    }


def test_tensor_like_shapes_are_accepted() -> None:
    class Info:  # like ckptpeek's TensorInfo / a numpy array: has .shape
        def __init__(self, *shape: int) -> None:
            self.shape = shape

    shapes = {k: Info(*v) for k, v in dbnet("resnet18", "fpn").items()}
    assert infer_signatures(shapes) == infer_signatures(dbnet("resnet18", "fpn"))  # type: ignore[arg-type]


def test_not_a_mapping() -> None:
    assert infer_signatures(None) == Signatures()  # type: ignore[arg-type]
    assert infer_signatures([("a.weight", (3,))]) == Signatures()  # type: ignore[arg-type]


def test_shipped_rules_are_valid_and_cached() -> None:
    rules = SignatureRules.default()
    assert rules is SignatureRules.default()
    assert SignatureRules().digest == rules.digest
    assert {
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "mobilenetv3_small_100",
        "mobilenetv3_large_100",
    } <= set(rules.names("encoder"))
    assert rules.names("decoder") == ["pan", "fpn", "unet"]  # two unet layouts, one name
    assert rules.names("head") == ["db"]
    assert "SignatureRules(" in repr(rules)
