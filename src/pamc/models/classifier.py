"""CAM classifier: a backbone, a 1x1-conv class head and BoostLU on the class activation maps."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from pamc.errors import ConfigError
from pamc.models.backbones import IMAGENET_INPUT, InputSpec, create_backbone, input_spec
from pamc.models.boostlu import BoostLU


class CAMOutput(NamedTuple):
    """Class activation maps before (``raw``) and after (``boosted``) BoostLU, both (B, C, h, w)."""

    raw: Tensor
    boosted: Tensor


class CAMClassifier(nn.Module):
    """Multi-label classifier whose logits are the spatial mean of BoostLU-ed CAMs.

    ``boost_train`` is applied in training mode and ``boost_eval`` in eval mode, so the
    paper's setting (train with alpha 1, explain/evaluate with alpha 5) is one switch away.
    ``input_spec`` is the normalisation and native size the backbone expects (default: ImageNet's).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        train_alpha: float = 1.0,
        eval_alpha: float | None = None,
        input_spec: InputSpec | None = None,
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")
        out_channels = getattr(backbone, "out_channels", None)
        if not isinstance(out_channels, int) or out_channels < 1:
            raise ConfigError(f"backbone {type(backbone).__name__} has no positive int out_channels")
        self.backbone = backbone
        self.head = nn.Conv2d(out_channels, num_classes, kernel_size=1, bias=True)
        self.boost_train = BoostLU(train_alpha)
        self.boost_eval = BoostLU(train_alpha if eval_alpha is None else eval_alpha)
        self.num_classes = num_classes
        self.input_spec = input_spec or IMAGENET_INPUT

    @property
    def train_alpha(self) -> float:
        return self.boost_train.alpha

    @property
    def eval_alpha(self) -> float:
        return self.boost_eval.alpha

    def set_eval_alpha(self, alpha: float) -> None:
        """Change the BoostLU alpha used in eval mode; weights are untouched."""
        self.boost_eval = BoostLU(alpha)

    @property
    def active_boost(self) -> BoostLU:
        return self.boost_train if self.training else self.boost_eval

    def forward_features(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def cam_from_features(self, features: Tensor) -> CAMOutput:
        """The head and BoostLU on a backbone feature map, always in float32.

        Autocast is switched off here, so under bf16/fp16 training the CAMs, the logits and
        everything downstream (losses, LL's top-k, metrics) are float32; only the backbone
        runs in low precision.
        """
        with torch.autocast(device_type=features.device.type, enabled=False):
            low = features.dtype in (torch.float16, torch.bfloat16)  # float64 models stay float64
            raw = self.head(features.float() if low else features)
            return CAMOutput(raw=raw, boosted=self.active_boost(raw))

    def logits_from_features(self, features: Tensor) -> Tensor:
        """Logits (B, C) float32: the spatial mean of the BoostLU-ed CAMs."""
        boosted = self.cam_from_features(features).boosted
        with torch.autocast(device_type=features.device.type, enabled=False):
            return boosted.mean(dim=(2, 3))

    def forward_cam(self, x: Tensor) -> CAMOutput:
        return self.cam_from_features(self.forward_features(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.logits_from_features(self.forward_features(x))

    def param_groups(self, lr: float, head_lr_mult: float = 10.0) -> list[dict]:
        """Optimizer groups: backbone at ``lr``, head at ``lr * head_lr_mult``."""
        if not lr > 0 or not head_lr_mult > 0:
            raise ConfigError(f"lr and head_lr_mult must be positive, got {lr!r} and {head_lr_mult!r}")
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        head = [p for p in self.head.parameters() if p.requires_grad]
        return [
            {"params": backbone, "lr": lr, "name": "backbone"},
            {"params": head, "lr": lr * head_lr_mult, "name": "head"},
        ]


def build_model(
    backbone: str,
    num_classes: int,
    *,
    pretrained: str | None = None,
    train_alpha: float = 1.0,
    eval_alpha: float | None = None,
    **backbone_kwargs: object,
) -> CAMClassifier:
    """Create a backbone by name and put a CAM head with BoostLU on it."""
    net = create_backbone(backbone, pretrained=pretrained, **backbone_kwargs)
    return CAMClassifier(net, num_classes, train_alpha=train_alpha, eval_alpha=eval_alpha,
                         input_spec=input_spec(backbone))
