"""Backbone registry: every backbone maps (B, 3, H, W) images to a (B, out_channels, h, w) map."""

from __future__ import annotations

import importlib.util
import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from pamc.errors import CheckpointError, ConfigError, PamcError
from pamc.models import resnet
from pamc.models.pretrained import check_state_dict, load_pretrained
from pamc.registry import Registry

logger = logging.getLogger(__name__)

BACKBONES = Registry[nn.Module]("backbone")

TIMM_PREFIX = "timm:"
_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")


@dataclass(frozen=True)
class InputSpec:
    """What a backbone expects of its input: per-channel mean and std (in 0..1 pixel units) and
    its native square input size."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    size: int


IMAGENET_INPUT = InputSpec(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), size=224)


def input_spec(name: str) -> InputSpec:
    """The input spec a backbone declares (every backbone here: ImageNet statistics at 224 px)."""
    if not name.startswith(TIMM_PREFIX):
        BACKBONES.get(name)  # rejects an unknown name
    return IMAGENET_INPUT


def _register_resnet(name: str) -> None:
    build: Callable[[], resnet.ResNet] = getattr(resnet, name)

    def factory() -> nn.Module:
        return build()

    factory.__doc__ = f"{name} (torchvision-compatible keys, no fc), stride 32."
    BACKBONES.register(name)(factory)


for _name in _RESNETS:
    _register_resnet(_name)


class SmallCNN(nn.Module):
    """A small conv3x3-BN-ReLU stack for fast CPU demos on ~48-64 px images."""

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 128), strides: Sequence[int] = (2, 2, 2, 1)) -> None:
        super().__init__()
        widths, strides = tuple(widths), tuple(strides)
        if not widths or len(widths) != len(strides):
            raise ConfigError(f"smallcnn needs as many widths as strides, got {widths} and {strides}")
        if any(not isinstance(w, int) or w < 1 for w in widths) or any(s not in (1, 2) for s in strides):
            raise ConfigError(f"smallcnn widths must be positive ints and strides 1 or 2, got {widths}, {strides}")
        layers: list[nn.Module] = []
        in_ch = 3
        for width, stride in zip(widths, strides):
            layers += [
                nn.Conv2d(in_ch, width, kernel_size=3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.out_channels: int = widths[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


@BACKBONES.register("smallcnn")
def smallcnn(widths: Sequence[int] = (32, 64, 128, 128), strides: Sequence[int] = (2, 2, 2, 1)) -> nn.Module:
    """Four conv blocks, total stride 8 by default (a 48 px input gives a 6x6 map)."""
    return SmallCNN(widths, strides)


class TimmBackbone(nn.Module):
    """Wraps a timm model built without pooling or classifier so it returns the feature map."""

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.out_channels: int = int(model.num_features)

    def forward(self, x: Tensor) -> Tensor:
        features = self.model(x)
        if features.ndim != 4:
            raise ConfigError(f"timm model {self.name!r} does not return a (B, C, h, w) feature map")
        return features


def _timm_backbone(name: str, pretrained: str | None, kwargs: dict[str, object]) -> nn.Module:
    model_name = name[len(TIMM_PREFIX) :]
    if importlib.util.find_spec("timm") is None:
        raise PamcError(f"backbone {name!r} needs the timm package (pip install timm)")
    import timm

    if not timm.is_model(model_name):
        raise ConfigError(f"unknown timm model {model_name!r}")
    model = timm.create_model(model_name, pretrained=pretrained == "timm", num_classes=0, global_pool="", **kwargs)
    backbone = TimmBackbone(model, model_name)
    if pretrained not in (None, "timm"):
        load_pretrained(backbone.model, pretrained)
    return backbone


def _load_torchvision_weights(name: str, backbone: nn.Module) -> None:
    if name not in _RESNETS:
        raise ConfigError(f"pretrained='torchvision' is only available for {', '.join(_RESNETS)}, not {name!r}")
    if importlib.util.find_spec("torchvision") is None:
        raise PamcError("pretrained='torchvision' needs the torchvision package (pip install torchvision)")
    import torchvision

    try:
        reference = torchvision.models.get_model(name, weights="DEFAULT")
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(f"cannot fetch torchvision weights for {name}: {exc}") from None
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    check_state_dict(backbone, state, f"torchvision:{name}")
    backbone.load_state_dict(state, strict=True)
    logger.info("loaded torchvision ImageNet weights into %s", name)


def create_backbone(name: str, pretrained: str | None = None, **kwargs: object) -> nn.Module:
    """Build a registered backbone (or ``timm:<name>``) and optionally load weights.

    ``pretrained`` is a checkpoint path, ``"torchvision"`` (ImageNet weights for resnets,
    needs torchvision) or ``"timm"`` (timm's own download, ``timm:`` backbones only).
    Extra keyword arguments go to the backbone factory.
    """
    if name.startswith(TIMM_PREFIX):
        return _timm_backbone(name, pretrained, dict(kwargs))
    factory = BACKBONES.get(name)
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError:
        accepted = ", ".join(inspect.signature(factory).parameters) or "none"
        raise ConfigError(
            f"backbone {name!r} got unexpected options {sorted(kwargs)}; accepted: {accepted}"
        ) from None
    backbone = factory(**kwargs)
    if pretrained is None:
        return backbone
    if pretrained == "torchvision":
        _load_torchvision_weights(name, backbone)
    elif pretrained == "timm":
        raise ConfigError(f"pretrained='timm' is only available for timm: backbones, not {name!r}")
    else:
        load_pretrained(backbone, Path(pretrained))
    return backbone
