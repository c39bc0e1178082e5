"""Training with a frozen backbone: linear initialisation (role-li, GR-Loss ``linear_init``).

In the epochs where the loss's ``backbone_frozen(epoch)`` holds (the first
``linear_init_epochs``; applied by :class:`pamc.engine.hooks.BackboneFreeze`) only the CAM head (and any
parameters of the loss, e.g. ROLE's label estimates) learn: the backbone's parameters do not
require gradients and its BatchNorm layers stay in eval mode, so its feature maps are those
of a fixed feature extractor. Afterwards the whole network trains end to end.

With ``train.frozen_features`` the backbone never trains: its feature maps are computed once
(eval mode, no flips) and cached in memory, and only the CAM head (1x1 conv, BoostLU, global
average pool) trains on them, like the "linear" mode of the single-positive benchmark of
Cole et al. - fast experiments on a CPU.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch
from torch import Tensor, nn

from pamc.data import ArrayLoader, DatasetBundle, DeviceTransform, Split
from pamc.models import CAMClassifier

log = logging.getLogger(__name__)


def set_backbone_trainable(model: CAMClassifier, trainable: bool) -> None:
    """Switch the backbone's ``requires_grad``; the optimizer skips parameters without grads."""
    for p in model.backbone.parameters():
        p.requires_grad_(trainable)


def freeze_backbone_for_epoch(model: CAMClassifier, frozen: bool) -> None:
    """Call after ``model.train()``: a frozen backbone also keeps its BatchNorm statistics."""
    set_backbone_trainable(model, not frozen)
    if frozen:
        model.backbone.eval()


# --- frozen-features mode (train.frozen_features) ---------------------------------------


class HeadOnCachedFeatures(nn.Module):
    """A :class:`CAMClassifier` whose input is the backbone's cached feature map.

    ``forward(features)`` runs only the 1x1-conv head, BoostLU and the global average pool.
    The wrapped classifier (backbone included) is what ``state_dict`` and
    ``load_state_dict`` see, so a checkpoint is an ordinary full-model checkpoint that
    ``pamc eval`` loads and evaluates on images.
    """

    def __init__(self, model: CAMClassifier) -> None:
        super().__init__()
        self.model = model

    @property
    def backbone(self) -> nn.Module:
        return self.model.backbone

    def forward(self, features: Tensor) -> Tensor:
        return self.model.logits_from_features(features)

    def param_groups(self, lr: float, head_lr_mult: float = 10.0) -> list[dict]:
        return [g for g in self.model.param_groups(lr, head_lr_mult) if g["name"] == "head"]

    def state_dict(self, *args, **kwargs):  # type: ignore[override]
        return self.model.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        return self.model.load_state_dict(state_dict, strict=strict, assign=assign)


class FeatureTransform:
    """Moves cached feature maps to the device as float32 (no augmentation)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.generator = None  # no random augmentation, so no RNG state to checkpoint

    def __call__(self, features: Tensor, flip: bool = False) -> Tensor:
        return features.to(self.device, non_blocking=True).float()


@torch.inference_mode()
def compute_features(model: CAMClassifier, split: Split, transform: DeviceTransform, batch_size: int = 128) -> np.ndarray:
    """Backbone feature maps (N, D, h, w) of a split, in eval mode, without flips (float16)."""
    model.eval()
    chunks = [model.forward_features(transform(b.images)).to(torch.float16).cpu()
              for b in ArrayLoader(split, batch_size)]
    return torch.cat(chunks).numpy()


def cache_frozen_features(
    model: CAMClassifier, bundle: DatasetBundle, transform: DeviceTransform,
) -> tuple[HeadOnCachedFeatures, DatasetBundle, FeatureTransform]:
    """Compute every split's feature maps once and return the head-only model and data.

    The returned splits share the original label stores, so label corrections still land in
    the training labels. Features are kept in memory as float16: fine for the synthetic
    scenes and small sets, not for ResNet-50 maps of a full COCO.
    """
    set_backbone_trainable(model, False)
    splits = {}
    for name in ("train", "val", "test"):
        split: Split = getattr(bundle, name)
        splits[name] = dataclasses.replace(split, images=compute_features(model, split, transform))
    log.info("cached backbone features: train %s", tuple(splits["train"].images.shape))
    cached = dataclasses.replace(bundle, **splits)  # keeps partial_test_labels and class_frequency
    return HeadOnCachedFeatures(model), cached, FeatureTransform(transform.device)
