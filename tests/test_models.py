"""Tests for pamc.models: BoostLU, CAM classifier, backbones and strict checkpoint loading."""

from __future__ import annotations

import importlib.util
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from pamc.errors import CheckpointError, ConfigError, PamcError, RegistryError
from pamc.models import (
    BACKBONES,
    BoostLU,
    CAMClassifier,
    CAMOutput,
    build_model,
    create_backbone,
    load_pretrained,
)

HAS_TIMM = importlib.util.find_spec("timm") is not None
HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None

EXPECTED_OUT_CHANNELS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048, "smallcnn": 128,
                         "efficientnet_lite0": 1280, "efficientnet_lite1": 1280, "efficientnet_lite2": 1280}


# --------------------------------------------------------------------------- BoostLU


def test_boostlu_values_by_hand() -> None:
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0])
    y = BoostLU(5.0)(x)
    assert torch.equal(y, torch.tensor([-2.0, -0.5, 0.0, 2.5, 15.0]))


def test_boostlu_gradient() -> None:
    x = torch.tensor([-2.0, -0.5, 0.5, 3.0], requires_grad=True)
    BoostLU(5.0)(x).sum().backward()
    assert torch.equal(x.grad, torch.tensor([1.0, 1.0, 5.0, 5.0]))


def test_boostlu_alpha_one_is_identity() -> None:
    x = torch.randn(4, 3, 5, 5)
    assert torch.equal(BoostLU(1.0)(x), x)


@pytest.mark.parametrize("alpha", [0.5, 0.0, -1.0, float("nan"), float("inf"), "five"])
def test_boostlu_rejects_bad_alpha(alpha: object) -> None:
    with pytest.raises(ConfigError, match="alpha"):
        BoostLU(alpha)  # type: ignore[arg-type]


def test_boostlu_repr_shows_alpha() -> None:
    assert "alpha=5" in repr(BoostLU(5.0))


# --------------------------------------------------------------------------- CAMClassifier


def _tiny_classifier(
    train_alpha: float = 1.0, eval_alpha: float | None = None, num_classes: int = 4
) -> CAMClassifier:
    torch.manual_seed(0)
    return build_model(
        "smallcnn", num_classes, train_alpha=train_alpha, eval_alpha=eval_alpha, widths=(8, 16), strides=(2, 2)
    )


def test_classifier_shapes_and_logits_are_mean_of_boosted_cam() -> None:
    model = _tiny_classifier(train_alpha=2.0, eval_alpha=5.0).eval()
    x = torch.randn(3, 3, 32, 32)
    cam = model.forward_cam(x)
    assert isinstance(cam, CAMOutput)
    assert cam.raw.shape == cam.boosted.shape == (3, 4, 8, 8)
    logits = model(x)
    assert logits.shape == (3, 4)
    torch.testing.assert_close(logits, cam.boosted.mean(dim=(2, 3)))


def test_classifier_uses_train_alpha_in_train_mode_and_eval_alpha_in_eval_mode() -> None:
    model = _tiny_classifier(train_alpha=2.0, eval_alpha=5.0)
    assert model.train_alpha == 2.0 and model.eval_alpha == 5.0
    x = torch.randn(3, 3, 32, 32)
    model.train()
    raw, boosted = model.forward_cam(x)
    assert (raw > 0).any() and (raw < 0).any()
    torch.testing.assert_close(boosted, torch.where(raw > 0, 2.0 * raw, raw))
    model.eval()
    raw, boosted = model.forward_cam(x)
    torch.testing.assert_close(boosted, torch.where(raw > 0, 5.0 * raw, raw))


def test_eval_alpha_defaults_to_train_alpha() -> None:
    model = _tiny_classifier(train_alpha=3.0)
    assert model.eval_alpha == 3.0


def test_set_eval_alpha_changes_eval_logits_but_not_weights() -> None:
    model = _tiny_classifier(train_alpha=1.0).eval()
    x = torch.randn(3, 3, 32, 32)
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        raw = model.forward_cam(x).raw
        logits_1 = model(x)
        model.set_eval_alpha(5.0)
        logits_5 = model(x)
    assert model.eval_alpha == 5.0 and model.train_alpha == 1.0
    after_state = model.state_dict()
    assert before_state.keys() == after_state.keys()
    assert all(torch.equal(before_state[k], after_state[k]) for k in before_state)
    torch.testing.assert_close(logits_1, raw.mean(dim=(2, 3)))
    assert not torch.allclose(logits_1, logits_5)
    by_hand = torch.where(raw > 0, 5.0 * raw, raw).mean(dim=(2, 3))
    torch.testing.assert_close(logits_5, by_hand)
    with pytest.raises(ConfigError):
        model.set_eval_alpha(0.5)


def test_param_groups_split_backbone_and_head() -> None:
    model = _tiny_classifier()
    groups = model.param_groups(1e-4, head_lr_mult=10.0)
    assert [g["lr"] for g in groups] == pytest.approx([1e-4, 1e-3])
    backbone_ids = {id(p) for p in groups[0]["params"]}
    head_ids = {id(p) for p in groups[1]["params"]}
    assert head_ids == {id(model.head.weight), id(model.head.bias)}
    assert backbone_ids == {id(p) for p in model.backbone.parameters()}
    assert backbone_ids | head_ids == {id(p) for p in model.parameters()}
    torch.optim.Adam(groups)  # accepted by a real optimizer
    with pytest.raises(ConfigError):
        model.param_groups(0.0)


def test_classifier_rejects_bad_num_classes() -> None:
    with pytest.raises(ConfigError):
        CAMClassifier(create_backbone("smallcnn"), 0)


# --------------------------------------------------------------------------- backbones


BUILTIN_BACKBONES = [name for name in BACKBONES.names() if not name.startswith("timm")]


def test_registry_lists_builtin_backbones() -> None:
    assert set(EXPECTED_OUT_CHANNELS) <= set(BACKBONES.names())


@pytest.mark.parametrize("name", BUILTIN_BACKBONES)
def test_backbone_forward_and_gradients(name: str) -> None:
    torch.manual_seed(0)
    backbone = create_backbone(name).train()
    x = torch.randn(2, 3, 64, 64)
    features = backbone(x)
    assert backbone.out_channels == EXPECTED_OUT_CHANNELS[name]
    assert features.ndim == 4 and features.shape[:2] == (2, backbone.out_channels)
    assert torch.isfinite(features).all()
    (features * torch.randn_like(features)).sum().backward()
    for pname, p in backbone.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize(("name", "size"), [("resnet18", 64), ("resnet50", 96), ("smallcnn", 48)])
def test_backbone_output_stride(name: str, size: int) -> None:
    backbone = create_backbone(name).eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, size, size))
    stride = 8 if name == "smallcnn" else 32
    assert features.shape[2:] == (size // stride, size // stride)


def test_smallcnn_is_configurable() -> None:
    backbone = create_backbone("smallcnn", widths=(8, 16, 24), strides=(2, 1, 2))
    assert backbone.out_channels == 24
    assert backbone(torch.randn(2, 3, 48, 48)).shape == (2, 24, 12, 12)
    with pytest.raises(ConfigError):
        create_backbone("smallcnn", widths=(8, 16), strides=(2,))
    with pytest.raises(ConfigError, match="depth"):
        create_backbone("resnet18", depth=3)


def test_unknown_backbone_raises_registry_error() -> None:
    with pytest.raises(RegistryError, match="resnet50"):
        create_backbone("nope")


@pytest.mark.skipif(HAS_TIMM, reason="timm is installed")
def test_timm_backbone_needs_timm() -> None:
    with pytest.raises(PamcError, match="timm"):
        create_backbone("timm:resnet50")


@pytest.mark.skipif(HAS_TORCHVISION, reason="torchvision is installed")
def test_torchvision_weights_need_torchvision() -> None:
    with pytest.raises(PamcError, match="torchvision"):
        create_backbone("resnet18", pretrained="torchvision")


# --------------------------------------------------------------------------- checkpoints


def _bn_keys(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    stats = ("weight", "bias", "running_mean", "running_var")
    shapes: dict[str, tuple[int, ...]] = {f"{prefix}.{k}": (channels,) for k in stats}
    shapes[f"{prefix}.num_batches_tracked"] = ()
    return shapes


def _torchvision_resnet50_keys() -> dict[str, tuple[int, ...]]:
    """The torchvision resnet50 state_dict layout (keys in order, with shapes), written from the spec."""
    keys: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7), **_bn_keys("bn1", 64)}
    in_ch = 64
    for layer, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
        for b in range(blocks):
            p = f"layer{layer}.{b}"
            keys[f"{p}.conv1.weight"] = (width, in_ch, 1, 1)
            keys.update(_bn_keys(f"{p}.bn1", width))
            keys[f"{p}.conv2.weight"] = (width, width, 3, 3)
            keys.update(_bn_keys(f"{p}.bn2", width))
            keys[f"{p}.conv3.weight"] = (4 * width, width, 1, 1)
            keys.update(_bn_keys(f"{p}.bn3", 4 * width))
            if b == 0:
                keys[f"{p}.downsample.0.weight"] = (4 * width, in_ch, 1, 1)
                keys.update(_bn_keys(f"{p}.downsample.1", 4 * width))
            in_ch = 4 * width
    keys["fc.weight"] = (1000, 2048)
    keys["fc.bias"] = (1000,)
    return keys


@pytest.fixture(scope="module")
def resnet50_checkpoint() -> dict[str, torch.Tensor]:
    """A torchvision-style resnet50 checkpoint with non-default values everywhere, plus fc."""
    torch.manual_seed(1)
    state = create_backbone("resnet50").state_dict()
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif value.is_floating_point():
            state[key] = torch.rand_like(value) + 0.5
    state["fc.weight"] = torch.randn(1000, 2048)
    state["fc.bias"] = torch.randn(1000)
    return state


def test_resnet50_keys_match_torchvision_layout() -> None:
    expected = _torchvision_resnet50_keys()
    assert len(expected) == 320
    expected_no_fc = {k: v for k, v in expected.items() if not k.startswith("fc.")}
    assert len(expected_no_fc) == 318
    ours = create_backbone("resnet50").state_dict()
    assert list(ours) == list(expected_no_fc)
    assert {k: tuple(v.shape) for k, v in ours.items()} == expected_no_fc


def _assert_loaded(model: nn.Module, source: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    assert len(loaded) == 318
    for key, value in loaded.items():
        assert torch.equal(value, source[key]), key


def test_load_pretrained_torch_file_with_module_prefix_and_fc(
    tmp_path: Path, resnet50_checkpoint: dict[str, torch.Tensor]
) -> None:
    path = tmp_path / "r50.pth"
    torch.save({f"module.{k}": v for k, v in resnet50_checkpoint.items()}, path)
    model = create_backbone("resnet50")
    assert not torch.equal(model.conv1.weight, resnet50_checkpoint["conv1.weight"])
    load_pretrained(model, path)
    _assert_loaded(model, resnet50_checkpoint)


@pytest.mark.parametrize("entry", ["state_dict", "model"])
def test_load_pretrained_nested_entry(
    tmp_path: Path, entry: str, resnet50_checkpoint: dict[str, torch.Tensor]
) -> None:
    path = tmp_path / "r50.pt"
    torch.save({entry: resnet50_checkpoint, "epoch": 3}, path)
    model = create_backbone("resnet50")
    load_pretrained(model, str(path))
    _assert_loaded(model, resnet50_checkpoint)


def test_load_pretrained_safetensors(tmp_path: Path, resnet50_checkpoint: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "r50.safetensors"
    save_file(resnet50_checkpoint, str(path))
    model = create_backbone("resnet50")
    load_pretrained(model, path)
    _assert_loaded(model, resnet50_checkpoint)
    net = create_backbone("resnet50", pretrained=str(path))
    _assert_loaded(net, resnet50_checkpoint)


def test_build_model_with_checkpoint_path(tmp_path: Path) -> None:
    source = create_backbone("smallcnn")
    path = tmp_path / "small.pth"
    torch.save(source.state_dict(), path)
    model = build_model("smallcnn", 3, pretrained=str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key


def _small_state() -> dict[str, torch.Tensor]:
    return dict(create_backbone("smallcnn").state_dict())


def test_missing_key_is_named(tmp_path: Path, resnet50_checkpoint: dict[str, torch.Tensor]) -> None:
    state = dict(resnet50_checkpoint)
    del state["layer4.2.bn3.weight"]
    path = tmp_path / "missing.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"missing\.pth.*1 missing key \(layer4\.2\.bn3\.weight\)"):
        load_pretrained(create_backbone("resnet50"), path)


def test_unexpected_key_is_named(tmp_path: Path) -> None:
    state = _small_state()
    state["foo"] = torch.zeros(2)
    path = tmp_path / "extra.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"1 unexpected key \(foo\)"):
        load_pretrained(create_backbone("smallcnn"), path)


def test_shape_mismatch_is_named(tmp_path: Path) -> None:
    state = _small_state()
    state["features.0.weight"] = torch.zeros(32, 3, 5, 5)
    path = tmp_path / "shape.safetensors"
    save_file(state, str(path))
    model = create_backbone("smallcnn")
    before = model.features[0].weight.clone()
    expected = r"1 shape mismatch \(features\.0\.weight \(32, 3, 5, 5\) vs \(32, 3, 3, 3\)\)"
    with pytest.raises(CheckpointError, match=expected):
        load_pretrained(model, path)
    assert torch.equal(model.features[0].weight, before)


def test_many_problems_are_counted_on_one_line(tmp_path: Path) -> None:
    path = tmp_path / "wrong.pth"
    torch.save(_small_state(), path)
    with pytest.raises(CheckpointError) as info:
        load_pretrained(create_backbone("resnet18"), path)
    message = str(info.value)
    assert "\n" not in message
    n_resnet18 = len(create_backbone("resnet18").state_dict())
    assert f"{n_resnet18} missing keys (conv1.weight, bn1.weight, bn1.bias, ...)" in message
    assert f"{len(_small_state())} unexpected keys" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        load_pretrained(create_backbone("smallcnn"), tmp_path / "absent.pth")


def test_non_state_dict_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="not a state_dict"):
        load_pretrained(create_backbone("smallcnn"), path)


class _Payload:
    """Unpickling this runs os.mkdir(marker): a stand-in for a malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.marker),)


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_code_carrying_pickle_is_refused_and_not_executed(tmp_path: Path, writer: str) -> None:
    def write(path: Path, marker: Path) -> None:
        obj = {"conv1.weight": torch.zeros(1), "payload": _Payload(marker)}
        if writer == "torch":
            torch.save(obj, path)
        else:
            with path.open("wb") as f:
                pickle.dump(obj, f, protocol=2)

    # The payload is live: an unrestricted load does run it.
    live_path, live_marker = tmp_path / "live.pth", tmp_path / "live_marker"
    write(live_path, live_marker)
    if writer == "torch":
        torch.load(live_path, weights_only=False)
    else:
        with live_path.open("rb") as f:
            pickle.load(f)
    assert live_marker.exists()

    path, marker = tmp_path / "evil.pth", tmp_path / "marker"
    write(path, marker)
    with pytest.raises(CheckpointError, match="refusing to load .*not a plain tensor checkpoint"):
        load_pretrained(create_backbone("smallcnn"), path)
    assert not marker.exists()


def test_random_bytes_always_give_checkpoint_error(tmp_path):
    """The weights-only unpickler fails on garbage with many exception types; all become one error."""
    import random

    from pamc.models import create_backbone, load_pretrained

    net = create_backbone("smallcnn")
    for seed in range(60):
        path = tmp_path / f"r{seed}.pth"
        path.write_bytes(random.Random(seed).randbytes(512))
        with pytest.raises(CheckpointError):
            load_pretrained(net, path)
