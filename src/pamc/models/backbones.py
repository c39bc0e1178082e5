"""Backbone registry: every backbone maps (B, 3, H, W) images to a (B, out_channels, h, w) map."""

from __future__ import annotations

import importlib.util
import inspect
import logging
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path

from torch import Tensor, nn

from pamc.errors import CheckpointError, ConfigError, PamcError
from pamc.models import resnet
from pamc.models.pretrained import check_state_dict, load_pretrained
from pamc.registry import Registry

logger = logging.getLogger(__name__)

BACKBONES = Registry[nn.Module]("backbone")

TIMM_PREFIX = "timm:"
TORCHVISION_PREFIX = "torchvision:"
_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")


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
    """Wraps a timm model built without pooling or classifier so it returns the feature map.

    A transformer returns tokens ``(B, N, C)``: its class and register tokens (timm's
    ``num_prefix_tokens``) are dropped and the patch tokens are laid out on their
    ``(H / patch, W / patch)`` grid, so CAMs and BoostLU work on it as on a CNN's map.
    Models that return channels-last maps (``output_fmt == "NHWC"``, e.g. Swin) are permuted.
    """

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.out_channels: int = int(model.num_features)

    def forward(self, x: Tensor) -> Tensor:
        features = self.model(x)
        if features.ndim == 3:
            return self._token_grid(features, x.shape[-2:])
        if features.ndim == 4 and getattr(self.model, "output_fmt", "NCHW") == "NHWC":
            features = features.permute(0, 3, 1, 2)
        if features.ndim != 4 or features.shape[1] != self.out_channels:
            raise ConfigError(f"timm model {self.name!r} does not return a (B, C, h, w) feature map")
        return features

    def _token_grid(self, tokens: Tensor, image_size: tuple[int, int]) -> Tensor:
        patch_embed = getattr(self.model, "patch_embed", None)
        if patch_embed is None or not hasattr(patch_embed, "dynamic_feat_size"):
            raise ConfigError(f"timm model {self.name!r} returns tokens but has no patch grid")
        h, w = patch_embed.dynamic_feat_size(tuple(image_size))
        patches = tokens[:, int(getattr(self.model, "num_prefix_tokens", 0)):]
        if patches.shape[1] != h * w:
            raise ConfigError(f"timm model {self.name!r} returns {patches.shape[1]} patch tokens, "
                              f"not the {h}x{w} grid of a {image_size[0]}x{image_size[1]} input")
        return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


def _timm_backbone(name: str, pretrained: str | None, kwargs: dict[str, object]) -> nn.Module:
    model_name = name[len(TIMM_PREFIX) :]
    if importlib.util.find_spec("timm") is None:
        raise PamcError(f"backbone {name!r} needs the timm package (pip install timm)")
    import timm

    if not timm.is_model(model_name):
        raise ConfigError(f"unknown timm model {model_name!r}")
    build = dict(pretrained=pretrained == "timm", num_classes=0, global_pool="")
    try:  # a transformer then takes any input size (its position embeddings are resampled)
        model = timm.create_model(model_name, **build, **{"dynamic_img_size": True, **kwargs})
    except TypeError:  # not a transformer: it has no such option
        model = timm.create_model(model_name, **build, **kwargs)
    backbone = TimmBackbone(model, model_name)
    if pretrained not in (None, "timm"):
        load_pretrained(backbone.model, pretrained)
    return backbone


def _load_torchvision_weights(name: str, backbone: nn.Module) -> None:
    """torchvision's ImageNet weights from its cache (``$TORCH_HOME/hub/checkpoints``), else downloaded."""
    if name not in _RESNETS:
        raise ConfigError(f"pretrained='torchvision' is only available for {', '.join(_RESNETS)}, not {name!r}")
    if importlib.util.find_spec("torchvision") is None:
        raise PamcError("pretrained='torchvision' needs the torchvision package (pip install torchvision)")
    import torch.hub
    import torchvision

    weights = torchvision.models.get_model_weights(name).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlparse(weights.url).path).name
    if not cached.is_file():
        try:
            weights.get_state_dict(progress=False)
        except OSError as exc:
            reason = str(getattr(exc, "reason", None) or exc).strip().splitlines() or [type(exc).__name__]
            raise CheckpointError(f"torchvision weights {weights} for {name} are not in the cache ({cached}) "
                                  f"and cannot be downloaded: {reason[0]}") from None
    load_pretrained(backbone, cached)
    logger.info("loaded torchvision ImageNet weights %s into %s", weights, name)


def create_backbone(name: str, pretrained: str | None = None, **kwargs: object) -> nn.Module:
    """Build a registered backbone (or ``timm:<name>``, ``torchvision:<name>``) and optionally load weights.

    ``pretrained`` is a checkpoint path, ``"torchvision"`` (ImageNet weights for resnets,
    needs torchvision) or ``"timm"`` (timm's own download, ``timm:`` backbones only).
    Extra keyword arguments go to the backbone factory.
    """
    if name.startswith(TIMM_PREFIX):
        return _timm_backbone(name, pretrained, dict(kwargs))
    if name.startswith(TORCHVISION_PREFIX):
        from pamc.models.foreign import torchvision_backbone

        return torchvision_backbone(name[len(TORCHVISION_PREFIX):], pretrained, dict(kwargs))
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
