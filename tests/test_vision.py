"""torchvision and timm for real: the second tested environment (requirements-vision.txt).

These tests are marked ``vision`` and run with ``make test-vision``; elsewhere they are skipped.
Nothing is downloaded: weights are random, and the torchvision cache is a temporary folder.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pamc.cli.main import main
from pamc.errors import CheckpointError
from pamc.models import create_backbone

HAS_VISION = all(importlib.util.find_spec(m) is not None for m in ("torchvision", "timm"))
pytestmark = [
    pytest.mark.vision,
    pytest.mark.skipif(not HAS_VISION, reason="needs torchvision and timm: `make test-vision` (requirements-vision.txt)"),
]

if HAS_VISION:
    import timm
    import torchvision

from pamc.data.synthetic import SHAPE_NAMES  # noqa: E402

NUM_CLASSES = 10


def _randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-default values in every norm layer, so that equal outputs mean equal weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)) and m.weight is not None:
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return module.eval()


def _images(n: int, size: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- pamc's resnets vs torchvision's

RESNETS = ["resnet18", "resnet34", pytest.param("resnet50", marks=pytest.mark.slow),
           pytest.param("resnet101", marks=pytest.mark.slow)]


@pytest.mark.parametrize("name", RESNETS)
def test_resnet_state_dict_round_trip_and_same_features(name: str) -> None:
    reference = _randomise(torchvision.models.get_model(name, weights=None))
    ours = create_backbone(name).eval()
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    ours.load_state_dict(state, strict=True)  # torchvision -> pamc
    back = torchvision.models.get_model(name, weights=None)
    back.load_state_dict({**ours.state_dict(), "fc.weight": reference.fc.weight, "fc.bias": reference.fc.bias},
                         strict=True)  # pamc -> torchvision
    features = nn.Sequential(*list(back.eval().children())[:-2])  # torchvision's layers up to layer4
    x = _images(2, 64)
    with torch.no_grad():
        got, expected = ours(x), features(x)
    assert got.shape == expected.shape == (2, ours.out_channels, 2, 2)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_torchvision_checkpoint_loads_with_pretrained_path(tmp_path: Path, tiny_train_args: list[str]) -> None:
    reference = _randomise(torchvision.models.resnet18(weights=None))
    path = tmp_path / "resnet18-torchvision.pth"
    torch.save(reference.state_dict(), path)
    ours = create_backbone("resnet18", pretrained=str(path))
    for key, value in ours.state_dict().items():
        assert torch.equal(value, reference.state_dict()[key]), key
    assert main([*tiny_train_args, "--epochs", "1", "--backbone", "resnet18", "--pretrained", str(path)]) == 0


def _torchvision_cache_file(torch_home: Path, name: str) -> Path:
    weights = torchvision.models.get_model_weights(name).DEFAULT
    return torch_home / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[-1]


def test_pretrained_torchvision_reads_torchvisions_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = _randomise(torchvision.models.resnet18(weights=None), seed=3)
    cached = _torchvision_cache_file(tmp_path, "resnet18")
    assert cached.name == "resnet18-f37072fd.pth"  # ResNet18_Weights.IMAGENET1K_V1, the DEFAULT
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)
    ours = create_backbone("resnet18", pretrained="torchvision")
    for key, value in ours.state_dict().items():
        assert torch.equal(value, reference.state_dict()[key]), key


def test_pretrained_torchvision_without_cache_fails_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tiny_train_args: list[str]
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # a closed port: the download fails at once
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(CheckpointError, match="not in the cache"):
        create_backbone("resnet18", pretrained="torchvision")
    capsys.readouterr()
    assert main([*tiny_train_args, "--backbone", "resnet18", "--pretrained", "torchvision"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pamc: error: torchvision weights ResNet18_Weights.IMAGENET1K_V1")
    assert str(_torchvision_cache_file(tmp_path, "resnet18")) in err
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- timm families through the CLI

# input sizes: test_vit is built for 160 px; at 64 px its position embeddings are resampled
TIMM_FAMILIES = {"test_resnet": 64, "test_efficientnet": 64, "test_convnext": 64, "test_vit": 64}


def _reduction(name: str) -> int:
    """The stride of the last feature map, from timm's own metadata (patch size for a ViT)."""
    model = timm.create_model(name)
    if hasattr(model, "patch_embed"):
        return int(model.patch_embed.patch_size[0])
    return int(model.feature_info[-1]["reduction"])


@pytest.mark.parametrize("name", TIMM_FAMILIES)
def test_timm_backbone_trains_a_step_and_gives_cams(name: str, tmp_path: Path) -> None:
    from pamc.engine.rundir import load_trained
    from pamc.explain import compute_cams

    size = TIMM_FAMILIES[name]
    run = tmp_path / "run"
    assert main(["train", "--backbone", f"timm:{name}", "--epochs", "1", "--batch-size", "8", "--lr", "0.001",
                 "--set", "data.synthetic.num_train=20", "--set", "data.synthetic.num_test=8",
                 "--set", f"data.synthetic.image_size={size}", "--no-progress", "--device", "cpu",
                 "--output-dir", str(run)]) == 0
    trained = load_trained(run)
    grid = size // _reduction(name)
    cams = compute_cams(trained.model, np.zeros((2, 3, size, size), dtype=np.uint8))
    assert cams.raw.shape == (2, NUM_CLASSES, grid, grid)
    assert np.isfinite(cams.raw).all()
    assert main(["cam", str(run), "--dataset-split", "test", "--limit", "1", "--out", str(tmp_path / "cams"),
                 "--device", "cpu"]) == 0
    assert (tmp_path / "cams" / "test_00000.png").is_file()


@pytest.mark.parametrize("kwargs", [{}, {"reg_tokens": 4}, {"class_token": False},
                                    {"no_embed_class": True, "reg_tokens": 2}])
def test_vit_patch_tokens_become_timms_own_grid(kwargs: dict[str, object]) -> None:
    """The token grid equals timm's ``forward_intermediates`` NCHW map of the last block (normed)."""
    from pamc.models.backbones import TimmBackbone

    model = _randomise(timm.create_model("test_vit", num_classes=0, global_pool="", **kwargs))
    backbone = TimmBackbone(model, "test_vit")
    x = _images(2, 160)
    with torch.no_grad():
        grid = backbone(x)
        (expected,) = model.forward_intermediates(x, indices=1, norm=True, output_fmt="NCHW", intermediates_only=True)
    assert grid.shape == (2, 64, 10, 10)
    torch.testing.assert_close(grid, expected, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- BoostLU for any classifier


def _assert_same_logits(original: nn.Module, arch: str, size: int) -> None:
    from pamc.models.foreign import convert_classifier

    cam = convert_classifier(original, arch, image_size=size)
    assert cam.eval_alpha == 5.0 and cam.train_alpha == 1.0
    x = _images(3, size)
    original.eval()
    cam.eval()
    cam.set_eval_alpha(1.0)
    with torch.no_grad():
        expected, got = original(x), cam(x)
        assert got.shape == (3, NUM_CLASSES)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
        original.double()
        cam.double()
        torch.testing.assert_close(cam(x.double()), original(x.double()), rtol=0, atol=1e-10)
        cam.float()
        cam.set_eval_alpha(5.0)
        boosted = cam(x)
    assert not torch.allclose(boosted, got)  # BoostLU at inference changes the scores


@pytest.mark.slow
def test_converted_torchvision_resnet50_has_the_same_logits() -> None:
    model = _randomise(torchvision.models.resnet50(weights=None, num_classes=NUM_CLASSES))
    _assert_same_logits(model, "torchvision:resnet50", 96)


@pytest.mark.parametrize("name,kwargs,size", [
    ("test_resnet", {}, 64),
    ("test_efficientnet", {}, 64),
    ("test_vit2", {"fc_norm": False}, 160),  # average of the patch tokens, norm before the pooling
])
def test_converted_timm_models_have_the_same_logits(name: str, kwargs: dict[str, object], size: int) -> None:
    model = _randomise(timm.create_model(name, num_classes=NUM_CLASSES, **kwargs))
    _assert_same_logits(model, f"timm:{name}", size)


@pytest.mark.slow
def test_converted_torchvision_efficientnet_has_the_same_logits() -> None:
    """Squeeze-excitation pools inside the blocks; the head's pooling is the last one."""
    model = _randomise(torchvision.models.efficientnet_b0(weights=None, num_classes=NUM_CLASSES))
    _assert_same_logits(model, "torchvision:efficientnet_b0", 64)


@pytest.mark.parametrize("arch,layer", [
    ("timm:test_convnext", "layer 'head.norm' (LayerNorm2d) comes after the pooling"),
    ("timm:test_vit", "global_pool='token' is not the average of the patch tokens (it takes the class token)"),
    ("timm:test_vit3", "layer 'attn_pool' (AttentionPoolLatent) is attention pooling"),
    ("torchvision:mobilenet_v3_small", "layer 'classifier.1' (Hardswish) comes after the linear layer"),
    ("torchvision:convnext_tiny", "layer 'classifier.0' (LayerNorm2d) comes after the pooling"),
])
def test_import_model_refuses_a_head_that_is_not_linear_after_pooling(
    arch: str, layer: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pamc.models.foreign import build_classifier

    weights = tmp_path / "w.pth"
    torch.save(build_classifier(arch, NUM_CLASSES).state_dict(), weights)
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(SHAPE_NAMES[:NUM_CLASSES]) + "\n")
    code = main(["import-model", "--arch", arch, "--weights", str(weights), "--classes", str(classes),
                 "-o", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"pamc: error: {layer}")
    assert not (tmp_path / "run").exists()


@pytest.fixture
def imported_run(tmp_path: Path) -> tuple[Path, nn.Module, Path]:
    """timm's test_resnet with random weights, imported for the synthetic dataset's classes."""
    original = _randomise(timm.create_model("test_resnet", num_classes=NUM_CLASSES))
    weights = tmp_path / "test_resnet.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in original.state_dict().items()}, weights)
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(SHAPE_NAMES[:NUM_CLASSES]) + "\n")
    config = tmp_path / "data.yaml"
    config.write_text("data:\n  dataset: synthetic\n  synthetic: {num_train: 20, num_test: 48, image_size: 64}\n")
    run = tmp_path / "run"
    assert main(["import-model", "--arch", "timm:test_resnet", "--weights", str(weights), "--classes", str(classes),
                 "--config", str(config), "-o", str(run)]) == 0
    return run, original, tmp_path


def test_imported_run_sweeps_alpha_and_reproduces_the_original_map(imported_run: tuple[Path, nn.Module, Path]) -> None:
    from sklearn.metrics import average_precision_score

    from pamc.data import DeviceTransform, build_dataset
    from pamc.engine.checkpoint import load_checkpoint

    run, original, tmp = imported_run
    assert main(["alpha-sweep", str(run), "--alpha", "1,5", "--out", str(tmp / "sweep.png"),
                 "--json", str(tmp / "sweep.json"), "--device", "cpu"]) == 0
    rows = json.loads((tmp / "sweep.json").read_text())["results"]
    assert [r["alpha"] for r in rows] == [1.0, 5.0]
    split = build_dataset(load_checkpoint(run / "best.safetensors").config.data).test
    labels = split.full_rows(np.arange(len(split)))
    with torch.no_grad():
        scores = original(DeviceTransform(torch.device("cpu"))(torch.from_numpy(split.images))).numpy()
    expected = 100 * np.mean([average_precision_score(labels[:, c], scores[:, c]) for c in range(NUM_CLASSES)])
    assert rows[0]["map"] == pytest.approx(expected, abs=1e-3)  # alpha 1: the original model's mAP
    assert main(["eval", str(run), "--alpha", "1", "--json", str(tmp / "eval.json"), "--device", "cpu"]) == 0
    assert json.loads((tmp / "eval.json").read_text())["results"][0]["map"] == pytest.approx(expected, abs=1e-3)


def test_imported_run_draws_cams_and_predicts(imported_run: tuple[Path, nn.Module, Path]) -> None:
    from PIL import Image

    run, _, tmp = imported_run
    assert main(["cam", str(run), "--dataset-split", "test", "--limit", "2", "--side-by-side",
                 "--out", str(tmp / "cams"), "--device", "cpu"]) == 0
    assert sorted(p.name for p in (tmp / "cams").glob("*.png")) == ["test_00000.png", "test_00001.png"]
    image = tmp / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(image)
    assert main(["predict", str(run), str(image), "--top-k", "2", "--json", str(tmp / "pred.json"),
                 "--device", "cpu"]) == 0
    (only,) = json.loads((tmp / "pred.json").read_text())["images"]
    assert len(only["predictions"]) == 2 and {p["class"] for p in only["predictions"]} <= set(SHAPE_NAMES)
